#!/bin/sh
# demo.sh LADLE DIR: the README's demo (make demo). On the demo corpus (13 domains of Debian
# text, clustered into 12 training domains), trains on 2 ranks
#   - a generic dense model, and
#   - a Soup-of-Experts with 8 experts,
# on the same tokens (same seed, same sampled mixtures and batches), then instantiates
# specialists for every named domain from 8 of its documents and prints the
# specialist-vs-generic table (also in DIR/specialists.json), instantiates a Python
# specialist from example files, and samples from it.
# Environment: MPIEXEC (default mpiexec), DEMO_STEPS (default 1200), SHARE (this directory).
set -eu
ladle=${1:?usage: demo.sh LADLE DIR}
dir=${2:?usage: demo.sh LADLE DIR}
share=${SHARE:-$(dirname "$0")}
mpiexec=${MPIEXEC:-mpiexec}
steps=${DEMO_STEPS:-1200}
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export BLIS_NUM_THREADS=1
mkdir -p "$dir"

if [ ! -s "$dir/corpus.h5" ]; then
    echo "== demo corpus"
    CLUSTERS=12 MAX_DOMAIN_BYTES=2000000 sh "$share/demo-corpus.sh" "$dir/corpus.h5" "$ladle"
fi

common="data.corpus=$dir/corpus.h5 train.steps=$steps --fresh --force"
echo "== generic dense model, 2 ranks"
# shellcheck disable=SC2086
$mpiexec -n 2 "$ladle" train "$share/demo.conf" $common run.dir="$dir/generic"
# a small router: with the default 256 hidden units the raw alpha of this short run makes the
# specialists worse than the generic model (+0.06 bits/byte); with 64 they are better (-0.01)
echo "== Soup-of-Experts, 8 experts, 2 ranks"
# shellcheck disable=SC2086
$mpiexec -n 2 "$ladle" train "$share/demo.conf" soup.experts=8 router.hidden=64 $common run.dir="$dir/soup"

echo "== specialists for every named domain, from 8 of its train documents each"
$mpiexec -n 2 "$ladle" eval "$dir/soup/model.h5" --corpus "$dir/corpus.h5" --specialize --examples 8 \
    --baseline "$dir/generic/model.h5" --json-out "$dir/specialists.json"

echo "== a Python specialist from example files, and a sample of it"
$mpiexec -n 2 "$ladle" instantiate "$dir/soup/model.h5" -o "$dir/python-specialist.h5" \
    --like /usr/lib/python3.11/json/*.py
"$ladle" generate "$dir/python-specialist.h5" --prompt "def " --bytes 300 --temperature 0.7
