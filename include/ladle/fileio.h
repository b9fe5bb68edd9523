/* fileio: opening the files a user names (configs, example and task texts) so that
 * nothing waits forever and nothing reads without end: a FIFO, a device or a directory
 * is refused before it is read, and callers read at most a bound. */
#ifndef LADLE_FILEIO_H
#define LADLE_FILEIO_H

#include <stddef.h>

/* Opens path read-only if it is a regular file: returns the descriptor, or -1 with a
 * message in err naming `what` (e.g. "config file"), the path and what it is instead.
 * Never blocks: a FIFO without a writer is refused, not waited for. */
int ladle_open_regular(const char *path, const char *what, char *err, size_t errlen);

/* Rank 0 of a writer, right after creating path: reserve `bytes` for it (fallocate,
 * keeping the size), so that a full file system is found before any data is written and
 * not half-way (a failed write inside HDF5 leaves ranks in different states). 0, or -1
 * with the reason in why. A file system without fallocate falls back to comparing the
 * free space. */
int ladle_reserve_space(const char *path, size_t bytes, char *why, size_t len);
/* After the file is closed: fsync it, and give back the reservation beyond its end. */
void ladle_sync_and_trim(const char *path, size_t reserved);

#endif
