#!/bin/bash
# mailfsctl on maildir stores (issue 12), against a real Dovecot:
#  - undo of a finished move, maildir -> maildir and sqlite -> maildir,
#    brings the mailbox back with what was delivered into the target since
#    (mailfsctl deliver, a cp through the mount, dovecot-lda) and an IMAP
#    client's flag change: Dovecot serves in the source what it served in
#    the target (UIDVALIDITY, UIDs, UIDNEXT, flags, dates, bytes);
#  - purge --all drops the retained copies: their directories are gone;
#  - check finds a duplicate (a stale Dovecot userdb delivering into the
#    old place of a mailbox moved to sqlite) and an orphan lock (an edited
#    mailfs-mailbox), and --fix-orphans settles the lock; a move killed
#    after its copy, its journal deleted: check finds the orphan lock and
#    the hidden copy, --fix-orphans rolls back;
#  - undo of a move whose mailbox left the target since (moved on,
#    renamed, deleted) never makes a second visible copy;
#  - store list counts what is on disk; compact says there is nothing to
#    compact and exits 0; moves shows the moves and their states.
# No directory: no finding here needs one.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../dovecot.sh"

dovecot_start "$WORK/dovecot" || exit 1
S=$WORK/site
site "$S" sq md1@maildir md2@maildir || exit 1
chown "$DOVECOT_UID:$DOVECOT_GID" "$S/md1" "$S/md2"
chmod 755 "$WORK" "$S"
M=$S/mnt
C() { "$B/mailfsctl" -c "$S/conf" "$@"; }

# visible MAILDIR-STORE / retained MAILDIR-STORE: its mailbox directories.
visible() { find "$1" -mindepth 1 -maxdepth 1 -type d ! -name '~mailfs~*'; }
retained() { find "$1" -mindepth 1 -maxdepth 1 -type d -name '~mailfs~retained~*'; }
# msg_files DIR...: the message files of these Maildir roots (cur/ and new/
# of every folder, whatever the layout).
msg_files() { [ $# = 0 ] || find "$@" -type f \( -path '*/cur/*' -o -path '*/new/*' \); }
# human BYTES: as mailfsctl prints sizes (GLib's IEC format: a
# no-break space before the unit).
human() {
    python3 -c '
import sys
n = int(sys.argv[1])
if n < 1024:
    t = "1 byte" if n == 1 else "%d bytes" % n
else:
    v, u = float(n), "bytes"
    for u in ("KiB", "MiB", "GiB", "TiB"):
        v /= 1024
        if v < 1024:
            break
    t = "%.1f\u00a0%s" % (v, u)
sys.stdout.buffer.write(t.encode() + b"\n")' "$1"
}
# count_of FILES-COMMAND...: how many files and their bytes, "N BYTES".
count_of() { "$@" | xargs -r -d '\n' stat -c %s | awk '{n++; b += $1} END {print n + 0, b + 0}'; }
# list_is STORE BACKEND MB MSG BYTES RMB RMSG RBYTES: store list's row
# starts so (its own printf format).
list_is() {
    local want
    want=$(LC_ALL=C printf '%-12s %-7s %9lld %10lld %10s %12lld %12lld %14s' "$1" "$2" "$3" "$4" \
        "$(human "$5")" "$6" "$7" "$(human "$8")")
    C store list | grep -qF -- "$want" && return 0
    echo "    want: $want"
    C store list | grep "^$1 " | sed 's/^/    got:  /'
    return 1
}
# maildir_list_is STORE: store list's counts of a maildir store are the
# files on disk (visible and retained mailboxes apart).
maildir_list_is() {
    local v r
    mapfile -t vis < <(visible "$S/$1")
    mapfile -t ret < <(retained "$S/$1")
    v=$(count_of msg_files "${vis[@]}")
    r=$(count_of msg_files "${ret[@]}")
    list_is "$1" maildir ${#vis[@]} ${v% *} ${v#* } ${#ret[@]} ${r% *} ${r#* }
}
# files_of DIR: the messages of a tree (names, sizes, mtimes, modes,
# checksums), folders left out (new mail dates them).
files_of() {
    (cd "$1" && find . -type f -printf '%P %s %T@ %m\n' | sort &&
        find . -type f -print0 | sort -z | xargs -0 -r sha256sum)
}
msg() { printf 'From: a@example.org\nTo: %s@example.org\nSubject: %s\nMessage-ID: <%s@t>\n\n%s\n' "$1" "$2" "$2" "$2"; }
check_clean() { C check >/dev/null 2>&1; }
snap() { dovecot_snapshot "$1" >"$WORK/$2" || not_ok "doveadm snapshot of $1"; }

# --- alice: Dovecot's fixture in md1; carol: made through the mount in sq
dovecot_user alice "$S/md1" || exit 1
dovecot_fill alice || exit 1
snap alice alice.before
mount_fg "$S" || exit 1
mkdir -p "$M/sq/carol/INBOX" "$M/sq/carol/Archive/2019"
cp -a "$TD/eml/spamassassin/." "$M/sq/carol/INBOX/"
cp -a "$TD/eml/cpython/." "$M/sq/carol/Archive/2019/"
setfattr -n user.mail.flags -v '\Seen $Label1' "$M/sq/carol/INBOX/$(ls "$M/sq/carol/INBOX" | head -1)"
setfattr -n user.mail.special-use -v '\Archive' "$M/sq/carol/Archive"
files_of "$M/sq/carol" >"$WORK/carol.files"
carol_n=$(find "$M/sq/carol" -type f | wc -l)
carol_b=$(find "$M/sq/carol" -type f -printf '%s\n' | awk '{b += $1} END {print b}')

check "store list: md1 counts the files of alice's Maildir" maildir_list_is md1
check "store list: md2 is empty" maildir_list_is md2
check "store list: sq counts carol ($carol_n messages)" list_is sq sqlite 1 "$carol_n" "$carol_b" 0 0 0

# --- the moves, and new mail into the targets
mv "$M/md1/alice" "$M/md2/" || not_ok "mv alice md1 -> md2"
mv "$M/sq/carol" "$M/md2/" || not_ok "mv carol sq -> md2"
alice_id=$(moves_of "$S" 'm["mailbox"] == "alice" and m["state"] == "done"')
carol_id=$(moves_of "$S" 'm["mailbox"] == "carol" and m["state"] == "done"')
check "moves: both moves done ($alice_id, $carol_id)" test -n "$alice_id" -a -n "$carol_id"
check "moves lists alice md1 -> md2 done" bash -c "'$B/mailfsctl' -c '$S/conf' moves | grep -Eq '^$alice_id +alice +md1 +md2 +done '"
check "moves lists carol sq -> md2 done" bash -c "'$B/mailfsctl' -c '$S/conf' moves | grep -Eq '^$carol_id +carol +sq +md2 +done '"
dovecot_user alice "$S/md2" || exit 1
dovecot_user carol "$S/md2" || exit 1
snap alice alice.moved
check "Dovecot serves alice in md2 as it did in md1" diff "$WORK/alice.before" "$WORK/alice.moved"

alice_inbox=$(dovecot_imap uids alice INBOX | wc -l)
alice_archive=$(dovecot_imap uids alice Archive | wc -l)
msg alice 'after-1 mailfsctl deliver' | C deliver md2 alice INBOX || not_ok "mailfsctl deliver alice"
msg alice 'after-2 through the mount' >"$M/md2/alice/Archive/after-2.eml" || not_ok "cp alice"
msg alice 'after-3 dovecot-lda' | dovecot_lda alice || not_ok "dovecot-lda alice"
uid=$(dovecot_imap uids alice INBOX | awk "NR == 1")
dovecot_imap store alice INBOX "$uid" +FLAGS '\Flagged' >/dev/null || not_ok "IMAP STORE alice"
msg carol 'after-1 mailfsctl deliver' | C deliver md2 carol || not_ok "mailfsctl deliver carol"
msg carol 'after-2 through the mount' >"$M/md2/carol/Archive/2019/after-2.eml" || not_ok "cp carol"
msg carol 'after-3 dovecot-lda' | dovecot_lda carol || not_ok "dovecot-lda carol"
snap alice alice.target
snap carol carol.target
check "Dovecot sees the new mail of alice in md2 (INBOX 2 more, Archive 1)" \
    test "$(dovecot_imap uids alice INBOX | wc -l) $(dovecot_imap uids alice Archive | wc -l)" = \
    "$((alice_inbox + 2)) $((alice_archive + 1))"

check "store list: md2 holds both, counted as on disk" maildir_list_is md2
check "store list: md1 has alice's retained copy" maildir_list_is md1
check "store list: sq has carol's retained copy" list_is sq sqlite 0 0 0 1 "$carol_n" "$carol_b"

# --- undo, maildir -> maildir: alice back in md1 with everything new
C undo "$alice_id" >"$WORK/undo-alice.out" 2>&1
rc=$?
check "undo alice: exit 0 ($(cat "$WORK/undo-alice.out"))" test $rc = 0
check "undo alice: in md1 again, not in md2" test -d "$M/md1/alice" -a ! -e "$M/md2/alice"
check "undo alice: the three new messages came along" \
    test "$(grep -rl 'Subject: after-' "$M/md1/alice" | wc -l)" = 3
dovecot_user alice "$S/md1" || exit 1
snap alice alice.undone
check "undo alice: Dovecot serves in md1 what it served in md2 (UIDs, flags, dates, bytes)" \
    diff "$WORK/alice.target" "$WORK/alice.undone"
check "undo alice: force-resync finds nothing to repair" dovecot_resync_clean alice

# --- undo, sqlite -> maildir: carol back in sq with everything new
C undo "$carol_id" >"$WORK/undo-carol.out" 2>&1
rc=$?
check "undo carol: exit 0 ($(cat "$WORK/undo-carol.out"))" test $rc = 0
check "undo carol: in sq again, not in md2" test -d "$M/sq/carol" -a ! -e "$M/md2/carol"
check "undo carol: the three new messages came along" \
    test "$(grep -rl 'Subject: after-' "$M/sq/carol" | wc -l)" = 3
check "undo carol: every original message is back, unchanged" \
    test -z "$(comm -23 <(sort "$WORK/carol.files") <(files_of "$M/sq/carol" | sort))"
check "undo carol: and nothing else but the three" \
    test "$(find "$M/sq/carol" -type f | wc -l)" = $((carol_n + 3))
# What Dovecot would serve of the undone carol: moved on to md1, it must
# be what it served in md2 before the undo (the UIDs went through sqlite).
mv "$M/sq/carol" "$M/md1/" || not_ok "mv carol sq -> md1"
dovecot_user carol "$S/md1" || exit 1
snap carol carol.undone
check "undo carol: Dovecot serves it (via sq, in md1) as it did in md2" \
    diff "$WORK/carol.target" "$WORK/carol.undone"

C moves >"$WORK/moves.out"
check "moves shows the undone moves as undone" \
    test "$(grep -Ec "^($alice_id|$carol_id) .* undone " "$WORK/moves.out")" = 2
check "moves shows the undo moves done (md2 -> md1, md2 -> sq) and sq -> md1" \
    test "$(grep -Ec ' (alice +md2 +md1|carol +md2 +sq|carol +sq +md1) +done ' "$WORK/moves.out")" = 3

# --- purge --all: the retained copies' directories are gone
n_ret=$(( $(retained "$S/md1" | wc -l) + $(retained "$S/md2" | wc -l) ))
check "before purge: retained copies on disk in md2 ($n_ret)" test "$n_ret" = 2
check "store list: md2 counts its retained copies as on disk" maildir_list_is md2
C purge --all >"$WORK/purge.out" 2>&1
check "purge --all: exit 0" test $? = 0
# (It counts the moves it settled, the two undone ones, whose copies the
# undo took back, too.)
check "purge --all: says so ($(head -1 "$WORK/purge.out"))" \
    grep -Eqx '[1-9][0-9]* retained copies purged' "$WORK/purge.out"
check "purge --all: no retained directory left in md1 or md2" \
    test -z "$(find "$S/md1" "$S/md2" -mindepth 1 -maxdepth 1 -name '~mailfs~*')"
check "purge --all: md2 is empty on disk" test -z "$(ls -A "$S/md2")"
check "purge --all: sq holds no mailbox" test "$(sqlite3 "$S/sq.db" 'select count(*) from mailbox')" = 0
check "moves shows every earlier move purged" \
    test "$(C moves | grep -c ' purged ')" = 5
check "undo after purge refuses" bash -c "! '$B/mailfsctl' -c '$S/conf' undo $alice_id 2>/dev/null"
check "store list: md1 (alice, carol), counted as on disk" maildir_list_is md1
check "store list: md2 empty" maildir_list_is md2
check "store list: sq empty" list_is sq sqlite 0 0 0 0 0 0

# --- compact on a maildir store: nothing to do, exit 0, nothing touched
ls -laR --time-style=full-iso "$S/md1" >"$WORK/md1.ls"
C compact md1 >"$WORK/compact.out" 2>&1
check "compact md1: exit 0" test $? = 0
check "compact md1: says there is nothing to compact ($(cat "$WORK/compact.out"))" \
    grep -q "nothing to compact" "$WORK/compact.out"
check "compact md1: the store's files are untouched" diff "$WORK/md1.ls" <(ls -laR --time-style=full-iso "$S/md1")

# --- check: a clean site, then a duplicate
C check >"$WORK/check0.out" 2>&1
rc=$?
check "check: clean so far ($(tail -1 "$WORK/check0.out"))" test $rc = 0
# carol moves to sq; a Dovecot whose userdb still says md1 delivers there,
# which makes a Maildir of that name again: carol visible in two stores.
mv "$M/md1/carol" "$M/sq/" || not_ok "mv carol md1 -> sq"
msg carol 'stale userdb' | dovecot_lda carol || not_ok "dovecot-lda into the old place"
check "Dovecot made a carol Maildir in md1 again" test -d "$S/md1/carol/new"
C check >"$WORK/check1.out" 2>&1
rc=$?
check "check: exit 1 on the duplicate" test $rc = 1
check "check: reports the duplicate carol, naming sq and md1" \
    grep -Eq '^duplicate +carol .*(sq.*md1|md1.*sq)' "$WORK/check1.out"
check "check --json: one finding, the duplicate" \
    test "$(C check --json 2>/dev/null | python3 -c 'import json, sys; print(",".join(f["finding"] + ":" + f["mailbox"] for f in json.load(sys.stdin)))')" = duplicate:carol
check "the mount shows carol in both stores" test -d "$M/sq/carol" -a -d "$M/md1/carol"
rm -rf "$S/md1/carol"
check "check: clean again once the stray Maildir is gone" check_clean

# --- check: an orphan lock (mailfs-mailbox edited), settled by --fix-orphans
snap alice alice.locked
meta=$S/md1/alice/mailfs-mailbox
if [ -f "$meta" ]; then
    sed -i 's/^lock-move .*/lock-move 4242/' "$meta"
else
    printf 'state 0\nlock-move 4242\n' >"$meta"
fi
check "the edited mailfs-mailbox says lock-move 4242" grep -qx 'lock-move 4242' "$meta"
msg alice 'while locked' | C deliver md1 alice INBOX 2>/dev/null
check "deliver into the orphan-locked mailbox is deferred (75)" test $? = 75
check "a write through the mount is refused (EBUSY)" \
    bash -c "! cp '$TD/eml/cpython/msg_03.txt' '$M/md1/alice/INBOX/locked.eml' 2>/dev/null"
C check >"$WORK/check2.out" 2>&1
rc=$?
check "check: exit 1 on the orphan lock" test $rc = 1
check "check: reports orphan-lock alice in md1, not fixed" \
    grep -Eq '^orphan-lock +alice +md1 +no ' "$WORK/check2.out"
C check --fix-orphans >"$WORK/check3.out" 2>&1
rc=$?
check "check --fix-orphans: exit 0 ($(grep orphan "$WORK/check3.out"))" test $rc = 0
check "check --fix-orphans: reports it fixed" grep -Eq '^orphan-lock +alice +md1 +yes ' "$WORK/check3.out"
check "the lock is gone from mailfs-mailbox" grep -qx 'lock-move 0' "$meta"
check "check: clean afterwards" check_clean
snap alice alice.unlocked
check "alice is what Dovecot served before the lock" diff "$WORK/alice.locked" "$WORK/alice.unlocked"
check "deliver works again" bash -c "printf 'Subject: unlocked\n\nx\n' | '$B/mailfsctl' -c '$S/conf' deliver md1 alice INBOX"
check "and a move" mv "$M/md1/alice" "$M/md2/"
check "store list: md2 counts alice as on disk" maildir_list_is md2
check "store list: md1 counts alice's retained copy as on disk" maildir_list_is md1

# --- undo of a move whose mailbox left the maildir target since: moved on
# (md2 -> sq), renamed, or deleted.  The retained copy may come back only
# when the mailbox is gone for good; never a second visible copy, never a
# copy without the mail that went on with the other one.  (md2 holds zed,
# listed by the daemon first, so the ids this daemon and mailfsctl give
# md2's mailboxes differ: a move's target is not known by such an id.)
mkdir -p "$M/md2/zed/INBOX" && cp -a "$TD/eml/mime4j/." "$M/md2/zed/INBOX/"
ls -R "$M/md2/zed" >/dev/null
mkdir -p "$M/md1/dave/INBOX" && cp -a "$TD/eml/cpython/." "$M/md1/dave/INBOX/"
files_of "$M/md1/dave" >"$WORK/dave.files"
mv "$M/md1/dave" "$M/md2/" || not_ok "mv dave md1 -> md2"
dave_id=$(moves_of "$S" 'm["mailbox"] == "dave" and m["state"] == "done"')
mv "$M/md2/dave" "$M/sq/" || not_ok "mv dave md2 -> sq"
C undo "$dave_id" >"$WORK/undo-dave.out" 2>&1
rc=$?
check "undo of a move whose mailbox moved on since: refused ($(cat "$WORK/undo-dave.out"))" test $rc != 0
check "... saying which move took it on" grep -q "moved it to sq since" "$WORK/undo-dave.out"
check "... dave visible in sq only" \
    test -d "$M/sq/dave" -a ! -e "$M/md1/dave" -a ! -e "$M/md2/dave"
check "... check finds no duplicate" check_clean
mv "$M/sq/dave" "$M/md2/" || not_ok "mv dave sq -> md2"
C purge --all >/dev/null
mv "$M/md2/dave" "$M/md1/" && mv "$M/md1/dave" "$M/md2/" || not_ok "mv dave md2 -> md1 -> md2"
dave_id=$(moves_of "$S" 'm["mailbox"] == "dave" and m["state"] == "done"' | awk 'NR == 1')
mv "$M/md2/dave" "$M/md2/dave2" || not_ok "rename dave in md2"
msg dave 'into the renamed one' | C deliver md2 dave2 INBOX || not_ok "deliver into dave2"
C undo "$dave_id" >"$WORK/undo-dave2.out" 2>&1
rc=$?
check "undo of a move whose mailbox was renamed since: refused ($(cat "$WORK/undo-dave2.out"))" test $rc != 0
check "... no dave in md1 beside dave2 in md2" test ! -e "$M/md1/dave" -a -d "$M/md2/dave2"
mv "$M/md2/dave2" "$M/md2/dave" || not_ok "rename dave2 back"
mkdir -p "$M/md2/yves/INBOX"
rm -rf "$M/md2/dave"
C undo "$dave_id" >"$WORK/undo-dave3.out" 2>&1
rc=$?
check "undo of a move whose mailbox was deleted since: exit 0 ($(cat "$WORK/undo-dave3.out"))" test $rc = 0
check "... dave is back in md1 as it was moved" \
    test -z "$(comm -23 <(sort "$WORK/dave.files") <(files_of "$M/md1/dave" | sort))"
check "... check is clean" check_clean
unmount "$S"

# --- check: a move killed after its copy, its journal then deleted: an
# orphan lock on the source and an orphan hidden copy in the target, both
# maildir; --fix-orphans rolls it back (the copy's directory gone)
dovecot_user alice "$S/md2" || exit 1
snap alice alice.final
MAILFS_FAULT=locked C move alice md1 >/dev/null 2>&1
check "the killed move left a hidden incoming copy in md1" \
    test "$(find "$S/md1" -mindepth 1 -maxdepth 1 -name '~mailfs~move~*' | wc -l)" = 1
rm -f "$S"/journal.db*
C check >"$WORK/check4.out" 2>&1
rc=$?
check "check: exit 1 on the killed move's orphans" test $rc = 1
check "check: reports the orphan lock of alice in md2" grep -Eq '^orphan-lock +alice +md2 +no ' "$WORK/check4.out"
check "check: reports the orphan copy of alice in md1" grep -Eq '^orphan-copy +alice +md1 +no +hidden incoming' "$WORK/check4.out"
C check --fix-orphans >"$WORK/check5.out" 2>&1
check "check --fix-orphans: exit 0" test $? = 0
check "check --fix-orphans: no hidden incoming copy left on disk" \
    test -z "$(find "$S/md1" "$S/md2" -mindepth 1 -maxdepth 1 -name '~mailfs~move~*')"
check "check --fix-orphans: alice unlocked" grep -qx 'lock-move 0' "$S/md2/alice/mailfs-mailbox"
check "check: clean afterwards" check_clean
snap alice alice.rolledback
check "alice is what Dovecot served before the killed move" diff "$WORK/alice.final" "$WORK/alice.rolledback"
check "Dovecot's log has no error or warning" dovecot_log_problems 0
[ $FAILS = 0 ]
