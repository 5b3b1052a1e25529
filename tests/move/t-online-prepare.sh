#!/bin/bash
# Prepared online moves (DESIGN 10, issue 13):
#   - `mailfsctl move --prepare` copies the mailbox and leaves the move
#     "prepared" (moves --json, moves' passes lines);
#   - a second --prepare after changes (new messages, a removal, a flag
#     change, a new folder, a renamed folder) copies only the delta: its
#     passes' counts are asserted;
#   - `mv` through the mount completes it with final passes only; every
#     message is there with its flags; the cutover (not the prepares) ran
#     the [mailfs] kick command once, with the mailbox's name;
#   - --complete of a mailbox without a prepared move fails and says so;
#   - --sync-every 0.02 keeps the copy in step until mv completes the move
#     (even one held in its cutover while a round comes due), then exits 0.
# For sqlite -> maildir and maildir -> sqlite.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/online-lib.sh"

# passes_of SITE USER FROM: "phase:messages:removed:updated" of the passes
# numbered FROM and up of USER's latest move, space-separated.
passes_of() {
    "$B/mailfsctl" -c "$1/conf" moves --json | python3 -c '
import json, sys
user, first = sys.argv[1], int(sys.argv[2])
m = [m for m in json.load(sys.stdin) if m["mailbox"] == user][0]
print(" ".join("%s:%d:%d:%d" % (p["phase"], p["messages"], p["removed"], p["updated"])
               for p in m["passes"] if p["pass"] >= first))' "$2" "$3"
}
npasses() { passes_of "$@" 1 | wc -w; }
sum_of() { # FIELD(2 messages, 3 removed, 4 updated) PASSES...
    local f=$1 s=0 p; shift
    for p in "$@"; do s=$((s + $(echo "$p" | cut -d: -f"$f"))); done
    echo $s
}

prepare_twice() { # K1 K2
    local S=$WORK/prep-$1-$2 u=alice
    # The kick command records whom it was run for.
    KICK="/bin/sh -c 'echo \"\$0\" >>$S/kicked' %s" osite "$S" "$1" "$2" || { not_ok "site"; return; }
    mount_fg "$S" || return
    local M=$S/mnt
    fill "$M/srv1/$u" || not_ok "fill"
    local total
    total=$(find "$M/srv1/$u" -type f | wc -l)

    check "$1->$2: move --prepare succeeds" "$B/mailfsctl" -c "$S/conf" move --prepare $u srv2
    check "$1->$2: the move is prepared (moves --json)" \
        moves_are "$S" "m['mailbox'] == '$u'" state,step prepared\ syncing
    local first
    first=$(passes_of "$S" $u 1)
    echo "# first prepare: $first"
    check "$1->$2: the first prepare's bulk pass copied all $total messages" \
        test "$(echo "$first" | cut -d' ' -f1)" = "bulk:$total:0:$(echo "$first" | cut -d' ' -f1 | cut -d: -f4)"
    "$B/mailfsctl" -c "$S/conf" moves >"$S/moves.txt"
    check "$1->$2: mailfsctl moves shows the prepared state" grep -q " prepared " "$S/moves.txt"
    check "$1->$2: mailfsctl moves shows the bulk pass" \
        grep -Eq "^move [0-9]+ pass 1 bulk +$total messages" "$S/moves.txt"
    check "$1->$2: mailbox still visible in srv1 only" test -d "$M/srv1/$u" -a ! -e "$M/srv2/$u"

    # Changes: 2 new messages, 1 removed, 1 re-flagged, a new folder with
    # 1 message, a folder of R messages renamed.
    cp "$TD/eml/tika/$(ls "$TD/eml/tika" | sed -n 1p)" "$M/srv1/$u/INBOX/new1"
    cp "$TD/eml/tika/$(ls "$TD/eml/tika" | sed -n 2p)" "$M/srv1/$u/INBOX/new2"
    local a=$M/srv1/$u/Archive/2019
    rm "$a/$(ls "$a" | sed -n 1p)"
    setfattr -n user.mail.flags -v '\Flagged' "$a/$(ls "$a" | sed -n 2p)"
    mkdir "$M/srv1/$u/Projects"
    cp "$TD/eml/tika/$(ls "$TD/eml/tika" | sed -n 3p)" "$M/srv1/$u/Projects/p1"
    local R
    R=$(find "$M/srv1/$u/INBOX/spam/attachments" -type f | wc -l)
    mv "$M/srv1/$u/INBOX/spam/attachments" "$M/srv1/$u/INBOX/spam/attached" ||
        not_ok "$1->$2: renaming a folder"
    local n1
    n1=$(npasses "$S" $u)

    check "$1->$2: a second --prepare succeeds" "$B/mailfsctl" -c "$S/conf" move --prepare $u srv2
    local second
    second=$(passes_of "$S" $u $((n1 + 1)))
    echo "# second prepare: $second"
    # The renamed folder is a new one to a listing's diff: its R messages
    # are copied again and the old name's R dropped (plus the folder).
    check "$1->$2: the second prepare ran no bulk pass" test "${second/bulk/}" = "$second"
    check "$1->$2: the second prepare copied only the 3 new messages and the renamed folder's $R" \
        test "$(sum_of 2 $second)" = $((3 + R))
    check "$1->$2: ... dropped only the removed message and the renamed folder (1 + $R + 1)" \
        test "$(sum_of 3 $second)" = $((1 + R + 1))
    check "$1->$2: ... and brought over the flag change and the new folders (updated >= 3)" \
        test "$(sum_of 4 $second)" -ge 3

    check "$1->$2: no kick command run by the prepares" test ! -e "$S/kicked"
    snap "$M/srv1/$u" >"$S/snap"
    local n2
    n2=$(npasses "$S" $u)
    check "$1->$2: mv through the mount completes the prepared move" mv "$M/srv1/$u" "$M/srv2/"
    local third
    third=$(passes_of "$S" $u $((n2 + 1)))
    echo "# mv: $third"
    check "$1->$2: mv ran final passes only (the cutover)" \
        test -z "$(echo "$third" | tr ' ' '\n' | grep -v '^final:')" -a -n "$third"
    check "$1->$2: ... which copied nothing (no change since the prepare)" \
        test "$(sum_of 2 $third)" = 0
    check "$1->$2: the cutover ran the kick command once, for $u" test "$(cat "$S/kicked")" = $u
    check "$1->$2: the move is done, one move in the journal" \
        moves_are "$S" True state done
    settled "$S" $u "$S/snap" srv2 "" "$1->$2 after mv"
    unmount "$S"
}

prepare_twice sqlite maildir
prepare_twice maildir sqlite

# --- --complete without a prepared move, --sync-every
S=$WORK/sync
osite "$S" sqlite maildir || exit 1
mount_fg "$S" MAILFS_STALL=locked MAILFS_STALL_FILE="$S/stall" || exit 1
M=$S/mnt
for u in bob carol; do fill "$M/srv1/$u" || not_ok "fill $u"; done
"$B/mailfsctl" -c "$S/conf" move --complete bob srv2 >"$S/complete.out" 2>"$S/complete.err"
check "--complete without a prepared move fails" test $? != 0
check "... saying there is no prepared move ($(cat "$S/complete.err"))" \
    grep -q "no prepared move" "$S/complete.err"
check "... and leaves bob where it was" test -d "$M/srv1/bob" -a ! -e "$M/srv2/bob"
check "... with no move in the journal" test "$(moves_count "$S")" = 0

"$B/mailfsctl" -c "$S/conf" move --prepare --sync-every 0.02 carol srv2 >"$S/sync.out" 2>"$S/sync.err" &
SYNC=$!
rounds() { grep -c "pass round" "$S/sync.out"; }
rounds_over() { test "$(rounds)" -gt "$1"; }
wait_for "two rounds of --sync-every" rounds_over 1
deliver_new "$S" srv1 carol 2 '\Seen' || not_ok "deliveries to carol"
r=$(rounds)
wait_for "a round after the deliveries" rounds_over "$r"
check "--sync-every: the delivered messages were carried by a delta pass" \
    test "$(sum_of 2 $(passes_of "$S" carol 2))" -ge 2
check "--sync-every: still running" kill -0 $SYNC
# mv held in its cutover (locked) while a round comes due: the syncer
# must neither fail nor disturb the move; it ends once the move is done.
touch "$S/stall"
mv "$M/srv1/carol" "$M/srv2/" 2>"$S/mv.err" &
MV=$!
wait_for "mv held at locked" grep -q "stalled at locked" "$S/daemon.log"
r=$(rounds)
# a round came due during the cutover: it printed, or the syncer ended
wait_for "a --sync-every round during the cutover" \
    sh -c "! kill -0 $SYNC 2>/dev/null || test \$(grep -c 'pass round' '$S/sync.out') -gt $r"
rm -f "$S/stall"
wait $MV
check "mv of the synced mailbox succeeds ($(cat "$S/mv.err"))" test $? = 0
wait_for "--sync-every to end after the move" sh -c "! kill -0 $SYNC 2>/dev/null"
wait $SYNC
rc=$?
check "--sync-every exits 0 once mv completed the move (exit $rc: $(tail -1 "$S/sync.err"))" test $rc = 0
check "carol is in srv2 only" test -d "$M/srv2/carol" -a ! -e "$M/srv1/carol"
check "carol has every message ($(find "$M/srv2/carol" -type f | wc -l))" \
    test "$(find "$M/srv2/carol" -type f | wc -l)" = "$(($(find "$M/srv1/bob" -type f | wc -l) + 2))"
seen=0
for f in "$M/srv2/carol/INBOX"/*; do
    [ -f "$f" ] && getfattr --only-values -n user.mail.flags "$f" 2>/dev/null | grep -q Seen && seen=$((seen + 1))
done
check "carol's messages kept their flags (2 filled + 2 delivered \\Seen: $seen)" test $seen = 4
unmount "$S"
[ $FAILS = 0 ]
