/* model: the byte-level GPT — its parameter table, initialisation, forward and backward.
 *
 * All parameters live in ONE flat float vector described by a table of named tensors
 * (name, shape, offset). Gradients and AdamW moments are further vectors over the same
 * table. Tensor names are those stored in model files: wte, wpe, h.<l>.ln1.w, ...,
 * lnf.w, lnf.b. The table order is fixed; offsets are dense (no padding). */
#ifndef LADLE_MODEL_H
#define LADLE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "ladle/config.h"
#include "ladle/moe.h"
#include "ladle/smear.h"

#define LADLE_VOCAB 256
#define LADLE_TENSOR_NAME_MAX 48

typedef struct {
    char name[LADLE_TENSOR_NAME_MAX];
    int ndim;
    int shape[2];
    size_t offset, size;
    int decay;            /* 1: weight decay applies (matrices and embeddings) */
    int frozen;           /* 1: the optimizer leaves it alone (train.only) */
    float init_std;       /* 0: constant init_value */
    float init_value;
} ladle_tensor;

/* A tensor of rows x cols (cols = 0: a vector, ndim 1, shape [rows, 1]) at `offset` of its
 * flat vector; init_std = init_value = 0, frozen = 0. */
ladle_tensor ladle_tensor_make(const char *name, int rows, int cols, size_t offset, int decay);

typedef struct {
    int layers, dim, heads, context;   /* L, C, NH, T */
    int ffn_hidden;                    /* dense FFN hidden width (model.ffn_mult * C) */
    int n_tensors;
    ladle_tensor *tensors;
    size_t n_params;
    /* per layer: its FFN site (ladle_ffn_kind), the table index of its first tensor
     * (ln1.w) and of its first FFN-site tensor */
    int *ffn_kind, *layer_first, *site_first;
    /* smear.kind = adapter: per layer LADLE_FFN_SMEAR/TAG if it has two adapter sites (after
     * attention, after the FFN, which is then dense), else 0; their first table index */
    int *adapter_kind, *adapter_first;
    int adapter_width;
    int lnf;                           /* table index of lnf.w */
    ladle_moe_dims moe;
    ladle_smear_dims smear;
    float moe_balance;
} ladle_model;

/* Per-layer parameter views into the flat vector. fc1/fc2 are the dense FFN's (NULL at
 * a routed site). */
typedef struct {
    const float *ln1_w, *ln1_b, *qkv_w, *qkv_b, *proj_w, *proj_b;
    const float *ln2_w, *ln2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} ladle_layer_params;

/* A routed FFN site's parameters: the experts' FFNs, contiguous per kind of tensor
 * (w1 [E, 4C, C], b1 [E, 4C], w2 [E, C, 4C], b2 [E, C]), and the router: MoE's [Z, C],
 * or SMEAR's (absent for tag routing). */
typedef struct {
    const float *w1, *b1, *w2, *b2;
    const float *moe_router;
    ladle_smear_router smear;
} ladle_site_params;

/* What a forward pass needs besides the tokens: training mode (SMEAR's expert dropout),
 * the counters that make dropout a pure function of the global sequence index, and the
 * sequences' domain labels (tag routing). Zero-initialised = evaluation without labels. */
typedef struct {
    int training;
    uint64_t seed, step;
    long first_sequence;
    const int *labels;      /* [B] */
} ladle_forward_context;

/* Forward activations for a batch of B sequences, in one allocation. */
typedef struct {
    int B;
    float *memory;
    float *encoded;                 /* [B,T,C] */
    float *ln1, *ln1_mean, *ln1_rstd; /* [L,B,T,C], [L,B,T] x2 */
    float *qkv;                     /* [L,B,T,3C] */
    float *atty;                    /* [L,B,T,C] */
    float *att;                     /* [L,B,NH,T,T] */
    float *attproj;                 /* [L,B,T,C] */
    float *residual2;               /* [L,B,T,C] */
    float *ln2, *ln2_mean, *ln2_rstd;
    float *fch, *fch_gelu;          /* [L,B,T,ffn_hidden] */
    float *fcproj;                  /* [L,B,T,C] */
    float *residual3;               /* [L,B,T,C] */
    float *lnf, *lnf_mean, *lnf_rstd;
    float *logits, *probs, *losses; /* [B,T,V] x2, [B,T] */
    /* backward scratch, reused layer after layer */
    float *d_memory;
    float *d_residual, *d_ln, *d_atty, *d_qkv, *d_fch, *d_fch_gelu, *d_logits, *d_att_scratch;
    /* routed FFN sites: one cache per layer (NULL for dense layers) */
    ladle_moe_cache **moe_cache;
    ladle_smear_cache **smear_cache;
    ladle_smear_cache **adapter_cache;   /* [2 L]: after attention, after the FFN */
    float *adapt_scratch, *d_adapt;      /* [B, T, C]: an adapter's output; d of its input */
    int layers;
    size_t bytes;                /* everything allocated above, routed caches included */
    ladle_forward_context ctx;   /* set by the caller before a forward */
    double aux_sum;              /* MoE load-balancing losses of the last forward (sum) */
} ladle_activations;

void ladle_model_create(ladle_model *model, const ladle_config *cfg);
void ladle_model_free(ladle_model *model);
const ladle_tensor *ladle_model_tensor(const ladle_model *model, const char *name);

/* Initialise params[lo, hi) of the flat vector: each element is a pure function of
 * (seed, tensor, index), so every shard initialises its own slice with no communication. */
void ladle_model_init_range(const ladle_model *model, float *slice, size_t lo, size_t hi, uint64_t seed);

ladle_layer_params ladle_layer_view(const ladle_model *model, const float *params, int layer);
ladle_site_params ladle_site_view(const ladle_model *model, const float *params, int layer);
/* An adapter site of a layer: which = 0 after attention, 1 after the FFN. */
ladle_site_params ladle_adapter_view(const ladle_model *model, const float *params, int layer, int which);

void ladle_activations_create(ladle_activations *acts, const ladle_model *model, int B);
/* The bytes of create's one forward and one backward allocation, without allocating: all of
 * the activations but the routed sites' caches (a plan checks memory with it first). */
size_t ladle_activations_dense_bytes(const ladle_model *model, int B);
void ladle_activations_free(ladle_activations *acts);

/* Forward pass over B sequences; with targets, returns the SUM of the B*T losses
 * (per-position losses are left in acts->losses). Without targets, only logits. */
double ladle_model_forward(const ladle_model *model, const float *params, ladle_activations *acts,
                           const uint8_t *tokens, const uint8_t *targets, int B);

/* Backward of the last forward: grads += grad_scale * d(sum of losses)/d(params), plus
 * the MoE balancing losses' gradient at weight moe.balance * grad_scale * T (that is,
 * moe.balance per sequence of the global batch). grad_scale is 1/(global batch * T) for
 * the mean loss over all ranks' sequences. */
void ladle_model_backward(const ladle_model *model, const float *params, float *grads,
                          ladle_activations *acts, const uint8_t *tokens, const uint8_t *targets,
                          int B, float grad_scale);

/* FLOPs of one training step (forward + backward) per token, for MFU. */
double ladle_model_flops_per_token(const ladle_model *model);

#endif
