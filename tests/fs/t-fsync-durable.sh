#!/bin/bash
# fsync(2) and fsyncdir through the mount return once the sqlite store's
# log is on stable storage (README "Durability"), a Maildir message's file
# and directory once they are, and `mailfsctl move`
# syncs its target's log before the journal records the move as
# committed.  Seen from outside the daemon: strace records the syncs the
# daemon and mailfsctl make, by file.  Until the review at the end of
# issue 14 none of these synced the store's log (the pragma that was to
# make the commit synchronous was refused inside its transaction).
set -u
. "$(dirname "$0")/../lib.sh"
command -v strace >/dev/null || { not_ok "strace is not installed"; exit 1; }

S=$WORK/site
site "$S" srv1 srv2 md@maildir || exit 1
M=$S/mnt
mount_fg "$S" || exit 1
mkdir -p "$M/srv1/alice/INBOX" "$M/md/bob/INBOX" || exit 1
EML=$(find "$TD/eml" -type f | sort | head -1)
PID=$(pgrep -f "mailfs -f $S/conf" | head -1)

# Every thread of the daemon traced (strace -f -p attaches to them all).
traced() {
    local t
    for t in /proc/"$PID"/task/*; do
        grep -q '^TracerPid:[[:space:]]*[1-9]' "$t/status" || return 1
    done
}
strace -f -qq -y -e trace=fsync,fdatasync,syncfs -o "$WORK/trace" -p "$PID" &
TRACER=$!
wait_for "strace attached to the daemon" traced || exit 1
syncs_of() { grep -c "<$S/$1>" "$WORK/trace"; }

# A process that writes, fsyncs, and only then tells us (and closes).
python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, open(sys.argv[2], "rb").read())
os.fsync(fd)
open(sys.argv[3], "w").close()
os.close(fd)' "$M/srv1/alice/INBOX/synced.eml" "$EML" "$WORK/fsynced" || not_ok "write and fsync"
# strace writes a call's line when the call returns, and the daemon's
# sync returned before the fsync did.
check "fsync of a message synced the store's log" test "$(syncs_of srv1.db-wal)" -ge 1
check "and the message is whole" cmp -s "$EML" "$M/srv1/alice/INBOX/synced.eml"

n=$(syncs_of srv1.db-wal)
python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
os.fsync(fd)
os.close(fd)' "$M/srv1/alice/INBOX" || not_ok "fsync of the folder"
check "fsync of a folder synced the store's log again" test "$(syncs_of srv1.db-wal)" -gt "$n"
# A Maildir store: the message's file, then the directory it was renamed
# into (its name in the directory is what Dovecot finds).
python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, open(sys.argv[2], "rb").read())
os.fsync(fd)
os.close(fd)' "$M/md/bob/INBOX/synced.eml" "$EML" || not_ok "write and fsync into the Maildir"
check "fsync of a Maildir message synced its file" \
    grep -q "fsync([0-9]*<$S/md/bob/\(cur\|new\|tmp\)/[^>]*>) = 0" "$WORK/trace"
check "and the directory it is named in" grep -q "fsync([0-9]*<$S/md/bob/cur>) = 0" "$WORK/trace"
kill "$TRACER" 2>/dev/null
wait "$TRACER" 2>/dev/null
unmount "$S"

# A move (the online engine, as mv), killed (MAILFS_FAULT) right after the
# journal recorded its commit point.  Everything it wrote to the target's
# log before then must have been synced before the commit point's own
# sync (the journal's last before the kill).  A sync of the target's log
# alone proves nothing: SQLite syncs a log's header when it starts one.
(MAILFS_FAULT=committed strace -f -qq -y -e trace=fdatasync,fsync,pwrite64 -o "$WORK/move-trace" \
    "$B/mailfsctl" -c "$S/conf" move alice srv2 >/dev/null 2>&1; true) 2>/dev/null
check "the move was killed at its commit point" \
    test "$(moves_of "$S" 'm["state"] == "committed"' | wc -l)" = 1
# "LINE CALL FILE" for each call on a file of the site, in order.
sed -n "s|^[0-9]* \([a-z0-9]*\)([0-9]*<$S/\([^>]*\)>.*|\1 \2|p" "$WORK/move-trace" | cat -n >"$WORK/order"
commit=$(awk '$2 != "pwrite64" && $3 == "journal.db-wal" {l = $1} END {print l}' "$WORK/order")
wrote=$(awk -v c="${commit:-0}" '$2 == "pwrite64" && $3 == "srv2.db-wal" && $1 < c {l = $1} END {print l}' "$WORK/order")
synced=$(awk -v w="${wrote:-0}" -v c="${commit:-0}" \
    '$2 != "pwrite64" && $3 == "srv2.db-wal" && $1 > w && $1 < c {print $1; exit}' "$WORK/order")
check "the move wrote its target's log (call ${wrote:-none} of the trace)" test -n "$wrote"
check "and synced it (call ${synced:-none}) before the commit point (call ${commit:-none})" \
    test -n "$synced"

mount_fg "$S" || exit 1 # recovery rolls the move forward
wait_for "the move finished by recovery" test "$(moves_of "$S" 'm["state"] == "done"' | wc -l)" = 1
check "the message arrived whole" cmp -s "$EML" "$M/srv2/alice/INBOX/synced.eml"
unmount "$S"
[ "$FAILS" = 0 ]
