/* train: the sharded training loop ('ladle train').
 *
 * One step on P ranks (rank r), DESIGN.md's table:
 *   1. rank 0 draws h ~ pi, computes alpha = router(h)            MPI_Bcast of h and alpha
 *   2. Theta slice = S slice + sum_j alpha_j E_j slice (one GEMV)  local
 *   3. all-gather the Theta slices into the full vector          MPI_Allgather
 *   4. forward + backward of this rank's sequences [b_lo, b_hi)  local (BLIS)
 *   5. sum the gradients, keep this rank's slice g               MPI_Reduce_scatter_block
 *   6. dalpha_j = <E_j, g> partials, loss, squared norms         one MPI_Allreduce
 *   7. router backward from dalpha (identical on every rank)     local
 *   8. AdamW on S, the bank shard (gradient alpha_j g) and omega  local
 * A dense model (soup.experts = 0) is the same step with an empty bank and no router.
 * The global batch is drawn by the counter RNG independently of P, so 1, 2 or 3 ranks
 * produce the same losses up to floating-point summation order. */
#ifndef LADLE_TRAIN_H
#define LADLE_TRAIN_H

#include <mpi.h>

#include "ladle/config.h"
#include "ladle/data.h"
#include "ladle/log.h"
#include "ladle/model.h"
#include "ladle/router.h"
#include "ladle/shard.h"
#include "ladle/soup.h"

typedef struct {
    ladle_config cfg;
    ladle_model model;
    ladle_shard shard;
    ladle_corpus corpus;
    ladle_log log;
    int b_lo, b_hi;            /* this rank's sequences of the global batch */
    /* owned slices (shard.slice floats each, zero padding past shard.hi): S, the merged
     * Theta, the summed gradient, AdamW moments of S */
    float *param_slice, *merged_slice, *grad_slice, *adam_m, *adam_v;
    /* full vectors (shard.padded floats): merged parameters and this rank's gradient */
    float *params, *grads;
    /* Soup-of-Experts (soup.n = 0: a dense model) */
    ladle_soup soup;
    ladle_router router;
    float *router_params, *router_grads, *router_m, *router_v;
    ladle_router_cache router_cache;
    float *h, *alpha, *dalpha; /* this step's domain weights [k], coefficients [n] and their gradient */
    double *reduced;           /* [3 + n]: loss sum, |dS|^2, |dE|^2, dalpha */
    ladle_activations acts;
    uint8_t *tokens, *targets;
    int *labels;               /* each sequence's domain (tag routing) */
    long step;                 /* optimizer steps done */
} ladle_trainer;

/* Collective: build everything from cfg (corpus, model, shard, initial parameters). */
void ladle_trainer_create(ladle_trainer *tr, const ladle_config *cfg, MPI_Comm comm);
void ladle_trainer_free(ladle_trainer *tr);

/* One optimizer step; returns the mean training loss over the global batch. */
double ladle_trainer_step(ladle_trainer *tr, ladle_step_stats *stats);

/* Theta(h) into tr->params on every rank (router, merge, all-gather); h may be NULL for
 * a dense model. */
void ladle_trainer_gather_theta(ladle_trainer *tr, const float *h);

/* Evaluate on every domain's valid split and log the results: the generic model
 * (uniform h) and, for a soup, each domain's specialist Theta(one-hot h). */
void ladle_trainer_eval(ladle_trainer *tr);

/* The whole run: steps, periodic evaluation, model file at the end (and every
 * ckpt.every steps), resuming from the newest checkpoint in run.dir if there is one;
 * SIGUSR1 or SIGTERM on any rank ends it at the next step boundary with a checkpoint.
 * Returns the exit code (LADLE_EXIT_PREEMPTED after a preemption). */
int ladle_train_run(const ladle_config *cfg, MPI_Comm comm);

/* Print bytes per rank for parameters, moments and activations. */
void ladle_trainer_report_memory(const ladle_trainer *tr);

#endif
