#!/bin/bash
# The live site of tests/site.sh (and scripts/site), without a move:
#  - an IMAP login and an LMTP delivery through the proxy reach the backend
#    mailHost names (srv1), the delivery lands in srv1's store and shows in
#    the mailfs mount;
#  - mailHost changed by ldapmodify to srv2: logins and deliveries follow;
#  - the cutover lock (mailfsLock on the entry) holds both off: IMAP NO
#    [UNAVAILABLE] (a wrong password is still refused as such), LMTP 451
#    retried by the sender; once mailHost is switched and the lock removed,
#    both go through, to srv2;
#  - the site's kick drops a session through the proxy (the client
#    reconnects), and succeeds for a user with none;
#  - site_big makes a big mailbox that Dovecot and mailfs both see;
#  - mv of it through the mount (the lead's engine, with the site's lock
#    and kick configured): routing follows, the hold is lifted, a watching
#    IMAP client reconnects once and finds every message on srv2;
#  - no backend logged an error; site_stop leaves no process behind.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../site.sh"

S=$WORK/site
M=$S/mnt
site_start "$S" || exit 1
no() { ! "$@"; }                                  # check "..." no CMD: CMD fails
count() { find "$1" -type f 2>/dev/null | wc -l; } # DIR: messages in a mount folder
msg() {                                            # SUBJECT: a message
    printf 'From: t@example.org\nTo: u@example.org\nSubject: %s\nMessage-ID: <%s@t-site>\n\n%s\n' \
        "$1" "$1" "$1 body"
}

# --- the site as it starts
check "alice's mailHost is srv1's address" test "$(site_host alice)" = "$SITE_SRV1"
check "alice is pre-filled: $SITE_FILL messages through IMAP" \
    test "$(site_imap uids alice INBOX | wc -l)" = "$SITE_FILL"
check "... and in the mount (srv1/alice/INBOX)" test "$(count "$M/srv1/alice/INBOX")" = "$SITE_FILL"
check "IMAP through the proxy reaches srv1" test "$(site_login alice | cut -d' ' -f1-2)" = "ok srv1"

# --- a delivery through the proxy lands on srv1's store, seen by mailfs
out=$(msg one | site_lmtp alice) || not_ok "delivery through the proxy: $out"
check "delivered at the first attempt" test "${out%% *}" = attempts=1
check "the delivery is in srv1's store on disk" grep -rqs "^Subject: one$" "$S/srv1/alice/new" "$S/srv1/alice/cur"
wait_for "the delivery in the mount" test "$(count "$M/srv1/alice/INBOX")" = $((SITE_FILL + 1))
check "... with its bytes" grep -rqs "^one body$" "$M/srv1/alice/INBOX"
check "IMAP sees it" test "$(site_imap uids alice INBOX | wc -l)" = $((SITE_FILL + 1))

# --- routing follows mailHost
site_set_host eve srv2 || not_ok "ldapmodify of eve's mailHost"
check "eve's mailHost is srv2's address" test "$(site_host eve)" = "$SITE_SRV2"
check "site_backend says srv2" test "$(site_backend eve)" = srv2
check "eve's IMAP login goes to srv2" test "$(site_login eve | cut -d' ' -f1-2)" = "ok srv2"
msg two | site_lmtp eve >/dev/null || not_ok "delivery to eve"
wait_for "eve's delivery in srv2 of the mount" test "$(count "$M/srv2/eve/INBOX")" = 1
check "... and not in srv1" test "$(count "$M/srv1/eve/INBOX")" = "$SITE_FILL"

# --- the cutover lock holds a login and a delivery off
site_lock bob || not_ok "adding mailfsLock"
out=$(site_login bob)
case $out in "no [UNAVAILABLE]"*) ok "a locked user's login: $out" ;; *) not_ok "a locked user's login: $out" ;; esac
msg three | site_lmtp bob >"$WORK/lmtp.out" 2>"$WORK/lmtp.err" &
sender=$!
wait_for "LMTP to answer 451 to a locked user" grep -q ' 451 ' "$WORK/lmtp.err"
refusals_over() { test "$(grep -c ' 451 ' "$WORK/lmtp.err")" -gt "$1"; }
wait_for "LMTP to answer 451 again (the sender retries)" refusals_over 1
check "nothing delivered to bob while locked" \
    test "$(count "$M/srv1/bob/INBOX")/$(count "$M/srv2/bob/INBOX")" = "$SITE_FILL/0"
check "... only 4xx answers" test -z "$(grep -v ' 4[0-9][0-9] ' "$WORK/lmtp.err")"
site_set_host bob srv2 && site_unlock bob || not_ok "switching bob to srv2 and unlocking"
wait "$sender" || not_ok "the held delivery failed: $(cat "$WORK/lmtp.out" "$WORK/lmtp.err")"
out=$(cat "$WORK/lmtp.out")
case $out in attempts=1\ *) not_ok "the delivery was not held: $out" ;; *) ok "the held delivery went through: $out" ;; esac
wait_for "the held delivery in srv2 (the new host)" test "$(count "$M/srv2/bob/INBOX")" = 1
check "... not in srv1" test "$(count "$M/srv1/bob/INBOX")" = "$SITE_FILL"
check "bob's login after the lock goes to srv2" test "$(site_login bob | cut -d' ' -f1-2)" = "ok srv2"

# --- kick
python3 "$SITE_TOOL" watch "$SITE_PROXY" carol "$SITE_PW" 60 >"$WORK/watch" 2>&1 &
watcher=$!
wait_for "carol's session to be up" grep -q "srv1 messages=$SITE_FILL " "$WORK/watch"
check "kick carol succeeds" "$S/kick" carol
wait_for "carol's session to be dropped" grep -q "session dropped" "$WORK/watch"
wait_for "carol's client to reconnect" grep -q "reconnected (session 2)" "$WORK/watch"
kill "$watcher"
wait "$watcher" 2>/dev/null
check "kick of a user without a session succeeds" "$S/kick" dave

# --- a big mailbox
site_big dave 1000 || not_ok "site_big"
wait_for "dave's 1000 more messages in the mount" test "$(count "$M/srv1/dave/INBOX")" = $((SITE_FILL + 1000))
check "... and through IMAP" test "$(site_imap uids dave INBOX | wc -l)" = $((SITE_FILL + 1000))

# --- a move through the mount, with the site's lock and kick configured
python3 "$SITE_TOOL" watch "$SITE_PROXY" dave "$SITE_PW" 60 >"$WORK/watch-dave" 2>&1 &
watcher=$!
wait_for "dave's session to be up" grep -q "srv1 messages=$((SITE_FILL + 1000)) " "$WORK/watch-dave"
check "mv of dave's mailbox through the mount" mv "$M/srv1/dave" "$M/srv2/"
check "dave's mailHost is srv2's address" test "$(site_backend dave)" = srv2
check "no mailfsLock left on dave's entry" test -z "$(ldapsearch -x -H "$LDAP_URI" \
    -b uid=dave,ou=people,dc=example,dc=org -LLL mailfsLock | grep -i '^mailfsLock')"
check "the move held dave off and kicked his sessions (daemon.log)" \
    grep -q "kicked dave's sessions" "$S/daemon.log"
wait_for "dave's client to be back, on srv2, with every message" \
    grep -q "srv2 messages=$((SITE_FILL + 1000)) " "$WORK/watch-dave"
kill "$watcher"
wait "$watcher" 2>/dev/null
check "dave's client reconnected once" test "$(grep -c 'reconnected' "$WORK/watch-dave")" = 1

# --- a wrong password is refused as such, lock or not (last: the failure
# costs the client's IP Dovecot's auth penalty, seconds at its next login)
site_lock bob || not_ok "adding mailfsLock again"
out=$(python3 "$SITE_TOOL" login "$SITE_PROXY" bob wrong)
case $out in "no [AUTHENTICATIONFAILED]"*) ok "a wrong password while locked: $out" ;;
*) not_ok "a wrong password while locked: $out" ;; esac
site_unlock bob

# --- logs and stop
# (but the kicks: doveadm kick ends a session's process with SIGTERM)
for n in srv1 srv2; do
    check "backend $n logged no error" no grep -E ': (Error|Warning|Panic|Fatal): ' \
        <(grep -v ': Warning: Killed with signal 15 (by pid=' "$S/dovecot/$n/dovecot.log")
done
check "the proxy logged no error but the locked lookups" no grep -E ': (Error|Warning|Panic|Fatal): ' \
    <(grep -v 'passdb lookup(bob): Auth PASS lookup failed' "$S/dovecot/proxy/dovecot.log")
site_stop
check "site_stop: unmounted" no mountpoint -q "$M"
for n in proxy srv1 srv2; do
    check "site_stop: no process of Dovecot $n" test -z "$(dovecot_procs "$S/dovecot/$n")"
done
check "site_stop: slapd gone" test ! -f "$S/ldap/slapd.pid"
exit $((FAILS > 0))
