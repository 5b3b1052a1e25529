#!/bin/bash
# No password in clear: against the test slapd, a [directory] with
# bind-dn over ldap:// without starttls is refused before anything is sent
# (the mount is refused with one clear line, `mailfsctl check` exits 2);
# with allow-cleartext = yes (for tests only) the same configuration
# works.  ldapi:// with bind-dn is not network traffic and is accepted.
# A password file readable by group or others gets one warning line
# naming it; a 0600 one none.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../ldap.sh"

L=$WORK/ldap
slapd_start "$L" || exit 1
ldap_person alice srv1.example.org || { not_ok "fixture: alice"; exit 1; }
printf '%s\n' "$LDAP_PW" >"$WORK/bindpw"
chmod 600 "$WORK/bindpw"

S=$WORK/site
mkdir -p "$S/mnt"
write_conf() { # uri extra-[directory]-lines
    {
        printf '[mailfs]\njournal = journal.db\n[directory]\nuri = %s\n' "$1"
        printf 'bind-dn = %s\npassword-file = %s\nbase = ou=people,dc=example,dc=org\n' \
            "$LDAP_ADMIN" "$WORK/bindpw"
        printf '%b' "$2"
        printf '[store srv1]\npath = srv1.db\ndirectory = mailHost=srv1.example.org\n'
    } >"$S/conf"
}
C() { "$B/mailfsctl" -c "$S/conf" "$@"; }
write_conf "$LDAP_URI" ""
C store create srv1 >/dev/null && C mailbox create srv1 alice >/dev/null ||
    { not_ok "fixture: store"; exit 1; }

# --- ldap:// with a password and no StartTLS: refused
# not -f: where the mount is (wrongly) made, the command returns all the same
"$B/mailfs" "$S/conf" "$S/mnt" >"$WORK/mount.out" 2>&1
check "mount refused (exit 1)" test $? = 1
if mountpoint -q "$S/mnt"; then
    not_ok "... nothing mounted"
    fusermount3 -u "$S/mnt"
else
    ok "... nothing mounted"
fi
check "... one line" test "$(wc -l <"$WORK/mount.out")" = 1
check "... that says the password would go in clear and what to do" \
    grep -q "refusing a simple bind (bind-dn) over ldap:// without StartTLS, which sends the password in clear; set starttls = yes" "$WORK/mount.out"
C check >"$WORK/check.out" 2>"$WORK/check.err"
check "mailfsctl check exits 2" test $? = 2
check "... with the same line" grep -q "sends the password in clear" "$WORK/check.err"
C recover >/dev/null 2>"$WORK/recover.err"
check "mailfsctl recover is refused too" grep -q "sends the password in clear" "$WORK/recover.err"
check "commands without the directory still work (store list)" C store list >/dev/null
check "the password is in no output" bash -c "! grep -q '$LDAP_PW' '$WORK'/*.out '$WORK'/*.err"

# --- the same with allow-cleartext = yes (tests only): works
write_conf "$LDAP_URI" "allow-cleartext = yes\n"
C check >"$WORK/check2.out" 2>"$WORK/check2.err"
check "allow-cleartext = yes: check exits 0" test $? = 0
check "... without a warning for the 0600 password file" \
    bash -c "! grep -q 'password file' '$WORK/check2.err'"
mount_fg "$S" || exit 1
check "... the mount works" test -d "$S/mnt/srv1/alice"
unmount "$S"
write_conf "$LDAP_URI" "allow-cleartext = maybe\n"
C check >/dev/null 2>"$WORK/check3.err"
check "allow-cleartext = maybe is a config error (exit 2)" test $? = 2
check "... naming the key" grep -q "allow-cleartext: 'maybe' is not yes or no" "$WORK/check3.err"

# --- ldapi:// (a local socket) with bind-dn: nothing crosses a network
write_conf "$LDAPI_URI" ""
C check >/dev/null 2>"$WORK/check4.err"
check "ldapi:// with bind-dn is accepted (check exits 0)" test $? = 0

# --- a password file that others can read: one warning naming it
chmod 644 "$WORK/bindpw"
write_conf "$LDAP_URI" "allow-cleartext = yes\n"
C check >/dev/null 2>"$WORK/check5.err"
check "0644 password file: check still works (exit 0)" test $? = 0
check "... one warning naming the file" \
    test "$(grep -c "$WORK/bindpw: the LDAP password file is readable by group or others" "$WORK/check5.err")" = 1
: >"$S/daemon.log"
mount_fg "$S" || exit 1
unmount "$S"
check "... the mount warns once too" \
    test "$(grep -c "$WORK/bindpw: the LDAP password file is readable" "$S/daemon.log")" = 1
check "the password is in no log or error text" \
    bash -c "! grep -q '$LDAP_PW' '$WORK'/*.err '$S/daemon.log'"

[ $FAILS = 0 ]
