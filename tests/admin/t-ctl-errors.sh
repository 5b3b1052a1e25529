#!/bin/bash
# Errnos and messages that say what happened (issue 10): 256-byte names
# give ENAMETOOLONG (mount and mailfsctl), ln and ln -s EPERM, undo says
# whether the id is unknown or the mailbox moved on, every command has its
# own --help, an unknown command says so, check without [directory] says
# what it checked; mailfsctl moves shows the lock time of a running move
# ticking, keeps a finished move's rate through undo and purge, shows no
# ETA while a move makes no progress, and keeps its columns with imports
# and control characters in names; store list counts visible mailboxes
# and their messages alike, retained copies apart.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1 srv2 srv3 || exit 1
M=$S/mnt
C() { "$B/mailfsctl" -c "$S/conf" "$@"; }
mount_fg "$S" || exit 1
EML=$(find "$TD/eml" -name '*.eml' -type f | sort | head -3)
mkdir -p "$M/srv1/alice/INBOX" "$M/srv1/carol/INBOX"
for f in $EML; do cp "$f" "$M/srv1/alice/INBOX/"; cp "$f" "$M/srv1/carol/INBOX/"; done

# --- names of 256 bytes
long=$(printf 'a%.0s' $(seq 256))
check "touch of a 256-byte name: ENAMETOOLONG" \
    bash -c "touch '$M/srv1/alice/INBOX/$long' 2>&1 | grep -q 'File name too long'"
check "mkdir of a 256-byte mailbox: ENAMETOOLONG" \
    bash -c "mkdir '$M/srv1/$long' 2>&1 | grep -q 'File name too long'"
check "stat of a 256-byte name: ENAMETOOLONG" \
    bash -c "stat '$M/srv1/alice/$long' 2>&1 | grep -q 'File name too long'"
out=$(C mailbox create srv1 "$long" 2>&1)
check "mailfsctl mailbox create of a 256-byte name: $(echo "$out" | cut -c1-60)..." \
    bash -c "[ \"\$(printf '%s' '$out' | grep -c 'File name too long')\" = 1 ]"
out=$(C deliver srv1 alice "$long" </etc/hostname 2>&1)
check "mailfsctl deliver to a 256-byte folder: ENAMETOOLONG" \
    bash -c "printf '%s' '$out' | grep -q 'File name too long'"
check "a 255-byte name is fine" touch "$M/srv1/alice/INBOX/${long:1}"
rm -f "$M/srv1/alice/INBOX/${long:1}"

# --- links
one=$(ls "$M/srv1/alice/INBOX" | head -1)
check "ln -s in the mount: EPERM" \
    bash -c "ln -s x '$M/srv1/alice/INBOX/sl' 2>&1 | grep -q 'Operation not permitted'"
check "ln in the mount: EPERM" \
    bash -c "ln '$M/srv1/alice/INBOX/$one' '$M/srv1/alice/INBOX/hl' 2>&1 | grep -q 'Operation not permitted'"

# --- help and unknown commands (no configuration needed)
for cmd in store mailbox deliver move import compact moves recover undo purge check; do
    out=$(MAILFS_CONFIG=/nonexistent "$B/mailfsctl" "$cmd" --help 2>&1)
    rc=$?
    others=$(printf '%s\n' "$out" | grep -c '^usage:')
    if [ $rc = 0 ] && printf '%s' "$out" | grep -q "^usage: mailfsctl \[-c CONFIG\] $cmd" && [ "$others" = 1 ] &&
        ! printf '%s' "$out" | grep -q 'commands:'; then
        ok "mailfsctl $cmd --help: its own help"
    else
        not_ok "mailfsctl $cmd --help (rc=$rc): $out"
    fi
done
check "mailfsctl store create --help" bash -c "'$B/mailfsctl' store create --help | grep -q 'store create NAME'"
out=$("$B/mailfsctl" -c "$S/conf" frobnicate 2>&1)
rc=$?
if [ $rc = 2 ] && printf '%s' "$out" | grep -q "unknown command 'frobnicate'"; then
    ok "unknown command: says so, exit 2 ($out)"
else
    not_ok "unknown command (rc=$rc): $out"
fi
out=$(C move alice 2>&1)
check "wrong arguments: the command's usage ($out)" \
    bash -c "printf '%s' '$out' | grep -q '^usage: mailfsctl \[-c CONFIG\] move \[--prepare .*\] MAILBOX TARGET_STORE'"

# --- check without [directory]
out=$(C check 2>&1)
check "check without [directory] says it checked the stores only" \
    bash -c "printf '%s' '$out' | grep -q 'no \[directory\] in .*: checked the stores and the journal only' &&
             ! printf '%s' '$out' | grep -q 'directory and stores agree'"

# --- undo: unknown id, mailbox moved on
out=$(C undo 999 2>&1)
check "undo of an unknown id says so ($out)" bash -c "printf '%s' '$out' | grep -q 'no move 999 in the journal'"
C move alice srv2 >/dev/null && C move alice srv3 >/dev/null
m1=$(moves_of "$S" 'm["source"] == "srv1" and m["mailbox"] == "alice"')
m2=$(moves_of "$S" 'm["source"] == "srv2" and m["mailbox"] == "alice"')
out=$(C undo "$m1" 2>&1)
check "undo of a move whose mailbox moved on names the later move ($out)" \
    bash -c "printf '%s' '$out' | grep -q 'alice is no longer in srv2: move $m2 moved it to srv3'"

# --- store list: visible mailboxes and their messages alike, retained apart
# sizes are "4.1 KiB" with a no-break space: one field once it is gone
row=$(C store list | sed 's/\xc2\xa0//g' | awk '$1 == "srv1"')
n=$(echo $EML | wc -w)
check "store list srv1: 1 mailbox, $n messages, 1 retained mailbox of $n messages ($row)" \
    test "$(echo "$row" | awk '{print $3, $4, $6, $7}')" = "1 $n 1 $n"
row=$(C store list | sed 's/\xc2\xa0//g' | awk '$1 == "srv3"')
check "store list srv3: alice with $n messages, nothing retained ($row)" \
    test "$(echo "$row" | awk '{print $3, $4, $6, $7}')" = "1 $n 0 0"

# --- a finished move's rate survives undo and purge
rate() { C moves --json | grep "\"id\": $1," | grep -o '"rate_bytes_per_s": [0-9]*'; }
C move carol srv2 >/dev/null
mc=$(moves_of "$S" | sort -n | tail -1)
r0=$(rate "$mc")
C undo "$mc" >/dev/null
check "rate after undo unchanged ($r0)" test "$(rate "$mc")" = "$r0"
C purge --all >/dev/null
check "rate after purge unchanged ($r0)" test "$(rate "$mc")" = "$r0"

# --- a running move: LOCKED ticks, ETA "-" while stalled
# The mover stops once it has locked the mailbox for its cutover.
mkdir -p "$M/srv1/big/INBOX" "$M/srv1/big/Archive"
for i in $(seq 10); do
    head -c 1048576 /dev/urandom >"$M/srv1/big/INBOX/$i.eml"
    head -c 1048576 /dev/urandom >"$M/srv1/big/Archive/$i.eml"
done
lock_s() { C moves --json | grep '"mailbox": "big"' | head -1 | grep -o '"lock_s": [0-9.]*' | cut -d' ' -f2; }
eta() { C moves | awk -v id="$1" '$1 == id {print $11}'; }
touch "$WORK/stall"
MAILFS_STALL=locked MAILFS_STALL_FILE=$WORK/stall "$B/mailfsctl" -c "$S/conf" move big srv2 >/dev/null 2>&1 &
mover=$!
wait_for "the move of big to stall in its cutover" moves_are "$S" 'm["mailbox"] == "big" and m["state"] == "running"' step cutover
mb=$(moves_of "$S" 'm["mailbox"] == "big"')
first=$(lock_s)
later() { [ "$(echo "$(lock_s) > $first + 0.2" | bc)" = 1 ]; }
check "LOCKED of the running move is above 0 ($first s)" test "$(echo "$first > 0" | bc)" = 1
wait_for "LOCKED to tick" later && ok "LOCKED ticks while the move runs ($first s, then $(lock_s) s)"
no_eta() { [ "$(eta "$mb")" = "-" ]; } # re-run at every poll
wait_for "ETA '-' while the move makes no progress" no_eta &&
    ok "ETA is - while the move makes no progress"
rm -f "$WORK/stall"
wait $mover
check "the stalled move finished" test "$(moves_of "$S" "m['id'] == $mb" state)" = done
l1=$(lock_s)
check "LOCKED of a finished move stays ($l1)" bash -c "[ \"\$('$B/mailfsctl' -c '$S/conf' moves --json | grep '\"mailbox\": \"big\"' | head -1 | grep -o '\"lock_s\": [0-9.]*' | cut -d' ' -f2)\" = '$l1' ]"

# --- columns: an import (a long path) and names with control characters
odd=$(printf 'odd\tname\nwith newline\001')
mkdir -p "$M/srv1/$odd/INBOX"
C move "$odd" srv2 >/dev/null
mkdir -p "$WORK/a very long folder name for the import source that is wider than any column"
cp "$TESTDATA/pst/aspose_source.pst" "$WORK/a very long folder name for the import source that is wider than any column/imported.pst"
C import "$WORK/a very long folder name for the import source that is wider than any column/imported.pst" srv3 imp >/dev/null 2>&1
C moves >"$WORK/moves.all"
# the table; the passes of online moves follow it, one "move N pass K" line each
grep -v '^move [0-9]* pass ' "$WORK/moves.all" >"$WORK/moves"
check "moves: a pass line for each pass of the online moves" \
    test "$(grep -c '^move [0-9]* pass [0-9]* \(bulk\|delta\|final\) ' "$WORK/moves.all")" -gt 0
nmoves=$(moves_count "$S")
check "moves: one line per move and a header" test "$(wc -l <"$WORK/moves")" = $((nmoves + 1))
col=$(head -1 "$WORK/moves" | grep -bo 'STATE' | cut -d: -f1)
bad=$(tail -n +2 "$WORK/moves" | cut -c$((col + 1))- | awk '$1 !~ /^(running|prepared|committed|done|rolled-back|undone|purged)$/' | wc -l)
check "moves: every STATE in its column" test "$bad" = 0
check "moves: control characters escaped" grep -q 'odd\\tname\\nwith newline\\x01' "$WORK/moves"
check "moves: an import shows its file's name" grep -q ' imported.pst ' "$WORK/moves"
C moves --json >"$WORK/moves.json"
check "moves --json is valid JSON, names escaped" python3 -c "
import json
moves = json.load(open('$WORK/moves.json'))
assert any(m['mailbox'] == 'odd\\tname\\nwith newline\\x01' for m in moves)"

unmount "$S"
[ $FAILS = 0 ]
