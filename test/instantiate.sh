#!/bin/sh
# Instantiating specialists from a soup: the file is the same on any rank count, equals
# S + sum_j alpha_j E_j read back with h5py, evaluates like the soup at the same
# weights, and bad requests are refused without writing anything.
. "$top_srcdir/test/lib.sh"
make_tmp
: "${PYTHON3:=/usr/bin/python3}"
make_small_corpus "$TMP/corpus.h5"
passed=0
# shellcheck disable=SC2086
run_mpi 2 "^done: 30 steps" "$LADLE" train $TINY soup.experts=3 router.hidden=8 soup.expert_init_std=0.02 \
    train.steps=30 data.corpus="$TMP/corpus.h5" run.dir="$TMP/run" || fail "soup training"
SOUP="$TMP/run/model.h5"

for n in 1 3; do
    run_mpi $n "^wrote $TMP/spec$n.h5: instantiated in" "$LADLE" instantiate "$SOUP" -o "$TMP/spec$n.h5" \
        --weights c=3,tests=1 || fail "instantiate on $n ranks"
    grep -q "^h: c 0.750, tests 0.250" "$TMP/out" || fail "instantiate did not print h"
done
for t in wte h.0.ffn.w1 h.1.attn.qkv.b lnf.w; do
    h5dump -d "/shared/$t" "$TMP/spec1.h5" | tail -n +3 > "$TMP/a"
    h5dump -d "/shared/$t" "$TMP/spec3.h5" | tail -n +3 > "$TMP/b"
    cmp -s "$TMP/a" "$TMP/b" || fail "/shared/$t differs between 1 and 3 ranks"
done
passed=$((passed + 1))

# an independent merge in numpy from the soup file and the recorded alpha
if "$PYTHON3" -c 'import h5py, numpy' 2>/dev/null; then
    "$PYTHON3" - "$SOUP" "$TMP/spec1.h5" <<'PY' || fail "instantiated model != S + sum alpha_j E_j"
import sys, h5py, numpy as np
soup, spec = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
assert spec.attrs["kind"] == "instantiated" and soup.attrs["kind"] == "soup"
alpha = np.asarray(spec.attrs["alpha"], dtype=np.float64)
h = np.asarray(spec.attrs["h"])
assert list(soup.attrs["domains"]) == ["c", "headers", "tests"], soup.attrs["domains"]
assert abs(h[0] - 0.75) < 1e-6 and abs(h[2] - 0.25) < 1e-6 and h[1] == 0
worst = 0.0
for name, s in soup["shared"].items():
    theta = s[...].astype(np.float64)
    if name in soup["experts"]:
        e = soup["experts"][name][...].astype(np.float64)
        assert e.shape == (3,) + s.shape
        theta = theta + np.tensordot(alpha, e, axes=1)
    got = spec["shared"][name][...]
    worst = max(worst, float(np.max(np.abs(got - theta)) / (np.max(np.abs(theta)) + 1e-12)))
print("max relative difference of the instantiated tensors: %.2e" % worst)
sys.exit(0 if worst < 1e-5 else 1)
PY
    passed=$((passed + 1))
fi

# low-rank experts: the file holds U [n, rows, r] and V [n, cols, r] per matrix, and
# the instantiated model is S + sum_j alpha_j U_j V_j^T
if "$PYTHON3" -c 'import h5py, numpy' 2>/dev/null; then
    # shellcheck disable=SC2086
    run_mpi 3 "^done: 10 steps" "$LADLE" train $TINY soup.experts=3 soup.rank=2 router.hidden=8 soup.expert_init_std=0.02 \
        train.steps=10 data.corpus="$TMP/corpus.h5" run.dir="$TMP/lowrank" || fail "low-rank soup training"
    run_mpi 2 "^wrote" "$LADLE" instantiate "$TMP/lowrank/model.h5" -o "$TMP/lr-spec.h5" --weights headers=1 \
        || fail "instantiate a low-rank soup"
    "$PYTHON3" - "$TMP/lowrank/model.h5" "$TMP/lr-spec.h5" <<'PY' || fail "low-rank instantiated model != S + sum alpha_j U_j V_j^T"
import sys, h5py, numpy as np
soup, spec = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
alpha = np.asarray(spec.attrs["alpha"], dtype=np.float64)
worst, sites = 0.0, 0
for name, s in soup["shared"].items():
    theta = s[...].astype(np.float64)
    if name in soup["experts"]:
        g = soup["experts"][name]
        u, v = g["U"][...].astype(np.float64), g["V"][...].astype(np.float64)
        assert u.shape == (3, s.shape[0], 2) and v.shape == (3, s.shape[1], 2), (u.shape, v.shape)
        theta = theta + sum(alpha[j] * u[j] @ v[j].T for j in range(3))
        sites += 1
    worst = max(worst, float(np.max(np.abs(spec["shared"][name][...] - theta)) / (np.max(np.abs(theta)) + 1e-12)))
print("low-rank: %d matrices with experts, max relative difference %.2e" % (sites, worst))
sys.exit(0 if worst < 1e-5 and sites == 10 else 1)
PY
    passed=$((passed + 1))
fi

# evaluating the instantiated model = evaluating the soup at the same weights
run_mpi 2 "mean" "$LADLE" eval "$TMP/spec1.h5" --corpus "$TMP/corpus.h5" --windows 4 || fail "eval instantiated"
grep '^c \|^headers\|^tests' "$TMP/out" > "$TMP/e1"
run_mpi 1 "mean" "$LADLE" eval "$SOUP" --corpus "$TMP/corpus.h5" --windows 4 --weights c=3,tests=1 || fail "eval soup"
grep '^c \|^headers\|^tests' "$TMP/out" > "$TMP/e2"
cmp -s "$TMP/e1" "$TMP/e2" || { paste "$TMP/e1" "$TMP/e2" >&2; fail "instantiated and soup evaluations differ"; }
passed=$((passed + 1))

# refusals: a one-line error, exit 2, no output file
refuse "unknown domain 'python' (the soup's domains: c, headers, tests)" instantiate "$SOUP" -o "$TMP/bad.h5" --weights python=1
refuse "all weights are zero" instantiate "$SOUP" -o "$TMP/bad.h5" --weights c=0
refuse "expected a number in \[0, " instantiate "$SOUP" -o "$TMP/bad.h5" --weights c=-1
refuse "exactly one of --weights" instantiate "$SOUP" -o "$TMP/bad.h5"
refuse "is not a soup (its kind is 'instantiated')" instantiate "$TMP/spec1.h5" -o "$TMP/bad.h5" --weights c=1
refuse "is not a ladle-checkpoint file" instantiate "$TMP/corpus.h5" -o "$TMP/bad.h5" --weights c=1
echo "instantiate: $passed passed, 0 failed"
