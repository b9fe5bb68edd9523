/* Finite-difference checks of every layer's backward, and the GEMM wrapper against a
 * naive product. Objective J = sum(r * out) for a fixed random r, so dout = r. */
#include "ladle/kernels.h"
#include "ladle/rng.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

static test_counts counts;

static float *randn(size_t n, uint64_t stream, float scale)
{
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = scale * ladle_rng_normal(7, stream, 99, i);
    return x;
}

/* Compare analytic gradient g of J w.r.t. x[0..n) with central differences.
 * Norm-wise relative error over all checked entries must be <= tol. */
static void check_grad(const char *what, test_objective J, void *ctx, float *x, const float *g,
                       size_t n, float eps, double tol)
{
    double worst, den;
    double rel = test_fd_rel_error(J, ctx, x, g, n, eps, &worst, &den);
    EXPECT(&counts, rel <= tol, "%s: finite-difference rel. error %.3g > %.3g (worst abs %.3g)", what, rel, tol, worst);
    EXPECT(&counts, den > 0, "%s: gradient is identically zero, the check is vacuous", what);
    printf("  %-28s rel. error %.2e\n", what, rel);
}

/* ---- GEMM wrapper vs naive ------------------------------------------------------ */

static void test_gemm(void)
{
    const int m = 7, n = 5, k = 9;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            float *a = randn((size_t)m * k, 1, 1), *b = randn((size_t)k * n, 2, 1);
            float *c = randn((size_t)m * n, 3, 1), *ref = malloc((size_t)m * n * sizeof(float));
            int lda = ta ? m : k, ldb = tb ? k : n;
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++) {
                    double s = 0;
                    for (int p = 0; p < k; p++) {
                        double av = ta ? a[p * lda + i] : a[i * lda + p];
                        double bv = tb ? b[j * ldb + p] : b[p * ldb + j];
                        s += av * bv;
                    }
                    ref[i * n + j] = (float)(0.5 * s + 2.0 * c[i * n + j]);
                }
            ladle_gemm(ta, tb, m, n, k, 0.5f, a, lda, b, ldb, 2.0f, c, n);
            double worst = 0;
            for (int i = 0; i < m * n; i++) worst = fmax(worst, fabs(c[i] - ref[i]));
            EXPECT(&counts, worst < 1e-5, "gemm ta=%d tb=%d: max error %g", ta, tb, worst);
            free(a); free(b); free(c); free(ref);
        }
}

/* ---- matmul --------------------------------------------------------------------- */

typedef struct { int N, C, OC; float *inp, *w, *b, *out, *r; } matmul_ctx;

static double matmul_J(void *p)
{
    matmul_ctx *c = p;
    matmul_forward(c->out, c->inp, c->w, c->b, c->N, c->C, c->OC);
    return test_dot(c->out, c->r, (size_t)c->N * c->OC);
}

static void test_matmul(void)
{
    matmul_ctx c = {6, 5, 7, NULL, NULL, NULL, NULL, NULL};
    c.inp = randn((size_t)c.N * c.C, 10, 1);
    c.w = randn((size_t)c.OC * c.C, 11, 1);
    c.b = randn((size_t)c.OC, 12, 1);
    c.r = randn((size_t)c.N * c.OC, 13, 1);
    c.out = test_zeros((size_t)c.N * c.OC);
    float *dinp = test_zeros((size_t)c.N * c.C), *dw = test_zeros((size_t)c.OC * c.C), *db = test_zeros((size_t)c.OC);
    matmul_forward(c.out, c.inp, c.w, c.b, c.N, c.C, c.OC);
    matmul_backward(dinp, dw, db, c.r, c.inp, c.w, c.N, c.C, c.OC);
    check_grad("matmul d(input)", matmul_J, &c, c.inp, dinp, (size_t)c.N * c.C, 1e-2f, 1e-4);
    check_grad("matmul d(weight)", matmul_J, &c, c.w, dw, (size_t)c.OC * c.C, 1e-2f, 1e-4);
    check_grad("matmul d(bias)", matmul_J, &c, c.b, db, (size_t)c.OC, 1e-2f, 1e-4);
    /* backward accumulates: a second call doubles the gradient */
    float before = dw[3];
    matmul_backward(dinp, dw, db, c.r, c.inp, c.w, c.N, c.C, c.OC);
    EXPECT(&counts, fabsf(dw[3] - 2 * before) <= 1e-5f * fabsf(before) + 1e-6f, "matmul_backward must accumulate");
    free(c.inp); free(c.w); free(c.b); free(c.r); free(c.out); free(dinp); free(dw); free(db);
}

/* ---- layernorm ------------------------------------------------------------------ */

typedef struct { int N, C; float *inp, *w, *b, *out, *mean, *rstd, *r; } ln_ctx;

static double ln_J(void *p)
{
    ln_ctx *c = p;
    layernorm_forward(c->out, c->mean, c->rstd, c->inp, c->w, c->b, c->N, c->C);
    return test_dot(c->out, c->r, (size_t)c->N * c->C);
}

static void test_layernorm(void)
{
    ln_ctx c = {5, 12, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    size_t nc = (size_t)c.N * c.C;
    c.inp = randn(nc, 20, 2);
    c.w = randn((size_t)c.C, 21, 1);
    c.b = randn((size_t)c.C, 22, 1);
    c.r = randn(nc, 23, 1);
    c.out = test_zeros(nc); c.mean = test_zeros((size_t)c.N); c.rstd = test_zeros((size_t)c.N);
    float *dinp = test_zeros(nc), *dw = test_zeros((size_t)c.C), *db = test_zeros((size_t)c.C);
    ln_J(&c);
    layernorm_backward(dinp, dw, db, c.r, c.inp, c.w, c.mean, c.rstd, c.N, c.C);
    check_grad("layernorm d(input)", ln_J, &c, c.inp, dinp, nc, 1e-2f, 2e-4);
    check_grad("layernorm d(weight)", ln_J, &c, c.w, dw, (size_t)c.C, 1e-2f, 1e-4);
    check_grad("layernorm d(bias)", ln_J, &c, c.b, db, (size_t)c.C, 1e-2f, 1e-4);
    free(c.inp); free(c.w); free(c.b); free(c.r); free(c.out); free(c.mean); free(c.rstd);
    free(dinp); free(dw); free(db);
}

/* ---- attention ------------------------------------------------------------------ */

typedef struct { int B, T, C, NH; float *qkv, *att, *out, *r; } att_ctx;

static double att_J(void *p)
{
    att_ctx *c = p;
    attention_forward(c->out, c->att, c->qkv, c->B, c->T, c->C, c->NH);
    return test_dot(c->out, c->r, (size_t)c->B * c->T * c->C);
}

static void test_attention(void)
{
    att_ctx c = {2, 6, 8, 2, NULL, NULL, NULL, NULL};
    size_t nqkv = (size_t)c.B * c.T * 3 * c.C, nout = (size_t)c.B * c.T * c.C;
    c.qkv = randn(nqkv, 30, 1);
    c.att = test_zeros((size_t)c.B * c.NH * c.T * c.T);
    c.out = test_zeros(nout);
    c.r = randn(nout, 31, 1);
    float *dqkv = test_zeros(nqkv), *scratch = test_zeros((size_t)c.T * c.T);
    att_J(&c);
    attention_backward(dqkv, scratch, c.r, c.qkv, c.att, c.B, c.T, c.C, c.NH);
    check_grad("attention d(qkv)", att_J, &c, c.qkv, dqkv, nqkv, 1e-2f, 2e-4);
    /* causality: changing position t+1's key/value never changes output at t */
    float *before = malloc(nout * sizeof(float));
    memcpy(before, c.out, nout * sizeof(float));
    int t = 3;
    for (int i = c.C; i < 3 * c.C; i++) c.qkv[(size_t)(t + 1) * 3 * c.C + i] += 1.0f;
    att_J(&c);
    int same = memcmp(before, c.out, (size_t)(t + 1) * c.C * sizeof(float)) == 0;
    EXPECT(&counts, same, "attention: output at positions <= t changed when position t+1 changed");
    free(before);
    free(c.qkv); free(c.att); free(c.out); free(c.r); free(dqkv); free(scratch);
}

/* ---- gelu, cross-entropy, encoder ------------------------------------------------- */

typedef struct { size_t n; float *inp, *out, *r; } gelu_ctx;

static double gelu_J(void *p)
{
    gelu_ctx *c = p;
    gelu_forward(c->out, c->inp, c->n);
    return test_dot(c->out, c->r, c->n);
}

static void test_gelu(void)
{
    gelu_ctx c = {64, randn(64, 40, 2), test_zeros(64), randn(64, 41, 1)};
    float *dinp = test_zeros(c.n);
    gelu_backward(dinp, c.inp, c.r, c.n);
    check_grad("gelu d(input)", gelu_J, &c, c.inp, dinp, c.n, 1e-2f, 1e-4);
    /* GELU(0) = 0, GELU(x) ~ x for large x */
    float x[2] = {0.0f, 8.0f}, y[2];
    gelu_forward(y, x, 2);
    EXPECT(&counts, y[0] == 0.0f && fabsf(y[1] - 8.0f) < 1e-4f, "gelu values %g %g", y[0], y[1]);
    free(c.inp); free(c.out); free(c.r); free(dinp);
}

typedef struct { int N, V; float *logits, *probs, *losses; uint8_t *targets; } ce_ctx;

static double ce_J(void *p)
{
    ce_ctx *c = p;
    return crossentropy_forward(c->probs, c->losses, c->logits, c->targets, c->N, c->V);
}

static void test_crossentropy(void)
{
    ce_ctx c = {4, 256, randn(4 * 256, 50, 2), test_zeros(4 * 256), test_zeros(4), malloc(4)};
    for (int i = 0; i < c.N; i++) c.targets[i] = (uint8_t)(17 * i + 3);
    float *dlogits = test_zeros((size_t)c.N * c.V);
    double loss = ce_J(&c);
    crossentropy_backward(dlogits, c.probs, c.targets, 1.0f, c.N, c.V);
    check_grad("cross-entropy d(logits)", ce_J, &c, c.logits, dlogits, (size_t)c.N * c.V, 1e-2f, 1e-3);
    /* reference: -log softmax in double */
    double ref = 0;
    for (int n = 0; n < c.N; n++) {
        double mx = -1e30, s = 0;
        for (int i = 0; i < c.V; i++) mx = fmax(mx, c.logits[n * c.V + i]);
        for (int i = 0; i < c.V; i++) s += exp(c.logits[n * c.V + i] - mx);
        ref += log(s) + mx - c.logits[n * c.V + c.targets[n]];
    }
    EXPECT(&counts, rel_err(loss, ref, 1e-6) < 1e-5, "cross-entropy %g vs double reference %g", loss, ref);
    free(c.logits); free(c.probs); free(c.losses); free(c.targets); free(dlogits);
}

typedef struct { int B, T, C; uint8_t *tokens; float *wte, *wpe, *out, *r; } enc_ctx;

static double enc_J(void *p)
{
    enc_ctx *c = p;
    encoder_forward(c->out, c->tokens, c->wte, c->wpe, c->B, c->T, c->C);
    return test_dot(c->out, c->r, (size_t)c->B * c->T * c->C);
}

static void test_encoder(void)
{
    enc_ctx c = {2, 5, 4, malloc(10), randn(256 * 4, 60, 1), randn(5 * 4, 61, 1), test_zeros(40), randn(40, 62, 1)};
    for (int i = 0; i < 10; i++) c.tokens[i] = (uint8_t)(i % 3 == 0 ? 65 : 66 + i);  /* repeats */
    float *dwte = test_zeros(256 * 4), *dwpe = test_zeros(20);
    enc_J(&c);
    encoder_backward(dwte, dwpe, c.r, c.tokens, c.B, c.T, c.C);
    check_grad("encoder d(wte)", enc_J, &c, c.wte + 65 * 4, dwte + 65 * 4, 16 * 4, 1e-2f, 1e-4);
    check_grad("encoder d(wpe)", enc_J, &c, c.wpe, dwpe, 20, 1e-2f, 1e-4);
    free(c.tokens); free(c.wte); free(c.wpe); free(c.out); free(c.r); free(dwte); free(dwpe);
}

int main(void)
{
    test_gemm();
    test_matmul();
    test_layernorm();
    test_attention();
    test_gelu();
    test_crossentropy();
    test_encoder();
    return test_summary(&counts, "test_kernels");
}
