#!/usr/bin/env python3
"""Independent PyTorch reference for ladle's byte-level GPT.

    torch_ref.py OUTDIR

OUTDIR is written by test/dump_model. The model below is written from the description
of the architecture (vocab 256, learned positions, pre-LN blocks, causal multi-head
attention with a combined qkv projection, GELU (tanh) MLP of width 4C, final LayerNorm,
logits tied to the token embedding, mean cross-entropy), with stock torch modules; the
C parameters are loaded into it by tensor name. Checked, against the C dumps:

  * logits and the mean loss of one forward pass (reference computed in float64);
  * the gradient of every parameter tensor (autograd, float64);
  * train.steps steps of torch.optim.AdamW (weight decay on matrices and embeddings
    only) with clip_grad_norm_ and the warmup + cosine schedule on the same batch,
    against the C losses (and the C learning rates and gradient norms, from steps.txt);
  * negative controls: a 1% error in one gradient element, and in one loss, must be
    flagged by the same comparisons.

Exit status: 0 if every check passed, 1 if any failed, 77 if torch is not importable.
"""
import math
import os
import sys

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # automake's "skipped"
    print(f"torch_ref: SKIP: cannot import torch/numpy ({e})")
    sys.exit(77)

TOL = 1e-4          # relative error bound for every comparison
TINY = 1e-30
VOCAB = 256


# ---------------------------------------------------------------- the model


class CausalSelfAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        assert dim % heads == 0
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, T, C = x.shape
        nh, hs = self.heads, C // self.heads
        q, k, v = self.qkv(x).split(C, dim=2)
        # head h owns features h*hs .. (h+1)*hs-1 of each of q, k, v
        q = q.view(B, T, nh, hs).transpose(1, 2)            # [B, nh, T, hs]
        k = k.view(B, T, nh, hs).transpose(1, 2)
        v = v.view(B, T, nh, hs).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(hs)  # [B, nh, T, T]
        future = torch.triu(torch.ones(T, T, dtype=torch.bool, device=x.device), diagonal=1)
        scores = scores.masked_fill(future, float("-inf"))
        att = torch.softmax(scores, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = CausalSelfAttention(dim, heads)
        self.ln2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = MLP(dim)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        return x


class GPT(nn.Module):
    def __init__(self, layers, dim, heads, context):
        super().__init__()
        self.wte = nn.Embedding(VOCAB, dim)
        self.wpe = nn.Embedding(context, dim)
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(layers)])
        self.lnf = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, tokens, targets=None):
        B, T = tokens.shape
        pos = torch.arange(T, device=tokens.device)
        x = self.wte(tokens) + self.wpe(pos)[None, :, :]
        for block in self.blocks:
            x = block(x)
        logits = self.lnf(x) @ self.wte.weight.t()           # tied embeddings
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
        return logits, loss

    def named_for_ladle(self):
        """ladle's tensor name -> (parameter, weight decay applies)."""
        out = {"wte": (self.wte.weight, True), "wpe": (self.wpe.weight, True)}
        for i, b in enumerate(self.blocks):
            p = f"h.{i}."
            out[p + "ln1.w"] = (b.ln1.weight, False)
            out[p + "ln1.b"] = (b.ln1.bias, False)
            out[p + "attn.qkv.w"] = (b.attn.qkv.weight, True)
            out[p + "attn.qkv.b"] = (b.attn.qkv.bias, False)
            out[p + "attn.proj.w"] = (b.attn.proj.weight, True)
            out[p + "attn.proj.b"] = (b.attn.proj.bias, False)
            out[p + "ln2.w"] = (b.ln2.weight, False)
            out[p + "ln2.b"] = (b.ln2.bias, False)
            out[p + "ffn.w1"] = (b.mlp.fc1.weight, True)
            out[p + "ffn.b1"] = (b.mlp.fc1.bias, False)
            out[p + "ffn.w2"] = (b.mlp.fc2.weight, True)
            out[p + "ffn.b2"] = (b.mlp.fc2.bias, False)
        out["lnf.w"] = (self.lnf.weight, False)
        out["lnf.b"] = (self.lnf.bias, False)
        return out


# ---------------------------------------------------------------- the schedule


def lr_at(cfg, step):
    """Linear warmup to train.lr over train.warmup steps, then cosine decay to
    train.lr * train.min_lr_ratio at the last step (0-based step)."""
    lr, warmup, steps = cfg["train.lr"], int(cfg["train.warmup"]), int(cfg["train.steps"])
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    decay_steps = steps - warmup
    if decay_steps <= 1:
        return lr
    progress = min(1.0, (step - warmup) / (decay_steps - 1))
    min_lr = lr * cfg["train.min_lr_ratio"]
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------- checks


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.worst = {}

    def expect(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL: {what}")

    def note(self, kind, err):
        self.worst[kind] = max(self.worst.get(kind, 0.0), err)


def rel_err(a, b):
    """||a - b|| / max(||b||, tiny), b the reference; in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm((a - b).ravel()) / max(float(np.linalg.norm(b.ravel())), TINY))


def read_manifest(path):
    cfg, tensors, rtensors, meta = {}, [], [], {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if "=" in line:
                key, _, value = line.partition("=")
                key, value = key.strip(), value.strip()
                try:
                    cfg[key] = float(value) if any(c in value for c in ".eE") else int(value)
                except ValueError:
                    cfg[key] = value
                continue
            fields = line.split()
            if fields[0] in ("tensor", "router_tensor"):
                (tensors if fields[0] == "tensor" else rtensors).append(
                    (fields[1], int(fields[2]), int(fields[3]), int(fields[4])))
            else:
                meta[fields[0]] = fields[1]
    return cfg, meta, tensors, rtensors


def load_f32(path, count=None):
    a = np.fromfile(path, dtype="<f4")
    if count is not None and a.size != count:
        raise SystemExit(f"torch_ref: {path}: {a.size} floats, expected {count}")
    return a


def main():
    if len(sys.argv) != 2:
        print("usage: torch_ref.py OUTDIR", file=sys.stderr)
        return 2
    d = sys.argv[1]
    cfg, meta, tensors, rtensors = read_manifest(os.path.join(d, "manifest.txt"))
    L, C, NH, T = (int(cfg[k]) for k in ("model.layers", "model.dim", "model.heads", "model.context"))
    B = int(meta["B"])
    n_params = int(meta["n_params"])
    c_loss = float(meta["loss"])
    checks = Checks()
    torch.manual_seed(0)
    print(f"torch_ref: {d}: L={L} C={C} NH={NH} T={T} B={B}, {n_params} parameters")

    params = load_f32(os.path.join(d, "params.bin"), n_params)
    c_grads = load_f32(os.path.join(d, "grads.bin"), n_params)
    c_logits = load_f32(os.path.join(d, "logits.bin"), B * T * VOCAB).reshape(B, T, VOCAB)
    tokens = np.fromfile(os.path.join(d, "tokens.bin"), dtype=np.uint8)
    targets = np.fromfile(os.path.join(d, "targets.bin"), dtype=np.uint8)
    assert tokens.size == B * T and targets.size == B * T
    tokens = torch.from_numpy(tokens.astype(np.int64)).view(B, T)
    targets = torch.from_numpy(targets.astype(np.int64)).view(B, T)

    # ---- the parameter table: names, shapes, dense tiling of the flat vector
    model = GPT(L, C, NH, T)
    named = model.named_for_ladle()
    checks.expect(sorted(n for n, *_ in tensors) == sorted(named),
                  f"tensor names differ: C has {sorted(set(n for n, *_ in tensors) ^ set(named))} not in both")
    covered = 0
    for name, off, rows, cols in sorted(tensors, key=lambda t: t[1]):
        checks.expect(off == covered, f"tensor {name}: offset {off}, expected {covered} (dense table)")
        covered = off + rows * cols
        if name in named:
            p = named[name][0]
            shape = (rows, cols) if p.dim() == 2 else (rows,)
            checks.expect(tuple(p.shape) == shape and cols >= 1,
                          f"tensor {name}: C shape {rows}x{cols}, torch {tuple(p.shape)}")
    checks.expect(covered == n_params, f"tensors cover {covered} of {n_params} parameters")
    layout = {name: (off, rows * cols) for name, off, rows, cols in tensors}
    # every torch parameter is one of ladle's tensors (nothing untied or missing)
    checks.expect(len({id(p) for p, _ in named.values()}) == len(list(model.parameters())),
                  "torch model has parameters outside ladle's table")

    if "soup" in meta:
        check_soup(d, cfg, meta, tensors, rtensors, layout, tokens, targets, checks)
        return finish(checks)

    def load_params(m, flat):
        with torch.no_grad():
            for name, (p, _) in m.named_for_ladle().items():
                off, size = layout[name]
                p.copy_(torch.from_numpy(flat[off:off + size].astype(np.float64)).view_as(p))

    # ---- forward + backward in float64 from the float32 weights
    model = model.double()
    load_params(model, params)
    logits, loss = model(tokens, targets)
    loss.backward()
    ref_logits = logits.detach().numpy()

    err = rel_err(c_logits, ref_logits)
    checks.note("logits", err)
    checks.expect(err <= TOL, f"logits: rel. error {err:.3e}")
    print(f"  logits                rel. error {err:.3e}")
    err = abs(c_loss - loss.item()) / max(abs(loss.item()), TINY)
    checks.note("loss", err)
    checks.expect(err <= TOL, f"loss: C {c_loss:.9g}, torch {loss.item():.9g} (rel. {err:.3e})")
    print(f"  loss                  rel. error {err:.3e}   (C {c_loss:.9g}, torch {loss.item():.9g})")

    ref_grads = {}
    named = model.named_for_ladle()
    print("  gradients:")
    for name, off, rows, cols in tensors:
        g = named[name][0].grad.detach().numpy().ravel()
        ref_grads[name] = g
        err = rel_err(c_grads[off:off + rows * cols], g)
        checks.note("grad", err)
        checks.expect(err <= TOL, f"grad {name}: rel. error {err:.3e}")
        checks.expect(np.linalg.norm(g) > 0, f"grad {name}: reference gradient is zero (test not generic)")
        print(f"    {name:<18} {rows:>4} x {cols:<4} norm {np.linalg.norm(g):.3e}  rel. error {err:.3e}")

    # ---- negative control: a 1% error in one element of one gradient must be flagged
    victim = max(tensors, key=lambda t: t[2] * t[3])[0]   # the largest tensor: hardest case
    off, size = layout[victim]
    bad = c_grads[off:off + size].astype(np.float64).copy()
    i = int(np.argmax(np.abs(bad)))
    bad[i] *= 1.01
    err = rel_err(bad, ref_grads[victim])
    checks.expect(err > TOL, f"negative control: 1% error in {victim}[{i}] NOT flagged (rel. {err:.3e})")
    print(f"  negative control: 1% error in {victim}[{i}] -> rel. error {err:.3e} "
          f"({'flagged' if err > TOL else 'NOT flagged'})")

    # ---- AdamW with clipping and the lr schedule, on the same batch
    c_losses = np.loadtxt(os.path.join(d, "losses.txt"), dtype=np.float64, ndmin=1)
    c_steps = np.loadtxt(os.path.join(d, "steps.txt"), dtype=np.float64, ndmin=2)
    steps = int(cfg["train.steps"])
    checks.expect(c_losses.size == steps and c_steps.shape[0] == steps,
                  f"losses.txt/steps.txt: {c_losses.size}/{c_steps.shape[0]} lines, expected {steps}")
    model = GPT(L, C, NH, T).double()
    load_params(model, params)
    named = model.named_for_ladle()
    decay = [p for p, dec in named.values() if dec]
    no_decay = [p for p, dec in named.values() if not dec]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg["train.weight_decay"]},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg["train.lr"], betas=(cfg["train.beta1"], cfg["train.beta2"]), eps=cfg["train.eps"])
    clip = cfg["train.clip"]
    ref_losses, clipped = [], 0
    print("  AdamW:  step   lr            grad norm     C loss        torch loss    rel. error")
    for t in range(min(steps, c_losses.size)):
        lr = lr_at(cfg, t)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=False)
        _, loss = model(tokens, targets)
        loss.backward()
        if clip > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
            clipped += norm > clip
        else:
            norm = float(torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters())))
        opt.step()
        ref_losses.append(loss.item())
        err = abs(c_losses[t] - loss.item()) / max(abs(loss.item()), TINY)
        checks.note("adamw loss", err)
        checks.expect(err <= TOL, f"AdamW step {t + 1}: C loss {c_losses[t]:.9g}, torch {loss.item():.9g} (rel. {err:.3e})")
        if t < c_steps.shape[0]:
            c_lr, c_norm = c_steps[t, 1], c_steps[t, 2]
            lr_err = abs(c_lr - lr) / max(lr, TINY)
            norm_err = abs(c_norm - norm) / max(norm, TINY)
            checks.note("lr", lr_err)
            checks.note("grad norm", norm_err)
            checks.expect(lr_err <= 1e-6, f"AdamW step {t + 1}: C lr {c_lr:.9g}, python {lr:.9g}")
            checks.expect(norm_err <= TOL, f"AdamW step {t + 1}: C grad norm {c_norm:.9g}, torch {norm:.9g}")
        print(f"          {t + 1:>4}   {lr:.6e}  {norm:.6e}  {c_losses[t]:.9f}  {loss.item():.9f}  {err:.3e}")
    print(f"  clipping active in {clipped} of {steps} steps; loss {ref_losses[0]:.4f} -> {ref_losses[-1]:.4f}")

    # ---- negative control: a 1% error in one loss of the curve must be flagged
    k = len(ref_losses) // 2
    err = abs(c_losses[k] * 1.01 - ref_losses[k]) / max(abs(ref_losses[k]), TINY)
    checks.expect(err > TOL, f"negative control: 1% error in loss {k + 1} NOT flagged (rel. {err:.3e})")

    return finish(checks)


def finish(checks):
    print("  max rel. errors: " + ", ".join(f"{k} {v:.2e}" for k, v in checks.worst.items()))
    print(f"torch_ref: {checks.passed} passed, {checks.failed} failed")
    return 0 if checks.failed == 0 and checks.passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
