#!/bin/bash
# Malformed user.mail.* values get EINVAL through the mount and leave the
# old value as it was; values that only spell the same set another way
# (repeated flags, runs of spaces, \seen) are stored in the canonical form
# getfattr then shows (issue 10, "Bad input gets a clear error").
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1 || exit 1
M=$S/mnt
mount_fg "$S" || exit 1
mkdir -p "$M/srv1/alice/INBOX"
MSG=$M/srv1/alice/INBOX/1.eml
cp "$(find "$TD/eml" -name "*.eml" -type f | sort | head -1)" "$MSG"
MB=$M/srv1/alice

get() { getfattr --absolute-names --only-values -n "$1" "$2"; }

# refused NAME FILE VALUE DESCRIPTION: EINVAL, and the value before stays.
refused() {
    local name=$1 file=$2 value=$3 what=$4 before after out
    before=$(get "$name" "$file" 2>/dev/null)
    out=$(setfattr -n "$name" -v "$value" "$file" 2>&1)
    after=$(get "$name" "$file" 2>/dev/null)
    if printf '%s' "$out" | grep -q 'Invalid argument' && [ "$before" = "$after" ]; then
        ok "$what: EINVAL, value kept"
    else
        not_ok "$what: '$out', value '$before' -> '$after'"
    fi
}

setfattr -n user.mail.flags -v '\Seen $Label1' "$MSG"
check "a valid flags value is stored" test "$(get user.mail.flags "$MSG")" = '\Seen $Label1'
refused user.mail.flags "$MSG" '\Bogus' 'unknown system flag \Bogus'
refused user.mail.flags "$MSG" '\Recent' '\Recent (not storable)'
refused user.mail.flags "$MSG" '\Seen ünï' 'non-ASCII keyword'
refused user.mail.flags "$MSG" "$(printf '\\Seen\nfoo')" 'newline inside'
refused user.mail.flags "$MSG" "$(printf '\\Seen\tfoo')" 'tab inside'
refused user.mail.flags "$MSG" 'a]b' 'atom-special ]'
refused user.mail.flags "$MSG" 'foo"bar' 'atom-special "'
refused user.mail.flags "$MSG" 'key\word' 'backslash inside a keyword'
refused user.mail.flags "$MSG" '(bad' 'atom-special ('
refused user.mail.flags "$MSG" 'x{3}' 'atom-special {'

# Duplicates and spacing: normalised (the choice made, see the notes).
setfattr -n user.mail.flags -v '  \seen $Label1 \Seen  $label1 \FLAGGED ' "$MSG"
check "repeated flags and spaces normalised: '$(get user.mail.flags "$MSG")'" \
    test "$(get user.mail.flags "$MSG")" = '\Seen $Label1 \Flagged'
setfattr -n user.mail.flags -v '' "$MSG"
check "an empty flags value is stored empty" test "$(get user.mail.flags "$MSG" | wc -c)" = 0
setfattr -n user.mail.flags -v '\Seen' "$MSG"

# deliver --flags takes the same values
E=$(find "$TD/eml" -name "*.eml" -type f | sort | head -1)
"$B/mailfsctl" -c "$S/conf" deliver --flags '\Bogus' srv1 alice <"$E" 2>"$WORK/err"
rc=$?
check "deliver --flags '\\Bogus' refused: exit 64 (usage), one line ($(cat "$WORK/err"))" \
    bash -c "[ $rc = 64 ] && [ \$(wc -l <'$WORK/err') = 1 ] && grep -q 'not storable IMAP flags' '$WORK/err'"
"$B/mailfsctl" -c "$S/conf" deliver --flags '\seen \Seen' srv1 alice <"$E"
last=$(ls -t "$M/srv1/alice/INBOX" | head -1)
check "deliver --flags normalised" test "$(get user.mail.flags "$M/srv1/alice/INBOX/$last")" = '\Seen'

# special-use
mkdir "$MB/Sent"
setfattr -n user.mail.special-use -v '\Sent  \Sent' "$MB/Sent"
check "special-use repeated: normalised" test "$(get user.mail.special-use "$MB/Sent")" = '\Sent'
refused user.mail.special-use "$MB/Sent" '\Bogus' 'unknown special-use'

# ACLs
setfattr -n user.mail.acl -v "$(printf 'bob lrs\nanyone l')" "$MB"
check "a valid ACL is stored" test "$(get user.mail.acl "$MB")" = "$(printf 'bob lrs\nanyone l')"
refused user.mail.acl "$MB" 'bob lr extra' 'ACL line with an extra field'
refused user.mail.acl "$MB" 'bob  lr' 'ACL line with two spaces'
refused user.mail.acl "$MB" ' bob lr' 'ACL line with a leading space'
refused user.mail.acl "$MB" "$(printf 'bob lr\nbob lrs')" 'repeated grantee'
refused user.mail.acl "$MB" "$(printf 'bob lr\n\nanyone l')" 'blank line'
refused user.mail.acl "$MB" "$(printf 'caf\xe9 lr')" 'non-UTF-8 grantee'
refused user.mail.acl "$MB" 'bob lrZ' 'rights letter outside RFC 4314'
refused user.mail.acl "$MB" 'bob lr9' 'digit right'
refused user.mail.acl "$MB" 'bob' 'grantee without rights'
refused user.mail.acl "$MB" "$(printf 'bob\tlr')" 'tab as separator'
setfattr -n user.mail.acl -v "$(printf 'ünï lr\n-bob w\n')" "$MB"
check "UTF-8 grantee and negative rights stored, final newline dropped" \
    test "$(getfattr --absolute-names --only-values -n user.mail.acl "$MB" | tail -c 1 | od -An -c | tr -d " ")" = w
check "ACL read back" test "$(get user.mail.acl "$MB")" = "$(printf 'ünï lr\n-bob w')"

# A refused value in a tool's restore does not stop the others (rsync -X).
unmount "$S"
[ $FAILS = 0 ]
