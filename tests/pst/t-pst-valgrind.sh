#!/bin/bash
# The whole pst backend under valgrind, on every test-data file and on
# corrupt copies: the daemon lists and reads everything, and mailfsctl
# imports the largest file, each with every libpst helper process
# (mailfs-pst, which parses and renders the items) under valgrind too.
# No memory error, no definite leak anywhere.
set -u
. "$(dirname "$0")/../lib.sh"
PST=$TESTDATA/pst

# Valgrind cannot run an ASan build: use (or make) the plain one.
if ldd "$B/mailfs" | grep -q libasan; then
    B=$ROOT/build/fs
    if [ ! -x "$B/mailfs" ]; then
        { [ -d "$ROOT/build" ] || meson setup "$ROOT/build"; } >/dev/null && ninja -C "$ROOT/build" >/dev/null || exit 1
    fi
fi
S=$WORK/site
mkdir -p "$S/mnt" "$S/pst"
cp "$PST"/* "$S/pst/"
head -c 100000 "$PST/aspose_source.pst" >"$S/pst/bad_truncated.pst"
head -c 300000 /dev/urandom >"$S/pst/bad_random.pst"
printf '[mailfs]\njournal = journal.db\n[store pst]\nbackend = pst\npath = pst\n[store srv1]\npath = srv1.db\n' >"$S/conf"
"$B/mailfsctl" -c "$S/conf" store create srv1 >/dev/null
VG="valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99"
# every helper under valgrind, each with a log of its own
printf '#!/bin/sh\nexec %s --log-file=%s/vg-helper.%%p.log %s/mailfs-pst "$@"\n' "$VG" "$WORK" "$B" >"$WORK/helper"
chmod +x "$WORK/helper"
export MAILFS_PST_HELPER=$WORK/helper
M=$S/mnt
$VG --log-file="$WORK/valgrind.log" "$B/mailfs" -f "$S/conf" "$M" 2>"$WORK/daemon.log" &
vpid=$!
wait_for "mount under valgrind" mountpoint -q "$M" || exit 1
n=$(find "$M/pst" -type f 2>/dev/null | wc -l)
find "$M/pst" -type f -exec cat {} + 2>/dev/null | wc -c >"$WORK/bytes"
ls -lR "$M/pst" >/dev/null 2>&1
getfattr -R -d "$M/pst" >/dev/null 2>&1
check "every item of every file read under valgrind ($n files, $(cat "$WORK/bytes") bytes)" test "$n" -gt 200
fusermount3 -u "$M"
wait $vpid
rc=$?
check "daemon: no errors and no definite leaks (exit $rc)" test $rc = 0
[ $rc = 0 ] || head -40 "$WORK/valgrind.log"

$VG --log-file="$WORK/valgrind-import.log" "$B/mailfsctl" -c "$S/conf" import \
    "$S/pst/aspose_SampleOstFile.ost" srv1 ost >/dev/null 2>&1
rc=$?
check "import: no errors and no definite leaks (exit $rc)" test $rc = 0
[ $rc = 0 ] || head -40 "$WORK/valgrind-import.log"
n=$(ls "$WORK"/vg-helper.*.log | wc -l)
check "helpers ($n) ran under valgrind" test "$n" -ge 20
check "... none reported an error or a definite leak" bash -c "! cat '$WORK'/vg-helper.*.log | grep -q ."
cat "$WORK"/vg-helper.*.log | head -30
[ $FAILS = 0 ]
