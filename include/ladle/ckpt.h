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

/* What a file holds; pointers to this rank's parts. */
typedef struct {
    const char *kind;                          /* "dense", "soup" or "instantiated" */
    long step;
    const ladle_config *cfg;
    const ladle_model *model;
    const ladle_shard *shard;                  /* the communicator and this rank's slice */
    const float *shared_slice;                 /* S, or Theta for dense/instantiated */
    const ladle_soup *soup;                    /* NULL or n = 0: no experts */
    const ladle_router *router;                /* with a soup */
    const float *router_params;
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
void ladle_ckpt_loaded_free(ladle_ckpt_loaded *loaded);

/* The full parameter vector of a loaded file on every rank (shard.padded floats,
 * malloc'd): S for dense and instantiated models, Theta(h) for a soup (h required). */
float *ladle_ckpt_gather_theta(const ladle_ckpt_loaded *loaded, const float *h, float *alpha_out);

/* Index of a domain name in a loaded file, or -1. */
int ladle_ckpt_domain_index(const ladle_ckpt_loaded *loaded, const char *name);

#endif
