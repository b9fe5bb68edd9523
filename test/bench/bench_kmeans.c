/* bench_kmeans: the Lloyd iterations of the distributed k-means of 'ladle prep
 * --clusters' against the BLIS sgemm bound, measured in the same run.
 *
 *   bench_kmeans [n=1048576] [k=4096] [d=64] [iters=2] [sample=0] [seed=1]
 *
 * n unit points in d dimensions (around k random directions, noise 0.3 per coordinate:
 * clusters, but overlapping ones), spread over the ranks in contiguous shares, clustered
 * into k by ladle_kmeans_float_mpi as ladle_cluster_embeddings does (spherical; sample 0:
 * embed.h's rule, max(16384, 4 k) points), `iters` Lloyd iterations. kmeans.h's options
 * time the seeding (on every rank, on the sample) and each iteration: the assignment of
 * every point (one sgemm per block of 64 points against the k centres, the exact recheck
 * of near ties), the fixed-point sums and their all-reduce, the update.
 *
 * The bound: those products alone, 2 n/P k d flops per rank, at the rate BLIS reaches on
 * this machine, measured in the same run (just before the clustering) on 64-point blocks
 * as k-means multiplies them (the centres packed for each) and on 1024-point ones (the
 * better case), over the first `probe` (131072) points of each rank. Rank 0 prints "key
 * value" lines; ratio_iteration_over_bound is the mean iteration's time over the bound
 * (1.0: the products are all an iteration costs). BLIS_NUM_THREADS as set (one rank per
 * core is the intended use). Exit status non-zero if the result is not a clustering. */
#include "ladle/kmeans.h"
#include "ladle/rng.h"

#include <blis.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_STREAM 131
#define KMEANS_BLOCK 64   /* kmeans.c's MIN_BLOCK_ROWS: its block at k >= 1024 */

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static long arg(int argc, char **argv, const char *key, long dflt)
{
    size_t n = strlen(key);
    for (int i = 1; i < argc; i++)
        if (strncmp(argv[i], key, n) == 0 && argv[i][n] == '=') return atol(argv[i] + n + 1);
    return dflt;
}

/* Points [lo, lo + m) of the whole set: around direction (i * 7919) % k, unit norm. */
static void make_points(float *x, size_t lo, size_t m, int d, int k, uint64_t seed)
{
    for (size_t i = 0; i < m; i++) {
        uint64_t g = lo + i, c = (g * 7919) % (uint64_t)k;
        double s = 0.0;
        float *r = x + i * (size_t)d;
        for (int t = 0; t < d; t++) {
            r[t] = ladle_rng_normal(seed, 1, BENCH_STREAM, c * (uint64_t)d + (uint64_t)t) / sqrtf((float)d)
                   + 0.3f / sqrtf((float)d) * ladle_rng_normal(seed, 2, BENCH_STREAM, g * (uint64_t)d + (uint64_t)t);
            s += (double)r[t] * r[t];
        }
        for (int t = 0; t < d; t++) r[t] = (float)(r[t] / sqrt(s));
    }
}

/* Seconds of the products of m points x with the k centres c, rows at a time. */
static double products(const float *x, size_t m, const float *c, int k, int d, size_t rows, float *out)
{
    float one = 1.0f, zero = 0.0f;
    double t0 = now();
    for (size_t at = 0; at < m; at += rows) {
        size_t r = m - at < rows ? m - at : rows;
        bli_sgemm(BLIS_NO_TRANSPOSE, BLIS_TRANSPOSE, (dim_t)r, k, d, &one, (float *)x + at * (size_t)d, d, 1,
                  (float *)c, d, 1, &zero, out, k, 1);
    }
    return now() - t0;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const uint64_t n = (uint64_t)arg(argc, argv, "n", 1 << 20), seed = (uint64_t)arg(argc, argv, "seed", 1);
    const int k = (int)arg(argc, argv, "k", 4096), d = (int)arg(argc, argv, "d", 64);
    size_t sample = (size_t)arg(argc, argv, "sample", 0);
    if (!sample) sample = 4 * (size_t)k > 16384 ? 4 * (size_t)k : 16384;   /* embed.h's rule */
    const int iters = (int)arg(argc, argv, "iters", 2);
    const size_t probe = (size_t)arg(argc, argv, "probe", 131072);
    const size_t lo = n * (uint64_t)rank / (uint64_t)size, m = n * (uint64_t)(rank + 1) / (uint64_t)size - lo;
    float *x = malloc(sizeof(float) * (m ? m : 1) * (size_t)d), *c = malloc(sizeof(float) * (size_t)k * (size_t)d);
    float *out = malloc(sizeof(float) * 1024 * (size_t)k);
    uint64_t *index = malloc(sizeof(uint64_t) * (m ? m : 1));
    int *assign = malloc(sizeof(int) * (m ? m : 1));
    double *seconds = calloc((size_t)iters + 1, sizeof(double));
    if (!x || !c || !out || !index || !assign || !seconds) { fprintf(stderr, "bench_kmeans: out of memory\n"); return 1; }
    make_points(x, lo, m, d, k, seed);
    for (size_t i = 0; i < m; i++) index[i] = lo + i;
    if (rank == 0)
        printf("bench_kmeans: n %llu points, k %d, d %d, seeding sample %zu, %d ranks, %zu points on rank 0\n",
               (unsigned long long)n, k, d, sample, size, m);

    /* the sgemm rate on this rank's first points, the first k points as centres */
    const size_t mp = m < probe ? m : probe;
    make_points(c, 0, (size_t)k, d, k, seed + 1);
    products(x, mp < 4096 ? mp : 4096, c, k, d, KMEANS_BLOCK, out);   /* warm up */
    double rate_block = 2.0 * (double)mp * k * d / products(x, mp, c, k, d, KMEANS_BLOCK, out);
    double rate_large = 2.0 * (double)mp * k * d / products(x, mp, c, k, d, 1024, out);
    MPI_Allreduce(MPI_IN_PLACE, &rate_block, 1, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &rate_large, 1, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);

    ladle_kmeans_options o = {.metric = LADLE_KMEANS_SPHERICAL, .restarts = 1, .max_iters = iters, .seed = seed,
                              .stream = LADLE_STREAM_INIT + 201, .sample = sample, .seconds = seconds};
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = now();
    double objective = ladle_kmeans_float_mpi(x, m, index, n, d, k, &o, MPI_COMM_WORLD, c, assign);
    double total = now() - t0;
    int ok = objective >= 0 && objective <= (double)n * 2;
    for (size_t i = 0; i < m; i++) ok &= assign[i] >= 0 && assign[i] < k;
    MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, seconds, iters + 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &total, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (rank == 0) {
        const double flops = 2.0 * (double)n / size * k * d, bound = flops / rate_block;
        double mean = 0.0;
        for (int it = 1; it <= iters; it++) {
            printf("iteration_%d_s %.3f\n", it, seconds[it]);
            mean += seconds[it] / iters;
        }
        printf("sgemm_gflops_blocks %.2f\nsgemm_gflops_large %.2f\n", rate_block * 1e-9, rate_large * 1e-9);
        printf("bound_s %.3f\nbound_large_s %.3f\n", bound, flops / rate_large);
        printf("seeding_s %.3f\nclustering_s %.3f\n", seconds[0], total);
        printf("iteration_s %.3f\niteration_gflops %.2f\n", mean, flops / mean * 1e-9);
        printf("ratio_iteration_over_bound %.2f\nratio_iteration_over_large_bound %.2f\n", mean / bound,
               mean * rate_large / flops);
        printf("objective %.6f\n%s\n", objective, ok ? "result ok" : "result INVALID");
    }
    free(x); free(c); free(out); free(index); free(assign); free(seconds);
    MPI_Finalize();
    return ok ? 0 : 1;
}
