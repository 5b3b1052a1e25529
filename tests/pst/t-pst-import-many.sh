#!/bin/bash
# mailfsctl import of several PST/OST files into one store: each file
# becomes the mailbox named after it, imported in parallel, each checked
# against readpst (folders and item counts) and against the pst backend's
# view of the same file (names, sizes, dates, modes, SHA-256); a damaged
# file among good ones fails alone with one line and leaves nothing; a
# taken name is refused before it starts; a killed run is resumed by the
# same command; two such runs into one sqlite store at once both succeed
# (they queue for its writer, no "database busy"); one helper process
# serves a job's files in turn, and a libpst crash on one file ends only
# that helper (the file fails, the next file gets a new helper).
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/readpst-summary.sh"
PST=$TESTDATA/pst
command -v readpst >/dev/null || { not_ok "readpst (pst-utils) is not installed"; exit 1; }

S=$WORK/site
mkdir -p "$S/mnt" "$S/pst" "$S/more"
GOOD="aspose_source.pst tika_testPST.pst aspose_SampleContacts.pst pstsdk_sample1.pst aspose_SampleOstFile.ost"
for f in $GOOD; do cp "$PST/$f" "$S/pst/"; done
head -c 100000 "$PST/aspose_source.pst" >"$S/pst/bad_truncated.pst"
cat >"$S/conf" <<CONF
[mailfs]
journal = journal.db
[store pst]
backend = pst
path = pst
[store more]
backend = pst
path = more
[store srv1]
path = srv1.db
[store srv2]
path = srv2.db
[store srv3]
path = srv3.db
CONF
C() { "$B/mailfsctl" -c "$S/conf" "$@"; }
for st in srv1 srv2 srv3; do C store create $st >/dev/null || exit 1; done
M=$S/mnt

# Our view of a mailbox, like readpst-summary's: folder TAB item count.
our_folders() {
    (cd "$1" && find . -mindepth 1 -type d -printf '%P\n' | LC_ALL=C sort | while IFS= read -r d; do
        printf '%s\t%s\n' "$d" "$(find "$d" -maxdepth 1 -type f | wc -l)"
    done) | awk -F'\t' '$2 > 0'
}
readpst_folders() {
    rm -rf "$WORK/ref"
    readpst_summary "$1" "$WORK/ref" 2>/dev/null | grep -v "^readpst-exit" |
        sed 's/^\.\t/Top of Personal Folders\t/' | awk -F'\t' '$2 > 0' | LC_ALL=C sort
}

# ------------------------------------------ several files, one damaged
C import "$S"/pst/*.pst "$S"/pst/*.ost srv1 >"$WORK/out" 2>"$WORK/err"
check "import of 6 files, one damaged: exit 1" test $? = 1
cat "$WORK/out" "$WORK/err"
for f in $GOOD; do
    n=${f%.*}
    check "$f: one line, imported as $n" test "$(grep -c "^imported $S/pst/$f as $n in srv1 (move" "$WORK/out")" = 1
done
check "the damaged file: one line saying so" \
    test "$(grep -c "import $S/pst/bad_truncated.pst into srv1/bad_truncated: not imported" "$WORK/err")" = 1
check "... and the log line naming it" grep -q "bad_truncated.pst: cannot read this PST file" "$WORK/err"
check "a summary line: 5 of 6" grep -qx "imported 5 of 6 files into srv1" "$WORK/out"
check "nothing of the damaged file in the store, not even hidden" \
    test "$(sqlite3 "$S/srv1.db" "select count(*) from mailbox where state != 0 or name = cast('bad_truncated' as blob)")" = 0

mount_fg "$S" || exit 1
for f in $GOOD; do
    n=${f%.*}
    check "$f: folders and item counts equal readpst's" \
        diff <(readpst_folders "$S/pst/$f") <(our_folders "$M/srv1/$n")
    check "$f: the same tree as the pst backend shows" diff <(tree_of "$M/pst/$n") <(tree_of "$M/srv1/$n")
done
check "every import done in the journal, each verified" \
    test "$(moves_count "$S" 'm["state"] == "done" and m["target"] == "srv1"')" = 5
unmount "$S"

# ------------------------------------------------- names taken, usage
C import "$S/pst/tika_testPST.pst" "$S/pst/pstsdk_sample1.pst" srv1 >"$WORK/out" 2>"$WORK/err"
check "files whose names the store has: exit 1" test $? = 1
check "... each refused before it starts, saying so" \
    test "$(grep -c 'not imported: the store has a mailbox .* already' "$WORK/err")" = 2
cp "$PST/tika_testPST.pst" "$S/more/"
C import "$S/more/tika_testPST.pst" "$S/pst/tika_testPST.pst" srv2 >"$WORK/out" 2>"$WORK/err"
check "two files of one name in one import: exit 1" test $? = 1
check "... the first imported" grep -q "^imported $S/more/tika_testPST.pst as tika_testPST in srv2" "$WORK/out"
check "... the second refused, naming the first" \
    grep -q "import $S/pst/tika_testPST.pst into srv2/tika_testPST: not imported: $S/more/tika_testPST.pst, earlier" "$WORK/err"
C import "$S/pst/aspose_source.pst" srv2 named >/dev/null
check "import FILE STORE MAILBOX still names the mailbox" \
    test "$(sqlite3 "$S/srv2.db" "select count(*) from mailbox where state = 0 and name = cast('named' as blob)")" = 1
C import srv2 >/dev/null 2>&1
check "import with no file: usage (exit 2)" test $? = 2
C import --jobs 0 "$S/pst/aspose_source.pst" srv2 >/dev/null 2>&1
check "--jobs 0: usage (exit 2)" test $? = 2

# ------------------------------------ killed half way, the same command again
MAILFS_FAULT=copy:3 "$B/mailfsctl" -c "$S/conf" import --jobs 2 "$S"/pst/aspose_source.pst \
    "$S/pst/tika_testPST.pst" "$S/pst/aspose_SampleOstFile.ost" srv3 >"$WORK/out" 2>&1
check "an import of 3 files killed half way (signal)" test "$(grep -c 'fault injection: killed' "$WORK/out")" = 1
# A job may finish a file (shown) and be killed by the other job before
# it prints its line: a line means shown, shown means committed.
visible=$(sqlite3 "$S/srv3.db" "select count(*) from mailbox where state = 0")
check "... every file said imported is shown ($(grep -c '^imported' "$WORK/out") <= $visible)" \
    test "$(grep -c '^imported' "$WORK/out")" -le "$visible"
check "... no mailbox of it shown unless its import passed the commit point" \
    test "$visible" -le "$(moves_count "$S" 'm["target"] == "srv3" and m["state"] in ("done", "committed")')"
C import --jobs 2 "$S"/pst/aspose_source.pst "$S/pst/tika_testPST.pst" "$S/pst/aspose_SampleOstFile.ost" \
    srv3 >"$WORK/out2" 2>"$WORK/err2"
done_before=$visible
check "run again: the unfinished ones imported ($((3 - done_before)))" \
    test "$(grep -c '^imported /' "$WORK/out2")" = $((3 - done_before))
# The kill can also catch the other job past its commit point, before it
# recorded the import done: settling that is recovery's (the mount's, or
# this command's), as for any move.
C recover >/dev/null 2>&1
check "... resumed: one move each, none left running" \
    test "$(moves_count "$S" 'm["target"] == "srv3" and m["state"] == "done"'),$(moves_count "$S" 'm["target"] == "srv3" and m["state"] == "running"')" = "3,0"
mount_fg "$S" || exit 1
for f in aspose_source.pst tika_testPST.pst aspose_SampleOstFile.ost; do
    n=${f%.*}
    check "... $n complete" diff <(tree_of "$M/pst/$n") <(tree_of "$M/srv3/$n")
done
unmount "$S"

# ---------------------- two runs at once into one sqlite store, 2 jobs each
for i in 1 2 3 4; do cp "$PST/aspose_source.pst" "$S/more/a$i.pst"; cp "$PST/tika_testPST.pst" "$S/more/b$i.pst"; done
C import --jobs 2 "$S"/more/a?.pst srv2 >"$WORK/p1" 2>&1 &
p1=$!
C import --jobs 2 "$S"/more/b?.pst srv2 >"$WORK/p2" 2>&1 &
p2=$!
wait $p1; r1=$?
wait $p2; r2=$?
check "two parallel runs into one store: both exit 0 ($r1, $r2)" test "$r1$r2" = 00
check "... all 8 imported" test "$(cat "$WORK/p1" "$WORK/p2" | grep -c '^imported /')" = 8
check "... no 'database busy' on the way" bash -c "! grep -qi busy '$WORK/p1' '$WORK/p2'"
mount_fg "$S" || exit 1
for i in 1 4; do
    check "... a$i complete" diff <(tree_of "$M/more/a$i") <(tree_of "$M/srv2/a$i")
    check "... b$i complete" diff <(tree_of "$M/more/b$i") <(tree_of "$M/srv2/b$i")
done
unmount "$S"

# ------------------------------------------------------- helper reuse
# Every helper start is counted by a wrapper.  libpst crashes (SIGSEGV) on
# crash.pst, a copy of tika_testPST.pst with 2 KiB of another test file
# written into it (the fuzz test's seed 9 found it).
# Under SANITIZE=1 the helper here is the plain one, as in t-pst-fuzz:
# ASan would turn libpst's crash into a report of libpst's (exit 1).
HB=$B
if ldd "$B/mailfsctl" | grep -q libasan; then
    if [ ! -x "$ROOT/build/fs/mailfs-pst" ]; then
        { [ -d "$ROOT/build" ] || meson setup "$ROOT/build"; } >/dev/null && ninja -C "$ROOT/build" >/dev/null || exit 1
    fi
    HB=$ROOT/build/fs
fi
printf '#!/bin/sh\necho $$ >>"%s/starts"\nexec "%s/mailfs-pst" "$@"\n' "$WORK" "$HB" >"$WORK/helper"
chmod +x "$WORK/helper"
mkdir -p "$S/reuse"
cp "$PST/tika_testPST.pst" "$S/reuse/crash.pst" && chmod u+w "$S/reuse/crash.pst"
dd if="$PST/go-pst_support.pst" bs=1 skip=469799 count=2048 2>/dev/null |
    dd of="$S/reuse/crash.pst" bs=1 seek=183269 conv=notrunc 2>/dev/null
for f in aspose_source.pst aspose_SampleOstFile.ost pstsdk_sample1.pst; do cp "$PST/$f" "$S/reuse/"; done
printf '[store reuse]\nbackend = pst\npath = reuse\n[store srv4]\npath = srv4.db\n' >>"$S/conf"
C store create srv4 >/dev/null
MAILFS_PST_HELPER=$WORK/helper C import --jobs 1 "$S/reuse/aspose_source.pst" "$S/reuse/crash.pst" \
    "$S/reuse/aspose_SampleOstFile.ost" "$S/reuse/pstsdk_sample1.pst" srv4 >"$WORK/out" 2>"$WORK/err"
check "4 files, libpst crashing on the second: exit 1" test $? = 1
check "... the crash said, naming the file" \
    grep -q "$S/reuse/crash.pst: cannot read this PST file: libpst crashed on it" "$WORK/err"
check "... that file not imported, one line" \
    test "$(grep -c "import $S/reuse/crash.pst into srv4/crash: not imported" "$WORK/err")" = 1
check "... the 3 others imported" test "$(grep -c '^imported /' "$WORK/out")" = 3
check "... two helpers for 4 files: one to the crash, a new one after it ($(wc -l <"$WORK/starts"))" \
    test "$(wc -l <"$WORK/starts")" = 2
check "... nothing of the crashed import left in the store" \
    test "$(sqlite3 "$S/srv4.db" "select count(*) from mailbox where state != 0 or name = cast('crash' as blob)")" = 0
no_helpers() { ! pgrep -f "mailfs-pst $S/" >/dev/null; }
check "... no helper left running" no_helpers
rm -f "$WORK/starts"
for i in 1 2 3 4 5 6; do cp "$PST/pstsdk_sample1.pst" "$S/reuse/s$i.pst"; done
MAILFS_PST_HELPER=$WORK/helper C import --jobs 2 "$S"/reuse/s?.pst srv4 >"$WORK/out" 2>"$WORK/err"
check "6 files, 2 jobs: exit 0" test $? = 0
check "... at most 2 helpers started ($(wc -l <"$WORK/starts"))" test "$(wc -l <"$WORK/starts")" -le 2
mount_fg "$S" || exit 1
for f in aspose_source aspose_SampleOstFile pstsdk_sample1 s1 s6; do
    check "... $f, read by a reused helper, complete" diff <(tree_of "$M/reuse/$f") <(tree_of "$M/srv4/$f")
done
unmount "$S"
[ $FAILS = 0 ]
