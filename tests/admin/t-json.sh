#!/bin/bash
# Every --json output of mailfsctl (moves, check, deleted) is JSON that
# python3 -m json.tool accepts, for mailboxes named café, with quotes,
# backslashes, control characters and bytes that are not UTF-8; and each
# name reads back as its bytes (a byte that is not UTF-8 as the lone
# surrogate of Python's surrogateescape).  Also: the journal's states and
# steps read back by their names, and check's table keeps one line per
# finding.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1 srv2 || exit 1
# retain-days = 0: retained copies expire at once, so check has findings
# naming the mailboxes.
sed -i 's/^journal = journal.db$/journal = journal.db\nretain-days = 0/' "$S/conf"
M=$S/mnt
C() { "$B/mailfsctl" -c "$S/conf" "$@"; }
mount_fg "$S" || exit 1
EML=$(find "$TD/eml" -name '*.eml' -type f | sort | head -2)

names=("café" 'quo"te' 'back\slash' $'ctrl\x01\ttab\nnl' $'caf\xe9 latin1' $'mixed "\\\x7f\xff')
for n in "${names[@]}"; do
    mkdir -p "$M/srv1/$n/INBOX" "$M/srv1/$n/Old"
    for f in $EML; do cp "$f" "$M/srv1/$n/INBOX/"; done
    cp "$(echo "$EML" | head -1)" "$M/srv1/$n/Old/"
done
# The expected names, as Python sees bytes (a file of NUL-separated names).
printf '%s\0' "${names[@]}" >"$WORK/names"

for n in "${names[@]}"; do
    mv "$M/srv1/$n" "$M/srv2/" || not_ok "mv of a mailbox named $(printf '%q' "$n")"
done
# What is deleted in srv2 (one message, one folder per mailbox) for `deleted`.
for n in "${names[@]}"; do
    rm -f "$M/srv2/$n/INBOX/$(ls "$M/srv2/$n/INBOX" | head -1)"
    rm -rf "$M/srv2/$n/Old"
done

# valid FILE: python3 -m json.tool accepts it.
valid() { python3 -m json.tool "$1" >/dev/null; }
# has FILE KEY: every expected name is the KEY of some object, byte for byte.
has() {
    python3 - "$1" "$2" "$WORK/names" <<'EOF'
import json, sys
rows = json.load(open(sys.argv[1]))
want = set(open(sys.argv[3], 'rb').read().split(b'\0')[:-1])
got = set(r[sys.argv[2]].encode('utf-8', 'surrogateescape') for r in rows)
missing = want - got
if missing:
    print('missing:', missing, 'got:', got)
sys.exit(1 if missing else 0)
EOF
}

C moves --json >"$WORK/moves.json"
check "moves --json: json.tool accepts it" valid "$WORK/moves.json"
check "moves --json: every mailbox name, byte for byte" has "$WORK/moves.json" mailbox
check "moves --json: states and steps by name" python3 -c "
import json
rows = json.load(open('$WORK/moves.json'))
assert rows and all(r['state'] == 'done' and r['step'] == 'finished' for r in rows), rows"

C deleted --json >"$WORK/deleted.json"
check "deleted --json: json.tool accepts it" valid "$WORK/deleted.json"
check "deleted --json: every mailbox name, byte for byte" has "$WORK/deleted.json" mailbox
C deleted --json srv2 "$(printf '%s' "${names[4]}")" >"$WORK/deleted1.json"
check "deleted --json STORE MAILBOX (not UTF-8): json.tool accepts it" valid "$WORK/deleted1.json"

# retained copies with retain-days = 0 expire within a second
expired() {
    C check --json >"$WORK/check.json" 2>/dev/null
    [ "$(grep -c '"expired-copy"' "$WORK/check.json")" = ${#names[@]} ]
}
wait_for "check to find every retained copy expired" expired
check "check --json: json.tool accepts it" valid "$WORK/check.json"
check "check --json: every mailbox name, byte for byte" has "$WORK/check.json" mailbox
C check >"$WORK/check.txt" 2>/dev/null
check "check's table: one line per finding, names escaped" \
    test "$(grep -c . "$WORK/check.txt")" = $((2 + ${#names[@]}))

# A state this build does not know (a newer journal) is shown as such, and
# neither recovered nor purged.
journal "$S" "update move set state = 'frozen' where id = 1"
C moves --json >"$WORK/moves2.json"
check "a state the build does not know reads as unknown" python3 -c "
import json
rows = json.load(open('$WORK/moves2.json'))
assert [r['state'] for r in rows if r['id'] == 1] == ['unknown'], rows"
C purge --all >/dev/null
check "purge leaves the move of unknown state alone" \
    test "$(journal "$S" "select state from move where id = 1")" = frozen

unmount "$S"
[ $FAILS = 0 ]
