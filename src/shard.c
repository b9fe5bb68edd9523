#include "ladle/shard.h"
#include "ladle/error.h"

#include <limits.h>

void ladle_shard_create(ladle_shard *s, size_t n, MPI_Comm comm)
{
    s->comm = comm;
    MPI_CHECK(MPI_Comm_rank(comm, &s->rank));
    MPI_CHECK(MPI_Comm_size(comm, &s->size));
    s->n = n;
    s->slice = (n + (size_t)s->size - 1) / (size_t)s->size;
    if (s->slice == 0) s->slice = 1;
    s->padded = s->slice * (size_t)s->size;
    /* MPI counts are ints: a slice above INT_MAX floats needs more ranks (every rank finds
     * this alike: a usage error) */
    if (s->slice > (size_t)INT_MAX)
        ladle_usage_error("%zu parameters on %d rank%s give slices of %zu floats, more than MPI's int count: use at "
                          "least %zu ranks, or a smaller model", n, s->size, s->size == 1 ? "" : "s", s->slice,
                          (n + (size_t)INT_MAX - 1) / (size_t)INT_MAX);
    size_t lo = (size_t)s->rank * s->slice;
    s->lo = lo < n ? lo : n;
    s->hi = lo + s->slice < n ? lo + s->slice : n;
}

void ladle_shard_allgather(const ladle_shard *s, const float *slice, float *full)
{
    MPI_CHECK(MPI_Allgather(slice, (int)s->slice, MPI_FLOAT, full, (int)s->slice, MPI_FLOAT, s->comm));
}

void ladle_shard_reduce_scatter(const ladle_shard *s, const float *full, float *slice)
{
    MPI_CHECK(MPI_Reduce_scatter_block(full, slice, (int)s->slice, MPI_FLOAT, MPI_SUM, s->comm));
}

double ladle_shard_sumsq(const ladle_shard *s, const float *slice)
{
    double local = 0.0, total = 0.0;
    for (size_t i = 0; i < s->hi - s->lo; i++) local += (double)slice[i] * slice[i];
    MPI_CHECK(MPI_Allreduce(&local, &total, 1, MPI_DOUBLE, MPI_SUM, s->comm));
    return total;
}

int ladle_range_part(size_t offset, size_t size, size_t lo, size_t hi, size_t *x0, size_t *x1)
{
    size_t a = offset > lo ? offset : lo;
    size_t b = offset + size < hi ? offset + size : hi;
    if (a >= b) return 0;
    *x0 = a - offset;
    *x1 = b - offset;
    return 1;
}

int ladle_flat_blocks(size_t x0, size_t x1, size_t cols, ladle_block blocks[3])
{
    int n = 0;
    if (x0 >= x1) return 0;
    size_t r0 = x0 / cols, c0 = x0 % cols, r1 = x1 / cols, c1 = x1 % cols;
    if (r0 == r1) {
        blocks[n++] = (ladle_block){r0, 1, c0, c1 - c0};
        return n;
    }
    if (c0 > 0) blocks[n++] = (ladle_block){r0, 1, c0, cols - c0};       /* tail of the first row */
    size_t first_full = c0 > 0 ? r0 + 1 : r0;
    if (r1 > first_full) blocks[n++] = (ladle_block){first_full, r1 - first_full, 0, cols};   /* whole rows */
    if (c1 > 0) blocks[n++] = (ladle_block){r1, 1, 0, c1};                /* head of the last row */
    return n;
}
