#!/bin/sh
# Specialists from examples on a clustered corpus: prep --clusters, a soup trained on the
# clusters, instantiate --like (= instantiate at the histogram it reports), eval
# --specialize against a dense baseline trained on the same tokens, fit-weights.
. "$top_srcdir/test/lib.sh"
make_tmp
: "${PYTHON3:=/usr/bin/python3}"
passed=0
"$LADLE" prep -o "$TMP/corpus.h5" --valid-fraction 0.2 --split-doc-bytes 2048 --clusters 4 \
    --domain c="$top_srcdir/src" --domain headers="$top_srcdir/include" \
    --domain tests="$top_srcdir/test/test_kernels.c,$top_srcdir/test/test_model.c,$top_srcdir/test/test_soup.c,$top_srcdir/test/lib.sh" \
    > "$TMP/prep.out" 2>&1 || { cat "$TMP/prep.out" >&2; fail "prep --clusters"; }
grep -q "^c3 " "$TMP/prep.out" || { cat "$TMP/prep.out" >&2; fail "prep report lacks cluster c3"; }
passed=$((passed + 1))

COMMON="$TINY train.steps=40 meta.support=2 data.corpus=$TMP/corpus.h5"
# shellcheck disable=SC2086
run_mpi 2 "^done: 40 steps" "$LADLE" train $COMMON soup.experts=3 router.hidden=8 soup.expert_init_std=0.02 \
    run.dir="$TMP/soup" || fail "soup training"
# shellcheck disable=SC2086
run_mpi 2 "^done: 40 steps" "$LADLE" train $COMMON run.dir="$TMP/dense" || fail "dense training"
# the same tokens: at step 1 (zero update yet) both saw the same batch
grep -q '"domain": "c0"' "$TMP/soup/metrics.jsonl" || fail "the soup was not trained on the clusters"
passed=$((passed + 1))

run_mpi 2 "^wrote $TMP/like.h5" "$LADLE" instantiate "$TMP/soup/model.h5" -o "$TMP/like.h5" \
    --like "$top_srcdir"/src/*.c || fail "instantiate --like"
passed=$((passed + 1))
if "$PYTHON3" -c 'import h5py' 2>/dev/null; then
    w=$("$PYTHON3" -c '
import sys, h5py
f = h5py.File(sys.argv[1], "r")
h, names = f.attrs["h"], list(f.attrs["domains"])
assert abs(sum(h) - 1) < 1e-6 and len(h) == 4, h
print(",".join("%s=%.9g" % (n, x) for n, x in zip(names, h)))' "$TMP/like.h5") || fail "reading h of the --like model"
    run_mpi 1 "^wrote" "$LADLE" instantiate "$TMP/soup/model.h5" -o "$TMP/weights.h5" --weights "$w" || fail "instantiate --weights"
    "$PYTHON3" -c '
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
worst = max(float(np.max(np.abs(a["shared"][t][...] - b["shared"][t][...]))) for t in a["shared"])
sys.exit(0 if worst < 1e-6 else 1)' "$TMP/like.h5" "$TMP/weights.h5" || fail "--like and --weights at its h give different models"
    passed=$((passed + 1))
fi

run_mpi 2 "^mean " "$LADLE" eval "$TMP/soup/model.h5" --corpus "$TMP/corpus.h5" --specialize --examples 3 --windows 4 \
    --baseline "$TMP/dense/model.h5" --json-out "$TMP/table.json" || fail "eval --specialize"
for d in c headers tests; do
    grep -q "^$d " "$TMP/out" || { cat "$TMP/out" >&2; fail "--specialize table lacks source domain '$d'"; }
done
grep -q '"domain": "headers", "windows": 4, "soup_uniform_bpb": ' "$TMP/table.json" || fail "--json-out table"
grep -q '"baseline_bpb": ' "$TMP/table.json" || fail "--json-out lacks the baseline"
passed=$((passed + 1))

# --weights natural: the corpus' domains at their train bytes; the "natural mixture" figure
# is the train-byte-weighted mean (weights read off prep's report)
spec=$(awk '/^c[0-9] / { printf "%s%s=%s", n++ ? "," : "", $1, $3 }' "$TMP/prep.out")
# (one process, stdout alone: under mpiexec the note on stderr can interleave with the JSON)
"$LADLE" eval "$TMP/soup/model.h5" --corpus "$TMP/corpus.h5" --weights natural --windows 4 --json \
    > "$TMP/natural.json" 2> "$TMP/err" || { cat "$TMP/err" >&2; fail "eval --weights natural"; }
"$LADLE" eval "$TMP/soup/model.h5" --corpus "$TMP/corpus.h5" --weights "$spec" --windows 4 --json \
    > "$TMP/bytes.json" 2> "$TMP/err" || { cat "$TMP/err" >&2; fail "eval --weights at the train bytes"; }
cmp -s "$TMP/natural.json" "$TMP/bytes.json" || fail "--weights natural is not the train-byte mixture $spec"
"$PYTHON3" -c '
import json, sys
t = json.load(open(sys.argv[1]))
w = dict((kv.split("=")[0], float(kv.split("=")[1])) for kv in sys.argv[2].split(","))
want = sum(w[d["domain"]] * d["valid_bpb"] for d in t["domains"]) / sum(w.values())
sys.exit(0 if abs(t["natural_bpb"] - want) < 1e-5 else 1)' "$TMP/natural.json" "$spec" || fail "natural_bpb is not the byte-weighted mean"
passed=$((passed + 1))

# --one-hot: the soup's own clusters at one-hot h; --specialists: text that is no training domain
run_mpi 2 "^mean " "$LADLE" eval "$TMP/soup/model.h5" --corpus "$TMP/corpus.h5" --specialize --one-hot --windows 4 \
    --json-out "$TMP/onehot.json" || fail "eval --specialize --one-hot"
for c in c0 c1 c2 c3; do
    grep -q "^$c .* $c 1.000\$" "$TMP/out" || { cat "$TMP/out" >&2; fail "--one-hot row $c is not at h = $c"; }
done
"$LADLE" prep -o "$TMP/other.h5" --valid-fraction 0.3 --split-doc-bytes 2048 \
    --domain scripts="$top_srcdir/share/ladle/demo.sh,$top_srcdir/share/ladle/demo-corpus.sh,$top_srcdir/test/lib.sh" \
    > "$TMP/prep2.out" 2>&1 || { cat "$TMP/prep2.out" >&2; fail "prep of the specialist text"; }
run_mpi 2 "^mean " "$LADLE" eval "$TMP/soup/model.h5" --corpus "$TMP/corpus.h5" --specialize --specialists "$TMP/other.h5" \
    --examples 3 --windows 4 --json-out "$TMP/other.json" || fail "eval --specialize --specialists"
grep -q "^scripts " "$TMP/out" || { cat "$TMP/out" >&2; fail "--specialists table lacks 'scripts'"; }
grep -q '"h": "c[0-3]=' "$TMP/other.json" || fail "--specialists JSON lacks the row's h"
refuse "'$TMP/other.h5' has no clusters" eval "$TMP/soup/model.h5" --corpus "$TMP/other.h5" --specialize \
    --specialists "$TMP/corpus.h5"
refuse "exclude each other" eval "$TMP/soup/model.h5" --corpus "$TMP/corpus.h5" --specialize --one-hot \
    --specialists "$TMP/other.h5"
passed=$((passed + 1))

# meta.weights: meta.natural=1 trains on that fixed mixture only; one-domain models each win
# on their own domain. On two stable, very different domains (Debian's license prose and a
# hex dump of another license), not on clusters of this project's sources, which change
# with every commit and are too alike to tell apart in 40 tiny steps.
lic=/usr/share/common-licenses
od -An -tx1 -v "$lic/Apache-2.0" | head -c 40000 > "$TMP/hex.txt"
"$LADLE" prep -o "$TMP/two.h5" --valid-fraction 0.2 --split-doc-bytes 2048 --domain prose="$lic/GPL-3" \
    --domain hex="$TMP/hex.txt" > "$TMP/prep3.out" 2>&1 || { cat "$TMP/prep3.out" >&2; fail "prep of prose and hex"; }
for c in prose hex; do
    # shellcheck disable=SC2086
    run_mpi 1 "^done: 40 steps" "$LADLE" train $TINY train.steps=40 data.corpus="$TMP/two.h5" meta.natural=1 \
        meta.weights=$c=1 run.dir="$TMP/only-$c" || fail "training on meta.weights=$c=1"
    "$LADLE" eval "$TMP/only-$c/model.h5" --corpus "$TMP/two.h5" --windows 8 --json > "$TMP/only-$c.json" \
        2> "$TMP/err" || { cat "$TMP/err" >&2; fail "eval of the $c-only model"; }
done
"$PYTHON3" -c '
import json, sys
a, b = (dict((d["domain"], d["valid_bpb"]) for d in json.load(open(p))["domains"]) for p in sys.argv[1:3])
sys.exit(0 if a["prose"] < b["prose"] and b["hex"] < a["hex"] else 1)' "$TMP/only-prose.json" "$TMP/only-hex.json" \
    || fail "a model trained on meta.weights=prose=1 is not the better one on prose (or hex=1 on hex)"
refuse "meta.weights: unknown domain 'nosuch'" train $COMMON meta.natural=1 meta.weights=nosuch=1 run.dir="$TMP/bad"
passed=$((passed + 1))

run_mpi 2 "^wrote $TMP/fit.h5" "$LADLE" fit-weights "$TMP/soup/model.h5" --like "$top_srcdir"/include/ladle/*.h \
    -o "$TMP/fit.h5" --steps 15 --windows 16 || fail "fit-weights"
awk '/^loss on/ { found = 1; ok = ($8 + 0 <= $6 + 1e-4) } END { exit !(found && ok) }' "$TMP/out" || { cat "$TMP/out" >&2; fail "fit-weights increased the loss"; }
passed=$((passed + 1))
echo "specialize: $passed passed, 0 failed"
