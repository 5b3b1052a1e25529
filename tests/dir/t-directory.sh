#!/bin/bash
# Moves and the LDAP directory, against a real slapd: mv points the
# mailbox's entry (mailHost) at the target; crashes before the commit point
# restore the old value, after it the new one stands; a stopped slapd or one
# whose ACL forbids the write fails the move with EIO and changes nothing;
# a mailbox named with filter metacharacters touches only its own entry;
# ldapi:// with SASL EXTERNAL works as well.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../ldap.sh"

L=$WORK/ldap
slapd_start "$L" || exit 1
for u in alice bob carol dave; do ldap_person $u srv1.example.org; done
ldapadd -x -H "$LDAP_URI" -D "$LDAP_ADMIN" -w "$LDAP_PW" >/dev/null <<'LDIF'
dn: cn=weird,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
cn: weird
sn: weird
uid: *)(uid=*
mailHost: srv1.example.org

dn: cn=reader,dc=example,dc=org
objectClass: person
objectClass: simpleSecurityObject
cn: reader
sn: reader
userPassword: readpw
LDIF
printf '%s\n' "$LDAP_PW" >"$WORK/ldap.secret"
chmod 600 "$WORK/ldap.secret"
printf 'readpw\n' >"$WORK/reader.secret"
chmod 600 "$WORK/reader.secret"

S=$WORK/site
mkdir -p "$S/mnt"
write_conf() { # uri bind-dn secret
    {
        printf '[mailfs]\njournal = journal.db\n[directory]\nuri = %s\nbase = ou=people,dc=example,dc=org\nfilter = (uid=%%s)\n' "$1"
        [ -n "$2" ] && printf 'bind-dn = %s\npassword-file = %s\nallow-cleartext = yes\n' "$2" "$3"
        printf '[store srv1]\npath = srv1.db\ndirectory = mailHost=srv1.example.org\n'
        printf '[store srv2]\npath = srv2.db\ndirectory = mailHost=srv2.example.org\n'
    } >"$S/conf"
}
write_conf "$LDAP_URI" "$LDAP_ADMIN" "$WORK/ldap.secret"
for s in srv1 srv2; do "$B/mailfsctl" -c "$S/conf" store create $s >/dev/null; done
M=$S/mnt
mount_fg "$S" || exit 1
for u in alice bob carol dave '*)(uid=*'; do
    mkdir -p "$M/srv1/$u/INBOX" && cp -a "$TD/eml/cpython/." "$M/srv1/$u/INBOX/"
done
tree_of "$M/srv1/alice" >"$WORK/tree"

# --- a move updates the entry
mv "$M/srv1/alice" "$M/srv2/"
check "mv updates mailHost (ldapsearch)" test "$(ldap_host alice)" = srv2.example.org
check "the journal recorded the directory step" \
    test "$(journal "$S" "select saved from move_dir")" = "mailHost=srv1.example.org"
check "other entries untouched" test "$(ldap_host bob)" = srv1.example.org

# --- filter metacharacters: only its own entry
mv "$M/srv1/*)(uid=*" "$M/srv2/"
check "'*)(uid=*' moved and its own entry updated" \
    test "$(ldapsearch -x -H "$LDAP_URI" -b 'cn=weird,ou=people,dc=example,dc=org' -LLL mailHost | awk '/^mailHost/ {print $2}')" = srv2.example.org
check "... and no other entry" \
    test "$(ldap_host bob)$(ldap_host carol)$(ldap_host dave)" = srv1.example.orgsrv1.example.orgsrv1.example.org
unmount "$S"

# --- crashes around the directory step
crash() { # point mailbox expected-store expected-host
    mount_fg "$S" MAILFS_FAULT="$1" || return
    mv "$M/srv1/$2" "$M/srv2/" 2>/dev/null
    wait_for "daemon killed at $1" not_running "$S"
    fusermount3 -u "$M" 2>/dev/null
    mount_fg "$S" || return
    local where=none
    [ -d "$M/srv1/$2" ] && where=srv1
    [ -d "$M/srv2/$2" ] && where=srv2
    check "crash at $1: $2 in $3" test "$where" = "$3"
    check "crash at $1: mailHost is $4 (where the mailbox is)" test "$(ldap_host "$2")" = "$4"
    check "crash at $1: nothing pending" \
        test "$(moves_count "$S" 'm["state"] in ("running", "committed")')" = 0
    unmount "$S"
}
crash directory-saved:1 bob srv1 srv1.example.org
crash directory:1 carol srv1 srv1.example.org
crash committed:1 dave srv2 srv2.example.org

# --- slapd down: EIO, nothing changes
mount_fg "$S" || exit 1
slapd_stop "$L"
check "mv with slapd stopped fails with EIO" \
    bash -c "mv '$M/srv1/bob' '$M/srv2/' 2>&1 | grep -q 'Input/output error'"
check "... the mailbox stays in srv1" test -d "$M/srv1/bob" -a ! -e "$M/srv2/bob"
slapd_start "$L" || exit 1
check "... and the directory is untouched" test "$(ldap_host bob)" = srv1.example.org
check "after slapd is back, the move works" mv "$M/srv1/bob" "$M/srv2/"
check "... and points bob at srv2" test "$(ldap_host bob)" = srv2.example.org
unmount "$S"

# --- an ACL that forbids the write (bound as a read-only user)
slapd_stop "$L"
SLAPD_ACL='access to * by dn.exact="cn=reader,dc=example,dc=org" read by * read' slapd_start "$L" || exit 1
write_conf "$LDAP_URI" "cn=reader,dc=example,dc=org" "$WORK/reader.secret"
mount_fg "$S" || exit 1
tree_of "$M/srv1/carol" >"$WORK/carol.tree"
check "mv refused by the directory's ACL fails with EIO" \
    bash -c "mv '$M/srv1/carol' '$M/srv2/' 2>&1 | grep -q 'Input/output error'"
check "... source intact" test "$(tree_of "$M/srv1/carol")" = "$(cat "$WORK/carol.tree")"
check "... no copy in the target" test ! -e "$M/srv2/carol"
check "... directory untouched" test "$(ldap_host carol)" = srv1.example.org
check "... the reason is in mailfsctl moves" \
    bash -c "'$B/mailfsctl' -c '$S/conf' moves | grep carol | grep -qi 'insufficient access'"
unmount "$S"

# --- ldapi:// with SASL EXTERNAL
slapd_restart "$L" || exit 1
write_conf "$LDAPI_URI" "" ""
mount_fg "$S" || exit 1
check "mv with the directory over ldapi (SASL EXTERNAL)" mv "$M/srv1/carol" "$M/srv2/"
check "... updates mailHost" test "$(ldap_host carol)" = srv2.example.org
unmount "$S"
[ $FAILS = 0 ]
