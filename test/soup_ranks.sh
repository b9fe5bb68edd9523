#!/bin/sh
# Soup-of-Experts under MPI:
#  - the same soup (n = 5 experts, parameter count not a multiple of 3 or 4) on 1, 2, 3
#    and 4 ranks gives the same per-step losses (relative difference <= 1e-5, 20 steps);
#  - going from 1 to 2 ranks halves each rank's share of the bank (within padding);
#  - a dense model (soup.experts = 0) and a soup see the same data: their first losses,
#    before any update, are equal when the experts start at zero.
. "$top_srcdir/test/lib.sh"
make_tmp
make_small_corpus "$TMP/corpus.h5"
SOUP="$TINY soup.experts=5 router.hidden=16 soup.expert_init_std=0.01 meta.support=2 meta.concentration=0.5"
passed=0
for n in 1 2 3 4; do
    # shellcheck disable=SC2086
    run_mpi $n "^done: 20 steps" "$LADLE" train $SOUP train.steps=20 data.corpus="$TMP/corpus.h5" run.dir="$TMP/soup$n" \
        || { cat "$TMP/out" >&2; fail "soup training on $n ranks"; }
    step_losses "$TMP/soup$n" > "$TMP/loss$n"
    [ "$(wc -l < "$TMP/loss$n")" -eq 20 ] || fail "$n ranks: expected 20 loss lines"
    sed -n 's/.*bank shard \([0-9]*\) bytes.*/\1/p' "$TMP/out" > "$TMP/bank$n"
    grep -q '"specialist_loss"' "$TMP/soup$n/metrics.jsonl" || fail "$n ranks: no specialist evaluation in metrics.jsonl"
done
for n in 2 3 4; do
    same_losses "soup, 1 vs $n ranks" "$TMP/loss1" "$TMP/loss$n" 20 || fail "soup losses on $n ranks differ from 1 rank"
    passed=$((passed + 1))
done
first=$(head -1 "$TMP/loss1"); last=$(tail -1 "$TMP/loss1")
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 0.3) }' || fail "soup loss did not decrease ($first -> $last)"
passed=$((passed + 1))

b1=$(cat "$TMP/bank1"); b2=$(cat "$TMP/bank2")
[ -n "$b1" ] && [ -n "$b2" ] || fail "no 'bank shard N bytes' in the memory report"
# 2 ranks: ceil(p / 2) elements per expert and moment at most, so b2 <= b1 / 2 + 3 n 4 bytes
awk -v a="$b1" -v b="$b2" 'BEGIN { exit !(a > 0 && b <= a / 2 + 3 * 5 * 4 && b >= a / 2 - 3 * 5 * 4) }' \
    || fail "bank share on 2 ranks is $b2 bytes, expected half of $b1"
echo "bank shard: 1 rank $b1 bytes, 2 ranks $b2 bytes"
passed=$((passed + 1))

# low-rank experts (replicated factors, each rank merging and differentiating the rows of
# its own slice, blocks cut mid-row): the same losses on 1, 2 and 3 ranks
for n in 1 2 3; do
    # shellcheck disable=SC2086
    run_mpi $n "^done: 12 steps" "$LADLE" train $SOUP soup.rank=2 soup.experts_on=blocks train.steps=12 \
        data.corpus="$TMP/corpus.h5" run.dir="$TMP/lowrank$n" || fail "low-rank soup on $n ranks"
    step_losses "$TMP/lowrank$n" > "$TMP/lr$n"
done
for n in 2 3; do
    same_losses "low-rank soup, 1 vs $n ranks" "$TMP/lr1" "$TMP/lr$n" 12 || fail "low-rank soup losses on $n ranks differ from 1 rank"
    passed=$((passed + 1))
done

# zero-initialised experts: Theta = S at step 1 whatever alpha is, so the soup's first
# loss equals the dense model's (same seed, same data)
# shellcheck disable=SC2086
run_mpi 2 "^done: 1 steps" "$LADLE" train $TINY train.steps=1 train.warmup=0 data.corpus="$TMP/corpus.h5" run.dir="$TMP/dense" meta.support=2 meta.concentration=0.5 \
    || fail "dense run"
# shellcheck disable=SC2086
run_mpi 2 "^done: 1 steps" "$LADLE" train $SOUP soup.expert_init_std=0 train.steps=1 train.warmup=0 data.corpus="$TMP/corpus.h5" run.dir="$TMP/zero" \
    || fail "zero-expert soup run"
d=$(step_losses "$TMP/dense")
z=$(step_losses "$TMP/zero")
[ "$d" = "$z" ] || fail "first loss of a zero-expert soup ($z) differs from the dense model's ($d)"
passed=$((passed + 1))
echo "soup_ranks: $passed passed, 0 failed"
