#!/bin/sh
# bench_prep.sh DIR: 'ladle prep --clusters 1024' on text bigger than this machine's memory,
# at 1 and 2 ranks, against the read bound measured in the same run.
#
# Builds in DIR (once, and shares with bench_stream.sh): demo.h5, the demo corpus
# (share/ladle/demo-corpus.sh), and text/, TEXT_GB GB of text spliced from it
# (big_corpus.py --text: one directory per demo domain, gzip files of 64 MiB of text each,
# so that the text and the clustered corpus, which holds it twice, fit on the disk). Then:
#   - the read bounds: 'cat' of every file to /dev/null (reading the bytes), and 'gzip -dc'
#     (reading and decompressing them, as prep must), each in MB/s of the text they hold;
#   - ladle prep of text/ (a domain per directory, --split-doc-bytes 16384, K clusters) on
#     1 rank and on 2 ranks x 1 thread, each under /usr/bin/time: MB/s of input, its ratio
#     to the read bound (prep reads every file twice: once to embed, once to write), each
#     rank's peak RSS (target < 2 GB), and the 2-rank speedup;
#   - the two runs' reports (every domain's and cluster's documents and bytes) must agree;
#     the corpus should hold >= 1 M documents (printed, met or not).
# Each corpus is deleted after its run unless KEEP=1 (two of them and the text do not fit
# on a disk with 80 GB free); with KEEP=1 the 2-rank corpus stays as DIR/prep-2.h5.
# Environment: LADLE (./ladle), MPIEXEC (mpiexec), PYTHON3 (/usr/bin/python3, with h5py),
# TEXT_GB (30), K (1024), RANKS ("1 2"). Run by hand or by 'make bench-prep'; about an hour
# on 2 cores, most of it the 1-rank prep.
set -eu
me=bench_prep.sh
here=$(cd "$(dirname "$0")" && pwd)
share=$here/../../share/ladle
dir=${1:?usage: bench_prep.sh DIR}
LADLE=${LADLE:-./ladle}
MPIEXEC=${MPIEXEC:-mpiexec}
PYTHON3=${PYTHON3:-/usr/bin/python3}
text_gb=${TEXT_GB:-30}
k=${K:-1024}
ranks=${RANKS:-1 2}
. "$here/big_setup.sh"
if ! grep -q '^total ' "$dir/text.log" 2>/dev/null || ! ls "$dir"/text/*/*.txt.gz > /dev/null 2>&1; then
    echo "writing $dir/text ($text_gb GB) ..." >&2
    rm -rf "${dir:?}/text"
    "$PYTHON3" "$here/big_corpus.py" --text "$dir/demo.h5" "$dir/text" "$text_gb" > "$dir/text.log" ||
        die "big_corpus.py --text failed"
fi
domains=""
for d in "$dir"/text/*/; do
    d=${d%/}
    domains="$domains --domain ${d##*/}=$d"
done
input_bytes=$(awk '/^total / { print $2 }' "$dir/text.log")   # of text, not of gzip

# since T0: seconds from T0 (date +%s.%N) to now
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; }
t0=$(date +%s.%N)
cat "$dir"/text/*/*.txt.gz > /dev/null
cat_s=$(since "$t0")
t0=$(date +%s.%N)
gzip -dc "$dir"/text/*/*.txt.gz > /dev/null
gunzip_s=$(since "$t0")

results=""
for p in $ranks; do
    out=$dir/prep-$p.h5
    rm -f "$out" "$dir"/prep-$p.rss.*
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    $MPIEXEC --oversubscribe --bind-to none -n "$p" sh -c '/usr/bin/time -f "rss_kb %M" -o "$0.$OMPI_COMM_WORLD_RANK" "$@"' \
        "$dir/prep-$p.rss" "$LADLE" prep -o "$out" $domains --split-doc-bytes 16384 --clusters "$k" \
        > "$dir/prep-$p.log" 2>&1 || die "prep on $p ranks failed (see $dir/prep-$p.log)"
    s=$(since "$t0")
    [ -s "$out" ] || die "prep on $p ranks wrote no $out"
    rss=$(cat "$dir"/prep-$p.rss.* | awk '{ if ($2 > m) m = $2 } END { print m }')
    docs=$("$PYTHON3" -c 'import sys, h5py
f = h5py.File(sys.argv[1], "r")
print(sum(len(g[s + "_offsets"]) - 1 for g in f["domains"].values() for s in ("train", "valid")))' "$out")
    results="$results$p $s $rss $docs
"
    grep -v '^wrote ' "$dir/prep-$p.log" > "$dir/prep-$p.report"
    [ "${KEEP:-0}" = 1 ] && [ "$p" = 2 ] || rm -f "$out"
done
first=$(echo $ranks | cut -d' ' -f1)
for p in $ranks; do
    cmp -s "$dir/prep-$first.report" "$dir/prep-$p.report" ||
        die "the reports of $first and $p ranks differ ($dir/prep-$first.report, $dir/prep-$p.report)"
done

mb=$(awk -v b="$input_bytes" 'BEGIN { printf "%.0f", b / 1e6 }')
echo "ladle prep benchmark: $mb MB of text in $(ls "$dir"/text/*/*.txt.gz | wc -l) gzip files, $(echo $domains | wc -w | awk '{ print $1 / 2 }') domains, --split-doc-bytes 16384 --clusters $k"
rate() { awk -v b="$input_bytes" -v s="$1" 'BEGIN { printf "%.1f", b / 1e6 / s }'; }
echo "read bound: cat FILES > /dev/null: $cat_s s, $(rate "$cat_s") MB/s of text"
echo "read and decompress bound: gzip -dc FILES > /dev/null: $gunzip_s s, $(rate "$gunzip_s") MB/s of text"
printf "%-6s %10s %10s %10s %12s %12s %16s\n" ranks seconds MB/s "x cat" "x gzip -dc" documents "peak RSS/rank"
printf '%s' "$results" | while read -r p s rss docs; do
    printf "%-6s %10.1f %10.1f %10.3f %12.3f %12d %12d MiB\n" "$p" "$s" "$(rate "$s")" \
        "$(awk -v c="$cat_s" -v s="$s" 'BEGIN { print c / s }')" "$(awk -v c="$gunzip_s" -v s="$s" 'BEGIN { print c / s }')" \
        "$docs" "$((rss / 1024))"
done
printf '%s' "$results" | awk -v first="$first" '
    $1 == first { t1 = $2 } { t[$1] = $2; r = $3; d = $4; if (r > m) m = r }
    END { for (p in t) if (p != first) printf "speedup %s ranks / %s: %.2f\n", p, first, t1 / t[p]
          printf "documents: %d (target >= 1 M): %s\n", d, (d >= 1000000) ? "met" : "NOT met"
          printf "peak RSS per rank, all runs: %d MiB (target < 2048): %s\n", m / 1024, (m < 2 * 1048576) ? "met" : "NOT met" }'
