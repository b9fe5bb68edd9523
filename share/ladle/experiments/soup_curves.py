#!/usr/bin/env python3
"""soup_curves.py OUTDIR BASELINE OUT.png: the paper's Figure 4 from a CURVES=1 run of soup.sh.

Left: the average specialist loss (held-in and held-out sources) against training tokens; right:
the generic loss (natural mixture). One line per row, the mean over its seeds. A soup's point is
its specialists; a dense row's is its own loss on the same sources (the baseline column of any
soup's table at that step, which is the dense BASELINE row; other dense rows show only their
generic loss). Needs matplotlib (python3-matplotlib)."""
import glob
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from soup_summary import load  # noqa: E402


def step_of(path, final_step):
    m = re.search(r"-at(\d+)\.json$", path)
    return int(m.group(1)) if m else final_step


def tokens_per_step(row_dir):
    """batch x context from the row's resolved configuration (train.log)"""
    keys = {}
    try:
        with open(os.path.join(row_dir, "train.log")) as f:
            for line in f:
                m = re.match(r"^(train\.batch|model\.context|train\.steps) = (\d+)", line)
                if m:
                    keys[m.group(1)] = int(m.group(2))
    except OSError:
        return None, None
    if len(keys) < 3:
        return None, None
    return keys["train.batch"] * keys["model.context"], keys["train.steps"]


def main():
    out, baseline, png = sys.argv[1], sys.argv[2], sys.argv[3]
    special, generic = {}, {}   # row -> step -> [values over seeds]
    for d in sorted(glob.glob(os.path.join(out, "*-s*"))):
        name, _, seed = os.path.basename(d).rpartition("-s")
        if not seed.isdigit() or name.startswith("dense-spe-"):
            continue
        per_step, steps = tokens_per_step(d)
        if per_step is None:
            continue
        for g in glob.glob(os.path.join(d, "generic*.json")):
            t = load(g)
            if t and "natural_bpb" in t:
                generic.setdefault(name, {}).setdefault(step_of(g, steps) * per_step, []).append(t["natural_bpb"])
        at_steps = {}
        for part in ("held-in", "held-out"):
            for p in glob.glob(os.path.join(d, part + "*.json")):
                t = load(p)
                if t:
                    at_steps.setdefault(step_of(p, steps), []).extend(r for r in t["rows"] if r.get("windows"))
        for step, rows in at_steps.items():
            x = step * per_step
            special.setdefault(name, {}).setdefault(x, []).append(sum(r["specialist_bpb"] for r in rows) / len(rows))
            if "baseline_bpb" in rows[0] and seed == "1" and not name.startswith("dense"):
                # the baseline's loss on the same sources, once per step (seed 1's table)
                special.setdefault(baseline, {}).setdefault(x, []).append(
                    sum(r["baseline_bpb"] for r in rows) / len(rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, data, title in ((axes[0], special, "average specialist loss (held-in and held-out sources)"),
                            (axes[1], generic, "generic loss (natural mixture)")):
        for name in sorted(data):
            xs = sorted(data[name])
            ys = [sum(data[name][x]) / len(data[name][x]) for x in xs]
            ax.plot(xs, ys, marker="o", label=name)
        ax.set_xlabel("training tokens (bytes)")
        ax.set_ylabel("bits per byte")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print("wrote", png)


if __name__ == "__main__":
    main()
