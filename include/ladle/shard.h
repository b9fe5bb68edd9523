/* shard: which slice of a flat vector each rank owns, and the collectives over it.
 *
 * A vector of n floats is padded to P * slice floats (slice = ceil(n / P)); rank r owns
 * [r * slice, (r + 1) * slice) of the padded vector, i.e. the real elements
 * [lo, hi) with hi clamped to n. Padding is kept at zero so it never affects norms. */
#ifndef LADLE_SHARD_H
#define LADLE_SHARD_H

#include <mpi.h>
#include <stddef.h>

typedef struct {
    MPI_Comm comm;
    int rank, size;
    size_t n;          /* real length */
    size_t slice;      /* padded slice length, equal on every rank */
    size_t padded;     /* slice * size */
    size_t lo, hi;     /* real elements owned: [lo, hi), hi - lo <= slice */
} ladle_shard;

void ladle_shard_create(ladle_shard *shard, size_t n, MPI_Comm comm);

/* full[0 .. padded) <- every rank's slice (MPI_Allgather). */
void ladle_shard_allgather(const ladle_shard *shard, const float *slice, float *full);

/* slice <- this rank's part of the element-wise sum of every rank's full vector
 * (MPI_Reduce_scatter_block). full must be padded length with zero padding. */
void ladle_shard_reduce_scatter(const ladle_shard *shard, const float *full, float *slice);

/* A flat element range [x0, x1) of a row-major matrix with `cols` columns is at most
 * three rectangular blocks: the tail of a row, whole rows, the head of a row. Fills
 * blocks[] and returns how many (0..3). */
typedef struct {
    size_t row, rows, col, cols;
} ladle_block;

int ladle_flat_blocks(size_t x0, size_t x1, size_t cols, ladle_block blocks[3]);

/* The part of a tensor (flat elements [offset, offset + size)) inside the flat range
 * [lo, hi), as offsets [x0, x1) into the tensor. Returns 0 when they do not overlap. */
int ladle_range_part(size_t offset, size_t size, size_t lo, size_t hi, size_t *x0, size_t *x1);

/* Sum of squares of every rank's slice, in double (MPI_Allreduce). */
double ladle_shard_sumsq(const ladle_shard *shard, const float *slice);

#endif
