#!/bin/bash
# Crash safety of moves (DESIGN 4): for every fault point of the move
# protocol, the daemon kills itself with SIGKILL there (MAILFS_FAULT, a
# test-only build feature) during `mv MOUNT/srv1/alice MOUNT/srv2/`; after a
# remount the invariant must hold:
#   - the mailbox is visible in exactly one store,
#   - its tree (names, sizes, mtimes, modes, bytes, xattrs) equals the original,
#   - no move is pending in the journal, no hidden incoming copy is left,
#     the source is not locked.
# Before the commit point the move must have rolled back; after it, forward.
# Run for sqlite -> sqlite, sqlite -> maildir and maildir -> maildir (a
# maildir store on either side; issue 12).
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
B=${MAILFS_BUILD:-$ROOT/build}/fs
. "$ROOT/scripts/testdata.sh"
TESTDATA=$(mailfs_testdata "$ROOT") || { echo "not ok: no test data (shared/testdata, or MAILFS_TESTDATA)"; exit 1; }
TD=$TESTDATA/mail
WORK=$(mktemp -d "${MAILFS_TEST_TMPDIR:-/tmp}/mailfs-crash.XXXXXX")
cleanup() {
    for m in "$WORK"/*/mnt; do fusermount3 -u "$m" 2>/dev/null; done
    pkill -KILL -f "mailfs -f $WORK/" 2>/dev/null
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

wait_mounted() { for _ in $(seq 200); do mountpoint -q "$1" && return 0; sleep 0.05; done; return 1; }

# store_conf NAME KIND: the [store] group of a sqlite or maildir store.
store_conf() {
    case $2 in
    maildir) printf '[store %s]\nbackend = maildir\npath = %s\n' "$1" "$1" ;;
    *) printf '[store %s]\npath = %s.db\n' "$1" "$1" ;;
    esac
}
# hidden_incoming T NAME KIND / locked T NAME KIND: what a move left in a store.
hidden_incoming() {
    case $3 in
    maildir) find "$1/$2" -maxdepth 1 -name '~mailfs~move~*' | wc -l ;;
    *) sqlite3 "$1/$2.db" "select count(*) from mailbox where state = 1" ;;
    esac
}
locked() {
    case $3 in
    maildir) cat "$1/$2"/*/mailfs-mailbox 2>/dev/null | grep -c '^lock-move [1-9]' ;;
    *) sqlite3 "$1/$2.db" "select count(*) from mailbox where lock_move != 0" ;;
    esac
}

# point expected-store
run_point() {
    local point=$1 expect=$2 T=$WORK/$K1-$K2-$(echo "$1" | tr ':' '_') ok=1
    mkdir -p "$T/mnt"
    { printf '[mailfs]\njournal = journal.db\n'; store_conf srv1 "$K1"; store_conf srv2 "$K2"; } >"$T/conf"
    for s in srv1 srv2; do "$B/mailfsctl" -c "$T/conf" store create $s >/dev/null || return 1; done
    "$B/mailfs" "$T/conf" "$T/mnt" || return 1
    local M=$T/mnt
    mkdir -p "$M/srv1/alice/INBOX" "$M/srv1/alice/Archive/2019"
    cp -a "$TD/eml/spamassassin/." "$M/srv1/alice/INBOX/"
    cp -a "$TD/eml/cpython/." "$M/srv1/alice/Archive/2019/"
    setfattr -n user.mail.flags -v '\Seen $Label1' "$M/srv1/alice/INBOX/$(ls "$M/srv1/alice/INBOX" | head -1)"
    setfattr -n user.mail.special-use -v '\Archive' "$M/srv1/alice/Archive"
    setfattr -n user.mail.acl -v 'bob lr' "$M/srv1/alice"
    (cd "$M/srv1/alice" && find . -printf '%P %s %T@ %m\n' | sort) >"$T/tree.before"
    (cd "$M/srv1" && find alice -print0 | sort -z | xargs -0 getfattr -d) >"$T/xattr.before" 2>/dev/null
    cp -a "$M/srv1/alice" "$T/bytes.before"
    fusermount3 -u "$M"

    MAILFS_FAULT=$point setsid "$B/mailfs" -f "$T/conf" "$M" 2>"$T/faulty.log" &
    local dpid=$!
    wait_mounted "$M" || { echo "not ok: $point: no mount"; return 1; }
    mv "$M/srv1/alice" "$M/srv2/" 2>"$T/mv.err"
    local mvrc=$?
    if [ "$point" = none ]; then fusermount3 -u "$M"; fi
    wait $dpid 2>/dev/null
    fusermount3 -u "$M" 2>/dev/null

    "$B/mailfs" "$T/conf" "$M" || { echo "not ok: $point: remount failed"; return 1; }
    local n1 n2 where=none
    n1=$(ls "$M/srv1" | grep -c '^alice$'); n2=$(ls "$M/srv2" | grep -c '^alice$')
    [ "$n1" = 1 ] && where=srv1
    [ "$n2" = 1 ] && where=srv2
    [ $((n1 + n2)) = 1 ] || { echo "  alice visible in $n1 + $n2 stores"; ok=0; }
    [ "$where" = "$expect" ] || { echo "  alice in $where, expected $expect"; ok=0; }
    if [ "$where" != none ]; then
        (cd "$M/$where/alice" && find . -printf '%P %s %T@ %m\n' | sort) >"$T/tree.after"
        cmp -s "$T/tree.before" "$T/tree.after" || { echo "  names/sizes/mtimes/modes differ"; ok=0; }
        diff -r "$T/bytes.before" "$M/$where/alice" >/dev/null || { echo "  bytes differ"; ok=0; }
        (cd "$M/$where" && find alice -print0 | sort -z | xargs -0 getfattr -d) >"$T/xattr.after" 2>/dev/null
        cmp -s "$T/xattr.before" "$T/xattr.after" || { echo "  xattrs differ"; ok=0; }
    fi
    local pending incoming locked
    pending=$("$B/mailfsctl" -c "$T/conf" moves --json | python3 -c '
import json, sys
print(sum(m["state"] in ("running", "committed") for m in json.load(sys.stdin)))')
    incoming=$(( $(hidden_incoming "$T" srv1 "$K1") + $(hidden_incoming "$T" srv2 "$K2") ))
    locked=$(locked "$T" srv1 "$K1")
    [ "$pending" = 0 ] || { echo "  $pending moves pending in the journal"; ok=0; }
    [ "$incoming" = 0 ] || { echo "  $incoming hidden incoming copies left"; ok=0; }
    [ "$locked" = 0 ] || { echo "  source still locked"; ok=0; }
    if [ "$point" = none ]; then [ $mvrc = 0 ] || { echo "  mv failed without a fault"; ok=0; }; fi
    fusermount3 -u "$M"
    [ $ok = 1 ] && echo "ok: $K1 -> $K2: crash at $point -> $where" || echo "not ok: $K1 -> $K2: crash at $point"
    [ $ok = 1 ]
}

fail=0
for kinds in sqlite:sqlite sqlite:maildir maildir:maildir; do
    K1=${kinds%:*} K2=${kinds#*:}
    # Before the commit point: back to srv1.  At and after it: forward to srv2.
    for p in locked:1 copy:1 copy:2 copied:1 verified:1 before-commit:1; do run_point "$p" srv1 || fail=1; done
    for p in committed:1 finished:1; do run_point "$p" srv2 || fail=1; done
    run_point none srv2 || fail=1
done
exit $fail
