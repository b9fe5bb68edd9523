/* eval: loss of a model on every domain's valid split, in nats and bits per byte.
 *
 * The valid windows of a domain are fixed (see ladle_valid_windows), split across the
 * ranks of comm in contiguous ranges, and the loss sums are all-reduced, so the result
 * does not depend on the rank count beyond summation order. */
#ifndef LADLE_EVAL_H
#define LADLE_EVAL_H

#include <mpi.h>
#include <stdio.h>

#include "ladle/data.h"
#include "ladle/model.h"

typedef struct {
    char domain[LADLE_NAME_MAX];
    int windows;
    double loss;   /* mean cross-entropy per byte, nats */
    double bpb;    /* bits per byte */
    size_t train_bytes;  /* the domain's train split: its weight in the natural mixture */
} ladle_eval_result;

/* Evaluates params (full vector, identical on every rank) on up to max_windows valid
 * windows of one domain. acts must hold at least one sequence; windows are processed
 * acts->B at a time. label: the domain's index, the windows' label for tag routing (-1:
 * none). Collective over comm. */
void ladle_eval_domain(const ladle_model *model, const float *params, ladle_activations *acts,
                       const ladle_domain *domain, int label, int max_windows, ladle_eval_result *result,
                       MPI_Comm comm);

/* The same for every domain of a corpus; results[corpus->n_domains]. */
void ladle_eval_domains(const ladle_model *model, const float *params, ladle_activations *acts,
                        const ladle_corpus *corpus, int max_windows, ladle_eval_result *results,
                        MPI_Comm comm);

/* The results as a table, or as JSON. */
void ladle_eval_print_table(FILE *out, const ladle_eval_result *results, int n);
void ladle_eval_print_json(FILE *out, const ladle_eval_result *results, int n);

/* Routing statistics (ladle eval --routing): for every routed site of a model and every
 * domain, the average routing distribution over the evaluated valid windows.
 *  - moe: the mean router probability of each expert over the tokens, and the fraction
 *    of tokens whose top-1 choice is each expert (Switch's f);
 *  - smear, tag (FFN and adapter sites): the mean merge weights over the segments, the
 *    first segment (routed on the learned default logits) included; tag sites are
 *    one-hot on the domain's index mod the experts by construction.
 * Sums are all-reduced over the ranks, so the numbers do not depend on the rank count
 * beyond summation order. */
typedef struct {
    char name[LADLE_TENSOR_NAME_MAX];  /* h.<l>.moe, h.<l>.smear, h.<l>.tag, h.<l>.adapter.attn|ffn */
    int layer, kind, experts;          /* kind: LADLE_FFN_MOE, _SMEAR or _TAG */
    int adapter;                       /* -1: the layer's FFN site; 0, 1: its adapter after attention, FFN */
    double *prob;                      /* [n_domains, experts]: sums, then (after eval) means */
    double *top1;                      /* [n_domains, experts]: moe only, else NULL */
    double *count;                     /* [n_domains]: tokens (moe) or segments (smear, tag) */
    double *entropy;                   /* [n_domains]: mean entropy (bits) of the individual distributions */
} ladle_routing_site;

typedef struct {
    int n_sites, n_domains;
    ladle_routing_site *sites;
} ladle_routing;

/* Sites of the model (n_sites = 0 for a model without routed sites), zeroed sums. */
void ladle_routing_create(ladle_routing *routing, const ladle_model *model, int n_domains);
void ladle_routing_free(ladle_routing *routing);

/* ladle_eval_domains that also fills routing (created for this model and corpus).
 * Collective over comm. */
void ladle_eval_domains_routing(const ladle_model *model, const float *params, ladle_activations *acts,
                                const ladle_corpus *corpus, int max_windows, ladle_eval_result *results,
                                ladle_routing *routing, MPI_Comm comm);

/* A table per site (domain x expert, with the entropy of each row in bits and the mean
 * entropy of the individual tokens' or segments' distributions: a uniform average of
 * confident choices has a high first and a low second), after the bits-per-byte table;
 * or one JSON object {"domains": [...], "routing": [...]}. */
void ladle_routing_print_table(FILE *out, const ladle_routing *routing, const ladle_eval_result *results);
void ladle_eval_print_json_routing(FILE *out, const ladle_eval_result *results, int n,
                                   const ladle_routing *routing);

#endif
