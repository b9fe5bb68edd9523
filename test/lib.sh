# Shared helpers for the shell tests (sourced). Environment from Makefile.am:
# TESTMPIRUN (launcher followed by the rank count), LADLE, top_srcdir, top_builddir.

set -u
: "${TESTMPIRUN:=mpiexec --oversubscribe --bind-to none -n}"
: "${LADLE:=$top_builddir/ladle}"

fail() { printf "FAIL: %s\n" "$*" >&2; exit 1; }   # printf: echo would expand a backslash in a path

# A scratch directory removed on exit.
make_tmp() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/ladle-test.XXXXXX") || fail "mktemp"
    trap 'rm -rf "$TMP"' EXIT
}

# run_mpi N MARKER CMD... : run CMD on N ranks; output goes to $TMP/out. The run counts
# only if the output holds MARKER: Open MPI refusing to start (e.g. as root without
# permission) exits 0 having run nothing, and that must not pass for success.
run_mpi() {
    n=$1 marker=$2
    shift 2
    # shellcheck disable=SC2086
    timeout 600 $TESTMPIRUN "$n" "$@" > "$TMP/out" 2>&1
    rc=$?
    if ! grep -q -- "$marker" "$TMP/out"; then
        cat "$TMP/out" >&2
        fail "launcher '$TESTMPIRUN $n' did not run '$*' (no '$marker' in its output, exit $rc)"
    fi
    return $rc
}

# refuse PATTERN ARGS... : '$LADLE ARGS...' must fail with exit 2 and a message matching
# PATTERN, leaving neither $TMP/bad.h5 nor $TMP/bad.h5.tmp behind; counts one in the
# caller's $passed. A hang fails too (timeout exits 124).
refuse() {
    pattern=$1
    shift
    timeout 120 "$LADLE" "$@" > "$TMP/err" 2>&1
    rc=$?
    [ $rc -eq 2 ] || { cat "$TMP/err" >&2; fail "expected exit 2 from '$*', got $rc"; }
    grep -q -- "$pattern" "$TMP/err" || { cat "$TMP/err" >&2; fail "message of '$*' lacks '$pattern'"; }
    [ ! -e "$TMP/bad.h5" ] && [ ! -e "$TMP/bad.h5.tmp" ] || fail "'$*' left a file behind"
    passed=$((passed + 1))
}

# need_h5py: the checks that read or damage HDF5 files from Python need h5py and numpy.
need_h5py() {
    : "${PYTHON3:=/usr/bin/python3}"
    "$PYTHON3" -c 'import h5py, numpy' || fail "these checks need python3-h5py and python3-numpy"
}

# A small corpus of three domains built from the project's own sources.
make_small_corpus() {
    "$LADLE" prep -o "$1" --valid-fraction 0.2 \
        --domain c="$top_srcdir/src" \
        --domain headers="$top_srcdir/include" \
        --domain tests="$top_srcdir/test/test_kernels.c,$top_srcdir/test/test_model.c,$top_srcdir/test/test_config.c,$top_srcdir/test/lib.sh" \
        > "$TMP/prep.out" 2>&1 || { cat "$TMP/prep.out" >&2; fail "ladle prep of the small corpus"; }
}

# Tiny model settings for fast MPI runs.
TINY="model.layers=2 model.dim=32 model.heads=4 model.context=32 train.batch=6 train.lr=3e-3 train.warmup=2 eval.sequences=4 eval.every=0"

# step_losses RUN_DIR: the training loss of every step in RUN_DIR/metrics.jsonl, a line each.
step_losses() {
    grep '"tokens_per_s"' "$1/metrics.jsonl" | sed 's/.*"loss": \([^,]*\),.*/\1/'
}

# step_loss_pairs RUN_DIR: "step loss" of every step in RUN_DIR/metrics.jsonl, a line each.
step_loss_pairs() {
    grep '"tokens_per_s"' "$1/metrics.jsonl" | sed 's/.*"step": \([0-9]*\), "loss": \([^,]*\),.*/\1 \2/'
}

# same_losses LABEL FILE_A FILE_B STEPS: two loss curves (a loss per line) of STEPS steps
# agree to 1e-5 relative; prints the worst difference and every step beyond it.
same_losses() {
    paste "$2" "$3" | awk -v label="$1" -v steps="$4" '
        { d = $1 - $2; if (d < 0) d = -d; r = d / ($1 < 0 ? -$1 : $1); if (r > worst) worst = r;
          if (r > 1e-5) { bad++; printf "step %d: %s vs %s (rel %.2e)\n", NR, $1, $2, r } }
        END { printf "%s: worst relative difference %.2e over %d steps\n", label, worst, NR;
              exit bad > 0 || NR != steps }'
}
