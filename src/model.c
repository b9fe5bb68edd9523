#include "ladle/model.h"
#include "ladle/error.h"
#include "ladle/kernels.h"
#include "ladle/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


ladle_tensor ladle_tensor_make(const char *name, int rows, int cols, size_t offset, int decay)
{
    ladle_tensor t = {.ndim = cols > 0 ? 2 : 1, .shape = {rows, cols > 0 ? cols : 1}, .offset = offset, .decay = decay};
    snprintf(t.name, sizeof t.name, "%s", name);
    t.size = (size_t)rows * (size_t)t.shape[1];
    return t;
}

static void add_tensor(ladle_model *m, const char *name, int rows, int cols, int decay,
                       float init_std, float init_value)
{
    ladle_tensor *t = &m->tensors[m->n_tensors++];
    *t = ladle_tensor_make(name, rows, cols, m->n_params, decay);
    t->init_std = init_std;
    t->init_value = init_value;
    m->n_params += t->size;
}

/* The experts of a routed site: all w1, then all b1, all w2, all b2, so each kind of
 * tensor is one contiguous [E, ...] block the site's kernels index by expert. */
static void add_experts(ladle_model *m, const char *prefix, int experts, int hidden, float std, float residual_std)
{
    const int C = m->dim;
    char name[LADLE_TENSOR_NAME_MAX];
    for (int part = 0; part < 4; part++)
        for (int e = 0; e < experts; e++) {
            static const char *const parts[] = {"w1", "b1", "w2", "b2"};
            snprintf(name, sizeof name, "%s.e%d.%s", prefix, e, parts[part]);
            switch (part) {
            case 0: add_tensor(m, name, hidden, C, 1, std, 0); break;
            case 1: add_tensor(m, name, hidden, 0, 0, 0, 0); break;
            case 2: add_tensor(m, name, C, hidden, 1, residual_std, 0); break;
            default: add_tensor(m, name, C, 0, 0, 0, 0); break;
            }
        }
}

static void add_site_experts(ladle_model *m, int l, int experts, float std, float residual_std)
{
    char prefix[LADLE_TENSOR_NAME_MAX];
    snprintf(prefix, sizeof prefix, "h.%d.%s", l, m->ffn_kind[l] == LADLE_FFN_MOE ? "moe" : "smear");
    add_experts(m, prefix, experts, 4 * m->dim, std, residual_std);
}

/* SMEAR's router (METHODS.md section 2): LayerNorm of the pooled input, per-expert vectors
 * layer-normalised with a gain initialised at 1e-2, default logits for the first segment */
static void add_smear_router(ladle_model *m, const char *prefix, int experts)
{
    const int C = m->dim;
    char name[LADLE_TENSOR_NAME_MAX];
    snprintf(name, sizeof name, "%s.ln.w", prefix); add_tensor(m, name, C, 0, 0, 0, 1);
    snprintf(name, sizeof name, "%s.ln.b", prefix); add_tensor(m, name, C, 0, 0, 0, 0);
    snprintf(name, sizeof name, "%s.router.w", prefix); add_tensor(m, name, experts, C, 0, 1.0f, 0);
    snprintf(name, sizeof name, "%s.router.g", prefix); add_tensor(m, name, experts, C, 0, 0, 1e-2f);
    snprintf(name, sizeof name, "%s.default", prefix); add_tensor(m, name, experts, 0, 0, 0, 0);
}

void ladle_model_create(ladle_model *m, const ladle_config *cfg)
{
    memset(m, 0, sizeof *m);
    m->layers = cfg->layers;
    m->dim = cfg->dim;
    m->heads = cfg->heads;
    m->context = cfg->context;
    m->ffn_hidden = cfg->ffn_mult * cfg->dim;
    const int L = m->layers, C = m->dim, T = m->context;
    const float std = cfg->init_std;
    /* GPT-2: projections into the residual stream are scaled down by 1/sqrt(2L) so the
     * stream's variance does not grow with depth. */
    const float residual_std = std / sqrtf(2.0f * (float)L);
    m->ffn_kind = ladle_calloc((size_t)L, sizeof(int), "FFN kinds");
    m->layer_first = ladle_calloc((size_t)L, sizeof(int), "layer table");
    m->site_first = ladle_calloc((size_t)L, sizeof(int), "layer table");
    m->adapter_kind = ladle_calloc((size_t)L, sizeof(int), "adapter kinds");
    m->adapter_first = ladle_calloc((size_t)L, sizeof(int), "layer table");
    char err[256];
    if (ladle_config_ffn_kinds(cfg, m->ffn_kind, err, sizeof err) != 0) ladle_usage_error("%s", err);
    /* adapters: the layer's FFN stays dense, two routed adapter sites are added */
    m->adapter_width = cfg->smear_bottleneck > 0 ? cfg->smear_bottleneck : (C / 32 > 0 ? C / 32 : 1);
    for (int l = 0; l < L && cfg->smear_kind == 1; l++)
        if (m->ffn_kind[l] == LADLE_FFN_SMEAR || m->ffn_kind[l] == LADLE_FFN_TAG) {
            m->adapter_kind[l] = m->ffn_kind[l];
            m->ffn_kind[l] = LADLE_FFN_DENSE;
        }
    m->moe = (ladle_moe_dims){cfg->moe_experts, cfg->moe_top_k, cfg->moe_capacity};
    m->smear = (ladle_smear_dims){.N = cfg->smear_experts, .segment = cfg->smear_segment, .dropout = cfg->smear_dropout};
    m->moe_balance = cfg->moe_balance;
    size_t max_tensors = 4;
    for (int l = 0; l < L; l++) {
        int experts = m->ffn_kind[l] == LADLE_FFN_MOE ? cfg->moe_experts : cfg->smear_experts;
        max_tensors += 8 + 5 + (m->ffn_kind[l] == LADLE_FFN_DENSE ? 4 : 4 * (size_t)experts) +
                       (m->adapter_kind[l] ? 2 * (5 + 4 * (size_t)cfg->smear_experts) : 0);
    }
    m->tensors = ladle_calloc(max_tensors, sizeof(ladle_tensor), "tensor table");
    add_tensor(m, "wte", LADLE_VOCAB, C, 1, std, 0);
    add_tensor(m, "wpe", T, C, 1, std, 0);
    char name[LADLE_TENSOR_NAME_MAX];
    for (int l = 0; l < L; l++) {
#define LAYER_TENSOR(suffix, rows, cols, decay, sd, value) \
        snprintf(name, sizeof name, "h.%d." suffix, l); add_tensor(m, name, rows, cols, decay, sd, value)
        m->layer_first[l] = m->n_tensors;
        LAYER_TENSOR("ln1.w", C, 0, 0, 0, 1);
        LAYER_TENSOR("ln1.b", C, 0, 0, 0, 0);
        LAYER_TENSOR("attn.qkv.w", 3 * C, C, 1, std, 0);
        LAYER_TENSOR("attn.qkv.b", 3 * C, 0, 0, 0, 0);
        LAYER_TENSOR("attn.proj.w", C, C, 1, residual_std, 0);
        LAYER_TENSOR("attn.proj.b", C, 0, 0, 0, 0);
        LAYER_TENSOR("ln2.w", C, 0, 0, 0, 1);
        LAYER_TENSOR("ln2.b", C, 0, 0, 0, 0);
        m->site_first[l] = m->n_tensors;
        switch (m->ffn_kind[l]) {
        case LADLE_FFN_DENSE:
            LAYER_TENSOR("ffn.w1", m->ffn_hidden, C, 1, std, 0);
            LAYER_TENSOR("ffn.b1", m->ffn_hidden, 0, 0, 0, 0);
            LAYER_TENSOR("ffn.w2", C, m->ffn_hidden, 1, residual_std, 0);
            LAYER_TENSOR("ffn.b2", C, 0, 0, 0, 0);
            break;
        case LADLE_FFN_MOE:
            LAYER_TENSOR("moe.router", cfg->moe_experts, C, 0, std, 0);
            add_site_experts(m, l, cfg->moe_experts, std, residual_std);
            break;
        case LADLE_FFN_SMEAR:
            snprintf(name, sizeof name, "h.%d.smear", l);
            add_smear_router(m, name, cfg->smear_experts);
            add_site_experts(m, l, cfg->smear_experts, std, residual_std);
            break;
        default:   /* tag routing: experts only */
            add_site_experts(m, l, cfg->smear_experts, std, residual_std);
            break;
        }
#undef LAYER_TENSOR
        /* adapter sites: h.<l>.adapter.attn.*, h.<l>.adapter.ffn.* (router unless tag) */
        m->adapter_first[l] = m->n_tensors;
        for (int which = 0; which < 2 && m->adapter_kind[l]; which++) {
            snprintf(name, sizeof name, "h.%d.adapter.%s", l, which ? "ffn" : "attn");
            if (m->adapter_kind[l] == LADLE_FFN_SMEAR) add_smear_router(m, name, cfg->smear_experts);
            add_experts(m, name, cfg->smear_experts, m->adapter_width, std, residual_std);
        }
    }
    m->lnf = m->n_tensors;
    add_tensor(m, "lnf.w", C, 0, 0, 0, 1);
    add_tensor(m, "lnf.b", C, 0, 0, 0, 0);
}

void ladle_model_free(ladle_model *m)
{
    free(m->tensors);
    free(m->ffn_kind);
    free(m->adapter_kind);
    free(m->adapter_first);
    free(m->layer_first);
    free(m->site_first);
    memset(m, 0, sizeof *m);
}

const ladle_tensor *ladle_model_tensor(const ladle_model *m, const char *name)
{
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

void ladle_model_init_range(const ladle_model *m, float *slice, size_t lo, size_t hi, uint64_t seed)
{
    for (int i = 0; i < m->n_tensors; i++) {
        const ladle_tensor *t = &m->tensors[i];
        size_t a = t->offset > lo ? t->offset : lo;
        size_t b = t->offset + t->size < hi ? t->offset + t->size : hi;
        for (size_t j = a; j < b; j++)
            slice[j - lo] = t->init_std > 0
                ? t->init_std * ladle_rng_normal(seed, (uint64_t)i, LADLE_STREAM_INIT, j - t->offset)
                : t->init_value;
    }
}

ladle_layer_params ladle_layer_view(const ladle_model *m, const float *params, int l)
{
    const ladle_tensor *t = &m->tensors[m->layer_first[l]];
    int dense = m->ffn_kind[l] == LADLE_FFN_DENSE;
    ladle_layer_params p = {
        params + t[0].offset, params + t[1].offset, params + t[2].offset, params + t[3].offset,
        params + t[4].offset, params + t[5].offset, params + t[6].offset, params + t[7].offset,
        dense ? params + t[8].offset : NULL, dense ? params + t[9].offset : NULL,
        dense ? params + t[10].offset : NULL, dense ? params + t[11].offset : NULL,
    };
    return p;
}

ladle_site_params ladle_site_view(const ladle_model *m, const float *params, int l)
{
    ladle_site_params p;
    memset(&p, 0, sizeof p);
    const ladle_tensor *t = &m->tensors[m->site_first[l]];
    int kind = m->ffn_kind[l];
    if (kind == LADLE_FFN_DENSE) return p;
    int router = kind == LADLE_FFN_MOE ? 1 : kind == LADLE_FFN_SMEAR ? 5 : 0;
    int experts = kind == LADLE_FFN_MOE ? m->moe.Z : m->smear.N;
    if (kind == LADLE_FFN_MOE) p.moe_router = params + t[0].offset;
    if (kind == LADLE_FFN_SMEAR)
        p.smear = (ladle_smear_router){params + t[0].offset, params + t[1].offset, params + t[2].offset,
                                       params + t[3].offset, params + t[4].offset};
    const ladle_tensor *e = t + router;   /* the blocks of w1, b1, w2, b2 start here */
    p.w1 = params + e[0].offset;
    p.b1 = params + e[experts].offset;
    p.w2 = params + e[2 * experts].offset;
    p.b2 = params + e[3 * experts].offset;
    return p;
}

ladle_site_params ladle_adapter_view(const ladle_model *m, const float *params, int l, int which)
{
    ladle_site_params p;
    memset(&p, 0, sizeof p);
    if (!m->adapter_kind[l]) return p;
    const int N = m->smear.N, router = m->adapter_kind[l] == LADLE_FFN_SMEAR ? 5 : 0;
    const ladle_tensor *t = &m->tensors[m->adapter_first[l] + which * (router + 4 * N)];
    if (router)
        p.smear = (ladle_smear_router){params + t[0].offset, params + t[1].offset, params + t[2].offset,
                                       params + t[3].offset, params + t[4].offset};
    const ladle_tensor *e = t + router;
    p.w1 = params + e[0].offset;
    p.b1 = params + e[N].offset;
    p.w2 = params + e[2 * N].offset;
    p.b2 = params + e[3 * N].offset;
    return p;
}

/* Gradient views have the same layout as parameter views; cast away const once, here. */
typedef struct {
    float *ln1_w, *ln1_b, *qkv_w, *qkv_b, *proj_w, *proj_b;
    float *ln2_w, *ln2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} layer_grads;

static layer_grads layer_grad_view(const ladle_model *m, float *grads, int l)
{
    ladle_layer_params v = ladle_layer_view(m, grads, l);
    layer_grads g;
    memcpy(&g, &v, sizeof g);
    return g;
}

/* An adapter site's SMEAR dimensions: bottleneck width, swish (METHODS.md section 2). */
static ladle_smear_dims adapter_dims(const ladle_model *m, int l)
{
    ladle_smear_dims d = m->smear;
    d.tag = m->adapter_kind[l] == LADLE_FFN_TAG;
    d.hidden = m->adapter_width;
    d.swish = 1;
    return d;
}

/* ---- activations -------------------------------------------------------------- */

/* The forward and backward buffers of B sequences: where each pointer goes and its floats
 * (one table, so that sizing without allocating cannot drift from allocating). */
typedef struct { float **ptr; size_t n; } act_entry;
enum { ACT_FWD = 23, ACT_BWD = 9 };

static void activation_layout(ladle_activations *a, const ladle_model *m, int B, act_entry fwd[ACT_FWD],
                              act_entry bwd[ACT_BWD])
{
    const size_t L = (size_t)m->layers, C = (size_t)m->dim, T = (size_t)m->context;
    const size_t NH = (size_t)m->heads, V = LADLE_VOCAB, BT = (size_t)B * T, H = (size_t)m->ffn_hidden;
    const act_entry f[ACT_FWD] = {
        {&a->encoded, BT * C},
        {&a->ln1, L * BT * C}, {&a->ln1_mean, L * BT}, {&a->ln1_rstd, L * BT},
        {&a->qkv, L * BT * 3 * C}, {&a->atty, L * BT * C}, {&a->att, L * B * NH * T * T},
        {&a->attproj, L * BT * C}, {&a->residual2, L * BT * C},
        {&a->ln2, L * BT * C}, {&a->ln2_mean, L * BT}, {&a->ln2_rstd, L * BT},
        {&a->fch, L * BT * H}, {&a->fch_gelu, L * BT * H},
        {&a->fcproj, L * BT * C}, {&a->residual3, L * BT * C},
        {&a->lnf, BT * C}, {&a->lnf_mean, BT}, {&a->lnf_rstd, BT},
        {&a->logits, BT * V}, {&a->probs, BT * V}, {&a->losses, BT}, {&a->adapt_scratch, BT * C},
    };
    const act_entry b[ACT_BWD] = {
        {&a->d_residual, BT * C}, {&a->d_ln, BT * C}, {&a->d_atty, BT * C},
        {&a->d_qkv, BT * 3 * C}, {&a->d_fch, BT * H}, {&a->d_fch_gelu, BT * H},
        {&a->d_logits, BT * V}, {&a->d_att_scratch, T * T}, {&a->d_adapt, BT * C},
    };
    memcpy(fwd, f, sizeof f);
    memcpy(bwd, b, sizeof b);
}

static size_t floats_of(const act_entry *e, int n)
{
    size_t total = 0;
    for (int i = 0; i < n; i++) total += e[i].n;
    return total;
}

size_t ladle_activations_dense_bytes(const ladle_model *m, int B)
{
    ladle_activations a;
    act_entry fwd[ACT_FWD], bwd[ACT_BWD];
    activation_layout(&a, m, B, fwd, bwd);
    return (floats_of(fwd, ACT_FWD) + floats_of(bwd, ACT_BWD)) * sizeof(float);
}

void ladle_activations_create(ladle_activations *a, const ladle_model *m, int B)
{
    memset(a, 0, sizeof *a);
    a->B = B;
    const size_t L = (size_t)m->layers, C = (size_t)m->dim, T = (size_t)m->context;
    act_entry fwd[ACT_FWD], bwd[ACT_BWD];
    activation_layout(a, m, B, fwd, bwd);
    const size_t n_fwd = floats_of(fwd, ACT_FWD), n_bwd = floats_of(bwd, ACT_BWD);
    a->memory = ladle_malloc(n_fwd * sizeof(float), "activations");
    a->d_memory = ladle_malloc(n_bwd * sizeof(float), "activation gradients");
    float *p = a->memory;
    for (int i = 0; i < ACT_FWD; i++) { *fwd[i].ptr = p; p += fwd[i].n; }
    p = a->d_memory;
    for (int i = 0; i < ACT_BWD; i++) { *bwd[i].ptr = p; p += bwd[i].n; }
    /* routed FFN sites keep their own caches */
    a->bytes = (n_fwd + n_bwd) * sizeof(float);
    a->moe_cache = ladle_calloc_counted(&a->bytes, L, sizeof *a->moe_cache, "MoE caches");
    a->smear_cache = ladle_calloc_counted(&a->bytes, L, sizeof *a->smear_cache, "SMEAR caches");
    a->adapter_cache = ladle_calloc_counted(&a->bytes, 2 * L, sizeof *a->adapter_cache, "adapter caches");
    for (int l = 0; l < (int)L; l++) {
        if (m->ffn_kind[l] == LADLE_FFN_MOE) a->moe_cache[l] = ladle_moe_cache_create(B * (int)T, (int)C, &m->moe);
        if (m->ffn_kind[l] == LADLE_FFN_SMEAR || m->ffn_kind[l] == LADLE_FFN_TAG) {
            ladle_smear_dims dims = m->smear;
            dims.tag = m->ffn_kind[l] == LADLE_FFN_TAG;
            a->smear_cache[l] = ladle_smear_cache_create(B, (int)T, (int)C, &dims);
        }
        if (m->adapter_kind[l]) {
            ladle_smear_dims dims = adapter_dims(m, l);
            a->adapter_cache[2 * l] = ladle_smear_cache_create(B, (int)T, (int)C, &dims);
            a->adapter_cache[2 * l + 1] = ladle_smear_cache_create(B, (int)T, (int)C, &dims);
        }
        if (a->moe_cache[l]) a->bytes += ladle_moe_cache_bytes(a->moe_cache[l]);
        if (a->smear_cache[l]) a->bytes += ladle_smear_cache_bytes(a->smear_cache[l]);
        for (int w = 0; w < 2; w++)
            if (a->adapter_cache[2 * l + w]) a->bytes += ladle_smear_cache_bytes(a->adapter_cache[2 * l + w]);
    }
    a->layers = (int)L;
}

void ladle_activations_free(ladle_activations *a)
{
    for (int l = 0; l < a->layers; l++) {
        if (a->moe_cache[l]) ladle_moe_cache_free(a->moe_cache[l]);
        if (a->smear_cache[l]) ladle_smear_cache_free(a->smear_cache[l]);
        for (int w = 0; w < 2; w++)
            if (a->adapter_cache[2 * l + w]) ladle_smear_cache_free(a->adapter_cache[2 * l + w]);
    }
    free(a->adapter_cache);
    free(a->moe_cache);
    free(a->smear_cache);
    free(a->memory);
    free(a->d_memory);
    memset(a, 0, sizeof *a);
}

/* ---- FFN sites ------------------------------------------------------------------ */

/* out = the layer's FFN site applied to its input x (ln2): dense, MoE, SMEAR or tag. */
static void ffn_forward(const ladle_model *m, const float *params, ladle_activations *a, int l, float *out,
                        float *fch, float *fch_gelu, const float *x, int B)
{
    const int C = m->dim, T = m->context, N = B * T, H = m->ffn_hidden;
    if (m->ffn_kind[l] == LADLE_FFN_DENSE) {
        ladle_layer_params w = ladle_layer_view(m, params, l);
        matmul_forward(fch, x, w.fc1_w, w.fc1_b, N, C, H);
        gelu_forward(fch_gelu, fch, (size_t)N * H);
        matmul_forward(out, fch_gelu, w.fc2_w, w.fc2_b, N, H, C);
        return;
    }
    ladle_site_params s = ladle_site_view(m, params, l);
    if (m->ffn_kind[l] == LADLE_FFN_MOE) {
        a->aux_sum += moe_forward(out, a->moe_cache[l], x, s.moe_router, s.w1, s.b1, s.w2, s.b2, B, T, C, &m->moe);
        return;
    }
    ladle_smear_dims dims = m->smear;
    dims.tag = m->ffn_kind[l] == LADLE_FFN_TAG;
    LADLE_CHECK(!dims.tag || a->ctx.labels, "tag routing needs the sequences' domain labels");
    ladle_smear_context ctx = {a->ctx.training, a->ctx.seed, a->ctx.step, a->ctx.first_sequence, a->ctx.labels};
    smear_forward(out, a->smear_cache[l], x, &s.smear, s.w1, s.b1, s.w2, s.b2, B, T, C, &dims, &ctx);
}

/* Gradient views have the same layout as parameter views; cast away const once, here. */
static ladle_smear_router_grads smear_grads(const ladle_smear_router *r)
{
    ladle_smear_router_grads g = {(float *)r->ln_w, (float *)r->ln_b, (float *)r->w, (float *)r->g,
                                  (float *)r->default_logits};
    return g;
}

/* d_ln += the site's input gradient from d_residual (its output's gradient); the site's
 * parameter gradients accumulate into grads. */
static void ffn_backward(const ladle_model *m, const float *params, float *grads, ladle_activations *a, int l,
                         const float *dout, const float *fch, const float *fch_gelu, const float *x, int B,
                         float grad_scale)
{
    const int C = m->dim, T = m->context, N = B * T, H = m->ffn_hidden;
    if (m->ffn_kind[l] == LADLE_FFN_DENSE) {
        ladle_layer_params w = ladle_layer_view(m, params, l);
        ladle_layer_params g = ladle_layer_view(m, grads, l);
        memset(a->d_fch_gelu, 0, (size_t)N * H * sizeof(float));
        memset(a->d_fch, 0, (size_t)N * H * sizeof(float));
        matmul_backward(a->d_fch_gelu, (float *)g.fc2_w, (float *)g.fc2_b, dout, fch_gelu, w.fc2_w, N, H, C);
        gelu_backward(a->d_fch, fch, a->d_fch_gelu, (size_t)N * H);
        matmul_backward(a->d_ln, (float *)g.fc1_w, (float *)g.fc1_b, a->d_fch, x, w.fc1_w, N, C, H);
        return;
    }
    ladle_site_params s = ladle_site_view(m, params, l), d = ladle_site_view(m, grads, l);
    if (m->ffn_kind[l] == LADLE_FFN_MOE) {
        /* the balancing loss weighs moe.balance per sequence of the global batch */
        float aux_scale = m->moe_balance * grad_scale * (float)T;
        moe_backward(a->d_ln, (float *)d.moe_router, (float *)d.w1, (float *)d.b1, (float *)d.w2, (float *)d.b2,
                     dout, a->moe_cache[l], x, s.moe_router, s.w1, s.b1, s.w2, s.b2, B, T, C, &m->moe,
                     aux_scale);
        return;
    }
    ladle_smear_dims dims = m->smear;
    dims.tag = m->ffn_kind[l] == LADLE_FFN_TAG;
    ladle_smear_router_grads dr = smear_grads(&d.smear);
    smear_backward(a->d_ln, &dr, (float *)d.w1, (float *)d.b1, (float *)d.w2, (float *)d.b2, dout,
                   a->smear_cache[l], x, &s.smear, s.w1, s.b1, s.w2, s.b2, B, T, C, &dims);
}

/* adapt_scratch = A(h), the layer's routed adapter `which` applied to a sub-layer output h */
static void adapter_forward(const ladle_model *m, const float *params, ladle_activations *a, int l, int which,
                            const float *h, int B)
{
    ladle_site_params s = ladle_adapter_view(m, params, l, which);
    ladle_smear_dims dims = adapter_dims(m, l);
    LADLE_CHECK(!dims.tag || a->ctx.labels, "tag routing needs the sequences' domain labels");
    ladle_smear_context ctx = {a->ctx.training, a->ctx.seed, a->ctx.step, a->ctx.first_sequence, a->ctx.labels};
    smear_forward(a->adapt_scratch, a->adapter_cache[2 * l + which], h, &s.smear, s.w1, s.b1, s.w2, s.b2, B,
                  m->context, m->dim, &dims, &ctx);
}

/* The gradient of a sub-layer output h that feeds h + A(h), given that sum's gradient
 * dout: dout + A'(h)^T dout, in d_adapt (dout itself when the layer has no adapters). */
static const float *adapter_backward(const ladle_model *m, const float *params, float *grads, ladle_activations *a,
                                     int l, int which, const float *h, const float *dout, int B)
{
    if (!m->adapter_kind[l]) return dout;
    const size_t BTC = (size_t)B * m->context * m->dim;
    memcpy(a->d_adapt, dout, BTC * sizeof(float));
    ladle_site_params s = ladle_adapter_view(m, params, l, which), d = ladle_adapter_view(m, grads, l, which);
    ladle_smear_dims dims = adapter_dims(m, l);
    ladle_smear_router_grads dr = smear_grads(&d.smear);
    smear_backward(a->d_adapt, dims.tag ? NULL : &dr, (float *)d.w1, (float *)d.b1, (float *)d.w2, (float *)d.b2, dout,
                   a->adapter_cache[2 * l + which], h, &s.smear, s.w1, s.b1, s.w2, s.b2, B, m->context, m->dim,
                   &dims);
    return a->d_adapt;
}

/* ---- forward -------------------------------------------------------------------- */

double ladle_model_forward(const ladle_model *m, const float *params, ladle_activations *a,
                           const uint8_t *tokens, const uint8_t *targets, int B)
{
    LADLE_CHECK(B <= a->B, "batch of %d sequences exceeds the %d the activations were sized for", B, a->B);
    const int L = m->layers, C = m->dim, T = m->context, NH = m->heads, V = LADLE_VOCAB;
    const int N = B * T;
    const size_t BTC = (size_t)N * C, BT = (size_t)N;
    const float *wte = params + m->tensors[0].offset;
    const float *wpe = params + m->tensors[1].offset;
    const ladle_tensor *lnf = &m->tensors[m->lnf];

    encoder_forward(a->encoded, tokens, wte, wpe, B, T, C);
    a->aux_sum = 0.0;
    const float *residual = a->encoded;
    for (int l = 0; l < L; l++) {
        ladle_layer_params w = ladle_layer_view(m, params, l);
        float *ln1 = a->ln1 + l * BTC, *ln1_mean = a->ln1_mean + l * BT, *ln1_rstd = a->ln1_rstd + l * BT;
        float *qkv = a->qkv + l * 3 * BTC, *atty = a->atty + l * BTC;
        float *att = a->att + (size_t)l * B * NH * T * T;
        float *attproj = a->attproj + l * BTC, *residual2 = a->residual2 + l * BTC;
        float *ln2 = a->ln2 + l * BTC, *ln2_mean = a->ln2_mean + l * BT, *ln2_rstd = a->ln2_rstd + l * BT;
        float *fch = a->fch + l * BT * m->ffn_hidden, *fch_gelu = a->fch_gelu + l * BT * m->ffn_hidden;
        float *fcproj = a->fcproj + l * BTC, *residual3 = a->residual3 + l * BTC;

        layernorm_forward(ln1, ln1_mean, ln1_rstd, residual, w.ln1_w, w.ln1_b, N, C);
        matmul_forward(qkv, ln1, w.qkv_w, w.qkv_b, N, C, 3 * C);
        attention_forward(atty, att, qkv, B, T, C, NH);
        matmul_forward(attproj, atty, w.proj_w, w.proj_b, N, C, C);
        residual_forward(residual2, residual, attproj, BTC);
        if (m->adapter_kind[l]) {   /* + A(attproj): the routed adapter after attention */
            adapter_forward(m, params, a, l, 0, attproj, B);
            residual_forward(residual2, residual2, a->adapt_scratch, BTC);
        }
        layernorm_forward(ln2, ln2_mean, ln2_rstd, residual2, w.ln2_w, w.ln2_b, N, C);
        ffn_forward(m, params, a, l, fcproj, fch, fch_gelu, ln2, B);
        residual_forward(residual3, residual2, fcproj, BTC);
        if (m->adapter_kind[l]) {   /* + A(fcproj): the routed adapter after the FFN */
            adapter_forward(m, params, a, l, 1, fcproj, B);
            residual_forward(residual3, residual3, a->adapt_scratch, BTC);
        }
        residual = residual3;
    }
    layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, residual,
                      params + lnf[0].offset, params + lnf[1].offset, N, C);
    matmul_forward(a->logits, a->lnf, wte, NULL, N, C, V);   /* tied embeddings */
    if (!targets) return 0.0;
    return crossentropy_forward(a->probs, a->losses, a->logits, targets, N, V);
}

/* ---- backward -------------------------------------------------------------------- */

void ladle_model_backward(const ladle_model *m, const float *params, float *grads,
                          ladle_activations *a, const uint8_t *tokens, const uint8_t *targets,
                          int B, float grad_scale)
{
    const int L = m->layers, C = m->dim, T = m->context, NH = m->heads, V = LADLE_VOCAB;
    const int N = B * T;
    const size_t BTC = (size_t)N * C, BT = (size_t)N;
    const float *wte = params + m->tensors[0].offset;
    float *dwte = grads + m->tensors[0].offset;
    float *dwpe = grads + m->tensors[1].offset;
    const ladle_tensor *lnf = &m->tensors[m->lnf];

    memset(a->d_logits, 0, (size_t)N * V * sizeof(float));
    memset(a->d_ln, 0, BTC * sizeof(float));
    memset(a->d_residual, 0, BTC * sizeof(float));
    crossentropy_backward(a->d_logits, a->probs, targets, grad_scale, N, V);
    matmul_backward(a->d_ln, dwte, NULL, a->d_logits, a->lnf, wte, N, C, V);
    const float *last = L > 0 ? a->residual3 + (L - 1) * BTC : a->encoded;
    layernorm_backward(a->d_residual, grads + lnf[0].offset, grads + lnf[1].offset, a->d_ln,
                       last, params + lnf[0].offset, a->lnf_mean, a->lnf_rstd, N, C);

    /* d_residual carries the gradient of the residual stream down through the layers:
     * the residual additions pass it through unchanged, the layernorms add to it. */
    for (int l = L - 1; l >= 0; l--) {
        ladle_layer_params w = ladle_layer_view(m, params, l);
        layer_grads g = layer_grad_view(m, grads, l);
        const float *residual = l == 0 ? a->encoded : a->residual3 + (l - 1) * BTC;
        const float *ln1 = a->ln1 + l * BTC, *ln1_mean = a->ln1_mean + l * BT, *ln1_rstd = a->ln1_rstd + l * BT;
        const float *qkv = a->qkv + l * 3 * BTC, *atty = a->atty + l * BTC;
        const float *att = a->att + (size_t)l * B * NH * T * T;
        const float *residual2 = a->residual2 + l * BTC;
        const float *ln2 = a->ln2 + l * BTC, *ln2_mean = a->ln2_mean + l * BT, *ln2_rstd = a->ln2_rstd + l * BT;
        const float *fch = a->fch + l * BT * m->ffn_hidden, *fch_gelu = a->fch_gelu + l * BT * m->ffn_hidden;

        memset(a->d_ln, 0, BTC * sizeof(float));
        const float *fcproj = a->fcproj + l * BTC, *attproj = a->attproj + l * BTC;
        const float *d_ffn_out = adapter_backward(m, params, grads, a, l, 1, fcproj, a->d_residual, B);
        ffn_backward(m, params, grads, a, l, d_ffn_out, fch, fch_gelu, ln2, B, grad_scale);
        layernorm_backward(a->d_residual, g.ln2_w, g.ln2_b, a->d_ln, residual2, w.ln2_w, ln2_mean, ln2_rstd, N, C);

        memset(a->d_atty, 0, BTC * sizeof(float));
        memset(a->d_qkv, 0, 3 * BTC * sizeof(float));
        memset(a->d_ln, 0, BTC * sizeof(float));
        const float *d_attn_out = adapter_backward(m, params, grads, a, l, 0, attproj, a->d_residual, B);
        matmul_backward(a->d_atty, g.proj_w, g.proj_b, d_attn_out, atty, w.proj_w, N, C, C);
        attention_backward(a->d_qkv, a->d_att_scratch, a->d_atty, qkv, att, B, T, C, NH);
        matmul_backward(a->d_ln, g.qkv_w, g.qkv_b, a->d_qkv, ln1, w.qkv_w, N, C, 3 * C);
        layernorm_backward(a->d_residual, g.ln1_w, g.ln1_b, a->d_ln, residual, w.ln1_w, ln1_mean, ln1_rstd, N, C);
    }
    encoder_backward(dwte, dwpe, a->d_residual, tokens, B, T, C);
}

double ladle_model_flops_per_token(const ladle_model *m)
{
    /* 6 flops per weight per token (2 forward, 4 backward) for every matrix product a
     * token goes through, plus causal attention: q k^T and P v each cost 2*C flops per
     * (query, key) pair, a query sees (T+1)/2 keys on average, x3 with backward. This is
     * the useful work; the blocked kernels also compute part of the masked triangle. A
     * MoE token goes through top_k experts' FFNs (and the router); a SMEAR/tag site runs
     * one (merged) FFN per token. */
    const double C = m->dim, T = m->context;
    double matmul_weights = (double)LADLE_VOCAB * C;
    for (int l = 0; l < m->layers; l++) {
        matmul_weights += 4.0 * C * C;
        if (m->ffn_kind[l] == LADLE_FFN_MOE) matmul_weights += 8.0 * C * C * m->moe.top_k + m->moe.Z * C;
        else if (m->ffn_kind[l] == LADLE_FFN_DENSE) matmul_weights += 2.0 * C * m->ffn_hidden;
        else matmul_weights += 8.0 * C * C;
    }
    return 6.0 * matmul_weights + 3.0 * m->layers * 2.0 * 2.0 * C * (T + 1.0) / 2.0;
}
