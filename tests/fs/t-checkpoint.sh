#!/bin/bash
# The sqlite store's log is folded into the database by a thread of its
# own (issue 14), not by the write that crosses the threshold: after a
# copy into the mount, the database file takes the copied pages once the
# store is quiet, with no write asking for it, while the mount goes on
# serving; and what was copied is all there after an unclean end.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1 || exit 1
M=$S/mnt
mount_fg "$S" || exit 1
mkdir -p "$M/srv1/alice/INBOX" || exit 1
# Fewer than the log's threshold (32 MB of log, about 350 of these):
# only the quiet store's checkpoint can fold them in.
find "$TD/eml" -type f | sort | head -150 >"$WORK/files"
i=0
while read -r f; do
    cp "$f" "$M/srv1/alice/INBOX/m$i.eml" || break
    i=$((i + 1))
done <"$WORK/files"
check "the test mail copied in ($i messages)" test "$i" = "$(wc -l <"$WORK/files")"
bytes=$(xargs -d '\n' du -sbc <"$WORK/files" | tail -1 | cut -f1)
db_size() { stat -c %s "$S/srv1.db"; }
folded() { [ "$(db_size)" -gt $((bytes / 2)) ]; }
before=$(db_size)
check "right after the copy the pages are in the log, not yet in the database" \
    test "$before" -lt $((bytes / 2))
wait_for "the log folded into the database while the store is quiet" folded &&
    ok "database $before -> $(db_size) bytes, no write asked for it"
check "the mount still serves" cmp -s "$(head -1 "$WORK/files")" "$M/srv1/alice/INBOX/m0.eml"
# SIGKILL now: the log and the database together hold everything
pkill -KILL -f "mailfs -f $S/conf"
wait_for "daemon gone" not_running "$S"
wait 2>/dev/null
fusermount3 -u "$M" 2>/dev/null
mount_fg "$S" || exit 1
check "every message there after a kill" test "$(ls "$M/srv1/alice/INBOX" | wc -l)" = "$i"
n=0
while read -r f; do
    cmp -s "$f" "$M/srv1/alice/INBOX/m$n.eml" || break
    n=$((n + 1))
done <"$WORK/files"
check "and byte for byte" test "$n" = "$i"
unmount "$S"
exit $((FAILS > 0))
