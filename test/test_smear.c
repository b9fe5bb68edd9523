/* SMEAR layer (src/smear.c): finite differences of every gradient (router and tag
 * routing, with and without expert dropout), the output against a naive double-precision
 * computation, causality bit for bit, the expert dropout, per-sequence invariance; for
 * full FFN experts (H = 4C, GELU) and bottleneck adapter experts (H = 3, swish).
 *
 *   test_smear              run the checks
 *   test_smear --dump DIR   write DIR/{router,dropout,dropout-heavy,tag,adapter}: raw float32
 *                           inputs, weights, outputs and gradients + manifest.txt,
 *                           for test/torch_smear.py
 *
 * Objective J = sum(r * out) for a fixed random r, so dout = r. */
#include "ladle/smear.h"
#include "ladle/rng.h"
#include "testutil.h"

#include <errno.h>
#include <mpi.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static test_counts counts;

static float *randn(size_t n, uint64_t stream, float mean, float scale)
{
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = mean + scale * ladle_rng_normal(11, stream, 77, i);
    return x;
}

/* ---- one layer instance: sizes, parameters, gradients ----------------------------- */

typedef struct {
    int B, T, C, N, H, nseg;
    ladle_smear_dims dims;
    ladle_smear_context ctx;
    int *labels;
    float *inp, *ln_w, *ln_b, *w, *g, *dl, *w1, *b1, *w2, *b2;   /* inputs and parameters */
    float *r, *out;
    float *dinp, *dln_w, *dln_b, *dw, *dg, *ddl, *dw1, *db1, *dw2, *db2;
    ladle_smear_cache *cache;
} layer;

/* hidden 0: full FFN experts (H = 4C); swish 0: GELU */
static void layer_create_ex(layer *L, int B, int T, int C, int N, int S, int tag, float dropout, uint64_t seed,
                            int hidden, int swish)
{
    memset(L, 0, sizeof *L);
    L->dims = (ladle_smear_dims){
        .N = N, .segment = S, .dropout = dropout, .tag = tag, .hidden = hidden, .swish = swish};
    L->B = B; L->T = T; L->C = C; L->N = N; L->H = ladle_smear_hidden(&L->dims, C); L->nseg = T / S;
    L->ctx = (ladle_smear_context){.training = 0, .seed = 5, .step = 1, .first_sequence = 0, .labels = NULL};
    const size_t btc = (size_t)B * T * C, nhc = (size_t)N * L->H * C;
    L->labels = malloc((size_t)B * sizeof(int));
    for (int b = 0; b < B; b++) L->labels[b] = 3 * b - 2;   /* includes a negative label */
    L->ctx.labels = L->labels;
    L->inp = randn(btc, seed + 1, 0, 1);
    /* a router that matters: gains of order 1 (not the 1e-2 init), so the routing varies
     * visibly from segment to segment and its gradients are not tiny */
    L->ln_w = randn((size_t)C, seed + 2, 1, 0.3f);
    L->ln_b = randn((size_t)C, seed + 3, 0, 0.3f);
    L->w = randn((size_t)N * C, seed + 4, 0.2f, 1);
    L->g = randn((size_t)N * C, seed + 5, 0, 0.7f);
    L->dl = randn((size_t)N, seed + 6, 0, 1);
    /* experts that differ from one another, so dp is not small */
    L->w1 = randn(nhc, seed + 7, 0, 1.0f / sqrtf((float)C));
    L->b1 = randn((size_t)N * L->H, seed + 8, 0, 0.3f);
    L->w2 = randn(nhc, seed + 9, 0, 1.0f / sqrtf((float)L->H));
    L->b2 = randn((size_t)N * C, seed + 10, 0, 0.3f);
    L->r = randn(btc, seed + 11, 0, 1);
    L->out = test_zeros(btc);
    L->dinp = test_zeros(btc);
    L->dln_w = test_zeros((size_t)C); L->dln_b = test_zeros((size_t)C);
    L->dw = test_zeros((size_t)N * C); L->dg = test_zeros((size_t)N * C); L->ddl = test_zeros((size_t)N);
    L->dw1 = test_zeros(nhc); L->db1 = test_zeros((size_t)N * L->H);
    L->dw2 = test_zeros(nhc); L->db2 = test_zeros((size_t)N * C);
    L->cache = ladle_smear_cache_create(B, T, C, &L->dims);
}

static void layer_create(layer *L, int B, int T, int C, int N, int S, int tag, float dropout, uint64_t seed)
{
    layer_create_ex(L, B, T, C, N, S, tag, dropout, seed, 0, 0);
}

static void layer_free(layer *L)
{
    float *all[] = {L->inp, L->ln_w, L->ln_b, L->w, L->g, L->dl, L->w1, L->b1, L->w2, L->b2, L->r, L->out,
                    L->dinp, L->dln_w, L->dln_b, L->dw, L->dg, L->ddl, L->dw1, L->db1, L->dw2, L->db2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
    free(L->labels);
    ladle_smear_cache_free(L->cache);
}

static ladle_smear_router router_of(const layer *L)
{
    return (ladle_smear_router){L->ln_w, L->ln_b, L->w, L->g, L->dl};
}

static void forward(layer *L)
{
    ladle_smear_router rt = router_of(L);
    smear_forward(L->out, L->cache, L->inp, L->dims.tag ? NULL : &rt, L->w1, L->b1, L->w2, L->b2, L->B, L->T,
                  L->C, &L->dims, &L->ctx);
}

static void zero_grads(layer *L)
{
    const size_t btc = (size_t)L->B * L->T * L->C, nhc = (size_t)L->N * L->H * L->C;
    memset(L->dinp, 0, btc * sizeof(float));
    memset(L->dln_w, 0, (size_t)L->C * sizeof(float));
    memset(L->dln_b, 0, (size_t)L->C * sizeof(float));
    memset(L->dw, 0, (size_t)L->N * L->C * sizeof(float));
    memset(L->dg, 0, (size_t)L->N * L->C * sizeof(float));
    memset(L->ddl, 0, (size_t)L->N * sizeof(float));
    memset(L->dw1, 0, nhc * sizeof(float));
    memset(L->db1, 0, (size_t)L->N * L->H * sizeof(float));
    memset(L->dw2, 0, nhc * sizeof(float));
    memset(L->db2, 0, (size_t)L->N * L->C * sizeof(float));
}

static void backward(layer *L)
{
    ladle_smear_router rt = router_of(L);
    ladle_smear_router_grads drt = {L->dln_w, L->dln_b, L->dw, L->dg, L->ddl};
    smear_backward(L->dinp, L->dims.tag ? NULL : &drt, L->dw1, L->db1, L->dw2, L->db2, L->r, L->cache, L->inp,
                   L->dims.tag ? NULL : &rt, L->w1, L->b1, L->w2, L->b2, L->B, L->T, L->C, &L->dims);
}

static double layer_J(void *ctx)
{
    layer *L = ctx;
    forward(L);
    return test_dot(L->out, L->r, (size_t)L->B * L->T * L->C);
}

/* ---- finite differences (test_fd_rel_error, testutil.h) ---------------------------- */

static double worst_fd = 0;

static void check_grad(const char *what, layer *L, float *x, const float *g, size_t n, float eps, double tol)
{
    double den;
    double rel = test_fd_rel_error(layer_J, L, x, g, n, eps, NULL, &den);
    EXPECT(&counts, rel <= tol, "%s: finite-difference rel. error %.3g > %.3g", what, rel, tol);
    EXPECT(&counts, den > 0, "%s: gradient is identically zero, the check is vacuous", what);
    if (rel > worst_fd) worst_fd = rel;
    printf("  %-36s rel. error %.2e\n", what, rel);
}

static void fd_all(layer *L, const char *tag, double tol)
{
    char name[96];
    zero_grads(L);
    forward(L);
    backward(L);
    const size_t nhc = (size_t)L->N * L->H * L->C;
    snprintf(name, sizeof name, "%s d(inp)", tag);
    check_grad(name, L, L->inp, L->dinp, (size_t)L->B * L->T * L->C, 1e-2f, tol);
    if (!L->dims.tag) {
        snprintf(name, sizeof name, "%s d(ln_w)", tag);
        check_grad(name, L, L->ln_w, L->dln_w, (size_t)L->C, 1e-2f, tol);
        snprintf(name, sizeof name, "%s d(ln_b)", tag);
        check_grad(name, L, L->ln_b, L->dln_b, (size_t)L->C, 1e-2f, tol);
        snprintf(name, sizeof name, "%s d(router w)", tag);
        check_grad(name, L, L->w, L->dw, (size_t)L->N * L->C, 1e-2f, tol);
        snprintf(name, sizeof name, "%s d(router g)", tag);
        check_grad(name, L, L->g, L->dg, (size_t)L->N * L->C, 1e-2f, tol);
        snprintf(name, sizeof name, "%s d(default_logits)", tag);
        check_grad(name, L, L->dl, L->ddl, (size_t)L->N, 1e-2f, tol);
    }
    snprintf(name, sizeof name, "%s d(w1)", tag);
    check_grad(name, L, L->w1, L->dw1, nhc, 1e-2f, tol);
    snprintf(name, sizeof name, "%s d(b1)", tag);
    check_grad(name, L, L->b1, L->db1, (size_t)L->N * L->H, 1e-2f, tol);
    snprintf(name, sizeof name, "%s d(w2)", tag);
    check_grad(name, L, L->w2, L->dw2, nhc, 1e-2f, tol);
    snprintf(name, sizeof name, "%s d(b2)", tag);
    check_grad(name, L, L->b2, L->db2, (size_t)L->N * L->C, 1e-2f, tol);
}

/* ---- naive double-precision reference ------------------------------------------------ */

static double gelu_d(double x)
{
    return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}

static double swish_d(double x)
{
    return x / (1.0 + exp(-x));
}

/* The layer written out per (sequence, segment) in double, from the header's description;
 * dropout from the same counters (so it also checks the index formula). */
static void naive_forward(const layer *L, double *out, double *probs)
{
    const int B = L->B, T = L->T, C = L->C, N = L->N, H = L->H, S = L->dims.segment, nseg = L->nseg;
    double *m = malloc((size_t)C * sizeof(double)), *z = malloc((size_t)C * sizeof(double));
    double *p = malloc((size_t)N * sizeof(double)), *lg = malloc((size_t)N * sizeof(double));
    double *wn = malloc((size_t)C * sizeof(double)), *hid = malloc((size_t)H * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int s = 0; s < nseg; s++) {
            if (L->dims.tag) {
                int e = ((L->labels[b] % N) + N) % N;
                for (int i = 0; i < N; i++) p[i] = i == e;
            } else {
                if (s == 0)
                    for (int i = 0; i < N; i++) lg[i] = L->dl[i];
                else {
                    double mu = 0, var = 0;
                    for (int c = 0; c < C; c++) {
                        m[c] = 0;
                        for (int t = (s - 1) * S; t < s * S; t++) m[c] += L->inp[((size_t)b * T + t) * C + c];
                        m[c] /= S;
                        mu += m[c];
                    }
                    mu /= C;
                    for (int c = 0; c < C; c++) var += (m[c] - mu) * (m[c] - mu);
                    var /= C;
                    for (int c = 0; c < C; c++) z[c] = (m[c] - mu) / sqrt(var + 1e-5) * L->ln_w[c] + L->ln_b[c];
                    for (int i = 0; i < N; i++) {
                        const float *wi = L->w + (size_t)i * C;
                        double wm = 0, wv = 0;
                        for (int c = 0; c < C; c++) wm += wi[c];
                        wm /= C;
                        for (int c = 0; c < C; c++) wv += (wi[c] - wm) * (wi[c] - wm);
                        wv /= C;
                        lg[i] = 0;
                        for (int c = 0; c < C; c++) {
                            wn[c] = (wi[c] - wm) / sqrt(wv + 1e-5);
                            lg[i] += wn[c] * L->g[(size_t)i * C + c] * z[c];
                        }
                    }
                }
                double mx = lg[0], sum = 0;
                for (int i = 1; i < N; i++) mx = fmax(mx, lg[i]);
                for (int i = 0; i < N; i++) sum += (p[i] = exp(lg[i] - mx));
                for (int i = 0; i < N; i++) p[i] /= sum;
                if (L->ctx.training && L->dims.dropout > 0) {
                    double kept = 0;
                    int nkept = 0;
                    int drop[64];
                    for (int i = 0; i < N; i++) {
                        uint64_t idx = ((uint64_t)(L->ctx.first_sequence + b) * nseg + s) * N + i;
                        drop[i] = ladle_rng_uniform(L->ctx.seed, L->ctx.step, LADLE_STREAM_EXPERT + 1, idx) <
                                  L->dims.dropout;
                        if (!drop[i]) { kept += p[i]; nkept++; }
                    }
                    if (nkept > 0)   /* all dropped: the undropped softmax */
                        for (int i = 0; i < N; i++) p[i] = drop[i] ? 0.0 : p[i] / kept;
                }
            }
            for (int i = 0; i < N; i++) probs[((size_t)b * nseg + s) * N + i] = p[i];
            for (int t = s * S; t < (s + 1) * S; t++) {
                const float *x = L->inp + ((size_t)b * T + t) * C;
                for (int j = 0; j < H; j++) {
                    double acc = 0;
                    for (int i = 0; i < N; i++) {
                        double e = L->b1[(size_t)i * H + j];
                        for (int c = 0; c < C; c++) e += (double)L->w1[((size_t)i * H + j) * C + c] * x[c];
                        acc += p[i] * e;   /* linear in the weights: merging = mixing outputs */
                    }
                    hid[j] = L->dims.swish ? swish_d(acc) : gelu_d(acc);
                }
                for (int c = 0; c < C; c++) {
                    double acc = 0;
                    for (int i = 0; i < N; i++) {
                        double e = L->b2[(size_t)i * C + c];
                        for (int j = 0; j < H; j++) e += (double)L->w2[((size_t)i * C + c) * H + j] * hid[j];
                        acc += p[i] * e;
                    }
                    out[((size_t)b * T + t) * C + c] = acc;
                }
            }
        }
    free(m); free(z); free(p); free(lg); free(wn); free(hid);
}

/* max |C - reference| over max |reference|, and the worst probability difference */
static void compare_naive(layer *L, const char *what, double tol)
{
    const size_t n = (size_t)L->B * L->T * L->C, np = (size_t)L->B * L->nseg * L->N;
    double *ref = malloc(n * sizeof(double)), *pref = malloc(np * sizeof(double));
    forward(L);
    naive_forward(L, ref, pref);
    double err = 0, scale = 0, perr = 0;
    for (size_t i = 0; i < n; i++) {
        err = fmax(err, fabs(L->out[i] - ref[i]));
        scale = fmax(scale, fabs(ref[i]));
    }
    const float *p = ladle_smear_probs(L->cache);
    int zeros_agree = 1;
    for (size_t i = 0; i < np; i++) {
        perr = fmax(perr, fabs(p[i] - pref[i]));
        if ((p[i] == 0.0f) != (pref[i] == 0.0)) zeros_agree = 0;
    }
    EXPECT(&counts, err / scale <= tol, "%s: output vs naive double, max error %.3g (rel. %.3g)", what, err, err / scale);
    EXPECT(&counts, perr <= 1e-6, "%s: probabilities vs naive double, max error %.3g", what, perr);
    EXPECT(&counts, zeros_agree, "%s: dropped experts differ from the naive reference", what);
    printf("  %-36s out max rel. error %.2e, probs max error %.2e\n", what, err / scale, perr);
    free(ref); free(pref);
}

/* ---- tests -------------------------------------------------------------------------- */

static void test_router_fd(void)
{
    layer L;
    layer_create(&L, 2, 12, 8, 3, 4, 0, 0.0f, 100);   /* 3 segments */
    fd_all(&L, "router", 1e-3);
    compare_naive(&L, "router naive", 2e-5);
    /* the router really routes: probabilities differ between segments */
    const float *p = ladle_smear_probs(L.cache);
    double spread = 0;
    for (int i = 0; i < L.N; i++) spread = fmax(spread, fabs(p[L.N + i] - p[2 * L.N + i]));
    EXPECT(&counts, spread > 0.05, "router: segments 1 and 2 of sequence 0 routed alike (%.3g)", spread);
    /* backward accumulates: a second call doubles every gradient */
    float before[4] = {L.dinp[5], L.dg[3], L.dw1[7], L.ddl[1]};
    backward(&L);
    float after[4] = {L.dinp[5], L.dg[3], L.dw1[7], L.ddl[1]};
    int ok = 1;
    for (int i = 0; i < 4; i++) ok &= fabsf(after[i] - 2 * before[i]) <= 1e-5f * fabsf(before[i]) + 1e-7f;
    EXPECT(&counts, ok, "smear_backward must accumulate");
    layer_free(&L);
}

static void test_dropout_fd(void)
{
    /* the dropout mask is a function of the counters only, so J stays differentiable in
     * the parameters and finite differences check the renormalisation's backward */
    layer L;
    layer_create(&L, 2, 16, 8, 4, 4, 0, 0.4f, 200);
    L.ctx.training = 1;
    L.ctx.step = 3;
    L.ctx.first_sequence = 7;
    forward(&L);
    const unsigned nrows = (unsigned)(L.B * L.nseg);
    int renormed = 0, plain = 0;
    const float *p = ladle_smear_probs(L.cache);
    for (unsigned r = 0; r < nrows; r++) {
        int z = 0;
        for (int i = 0; i < L.N; i++) z += p[r * L.N + i] == 0.0f;
        if (z) renormed++; else plain++;
    }
    EXPECT(&counts, renormed > 0 && plain > 0, "dropout FD: want rows with and without dropped experts (%d, %d)",
           renormed, plain);
    fd_all(&L, "dropout", 1e-3);
    compare_naive(&L, "dropout naive", 2e-5);
    layer_free(&L);
}

static void test_tag(void)
{
    layer L;
    layer_create(&L, 3, 12, 8, 3, 6, 1, 0.3f, 300);
    L.ctx.training = 1;   /* no dropout in tag routing */
    fd_all(&L, "tag", 1e-3);
    compare_naive(&L, "tag naive", 2e-5);
    const float *p = ladle_smear_probs(L.cache);
    int ok = 1;
    for (int b = 0; b < L.B; b++)
        for (int s = 0; s < L.nseg; s++)
            for (int i = 0; i < L.N; i++)
                ok &= p[((size_t)b * L.nseg + s) * L.N + i] == (i == ((L.labels[b] % L.N) + L.N) % L.N ? 1.0f : 0.0f);
    EXPECT(&counts, ok, "tag: probabilities are not one-hot(label mod N)");
    /* only the tagged expert gets a gradient: sequence labels -2, 1, 4 with N = 3 are all
     * expert 1, so experts 0 and 2 stay exactly zero */
    const size_t hc = (size_t)L.H * L.C;
    int zero = 1, nonzero = 0;
    for (size_t k = 0; k < hc; k++) {
        zero &= L.dw1[k] == 0.0f && L.dw1[2 * hc + k] == 0.0f;
        nonzero |= L.dw1[hc + k] != 0.0f;
    }
    EXPECT(&counts, zero && nonzero, "tag: gradient reached an expert no sequence is tagged with");
    layer_free(&L);
}

/* Bottleneck adapter experts (METHODS.md section 2): C -> 3 -> C with swish. Finite
 * differences and the naive reference for router routing (several segments, with and
 * without expert dropout) and tag routing; the cache and parameters have the adapter's
 * shapes; and the activation really is swish (GELU gives another output). */
static void test_adapter(void)
{
    layer L;
    layer_create_ex(&L, 2, 16, 8, 3, 4, 0, 0.0f, 1000, 3, 1);   /* 4 segments */
    EXPECT(&counts, L.H == 3, "adapter: H = %d, want 3", L.H);
    fd_all(&L, "adapter router", 1e-3);
    compare_naive(&L, "adapter router naive", 2e-5);
    const float *p = ladle_smear_probs(L.cache);
    double spread = 0;
    for (int i = 0; i < L.N; i++) spread = fmax(spread, fabs(p[L.N + i] - p[2 * L.N + i]));
    EXPECT(&counts, spread > 0.05, "adapter router: segments 1 and 2 of sequence 0 routed alike (%.3g)", spread);
    /* control: the same parameters with GELU experts give a visibly different output */
    {
        const size_t n = (size_t)L.B * L.T * L.C;
        float *o = malloc(n * sizeof(float));
        memcpy(o, L.out, n * sizeof(float));
        ladle_smear_dims g = L.dims;
        g.swish = 0;
        ladle_smear_cache *gc = ladle_smear_cache_create(L.B, L.T, L.C, &g);
        ladle_smear_router rt = router_of(&L);
        smear_forward(L.out, gc, L.inp, &rt, L.w1, L.b1, L.w2, L.b2, L.B, L.T, L.C, &g, &L.ctx);
        double diff = 0, scale = 0;
        for (size_t i = 0; i < n; i++) {
            diff = fmax(diff, fabs((double)L.out[i] - o[i]));
            scale = fmax(scale, fabs((double)o[i]));
        }
        EXPECT(&counts, diff > 1e-2 * scale, "adapter: swish and GELU experts agree (%.3g)", diff / scale);
        printf("  adapter: GELU instead of swish changes the output by %.2e (rel. to max)\n", diff / scale);
        ladle_smear_cache_free(gc);
        free(o);
    }
    layer_free(&L);

    layer D;
    layer_create_ex(&D, 2, 16, 8, 4, 4, 0, 0.4f, 1100, 3, 1);
    D.ctx.training = 1;
    D.ctx.step = 3;
    D.ctx.first_sequence = 7;
    forward(&D);
    int renormed = 0, plain = 0;
    p = ladle_smear_probs(D.cache);
    for (int r = 0; r < D.B * D.nseg; r++) {
        int z = 0;
        for (int i = 0; i < D.N; i++) z += p[r * D.N + i] == 0.0f;
        if (z) renormed++; else plain++;
    }
    EXPECT(&counts, renormed > 0 && plain > 0, "adapter dropout FD: want rows with and without dropped experts (%d, %d)",
           renormed, plain);
    fd_all(&D, "adapter dropout", 1e-3);
    compare_naive(&D, "adapter dropout naive", 2e-5);
    layer_free(&D);

    layer G;
    layer_create_ex(&G, 3, 12, 8, 3, 6, 1, 0.3f, 1200, 3, 1);
    G.ctx.training = 1;
    fd_all(&G, "adapter tag", 1e-3);
    compare_naive(&G, "adapter tag naive", 2e-5);
    layer_free(&G);
}

/* Changing the input at positions > t (or only at t + 1) never changes the output at
 * positions <= t, bit for bit; and the router does read the previous segment. */
static void test_causality(int training, int hidden, int swish)
{
    layer L;
    const int S = 4;
    layer_create_ex(&L, 2, 16, 8, 3, S, 0, 0.3f, 400 + (uint64_t)hidden, hidden, swish);
    const char *kind = hidden ? "adapter" : "FFN";
    L.ctx.training = training;
    const size_t n = (size_t)L.B * L.T * L.C, row = (size_t)L.C * sizeof(float);
    float *base = malloc(n * sizeof(float)), *inp0 = malloc(n * sizeof(float));
    memcpy(inp0, L.inp, n * sizeof(float));
    forward(&L);
    memcpy(base, L.out, n * sizeof(float));
    const int ts[] = {0, 2, S - 1, S, 2 * S - 1, 2 * S, 3 * S - 2, 3 * S - 1, L.T - 2};
    int bad = 0, router_seen = 0, router_cases = 0;
    for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++)
        for (int only_next = 0; only_next < 2; only_next++) {
            const int t = ts[k];
            for (int b = 0; b < L.B; b++)
                for (int u = t + 1; u < (only_next ? t + 2 : L.T); u++)
                    for (int c = 0; c < L.C; c++)
                        L.inp[((size_t)b * L.T + u) * L.C + c] += 0.5f + ladle_rng_normal(3, (uint64_t)u, 1, (uint64_t)c);
            forward(&L);
            for (int b = 0; b < L.B; b++) {
                const size_t off = (size_t)b * L.T * L.C;
                if (memcmp(L.out + off, base + off, (size_t)(t + 1) * row) != 0) bad++;
                /* non-vacuous: with only t + 1 changed, the next segment (untouched
                 * inputs) must see it through its router */
                int next = ((t + 1) / S + 1) * S;
                if (only_next && next < L.T) {
                    router_cases++;
                    router_seen += memcmp(L.out + off + (size_t)next * L.C, base + off + (size_t)next * L.C,
                                          (size_t)S * row) != 0;
                }
            }
            memcpy(L.inp, inp0, n * sizeof(float));
        }
    EXPECT(&counts, bad == 0, "causality (%s, training %d): %d outputs at <= t changed with inputs at > t", kind,
           training, bad);
    EXPECT(&counts, router_cases > 0 && router_seen == router_cases,
           "causality (%s, training %d): the next segment ignored its previous segment in %d of %d cases", kind,
           training, router_cases - router_seen, router_cases);
    printf("  causality (%s, training %d): %zu cut points x 2 x %d sequences bit-identical; router sensitivity "
           "%d/%d\n",
           kind, training, sizeof ts / sizeof ts[0], L.B, router_seen, router_cases);
    free(base); free(inp0);
    layer_free(&L);
}

static void test_dropout(void)
{
    layer L;
    layer_create(&L, 4, 32, 8, 4, 4, 0, 0.5f, 500);   /* 32 segments x 4 experts */
    const size_t n = (size_t)L.B * L.T * L.C, np = (size_t)L.B * L.nseg * L.N;
    float *p1 = malloc(np * sizeof(float)), *o1 = malloc(n * sizeof(float));
    L.ctx.training = 1;
    L.ctx.seed = 42;
    L.ctx.step = 1;
    forward(&L);
    memcpy(p1, ladle_smear_probs(L.cache), np * sizeof(float));
    memcpy(o1, L.out, n * sizeof(float));
    forward(&L);
    EXPECT(&counts, memcmp(p1, ladle_smear_probs(L.cache), np * sizeof(float)) == 0 &&
                        memcmp(o1, L.out, n * sizeof(float)) == 0,
           "dropout: two forwards with the same counters differ");
    /* dropped fraction, and every row a distribution */
    int zeros = 0, rows_ok = 1;
    for (size_t r = 0; r < np / L.N; r++) {
        double sum = 0;
        for (int i = 0; i < L.N; i++) {
            zeros += p1[r * L.N + i] == 0.0f;
            sum += p1[r * L.N + i];
        }
        rows_ok &= fabs(sum - 1) < 1e-6;
    }
    double frac = (double)zeros / (double)np;
    EXPECT(&counts, frac > 0.3 && frac < 0.6, "dropout 0.5: dropped fraction %.3f (expect ~0.44)", frac);
    EXPECT(&counts, rows_ok, "dropout: a row of probabilities does not sum to 1");
    printf("  dropout 0.5: %d of %zu probabilities dropped (%.3f; ~0.44 expected with the all-dropped fallback)\n",
           zeros, np, frac);
    compare_naive(&L, "dropout 0.5 naive", 2e-5);

    L.ctx.step = 2;
    forward(&L);
    EXPECT(&counts, memcmp(p1, ladle_smear_probs(L.cache), np * sizeof(float)) != 0,
           "dropout: step 2 dropped the same experts as step 1");
    L.ctx.step = 1;
    L.ctx.seed = 43;
    forward(&L);
    EXPECT(&counts, memcmp(p1, ladle_smear_probs(L.cache), np * sizeof(float)) != 0,
           "dropout: seed 43 dropped the same experts as seed 42");
    L.ctx.seed = 42;

    /* a dropped expert has no weight: change it wholesale, the segment's output is equal */
    size_t row = 0;
    int e = -1;
    for (size_t r = 0; r < np / L.N && e < 0; r++)
        for (int i = 0; i < L.N; i++)
            if (p1[r * L.N + i] == 0.0f) { row = r; e = i; break; }
    EXPECT(&counts, e >= 0, "dropout: nothing dropped");
    if (e >= 0) {
        const size_t hc = (size_t)L.H * L.C;
        for (size_t k = 0; k < hc; k++) { L.w1[e * hc + k] += 3.0f; L.w2[e * hc + k] -= 3.0f; }
        for (int k = 0; k < L.H; k++) L.b1[(size_t)e * L.H + k] += 3.0f;
        for (int k = 0; k < L.C; k++) L.b2[(size_t)e * L.C + k] += 3.0f;
        forward(&L);
        const size_t t0 = row * (size_t)L.dims.segment;   /* rows are (b, s) = b * nseg + s */
        int same = 1;
        for (size_t k = t0 * L.C; k < (t0 + L.dims.segment) * L.C; k++) same &= L.out[k] == o1[k];
        EXPECT(&counts, same, "dropout: segment %zu changed when its dropped expert %d changed", row, e);
        /* and gets no gradient from that segment: with r zero elsewhere, dW_e == 0 */
        memset(L.r, 0, n * sizeof(float));
        for (size_t k = t0 * L.C; k < (t0 + L.dims.segment) * L.C; k++) L.r[k] = 1.0f;
        zero_grads(&L);
        backward(&L);
        int zero = 1, other = 0;
        for (size_t k = 0; k < hc; k++) {
            zero &= L.dw1[e * hc + k] == 0.0f && L.dw2[e * hc + k] == 0.0f;
            for (int i = 0; i < L.N; i++) other |= i != e && L.dw1[i * hc + k] != 0.0f;
        }
        EXPECT(&counts, zero && other, "dropout: the dropped expert %d got a gradient from segment %zu", e, row);
    }

    /* training = 0: no dropout at any rate */
    L.ctx.training = 0;
    forward(&L);
    const float *p = ladle_smear_probs(L.cache);
    int any_zero = 0;
    for (size_t i = 0; i < np; i++) any_zero |= p[i] == 0.0f;
    EXPECT(&counts, !any_zero, "dropout: training = 0 still dropped experts");
    compare_naive(&L, "no-training naive", 2e-5);
    free(p1); free(o1);
    layer_free(&L);

    /* almost everything dropped: rows where every expert is dropped keep the softmax */
    layer A;
    layer_create(&A, 2, 32, 8, 2, 4, 0, 0.9f, 600);
    A.ctx.training = 1;
    forward(&A);
    p = ladle_smear_probs(A.cache);
    int fallback = 0, onehot = 0;
    for (int r = 0; r < A.B * A.nseg; r++) {
        int z = (p[2 * r] == 0.0f) + (p[2 * r + 1] == 0.0f);
        fallback += z == 0;
        onehot += z == 1 && (p[2 * r] == 1.0f || p[2 * r + 1] == 1.0f);
    }
    EXPECT(&counts, fallback > 0 && onehot > 0, "dropout 0.9: %d all-dropped rows, %d one-kept rows", fallback, onehot);
    compare_naive(&A, "dropout 0.9 naive", 2e-5);
    layer_free(&A);
}

/* B sequences at once = one at a time with first_sequence offsets (dropout on):
 * outputs, probabilities and input gradients bit for bit, parameter gradients summed. */
static void test_per_sequence(int tag, int hidden, int swish)
{
    layer L;
    const int B = 3;
    layer_create_ex(&L, B, 16, 8, 3, 4, tag, 0.4f, 700, hidden, swish);
    L.ctx = (ladle_smear_context){.training = 1, .seed = 9, .step = 4, .first_sequence = 10, .labels = L.labels};
    zero_grads(&L);
    forward(&L);
    backward(&L);
    const size_t tc = (size_t)L.T * L.C, sp = (size_t)L.nseg * L.N, nhc = (size_t)L.N * L.H * L.C;
    double *sum_w1 = calloc(nhc, sizeof(double)), *sum_g = calloc((size_t)L.N * L.C, sizeof(double));
    double *sum_w = calloc((size_t)L.N * L.C, sizeof(double)), *sum_dl = calloc((size_t)L.N, sizeof(double));
    int out_same = 1, probs_same = 1, dinp_same = 1;
    for (int b = 0; b < B; b++) {
        layer one;
        layer_create_ex(&one, 1, 16, 8, 3, 4, tag, 0.4f, 700, hidden, swish);
        memcpy(one.inp, L.inp + b * tc, tc * sizeof(float));
        memcpy(one.r, L.r + b * tc, tc * sizeof(float));
        one.labels[0] = L.labels[b];
        one.ctx = L.ctx;
        one.ctx.first_sequence = L.ctx.first_sequence + b;
        one.ctx.labels = one.labels;
        zero_grads(&one);
        forward(&one);
        backward(&one);
        out_same &= memcmp(one.out, L.out + b * tc, tc * sizeof(float)) == 0;
        probs_same &= memcmp(ladle_smear_probs(one.cache), ladle_smear_probs(L.cache) + b * sp, sp * sizeof(float)) == 0;
        dinp_same &= memcmp(one.dinp, L.dinp + b * tc, tc * sizeof(float)) == 0;
        for (size_t k = 0; k < nhc; k++) sum_w1[k] += one.dw1[k];
        for (int k = 0; k < L.N * L.C; k++) { sum_g[k] += one.dg[k]; sum_w[k] += one.dw[k]; }
        for (int k = 0; k < L.N; k++) sum_dl[k] += one.ddl[k];
        layer_free(&one);
    }
    double e_w1 = 0, s_w1 = 0, e_r = 0, s_r = 0;
    for (size_t k = 0; k < nhc; k++) { e_w1 = fmax(e_w1, fabs(sum_w1[k] - L.dw1[k])); s_w1 = fmax(s_w1, fabs(L.dw1[k])); }
    for (int k = 0; k < L.N * L.C; k++) {
        e_r = fmax(e_r, fmax(fabs(sum_g[k] - L.dg[k]), fabs(sum_w[k] - L.dw[k])));
        s_r = fmax(s_r, fmax(fabs(L.dg[k]), fabs(L.dw[k])));
    }
    for (int k = 0; k < L.N; k++) { e_r = fmax(e_r, fabs(sum_dl[k] - L.ddl[k])); s_r = fmax(s_r, fabs(L.ddl[k])); }
    const char *mode = hidden ? (tag ? "adapter tag" : "adapter router") : (tag ? "tag" : "router");
    EXPECT(&counts, out_same, "per-sequence (%s): outputs differ from one-at-a-time", mode);
    EXPECT(&counts, probs_same, "per-sequence (%s): probabilities differ from one-at-a-time", mode);
    EXPECT(&counts, dinp_same, "per-sequence (%s): input gradients differ from one-at-a-time", mode);
    EXPECT(&counts, e_w1 <= 1e-5 * s_w1, "per-sequence (%s): dw1 differs from the sum (%.3g)", mode, e_w1 / s_w1);
    if (!tag)
        EXPECT(&counts, e_r <= 1e-5 * s_r, "per-sequence (%s): router gradients differ from the sum (%.3g)", mode,
               e_r / s_r);
    printf("  per-sequence (%s, dropout on): out/probs/dinp bit-identical %d/%d/%d; dw1 rel. %.1e, router rel. %.1e\n",
           mode, out_same, probs_same, dinp_same, e_w1 / s_w1, tag ? 0.0 : e_r / s_r);
    free(sum_w1); free(sum_g); free(sum_w); free(sum_dl);
    layer_free(&L);
}

/* ---- --dump DIR ------------------------------------------------------------------- */

static void write_tensor(FILE *man, const char *dir, const char *name, const void *data, size_t elem, size_t n,
                         const char *shape)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.bin", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, elem, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "test_smear: cannot write %s: %s\n", path, strerror(errno));
        exit(1);
    }
    fprintf(man, "tensor %s %s\n", name, shape);
}

static int dump_config(const char *root, const char *name, int B, int T, int C, int N, int S, int tag, int training,
                       float dropout, int hidden, int swish)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "test_smear: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    layer L;
    layer_create_ex(&L, B, T, C, N, S, tag, dropout,
                    900 + (uint64_t)tag * 10 + (uint64_t)training + 100 * (uint64_t)swish, hidden, swish);
    const int H = L.H;
    L.ctx = (ladle_smear_context){.training = training, .seed = 9, .step = 3, .first_sequence = 5, .labels = L.labels};
    zero_grads(&L);
    forward(&L);
    backward(&L);
    char path[4200];
    snprintf(path, sizeof path, "%s/manifest.txt", dir);
    FILE *man = fopen(path, "w");
    if (!man) {
        fprintf(stderr, "test_smear: cannot write %s\n", path);
        return 1;
    }
    fprintf(man, "B %d\nT %d\nC %d\nN %d\nsegment %d\ntag %d\ntraining %d\ndropout %.9g\n", B, T, C, N, S, tag,
            training, (double)dropout);
    fprintf(man, "hidden %d\nswish %d\n", H, swish);
    fprintf(man, "seed %llu\nstep %llu\nfirst_sequence %ld\nstream %d\n", (unsigned long long)L.ctx.seed,
            (unsigned long long)L.ctx.step, L.ctx.first_sequence, (int)LADLE_STREAM_EXPERT + 1);
    char btc[64], nhc[64], nch[64], nh[64], nc[64], cc[64], nn[64], bsn[64], bb[64];
    snprintf(btc, sizeof btc, "%d %d %d", B, T, C);
    snprintf(nhc, sizeof nhc, "%d %d %d", N, H, C);
    snprintf(nch, sizeof nch, "%d %d %d", N, C, H);
    snprintf(nh, sizeof nh, "%d %d", N, H);
    snprintf(nc, sizeof nc, "%d %d", N, C);
    snprintf(cc, sizeof cc, "%d", C);
    snprintf(nn, sizeof nn, "%d", N);
    snprintf(bsn, sizeof bsn, "%d %d %d", B, T / S, N);
    snprintf(bb, sizeof bb, "%d", B);
    const size_t sz_btc = (size_t)B * T * C, sz_nhc = (size_t)N * H * C;
    const size_t f = sizeof(float);
    write_tensor(man, dir, "inp", L.inp, f, sz_btc, btc);
    write_tensor(man, dir, "dout", L.r, f, sz_btc, btc);
    write_tensor(man, dir, "w1", L.w1, f, sz_nhc, nhc);
    write_tensor(man, dir, "b1", L.b1, f, (size_t)N * H, nh);
    write_tensor(man, dir, "w2", L.w2, f, sz_nhc, nch);
    write_tensor(man, dir, "b2", L.b2, f, (size_t)N * C, nc);
    write_tensor(man, dir, "labels", L.labels, sizeof(int), (size_t)B, bb);   /* int32 */
    write_tensor(man, dir, "out", L.out, f, sz_btc, btc);
    write_tensor(man, dir, "probs", ladle_smear_probs(L.cache), f, (size_t)B * (T / S) * N, bsn);
    write_tensor(man, dir, "d_inp", L.dinp, f, sz_btc, btc);
    write_tensor(man, dir, "d_w1", L.dw1, f, sz_nhc, nhc);
    write_tensor(man, dir, "d_b1", L.db1, f, (size_t)N * H, nh);
    write_tensor(man, dir, "d_w2", L.dw2, f, sz_nhc, nch);
    write_tensor(man, dir, "d_b2", L.db2, f, (size_t)N * C, nc);
    if (!tag) {
        write_tensor(man, dir, "ln_w", L.ln_w, f, (size_t)C, cc);
        write_tensor(man, dir, "ln_b", L.ln_b, f, (size_t)C, cc);
        write_tensor(man, dir, "w", L.w, f, (size_t)N * C, nc);
        write_tensor(man, dir, "g", L.g, f, (size_t)N * C, nc);
        write_tensor(man, dir, "default_logits", L.dl, f, (size_t)N, nn);
        write_tensor(man, dir, "d_ln_w", L.dln_w, f, (size_t)C, cc);
        write_tensor(man, dir, "d_ln_b", L.dln_b, f, (size_t)C, cc);
        write_tensor(man, dir, "d_w", L.dw, f, (size_t)N * C, nc);
        write_tensor(man, dir, "d_g", L.dg, f, (size_t)N * C, nc);
        write_tensor(man, dir, "d_default_logits", L.ddl, f, (size_t)N, nn);
    }
    fclose(man);
    printf("test_smear: wrote %s (B %d, T %d, C %d, N %d, segment %d, tag %d, training %d, dropout %g, hidden %d, "
           "swish %d)\n",
           dir, B, T, C, N, S, tag, training, (double)dropout, H, swish);
    layer_free(&L);
    return 0;
}

static int dump(const char *root)
{
    const uint32_t one = 1;   /* raw dumps are the host's float32: must be little-endian */
    unsigned char first;
    memcpy(&first, &one, 1);
    if (first != 1) {
        fprintf(stderr, "test_smear: big-endian host, the raw dumps would be misread\n");
        return 1;
    }
    if (mkdir(root, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "test_smear: cannot create %s: %s\n", root, strerror(errno));
        return 1;
    }
    int rc = 0;
    rc |= dump_config(root, "router", 3, 16, 16, 4, 4, 0, 0, 0.0f, 0, 0);
    rc |= dump_config(root, "dropout", 3, 16, 16, 4, 4, 0, 1, 0.4f, 0, 0);
    /* most segments lose every expert or all but one: the fallback and one-hot rows */
    rc |= dump_config(root, "dropout-heavy", 3, 16, 8, 3, 2, 0, 1, 0.75f, 0, 0);
    rc |= dump_config(root, "tag", 3, 16, 16, 4, 8, 1, 0, 0.0f, 0, 0);
    /* bottleneck adapter experts C -> 3 -> C with swish, router with expert dropout */
    rc |= dump_config(root, "adapter", 3, 16, 16, 4, 4, 0, 1, 0.4f, 3, 1);
    return rc;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rc;
    if (argc == 3 && strcmp(argv[1], "--dump") == 0)
        rc = dump(argv[2]);
    else if (argc != 1) {
        fprintf(stderr, "usage: test_smear [--dump DIR]\n");
        rc = 2;
    } else {
        test_router_fd();
        test_dropout_fd();
        test_tag();
        test_causality(0, 0, 0);
        test_causality(1, 0, 0);
        test_dropout();
        test_per_sequence(0, 0, 0);
        test_per_sequence(1, 0, 0);
        test_adapter();
        test_causality(0, 3, 1);
        test_causality(1, 3, 1);
        test_per_sequence(0, 3, 1);
        test_per_sequence(1, 3, 1);
        printf("  worst finite-difference rel. error %.2e\n", worst_fd);
        rc = test_summary(&counts, "test_smear");
    }
    MPI_Finalize();
    return rc;
}
