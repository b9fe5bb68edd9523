#!/bin/sh
# bench.sh: ladle's training speed against PyTorch and against BLIS, in one run (`make bench`).
#
# Fixed model: 4 layers, dim 256, 4 heads, context 256, global batch 16 (4,096 tokens per
# step, 3.3M parameters). Measures
#   - BLIS sgemm GFLOP/s at 1 and 2 threads: a square 1024^3 peak and the FLOP-weighted
#     mean over the step's own GEMM shapes (bench_train);
#   - ladle train tokens/s (median of the steps after the first 5) on a corpus built from
#     text every Debian machine has: 1 rank x 1 thread, 2 ranks x 1 thread,
#     1 rank x 2 threads;
#   - PyTorch (float32, CPU) training the same model on random bytes at 1 and 2 threads
#     (torch_train.py);
# and prints a table with ratios, MFU and the issue's targets.
#
# Environment (set by `make bench`): BENCH_BIN (bench_train), PYTHON3 (a Python with torch),
# MPIEXEC, LADLE (the ladle binary; default ./ladle). Optional: BENCH_STEPS (ladle steps per
# run, default 30), BENCH_TORCH_STEPS (timed torch steps, default 20), BENCH_HEADS (4).
# Exit status non-zero if any part fails (including an mpiexec that refuses to start and
# exits 0: every run's metrics are checked). Takes about 3-4 minutes on 2 cores.
set -eu

me=bench.sh
here=$(cd "$(dirname "$0")" && pwd)
BENCH_BIN=${BENCH_BIN:-./test/bench/bench_train}
PYTHON3=${PYTHON3:-/usr/bin/python3}
MPIEXEC=${MPIEXEC:-mpiexec}
LADLE=${LADLE:-./ladle}
STEPS=${BENCH_STEPS:-30}
TORCH_STEPS=${BENCH_TORCH_STEPS:-20}
SKIP=5                      # ladle steps left out of the median (warm-up)
LAYERS=4 DIM=256 HEADS=${BENCH_HEADS:-4} CONTEXT=256 BATCH=16

die() { echo "$me: error: $*" >&2; exit 1; }

[ -x "$BENCH_BIN" ] || die "bench_train binary '$BENCH_BIN' not found (make test/bench/bench_train)"
[ -x "$LADLE" ] || die "ladle binary '$LADLE' not found (set LADLE)"
command -v "$MPIEXEC" >/dev/null 2>&1 || die "mpiexec '$MPIEXEC' not found"
"$PYTHON3" -c 'import torch' 2>/dev/null || die "'$PYTHON3' cannot import torch (apt-get install python3-torch)"
for n in "$STEPS" "$TORCH_STEPS" "$HEADS"; do
    case $n in ''|*[!0-9]*) die "BENCH_STEPS, BENCH_TORCH_STEPS and BENCH_HEADS must be positive integers" ;; esac
done
[ "$STEPS" -gt $((SKIP + 2)) ] || die "BENCH_STEPS must exceed $((SKIP + 2))"
[ "$TORCH_STEPS" -ge 1 ] || die "BENCH_TORCH_STEPS must be at least 1"
case $LADLE in /*) ;; *) LADLE=$(pwd)/$LADLE ;; esac
case $BENCH_BIN in /*) ;; *) BENCH_BIN=$(pwd)/$BENCH_BIN ;; esac
if [ "$(id -u)" = 0 ]; then
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    export OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM
fi
cores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
[ "$cores" -ge 2 ] || echo "$me: warning: $cores core(s) online; the 2-core runs will share one" >&2

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ladle-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP
start=$(date +%s)

# value KEY FILE: the number after "KEY " on its line of FILE (fails if absent)
value() {
    v=$(awk -v k="$1" '$1 == k { print $2; found = 1 } END { exit !found }' "$2") ||
        die "no '$1' in the output of $3 (see above)"
    echo "$v"
}

# ---- 1. BLIS sgemm at the model's shapes -------------------------------------------------
gemm() {   # gemm THREADS
    echo "== BLIS sgemm, $1 thread(s)"
    BLIS_NUM_THREADS=$1 OMP_NUM_THREADS=$1 "$BENCH_BIN" layers=$LAYERS dim=$DIM heads="$HEADS" \
        context=$CONTEXT batch=$BATCH >"$tmp/gemm$1.txt" 2>&1 || { cat "$tmp/gemm$1.txt"; die "bench_train failed"; }
    cat "$tmp/gemm$1.txt"
}
gemm 1
gemm 2
peak1=$(value gemm_peak_gflops "$tmp/gemm1.txt" bench_train)
model1=$(value gemm_model_gflops "$tmp/gemm1.txt" bench_train)
peak2=$(value gemm_peak_gflops "$tmp/gemm2.txt" bench_train)
model2=$(value gemm_model_gflops "$tmp/gemm2.txt" bench_train)
fpt=$(value flops_per_token "$tmp/gemm1.txt" bench_train)

# ---- 2. ladle ------------------------------------------------------------------------------
echo "== corpus"
"$LADLE" prep -o "$tmp/corpus.h5" --max-domain-bytes 2000000 --seed 1 \
    --domain headers=/usr/include \
    --domain licenses=/usr/share/common-licenses \
    --domain python=/usr/lib/python3.11 || die "ladle prep failed"

# ladle_run NAME RANKS THREADS BIND: train, then print the median tokens/s and time split
ladle_run() {
    name=$1 ranks=$2 threads=$3 bind=$4
    echo "== ladle: $ranks rank(s) x $threads thread(s), $STEPS steps"
    rc=0
    BLIS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads \
        "$MPIEXEC" -n "$ranks" --bind-to "$bind" -x BLIS_NUM_THREADS -x OMP_NUM_THREADS \
        "$LADLE" train model.layers=$LAYERS model.dim=$DIM model.heads="$HEADS" model.context=$CONTEXT \
        train.batch=$BATCH train.steps="$STEPS" train.warmup=5 eval.every=0 eval.sequences=2 log.every=10 \
        data.corpus="$tmp/corpus.h5" run.dir="$tmp/$name" --fresh --force >"$tmp/$name.log" 2>&1 || rc=$?
    cat "$tmp/$name.log"
    [ "$rc" = 0 ] || die "ladle train ($ranks x $threads) exited $rc"
    [ -s "$tmp/$name/metrics.jsonl" ] || die "ladle train ($ranks x $threads) wrote no metrics (did $MPIEXEC start it?)"
    # median of each field over the training steps after the first $SKIP
    "$PYTHON3" - "$tmp/$name/metrics.jsonl" "$SKIP" "$STEPS" >"$tmp/$name.stats" <<'EOF' || die "bad metrics from ladle train ($ranks x $threads)"
import json, sys
path, skip, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [r for r in map(json.loads, open(path)) if "tokens_per_s" in r]
if len(rows) != steps:
    sys.exit(f"{path}: {len(rows)} training steps logged, expected {steps}")
rows = [r for r in rows if r["step"] > skip]
def median(key):
    v = sorted(r[key] for r in rows)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])
for key in ("tokens_per_s", "ms", "ms_gather", "ms_compute", "ms_reduce", "ms_optim"):
    print(key, round(median(key), 3))
EOF
    sed 's/^/  median /' "$tmp/$name.stats"
}
ladle_run r1x1 1 1 core
ladle_run r2x1 2 1 core
ladle_run r1x2 1 2 none
l11=$(value tokens_per_s "$tmp/r1x1.stats" "ladle 1x1")
l21=$(value tokens_per_s "$tmp/r2x1.stats" "ladle 2x1")
l12=$(value tokens_per_s "$tmp/r1x2.stats" "ladle 1x2")

# ---- 3. PyTorch ----------------------------------------------------------------------------
torch_run() {   # torch_run THREADS
    echo "== torch: $1 thread(s), $TORCH_STEPS timed steps"
    "$PYTHON3" "$here/torch_train.py" --threads "$1" --layers $LAYERS --dim $DIM --heads "$HEADS" \
        --context $CONTEXT --batch $BATCH --steps "$TORCH_STEPS" --warmup 3 >"$tmp/torch$1.txt" 2>"$tmp/torch$1.err" ||
        { cat "$tmp/torch$1.err" "$tmp/torch$1.txt"; die "torch_train.py --threads $1 failed"; }
    head -1 "$tmp/torch$1.err"
    cat "$tmp/torch$1.txt"
}
torch_run 1
torch_run 2
t1=$(value torch_tokens_per_s "$tmp/torch1.txt" "torch_train.py --threads 1")
t2=$(value torch_tokens_per_s "$tmp/torch2.txt" "torch_train.py --threads 2")

# ---- 4. the table --------------------------------------------------------------------------
end=$(date +%s)
awk -v fpt="$fpt" -v p1="$peak1" -v m1="$model1" -v p2="$peak2" -v m2="$model2" \
    -v l11="$l11" -v l21="$l21" -v l12="$l12" -v t1="$t1" -v t2="$t2" \
    -v cfg="layers $LAYERS, dim $DIM, heads $HEADS, context $CONTEXT, batch $BATCH ($((BATCH * CONTEXT)) tokens/step)" \
    -v secs="$((end - start))" '
function mfu(tps, peak) { return 100 * fpt * tps / (peak * 1e9) }
function target(x, min, goal) {
    return x >= goal ? "goal met" : (x >= min ? "above minimum, below goal" : "BELOW MINIMUM")
}
BEGIN {
    printf "\n==== ladle training benchmark: %s\n", cfg
    printf "model FLOPs per token %.2f M; BLIS sgemm square peak %.1f GFLOP/s (1 thread), %.1f (2 threads);\n",
        fpt / 1e6, p1, p2
    printf "BLIS at the model'"'"'s GEMM shapes %.1f GFLOP/s (1 thread), %.1f (2 threads): GEMM-only bound %.0f / %.0f tok/s\n\n",
        m1, m2, m1 * 1e9 / fpt, m2 * 1e9 / fpt
    printf "%-32s %10s %9s %9s %24s\n", "run", "tok/s", "MFU", "roofline", "vs torch (target)"
    printf "%-32s %10.0f %8.1f%% %8.1f%% %24s\n", "1 core:  torch, 1 thread", t1, mfu(t1, p1), mfu(t1, m1), "-"
    printf "%-32s %10.0f %8.1f%% %8.1f%% %11.2fx (>=1.0, 1.25)\n", "1 core:  ladle, 1 rank x 1 thr", l11,
        mfu(l11, p1), mfu(l11, m1), l11 / t1
    printf "%-32s %10.0f %8.1f%% %8.1f%% %24s\n", "2 cores: torch, 2 threads", t2, mfu(t2, p2), mfu(t2, m2), "-"
    printf "%-32s %10.0f %8.1f%% %8.1f%% %11.2fx (>=1.0, 1.5) \n", "2 cores: ladle, 2 ranks x 1 thr", l21,
        mfu(l21, 2 * p1), mfu(l21, 2 * m1), l21 / t2
    printf "%-32s %10.0f %8.1f%% %8.1f%% %11.2fx (>=1.0)      \n", "2 cores: ladle, 1 rank x 2 thr", l12,
        mfu(l12, p2), mfu(l12, m2), l12 / t2
    printf "\nMFU = flops_per_token x tok/s / square-sgemm peak (2 ranks: twice the 1-thread peak);\n"
    printf "roofline = the same against BLIS at the model'"'"'s own GEMM shapes (the best a step of pure GEMMs could do).\n"
    printf "scaling to 2 cores: ladle 2 ranks %.2fx, ladle 2 threads %.2fx, torch 2 threads %.2fx (of 1 core)\n",
        l21 / l11, l12 / l11, t2 / t1
    printf "\ntargets (ladle / torch on the same cores):\n"
    printf "  1 core,  ladle 1x1 / torch 1 thread:   %.2fx  minimum 1.0x, goal 1.25x: %s\n", l11 / t1, target(l11 / t1, 1.0, 1.25)
    printf "  2 cores, ladle 2x1 / torch 2 threads:  %.2fx  minimum 1.0x, goal 1.5x:  %s\n", l21 / t2, target(l21 / t2, 1.0, 1.5)
    printf "  2 cores, ladle 1x2 / torch 2 threads:  %.2fx  minimum 1.0x:             %s\n", l12 / t2, target(l12 / t2, 1.0, 1.0)
    printf "\n(bench took %d s; the machine is shared: numbers are noisy, rerun to compare)\n", secs
}'
