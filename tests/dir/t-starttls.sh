#!/bin/bash
# StartTLS against a real slapd that refuses simple binds in clear
# (security simple_bind=1) and presents a certificate from a test CA:
# without starttls the bind is refused and the move fails with EIO,
# changing nothing; with starttls and the CA (tls-cacert) the move updates
# the entry; with starttls but without the CA the certificate is not
# trusted and the move fails with EIO.  The password never reaches the
# log or the error text.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../ldap.sh"

L=$WORK/ldap
SLAPD_TLS=1
SLAPD_SECURITY="simple_bind=1" slapd_start "$L" || exit 1
host_of() { # uid: over ldapi as root, which needs no simple bind
    ldapsearch -Q -Y EXTERNAL -H "$LDAPI_URI" -b "ou=people,dc=example,dc=org" -LLL "(uid=$1)" mailHost |
        awk '/^mailHost:/ {print $2}'
}
for u in alice bob carol; do
    ldapadd -Q -Y EXTERNAL -H "$LDAPI_URI" >/dev/null <<LDIF
dn: uid=$u,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: $u
cn: $u
sn: $u
mailHost: srv1.example.org
LDIF
done
check "fixture: clear simple bind is refused by slapd" \
    bash -c "! ldapwhoami -x -H '$LDAP_URI' -D '$LDAP_ADMIN' -w '$LDAP_PW' >/dev/null 2>&1"
check "fixture: StartTLS bind with the CA works" \
    env LDAPTLS_CACERT="$L/ca.pem" ldapwhoami -ZZ -x -H "$LDAP_URI" -D "$LDAP_ADMIN" -w "$LDAP_PW"

printf '%s\n' "$LDAP_PW" >"$WORK/bindpw"
chmod 600 "$WORK/bindpw"
S=$WORK/site
mkdir -p "$S"
write_conf() { # extra [directory] lines
    {
        printf '[mailfs]\njournal = journal.db\n[directory]\nuri = %s\n' "$LDAP_URI"
        printf 'bind-dn = %s\npassword-file = %s\nbase = ou=people,dc=example,dc=org\n' "$LDAP_ADMIN" "$WORK/bindpw"
        printf '%b' "$1"
        printf '[store srv1]\npath = srv1.db\ndirectory = mailHost=srv1.example.org\n'
        printf '[store srv2]\npath = srv2.db\ndirectory = mailHost=srv2.example.org\n'
    } >"$S/conf"
}
C() { "$B/mailfsctl" -c "$S/conf" "$@"; }
write_conf ""
for s in srv1 srv2; do C store create $s >/dev/null; done
for u in alice bob carol; do
    C mailbox create srv1 $u >/dev/null
    for f in "$TD"/eml/cpython/*; do C deliver srv1 $u <"$f" || break; done
done
# count STORE MAILBOX: whether the mount showed it after the last mv_as.
count() { grep -cxF "$2" "$S/ls.$1"; }

# Each configuration is mounted and the moves are mv through the mount; the
# daemon's log is each one's error text.
M=$S/mnt
mkdir -p "$M"
mv_as() { # config-lines mailbox errfile
    write_conf "$1"
    : >"$S/daemon.log"
    mount_fg "$S" || return 1
    mv "$M/srv1/$2" "$M/srv2/" 2>>"$3"
    local rc=$? st
    for st in srv1 srv2; do ls -A "$M/$st" >"$S/ls.$st"; done
    unmount "$S"
    cat "$S/daemon.log" >>"$3"
    return $rc
}

# in clear (allowed by the config, so that slapd's refusal is what is tested): refused
mv_as "allow-cleartext = yes\n" alice "$WORK/err1"
check "no starttls: the move fails" test $? -ne 0
check "... with the server's reason" grep -qi "confidentiality" "$WORK/err1"
check "... alice still in srv1 and her entry untouched" \
    test "$(count srv1 alice)$(count srv2 alice)$(host_of alice)" = 10srv1.example.org

# StartTLS with the test CA
mv_as "starttls = yes\ntls-cacert = $L/ca.pem\n" alice "$WORK/err2"
check "starttls + CA: the move succeeds" test $? = 0
check "... alice's mailHost is srv2" test "$(host_of alice)" = srv2.example.org
check "... alice is in srv2" test "$(count srv2 alice)" = 1

# StartTLS without the CA: the certificate is not trusted
mv_as "starttls = yes\n" bob "$WORK/err3"
check "starttls, unknown CA: the move fails" test $? -ne 0
check "... because of the certificate" grep -qiE "certificate|TLS|connect" "$WORK/err3"
check "... bob still in srv1, entry untouched" \
    test "$(count srv1 bob)$(count srv2 bob)$(host_of bob)" = 10srv1.example.org

# bad combinations are configuration errors
write_conf "starttls = yes\n"
sed -i "s|^uri = .*|uri = ldapi:///tmp/none|" "$S/conf"
C check >/dev/null 2>"$WORK/err4"
check "starttls with ldapi:// is a config error (exit 2)" test $? = 2
check "... that says so" grep -q "starttls is for ldap://" "$WORK/err4"

check "the password is in no error text or log line" bash -c "! grep -q '$LDAP_PW' '$WORK'/err*"
[ $FAILS = 0 ]
