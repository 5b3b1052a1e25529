#!/bin/bash
# Nothing is lost by a deleted journal (issue 10): the daemon notices its
# journal deleted or replaced and refuses moves; a journal deleted in the
# middle of a move followed by a kill leaves a lock and a hidden copy that
# check reports and recover (or the next mount) settles from the stores
# alone; a retained copy whose journal is gone is entered in the new one, so
# that purge and undo know it again; and a recovery that cannot finish (its
# target disk still full) says which move is left and exits 1.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1 srv2 || exit 1
M=$S/mnt
ctl() { "$B/mailfsctl" -c "$S/conf" "$@"; }
hidden() { sqlite3 "$S/$1.db" "select count(*) from mailbox where state != 0"; }
locked() { sqlite3 "$S/$1.db" "select count(*) from mailbox where lock_move != 0"; }

# alice: the test data's messages in two folders, with flags and an ACL.
mount_fg "$S" MAILFS_STALL=locked MAILFS_STALL_FILE="$WORK/stall" || exit 1
mkdir -p "$M/srv1/alice/INBOX" "$M/srv1/alice/Archive"
cp -a "$TD/eml/spamassassin/." "$M/srv1/alice/INBOX/"
cp -a "$TD/eml/mimekit/." "$M/srv1/alice/Archive/"
setfattr -n user.mail.flags -v '\Seen' "$M/srv1/alice/INBOX/$(ls "$M/srv1/alice/INBOX" | head -1)"
setfattr -n user.mail.acl -v 'bob lr' "$M/srv1/alice"
tree_of "$M/srv1/alice" >"$WORK/alice.tree"

# --- 1. the journal deleted under a running daemon: moves refused, nothing touched
rm -f "$S"/journal.db*
out=$(mv "$M/srv1/alice" "$M/srv2/" 2>&1)
check "mv refused once the journal is deleted ($out)" test -d "$M/srv1/alice" -a ! -e "$M/srv2/alice"
check "... with EIO" bash -c "printf '%s' '$out' | grep -q 'Input/output error'"
check "... and a log line saying why" grep -q "move journal was deleted while in use" "$S/daemon.log"
check "... the source is not locked" test "$(locked srv1)" = 0
check "... nothing hidden in the target" test "$(hidden srv2)" = 0
unmount "$S"

# --- 1b. the journal replaced by another file (a restore, a copy): refused too
mount_fg "$S" || exit 1
cp "$S/journal.db" "$WORK/journal.copy" && mv "$WORK/journal.copy" "$S/journal.db"
check "mv refused once the journal is replaced" bash -c "! mv '$M/srv1/alice' '$M/srv2/' 2>/dev/null"
check "... with a log line saying why" grep -q "move journal was replaced while in use" "$S/daemon.log"
check "... alice still in srv1, unlocked" test -d "$M/srv1/alice" -a "$(locked srv1)" = 0
unmount "$S"

# --- 2. the journal deleted in the middle of a move, then the daemon killed
mount_fg "$S" MAILFS_STALL=locked MAILFS_STALL_FILE="$WORK/stall" || exit 1
touch "$WORK/stall"
mv "$M/srv1/alice" "$M/srv2/" 2>"$WORK/mv2.err" &
mvpid=$!
wait_for "the move to stall after copying" grep -q "stalled at locked" "$S/daemon.log"
rm -f "$S"/journal.db*
pkill -KILL -f "mailfs -f $S/conf"
wait $mvpid
wait_for "daemon of $S to die" not_running "$S"
fusermount3 -u "$M" 2>/dev/null
rm -f "$WORK/stall"
check "the kill left the source locked" test "$(locked srv1)" = 1
check "... and a hidden copy in the target" test "$(hidden srv2)" = 1
check "the new journal knows no move" test -z "$(ctl moves | tail -n +2)"
ctl deliver srv1 alice INBOX <"$TD/eml/spamassassin/$(ls "$TD/eml/spamassassin" | head -1)" 2>/dev/null
check "delivery into the orphan-locked mailbox is deferred (75)" test $? = 75
ctl check >"$WORK/check.out" 2>&1
rc=$?
check "check exits 1 on the orphans" test $rc = 1
check "... reports the orphan lock" grep -q "^orphan-lock .*alice .*srv1" "$WORK/check.out"
check "... and the orphan copy" grep -q "^orphan-copy .*alice .*srv2" "$WORK/check.out"
check "check --json reports both" test "$(ctl check --json | grep -c '"finding": "orphan-')" = 2
ctl recover >"$WORK/recover.out" 2>&1
check "recover settles them and exits 0 ($(tail -1 "$WORK/recover.out"))" test $? = 0
check "... the source is unlocked" test "$(locked srv1)" = 0
check "... the hidden copy is gone" test "$(hidden srv2)" = 0
check "check is clean afterwards" ctl check
mount_fg "$S" || exit 1
check "alice is back in srv1, byte-identical" test "$(tree_of "$M/srv1/alice")" = "$(cat "$WORK/alice.tree")"
check "... and only there" test ! -e "$M/srv2/alice"
check "... with its ACL" test "$(getfattr --only-values -n user.mail.acl "$M/srv1/alice")" = "bob lr"
check "a move works again" mv "$M/srv1/alice" "$M/srv2/"
unmount "$S"

# --- 3. the same crash, settled by the next mount instead of by recover
ctl move alice srv1 >/dev/null || not_ok "move alice back to srv1"
ctl purge --all >/dev/null
MAILFS_FAULT=locked ctl move alice srv2 >/dev/null 2>&1
rm -f "$S"/journal.db*
check "a killed mailfsctl move left a lock" test "$(locked srv1)" = 1
mount_fg "$S" || exit 1
check "the mount settled the orphan lock" test "$(locked srv1)" = 0
check "... and the orphan copy" test "$(hidden srv2)" = 0
check "... and logged it" grep -q "orphan move .* rolled back" "$S/daemon.log"
check "alice intact in srv1 after the mount's recovery" test "$(tree_of "$M/srv1/alice")" = "$(cat "$WORK/alice.tree")"
unmount "$S"

# --- 4. a retained copy whose journal is gone: purge cannot see it until recover enters it
ctl move alice srv2 >/dev/null || not_ok "move alice to srv2"
rm -f "$S"/journal.db*
check "purge --all cannot see the orphan retained copy" bash -c "'$B/mailfsctl' -c '$S/conf' purge --all | grep -qx '0 retained copies purged'"
check "check reports it" bash -c "'$B/mailfsctl' -c '$S/conf' check | grep -q '^orphan-copy .*alice .*srv1 .*retained'"
ctl recover >/dev/null
check "recover enters it in the journal as a finished move" \
    bash -c "'$B/mailfsctl' -c '$S/conf' moves | grep -q 'alice .*srv1 .*srv2 .*done'"
id=$(moves_of "$S" 'm["state"] == "done"')
check "undo of the entered move brings alice back" bash -c "'$B/mailfsctl' -c '$S/conf' undo $id >/dev/null"
mount_fg "$S" || exit 1
check "... byte-identical in srv1" test "$(tree_of "$M/srv1/alice")" = "$(cat "$WORK/alice.tree")"
unmount "$S"
check "purge --all now drops the retained copies" bash -c "'$B/mailfsctl' -c '$S/conf' purge --all | grep -q '^[1-9][0-9]* retained copies purged'"
check "nothing hidden is left" test "$(hidden srv1)$(hidden srv2)" = 00

# --- 5. a recovery that cannot finish says so: the target's disk is full
mkdir -p "$S/full.fs"
mount -t tmpfs -o size=24m tmpfs "$S/full.fs" || exit 1
printf '[store full]\npath = %s/full.fs/full.db\n' "$S" >>"$S/conf"
ctl store create full >/dev/null
MAILFS_FAULT=locked ctl move alice full >/dev/null 2>&1
check "the killed move left a hidden copy on the small disk" test "$(sqlite3 "$S/full.fs/full.db" 'select count(*) from mailbox')" = 1
dd if=/dev/zero of="$S/full.fs/filler" bs=64k 2>/dev/null
ctl recover >"$WORK/recover-full.out" 2>&1
rc=$?
check "recover on a full target exits 1" test $rc = 1
check "... and names the move it left" grep -q "not settled: move [0-9]*, alice from srv1 to full" "$WORK/recover-full.out"
check "... the source is unlocked all the same" test "$(locked srv1)" = 0
rm -f "$S/full.fs/filler"
ctl recover >/dev/null 2>&1
check "recover finishes once there is room (exit 0)" test $? = 0
check "... the hidden copy is gone" test "$(sqlite3 "$S/full.fs/full.db" 'select count(*) from mailbox')" = 0
umount "$S/full.fs"

[ $FAILS = 0 ]
