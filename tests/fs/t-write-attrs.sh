#!/bin/bash
# A message being written (issue 14): the getattr and setattrs that cp -a,
# rsync and tar send before close are answered from the open writer, not
# the store, and must still say the truth: the bytes written so far, a
# mode or owner set before close, an mtime set before close; a change made
# another way meanwhile (an extended attribute) is not hidden by it; and
# what close commits is what was shown.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1 || exit 1
M=$S/mnt
mount_fg "$S" || exit 1
mkdir -p "$M/srv1/alice/INBOX" || exit 1
F=$M/srv1/alice/INBOX
EML=$(ls "$TD"/eml/*/* | head -1)
SIZE=$(stat -c %s "$EML")

# One process writes in two steps, keeping the file open; another looks.
python3 - "$F/m.eml" "$EML" "$WORK/steps" <<'PY' &
import os, sys, time
path, src, steps = sys.argv[1], sys.argv[2], sys.argv[3]
data = open(src, 'rb').read()
half = len(data) // 2
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
def step(n):
    open(steps + '.' + n, 'w').close()
    while not os.path.exists(steps + '.go' + n):
        time.sleep(0.01)
os.write(fd, data[:half])
step('1')
os.fchmod(fd, 0o600)
os.utime(fd, ns=(1500000000 * 10**9, 1500000000 * 10**9))
step('2')
os.write(fd, data[half:])
os.utime(fd, ns=(1500000000 * 10**9, 1500000000 * 10**9))
step('3')
os.close(fd)
open(steps + '.closed', 'w').close()
PY
WRITER=$!
half=$((SIZE / 2))

wait_for "first half written" test -e "$WORK/steps.1"
check "stat of a message being written: the bytes so far" test "$(stat -c %s "$F/m.eml")" = "$half"
touch "$WORK/steps.go1"
wait_for "mode and date set" test -e "$WORK/steps.2"
check "a mode set before close shows at once" test "$(stat -c %a "$F/m.eml")" = 600
check "an mtime set before close shows at once" test "$(stat -c %Y "$F/m.eml")" = 1500000000
# a change made another way while it is open: seen, not hidden by what
# the writer knew at create
c0=$(stat -c %.9Z "$F/m.eml")
setfattr -n user.mail.flags -v '\Seen' "$F/m.eml"
check "an xattr set meanwhile moves ctime (the store is read again)" \
    test "$(stat -c %.9Z "$F/m.eml")" != "$c0"
check "and the bytes so far still show" test "$(stat -c %s "$F/m.eml")" = "$half"
touch "$WORK/steps.go2"
wait_for "all written" test -e "$WORK/steps.3"
check "the whole size before close" test "$(stat -c %s "$F/m.eml")" = "$SIZE"
touch "$WORK/steps.go3"
wait_for "closed" test -e "$WORK/steps.closed"
wait "$WRITER"
check "after close: the bytes" cmp -s "$EML" "$F/m.eml"
check "after close: mode, date, flags kept" \
    test "$(stat -c '%a %Y' "$F/m.eml") $(getfattr --absolute-names --only-values -n user.mail.flags "$F/m.eml")" = '600 1500000000 \Seen'
unmount "$S"
mount_fg "$S" || exit 1
check "after a remount the same" \
    test "$(stat -c '%a %Y %s' "$F/m.eml")" = "600 1500000000 $SIZE"
unmount "$S"
exit $((FAILS > 0))
