/* Whole-model checks: finite differences of the mean loss w.r.t. entries of every
 * tensor; gradients of a batch = sum of the gradients of its parts (what sharding the
 * batch across ranks relies on); slice-wise initialisation = whole initialisation. */
#include "ladle/config.h"
#include "ladle/model.h"
#include "ladle/rng.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

static test_counts counts;

typedef struct {
    ladle_model model;
    ladle_activations acts;
    float *params;
    uint8_t *tokens, *targets;
    int B;
} fixture;

static int *fixture_labels;   /* tag routing: each sequence's label */

/* ffn: model.ffn, e.g. "dense" or "moe,smear"; a trailing "+adapter" sets smear.kind = adapter,
 * "*M" sets model.ffn_mult = M */
static void fixture_create_ffn(fixture *f, int B, const char *ffn)
{
    char kinds[64];
    snprintf(kinds, sizeof kinds, "%s", ffn);
    char *plus = strchr(kinds, '+'), *star = strchr(kinds, '*');
    if (plus) *plus = '\0';
    ladle_config cfg;
    ladle_config_defaults(&cfg);
    if (star) {
        cfg.ffn_mult = atoi(star + 1);
        *star = '\0';
    }
    cfg.layers = 2; cfg.dim = 16; cfg.heads = 2; cfg.context = 8;
    snprintf(cfg.ffn, sizeof cfg.ffn, "%s", kinds);
    cfg.smear_kind = plus != NULL;
    cfg.smear_bottleneck = 3;
    cfg.smear_experts = 3; cfg.smear_segment = 4; cfg.moe_experts = 3; cfg.moe_balance = 0.5f;
    cfg.init_std = 0.2f;   /* large weights: gradients well above float noise */
    ladle_model_create(&f->model, &cfg);
    f->B = B;
    f->params = malloc(f->model.n_params * sizeof(float));
    ladle_model_init_range(&f->model, f->params, 0, f->model.n_params, 42);
    /* perturb the constant-initialised layernorm gains and biases so their gradients are generic */
    for (size_t i = 0; i < f->model.n_params; i++)
        f->params[i] += 0.1f * ladle_rng_normal(3, 0, 0, i);
    ladle_activations_create(&f->acts, &f->model, B);
    fixture_labels = realloc(fixture_labels, (size_t)B * sizeof(int));
    for (int b = 0; b < B; b++) fixture_labels[b] = 2 * b + 1;
    f->acts.ctx.labels = fixture_labels;   /* evaluation mode: no expert dropout */
    size_t n = (size_t)B * cfg.context;
    f->tokens = malloc(n);
    f->targets = malloc(n);
    for (size_t i = 0; i < n; i++) {
        f->tokens[i] = (uint8_t)ladle_rng_below(5, 0, 1, i, 256);
        f->targets[i] = (uint8_t)ladle_rng_below(5, 0, 2, i, 256);
    }
}

static void fixture_create(fixture *f, int B)
{
    fixture_create_ffn(f, B, "dense");
}

static void fixture_free(fixture *f)
{
    ladle_activations_free(&f->acts);
    ladle_model_free(&f->model);
    free(f->params); free(f->tokens); free(f->targets);
}

static double mean_loss(fixture *f)
{
    double s = ladle_model_forward(&f->model, f->params, &f->acts, f->tokens, f->targets, f->B);
    /* the objective backward differentiates: LM loss plus the weighted balancing losses */
    return (s + f->model.moe_balance * f->model.context * f->acts.aux_sum) / ((double)f->B * f->model.context);
}

static void test_finite_differences(const char *ffn)
{
    fixture f;
    fixture_create_ffn(&f, 3, ffn);
    printf("model.ffn = %s\n", ffn);
    const int T = f.model.context;
    float *grads = calloc(f.model.n_params, sizeof(float));
    mean_loss(&f);
    ladle_model_backward(&f.model, f.params, grads, &f.acts, f.tokens, f.targets, f.B, 1.0f / (float)(f.B * T));
    const float eps = 1e-2f;
    for (int ti = 0; ti < f.model.n_tensors; ti++) {
        const ladle_tensor *t = &f.model.tensors[ti];
        double num = 0, den = 0;
        int probes = 0;
        /* also probe wte rows of bytes in the batch, which get gradient through the encoder too */
        for (int k = 0; k < 24; k++) {
            size_t j = k < 12 ? ladle_rng_below(9, (uint64_t)ti, 0, (uint64_t)k, t->size)
                              : (strcmp(t->name, "wte") == 0
                                     ? (size_t)f.tokens[k] * (size_t)f.model.dim + (size_t)k % f.model.dim
                                     : ladle_rng_below(9, (uint64_t)ti, 1, (uint64_t)k, t->size));
            float *x = f.params + t->offset + j;
            float saved = *x;
            *x = saved + eps; double lp = mean_loss(&f);
            *x = saved - eps; double lm = mean_loss(&f);
            *x = saved;
            double fd = (lp - lm) / (2 * eps), g = grads[t->offset + j];
            num += (fd - g) * (fd - g);
            den += fd * fd;
            probes++;
        }
        double rel = sqrt(num / (den > 0 ? den : 1e-30));
        /* adapter parameters (a swish bottleneck of width 3 behind a routed softmax) have
         * small, curved gradients: central differences at eps 1e-2 land within ~4e-3 of them.
         * This whole-model check is about the wiring (a wrong gradient path is off by O(1));
         * the layer itself is checked to 4e-4 by finite differences and to 6e-7 against
         * PyTorch in test_smear / torch_smear. */
        double tol = strstr(t->name, ".adapter.") ? 1e-2 : 2e-3;
        EXPECT(&counts, rel < tol, "tensor %s: FD rel. error %.3g over %d probes", t->name, rel, probes);
        EXPECT(&counts, den > 0, "tensor %s: all probed gradients zero", t->name);
        printf("  %-18s rel. error %.2e\n", t->name, rel);
    }
    free(grads);
    fixture_free(&f);
}

static void test_batch_split(void)
{
    fixture f;
    fixture_create(&f, 4);
    const int T = f.model.context;
    const size_t p = f.model.n_params;
    float *whole = calloc(p, sizeof(float)), *parts = calloc(p, sizeof(float));
    float scale = 1.0f / (float)(4 * T);
    double loss_whole = ladle_model_forward(&f.model, f.params, &f.acts, f.tokens, f.targets, 4);
    ladle_model_backward(&f.model, f.params, whole, &f.acts, f.tokens, f.targets, 4, scale);
    double loss_parts = 0;
    int splits[3][2] = {{0, 1}, {1, 3}, {3, 4}};
    for (int s = 0; s < 3; s++) {
        int lo = splits[s][0], n = splits[s][1] - lo;
        const uint8_t *tok = f.tokens + (size_t)lo * T, *tgt = f.targets + (size_t)lo * T;
        loss_parts += ladle_model_forward(&f.model, f.params, &f.acts, tok, tgt, n);
        ladle_model_backward(&f.model, f.params, parts, &f.acts, tok, tgt, n, scale);
    }
    EXPECT(&counts, rel_err(loss_whole, loss_parts, 1e-9) < 1e-6, "loss of batch %.9g != sum of parts %.9g", loss_whole, loss_parts);
    double num = 0, den = 0;
    for (size_t i = 0; i < p; i++) {
        num += (whole[i] - parts[i]) * (double)(whole[i] - parts[i]);
        den += (double)whole[i] * whole[i];
    }
    EXPECT(&counts, sqrt(num / den) < 1e-5, "grad of batch vs sum of parts: rel. %.3g", sqrt(num / den));
    free(whole); free(parts);
    fixture_free(&f);
}

static void test_init_slices(void)
{
    fixture f;
    fixture_create(&f, 1);
    const size_t p = f.model.n_params;
    float *whole = malloc(p * sizeof(float)), *slices = malloc(p * sizeof(float));
    ladle_model_init_range(&f.model, whole, 0, p, 11);
    size_t cuts[] = {0, 1, p / 3, p / 3 + 7, p - 2, p};
    for (int i = 0; i + 1 < 6; i++)
        ladle_model_init_range(&f.model, slices + cuts[i], cuts[i], cuts[i + 1], 11);
    EXPECT(&counts, memcmp(whole, slices, p * sizeof(float)) == 0, "slice-wise init differs from whole init");
    const ladle_tensor *ln = ladle_model_tensor(&f.model, "h.1.ln2.w");
    const ladle_tensor *w1 = ladle_model_tensor(&f.model, "h.0.ffn.w1");
    EXPECT(&counts, ln && whole[ln->offset] == 1.0f, "layernorm gain must start at 1");
    EXPECT(&counts, w1 && w1->shape[0] == 64 && w1->shape[1] == 16, "ffn.w1 must be [4C, C]");
    double s = 0, s2 = 0;
    for (size_t i = 0; i < w1->size; i++) { s += whole[w1->offset + i]; s2 += whole[w1->offset + i] * whole[w1->offset + i]; }
    double sd = sqrt(s2 / w1->size - (s / w1->size) * (s / w1->size));
    EXPECT(&counts, fabs(sd - 0.2) < 0.02, "ffn.w1 init std %.4f, expected 0.2", sd);
    /* tensors tile the flat vector exactly */
    size_t next = 0;
    for (int i = 0; i < f.model.n_tensors; i++) {
        EXPECT(&counts, f.model.tensors[i].offset == next, "tensor %s offset gap", f.model.tensors[i].name);
        next += f.model.tensors[i].size;
    }
    EXPECT(&counts, next == p, "tensor table does not cover the parameter vector");
    free(whole); free(slices);
    fixture_free(&f);
}

/* Causality through every kind of FFN site: changing bytes after position t never
 * changes the logits at positions <= t, bit for bit. */
static void test_causality(const char *ffn)
{
    fixture f;
    fixture_create_ffn(&f, 2, ffn);
    const int T = f.model.context, V = LADLE_VOCAB;
    ladle_model_forward(&f.model, f.params, &f.acts, f.tokens, f.targets, f.B);
    size_t n = (size_t)f.B * T * V;
    float *before = malloc(n * sizeof(float));
    memcpy(before, f.acts.logits, n * sizeof(float));
    for (int t = 0; t + 1 < T; t++) {
        uint8_t *changed = malloc((size_t)f.B * T);
        memcpy(changed, f.tokens, (size_t)f.B * T);
        for (int b = 0; b < f.B; b++)
            for (int u = t + 1; u < T; u++) changed[b * T + u] ^= 0x5a;
        ladle_model_forward(&f.model, f.params, &f.acts, changed, f.targets, f.B);
        int same = 1;
        for (int b = 0; b < f.B; b++)
            same &= memcmp(before + (size_t)b * T * V, f.acts.logits + (size_t)b * T * V, (size_t)(t + 1) * V * sizeof(float)) == 0;
        EXPECT(&counts, same, "model.ffn = %s: logits at positions <= %d changed with later bytes", ffn, t);
        free(changed);
    }
    free(before);
    fixture_free(&f);
}

int main(void)
{
    test_finite_differences("dense");
    test_finite_differences("dense*3");
    test_finite_differences("moe,smear");
    test_finite_differences("tag,moe");
    test_finite_differences("smear,tag+adapter");
    test_causality("smear");
    test_causality("moe,tag");
    test_causality("smear,tag+adapter");
    test_batch_split();
    test_init_slices();
    free(fixture_labels);
    return test_summary(&counts, "test_model");
}
