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

When the manifest has a "soup n" line the dump is a Soup-of-Experts (METHODS.md
section 1): S, n experts E_j on the tensors of the bank (all, or the transformer
blocks h.*), a router MLP Linear(k,H) -> ReLU -> Linear(H,n) (alpha raw or softmax) and
a fixed h. Theta = S + sum_j alpha_j E_j is formed per tensor in torch and run through
the same GPT (functional_call); everything is a float64 leaf, so autograd gives dS, dE_j,
dalpha and the router gradients independently of the C formulas. Checked: alpha, Theta,
logits, loss, dS and dE_j of every tensor, dalpha, the router gradients; train.steps full
soup steps (torch.optim.AdamW over S, the experts and the router with weight decay on
matrices/embeddings and router.w1/w2, one clip_grad_norm_ over all of them) against the
C losses and gradient norms, and the state after them (S, experts, router, as per-tensor
updates); negative controls on dE, dalpha and a loss.

With low-rank experts (soup.rank = r > 0) every matrix (2-D tensor) of the bank range
carries, per expert j, factors U_j [rows x r] and V_j [cols x r], and
Theta_W = S_W + sum_j alpha_j U_j V_j^T; vectors carry no experts. Each U_j, V_j is a
float64 leaf of its own (loaded from the C vector lowrank.bin through the manifest's
site table); checked as above, with dU and dV of every expert at every site in place
of dE, the factors' initial scale (U ~ std N(0,1), V ~ N(0,1)/sqrt(cols)), AdamW over S,
the factors (weight decay on all of them: they are matrices) and the router, the final
factors, and a negative control on dU.

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
    from torch.nn.utils.stateless import functional_call
    from torch_checks import Checks, TINY, rel_err
except ImportError as e:  # automake's "skipped"
    print(f"torch_ref: SKIP: cannot import torch/numpy ({e})")
    sys.exit(77)

TOL = 1e-4          # relative error bound for every comparison
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
    def __init__(self, dim, mult):
        super().__init__()
        self.fc1 = nn.Linear(dim, mult * dim)
        self.fc2 = nn.Linear(mult * dim, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, dim, heads, mult):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = CausalSelfAttention(dim, heads)
        self.ln2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = MLP(dim, mult)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        return x


class GPT(nn.Module):
    def __init__(self, layers, dim, heads, context, mult=4):
        """mult: model.ffn_mult, the FFN's hidden width in multiples of dim."""
        super().__init__()
        self.wte = nn.Embedding(VOCAB, dim)
        self.wpe = nn.Embedding(context, dim)
        self.blocks = nn.ModuleList([Block(dim, heads, mult) for _ in range(layers)])
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


def negative_control(checks, what, c, ref):
    """A 1% error in the largest element of C's values must exceed the tolerance."""
    bad = np.asarray(c, dtype=np.float64).ravel().copy()
    i = int(np.argmax(np.abs(bad)))
    bad[i] *= 1.01
    err = rel_err(bad, np.asarray(ref).ravel())
    checks.expect(err > TOL, f"negative control: 1% error in {what}[{i}] NOT flagged (rel. {err:.3e})")
    print(f"  negative control: 1% error in {what}[{i}] -> rel. error {err:.3e} "
          f"({'flagged' if err > TOL else 'NOT flagged'})")


def load_curve(checks, d, cfg):
    """C's AdamW run: losses, per-step (step, lr, grad norm) rows, and the step count."""
    c_losses = np.loadtxt(os.path.join(d, "losses.txt"), dtype=np.float64, ndmin=1)
    c_steps = np.loadtxt(os.path.join(d, "steps.txt"), dtype=np.float64, ndmin=2)
    steps = int(cfg["train.steps"])
    checks.expect(c_losses.size == steps and c_steps.shape[0] == steps,
                  f"losses.txt/steps.txt: {c_losses.size}/{c_steps.shape[0]} lines, expected {steps}")
    return c_losses, c_steps, steps


def compare_step(checks, t, c_losses, c_steps, loss, lr, norm):
    """Step t of an AdamW run: C's loss, learning rate and gradient norm against torch's."""
    err = abs(c_losses[t] - loss) / max(abs(loss), TINY)
    checks.note("adamw loss", err)
    checks.expect(err <= TOL, f"AdamW step {t + 1}: C loss {c_losses[t]:.9g}, torch {loss:.9g} (rel. {err:.3e})")
    if t < c_steps.shape[0]:
        c_lr, c_norm = c_steps[t, 1], c_steps[t, 2]
        lr_err = abs(c_lr - lr) / max(lr, TINY)
        norm_err = abs(c_norm - norm) / max(norm, TINY)
        checks.note("lr", lr_err)
        checks.note("grad norm", norm_err)
        checks.expect(lr_err <= 1e-6, f"AdamW step {t + 1}: C lr {c_lr:.9g}, python {lr:.9g}")
        checks.expect(norm_err <= TOL, f"AdamW step {t + 1}: C grad norm {c_norm:.9g}, torch {norm:.9g}")
    print(f"          {t + 1:>4}   {lr:.6e}  {norm:.6e}  {c_losses[t]:.9f}  {loss:.9f}  {err:.3e}")


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
            elif fields[0] == "site":   # low-rank site: NAME ROWS COLS U V
                meta.setdefault("site", []).append(
                    (fields[1], int(fields[2]), int(fields[3]), int(fields[4]), int(fields[5])))
            else:
                meta[fields[0]] = fields[1]
    return cfg, meta, tensors, rtensors


def load_f32(path, count=None):
    a = np.fromfile(path, dtype="<f4")
    if count is not None and a.size != count:
        raise SystemExit(f"torch_ref: {path}: {a.size} floats, expected {count}")
    return a


# ---------------------------------------------------------------- Soup-of-Experts


class Router(nn.Module):
    """Soup-of-Experts' router: Linear(k, H) -> ReLU -> Linear(H, n), alpha raw or softmax."""

    def __init__(self, k, hidden, n, softmax):
        super().__init__()
        self.fc1 = nn.Linear(k, hidden)
        self.fc2 = nn.Linear(hidden, n)
        self.softmax = softmax

    def forward(self, h):
        z = self.fc2(torch.relu(self.fc1(h)))
        return torch.softmax(z, dim=0) if self.softmax else z

    def named_for_ladle(self):
        return {"router.w1": (self.fc1.weight, True), "router.b1": (self.fc1.bias, False),
                "router.w2": (self.fc2.weight, True), "router.b2": (self.fc2.bias, False)}


class Soup:
    """S (one leaf per ladle tensor), experts E_j (one leaf per tensor of the bank) and the
    router, all float64; Theta(h) = S + sum_j alpha_j E_j is formed per tensor and run
    through the GPT above with functional_call (the module's own weights are NaN, so
    anything not replaced would show). Low-rank experts: E is empty and U[j], V[j] map
    each matrix of the bank to the leaves U_j [rows x r], V_j [cols x r], with
    E_j = U_j V_j^T."""

    def __init__(self, gpt, bank, n, S, E, router, U=None, V=None):
        self.gpt = gpt
        path = {id(p): name for name, p in gpt.named_parameters()}
        self.path = {name: path[id(p)] for name, (p, _) in gpt.named_for_ladle().items()}
        self.decay = {name: dec for name, (_, dec) in gpt.named_for_ladle().items()}
        with torch.no_grad():
            for p in gpt.parameters():
                p.fill_(float("nan"))
        self.bank = bank                     # names of the tensors that carry experts
        self.n = n
        self.S = S                           # name -> leaf
        self.E = E                           # [j] name -> leaf
        self.router = router
        self.U = U or []                     # [j] name -> leaf [rows x r] (low-rank)
        self.V = V or []                     # [j] name -> leaf [cols x r]

    def theta(self, alpha):
        out = {}
        for name, s in self.S.items():
            t = s
            if name in self.bank:
                for j in range(self.n):
                    if self.U:
                        t = t + alpha[j] * (self.U[j][name] @ self.V[j][name].t())
                    else:
                        t = t + alpha[j] * self.E[j][name]
            out[name] = t
        return out

    def forward(self, h, tokens, targets):
        alpha = self.router(h)
        theta = self.theta(alpha)
        logits, loss = functional_call(self.gpt, {self.path[k]: v for k, v in theta.items()}, (tokens, targets))
        return alpha, theta, logits, loss

    def parameter_groups(self, wd):
        decay, no_decay = [], []
        for name, s in self.S.items():
            (decay if self.decay[name] else no_decay).append(s)
        for j in range(len(self.E)):
            for name, e in self.E[j].items():
                (decay if self.decay[name] else no_decay).append(e)
        for factors in (self.U, self.V):   # low-rank factors: matrices, all decayed
            for j in range(len(factors)):
                decay.extend(factors[j].values())
        for p, dec in self.router.named_for_ladle().values():
            (decay if dec else no_decay).append(p)
        return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]

    def parameters(self):
        return [p for g in self.parameter_groups(0.0) for p in g["params"]]


def check_soup(d, cfg, meta, tensors, rtensors, layout, tokens, targets, checks):
    n, k = int(meta["soup"]), int(meta["k"])
    bank_lo, bank_hi = int(meta["bank_lo"]), int(meta["bank_hi"])
    n_params = int(meta["n_params"])
    L, C, NH, T = (int(cfg[key]) for key in ("model.layers", "model.dim", "model.heads", "model.context"))
    M = int(cfg.get("model.ffn_mult", 4))
    B = int(meta["B"])
    H = int(cfg["router.hidden"])
    on, kind = cfg["soup.experts_on"], cfg["router.alpha"]
    checks.expect(cfg["soup.experts"] == n, f"manifest: soup {n} but soup.experts = {cfg['soup.experts']}")
    checks.expect(on in ("all", "blocks") and kind in ("raw", "softmax"), f"soup.experts_on {on}, router.alpha {kind}")
    print(f"  soup: {n} experts on {on} tensors, bank [{bank_lo}, {bank_hi}), k={k}, router H={H}, alpha {kind}")

    # ---- which tensors carry experts, from the method's definition (not from the C range):
    # all of them, or those of the transformer blocks h.<i>.*; they must tile [bank_lo, bank_hi)
    bank = [name for name, *_ in tensors if on == "all" or name.startswith("h.")]
    lo = min(layout[name][0] for name in bank)
    hi = max(layout[name][0] + layout[name][1] for name in bank)
    checks.expect(sum(layout[name][1] for name in bank) == hi - lo, "bank tensors are not contiguous")
    checks.expect((lo, hi) == (bank_lo, bank_hi), f"bank range: C [{bank_lo}, {bank_hi}), expected [{lo}, {hi})")
    if on == "all":
        checks.expect((lo, hi) == (0, n_params), "experts_on = all does not cover every parameter")

    # ---- low-rank experts: the matrices (2-D tensors, by torch's shapes) of the bank carry
    # U_j V_j^T; the C site table must list exactly those, with their shapes, and its U and
    # V blocks must tile the low-rank vector
    r = int(cfg.get("soup.rank", 0))
    proto_shapes = {name: tuple(p.shape) for name, (p, _) in GPT(L, C, NH, T, M).named_for_ladle().items()}
    sites, q = {}, 0
    if r > 0:
        q = int(meta.get("lowrank_size", -1))
        nr = n * r
        table = meta.get("site", [])
        matrices = [name for name in bank if len(proto_shapes[name]) == 2]
        print(f"  low-rank experts: rank {r} on {len(matrices)} matrices, {q} factor parameters")
        checks.expect(int(meta.get("sites", -1)) == len(table), f"manifest: sites {meta.get('sites')}, "
                      f"{len(table)} site lines")
        checks.expect([t[0] for t in table] == matrices,
                      f"low-rank sites: C {[t[0] for t in table]}, expected the bank's matrices {matrices}")
        blocks = []
        for name, rows, cols, u, v in table:
            checks.expect(proto_shapes.get(name) == (rows, cols), f"site {name}: C shape {rows}x{cols}, "
                          f"torch {proto_shapes.get(name)}")
            sites[name] = (rows, cols, u, v)
            blocks += [(u, rows * nr, f"{name}.U"), (v, cols * nr, f"{name}.V")]
        covered = 0
        for off, size, what in sorted(blocks):
            checks.expect(off == covered, f"low-rank factor {what}: offset {off}, expected {covered}")
            covered = off + size
        checks.expect(covered == q, f"low-rank factors cover {covered} of lowrank_size {q}")
        carriers = [name for name in matrices if name in sites]
    else:
        checks.expect("site" not in meta and "lowrank_size" not in meta, "dense soup with a low-rank site table")
        carriers = bank
    pb = 0 if r > 0 else bank_hi - bank_lo   # the dense bank: none with low-rank experts

    S_flat = load_f32(os.path.join(d, "params.bin"), n_params)
    c_theta = load_f32(os.path.join(d, "theta.bin"), n_params)
    c_grads = load_f32(os.path.join(d, "grads.bin"), n_params)
    E_flat = load_f32(os.path.join(d, "experts.bin"), n * pb).reshape(n, pb)
    c_egrads = load_f32(os.path.join(d, "expert_grads.bin"), n * pb).reshape(n, pb)
    n_router = int(meta["router_params"])
    R_flat = load_f32(os.path.join(d, "router.bin"), n_router)
    c_rgrads = load_f32(os.path.join(d, "router_grads.bin"), n_router)
    if r > 0:
        UV_flat = load_f32(os.path.join(d, "lowrank.bin"), q)
        c_lrgrads = load_f32(os.path.join(d, "lowrank_grads.bin"), q)

        def factor(flat, name, f, j):
            """expert j's factor f ("U" or "V") of site name: [rows or cols, r], from the
            row-major [rows or cols, n r] block, columns j r .. j r + r - 1"""
            rows, cols, u, v = sites[name]
            m = rows if f == "U" else cols
            off = u if f == "U" else v
            return flat[off:off + m * n * r].reshape(m, n * r)[:, j * r:(j + 1) * r]

        # the initial scale: U = std N(0,1), V = N(0,1) / sqrt(cols), pooled over sites and
        # experts (thousands of draws: a few percent is many standard errors), and no two
        # experts' or factors' draws alike
        std = cfg["soup.expert_init_std"]
        zu = np.concatenate([factor(UV_flat, name, "U", j).ravel() / std for name in sites for j in range(n)])
        zv = np.concatenate([factor(UV_flat, name, "V", j).ravel() * math.sqrt(sites[name][1])
                             for name in sites for j in range(n)])
        for what, z in (("U / std", zu), ("V * sqrt(cols)", zv)):
            ok = abs(z.mean()) < 0.1 and abs(z.std() - 1) < 0.1
            checks.expect(ok, f"initial {what}: mean {z.mean():.3f}, std {z.std():.3f} over {z.size} "
                          "(expected N(0,1))")
            print(f"  initial {what:<15} mean {z.mean():+.3f} std {z.std():.3f} over {z.size} draws")
        checks.expect(np.unique(UV_flat).size > 0.99 * q, "initial low-rank factors repeat their draws")
        # independent draws for every factor: U and V of a site, or two sites, drawn from one
        # stream would be scaled copies of each other over their common prefix
        z = [(f"{name}.{f}", (UV_flat[o:o + m * n * r] / (std if f == "U" else 1 / math.sqrt(cols))).astype(np.float64))
             for name, (rows, cols, u, v) in sites.items() for f, o, m in (("U", u, rows), ("V", v, cols))]
        worst_corr, pair = 0.0, ""
        for a in range(len(z)):
            for b in range(a + 1, len(z)):
                m_ = min(z[a][1].size, z[b][1].size)
                c = abs(float(np.corrcoef(z[a][1][:m_], z[b][1][:m_])[0, 1]))
                if c > worst_corr:
                    worst_corr, pair = c, f"{z[a][0]} / {z[b][0]}"
        checks.expect(worst_corr < 0.5, f"initial factors {pair} are correlated ({worst_corr:.3f}): not independent draws")
        print(f"  initial factors: largest correlation between two factors {worst_corr:.3f} ({pair})")
    h_np = load_f32(os.path.join(d, "h.bin"), k)
    c_alpha = load_f32(os.path.join(d, "alpha.bin"), n)
    c_dalpha = load_f32(os.path.join(d, "dalpha.bin"), n)
    c_logits = load_f32(os.path.join(d, "logits.bin"), B * T * VOCAB).reshape(B, T, VOCAB)
    c_loss = float(meta["loss"])
    checks.expect(abs(h_np.sum() - 1) < 1e-6 and (h_np >= 0).all() and np.ptp(h_np) > 0,
                  f"h {h_np} is not a non-uniform point of the simplex")
    h = torch.from_numpy(h_np.astype(np.float64))

    # ---- the router's table
    rlayout = {name: (off, rows * cols) for name, off, rows, cols in rtensors}
    proto = Router(k, H, n, kind == "softmax").double()
    rnamed = proto.named_for_ladle()
    checks.expect(sorted(rlayout) == sorted(rnamed), f"router tensors: C {sorted(rlayout)}")
    covered = 0
    for name, off, rows, cols in sorted(rtensors, key=lambda t: t[1]):
        checks.expect(off == covered, f"router tensor {name}: offset {off}, expected {covered}")
        covered = off + rows * cols
        p = rnamed[name][0]
        shape = (rows, cols) if p.dim() == 2 else (rows,)
        checks.expect(tuple(p.shape) == shape, f"router tensor {name}: C shape {rows}x{cols}, torch {tuple(p.shape)}")
    checks.expect(covered == n_router, f"router tensors cover {covered} of {n_router}")

    def build():
        gpt = GPT(L, C, NH, T, M).double()
        shapes = {name: tuple(p.shape) for name, (p, _) in gpt.named_for_ladle().items()}

        def leaf(flat, name):
            return torch.from_numpy(flat.astype(np.float64)).view(shapes[name]).clone().requires_grad_()

        S = {name: leaf(S_flat[off:off + size], name) for name, (off, size) in layout.items()}
        router = Router(k, H, n, kind == "softmax").double()
        with torch.no_grad():
            for name, (p, _) in router.named_for_ladle().items():
                off, size = rlayout[name]
                p.copy_(torch.from_numpy(R_flat[off:off + size].astype(np.float64)).view_as(p))
        if r > 0:
            def fleaf(name, f, j):
                return torch.from_numpy(factor(UV_flat, name, f, j).astype(np.float64)).clone().requires_grad_()
            U = [{name: fleaf(name, "U", j) for name in carriers} for j in range(n)]
            V = [{name: fleaf(name, "V", j) for name in carriers} for j in range(n)]
            return Soup(gpt, set(carriers), n, S, [], router, U, V)
        E = [{name: leaf(E_flat[j, layout[name][0] - bank_lo:layout[name][0] - bank_lo + layout[name][1]], name)
              for name in bank} for j in range(n)]
        return Soup(gpt, set(bank), n, S, E, router)

    def report(kind_, err, what):
        checks.note(kind_, err)
        checks.expect(err <= TOL, f"{what}: rel. error {err:.3e}")

    # ---- one forward + backward, float64
    soup = build()
    alpha, theta, logits, loss = soup.forward(h, tokens, targets)
    alpha.retain_grad()
    loss.backward()
    pre = soup.router.fc1(h).detach().numpy()
    active = int((pre > 0).sum())
    checks.expect(0 < active < H, f"router: {active} of {H} ReLU units active (the mask is not exercised)")
    print(f"  router: {active} of {H} hidden units active; alpha {np.array2string(alpha.detach().numpy(), precision=4)}")

    err = rel_err(c_alpha, alpha.detach().numpy())
    report("alpha", err, "alpha")
    print(f"  alpha                 rel. error {err:.3e}")
    ref_theta = np.zeros(n_params)
    for name, t in theta.items():
        off, size = layout[name]
        ref_theta[off:off + size] = t.detach().numpy().ravel()
    err = rel_err(c_theta, ref_theta)
    report("theta", err, "Theta = S + sum alpha_j U_j V_j^T" if r > 0 else "Theta = S + sum alpha_j E_j")
    # the C merge must move every bank tensor, and leave everything else exactly S
    for name, (off, size) in layout.items():
        moved = np.linalg.norm(c_theta[off:off + size].astype(np.float64) - S_flat[off:off + size])
        checks.expect((moved > 0) == (name in soup.bank), f"C Theta - S on {name}: norm {moved:.3e}")
    print(f"  Theta                 rel. error {err:.3e}")
    err = rel_err(c_logits, logits.detach().numpy())
    report("logits", err, "logits")
    print(f"  logits                rel. error {err:.3e}")
    err = abs(c_loss - loss.item()) / max(abs(loss.item()), TINY)
    report("loss", err, f"loss: C {c_loss:.9g}, torch {loss.item():.9g}")
    print(f"  loss                  rel. error {err:.3e}   (C {c_loss:.9g}, torch {loss.item():.9g})")

    worst = {}

    def grad_check(kind_, name, c, ref):
        err = rel_err(c, ref)
        report(kind_, err, f"{kind_} {name}")
        checks.expect(np.linalg.norm(ref) > 0, f"{kind_} {name}: reference gradient is zero (test not generic)")
        if err >= worst.get(kind_, (-1.0, ""))[0]:
            worst[kind_] = (err, name)
        return err

    ref_dS = {}
    for name, (off, size) in layout.items():
        ref_dS[name] = soup.S[name].grad.numpy().ravel()
        grad_check("dS", name, c_grads[off:off + size], ref_dS[name])
    ref_dE = []
    for j in range(n if r == 0 else 0):
        ref_dE.append({})
        for name in bank:
            off, size = layout[name]
            ref_dE[j][name] = soup.E[j][name].grad.numpy().ravel()
            grad_check("dE", f"{j}:{name}", c_egrads[j, off - bank_lo:off - bank_lo + size], ref_dE[j][name])
    ref_dU, ref_dV = [], []
    for j in range(n if r > 0 else 0):
        ref_dU.append({})
        ref_dV.append({})
        for name in carriers:
            ref_dU[j][name] = soup.U[j][name].grad.numpy()
            ref_dV[j][name] = soup.V[j][name].grad.numpy()
            grad_check("dU", f"{j}:{name}", factor(c_lrgrads, name, "U", j), ref_dU[j][name])
            grad_check("dV", f"{j}:{name}", factor(c_lrgrads, name, "V", j), ref_dV[j][name])
    ref_dalpha = alpha.grad.numpy()
    grad_check("dalpha", "", c_dalpha, ref_dalpha)
    ref_dR = {}
    for name, (p, _) in soup.router.named_for_ladle().items():
        off, size = rlayout[name]
        ref_dR[name] = p.grad.numpy().ravel()
        grad_check("router grad", name, c_rgrads[off:off + size], ref_dR[name])
    print(f"  dalpha {np.array2string(ref_dalpha, precision=4)}")
    for kind_, (err, name) in worst.items():
        print(f"  {kind_:<12} worst rel. error {err:.3e} ({name})")

    # ---- negative controls: 1% in one element of one expert gradient (dense: dE; low-rank:
    # dU and dV, of the largest site, the last expert), of dalpha
    j = n - 1
    if r > 0:
        victim = max(carriers, key=lambda name: layout[name][1])
        controls = [(f"d{f}_{j} {victim}", factor(c_lrgrads, victim, f, j), ref[j][victim])
                    for f, ref in (("U", ref_dU), ("V", ref_dV))]
    else:
        victim = max(bank, key=lambda name: layout[name][1])
        off, size = layout[victim]
        controls = [(f"dE_{j} {victim}", c_egrads[j, off - bank_lo:off - bank_lo + size], ref_dE[j][victim])]
    for what, c, ref in controls:
        negative_control(checks, what, c, ref)
    negative_control(checks, "dalpha", c_dalpha, ref_dalpha)

    # ---- train.steps soup steps with AdamW over S, every expert (dense, or the factors of the
    # low-rank ones) and the router, clipped
    # by one global norm over all of them, on the same batch and the same h
    c_losses, c_steps, steps = load_curve(checks, d, cfg)
    soup = build()
    params = soup.parameters()
    expected = len(layout) + (2 * n * len(carriers) if r > 0 else n * len(bank)) + 4
    checks.expect(len(params) == expected, f"soup optimizer parameter count {len(params)}, expected {expected}")
    opt = torch.optim.AdamW(soup.parameter_groups(cfg["train.weight_decay"]), lr=cfg["train.lr"],
                            betas=(cfg["train.beta1"], cfg["train.beta2"]), eps=cfg["train.eps"])
    clip = cfg["train.clip"]
    ref_losses, clipped = [], 0
    print("  AdamW:  step   lr            grad norm     C loss        torch loss    rel. error")
    for t in range(min(steps, c_losses.size)):
        lr = lr_at(cfg, t)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=False)
        _, _, _, loss = soup.forward(h, tokens, targets)
        loss.backward()
        if clip > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
            clipped += norm > clip
        else:
            norm = float(torch.sqrt(sum((p.grad ** 2).sum() for p in params)))
        opt.step()
        ref_losses.append(loss.item())
        compare_step(checks, t, c_losses, c_steps, loss.item(), lr, norm)
    print(f"  clipping active in {clipped} of {steps} steps; loss {ref_losses[0]:.4f} -> {ref_losses[-1]:.4f}")

    # ---- the state after those steps, tensor by tensor, as the update (final - initial):
    # the losses alone barely see weight decay (lr * wd = 1e-3 per step)
    f_S = load_f32(os.path.join(d, "params_final.bin"), n_params)
    f_E = load_f32(os.path.join(d, "experts_final.bin"), n * pb).reshape(n, pb)
    f_R = load_f32(os.path.join(d, "router_final.bin"), n_router)
    upd = {}

    def update_check(kind_, name, c_final, c_init, ref_final):
        c_d = c_final.astype(np.float64) - c_init
        r_d = ref_final.detach().numpy().ravel() - c_init
        if name.endswith("attn.qkv.b"):
            # the key bias adds q.b_k to a whole row of scores, which the softmax ignores:
            # its gradient is exactly zero, float32 rounding is all the C side has there,
            # and Adam turns that into +-lr steps of arbitrary sign. Compare q and v only.
            keep = np.r_[0:C, 2 * C:3 * C]
            c_d, r_d = c_d[keep], r_d[keep]
        err = rel_err(c_d, r_d)
        report(kind_, err, f"{kind_} {name}")
        if err >= upd.get(kind_, (-1.0, ""))[0]:
            upd[kind_] = (err, name)

    for name, (off, size) in layout.items():
        update_check("S update", name, f_S[off:off + size], S_flat[off:off + size], soup.S[name])
    for j in range(n if r == 0 else 0):
        for name in bank:
            o = layout[name][0] - bank_lo
            sl = slice(o, o + layout[name][1])
            update_check("E update", f"{j}:{name}", f_E[j, sl], E_flat[j, sl], soup.E[j][name])
    if r > 0:
        f_UV = load_f32(os.path.join(d, "lowrank_final.bin"), q)
        for j in range(n):
            for name in carriers:
                for f, leaves in (("U", soup.U), ("V", soup.V)):
                    update_check(f"{f} update", f"{j}:{name}", factor(f_UV, name, f, j).ravel(),
                                 factor(UV_flat, name, f, j).astype(np.float64).ravel(), leaves[j][name])
    for name, (p, _) in soup.router.named_for_ladle().items():
        off, size = rlayout[name]
        update_check("router update", name, f_R[off:off + size], R_flat[off:off + size], p)
    for kind_, (err, name) in upd.items():
        print(f"  {kind_:<13} worst rel. error {err:.3e} ({name})")
    k_ = len(ref_losses) // 2
    err = abs(c_losses[k_] * 1.01 - ref_losses[k_]) / max(abs(ref_losses[k_]), TINY)
    checks.expect(err > TOL, f"negative control: 1% error in loss {k_ + 1} NOT flagged (rel. {err:.3e})")


def main():
    if len(sys.argv) != 2:
        print("usage: torch_ref.py OUTDIR", file=sys.stderr)
        return 2
    d = sys.argv[1]
    cfg, meta, tensors, rtensors = read_manifest(os.path.join(d, "manifest.txt"))
    L, C, NH, T = (int(cfg[k]) for k in ("model.layers", "model.dim", "model.heads", "model.context"))
    M = int(cfg.get("model.ffn_mult", 4))
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
    model = GPT(L, C, NH, T, M)
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
    negative_control(checks, victim, c_grads[off:off + size], ref_grads[victim])

    # ---- AdamW with clipping and the lr schedule, on the same batch
    c_losses, c_steps, steps = load_curve(checks, d, cfg)
    model = GPT(L, C, NH, T, M).double()
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
        compare_step(checks, t, c_losses, c_steps, loss.item(), lr, norm)
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
