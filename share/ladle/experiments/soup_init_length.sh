#!/bin/sh
# The second round of soup ablations (issue 11; RESULTS.md section 3.3), on the tuning split
# of soup_ablations.sh (SPLIT_SEED=2, TUNING=1: the held-out sources are never evaluated).
#
#   soup_init_length.sh LADLE OUTDIR
#
# Against the dense model at its best lr (4e-3), every soup at the defaults of the first
# round (meta.support 2, meta.natural 0.9, softmax alpha, 8 experts, lr 2e-3; the row 'soup'
# sets the first round's expert_init_std 0 itself):
#   OUTDIR/short   1200 steps: the defaults; + expert noise 0.02 (soup.expert_init_std);
#                  + noise at natural 0.75; + noise at router.hidden 64
#   OUTDIR/long    4800 steps (4 x the training tokens): dense, and the soup with noise
# The two parts run side by side, one row at a time each (JOBS=1), sharing the corpus.
set -eu
ladle=${1:?usage: soup_init_length.sh LADLE OUTDIR}
out=${2:?usage: soup_init_length.sh LADLE OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
export TUNING=1 SPLIT_SEED=2 DENSE_LR=4e-3 JOBS=1
mkdir -p "$out/short" "$out/long"
sh "$here/soup.sh" "$ladle" "$out/short" dense > "$out/short/driver-dense.log" 2>&1 &
while [ ! -s "$out/short/held.h5" ]; do sleep 5; done
ln -sf "$out/short/pre.h5" "$out/long/pre.h5"
ln -sf "$out/short/held.h5" "$out/long/held.h5"
STEPS=4800 sh "$here/soup.sh" "$ladle" "$out/long" dense "soup-init=soup.expert_init_std=0.02" \
    > "$out/long/driver.log" 2>&1 &
wait %1
sh "$here/soup.sh" "$ladle" "$out/short" "soup=soup.expert_init_std=0" "soup-init=soup.expert_init_std=0.02" \
    "soup-n75-init=meta.natural=0.75 soup.expert_init_std=0.02" \
    "soup-init-h64=soup.expert_init_std=0.02 router.hidden=64" > "$out/short/driver.log" 2>&1
wait
