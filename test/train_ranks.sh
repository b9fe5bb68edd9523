#!/bin/sh
# Rank-count invariance: the same config on 1, 2 and 3 ranks gives the same per-step
# losses (relative difference <= 1e-5 over 20 steps). The global batch (6 sequences)
# is split unevenly on some rank counts, and the parameter count is not a multiple of 3.
. "$top_srcdir/test/lib.sh"
make_tmp
make_small_corpus "$TMP/corpus.h5"
for n in 1 2 3; do
    # shellcheck disable=SC2086
    run_mpi $n "^done: 20 steps" "$LADLE" train $TINY train.steps=20 data.corpus="$TMP/corpus.h5" run.dir="$TMP/run$n" \
        || { cat "$TMP/out" >&2; fail "training on $n ranks"; }
    step_losses "$TMP/run$n" > "$TMP/loss$n"
    [ "$(wc -l < "$TMP/loss$n")" -eq 20 ] || fail "$n ranks: expected 20 loss lines"
done
for n in 2 3; do
    same_losses "1 vs $n ranks" "$TMP/loss1" "$TMP/loss$n" 20 || fail "losses on $n ranks differ from 1 rank"
done
# routed FFN sites: a MoE layer (top-1, capacity dropping, balancing loss) and a SMEAR
# layer (expert dropout on): the same losses on 1, 2 and 3 ranks
ROUTED="$TINY model.ffn=moe,smear moe.experts=3 moe.capacity=1.5 smear.experts=3 smear.segment=8"
for n in 1 2 3; do
    # shellcheck disable=SC2086
    run_mpi $n "^done: 12 steps" "$LADLE" train $ROUTED train.steps=12 data.corpus="$TMP/corpus.h5" run.dir="$TMP/routed$n" \
        || fail "routed training on $n ranks"
    step_losses "$TMP/routed$n" > "$TMP/rl$n"
done
for n in 2 3; do
    same_losses "moe,smear: 1 vs $n ranks" "$TMP/rl1" "$TMP/rl$n" 12 || fail "routed losses on $n ranks differ from 1 rank"
done

# SMEAR adapters after attention and FFN (the paper's placement), tag adapters too
ADAPT="$TINY model.ffn=smear,tag smear.kind=adapter smear.bottleneck=4 smear.experts=3 smear.segment=8"
for n in 1 2; do
    # shellcheck disable=SC2086
    run_mpi $n "^done: 8 steps" "$LADLE" train $ADAPT train.steps=8 data.corpus="$TMP/corpus.h5" run.dir="$TMP/adapt$n" \
        || fail "adapter training on $n ranks"
    step_losses "$TMP/adapt$n" > "$TMP/al$n"
done
same_losses "smear adapters: 1 vs 2 ranks" "$TMP/al1" "$TMP/al2" 8 || fail "adapter losses on 2 ranks differ from 1 rank"

# the losses must actually move: a run that learns nothing would also "agree"
first=$(head -1 "$TMP/loss1"); last=$(tail -1 "$TMP/loss1")
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 0.3) }' || fail "loss did not decrease ($first -> $last)"
echo "train_ranks: 6 passed, 0 failed"
