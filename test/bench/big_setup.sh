# big_setup.sh: sourced by bench_stream.sh and bench_prep.sh (which set me, dir, LADLE,
# PYTHON3 and share first). Checks what both need, sets the environment for mpiexec as
# root and one BLIS thread per rank, and builds DIR/demo.h5, the demo corpus that their
# big inputs are spliced from (big_corpus.py).
die() { echo "$me: error: $*" >&2; exit 1; }
case $LADLE in /*) ;; *) LADLE=$(pwd)/$LADLE ;; esac
[ -x "$LADLE" ] || die "ladle binary '$LADLE' not found (set LADLE)"
[ -x /usr/bin/time ] || die "/usr/bin/time not found (apt-get install time)"
"$PYTHON3" -c 'import h5py, numpy' 2>/dev/null || die "'$PYTHON3' cannot import h5py and numpy"
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export BLIS_NUM_THREADS=1
mkdir -p "$dir"
[ -s "$dir/demo.h5" ] || sh "$share/demo-corpus.sh" "$dir/demo.h5" "$LADLE" > "$dir/demo-prep.log" 2>&1 ||
    die "demo-corpus.sh failed (see $dir/demo-prep.log)"
