#!/bin/sh
# The C model against an independent PyTorch implementation: logits, loss, every
# parameter gradient, and a short AdamW run with clipping and the lr schedule
# (test/dump_model writes the C side, test/torch_ref.py checks it). The same for a
# Soup-of-Experts (shared S, a bank of experts, the router; every gradient and a short
# run of full soup steps), dense and low-rank (soup.rank > 0: U_j V_j^T on every matrix),
# and tampered soup dumps that must be rejected.
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
    "$PYTHON3" -u "$REF" "$tmp/$name"
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
# a dense FFN wider than 4 x model.dim (model.ffn_mult)
# shellcheck disable=SC2086
run wide model.layers=1 model.dim=16 model.heads=2 model.context=8 model.ffn_mult=7 train.batch=2 \
    $OPT train.seed=5

# Soup-of-Experts, 4 experts, router with 16 hidden units, experts initialised with
# noise (so that dalpha and the router gradients are not zero):
SOUP="soup.experts=4 router.hidden=16 soup.expert_init_std=0.05"
# experts on every tensor, raw alpha
# shellcheck disable=SC2086
run soup-all-raw model.layers=2 model.dim=32 model.heads=4 model.context=16 train.batch=3 \
    $OPT train.clip=0.5 train.seed=7 $SOUP soup.experts_on=all router.alpha=raw
# experts on the transformer blocks only (the bank starts after wte and wpe), softmax alpha
# shellcheck disable=SC2086
run soup-blocks-softmax model.layers=1 model.dim=24 model.heads=3 model.context=9 train.batch=2 \
    $OPT train.warmup=2 train.clip=1.5 train.seed=3 $SOUP soup.experts_on=blocks router.alpha=softmax

# Low-rank experts: U_j [rows x r], V_j [cols x r] per matrix, experts initialised with
# noise (U = std N(0,1): with std 0 U would start at zero and dV, dalpha be zero).
# rank 2, 4 experts on every matrix (wte and wpe included), raw alpha
# shellcheck disable=SC2086
run lowrank-all-raw model.layers=2 model.dim=32 model.heads=4 model.context=16 train.batch=3 \
    $OPT train.clip=0.5 train.seed=7 $SOUP soup.rank=2 soup.experts_on=all router.alpha=raw
# rank 3, 3 experts on the blocks' matrices only, softmax alpha
# shellcheck disable=SC2086
run lowrank-blocks-softmax model.layers=1 model.dim=24 model.heads=3 model.context=9 train.batch=2 \
    $OPT train.warmup=2 train.clip=1.5 train.seed=3 soup.experts=3 router.hidden=16 soup.expert_init_std=0.05 \
    soup.rank=3 soup.experts_on=blocks router.alpha=softmax

# Negative control, end to end: a 1% error in one element of one expert's gradient (the
# largest of the bank, in the last expert) must make torch_ref.py fail on a dE check.
if [ -f "$tmp/soup-all-raw/expert_grads.bin" ]; then
    echo "== negative control: soup-all-raw with one dE element off by 1%"
    cp -R "$tmp/soup-all-raw" "$tmp/tampered"
    "$PYTHON3" -c '
import sys, numpy as np
path, n = sys.argv[1], int(sys.argv[2])
a = np.fromfile(path, dtype="<f4")
row = a.reshape(n, -1)[n - 1]
i = int(np.argmax(np.abs(row)))
row[i] *= np.float32(1.01)
a.tofile(path)
print(f"   expert {n - 1}, bank element {i} scaled by 1.01")
' "$tmp/tampered/expert_grads.bin" 4
    "$PYTHON3" -u "$REF" "$tmp/tampered" >"$tmp/tampered.out" 2>&1
    rc=$?
    if [ "$rc" -eq 1 ] && grep -q '^FAIL: dE 3:' "$tmp/tampered.out"; then
        grep '^FAIL' "$tmp/tampered.out" | sed 's/^/   flagged: /'
    else
        echo "torch_ref.sh: FAIL: negative control NOT flagged (torch_ref.py exit $rc)"
        cat "$tmp/tampered.out"
        failed=$((failed + 1))
    fi
else
    echo "torch_ref.sh: FAIL: no soup-all-raw dump for the negative control"
    failed=$((failed + 1))
fi

# The same for low-rank experts: a 1% error in the largest element of one U gradient (of
# the largest site, in the last expert) in lowrank_grads.bin must fail a dU check.
if [ -f "$tmp/lowrank-all-raw/lowrank_grads.bin" ]; then
    echo "== negative control: lowrank-all-raw with one dU element off by 1%"
    cp -R "$tmp/lowrank-all-raw" "$tmp/tampered-lowrank"
    "$PYTHON3" -c '
import sys, numpy as np
d = sys.argv[1]
meta = [l.split() for l in open(d + "/manifest.txt") if l.startswith(("site ", "soup ", "soup.rank "))]
n = next(int(f[1]) for f in meta if f[0] == "soup")
r = next(int(f[2]) for f in meta if f[0] == "soup.rank")
name, rows, cols, u, v = max((f[1:] for f in meta if f[0] == "site"), key=lambda f: int(f[1]) * int(f[2]))
rows, u = int(rows), int(u)
a = np.fromfile(d + "/lowrank_grads.bin", dtype="<f4")
block = a[u:u + rows * n * r].reshape(rows, n, r)[:, n - 1, :]   # a view: expert n-1 of U
i = np.unravel_index(int(np.argmax(np.abs(block))), block.shape)
block[i] *= np.float32(1.01)
a.tofile(d + "/lowrank_grads.bin")
print(f"   dU of expert {n - 1} at {name}[{i[0]}, {i[1]}] scaled by 1.01")
' "$tmp/tampered-lowrank"
    "$PYTHON3" -u "$REF" "$tmp/tampered-lowrank" >"$tmp/tampered-lowrank.out" 2>&1
    rc=$?
    if [ "$rc" -eq 1 ] && grep -q '^FAIL: dU 3:' "$tmp/tampered-lowrank.out"; then
        grep '^FAIL' "$tmp/tampered-lowrank.out" | sed 's/^/   flagged: /'
    else
        echo "torch_ref.sh: FAIL: low-rank negative control NOT flagged (torch_ref.py exit $rc)"
        cat "$tmp/tampered-lowrank.out"
        failed=$((failed + 1))
    fi
else
    echo "torch_ref.sh: FAIL: no lowrank-all-raw dump for the negative control"
    failed=$((failed + 1))
fi

if [ "$failed" -ne 0 ]; then
    echo "torch_ref.sh: $failed configuration(s) failed"
    exit 1
fi
echo "torch_ref.sh: all configurations passed"
exit 0
