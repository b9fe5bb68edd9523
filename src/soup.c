#include "ladle/soup.h"
#include "ladle/error.h"
#include "ladle/kernels.h"
#include "ladle/optim.h"
#include "ladle/rng.h"

#include <stdlib.h>
#include <string.h>

void ladle_soup_bank_range(const ladle_model *model, int experts_on, size_t *lo, size_t *hi)
{
    if (experts_on == 0) {
        *lo = 0;
        *hi = model->n_params;
        return;
    }
    /* the blocks are contiguous in the table: after wte, wpe and before lnf */
    const ladle_tensor *first = ladle_model_tensor(model, "h.0.ln1.w");
    const ladle_tensor *last = ladle_model_tensor(model, "lnf.w");
    LADLE_CHECK(first && last, "model has no transformer blocks");
    *lo = first->offset;
    *hi = last->offset;
}

void ladle_soup_create(ladle_soup *soup, const ladle_model *model, const ladle_shard *shard, int n,
                       int experts_on)
{
    memset(soup, 0, sizeof *soup);
    soup->n = n;
    ladle_soup_bank_range(model, experts_on, &soup->bank_lo, &soup->bank_hi);
    size_t lo = shard->lo > soup->bank_lo ? shard->lo : soup->bank_lo;
    size_t hi = shard->hi < soup->bank_hi ? shard->hi : soup->bank_hi;
    soup->own_lo = lo < hi ? lo : shard->lo;
    soup->own_len = lo < hi ? hi - lo : 0;
    soup->slice_offset = soup->own_lo - shard->lo;
    size_t count = (size_t)n * soup->own_len;
    soup->experts = ladle_calloc(count, sizeof(float), "expert bank shard");
    soup->adam_m = ladle_calloc(count, sizeof(float), "expert AdamW first moment");
    soup->adam_v = ladle_calloc(count, sizeof(float), "expert AdamW second moment");
}

void ladle_soup_free(ladle_soup *soup)
{
    free(soup->experts);
    free(soup->adam_m);
    free(soup->adam_v);
    memset(soup, 0, sizeof *soup);
}

void ladle_soup_init(ladle_soup *soup, float std, uint64_t seed)
{
    for (int j = 0; j < soup->n; j++) {
        float *e = soup->experts + (size_t)j * soup->own_len;
        for (size_t i = 0; i < soup->own_len; i++)
            e[i] = std > 0 ? std * ladle_rng_normal(seed, (uint64_t)j, LADLE_STREAM_EXPERT, soup->own_lo + i) : 0.0f;
    }
}

void ladle_soup_merge(const ladle_soup *soup, const float *alpha, const float *shared_slice,
                      float *merged_slice, size_t slice_len)
{
    memcpy(merged_slice, shared_slice, slice_len * sizeof(float));
    if (soup->n == 0 || soup->own_len == 0) return;
    /* merged[1 x len] += alpha[1 x n] E[n x len] */
    ladle_gemm(0, 0, 1, (int)soup->own_len, soup->n, 1.0f, alpha, soup->n, soup->experts, (int)soup->own_len,
               1.0f, merged_slice + soup->slice_offset, (int)soup->own_len);
}

void ladle_soup_alpha_grad(const ladle_soup *soup, const float *grad_slice, float *dalpha)
{
    if (soup->n == 0 || soup->own_len == 0) return;
    /* dalpha[n x 1] += E[n x len] g[len x 1] */
    ladle_gemm(0, 0, soup->n, 1, (int)soup->own_len, 1.0f, soup->experts, (int)soup->own_len,
               grad_slice + soup->slice_offset, 1, 1.0f, dalpha, 1);
}

double ladle_soup_grad_sumsq(const ladle_soup *soup, const float *alpha, const float *grad_slice)
{
    double a2 = 0.0, g2 = 0.0;
    for (int j = 0; j < soup->n; j++) a2 += (double)alpha[j] * alpha[j];
    const float *g = grad_slice + soup->slice_offset;
    for (size_t i = 0; i < soup->own_len; i++) g2 += (double)g[i] * g[i];
    return a2 * g2;
}

void ladle_soup_adamw(ladle_soup *soup, const ladle_model *model, const ladle_config *cfg, const float *alpha,
                      const float *grad_slice, long t, float lr, float grad_factor)
{
    const float *g = grad_slice + soup->slice_offset;
    for (int j = 0; j < soup->n; j++) {
        size_t row = (size_t)j * soup->own_len;
        ladle_adamw_update(model->tensors, model->n_tensors, cfg, soup->experts + row, g, soup->adam_m + row,
                           soup->adam_v + row, soup->own_lo, soup->own_lo + soup->own_len, t, lr,
                           alpha[j] * grad_factor);
    }
}
