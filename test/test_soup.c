/* Soup-of-Experts gradients by finite differences through the whole chain
 *   h -> alpha = router(h) -> Theta = S + sum_j alpha_j E_j -> mean loss,
 * for dS, dE_j, dalpha and the router's parameters, with experts on all tensors and on
 * the blocks only; and the merge GEMV against a naive sum. Single process. */
#include "ladle/config.h"
#include "ladle/model.h"
#include "ladle/rng.h"
#include "ladle/router.h"
#include "ladle/shard.h"
#include "ladle/soup.h"
#include "testutil.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>

static test_counts counts;

typedef struct {
    ladle_config cfg;
    ladle_model model;
    ladle_shard shard;
    ladle_soup soup;
    ladle_router router;
    float *shared, *router_params, *h, *alpha, *theta;
    ladle_activations acts;
    uint8_t *tokens, *targets;
    int B, k, n;
} fixture;

static void fixture_create(fixture *f, int experts_on, ladle_alpha_kind kind, int rank)
{
    memset(f, 0, sizeof *f);
    ladle_config_defaults(&f->cfg);
    f->cfg.layers = 1; f->cfg.dim = 8; f->cfg.heads = 2; f->cfg.context = 6;
    f->cfg.init_std = 0.3f;
    f->B = 2; f->k = 4; f->n = 3;
    ladle_model_create(&f->model, &f->cfg);
    ladle_shard_create(&f->shard, f->model.n_params, MPI_COMM_SELF);
    f->shared = calloc(f->shard.slice, sizeof(float));
    ladle_model_init_range(&f->model, f->shared, 0, f->model.n_params, 5);
    for (size_t i = 0; i < f->model.n_params; i++) f->shared[i] += 0.1f * ladle_rng_normal(6, 0, 0, i);
    ladle_soup_create(&f->soup, &f->model, &f->shard, f->n, experts_on, rank);
    ladle_soup_init(&f->soup, &f->model, 0.2f, 7);
    ladle_router_create(&f->router, f->k, 5, f->n, kind);
    f->router_params = calloc(f->router.n_params, sizeof(float));
    ladle_router_init(&f->router, f->router_params, 8);
    f->h = calloc((size_t)f->k, sizeof(float));
    float hv[4] = {0.1f, 0.4f, 0.2f, 0.3f};
    memcpy(f->h, hv, sizeof hv);
    f->alpha = calloc((size_t)f->n, sizeof(float));
    f->theta = calloc(f->shard.padded, sizeof(float));
    ladle_activations_create(&f->acts, &f->model, f->B);
    size_t nt = (size_t)f->B * f->cfg.context;
    f->tokens = malloc(nt);
    f->targets = malloc(nt);
    for (size_t i = 0; i < nt; i++) {
        f->tokens[i] = (uint8_t)ladle_rng_below(9, 0, 1, i, 256);
        f->targets[i] = (uint8_t)ladle_rng_below(9, 0, 2, i, 256);
    }
}

static void fixture_free(fixture *f)
{
    ladle_activations_free(&f->acts);
    ladle_soup_free(&f->soup);
    ladle_model_free(&f->model);
    free(f->shared); free(f->router_params); free(f->h); free(f->alpha); free(f->theta);
    free(f->tokens); free(f->targets);
}

/* mean loss at the current S, E, omega, h; alpha_override (if set) replaces the router */
static double loss_at(fixture *f, const float *alpha_override)
{
    if (alpha_override) memcpy(f->alpha, alpha_override, (size_t)f->n * sizeof(float));
    else ladle_router_forward(&f->router, f->router_params, f->h, f->alpha, NULL);
    ladle_soup_merge(&f->soup, &f->model, f->alpha, f->shared, f->theta, f->shard.slice);
    double s = ladle_model_forward(&f->model, f->theta, &f->acts, f->tokens, f->targets, f->B);
    return s / ((double)f->B * f->cfg.context);
}

/* central differences of the loss w.r.t. x[idx], compared with g[idx] */
static void fd_check(fixture *f, const char *what, float *x, const float *g, const size_t *idx, int m,
                     const float *alpha_override, double tol)
{
    const float eps = 1e-2f;
    double num = 0, den = 0;
    for (int i = 0; i < m; i++) {
        float saved = x[idx[i]];
        x[idx[i]] = saved + eps;
        double lp = loss_at(f, alpha_override);
        x[idx[i]] = saved - eps;
        double lm = loss_at(f, alpha_override);
        x[idx[i]] = saved;
        double fd = (lp - lm) / (2 * eps);
        num += (fd - g[idx[i]]) * (fd - g[idx[i]]);
        den += fd * fd;
    }
    double rel = sqrt(num / (den > 0 ? den : 1e-30));
    EXPECT(&counts, den > 0, "%s: all probed gradients are zero", what);
    EXPECT(&counts, rel < tol, "%s: finite-difference rel. error %.3g", what, rel);
    printf("  %-34s rel. error %.2e\n", what, rel);
}

static void check_soup(int experts_on, ladle_alpha_kind kind, int rank)
{
    fixture f;
    fixture_create(&f, experts_on, kind, rank);
    const size_t p = f.model.n_params;
    char label[96];
    const char *on = experts_on ? "blocks" : "all";
    char ak[32];
    snprintf(ak, sizeof ak, "%s%s", kind == LADLE_ALPHA_SOFTMAX ? "softmax" : "raw", rank ? ", low-rank" : "");

    /* analytic gradients */
    loss_at(&f, NULL);
    float *g = calloc(f.shard.padded, sizeof(float));
    ladle_model_backward(&f.model, f.theta, g, &f.acts, f.tokens, f.targets, f.B,
                         1.0f / (float)(f.B * f.cfg.context));
    float *dalpha = calloc((size_t)f.n, sizeof(float));
    ladle_soup_backward(&f.soup, &f.model, f.alpha, g, f.shard.slice, dalpha, f.soup.lowrank_grad);
    ladle_router_cache cache;
    ladle_router_cache_create(&cache, &f.router);
    ladle_router_forward(&f.router, f.router_params, f.h, cache.alpha, &cache);
    float *drouter = calloc(f.router.n_params, sizeof(float));
    float *dh = calloc((size_t)f.k, sizeof(float));
    ladle_router_backward(&f.router, f.router_params, f.h, &cache, dalpha, drouter, dh);

    /* probes: every tensor of S is represented */
    size_t idx[64];
    int m = 0;
    for (int t = 0; t < f.model.n_tensors && m < 64; t++)
        idx[m++] = f.model.tensors[t].offset + ladle_rng_below(10, (uint64_t)t, 0, 0, f.model.tensors[t].size);
    snprintf(label, sizeof label, "dS (%s, %s)", on, ak);
    fd_check(&f, label, f.shared, g, idx, m, NULL, 2e-3);

    /* dE_j = alpha_j g on the bank range; zero-free only inside it */
    float *dE = calloc((size_t)f.n * f.soup.own_len, sizeof(float));
    for (int j = 0; j < f.n; j++)
        for (size_t i = 0; i < f.soup.own_len; i++) dE[(size_t)j * f.soup.own_len + i] = f.alpha[j] * g[f.soup.own_lo + i];
    if (rank == 0) {
        int me = 0;
        size_t eidx[48];
        for (int j = 0; j < f.n; j++)
            for (int q = 0; q < 16; q++)
                eidx[me++] = (size_t)j * f.soup.own_len + ladle_rng_below(11, (uint64_t)j, 0, (uint64_t)q, f.soup.own_len);
        snprintf(label, sizeof label, "dE_j (%s, %s)", on, ak);
        fd_check(&f, label, f.soup.experts, dE, eidx, me, NULL, 2e-3);
    } else {
        /* every U and V of every site */
        size_t lidx[64];
        int ml = 0;
        for (int t = 0; t < 2 * f.soup.n_sites && ml < 64; t++)
            for (int q = 0; q < 4 && ml < 64; q++)
                lidx[ml++] = f.soup.lowrank_tensors[t].offset +
                             ladle_rng_below(13, (uint64_t)t, 0, (uint64_t)q, f.soup.lowrank_tensors[t].size);
        snprintf(label, sizeof label, "dU, dV (%s, %s)", on, ak);
        fd_check(&f, label, f.soup.lowrank, f.soup.lowrank_grad, lidx, ml, NULL, 2e-3);
        EXPECT(&counts, f.soup.own_len == 0, "low-rank soups hold no dense experts");
        EXPECT(&counts, f.soup.n_sites == (experts_on ? 4 : 6), "low-rank sites: %d", f.soup.n_sites);
    }

    /* dalpha with the router bypassed */
    float *a0 = calloc((size_t)f.n, sizeof(float));
    memcpy(a0, f.alpha, (size_t)f.n * sizeof(float));
    size_t aidx[8] = {0, 1, 2};
    snprintf(label, sizeof label, "dalpha (%s, %s)", on, ak);
    fd_check(&f, label, a0, dalpha, aidx, f.n, a0, 2e-3);

    /* the router's parameters, every tensor */
    size_t ridx[32];
    int mr = 0;
    for (int t = 0; t < 4; t++)
        for (int q = 0; q < 6; q++)
            ridx[mr++] = f.router.tensors[t].offset + ladle_rng_below(12, (uint64_t)t, 0, (uint64_t)q, f.router.tensors[t].size);
    snprintf(label, sizeof label, "d omega (%s, %s)", on, ak);
    fd_check(&f, label, f.router_params, drouter, ridx, mr, NULL, 5e-3);

    /* the domain weights themselves (fit-weights descends on them) */
    size_t hidx[4] = {0, 1, 2, 3};
    snprintf(label, sizeof label, "dh (%s, %s)", on, ak);
    fd_check(&f, label, f.h, dh, hidx, f.k, NULL, 5e-3);

    /* blocks: the embeddings carry no experts */
    if (experts_on) {
        const ladle_tensor *wte = ladle_model_tensor(&f.model, "wte");
        EXPECT(&counts, f.soup.bank_lo > wte->offset + wte->size - 1, "blocks bank must exclude wte");
        EXPECT(&counts, f.soup.bank_hi < p, "blocks bank must exclude lnf");
    } else {
        EXPECT(&counts, f.soup.bank_lo == 0 && f.soup.bank_hi == p, "all: bank covers the vector");
    }

    /* merge = S + sum_j alpha_j E_j (dense) or + sum_j alpha_j U_j V_j^T (low-rank),
     * element by element, at the unperturbed state */
    loss_at(&f, NULL);
    double worst = 0;
    for (size_t i = 0; i < p; i++) {
        double v = f.shared[i];
        if (i >= f.soup.own_lo && i < f.soup.own_lo + f.soup.own_len)
            for (int j = 0; j < f.n; j++) v += (double)f.alpha[j] * f.soup.experts[(size_t)j * f.soup.own_len + i - f.soup.own_lo];
        for (int si = 0; si < f.soup.n_sites; si++) {
            const ladle_tensor *w = &f.model.tensors[f.soup.sites[si].tensor];
            if (i < w->offset || i >= w->offset + w->size) continue;
            size_t row = (i - w->offset) / (size_t)w->shape[1], col = (i - w->offset) % (size_t)w->shape[1];
            int nr = f.n * rank;
            for (int q = 0; q < nr; q++)
                v += (double)f.alpha[q / rank] * f.soup.lowrank[f.soup.sites[si].u + row * nr + q] *
                     f.soup.lowrank[f.soup.sites[si].v + col * nr + q];
        }
        worst = fmax(worst, fabs(v - f.theta[i]));
    }
    EXPECT(&counts, worst < 1e-5, "merge differs from the naive sum by %g", worst);

    /* the experts' gradient norm: (sum alpha^2) |g|^2, dE from the unperturbed alpha */
    for (int j = 0; j < f.n; j++)
        for (size_t i = 0; i < f.soup.own_len; i++) dE[(size_t)j * f.soup.own_len + i] = f.alpha[j] * g[f.soup.own_lo + i];
    double direct = 0;
    for (size_t i = 0; i < (size_t)f.n * f.soup.own_len; i++) direct += (double)dE[i] * dE[i];
    double closed = ladle_soup_grad_sumsq(&f.soup, f.alpha, g);
    EXPECT(&counts, rel_err(direct, closed, 1e-30) < 1e-5, "expert grad sumsq %g vs %g", closed, direct);

    ladle_router_cache_free(&cache);
    free(g); free(dalpha); free(drouter); free(dh); free(dE); free(a0);
    fixture_free(&f);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    check_soup(0, LADLE_ALPHA_RAW, 0);
    check_soup(1, LADLE_ALPHA_RAW, 0);
    check_soup(0, LADLE_ALPHA_SOFTMAX, 0);
    check_soup(0, LADLE_ALPHA_RAW, 2);
    check_soup(1, LADLE_ALPHA_SOFTMAX, 3);
    int rc = test_summary(&counts, "test_soup");
    MPI_Finalize();
    return rc;
}
