#!/bin/bash
# A mailbox never silently becomes a folder (issue 10).  Every rename that
# would put a mailbox below store level, or a folder at store level, in
# the same store or across stores, fails with EPERM (or EEXIST/ENOTEMPTY
# when that is the truth) instead of EXDEV, on which mv would copy and
# delete: the mailbox would become a folder of another mailbox, its ACL
# dropped, nothing journaled.  Afterwards nothing was copied: the source
# is intact with its ACL, the target unchanged, and the journal empty.
# Renames that are fine still work: a mailbox within its store, a move
# between stores, messages and folders by copy across stores.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1 srv2 || exit 1
M=$S/mnt
mount_fg "$S" || exit 1

# mailbox PATH GRANTEE: a mailbox with INBOX (three messages), a nested
# folder with one, and an ACL naming GRANTEE.
mailbox() {
    mkdir -p "$1/INBOX" "$1/Archive/2019" || return 1
    local i=0 f
    for f in "$TD"/eml/*/*; do
        [ -f "$f" ] || continue
        cp -a "$f" "$1/INBOX/$i.eml" || return 1
        i=$((i + 1))
        [ $i -ge 3 ] && break
    done
    cp -a "$f" "$1/Archive/2019/old.eml" &&
        setfattr -n user.mail.acl -v "$2 lrs" "$1" &&
        setfattr -n user.mail.special-use -v '\Archive' "$1/Archive"
}
mailbox "$M/srv1/a" anna && mailbox "$M/srv2/b" bert && mailbox "$M/srv2/carol" cora &&
    mailbox "$M/srv2/alice" alma || { not_ok "test mailboxes made"; exit 1; }

# tree_of and every extended attribute, of one directory
state() { tree_of "$1" && (cd "$1" && find . -print0 | sort -z | xargs -0 getfattr -d -m '^user\.' 2>/dev/null); }
snapshot() { for s in srv1 srv2; do echo "== $s"; ls "$M/$s"; state "$M/$s"; done; }
moves() { moves_count "$S"; }

before=$(snapshot)
check "the ACL of srv1/a is set" test "$(getfattr --only-values -n user.mail.acl "$M/srv1/a" 2>/dev/null)" = "anna lrs"

# refused DESCRIPTION ERRNO-TEXT mv-ARGS...: mv fails with that error and
# nothing anywhere changed: both stores as before, no journal entry.
refused() {
    local what=$1 err=$2 out rc
    shift 2
    out=$(mv "$@" 2>&1)
    rc=$?
    if [ $rc != 0 ] && printf '%s' "$out" | grep -q "$err"; then
        ok "$what: $out"
    else
        not_ok "$what: mv exited $rc: $out"
    fi
    local now
    now=$(snapshot)
    if [ "$now" = "$before" ]; then
        ok "$what: nothing copied or changed"
    else
        not_ok "$what: the stores changed"
        diff <(echo "$before") <(echo "$now") | head -8
        before=$now
    fi
    check "$what: no journal entry" test "$(moves)" = 0
}

EPERM="Operation not permitted"
# A mailbox onto an existing mailbox of another store: mv renames it into
# b/, which would make it a folder of b.
refused "mv srv1/a srv2/b (b exists)" "$EPERM" "$M/srv1/a" "$M/srv2/b"
refused "mv srv1/a srv2/b/ (into a mailbox of another store)" "$EPERM" "$M/srv1/a" "$M/srv2/b/"
refused "mv srv1/a srv2/b/INBOX/ (into a folder of another store)" "$EPERM" "$M/srv1/a" "$M/srv2/b/INBOX/"
refused "mv -T srv1/a srv2/b (onto an existing mailbox)" "File exists" -T "$M/srv1/a" "$M/srv2/b"
refused "mv srv2/carol srv2/alice/ (into a mailbox of its store)" "$EPERM" "$M/srv2/carol" "$M/srv2/alice/"
refused "mv srv2/carol srv2/alice/Archive/2019/ (into a folder of its store)" "$EPERM" \
    "$M/srv2/carol" "$M/srv2/alice/Archive/2019/"
refused "mv -T srv2/carol srv2/alice (onto a mailbox that is not empty)" "Directory not empty" \
    -T "$M/srv2/carol" "$M/srv2/alice"
refused "mv srv1/a/INBOX srv1/ (a folder to store level)" "$EPERM" "$M/srv1/a/INBOX" "$M/srv1/"
refused "mv srv1/a/Archive/2019 srv1/ (a subfolder to store level)" "$EPERM" \
    "$M/srv1/a/Archive/2019" "$M/srv1/"
refused "mv srv1/a/INBOX srv2/ (a folder to another store's level)" "$EPERM" "$M/srv1/a/INBOX" "$M/srv2/"
refused "mv -T srv1/a/INBOX srv2/b (a folder onto another store's mailbox)" "$EPERM" \
    -T "$M/srv1/a/INBOX" "$M/srv2/b"

# What still works.
check "a mailbox renamed in its store" mv "$M/srv2/carol" "$M/srv2/carol2"
check "the renamed mailbox keeps its ACL" \
    test "$(getfattr --only-values -n user.mail.acl "$M/srv2/carol2" 2>/dev/null)" = "cora lrs"
check "a message copied across stores" mv "$M/srv1/a/INBOX/0.eml" "$M/srv2/b/INBOX/moved.eml"
check "a folder copied across stores (a folder stays a folder)" mv -T "$M/srv1/a/Archive" "$M/srv2/b/Archive-a"
check "the copied folder is whole" test -f "$M/srv2/b/Archive-a/2019/old.eml"
m_before=$(stat -c %.9Y "$M/srv1/a/INBOX/1.eml")
t_move=$(date +%s.%N)
check "a mailbox moved between stores" mv "$M/srv1/a" "$M/srv2/"
check "a moved message keeps its mtime" test "$(stat -c %.9Y "$M/srv2/a/INBOX/1.eml")" = "$m_before"
check "a moved message's ctime is the move's time" \
    awk -v c="$(stat -c %.9Z "$M/srv2/a/INBOX/1.eml")" -v t="$t_move" 'BEGIN { exit !(c >= t) }'
check "the move is journaled" test "$(moves)" = 1
check "the moved mailbox keeps its ACL" \
    test "$(getfattr --only-values -n user.mail.acl "$M/srv2/a" 2>/dev/null)" = "anna lrs"
check "the moved mailbox is gone from srv1" test ! -e "$M/srv1/a"

unmount "$S"
[ $FAILS = 0 ]
