/* ckpt: model files in HDF5.
 *
 *   /                 attrs: format = "ladle-checkpoint", format_version, kind ("dense"),
 *                     step, seed, world_size, config (the resolved key = value text),
 *                     ladle_version
 *   /shared/<tensor>  float32, the tensor's true shape (e.g. /shared/h.3.attn.qkv.w)
 *
 * This is the minimal single-writer form: rank 0 writes the full parameter vector that
 * every rank holds after the all-gather. Files are written to <path>.tmp and renamed, so
 * a crash never leaves a half-written file under the final name. */
#ifndef LADLE_CKPT_H
#define LADLE_CKPT_H

#include <mpi.h>

#include "ladle/config.h"
#include "ladle/model.h"

#define LADLE_CKPT_FORMAT "ladle-checkpoint"
#define LADLE_CKPT_VERSION 1

/* Collective over comm (rank 0 writes, everyone waits for the rename). */
void ladle_ckpt_save_model(const char *path, const ladle_model *model, const ladle_config *cfg,
                           const float *params, long step, MPI_Comm comm);

/* Collective: every rank reads the configuration and the full parameter vector.
 * Creates *model from the stored configuration; *params is malloc'd (n_params floats).
 * A missing, non-HDF5 or non-ladle file is a usage error naming it. */
void ladle_ckpt_load_model(const char *path, ladle_config *cfg, ladle_model *model, float **params,
                           long *step, MPI_Comm comm);

#endif
