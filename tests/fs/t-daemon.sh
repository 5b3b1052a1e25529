#!/bin/bash
# The daemon as fstab or systemd without -f starts it: forked into the
# background after the mount.  Regression: SQLite connections opened
# before that fork were used after it, next to new ones opened in the
# child, which reset the shared WAL index under them: under concurrent
# moves and readers, reads failed with EIO and a move's verification
# found messages "missing" (and rolled back).  Here: 4 moves at a time
# with readers of every mailbox, twice, and not one error.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1 srv2 || exit 1
M=$S/mnt
"$B/mailfs" "$S/conf" "$M"
check "daemonized mount: exit 0 once mounted" mountpoint -q "$M"
check "... the daemon left the foreground" bash -c "! pgrep -f 'mailfs $S/conf' | grep -qx $$"
for i in $(seq 16); do
    mkdir -p "$M/srv1/mb$i/INBOX" && cp -a "$TD/eml/cpython/." "$M/srv1/mb$i/INBOX/"
done
errors=0
for round in 1 2; do
    from=srv1 to=srv2
    [ $round = 2 ] && from=srv2 to=srv1
    for i in $(seq 16); do
        ( mv "$M/$from/mb$i" "$M/$to/" 2>>"$WORK/mv.err" ) &
        # one file per reader: error lines of concurrent writers interleave
        find "$M/$from" -type f -exec cat {} + >/dev/null 2>"$WORK/read.$round.$i.err" &
        if [ $((i % 4)) = 0 ]; then wait; fi
    done
    wait
    "$B/mailfsctl" -c "$S/conf" purge --all >/dev/null
done
# readers racing a move may see ENOENT for a mailbox that just left: fine;
# anything else is not
check "no mv failed ($(wc -l <"$WORK/mv.err") errors)" test ! -s "$WORK/mv.err"
check "no read failed but for mailboxes moving away" \
    bash -c "! cat '$WORK'/read.*.err | grep -v 'No such file or directory' | grep -q ."
check "all 16 back in srv1" test "$(ls "$M/srv1" | wc -l)" = 16
check "no move rolled back" test "$(moves_count "$S" 'm["state"] not in ("purged", "done")')" = 0
check "... and every message intact" diff -r "$TD/eml/cpython" "$M/srv1/mb7/INBOX"
fusermount3 -u "$M"
# (pgrep from this shell: a `bash -c` would match its own command line)
daemon_gone() { ! pgrep -f "mailfs $S/conf" >/dev/null; }
wait_for "the daemon to exit" daemon_gone
[ $FAILS = 0 ]
