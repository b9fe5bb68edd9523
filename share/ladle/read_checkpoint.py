#!/usr/bin/env python3
"""Read ladle model files with h5py and numpy: an example, and a small library.

Any file with the root attribute format = "ladle-checkpoint" (FORMATS.md): a dense model,
a soup (Soup-of-Experts: shared parameters S, an expert bank E, a router), an
instantiated model, or a training checkpoint (any of those plus /optim).

    import read_checkpoint as rc
    ckpt = rc.load("run/model.h5")
    print(ckpt["kind"], ckpt["step"], ckpt["config"]["soup.experts"])
    h = rc.domain_weights(ckpt, {"c": 3, "tests": 1})   # normalised, in ckpt["domains"] order
    alpha = rc.router_alpha(ckpt, h)                     # the router's expert coefficients
    params = rc.theta(ckpt, h)                           # {tensor name: S + sum_j alpha_j E_j}

Run as a script, it prints what a file holds and, with --weights, the coefficients:

    python3 read_checkpoint.py run/model.h5 --weights c=3,tests=1

Only h5py and numpy are needed. Arrays come back as numpy arrays; computations are done
in float64 and the merged parameters returned as float32, like the file.
"""
import argparse
import sys

import h5py
import numpy as np

FORMAT = "ladle-checkpoint"
MAX_VERSION = 1
ROUTER_TENSORS = ("router.w1", "router.b1", "router.w2", "router.b2")


def parse_config(text):
    """The stored configuration ("key = value" lines) as a dict; values become int or
    float where they parse as such, and stay strings otherwise (paths, choices)."""
    config = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        for kind in (int, float):
            try:
                value = kind(value)
                break
            except ValueError:
                pass
        config[key] = value
    return config


def tensor_names(config):
    """The model's tensors in the order of the flat parameter vector (FORMATS.md)."""
    names = ["wte", "wpe"]
    for layer in range(int(config["model.layers"])):
        names += ["h.%d.%s" % (layer, t) for t in (
            "ln1.w", "ln1.b", "attn.qkv.w", "attn.qkv.b", "attn.proj.w", "attn.proj.b",
            "ln2.w", "ln2.b", "ffn.w1", "ffn.b1", "ffn.w2", "ffn.b2")]
    return names + ["lnf.w", "lnf.b"]


def _text(value):
    # h5py returns variable-length strings as str; fixed-length ones as bytes
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_set(group, order):
    """One parameter set under group (the parameters, or an AdamW moment): shared and
    router tensors as arrays; experts as arrays [n, ...] (dense experts) or, for
    low-rank experts, dicts {"U": [n, rows, r], "V": [n, cols, r]}."""
    def ordered(g):
        # HDF5 lists names alphabetically (h.10 before h.2); use the model's order
        rank = {name: i for i, name in enumerate(order)}
        return sorted(g.keys(), key=lambda name: (rank.get(name, len(rank)), name))

    shared = {name: group["shared"][name][...] for name in ordered(group["shared"])} if "shared" in group else {}
    experts = {}
    if "experts" in group:
        for name in ordered(group["experts"]):
            item = group["experts"][name]
            experts[name] = item[...] if isinstance(item, h5py.Dataset) else {"U": item["U"][...], "V": item["V"][...]}
    router = {name: group["router"][name][...] for name in ROUTER_TENSORS if "router" in group and name in group["router"]}
    return shared, experts, router


def load(path, optim=False):
    """Read a ladle model file into a dict:

    kind         "dense", "soup" or "instantiated" (the root attribute)
    training_checkpoint  True if the file has /optim (AdamW moments: a resumable checkpoint)
    step, seed, world_size, ladle_version, format_version   root attributes
    config       the stored configuration, parsed (parse_config); config_text the raw text
    domains      domain names, in the order h is indexed
    tensors      {name: array} of /shared, in flat-vector order: S of a soup, else the parameters
    experts      {name: array [n, ...] or {"U", "V"}} (a soup; empty otherwise)
    router       {"router.w1": [H, k], "router.b1": [H], "router.w2": [n, H], "router.b2": [n]}
    n_experts    n (0 unless a soup)
    h, alpha, source   an instantiated model's domain weights, coefficients and soup path (else None)
    optim        with optim=True and a training checkpoint: {"step", "m": {...}, "v": {...}},
                 each moment {"tensors", "experts", "router"} in the layout above
    """
    with h5py.File(path, "r") as f:
        attrs = f.attrs
        fmt = _text(attrs.get("format", ""))
        if fmt != FORMAT:
            raise ValueError("%s is not a %s file (format %r)" % (path, FORMAT, fmt))
        version = int(attrs["format_version"])
        if not 1 <= version <= MAX_VERSION:
            raise ValueError("%s: format_version %d is not supported (1 to %d)" % (path, version, MAX_VERSION))
        config_text = _text(attrs["config"])
        config = parse_config(config_text)
        order = tensor_names(config)
        tensors, experts, router = _read_set(f, order)
        ckpt = {
            "path": path,
            "format_version": version,
            "kind": _text(attrs["kind"]),
            "training_checkpoint": "optim" in f,
            "step": int(attrs.get("step", 0)),
            "seed": int(attrs["seed"]) if "seed" in attrs else None,
            "world_size": int(attrs["world_size"]) if "world_size" in attrs else None,
            "ladle_version": _text(attrs["ladle_version"]) if "ladle_version" in attrs else None,
            "config": config,
            "config_text": config_text,
            "domains": [_text(d) for d in attrs.get("domains", [])],
            "tensors": tensors,
            "experts": experts,
            "router": router,
            "n_experts": len(router["router.b2"]) if router else 0,
            "h": np.asarray(attrs["h"]) if "h" in attrs else None,
            "alpha": np.asarray(attrs["alpha"]) if "alpha" in attrs else None,
            "source": _text(attrs["source"]) if "source" in attrs else None,
            "optim": None,
        }
        if optim and "optim" in f:
            g = f["optim"]
            ckpt["optim"] = {"step": int(g.attrs.get("step", ckpt["step"]))}
            for which in ("m", "v"):
                t, e, r = _read_set(g[which], order)
                ckpt["optim"][which] = {"tensors": t, "experts": e, "router": r}
    return ckpt


def domain_weights(ckpt, weights):
    """h from {domain name: weight} (or a sequence in ckpt["domains"] order), normalised
    to sum to 1 as 'ladle instantiate --weights' does."""
    if isinstance(weights, dict):
        unknown = set(weights) - set(ckpt["domains"])
        if unknown:
            raise ValueError("unknown domains %s (the file's: %s)" % (sorted(unknown), ", ".join(ckpt["domains"])))
        h = np.array([float(weights.get(d, 0.0)) for d in ckpt["domains"]])
    else:
        h = np.asarray(weights, dtype=np.float64)
    if h.shape != (len(ckpt["domains"]),) or (h < 0).any() or h.sum() <= 0:
        raise ValueError("domain weights must be %d non-negative numbers, not all zero" % len(ckpt["domains"]))
    return h / h.sum()


def router_alpha(ckpt, h):
    """alpha = router(h): relu(h W1^T + b1) W2^T + b2, then softmax if the stored config
    says router.alpha = softmax (raw coefficients otherwise), times router.scale (1 in files
    older than that key). h is taken as given."""
    r = ckpt["router"]
    if not r:
        raise ValueError("%s is not a soup (kind %s): it has no router" % (ckpt["path"], ckpt["kind"]))
    w1, b1, w2, b2 = (r[name].astype(np.float64) for name in ROUTER_TENSORS)
    hidden = np.maximum(np.asarray(h, dtype=np.float64) @ w1.T + b1, 0.0)
    alpha = hidden @ w2.T + b2
    if ckpt["config"].get("router.alpha") == "softmax":
        e = np.exp(alpha - alpha.max(axis=-1, keepdims=True))   # shifted: no overflow
        alpha = e / e.sum(axis=-1, keepdims=True)
    return alpha * float(ckpt["config"].get("router.scale", 1))


def expert_tensor(experts, name, j):
    """Expert j's part of tensor name: E_j, or U_j V_j^T for low-rank experts."""
    e = experts[name]
    if isinstance(e, dict):
        return e["U"][j].astype(np.float64) @ e["V"][j].astype(np.float64).T
    return e[j].astype(np.float64)


def theta(ckpt, h=None, alpha=None):
    """The model's parameters {name: float32 array}: for a soup, Theta(h) = S + sum_j
    alpha_j E_j with alpha = router(h) (or the alpha given); a tensor without experts
    (soup.experts_on = blocks, or a vector of a low-rank soup) is S alone. For any other
    kind, the stored parameters."""
    if not ckpt["experts"]:
        return {name: t.copy() for name, t in ckpt["tensors"].items()}
    if alpha is None:
        if h is None:
            raise ValueError("a soup needs domain weights h (or alpha) to become a model")
        alpha = router_alpha(ckpt, h)
    alpha = np.asarray(alpha, dtype=np.float64)
    out = {}
    for name, s in ckpt["tensors"].items():
        merged = s.astype(np.float64)
        if name in ckpt["experts"]:
            for j, a in enumerate(alpha):
                merged += a * expert_tensor(ckpt["experts"], name, j)
        out[name] = merged.astype(np.float32)
    return out


def flatten(tensors):
    """The flat parameter vector (tensors concatenated in the dict's order, row-major)."""
    return np.concatenate([t.ravel() for t in tensors.values()])


def main(argv=None):
    p = argparse.ArgumentParser(description="Print what a ladle model file holds.")
    p.add_argument("file")
    p.add_argument("--weights", help="NAME=W,...: print h, alpha and Theta(h)'s norm for a soup")
    args = p.parse_args(argv)
    try:
        ckpt = load(args.file)
    except (OSError, ValueError, KeyError) as e:
        sys.exit("read_checkpoint.py: %s" % e)
    c = ckpt["config"]
    print("%s: %s%s, step %d, %d domains (%s)" % (
        args.file, ckpt["kind"], " (training checkpoint)" if ckpt["training_checkpoint"] else "",
        ckpt["step"], len(ckpt["domains"]), ", ".join(ckpt["domains"])))
    print("model: %d layers, dim %d, %d experts, rank %d" % (
        c["model.layers"], c["model.dim"], ckpt["n_experts"], c.get("soup.rank", 0)))
    for name, t in ckpt["tensors"].items():
        e = ckpt["experts"].get(name)
        extra = "" if e is None else ("  experts %s" % (list(e.shape),) if not isinstance(e, dict) else
                                      "  experts U %s V %s" % (list(e["U"].shape), list(e["V"].shape)))
        print("  %-20s %s%s" % (name, list(t.shape), extra))
    if args.weights:
        try:
            spec = dict((k, float(v)) for k, v in (item.split("=", 1) for item in args.weights.split(",")))
            h = domain_weights(ckpt, spec)
            alpha = router_alpha(ckpt, h)
        except ValueError as e:
            sys.exit("read_checkpoint.py: --weights: %s" % e)
        print("h:", " ".join("%.6g" % x for x in h))
        print("alpha:", " ".join("%.9g" % x for x in alpha))
        print("|Theta(h)| = %.6g" % np.linalg.norm(flatten(theta(ckpt, alpha=alpha))))


if __name__ == "__main__":
    main()
