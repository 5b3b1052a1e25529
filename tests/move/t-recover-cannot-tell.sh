#!/bin/bash
# Recovery that cannot tell whether the source mailbox is there (its
# Maildir state file unreadable: here a directory in its place, EIO) must
# not take that for "no source mailbox": the move stays unsettled and
# `mailfsctl recover` says so, and once the store reads again the next
# recover settles it: rolled back with the source unlocked (a crash before
# the commit point), or finished with the source retained (after it).
# Before, the move was recorded settled while the source stayed visible
# and locked (rolled back) or visible in both stores (finished).
set -u
. "$(dirname "$0")/../lib.sh"

# crash_then_recover LABEL POINT STATE: alice moved srv1 (Maildir) -> srv2 by
# mailfsctl, killed at POINT; recover first with srv1/alice unreadable.
crash_then_recover() {
    local label=$1 point=$2 state=$3 S=$WORK/$1
    site "$S" srv1@maildir srv2 || { not_ok "$label: site"; return; }
    C() { "$B/mailfsctl" -c "$S/conf" "$@"; }
    C mailbox create srv1 alice >/dev/null || not_ok "$label: mailbox create"
    for f in $(find "$TD/eml/cpython" -type f | sort | head -5); do
        C deliver srv1 alice <"$f" || not_ok "$label: deliver $f"
    done
    MAILFS_FAULT=$point C move --offline alice srv2 >/dev/null 2>&1
    check "$label: the move was killed at $point" \
        test "$(moves_of "$S" 'm["state"] in ("running", "committed")' | wc -l)" = 1
    local meta
    meta=$(find "$S/srv1" -maxdepth 2 -name mailfs-mailbox -path '*/alice/*')
    check "$label: the source is locked by the move" grep -q '^lock-move [1-9]' "$meta"
    mv "$meta" "$meta.saved" && mkdir "$meta"

    C recover >"$S/recover1.out" 2>&1
    check "$label: recover that cannot read the source fails" test $? != 0
    check "$label: ... and names the move not settled ($(tr '\n' ' ' <"$S/recover1.out"))" \
        grep -q '^not settled: move' "$S/recover1.out"
    check "$label: ... which stays unsettled" \
        test "$(moves_of "$S" 'm["state"] in ("running", "committed")' | wc -l)" = 1

    rmdir "$meta" && mv "$meta.saved" "$meta"
    C recover >"$S/recover2.out" 2>&1
    check "$label: recover once the source reads again succeeds ($(tr '\n' ' ' <"$S/recover2.out"))" \
        test $? = 0
    check "$label: the move is $state" moves_are "$S" True state "$state"
    mount_fg "$S" || return
    local M=$S/mnt
    if [ "$state" = rolled-back ]; then
        check "$label: alice in srv1 only" test -d "$M/srv1/alice" -a ! -e "$M/srv2/alice"
        check "$label: alice in srv1 takes mail (not locked)" \
            bash -c "echo 'Subject: x' | '$B/mailfsctl' -c '$S/conf' deliver srv1 alice"
    else
        check "$label: alice in srv2 only" test -d "$M/srv2/alice" -a ! -e "$M/srv1/alice"
    fi
    check "$label: alice has her 5 messages" test "$(ls "$M"/srv*/alice/INBOX | wc -l)" -ge 5
    unmount "$S"
}

crash_then_recover rollback copied rolled-back
crash_then_recover forward committed done

[ $FAILS = 0 ]
