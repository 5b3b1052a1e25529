#!/bin/bash
# A message being written has no row in the sqlite store until its first
# commit (issue 14, store/backend/sqlite/sqlite_unborn.c): the create is
# answered from memory and the close writes the row and the bytes in one
# transaction.  What must hold: nothing of a file still being written
# reaches the store, a SIGKILL then leaves no trace (nor when a write
# that needs the row made one before the kill), and the ids the mount
# reserved never clash with messages written afterwards.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1 || exit 1
M=$S/mnt
mount_fg "$S" || exit 1
mkdir -p "$M/srv1/alice/INBOX" || exit 1
F=$M/srv1/alice/INBOX
EML=$(find "$TD/eml" -type f | sort | head -1)
# One process holds the file open for writing (any child that inherited
# the descriptor would flush, that is commit, the file when it exits):
# hold PATH writes the test message into it and keeps it open until
# release (which closes it) or the daemon dies.
hold() {
    rm -f "$WORK/ready"
    python3 -c '
import os, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, open(sys.argv[2], "rb").read())
open(sys.argv[3], "w").close()
signal.sigwait({signal.SIGTERM})
os.close(fd)' "$1" "$EML" "$WORK/ready" &
    HOLD=$!
    wait_for "the file open and written" test -e "$WORK/ready"
}
release() { kill -TERM "$HOLD"; wait "$HOLD"; }
HOLD=

# The holder goes with the daemon: its open file would keep the dead
# mount from being unmounted.
kill_and_remount() {
    pkill -KILL -f "mailfs -f $S/conf"
    wait_for "daemon gone" not_running "$S"
    kill -KILL "$HOLD" 2>/dev/null
    wait "$HOLD" 2>/dev/null
    fusermount3 -u "$M" 2>/dev/null
    mount_fg "$S"
}
rows_named() {
    sqlite3 "$S/srv1.db" "SELECT count(*) FROM message WHERE name = CAST('$1' AS BLOB)"
}

# Written, not closed: the mount shows it, the store has nothing yet.
hold "$F/open.eml"
check "a file being written shows its bytes so far" \
    test "$(stat -c %s "$F/open.eml")" = "$(stat -c %s "$EML")"
check "and has no row in the store" test "$(rows_named open.eml)" = 0
ino=$(stat -c %i "$F/open.eml")
release || not_ok "close of open.eml"
check "its close writes it, bytes and all" cmp -s "$EML" "$F/open.eml"
check "under the inode the create returned" test "$(stat -c %i "$F/open.eml")" = "$ino"
check "one row, committed" test "$(sqlite3 "$S/srv1.db" \
    "SELECT count(*) || ' ' || min(state) FROM message WHERE name = CAST('open.eml' AS BLOB)")" = "1 0"

# SIGKILL while a file is open for writing.
hold "$F/killed.eml"
kill_and_remount || exit 1
check "a file being written when the daemon was killed leaves no trace" \
    test ! -e "$F/killed.eml" -a "$(rows_named killed.eml)" = 0

# An extended attribute set while it is written needs the row: a reserved
# row is written then, and removed by the next mount after a SIGKILL.
hold "$F/flagged.eml"
setfattr -n user.mail.flags -v '\Seen' "$F/flagged.eml" || not_ok "setfattr on a file being written"
check "a flag set while written writes a reserved row" test "$(sqlite3 "$S/srv1.db" \
    "SELECT count(*) || ' ' || min(state) FROM message WHERE name = CAST('flagged.eml' AS BLOB)")" = "1 1"
kill_and_remount || exit 1
check "which the next mount removes" test ! -e "$F/flagged.eml" -a "$(rows_named flagged.eml)" = 0

# Flag set while written, then closed: one message with its flag.
hold "$F/seen.eml"
setfattr -n user.mail.flags -v '\Seen' "$F/seen.eml"
release || not_ok "close of seen.eml"
check "a flag set while written is kept by the close" \
    test "$(getfattr --only-values -n user.mail.flags "$F/seen.eml" 2>/dev/null)" = '\Seen'

# Ids reserved by the killed mounts are never handed out again; a
# delivery by another process, while the mount has ids reserved, gets
# its own.
cp "$EML" "$F/before.eml"
"$B/mailfsctl" -c "$S/conf" deliver srv1 alice < "$EML" || not_ok "deliver"
for i in $(seq 1 20); do cp "$EML" "$F/n$i.eml" || not_ok "cp n$i.eml"; done
check "every message has its own inode" \
    test "$(find "$F" -type f -printf '%i\n' | sort | uniq -d | wc -l)" = 0
check "and its own row" test "$(sqlite3 "$S/srv1.db" \
    "SELECT count(*) FROM message m JOIN folder f ON f.id = m.folder WHERE f.name = CAST('INBOX' AS BLOB)")" = "$(find "$F" -type f | wc -l)"
check "the delivered message reads whole through the mount" \
    cmp -s "$EML" "$(grep -l -F -x -f <(head -1 "$EML") "$F"/*.eml | grep -v -e '/n[0-9]*.eml' -e before -e open -e seen | head -1)"
check "no reserved rows left" test "$(sqlite3 "$S/srv1.db" "SELECT count(*) FROM message WHERE state = 1")" = 0
unmount "$S"
exit $((FAILS > 0))
