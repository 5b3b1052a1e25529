#!/bin/bash
# The fstab line of mailfs(8) mounts through `mount -a -T` of a test fstab
# file, and `mount -t fuse.mailfs CONFIG DIR` works: mount runs mount.fuse3,
# which runs `mailfs` from the system's sbin (mount resets PATH), so the
# build is linked into /usr/local/sbin for the test when nothing is there,
# and the link is removed afterwards.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1 srv2 || exit 1
M=$S/mnt
LINK=/usr/local/sbin/mailfs
if [ ! -e "$LINK" ]; then
    mkdir -p /usr/local/sbin && ln -s "$B/mailfs" "$LINK" || { not_ok "cannot link $LINK"; exit 1; }
    trap 'rm -f "$LINK"; cleanup' EXIT
else
    echo "note: testing the installed $(readlink -f "$LINK")"
fi
daemon_gone() { ! pgrep -f "mailfs $S/conf" >/dev/null; }

printf '# test fstab\n%s  %s  fuse.mailfs  defaults,_netdev  0 0\n' "$S/conf" "$M" >"$WORK/fstab"
mount -a -T "$WORK/fstab"
check "mount -a -T fstab: exit 0" test $? = 0
check "... mounted, type fuse.mailfs" bash -c "awk '\$2 == \"$M\" {print \$3}' /proc/mounts | grep -qx fuse.mailfs"
check "... the source is the configuration" bash -c "awk '\$2 == \"$M\" {print \$1}' /proc/mounts | grep -qx '$S/conf'"
check "... the stores are there" test "$(ls "$M" | tr '\n' ' ')" = "srv1 srv2 "
check "... and writable" mkdir "$M/srv1/alice"
umount "$M"
check "umount: unmounted" bash -c "! mountpoint -q '$M'"
wait_for "the daemon to exit" daemon_gone

mount -t fuse.mailfs "$S/conf" "$M"
check "mount -t fuse.mailfs CONFIG DIR: exit 0" test $? = 0
check "... the mailbox made before is there" test -d "$M/srv1/alice"
umount "$M"
wait_for "the daemon to exit" daemon_gone

printf '%s  %s  fuse.mailfs  defaults  0 0\n' "$WORK/missing.conf" "$M" >"$WORK/fstab2"
mount -a -T "$WORK/fstab2" 2>"$WORK/err"
check "a missing configuration: mount fails" test $? != 0
check "... nothing mounted" bash -c "! mountpoint -q '$M'"
check "... the error names the file" grep -q "missing.conf" "$WORK/err"
[ $FAILS = 0 ]
