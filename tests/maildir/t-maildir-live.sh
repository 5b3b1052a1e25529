#!/bin/bash
# A maildir store that Dovecot changes while mailfs serves it (issue 12).
#  - Behind mailfs: a delivery appears in ls, a flag set by an IMAP client in
#    getfattr, an expunged message disappears, and a reader that had a
#    message open keeps reading it after Dovecot renamed its file.
#  - Together: 500 deliveries by dovecot-lda into one folder while the
#    mount lists, reads and sets flags there and an IMAP client sets flags
#    and expunges.  Afterwards every delivered message but those expunged
#    is there exactly once, UIDs are unique and increasing, force-resync
#    repairs nothing and Dovecot logged no error.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../dovecot.sh"

dovecot_start "$WORK/dovecot" || exit 1
S=$WORK/site
site "$S" md@maildir || exit 1
chown "$DOVECOT_UID:$DOVECOT_GID" "$S/md"
chmod 755 "$WORK" "$S"
M=$S/mnt
dovecot_user bob "$S/md" || exit 1
# (not those starting with an mbox "From " line, which dovecot-lda drops)
mapfile -t EMLS < <(find "$TD/eml" -name '*.eml' -type f | LC_ALL=C sort |
    while IFS= read -r f; do head -c 5 "$f" | grep -q '^From ' || echo "$f"; done)
dovecot_lda bob <"${EMLS[0]}" || { not_ok "first delivery"; exit 1; }
mark=$(dovecot_log_mark)
mount_fg "$S" || exit 1
I=$M/md/bob/INBOX
count() { find "$I" -type f | wc -l; }
check "the first delivery is there" test "$(count)" = 1

# --- behind mailfs
dovecot_lda bob <"${EMLS[1]}"
wait_for "a delivery to show in ls" test "$(count)" = 2
uid1=$(dovecot_imap uids bob INBOX | head -1)
# the message by its UID, not by ls order: a name is Dovecot's base name,
# whose microseconds are not zero-padded, so two deliveries in one second
# may list in either order
first=
for f in "$I"/*; do
    [ "$(getfattr --only-values -n user.mail.uid "$f" 2>/dev/null)" = "$uid1" ] && first=${f##*/}
done
check "the first delivery's UID names a message on the mount" test -n "$first"
cp "$I/$first" "$WORK/first.eml"
exec 7<"$I/$first"                          # a reader holds the message open
head -c 10 <&7 >/dev/null
dovecot_imap store bob INBOX "$uid1" +FLAGS '\Flagged' '$Label1' >/dev/null
flags_are() { [ "$(getfattr --only-values -n user.mail.flags "$I/$first" 2>/dev/null)" = "$1" ]; }
wait_for "a flag set over IMAP to show" flags_are '\Flagged $Label1'
check "the message keeps its name while its file was renamed" test -f "$I/$first"
check "the open reader reads on, the same bytes" cmp -s <(cat <&7) <(tail -c +11 "$WORK/first.eml")
exec 7<&-
dovecot_imap store bob INBOX "$uid1" +FLAGS '\Deleted' >/dev/null
dovecot_imap expunge bob INBOX >/dev/null
wait_for "an expunged message to disappear" test ! -e "$I/$first"
check "one message left" test "$(count)" = 1

# --- together
N=500
deliver_all() {
    local i
    for ((i = 0; i < N; i++)); do
        dovecot_lda bob <"${EMLS[i % ${#EMLS[@]}]}" || echo "lda $i failed" >>"$WORK/lda.err"
    done
}
churn() { # the mount: list, read, set flags, until the deliveries end
    local n=0 f
    while [ ! -e "$WORK/done" ]; do
        for f in $(ls "$I" | shuf -n 5 2>/dev/null); do
            cat "$I/$f" >/dev/null 2>&1
            setfattr -n user.mail.flags -v '\Seen' "$I/$f" 2>/dev/null
        done
        n=$((n + 1))
    done
    echo "$n" >"$WORK/churn.rounds"
}
imap_churn() { # an IMAP client: flags, and expunges (each UID noted)
    local uids u k=0
    while [ ! -e "$WORK/done" ]; do
        mapfile -t uids < <(dovecot_imap uids bob INBOX 2>/dev/null | shuf -n 3)
        for u in "${uids[@]}"; do
            dovecot_imap store bob INBOX "$u" +FLAGS '$Label2' >/dev/null 2>&1
        done
        if [ $((k % 3)) = 2 ] && [ -n "${uids[0]:-}" ] &&
            dovecot_imap store bob INBOX "${uids[0]}" +FLAGS '\Deleted' >/dev/null 2>&1 &&
            dovecot_imap expunge bob INBOX "${uids[0]}" >/dev/null 2>&1; then
            echo "${uids[0]}" >>"$WORK/expunged"
        fi
        k=$((k + 1))
    done
    echo "$k" >"$WORK/imap.rounds"
}
before=$(count)
churn & c1=$!
imap_churn & c2=$!
deliver_all
touch "$WORK/done"
wait $c1 $c2
check "every delivery succeeded" test ! -s "$WORK/lda.err"
touch "$WORK/expunged"
X=$(sort -u "$WORK/expunged" | wc -l)
echo "# mount rounds: $(cat "$WORK/churn.rounds"), IMAP rounds: $(cat "$WORK/imap.rounds"), expunged: $X"
check "the IMAP client expunged some" test "$X" -gt 0
E=$((before + N - X))
wait_for "all $N deliveries but the $X expunged to show" test "$(count)" = "$E"
check "Dovecot sees $E messages" test "$(dovecot_imap uids bob INBOX | wc -l)" = "$E"
uids=$(dovecot_imap uids bob INBOX)
check "no expunged UID is back" test -z "$(comm -12 <(sort "$WORK/expunged") <(sort <<<"$uids"))"
check "UIDs are unique" test "$(sort -n <<<"$uids" | uniq -d | wc -l)" = 0
check "UIDs increase in delivery order" test "$uids" = "$(sort -n <<<"$uids")"
# each delivered message once, as Dovecot stored it: the mount's files
# against the Maildir's own files (dovecot-lda normalises some bytes)
sum_mount=$(find "$I" -type f -print0 | xargs -0 sha256sum | cut -d' ' -f1 | sort)
sum_disk=$(find "$S/md/bob/cur" "$S/md/bob/new" -type f -print0 | xargs -0 sha256sum | cut -d' ' -f1 | sort)
check "the mount serves each of Dovecot's files once, byte for byte" test "$sum_mount" = "$sum_disk"
check "the uidlist has no file twice" \
    test "$(tail -n +2 "$S/md/bob/dovecot-uidlist" | sed 's/.*://' | sort | uniq -d | wc -l)" = 0
check "force-resync finds nothing to repair" dovecot_resync_clean bob
if out=$(dovecot_log_problems "$mark"); then ok "Dovecot logged no error or warning"; else not_ok "Dovecot logged no error or warning"; echo "$out" | head -5; fi
unmount "$S"
echo "$FAILS failed"
[ "$FAILS" = 0 ]
