#!/bin/sh
# End to end on one and two ranks: prep -> train -> metrics.jsonl -> eval (table, JSON,
# rank-count independent) -> generate.
. "$top_srcdir/test/lib.sh"
make_tmp
passed=0
make_small_corpus "$TMP/corpus.h5"
grep -q "headers" "$TMP/prep.out" || fail "prep report lacks the domain 'headers'"
passed=$((passed + 1))

# shellcheck disable=SC2086
run_mpi 2 "^done: 30 steps" "$LADLE" train $TINY train.steps=30 eval.every=10 data.corpus="$TMP/corpus.h5" \
    run.dir="$TMP/run" || fail "train"
M="$TMP/run/metrics.jsonl"
[ -s "$TMP/run/model.h5" ] || fail "no model.h5"
[ ! -e "$TMP/run/model.h5.tmp" ] || fail "model.h5.tmp left behind"
[ "$(grep -c '"tokens_per_s"' "$M")" -eq 30 ] || fail "expected 30 training lines in metrics.jsonl"
for key in step loss lr tokens_per_s grad_norm ms_gather ms_compute ms_reduce ms_optim; do
    [ "$(grep -c "\"$key\": " "$M")" -ge 30 ] || fail "training lines lack \"$key\""
done
# evaluations at steps 10, 20 and the end, each on the 3 domains
[ "$(grep -c '"valid_loss"' "$M")" -eq 9 ] || fail "expected 9 eval lines, got $(grep -c '"valid_loss"' "$M")"
grep -q '"step": 20, "domain": "headers", "valid_loss"' "$M" || fail "eval line format"
grep -q '^step    30/30 | loss' "$TMP/out" || fail "progress line format"
passed=$((passed + 3))

# the training run's final eval and 'ladle eval' agree, on 1 and 2 ranks
run_mpi 1 "mean" "$LADLE" eval "$TMP/run/model.h5" --corpus "$TMP/corpus.h5" --windows 4 || fail "eval"
cp "$TMP/out" "$TMP/eval1"
run_mpi 2 "mean" "$LADLE" eval "$TMP/run/model.h5" --corpus "$TMP/corpus.h5" --windows 4 --batch 1 || fail "eval on 2 ranks"
a=$(grep '^headers' "$TMP/eval1" | awk '{print $3}')
b=$(grep '^headers' "$TMP/out" | awk '{print $3}')
c=$(grep '"step": 30, "domain": "headers"' "$M" | sed 's/.*"valid_loss": \([^,]*\),.*/\1/')
awk -v a="$a" -v b="$b" -v c="$c" 'BEGIN { d1 = a - b; d2 = a - c; if (d1 < 0) d1 = -d1; if (d2 < 0) d2 = -d2;
    exit !(a > 0 && d1 < 1e-4 && d2 < 1e-3) }' || fail "eval disagrees: 1 rank $a, 2 ranks $b, training $c"
passed=$((passed + 1))
run_mpi 1 '"domains"' "$LADLE" eval "$TMP/run/model.h5" --corpus "$TMP/corpus.h5" --windows 4 --json || fail "eval --json"
grep -q '{"domain": "c", "windows": 4, "valid_loss": ' "$TMP/out" || fail "eval JSON"
passed=$((passed + 1))

run_mpi 1 "^int" "$LADLE" generate "$TMP/run/model.h5" --prompt "int" --bytes 40 --seed 3 || fail "generate"
[ "$(head -c 43 "$TMP/out" | wc -c)" -eq 43 ] || fail "generate printed fewer than prompt + 40 bytes"
cp "$TMP/out" "$TMP/gen1"
run_mpi 1 "^int" "$LADLE" generate "$TMP/run/model.h5" --prompt "int" --bytes 40 --seed 3 || fail "generate"
cmp -s "$TMP/gen1" "$TMP/out" || fail "generate with the same seed is not reproducible"
passed=$((passed + 1))
echo "prep_eval: $passed passed, 0 failed"
