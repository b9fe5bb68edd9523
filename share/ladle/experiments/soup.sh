#!/bin/sh
# Soup-of-Experts at small scale, the paper's protocol (METHODS.md section 1; issue 11).
#
#   soup.sh LADLE OUTDIR [ROW...]
#
# Corpora (built once in OUTDIR from the demo corpus, share/ladle/demo-corpus.sh):
#   pre.h5   pretraining: the demo sources minus HELDOUT, k-means into CLUSTERS clusters
#            (prep --seed SPLIT_SEED: the train/valid split and the clustering)
#   held.h5  the HELDOUT sources alone: specialist text absent from pretraining, as the
#            paper's Pile domains are absent from its RedPajama clusters
# Every row trains on pre.h5 for STEPS steps of the same batch size (equal training
# tokens), one model per row and seed, then is measured on valid splits:
#   generic      the natural-mixture loss: pre.h5's clusters, weighted by train bytes
#                (a soup at h = the natural mixture, 'ladle eval --weights natural')
#   held-in      every held-in source: the specialist instantiated from EXAMPLES of its
#                train documents (h = histogram of nearest clusters), 'eval --specialize'
#   held-out     the same for held.h5's sources ('eval --specialize --specialists')
#   one-hot      every cluster at one-hot h against the soup at uniform h ('--one-hot')
# Specialist rows are compared with the generic dense row of the same seed (BASELINE).
#
# ROW is NAME or "NAME=KEY=V KEY=V ..." (keys added to the row's training; row_keys below
# holds the predefined ones). Default: the protocol rows. Two further stages compare, on
# each held-out source, with the soup row SPECIALIST_ROW (seed 1):
#   dense-spe    one dense model per held-out source, trained on mix(h_spe) (meta.natural=1
#                meta.weights=h_spe): the paper's baseline that does not scale
#   finetune     FT_STEPS steps on the source's train split (lr FT_LR) from the instantiated
#                specialist and from the generic dense model
# CURVES=1 keeps a checkpoint every CURVE_EVERY steps of every row and evaluates each (the
# loss against training tokens, soup_curves.py plots it).
# Environment: MPIEXEC (mpiexec --bind-to none), RANKS (1 rank per row), JOBS (2 rows at once), SEEDS ("1"),
# STEPS (1200), EXPERTS (n of a soup row that sets none: 8), CLUSTERS (16), SPLIT_SEED (1),
# DENSE_LR (4e-3), SPECIALIST_ROW (soup-n16), FT_STEPS (100), FT_LR (5e-4), CURVES (0), CURVE_EVERY (300),
# HELDOUT ("perl-pod vim-help cmake-modules wordnet"), EXAMPLES (8), WINDOWS (64),
# MAX_DOMAIN_BYTES (2000000), BASELINE (dense), EXTRA (keys added to every row), TUNING (1:
# skip the held-out sources, for ablations that choose defaults),
# PYTHON3 (for the summary; standard library only).
# A row whose model.h5 exists is not trained again; one whose tables exist is not
# evaluated again (re-run to finish an interrupted run). Summary: OUTDIR/summary.md.
set -eu
ladle=${1:?usage: soup.sh LADLE OUTDIR [ROW...]}
out=${2:?usage: soup.sh LADLE OUTDIR [ROW...]}
shift 2
here=$(cd "$(dirname "$0")/.." && pwd)
# unbound: Open MPI binds a small job's ranks to the first cores, so two 1-rank rows run
# side by side would share core 0
mpiexec=${MPIEXEC:-mpiexec --bind-to none}
ranks=${RANKS:-1}
jobs=${JOBS:-2}
seeds=${SEEDS:-1}
steps=${STEPS:-1200}
experts=${EXPERTS:-8}
clusters=${CLUSTERS:-16}
split_seed=${SPLIT_SEED:-1}
heldout=${HELDOUT:-perl-pod vim-help cmake-modules wordnet}
examples=${EXAMPLES:-8}
windows=${WINDOWS:-64}
baseline=${BASELINE:-dense}
specialist_row=${SPECIALIST_ROW:-soup-n16}
ft_steps=${FT_STEPS:-100}
ft_lr=${FT_LR:-5e-4}
curve_every=${CURVE_EVERY:-300}
# dense rows train at 4e-3, the best of 2e-3, 3e-3, 4e-3 and 6e-3 for a dense model in the
# ablations; soups at demo.conf's 2e-3, theirs (4e-3 diverges: soup_ablations.sh)
dense_lr=${DENSE_LR:-4e-3}
extra=${EXTRA:-}
python=${PYTHON3:-python3}
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export BLIS_NUM_THREADS=1
mkdir -p "$out"

# The predefined rows: NAME=KEYS (comma-separated). Soups get soup.experts=EXPERTS unless
# they set it.
row_keys() {
    case $1 in
        dense) echo "meta.natural=1 train.lr=$dense_lr" ;;    # generic, natural mixture
        dense-pi) echo "train.lr=$dense_lr" ;;               # generic, trained on the soup's pi
        soup) echo "soup.experts=$experts" ;;                # the defaults
        soup-n4) echo "soup.experts=4" ;;
        soup-n16) echo "soup.experts=16" ;;
        soup-h64) echo "soup.experts=$experts router.hidden=64" ;;
        soup-n16-lowrank) echo "soup.experts=16 soup.rank=8" ;;
        soup-flat) echo "soup.experts=$experts meta.support=0 meta.concentration=1 meta.natural=0" ;;
        *) echo "" ;;
    esac
}
protocol_rows="dense dense-pi soup soup-h64 soup-n4 soup-n16 soup-n16-lowrank"
[ $# -gt 0 ] || set -- $protocol_rows

if [ ! -s "$out/pre.h5" ]; then
    EXCLUDE="$heldout" CLUSTERS=$clusters SEED=$split_seed MAX_DOMAIN_BYTES=${MAX_DOMAIN_BYTES:-2000000} \
        sh "$here/demo-corpus.sh" "$out/pre.h5" "$ladle" > "$out/pre.log"
fi
if [ ! -s "$out/held.h5" ]; then
    ONLY="$heldout" SEED=$split_seed MAX_DOMAIN_BYTES=${MAX_DOMAIN_BYTES:-2000000} \
        sh "$here/demo-corpus.sh" "$out/held.h5" "$ladle" > "$out/held.log"
fi

# train_row NAME KEYS SEED: train (unless done) and evaluate one row
train_row() {
    name=$1 keys=$2 seed=$3
    dir=$out/$name-s$seed
    mkdir -p "$dir"
    case " $keys " in *" soup.experts="*) ;; *) case $name in soup*) keys="soup.experts=$experts $keys" ;; esac ;; esac
    curve_keys=""
    [ "${CURVES:-0}" = 1 ] && curve_keys="ckpt.every=$curve_every ckpt.keep_every=$curve_every"
    # shellcheck disable=SC2086
    set -- $keys $extra $curve_keys
    if [ ! -s "$dir/run/model.h5" ]; then
        echo "$mpiexec -n $ranks $ladle train $here/demo.conf data.corpus=$out/pre.h5 train.steps=$steps train.seed=$seed eval.every=0 log.every=100 $* run.dir=$dir/run" > "$dir/command"
        $mpiexec -n "$ranks" "$ladle" train "$here/demo.conf" data.corpus="$out/pre.h5" train.steps="$steps" \
            train.seed="$seed" eval.every=0 log.every=100 "$@" run.dir="$dir/run" --fresh --force > "$dir/train.log" 2>&1
    fi
    soup=0
    case " $keys " in *" soup.experts="*) soup=1 ;; esac
    evaluate "$dir/run/model.h5" "$dir" "$soup" "$seed" ""
    if [ "${CURVES:-0}" = 1 ]; then
        for ckpt in "$dir"/run/ckpt-*.h5; do
            [ -e "$ckpt" ] || continue
            at=$(basename "$ckpt" .h5 | sed 's/^ckpt-0*//')
            evaluate "$ckpt" "$dir" "$soup" "$seed" "-at$at"
        done
    fi
}

# evaluate MODEL DIR SOUP SEED SUFFIX: the tables of one model into DIR/<table>SUFFIX.json;
# a soup's specialists against the baseline at the same point of training
evaluate() {
    model=$1 dir=$2 is_soup=$3 seed=$4 suffix=$5
    weights=""
    [ "$is_soup" = 1 ] && weights="--weights natural"
    # shellcheck disable=SC2086
    [ -s "$dir/generic$suffix.json" ] || $mpiexec -n "$ranks" "$ladle" eval "$model" --corpus "$out/pre.h5" $weights \
        --windows "$windows" --json > "$dir/generic$suffix.json" 2>> "$dir/eval.log"
    [ "$is_soup" = 1 ] || return 0
    base=$out/$baseline-s$seed/run/model.h5
    [ -z "$suffix" ] || base=$out/$baseline-s$seed/run/ckpt-$(printf %08d "${suffix#-at}").h5
    [ -s "$dir/onehot$suffix.json" ] || [ -n "$suffix" ] || $mpiexec -n "$ranks" "$ladle" eval "$model" \
        --corpus "$out/pre.h5" --specialize --one-hot --windows "$windows" --json > "$dir/onehot$suffix.json" \
        2>> "$dir/eval.log"
    [ -s "$dir/held-in$suffix.json" ] || $mpiexec -n "$ranks" "$ladle" eval "$model" --corpus "$out/pre.h5" \
        --specialize --examples "$examples" --windows "$windows" --baseline "$base" --json \
        > "$dir/held-in$suffix.json" 2>> "$dir/eval.log"
    # TUNING=1: ablations choose defaults without ever evaluating the held-out sources
    [ "${TUNING:-0}" = 1 ] || [ -s "$dir/held-out$suffix.json" ] || $mpiexec -n "$ranks" "$ladle" eval "$model" \
        --corpus "$out/pre.h5" --specialize --specialists "$out/held.h5" --examples "$examples" --windows "$windows" \
        --baseline "$base" --json > "$dir/held-out$suffix.json" 2>> "$dir/eval.log"
}

# held_h ROW_DIR SOURCE: h_spe of a held-out source, as its specialist table recorded it
held_h() {
    "$python" -c '
import json, sys
print(next(r["h"] for r in json.load(open(sys.argv[1]))["rows"] if r["domain"] == sys.argv[2]))' "$1/held-out.json" "$2"
}

# dense_spe SOURCE: a dense model trained on mix(h_spe) of one held-out source, evaluated on it
dense_spe() {
    src=$1
    dir=$out/dense-spe-$src-s1
    mkdir -p "$dir"
    h=$(held_h "$out/$specialist_row-s1" "$src")
    if [ ! -s "$dir/run/model.h5" ]; then
        echo "$mpiexec -n $ranks $ladle train $here/demo.conf data.corpus=$out/pre.h5 train.steps=$steps meta.natural=1 meta.weights=$h train.lr=$dense_lr eval.every=0 log.every=100 run.dir=$dir/run" > "$dir/command"
        $mpiexec -n "$ranks" "$ladle" train "$here/demo.conf" data.corpus="$out/pre.h5" train.steps="$steps" \
            meta.natural=1 meta.weights="$h" train.lr="$dense_lr" eval.every=0 log.every=100 run.dir="$dir/run" --fresh --force \
            > "$dir/train.log" 2>&1
    fi
    [ -s "$dir/held-out.json" ] || $mpiexec -n "$ranks" "$ladle" eval "$dir/run/model.h5" --corpus "$out/held.h5" \
        --windows "$windows" --json > "$dir/held-out.json" 2>> "$dir/eval.log"
}

# finetune SOURCE: FT_STEPS steps on the source alone, from the soup's specialist and from
# the generic dense model (seed 1), each evaluated on the source's valid split before and after
finetune() {
    src=$1
    dir=$out/finetune-$src
    mkdir -p "$dir"
    [ -s "$dir/corpus.h5" ] || ONLY="$src" SEED=$split_seed MAX_DOMAIN_BYTES=${MAX_DOMAIN_BYTES:-2000000} \
        sh "$here/demo-corpus.sh" "$dir/corpus.h5" "$ladle" > "$dir/prep.log"
    h=$(held_h "$out/$specialist_row-s1" "$src")
    [ -s "$dir/specialist.h5" ] || $mpiexec -n "$ranks" "$ladle" instantiate "$out/$specialist_row-s1/run/model.h5" \
        -o "$dir/specialist.h5" --weights "$h" > "$dir/instantiate.log" 2>&1
    for from in specialist generic; do
        init=$dir/specialist.h5
        [ $from = generic ] && init=$out/$baseline-s1/run/model.h5
        if [ ! -s "$dir/$from/model.h5" ]; then
            $mpiexec -n "$ranks" "$ladle" train "$here/demo.conf" data.corpus="$dir/corpus.h5" train.init="$init" \
                train.steps="$ft_steps" train.warmup=0 train.lr="$ft_lr" eval.every=0 log.every=50 \
                run.dir="$dir/$from" --fresh --force > "$dir/$from.log" 2>&1
        fi
        [ -s "$dir/$from-before.json" ] || $mpiexec -n "$ranks" "$ladle" eval "$init" --corpus "$dir/corpus.h5" \
            --windows "$windows" --json > "$dir/$from-before.json" 2>> "$dir/eval.log"
        [ -s "$dir/$from-after.json" ] || $mpiexec -n "$ranks" "$ladle" eval "$dir/$from/model.h5" \
            --corpus "$dir/corpus.h5" --windows "$windows" --json > "$dir/$from-after.json" 2>> "$dir/eval.log"
    done
}

running=0
# in_parallel CMD...: run CMD in the background, JOBS at a time
in_parallel() {
    "$@" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait
        running=0
    fi
}
# the baselines first (specialist tables compare against them), then the rest
for seed in $seeds; do
    in_parallel train_row "$baseline" "$(row_keys "$baseline")" "$seed"
done
wait
running=0
for seed in $seeds; do
    for row in "$@"; do
        name=${row%%=*}
        case $name in "$baseline"|dense-spe|finetune) continue ;; esac
        case $row in *=*) keys=${row#*=} ;; *) keys=$(row_keys "$name") ;; esac
        in_parallel train_row "$name" "$keys" "$seed"
    done
done
wait
running=0
for row in "$@"; do
    for src in $heldout; do
        case $row in
            dense-spe) in_parallel dense_spe "$src" ;;
            finetune) in_parallel finetune "$src" ;;
        esac
    done
done
wait

"$python" "$here/experiments/soup_summary.py" "$out" "$baseline" "$specialist_row" > "$out/summary.md"
if [ "${CURVES:-0}" = 1 ]; then
    "$python" "$here/experiments/soup_curves.py" "$out" "$baseline" "$out/curves.png" || echo "soup.sh: no plot (matplotlib?)" >&2
fi
cat "$out/summary.md"
