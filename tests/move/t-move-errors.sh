#!/bin/bash
# Moves through `mv` on a real mount: every preflight errno, writes during a
# move (EBUSY, reads go on, a retry after the move lands in the target), a
# disk that fills during the copy, ^C on mv, and undo with mail that arrived
# in the target after the move.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1 srv2 ro small full || exit 1
# A read-only target, and two targets on small filesystems of their own.
cp "$S/ro.db" "$S/ro2.db" # a store of its own: two stores on one file are refused
printf '[store ro2]\npath = ro2.db\nread-only = true\n' >>"$S/conf"
for fs in small full; do
    mkdir -p "$S/$fs.fs"
    mount -t tmpfs -o size=$([ $fs = small ] && echo 8m || echo 96m) tmpfs "$S/$fs.fs" || exit 1
    mv "$S/$fs.db" "$S/$fs.fs/$fs.db"
    sed -i "s|^path = $fs.db|path = $S/$fs.fs/$fs.db|" "$S/conf"
done
M=$S/mnt
mount_fg "$S" MAILFS_STALL=copy MAILFS_STALL_FILE="$S/stall" || exit 1

# alice: the testdata's eml files (about 10 MB); big: 6000 messages.
mkdir -p "$M/srv1/alice/INBOX" "$M/srv1/big/INBOX"
cp -a "$TD/eml/." "$M/srv1/alice/INBOX/"
mkdir -p "$WORK/big"
for i in $(seq 6000); do echo "Subject: $i"$'\n\n'"body $i" >"$WORK/big/$i.eml"; done
cp -a "$WORK/big/." "$M/srv1/big/INBOX/"
tree_of "$M/srv1/alice" >"$WORK/alice.tree"

errno_of_mv() { mv "$@" 2>&1 >/dev/null | sed 's/.*: //'; }

# --- preflight, each through mv
mkdir "$M/srv2/alice"
check "EEXIST: a mailbox of that name in the target" \
    test "$(errno_of_mv "$M/srv1/alice" "$M/srv2/")" = "File exists"
rmdir "$M/srv2/alice"
check "EROFS: read-only target store" \
    test "$(errno_of_mv "$M/srv1/alice" "$M/ro2/")" = "Read-only file system"
check "ENOSPC: target with less than twice the mailbox free" \
    test "$(errno_of_mv "$M/srv1/alice" "$M/small/")" = "No space left on device"
check "source untouched after refused moves" test "$(tree_of "$M/srv1/alice")" = "$(cat "$WORK/alice.tree")"

# --- during a move (DESIGN 10): while it copies, the mailbox stays
# writable and what is written is carried over; during its cutover,
# writes get EBUSY.  EBUSY for a second move all along; reads go on.
# The move in flight is mailfsctl's: the kernel lets only one rename across
# directories run per filesystem at a time, so a second mv through this
# mount would wait for the first rather than fail (see README).
touch "$S/stall.copy" "$S/stall.locked"
MAILFS_STALL=copy,locked MAILFS_STALL_FILE="$S/stall" "$B/mailfsctl" -c "$S/conf" move big srv2 \
    >"$WORK/move-big.out" 2>&1 &
mvpid=$!
wait_for "the move to reach its copy loop" \
    moves_are "$S" 'm["source"] == "srv1" and m["state"] == "running"' step copying
check "EBUSY: mv of the mailbox being moved already" \
    test "$(errno_of_mv "$M/srv1/big" "$M/full/")" = "Device or resource busy"
check "while copying: a new message can be written" cp "$WORK/big/1.eml" "$M/srv1/big/INBOX/new.eml"
check "while copying: a message can be removed" rm "$M/srv1/big/INBOX/1.eml"
check "while copying: flags can be set" setfattr -n user.mail.flags -v '\Seen' "$M/srv1/big/INBOX/2.eml"
check "while copying: a message can be renamed" mv "$M/srv1/big/INBOX/2.eml" "$M/srv1/big/INBOX/2b.eml"
echo "Subject: x" | "$B/mailfsctl" -c "$S/conf" deliver srv1 big >/dev/null
check "while copying: mailfsctl deliver delivers" test $? = 0
check "reads go on during the copy" cmp -s "$WORK/big/3.eml" "$M/srv1/big/INBOX/3.eml"
rm "$S/stall.copy"
wait_for "the move to reach its cutover" \
    moves_are "$S" 'm["source"] == "srv1" and m["state"] == "running"' step cutover
check "EBUSY: create a message in the moving mailbox" \
    bash -c "cp '$WORK/big/1.eml' '$M/srv1/big/INBOX/new2.eml' 2>&1 | grep -q 'Device or resource busy'"
check "a refused create leaves no file" test ! -e "$M/srv1/big/INBOX/new2.eml"
check "EBUSY: unlink in the moving mailbox" \
    bash -c "rm '$M/srv1/big/INBOX/4.eml' 2>&1 | grep -q 'Device or resource busy'"
check "EBUSY: setxattr in the moving mailbox" \
    bash -c "setfattr -n user.mail.flags -v '\\Seen' '$M/srv1/big/INBOX/5.eml' 2>&1 | grep -q 'busy'"
check "EBUSY: rename inside the moving mailbox" \
    bash -c "mv '$M/srv1/big/INBOX/5.eml' '$M/srv1/big/INBOX/5b.eml' 2>&1 | grep -q 'busy'"
echo "Subject: y" | "$B/mailfsctl" -c "$S/conf" deliver srv1 big
check "mailfsctl deliver into the locked mailbox exits 75 (EX_TEMPFAIL)" test $? = 75
check "reads go on during the cutover" cmp -s "$WORK/big/3.eml" "$M/srv1/big/INBOX/3.eml"
check "mailfsctl moves shows the move running with progress" \
    bash -c "'$B/mailfsctl' -c '$S/conf' moves --json | grep -q '\"state\": \"running\"'"
rm "$S/stall.locked"
wait $mvpid
check "the stalled move committed" test $? = 0
check "the mounted daemon sees the moved mailbox in its new store" \
    wait_for "srv2/big through the mount" test -d "$M/srv2/big/INBOX"
check "a writer that retries after the move lands in the target" \
    cp "$WORK/big/1.eml" "$M/srv2/big/INBOX/new2.eml"
# 6000, one removed, one written and one delivered during the copy, one after
check "target has every message and every change made during the copy" \
    test "$(ls "$M/srv2/big/INBOX" | wc -l)" = 6002
check "... the renamed one under its new name, with its flags" \
    test "$(getfattr --only-values -n user.mail.flags "$M/srv2/big/INBOX/2b.eml")" = '\Seen'
check "... the removed one gone" test ! -e "$M/srv2/big/INBOX/1.eml"
check "... the one written during the copy" cmp -s "$WORK/big/1.eml" "$M/srv2/big/INBOX/new.eml"

# --- the disk fills during the copy: roll back, source intact
tree_of "$M/srv2/big" >"$WORK/big.tree"
touch "$S/stall"
mv "$M/srv2/big" "$M/full/" 2>"$WORK/mv-full.err" &
mvpid=$!
wait_for "the move to the small disk to start copying" \
    moves_are "$S" 'm["target"] == "full" and m["state"] == "running"' step copying
# Something else fills the disk after preflight passed.
dd if=/dev/zero of="$S/full.fs/filler" bs=1M 2>/dev/null
rm "$S/stall"
wait $mvpid
rc=$?
check "mv onto a disk that filled fails" test $rc != 0
check "... with ENOSPC" grep -q "No space left on device" "$WORK/mv-full.err"
rm "$S/full.fs/filler"
"$B/mailfsctl" -c "$S/conf" recover >/dev/null
check "the move rolled back" \
    moves_are "$S" 'm["target"] == "full"' state rolled-back
check "no hidden copy left on the full disk" \
    test "$(sqlite3 "$S/full.fs/full.db" 'select count(*) from mailbox')" = 0
check "source intact after the disk-full rollback" test "$(tree_of "$M/srv2/big")" = "$(cat "$WORK/big.tree")"

# --- ^C on mv: roll back
unmount "$S"
mount_fg "$S" MAILFS_STALL=copy MAILFS_STALL_FILE="$S/stall" || exit 1
touch "$S/stall"
# Background jobs of a script start with SIGINT ignored, and an ignored
# signal never interrupts a request: give mv back the default action.
perl -e '$SIG{INT} = "DEFAULT"; exec @ARGV or die' mv "$M/srv2/big" "$M/srv1/" &
mvpid=$!
wait_for "the move to be copying" \
    moves_are "$S" 'm["state"] == "running" and m["step"] == "copying"' step copying
kill -INT $mvpid
rm "$S/stall"
wait $mvpid
check "mv interrupted with SIGINT fails" test $? != 0
wait_for "the interrupted move to roll back" \
    moves_are "$S" 'm["mailbox"] == "big" and m["target"] == "srv1"' state rolled-back
check "interrupted move: source intact" test "$(tree_of "$M/srv2/big")" = "$(cat "$WORK/big.tree")"
check "interrupted move: nothing visible in the target" test ! -e "$M/srv1/big"

# --- undo carries back mail that arrived after the move
unmount "$S"
mount_fg "$S" || exit 1
mv "$M/srv1/alice" "$M/srv2/" || not_ok "mv alice"
id=$(moves_of "$S" 'm["mailbox"] == "alice"' | sort -n | tail -1)
for n in 1 2 3; do
    printf 'Subject: after the move %s\n\nhello\n' $n | "$B/mailfsctl" -c "$S/conf" deliver srv2 alice
done
"$B/mailfsctl" -c "$S/conf" undo "$id" >/dev/null
check "undo: alice is back in srv1" test -d "$M/srv1/alice" -a ! -e "$M/srv2/alice"
check "undo: the three new messages came along" \
    test "$(grep -l 'after the move' "$M"/srv1/alice/INBOX/*.eml | wc -l)" = 3
grep -l 'after the move' "$M"/srv1/alice/INBOX/*.eml | xargs rm -f
check "undo: every original message is back, unchanged" \
    test "$(tree_of "$M/srv1/alice")" = "$(cat "$WORK/alice.tree")"
"$B/mailfsctl" -c "$S/conf" purge --all >/dev/null
check "undo after purge refuses with a clear message" \
    bash -c "'$B/mailfsctl' -c '$S/conf' undo $id 2>&1 | grep -q 'retained source copy is gone\|only a finished move'"
unmount "$S"
umount "$S/small.fs" "$S/full.fs"

[ $FAILS = 0 ]
