#!/bin/bash
# The daemon under valgrind for one full round trip (copy in, read out,
# xattrs, rename, unlink, a move between stores, a rewrite in place):
# no memory error, no definite leak.  Valgrind exits 99 on either.
set -u
. "$(dirname "$0")/../lib.sh"

# Valgrind cannot run an ASan build: use (or make) the plain one.
if ldd "$B/mailfs" | grep -q libasan; then
    B=$ROOT/build/fs
    if [ ! -x "$B/mailfs" ]; then
        { [ -d "$ROOT/build" ] || meson setup "$ROOT/build"; } >/dev/null && ninja -C "$ROOT/build" >/dev/null || exit 1
    fi
fi
S=$WORK/site
site "$S" srv1 srv2 || exit 1
M=$S/mnt
valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 \
    --log-file="$WORK/valgrind.log" "$B/mailfs" -f "$S/conf" "$M" 2>"$WORK/daemon.log" &
vpid=$!
wait_for "mount under valgrind" mountpoint -q "$M" || exit 1

mkdir -p "$M/srv1/vg/INBOX"
cp -a "$TD/eml/cpython/." "$M/srv1/vg/INBOX/"
setfattr -n user.mail.flags -v '\Seen' "$M/srv1/vg/INBOX/msg_03.txt"
rsync -aX "$M/srv1/vg/" "$WORK/out/"
diff -r "$TD/eml/cpython" "$WORK/out/INBOX" >/dev/null && ok "round trip under valgrind" || not_ok "round trip"
mv "$M/srv1/vg/INBOX/msg_04.txt" "$M/srv1/vg/INBOX/renamed"
rm "$M/srv1/vg/INBOX/msg_05.txt"
printf 'appended\n' >>"$M/srv1/vg/INBOX/renamed"
exec 3<"$M/srv1/vg/INBOX/msg_06.txt"
rm "$M/srv1/vg/INBOX/msg_06.txt"
cat <&3 >/dev/null
exec 3<&-
mv "$M/srv1/vg" "$M/srv2/" && ok "move under valgrind" || not_ok "move"
ls -lR "$M" >/dev/null
fusermount3 -u "$M"
wait $vpid
rc=$?
check "valgrind: no errors and no definite leaks (exit $rc)" test $rc = 0
[ $rc = 0 ] || head -40 "$WORK/valgrind.log"
[ $FAILS = 0 ]
