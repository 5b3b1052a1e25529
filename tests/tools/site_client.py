#!/usr/bin/env python3
"""site_client.py — a user of the live site (tests/site.sh, scripts/site),
through its Dovecot proxy, as a mail client and an MTA see it.

  login HOST USER PW
      One IMAP LOGIN on HOST:143.  Prints "ok BACKEND SECONDS" (BACKEND:
      the x-mailfs-backend the server's ID names, srv1 or srv2) or
      "no TEXT SECONDS" (TEXT: the server's answer, e.g. "[UNAVAILABLE]
      ..."); exits 0 or 1.
  lmtp HOST USER [--timeout S] [FILE...] < MESSAGE
      Delivers MESSAGE (or each FILE in turn) to USER over LMTP on HOST:24,
      as an MTA does: a 4xx answer (to RCPT or DATA) or a refused
      connection is retried, every 0.2 s, for S seconds (default 60).  Each
      temporary failure is said on stderr as it happens.  Prints, for each
      message, "attempts=N held=SECONDS" (SECONDS from the first attempt to
      the accepted one); exits 0 when all were delivered, 1 at the first
      5xx or timeout.
  watch HOST USER PW [SECONDS]
      What a user sees during a move: logs in, selects INBOX and prints,
      every second, the backend, MESSAGES, UIDVALIDITY and UIDNEXT,
      reconnecting (and saying so) when the session is dropped; for
      SECONDS (default: until interrupted).
  maildir-fill MAILDIR N EMLDIR
      N new messages in MAILDIR's new/ (made if missing): the *.eml files
      under EMLDIR, over and over, each written to tmp/ and renamed, as a
      Maildir delivery is.  Run as the mail user.
"""
import imaplib
import os
import re
import smtplib
import socket
import sys
import time

imaplib.Commands.setdefault("ID", ("NONAUTH", "AUTH", "SELECTED"))


def backend_of(c):
    """The x-mailfs-backend field of the server's ID response, or "?"."""
    try:
        typ, data = c._simple_command("ID", "NIL")
        _, data = c._untagged_response(typ, data, "ID")
        m = re.search(rb'"x-mailfs-backend" "([^"]*)"', b" ".join(d for d in data if isinstance(d, bytes)))
        return m.group(1).decode() if m else "?"
    except (imaplib.IMAP4.error, OSError):
        return "?"


def cmd_login(host, user, pw):
    start = time.monotonic()
    try:
        c = imaplib.IMAP4(host, 143)
    except OSError as e:
        print("no connect: %s %.3f" % (e, time.monotonic() - start))
        return 1
    try:
        c.login(user, pw)
    except imaplib.IMAP4.error as e:
        print("no %s %.3f" % (str(e).strip("b'\""), time.monotonic() - start))
        return 1
    held = time.monotonic() - start
    print("ok %s %.3f" % (backend_of(c), held))
    c.logout()
    return 0


def lmtp_attempt(host, user, msg):
    """One delivery: None when accepted, else (code, text)."""
    try:
        c = smtplib.LMTP(host, 24, timeout=30)
    except OSError as e:
        return (421, "connect: %s" % e)
    try:
        c.ehlo_or_helo_if_needed()
        code, text = c.mail("sender@example.org")
        if code == 250:
            code, text = c.rcpt(user)
        if code in (250, 251):
            code, text = c.data(msg)
        return None if code == 250 else (code, text.decode(errors="replace"))
    except smtplib.SMTPDataError as e:
        return (e.smtp_code, e.smtp_error.decode(errors="replace"))
    except (smtplib.SMTPException, OSError) as e:
        return (421, str(e))
    finally:
        try:
            c.quit()
        except (smtplib.SMTPException, OSError):
            pass


def deliver(host, user, msg, timeout):
    """One message, retried on 4xx until timeout: 0 or 1, as cmd_lmtp."""
    start = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        err = lmtp_attempt(host, user, msg)
        now = time.monotonic()
        if err is None:
            print("attempts=%d held=%.3f" % (attempts, now - start), flush=True)
            return 0
        code, text = err
        sys.stderr.write("lmtp %s attempt %d: %d %s\n" % (user, attempts, code, text))
        sys.stderr.flush()
        if code >= 500 or now - start > timeout:
            print("attempts=%d held=%.3f failed=%d" % (attempts, now - start, code), flush=True)
            return 1
        time.sleep(0.2)  # an MTA's retry interval, much shortened


def cmd_lmtp(host, user, *opts):
    timeout = 60.0
    opts = list(opts)
    while opts and opts[0].startswith("--"):
        o = opts.pop(0)
        if o == "--timeout":
            timeout = float(opts.pop(0))
        else:
            raise RuntimeError("lmtp: unknown option " + o)
    if not opts:
        return deliver(host, user, sys.stdin.buffer.read(), timeout)
    for path in opts:
        with open(path, "rb") as f:
            if deliver(host, user, f.read(), timeout):
                return 1
    return 0


def cmd_watch(host, user, pw, seconds=None):
    end = time.monotonic() + float(seconds) if seconds else None
    c, sessions = None, 0
    while end is None or time.monotonic() < end:
        stamp = time.strftime("%H:%M:%S")
        try:
            if c is None:
                fresh = imaplib.IMAP4(host, 143)
                try:
                    fresh.login(user, pw)
                except imaplib.IMAP4.error:
                    fresh.shutdown()
                    raise
                c = fresh
                sessions += 1
                backend = backend_of(c)
                c.select("INBOX", readonly=True)
                if sessions > 1:
                    print("%s reconnected (session %d)" % (stamp, sessions), flush=True)
            c.noop()
            typ, data = c.status("INBOX", "(MESSAGES UIDVALIDITY UIDNEXT)")
            st = dict(re.findall(r"(MESSAGES|UIDVALIDITY|UIDNEXT) (\d+)", data[0].decode()))
            print("%s %s messages=%s uidvalidity=%s uidnext=%s"
                  % (stamp, backend, st.get("MESSAGES"), st.get("UIDVALIDITY"), st.get("UIDNEXT")), flush=True)
        except (imaplib.IMAP4.error, imaplib.IMAP4.abort, OSError) as e:
            print("%s %s" % (stamp, ("session dropped: %s" % e) if c else ("login: %s" % e)), flush=True)
            try:
                if c is not None:
                    c.shutdown()
            except OSError:
                pass
            c = None
        time.sleep(1)
    return 0


def cmd_maildir_fill(maildir, n, emldir):
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(emldir) for f in fs if f.endswith(".eml"))
    if not files:
        raise RuntimeError("no *.eml under " + emldir)
    bodies = []
    for f in files:
        with open(f, "rb") as fh:
            data = fh.read()
        if not data.startswith(b"From "):  # an mbox envelope line: not a message
            bodies.append(data)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(maildir, sub), mode=0o700, exist_ok=True)
    host = socket.gethostname().replace("/", "_").replace(":", "_")
    now, pid = int(time.time()), os.getpid()
    for i in range(int(n)):
        data = bodies[i % len(bodies)]
        base = "%d.M%dP%d.%s,S=%d" % (now, i, pid, host, len(data))
        tmp = os.path.join(maildir, "tmp", base)
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.rename(tmp, os.path.join(maildir, "new", base))
    return 0


COMMANDS = {"login": cmd_login, "lmtp": cmd_lmtp, "watch": cmd_watch, "maildir-fill": cmd_maildir_fill}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.stderr.write(__doc__)
        sys.exit(2)
    try:
        sys.exit(COMMANDS[sys.argv[1]](*sys.argv[2:]))
    except KeyboardInterrupt:
        sys.exit(0)
    except (RuntimeError, TypeError, ValueError, OSError) as e:
        sys.stderr.write("site_client.py %s: %s\n" % (sys.argv[1], e))
        sys.exit(1)
