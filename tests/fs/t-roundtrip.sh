#!/bin/bash
# Round trips through a real mount (issue 2): every message of the test
# data (eml files, the Maildir tree, mbox files) copied in with cp -a, rsync
# -aX and tar --xattrs; flags, special-use and ACLs set; then backed up out of
# the mount with each tool into a plain folder and restored into an empty
# mailbox of the other store.  Bytes (diff -r), names, sizes and mtimes
# (find -printf) and extended attributes (getfattr -d) must all be equal.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1 srv2 || exit 1
M=$S/mnt
mount_fg "$S" || exit 1

# files: name, type, size, mtime; directories: name, type, mtime (a
# directory's size is the filesystem's business, not the mail's).
listing() { (cd "$1" && find . -type f -printf '%P f %s %T@\n' -o -type d -printf '%P d %T@\n' | sort); }
# in a fixed order: getfattr -R walks in readdir order, which differs by filesystem
xattrs() { (cd "$1" && find . -print0 | sort -z | xargs -0 getfattr -d -m '^user\.' 2>/dev/null); }
same() { # description dirA dirB
    diff -r "$2" "$3" >/dev/null && ok "$1: bytes" || not_ok "$1: bytes (diff -r)"
    [ "$(listing "$2")" = "$(listing "$3")" ] && ok "$1: names, sizes, mtimes" ||
        { not_ok "$1: names, sizes, mtimes"; diff <(listing "$2") <(listing "$3") | head -5; }
}

n_src=$(find "$TD" -type f | wc -l)
echo "# $n_src messages of test data"

# --- in: one mailbox per tool, folder "mail" holds the whole test data tree
for tool in cp rsync tar; do
    mkdir -p "$M/srv1/$tool/mail"
    case $tool in
    cp) cp -a "$TD/." "$M/srv1/$tool/mail/" ;;
    rsync) rsync -aX "$TD/" "$M/srv1/$tool/mail/" ;;
    tar) tar -C "$TD" --xattrs -cf - . | tar -C "$M/srv1/$tool/mail" --xattrs -xf - ;;
    esac
    check "$tool into the mount exits 0" test $? = 0
    same "$tool in" "$TD" "$M/srv1/$tool/mail"
done

# Metadata the backups must carry: flags, special-use, ACLs.
for tool in cp rsync tar; do
    i=0
    while IFS= read -r -d '' f; do
        i=$((i + 1))
        case $((i % 3)) in
        0) setfattr -n user.mail.flags -v '\Seen' "$f" ;;
        1) setfattr -n user.mail.flags -v '\Seen \Flagged $Label1' "$f" ;;
        esac
        [ $i -ge 40 ] && break
    done < <(find "$M/srv1/$tool/mail/eml" -type f -print0)
    setfattr -n user.mail.special-use -v '\Archive' "$M/srv1/$tool/mail"
    printf 'bob lrs\nanyone l\n' | setfattr -n user.mail.acl -v "$(cat)" "$M/srv1/$tool"
done
check "flags read back" test "$(getfattr --absolute-names --only-values -n user.mail.flags "$(find "$M/srv1/cp/mail/eml" -type f | head -1)")" = '\Seen \Flagged $Label1'

# --- out into a plain folder, back into an empty mailbox of srv2
B1=$WORK/backup
for tool in cp rsync tar; do
    mkdir -p "$B1/$tool"
    case $tool in
    cp) cp -a "$M/srv1/$tool/." "$B1/$tool/" ;;
    rsync) rsync -aX "$M/srv1/$tool/" "$B1/$tool/" ;;
    tar) tar -C "$M/srv1/$tool" --xattrs --xattrs-include='user.*' -cf "$B1/$tool.tar" . &&
         tar -C "$B1/$tool" --xattrs --xattrs-include='user.*' -xf "$B1/$tool.tar" ;;
    esac
    check "$tool backup out of the mount exits 0" test $? = 0
    same "$tool backup" "$M/srv1/$tool" "$B1/$tool"
    check "$tool backup keeps the xattrs" test "$(xattrs "$M/srv1/$tool")" = "$(xattrs "$B1/$tool")"

    mkdir "$M/srv2/$tool"
    case $tool in
    cp) cp -a "$B1/$tool/." "$M/srv2/$tool/" ;;
    rsync) rsync -aX "$B1/$tool/" "$M/srv2/$tool/" ;;
    tar) tar -C "$M/srv2/$tool" --xattrs --xattrs-include='user.*' -xf "$B1/$tool.tar" ;;
    esac
    check "$tool restore into srv2 exits 0" test $? = 0
    same "$tool restore" "$M/srv1/$tool" "$M/srv2/$tool"
    check "$tool restore keeps the xattrs" test "$(xattrs "$M/srv1/$tool")" = "$(xattrs "$M/srv2/$tool")"
    check "$tool restore: getfattr -d of a message" \
        test "$(cd "$M/srv1/$tool" && getfattr -d mail/eml/*/* 2>/dev/null | md5sum)" = \
             "$(cd "$M/srv2/$tool" && getfattr -d mail/eml/*/* 2>/dev/null | md5sum)"
done

# --- rsync's patterns: temp file then rename (the default), --inplace,
# and an unchanged tree transfers nothing.
stats() { rsync "$@" --stats | awk -F': ' '/Number of regular files transferred/ {print $2}'; }
check "second rsync -a of an unchanged tree transfers nothing" \
    test "$(stats -aX "$B1/rsync/" "$M/srv2/rsync/")" = 0
f=$(cd "$B1/rsync" && find mail/eml -type f | head -1)
printf 'X-Changed: yes\n' | cat - "$B1/rsync/$f" >"$WORK/changed" && cp "$WORK/changed" "$B1/rsync/$f"
touch -d '2001-02-03 04:05:06' "$B1/rsync/$f"
check "rsync (temp file + rename) sends one changed file" test "$(stats -aX "$B1/rsync/" "$M/srv2/rsync/")" = 1
check "... which arrives whole" cmp -s "$B1/rsync/$f" "$M/srv2/rsync/$f"
check "... with its mtime" test "$(stat -c %Y "$M/srv2/rsync/$f")" = "$(stat -c %Y "$B1/rsync/$f")"
printf 'X-Again: yes\n' >>"$B1/rsync/$f"
touch -d '2002-02-03 04:05:06' "$B1/rsync/$f"
check "rsync --inplace sends one changed file" test "$(stats -aX --inplace "$B1/rsync/" "$M/srv2/rsync/")" = 1
check "... rewritten in place, whole" cmp -s "$B1/rsync/$f" "$M/srv2/rsync/$f"
check "... and a third rsync transfers nothing" test "$(stats -aX "$B1/rsync/" "$M/srv2/rsync/")" = 0

unmount "$S"
[ $FAILS = 0 ]
