#!/bin/sh
# ladle eval --routing: every routed site's average routing distribution per domain.
# Checked: the sites listed (moe, smear and tag FFN sites, smear and tag adapters), rows of
# probabilities and of top-1 fractions summing to 1, counts of tokens or segments, the mean
# entropy of the individual distributions (at most that of their mean; 0 at tag sites), tag
# sites one-hot on the domain's index mod the experts, the same numbers on 1 and 2 ranks,
# and, for one-layer moe and smear models, the same numbers as an independent NumPy
# forward from the model file and the corpus; a dense model is refused.
. "$top_srcdir/test/lib.sh"
make_tmp
: "${PYTHON3:=/usr/bin/python3}"
make_small_corpus "$TMP/corpus.h5"
passed=0
C="data.corpus=$TMP/corpus.h5"
# one-layer models (the NumPy reference needs only embedding, attention and the router),
# then every kind of site: smear and tag FFN sites; tag and smear adapters next to a moe site
# shellcheck disable=SC2086
run_mpi 2 "^done: 20 steps" "$LADLE" train $TINY model.layers=1 model.ffn=moe moe.experts=4 train.steps=20 $C \
    run.dir="$TMP/moe" || fail "moe training"
# shellcheck disable=SC2086
run_mpi 2 "^done: 20 steps" "$LADLE" train $TINY model.layers=1 model.ffn=smear smear.experts=3 smear.segment=8 \
    train.steps=20 $C run.dir="$TMP/smear" || fail "smear training"
# shellcheck disable=SC2086
run_mpi 2 "^done: 6 steps" "$LADLE" train $TINY model.ffn=smear,tag smear.experts=3 smear.segment=8 train.steps=6 $C \
    run.dir="$TMP/ffn" || fail "smear,tag training"
# shellcheck disable=SC2086
run_mpi 2 "^done: 6 steps" "$LADLE" train $TINY model.layers=3 model.ffn=tag,smear,moe smear.kind=adapter \
    smear.experts=2 smear.segment=16 moe.experts=3 train.steps=6 $C run.dir="$TMP/adapter" || fail "adapter training"

# windows 5, batch 2: the ranks' ranges and batches are cut differently on 1 and 2 ranks
for m in moe smear ffn adapter; do
    for n in 1 2; do
        run_mpi $n '"routing"' "$LADLE" eval "$TMP/$m/model.h5" --corpus "$TMP/corpus.h5" --windows 5 --batch 2 \
            --routing --json || fail "eval --routing of $m on $n ranks"
        cp "$TMP/out" "$TMP/$m-$n.json"
    done
done
"$PYTHON3" - "$TMP" <<'PY' || fail "routing statistics"
import json, math, sys
tmp = sys.argv[1]
T = 32
expected = {   # model -> [(site, kind, experts, segment or 0 for per-token)]
    "moe": [("h.0.moe", "moe", 4, 0)],
    "smear": [("h.0.smear", "smear", 3, 8)],
    "ffn": [("h.0.smear", "smear", 3, 8), ("h.1.smear", "tag", 3, 8)],
    "adapter": [("h.0.adapter.attn", "tag", 2, 16), ("h.0.adapter.ffn", "tag", 2, 16),
                ("h.1.adapter.attn", "smear", 2, 16), ("h.1.adapter.ffn", "smear", 2, 16), ("h.2.moe", "moe", 3, 0)],
}
for model, sites in expected.items():
    one, two = (json.loads(open("%s/%s-%d.json" % (tmp, model, n)).read().strip().splitlines()[-1]) for n in (1, 2))
    got = [(s["site"], s["kind"], s["experts"]) for s in one["routing"]]
    assert got == [x[:3] for x in sites], (model, got)
    windows = {d["domain"]: d["windows"] for d in one["domains"]}
    assert len(windows) == 3 and all(w == 5 for w in windows.values()), windows
    for s, s2, (name, kind, E, seg) in zip(one["routing"], two["routing"], sites):
        for di, (d, d2) in enumerate(zip(s["domains"], s2["domains"])):
            where = "%s %s %s" % (model, name, d["domain"])
            count = windows[d["domain"]] * (T // seg if seg else T)
            assert d["count"] == count == d2["count"], (where, d["count"], d2["count"], count)
            keys = ["prob", "top1"] if kind == "moe" else ["prob"]
            assert sorted(k for k in d if k in ("prob", "top1")) == sorted(keys), (where, list(d))
            for k in keys:
                assert len(d[k]) == E and abs(sum(d[k]) - 1) < 1e-5 and min(d[k]) >= 0, (where, k, d[k])
                assert max(abs(a - b) for a, b in zip(d[k], d2[k])) < 1e-5, (where, k, d[k], d2[k])
            if kind == "moe":   # fractions of whole tokens
                assert all(abs(f * count - round(f * count)) < 1e-3 for f in d["top1"]), (where, d["top1"])
            # the mean entropy of the individual distributions: at most that of their mean
            H = -sum(x * math.log2(x) for x in d["prob"] if x > 0)
            assert 0 <= d["entropy"] <= H + 1e-6 and abs(d["entropy"] - d2["entropy"]) < 1e-5, (where, d["entropy"], H)
            if kind == "tag":
                assert d["prob"] == [1.0 if e == di % E else 0.0 for e in range(E)], (where, d["prob"])
                assert d["entropy"] == 0, (where, d["entropy"])
            if kind == "smear":   # a trained router: not one-hot
                assert max(d["prob"]) < 0.999, (where, d["prob"])
print("routing: sites, sums, counts, tag one-hot, 1 vs 2 ranks ok")
PY
passed=$((passed + 1))

# the table form: one block per site, moe with its top-1 fractions
run_mpi 1 "mean merge weights per segment" "$LADLE" eval "$TMP/adapter/model.h5" --corpus "$TMP/corpus.h5" --windows 2 \
    --routing || fail "eval --routing table"
grep -q "^h.0.adapter.attn (tag, 2 experts): mean merge weights per segment" "$TMP/out" || fail "no tag adapter block"
grep -q "^h.2.moe (moe, 3 experts): fraction of tokens routed (top-1)" "$TMP/out" || fail "no moe top-1 block"
grep -q "^domain  *e0  *e1 H(bits)  mean H$" "$TMP/out" || fail "no expert header"
passed=$((passed + 1))

# an independent forward: embedding, LayerNorm, causal attention, the site's input LN2,
# then the moe router's softmax or SMEAR's segment router, from the files alone
if "$PYTHON3" -c 'import h5py, numpy' 2>/dev/null; then
    "$PYTHON3" - "$TMP" <<'PY' || fail "routing differs from the NumPy reference"
import json, sys
import h5py, numpy as np
tmp = sys.argv[1]
T, C, NH, W = 32, 32, 4, 5

def ln(x, w=None, b=None):
    mu = x.mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
    return y if w is None else y * w + b

def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)

def windows(valid):   # ladle_valid_windows / ladle_batch_valid
    n = min(W, max(1, (len(valid) - 1) // T))
    span = len(valid) - T - 1
    return np.stack([valid[w * span // (n - 1):][:T] for w in range(n)]).astype(np.int64)

def site_input(p, tok):   # LN2 of layer 0's residual after attention
    x = p["wte"][tok] + p["wpe"][:T]
    qkv = ln(x, p["h.0.ln1.w"], p["h.0.ln1.b"]) @ p["h.0.attn.qkv.w"].T + p["h.0.attn.qkv.b"]
    B, hd = x.shape[0], C // NH
    q, k, v = (qkv[..., i * C:(i + 1) * C].reshape(B, T, NH, hd).transpose(0, 2, 1, 3) for i in range(3))
    att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
    att = softmax(np.where(np.tril(np.ones((T, T), bool)), att, -np.inf))
    y = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
    x = x + y @ p["h.0.attn.proj.w"].T + p["h.0.attn.proj.b"]
    return ln(x, p["h.0.ln2.w"], p["h.0.ln2.b"])

corpus = h5py.File("%s/corpus.h5" % tmp, "r")
for model, site in (("moe", "h.0.moe"), ("smear", "h.0.smear")):
    p = {k: v[...].astype(np.float64) for k, v in h5py.File("%s/%s/model.h5" % (tmp, model), "r")["shared"].items()}
    got = json.loads(open("%s/%s-1.json" % (tmp, model)).read().strip().splitlines()[-1])["routing"][0]
    for d in got["domains"]:
        x = site_input(p, windows(corpus["domains"][d["domain"]]["valid"][...]))
        if model == "moe":
            probs = softmax(x @ p[site + ".router"].T).reshape(-1, 4)
            ref = {"prob": probs.mean(0), "top1": np.bincount(probs.argmax(-1), minlength=4) / len(probs)}
            rows = probs
        else:
            S, N = 8, 3
            G = ln(p[site + ".router.w"]) * p[site + ".router.g"]
            means = x.reshape(x.shape[0], T // S, S, C).mean(2)[:, :-1]   # segment s routes on segment s-1
            z = ln(means, p[site + ".ln.w"], p[site + ".ln.b"])
            rows = np.concatenate([np.broadcast_to(softmax(p[site + ".default"]), (x.shape[0], 1, N)),
                                   softmax(z @ G.T)], 1)
            rows = rows.reshape(-1, N)
            ref = {"prob": rows.mean(0)}
        ref["entropy"] = -(rows * np.log2(rows)).sum(-1).mean()
        for k, r in ref.items():
            err = np.abs(np.array(d[k]) - r).max()
            assert err < 2e-4, (model, d["domain"], k, d[k], r.tolist())
        print("%s %-8s %s" % (model, d["domain"], " ".join("%.4f" % v for v in d["prob"])))
print("routing: moe and smear statistics match the NumPy reference")
PY
    passed=$((passed + 1))
fi

# a dense model has nothing to report: a usage error, not an empty report
# shellcheck disable=SC2086
run_mpi 1 "^done: 2 steps" "$LADLE" train $TINY train.steps=2 $C run.dir="$TMP/dense" || fail "dense training"
refuse "has no routed sites" eval "$TMP/dense/model.h5" --corpus "$TMP/corpus.h5" --routing
refuse "does not go with --specialize" eval "$TMP/moe/model.h5" --corpus "$TMP/corpus.h5" --routing --specialize
echo "routing: $passed passed, 0 failed"
