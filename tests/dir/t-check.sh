#!/bin/bash
# mailfsctl check against a real slapd: every finding of DESIGN 5 planted on
# purpose and found (orphan, missing, mismatch, duplicate, unknown grantee,
# a pending move); each --fix option fixes exactly its finding, and a fix
# the directory refuses says why in the finding; exit 0 clean, 1 findings,
# 2 error (slapd down).  Each LDAP failure is said once.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../ldap.sh"

L=$WORK/ldap
slapd_start "$L" || exit 1
printf '%s\n' "$LDAP_PW" >"$WORK/ldap.secret"
chmod 600 "$WORK/ldap.secret"
S=$WORK/site
mkdir -p "$S"
cat >"$S/conf" <<CONF
[mailfs]
journal = journal.db
[directory]
uri = $LDAP_URI
bind-dn = $LDAP_ADMIN
password-file = $WORK/ldap.secret
allow-cleartext = yes
base = ou=people,dc=example,dc=org
[store srv1]
path = srv1.db
directory = mailHost=srv1.example.org
[store srv2]
path = srv2.db
directory = mailHost=srv2.example.org
# an attribute the schema lacks: slapd refuses to write it
[store srv3]
path = srv3.db
directory = mailHost=srv3.example.org;noSuchAttr=x
CONF
C() { "$B/mailfsctl" -c "$S/conf" "$@"; }
for s in srv1 srv2 srv3; do C store create $s >/dev/null; done
# the site is mounted throughout; mailboxes and ACLs are made through it
M=$S/mnt
mkdir -p "$M"
mount_fg "$S" || exit 1
mk() { mkdir -p "$M/$1/$2/INBOX"; } # store mailbox
for u in alice bob; do ldap_person $u srv1.example.org; mk srv1 $u; done
ldap_person carol srv2.example.org; mk srv2 carol

C check >"$WORK/out" 2>&1
check "a consistent site: exit 0" test $? = 0
check "... and says so" grep -q clean "$WORK/out"

# plant one of each
mk srv1 orphan                                      # orphan
ldap_person dave srv1.example.org                   # missing
ldap_person erin srv1.example.org; mk srv2 erin     # mismatch
ldap_person frank srv1.example.org                  # duplicate
mk srv1 frank; mk srv2 frank
setfattr -n user.mail.acl -v "bob lr
ghost lrs" "$M/srv1/alice"
MAILFS_FAULT=copied:1 "$B/mailfsctl" -c "$S/conf" move bob srv2 2>/dev/null # pending move

C check --json >"$WORK/json"
check "findings: exit 1" test $? = 1
for k in orphan missing mismatch duplicate unknown-grantee pending-move; do
    check "finds $k" grep -q "\"finding\": \"$k\"" "$WORK/json"
done
check "orphan is the right mailbox" grep -q '"finding": "orphan", "mailbox": "orphan"' "$WORK/json"
check "missing is dave" grep -q '"finding": "missing", "mailbox": "dave"' "$WORK/json"
check "mismatch is erin" grep -q '"finding": "mismatch", "mailbox": "erin"' "$WORK/json"
check "unknown grantee is ghost, bob is known" bash -c "grep unknown-grantee '$WORK/json' | grep -q ghost && ! grep unknown-grantee '$WORK/json' | grep -q 'bob'"

C check --fix-location --json >"$WORK/fix1"
check "--fix-location fixes the mismatch" grep -q '"finding": "mismatch", "mailbox": "erin", "store": "srv2", "dn": "[^"]*", "fixed": true' "$WORK/fix1"
check "... erin's mailHost is srv2 now" test "$(ldap_host erin)" = srv2.example.org
check "... and touches nothing else" test "$(ldap_host dave)$(ldap_host frank)" = srv1.example.orgsrv1.example.org
C check --json >"$WORK/after1"
check "second check: no mismatch" bash -c "! grep -q '\"mismatch\"' '$WORK/after1'"
check "second check: the others remain" grep -q '"unknown-grantee"' "$WORK/after1"

# A fix the directory refuses: not fixed, and the finding says why.
ldap_person gina srv1.example.org; mk srv3 gina
C check --fix-location --json >"$WORK/fix2" 2>"$WORK/fix2.err"
check "a refused --fix-location: not fixed, the directory's reason in the detail" python3 -c "
import json
f = [f for f in json.load(open('$WORK/fix2')) if f['mailbox'] == 'gina']
assert len(f) == 1 and f[0]['finding'] == 'mismatch' and not f[0]['fixed'], f
assert 'not fixed: modify uid=gina' in f[0]['detail'] and 'noSuchAttr' in f[0]['detail'], f"
check "... said once: not in the log as well" bash -c "! grep -q gina '$WORK/fix2.err'"
rm -r "$M/srv3/gina"
ldapdelete -x -H "$LDAP_URI" -D "$LDAP_ADMIN" -w "$LDAP_PW" "uid=gina,ou=people,dc=example,dc=org"

# An LDAP failure is one line: a move of a mailbox the directory lacks.
mk srv1 hank
C move hank srv2 >/dev/null 2>"$WORK/hank.err"
check "move without a directory entry: refused" test $? = 1
check "... the reason said once ($(grep -c 'no entry for mailbox hank' "$WORK/hank.err") lines)" \
    test "$(grep -c 'no entry for mailbox hank' "$WORK/hank.err")" = 1
rm -r "$M/srv1/hank"

C check --remove-unknown-grantees --json >/dev/null
check "--remove-unknown-grantees drops ghost, keeps bob" \
    test "$(getfattr --absolute-names --only-values -n user.mail.acl "$M/srv1/alice")" = "bob lr"
C check --json >"$WORK/after2"
check "third check: no unknown grantee" bash -c "! grep -q unknown-grantee '$WORK/after2'"

# settle the rest by hand: a clean check again
C recover >/dev/null
ldap_person orphan srv1.example.org
ldapdelete -x -H "$LDAP_URI" -D "$LDAP_ADMIN" -w "$LDAP_PW" "uid=dave,ou=people,dc=example,dc=org"
rm -r "$M/srv2/frank"
C check >"$WORK/out"
check "all settled: exit 0" test $? = 0

unmount "$S"
slapd_stop "$L"
C check >/dev/null 2>"$WORK/err"
check "slapd down: exit 2" test $? = 2
check "... with a reason" grep -q "check:" "$WORK/err"
check "... said once ($(grep -c "Can't contact" "$WORK/err") lines)" \
    test "$(grep -c "Can't contact" "$WORK/err")" = 1
[ $FAILS = 0 ]
