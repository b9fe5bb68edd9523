#!/bin/sh
# ladle prep under mpiexec: the corpus is the same on 1, 2 and 3 ranks, every dataset and
# attribute compared with h5py, plain and with --clusters (a sampled k-means seeding over
# 20k documents), with --max-domain-bytes, --split-doc-bytes, a one-document domain, a
# domain of more files than a round holds, skipped files; the distributed k-means on 3
# ranks (test_kmeans); bad inputs on 3 ranks (exit 2, one error line, no file left,
# no hang); and bounded memory: documents larger than the peak RSS of the prep that reads
# them, on 1 and 2 ranks.
. "$top_srcdir/test/lib.sh"
make_tmp
need_h5py
passed=0

# ---- the inputs ----
"$PYTHON3" - "$TMP" <<'PY' || fail "making the inputs"
import gzip, os, random, sys
tmp = sys.argv[1]
rng = random.Random(7)
words = ["alpha", "beta", "gamma", "delta", "kernel", "matrix", "the", "of", "and", "river", "stone", "light"]
os.makedirs(tmp + "/many")
for i in range(5000):   # more than a round's 4096 files
    n = rng.randrange(0, 300)
    open("%s/many/f%05d.txt" % (tmp, i), "w").write(" ".join(rng.choice(words) for _ in range(n // 6)) + "\n" * (n > 0))
open(tmp + "/many/blob.bin", "wb").write(b"text\0binary")
os.symlink("f00001.txt", tmp + "/many/link.txt")
with open(tmp + "/words.txt", "w") as f:   # 1.6 MB: 11k documents at --split-doc-bytes 128
    for i in range(40000):
        f.write(" ".join(rng.choice(words) for _ in range(rng.randrange(3, 12))) + "\n")
with gzip.open(tmp + "/notes.gz", "wt") as f:
    f.write("".join("note %d: %s\n" % (i, rng.choice(words)) for i in range(4000)))
open(tmp + "/one.txt", "w").write("a single short document, cut in two\n")
PY
lic=/usr/share/common-licenses
[ -d "$lic" ] || lic="$top_srcdir/include"
DOMAINS="--domain code=$top_srcdir/src --domain many=$TMP/many --domain one=$TMP/one.txt
         --domain words=$TMP/words.txt --domain mixed=$top_srcdir/include,$TMP/notes.gz,$lic"
OPTS="--valid-fraction 0.1 --seed 5 --split-doc-bytes 128 --max-domain-bytes 1200000"

# same A B: every dataset and attribute of corpus A equals B's (values, dtypes, shapes)
cat > "$TMP/same.py" <<'PY'
import sys, h5py, numpy as np
def tree(f):
    out = {"": f}
    f.visititems(lambda name, obj: out.__setitem__(name, obj))
    return out
def value(v):
    return (v.dtype.str, v.shape, v.tobytes()) if isinstance(v, np.ndarray) and v.dtype != object else \
        (list(v) if isinstance(v, np.ndarray) else (type(v).__name__, v))
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
ta, tb = tree(a), tree(b)
bad = sorted(set(ta) ^ set(tb))
for name in sorted(set(ta) & set(tb)):
    x, y = ta[name], tb[name]
    if sorted(x.attrs) != sorted(y.attrs) or any(value(x.attrs[k]) != value(y.attrs[k]) for k in x.attrs):
        bad.append(name + " (attributes)")
    if isinstance(x, h5py.Dataset) and (not isinstance(y, h5py.Dataset) or value(x[...]) != value(y[...])):
        bad.append(name)
print("%s vs %s: %d objects, %d differ %s" % (sys.argv[1], sys.argv[2], len(ta), len(bad), bad[:5]))
sys.exit(1 if bad or len(ta) < 10 else 0)
PY
same() { "$PYTHON3" "$TMP/same.py" "$1" "$2" || fail "$1 and $2 differ"; }

# ---- plain and clustered, on 1, 2 and 3 ranks ----
for n in 1 2 3; do
    # shellcheck disable=SC2086
    run_mpi $n "^wrote $TMP/plain$n.h5" "$LADLE" prep -o "$TMP/plain$n.h5" $OPTS $DOMAINS || fail "prep on $n ranks"
    sed '$d' "$TMP/out" > "$TMP/plain$n.report"
    # shellcheck disable=SC2086
    run_mpi $n "^wrote $TMP/clusters$n.h5" "$LADLE" prep -o "$TMP/clusters$n.h5" $OPTS --clusters 40 $DOMAINS ||
        fail "prep --clusters on $n ranks"
    sed '$d' "$TMP/out" > "$TMP/clusters$n.report"
done
for n in 2 3; do
    same "$TMP/plain1.h5" "$TMP/plain$n.h5"
    same "$TMP/clusters1.h5" "$TMP/clusters$n.h5"
    cmp -s "$TMP/plain1.report" "$TMP/plain$n.report" && cmp -s "$TMP/clusters1.report" "$TMP/clusters$n.report" ||
        fail "the report on $n ranks differs from one rank's"
done
passed=$((passed + 1))

# one file for the whole corpus: every rank but one holds no document (nor embedding)
for n in 1 3; do
    run_mpi $n "^wrote $TMP/lone$n.h5" "$LADLE" prep -o "$TMP/lone$n.h5" --split-doc-bytes 128 --clusters 8 \
        --domain words="$TMP/words.txt" || fail "prep --clusters of one file on $n ranks"
done
same "$TMP/lone1.h5" "$TMP/lone3.h5"
passed=$((passed + 1))

# what was built is what the options ask for (so that the comparisons above are not vacuous)
"$PYTHON3" - "$TMP/plain1.h5" "$TMP/clusters1.h5" <<'PY' || fail "the corpus is not what the options ask for"
import sys, h5py, numpy as np
plain, clus = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
d = plain["domains"]
def docs(g, split):
    o = g[split + "_offsets"][...]
    return np.diff(o), o[-1] == len(g[split])
for name, g in d.items():
    for split in ("train", "valid"):
        lens, ends = docs(g, split)
        assert ends and len(lens) >= 1 and lens.min() >= 1 and lens.max() <= 128, (name, split, lens.max())
assert sum(g.attrs["train_docs"] for g in d.values()) > 16384       # a sampled seeding
assert len(d["words"]["train"]) + len(d["words"]["valid"]) == 1200000   # cut at max domain bytes
assert d["many"].attrs["documents"] > 4096                          # more files than one round
one = d["one"]
assert one.attrs["documents"] == 1 and one.attrs["train_docs"] == 1 and one.attrs["valid_docs"] == 1
assert bytes(one["train"][...]) + bytes(one["valid"][...]) == b"a single short document, cut in two\n"
# the sources of the clustered corpus are the plain corpus' domains
for name, g in d.items():
    s = clus["sources"][name]
    for ds in g:
        assert g[ds][...].tobytes() == s[ds][...].tobytes(), (name, ds)
# every document of the sources is in exactly one cluster, both splits of each non-empty
total = sum(g.attrs["documents"] for g in clus["domains"].values())
assert total == sum(g.attrs["train_docs"] + g.attrs["valid_docs"] for g in d.values()), total
assert len(clus["domains"]) == 40 and clus["clusters/centroids"].shape == (40, 64)
for name, g in clus["domains"].items():
    for split in ("train", "valid"):
        assert len(g[split + "_labels"]) == len(g[split + "_offsets"]) - 1 >= 1, (name, split)
print("checked: %d source documents, %d in clusters" % (sum(g.attrs["documents"] for g in d.values()), total))
PY
passed=$((passed + 1))

# ---- the distributed k-means itself ----
run_mpi 3 "test_kmeans (ranks=3): [0-9]* passed, 0 failed" "$top_builddir/test/test_kmeans" || fail "test_kmeans on 3 ranks"
passed=$((passed + 1))

# ---- bad inputs on 3 ranks: one clear error, exit 2, nothing left, no hang ----
head -c 300 "$TMP/notes.gz" > "$TMP/cut.gz"
mkdir "$TMP/empty"
refuse3() {
    pattern=$1
    shift
    timeout 120 $TESTMPIRUN 3 "$LADLE" prep -o "$TMP/bad.h5" "$@" > "$TMP/err" 2>&1
    rc=$?
    [ $rc -eq 2 ] || { cat "$TMP/err" >&2; fail "expected exit 2 from prep $*, got $rc"; }
    grep -q -- "$pattern" "$TMP/err" || { cat "$TMP/err" >&2; fail "message of prep $* lacks '$pattern'"; }
    [ "$(grep -c '^ladle: error:' "$TMP/err")" -eq 1 ] || { cat "$TMP/err" >&2; fail "prep $*: not one error line"; }
    [ ! -e "$TMP/bad.h5" ] && [ ! -e "$TMP/bad.h5.tmp" ] || fail "prep $* left a file behind"
}
refuse3 "domain 'b': cannot read '$TMP/cut.gz': unexpected end of file" --domain a="$TMP/many" --domain b="$TMP/words.txt,$TMP/cut.gz"
refuse3 "domain 'e' is empty" --domain a="$TMP/many" --domain e="$TMP/empty"
refuse3 "is more than the" --domain a="$top_srcdir/include" --clusters 100000
refuse3 "cannot read '$TMP/missing'" --domain a="$TMP/many" --domain m="$TMP/missing"
passed=$((passed + 1))

# ---- bounded memory: three documents of 80 MB, each larger than the whole prep ----
mkdir "$TMP/big"
for i in 0 1 2; do
    yes "document $i, line after line of the same words: the quick brown fox jumps over the lazy dog" |
        head -c 80000000 > "$TMP/big/f$i.txt"
done
for n in 1 2; do
    /usr/bin/time -f "%M" -o "$TMP/rss" $TESTMPIRUN $n "$LADLE" prep -o "$TMP/big$n.h5" --clusters 2 --domain big="$TMP/big" \
        > "$TMP/out" 2>&1 || { cat "$TMP/out" >&2; fail "prep of the big documents on $n ranks"; }
    grep -q "^wrote $TMP/big$n.h5" "$TMP/out" || { cat "$TMP/out" >&2; fail "prep of the big documents did not run"; }
    kb=$(tail -1 "$TMP/rss")
    echo "big documents on $n ranks: peak RSS $kb KB for 3 x 80 MB documents"
    [ "$kb" -gt 0 ] && [ "$kb" -lt 78000 ] || fail "prep of 240 MB of documents on $n ranks peaked at $kb KB"
done
cmp -s "$TMP/big1.h5" "$TMP/big2.h5" || same "$TMP/big1.h5" "$TMP/big2.h5"   # (cmp: far quicker, and so far it holds)
passed=$((passed + 1))
echo "prep_ranks: $passed passed, 0 failed"
