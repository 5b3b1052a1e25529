#!/bin/bash
# A maildir store changes a mailbox's name and state in two steps: the
# directory is renamed, then its mailfs-mailbox file rewritten.  A crash
# between the two (found by t-move-random-kill, maildir -> maildir-fs)
# leaves the new name with the old state.  Made here by hand, from a move
# killed at its commit point, for each rename of a move's finish:
#   - the target's incoming copy shown (~mailfs~move~N~alice -> alice),
#     its file still saying "incoming";
#   - the source retained (alice -> ~mailfs~retained~N~alice), its file
#     still saying "visible, locked".
# Then recover must leave alice visible in the target only, with every
# message, and check clean; and undo must bring it back.
set -u
. "$(dirname "$0")/../lib.sh"

# half_renamed CASE KIND: one run; the target store is of KIND.
half_renamed() {
    local case=$1 kind=$2 S=$WORK/$1-$2 M
    M=$S/mnt
    site "$S" md1@maildir "md2@$kind" || return 1
    C() { "$B/mailfsctl" -c "$S/conf" "$@"; }
    # alice came to md1 by a move (1) long purged, so its file names that
    # move; the killed one is move 2
    mount_fg "$S" || return 1
    mkdir -p "$M/md2/alice/INBOX" "$M/md2/alice/Archive"
    cp -a "$TD/eml/spamassassin/." "$M/md2/alice/INBOX/"
    cp -a "$TD/eml/cpython/." "$M/md2/alice/Archive/"
    mv "$M/md2/alice" "$M/md1/" || not_ok "$case/$kind: move 1"
    tree_of "$M/md1/alice" >"$S/alice.tree"
    unmount "$S"
    C purge --all >/dev/null
    MAILFS_FAULT=committed C move alice md2 >/dev/null 2>&1
    local in=$S/md2/~mailfs~move~2~alice
    [ -d "$in" ] || { not_ok "$case/$kind: no incoming copy after a kill at committed"; return 1; }
    case $case in
    shown) mv "$in" "$S/md2/alice" ;; # renamed; the file still says incoming
    retained)
        # the target shown completely, then the source's rename cut short
        mv "$in" "$S/md2/alice" && sed -i 's/^state .*/state 0/' "$S/md2/alice/mailfs-mailbox" &&
            mv "$S/md1/alice" "$S/md1/~mailfs~retained~2~alice"
        ;;
    esac
    C recover >"$S/recover.out" 2>&1
    rc=$?
    check "$case/$kind: recover exits 0 ($(tail -1 "$S/recover.out"))" test $rc = 0
    check "$case/$kind: alice's directory is in md2" test -d "$S/md2/alice"
    check "$case/$kind: check is clean" bash -c "'$B/mailfsctl' -c '$S/conf' check >/dev/null 2>&1"
    mount_fg "$S" || return 1
    check "$case/$kind: alice visible in md2 only" test -d "$M/md2/alice" -a ! -e "$M/md1/alice"
    check "$case/$kind: with every message, unchanged" \
        test "$(tree_of "$M/md2/alice" 2>/dev/null)" = "$(cat "$S/alice.tree")"
    unmount "$S"
    C undo 2 >"$S/undo.out" 2>&1
    rc=$?
    check "$case/$kind: undo of the move works ($(cat "$S/undo.out"))" test $rc = 0
    check "$case/$kind: ... its retained copy was the move's" check_clean_in "$S"
    mount_fg "$S" || return 1
    check "$case/$kind: alice back in md1, unchanged" \
        test "$(tree_of "$M/md1/alice" 2>/dev/null)" = "$(cat "$S/alice.tree")"
    unmount "$S"
}
check_clean_in() { "$B/mailfsctl" -c "$1/conf" check >/dev/null 2>&1; }

for kind in ${ONLY_KIND:-maildir maildir-fs}; do
    half_renamed shown $kind
    half_renamed retained $kind
done
[ $FAILS = 0 ]
