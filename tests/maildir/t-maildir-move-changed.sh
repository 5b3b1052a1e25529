#!/bin/bash
# Dovecot changes a mailbox while mailfs moves it.  A delivery by
# dovecot-lda in the middle of the copy (the source is writable then,
# DESIGN 10) is carried over by the next pass: the move succeeds and
# Dovecot serves it in the target with its UID.  An IMAP client's flag
# change right before the commit point (after the final pass) rolls the
# move back with EAGAIN, says why, leaves the source intact and nothing in
# the target, and a retry moves everything: nothing lost, nothing twice.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../dovecot.sh"

dovecot_start "$WORK/dovecot" || exit 1
S=$WORK/site
site "$S" md@maildir md2@maildir || exit 1
chown "$DOVECOT_UID:$DOVECOT_GID" "$S/md" "$S/md2"
chmod 755 "$WORK" "$S"
M=$S/mnt
dovecot_user carol "$S/md" || exit 1
mapfile -t EMLS < <(find "$TD/eml" -name '*.eml' -type f | LC_ALL=C sort |
    while IFS= read -r f; do head -c 5 "$f" | grep -q '^From ' || echo "$f"; done)
for ((i = 0; i < 600; i++)); do dovecot_lda carol <"${EMLS[i % ${#EMLS[@]}]}" || break; done
N=$(dovecot_imap uids carol INBOX | wc -l)
check "600 messages delivered (the copy waits after the first 512)" test "$N" = 600

stalled() { test "$(grep -c "stalled at $1" "$S/daemon.log")" -ge "$2"; }
moved_back() { # point change-command...
    local point=$1; shift
    touch "$S/stall"
    mv "$M/md/carol" "$M/md2/" 2>"$WORK/mv.err" &
    local mvpid=$!
    wait_for "the move to wait at $point" stalled "$point" 1
    "$@"
    rm "$S/stall"
    wait $mvpid
    check "$point: the move fails" test $? != 0
    check "$point: with EAGAIN" grep -q "Resource temporarily unavailable" "$WORK/mv.err"
    check "$point: the log says the source changed behind mailfs" \
        grep -q 'the source changed behind mailfs' "$S/daemon.log"
    check "$point: the source is visible" test -d "$M/md/carol/INBOX"
    check "$point: nothing left in the target" test -z "$(ls -A "$S/md2")"
}

mount_fg "$S" MAILFS_STALL=copy MAILFS_STALL_FILE="$S/stall" || exit 1
touch "$S/stall"
mv "$M/md/carol" "$M/md2/" 2>"$WORK/mv.err" &
mvpid=$!
wait_for "the move to wait in its copy" stalled copy 1
dovecot_lda carol <"${EMLS[0]}"
dovecot_snapshot carol >"$WORK/source1"
rm "$S/stall"
wait $mvpid
check "copy: a delivery during the copy does not stop the move" test $? = 0
dovecot_user carol "$S/md2" || exit 1
dovecot_snapshot carol >"$WORK/after1"
check "copy: Dovecot serves every message in the target, the delivery too, with its UID" \
    diff "$WORK/source1" "$WORK/after1"
check "copy: $((N + 1)) messages" test "$(dovecot_imap uids carol INBOX | wc -l)" = $((N + 1))
check "copy: the passes carried it (a pass after the bulk copied one message)" \
    bash -c "'$B/mailfsctl' -c '$S/conf' moves --json | grep -q '\"phase\": \"delta\", \"messages\": 1,'"
unmount "$S"
# back to md for what follows (the same engine, no stall)
mount_fg "$S" || exit 1
mv "$M/md2/carol" "$M/md/" || not_ok "move carol back to md"
dovecot_user carol "$S/md" || exit 1
"$B/mailfsctl" -c "$S/conf" purge --all >/dev/null
unmount "$S"

mount_fg "$S" MAILFS_STALL=before-commit MAILFS_STALL_FILE="$S/stall" || exit 1
uid=$(dovecot_imap uids carol INBOX | tail -1)
moved_back before-commit dovecot_imap store carol INBOX "$uid" +FLAGS '\Flagged'
check "the flag is on the source" \
    bash -c "getfattr --only-values -n user.mail.flags '$M/md/carol/INBOX/'* 2>/dev/null | grep -q Flagged"
dovecot_snapshot carol >"$WORK/source"
unmount "$S"

mount_fg "$S" || exit 1
mv "$M/md/carol" "$M/md2/"
check "the retried move succeeds" test $? = 0
dovecot_user carol "$S/md2" || exit 1
dovecot_snapshot carol >"$WORK/after"
check "Dovecot serves every message, once, with its UID, flags and bytes" diff "$WORK/source" "$WORK/after"
check "$((N + 1)) messages" test "$(dovecot_imap uids carol INBOX | wc -l)" = $((N + 1))
check "force-resync finds nothing to repair" dovecot_resync_clean carol
unmount "$S"
echo "$FAILS failed"
[ "$FAILS" = 0 ]
