/* Minimal test helpers: every check counts, the summary line is "N passed, M failed",
 * and the exit code is non-zero when anything failed. */
#ifndef LADLE_TESTUTIL_H
#define LADLE_TESTUTIL_H

#include <math.h>
#include <stdio.h>

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

static inline int test_summary(const test_counts *c, const char *name)
{
    printf("%s: %d passed, %d failed\n", name, c->passed, c->failed);
    return c->failed == 0 && c->passed > 0 ? 0 : 1;
}

#endif
