/* moe: a token-routed mixture of FFN experts at one FFN site (Switch Transformer style).
 *
 * Shapes: N = B*T tokens of C features, H = 4C hidden, Z experts. Parameters (each a
 * tensor of the model's table): router [Z, C] (no bias), w1 [Z, H, C], b1 [Z, H],
 * w2 [Z, C, H], b2 [Z, C]. Each token goes to its top-k experts by router probability
 * p = softmax(router x); the output is sum over its k experts of p_e * FFN_e(x) (Switch:
 * k = 1, scaled by the gate). With a capacity factor cf > 0 an expert takes at most
 * ceil(cf * T * k / Z) tokens of each SEQUENCE (in token order); the rest are dropped
 * (their FFN output is zero, the residual passes them through).
 *
 * Load balancing (Switch): per sequence, L_aux = Z * sum_e f_e P_e, with f_e the fraction
 * of the sequence's tokens whose top-1 is e and P_e the mean router probability of e;
 * the layer's aux loss is the SUM over sequences (callers scale it, like the LM loss, by
 * 1 / global batch). Per sequence, not per batch, so the loss does not depend on how
 * sequences are split over ranks. The gradient flows through P only (f is a count). */
#ifndef LADLE_MOE_H
#define LADLE_MOE_H

#include <stddef.h>

typedef struct {
    int Z, top_k;
    float capacity_factor;   /* 0: no dropping */
} ladle_moe_dims;

/* What backward needs, sized for N tokens (allocate with ladle_moe_cache_create). */
typedef struct ladle_moe_cache ladle_moe_cache;

ladle_moe_cache *ladle_moe_cache_create(int N, int C, const ladle_moe_dims *dims);
/* Bytes the cache holds (for memory plans). */
size_t ladle_moe_cache_bytes(const ladle_moe_cache *cache);
void ladle_moe_cache_free(ladle_moe_cache *cache);

/* out [N, C] = the layer's output (not including the residual). Returns the SUM over the
 * B sequences of their L_aux. T = tokens per sequence (N = B * T). */
double moe_forward(float *out, ladle_moe_cache *cache, const float *inp, const float *router, const float *w1,
                   const float *b1, const float *w2, const float *b2, int B, int T, int C,
                   const ladle_moe_dims *dims);

/* Accumulates (+=) into dinp and every parameter gradient, from dout and the aux loss's
 * weight aux_scale (d total / d sum-of-L_aux). */
void moe_backward(float *dinp, float *drouter, float *dw1, float *db1, float *dw2, float *db2, const float *dout,
                  const ladle_moe_cache *cache, const float *inp, const float *router, const float *w1,
                  const float *b1, const float *w2, const float *b2, int B, int T, int C,
                  const ladle_moe_dims *dims, float aux_scale);

/* Top-1 choice of every token in the last forward (for UNCURL's statistics): [N]. */
const int *ladle_moe_top1(const ladle_moe_cache *cache);
/* Router logits of the last forward: [N, Z]. */
const float *ladle_moe_logits(const ladle_moe_cache *cache);
/* Router probabilities (softmax of the logits) of the last forward: [N, Z]. */
const float *ladle_moe_probs(const ladle_moe_cache *cache);

#endif
