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

#endif
