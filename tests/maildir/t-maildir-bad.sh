#!/bin/bash
# Bad input in a maildir store (issue 12): a stray file in cur/, a file name
# without ":2,", a corrupt and a missing dovecot-uidlist, a stale
# dovecot-uidlist.lock, a folder name that is not valid modified UTF-7, a
# message file the daemon may not read, and the notmuch test Maildir with
# files outside cur/ and new/.  Each gets a clear log line (where it is worth
# one), nothing is lost or changed on disk, and the rest of the store is
# served.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" md@maildir nm@maildir-fs || exit 1
M=$S/mnt
D=$S/md
msg() { cat "$(find "$TD/eml/cpython" -type f | sort | sed -n "${1}p")"; }
fp() { (cd "$1" && find . -type f -printf '%P %s\n' | sort && find . -type f -print0 | sort -z | xargs -0 sha256sum); }

# A mailbox as Dovecot would leave it, with defects in some folders.
mkdir -p "$D/kim/cur" "$D/kim/new" "$D/kim/tmp"
for f in .Good .Badlist .Nolist .Locked '.Caf&AOk-' '.Bad&Jjo'; do mkdir -p "$D/kim/$f/cur" "$D/kim/$f/new" "$D/kim/$f/tmp"; done
msg 1 >"$D/kim/cur/1000.M1P1.host,S=$(msg 1 | wc -c):2,S"
msg 2 >"$D/kim/cur/stray-notes.txt"          # no ":2," at all
msg 3 >"$D/kim/new/1001.M2P1.host"
mkdir "$D/kim/cur/a-directory"               # not a message
printf '3 V1700000000 N3\n1 :1000.M1P1.host\n2 :stray-notes.txt\n' >"$D/kim/dovecot-uidlist"
msg 4 >"$D/kim/.Good/cur/2000.M1P1.host:2,"
msg 5 >"$D/kim/.Badlist/cur/3000.M1P1.host:2,"
printf 'this is not a uidlist\n\x00\x01' >"$D/kim/.Badlist/dovecot-uidlist"
msg 6 >"$D/kim/.Nolist/cur/4000.M1P1.host:2,F"
msg 7 >"$D/kim/.Locked/cur/5000.M1P1.host:2,"
# Left by a process of this host that is gone (Dovecot's lock content).
sh -c 'exit 0' & dead=$!; wait $dead
echo "$dead:$(hostname)" >"$D/kim/.Locked/dovecot-uidlist.lock"
touch -d '10 minutes ago' "$D/kim/.Locked/dovecot-uidlist.lock"
msg 8 >"$D/kim/.Caf&AOk-/cur/6000.M1P1.host:2,"
msg 9 >"$D/kim/.Bad&Jjo/cur/7000.M1P1.host:2,"
before=$(fp "$D")
cp -r "$TESTDATA/mail/maildir/notmuch-default" "$S/nm/notmuch"
nm_before=$(fp "$S/nm")

mount_fg "$S" || exit 1
check "the mailbox is listed" test -d "$M/md/kim/INBOX"
check "folders are listed, the bad name raw" \
    test "$(ls "$M/md/kim" | tr '\n' ' ')" = "Bad&Jjo Badlist Café Good INBOX Locked Nolist "
check "the folder with the bad name is read" cmp -s "$M/md/kim/Bad&Jjo/7000.M1P1.host" <(msg 9)
check "a log line names the bad folder name" grep -q 'Bad&Jjo.*not valid modified UTF-7' "$S/daemon.log"
check "a file without :2, is a message" cmp -s "$M/md/kim/INBOX/stray-notes.txt" <(msg 2)
check "a message in new/ is listed" cmp -s "$M/md/kim/INBOX/1001.M2P1.host" <(msg 3)
check "a directory in cur/ is not a message" test ! -e "$M/md/kim/INBOX/a-directory"
check "INBOX has its three messages" test "$(ls "$M/md/kim/INBOX" | wc -l)" = 3
check "a corrupt uidlist's folder is read" cmp -s "$M/md/kim/Badlist/3000.M1P1.host" <(msg 5)
check "a log line names the corrupt uidlist" grep -q 'Badlist/dovecot-uidlist' "$S/daemon.log"
check "flags without a uidlist" test "$(getfattr --only-values -n user.mail.flags "$M/md/kim/Nolist/4000.M1P1.host")" = '\Flagged'
check "reading changed nothing on disk" test "$(fp "$D")" = "$before"

# Writes: refused with EIO where the uidlist is corrupt, fine elsewhere.
if msg 10 >"$M/md/kim/Badlist/new-one" 2>/dev/null; then not_ok "a write into a folder with a corrupt uidlist fails"; else ok "a write into a folder with a corrupt uidlist fails"; fi
check "the corrupt uidlist is untouched" test "$(head -c 21 "$D/kim/.Badlist/dovecot-uidlist")" = "this is not a uidlist"
check "a log line says to repair it" grep -q 'force-resync' "$S/daemon.log"
# A rewrite of a message there fails the same way, and leaves the message
# as it was: before the audit after issue 14 its file was unlinked before
# the uidlist was read, and both versions were lost.
if msg 12 >"$M/md/kim/Badlist/3000.M1P1.host" 2>/dev/null; then
    not_ok "a rewrite in a folder with a corrupt uidlist fails"
else ok "a rewrite in a folder with a corrupt uidlist fails"; fi
check "the message it would have replaced is still in cur/, whole" \
    cmp -s "$D/kim/.Badlist/cur/3000.M1P1.host:2," <(msg 5)
check "and the mount shows it" cmp -s "$M/md/kim/Badlist/3000.M1P1.host" <(msg 5)
msg 10 >"$M/md/kim/Nolist/new-one"
check "a write where there was no uidlist makes one" grep -q ' :new-one$' "$D/kim/.Nolist/dovecot-uidlist"
setfattr -n user.mail.flags -v '\Seen' "$M/md/kim/INBOX/stray-notes.txt"
check "flags on a file without :2, rename it" test -f "$D/kim/cur/stray-notes.txt:2,S"
check "its UID stays" grep -q '^2 :stray-notes.txt' "$D/kim/dovecot-uidlist"
msg 11 >"$M/md/kim/Locked/after-stale-lock"
check "a stale uidlist lock is broken, the write done" test -f "$M/md/kim/Locked/after-stale-lock"
check "the stale lock is gone" test ! -e "$D/kim/.Locked/dovecot-uidlist.lock"
check "the written message has a UID" grep -q ' :after-stale-lock$' "$D/kim/.Locked/dovecot-uidlist"

# The notmuch test Maildir (fs layout): files outside cur/ and new/ are no
# messages for Dovecot nor for mailfs, and stay untouched.
n_nm=$(find "$S/nm/notmuch" -path '*/cur/*' -type f -o -path '*/new/*' -type f | wc -l)
check "notmuch: every message in cur/ and new/ is listed ($n_nm)" \
    test "$(find "$M/nm/notmuch" -type f | wc -l)" = "$n_nm"
bad=0
while IFS= read -r f; do
    rel=${f#"$S/nm/notmuch/"}
    dir=$(dirname "$(dirname "$rel")"); [ "$dir" = . ] && dir=INBOX
    base=$(basename "$rel"); base=${base%%:*}
    cmp -s "$f" "$M/nm/notmuch/$dir/$base" || bad=$((bad + 1))
done < <(find "$S/nm/notmuch" -path '*/cur/*' -type f -o -path '*/new/*' -type f)
check "notmuch: each reads as its file" test "$bad" = 0
check "notmuch: nothing changed on disk" test "$(fp "$S/nm")" = "$nm_before"
unmount "$S"

# A message file the daemon may not read: the daemon runs without the
# capabilities that let root read any file, and one message is another
# user's, private.
US=$WORK/user
mkdir -p "$US/mnt" "$US/md/pat/cur" "$US/md/pat/new" "$US/md/pat/tmp"
printf '[mailfs]\njournal = journal.db\n[store md]\nbackend = maildir\npath = md\n' >"$US/conf"
msg 1 >"$US/md/pat/cur/1.M1P1.host:2,"
msg 2 >"$US/md/pat/cur/2.M1P1.host:2,"
chown nobody "$US/md/pat/cur/2.M1P1.host:2,"
chmod 600 "$US/md/pat/cur/2.M1P1.host:2,"
setsid setpriv --bounding-set=-dac_override,-dac_read_search "$B/mailfs" -f "$US/conf" "$US/mnt" \
    2>>"$US/daemon.log" &
wait_for "the mount without DAC capabilities" mountpoint -q "$US/mnt"
check "the readable message is read" cmp -s "$US/mnt/md/pat/INBOX/1.M1P1.host" "$US/md/pat/cur/1.M1P1.host:2,"
if cat "$US/mnt/md/pat/INBOX/2.M1P1.host" >/dev/null 2>&1; then not_ok "the unreadable message fails to read"; else ok "the unreadable message fails to read"; fi
check "a log line names the unreadable file" grep -q '2.M1P1.host.*permission denied' "$US/daemon.log"
check "the unreadable file is untouched" cmp -s "$US/md/pat/cur/2.M1P1.host:2," <(msg 2)
check "the mailbox is still listed whole" test "$(ls "$US/mnt/md/pat/INBOX" | wc -l)" = 2
unmount "$US"
echo "$FAILS failed"
[ "$FAILS" = 0 ]
