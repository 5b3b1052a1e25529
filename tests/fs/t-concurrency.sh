#!/bin/bash
# Four writers and two readers at once on one mailbox; afterwards every
# message is there, byte-identical, and the counts and bytes are right.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1 || exit 1
M=$S/mnt
mount_fg "$S" || exit 1
mkdir -p "$M/srv1/shared/INBOX"
mapfile -t files < <(find "$TD/eml" -type f | sort | head -200)

writer() { # n
    for i in "${!files[@]}"; do cp "${files[$i]}" "$M/srv1/shared/INBOX/w$1-$i.eml" || return 1; done
}
# A reader checks every message it sees: listed means committed, so each
# must read whole and byte-identical (w<writer>-<i>.eml is files[i]).  It
# fails with the number of messages that did not.
reader() {
    local bad=0 f i
    shopt -s nullglob
    for _ in $(seq 20); do
        for f in "$M"/srv1/shared/INBOX/*; do
            i=${f##*-}; i=${i%.eml}
            cmp -s "${files[$i]}" "$f" || { echo "reader: $f differs or unreadable"; bad=$((bad + 1)); }
        done
        ls -l "$M/srv1/shared/INBOX" >/dev/null || bad=$((bad + 1))
    done
    return $((bad > 0))
}
pids=()
for w in 1 2 3 4; do writer $w & pids+=($!); done
for r in 1 2; do reader & pids+=($!); done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
check "all writers and readers finished without error (every message a reader listed read whole)" test $rc = 0
check "message count is 4 x ${#files[@]}" test "$(ls "$M/srv1/shared/INBOX" | wc -l)" = $((4 * ${#files[@]}))
want=$(( $(cat "${files[@]}" | wc -c) * 4 ))
check "byte count is right ($want)" test "$(cat "$M"/srv1/shared/INBOX/* | wc -c)" = "$want"
bad=0
for w in 1 2 3 4; do
    for i in "${!files[@]}"; do cmp -s "${files[$i]}" "$M/srv1/shared/INBOX/w$w-$i.eml" || bad=$((bad + 1)); done
done
check "every message byte-identical" test $bad = 0
check "mailfsctl store list agrees" \
    bash -c "'$B/mailfsctl' -c '$S/conf' store list | awk '\$1 == \"srv1\" {print \$4}' | grep -qx $((4 * ${#files[@]}))"
unmount "$S"
[ $FAILS = 0 ]
