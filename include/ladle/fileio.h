/* fileio: opening the files a user names (configs, example and task texts) so that
 * nothing waits forever and nothing reads without end: a FIFO, a device or a directory
 * is refused before it is read, and callers read at most a bound. */
#ifndef LADLE_FILEIO_H
#define LADLE_FILEIO_H

#include <mpi.h>
#include <stddef.h>

/* Opens path read-only if it is a regular file: returns the descriptor, or -1 with a
 * message in err naming `what` (e.g. "config file"), the path and what it is instead.
 * Never blocks: a FIFO without a writer is refused, not waited for. */
int ladle_open_regular(const char *path, const char *what, char *err, size_t errlen);

/* Collective over comm, right after creating path: rank 0 reserves `bytes` for it
 * (fallocate, keeping the size), so that a full file system is found before any data is
 * written and not half-way (a failed write inside HDF5 leaves ranks in different states).
 * Every rank gets 0, or -1 with the reason in why on rank 0 (where the agreed error is
 * printed). A file system without fallocate falls back to comparing the free space. */
int ladle_reserve_space(const char *path, size_t bytes, MPI_Comm comm, char *why, size_t len);
/* After the file is closed: fsync it, and give back the reservation beyond its end. */
void ladle_sync_and_trim(const char *path, size_t reserved);

#endif
