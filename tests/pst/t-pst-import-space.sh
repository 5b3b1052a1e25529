#!/bin/bash
# mailfsctl import of a PST no longer renders the whole file before
# copying: its preflight takes an estimate (libpst's item count, bytes
# from the file's size), and the backend renders the next folder while
# one is copied.  Checked here: a store on a small filesystem that cannot
# hold twice the estimate is refused before anything is copied, one that
# can takes the import; an import whose real size passes its estimate is
# checked again and fails cleanly (ENOSPC, rolled back, nothing left, the
# journal says why) where the rest would not fit, and goes on where it
# does; the journal holds the real totals afterwards; an import killed in
# the middle of the pipelined copy resumes and ends equal to readpst's
# folders and to the pst backend's view of the file.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/readpst-summary.sh"
command -v readpst >/dev/null || { not_ok "readpst (pst-utils) is not installed"; exit 1; }
OST=aspose_SampleOstFile.ost

S=$WORK/site
mkdir -p "$S/mnt" "$S/pst"
cp "$TESTDATA/pst/$OST" "$S/pst/"
printf '[mailfs]\njournal = journal.db\n[store pst]\nbackend = pst\npath = pst\n' >"$S/conf"
# Stores on filesystems of their own: tmpfs of the size given.
for fs in small:24m roomy:64m tight:18m srv1:; do
    name=${fs%%:*} size=${fs#*:}
    path=$name.db
    if [ -n "$size" ]; then
        mkdir -p "$S/$name.fs"
        mount -t tmpfs -o size=$size tmpfs "$S/$name.fs" || { not_ok "tmpfs for $name"; exit 1; }
        path=$S/$name.fs/$name.db
    fi
    printf '[store %s]\npath = %s\n' "$name" "$path" >>"$S/conf"
done
C() { "$B/mailfsctl" -c "$S/conf" "$@"; }
for st in small roomy tight srv1; do C store create $st >/dev/null || exit 1; done
M=$S/mnt
mailboxes() { sqlite3 "$1" "select count(*) from mailbox"; }

# Our view of a mailbox, as t-pst-import-many's: folder TAB item count.
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

# ------------------------------------------- the estimate and the preflight
C import "$S/pst/$OST" small ost >"$WORK/out" 2>&1
check "a store that cannot hold twice the estimate: refused (exit 1)" test $? = 1
check "... no room said" grep -q "not enough free space in the target" "$WORK/out"
check "... before anything was copied: no mailbox, no move" \
    test "$(mailboxes "$S/small.fs/small.db"),$(moves_count "$S")" = "0,0"

# Held at its first page (test-only stall): the journal's totals are the
# estimate while it copies.
touch "$S/stall"
MAILFS_STALL=copy MAILFS_STALL_FILE="$S/stall" C import "$S/pst/$OST" roomy ost >"$WORK/out" 2>&1 &
imp=$!
wait_for "the import to reach its copy" \
    moves_are "$S" 'm["target"] == "roomy" and m["state"] == "running"' step copying
est=$(moves_of "$S" 'm["target"] == "roomy"' messages_total,bytes_total)
rm -f "$S/stall"
wait $imp
check "a store that can: imported" test $? = 0
size=$(stat -c %s "$S/pst/$OST")
check "while it copied, the totals were the estimate: twice the file and 4 KiB an item ($est)" \
    test "${est#* }" = $((2 * size + 4096 * ${est% *}))

mount_fg "$S" || exit 1
check "... its folders and item counts equal readpst's" \
    diff <(readpst_folders "$S/pst/$OST") <(our_folders "$M/roomy/ost")
check "... the same tree as the pst backend shows" diff <(tree_of "$M/pst/${OST%.*}") <(tree_of "$M/roomy/ost")
n=$(find "$M/roomy/ost" -type f | wc -l)
bytes=$(find "$M/roomy/ost" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
unmount "$S"
check "... the journal holds the real totals, not the estimate ($n messages, $bytes bytes)" \
    test "$(moves_of "$S" 'm["target"] == "roomy"' messages_total,bytes_total,state)" = "$n $bytes done"
check "... no more messages than the index's upper count" test "$n" -le "${est% *}"

# ------------------------------ an estimate the real size passes (test-only)
MAILFS_PST_ESTIMATE=1000 C import "$S/pst/$OST" tight ost >"$WORK/out" 2>&1
check "real size past the estimate, no room for twice as much again: fails (exit 1)" test $? = 1
cat "$WORK/out"
check "... no room said, and why" grep -q "larger than its estimate of [0-9]* bytes" "$WORK/out"
check "... the ENOSPC of a move" grep -q "not enough free space in the target" "$WORK/out"
check "... nothing left in the store, not even hidden" test "$(mailboxes "$S/tight.fs/tight.db")" = 0
check "... the journal says it failed, and why" \
    test "$(moves_of "$S" 'm["target"] == "tight" and m["state"] == "rolled-back" and "larger than its estimate" in (m["error"] or "")' | wc -l)" = 1
MAILFS_PST_ESTIMATE=1000 C import "$S/pst/$OST" roomy ost2 >"$WORK/out" 2>&1
check "real size past the estimate with room enough: imported" test $? = 0
check "... the journal holds the real totals ($n messages, $bytes bytes)" \
    test "$(moves_of "$S" 'm["target"] == "roomy" and m["state"] == "done"' messages_total,bytes_total | sort -u)" = "$n $bytes"

# ---------------------------- killed in the middle of the pipelined copy
for k in 1 2 4; do
    MAILFS_FAULT=copy:$k C import "$S/pst/$OST" srv1 k$k >"$WORK/out" 2>&1
    check "import killed at its copy's page $k" grep -q "fault injection: killed" "$WORK/out"
    check "... not shown" test "$(sqlite3 "$S/srv1.db" "select count(*) from mailbox where name = cast('k$k' as blob)")" = 0
    C import "$S/pst/$OST" srv1 k$k >"$WORK/out" 2>&1
    check "... the same command again: resumed and imported" test $? = 0
done
check "... one move each, done, none left running" \
    test "$(moves_count "$S" 'm["target"] == "srv1" and m["state"] == "done"'),$(moves_count "$S" 'm["target"] == "srv1" and m["state"] == "running"')" = "3,0"
mount_fg "$S" || exit 1
for k in 1 2 4; do
    check "k$k: folders and item counts equal readpst's" \
        diff <(readpst_folders "$S/pst/$OST") <(our_folders "$M/srv1/k$k")
    check "k$k: the same tree as the pst backend shows" diff <(tree_of "$M/pst/${OST%.*}") <(tree_of "$M/srv1/k$k")
done
unmount "$S"
exit $((FAILS > 0))
