#!/usr/bin/env python3
"""Heatmap of a soup's expert coefficients per domain.

For every named domain d of a Soup-of-Experts model file, alpha = router(one-hot h_d): the
coefficients of the experts in the specialist ladle would instantiate for that domain
('ladle instantiate SOUP --weights d=1' records the same alpha). Rows are domains,
columns experts.

    python3 plot_alpha.py run/model.h5 -o alpha.png
    python3 plot_alpha.py run/model.h5 --print          # the matrix as text, no plot

Needs h5py and numpy (read_checkpoint.py, next to this file), and matplotlib for the plot.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import read_checkpoint  # noqa: E402  (found next to this script)


def alpha_matrix(ckpt):
    """alpha for one-hot h of each domain: [domains, experts]."""
    k = len(ckpt["domains"])
    return np.stack([read_checkpoint.router_alpha(ckpt, np.eye(k)[d]) for d in range(k)])


def plot(ckpt, alpha, out):
    import matplotlib
    matplotlib.use("Agg")   # files only, no display needed
    import matplotlib.pyplot as plt

    k, n = alpha.shape
    softmax = ckpt["config"].get("router.alpha") == "softmax"
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * n + 2.5), max(2.5, 0.35 * k + 1.5)))
    if softmax:   # coefficients in [0, 1]
        image = ax.imshow(alpha, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    else:         # raw coefficients have either sign: a diverging map centred on 0
        limit = float(np.abs(alpha).max()) or 1.0
        image = ax.imshow(alpha, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    fig.colorbar(image, ax=ax, label="alpha (%s)" % ("softmax" if softmax else "raw"))
    ax.set_xticks(range(n))
    ax.set_xticklabels([str(j) for j in range(n)])
    ax.set_yticks(range(k))
    ax.set_yticklabels(ckpt["domains"])
    ax.set_xlabel("expert")
    ax.set_ylabel("domain (one-hot h)")
    ax.set_title("%s, step %d" % (os.path.basename(ckpt["path"]), ckpt["step"]))
    if k * n <= 200:   # values in the cells while they stay legible
        for d in range(k):
            for j in range(n):
                ax.text(j, d, "%.2f" % alpha[d, j], ha="center", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description="Heatmap of a soup's alpha = router(one-hot h) per domain.")
    p.add_argument("soup", help="a soup model file or training checkpoint (run.dir/model.h5, ckpt-*.h5)")
    p.add_argument("-o", "--output", help="PNG to write")
    p.add_argument("--print", dest="print_", action="store_true",
                   help="print the matrix: a header line, then one line per domain (%%.9g)")
    args = p.parse_args(argv)
    if not args.output and not args.print_:
        p.error("nothing to do: give -o PNG and/or --print")
    try:
        ckpt = read_checkpoint.load(args.soup)
    except (OSError, ValueError, KeyError) as e:
        sys.exit("plot_alpha.py: %s" % e)
    if not ckpt["router"]:
        sys.exit("plot_alpha.py: %s is not a soup (kind %s): it has no router" % (args.soup, ckpt["kind"]))
    alpha = alpha_matrix(ckpt)
    if args.print_:
        print("domain " + " ".join("expert%d" % j for j in range(alpha.shape[1])))
        for name, row in zip(ckpt["domains"], alpha):
            print(name + " " + " ".join("%.9g" % x for x in row))
    if args.output:
        plot(ckpt, alpha, args.output)
        print("wrote %s (%d domains x %d experts)" % (args.output, alpha.shape[0], alpha.shape[1]),
              file=sys.stderr if args.print_ else sys.stdout)


if __name__ == "__main__":
    main()
