#!/bin/sh
# UNCURL at small scale (METHODS.md section 3; issue 5, experiment 2).
#
#   uncurl.sh LADLE OUTDIR
#
# A generic corpus (the project's demo corpus, named domains) and a task: one of its
# domains held out from pretraining. For Z in $ZS: pretrain a top-1 MoE model (every FFN
# site a MoE of Z experts) on the other domains; for D in Z/2, Z/4: prune it for the task
# (UNCURL and the frequency baseline), re-train the router for $ROUTER_STEPS steps, then
# fine-tune everything for $TUNE_STEPS steps on the task; compare with a model of D experts
# trained from scratch on the same tokens (pretraining + fine-tuning), and with the unpruned
# model of Z experts fine-tuned for the same steps (what pruning gives up). Reports the task's
# valid bits per byte for every row, for each seed in $SEEDS, as a Markdown table.
# Environment: MPIEXEC (default mpiexec), RANKS (2), ZS ("8 16"), SEEDS ("1 2"),
# PRE_STEPS (300), ROUTER_STEPS (30), TUNE_STEPS (100), SIZE (model keys). The task is
# Python source; its demo domain (python-lib) is left out of the generic corpus.
set -eu
ladle=${1:?usage: uncurl.sh LADLE OUTDIR}
out=${2:?usage: uncurl.sh LADLE OUTDIR}
here=$(cd "$(dirname "$0")/.." && pwd)
mpiexec=${MPIEXEC:-mpiexec}
ranks=${RANKS:-2}
zs=${ZS:-8 16}
seeds=${SEEDS:-1 2}
pre=${PRE_STEPS:-300}
router_steps=${ROUTER_STEPS:-30}
tune=${TUNE_STEPS:-100}
task=python-lib
size=${SIZE:-model.layers=2 model.dim=64 model.heads=4 model.context=64 train.batch=16 train.lr=2e-3 train.warmup=10}
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export BLIS_NUM_THREADS=1
mkdir -p "$out"
run() { $mpiexec -n "$ranks" "$ladle" "$@" > "$out/last.log" 2>&1 || { cat "$out/last.log" >&2; exit 1; }; }

# corpora: the generic one without the task's domain, and the task alone
# the task: Python source (the held-out domain), a few packages of the standard library
taskdirs="/usr/lib/python3.11/json /usr/lib/python3.11/email /usr/lib/python3.11/http"
if [ ! -s "$out/generic.h5" ]; then
    "$ladle" prep -o "$out/task.h5" --domain task="$(echo $taskdirs | tr ' ' ',')" --valid-fraction 0.2 > /dev/null
    # the generic corpus: the demo domains except the task's
    MAX_DOMAIN_BYTES=1000000 EXCLUDE="$task" sh "$here/demo-corpus.sh" "$out/generic.h5" "$ladle" > /dev/null
fi
# shellcheck disable=SC2086
taskfiles=$(find $taskdirs -name '*.py' | sort | head -20)

evalbpb() {  # MODEL -> task valid bits/byte
    "$ladle" eval "$1" --corpus "$out/task.h5" --windows 64 --json | sed 's/.*"valid_bpb": \([^}]*\)}.*/\1/'
}

echo "| Z | D | seed | UNCURL | frequency | scratch (D experts) | unpruned (Z experts) |" > "$out/RESULTS.md"
echo "|---|---|---|---|---|---|---|" >> "$out/RESULTS.md"
for z in $zs; do
    for seed in $seeds; do
        base="$out/z$z-s$seed"
        run train $size model.ffn=moe moe.experts="$z" train.steps="$pre" train.seed="$seed" eval.every=0 \
            data.corpus="$out/generic.h5" run.dir="$base" --fresh --force
        run train $size model.ffn=moe moe.experts="$z" train.steps="$((router_steps + tune))" train.seed="$seed" \
            eval.every=0 train.init="$base/model.h5" data.corpus="$out/task.h5" run.dir="$base-full" --fresh --force
        full=$(evalbpb "$base-full/model.h5")
        for d in $((z / 2)) $((z / 4)); do
            row="| $z | $d | $seed |"
            for method in uncurl frequency; do
                p="$base-d$d-$method"
                # shellcheck disable=SC2086
                run prune "$base/model.h5" --task $taskfiles --experts "$d" --method "$method" -o "$p.h5"
                run train $size model.ffn=moe moe.experts="$d" train.steps="$router_steps" train.seed="$seed" eval.every=0 \
                    train.only=router train.init="$p.h5" data.corpus="$out/task.h5" run.dir="$p-router" --fresh --force
                run train $size model.ffn=moe moe.experts="$d" train.steps="$tune" train.seed="$seed" eval.every=0 \
                    train.init="$p-router/model.h5" data.corpus="$out/task.h5" run.dir="$p-tune" --fresh --force
                row="$row $(evalbpb "$p-tune/model.h5") |"
            done
            s="$base-d$d-scratch"
            run train $size model.ffn=moe moe.experts="$d" train.steps="$pre" train.seed="$seed" eval.every=0 \
                data.corpus="$out/generic.h5" run.dir="$s-pre" --fresh --force
            run train $size model.ffn=moe moe.experts="$d" train.steps="$((router_steps + tune))" train.seed="$seed" \
                eval.every=0 train.init="$s-pre/model.h5" data.corpus="$out/task.h5" run.dir="$s" --fresh --force
            row="$row $(evalbpb "$s/model.h5") | $full |"
            echo "$row" | tee -a "$out/RESULTS.md"
        done
    done
done
echo "task valid bits per byte (lower is better); table in $out/RESULTS.md"
