#!/bin/bash
# Backups see every change (issue 10): st_ctime moves on every change of a
# message, folder or mailbox (bytes, mode, owner, xattrs, rename, mtime);
# rewriting a message's bytes dates it, unless the writer then sets the
# mtime (cp -a, rsync -a, tar do), so that find -newer, tar --newer and an
# rsync -a --delete restore see an in-place rewrite of the same size; and
# times at 0, before 1970 and at the ends of the store's range are kept
# exactly, past them refused with EOVERFLOW instead of wrapping.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1 || exit 1
M=$S/mnt
mount_fg "$S" || exit 1

mkdir -p "$M/srv1/alice/INBOX/sub" || exit 1
i=0
for f in "$TD"/eml/*/*; do
    [ -f "$f" ] || continue
    cp -a "$f" "$M/srv1/alice/INBOX/m$i.eml"
    i=$((i + 1))
    [ $i -ge 6 ] && break
done
check "six messages copied in" test "$i" = 6
A=$M/srv1/alice
F=$A/INBOX
msg=$F/m0.eml

ctime() { stat -c %.9Z "$1"; }
mtime() { stat -c %.9Y "$1"; }
# later A B: decimal seconds A > B
later() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; }

# changes NODE DESCRIPTION COMMAND...: ctime of NODE moves with COMMAND
# (NODE may be OLD=>NEW for a rename).
changes() {
    local node=$1 what=$2 before after
    shift 2
    before=$(ctime "${node%=>*}")
    if ! "$@"; then
        not_ok "$what: the command failed"
        return
    fi
    after=$(ctime "${node#*=>}")
    if later "$after" "$before"; then ok "ctime moves: $what"; else not_ok "ctime moves: $what ($before -> $after)"; fi
}

# --- ctime: messages
check "cp -a: the ctime is the copy's, not the kept mtime" later "$(ctime "$msg")" "$(mtime "$msg")"
changes "$msg" "chmod of a message" chmod 0640 "$msg"
changes "$msg" "chown of a message" chown 1234:5678 "$msg"
changes "$msg" "flags of a message" setfattr -n user.mail.flags -v '\Seen' "$msg"
changes "$msg" "touch -m -d of a message" touch -m -d '2001-02-03 04:05:06' "$msg"
m_before=$(mtime "$msg")
changes "$msg" "rewrite of a message's bytes" sh -c "printf X | dd of='$msg' bs=1 seek=3 conv=notrunc status=none"
check "the rewrite moved the mtime too" later "$(mtime "$msg")" "$m_before"
m_before=$(mtime "$msg")
changes "$msg" "chmod does not date the bytes" chmod 0600 "$msg"
check "chmod leaves the mtime" test "$(mtime "$msg")" = "$m_before"
changes "$msg=>$F/renamed.eml" "rename of a message" mv "$msg" "$F/renamed.eml"
msg=$F/renamed.eml
changes "$msg=>$F/sub/renamed.eml" "refile of a message" mv "$msg" "$F/sub/renamed.eml"
msg=$F/sub/renamed.eml
changes "$msg" "truncate of a message" truncate -s 10 "$msg"

# --- ctime: folders and mailboxes
changes "$F/sub" "chmod of a folder" chmod 0750 "$F/sub"
changes "$F/sub" "chown of a folder" chown 1234 "$F/sub"
changes "$F/sub" "special-use of a folder" setfattr -n user.mail.special-use -v '\Archive' "$F/sub"
changes "$F/sub" "touch of a folder" touch -d '2001-02-03' "$F/sub"
changes "$F/sub=>$F/sub2" "rename of a folder" mv "$F/sub" "$F/sub2"
changes "$A" "chmod of a mailbox" chmod 0750 "$A"
changes "$A" "ACL of a mailbox" setfattr -n user.mail.acl -v 'bob lrs' "$A"
changes "$A" "touch of a mailbox" touch -d '2001-02-03' "$A"
changes "$A=>$M/srv1/alice2" "rename of a mailbox" mv "$A" "$M/srv1/alice2"
mv "$M/srv1/alice2" "$A"

# --- writers that set the mtime keep it; others get the time of the write
old=$WORK/old.eml
cp "$TD/eml/$(ls "$TD/eml" | head -1)"/* "$old" 2>/dev/null || cp "$(find "$TD/eml" -type f | head -1)" "$old"
touch -d '2003-04-05 06:07:08.123456789' "$old"
want=$(mtime "$old")
cp -a "$old" "$F/cp-a.eml"
check "cp -a keeps the mtime ($want)" test "$(mtime "$F/cp-a.eml")" = "$want"
rsync -a "$old" "$F/rsync.eml"
check "rsync -a keeps the mtime" test "$(stat -c %Y "$F/rsync.eml")" = "$(stat -c %Y "$old")"
tar -C "$WORK" -cf "$WORK/old.tar" old.eml && tar -C "$F" -xf "$WORK/old.tar"
check "tar -x keeps the mtime" test "$(stat -c %Y "$F/old.eml")" = "$(stat -c %Y "$old")"
t0=$(date +%s.%N)
cp "$old" "$F/plain-cp.eml"
t1=$(date +%s.%N)
check "cp without -p dates the new message now" \
    awk -v t="$(mtime "$F/plain-cp.eml")" -v a="$t0" -v b="$t1" 'BEGIN { exit !(t >= a - 0.01 && t <= b + 0.01) }'
echo "new" >"$F/echo.eml"
check "a message written by the shell is dated now" later "$(mtime "$F/echo.eml")" "$t1"
ls "$F" >"$WORK/before-delivery"
t2=$(date +%s.%N)
printf 'Subject: x\n\nbody\n' | "$B/mailfsctl" -c "$S/conf" deliver srv1 alice INBOX
delivered=$F/$(ls "$F" | comm -13 "$WORK/before-delivery" - | head -1)
check "a delivery is dated at its arrival" later "$(mtime "$delivered")" "$t2"

# --- a rewrite of the same size: find -newer, tar --newer, rsync restore
BK=$WORK/backup
rsync -a "$A/" "$BK/"
victim=$F/m2.eml
size=$(stat -c %s "$victim")
touch "$WORK/ref"
wait_for "the clock to pass the reference" later "$(date +%s.%N)" "$(mtime "$WORK/ref")"
# An in-place rewrite with other bytes: same size, no mtime set by the writer.
tr 'a-zA-Z' 'b-zaB-ZA' <"$BK/INBOX/m2.eml" >"$WORK/rot"
dd if="$WORK/rot" of="$victim" conv=notrunc status=none
check "the rewrite kept the size" test "$(stat -c %s "$victim")" = "$size"
differ() { ! cmp -s "$1" "$2"; }
check "the rewrite changed the bytes" differ "$victim" "$BK/INBOX/m2.eml"
# The same bytes again through O_TRUNC: still a write, still dated.
other=$F/m3.eml
cat "$BK/INBOX/m3.eml" >"$other"
# A chmod alone: not newer data, but a change that ctime-based tools see.
chmod 0604 "$F/m4.eml"
cnewer=$(cd "$M" && find . -type f -cnewer "$WORK/ref" | sort | tr '\n' ' ')
check "find -cnewer sees the rewrites and the chmod ($cnewer)" \
    test "$cnewer" = "./srv1/alice/INBOX/m2.eml ./srv1/alice/INBOX/m3.eml ./srv1/alice/INBOX/m4.eml "
tarred=$(tar -C "$A" --newer="@$(mtime "$WORK/ref")" -cf - . 2>/dev/null | tar -tf - | grep -v '/$' | sort | tr '\n' ' ')
check "tar --newer (data or status) takes the three ($tarred)" \
    test "$tarred" = "./INBOX/m2.eml ./INBOX/m3.eml ./INBOX/m4.eml "
newer=$(cd "$M" && find . -type f -newer "$WORK/ref" | sort | tr '\n' ' ')
check "find -newer sees both rewritten messages ($newer)" \
    test "$newer" = "./srv1/alice/INBOX/m2.eml ./srv1/alice/INBOX/m3.eml "
tarred=$(tar -C "$A" --newer-mtime="@$(mtime "$WORK/ref")" -cf - . 2>/dev/null | tar -tf - | grep -v '/$' | sort | tr '\n' ' ')
check "tar --newer-mtime takes both ($tarred)" test "$tarred" = "./INBOX/m2.eml ./INBOX/m3.eml "
rsync -a --delete "$BK/" "$A/"
check "rsync -a --delete restore: bytes identical to the backup" diff -r "$BK" "$A"
check "rsync -a --delete restore: mtimes and modes identical to the backup" \
    test "$(cd "$BK" && find . -type f -printf '%P %T@ %m\n' | sort)" = "$(cd "$A" && find . -type f -printf '%P %T@ %m\n' | sort)"

# --- times at 0, before 1970, at and past the ends of int64 nanoseconds
# settime NODE WHEN EXPECTED: touch -d WHEN through the mount reads back as
# EXPECTED (stat %.9Y), before and after a remount.
declare -A expect
settime() {
    local node=$1 when=$2 want=$3
    if ! touch -d "$when" "$node" 2>"$WORK/err"; then
        not_ok "touch -d '$when' $node: $(cat "$WORK/err")"
        return
    fi
    local got
    got=$(mtime "$node")
    check "touch -d '$when' ${node#"$M"/} reads back $want (got $got)" test "$got" = "$want"
    expect[$node]=$want
}
# refuse NODE WHEN: touch -d WHEN fails with EOVERFLOW and changes nothing.
refuse() {
    local node=$1 when=$2 before
    before=$(mtime "$node")
    if touch -d "$when" "$node" 2>"$WORK/err"; then
        not_ok "touch -d '$when' ${node#"$M"/} refused (it succeeded: now $(mtime "$node"))"
    else
        check "touch -d '$when' ${node#"$M"/} refused with EOVERFLOW: $(cat "$WORK/err")" \
            grep -q "Value too large" "$WORK/err"
    fi
    check "the refused touch left ${node#"$M"/} at $before" test "$(mtime "$node")" = "$before"
}
for node in "$F/m4.eml" "$F" "$A"; do
    settime "$node" @0 0.000000000
    settime "$node" '1960-01-01 00:00:00 UTC' -315619200.000000000
    settime "$node" @-1.25 -1.250000000
    refuse "$node" '2300-01-01 00:00:00 UTC'
    refuse "$node" '1600-01-01 00:00:00 UTC'
done
settime "$F/m5.eml" @9223372036.854775807 9223372036.854775807
refuse "$F/m5.eml" @9223372036.854775808
settime "$F/m1.eml" @-9223372036.854775808 -9223372036.854775808
refuse "$F/m1.eml" @-9223372036.854775809
check "ls -l of the folder works with extreme times" ls -l "$F" >/dev/null

unmount "$S"
mount_fg "$S" || exit 1
for node in "${!expect[@]}"; do
    check "after remount ${node#"$M"/} is still at ${expect[$node]}" test "$(mtime "$node")" = "${expect[$node]}"
done
unmount "$S"
[ $FAILS = 0 ]
