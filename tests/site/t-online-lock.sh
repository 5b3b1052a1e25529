#!/bin/bash
# The lock window must not grow with the mailbox (issue 13: under 1 s
# whatever the size).  On the live site, with nobody writing: mv of a
# 1,000-message mailbox and of a 20,000-message one through the mount;
# the journal's lock_ms of each is printed with the cutover's passes, and
# the big one's must be under 1000 ms.
#
# Shows finding 3 of /work/notes/online-bench.md: the cutover's final pass
# lists and compares the whole mailbox under the lock even when nothing
# changed, so the lock grows with the mailbox (about 1 s per 10,000
# messages here; 8.9 s at 50,000 in scripts/bench online).
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
check "the lock window of the 20,000-message move is under 1000 ms ($big_ms)" test "$big_ms" -lt 1000
check "the mailbox is on srv2 with its 20,000 messages" test "$(site_imap uids big INBOX | wc -l)" = 20000
site_stop
exit $((FAILS > 0))
