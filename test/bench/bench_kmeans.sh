#!/bin/sh
# bench_kmeans.sh: Lloyd iterations of the distributed k-means ('ladle prep --clusters') at
# K = 4096 over 1M documents (d = 64) against the BLIS sgemm bound measured in the same
# run, on BENCH_KMEANS_RANKS ranks (default 1: rank count x BLIS threads = the cores you
# give it). Prints bench_kmeans' figures; takes 2-3 minutes on one core.
#
#   make test/bench/bench_kmeans && sh test/bench/bench_kmeans.sh [n=1048576] [k=4096] [d=64] [iters=2]
#
# Environment: BENCH_KMEANS_BIN (default ./test/bench/bench_kmeans), MPIEXEC (mpiexec),
# BENCH_KMEANS_RANKS (1). Exit status non-zero if the run fails or its result is invalid,
# including an mpiexec that exits 0 without output.
set -eu
me=bench_kmeans.sh
BIN=${BENCH_KMEANS_BIN:-./test/bench/bench_kmeans}
MPIEXEC=${MPIEXEC:-mpiexec}
RANKS=${BENCH_KMEANS_RANKS:-1}
die() { echo "$me: error: $*" >&2; exit 1; }
[ -x "$BIN" ] || die "no $BIN: build it with 'make test/bench/bench_kmeans'"
BLIS_NUM_THREADS=${BLIS_NUM_THREADS:-1}
export BLIS_NUM_THREADS
out=$($MPIEXEC --oversubscribe --bind-to none -n "$RANKS" "$BIN" "$@") || die "bench_kmeans failed"
printf '%s\n' "$out"
printf '%s\n' "$out" | grep -q '^result ok$' || die "bench_kmeans printed no valid result"
printf '%s\n' "$out" | awk '
    $1 == "iteration_s" { it = $2 } $1 == "bound_s" { b = $2 } $1 == "sgemm_gflops_blocks" { g = $2 }
    END { printf "one iteration: %.2f s, %.2f x the sgemm bound (%.2f s at the %.1f GFLOP/s BLIS reaches on 64-point blocks)\n", it, it / b, b, g }'
