/* soup: the expert bank of Soup-of-Experts, sharded across ranks.
 *
 * Theta(h) = S + sum_j alpha_j E_j over a range [bank_lo, bank_hi) of the flat parameter
 * vector: all of it (soup.experts_on = all) or the transformer blocks (= blocks; the
 * embeddings and the final LayerNorm are then shared only). Rank r owns, of every
 * expert, the same elements as of S: the part of its shard slice [lo, hi) that lies in
 * the bank range. With g the summed gradient of the loss w.r.t. Theta (this rank's
 * slice after the reduce-scatter):
 *     dS = g      dE_j = alpha_j g      dalpha_j = <E_j, g>   (summed over ranks)
 * dE_j is never stored: AdamW forms alpha_j g on the fly. */
#ifndef LADLE_SOUP_H
#define LADLE_SOUP_H

#include <stddef.h>
#include <stdint.h>

#include "ladle/config.h"
#include "ladle/model.h"
#include "ladle/shard.h"

typedef struct {
    int n;                  /* experts */
    size_t bank_lo, bank_hi;/* the range of the flat vector that carries experts */
    size_t own_lo, own_len; /* this rank's part of it: [own_lo, own_lo + own_len), global */
    size_t slice_offset;    /* own_lo - shard lo: where that part sits in the rank's slice */
    float *experts;         /* [n x own_len], row j = this rank's part of E_j */
    float *adam_m, *adam_v; /* AdamW moments, same layout */
} ladle_soup;

/* The bank range for a model and soup.experts_on (0 all, 1 blocks). */
void ladle_soup_bank_range(const ladle_model *model, int experts_on, size_t *lo, size_t *hi);

void ladle_soup_create(ladle_soup *soup, const ladle_model *model, const ladle_shard *shard, int n,
                       int experts_on);
void ladle_soup_free(ladle_soup *soup);

/* E_j[i] = std * N(0,1) from the counter RNG (seed, expert j, element i): the same bank
 * on any rank count. std = 0 starts every expert at zero. */
void ladle_soup_init(ladle_soup *soup, float std, uint64_t seed);

/* merged = shared + sum_j alpha_j E_j on the owned part (one GEMV); elsewhere a copy. */
void ladle_soup_merge(const ladle_soup *soup, const float *alpha, const float *shared_slice,
                      float *merged_slice, size_t slice_len);

/* dalpha_j += <E_j, g> over the owned part (one GEMV); sum over ranks afterwards. */
void ladle_soup_alpha_grad(const ladle_soup *soup, const float *grad_slice, float *dalpha);

/* Sum of squares of the experts' gradients on the owned part: (sum_j alpha_j^2) |g|^2. */
double ladle_soup_grad_sumsq(const ladle_soup *soup, const float *alpha, const float *grad_slice);

/* AdamW on the owned part of every expert, with gradient alpha_j * g * grad_factor. */
void ladle_soup_adamw(ladle_soup *soup, const ladle_model *model, const ladle_config *cfg, const float *alpha,
                      const float *grad_slice, long t, float lr, float grad_factor);

#endif
