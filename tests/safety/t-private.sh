#!/bin/bash
# Every file mailfs writes on disk holds mail or its metadata, so each is
# created 0600 whatever the umask (022 here, the usual one): the stores
# made by `store create`, their -wal and -shm files, the move journal and
# its -wal and -shm (made at the first mount), the spool file of a big
# message while it is being written (seen through the daemon's
# /proc/PID/fd), and the tars of `mailfs-move-batch --backup`.  A store
# or journal that another user can read gets one warning line naming it.
set -u
. "$(dirname "$0")/../lib.sh"
umask 022

S=$WORK/site
mkdir -p "$S/spool"
site "$S" srv1 srv2 || { not_ok "site"; exit 1; }
# the spool in the site, so that the test finds the daemon's file there
sed -i "s|^journal = journal.db$|&\nspool = $S/spool|" "$S/conf"
C() { "$B/mailfsctl" -c "$S/conf" "$@"; }
mode() { stat -c %a "$1"; }
M=$S/mnt

check "store create: srv1.db is 0600 under umask 022" test "$(mode "$S/srv1.db")" = 600
check "store create: srv2.db is 0600 under umask 022" test "$(mode "$S/srv2.db")" = 600
check "no journal before the first mount or move" test ! -e "$S/journal.db"

mount_fg "$S" || exit 1
mkdir -p "$M/srv1/alice/INBOX" "$M/srv1/bob/INBOX"
cp "$TD"/eml/cpython/* "$M/srv1/alice/INBOX/"
cp "$TD"/eml/cpython/* "$M/srv1/bob/INBOX/"
mv "$M/srv1/alice" "$M/srv2/"
check "a move through the mount worked" test -d "$M/srv2/alice/INBOX"

# every database file while mounted: stores and journal, with their logs
for f in srv1.db srv1.db-wal srv1.db-shm srv2.db srv2.db-wal srv2.db-shm \
    journal.db journal.db-wal journal.db-shm; do
    if [ -e "$S/$f" ]; then
        check "mounted: $f is 0600" test "$(mode "$S/$f")" = 600
    else
        not_ok "mounted: $f exists (WAL mode keeps it while open)"
    fi
done

# A big message's spool: the daemon holds it open (unlinked) while the
# writer has the file open; it is past the 1 MiB kept in memory.
pid=$(pgrep -f "mailfs -f $S/conf" | head -1)
exec 3>"$M/srv1/bob/INBOX/big.eml"
head -c 4194304 /dev/urandom >&3
spool_fds() { # the daemon's descriptors on files in the spool folder
    for fd in /proc/"$pid"/fd/*; do
        case $(readlink "$fd") in "$S/spool/"*) echo "$fd" ;; esac
    done
}
wait_for "the daemon's spool file" test -n "$(spool_fds)"
for fd in $(spool_fds); do
    check "spool file $(readlink "$fd") is 0600" test "$(stat -L -c %a "$fd")" = 600
done
exec 3>&-
check "the big message arrived whole" test "$(stat -c %s "$M/srv1/bob/INBOX/big.eml")" = 4194304

# mailfs-move-batch --backup: the tars hold mail
printf 'bob\n' >"$WORK/list"
sh "$ROOT/scripts/mailfs-move-batch" --backup "$WORK/backup" -f "$WORK/list" "$M" srv2 >"$WORK/batch.out" 2>&1
check "batch with --backup moved bob" test -d "$M/srv2/bob/INBOX"
check "the backup bob.tar is 0600" test "$(mode "$WORK/backup/bob.tar")" = 600
# an older backup left 0644 by an earlier version is made private too
mkdir -p "$M/srv1/carol/INBOX" && cp "$TD"/eml/cpython/* "$M/srv1/carol/INBOX/"
: >"$WORK/backup/carol.tar" && chmod 644 "$WORK/backup/carol.tar"
printf 'carol\n' >"$WORK/list"
sh "$ROOT/scripts/mailfs-move-batch" --backup "$WORK/backup" -f "$WORK/list" "$M" srv2 >>"$WORK/batch.out" 2>&1
check "an overwritten 0644 backup carol.tar is 0600" test "$(mode "$WORK/backup/carol.tar")" = 600
unmount "$S"

check "after unmount: the stores and the journal are 0600" \
    test "$(stat -c %a "$S/srv1.db" "$S/srv2.db" "$S/journal.db" | sort -u)" = 600
check "no warning about modes for private files" bash -c "! grep -q 'group or others' '$S/daemon.log'"

# an existing store and journal opened to others get one warning line each
chmod 644 "$S/srv1.db" "$S/journal.db"
: >"$S/daemon.log"
mount_fg "$S" || exit 1
check "the mount still works with a 0644 store" test -d "$M/srv2/alice/INBOX"
unmount "$S"
check "one warning naming the 0644 store" \
    test "$(grep -c "$S/srv1.db: the store is readable or writable by group or others" "$S/daemon.log")" = 1
check "one warning naming the 0644 journal" \
    test "$(grep -c "$S/journal.db: the move journal is readable or writable by group or others" "$S/daemon.log")" = 1
check "no warning for the private store" bash -c "! grep -q '$S/srv2.db:' '$S/daemon.log'"
C store list >/dev/null 2>"$WORK/ctl.err"
check "mailfsctl warns too" grep -q "srv1.db: the store is readable" "$WORK/ctl.err"

[ $FAILS = 0 ]
