#!/usr/bin/env python3
"""Independent PyTorch reference for ladle's token-routed MoE layer (include/ladle/moe.h).

    torch_moe.py DUMPDIR

DUMPDIR is written by `test_moe --dump DUMPDIR ...` (raw float32 files listed in
manifest.txt). The layer is rebuilt here from its description, with stock torch modules,
in float64:

  * router: nn.Linear(C, Z, bias=False); p = softmax(router(x));
  * the k experts of a token: torch.topk(p, k); gates = those probabilities (no
    renormalisation);
  * capacity (cf > 0): per sequence, expert e serves the first ceil(cf*T*k/Z) of the
    tokens that chose it, in position order -- computed GShard-style, as a cumulative
    sum of the dispatch mask over positions;
  * every expert nn.Linear(C, 4C) -> GELU(tanh) -> nn.Linear(4C, C) is run on EVERY
    token and combined with weights p * kept (dense, no gather/scatter, unlike the C);
  * Switch aux loss per sequence: Z * sum_e f_e P_e, f from the top-1 choice (a count:
    no gradient), P the mean probability; summed over sequences.

Checked against the C dump: logits, top-1, the number of dropped pairs, out, aux; autograd
gradients of J = sum(dout * out) + aux_scale * aux for the input, router, w1, b1, w2, b2;
and of aux alone for the input and router. Every comparison is max|c - ref| / max|ref|
<= 1e-4. The routing must be unambiguous (no near-tie at a top-k boundary), else
float32 vs float64 could legitimately disagree. Negative control: a 1% error in the
largest element of one C gradient must be flagged by the same comparison.

Exit status: 0 if every check passed, 1 if any failed, 77 if torch is not importable.
"""
import math
import sys

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # automake's "skipped"
    print(f"torch_moe: SKIP: cannot import torch/numpy ({e})")
    sys.exit(77)

TOL = 1e-4
TIE_MARGIN = 1e-4   # smallest allowed probability gap at a top-k boundary

failures = 0


def fail(msg):
    global failures
    failures += 1
    print(f"FAIL: {msg}")


def rel_error(c, ref):
    c = torch.as_tensor(c, dtype=torch.float64)
    ref = torch.as_tensor(ref, dtype=torch.float64)
    scale = ref.abs().max().item()
    return (c - ref).abs().max().item() / max(scale, 1e-30)


def compare(name, c, ref, quiet=False):
    """True if the C tensor matches the reference."""
    e = rel_error(c, ref)
    ok = e <= TOL
    if not quiet:
        if ok:
            print(f"  ok   {name:<14} rel. error {e:.2e}")
        else:
            fail(f"{name}: rel. error {e:.3g} > {TOL:g}")
    return ok


class Expert(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU(approximate="tanh")
        self.proj = nn.Linear(4 * dim, dim)

    def forward(self, x):
        return self.proj(self.act(self.fc(x)))


class SwitchMoE(nn.Module):
    def __init__(self, dim, experts, top_k, capacity_factor):
        super().__init__()
        self.Z, self.k, self.cf = experts, top_k, capacity_factor
        self.router = nn.Linear(dim, experts, bias=False)
        self.experts = nn.ModuleList(Expert(dim) for _ in range(experts))

    def capacity(self, T):
        # the header's formula, in double, from the float32 factor (as the C computes it)
        return math.ceil(self.cf * T * self.k / self.Z) if self.cf > 0 else T * self.k

    def forward(self, x):
        """x [B, T, C] -> out [B, T, C], aux (sum over sequences), and diagnostics."""
        B, T, _ = x.shape
        logits = self.router(x)                                   # [B, T, Z]
        probs = F.softmax(logits, dim=-1)
        top_p, top_i = torch.topk(probs, self.k, dim=-1)          # sorted, largest first
        # dispatch mask: 1 where the token chose the expert (any rank)
        chosen = F.one_hot(top_i, self.Z).sum(dim=2).to(x.dtype)  # [B, T, Z]
        # position of the token in the expert's queue, in position order, per sequence
        position = torch.cumsum(chosen, dim=1) - 1
        kept = chosen * (position < self.capacity(T)).to(x.dtype)
        combine = probs * kept                                    # gate, 0 where not served
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            out = out + combine[..., e:e + 1] * expert(x)
        f = F.one_hot(top_i[..., 0], self.Z).to(x.dtype).mean(dim=1)   # [B, Z], a count
        P = probs.mean(dim=1)
        aux = (self.Z * (f * P).sum(dim=-1)).sum()
        dropped = int((chosen - kept).sum().item())
        return out, aux, logits, top_i, probs, dropped


def load(dirname):
    meta, shapes = {}, {}
    with open(f"{dirname}/manifest.txt") as fh:
        for line in fh:
            f = line.split()
            if not f:
                continue
            if f[0] == "tensor":
                shapes[f[1]] = tuple(int(v) for v in f[2:])
            else:
                meta[f[0]] = f[1]
    arrays = {}
    for name, shape in shapes.items():
        dtype = "<i4" if name == "top1" else "<f4"
        a = np.fromfile(f"{dirname}/{name}.bin", dtype=dtype)
        if a.size != math.prod(shape):
            fail(f"{name}.bin: {a.size} values, manifest says {shape}")
            continue
        arrays[name] = a.reshape(shape)
    return meta, arrays


def main():
    if len(sys.argv) != 2:
        print("usage: torch_moe.py DUMPDIR", file=sys.stderr)
        return 2
    meta, a = load(sys.argv[1])
    if failures:
        return 1
    B, T, C, H, Z, k = (int(meta[n]) for n in ("B", "T", "C", "H", "Z", "top_k"))
    cf = float(np.float32(meta["capacity_factor"]))
    aux_scale = float(np.float32(meta["aux_scale"]))
    if H != 4 * C:
        fail(f"H = {H}, expected 4C = {4 * C}")
    print(f"torch_moe: B={B} T={T} C={C} Z={Z} top_k={k} cf={cf:g} aux_scale={aux_scale:g}")
    torch.set_default_dtype(torch.float64)
    d = lambda name: torch.tensor(a[name], dtype=torch.float64)  # noqa: E731

    moe = SwitchMoE(C, Z, k, cf)
    with torch.no_grad():
        moe.router.weight.copy_(d("router"))
        for e, ex in enumerate(moe.experts):
            ex.fc.weight.copy_(d("w1")[e])
            ex.fc.bias.copy_(d("b1")[e])
            ex.proj.weight.copy_(d("w2")[e])
            ex.proj.bias.copy_(d("b2")[e])
    x = d("inp").view(B, T, C).requires_grad_(True)
    dout = d("dout").view(B, T, C)

    out, aux, logits, top_i, probs, dropped = moe(x)

    # routing must be unambiguous at every boundary that matters: the top-1 (f) and the
    # k-th vs (k+1)-th (the dispatch)
    sp = torch.sort(probs.detach(), dim=-1, descending=True).values
    gaps = [sp[..., 0] - sp[..., 1]]
    if k < Z:
        gaps.append(sp[..., k - 1] - sp[..., k])
    margin = min(g.min().item() for g in gaps)
    if margin < TIE_MARGIN:
        fail(f"routing near a tie (probability gap {margin:.3g}): the dump is not a fair test")
    else:
        print(f"  ok   routing margin  smallest probability gap {margin:.3f}")

    compare("logits", a["logits"], logits.detach().reshape(B * T, Z))
    top1 = top_i[..., 0].reshape(-1).numpy()
    if not np.array_equal(top1, a["top1"]):
        fail(f"top-1 differs at {int((top1 != a['top1']).sum())} tokens")
    else:
        print(f"  ok   top1           all {B * T} tokens")
    if dropped != int(meta["dropped"]):
        fail(f"dropped pairs: torch {dropped}, the C test's naive reference {meta['dropped']}")
    elif cf > 0 and dropped == 0:
        fail("capacity factor set but nothing dropped: capacity is untested")
    else:
        print(f"  ok   dropped        {dropped} (token, expert) pairs")
    compare("out", a["out"], out.detach().reshape(B * T, C))
    c_aux = float(meta["aux"])
    e = abs(c_aux - aux.item()) / max(abs(aux.item()), 1e-30)
    if e > TOL:
        fail(f"aux: C {c_aux!r} vs torch {aux.item()!r} (rel. error {e:.3g})")
    else:
        print(f"  ok   aux            {aux.item():.6f}, rel. error {e:.2e}")

    # gradients of J = sum(dout * out) + aux_scale * aux
    J = (dout * out).sum() + aux_scale * aux
    params = [x, moe.router.weight]
    for ex in moe.experts:
        params += [ex.fc.weight, ex.fc.bias, ex.proj.weight, ex.proj.bias]
    g = torch.autograd.grad(J, params, retain_graph=True)
    ref = {
        "dinp": g[0].reshape(B * T, C),
        "drouter": g[1],
        "dw1": torch.stack(g[2::4]),
        "db1": torch.stack(g[3::4]),
        "dw2": torch.stack(g[4::4]),
        "db2": torch.stack(g[5::4]),
    }
    for name, r in ref.items():
        if r.abs().max().item() == 0:
            fail(f"{name}: reference gradient is zero, the check is vacuous")
        compare(name, a[name], r)

    # the aux loss alone: only the router path
    ga = torch.autograd.grad(aux, [x, moe.router.weight])
    compare("aux_dinp", a["aux_dinp"], ga[0].reshape(B * T, C))
    compare("aux_drouter", a["aux_drouter"], ga[1])

    # negative control: the same comparison must flag a 1% error in one element
    for name in ("drouter", "dw1"):
        t = a[name].copy().reshape(-1)
        i = int(np.argmax(np.abs(t)))
        t[i] *= np.float32(1.01)
        if compare(name, t.reshape(a[name].shape), ref[name], quiet=True):
            fail(f"negative control: a 1% error in {name}[{i}] was not flagged")
        else:
            print(f"  ok   negative control: 1% error in {name}[{i}] flagged")

    if failures:
        print(f"torch_moe: {failures} check(s) failed")
        return 1
    print("torch_moe: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
