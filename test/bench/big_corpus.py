#!/usr/bin/env python3
"""big_corpus.py [--text] POOL.h5 OUT GBYTES [SEED]: GBYTES GB (1e9 bytes) of text for the
benchmarks, bigger than the machine's memory, from the text of a small corpus.

Every domain of POOL.h5 (the demo corpus, share/ladle/demo-corpus.sh) gets its share of
GBYTES, in proportion to the pool domain's size. Each new document is two spans of random
length (1-16 KiB each) cut at random places out of random documents of the same pool
domain and joined: the text keeps its domain's kind but does not repeat exactly, and a GB
holds about 60,000 documents (>= 1 M documents from 17 GB).

Without --text, OUT is a ladle corpus (bench_stream.sh): each domain's train split as
above and a valid split of 0.5 % of its bytes, written in bounded memory (a 64 MiB
buffer) with contiguous datasets as 'ladle prep' writes them, and the same root
attributes as POOL.h5.

With --text, OUT is a directory of text for 'ladle prep' (bench_prep.sh): OUT/NAME/ holds
files part-NNNNN.txt.gz, each about 64 MiB of text, the domain's documents one after the
other, each ending with a newline; 'ladle prep --split-doc-bytes 16384' cuts them into
>= 1.8 M documents at 30 GB. Gzip (level 1, about 3x smaller) so that the text and a
clustered corpus of it (which holds every document twice) fit on one disk; ladle prep reads
them through zlib. Files are written as .tmp and renamed, so a file present is complete.
"""
import concurrent.futures
import os
import sys
import zlib

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


def spliced(docs, nbytes, rng, sink):
    """Documents spliced from docs, nbytes in all, handed to sink(buffer, ends) a buffer of
    about BUFFER bytes at a time (ends: where each document in it ends). Returns how many."""
    buf = np.empty(BUFFER + 2 * SPAN_MAX, dtype=np.uint8)
    ends = []
    used = written = count = 0
    while written + used < nbytes:
        for _ in range(2):
            d = docs[rng.integers(len(docs))]
            n = int(rng.integers(min(SPAN_MIN, len(d)), min(SPAN_MAX, len(d)) + 1))
            s = int(rng.integers(0, len(d) - n + 1))
            buf[used:used + n] = d[s:s + n]
            used += n
        used = min(written + used, nbytes) - written
        ends.append(used)
        count += 1
        if used >= BUFFER or written + used == nbytes:
            sink(buf[:used], ends)
            written += used
            used = 0
            ends = []
    return count


def write_split(out, name, docs, nbytes, rng):
    """A split of exactly nbytes, written piece by piece, and its offsets."""
    dset = out.create_dataset(name, shape=(nbytes,), dtype=np.uint8)
    offsets = [0]
    at = [0]

    def sink(piece, ends):
        dset[at[0]:at[0] + len(piece)] = piece
        offsets.extend(at[0] + e for e in ends)
        at[0] += len(piece)

    n = spliced(docs, nbytes, rng, sink)
    out.create_dataset(name + "_offsets", data=np.asarray(offsets, dtype=np.uint64))
    return n


def write_gzip(path, data):
    """data as a gzip file at path, complete or absent (zlib releases the GIL: the
    compression of one part overlaps the splicing of the next)."""
    c = zlib.compressobj(1, zlib.DEFLATED, 31)   # wbits 31: a gzip header and trailer
    with open(path + ".tmp", "wb") as f:
        f.write(c.compress(data))
        f.write(c.flush())
    os.replace(path + ".tmp", path)


def write_text(directory, docs, nbytes, rng, pool):
    """nbytes of documents as gzip files of about BUFFER bytes of text, each document
    ending in '\n'."""
    os.makedirs(directory, exist_ok=True)
    part = [0]
    pending = []

    def sink(piece, ends):
        piece = piece.copy()
        piece[np.asarray(ends, dtype=np.int64) - 1] = ord("\n")
        path = os.path.join(directory, "part-%05d.txt.gz" % part[0])
        pending.append(pool.submit(write_gzip, path, piece.tobytes()))
        while len(pending) > 2:
            pending.pop(0).result()
        part[0] += 1

    n = spliced(docs, nbytes, rng, sink)
    for f in pending:
        f.result()
    return n


def main():
    args = sys.argv[1:]
    text = bool(args) and args[0] == "--text"
    if text:
        args = args[1:]
    if len(args) not in (3, 4):
        sys.exit(__doc__)
    pool_path, out_path, gbytes = args[0], args[1], float(args[2])
    rng = np.random.default_rng(int(args[3]) if len(args) == 4 else 1)
    total = int(gbytes * 1e9)
    with h5py.File(pool_path, "r") as pool:
        names = sorted(pool["domains"])
        sizes = np.array([pool["domains"][n]["train"].shape[0] for n in names], dtype=np.float64)
        docs_total = 0
        if text:
            with concurrent.futures.ThreadPoolExecutor(2) as compressors:
                for name, share in zip(names, sizes / sizes.sum()):
                    nbytes = int(total * share)
                    docs_total += write_text(os.path.join(out_path, name),
                                             pool_documents(pool["domains"][name], "train"), nbytes, rng,
                                             compressors)
                    print("%-16s %14d bytes" % (name, nbytes), flush=True)
            print("total %d bytes, %d documents" % (total, docs_total))
            return
        with h5py.File(out_path + ".tmp", "w") as out:
            for k in pool.attrs:
                out.attrs.create(k, pool.attrs[k], dtype=pool.attrs.get_id(k).dtype)
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
