#include "ladle/fileio.h"
#include "ladle/error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* What a path that is not a regular file is, for the message refusing it. */
static const char *file_kind(mode_t mode)
{
    return S_ISDIR(mode) ? "a directory" : S_ISFIFO(mode) ? "a FIFO" : S_ISCHR(mode) ? "a character device"
         : S_ISBLK(mode) ? "a block device" : S_ISSOCK(mode) ? "a socket" : "a special file";
}

int ladle_open_regular(const char *path, const char *what, char *err, size_t errlen)
{
    /* O_NONBLOCK: opening a FIFO without a writer would otherwise block before fstat can
     * refuse it */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s '%s': %s", what, path, strerror(errno));
        return -1;
    }
    struct stat st;
    LADLE_CHECK(fstat(fd, &st) == 0, "cannot stat %s '%s': %s", what, path, strerror(errno));
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s '%s' is %s, not a regular file", what, path, file_kind(st.st_mode));
        close(fd);
        return -1;
    }
    LADLE_CHECK(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) == 0, "fcntl on '%s': %s", path, strerror(errno));
    return fd;
}
