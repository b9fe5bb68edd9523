/* embed: document embedding, its clusters (spherical k-means, kmeans.h) and cluster
 * histograms (see embed.h for the exact embedding). A document is embedded on its own,
 * its projection summed in a fixed order: no BLIS product whose blocking could change
 * the last bits with the documents embedded alongside. */
#include "ladle/embed.h"
#include "ladle/data.h"
#include "ladle/error.h"
#include "ladle/h5io.h"
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
    const size_t dim = (size_t)p->dim, buckets = (size_t)p->buckets;
    e->projection = ladle_malloc(dim * buckets * sizeof(float), "embedding projection");
    float scale = 1.0f / sqrtf((float)p->dim);
    for (size_t r = 0; r < dim; r++)
        for (size_t c = 0; c < buckets; c++)
            e->projection[c * dim + r] = ladle_rng_normal(p->seed, 0, EMBED_STREAM, r * buckets + c) * scale;
    /* most counts are small: log1p of them once, not once a bucket a document */
    e->log_count = ladle_malloc(LADLE_EMBED_LOG_TABLE * sizeof(float), "embedding log table");
    for (int n = 0; n < LADLE_EMBED_LOG_TABLE; n++) e->log_count[n] = (float)log1p((double)n);
}

void ladle_embedder_free(ladle_embedder *e)
{
    free(e->projection);
    free(e->log_count);
    e->projection = NULL;
    e->log_count = NULL;
}

/* Scale v[d] to unit norm; a zero vector stays zero. */
static void normalise(float *v, size_t d)
{
    double s = 0;
    for (size_t j = 0; j < d; j++) s += (double)v[j] * v[j];
    if (s > 0) {
        float inv = (float)(1.0 / sqrt(s));
        for (size_t j = 0; j < d; j++) v[j] *= inv;
    }
}

void ladle_embed_stream_create(ladle_embed_stream *s, const ladle_embedder *e)
{
    memset(s, 0, sizeof *s);
    s->e = e;
    const size_t buckets = (size_t)e->params.buckets;
    s->counts = ladle_calloc(buckets, sizeof *s->counts, "n-gram counts");
    s->values = ladle_malloc(buckets * sizeof *s->values, "n-gram features");
    s->nonzero = ladle_malloc(buckets * sizeof *s->nonzero, "n-gram features");
    s->mask = (buckets & (buckets - 1)) == 0 ? buckets - 1 : 0;
}

void ladle_embed_stream_free(ladle_embed_stream *s)
{
    free(s->counts);
    free(s->values);
    free(s->nonzero);
    memset(s, 0, sizeof *s);
}

/* Counts the n-grams ending at each byte: hash[n] of the one ending here extends hash[n-1]
 * of the one ending at the byte before, so a piece boundary changes nothing. The same
 * multiset as counting by start position. O(len * ngram). */
void ladle_embed_feed(ladle_embed_stream *s, const uint8_t *text, size_t len)
{
    const uint64_t ngram = (uint64_t)s->e->params.ngram, buckets = (uint64_t)s->e->params.buckets;
    for (size_t i = 0; i < len; i++) {
        s->fed++;
        const uint64_t top = s->fed < ngram ? s->fed : ngram;
        for (uint64_t n = top; n >= 2; n--) s->hash[n] = (s->hash[n - 1] ^ text[i]) * FNV_PRIME;
        s->hash[1] = (FNV_OFFSET ^ text[i]) * FNV_PRIME;
        for (uint64_t n = 1; n <= top; n++) {
            uint64_t g = (s->hash[n] ^ n) * FNV_PRIME;
            /* a multiply only carries upwards: fold the high bits into the low ones */
            g ^= g >> 32;
            s->counts[s->mask ? g & s->mask : g % buckets]++;
        }
    }
}

void ladle_embed_finish(ladle_embed_stream *s, float *out)
{
    const ladle_embedder *e = s->e;
    const size_t buckets = (size_t)e->params.buckets, dim = (size_t)e->params.dim;
    /* log1p counts of the non-zero buckets, in increasing order (counts reset as read) */
    size_t nnz = 0;
    double norm2 = 0;
    for (size_t c = 0; c < buckets; c++) {
        uint64_t n = s->counts[c];
        if (!n) continue;
        s->counts[c] = 0;
        float f = n < LADLE_EMBED_LOG_TABLE ? e->log_count[n] : (float)log1p((double)n);
        s->values[nnz] = f;
        s->nonzero[nnz++] = (uint32_t)c;
        norm2 += (double)f * f;
    }
    /* the first normalisation does not change the direction of P f, but keeps the values
     * in a range independent of the document's length */
    for (size_t r = 0; r < dim; r++) out[r] = 0.0f;
    float inv = nnz ? (float)(1.0 / sqrt(norm2)) : 0.0f;
    for (size_t q = 0; q < nnz; q++) {
        const float f = s->values[q] * inv, *column = e->projection + (size_t)s->nonzero[q] * dim;
        for (size_t r = 0; r < dim; r++) out[r] += f * column[r];
    }
    normalise(out, dim);
    s->fed = 0;
}

void ladle_embed_batch(const ladle_embedder *e, const uint8_t *const *docs, const size_t *lens, size_t n,
                       float *out)
{
    ladle_embed_stream s;
    ladle_embed_stream_create(&s, e);
    for (size_t i = 0; i < n; i++) {
        ladle_embed_feed(&s, docs[i], lens[i]);
        ladle_embed_finish(&s, out + i * (size_t)e->params.dim);
    }
    ladle_embed_stream_free(&s);
}

void ladle_embed(const ladle_embedder *e, const uint8_t *text, size_t len, float *out)
{
    ladle_embed_batch(e, &text, &len, 1, out);
}

/* ---- clusters of embeddings (kmeans.h) ----------------------------------------- */

void ladle_cluster_embeddings(const float *x, size_t n, const uint64_t *index, uint64_t n_total, int d, int k,
                              uint64_t seed, MPI_Comm comm, float *centroids, int *assign)
{
    /* one seeding: each restart costs as much as the whole clustering, and greedy
     * k-means++ seldom needs another on well-spread documents. On a bounded sample: the
     * seeding's cost grows as k times its points, and is repeated by every rank */
    size_t sample = (size_t)k * LADLE_EMBED_SEED_PER_CLUSTER;
    ladle_kmeans_options opt = {
        .metric = LADLE_KMEANS_SPHERICAL, .restarts = 1, .max_iters = KMEANS_MAX_ITERS, .seed = seed,
        .stream = KMEANS_STREAM, .sample = sample > LADLE_EMBED_SEED_MIN ? sample : LADLE_EMBED_SEED_MIN,
    };
    ladle_kmeans_float_mpi(x, n, index, n_total, d, k, &opt, comm, centroids, assign);
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

void ladle_clusters_write(hid_t file, const ladle_clusters *c, int write_values)
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
    if (write_values) H5_CHECK(H5Dwrite(dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, c->centroids));
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
