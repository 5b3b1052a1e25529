#!/bin/bash
# The cutover must not grow with the mailbox (issue 13): on the live site,
# with nobody writing, mv of a 1,000-message mailbox and of a 20,000-
# message one through the mount.  What is asserted is the cutover's
# shape, which no machine's speed changes: one final pass, and it finds
# nothing to copy or change (the delta passes before the lock did it).
# The lock window (journal lock_ms) is printed with the passes: the 1 s
# target is scripts/bench online's, never a timed test's.
set -u
. "$(dirname "$0")/../lib.sh"
SITE_USERS="small big" SITE_FILL=0
. "$(dirname "$0")/../site.sh"

S=$WORK/site
M=$S/mnt
site_start "$S" || exit 1
site_big small 1000 || exit 1
site_big big 20000 || exit 1

# lock USER: lock_ms of USER's move, then its passes (PHASE:MESSAGES:SECONDS)
lock() {
    "$B/mailfsctl" -c "$S/conf" moves --json | python3 -c '
import json, sys
m = [x for x in json.load(sys.stdin) if x["mailbox"] == sys.argv[1]]
print("%.0f" % m[0]["lock_ms"], " ".join("%s:%d:%.2fs" % (p["phase"], p["messages"] + p["updated"], p["seconds"])
                                      for p in m[0]["passes"]) if m else "-1")' "$1"
}
for u in small big; do
    check "mv of $u" mv "$M/srv1/$u" "$M/srv2/"
    check "$u is on srv2" test "$(site_backend "$u")" = srv2
done
read -r small_ms small_passes <<<"$(lock small)"
read -r big_ms big_passes <<<"$(lock big)"
echo "# lock window: 1,000 messages $small_ms ms (passes $small_passes)"
echo "# lock window: 20,000 messages $big_ms ms (passes $big_passes)"
finals() { tr ' ' '\n' <<<"$1" | grep '^final:' | paste -sd' '; }
check "the 20,000-message cutover is one final pass that finds nothing ($(finals "$big_passes"))" \
    test "$(finals "$big_passes" | sed 's/:[0-9.]*s//g')" = "final:0"
check "... as the 1,000-message one ($(finals "$small_passes"))" \
    test "$(finals "$small_passes" | sed 's/:[0-9.]*s//g')" = "final:0"
check "the mailbox is on srv2 with its 20,000 messages" test "$(site_imap uids big INBOX | wc -l)" = 20000
site_stop
exit $((FAILS > 0))
