/* ckpt: model files, written and read collectively through MPI-IO.
 *
 *   /                  attrs: format = "ladle-checkpoint", format_version, kind
 *                      ("dense" | "soup" | "instantiated"), step, seed, world_size,
 *                      config (the resolved key = value text), ladle_version,
 *                      domains (names, in the order h is indexed); instantiated models
 *                      also h, alpha and source (the soup they came from)
 *   /shared/<tensor>   float32, the tensor's true shape: S (a dense model's parameters)
 *   /experts/<tensor>  float32 [n, tensor shape]: E_j, indexed by global expert id;
 *                      low-rank experts (soup.rank = r): a group with U [n, rows, r] and
 *                      V [n, cols, r], expert j's matrix being U[j] V[j]^T
 *   /router/<tensor>   the router's omega (router.w1, router.b1, router.w2, router.b2)
 *   /optim/m/..., /optim/v/...   training checkpoints: the AdamW moments, in the same
 *                      layout as the parameters (shared, experts, router); attr step
 *
 * Every rank writes the hyperslabs of its own slice of S and of its bank shard, and
 * takes part in every H5Dwrite (with an empty selection where it owns nothing): no rank
 * gathers the model. Reading is the same with the reader's slices, so any rank count
 * reads any file. Files are written to <path>.tmp, closed by all, then renamed by
 * rank 0: a crash never leaves a half-written file under the final name. */
#ifndef LADLE_CKPT_H
#define LADLE_CKPT_H

#include <mpi.h>

#include "ladle/config.h"
#include "ladle/data.h"
#include "ladle/model.h"
#include "ladle/router.h"
#include "ladle/shard.h"
#include "ladle/soup.h"

#define LADLE_CKPT_FORMAT "ladle-checkpoint"
#define LADLE_CKPT_VERSION 1

/* The state of a run on this rank, as pointers to its parts (moments may be NULL when
 * only parameters are written). */
typedef struct {
    float *shared, *shared_m, *shared_v;       /* shard.slice floats each: S and its AdamW moments */
    ladle_soup *soup;                          /* NULL or n = 0: no experts; else the bank shard,
                                                * the low-rank factors and their moments */
    const ladle_router *router;                /* with a soup */
    float *router_params, *router_m, *router_v;
} ladle_ckpt_state;

/* What a file holds. */
typedef struct {
    const char *kind;                          /* "dense", "soup" or "instantiated" */
    long step;
    const ladle_config *cfg;
    const ladle_model *model;
    const ladle_shard *shard;                  /* the communicator and this rank's slice */
    ladle_ckpt_state state;
    int with_optim;                            /* also /optim/m and /optim/v: a training checkpoint */
    int n_domains;
    const char (*domain_names)[LADLE_NAME_MAX];
    const float *h, *alpha;                    /* instantiated: what it was made from */
    int n_alpha;                               /* length of alpha */
    const char *source;                        /* instantiated: the soup's path */
} ladle_ckpt_contents;

/* Collective over contents->shard->comm. */
void ladle_ckpt_save(const char *path, const ladle_ckpt_contents *contents);

/* A file read back into this rank's slices (for comm's rank count). */
typedef struct {
    char kind[32];
    long step;
    ladle_config cfg;
    ladle_model model;
    ladle_shard shard;
    float *shared_slice;                       /* shard.slice floats */
    ladle_soup soup;                           /* n = 0 unless kind is soup */
    ladle_router router;
    float *router_params;
    int n_domains;
    char (*domain_names)[LADLE_NAME_MAX];
} ladle_ckpt_loaded;

/* Collective. A missing, non-HDF5 or non-ladle file is a usage error naming it. */
void ladle_ckpt_load(const char *path, MPI_Comm comm, ladle_ckpt_loaded *out);

/* Collective: the configuration and step a checkpoint was written with, nothing else
 * (to check a resume before reading the state). */
void ladle_ckpt_peek(const char *path, MPI_Comm comm, ladle_config *stored, long *step);

/* Collective: read a training checkpoint's parameters AND optimizer moments into the
 * (allocated) state of a run whose model and shard are given: any rank count reads any
 * checkpoint. *stored receives the configuration it was written with, *step its step. */
void ladle_ckpt_restore(const char *path, const ladle_model *model, const ladle_shard *shard,
                        const ladle_ckpt_state *state, ladle_config *stored, long *step);
void ladle_ckpt_loaded_free(ladle_ckpt_loaded *loaded);

/* The full parameter vector of a loaded file on every rank (shard.padded floats,
 * malloc'd): S for dense and instantiated models, Theta(h) for a soup (h required). */
float *ladle_ckpt_gather_theta(const ladle_ckpt_loaded *loaded, const float *h, float *alpha_out);

/* ---- run directories -----------------------------------------------------------
 * <run.dir>/ckpt-<step, 8 digits>.h5 are training checkpoints; <run.dir>/latest holds the
 * name of the newest, replaced atomically (written to latest.tmp, renamed) only after
 * the checkpoint itself is complete and renamed, and the directory fsync'd. */

void ladle_ckpt_path(char *out, size_t len, const char *dir, long step);

/* Collective, after ladle_ckpt_save of step's checkpoint: rank 0 makes it the latest and
 * deletes all but the newest keep_last (and those whose step is a multiple of keep_every). */
void ladle_ckpt_commit(const char *dir, long step, int keep_last, int keep_every, MPI_Comm comm);

/* Collective: the newest checkpoint of a run directory that opens and is complete,
 * starting from latest; an unreadable one is skipped with a warning naming it. Returns
 * 1 with its path in out, or 0 if the directory holds none. */
int ladle_ckpt_find_latest(const char *dir, char *out, size_t len, MPI_Comm comm);

/* Index of a domain name in a loaded file, or -1. */
int ladle_ckpt_domain_index(const ladle_ckpt_loaded *loaded, const char *name);

#endif
