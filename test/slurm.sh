#!/bin/bash
# make check-slurm: the SLURM jobs of jobs/ on a real one-node SLURM cluster on localhost
# (test/slurm-cluster.sh: munged, slurmctld, slurmd under a scratch directory, stopped by
# PID on exit, also on failure). Needs root and slurm-wlm (munge optional: auth/none).
#  1. jobs/train.sbatch on 2 tasks, 'scancel --signal=USR1 --batch' mid-run: the job
#     checkpoints (ladle exits 3), requeues itself, resumes from the checkpoint and finishes
#     with every step's loss bit-identical to an uninterrupted mpiexec run of the same config;
#  2. 'srun --mpi=none -n 2 ladle train' fails with a launcher error and trains nothing;
#  3. jobs/scaling.sh over 1 and 2 ranks, strong through sbatch and weak through mpiexec:
#     scaling.csv, scaling.md and scaling.png;
#  4. jobs/instantiate.sbatch: 2 specialists (weights, like) of a 2-expert soup in one job;
#     a list with a bad domain fails naming it.
# Environment as in 'make check': LADLE, top_srcdir, TESTMPIRUN, PYTHON3, OMPI_ALLOW_RUN_AS_ROOT*;
# LADLE_KEEP_TMP=1 keeps the scratch directory (cluster logs, job outputs) after a failure.
set -eu
: "${top_srcdir:?top_srcdir: the source tree (make check-slurm sets it)}"
. "$top_srcdir/test/lib.sh"
: "${PYTHON3:=/usr/bin/python3}"
JOBS=$top_srcdir/jobs
CLUSTER=$top_srcdir/test/slurm-cluster.sh
t0=$(date +%s)
passed=0

[ "$(id -u)" = 0 ] || fail "slurmd must run as root: run make check-slurm as root"
command -v slurmctld > /dev/null || fail "slurmctld not found: install slurm-wlm (share/ladle/debian-packages.sh)"
case $LADLE in /*) ;; *) LADLE=$(pwd)/$LADLE ;; esac
[ -x "$LADLE" ] || fail "LADLE '$LADLE' is not an executable"
export LADLE OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# nothing of an enclosing allocation or of the user's SLURM settings leaks into the test cluster
for v in $(env | sed -n 's/^\(\(SLURM\|SBATCH\|SRUN\|SALLOC\)_[A-Za-z0-9_]*\)=.*/\1/p'); do unset "$v"; done
unset LADLE_LAUNCH LADLE_TASKS

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ladle-slurm.XXXXXX") || fail "mktemp"
chmod 711 "$TMP"   # munged (the munge user) reaches its socket under $TMP/cluster
cleanup() {
    rc=$?
    bash "$CLUSTER" stop "$TMP/cluster" || rc=1
    if [ $rc -ne 0 ] && [ -n "${LADLE_KEEP_TMP:-}" ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
bash "$CLUSTER" start "$TMP/cluster" 2 || fail "the test cluster did not start (logs above)"
export SLURM_CONF=$TMP/cluster/slurm.conf
cd "$TMP"
echo "cluster up after $(( $(date +%s) - t0 )) s"

# job_field JOBID FIELD: a field of 'scontrol show job'
job_field() { scontrol show job -o "$1" 2> /dev/null | tr ' ' '\n' | sed -n "s/^$2=//p"; }
# wait_for SECONDS CMD...: poll CMD every 0.1 s, at most SECONDS
wait_for() {
    local limit=$(( $1 * 10 )) i=0
    shift
    until "$@"; do
        i=$((i + 1))
        [ $i -lt $limit ] || return 1
        sleep 0.1
    done
}
# job_in JOBID 'STATE|STATE...'
job_in() { job_field "$1" JobState | grep -Eqx "$2"; }

make_small_corpus "$TMP/corpus.h5"

# --- 1. preempt, requeue, resume ------------------------------------------------------------
STEPS=200
CFG="$top_srcdir/share/ladle/tiny.conf train.batch=64 train.steps=$STEPS ckpt.every=0 eval.every=0 log.every=100 data.corpus=$TMP/corpus.h5"
# shellcheck disable=SC2086
jid=$(sbatch --parsable --ntasks=2 "$JOBS/train.sbatch" $CFG run.dir="$TMP/job") || fail "sbatch jobs/train.sbatch"
out=$TMP/ladle-train-$jid.out
reached() { grep -q '"step": \([5-9][0-9]\|[1-9][0-9][0-9]\), "loss"' "$TMP/job/metrics.jsonl" 2> /dev/null; }
wait_for 60 reached || { cat "$out" >&2; fail "job $jid never reached step 50 (state $(job_field "$jid" JobState))"; }
scancel --signal=USR1 --batch "$jid" || fail "scancel --signal=USR1 --batch $jid"
requeued() { job_in "$jid" PENDING && [ "$(job_field "$jid" Restarts)" = 1 ]; }
wait_for 60 requeued || { cat "$out" >&2; fail "job $jid was not requeued after SIGUSR1 (state $(job_field "$jid" JobState))"; }
grep -q "^preempted at step" "$out" || { cat "$out" >&2; fail "no 'preempted at step' from ladle in $out"; }
grep -q "exited 3 (preempted): requeueing job $jid" "$out" || { cat "$out" >&2; fail "train.sbatch did not log exit 3 and the requeue"; }
step=$(sed -n 's/^preempted at step \([0-9]*\):.*/\1/p' "$out")
[ "$step" -lt $STEPS ] || fail "preempted at step $step, not mid-run"
[ "$(cat "$TMP/job/latest")" = "$(printf 'ckpt-%08d.h5' "$step")" ] || fail "latest is '$(cat "$TMP/job/latest")' after preemption at step $step"
echo "job $jid: preempted at step $step, checkpointed, requeued ($(job_field "$jid" Reason)) after $(( $(date +%s) - t0 )) s"

# the reference while the job waits: a requeued job is held until its BeginTime (~2 minutes,
# AuthInfo cred_expire); it is released right after
# shellcheck disable=SC2086
run_mpi 2 "^done: $STEPS steps" "$LADLE" train $CFG run.dir="$TMP/ref" || fail "uninterrupted reference run"
scontrol update JobId="$jid" StartTime=now || fail "scontrol update JobId=$jid StartTime=now"
finished() { job_in "$jid" 'COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE'; }
wait_for 120 finished || { cat "$out" >&2; fail "job $jid did not finish (state $(job_field "$jid" JobState))"; }
{ [ "$(job_field "$jid" JobState)" = COMPLETED ] && [ "$(job_field "$jid" ExitCode)" = 0:0 ]; } \
    || { cat "$out" >&2; fail "job $jid ended $(job_field "$jid" JobState) with exit $(job_field "$jid" ExitCode)"; }
grep -q "restart 1 on" "$out" || fail "the requeued run is not in $out (open-mode=append)"
grep -q "^resuming from $TMP/job/ckpt-$(printf %08d "$step").h5 at step $step" "$out" \
    || { cat "$out" >&2; fail "the requeued job did not resume from the step-$step checkpoint"; }
grep -q "^done: $STEPS steps" "$out" || fail "no 'done: $STEPS steps' in $out"
step_loss_pairs "$TMP/ref" > "$TMP/ref.loss"
step_loss_pairs "$TMP/job" > "$TMP/job.loss"
{ [ "$(wc -l < "$TMP/ref.loss")" -eq $STEPS ] && [ "$(wc -l < "$TMP/job.loss")" -eq $STEPS ]; } \
    || fail "$(wc -l < "$TMP/ref.loss") reference and $(wc -l < "$TMP/job.loss") job loss lines, expected $STEPS"
cmp -s "$TMP/ref.loss" "$TMP/job.loss" || { diff "$TMP/ref.loss" "$TMP/job.loss" | head >&2; fail "losses of the preempted job differ from the uninterrupted run"; }
echo "job $jid: resumed at step $step and finished; $STEPS losses bit-identical to the uninterrupted run (final $(tail -n 1 "$TMP/job.loss" | cut -d' ' -f2)), after $(( $(date +%s) - t0 )) s"
passed=$((passed + 1))

# --- 2. srun without PMIx ---------------------------------------------------------------------
rc=0
# shellcheck disable=SC2086
srun --mpi=none -n 2 "$LADLE" train $CFG train.steps=5 run.dir="$TMP/none" > "$TMP/none.out" 2>&1 || rc=$?
[ $rc -ne 0 ] || { cat "$TMP/none.out" >&2; fail "srun --mpi=none -n 2 ladle train succeeded"; }
[ ! -e "$TMP/none/metrics.jsonl" ] || fail "srun --mpi=none -n 2 ladle train trained something"
grep -q "one of 2 tasks.*--mpi=pmix" "$TMP/none.out" ||
    { cat "$TMP/none.out" >&2; fail "srun --mpi=none -n 2: no launcher error from ladle"; }
[ $rc -eq 2 ] || fail "srun --mpi=none -n 2: exit $rc, expected 2 (bad usage)"
echo "srun --mpi=none: ladle's launcher error (exit $rc)"
passed=$((passed + 1))

# --- 3. scaling -----------------------------------------------------------------------------------
check_scaling() {   # DIR MODE BATCH1 BATCH2
    local d=$1
    for f in scaling.csv scaling.md scaling.png; do [ -s "$d/$f" ] || fail "$d/$f missing or empty"; done
    "$PYTHON3" - "$d" "$2" "$3" "$4" <<'PY' || fail "$d: bad scaling report"
import csv, sys
d, mode, b1, b2 = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rows = list(csv.DictReader(open(d + "/scaling.csv")))
need = ["mode", "ranks", "batch", "tokens_per_s", "ms_step", "ms_merge", "ms_gather", "ms_compute", "ms_reduce",
        "ms_optim", "speedup", "efficiency"]
assert rows and all(k in rows[0] for k in need), rows[:1]
assert [int(r["ranks"]) for r in rows] == [1, 2], rows
assert [int(r["batch"]) for r in rows] == [b1, b2], [r["batch"] for r in rows]
assert all(r["mode"] == mode for r in rows)
assert all(float(r["tokens_per_s"]) > 0 and float(r["ms_step"]) > 0 and float(r["ms_compute"]) > 0 for r in rows)
assert float(rows[0]["speedup"]) == 1 and float(rows[0]["efficiency"]) == 1
e, s = float(rows[1]["efficiency"]), float(rows[1]["speedup"])
assert 0 < e and abs(e - s / 2) < 1e-3, (e, s)
md = open(d + "/scaling.md").read().splitlines()
table = [l for l in md if l.startswith("|")]
assert len(table) == 4 and "efficiency" in table[0] and "speedup" in table[0], table
assert table[2].startswith("| 1 |") and table[3].startswith("| 2 |"), table
png = open(d + "/scaling.png", "rb").read()
assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000, len(png)
print("%s: %s scaling, efficiency at 2 ranks %.0f%%" % (d, mode, 100 * e))
PY
}
"$JOBS/scaling.sh" --slurm --ranks "2 1" --steps 20 --warmup 5 --out "$TMP/strong" \
    "$top_srcdir/share/ladle/tiny.conf" data.corpus="$TMP/corpus.h5" > "$TMP/strong.out" 2>&1 \
    || { cat "$TMP/strong.out" >&2; fail "jobs/scaling.sh --slurm"; }
grep -q "running: srun --mpi=pmix" "$TMP/strong/runs/p2.log" || fail "scaling --slurm did not go through train.sbatch"
check_scaling "$TMP/strong" strong 8 8
"$JOBS/scaling.sh" --mode weak --launch mpiexec --ranks "1 2" --steps 20 --warmup 5 --out "$TMP/weak" \
    "$top_srcdir/share/ladle/tiny.conf" data.corpus="$TMP/corpus.h5" train.batch=6 > "$TMP/weak.out" 2>&1 \
    || { cat "$TMP/weak.out" >&2; fail "jobs/scaling.sh --mode weak"; }
check_scaling "$TMP/weak" weak 6 12
echo "scaling done after $(( $(date +%s) - t0 )) s"
passed=$((passed + 1))

# --- 4. specialists ----------------------------------------------------------------------------
"$LADLE" prep -o "$TMP/clusters.h5" --valid-fraction 0.2 --split-doc-bytes 2048 --clusters 2 \
    --domain c="$top_srcdir/src" --domain headers="$top_srcdir/include" > "$TMP/prep2.out" 2>&1 \
    || { cat "$TMP/prep2.out" >&2; fail "ladle prep --clusters 2"; }
# shellcheck disable=SC2086
run_mpi 2 "^done: 20 steps" "$LADLE" train $TINY soup.experts=2 router.hidden=8 soup.expert_init_std=0.02 \
    train.steps=20 data.corpus="$TMP/clusters.h5" run.dir="$TMP/soup" || fail "soup training"
cat > "$TMP/specialists" <<EOF
# two specialists of the soup
mostly-c0   weights c0=3,c1=1      # h = (0.75, 0.25)

from-src    like $top_srcdir/src/*.c
EOF
sbatch --wait --quiet --ntasks=2 --output="$TMP/inst.out" "$JOBS/instantiate.sbatch" \
    "$TMP/soup/model.h5" "$TMP/specialists" "$TMP/spec" || { cat "$TMP/inst.out" >&2; fail "jobs/instantiate.sbatch"; }
for n in mostly-c0 from-src; do
    [ -s "$TMP/spec/$n.h5" ] || { cat "$TMP/inst.out" >&2; fail "no $TMP/spec/$n.h5"; }
    "$LADLE" inspect "$TMP/spec/$n.h5" > "$TMP/inspect.out" 2>&1 || { cat "$TMP/inspect.out" >&2; fail "ladle inspect $n.h5"; }
done
grep -q "^h: c0 0.750, c1 0.250" "$TMP/spec/mostly-c0.log" || { cat "$TMP/spec/mostly-c0.log" >&2; fail "mostly-c0: h is not 0.75/0.25"; }
grep -q "^h: " "$TMP/spec/from-src.log" || { cat "$TMP/spec/from-src.log" >&2; fail "from-src: no h printed"; }
grep -q "all 2 specialist(s) written" "$TMP/inst.out" || fail "instantiate.sbatch did not report success"
printf 'good weights c0=1\nbad weights nosuch=1\n' > "$TMP/bad-list"
if sbatch --wait --quiet --ntasks=2 --output="$TMP/inst-bad.out" "$JOBS/instantiate.sbatch" \
        "$TMP/soup/model.h5" "$TMP/bad-list" "$TMP/spec-bad"; then
    cat "$TMP/inst-bad.out" >&2
    fail "instantiate.sbatch succeeded with an unknown domain"
fi
{ grep -q "FAILED: bad (of 2)" "$TMP/inst-bad.out" && [ -s "$TMP/spec-bad/good.h5" ]; } \
    || { cat "$TMP/inst-bad.out" >&2; fail "instantiate.sbatch did not name the failed specialist"; }
passed=$((passed + 1))

echo "slurm: $passed passed, 0 failed, in $(( $(date +%s) - t0 )) s"
