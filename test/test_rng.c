/* The counter RNG: pure function of its counters, uniform enough, normal moments. */
#include "ladle/rng.h"
#include "testutil.h"

int main(void)
{
    test_counts c = {0, 0};
    EXPECT(&c, ladle_rng_u64(1, 2, 3, 4) == ladle_rng_u64(1, 2, 3, 4), "same counters, same value");
    EXPECT(&c, ladle_rng_u64(1, 2, 3, 4) != ladle_rng_u64(1, 2, 3, 5), "index matters");
    EXPECT(&c, ladle_rng_u64(1, 2, 3, 4) != ladle_rng_u64(1, 2, 4, 4), "stream matters");
    EXPECT(&c, ladle_rng_u64(1, 2, 3, 4) != ladle_rng_u64(1, 3, 3, 4), "step matters");
    EXPECT(&c, ladle_rng_u64(1, 2, 3, 4) != ladle_rng_u64(2, 2, 3, 4), "seed matters");
    EXPECT(&c, ladle_rng_u64(0, 1, 0, 0) != ladle_rng_u64(0, 0, 0, 1), "step and index are not interchangeable");

    const int n = 200000, bins = 10;
    int hist[10] = {0};
    double s = 0, s2 = 0, u_min = 1, u_max = 0;
    for (int i = 0; i < n; i++) {
        float u = ladle_rng_uniform(7, 0, 1, (uint64_t)i);
        u_min = u < u_min ? u : u_min;
        u_max = u > u_max ? u : u_max;
        hist[(int)(u * bins)]++;
        float z = ladle_rng_normal(7, 0, 2, (uint64_t)i);
        s += z;
        s2 += (double)z * z;
    }
    EXPECT(&c, u_min >= 0.0 && u_max < 1.0, "uniform out of [0,1): %g %g", u_min, u_max);
    double chi2 = 0;
    for (int b = 0; b < bins; b++) chi2 += (hist[b] - n / 10.0) * (hist[b] - n / 10.0) / (n / 10.0);
    EXPECT(&c, chi2 < 30.0, "uniform chi-square %g over 10 bins (p < 0.001 would be 27.9)", chi2);
    double mean = s / n, var = s2 / n - mean * mean;
    EXPECT(&c, fabs(mean) < 0.01 && fabs(var - 1.0) < 0.02, "normal mean %g var %g", mean, var);
    int below_hits[5] = {0};
    for (int i = 0; i < 50000; i++) below_hits[ladle_rng_below(3, 1, 1, (uint64_t)i, 5)]++;
    for (int b = 0; b < 5; b++) EXPECT(&c, below_hits[b] > 9500 && below_hits[b] < 10500, "below(5) bin %d: %d", b, below_hits[b]);
    return test_summary(&c, "test_rng");
}
