#!/usr/bin/env python3
"""Scaling report from ladle runs: DIR/scaling.csv, DIR/scaling.md, DIR/scaling.png.

    scaling_report.py --mode strong|weak --out DIR [--warmup W] [--label TEXT] P=BATCH=METRICS.jsonl ...

Each P=BATCH=METRICS argument is the metrics.jsonl of a run on P ranks with global batch
BATCH (jobs/scaling.sh passes them). Per run: the medians, over the steps after the first W,
of tokens/s, the step time (ms) and its parts (ms_merge, ms_gather, ms_compute, ms_reduce,
ms_optim). The smallest P is the reference P0: speedup = tokens/s(P) / tokens/s(P0),
parallel efficiency = speedup * P0 / P.
"""
import argparse
import csv
import json
import os
import statistics
import sys

PARTS = ["ms_merge", "ms_gather", "ms_compute", "ms_reduce", "ms_optim"]


def fail(msg):
    sys.stderr.write("scaling_report.py: %s\n" % msg)
    sys.exit(1)


def read_steps(path):
    """The per-step records of a metrics.jsonl (those with tokens_per_s), by step."""
    steps = {}
    try:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as e:
                    fail("%s:%d: not JSON (%s)" % (path, n, e))
                if "tokens_per_s" in rec:
                    steps[rec["step"]] = rec
    except OSError as e:
        fail("cannot read %s: %s" % (path, e.strerror))
    return steps


def summarize(path, warmup):
    steps = read_steps(path)
    kept = [steps[s] for s in sorted(steps) if s > warmup]
    if not kept:
        fail("%s: no step after the warm-up of %d steps (%d steps logged)" % (path, warmup, len(steps)))
    row = {"steps": len(steps), "measured_steps": len(kept)}
    for key in ["tokens_per_s", "ms"] + PARTS:
        try:
            row[key] = statistics.median(float(r[key]) for r in kept)
        except KeyError:
            fail("%s: step records lack '%s'" % (path, key))
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["strong", "weak"], required=True)
    ap.add_argument("--out", required=True, help="directory for scaling.csv, scaling.md, scaling.png")
    ap.add_argument("--warmup", type=int, default=5, help="leading steps left out of the medians")
    ap.add_argument("--label", default="", help="a line describing the runs (Markdown and plot)")
    ap.add_argument("runs", nargs="+", metavar="P=BATCH=METRICS.jsonl")
    a = ap.parse_args()

    rows = []
    for spec in a.runs:
        parts = spec.split("=", 2)
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit() or int(parts[0]) < 1:
            fail("'%s': expected P=BATCH=METRICS.jsonl with P >= 1 ranks and BATCH sequences" % spec)
        row = summarize(parts[2], a.warmup)
        row.update(ranks=int(parts[0]), batch=int(parts[1]), metrics=parts[2])
        rows.append(row)
    rows.sort(key=lambda r: r["ranks"])
    if len({r["ranks"] for r in rows}) != len(rows):
        fail("a rank count is given twice")
    ref = rows[0]
    for r in rows:
        r["speedup"] = r["tokens_per_s"] / ref["tokens_per_s"]
        r["efficiency"] = r["speedup"] * ref["ranks"] / r["ranks"]
    os.makedirs(a.out, exist_ok=True)

    cols = ["mode", "ranks", "batch", "steps", "measured_steps", "tokens_per_s", "ms_step"] + PARTS + \
           ["speedup", "efficiency"]
    with open(os.path.join(a.out, "scaling.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([a.mode, r["ranks"], r["batch"], r["steps"], r["measured_steps"], "%.1f" % r["tokens_per_s"],
                        "%.3f" % r["ms"]] + ["%.3f" % r[k] for k in PARTS] +
                       ["%.4f" % r["speedup"], "%.4f" % r["efficiency"]])

    with open(os.path.join(a.out, "scaling.md"), "w") as f:
        f.write("# %s scaling\n\n" % a.mode.capitalize())
        if a.label:
            f.write("%s\n\n" % a.label)
        f.write("Medians over steps %d..%d of each run; speedup = tokens/s over the %d-rank run's, "
                "efficiency = speedup x %d / ranks.\n\n" % (a.warmup + 1, max(r["steps"] for r in rows),
                                                             ref["ranks"], ref["ranks"]))
        f.write("| ranks | batch | tokens/s | step ms | merge ms | gather ms | compute ms | reduce ms | optim ms "
                "| speedup | efficiency |\n")
        f.write("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
        for r in rows:
            f.write("| %d | %d | %.0f | %.2f | %s | %.2f | %.1f%% |\n" % (
                r["ranks"], r["batch"], r["tokens_per_s"], r["ms"], " | ".join("%.2f" % r[k] for k in PARTS),
                r["speedup"], 100 * r["efficiency"]))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ranks = [r["ranks"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    ax1.plot(ranks, [r["efficiency"] for r in rows], "o-", label="ladle")
    ax1.axhline(1.0, color="gray", linestyle="--", linewidth=1, label="ideal")
    ax1.set_xlabel("ranks")
    ax1.set_ylabel("parallel efficiency")
    ax1.set_ylim(0, max(1.1, max(r["efficiency"] for r in rows) * 1.1))
    ax1.set_title("%s scaling: efficiency" % a.mode)
    ax1.legend()
    ax2.plot(ranks, [r["speedup"] for r in rows], "o-", label="ladle")
    ax2.plot(ranks, [p / ref["ranks"] for p in ranks], "--", color="gray", linewidth=1, label="ideal")
    ax2.set_xlabel("ranks")
    ax2.set_ylabel("speedup (tokens/s)")
    ax2.set_title("%s scaling: speedup" % a.mode)
    ax2.legend()
    for ax in (ax1, ax2):
        ax.set_xticks(ranks)
        ax.grid(alpha=0.3)
    if a.label:
        fig.suptitle(a.label, fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "scaling.png"), dpi=100)
    print("wrote %s/scaling.csv, scaling.md, scaling.png" % a.out)
    with open(os.path.join(a.out, "scaling.md")) as f:
        sys.stdout.write(f.read())


if __name__ == "__main__":
    main()
