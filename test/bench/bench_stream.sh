#!/bin/sh
# bench_stream.sh DIR: training on a corpus bigger than memory, read window by window
# (data.read = stream), against the same model on the demo corpus read into memory.
#
# Builds in DIR (once): demo.h5, the demo corpus (share/ladle/demo-corpus.sh, 13 sources),
# and big.h5, BIG_GB GB spliced from it (big_corpus.py: > 1 M documents, bigger than this
# machine's memory at the default 32). Then, with demo.conf's model on 2 ranks x 1 thread:
#   - tokens/s on demo.h5, data.read = memory and = stream, alternated REPS times (median
#     ms per step after the first 5 steps of each run; the best run of each): the ratio
#     stream / memory (target >= 0.97);
#   - on big.h5, streamed: tokens/s, and each rank's peak RSS (/usr/bin/time) against the
#     model's own memory as the dry run plans it (target: RSS <= that + 200 MB);
#   - on big.h5 in memory: the dry run, which must refuse (the corpus does not fit).
# Environment: LADLE (./ladle), MPIEXEC (mpiexec), PYTHON3 (/usr/bin/python3, with h5py),
# BIG_GB (32), STEPS (60), REPS (2). Run by hand or by 'make bench'; about 10 minutes on
# 2 cores (most of it writing big.h5) the first time.
set -eu
me=bench_stream.sh
here=$(cd "$(dirname "$0")" && pwd)
share=$here/../../share/ladle
dir=${1:?usage: bench_stream.sh DIR}
LADLE=${LADLE:-./ladle}
MPIEXEC=${MPIEXEC:-mpiexec}
PYTHON3=${PYTHON3:-/usr/bin/python3}
big_gb=${BIG_GB:-32}
steps=${STEPS:-60}
reps=${REPS:-2}
skip=5
. "$here/big_setup.sh"
if [ ! -s "$dir/big.h5" ]; then
    echo "writing $dir/big.h5 ($big_gb GB) ..." >&2
    "$PYTHON3" "$here/big_corpus.py" "$dir/demo.h5" "$dir/big.h5" "$big_gb" > "$dir/big.log" ||
        die "big_corpus.py failed"
fi
conf="$share/demo.conf eval.every=0 log.every=1000 train.steps=$steps train.warmup=2"

# median_ms RUN_DIR: median ms per step of steps after the first $skip
median_ms() {
    grep '"tokens_per_s"' "$1/metrics.jsonl" | sed 's/.*"ms": \([0-9.]*\),.*/\1/' | tail -n +$((skip + 1)) |
        sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# run NAME CORPUS READ: train on 2 ranks under /usr/bin/time; peak RSS of each rank into NAME.rss
run() {
    rm -rf "${dir:?}/$1"
    # shellcheck disable=SC2086
    $MPIEXEC -n 2 sh -c '/usr/bin/time -f "rss_kb %M" -o "$0.$OMPI_COMM_WORLD_RANK" "$@"' "$dir/$1.rss" \
        "$LADLE" train $conf data.corpus="$2" data.read="$3" run.dir="$dir/$1" --fresh --force > "$dir/$1.log" 2>&1 ||
        die "training '$1' failed (see $dir/$1.log)"
    grep -q "^done: $steps steps" "$dir/$1.log" || die "'$1' did not run (see $dir/$1.log)"
}
best_mem="" best_stream=""
for r in $(seq 1 "$reps"); do
    for read in memory stream; do
        run "demo-$read-$r" "$dir/demo.h5" "$read"
        ms=$(median_ms "$dir/demo-$read-$r")
        if [ "$read" = memory ]; then
            best_mem=$(awk -v a="$ms" -v b="${best_mem:-1e30}" 'BEGIN { print a < b ? a : b }')
        else
            best_stream=$(awk -v a="$ms" -v b="${best_stream:-1e30}" 'BEGIN { print a < b ? a : b }')
        fi
    done
done
run big-stream "$dir/big.h5" stream
big_ms=$(median_ms "$dir/big-stream")
rss_max=$(cat "$dir"/big-stream.rss.* | awk '{ if ($2 > m) m = $2 } END { print m }')
demo_rss=$(cat "$dir"/demo-stream-1.rss.* | awk '{ if ($2 > m) m = $2 } END { print m }')
demo_mem_rss=$(cat "$dir"/demo-memory-1.rss.* | awk '{ if ($2 > m) m = $2 } END { print m }')
# the model's own memory per rank, as planned (the corpus line is the domain table)
plan=$("$LADLE" train $conf data.corpus="$dir/big.h5" --dry-run --ranks 2 2>&1 | awk '/^  total / && n == 0 { n = 1; next } /^  total / { print $2; exit }')
[ -n "$plan" ] || die "no plan total from the dry run"
set +e
"$LADLE" train $conf data.corpus="$dir/big.h5" data.read=memory --dry-run --ranks 2 > "$dir/big-memory-dry.log" 2>&1
refused=$?
set -e
corpus_bytes=$(ls -l "$dir/big.h5" | awk '{ print $5 }')
docs=$(tail -n 1 "$dir/big.log" | sed 's/.*bytes, \([0-9]*\) documents/\1/')
tokens=$((16 * 128))

echo "ladle streamed corpus benchmark: demo.conf (4 layers, dim 128, batch 16 x 128), 2 ranks x 1 thread, $steps steps"
printf "%-44s %12s %12s\n" "run" "ms/step" "tokens/s"
printf "%-44s %12.1f %12.0f\n" "demo corpus, data.read=memory (best of $reps)" "$best_mem" "$(awk -v m="$best_mem" -v t=$tokens 'BEGIN { print t * 1000 / m }')"
printf "%-44s %12.1f %12.0f\n" "demo corpus, data.read=stream (best of $reps)" "$best_stream" "$(awk -v m="$best_stream" -v t=$tokens 'BEGIN { print t * 1000 / m }')"
printf "%-44s %12.1f %12.0f\n" "big corpus ($corpus_bytes bytes, $docs docs), stream" "$big_ms" "$(awk -v m="$big_ms" -v t=$tokens 'BEGIN { print t * 1000 / m }')"
ratio=$(awk -v a="$best_mem" -v b="$best_stream" 'BEGIN { printf "%.3f", a / b }')
big_ratio=$(awk -v a="$best_mem" -v b="$big_ms" 'BEGIN { printf "%.3f", a / b }')
echo "tokens/s streamed / in memory, demo corpus: $ratio (target >= 0.97); big corpus streamed / demo in memory: $big_ratio"
echo "peak RSS per rank: big corpus streamed $((rss_max / 1024)) MiB; demo corpus streamed $((demo_rss / 1024)) MiB, in memory $((demo_mem_rss / 1024)) MiB"
echo "model's own memory per rank (dry run): $((plan / 1048576)) MiB; target RSS <= $((plan / 1048576 + 200)) MiB: $(awk -v r="$rss_max" -v p="$plan" 'BEGIN { print (r * 1024 <= p + 200 * 1048576) ? "met" : "NOT met" }')"
if [ "$refused" = 2 ]; then
    echo "big corpus, data.read=memory: the dry run refuses: $(grep '^ladle: error' "$dir/big-memory-dry.log" | cut -c1-160)"
else
    echo "big corpus, data.read=memory: the dry run did not refuse (exit $refused)"
fi
