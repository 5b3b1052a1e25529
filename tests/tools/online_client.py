#!/usr/bin/env python3
"""online_client.py — the users of a mailbox during its online move, for
tests/site/t-online-site.sh and scripts/bench online: an IMAP client and
an MTA working through the site's proxy, each writing what it did (and
what it waited for) to a file, one line per event, so the caller can
check afterwards that every change it made is there.

  snapshot HOST USER PW
      Prints "uidvalidity V" then one "UID SIZE MESSAGE-ID" line per
      message of INBOX (MESSAGE-ID "-" when it has none).
  flags HOST USER PW UIDFILE COUNT RATE OUT [--gate FILE]
      COUNT flag changes (UID STORE +FLAGS) at RATE per second, each on
      its own message: the UIDs of UIDFILE (a snapshot), spread over the
      mailbox; the flags \\Flagged, \\Answered, \\Seen and the keyword
      $MailfsOnline in turn.  A dropped session is reconnected (a refused
      login retried every 0.1 s) and the change that was in flight made
      again.  OUT gets "flag UID FLAG" once the server said OK, "drop
      TEXT", "reconnect N held=S" (S: from the drop to the next working
      session) and at the end "done changes=N reconnects=R max_hold=S".
  send HOST USER TAG RATE OUT [--count N | --until FILE] [--timeout S]
       [--gate FILE]
      LMTP deliveries through HOST:24 at RATE per second (started on a
      fixed schedule, several at once when the server is slow), each a
      small message with the Message-ID <TAG-I@online.mailfs.test>, each
      retried on a 4xx answer or a refused connection every 0.2 s for S
      seconds (default 60), as site_client.py lmtp does (an MTA).  N
      messages, or until FILE exists (at most 100,000).  OUT gets "sent I
      MESSAGE-ID attempts=A held=S" per accepted message, "failed I ..."
      per lost one, and at the end "done sent=N failed=F max_hold=S".
With --gate FILE, the I-th change or delivery waits while FILE holds a
number <= I (a missing or empty FILE: no limit): the caller lets the work
go on in steps that follow the move's phases, whatever the machine's
speed; after a wait the pace starts again from then.
Exits 0 when everything was done, 1 otherwise.
"""
import concurrent.futures
import imaplib
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import site_client  # noqa: E402  (lmtp_attempt, backend_of)

FLAGS = ["\\Flagged", "\\Answered", "\\Seen", "$MailfsOnline"]


def cmd_snapshot(host, user, pw):
    c = imaplib.IMAP4(host, 143)
    c.login(user, pw)
    typ, data = c.select("INBOX", readonly=True)
    typ, uv = c.response("UIDVALIDITY")
    print("uidvalidity %s" % uv[0].decode())
    typ, data = c.uid("FETCH", "1:*", "(RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    for item in data:
        if not isinstance(item, tuple):
            continue
        head, body = item
        uid = re.search(rb"UID (\d+)", head).group(1).decode()
        size = re.search(rb"RFC822.SIZE (\d+)", head).group(1).decode()
        m = re.search(rb"(?im)^message-id:\s*(<[^>\s]*>)", body)
        print("%s %s %s" % (uid, size, m.group(1).decode() if m else "-"))
    c.logout()
    return 0


def gate_limit(path):
    """The number in the gate file, or None: no limit."""
    try:
        with open(path) as fh:
            text = fh.read().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


class Pacer:
    """Item I at start + I / rate, after the gate lets it go."""

    def __init__(self, rate, gate):
        self.interval, self.gate = 1.0 / float(rate), gate
        self.start, self.base = time.monotonic(), 0

    def wait(self, i):
        if self.gate:
            waited = False
            while True:
                limit = gate_limit(self.gate)
                if limit is None or i < limit:
                    break
                waited = True
                time.sleep(0.02)
            if waited:
                self.start, self.base = time.monotonic(), i
        delay = self.start + (i - self.base) * self.interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def read_uids(path):
    uids = []
    with open(path) as fh:
        for line in fh:
            f = line.split()
            if f and f[0].isdigit():
                uids.append(int(f[0]))
    return uids


class Session:
    """An IMAP session on INBOX that comes back when dropped."""

    def __init__(self, host, user, pw, out):
        self.host, self.user, self.pw, self.out = host, user, pw, out
        self.c, self.sessions, self.reconnects, self.max_hold = None, 0, 0, 0.0
        self.dropped_at = None

    def log(self, text):
        self.out.write(text + "\n")
        self.out.flush()

    def connect(self, deadline):
        while True:
            try:
                c = imaplib.IMAP4(self.host, 143)
                try:
                    c.login(self.user, self.pw)
                    c.select("INBOX")
                except (imaplib.IMAP4.error, imaplib.IMAP4.abort):
                    c.shutdown()
                    raise
                break
            except (imaplib.IMAP4.error, imaplib.IMAP4.abort, OSError) as e:
                if time.monotonic() > deadline:
                    raise RuntimeError("no session for user %s: %s" % (self.user, e))
                time.sleep(0.1)
        self.c = c
        self.sessions += 1
        if self.dropped_at is not None:
            held = time.monotonic() - self.dropped_at
            self.max_hold = max(self.max_hold, held)
            self.reconnects += 1
            self.log("reconnect %d held=%.3f backend=%s" % (self.reconnects, held, site_client.backend_of(c)))
            self.dropped_at = None

    def drop(self, why):
        self.log("drop %s" % why)
        try:
            self.c.shutdown()
        except OSError:
            pass
        self.c = None
        self.dropped_at = time.monotonic()

    def store(self, uid, flag):
        """True once the server said OK to +FLAGS flag on uid."""
        while True:
            if self.c is None:
                self.connect(time.monotonic() + 120)
            try:
                typ, data = self.c.uid("STORE", str(uid), "+FLAGS", "(%s)" % flag)
                if typ == "OK":
                    return True
                self.log("refused %d %s: %s" % (uid, flag, data))
                return False
            except (imaplib.IMAP4.abort, OSError) as e:
                self.drop(str(e))
            except imaplib.IMAP4.error as e:
                # a NO/BAD (e.g. [UNAVAILABLE] of a session being shut
                # down): not made, so made again on a fresh session
                self.drop("error: %s" % e)


def cmd_flags(host, user, pw, uidfile, count, rate, outpath, *opts):
    gate = opts[1] if len(opts) == 2 and opts[0] == "--gate" else None
    if opts and not gate:
        raise RuntimeError("flags: unknown options " + " ".join(opts))
    uids, count = read_uids(uidfile), int(count)
    if len(uids) < count:
        raise RuntimeError("%d UIDs in %s, fewer than %d changes" % (len(uids), uidfile, count))
    step = len(uids) // count
    done = 0
    with open(outpath, "w") as out:
        s = Session(host, user, pw, out)
        s.connect(time.monotonic() + 30)
        pace = Pacer(rate, gate)
        for i in range(count):
            pace.wait(i)
            uid, flag = uids[i * step], FLAGS[i % len(FLAGS)]
            if s.store(uid, flag):
                done += 1
                s.log("flag %d %s" % (uid, flag))
        s.log("done changes=%d reconnects=%d max_hold=%.3f" % (done, s.reconnects, s.max_hold))
        try:
            s.c.logout()
        except (imaplib.IMAP4.error, imaplib.IMAP4.abort, OSError):
            pass
    return 0 if done == count else 1


def message(tag, i):
    mid = "<%s-%d@online.mailfs.test>" % (tag, i)
    text = ("From: mta@example.org\r\nTo: user@example.org\r\nSubject: online %s %d\r\n"
            "Message-ID: %s\r\nDate: %s\r\n\r\ndelivery %d during the move\r\n"
            % (tag, i, mid, time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()), i))
    return mid, text.encode()


def deliver(host, user, tag, i, timeout):
    """One message delivered as an MTA does: (i, mid, attempts, held, ok)."""
    mid, msg = message(tag, i)
    start, attempts = time.monotonic(), 0
    while True:
        attempts += 1
        err = site_client.lmtp_attempt(host, user, msg)
        held = time.monotonic() - start
        if err is None:
            return i, mid, attempts, held, True
        if err[0] >= 500 or held > timeout:
            return i, mid, attempts, held, False
        time.sleep(0.2)


def cmd_send(host, user, tag, rate, outpath, *opts):
    count, until, timeout, gate, opts = None, None, 60.0, None, list(opts)
    while opts:
        o = opts.pop(0)
        if o == "--count":
            count = int(opts.pop(0))
        elif o == "--until":
            until = opts.pop(0)
        elif o == "--timeout":
            timeout = float(opts.pop(0))
        elif o == "--gate":
            gate = opts.pop(0)
        else:
            raise RuntimeError("send: unknown option " + o)
    if count is None:
        count = 100000
    lock = threading.Lock()
    stats = {"sent": 0, "failed": 0, "max_hold": 0.0}
    with open(outpath, "w") as out:
        def done(fut):
            i, mid, attempts, held, ok = fut.result()
            with lock:
                stats["sent" if ok else "failed"] += 1
                stats["max_hold"] = max(stats["max_hold"], held)
                out.write("%s %d %s attempts=%d held=%.3f\n" % ("sent" if ok else "failed", i, mid, attempts, held))
                out.flush()

        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            pace = Pacer(rate, gate)
            for i in range(count):
                if until and os.path.exists(until):
                    break
                pace.wait(i)
                pool.submit(deliver, host, user, tag, i, timeout).add_done_callback(done)
        out.write("done sent=%d failed=%d max_hold=%.3f\n" % (stats["sent"], stats["failed"], stats["max_hold"]))
    return 0 if stats["failed"] == 0 else 1


COMMANDS = {"snapshot": cmd_snapshot, "flags": cmd_flags, "send": cmd_send}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.stderr.write(__doc__)
        sys.exit(2)
    try:
        sys.exit(COMMANDS[sys.argv[1]](*sys.argv[2:]))
    except KeyboardInterrupt:
        sys.exit(1)
    except (RuntimeError, TypeError, ValueError, OSError, imaplib.IMAP4.error) as e:
        sys.stderr.write("online_client.py %s: %s\n" % (sys.argv[1], e))
        sys.exit(1)
