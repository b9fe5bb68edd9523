#include "ladle/h5io.h"
#include "ladle/error.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
    htri_t exists = H5Aexists(obj, name);
    H5_CHECK(exists);
    if (!exists) return NULL;
    hid_t attr = H5Aopen(obj, name, H5P_DEFAULT);
    H5_CHECK(attr);
    hid_t ftype = H5Aget_type(attr);
    H5_CHECK(ftype);
    hid_t space = H5Aget_space(attr);
    H5_CHECK(space);
    hssize_t npoints = H5Sget_simple_extent_npoints(space);
    H5_CHECK(npoints);
    char *out = NULL;
    if (H5Tget_class(ftype) == H5T_STRING && npoints == 1) {
        htri_t variable = H5Tis_variable_str(ftype);
        H5_CHECK(variable);
        hid_t mtype = H5Tcopy(H5T_C_S1);
        H5_CHECK(mtype);
        /* HDF5 does not convert between character sets: read in the stored one */
        H5T_cset_t cset = H5Tget_cset(ftype);
        H5_CHECK(cset);
        H5_CHECK(H5Tset_cset(mtype, cset));
        if (variable) {
            char *s = NULL;
            H5_CHECK(H5Tset_size(mtype, H5T_VARIABLE));
            H5_CHECK(H5Aread(attr, mtype, &s));
            size_t n = s ? strlen(s) : 0;
            out = ladle_malloc(n + 1, "string attribute");
            if (n) memcpy(out, s, n);
            out[n] = '\0';
            if (s) H5_CHECK(H5free_memory(s));
        } else {
            size_t n = H5Tget_size(ftype);
            LADLE_CHECK(n > 0, "HDF5 call failed: H5Tget_size");
            H5_CHECK(H5Tset_size(mtype, n + 1));
            H5_CHECK(H5Tset_strpad(mtype, H5T_STR_NULLTERM));
            out = ladle_calloc(n + 1, 1, "string attribute");
            H5_CHECK(H5Aread(attr, mtype, out));
        }
        H5_CHECK(H5Tclose(mtype));
    }
    H5_CHECK(H5Sclose(space));
    H5_CHECK(H5Tclose(ftype));
    H5_CHECK(H5Aclose(attr));
    return out;
}

void ladle_h5_write_scalar_attr(hid_t obj, const char *name, hid_t file_type, hid_t mem_type, const void *value)
{
    hid_t space = H5Screate(H5S_SCALAR);
    H5_CHECK(space);
    hid_t attr = H5Acreate2(obj, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
    H5_CHECK(attr);
    H5_CHECK(H5Awrite(attr, mem_type, value));
    H5_CHECK(H5Aclose(attr));
    H5_CHECK(H5Sclose(space));
}

void ladle_h5_write_long_attr(hid_t obj, const char *name, long value)
{
    long long v = value;
    ladle_h5_write_scalar_attr(obj, name, H5T_STD_I64LE, H5T_NATIVE_LLONG, &v);
}

int ladle_h5_read_long_attr(hid_t obj, const char *name, long *value)
{
    htri_t exists = H5Aexists(obj, name);
    H5_CHECK(exists);
    if (!exists) return -1;
    hid_t attr = H5Aopen(obj, name, H5P_DEFAULT);
    H5_CHECK(attr);
    hid_t ftype = H5Aget_type(attr);
    H5_CHECK(ftype);
    hid_t space = H5Aget_space(attr);
    H5_CHECK(space);
    hssize_t npoints = H5Sget_simple_extent_npoints(space);
    H5_CHECK(npoints);
    int ok = H5Tget_class(ftype) == H5T_INTEGER && npoints == 1;
    long long v = 0;
    if (ok) H5_CHECK(H5Aread(attr, H5T_NATIVE_LLONG, &v));
    H5_CHECK(H5Sclose(space));
    H5_CHECK(H5Tclose(ftype));
    H5_CHECK(H5Aclose(attr));
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
