#!/bin/bash
# The site opens the directory only for the commands that use it: with
# [directory] configured and its password file gone (a typo, a rotated
# secret), the journal and store commands (moves, moves --json, compact,
# purge, store list) still work and show the move made earlier, while
# move, recover, undo and check say, naming the file, why they cannot
# run.  No LDAP server is needed: the file is read before
# any connection.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1 srv2 || exit 1
C() { "$B/mailfsctl" -c "$S/conf" "$@"; }
C mailbox create srv1 alice >/dev/null || { not_ok "fixture: mailbox"; exit 1; }
C deliver srv1 alice <"$(find "$TD/eml" -name "*.eml" | sort | head -1)" || { not_ok "fixture: deliver"; exit 1; }
C move alice srv2 >/dev/null || { not_ok "fixture: move"; exit 1; }

# the same site, now with a [directory] whose password file is missing
cp "$S/conf" "$S/conf.nodir"
printf '[directory]\nuri = ldap://127.0.0.1:9\nbind-dn = cn=admin,dc=example,dc=org\n' >>"$S/conf"
printf 'password-file = %s\nbase = dc=example,dc=org\nallow-cleartext = yes\n' \
    "$WORK/missing-pw" >>"$S/conf"

C moves >"$WORK/moves.out" 2>"$WORK/moves.err"
check "moves: exit 0 without the password file" test $? = 0
check "... lists the earlier move" grep -q "alice.*srv1.*srv2" "$WORK/moves.out"
check "... says nothing on stderr" test ! -s "$WORK/moves.err"
C moves --json >"$WORK/moves.json" 2>/dev/null
check "moves --json: exit 0" test $? = 0
check "... valid JSON with the move" \
    python3 -c "import json,sys; m=json.load(open(sys.argv[1])); assert any('alice' in json.dumps(x) for x in (m if isinstance(m, list) else m.get('moves', [m])))" "$WORK/moves.json"
for cmd in "compact srv2" "purge" "store list"; do
    C $cmd >/dev/null 2>"$WORK/err"
    check "$cmd: works" test $? = 0
done

for cmd in "move alice srv1" "recover" "undo 1" "check"; do
    C $cmd >/dev/null 2>"$WORK/err"
    check "$cmd: refused (exit non-zero)" test $? != 0
    check "... saying the password file cannot be read" \
        grep -q "missing-pw: cannot read the bind password" "$WORK/err"
done
check "the mailbox is still in srv2" bash -c "'$B/mailfsctl' -c '$S/conf.nodir' moves | grep -q done"

[ $FAILS = 0 ]
