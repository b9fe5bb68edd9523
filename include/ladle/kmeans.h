/* kmeans: the one k-means of ladle, for document embeddings ('ladle prep --clusters',
 * spherical, single precision, many points, possibly spread over MPI ranks) and for
 * UNCURL's spectral embedding of the experts (Euclidean, double precision, few points,
 * many restarts).
 *
 * Algorithm, per restart r = 0 .. restarts-1:
 *  - greedy k-means++ seeding on the sample: the points at indices floor(j n / S),
 *    j = 0 .. S-1, of the whole set of n points (S = options.sample, every point when 0 or
 *    >= n). The first centre is sample point ladle_rng_below(seed, r, stream, 0, S);
 *    centre c >= 1 is the best of 2 + floor(ln k) candidates, candidate t being drawn
 *    among the sample with probability proportional to the distance to the nearest centre
 *    so far (uniform when every distance is 0) by the 53-bit uniform of counter
 *    (seed, r, stream, 64 c + t); "best" is the lowest total distance over the sample
 *    once it is added.
 *  - Lloyd iterations over all the points, at most max_iters: every point to its nearest
 *    centre (ties: the lowest centre); an empty cluster takes the point farthest from its
 *    centre among the clusters that keep at least two (ties: the lowest index), so with
 *    k <= n no cluster is ever empty; every centre is then recomputed; stop once no
 *    assignment changes.
 * The restart with the lowest objective is kept (ties: the earliest). Its clusters are
 * numbered in order of first appearance (the cluster of point 0 is 0), its centroids
 * likewise.
 *
 * The same input gives the same output, bit for bit, for any BLIS thread count, any
 * number of ranks and any split of the points among them:
 *  - nearest centres: one BLIS product x.c per block of points (float points: sgemm,
 *    double: dgemm) ranks the centres; every centre whose product-based distance is
 *    within twice a bound on that product's rounding error of the best one is then
 *    compared by its distance summed term by term in double ((x - c)^2, or 1 - x.c), so
 *    a point's nearest centre does not depend on the block it was in or on how BLIS
 *    ordered the sum. Those direct distances are the ones returned and summed.
 *  - the sums of each cluster's points and the objective are accumulated in 64-bit fixed
 *    point (a scale set by the largest coordinate, or distance, and the number of points:
 *    resolution 2^-62 of their total) and all-reduced: exact, hence in any order. One
 *    all-reduce of sums and counts per Lloyd iteration (a second one only in an iteration
 *    that had to refill an empty cluster);
 *  - the seeding runs on every rank on the same sample, gathered from the ranks that hold
 *    its points.
 * Centres are rounded to the points' precision after every update, so that the returned
 * centroids are exactly those the assignments were made with. */
#ifndef LADLE_KMEANS_H
#define LADLE_KMEANS_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    /* distance |x - c|^2; a centre is the mean of its points */
    LADLE_KMEANS_EUCLIDEAN = 0,
    /* distance 1 - x.c; a centre is the mean of its points scaled to unit norm (kept
     * where it was if they sum to zero). For unit (or all-zero) points: cosine k-means,
     * and 1 - x.c is half of |x - c|^2, so seeding follows k-means++'s D^2 rule. */
    LADLE_KMEANS_SPHERICAL = 1,
} ladle_kmeans_metric;

typedef struct {
    ladle_kmeans_metric metric;
    int restarts;       /* >= 1 */
    int max_iters;      /* >= 1 Lloyd iterations per restart at most */
    uint64_t seed;
    uint64_t stream;    /* counter-RNG stream of the seeding: every caller its own */
    size_t sample;      /* seeding sample size S (0: every point); its S x d values are
                         * held by every rank */
    double *seconds;    /* NULL, or [1 + max_iters]: this rank's wall time of the (last
                         * restart's) seeding, then of each Lloyd iteration (benchmarks) */
} ladle_kmeans_options;

/* k-means of the n points x [n x d] into k clusters, 1 <= k <= n: assign[n] in 0..k-1,
 * every cluster non-empty; centroids [k x d] (may be NULL). Returns the objective, the
 * sum over the points of the direct distance to their centroid (exactly 0 when every
 * point equals its centroid, k = n). One process; MPI need not be initialised. */
double ladle_kmeans(const double *x, size_t n, int d, int k, const ladle_kmeans_options *opt, double *centroids,
                    int *assign);

/* The same for single-precision points (float centroids). Once Lloyd has converged,
 * ladle_kmeans_nearest_float on the centroids gives back assign (but for a point just
 * moved into an empty cluster). */
double ladle_kmeans_float(const float *x, size_t n, int d, int k, const ladle_kmeans_options *opt,
                          float *centroids, int *assign);

/* ladle_kmeans_float over points spread over the ranks of comm (collective): this rank
 * holds n of them, x [n x d], point i being point index[i] of the whole set of n_total
 * (index strictly increasing; NULL: 0..n-1), 1 <= k <= n_total. Every rank gets the same
 * centroids and objective, and assign[n] for its own points: exactly what
 * ladle_kmeans_float gives for the whole set in index order. comm = MPI_COMM_NULL: this
 * rank holds every point. */
double ladle_kmeans_float_mpi(const float *x, size_t n, const uint64_t *index, uint64_t n_total, int d, int k,
                              const ladle_kmeans_options *opt, MPI_Comm comm, float *centroids, int *assign);

/* The nearest of k centroids [k x d] to each of n points x [n x d] under metric, as in an
 * assignment step (ties: the lowest centroid): assign[n], and dist[n] (may be NULL) the
 * distance to it. */
void ladle_kmeans_nearest_float(const float *centroids, int k, int d, ladle_kmeans_metric metric, const float *x,
                                size_t n, int *assign, double *dist);

#endif
