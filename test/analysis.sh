#!/bin/sh
# Analysis tools: 'ladle inspect' on every kind of file (corpus, clustered corpus, soup,
# training checkpoint, instantiated model, low-rank soup), its --dump against h5py, its
# refusals; and the Python scripts in share/ladle: plot_alpha.py (alpha per domain =
# what 'ladle instantiate' records), plot_metrics.py, read_checkpoint.py (theta(h) = the
# instantiated model).
. "$top_srcdir/test/lib.sh"
make_tmp
: "${PYTHON3:=/usr/bin/python3}"
SHARE="$top_srcdir/share/ladle"
if ! "$PYTHON3" -c 'import h5py, numpy, matplotlib' 2>/dev/null; then
    echo "analysis: skipped (needs h5py, numpy and matplotlib for $PYTHON3)"
    exit 77
fi
passed=0

# expect LINE-REGEX FILE: the output holds a line matching the regex (grep -E)
expect() {
    grep -Eq -- "$1" "$2" || { cat "$2" >&2; fail "no line matching '$1' in $2"; }
}

# ---- corpora -------------------------------------------------------------------------
make_small_corpus "$TMP/corpus.h5"
"$LADLE" inspect "$TMP/corpus.h5" > "$TMP/corpus.txt" || fail "inspect corpus"
expect '^kind: corpus$' "$TMP/corpus.txt"
expect '^format: ladle-corpus, version 1$' "$TMP/corpus.txt"
expect '^domains: 3$' "$TMP/corpus.txt"
expect '^clusters: none$' "$TMP/corpus.txt"
# the table's counts are the datasets' extents
"$LADLE" inspect "$TMP/corpus.h5" --json > "$TMP/corpus.json" || fail "inspect --json corpus"
"$PYTHON3" - "$TMP/corpus.h5" "$TMP/corpus.json" "$TMP/corpus.txt" <<'PY' || fail "inspect's corpus counts differ from h5py's"
import json, sys, h5py
f, info, text = h5py.File(sys.argv[1], "r"), json.load(open(sys.argv[2])), open(sys.argv[3]).read().splitlines()
assert info["kind"] == "corpus" and info["clusters"] is None and info["sources"] == []
assert [d["name"] for d in info["domains"]] == ["c", "headers", "tests"]
for d in info["domains"]:
    g = f["domains"][d["name"]]
    want = (len(g["train_offsets"]) - 1, len(g["train"]), len(g["valid_offsets"]) - 1, len(g["valid"]))
    got = (d["train_docs"], d["train_bytes"], d["valid_docs"], d["valid_bytes"])
    assert got == want, (d["name"], got, want)
    assert d["documents"] == g.attrs["documents"] and d["source"] == g.attrs["source"]
    row = [l for l in text if l.split()[:1] == [d["name"]]]
    assert row and row[0].split()[1:6] == [str(x) for x in (d["documents"],) + want], row
PY
passed=$((passed + 1))

"$LADLE" prep -o "$TMP/clustered.h5" --valid-fraction 0.2 --clusters 3 \
    --domain c="$top_srcdir/src" --domain headers="$top_srcdir/include" > "$TMP/prep2.out" 2>&1 \
    || { cat "$TMP/prep2.out" >&2; fail "prep --clusters"; }
"$LADLE" inspect "$TMP/clustered.h5" > "$TMP/clustered.txt" || fail "inspect clustered corpus"
expect '^kind: clustered corpus$' "$TMP/clustered.txt"
expect '^domains: 3$' "$TMP/clustered.txt"
expect '^  c0 .* cluster 0 of 3$' "$TMP/clustered.txt"
expect '^clusters: k 3, dim 64, ngram 3, buckets 4096' "$TMP/clustered.txt"
expect '^sources: 2$' "$TMP/clustered.txt"
expect '^  headers .*/include$' "$TMP/clustered.txt"
passed=$((passed + 1))

# ---- a soup, its checkpoint, specialists ------------------------------------------------
# shellcheck disable=SC2086
run_mpi 2 "^done: 20 steps" "$LADLE" train $TINY soup.experts=3 router.hidden=8 soup.expert_init_std=0.02 \
    train.steps=20 eval.every=10 data.corpus="$TMP/corpus.h5" run.dir="$TMP/run" || fail "soup training"
SOUP="$TMP/run/model.h5"
CKPT="$TMP/run/$(cat "$TMP/run/latest")"   # the newest checkpoint, ckpt-00000020.h5
[ -f "$CKPT" ] || fail "no checkpoint in $TMP/run"
for d in c headers tests; do
    "$LADLE" instantiate "$SOUP" -o "$TMP/spec-$d.h5" --weights "$d=1" > "$TMP/inst.out" 2>&1 \
        || { cat "$TMP/inst.out" >&2; fail "instantiate $d"; }
done
"$LADLE" instantiate "$SOUP" -o "$TMP/spec-mix.h5" --weights c=3,tests=1 > "$TMP/inst.out" 2>&1 \
    || { cat "$TMP/inst.out" >&2; fail "instantiate a mixture"; }

# the soup, inspected on 2 ranks: one description (rank 0's), the expected summary
run_mpi 2 "^kind: " "$LADLE" inspect "$SOUP" || fail "inspect soup on 2 ranks"
cp "$TMP/out" "$TMP/soup.txt"
[ "$(grep -c '^kind: ' "$TMP/soup.txt")" -eq 1 ] || { cat "$TMP/soup.txt" >&2; fail "more than one rank printed"; }
expect '^kind: soup$' "$TMP/soup.txt"
expect '^format: ladle-checkpoint, version 1$' "$TMP/soup.txt"
expect '^step: 20$' "$TMP/soup.txt"
expect '^world size at save: 2$' "$TMP/soup.txt"
expect '^ladle version: [0-9]' "$TMP/soup.txt"
expect '^model: layers 2, dim 32, heads 4, context 32$' "$TMP/soup.txt"
expect '^soup: experts 3, rank 0 \(dense experts\), experts_on all$' "$TMP/soup.txt"
expect '^router: hidden 8, alpha softmax$' "$TMP/soup.txt"
expect '^domains: c, headers, tests$' "$TMP/soup.txt"
expect '^tensors: 60$' "$TMP/soup.txt"
expect '^  shared/h\.0\.ffn\.w1 +\[128, 32\]$' "$TMP/soup.txt"
expect '^  experts/h\.0\.attn\.qkv\.w +\[3, 96, 32\]$' "$TMP/soup.txt"
expect '^  router/router\.w1 +\[8, 3\]$' "$TMP/soup.txt"
# parameter counts and the tensor list (in flat-vector order) agree with the file
"$PYTHON3" - "$SOUP" "$TMP/soup.txt" <<'PY' || fail "inspect's parameter counts or tensor list differ from h5py's"
import sys, h5py
f, text = h5py.File(sys.argv[1], "r"), open(sys.argv[2]).read().splitlines()
count = lambda g: sum(f[g][t].size for t in f[g])
want = "parameters: shared %d, bank %d, router %d, total %d" % (
    count("shared"), count("experts"), count("router"), count("shared") + count("experts") + count("router"))
assert want in text, (want, [l for l in text if l.startswith("parameters")])
listed = [l.split()[0] for l in text if l.startswith("  shared/")]
order = ["wte", "wpe"] + ["h.%d.%s" % (l, t) for l in range(2) for t in (
    "ln1.w", "ln1.b", "attn.qkv.w", "attn.qkv.b", "attn.proj.w", "attn.proj.b",
    "ln2.w", "ln2.b", "ffn.w1", "ffn.b1", "ffn.w2", "ffn.b2")] + ["lnf.w", "lnf.b"]
assert listed == ["shared/" + t for t in order], listed
PY
passed=$((passed + 1))

"$LADLE" inspect "$CKPT" > "$TMP/ckpt.txt" || fail "inspect checkpoint"
expect '^kind: training checkpoint \(soup\)$' "$TMP/ckpt.txt"
expect '^step: 20$' "$TMP/ckpt.txt"
expect '^optim: AdamW moments m and v \([0-9]+ floats\) at step 20$' "$TMP/ckpt.txt"
expect '^tensors: 60$' "$TMP/ckpt.txt"
passed=$((passed + 1))

"$LADLE" inspect "$TMP/spec-c.h5" > "$TMP/spec.txt" || fail "inspect instantiated model"
expect '^kind: instantiated model$' "$TMP/spec.txt"
expect "^source: $SOUP\$" "$TMP/spec.txt"
expect '^h: c 1, headers 0, tests 0$' "$TMP/spec.txt"
expect '^alpha: [-0-9.e]+ [-0-9.e]+ [-0-9.e]+$' "$TMP/spec.txt"
expect '^soup: none \(merged from a soup of 3 experts' "$TMP/spec.txt"
expect '^parameters: shared [0-9]+, bank 0, router 0' "$TMP/spec.txt"
expect '^tensors: 28$' "$TMP/spec.txt"
"$LADLE" inspect "$TMP/spec-c.h5" --json > "$TMP/spec.json" || fail "inspect --json instantiated model"
"$PYTHON3" - "$TMP/spec-c.h5" "$TMP/spec.json" <<'PY' || fail "inspect --json of the instantiated model differs from h5py"
import json, sys, h5py, numpy as np
f, info = h5py.File(sys.argv[1], "r"), json.load(open(sys.argv[2]))
assert info["kind"] == "instantiated model" and not info["training_checkpoint"]
assert np.array_equal(np.float32(info["alpha"]), f.attrs["alpha"]) and np.array_equal(np.float32(info["h"]), f.attrs["h"])
assert info["domains"] == list(f.attrs["domains"]) and info["config"]["model.dim"] == "32"
assert [t["name"] for t in info["tensors"]][:2] == ["shared/wte", "shared/wpe"]
assert all(tuple(t["shape"]) == f[t["name"]].shape for t in info["tensors"])
PY
passed=$((passed + 1))

# ---- --dump: exactly the stored float32 values, row-major ----------------------------------
"$LADLE" inspect "$SOUP" --dump shared/h.0.ffn.w1 > "$TMP/d1" || fail "dump shared"
"$LADLE" inspect "$SOUP" --dump experts/h.0.attn.qkv.w > "$TMP/d2" || fail "dump experts"
"$LADLE" inspect "$SOUP" --dump /router/router.w1 > "$TMP/d3" || fail "dump router"
"$LADLE" inspect "$TMP/spec-c.h5" --dump shared/wte > "$TMP/d4" || fail "dump instantiated"
"$PYTHON3" - "$SOUP" "$TMP/spec-c.h5" "$TMP" <<'PY' || fail "dumped values differ from h5py's"
import sys, h5py, numpy as np
soup, spec, tmp = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r"), sys.argv[3]
for name, f, t in (("d1", soup, "shared/h.0.ffn.w1"), ("d2", soup, "experts/h.0.attn.qkv.w"),
                   ("d3", soup, "router/router.w1"), ("d4", spec, "shared/wte")):
    got = np.array([float(x) for x in open("%s/%s" % (tmp, name))], dtype=np.float32)
    want = f[t][...].ravel()
    assert got.shape == want.shape and np.array_equal(got, want), t   # bit-exact after %.9g
    assert np.abs(want).max() > 0, t
print("dumps equal h5py's arrays exactly")
PY
passed=$((passed + 1))

# ---- refusals: one line, exit 2 ------------------------------------------------------------
refuse() {
    pattern=$1
    shift
    "$LADLE" inspect "$@" > "$TMP/err" 2>&1
    rc=$?
    [ $rc -eq 2 ] || { cat "$TMP/err" >&2; fail "expected exit 2 from 'inspect $*', got $rc"; }
    [ "$(wc -l < "$TMP/err")" -eq 1 ] || { cat "$TMP/err" >&2; fail "'inspect $*': not a one-line error"; }
    grep -q -- "$pattern" "$TMP/err" || { cat "$TMP/err" >&2; fail "message of 'inspect $*' lacks '$pattern'"; }
    passed=$((passed + 1))
}
printf 'not hdf5\n' > "$TMP/text.h5"
"$PYTHON3" -c 'import sys, h5py; h5py.File(sys.argv[1], "w").attrs["x"] = 1' "$TMP/plain.h5" || fail "h5py"
refuse "cannot open '$TMP/nope.h5'" "$TMP/nope.h5"
refuse "is not an HDF5 file" "$TMP/text.h5"
refuse "not a ladle file" "$TMP/plain.h5"
refuse "has no tensor 'shared/nope'" "$SOUP" --dump shared/nope
refuse "has no tensor 'experts/x/y'" "$SOUP" --dump experts/x/y
refuse "is a group, not a tensor" "$SOUP" --dump experts
refuse "usage: ladle inspect FILE" 

# ---- plot_alpha.py: alpha per domain = what instantiate records ------------------------------
"$PYTHON3" "$SHARE/plot_alpha.py" "$SOUP" -o "$TMP/alpha.png" > "$TMP/pa.out" 2>&1 \
    || { cat "$TMP/pa.out" >&2; fail "plot_alpha.py"; }
"$PYTHON3" "$SHARE/plot_metrics.py" "$TMP/run/metrics.jsonl" -o "$TMP/curves.png" > "$TMP/pm.out" 2>&1 \
    || { cat "$TMP/pm.out" >&2; fail "plot_metrics.py"; }
grep -q "3 domains evaluated" "$TMP/pm.out" || { cat "$TMP/pm.out" >&2; fail "plot_metrics.py saw no evaluations"; }
for png in "$TMP/alpha.png" "$TMP/curves.png"; do
    "$PYTHON3" - "$png" <<'PY' || fail "$png is not a valid, non-trivial PNG"
import sys
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
assert len(data) > 5000, len(data)
PY
    passed=$((passed + 1))
done
"$PYTHON3" "$SHARE/plot_alpha.py" "$SOUP" --print > "$TMP/alpha.txt" || fail "plot_alpha.py --print"
"$PYTHON3" - "$TMP/alpha.txt" "$TMP" <<'PY' || fail "plot_alpha.py's alpha differs from the instantiated models'"
import sys, h5py, numpy as np
lines = open(sys.argv[1]).read().splitlines()
assert lines[0].split() == ["domain", "expert0", "expert1", "expert2"], lines[0]
rows = {l.split()[0]: np.array([float(x) for x in l.split()[1:]]) for l in lines[1:]}
assert sorted(rows) == ["c", "headers", "tests"], rows
for d, row in rows.items():
    want = h5py.File("%s/spec-%s.h5" % (sys.argv[2], d), "r").attrs["alpha"].astype(np.float64)
    rel = np.abs(row - want).max() / np.abs(want).max()
    assert rel < 1e-5, (d, row, want, rel)
print("plot_alpha.py's alpha = instantiate's for every domain")
PY
passed=$((passed + 1))

# ---- read_checkpoint.py: theta(ckpt, h) = the instantiated model --------------------------------
# check_theta SOUP SPECIALIST: read_checkpoint.theta at the specialist's h equals its /shared
check_theta() {
    "$PYTHON3" - "$SHARE" "$1" "$2" <<'PY' || fail "read_checkpoint.theta($1) differs from $2"
import sys, h5py, numpy as np
sys.path.insert(0, sys.argv[1])
import read_checkpoint
ckpt = read_checkpoint.load(sys.argv[2])
spec = h5py.File(sys.argv[3], "r")
assert ckpt["kind"] == "soup" and ckpt["n_experts"] == 3 and ckpt["step"] > 0
assert list(ckpt["tensors"])[:2] == ["wte", "wpe"], list(ckpt["tensors"])[:2]
h = np.asarray(spec.attrs["h"], dtype=np.float64)
alpha = read_checkpoint.router_alpha(ckpt, h)
assert np.abs(alpha - spec.attrs["alpha"]).max() <= 1e-5 * np.abs(alpha).max(), (alpha, spec.attrs["alpha"])
theta = read_checkpoint.theta(ckpt, h)
assert sorted(theta) == sorted(spec["shared"]), sorted(theta)
worst = max(float(np.abs(theta[n] - spec["shared"][n][...]).max() / (np.abs(spec["shared"][n][...]).max() + 1e-12))
            for n in theta)
print("%s: max relative difference %.2e" % (sys.argv[2], worst))
sys.exit(0 if worst < 1e-5 else 1)
PY
    passed=$((passed + 1))
}
check_theta "$SOUP" "$TMP/spec-mix.h5"
check_theta "$CKPT" "$TMP/spec-headers.h5"
"$PYTHON3" - "$SHARE" "$CKPT" <<'PY' || fail "read_checkpoint.load(optim=True)"
import sys
sys.path.insert(0, sys.argv[1])
import read_checkpoint
c = read_checkpoint.load(sys.argv[2], optim=True)
assert c["training_checkpoint"] and c["optim"]["step"] == c["step"]
assert sorted(c["optim"]["m"]["tensors"]) == sorted(c["tensors"]) and c["optim"]["v"]["router"]
PY
passed=$((passed + 1))

# ---- low-rank experts: inspect lists U and V, theta merges U_j V_j^T ---------------------------
# shellcheck disable=SC2086
run_mpi 2 "^done: 10 steps" "$LADLE" train $TINY soup.experts=3 soup.rank=2 router.hidden=8 \
    soup.expert_init_std=0.02 train.steps=10 data.corpus="$TMP/corpus.h5" run.dir="$TMP/lowrank" \
    || fail "low-rank soup training"
"$LADLE" inspect "$TMP/lowrank/model.h5" > "$TMP/lr.txt" || fail "inspect low-rank soup"
expect '^soup: experts 3, rank 2 \(low-rank U V\^T\), experts_on all$' "$TMP/lr.txt"
expect '^  experts/h\.0\.ffn\.w1/U +\[3, 128, 2\]$' "$TMP/lr.txt"
expect '^  experts/h\.0\.ffn\.w1/V +\[3, 32, 2\]$' "$TMP/lr.txt"
passed=$((passed + 1))
"$LADLE" inspect "$TMP/lowrank/model.h5" --dump experts/h.0.ffn.w1/V > "$TMP/d5" || fail "dump a low-rank factor"
[ "$(wc -l < "$TMP/d5")" -eq 192 ] || fail "dump of V [3, 32, 2] is not 192 values"
"$LADLE" instantiate "$TMP/lowrank/model.h5" -o "$TMP/lr-spec.h5" --weights headers=2,tests=1 > "$TMP/inst.out" 2>&1 \
    || { cat "$TMP/inst.out" >&2; fail "instantiate the low-rank soup"; }
check_theta "$TMP/lowrank/model.h5" "$TMP/lr-spec.h5"

# ---- raw alpha times router.scale: inspect shows it, theta applies it --------------------------
# shellcheck disable=SC2086
run_mpi 2 "^done: 10 steps" "$LADLE" train $TINY soup.experts=3 router.hidden=8 router.alpha=raw router.scale=0.25 \
    soup.expert_init_std=0.02 train.steps=10 data.corpus="$TMP/corpus.h5" run.dir="$TMP/scaled" \
    || fail "training a soup with router.scale"
"$LADLE" inspect "$TMP/scaled/model.h5" > "$TMP/sc.txt" || fail "inspect the scaled soup"
expect '^router: hidden 8, alpha raw x 0.25$' "$TMP/sc.txt"
"$LADLE" instantiate "$TMP/scaled/model.h5" -o "$TMP/sc-spec.h5" --weights headers=1,tests=3 > "$TMP/inst.out" 2>&1 \
    || { cat "$TMP/inst.out" >&2; fail "instantiate the scaled soup"; }
check_theta "$TMP/scaled/model.h5" "$TMP/sc-spec.h5"

echo "analysis: $passed passed, 0 failed"
