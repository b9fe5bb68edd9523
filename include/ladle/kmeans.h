/* kmeans: the one k-means of ladle, for document embeddings ('ladle prep --clusters',
 * spherical, single precision, many points) and for UNCURL's spectral embedding of the
 * experts (Euclidean, double precision, few points, many restarts).
 *
 * Algorithm, per restart r = 0 .. restarts-1:
 *  - greedy k-means++ seeding: the first centre is point ladle_rng_below(seed, r, stream,
 *    0, n); centre c >= 1 is the best of 2 + floor(ln k) candidates, candidate t being
 *    drawn with probability proportional to the distance to the nearest centre so far
 *    (uniform when every distance is 0) by the 53-bit uniform of counter
 *    (seed, r, stream, 64 c + t); "best" is the lowest total distance once it is added.
 *  - Lloyd iterations, at most max_iters: every point to its nearest centre (ties: the
 *    lowest centre); an empty cluster takes the point farthest from its centre among the
 *    clusters that keep at least one (ties: the lowest point), so with k <= n no cluster
 *    is ever empty; every centre is then recomputed; stop once no assignment changes.
 * The restart with the lowest objective is kept (ties: the earliest). Its clusters are
 * numbered in order of first appearance (assign[0] = 0), its centroids likewise.
 *
 * Arithmetic is in double whatever the points' precision: distances to a block of
 * points come from one BLIS product (x.c), so Euclidean distances are computed as
 * |x|^2 - 2 x.c + |c|^2 and lose precision for points far from the origin next to their
 * spread (centre such data first). BLIS never splits the reduction over threads, so the
 * result is the same for any thread count: same input and options, same output. */
#ifndef LADLE_KMEANS_H
#define LADLE_KMEANS_H

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
} ladle_kmeans_options;

/* k-means of the n points x [n x d] into k clusters, 1 <= k <= n: assign[n] in 0..k-1,
 * every cluster non-empty; centroids [k x d] (may be NULL). Returns the objective, the
 * sum over the points of the distance to their centroid, computed directly (not through
 * the product) so that it is exactly 0 when every point equals its centroid (k = n). */
double ladle_kmeans(const double *x, size_t n, int d, int k, const ladle_kmeans_options *opt, double *centroids,
                    int *assign);

/* The same for single-precision points. Centroids are rounded to float after every
 * update, so that the returned ones are exactly those the assignments were made with:
 * once Lloyd has converged, ladle_kmeans_nearest_float on them gives back assign (but
 * for a point just moved into an empty cluster). */
double ladle_kmeans_float(const float *x, size_t n, int d, int k, const ladle_kmeans_options *opt,
                          float *centroids, int *assign);

/* The nearest of k centroids [k x d] to each of n points x [n x d] under metric, as in an
 * assignment step (ties: the lowest centroid): assign[n], and dist[n] (may be NULL) the
 * distance to it. */
void ladle_kmeans_nearest_float(const float *centroids, int k, int d, ladle_kmeans_metric metric, const float *x,
                                size_t n, int *assign, double *dist);

#endif
