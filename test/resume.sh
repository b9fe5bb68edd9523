#!/bin/sh
# Checkpoints and resume:
#  1. kill -9 of one rank mid-run, resume on the same rank count: every logged loss is
#     bit-identical to an uninterrupted run;
#  2. resume on another rank count (4 -> 2, 2 -> 3, 1 -> 4; a soup of 5 experts, so
#     neither n nor p divides P): losses within 1e-5 of the uninterrupted run;
#  3. SIGUSR1 to one rank: the run checkpoints, exits 3, and resuming continues the same
#     trajectory;
#  4. a truncated newest checkpoint is reported and the previous one used;
#  5. a shape change is refused naming the keys; --fresh needs --force over a run.
. "$top_srcdir/test/lib.sh"
make_tmp
make_small_corpus "$TMP/corpus.h5"
passed=0
CFG="$TINY train.batch=24 train.steps=40 ckpt.every=10 ckpt.keep_last=2 log.every=40 data.corpus=$TMP/corpus.h5"
SOUP="$CFG soup.experts=5 router.hidden=8 soup.expert_init_std=0.02 meta.support=2"


# compare LOSSES_A LOSSES_B TOL LABEL: same steps, relative difference <= TOL (0: identical)
compare() {
    [ "$(wc -l < "$1")" -eq "$(wc -l < "$2")" ] || fail "$4: $(wc -l < "$1") vs $(wc -l < "$2") loss lines"
    paste "$1" "$2" | awk -v tol="$3" -v label="$4" '
        { if ($1 != $3) { print label ": step mismatch " $1 " vs " $3; bad++; next }
          if (tol == 0) { if ($2 != $4) { print label ": step " $1 ": " $2 " != " $4; bad++ } }
          else { d = $2 - $4; if (d < 0) d = -d; r = d / $2; if (r > worst) worst = r; if (r > tol) bad++ } }
        END { if (tol > 0) printf "%s: worst relative difference %.2e over %d steps\n", label, worst, NR;
              else printf "%s: %d steps bit-identical\n", label, NR; exit bad > 0 }' || fail "$4"
}

# --- 1. kill -9 mid-run, same rank count -------------------------------------------------
# shellcheck disable=SC2086
run_mpi 2 "^done: 40 steps" "$LADLE" train $SOUP run.dir="$TMP/full2" || fail "uninterrupted run"
step_loss_pairs "$TMP/full2" > "$TMP/full2.loss"
# shellcheck disable=SC2086
(timeout 300 $TESTMPIRUN 2 "$LADLE" train $SOUP train.batch=96 run.dir="$TMP/kill" > "$TMP/kill.out" 2>&1) &
# the larger batch makes steps slow enough to strike between the checkpoints of 20 and 30
i=0
until grep -q '"step": 2[4-9], "loss"' "$TMP/kill/metrics.jsonl" 2>/dev/null; do
    sleep 0.05; i=$((i + 1)); [ $i -lt 4000 ] || fail "the run to be killed never reached step 24"
done
victim=$(pgrep -f "ladle train .*run.dir=$TMP/kill" | tail -1)
[ -n "$victim" ] || fail "no rank process to kill"
kill -9 "$victim"
wait
step_killed=$(step_loss_pairs "$TMP/kill" | tail -1 | cut -d' ' -f1)
[ "$(cat "$TMP/kill/latest")" = "ckpt-00000020.h5" ] || fail "latest is '$(cat "$TMP/kill/latest")' after the kill at step $step_killed"
echo "killed a rank after step $step_killed; latest = $(cat "$TMP/kill/latest")"
# shellcheck disable=SC2086
run_mpi 2 "^done: 40 steps" "$LADLE" train $SOUP train.batch=96 run.dir="$TMP/kill" || fail "resume after kill -9"
grep -q "resuming from $TMP/kill/ckpt-00000020.h5 at step 20" "$TMP/out" || fail "did not resume from step 20"
# shellcheck disable=SC2086
run_mpi 2 "^done: 40 steps" "$LADLE" train $SOUP train.batch=96 run.dir="$TMP/full96" || fail "uninterrupted batch-96 run"
step_loss_pairs "$TMP/kill" > "$TMP/kill.loss"
step_loss_pairs "$TMP/full96" > "$TMP/full96.loss"
compare "$TMP/full96.loss" "$TMP/kill.loss" 0 "kill -9 at step $step_killed, resume on 2 ranks"
[ ! -e "$TMP/kill/ckpt-00000010.h5" ] && [ -e "$TMP/kill/ckpt-00000030.h5" ] && [ -e "$TMP/kill/ckpt-00000040.h5" ] \
    || { ls "$TMP/kill" >&2; fail "ckpt.keep_last=2 retention"; }
passed=$((passed + 1))

# --- 2. another rank count ------------------------------------------------------------------
for pair in "4 2" "2 3" "1 4"; do
    set -- $pair
    # shellcheck disable=SC2086
    run_mpi $1 "stopping after 20 steps" "$LADLE" train $SOUP run.stop_after=20 run.dir="$TMP/p$1" || fail "first half on $1 ranks"
    # shellcheck disable=SC2086
    run_mpi $2 "^done: 40 steps" "$LADLE" train $SOUP run.dir="$TMP/p$1" || fail "second half on $2 ranks"
    grep -q "resuming from .*ckpt-00000020.h5 at step 20" "$TMP/out" || fail "$1 -> $2 ranks: no resume at step 20"
    step_loss_pairs "$TMP/p$1" > "$TMP/p$1.loss"
    compare "$TMP/full2.loss" "$TMP/p$1.loss" 1e-5 "checkpoint of $1 ranks resumed on $2"
    passed=$((passed + 1))
done

# --- 3. SIGUSR1 to one rank --------------------------------------------------------------------
# shellcheck disable=SC2086
(timeout 300 $TESTMPIRUN 3 "$LADLE" train $SOUP train.batch=96 ckpt.every=0 run.dir="$TMP/usr1" > "$TMP/usr1.out" 2>&1;
 echo $? > "$TMP/usr1.rc") &
i=0
until grep -q '"step": [5-9], "loss"' "$TMP/usr1/metrics.jsonl" 2>/dev/null; do
    sleep 0.05; i=$((i + 1)); [ $i -lt 4000 ] || fail "the run to be preempted never reached step 5"
done
kill -USR1 "$(pgrep -f "ladle train .*run.dir=$TMP/usr1" | tail -1)"
wait
[ "$(cat "$TMP/usr1.rc")" = 3 ] || { cat "$TMP/usr1.out" >&2; fail "preempted run exited $(cat "$TMP/usr1.rc"), expected 3"; }
grep -q "^preempted at step" "$TMP/usr1.out" || fail "no preemption message"
# shellcheck disable=SC2086
run_mpi 3 "^done: 40 steps" "$LADLE" train $SOUP train.batch=96 ckpt.every=0 run.dir="$TMP/usr1" || fail "resume after SIGUSR1"
step_loss_pairs "$TMP/usr1" > "$TMP/usr1.loss"
# shellcheck disable=SC2086
run_mpi 3 "^done: 40 steps" "$LADLE" train $SOUP train.batch=96 ckpt.every=0 run.dir="$TMP/full3" || fail "uninterrupted 3 ranks"
step_loss_pairs "$TMP/full3" > "$TMP/full3.loss"
compare "$TMP/full3.loss" "$TMP/usr1.loss" 0 "SIGUSR1 $(grep '^preempted' "$TMP/usr1.out"), resume on 3 ranks"
passed=$((passed + 1))

# --- 4. a truncated newest checkpoint --------------------------------------------------------
# shellcheck disable=SC2086
run_mpi 2 "stopping after 30 steps" "$LADLE" train $CFG run.stop_after=30 run.dir="$TMP/trunc" || fail "run to truncate"
f="$TMP/trunc/ckpt-00000030.h5"
head -c 2000 "$f" > "$f.cut" && mv "$f.cut" "$f"
# shellcheck disable=SC2086
run_mpi 2 "^done: 40 steps" "$LADLE" train $CFG run.dir="$TMP/trunc" || fail "resume past a truncated checkpoint"
grep -q "warning: checkpoint '$f' is unusable" "$TMP/out" || { cat "$TMP/out" >&2; fail "no warning naming the truncated file"; }
grep -q "resuming from $TMP/trunc/ckpt-00000020.h5 at step 20" "$TMP/out" || fail "did not fall back to step 20"
passed=$((passed + 1))

# --- 5. refusals -------------------------------------------------------------------------------
# shellcheck disable=SC2086
"$LADLE" train $CFG model.dim=48 run.dir="$TMP/trunc" > "$TMP/err" 2>&1
[ $? -eq 2 ] && grep -q "the model's shape differs: 'model.dim = 32' (checkpoint) vs 'model.dim = 48' (now)" "$TMP/err" \
    || { cat "$TMP/err" >&2; fail "a shape change was not refused by name"; }
# shellcheck disable=SC2086
"$LADLE" train $CFG model.ffn_mult=2 run.dir="$TMP/trunc" > "$TMP/err" 2>&1
[ $? -eq 2 ] && grep -q "'model.ffn_mult = 4' (checkpoint) vs 'model.ffn_mult = 2' (now)" "$TMP/err" \
    || { cat "$TMP/err" >&2; fail "an FFN width change was not refused by name"; }
# shellcheck disable=SC2086
run_mpi 1 "^done: 40 steps" "$LADLE" train $CFG eval.sequences=2 run.dir="$TMP/trunc" || fail "resume with a changed eval setting"
grep -q "resume: changed setting: eval.sequences = 2  (was: eval.sequences = 4)" "$TMP/out" || fail "changed setting not logged"
# shellcheck disable=SC2086
"$LADLE" train $CFG --fresh run.dir="$TMP/trunc" > "$TMP/err" 2>&1
[ $? -eq 2 ] && grep -q "add --force" "$TMP/err" || fail "--fresh over a run without --force was not refused"
# shellcheck disable=SC2086
run_mpi 1 "^done: 40 steps" "$LADLE" train $CFG --fresh --force run.dir="$TMP/trunc" || fail "--fresh --force"
grep -q "resuming" "$TMP/out" && fail "--fresh --force resumed"
passed=$((passed + 1))
echo "resume: $passed passed, 0 failed"
