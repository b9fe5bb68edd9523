/* prep: build a corpus file from text files and directories ('ladle prep').
 *
 * Every regular file under a domain's paths (directories are walked recursively, in
 * sorted order so the result is reproducible; .gz files are decompressed) is one
 * document. Each document goes to the valid split with probability valid_fraction,
 * decided by the counter RNG from (seed, domain index, document index).
 *
 * With clusters = K > 0 the named domains are read and split exactly as without, and
 * stored unchanged under /sources/<name>. Every document (both splits) is embedded
 * (embed.h, projection seed = seed), spherical k-means (seed) clusters the TRAIN
 * documents into K, and each valid document goes to its nearest centroid. Cluster j is
 * written as the domain /domains/c<j> (j zero-padded to the width of K-1) with the usual
 * layout plus train_labels / valid_labels (uint16: each document's source domain, an
 * index into /sources in name order, also listed by the /sources attribute `names`);
 * /clusters holds the centroids and embedding parameters (ladle_clusters_load). A cluster
 * left with no valid document gets its train document nearest the centroid (a cluster
 * of one train document: cut as a one-document domain is). K larger than the number of
 * train documents is a usage error. */
#ifndef LADLE_PREP_H
#define LADLE_PREP_H

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

/* Writes the corpus to out_path (via out_path.tmp, renamed when complete) and prints a
 * per-domain report (documents and bytes per split) to report. Problems with the inputs
 * (unreadable path, empty domain, bad name, duplicate name) are usage errors. */
void ladle_prep(const char *out_path, const ladle_prep_domain *domains, int n_domains,
                const ladle_prep_options *options, FILE *report);

#endif
