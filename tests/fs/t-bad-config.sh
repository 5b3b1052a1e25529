#!/bin/bash
# Configurations that cannot work are refused with one line naming the
# file, the group and the key, and nothing is mounted (issue 10): a group
# written twice, two stores on one file (however spelled), a journal,
# spool or store under the mount point (today the daemon deadlocks on its
# own mount), a store path that is a directory, a mount point mailfs
# already serves, a journal that cannot be written.  A [directory] with a
# store that has no directory = key mounts with a warning.
set -u
. "$(dirname "$0")/../lib.sh"
trap 'chattr -i "$WORK"/ro/journal.db 2>/dev/null; cleanup' EXIT

S=$WORK/site
site "$S" srv1 srv2 || exit 1
M=$S/mnt
mkdir -p "$WORK/m"

# refuse WHAT CONF MOUNT PATTERN: mailfs exits 1 within 30 s with one line
# matching PATTERN, and nothing new is mounted at MOUNT.
refuse() {
    local what=$1 conf=$2 mnt=$3 pattern=$4 out rc before
    before=$(grep -c " $mnt " /proc/self/mountinfo)
    out=$(timeout 30 "$B/mailfs" "$conf" "$mnt" 2>&1)
    rc=$?
    if [ $rc = 1 ] && [ "$(printf '%s\n' "$out" | wc -l)" = 1 ] &&
        printf '%s' "$out" | grep -q -- "$pattern" &&
        [ "$(grep -c " $mnt " /proc/self/mountinfo)" = "$before" ]; then
        ok "$what: $out"
    else
        not_ok "$what (rc=$rc): $out"
        [ "$(grep -c " $mnt " /proc/self/mountinfo)" = "$before" ] || fusermount3 -u "$mnt"
    fi
}
# ctl_refuses WHAT CONF PATTERN: mailfsctl fails with the same line.
ctl_refuses() {
    local out
    out=$("$B/mailfsctl" -c "$2" store list 2>&1 >/dev/null)
    if [ $? != 0 ] && [ "$(printf '%s\n' "$out" | wc -l)" = 1 ] && printf '%s' "$out" | grep -q -- "$3"; then
        ok "mailfsctl, $1: $out"
    else
        not_ok "mailfsctl, $1: $out"
    fi
}

c=$S/c
printf '[store srv1]\npath = srv1.db\n[store srv2]\npath = srv2.db\n[store srv1]\nread-only = yes\n' >"$c.1"
refuse "group written twice" "$c.1" "$WORK/m" "$c.1: \[store srv1\]: group written twice (lines 1 and 5)"
ctl_refuses "group written twice" "$c.1" "\[store srv1\]: group written twice"

printf '[store srv1]\npath = srv1.db\n[store other]\npath = ./srv1.db\n' >"$c.2"
refuse "two stores on one file (./)" "$c.2" "$WORK/m" "$c.2: \[store other\]: path: $S/srv1.db is also the path of \[store srv1\]"
ctl_refuses "two stores on one file (./)" "$c.2" "\[store other\]: path: .* is also the path of \[store srv1\]"
ln -s "$S/srv1.db" "$WORK/link.db"
printf '[store srv1]\npath = srv1.db\n[store other]\npath = %s/link.db\n' "$WORK" >"$c.3"
refuse "two stores on one file (symlink)" "$c.3" "$WORK/m" "\[store other\]: path: .* is also the path of \[store srv1\]"
mkdir -p "$S/sub"
printf '[store srv1]\npath = srv1.db\n[store other]\npath = sub/../srv1.db\n' >"$c.4"
refuse "two stores on one file (sub/..)" "$c.4" "$WORK/m" "\[store other\]: path: .* is also the path of \[store srv1\]"

mkdir -p "$S/adir"
printf '[store srv1]\npath = adir\n' >"$c.5"
refuse "store path that is a directory" "$c.5" "$WORK/m" "$c.5: \[store srv1\]: path: $S/adir is a directory"
ctl_refuses "store path that is a directory" "$c.5" "\[store srv1\]: path: .* is a directory"

# Paths under the mount point: refused before anything is opened (no
# deadlock: refuse gives mailfs 30 s).
printf '[mailfs]\njournal = mnt/journal.db\n[store srv1]\npath = srv1.db\n' >"$c.6"
refuse "journal under the mount point" "$c.6" "$M" "\[mailfs\]: journal: $M/journal.db is under the mount point $M"
printf '[mailfs]\njournal = journal.db\nspool = %s/./mnt/spool\n[store srv1]\npath = srv1.db\n' "$S" >"$c.7"
refuse "spool under the mount point" "$c.7" "$M" "\[mailfs\]: spool: $M/spool is under the mount point"
printf '[store srv1]\npath = srv1.db\n[store in]\npath = mnt/srv1/in.db\n' >"$c.8"
refuse "store under the mount point" "$c.8" "$M" "\[store in\]: path: $M/srv1/in.db is under the mount point"
ln -s "$M" "$WORK/mlink"
printf '[mailfs]\njournal = %s/mlink/j.db\n[store srv1]\npath = srv1.db\n' "$WORK" >"$c.9"
refuse "journal under the mount point through a symlink" "$c.9" "$M" "\[mailfs\]: journal: $M/j.db is under the mount point"
check "mailfsctl takes a journal path that only the mount point makes wrong" \
    bash -c "'$B/mailfsctl' -c '$c.6' store list >/dev/null"

# A mount point mailfs already serves.
mount_fg "$S" || exit 1
refuse "mount point already mounted by mailfs" "$S/conf" "$M" "$M: already a mailfs mount (of $S/conf)"
check "the first mount still serves" test -d "$M/srv1"
unmount "$S"

# A journal that cannot be written fails the mount, not the first move.
mkdir -p "$WORK/ro" && cp "$S/journal.db" "$WORK/ro/journal.db" 2>/dev/null || sqlite3 "$WORK/ro/journal.db" 'select 1' >/dev/null
printf '[mailfs]\njournal = %s/ro/journal.db\n[store srv1]\npath = %s/srv1.db\n' "$WORK" "$S" >"$c.10"
if chattr +i "$WORK/ro/journal.db" 2>/dev/null; then
    refuse "immutable journal" "$c.10" "$WORK/m" "journal.db: the move journal cannot be written (.*Operation not permitted)"
    chattr -i "$WORK/ro/journal.db"
else # tmpfs before Linux 6.0 has no immutable flag; the read-only mount below still runs
    ok "skipped: chattr +i not supported on the filesystem of $WORK"
fi
mkdir -p "$WORK/rodir"
mount --bind "$WORK/ro" "$WORK/rodir" && mount -o remount,ro,bind "$WORK/rodir"
printf '[mailfs]\njournal = %s/rodir/journal.db\n[store srv1]\npath = %s/srv1.db\n' "$WORK" "$S" >"$c.11"
refuse "journal on a read-only filesystem" "$c.11" "$WORK/m" "journal.db: the move journal cannot be written (.*Read-only file system)"
umount "$WORK/rodir"

# [directory] with a store that has no directory = key: a warning, a mount.
{
    printf '[mailfs]\njournal = journal.db\n'
    printf '[directory]\nuri = ldap://127.0.0.1:9\nbase = dc=example,dc=org\n'
    printf '[store srv1]\npath = srv1.db\ndirectory = mailHost=srv1\n[store srv2]\npath = srv2.db\n'
} >"$S/conf"
: >"$S/daemon.log"
mount_fg "$S" || exit 1
check "mounted with a store without directory =" test -d "$M/srv2"
check "the warning names the store and the key" \
    grep -q "\[store srv2\]: no directory = key although \[directory\] is configured" "$S/daemon.log"
check "no warning for the store that has one" bash -c "! grep -q '\[store srv1\]: no directory' '$S/daemon.log'"
unmount "$S"
[ $FAILS = 0 ]
