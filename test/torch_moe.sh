#!/bin/sh
# The C MoE layer (src/moe.c) against an independent PyTorch implementation: test_moe
# --dump writes one forward/backward pass (inputs, weights, output, aux loss, every
# gradient), test/torch_moe.py rebuilds the layer in float64 and compares. Top-1 with
# capacity dropping, top-2 without, top-2 with; then negative controls: a dump with one
# gradient element off by 1% must be rejected.
# Exit 77 (skipped) only when torch cannot be imported.

here=$(cd "$(dirname "$0")" && pwd)
: "${top_srcdir:=$here/..}"
: "${top_builddir:=$top_srcdir}"
PYTHON3=${PYTHON3:-/usr/bin/python3}
DUMP="$top_builddir/test/test_moe"
REF="$top_srcdir/test/torch_moe.py"

if ! "$PYTHON3" -c 'import numpy, torch' >/dev/null 2>&1; then
    echo "torch_moe.sh: SKIP: '$PYTHON3' cannot import torch and numpy"
    exit 77
fi
if [ ! -x "$DUMP" ]; then
    echo "torch_moe.sh: FAIL: $DUMP not built"
    exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ladle-torch-moe.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

failed=0
run() {
    name=$1
    shift
    echo "== $name: $*"
    if ! "$DUMP" --dump "$tmp/$name" "$@"; then
        echo "torch_moe.sh: FAIL: test_moe --dump $name"
        failed=$((failed + 1))
        return
    fi
    "$PYTHON3" -u "$REF" "$tmp/$name"
    rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "torch_moe.sh: FAIL: torch_moe.py $name (exit $rc)"
        failed=$((failed + 1))
    fi
}

# Switch: top-1, capacity factor 1 (3 slots per expert per sequence of 12: some dropped)
run top1-cap --top-k 1 --cf 1.0 --experts 4 --batch 3 --seq 12 --dim 16 --seed 5
# top-2, no dropping
run top2 --top-k 2 --cf 0 --experts 6 --batch 3 --seq 12 --dim 16 --seed 6
# top-2 with dropping (4 slots of a fractional 3.96), a length that does not divide evenly
run top2-cap --top-k 2 --cf 0.9 --experts 5 --batch 2 --seq 11 --dim 20 --seed 7

# Negative control: scale the largest element of one gradient file by 1.01; torch_moe.py
# must exit 1 with a FAIL line on that tensor.
tamper() {
    src=$1 file=$2
    if [ ! -f "$tmp/$src/$file.bin" ]; then
        echo "torch_moe.sh: FAIL: no $src dump for the negative control on $file"
        failed=$((failed + 1))
        return
    fi
    echo "== negative control: $src with the largest element of $file off by 1%"
    rm -rf "$tmp/tampered"
    cp -R "$tmp/$src" "$tmp/tampered"
    "$PYTHON3" -c '
import sys, numpy as np
a = np.fromfile(sys.argv[1], dtype="<f4")
i = int(np.argmax(np.abs(a)))
a[i] *= np.float32(1.01)
a.tofile(sys.argv[1])
' "$tmp/tampered/$file.bin"
    "$PYTHON3" -u "$REF" "$tmp/tampered" >"$tmp/tampered.out" 2>&1
    rc=$?
    if [ "$rc" -eq 1 ] && grep -q "^FAIL: $file:" "$tmp/tampered.out"; then
        grep '^FAIL' "$tmp/tampered.out" | sed 's/^/   flagged: /'
    else
        echo "torch_moe.sh: FAIL: negative control on $file NOT flagged (torch_moe.py exit $rc)"
        cat "$tmp/tampered.out"
        failed=$((failed + 1))
    fi
}
tamper top1-cap drouter
tamper top2 dw2
tamper top1-cap aux_drouter

if [ "$failed" -ne 0 ]; then
    echo "torch_moe.sh: $failed check(s) failed"
    exit 1
fi
echo "torch_moe.sh: all configurations passed"
exit 0
