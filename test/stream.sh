#!/bin/sh
# data.read: a streamed corpus (each window read from the file when it is needed, the
# default) trains and evaluates exactly as one read into memory. On the demo corpus's
# text (three sources, clustered as the demo's are): the same loss, gradient norm and eval
# figures at every step, bit for bit, for a dense model and a soup on 1 and 2 ranks, and
# the same final parameters. The dry run's corpus memory does not grow with the corpus
# when streamed, and does when read into memory.
. "$top_srcdir/test/lib.sh"
make_tmp
: "${PYTHON3:=/usr/bin/python3}"
passed=0
ONLY="man-syscalls python-lib c-headers" MAX_DOMAIN_BYTES=300000 CLUSTERS=4 \
    sh "$top_srcdir/share/ladle/demo-corpus.sh" "$TMP/corpus.h5" "$LADLE" > "$TMP/prep.out" 2>&1 ||
    { cat "$TMP/prep.out" >&2; fail "demo-corpus.sh (three sources)"; }
C="data.corpus=$TMP/corpus.h5"

# figures: every line of metrics.jsonl without its timings (ms*, tokens_per_s, mfu)
figures() {
    sed -e 's/"ms[a-z_]*": [-0-9.e+]*,* *//g' -e 's/"tokens_per_s": [-0-9.e+]*,* *//g' \
        -e 's/"mfu": [-0-9.e+]*,* *//g' "$1/metrics.jsonl"
}
for spec in "1 dense" "2 dense" "1 soup" "2 soup"; do
    set -- $spec
    n=$1 kind=$2
    keys="eval.every=4"
    [ "$kind" = soup ] && keys="$keys soup.experts=3 router.hidden=16"
    for read in stream memory; do
        # shellcheck disable=SC2086
        run_mpi "$n" "^done: 12 steps" "$LADLE" train $TINY train.steps=12 $keys data.read=$read $C \
            run.dir="$TMP/$kind-$n-$read" || fail "$kind on $n ranks, data.read=$read"
    done
    figures "$TMP/$kind-$n-stream" > "$TMP/a"
    figures "$TMP/$kind-$n-memory" > "$TMP/b"
    [ "$(grep -c '"loss"' "$TMP/a")" -eq 12 ] || { cat "$TMP/a" >&2; fail "$kind: not 12 step lines"; }
    [ "$(grep -c '"valid_loss"' "$TMP/a")" -eq 12 ] || { cat "$TMP/a" >&2; fail "$kind: no eval figures in the metrics"; }
    cmp -s "$TMP/a" "$TMP/b" || { diff "$TMP/a" "$TMP/b" | head -20 >&2; fail "$kind on $n ranks: streamed metrics differ from in-memory ones"; }
    "$PYTHON3" - "$TMP/$kind-$n-stream/model.h5" "$TMP/$kind-$n-memory/model.h5" <<'PY' || fail "$kind on $n ranks: final parameters differ"
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
names = []
a.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
assert names, "no datasets"
for n in names:
    if not np.array_equal(a[n][...], b[n][...]):
        sys.exit("dataset %s differs" % n)
PY
    passed=$((passed + 1))
done

# the dry run: streamed, the corpus costs the domain table whatever its size
"$LADLE" prep -o "$TMP/big.h5" --domain a="$top_srcdir/src" --domain b="$top_srcdir/test" > /dev/null 2>&1 || fail "prep big"
"$LADLE" prep -o "$TMP/small.h5" --domain a="$top_srcdir/include" --domain b="$top_srcdir/jobs" > /dev/null 2>&1 || fail "prep small"
corpus_line() { "$LADLE" train $TINY data.corpus="$1" "$2" --dry-run 2>&1 | grep '^corpus:' | sed 's/.*domains, \([0-9]*\) bytes.*/\1/'; }
sb=$(corpus_line "$TMP/big.h5" data.read=stream) ss=$(corpus_line "$TMP/small.h5" data.read=stream)
mb=$(corpus_line "$TMP/big.h5" data.read=memory) ms=$(corpus_line "$TMP/small.h5" data.read=memory)
[ -n "$sb" ] && [ "$sb" = "$ss" ] || fail "streamed corpus memory grows with the corpus: $ss -> $sb bytes"
[ "$mb" -gt "$ms" ] && [ "$ms" -gt "$ss" ] || fail "in-memory corpus memory: $ms (small) $mb (big), streamed $ss"
"$LADLE" train $TINY data.corpus="$TMP/big.h5" --dry-run 2>&1 | grep -q '^corpus:.*streamed: windows are read when needed' ||
    fail "the dry run does not say the corpus is streamed"
passed=$((passed + 1))
echo "stream: $passed passed, 0 failed"
