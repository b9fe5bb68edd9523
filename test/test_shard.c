/* Slices and collectives on P ranks: slices tile [0, n) exactly once for awkward n,
 * all-gather reassembles, reduce-scatter sums, norms agree. Run under mpiexec. */
#include "ladle/shard.h"
#include "testutil.h"

#include <mpi.h>
#include <stdlib.h>

static void check_n(test_counts *c, size_t n, int rank, int size)
{
    ladle_shard s;
    ladle_shard_create(&s, n, MPI_COMM_WORLD);
    EXPECT(c, s.padded >= n && s.padded % (size_t)size == 0 && s.padded - n < (size_t)size + s.slice,
           "n=%zu: padded %zu", n, s.padded);
    /* every element owned exactly once */
    unsigned long long bounds[2] = {s.lo, s.hi};
    unsigned long long *all = malloc(2 * (size_t)size * sizeof *all);
    MPI_Allgather(bounds, 2, MPI_UNSIGNED_LONG_LONG, all, 2, MPI_UNSIGNED_LONG_LONG, MPI_COMM_WORLD);
    size_t next = 0;
    for (int r = 0; r < size; r++) {
        EXPECT(c, all[2 * r] == next || all[2 * r] == all[2 * r + 1], "n=%zu rank %d starts at %llu, expected %zu", n, r, all[2 * r], next);
        if (all[2 * r + 1] > all[2 * r]) next = all[2 * r + 1];
    }
    EXPECT(c, next == n, "n=%zu: slices end at %zu", n, next);
    free(all);

    /* all-gather: slice value = global index */
    float *slice = calloc(s.slice, sizeof(float)), *full = calloc(s.padded, sizeof(float));
    for (size_t i = s.lo; i < s.hi; i++) slice[i - s.lo] = (float)i;
    ladle_shard_allgather(&s, slice, full);
    int ok = 1;
    for (size_t i = 0; i < n; i++) ok &= full[i] == (float)i;
    EXPECT(c, ok, "n=%zu: all-gather does not reassemble the vector", n);

    /* reduce-scatter: rank r contributes (r + 1) * (i + 1); the sum is P(P+1)/2 (i + 1) */
    for (size_t i = 0; i < s.padded; i++) full[i] = i < n ? (float)(rank + 1) * (float)(i + 1) : 0.0f;
    ladle_shard_reduce_scatter(&s, full, slice);
    ok = 1;
    float tri = (float)(size * (size + 1) / 2);
    for (size_t i = s.lo; i < s.hi; i++) ok &= slice[i - s.lo] == tri * (float)(i + 1);
    for (size_t i = s.hi - s.lo; i < s.slice; i++) ok &= slice[i] == 0.0f;
    EXPECT(c, ok, "n=%zu: reduce-scatter sum wrong on rank %d", n, rank);

    double sumsq = ladle_shard_sumsq(&s, slice), expect = 0;
    for (size_t i = 0; i < n; i++) expect += (double)tri * (i + 1) * tri * (i + 1);
    EXPECT(c, rel_err(sumsq, expect, 1e-30) < 1e-6, "n=%zu: sumsq %g vs %g", n, sumsq, expect);
    free(slice);
    free(full);
}

int main(int argc, char **argv)
{
    (void)argc; (void)argv;
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    test_counts c = {0, 0};
    size_t sizes[] = {1, 2, 3, 7, 100, 1001, 65537};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) check_n(&c, sizes[i], rank, size);
    /* the verdict is the worst rank's */
    int failed = c.failed, any_failed = 0;
    MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    int rc = 0;
    if (rank == 0) {
        char name[64];
        snprintf(name, sizeof name, "test_shard (ranks=%d)", size);
        c.failed = any_failed ? (c.failed > any_failed ? c.failed : any_failed) : 0;
        rc = test_summary(&c, name);
    }
    MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Finalize();
    return rc;
}
