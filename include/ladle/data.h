/* data: the corpus file (written by 'ladle prep', see prep.h) and training batches.
 *
 * Corpus layout (HDF5, see share/ladle/FORMATS.md):
 *   /                      attrs: format = "ladle-corpus", format_version = 1
 *   /domains/<name>/train          uint8 [bytes]  documents of the train split, concatenated
 *   /domains/<name>/train_offsets  uint64 [docs+1] start of each document in train
 *   /domains/<name>/valid, /domains/<name>/valid_offsets   the same for the valid split
 *   /domains/<name>               attrs: source (the paths it was built from), documents
 *
 * Batches are drawn by the counter RNG: sequence b of step t is a pure function of
 * (seed, t, b) and the step's domain weights h, so every rank count sees the same
 * global batch. */
#ifndef LADLE_DATA_H
#define LADLE_DATA_H

#include <hdf5.h>
#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#define LADLE_NAME_MAX 64
#define LADLE_CORPUS_FORMAT "ladle-corpus"
#define LADLE_CORPUS_VERSION 1

/* How a corpus is held (data.read). Streamed, a rank keeps the file open and reads only
 * the windows it trains or evaluates on, one HDF5 hyperslab each: its memory does not grow
 * with the corpus. In memory, every rank reads both splits of every domain at open. */
typedef enum { LADLE_CORPUS_STREAM = 0, LADLE_CORPUS_MEMORY = 1 } ladle_corpus_read;

typedef struct {
    char name[LADLE_NAME_MAX];
    size_t train_bytes, train_docs, valid_bytes, valid_docs;
    /* In memory: the splits' bytes (documents concatenated) and document offsets
     * ([docs + 1]: document d is [offsets[d], offsets[d+1])). A domain built in memory by
     * its caller (a zeroed struct with these set) reads them the same way. */
    uint8_t *train, *valid;
    uint64_t *train_offsets, *valid_offsets;
    /* Streamed (the pointers above are NULL): the splits' open datasets. */
    int streamed;
    hid_t train_set, valid_set, train_offsets_set, valid_offsets_set;
} ladle_domain;

typedef struct {
    int n_domains;
    ladle_domain *domains;   /* sorted by name, as stored */
    hid_t file;              /* open while streamed; -1 in memory */
} ladle_corpus;

/* Open a corpus file, streamed or read into memory. Either way every document offset is
 * checked at open (in bounded pieces when streamed). A missing, corrupt or non-ladle file,
 * offsets that do not index their split, or a domain with no train bytes, is a usage error
 * naming the file, domain and dataset (all ranks detect it). Collective over comm, as is
 * ladle_corpus_free of a streamed corpus (it closes the file). */
void ladle_corpus_open(ladle_corpus *corpus, const char *path, ladle_corpus_read read, MPI_Comm comm);
/* The same from another top-level group of the same layout: ladle_corpus_open reads
 * "domains"; "sources" holds the original named domains when 'ladle prep --clusters'
 * made the domains clusters. A missing or empty group is a usage error. */
void ladle_corpus_open_group(ladle_corpus *corpus, const char *path, const char *group, ladle_corpus_read read,
                             MPI_Comm comm);
void ladle_corpus_free(ladle_corpus *corpus);
/* What a corpus (open, or its sizes alone) holds in memory when opened as `read`: the
 * domain table, plus both splits' bytes and offsets in memory. Streamed, it does not grow
 * with the corpus' bytes (HDF5's metadata cache, bounded by HDF5, is not counted). */
size_t ladle_corpus_memory(const ladle_corpus *corpus, ladle_corpus_read read);

/* Document doc of a domain's train split, read (streamed) or copied: its bytes in a new
 * buffer the caller frees, its length in *len. */
uint8_t *ladle_domain_train_document(const ladle_domain *domain, size_t doc, size_t *len);

/* Every domain must hold at least one window of context+1 bytes in its train split:
 * usage error naming the domain otherwise. A valid split shorter than a window is
 * allowed (a tiny cluster's may be); evaluation reports such a domain as having no
 * windows. */
void ladle_corpus_check_context(const ladle_corpus *corpus, const char *path, int context);
/* Training with evaluation on (eval.every > 0) needs a window in every valid split too:
 * a usage error naming the domain and its 'valid' dataset otherwise (the mean loss would
 * silently leave that domain out). */
void ladle_corpus_check_valid(const ladle_corpus *corpus, const char *path, int context);

/* ---- mixtures (Soup-of-Experts, METHODS.md section 1) ----------------------------- */

typedef enum { LADLE_SAMPLING_IID = 0, LADLE_SAMPLING_STRATIFIED = 1 } ladle_sampling;

/* Domain weights h ~ pi for step `step`: `support` domains chosen uniformly without
 * replacement (support <= 0 or >= k: all k), Dirichlet(concentration * 1) weights on
 * them, zero elsewhere. h[k] sums to 1. A pure function of (seed, step). */
void ladle_sample_mixture(uint64_t seed, uint64_t step, int k, int support, float concentration, float *h);

/* "NAME=W,NAME=W,..." over the k domains names[] -> h, normalised to sum 1. `what` (the
 * option or key) and `domains_label` name them in messages. Unknown names, a name given
 * twice, negative or non-numeric weights and an all-zero h are usage errors. */
void ladle_mixture_parse(const char *what, const char *domains_label, const char *spec, int k, const char *const *names,
                         float *h);

/* The natural mixture: every domain weighted by its share of the corpus' train bytes
 * (clusters sampled in proportion to their size). */
void ladle_natural_mixture(const ladle_corpus *corpus, float *h);

/* The step's h ~ pi, where pi mixes two parts: with probability `natural` h is
 * fixed_h (the natural mixture, so that the soup keeps a good generic model, or meta.weights),
 * otherwise ladle_sample_mixture's support/concentration draw. A pure function of
 * (seed, step). */
void ladle_sample_meta(uint64_t seed, uint64_t step, int k, float natural, const float *fixed_h, int support,
                       float concentration, float *h);

/* Algorithm 1: the domain of sequence b of a global batch of `batch` sequences drawn
 * from mix(h). iid: domain ~ Cat(h) per sequence. stratified: the first
 * sum_i floor(batch * h_i) sequences are allotted floor(batch * h_i) per domain, in
 * domain order; the rest are drawn iid. A pure function of (h, batch, b, seed, step).
 * h need not sum exactly to 1 (it is taken over its total), and the floor forgives
 * float rounding (0.7f with batch 10 allots 7). A domain with h_i = 0 is never drawn. */
int ladle_mixture_domain(const float *h, int k, int batch, int b, ladle_sampling sampling,
                         uint64_t seed, uint64_t step);

/* Training sequences b in [b_lo, b_hi) of step `step` of a global batch of `batch`,
 * drawn from mix(h): the domain by ladle_mixture_domain, the window start uniform over
 * the domain's train bytes. tokens and targets are (b_hi - b_lo) x context bytes;
 * targets are tokens shifted by one. domains (may be NULL) receives each sequence's
 * domain index. */
void ladle_batch_train(const ladle_corpus *corpus, const float *h, ladle_sampling sampling, int batch,
                       uint64_t seed, uint64_t step, int b_lo, int b_hi, int context,
                       uint8_t *tokens, uint8_t *targets, int *domains);

/* Validation window w of a domain: fixed, evenly spaced over the valid split, so every
 * evaluation sees the same bytes. Returns the number of windows available (<= wanted). */
int ladle_valid_windows(const ladle_domain *domain, int context, int wanted);
void ladle_batch_valid(const ladle_domain *domain, int context, int n_windows, int w_lo, int w_hi,
                       uint8_t *tokens, uint8_t *targets);

#endif
