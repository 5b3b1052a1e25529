#!/bin/bash
# The directory goes down during an online move's cutover (DESIGN 10,
# issue 13).  A [directory] with a hold (description: "mailfs-lock %t"),
# `mv MOUNT/srv1/U MOUNT/srv2/` held (MAILFS_STALL) at "held" (the hold is
# on U's entry), slapd stopped, the move released:
#   - the move rolls back: mv fails with EIO; U is intact in srv1, visible,
#     unlocked (a write through the mount succeeds), no hidden copy left;
#   - the hold stays recorded (the journal's move_hold row) while slapd is
#     down;
#   - slapd back: the daemon's housekeeping (every 2 s) lifts the hold
#     (ldapsearch shows no hold), the record goes, `mailfsctl moves` shows
#     the move rolled back, mailHost still says srv1.
# For sqlite -> maildir and maildir -> sqlite.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../ldap.sh"
. "$(dirname "$0")/online-lib.sh"

L=$WORK/ldap
slapd_start "$L" || exit 1
trap 'rm -f "$WORK"/*/stall; slapd_stop "$L"; cleanup' EXIT

holds_recorded() { journal "$1" "select count(*) from move_hold"; }
no_hold_record() { test "$(holds_recorded "$1")" = 0; }
slapd_up() { ldapsearch -x -H "$LDAP_URI" -b "" -s base -LLL >/dev/null 2>&1; }

down_in_cutover() { # K1 K2 USER
    local k1=$1 k2=$2 u=$3 S=$WORK/$1-$2 what="$1->$2"
    ldap_person "$u" srv1.example.org || { not_ok "$what: ldap entry"; return; }
    osite "$S" "$k1" "$k2" ldap || { not_ok "$what: site"; return; }
    local M=$S/mnt
    mount_fg "$S" MAILFS_STALL=held MAILFS_STALL_FILE="$S/stall" || return
    fill "$M/srv1/$u" || not_ok "$what: fill"
    snap "$M/srv1/$u" >"$S/snap"
    touch "$S/stall"
    mv "$M/srv1/$u" "$M/srv2/" 2>"$S/mv.err" &
    local mvpid=$!
    wait_for "$what: the move held at held" grep -q "stalled at held" "$S/daemon.log" || return
    local hold
    hold=$(hold_of "$u")
    check "$what: the hold is on $u's entry while the cutover runs ($hold)" \
        test -n "$hold" -a "${hold%% *}" = mailfs-lock
    local until=${hold#* } now
    now=$(date +%s)
    check "$what: ... until about lock-seconds (60) ahead ($((until - now)) s)" \
        test "$((until - now))" -ge 50 -a "$((until - now))" -le 61
    slapd_stop "$L"
    check "$what: slapd is down" sh -c "! ldapsearch -x -H '$LDAP_URI' -b '' -s base >/dev/null 2>&1"
    rm -f "$S/stall"
    wait $mvpid
    local rc=$?
    check "$what: mv fails (exit $rc)" test $rc != 0
    check "$what: ... with EIO ($(cat "$S/mv.err"))" grep -q "Input/output error" "$S/mv.err"
    check "$what: $u is visible in srv1 only" test -d "$M/srv1/$u" -a ! -e "$M/srv2/$u"
    snap "$M/srv1/$u" >"$S/snap.now"
    check "$what: $u is intact (bytes, flags, folders, ACL)" cmp -s "$S/snap" "$S/snap.now"
    check "$what: the journal keeps the hold's record while slapd is down" \
        test "$(holds_recorded "$S")" = 1
    check "$what: $u is not locked while slapd is down" test "$(source_locks "$S")" = 0
    check "$what: ... a write through the mount succeeds" \
        cp "$TD/eml/tika/$(ls "$TD/eml/tika" | sed -n 1p)" "$M/srv1/$u/INBOX/while-down"
    rm -f "$M/srv1/$u/INBOX/while-down"
    snap "$M/srv1/$u" >"$S/snap" # (the write moved INBOX's date)
    check "$what: no hidden copy left while slapd is down" test "$(hidden_copies "$S")" = 0

    slapd_start "$L" || return
    trap 'rm -f "$WORK"/*/stall; slapd_stop "$L"; cleanup' EXIT
    wait_for "$what: the housekeeping to lift the hold once slapd is back" no_hold "$u" &&
        ok "$what: the hold is gone from $u's entry (ldapsearch)"
    wait_for "$what: the hold's record to go" no_hold_record "$S" &&
        ok "$what: the journal's record of the hold is gone"
    wait_for "$what: moves to show the move rolled back" moves_are "$S" True state rolled-back &&
        ok "$what: mailfsctl moves shows the move rolled back"
    "$B/mailfsctl" -c "$S/conf" moves >"$S/moves.txt"
    check "$what: mailfsctl moves (table) says rolled-back" grep -q "rolled-back" "$S/moves.txt"
    settled "$S" "$u" "$S/snap" srv1 ldap "$what after slapd returned"
    unmount "$S"
}

down_in_cutover sqlite maildir alice
down_in_cutover maildir sqlite bob
[ $FAILS = 0 ]
