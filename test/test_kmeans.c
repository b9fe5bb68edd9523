/* Unit tests of kmeans.h, both metrics and both precisions: planted clusters recovered
 * exactly, k = 1 and k = n, empty clusters refilled, the objective against a brute-force
 * one and against a single Lloyd iteration, restarts, determinism, the nearest centroid
 * against brute force (exactly, near ties included), seeding on a sample, and the points
 * spread over the ranks giving the one-process result bit for bit. Run directly (one
 * rank) or under mpiexec (test/prep_ranks.sh: 2 and 3 ranks). */
#include "ladle/kmeans.h"
#include "ladle/rng.h"
#include "testutil.h"

#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static test_counts T;

/* Test data from the counter RNG on a stream of its own. */
#define TEST_STREAM 97

static double normal(uint64_t seed, uint64_t step, uint64_t index)
{
    return ladle_rng_normal(seed, step, TEST_STREAM, index);
}

static void normalise(double *v, int d)
{
    double s = 0.0;
    for (int t = 0; t < d; t++) s += v[t] * v[t];
    if (s > 0.0)
        for (int t = 0; t < d; t++) v[t] /= sqrt(s);
}

/* n points in d dimensions around k centres, point i from cluster truth[i] (random, every
 * cluster used). Euclidean: centres on a grid of spacing 10 and noise `noise` per
 * coordinate; spherical: random unit directions, noise added, then unit rows. */
static void planted(double *x, int *truth, size_t n, int d, int k, double noise, ladle_kmeans_metric metric,
                    uint64_t seed)
{
    double *centre = malloc(sizeof(double) * (size_t)k * (size_t)d);
    for (int j = 0; j < k; j++) {
        double *c = centre + (size_t)j * d;
        for (int t = 0; t < d; t++)
            c[t] = metric == LADLE_KMEANS_EUCLIDEAN ? 10.0 * ((j >> (t % 8)) & 1) + 10.0 * (t == 0) * (j >> 3)
                                                    : normal(seed, 1, (uint64_t)(j * d + t));
        if (metric == LADLE_KMEANS_SPHERICAL) normalise(c, d);
    }
    for (size_t i = 0; i < n; i++) {
        truth[i] = i < (size_t)k ? (int)(k - 1 - (int)i) : (int)ladle_rng_below(seed, 2, TEST_STREAM, i, (uint64_t)k);
        for (int t = 0; t < d; t++)
            x[i * d + t] = centre[(size_t)truth[i] * d + t] + noise * normal(seed, 3, i * (size_t)d + (size_t)t);
        if (metric == LADLE_KMEANS_SPHERICAL) normalise(x + i * d, d);
    }
    free(centre);
}

static float *to_float(const double *x, size_t count)
{
    float *f = malloc(sizeof(float) * count);
    for (size_t i = 0; i < count; i++) f[i] = (float)x[i];
    return f;
}

static double *to_double(const float *x, size_t count)
{
    double *v = malloc(sizeof(double) * count);
    for (size_t i = 0; i < count; i++) v[i] = x[i];
    return v;
}

/* labels renumbered by first appearance: two labellings are the same partition iff
 * their renumberings are equal. */
static void first_appearance(const int *labels, size_t n, int k, int *out)
{
    int *number = malloc(sizeof(int) * (size_t)k);
    for (int j = 0; j < k; j++) number[j] = -1;
    int next = 0;
    for (size_t i = 0; i < n; i++) {
        if (number[labels[i]] < 0) number[labels[i]] = next++;
        out[i] = number[labels[i]];
    }
    free(number);
}

/* assign is truth up to a relabelling and numbered by first appearance (kmeans.h's
 * promise), so it must equal truth renumbered. */
static int recovered(const int *assign, const int *truth, size_t n, int k)
{
    int *want = malloc(sizeof(int) * n);
    first_appearance(truth, n, k, want);
    int same = memcmp(want, assign, sizeof(int) * n) == 0;
    free(want);
    return same;
}

/* Every label in 0..k-1, each used, numbered by first appearance. */
static int canonical(const int *assign, size_t n, int k)
{
    int next = 0;
    for (size_t i = 0; i < n; i++) {
        if (assign[i] < 0 || assign[i] > next) return 0;
        if (assign[i] == next) next++;
    }
    return next == k;
}

static double distance(const double *x, const double *c, int d, ladle_kmeans_metric metric)
{
    double s = 0.0;
    for (int t = 0; t < d; t++) s += metric == LADLE_KMEANS_EUCLIDEAN ? (x[t] - c[t]) * (x[t] - c[t]) : x[t] * c[t];
    return metric == LADLE_KMEANS_EUCLIDEAN ? s : 1.0 - s;
}

static double brute_objective(const double *x, size_t n, int d, const double *c, const int *assign,
                              ladle_kmeans_metric metric)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += distance(x + i * d, c + (size_t)assign[i] * d, d, metric);
    return s;
}

/* Largest difference between each centroid and what its points make it: their mean, or
 * for spherical that mean scaled to unit norm. */
static double centroid_error(const double *x, size_t n, int d, int k, const double *c, const int *assign,
                             ladle_kmeans_metric metric)
{
    double *mean = calloc((size_t)k * (size_t)d, sizeof(double));
    int *count = calloc((size_t)k, sizeof(int));
    for (size_t i = 0; i < n; i++) {
        count[assign[i]]++;
        for (int t = 0; t < d; t++) mean[(size_t)assign[i] * d + t] += x[i * d + t];
    }
    double worst = 0.0;
    for (int j = 0; j < k; j++) {
        double *m = mean + (size_t)j * d;
        for (int t = 0; t < d; t++) m[t] /= count[j];
        if (metric == LADLE_KMEANS_SPHERICAL) normalise(m, d);
        for (int t = 0; t < d; t++) worst = fmax(worst, fabs(m[t] - c[(size_t)j * d + t]));
    }
    free(mean);
    free(count);
    return worst;
}

/* Every point's centroid is a nearest one (by brute force, within rounding). */
static int assigned_to_nearest(const double *x, size_t n, int d, int k, const double *c, const int *assign,
                               ladle_kmeans_metric metric)
{
    for (size_t i = 0; i < n; i++) {
        double own = distance(x + i * d, c + (size_t)assign[i] * d, d, metric);
        for (int j = 0; j < k; j++)
            if (distance(x + i * d, c + (size_t)j * d, d, metric) < own - 1e-9) return 0;
    }
    return 1;
}

static const char *metric_name(ladle_kmeans_metric metric)
{
    return metric == LADLE_KMEANS_EUCLIDEAN ? "euclidean" : "spherical";
}

/* ---- planted clusters ----------------------------------------------------------------- */

static void test_planted(ladle_kmeans_metric metric, size_t n, int d, int k, double noise, int restarts, int seeds)
{
    double *x = malloc(sizeof(double) * n * (size_t)d), *c = malloc(sizeof(double) * (size_t)k * (size_t)d);
    int *truth = malloc(sizeof(int) * n), *assign = malloc(sizeof(int) * n), *again = malloc(sizeof(int) * n);
    float *cf = malloc(sizeof(float) * (size_t)k * (size_t)d);
    int found = 0, found_float = 0, consistent = 1, near_ok = 1;
    double worst_centroid = 0.0, worst_objective = 0.0;
    for (int s = 0; s < seeds; s++) {
        planted(x, truth, n, d, k, noise, metric, 1000 + (uint64_t)s);
        ladle_kmeans_options opt = {metric, restarts, 100, (uint64_t)s, 5, 0, NULL};
        double obj = ladle_kmeans(x, n, d, k, &opt, c, assign);
        found += recovered(assign, truth, n, k);
        worst_centroid = fmax(worst_centroid, centroid_error(x, n, d, k, c, assign, metric));
        worst_objective = fmax(worst_objective, rel_err(obj, brute_objective(x, n, d, c, assign, metric), 1e-9));
        consistent &= assigned_to_nearest(x, n, d, k, c, assign, metric);

        /* the same points in single precision: the same partition, and the returned
         * centroids assign the points as the last Lloyd iteration did */
        float *xf = to_float(x, n * (size_t)d);
        ladle_kmeans_float(xf, n, d, k, &opt, cf, again);
        found_float += recovered(again, truth, n, k);
        ladle_kmeans_nearest_float(cf, k, d, metric, xf, n, assign, NULL);
        near_ok &= memcmp(assign, again, sizeof(int) * n) == 0;
        free(xf);
    }
    EXPECT(&T, found == seeds, "%s n=%zu d=%d k=%d: planted clusters recovered for %d of %d seeds", metric_name(metric),
           n, d, k, found, seeds);
    EXPECT(&T, found_float == seeds, "%s n=%zu d=%d k=%d (float): planted clusters recovered for %d of %d seeds",
           metric_name(metric), n, d, k, found_float, seeds);
    EXPECT(&T, worst_centroid < 1e-12, "%s k=%d: centroids differ from their points' means by %g", metric_name(metric),
           k, worst_centroid);
    EXPECT(&T, worst_objective < 1e-12, "%s k=%d: objective differs from brute force by %g (relative)",
           metric_name(metric), k, worst_objective);
    EXPECT(&T, consistent, "%s k=%d: a converged point is not at its nearest centroid", metric_name(metric), k);
    EXPECT(&T, near_ok, "%s k=%d: nearest centroids of the float result differ from its assignments",
           metric_name(metric), k);
    free(x); free(c); free(truth); free(assign); free(again); free(cf);
}

/* ---- k = 1, k = n ------------------------------------------------------------------------ */

static void test_extreme_k(ladle_kmeans_metric metric)
{
    enum { N = 30, D = 4 };
    double x[N * D], c[N * D];
    int truth[N], assign[N];
    planted(x, truth, N, D, 3, 1.0, metric, 7);
    ladle_kmeans_options opt = {metric, 3, 50, 11, 5, 0, NULL};

    double obj = ladle_kmeans(x, N, D, 1, &opt, c, assign);
    int zeros = 1;
    for (int i = 0; i < N; i++) zeros &= assign[i] == 0;
    EXPECT(&T, zeros, "%s k=1: a point outside cluster 0", metric_name(metric));
    EXPECT(&T, centroid_error(x, N, D, 1, c, assign, metric) < 1e-12, "%s k=1: the centroid is not the (unit) mean",
           metric_name(metric));
    EXPECT(&T, rel_err(obj, brute_objective(x, N, D, c, assign, metric), 1e-9) < 1e-12, "%s k=1: objective %g",
           metric_name(metric), obj);

    /* k = n distinct points: each its own cluster, numbered in point order */
    obj = ladle_kmeans(x, N, D, N, &opt, c, assign);
    int own = 1, exact = 1;
    for (int i = 0; i < N; i++) own &= assign[i] == i;
    for (int i = 0; i < N * D; i++) exact &= metric == LADLE_KMEANS_EUCLIDEAN ? c[i] == x[i] : fabs(c[i] - x[i]) < 1e-15;
    EXPECT(&T, own, "%s k=n: points do not get one cluster each, in order", metric_name(metric));
    EXPECT(&T, exact, "%s k=n: centroids are not the points", metric_name(metric));
    EXPECT(&T, metric == LADLE_KMEANS_EUCLIDEAN ? obj == 0.0 : fabs(obj) < 1e-13, "%s k=n: objective %g",
           metric_name(metric), obj);
}

/* ---- empty clusters ------------------------------------------------------------------- */

/* More clusters than distinct points: Lloyd leaves clusters empty, which must be refilled
 * (every cluster non-empty, numbered by first appearance). */
static void test_empty_clusters(void)
{
    double x[40];
    int assign[40];
    double c[40 * 3];
    int ok = 1, zero = 1;
    for (int i = 0; i < 30; i++) x[i] = 0.25;   /* 10 identical points in 3-D */
    for (int k = 1; k <= 10; k++) {
        ladle_kmeans_options opt = {LADLE_KMEANS_EUCLIDEAN, 3, 100, 5, 5, 0, NULL};
        double obj = ladle_kmeans(x, 10, 3, k, &opt, c, assign);
        ok &= canonical(assign, 10, k);
        zero &= obj == 0.0;
    }
    EXPECT(&T, ok, "identical points: a cluster is empty or not numbered by first appearance");
    EXPECT(&T, zero, "identical points: objective not 0");

    ok = zero = 1;
    for (int i = 0; i < 10; i++) x[i] = i % 2 ? 1.0 : -1.0;   /* two locations, 1-D */
    for (int k = 1; k <= 10; k++) {
        ladle_kmeans_options opt = {LADLE_KMEANS_EUCLIDEAN, 1, 100, 6, 5, 0, NULL};
        double obj = ladle_kmeans(x, 10, 1, k, &opt, c, assign);
        ok &= canonical(assign, 10, k);
        zero &= k == 1 ? obj == 10.0 : obj == 0.0;
    }
    EXPECT(&T, ok, "two locations: a cluster is empty");
    EXPECT(&T, zero, "two locations: objective not 10 for k = 1 and 0 beyond");

    /* spherical, float: 7 copies of one direction, 3 of another, into 5 clusters; and
     * all-zero points (empty documents) that are no direction at all */
    enum { D = 8 };
    float xf[10 * D], cf[5 * D];
    for (int i = 0; i < 10; i++)
        for (int t = 0; t < D; t++) xf[i * D + t] = i < 7 ? (t == 0) : (t == 1);
    ladle_kmeans_options opt = {LADLE_KMEANS_SPHERICAL, 1, 50, 9, 5, 0, NULL};
    double obj = ladle_kmeans_float(xf, 10, D, 5, &opt, cf, assign);
    EXPECT(&T, canonical(assign, 10, 5) && fabs(obj) < 1e-12, "spherical duplicates: a cluster empty, objective %g",
           obj);
    memset(xf, 0, sizeof xf);
    obj = ladle_kmeans_float(xf, 10, D, 3, &opt, cf, assign);
    int finite = 1;
    for (int i = 0; i < 3 * D; i++) finite &= isfinite(cf[i]);
    EXPECT(&T, canonical(assign, 10, 3) && finite && obj == 10.0,
           "spherical zero points: a cluster empty, a centroid not finite, or objective %g (not 10)", obj);
}

/* ---- objective: Lloyd iterations and restarts only lower it ----------------------------- */

static void test_lowering(ladle_kmeans_metric metric)
{
    enum { N = 300, D = 2, K = 6 };
    double x[N * D];
    int assign[N], truth[N];
    /* overlapping clusters: the seeding is far from a local minimum */
    planted(x, truth, N, D, K, metric == LADLE_KMEANS_EUCLIDEAN ? 6.0 : 0.8, metric, 21);
    int monotone = 1, improved = 0, restarts_ok = 1, restarts_help = 0;
    for (uint64_t s = 0; s < 20; s++) {
        ladle_kmeans_options one = {metric, 1, 1, s, 5, 0, NULL}, many = {metric, 1, 100, s, 5, 0, NULL};
        double after_one = ladle_kmeans(x, N, D, K, &one, NULL, assign);
        double converged = ladle_kmeans(x, N, D, K, &many, NULL, assign);
        monotone &= converged <= after_one * (1 + 1e-12);
        improved += converged < after_one * (1 - 1e-6);
        /* restart 0 is the same seeding as a single run: the best of 8 is no worse */
        ladle_kmeans_options eight = {metric, 8, 100, s, 5, 0, NULL};
        double best = ladle_kmeans(x, N, D, K, &eight, NULL, assign);
        restarts_ok &= best <= converged;
        restarts_help += best < converged;
    }
    EXPECT(&T, monotone, "%s: Lloyd iterations raised the objective above one iteration's", metric_name(metric));
    EXPECT(&T, improved > 0, "%s: Lloyd iterations never improved on the first (a vacuous test)", metric_name(metric));
    EXPECT(&T, restarts_ok, "%s: restarts gave a higher objective than restart 0 alone", metric_name(metric));
    EXPECT(&T, restarts_help > 0, "%s: restarts never helped (a vacuous test)", metric_name(metric));
}

/* ---- determinism -------------------------------------------------------------------- */

static void test_determinism(void)
{
    enum { N = 500, D = 16, K = 7 };
    double *x = malloc(sizeof(double) * N * D);
    int truth[N], a1[N], a2[N];
    double c1[K * D], c2[K * D];
    planted(x, truth, N, D, K, 3.0, LADLE_KMEANS_EUCLIDEAN, 31);
    ladle_kmeans_options opt = {LADLE_KMEANS_EUCLIDEAN, 4, 100, 42, 5, 0, NULL};
    double o1 = ladle_kmeans(x, N, D, K, &opt, c1, a1);
    double o2 = ladle_kmeans(x, N, D, K, &opt, c2, a2);
    EXPECT(&T, o1 == o2 && !memcmp(a1, a2, sizeof a1) && !memcmp(c1, c2, sizeof c1),
           "the same input and options gave different results");
    /* the stream is the seeding's: another one must be able to seed differently */
    int differs = 0;
    for (uint64_t stream = 6; stream < 16 && !differs; stream++) {
        ladle_kmeans_options other = {LADLE_KMEANS_EUCLIDEAN, 1, 1, 42, stream, 0, NULL}, base = {LADLE_KMEANS_EUCLIDEAN, 1, 1, 42, 5, 0, NULL};
        differs = ladle_kmeans(x, N, D, K, &other, NULL, a1) != ladle_kmeans(x, N, D, K, &base, NULL, a2);
    }
    EXPECT(&T, differs, "the stream option does not change the seeding");
    free(x);
}

/* ---- many blocks ------------------------------------------------------------------------ */

/* d = 512 makes blocks of a few hundred points at most (kmeans.c's BLOCK_VALUES / d):
 * 2000 points cross block boundaries in every pass (seeding, assignment, update,
 * objective). */
static void test_blocks(void)
{
    enum { N = 2000, D = 512, K = 4 };
    double *x = malloc(sizeof(double) * N * D);
    int *truth = malloc(sizeof(int) * N), *assign = malloc(sizeof(int) * N), *near = malloc(sizeof(int) * N);
    planted(x, truth, N, D, K, 0.05, LADLE_KMEANS_SPHERICAL, 41);
    float *xf = to_float(x, (size_t)N * D), *cf = malloc(sizeof(float) * K * D);
    ladle_kmeans_options opt = {LADLE_KMEANS_SPHERICAL, 2, 100, 3, 5, 0, NULL};
    double obj = ladle_kmeans_float(xf, N, D, K, &opt, cf, assign);
    double *xd = to_double(xf, (size_t)N * D), *cd = to_double(cf, (size_t)K * D);
    EXPECT(&T, recovered(assign, truth, N, K), "blocks: planted clusters not recovered");
    EXPECT(&T, rel_err(obj, brute_objective(xd, N, D, cd, assign, LADLE_KMEANS_SPHERICAL), 1e-9) < 1e-12,
           "blocks: objective %g differs from brute force", obj);
    EXPECT(&T, centroid_error(xd, N, D, K, cd, assign, LADLE_KMEANS_SPHERICAL) < 1e-7,
           "blocks: centroids are not their points' unit means");

    /* the nearest centroid and its distance against brute force */
    double *dist = malloc(sizeof(double) * N);
    ladle_kmeans_nearest_float(cf, K, D, LADLE_KMEANS_EUCLIDEAN, xf, N, near, dist);
    int ok = 1;
    for (int i = 0; i < N; i++) {
        int best = 0;
        for (int j = 1; j < K; j++)
            if (distance(xd + (size_t)i * D, cd + (size_t)j * D, D, LADLE_KMEANS_EUCLIDEAN)
                < distance(xd + (size_t)i * D, cd + (size_t)best * D, D, LADLE_KMEANS_EUCLIDEAN))
                best = j;
        ok &= near[i] == best
              && fabs(dist[i] - distance(xd + (size_t)i * D, cd + (size_t)best * D, D, LADLE_KMEANS_EUCLIDEAN)) < 1e-9;
    }
    EXPECT(&T, ok, "nearest centroid (euclidean) disagrees with brute force");
    free(x); free(truth); free(assign); free(near); free(xf); free(cf); free(xd); free(cd); free(dist);
}

/* Ties go to the lowest centroid, in both metrics: two equal centroids, and a point
 * equally far from all three. */
static void test_ties(void)
{
    const float c[6] = {1, 0, 1, 0, 0, 1}, x[6] = {1, 0, 0, 1, 0.5f, 0.5f};
    for (int m = 0; m < 2; m++) {
        ladle_kmeans_metric metric = m ? LADLE_KMEANS_SPHERICAL : LADLE_KMEANS_EUCLIDEAN;
        int assign[3];
        double dist[3];
        ladle_kmeans_nearest_float(c, 3, 2, metric, x, 3, assign, dist);
        EXPECT(&T, assign[0] == 0 && assign[1] == 2 && assign[2] == 0, "%s ties: nearest %d %d %d, expected 0 2 0",
               metric_name(metric), assign[0], assign[1], assign[2]);
        EXPECT(&T, dist[0] == 0.0 && dist[1] == 0.0 && dist[2] == 0.5, "%s ties: distances %g %g %g, expected 0 0 0.5",
               metric_name(metric), dist[0], dist[1], dist[2]);
    }
}

/* Near ties: centroids in pairs one float ulp apart, points halfway. The nearest must be
 * the direct distance's (summed in double, in order; ties: the lowest), exactly, with that
 * distance, whatever the product's rounding made of the pair. */
static void test_near_ties(void)
{
    enum { K = 64, D = 24, N = 3000 };
    float *c = malloc(sizeof(float) * K * D), *x = malloc(sizeof(float) * N * D);
    for (int j = 0; j < K; j += 2)
        for (int t = 0; t < D; t++) {
            c[j * D + t] = (float)normal(51, 1, (uint64_t)(j * D + t));
            c[(j + 1) * D + t] = nextafterf(c[j * D + t], t % 2 ? INFINITY : -INFINITY);
        }
    for (int i = 0; i < N; i++)
        for (int t = 0; t < D; t++) {
            int j = 2 * (i % (K / 2));
            x[i * D + t] = 0.5f * (c[j * D + t] + c[(j + 1) * D + t]) + 1e-3f * (float)normal(51, 2, (uint64_t)(i * D + t));
        }
    int *assign = malloc(sizeof(int) * N);
    double *dist = malloc(sizeof(double) * N);
    for (int m = 0; m < 2; m++) {
        ladle_kmeans_metric metric = m ? LADLE_KMEANS_SPHERICAL : LADLE_KMEANS_EUCLIDEAN;
        ladle_kmeans_nearest_float(c, K, D, metric, x, N, assign, dist);
        int exact = 1;
        for (int i = 0; i < N; i++) {
            double xd[D], best = INFINITY;
            int arg = 0;
            for (int t = 0; t < D; t++) xd[t] = x[i * D + t];
            for (int j = 0; j < K; j++) {
                double cd[D];
                for (int t = 0; t < D; t++) cd[t] = c[j * D + t];
                double v = distance(xd, cd, D, metric);
                if (v < best) { best = v; arg = j; }
            }
            exact &= assign[i] == arg && dist[i] == best;
        }
        EXPECT(&T, exact, "%s near ties: the nearest centroid or its distance is not the direct one", metric_name(metric));
    }
    free(c); free(x); free(assign); free(dist);
}

/* Seeding on a sample of the points (kmeans.h: evenly spaced indices) still finds
 * well-separated clusters, and seeds differently from seeding on all of them. */
static void test_sample(void)
{
    enum { N = 4000, D = 32, K = 8 };
    double *x = malloc(sizeof(double) * N * D);
    int *truth = malloc(sizeof(int) * N), *assign = malloc(sizeof(int) * N);
    int found = 0;
    for (int s = 0; s < 10; s++) {
        planted(x, truth, N, D, K, 0.03, LADLE_KMEANS_SPHERICAL, 500 + (uint64_t)s);
        float *xf = to_float(x, (size_t)N * D);
        ladle_kmeans_options opt = {LADLE_KMEANS_SPHERICAL, 1, 100, (uint64_t)s, 5, 64, NULL};
        ladle_kmeans_float(xf, N, D, K, &opt, NULL, assign);
        found += recovered(assign, truth, N, K);
        free(xf);
    }
    EXPECT(&T, found == 10, "seeding on a 64-point sample recovered the clusters for %d of 10 seeds", found);
    /* on structureless points every seeding ends somewhere else */
    planted(x, truth, N, D, K, 10.0, LADLE_KMEANS_SPHERICAL, 600);
    ladle_kmeans_options all = {LADLE_KMEANS_SPHERICAL, 1, 1, 3, 5, 0, NULL}, some = {LADLE_KMEANS_SPHERICAL, 1, 1, 3, 5, 64, NULL};
    float *xf = to_float(x, (size_t)N * D);
    EXPECT(&T, ladle_kmeans_float(xf, N, D, K, &all, NULL, assign) != ladle_kmeans_float(xf, N, D, K, &some, NULL, assign),
           "the sample size does not change the seeding (a vacuous sample)");
    free(xf); free(x); free(truth); free(assign);
}

/* The points spread over the ranks in uneven interleaved blocks (the last rank holding
 * none when there are several): centroids, objective and every label exactly those of
 * one process holding them all. */
static void check_spread(const float *x, size_t n, int d, int k, const ladle_kmeans_options *opt, const char *what)
{
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    float *c1 = malloc(sizeof(float) * (size_t)k * (size_t)d), *c2 = malloc(sizeof(float) * (size_t)k * (size_t)d);
    int *a1 = malloc(sizeof(int) * n), *a2 = malloc(sizeof(int) * n);
    float *mine = malloc(sizeof(float) * n * (size_t)d);
    uint64_t *index = malloc(sizeof(uint64_t) * n);
    double o1 = ladle_kmeans_float(x, n, d, k, opt, c1, a1);
    size_t m = 0;
    int holders = size > 1 ? size - 1 : 1;
    for (size_t i = 0, block = 0, at = 0; i < n; i++) {
        if (i == at + 1 + block * 37 % 101) { at = i; block++; }
        if ((int)(block % (size_t)holders) != rank) continue;
        memcpy(mine + m * (size_t)d, x + i * (size_t)d, sizeof(float) * (size_t)d);
        index[m++] = i;
    }
    /* a rank holding none passes NULL, as prep does for a rank that read no document */
    double o2 = ladle_kmeans_float_mpi(m ? mine : NULL, m, index, n, d, k, opt, MPI_COMM_WORLD, c2, a2);
    int same = o1 == o2 && memcmp(c1, c2, sizeof(float) * (size_t)k * (size_t)d) == 0;
    for (size_t i = 0; i < m; i++) same &= a2[i] == a1[index[i]];
    EXPECT(&T, same, "%s on %d ranks: not the one-process clustering (objective %.17g vs %.17g)", what, size, o2, o1);
    free(c1); free(c2); free(a1); free(a2); free(mine); free(index);
}

static void test_spread(void)
{
    enum { N = 3000, D = 16 };
    double *x = malloc(sizeof(double) * N * D);
    int *truth = malloc(sizeof(int) * N);
    planted(x, truth, N, D, 40, 0.3, LADLE_KMEANS_SPHERICAL, 61);
    float *xf = to_float(x, (size_t)N * D);
    ladle_kmeans_options opt = {LADLE_KMEANS_SPHERICAL, 2, 100, 7, 5, 0, NULL};
    check_spread(xf, N, D, 40, &opt, "spherical, seeding on every point, 2 restarts");
    opt.sample = 300;
    check_spread(xf, N, D, 40, &opt, "spherical, seeding on 300 points");
    planted(x, truth, N, D, 12, 2.0, LADLE_KMEANS_EUCLIDEAN, 62);
    free(xf);
    xf = to_float(x, (size_t)N * D);
    ladle_kmeans_options eu = {LADLE_KMEANS_EUCLIDEAN, 1, 30, 8, 5, 500, NULL};
    check_spread(xf, N, D, 12, &eu, "euclidean, seeding on 500 points");
    /* 20 distinct points into 30 clusters: empty clusters refilled across the ranks */
    for (int i = 0; i < N; i++) memcpy(xf + (size_t)i * D, xf + (size_t)(i % 20) * D, sizeof(float) * D);
    check_spread(xf, N, D, 30, &eu, "euclidean, 20 distinct points in 30 clusters");
    free(xf); free(x); free(truth);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    test_planted(LADLE_KMEANS_EUCLIDEAN, 40, 3, 5, 1.0, 1, 20);
    /* with 12 clusters one greedy k-means++ seeding in five puts two centres in one
     * cluster (as the implementation before this one did): restarts are the remedy */
    test_planted(LADLE_KMEANS_EUCLIDEAN, 600, 8, 12, 1.0, 10, 20);
    test_planted(LADLE_KMEANS_SPHERICAL, 400, 32, 8, 0.03, 1, 20);
    test_extreme_k(LADLE_KMEANS_EUCLIDEAN);
    test_extreme_k(LADLE_KMEANS_SPHERICAL);
    test_empty_clusters();
    test_lowering(LADLE_KMEANS_EUCLIDEAN);
    test_lowering(LADLE_KMEANS_SPHERICAL);
    test_determinism();
    test_blocks();
    test_ties();
    test_near_ties();
    test_sample();
    test_spread();
    /* the verdict is the worst rank's */
    int failed = T.failed;
    MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    T.failed = failed;
    char name[64];
    snprintf(name, sizeof name, size > 1 ? "test_kmeans (ranks=%d)" : "test_kmeans", size);
    int rc = rank == 0 ? test_summary(&T, name) : 0;
    MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Finalize();
    return rc;
}
