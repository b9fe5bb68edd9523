#include "ladle/h5io.h"
#include "ladle/error.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void ladle_h5_quiet(void)
{
    H5_CHECK(H5Eset_auto2(H5E_DEFAULT, NULL, NULL));
}

hid_t ladle_h5_fapl_mpio(MPI_Comm comm)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5_CHECK(fapl);
    /* file locking breaks on many parallel and network file systems (API since 1.10.7) */
    H5_CHECK(H5Pset_file_locking(fapl, 0, 1));
    H5_CHECK(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL));
    /* large datasets start on 1 MiB boundaries: file-system stripes, fewer RMW cycles */
    H5_CHECK(H5Pset_alignment(fapl, 1 << 20, 1 << 20));
    return fapl;
}

hid_t ladle_h5_open_ladle_file(const char *path, const char *what, const char *expected_format,
                               long max_version, MPI_Comm comm)
{
    ladle_h5_quiet();
    if (access(path, R_OK) != 0)
        ladle_usage_error("cannot open %s '%s': %s", what, path, strerror(errno));
    htri_t is_hdf5 = H5Fis_hdf5(path);
    if (is_hdf5 <= 0)
        ladle_usage_error("%s '%s' is not an HDF5 file (expected a %s file written by ladle)", what, path,
                          expected_format);
    hid_t fapl = ladle_h5_fapl_mpio(comm);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5_CHECK(H5Pclose(fapl));
    if (file < 0) ladle_usage_error("cannot open %s '%s' (HDF5 refused to open it; truncated or corrupt?)", what, path);
    char *format = ladle_h5_read_string_attr(file, "format");
    if (!format || strcmp(format, expected_format) != 0) {
        char found[128];
        snprintf(found, sizeof found, format ? "'%s'" : "%s", format ? format : "no format attribute");
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

void ladle_h5_write_string_attr(hid_t obj, const char *name, const char *value)
{
    /* variable-length UTF-8: h5py returns a Python str */
    hid_t type = H5Tcopy(H5T_C_S1);
    H5_CHECK(type);
    H5_CHECK(H5Tset_size(type, H5T_VARIABLE));
    H5_CHECK(H5Tset_cset(type, H5T_CSET_UTF8));
    hid_t space = H5Screate(H5S_SCALAR);
    H5_CHECK(space);
    hid_t attr = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    H5_CHECK(attr);
    H5_CHECK(H5Awrite(attr, type, &value));
    H5_CHECK(H5Aclose(attr));
    H5_CHECK(H5Sclose(space));
    H5_CHECK(H5Tclose(type));
}

char *ladle_h5_read_string_attr(hid_t obj, const char *name)
{
    if (H5Aexists(obj, name) <= 0) return NULL;
    hid_t attr = H5Aopen(obj, name, H5P_DEFAULT);
    H5_CHECK(attr);
    hid_t type = H5Aget_type(attr);
    H5_CHECK(type);
    char *out = NULL;
    if (H5Tget_class(type) == H5T_STRING) {
        htri_t variable = H5Tis_variable_str(type);
        H5_CHECK(variable);
        hid_t mem = H5Tcopy(H5T_C_S1);
        H5_CHECK(mem);
        /* HDF5 does not convert between ASCII and UTF-8: read in the stored set */
        H5T_cset_t cset = H5Tget_cset(type);
        H5_CHECK(cset);
        H5_CHECK(H5Tset_cset(mem, cset));
        if (variable) {
            char *value = NULL;
            H5_CHECK(H5Tset_size(mem, H5T_VARIABLE));
            H5_CHECK(H5Aread(attr, mem, &value));
            out = ladle_malloc(strlen(value ? value : "") + 1, "string attribute");
            strcpy(out, value ? value : "");
            H5_CHECK(H5free_memory(value));
        } else {
            size_t size = H5Tget_size(type);
            H5_CHECK(H5Tset_size(mem, size + 1));   /* room for the terminator */
            out = ladle_calloc(size + 2, 1, "string attribute");
            H5_CHECK(H5Aread(attr, mem, out));
        }
        H5_CHECK(H5Tclose(mem));
    }
    H5_CHECK(H5Tclose(type));
    H5_CHECK(H5Aclose(attr));
    return out;
}

void ladle_h5_write_long_attr(hid_t obj, const char *name, long value)
{
    hid_t space = H5Screate(H5S_SCALAR);
    H5_CHECK(space);
    hid_t attr = H5Acreate2(obj, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    H5_CHECK(attr);
    long long v = value;
    H5_CHECK(H5Awrite(attr, H5T_NATIVE_LLONG, &v));
    H5_CHECK(H5Aclose(attr));
    H5_CHECK(H5Sclose(space));
}

int ladle_h5_read_long_attr(hid_t obj, const char *name, long *value)
{
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t attr = H5Aopen(obj, name, H5P_DEFAULT);
    H5_CHECK(attr);
    hid_t type = H5Aget_type(attr);
    H5_CHECK(type);
    int rc = -1;
    if (H5Tget_class(type) == H5T_INTEGER) {
        long long v = 0;
        H5_CHECK(H5Aread(attr, H5T_NATIVE_LLONG, &v));
        *value = (long)v;
        rc = 0;
    }
    H5_CHECK(H5Tclose(type));
    H5_CHECK(H5Aclose(attr));
    return rc;
}
