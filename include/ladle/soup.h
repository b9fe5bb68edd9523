/* soup: the expert bank of Soup-of-Experts, sharded across ranks.
 *
 * Theta(h) = S + sum_j alpha_j E_j over a range [bank_lo, bank_hi) of the flat parameter
 * vector: all of it (soup.experts_on = all) or the transformer blocks (= blocks; the
 * embeddings and the final LayerNorm are then shared only). Rank r owns, of every
 * expert, the same elements as of S: the part of its shard slice [lo, hi) that lies in
 * the bank range. With g the summed gradient of the loss w.r.t. Theta (this rank's
 * slice after the reduce-scatter):
 *     dS = g      dE_j = alpha_j g      dalpha_j = <E_j, g>   (summed over ranks)
 * dE_j is never stored: AdamW forms alpha_j g on the fly.
 *
 * Low-rank experts (soup.rank = r > 0, METHODS.md: "U diag(alpha) V^T"): every matrix
 * W [rows x cols] in the bank range gets, per expert j, U_j [rows x r] and V_j [cols x r],
 * and Theta_W = S_W + sum_j alpha_j U_j V_j^T; vectors (biases, LayerNorms) are then
 * shared only. The factors are small ((rows + cols) n r per matrix against rows cols n
 * for dense experts) and REPLICATED on every rank: each rank merges the rows of its own
 * slice, computes the partial gradients of the factors from its slice of g, and one
 * MPI_Allreduce sums them. With P = G V (rows x n r) over a rank's block of rows:
 *     dU = P diag(alpha~)   dV = G^T U diag(alpha~)   dalpha_j = sum_{i, s} P[i, jr+s] U[i, jr+s]
 * where alpha~ repeats alpha_j for the r columns of expert j. */
#ifndef LADLE_SOUP_H
#define LADLE_SOUP_H

#include <stddef.h>
#include <stdint.h>

#include "ladle/config.h"
#include "ladle/model.h"
#include "ladle/shard.h"

#include <mpi.h>

/* One matrix with low-rank experts: U [rows x n r] at u, V [cols x n r] at v, column
 * j r + s of both belonging to expert j. */
typedef struct {
    int tensor;             /* index in the model's tensor table */
    size_t u, v;            /* offsets in the low-rank parameter vector */
} ladle_lowrank_site;

typedef struct {
    int n;                  /* experts */
    size_t bank_lo, bank_hi;/* the range of the flat vector that carries experts */
    size_t own_lo, own_len; /* this rank's part of it: [own_lo, own_lo + own_len), global */
    size_t slice_offset;    /* own_lo - shard lo: where that part sits in the rank's slice */
    float *experts;         /* [n x own_len], row j = this rank's part of E_j */
    float *adam_m, *adam_v; /* AdamW moments, same layout */
    /* low-rank experts (rank > 0; then own_len = 0: no dense experts) */
    int rank;
    int n_sites;
    ladle_lowrank_site *sites;
    ladle_tensor *lowrank_tensors;   /* U and V of every site, for AdamW's decay */
    size_t lowrank_size;             /* q: floats in the low-rank vector */
    float *lowrank, *lowrank_grad, *lowrank_m, *lowrank_v;   /* replicated */
} ladle_soup;

/* The bank range for a model and soup.experts_on (0 all, 1 blocks). */
void ladle_soup_bank_range(const ladle_model *model, int experts_on, size_t *lo, size_t *hi);

void ladle_soup_create(ladle_soup *soup, const ladle_model *model, const ladle_shard *shard, int n,
                       int experts_on, int rank);
void ladle_soup_free(ladle_soup *soup);

/* E_j[i] = std * N(0,1) from the counter RNG (seed, expert j, element i): the same bank
 * on any rank count. std = 0 starts every expert at zero. Low-rank: U = std * N(0,1),
 * V = N(0,1) / sqrt(cols), so that with std = 0 (as LoRA) Theta starts at S yet U
 * receives gradient at once. */
void ladle_soup_init(ladle_soup *soup, const ladle_model *model, float std, uint64_t seed);

/* merged = shared + sum_j alpha_j E_j on this rank's slice (dense: one GEMV; low-rank:
 * GEMMs over the slice's rows). */
void ladle_soup_merge(const ladle_soup *soup, const ladle_model *model, const float *alpha,
                      const float *shared_slice, float *merged_slice, size_t slice_len);

/* From this rank's slice of g: dalpha_j += <E_j, g> (partial: sum over ranks
 * afterwards) and, low-rank, the partial gradients of U and V into lowrank_grad
 * (soup->lowrank_size floats, overwritten; may be NULL; the trainer passes
 * soup->lowrank_grad and sums it over ranks with ladle_soup_reduce_lowrank). */
void ladle_soup_backward(const ladle_soup *soup, const ladle_model *model, const float *alpha,
                         const float *grad_slice, size_t slice_len, float *dalpha, float *lowrank_grad);

/* Sum the low-rank factors' gradients over the ranks (MPI_Allreduce); no-op if rank 0. */
void ladle_soup_reduce_lowrank(ladle_soup *soup, MPI_Comm comm);

/* Sum of squares of the dense experts' gradients on the owned part:
 * (sum_j alpha_j^2) |g|^2 (partial over ranks). */
double ladle_soup_grad_sumsq(const ladle_soup *soup, const float *alpha, const float *grad_slice);

/* Sum of squares of the (reduced, replicated) low-rank gradients. */
double ladle_soup_lowrank_sumsq(const ladle_soup *soup);

/* AdamW on the owned part of every expert (gradient alpha_j * g * grad_factor) and on the
 * low-rank factors (their reduced gradient * grad_factor). */
void ladle_soup_adamw(ladle_soup *soup, const ladle_model *model, const ladle_config *cfg, const float *alpha,
                      const float *grad_slice, long t, float lr, float grad_factor);

#endif
