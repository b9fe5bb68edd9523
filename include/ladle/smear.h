/* smear: SMEAR (soft merging of experts with adaptive routing) at one FFN site, causal.
 *
 * The site holds N experts, each an FFN C -> H -> C: w1 [N, H, C], b1 [N, H],
 * w2 [N, C, H], b2 [N, C], activation act between the two linear layers. By default
 * H = 4C and act = GELU (tanh approximation): full FFN experts. With dims.hidden = r and
 * dims.swish = 1 they are bottleneck adapters C -> r -> C with swish x * sigmoid(x)
 * (METHODS.md section 2). The layer returns only the experts' output y; any residual is
 * the caller's. Each sequence is cut into segments of S tokens (S divides T).
 * Segment s of sequence b is routed on the mean of the site's input x over the
 * PREVIOUS segment (positions [(s-1) S, s S)); segment 0 on learned default logits.
 * Router (from the paper's code): z = LN(mean) (LayerNorm with gain/bias [C]);
 * logits_i = < LN0(w_i) * g_i , z > where w_i [C] is expert i's router vector, LN0 is a
 * LayerNorm without affine parameters and g_i [C] its gain (init 1e-2); p = softmax.
 * Training only: "expert dropout" zeroes each p_i with probability `dropout` (counter
 * RNG of (seed, step, global sequence, segment, expert)) and renormalises.
 * The segment's tokens then go through ONE expert-shaped FFN whose parameters are
 * sum_i p_i W_i.
 * Nothing at position t depends on positions > t.
 *
 * Tag routing (the paper's metadata baseline) is the same layer with p = one-hot of
 * the sequence's label (label mod N) and no router. */
#ifndef LADLE_SMEAR_H
#define LADLE_SMEAR_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int N;              /* experts */
    int segment;        /* tokens per routing segment; divides T */
    float dropout;      /* expert dropout probability in training */
    int tag;            /* 1: route by label (tag routing), no router */
    int hidden;         /* expert hidden width H; 0: 4 C (full FFN experts) */
    int swish;          /* expert activation: 0 GELU (tanh approximation), 1 swish x * sigmoid(x) */
} ladle_smear_dims;

/* The experts' hidden width H for model width C: dims->hidden, or 4 C when it is 0. */
static inline int ladle_smear_hidden(const ladle_smear_dims *dims, int C)
{
    return dims->hidden > 0 ? dims->hidden : 4 * C;
}

/* Router parameters: ln_w [C], ln_b [C], w [N, C], g [N, C], default_logits [N]. */
typedef struct {
    const float *ln_w, *ln_b, *w, *g, *default_logits;
} ladle_smear_router;
typedef struct {
    float *ln_w, *ln_b, *w, *g, *default_logits;
} ladle_smear_router_grads;

typedef struct ladle_smear_cache ladle_smear_cache;

ladle_smear_cache *ladle_smear_cache_create(int B, int T, int C, const ladle_smear_dims *dims);
/* Bytes the cache holds (for memory plans). */
size_t ladle_smear_cache_bytes(const ladle_smear_cache *cache);
void ladle_smear_cache_free(ladle_smear_cache *cache);

/* Context of a forward: training (dropout on) or not, and the counters that make the
 * dropout a pure function of the global sequence index. labels [B] (tag routing; may be
 * NULL otherwise). */
typedef struct {
    int training;
    uint64_t seed, step;
    long first_sequence;     /* global index of sequence 0 of this batch */
    const int *labels;
} ladle_smear_context;

void smear_forward(float *out, ladle_smear_cache *cache, const float *inp, const ladle_smear_router *router,
                   const float *w1, const float *b1, const float *w2, const float *b2, int B, int T, int C,
                   const ladle_smear_dims *dims, const ladle_smear_context *ctx);

/* Accumulates (+=) into dinp, the router's and the experts' gradients. */
void smear_backward(float *dinp, ladle_smear_router_grads *drouter, float *dw1, float *db1, float *dw2, float *db2,
                    const float *dout, const ladle_smear_cache *cache, const float *inp,
                    const ladle_smear_router *router, const float *w1, const float *b1, const float *w2,
                    const float *b2, int B, int T, int C, const ladle_smear_dims *dims);

/* Routing probabilities of the last forward: [B, T / segment, N] (UNCURL, analysis). */
const float *ladle_smear_probs(const ladle_smear_cache *cache);

#endif
