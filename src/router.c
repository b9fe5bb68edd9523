/* router: the Soup-of-Experts router MLP (see router.h and METHODS.md section 1).
 *
 * It runs once per step on one input h, so both linear layers are matmuls with N = 1:
 * tiny, but they go through the same BLIS-backed kernels as the model so there is one
 * implementation of a linear layer to trust. */
#include "ladle/router.h"
#include "ladle/error.h"
#include "ladle/kernels.h"
#include "ladle/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The stream of the router's initial weights: apart from the model's INIT stream, whose
 * step (tensor id) range would otherwise collide with the router's tensor ids 0..3. */
#define ROUTER_INIT_STREAM (LADLE_STREAM_INIT + 100)

enum { W1, B1, W2, B2 };

static void set_tensor(ladle_router *r, int i, const char *name, int rows, int cols, int decay)
{
    /* init_std = init_value = 0: the uniform init is ladle_router_init's, not the
     * model's normal/constant scheme */
    r->tensors[i] = ladle_tensor_make(name, rows, cols, r->n_params, decay);
    r->n_params += r->tensors[i].size;
}

void ladle_router_create(ladle_router *router, int k, int hidden, int n, ladle_alpha_kind alpha_kind)
{
    LADLE_CHECK(k > 0 && hidden > 0 && n > 0, "bad router shape k %d, hidden %d, n %d", k, hidden, n);
    LADLE_CHECK(alpha_kind == LADLE_ALPHA_RAW || alpha_kind == LADLE_ALPHA_SOFTMAX, "bad router alpha kind %d",
                (int)alpha_kind);
    memset(router, 0, sizeof *router);
    router->k = k;
    router->hidden = hidden;
    router->n = n;
    router->alpha_kind = alpha_kind;
    router->scale = 1.0f;
    set_tensor(router, W1, "router.w1", hidden, k, 1);
    set_tensor(router, B1, "router.b1", hidden, 0, 0);
    set_tensor(router, W2, "router.w2", n, hidden, 1);
    set_tensor(router, B2, "router.b2", n, 0, 0);
}

void ladle_router_configure(ladle_router *router, int k, int n, const ladle_config *cfg)
{
    ladle_router_create(router, k, cfg->router_hidden, n, (ladle_alpha_kind)cfg->router_alpha);
    router->scale = cfg->router_scale;
}

void ladle_router_init(const ladle_router *router, float *params, uint64_t seed)
{
    for (int i = 0; i < 4; i++) {
        const ladle_tensor *t = &router->tensors[i];
        /* nn.Linear: fan_in is the layer's input width, for its bias too */
        int fan_in = (i == W1 || i == B1) ? router->k : router->hidden;
        float bound = 1.0f / sqrtf((float)fan_in);
        for (size_t j = 0; j < t->size; j++) {
            float u = ladle_rng_uniform(seed, (uint64_t)i, ROUTER_INIT_STREAM, (uint64_t)j);
            params[t->offset + j] = (2.0f * u - 1.0f) * bound;
        }
    }
}

void ladle_router_cache_create(ladle_router_cache *cache, const ladle_router *router)
{
    cache->pre = ladle_malloc((size_t)router->hidden * sizeof(float), "router cache");
    cache->hidden = ladle_malloc((size_t)router->hidden * sizeof(float), "router cache");
    cache->alpha = ladle_malloc((size_t)router->n * sizeof(float), "router cache");
}

void ladle_router_cache_free(ladle_router_cache *cache)
{
    free(cache->pre);
    free(cache->hidden);
    free(cache->alpha);
    cache->pre = cache->hidden = cache->alpha = NULL;
}

/* In place, max-subtracted so that large logits do not overflow. */
static void softmax_inplace(float *x, int n)
{
    float m = x[0];
    for (int j = 1; j < n; j++) m = x[j] > m ? x[j] : m;
    double sum = 0.0;
    for (int j = 0; j < n; j++) {
        x[j] = expf(x[j] - m);
        sum += x[j];
    }
    float inv = (float)(1.0 / sum);
    for (int j = 0; j < n; j++) x[j] *= inv;
}

void ladle_router_forward(const ladle_router *router, const float *params, const float *h, float *alpha,
                          ladle_router_cache *cache)
{
    const int k = router->k, H = router->hidden, n = router->n;
    const ladle_tensor *t = router->tensors;
    ladle_router_cache scratch = {0};
    ladle_router_cache *c = cache;
    if (!c) {
        ladle_router_cache_create(&scratch, router);
        c = &scratch;
    }
    matmul_forward(c->pre, h, params + t[W1].offset, params + t[B1].offset, 1, k, H);
    for (int i = 0; i < H; i++) c->hidden[i] = c->pre[i] > 0.0f ? c->pre[i] : 0.0f;
    matmul_forward(alpha, c->hidden, params + t[W2].offset, params + t[B2].offset, 1, H, n);
    if (router->alpha_kind == LADLE_ALPHA_SOFTMAX) softmax_inplace(alpha, n);
    if (router->scale != 1.0f)
        for (int j = 0; j < n; j++) alpha[j] *= router->scale;
    if (cache && cache->alpha != alpha) memcpy(cache->alpha, alpha, (size_t)n * sizeof(float));
    else ladle_router_cache_free(&scratch);
}

void ladle_router_backward(const ladle_router *router, const float *params, const float *h,
                           const ladle_router_cache *cache, const float *dalpha, float *dparams, float *dh_out)
{
    LADLE_CHECK(cache && cache->pre && cache->hidden && cache->alpha, "router backward needs the forward cache");
    const int k = router->k, H = router->hidden, n = router->n;
    const ladle_tensor *t = router->tensors;
    /* one block: dz [n] | dhidden [H] | dh [k] (the gradient w.r.t. the input h, which
     * only fitting the weights of a frozen soup needs) */
    float *work = ladle_calloc((size_t)n + (size_t)H + (size_t)k, sizeof(float), "router backward");
    float *dz = work, *dhid = work + n, *dh = work + n + H;

    /* alpha = s a with a the (softmaxed) output: da = s dalpha, and the cache holds s a */
    const float s = router->scale;
    if (router->alpha_kind == LADLE_ALPHA_SOFTMAX) {
        /* softmax Jacobian: dz_j = a_j (da_j - sum_i a_i da_i), here with a = alpha / s */
        double dot = 0.0;
        for (int j = 0; j < n; j++) dot += (double)cache->alpha[j] * dalpha[j];
        for (int j = 0; j < n; j++) dz[j] = cache->alpha[j] * (dalpha[j] - (float)(dot / s));
    } else {
        for (int j = 0; j < n; j++) dz[j] = s * dalpha[j];
    }
    matmul_backward(dhid, dparams + t[W2].offset, dparams + t[B2].offset, dz, cache->hidden,
                    params + t[W2].offset, 1, H, n);
    /* ReLU: the gradient passes where the pre-activation was positive (0 at the kink) */
    for (int i = 0; i < H; i++) dhid[i] = cache->pre[i] > 0.0f ? dhid[i] : 0.0f;
    matmul_backward(dh, dparams + t[W1].offset, dparams + t[B1].offset, dhid, h, params + t[W1].offset, 1, k, H);
    if (dh_out)
        for (int i = 0; i < k; i++) dh_out[i] += dh[i];
    free(work);
}
