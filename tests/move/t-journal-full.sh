#!/bin/bash
# Journal writes are checked (issue 11).  The journal lives on a small
# tmpfs that a test fills in the middle of a move.  Before the commit
# point the move fails and rolls back (source unlocked, nothing hidden in
# the target) and says "not moved"; after it, the move says that it
# committed and is left to recovery (never "rolled back"), and recovery
# finishes it once there is space again.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1 srv2 || exit 1
J=$WORK/jfs
mkdir -p "$J"
mount -t tmpfs -o size=2m,mode=0700 tmpfs "$J" || { not_ok "a tmpfs for the journal"; exit 1; }
sed -i "s|^journal = journal.db$|journal = $J/journal.db|" "$S/conf"
C() { "$B/mailfsctl" -c "$S/conf" "$@"; }
jn() { sqlite3 "$J/journal.db" "$1"; }
jn_is() { test "$(jn "$1")" = "$2"; }
fill() { dd if=/dev/zero of="$J/fill" bs=4k >/dev/null 2>&1; true; }
locked() { sqlite3 "$S/$1.db" "select count(*) from mailbox where lock_move != 0"; }
hidden() { sqlite3 "$S/$1.db" "select count(*) from mailbox where state != 0"; }
visible() { sqlite3 "$S/$1.db" "select count(*) from mailbox where state = 0 and cast(name as text) = '$2'"; }
state() { C moves --json | python3 -c "
import json, sys
print([m['state'] for m in json.load(sys.stdin) if m['id'] == $1][0])"; }

EML=$(find "$TD/eml" -name '*.eml' -type f | sort | head -20)
for mb in alice bob; do
    C mailbox create srv1 $mb >/dev/null
    for f in $EML; do C deliver srv1 $mb <"$f" || not_ok "deliver $f"; done
done
C moves >/dev/null # creates the journal on the tmpfs

# --- 1. the journal fills before the commit point: rolled back
touch "$WORK/stall"
MAILFS_STALL=locked MAILFS_STALL_FILE="$WORK/stall" C move alice srv2 >/dev/null 2>"$WORK/m1.err" &
mover=$!
wait_for "the move of alice to stall after copying" jn_is "select step from move where id = 1" cutover
fill
rm -f "$WORK/stall"
wait $mover
check "journal full before the commit point: the move fails" test $? = 1
check "... says it did not move ($(tail -1 "$WORK/m1.err"))" grep -q 'not moved; the mailbox is as it was' "$WORK/m1.err"
check "... the journal's error logged" grep -q 'disk is full\|disk I/O error' "$WORK/m1.err"
check "... alice still in srv1, unlocked" test "$(visible srv1 alice)$(locked srv1)" = 10
check "... nothing hidden in srv2" test "$(hidden srv2)" = 0
check "... alice writable again" bash -c "'$B/mailfsctl' -c '$S/conf' deliver srv1 alice <'$(echo "$EML" | head -1)'"
rm -f "$J/fill"
C recover >/dev/null
check "recover records the rollback" test "$(state 1)" = rolled-back

# --- 2. the journal fills after the commit point: committed, left to recovery
touch "$WORK/stall"
MAILFS_STALL=committed MAILFS_STALL_FILE="$WORK/stall" C move bob srv2 >/dev/null 2>"$WORK/m2.err" &
mover=$!
wait_for "the move of bob to stall at its commit point" jn_is "select state from move where id = 2" committed
fill
rm -f "$WORK/stall"
wait $mover
check "journal full after the commit point: the move does not say done" test $? = 1
check "... says it committed and recovery finishes it ($(tail -1 "$WORK/m2.err"))" \
    grep -q "committed, but it could not finish: 'mailfsctl recover' finishes it" "$WORK/m2.err"
check "... never that it rolled back" bash -c "! grep -q 'rolled back\|not moved' '$WORK/m2.err'"
check "... bob is shown in srv2 (the stores finished)" test "$(visible srv2 bob)" = 1
check "... the journal still says committed" test "$(state 2)" = committed
rm -f "$J/fill"
C recover >"$WORK/r2.out" 2>&1
check "recover finishes it ($(cat "$WORK/r2.out"))" test "$(state 2)" = done
check "... bob in srv2 only, with every message" \
    test "$(visible srv1 bob)$(visible srv2 bob)$(sqlite3 "$S/srv2.db" "select count(*) from message m join folder f on f.id = m.folder join mailbox b on b.id = f.mailbox where cast(b.name as text) = 'bob' and b.state = 0")" = "01$(echo "$EML" | wc -l)"

umount "$J"
[ $FAILS = 0 ]
