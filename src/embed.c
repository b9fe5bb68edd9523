/* embed: document embedding, its clusters (spherical k-means, kmeans.h) and cluster
 * histograms (see embed.h for the exact embedding). The projection goes through BLIS
 * (ladle_gemm); BLIS splits the m and n loops over threads, never the reduction, so the
 * results do not depend on the thread count. */
#include "ladle/embed.h"
#include "ladle/data.h"
#include "ladle/error.h"
#include "ladle/h5io.h"
#include "ladle/kernels.h"
#include "ladle/kmeans.h"
#include "ladle/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* RNG streams of their own (step 0 of the INIT stream family is the model's). */
#define EMBED_STREAM ((uint64_t)LADLE_STREAM_INIT + 200)    /* projection matrix */
#define KMEANS_STREAM ((uint64_t)LADLE_STREAM_INIT + 201)   /* k-means++ seeding */

#define KMEANS_MAX_ITERS 100   /* Lloyd iterations at most */

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

/* Floats of feature matrix held at once: bounds memory for many documents. */
#define BLOCK_FLOATS ((size_t)1 << 20)

void ladle_embed_params_default(ladle_embed_params *p)
{
    p->ngram = 3;
    p->buckets = 4096;
    p->dim = 64;
    p->seed = 1;
}

void ladle_embedder_create(ladle_embedder *e, const ladle_embed_params *p)
{
    if (p->ngram < 1 || p->ngram > 16) ladle_usage_error("embedding n-gram length %d: expected 1 to 16", p->ngram);
    if (p->buckets < 16 || p->buckets > (1 << 22))
        ladle_usage_error("embedding buckets %d: expected 16 to %d", p->buckets, 1 << 22);
    if (p->dim < 2 || p->dim > 4096) ladle_usage_error("embedding dim %d: expected 2 to 4096", p->dim);
    if ((size_t)p->dim * (size_t)p->buckets > ((size_t)1 << 26))
        ladle_usage_error("embedding dim x buckets = %d x %d is too large (at most 2^26)", p->dim, p->buckets);
    e->params = *p;
    size_t n = (size_t)p->dim * (size_t)p->buckets;
    e->projection = ladle_malloc(n * sizeof(float), "embedding projection");
    float scale = 1.0f / sqrtf((float)p->dim);
    for (size_t i = 0; i < n; i++) e->projection[i] = ladle_rng_normal(p->seed, 0, EMBED_STREAM, i) * scale;
}

void ladle_embedder_free(ladle_embedder *e)
{
    free(e->projection);
    e->projection = NULL;
}

/* Scale each of the n rows of v [n x d] to unit norm; zero rows stay zero. */
static void normalise_rows(float *v, size_t n, int d)
{
    for (size_t i = 0; i < n; i++) {
        float *r = v + i * (size_t)d;
        double s = 0;
        for (int j = 0; j < d; j++) s += (double)r[j] * r[j];
        if (s > 0) {
            float inv = (float)(1.0 / sqrt(s));
            for (int j = 0; j < d; j++) r[j] *= inv;
        }
    }
}

/* The log1p n-gram counts of one document into row[buckets]. O(len * ngram). */
static void ngram_features(const ladle_embed_params *p, const uint8_t *text, size_t len, uint64_t *counts,
                           float *row)
{
    size_t buckets = (size_t)p->buckets;
    memset(counts, 0, buckets * sizeof *counts);
    for (size_t i = 0; i < len; i++) {
        /* FNV-1a over text[i..i+n-1] extends by one byte per n; n is mixed in after, so
         * the n-grams of every length share one pass */
        uint64_t h = FNV_OFFSET;
        size_t longest = len - i < (size_t)p->ngram ? len - i : (size_t)p->ngram;
        for (size_t n = 1; n <= longest; n++) {
            h = (h ^ text[i + n - 1]) * FNV_PRIME;
            uint64_t g = (h ^ (uint64_t)n) * FNV_PRIME;
            /* a multiply only carries upwards: fold the high bits into the low ones */
            g ^= g >> 32;
            counts[g % buckets]++;
        }
    }
    for (size_t b = 0; b < buckets; b++) row[b] = (float)log1p((double)counts[b]);
}

void ladle_embed_batch(const ladle_embedder *e, const uint8_t *const *docs, const size_t *lens, size_t n,
                       float *out)
{
    const ladle_embed_params *p = &e->params;
    size_t buckets = (size_t)p->buckets;
    size_t block = BLOCK_FLOATS / 4 / buckets;
    if (block < 1) block = 1;
    if (block > 64) block = 64;
    if (block > n) block = n ? n : 1;
    uint64_t *counts = ladle_malloc(buckets * sizeof *counts, "n-gram counts");
    float *features = ladle_malloc(block * buckets * sizeof *features, "n-gram features");
    for (size_t at = 0; at < n; at += block) {
        size_t m = n - at < block ? n - at : block;
        for (size_t i = 0; i < m; i++)
            ngram_features(p, docs[at + i], lens[at + i], counts, features + i * buckets);
        /* the first normalisation does not change the direction of P f, but keeps the
         * values in a range independent of the document's length */
        normalise_rows(features, m, p->buckets);
        /* out[m x dim] = F[m x buckets] P^T */
        ladle_gemm(0, 1, (int)m, p->dim, p->buckets, 1.0f, features, p->buckets, e->projection, p->buckets,
                   0.0f, out + at * (size_t)p->dim, p->dim);
        normalise_rows(out + at * (size_t)p->dim, m, p->dim);
    }
    free(features);
    free(counts);
}

void ladle_embed(const ladle_embedder *e, const uint8_t *text, size_t len, float *out)
{
    ladle_embed_batch(e, &text, &len, 1, out);
}

/* ---- clusters of embeddings (kmeans.h) ----------------------------------------- */

void ladle_cluster_embeddings(const float *x, size_t n, int d, int k, uint64_t seed, float *centroids, int *assign)
{
    /* one seeding: each restart costs as much as the whole clustering, and greedy
     * k-means++ seldom needs another on well-spread documents */
    ladle_kmeans_options opt = {
        .metric = LADLE_KMEANS_SPHERICAL, .restarts = 1, .max_iters = KMEANS_MAX_ITERS, .seed = seed,
        .stream = KMEANS_STREAM,
    };
    ladle_kmeans_float(x, n, d, k, &opt, centroids, assign);
}

void ladle_nearest_centroids(const float *centroids, int k, int d, const float *x, size_t n, int *assign,
                             float *sim)
{
    double *dist = sim ? ladle_malloc(n * sizeof(double), "centroid distances") : NULL;
    ladle_kmeans_nearest_float(centroids, k, d, LADLE_KMEANS_SPHERICAL, x, n, assign, dist);
    for (size_t i = 0; sim && i < n; i++) sim[i] = (float)(1.0 - dist[i]);
    free(dist);
}

int ladle_nearest_centroid(const float *centroids, int k, int d, const float *x)
{
    int best = 0;
    ladle_nearest_centroids(centroids, k, d, x, 1, &best, NULL);
    return best;
}

/* ---- /clusters in a corpus file -------------------------------------------------- */

/* The hash and projection, spelled out in the file for readers outside ladle. */
#define HASH_DESCRIPTION                                                                         \
    "FNV-1a 64 of the n-gram's bytes; h = (h ^ n) * 0x100000001b3; h ^= h >> 32; bucket = h mod " \
    "buckets"
#define PROJECTION_DESCRIPTION                                                                   \
    "P[r][c] = ladle_rng_normal(seed, 0, stream 201, r*buckets + c) / sqrt(dim); out = P f / |P f|"

void ladle_clusters_write(hid_t file, const ladle_clusters *c)
{
    const ladle_embed_params *p = &c->embedder.params;
    hid_t gcpl = ladle_h5_untimed_group_props();
    hid_t group = H5Gcreate2(file, "clusters", H5P_DEFAULT, gcpl, H5P_DEFAULT);
    H5_CHECK(group);
    H5_CHECK(H5Pclose(gcpl));

    hsize_t dims[2] = {(hsize_t)c->k, (hsize_t)p->dim};
    hid_t space = H5Screate_simple(2, dims, NULL);
    H5_CHECK(space);
    /* no timestamps: the same inputs give the same file, byte for byte */
    hid_t dcpl = ladle_h5_untimed_dataset_props();
    hid_t dset = H5Dcreate2(group, "centroids", H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5_CHECK(dset);
    H5_CHECK(H5Dwrite(dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, c->centroids));
    H5_CHECK(H5Dclose(dset));
    H5_CHECK(H5Pclose(dcpl));
    H5_CHECK(H5Sclose(space));

    ladle_h5_write_long_attr(group, "k", c->k);
    ladle_h5_write_long_attr(group, "ngram", p->ngram);
    ladle_h5_write_long_attr(group, "buckets", p->buckets);
    ladle_h5_write_long_attr(group, "dim", p->dim);
    /* unsigned: a seed above 2^63 must come back unchanged */
    ladle_h5_write_scalar_attr(group, "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, &p->seed);
    ladle_h5_write_string_attr(group, "embedding", LADLE_EMBEDDING_NAME);
    ladle_h5_write_string_attr(group, "hash", HASH_DESCRIPTION);
    ladle_h5_write_string_attr(group, "projection", PROJECTION_DESCRIPTION);
    H5_CHECK(H5Gclose(group));
}

static void close_file(void *file)
{
    H5Fclose(*(hid_t *)file);
}

/* A problem with /clusters: close the file (strong close degree: all in it), then a
 * usage error. */
#define reject(file, ...) ladle_usage_error_cleanup(close_file, &(file), __VA_ARGS__)

static int read_u64_attr(hid_t obj, const char *name, uint64_t *value)
{
    htri_t exists = H5Aexists(obj, name);
    H5_CHECK(exists);
    if (!exists) return -1;
    hid_t attr = H5Aopen(obj, name, H5P_DEFAULT);
    H5_CHECK(attr);
    hid_t type = H5Aget_type(attr);
    H5_CHECK(type);
    int ok = H5Tget_class(type) == H5T_INTEGER;
    if (ok) H5_CHECK(H5Aread(attr, H5T_NATIVE_UINT64, value));
    H5_CHECK(H5Tclose(type));
    H5_CHECK(H5Aclose(attr));
    return ok ? 0 : -1;
}

void ladle_clusters_load(ladle_clusters *c, const char *corpus_path)
{
    memset(c, 0, sizeof *c);
    hid_t file = ladle_h5_open_ladle_file(corpus_path, "corpus", LADLE_CORPUS_FORMAT, LADLE_CORPUS_VERSION,
                                          MPI_COMM_SELF);
    htri_t has = H5Lexists(file, "clusters", H5P_DEFAULT);
    H5_CHECK(has);
    if (!has)
        reject(file, "corpus '%s' has no clusters: build it with 'ladle prep --clusters K' to get domain weights "
               "from example texts", corpus_path);
    hid_t group = H5Gopen2(file, "clusters", H5P_DEFAULT);
    if (group < 0) reject(file, "corpus '%s' is damaged: /clusters is not a group", corpus_path);

    char *name = ladle_h5_read_string_attr(group, "embedding");
    if (!name || strcmp(name, LADLE_EMBEDDING_NAME) != 0) {
        char found[160];
        snprintf(found, sizeof found, name ? "'%.120s'" : "%s", name ? name : "none");
        free(name);
        reject(file, "corpus '%s': its clusters use an embedding this ladle does not know (found %s, expected '%s')",
               corpus_path, found, LADLE_EMBEDDING_NAME);
    }
    free(name);
    long k = 0, ngram = 0, buckets = 0, dim = 0;
    uint64_t seed = 0;
    if (ladle_h5_read_long_attr(group, "k", &k) || ladle_h5_read_long_attr(group, "ngram", &ngram)
        || ladle_h5_read_long_attr(group, "buckets", &buckets) || ladle_h5_read_long_attr(group, "dim", &dim)
        || read_u64_attr(group, "seed", &seed))
        reject(file, "corpus '%s' is damaged: /clusters lacks one of its attributes k, ngram, buckets, dim, seed",
               corpus_path);
    if (k < 1 || k > (1L << 24) || ngram < 1 || ngram > 16 || buckets < 16 || buckets > (1L << 22) || dim < 2
        || dim > 4096 || dim * buckets > (1L << 26))
        reject(file, "corpus '%s' is damaged: /clusters has k = %ld, ngram = %ld, buckets = %ld, dim = %ld",
               corpus_path, k, ngram, buckets, dim);

    htri_t has_c = H5Lexists(group, "centroids", H5P_DEFAULT);
    H5_CHECK(has_c);
    hid_t dset = has_c ? H5Dopen2(group, "centroids", H5P_DEFAULT) : -1;
    if (dset < 0) reject(file, "corpus '%s' is damaged: /clusters has no centroids dataset", corpus_path);
    hid_t type = H5Dget_type(dset);
    H5_CHECK(type);
    hid_t space = H5Dget_space(dset);
    H5_CHECK(space);
    hsize_t dims[2] = {0, 0};
    int ok = H5Tget_class(type) == H5T_FLOAT && H5Sget_simple_extent_ndims(space) == 2;
    if (ok) H5_CHECK(H5Sget_simple_extent_dims(space, dims, NULL));
    H5_CHECK(H5Sclose(space));
    H5_CHECK(H5Tclose(type));
    if (!ok || dims[0] != (hsize_t)k || dims[1] != (hsize_t)dim)
        reject(file, "corpus '%s' is damaged: /clusters/centroids is not a float [%ld, %ld] array", corpus_path, k,
               dim);
    c->centroids = ladle_malloc((size_t)k * (size_t)dim * sizeof(float), "cluster centroids");
    H5_CHECK(H5Dread(dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, c->centroids));
    H5_CHECK(H5Dclose(dset));
    H5_CHECK(H5Gclose(group));
    H5_CHECK(H5Fclose(file));

    c->k = (int)k;
    ladle_embed_params p = {(int)ngram, (int)buckets, (int)dim, seed};
    ladle_embedder_create(&c->embedder, &p);
}

void ladle_clusters_free(ladle_clusters *c)
{
    ladle_embedder_free(&c->embedder);
    free(c->centroids);
    c->centroids = NULL;
    c->k = 0;
}

void ladle_clusters_histogram(const ladle_clusters *c, const uint8_t *const *docs, const size_t *lens,
                              size_t n_docs, float *h)
{
    int dim = c->embedder.params.dim;
    float *x = ladle_malloc((n_docs ? n_docs : 1) * (size_t)dim * sizeof *x, "example embeddings");
    int *assign = ladle_malloc((n_docs ? n_docs : 1) * sizeof *assign, "example clusters");
    ladle_embed_batch(&c->embedder, docs, lens, n_docs, x);
    ladle_nearest_centroids(c->centroids, c->k, dim, x, n_docs, assign, NULL);
    size_t used = 0;
    for (int j = 0; j < c->k; j++) h[j] = 0;
    for (size_t i = 0; i < n_docs; i++)
        if (lens[i]) { h[assign[i]] += 1; used++; }
    free(assign);
    free(x);
    if (!used) ladle_usage_error("no text to compute domain weights from: every example document is empty");
    for (int j = 0; j < c->k; j++) h[j] /= (float)used;
}
