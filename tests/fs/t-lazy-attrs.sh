#!/bin/bash
# Attributes set just after close (issue 14).  rsync -a closes its
# temporary file, then sets its owner, mode and times, then renames it into
# place; the mount defers those setattrs into its next write to the store
# (the rename's transaction) instead of a transaction each (fs/lazy.c).
# They must show at once through the mount (stat, find, ls -l's
# readdirplus), reach the store by themselves when the mount is quiet, and
# be kept by a SIGKILL once the rename or an fsync returned, and by a move
# that starts right after them.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1 srv2 || exit 1
M=$S/mnt
mount_fg "$S" || exit 1
mkdir -p "$M/srv1/alice" || exit 1

kill_and_remount() {
    pkill -KILL -f "mailfs -f $S/conf"
    wait_for "daemon gone" not_running "$S"
    fusermount3 -u "$M" 2>/dev/null
    mount_fg "$S"
}
# name, mode, size and mtime of every file, as find sees them
files_of() { (cd "$1" && find . -type f -printf '%P %m %s %T@\n' | sort); }
# what ls -l shows (the kernel's readdirplus answers)
listing_of() { (cd "$1" && ls -l --time-style=+%s INBOX Sent | awk 'NF > 2 {print $1, $5, $6, $7}'); }

# A backup with varied modes and dates, restored with rsync -aX.
SRC=$WORK/backup
mkdir -p "$SRC/INBOX" "$SRC/Sent"
i=0
for f in $(find "$TD/eml" -type f | sort | head -60); do
    d=INBOX
    [ $((i % 3)) = 0 ] && d=Sent
    cp "$f" "$SRC/$d/m$i.eml"
    chmod "$(echo 600 640 604 644 | cut -d' ' -f$((i % 4 + 1)))" "$SRC/$d/m$i.eml"
    touch -d "@$((1500000000 + i * 3600))" "$SRC/$d/m$i.eml"
    i=$((i + 1))
done
rsync -aX "$SRC/" "$M/srv1/alice/" || not_ok "rsync -aX into the mount"
check "rsync -aX: modes, sizes and dates show at once (find)" \
    test "$(files_of "$SRC")" = "$(files_of "$M/srv1/alice")"
check "and in ls -l (readdirplus)" test "$(listing_of "$SRC")" = "$(listing_of "$M/srv1/alice")"
# SIGKILL as soon as rsync returned: each rename carried what was set before it.
kill_and_remount || exit 1
check "after a SIGKILL right after rsync: all kept" \
    test "$(files_of "$SRC")" = "$(files_of "$M/srv1/alice")"

# Set after close, nothing after it: the store gets it by itself.
F=$M/srv1/alice/INBOX
cp "$(find "$TD/eml" -type f | sort | head -1)" "$WORK/one.eml"
cp "$WORK/one.eml" "$F/quiet.eml" && chmod 604 "$F/quiet.eml" && touch -d @1400000000 "$F/quiet.eml"
check "a chmod and touch after close show at once" \
    test "$(stat -c '%a %Y' "$F/quiet.eml")" = "604 1400000000"
store_has() { test "$(sqlite3 "$S/srv1.db" "SELECT printf('%o %d', mode, mtime_ns / 1000000000)
    FROM message WHERE name = CAST('quiet.eml' AS BLOB)")" = "$1"; }
wait_for "the store to have them with no further write" store_has "604 1400000000" &&
    ok "the quiet mount wrote them"
kill_and_remount || exit 1
check "and they survive a SIGKILL" test "$(stat -c '%a %Y' "$F/quiet.eml")" = "604 1400000000"

# Set after close, then fsync (of a read-only descriptor), then SIGKILL.
cp "$WORK/one.eml" "$F/synced.eml" && chmod 640 "$F/synced.eml" &&
    touch -d @1300000000 "$F/synced.eml" &&
    python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' "$F/synced.eml"
kill_and_remount || exit 1
check "an fsync makes them durable at once" \
    test "$(stat -c '%a %Y' "$F/synced.eml")" = "640 1300000000"

# Set after close, then the mailbox moves to another store at once.
cp "$WORK/one.eml" "$F/moved.eml" && chmod 644 "$F/moved.eml" && touch -d @1200000000 "$F/moved.eml"
mv "$M/srv1/alice" "$M/srv2/alice" || not_ok "mv of the mailbox"
check "a move right after carries them" \
    test "$(stat -c '%a %Y' "$M/srv2/alice/INBOX/moved.eml")" = "644 1200000000"
check "and everything restored before" \
    test "$(files_of "$SRC")" = "$(files_of "$M/srv2/alice" | grep -v -e quiet.eml -e synced.eml -e moved.eml)"

# A rename right after the setattrs, then SIGKILL: the new name has them.
G=$M/srv2/alice/INBOX
cp "$WORK/one.eml" "$G/.tmp.x" && chmod 600 "$G/.tmp.x" && touch -d @1100000000 "$G/.tmp.x" &&
    mv "$G/.tmp.x" "$G/final.eml"
kill_and_remount || exit 1
check "a rename lands with the attributes set before it" \
    test "$(stat -c '%a %Y' "$G/final.eml")" = "600 1100000000"
unmount "$S"
exit $((FAILS > 0))
