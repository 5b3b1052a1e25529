#!/bin/bash
# Hidden move copies are named "~mailfs~move~ID~NAME" and
# "~mailfs~retained~ID~NAME" (no '/', so a Maildir or IMAP backend can
# hold them), and the prefix is reserved: through the mount, mkdir of a
# mailbox so named and mv of a mailbox to such a name (within a store or
# into another) fail with EINVAL, while a folder may carry it.  A move
# through the mount, its undo and a purge still find their hidden copies.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1 srv2 || exit 1
M=$S/mnt
C() { "$B/mailfsctl" -c "$S/conf" "$@"; }
mount_fg "$S" || exit 1
mkdir -p "$M/srv1/alice/INBOX" "$M/srv1/bob/INBOX"
mapfile -t files < <(find "$TD/eml" -type f -name '*.eml' | sort | head -3)
cp "${files[@]}" "$M/srv1/alice/INBOX/"
tree_of "$M/srv1/alice" >"$WORK/before"

mkdir "$M/srv1/~mailfs~retained~1~alice" 2>"$WORK/err"
check "mkdir of a mailbox with the reserved prefix: refused" test $? != 0
check "... with EINVAL" grep -q "Invalid argument" "$WORK/err"
check "... nothing created" test ! -e "$M/srv1/~mailfs~retained~1~alice"
mv "$M/srv1/bob" "$M/srv1/~mailfs~move~9~bob" 2>"$WORK/err"
check "mv of a mailbox to the reserved prefix: refused" test $? != 0
check "... bob is still there" test -d "$M/srv1/bob/INBOX"
mv "$M/srv1/bob" "$M/srv2/~mailfs~move~9~bob" 2>"$WORK/err"
check "mv to the reserved prefix in another store: refused" test $? != 0
check "... bob is still in srv1" test -d "$M/srv1/bob/INBOX"
check "... and not in srv2" test ! -e "$M/srv2/~mailfs~move~9~bob"
check "a folder may carry the prefix" mkdir "$M/srv1/bob/~mailfs~x"

check "mv alice to srv2 (a move)" mv "$M/srv1/alice" "$M/srv2/"
check "... the hidden copies are not in the tree" \
    bash -c "! ls -a '$M/srv1' '$M/srv2' | grep -q '~mailfs~'"
id=$(C moves | awk '$0 ~ / alice / {print $1; exit}')
check "undo of the move: finds its retained copy" C undo "$id"
wait_for "alice back in srv1" test -d "$M/srv1/alice/INBOX"
check "... byte-identical" diff "$WORK/before" <(tree_of "$M/srv1/alice")
C purge --all >"$WORK/purge"
check "purge --all: both retained copies found and dropped" grep -q "^2 retained copies purged" "$WORK/purge"
C check >/dev/null 2>&1
check "check: nothing orphaned" test $? = 0
unmount "$S"
[ $FAILS = 0 ]
