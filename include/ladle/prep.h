/* prep: build a corpus file from text files and directories ('ladle prep').
 *
 * Every regular file under a domain's paths (directories are walked recursively, in
 * sorted order so the result is reproducible; .gz files are decompressed) is one
 * document. Each document goes to the valid split with probability valid_fraction,
 * decided by the counter RNG from (seed, domain name, document index).
 *
 * With clusters = K > 0 the named domains are read and split exactly as without, and
 * stored unchanged under /sources/<name>. Every document (both splits) is embedded
 * (embed.h, projection seed = seed), spherical k-means (seed) clusters the TRAIN
 * documents into K, and each valid document goes to its nearest centroid. Cluster j is
 * written as the domain /domains/c<j> (j zero-padded to the width of K-1) with the usual
 * layout plus train_labels / valid_labels (uint16: each document's source domain, an
 * index into /sources in name order, also listed by the /sources attribute `names`);
 * both splits of a cluster hold its documents in walk order (source name, then position
 * in the source). /clusters holds the centroids and embedding parameters
 * (ladle_clusters_load). A cluster left with no valid document gets its train document
 * nearest the centroid (a cluster of one train document: cut as a one-document domain
 * is). K larger than the number of train documents is a usage error.
 *
 * Parallel: run under mpiexec, the ranks of comm share the input files (each reads,
 * embeds and writes its own) and the k-means (kmeans.h). The file holds the same
 * datasets, values and attributes for any rank count.
 *
 * Memory: documents stream from the inputs to the output; no rank holds a domain. A rank
 * holding n documents from f files, of a corpus of D domains, K clusters, embedding dim d,
 * seeding sample S = min(train documents, max(16384, 4 K)) (embed.h), needs about
 *     n (136 + 4 d) + f (56 + path length)               its documents and files
 *   + K (32 d + 8 D + 600) + S (4 d + 112)                k-means, cluster offsets, report
 *   + 45 MiB + 2 split_doc_bytes                          buffers and the embedder
 * bytes (the 4 d and 40 of the 136 a document only with clusters; the 4 d twice for the
 * documents of the round being read): 2 x 16 MiB of pending
 * writes and 8 MiB of their list, 1 MiB read pieces, a file's text not yet cut into
 * documents (split_doc_bytes + 1 MiB, doubled by growth), the embedding's projection
 * (buckets x d floats, 1 MiB at the defaults), the products of a block of 64 points with
 * the centres (K x 256 bytes, counted above); plus HDF5's metadata cache and one dataset
 * handle at a time, and on rank 0 the listings of the directories being walked and a
 * round's file list (4096 paths at most). Nothing grows with the bytes of a document or a
 * domain (test/prep_ranks.sh: three 80 MB documents in 56 MB). */
#ifndef LADLE_PREP_H
#define LADLE_PREP_H

#include <mpi.h>
#include <stddef.h>
#include <stdio.h>

typedef struct {
    const char *name;       /* domain name: [A-Za-z0-9_.-]+ */
    int n_paths;
    const char **paths;     /* files or directories */
} ladle_prep_domain;

typedef struct {
    double valid_fraction;  /* default 0.05 */
    unsigned long seed;
    size_t max_doc_bytes;   /* documents longer than this are truncated (0 = no limit) */
    size_t max_domain_bytes;/* stop adding documents to a domain past this (0 = no limit) */
    size_t split_doc_bytes; /* files longer than this become several documents (0 = never) */
    /* K > 0: the training domains are K clusters of all the documents (METHODS.md
     * section 1, "Specialising"), see below; 0: the named domains are the domains. */
    int clusters;
    /* the document embedding used for clustering (embed.h); 0 = its default */
    int embed_ngram, embed_buckets, embed_dim;
} ladle_prep_options;

/* Collective over comm: writes the corpus to out_path (via out_path.tmp, renamed when
 * complete) and prints, on rank 0, a per-domain report (documents and bytes per split)
 * to report (may be NULL). Problems with the inputs (unreadable path, empty domain, bad
 * name, duplicate name) are usage errors on every rank, leaving no file behind. */
void ladle_prep(const char *out_path, const ladle_prep_domain *domains, int n_domains,
                const ladle_prep_options *options, MPI_Comm comm, FILE *report);

#endif
