#!/bin/bash
# A source mailbox that changes behind mailfs's lock while it is moved (a
# mail server delivering into a Maildir): the move rolls back with EAGAIN,
# says why in the journal and the log, leaves the source intact and
# unlocked, and a retry moves it.  The sqlite backend has no changes behind
# its lock, so the test stands in for the mail server with the test-only
# fake stamp (MAILFS_FAKE_STAMP_FILE: the stamp is that file's SHA-256),
# changed while the move waits right before its commit point (MAILFS_STALL).
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1 srv2 || exit 1
M=$S/mnt
FAULTS=(MAILFS_STALL=before-commit MAILFS_STALL_FILE="$S/stall" MAILFS_FAKE_STAMP_FILE="$S/stamp")
echo "before" >"$S/stamp"
mount_fg "$S" "${FAULTS[@]}" || exit 1

mkdir -p "$M/srv1/alice/INBOX/Sub"
cp -a "$TD/eml/." "$M/srv1/alice/INBOX/"
cp "$(find "$TD/eml" -type f | sort | head -1)" "$M/srv1/alice/INBOX/Sub/one.eml"
tree_of "$M/srv1/alice" >"$WORK/alice.tree"
stalled() { test "$(grep -c 'stalled at before-commit' "$S/daemon.log")" -ge "$1"; }

# --- mv through the mount; the "mail server" delivers while it waits.
touch "$S/stall"
mv "$M/srv1/alice" "$M/srv2/" 2>"$WORK/mv.err" &
mvpid=$!
wait_for "the move to wait right before its commit point" stalled 1
check "the move waits with everything copied and verified" \
    moves_are "$S" 'm["mailbox"] == "alice" and m["state"] == "running"' step verified
echo "a delivery behind mailfs" >>"$S/stamp"
rm "$S/stall"
wait $mvpid
check "mv of a mailbox changed behind the move fails" test $? != 0
check "... with EAGAIN" grep -q "Resource temporarily unavailable" "$WORK/mv.err"
wait_for "the move to be rolled back" moves_are "$S" 'm["mailbox"] == "alice"' state rolled-back
check "the journal says the source changed and the move can be retried" \
    moves_are "$S" '"changed behind mailfs" in m["error"] and "retried" in m["error"]' state \
    rolled-back
check "one log line says so" \
    test "$(grep -c 'failed: the source changed behind mailfs during the move' "$S/daemon.log")" = 1
check "source intact" test "$(tree_of "$M/srv1/alice")" = "$(cat "$WORK/alice.tree")"
check "nothing in the target, not even hidden" \
    test ! -e "$M/srv2/alice" -a "$(sqlite3 "$S/srv2.db" 'select count(*) from mailbox')" = 0
check "the source is unlocked: it takes new mail" \
    cp "$WORK/alice.tree" "$M/srv1/alice/INBOX/probe.eml"
rm -f "$M/srv1/alice/INBOX/probe.eml"

# --- mailfsctl move: the same, in the words of ms_strerror.
touch "$S/stall"
env "${FAULTS[@]}" "$B/mailfsctl" -c "$S/conf" move alice srv2 >"$WORK/ctl.out" 2>&1 &
ctlpid=$!
wait_for "mailfsctl's move to wait before its commit point" \
    moves_are "$S" 'm["mailbox"] == "alice" and m["state"] == "running"' step verified
echo "another delivery" >>"$S/stamp"
rm "$S/stall"
wait $ctlpid
check "mailfsctl move of a changed mailbox fails" test $? != 0
check "... saying it changed behind mailfs and to retry" \
    grep -q "changed behind mailfs.*retry the move" "$WORK/ctl.out"
check "source still intact" test "$(tree_of "$M/srv1/alice")" = "$(cat "$WORK/alice.tree")"

# --- the retry, with nothing delivered meanwhile, moves it all.
mv "$M/srv1/alice" "$M/srv2/"
check "the retried mv succeeds" test $? = 0
check "the target has every message, unchanged" \
    test "$(tree_of "$M/srv2/alice")" = "$(cat "$WORK/alice.tree")"
check "the move is done" moves_are "$S" 'm["mailbox"] == "alice" and m["state"] == "done"' \
    target srv2
unmount "$S"

[ $FAILS = 0 ]
