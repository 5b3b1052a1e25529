# tests/move/online-lib.sh — shared by the online-move tests (t-online-*.sh);
# source after tests/lib.sh (and tests/ldap.sh when a directory is wanted).
#
#   osite DIR K1 K2 [ldap]  a site with stores srv1 (kind K1: sqlite or
#                           maildir) and srv2 (K2); with "ldap", a [directory]
#                           on the running test slapd whose stores point
#                           mailHost at srvN.example.org, and the cutover's
#                           hold: description = "mailfs-lock %t" (the test
#                           schema has no free attribute; description is
#                           multi-valued, present in inetOrgPerson, and
#                           unused by the tests' entries).
#                           $KICK set: [mailfs] kick = $KICK.
#   fill MAILBOXDIR         INBOX (spamassassin, two flagged), Archive/2019
#                           (cpython, \Archive), an ACL: through the mount.
#   snap MAILBOXDIR         prints names, sizes, mtimes, modes, bytes and
#                           xattrs (flags, special-use, ACL) of a mailbox.
#   deliver_new DIR STORE MAILBOX N [FLAGS]
#                           N messages by `mailfsctl deliver` (the MTA's way,
#                           not through the kernel: no directory lock).
#   settled DIR USER SNAP WHERE [ldap]
#                           checks a site at rest: USER visible in store WHERE
#                           only, equal to the snapshot SNAP, no move
#                           unsettled, no hidden copy, source not locked; with
#                           ldap: mailHost says WHERE, no hold on the entry.

# store_conf NAME KIND [DIRECTORY]: a [store] group.
store_conf() {
    case $2 in
    maildir) printf '[store %s]\nbackend = maildir\npath = %s\n' "$1" "$1" ;;
    *) printf '[store %s]\npath = %s.db\n' "$1" "$1" ;;
    esac
    [ -z "${3:-}" ] || printf 'directory = %s\n' "$3"
}

osite() {
    local d=$1 k1=$2 k2=$3 dir=${4:-}
    mkdir -p "$d/mnt"
    {
        printf '[mailfs]\njournal = journal.db\n'
        [ -z "${KICK:-}" ] || printf 'kick = %s\n' "$KICK"
        if [ "$dir" = ldap ]; then
            printf '%s\n' "$LDAP_PW" >"$d/ldap.secret"
            chmod 600 "$d/ldap.secret"
            printf '[directory]\nuri = %s\nbase = ou=people,dc=example,dc=org\nfilter = (uid=%%s)\n' "$LDAP_URI"
            printf 'bind-dn = %s\npassword-file = %s\nallow-cleartext = yes\n' "$LDAP_ADMIN" "$d/ldap.secret"
            printf 'lock = description=mailfs-lock %%t\nlock-seconds = 60\n'
            store_conf srv1 "$k1" mailHost=srv1.example.org
            store_conf srv2 "$k2" mailHost=srv2.example.org
        else
            store_conf srv1 "$k1"
            store_conf srv2 "$k2"
        fi
    } >"$d/conf"
    printf '%s %s\n' "$k1" "$k2" >"$d/kinds"
    for s in srv1 srv2; do "$B/mailfsctl" -c "$d/conf" store create $s >/dev/null || return 1; done
}

fill() {
    local m=$1
    mkdir -p "$m/INBOX" "$m/Archive/2019" || return 1
    cp -a "$TD/eml/spamassassin/." "$m/INBOX/" || return 1
    cp -a "$TD/eml/cpython/." "$m/Archive/2019/" || return 1
    local first
    for first in $(find "$m/INBOX" -maxdepth 1 -type f | sort | head -2); do
        setfattr -n user.mail.flags -v '\Seen $Label1' "$first" || return 1
    done
    setfattr -n user.mail.special-use -v '\Archive' "$m/Archive" &&
        setfattr -n user.mail.acl -v 'bob lr' "$m"
}

snap() {
    (cd "$1" && find . -printf '%P %s %T@ %m\n' | sort &&
        find . -type f -print0 | sort -z | xargs -0 -r sha256sum &&
        find . -print0 | sort -z | xargs -0 getfattr -d 2>/dev/null)
}

deliver_new() { # dir store mailbox n [flags]
    local i f
    for i in $(seq "$4"); do
        f=$(ls "$TD/eml/tika" | sed -n "$(((i - 1) % 9 + 1))p")
        "$B/mailfsctl" -c "$1/conf" deliver ${5:+--flags "$5"} "$2" "$3" <"$TD/eml/tika/$f" ||
            return 1
    done
}

# hidden_copies DIR / source_locks DIR: what moves left in the stores.
hidden_copies() {
    local n=0 s k
    read -r k1 k2 <"$1/kinds"
    for s in srv1:$k1 srv2:$k2; do
        k=${s#*:} s=${s%:*}
        case $k in
        maildir) n=$((n + $(find "$1/$s" -maxdepth 1 -name '~mailfs~move~*' | wc -l))) ;;
        *) n=$((n + $(sqlite3 "$1/$s.db" "select count(*) from mailbox where state = 1"))) ;;
        esac
    done
    echo $n
}
source_locks() {
    local n=0 s k
    read -r k1 k2 <"$1/kinds"
    for s in srv1:$k1 srv2:$k2; do
        k=${s#*:} s=${s%:*}
        case $k in
        maildir) n=$((n + $(cat "$1/$s"/*/mailfs-mailbox 2>/dev/null | grep -c '^lock-move [1-9]'))) ;;
        *) n=$((n + $(sqlite3 "$1/$s.db" "select count(*) from mailbox where lock_move != 0"))) ;;
        esac
    done
    echo $n
}
unsettled_moves() {
    moves_count "$1" 'm["state"] in ("running", "committed")'
}
none_unsettled() { test "$(unsettled_moves "$1")" = 0; }

# hold_of USER: the hold values on the user's entry (empty: none).
hold_of() {
    ldapsearch -x -H "$LDAP_URI" -b "ou=people,dc=example,dc=org" -LLL "(uid=$1)" description |
        awk '/^description:/ {print $2, $3}'
}
no_hold() { [ -z "$(hold_of "$1")" ]; }

# settled DIR USER SNAP WHERE [ldap] [LABEL]: see the header.
settled() {
    local d=$1 u=$2 snapf=$3 where=$4 dir=${5:-} label=${6:-$4}
    local n1=0 n2=0 seen=none
    [ -d "$d/mnt/srv1/$u" ] && n1=1 seen=srv1
    [ -d "$d/mnt/srv2/$u" ] && n2=1 seen=srv2
    check "$label: $u visible in exactly one store ($n1 + $n2)" test $((n1 + n2)) = 1
    check "$label: $u is in $where (found in $seen)" test "$seen" = "$where"
    if [ "$seen" != none ]; then
        snap "$d/mnt/$seen/$u" >"$d/snap.after"
        check "$label: every message byte-identical, with its flags, folders and ACL" \
            cmp -s "$snapf" "$d/snap.after"
        cmp -s "$snapf" "$d/snap.after" || diff "$snapf" "$d/snap.after" | head -5 | sed 's/^/#   /'
    fi
    wait_for "$label: no move left unsettled" none_unsettled "$d" &&
        ok "$label: no move left unsettled"
    check "$label: no hidden copy left" test "$(hidden_copies "$d")" = 0
    check "$label: no mailbox locked" test "$(source_locks "$d")" = 0
    if [ "$dir" = ldap ]; then
        wait_for "$label: the hold lifted from $u's entry" no_hold "$u" &&
            ok "$label: no hold on $u's entry (ldapsearch)"
        check "$label: mailHost of $u points at $where" test "$(ldap_host "$u")" = "$where.example.org"
    fi
}
