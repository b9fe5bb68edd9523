/* prune: UNCURL's primitives (see prune.h and METHODS.md section 3). */
#include "ladle/prune.h"
#include "ladle/ckpt.h"
#include "ladle/data.h"
#include "ladle/model.h"
#include "ladle/error.h"
#include "ladle/kernels.h"
#include "ladle/kmeans.h"
#include "ladle/rng.h"

#include <lapacke.h>

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* k-means++ seeding draws from a stream of its own. rng.h's enum ends at
 * LADLE_STREAM_EXPERT and smear.c already uses LADLE_STREAM_EXPERT + 1, so this is the
 * next free one (a literal here rather than a new enum entry, to keep rng.h unchanged). */
#define PRUNE_KMEANS_STREAM ((uint64_t)LADLE_STREAM_EXPERT + 2)

/* Restarts of k-means (different seedings); the lowest inertia wins. Cheap next to the
 * rest of pruning, and with d in the tens single runs often stop in a local minimum. */
#define KMEANS_RESTARTS 100
#define KMEANS_MAX_ITERS 200

/* ---- linear assignment ------------------------------------------------------------ */

/* Minimisation of cost = -score by successive shortest augmenting paths with row
 * potentials u and column potentials v (the O(n^3) form of the Hungarian algorithm):
 * rows are added one at a time; each addition grows a Dijkstra-like tree over columns on
 * reduced costs (which the potentials keep >= 0) until it reaches a free column, then flips
 * the matching along the path. Arrays are 1-based; column 0 is a sentinel holding the row
 * being added. */
double ladle_hungarian(const double *score, int n, int *assign)
{
    if (n <= 0) return 0.0;
    for (size_t i = 0; i < (size_t)n * n; i++)
        LADLE_CHECK(isfinite(score[i]), "ladle_hungarian: non-finite score at (%zu, %zu)",
                    i / (size_t)n, i % (size_t)n);

    size_t n1 = (size_t)n + 1;
    double *u = ladle_calloc(n1, sizeof(double), "hungarian u");
    double *v = ladle_calloc(n1, sizeof(double), "hungarian v");
    double *minv = ladle_malloc(n1 * sizeof(double), "hungarian minv");
    int *p = ladle_calloc(n1, sizeof(int), "hungarian p");      /* row matched to column j */
    int *way = ladle_calloc(n1, sizeof(int), "hungarian way");  /* previous column on the path */
    char *used = ladle_malloc(n1, "hungarian used");

    for (int i = 1; i <= n; i++) {
        p[0] = i;
        int j0 = 0;
        for (size_t j = 0; j < n1; j++) { minv[j] = INFINITY; used[j] = 0; }
        do {
            used[j0] = 1;
            int i0 = p[j0], j1 = -1;
            double delta = INFINITY;
            const double *row = score + (size_t)(i0 - 1) * n;
            for (int j = 1; j <= n; j++) {
                if (used[j]) continue;
                double cur = -row[j - 1] - u[i0] - v[j];
                if (cur < minv[j]) { minv[j] = cur; way[j] = j0; }
                if (minv[j] < delta) { delta = minv[j]; j1 = j; }
            }
            /* Some column is always free while row i is unmatched and scores are finite. */
            LADLE_CHECK(j1 > 0, "ladle_hungarian: no augmenting column (n = %d)", n);
            for (int j = 0; j <= n; j++) {
                if (used[j]) { u[p[j]] += delta; v[j] -= delta; }
                else minv[j] -= delta;
            }
            j0 = j1;
        } while (p[j0] != 0);
        do {   /* flip the matching along the path back to the sentinel */
            int j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
        } while (j0 != 0);
    }

    for (int j = 1; j <= n; j++) assign[p[j] - 1] = j - 1;
    /* The total is summed from the scores themselves, not from the potentials, so that it
     * is exactly the value of the returned assignment. */
    double total = 0.0;
    for (int i = 0; i < n; i++) total += score[(size_t)i * n + assign[i]];

    free(u); free(v); free(minv); free(p); free(way); free(used);
    return total;
}

/* ---- router affinity ---------------------------------------------------------------- */

void ladle_router_affinity(const float *logits, size_t tokens, int z, float *affinity)
{
    LADLE_CHECK(z >= 1, "ladle_router_affinity: z = %d", z);
    float *g = ladle_calloc((size_t)z * z, sizeof(float), "affinity gram");
    /* G = H^T H; ladle_gemm's inner dimension is an int, so very long recordings are
     * accumulated in slices of rows. */
    const size_t slice = (size_t)INT_MAX;
    for (size_t t0 = 0; t0 < tokens; t0 += slice) {
        size_t rows = tokens - t0 < slice ? tokens - t0 : slice;
        ladle_gemm(1, 0, z, z, (int)rows, 1.0f, logits + t0 * z, z, logits + t0 * z, z,
                   t0 == 0 ? 0.0f : 1.0f, g, z);
    }
    for (int i = 0; i < z; i++) {
        affinity[(size_t)i * z + i] = 1.0f;
        for (int j = i + 1; j < z; j++) {
            double den = sqrt((double)g[(size_t)i * z + i] * (double)g[(size_t)j * z + j]);
            double c = den > 0 ? g[(size_t)i * z + j] / den : 0.0;
            /* Single-precision rounding can push |cos| of parallel columns past 1. */
            if (c > 1.0) c = 1.0;
            if (c < -1.0) c = -1.0;
            float a = (float)(0.5 * (1.0 + c));
            affinity[(size_t)i * z + j] = a;
            affinity[(size_t)j * z + i] = a;   /* mirrored, so exactly symmetric */
        }
    }
    free(g);
}

/* ---- spectral clustering ------------------------------------------------------------ */

void ladle_spectral_cluster(const float *affinity, int z, int d, uint64_t seed, int *labels)
{
    LADLE_CHECK(z >= 1 && d >= 1 && d <= z, "ladle_spectral_cluster: need 1 <= d <= z (z = %d, d = %d)", z, d);
    if (d == 1) { for (int i = 0; i < z; i++) labels[i] = 0; return; }

    size_t zz = (size_t)z * z;
    double *lap = ladle_malloc(zz * sizeof(double), "laplacian");
    double *dinv = ladle_malloc((size_t)z * sizeof(double), "degrees");
    double *eval = ladle_malloc((size_t)z * sizeof(double), "eigenvalues");

    /* The affinity as given, diagonal included (UNCURL's A_ii = 1): unlike NJW's A_ii = 0,
     * the self-loop lets a lone dissimilar expert form a group of its own, which measured
     * clearly better on planted groups with singletons. Symmetrised against rounding. */
    for (int i = 0; i < z; i++)
        for (int j = 0; j < z; j++) {
            double a = 0.5 * ((double)affinity[(size_t)i * z + j] + (double)affinity[(size_t)j * z + i]);
            LADLE_CHECK(isfinite(a) && a >= 0.0, "ladle_spectral_cluster: affinity (%d, %d) = %g is not finite and >= 0", i, j, a);
            lap[(size_t)i * z + j] = a;
        }
    for (int i = 0; i < z; i++) {
        double deg = 0.0;
        for (int j = 0; j < z; j++) deg += lap[(size_t)i * z + j];
        /* An expert unlike all others (degree 0) keeps its row of I: an eigenvalue-1
         * eigenvector of its own instead of a division by zero. */
        dinv[i] = deg > 0.0 ? 1.0 / sqrt(deg) : 0.0;
    }
    for (int i = 0; i < z; i++)
        for (int j = 0; j < z; j++) {
            double a = lap[(size_t)i * z + j];
            lap[(size_t)i * z + j] = (i == j ? 1.0 : 0.0) - dinv[i] * a * dinv[j];
        }

    /* Eigenvalues come back ascending; eigenvector k is column k (row-major storage). */
    lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', z, lap, z, eval);
    LADLE_CHECK(info == 0, "LAPACKE_dsyevd failed (info = %d) on a %d x %d Laplacian", (int)info, z, z);

    /* Rows of the d smallest eigenvectors, each scaled to unit length (NJW), so that the
     * points of a cluster sit together on the sphere whatever their degree. */
    double *x = ladle_malloc((size_t)z * d * sizeof(double), "spectral embedding");
    for (int i = 0; i < z; i++) {
        double s = 0.0;
        for (int k = 0; k < d; k++) { double t = lap[(size_t)i * z + k]; x[(size_t)i * d + k] = t; s += t * t; }
        if (s > 0.0) {
            s = 1.0 / sqrt(s);
            for (int k = 0; k < d; k++) x[(size_t)i * d + k] *= s;
        }
    }

    ladle_kmeans_options opt = {
        .metric = LADLE_KMEANS_EUCLIDEAN, .restarts = KMEANS_RESTARTS, .max_iters = KMEANS_MAX_ITERS,
        .seed = seed, .stream = PRUNE_KMEANS_STREAM,
    };
    ladle_kmeans(x, (size_t)z, d, d, &opt, NULL, labels);
    free(lap); free(dinv); free(eval); free(x);
}

/* ---- alignment and merging ---------------------------------------------------------- */

int ladle_align_and_merge(const float *w1, const float *b1, const float *w2, const float *b2,
                          int C, int Hd, const int *members, int m, const double *freq,
                          float *out_w1, float *out_b1, float *out_w2, float *out_b2, int *perm)
{
    LADLE_CHECK(C >= 1 && Hd >= 1 && m >= 1, "ladle_align_and_merge: C = %d, Hd = %d, m = %d", C, Hd, m);
    int ref = -1;
    double total = 0.0;
    for (int k = 0; k < m; k++) {
        int e = members[k];
        LADLE_CHECK(e >= 0, "ladle_align_and_merge: expert id %d", e);
        for (int l = 0; l < k; l++)
            LADLE_CHECK(members[l] != e, "ladle_align_and_merge: expert %d listed twice", e);
        LADLE_CHECK(isfinite(freq[e]) && freq[e] >= 0.0, "ladle_align_and_merge: frequency of expert %d is %g", e, freq[e]);
        total += freq[e];
        if (ref < 0 || freq[e] > freq[ref] || (freq[e] == freq[ref] && e < ref)) ref = e;
    }

    size_t hc = (size_t)Hd * C, hh = (size_t)Hd * Hd;
    const float *w1r = w1 + (size_t)ref * hc, *b1r = b1 + (size_t)ref * Hd, *w2r = w2 + (size_t)ref * hc;
    float *s = m > 1 ? ladle_malloc(hh * sizeof(float), "alignment scores") : NULL;
    double *sd = m > 1 ? ladle_malloc(hh * sizeof(double), "alignment scores (double)") : NULL;
    int *assign = ladle_malloc((size_t)Hd * sizeof(int), "alignment");

    memset(out_w1, 0, hc * sizeof(float));
    memset(out_b1, 0, (size_t)Hd * sizeof(float));
    memset(out_w2, 0, hc * sizeof(float));
    memset(out_b2, 0, (size_t)C * sizeof(float));
    for (int k = 0; k < m; k++) {
        int e = members[k];
        const float *w1e = w1 + (size_t)e * hc, *b1e = b1 + (size_t)e * Hd;
        const float *w2e = w2 + (size_t)e * hc, *b2e = b2 + (size_t)e * C;
        if (e == ref) {
            for (int h = 0; h < Hd; h++) assign[h] = h;
        } else {
            /* S[a, b] = gain of putting e's hidden unit b at the reference's position a:
             * its input row against w1_ref[a, :], its bias against b1_ref[a], and its output
             * column against w2_ref[:, a]. */
            ladle_gemm(0, 1, Hd, Hd, C, 1.0f, w1r, C, w1e, C, 0.0f, s, Hd);    /* w1_ref w1_e^T */
            ladle_gemm(1, 0, Hd, Hd, C, 1.0f, w2r, Hd, w2e, Hd, 1.0f, s, Hd);  /* += w2_ref^T w2_e */
            for (int a = 0; a < Hd; a++)
                for (int b = 0; b < Hd; b++)
                    sd[(size_t)a * Hd + b] = (double)s[(size_t)a * Hd + b] + (double)b1r[a] * b1e[b];
            ladle_hungarian(sd, Hd, assign);
        }
        float alpha = total > 0.0 ? (float)(freq[e] / total) : 1.0f / (float)m;
        for (int a = 0; a < Hd; a++) {
            const float *src = w1e + (size_t)assign[a] * C;
            float *dst = out_w1 + (size_t)a * C;
            for (int c = 0; c < C; c++) dst[c] += alpha * src[c];
            out_b1[a] += alpha * b1e[assign[a]];
        }
        for (int c = 0; c < C; c++) {
            const float *src = w2e + (size_t)c * Hd;
            float *dst = out_w2 + (size_t)c * Hd;
            for (int a = 0; a < Hd; a++) dst[a] += alpha * src[assign[a]];
            out_b2[c] += alpha * b2e[c];
        }
        if (perm) memcpy(perm + (size_t)k * Hd, assign, (size_t)Hd * sizeof(int));
    }
    free(s); free(sd); free(assign);
    return ref;
}

/* ---- the UNCURL pipeline on a model file ------------------------------------------ */

/* Copy every tensor the two models share by name and size (all but the pruned sites). */
static void copy_shared_tensors(const ladle_model *from, const float *src, const ladle_model *to, float *dst)
{
    for (int i = 0; i < to->n_tensors; i++) {
        const ladle_tensor *t = &to->tensors[i];
        const ladle_tensor *s = ladle_model_tensor(from, t->name);
        if (s && s->size == t->size) memcpy(dst + t->offset, src + s->offset, t->size * sizeof(float));
    }
}

typedef struct { double f; int e; } usage;

static int by_usage_desc(const void *a, const void *b)
{
    const usage *x = a, *y = b;
    if (x->f != y->f) return x->f < y->f ? 1 : -1;
    return x->e - y->e;
}

void ladle_prune_model(const char *in_path, const char *out_path, const uint8_t *const *docs, const size_t *lens,
                       size_t n_docs, int D, ladle_prune_method method, int windows, MPI_Comm comm)
{
    int rank = 0;
    MPI_CHECK(MPI_Comm_rank(comm, &rank));
    ladle_ckpt_loaded m;
    ladle_ckpt_load(in_path, comm, &m);
    if (m.soup.n > 0) ladle_usage_error("prune: '%s' is a soup; instantiate it first", in_path);
    const ladle_model *old = &m.model;
    /* routed sites: moe (token routing) and smear (segment routing, full-FFN experts) */
    int sites = 0, has_moe = 0, has_smear = 0;
    for (int l = 0; l < old->layers; l++) {
        if (old->ffn_kind[l] == LADLE_FFN_TAG || old->adapter_kind[l])
            ladle_usage_error("prune: layer %d of '%s' is a tag or adapter site: only moe and smear (ffn) sites can "
                              "be pruned", l, in_path);
        has_moe |= old->ffn_kind[l] == LADLE_FFN_MOE;
        has_smear |= old->ffn_kind[l] == LADLE_FFN_SMEAR;
        sites += old->ffn_kind[l] == LADLE_FFN_MOE || old->ffn_kind[l] == LADLE_FFN_SMEAR;
    }
    if (sites == 0) ladle_usage_error("prune: '%s' has no moe or smear sites (model.ffn = %s)", in_path, m.cfg.ffn);
    const int C = old->dim, T = old->context, Hd = 4 * C, nseg = T / old->smear.segment;
    int Zmin = has_moe ? old->moe.Z : old->smear.N;
    if (has_smear && old->smear.N < Zmin) Zmin = old->smear.N;
    if (D < 1 || D >= Zmin)
        ladle_usage_error("prune: --experts %d: expected 1 <= D < %d (the model's %s)", D, Zmin,
                          has_moe && (!has_smear || old->moe.Z <= old->smear.N) ? "moe.experts" : "smear.experts");
    float *theta = ladle_ckpt_gather_theta(&m, NULL, NULL);

    /* the task's text, read in fixed windows; every rank runs them all (the statistics are
     * small, and the result is then the same everywhere) */
    size_t total = 0;
    for (size_t i = 0; i < n_docs; i++) total += lens[i];
    ladle_domain task;
    memset(&task, 0, sizeof task);
    task.valid = ladle_malloc(total ? total : 1, "task bytes");
    for (size_t i = 0, at = 0; i < n_docs; at += lens[i], i++) memcpy(task.valid + at, docs[i], lens[i]);
    task.valid_bytes = total;
    int nw = ladle_valid_windows(&task, T, windows);
    if (nw == 0) ladle_usage_error("prune: the task text holds %zu bytes, fewer than one window of %d", total, T + 1);

    /* 1. the routing of every site over the task and how often each expert comes first:
     * moe, router logits per token; smear, routing probabilities per segment */
    float **logits = ladle_calloc((size_t)old->layers, sizeof(float *), "router logits");
    double **freq = ladle_calloc((size_t)old->layers, sizeof(double *), "expert usage");
    size_t *rows = ladle_calloc((size_t)old->layers, sizeof(size_t), "routing rows");
    int *experts = ladle_calloc((size_t)old->layers, sizeof(int), "experts per site");
    for (int l = 0; l < old->layers; l++) {
        int kind = old->ffn_kind[l];
        if (kind != LADLE_FFN_MOE && kind != LADLE_FFN_SMEAR) continue;
        experts[l] = kind == LADLE_FFN_MOE ? old->moe.Z : old->smear.N;
        rows[l] = (size_t)nw * (kind == LADLE_FFN_MOE ? T : nseg);
        logits[l] = ladle_malloc(rows[l] * experts[l] * sizeof(float), "router logits");
        freq[l] = ladle_calloc((size_t)experts[l], sizeof(double), "expert usage");
    }
    const int chunk = 8;
    ladle_activations acts;
    ladle_activations_create(&acts, old, chunk);
    uint8_t *tok = ladle_malloc((size_t)chunk * T, "tokens"), *tgt = ladle_malloc((size_t)chunk * T, "targets");
    for (int w = 0; w < nw; w += chunk) {
        int n = w + chunk < nw ? chunk : nw - w;
        ladle_batch_valid(&task, T, nw, w, w + n, tok, tgt);
        ladle_model_forward(old, theta, &acts, tok, tgt, n);
        for (int l = 0; l < old->layers; l++) {
            if (!logits[l]) continue;
            const int E = experts[l];
            if (old->ffn_kind[l] == LADLE_FFN_MOE) {
                memcpy(logits[l] + (size_t)w * T * E, ladle_moe_logits(acts.moe_cache[l]),
                       (size_t)n * T * E * sizeof(float));
                const int *top1 = ladle_moe_top1(acts.moe_cache[l]);
                for (int i = 0; i < n * T; i++) freq[l][top1[i]] += 1.0;
            } else {
                const float *p = ladle_smear_probs(acts.smear_cache[l]);
                memcpy(logits[l] + (size_t)w * nseg * E, p, (size_t)n * nseg * E * sizeof(float));
                for (int i = 0; i < n * nseg; i++) {
                    int best = 0;
                    for (int e = 1; e < E; e++) best = p[(size_t)i * E + e] > p[(size_t)i * E + best] ? e : best;
                    freq[l][best] += 1.0;
                }
            }
        }
    }

    /* 2. the pruned model: D experts per site */
    ladle_config cfg = m.cfg;
    if (has_moe) cfg.moe_experts = D;
    if (has_smear) cfg.smear_experts = D;
    if (cfg.moe_top_k > cfg.moe_experts) cfg.moe_top_k = cfg.moe_experts;
    const int Zmax = old->moe.Z > old->smear.N ? old->moe.Z : old->smear.N;
    ladle_model pruned;
    ladle_model_create(&pruned, &cfg);
    float *out = ladle_calloc(pruned.n_params, sizeof(float), "pruned parameters");
    ladle_model_init_range(&pruned, out, 0, pruned.n_params, (uint64_t)cfg.seed + 1);   /* fresh routers */
    copy_shared_tensors(old, theta, &pruned, out);
    int *labels = ladle_malloc((size_t)Zmax * sizeof(int), "expert groups");
    float *affinity = ladle_malloc((size_t)Zmax * Zmax * sizeof(float), "affinity");
    for (int l = 0; l < old->layers; l++) {
        if (!logits[l]) continue;
        const int Z = experts[l], smear = old->ffn_kind[l] == LADLE_FFN_SMEAR;
        ladle_site_params s = ladle_site_view(old, theta, l), p = ladle_site_view(&pruned, out, l);
        float *w1 = (float *)p.w1, *b1 = (float *)p.b1, *w2 = (float *)p.w2, *b2 = (float *)p.b2;
        for (int e = 0; e < Z; e++) labels[e] = -1;
        if (method == LADLE_PRUNE_FREQUENCY) {
            /* the paper's naive baseline: keep the D most used experts, their router rows too */
            usage *u = ladle_malloc((size_t)Z * sizeof(usage), "usage");
            for (int e = 0; e < Z; e++) u[e] = (usage){freq[l][e], e};
            qsort(u, (size_t)Z, sizeof(usage), by_usage_desc);
            for (int g = 0; g < D; g++) {
                int e = u[g].e;
                memcpy(w1 + (size_t)g * Hd * C, s.w1 + (size_t)e * Hd * C, (size_t)Hd * C * sizeof(float));
                memcpy(b1 + (size_t)g * Hd, s.b1 + (size_t)e * Hd, (size_t)Hd * sizeof(float));
                memcpy(w2 + (size_t)g * C * Hd, s.w2 + (size_t)e * C * Hd, (size_t)C * Hd * sizeof(float));
                memcpy(b2 + (size_t)g * C, s.b2 + (size_t)e * C, (size_t)C * sizeof(float));
                if (smear) {   /* the expert's router vector, gain and default logit */
                    memcpy((float *)p.smear.w + (size_t)g * C, s.smear.w + (size_t)e * C, (size_t)C * sizeof(float));
                    memcpy((float *)p.smear.g + (size_t)g * C, s.smear.g + (size_t)e * C, (size_t)C * sizeof(float));
                    ((float *)p.smear.default_logits)[g] = s.smear.default_logits[e];
                } else {
                    memcpy((float *)p.moe_router + (size_t)g * C, s.moe_router + (size_t)e * C, (size_t)C * sizeof(float));
                }
                labels[e] = g;
            }
            free(u);
        } else {
            /* UNCURL: group experts whose routing agrees, merge each group onto its most used
             * member; the router is re-initialised with D outputs (to be re-trained) */
            ladle_router_affinity(logits[l], rows[l], Z, affinity);
            ladle_spectral_cluster(affinity, Z, D, (uint64_t)cfg.seed, labels);
            int *members = ladle_malloc((size_t)Z * sizeof(int), "group members");
            for (int g = 0; g < D; g++) {
                int n = 0;
                for (int e = 0; e < Z; e++)
                    if (labels[e] == g) members[n++] = e;
                ladle_align_and_merge(s.w1, s.b1, s.w2, s.b2, C, Hd, members, n, freq[l], w1 + (size_t)g * Hd * C,
                                      b1 + (size_t)g * Hd, w2 + (size_t)g * C * Hd, b2 + (size_t)g * C, NULL);
            }
            free(members);
        }
        if (rank == 0) {
            printf("layer %d (%s): %d -> %d experts (%s); top-1 share per expert:", l, smear ? "smear" : "moe", Z, D,
                   method == LADLE_PRUNE_FREQUENCY ? "frequency" : "uncurl");
            for (int e = 0; e < Z; e++)
                if (labels[e] >= 0) printf(" e%d %.3f->g%d", e, freq[l][e] / (double)rows[l], labels[e]);
                else printf(" e%d %.3f->dropped", e, freq[l][e] / (double)rows[l]);
            printf("\n");
        }
    }

    /* 3. write it collectively, each rank its slice */
    ladle_shard shard;
    ladle_shard_create(&shard, pruned.n_params, comm);
    float *slice = ladle_calloc(shard.slice, sizeof(float), "pruned slice");
    memcpy(slice, out + shard.lo, (shard.hi - shard.lo) * sizeof(float));
    ladle_ckpt_contents c = {
        .kind = "dense",
        .step = m.step,
        .cfg = &cfg,
        .model = &pruned,
        .shard = &shard,
        .state = {.shared = slice},
        .n_domains = m.n_domains,
        .domain_names = (const char (*)[LADLE_NAME_MAX])m.domain_names,
        .source = in_path,
    };
    ladle_ckpt_save(out_path, &c);
    if (rank == 0) printf("wrote %s: %d routed site(s) pruned to %d experts from %d task windows\n", out_path, sites, D, nw);

    for (int l = 0; l < old->layers; l++) { free(logits[l]); free(freq[l]); }
    free(logits); free(freq); free(rows); free(experts); free(labels); free(affinity); free(slice); free(out); free(tok); free(tgt);
    free(task.valid); free(theta);
    ladle_activations_free(&acts);
    ladle_model_free(&pruned);
    ladle_ckpt_loaded_free(&m);
}
