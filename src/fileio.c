#include "ladle/fileio.h"
#include "ladle/error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
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

/* ---- space and durability ------------------------------------------------------ */

static double mib(size_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0);
}

/* Rank 0's part of ladle_reserve_space. */
static int reserve_on_rank0(const char *path, size_t bytes, char *why, size_t len)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) { snprintf(why, len, "cannot open it: %s", strerror(errno)); return -1; }
    int rc = fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)bytes), err = errno;
    struct statvfs vfs;
    int have_vfs = rc != 0 && fstatvfs(fd, &vfs) == 0;   /* only to explain a failure */
    close(fd);
    if (rc == 0) return 0;
    size_t avail = have_vfs ? (size_t)vfs.f_bavail * vfs.f_frsize : 0;
    if (err == EOPNOTSUPP && (!have_vfs || avail >= bytes)) return 0;
    if (err == ENOSPC || err == EOPNOTSUPP || err == EDQUOT)
        snprintf(why, len, "it needs up to %.1f MiB and the file system has %.1f MiB free", mib(bytes), mib(avail));
    else snprintf(why, len, "cannot reserve %.1f MiB: %s", mib(bytes), strerror(err));
    return -1;
}

int ladle_reserve_space(const char *path, size_t bytes, MPI_Comm comm, char *why, size_t len)
{
    int rank = 0;
    MPI_CHECK(MPI_Comm_rank(comm, &rank));
    int rc = rank == 0 ? reserve_on_rank0(path, bytes, why, len) : 0;
    MPI_CHECK(MPI_Bcast(&rc, 1, MPI_INT, 0, comm));
    return rc;
}

/* Rank 0, after the file is closed: flush what closing wrote to the device, and give back
 * the reservation beyond the end. */
void ladle_sync_and_trim(const char *path, size_t reserved)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    LADLE_CHECK(fd >= 0, "cannot open '%s' to sync it: %s", path, strerror(errno));
    struct stat st;
    LADLE_CHECK(fstat(fd, &st) == 0, "cannot stat '%s': %s", path, strerror(errno));
    /* truncating to its own size frees the blocks reserved past the end (ext4, XFS);
     * punching a hole there does not (ext4 ignores a hole beyond the end of file) */
    if ((size_t)st.st_size < reserved)
        LADLE_CHECK(ftruncate(fd, st.st_size) == 0, "cannot trim '%s': %s", path, strerror(errno));
    else if ((size_t)st.st_size > reserved)
        fprintf(stderr, "ladle: warning: '%s' is %zu bytes, more than the %zu reserved for it (a bug: please report)\n",
                path, (size_t)st.st_size, reserved);
    LADLE_CHECK(fsync(fd) == 0, "fsync of '%s' failed: %s", path, strerror(errno));
    LADLE_CHECK(close(fd) == 0, "cannot close '%s': %s", path, strerror(errno));
}
