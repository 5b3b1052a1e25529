#!/bin/bash
# Mail that a mail server writes behind mailfs during and after an online
# move (DESIGN 10.3-10.4, issue 13), the source a maildir store:
#   - behind the lock: `mv` held (MAILFS_STALL) at "verified" (cutover,
#     final passes done, source locked for mailfs), a message delivered
#     the Maildir way straight into the source (tmp/, then rename into
#     new/, as Dovecot's LMTP does); released, the move commits or rolls
#     back, and the message is in the mailbox exactly once, wherever it is;
#   - after the commit: a delivery to the source's old place (the mail
#     server makes the Maildir anew) is carried into the moved mailbox by
#     the daemon's housekeeping: there exactly once, gone from the source.
# For maildir -> sqlite and maildir -> maildir.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/online-lib.sh"

trap 'rm -f "$WORK"/*/stall; cleanup' EXIT

# maildir_deliver DIR ID: a message marked ID into the Maildir DIR.
maildir_deliver() {
    local d=$1 id=$2 f
    f=$(date +%s).M$RANDOM$RANDOM.test
    mkdir -p "$d/tmp" "$d/new" "$d/cur" &&
        { printf 'X-Test-Id: %s\n' "$id"; cat "$TD/eml/tika/$(ls "$TD/eml/tika" | sed -n 4p)"; } >"$d/tmp/$f" &&
        mv "$d/tmp/$f" "$d/new/$f"
}
# copies_in TREE ID: messages of the tree (through the mount) marked ID.
copies_in() {
    [ -d "$1" ] || { echo 0; return; }
    find "$1" -type f -print0 | xargs -0 -r grep -l "^X-Test-Id: $2\$" | wc -l
}
copies_are() { test "$(copies_in "$1" "$2")" = "$3"; }

behind() { # K2
    local S=$WORK/maildir-$1 u=alice
    osite "$S" maildir "$1" || { not_ok "site"; return; }
    local M=$S/mnt what="maildir->$1"
    mount_fg "$S" MAILFS_STALL=verified MAILFS_STALL_FILE="$S/stall" || return
    fill "$M/srv1/$u" || not_ok "$what: fill"
    local n
    n=$(find "$M/srv1/$u" -type f | wc -l)

    # --- behind the lock, between the final passes and the commit point
    touch "$S/stall"
    mv "$M/srv1/$u" "$M/srv2/" 2>"$S/mv.err" &
    local mvpid=$!
    wait_for "$what: mv held at verified" grep -q "stalled at verified" "$S/daemon.log" || return
    maildir_deliver "$S/srv1/$u" behind-lock || not_ok "$what: a delivery behind the lock"
    rm -f "$S/stall"
    wait $mvpid
    local rc=$? where=none seen=0
    [ -d "$M/srv1/$u" ] && where=srv1 seen=$((seen + 1))
    [ -d "$M/srv2/$u" ] && where=srv2 seen=$((seen + 1))
    echo "# $what: a delivery behind the lock at verified: mv exit $rc ($(cat "$S/mv.err")), $u in $where"
    check "$what: $u is visible in exactly one store ($seen)" test $seen = 1
    check "$what: the delivery behind the lock is in $u exactly once" \
        copies_are "$M/$where/$u" behind-lock 1
    check "$what: ... and no message lost ($((n + 1)))" \
        test "$(find "$M/$where/$u" -type f | wc -l)" = $((n + 1))
    check "$what: no hidden copy left, nothing locked" \
        test "$(hidden_copies "$S")$(source_locks "$S")" = 00
    if [ "$where" = srv1 ]; then # rolled back: move again, nothing behind it now
        check "$what: a second mv moves it" mv "$M/srv1/$u" "$M/srv2/"
    fi

    # --- after the commit: the mail server delivers to the old place
    check "$what: $u moved to srv2" test -d "$M/srv2/$u" -a ! -e "$S/srv1/$u"
    maildir_deliver "$S/srv1/$u" after-commit || not_ok "$what: a delivery to the old place"
    wait_for "$what: the late delivery carried into srv2" copies_are "$M/srv2/$u" after-commit 1 &&
        ok "$what: the late delivery is in the moved mailbox"
    check "$what: ... exactly once, with all the rest ($((n + 2)))" \
        test "$(find "$M/srv2/$u" -type f | wc -l)" = $((n + 2))
    check "$what: ... and gone from the source's old place" \
        test "$(grep -rl '^X-Test-Id: after-commit$' "$S/srv1/$u" 2>/dev/null | wc -l)" = 0
    unmount "$S"
    mount_fg "$S" || return
    check "$what: after a remount still exactly once" copies_are "$M/srv2/$u" after-commit 1
    unmount "$S"
}

behind sqlite
behind maildir
[ $FAILS = 0 ]
