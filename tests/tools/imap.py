#!/usr/bin/env python3
"""tests/tools/imap.py — a small IMAP client (imaplib) for the maildir tests.

    imap.py snapshot HOST PORT USER PW
    imap.py list     HOST PORT USER PW
    imap.py create   HOST PORT USER PW MAILBOX
    imap.py append   HOST PORT USER PW MAILBOX [--date DATE [--step S]] [--flags 'F ...'] [FILE...] (< MSG)
    imap.py uids     HOST PORT USER PW MAILBOX
    imap.py fetch    HOST PORT USER PW MAILBOX UID > MSG
    imap.py store    HOST PORT USER PW MAILBOX UID (+FLAGS|-FLAGS|FLAGS) [FLAG...]
    imap.py expunge  HOST PORT USER PW MAILBOX [UID...]  (no UID: all \\Deleted)
    imap.py getacl   HOST PORT USER PW MAILBOX
    imap.py from-doveadm SEP STATUS FETCH     (used by dovecot_snapshot)

Mailbox names, in arguments and output alike, are UTF-8 with '/' as the
hierarchy separator whatever the server's is (Dovecot's maildir++ default
is '.', fs layout '/'), as mailfs shows them in its tree: this client
translates them to and from the server's separator and modified UTF-7.

snapshot prints, for every selectable mailbox (LIST "" "*", without
\\Noselect and \\NonExistent ones, as doveadm's own listing skips them),
sorted by name:
    mailbox<TAB>NAME<TAB>uidvalidity=N<TAB>uidnext=N<TAB>messages=N
and after it, one line per message in increasing UID order:
    message<TAB>NAME<TAB>uid=N<TAB>flags=F1 F2<TAB>date=YYYY-MM-DDTHH:MM:SSZ<TAB>size=N<TAB>sha256=HEX
flags sorted, \\Recent left out (it depends on who looked first); date the
INTERNALDATE in UTC; size RFC822.SIZE (Dovecot's virtual size: CRLF line
ends); sha256 that of BODY.PEEK[] (the message with CRLF line ends, NULs as
0x80, as Dovecot sends it).  from-doveadm prints the same from doveadm's
output (tests/dovecot.sh: dovecot_snapshot), so the two oracles diff.

Every command exits non-zero, with one line on stderr, on any error the
server returns: a test that asks for something and does not get it fails.
"""
import base64
import hashlib
import imaplib
import re
import sys
from datetime import datetime, timedelta, timezone

# ----------------------------------------------------- modified UTF-7


def mutf7_encode(s):
    """RFC 3501 5.1.3: printable ASCII as is ('&' as "&-"), runs of
    anything else as '&' + modified base64 of UTF-16BE + '-'."""
    out, run = [], []

    def flush():
        if run:
            b = "".join(run).encode("utf-16-be")
            out.append("&" + base64.b64encode(b).decode().rstrip("=").replace("/", ",") + "-")
            run.clear()

    for ch in s:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def mutf7_decode(s):
    """The inverse of mutf7_encode; ValueError on what is not valid."""
    out, i = [], 0
    while i < len(s):
        ch = s[i]
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        j = s.find("-", i)
        if j < 0:
            raise ValueError("unterminated &-run in %r" % s)
        if j == i + 1:
            out.append("&")
        else:
            b64 = s[i + 1:j].replace(",", "/")
            b64 += "=" * (-len(b64) % 4)
            out.append(base64.b64decode(b64, validate=True).decode("utf-16-be"))
        i = j + 1
    return "".join(out)


# ----------------------------------------------------------- session


class Imap:
    """One logged-in session; names given and returned as UTF-8 with '/'."""

    def __init__(self, host, port, user, pw):
        self.c = imaplib.IMAP4(host, int(port))
        self.c.login(user, pw)
        typ, data = self.c.list('""', '""')
        self.check(typ, data, "LIST separator")
        m = re.match(rb'\([^)]*\) (?:"((?:[^"\\]|\\.)*)"|NIL)', data[0])
        self.sep = m.group(1).decode().replace("\\", "") if m and m.group(1) else "/"

    @staticmethod
    def check(typ, data, what):
        if typ != "OK":
            raise RuntimeError("%s: %s %s" % (what, typ, data))

    def wire(self, name):
        """A tree name ('/' separated UTF-8) as a quoted IMAP mailbox name."""
        parts = name.split("/")
        if self.sep != "/" and any(self.sep in p for p in parts):
            raise RuntimeError("%r: a component holds the server's separator %r" % (name, self.sep))
        enc = mutf7_encode(self.sep.join(parts))
        return '"' + enc.replace("\\", "\\\\").replace('"', '\\"') + '"'

    def tree(self, wire_name):
        """A name as the server lists it (mUTF-7) as a tree name."""
        return "/".join(mutf7_decode(wire_name).split(self.sep))

    def list(self):
        """[(tree name, flags)] of every mailbox LIST "" "*" returns."""
        typ, data = self.c.list('""', '"*"')
        self.check(typ, data, "LIST")
        out, i = [], 0
        while i < len(data):
            item = data[i]
            i += 1
            if item is None:
                continue
            if isinstance(item, tuple):  # name sent as a literal
                head, name = item[0], item[1].decode()
                m = re.match(rb"\(([^)]*)\)", head)
            else:
                m = re.match(rb'\(([^)]*)\) (?:"(?:[^"\\]|\\.)*"|NIL) (.*)$', item)
                name = m.group(2).decode()
                if name.startswith('"'):
                    name = re.sub(r"\\(.)", r"\1", name[1:-1])
            flags = m.group(1).decode().split()
            out.append((self.tree(name), [f.lower() for f in flags]))
        return out

    def select(self, name, readonly=True):
        typ, data = self.c.select(self.wire(name), readonly=readonly)
        self.check(typ, data, "SELECT " + name)
        return int(data[0])

    def status(self, name):
        typ, data = self.c.status(self.wire(name), "(MESSAGES UIDNEXT UIDVALIDITY)")
        self.check(typ, data, "STATUS " + name)
        raw = data[0] if not isinstance(data[0], tuple) else data[0][0] + data[0][1] + data[1]
        return {k.decode().lower(): int(v) for k, v in re.findall(rb"(MESSAGES|UIDNEXT|UIDVALIDITY) (\d+)", raw)}

    def uid(self, *args):
        typ, data = self.c.uid(*args)
        self.check(typ, data, "UID " + " ".join(map(str, args)))
        return data

    def logout(self):
        try:
            self.c.logout()
        except Exception:
            pass


# ---------------------------------------------------------- snapshot


def imap_date(s):
    """INTERNALDATE ("26-Nov-2026 11:31:03 +0000") as UTC ISO 8601."""
    t = datetime.strptime(s.strip(), "%d-%b-%Y %H:%M:%S %z")
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def unix_date(n):
    return datetime.fromtimestamp(int(n), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def norm_flags(flags):
    return " ".join(sorted(f for f in flags if f.lower() != "\\recent"))


def emit(boxes):
    """boxes: {name: (status dict, [message dicts])} as the stable text."""
    for name in sorted(boxes):
        st, msgs = boxes[name]
        print("mailbox\t%s\tuidvalidity=%d\tuidnext=%d\tmessages=%d"
              % (name, st["uidvalidity"], st["uidnext"], st["messages"]))
        for m in sorted(msgs, key=lambda m: m["uid"]):
            print("message\t%s\tuid=%d\tflags=%s\tdate=%s\tsize=%d\tsha256=%s"
                  % (name, m["uid"], m["flags"], m["date"], m["size"], m["sha256"]))


def fetch_item(head, pattern, what):
    m = re.search(pattern, head)
    if not m:
        raise RuntimeError("no %s in FETCH response %r" % (what, head))
    return m.group(1).decode()


def fetch_all(s):
    """Every message of the selected mailbox as message dicts."""
    data = s.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
    msgs = []
    for item in data:
        if not isinstance(item, tuple):
            continue  # the ")" closing a response with a literal
        head = item[0]
        msgs.append({"uid": int(fetch_item(head, rb"UID (\d+)", "UID")),
                     "flags": norm_flags(fetch_item(head, rb"FLAGS \(([^)]*)\)", "FLAGS").split()),
                     "date": imap_date(fetch_item(head, rb'INTERNALDATE "([^"]+)"', "INTERNALDATE")),
                     "size": int(fetch_item(head, rb"RFC822\.SIZE (\d+)", "RFC822.SIZE")),
                     "sha256": hashlib.sha256(item[1]).hexdigest()})
    return msgs


def cmd_snapshot(s):
    boxes = {}
    for name, flags in s.list():
        if "\\noselect" in flags or "\\nonexistent" in flags:
            continue
        st = s.status(name)
        n = s.select(name)
        msgs = fetch_all(s) if n else []
        if len(msgs) != st["messages"]:
            raise RuntimeError("%s: STATUS says %d messages, FETCH gave %d" % (name, st["messages"], len(msgs)))
        boxes[name] = (st, msgs)
        s.c.close()
    emit(boxes)


def crlf(data):
    """The bytes as Dovecot's IMAP sends BODY[] of a message stored with
    bare LF ends: every LF not after a CR as CRLF, NUL as 0x80."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", data).replace(b"\0", b"\x80")


def cmd_from_doveadm(sep, status_file, fetch_file):
    """doveadm's -f tab mailbox status (mailbox messages uidnext uidvalidity,
    with its header line) and pager fetch of 'mailbox uid flags
    date.received.unixtime size.virtual size.physical text': text is the
    last field, exactly size.physical bytes, then "\\f\\n" or the end."""
    def tree(n):
        return "/".join(n.split(sep))

    boxes = {}
    with open(status_file, encoding="utf-8") as f:
        lines = f.read().splitlines()
    head = lines[0].split("\t")
    for line in lines[1:]:
        row = dict(zip(head, line.split("\t")))
        boxes[tree(row["mailbox"])] = ({k: int(row[k]) for k in ("messages", "uidnext", "uidvalidity")}, [])
    data = open(fetch_file, "rb").read()
    pos = 0
    while pos < len(data):
        m = {}
        while True:
            nl = data.index(b"\n", pos)
            line = data[pos:nl].decode("utf-8")
            pos = nl + 1
            if line == "text:":
                break
            k, _, v = line.partition(": ")
            m[k] = v
        size = int(m["size.physical"])
        text = data[pos:pos + size]
        pos += size
        if len(text) != size or (pos < len(data) and data[pos:pos + 2] != b"\f\n"):
            raise RuntimeError("%s uid %s: text is not size.physical (%d) bytes long" % (m["mailbox"], m["uid"], size))
        pos += 2
        box = tree(m["mailbox"])
        if box not in boxes:
            raise RuntimeError("fetch lists mailbox %r that status does not" % box)
        boxes[box][1].append({"uid": int(m["uid"]), "flags": norm_flags(m["flags"].split()),
                              "date": unix_date(m["date.received.unixtime"]),
                              "size": int(m["size.virtual"]),
                              "sha256": hashlib.sha256(crlf(text)).hexdigest()})
    for name, (st, msgs) in boxes.items():
        if len(msgs) != st["messages"]:
            raise RuntimeError("%s: status says %d messages, fetch gave %d" % (name, st["messages"], len(msgs)))
    emit(boxes)


# --------------------------------------------------------- the others


def cmd_list(s):
    for name, flags in sorted(s.list()):
        print("%s\t%s" % (name, " ".join(sorted(flags))))


def cmd_create(s, name):
    typ, data = s.c.create(s.wire(name))
    s.check(typ, data, "CREATE " + name)


def parse_date(v):
    """--date: seconds since the epoch, or ISO 8601 (UTC when no zone)."""
    if re.fullmatch(r"\d+", v):
        return datetime.fromtimestamp(int(v), timezone.utc)
    t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def cmd_append(s, name, *opts):
    """Appends stdin, or each FILE in turn (the k-th, from 0, received at
    DATE + k * STEP seconds); prints each new message's UID (APPENDUID)."""
    date, step, flags = None, 0, ""
    opts = list(opts)
    while opts and opts[0].startswith("--"):
        o = opts.pop(0)
        if o == "--date":
            date = parse_date(opts.pop(0))
        elif o == "--step":
            step = int(opts.pop(0))
        elif o == "--flags":
            flags = opts.pop(0)
        else:
            raise RuntimeError("append: unknown option " + o)
    for k, path in enumerate(opts or [None]):
        # Not imaplib's append(): it rewrites every CR and LF as CRLF, and
        # the test data must reach Dovecot byte for byte.
        args = [s.wire(name)]
        if flags:
            args.append("(%s)" % flags)
        if date:
            args.append(imaplib.Time2Internaldate(date + timedelta(seconds=k * step)))
        with open(path, "rb") if path else open(sys.stdin.fileno(), "rb", closefd=False) as f:
            s.c.literal = f.read()
        typ, data = s.c._simple_command("APPEND", *args)
        s.check(typ, data, "APPEND %s %s" % (name, path or "-"))
        m = re.search(rb"APPENDUID \d+ (\d+)", data[0])
        print(m.group(1).decode() if m else "")


def cmd_uids(s, name):
    if s.select(name):
        data = s.uid("SEARCH", "ALL")
        for u in sorted(int(x) for x in data[0].split()):
            print(u)


def cmd_fetch(s, name, uid):
    s.select(name)
    data = s.uid("FETCH", uid, "(BODY.PEEK[])")
    parts = [d for d in data if isinstance(d, tuple)]
    if not parts:
        raise RuntimeError("%s: no message with UID %s" % (name, uid))
    sys.stdout.buffer.write(parts[0][1])


def cmd_store(s, name, uid, op, *flags):
    if op.upper() not in ("+FLAGS", "-FLAGS", "FLAGS"):
        raise RuntimeError("store: +FLAGS, -FLAGS or FLAGS, not " + op)
    s.select(name, readonly=False)
    data = s.uid("STORE", uid, op, "(%s)" % " ".join(flags))
    if not data or data[0] is None:
        raise RuntimeError("%s: no message with UID %s" % (name, uid))


def cmd_expunge(s, name, *uids):
    """With UIDs: those messages (\\Deleted set on them first); without:
    every message flagged \\Deleted."""
    s.select(name, readonly=False)
    if uids:
        s.uid("STORE", ",".join(uids), "+FLAGS.SILENT", "(\\Deleted)")
        s.uid("EXPUNGE", ",".join(uids))
    else:
        typ, data = s.c.expunge()
        s.check(typ, data, "EXPUNGE " + name)


def imap_words(line):
    """The atoms and quoted strings of a response line, unquoted."""
    return [q.replace('\\"', '"').replace("\\\\", "\\") if q or not a else a
            for q, a in re.findall(r'"((?:[^"\\]|\\.)*)"|(\S+)', line)]


def cmd_getacl(s, name):
    typ, data = s.c.getacl(s.wire(name))
    s.check(typ, data, "GETACL " + name)
    words = imap_words(data[0].decode())[1:]  # after the mailbox name
    for who, rights in sorted(zip(words[0::2], words[1::2])):
        print("%s %s" % (who, rights))


COMMANDS = {"snapshot": cmd_snapshot, "list": cmd_list, "create": cmd_create, "append": cmd_append,
            "uids": cmd_uids, "fetch": cmd_fetch, "store": cmd_store, "expunge": cmd_expunge,
            "getacl": cmd_getacl}


def main(argv):
    if len(argv) >= 2 and argv[1] == "from-doveadm" and len(argv) == 5:
        cmd_from_doveadm(*argv[2:])
        return 0
    if len(argv) < 6 or argv[1] not in COMMANDS:
        sys.stderr.write(__doc__)
        return 2
    s = Imap(*argv[2:6])
    try:
        COMMANDS[argv[1]](s, *argv[6:])
    finally:
        s.logout()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except (RuntimeError, ValueError, KeyError, TypeError, OSError, imaplib.IMAP4.error) as e:
        sys.stderr.write("imap.py %s: %s\n" % (" ".join(sys.argv[1:2]), e))
        sys.exit(1)
