#!/bin/bash
# The pst backend on every file of the test data, against readpst (libpst's
# own exporter) run on the same file: the same folders with the same number
# of items, attachments byte-equal, every message parseable by GMime with
# the item's subject; writes refused with EROFS; cp -a into a real store;
# mailfsctl import, also killed half way and resumed; corrupt files (made
# here from the real ones) and the unreadable one each give one line naming
# the file, and the other mailboxes stay readable.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/readpst-summary.sh"
PST=$TESTDATA/pst
DUMP=${MAILFS_BUILD:-$ROOT/build}/tests/mimedump
command -v readpst >/dev/null || { not_ok "readpst (pst-utils) is not installed"; exit 1; }

S=$WORK/site
mkdir -p "$S/mnt" "$S/pst"
cp "$PST"/* "$S/pst/"
chmod u+w "$S/pst"/*
# corrupt copies of real files
head -c 100000 "$PST/aspose_source.pst" >"$S/pst/bad_truncated.pst"
cp "$PST/aspose_source.pst" "$S/pst/bad_index.pst"
chmod u+w "$S/pst/bad_index.pst"
# the header's pointers to the two B-tree indexes (Unicode PST, 0xE0..0xFF)
head -c 32 /dev/zero | tr '\0' '\377' | dd of="$S/pst/bad_index.pst" bs=1 seek=224 conv=notrunc 2>/dev/null
head -c 300000 /dev/urandom >"$S/pst/bad_random.pst"
cat >"$S/conf" <<CONF
[mailfs]
journal = journal.db
[store pst]
backend = pst
path = pst
[store srv1]
path = srv1.db
CONF
C() { "$B/mailfsctl" -c "$S/conf" "$@"; }
C store create srv1 >/dev/null
M=$S/mnt
# Items cross the helper's pipe in pieces of 1,000 bytes here, so that every
# item, not just those over a megabyte, is put together from many; and at
# most 2 helpers run, so that over 20 files they are stopped and restarted
# all the time while everything below is compared.
mount_fg "$S" MAILFS_PST_CHUNK=1000 MAILFS_PST_HELPERS=2 || exit 1
P=$M/pst

# ------------------------------------------------- against readpst
# Our view of a mailbox, like readpst-summary's: folder TAB item count.
our_folders() {
    (cd "$1" && find . -mindepth 1 -type d -printf '%P\n' | LC_ALL=C sort | while IFS= read -r d; do
        printf '%s\t%s\n' "$d" "$(find "$d" -maxdepth 1 -type f | wc -l)"
    done)
}
# Top-level attachments of the messages, folder TAB sha256 (not rtf-body.rtf).
our_attachments() {
    (cd "$1" && find . -name '*.eml' -printf '%P\n' | while IFS= read -r e; do
        "$DUMP" "$e" | awk -F'\t' -v d="$(dirname "$e")" '$1 == "part" && $5 != "rtf-body.rtf" {print d "\t" $2}'
    done | LC_ALL=C sort)
}
subjects_of() { # files...: the non-empty decoded subjects
    [ $# -gt 0 ] || return 0
    "$DUMP" "$@" 2>/dev/null | awk -F'\t' '$1 == "subject" && $2 != "" {print $2}' | LC_ALL=C sort
}

# Items readpst does not export and mailfs shows: libpst gives posts
# (IPM.Post) and distribution lists (IPM.DistList) item type 13, which
# readpst skips as "Unknown item type".  Per file: folder TAB how many,
# and the subjects of those that are messages.
extra_items() {
    case $1 in
    java-libpst_dist-list.pst | java-libpst_passworded.pst) printf 'Contacts\t1\n' ;;
    pstsdk_test_ansi.pst) printf 'Folder\t1\n' ;;
    pstsdk_test_unicode.pst) printf 'Folder\t1\nTop of Personal Folders\t1\n' ;;
    esac
}
extra_subjects() {
    case $1 in
    pstsdk_test_ansi.pst) echo Post ;;
    pstsdk_test_unicode.pst) printf 'Post\nTest\n' ;;
    esac
}

for f in "$PST"/*; do
    b=$(basename "$f")
    n=${b%.*}
    ref=$WORK/ref/$n
    readpst_summary "$f" "$ref" >"$WORK/ref-$n.txt" 2>/dev/null
    if ! grep -q "^readpst-exit	0" "$WORK/ref-$n.txt"; then
        # readpst cannot read it either (test data says: "Could not get root record")
        check "$b: readpst fails, and so does the mailbox (EIO)" \
            bash -c "ls '$P/$n' 2>&1 | grep -q 'Input/output error'"
        continue
    fi
    # readpst writes no folder for an empty one, so compare non-empty ones;
    # it puts items under the top of folders into the top directory ("."),
    # where a mailbox holds only folders: that is "Top of Personal Folders".
    { grep -v "^readpst-exit" "$WORK/ref-$n.txt" | sed 's/^\.\t/Top of Personal Folders\t/'
        extra_items "$b"; } | awk -F'\t' '{n[$1] += $2} END {for (d in n) if (n[d] > 0) print d "\t" n[d]}' |
        LC_ALL=C sort >"$WORK/want"
    our_folders "$P/$n" | awk -F'\t' '$2 > 0' >"$WORK/got"
    check "$b: folders and item counts equal readpst's ($(wc -l <"$WORK/want") folders)" \
        diff "$WORK/want" "$WORK/got"
    rm -rf "$ref"
    readpst_summary --attachments "$f" "$ref" 2>/dev/null | grep -v "^readpst-exit" |
        awk -F'\t' '{print $1 "\t" $3}' | sed 's/^\.\t/Top of Personal Folders\t/' |
        LC_ALL=C sort >"$WORK/want"
    our_attachments "$P/$n" >"$WORK/got"
    check "$b: attachments byte-equal to readpst's ($(wc -l <"$WORK/want"))" diff "$WORK/want" "$WORK/got"
    mapfile -t ours < <(find "$P/$n" -name '*.eml')
    check "$b: every message (${#ours[@]}) parses with GMime" \
        bash -c '[ $# = 0 ] || "$0" "$@" >/dev/null' "$DUMP" "${ours[@]}"
    # the same subjects as readpst's messages (its numbered files)
    mapfile -t theirs < <(find "$ref" -type f -regex '.*/[0-9]+' -exec grep -l '^MIME-Version' {} +)
    check "$b: the items' subjects" \
        diff <({ subjects_of "${theirs[@]}"; extra_subjects "$b"; } | LC_ALL=C sort) <(subjects_of "${ours[@]}")
    rm -rf "$ref"
done

helpers() { pgrep -f "mailfs-pst $S/pst/" | wc -l; }
check "at most 2 helper processes after reading all files ($(helpers))" test "$(helpers)" -le 2

# sizes are what reading gives, and every file type has its shape
bad=0
while IFS= read -r -d '' f; do
    [ "$(stat -c %s "$f")" = "$(wc -c <"$f")" ] || { bad=$((bad + 1)); echo "size differs: $f"; }
done < <(find "$P" -type f -print0 2>/dev/null)
check "every file's size equals the bytes read" test $bad = 0
check "contacts are vCards" bash -c "for f in \$(find '$P' -name '*.vcf' 2>/dev/null); do head -1 \"\$f\" | grep -q BEGIN:VCARD || exit 1; done"
check "aspose_SampleContacts has 6 contacts" test "$(find "$P/aspose_SampleContacts" -name '*.vcf' | wc -l)" = 6
check "appointments are iCalendar" bash -c "head -1 '$P/aspose_source/Calendar/1.ics' | grep -q BEGIN:VCALENDAR"
check "a message's date is its mtime (2011, not the file's)" \
    test "$(stat -c %y "$P/aspose_source/Inbox/1.eml" | cut -c1-4)" = 2011
check "read items carry \\Seen" bash -c "getfattr --absolute-names --only-values -n user.mail.flags '$P/aspose_source/Inbox/1.eml' | grep -q Seen"
check "an embedded message is a message/rfc822 part" \
    bash -c "'$DUMP' '$P/pstsdk_submessage/submessage/1.eml' | grep -q '^embedded'"

check "a post is a message (pstsdk_test_ansi)" \
    bash -c "'$DUMP' '$P/pstsdk_test_ansi/Folder/1.eml' | grep -qx 'subject	Post'"
check "a distribution list is a vCard" bash -c "head -1 '$P/java-libpst_dist-list/Contacts/2.vcf' | grep -q BEGIN:VCARD"
check "localized default folders libpst does not flag are shown (go-pst_support)" \
    test -d "$P/go-pst_support/Posta in arrivo" -a -d "$P/go-pst_support/Recoverable Items"

# password-protected files: libpst ignores the password (README)
check "password-protected PST: Inbox has its 4 messages" \
    test "$(ls "$P/aspose_passwordprotectedPST/Inbox" | wc -l)" = 4
check "... Deleted Items its 14" test "$(ls "$P/aspose_passwordprotectedPST/Deleted Items" | wc -l)" = 14

# ------------------------------------------------------- read-only
I=$P/aspose_source/Inbox
for op in "touch $I/new.eml" "mkdir $I/sub" "rm $I/1.eml" "mv $I/1.eml $I/x.eml" \
    "setfattr -n user.mail.flags -v \\Flagged $I/1.eml" "cp /etc/hostname $I/"; do
    check "EROFS: $op" bash -c "$op 2>&1 | grep -q 'Read-only file system'"
done

# ------------------------------------------------------ bad input
for b in bad_truncated bad_index bad_random; do
    check "$b: EIO" bash -c "ls '$P/$b' 2>&1 | grep -q 'Input/output error'"
    check "$b: one log line naming the file" test "$(grep -c "$S/pst/$b.pst: cannot read" "$S/daemon.log")" = 1
done
check "... and the daemon still serves the others" cmp -s "$I/1.eml" "$I/1.eml"
check "... the store lists every mailbox" test "$(ls "$P" | wc -l)" = $(( $(ls "$PST" | wc -l) + 3 ))

# ---------------------------------------------------- cp -a, import
tree_of "$P/aspose_source" >"$WORK/pst-tree"
cp -a "$P/aspose_source" "$M/srv1/"
check "cp -a of a PST mailbox into a real store: same tree" diff "$WORK/pst-tree" <(tree_of "$M/srv1/aspose_source")
check "... flags came along" \
    bash -c "getfattr --absolute-names --only-values -n user.mail.flags '$M/srv1/aspose_source/Inbox/1.eml' | grep -q Seen"

C import "$S/pst/aspose_SampleOstFile.ost" srv1 ost >/dev/null
check "mailfsctl import: exit 0" test $? = 0
wait_for "the import to show" test -d "$M/srv1/ost" &&
    check "... the same tree as the PST mailbox" \
        diff <(tree_of "$P/aspose_SampleOstFile") <(tree_of "$M/srv1/ost")
check "... in the journal as done, 92 items" \
    journal_is "$S" "select state || ' ' || done_messages from move where newname = cast('ost' as blob)" "done 92"

# killed half way (after the first page of a folder), then run again: resumed
MAILFS_FAULT=copy:2 "$B/mailfsctl" -c "$S/conf" import "$S/pst/aspose_source.pst" srv1 src2 >/dev/null 2>&1
check "import killed half way: not visible" test ! -e "$M/srv1/src2"
check "... its copy so far is kept for the resume" \
    test "$(sqlite3 "$S/srv1.db" "select count(*) from mailbox where state = 1")" = 1
C import "$S/pst/aspose_source.pst" srv1 src2 2>"$WORK/resume.log" >/dev/null
check "import again: exit 0" test $? = 0
check "... the same move, resumed" \
    journal_is "$S" "select count(*) || ' ' || max(state) from move where newname = cast('src2' as blob)" "1 done"
wait_for "the resumed import to show" test -d "$M/srv1/src2" &&
    check "... and complete" diff "$WORK/pst-tree" <(tree_of "$M/srv1/src2")

for b in bad_truncated bad_index bad_random; do
    C import "$S/pst/$b.pst" srv1 "$b" 2>"$WORK/imp.err" >/dev/null
    check "import $b: exit 1" test $? = 1
    check "... says why, naming the file" grep -q "$S/pst/$b.pst: cannot read this PST file" "$WORK/imp.err"
    check "... and nothing was created" test ! -e "$M/srv1/$b"
done
C import "$PST/aspose_AddingBulkMessagesWithImprovedPerformance.pst" srv1 x 2>"$WORK/imp.err" >/dev/null
check "import of the test data's unreadable PST: exit 1, file named" \
    grep -q "AddingBulkMessagesWithImprovedPerformance.pst: cannot read" "$WORK/imp.err"
unmount "$S"

# One helper at most: a mailbox whose helper was stopped restarts it for a
# folder not read yet, unless its file changed meanwhile (then EIO: the
# folders already shown came from the old file).
mount_fg "$S" MAILFS_PST_HELPERS=1 || exit 1
ls "$P/aspose_source" >/dev/null                # its helper runs
ls "$P/tika_testPST" >/dev/null                 # ... and is stopped for this one
check "a stopped helper restarts for a new folder" test "$(find "$P/aspose_source/Inbox" -maxdepth 1 -type f | wc -l)" = 8
ls "$P/pstsdk_sample1" >/dev/null              # a new one: aspose_source's stops
touch "$S/pst/aspose_source.pst"
check "a file changed since: EIO" bash -c "ls '$P/aspose_source/Sent Items' 2>&1 | grep -q 'Input/output error'"
check "... saying why" grep -q "aspose_source.pst: cannot read this PST file: it changed on disk" "$S/daemon.log"
unmount "$S"
[ $FAILS = 0 ]
