#!/bin/bash
# Damaged PST files must never take the daemon down: 60 copies of the test
# files, each with 2 KiB overwritten by bytes of another at a place chosen
# by a fixed seed (so a failure replays exactly), mounted as one store and
# read in full.  Each file either reads or fails with EIO and a log line
# naming it; with this seed libpst crashes on some (in its helper process,
# not in the daemon); afterwards the daemon still serves an intact file
# byte for byte.
set -u
. "$(dirname "$0")/../lib.sh"
PST=$TESTDATA/pst

# Under SANITIZE=1 the daemon is the ASan build, but the helper here is the
# plain one: libpst's own memory errors on damaged files are what the
# helper process contains (ASan would turn each into a report of libpst's,
# not of mailfs's); the ASan helper runs on the intact files in t-pst.
if ldd "$B/mailfs" | grep -q libasan; then
    if [ ! -x "$ROOT/build/fs/mailfs-pst" ]; then
        { [ -d "$ROOT/build" ] || meson setup "$ROOT/build"; } >/dev/null && ninja -C "$ROOT/build" >/dev/null || exit 1
    fi
    export MAILFS_PST_HELPER=$ROOT/build/fs/mailfs-pst
fi

S=$WORK/site
mkdir -p "$S/mnt" "$S/pst"
RANDOM=${FUZZ_SEED:-9} # FUZZ_SEED=N explores; 9 makes libpst crash on two files
files=("$PST"/*)
for i in $(seq 60); do
    src=${files[$((RANDOM % ${#files[@]}))]}
    f=$S/pst/f$i.pst
    cp "$src" "$f" && chmod u+w "$f"
    size=$(stat -c %s "$f")
    off=$(( (RANDOM * 32768 + RANDOM) % size ))
    # the garbage: 2 KiB of another test file, so a seed replays exactly
    g=${files[$((RANDOM % ${#files[@]}))]}
    goff=$(( (RANDOM * 32768 + RANDOM) % ($(stat -c %s "$g") - 2048) ))
    dd if="$g" bs=1 skip="$goff" count=2048 2>/dev/null | dd of="$f" bs=1 seek="$off" conv=notrunc 2>/dev/null
    echo "f$i: $(basename "$src") at $off" >>"$WORK/plan"
done
cp "$PST/aspose_source.pst" "$S/pst/intact.pst"
printf '[mailfs]\njournal = journal.db\n[store pst]\nbackend = pst\npath = pst\n' >"$S/conf"
M=$S/mnt
mount_fg "$S" || exit 1
tree_of "$M/pst/intact" >"$WORK/intact-before"
for i in $(seq 60); do
    timeout 120 find "$M/pst/f$i" -type f -exec cat {} + >/dev/null 2>&1
    [ $? = 124 ] && not_ok "f$i: reading took more than 2 minutes ($(grep "^f$i:" "$WORK/plan"))"
done
check "the daemon is alive after reading 60 damaged files" mountpoint -q "$M"
check "... and serves an intact file byte for byte" diff "$WORK/intact-before" <(tree_of "$M/pst/intact")
bad=$(grep -c "cannot read this PST file" "$S/daemon.log")
if [ -z "${FUZZ_SEED:-}" ]; then
    check "libpst crashed on some files, in its helper: said so, naming them" \
        grep -q "f[0-9]*\.pst: cannot read this PST file: libpst crashed on it" "$S/daemon.log"
fi
check "unreadable ones ($bad) each said so once, naming the file" \
    test "$(grep "cannot read this PST file" "$S/daemon.log" | grep -o 'f[0-9]*\.pst' | sort | uniq -d | wc -l)" = 0
unmount "$S"

# A helper that opens the file and then never answers (libpst in a loop
# on a damaged file): after MAILFS_PST_TIMEOUT the mailbox fails with EIO,
# the helper is killed, and the daemon goes on.
printf '#!/bin/sh\nprintf "O\\000\\000\\000\\000"\nexec sleep 600\n' >"$WORK/stuck"
chmod +x "$WORK/stuck"
mount_fg "$S" MAILFS_PST_HELPER="$WORK/stuck" MAILFS_PST_TIMEOUT=2 || exit 1
out=$(timeout 60 ls "$M/pst/intact" 2>&1)
check "a helper that hangs: EIO ($out)" bash -c "printf '%s' '$out' | grep -q 'Input/output error'"
check "... said so in the log" grep -q "intact.pst: cannot read this PST file: libpst did not answer" "$S/daemon.log"
no_stuck_helper() { ! pgrep -f "sleep 600" >/dev/null; } # not in a bash -c: it would match itself
check "... and the stuck helper is gone" no_stuck_helper
check "... the mount still answers" mountpoint -q "$M"
unmount "$S"
[ $FAILS = 0 ]
