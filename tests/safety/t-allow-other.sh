#!/bin/bash
# The mount is closed by default.  Mounted by root with -o allow_other,
# mailfs adds default_permissions, so the kernel checks modes and owners:
# an unprivileged user (made here with useradd, removed by the trap) is
# refused each of read, write, unlink, chown, setxattr of user.mail.acl
# and user.mail.flags, mkdir of a mailbox, mv of a mailbox to another
# store and renames within one, on root's mail.  New messages, folders
# and mailboxes made through the mount are 0600/0700 under umask 022;
# an explicit chmod keeps any mode (cp -a).  chmod, chown and utimens of
# a store's directory survive a remount (a pst store's: EROFS); the top
# directory refuses a change of mode or owner with EPERM (a no-op
# succeeds) and keeps a new mtime while mounted.
set -u
. "$(dirname "$0")/../lib.sh"
umask 022

U=mailfs-t$$
trap 'userdel -f "$U" >/dev/null 2>&1; cleanup' EXIT
wait_for "useradd $U (/etc/passwd may be locked by another test)" \
    useradd -M -N -s /bin/sh "$U" || exit 1
uid=$(id -u "$U")
as_user() { runuser -u "$U" -- "$@"; }

S=$WORK/site
site "$S" srv1 srv2 || { not_ok "site"; exit 1; }
chmod 755 "$WORK" "$S" # the user must reach the mount point
mkdir -p "$S/pst" && cp "$TESTDATA/pst/pstsdk_sample1.pst" "$S/pst/"
printf '[store archive]\nbackend = pst\npath = pst\n' >>"$S/conf"
M=$S/mnt
mount_open() { # the daemon in the foreground, -o allow_other after the arguments
    setsid "$B/mailfs" -f "$S/conf" "$M" -o allow_other 2>>"$S/daemon.log" &
    wait_for "mount of $S" mountpoint -q "$M"
}
mount_open || exit 1
check "allow_other: the daemon says it added default_permissions" \
    grep -q "default_permissions added" "$S/daemon.log"
check "... and the kernel has it" \
    bash -c "grep ' $M ' /proc/mounts | grep -q default_permissions"

# --- new nodes are private (umask 022 would give 0644/0755)
msgs=("$TD"/eml/cpython/*)
mkdir "$M/srv1/alice"
mkdir "$M/srv1/alice/INBOX"
cp "${msgs[0]}" "$WORK/one.eml" && chmod 644 "$WORK/one.eml" # as a user's new file is
cp "$WORK/one.eml" "$M/srv1/alice/INBOX/one.eml"
echo "Subject: hi" >"$M/srv1/alice/INBOX/two.eml"
check "new mailbox is 0700" test "$(stat -c %a "$M/srv1/alice")" = 700
check "new folder is 0700" test "$(stat -c %a "$M/srv1/alice/INBOX")" = 700
check "new message (cp of a 0644 file) is 0600" test "$(stat -c %a "$M/srv1/alice/INBOX/one.eml")" = 600
check "new message (shell redirection) is 0600" test "$(stat -c %a "$M/srv1/alice/INBOX/two.eml")" = 600
chmod 640 "$M/srv1/alice/INBOX/two.eml"
check "an explicit chmod keeps its mode" test "$(stat -c %a "$M/srv1/alice/INBOX/two.eml")" = 640
mkdir -p "$WORK/tree/Sent"
cp "${msgs[1]}" "$WORK/tree/Sent/m.eml"
chmod 644 "$WORK/tree/Sent/m.eml" && chmod 751 "$WORK/tree/Sent"
cp -a "$WORK/tree/Sent" "$M/srv1/alice/"
check "cp -a keeps a tree's modes (0751 folder, 0644 message)" \
    test "$(stat -c %a "$M/srv1/alice/Sent") $(stat -c %a "$M/srv1/alice/Sent/m.eml")" = "751 644"

# --- the other user against root's mail.  The mailbox and folder are
# opened (0755) so that each refusal is the message's or directory's own.
chmod 755 "$M/srv1/alice" "$M/srv1/alice/INBOX"
F=$M/srv1/alice/INBOX/one.eml
before=$(sha256sum <"$F")
refused() { # description expected-text command...: as the user, fails with that text
    local what=$1 text=$2; shift 2
    if as_user "$@" >"$WORK/out" 2>&1; then
        not_ok "$what: refused (it succeeded)"
    elif grep -q "$text" "$WORK/out"; then
        ok "$what: refused ($text)"
    else
        not_ok "$what: refused with '$text' (got: $(tail -1 "$WORK/out"))"
    fi
}
mkdir -p "$M/srv1/bob/INBOX" && cp "$WORK/one.eml" "$M/srv1/bob/INBOX/"
refused "listing of a new (0700) mailbox" "Permission denied" ls "$M/srv1/bob"
refused "reaching into it" "Permission denied" cat "$M/srv1/bob/INBOX/one.eml"
refused "read of a 0600 message" "Permission denied" cat "$F"
refused "write to it" "Permission denied" sh -c "echo x >>'$F'"
refused "truncate it" "Permission denied" truncate -s 0 "$F"
refused "unlink it" "Permission denied" rm -f "$F"
refused "chown it" "Operation not permitted" chown "$U" "$F"
refused "chmod it" "Operation not permitted" chmod 666 "$F"
refused "setfattr user.mail.flags" "Permission denied" setfattr -n user.mail.flags -v '\Deleted' "$F"
refused "setfattr user.mail.acl on the mailbox" "Permission denied" \
    setfattr -n user.mail.acl -v "$U lrswipkxtea" "$M/srv1/alice"
refused "mkdir of a mailbox in a store" "Permission denied" mkdir "$M/srv1/$U"
refused "mkdir of a folder in the mailbox" "Permission denied" mkdir "$M/srv1/alice/Evil"
refused "a new message in the folder" "Permission denied" cp "${msgs[2]}" "$M/srv1/alice/INBOX/"
refused "mv of a message within the folder" "Permission denied" mv "$F" "$M/srv1/alice/INBOX/x.eml"
refused "mv of the mailbox within the store" "Permission denied" mv "$M/srv1/alice" "$M/srv1/mine"
refused "mv of the mailbox to another store" "Permission denied" mv "$M/srv1/alice" "$M/srv2/"
refused "rmdir of the mailbox's folder" "Permission denied" rmdir "$M/srv1/alice/Sent"
check "the message is untouched" test "$(sha256sum <"$F")" = "$before"
check "... and has no flags" bash -c "! getfattr --only-values -n user.mail.flags '$F' 2>/dev/null | grep -q Deleted"
check "the mailbox is still in srv1, nowhere else" \
    test -d "$M/srv1/alice/INBOX" -a ! -e "$M/srv2/alice" -a ! -e "$M/srv1/mine"
check "its ACL is unchanged (none)" bash -c "! getfattr -n user.mail.acl '$M/srv1/alice' 2>/dev/null | grep -q '$U'"
check "the kernel checks modes, it does not refuse everything: a 0640 message is not readable" \
    bash -c "! runuser -u '$U' -- cat '$M/srv1/alice/INBOX/two.eml' >/dev/null 2>&1"
chmod 644 "$M/srv1/alice/INBOX/two.eml"
check "... and a 0644 one is" as_user cat "$M/srv1/alice/INBOX/two.eml" >/dev/null
check "root still reads the 0600 message" cmp -s "$F" "${msgs[0]}"

# --- a store's directory keeps chmod, chown and utimens
chmod 750 "$M/srv1"
chown "$uid:$uid" "$M/srv1"
touch -m -d @1500000000 "$M/srv1"
check "store directory: chmod, chown, touch answer at once" \
    test "$(stat -c '%a %u %g %Y' "$M/srv1")" = "750 $uid $uid 1500000000"
check "store directory srv2 is unchanged (0755 root)" test "$(stat -c '%a %u' "$M/srv2")" = "755 0"
chmod 700 "$M/archive" 2>"$WORK/pst.err"
check "chmod of a pst store's directory fails" test $? -ne 0
check "... with EROFS (a pst store is read-only)" grep -q "Read-only file system" "$WORK/pst.err"
check "... and it stays 0555" test "$(stat -c %a "$M/archive")" = 555
# --- the top directory: a change would be forgotten, so it is refused
chmod 700 "$M" 2>"$WORK/top.err"
check "chmod of the top directory fails" test $? -ne 0
check "... with EPERM" grep -q "Operation not permitted" "$WORK/top.err"
check "... and the top stays 0755" test "$(stat -c %a "$M")" = 755
check "chmod of the top to its own mode succeeds" chmod 755 "$M"
check "chown of the top to its own owner succeeds" chown 0:0 "$M"
check "chown of the top to another user fails" bash -c "! chown '$uid' '$M' 2>/dev/null"
check "chgrp of the top to another group fails" bash -c "! chgrp '$uid' '$M' 2>/dev/null"
# its mtime is the mount time until set; set, it is kept (in the site's
# journal), so that tar -x and rsync -a of a backup of the whole mount
# (which set it) succeed and a remount still shows it
check "touch of the top sets its mtime" touch -m -d @1400000000 "$M"
check "... which reads back" test "$(stat -c %Y "$M")" = 1400000000
# (the top and srv1 themselves, and alice's tree: the pst store is read-only)
tar -C "$M" -cf "$WORK/all.tar" --no-recursion . ./srv1 --recursion ./srv1/alice
check "tar -x of a backup of the whole mount, top included, exits 0" tar -C "$M" -xpf "$WORK/all.tar"
check "... the message is still whole" cmp -s "$F" "${msgs[0]}"
fusermount3 -u "$M"
wait_for "daemon of $S to exit" not_running "$S"

mount_open || exit 1
check "after a remount the store directory keeps mode, owner and mtime" \
    test "$(stat -c '%a %u %g %Y' "$M/srv1")" = "750 $uid $uid 1500000000"
check "... and the top keeps the mtime it was given" test "$(stat -c %Y "$M")" = 1400000000
check "... its listing in the top agrees" \
    test "$(find "$M" -mindepth 1 -maxdepth 1 -name srv1 -printf '%m %U %T@')" = "750 $uid 1500000000.0000000000"
check "... and the user who owns it now may make a mailbox in it" as_user mkdir "$M/srv1/$U"
check "... which is 0700 and the user's" test "$(stat -c '%a %u' "$M/srv1/$U")" = "700 $uid"
fusermount3 -u "$M"
wait_for "daemon of $S to exit" not_running "$S"

[ $FAILS = 0 ]
