# scripts/testdata.sh — sourced: where the shared test data is.
#   mailfs_testdata ROOT   prints the folder holding mail/ and pst/:
#   $MAILFS_TESTDATA, else shared/testdata beside the checkout ROOT, else
#   beside the checkout ROOT was cloned from (a fresh clone elsewhere, as
#   CI makes one).  Fails, printing nothing, when there is none.
mailfs_testdata() {
    local root=$1 d
    local origin
    origin=$(git -C "$root" remote get-url origin 2>/dev/null)
    for d in "${MAILFS_TESTDATA:-}" "$root/../shared/testdata" "${origin:+$origin/../shared/testdata}"; do
        if [ -n "$d" ] && [ -d "$d/mail" ] && [ -d "$d/pst" ]; then
            (cd "$d" && pwd)
            return 0
        fi
    done
    return 1
}
