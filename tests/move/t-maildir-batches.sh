#!/bin/bash
# A maildir-to-maildir move of a folder bigger than one commit batch of the
# move (256 messages): the target's folder is read from disk once per batch,
# not once per message, and every message still arrives once, with its
# bytes, flags and date, and its UID from the source's dovecot-uidlist.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1@maildir srv2@maildir || exit 1
M=$S/mnt
mount_fg "$S" || exit 1

mkdir -p "$M/srv1/alice/INBOX" "$M/srv1/alice/Archive"
for i in 1 2; do
    find "$TD/eml" -type f | sort | while read -r f; do
        cp "$f" "$M/srv1/alice/INBOX/$i-$(echo "${f#"$TD"/eml/}" | tr / -)" || not_ok "copy of $f"
    done
done
find "$TD/eml/tika" -type f -name '*.eml' -exec cp -t "$M/srv1/alice/Archive/" {} +
find "$M/srv1/alice/INBOX" -type f | sort | head -20 | while read -r f; do
    setfattr -n user.mail.flags -v '\Seen \Flagged' "$f"
done
total=$(find "$M/srv1/alice" -type f | wc -l)
check "INBOX holds more than two batches ($total messages in all)" \
    test "$(find "$M/srv1/alice/INBOX" -type f | wc -l)" -gt 512

# messages_of DIR: names, sizes, dates, modes and checksums of the messages
# (a maildir folder's own mtime is its directory's: not compared here).
messages_of() {
    (cd "$1" && find . -type f -printf '%P %s %T@ %m\n' | sort &&
        find . -type f -print0 | sort -z | xargs -0 -r sha256sum)
}
# uids_of MAILDIR: "base uid" of every record of its dovecot-uidlist, sorted.
uids_of() {
    tail -n +2 "$1/dovecot-uidlist" | awk '{ i = index($0, " :"); n = substr($0, i + 2);
        sub(/:.*/, "", n); print n, $1 }' | sort
}
# files_of MAILDIR: the base of every message file in cur/ and new/, sorted.
files_of() { find "$1/cur" "$1/new" -type f -printf '%f\n' | sed 's/:.*//' | sort; }
# increasing MAILDIR: the uidlist's UIDs rise strictly, line by line.
increasing() { tail -n +2 "$1/dovecot-uidlist" | awk '$1 <= last { bad = 1 } { last = $1 } END { exit bad }'; }

messages_of "$M/srv1/alice" >"$WORK/before"
(cd "$M/srv1" && find alice -type f -print0 | sort -z | xargs -0 getfattr -d 2>/dev/null) >"$WORK/xa.before"
uids_of "$S/srv1/alice" >"$WORK/uids.inbox.before"
uids_of "$S/srv1/alice/.Archive" >"$WORK/uids.archive.before"
check "the source lists every INBOX file with a UID" \
    test "$(cut -d' ' -f1 "$WORK/uids.inbox.before")" = "$(files_of "$S/srv1/alice")"

check "mv of alice from one maildir store to the other" mv "$M/srv1/alice" "$M/srv2/"
messages_of "$M/srv2/alice" >"$WORK/after"
(cd "$M/srv2" && find alice -type f -print0 | sort -z | xargs -0 getfattr -d 2>/dev/null) >"$WORK/xa.after"
check "bytes, names, sizes, dates and modes of the messages arrive" cmp -s "$WORK/before" "$WORK/after"
check "flags arrive" cmp -s "$WORK/xa.before" "$WORK/xa.after"
for d in "" /.Archive; do
    t=$S/srv2/alice$d
    check "target$d: every file once, none left in tmp/" \
        test "$(files_of "$t" | uniq -d | wc -l)/$(find "$t/tmp" -type f | wc -l)" = 0/0
    check "target$d: its dovecot-uidlist lists exactly its files" \
        test "$(uids_of "$t" | cut -d' ' -f1)" = "$(files_of "$t")"
    check "target$d: UIDs strictly increasing" increasing "$t"
done
check "INBOX: every message keeps its UID" \
    test "$(uids_of "$S/srv2/alice")" = "$(cat "$WORK/uids.inbox.before")"
check "Archive: every message keeps its UID" \
    test "$(uids_of "$S/srv2/alice/.Archive")" = "$(cat "$WORK/uids.archive.before")"
unmount "$S"
[ $FAILS = 0 ]
