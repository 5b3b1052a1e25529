#!/bin/bash
# Deleted items (issue 10): what is deleted through the mount stays
# recoverable for retain-days.  `rm -rf` of a mailbox with nested folders,
# flags, special-use, ACL, set mtimes and modes; `mailfsctl deleted` lists
# it; `mailfsctl restore` brings it back byte-identical with xattrs, names,
# mtimes, modes and UIDs.  A single message, a single folder and a message
# replaced by rsync come back too; a name clash refuses the restore with
# nothing overwritten; undo of a move whose target was deleted since
# restores the retained source; purge after the retention (0 days) drops
# everything and compact gives the space back.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1 srv2 || exit 1
M=$S/mnt
C() { "$B/mailfsctl" -c "$S/conf" "$@"; }
# The same site with a retention of 0 days.
sed 's/^\[mailfs\]$/[mailfs]\nretain-days = 0/' "$S/conf" >"$S/conf0"
C0() { "$B/mailfsctl" -c "$S/conf0" "$@"; }
mount_fg "$S" || exit 1

# xattrs of a tree, relative names; UIDs of its visible messages.
xattrs_of() { (cd "$(dirname "$1")" && find "$(basename "$1")" -print0 | sort -z | xargs -0 getfattr -d -m user.mail 2>/dev/null); }
uids_of() { # STORE MAILBOX
    sqlite3 "$S/$1.db" "select cast(f.name as text) || '/' || cast(m.name as text) || ' ' || m.imap_uid
        from message m join folder f on f.id = m.folder join mailbox b on b.id = f.mailbox
        where b.state = 0 and cast(b.name as text) = '$2' and m.deleted_ns = 0 order by 1"
}
same() { cmp -s "$1" "$2"; }

# --- a mailbox made from the test data
A=$M/srv1/alice
mkdir -p "$A/INBOX" "$A/Archive/2019/big" "$A/Sent" "$A/Empty"
cp -a "$TD/eml/cpython/." "$A/INBOX/"
cp -a "$TD/eml/notmuch/." "$A/Sent/"
cp -a "$TD/eml/tika/." "$A/Archive/2019/"
cp -a "$TD/eml/flanker/." "$A/Archive/2019/big/"
find "$A/INBOX" -type f | sort | head -5 | while read -r f; do setfattr -n user.mail.flags -v '\Seen \Flagged $Label1' "$f"; done
find "$A/Archive" -type f | sort | head -3 | while read -r f; do setfattr -n user.mail.flags -v '\Answered' "$f"; done
setfattr -n user.mail.special-use -v '\Sent' "$A/Sent"
setfattr -n user.mail.special-use -v '\Archive' "$A/Archive"
setfattr -n user.mail.acl -v "$(printf 'bob lrs\nanyone l')" "$A"
chmod 0640 "$(find "$A/INBOX" -type f | sort | head -1)"
chmod 0700 "$A/Sent"
chown 1234:5678 "$A/Archive/2019"
touch -d '2019-03-04 05:06:07' "$(find "$A/Sent" -type f | sort | head -1)"
for d in "$A/INBOX" "$A/Sent" "$A/Empty" "$A/Archive/2019/big" "$A/Archive/2019" "$A/Archive" "$A"; do
    touch -d '2020-01-02 03:04:05' "$d"
done
tree_of "$A" >"$WORK/alice.tree"
xattrs_of "$A" >"$WORK/alice.xattr"
uids_of srv1 alice >"$WORK/alice.uids"
n_alice=$(find "$A" -type f | wc -l)
check "the mailbox has messages ($n_alice), flags, special-use and an ACL" \
    bash -c "[ $n_alice -gt 50 ] && grep -q Label1 '$WORK/alice.xattr' && grep -q 'special-use' '$WORK/alice.xattr' && grep -q 'mail.acl' '$WORK/alice.xattr'"

# --- rm -rf of the whole mailbox, then restore
rm -rf "$A"
check "rm -rf of the mailbox succeeds and it is gone" test ! -e "$A"
C deleted >"$WORK/deleted.out"
check "deleted lists the mailbox" awk '$1 == "srv1" && $2 == "alice" && $3 == "mailbox" && $4 == '"$n_alice"' {f = 1} END {exit !f}' "$WORK/deleted.out"
check "... and not each message inside it" test "$(grep -c ' message ' "$WORK/deleted.out")" = 0
C deleted srv1 alice >"$WORK/deleted-alice.out"
check "deleted STORE MAILBOX lists every message" test "$(grep -c ' message ' "$WORK/deleted-alice.out")" = "$n_alice"
C deleted --json srv1 >"$WORK/deleted.json"
check "deleted --json is JSON" python3 -c "import json,sys; d = json.load(open(sys.argv[1])); assert d[0]['mailbox'] == 'alice' and d[0]['kind'] == 'mailbox'" "$WORK/deleted.json"
C restore srv1 alice >"$WORK/restore.out"
rc=$?
check "restore of the mailbox: exit 0" test $rc = 0
check "... it says how many messages ($(cat "$WORK/restore.out"))" grep -q "restored srv1/alice: $n_alice messages" "$WORK/restore.out"
wait_for "the restored mailbox in the mount" test -d "$A"
tree_of "$A" >"$WORK/alice.tree2"
xattrs_of "$A" >"$WORK/alice.xattr2"
uids_of srv1 alice >"$WORK/alice.uids2"
check "restored mailbox: names, sizes, mtimes, modes and bytes identical" same "$WORK/alice.tree" "$WORK/alice.tree2"
check "restored mailbox: flags, special-use and ACL identical" same "$WORK/alice.xattr" "$WORK/alice.xattr2"
check "restored mailbox: IMAP UIDs identical" same "$WORK/alice.uids" "$WORK/alice.uids2"
check "restored mailbox: owner of a folder kept" test "$(stat -c %u:%g "$A/Archive/2019")" = 1234:5678
check "nothing left in deleted items" test "$(C deleted srv1 | wc -l)" = 1

# --- one message
msg=$(cd "$A/INBOX" && ls | sort | head -1)
rm "$A/INBOX/$msg"
check "rm of one message" test ! -e "$A/INBOX/$msg"
check "deleted lists it" bash -c "C() { '$B/mailfsctl' -c '$S/conf' \"\$@\"; }; C deleted srv1 | grep -q ' message .* INBOX/$msg\$'"
C restore srv1 alice "INBOX/$msg" >/dev/null
rc=$?
check "restore of one message: exit 0" test $rc = 0
wait_for "the restored message" test -e "$A/INBOX/$msg"
check "the message is back identical" same "$WORK/alice.tree" <(tree_of "$A")
check "its flags are back" same "$WORK/alice.xattr" <(xattrs_of "$A")

# --- one folder with a subfolder
rm -rf "$A/Archive/2019"
check "rm -rf of a folder" test ! -e "$A/Archive/2019"
C deleted srv1 >"$WORK/deleted-folder.out"
check "deleted lists the folder, not its messages" \
    bash -c "grep -q ' folder .* Archive/2019\$' '$WORK/deleted-folder.out' && ! grep -q ' message ' '$WORK/deleted-folder.out'"
C restore srv1 alice Archive/2019 >/dev/null
rc=$?
check "restore of the folder: exit 0" test $rc = 0
wait_for "the restored folder" test -d "$A/Archive/2019/big"
check "the folder is back identical (subfolder, mtimes, modes, owner)" same "$WORK/alice.tree" <(tree_of "$A")
check "its flags and special-use are back" same "$WORK/alice.xattr" <(xattrs_of "$A")
check "UIDs unchanged" same "$WORK/alice.uids" <(uids_of srv1 alice)

# --- an empty folder
rmdir "$A/Empty"
C restore srv1 alice Empty >/dev/null
wait_for "the restored empty folder" test -d "$A/Empty"
check "the empty folder is back with its mtime" same "$WORK/alice.tree" <(tree_of "$A")

# --- a name clash at restore: refused, nothing overwritten
victim=$(cd "$A/INBOX" && ls | sort | sed -n 2p)
cp "$A/INBOX/$victim" "$WORK/victim.old"
rm "$A/INBOX/$victim"
echo "a new message under the old name" >"$A/INBOX/$victim"
C restore srv1 alice "INBOX/$victim" >/dev/null 2>"$WORK/clash.err"
rc=$?
check "restore onto a taken name: exit 1" test $rc = 1
check "... saying the name exists ($(head -1 "$WORK/clash.err"))" grep -q "exists" "$WORK/clash.err"
check "... the visible message untouched" test "$(cat "$A/INBOX/$victim")" = "a new message under the old name"
check "... the deleted one still listed" bash -c "'$B/mailfsctl' -c '$S/conf' deleted srv1 | grep -q ' INBOX/$victim\$'"
C restore srv1 alice >/dev/null 2>&1
rc=$?
check "restore of the whole mailbox over the clash: refused too" test $rc = 1
check "... the visible message still untouched" test "$(cat "$A/INBOX/$victim")" = "a new message under the old name"
rm "$A/INBOX/$victim"
# now two deletions of one name: the newest comes back
C restore srv1 alice "INBOX/$victim" >/dev/null
wait_for "the clashing message restored once the name is free" test -e "$A/INBOX/$victim"
check "... the newest deletion of the name came back" test "$(cat "$A/INBOX/$victim")" = "a new message under the old name"

# --- rsync replacing a message (temp file, then rename over it) keeps the old one
f=$(cd "$A/Sent" && ls | sort | head -1)
cp "$A/Sent/$f" "$WORK/replaced.old"
mkdir -p "$WORK/src" && { cat "$WORK/replaced.old"; echo "changed"; } >"$WORK/src/$f"
rsync "$WORK/src/$f" "$A/Sent/$f"
check "rsync replaced the message" bash -c "tail -1 '$A/Sent/$f' | grep -qx changed"
check "the replaced version is a deleted item" bash -c "'$B/mailfsctl' -c '$S/conf' deleted srv1 | grep -q ' Sent/$f\$'"

# --- undo of a move whose target mailbox was deleted since
mkdir -p "$M/srv1/carol/INBOX"
cp -a "$TD/eml/postal-mime/." "$M/srv1/carol/INBOX/"
tree_of "$M/srv1/carol" >"$WORK/carol.tree"
mv "$M/srv1/carol" "$M/srv2/" || not_ok "mv carol"
id=$(moves_of "$S" 'm["mailbox"] == "carol" and m["state"] == "done"')
rm -rf "$M/srv2/carol"
C undo "$id" >"$WORK/undo.out" 2>"$WORK/undo.err"
rc=$?
check "undo after the target was deleted: exit 0 ($(cat "$WORK/undo.err"))" test $rc = 0
check "... says the deleted target stays recoverable" grep -q "recoverable" "$WORK/undo.out"
wait_for "carol back in srv1" test -d "$M/srv1/carol/INBOX"
check "... carol is back in srv1 as it was moved" same "$WORK/carol.tree" <(tree_of "$M/srv1/carol")
check "... the deleted carol is listed in srv2" bash -c "'$B/mailfsctl' -c '$S/conf' deleted srv2 | grep -q '^srv2 .* carol .* mailbox'"
check "... the move is undone in the journal" moves_are "$S" "m['id'] == $id" state undone

# ... but not when the target was only renamed: no mailbox in two stores
mkdir -p "$M/srv1/eve/INBOX" && cp -a "$TD/eml/postal-mime/." "$M/srv1/eve/INBOX/"
mv "$M/srv1/eve" "$M/srv2/" || not_ok "mv eve"
id=$(moves_of "$S" 'm["mailbox"] == "eve" and m["state"] == "done"')
mv "$M/srv2/eve" "$M/srv2/eve2" || not_ok "rename eve in srv2"
C undo "$id" >/dev/null 2>&1
rc=$?
check "undo after the target was renamed (not deleted): refused, eve not restored in srv1" \
    bash -c "[ $rc != 0 ] && [ ! -e '$M/srv1/eve' ] && [ -d '$M/srv2/eve2/INBOX' ]"

# --- purge: nothing before the retention, everything with 0 days; compact
C purge >/dev/null
check "purge within retention keeps deleted items" bash -c "'$B/mailfsctl' -c '$S/conf' deleted | grep -q ' carol '"
C store list >/dev/null
rm -rf "$A"
check "rm -rf of alice again" test ! -e "$A"
C0 purge >"$WORK/purge.out"
rc=$?
check "purge with retain-days = 0: exit 0 ($(tail -1 "$WORK/purge.out"))" test $rc = 0
check "... says what it purged" grep -q "deleted mailboxes" "$WORK/purge.out"
check "... nothing is left in deleted items" test "$(C deleted | wc -l)" = 1
check "... no deleted message, folder or mailbox row left" \
    test "$(sqlite3 "$S/srv1.db" 'select (select count(*) from message where deleted_ns != 0) +
        (select count(*) from folder where mailbox in (select id from mailbox where state = 3)) +
        (select count(*) from mailbox where state = 3)')" = 0
check "... no content without a message" \
    test "$(sqlite3 "$S/srv1.db" 'select count(*) from content where id not in (select content from message)')" = 0
C restore srv1 alice >/dev/null 2>&1
rc=$?
check "restore after purge: nothing to restore (exit 1)" test $rc = 1
size() { stat -c %s "$S/$1.db" "$S/$1.db-wal" 2>/dev/null | awk '{s += $1} END {print s}'; }
C compact srv1 >"$WORK/compact.out"
rc=$?
check "compact after the purge: exit 0" test $rc = 0
after=$(size srv1)
check "compact gave the space back (file $after bytes < 2 MB; alice was > 5 MB)" test "$after" -lt 2000000
check "integrity_check of the store" test "$(sqlite3 "$S/srv1.db" 'pragma integrity_check')" = ok
check "carol still readable after purge and compact" same "$WORK/carol.tree" <(tree_of "$M/srv1/carol")

# --- without a mount: the CLI opens the same stores
f=$(cd "$M/srv1/carol/INBOX" && ls | sort | head -1)
cp "$M/srv1/carol/INBOX/$f" "$WORK/offline.msg"
rm "$M/srv1/carol/INBOX/$f"
unmount "$S"
check "deleted works without a mount" bash -c "'$B/mailfsctl' -c '$S/conf' deleted srv1 | grep -q ' carol .* INBOX/$f\$'"
C restore srv1 carol "INBOX/$f" >/dev/null
rc=$?
check "restore works without a mount" test $rc = 0
mount_fg "$S" || exit 1
check "... the message is there once mounted again" cmp -s "$WORK/offline.msg" "$M/srv1/carol/INBOX/$f"
unmount "$S"
[ $FAILS = 0 ]
