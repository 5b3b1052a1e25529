#!/bin/bash
# Every mailbox built from the shared test data (each eml collection, the
# Maildir tree, the mbox files) moves from srv1 to srv2 with plain mv and
# arrives identical: bytes, names, sizes, mtimes, modes, flags.
set -u
. "$(dirname "$0")/../lib.sh"

S=$WORK/site
site "$S" srv1 srv2 || exit 1
M=$S/mnt
mount_fg "$S" || exit 1

boxes=()
for d in "$TD"/eml/* "$TD/maildir" "$TD/mbox"; do
    b=$(basename "$d")
    mkdir -p "$M/srv1/$b/INBOX"
    cp -a "$d/." "$M/srv1/$b/INBOX/"
    # a few flags on each, so they are carried too
    find "$M/srv1/$b/INBOX" -type f | head -3 | while read -r f; do
        setfattr -n user.mail.flags -v '\Seen \Answered' "$f"
    done
    boxes+=("$b")
done
for b in "${boxes[@]}"; do
    tree_of "$M/srv1/$b" >"$WORK/$b.before"
    (cd "$M/srv1" && find "$b" -print0 | sort -z | xargs -0 getfattr -d 2>/dev/null) >"$WORK/$b.xa.before"
    if mv "$M/srv1/$b" "$M/srv2/"; then
        tree_of "$M/srv2/$b" >"$WORK/$b.after"
        (cd "$M/srv2" && find "$b" -print0 | sort -z | xargs -0 getfattr -d 2>/dev/null) >"$WORK/$b.xa.after"
        if cmp -s "$WORK/$b.before" "$WORK/$b.after" && cmp -s "$WORK/$b.xa.before" "$WORK/$b.xa.after" &&
            [ ! -e "$M/srv1/$b" ]; then
            ok "move of $b ($(grep -c '^[0-9a-f]\{64\} ' "$WORK/$b.before") messages)"
        else
            not_ok "move of $b: tree, flags or source differ"
        fi
    else
        not_ok "mv of $b failed"
    fi
done
# A shell whose cwd is inside a mailbox when it moves can still list it: the
# kernel keeps the old inode in the cwd (and, until the daemon drops the
# moved dentry, in the path), which reads as the retained copy of what moved.
b=${boxes[0]}
(cd "$M/srv2/$b" && while [ ! -e "$WORK/go" ]; do sleep 0.05; done && find . | sort >"$WORK/cwd.find") &
cwd_pid=$!
wait_for "the shell to sit in srv2/$b" bash -c "ls -l /proc/$cwd_pid/cwd 2>/dev/null | grep -q 'srv2/$b'"
mv "$M/srv2/$b" "$M/srv1/" || not_ok "mv of $b back to srv1"
touch "$WORK/go"
wait $cwd_pid
check "a cwd inside the moved mailbox still lists what moved" \
    test -s "$WORK/cwd.find" -a "$(cat "$WORK/cwd.find")" = "$(cd "$M/srv1/$b" && find . | sort)"
check "every move is done in the journal" \
    test "$(moves_count "$S" 'm["state"] == "done"')" = $((${#boxes[@]} + 1))
unmount "$S"
[ $FAILS = 0 ]
