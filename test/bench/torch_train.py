#!/usr/bin/env python3
"""torch_train.py: PyTorch (CPU, float32) training speed of ladle's model, for comparison.

    /usr/bin/python3 torch_train.py --threads N [--layers 4 --dim 256 --heads 4
        --context 256 --batch 16 --steps 20 --warmup 3]

The model is ladle's byte-level GPT: vocab 256, learned positions, pre-LayerNorm blocks
(biases everywhere except the logits), causal self-attention written out as
matmul-softmax-matmul over the full T x T scores (as ladle computes it), GELU (tanh), tied
input/output embeddings, AdamW with gradient clipping at 1.0. Batches are random bytes.

Threads: torch on this machine calls BLIS for its GEMMs, and BLIS_NUM_THREADS sets their
thread count; torch.set_num_threads sets the rest. Both are set from --threads (the BLIS
variables before torch is imported, since BLIS reads them once).

Prints per-step times on stderr and one line on stdout:
    torch_tokens_per_s X     (median over the timed steps)
"""
import argparse
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    args = ap.parse_args()
    if args.threads < 1 or args.dim % args.heads != 0:
        ap.error("need --threads >= 1 and heads dividing dim")

    for var in ("BLIS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    V, L, C, NH, T, B = 256, args.layers, args.dim, args.heads, args.context, args.batch

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm(C)
            self.qkv = nn.Linear(C, 3 * C)
            self.proj = nn.Linear(C, C)
            self.ln2 = nn.LayerNorm(C)
            self.fc1 = nn.Linear(C, 4 * C)
            self.fc2 = nn.Linear(4 * C, C)
            self.register_buffer("mask", torch.ones(T, T, dtype=torch.bool).triu(1), persistent=False)

        def attention(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(x).split(C, dim=2)
            q = q.view(b, t, NH, C // NH).transpose(1, 2)
            k = k.view(b, t, NH, C // NH).transpose(1, 2)
            v = v.view(b, t, NH, C // NH).transpose(1, 2)
            att = (q @ k.transpose(-2, -1)) * (1.0 / (C // NH) ** 0.5)
            att = att.masked_fill(self.mask[:t, :t], float("-inf"))
            att = F.softmax(att, dim=-1)
            y = (att @ v).transpose(1, 2).contiguous().view(b, t, C)
            return self.proj(y)

        def forward(self, x):
            x = x + self.attention(self.ln1(x))
            return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(V, C)
            self.wpe = nn.Embedding(T, C)
            self.blocks = nn.ModuleList(Block() for _ in range(L))
            self.lnf = nn.LayerNorm(C)
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    nn.init.normal_(p, std=0.02)

        def forward(self, idx, targets):
            pos = torch.arange(idx.shape[1])
            x = self.wte(idx) + self.wpe(pos)
            for blk in self.blocks:
                x = blk(x)
            logits = self.lnf(x) @ self.wte.weight.t()   # tied embeddings
            return F.cross_entropy(logits.view(-1, V), targets.reshape(-1))

    model = GPT()
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}: {n_params} parameters, {L} layers dim {C} heads {NH} context {T} "
          f"batch {B}, {args.threads} thread(s), torch threads {torch.get_num_threads()}", file=sys.stderr)

    times = []
    for step in range(args.warmup + args.steps):
        data = torch.randint(0, V, (B, T + 1))
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(data[:, :-1], data[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dt = time.perf_counter() - t0
        if step >= args.warmup:
            times.append(dt)
        print(f"step {step + 1} loss {loss.item():.4f} {1e3 * dt:.1f} ms", file=sys.stderr)
    times.sort()
    n = len(times)
    median = times[n // 2] if n % 2 else 0.5 * (times[n // 2 - 1] + times[n // 2])
    print(f"torch_tokens_per_s {B * T / median:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
