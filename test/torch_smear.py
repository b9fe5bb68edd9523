#!/usr/bin/env python3
"""Independent PyTorch reference for ladle's SMEAR layer (src/smear.c).

    torch_smear.py DIR [DIR ...]

Each DIR is written by `test_smear --dump ROOT` (ROOT/router, dropout, dropout-heavy, tag,
adapter):
manifest.txt plus raw little-endian float32 tensors (labels int32). The layer is written
here from its description (include/ladle/smear.h, METHODS.md section 2), in float64 with
stock torch ops, every input and parameter a leaf, and autograd for the gradients:

  * each sequence is cut into segments of S tokens; segment s >= 1 is routed on
    LayerNorm(mean of the inputs of segment s - 1; ln_w, ln_b); the logit of expert i is
    < LayerNorm_noaffine(w_i) * g_i , z >; segment 0 on default_logits; p = softmax;
  * training with dropout > 0: expert i of segment s of global sequence
    first_sequence + b is dropped when the counter RNG's uniform
    (seed, step, stream, (global * n_segments + s) * N + i) is below the rate; the kept
    probabilities are renormalised, and a segment that lost every expert keeps the
    undropped softmax. The RNG (splitmix64 finaliser chained over the four words) is
    re-implemented below;
  * tag routing: p = one-hot(label mod N);
  * the segment's tokens go through ONE FFN C -> H -> C, an activation between two linear
    layers, with w1, b1, w2, b2 the p-weighted sums of the experts'. H is read off the
    tensors' shapes (4C for full FFN experts, r for bottleneck adapters); the activation
    is GELU (tanh) or, when the manifest says swish 1, x * torch.sigmoid(x).

Checked against the C dump (relative error ||C - ref|| / ||ref|| <= 1e-4): out, the
routing probabilities, d(inp) and the gradient of every parameter, for
J = sum(dout * out). Controls: a 1% error in one gradient element must be flagged; a
reference that routes on the CURRENT segment (leaking future tokens) must disagree with
the C output; for a dropout dump, a reference without dropout must disagree too; for a
swish dump, a reference with GELU must disagree.

Exit status: 0 if every check passed, 1 if any failed, 77 if torch is not importable.
"""
import os
import sys

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch_checks import Checks, rel_err
except ImportError as e:  # automake's "skipped"
    print(f"torch_smear: SKIP: cannot import torch/numpy ({e})")
    sys.exit(77)

TOL = 1e-4
M64 = (1 << 64) - 1
# rng.h: LADLE_STREAM_EXPERT is the 7th stream (INIT = 1); smear.c uses the next one
DROPOUT_STREAM = 7 + 1


def mix64(z):
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def rng_uniform(seed, step, stream, index):
    h = mix64(seed & M64)
    h = mix64(h ^ (step & M64))
    h = mix64(h ^ ((stream * 0xD1B54A32D192ED03) & M64))
    h = mix64(h ^ (index & M64))
    return (h >> 40) / 16777216.0   # 24 bits, exact in float32 and float64


def read_dump(d):
    cfg, tensors = {}, {}
    with open(os.path.join(d, "manifest.txt")) as f:
        for line in f:
            w = line.split()
            if not w:
                continue
            if w[0] == "tensor":
                name, shape = w[1], tuple(int(x) for x in w[2:])
                dtype = "<i4" if name == "labels" else "<f4"
                a = np.fromfile(os.path.join(d, name + ".bin"), dtype=dtype)
                if a.size != int(np.prod(shape)):
                    raise SystemExit(f"torch_smear: {d}/{name}.bin has {a.size} values, manifest says {shape}")
                tensors[name] = a.reshape(shape)
            else:
                cfg[w[0]] = w[1]
    return cfg, tensors


def keep_mask(cfg, B, nseg, N):
    """1 = kept; a segment whose every expert is dropped keeps them all."""
    keep = np.ones((B, nseg, N))
    if not (int(cfg["training"]) and float(cfg["dropout"]) > 0):
        return keep
    rate = float(np.float32(float(cfg["dropout"])))   # the C side compares against a float
    seed, step, first = int(cfg["seed"]), int(cfg["step"]), int(cfg["first_sequence"])
    for b in range(B):
        for s in range(nseg):
            for i in range(N):
                index = ((first + b) * nseg + s) * N + i
                keep[b, s, i] = 0.0 if rng_uniform(seed, step, DROPOUT_STREAM, index) < rate else 1.0
            if keep[b, s].sum() == 0:
                keep[b, s] = 1.0
    return keep


def smear(cfg, P, labels, keep, leak=False, swish=None):
    """The layer in float64. P: dict of leaves. leak=True routes on the current segment
    (a deliberately non-causal variant, for the control); swish overrides the manifest's
    activation (for the control)."""
    if swish is None:
        swish = int(cfg.get("swish", "0"))
    inp = P["inp"]
    B, T, C = inp.shape
    N, S = int(cfg["N"]), int(cfg["segment"])
    nseg = T // S
    x = inp.reshape(B, nseg, S, C)
    if int(cfg["tag"]):
        e = torch.tensor([int(l) % N for l in labels])   # Python's % is the non-negative residue
        p = F.one_hot(e, N).to(torch.float64)[:, None, :].expand(B, nseg, N)
    else:
        seg_mean = x.mean(dim=2)                                    # [B, nseg, C]
        src = seg_mean[:, 1:] if leak else seg_mean[:, :-1]        # segment s routed on s - 1
        z = F.layer_norm(src, (C,), P["ln_w"], P["ln_b"], eps=1e-5)
        wn = F.layer_norm(P["w"], (C,), eps=1e-5)                  # no affine
        rest = torch.einsum("bsc,nc->bsn", z, wn * P["g"])
        first = P["default_logits"].expand(B, 1, N)
        q = torch.softmax(torch.cat([first, rest], dim=1), dim=-1)
        k = torch.from_numpy(keep)
        qk = q * k
        p = qk / qk.sum(dim=-1, keepdim=True)
    W1 = torch.einsum("bsn,nhc->bshc", p, P["w1"])
    B1 = torch.einsum("bsn,nh->bsh", p, P["b1"])
    W2 = torch.einsum("bsn,nch->bsch", p, P["w2"])
    B2 = torch.einsum("bsn,nc->bsc", p, P["b2"])
    h = torch.einsum("bstc,bshc->bsth", x, W1) + B1[:, :, None, :]
    a = h * torch.sigmoid(h) if swish else F.gelu(h, approximate="tanh")
    y = torch.einsum("bsth,bsch->bstc", a, W2) + B2[:, :, None, :]
    return y.reshape(B, T, C), p


def check_dir(d, checks):
    cfg, t = read_dump(d)
    name = os.path.basename(os.path.normpath(d))
    tag = int(cfg["tag"])
    B, T, C, N, S = (int(cfg[k]) for k in ("B", "T", "C", "N", "segment"))
    nseg = T // S
    H = t["w1"].shape[1]
    swish = int(cfg.get("swish", "0"))
    print(f"== {name}: B {B}, T {T}, C {C}, N {N}, segment {S}, tag {tag}, training {cfg['training']}, "
          f"dropout {cfg['dropout']}, hidden {H}, {'swish' if swish else 'GELU'}")
    checks.expect(int(cfg.get("hidden", H)) == H, f"{name}: manifest hidden {cfg.get('hidden')}, w1 has H = {H}")
    checks.expect(int(cfg.get("stream", DROPOUT_STREAM)) == DROPOUT_STREAM,
                  f"{name}: dropout stream {cfg.get('stream')} in the manifest, {DROPOUT_STREAM} here")
    pnames = ["inp", "w1", "b1", "w2", "b2"] + ([] if tag else ["ln_w", "ln_b", "w", "g", "default_logits"])
    P = {k: torch.tensor(t[k], dtype=torch.float64, requires_grad=True) for k in pnames}
    keep = keep_mask(cfg, B, nseg, N)
    out, p = smear(cfg, P, t["labels"], keep)
    dout = torch.tensor(t["dout"], dtype=torch.float64)
    (out * dout).sum().backward()

    def compare(what, c, ref):
        err = rel_err(c, ref)
        checks.expect(err <= TOL, f"{what}: rel. error {err:.3e}")
        print(f"   {what:<18} rel. error {err:.2e}")
        return err

    compare("out", t["out"], out.detach().numpy())
    compare("probs", t["probs"], p.detach().numpy())
    if not tag and keep.min() == 0:
        c_zero = t["probs"] == 0
        checks.expect(np.array_equal(c_zero, keep == 0), f"{name}: C dropped other experts than the reference")
        fallback = int((t["probs"] != 0).all(axis=-1).sum())
        print(f"   dropout: {int((keep == 0).sum())} of {keep.size} probabilities dropped, same experts in C; "
              f"{fallback} of {B * nseg} segments without a dropped expert")
    for k in pnames:
        compare("d_" + k, t["d_" + k], P[k].grad.numpy())

    # controls: each must be flagged by the comparisons above
    victim = "d_g" if not tag else "d_w1"
    c = t[victim].copy().ravel()
    i = int(np.argmax(np.abs(c)))
    c[i] *= np.float32(1.01)
    err = rel_err(c, P[victim[2:]].grad.numpy().ravel())
    checks.expect(err > TOL, f"{name}: negative control: 1% error in {victim}[{i}] NOT flagged (rel. {err:.3e})")
    print(f"   control: 1% error in {victim}[{i}] -> rel. {err:.2e} ({'flagged' if err > TOL else 'NOT flagged'})")
    if not tag:
        with torch.no_grad():
            leaky, _ = smear(cfg, P, t["labels"], keep, leak=True)
        err = rel_err(t["out"], leaky.numpy())
        checks.expect(err > TOL, f"{name}: control: routing on the current segment agrees with C (rel. {err:.3e})")
        print(f"   control: routing on the current segment -> rel. {err:.2e}")
    if keep.min() == 0:
        with torch.no_grad():
            nodrop, _ = smear(cfg, P, t["labels"], np.ones_like(keep))
        err = rel_err(t["out"], nodrop.numpy())
        checks.expect(err > TOL, f"{name}: control: no dropout agrees with C (rel. {err:.3e})")
        print(f"   control: no dropout -> rel. {err:.2e}")
    if swish:
        with torch.no_grad():
            gelu, _ = smear(cfg, P, t["labels"], keep, swish=0)
        err = rel_err(t["out"], gelu.numpy())
        checks.expect(err > TOL, f"{name}: control: GELU instead of swish agrees with C (rel. {err:.3e})")
        print(f"   control: GELU instead of swish -> rel. {err:.2e}")


def main():
    if len(sys.argv) < 2:
        print("usage: torch_smear.py DIR [DIR ...]", file=sys.stderr)
        return 2
    torch.set_default_dtype(torch.float64)
    checks = Checks()
    for d in sys.argv[1:]:
        check_dir(d, checks)
    print(f"torch_smear: {checks.passed} passed, {checks.failed} failed")
    return 0 if checks.failed == 0 and checks.passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
