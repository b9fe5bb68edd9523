/* specialize: turning a trained soup into specialists (METHODS.md section 1,
 * "Specialising"): domain weights from names or from example texts, and instantiation
 * Theta(h) = S + sum_j alpha_j(h) E_j written as a plain dense model. */
#ifndef LADLE_SPECIALIZE_H
#define LADLE_SPECIALIZE_H

#include "ladle/ckpt.h"

/* "NAME=W,NAME=W,..." -> h over the soup's domains, normalised to sum 1. Unknown names,
 * negative or non-numeric weights and an all-zero h are usage errors. */
void ladle_weights_parse(const ladle_ckpt_loaded *soup, const char *spec, float *h);

/* h from example files: every file is a document; each is embedded and assigned to the
 * nearest centroid of the clusters stored in corpus_path, h = normalised histogram. The
 * corpus must be the clustered one the soup was trained on (same k). */
void ladle_weights_like(const ladle_ckpt_loaded *soup, const char *corpus_path, const uint8_t *const *docs,
                        const size_t *lens, int n_docs, float *h);

/* Beyond the paper: fit h to example texts by gradient descent through the frozen soup.
 * h = softmax(z), z initialised at log(h_init); Adam on z (k numbers) minimising the mean
 * loss of Theta(h) on up to `windows` windows of the examples (split across ranks).
 * h_init is replaced by the fitted h. */
typedef struct {
    double loss_before, loss_after;   /* nats per byte on the example windows */
    int windows;
} ladle_fit_result;

void ladle_fit_weights(const ladle_ckpt_loaded *soup, const uint8_t *const *docs, const size_t *lens, size_t n_docs,
                       float *h, int steps, float lr, int windows, ladle_fit_result *result);

/* Every example file read into memory (gzip transparently); *docs and *lens malloc'd. */
void ladle_read_examples(char *const *files, int n_files, uint8_t ***docs, size_t **lens);

/* Does a corpus file carry clusters (was it prepared with --clusters)? */
int ladle_corpus_has_clusters(const char *corpus_path);

/* Collective: writes Theta(h) as kind "instantiated" (h, alpha and the source recorded).
 * alpha_out (may be NULL) receives the coefficients used. */
void ladle_instantiate(const ladle_ckpt_loaded *soup, const char *soup_path, const float *h, const char *out_path,
                       float *alpha_out);

/* The paper's protocol ('ladle eval --specialize'), one row per evaluated domain. On a
 * clustered corpus the evaluated domains are its named sources (/sources): h_spe is the
 * histogram of nearest clusters of `examples` of the source's train documents (evenly
 * spaced). On a plain corpus they are the soup's own domains and h_spe is one-hot.
 * Every model is evaluated on the same valid windows of the domain. */
typedef struct {
    char domain[LADLE_NAME_MAX];
    int windows;
    double generic_bpb;      /* the soup at uniform h */
    double specialist_bpb;   /* the soup at h_spe */
    double baseline_bpb;     /* the baseline model; NAN without one */
    char h_top[160];         /* the largest entries of h_spe, as text */
    char h_weights[1024];    /* h_spe's non-zero entries as NAME=W,... (for --weights or meta.weights);
                                empty if they do not fit */
} ladle_specialize_row;

/* Which domains the table evaluates, and how their h is found. */
typedef struct {
    const char *specialists;  /* NULL, or a corpus of specialist text (its named sources, or its domains)
                                 that need not be a training domain: h_spe from the clusters of corpus_path */
    int one_hot;              /* the soup's own training domains at one-hot h (own-cluster specialists) */
    int examples;             /* m: train documents per domain for h_spe */
    int windows, batch;       /* valid windows per domain, and per forward pass */
} ladle_specialize_options;

/* Collective. rows must hold one entry per evaluated domain (at most max_rows); returns
 * the number of rows. baseline may be NULL. */
int ladle_specialize_eval(const ladle_ckpt_loaded *soup, const char *corpus_path, const ladle_ckpt_loaded *baseline,
                          const ladle_specialize_options *opt, ladle_specialize_row *rows, int max_rows);

void ladle_specialize_print_table(FILE *out, const ladle_specialize_row *rows, int n);
void ladle_specialize_print_json(FILE *out, const ladle_specialize_row *rows, int n);

/* Print the largest entries of h (at most `top`) as "name w, name w, ...". */
void ladle_weights_print(FILE *out, const ladle_ckpt_loaded *soup, const float *h, int top);

#endif
