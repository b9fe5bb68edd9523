#!/bin/bash
# Strong or weak scaling of 'ladle train': the same configuration on a list of rank counts.
#
#   jobs/scaling.sh [--mode strong|weak] [--ranks "1 2 4"] [--out DIR] [--steps N] [--warmup W]
#                   [--batch B] [--launch mpiexec|srun|sbatch] [--slurm] [--sbatch-opts "..."]
#                   [CONFIG] [key=value ...]
#
#   --mode strong   (default) the same global train.batch on every rank count: the config's,
#                   or B with --batch
#   --mode weak     train.batch = P x B on P ranks, B = --batch or the config's train.batch
#                   (read from the key=value arguments, then CONFIG, then ladle's default):
#                   each rank keeps the work of the one-rank run
#   --ranks         rank counts (default "1 2 4", or 1,2,4); the smallest is the reference
#   --out DIR       (default scaling) DIR/runs/pP/ is the run of P ranks (started afresh:
#                   ladle train --fresh --force), DIR/runs/pP.log its output
#   --steps N       training steps per run (default 30); --warmup W (default 5): the first W
#                   steps are left out of the medians
#
# How the runs are launched (--launch):
#   mpiexec  (default outside SLURM) '$MPIEXEC -n P' on this machine, MPIEXEC defaulting to
#            mpiexec; --oversubscribe is added when P exceeds the cores, with a warning, as
#            such timings mean little
#   srun     (default inside an allocation, i.e. when SLURM_JOB_ID is set: 'salloc -n 4
#            jobs/scaling.sh ...' or a batch script) 'srun --mpi=pmix -n P' inside it, or
#            mpiexec if this SLURM has no PMIx plugin
#   sbatch   (also --slurm) one job per rank count, submitted one after the other with
#            'sbatch --wait --exclusive --ntasks=P [--sbatch-opts] jobs/train.sbatch ...', so
#            that runs neither overlap nor share nodes with other jobs; sbatch's own
#            variables (SBATCH_PARTITION, SBATCH_TIMELIMIT, SBATCH_ACCOUNT, ...) apply
#
# Every run has ckpt.every=0 eval.every=0 (no checkpoint or evaluation inside the timed
# steps). From each run's metrics.jsonl: the medians over steps W+1..N of tokens/s, the step
# time and its parts ms_merge, ms_gather, ms_compute, ms_reduce, ms_optim. Written:
#   DIR/scaling.csv   one row per rank count, with speedup and parallel efficiency
#   DIR/scaling.md    the same as a Markdown table
#   DIR/scaling.png   parallel efficiency (and speedup) against ranks
# speedup = tokens/s on P ranks / tokens/s on the smallest count P0; efficiency = speedup x P0 / P
# (strong: the fixed batch is done faster; weak: P/P0 times the work in the same time is 1.0).
#
# Environment: LADLE (default: ladle next to this script's install, else on PATH), MPIEXEC,
# PYTHON3 (default /usr/bin/python3: needs matplotlib). As root, Open MPI needs
# OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1.
set -eu

prog=jobs/scaling.sh
here=$(cd "$(dirname "$0")" && pwd)
die() { echo "$prog: $*" >&2; exit 2; }
say() { echo "$prog: $*"; }

mode=strong ranks="1 2 4" out=scaling steps=30 warmup=5 batch='' launch='' sbatch_opts=''
while [ $# -gt 0 ]; do
    case $1 in
        --mode) [ $# -ge 2 ] || die "--mode needs strong or weak"; mode=$2; shift 2 ;;
        --mode=*) mode=${1#*=}; shift ;;
        --ranks) [ $# -ge 2 ] || die "--ranks needs a list such as \"1 2 4\""; ranks=$2; shift 2 ;;
        --ranks=*) ranks=${1#*=}; shift ;;
        --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift 2 ;;
        --out=*) out=${1#*=}; shift ;;
        --steps) [ $# -ge 2 ] || die "--steps needs a number"; steps=$2; shift 2 ;;
        --steps=*) steps=${1#*=}; shift ;;
        --warmup) [ $# -ge 2 ] || die "--warmup needs a number"; warmup=$2; shift 2 ;;
        --warmup=*) warmup=${1#*=}; shift ;;
        --batch) [ $# -ge 2 ] || die "--batch needs a number"; batch=$2; shift 2 ;;
        --batch=*) batch=${1#*=}; shift ;;
        --launch) [ $# -ge 2 ] || die "--launch needs mpiexec, srun or sbatch"; launch=$2; shift 2 ;;
        --launch=*) launch=${1#*=}; shift ;;
        --slurm) launch=sbatch; shift ;;
        --sbatch-opts) [ $# -ge 2 ] || die "--sbatch-opts needs a string of sbatch options"; sbatch_opts=$2; shift 2 ;;
        --sbatch-opts=*) sbatch_opts=${1#*=}; shift ;;
        -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --) shift; break ;;
        -*) die "unknown option '$1' (see --help)" ;;
        *) break ;;
    esac
done

posint() { case $2 in ''|*[!0-9]*) die "$1 '$2': expected a positive integer" ;; esac; [ "$2" -gt 0 ] || die "$1 '$2': expected a positive integer"; }
case $mode in strong|weak) ;; *) die "--mode '$mode': expected strong or weak" ;; esac
posint --steps "$steps"
case $warmup in ''|*[!0-9]*) die "--warmup '$warmup': expected an integer >= 0" ;; esac
[ "$warmup" -lt "$steps" ] || die "--warmup $warmup leaves no step of --steps $steps to measure"
[ -z "$batch" ] || posint --batch "$batch"
set -f
# shellcheck disable=SC2086
rank_list=$(printf '%s\n' ${ranks//,/ } | sort -n -u | tr '\n' ' ')
set +f
[ -n "${rank_list// /}" ] || die "--ranks '$ranks': expected a list of rank counts such as \"1 2 4\""
for p in $rank_list; do posint "--ranks entry" "$p"; done

if [ -z "$launch" ]; then
    if [ -n "${SLURM_JOB_ID:-}" ]; then launch=srun; else launch=mpiexec; fi
fi
case $launch in mpiexec|srun|sbatch) ;; *) die "--launch '$launch': expected mpiexec, srun or sbatch" ;; esac

# ladle: $LADLE, else the one installed with this script (PREFIX/share/ladle/jobs -> PREFIX/bin), else PATH
if [ -z "${LADLE:-}" ]; then
    if [ -x "$here/../../../bin/ladle" ]; then LADLE=$here/../../../bin/ladle; else LADLE=ladle; fi
fi
found=$(command -v "$LADLE") || die "ladle binary '$LADLE' not found: set LADLE=/path/to/ladle or put it on PATH"
LADLE=$found
case $LADLE in /*) ;; *) LADLE=$(pwd)/$LADLE ;; esac
export LADLE
if [ -z "${PYTHON3:-}" ]; then
    if [ -x /usr/bin/python3 ]; then PYTHON3=/usr/bin/python3; else PYTHON3=python3; fi
fi
[ -f "$here/scaling_report.py" ] || die "$here/scaling_report.py is missing (it belongs next to this script)"
"$PYTHON3" -c 'import matplotlib' 2> /dev/null \
    || die "'$PYTHON3' cannot import matplotlib (Debian: python3-matplotlib; or set PYTHON3)"

# CONFIG (a file) and key=value overrides, passed on as they are
config='' overrides=()
for a in "$@"; do
    case $a in
        *=*) overrides+=("$a") ;;
        --*) die "'$a': options of ladle train are not passed through (scaling runs start afresh)" ;;
        *) [ -z "$config" ] || die "two CONFIG files: '$config' and '$a' (one CONFIG, then key=value ...)"
           [ -f "$a" ] || die "CONFIG '$a': no such file"
           config=$a ;;
    esac
done

# the configuration's train.batch: the last train.batch= override, else CONFIG, else the default
config_batch() {
    local b='' a
    for a in "${overrides[@]}"; do
        case $a in train.batch=*) b=${a#train.batch=} ;; esac
    done
    if [ -z "$b" ] && [ -n "$config" ]; then
        b=$(sed 's/#.*//' "$config" | awk -F= '{k = $1; gsub(/[ \t]/, "", k); v = $2; gsub(/[ \t]/, "", v)}
                                           k == "train.batch" {b = v} END {print b}')
    fi
    if [ -z "$b" ]; then
        b=$("$LADLE" keys | awk -F'`' '$2 == "train.batch" {print $4}')
    fi
    echo "$b"
}
if [ -z "$batch" ]; then
    batch=$(config_batch)
    case $batch in ''|*[!0-9]*) die "cannot tell the configuration's train.batch (got '$batch'): give --batch B" ;; esac
fi

mkdir -p "$out/runs" || die "--out '$out': cannot create $out/runs"
out=$(cd "$out" && pwd)
cores=$(nproc 2> /dev/null || echo 1)
srun_pmix=0
if [ "$launch" = srun ]; then
    [ -n "${SLURM_JOB_ID:-}" ] || die "--launch srun needs a SLURM allocation (salloc/sbatch), or use --launch sbatch"
    if srun --mpi=list 2>&1 | grep -qw pmix; then srun_pmix=1; fi
    threads=${SLURM_CPUS_PER_TASK:-1}
    export SRUN_CPUS_PER_TASK=$threads
fi
if [ "$launch" = sbatch ]; then
    command -v sbatch > /dev/null || die "--launch sbatch: sbatch not found"
    [ -f "$here/train.sbatch" ] || die "$here/train.sbatch is missing (it belongs next to this script)"
fi

say "$mode scaling over ranks: $rank_list(launch: $launch; $steps steps, medians after $warmup)"
runs=()
for p in $rank_list; do
    if [ "$mode" = weak ]; then b=$((batch * p)); else b=$batch; fi
    dir=$out/runs/p$p
    log=$out/runs/p$p.log
    args=(train)
    [ -z "$config" ] || args+=("$config")
    args+=("${overrides[@]}" "train.batch=$b" "train.steps=$steps" ckpt.every=0 eval.every=0
           "log.every=$steps" "run.dir=$dir" --fresh --force)
    say "P=$p: train.batch=$b -> $dir"
    rc=0
    case $launch in
        mpiexec)
            # shellcheck disable=SC2206
            cmd=(${MPIEXEC:-mpiexec} -n "$p")
            if [ "$p" -gt "$cores" ]; then
                echo "$prog: warning: $p ranks on $cores cores: oversubscribed, the timings mean little" >&2
                cmd+=(--oversubscribe)
            fi
            "${cmd[@]}" "$LADLE" "${args[@]}" > "$log" 2>&1 < /dev/null || rc=$? ;;
        srun)
            if [ $srun_pmix = 1 ]; then
                srun --mpi=pmix --exclusive --kill-on-bad-exit=1 -n "$p" "$LADLE" "${args[@]}" > "$log" 2>&1 < /dev/null || rc=$?
            else
                ${MPIEXEC:-mpiexec} -n "$p" "$LADLE" "${args[@]}" > "$log" 2>&1 < /dev/null || rc=$?
            fi ;;
        sbatch)
            rm -f "$log"
            # shellcheck disable=SC2086
            sbatch --wait --quiet --exclusive --ntasks="$p" --job-name="ladle-scaling-p$p" --output="$log" \
                $sbatch_opts "$here/train.sbatch" "${args[@]:1}" < /dev/null || rc=$? ;;
    esac
    # Open MPI refusing to start (e.g. as root without permission) exits 0 having run nothing
    if [ $rc -ne 0 ] || ! grep -q "^done: $steps steps" "$log" 2> /dev/null; then
        [ ! -f "$log" ] || tail -n 30 "$log" >&2
        echo "$prog: the run on $p rank(s) failed (exit $rc; no 'done: $steps steps' in $log)" >&2
        exit 1
    fi
    runs+=("$p=$b=$dir/metrics.jsonl")
done

label="$mode scaling, ${config:-ladle defaults}${overrides[*]:+ ${overrides[*]}}; $steps steps, medians after step $warmup; launch $launch; $(hostname -s), $(date '+%F %H:%M')"
"$PYTHON3" "$here/scaling_report.py" --mode "$mode" --warmup "$warmup" --out "$out" --label "$label" "${runs[@]}"
