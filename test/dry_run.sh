#!/bin/sh
# 'ladle train --dry-run': its numbers against independent arithmetic and h5py.
#  - the parameter counts (S, dense bank, low-rank factors, router) are the sums of the
#    dataset sizes of a model file trained with the same configuration (h5py);
#  - on 1, 2 and 3 ranks the per-rank shares of S, of the bank and of the batch sum to
#    the totals, each rank owning at most ceil(p / P) elements; a rank's bank memory is
#    3 x 4 x its bank share; activations grow linearly with the rank's sequences and hold
#    at least the logits, probabilities, their gradient and the attention matrices;
#  - the all-gather and the reduce-scatter move the padded merged-parameter vector
#    (P x ceil(p / P) floats), the broadcasts k and n floats, the all-reduce 3 + n doubles;
#  - under mpiexec -n 2 it prints exactly what --ranks 2 prints from one process, and the
#    trainer's own memory report agrees with it;
#  - nothing is written: no run.dir, the corpus and an existing run untouched;
#  - bad uses exit 2 naming the flag or key.
# $SOUP, $LOWRANK and $C are lists of key=value words, split on purpose:
# shellcheck disable=SC2086
. "$top_srcdir/test/lib.sh"
make_tmp
: "${PYTHON3:=/usr/bin/python3}"
if ! "$PYTHON3" -c 'import h5py' 2>/dev/null; then
    echo "dry_run: skipped (needs h5py for $PYTHON3)"
    exit 77
fi
make_small_corpus "$TMP/corpus.h5"
passed=0
C="data.corpus=$TMP/corpus.h5"
# n = 5 experts and a parameter count that is not a multiple of 2 or 3 (C = 35, T = 33):
# uneven shards on 2 and 3 ranks
SOUP="$TINY model.dim=35 model.heads=5 model.context=33 soup.experts=5 router.hidden=16"
LOWRANK="$SOUP soup.rank=2 soup.experts_on=blocks"

# field NAME FILE: the number after a parameter line's label ("shared S", "expert bank", ...)
param() {
    awk -v want="$1" '/^parameters:/ { on = 1; next } /^per rank/ { on = 0 }
        on { label = $1; n = 1; while ($(n + 1) !~ /^[0-9]+$/) { n++; label = label " " $n }
             if (label == want) print $(n + 1) }' "$2"
}
# the rank table, one line per rank: "rank sequences S-owned bank-owned memory" (the dry run
# prints a row per run of ranks with the same numbers, "first-last")
ranks_table() {
    awk '/^ +ranks +sequences/ { on = 1; next } /^memory of rank/ { on = 0 }
        on { n = split($1, r, "-"); last = n == 2 ? r[2] : r[1]
             for (i = r[1]; i <= last; i++) print i, $2, $3, $4, $5 }' "$1"
}
# collective CALL-AND-WHAT FIELD FILE: FIELD (count, bytes, wire) of the line starting so
collective() {
    awk -v want="$1" -v field="$2" 'index($0, "  " want) == 1 {
        if (field == "count") print $(NF - 3); else if (field == "bytes") print $(NF - 1); else print $NF }' "$3"
}

# ---- the parameter counts are a model file's (h5py) ---------------------------------
for kind in soup lowrank; do
    if [ $kind = soup ]; then cfg=$SOUP; else cfg=$LOWRANK; fi
    "$LADLE" train $cfg $C run.dir="$TMP/$kind" --dry-run --ranks 1 > "$TMP/$kind.plan" 2>&1 \
        || { cat "$TMP/$kind.plan" >&2; fail "$kind: dry run"; }
    "$LADLE" train $cfg $C train.steps=1 train.warmup=0 run.dir="$TMP/$kind" > "$TMP/$kind.train" 2>&1 \
        || { cat "$TMP/$kind.train" >&2; fail "$kind: one training step"; }
    "$PYTHON3" - "$TMP/$kind/model.h5" > "$TMP/$kind.h5py" <<'PY' || fail "$kind: h5py"
import sys, h5py
f = h5py.File(sys.argv[1], "r")
sizes = {"shared": 0, "bank": 0, "lowrank": 0, "router": 0}
def add(name, obj):
    if not isinstance(obj, h5py.Dataset):
        return
    top = name.split("/")[0]
    key = {"shared": "shared", "router": "router"}.get(top)
    if top == "experts":
        key = "lowrank" if name.endswith("/U") or name.endswith("/V") else "bank"
    if key:
        sizes[key] += obj.size
f.visititems(add)
print(sizes["shared"], sizes["bank"], sizes["lowrank"], sizes["router"])
PY
    read -r h_shared h_bank h_lowrank h_router < "$TMP/$kind.h5py"
    shared=$(param "shared S" "$TMP/$kind.plan"); bank=$(param "expert bank" "$TMP/$kind.plan")
    lowrank=$(param "low-rank factors" "$TMP/$kind.plan"); router=$(param "router" "$TMP/$kind.plan")
    total=$(param "total" "$TMP/$kind.plan")
    [ "$shared" = "$h_shared" ] || fail "$kind: dry run says S has '$shared' parameters, model.h5 holds $h_shared"
    [ "${bank:-0}" = "$h_bank" ] || fail "$kind: dry run's bank '$bank' != model.h5's experts $h_bank"
    [ "${lowrank:-0}" = "$h_lowrank" ] || fail "$kind: dry run's low-rank factors '$lowrank' != model.h5's $h_lowrank"
    [ "$router" = "$h_router" ] || fail "$kind: dry run's router '$router' != model.h5's $h_router"
    [ "$total" = $((h_shared + h_bank + h_lowrank + h_router)) ] || fail "$kind: total $total is not the sum"
    echo "$kind: S $shared, bank ${bank:-0}, low-rank ${lowrank:-0}, router $router: as in model.h5"
    passed=$((passed + 1))
done
p=$(param "shared S" "$TMP/soup.plan")
bank=$(param "expert bank" "$TMP/soup.plan")
[ $((p % 2)) -ne 0 ] && [ $((p % 3)) -ne 0 ] || fail "pick a model whose p ($p) is not a multiple of 2 or 3"

# ---- shares, memory and collectives on 1, 2, 3 ranks ---------------------------------
for P in 1 2 3; do
    "$LADLE" train $SOUP $C run.dir="$TMP/none" --dry-run --ranks $P > "$TMP/plan$P" 2>&1 \
        || { cat "$TMP/plan$P" >&2; fail "dry run for $P ranks"; }
    ranks_table "$TMP/plan$P" > "$TMP/table$P"
    slice=$(( (p + P - 1) / P ))
    awk -v P=$P -v p="$p" -v bank="$bank" -v batch=6 -v slice=$slice '
        { rows++; seq += $2; s += $3; b += $4
          if ($1 != rows - 1) { print "rank column " $1 " at row " rows; bad = 1 }
          if ($3 > slice) { print "rank " $1 " owns " $3 " > ceil(p/P) = " slice; bad = 1 }
          if ($5 <= 0) { print "rank " $1 " memory " $5; bad = 1 } }
        END { if (rows != P) { print rows " rows for " P " ranks"; bad = 1 }
              if (seq != batch) { print "sequences sum to " seq; bad = 1 }
              if (s != p) { print "S shares sum to " s ", p = " p; bad = 1 }
              if (b != bank) { print "bank shares sum to " b ", bank = " bank; bad = 1 }
              exit bad }' "$TMP/table$P" || fail "$P ranks: shares do not add up"
    # the largest rank's itemised bank memory: its share of 4-byte floats, and twice that for
    # AdamW's moments
    largest=$(sed -n 's/^memory of rank \([0-9]*\), the largest.*/\1/p' "$TMP/plan$P")
    own=$(awk -v r="$largest" '$1 == r { print $4 }' "$TMP/table$P")
    item=$(awk '/^  expert bank shard  / { print $(NF - 2) }' "$TMP/plan$P")
    moments=$(awk '/^  AdamW m and v of the bank shard/ { print $(NF - 2) }' "$TMP/plan$P")
    [ "$item" = $((4 * own)) ] && [ "$moments" = $((8 * own)) ] \
        || fail "$P ranks: bank memory $item + $moments for a share of $own"
    # the items add up to the rank's total
    awk '/^memory of rank/ { on = 1; next } /^collectives/ { on = 0 }
         on && $1 != "total" { sum += $(NF - 2) } on && $1 == "total" { total = $(NF - 2) }
         END { exit sum != total }' "$TMP/plan$P" || fail "$P ranks: memory items do not add up to the total"
    # collectives: all-gather and reduce-scatter of the padded merged vector, P x ceil(p / P) floats
    padded=$((P * slice))
    [ "$(collective "MPI_Allgather" count "$TMP/plan$P")" = $padded ] || fail "$P ranks: all-gather count"
    [ "$(collective "MPI_Allgather" bytes "$TMP/plan$P")" = $((4 * padded)) ] || fail "$P ranks: all-gather bytes"
    [ "$(collective "MPI_Reduce_scatter_block" bytes "$TMP/plan$P")" = $((4 * padded)) ] || fail "$P ranks: reduce-scatter bytes"
    [ "$(collective "MPI_Bcast                 domain weights h" bytes "$TMP/plan$P")" = 12 ] || fail "$P ranks: h is 3 floats"
    [ "$(collective "MPI_Bcast                 expert coefficients" bytes "$TMP/plan$P")" = 20 ] || fail "$P ranks: alpha is 5 floats"
    [ "$(collective "MPI_Allreduce             loss" bytes "$TMP/plan$P")" = 64 ] || fail "$P ranks: 3 + 5 doubles"
    wire=$(collective "MPI_Allgather" wire "$TMP/plan$P")
    [ "$wire" = $(( 4 * padded * (P - 1) / P )) ] || fail "$P ranks: all-gather wire $wire"
    passed=$((passed + 1))
done
echo "shares: $(wc -l < "$TMP/table1") + $(wc -l < "$TMP/table2") + $(wc -l < "$TMP/table3") ranks add up to p = $p, bank = $bank"

# activations: exactly a + b B for B sequences (batch 6: 6 on one rank, 3 on two, 2 on three), and
# at least the logits, probabilities and their gradient (3 B T 256 floats) plus the
# attention matrices (L B heads T^2 floats): L 2, T 33, heads 5
acts() { awk '/^  activations/ { print $(NF - 2) }' "$1"; }
a6=$(acts "$TMP/plan1"); a3=$(acts "$TMP/plan2"); a2=$(acts "$TMP/plan3")
awk -v a6="$a6" -v a3="$a3" -v a2="$a2" 'BEGIN {
    b = a3 - a2; r = (a6 - a3) / (3 * b)
    low = 4 * (3 * 6 * 33 * 256 + 2 * 6 * 5 * 33 * 33)
    printf "activations: %d, %d, %d bytes for 6, 3, 2 sequences (slope ratio %.4f, lower bound %d)\n", a6, a3, a2, r, low
    exit !(b > 0 && a6 - a3 == 3 * b && a6 >= low && a6 < 4 * low) }' || fail "activations are not what the trainer allocates"
passed=$((passed + 1))
# routed sites keep caches of their own, also linear in B, and on top of the dense layers'
ROUTED="$SOUP model.ffn=moe,smear smear.segment=11"
for P in 1 2 3; do
    # shellcheck disable=SC2086
    "$LADLE" train $ROUTED $C run.dir="$TMP/none" --dry-run --ranks $P > "$TMP/routed$P" 2>&1 \
        || { cat "$TMP/routed$P" >&2; fail "dry run of moe,smear sites on $P ranks"; }
done
r6=$(acts "$TMP/routed1"); r3=$(acts "$TMP/routed2"); r2=$(acts "$TMP/routed3")
echo "routed activations: $r6, $r3, $r2 bytes for 6, 3, 2 sequences"
[ $((r6 - r3)) -eq $((3 * (r3 - r2))) ] && [ $((r3 - r2)) -gt $((a3 - a2)) ] \
    || fail "moe/smear caches are not counted linearly on top of the dense activations"
passed=$((passed + 1))

# ---- under mpiexec: the same plan, and the trainer's own report agrees ----------------
run_mpi 2 "dry run of 'ladle train' on 2 ranks" "$LADLE" train $SOUP $C run.dir="$TMP/none" --dry-run \
    || fail "dry run under mpiexec -n 2"
cmp "$TMP/out" "$TMP/plan2" > /dev/null || { diff "$TMP/out" "$TMP/plan2" >&2; fail "mpiexec -n 2 and --ranks 2 differ"; }
run_mpi 2 "^done: 1 steps" "$LADLE" train $SOUP $C train.steps=1 train.warmup=0 run.dir="$TMP/two" \
    || fail "training on 2 ranks"
said=$(sed -n 's/.*rank 0 holds \([0-9.]*\) MiB.*/\1/p' "$TMP/out")
planned=$(awk '$1 == 0 { printf "%.2f", $5 / 1048576 }' "$TMP/table2")
[ -n "$said" ] && [ "$said" = "$planned" ] || fail "the trainer reports $said MiB on rank 0, the dry run $planned"
passed=$((passed + 1))

# ---- nothing written ---------------------------------------------------------------------
[ ! -e "$TMP/none" ] || fail "a dry run created run.dir"
snapshot() { (cd "$TMP" && ls -lR --time-style=full-iso corpus.h5 soup && cksum corpus.h5 soup/*); }
snapshot > "$TMP/before"
"$LADLE" train $SOUP $C run.dir="$TMP/soup" train.steps=2 --dry-run > "$TMP/resume.plan" 2>&1 \
    || { cat "$TMP/resume.plan" >&2; fail "dry run over an existing run"; }
grep -q "^run.dir '$TMP/soup': holds a run, which would be resumed" "$TMP/resume.plan" || fail "no resume notice"
grep -q '^  \* train.steps = 2$' "$TMP/resume.plan" || fail "a non-default value is not marked"
grep -q '^    train.seed = 1$' "$TMP/resume.plan" || fail "a default value is marked"
snapshot > "$TMP/after"
cmp "$TMP/before" "$TMP/after" > /dev/null || { diff "$TMP/before" "$TMP/after" >&2; fail "a dry run changed files"; }
passed=$((passed + 1))

# ---- bad uses ---------------------------------------------------------------------------
refuse "--ranks 2 only goes with --dry-run" train $SOUP $C run.dir="$TMP/none" --ranks 2
refuse "--ranks '0': expected an integer in \[1, 1048576\]" train $SOUP $C --dry-run --ranks 0
refuse "data.corpus is not set" train $SOUP --dry-run
refuse "context 60000" train $C model.context=60000 model.dim=8 model.heads=1 model.layers=1 --dry-run
run_mpi 2 "launched on 2 ranks" "$LADLE" train $SOUP $C --dry-run --ranks 3 && fail "--ranks 3 on 2 ranks accepted"
[ ! -e "$TMP/none" ] || fail "a refused dry run created run.dir"
echo "dry_run: $passed passed, 0 failed"
