#include "ladle/h5io.h"
#include "ladle/error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void ladle_h5_quiet(void)
{
    H5_CHECK(H5Eset_auto2(H5E_DEFAULT, NULL, NULL));
}

size_t ladle_h5_dataset_bound(size_t bytes)
{
    return bytes + (bytes >= LADLE_H5_ALIGNMENT ? LADLE_H5_ALIGNMENT : 0) + 1024;
}

hid_t ladle_h5_fapl_mpio(MPI_Comm comm)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5_CHECK(fapl);
    /* file locking breaks on many parallel and network file systems (API since 1.10.7) */
    H5_CHECK(H5Pset_file_locking(fapl, 0, 1));
    H5_CHECK(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL));
    /* large datasets start on 1 MiB boundaries: file-system stripes, fewer RMW cycles */
    H5_CHECK(H5Pset_alignment(fapl, LADLE_H5_ALIGNMENT, LADLE_H5_ALIGNMENT));
    return fapl;
}

hid_t ladle_h5_open_ladle_file(const char *path, const char *what, const char *expected_format,
                               long max_version, MPI_Comm comm)
{
    ladle_h5_quiet();
    /* plain file checks first: they give the clearest messages */
    struct stat st;
    if (stat(path, &st) != 0) ladle_usage_error("cannot open %s '%s': %s", what, path, strerror(errno));
    if (S_ISDIR(st.st_mode)) ladle_usage_error("cannot open %s '%s': it is a directory", what, path);
    if (access(path, R_OK) != 0) ladle_usage_error("cannot open %s '%s': %s", what, path, strerror(errno));
    if (H5Fis_hdf5(path) <= 0)
        ladle_usage_error("%s '%s' is not an HDF5 file (expected a %s file written by ladle)", what, path,
                          expected_format);
    hid_t fapl = ladle_h5_fapl_mpio(comm);
    H5_CHECK(H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG));
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5_CHECK(H5Pclose(fapl));
    if (file < 0) ladle_usage_error("%s '%s' is not a readable HDF5 file (damaged or truncated?)", what, path);
    char *format = ladle_h5_read_string_attr(file, "format");
    if (!format || strcmp(format, expected_format) != 0) {
        char found[128];
        snprintf(found, sizeof found, format ? "format '%s'" : "%s", format ? format : "no format attribute");
        free(format);
        H5Fclose(file);
        ladle_usage_error("%s '%s' is not a %s file (found %s)", what, path, expected_format, found);
    }
    free(format);
    long version = 0;
    if (ladle_h5_read_long_attr(file, "format_version", &version) != 0 || version < 1 || version > max_version) {
        H5Fclose(file);
        ladle_usage_error("%s '%s': unsupported %s format_version %ld (this ladle reads 1 to %ld)", what, path,
                          expected_format, version, max_version);
    }
    return file;
}

static hid_t vlen_utf8(void);

/* Every attribute ladle writes: n values (n < 0: a scalar) of mem_type stored as file_type. */
static void write_attr(hid_t obj, const char *name, hid_t file_type, hid_t mem_type, const void *data, int n)
{
    hsize_t dims[1] = {(hsize_t)(n < 0 ? 1 : n)};
    hid_t space = n < 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, NULL);
    H5_CHECK(space);
    hid_t attr = H5Acreate2(obj, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
    H5_CHECK(attr);
    H5_CHECK(H5Awrite(attr, mem_type, data));
    H5_CHECK(H5Aclose(attr));
    H5_CHECK(H5Sclose(space));
}

void ladle_h5_write_array_attr(hid_t obj, const char *name, hid_t file_type, hid_t mem_type, const void *values, int n)
{
    write_attr(obj, name, file_type, mem_type, values, n);
}

void ladle_h5_write_string_attr(hid_t obj, const char *name, const char *value)
{
    /* variable-length UTF-8: h5py returns a Python str */
    hid_t type = vlen_utf8();
    write_attr(obj, name, type, type, &value, -1);
    H5_CHECK(H5Tclose(type));
}

int ladle_h5_attr_open(hid_t obj, const char *name, ladle_h5_attr *a)
{
    htri_t exists = H5Aexists(obj, name);
    H5_CHECK(exists);
    if (!exists) return 0;
    a->attr = H5Aopen(obj, name, H5P_DEFAULT);
    H5_CHECK(a->attr);
    a->type = H5Aget_type(a->attr);
    H5_CHECK(a->type);
    a->space = H5Aget_space(a->attr);
    H5_CHECK(a->space);
    a->count = H5Sget_simple_extent_npoints(a->space);
    H5_CHECK(a->count);
    return 1;
}

void ladle_h5_attr_close(ladle_h5_attr *a)
{
    H5_CHECK(H5Sclose(a->space));
    H5_CHECK(H5Tclose(a->type));
    H5_CHECK(H5Aclose(a->attr));
}

char *ladle_h5_read_string_attr(hid_t obj, const char *name)
{
    int n = 0;
    char **values = ladle_h5_read_strings_attr(obj, name, &n);
    char *out = NULL;
    if (values && n == 1) {   /* a single string; take it over */
        out = values[0];
        values[0] = NULL;
    }
    ladle_h5_free_strings(values, n);
    return out;
}


void ladle_h5_write_scalar_attr(hid_t obj, const char *name, hid_t file_type, hid_t mem_type, const void *value)
{
    write_attr(obj, name, file_type, mem_type, value, -1);
}

void ladle_h5_write_long_attr(hid_t obj, const char *name, long value)
{
    long long v = value;
    ladle_h5_write_scalar_attr(obj, name, H5T_STD_I64LE, H5T_NATIVE_LLONG, &v);
}

int ladle_h5_read_long_attr(hid_t obj, const char *name, long *value)
{
    ladle_h5_attr a;
    if (!ladle_h5_attr_open(obj, name, &a)) return -1;
    int ok = H5Tget_class(a.type) == H5T_INTEGER && a.count == 1;
    long long v = 0;
    if (ok) H5_CHECK(H5Aread(a.attr, H5T_NATIVE_LLONG, &v));
    ladle_h5_attr_close(&a);
    if (ok) *value = (long)v;
    return ok ? 0 : -1;
}

hid_t ladle_h5_untimed_dataset_props(void)
{
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5_CHECK(dcpl);
    H5_CHECK(H5Pset_obj_track_times(dcpl, 0));
    return dcpl;
}

hid_t ladle_h5_untimed_group_props(void)
{
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    H5_CHECK(gcpl);
    H5_CHECK(H5Pset_obj_track_times(gcpl, 0));
    return gcpl;
}

/* the memory type of variable-length UTF-8 strings */
static hid_t vlen_utf8(void)
{
    hid_t type = H5Tcopy(H5T_C_S1);
    H5_CHECK(type);
    H5_CHECK(H5Tset_size(type, H5T_VARIABLE));
    H5_CHECK(H5Tset_cset(type, H5T_CSET_UTF8));
    return type;
}

void ladle_h5_write_strings_attr(hid_t obj, const char *name, const char *const *values, int n)
{
    hid_t type = vlen_utf8();
    write_attr(obj, name, type, type, values, n);
    H5_CHECK(H5Tclose(type));
}

static char *copy_string(const char *v)
{
    size_t len = strlen(v);
    char *out = ladle_malloc(len + 1, "string attribute");
    memcpy(out, v, len + 1);
    return out;
}

char **ladle_h5_read_strings_attr(hid_t obj, const char *name, int *n)
{
    *n = 0;
    ladle_h5_attr a;
    if (!ladle_h5_attr_open(obj, name, &a)) return NULL;
    char **out = NULL;
    if (H5Tget_class(a.type) == H5T_STRING && a.count < (1 << 24)) {
        size_t m = (size_t)(a.count > 0 ? a.count : 1);
        out = ladle_calloc(m, sizeof(char *), "string attribute");
        hid_t mtype = H5Tcopy(H5T_C_S1);
        H5_CHECK(mtype);
        /* HDF5 does not convert between character sets: read in the stored one */
        H5T_cset_t cset = H5Tget_cset(a.type);
        H5_CHECK(cset);
        H5_CHECK(H5Tset_cset(mtype, cset));
        htri_t variable = H5Tis_variable_str(a.type);
        H5_CHECK(variable);
        if (variable) {
            char **raw = ladle_calloc(m, sizeof(char *), "string attribute");
            H5_CHECK(H5Tset_size(mtype, H5T_VARIABLE));
            H5_CHECK(H5Aread(a.attr, mtype, raw));
            /* copies the caller can free(), then the library's buffers back to HDF5 */
            for (hssize_t i = 0; i < a.count; i++) out[i] = copy_string(raw[i] ? raw[i] : "");
            H5_CHECK(H5Dvlen_reclaim(mtype, a.space, H5P_DEFAULT, raw));
            free(raw);
        } else {
            size_t size = H5Tget_size(a.type);
            LADLE_CHECK(size > 0, "HDF5 call failed: H5Tget_size");
            char *raw = ladle_calloc(m, size + 1, "string attribute");
            H5_CHECK(H5Tset_size(mtype, size + 1));   /* room for the terminator */
            H5_CHECK(H5Tset_strpad(mtype, H5T_STR_NULLTERM));
            H5_CHECK(H5Aread(a.attr, mtype, raw));
            for (hssize_t i = 0; i < a.count; i++) out[i] = copy_string(raw + (size_t)i * (size + 1));
            free(raw);
        }
        H5_CHECK(H5Tclose(mtype));
        *n = (int)a.count;
    }
    ladle_h5_attr_close(&a);
    return out;
}

void ladle_h5_free_strings(char **values, int n)
{
    if (!values) return;
    for (int i = 0; i < n; i++) free(values[i]);
    free(values);
}

/* ---- MPI-IO self-test ---------------------------------------------------------- */

#define SELFTEST_ADVICE                                                                                      \
    "the MPI-IO/parallel HDF5 stack cannot write shared files here (check the file system supports MPI-IO, " \
    "e.g. set OMPI_MCA_io=ompio or romio321)"

/* Fail on this rank (aborting all), removing the test file first (best effort). */
#define SELFTEST_CHECK(cond, path, dir, ...)                                                                 \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            char what_[512];                                                                                 \
            snprintf(what_, sizeof what_, __VA_ARGS__);                                                      \
            unlink(path);                                                                                    \
            LADLE_FAIL("MPI-IO self-test in '%s' failed: %s: " SELFTEST_ADVICE, dir, what_);               \
        }                                                                                                    \
    } while (0)

/* The value of element i of the test dataset: depends on the file (tag), so stale data
 * from an earlier file cannot pass. */
static unsigned selftest_value(unsigned long tag, unsigned long i)
{
    unsigned long x = (i + 1) * 2654435761ul ^ tag * 40503ul;
    return (unsigned)(x ^ (x >> 15));
}

void ladle_h5_selftest(const char *dir, MPI_Comm comm)
{
    int rank = 0, size = 1;
    MPI_CHECK(MPI_Comm_rank(comm, &rank));
    MPI_CHECK(MPI_Comm_size(comm, &size));
    long pid = rank == 0 ? (long)getpid() : 0;
    MPI_CHECK(MPI_Bcast(&pid, 1, MPI_LONG, 0, comm));
    char name[64], path[4096];
    snprintf(name, sizeof name, ".ladle-selftest-%ld.h5", pid);
    LADLE_CHECK((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) < sizeof path,
                "MPI-IO self-test: directory name too long: '%s'", dir);
    ladle_h5_quiet();

    /* rank r writes 300 + r elements (uneven, unaligned pieces, as checkpoints have) */
    unsigned long count = 300ul + (unsigned long)rank, offset = 0, total = 0;
    for (int r = 0; r < size; r++) {
        if (r < rank) offset += 300ul + (unsigned long)r;
        total += 300ul + (unsigned long)r;
    }
    unsigned long tag = (unsigned long)pid;
    unsigned *buf = ladle_malloc(total * sizeof(unsigned), "MPI-IO self-test buffer");
    for (unsigned long i = 0; i < count; i++) buf[i] = selftest_value(tag, offset + i);

    /* 1. create collectively; each rank writes its hyperslab with a collective transfer */
    hid_t fapl = ladle_h5_fapl_mpio(comm);
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5_CHECK(H5Pclose(fapl));
    if (file < 0) {
        const char *why = access(dir, W_OK) != 0 ? strerror(errno) : "H5Fcreate failed";
        SELFTEST_CHECK(0, path, dir, "cannot create %s: %s", name, why);
    }
    hsize_t dims[1] = {(hsize_t)total};
    hid_t fspace = H5Screate_simple(1, dims, NULL);
    H5_CHECK(fspace);
    hid_t dset = H5Dcreate2(file, "selftest", H5T_STD_U32LE, fspace, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    SELFTEST_CHECK(dset >= 0, path, dir, "cannot create a dataset in %s", name);
    hsize_t start[1] = {(hsize_t)offset}, cnt[1] = {(hsize_t)count};
    H5_CHECK(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, cnt, NULL));
    hid_t mspace = H5Screate_simple(1, cnt, NULL);
    H5_CHECK(mspace);
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5_CHECK(dxpl);
    H5_CHECK(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE));
    SELFTEST_CHECK(H5Dwrite(dset, H5T_NATIVE_UINT, mspace, fspace, dxpl, buf) >= 0, path, dir,
                   "collective write of elements [%lu, %lu) failed", offset, offset + count);
    H5_CHECK(H5Sclose(mspace));
    H5_CHECK(H5Sclose(fspace));
    SELFTEST_CHECK(H5Dclose(dset) >= 0, path, dir, "closing the dataset failed");
    SELFTEST_CHECK(H5Fclose(file) >= 0, path, dir, "closing %s after writing failed", name);
    MPI_CHECK(MPI_Barrier(comm));

    /* 2. reopen; every rank reads the whole dataset (collectively) and checks it */
    fapl = ladle_h5_fapl_mpio(comm);
    file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5_CHECK(H5Pclose(fapl));
    SELFTEST_CHECK(file >= 0, path, dir, "cannot reopen %s after writing it", name);
    dset = H5Dopen2(file, "selftest", H5P_DEFAULT);
    SELFTEST_CHECK(dset >= 0, path, dir, "the dataset written to %s is missing", name);
    fspace = H5Dget_space(dset);
    H5_CHECK(fspace);
    hssize_t npoints = H5Sget_simple_extent_npoints(fspace);
    SELFTEST_CHECK(npoints == (hssize_t)total, path, dir, "the dataset has %lld elements, expected %lu",
                   (long long)npoints, total);
    memset(buf, 0, total * sizeof(unsigned));
    SELFTEST_CHECK(H5Dread(dset, H5T_NATIVE_UINT, H5S_ALL, H5S_ALL, dxpl, buf) >= 0, path, dir,
                   "collective read of %s failed", name);
    H5_CHECK(H5Sclose(fspace));
    H5_CHECK(H5Pclose(dxpl));
    H5_CHECK(H5Dclose(dset));
    SELFTEST_CHECK(H5Fclose(file) >= 0, path, dir, "closing %s after reading failed", name);
    unsigned long bad = 0, first_bad = 0;
    for (unsigned long i = 0; i < total; i++)
        if (buf[i] != selftest_value(tag, i) && bad++ == 0) first_bad = i;
    SELFTEST_CHECK(bad == 0, path, dir,
                   "read back %lu of %lu elements wrong (first: element %lu is %u, expected %u)",
                   bad, total, first_bad, buf[first_bad], selftest_value(tag, first_bad));
    free(buf);

    /* 3. everyone has checked: remove it */
    MPI_CHECK(MPI_Barrier(comm));
    if (rank == 0) SELFTEST_CHECK(unlink(path) == 0, path, dir, "cannot remove %s: %s", name, strerror(errno));
    MPI_CHECK(MPI_Barrier(comm));
}
