#include "ladle/kernels.h"

#include <blis.h>
#include <math.h>
#include <string.h>

/* Element-wise loops also get an AVX2 version, chosen at load time (an ifunc), so one
 * generic binary uses 8-wide vectors where the CPU has them. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VECTOR_CLONES
#endif

void ladle_gemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
                const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    /* Row-major storage: row stride = leading dimension, column stride = 1. BLIS applies
     * the transposition to the stored matrix, so the strides describe A and B as stored. */
    bli_sgemm(trans_a ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
              trans_b ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
              m, n, k, &alpha, (float *)a, lda, 1, (float *)b, ldb, 1, &beta, c, ldc, 1);
}

/* ---- encoder ---------------------------------------------------------------- */

void encoder_forward(float *out, const uint8_t *tokens, const float *wte, const float *wpe,
                     int B, int T, int C)
{
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *o = out + ((size_t)b * T + t) * C;
            const float *e = wte + (size_t)tokens[(size_t)b * T + t] * C;
            const float *p = wpe + (size_t)t * C;
            for (int i = 0; i < C; i++) o[i] = e[i] + p[i];
        }
}

void encoder_backward(float *dwte, float *dwpe, const float *dout, const uint8_t *tokens,
                      int B, int T, int C)
{
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *d = dout + ((size_t)b * T + t) * C;
            float *de = dwte + (size_t)tokens[(size_t)b * T + t] * C;
            float *dp = dwpe + (size_t)t * C;
            for (int i = 0; i < C; i++) {
                de[i] += d[i];
                dp[i] += d[i];
            }
        }
}

/* ---- layernorm -------------------------------------------------------------- */

VECTOR_CLONES
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *weight, const float *bias, int N, int C)
{
    const float eps = 1e-5f;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        float m = 0.0f;
#pragma omp simd reduction(+:m)
        for (int i = 0; i < C; i++) m += x[i];
        m /= (float)C;
        float v = 0.0f;
#pragma omp simd reduction(+:v)
        for (int i = 0; i < C; i++) {
            float d = x[i] - m;
            v += d * d;
        }
        v /= (float)C;
        float s = 1.0f / sqrtf(v + eps);
#pragma omp simd
        for (int i = 0; i < C; i++) o[i] = (x[i] - m) * s * weight[i] + bias[i];
        mean[n] = m;
        rstd[n] = s;
    }
}

VECTOR_CLONES
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *mean,
                        const float *rstd, int N, int C)
{
    for (int n = 0; n < N; n++) {
        const float *d = dout + (size_t)n * C;
        const float *x = inp + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        float m = mean[n], s = rstd[n];
        /* two reductions: mean of dnorm and mean of dnorm * norm */
        float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
#pragma omp simd reduction(+:dnorm_mean, dnorm_norm_mean)
        for (int i = 0; i < C; i++) {
            float norm = (x[i] - m) * s;
            float dnorm = weight[i] * d[i];
            dnorm_mean += dnorm;
            dnorm_norm_mean += dnorm * norm;
        }
        dnorm_mean /= (float)C;
        dnorm_norm_mean /= (float)C;
#pragma omp simd
        for (int i = 0; i < C; i++) {
            float norm = (x[i] - m) * s;
            float dnorm = weight[i] * d[i];
            dbias[i] += d[i];
            dweight[i] += norm * d[i];
            dx[i] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s;
        }
    }
}

/* ---- linear layers ---------------------------------------------------------- */

void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int C, int OC)
{
    /* Start from the bias so that the GEMM's beta = 1 adds it for free. */
    float beta = 0.0f;
    if (bias) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) memcpy(out + (size_t)n * OC, bias, (size_t)OC * sizeof(float));
        beta = 1.0f;
    }
    ladle_gemm(0, 1, N, OC, C, 1.0f, inp, C, weight, C, beta, out, OC);
}

void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int N, int C, int OC)
{
    ladle_gemm(0, 0, N, C, OC, 1.0f, dout, OC, weight, C, 1.0f, dinp, C);     /* dinp += dout W */
    ladle_gemm(1, 0, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);     /* dW += dout^T x */
    if (dbias)
        for (int n = 0; n < N; n++) {
            const float *d = dout + (size_t)n * OC;
            for (int o = 0; o < OC; o++) dbias[o] += d[o];
        }
}

/* ---- exp and GELU (tanh approximation) ------------------------------------------ */

/* exp(x) as 2^n * p(r), r = x - n ln2 in [-ln2/2, ln2/2], p a degree-7 polynomial
 * (Cephes' expf coefficients): relative error about 1e-7. Unlike libm's expf it has no
 * error handling, so loops calling it vectorise (#pragma omp simd; the clamps need
 * -fno-trapping-math, see configure.ac). */
static inline float vexp(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float magic = 12582912.0f;              /* 1.5 * 2^23: rounds to an integer */
    float n = (x * 1.44269504088896341f + magic) - magic;
    float r = x - n * 0.693359375f - n * -2.12194440e-4f;   /* ln 2 in two parts */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } scale = {.i = ((int32_t)n + 127) << 23};
    return p * scale.f;
}

/* tanh(u) = 1 - 2 / (exp(2u) + 1): absolute error about 2e-7 */
static inline float vtanh(float u)
{
    return 1.0f - 2.0f / (vexp(2.0f * u) + 1.0f);
}

#define GELU_SCALE 0.7978845608028654f   /* sqrt(2/pi) */


VECTOR_CLONES
void gelu_forward(float *out, const float *inp, size_t n)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_SCALE * (x + 0.044715f * x * x * x);
        out[i] = 0.5f * x * (1.0f + vtanh(u));
    }
}

VECTOR_CLONES
void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_SCALE * (x + 0.044715f * x * x * x);
        float th = vtanh(u);
        float sech2 = 1.0f - th * th;
        float grad = 0.5f * (1.0f + th) + 0.5f * x * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += grad * dout[i];
    }
}

/* ---- swish (SiLU): x * sigmoid(x), sigmoid(x) = 1 / (1 + exp(-x)) ------------------ */

VECTOR_CLONES
void swish_forward(float *out, const float *inp, size_t n)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = x / (1.0f + vexp(-x));
    }
}

/* d/dx x s(x) = s (1 + x (1 - s)) */
VECTOR_CLONES
void swish_backward(float *dinp, const float *inp, const float *dout, size_t n)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float s = 1.0f / (1.0f + vexp(-x));
        dinp[i] += s * (1.0f + x * (1.0f - s)) * dout[i];
    }
}

/* ---- residual ------------------------------------------------------------------ */

void residual_forward(float *out, const float *a, const float *b, size_t n)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

/* ---- attention -------------------------------------------------------------- */

/* Rows are processed in blocks of ATT_BLOCK queries; block [i0, i1) only attends to keys
 * [0, i1), so the GEMMs skip most of the masked upper triangle (5/8 of the full T x T
 * work at T = 256). Entries of att above the diagonal inside [0, i1) are zero; entries
 * at or past i1 are never written nor read. */
enum { ATT_BLOCK = 64 };

/* softmax of row[0..t] in place, zero for row[t+1 .. end) */
VECTOR_CLONES
static void causal_softmax_row(float *row, int t, int end)
{
    float mx = row[0];
    for (int u = 1; u <= t; u++) mx = row[u] > mx ? row[u] : mx;
    float sum = 0.0f;
#pragma omp simd reduction(+:sum)
    for (int u = 0; u <= t; u++) {
        row[u] = vexp(row[u] - mx);
        sum += row[u];
    }
    float inv = 1.0f / sum;
#pragma omp simd
    for (int u = 0; u <= t; u++) row[u] *= inv;
    for (int u = t + 1; u < end; u++) row[u] = 0.0f;
}

/* the gradient of the scores from that of the probabilities, in place, scaled;
 * zero for drow[t+1 .. end) */
VECTOR_CLONES
static void causal_softmax_backward_row(float *drow, const float *prow, int t, int end, float scale)
{
    float dot = 0.0f;
#pragma omp simd reduction(+:dot)
    for (int u = 0; u <= t; u++) dot += prow[u] * drow[u];
#pragma omp simd
    for (int u = 0; u <= t; u++) drow[u] = prow[u] * (drow[u] - dot) * scale;
    for (int u = t + 1; u < end; u++) drow[u] = 0.0f;
}

void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH)
{
    const int hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)b * T * C3 + h * hs;
            const float *k = q + C;
            const float *v = q + 2 * C;
            float *p = att + ((size_t)b * NH + h) * T * T;
            float *o = out + (size_t)b * T * C + h * hs;
            for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
                int i1 = i0 + ATT_BLOCK < T ? i0 + ATT_BLOCK : T, rows = i1 - i0;
                float *pb = p + (size_t)i0 * T;
                ladle_gemm(0, 1, rows, i1, hs, scale, q + (size_t)i0 * C3, C3, k, C3, 0.0f, pb, T);  /* S = q k^T */
                for (int t = i0; t < i1; t++) causal_softmax_row(p + (size_t)t * T, t, i1);
                ladle_gemm(0, 0, rows, hs, i1, 1.0f, pb, T, v, C3, 0.0f, o + (size_t)i0 * C, C);       /* O = P v */
            }
        }
}

void attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv,
                        const float *att, int B, int T, int C, int NH)
{
    const int hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
    float *dp = scratch;   /* rows x i1 of one block: gradient of P, then of the scores */
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)b * T * C3 + h * hs;
            const float *k = q + C;
            const float *v = q + 2 * C;
            float *dq = dqkv + (size_t)b * T * C3 + h * hs;
            float *dk = dq + C;
            float *dv = dq + 2 * C;
            const float *p = att + ((size_t)b * NH + h) * T * T;
            const float *d = dout + (size_t)b * T * C + h * hs;
            for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
                int i1 = i0 + ATT_BLOCK < T ? i0 + ATT_BLOCK : T, rows = i1 - i0;
                const float *pb = p + (size_t)i0 * T, *db = d + (size_t)i0 * C;
                ladle_gemm(0, 1, rows, i1, hs, 1.0f, db, C, v, C3, 0.0f, dp, T);     /* dP = dO v^T */
                ladle_gemm(1, 0, i1, hs, rows, 1.0f, pb, T, db, C, 1.0f, dv, C3);    /* dv += P^T dO */
                for (int t = i0; t < i1; t++)
                    causal_softmax_backward_row(dp + (size_t)(t - i0) * T, p + (size_t)t * T, t, i1, scale);
                ladle_gemm(0, 0, rows, hs, i1, 1.0f, dp, T, k, C3, 1.0f, dq + (size_t)i0 * C3, C3);  /* dq += dS k */
                ladle_gemm(1, 0, i1, hs, rows, 1.0f, dp, T, q + (size_t)i0 * C3, C3, 1.0f, dk, C3);  /* dk += dS^T q */
            }
        }
}

/* ---- softmax + cross-entropy ------------------------------------------------ */

double crossentropy_forward(float *probs, float *losses, const float *logits,
                            const uint8_t *targets, int N, int V)
{
    double total = 0.0;
#pragma omp parallel for reduction(+:total) schedule(static)
    for (int n = 0; n < N; n++) {
        const float *z = logits + (size_t)n * V;
        float *p = probs + (size_t)n * V;
        float mx = z[0];
        for (int i = 1; i < V; i++) mx = z[i] > mx ? z[i] : mx;
        float sum = 0.0f;
#pragma omp simd reduction(+:sum)
        for (int i = 0; i < V; i++) {
            p[i] = vexp(z[i] - mx);
            sum += p[i];
        }
        float inv = 1.0f / sum;
        for (int i = 0; i < V; i++) p[i] *= inv;
        /* log p[target] from the logits, not from p, so a tiny p does not underflow */
        losses[n] = logf(sum) + mx - z[targets[n]];
        total += losses[n];
    }
    return total;
}

void crossentropy_backward(float *dlogits, const float *probs, const uint8_t *targets,
                           float scale, int N, int V)
{
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *p = probs + (size_t)n * V;
        float *d = dlogits + (size_t)n * V;
        for (int i = 0; i < V; i++) d[i] += scale * p[i];
        d[targets[n]] -= scale;
    }
}
