#!/bin/sh
# The README's tour, run as written: the shell blocks between '<!-- tour:begin -->' and
# '<!-- tour:end -->' (in order, as one script, stopping at the first failing command), then
# the Python block between '<!-- python:begin -->' and '<!-- python:end -->', in a scratch
# directory laid out like the repository after command 1 (./ladle, share/ladle), with
# TOUR_CONF=tiny.conf (the README documents it) so that it takes seconds. Then checks what
# each step produced.
. "$top_srcdir/test/lib.sh"
make_tmp
: "${PYTHON3:=/usr/bin/python3}"
if ! "$PYTHON3" -c 'import h5py, numpy, matplotlib' 2>/dev/null; then
    echo "readme_tour: skipped (needs h5py, numpy and matplotlib for $PYTHON3)"
    exit 77
fi
README="$top_srcdir/README.md"
for path in /usr/include /usr/lib/python3.11/json /usr/share/man/man7; do
    [ -d "$path" ] || { echo "readme_tour: skipped (the tour reads $path, a Debian 12 directory)"; exit 77; }
done

# block BEGIN END LANG: the lines of the LANG fenced blocks between the markers
block() {
    awk -v begin="<!-- $1:begin -->" -v end="<!-- $1:end -->" -v fence='```'"$2" '
        $0 == begin { on = 1; next } $0 == end { on = 0; next }
        on && !code && $0 == fence { code = 1; next } on && code && $0 == "```" { code = 0; next }
        on && code { print }' "$README"
}
block tour sh > "$TMP/tour.sh"
block python python > "$TMP/tour.py"
# the README's tour must be the real thing: the commands the issue names are all there
for cmd in "ladle prep" "mpiexec -n 2 ladle train" "--dry-run" "ladle instantiate" "ladle eval" "--specialize" \
           "plot_alpha.py" "plot_metrics.py" "ladle prune"; do
    grep -q -- "$cmd" "$TMP/tour.sh" || fail "the README's tour has no '$cmd'"
done
[ -s "$TMP/tour.py" ] || fail "no python block in the README"

# the repository after command 1: ./ladle and share/ladle; python3 is $PYTHON3
mkdir -p "$TMP/repo/share" "$TMP/bin"
ln -s "$LADLE" "$TMP/repo/ladle"
ln -s "$top_srcdir/share/ladle" "$TMP/repo/share/ladle"
ln -s "$PYTHON3" "$TMP/bin/python3"
cd "$TMP/repo" || fail "cd"
# the tour starts 'mpiexec -n 2'; the tests' launcher decides oversubscription and binding
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_hwloc_base_binding_policy=none
start=$(date +%s)
PATH="$TMP/bin:$PATH" TOUR_CONF=tiny.conf timeout 300 sh -e "$TMP/tour.sh" > "$TMP/tour.out" 2>&1 \
    || { cat "$TMP/tour.out" >&2; fail "the README's tour failed (output above)"; }
PATH="$TMP/bin:$PATH" SHARE="$TMP/repo/share/ladle" timeout 120 sh -c "cd tour && python3 '$TMP/tour.py'" \
    > "$TMP/python.out" 2>&1 || { cat "$TMP/python.out" >&2; fail "the README's python block failed"; }
echo "the README's tour and python block ran in $(( $(date +%s) - start )) s"

# ---- what each step produced ------------------------------------------------------------
passed=0
out="$TMP/tour.out"
expect() { grep -Eq -- "$1" "$2" || { cat "$2" >&2; fail "$3 (no line matching '$1')"; }; passed=$((passed + 1)); }
expect "^wrote corpus.h5" "$out" "prep"
expect "^kind: clustered corpus" "$out" "inspect of the clustered corpus"
expect "^ladle [0-9.]*: dry run of 'ladle train' on 2 ranks" "$out" "dry run"
expect "^  MPI_Allgather " "$out" "dry run's collectives"
expect "^saved soup/model.h5" "$out" "soup training"
expect "^saved generic/model.h5" "$out" "generic training"
expect "^wrote c0.h5" "$out" "instantiate --weights"
expect "^wrote json.h5" "$out" "instantiate --like"
for d in c man python; do expect "^$d +[0-9]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[-+][0-9.]+ " "$out" "specialist row of '$d'"; done
expect "^mean +[0-9.]+ +[0-9.]+ +[0-9.]+ +[-+][0-9.]+" "$out" "the table's mean"
expect "^wrote alpha.png" "$out" "plot_alpha.py"
expect "^wrote curves.png" "$out" "plot_metrics.py"
expect "^saved moe/model.h5" "$out" "moe training"
expect "^saved router/model.h5" "$out" "router re-training of the pruned model"
expect "^saved tuned/model.h5" "$out" "fine-tuning of the pruned model"
for f in corpus.h5 soup/model.h5 generic/model.h5 c0.h5 json.h5 pruned.h5 task.h5 router/model.h5; do
    [ -s "tour/$f" ] || fail "the tour did not write $f"
done
for f in alpha.png curves.png; do
    [ "$(head -c 4 "tour/$f" | od -An -c | tr -d ' ')" = "211PNG" ] || fail "$f is not a PNG"
done
"$LADLE" inspect tour/soup/model.h5 | grep -q "^kind: soup" || fail "soup/model.h5 is not a soup"
"$LADLE" inspect tour/c0.h5 | grep -q "^kind: instantiated" || fail "c0.h5 is not an instantiated model"
passed=$((passed + 2))
# the python block merges what 'ladle instantiate' wrote
diff=$(sed -n 's/^max difference //p' "$TMP/python.out")
awk -v d="$diff" 'BEGIN { exit !(d != "" && d + 0 < 1e-5) }' \
    || { cat "$TMP/python.out" >&2; fail "read_checkpoint.theta differs from c0.h5 by '$diff'"; }
grep -q "^soup at step 100 domains" "$TMP/python.out" || { cat "$TMP/python.out" >&2; fail "python block's first line"; }
passed=$((passed + 1))
echo "readme_tour: $passed passed, 0 failed"
