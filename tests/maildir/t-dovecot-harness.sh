#!/bin/bash
# The Dovecot harness the maildir tests stand on (tests/dovecot.sh,
# tests/tools/imap.py), proved on its own, without mailfs: the fixture is
# built in both layouts with every test message, each flag, the keywords,
# old dates, UID gaps, a nested and a non-ASCII folder and an ACL; the two
# oracles (doveadm, IMAP) print the same text; they see the bytes of the
# test data; a delivery (LDA, LMTP) and IMAP changes show in both; a
# stopped Dovecot leaves no process, and the exit trap stops it and
# removes its user.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../dovecot.sh"

D=$WORK/dovecot
dovecot_start "$D" || exit 1
check "IMAP listens on 127.0.0.1:$DOVECOT_IMAP_PORT" \
    bash -c "ss -ltn 'sport = :$DOVECOT_IMAP_PORT' | grep -q '127.0.0.1:$DOVECOT_IMAP_PORT'"
user_exists() { getent passwd "$1" >/dev/null; }
check "the mail user $DOVECOT_VMAIL exists" user_exists "$DOVECOT_VMAIL"
check "Dovecot logs to its own file" grep -q "starting up" "$D/dovecot.log"

dovecot_user alice "$WORK/srv1" || exit 1
dovecot_user carol "$WORK/srv2" fs || exit 1
dovecot_fill alice || exit 1
dovecot_fill carol || exit 1
N=$DOVECOT_FILLED
ALL=$(find "$TD" -name '*.eml' -type f | wc -l)
check "the fixture holds every *.eml but the 3 expunged ($N of $ALL)" test "$N" = $((ALL - 3))

# snap USER: both oracles into $WORK/USER.doveadm and $WORK/USER.imap.
snap() {
    dovecot_snapshot "$1" >"$WORK/$1.doveadm" || not_ok "doveadm snapshot of $1"
    dovecot_imap_snapshot "$1" >"$WORK/$1.imap" || not_ok "IMAP snapshot of $1"
}
# has_flag SNAPSHOT FLAG: some message line has FLAG among its flags.
has_flag() {
    awk -F'\t' -v f="$2" '$1 == "message" { n = split(substr($4, 7), a, " ")
        for (i = 1; i <= n; i++) if (a[i] == f) found = 1 } END { exit !found }' "$1"
}
doveadm_acl_is() { dovecot_doveadm acl get -u "$1" INBOX | grep -Eq "^user=bob +lookup read"; }
imap_acl_is() { local a; a=$(dovecot_imap getacl "$1" INBOX) && grep -qx "bob lr" <<<"$a"; }

for u in alice carol; do
    snap $u
    S=$WORK/$u.doveadm
    check "$u: doveadm and IMAP say the same" diff "$S" "$WORK/$u.imap"
    check "$u: $N messages" test "$(grep -c '^message' "$S")" = "$N"
    check "$u: the folders, Café only a parent" test "$(awk -F'\t' '$1 == "mailbox" { print $2 }' "$S" | paste -sd,)" \
        = "Archive,Archive/2019,Café/Ünïcode,INBOX,Sent"
    for f in '\Seen' '\Answered' '\Flagged' '\Deleted' '\Draft' '$Label1' '$Label2' '$Forwarded' Junk NonJunk; do
        check "$u: some message has $f" has_flag "$S" "$f"
    done
    check "$u: messages without flags" grep -q $'\tflags=\t' "$S"
    check "$u: Archive received in 2001" grep -q $'^message\tArchive\tuid=1\t.*date=2001-09-09T' "$S"
    check "$u: Archive/2019 received in 2019" \
        test "$(grep $'^message\tArchive/2019\t' "$S" | grep -vc 'date=2019-')" = 0
    check "$u: INBOX has UID gaps (2, 5 expunged)" \
        test "$(grep $'^message\tINBOX\t' "$S" | cut -f3 | head -5 | paste -sd,)" = "uid=1,uid=3,uid=4,uid=6,uid=7"
    check "$u: Sent's UIDNEXT is above its last UID + 1" \
        grep -q $'^mailbox\tSent\t.*uidnext=40\tmessages=38' "$S"
    check "$u: doveadm acl get shows bob's grant" doveadm_acl_is $u
    check "$u: IMAP GETACL shows it" imap_acl_is $u
done

# The bytes: each message is the test data file the fill put there
# (dovecot-lda drops an mbox "From " line), as IMAP sends it (CRLF, NUL as
# 0x80: what the snapshots hash), at the UID its place in the folder's
# deliveries gives it; the three expunged are not there.
python3 - "$D/fill-alice" "$WORK/alice.imap" >"$WORK/bytes" <<'PY'
import hashlib, re, sys
want, seen = {}, {}
for line in open(sys.argv[1], encoding="utf-8"):
    folder, how, path = line.rstrip("\n").split("\t")
    raw = open(path, "rb").read()
    if how == "lda" and raw.startswith(b"From "):
        raw = raw[raw.index(b"\n") + 1:] if b"\n" in raw else b""
    seen[folder] = seen.get(folder, 0) + 1
    raw = re.sub(rb"(?<!\r)\n", b"\r\n", raw).replace(b"\0", b"\x80")
    want[(folder, seen[folder])] = hashlib.sha256(raw).hexdigest()
for k in [("INBOX", 2), ("INBOX", 5), ("Sent", seen["Sent"])]:
    del want[k]
for line in open(sys.argv[2], encoding="utf-8"):
    f = line.rstrip("\n").split("\t")
    if f[0] == "message":
        k = (f[1], int(f[2][4:]))
        if want.pop(k, None) != f[6][7:]:
            print("not the file's bytes, or not expected: %s uid %d" % k)
for k in want:
    print("missing: %s uid %d" % k)
PY
check "every message is its file's bytes at its UID ($(wc -l <"$WORK/bytes") wrong)" test ! -s "$WORK/bytes"
sed 's/^/    /' "$WORK/bytes" | head -20

# On disk: Dovecot's layouts and names, owned by the mail user.
check "maildir++: nested and modified UTF-7 folder names" \
    test -d "$WORK/srv1/alice/.Archive.2019/cur" -a -d "$WORK/srv1/alice/.Caf&AOk-.&ANw-n&AO8-code/cur"
check "fs layout: the same as directories" \
    test -d "$WORK/srv2/carol/Archive/2019/cur" -a -d "$WORK/srv2/carol/Caf&AOk-/&ANw-n&AO8-code/cur"
check "maildir++: the ACL is the root's dovecot-acl" grep -qx "user=bob lr" "$WORK/srv1/alice/dovecot-acl"
check "keywords in dovecot-keywords" grep -q ' \$Label1$' "$WORK/srv1/alice/dovecot-keywords"
check "every file is the mail user's" \
    test -z "$(find "$WORK/srv1/alice" "$WORK/srv2/carol" ! -user "$DOVECOT_VMAIL" | head -3)"
# Archive's first message is the test data's 3rd (i = 2): 1000000000 + 2 h.
check "Archive's UID 1 was received at 2001-09-09T03:46:40Z" \
    grep -q $'^message\tArchive\tuid=1\t.*\tdate=2001-09-09T03:46:40Z\t' "$WORK/alice.doveadm"
check "... which is its file's mtime" \
    bash -c "find '$WORK/srv1/alice/.Archive' -type f -name '*,S=*' -printf '%T@\n' | grep -q '^1000007200\.'"
# The same messages, flags and sizes in both layouts (names normalised).
strip() { awk -F'\t' -v OFS='\t' '{ for (i = 3; i <= NF; i++) if ($i ~ /^(uidvalidity|date)=/) $i = "-"; print }' "$1"; }
check "maildir++ and fs: the same snapshot but UIDVALIDITY and dates" diff <(strip "$WORK/alice.imap") <(strip "$WORK/carol.imap")

# A delivery (LDA into a folder, LMTP into INBOX) shows in both oracles.
MSG=$(find "$TD" -name '*.eml' -type f | sort | head -1)
dovecot_lda alice 'Café/Ünïcode' <"$MSG"
check "LDA: delivered" test $? = 0
dovecot_lmtp carol Archive/2019 <"$MSG"
check "LMTP: delivered" test $? = 0
snap alice
snap carol
check "LDA: the new message is Café/Ünïcode's UID 40 in doveadm" grep -q $'^message\tCafé/Ünïcode\tuid=40\t' "$WORK/alice.doveadm"
check "LDA: both oracles agree" diff "$WORK/alice.doveadm" "$WORK/alice.imap"
check "LMTP: the new message is Archive/2019's UID 40 over IMAP" grep -q $'^message\tArchive/2019\tuid=40\t' "$WORK/carol.imap"
check "LMTP: both oracles agree" diff "$WORK/carol.doveadm" "$WORK/carol.imap"

# IMAP changes show in doveadm's snapshot.
dovecot_imap store alice INBOX 1 +FLAGS '$Label9' '\Flagged'
dovecot_imap expunge alice Archive 3
dovecot_imap create alice 'Ärchiv/Ünter'
snap alice
check "IMAP STORE: doveadm sees the flags" grep -q $'^message\tINBOX\tuid=1\tflags=$Label9 \\\\Flagged\t' "$WORK/alice.doveadm"
check "IMAP EXPUNGE: doveadm sees it gone" test -z "$(grep $'^message\tArchive\tuid=3\t' "$WORK/alice.doveadm")"
check "IMAP CREATE: doveadm lists the new folder" grep -q $'^mailbox\tÄrchiv/Ünter\t' "$WORK/alice.doveadm"
check "after the changes both oracles agree" diff "$WORK/alice.doveadm" "$WORK/alice.imap"
check "IMAP uids: the UIDs of a folder" test "$(dovecot_imap uids alice INBOX | awk "NR <= 3" | paste -sd,)" = 1,3,4
dovecot_imap fetch alice Archive 1 >"$WORK/fetched"
check "IMAP fetch: a message's bytes" test "$(sha256sum <"$WORK/fetched" | cut -d' ' -f1)" = \
    "$(grep $'^message\tArchive\tuid=1\t' "$WORK/alice.imap" | sed 's/.*sha256=//')"
dovecot_imap expunge alice NoSuchFolder 2>"$WORK/err"
check "a failing IMAP command fails, saying why" test $? != 0 -a -s "$WORK/err"

# A user pointed elsewhere (as a test does after a move) is served there.
cp -a "$WORK/srv1/alice" "$WORK/srv2/alice"
dovecot_user alice "$WORK/srv2" fs
MAIL=$(dovecot_doveadm user -f mail alice)
check "a repointed user: the new place, in its layout ($MAIL)" test "$MAIL" = "maildir:$WORK/srv2/alice:LAYOUT=fs"
check "... served from there" test "$(dovecot_imap uids alice INBOX | awk "NR <= 3" | paste -sd,)" = 1,3,4
dovecot_user alice "$WORK/srv1"

# The repair oracle: clean on what Dovecot made, not on a broken uidlist.
check "force-resync: nothing to repair in the fixture" dovecot_resync_clean carol
check "no error or warning logged so far" dovecot_log_problems 0
MARK=$(dovecot_log_mark)
sed -i '3s/^[0-9]* /999 /' "$WORK/srv2/carol/dovecot-uidlist"
dovecot_resync_clean carol >"$WORK/resync"
check "force-resync: a uidlist out of order is repaired, and said" test $? != 0 -a -s "$WORK/resync"
chmod 000 "$WORK/srv2/carol/Sent/cur"
dovecot_imap snapshot carol >/dev/null 2>&1
chmod 700 "$WORK/srv2/carol/Sent/cur"
log_has_problems() { ! dovecot_log_problems "$1" >/dev/null; }
check "a folder the IMAP server cannot read: an error in the log" log_has_problems "$MARK"

# A restart of the same instance keeps its users (and takes a new port).
dovecot_imap_snapshot alice >"$WORK/before"
OLDPIDS=$(dovecot_procs | paste -sd,)
dovecot_stop
check "stopped for a restart: no process left" test -z "$(ps -o pid= -p "$OLDPIDS")"
dovecot_start "$D" || exit 1
dovecot_imap_snapshot alice >"$WORK/after"
check "restarted: alice's mail is served as before" diff "$WORK/before" "$WORK/after"

# Stopping: with an IMAP session open, every process goes.
python3 -c '
import imaplib, sys
c = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
c.login("alice", "pw")
c.select("INBOX")
print("in", flush=True)
c.readline()' "$DOVECOT_IMAP_PORT" >"$WORK/idle.out" 2>/dev/null &
IDLE=$!
wait_for "an IMAP session" grep -q in "$WORK/idle.out"
PIDS=$(dovecot_procs | paste -sd,)
check "an imap process serves it" bash -c "ps -o args= -p $PIDS | grep -Eq '/imap( |\$)'"
dovecot_stop
check "stopped: no process of the instance left" test -z "$(ps -o pid= -p "$PIDS")"
check "stopped: nothing listens on the port" \
    bash -c "! ss -ltn 'sport = :$DOVECOT_IMAP_PORT' | grep -q LISTEN"
client_gone() { ! kill -0 "$IDLE" 2>/dev/null; }
wait_for "the IMAP client to be disconnected" client_gone && ok "stopped: the IMAP client was disconnected"

# The exit trap stops an instance left running and removes the user it made.
env -u DOVECOT_VMAIL -u DOVECOT_IMAP_PORT bash -c '
. "$1/tests/lib.sh"
. "$1/tests/dovecot.sh"
dovecot_start "$WORK/d" || exit 1
dovecot_user dave "$WORK/store"
dovecot_lda dave <"$2" || exit 1
echo "$DOVECOT_PID $DOVECOT_VMAIL $(dovecot_procs | paste -sd,)"' - "$ROOT" "$MSG" >"$WORK/child" 2>&1
check "a test that exits leaves Dovecot running no more" test -n "$(cut -d' ' -f3 "$WORK/child")" -a \
    -z "$(ps -o pid= -p "$(cut -d' ' -f3 "$WORK/child")")"
check "... and its mail user is removed" bash -c "! getent passwd '$(cut -d' ' -f2 "$WORK/child")'"
[ $FAILS = 0 ]
