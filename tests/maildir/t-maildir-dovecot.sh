#!/bin/bash
# Moves and backups that keep every IMAP UID, with Dovecot as the oracle
# (issue 12): a mailbox built by Dovecot itself from the test data (folders
# nested and non-ASCII, every flag, keywords, old dates, UID gaps, an ACL)
# is moved with mv through the mount maildir -> maildir (one filesystem:
# hard links), maildir -> sqlite -> maildir, and maildir++ -> fs layout,
# then backed up out of the mount with rsync -aX, cp -a and tar --xattrs
# and restored into an empty maildir store.  After each,
# Dovecot serving the mailbox from its new place (doveadm fetch, and an IMAP
# client's SELECT: UIDVALIDITY, UIDNEXT, UIDs, flags, dates, sizes, bytes)
# says exactly what it said before, force-resync finds nothing to repair,
# and Dovecot logs no error.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../dovecot.sh"

dovecot_start "$WORK/dovecot" || exit 1
S=$WORK/site
site "$S" src md@maildir md2@maildir mdfs@maildir-fs r1@maildir r2@maildir r3@maildir || exit 1
chown "$DOVECOT_UID:$DOVECOT_GID" "$S/md" "$S/md2" "$S/mdfs" "$S/r1" "$S/r2" "$S/r3"
chmod 755 "$WORK" "$S"
M=$S/mnt
dovecot_user alice "$S/md" || exit 1
dovecot_fill alice || exit 1
mark=$(dovecot_log_mark)
dovecot_snapshot alice >"$WORK/before.doveadm" || not_ok "doveadm snapshot"
dovecot_imap_snapshot alice >"$WORK/before.imap" || not_ok "IMAP snapshot"
check "the fixture has $DOVECOT_FILLED messages" \
    test "$(grep -c '^message' "$WORK/before.doveadm")" = "$DOVECOT_FILLED"

# same_as_before STEP: both oracles say what they said before the moves.
same_as_before() {
    dovecot_snapshot alice >"$WORK/$1.doveadm" 2>"$WORK/$1.err" || not_ok "$1: doveadm snapshot"
    if diff "$WORK/before.doveadm" "$WORK/$1.doveadm" >"$WORK/$1.diff"; then
        ok "$1: doveadm fetch and mailbox status unchanged"
    else
        not_ok "$1: doveadm fetch and mailbox status unchanged"; head -8 "$WORK/$1.diff"
    fi
    dovecot_imap_snapshot alice >"$WORK/$1.imap" || not_ok "$1: IMAP snapshot"
    if diff "$WORK/before.imap" "$WORK/$1.imap" >"$WORK/$1.idiff"; then
        ok "$1: IMAP SELECT and FETCH unchanged (UIDVALIDITY, UIDNEXT, UIDs, flags, dates, bytes)"
    else
        not_ok "$1: IMAP unchanged"; head -8 "$WORK/$1.idiff"
    fi
    check "$1: force-resync finds nothing to repair" dovecot_resync_clean alice
    check "$1: the ACL is Dovecot's" bash -c "dovecot_doveadm() { doveadm -c '$DOVECOT_CONF' \"\$@\"; }
        dovecot_doveadm acl get -u alice INBOX | grep -Eq '^user=bob +lookup read'"
}

mount_fg "$S" || exit 1
n=$(find "$M/md/alice" -type f | wc -l)
check "the mount shows the $DOVECOT_FILLED messages Dovecot made" test "$n" = "$DOVECOT_FILLED"
check "the non-ASCII folder in UTF-8" test -d "$M/md/alice/Café/Ünïcode"
[ -n "${DEBUG:-}" ] && { getfattr -d "$M/md/alice/Archive/"* | head; ls "$S/md/alice/.Archive/cur" | head -3; }

mv "$M/md/alice" "$M/md2/"
check "mv maildir -> maildir exits 0" test $? = 0
f=$(find "$S/md2/alice/cur" -type f | head -1)
check "one filesystem: the message files are hard links" test "$(stat -c %h "$f")" = 2
owner=$(stat -c %u "$S/md2/alice")
check "the moved mailbox is the mail user's" test "$owner" = "$DOVECOT_UID" -a \
    -z "$(find "$S/md2/alice" ! -user "$DOVECOT_UID" | head -1)"
dovecot_user alice "$S/md2" || exit 1
same_as_before "maildir -> maildir"

mv "$M/md2/alice" "$M/src/" && mv "$M/src/alice" "$M/md/"
check "mv maildir -> sqlite -> maildir exits 0" test $? = 0
dovecot_user alice "$S/md" || exit 1
same_as_before "maildir -> sqlite -> maildir"

mv "$M/md/alice" "$M/mdfs/"
check "mv maildir++ -> fs layout exits 0" test $? = 0
check "fs layout: the folder nests on disk" test -d "$S/mdfs/alice/Archive/2019/cur"
dovecot_user alice "$S/mdfs" fs || exit 1
same_as_before "maildir++ -> fs"

# Backups out of the mount, restored into an empty maildir store each.
B=$WORK/backup
mkdir -p "$B"
rsync -aX "$M/mdfs/alice/" "$B/rsync/" && rsync -aX "$B/rsync/" "$M/r1/alice/"
check "rsync -aX out and back in exits 0" test $? = 0
cp -a "$M/mdfs/alice" "$B/cp" && cp -a "$B/cp" "$M/r2/alice"
check "cp -a out and back in exits 0" test $? = 0
tar -C "$M/mdfs" --xattrs --xattrs-include='user.*' -cf "$B/alice.tar" alice &&
    tar -C "$M/r3" --xattrs --xattrs-include='user.*' -xf "$B/alice.tar"
check "tar --xattrs out and back in exits 0" test $? = 0
for r in r1:rsync r2:cp r3:tar; do
    dovecot_user alice "$S/${r%:*}" || exit 1
    same_as_before "${r#*:} out of the mount and into an empty store"
done

if out=$(dovecot_log_problems "$mark"); then ok "Dovecot logged no error or warning"; else not_ok "Dovecot logged no error or warning"; echo "$out" | head -5; fi
unmount "$S"
echo "$FAILS failed"
[ "$FAILS" = 0 ]
