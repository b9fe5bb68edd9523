/* kmeans: greedy k-means++ seeding on a sample, Lloyd iterations over points that may be
 * spread over MPI ranks, restarts (see kmeans.h). */
#include "ladle/kmeans.h"
#include "ladle/error.h"
#include "ladle/rng.h"

#include <blis.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Products of a block of points with the centres held at once (rows x centres): bounds
 * the scratch memory whatever n ... */
#define BLOCK_VALUES ((size_t)1 << 16)
/* ... but a block has at least this many rows: BLIS packs the centres once per product,
 * which a few rows do not pay for (k = 4096 float centres: 1 MiB of products). */
#define MIN_BLOCK_ROWS 64

/* Counter index of seeding candidate t of centre c: c * CANDIDATE_STRIDE + t (centre 0
 * uses index 0). 2 + ln k candidates stay far below it for any int k. */
#define CANDIDATE_STRIDE 64

/* Fixed-point sums: n terms, each below 2^(FIXED_BITS - bits(n)), cannot overflow int64. */
#define FIXED_BITS 62

/* The larger and smaller of two (no NaN here: libm's fmax and fmin are calls). */
static inline double larger(double a, double b) { return a > b ? a : b; }
static inline double smaller(double a, double b) { return a < b ? a : b; }

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- where the points are ------------------------------------------------------------ */

/* This rank's share of the points: point i is index[i] of the whole set (NULL: i). */
typedef struct {
    MPI_Comm comm;              /* MPI_COMM_NULL: this rank holds every point */
    const uint64_t *index;
    uint64_t n_total;
} spread;

static uint64_t index_of(const spread *s, size_t i)
{
    return s->index ? s->index[i] : (uint64_t)i;
}

/* In place over the ranks (nothing to do for one holding every point). */
static void all_reduce(const spread *s, void *buf, size_t count, MPI_Datatype type, MPI_Op op)
{
    if (s->comm == MPI_COMM_NULL || count == 0) return;
    LADLE_CHECK(count <= INT_MAX, "k-means: all-reduce of %zu values", count);
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf, (int)count, type, op, s->comm));
}

/* The scale 2^e of the fixed-point sums of n_total values of magnitude at most top. */
static int fixed_exponent(double top, uint64_t n_total)
{
    if (!(top > 0.0)) return 0;
    int e = 0, bits = 0;
    frexp(top, &e);   /* top < 2^e */
    while (bits < 63 && (n_total >> bits) != 0) bits++;
    return FIXED_BITS - e - bits;
}

/* Sum over every rank of v[n] (rank-count independent: fixed point, exact). */
static double global_sum(const spread *s, const double *v, size_t n)
{
    double top = 0.0;
    for (size_t i = 0; i < n; i++) top = larger(top, fabs(v[i]));
    all_reduce(s, &top, 1, MPI_DOUBLE, MPI_MAX);
    const int e = fixed_exponent(top, s->n_total);
    const double scale = ldexp(1.0, e);
    int64_t sum = 0;
    for (size_t i = 0; i < n; i++) sum += llrint(v[i] * scale);
    all_reduce(s, &sum, 1, MPI_INT64_T, MPI_SUM);
    return ldexp((double)sum, -e);
}

/* ---- points, centres and their products ------------------------------------------------ */

/* The points, in either precision, and the block of them being worked on. */
typedef struct {
    int is_float;               /* which of x32 and x64 holds the points: a rank holding none
                                 * may have NULL, and must still agree on the precision */
    const double *x64;
    const float *x32;
    size_t n;
    int d;
    ladle_kmeans_metric metric;
    size_t block, cols;         /* points per block; centres per product at most */
    size_t at;                  /* the first point of the loaded block */
    double *sq;                 /* [n] squared norms of the points */
    double *row_sq;             /* sq + at: the loaded block's */
    double *dots64;             /* [block x cols] x.c of the block (double points) */
    float *dots32;              /* the same for float points (sgemm) */
} point_set;

static void point_set_create(point_set *p, const void *x, int is_float, size_t n, int d,
                             ladle_kmeans_metric metric, int max_cols)
{
    memset(p, 0, sizeof *p);
    p->is_float = is_float;
    const float *x32 = is_float ? x : NULL;
    const double *x64 = is_float ? NULL : x;
    p->x64 = x64;
    p->x32 = x32;
    p->n = n;
    p->d = d;
    p->metric = metric;
    p->cols = (size_t)max_cols;
    p->block = BLOCK_VALUES / p->cols;
    if (p->block < MIN_BLOCK_ROWS) p->block = MIN_BLOCK_ROWS;
    if (p->block > n) p->block = n ? n : 1;
    p->sq = ladle_malloc((n ? n : 1) * sizeof(double), "k-means point norms");
    const size_t dd = (size_t)d;
    for (size_t i = 0; i < n; i++) {
        double s = 0.0;
        if (is_float) for (size_t t = 0; t < dd; t++) s += (double)x32[i * dd + t] * x32[i * dd + t];
        else for (size_t t = 0; t < dd; t++) s += x64[i * dd + t] * x64[i * dd + t];
        p->sq[i] = s;
    }
    if (is_float) p->dots32 = ladle_malloc(p->block * p->cols * sizeof(float), "k-means products");
    else p->dots64 = ladle_malloc(p->block * p->cols * sizeof(double), "k-means products");
}

static void point_set_free(point_set *p)
{
    free(p->sq);
    free(p->dots64);
    free(p->dots32);
}

static double value(const point_set *p, size_t i, int t)
{
    size_t at = i * (size_t)p->d + (size_t)t;
    return p->is_float ? (double)p->x32[at] : p->x64[at];
}

static void copy_point(const point_set *p, size_t i, double *out)
{
    for (int t = 0; t < p->d; t++) out[t] = value(p, i, t);
}

/* Loads the block of points from `at` and returns how many it holds: p->block, fewer at
 * the end, 0 past it. Every pass over the points is
 * `for (size_t at = 0, m; (m = load_block(p, at)) > 0; at += m)`. */
static size_t load_block(point_set *p, size_t at)
{
    if (at >= p->n) return 0;
    p->at = at;
    p->row_sq = p->sq + at;
    return p->n - at < p->block ? p->n - at : p->block;
}

/* The distance summed term by term in double: the one every decision and sum uses. */
static double exact_distance(const point_set *p, size_t i, const double *c)
{
    double s = 0.0;
    if (p->metric == LADLE_KMEANS_EUCLIDEAN) {
        for (int t = 0; t < p->d; t++) s += (value(p, i, t) - c[t]) * (value(p, i, t) - c[t]);
        return s;
    }
    for (int t = 0; t < p->d; t++) s += value(p, i, t) * c[t];
    return 1.0 - s;
}

/* Centres, with what their products and scores need. */
typedef struct {
    int k, d;
    double *c;                  /* [k x d] */
    float *c32;                 /* [k x d] the same values, for float points' products (else NULL) */
    double *sq;                 /* [k] squared norms */
    double *w;                  /* [k] score = w - 2 x.c: sq (Euclidean) or 0 (spherical) */
    float *w32;                 /* [k] the same in float, for float points' scores */
    double sq_max;
} centre_set;

static void centres_create(centre_set *c, int k, int d, int with_float)
{
    c->k = k;
    c->d = d;
    c->c = ladle_calloc((size_t)k * (size_t)d, sizeof(double), "k-means centres");
    c->c32 = with_float ? ladle_malloc((size_t)k * (size_t)d * sizeof(float), "k-means centres") : NULL;
    c->sq = ladle_malloc((size_t)k * sizeof(double), "k-means centre norms");
    c->w = ladle_malloc((size_t)k * sizeof(double), "k-means centre norms");
    c->w32 = ladle_malloc((size_t)k * sizeof(float), "k-means centre norms");
    c->sq_max = 0.0;
}

static void centres_free(centre_set *c)
{
    free(c->c); free(c->c32); free(c->sq); free(c->w); free(c->w32);
}

/* After c->c changed. */
static void centres_refresh(centre_set *c, ladle_kmeans_metric metric)
{
    const size_t d = (size_t)c->d;
    c->sq_max = 0.0;
    for (int j = 0; j < c->k; j++) {
        const double *r = c->c + (size_t)j * d;
        double s = 0.0;
        for (size_t t = 0; t < d; t++) s += r[t] * r[t];
        c->sq[j] = s;
        c->w[j] = metric == LADLE_KMEANS_EUCLIDEAN ? s : 0.0;
        c->w32[j] = (float)c->w[j];
        c->sq_max = larger(c->sq_max, s);
        for (size_t t = 0; c->c32 && t < d; t++) c->c32[(size_t)j * d + t] = (float)r[t];
    }
}

/* The products of the m loaded points with the centres: one BLIS product X C^T. */
static void products(point_set *p, size_t m, const centre_set *c)
{
    const dim_t rows = (dim_t)m, cols = (dim_t)c->k, d = (dim_t)p->d;
    if (p->is_float) {
        float one = 1.0f, zero = 0.0f;
        bli_sgemm(BLIS_NO_TRANSPOSE, BLIS_TRANSPOSE, rows, cols, d, &one, (float *)p->x32 + p->at * (size_t)d, d, 1,
                  c->c32, d, 1, &zero, p->dots32, cols, 1);
    } else {
        double one = 1.0, zero = 0.0;
        bli_dgemm(BLIS_NO_TRANSPOSE, BLIS_TRANSPOSE, rows, cols, d, &one, (double *)p->x64 + p->at * (size_t)d, d, 1,
                  c->c, d, 1, &zero, p->dots64, cols, 1);
    }
}

/* Distance of loaded point i to centre j from the products (seeding's sampling weights). */
static double product_distance(const point_set *p, size_t i, const centre_set *c, int j)
{
    size_t at = i * (size_t)c->k + (size_t)j;
    double dot = p->is_float ? (double)p->dots32[at] : p->dots64[at];
    return p->metric == LADLE_KMEANS_EUCLIDEAN ? p->row_sq[i] - 2.0 * dot + c->sq[j] : 1.0 - dot;
}

/* A bound, with a factor 4 to spare, on how far a product-based score of loaded point i
 * lies from its direct distance (shifted by a constant of the point): d-term sums in the
 * points' precision err by at most d u (|x|^2 + |c|^2) / 2, forming the score by a few u
 * more, and the direct distance itself by about 2 d u' (|x|^2 + |c|^2), u' = 2^-53. */
static double rounding_bound(const point_set *p, size_t i, const centre_set *c)
{
    const double u = p->is_float ? 0x1.0p-24 : 0x1.0p-53;
    return 4.0 * (p->d + 8) * u * (p->row_sq[i] + c->sq_max);
}

/* The two lowest scores w - 2 x.c of a row of products (in their precision, one pass:
 * the second test seldom passes), and the first centre with the lowest. */
#define DEFINE_LOWEST_TWO(name, type)                                                                  \
    static int name(const type *r, const type *w, int k, double *low, double *second)                   \
    {                                                                                                \
        type b1 = (type)INFINITY, b2 = (type)INFINITY;                                               \
        int arg = 0;                                                                                 \
        for (int j = 0; j < k; j++) {                                                                \
            type v = w[j] - 2 * r[j];                                                                \
            if (v < b2) {                                                                            \
                if (v < b1) { b2 = b1; b1 = v; arg = j; }                                            \
                else b2 = v;                                                                         \
            }                                                                                        \
        }                                                                                            \
        *low = b1;                                                                                   \
        *second = b2;                                                                                \
        return arg;                                                                                  \
    }
DEFINE_LOWEST_TWO(lowest_two32, float)
DEFINE_LOWEST_TWO(lowest_two64, double)

static double score(const point_set *p, size_t i, const centre_set *c, int j)
{
    size_t at = i * (size_t)c->k + (size_t)j;
    return p->is_float ? (double)(c->w32[j] - 2 * p->dots32[at]) : c->w[j] - 2 * p->dots64[at];
}

/* The nearest centre to loaded point i by direct distance (ties: the lowest), *dist that
 * distance. The products rank the centres; the true nearest is within twice the rounding
 * bound of their best score, and only those few are measured directly (most often the
 * best alone: the second best is farther). */
static int nearest_of_row(point_set *p, size_t i, const centre_set *c, double *dist)
{
    const int k = c->k;
    double low, second;
    int best = p->is_float ? lowest_two32(p->dots32 + i * (size_t)k, c->w32, k, &low, &second)
                      : lowest_two64(p->dots64 + i * (size_t)k, c->w, k, &low, &second);
    const double reach = low + 2.0 * rounding_bound(p, i, c);
    double best_dist = exact_distance(p, p->at + i, c->c + (size_t)best * (size_t)p->d);
    if (second <= reach) {
        best_dist = INFINITY;
        for (int j = 0; j < k; j++) {
            if (!(score(p, i, c, j) <= reach)) continue;
            double dj = exact_distance(p, p->at + i, c->c + (size_t)j * (size_t)p->d);
            if (dj < best_dist) { best = j; best_dist = dj; }
        }
    }
    if (dist) *dist = best_dist;
    return best;
}

/* The assignment step: nearest[i] the nearest centre (ties: the lowest), dist[i] (may be
 * NULL) its direct distance. */
static void assign_nearest(point_set *p, const centre_set *c, int *nearest, double *dist)
{
    for (size_t at = 0, m; (m = load_block(p, at)) > 0; at += m) {
        products(p, m, c);
        for (size_t i = 0; i < m; i++) nearest[at + i] = nearest_of_row(p, i, c, dist ? &dist[at + i] : NULL);
    }
}

/* ---- seeding (on the sample, the same on every rank) ----------------------------------- */

typedef struct {
    centre_set one;                /* the first centre */
    centre_set cand;               /* [tries] candidates */
    double *dist;                  /* [S] distance to the nearest centre so far */
    double *cand_dist;             /* [S x tries] distances to the candidates */
    double *potential;             /* [tries] total distance once a candidate is added */
    size_t *cand_index;            /* [tries] */
} seed_scratch;

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
static void lower_distances(point_set *q, const centre_set *c, double *dist)
{
    for (size_t at = 0, m; (m = load_block(q, at)) > 0; at += m) {
        products(q, m, c);
        for (size_t i = 0; i < m; i++) {
            double t = larger(product_distance(q, i, c, 0), 0.0);
            if (t < dist[at + i]) dist[at + i] = t;
        }
    }
}

/* Draws the candidates for centre c and returns the one that lowers the total most. */
static int best_candidate(point_set *q, int c, const ladle_kmeans_options *o, uint64_t restart, seed_scratch *s)
{
    const size_t n = q->n, d = (size_t)q->d, tries = (size_t)s->cand.k;
    double total = 0.0;
    for (size_t i = 0; i < n; i++) total += s->dist[i];
    for (size_t t = 0; t < tries; t++) {
        double u = uniform53(o, restart, (uint64_t)c * CANDIDATE_STRIDE + (uint64_t)t);
        s->cand_index[t] = draw_weighted(s->dist, n, total, u);
        copy_point(q, s->cand_index[t], s->cand.c + t * d);
        s->potential[t] = 0.0;
    }
    centres_refresh(&s->cand, q->metric);
    /* kept for all points: a second pass over them for the chosen one would cost as
     * much as this one */
    for (size_t at = 0, m; (m = load_block(q, at)) > 0; at += m) {
        products(q, m, &s->cand);
        for (size_t i = 0; i < m; i++)
            for (size_t t = 0; t < tries; t++)
                s->cand_dist[(at + i) * tries + t] = larger(product_distance(q, i, &s->cand, (int)t), 0.0);
    }
    for (size_t i = 0; i < n; i++)
        for (size_t t = 0; t < tries; t++) s->potential[t] += smaller(s->cand_dist[i * tries + t], s->dist[i]);
    int best = 0;
    for (size_t t = 1; t < tries; t++)
        if (s->potential[t] < s->potential[best]) best = (int)t;
    return best;
}

/* Greedy k-means++ (as scikit-learn's default): of a few candidates drawn by the D^2
 * rule, keep the one that lowers the total distance most. Plain k-means++ too often puts
 * two seeds in one cluster, which Lloyd iterations cannot undo. */
static void seed_centres(point_set *q, int k, const ladle_kmeans_options *o, uint64_t restart, seed_scratch *s,
                         centre_set *centres)
{
    const size_t n = q->n, d = (size_t)q->d, tries = (size_t)s->cand.k;
    size_t first = (size_t)ladle_rng_below(o->seed, restart, o->stream, 0, n);
    copy_point(q, first, s->one.c);
    centres_refresh(&s->one, q->metric);
    memcpy(centres->c, s->one.c, d * sizeof(double));
    for (size_t i = 0; i < n; i++) s->dist[i] = INFINITY;
    lower_distances(q, &s->one, s->dist);
    s->dist[first] = 0.0;   /* exactly: it is the centre */

    for (int c = 1; c < k; c++) {
        int best = best_candidate(q, c, o, restart, s);
        memcpy(centres->c + (size_t)c * d, s->cand.c + (size_t)best * d, d * sizeof(double));
        for (size_t i = 0; i < n; i++) s->dist[i] = smaller(s->dist[i], s->cand_dist[i * tries + (size_t)best]);
        s->dist[s->cand_index[best]] = 0.0;
    }
    centres_refresh(centres, q->metric);
}

/* The sample: the S points at indices floor(j n_total / S), j < S, copied (in the points'
 * precision) from the ranks that hold them into the same buffer on every rank. */
static uint64_t sample_index(uint64_t j, uint64_t n_total, uint64_t S)
{
    return j * (n_total / S) + j * (n_total % S) / S;   /* no overflow for S < 2^31 */
}

static void *gather_sample(const point_set *p, const spread *s, size_t S)
{
    const size_t elem = p->is_float ? sizeof(float) : sizeof(double), row = (size_t)p->d * elem;
    uint8_t *buf = ladle_calloc(S, row, "k-means seeding sample");
    /* both lists ascend: walk them together from the first slot at or after point 0 */
    size_t j = 0;
    if (p->n > 0) {
        size_t lo = 0, hi = S;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (sample_index(mid, s->n_total, S) < index_of(s, 0)) lo = mid + 1;
            else hi = mid;
        }
        j = lo;
    }
    const uint8_t *x = p->is_float ? (const uint8_t *)p->x32 : (const uint8_t *)p->x64;
    for (size_t i = 0; i < p->n && j < S; i++) {
        uint64_t g = index_of(s, i);
        while (j < S && sample_index(j, s->n_total, S) < g) j++;
        if (j < S && sample_index(j, s->n_total, S) == g) memcpy(buf + j * row, x + i * row, row);
    }
    /* every slot is filled by one rank and zero on the others: OR is exact */
    all_reduce(s, buf, S * (size_t)p->d, p->is_float ? MPI_UINT32_T : MPI_UINT64_T, MPI_BOR);
    return buf;
}

/* ---- Lloyd iterations -------------------------------------------------------------------- */

typedef struct {
    int *next;                     /* [n] labels of the current assignment step */
    double *dist;                  /* [n] direct distance to the nearest centre */
    int64_t *acc;                  /* [k x d] fixed-point sums, [k] counts, [1] changed: all-reduced */
    int e;                         /* the sums' scale 2^e */
} lloyd_scratch;

/* This rank's part of acc for the labels (changed: any label differs from prev). */
static void accumulate(const point_set *p, int k, const int *label, const int *prev, lloyd_scratch *l)
{
    const size_t d = (size_t)p->d;
    int64_t *count = l->acc + (size_t)k * d;
    memset(l->acc, 0, ((size_t)k * (d + 1) + 1) * sizeof(int64_t));
    const double scale = ldexp(1.0, l->e);
    int changed = 0;
    for (size_t i = 0; i < p->n; i++) {
        int64_t *sum = l->acc + (size_t)label[i] * d;
        for (size_t t = 0; t < d; t++) sum[t] += llrint(value(p, i, (int)t) * scale);
        count[label[i]]++;
        changed |= label[i] != prev[i];
    }
    count[k] = changed;
}

/* acc over all ranks. */
static void accumulate_all(const point_set *p, const spread *s, int k, const int *label, const int *prev,
                           lloyd_scratch *l)
{
    accumulate(p, k, label, prev, l);
    all_reduce(s, l->acc, (size_t)k * ((size_t)p->d + 1) + 1, MPI_INT64_T, MPI_SUM);
}

/* Every empty cluster takes the point farthest from its centre among the clusters with
 * two or more points, over all ranks (ties: the lowest index). Returns whether any did. */
static int fill_empty(const point_set *p, const spread *s, int k, int *label, int64_t *count, double *dist)
{
    int filled = 0;
    for (int j = 0; j < k; j++) {
        if (count[j]) continue;
        double far = -INFINITY;
        for (size_t i = 0; i < p->n; i++)
            if (count[label[i]] > 1) far = larger(far, dist[i]);
        all_reduce(s, &far, 1, MPI_DOUBLE, MPI_MAX);
        /* this rank's farthest, if it has one: the lowest index among equals */
        size_t mine = p->n;
        for (size_t i = 0; i < p->n && mine == p->n; i++)
            if (count[label[i]] > 1 && dist[i] == far) mine = i;
        uint64_t who = mine < p->n ? index_of(s, mine) : UINT64_MAX;
        all_reduce(s, &who, 1, MPI_UINT64_T, MPI_MIN);
        LADLE_CHECK(who != UINT64_MAX, "k-means: no point to fill cluster %d with", j);
        int owner = mine < p->n && index_of(s, mine) == who;
        int from = owner ? label[mine] : -1;
        all_reduce(s, &from, 1, MPI_INT, MPI_MAX);
        if (owner) {
            label[mine] = j;
            dist[mine] = 0.0;   /* now the only point of its cluster: not taken twice */
        }
        count[from]--;
        count[j] = 1;
        filled = 1;
    }
    return filled;
}

/* Centres from the all-reduced sums: Euclidean the mean, spherical the sum scaled to unit
 * norm (a cluster summing to zero keeps its centre); rounded to the points' precision. */
static void update_centres(const point_set *p, int k, const lloyd_scratch *l, centre_set *c)
{
    const size_t d = (size_t)p->d;
    const int64_t *count = l->acc + (size_t)k * d;
    for (int j = 0; j < k; j++) {
        const int64_t *sum = l->acc + (size_t)j * d;
        double *centre = c->c + (size_t)j * d, scale;
        if (p->metric == LADLE_KMEANS_EUCLIDEAN) {
            if (count[j] == 0) continue;
            scale = ldexp(1.0, -l->e) / (double)count[j];
        } else {
            double norm2 = 0.0;
            for (size_t t = 0; t < d; t++) norm2 += (double)sum[t] * (double)sum[t];
            if (!(norm2 > 0.0)) continue;
            scale = 1.0 / sqrt(norm2);
        }
        for (size_t t = 0; t < d; t++) centre[t] = (double)sum[t] * scale;
        if (p->is_float)
            for (size_t t = 0; t < d; t++) centre[t] = (float)centre[t];
    }
    centres_refresh(c, p->metric);
}

/* Sum over all points of the direct distance to their centre. */
static double objective(point_set *p, const spread *s, const centre_set *c, const int *label, double *scratch)
{
    for (size_t i = 0; i < p->n; i++) scratch[i] = exact_distance(p, i, c->c + (size_t)label[i] * (size_t)p->d);
    return global_sum(s, scratch, p->n);
}

/* One restart's Lloyd iterations from the seeded centres c: label[n] gets the clusters, c
 * their centres; returns the objective. */
static double lloyd(point_set *p, const spread *s, int k, int max_iters, centre_set *c, int *label, lloyd_scratch *l,
                    double *seconds)
{
    int64_t *count = l->acc + (size_t)k * (size_t)p->d;
    for (size_t i = 0; i < p->n; i++) label[i] = -1;
    for (int it = 0; it < max_iters; it++) {
        double t0 = now();
        assign_nearest(p, c, l->next, l->dist);
        accumulate_all(p, s, k, l->next, label, l);
        if (fill_empty(p, s, k, l->next, count, l->dist)) accumulate_all(p, s, k, l->next, label, l);
        int changed = count[k] != 0;
        memcpy(label, l->next, p->n * sizeof(int));
        update_centres(p, k, l, c);
        if (seconds) seconds[1 + it] = now() - t0;
        if (!changed) break;
    }
    return objective(p, s, c, label, l->dist);
}

/* ---- the clustering --------------------------------------------------------------------- */

/* Seeding candidates per centre. */
static int seeding_tries(int k)
{
    return 2 + (int)log((double)k);
}

typedef struct {
    uint64_t first;
    int cluster;
} first_point;

static int by_first_point(const void *a, const void *b)
{
    uint64_t x = ((const first_point *)a)->first, y = ((const first_point *)b)->first;
    return (x > y) - (x < y);
}

/* Clusters numbered by the index of their first point over all ranks: equivalent
 * clusterings come out identical. assign[i] and centres (may be NULL) from best. */
static void renumber(const point_set *p, const spread *s, int k, const int *best, const double *best_centres,
                     int *assign, double *centres)
{
    first_point *order = ladle_malloc((size_t)k * sizeof *order, "k-means numbering");
    uint64_t *first = ladle_malloc((size_t)k * sizeof *first, "k-means numbering");
    int *number = ladle_malloc((size_t)k * sizeof *number, "k-means numbering");
    for (int j = 0; j < k; j++) first[j] = UINT64_MAX;
    for (size_t i = 0; i < p->n; i++) {
        uint64_t g = index_of(s, i);
        if (g < first[best[i]]) first[best[i]] = g;
    }
    all_reduce(s, first, (size_t)k, MPI_UINT64_T, MPI_MIN);
    for (int j = 0; j < k; j++) {
        LADLE_CHECK(first[j] != UINT64_MAX, "k-means: cluster %d of %d is empty", j, k);
        order[j] = (first_point){first[j], j};
    }
    qsort(order, (size_t)k, sizeof *order, by_first_point);
    const size_t d = (size_t)p->d;
    for (int r = 0; r < k; r++) {
        number[order[r].cluster] = r;
        if (centres) memcpy(centres + (size_t)r * d, best_centres + (size_t)order[r].cluster * d, d * sizeof(double));
    }
    for (size_t i = 0; i < p->n; i++) assign[i] = number[best[i]];
    free(number);
    free(first);
    free(order);
}

static size_t sample_size(const ladle_kmeans_options *o, uint64_t n_total, int k)
{
    uint64_t S = o->sample == 0 || o->sample > n_total ? n_total : o->sample;
    if (S < (uint64_t)k) S = (uint64_t)k;
    LADLE_CHECK(S < ((uint64_t)1 << 31), "k-means: a seeding sample of %llu points", (unsigned long long)S);
    return (size_t)S;
}

static void scratch_create(seed_scratch *ss, lloyd_scratch *ls, const point_set *p, size_t S, int k, int tries)
{
    const int with_float = p->is_float;
    centres_create(&ss->one, 1, p->d, with_float);
    centres_create(&ss->cand, tries, p->d, with_float);
    ss->dist = ladle_malloc(S * sizeof(double), "k-means seeding distances");
    ss->cand_dist = ladle_malloc(S * (size_t)tries * sizeof(double), "k-means candidate distances");
    ss->potential = ladle_malloc((size_t)tries * sizeof(double), "k-means potentials");
    ss->cand_index = ladle_malloc((size_t)tries * sizeof(size_t), "k-means candidates");
    ls->next = ladle_malloc((p->n ? p->n : 1) * sizeof(int), "k-means assignments");
    ls->dist = ladle_malloc((p->n ? p->n : 1) * sizeof(double), "k-means distances");
    ls->acc = ladle_malloc(((size_t)k * ((size_t)p->d + 1) + 1) * sizeof(int64_t), "k-means sums");
}

static void scratch_free(seed_scratch *ss, lloyd_scratch *ls)
{
    centres_free(&ss->one);
    centres_free(&ss->cand);
    free(ss->dist); free(ss->cand_dist); free(ss->potential); free(ss->cand_index);
    free(ls->next); free(ls->dist); free(ls->acc);
}

/* The clustering itself, for either precision: assign[n], centres [k x d] in double (may
 * be NULL). */
static double cluster(point_set *p, const spread *s, int k, const ladle_kmeans_options *o, double *centres,
                      int *assign)
{
    const int tries = seeding_tries(k);
    const size_t n = p->n, d = (size_t)p->d, S = sample_size(o, s->n_total, k);
    /* one process seeding on every point needs no copy of them */
    void *sample = S == s->n_total && s->comm == MPI_COMM_NULL ? NULL : gather_sample(p, s, S);
    point_set q;
    point_set_create(&q, sample ? sample : p->is_float ? (const void *)p->x32 : (const void *)p->x64, p->is_float, S,
                     p->d, p->metric, tries);
    double top = 0.0;
    for (size_t i = 0; i < n * d; i++) top = larger(top, fabs(p->is_float ? (double)p->x32[i] : p->x64[i]));
    all_reduce(s, &top, 1, MPI_DOUBLE, MPI_MAX);

    seed_scratch ss;
    lloyd_scratch ls;
    scratch_create(&ss, &ls, p, S, k, tries);
    ls.e = fixed_exponent(top, s->n_total);
    centre_set c;
    centres_create(&c, k, p->d, p->is_float);
    int *label = ladle_malloc((n ? n : 1) * sizeof(int), "k-means labels");
    int *best = ladle_malloc((n ? n : 1) * sizeof(int), "k-means best labels");
    double *best_centres = ladle_malloc((size_t)k * d * sizeof(double), "k-means best centres");
    double best_objective = INFINITY;
    for (int r = 0; r < o->restarts; r++) {
        double t0 = now();
        seed_centres(&q, k, o, (uint64_t)r, &ss, &c);
        if (o->seconds) o->seconds[0] = now() - t0;
        double obj = lloyd(p, s, k, o->max_iters, &c, label, &ls, o->seconds);
        /* strict <: among equal objectives the earliest restart wins */
        if (r == 0 || obj < best_objective) {
            best_objective = obj;
            memcpy(best, label, n * sizeof(int));
            memcpy(best_centres, c.c, (size_t)k * d * sizeof(double));
        }
    }
    renumber(p, s, k, best, best_centres, assign, centres);

    free(best_centres); free(best); free(label);
    centres_free(&c);
    scratch_free(&ss, &ls);
    point_set_free(&q);
    free(sample);
    return best_objective;
}

/* Columns of the widest product of a clustering: the k centres or the candidates. */
static int widest_product(int k)
{
    return k > seeding_tries(k) ? k : seeding_tries(k);
}

static void check_arguments(uint64_t n, int d, int k, const ladle_kmeans_options *o)
{
    LADLE_CHECK(k >= 1 && (uint64_t)k <= n && d >= 1 && o->restarts >= 1 && o->max_iters >= 1
                    && (o->metric == LADLE_KMEANS_EUCLIDEAN || o->metric == LADLE_KMEANS_SPHERICAL),
                "k-means: need 1 <= k <= n, d >= 1, restarts >= 1, max_iters >= 1 (k = %d, n = %llu, d = %d, "
                "restarts = %d, max_iters = %d, metric %d)", k, (unsigned long long)n, d, o->restarts, o->max_iters,
                (int)o->metric);
}

double ladle_kmeans(const double *x, size_t n, int d, int k, const ladle_kmeans_options *opt, double *centroids,
                    int *assign)
{
    check_arguments(n, d, k, opt);
    spread s = {MPI_COMM_NULL, NULL, n};
    point_set p;
    point_set_create(&p, x, 0, n, d, opt->metric, widest_product(k));
    double obj = cluster(&p, &s, k, opt, centroids, assign);
    point_set_free(&p);
    return obj;
}

double ladle_kmeans_float_mpi(const float *x, size_t n, const uint64_t *index, uint64_t n_total, int d, int k,
                              const ladle_kmeans_options *opt, MPI_Comm comm, float *centroids, int *assign)
{
    check_arguments(n_total, d, k, opt);
    for (size_t i = 1; index && i < n; i++)
        LADLE_CHECK(index[i] > index[i - 1], "k-means: point indices must increase (%zu: %llu after %llu)", i,
                    (unsigned long long)index[i], (unsigned long long)index[i - 1]);
    LADLE_CHECK(n == 0 || (index ? index[n - 1] : n - 1) < n_total, "k-means: a point index is past n_total");
    spread s = {comm, index, n_total};
    point_set p;
    point_set_create(&p, x, 1, n, d, opt->metric, widest_product(k));
    double *centres = ladle_malloc((size_t)k * (size_t)d * sizeof(double), "k-means centroids");
    double obj = cluster(&p, &s, k, opt, centres, assign);
    /* exact: the centres were rounded to float when computed */
    if (centroids)
        for (size_t i = 0; i < (size_t)k * (size_t)d; i++) centroids[i] = (float)centres[i];
    free(centres);
    point_set_free(&p);
    return obj;
}

double ladle_kmeans_float(const float *x, size_t n, int d, int k, const ladle_kmeans_options *opt,
                          float *centroids, int *assign)
{
    return ladle_kmeans_float_mpi(x, n, NULL, n, d, k, opt, MPI_COMM_NULL, centroids, assign);
}

void ladle_kmeans_nearest_float(const float *centroids, int k, int d, ladle_kmeans_metric metric, const float *x,
                                size_t n, int *assign, double *dist)
{
    LADLE_CHECK(k >= 1 && d >= 1, "nearest centroid: k = %d, d = %d", k, d);
    if (n == 0) return;
    point_set p;
    point_set_create(&p, x, 1, n, d, metric, k);
    centre_set c;
    centres_create(&c, k, d, 1);
    for (size_t i = 0; i < (size_t)k * (size_t)d; i++) c.c[i] = centroids[i];
    centres_refresh(&c, metric);
    assign_nearest(&p, &c, assign, dist);
    centres_free(&c);
    point_set_free(&p);
}
