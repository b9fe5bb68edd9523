#!/bin/sh
# demo.sh LADLE DIR: the README's demo (make demo). From the demo corpus (13 kinds of Debian
# text), four sources are held out of pretraining entirely; the other nine are clustered
# into 16 training domains. On 2 ranks it trains, on the same number of tokens,
#   - a generic dense model on the natural mixture (clusters in proportion to their size)
#     at its best learning rate, and
#   - a Soup-of-Experts with 8 experts, every other key at its default,
# then instantiates a specialist for every source, held-in and held-out, from 8 of its
# documents, and prints the specialist against the soup at uniform h and the generic model
# (also in DIR/specialists*.json); then instantiates a Python specialist from example files
# and samples from it.
# Environment: MPIEXEC (default mpiexec), DEMO_STEPS (default 1200), SHARE (this directory).
set -eu
ladle=${1:?usage: demo.sh LADLE DIR}
dir=${2:?usage: demo.sh LADLE DIR}
share=${SHARE:-$(dirname "$0")}
mpiexec=${MPIEXEC:-mpiexec}
steps=${DEMO_STEPS:-1200}
heldout="perl-pod vim-help cmake-modules wordnet"
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export BLIS_NUM_THREADS=1
mkdir -p "$dir"

if [ ! -s "$dir/corpus.h5" ] || [ ! -s "$dir/heldout.h5" ]; then
    echo "== demo corpus: 9 sources in 16 clusters for pretraining, 4 sources held out"
    EXCLUDE="$heldout" CLUSTERS=16 MAX_DOMAIN_BYTES=2000000 sh "$share/demo-corpus.sh" "$dir/corpus.h5" "$ladle"
    ONLY="$heldout" MAX_DOMAIN_BYTES=2000000 sh "$share/demo-corpus.sh" "$dir/heldout.h5" "$ladle"
fi

common="data.corpus=$dir/corpus.h5 train.steps=$steps --fresh --force"
echo "== generic dense model on the natural mixture, 2 ranks"
# shellcheck disable=SC2086
# at its own best learning rate: 4e-3 (demo.conf's 2e-3 is the soup's; soup_ablations.sh)
$mpiexec -n 2 "$ladle" train "$share/demo.conf" meta.natural=1 train.lr=4e-3 $common run.dir="$dir/generic"
echo "== Soup-of-Experts, 8 experts, 2 ranks"
# shellcheck disable=SC2086
$mpiexec -n 2 "$ladle" train "$share/demo.conf" soup.experts=8 $common run.dir="$dir/soup"

echo "== the generic loss (natural mixture): the soup at h = the natural mixture, and the generic model"
$mpiexec -n 2 "$ladle" eval "$dir/soup/model.h5" --corpus "$dir/corpus.h5" --weights natural | tail -n 1
$mpiexec -n 2 "$ladle" eval "$dir/generic/model.h5" --corpus "$dir/corpus.h5" | tail -n 1
echo "== specialists for the 9 held-in sources, from 8 of their train documents each"
$mpiexec -n 2 "$ladle" eval "$dir/soup/model.h5" --corpus "$dir/corpus.h5" --specialize --examples 8 \
    --baseline "$dir/generic/model.h5" --json-out "$dir/specialists.json"
echo "== specialists for the 4 held-out sources (absent from pretraining), from 8 documents each"
$mpiexec -n 2 "$ladle" eval "$dir/soup/model.h5" --corpus "$dir/corpus.h5" --specialize --examples 8 \
    --specialists "$dir/heldout.h5" --baseline "$dir/generic/model.h5" --json-out "$dir/specialists-heldout.json"

echo "== a Python specialist from example files, and a sample of it"
$mpiexec -n 2 "$ladle" instantiate "$dir/soup/model.h5" -o "$dir/python-specialist.h5" \
    --like /usr/lib/python3.11/json/*.py
"$ladle" generate "$dir/python-specialist.h5" --prompt "def " --bytes 300 --temperature 0.7
