#!/bin/sh
# UNCURL end to end: a top-1 MoE model pruned for a task (the same file on 1 and 2
# ranks), the frequency baseline keeps whole experts, router-only re-training leaves
# every other tensor alone, and bad requests are refused without writing anything.
. "$top_srcdir/test/lib.sh"
make_tmp
: "${PYTHON3:=/usr/bin/python3}"
make_small_corpus "$TMP/corpus.h5"
passed=0
MOE="$TINY model.ffn=moe moe.experts=4 train.steps=30 data.corpus=$TMP/corpus.h5"
# shellcheck disable=SC2086
run_mpi 2 "^done: 30 steps" "$LADLE" train $MOE run.dir="$TMP/moe" || fail "MoE training"
TASK="$top_srcdir/src/train.c"
for n in 1 2; do
    run_mpi $n "^wrote $TMP/uncurl$n.h5: 2 routed site(s) pruned to 2 experts" "$LADLE" prune "$TMP/moe/model.h5" \
        --task "$TASK" --experts 2 -o "$TMP/uncurl$n.h5" || fail "prune on $n ranks"
done
grep -q "^layer 0 (moe): 4 -> 2 experts (uncurl)" "$TMP/out" || fail "no per-layer grouping report"
for t in h.0.moe.e0.w1 h.1.moe.e1.b2 h.0.attn.qkv.w; do
    h5dump -d "/shared/$t" "$TMP/uncurl1.h5" | tail -n +3 > "$TMP/a"
    h5dump -d "/shared/$t" "$TMP/uncurl2.h5" | tail -n +3 > "$TMP/b"
    cmp -s "$TMP/a" "$TMP/b" || fail "/shared/$t differs between prune on 1 and 2 ranks"
done
h5ls "$TMP/uncurl1.h5/shared" | grep -q "h.0.moe.e2" && fail "the pruned model still has expert 2"
"$LADLE" inspect "$TMP/uncurl1.h5" | grep -q "^ffn sites: moe (moe: 2 experts, top-1" || fail "inspect does not show 2 experts"
passed=$((passed + 1))

run_mpi 1 "^wrote" "$LADLE" prune "$TMP/moe/model.h5" --task "$TASK" --experts 2 --method frequency -o "$TMP/freq.h5" \
    || fail "prune --method frequency"
grep -q "dropped" "$TMP/out" || fail "frequency pruning reports no dropped expert"
if "$PYTHON3" -c 'import h5py, numpy' 2>/dev/null; then
    "$PYTHON3" - "$TMP/moe/model.h5" "$TMP/freq.h5" <<'PY' || fail "frequency pruning did not keep whole experts"
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r")["shared"], h5py.File(sys.argv[2], "r")["shared"]
for l in (0, 1):
    for g in (0, 1):
        kept = b["h.%d.moe.e%d.w1" % (l, g)][...]
        assert any(np.array_equal(kept, a["h.%d.moe.e%d.w1" % (l, e)][...]) for e in range(4)), (l, g)
assert np.array_equal(a["h.0.attn.qkv.w"][...], b["h.0.attn.qkv.w"][...])
PY
    passed=$((passed + 1))
fi

# router-only re-training: the experts and everything else stay as pruned
# shellcheck disable=SC2086
run_mpi 2 "^done: 10 steps" "$LADLE" train $TINY model.ffn=moe moe.experts=2 train.steps=10 data.corpus="$TMP/corpus.h5" \
    train.init="$TMP/uncurl1.h5" train.only=router run.dir="$TMP/retrain" || fail "router re-training"
grep -q "^initialised from $TMP/uncurl1.h5" "$TMP/out" || fail "train.init not applied"
for t in h.0.moe.e0.w1 h.1.ln2.w wte; do
    h5dump -d "/shared/$t" "$TMP/uncurl1.h5" | tail -n +3 > "$TMP/a"
    h5dump -d "/shared/$t" "$TMP/retrain/model.h5" | tail -n +3 > "$TMP/b"
    cmp -s "$TMP/a" "$TMP/b" || fail "train.only=router changed /shared/$t"
done
h5dump -d "/shared/h.0.moe.router" "$TMP/uncurl1.h5" | tail -n +3 > "$TMP/a"
h5dump -d "/shared/h.0.moe.router" "$TMP/retrain/model.h5" | tail -n +3 > "$TMP/b"
cmp -s "$TMP/a" "$TMP/b" && fail "train.only=router did not train the router"
passed=$((passed + 1))

refuse "expected 1 <= D < 4" prune "$TMP/moe/model.h5" --task "$TASK" --experts 4 -o "$TMP/bad.h5"
refuse "--experts '-1': expected an integer in \[1, 4096\]" prune "$TMP/moe/model.h5" --task "$TASK" --experts -1 -o "$TMP/bad.h5"
printf 'short\n' > "$TMP/short.txt"
refuse "fewer than one window" prune "$TMP/moe/model.h5" --task "$TMP/short.txt" --experts 2 -o "$TMP/bad.h5"
# shellcheck disable=SC2086
run_mpi 1 "^done: 5 steps" "$LADLE" train $TINY train.steps=5 data.corpus="$TMP/corpus.h5" run.dir="$TMP/dense" || fail "dense run"
refuse "has no moe or smear sites" prune "$TMP/dense/model.h5" --task "$TASK" --experts 2 -o "$TMP/bad.h5"
# a smear site (segment routing) prunes the same way; tag sites are refused
# shellcheck disable=SC2086
run_mpi 2 "^done: 20 steps" "$LADLE" train $TINY model.ffn=smear,moe smear.experts=4 smear.segment=8 moe.experts=4 \
    train.steps=20 data.corpus="$TMP/corpus.h5" run.dir="$TMP/smear" || fail "smear training"
run_mpi 2 "^wrote $TMP/smear2.h5: 2 routed site(s) pruned to 2 experts" "$LADLE" prune "$TMP/smear/model.h5" \
    --task "$TASK" --experts 2 -o "$TMP/smear2.h5" || fail "prune a smear site"
grep -q "^layer 0 (smear): 4 -> 2 experts (uncurl)" "$TMP/out" || fail "no smear site in the report"
run_mpi 1 "mean" "$LADLE" eval "$TMP/smear2.h5" --corpus "$TMP/corpus.h5" --windows 2 || fail "eval of the pruned smear model"
passed=$((passed + 1))
# shellcheck disable=SC2086
run_mpi 1 "^done: 4 steps" "$LADLE" train $TINY model.ffn=tag,moe moe.experts=4 smear.experts=3 train.steps=4 \
    data.corpus="$TMP/corpus.h5" run.dir="$TMP/tag" || fail "tag training"
refuse "is a tag or adapter site" prune "$TMP/tag/model.h5" --task "$TASK" --experts 2 -o "$TMP/bad.h5"
echo "prune: $passed passed, 0 failed"
