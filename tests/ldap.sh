# tests/ldap.sh — a throwaway slapd for tests; source after tests/lib.sh.
#   slapd_start DIR      mdb database for dc=example,dc=org with core, cosine,
#                        inetorgperson, nis and misc schemas, on 127.0.0.1 at a
#                        free port and on an ldapi socket in DIR; sets LDAP_URI,
#                        LDAPI_URI, LDAP_ADMIN, LDAP_PW.  Stopped by the EXIT trap.
#                        With SLAPD_TLS=1: a test CA (DIR/ca.pem) and a
#                        server certificate for 127.0.0.1 for StartTLS, and
#                        SLAPD_SECURITY (e.g. "simple_bind=1") as security.
#                        SLAPD_SCHEMAS: more schema files to include.
#   slapd_stop DIR / slapd_restart DIR
#   ldap_person UID HOST  adds uid=UID,ou=people with mailHost HOST
#   ldap_host UID         prints its mailHost
# Without slapd (or if it does not start) the test fails: never a skip.
LDAP_ADMIN="cn=admin,dc=example,dc=org"
LDAP_PW=secret

free_port() {
    local p
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 20000))
        ss -ltn "sport = :$p" | grep -q ":$p" || { echo "$p"; return; }
    done
    return 1
}

slapd_start() {
    local d=$1
    command -v slapd >/dev/null || [ -x /usr/sbin/slapd ] || { not_ok "slapd is not installed"; return 1; }
    mkdir -p "$d/db"
    local tls=""
    if [ "${SLAPD_TLS:-0}" = 1 ]; then
        slapd_certs "$d" || { not_ok "could not make test certificates"; return 1; }
        tls="TLSCACertificateFile $d/ca.pem
TLSCertificateFile $d/server.pem
TLSCertificateKeyFile $d/server.key"
    fi
    cat >"$d/slapd.conf" <<CONF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/misc.schema
$(for f in ${SLAPD_SCHEMAS:-}; do echo "include $f"; done)
pidfile $d/slapd.pid
argsfile $d/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 104857600
suffix "dc=example,dc=org"
rootdn "$LDAP_ADMIN"
rootpw $LDAP_PW
directory $d/db
$tls
${SLAPD_SECURITY:+security $SLAPD_SECURITY}
# root over ldapi (SASL EXTERNAL) may write, as the admin may
${SLAPD_ACL:-access to * by dn.exact="gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth" write by dn.exact="$LDAP_ADMIN" write by * read}
CONF
    LDAP_PORT=${LDAP_PORT:-$(free_port)}
    LDAP_URI=ldap://127.0.0.1:$LDAP_PORT
    LDAPI_URI=ldapi://$(printf '%s' "$d/ldapi" | sed 's|/|%2F|g')
    SLAPD_DIR=$d
    /usr/sbin/slapd -f "$d/slapd.conf" -h "$LDAP_URI $LDAPI_URI" 2>"$d/slapd.log" ||
        { not_ok "slapd did not start: $(tail -3 "$d/slapd.log")"; return 1; }
    # From here it must go, whatever fails next (the load below included).
    trap 'slapd_stop "$SLAPD_DIR"; cleanup' EXIT
    wait_for "slapd to answer" ldapsearch -x -H "$LDAP_URI" -b "" -s base -LLL >/dev/null 2>&1 || return 1
    if [ ! -f "$d/loaded" ]; then
        ldap_admin ldapadd >/dev/null <<LDIF || return 1
dn: dc=example,dc=org
objectClass: dcObject
objectClass: organization
o: example
dc: example

dn: ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: people
LDIF
        touch "$d/loaded"
    fi
}

# A CA and a server certificate for 127.0.0.1, valid for a day.
slapd_certs() {
    local d=$1
    [ -f "$d/server.pem" ] && return 0
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=mailfs test CA" \
        -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null &&
        openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
            -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null &&
        printf 'subjectAltName = IP:127.0.0.1\n' >"$d/san.ext" &&
        openssl x509 -req -days 1 -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
            -CAcreateserial -extfile "$d/san.ext" -out "$d/server.pem" 2>/dev/null
}

slapd_stop() {
    local d=$1
    [ -f "$d/slapd.pid" ] || return 0
    local pid
    pid=$(cat "$d/slapd.pid")
    kill "$pid" 2>/dev/null
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    rm -f "$d/slapd.pid"
}

slapd_restart() { slapd_stop "$1"; slapd_start "$1"; }

# ldap_admin TOOL ARGS...: an ldap-utils tool bound as the admin (over
# StartTLS with the test CA when the fixture has TLS).
ldap_admin() {
    local tool=$1; shift
    if [ "${SLAPD_TLS:-0}" = 1 ]; then
        LDAPTLS_CACERT=$SLAPD_DIR/ca.pem "$tool" -ZZ -x -H "$LDAP_URI" -D "$LDAP_ADMIN" -w "$LDAP_PW" "$@"
    else
        "$tool" -x -H "$LDAP_URI" -D "$LDAP_ADMIN" -w "$LDAP_PW" "$@"
    fi
}

ldap_person() { # uid host
    ldap_admin ldapadd >/dev/null <<LDIF
dn: uid=$1,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: $1
cn: $1
sn: $1
mailHost: $2
LDIF
}

ldap_host() {
    ldapsearch -x -H "$LDAP_URI" -b "ou=people,dc=example,dc=org" -LLL "(uid=$1)" mailHost |
        awk '/^mailHost:/ {print $2}'
}
