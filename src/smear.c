/* smear: SMEAR at one FFN site, routed per segment on the previous segment (see smear.h
 * and METHODS.md section 2).
 *
 * Work is done one (sequence, segment) at a time: merge the N experts into one FFN with
 * the segment's probabilities (one m = 1 GEMM over the experts per tensor), then run the
 * segment's S tokens through it (GEMM, activation, GEMM). Every BLIS call a segment makes has
 * shapes that depend only on S, C, N, never on B or on other segments, and the router is
 * plain loops per segment, so a segment's output is bit for bit the same whatever the
 * batch around it (and a segment only ever reads the previous segment's inputs, which
 * gives causality bit for bit).
 *
 * Expert shape: C -> H -> C, H = dims->hidden (0: 4 C), activation GELU (tanh) or swish
 * (dims->swish); the cache is made for one (H, activation) and checks every call.
 *
 * Memory: the merged weights (2 H C + H + C floats) are NOT kept per segment (B * T / S
 * copies would dwarf the activations); backward merges them again from the cached
 * probabilities, which reproduces them exactly. Cached per token: the FFN's
 * pre-activation h and post-activation a (as a dense MLP caches them).
 *
 * Choices the header leaves open:
 *  - Expert dropout: expert i of segment s of global sequence g is dropped when
 *    ladle_rng_uniform(seed, step, LADLE_STREAM_EXPERT + 1, (g * n_segments + s) * N + i)
 *    < dropout; the kept probabilities are renormalised. If every expert of a segment is
 *    dropped the segment keeps the undropped softmax (a segment must go through some
 *    FFN, and "no dropout" is the least surprising fallback).
 *  - Tag routing: p = one-hot(label mod N) (the label's non-negative residue), no
 *    router, no dropout (dropping the only expert would fall back to it anyway); router
 *    and drouter may be NULL.
 *  - ladle_smear_probs gives the probabilities the merge used (after dropout). */
#include "ladle/smear.h"
#include "ladle/error.h"
#include "ladle/kernels.h"
#include "ladle/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Not an entry of rng.h's enum (which this layer does not own): the stream right after
 * the experts' initial noise, kept apart from every stream there. */
#define SMEAR_DROPOUT_STREAM (LADLE_STREAM_EXPERT + 1)

struct ladle_smear_cache {
    size_t bytes;               /* of the buffers below (ladle_smear_cache_bytes) */
    int Bcap, T, C, N, S, nseg, tag;
    int H, swish;               /* expert hidden width, activation (1 swish, 0 GELU) */
    int B;                      /* sequences of the last forward */
    /* per (b, s) [Bcap * nseg] rows */
    float *p;                   /* [., N] probabilities used by the merge */
    float *q;                   /* [., N] softmax before dropout */
    unsigned char *keep;        /* [., N] 1 = expert kept by the dropout */
    unsigned char *renorm;      /* [.]    1 = p is q renormalised over the kept experts */
    float *m, *z;               /* [., C] mean of the previous segment, LN of it */
    float *ln_mean, *ln_rstd;   /* [.] */
    /* router vectors, once per forward */
    float *wn, *w_rstd, *G;     /* [N, C] LN0(w), [N] its 1/std, [N, C] LN0(w) * g */
    /* per token */
    float *h, *a;               /* [Bcap * T, H] before and after the activation */
    /* scratch (backward writes it through the const cache: it is not state) */
    float *w1m, *b1m, *w2m, *b2m;
    float *dw1m, *db1m, *dw2m, *db2m;
    float *da, *dh;             /* [S, H] */
    float *dp, *dq, *dlogit;    /* [N] */
    float *dz, *dm;             /* [C] */
    float *dwn;                 /* [N, C] */
    double *logit;              /* [N] */
};

static void check_dims(int B, int T, int C, const ladle_smear_dims *d)
{
    LADLE_CHECK(B > 0 && T > 0 && C > 0, "smear: bad shape B %d, T %d, C %d", B, T, C);
    LADLE_CHECK(d->N > 0, "smear: need at least one expert, got %d", d->N);
    LADLE_CHECK(d->segment > 0 && T % d->segment == 0, "smear: segment %d does not divide T = %d", d->segment, T);
    LADLE_CHECK(d->dropout >= 0.0f && d->dropout < 1.0f, "smear: expert dropout %g not in [0, 1)", (double)d->dropout);
    LADLE_CHECK(d->hidden >= 0, "smear: expert hidden width %d < 0", d->hidden);
    LADLE_CHECK(d->swish == 0 || d->swish == 1, "smear: swish must be 0 or 1, got %d", d->swish);
}

ladle_smear_cache *ladle_smear_cache_create(int B, int T, int C, const ladle_smear_dims *dims)
{
    check_dims(B, T, C, dims);
    ladle_smear_cache *c = ladle_calloc(1, sizeof *c, "smear cache");
    const int N = dims->N, S = dims->segment, H = ladle_smear_hidden(dims, C);
    const size_t rows = (size_t)B * (T / S);
    c->Bcap = B;
    c->T = T;
    c->C = C;
    c->N = N;
    c->S = S;
    c->nseg = T / S;
    c->tag = dims->tag ? 1 : 0;
    c->H = H;
    c->swish = dims->swish;
    c->p = ladle_malloc_counted(&c->bytes, rows * N * sizeof(float), "smear probabilities");
    c->q = ladle_malloc_counted(&c->bytes, rows * N * sizeof(float), "smear softmax");
    c->keep = ladle_malloc_counted(&c->bytes, rows * N, "smear dropout mask");
    c->renorm = ladle_malloc_counted(&c->bytes, rows, "smear renormalisation flags");
    if (!c->tag) {
        c->m = ladle_calloc_counted(&c->bytes, rows * C, sizeof(float), "smear segment means");
        c->z = ladle_malloc_counted(&c->bytes, rows * C * sizeof(float), "smear router inputs");
        c->ln_mean = ladle_malloc_counted(&c->bytes, rows * sizeof(float), "smear LN means");
        c->ln_rstd = ladle_malloc_counted(&c->bytes, rows * sizeof(float), "smear LN rstd");
        c->wn = ladle_malloc_counted(&c->bytes, (size_t)N * C * sizeof(float), "smear LN0(w)");
        c->w_rstd = ladle_malloc_counted(&c->bytes, (size_t)N * sizeof(float), "smear LN0 rstd");
        c->G = ladle_malloc_counted(&c->bytes, (size_t)N * C * sizeof(float), "smear router matrix");
        c->dwn = ladle_malloc_counted(&c->bytes, (size_t)N * C * sizeof(float), "smear dLN0(w)");
    }
    c->h = ladle_malloc_counted(&c->bytes, (size_t)B * T * H * sizeof(float), "smear pre-activation");
    c->a = ladle_malloc_counted(&c->bytes, (size_t)B * T * H * sizeof(float), "smear post-activation");
    c->w1m = ladle_malloc_counted(&c->bytes, (size_t)H * C * sizeof(float), "smear merged w1");
    c->b1m = ladle_malloc_counted(&c->bytes, (size_t)H * sizeof(float), "smear merged b1");
    c->w2m = ladle_malloc_counted(&c->bytes, (size_t)C * H * sizeof(float), "smear merged w2");
    c->b2m = ladle_malloc_counted(&c->bytes, (size_t)C * sizeof(float), "smear merged b2");
    c->dw1m = ladle_malloc_counted(&c->bytes, (size_t)H * C * sizeof(float), "smear merged dw1");
    c->db1m = ladle_malloc_counted(&c->bytes, (size_t)H * sizeof(float), "smear merged db1");
    c->dw2m = ladle_malloc_counted(&c->bytes, (size_t)C * H * sizeof(float), "smear merged dw2");
    c->db2m = ladle_malloc_counted(&c->bytes, (size_t)C * sizeof(float), "smear merged db2");
    c->da = ladle_malloc_counted(&c->bytes, (size_t)S * H * sizeof(float), "smear da");
    c->dh = ladle_malloc_counted(&c->bytes, (size_t)S * H * sizeof(float), "smear dh");
    c->dp = ladle_malloc_counted(&c->bytes, (size_t)N * sizeof(float), "smear dp");
    c->dq = ladle_malloc_counted(&c->bytes, (size_t)N * sizeof(float), "smear dq");
    c->dlogit = ladle_malloc_counted(&c->bytes, (size_t)N * sizeof(float), "smear dlogit");
    c->dz = ladle_malloc_counted(&c->bytes, (size_t)C * sizeof(float), "smear dz");
    c->dm = ladle_malloc_counted(&c->bytes, (size_t)C * sizeof(float), "smear dm");
    c->logit = ladle_malloc_counted(&c->bytes, (size_t)N * sizeof(double), "smear logits");
    return c;
}

size_t ladle_smear_cache_bytes(const ladle_smear_cache *c) { return sizeof *c + c->bytes; }

void ladle_smear_cache_free(ladle_smear_cache *c)
{
    if (!c) return;
    free(c->p); free(c->q); free(c->keep); free(c->renorm);
    free(c->m); free(c->z); free(c->ln_mean); free(c->ln_rstd);
    free(c->wn); free(c->w_rstd); free(c->G); free(c->dwn);
    free(c->h); free(c->a);
    free(c->w1m); free(c->b1m); free(c->w2m); free(c->b2m);
    free(c->dw1m); free(c->db1m); free(c->dw2m); free(c->db2m);
    free(c->da); free(c->dh); free(c->dp); free(c->dq); free(c->dlogit);
    free(c->dz); free(c->dm); free(c->logit);
    free(c);
}

const float *ladle_smear_probs(const ladle_smear_cache *cache)
{
    return cache->p;
}

static void check_cache(const ladle_smear_cache *c, int B, int T, int C, const ladle_smear_dims *d)
{
    check_dims(B, T, C, d);
    LADLE_CHECK(B <= c->Bcap && T == c->T && C == c->C && d->N == c->N && d->segment == c->S &&
                    (d->tag ? 1 : 0) == c->tag && ladle_smear_hidden(d, C) == c->H && d->swish == c->swish,
                "smear: cache made for B <= %d, T %d, C %d, N %d, segment %d, tag %d, hidden %d, swish %d; called "
                "with %d, %d, %d, %d, %d, %d, %d, %d",
                c->Bcap, c->T, c->C, c->N, c->S, c->tag, c->H, c->swish, B, T, C, d->N, d->segment, d->tag,
                ladle_smear_hidden(d, C), d->swish);
}

/* W^(b,s) = sum_i p_i W_i for the four tensors: each a [1, N] x [N, size] product. */
static void merge(ladle_smear_cache *c, const float *p, const float *w1, const float *b1, const float *w2,
                  const float *b2)
{
    const int N = c->N, C = c->C, H = c->H, HC = H * C;
    ladle_gemm(0, 0, 1, HC, N, 1.0f, p, N, w1, HC, 0.0f, c->w1m, HC);
    ladle_gemm(0, 0, 1, H, N, 1.0f, p, N, b1, H, 0.0f, c->b1m, H);
    ladle_gemm(0, 0, 1, HC, N, 1.0f, p, N, w2, HC, 0.0f, c->w2m, HC);
    ladle_gemm(0, 0, 1, C, N, 1.0f, p, N, b2, C, 0.0f, c->b2m, C);
}

/* LN0: each router vector w_i normalised to mean 0, variance 1 (eps 1e-5), no affine;
 * then G = LN0(w) * g, so that logits = G z. */
static void router_vectors(ladle_smear_cache *c, const ladle_smear_router *r)
{
    const int N = c->N, C = c->C;
    for (int i = 0; i < N; i++) {
        const float *w = r->w + (size_t)i * C;
        double mu = 0, var = 0;
        for (int k = 0; k < C; k++) mu += w[k];
        mu /= C;
        for (int k = 0; k < C; k++) var += (w[k] - mu) * (w[k] - mu);
        var /= C;
        double rs = 1.0 / sqrt(var + 1e-5);
        c->w_rstd[i] = (float)rs;
        for (int k = 0; k < C; k++) {
            float wn = (float)((w[k] - mu) * rs);
            c->wn[(size_t)i * C + k] = wn;
            c->G[(size_t)i * C + k] = wn * r->g[(size_t)i * C + k];
        }
    }
}

/* q = softmax(logit); then the expert dropout of segment (global sequence gseq, s). */
static void route(ladle_smear_cache *c, size_t row, const ladle_smear_dims *d, const ladle_smear_context *ctx,
                  long gseq, int s)
{
    const int N = c->N;
    float *p = c->p + row * N, *q = c->q + row * N;
    unsigned char *keep = c->keep + row * N;
    double mx = c->logit[0], sum = 0;
    for (int i = 1; i < N; i++) mx = c->logit[i] > mx ? c->logit[i] : mx;
    for (int i = 0; i < N; i++) sum += exp(c->logit[i] - mx);
    for (int i = 0; i < N; i++) q[i] = (float)(exp(c->logit[i] - mx) / sum);
    int kept = N;
    for (int i = 0; i < N; i++) {
        keep[i] = 1;
        if (ctx->training && d->dropout > 0.0f) {
            uint64_t index = ((uint64_t)gseq * (uint64_t)c->nseg + (uint64_t)s) * (uint64_t)N + (uint64_t)i;
            if (ladle_rng_uniform(ctx->seed, ctx->step, SMEAR_DROPOUT_STREAM, index) < d->dropout) {
                keep[i] = 0;
                kept--;
            }
        }
    }
    if (kept == N || kept == 0) {   /* nothing dropped, or all: the undropped softmax */
        c->renorm[row] = 0;
        for (int i = 0; i < N; i++) keep[i] = 1;
        memcpy(p, q, (size_t)N * sizeof(float));
        return;
    }
    c->renorm[row] = 1;
    double z = 0;
    for (int i = 0; i < N; i++) z += keep[i] ? q[i] : 0.0;
    for (int i = 0; i < N; i++) p[i] = keep[i] ? (float)(q[i] / z) : 0.0f;
}

void smear_forward(float *out, ladle_smear_cache *cache, const float *inp, const ladle_smear_router *router,
                   const float *w1, const float *b1, const float *w2, const float *b2, int B, int T, int C,
                   const ladle_smear_dims *dims, const ladle_smear_context *ctx)
{
    ladle_smear_cache *c = cache;
    check_cache(c, B, T, C, dims);
    const int N = c->N, S = c->S, nseg = c->nseg, H = c->H;
    const size_t rows = (size_t)B * nseg;
    c->B = B;
    if (c->tag) {
        LADLE_CHECK(ctx->labels != NULL, "smear: tag routing needs labels");
    } else {
        LADLE_CHECK(router != NULL, "smear: router parameters missing");
        router_vectors(c, router);
        /* router inputs of every segment but the first: LN of the previous segment's mean
         * (summed in double, in position order, so the mean does not depend on B) */
        for (int b = 0; b < B; b++)
            for (int s = 1; s < nseg; s++) {
                float *m = c->m + ((size_t)b * nseg + s) * C;
                const float *x = inp + ((size_t)b * T + (size_t)(s - 1) * S) * C;
                for (int k = 0; k < C; k++) {
                    double acc = 0;
                    for (int t = 0; t < S; t++) acc += x[(size_t)t * C + k];
                    m[k] = (float)(acc / S);
                }
            }
        /* rows of segment 0 hold zeros (calloc) and are normalised but never used: one
         * call over all rows, each row on its own, as layernorm_forward does */
        layernorm_forward(c->z, c->ln_mean, c->ln_rstd, c->m, router->ln_w, router->ln_b, (int)rows, C);
    }

    for (int b = 0; b < B; b++)
        for (int s = 0; s < nseg; s++) {
            size_t row = (size_t)b * nseg + s;
            float *p = c->p + row * N;
            if (c->tag) {
                int e = ((ctx->labels[b] % N) + N) % N;
                for (int i = 0; i < N; i++) p[i] = c->q[row * N + i] = i == e ? 1.0f : 0.0f;
                memset(c->keep + row * N, 1, (size_t)N);
                c->renorm[row] = 0;
            } else {
                if (s == 0)
                    for (int i = 0; i < N; i++) c->logit[i] = router->default_logits[i];
                else {
                    const float *z = c->z + row * C;
                    for (int i = 0; i < N; i++) {
                        const float *g = c->G + (size_t)i * C;
                        double acc = 0;
                        for (int k = 0; k < C; k++) acc += (double)g[k] * z[k];
                        c->logit[i] = acc;
                    }
                }
                route(c, row, dims, ctx, ctx->first_sequence + b, s);
            }
            merge(c, p, w1, b1, w2, b2);
            size_t t0 = (size_t)b * T + (size_t)s * S;
            float *h = c->h + t0 * H, *a = c->a + t0 * H;
            matmul_forward(h, inp + t0 * C, c->w1m, c->b1m, S, C, H);
            if (c->swish)
                swish_forward(a, h, (size_t)S * H);
            else
                gelu_forward(a, h, (size_t)S * H);
            matmul_forward(out + t0 * C, a, c->w2m, c->b2m, S, H, C);
        }
}

void smear_backward(float *dinp, ladle_smear_router_grads *drouter, float *dw1, float *db1, float *dw2, float *db2,
                    const float *dout, const ladle_smear_cache *cache, const float *inp,
                    const ladle_smear_router *router, const float *w1, const float *b1, const float *w2,
                    const float *b2, int B, int T, int C, const ladle_smear_dims *dims)
{
    /* scratch only: see the struct */
    ladle_smear_cache *c = (ladle_smear_cache *)cache;
    check_cache(c, B, T, C, dims);
    LADLE_CHECK(B == c->B, "smear: backward for B = %d after a forward of B = %d", B, c->B);
    const int N = c->N, S = c->S, nseg = c->nseg, H = c->H, HC = H * C;
    if (!c->tag) {
        LADLE_CHECK(router != NULL && drouter != NULL, "smear: router parameters or gradients missing");
        memset(c->dwn, 0, (size_t)N * C * sizeof(float));
    }

    for (int b = 0; b < B; b++)
        for (int s = 0; s < nseg; s++) {
            size_t row = (size_t)b * nseg + s, t0 = (size_t)b * T + (size_t)s * S;
            const float *p = c->p + row * N;
            merge(c, p, w1, b1, w2, b2);

            /* the FFN with the merged weights: out = act(x W1^T + b1) W2^T + b2 */
            const float *dy = dout + t0 * C, *x = inp + t0 * C, *h = c->h + t0 * H, *a = c->a + t0 * H;
            memset(c->da, 0, (size_t)S * H * sizeof(float));
            memset(c->dh, 0, (size_t)S * H * sizeof(float));
            memset(c->dw1m, 0, (size_t)HC * sizeof(float));
            memset(c->db1m, 0, (size_t)H * sizeof(float));
            memset(c->dw2m, 0, (size_t)HC * sizeof(float));
            memset(c->db2m, 0, (size_t)C * sizeof(float));
            matmul_backward(c->da, c->dw2m, c->db2m, dy, a, c->w2m, S, H, C);
            if (c->swish)
                swish_backward(c->dh, h, c->da, (size_t)S * H);
            else
                gelu_backward(c->dh, h, c->da, (size_t)S * H);
            matmul_backward(dinp + t0 * C, c->dw1m, c->db1m, c->dh, x, c->w1m, S, C, H);

            /* dW_i += p_i dW^(b,s): a rank-1 [N, 1] x [1, size] update per tensor */
            ladle_gemm(0, 0, N, HC, 1, 1.0f, p, 1, c->dw1m, HC, 1.0f, dw1, HC);
            ladle_gemm(0, 0, N, H, 1, 1.0f, p, 1, c->db1m, H, 1.0f, db1, H);
            ladle_gemm(0, 0, N, HC, 1, 1.0f, p, 1, c->dw2m, HC, 1.0f, dw2, HC);
            ladle_gemm(0, 0, N, C, 1, 1.0f, p, 1, c->db2m, C, 1.0f, db2, C);
            if (c->tag) continue;   /* p is a constant */

            /* dp_i = sum over the tensors of <W_i, dW^(b,s)>: [1, size] x [size, N] */
            float *dp = c->dp;
            ladle_gemm(0, 1, 1, N, HC, 1.0f, c->dw1m, HC, w1, HC, 0.0f, dp, N);
            ladle_gemm(0, 1, 1, N, H, 1.0f, c->db1m, H, b1, H, 1.0f, dp, N);
            ladle_gemm(0, 1, 1, N, HC, 1.0f, c->dw2m, HC, w2, HC, 1.0f, dp, N);
            ladle_gemm(0, 1, 1, N, C, 1.0f, c->db2m, C, b2, C, 1.0f, dp, N);

            /* through the renormalisation p_i = q_i k_i / Z, Z = sum_j q_j k_j:
             * dq_j = k_j (dp_j - <p, dp>) / Z */
            const float *q = c->q + row * N;
            const unsigned char *keep = c->keep + row * N;
            if (c->renorm[row]) {
                double z = 0, pdp = 0;
                for (int i = 0; i < N; i++) {
                    z += keep[i] ? q[i] : 0.0;
                    pdp += (double)p[i] * dp[i];
                }
                for (int i = 0; i < N; i++) c->dq[i] = keep[i] ? (float)((dp[i] - pdp) / z) : 0.0f;
            } else
                memcpy(c->dq, dp, (size_t)N * sizeof(float));
            /* through the softmax: dlogit_j = q_j (dq_j - <q, dq>) */
            double qdq = 0;
            for (int i = 0; i < N; i++) qdq += (double)q[i] * c->dq[i];
            for (int i = 0; i < N; i++) c->dlogit[i] = (float)(q[i] * (c->dq[i] - qdq));

            if (s == 0) {
                for (int i = 0; i < N; i++) drouter->default_logits[i] += c->dlogit[i];
                continue;
            }
            /* logits = G z, G = LN0(w) * g: dG = dlogit z^T, dz = G^T dlogit */
            const float *z = c->z + row * C;
            for (int k = 0; k < C; k++) c->dz[k] = 0.0f;
            for (int i = 0; i < N; i++) {
                const float dl = c->dlogit[i];
                const float *wn = c->wn + (size_t)i * C, *g = router->g + (size_t)i * C, *G = c->G + (size_t)i * C;
                float *dg = drouter->g + (size_t)i * C, *dwn = c->dwn + (size_t)i * C;
                for (int k = 0; k < C; k++) {
                    dg[k] += dl * z[k] * wn[k];
                    dwn[k] += dl * z[k] * g[k];
                    c->dz[k] += dl * G[k];
                }
            }
            /* through the LayerNorm into ln_w, ln_b and the mean, then the mean's S
             * positions: the previous segment's */
            memset(c->dm, 0, (size_t)C * sizeof(float));
            layernorm_backward(c->dm, drouter->ln_w, drouter->ln_b, c->dz, c->m + row * C, router->ln_w,
                               c->ln_mean + row, c->ln_rstd + row, 1, C);
            float *dx = dinp + (t0 - (size_t)S) * C;
            const float inv = 1.0f / (float)S;
            for (int t = 0; t < S; t++)
                for (int k = 0; k < C; k++) dx[(size_t)t * C + k] += c->dm[k] * inv;
        }

    if (c->tag) return;
    /* LN0 backward (no affine), once for all segments: it is linear in dLN0(w) */
    for (int i = 0; i < N; i++) {
        const float *wn = c->wn + (size_t)i * C, *d = c->dwn + (size_t)i * C;
        float *dw = drouter->w + (size_t)i * C;
        double dmean = 0, dnmean = 0;
        for (int k = 0; k < C; k++) {
            dmean += d[k];
            dnmean += (double)d[k] * wn[k];
        }
        dmean /= C;
        dnmean /= C;
        for (int k = 0; k < C; k++) dw[k] += (float)((d[k] - dmean - wn[k] * dnmean) * c->w_rstd[i]);
    }
}
