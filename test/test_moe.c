/* Unit tests of the token-routed MoE layer (moe.h):
 *
 *  - forward (output, aux loss, logits, top-1) against a naive per-token computation in
 *    double, for top-1/2/3 with and without capacity dropping;
 *  - backward against central finite differences of J = sum(r * out) + aux_w * L_aux, for
 *    dinp, drouter, dw1, db1, dw2, db2, top-1 and top-2, with and without dropping;
 *  - dropping drops (tokens past an expert's capacity get exactly zero output, in
 *    position order), per-sequence invariance (B sequences at once = each on its own),
 *    and that backward accumulates.
 *
 * Routing is piecewise constant in the inputs: a finite difference across a change of
 * top-k choice (or of the top-1 counts f) measures a jump, not a derivative. So the
 * inputs are PLANTED: each token's router logits are set (by moving x within the span of
 * the router's rows) to a permutation of {0, 1, ..., Z-1} * SPREAD, so consecutive ranks
 * are SPREAD = 1 apart while a probe of eps = 1e-2 moves a logit by about 0.03 at most.
 * Every finite-difference evaluation also re-routes naively and counts changes of the
 * routing, which must stay zero.
 *
 *   test_moe                 run the tests
 *   test_moe --dump DIR [--top-k K] [--cf F] [--experts Z] [--batch B] [--seq T]
 *            [--dim C] [--aux-scale A] [--seed S]
 *                            write one forward/backward pass for test/torch_moe.py
 *
 * A single process: run directly, no mpiexec (MPI is initialised only because the
 * library's error paths use it). */
#include "ladle/moe.h"
#include "ladle/rng.h"
#include "testutil.h"

#include <mpi.h>

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static test_counts counts;

#define SPREAD 1.0   /* logit gap between consecutive ranks of the planted routing */

/* Test-only randomness: the counter RNG on a stream of its own. */
static float *randn(size_t n, uint64_t seed, uint64_t step, float scale)
{
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = scale * ladle_rng_normal(seed, step, 77, i);
    return x;
}

/* ---- one layer instance ----------------------------------------------------------- */

typedef struct {
    int B, T, C, H;
    ladle_moe_dims dims;
    float *inp, *router, *w1, *b1, *w2, *b2, *r, *out;
    ladle_moe_cache *cache;
    float aux_w;
    double aux;
    int *route0;            /* [N, k] naive routing at the unperturbed point, sorted sets */
    long reroutes;          /* finite-difference evaluations whose routing changed */
} layer;

static size_t nI(const layer *L) { return (size_t)L->B * L->T * L->C; }
static size_t nR(const layer *L) { return (size_t)L->dims.Z * L->C; }
static size_t nW(const layer *L) { return (size_t)L->dims.Z * L->H * L->C; }
static size_t nB1(const layer *L) { return (size_t)L->dims.Z * L->H; }
static size_t nB2(const layer *L) { return (size_t)L->dims.Z * L->C; }

/* Solve G a = v for symmetric positive definite G [n x n] (Gaussian elimination with
 * partial pivoting, in place). */
static void solve(double *G, double *v, int n)
{
    for (int i = 0; i < n; i++) {
        int p = i;
        for (int r = i + 1; r < n; r++) if (fabs(G[r * n + i]) > fabs(G[p * n + i])) p = r;
        for (int j = 0; j < n; j++) { double t = G[i * n + j]; G[i * n + j] = G[p * n + j]; G[p * n + j] = t; }
        double t = v[i]; v[i] = v[p]; v[p] = t;
        for (int r = i + 1; r < n; r++) {
            double f = G[r * n + i] / G[i * n + i];
            for (int j = i; j < n; j++) G[r * n + j] -= f * G[i * n + j];
            v[r] -= f * v[i];
        }
    }
    for (int i = n - 1; i >= 0; i--) {
        for (int j = i + 1; j < n; j++) v[i] -= G[i * n + j] * v[j];
        v[i] /= G[i * n + i];
    }
}

/* Plant the routing: token n's logits become rank-ordered as perm[n*Z ..] (perm[0] the
 * top expert), SPREAD apart; with perm NULL a random permutation per token. x moves by
 * R^T (R R^T)^-1 (target - R x), the smallest change that gives those logits. */
static void plant(layer *L, const int *perm, uint64_t seed)
{
    const int N = L->B * L->T, Z = L->dims.Z, C = L->C;
    double *G = malloc((size_t)Z * Z * sizeof(double)), *v = malloc((size_t)Z * sizeof(double));
    int *pm = malloc((size_t)Z * sizeof(int));
    for (int n = 0; n < N; n++) {
        float *x = L->inp + (size_t)n * C;
        if (perm) memcpy(pm, perm + (size_t)n * Z, (size_t)Z * sizeof(int));
        else {
            for (int e = 0; e < Z; e++) pm[e] = e;
            for (int e = Z - 1; e > 0; e--) {   /* Fisher-Yates */
                int j = (int)ladle_rng_below(seed, 5, 78, (size_t)n * Z + e, (uint64_t)e + 1);
                int t = pm[e]; pm[e] = pm[j]; pm[j] = t;
            }
        }
        for (int rank = 0; rank < Z; rank++) {
            int e = pm[rank];
            double cur = 0;
            for (int j = 0; j < C; j++) cur += (double)L->router[(size_t)e * C + j] * x[j];
            v[e] = SPREAD * (Z - 1 - rank) - 0.5 * SPREAD * (Z - 1) - cur;   /* centred logits */
        }
        for (int a = 0; a < Z; a++)
            for (int b = 0; b < Z; b++) {
                double s = 0;
                for (int j = 0; j < C; j++) s += (double)L->router[(size_t)a * C + j] * L->router[(size_t)b * C + j];
                G[a * Z + b] = s;
            }
        solve(G, v, Z);
        for (int j = 0; j < C; j++) {
            double d = 0;
            for (int e = 0; e < Z; e++) d += v[e] * L->router[(size_t)e * C + j];
            x[j] = (float)(x[j] + d);
        }
    }
    free(G); free(v); free(pm);
}

static void layer_init(layer *L, int B, int T, int C, int Z, int k, float cf, float aux_w, uint64_t seed,
                       const int *perm)
{
    memset(L, 0, sizeof(*L));
    L->B = B; L->T = T; L->C = C; L->H = 4 * C;
    L->dims = (ladle_moe_dims){Z, k, cf};
    L->aux_w = aux_w;
    L->router = randn(nR(L), seed, 1, 1.0f / sqrtf((float)C));
    L->inp = randn(nI(L), seed, 2, 1.0f);
    L->w1 = randn(nW(L), seed, 3, 1.0f / sqrtf((float)C));
    L->b1 = randn(nB1(L), seed, 4, 0.3f);
    L->w2 = randn(nW(L), seed, 6, 1.0f / sqrtf((float)L->H));
    L->b2 = randn(nB2(L), seed, 7, 0.3f);
    L->r = randn(nI(L), seed, 8, 1.0f);
    L->out = test_zeros(nI(L));
    plant(L, perm, seed);
    L->cache = ladle_moe_cache_create(B * T, C, &L->dims);
}

static void layer_free(layer *L)
{
    free(L->inp); free(L->router); free(L->w1); free(L->b1); free(L->w2); free(L->b2);
    free(L->r); free(L->out); free(L->route0);
    ladle_moe_cache_free(L->cache);
}

static double layer_forward(layer *L)
{
    L->aux = moe_forward(L->out, L->cache, L->inp, L->router, L->w1, L->b1, L->w2, L->b2, L->B, L->T, L->C,
                         &L->dims);
    return L->aux;
}

/* ---- naive reference, double, token by token -------------------------------------- */

/* Token n's top-k experts (ties: lower index), by selection on double probabilities. */
static void naive_route(const layer *L, const float *inp, int n, double *p, int *top)
{
    const int Z = L->dims.Z, C = L->C;
    double mx = -INFINITY, s = 0;
    for (int e = 0; e < Z; e++) {
        double z = 0;
        for (int j = 0; j < C; j++) z += (double)L->router[(size_t)e * C + j] * inp[(size_t)n * C + j];
        p[e] = z;
        mx = fmax(mx, z);
    }
    for (int e = 0; e < Z; e++) s += (p[e] = exp(p[e] - mx));
    for (int e = 0; e < Z; e++) p[e] /= s;
    for (int j = 0; j < L->dims.top_k; j++) {
        int best = -1;
        for (int e = 0; e < Z; e++) {
            int used = 0;
            for (int i = 0; i < j; i++) used |= top[i] == e;
            if (!used && (best < 0 || p[e] > p[best])) best = e;
        }
        top[j] = best;
    }
}

static double gelu_d(double x)
{
    return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}

/* out (double [N, C]), returns the summed aux loss; top1 [N] and *dropped (pairs) too. */
static double naive_forward(const layer *L, double *out, int *top1, int *dropped)
{
    const int B = L->B, T = L->T, C = L->C, H = L->H, Z = L->dims.Z, k = L->dims.top_k;
    double *p = malloc((size_t)T * Z * sizeof(double));
    int *top = malloc((size_t)T * k * sizeof(int));
    double *hid = malloc((size_t)H * sizeof(double));
    int cap = L->dims.capacity_factor > 0 ? (int)ceil((double)L->dims.capacity_factor * T * k / Z) : T;
    double aux = 0;
    *dropped = 0;
    memset(out, 0, nI(L) * sizeof(double));
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) naive_route(L, L->inp, b * T + t, p + (size_t)t * Z, top + (size_t)t * k);
        /* expert by expert, its tokens in position order, the first cap are served */
        for (int e = 0; e < Z; e++) {
            int used = 0;
            for (int t = 0; t < T; t++) {
                int chosen = 0;
                for (int j = 0; j < k; j++) chosen |= top[t * k + j] == e;
                if (!chosen) continue;
                if (used++ >= cap) { (*dropped)++; continue; }
                const float *x = L->inp + ((size_t)b * T + t) * C;
                for (int h = 0; h < H; h++) {
                    double s = L->b1[(size_t)e * H + h];
                    for (int j = 0; j < C; j++) s += (double)L->w1[((size_t)e * H + h) * C + j] * x[j];
                    hid[h] = gelu_d(s);
                }
                for (int o = 0; o < C; o++) {
                    double s = L->b2[(size_t)e * C + o];
                    for (int h = 0; h < H; h++) s += (double)L->w2[((size_t)e * C + o) * H + h] * hid[h];
                    out[((size_t)b * T + t) * C + o] += p[t * Z + e] * s;
                }
            }
        }
        double l = 0;
        for (int e = 0; e < Z; e++) {
            double f = 0, P = 0;
            for (int t = 0; t < T; t++) { f += top[t * k] == e; P += p[t * Z + e]; }
            l += (f / T) * (P / T);
        }
        aux += Z * l;
        for (int t = 0; t < T; t++) top1[b * T + t] = top[t * k];
    }
    free(p); free(top); free(hid);
    return aux;
}

/* ---- forward against the reference ------------------------------------------------- */

static void test_reference(int B, int T, int C, int Z, int k, float cf, uint64_t seed)
{
    char name[96];
    snprintf(name, sizeof name, "forward Z=%d k=%d cf=%g", Z, k, (double)cf);
    layer L;
    layer_init(&L, B, T, C, Z, k, cf, 0.0f, seed, NULL);
    double aux = layer_forward(&L);
    double *ref = malloc(nI(&L) * sizeof(double));
    int *top1 = malloc((size_t)B * T * sizeof(int)), dropped;
    double ref_aux = naive_forward(&L, ref, top1, &dropped);
    double worst = 0, scale = 0;
    for (size_t i = 0; i < nI(&L); i++) {
        worst = fmax(worst, fabs(L.out[i] - ref[i]));
        scale = fmax(scale, fabs(ref[i]));
    }
    EXPECT(&counts, worst <= 1e-5 * scale, "%s: output max error %.3g (scale %.3g)", name, worst, scale);
    EXPECT(&counts, rel_err(aux, ref_aux, 1e-12) <= 1e-6, "%s: aux %.9g vs naive %.9g", name, aux, ref_aux);
    EXPECT(&counts, memcmp(top1, ladle_moe_top1(L.cache), (size_t)B * T * sizeof(int)) == 0, "%s: top-1 differs", name);
    /* logits: x R^T */
    const float *lg = ladle_moe_logits(L.cache);
    double lworst = 0;
    for (int n = 0; n < B * T; n++)
        for (int e = 0; e < Z; e++) {
            double z = 0;
            for (int j = 0; j < C; j++) z += (double)L.router[(size_t)e * C + j] * L.inp[(size_t)n * C + j];
            lworst = fmax(lworst, fabs(lg[(size_t)n * Z + e] - z));
        }
    EXPECT(&counts, lworst <= 1e-5, "%s: logits max error %.3g", name, lworst);
    if (cf > 0) EXPECT(&counts, dropped > 0, "%s: no pair was dropped, capacity untested", name);
    printf("  %-32s out max err %.2e (rel %.2e), aux %.6f rel err %.2e, %d pairs dropped\n", name, worst,
           worst / scale, aux, rel_err(aux, ref_aux, 1e-12), dropped);
    free(ref); free(top1);
    layer_free(&L);
}

/* ---- finite differences -------------------------------------------------------------- */

/* The routing (sorted top-k sets) at the current inputs, naive. */
static void route_all(const layer *L, int *route)
{
    const int N = L->B * L->T, k = L->dims.top_k;
    double *p = malloc((size_t)L->dims.Z * sizeof(double));
    for (int n = 0; n < N; n++) {
        int *top = route + (size_t)n * k;
        naive_route(L, L->inp, n, p, top);
        for (int i = 1; i < k; i++)   /* the first stays the top-1; sort the rest */
            for (int j = i; j > 1 && top[j] < top[j - 1]; j--) { int t = top[j]; top[j] = top[j - 1]; top[j - 1] = t; }
    }
    free(p);
}

static double layer_J(void *ctx)
{
    layer *L = ctx;
    layer_forward(L);
    const int N = L->B * L->T, k = L->dims.top_k;
    int *route = malloc((size_t)N * k * sizeof(int));
    route_all(L, route);
    L->reroutes += memcmp(route, L->route0, (size_t)N * k * sizeof(int)) != 0;
    free(route);
    return test_dot(L->out, L->r, nI(L)) + (double)L->aux_w * L->aux;
}

static void check_grad(const char *cfg, const char *what, layer *L, float *x, const float *g, size_t n,
                       float eps, double tol)
{
    double worst, den;
    double rel = test_fd_rel_error(layer_J, L, x, g, n, eps, &worst, &den);
    EXPECT(&counts, rel <= tol, "%s %s: finite-difference rel. error %.3g > %.3g (worst abs %.3g)", cfg, what, rel,
           tol, worst);
    EXPECT(&counts, den > 0, "%s %s: gradient is identically zero, the check is vacuous", cfg, what);
    printf("  %-22s %-9s rel. error %.2e (worst abs %.2e)\n", cfg, what, rel, worst);
}

static void test_fd(int Z, int k, float cf, uint64_t seed)
{
    char cfg[64];
    snprintf(cfg, sizeof cfg, "Z=%d k=%d cf=%g", Z, k, (double)cf);
    layer L;
    layer_init(&L, 2, 8, 8, Z, k, cf, 0.5f, seed, NULL);
    const int N = L.B * L.T;
    L.route0 = malloc((size_t)N * k * sizeof(int));
    route_all(&L, L.route0);
    double *ref = malloc(nI(&L) * sizeof(double));
    int *top1 = malloc((size_t)N * sizeof(int)), dropped;
    naive_forward(&L, ref, top1, &dropped);
    if (cf > 0) EXPECT(&counts, dropped > 0, "%s: no pair dropped, capacity untested", cfg);
    free(ref); free(top1);

    float *dinp = test_zeros(nI(&L)), *drouter = test_zeros(nR(&L)), *dw1 = test_zeros(nW(&L));
    float *db1 = test_zeros(nB1(&L)), *dw2 = test_zeros(nW(&L)), *db2 = test_zeros(nB2(&L));
    layer_forward(&L);
    moe_backward(dinp, drouter, dw1, db1, dw2, db2, L.r, L.cache, L.inp, L.router, L.w1, L.b1, L.w2, L.b2, L.B,
                 L.T, L.C, &L.dims, L.aux_w);
    const float eps = 1e-2f;
    const double tol = 3e-4;   /* observed: at most 8e-5 */
    check_grad(cfg, "dinp", &L, L.inp, dinp, nI(&L), eps, tol);
    check_grad(cfg, "drouter", &L, L.router, drouter, nR(&L), eps, tol);
    check_grad(cfg, "dw1", &L, L.w1, dw1, nW(&L), eps, tol);
    check_grad(cfg, "db1", &L, L.b1, db1, nB1(&L), eps, tol);
    check_grad(cfg, "dw2", &L, L.w2, dw2, nW(&L), eps, tol);
    check_grad(cfg, "db2", &L, L.b2, db2, nB2(&L), eps, tol);
    EXPECT(&counts, L.reroutes == 0, "%s: %ld finite-difference evaluations changed the routing", cfg, L.reroutes);

    /* The aux loss alone (dout = 0): only the router path, exercised on its own. */
    float *z = test_zeros(nI(&L));
    float *ainp = test_zeros(nI(&L)), *arouter = test_zeros(nR(&L)), *junk1 = test_zeros(nW(&L));
    float *junk2 = test_zeros(nB1(&L)), *junk3 = test_zeros(nW(&L)), *junk4 = test_zeros(nB2(&L));
    layer_forward(&L);
    moe_backward(ainp, arouter, junk1, junk2, junk3, junk4, z, L.cache, L.inp, L.router, L.w1, L.b1, L.w2, L.b2,
                 L.B, L.T, L.C, &L.dims, 1.0f);
    float *saved_r = L.r;
    float saved_w = L.aux_w;
    L.r = z;
    L.aux_w = 1.0f;
    check_grad(cfg, "aux dinp", &L, L.inp, ainp, nI(&L), eps, tol);
    check_grad(cfg, "aux drtr", &L, L.router, arouter, nR(&L), eps, tol);
    L.r = saved_r;
    L.aux_w = saved_w;
    double junk = 0;
    for (size_t i = 0; i < nW(&L); i++) junk += fabs(junk1[i]) + fabs(junk3[i]);
    EXPECT(&counts, junk == 0, "%s: the aux loss alone gave expert weights a gradient", cfg);
    EXPECT(&counts, L.reroutes == 0, "%s: %ld aux evaluations changed the routing", cfg, L.reroutes);

    free(z); free(ainp); free(arouter); free(junk1); free(junk2); free(junk3); free(junk4);
    free(dinp); free(drouter); free(dw1); free(db1); free(dw2); free(db2);
    layer_free(&L);
}

/* ---- dropping --------------------------------------------------------------------- */

/* Every token ranks experts 0, 1, 2, ... so experts 0..k-1 get all of them: with capacity
 * cap, tokens 0..cap-1 of each sequence are served and the rest get exactly zero. */
static void test_dropping(int k, float cf)
{
    const int B = 2, T = 8, C = 8, Z = 4, N = B * T;
    int *perm = malloc((size_t)N * Z * sizeof(int));
    for (int n = 0; n < N; n++)
        for (int e = 0; e < Z; e++) perm[n * Z + e] = e;
    layer L;
    layer_init(&L, B, T, C, Z, k, cf, 0.0f, 11, perm);
    layer_forward(&L);
    int cap = (int)ceil((double)cf * T * k / Z);
    int zero_ok = 1, served_ok = 1;
    for (int n = 0; n < N; n++) {
        double s = 0;
        for (int j = 0; j < C; j++) s += fabs(L.out[(size_t)n * C + j]);
        if (n % T >= cap) zero_ok &= s == 0;
        else served_ok &= s > 0;
    }
    EXPECT(&counts, zero_ok, "dropping k=%d cf=%g: a token past capacity %d has non-zero output", k, (double)cf, cap);
    EXPECT(&counts, served_ok, "dropping k=%d cf=%g: a token within capacity %d has zero output", k, (double)cf, cap);
    /* the served ones are right, too */
    double *ref = malloc(nI(&L) * sizeof(double));
    int *top1 = malloc((size_t)N * sizeof(int)), dropped;
    naive_forward(&L, ref, top1, &dropped);
    double worst = 0;
    for (size_t i = 0; i < nI(&L); i++) worst = fmax(worst, fabs(L.out[i] - ref[i]));
    EXPECT(&counts, worst < 1e-5, "dropping k=%d cf=%g: max error %.3g vs naive", k, (double)cf, worst);
    EXPECT(&counts, dropped == B * k * (T - cap), "dropping k=%d cf=%g: naive dropped %d", k, (double)cf, dropped);
    /* dropped tokens still get a gradient through the router (and the aux loss), none
     * through the experts: dw1 stays zero on the experts nobody picked */
    float *dinp = test_zeros(nI(&L)), *drouter = test_zeros(nR(&L)), *dw1 = test_zeros(nW(&L));
    float *db1 = test_zeros(nB1(&L)), *dw2 = test_zeros(nW(&L)), *db2 = test_zeros(nB2(&L));
    moe_backward(dinp, drouter, dw1, db1, dw2, db2, L.r, L.cache, L.inp, L.router, L.w1, L.b1, L.w2, L.b2, B, T, C,
                 &L.dims, 0.01f);
    double unused = 0, used = 0;
    for (size_t i = 0; i < nW(&L); i++) {
        size_t e = i / ((size_t)L.H * C);
        if ((int)e >= k) unused += fabs(dw1[i]) + fabs(dw2[i]);
        else used += fabs(dw1[i]);
    }
    EXPECT(&counts, unused == 0 && used > 0, "dropping k=%d: expert gradients unused %g used %g", k, unused, used);
    printf("  dropping k=%d cf=%g: capacity %d per sequence, %d pairs dropped, max err %.2e\n", k, (double)cf, cap,
           dropped, worst);
    free(dinp); free(drouter); free(dw1); free(db1); free(dw2); free(db2);
    free(ref); free(top1); free(perm);
    layer_free(&L);
}

/* ---- per-sequence invariance -------------------------------------------------------- */

static void test_invariance(int Z, int k, float cf)
{
    const int B = 3, T = 10, C = 12;
    layer L;
    layer_init(&L, B, T, C, Z, k, cf, 0.0f, 21, NULL);
    double aux = layer_forward(&L);
    float *dinp = test_zeros(nI(&L)), *drouter = test_zeros(nR(&L)), *dw1 = test_zeros(nW(&L));
    float *db1 = test_zeros(nB1(&L)), *dw2 = test_zeros(nW(&L)), *db2 = test_zeros(nB2(&L));
    moe_backward(dinp, drouter, dw1, db1, dw2, db2, L.r, L.cache, L.inp, L.router, L.w1, L.b1, L.w2, L.b2, B, T, C,
                 &L.dims, 0.3f);
    /* each sequence alone, through a cache sized for one sequence */
    ladle_moe_cache *one = ladle_moe_cache_create(T, C, &L.dims);
    float *o = test_zeros((size_t)T * C), *d1 = test_zeros((size_t)T * C);
    float *sr = test_zeros(nR(&L)), *s1 = test_zeros(nW(&L)), *sb1 = test_zeros(nB1(&L));
    float *s2 = test_zeros(nW(&L)), *sb2 = test_zeros(nB2(&L));
    double aux_sum = 0, out_worst = 0, dinp_worst = 0, par_worst = 0;
    int bitwise = 1;
    for (int b = 0; b < B; b++) {
        const float *x = L.inp + (size_t)b * T * C;
        aux_sum += moe_forward(o, one, x, L.router, L.w1, L.b1, L.w2, L.b2, 1, T, C, &L.dims);
        bitwise &= memcmp(o, L.out + (size_t)b * T * C, (size_t)T * C * sizeof(float)) == 0;
        for (size_t i = 0; i < (size_t)T * C; i++) out_worst = fmax(out_worst, fabs(o[i] - L.out[(size_t)b * T * C + i]));
        memset(d1, 0, (size_t)T * C * sizeof(float));
        moe_backward(d1, sr, s1, sb1, s2, sb2, L.r + (size_t)b * T * C, one, x, L.router, L.w1, L.b1, L.w2, L.b2, 1,
                     T, C, &L.dims, 0.3f);
        for (size_t i = 0; i < (size_t)T * C; i++)
            dinp_worst = fmax(dinp_worst, fabs(d1[i] - dinp[(size_t)b * T * C + i]));
    }
    /* parameter gradients: the batch's = the sum of the sequences' */
    for (size_t i = 0; i < nR(&L); i++) par_worst = fmax(par_worst, fabs(sr[i] - drouter[i]));
    for (size_t i = 0; i < nW(&L); i++) par_worst = fmax(par_worst, fmax(fabs(s1[i] - dw1[i]), fabs(s2[i] - dw2[i])));
    for (size_t i = 0; i < nB1(&L); i++) par_worst = fmax(par_worst, fabs(sb1[i] - db1[i]));
    for (size_t i = 0; i < nB2(&L); i++) par_worst = fmax(par_worst, fabs(sb2[i] - db2[i]));
    EXPECT(&counts, out_worst <= 1e-6, "invariance Z=%d k=%d: outputs differ by %.3g", Z, k, out_worst);
    EXPECT(&counts, rel_err(aux, aux_sum, 1e-12) <= 1e-12, "invariance Z=%d k=%d: aux %.17g vs %.17g", Z, k, aux,
           aux_sum);
    EXPECT(&counts, dinp_worst <= 1e-6, "invariance Z=%d k=%d: dinp differs by %.3g", Z, k, dinp_worst);
    EXPECT(&counts, par_worst <= 1e-5, "invariance Z=%d k=%d: parameter gradients differ by %.3g", Z, k, par_worst);
    printf("  invariance Z=%d k=%d cf=%g: out %s (max diff %.2e), aux diff %.2e, dinp %.2e, params %.2e\n", Z, k,
           (double)cf, bitwise ? "bitwise equal" : "not bitwise", out_worst, fabs(aux - aux_sum), dinp_worst,
           par_worst);
    free(o); free(d1); free(sr); free(s1); free(sb1); free(s2); free(sb2);
    ladle_moe_cache_free(one);
    free(dinp); free(drouter); free(dw1); free(db1); free(dw2); free(db2);
    layer_free(&L);
}

/* ---- accumulation ------------------------------------------------------------------- */

static void test_accumulate(void)
{
    layer L;
    layer_init(&L, 2, 6, 8, 4, 2, 1.0f, 0.0f, 31, NULL);
    layer_forward(&L);
    float *g[6] = {test_zeros(nI(&L)), test_zeros(nR(&L)), test_zeros(nW(&L)),
                   test_zeros(nB1(&L)), test_zeros(nW(&L)), test_zeros(nB2(&L))};
    size_t n[6] = {nI(&L), nR(&L), nW(&L), nB1(&L), nW(&L), nB2(&L)};
    float *once[6];
    moe_backward(g[0], g[1], g[2], g[3], g[4], g[5], L.r, L.cache, L.inp, L.router, L.w1, L.b1, L.w2, L.b2, L.B, L.T,
                 L.C, &L.dims, 0.2f);
    for (int i = 0; i < 6; i++) {
        once[i] = malloc(n[i] * sizeof(float));
        memcpy(once[i], g[i], n[i] * sizeof(float));
    }
    moe_backward(g[0], g[1], g[2], g[3], g[4], g[5], L.r, L.cache, L.inp, L.router, L.w1, L.b1, L.w2, L.b2, L.B, L.T,
                 L.C, &L.dims, 0.2f);
    /* norm-wise per tensor: the second call's row sums start from the first's result,
     * so elements match 2 x once only up to rounding */
    double worst = 0;
    for (int i = 0; i < 6; i++) {
        double num = 0, den = 0;
        for (size_t j = 0; j < n[i]; j++) {
            double d = g[i][j] - 2.0 * once[i][j];
            num += d * d;
            den += 4.0 * once[i][j] * once[i][j];
        }
        worst = fmax(worst, den > 0 ? sqrt(num / den) : 1.0);
    }
    EXPECT(&counts, worst < 1e-6, "backward does not accumulate (worst norm-wise rel. error %g)", worst);
    printf("  accumulation: second backward = 2 x first, norm-wise rel. error %.2e\n", worst);
    for (int i = 0; i < 6; i++) { free(g[i]); free(once[i]); }
    layer_free(&L);
}

/* ---- dump for test/torch_moe.py ----------------------------------------------------- */

static int write_f32(const char *dir, const char *name, const void *data, size_t n, FILE *manifest,
                     const char *shape)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.bin", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 4, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "test_moe: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(manifest, "tensor %s %s\n", name, shape);
    return 0;
}

/* Files (raw little-endian float32 unless noted), listed in manifest.txt as
 * "tensor NAME DIMS..." after "key value" lines (B T C H Z top_k capacity_factor
 * aux_scale aux dropped):
 *   inp [N, C], router [Z, C], w1 [Z, H, C], b1 [Z, H], w2 [Z, C, H], b2 [Z, C]
 *   dout [N, C]   the output gradient r
 *   out [N, C], logits [N, Z], top1 [N] (int32)
 *   dinp drouter dw1 db1 dw2 db2   gradients of J = sum(dout * out) + aux_scale * aux
 *   aux_dinp aux_drouter           gradients of aux alone (dout = 0, aux_scale = 1) */
static int dump(const char *dir, int B, int T, int C, int Z, int k, float cf, float aux_scale, uint64_t seed)
{
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "test_moe: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    layer L;
    layer_init(&L, B, T, C, Z, k, cf, aux_scale, seed, NULL);
    const int N = B * T, H = L.H;
    double aux = layer_forward(&L);
    double *ref = malloc(nI(&L) * sizeof(double));
    int *top1 = malloc((size_t)N * sizeof(int)), dropped;
    naive_forward(&L, ref, top1, &dropped);
    float *g[6] = {test_zeros(nI(&L)), test_zeros(nR(&L)), test_zeros(nW(&L)),
                   test_zeros(nB1(&L)), test_zeros(nW(&L)), test_zeros(nB2(&L))};
    moe_backward(g[0], g[1], g[2], g[3], g[4], g[5], L.r, L.cache, L.inp, L.router, L.w1, L.b1, L.w2, L.b2, B, T, C,
                 &L.dims, aux_scale);
    float *a[6] = {test_zeros(nI(&L)), test_zeros(nR(&L)), test_zeros(nW(&L)),
                   test_zeros(nB1(&L)), test_zeros(nW(&L)), test_zeros(nB2(&L))};
    float *z = test_zeros(nI(&L));
    moe_backward(a[0], a[1], a[2], a[3], a[4], a[5], z, L.cache, L.inp, L.router, L.w1, L.b1, L.w2, L.b2, B, T, C,
                 &L.dims, 1.0f);

    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.txt", dir);
    FILE *m = fopen(path, "w");
    if (!m) {
        fprintf(stderr, "test_moe: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    fprintf(m, "B %d\nT %d\nC %d\nH %d\nZ %d\ntop_k %d\ncapacity_factor %.9g\naux_scale %.9g\naux %.17g\n"
               "dropped %d\n", B, T, C, H, Z, k, (double)cf, (double)aux_scale, aux, dropped);
    char sNC[64], sZC[64], sZHC[64], sZH[64], sZCH[64], sNZ[64], sN[64];
    snprintf(sNC, sizeof sNC, "%d %d", N, C);
    snprintf(sZC, sizeof sZC, "%d %d", Z, C);
    snprintf(sZHC, sizeof sZHC, "%d %d %d", Z, H, C);
    snprintf(sZH, sizeof sZH, "%d %d", Z, H);
    snprintf(sZCH, sizeof sZCH, "%d %d %d", Z, C, H);
    snprintf(sNZ, sizeof sNZ, "%d %d", N, Z);
    snprintf(sN, sizeof sN, "%d", N);
    int32_t *t1 = malloc((size_t)N * sizeof(int32_t));
    for (int n = 0; n < N; n++) t1[n] = ladle_moe_top1(L.cache)[n];
    int rc = 0;
    rc |= write_f32(dir, "inp", L.inp, nI(&L), m, sNC);
    rc |= write_f32(dir, "router", L.router, nR(&L), m, sZC);
    rc |= write_f32(dir, "w1", L.w1, nW(&L), m, sZHC);
    rc |= write_f32(dir, "b1", L.b1, nB1(&L), m, sZH);
    rc |= write_f32(dir, "w2", L.w2, nW(&L), m, sZCH);
    rc |= write_f32(dir, "b2", L.b2, nB2(&L), m, sZC);
    rc |= write_f32(dir, "dout", L.r, nI(&L), m, sNC);
    rc |= write_f32(dir, "out", L.out, nI(&L), m, sNC);
    rc |= write_f32(dir, "logits", ladle_moe_logits(L.cache), (size_t)N * Z, m, sNZ);
    rc |= write_f32(dir, "top1", t1, (size_t)N, m, sN);
    rc |= write_f32(dir, "dinp", g[0], nI(&L), m, sNC);
    rc |= write_f32(dir, "drouter", g[1], nR(&L), m, sZC);
    rc |= write_f32(dir, "dw1", g[2], nW(&L), m, sZHC);
    rc |= write_f32(dir, "db1", g[3], nB1(&L), m, sZH);
    rc |= write_f32(dir, "dw2", g[4], nW(&L), m, sZCH);
    rc |= write_f32(dir, "db2", g[5], nB2(&L), m, sZC);
    rc |= write_f32(dir, "aux_dinp", a[0], nI(&L), m, sNC);
    rc |= write_f32(dir, "aux_drouter", a[1], nR(&L), m, sZC);
    rc |= fclose(m) != 0;
    printf("test_moe: dumped to %s (B=%d T=%d C=%d Z=%d k=%d cf=%g, aux %.6f, %d pairs dropped)\n", dir, B, T, C, Z,
           k, (double)cf, aux, dropped);
    for (int i = 0; i < 6; i++) { free(g[i]); free(a[i]); }
    free(z); free(t1); free(ref); free(top1);
    layer_free(&L);
    return rc ? 1 : 0;
}

static int dump_main(int argc, char **argv)
{
    const char *dir = argv[2];
    int B = 3, T = 12, C = 16, Z = 4, k = 1;
    float cf = 0.0f, aux_scale = 0.25f;
    unsigned long seed = 5;
    for (int i = 3; i < argc; i++) {
        if (i + 1 >= argc) { fprintf(stderr, "test_moe: %s needs a value\n", argv[i]); return 2; }
        const char *o = argv[i], *v = argv[++i];
        if (!strcmp(o, "--top-k")) k = atoi(v);
        else if (!strcmp(o, "--cf")) cf = strtof(v, NULL);
        else if (!strcmp(o, "--experts")) Z = atoi(v);
        else if (!strcmp(o, "--batch")) B = atoi(v);
        else if (!strcmp(o, "--seq")) T = atoi(v);
        else if (!strcmp(o, "--dim")) C = atoi(v);
        else if (!strcmp(o, "--aux-scale")) aux_scale = strtof(v, NULL);
        else if (!strcmp(o, "--seed")) seed = strtoul(v, NULL, 10);
        else { fprintf(stderr, "test_moe: unknown option %s\n", o); return 2; }
    }
    if (B < 1 || T < 1 || C < Z || Z < 1 || k < 1 || k > Z || cf < 0) {
        fprintf(stderr, "test_moe: bad dump dimensions (need C >= Z >= top-k >= 1)\n");
        return 2;
    }
    return dump(dir, B, T, C, Z, k, cf, aux_scale, seed);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    if (argc >= 3 && !strcmp(argv[1], "--dump")) {
        int rc = dump_main(argc, argv);
        MPI_Finalize();
        return rc;
    }
    if (argc > 1) {
        fprintf(stderr, "usage: test_moe [--dump DIR [options]]\n");
        MPI_Finalize();
        return 2;
    }
    printf("forward vs naive (double):\n");
    test_reference(2, 16, 12, 4, 1, 0.0f, 1);
    test_reference(2, 16, 12, 4, 1, 1.0f, 2);
    test_reference(3, 20, 16, 8, 2, 0.0f, 3);
    test_reference(3, 20, 16, 8, 2, 1.0f, 4);
    test_reference(2, 15, 12, 5, 3, 0.8f, 5);
    printf("finite differences (J = sum(r out) + 0.5 L_aux; planted routing):\n");
    test_fd(4, 1, 0.0f, 41);
    test_fd(4, 1, 1.0f, 42);
    test_fd(4, 2, 0.0f, 43);
    test_fd(4, 2, 0.75f, 44);
    printf("dropping, invariance, accumulation:\n");
    test_dropping(1, 1.0f);
    test_dropping(1, 2.0f);
    test_dropping(2, 1.0f);
    test_invariance(4, 1, 1.0f);
    test_invariance(6, 2, 0.0f);
    test_invariance(6, 2, 1.25f);
    test_accumulate();
    int rc = test_summary(&counts, "test_moe");
    MPI_Finalize();
    return rc;
}
