#!/bin/bash
# A live `mailfsctl move` taken from its mover by the daemon's recovery
# (audit finding 3): the daemon's housekeeping (every 2 s) rolls back a
# move whose owner it judges dead.  Here the mover's journal row is handed
# to recovery behind its back (owner_pid = 0, as jn_disown; what hidepid or
# another PID namespace made the daemon conclude), while the mover is held
# (MAILFS_STALL) between its verification and its commit point:
#   - at "directory" (the entry already switched to srv2, recorded), and
#   - at "verified" (before the directory step: the mover switches the
#     entry itself after the rollback);
# offline and online.  Once the daemon has rolled the move back and the
# mover is released:
#   - mailfsctl move fails, saying the move was taken over;
#   - the journal says rolled-back (not committed, not done);
#   - the mailbox is in srv1 only, intact, unlocked, no hidden copy;
#   - mailHost still (again) says srv1, no hold on the entry.
# Before the fix the mover wrote "committed" over "rolled-back" and rolled
# forward: mailHost srv2, where there is no mailbox.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../ldap.sh"
. "$(dirname "$0")/online-lib.sh"

L=$WORK/ldap
slapd_start "$L" || exit 1
trap 'rm -f "$WORK"/*/stall; slapd_stop "$L"; cleanup' EXIT

host_is() { test "$(ldap_host "$1")" = "$2"; } # re-run at every poll

taken() { # POINT MODE USER
    local point=$1 mode=$2 u=$3 S=$WORK/$1$2 what="$1 ${2:-online}"
    ldap_person "$u" srv1.example.org || { not_ok "$what: ldap entry"; return; }
    osite "$S" sqlite maildir ldap || { not_ok "$what: site"; return; }
    local M=$S/mnt
    mount_fg "$S" || return
    fill "$M/srv1/$u" || not_ok "$what: fill"
    snap "$M/srv1/$u" >"$S/snap"
    touch "$S/stall"
    MAILFS_STALL=$point MAILFS_STALL_FILE="$S/stall" \
        "$B/mailfsctl" -c "$S/conf" move $mode "$u" srv2 >"$S/move.out" 2>"$S/move.err" &
    local mvpid=$!
    # Held right after: step verified recorded; the entry switched.
    if [ "$point" = verified ]; then
        wait_for "$what: the mover to reach $point" \
            moves_are "$S" 'm["state"] == "running"' step verified || return
    else
        wait_for "$what: the mover to switch mailHost" \
            host_is "$u" srv2.example.org || return
    fi
    local id
    id=$(journal "$S" "select id from move where state = 'running'")
    check "$what: the move runs ($id)" test -n "$id"
    journal "$S" "update move set owner_pid = 0 where id = $id"
    wait_for "$what: the daemon's recovery to roll the move back" \
        journal_is "$S" "select state from move where id = $id" rolled-back &&
        ok "$what: the daemon rolled the move back under its mover"
    rm -f "$S/stall"
    wait $mvpid
    local rc=$?
    check "$what: mailfsctl move fails (exit $rc)" test $rc != 0
    check "$what: ... saying the move was taken over ($(tail -1 "$S/move.err"))" \
        grep -q "took the move over" "$S/move.err"
    check "$what: the journal still says rolled-back" \
        journal_is "$S" "select state from move where id = $id" rolled-back
    check "$what: the move never reached its committed step" \
        test "$(journal "$S" "select count(*) from move_step where move = $id and step in ('committed', 'finished')")" = 0
    settled "$S" "$u" "$S/snap" srv1 ldap "$what"
    unmount "$S"
}

taken directory --offline alice
taken verified --offline bob
taken directory "" carol
taken verified "" dave

[ $FAILS = 0 ]
