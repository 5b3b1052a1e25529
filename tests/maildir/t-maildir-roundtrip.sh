#!/bin/bash
# Backups and restores of maildir stores (issue 12): the eml test data copied
# into a mailbox of a maildir store (maildir++ and fs layouts) with cp -a,
# rsync -aX and tar --xattrs, given flags, keywords, special-use and an ACL,
# backed up out of the mount into a plain folder and restored into an empty
# mailbox of the other maildir store.  Bytes, names, sizes, mtimes and the
# user.mail.* attributes are all equal; on disk every message is one file
# in a cur/ with its flags as info letters, owned like its mailbox root.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" md@maildir mdfs@maildir-fs || exit 1
M=$S/mnt
mount_fg "$S" || exit 1
EML=$TD/eml

listing() { (cd "$1" && find . -type f -printf '%P f %s %T@\n' -o -type d -printf '%P d %T@\n' | sort); }
xattrs() { (cd "$1" && find . -print0 | sort -z | xargs -0 getfattr -d -m '^user\.' 2>/dev/null); }
# flags compare as sets: a Maildir keeps them as sorted info letters
xattrs_sorted() { xattrs "$1" | sed -E '/^user.mail.flags=/{s/^user.mail.flags="(.*)"$/\1/;s/ /\n/g}' | sort; }
same() { # description dirA dirB
    diff -r "$2" "$3" >/dev/null && ok "$1: bytes" || not_ok "$1: bytes (diff -r)"
    [ "$(listing "$2")" = "$(listing "$3")" ] && ok "$1: names, sizes, mtimes" ||
        { not_ok "$1: names, sizes, mtimes"; diff <(listing "$2") <(listing "$3") | head -5; }
}
n_src=$(find "$EML" -type f | wc -l)
echo "# $n_src messages of test data"

for tool in cp rsync tar; do
    mkdir -p "$M/md/$tool/mail"
    case $tool in
    cp) cp -a "$EML/." "$M/md/$tool/mail/" ;;
    rsync) rsync -aX "$EML/" "$M/md/$tool/mail/" ;;
    tar) tar -C "$EML" --xattrs -cf - . | tar -C "$M/md/$tool/mail" --xattrs -xf - ;;
    esac
    check "$tool into a maildir store exits 0" test $? = 0
    same "$tool in" "$EML" "$M/md/$tool/mail"
    n=$(find "$S/md/$tool" -path '*/cur/*' -type f | wc -l)
    check "$tool: each message is one file in a cur/ ($n)" test "$n" = "$n_src"
done

# Flags (system flags and keywords), special-use, ACLs.
for tool in cp rsync tar; do
    i=0
    while IFS= read -r -d '' f; do
        i=$((i + 1))
        case $((i % 4)) in
        0) setfattr -n user.mail.flags -v '\Seen' "$f" ;;
        1) setfattr -n user.mail.flags -v '\Seen \Flagged $Label1' "$f" ;;
        2) setfattr -n user.mail.flags -v '\Answered \Draft \Deleted Junk' "$f" ;;
        esac
        [ $i -ge 40 ] && break
    done < <(find "$M/md/$tool/mail/spamassassin" -type f -print0)
    setfattr -n user.mail.special-use -v '\Archive' "$M/md/$tool/mail"
    setfattr -n user.mail.acl -v "$(printf 'bob lrs\nanyone l')" "$M/md/$tool"
done
f1=$(find "$M/md/cp/mail/spamassassin" -type f | head -1)
check "flags read back" test "$(getfattr --absolute-names --only-values -n user.mail.flags "$f1")" = '\Flagged \Seen $Label1'
check "flags are info letters on disk" test -n "$(find "$S/md/cp" -path '*/cur/*:2,FSa' | head -1)"
check "keywords are in dovecot-keywords" \
    test -n "$(find "$S/md/cp" -name dovecot-keywords -exec grep -lx '0 $Label1' {} + | head -1)"
check "the ACL is dovecot-acl" test "$(cat "$S/md/cp/dovecot-acl")" = "$(printf 'user=bob lrs\nanyone l')"
check "special-use is kept beside the folder" grep -qx '\\Archive' "$S/md/cp/.mail/mailfs-special-use"

owner=$(stat -c %u:%g "$S/md/cp")
check "files are owned like the mailbox root" \
    test -z "$(find "$S/md/cp" ! -user "${owner%:*}" | head -1)"

B1=$WORK/backup
for tool in cp rsync tar; do
    mkdir -p "$B1/$tool"
    case $tool in
    cp) cp -a "$M/md/$tool/." "$B1/$tool/" ;;
    rsync) rsync -aX "$M/md/$tool/" "$B1/$tool/" ;;
    tar) tar -C "$M/md/$tool" --xattrs --xattrs-include='user.*' -cf "$B1/$tool.tar" . &&
         tar -C "$B1/$tool" --xattrs --xattrs-include='user.*' -xf "$B1/$tool.tar" ;;
    esac
    check "$tool backup out of the mount exits 0" test $? = 0
    same "$tool backup" "$M/md/$tool" "$B1/$tool"
    check "$tool backup keeps the xattrs" test "$(xattrs "$M/md/$tool")" = "$(xattrs "$B1/$tool")"

    mkdir "$M/mdfs/$tool"
    case $tool in
    cp) cp -a "$B1/$tool/." "$M/mdfs/$tool/" ;;
    rsync) rsync -aX "$B1/$tool/" "$M/mdfs/$tool/" ;;
    tar) tar -C "$M/mdfs/$tool" --xattrs --xattrs-include='user.*' -xf "$B1/$tool.tar" ;;
    esac
    check "$tool restore into the fs-layout store exits 0" test $? = 0
    same "$tool restore" "$M/md/$tool" "$M/mdfs/$tool"
    if [ "$(xattrs_sorted "$M/md/$tool")" = "$(xattrs_sorted "$M/mdfs/$tool")" ]; then
        ok "$tool restore keeps the xattrs"
    else
        not_ok "$tool restore keeps the xattrs"
        diff <(xattrs "$M/md/$tool") <(xattrs "$M/mdfs/$tool") | head -20
    fi
done
check "the fs layout nests folders as folders" test -d "$S/mdfs/cp/mail/spamassassin/spam/cur"

unmount "$S"
mount_fg "$S" || exit 1
same "after a remount" "$M/md/cp" "$M/mdfs/cp"
unmount "$S"
echo "$FAILS failed"
[ "$FAILS" = 0 ]
