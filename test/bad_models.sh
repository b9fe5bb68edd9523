#!/bin/sh
# Model files and requests that must be refused before they do harm: non-finite or
# duplicate domain weights, NaN/Inf in any part of a model or checkpoint (named by tensor),
# an unknown kind, a stored configuration that cannot describe its tensors, a merge that
# overflows (never written), a plan larger than the node's memory, and example or task
# "files" that are FIFOs, devices or far too large (refused at once, not waited on).
. "$top_srcdir/test/lib.sh"
make_tmp
need_h5py
make_small_corpus "$TMP/corpus.h5"
passed=0
C="data.corpus=$TMP/corpus.h5"
# shellcheck disable=SC2086
run_mpi 1 "^done: 4 steps" "$LADLE" train $TINY train.steps=4 soup.experts=2 router.hidden=8 $C run.dir="$TMP/soup" ||
    fail "soup training"
# shellcheck disable=SC2086
run_mpi 1 "^done: 4 steps" "$LADLE" train $TINY train.steps=4 ckpt.every=2 $C run.dir="$TMP/dense" ||
    fail "dense training"
SOUP="$TMP/soup/model.h5" DENSE="$TMP/dense/model.h5"

# ---- domain weights -------------------------------------------------------------------
for w in c=1e40 c=inf c=nan c=-1 c=1,c=2 c=0; do
    refuse "--weights" instantiate "$SOUP" -o "$TMP/bad.h5" --weights "$w"
done
refuse "domain 'c' is given twice" instantiate "$SOUP" -o "$TMP/bad.h5" --weights c=1,tests=1,c=2
refuse "expected a number in \[0, 3.40282e+38\]" instantiate "$SOUP" -o "$TMP/bad.h5" --weights c=1e40
refuse "expected a number in" eval "$SOUP" --corpus "$TMP/corpus.h5" --weights tests=1e39

# ---- damaged model files: poke(FILE DATASET EXPR) rewrites a dataset with numpy --------
poke() {
    cp "$1" "$TMP/bad-model.h5"
    "$PYTHON3" - "$TMP/bad-model.h5" "$2" "$3" <<'PY' || fail "poking $2"
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r+") as f:
    d = f[sys.argv[2]]
    x = d[...]
    exec(sys.argv[3])
    d[...] = x
PY
}
for spec in "$DENSE /shared/h.0.ffn.w1 x.flat[7]=np.nan" "$DENSE /shared/lnf.b x[-1]=np.inf" \
            "$SOUP /experts/h.1.attn.qkv.w x[1,3,5]=-np.inf" "$SOUP /router/router.w1 x[0,0]=np.nan"; do
    set -- $spec
    poke "$1" "$2" "$3"
    refuse "$2 holds NaN or Inf values" eval "$TMP/bad-model.h5" --corpus "$TMP/corpus.h5"
done
# the same under two ranks: every rank stops, whichever holds the value
poke "$SOUP" /experts/lnf.w "x[1,-1]=np.nan"
run_mpi 2 "ladle: error" "$LADLE" instantiate "$TMP/bad-model.h5" -o "$TMP/bad.h5" --weights c=1
[ $? -eq 2 ] && grep -q "/experts/lnf.w holds NaN or Inf" "$TMP/out" || { cat "$TMP/out" >&2; fail "2 ranks: NaN not refused"; }
[ ! -e "$TMP/bad.h5" ] || fail "2 ranks: wrote from a model with NaN"
passed=$((passed + 1))

# a checkpoint's optimizer state is checked too: resuming from it is refused
R="$TMP/dense-resume"
cp -r "$TMP/dense" "$R"
"$PYTHON3" - "$R/ckpt-00000004.h5" <<'PY' || fail "poking the checkpoint"
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r+") as f:
    v = f["/optim/v/shared/wte"]; x = v[...]; x[2, 2] = np.nan; v[...] = x
PY
# shellcheck disable=SC2086
run_mpi 1 "ladle: error" "$LADLE" train $TINY train.steps=6 ckpt.every=2 $C run.dir="$R"
[ $? -eq 2 ] && grep -q "/optim/v/shared/wte holds NaN or Inf" "$TMP/out" || { cat "$TMP/out" >&2; fail "NaN moment not refused"; }
passed=$((passed + 1))

# kind and stored configuration (attributes rewritten with h5py)
attr() {
    cp "$1" "$TMP/bad-model.h5"
    "$PYTHON3" - "$TMP/bad-model.h5" "$2" "$3" "$4" <<'PY' || fail "rewriting attribute $2"
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    f.attrs[sys.argv[2]] = f.attrs[sys.argv[2]].replace(sys.argv[3], sys.argv[4]) if sys.argv[3] else sys.argv[4]
PY
}
attr "$DENSE" kind "" weird
refuse "has kind 'weird': expected dense, soup or instantiated" eval "$TMP/bad-model.h5" --corpus "$TMP/corpus.h5"
attr "$DENSE" config "model.heads = 4" "model.heads = 3"
refuse "stored configuration rejected: model.heads = 3 does not divide model.dim = 32" \
    eval "$TMP/bad-model.h5" --corpus "$TMP/corpus.h5"
attr "$DENSE" config "model.dim = 32" "model.dim = 64"
refuse "does not have the shape its configuration implies" eval "$TMP/bad-model.h5" --corpus "$TMP/corpus.h5"

# ---- a merge that overflows is never written: S = E_j = 3e38 and alpha_j = 1 exactly ---
cp "$SOUP" "$TMP/huge.h5"
"$PYTHON3" - "$TMP/huge.h5" <<'PY' || fail "making the overflowing soup"
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r+") as f:
    for g in ("/shared/lnf.w", "/experts/lnf.w"):
        d = f[g]; d[...] = np.full(d.shape, 3e38, dtype=np.float32)
    for name, value in (("router.w2", 0.0), ("router.b2", 1.0)):   # raw alpha = b2
        d = f["/router/" + name]; d[...] = np.full(d.shape, value, dtype=np.float32)
PY
"$LADLE" instantiate "$TMP/huge.h5" -o "$TMP/bad.h5" --weights c=1 > "$TMP/err" 2>&1
rc=$?
[ $rc -eq 1 ] && grep -q "not writing '$TMP/bad.h5': /shared/lnf.w holds NaN or Inf" "$TMP/err" ||
    { cat "$TMP/err" >&2; fail "overflowing merge: exit $rc"; }
[ ! -e "$TMP/bad.h5" ] && [ ! -e "$TMP/bad.h5.tmp" ] || fail "overflowing merge was written"
passed=$((passed + 1))

# ---- plans larger than the node's memory: exit 2 before allocating, naming the key -----
BIG="model.context=1024 train.steps=2 train.warmup=1"
# shellcheck disable=SC2086
refuse "needs .* GiB of memory on one node .* reduce train.batch or model.context" \
    train $TINY $BIG train.batch=8192 $C run.dir="$TMP/huge-run"
# shellcheck disable=SC2086
refuse "reduce train.batch or model.context" train $TINY $BIG train.batch=8192 $C run.dir="$TMP/huge-run" --dry-run
# shellcheck disable=SC2086
refuse "reduce soup.experts, or use more ranks" train $TINY model.dim=512 model.heads=8 soup.experts=4096 $C \
    run.dir="$TMP/huge-run" --dry-run --ranks 4
[ ! -e "$TMP/huge-run" ] || fail "a refused plan created its run directory"
# two ranks on one node that fit alone (0.7 of the memory each) but not together
# shellcheck disable=SC2086
"$LADLE" train $TINY $BIG train.batch=1 $C run.dir="$TMP/huge-run" --dry-run > "$TMP/plan" || fail "dry run"
per_seq=$(awk '/activations and routed-site caches/ { print $(NF - 2) }' "$TMP/plan")
mem_kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
batch=$(awk -v m="$mem_kb" -v s="$per_seq" 'BEGIN { printf "%d", 2 * int(0.7 * m * 1024 / s) }')
# shellcheck disable=SC2086
run_mpi 2 "ladle: error" "$LADLE" train $TINY $BIG train.batch="$batch" $C run.dir="$TMP/huge-run"
[ $? -eq 2 ] && grep -q "on one node (2 ranks; rank [01] alone" "$TMP/out" || { cat "$TMP/out" >&2;
    fail "2 ranks, $batch sequences of $per_seq bytes on $mem_kb kB: plan not refused"; }
passed=$((passed + 1))

# ---- example and task files that are not documents --------------------------------------
mkfifo "$TMP/fifo"
refuse "'$TMP/fifo' is a FIFO, not a regular file" instantiate "$SOUP" -o "$TMP/bad.h5" --like "$TMP/fifo"
refuse "'$TMP/fifo' is a FIFO, not a regular file" fit-weights "$SOUP" -o "$TMP/bad.h5" --like "$TMP/fifo"
refuse "'/dev/zero' is a character device" instantiate "$SOUP" -o "$TMP/bad.h5" --like /dev/zero
refuse "is a directory" instantiate "$SOUP" -o "$TMP/bad.h5" --like "$TMP"
refuse "'$TMP/fifo' is a FIFO" prune "$DENSE" --task "$TMP/fifo" --experts 2 -o "$TMP/bad.h5"
truncate -s 70M "$TMP/big.txt"
refuse "'$TMP/big.txt' holds more than 64 MiB" instantiate "$SOUP" -o "$TMP/bad.h5" --like "$TMP/big.txt"
echo "bad_models: $passed checks passed"
