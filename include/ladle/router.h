/* router: Soup-of-Experts' router phi_omega, domain weights h (k) -> expert
 * coefficients alpha (n): Linear(k, H) -> ReLU -> Linear(H, n), then alpha raw or softmax.
 *
 * Its parameters omega are tiny and replicated on every rank, in one flat vector
 * described by a tensor table (router.w1 [H, k], router.b1 [H], router.w2 [n, H],
 * router.b2 [n]), so AdamW and model files treat them like the model's tensors. Every
 * rank computes the same forward and backward from the same (broadcast) inputs. */
#ifndef LADLE_ROUTER_H
#define LADLE_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "ladle/config.h"
#include "ladle/model.h"

typedef enum { LADLE_ALPHA_RAW = 0, LADLE_ALPHA_SOFTMAX = 1 } ladle_alpha_kind;

typedef struct {
    int k, hidden, n;
    ladle_alpha_kind alpha_kind;
    float scale;        /* alpha = scale x output (router.scale; 1 from ladle_router_create) */
    ladle_tensor tensors[4];
    size_t n_params;
} ladle_router;

void ladle_router_create(ladle_router *router, int k, int hidden, int n, ladle_alpha_kind alpha_kind);
/* The same with the shape and alpha of a configuration (router.hidden, router.alpha,
 * router.scale), for n experts over k domains. */
void ladle_router_configure(ladle_router *router, int k, int n, const ladle_config *cfg);

/* PyTorch's nn.Linear default: weights and biases uniform in +-1/sqrt(fan_in), from the
 * counter RNG (seed, tensor, index), so every rank initialises identically. */
void ladle_router_init(const ladle_router *router, float *params, uint64_t seed);

/* What backward needs from forward: hidden pre-activations [H] and alpha [n]. */
typedef struct {
    float *pre;     /* [H] */
    float *hidden;  /* [H] relu(pre) */
    float *alpha;   /* [n] */
} ladle_router_cache;

void ladle_router_cache_create(ladle_router_cache *cache, const ladle_router *router);
void ladle_router_cache_free(ladle_router_cache *cache);

/* alpha = phi(h); cache may be NULL. */
void ladle_router_forward(const ladle_router *router, const float *params, const float *h, float *alpha,
                          ladle_router_cache *cache);
/* dparams += d(phi)/d(omega)^T dalpha, given the cache of the forward at h; and, if
 * dh is not NULL, dh += d(phi)/dh^T dalpha. */
void ladle_router_backward(const ladle_router *router, const float *params, const float *h,
                           const ladle_router_cache *cache, const float *dalpha, float *dparams, float *dh);

#endif
