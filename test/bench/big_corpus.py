#!/usr/bin/env python3
"""big_corpus.py POOL.h5 OUT.h5 GBYTES [SEED]: a ladle corpus of GBYTES GB (1e9 bytes) for
the streaming benchmark, bigger than the machine's memory, from the text of a small one.

Every domain of POOL.h5 (the demo corpus, share/ladle/demo-corpus.sh) becomes a domain of
OUT.h5 holding its share of GBYTES, in proportion to the pool domain's size. Each new
document is two spans of random length (1-16 KiB each) cut at random places out of random
documents of the same pool domain and joined: the text keeps its domain's kind but does
not repeat exactly, and a GB holds about 60,000 documents (>= 1 M documents from 17 GB).
Valid splits are made the same way, 0.5 % of each domain's bytes. The file is written
in bounded memory (a 64 MiB buffer), with contiguous datasets as 'ladle prep' writes them,
and the same root attributes as POOL.h5.
"""
import os
import sys

import h5py
import numpy as np

BUFFER = 64 << 20
SPAN_MIN, SPAN_MAX = 1 << 10, 16 << 10


def pool_documents(group, split):
    data = group[split][...]
    offsets = group[split + "_offsets"][...]
    docs = [data[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
    docs = [d for d in docs if len(d) >= SPAN_MIN]
    return docs or [data]


def write_split(out, name, docs, nbytes, rng):
    """A split of exactly nbytes, documents spliced from docs, written piece by piece."""
    dset = out.create_dataset(name, shape=(nbytes,), dtype=np.uint8)
    offsets = [0]
    buf = np.empty(BUFFER + 2 * SPAN_MAX, dtype=np.uint8)
    used = written = 0
    while written + used < nbytes:
        for _ in range(2):
            d = docs[rng.integers(len(docs))]
            n = int(rng.integers(min(SPAN_MIN, len(d)), min(SPAN_MAX, len(d)) + 1))
            s = int(rng.integers(0, len(d) - n + 1))
            buf[used:used + n] = d[s:s + n]
            used += n
        end = min(written + used, nbytes)
        used = end - written
        offsets.append(end)
        if used >= BUFFER or end == nbytes:
            dset[written:written + used] = buf[:used]
            written += used
            used = 0
    out.create_dataset(name + "_offsets", data=np.asarray(offsets, dtype=np.uint64))
    return len(offsets) - 1


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    pool_path, out_path, gbytes = sys.argv[1], sys.argv[2], float(sys.argv[3])
    rng = np.random.default_rng(int(sys.argv[4]) if len(sys.argv) == 5 else 1)
    total = int(gbytes * 1e9)
    with h5py.File(pool_path, "r") as pool, h5py.File(out_path + ".tmp", "w") as out:
        for k in pool.attrs:
            out.attrs.create(k, pool.attrs[k], dtype=pool.attrs.get_id(k).dtype)
        names = sorted(pool["domains"])
        sizes = np.array([pool["domains"][n]["train"].shape[0] for n in names], dtype=np.float64)
        docs_total = 0
        for name, share in zip(names, sizes / sizes.sum()):
            src = pool["domains"][name]
            g = out.create_group("domains/" + name)
            train_bytes = int(total * share)
            docs_total += write_split(g, "train", pool_documents(src, "train"), train_bytes, rng)
            valid_docs = pool_documents(src, "valid") if src["valid"].shape[0] > SPAN_MIN else pool_documents(src, "train")
            docs_total += write_split(g, "valid", valid_docs, max(train_bytes // 200, 4096), rng)
            g.attrs["source"] = "spliced from %s:%s" % (pool_path, name)
            print("%-16s %14d train bytes" % (name, train_bytes), flush=True)
        print("total %d bytes, %d documents" % (total, docs_total))
    os.replace(out_path + ".tmp", out_path)


if __name__ == "__main__":
    main()
