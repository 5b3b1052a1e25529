# tests/site.sh — a whole live mail site on loopback addresses, as
# DESIGN section 10 describes it; source after tests/lib.sh (it sources
# tests/ldap.sh and tests/dovecot.sh itself).  scripts/site is the same
# site for people.
#
#   site_start DIR   under DIR (made; under $WORK in a test):
#     ldap/          slapd (tests/ldap.sh) with scripts/mailfs.schema: the
#                    users $SITE_USERS (uid=U,ou=people, password $SITE_PW,
#                    mailHost the IP of the backend serving U, objectclass
#                    mailfsLockable for the cutover lock mailfsLock)
#     srv1/ srv2/    mailfs's maildir stores (U's Maildir is srvN/U), which
#     dovecot/srv1/  the Dovecot backends serve: IMAP and LMTP on
#     dovecot/srv2/  $SITE_SRV1 and $SITE_SRV2, ports 143 and 24
#     dovecot/proxy/ the Dovecot proxy: IMAP and LMTP on $SITE_PROXY, 143
#                    and 24; passdb LDAP: proxy=y, host=mailHost; a locked
#                    user is held off with a temporary failure
#     conf, mnt/     mailfs over srv1 and srv2 (directory = mailHost=IP),
#                    mounted; journal.db, daemon.log
#     kick           drops a user's IMAP sessions (proxy and backends)
#   The addresses are $SITE_NET.1 (proxy), .2 (srv1), .3 (srv2): SITE_NET
#   is 127.X.Y, random and unused unless set (every 127/8 address is the
#   loopback, and several sites may run at once).  Each user gets
#   $SITE_FILL messages of the test data in INBOX on srv1 (0: none).
#   Stopped by the EXIT trap (or site_stop).
#   site_stop                   unmount, then every daemon, waiting for each
#   site_use DIR                a site started by another shell is the one
#                               the functions below talk to
#   site_imap CMD USER ARGS...  tests/tools/imap.py CMD through the proxy
#   site_login USER             one IMAP login through the proxy: prints
#                               "ok BACKEND SECONDS" or "no TEXT SECONDS"
#   site_lmtp USER < MSG        LMTP through the proxy, retrying on 4xx as
#                               an MTA does (SITE_LMTP_TIMEOUT s, default
#                               60): prints "attempts=N held=SECONDS"
#   site_host USER              the user's mailHost (ldapsearch)
#   site_backend USER           srv1 or srv2: the backend mailHost names
#   site_set_host USER STORE    ldapmodify: mailHost of srv1 or srv2
#   site_lock USER [VALUE] / site_unlock USER
#                               add / delete mailfsLock as mailfs does at a
#                               cutover (VALUE: default now + 10 s)
#   site_big USER N [STORE]     N more messages in USER's INBOX (store srv1
#                               by default), fast: Maildir files written
#                               directly, then indexed by doveadm
#   site_doveadm STORE ARGS...  doveadm of STORE's backend (or "proxy")
ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
. "$ROOT/tests/ldap.sh"
. "$ROOT/tests/dovecot.sh"

SITE_USERS=${SITE_USERS:-"alice bob carol dave eve"}
SITE_PW=${SITE_PW:-pw}
SITE_FILL=${SITE_FILL:-10}
SITE_TOOL=$ROOT/tests/tools/site_client.py

# _site_free_net NET: nothing listens on the IMAP or LMTP port of NET.1-3
# (or of every address).
_site_free_net() {
    ! ss -Hltn | awk '{ print $4 }' |
        grep -qE "^($(printf '%s' "$1" | sed 's/\./\\./g')\.[123]|0\.0\.0\.0|\*|\[::\]):(143|24)$"
}

# _site_net: $SITE_NET, or a random 127.X.Y nobody listens on.
_site_net() {
    if [ -n "${SITE_NET:-}" ]; then
        _site_free_net "$SITE_NET" || { not_ok "$SITE_NET.1-3 already have listeners"; return 1; }
        return 0
    fi
    local n
    for _ in $(seq 50); do
        n=127.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 1))
        _site_free_net "$n" && { SITE_NET=$n; return 0; }
    done
    not_ok "no free 127.X.Y network"
    return 1
}

# The lines every instance shares: Debian 12's defaults except where said.
_site_common_config() { # dir ip
    cat <<CONF
instance_name = mailfs-site-$(basename "$1")
base_dir = $1/run
state_dir = $1/state
log_path = $1/dovecot.log
protocols = imap lmtp
listen = $2
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_uid = $DOVECOT_VMAIL
mail_gid = $DOVECOT_VMAIL
first_valid_uid = $DOVECOT_UID
last_valid_uid = $DOVECOT_UID
first_valid_gid = $DOVECOT_GID
last_valid_gid = $DOVECOT_GID
recipient_delimiter = +
service imap-login {
  inet_listener imap {
    address = $2
    port = 143
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    address = $2
    port = 24
  }
  unix_listener lmtp {
    mode = 0600
  }
}
CONF
}

# A backend: the Maildirs of one mailfs store, as tests/dovecot.sh serves
# them (maildir++, acl vfile); it trusts the proxy, which checked the
# password (every address here is the loopback: a real site keeps its
# backends where only the proxies reach them).
_site_backend_config() { # dir port(unused)
    local d=$1 name ip store
    name=$(basename "$d")
    ip=$(_site_ip "$name")
    store=$SITE_DIR/$name
    {
        _site_common_config "$d" "$ip"
        cat <<CONF
mail_location = maildir:$store/%n
mail_plugins = acl
plugin {
  acl = vfile
}
protocol imap {
  mail_plugins = \$mail_plugins imap_acl
}
# which backend an IMAP client reached: ID's x-mailfs-backend
imap_id_send = name * version * x-mailfs-backend $name
lmtp_save_to_detail_mailbox = yes
$(_dovecot_namespace)
passdb {
  driver = static
  args = nopassword=y allow_nets=127.0.0.0/8
}
userdb {
  driver = static
  args = allow_all_users=yes
}
CONF
    } >"$d/dovecot.conf"
}

# The proxy: two LDAP passdbs.  The first finds only a locked user
# (mailfsLock present; a wrong password goes on to the second, which
# refuses it as usual) and ends the lookup as a failure (result_success =
# return-fail) that keeps its fields: code=temp_fail and nodelay, so that
# IMAP answers NO [UNAVAILABLE] at once (no auth_failure_delay and no
# penalty for the IP: the password was right) and LMTP 451 4.3.0
# (an MTA retries).  The second proxies to mailHost.  No auth cache: a
# lock and a new mailHost take effect at the next lookup.  The proxy's own
# mail_location is unusable, so that nothing is ever delivered on the proxy
# itself.  SITE_LOCK_MAP=delay maps mailfsLock to delay_until instead (the
# experiment of the notes: the login waits, then goes to the host it had
# looked up before the wait, and LMTP does not wait at all).
_site_proxy_config() { # dir port(unused)
    local d=$1 attrs="uid=user,userPassword=password,=proxy=y,mailHost=host" lock=""
    if [ "${SITE_LOCK_MAP:-tempfail}" = delay ]; then
        attrs="$attrs,mailfsLock=delay_until"
    else
        _site_ldap_config "$d/ldap-lock.conf.ext" \
            "(&(objectClass=inetOrgPerson)(uid=%n)(mailfsLock=*))" \
            "uid=user,userPassword=password,=code=temp_fail,=nodelay=yes"
        lock="passdb {
  driver = ldap
  args = $d/ldap-lock.conf.ext
  result_success = return-fail
}"
    fi
    _site_ldap_config "$d/ldap.conf.ext" "(&(objectClass=inetOrgPerson)(uid=%n))" "$attrs"
    {
        _site_common_config "$d" "$SITE_PROXY"
        cat <<CONF
lmtp_proxy = yes
mail_location = maildir:/nonexistent/%n
$lock
passdb {
  driver = ldap
  args = $d/ldap.conf.ext
}
userdb {
  driver = ldap
  args = $d/ldap.conf.ext
}
CONF
    } >"$d/dovecot.conf"
}

_site_ldap_config() { # file pass_filter pass_attrs
    cat >"$1" <<CONF
uris = $LDAP_URI
dn = $LDAP_ADMIN
dnpass = $LDAP_PW
base = ou=people,dc=example,dc=org
default_pass_scheme = PLAIN
pass_filter = $2
pass_attrs = $3
user_filter = (&(objectClass=inetOrgPerson)(uid=%n))
user_attrs = =uid=$DOVECOT_VMAIL,=gid=$DOVECOT_VMAIL
CONF
    chmod 600 "$1"
}

# _site_ip NAME: the address of proxy, srv1 or srv2.
_site_ip() {
    case $1 in
    proxy) echo "$SITE_PROXY" ;;
    srv1) echo "$SITE_SRV1" ;;
    srv2) echo "$SITE_SRV2" ;;
    *) return 1 ;;
    esac
}

# _site_listening IP: IMAP and LMTP listen there.
_site_listening() {
    ss -Hltn "src = $1" | grep -q ":143 " && ss -Hltn "src = $1" | grep -q ":24 "
}

# _site_dovecot NAME CONFIG_FN: an instance in $SITE_DIR/dovecot/NAME.
_site_dovecot() {
    local d=$SITE_DIR/dovecot/$1
    mkdir -p "$d"
    DOVECOT_CONFIG_FN=$2 DOVECOT_START_PORT=143 dovecot_start "$d" || return 1
    wait_for "Dovecot $1 to listen on $(_site_ip "$1")" _site_listening "$(_site_ip "$1")"
}

_site_people() { # user host...
    local u
    for u in $SITE_USERS; do
        cat <<LDIF
dn: uid=$u,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
objectClass: mailfsLockable
uid: $u
cn: $u
sn: $u
mail: $u@example.org
userPassword: $SITE_PW
mailHost: $SITE_SRV1

LDIF
    done
}

_site_mailfs_config() {
    cat <<CONF
# mailfs over the site's two maildir stores (scripts/site, tests/site.sh)
[mailfs]
journal = journal.db
# at a move's cutover: drop the user's IMAP sessions (proxy and backends)
kick = $SITE_DIR/kick %s

[directory]
uri = $LDAP_URI
base = ou=people,dc=example,dc=org
filter = (uid=%s)
bind-dn = $LDAP_ADMIN
password-file = $SITE_DIR/ldap.secret
allow-cleartext = yes
# at a move's cutover: the proxy holds the user off (IMAP NO [UNAVAILABLE],
# LMTP 451) while the entry has mailfsLock (its value: the hold's end)
lock = mailfsLock=%t

[store srv1]
backend = maildir
path = srv1
directory = mailHost=$SITE_SRV1

[store srv2]
backend = maildir
path = srv2
directory = mailHost=$SITE_SRV2
CONF
}

_site_kick_script() {
    cat <<SH
#!/bin/sh
# kick USER: drops USER's IMAP sessions on this site (mailfs's "kick" at a
# move's cutover): those through the proxy, and any straight to a backend.
# Fails only when a doveadm could not do it (68, EX_NOUSER: no session).
[ \$# = 1 ] || { echo "usage: \$0 USER" >&2; exit 2; }
rc=0
kick() {
    out=\$("\$@" 2>&1)
    case \$? in 0 | 68) ;; *) printf '%s\\n' "\$out" >&2; rc=1 ;; esac
}
# the backends first: their clients get "* BYE Server shutting down."; the
# proxy's kick then closes whatever is left (the client sees the
# connection end without a BYE)
kick doveadm -c "$SITE_DIR/dovecot/srv1/dovecot.conf" kick "\$1"
kick doveadm -c "$SITE_DIR/dovecot/srv2/dovecot.conf" kick "\$1"
kick doveadm -c "$SITE_DIR/dovecot/proxy/dovecot.conf" proxy kick "\$1"
exit \$rc
SH
}

# _site_fill USER: $SITE_FILL messages of the test data, through the proxy.
# (one LMTP sender for them all: a Python start per message is most of a
# site's start-up time)
_site_fill() {
    local u=$1
    local -a files
    [ "$SITE_FILL" -gt 0 ] || return 0
    mapfile -t files < <(find "$TD/eml" -name '*.eml' -type f -size -64k | LC_ALL=C sort |
        head -n "$SITE_FILL")
    python3 "$SITE_TOOL" lmtp "$SITE_PROXY" "$u" --timeout 10 "${files[@]}" >/dev/null
}

site_start() {
    SITE_DIR=$1
    mkdir -p "$SITE_DIR" || return 1
    SITE_DIR=$(cd "$SITE_DIR" && pwd)
    # A site started again keeps its addresses: they are in the directory.
    [ ! -f "$SITE_DIR/site.env" ] || SITE_NET=$(sed -n 's/^SITE_NET=//p' "$SITE_DIR/site.env")
    [ -f /usr/lib/dovecot/modules/auth/libauthdb_ldap.so ] ||
        { not_ok "Dovecot's LDAP driver is not installed (apt-get install dovecot-ldap)"; return 1; }
    _site_net || return 1
    SITE_PROXY=$SITE_NET.1 SITE_SRV1=$SITE_NET.2 SITE_SRV2=$SITE_NET.3
    SLAPD_SCHEMAS=$ROOT/scripts/mailfs.schema slapd_start "$SITE_DIR/ldap" || return 1
    _dovecot_vmail || return 1
    printf 'SITE_NET=%s\nLDAP_URI=%s\nDOVECOT_VMAIL=%s\n' "$SITE_NET" "$LDAP_URI" "$DOVECOT_VMAIL" \
        >"$SITE_DIR/site.env"
    if [ ! -f "$SITE_DIR/ldap/people" ]; then
        _site_people | ldap_admin ldapadd >/dev/null || { not_ok "adding the site's users"; return 1; }
        touch "$SITE_DIR/ldap/people"
    fi
    # The stores: mailfs's, written by Dovecot as the mail user.
    printf '%s\n' "$LDAP_PW" >"$SITE_DIR/ldap.secret" && chmod 600 "$SITE_DIR/ldap.secret"
    _site_mailfs_config >"$SITE_DIR/conf"
    mkdir -p "$SITE_DIR/mnt"
    local s
    for s in srv1 srv2; do
        if [ ! -d "$SITE_DIR/$s" ]; then
            "$B/mailfsctl" -c "$SITE_DIR/conf" store create $s >/dev/null ||
                { not_ok "mailfsctl store create $s"; return 1; }
        fi
        chown "$DOVECOT_UID:$DOVECOT_GID" "$SITE_DIR/$s"
    done
    _site_dovecot srv1 _site_backend_config && _site_dovecot srv2 _site_backend_config &&
        _site_dovecot proxy _site_proxy_config || return 1
    _site_kick_script >"$SITE_DIR/kick" && chmod 755 "$SITE_DIR/kick"
    mount_fg "$SITE_DIR" || return 1
    if [ ! -f "$SITE_DIR/filled" ]; then
        local u
        for u in $SITE_USERS; do _site_fill "$u" || { not_ok "filling $u"; return 1; }; done
        touch "$SITE_DIR/filled"
    fi
}

# site_use DIR: the site started in DIR (by another shell) is the one the
# other functions talk to.
site_use() {
    SITE_DIR=$(cd "$1" && pwd) && [ -f "$SITE_DIR/site.env" ] || { echo "no site in $1" >&2; return 1; }
    SITE_NET=$(sed -n 's/^SITE_NET=//p' "$SITE_DIR/site.env")
    LDAP_URI=$(sed -n 's/^LDAP_URI=//p' "$SITE_DIR/site.env")
    DOVECOT_VMAIL=$(sed -n 's/^DOVECOT_VMAIL=//p' "$SITE_DIR/site.env")
    SITE_PROXY=$SITE_NET.1 SITE_SRV1=$SITE_NET.2 SITE_SRV2=$SITE_NET.3
    DOVECOT_UID=$(id -u "$DOVECOT_VMAIL") && DOVECOT_GID=$(id -g "$DOVECOT_VMAIL")
}

# site_stop: the mount first (mailfs may write the directory), then the
# proxy, the backends and slapd, each waited for.
site_stop() {
    [ -n "${SITE_DIR:-}" ] || return 0
    if mountpoint -q "$SITE_DIR/mnt"; then unmount "$SITE_DIR"; fi
    # Each daemon takes seconds to end: all are told at once, then waited
    # for one by one (the stop functions send their signal again: no harm).
    local n f
    for f in "$SITE_DIR"/dovecot/{proxy,srv1,srv2}/master.pid "$SITE_DIR/ldap/slapd.pid"; do
        [ ! -f "$f" ] || kill -TERM "$(cat "$f")" 2>/dev/null
    done
    for n in proxy srv1 srv2; do dovecot_stop "$SITE_DIR/dovecot/$n"; done
    slapd_stop "$SITE_DIR/ldap"
}

site_doveadm() { # store|proxy args...
    local n=$1
    shift
    doveadm -c "$SITE_DIR/dovecot/$n/dovecot.conf" "$@"
}

site_imap() { # cmd user args...
    local cmd=$1 user=$2
    shift 2
    python3 "$DOVECOT_TOOLS/imap.py" "$cmd" "$SITE_PROXY" 143 "$user" "$SITE_PW" "$@"
}

site_login() { python3 "$SITE_TOOL" login "$SITE_PROXY" "$1" "$SITE_PW"; }

site_lmtp() { python3 "$SITE_TOOL" lmtp "$SITE_PROXY" "$1" --timeout "${SITE_LMTP_TIMEOUT:-60}"; }

site_host() { ldap_host "$1"; }

site_backend() {
    case $(site_host "$1") in
    "$SITE_SRV1") echo srv1 ;;
    "$SITE_SRV2") echo srv2 ;;
    *) return 1 ;;
    esac
}

site_set_host() { # user srv1|srv2
    local ip
    ip=$(_site_ip "$2") || return 1
    ldap_admin ldapmodify >/dev/null <<LDIF
dn: uid=$1,ou=people,dc=example,dc=org
changetype: modify
replace: mailHost
mailHost: $ip
LDIF
}

site_lock() { # user [value]
    ldap_admin ldapmodify >/dev/null <<LDIF
dn: uid=$1,ou=people,dc=example,dc=org
changetype: modify
add: mailfsLock
mailfsLock: ${2:-$(($(date +%s) + 10))}
LDIF
}

site_unlock() {
    ldap_admin ldapmodify >/dev/null <<LDIF
dn: uid=$1,ou=people,dc=example,dc=org
changetype: modify
delete: mailfsLock
LDIF
}

# site_big USER N [STORE]: N messages (the test data's, over and over) as
# Maildir files in USER's new/, then a doveadm mailbox status, whose sync
# gives them their UIDs in dovecot-uidlist.
site_big() {
    local u=$1 n=$2 s=${3:-srv1} before after
    local md=$SITE_DIR/$s/$u
    before=$(site_doveadm "$s" -f flow mailbox status -u "$u" messages INBOX | sed 's/.*messages=//') ||
        return 1
    setpriv --reuid="$DOVECOT_UID" --regid="$DOVECOT_GID" --clear-groups \
        /usr/bin/python3 "$SITE_TOOL" maildir-fill "$md" "$n" "$TD/eml" || return 1
    after=$(site_doveadm "$s" -f flow mailbox status -u "$u" messages INBOX | sed 's/.*messages=//')
    [ "$after" = $((before + n)) ] || { not_ok "site_big: $u has $after messages, not $((before + n))"; return 1; }
}
