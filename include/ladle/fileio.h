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

#endif
