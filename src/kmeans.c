/* kmeans: greedy k-means++ seeding, Lloyd iterations and restarts (see kmeans.h). */
#include "ladle/kmeans.h"
#include "ladle/error.h"
#include "ladle/rng.h"

#include <blis.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Doubles of a block of points (rows x max(d, columns of the product)): bounds the
 * scratch memory whatever n, and a block (512 KiB) stays in cache between its
 * conversion from float and its product, while each BLIS call still gets a large one. */
#define BLOCK_VALUES ((size_t)1 << 16)

/* Counter index of seeding candidate t of centre c: c * CANDIDATE_STRIDE + t (centre 0
 * uses index 0). 2 + ln k candidates stay far below it for any int k. */
#define CANDIDATE_STRIDE 64

/* The points, in either precision, and the block of them being worked on. */
typedef struct {
    const double *x64;          /* the points: exactly one of x64 and x32 */
    const float *x32;
    size_t n;
    int d;
    ladle_kmeans_metric metric;
    size_t block;               /* points per block */
    const double *rows;         /* [block x d] the loaded block (x64 itself, or converted) */
    double *converted;          /* [block x d] float points in double (x32 only) */
    double *row_sq;             /* [block] squared norms of the loaded points (Euclidean) */
    double *block_dist;         /* [block x cols] distances of the block to some centres */
} point_set;

static void point_set_create(point_set *p, const double *x64, const float *x32, size_t n, int d,
                             ladle_kmeans_metric metric, int max_cols)
{
    memset(p, 0, sizeof *p);
    p->x64 = x64;
    p->x32 = x32;
    p->n = n;
    p->d = d;
    p->metric = metric;
    size_t widest = (size_t)(d > max_cols ? d : max_cols);
    p->block = BLOCK_VALUES / widest;
    if (p->block < 1) p->block = 1;
    if (p->block > n) p->block = n;
    if (x32) p->converted = ladle_malloc(p->block * (size_t)d * sizeof(double), "k-means point block");
    p->row_sq = ladle_malloc(p->block * sizeof(double), "k-means point norms");
    p->block_dist = ladle_malloc(p->block * (size_t)max_cols * sizeof(double), "k-means distances");
}

static void point_set_free(point_set *p)
{
    free(p->converted);
    free(p->row_sq);
    free(p->block_dist);
}

/* Loads the block of points from `at` into p->rows, with their squared norms, and
 * returns how many it holds: p->block, fewer at the end, 0 past it. Every pass over the
 * points is `for (size_t at = 0, m; (m = load_block(p, at)) > 0; at += m)`. */
static size_t load_block(point_set *p, size_t at)
{
    if (at >= p->n) return 0;
    const size_t d = (size_t)p->d, m = p->n - at < p->block ? p->n - at : p->block;
    if (p->x64) {
        p->rows = p->x64 + at * d;
    } else {
        for (size_t i = 0; i < m * d; i++) p->converted[i] = p->x32[at * d + i];
        p->rows = p->converted;
    }
    for (size_t i = 0; i < m && p->metric == LADLE_KMEANS_EUCLIDEAN; i++) {
        const double *r = p->rows + i * d;
        double s = 0.0;
        for (size_t t = 0; t < d; t++) s += r[t] * r[t];
        p->row_sq[i] = s;
    }
    return m;
}

static void copy_point(const point_set *p, size_t i, double *out)
{
    const size_t d = (size_t)p->d;
    for (size_t t = 0; t < d; t++) out[t] = p->x64 ? p->x64[i * d + t] : p->x32[i * d + t];
}

/* Squared norms of the nc centres c [nc x d] (what the Euclidean distances need). */
static void squared_norms(const double *c, int nc, int d, double *sq)
{
    for (int j = 0; j < nc; j++) {
        double s = 0.0;
        for (int t = 0; t < d; t++) s += c[(size_t)j * d + t] * c[(size_t)j * d + t];
        sq[j] = s;
    }
}

/* p->block_dist [m x nc] = distances of the m loaded points to the nc centres c [nc x d]
 * (c_sq: their squared norms). One product X C^T gives every x.c. */
static void block_distances(point_set *p, size_t m, const double *c, const double *c_sq, int nc)
{
    double one = 1.0, zero = 0.0;
    bli_dgemm(BLIS_NO_TRANSPOSE, BLIS_TRANSPOSE, (dim_t)m, (dim_t)nc, (dim_t)p->d, &one, (double *)p->rows,
              (inc_t)p->d, 1, (double *)c, (inc_t)p->d, 1, &zero, p->block_dist, (inc_t)nc, 1);
    for (size_t i = 0; i < m; i++) {
        double *r = p->block_dist + i * (size_t)nc;
        if (p->metric == LADLE_KMEANS_EUCLIDEAN)
            for (int j = 0; j < nc; j++) r[j] = p->row_sq[i] - 2.0 * r[j] + c_sq[j];
        else
            for (int j = 0; j < nc; j++) r[j] = 1.0 - r[j];
    }
}

/* The assignment step: nearest[i] the nearest of the k centres (ties: the lowest),
 * dist[i] (may be NULL) the distance to it. */
static void assign_nearest(point_set *p, const double *centres, const double *c_sq, int k, int *nearest,
                           double *dist)
{
    for (size_t at = 0, m; (m = load_block(p, at)) > 0; at += m) {
        block_distances(p, m, centres, c_sq, k);
        for (size_t i = 0; i < m; i++) {
            const double *r = p->block_dist + i * (size_t)k;
            int best = 0;
            for (int j = 1; j < k; j++)
                if (r[j] < r[best]) best = j;
            nearest[at + i] = best;
            if (dist) dist[at + i] = r[best];
        }
    }
}

/* Sum over the points of the distance to their centre, term by term rather than through
 * the product: no cancellation, so a point on its centre adds exactly 0. */
static double objective(point_set *p, const double *centres, const int *label)
{
    const size_t d = (size_t)p->d;
    double total = 0.0;
    for (size_t at = 0, m; (m = load_block(p, at)) > 0; at += m) {
        for (size_t i = 0; i < m; i++) {
            const double *x = p->rows + i * d, *c = centres + (size_t)label[at + i] * d;
            double s = 0.0;
            if (p->metric == LADLE_KMEANS_EUCLIDEAN) {
                for (size_t t = 0; t < d; t++) s += (x[t] - c[t]) * (x[t] - c[t]);
            } else {
                for (size_t t = 0; t < d; t++) s += x[t] * c[t];
                s = 1.0 - s;
            }
            total += s;
        }
    }
    return total;
}

/* ---- seeding ------------------------------------------------------------------------ */

/* Scratch of a clustering into k clusters with `tries` seeding candidates. */
typedef struct {
    double *centres, *centre_sq;   /* [k x d], [k] */
    double *sums;                  /* [k x d] sums of the points of each cluster */
    size_t *count;                 /* [k] */
    int *next;                     /* [n] labels of the current assignment step */
    double *dist;                  /* [n] distance to the nearest centre */
    double *cand, *cand_sq;        /* [tries x d], [tries] seeding candidates */
    double *cand_dist;             /* [n x tries] distances to the candidates */
    double *potential;             /* [tries] total distance once a candidate is added */
    size_t *cand_index;            /* [tries] */
} scratch;

/* A uniform double in [0, 1) with 53 random bits (the float one has 24: too coarse to
 * sample among millions of points). */
static double uniform53(const ladle_kmeans_options *o, uint64_t restart, uint64_t index)
{
    return (double)(ladle_rng_u64(o->seed, restart, o->stream, index) >> 11) * 0x1.0p-53;
}

/* The point a uniform u selects when point i has weight w[i] >= 0 (sum: total); every
 * point alike when all weights are 0. */
static size_t draw_weighted(const double *w, size_t n, double total, double u)
{
    if (!(total > 0.0)) {
        size_t i = (size_t)(u * (double)n);
        return i < n ? i : n - 1;
    }
    double target = u * total, cum = 0.0;
    size_t last = 0;
    for (size_t i = 0; i < n; i++) {
        if (w[i] <= 0.0) continue;
        cum += w[i];
        last = i;
        if (cum > target) return i;
    }
    return last;   /* rounding left target at the very top */
}

/* dist[i] = min(dist[i], distance to the one centre c) for every point; the sampling
 * weights must not be negative, which rounding of x.c could make them. */
static void lower_distances(point_set *p, const double *c, const double *c_sq, double *dist)
{
    for (size_t at = 0, m; (m = load_block(p, at)) > 0; at += m) {
        block_distances(p, m, c, c_sq, 1);
        for (size_t i = 0; i < m; i++) {
            double t = p->block_dist[i] > 0.0 ? p->block_dist[i] : 0.0;
            if (t < dist[at + i]) dist[at + i] = t;
        }
    }
}

/* Greedy k-means++ (as scikit-learn's default): of a few candidates drawn by the D^2
 * rule, keep the one that lowers the total distance most. Plain k-means++ too often puts
 * two seeds in one cluster, which Lloyd iterations cannot undo. */
static void seed_centres(point_set *p, int k, int tries, const ladle_kmeans_options *o, uint64_t restart,
                         scratch *s)
{
    const size_t n = p->n, d = (size_t)p->d;
    size_t first = (size_t)ladle_rng_below(o->seed, restart, o->stream, 0, n);
    copy_point(p, first, s->centres);
    squared_norms(s->centres, 1, p->d, s->centre_sq);
    for (size_t i = 0; i < n; i++) s->dist[i] = INFINITY;
    lower_distances(p, s->centres, s->centre_sq, s->dist);
    s->dist[first] = 0.0;   /* exactly: it is the centre */

    for (int c = 1; c < k; c++) {
        double total = 0.0;
        for (size_t i = 0; i < n; i++) total += s->dist[i];
        for (int t = 0; t < tries; t++) {
            double u = uniform53(o, restart, (uint64_t)c * CANDIDATE_STRIDE + (uint64_t)t);
            s->cand_index[t] = draw_weighted(s->dist, n, total, u);
            copy_point(p, s->cand_index[t], s->cand + (size_t)t * d);
            s->potential[t] = 0.0;
        }
        squared_norms(s->cand, tries, p->d, s->cand_sq);
        /* kept for all points: a second pass over them for the chosen one would cost
         * as much as this one */
        for (size_t at = 0, m; (m = load_block(p, at)) > 0; at += m) {
            block_distances(p, m, s->cand, s->cand_sq, tries);
            for (size_t i = 0; i < m * (size_t)tries; i++) {
                double v = p->block_dist[i];
                s->cand_dist[at * (size_t)tries + i] = v > 0.0 ? v : 0.0;
            }
        }
        for (size_t i = 0; i < n; i++)
            for (int t = 0; t < tries; t++) {
                double v = s->cand_dist[i * (size_t)tries + t];
                s->potential[t] += v < s->dist[i] ? v : s->dist[i];
            }
        int best = 0;
        for (int t = 1; t < tries; t++)
            if (s->potential[t] < s->potential[best]) best = t;
        memcpy(s->centres + (size_t)c * d, s->cand + (size_t)best * d, d * sizeof(double));
        s->centre_sq[c] = s->cand_sq[best];
        for (size_t i = 0; i < n; i++) {
            double v = s->cand_dist[i * (size_t)tries + best];
            if (v < s->dist[i]) s->dist[i] = v;
        }
        s->dist[s->cand_index[best]] = 0.0;
    }
}

/* ---- Lloyd iterations ------------------------------------------------------------------ */

/* Every empty cluster takes the point farthest from its centre among the clusters with
 * two or more points (k <= n makes one exist while a cluster is empty). */
static void fill_empty(size_t n, int k, int *label, size_t *count, double *dist)
{
    for (int j = 0; j < k; j++) {
        if (count[j]) continue;
        size_t far = n;
        for (size_t i = 0; i < n; i++)
            if (count[label[i]] > 1 && (far == n || dist[i] > dist[far])) far = i;
        LADLE_CHECK(far < n, "k-means: no point to fill cluster %d with", j);
        count[label[far]]--;
        label[far] = j;
        count[j] = 1;
        dist[far] = 0.0;   /* now the only point of its cluster: not taken twice */
    }
}

/* Centres from the labels: sums in double in point order; Euclidean the mean, spherical
 * the mean scaled to unit norm (a cluster summing to zero keeps its centre). Float
 * points get float centres, so that the caller receives the very ones used. */
static void update_centres(point_set *p, int k, const int *label, scratch *s)
{
    const size_t d = (size_t)p->d;
    memset(s->sums, 0, (size_t)k * d * sizeof(double));
    for (size_t at = 0, m; (m = load_block(p, at)) > 0; at += m) {
        for (size_t i = 0; i < m; i++) {
            double *sum = s->sums + (size_t)label[at + i] * d;
            const double *x = p->rows + i * d;
            for (size_t t = 0; t < d; t++) sum[t] += x[t];
        }
    }
    for (int j = 0; j < k; j++) {
        const double *sum = s->sums + (size_t)j * d;
        double *centre = s->centres + (size_t)j * d;
        double scale;
        if (p->metric == LADLE_KMEANS_EUCLIDEAN) {
            scale = 1.0 / (double)s->count[j];
        } else {
            double norm2 = 0.0;
            for (size_t t = 0; t < d; t++) norm2 += sum[t] * sum[t];
            if (!(norm2 > 0.0)) continue;
            scale = 1.0 / sqrt(norm2);
        }
        for (size_t t = 0; t < d; t++) centre[t] = sum[t] * scale;
        if (p->x32)
            for (size_t t = 0; t < d; t++) centre[t] = (float)centre[t];
    }
    squared_norms(s->centres, k, p->d, s->centre_sq);
}

/* One restart: seeding, then Lloyd until no label changes. label[n] gets the clusters,
 * s->centres their centres; returns the objective. */
static double run(point_set *p, int k, int tries, const ladle_kmeans_options *o, uint64_t restart, int *label,
                  scratch *s)
{
    seed_centres(p, k, tries, o, restart, s);
    for (size_t i = 0; i < p->n; i++) label[i] = -1;
    for (int it = 0; it < o->max_iters; it++) {
        assign_nearest(p, s->centres, s->centre_sq, k, s->next, s->dist);
        memset(s->count, 0, (size_t)k * sizeof(size_t));
        for (size_t i = 0; i < p->n; i++) s->count[s->next[i]]++;
        fill_empty(p->n, k, s->next, s->count, s->dist);
        int changed = memcmp(s->next, label, p->n * sizeof(int)) != 0;
        memcpy(label, s->next, p->n * sizeof(int));
        update_centres(p, k, label, s);
        if (!changed) break;
    }
    return objective(p, s->centres, label);
}

/* Seeding candidates per centre. */
static int seeding_tries(int k)
{
    return 2 + (int)log((double)k);
}

/* The clustering itself, for either precision: assign[n], centres [k x d] in double. */
static double cluster(point_set *p, int k, const ladle_kmeans_options *o, double *centres, int *assign)
{
    const size_t n = p->n, d = (size_t)p->d;
    const int tries = seeding_tries(k);
    scratch s = {
        .centres = ladle_malloc((size_t)k * d * sizeof(double), "k-means centres"),
        .centre_sq = ladle_malloc((size_t)k * sizeof(double), "k-means centre norms"),
        .sums = ladle_malloc((size_t)k * d * sizeof(double), "k-means sums"),
        .count = ladle_malloc((size_t)k * sizeof(size_t), "k-means counts"),
        .next = ladle_malloc(n * sizeof(int), "k-means assignments"),
        .dist = ladle_malloc(n * sizeof(double), "k-means distances"),
        .cand = ladle_malloc((size_t)tries * d * sizeof(double), "k-means candidates"),
        .cand_sq = ladle_malloc((size_t)tries * sizeof(double), "k-means candidate norms"),
        .cand_dist = ladle_malloc(n * (size_t)tries * sizeof(double), "k-means candidate distances"),
        .potential = ladle_malloc((size_t)tries * sizeof(double), "k-means potentials"),
        .cand_index = ladle_malloc((size_t)tries * sizeof(size_t), "k-means candidates"),
    };
    int *label = ladle_malloc(n * sizeof(int), "k-means labels");
    int *best = ladle_malloc(n * sizeof(int), "k-means best labels");
    double *best_centres = ladle_malloc((size_t)k * d * sizeof(double), "k-means best centres");
    double best_objective = INFINITY;
    for (int r = 0; r < o->restarts; r++) {
        double obj = run(p, k, tries, o, (uint64_t)r, label, &s);
        /* strict <: among equal objectives the earliest restart wins */
        if (r == 0 || obj < best_objective) {
            best_objective = obj;
            memcpy(best, label, n * sizeof(int));
            memcpy(best_centres, s.centres, (size_t)k * d * sizeof(double));
        }
    }

    /* clusters numbered by first appearance: equivalent clusterings come out identical */
    int *number = s.next;   /* [k] is all it needs of its n >= k */
    for (int j = 0; j < k; j++) number[j] = -1;
    int used = 0;
    for (size_t i = 0; i < n; i++) {
        if (number[best[i]] < 0) {
            number[best[i]] = used;
            if (centres) memcpy(centres + (size_t)used * d, best_centres + (size_t)best[i] * d, d * sizeof(double));
            used++;
        }
        assign[i] = number[best[i]];
    }
    LADLE_CHECK(used == k, "k-means: %d of %d clusters used", used, k);

    free(best_centres); free(best); free(label);
    free(s.centres); free(s.centre_sq); free(s.sums); free(s.count); free(s.next); free(s.dist);
    free(s.cand); free(s.cand_sq); free(s.cand_dist); free(s.potential); free(s.cand_index);
    return best_objective;
}

/* Columns of the widest product of a clustering: the k centres or the candidates. */
static int widest_product(int k)
{
    return k > seeding_tries(k) ? k : seeding_tries(k);
}

static void check_arguments(size_t n, int d, int k, const ladle_kmeans_options *o)
{
    LADLE_CHECK(k >= 1 && (size_t)k <= n && d >= 1 && o->restarts >= 1 && o->max_iters >= 1
                    && (o->metric == LADLE_KMEANS_EUCLIDEAN || o->metric == LADLE_KMEANS_SPHERICAL),
                "k-means: need 1 <= k <= n, d >= 1, restarts >= 1, max_iters >= 1 (k = %d, n = %zu, d = %d, "
                "restarts = %d, max_iters = %d, metric %d)", k, n, d, o->restarts, o->max_iters, (int)o->metric);
}

double ladle_kmeans(const double *x, size_t n, int d, int k, const ladle_kmeans_options *opt, double *centroids,
                    int *assign)
{
    check_arguments(n, d, k, opt);
    point_set p;
    point_set_create(&p, x, NULL, n, d, opt->metric, widest_product(k));
    double obj = cluster(&p, k, opt, centroids, assign);
    point_set_free(&p);
    return obj;
}

double ladle_kmeans_float(const float *x, size_t n, int d, int k, const ladle_kmeans_options *opt,
                          float *centroids, int *assign)
{
    check_arguments(n, d, k, opt);
    point_set p;
    point_set_create(&p, NULL, x, n, d, opt->metric, widest_product(k));
    double *centres = ladle_malloc((size_t)k * (size_t)d * sizeof(double), "k-means centroids");
    double obj = cluster(&p, k, opt, centres, assign);
    /* exact: the centres were rounded to float when computed */
    if (centroids)
        for (size_t i = 0; i < (size_t)k * (size_t)d; i++) centroids[i] = (float)centres[i];
    free(centres);
    point_set_free(&p);
    return obj;
}

void ladle_kmeans_nearest_float(const float *centroids, int k, int d, ladle_kmeans_metric metric, const float *x,
                                size_t n, int *assign, double *dist)
{
    LADLE_CHECK(k >= 1 && d >= 1, "nearest centroid: k = %d, d = %d", k, d);
    if (n == 0) return;
    point_set p;
    point_set_create(&p, NULL, x, n, d, metric, k);
    double *centres = ladle_malloc((size_t)k * (size_t)d * sizeof(double), "centroids");
    double *centre_sq = ladle_malloc((size_t)k * sizeof(double), "centroid norms");
    for (size_t i = 0; i < (size_t)k * (size_t)d; i++) centres[i] = centroids[i];
    squared_norms(centres, k, d, centre_sq);
    assign_nearest(&p, centres, centre_sq, k, assign, dist);
    free(centre_sq);
    free(centres);
    point_set_free(&p);
}
