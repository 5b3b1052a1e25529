#!/bin/bash
# Several moves, and the daemon killed with SIGKILL at a random moment of
# them, five rounds over.  After each remount: every mailbox is visible in
# exactly one store with its original tree, nothing is pending in the
# journal, no hidden incoming copy is left, no mailbox stays locked.
# (The sleep below picks the random moment; it synchronises nothing.)
set -u
. "$(dirname "$0")/../lib.sh"

seed=${SEED:-$$}
RANDOM=$seed
echo "# seed $seed"
S=$WORK/site
site "$S" srv1 srv2 || exit 1
M=$S/mnt
mount_fg "$S" || exit 1
boxes=(a b c d e f)
for b in "${boxes[@]}"; do
    mkdir -p "$M/srv1/$b/INBOX" "$M/srv1/$b/Archive"
    cp -a "$TD/eml/spamassassin/." "$M/srv1/$b/INBOX/"
    cp -a "$TD/eml/mime4j/." "$M/srv1/$b/Archive/"
    tree_of "$M/srv1/$b" >"$WORK/$b.tree"
done
unmount "$S"

movers_done() { ! kill -0 "$movers" 2>/dev/null; }
# wait_quietly WHAT COND...: like wait_for (10 s), but a timeout is not a failure.
wait_quietly() {
    shift
    for _ in $(seq 200); do "$@" && return 0; sleep 0.05; done
    return 1
}
for round in 1 2 3 4 5; do
    mount_fg "$S" || exit 1
    conn=$(mountpoint -d "$M" | cut -d: -f2) # while the daemon answers
    # move every mailbox to the other store, one mv after the other
    (for b in "${boxes[@]}"; do
        if [ -d "$M/srv1/$b" ]; then mv "$M/srv1/$b" "$M/srv2/"; else mv "$M/srv2/$b" "$M/srv1/"; fi
    done) 2>/dev/null &
    movers=$!
    sleep "$(printf '0.%03d' $((RANDOM % 300)))"
    pkill -KILL -f "mailfs -f $S/conf"
    # A killed daemon whose thread waits in the kernel for a directory lock
    # (dropping a moved entry) while the next mv holds that lock waiting
    # for the daemon can never exit: the admin's remedy, aborting the FUSE
    # connection, ends both (README, "A daemon killed with kill -9").
    if ! wait_quietly "the movers to return" movers_done; then
        echo "# round $round: connection $conn aborted"
        echo 1 >"/sys/fs/fuse/connections/$conn/abort"
    fi
    wait $movers
    fusermount3 -u "$M" 2>/dev/null
    wait_for "the killed daemon to be gone" not_running "$S"
    mount_fg "$S" || exit 1
    bad=0
    for b in "${boxes[@]}"; do
        n=$(( $(ls "$M/srv1" | grep -cx "$b") + $(ls "$M/srv2" | grep -cx "$b") ))
        if [ "$n" != 1 ]; then echo "  round $round: $b visible $n times"; bad=1; continue; fi
        where=srv1; [ -d "$M/srv2/$b" ] && where=srv2
        [ "$(tree_of "$M/$where/$b")" = "$(cat "$WORK/$b.tree")" ] || { echo "  round $round: $b differs"; bad=1; }
    done
    [ "$(moves_count "$S" 'm["state"] in ("running", "committed")')" = 0 ] ||
        { echo "  round $round: moves pending"; bad=1; }
    for s in srv1 srv2; do
        [ "$(sqlite3 "$S/$s.db" 'select count(*) from mailbox where state = 1 or lock_move != 0')" = 0 ] ||
            { echo "  round $round: hidden copy or lock left in $s"; bad=1; }
    done
    moved=$(moves_count "$S" 'm["state"] == "done"')
    back=$(moves_count "$S" 'm["state"] == "rolled-back"')
    [ $bad = 0 ] && ok "round $round: invariant holds ($moved moves done, $back rolled back so far)" ||
        not_ok "round $round"
    unmount "$S"
done
[ $FAILS = 0 ]
