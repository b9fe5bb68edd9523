/* rng: a counter-based random number generator.
 *
 * Every random value is a pure function of (seed, step, stream, index): no generator
 * state is carried between calls, so sequence b of step t is the same on any number of
 * ranks, after any resume, in any order of evaluation. */
#ifndef LADLE_RNG_H
#define LADLE_RNG_H

#include <stdint.h>

/* Streams keep independent uses of the same (seed, step, index) apart. */
enum ladle_rng_stream {
    LADLE_STREAM_INIT = 1,     /* parameter initialisation: step = tensor id */
    LADLE_STREAM_DOMAIN,       /* which domain sequence b of a step comes from */
    LADLE_STREAM_WINDOW,       /* where in that domain its window starts */
    LADLE_STREAM_SPLIT,        /* train/valid split of documents (prep) */
    LADLE_STREAM_SAMPLE,       /* text generation */
    LADLE_STREAM_MIXTURE,      /* domain weights h of a step (Soup-of-Experts) */
    LADLE_STREAM_EXPERT,       /* initial noise of the experts: step = expert id */
};

uint64_t ladle_rng_u64(uint64_t seed, uint64_t step, uint64_t stream, uint64_t index);
/* Uniform in [0, 1), 24 random bits. */
float ladle_rng_uniform(uint64_t seed, uint64_t step, uint64_t stream, uint64_t index);
/* Uniform integer in [0, n), n > 0 (bias below 2^-32 for n < 2^32). */
uint64_t ladle_rng_below(uint64_t seed, uint64_t step, uint64_t stream, uint64_t index, uint64_t n);
/* Standard normal (Box-Muller on two counters). */
float ladle_rng_normal(uint64_t seed, uint64_t step, uint64_t stream, uint64_t index);

#endif
