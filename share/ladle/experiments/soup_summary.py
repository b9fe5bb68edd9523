#!/usr/bin/env python3
"""soup_summary.py OUTDIR [BASELINE [SPECIALIST_ROW]]: the Markdown summary of soup.sh's rows (standard library).

One line per row: seeds, the natural-mixture (generic) loss and its change against BASELINE
(default dense) of the same seed, the specialists' mean delta against BASELINE on the held-in
and held-out sources with the share of domains where the specialist is better, and the share
of clusters whose one-hot specialist beats the soup at uniform h. Means over seeds, with the
spread (max - min) where there is more than one seed. Then, per soup row, the per-domain
specialist deltas (mean over seeds)."""
import glob
import json
import os
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def spread(values):
    if not values:
        return "-"
    mean = sum(values) / len(values)
    return f"{mean:+.4f}" + (f" ({max(values) - min(values):.4f})" if len(values) > 1 else "")


def plain(values, fmt="{:.4f}"):
    if not values:
        return "-"
    mean = sum(values) / len(values)
    return fmt.format(mean) + (f" ({max(values) - min(values):.4f})" if len(values) > 1 else "")


def table_stats(table, ref):
    """mean of specialist - ref over domains with windows, and the share where it is < 0"""
    deltas = {r["domain"]: r["specialist_bpb"] - r[ref] for r in table["rows"] if r.get("windows") and ref in r}
    if not deltas:
        return None, None, {}
    mean = sum(deltas.values()) / len(deltas)
    wins = sum(d < 0 for d in deltas.values()) / len(deltas)
    return mean, wins, deltas


def pct(values):
    return plain([100 * x for x in values], "{:.0f} %")


def held_out_row(out, row, src):
    """the held-out table row of source src of soup row `row`, seed 1"""
    t = load(os.path.join(out, row + "-s1", "held-out.json"))
    return next((r for r in (t or {}).get("rows", []) if r["domain"] == src), None)


def domain_bpb(table, src):
    return next((r["valid_bpb"] for r in (table or {}).get("domains", []) if r["domain"] == src), None)


def stages(out, specialist_row):
    """dense-spe and finetune: one line per held-out source"""
    lines = []
    for d in sorted(glob.glob(os.path.join(out, "dense-spe-*-s1"))):
        src = os.path.basename(d)[len("dense-spe-"):-len("-s1")]
        r = held_out_row(out, specialist_row, src)
        spe = domain_bpb(load(os.path.join(d, "held-out.json")), src)
        if r and spe is not None:
            lines.append((src, r["baseline_bpb"], spe, r["specialist_bpb"]))
    if lines:
        print(f"\nOne dense model per held-out source trained on mix(h_spe), against the generic dense model and "
              f"{specialist_row}'s specialist (seed 1, bits per byte on the source's valid split)\n")
        print("| source | generic dense | dense on mix(h_spe) | soup specialist |")
        print("|---|---|---|---|")
        for src, g, spe, soup in lines:
            print(f"| {src} | {g:.4f} | {spe:.4f} | {soup:.4f} |")
    lines = []
    for d in sorted(glob.glob(os.path.join(out, "finetune-*"))):
        src = os.path.basename(d)[len("finetune-"):]
        v = {}
        for f in ("specialist-before", "specialist-after", "generic-before", "generic-after"):
            v[f] = domain_bpb(load(os.path.join(d, f + ".json")), src)
        if None not in v.values():
            lines.append((src, v))
    if lines:
        print(f"\nShort fine-tune on each held-out source's train split, from {specialist_row}'s specialist and from "
              f"the generic dense model (seed 1, bits per byte on the source's valid split)\n")
        print("| source | generic | generic + fine-tune | specialist | specialist + fine-tune |")
        print("|---|---|---|---|---|")
        for src, v in lines:
            print(f"| {src} | {v['generic-before']:.4f} | {v['generic-after']:.4f} | {v['specialist-before']:.4f} | "
                  f"{v['specialist-after']:.4f} |")


def main():
    out = sys.argv[1]
    baseline = sys.argv[2] if len(sys.argv) > 2 else "dense"
    specialist_row = sys.argv[3] if len(sys.argv) > 3 else "soup-n16"
    rows = {}
    for d in sorted(glob.glob(os.path.join(out, "*-s*"))):
        name, _, seed = os.path.basename(d).rpartition("-s")
        if not seed.isdigit() or not os.path.isdir(d) or name.startswith("dense-spe-"):
            continue
        rows.setdefault(name, {})[int(seed)] = d
    base_generic = {}
    for seed, d in rows.get(baseline, {}).items():
        g = load(os.path.join(d, "generic.json"))
        if g and "natural_bpb" in g:
            base_generic[seed] = g["natural_bpb"]
    print("| row | seeds | generic bpb | generic vs %s | held-in delta | held-in wins | held-out delta | "
          "held-out wins | one-hot beats uniform | one-hot delta |" % baseline)
    print("|---|---|---|---|---|---|---|---|---|---|")
    per_domain = {}
    for name, seeds in rows.items():
        acc = {k: [] for k in ("g", "gr", "hi", "hiw", "ho", "how", "oh", "ohd")}
        domains = {}
        for seed, d in sorted(seeds.items()):
            g = load(os.path.join(d, "generic.json"))
            if g and "natural_bpb" in g:
                acc["g"].append(g["natural_bpb"])
                if seed in base_generic:
                    acc["gr"].append(100.0 * (g["natural_bpb"] / base_generic[seed] - 1.0))
            for part, key in (("held-in", "hi"), ("held-out", "ho")):
                t = load(os.path.join(d, part + ".json"))
                if t:
                    mean, wins, deltas = table_stats(t, "baseline_bpb")
                    if mean is not None:
                        acc[key].append(mean)
                        acc[key + "w"].append(wins)
                        for dom, v in deltas.items():
                            domains.setdefault((part, dom), []).append(v)
            t = load(os.path.join(d, "onehot.json"))
            if t:
                mean, wins, _ = table_stats(t, "soup_uniform_bpb")
                if mean is not None:
                    acc["ohd"].append(mean)
                    acc["oh"].append(wins)
        if domains:
            per_domain[name] = domains
        print(f"| {name} | {len(seeds)} | {plain(acc['g'])} | "
              f"{plain(acc['gr'], '{:+.2f} %') if acc['gr'] else '-'} | {spread(acc['hi'])} | {pct(acc['hiw'])} | "
              f"{spread(acc['ho'])} | {pct(acc['how'])} | {pct(acc['oh'])} | {spread(acc['ohd'])} |")
    for name, domains in per_domain.items():
        print(f"\n{name}: specialist - {baseline}, bits per byte, per domain (mean over seeds)\n")
        print("| part | domain | delta |")
        print("|---|---|---|")
        for (part, dom), v in sorted(domains.items()):
            print(f"| {part} | {dom} | {spread(v)} |")
    stages(out, specialist_row)


if __name__ == "__main__":
    main()
