#!/bin/bash
# Readers racing unlink and replace through the mount (DESIGN 3: a reader
# never sees a half message; issue 11: readers own their bytes).  2,000
# rounds in C (tests/tools/reader-race.c), so that the open and the change
# really meet: against an unlink a reader gets the whole message or ENOENT;
# against a rename over it, the whole old or new message; against a
# truncate to its own size (the store commits the same bytes as new content
# and frees the old), the whole message at every open.  Never 0 bytes, a
# short read or an error.  Fails on main before issue 11's reader fix: the
# daemon opens the reader before it pins the content, and a commit in
# between frees it (a short read, a few times per run).
set -u
. "$(dirname "$0")/../lib.sh"
RACE=${MAILFS_BUILD:-$ROOT/build}/tests/reader-race
[ -x "$RACE" ] || { not_ok "no $RACE (ninja -C build)"; exit 1; }

S=$WORK/site
site "$S" srv1 || exit 1
M=$S/mnt
mount_fg "$S" || exit 1
mkdir -p "$M/srv1/race/INBOX" || exit 1
# A message of 177 KB: it takes
# many reads, and 2,000 rounds of it stay under half a minute.
msg=$TD/eml/mimekit/benchmarks/startrek.eml
[ -f "$msg" ] || msg=$(find "$TD/eml" -type f -size +100k | sort | head -1)

"$RACE" "$M/srv1/race/INBOX" "$msg" "${ROUNDS:-2000}" >"$WORK/race.out" 2>&1
rc=$?
sed 's/^/    /' "$WORK/race.out"
check "2000 rounds: every read got a whole message (or ENOENT at an unlink)" test $rc = 0
check "... and most got a whole message (the race was run, not skipped)" \
    awk '/^rounds/ {exit !($6 > $2 / 2)}' "$WORK/race.out"
check "the mailbox is empty again" test -z "$(ls -A "$M/srv1/race/INBOX")"
check "the daemon is still serving" test -d "$M/srv1/race/INBOX"
unmount "$S"
[ $FAILS = 0 ]
