#!/bin/bash
# Change sequences (ms_mailbox_modseq, ms_attr.modseq) of a maildir store
# that Dovecot changes behind mailfs (issue 13: a move's delta passes
# re-read only what is at or above the floor they took):
#  - a flag set over IMAP, an expunge and an LMTP delivery each move what
#    they changed (the message, its folder, the folder in its mailbox's
#    listing) to the floor taken before them or above;
#  - a message nobody touched keeps its value, below the floor, and so
#    does the message of another folder.
# For both layouts (maildir++ and fs); read through the store library in
# a fresh process each time (tests/tools/modseq.c), as a move run pass by
# pass by separate mailfsctl runs would.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../dovecot.sh"

MQ=${MAILFS_BUILD:-$ROOT/build}/tests/modseq
dovecot_start "$WORK/dovecot" || exit 1
chmod 755 "$WORK"
mapfile -t EMLS < <(find "$TD/eml" -name '*.eml' -type f | LC_ALL=C sort |
    while IFS= read -r f; do head -c 5 "$f" | grep -q '^From ' || echo "$f"; done)

# modseq_of LISTING UID: the modseq of the message with UID in a listing.
modseq_of() { awk -v u="$2" '$1 == "m" && $2 == u { print $3 }' <<<"$1"; }
# self_of LISTING, child_of LISTING NAME: a node's own and a child's.
self_of() { awk '$1 == "self" { print $2 }' <<<"$1"; }
child_of() { awk -v n="$2" '$1 != "self" && $4 == n { print $3 }' <<<"$1"; }
ge() { [ -n "$1" ] && [ -n "$2" ] && python3 -c 'import sys; sys.exit(int(sys.argv[1]) < int(sys.argv[2]))' "$1" "$2"; }
lt() { [ -n "$1" ] && [ -n "$2" ] && ! ge "$1" "$2"; }

for layout in maildir maildir-fs; do
    S=$WORK/$layout
    site "$S" "md@$layout" || exit 1
    chown "$DOVECOT_UID:$DOVECOT_GID" "$S/md"
    chmod 755 "$S"
    user=u${layout//-/}
    fs=
    [ "$layout" = maildir-fs ] && fs=fs
    dovecot_user "$user" "$S/md" $fs || exit 1
    mq() { "$MQ" "$S/conf" md "$@"; }
    for i in 0 1 2; do dovecot_lda "$user" <"${EMLS[$i]}" || not_ok "$layout: delivery $i"; done
    dovecot_imap create "$user" Other >/dev/null
    dovecot_lda "$user" Other <"${EMLS[3]}" || not_ok "$layout: delivery to Other"
    mapfile -t UIDS < <(dovecot_imap uids "$user" INBOX)
    check "$layout: three messages with UIDs" test "${#UIDS[@]}" = 3

    # A first read-write SELECT moves the deliveries from new/ to cur/
    # (a rename, which moves their stamps: a false positive the floor
    # allows); done here so that it is not taken for a change below.
    dovecot_imap expunge "$user" INBOX >/dev/null
    dovecot_imap expunge "$user" Other >/dev/null
    before=$(mq list "$user/INBOX")
    other_before=$(mq list "$user/Other")
    # The floor is the clock less a second: wait (for the condition, not
    # a time) until it is past every stamp of the deliveries, so that
    # "below the floor" says something.
    top=$(awk '$1 == "self" { print $2 } $1 == "m" { print $3 }' <<<"$before
$other_before" | sort -n | tail -1)
    floor_past() { floor=$(mq floor "$user") && lt "$top" "$floor"; }
    wait_for "$layout: the floor to pass the deliveries" floor_past
    check "$layout: the floor is not ahead of the clock" \
        lt "$floor" "$(date +%s%N)"

    dovecot_imap store "$user" INBOX "${UIDS[0]}" +FLAGS '\Flagged' >/dev/null ||
        not_ok "$layout: IMAP flag change"
    dovecot_imap expunge "$user" INBOX "${UIDS[1]}" >/dev/null || not_ok "$layout: IMAP expunge"
    dovecot_lmtp "$user" <"${EMLS[4]}" || not_ok "$layout: LMTP delivery"
    mapfile -t NOW < <(dovecot_imap uids "$user" INBOX)
    check "$layout: one expunged, one delivered" test "${#NOW[@]}" = 3
    new_uid=${NOW[2]}

    after=$(mq list "$user/INBOX")
    box=$(mq list "$user")
    check "$layout: the re-flagged message moved" ge "$(modseq_of "$after" "${UIDS[0]}")" "$floor"
    check "$layout: the expunged message is gone" test -z "$(modseq_of "$after" "${UIDS[1]}")"
    check "$layout: the delivered message is at the floor or above" \
        ge "$(modseq_of "$after" "$new_uid")" "$floor"
    check "$layout: the untouched message kept its value" \
        test "$(modseq_of "$after" "${UIDS[2]}")" = "$(modseq_of "$before" "${UIDS[2]}")"
    check "$layout: ... which is below the floor" lt "$(modseq_of "$after" "${UIDS[2]}")" "$floor"
    check "$layout: INBOX moved" ge "$(self_of "$after")" "$floor"
    check "$layout: INBOX moved in its mailbox's listing" ge "$(child_of "$box" INBOX)" "$floor"
    other_after=$(mq list "$user/Other")
    ouid=$(awk '$1 == "m" { print $2 }' <<<"$other_before")
    check "$layout: the other folder's message kept its value" \
        test "$(modseq_of "$other_after" "$ouid")" = "$(modseq_of "$other_before" "$ouid")"
    # A maildir++ folder's value reads the mailbox root, which every
    # INBOX change touches (its dovecot-uidlist lives there): only the fs
    # layout keeps another folder apart.
    [ "$layout" = maildir ] ||
        check "$layout: the other folder's own value is below the floor" \
            lt "$(self_of "$other_after")" "$floor"

    # A flag change alone (Dovecot renames the file in cur/) moves only
    # that message among the messages.
    floor2=
    floor_past2() { floor2=$(mq floor "$user") && lt "$(self_of "$after")" "$floor2"; }
    wait_for "$layout: the floor to pass the last changes" floor_past2
    dovecot_imap store "$user" INBOX "${UIDS[2]}" +FLAGS '\Seen' >/dev/null
    again=$(mq list "$user/INBOX")
    check "$layout: a second flag change moves its message" \
        ge "$(modseq_of "$again" "${UIDS[2]}")" "$floor2"
    check "$layout: ... and not the one flagged before" \
        lt "$(modseq_of "$again" "${UIDS[0]}")" "$floor2"
    check "$layout: ... and its folder" ge "$(self_of "$again")" "$floor2"
done
if out=$(dovecot_log_problems 0); then ok "Dovecot logged no error or warning"; else not_ok "Dovecot logged no error or warning"; echo "$out" | head -5; fi
echo "$FAILS failed"
[ "$FAILS" = 0 ]
