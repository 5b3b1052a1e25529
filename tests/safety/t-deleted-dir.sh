#!/bin/bash
# Undo of a move whose target mailbox was deleted since (issue 10), with
# the LDAP directory: the retained source copy becomes the mailbox again,
# the entry points back at the source store, and the deleted target stays
# recoverable in the target store.  (ldapi:// with SASL EXTERNAL: no
# password on the wire.)
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../ldap.sh"

L=$WORK/ldap
slapd_start "$L" || exit 1
ldap_person dora srv1.example.org
S=$WORK/site
mkdir -p "$S/mnt"
{
    printf '[mailfs]\njournal = journal.db\n[directory]\nuri = %s\nbase = ou=people,dc=example,dc=org\nfilter = (uid=%%s)\n' "$LDAPI_URI"
    printf '[store srv1]\npath = srv1.db\ndirectory = mailHost=srv1.example.org\n'
    printf '[store srv2]\npath = srv2.db\ndirectory = mailHost=srv2.example.org\n'
} >"$S/conf"
for s in srv1 srv2; do "$B/mailfsctl" -c "$S/conf" store create $s >/dev/null; done
M=$S/mnt
mount_fg "$S" || exit 1
mkdir -p "$M/srv1/dora/INBOX" && cp -a "$TD/eml/notmuch/." "$M/srv1/dora/INBOX/"
tree_of "$M/srv1/dora" >"$WORK/dora.tree"
mv "$M/srv1/dora" "$M/srv2/" || not_ok "mv dora"
check "the move points mailHost at srv2" test "$(ldap_host dora)" = srv2.example.org
id=$(moves_of "$S" 'm["mailbox"] == "dora" and m["state"] == "done"')
rm -rf "$M/srv2/dora"
"$B/mailfsctl" -c "$S/conf" undo "$id" >"$WORK/undo.out" 2>"$WORK/undo.err"
rc=$?
check "undo after the target was deleted: exit 0 ($(cat "$WORK/undo.err"))" test $rc = 0
check "... mailHost points back at srv1" test "$(ldap_host dora)" = srv1.example.org
wait_for "dora visible in srv1" test -d "$M/srv1/dora/INBOX"
check "... dora is back in srv1 as moved" cmp -s "$WORK/dora.tree" <(tree_of "$M/srv1/dora")
check "... the deleted dora is recoverable in srv2" \
    bash -c "'$B/mailfsctl' -c '$S/conf' deleted srv2 | grep -q '^srv2 .* dora .* mailbox'"
"$B/mailfsctl" -c "$S/conf" restore srv2 dora >/dev/null 2>"$WORK/restore.err"
rc=$?
check "restoring it too is refused: dora would be in two stores ($(cat "$WORK/restore.err"))" \
    bash -c "[ $rc = 1 ] && grep -q 'is in store srv1' '$WORK/restore.err'"
check "... and srv2 shows no dora" test ! -e "$M/srv2/dora"
unmount "$S"
[ $FAILS = 0 ]
