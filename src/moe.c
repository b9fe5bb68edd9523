/* moe: a token-routed mixture of FFN experts (see moe.h).
 *
 * Layout of the work: after routing, the kept (token, expert) pairs are grouped by expert
 * (expert e's pairs are list positions start[e] .. start[e+1], tokens in increasing
 * index, i.e. sequence then position order). Each expert gathers its tokens into a
 * contiguous block and runs its FFN as two GEMMs over that block; the hidden
 * pre-activations, GELU outputs and FFN outputs of every kept pair are kept, indexed by
 * list position, so backward needs no recomputation. Every loop has a fixed order (and
 * parallel loops write disjoint rows), so results do not depend on the thread count
 * beyond what BLIS does. */
#include "ladle/moe.h"

#include "ladle/error.h"
#include "ladle/kernels.h"

#include <math.h>
#include <string.h>
#include <stdlib.h>

struct ladle_moe_cache {
    size_t bytes;          /* of the buffers below (ladle_moe_cache_bytes) */
    int N, C, H, Z, k;     /* capacity in tokens and the layer's shape */
    float cf;
    int B, T;              /* of the last forward (backward checks them) */
    float *logits;         /* [N, Z] router logits */
    float *probs;          /* [N, Z] softmax of the logits */
    int *choice;           /* [N, k] experts of each token, by decreasing probability */
    unsigned char *kept;   /* [N, k] 1 if that pair got a capacity slot */
    int *top1;             /* [N] choice[., 0], contiguous for ladle_moe_top1 */
    int *start;            /* [Z + 1] expert e's kept pairs: list positions start[e] .. start[e+1] */
    int *tok;              /* [N k] token of each list position */
    float *pre;            /* [N k, H] hidden pre-activations, by list position */
    float *act;            /* [N k, H] GELU(pre) */
    float *y;              /* [N k, C] FFN_e(x): the gate's gradient is dout . y */
    int *count;            /* [Z] per-sequence counters (capacity slots, top-1 counts) */
    /* Workspace. backward takes the cache as const (it reads the forward's state), but
     * writes these: they carry nothing from one call to the next. */
    float *xbuf, *dbuf;    /* [N, C] gathered inputs; gathered output gradients */
    float *hbuf, *hbuf2;   /* [N, H] hidden-sized gradients */
    float *dprobs;         /* [N, Z] d objective / d probs, then d / d logits */
};

ladle_moe_cache *ladle_moe_cache_create(int N, int C, const ladle_moe_dims *dims)
{
    LADLE_CHECK(N > 0 && C > 0, "moe: bad cache size N=%d C=%d", N, C);
    LADLE_CHECK(dims->Z > 0 && dims->top_k >= 1 && dims->top_k <= dims->Z,
                "moe: need 1 <= top_k (%d) <= experts (%d)", dims->top_k, dims->Z);
    LADLE_CHECK(dims->capacity_factor >= 0.0f, "moe: negative capacity factor %g", (double)dims->capacity_factor);
    ladle_moe_cache *c = ladle_calloc(1, sizeof(*c), "moe cache");
    c->N = N;
    c->C = C;
    c->H = 4 * C;
    c->Z = dims->Z;
    c->k = dims->top_k;
    c->cf = dims->capacity_factor;
    size_t n = (size_t)N, nz = n * (size_t)c->Z, nk = n * (size_t)c->k;
    size_t H = (size_t)c->H;
    c->logits = ladle_malloc_counted(&c->bytes, nz * sizeof(float), "moe logits");
    c->probs = ladle_malloc_counted(&c->bytes, nz * sizeof(float), "moe probs");
    c->choice = ladle_malloc_counted(&c->bytes, nk * sizeof(int), "moe choices");
    c->kept = ladle_malloc_counted(&c->bytes, nk, "moe kept flags");
    c->top1 = ladle_malloc_counted(&c->bytes, n * sizeof(int), "moe top-1");
    c->start = ladle_malloc_counted(&c->bytes, ((size_t)c->Z + 1) * sizeof(int), "moe expert lists");
    c->tok = ladle_malloc_counted(&c->bytes, nk * sizeof(int), "moe expert lists");
    c->pre = ladle_malloc_counted(&c->bytes, nk * H * sizeof(float), "moe hidden pre-activations");
    c->act = ladle_malloc_counted(&c->bytes, nk * H * sizeof(float), "moe hidden activations");
    c->y = ladle_malloc_counted(&c->bytes, nk * (size_t)C * sizeof(float), "moe expert outputs");
    c->count = ladle_malloc_counted(&c->bytes, (size_t)c->Z * sizeof(int), "moe counters");
    c->xbuf = ladle_malloc_counted(&c->bytes, n * (size_t)C * sizeof(float), "moe workspace");
    c->dbuf = ladle_malloc_counted(&c->bytes, n * (size_t)C * sizeof(float), "moe workspace");
    c->hbuf = ladle_malloc_counted(&c->bytes, n * H * sizeof(float), "moe workspace");
    c->hbuf2 = ladle_malloc_counted(&c->bytes, n * H * sizeof(float), "moe workspace");
    c->dprobs = ladle_malloc_counted(&c->bytes, nz * sizeof(float), "moe workspace");
    return c;
}

size_t ladle_moe_cache_bytes(const ladle_moe_cache *c) { return sizeof *c + c->bytes; }

void ladle_moe_cache_free(ladle_moe_cache *c)
{
    if (!c) return;
    free(c->logits); free(c->probs); free(c->choice); free(c->kept); free(c->top1);
    free(c->start); free(c->tok); free(c->pre); free(c->act); free(c->y); free(c->count);
    free(c->xbuf); free(c->dbuf); free(c->hbuf); free(c->hbuf2); free(c->dprobs);
    free(c);
}

const int *ladle_moe_top1(const ladle_moe_cache *cache) { return cache->top1; }
const float *ladle_moe_logits(const ladle_moe_cache *cache) { return cache->logits; }
const float *ladle_moe_probs(const ladle_moe_cache *cache) { return cache->probs; }

static void check_call(const ladle_moe_cache *c, int B, int T, int C, const ladle_moe_dims *dims)
{
    LADLE_CHECK(B > 0 && T > 0 && (long long)B * T <= c->N, "moe: B*T = %lld tokens, cache holds %d",
                (long long)B * T, c->N);
    LADLE_CHECK(C == c->C && dims->Z == c->Z && dims->top_k == c->k && dims->capacity_factor == c->cf,
                "moe: dimensions differ from the cache's");
}

/* Slots per expert per sequence; 0 means unlimited. Computed in double from the float
 * factor, exactly as written in moe.h (the reference tests repeat this formula). An
 * expert never sees more than T tokens of a sequence, so T is the useful maximum (and
 * keeps a huge factor from overflowing the int). */
static int capacity(const ladle_moe_cache *c, int T)
{
    if (c->cf <= 0.0f) return 0;
    double slots = ceil((double)c->cf * T * c->k / c->Z);
    return slots < T ? (int)slots : T;
}

double moe_forward(float *out, ladle_moe_cache *cache, const float *inp, const float *router, const float *w1,
                   const float *b1, const float *w2, const float *b2, int B, int T, int C,
                   const ladle_moe_dims *dims)
{
    ladle_moe_cache *c = cache;
    check_call(c, B, T, C, dims);
    c->B = B;
    c->T = T;
    const int N = B * T, Z = c->Z, k = c->k, H = c->H;

    /* Router: logits = x R^T, softmax per token, top-k by probability (ties: lower index). */
    ladle_gemm(0, 1, N, Z, C, 1.0f, inp, C, router, C, 0.0f, c->logits, Z);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *z = c->logits + (size_t)n * Z;
        float *p = c->probs + (size_t)n * Z;
        float mx = z[0];
        for (int e = 1; e < Z; e++) mx = z[e] > mx ? z[e] : mx;
        float sum = 0.0f;
        for (int e = 0; e < Z; e++) {
            p[e] = expf(z[e] - mx);
            sum += p[e];
        }
        float inv = 1.0f / sum;
        for (int e = 0; e < Z; e++) p[e] *= inv;
        int *ch = c->choice + (size_t)n * k;
        for (int j = 0; j < k; j++) {
            int best = -1;
            for (int e = 0; e < Z; e++) {
                int taken = 0;
                for (int i = 0; i < j; i++) taken |= ch[i] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e;   /* strict: ties keep the lower index */
            }
            ch[j] = best;
        }
        c->top1[n] = ch[0];
    }

    /* Capacity, per sequence: expert e's slots go to its tokens in position order,
     * whichever rank e has among a token's k choices. */
    const int cap = capacity(c, T);
    for (int b = 0; b < B; b++) {
        memset(c->count, 0, (size_t)Z * sizeof(int));
        for (int t = 0; t < T; t++) {
            size_t n = (size_t)b * T + t;
            for (int j = 0; j < k; j++) {
                int e = c->choice[n * k + j];
                int keep = cap == 0 || c->count[e] < cap;
                c->kept[n * k + j] = (unsigned char)keep;
                c->count[e] += keep;
            }
        }
    }

    /* Group the kept pairs by expert: count, prefix-sum, fill in token order. */
    memset(c->count, 0, (size_t)Z * sizeof(int));
    for (size_t i = 0; i < (size_t)N * k; i++)
        if (c->kept[i]) c->count[c->choice[i]]++;
    c->start[0] = 0;
    for (int e = 0; e < Z; e++) c->start[e + 1] = c->start[e] + c->count[e];
    memcpy(c->count, c->start, (size_t)Z * sizeof(int));   /* now: next free position */
    for (int n = 0; n < N; n++)
        for (int j = 0; j < k; j++)
            if (c->kept[(size_t)n * k + j]) c->tok[c->count[c->choice[(size_t)n * k + j]]++] = n;

    /* Experts: gather, two GEMMs around a GELU, scatter-add gate * y. A token appears at
     * most once in an expert's block, so the scatter's rows are disjoint. */
    memset(out, 0, (size_t)N * C * sizeof(float));
    for (int e = 0; e < Z; e++) {
        const int s = c->start[e], m = c->start[e + 1] - s;
        if (m == 0) continue;
        const int *tk = c->tok + s;
        float *x = c->xbuf, *pre = c->pre + (size_t)s * H, *act = c->act + (size_t)s * H;
        float *y = c->y + (size_t)s * C;
        const float *w1e = w1 + (size_t)e * H * C, *b1e = b1 + (size_t)e * H;
        const float *w2e = w2 + (size_t)e * C * H, *b2e = b2 + (size_t)e * C;
#pragma omp parallel for schedule(static)
        for (int i = 0; i < m; i++) {
            memcpy(x + (size_t)i * C, inp + (size_t)tk[i] * C, (size_t)C * sizeof(float));
            memcpy(pre + (size_t)i * H, b1e, (size_t)H * sizeof(float));
            memcpy(y + (size_t)i * C, b2e, (size_t)C * sizeof(float));
        }
        ladle_gemm(0, 1, m, H, C, 1.0f, x, C, w1e, C, 1.0f, pre, H);    /* pre = x W1^T + b1 */
        gelu_forward(act, pre, (size_t)m * H);
        ladle_gemm(0, 1, m, C, H, 1.0f, act, H, w2e, H, 1.0f, y, C);    /* y = act W2^T + b2 */
#pragma omp parallel for schedule(static)
        for (int i = 0; i < m; i++) {
            float g = c->probs[(size_t)tk[i] * Z + e];
            float *o = out + (size_t)tk[i] * C;
            const float *yi = y + (size_t)i * C;
            for (int j = 0; j < C; j++) o[j] += g * yi[j];
        }
    }

    /* Switch load balancing per sequence: Z * sum_e f_e P_e over ALL the sequence's tokens
     * (dropped ones included: f is the router's choice, not what the experts received). */
    double aux = 0.0;
    for (int b = 0; b < B; b++) {
        memset(c->count, 0, (size_t)Z * sizeof(int));
        for (int t = 0; t < T; t++) c->count[c->top1[(size_t)b * T + t]]++;
        double l = 0.0;
        for (int e = 0; e < Z; e++) {
            if (c->count[e] == 0) continue;
            double P = 0.0;
            for (int t = 0; t < T; t++) P += c->probs[((size_t)b * T + t) * Z + e];
            l += ((double)c->count[e] / T) * (P / T);
        }
        aux += Z * l;
    }
    return aux;
}

void moe_backward(float *dinp, float *drouter, float *dw1, float *db1, float *dw2, float *db2, const float *dout,
                  const ladle_moe_cache *cache, const float *inp, const float *router, const float *w1,
                  const float *b1, const float *w2, const float *b2, int B, int T, int C,
                  const ladle_moe_dims *dims, float aux_scale)
{
    (void)b1; (void)b2;   /* the forward's activations already include them */
    const ladle_moe_cache *c = cache;
    check_call(c, B, T, C, dims);
    LADLE_CHECK(B == c->B && T == c->T, "moe: backward for B=%d T=%d, forward was B=%d T=%d", B, T, c->B, c->T);
    const int N = B * T, Z = c->Z, H = c->H;
    float *dp = c->dprobs;

    /* Aux loss through P only: dL_aux/dp_{t,e} = Z f_e / T = Z count_e / T^2 for every
     * token t of the sequence. */
    for (int b = 0; b < B; b++) {
        memset(c->count, 0, (size_t)Z * sizeof(int));
        for (int t = 0; t < T; t++) c->count[c->top1[(size_t)b * T + t]]++;
        for (int t = 0; t < T; t++) {
            float *d = dp + ((size_t)b * T + t) * Z;
            for (int e = 0; e < Z; e++)
                d[e] = (float)((double)aux_scale * Z * c->count[e] / ((double)T * T));
        }
    }

    for (int e = 0; e < Z; e++) {
        const int s = c->start[e], m = c->start[e + 1] - s;
        if (m == 0) continue;
        const int *tk = c->tok + s;
        const float *pre = c->pre + (size_t)s * H, *act = c->act + (size_t)s * H, *y = c->y + (size_t)s * C;
        const float *w1e = w1 + (size_t)e * H * C, *w2e = w2 + (size_t)e * C * H;
        float *dw1e = dw1 + (size_t)e * H * C, *db1e = db1 + (size_t)e * H;
        float *dw2e = dw2 + (size_t)e * C * H, *db2e = db2 + (size_t)e * C;
        float *x = c->xbuf, *dy = c->dbuf, *dact = c->hbuf, *dpre = c->hbuf2;
        /* gather x and dy = gate * dout; the gate's gradient is dout . y (a token is in a
         * block at most once, so each dp entry has one writer) */
#pragma omp parallel for schedule(static)
        for (int i = 0; i < m; i++) {
            size_t n = (size_t)tk[i];
            float g = c->probs[n * Z + e];
            const float *d = dout + n * C, *yi = y + (size_t)i * C;
            float *dyi = dy + (size_t)i * C;
            memcpy(x + (size_t)i * C, inp + n * C, (size_t)C * sizeof(float));
            float dg = 0.0f;
            for (int j = 0; j < C; j++) {
                dyi[j] = g * d[j];
                dg += d[j] * yi[j];
            }
            dp[n * Z + e] += dg;
        }
        for (int i = 0; i < m; i++)
            for (int j = 0; j < C; j++) db2e[j] += dy[(size_t)i * C + j];
        ladle_gemm(1, 0, C, H, m, 1.0f, dy, C, act, H, 1.0f, dw2e, H);     /* dW2 += dy^T act */
        ladle_gemm(0, 0, m, H, C, 1.0f, dy, C, w2e, H, 0.0f, dact, H);     /* dact = dy W2 */
        memset(dpre, 0, (size_t)m * H * sizeof(float));
        gelu_backward(dpre, pre, dact, (size_t)m * H);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < H; j++) db1e[j] += dpre[(size_t)i * H + j];
        ladle_gemm(1, 0, H, C, m, 1.0f, dpre, H, x, C, 1.0f, dw1e, C);     /* dW1 += dpre^T x */
        ladle_gemm(0, 0, m, C, H, 1.0f, dpre, H, w1e, C, 0.0f, dy, C);     /* dx = dpre W1 (into dy) */
#pragma omp parallel for schedule(static)
        for (int i = 0; i < m; i++) {
            float *dx = dinp + (size_t)tk[i] * C;
            const float *di = dy + (size_t)i * C;
            for (int j = 0; j < C; j++) dx[j] += di[j];
        }
    }

    /* Softmax backward in place: dz_e = p_e (dp_e - sum_i p_i dp_i). */
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *p = c->probs + (size_t)n * Z;
        float *d = dp + (size_t)n * Z;
        float dot = 0.0f;
        for (int e = 0; e < Z; e++) dot += p[e] * d[e];
        for (int e = 0; e < Z; e++) d[e] = p[e] * (d[e] - dot);
    }
    ladle_gemm(1, 0, Z, C, N, 1.0f, dp, Z, inp, C, 1.0f, drouter, C);   /* dR += dz^T x */
    ladle_gemm(0, 0, N, C, Z, 1.0f, dp, Z, router, C, 1.0f, dinp, C);   /* dx += dz R */
}
