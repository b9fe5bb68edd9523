#include "ladle/rng.h"

#include <math.h>

/* The splitmix64 finaliser: a bijective mix with full avalanche. Chaining it over the
 * four counter words gives a hash good enough for sampling data and initial weights. */
static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t ladle_rng_u64(uint64_t seed, uint64_t step, uint64_t stream, uint64_t index)
{
    uint64_t h = mix64(seed);
    h = mix64(h ^ step);
    h = mix64(h ^ (stream * 0xd1b54a32d192ed03ULL));
    return mix64(h ^ index);
}

float ladle_rng_uniform(uint64_t seed, uint64_t step, uint64_t stream, uint64_t index)
{
    return (float)(ladle_rng_u64(seed, step, stream, index) >> 40) * (1.0f / 16777216.0f);
}

uint64_t ladle_rng_below(uint64_t seed, uint64_t step, uint64_t stream, uint64_t index, uint64_t n)
{
    return ladle_rng_u64(seed, step, stream, index) % n;
}

float ladle_rng_normal(uint64_t seed, uint64_t step, uint64_t stream, uint64_t index)
{
    uint64_t r = ladle_rng_u64(seed, step, stream, index);
    /* two 32-bit halves; u1 in (0, 1] so the log is finite */
    double u1 = ((double)(r >> 32) + 1.0) / 4294967296.0;
    double u2 = (double)(r & 0xffffffffULL) / 4294967296.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
