#!/bin/bash
# Several moves, and the daemon killed with SIGKILL at a random moment of
# them, five rounds over.  After each remount: every mailbox is visible in
# exactly one store with its original tree, nothing is pending in the
# journal, no hidden incoming copy is left, no mailbox stays locked, and
# mailfsctl check finds nothing.
# (The sleep below picks the random moment; it synchronises nothing.)
# Run for every pair of kinds, a maildir store on either side (issue 12):
# sqlite:sqlite, sqlite:maildir, maildir:sqlite, maildir:maildir and
# maildir:maildir-fs; moves go both ways, so each pair covers both
# directions, started from either side.  KINDS="a:b ..." picks pairs, ROUNDS
# the rounds per pair.
set -u
. "$(dirname "$0")/../lib.sh"

seed=${SEED:-$$}
RANDOM=$seed
echo "# seed $seed"
boxes=(a b c d e f)

# hidden_incoming SITE NAME KIND / locked SITE NAME KIND: what a move left
# in a store (a hidden incoming copy; a mailbox locked by a move, retained
# copies included).
hidden_incoming() {
    case $3 in
    maildir*) find "$1/$2" -mindepth 1 -maxdepth 1 -name '~mailfs~move~*' | wc -l ;;
    *) sqlite3 "$1/$2.db" "select count(*) from mailbox where state = 1" ;;
    esac
}
locked() {
    case $3 in
    # (visible mailboxes: a lock line a kill left in a retained copy's
    # file, behind its rename, is no lock; the name decides)
    maildir*) find "$1/$2" -mindepth 2 -maxdepth 2 -name mailfs-mailbox ! -path '*/~mailfs~*' \
        -exec cat {} + | grep -c '^lock-move [1-9]' ;;
    *) sqlite3 "$1/$2.db" "select count(*) from mailbox where lock_move != 0" ;;
    esac
}
spec() { case $2 in maildir*) echo "$1@$2" ;; *) echo "$1" ;; esac; }

# The FUSE control filesystem, through which a hung connection is aborted
# (not mounted on every system: mounted here if missing).
if ! mountpoint -q /sys/fs/fuse/connections; then
    mount -t fusectl none /sys/fs/fuse/connections ||
        { not_ok "cannot mount the FUSE control filesystem (fusectl)"; exit 1; }
fi

movers_done() { ! kill -0 "$movers" 2>/dev/null; }
# wait_quietly WHAT COND...: like wait_for (10 s), but a timeout is not a failure.
wait_quietly() {
    shift
    for _ in $(seq 200); do "$@" && return 0; sleep 0.05; done
    return 1
}

# move_all M: every mailbox to the other store, one mv after the other.
move_all() {
    local b
    for b in "${boxes[@]}"; do
        if [ -d "$1/srv1/$b" ]; then mv "$1/srv1/$b" "$1/srv2/"; else mv "$1/srv2/$b" "$1/srv1/"; fi
    done
}

# verify S K1 K2 WHAT: the invariant, on the mounted site S.
verify() {
    local S=$1 K1=$2 K2=$3 what=$4 M=$1/mnt bad=0 b n where moved back
    for b in "${boxes[@]}"; do
        n=$(( $(ls "$M/srv1" | grep -cx "$b") + $(ls "$M/srv2" | grep -cx "$b") ))
        if [ "$n" != 1 ]; then echo "  $what: $b visible $n times"; bad=1; continue; fi
        where=srv1; [ -d "$M/srv2/$b" ] && where=srv2
        [ "$(tree_of "$M/$where/$b")" = "$(cat "$S/$b.tree")" ] || { echo "  $what: $b differs"; bad=1; }
    done
    [ "$(moves_count "$S" 'm["state"] in ("running", "committed")')" = 0 ] ||
        { echo "  $what: moves pending"; bad=1; }
    [ "$(( $(hidden_incoming "$S" srv1 "$K1") + $(hidden_incoming "$S" srv2 "$K2") ))" = 0 ] ||
        { echo "  $what: hidden incoming copy left"; bad=1; }
    [ "$(( $(locked "$S" srv1 "$K1") + $(locked "$S" srv2 "$K2") ))" = 0 ] ||
        { echo "  $what: a mailbox is still locked"; bad=1; }
    "$B/mailfsctl" -c "$S/conf" check >"$S/check.out" 2>&1 ||
        { echo "  $what: check finds:"; sed 's/^/    /' "$S/check.out"; bad=1; }
    moved=$(moves_count "$S" 'm["state"] == "done"')
    back=$(moves_count "$S" 'm["state"] == "rolled-back"')
    [ $bad = 0 ] && ok "$what: invariant holds ($moved moves done, $back rolled back so far)" ||
        not_ok "$what"
}

# run_pair K1 K2: the mailboxes made in srv1 (kind K1), moved between it
# and srv2 (kind K2) once whole, to time a pass, then ROUNDS times killed
# at a random moment of the pass (so that kills fall on every move, before
# and after its commit point, however slow the kinds make it).
run_pair() {
    local K1=$1 K2=$2 S=$WORK/$1-$2 M b round t0 pass_ms at_ms
    M=$S/mnt
    site "$S" "$(spec srv1 "$K1")" "$(spec srv2 "$K2")" || return 1
    mount_fg "$S" || return 1
    for b in "${boxes[@]}"; do
        mkdir -p "$M/srv1/$b/INBOX" "$M/srv1/$b/Archive"
        cp -a "$TD/eml/spamassassin/." "$M/srv1/$b/INBOX/"
        cp -a "$TD/eml/mime4j/." "$M/srv1/$b/Archive/"
        tree_of "$M/srv1/$b" >"$S/$b.tree"
    done
    t0=$(date +%s%N)
    move_all "$M" || not_ok "$K1 -> $K2: a move without a kill failed"
    pass_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    verify "$S" "$K1" "$K2" "$K1 -> $K2 without a kill (a pass takes $pass_ms ms)"
    unmount "$S"
    for round in $(seq "${ROUNDS:-5}"); do
        mount_fg "$S" || return 1
        conn=$(mountpoint -d "$M" | cut -d: -f2) # while the daemon answers
        move_all "$M" 2>/dev/null &
        movers=$!
        at_ms=$((RANDOM % (pass_ms + 1)))
        sleep "$(printf '%d.%03d' $((at_ms / 1000)) $((at_ms % 1000)))"
        pkill -KILL -f "mailfs -f $S/conf"
        # A killed daemon whose thread waits in the kernel for a directory lock
        # (dropping a moved entry) while the next mv holds that lock waiting
        # for the daemon can never exit: the admin's remedy, aborting the FUSE
        # connection, ends both (README, "A daemon killed with kill -9").
        if ! wait_quietly "the movers to return" movers_done; then
            echo "# $K1 -> $K2 round $round: connection $conn aborted"
            echo 1 >"/sys/fs/fuse/connections/$conn/abort"
        fi
        wait $movers
        fusermount3 -u "$M" 2>/dev/null
        wait_for "the killed daemon to be gone" not_running "$S"
        mount_fg "$S" || return 1
        verify "$S" "$K1" "$K2" "$K1 -> $K2 round $round, killed at $at_ms ms"
        unmount "$S"
    done
}

for kinds in ${KINDS:-sqlite:sqlite sqlite:maildir maildir:sqlite maildir:maildir maildir:maildir-fs}; do
    run_pair "${kinds%:*}" "${kinds#*:}" || not_ok "${kinds%:*} -> ${kinds#*:}: could not set up or remount"
done
[ $FAILS = 0 ]
