/* Minimal test helpers: every check counts, the summary line is "N passed, M failed",
 * and the exit code is non-zero when anything failed. */
#ifndef LADLE_TESTUTIL_H
#define LADLE_TESTUTIL_H

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct { int passed, failed; } test_counts;

#define EXPECT(counts, cond, ...)                                          \
    do {                                                                   \
        if (cond) (counts)->passed++;                                      \
        else {                                                             \
            (counts)->failed++;                                            \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);           \
            fprintf(stderr, __VA_ARGS__);                                  \
            fputc('\n', stderr);                                           \
        }                                                                  \
    } while (0)

/* Relative error of |a - b| against max(|a|, |b|, floor). */
static inline double rel_err(double a, double b, double floor)
{
    double scale = fabs(a) > fabs(b) ? fabs(a) : fabs(b);
    if (scale < floor) scale = floor;
    return fabs(a - b) / scale;
}

/* n floats, all zero (calloc). */
static inline float *test_zeros(size_t n) { return calloc(n, sizeof(float)); }

/* sum a[i] * b[i], accumulated in double. */
static inline double test_dot(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* A forward evaluation of an objective J for the current inputs. */
typedef double (*test_objective)(void *ctx);

/* Central finite differences of J w.r.t. x[0..n) (x[i] +- eps, restored after), against
 * the analytic gradient g, at most ~400 probes (every stride-th entry). Returns the
 * norm-wise relative error |fd - g| / |fd| over the probed entries (|fd - g| when fd is
 * all zero; *fd_norm2, when not NULL, gets sum fd^2, so 0 means the check was vacuous).
 * *worst_abs, when not NULL, gets the largest |fd - g|. */
static inline double test_fd_rel_error(test_objective J, void *ctx, float *x, const float *g, size_t n, float eps,
                                       double *worst_abs, double *fd_norm2)
{
    double num = 0, den = 0, worst = 0;
    size_t stride = n > 400 ? n / 400 : 1;   /* at most ~400 probes per tensor */
    for (size_t i = 0; i < n; i += stride) {
        float saved = x[i];
        x[i] = saved + eps;
        double jp = J(ctx);
        x[i] = saved - eps;
        double jm = J(ctx);
        x[i] = saved;
        double fd = (jp - jm) / (2.0 * eps);
        num += (fd - g[i]) * (fd - g[i]);
        den += fd * fd;
        double e = fabs(fd - g[i]);
        if (e > worst) worst = e;
    }
    if (worst_abs) *worst_abs = worst;
    if (fd_norm2) *fd_norm2 = den;
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static inline int test_summary(const test_counts *c, const char *name)
{
    printf("%s: %d passed, %d failed\n", name, c->passed, c->failed);
    return c->failed == 0 && c->passed > 0 ? 0 : 1;
}

/* Is labels[] the partition truth[] up to a renaming of the k labels (both in [0, k))? */
static inline int test_same_partition(const int *labels, const int *truth, size_t n, int k)
{
    int *to = malloc(sizeof(int) * (size_t)k), *from = malloc(sizeof(int) * (size_t)k);
    if (!to || !from) { fprintf(stderr, "out of memory\n"); exit(1); }
    for (int j = 0; j < k; j++) to[j] = from[j] = -1;
    int ok = 1;
    for (size_t i = 0; i < n && ok; i++) {
        int l = labels[i], t = truth[i];
        if (l < 0 || l >= k) { ok = 0; break; }
        if (to[t] < 0 && from[l] < 0) { to[t] = l; from[l] = t; }
        ok = to[t] == l && from[l] == t;
    }
    free(to);
    free(from);
    return ok;
}

#endif
