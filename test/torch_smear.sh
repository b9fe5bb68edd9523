#!/bin/sh
# The SMEAR layer against an independent PyTorch implementation (float64, autograd):
# test_smear --dump writes the C side (router routing without and with expert dropout,
# heavy dropout with the all-dropped fallback, tag routing, and bottleneck adapter experts
# C -> 3 -> C with swish under router routing with dropout), test/torch_smear.py checks
# the output, the routing probabilities and every gradient. Negative controls, end to
# end: a 1% error in one router-gradient element, and a dropout dump whose manifest
# names another step (so the C side dropped experts the reference does not), must fail.
# Exit 77 (skipped) only when torch cannot be imported.

here=$(cd "$(dirname "$0")" && pwd)
: "${top_srcdir:=$here/..}"
: "${top_builddir:=$top_srcdir}"
PYTHON3=${PYTHON3:-/usr/bin/python3}
BIN="$top_builddir/test/test_smear"
REF="$top_srcdir/test/torch_smear.py"

if ! "$PYTHON3" -c 'import numpy, torch' >/dev/null 2>&1; then
    echo "torch_smear.sh: SKIP: '$PYTHON3' cannot import torch and numpy"
    exit 77
fi
if [ ! -x "$BIN" ]; then
    echo "torch_smear.sh: FAIL: $BIN not built"
    exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ladle-torch-smear.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

failed=0
if ! "$BIN" --dump "$tmp/dump"; then
    echo "torch_smear.sh: FAIL: test_smear --dump"
    exit 1
fi
for name in router dropout dropout-heavy tag adapter; do
    "$PYTHON3" -u "$REF" "$tmp/dump/$name"
    rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "torch_smear.sh: FAIL: torch_smear.py $name (exit $rc)"
        failed=$((failed + 1))
    fi
done

# Negative control 1: the largest element of the router's d_w off by 1%.
echo "== negative control: router dump with one d_w element off by 1%"
cp -R "$tmp/dump/router" "$tmp/tampered"
"$PYTHON3" -c '
import sys, numpy as np
a = np.fromfile(sys.argv[1], dtype="<f4")
i = int(np.argmax(np.abs(a)))
a[i] *= np.float32(1.01)
a.tofile(sys.argv[1])
print(f"   d_w[{i}] scaled by 1.01")
' "$tmp/tampered/d_w.bin"
"$PYTHON3" -u "$REF" "$tmp/tampered" >"$tmp/tampered.out" 2>&1
rc=$?
if [ "$rc" -eq 1 ] && grep -q '^FAIL: d_w:' "$tmp/tampered.out"; then
    grep '^FAIL' "$tmp/tampered.out" | sed 's/^/   flagged: /'
else
    echo "torch_smear.sh: FAIL: negative control NOT flagged (torch_smear.py exit $rc)"
    cat "$tmp/tampered.out"
    failed=$((failed + 1))
fi

# Negative control 2: the dropout dump claims another step; the reference's counters
# then drop other experts than C did.
echo "== negative control: dropout dump relabelled as another step"
cp -R "$tmp/dump/dropout" "$tmp/restepped"
sed 's/^step .*/step 4/' "$tmp/dump/dropout/manifest.txt" >"$tmp/restepped/manifest.txt"
"$PYTHON3" -u "$REF" "$tmp/restepped" >"$tmp/restepped.out" 2>&1
rc=$?
if [ "$rc" -eq 1 ] && grep -q '^FAIL: out:' "$tmp/restepped.out"; then
    grep '^FAIL' "$tmp/restepped.out" | sed 's/^/   flagged: /'
else
    echo "torch_smear.sh: FAIL: wrong-step dropout NOT flagged (torch_smear.py exit $rc)"
    cat "$tmp/restepped.out"
    failed=$((failed + 1))
fi

if [ "$failed" -ne 0 ]; then
    echo "torch_smear.sh: $failed check(s) failed"
    exit 1
fi
echo "torch_smear.sh: all configurations passed"
exit 0
