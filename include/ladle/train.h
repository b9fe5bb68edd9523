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
#include <stddef.h>
#include <stdio.h>

#include "ladle/config.h"
#include "ladle/data.h"
#include "ladle/log.h"
#include "ladle/model.h"
#include "ladle/router.h"
#include "ladle/shard.h"
#include "ladle/soup.h"

/* ---- planning a run: 'ladle train --dry-run' ----------------------------------------
 *
 * What a run of a configuration holds on each rank and moves per step, from the sizes the
 * trainer allocates: ladle_trainer_create computes the plan of its own run and checks
 * that its shard, bank and router agree with it, so the plan cannot drift from the
 * trainer. Everything is arithmetic on the configuration and the corpus' metadata except
 * the activations, whose sizes live in model.c, moe.c and smear.c: those are allocated
 * once (never touched, so they cost address space, not memory) and report their size. */
typedef struct {
    int ranks;                 /* P */
    int domains;               /* k, from the corpus */
    size_t corpus_bytes;       /* what the corpus holds in memory on every rank (ladle_corpus_memory) */
    int corpus_streamed;       /* data.read = stream: corpus_bytes does not grow with the corpus */
    int batch, context;        /* train.batch (global, in sequences), model.context */
    int experts, expert_rank;  /* soup.experts n, soup.rank r */
    /* parameter counts */
    size_t shared;             /* S, the dense model's p */
    size_t bank_lo, bank_hi;   /* the part of the flat vector that carries experts */
    size_t bank;               /* dense experts: n (bank_hi - bank_lo), sharded; 0 with low-rank experts */
    size_t lowrank;            /* low-rank factors U, V of every expert (replicated); 0 with dense experts */
    size_t router;             /* router parameters (replicated); 0 for a dense model */
    size_t slice, padded;      /* the shard's slice (equal on every rank) and the padded vector, P x slice */
    /* bytes allocated for the activations of B sequences (B = 0: not known); a rank of
     * the plan has floor(batch / P) or that + 1 sequences, at least one (evaluation) */
    int acts_batch[2];
    size_t acts_bytes[2];
} ladle_train_plan;

/* One rank's part of a plan. */
typedef struct {
    size_t lo, hi;             /* the elements of S (and of every dense expert) it owns */
    size_t bank_own;           /* dense expert elements it owns: n x its part of [bank_lo, bank_hi) */
    int b_lo, b_hi;            /* its sequences of the global batch */
} ladle_rank_share;

/* count elements of `unit` bytes each (the activations: count bytes of unit 1); reduce
 * names the keys that shrink it, for the message refusing a plan that does not fit */
typedef struct {
    const char *what;
    size_t count, unit;
    const char *reduce;
} ladle_plan_item;

/* One collective call of a training step. `bytes` is its buffer (the result for an
 * all-gather, the input for a reduce-scatter); `wire` what each rank receives with a
 * bandwidth-optimal algorithm (ring or tree): all-gather and reduce-scatter
 * (P - 1) / P x bytes, all-reduce 2 (P - 1) / P x bytes, broadcast bytes (0 on one rank). */
typedef struct {
    const char *call, *what, *type;
    size_t count, bytes;
    double wire;
} ladle_plan_collective;

/* The arithmetic part of a plan for cfg on `ranks` ranks with a corpus of `domains`
 * domains (corpus_bytes in memory); activations are not measured. */
void ladle_train_plan_make(ladle_train_plan *plan, const ladle_config *cfg, int domains, size_t corpus_bytes,
                           int ranks);
ladle_rank_share ladle_train_plan_share(const ladle_train_plan *plan, int rank);
/* Memory of one rank, item by item (at most LADLE_PLAN_ITEMS); returns the count. */
#define LADLE_PLAN_ITEMS 16
int ladle_train_plan_memory(const ladle_train_plan *plan, int rank, ladle_plan_item items[LADLE_PLAN_ITEMS]);
/* The collectives of one step, in the order the step calls them; returns the count. */
#define LADLE_PLAN_COLLECTIVES 8
int ladle_train_plan_collectives(const ladle_train_plan *plan, ladle_plan_collective out[LADLE_PLAN_COLLECTIVES]);

/* 'ladle train --dry-run': reads the corpus' metadata (collective over comm; a bad corpus
 * or configuration is the usage error the run would give), plans for `ranks` ranks and
 * prints on rank 0 of comm: the resolved configuration (non-default values marked), the
 * parameter counts, every rank's share, each rank's memory, the collectives' bytes per
 * step. Writes no file. */
void ladle_train_dry_run(const ladle_config *cfg, int ranks, MPI_Comm comm, FILE *out);

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
    float *fixed_h;            /* [k] the fixed part of pi (meta.natural): the natural mixture or meta.weights */
    double *reduced;           /* [3 + n]: loss sum, |dS|^2, |dE|^2, dalpha */
    ladle_activations acts;
    uint8_t *tokens, *targets;
    int *labels;               /* each sequence's domain (tag routing) */
    long step;                 /* optimizer steps done */
    ladle_train_plan plan;     /* this run's plan (the allocations above are checked against it) */
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

/* Print the parameter counts and rank 0's memory (from tr->plan), and the largest bank
 * shard of any rank ("bank shard N bytes"). Rank 0 prints. */
void ladle_trainer_report_memory(const ladle_trainer *tr);

#endif
