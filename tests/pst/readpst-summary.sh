#!/usr/bin/env bash
# readpst-summary.sh [--attachments] PSTFILE OUTDIR
#
# Reference view of a PST file from an independent reader (libpst's readpst,
# package pst-utils), for comparing against what mailfs exposes.  Runs
#   readpst -j 0 -D -S -o OUTDIR PSTFILE (-j 0: readpst forks jobs by
# default and its parent can exit before they finish writing)
# and prints, tab-separated, sorted (LC_ALL=C):
#   readpst-exit  <rc>                      always first
#   <folder>      <number of item files>    default mode, one per directory
#   <folder>      <item N>  <sha256>        --attachments, one per N-* file
# <folder> is relative to readpst's single top directory (named after the
# store, or after the file when the store has no name); the top directory
# itself is ".".  Item files are the all-digit names readpst -S writes for
# messages, contacts, appointments and journal entries; attachments are
# "N-name" ("N-name-K" on a name clash, "N-attachK" when unnamed).  The
# "N-rtf-body.rtf" files are readpst's rendering of the RTF body, not real
# attachments, so they are left out.
#
# Can be sourced (defines readpst_summary) or executed.

readpst_summary() {
    local mode=folders
    if [ "${1:-}" = --attachments ]; then mode=attachments; shift; fi
    if [ $# -ne 2 ]; then
        echo "usage: readpst-summary.sh [--attachments] PSTFILE OUTDIR" >&2
        return 2
    fi
    local pst=$1 out=$2 rc top d n f
    mkdir -p "$out" || return 2
    # readpst never overwrites: an existing folder gets a numeric suffix
    # ("Inbox1"), so a reused OUTDIR would silently change the paths.
    if [ -n "$(ls -A "$out")" ]; then
        echo "readpst-summary.sh: $out is not empty" >&2
        return 2
    fi
    # readpst reports errors on stdout; keep them visible but out of the data.
    readpst -q -j 0 -D -S -o "$out" "$pst" >&2
    rc=$?
    printf 'readpst-exit\t%s\n' "$rc"

    # Normally exactly one top directory; none when readpst failed early.
    top=$(find "$out" -mindepth 1 -maxdepth 1 -type d | head -n 1)
    [ -n "$top" ] || return 0
    if [ "$(find "$out" -mindepth 1 -maxdepth 1 | wc -l)" -ne 1 ]; then
        echo "readpst-summary.sh: more than one entry in $out" >&2
    fi

    export LC_ALL=C
    if [ "$mode" = folders ]; then
        while IFS= read -r -d '' d; do
            # Digits-only names: the glob pair rejects anything else.
            n=$(find "$top/$d" -mindepth 1 -maxdepth 1 -type f -name '[0-9]*' \
                    ! -name '*[!0-9]*' -printf x | wc -c)
            printf '%s\t%s\n' "${d:-.}" "$n"
        done < <(find "$top" -type d -printf '%P\0') | sort -t $'\t' -k1,1
    else
        while IFS= read -r -d '' f; do
            d=$(dirname "$f")
            n=${f##*/}; n=${n%%-*}
            # Hash via stdin: sha256sum escapes odd characters in file names.
            printf '%s\t%s\t%s\n' "$d" "$n" "$(sha256sum < "$top/$f" | cut -d' ' -f1)"
        done < <(find "$top" -type f -regextype posix-extended \
                     -regex '.*/[0-9]+-[^/]*' ! -regex '.*/[0-9]+-rtf-body\.rtf' \
                     -printf '%P\0') | sort -t $'\t' -k1,1 -k2,2n -k3,3
    fi
    return 0
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    readpst_summary "$@"
    exit $?
fi
