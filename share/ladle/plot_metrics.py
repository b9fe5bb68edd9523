#!/usr/bin/env python3
"""Training curves from a run's metrics.jsonl (FORMATS.md): the training loss per step,
and each domain's validation loss per evaluation, with the soup's specialist loss
(Theta(one-hot h) of the domain) dashed in the same colour when the run logged it.

    python3 plot_metrics.py run/metrics.jsonl -o curves.png
    python3 plot_metrics.py run -o curves.png           # a run directory works too

Losses are in nats per byte, as logged. Needs matplotlib.
"""
import argparse
import json
import os
import sys


def read_metrics(path):
    """(steps, losses) of the training lines and {domain: {"step", "valid_loss",
    "specialist_loss"}} of the evaluation lines. A line that does not parse (the last one
    of a run killed mid-write) is skipped with a warning."""
    steps, losses, evals = [], [], {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                m = json.loads(line)
            except ValueError:
                print("plot_metrics.py: %s:%d: not JSON, skipped" % (path, number), file=sys.stderr)
                continue
            if "domain" in m and "valid_loss" in m:
                e = evals.setdefault(m["domain"], {"step": [], "valid_loss": [], "specialist_loss": []})
                e["step"].append(m["step"])
                e["valid_loss"].append(m["valid_loss"])
                e["specialist_loss"].append(m.get("specialist_loss"))
            elif "loss" in m and "step" in m:
                steps.append(m["step"])
                losses.append(m["loss"])
    return steps, losses, evals


def plot(path, steps, losses, evals, out):
    import matplotlib
    matplotlib.use("Agg")   # files only, no display needed
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(steps, losses, lw=1)
    left.set_xlabel("step")
    left.set_ylabel("training loss (nats/byte)")
    left.set_title("training")
    left.grid(alpha=0.3)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (domain, e) in enumerate(sorted(evals.items())):
        color = colors[i % len(colors)]
        right.plot(e["step"], e["valid_loss"], color=color, marker="o", ms=3, label=domain)
        spec = [(s, v) for s, v in zip(e["step"], e["specialist_loss"]) if v is not None]
        if spec:
            right.plot(*zip(*spec), color=color, ls="--", marker="x", ms=3, label=domain + " (specialist)")
    if evals:
        right.legend(fontsize=7, ncol=2 if len(evals) > 6 else 1)
    else:
        right.text(0.5, 0.5, "no evaluations logged\n(eval.every = 0)", ha="center", va="center",
                   transform=right.transAxes)
    right.set_xlabel("step")
    right.set_ylabel("validation loss (nats/byte)")
    # a soup logs the generic model (uniform h) as valid_loss, and each domain's specialist
    right.set_title("validation per domain" + (": generic (solid), specialist (dashed)" if any(
        v is not None for e in evals.values() for v in e["specialist_loss"]) else ""))
    right.grid(alpha=0.3)
    fig.suptitle(path, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description="Plot training and per-domain validation loss from metrics.jsonl.")
    p.add_argument("metrics", help="RUN_DIR/metrics.jsonl (or RUN_DIR)")
    p.add_argument("-o", "--output", default="curves.png", help="PNG to write (default curves.png)")
    args = p.parse_args(argv)
    path = os.path.join(args.metrics, "metrics.jsonl") if os.path.isdir(args.metrics) else args.metrics
    try:
        steps, losses, evals = read_metrics(path)
    except OSError as e:
        sys.exit("plot_metrics.py: %s" % e)
    if not steps and not evals:
        sys.exit("plot_metrics.py: %s holds no training or evaluation lines" % path)
    plot(path, steps, losses, evals, args.output)
    print("wrote %s (%d steps, %d domains evaluated)" % (args.output, len(steps), len(evals)))


if __name__ == "__main__":
    main()
