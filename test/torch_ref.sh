#!/bin/sh
# The C model against an independent PyTorch implementation: logits, loss, every
# parameter gradient, and a short AdamW run with clipping and the lr schedule
# (test/dump_model writes the C side, test/torch_ref.py checks it).
# Exit 77 (skipped) only when torch cannot be imported.

here=$(cd "$(dirname "$0")" && pwd)
: "${top_srcdir:=$here/..}"
: "${top_builddir:=$top_srcdir}"
PYTHON3=${PYTHON3:-/usr/bin/python3}
DUMP="$top_builddir/test/dump_model"
REF="$top_srcdir/test/torch_ref.py"

if ! "$PYTHON3" -c 'import numpy, torch' >/dev/null 2>&1; then
    echo "torch_ref.sh: SKIP: '$PYTHON3' cannot import torch and numpy"
    exit 77
fi
if [ ! -x "$DUMP" ]; then
    echo "torch_ref.sh: FAIL: $DUMP not built"
    exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ladle-torch-ref.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

# The optimizer settings exercise warmup, cosine decay, weight decay and clipping
# (the first config clips every step, the second only some).
OPT="train.steps=10 train.warmup=3 train.lr=1e-2 train.weight_decay=0.1"

failed=0
run() {
    name=$1
    shift
    echo "== $name: $*"
    if ! "$DUMP" "$tmp/$name" "$@"; then
        echo "torch_ref.sh: FAIL: dump_model $name"
        failed=$((failed + 1))
        return
    fi
    "$PYTHON3" "$REF" "$tmp/$name"
    rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "torch_ref.sh: FAIL: torch_ref.py $name (exit $rc)"
        failed=$((failed + 1))
    fi
}

# shellcheck disable=SC2086  # $OPT is a list of words
run small model.layers=2 model.dim=32 model.heads=4 model.context=16 train.batch=3 \
    $OPT train.clip=0.5 train.seed=7
# shellcheck disable=SC2086
run odd model.layers=1 model.dim=24 model.heads=3 model.context=9 train.batch=2 \
    $OPT train.warmup=2 train.clip=1.5 train.seed=3

if [ "$failed" -ne 0 ]; then
    echo "torch_ref.sh: $failed configuration(s) failed"
    exit 1
fi
echo "torch_ref.sh: all configurations passed"
exit 0
