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
    /* MPI counts are ints: a slice above INT_MAX floats needs more ranks */
    LADLE_CHECK(s->slice <= (size_t)INT_MAX, "slice of %zu floats exceeds MPI's int count; use more ranks", s->slice);
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
