/* train: the sharded training loop ('ladle train').
 *
 * One step on P ranks (rank r), following DESIGN.md's table with an empty expert bank:
 *   1. all-gather the parameter slices into the full vector       MPI_Allgather
 *   2. forward + backward of this rank's sequences [b_lo, b_hi)   local (BLIS)
 *   3. sum the gradients, keep this rank's slice                  MPI_Reduce_scatter_block
 *   4. global gradient norm and mean loss                         MPI_Allreduce
 *   5. AdamW on the owned slice of parameters and moments         local
 * The global batch is drawn by the counter RNG independently of P, so 1, 2 or 3 ranks
 * produce the same losses up to floating-point summation order. */
#ifndef LADLE_TRAIN_H
#define LADLE_TRAIN_H

#include <mpi.h>

#include "ladle/config.h"
#include "ladle/data.h"
#include "ladle/log.h"
#include "ladle/model.h"
#include "ladle/shard.h"

typedef struct {
    ladle_config cfg;
    ladle_model model;
    ladle_shard shard;
    ladle_corpus corpus;
    ladle_log log;
    int b_lo, b_hi;            /* this rank's sequences of the global batch */
    /* owned slices (shard.slice floats each, zero padding past shard.hi) */
    float *param_slice, *grad_slice, *adam_m, *adam_v;
    /* full vectors (shard.padded floats): merged parameters and this rank's gradient */
    float *params, *grads;
    ladle_activations acts;
    uint8_t *tokens, *targets;
    long step;                 /* optimizer steps done */
} ladle_trainer;

/* Collective: build everything from cfg (corpus, model, shard, initial parameters). */
void ladle_trainer_create(ladle_trainer *tr, const ladle_config *cfg, MPI_Comm comm);
void ladle_trainer_free(ladle_trainer *tr);

/* One optimizer step; returns the mean training loss over the global batch. */
double ladle_trainer_step(ladle_trainer *tr, ladle_step_stats *stats);

/* Evaluate on every domain's valid split and log the results. */
void ladle_trainer_eval(ladle_trainer *tr);

/* The whole run: steps, periodic evaluation, model file at the end (and every
 * run.save_every steps). Returns the exit code. */
int ladle_train_run(const ladle_config *cfg, MPI_Comm comm);

/* Print bytes per rank for parameters, moments and activations. */
void ladle_trainer_report_memory(const ladle_trainer *tr);

#endif
