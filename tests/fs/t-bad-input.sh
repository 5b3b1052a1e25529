#!/bin/bash
# Bad input gets one clear line and loses nothing (DESIGN 7, issue 2):
# configuration errors, store files that are missing, not ours or not
# readable, hostile names, and odd messages (empty, binary with NULs,
# 200 MB, a 100 KB header) that must come back byte-identical.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1 || exit 1
mkdir -p "$WORK/m"

# refuse CONFIG PATTERN: mailfs exits non-zero with one line naming the
# file and matching PATTERN, and nothing gets mounted.
refuse() {
    local what=$1 conf=$2 pattern=$3 out
    out=$("$B/mailfs" "$conf" "$WORK/m" 2>&1)
    local rc=$?
    if [ $rc != 0 ] && [ "$(printf '%s\n' "$out" | wc -l)" = 1 ] &&
        printf '%s' "$out" | grep -q "$pattern" && ! mountpoint -q "$WORK/m"; then
        ok "$what: $out"
    else
        not_ok "$what (rc=$rc): $out"
        mountpoint -q "$WORK/m" && fusermount3 -u "$WORK/m"
    fi
}
c=$WORK/c
printf '[store a]\npth = x.db\n' >"$c.1"
refuse "unknown key" "$c.1" "$c.1: \[store a\]: unknown key 'pth'"
printf '[stores a]\npath = x.db\n' >"$c.2"
refuse "unknown group" "$c.2" "$c.2: unknown group"
printf 'this is not ini\n' >"$c.3"
refuse "garbage line" "$c.3" "$c.3: .*not a key-value pair"
printf '[store a]\npath = %s/missing.db\n' "$WORK" >"$c.4"
refuse "missing store file" "$c.4" "$WORK/missing.db: store file does not exist"
head -c 4096 /dev/urandom >"$WORK/random.db"
printf '[store a]\npath = %s/random.db\n' "$WORK" >"$c.5"
refuse "store file of random bytes" "$c.5" "random.db: not a mailfs store"
sqlite3 "$WORK/other.db" 'create table t(x); insert into t values (1);'
printf '[store a]\npath = %s/other.db\n' "$WORK" >"$c.6"
refuse "SQLite database of another program" "$c.6" "other.db: not a mailfs store"
check "the foreign database is left as it was" test "$(sqlite3 "$WORK/other.db" 'select x from t')" = 1
printf '[store a]\nbackend = exchange\npath = x.db\n' >"$c.7"
refuse "unknown backend" "$c.7" "unknown backend 'exchange'"
refuse "missing configuration file" "$WORK/nope.conf" "nope.conf"
printf '[mailfs]\nretain-days = soon\n[store a]\npath = x.db\n' >"$c.8"
refuse "bad retain-days" "$c.8" "retain-days"
printf '[store a]\npath = x.db\nread-only = maybe\n' >"$c.10"
refuse "read-only neither yes nor no" "$c.10" "read-only: 'maybe' is not yes or no"
printf '[directory]\nuri = ldap://127.0.0.1\nbase = dc=x\nfilter = (uid=*)\n[store a]\npath = x.db\n' >"$c.11"
refuse "directory filter without %s" "$c.11" "filter must hold exactly one %s"
printf '[directory]\nuri = http://x\nbase = dc=x\n[store a]\npath = x.db\n' >"$c.12"
refuse "directory uri that is not LDAP" "$c.12" "uri must be ldap://"
printf '[directory]\nuri = ldaps://x\nbase = dc=x\nstarttls = yes\n[store a]\npath = x.db\n' >"$c.13"
refuse "starttls on ldaps://" "$c.13" "starttls is for ldap:// URIs only"
printf '[store a]\npath = %s/srv1.db\nread-only = yes\n' "$S" >"$c.14"
check "read-only = yes is understood" bash -c "'$B/mailfsctl' -c '$c.14' mailbox create a x 2>&1 | grep -qi 'read-only'"
# Permission: root passes every mode check, so test as nobody.
mkdir -p "$WORK/locked" && cp "$S/srv1.db" "$WORK/locked/s.db" && chmod 700 "$WORK/locked"
printf '[store a]\npath = %s/locked/s.db\n' "$WORK" >"$c.9"
chmod 644 "$c.9"; chmod 755 "$WORK"
out=$(setpriv --reuid=nobody --regid=nogroup --clear-groups "$B/mailfsctl" -c "$c.9" store list 2>&1 >/dev/null)
check "store without permission: one line naming the file ($out)" \
    bash -c "[ \$(printf '%s\n' \"$out\" | wc -l) = 1 ] && printf '%s' \"$out\" | grep -q 'locked/s.db: permission denied'"

# --- names and messages, through the mount
M=$S/mnt
mount_fg "$S" || exit 1
mkdir -p "$M/srv1/odd/INBOX"
I=$M/srv1/odd/INBOX
for n in "with space" "ünïcødé ✉" "$(printf 'new\nline')" "tab	here" '*)(uid=*' "-starts-with-dash" ".hidden"; do
    printf 'x' >"$I/$n" && test -f "$I/$n" && ok "name allowed: $(printf '%q' "$n")" || not_ok "name $(printf '%q' "$n")"
done
latin1=$(printf 'caf\xe9')
printf 'x' >"$I/$latin1" && ls "$I" | grep -q "$(printf 'caf\xe9')" && ok "non-UTF-8 name kept byte for byte" || not_ok "non-UTF-8 name"
# Name lengths are mailfs's to decide (FUSE passes names up to 1024 bytes).
n255=$(printf 'n%.0s' $(seq 255)); n256=${n255}n
check "a folder name of 255 bytes is allowed" mkdir "$I/$n255"
check "a folder name of 256 bytes: ENAMETOOLONG" bash -c "mkdir '$I/$n256' 2>&1 | grep -q 'File name too long'"
check "a message name of 256 bytes: ENAMETOOLONG" bash -c "printf x 2>&1 >'$I/$n256' | grep -q 'File name too long'"
check "... and nothing was created" test "$(ls "$I" | grep -c "^n\{256\}")" = 0
check "a file in a mailbox directory: EPERM" bash -c "touch '$M/srv1/odd/file' 2>&1 | grep -q 'Operation not permitted'"
check "a file in a store directory: EPERM" bash -c "touch '$M/srv1/file' 2>&1 | grep -q 'Operation not permitted'"
check "a file at the top: EPERM" bash -c "touch '$M/file' 2>&1 | grep -q 'Operation not permitted'"
check "mkdir at the top: EPERM" bash -c "mkdir '$M/newstore' 2>&1 | grep -q 'Operation not permitted'"
check "bad flags value: EINVAL" bash -c "setfattr -n user.mail.flags -v '(bad' '$I/with space' 2>&1 | grep -q 'Invalid argument'"
check "bad ACL rights: EINVAL" bash -c "setfattr -n user.mail.acl -v 'bob lrZ' '$M/srv1/odd' 2>&1 | grep -q 'Invalid argument'"
check "unknown xattr: refused" bash -c "! setfattr -n user.other -v x '$I/with space' 2>/dev/null"

: >"$WORK/empty"
head -c 65536 /dev/urandom | tr -d '\n' >"$WORK/nul"; printf '\0\0\0' >>"$WORK/nul"
{ printf 'X-Long: '; head -c 102400 /dev/zero | tr '\0' 'a'; printf '\nSubject: long header\n\nbody\n'; } >"$WORK/header"
head -c 200000000 /dev/urandom >"$WORK/big"
for f in empty nul header big; do
    cp "$WORK/$f" "$I/$f.eml" && cmp -s "$WORK/$f" "$I/$f.eml" &&
        test "$(stat -c %s "$I/$f.eml")" = "$(stat -c %s "$WORK/$f")" &&
        ok "message '$f' ($(stat -c %s "$WORK/$f") bytes) stored byte-identical" || not_ok "message '$f'"
done
printf 'malformed \x01 mail without headers' | "$B/mailfsctl" -c "$S/conf" deliver srv1 odd
check "a malformed message is delivered as is" \
    bash -c "ls '$I'/*.eml | xargs grep -l 'malformed' >/dev/null"
# after a remount, still all there
unmount "$S"
mount_fg "$S" || exit 1
check "200 MB message intact after remount" cmp -s "$WORK/big" "$I/big.eml"
unmount "$S"
[ $FAILS = 0 ]
