/* embed: a fixed document embedding computable in C, its clusters, and the
 * histogram of nearest centroids that turns example texts into domain weights
 * (METHODS.md section 1, "Specialising").
 *
 * Embedding of a document (bytes): counts of hashed byte n-grams (n = 1..ngram) in
 * `buckets` buckets, log(1 + count), L2-normalised, then multiplied by a fixed Gaussian
 * random matrix [dim x buckets] drawn from the counter RNG (seed), and L2-normalised
 * again. Stored with the clusters so new text is embedded identically.
 *
 * Exactly (so that another implementation can reproduce it):
 *  - every n-gram text[i .. i+n-1], n = 1..ngram, i + n <= len, is hashed as
 *        h = FNV-1a 64 of its n bytes (offset 0xcbf29ce484222325, prime 0x100000001b3)
 *        h = (h ^ n) * 0x100000001b3;  h ^= h >> 32;  bucket = h mod buckets
 *  - projection P[r][c] = ladle_rng_normal(seed, 0, LADLE_STREAM_INIT + 200, r*buckets + c)
 *    / sqrt(dim), r < dim, c < buckets;  out = normalise(P f).
 * In float, P f is summed over the non-zero buckets in increasing order, one document at
 * a time: a document's embedding is the same bits whichever documents are embedded with
 * it, in whatever pieces it is fed, on whichever rank. */
#ifndef LADLE_EMBED_H
#define LADLE_EMBED_H

#include <hdf5.h>
#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

/* Names the embedding in the /clusters attribute `embedding`; a corpus whose clusters
 * were made by another embedding is refused by ladle_clusters_load. */
#define LADLE_EMBEDDING_NAME "hashed byte n-grams 1..N, log1p counts, L2, gaussian projection, L2"

typedef struct {
    int ngram;        /* longest n-gram, default 3, in [1, 16] */
    int buckets;      /* hash buckets, default 4096, in [16, 2^22] */
    int dim;          /* projected dimension, default 64, in [2, 4096]; dim * buckets <= 2^26 */
    uint64_t seed;    /* projection matrix */
} ladle_embed_params;

typedef struct {
    ladle_embed_params params;
    float *projection;   /* [buckets x dim]: P transposed, so a bucket's column is contiguous */
    float *log_count;    /* [LADLE_EMBED_LOG_TABLE] (float)log1p(n) for the small counts */
} ladle_embedder;

#define LADLE_EMBED_LOG_TABLE 256

void ladle_embed_params_default(ladle_embed_params *p);
/* Out-of-range parameters are a usage error (they come from the command line or a file). */
void ladle_embedder_create(ladle_embedder *e, const ladle_embed_params *p);
void ladle_embedder_free(ladle_embedder *e);
/* out[dim], unit norm (all zeros only for an empty document). */
void ladle_embed(const ladle_embedder *e, const uint8_t *text, size_t len, float *out);
/* The same for n documents: out [n x dim], row i the embedding of docs[i]. */
void ladle_embed_batch(const ladle_embedder *e, const uint8_t *const *docs, const size_t *lens, size_t n,
                       float *out);

/* A document fed in pieces (a file read piece by piece, never whole in memory): the
 * embedding ladle_embed gives the whole. Holds buckets x 16 bytes. */
typedef struct {
    const ladle_embedder *e;
    uint64_t *counts;        /* [buckets] n-gram counts of the document so far */
    uint64_t hash[17];       /* hash[n]: FNV-1a of the n-gram ending at the last byte fed */
    uint64_t fed;            /* bytes fed so far */
    uint64_t mask;           /* buckets - 1 when a power of two (bucket = h & mask), else 0 */
    float *values;           /* [buckets] scratch of ladle_embed_finish */
    uint32_t *nonzero;
} ladle_embed_stream;

void ladle_embed_stream_create(ladle_embed_stream *s, const ladle_embedder *e);
void ladle_embed_stream_free(ladle_embed_stream *s);
void ladle_embed_feed(ladle_embed_stream *s, const uint8_t *text, size_t len);
/* out[dim]: the embedding of what was fed since the last call; the next document starts. */
void ladle_embed_finish(ladle_embed_stream *s, float *out);

/* Seeding sample of ladle_cluster_embeddings: LADLE_EMBED_SEED_PER_CLUSTER points per
 * cluster, at least LADLE_EMBED_SEED_MIN (all of them when there are fewer). */
#define LADLE_EMBED_SEED_PER_CLUSTER 4
#define LADLE_EMBED_SEED_MIN 16384

/* Clusters of embeddings (unit or all-zero rows) spread over the ranks of comm
 * (collective; MPI_COMM_NULL: one process holding them all): this rank's n rows x [n x d]
 * are rows index[i] (increasing; NULL: 0..n-1) of the n_total, 1 <= k <= n_total.
 * kmeans.h's spherical k-means, one seeding from (seed, stream LADLE_STREAM_INIT + 201)
 * on the sample above, at most 100 Lloyd iterations. centroids [k x d] (unit norm, on
 * every rank), assign [n], every cluster non-empty, numbered by first appearance. The
 * same for any rank count and split of the rows. */
void ladle_cluster_embeddings(const float *x, size_t n, const uint64_t *index, uint64_t n_total, int d, int k,
                              uint64_t seed, MPI_Comm comm, float *centroids, int *assign);

/* Index of the centroid with the largest cosine similarity to x (ties: lowest index),
 * as ladle_cluster_embeddings assigns. */
int ladle_nearest_centroid(const float *centroids, int k, int d, const float *x);
/* The same for n points x [n x d]: assign[n], and sim[n] (may be NULL) the similarity to
 * the chosen centroid. */
void ladle_nearest_centroids(const float *centroids, int k, int d, const float *x, size_t n, int *assign,
                             float *sim);

/* Clusters stored in a corpus file (/clusters): embedding parameters and centroids. */
typedef struct {
    int k;
    ladle_embedder embedder;
    float *centroids;    /* [k x dim] */
} ladle_clusters;

/* Reads /clusters of a corpus written by 'ladle prep --clusters'; usage error if the
 * corpus has none. Serial (every rank may call it). */
void ladle_clusters_load(ladle_clusters *c, const char *corpus_path);
void ladle_clusters_free(ladle_clusters *c);
/* Writes /clusters (centroids dataset + embedding attributes) into an open file. In a
 * file open on several ranks every rank calls it (the metadata is collective) and one
 * passes write_values (the centroids, independent I/O). */
void ladle_clusters_write(hid_t file, const ladle_clusters *c, int write_values);

/* Domain weights from examples: each document is embedded, assigned to its nearest
 * centroid, and h[k] is the normalised histogram of assignments. Empty documents carry
 * no information and are left out; no non-empty document at all is a usage error. */
void ladle_clusters_histogram(const ladle_clusters *c, const uint8_t *const *docs, const size_t *lens,
                              size_t n_docs, float *h);

#endif
