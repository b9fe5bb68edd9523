/* Unit tests of UNCURL's primitives (prune.h): the assignment solver against brute force,
 * spectral clustering on planted groups, the router affinity against a naive double
 * version, and alignment/merging of experts that are hidden-unit permutations of each
 * other. A single process: run directly, no mpiexec (MPI is initialised only because the
 * library's error paths use it). */
#include "ladle/prune.h"
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
    return lo + (hi - lo) * ladle_rng_uniform(4243, step, 98, index);
}

static int test_below(uint64_t step, uint64_t index, int n)
{
    return (int)ladle_rng_below(4243, step, 98, index, (uint64_t)n);
}

/* Random permutation of 0..n-1 (Fisher-Yates on counters (step, 1000 + i)). */
static void random_perm(int *p, int n, uint64_t step)
{
    for (int i = 0; i < n; i++) p[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = test_below(step, 1000 + (uint64_t)i, i + 1);
        int t = p[i]; p[i] = p[j]; p[j] = t;
    }
}

static int is_permutation(const int *p, int n)
{
    int ok = 1;
    char *seen = calloc((size_t)n, 1);
    for (int i = 0; i < n; i++) {
        if (p[i] < 0 || p[i] >= n || seen[p[i]]) { ok = 0; break; }
        seen[p[i]] = 1;
    }
    free(seen);
    return ok;
}

/* ---- Hungarian -------------------------------------------------------------------- */

/* Best total over all n! permutations (n <= 8), by recursion over the free columns. */
static double brute_best(const double *s, int n, int row, int *used)
{
    if (row == n) return 0.0;
    double best = -INFINITY;
    for (int j = 0; j < n; j++) {
        if (used[j]) continue;
        used[j] = 1;
        double v = s[(size_t)row * n + j] + brute_best(s, n, row + 1, used);
        used[j] = 0;
        if (v > best) best = v;
    }
    return best;
}

static void check_hungarian(const double *s, int n, const char *what, int seed)
{
    int assign[8], used[8] = {0};
    double got = ladle_hungarian(s, n, assign);
    double want = brute_best(s, n, 0, used);
    EXPECT(&T, is_permutation(assign, n), "hungarian %s n=%d seed=%d: not a permutation", what, n, seed);
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += s[(size_t)i * n + assign[i]];
    EXPECT(&T, fabs(got - sum) <= 1e-12 * (1 + fabs(sum)),
           "hungarian %s n=%d seed=%d: returned %.17g but the assignment scores %.17g", what, n, seed, got, sum);
    EXPECT(&T, fabs(got - want) <= 1e-9 * (1 + fabs(want)),
           "hungarian %s n=%d seed=%d: %.17g, brute force %.17g", what, n, seed, got, want);
}

static void test_hungarian(void)
{
    double s[64];
    for (int n = 1; n <= 7; n++) {
        int seeds = n <= 5 ? 60 : 20;
        for (int seed = 0; seed < seeds; seed++) {
            uint64_t step = (uint64_t)n * 1000 + (uint64_t)seed;
            /* continuous scores of both signs */
            for (int i = 0; i < n * n; i++) s[i] = test_uniform(step, (uint64_t)i, -1.0f, 1.0f);
            check_hungarian(s, n, "uniform", seed);
            /* few distinct integers: many tied optima */
            for (int i = 0; i < n * n; i++) s[i] = (double)(test_below(step, 100 + (uint64_t)i, 5) - 2);
            check_hungarian(s, n, "ties", seed);
            /* all negative, wide range */
            for (int i = 0; i < n * n; i++) s[i] = -exp(10.0 * test_uniform(step, 200 + (uint64_t)i, 0.0f, 1.0f));
            check_hungarian(s, n, "negative", seed);
        }
        for (int i = 0; i < n * n; i++) s[i] = 3.5;   /* every assignment optimal */
        check_hungarian(s, n, "constant", 0);
        for (int i = 0; i < n * n; i++) s[i] = 0.0;
        check_hungarian(s, n, "zero", 0);
    }

    /* Larger: a planted permutation worth clearly more than any alternative is found
     * exactly, and a random matrix's answer admits no improving swap of two rows. */
    for (int n = 20; n <= 120; n += 50) {
        double *m = malloc((size_t)n * n * sizeof(double));
        int *pi = malloc((size_t)n * sizeof(int)), *assign = malloc((size_t)n * sizeof(int));
        random_perm(pi, n, 7000 + (uint64_t)n);
        for (int i = 0; i < n * n; i++) m[i] = test_uniform(7100 + (uint64_t)n, (uint64_t)i, -0.4f, 0.4f);
        for (int i = 0; i < n; i++) m[(size_t)i * n + pi[i]] = 1.0;
        ladle_hungarian(m, n, assign);
        EXPECT(&T, memcmp(assign, pi, (size_t)n * sizeof(int)) == 0, "hungarian n=%d: planted permutation not found", n);

        for (int i = 0; i < n * n; i++) m[i] = test_uniform(7200 + (uint64_t)n, (uint64_t)i, -1.0f, 1.0f);
        ladle_hungarian(m, n, assign);
        int improvable = 0;
        for (int a = 0; a < n; a++)
            for (int b = a + 1; b < n; b++) {
                double now = m[(size_t)a * n + assign[a]] + m[(size_t)b * n + assign[b]];
                double swap = m[(size_t)a * n + assign[b]] + m[(size_t)b * n + assign[a]];
                if (swap > now + 1e-12) improvable = 1;
            }
        EXPECT(&T, is_permutation(assign, n) && !improvable, "hungarian n=%d: a swap of two rows improves the answer", n);
        free(m); free(pi); free(assign);
    }
    EXPECT(&T, ladle_hungarian(NULL, 0, NULL) == 0.0, "hungarian n=0");
}

/* ---- router affinity ---------------------------------------------------------------- */

static void test_affinity(size_t tokens, int z, uint64_t step)
{
    float *h = malloc(tokens * (size_t)z * sizeof(float));
    float *a = malloc((size_t)z * z * sizeof(float));
    for (size_t i = 0; i < tokens * (size_t)z; i++) h[i] = test_uniform(step, i, -2.0f, 3.0f);
    if (z >= 4) {
        /* column 1 parallel to column 0 (cos 1), column 2 opposite (cos -1), column 3 zero */
        for (size_t t = 0; t < tokens; t++) {
            h[t * z + 1] = 2.5f * h[t * z];
            h[t * z + 2] = -0.5f * h[t * z];
            h[t * z + 3] = 0.0f;
        }
    }
    ladle_router_affinity(h, tokens, z, a);

    double maxerr = 0.0;
    int sym = 1, diag = 1, range = 1;
    for (int i = 0; i < z; i++)
        for (int j = 0; j < z; j++) {
            double dot = 0, ni = 0, nj = 0;
            for (size_t t = 0; t < tokens; t++) {
                double x = h[t * z + i], y = h[t * z + j];
                dot += x * y; ni += x * x; nj += y * y;
            }
            double want = i == j ? 1.0 : (ni > 0 && nj > 0 ? 0.5 * (1 + dot / sqrt(ni * nj)) : 0.5);
            double e = fabs(a[(size_t)i * z + j] - want);
            if (e > maxerr) maxerr = e;
            if (a[(size_t)i * z + j] != a[(size_t)j * z + i]) sym = 0;
            if (i == j && a[(size_t)i * z + j] != 1.0f) diag = 0;
            if (!(a[(size_t)i * z + j] >= 0.0f && a[(size_t)i * z + j] <= 1.0f)) range = 0;
        }
    EXPECT(&T, maxerr < 2e-5, "affinity tokens=%zu z=%d: max error %g against double", tokens, z, maxerr);
    EXPECT(&T, sym, "affinity tokens=%zu z=%d: not exactly symmetric", tokens, z);
    EXPECT(&T, diag, "affinity tokens=%zu z=%d: diagonal is not exactly 1", tokens, z);
    EXPECT(&T, range, "affinity tokens=%zu z=%d: values outside [0, 1]", tokens, z);
    if (z >= 4) {
        EXPECT(&T, fabsf(a[1] - 1.0f) < 1e-6f && fabsf(a[2]) < 1e-6f && a[3] == 0.5f && a[(size_t)3 * z + 1] == 0.5f,
               "affinity: parallel %g, opposite %g, zero column %g (want 1, 0, 0.5)", a[1], a[2], a[3]);
    }
    free(h); free(a);
}

/* ---- spectral clustering -------------------------------------------------------------- */

/* Random partition of z points into d non-empty groups, in shuffled order. */
static void planted_groups(int *group, int z, int d, uint64_t step)
{
    int *p = malloc((size_t)z * sizeof(int));
    random_perm(p, z, step);
    for (int i = 0; i < z; i++) group[p[i]] = i < d ? i : test_below(step, 50 + (uint64_t)i, d);
    free(p);
}

/* labels equal group up to a renaming of the groups (a bijection). */
static int labels_canonical(const int *labels, int z, int d)
{
    int next = 0;
    for (int i = 0; i < z; i++) {
        if (labels[i] > next || labels[i] < 0) return 0;
        if (labels[i] == next) next++;
    }
    return next == d;   /* 0..d-1 each used, numbered by first appearance */
}

static void test_planted(int z, int d, int seeds, float noise)
{
    int *group = malloc((size_t)z * sizeof(int)), *labels = malloc((size_t)z * sizeof(int));
    int *again = malloc((size_t)z * sizeof(int));
    float *a = malloc((size_t)z * z * sizeof(float));
    int exact = 0;
    for (int s = 0; s < seeds; s++) {
        uint64_t step = 20000 + (uint64_t)z * 100 + (uint64_t)d * 10 + (uint64_t)s * 100000;
        planted_groups(group, z, d, step);
        for (int i = 0; i < z; i++)
            for (int j = 0; j <= i; j++) {
                float base = group[i] == group[j] ? 0.8f : 0.3f;
                float v = i == j ? 1.0f : base + test_uniform(step, (uint64_t)(i * z + j), -noise, noise);
                a[(size_t)i * z + j] = a[(size_t)j * z + i] = v;
            }
        ladle_spectral_cluster(a, z, d, (uint64_t)s, labels);
        exact += test_same_partition(labels, group, z, d);
        EXPECT(&T, labels_canonical(labels, z, d), "spectral z=%d d=%d seed=%d: labels not 0..d-1 by first appearance", z, d, s);
        ladle_spectral_cluster(a, z, d, (uint64_t)s, again);
        EXPECT(&T, memcmp(labels, again, (size_t)z * sizeof(int)) == 0, "spectral z=%d d=%d seed=%d: not deterministic", z, d, s);
    }
    EXPECT(&T, exact == seeds, "spectral z=%d d=%d noise=%g: planted groups recovered in %d of %d cases",
           z, d, noise, exact, seeds);
    free(group); free(labels); free(again); free(a);
}

/* Degenerate affinities: whatever the structure, every group must be non-empty. */
static void test_degenerate(void)
{
    int z = 9, labels[9];
    float a[81];
    for (int i = 0; i < 81; i++) a[i] = 1.0f;   /* all experts identical */
    for (int d = 1; d <= z; d++) {
        ladle_spectral_cluster(a, z, d, 3, labels);
        EXPECT(&T, labels_canonical(labels, z, d), "spectral all-ones d=%d: some group empty", d);
    }
    for (int i = 0; i < 81; i++) a[i] = 0.0f;   /* all degrees zero: L = I */
    for (int d = 1; d <= z; d++) {
        ladle_spectral_cluster(a, z, d, 3, labels);
        EXPECT(&T, labels_canonical(labels, z, d), "spectral zero-degree d=%d: some group empty", d);
    }
    for (int i = 0; i < 81; i++) a[i] = (i % 10 == 0) ? 1.0f : 0.0f;   /* self-loops only */
    for (int d = 1; d <= z; d++) {
        ladle_spectral_cluster(a, z, d, 3, labels);
        EXPECT(&T, labels_canonical(labels, z, d), "spectral self-loops-only d=%d: some group empty", d);
    }
}

/* End to end through the router affinity: the logits of the experts of one planted group
 * are noisy copies of the group's prototype column. */
static void test_logit_groups(int z, int d, size_t tokens)
{
    int *group = malloc((size_t)z * sizeof(int)), *labels = malloc((size_t)z * sizeof(int));
    float *h = malloc(tokens * (size_t)z * sizeof(float)), *a = malloc((size_t)z * z * sizeof(float));
    float *proto = malloc(tokens * (size_t)d * sizeof(float));
    uint64_t step = 30000 + (uint64_t)z;
    planted_groups(group, z, d, step);
    for (size_t i = 0; i < tokens * (size_t)d; i++) proto[i] = test_uniform(step + 1, i, -1.0f, 1.0f);
    for (size_t t = 0; t < tokens; t++)
        for (int i = 0; i < z; i++)
            h[t * z + i] = proto[t * d + group[i]] + 0.4f * test_uniform(step + 2, t * z + i, -1.0f, 1.0f);
    ladle_router_affinity(h, tokens, z, a);
    ladle_spectral_cluster(a, z, d, 1, labels);
    EXPECT(&T, test_same_partition(labels, group, z, d), "spectral from logits z=%d d=%d: planted groups not recovered", z, d);
    free(group); free(labels); free(h); free(a); free(proto);
}

/* ---- alignment and merging ------------------------------------------------------------- */

typedef struct {
    int Z, C, Hd;
    float *w1, *b1, *w2, *b2;
} bank;

static bank bank_random(int Z, int C, int Hd, uint64_t step)
{
    bank b = {Z, C, Hd, NULL, NULL, NULL, NULL};
    size_t hc = (size_t)Hd * C;
    b.w1 = malloc(Z * hc * sizeof(float));
    b.b1 = malloc((size_t)Z * Hd * sizeof(float));
    b.w2 = malloc(Z * hc * sizeof(float));
    b.b2 = malloc((size_t)Z * C * sizeof(float));
    for (size_t i = 0; i < Z * hc; i++) {
        b.w1[i] = test_uniform(step, i, -1.0f, 1.0f);
        b.w2[i] = test_uniform(step + 1, i, -1.0f, 1.0f);
    }
    for (size_t i = 0; i < (size_t)Z * Hd; i++) b.b1[i] = test_uniform(step + 2, i, -1.0f, 1.0f);
    for (size_t i = 0; i < (size_t)Z * C; i++) b.b2[i] = test_uniform(step + 3, i, -1.0f, 1.0f);
    return b;
}

static void bank_free(bank *b) { free(b->w1); free(b->b1); free(b->w2); free(b->b2); }

/* Expert dst := expert src with hidden unit pos[a] of dst holding src's unit a, plus
 * uniform noise of half-width eps on every entry (b2 included). */
static void bank_permuted_copy(bank *b, int dst, int src, const int *pos, float eps, uint64_t step)
{
    int C = b->C, Hd = b->Hd;
    size_t hc = (size_t)Hd * C;
    for (int a = 0; a < Hd; a++) {
        for (int c = 0; c < C; c++) {
            b->w1[dst * hc + (size_t)pos[a] * C + c] = b->w1[src * hc + (size_t)a * C + c] +
                test_uniform(step, (uint64_t)(a * C + c), -eps, eps);
            b->w2[dst * hc + (size_t)c * Hd + pos[a]] = b->w2[src * hc + (size_t)c * Hd + a] +
                test_uniform(step + 1, (uint64_t)(a * C + c), -eps, eps);
        }
        b->b1[(size_t)dst * Hd + pos[a]] = b->b1[(size_t)src * Hd + a] + test_uniform(step + 2, (uint64_t)a, -eps, eps);
    }
    for (int c = 0; c < C; c++)
        b->b2[(size_t)dst * C + c] = b->b2[(size_t)src * C + c] + test_uniform(step + 3, (uint64_t)c, -eps, eps);
}

static double max_diff(const float *x, const float *y, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) { double d = fabs((double)x[i] - y[i]); if (d > m) m = d; }
    return m;
}

/* Members {e1, ref, e2} (ids scrambled among unrelated experts), e_k a hidden-unit
 * permutation of ref plus noise eps: the planted permutations come back exactly and the
 * frequency-weighted merge is ref up to the noise. */
static void test_align_copies(int C, int Hd, float eps)
{
    int Z = 6, ref = 4, e1 = 1, e2 = 5;
    bank b = bank_random(Z, C, Hd, 40000 + (uint64_t)Hd);
    int *pos1 = malloc((size_t)Hd * sizeof(int)), *pos2 = malloc((size_t)Hd * sizeof(int));
    random_perm(pos1, Hd, 41000 + (uint64_t)Hd);
    random_perm(pos2, Hd, 42000 + (uint64_t)Hd);
    bank_permuted_copy(&b, e1, ref, pos1, eps, 43000);
    bank_permuted_copy(&b, e2, ref, pos2, eps, 44000);
    int members[3] = {e1, ref, e2};
    double freq[6] = {9, 2, 50, 50, 7, 1};   /* ref (7) tops the group; others are not members */
    size_t hc = (size_t)Hd * C;
    float *w1 = malloc(hc * sizeof(float)), *w2 = malloc(hc * sizeof(float));
    float *b1 = malloc((size_t)Hd * sizeof(float)), *b2 = malloc((size_t)C * sizeof(float));
    int *perm = malloc(3 * (size_t)Hd * sizeof(int));
    int got = ladle_align_and_merge(b.w1, b.b1, b.w2, b.b2, C, Hd, members, 3, freq, w1, b1, w2, b2, perm);
    EXPECT(&T, got == ref, "align C=%d Hd=%d: reference %d, want %d", C, Hd, got, ref);
    int exact = 1;
    for (int a = 0; a < Hd; a++) {
        if (perm[a] != pos1[a] || perm[Hd + a] != a || perm[2 * (size_t)Hd + a] != pos2[a]) exact = 0;
    }
    EXPECT(&T, exact, "align C=%d Hd=%d eps=%g: planted permutations not recovered", C, Hd, eps);
    double tol = 2.0 * eps + 1e-6;
    double err = max_diff(w1, b.w1 + ref * hc, hc);
    err = fmax(err, max_diff(w2, b.w2 + ref * hc, hc));
    err = fmax(err, max_diff(b1, b.b1 + (size_t)ref * Hd, (size_t)Hd));
    err = fmax(err, max_diff(b2, b.b2 + (size_t)ref * C, (size_t)C));
    EXPECT(&T, err <= tol, "align C=%d Hd=%d eps=%g: merged copies differ from the reference by %g", C, Hd, eps, err);
    free(pos1); free(pos2); free(w1); free(w2); free(b1); free(b2); free(perm);
    bank_free(&b);
}

/* <w1_a, P w1_b> + <b1_a, P b1_b> + <w2_a, w2_b P^T> with P given by assign. */
static double align_score(const bank *b, int ea, int eb, const int *assign)
{
    int C = b->C, Hd = b->Hd;
    size_t hc = (size_t)Hd * C;
    double s = 0.0;
    for (int a = 0; a < Hd; a++) {
        for (int c = 0; c < C; c++) {
            s += (double)b->w1[ea * hc + (size_t)a * C + c] * b->w1[eb * hc + (size_t)assign[a] * C + c];
            s += (double)b->w2[ea * hc + (size_t)c * Hd + a] * b->w2[eb * hc + (size_t)c * Hd + assign[a]];
        }
        s += (double)b->b1[(size_t)ea * Hd + a] * b->b1[(size_t)eb * Hd + assign[a]];
    }
    return s;
}

/* Best alignment score over all Hd! permutations (Hd small). */
static double brute_align(const bank *b, int ea, int eb, int *p, int k)
{
    int Hd = b->Hd;
    if (k == Hd) return align_score(b, ea, eb, p);
    double best = -INFINITY;
    for (int i = k; i < Hd; i++) {
        int t = p[k]; p[k] = p[i]; p[i] = t;
        double v = brute_align(b, ea, eb, p, k + 1);
        if (v > best) best = v;
        t = p[k]; p[k] = p[i]; p[i] = t;
    }
    return best;
}

/* The merge of members against a naive f-weighted sum with the returned permutations. */
static void check_merge(const bank *b, const int *members, int m, const double *freq, int want_ref,
                        const double *want_weight, const char *what)
{
    int C = b->C, Hd = b->Hd;
    size_t hc = (size_t)Hd * C;
    float *w1 = malloc(hc * sizeof(float)), *w2 = malloc(hc * sizeof(float));
    float *b1 = malloc((size_t)Hd * sizeof(float)), *b2 = malloc((size_t)C * sizeof(float));
    int *perm = malloc((size_t)m * Hd * sizeof(int));
    int ref = ladle_align_and_merge(b->w1, b->b1, b->w2, b->b2, C, Hd, members, m, freq, w1, b1, w2, b2, perm);
    EXPECT(&T, ref == want_ref, "merge %s: reference %d, want %d", what, ref, want_ref);

    double err = 0.0;
    int perms_ok = 1;
    for (int k = 0; k < m; k++) {
        if (!is_permutation(perm + (size_t)k * Hd, Hd)) perms_ok = 0;
        if (members[k] == ref)
            for (int a = 0; a < Hd; a++) if (perm[(size_t)k * Hd + a] != a) perms_ok = 0;
    }
    EXPECT(&T, perms_ok, "merge %s: permutations invalid (or the reference's is not the identity)", what);
    if (!perms_ok) goto out;
    for (int a = 0; a < Hd; a++) {
        for (int c = 0; c < C; c++) {
            double s1 = 0, s2 = 0;
            for (int k = 0; k < m; k++) {
                int e = members[k], src = perm[(size_t)k * Hd + a];
                s1 += want_weight[k] * b->w1[e * hc + (size_t)src * C + c];
                s2 += want_weight[k] * b->w2[e * hc + (size_t)c * Hd + src];
            }
            err = fmax(err, fabs(s1 - w1[(size_t)a * C + c]));
            err = fmax(err, fabs(s2 - w2[(size_t)c * Hd + a]));
        }
        double s = 0;
        for (int k = 0; k < m; k++) s += want_weight[k] * b->b1[(size_t)members[k] * Hd + perm[(size_t)k * Hd + a]];
        err = fmax(err, fabs(s - b1[a]));
    }
    for (int c = 0; c < C; c++) {
        double s = 0;
        for (int k = 0; k < m; k++) s += want_weight[k] * b->b2[(size_t)members[k] * C + c];
        err = fmax(err, fabs(s - b2[c]));
    }
    EXPECT(&T, err < 1e-5, "merge %s: differs from the naive weighted sum by %g", what, err);

    /* every non-reference member's permutation is an optimal alignment */
    if (Hd <= 7)
        for (int k = 0; k < m; k++) {
            if (members[k] == ref) continue;
            int *p = malloc((size_t)Hd * sizeof(int));
            for (int a = 0; a < Hd; a++) p[a] = a;
            double best = brute_align(b, ref, members[k], p, 0);
            double got = align_score(b, ref, members[k], perm + (size_t)k * Hd);
            EXPECT(&T, got >= best - 1e-4 * (1 + fabs(best)), "merge %s: member %d aligned with score %.9g, best %.9g",
                   what, members[k], got, best);
            free(p);
        }
out:
    free(w1); free(w2); free(b1); free(b2); free(perm);
}

static void test_merge_weights(void)
{
    bank b = bank_random(5, 4, 6, 50000);
    int pair[2] = {3, 1};
    double f[5] = {100, 3, 0, 1, 100};          /* 0 and 4 are not members */
    double w31[2] = {0.25, 0.75};               /* weights in members' order: expert 3, expert 1 */
    check_merge(&b, pair, 2, f, 1, w31, "f=(3,1)");
    double g[5] = {0, 1, 0, 3, 0};
    double w13[2] = {0.75, 0.25};
    check_merge(&b, pair, 2, g, 3, w13, "f=(1,3)");
    double zero[5] = {5, 0, 5, 0, 5};
    double half[2] = {0.5, 0.5};
    check_merge(&b, pair, 2, zero, 1, half, "f=0 (plain average, lowest id)");
    double tie[5] = {0, 2, 0, 2, 0};
    check_merge(&b, pair, 2, tie, 1, half, "tied f (lowest id)");

    int three[3] = {4, 0, 2};
    double h[5] = {1, 0, 2, 0, 1};
    double w3[3] = {0.25, 0.25, 0.5};
    check_merge(&b, three, 3, h, 2, w3, "three experts");
    int one[1] = {3};
    double w1[1] = {1.0};
    check_merge(&b, one, 1, h, 3, w1, "single expert");
    bank_free(&b);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    test_hungarian();

    test_affinity(1, 1, 60000);
    test_affinity(300, 7, 60001);
    test_affinity(4096, 16, 60002);
    test_affinity(50, 64, 60003);

    test_planted(8, 2, 20, 0.1f);
    test_planted(12, 3, 20, 0.1f);
    test_planted(16, 4, 20, 0.1f);
    test_planted(32, 8, 10, 0.1f);
    test_planted(64, 8, 5, 0.1f);
    test_planted(128, 16, 3, 0.1f);
    test_planted(5, 5, 3, 0.1f);
    test_planted(7, 1, 3, 0.1f);
    test_degenerate();
    test_logit_groups(16, 4, 2000);
    test_logit_groups(32, 8, 2000);

    test_align_copies(4, 8, 0.0f);
    test_align_copies(8, 32, 1e-4f);
    test_align_copies(32, 128, 1e-3f);
    test_merge_weights();

    int rc = test_summary(&T, "test_prune");
    MPI_Finalize();
    return rc;
}
