#!/bin/sh
# Shard slices and collectives on 1, 2 and 3 ranks.
. "$top_srcdir/test/lib.sh"
make_tmp
for n in 1 2 3; do
    run_mpi $n "test_shard (ranks=$n): [0-9]* passed, 0 failed" "$top_builddir/test/test_shard" || fail "test_shard on $n ranks"
    tail -1 "$TMP/out"
done
echo "shard_ranks: 3 passed, 0 failed"
