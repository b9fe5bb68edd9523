/* dump_model: write one forward/backward pass and a short AdamW run of the C model to a
 * directory, for the independent PyTorch reference (test/torch_ref.py) to check.
 *
 *   dump_model OUTDIR [key=value ...]
 *
 * Files written to OUTDIR (raw little-endian float32 unless noted):
 *   params.bin            the flat parameter vector, as used for the pass
 *   grads.bin             d(mean loss)/d(params), grad_scale 1/(B*T)
 *   logits.bin            [B, T, 256]
 *   tokens.bin targets.bin  [B, T] uint8
 *   manifest.txt          resolved configuration ("key = value"), then "B n", "n_params n",
 *                         "loss x", and one "tensor NAME OFFSET ROWS COLS" line per tensor
 *   losses.txt            the mean loss before each of cfg.steps AdamW steps on the same batch
 *   steps.txt             per step: "t lr grad_norm clip_factor" (diagnostics)
 *
 * With soup.experts = n > 0 the model is a Soup-of-Experts (METHODS.md section 1) with a
 * fixed domain weight vector h over K_DOMAINS = 5 domains; one process owns everything
 * (a shard over MPI_COMM_SELF). params.bin is then S, logits and loss are those of
 * Theta = S + sum_j alpha_j E_j, grads.bin is g = dS, and additionally:
 *   theta.bin             Theta (the merged flat vector)
 *   experts.bin           [n x (bank_hi - bank_lo)] the bank, expert j's part of the range
 *   expert_grads.bin      [n x (bank_hi - bank_lo)] dE_j = alpha_j g on the bank range, as
 *                         ladle_soup_adamw forms it (read back from a probe call)
 *   router.bin            the router's flat parameters (router_tensor lines)
 *   router_grads.bin      d(loss)/d(router parameters), from ladle_router_backward
 *   h.bin alpha.bin       [k] the domain weights, [n] alpha = router(h)
 *   dalpha.bin            [n] dalpha_j = <E_j, g>, from ladle_soup_backward
 * and the manifest adds "soup n", "k K", "bank_lo", "bank_hi", "router_params" and one
 * "router_tensor NAME OFFSET ROWS COLS" line per router tensor. losses.txt / steps.txt
 * are then cfg.steps full soup steps as ladle_trainer_step takes them (single process),
 * on the same batch and the same h; grad_norm is the global norm over S, E, the low-rank
 * factors and the router. After them: params_final.bin (S), experts_final.bin,
 * router_final.bin.
 *
 * With low-rank experts (soup.rank = r > 0) there is no dense bank: experts.bin,
 * expert_grads.bin and experts_final.bin are empty, and instead
 *   lowrank.bin           [q] the low-rank factors as initialised (soup.lowrank)
 *   lowrank_grads.bin     [q] their gradients, from ladle_soup_backward
 *   lowrank_final.bin     [q] the factors after the cfg.steps soup steps
 * with the manifest adding "lowrank_size q", "sites N" and one
 * "site NAME ROWS COLS U V" line per matrix with experts: U [ROWS x n r] at offset U and
 * V [COLS x n r] at offset V of that vector, row-major, column j r + s of expert j.
 *
 * Not an MPI program (run it without mpiexec); MPI is initialised only because the
 * library's error paths use it. */
#include "ladle/config.h"
#include "ladle/error.h"
#include "ladle/model.h"
#include "ladle/optim.h"
#include "ladle/rng.h"
#include "ladle/router.h"
#include "ladle/shard.h"
#include "ladle/soup.h"

#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

/* Defaults of this tool, applied before the command-line overrides: a small model and
 * an optimizer setting that exercises warmup, cosine decay, weight decay and clipping. */
static const char *const TOOL_DEFAULTS[] = {
    "model.layers=2", "model.dim=32", "model.heads=4", "model.context=16",
    "model.init_std=0.1", "train.batch=3", "train.steps=10", "train.warmup=3",
    "train.clip=0.5", "train.weight_decay=0.1", "train.lr=1e-2", "train.seed=7",
    "router.hidden=16", "soup.expert_init_std=0.05",
};

/* The soup's fixed domain weights: non-uniform, on the simplex. */
#define K_DOMAINS 5
static const float FIXED_H[K_DOMAINS] = {0.40f, 0.10f, 0.25f, 0.05f, 0.20f};

static int apply_override(ladle_config *cfg, const char *arg)
{
    char key[256], err[512];
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg || (size_t)(eq - arg) >= sizeof key) {
        fprintf(stderr, "dump_model: expected key=value, got '%s'\n", arg);
        return -1;
    }
    memcpy(key, arg, (size_t)(eq - arg));
    key[eq - arg] = '\0';
    if (ladle_config_set(cfg, key, eq + 1, err, sizeof err) != 0) {
        fprintf(stderr, "dump_model: %s\n", err);
        return -1;
    }
    return 0;
}

static FILE *open_out(const char *dir, const char *name, const char *mode)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, mode);
    if (!f) LADLE_FAIL("cannot create %s: %s", path, strerror(errno));
    return f;
}

static void close_out(FILE *f, const char *dir, const char *name)
{
    if (ferror(f) | fclose(f)) LADLE_FAIL("error writing %s/%s", dir, name);
}

static void write_raw(const char *dir, const char *name, const void *data, size_t bytes)
{
    FILE *f = open_out(dir, name, "wb");
    if (bytes && fwrite(data, 1, bytes, f) != bytes) LADLE_FAIL("short write to %s/%s", dir, name);
    close_out(f, dir, name);
}

static double sum_squares(const float *x, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
    return s;
}

static void write_tensor_lines(FILE *f, const char *tag, const ladle_tensor *tensors, int n_tensors)
{
    for (int ti = 0; ti < n_tensors; ti++) {
        const ladle_tensor *t = &tensors[ti];
        fprintf(f, "%s %s %zu %d %d\n", tag, t->name, t->offset, t->shape[0], t->ndim == 2 ? t->shape[1] : 1);
    }
}

/* soup and router are NULL for a dense model */
static void write_manifest(const char *dir, const ladle_config *cfg, const ladle_model *model, int B, double loss,
                           const ladle_soup *soup, const ladle_router *router)
{
    FILE *f = open_out(dir, "manifest.txt", "w");
    char *text = ladle_config_to_text(cfg);
    fputs(text, f);
    free(text);
    fprintf(f, "B %d\n", B);
    fprintf(f, "n_params %zu\n", model->n_params);
    fprintf(f, "loss %.9g\n", loss);
    write_tensor_lines(f, "tensor", model->tensors, model->n_tensors);
    if (soup) {
        fprintf(f, "soup %d\n", soup->n);
        fprintf(f, "k %d\n", router->k);
        fprintf(f, "bank_lo %zu\n", soup->bank_lo);
        fprintf(f, "bank_hi %zu\n", soup->bank_hi);
        fprintf(f, "router_params %zu\n", router->n_params);
        write_tensor_lines(f, "router_tensor", router->tensors, 4);
        if (soup->rank > 0) {
            fprintf(f, "lowrank_size %zu\n", soup->lowrank_size);
            fprintf(f, "sites %d\n", soup->n_sites);
            for (int s = 0; s < soup->n_sites; s++) {
                const ladle_tensor *t = &model->tensors[soup->sites[s].tensor];
                fprintf(f, "site %s %d %d %zu %zu\n", t->name, t->shape[0], t->shape[1], soup->sites[s].u,
                        soup->sites[s].v);
            }
        }
    }
    close_out(f, dir, "manifest.txt");
}

/* The Soup-of-Experts dumps (see the top of the file). params holds S, already initialised
 * as for the dense dumps; everything else is created here. */
static void run_soup(const char *dir, const ladle_config *cfg, const ladle_model *model, float *params,
                     ladle_activations *acts, const uint8_t *tokens, const uint8_t *targets)
{
    const int B = cfg->batch, T = cfg->context, n = cfg->experts, k = K_DOMAINS;
    const size_t BT = (size_t)B * (size_t)T, np = model->n_params;
    const uint64_t seed = (uint64_t)cfg->seed;
    const float grad_scale = 1.0f / (float)BT;

    /* one process owns the whole vector: slice = n_params, [lo, hi) = [0, n_params) */
    ladle_shard shard;
    ladle_shard_create(&shard, np, MPI_COMM_SELF);
    LADLE_CHECK(shard.lo == 0 && shard.hi == np && shard.slice == np, "single-rank shard is not the whole vector");
    ladle_soup soup;
    ladle_soup_create(&soup, model, &shard, n, cfg->experts_on, cfg->expert_rank);
    ladle_soup_init(&soup, model, cfg->expert_init_std, seed);
    /* dense experts own the whole bank range; low-rank ones have no dense part */
    LADLE_CHECK(soup.own_lo == soup.bank_lo &&
                soup.own_len == (soup.rank > 0 ? 0 : soup.bank_hi - soup.bank_lo),
                "single-rank soup does not own the whole bank range");
    LADLE_CHECK((soup.rank > 0) == (cfg->expert_rank > 0) && (soup.rank == 0 || soup.n_sites > 0),
                "soup.rank = %d gave a soup of rank %d with %d low-rank sites", cfg->expert_rank, soup.rank,
                soup.n_sites);
    const size_t pb = soup.own_len, q = soup.lowrank_size;
    /* the factors as initialised: the training steps below update soup.lowrank in place */
    float *lowrank_init = ladle_malloc(q * sizeof(float), "initial low-rank factors");
    if (q) memcpy(lowrank_init, soup.lowrank, q * sizeof(float));

    ladle_router router;
    ladle_router_configure(&router, k, n, cfg);
    const size_t nr = router.n_params;
    float *rparams = ladle_malloc(nr * sizeof(float), "router parameters");
    float *rgrads = ladle_calloc(nr, sizeof(float), "router gradients");
    float *rm = ladle_calloc(nr, sizeof(float), "router adam m");
    float *rv = ladle_calloc(nr, sizeof(float), "router adam v");
    ladle_router_init(&router, rparams, seed);
    ladle_router_cache cache;
    ladle_router_cache_create(&cache, &router);

    float h[K_DOMAINS];
    memcpy(h, FIXED_H, sizeof h);
    float *alpha = ladle_malloc((size_t)n * sizeof(float), "alpha");
    float *dalpha = ladle_malloc((size_t)n * sizeof(float), "dalpha");
    float *theta = ladle_malloc(np * sizeof(float), "theta");
    float *grads = ladle_calloc(np, sizeof(float), "grads");
    float *m = ladle_calloc(np, sizeof(float), "adam m");
    float *v = ladle_calloc(np, sizeof(float), "adam v");

    /* ---- one pass at the initial parameters, each piece as ladle_trainer_step does it ---- */
    ladle_router_forward(&router, rparams, h, alpha, NULL);
    ladle_soup_merge(&soup, model, alpha, params, theta, np);
    double loss = ladle_model_forward(model, theta, acts, tokens, targets, B) / (double)BT;
    ladle_model_backward(model, theta, grads, acts, tokens, targets, B, grad_scale);
    memset(dalpha, 0, (size_t)n * sizeof(float));
    ladle_soup_backward(&soup, model, alpha, grads, shard.slice, dalpha, soup.lowrank_grad);
    ladle_router_forward(&router, rparams, h, cache.alpha, &cache);
    ladle_router_backward(&router, rparams, h, &cache, dalpha, rgrads, NULL);

    /* dE_j = alpha_j g is never stored: ladle_soup_adamw forms it on the fly. Read it out
     * of the optimizer itself: one ladle_soup_adamw call on a probe copy of the bank with
     * beta1 = 0 (so the first moment becomes exactly the gradient it was given), lr = 0
     * and grad_factor 1; the probe's adam_m is then dE, as the real update uses it.
     * The probe has its own copies of everything ladle_soup_adamw writes, the low-rank
     * factors and their moments included: the real moments must stay zero for step 1. */
    ladle_soup probe = soup;
    probe.experts = ladle_malloc((size_t)n * pb * sizeof(float), "probe bank");
    if (pb) memcpy(probe.experts, soup.experts, (size_t)n * pb * sizeof(float));
    probe.adam_m = ladle_calloc((size_t)n * pb, sizeof(float), "expert gradients");
    probe.adam_v = ladle_calloc((size_t)n * pb, sizeof(float), "probe second moment");
    probe.lowrank = ladle_malloc(q * sizeof(float), "probe low-rank factors");
    if (q) memcpy(probe.lowrank, soup.lowrank, q * sizeof(float));
    probe.lowrank_m = ladle_calloc(q, sizeof(float), "probe low-rank first moment");
    probe.lowrank_v = ladle_calloc(q, sizeof(float), "probe low-rank second moment");
    ladle_config probe_cfg = *cfg;
    probe_cfg.beta1 = 0.0f;
    ladle_soup_adamw(&probe, model, &probe_cfg, alpha, grads, 1, 0.0f, 1.0f);
    float *egrads = probe.adam_m;
    /* the low-rank gradient the optimizer consumes is lowrank_grad itself (beta1 = 0,
     * grad_factor 1: m = g exactly); make sure it did, and that lr = 0 left U, V alone */
    for (size_t i = 0; i < q; i++)
        LADLE_CHECK(probe.lowrank_m[i] == soup.lowrank_grad[i] && probe.lowrank[i] == soup.lowrank[i],
                    "ladle_soup_adamw probe: low-rank element %zu: m %g, gradient %g", i,
                    (double)probe.lowrank_m[i], (double)soup.lowrank_grad[i]);
    free(probe.experts);
    free(probe.adam_v);
    free(probe.lowrank);
    free(probe.lowrank_m);
    free(probe.lowrank_v);

    write_raw(dir, "params.bin", params, np * sizeof(float));
    write_raw(dir, "theta.bin", theta, np * sizeof(float));
    write_raw(dir, "grads.bin", grads, np * sizeof(float));
    write_raw(dir, "experts.bin", soup.experts, (size_t)n * pb * sizeof(float));
    write_raw(dir, "expert_grads.bin", egrads, (size_t)n * pb * sizeof(float));
    write_raw(dir, "lowrank.bin", lowrank_init, q * sizeof(float));
    write_raw(dir, "lowrank_grads.bin", soup.lowrank_grad, q * sizeof(float));
    write_raw(dir, "router.bin", rparams, nr * sizeof(float));
    write_raw(dir, "router_grads.bin", rgrads, nr * sizeof(float));
    write_raw(dir, "h.bin", h, sizeof h);
    write_raw(dir, "alpha.bin", alpha, (size_t)n * sizeof(float));
    write_raw(dir, "dalpha.bin", dalpha, (size_t)n * sizeof(float));
    write_raw(dir, "logits.bin", acts->logits, BT * LADLE_VOCAB * sizeof(float));
    write_raw(dir, "tokens.bin", tokens, BT);
    write_raw(dir, "targets.bin", targets, BT);
    write_manifest(dir, cfg, model, B, loss, &soup, &router);
    free(egrads);

    /* ---- cfg.steps soup steps on the same batch and the same h: ladle_trainer_step's
     * sequence on one rank (router forward, merge, forward/backward, global norm over S,
     * E, the low-rank factors and the router, clip, AdamW on S, on the bank (dense or
     * low-rank) and on the router) ---- */
    FILE *fl = open_out(dir, "losses.txt", "w");
    FILE *fs = open_out(dir, "steps.txt", "w");
    for (long t = 1; t <= cfg->steps; t++) {
        ladle_router_forward(&router, rparams, h, alpha, NULL);
        ladle_soup_merge(&soup, model, alpha, params, theta, shard.slice);
        memset(grads, 0, np * sizeof(float));
        double step_loss = ladle_model_forward(model, theta, acts, tokens, targets, B) / (double)BT;
        ladle_model_backward(model, theta, grads, acts, tokens, targets, B, grad_scale);
        double sumsq = sum_squares(grads, np) + ladle_soup_grad_sumsq(&soup, alpha, grads);
        memset(dalpha, 0, (size_t)n * sizeof(float));
        ladle_soup_backward(&soup, model, alpha, grads, shard.slice, dalpha, soup.lowrank_grad);
        memset(rgrads, 0, nr * sizeof(float));
        ladle_router_forward(&router, rparams, h, cache.alpha, &cache);
        ladle_router_backward(&router, rparams, h, &cache, dalpha, rgrads, NULL);
        /* one process: ladle_soup_reduce_lowrank would be a no-op */
        sumsq += ladle_soup_lowrank_sumsq(&soup);
        sumsq += sum_squares(rgrads, nr);
        double norm = sqrt(sumsq);
        float factor = ladle_clip_factor(cfg, norm);
        float lr = ladle_lr_at(cfg, t - 1);
        ladle_adamw_update(model->tensors, model->n_tensors, cfg, params, grads, m, v, 0, np, t, lr, factor);
        ladle_soup_adamw(&soup, model, cfg, alpha, grads, t, lr, factor);
        ladle_adamw_update(router.tensors, 4, cfg, rparams, rgrads, rm, rv, 0, nr, t, lr, factor);
        fprintf(fl, "%.9g\n", step_loss);
        fprintf(fs, "%ld %.9g %.9g %.9g\n", t, (double)lr, norm, (double)factor);
    }
    close_out(fl, dir, "losses.txt");
    close_out(fs, dir, "steps.txt");
    write_raw(dir, "params_final.bin", params, np * sizeof(float));
    write_raw(dir, "experts_final.bin", soup.experts, (size_t)n * pb * sizeof(float));
    write_raw(dir, "router_final.bin", rparams, nr * sizeof(float));
    write_raw(dir, "lowrank_final.bin", soup.lowrank, q * sizeof(float));

    printf("dump_model: %s: soup of %d experts over [%zu, %zu) of %zu parameters, router %zu, B=%d T=%d, "
           "loss %.6f\n", dir, n, soup.bank_lo, soup.bank_hi, np, nr, B, T, loss);
    if (soup.rank > 0)
        printf("dump_model: %s: rank-%d experts on %d matrices, %zu low-rank parameters\n", dir, soup.rank,
               soup.n_sites, q);
    free(lowrank_init);

    ladle_router_cache_free(&cache);
    free(rparams); free(rgrads); free(rm); free(rv);
    free(alpha); free(dalpha); free(theta); free(grads); free(m); free(v);
    ladle_soup_free(&soup);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: dump_model OUTDIR [key=value ...]\n");
        MPI_Finalize();
        return 2;
    }
    {   /* the files are written as the host's float32: make sure that is little-endian */
        const uint32_t one = 1;
        unsigned char first;
        memcpy(&first, &one, 1);
        if (first != 1) {
            fprintf(stderr, "dump_model: big-endian host, the raw dumps would be misread\n");
            MPI_Finalize();
            return 1;
        }
    }
    const char *dir = argv[1];

    ladle_config cfg;
    ladle_config_defaults(&cfg);
    for (size_t i = 0; i < sizeof TOOL_DEFAULTS / sizeof TOOL_DEFAULTS[0]; i++)
        if (apply_override(&cfg, TOOL_DEFAULTS[i]) != 0) { MPI_Finalize(); return 2; }
    for (int i = 2; i < argc; i++)
        if (apply_override(&cfg, argv[i]) != 0) { MPI_Finalize(); return 2; }
    char err[512];
    if (ladle_config_validate(&cfg, err, sizeof err) != 0) {
        fprintf(stderr, "dump_model: %s\n", err);
        MPI_Finalize();
        return 2;
    }
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) LADLE_FAIL("cannot create %s: %s", dir, strerror(errno));

    const int B = cfg.batch, T = cfg.context;
    const size_t BT = (size_t)B * (size_t)T;
    const uint64_t seed = (uint64_t)cfg.seed;

    ladle_model model;
    ladle_model_create(&model, &cfg);
    const size_t n = model.n_params;
    float *params = ladle_malloc(n * sizeof(float), "params");
    float *grads = ladle_calloc(n, sizeof(float), "grads");
    float *m = ladle_calloc(n, sizeof(float), "adam m");
    float *v = ladle_calloc(n, sizeof(float), "adam v");
    ladle_model_init_range(&model, params, 0, n, seed);
    /* The constant-initialised tensors (layernorm gains 1, biases 0) get a deterministic
     * perturbation, so that their gradients are generic and a forward pass that ignored
     * a gain or a bias would change the logits. */
    for (int ti = 0; ti < model.n_tensors; ti++) {
        const ladle_tensor *t = &model.tensors[ti];
        if (t->init_std > 0) continue;
        for (size_t j = 0; j < t->size; j++)
            params[t->offset + j] += 0.1f * ladle_rng_normal(seed + 1000, (uint64_t)ti, 99, j);
    }

    uint8_t *tokens = ladle_malloc(BT, "tokens"), *targets = ladle_malloc(BT, "targets");
    for (size_t i = 0; i < BT; i++) {
        tokens[i] = (uint8_t)ladle_rng_below(seed + 2000, 0, 1, i, 256);
        targets[i] = (uint8_t)ladle_rng_below(seed + 2000, 0, 2, i, 256);
    }

    ladle_activations acts;
    ladle_activations_create(&acts, &model, B);
    const float grad_scale = 1.0f / (float)BT;

    if (cfg.experts > 0) {
        run_soup(dir, &cfg, &model, params, &acts, tokens, targets);
        ladle_activations_free(&acts);
        free(params); free(grads); free(m); free(v);
        free(tokens); free(targets);
        ladle_model_free(&model);
        MPI_Finalize();
        return 0;
    }

    /* ---- one forward + backward at the initial parameters ---- */
    double loss = ladle_model_forward(&model, params, &acts, tokens, targets, B) / (double)BT;
    ladle_model_backward(&model, params, grads, &acts, tokens, targets, B, grad_scale);

    write_raw(dir, "params.bin", params, n * sizeof(float));
    write_raw(dir, "grads.bin", grads, n * sizeof(float));
    write_raw(dir, "logits.bin", acts.logits, BT * LADLE_VOCAB * sizeof(float));
    write_raw(dir, "tokens.bin", tokens, BT);
    write_raw(dir, "targets.bin", targets, BT);

    write_manifest(dir, &cfg, &model, B, loss, NULL, NULL);

    /* ---- cfg.steps AdamW steps on the same batch ---- */
    FILE *fl = open_out(dir, "losses.txt", "w");
    FILE *fs = open_out(dir, "steps.txt", "w");
    for (long t = 1; t <= cfg.steps; t++) {
        memset(grads, 0, n * sizeof(float));
        double step_loss = ladle_model_forward(&model, params, &acts, tokens, targets, B) / (double)BT;
        ladle_model_backward(&model, params, grads, &acts, tokens, targets, B, grad_scale);
        double norm = sqrt(sum_squares(grads, n));
        float factor = ladle_clip_factor(&cfg, norm);
        float lr = ladle_lr_at(&cfg, t - 1);
        ladle_adamw_update(model.tensors, model.n_tensors, &cfg, params, grads, m, v, 0, n, t, lr, factor);
        fprintf(fl, "%.9g\n", step_loss);
        fprintf(fs, "%ld %.9g %.9g %.9g\n", t, (double)lr, norm, (double)factor);
    }
    close_out(fl, dir, "losses.txt");
    close_out(fs, dir, "steps.txt");

    printf("dump_model: %s: %zu parameters, B=%d T=%d, loss %.6f\n", dir, n, B, T, loss);

    ladle_activations_free(&acts);
    free(params); free(grads); free(m); free(v);
    free(tokens); free(targets);
    ladle_model_free(&model);
    MPI_Finalize();
    return 0;
}
