# tests/dovecot.sh — a private Dovecot 2.3 (Debian's dovecot-core, -imapd,
# -lmtpd) for the maildir tests; source after tests/lib.sh (and after
# tests/ldap.sh's slapd_start, whose trap would replace ours).
#
#   dovecot_start DIR     config, base_dir, state_dir, passwd-file and log in
#                         DIR; IMAP on 127.0.0.1:$DOVECOT_IMAP_PORT (exported;
#                         a free port, or $DOVECOT_START_PORT), no SSL,
#                         plaintext auth; LMTP on the
#                         socket $DOVECOT_LMTP_SOCKET; acl plugin (vfile).
#                         Mail is owned by $DOVECOT_VMAIL ($DOVECOT_UID:
#                         $DOVECOT_GID), a system user made for this test
#                         (mailfs-vmail-PID; removed at exit unless it
#                         existed: set DOVECOT_VMAIL to use your own).
#                         Stopped (and the user removed) by the EXIT trap.
#                         With DOVECOT_CONFIG_FN set, that function
#                         (DIR PORT) writes DIR/dovecot.conf instead.
#   dovecot_stop [DIR]    stops it, waiting until every process is gone
#                         (dovecot_start DIR again restarts it, users kept).
#   dovecot_use DIR       makes another started instance the current one.
#   dovecot_user NAME STOREPATH [fs]
#                         user NAME, password "pw", mail_location
#                         maildir:STOREPATH/NAME (maildir++) or with
#                         :LAYOUT=fs; run again to point NAME elsewhere.
#   dovecot_doveadm ARGS...           doveadm with this config.
#   dovecot_lda USER [FOLDER] < MSG   delivers with dovecot-lda.
#   dovecot_lmtp USER [FOLDER] < MSG  delivers over LMTP (USER+FOLDER).
#   dovecot_snapshot USER             the oracle text from doveadm.
#   dovecot_imap CMD USER ARGS...     tests/tools/imap.py CMD as USER.
#   dovecot_imap_snapshot USER        the oracle text from IMAP.
#   dovecot_fill USER                 the fixture mailbox (see below).
#   dovecot_resync_clean USER         force-resync finds nothing to repair.
#   dovecot_log_mark / dovecot_log_problems MARK
#                                     errors and warnings logged since MARK.
#   dovecot_procs [DIR]               pids of the instance's processes.
#
# Folder names given to and printed by these functions are UTF-8 with '/'
# between levels, as mailfs's tree shows them, whatever the layout's IMAP
# separator ('.' for maildir++, Dovecot's default; '/' for fs).
# Without Dovecot (or if it does not start) the test fails: never a skip.

DOVECOT_TOOLS=$ROOT/tests/tools
_DOVECOT_DIRS=""

# _dovecot_port: a TCP port nothing listens on now.
_dovecot_port() {
    local p
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 20000))
        ss -ltn "sport = :$p" | grep -q ":$p" || { echo "$p"; return 0; }
    done
    return 1
}

# _dovecot_vmail: the mail user, made unless it exists.
_dovecot_vmail() {
    DOVECOT_VMAIL=${DOVECOT_VMAIL:-mailfs-vmail-$$}
    if ! getent passwd "$DOVECOT_VMAIL" >/dev/null; then
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$DOVECOT_VMAIL" ||
            { not_ok "could not create user $DOVECOT_VMAIL"; return 1; }
        _DOVECOT_MADE_USER=$DOVECOT_VMAIL
    fi
    DOVECOT_UID=$(id -u "$DOVECOT_VMAIL") && DOVECOT_GID=$(id -g "$DOVECOT_VMAIL")
}

# _dovecot_reach PATH: the mail user can walk down to PATH.  Directories
# this test made (under $WORK) get o+x; any other that stops the user is
# an error, said once, rather than Dovecot's later "Permission denied".
_dovecot_reach() {
    local d=$1
    while [ "$d" != / ] && [ -n "$d" ]; do
        case "$d/" in
        "$WORK"/*) [ -d "$d" ] && chmod o+x "$d" ;;
        esac
        d=$(dirname "$d")
    done
    setpriv --reuid="$DOVECOT_UID" --regid="$DOVECOT_GID" --clear-groups test -x "$1" ||
        { not_ok "user $DOVECOT_VMAIL cannot reach $1"; return 1; }
}

# The INBOX namespace with its special-use folders, as Debian's
# conf.d/10-mail.conf and 15-mailboxes.conf have it: every Dovecot the
# tests start (these, and tests/site.sh's backends and proxy).
_dovecot_namespace() {
    cat <<'EOF'
namespace inbox {
  inbox = yes
  mailbox Drafts {
    special_use = \Drafts
  }
  mailbox Junk {
    special_use = \Junk
  }
  mailbox Trash {
    special_use = \Trash
  }
  mailbox Sent {
    special_use = \Sent
  }
  mailbox "Sent Messages" {
    special_use = \Sent
  }
}
EOF
}

_dovecot_config() { # dir port
    local d=$1 port=$2
    cat >"$d/dovecot.conf" <<CONF
# A private Dovecot for a mailfs test: Debian 12's defaults except where said.
instance_name = mailfs-$(basename "$d")
base_dir = $d/run
state_dir = $d/state
log_path = $d/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_uid = $DOVECOT_VMAIL
mail_gid = $DOVECOT_VMAIL
first_valid_uid = $DOVECOT_UID
last_valid_uid = $DOVECOT_UID
first_valid_gid = $DOVECOT_GID
last_valid_gid = $DOVECOT_GID
# every user has its own (passwd-file); this one is never used
mail_location = maildir:$d/no-mail/%u
mail_plugins = acl
plugin {
  acl = vfile
}
protocol imap {
  mail_plugins = \$mail_plugins imap_acl
}
recipient_delimiter = +
lmtp_save_to_detail_mailbox = yes
$(_dovecot_namespace)
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $d/users
}
userdb {
  driver = passwd-file
  args = username_format=%u $d/users
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $port
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  unix_listener lmtp {
    mode = 0600
  }
}
CONF
}

# _dovecot_trap: our cleanup runs first at exit, then whatever was there
# (lib.sh's cleanup removes $WORK, which holds the instance).
_dovecot_trap() {
    [ -z "${_DOVECOT_TRAPPED:-}" ] || return 0
    _DOVECOT_TRAPPED=1
    local prev
    prev=$(trap -p EXIT)
    eval "set -- $prev"
    trap "dovecot_cleanup; ${3:-}" EXIT
}

# _dovecot_up DIR PID: the master runs and IMAP listens.
_dovecot_up() {
    kill -0 "$2" 2>/dev/null || return 2
    ss -ltn "sport = :$(cat "$1/port")" | grep -q LISTEN && [ -S "$1/run/auth-userdb" ] &&
        [ -s "$1/run/master.pid" ]
}

dovecot_start() {
    local d=$1 port child rc i
    for b in /usr/sbin/dovecot /usr/bin/doveadm /usr/lib/dovecot/imap /usr/lib/dovecot/lmtp \
        /usr/lib/dovecot/dovecot-lda; do
        [ -x "$b" ] || { not_ok "Dovecot is not installed ($b: apt-get install dovecot-imapd dovecot-lmtpd)"; return 1; }
    done
    _dovecot_vmail || return 1
    _dovecot_trap
    # users and seps survive a restart of the same DIR
    mkdir -p "$d/run" "$d/state" && touch "$d/users" "$d/seps" || return 1
    _dovecot_reach "$d" || return 1
    case " $_DOVECOT_DIRS " in *" $d "*) ;; *) _DOVECOT_DIRS="$_DOVECOT_DIRS $d" ;; esac
    for _ in 1 2 3; do
        port=${DOVECOT_START_PORT:-$(_dovecot_port)} || { not_ok "no free port"; return 1; }
        echo "$port" >"$d/port"
        "${DOVECOT_CONFIG_FN:-_dovecot_config}" "$d" "$port"
        : >"$d/start.log"
        setsid /usr/sbin/dovecot -F -c "$d/dovecot.conf" 2>"$d/start.log" &
        child=$!
        echo "$child" >"$d/master.pid"
        # Polled rather than wait_for: a master that died ends the wait.
        rc=1
        for i in $(seq 400); do
            _dovecot_up "$d" "$child"
            rc=$?
            [ $rc = 1 ] || break
            sleep 0.05
        done
        [ $rc = 0 ] && break
        [ $rc = 1 ] && kill -TERM "$child" 2>/dev/null
        wait "$child" 2>/dev/null
        # A port taken between our look and its bind: another one.
        grep -q "Address already in use" "$d/start.log" "$d/dovecot.log" 2>/dev/null &&
            [ -z "${DOVECOT_START_PORT:-}" ] && continue
        break
    done
    if [ $rc != 0 ]; then
        not_ok "Dovecot did not start: $(cat "$d/start.log"; tail -3 "$d/dovecot.log" 2>/dev/null)"
        return 1
    fi
    # The master's own pid file, in case setsid had to fork to lead a
    # session: its pid is the session every process of the instance is in.
    if [ "$(cat "$d/run/master.pid")" != "$child" ]; then
        not_ok "Dovecot's master is not the process started ($(cat "$d/run/master.pid") != $child)"
        return 1
    fi
    dovecot_use "$d"
}

# dovecot_use DIR: the instance the other functions talk to.
dovecot_use() {
    DOVECOT_DIR=$1
    DOVECOT_CONF=$1/dovecot.conf
    DOVECOT_PID=$(cat "$1/master.pid")
    DOVECOT_IMAP_PORT=$(cat "$1/port")
    DOVECOT_LMTP_SOCKET=$1/run/lmtp
    export DOVECOT_IMAP_PORT
}

# dovecot_procs [DIR]: every process of the instance (its master's
# session: setsid made it the leader, and Dovecot's children stay in it).
dovecot_procs() {
    local d=${1:-$DOVECOT_DIR}
    [ -f "$d/master.pid" ] || return 0
    pgrep -s "$(cat "$d/master.pid")"
}
_dovecot_gone() { [ -z "$(dovecot_procs "$1")" ]; }

dovecot_stop() {
    local d=${1:-$DOVECOT_DIR} pid
    [ -f "$d/master.pid" ] || return 0
    pid=$(cat "$d/master.pid")
    kill -TERM "$pid" 2>/dev/null
    # Our child: wait returns when it has exited.  (Started by another
    # shell: wait fails at once and the poll below does the waiting.)
    wait "$pid" 2>/dev/null
    if ! wait_for "Dovecot in $d to exit" _dovecot_gone "$d"; then
        pkill -KILL -s "$pid" 2>/dev/null
    fi
    rm -f "$d/master.pid"
}

dovecot_cleanup() {
    local d
    for d in $_DOVECOT_DIRS; do dovecot_stop "$d"; done
    if [ -n "${_DOVECOT_MADE_USER:-}" ]; then
        userdel "$_DOVECOT_MADE_USER" 2>/dev/null
        _DOVECOT_MADE_USER=""
    fi
}

dovecot_user() { # name storepath [fs]
    local name=$1 store=$2 layout=${3:-} loc sep=.
    case "$store" in *:*) not_ok "dovecot_user: a ':' in $store"; return 1 ;; esac
    loc="maildir:$store/$name"
    if [ "$layout" = fs ]; then loc="$loc:LAYOUT=fs"; sep=/; fi
    if [ ! -d "$store" ]; then
        mkdir -p "$store" && chown "$DOVECOT_UID:$DOVECOT_GID" "$store" || return 1
    fi
    _dovecot_reach "$store" || return 1
    local users=$DOVECOT_DIR/users old
    old=$(stat -c %Y "$users")
    { grep -v "^$name:" "$users"; printf '%s:{PLAIN}pw::::::userdb_mail=%s\n' "$name" "$loc"; } >"$users.new" &&
        mv "$users.new" "$users" || return 1
    # Dovecot rereads the file when its mtime or size changed: a rewrite
    # of one length in the same second must still be seen.
    touch -d "@$((old + 1))" "$users"
    { grep -v "^$name " "$DOVECOT_DIR/seps"; echo "$name $sep"; } >"$DOVECOT_DIR/seps.new" &&
        mv "$DOVECOT_DIR/seps.new" "$DOVECOT_DIR/seps" || return 1
    # ... and looks at it at most once a second: wait until it has.
    wait_for "Dovecot to see $name at $loc" _dovecot_user_is "$name" "$loc"
}
_dovecot_user_is() { [ "$(dovecot_doveadm user -f mail "$1" 2>/dev/null)" = "$2" ]; }

# dovecot_sep USER: the user's IMAP hierarchy separator.
dovecot_sep() { awk -v u="$1" '$1 == u { print $2 }' "$DOVECOT_DIR/seps"; }
# dovecot_vname USER FOLDER: the folder's name as Dovecot's tools take it.
dovecot_vname() {
    local sep
    sep=$(dovecot_sep "$1")
    if [ "$sep" = / ]; then printf '%s\n' "$2"; else printf '%s\n' "$2" | tr / "$sep"; fi
}

dovecot_doveadm() { doveadm -c "$DOVECOT_CONF" "$@"; }

dovecot_lda() { # user [folder] < msg
    if [ -n "${2:-}" ]; then
        /usr/lib/dovecot/dovecot-lda -c "$DOVECOT_CONF" -d "$1" -m "$(dovecot_vname "$1" "$2")"
    else
        /usr/lib/dovecot/dovecot-lda -c "$DOVECOT_CONF" -d "$1"
    fi
}

dovecot_lmtp() { # user [folder] < msg
    local rcpt=$1
    [ -z "${2:-}" ] || rcpt="$1+$(dovecot_vname "$1" "$2")"
    python3 -c '
import smtplib, sys
c = smtplib.LMTP(sys.argv[1])
c.sendmail("sender@example.org", [sys.argv[2]], sys.stdin.buffer.read())
c.quit()' "$DOVECOT_LMTP_SOCKET" "$rcpt"
}

dovecot_imap() { # cmd user args...
    local cmd=$1 user=$2
    shift 2
    python3 "$DOVECOT_TOOLS/imap.py" "$cmd" 127.0.0.1 "$DOVECOT_IMAP_PORT" "$user" pw "$@"
}

dovecot_imap_snapshot() { dovecot_imap snapshot "$1"; }

# dovecot_snapshot USER: doveadm's view in imap.py snapshot's format.
dovecot_snapshot() {
    local u=$1 t rc=0
    t=$(mktemp -d "$DOVECOT_DIR/snap.XXXXXX") || return 1
    dovecot_doveadm -f tab mailbox status -u "$u" 'messages uidnext uidvalidity' '*' >"$t/status" &&
        dovecot_doveadm fetch -u "$u" \
            'mailbox uid flags date.received.unixtime size.virtual size.physical text' ALL >"$t/fetch" &&
        python3 "$DOVECOT_TOOLS/imap.py" from-doveadm "$(dovecot_sep "$u")" "$t/status" "$t/fetch" || rc=1
    rm -rf "$t"
    return $rc
}

# dovecot_resync_clean USER: doveadm force-resync of every folder finds
# nothing to repair (it says what it repaired, as errors, on stderr, and
# exits 0 all the same): prints what it said, fails when it said anything.
dovecot_resync_clean() {
    local out
    out=$(dovecot_doveadm force-resync -u "$1" '*' 2>&1) || { printf '    %s\n' "$out"; return 1; }
    [ -z "$out" ] || { printf '%s\n' "$out" | sed 's/^/    /'; return 1; }
}

# dovecot_log_mark: the log's length now; dovecot_log_problems MARK:
# prints the errors and warnings logged since (the servers' and LDA's;
# doveadm says its own on stderr), fails when there are any.
dovecot_log_mark() { wc -l <"$DOVECOT_DIR/dovecot.log"; }
dovecot_log_problems() {
    ! tail -n +"$(($1 + 1))" "$DOVECOT_DIR/dovecot.log" | grep -E ': (Error|Warning|Panic|Fatal): '
}

# ------------------------------------------------------------ the fixture
#
# dovecot_fill USER: through Dovecot only, every *.eml of the test data
# (sorted by path, the i-th from 0), each to where i mod 5 says:
#   0 INBOX         dovecot-lda            received now
#   1 Sent          doveadm save           received now
#   2 Archive       IMAP APPEND            received 2001-09-09 + i hours
#   3 Archive/2019  IMAP APPEND            received 2019-01-01 + i hours
#   4 Café/Ünïcode  dovecot-lda -m         received now
# ("Café" itself is only a parent, \Noselect; "Archive" holds mail and a
# child.)  Then, in each folder, the n-th message (by UID, from 0) gets the
# flags of DOVECOT_FLAG_SETS[n mod 8] (doveadm flags add): every system
# flag and the keywords $Label1 $Label2 $Forwarded Junk NonJunk.  Two
# INBOX messages are expunged (UIDs 2 and 5: gaps), and the last of Sent
# (UIDNEXT above every UID).  ACL: doveadm acl set INBOX user=bob lookup
# read (a dovecot-acl file in the Maildir root).  Sets DOVECOT_FILLED to
# the number of messages left.  $DOVECOT_DIR/fill-USER lists what went
# where, in delivery order (so the n-th line of a folder is its UID n):
# FOLDER<TAB>lda|save|append<TAB>FILE.  dovecot-lda drops a first line
# "From ..." (an mbox envelope); the message is otherwise byte for byte
# the file.  Meant for a user with no mail yet (and not named bob).
DOVECOT_FLAG_SETS=(
    ""
    '\Seen'
    '\Seen \Answered'
    '\Flagged $Label1'
    '\Deleted'
    '\Draft'
    '\Seen $Forwarded Junk'
    '\Seen \Answered \Flagged \Draft $Label1 $Label2 NonJunk'
)
DOVECOT_FILL_FOLDERS=(INBOX Sent Archive Archive/2019 'Café/Ünïcode')

_dovecot_fill_how() { case $(($1 % 5)) in 0 | 4) echo lda ;; 1) echo save ;; *) echo append ;; esac; }

dovecot_fill() {
    local u=$1 i=0 f folder
    local -a files
    local manifest=$DOVECOT_DIR/fill-$u
    mapfile -d '' files < <(find "$TD" -name '*.eml' -type f -print0 | LC_ALL=C sort -z)
    [ ${#files[@]} -gt 0 ] || { not_ok "dovecot_fill: no *.eml under $TD"; return 1; }
    for folder in "${DOVECOT_FILL_FOLDERS[@]:1}"; do
        dovecot_doveadm mailbox create -u "$u" "$(dovecot_vname "$u" "$folder")" ||
            { not_ok "dovecot_fill: create $folder"; return 1; }
    done
    : >"$manifest"
    local -a archive=() archive2019=()
    for f in "${files[@]}"; do
        printf '%s\t%s\t%s\n' "${DOVECOT_FILL_FOLDERS[i % 5]}" "$(_dovecot_fill_how $i)" "$f" >>"$manifest"
        case $((i % 5)) in
        0) dovecot_lda "$u" <"$f" ;;
        1) dovecot_doveadm save -u "$u" -m Sent <"$f" ;;
        2) archive+=("$f") ;;
        3) archive2019+=("$f") ;;
        4) dovecot_lda "$u" 'Café/Ünïcode' <"$f" ;;
        esac || { not_ok "dovecot_fill: delivering $f"; return 1; }
        i=$((i + 1))
    done
    # One IMAP session each (a login per message costs a third of a
    # second): the i-th file at 2001-09-09T01:46:40Z or 2019-01-01 + i h.
    dovecot_imap append "$u" Archive --date $((1000000000 + 2 * 3600)) --step $((5 * 3600)) \
        "${archive[@]}" >/dev/null &&
        dovecot_imap append "$u" Archive/2019 --date $((1546300800 + 3 * 3600)) --step $((5 * 3600)) \
            "${archive2019[@]}" >/dev/null || { not_ok "dovecot_fill: IMAP APPEND"; return 1; }
    dovecot_doveadm expunge -u "$u" mailbox INBOX uid 2,5 &&
        dovecot_doveadm expunge -u "$u" mailbox Sent uid "$(((${#files[@]} + 3) / 5))" ||
        { not_ok "dovecot_fill: expunge"; return 1; }
    local n s uids
    for folder in "${DOVECOT_FILL_FOLDERS[@]}"; do
        mapfile -t uids < <(dovecot_doveadm fetch -u "$u" uid mailbox "$(dovecot_vname "$u" "$folder")" ALL |
            awk '/^uid: / { print $2 }' | sort -n)
        for s in 1 2 3 4 5 6 7; do
            local set=""
            for ((n = s; n < ${#uids[@]}; n += 8)); do set="$set${set:+,}${uids[n]}"; done
            [ -n "$set" ] || continue
            # shellcheck disable=SC2086 # the set's flags are separate words
            dovecot_doveadm flags add -u "$u" "${DOVECOT_FLAG_SETS[s]}" \
                mailbox "$(dovecot_vname "$u" "$folder")" uid "$set" ||
                { not_ok "dovecot_fill: flags on $folder"; return 1; }
        done
    done
    dovecot_doveadm acl set -u "$u" INBOX user=bob lookup read || { not_ok "dovecot_fill: acl"; return 1; }
    DOVECOT_FILLED=$((${#files[@]} - 3))
}
