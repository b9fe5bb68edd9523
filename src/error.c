#include "ladle/error.h"

#include <hdf5.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int mpi_world(int *rank, int *size)
{
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (!initialized || finalized) return 0;
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, size);
    return 1;
}

/* Parallel HDF5 closes the files still open when MPI_Finalize runs (an MPI_COMM_SELF
 * attribute callback), and H5close does the same: a file left open by a failed write
 * crashes there (SIGSEGV in H5F__close_cb, seen on a full disk). So a failure with an
 * HDF5 file open aborts instead (exit 1 and Open MPI's banner, but no signal); one with
 * none open finalizes and exits 1 with the single line. */
static int hdf5_files_open(void)
{
    return H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_FILE) > 0;
}

void ladle_fail_at(const char *file, int line, const char *fmt, ...)
{
    int rank = 0, size = 1;
    int in_mpi = mpi_world(&rank, &size);
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (size > 1)
        fprintf(stderr, "ladle: error on rank %d: %s (%s:%d)\n", rank, msg, file, line);
    else
        fprintf(stderr, "ladle: error: %s (%s:%d)\n", msg, file, line);
    fflush(stderr);
    if (in_mpi && (size > 1 || hdf5_files_open())) MPI_Abort(MPI_COMM_WORLD, LADLE_EXIT_FAILURE);
    if (in_mpi) MPI_Finalize();
    exit(LADLE_EXIT_FAILURE);
}

/* Every rank: rank 0 prints the one line, all finalize and exit with code. */
static _Noreturn void agreed_exit(int code, const char *fmt, va_list ap)
{
    int rank = 0, size = 1;
    int in_mpi = mpi_world(&rank, &size);
    if (rank == 0) {
        fputs("ladle: error: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        fflush(stderr);
    }
    if (in_mpi) MPI_Finalize();
    exit(code);
}

void ladle_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    agreed_exit(LADLE_EXIT_USAGE, fmt, ap);
}

void ladle_runtime_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    agreed_exit(LADLE_EXIT_FAILURE, fmt, ap);
}

static _Noreturn void agreed_exit_cleanup(int code, void (*cleanup)(void *ctx), void *ctx, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (cleanup) cleanup(ctx);
    if (code == LADLE_EXIT_USAGE) ladle_usage_error("%s", msg);
    ladle_runtime_error("%s", msg);
}

void ladle_usage_error_cleanup(void (*cleanup)(void *ctx), void *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    agreed_exit_cleanup(LADLE_EXIT_USAGE, cleanup, ctx, fmt, ap);
}

void ladle_runtime_error_cleanup(void (*cleanup)(void *ctx), void *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    agreed_exit_cleanup(LADLE_EXIT_FAILURE, cleanup, ctx, fmt, ap);
}

void ladle_mpi_check_at(int rc, const char *call, const char *file, int line)
{
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "code %d", rc);
    ladle_fail_at(file, line, "MPI call failed: %s: %s", call, text);
}

void *ladle_malloc_at(size_t bytes, const char *what, const char *file, int line)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) ladle_fail_at(file, line, "out of memory allocating %zu bytes for %s", bytes, what);
    return p;
}

void *ladle_calloc_at(size_t count, size_t size, const char *what, const char *file, int line)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) ladle_fail_at(file, line, "out of memory allocating %zu x %zu bytes for %s", count, size, what);
    return p;
}
