/* Unit tests of embed (document embedding, clusters of embeddings, cluster histograms) and of
 * 'ladle prep --clusters'. A single process: run directly, no mpiexec. */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700
#endif

#include "ladle/data.h"
#include "ladle/embed.h"
#include "ladle/prep.h"
#include "ladle/rng.h"
#include "testfs.h"
#include "testutil.h"

#include <hdf5.h>
#include <mpi.h>

#include <ftw.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static test_counts T;

/* ---- text generators -------------------------------------------------------------- */

typedef struct {
    char *s;
    size_t n, cap;
} text;

static void put(text *t, const char *s)
{
    size_t m = strlen(s);
    if (t->n + m + 1 > t->cap) {
        t->cap = (t->n + m + 1) * 2;
        t->s = realloc(t->s, t->cap);
        if (!t->s) { perror("realloc"); exit(1); }
    }
    memcpy(t->s + t->n, s, m + 1);
    t->n += m;
}

static uint64_t next_rand(uint64_t *x)
{
    *x ^= *x << 13; *x ^= *x >> 7; *x ^= *x << 17;
    return *x;
}

static const char *pick(uint64_t *x, const char *const *words, size_t n)
{
    return words[next_rand(x) % n];
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* C-like code, about `bytes` long, different for every seed. */
static text make_code(size_t bytes, unsigned seed)
{
    static const char *const types[] = {"int", "size_t", "float", "const char *", "uint8_t", "double", "long"};
    static const char *const names[] = {"count", "buf", "len", "idx", "node", "ptr", "total", "offset", "state",
                                        "value", "tmp", "width"};
    static const char *const ops[] = {"+", "-", "*", "<<", ">>", "&", "|", "^"};
    uint64_t x = 0x9e3779b97f4a7c15ULL * (seed + 1);
    text t = {0};
    char line[256];
    while (t.n < bytes) {
        snprintf(line, sizeof line, "static %s %s_%u(%s %s, int %s)\n{\n", pick(&x, types, COUNT(types)),
                 pick(&x, names, COUNT(names)), (unsigned)(next_rand(&x) % 100), pick(&x, types, COUNT(types)),
                 pick(&x, names, COUNT(names)), pick(&x, names, COUNT(names)));
        put(&t, line);
        int stmts = 2 + (int)(next_rand(&x) % 5);
        for (int i = 0; i < stmts; i++) {
            switch (next_rand(&x) % 4) {
            case 0:
                snprintf(line, sizeof line, "    for (int i = 0; i < %s; i++) %s[i] = %s[i] %s %u;\n",
                         pick(&x, names, COUNT(names)), pick(&x, names, COUNT(names)), pick(&x, names, COUNT(names)),
                         pick(&x, ops, COUNT(ops)), (unsigned)(next_rand(&x) % 64));
                break;
            case 1:
                snprintf(line, sizeof line, "    if (%s == NULL) return -%u;\n", pick(&x, names, COUNT(names)),
                         (unsigned)(next_rand(&x) % 9 + 1));
                break;
            case 2:
                snprintf(line, sizeof line, "    %s = (%s %s %s) & 0x%02x;\n", pick(&x, names, COUNT(names)),
                         pick(&x, names, COUNT(names)), pick(&x, ops, COUNT(ops)), pick(&x, names, COUNT(names)),
                         (unsigned)(next_rand(&x) % 256));
                break;
            default:
                snprintf(line, sizeof line, "    %s += %s_%u(%s, %s);\n", pick(&x, names, COUNT(names)),
                         pick(&x, names, COUNT(names)), (unsigned)(next_rand(&x) % 100), pick(&x, names, COUNT(names)),
                         pick(&x, names, COUNT(names)));
            }
            put(&t, line);
        }
        snprintf(line, sizeof line, "    return %s;\n}\n\n", pick(&x, names, COUNT(names)));
        put(&t, line);
    }
    return t;
}

/* English-like prose, about `bytes` long. */
static text make_prose(size_t bytes, unsigned seed)
{
    static const char *const nouns[] = {"river", "morning", "village", "teacher", "garden", "letter", "window",
                                        "mountain", "friend", "story", "market", "evening", "house", "road"};
    static const char *const verbs[] = {"walked", "remembered", "opened", "carried", "watched", "followed",
                                        "painted", "wondered about", "found", "left"};
    static const char *const adjs[] = {"quiet", "old", "golden", "narrow", "gentle", "distant", "bright",
                                       "little", "heavy", "pleasant"};
    static const char *const links[] = {"and then", "while", "because", "although", "so that", "before"};
    uint64_t x = 0x2545f4914f6cdd1dULL * (seed + 7);
    text t = {0};
    char line[512];
    while (t.n < bytes) {
        snprintf(line, sizeof line, "The %s %s %s the %s %s, %s the %s %s was %s. ", pick(&x, adjs, COUNT(adjs)),
                 pick(&x, nouns, COUNT(nouns)), pick(&x, verbs, COUNT(verbs)), pick(&x, adjs, COUNT(adjs)),
                 pick(&x, nouns, COUNT(nouns)), pick(&x, links, COUNT(links)), pick(&x, adjs, COUNT(adjs)),
                 pick(&x, nouns, COUNT(nouns)), pick(&x, adjs, COUNT(adjs)));
        put(&t, line);
        if (next_rand(&x) % 5 == 0) put(&t, "\n\n");
    }
    return t;
}

static double cosine(const float *a, const float *b, int d)
{
    double s = 0;
    for (int i = 0; i < d; i++) s += (double)a[i] * b[i];
    return s;
}

static double norm(const float *a, int d)
{
    return sqrt(cosine(a, a, d));
}

/* ---- embedding ------------------------------------------------------------------- */

/* Largest difference between ladle_embed of t and embed.h's formula computed densely in
 * double from the n-grams' start positions. */
static double formula_error(const ladle_embedder *e, const text *t)
{
    const ladle_embed_params *p = &e->params;
    double *f = calloc((size_t)p->buckets, sizeof(double)), *ref = calloc((size_t)p->dim, sizeof(double));
    float *v = malloc(sizeof(float) * (size_t)p->dim);
    for (size_t i = 0; i < t->n; i++) {
        uint64_t h = 0xcbf29ce484222325ULL;
        for (size_t n = 1; n <= (size_t)p->ngram && i + n <= t->n; n++) {
            h = (h ^ (uint8_t)t->s[i + n - 1]) * 0x100000001b3ULL;
            uint64_t g = (h ^ n) * 0x100000001b3ULL;
            g ^= g >> 32;
            f[g % (uint64_t)p->buckets] += 1;
        }
    }
    for (int c = 0; c < p->buckets; c++) f[c] = log1p(f[c]);
    for (int r = 0; r < p->dim; r++)
        for (int c = 0; c < p->buckets; c++)
            ref[r] += ladle_rng_normal(p->seed, 0, LADLE_STREAM_INIT + 200, (uint64_t)(r * p->buckets + c)) / sqrt(p->dim) * f[c];
    ladle_embed(e, (const uint8_t *)t->s, t->n, v);
    double rn = 0, worst = 0;
    for (int r = 0; r < p->dim; r++) rn += ref[r] * ref[r];
    for (int r = 0; r < p->dim; r++) worst = fmax(worst, fabs(ref[r] / sqrt(rn) - v[r]));
    free(f);
    free(ref);
    free(v);
    return worst;
}

static void test_embedding(void)
{
    ladle_embed_params p;
    ladle_embed_params_default(&p);
    EXPECT(&T, p.ngram == 3 && p.buckets == 4096 && p.dim == 64, "defaults %d %d %d", p.ngram, p.buckets, p.dim);
    ladle_embedder e1, e2;
    ladle_embedder_create(&e1, &p);
    ladle_embedder_create(&e2, &p);
    int d = p.dim;
    EXPECT(&T, memcmp(e1.projection, e2.projection, (size_t)d * (size_t)p.buckets * sizeof(float)) == 0,
           "projection not deterministic");
    /* the documented formula */
    /* the documented formula: P[5][7], stored transposed */
    EXPECT(&T, e1.projection[7 * d + 5] == ladle_rng_normal(p.seed, 0, LADLE_STREAM_INIT + 200,
                                                              (uint64_t)(5 * p.buckets + 7)) / sqrtf((float)d),
           "projection entry differs from its formula");

    text c1 = make_code(3000, 1), c2 = make_code(3000, 2), e = make_prose(3000, 1), e2t = make_prose(3000, 2);
    float *v1 = malloc(sizeof(float) * (size_t)d), *v1b = malloc(sizeof(float) * (size_t)d);
    float *v2 = malloc(sizeof(float) * (size_t)d), *ve = malloc(sizeof(float) * (size_t)d);
    float *ve2 = malloc(sizeof(float) * (size_t)d), *vs = malloc(sizeof(float) * (size_t)d);
    ladle_embed(&e1, (const uint8_t *)c1.s, c1.n, v1);
    ladle_embed(&e2, (const uint8_t *)c1.s, c1.n, v1b);
    EXPECT(&T, memcmp(v1, v1b, sizeof(float) * (size_t)d) == 0, "embedding not deterministic");
    ladle_embed(&e1, (const uint8_t *)c2.s, c2.n, v2);
    ladle_embed(&e1, (const uint8_t *)e.s, e.n, ve);
    ladle_embed(&e1, (const uint8_t *)e2t.s, e2t.n, ve2);
    EXPECT(&T, fabs(norm(v1, d) - 1) < 1e-5 && fabs(norm(ve, d) - 1) < 1e-5, "not unit norm: %g %g", norm(v1, d),
           norm(ve, d));
    double cc = cosine(v1, v2, d), ee = cosine(ve, ve2, d), ce = cosine(v1, ve, d), ce2 = cosine(v2, ve2, d);
    printf("cos(code, code) %.3f  cos(prose, prose) %.3f  cos(code, prose) %.3f %.3f\n", cc, ee, ce, ce2);
    EXPECT(&T, cc > ce + 0.2 && cc > ce2 + 0.2, "two C snippets not closer (%.3f) than C and prose (%.3f, %.3f)", cc,
           ce, ce2);
    EXPECT(&T, ee > ce + 0.2 && ee > ce2 + 0.2, "two prose texts not closer (%.3f) than C and prose (%.3f, %.3f)",
           ee, ce, ce2);

    /* shifting the text by a few bytes, or cutting its end, barely moves it */
    ladle_embed(&e1, (const uint8_t *)c1.s + 5, c1.n - 5, vs);
    double shift = cosine(v1, vs, d);
    ladle_embed(&e1, (const uint8_t *)c1.s, c1.n - 11, vs);
    double cut = cosine(v1, vs, d);
    ladle_embed(&e1, (const uint8_t *)e.s + 3, e.n - 3, vs);
    double shift_e = cosine(ve, vs, d);
    printf("cos under shifts: %.4f %.4f %.4f\n", shift, cut, shift_e);
    EXPECT(&T, shift > 0.98 && cut > 0.98 && shift_e > 0.98, "byte shifts moved the embedding: %.4f %.4f %.4f",
           shift, cut, shift_e);

    /* an empty document: all zeros */
    for (int i = 0; i < d; i++) vs[i] = 1;
    ladle_embed(&e1, (const uint8_t *)"", 0, vs);
    int zeros = 1;
    for (int i = 0; i < d; i++) zeros &= vs[i] == 0;
    EXPECT(&T, zeros, "empty document is not all zeros");

    /* the batch gives the single results bit for bit, and so does a document fed in
     * pieces (of 1, 2, 3, ... bytes: every n-gram crosses some piece boundary) */
    enum { NB = 70 };
    const uint8_t *docs[NB];
    size_t lens[NB];
    text texts[NB];
    for (int i = 0; i < NB; i++) {
        texts[i] = i % 2 ? make_code(200 + (size_t)i * 13, 100 + (unsigned)i) : make_prose(150 + (size_t)i * 7, (unsigned)i);
        docs[i] = (const uint8_t *)texts[i].s;
        lens[i] = texts[i].n;
    }
    lens[3] = 0;
    float *batch = malloc(sizeof(float) * NB * (size_t)d);
    ladle_embed_batch(&e1, docs, lens, NB, batch);
    int same = 1, pieces_same = 1;
    ladle_embed_stream st;
    ladle_embed_stream_create(&st, &e1);
    for (int i = 0; i < NB; i++) {
        ladle_embed(&e1, docs[i], lens[i], vs);
        same &= memcmp(vs, batch + (size_t)i * d, sizeof(float) * (size_t)d) == 0;
        for (size_t at = 0, piece = 1; at < lens[i]; at += piece, piece++)
            ladle_embed_feed(&st, docs[i] + at, at + piece <= lens[i] ? piece : lens[i] - at);
        ladle_embed_finish(&st, vs);
        pieces_same &= memcmp(vs, batch + (size_t)i * d, sizeof(float) * (size_t)d) == 0;
    }
    ladle_embed_stream_free(&st);
    EXPECT(&T, same, "batch embedding differs from one at a time");
    EXPECT(&T, pieces_same, "a document fed in pieces embeds differently");

    /* the documented formula (the power-of-two buckets and the modulo alike) */
    EXPECT(&T, formula_error(&e1, &c1) < 1e-5, "embedding differs from the documented formula by %g",
           formula_error(&e1, &c1));
    ladle_embed_params odd = {4, 1000, 16, 5};
    ladle_embedder e4;
    ladle_embedder_create(&e4, &odd);
    EXPECT(&T, formula_error(&e4, &e) < 1e-5, "embedding (1000 buckets) differs from the documented formula by %g",
           formula_error(&e4, &e));
    ladle_embedder_free(&e4);
    for (int i = 0; i < NB; i++) free(texts[i].s);
    free(batch);

    /* other parameters are honoured */
    ladle_embed_params q = {2, 512, 16, 99};
    ladle_embedder e3;
    ladle_embedder_create(&e3, &q);
    ladle_embed(&e3, (const uint8_t *)c1.s, c1.n, vs);
    EXPECT(&T, fabs(norm(vs, 16) - 1) < 1e-5, "dim 16 embedding not unit norm");
    ladle_embedder_free(&e3);

    free(v1); free(v1b); free(v2); free(ve); free(ve2); free(vs);
    free(c1.s); free(c2.s); free(e.s); free(e2t.s);
    ladle_embedder_free(&e1);
    ladle_embedder_free(&e2);
}

/* ---- clusters of embeddings (kmeans.h itself: test_kmeans.c) ------------------ */

/* n points around k random unit directions in d dimensions, point i from cluster i % k
 * (so the clusters are interleaved), normalised. Noise 0.03 per coordinate in 32
 * dimensions puts points ~0.03 (cosine distance) from each other within a cluster and
 * ~1 across: k-means++ then seeds every cluster. (At noise 0.08 the within-cluster total
 * rivals the rest and any k-means++ sometimes seeds a cluster twice.) */
static void synthetic(float *x, int *truth, float *dirs, size_t n, int d, int k, float noise, uint64_t seed)
{
    for (int j = 0; j < k; j++) {
        double s = 0;
        for (int t = 0; t < d; t++) {
            dirs[j * d + t] = ladle_rng_normal(seed, 1, 77, (uint64_t)(j * d + t));
            s += (double)dirs[j * d + t] * dirs[j * d + t];
        }
        for (int t = 0; t < d; t++) dirs[j * d + t] /= (float)sqrt(s);
    }
    for (size_t i = 0; i < n; i++) {
        int j = (int)(i % (size_t)k);
        truth[i] = j;
        double s = 0;
        for (int t = 0; t < d; t++) {
            float v = dirs[j * d + t] + noise * ladle_rng_normal(seed, 2, 77, i * (size_t)d + (size_t)t);
            x[i * (size_t)d + t] = v;
            s += (double)v * v;
        }
        for (int t = 0; t < d; t++) x[i * (size_t)d + t] /= (float)sqrt(s);
    }
}

/* assign equals truth up to a permutation of labels. */
static void test_cluster_embeddings(void)
{
    enum { D = 32, K = 8, N = 400 };
    float *x = malloc(sizeof(float) * N * D), *dirs = malloc(sizeof(float) * K * D);
    int truth[N], assign[N], assign2[N];
    float c1[K * D], c2[K * D];
    int all_seeds_ok = 1;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        synthetic(x, truth, dirs, N, D, K, 0.03f, seed);
        ladle_cluster_embeddings(x, N, NULL, N, D, K, seed, MPI_COMM_NULL, c1, assign);
        if (!test_same_partition(assign, truth, N, K)) {
            all_seeds_ok = 0;
            fprintf(stderr, "k-means missed the partition for seed %llu\n", (unsigned long long)seed);
        }
    }
    EXPECT(&T, all_seeds_ok, "k-means did not recover well-separated clusters for every seed");

    synthetic(x, truth, dirs, N, D, K, 0.03f, 42);
    ladle_cluster_embeddings(x, N, NULL, N, D, K, 5, MPI_COMM_NULL, c1, assign);
    ladle_cluster_embeddings(x, N, NULL, N, D, K, 5, MPI_COMM_NULL, c2, assign2);
    EXPECT(&T, memcmp(c1, c2, sizeof c1) == 0 && memcmp(assign, assign2, sizeof assign) == 0,
           "k-means not deterministic");
    double worst = 0;
    for (int j = 0; j < K; j++) worst = fmax(worst, fabs(norm(c1 + j * D, D) - 1));
    EXPECT(&T, worst < 1e-5, "centroids not unit norm (off by %g)", worst);
    EXPECT(&T, test_same_partition(assign, truth, N, K), "k-means missed the partition (data seed 42)");
    /* each centroid lies along one of the true directions */
    int aligned = 1;
    for (int j = 0; j < K; j++) {
        double best = -1;
        for (int t = 0; t < K; t++) best = fmax(best, cosine(c1 + j * D, dirs + t * D, D));
        aligned &= best > 0.95;
    }
    EXPECT(&T, aligned, "a centroid is not along a true direction");

    /* nearest centroid: brute force, single and batch */
    int near_ok = 1, batch_ok = 1, consistent = 1;
    int near[N];
    float sim[N];
    ladle_nearest_centroids(c1, K, D, x, N, near, sim);
    for (size_t i = 0; i < N; i++) {
        int best = 0;
        for (int j = 1; j < K; j++)
            if (cosine(x + i * D, c1 + j * D, D) > cosine(x + i * D, c1 + best * D, D)) best = j;
        near_ok &= ladle_nearest_centroid(c1, K, D, x + i * D) == best;
        batch_ok &= near[i] == best && fabs(sim[i] - cosine(x + i * D, c1 + best * D, D)) < 1e-5;
        consistent &= assign[i] == best;   /* converged: assignments are the nearest centroids */
    }
    EXPECT(&T, near_ok, "ladle_nearest_centroid disagrees with brute force");
    EXPECT(&T, batch_ok, "ladle_nearest_centroids disagrees with brute force");
    EXPECT(&T, consistent, "converged k-means assignments are not the nearest centroids");

    free(x);
    free(dirs);
}

/* ---- histogram ------------------------------------------------------------------ */

static void test_histogram(void)
{
    ladle_clusters c;
    ladle_embed_params p;
    ladle_embed_params_default(&p);
    ladle_embedder_create(&c.embedder, &p);
    int d = p.dim;
    c.k = 3;
    c.centroids = malloc(sizeof(float) * 3 * (size_t)d);
    text refs[3] = {make_code(4000, 50), make_prose(4000, 50), {0}};
    put(&refs[2], "");
    for (int i = 0; i < 200; i++) put(&refs[2], "0123 4567 89ab cdef ");   /* hex dump-like */
    for (int j = 0; j < 3; j++) ladle_embed(&c.embedder, (const uint8_t *)refs[j].s, refs[j].n, c.centroids + j * d);

    enum { N = 13 };
    text docs[N];
    const uint8_t *ptr[N];
    size_t lens[N];
    for (int i = 0; i < N; i++) {
        docs[i] = i < 7 ? make_code(800, 60 + (unsigned)i) : make_prose(900, 60 + (unsigned)i);
        ptr[i] = (const uint8_t *)docs[i].s;
        lens[i] = docs[i].n;
    }
    lens[12] = 0;   /* empty: left out */
    float h[3];
    ladle_clusters_histogram(&c, ptr, lens, N, h);
    float expect[3] = {0, 0, 0};
    float v[64];
    for (int i = 0; i < N - 1; i++) {
        ladle_embed(&c.embedder, ptr[i], lens[i], v);
        expect[ladle_nearest_centroid(c.centroids, 3, d, v)] += 1.0f / (N - 1);
    }
    EXPECT(&T, fabsf(h[0] + h[1] + h[2] - 1) < 1e-6, "histogram sums to %g", h[0] + h[1] + h[2]);
    EXPECT(&T, fabsf(h[0] - expect[0]) < 1e-6 && fabsf(h[1] - expect[1]) < 1e-6 && fabsf(h[2] - expect[2]) < 1e-6,
           "histogram %g %g %g, assignments give %g %g %g", h[0], h[1], h[2], expect[0], expect[1], expect[2]);
    EXPECT(&T, fabsf(h[0] - 7.0f / 12) < 1e-6 && fabsf(h[1] - 5.0f / 12) < 1e-6 && h[2] == 0,
           "code and prose documents not matched to their references: %g %g %g", h[0], h[1], h[2]);
    for (int i = 0; i < N; i++) free(docs[i].s);
    for (int j = 0; j < 3; j++) free(refs[j].s);
    ladle_clusters_free(&c);
}

/* ---- prep --clusters ------------------------------------------------------------ */

static char root[512];

#define path_of(rel) test_path(root, (rel))

static void write_file(const char *rel, const text *t)
{
    FILE *f = fopen(path_of(rel), "wb");
    if (!f || fwrite(t->s, 1, t->n, f) != t->n) { perror(rel); exit(1); }
    fclose(f);
}


/* A whole 1-D dataset (NULL if absent), as mem_type of elem bytes; *n its length. */
static void *read_vector(hid_t file, const char *path, hid_t mem_type, size_t elem, size_t *n)
{
    *n = 0;
    if (H5Lexists(file, path, H5P_DEFAULT) <= 0) return NULL;
    hid_t dset = H5Dopen2(file, path, H5P_DEFAULT);
    if (dset < 0) return NULL;
    hid_t space = H5Dget_space(dset);
    hsize_t dims[1] = {0};
    H5Sget_simple_extent_dims(space, dims, NULL);
    *n = (size_t)dims[0];
    void *buf = malloc(*n * elem + 1);
    if (*n) H5Dread(dset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    H5Sclose(space);
    H5Dclose(dset);
    return buf;
}

static long read_u64(hid_t file, const char *obj, const char *name)
{
    unsigned long long v = 0;
    hid_t attr = H5Aopen_by_name(file, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    if (attr < 0) return -1;
    H5Aread(attr, H5T_NATIVE_ULLONG, &v);
    H5Aclose(attr);
    return (long)v;
}

/* Same dataset (bytes) at path_a in file a and path_b in file b. */
static int same_dataset(hid_t a, const char *path_a, hid_t b, const char *path_b)
{
    size_t na, nb;
    uint8_t *da = read_vector(a, path_a, H5T_NATIVE_UINT8, 1, &na);
    uint8_t *db = read_vector(b, path_b, H5T_NATIVE_UINT8, 1, &nb);
    int same = da && db && na == nb && memcmp(da, db, na) == 0;
    free(da);
    free(db);
    return same;
}

static int same_offsets(hid_t a, const char *path_a, hid_t b, const char *path_b)
{
    size_t na, nb;
    uint64_t *da = read_vector(a, path_a, H5T_NATIVE_UINT64, 8, &na);
    uint64_t *db = read_vector(b, path_b, H5T_NATIVE_UINT64, 8, &nb);
    int same = da && db && na == nb && memcmp(da, db, na * 8) == 0;
    free(da);
    free(db);
    return same;
}

static void test_prep_clusters(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/ladle-test-embed-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(root)) { perror("mkdtemp"); exit(1); }
    mkdir(path_of("code"), 0755);
    mkdir(path_of("prose"), 0755);
    enum { FILES = 30 };
    for (int i = 0; i < FILES; i++) {
        char rel[64];
        text t = make_code(600 + (size_t)(i * 97) % 1500, 200 + (unsigned)i);
        snprintf(rel, sizeof rel, "code/f%02d.c", i);
        write_file(rel, &t);
        free(t.s);
        t = make_prose(500 + (size_t)(i * 131) % 1700, 300 + (unsigned)i);
        snprintf(rel, sizeof rel, "prose/p%02d.txt", i);
        write_file(rel, &t);
        free(t.s);
    }
    const char *code_paths[1] = {strdup(path_of("code"))}, *prose_paths[1] = {strdup(path_of("prose"))};
    ladle_prep_domain domains[2] = {{"prose", 1, prose_paths}, {"code", 1, code_paths}};

    /* plain and clustered, from the same inputs */
    char plain[1100], clustered[1100], again[1100], many[1100];
    snprintf(plain, sizeof plain, "%s/plain.h5", root);
    snprintf(clustered, sizeof clustered, "%s/clustered.h5", root);
    snprintf(again, sizeof again, "%s/again.h5", root);
    snprintf(many, sizeof many, "%s/many.h5", root);
    ladle_prep_options opt = {.valid_fraction = 0.2, .seed = 77};
    ladle_prep(plain, domains, 2, &opt, MPI_COMM_WORLD, NULL);
    opt.clusters = 2;
    char *report_text = NULL;
    size_t report_len = 0;
    FILE *report = open_memstream(&report_text, &report_len);
    ladle_prep(clustered, domains, 2, &opt, MPI_COMM_WORLD, report);
    fclose(report);
    printf("%s", report_text);
    EXPECT(&T, strstr(report_text, "top sources") && strstr(report_text, "top clusters")
               && strstr(report_text, "c0") && strstr(report_text, "c1"),
           "report lacks the cluster tables");
    free(report_text);
    ladle_prep(again, domains, 2, &opt, MPI_COMM_WORLD, NULL);
    EXPECT(&T, file_equal(clustered, again), "prep --clusters twice gives different files");

    /* the clustered corpus opens as a corpus of domains c0, c1 */
    ladle_corpus corpus;
    ladle_corpus_open(&corpus, clustered, LADLE_CORPUS_MEMORY, MPI_COMM_WORLD);
    EXPECT(&T, corpus.n_domains == 2 && !strcmp(corpus.domains[0].name, "c0") && !strcmp(corpus.domains[1].name, "c1"),
           "clustered corpus has %d domains", corpus.n_domains);
    size_t cluster_bytes = 0;
    for (int i = 0; i < corpus.n_domains; i++) {
        cluster_bytes += corpus.domains[i].train_bytes + corpus.domains[i].valid_bytes;
        EXPECT(&T, corpus.domains[i].train_docs >= 1 && corpus.domains[i].valid_docs >= 1,
               "cluster %d has %zu train and %zu valid documents", i, corpus.domains[i].train_docs,
               corpus.domains[i].valid_docs);
    }
    ladle_corpus_free(&corpus);

    hid_t fp = H5Fopen(plain, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t fc = H5Fopen(clustered, H5F_ACC_RDONLY, H5P_DEFAULT);
    /* /sources holds the named domains exactly as a plain prep writes them */
    const char *names[2] = {"code", "prose"};
    size_t source_bytes = 0, source_docs[2] = {0, 0};
    for (int s = 0; s < 2; s++) {
        char pa[128], pb[128];
        const char *splits[2] = {"train", "valid"};
        for (int t = 0; t < 2; t++) {
            snprintf(pa, sizeof pa, "domains/%s/%s", names[s], splits[t]);
            snprintf(pb, sizeof pb, "sources/%s/%s", names[s], splits[t]);
            EXPECT(&T, same_dataset(fp, pa, fc, pb), "%s differs from %s of the plain corpus", pb, pa);
            size_t n;
            free(read_vector(fc, pb, H5T_NATIVE_UINT8, 1, &n));
            source_bytes += n;
            snprintf(pa, sizeof pa, "domains/%s/%s_offsets", names[s], splits[t]);
            snprintf(pb, sizeof pb, "sources/%s/%s_offsets", names[s], splits[t]);
            EXPECT(&T, same_offsets(fp, pa, fc, pb), "%s differs from %s of the plain corpus", pb, pa);
            free(read_vector(fc, pb, H5T_NATIVE_UINT64, 8, &n));
            source_docs[s] += n - 1;
        }
    }
    EXPECT(&T, source_bytes == cluster_bytes, "clusters hold %zu bytes, sources %zu", cluster_bytes, source_bytes);

    /* each cluster is (nearly) one source; the two clusters are different sources */
    int majority[2] = {-1, -1};
    size_t docs_seen[2] = {0, 0};
    for (int j = 0; j < 2; j++) {
        size_t counts[2] = {0, 0}, n = 0;
        const char *splits[2] = {"train_labels", "valid_labels"};
        for (int t = 0; t < 2; t++) {
            char path[64];
            snprintf(path, sizeof path, "domains/c%d/%s", j, splits[t]);
            uint16_t *labels = read_vector(fc, path, H5T_NATIVE_UINT16, 2, &n);
            EXPECT(&T, labels != NULL, "%s missing", path);
            char off[64];
            snprintf(off, sizeof off, "domains/c%d/%s_offsets", j, t ? "valid" : "train");
            size_t n_off;
            free(read_vector(fc, off, H5T_NATIVE_UINT64, 8, &n_off));
            EXPECT(&T, n + 1 == n_off, "%s has %zu labels for %zu documents", path, n, n_off - 1);
            for (size_t i = 0; labels && i < n; i++) {
                if (labels[i] < 2) counts[labels[i]]++;
                if (labels[i] < 2) docs_seen[labels[i]]++;
            }
            free(labels);
        }
        majority[j] = counts[0] >= counts[1] ? 0 : 1;
        double share = (double)counts[majority[j]] / (double)(counts[0] + counts[1]);
        printf("cluster c%d: %zu code, %zu prose documents\n", j, counts[0], counts[1]);
        EXPECT(&T, share >= 0.9, "cluster c%d is only %.0f%% one source", j, 100 * share);
        char g[32];
        snprintf(g, sizeof g, "domains/c%d", j);
        EXPECT(&T, read_u64(fc, g, "documents") == (long)(counts[0] + counts[1]),
               "c%d documents attribute %ld, labels %zu", j, read_u64(fc, g, "documents"), counts[0] + counts[1]);
    }
    EXPECT(&T, majority[0] != majority[1], "both clusters are mostly %s", names[majority[0]]);
    EXPECT(&T, docs_seen[0] == source_docs[0] && docs_seen[1] == source_docs[1],
           "labels count %zu + %zu documents, sources hold %zu + %zu", docs_seen[0], docs_seen[1], source_docs[0],
           source_docs[1]);
    EXPECT(&T, read_u64(fc, "/", "clusters") == 2, "root attribute clusters missing");
    H5Fclose(fc);
    H5Fclose(fp);

    /* /clusters: held-out code goes to code's cluster */
    ladle_clusters cl;
    ladle_clusters_load(&cl, clustered);
    EXPECT(&T, cl.k == 2 && cl.embedder.params.dim == 64 && cl.embedder.params.buckets == 4096
               && cl.embedder.params.ngram == 3 && cl.embedder.params.seed == 77,
           "clusters loaded as k %d dim %d buckets %d ngram %d seed %llu", cl.k, cl.embedder.params.dim,
           cl.embedder.params.buckets, cl.embedder.params.ngram, (unsigned long long)cl.embedder.params.seed);
    enum { HELD = 10 };
    text held[HELD];
    const uint8_t *ptr[HELD];
    size_t lens[HELD];
    for (int i = 0; i < HELD; i++) {
        held[i] = make_code(700 + (size_t)i * 50, 9000 + (unsigned)i);
        ptr[i] = (const uint8_t *)held[i].s;
        lens[i] = held[i].n;
    }
    float h[2];
    ladle_clusters_histogram(&cl, ptr, lens, HELD, h);
    int code_cluster = majority[0] == 0 ? 0 : 1;
    printf("held-out code: h = (%.2f, %.2f), code's cluster c%d\n", h[0], h[1], code_cluster);
    EXPECT(&T, h[code_cluster] >= 0.9f, "held-out code puts %.2f on code's cluster", h[code_cluster]);
    for (int i = 0; i < HELD; i++) {
        free(held[i].s);
        held[i] = make_prose(700 + (size_t)i * 50, 9100 + (unsigned)i);
        ptr[i] = (const uint8_t *)held[i].s;
        lens[i] = held[i].n;
    }
    ladle_clusters_histogram(&cl, ptr, lens, HELD, h);
    EXPECT(&T, h[1 - code_cluster] >= 0.9f, "held-out prose puts %.2f on prose's cluster", h[1 - code_cluster]);
    for (int i = 0; i < HELD; i++) free(held[i].s);
    ladle_clusters_free(&cl);

    /* many clusters: zero-padded names, every cluster with both splits non-empty, even
     * with a small valid fraction (clusters borrow a train document) */
    opt.clusters = 11;
    opt.valid_fraction = 0.05;
    opt.embed_dim = 32;
    opt.embed_buckets = 1024;
    ladle_prep(many, domains, 2, &opt, MPI_COMM_WORLD, NULL);
    ladle_corpus_open(&corpus, many, LADLE_CORPUS_MEMORY, MPI_COMM_WORLD);
    int names_ok = corpus.n_domains == 11, splits_ok = 1;
    size_t train_docs = 0, valid_docs = 0;
    for (int i = 0; i < corpus.n_domains; i++) {
        char want[16];
        snprintf(want, sizeof want, "c%02d", i % 100);
        names_ok &= !strcmp(corpus.domains[i].name, want);
        splits_ok &= corpus.domains[i].train_docs >= 1 && corpus.domains[i].valid_docs >= 1;
        train_docs += corpus.domains[i].train_docs;
        valid_docs += corpus.domains[i].valid_docs;
    }
    EXPECT(&T, names_ok, "11 clusters are not named c00..c10");
    EXPECT(&T, splits_ok, "a cluster has an empty split");
    EXPECT(&T, train_docs + valid_docs >= source_docs[0] + source_docs[1],
           "11 clusters hold %zu documents, the sources %zu", train_docs + valid_docs, source_docs[0] + source_docs[1]);
    ladle_corpus_free(&corpus);
    ladle_clusters_load(&cl, many);
    EXPECT(&T, cl.k == 11 && cl.embedder.params.dim == 32 && cl.embedder.params.buckets == 1024,
           "embedding options not stored");
    ladle_clusters_free(&cl);

    free((void *)code_paths[0]);
    free((void *)prose_paths[0]);
    nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    test_embedding();
    test_cluster_embeddings();
    test_histogram();
    test_prep_clusters();
    int rc = test_summary(&T, "test_embed");
    MPI_Finalize();
    return rc;
}
