/* bench_train: BLIS sgemm speed at the shapes of one training step, through ladle_gemm.
 *
 *   bench_train [layers=4] [dim=256] [heads=4] [context=256] [batch=16] [reps=6]
 *
 * Threads: BLIS_NUM_THREADS (as for ladle itself). For every matrix product of a training
 * step (forward and both backward products of each linear layer, the four attention
 * products per head, the tied-embedding logits) it times the shape as ladle calls it
 * (same transpositions and leading dimensions), best of `reps` passes over all shapes, and reports
 *
 *   gemm_threads N
 *   gemm_peak_gflops X     square 1024^3 sgemm (the MFU denominator)
 *   gemm_model_gflops X    FLOP-weighted harmonic mean over the step's products, i.e.
 *                          (FLOPs of the step's GEMMs) / (time they would take at the
 *                          measured rates): the best a step can do if only GEMMs cost time
 *   flops_per_token X      ladle_model_flops_per_token (what MFU counts)
 *   gemm_flops_per_token X the FLOPs per token of the products timed here
 *
 * plus one human-readable "shape" line per product. MPI_Init/MPI_Finalize are called
 * because libladle reports failures through MPI. Exit 0, or non-zero on a failure. */
#include "ladle/config.h"
#include "ladle/error.h"
#include "ladle/kernels.h"
#include "ladle/log.h"
#include "ladle/model.h"

#include <blis.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    int ta, tb, m, n, k;
    int lda, ldb, ldc;
    double calls;          /* calls per training step (per B*T tokens) */
} shape;

static float *fill(size_t n, unsigned seed)
{
    float *p = ladle_malloc(n * sizeof(float), "benchmark matrix");
    unsigned s = seed * 2654435761u + 1u;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = (float)((s >> 8) & 0xffff) / 65536.0f - 0.5f;
    }
    return p;
}

/* Seconds per call: each timing runs enough calls to last >= ~40 ms (at least one). */
static double time_calls(const shape *s, const float *a, const float *b, float *c, int inner)
{
    double t0 = ladle_now();
    for (int i = 0; i < inner; i++)
        ladle_gemm(s->ta, s->tb, s->m, s->n, s->k, 1.0f, a, s->lda, b, s->ldb, 0.0f, c, s->ldc);
    return (ladle_now() - t0) / inner;
}

/* Times every shape `reps` times, in passes over all shapes (so a burst of load on the
 * shared machine spoils one sample of several shapes, not every sample of one), and
 * leaves the best seconds per call of shape i in best[i]. */
static void time_shapes(const shape *shapes, int n_shapes, int reps, double *best)
{
    float **a = ladle_calloc((size_t)n_shapes * 3, sizeof(float *), "benchmark matrices");
    int *inner = ladle_calloc((size_t)n_shapes, sizeof(int), "benchmark counts");
    for (int i = 0; i < n_shapes; i++) {
        const shape *s = &shapes[i];
        size_t rows_a = s->ta ? (size_t)s->k : (size_t)s->m, rows_b = s->tb ? (size_t)s->n : (size_t)s->k;
        a[3 * i] = fill(rows_a * s->lda, 1);
        a[3 * i + 1] = fill(rows_b * s->ldb, 2);
        a[3 * i + 2] = fill((size_t)s->m * s->ldc, 3);
        time_calls(s, a[3 * i], a[3 * i + 1], a[3 * i + 2], 1);                 /* warm up */
        double once = time_calls(s, a[3 * i], a[3 * i + 1], a[3 * i + 2], 1);
        inner[i] = once > 0.04 ? 1 : (int)(0.04 / (once > 1e-6 ? once : 1e-6)) + 1;
        best[i] = 1e30;
    }
    for (int r = 0; r < reps; r++)
        for (int i = 0; i < n_shapes; i++) {
            double t = time_calls(&shapes[i], a[3 * i], a[3 * i + 1], a[3 * i + 2], inner[i]);
            if (t < best[i]) best[i] = t;
        }
    for (int i = 0; i < 3 * n_shapes; i++) free(a[i]);
    free(a);
    free(inner);
}

static int parse_int(const char *arg, const char *key, int *out)
{
    size_t n = strlen(key);
    if (strncmp(arg, key, n) != 0 || arg[n] != '=') return 0;
    char *end;
    long v = strtol(arg + n + 1, &end, 10);
    if (*end != '\0' || v < 1 || v > 1000000) {
        fprintf(stderr, "bench_train: bad value in '%s'\n", arg);
        exit(2);
    }
    *out = (int)v;
    return 1;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int layers = 4, dim = 256, heads = 4, context = 256, batch = 16, reps = 6;
    for (int i = 1; i < argc; i++) {
        if (parse_int(argv[i], "layers", &layers) || parse_int(argv[i], "dim", &dim) ||
            parse_int(argv[i], "heads", &heads) || parse_int(argv[i], "context", &context) ||
            parse_int(argv[i], "batch", &batch) || parse_int(argv[i], "reps", &reps))
            continue;
        fprintf(stderr, "usage: bench_train [layers=N] [dim=N] [heads=N] [context=N] [batch=N] [reps=N]\n");
        MPI_Finalize();
        return 2;
    }
    if (dim % heads != 0) {
        fprintf(stderr, "bench_train: heads (%d) must divide dim (%d)\n", heads, dim);
        MPI_Finalize();
        return 2;
    }
    const char *env = getenv("BLIS_NUM_THREADS");
    if (env && atoi(env) > 0) bli_thread_set_num_threads(atoi(env));
    int threads = (int)bli_thread_get_num_threads();
    if (threads < 1) threads = 1;

    ladle_config cfg;
    ladle_config_defaults(&cfg);
    cfg.layers = layers; cfg.dim = dim; cfg.heads = heads; cfg.context = context; cfg.batch = batch;
    ladle_model model;
    ladle_model_create(&model, &cfg);
    double fpt = ladle_model_flops_per_token(&model);

    const int C = dim, T = context, hs = dim / heads, V = LADLE_VOCAB, N = batch * context;
    const double L = layers, BH = (double)batch * heads;
    /* Shapes exactly as src/kernels.c calls ladle_gemm (trans_a, trans_b, m, n, k, lda, ldb, ldc). */
#define LINEAR(nm, IN, OUT, count)                                                      \
    {nm " fwd   y=xW^T", 0, 1, N, OUT, IN, IN, IN, OUT, count},                          \
    {nm " bwd   dx=dyW", 0, 0, N, IN, OUT, OUT, IN, IN, count},                          \
    {nm " bwd dW=dy^Tx", 1, 0, OUT, IN, N, OUT, IN, IN, count}
    shape shapes[] = {
        LINEAR("qkv   ", C, 3 * C, L),
        LINEAR("proj  ", C, C, L),
        LINEAR("fc1   ", C, 4 * C, L),
        LINEAR("fc2   ", 4 * C, C, L),
        LINEAR("logits", C, V, 1),
        {"att scores fwd qk^T ", 0, 1, T, T, hs, 3 * C, 3 * C, T, L * BH},
        {"att PV fwd          ", 0, 0, T, hs, T, T, 3 * C, C, L * BH},
        {"att bwd dP=dO V^T   ", 0, 1, T, T, hs, C, 3 * C, T, L * BH},
        {"att bwd dV=P^T dO   ", 1, 0, T, hs, T, T, C, 3 * C, L * BH},
        {"att bwd dQ=dS K     ", 0, 0, T, hs, T, T, 3 * C, 3 * C, L * BH},
        {"att bwd dK=dS^T Q   ", 1, 0, T, hs, T, T, 3 * C, 3 * C, L * BH},
    };
#undef LINEAR
    const int n_shapes = (int)(sizeof shapes / sizeof shapes[0]);

    printf("bench_train: layers %d dim %d heads %d context %d batch %d; BLIS threads %d; best of %d\n",
           layers, dim, heads, context, batch, threads, reps);
    /* the square reference is timed with the model's shapes, as one more entry */
    shape all[sizeof shapes / sizeof shapes[0] + 1];
    memcpy(all, shapes, sizeof shapes);
    all[n_shapes] = (shape){"square 1024^3       ", 0, 0, 1024, 1024, 1024, 1024, 1024, 1024, 1};
    double best[sizeof all / sizeof all[0]];
    time_shapes(all, n_shapes + 1, reps, best);
    double peak = 2.0 * 1024 * 1024 * 1024 / best[n_shapes] / 1e9;

    double step_flops = 0.0, step_time = 0.0;
    for (int i = 0; i < n_shapes; i++) {
        const shape *s = &shapes[i];
        double f = 2.0 * s->m * s->n * s->k, t = best[i];
        step_flops += f * s->calls;
        step_time += t * s->calls;
        printf("shape %s m %5d n %5d k %5d  x%-5.0f %7.1f GFLOP/s  %8.2f ms/step\n", s->name, s->m, s->n, s->k,
               s->calls, f / t / 1e9, 1e3 * t * s->calls);
    }
    printf("shape %s m  1024 n  1024 k  1024         %7.1f GFLOP/s\n", all[n_shapes].name, peak);
    double model_gflops = step_flops / step_time / 1e9;
    printf("gemm time per step at these rates: %.1f ms (%.0f tokens/s if only GEMMs cost time)\n",
           1e3 * step_time, (double)N / step_time);
    printf("gemm_threads %d\n", threads);
    printf("gemm_peak_gflops %.1f\n", peak);
    printf("gemm_model_gflops %.1f\n", model_gflops);
    printf("flops_per_token %.0f\n", fpt);
    printf("gemm_flops_per_token %.0f\n", step_flops / N);
    fflush(stdout);
    ladle_model_free(&model);
    MPI_Finalize();
    return 0;
}
