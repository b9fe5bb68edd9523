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
 *    / sqrt(dim), r < dim, c < buckets;  out = normalise(P f). */
#ifndef LADLE_EMBED_H
#define LADLE_EMBED_H

#include <hdf5.h>
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
    float *projection;   /* [dim x buckets] */
} ladle_embedder;

void ladle_embed_params_default(ladle_embed_params *p);
/* Out-of-range parameters are a usage error (they come from the command line or a file). */
void ladle_embedder_create(ladle_embedder *e, const ladle_embed_params *p);
void ladle_embedder_free(ladle_embedder *e);
/* out[dim], unit norm (all zeros only for an empty document). */
void ladle_embed(const ladle_embedder *e, const uint8_t *text, size_t len, float *out);
/* The same for n documents at once (the projection is one BLIS product per block of
 * documents): out [n x dim], row i the embedding of docs[i]. */
void ladle_embed_batch(const ladle_embedder *e, const uint8_t *const *docs, const size_t *lens, size_t n,
                       float *out);

/* Clusters of n embeddings x [n x d] (unit or all-zero rows), 1 <= k <= n: kmeans.h's
 * spherical k-means, one seeding from (seed, stream LADLE_STREAM_INIT + 201), at most
 * 100 Lloyd iterations. centroids [k x d] (unit norm), assign [n], every cluster
 * non-empty, numbered by first appearance. Deterministic for a given input and seed. */
void ladle_cluster_embeddings(const float *x, size_t n, int d, int k, uint64_t seed, float *centroids,
                              int *assign);

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
/* Writes /clusters (centroids dataset + embedding attributes) into an open file. */
void ladle_clusters_write(hid_t file, const ladle_clusters *c);

/* Domain weights from examples: each document is embedded, assigned to its nearest
 * centroid, and h[k] is the normalised histogram of assignments. Empty documents carry
 * no information and are left out; no non-empty document at all is a usage error. */
void ladle_clusters_histogram(const ladle_clusters *c, const uint8_t *const *docs, const size_t *lens,
                              size_t n_docs, float *h);

#endif
