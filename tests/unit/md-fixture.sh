#!/bin/bash
# md-fixture.sh DIR [EML...] — a Maildir written by Dovecot itself, the
# oracle of test_maildir_format.c: DIR/Maildir with INBOX holding the given
# messages; with three or more, flags and keywords set by doveadm on the
# first three and three folders with names that need modified UTF-7.  Uses a throwaway config (no auth service:
# doveadm runs without -u, as the mail user).  Run as root, it works as
# "nobody".  Exits 77 when doveadm is missing.
#   md-fixture.sh DIR run ARGS...  runs doveadm ARGS on that Maildir.
set -e
dir=$1; shift
command -v doveadm >/dev/null || exit 77
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
as=()
if [ "$(id -u)" = 0 ]; then
    as=(runuser -u nobody --)
    chmod 755 "$dir"
fi
conf=$dir/dovecot.conf
if [ ! -f "$conf" ]; then
    mkdir -p "$dir/run" "$dir/Maildir"
    [ "$(id -u)" = 0 ] && chown nobody: "$dir/run" "$dir/Maildir"
    cat >"$conf" <<CONF
base_dir = $dir/run
log_path = /dev/stderr
ssl = no
protocols =
mail_location = maildir:$dir/Maildir
CONF
fi
dove() {
    "${as[@]}" env USER=mdtest HOME="$dir" doveadm -c "$conf" "$@"
}
if [ "${1-}" = run ]; then
    shift
    dove "$@"
    exit
fi
for m in "$@"; do
    dove save -m INBOX <"$m"
done
[ $# -ge 3 ] || exit 0 # an empty Maildir: Dovecot makes it at the first delivery
dove flags add '\Seen $Label1' mailbox INBOX uid 1
dove flags add '\Answered \Flagged Foo' mailbox INBOX uid 2
dove flags add '\Draft \Deleted $Label1 Bar' mailbox INBOX uid 3
dove mailbox create 'Café.Ünïcode' 'a&b' '日本語'
