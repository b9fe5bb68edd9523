#!/bin/sh
# SMEAR against its baselines at small scale (METHODS.md section 2; issue 5, experiment 1).
#
#   compare.sh LADLE OUTDIR
#
# Rows, every one trained for the same steps on the same batches (same seed: the same
# sequences, so the same token budget), one model per row and seed:
#   dense          one dense FFN per layer (the active compute of moe/smear/tag)
#   dense-wide     one dense FFN per layer with EXPERTS times the hidden width
#                  (model.ffn_mult = 4 EXPERTS: the parameter count of the routed rows)
#   moe            top-1 token routing over EXPERTS FFN experts (Switch)
#   smear          SMEAR over EXPERTS FFN experts, one merge per segment of SEGMENT bytes
#   smear-adapter  SMEAR over EXPERTS bottleneck adapters after attention and FFN (the paper's placement)
#   tag            the expert of the sequence's domain (domain index mod EXPERTS)
# Reports valid bits per byte per domain and their mean for every row and seed, the mean
# over seeds, and for every routed site of the routed rows (ladle eval --routing) the
# average routing distribution per domain, summarised by its entropy (bits), the mean
# entropy of the individual tokens' or segments' distributions, and the mean
# total-variation distance between the distributions of two domains (0: every domain
# routed alike; 1: disjoint experts). Markdown in OUTDIR/RESULTS.md, the raw
# routing tables in OUTDIR/routing-<row>-s<seed>.txt.
#
# The corpus is the demo corpus (share/ladle/demo-corpus.sh) restricted to DOMAINS, so
# that tag routing has one expert per domain when EXPERTS = the number of domains.
# Environment: MPIEXEC (default mpiexec), RANKS (2), SEEDS ("1 2"), STEPS (800),
# EXPERTS (4), SEGMENT (32), ROWS (all six), DOMAINS ("c-headers changelogs gcide
# python-lib"), MAX_DOMAIN_BYTES (1000000), WINDOWS (64 valid windows per domain),
# SIZE (model and optimizer keys), EXTRA (keys added to every row, for ablations, e.g.
# ROWS=smear EXTRA=smear.dropout=0), PYTHON3 (python3, for the summary; standard library only).
# A row whose model.h5 exists is not trained again (re-run to finish an interrupted run).
set -eu
ladle=${1:?usage: compare.sh LADLE OUTDIR}
out=${2:?usage: compare.sh LADLE OUTDIR}
here=$(cd "$(dirname "$0")/.." && pwd)
mpiexec=${MPIEXEC:-mpiexec}
ranks=${RANKS:-2}
seeds=${SEEDS:-1 2}
steps=${STEPS:-800}
experts=${EXPERTS:-4}
segment=${SEGMENT:-32}
rows=${ROWS:-dense dense-wide moe smear smear-adapter tag}
domains=${DOMAINS:-c-headers changelogs gcide python-lib}
windows=${WINDOWS:-64}
python=${PYTHON3:-python3}
size=${SIZE:-model.layers=4 model.dim=128 model.heads=4 model.context=128 train.batch=16 train.lr=2e-3 train.warmup=30}
extra=${EXTRA:-}
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export BLIS_NUM_THREADS=1
mkdir -p "$out"
run() { $mpiexec -n "$ranks" "$ladle" "$@" > "$out/last.log" 2>&1 || { cat "$out/last.log" >&2; exit 1; }; }

row_keys() {
    case $1 in
        dense) echo "model.ffn=dense" ;;
        dense-wide) echo "model.ffn=dense model.ffn_mult=$((4 * experts))" ;;
        moe) echo "model.ffn=moe moe.experts=$experts moe.top_k=1" ;;
        smear) echo "model.ffn=smear smear.experts=$experts smear.segment=$segment" ;;
        smear-adapter) echo "model.ffn=smear smear.kind=adapter smear.experts=$experts smear.segment=$segment" ;;
        tag) echo "model.ffn=tag smear.experts=$experts" ;;
        *) echo "compare.sh: unknown row '$1'" >&2; exit 2 ;;
    esac
}

if [ ! -s "$out/corpus.h5" ]; then
    # every demo domain not in DOMAINS is excluded
    exclude=""
    for d in $(sed -n 's/^domain \([^ ]*\) .*/\1/p' "$here/demo-corpus.sh"); do
        case " $domains " in *" $d "*) ;; *) exclude="$exclude $d" ;; esac
    done
    MAX_DOMAIN_BYTES=${MAX_DOMAIN_BYTES:-1000000} EXCLUDE="$exclude" sh "$here/demo-corpus.sh" "$out/corpus.h5" "$ladle" \
        > "$out/corpus.log"
fi

for seed in $seeds; do
    for row in $rows; do
        dir="$out/$row-s$seed"
        if [ ! -s "$dir/model.h5" ]; then
            # shellcheck disable=SC2046,SC2086
            run train $size $(row_keys "$row") $extra train.steps="$steps" train.seed="$seed" eval.every=0 log.every=100 \
                data.corpus="$out/corpus.h5" run.dir="$dir" --fresh --force
            cp "$out/last.log" "$dir/train.log"
        fi
    done
done
for seed in $seeds; do
    for row in $rows; do
        dir="$out/$row-s$seed"
        "$ladle" inspect "$dir/model.h5" | sed -n 's/^parameters: .*total \([0-9]*\).*/\1/p' > "$dir/params.txt"
        case $row in
            dense|dense-wide) run eval "$dir/model.h5" --corpus "$out/corpus.h5" --windows "$windows" --json ;;
            *)
                run eval "$dir/model.h5" --corpus "$out/corpus.h5" --windows "$windows" --routing
                cp "$out/last.log" "$out/routing-$row-s$seed.txt"
                run eval "$dir/model.h5" --corpus "$out/corpus.h5" --windows "$windows" --routing --json ;;
        esac
        cp "$out/last.log" "$dir/eval.json"
    done
done

# the tables
"$python" - "$out" "$steps" "$experts" "$seeds" "$rows" > "$out/RESULTS.md" <<'PY'
import json, math, os, sys
out, steps, experts, seeds, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(), sys.argv[5].split()
res = {}
for row in rows:
    for seed in seeds:
        d = os.path.join(out, "%s-s%s" % (row, seed))
        with open(os.path.join(d, "eval.json")) as f:
            ev = json.loads(f.read().strip().splitlines()[-1])
        with open(os.path.join(d, "params.txt")) as f:
            params = int(f.read().split()[0])
        res[row, seed] = ev, params
domains = [x["domain"] for x in res[rows[0], seeds[0]][0]["domains"]]
mean = lambda xs: sum(xs) / len(xs)
print("Valid bits per byte (lower is better), %d steps, %d experts per routed site.\n" % (steps, experts))
print("| row | params | seed | " + " | ".join(domains) + " | mean |")
print("|---|---|---|" + "---|" * (len(domains) + 1))
for row in rows:
    per_seed = []
    for seed in seeds:
        ev, params = res[row, seed]
        b = [x["valid_bpb"] for x in ev["domains"]]
        per_seed.append(b)
        print("| %s | %d | %s | " % (row, params, seed) + " | ".join("%.4f" % v for v in b) + " | %.4f |" % mean(b))
    avg = [mean(col) for col in zip(*per_seed)]
    print("| **%s** | | mean | " % row + " | ".join("%.4f" % v for v in avg) + " | **%.4f** |" % mean(avg))

def entropy(p):
    return -sum(x * math.log2(x) for x in p if x > 0)

print("\nRouting per site (mean over seeds). H: entropy in bits of each domain's average routing")
print("distribution (log2 %d = %.2f is uniform), averaged over domains; H(tok): mean entropy of the" % (experts, math.log2(experts)))
print("individual tokens' (moe) or segments' (smear) distributions; H(all): entropy of the average over")
print("domains; TV: mean total-variation distance between two domains' average distributions (moe: router")
print("probabilities / top-1 fractions); then each domain's most used expert (its weight), per seed.")
print("smear: merge weights of every segment, the first (routed on learned default logits) included.\n")
print("| row | site | H | H(tok) | H(all) | TV | " + " | ".join(domains) + " |")
print("|---|---|---|---|---|---|" + "---|" * len(domains))
for row in rows:
    if "routing" not in res[row, seeds[0]][0]:
        continue
    for i, site in enumerate(res[row, seeds[0]][0]["routing"]):
        hs, htok, halls, tvs, tops, tv1 = [], [], [], [], [], []
        for seed in seeds:
            s = res[row, seed][0]["routing"][i]
            dist = [x["prob"] for x in s["domains"]]
            hs.append(mean([entropy(p) for p in dist]))
            htok.append(mean([x["entropy"] for x in s["domains"]]))
            halls.append(entropy([mean(col) for col in zip(*dist)]))
            pairs = [(a, b) for a in range(len(dist)) for b in range(a + 1, len(dist))]
            tv = lambda ds: mean([0.5 * sum(abs(x - y) for x, y in zip(ds[a], ds[b])) for a, b in pairs])
            tvs.append(tv(dist))
            if "top1" in s["domains"][0]:
                tv1.append(tv([x["top1"] for x in s["domains"]]))
            tops.append(["e%d (%.2f)" % max((p[e], e) for e in range(len(p)))[::-1] for p in dist])
        tvtext = "%.3f" % mean(tvs) + (" / %.3f" % mean(tv1) if tv1 else "")
        cells = [", ".join(t[k] for t in tops) for k in range(len(domains))]
        print("| %s | %s | %.3f | %.3f | %.3f | %s | %s |" % (row, site["site"], mean(hs), mean(htok), mean(halls), tvtext,
                                                         " | ".join(cells)))
PY
cat "$out/RESULTS.md"
