#!/bin/bash
# mailfsctl compact (DESIGN 6) on a mounted store: after half of its
# mailboxes moved out and the retained copies purged, the file shrinks by
# at least 40%, every remaining message is byte-identical, the listing is
# unchanged, and a reader through the mount never failed meanwhile.
# Refused while a move involving the store is in progress; a store made
# without incremental vacuum is converted once.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1 srv2 || exit 1
# A new store is made for compaction in steps (before the audit after
# issue 14 the pragma came after the switch to WAL and was ignored).
check "a new store has incremental vacuum" test "$(sqlite3 "$S/srv1.db" 'pragma auto_vacuum')" = 2
M=$S/mnt
C() { "$B/mailfsctl" -c "$S/conf" "$@"; }
mount_fg "$S" || exit 1
for i in 1 2 3 4 5 6; do
    mkdir -p "$M/srv1/user$i/INBOX"
    cp -a "$TD/eml/." "$M/srv1/user$i/INBOX/"
done
for i in 1 2 3; do mv "$M/srv1/user$i" "$M/srv2/" || not_ok "mv user$i"; done
C purge --all >/dev/null
for i in 4 5 6; do tree_of "$M/srv1/user$i"; done >"$WORK/before"
ls -lR "$M/srv1" >"$WORK/ls-before"
size() { stat -c %s "$S/$1.db" "$S/$1.db-wal" 2>/dev/null | awk '{s += $1} END {print s}'; }
C store list | awk '$1 == "srv1"' >"$WORK/list"
check "store list shows reclaimable space before" bash -c "! awk '{print \$(NF-2)}' '$WORK/list' | grep -q '^0\$'"

# a reader through the mount for as long as the compaction runs
touch "$WORK/reading"
(
    while [ -e "$WORK/reading" ]; do
        if find "$M/srv1" -type f -exec cat {} + >/dev/null 2>"$WORK/read.err"; then
            echo pass >>"$WORK/passes"
        else
            echo fail >>"$WORK/passes"
        fi
    done
) &
reader=$!
wait_for "the reader's first pass" test -s "$WORK/passes"
before=$(size srv1)
C compact srv1 >"$WORK/compact.out"
check "compact: exit 0" test $? = 0
rm "$WORK/reading"
wait $reader
after=$(size srv1)
check "compact says before and after ($(cat "$WORK/compact.out"))" grep -q "compacted srv1: .* -> " "$WORK/compact.out"
check "the file shrank by at least 40% ($before -> $after bytes)" test $((after * 100)) -le $((before * 60))
check "the reader never failed ($(grep -c pass "$WORK/passes") passes)" bash -c "! grep -q fail '$WORK/passes'"
for i in 4 5 6; do tree_of "$M/srv1/user$i"; done >"$WORK/after"
check "every remaining message byte-identical (names, sizes, dates, SHA-256)" diff "$WORK/before" "$WORK/after"
check "the listing is unchanged" diff "$WORK/ls-before" <(ls -lR "$M/srv1")
check "writes work after it" cp "$TD/eml/cpython/msg_03.txt" "$M/srv1/user4/INBOX/new.eml"
check "integrity_check of the compacted store" test "$(sqlite3 "$S/srv1.db" 'pragma integrity_check')" = ok

# refused while a move involving the store runs
touch "$WORK/stall"
MAILFS_STALL=copied MAILFS_STALL_FILE="$WORK/stall" "$B/mailfsctl" -c "$S/conf" move user4 srv2 >/dev/null 2>&1 &
mover=$!
wait_for "the move to stall" moves_are "$S" 'm["mailbox"] == "user4" and m["state"] == "running"' step copying
C compact srv2 2>"$WORK/refused" >/dev/null
check "compact during a move into the store: refused" test $? = 1
check "... saying which move" grep -q "move .* of user4 is in progress" "$WORK/refused"
rm "$WORK/stall"
wait $mover
check "... the move then finished" test -d "$M/srv2/user4" -o "$(moves_of "$S" 'm["mailbox"] == "user4"' state | head -1)" = done

# a store made before incremental vacuum: converted once, then compacted
unmount "$S"
sqlite3 "$S/srv2.db" "PRAGMA auto_vacuum=NONE; VACUUM;"
check "fixture: srv2 without auto_vacuum" test "$(sqlite3 "$S/srv2.db" 'pragma auto_vacuum')" = 0
mount_fg "$S" || exit 1
tree_of "$M/srv2" >"$WORK/srv2-before"
C compact srv2 >/dev/null
check "compact converts an old store (auto_vacuum incremental now)" \
    test "$(sqlite3 "$S/srv2.db" 'pragma auto_vacuum')" = 2
check "... its messages unchanged" diff "$WORK/srv2-before" <(tree_of "$M/srv2")
unmount "$S"
[ $FAILS = 0 ]
