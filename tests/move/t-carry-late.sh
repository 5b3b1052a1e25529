#!/bin/bash
# Late mail carried to where its mailbox moved (DESIGN 10): mail delivered
# into a mailbox made anew in the move's source is carried into the target
# by `mailfsctl recover`.  A message whose name and size the target
# already holds is removed from the source only when the target's copy has
# its bytes (carried before a crash); a different message that merely has
# that name and size (a re-created sqlite mailbox names its deliveries 1.eml,
# 2.eml... again) is carried under a name of its own, never dropped.
# Sources: sqlite, then Maildir (its names are Dovecot base names; the
# colliding one is written into the Maildir by hand, as a crash would
# leave it).
set -u
. "$(dirname "$0")/../lib.sh"

MA=$(find "$TD/eml" -type f -size +2k | sort | head -1)
[ -n "$MA" ] || { not_ok "fixture: a test message"; exit 1; }
grep -q '^Subject:' "$MA" || { not_ok "fixture: $MA has a Subject"; exit 1; }
MB=$(find "$TD/eml" -type f -size +2k | sort | sed -n 2p)
# A2: another message of A's size and name (its subject spelt otherwise).
sed '0,/^Subject:/s//SUBJECT:/' "$MA" >"$WORK/A2"
MA2=$WORK/A2
check "fixture: A2 has A's size and other bytes" \
    test "$(stat -c %s "$MA2")" = "$(stat -c %s "$MA")" -a "$(sha256sum <"$MA2")" != "$(sha256sum <"$MA")"
sum() { sha256sum <"$1" | cut -d' ' -f1; }

# carry_case LABEL SRC TGT: alice moved from SRC to TGT, then A2 (A's name
# and size, other bytes) and B (B's name and bytes) reach alice in SRC.
carry_case() {
    local label=$1 src=$2 tgt=$3 S=$WORK/$1
    local M=$S/mnt
    site "$S" $src $tgt || { not_ok "$label: site"; return; }
    src=${src%@*} tgt=${tgt%@*}
    C() { "$B/mailfsctl" -c "$S/conf" "$@"; }
    C mailbox create $src alice >/dev/null || not_ok "$label: mailbox create"
    C deliver $src alice <"$MA" || not_ok "$label: deliver A"
    C deliver $src alice <"$MB" || not_ok "$label: deliver B"
    mount_fg "$S" || return
    local F=$M/$src/alice/INBOX nameA nameB
    nameA=$(for n in $(ls "$F"); do cmp -s "$F/$n" "$MA" && echo "$n"; done)
    nameB=$(for n in $(ls "$F"); do cmp -s "$F/$n" "$MB" && echo "$n"; done)
    check "$label: A and B delivered ($nameA, $nameB)" test -n "$nameA" -a -n "$nameB"
    mv "$M/$src/alice" "$M/$tgt/" || not_ok "$label: mv alice"
    unmount "$S"

    # Late mail: alice made anew in the source, A2 under A's name, B again.
    C mailbox create $src alice >/dev/null || not_ok "$label: mailbox create again"
    if [ "$label" = sqlite ]; then # sqlite: names by UID
        C deliver $src alice <"$MA2" || not_ok "$label: deliver A2"
        C deliver $src alice <"$MB" || not_ok "$label: deliver B again"
    else # Maildir: the colliding names written as a crash would leave them
        local cur
        cur=$(find "$S/$src" -type d -name cur -path '*alice*' | head -1)
        cp "$MA2" "$cur/$nameA"
        cp "$MB" "$cur/$nameB"
    fi
    mount_fg "$S" || return
    local late=$M/$src/alice/INBOX
    check "$label: the late mail is in the source under the target's names" \
        test "$(sum "$late/$nameA")" = "$(sum "$MA2")" -a "$(sum "$late/$nameB")" = "$(sum "$MB")"
    unmount "$S"

    C recover >"$S/recover.out" 2>&1
    check "$label: recover carried both late messages ($(tr '\n' ' ' <"$S/recover.out"))" \
        grep -q '^2 late message(s) carried' "$S/recover.out"
    mount_fg "$S" || return
    local T=$M/$tgt/alice/INBOX
    (cd "$T" && sha256sum -- *) >"$S/target.sums"
    check "$label: the target keeps A under its name, its bytes" \
        test "$(sum "$T/$nameA")" = "$(sum "$MA")"
    check "$label: the target keeps B under its name, its bytes" \
        test "$(sum "$T/$nameB")" = "$(sum "$MB")"
    check "$label: A2 carried, with its own bytes, under a name of its own" \
        test "$(grep -c "^$(sum "$MA2") " "$S/target.sums")" = 1
    check "$label: A2's name is A's with .carried-" \
        grep -q "^$(sum "$MA2")  $nameA\.carried-[0-9]*$" "$S/target.sums"
    check "$label: B (already there, same bytes) not duplicated" \
        test "$(grep -c "^$(sum "$MB") " "$S/target.sums")" = 1
    check "$label: the target holds exactly A, B, A2" test "$(wc -l <"$S/target.sums")" = 3
    check "$label: the late mail left the source" test -z "$(ls "$late")"
    unmount "$S"
}

carry_case sqlite srv1 srv2
carry_case maildir srv1@maildir srv2

[ $FAILS = 0 ]
