/* Unit tests of the Soup-of-Experts router (router.h): tensor table, initialisation,
 * forward against a naive double-precision version, backward against central finite
 * differences. A single process: run directly, no mpiexec (MPI is initialised only
 * because the library's error paths use it). */
#include "ladle/router.h"
#include "ladle/rng.h"
#include "testutil.h"

#include <mpi.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

static test_counts T;

/* Test-only randomness: the counter RNG on a stream of its own. */
static float test_uniform(uint64_t step, uint64_t index, float lo, float hi)
{
    return lo + (hi - lo) * ladle_rng_uniform(4242, step, 99, index);
}

/* alpha = phi(h) in double, straight from the definition. */
static void naive_forward(const ladle_router *r, const float *p, const float *h, double *alpha)
{
    const float *w1 = p + r->tensors[0].offset, *b1 = p + r->tensors[1].offset;
    const float *w2 = p + r->tensors[2].offset, *b2 = p + r->tensors[3].offset;
    double *hid = malloc((size_t)r->hidden * sizeof(double));
    for (int i = 0; i < r->hidden; i++) {
        double s = b1[i];
        for (int j = 0; j < r->k; j++) s += (double)w1[(size_t)i * r->k + j] * h[j];
        hid[i] = s > 0 ? s : 0;
    }
    for (int o = 0; o < r->n; o++) {
        double s = b2[o];
        for (int i = 0; i < r->hidden; i++) s += (double)w2[(size_t)o * r->hidden + i] * hid[i];
        alpha[o] = s;
    }
    if (r->alpha_kind == LADLE_ALPHA_SOFTMAX) {
        double m = alpha[0], sum = 0;
        for (int o = 1; o < r->n; o++) m = alpha[o] > m ? alpha[o] : m;
        for (int o = 0; o < r->n; o++) sum += (alpha[o] = exp(alpha[o] - m));
        for (int o = 0; o < r->n; o++) alpha[o] /= sum;
    }
    for (int o = 0; o < r->n; o++) alpha[o] *= r->scale;   /* router.scale */
    free(hid);
}

static void test_table(void)
{
    ladle_router r;
    ladle_router_create(&r, 7, 32, 5, LADLE_ALPHA_RAW);
    const char *names[4] = {"router.w1", "router.b1", "router.w2", "router.b2"};
    int rows[4] = {32, 32, 5, 5}, cols[4] = {7, 1, 32, 1}, ndim[4] = {2, 1, 2, 1}, decay[4] = {1, 0, 1, 0};
    size_t at = 0;
    for (int i = 0; i < 4; i++) {
        const ladle_tensor *t = &r.tensors[i];
        EXPECT(&T, strcmp(t->name, names[i]) == 0, "tensor %d is '%s', want '%s'", i, t->name, names[i]);
        EXPECT(&T, t->ndim == ndim[i] && t->shape[0] == rows[i] && t->shape[1] == cols[i]
                   && t->size == (size_t)rows[i] * cols[i],
               "%s: ndim %d shape [%d, %d] size %zu", names[i], t->ndim, t->shape[0], t->shape[1], t->size);
        EXPECT(&T, t->offset == at, "%s at offset %zu, want %zu (dense)", names[i], t->offset, at);
        EXPECT(&T, t->decay == decay[i], "%s decay %d", names[i], t->decay);
        EXPECT(&T, t->init_std == 0.0f && t->init_value == 0.0f, "%s has a model-style init", names[i]);
        at += t->size;
    }
    EXPECT(&T, r.n_params == at && at == 32 * 7 + 32 + 5 * 32 + 5, "n_params %zu", r.n_params);
}

static void test_init(void)
{
    ladle_router r;
    ladle_router_create(&r, 6, 64, 9, LADLE_ALPHA_RAW);
    float *a = malloc(r.n_params * sizeof(float)), *b = malloc(r.n_params * sizeof(float));
    memset(a, 0xff, r.n_params * sizeof(float));   /* every element must be written */
    ladle_router_init(&r, a, 17);
    ladle_router_init(&r, b, 17);
    EXPECT(&T, memcmp(a, b, r.n_params * sizeof(float)) == 0, "init is not deterministic");
    for (int i = 0; i < 4; i++) {
        const ladle_tensor *t = &r.tensors[i];
        double bound = 1.0 / sqrt(i < 2 ? 6.0 : 64.0);
        double lo = 1e9, hi = -1e9, mean = 0;
        int finite = 1;
        for (size_t j = 0; j < t->size; j++) {
            float x = a[t->offset + j];
            if (!isfinite(x)) finite = 0;
            lo = x < lo ? x : lo;
            hi = x > hi ? x : hi;
            mean += x;
        }
        mean /= (double)t->size;
        EXPECT(&T, finite && lo >= -bound && hi <= bound, "%s outside +-%g: [%g, %g]", t->name, bound, lo, hi);
        /* U(-b, b): sd b/sqrt(3); the mean of `size` draws is within 5 sigma of 0 */
        double tol = 5 * bound / sqrt(3.0 * (double)t->size);
        EXPECT(&T, fabs(mean) < tol, "%s mean %g, want 0 +- %g", t->name, mean, tol);
        /* and it fills the range (the w1/w2 tensors are large enough to get near both ends) */
        if (t->size >= 64)
            EXPECT(&T, lo < -0.8 * bound && hi > 0.8 * bound, "%s spans only [%g, %g] of +-%g", t->name, lo, hi,
                   bound);
    }
    ladle_router_init(&r, b, 18);
    EXPECT(&T, memcmp(a, b, r.n_params * sizeof(float)) != 0, "seeds 17 and 18 give the same init");
    /* tensors drawn from distinct counters: w1 and b1 share a bound, not their draws */
    EXPECT(&T, memcmp(a + r.tensors[0].offset, a + r.tensors[1].offset, 8 * sizeof(float)) != 0,
           "w1 and b1 share draws");
    free(a);
    free(b);
}

static void test_forward(ladle_alpha_kind kind, int k, int H, int n, float scale)
{
    ladle_router r;
    ladle_router_create(&r, k, H, n, kind);
    EXPECT(&T, r.scale == 1.0f, "ladle_router_create's scale is %g, not 1", (double)r.scale);
    r.scale = scale;
    float *p = malloc(r.n_params * sizeof(float));
    ladle_router_init(&r, p, 5);
    float *h = malloc((size_t)k * sizeof(float)), *alpha = malloc((size_t)n * sizeof(float));
    float *alpha2 = malloc((size_t)n * sizeof(float));
    double *want = malloc((size_t)n * sizeof(double));
    double s = 0;
    for (int j = 0; j < k; j++) s += (h[j] = test_uniform(1, (uint64_t)j, 0.0f, 1.0f));
    for (int j = 0; j < k; j++) h[j] /= (float)s;   /* a point of the simplex, as in training */

    ladle_router_cache cache;
    ladle_router_cache_create(&cache, &r);
    ladle_router_forward(&r, p, h, alpha, &cache);
    ladle_router_forward(&r, p, h, alpha2, NULL);
    naive_forward(&r, p, h, want);
    double num = 0, den = 0, sum = 0;
    for (int o = 0; o < n; o++) {
        num += (alpha[o] - want[o]) * (alpha[o] - want[o]);
        den += want[o] * want[o];
        sum += alpha[o];
    }
    const char *kname = kind == LADLE_ALPHA_SOFTMAX ? "softmax" : "raw";
    EXPECT(&T, sqrt(num / den) < 1e-5, "%s k%d H%d n%d: forward differs from double, rel %g", kname, k, H, n,
           sqrt(num / den));
    EXPECT(&T, memcmp(alpha, alpha2, (size_t)n * sizeof(float)) == 0, "%s: forward depends on the cache", kname);
    EXPECT(&T, memcmp(alpha, cache.alpha, (size_t)n * sizeof(float)) == 0, "%s: cache.alpha is not alpha", kname);
    int cache_ok = 1;
    for (int i = 0; i < H; i++)
        if (cache.hidden[i] != (cache.pre[i] > 0 ? cache.pre[i] : 0.0f)) cache_ok = 0;
    EXPECT(&T, cache_ok, "%s: cache.hidden is not relu(cache.pre)", kname);
    if (kind == LADLE_ALPHA_SOFTMAX)
        EXPECT(&T, fabs(sum - scale) < 1e-5 * scale, "softmax alpha at scale %g sums to %g", (double)scale, sum);

    if (kind == LADLE_ALPHA_SOFTMAX) {
        /* stable: logits near 1000 must not overflow */
        const ladle_tensor *b2 = &r.tensors[3];
        for (int o = 0; o < n; o++) p[b2->offset + (size_t)o] = 1000.0f + (float)o;
        ladle_router_forward(&r, p, h, alpha, NULL);
        naive_forward(&r, p, h, want);
        int ok = 1;
        for (int o = 0; o < n; o++)
            if (!isfinite(alpha[o]) || fabs(alpha[o] - want[o]) > 1e-4 * scale) ok = 0;
        EXPECT(&T, ok, "softmax overflows or is wrong at logits ~1000");
    }
    ladle_router_cache_free(&cache);
    free(p); free(h); free(alpha); free(alpha2); free(want);
}

/* J(omega) = sum_j r_j alpha_j(h; omega), accumulated in double. */
static double objective(const ladle_router *r, const float *p, const float *h, const float *rw, float *alpha)
{
    ladle_router_forward(r, p, h, alpha, NULL);
    double J = 0;
    for (int o = 0; o < r->n; o++) J += (double)rw[o] * alpha[o];
    return J;
}

static void test_backward(ladle_alpha_kind kind, float scale)
{
    const int k = 5, H = 24, n = 7;
    const float eps = 1e-2f;
    const char *kname = kind == LADLE_ALPHA_SOFTMAX ? "softmax" : "raw";
    ladle_router r;
    ladle_router_create(&r, k, H, n, kind);
    r.scale = scale;
    float *p = malloc(r.n_params * sizeof(float));
    float h[5], rw[7], alpha[7];
    /* everything O(1), so float differences at eps = 1e-2 keep ~5 digits */
    for (size_t i = 0; i < r.n_params; i++) p[i] = test_uniform(2, i, -1.0f, 1.0f);
    for (int j = 0; j < k; j++) h[j] = test_uniform(3, (uint64_t)j, 0.0f, 1.0f);
    for (int o = 0; o < n; o++) rw[o] = test_uniform(4, (uint64_t)o, -1.0f, 1.0f);

    /* Keep every pre-activation at least 2 eps from the ReLU kink: a step of eps in any
     * one parameter moves a pre-activation by at most eps (h_j <= 1), so no unit flips. */
    ladle_router_cache cache;
    ladle_router_cache_create(&cache, &r);
    ladle_router_forward(&r, p, h, alpha, &cache);
    float *b1 = p + r.tensors[1].offset;
    for (int i = 0; i < H; i++)
        if (fabsf(cache.pre[i]) < 2 * eps) b1[i] += (cache.pre[i] >= 0 ? 3 : -3) * eps;
    ladle_router_forward(&r, p, h, alpha, &cache);
    int active = 0, kink = 0;
    for (int i = 0; i < H; i++) {
        active += cache.pre[i] > 0;
        kink += fabsf(cache.pre[i]) < 2 * eps;
    }
    EXPECT(&T, kink == 0 && active > 0 && active < H, "%s: %d of %d units active, %d near the kink", kname, active,
           H, kink);

    float *grad = calloc(r.n_params, sizeof(float));
    ladle_router_backward(&r, p, h, &cache, rw, grad, NULL);

    double *fd = malloc(r.n_params * sizeof(double));
    for (size_t i = 0; i < r.n_params; i++) {
        float keep = p[i];
        float up = keep + eps, down = keep - eps;
        p[i] = up;
        double Jp = objective(&r, p, h, rw, alpha);
        p[i] = down;
        double Jm = objective(&r, p, h, rw, alpha);
        p[i] = keep;
        /* divide by the step actually taken: keep +- eps rounds in float */
        fd[i] = (Jp - Jm) / ((double)up - (double)down);
    }
    double num = 0, den = 0;
    for (int t = 0; t < 4; t++) {
        const ladle_tensor *ts = &r.tensors[t];
        double tn = 0, td = 0;
        for (size_t j = ts->offset; j < ts->offset + ts->size; j++) {
            tn += (grad[j] - fd[j]) * (grad[j] - fd[j]);
            td += fd[j] * fd[j];
        }
        num += tn;
        den += td;
        EXPECT(&T, td > 0 && sqrt(tn / td) <= 1e-3, "%s %s: gradient rel. error %g (|fd| %g)", kname, ts->name,
               sqrt(tn / td), sqrt(td));
    }
    EXPECT(&T, sqrt(num / den) <= 1e-3, "%s: gradient rel. error %g over all parameters", kname, sqrt(num / den));

    /* backward accumulates: a second call adds the same again */
    float *twice = malloc(r.n_params * sizeof(float));
    memcpy(twice, grad, r.n_params * sizeof(float));
    ladle_router_backward(&r, p, h, &cache, rw, twice, NULL);
    double worst = 0;
    for (size_t i = 0; i < r.n_params; i++) {
        double e = rel_err(twice[i], 2.0 * grad[i], 1e-6);
        worst = e > worst ? e : worst;
    }
    EXPECT(&T, worst < 1e-6, "%s: backward does not accumulate (worst rel. error %g)", kname, worst);

    ladle_router_cache_free(&cache);
    free(p); free(grad); free(fd); free(twice);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    test_table();
    test_init();
    test_forward(LADLE_ALPHA_RAW, 5, 16, 4, 1.0f);
    test_forward(LADLE_ALPHA_SOFTMAX, 5, 16, 4, 1.0f);
    test_forward(LADLE_ALPHA_RAW, 64, 256, 128, 1.0f);   /* the default width, with a paper-size bank */
    test_forward(LADLE_ALPHA_SOFTMAX, 64, 256, 128, 1.0f);
    test_forward(LADLE_ALPHA_RAW, 1, 1, 1, 1.0f);
    test_forward(LADLE_ALPHA_RAW, 5, 16, 4, 0.125f);     /* router.scale */
    test_forward(LADLE_ALPHA_SOFTMAX, 5, 16, 4, 3.0f);
    test_backward(LADLE_ALPHA_RAW, 1.0f);
    test_backward(LADLE_ALPHA_SOFTMAX, 1.0f);
    test_backward(LADLE_ALPHA_RAW, 0.125f);
    test_backward(LADLE_ALPHA_SOFTMAX, 3.0f);
    int rc = test_summary(&T, "test_router");
    MPI_Finalize();
    return rc;
}
