#!/bin/bash
# Crash safety of online moves (DESIGN 10, issue 13): the mover is killed
# with SIGKILL (MAILFS_FAULT, a test-only build feature) at each point of
# the online path, once as the daemon serving `mv MOUNT/srv1/U MOUNT/srv2/`
# and once as `mailfsctl move U srv2`.  Every move is held at "copied"
# (MAILFS_STALL) while the user's mail changes behind it: three deliveries
# (`mailfsctl deliver`, one flagged), a message removed and one re-flagged
# through a second mount; so the delta and final passes have work and the
# pass-N points are reached.  A directory (test slapd) with a hold
# (description: "mailfs-lock %t") is configured, so the held point has the
# hold on the user's entry when the mover dies.
# After a remount (daemon) or `mailfsctl recover` (mailfsctl):
#   - the mailbox is visible in exactly one store, the one expected: before
#     the commit point the source (rolled back), after it the target;
#   - every message byte-identical with its flags, the folders, special-use
#     and ACL as the source had them when the mover died (changes included);
#   - no move unsettled, no hidden copy, no mailbox locked;
#   - the hold is gone from the user's entry (ldapsearch), mailHost points
#     where the mailbox is.
# Also: `mailfsctl move --prepare` killed in its passes (rolled back by
# `mailfsctl recover`); a prepared move survives a remount's recovery
# ("prepared") and its completion by mv, killed in the cutover, is rolled
# back or forward like any move; writes made while the bulk copy is held
# between two batches are in the result when the move commits.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../ldap.sh"
. "$(dirname "$0")/online-lib.sh"

slapd_start "$WORK/ldap" || exit 1
RUN=0

# change_behind T U: the user's mail changes while the move is held:
# deliveries, a removal and a flag change (the last two through a second
# mount, which the held move's kernel locks do not reach); then the
# expected result: the source as it now is, read through that mount.
change_behind() {
    local t=$1 u=$2 m2=$1/mnt2
    deliver_new "$t" srv1 "$u" 3 '\Flagged' || { not_ok "deliveries during the move"; return 1; }
    mkdir -p "$m2"
    setsid "$B/mailfs" -f "$t/conf" "$m2" 2>>"$t/mnt2.log" &
    wait_for "the second mount" mountpoint -q "$m2" || return 1
    local a=$m2/srv1/$u/Archive/2019
    rm "$a/$(ls "$a" | sed -n 1p)" &&
        setfattr -n user.mail.flags -v '\Answered' "$a/$(ls "$a" | sed -n 2p)" ||
        not_ok "a removal and a flag change during the move"
    snap "$m2/srv1/$u" >"$t/snap"
    fusermount3 -u "$m2"
    wait_for "the second mount to go" not_running_mnt2 "$t"
}
not_running_mnt2() { ! pgrep -f "mailfs -f $1/conf $1/mnt2" >/dev/null; }

# held_or_gone WHO T PID: the mover (PID) reached the stall, or died
# before.  The daemon says so in its log; mailfsctl logs only warnings:
# at "copied" its journal shows the bulk pass, at "copy" (inside the bulk
# pass, which records nothing yet) it sleeps (clock_nanosleep, 230) with
# its hidden copy made.
held_or_gone() {
    kill -0 "$3" 2>/dev/null || return 0
    if [ "$1" = daemon ]; then
        grep -q "stalled at $STALL_AT" "$2/mover.log" 2>/dev/null
    elif [ "$STALL_AT" = copied ]; then
        test "$(moves_count "$2" 'len(m["passes"]) >= 1' 2>/dev/null)" = 1
    else
        test "$(hidden_copies "$2")" = 1 && grep -q '^230 ' "/proc/$3/syscall" 2>/dev/null
    fi
}

# run WHO POINT EXPECT K1 K2: a move of a new user by WHO (daemon or ctl)
# killed at POINT (none: not killed), the mailbox then expected in EXPECT.
run() {
    local who=$1 point=$2 expect=$3 k1=$4 k2=$5
    RUN=$((RUN + 1))
    local u=u$RUN T=$WORK/$RUN-$who-$k1-$k2-${2//:/_}
    local label="$who $k1->$k2 killed at $point"
    [ "$point" = none ] && label="$who $k1->$k2 held at $STALL_AT, not killed"
    mkdir -p "$T"
    ldap_person "$u" srv1.example.org || { not_ok "$label: ldap entry"; return; }
    osite "$T" "$k1" "$k2" ldap || { not_ok "$label: site"; return; }
    mount_fg "$T" || return
    fill "$T/mnt/srv1/$u" || not_ok "$label: fill"
    snap "$T/mnt/srv1/$u" >"$T/snap"
    unmount "$T"
    touch "$T/stall"
    local env=(MAILFS_STALL="$STALL_AT" MAILFS_STALL_FILE="$T/stall")
    [ "$point" = none ] || env+=(MAILFS_FAULT="$point")
    local pid
    if [ "$who" = daemon ]; then
        env "${env[@]}" setsid "$B/mailfs" -f "$T/conf" "$T/mnt" 2>"$T/mover.log" &
        pid=$!
        wait_for "mount of $T" mountpoint -q "$T/mnt" || return
        mv "$T/mnt/srv1/$u" "$T/mnt/srv2/" 2>"$T/mv.err" &
    else
        local prep=()
        [ "$who" = prep ] && prep=(--prepare)
        env "${env[@]}" "$B/mailfsctl" -c "$T/conf" move "${prep[@]}" "$u" srv2 >"$T/ctl.out" \
            2>"$T/mover.log" &
        pid=$!
    fi
    local client=$!
    wait_for "$label: the move held at $STALL_AT (or killed before)" held_or_gone "$who" "$T" "$pid"
    if kill -0 "$pid" 2>/dev/null; then change_behind "$T" "$u"; fi
    rm -f "$T/stall"
    wait "$client"
    local rc=$?
    if [ "$who" = daemon ]; then
        if [ "$point" = none ]; then
            check "$label: mv succeeds" test $rc = 0
            unmount "$T"
        else
            wait_for "$label: the daemon killed" not_running "$T"
            fusermount3 -u "$T/mnt" 2>/dev/null
        fi
        wait "$pid"
        rc=$?
    fi
    if [ "$point" = none ]; then
        [ "$who" = daemon ] || check "$label: mailfsctl move succeeds" test $rc = 0
    else
        check "$label: the mover was killed by SIGKILL at the point (exit $rc)" test $rc = 137
    fi
    if [ "$who" != daemon ]; then
        "$B/mailfsctl" -c "$T/conf" recover >>"$T/recover.log" 2>&1 ||
            not_ok "$label: mailfsctl recover failed: $(tail -2 "$T/recover.log")"
    fi
    mount_fg "$T" || return
    settled "$T" "$u" "$T/snap" "$expect" ldap "$label"
    unmount "$T"
}

# run_prepared POINT EXPECT: `mailfsctl move --prepare`, changes, then
# `mv` (the cutover alone) through a daemon killed at POINT.
run_prepared() {
    local point=$1 expect=$2
    RUN=$((RUN + 1))
    local u=u$RUN T=$WORK/$RUN-prepared-${1//:/_} label="prepared, mv killed at $1"
    ldap_person "$u" srv1.example.org || { not_ok "$label: ldap entry"; return; }
    osite "$T" sqlite maildir ldap || { not_ok "$label: site"; return; }
    mount_fg "$T" || return
    fill "$T/mnt/srv1/$u" || not_ok "$label: fill"
    check "$label: move --prepare" "$B/mailfsctl" -c "$T/conf" move --prepare "$u" srv2 >/dev/null
    unmount "$T"
    mount_fg "$T" || return
    check "$label: a remount's recovery leaves the prepared move alone" \
        moves_are "$T" True state prepared
    deliver_new "$T" srv1 "$u" 2 '\Seen' || not_ok "$label: deliveries"
    local a=$T/mnt/srv1/$u/Archive/2019
    rm "$a/$(ls "$a" | sed -n 1p)" || not_ok "$label: a removal"
    snap "$T/mnt/srv1/$u" >"$T/snap"
    unmount "$T"
    mount_fg "$T" MAILFS_FAULT="$point" || return
    mv "$T/mnt/srv1/$u" "$T/mnt/srv2/" 2>"$T/mv.err"
    wait_for "$label: the daemon killed" not_running "$T"
    fusermount3 -u "$T/mnt" 2>/dev/null
    mount_fg "$T" || return
    settled "$T" "$u" "$T/snap" "$expect" ldap "$label"
    unmount "$T"
}

# Before the commit point: rolled back to srv1.  At and after it: srv2.
STALL_AT=copied
for p in copy:1 copied pass-2-delta locked hold-saved held pass-3-final verified \
    directory-saved directory before-commit; do
    run daemon "$p" srv1 sqlite sqlite
done
for p in committed finished; do run daemon "$p" srv2 sqlite sqlite; done
run daemon none srv2 sqlite sqlite
# mailfsctl move, maildir stores, the points of the passes and the cutover.
for p in pass-2-delta:srv1 held:srv1 pass-3-final:srv1 before-commit:srv1 committed:srv2; do
    run ctl "${p%:*}" "${p#*:}" maildir maildir
done
# Across kinds, the daemon serving mv: killed with the hold on.
run daemon held srv1 maildir sqlite

# mailfsctl move --prepare killed in its passes: rolled back.
for p in copy:1 pass-2-delta; do run prep "$p" srv1 sqlite maildir; done
# A prepared move completed by mv, killed in the cutover.
for p in pass-3-final:srv1 held:srv1 committed:srv2; do run_prepared "${p%:*}" "${p#*:}"; done

# Writes while the bulk copy is held between two batches ("copy": after
# INBOX's messages were committed, before Archive's): in the result.
STALL_AT=copy
run daemon none srv2 sqlite maildir
run ctl none srv2 maildir sqlite

echo "# $RUN moves"
[ $FAILS = 0 ]
