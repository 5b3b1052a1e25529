# Shared by the end-to-end tests: a throwaway site with stores, mounts that are
# always cleaned up, condition waits (never fixed sleeps), and checks.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B=${MAILFS_BUILD:-$ROOT/build}/fs
. "$ROOT/scripts/testdata.sh"
TESTDATA=$(mailfs_testdata "$ROOT") || { echo "not ok: no test data (shared/testdata, or MAILFS_TESTDATA)"; exit 1; }
TD=$TESTDATA/mail
WORK=$(mktemp -d "${MAILFS_TEST_TMPDIR:-/tmp}/mailfs-move.XXXXXX")
FAILS=0

cleanup() {
    for m in $(grep -o "$WORK/[^ ]*" /proc/mounts | sort -r); do
        fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
    done
    pkill -KILL -f "mailfs -f $WORK/" 2>/dev/null
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

ok() { echo "ok: $*"; }
not_ok() { echo "not ok: $*"; FAILS=$((FAILS + 1)); }
check() { # description command...
    local what=$1; shift
    if "$@"; then ok "$what"; else not_ok "$what"; fi
}

# wait_for "description" command...: polls the condition, up to 20 s.
wait_for() {
    local what=$1; shift
    for _ in $(seq 400); do "$@" && return 0; sleep 0.05; done
    not_ok "timed out waiting for: $what"
    return 1
}

# site DIR STORE...: a config with these stores (created), journal beside.
# STORE is NAME (sqlite, NAME.db), NAME@maildir or NAME@maildir-fs (a
# maildir store in the folder NAME, maildir++ or fs layout).
site() {
    local dir=$1; shift
    mkdir -p "$dir/mnt"
    printf '[mailfs]\njournal = journal.db\n' >"$dir/conf"
    for s in "$@"; do
        case $s in
        *@maildir) printf '[store %s]\nbackend = maildir\npath = %s\n' "${s%@*}" "${s%@*}" ;;
        *@maildir-fs) printf '[store %s]\nbackend = maildir\npath = %s\nlayout = fs\n' \
            "${s%@*}" "${s%@*}" ;;
        *) printf '[store %s]\npath = %s.db\n' "$s" "$s" ;;
        esac >>"$dir/conf"
    done
    for s in "$@"; do "$B/mailfsctl" -c "$dir/conf" store create "${s%@*}" >/dev/null || return 1; done
}

# mount_fg DIR [ENV=VALUE...]: the daemon in the foreground, own session.
mount_fg() {
    local dir=$1; shift
    env "$@" setsid "$B/mailfs" -f "$dir/conf" "$dir/mnt" 2>>"$dir/daemon.log" &
    wait_for "mount of $dir" mountpoint -q "$dir/mnt"
}

unmount() { fusermount3 -u "$1/mnt"; wait_for "daemon of $1 to exit" not_running "$1"; }
not_running() { ! pgrep -f "mailfs -f $1/conf" >/dev/null; }

# tree_of DIR: names, sizes, mtimes, modes and checksums of a tree.
tree_of() {
    (cd "$1" && find . -printf '%P %s %T@ %m\n' | sort &&
        find . -type f -print0 | sort -z | xargs -0 -r sha256sum)
}

journal() { sqlite3 "$1/journal.db" "$2"; }

# journal_is SITE SQL VALUE: re-queried at every poll of wait_for.
journal_is() { test "$(journal "$1" "$2")" = "$3"; }

# What the journal holds, as an admin sees it (mailfsctl moves --json), so
# that tests check moves through the tools, not the journal's schema:
# moves_of SITE [PYEXPR [FIELDS]] prints, newest first, the moves for which
# the Python expression PYEXPR over m (a move: m["state"], m["mailbox"],
# m["source"], m["step"], m["messages_done"], ...) holds (default: all), each
# as its comma-separated FIELDS (default id) joined by spaces, one a line.
moves_of() {
    "$B/mailfsctl" -c "$1/conf" moves --json | python3 -c '
import json, sys
expr, fields = sys.argv[1], sys.argv[2].split(",")
for m in json.load(sys.stdin):
    if eval(expr, {}, {"m": m}):
        print(" ".join(str(m[f]) for f in fields))' "${2:-True}" "${3:-id}"
}
# moves_count SITE [PYEXPR]: how many moves moves_of lists.
moves_count() { moves_of "$@" | wc -l; }
# moves_are SITE PYEXPR FIELDS VALUE: moves_of's output is VALUE (for wait_for).
moves_are() { test "$(moves_of "$1" "$2" "$3")" = "$4"; }
