/* error: checked calls and clean shutdown of every rank.
 *
 * Two kinds of failure:
 *  - ladle_fail(): something went wrong on THIS rank (a file, an allocation, an MPI or
 *    HDF5 call). Prints "ladle: error: <msg> (file:line)" and aborts all ranks.
 *  - ladle_usage_error(): a problem every rank detects identically (a bad config value,
 *    a missing corpus). Rank 0 prints one line; every rank finalizes MPI and exits 2,
 *    so mpiexec reports a clean non-zero exit instead of an abort banner.
 *  - ladle_runtime_error(): a runtime failure every rank has agreed on (e.g. a checkpoint
 *    that does not fit on its file system, found by rank 0 and broadcast): as
 *    ladle_usage_error, but exit 1. Nothing is aborted, so every rank exits 1. */
#ifndef LADLE_ERROR_H
#define LADLE_ERROR_H

#include <stddef.h>

/* Exit codes, documented in the README. */
enum {
    LADLE_EXIT_OK = 0,
    LADLE_EXIT_FAILURE = 1,  /* runtime failure on some rank (I/O, MPI, HDF5, memory) */
    LADLE_EXIT_USAGE = 2,    /* bad command line, configuration or input */
    LADLE_EXIT_PREEMPTED = 3,/* SIGUSR1/SIGTERM: a checkpoint was written; requeue to resume */
};

_Noreturn void ladle_fail_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
_Noreturn void ladle_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void ladle_runtime_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A usage error met while holding something to release first (an open HDF5 file, a
 * half-written output): the message is formatted, then cleanup(ctx) runs (if not NULL),
 * then as ladle_usage_error. In that order because the message's arguments may point
 * into what cleanup frees. */
_Noreturn void ladle_usage_error_cleanup(void (*cleanup)(void *ctx), void *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same for an agreed runtime failure (exit 1). */
_Noreturn void ladle_runtime_error_cleanup(void (*cleanup)(void *ctx), void *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define LADLE_FAIL(...) ladle_fail_at(__FILE__, __LINE__, __VA_ARGS__)
#define LADLE_CHECK(cond, ...) \
    do { if (!(cond)) ladle_fail_at(__FILE__, __LINE__, __VA_ARGS__); } while (0)

/* MPI calls return MPI_SUCCESS or an error code (the world communicator is set to
 * MPI_ERRORS_RETURN by ladle_mpi_init so that we, not Open MPI, report it). */
void ladle_mpi_check_at(int rc, const char *call, const char *file, int line);
#define MPI_CHECK(call) ladle_mpi_check_at((call), #call, __FILE__, __LINE__)

/* HDF5 calls return a negative value on failure. */
#define H5_CHECK(call) \
    do { if ((long long)(call) < 0) ladle_fail_at(__FILE__, __LINE__, "HDF5 call failed: %s", #call); } while (0)

void *ladle_malloc_at(size_t bytes, const char *what, const char *file, int line);
void *ladle_calloc_at(size_t count, size_t size, const char *what, const char *file, int line);
#define ladle_malloc(bytes, what) ladle_malloc_at((bytes), (what), __FILE__, __LINE__)
#define ladle_calloc(count, size, what) ladle_calloc_at((count), (size), (what), __FILE__, __LINE__)
/* The same, adding the bytes to *total: buffers that report their size (ladle train --dry-run). */
#define ladle_malloc_counted(total, bytes, what) \
    (*(total) += (bytes), ladle_malloc_at((bytes), (what), __FILE__, __LINE__))
#define ladle_calloc_counted(total, count, size, what) \
    (*(total) += (count) * (size), ladle_calloc_at((count), (size), (what), __FILE__, __LINE__))

#endif
