#include "ladle/soup.h"
#include "ladle/error.h"
#include "ladle/kernels.h"
#include "ladle/optim.h"
#include "ladle/rng.h"

#include <math.h>
#include <stdio.h>
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

/* The matrices of the bank range get low-rank experts: U and V of each, in order. */
static void create_lowrank(ladle_soup *soup, const ladle_model *model)
{
    const int nr = soup->n * soup->rank;
    int sites = 0;
    for (int i = 0; i < model->n_tensors; i++) {
        const ladle_tensor *t = &model->tensors[i];
        sites += t->ndim == 2 && t->offset >= soup->bank_lo && t->offset < soup->bank_hi;
    }
    soup->n_sites = sites;
    soup->sites = ladle_calloc((size_t)(sites > 0 ? sites : 1), sizeof(ladle_lowrank_site), "low-rank sites");
    soup->lowrank_tensors = ladle_calloc((size_t)(2 * sites > 0 ? 2 * sites : 1), sizeof(ladle_tensor), "low-rank table");
    size_t q = 0;
    int s = 0;
    for (int i = 0; i < model->n_tensors; i++) {
        const ladle_tensor *t = &model->tensors[i];
        if (!(t->ndim == 2 && t->offset >= soup->bank_lo && t->offset < soup->bank_hi)) continue;
        ladle_lowrank_site *site = &soup->sites[s];
        site->tensor = i;
        for (int f = 0; f < 2; f++) {
            ladle_tensor *lt = &soup->lowrank_tensors[2 * s + f];
            size_t len = strlen(t->name);
            LADLE_CHECK(len + 3 <= sizeof lt->name, "tensor name '%s' too long for its low-rank factors", t->name);
            memcpy(lt->name, t->name, len);
            lt->name[len] = '.';
            lt->name[len + 1] = f ? 'V' : 'U';
            lt->name[len + 2] = '\0';
            lt->ndim = 2;
            lt->shape[0] = t->shape[f];
            lt->shape[1] = nr;
            lt->offset = q;
            lt->size = (size_t)t->shape[f] * (size_t)nr;
            lt->decay = 1;
            if (f) site->v = q; else site->u = q;
            q += lt->size;
        }
        s++;
    }
    soup->lowrank_size = q;
    soup->lowrank = ladle_calloc(q, sizeof(float), "low-rank experts");
    soup->lowrank_grad = ladle_calloc(q, sizeof(float), "low-rank gradients");
    soup->lowrank_m = ladle_calloc(q, sizeof(float), "low-rank AdamW first moment");
    soup->lowrank_v = ladle_calloc(q, sizeof(float), "low-rank AdamW second moment");
}

void ladle_soup_create(ladle_soup *soup, const ladle_model *model, const ladle_shard *shard, int n,
                       int experts_on, int rank)
{
    memset(soup, 0, sizeof *soup);
    soup->n = n;
    soup->rank = n > 0 ? rank : 0;
    ladle_soup_bank_range(model, experts_on, &soup->bank_lo, &soup->bank_hi);
    size_t lo = shard->lo > soup->bank_lo ? shard->lo : soup->bank_lo;
    size_t hi = shard->hi < soup->bank_hi ? shard->hi : soup->bank_hi;
    soup->own_lo = lo < hi ? lo : shard->lo;
    /* dense experts only when they are not low-rank */
    soup->own_len = lo < hi && soup->rank == 0 ? hi - lo : 0;
    soup->slice_offset = soup->own_lo - shard->lo;
    size_t count = (size_t)n * soup->own_len;
    soup->experts = ladle_calloc(count, sizeof(float), "expert bank shard");
    soup->adam_m = ladle_calloc(count, sizeof(float), "expert AdamW first moment");
    soup->adam_v = ladle_calloc(count, sizeof(float), "expert AdamW second moment");
    if (soup->rank > 0) create_lowrank(soup, model);
}

void ladle_soup_free(ladle_soup *soup)
{
    free(soup->experts);
    free(soup->adam_m);
    free(soup->adam_v);
    free(soup->sites);
    free(soup->lowrank_tensors);
    free(soup->lowrank);
    free(soup->lowrank_grad);
    free(soup->lowrank_m);
    free(soup->lowrank_v);
    memset(soup, 0, sizeof *soup);
}

void ladle_soup_init(ladle_soup *soup, const ladle_model *model, float std, uint64_t seed)
{
    for (int j = 0; j < soup->n; j++) {
        float *e = soup->experts + (size_t)j * soup->own_len;
        for (size_t i = 0; i < soup->own_len; i++)
            e[i] = std > 0 ? std * ladle_rng_normal(seed, (uint64_t)j, LADLE_STREAM_EXPERT, soup->own_lo + i) : 0.0f;
    }
    /* low-rank factors: step counters past any expert id, one per factor */
    for (int s = 0; s < soup->n_sites; s++) {
        const ladle_tensor *u = &soup->lowrank_tensors[2 * s], *v = &soup->lowrank_tensors[2 * s + 1];
        const ladle_tensor *w = &model->tensors[soup->sites[s].tensor];
        float v_std = 1.0f / sqrtf((float)w->shape[1]);
        uint64_t step = ((uint64_t)1 << 32) + 2 * (uint64_t)s;
        for (size_t i = 0; i < u->size; i++)
            soup->lowrank[u->offset + i] = std > 0 ? std * ladle_rng_normal(seed, step, LADLE_STREAM_EXPERT, i) : 0.0f;
        for (size_t i = 0; i < v->size; i++)
            soup->lowrank[v->offset + i] = v_std * ladle_rng_normal(seed, step + 1, LADLE_STREAM_EXPERT, i);
    }
}

/* A block of a low-rank matrix inside this rank's slice (ladle_flat_blocks). */
typedef struct {
    size_t rows, cols;
    size_t stride;        /* the matrix's columns: the block's row stride in the slice */
    size_t at;            /* its first element, as an index into the slice */
    size_t u_at, v_at;    /* its first row of U and of V, as indices into the low-rank vector */
} slice_block;

/* The blocks of site s's matrix inside this rank's slice of slice_len values: b[], the
 * count returned (at most 3; 0 when the slice misses the matrix). */
static int site_blocks(const ladle_soup *soup, const ladle_model *model, int s, size_t slice_len, slice_block b[3])
{
    const ladle_lowrank_site *site = &soup->sites[s];
    const ladle_tensor *t = &model->tensors[site->tensor];
    const size_t lo = soup->own_lo - soup->slice_offset;   /* the slice's first global index */
    size_t x0, x1;
    if (!ladle_range_part(t->offset, t->size, lo, lo + slice_len, &x0, &x1)) return 0;
    const size_t cols = (size_t)t->shape[1], nr = (size_t)soup->n * (size_t)soup->rank;
    ladle_block flat[3];
    int nb = ladle_flat_blocks(x0, x1, cols, flat);
    for (int i = 0; i < nb; i++)
        b[i] = (slice_block){
            .rows = flat[i].rows, .cols = flat[i].cols, .stride = cols,
            .at = t->offset + flat[i].row * cols + flat[i].col - lo,
            .u_at = site->u + flat[i].row * nr, .v_at = site->v + flat[i].col * nr,
        };
    return nb;
}

/* rows of U, each column scaled by alpha of its expert: out [rows x n r] */
static void scale_rows(const ladle_soup *soup, const float *u, size_t rows, const float *alpha, float *out)
{
    const int r = soup->rank, nr = soup->n * r;
    for (size_t i = 0; i < rows; i++)
        for (int k = 0; k < nr; k++) out[i * (size_t)nr + k] = u[i * (size_t)nr + k] * alpha[k / r];
}

void ladle_soup_merge(const ladle_soup *soup, const ladle_model *model, const float *alpha,
                      const float *shared_slice, float *merged_slice, size_t slice_len)
{
    memcpy(merged_slice, shared_slice, slice_len * sizeof(float));
    if (soup->n == 0) return;
    if (soup->own_len > 0)   /* merged[1 x len] += alpha[1 x n] E[n x len] */
        ladle_gemm(0, 0, 1, (int)soup->own_len, soup->n, 1.0f, alpha, soup->n, soup->experts, (int)soup->own_len,
                   1.0f, merged_slice + soup->slice_offset, (int)soup->own_len);
    /* low-rank: the slice's blocks of each matrix += (U diag(alpha~))[rows] V[cols]^T */
    const int nr = soup->n * soup->rank;
    for (int s = 0; s < soup->n_sites; s++) {
        slice_block b[3];
        int nb = site_blocks(soup, model, s, slice_len, b);
        for (int i = 0; i < nb; i++) {
            float *ua = ladle_malloc(b[i].rows * (size_t)nr * sizeof(float), "scaled U rows");
            scale_rows(soup, soup->lowrank + b[i].u_at, b[i].rows, alpha, ua);
            ladle_gemm(0, 1, (int)b[i].rows, (int)b[i].cols, nr, 1.0f, ua, nr, soup->lowrank + b[i].v_at, nr, 1.0f,
                       merged_slice + b[i].at, (int)b[i].stride);
            free(ua);
        }
    }
}

void ladle_soup_backward(const ladle_soup *soup, const ladle_model *model, const float *alpha, const float *grad_slice,
                         size_t slice_len, float *dalpha, float *lowrank_grad)
{
    if (soup->n == 0) return;
    if (soup->own_len > 0)   /* dalpha[n x 1] += E[n x len] g[len x 1] */
        ladle_gemm(0, 0, soup->n, 1, (int)soup->own_len, 1.0f, soup->experts, (int)soup->own_len,
                   grad_slice + soup->slice_offset, 1, 1.0f, dalpha, 1);
    if (soup->n_sites == 0) return;
    if (lowrank_grad) memset(lowrank_grad, 0, soup->lowrank_size * sizeof(float));
    const int r = soup->rank, nr = soup->n * r;
    for (int s = 0; s < soup->n_sites; s++) {
        slice_block b[3];
        int nb = site_blocks(soup, model, s, slice_len, b);
        for (int i = 0; i < nb; i++) {
            const size_t rows = b[i].rows, cols = b[i].stride;
            const float *g = grad_slice + b[i].at;
            float *p = ladle_malloc(rows * (size_t)nr * sizeof(float), "G V");
            ladle_gemm(0, 0, (int)rows, nr, (int)b[i].cols, 1.0f, g, (int)cols, soup->lowrank + b[i].v_at, nr, 0.0f, p,
                       nr);
            const float *ub = soup->lowrank + b[i].u_at;
            /* dalpha_j += sum of P o U over expert j's columns, in double: the terms cancel */
            for (int j = 0; j < soup->n; j++) {
                double acc = 0.0;
                for (size_t row = 0; row < rows; row++)
                    for (int q = j * r; q < (j + 1) * r; q++) acc += (double)p[row * nr + q] * ub[row * nr + q];
                dalpha[j] += (float)acc;
            }
            if (lowrank_grad) {
                float *du = lowrank_grad + b[i].u_at, *dv = lowrank_grad + b[i].v_at;
                for (size_t row = 0; row < rows; row++)   /* dU = P diag(alpha~) */
                    for (int k = 0; k < nr; k++) du[row * nr + k] += p[row * nr + k] * alpha[k / r];
                scale_rows(soup, ub, rows, alpha, p);     /* P now holds U diag(alpha~) */
                ladle_gemm(1, 0, (int)b[i].cols, nr, (int)rows, 1.0f, g, (int)cols, p, nr, 1.0f, dv, nr);  /* dV += G^T U~ */
            }
            free(p);
        }
    }
}

void ladle_soup_reduce_lowrank(ladle_soup *soup, MPI_Comm comm)
{
    if (soup->lowrank_size == 0) return;
    LADLE_CHECK(soup->lowrank_size <= (size_t)2147483647, "low-rank factors exceed MPI's int count");
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, soup->lowrank_grad, (int)soup->lowrank_size, MPI_FLOAT, MPI_SUM, comm));
}

double ladle_soup_grad_sumsq(const ladle_soup *soup, const float *alpha, const float *grad_slice)
{
    double a2 = 0.0, g2 = 0.0;
    if (soup->own_len == 0) return 0.0;
    for (int j = 0; j < soup->n; j++) a2 += (double)alpha[j] * alpha[j];
    const float *g = grad_slice + soup->slice_offset;
    for (size_t i = 0; i < soup->own_len; i++) g2 += (double)g[i] * g[i];
    return a2 * g2;
}

double ladle_soup_lowrank_sumsq(const ladle_soup *soup)
{
    double s = 0.0;
    for (size_t i = 0; i < soup->lowrank_size; i++) s += (double)soup->lowrank_grad[i] * soup->lowrank_grad[i];
    return s;
}

void ladle_soup_adamw(ladle_soup *soup, const ladle_model *model, const ladle_config *cfg, const float *alpha,
                      const float *grad_slice, long t, float lr, float grad_factor)
{
    const float *g = grad_slice + soup->slice_offset;
    for (int j = 0; j < soup->n && soup->own_len > 0; j++) {
        size_t row = (size_t)j * soup->own_len;
        ladle_adamw_update(model->tensors, model->n_tensors, cfg, soup->experts + row, g, soup->adam_m + row,
                           soup->adam_v + row, soup->own_lo, soup->own_lo + soup->own_len, t, lr,
                           alpha[j] * grad_factor);
    }
    if (soup->lowrank_size > 0)
        ladle_adamw_update(soup->lowrank_tensors, 2 * soup->n_sites, cfg, soup->lowrank, soup->lowrank_grad,
                           soup->lowrank_m, soup->lowrank_v, 0, soup->lowrank_size, t, lr, grad_factor);
}
