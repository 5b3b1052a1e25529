#!/bin/bash
# scripts/mailfs-move-batch through a real mount: 60 mailboxes in batches
# of 25, 2 at a time, all moved and the summary right; --dry-run changes
# nothing; two mailboxes made to fail (name taken in the target, target
# too small): --keep-going moves the rest and reports both with their
# errno text, without it the script stops; --backup leaves readable tars.
set -u
. "$(dirname "$0")/../lib.sh"
BATCHSH=$ROOT/scripts/mailfs-move-batch

S=$WORK/site
mkdir -p "$S/small"
# the target store on a 64 MB filesystem, so that one mailbox cannot fit
mount -t tmpfs -o size=64m mailfs-test "$S/small" || { not_ok "tmpfs"; exit 1; }
trap 'umount -l "$S/small" 2>/dev/null; cleanup' EXIT
mkdir -p "$S/mnt"
printf '[mailfs]\njournal = journal.db\n[store srv1]\npath = srv1.db\n[store srv2]\npath = small/srv2.db\n' >"$S/conf"
for s in srv1 srv2; do "$B/mailfsctl" -c "$S/conf" store create $s >/dev/null; done
M=$S/mnt
mount_fg "$S" || exit 1
export MAILFSCTL=$B/mailfsctl
mk() { # name: a mailbox of 3 messages in srv1
    mkdir -p "$M/srv1/$1/INBOX" && cp "$TD"/eml/cpython/msg_0[345].txt "$M/srv1/$1/INBOX/"
}
for i in $(seq -w 1 60); do mk "u$i"; done
seq -w 1 60 | sed 's/^/u/' >"$WORK/list"
printf '# a comment line\n\n' >>"$WORK/list"

# --- dry run
tree_of "$M/srv1" >"$WORK/before"
sh "$BATCHSH" --dry-run -f "$WORK/list" "$M" srv2 >"$WORK/dry.out" 2>&1
check "dry run: exit 0" test $? = 0
check "... would move 60" grep -Eq "would move +60" "$WORK/dry.out"
check "... nothing changed" diff "$WORK/before" <(tree_of "$M/srv1")
check "... nothing journaled" test "$(moves_count "$S")" = 0

# --- 60 mailboxes, batches of 25, 2 at a time
sh "$BATCHSH" --batch 25 --parallel 2 -f "$WORK/list" "$M" srv2 >"$WORK/run.out" 2>&1
check "60 mailboxes: exit 0" test $? = 0
check "... one line per mailbox" test "$(grep -Ec '^[^ ]+ +moved +[0-9]+ msgs' "$WORK/run.out")" = 60
check "... three batches" test "$(grep -c '^-- batch' "$WORK/run.out")" = 3
check "... summary: moved 60, failed 0" bash -c "grep -Eq 'moved +60' '$WORK/run.out' && grep -Eq 'failed +0' '$WORK/run.out'"
check "... summary: 180 messages" grep -q "180 messages" "$WORK/run.out"
check "... all 60 in srv2, none left in srv1" \
    test "$(ls "$M/srv2" | wc -l) $(ls "$M/srv1" | wc -l)" = "60 0"
check "... 60 moves done in the journal" test "$(moves_count "$S" 'm["state"] == "done"')" = 60

# --- two failures, --keep-going
for i in $(seq 1 10); do mk "k$i"; done
mkdir "$M/srv2/k3"                                   # name taken in the target
for f in Sent Archive; do mkdir -p "$M/srv1/k7/$f"; cp -a "$TD/eml/." "$M/srv1/k7/$f/"; done
cp -a "$TD/eml/." "$M/srv1/k7/INBOX/"                 # ~31 MB: needs 78 MB free
k7n=$(find "$M/srv1/k7" -type f | wc -l)
sh "$BATCHSH" --keep-going --batch 4 --parallel 2 "$M" srv2 k1 k2 k3 k4 k5 k6 k7 k8 k9 k10 >"$WORK/kg.out" 2>&1
check "--keep-going with two failures: exit 1" test $? = 1
check "... the other 8 moved" test "$(grep -Ec '^[^ ]+ +moved +[0-9]+ msgs' "$WORK/kg.out")" = 8
check "... k3 reported with its errno text" grep -Eq "^k3 +failed .*File exists" "$WORK/kg.out"
check "... k7 reported with its errno text" grep -Eq "^k7 +failed .*No space left on device" "$WORK/kg.out"
check "... summary lists both" bash -c "sed -n '/^failures/,\$p' '$WORK/kg.out' | grep -c '^  k[37] ' | grep -qx 2"
check "... k7 is still in srv1, whole, and not in srv2" \
    test "$(find "$M/srv1/k7" -type f | wc -l)" = "$k7n" -a ! -e "$M/srv2/k7"

# --- without --keep-going: stops
for i in $(seq 1 8); do mk "s$i"; done
mkdir "$M/srv2/s2"
sh "$BATCHSH" --batch 2 --parallel 1 "$M" srv2 s1 s2 s3 s4 s5 s6 s7 s8 >"$WORK/stop.out" 2>&1
check "a failure without --keep-going: exit 1" test $? = 1
check "... s2 reported" grep -Eq "^s2 +failed .*File exists" "$WORK/stop.out"
check "... nothing after it started" test -d "$M/srv1/s3" -a -d "$M/srv1/s8"
check "... the summary says how many were not started" grep -Eq "not started +6" "$WORK/stop.out"

# --- backups
sh "$BATCHSH" --backup "$WORK/bk" "$M" srv2 s3 s4 >"$WORK/bk.out" 2>&1
check "--backup: exit 0" test $? = 0
check "... a tar per mailbox, with the messages and their xattrs" \
    bash -c "tar --xattrs -tf '$WORK/bk/s3.tar' | grep -q 's3/INBOX/msg_03.txt' && test -f '$WORK/bk/s4.tar'"
mkdir "$WORK/restore"
tar --xattrs -xf "$WORK/bk/s3.tar" -C "$WORK/restore"
check "... restorable, byte-identical" diff -r "$WORK/restore/s3" "$M/srv2/s3"

# --- a migration batch: prepared (users keep working), then completed
for i in 1 2 3; do mk "p$i"; done
sh "$BATCHSH" --prepare "$M" srv2 p1 p2 p3 >"$WORK/prep.out" 2>&1
check "--prepare: exit 0 ($(tail -1 "$WORK/prep.out"))" test $? = 0
check "... each one prepared" test "$(grep -Ec '^p[123] +prepared ' "$WORK/prep.out")" = 3
check "... the summary says so" grep -Eq "^  prepared +3" "$WORK/prep.out"
check "... the mailboxes stay in srv1, in use" test -d "$M/srv1/p1" -a ! -e "$M/srv2/p1"
check "... their moves are prepared in the journal" \
    test "$(moves_count "$S" 'm["state"] == "prepared"')" = 3
cp "$TD/eml/cpython/msg_03.txt" "$M/srv1/p2/INBOX/after-prepare.eml"
p2n=$(find "$M/srv1/p2" -type f | wc -l)
sh "$BATCHSH" --complete "$M" srv2 p1 p2 >"$WORK/comp.out" 2>&1
check "--complete with mv: exit 0" test $? = 0
check "... moved, with what arrived after the prepare" \
    test "$(find "$M/srv2/p2" -type f | wc -l)" = "$p2n" -a -f "$M/srv2/p2/INBOX/after-prepare.eml"
sh "$BATCHSH" --complete --engine mailfsctl "$M" srv2 p3 >"$WORK/comp2.out" 2>&1
check "--complete --engine mailfsctl: exit 0" test $? = 0
wait_for "p3 in srv2 through the mount" test -d "$M/srv2/p3"
check "no move is left prepared" test "$(moves_count "$S" 'm["state"] == "prepared"')" = 0

check "--help and --version" bash -c "sh '$BATCHSH' --help | grep -q usage && sh '$BATCHSH' --version | grep -q mailfs-move-batch"
check "bad arguments: exit 2" bash -c "sh '$BATCHSH' --parallel x '$M' srv2 a 2>/dev/null; test \$? = 2"
unmount "$S"
[ $FAILS = 0 ]
