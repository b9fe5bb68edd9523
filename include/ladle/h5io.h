/* h5io: the few HDF5 helpers every ladle file uses (corpus, model, checkpoint):
 * opening for reading with one clear error instead of HDF5's error stack, and string /
 * integer attributes that h5py reads as str / int. */
#ifndef LADLE_H5IO_H
#define LADLE_H5IO_H

#include <hdf5.h>
#include <mpi.h>

/* Open an existing ladle file read-only on every rank of comm (MPI-IO driver, strong
 * close degree so closing the file closes everything in it). Checks that the file
 * exists, is HDF5, and that its root attribute `format` equals expected_format with
 * 1 <= format_version <= max_version. Any failure is a usage error naming the file and
 * what was found ("what" names its role, e.g. "corpus"); every rank detects it alike. */
hid_t ladle_h5_open_ladle_file(const char *path, const char *what, const char *expected_format,
                               long max_version, MPI_Comm comm);

/* Datasets of at least this many bytes start on a multiple of it (H5Pset_alignment). */
#define LADLE_H5_ALIGNMENT ((size_t)1 << 20)

/* An upper bound of what a dataset of `bytes` takes in a file made with ladle_h5_fapl_mpio:
 * its data, the gap before an aligned start, its object header. For writers that reserve
 * a file's space before writing it. */
size_t ladle_h5_dataset_bound(size_t bytes);
/* The same for a group (object header, symbol table, link in its parent) and for an
 * attribute of `bytes` (a variable-length string takes a global heap collection). */
#define LADLE_H5_GROUP_BOUND ((size_t)8192)
#define LADLE_H5_ATTR_BOUND(bytes) ((size_t)(bytes) + 4096 + 256)

/* File access properties for MPI-IO on comm (file locking off, alignment set). */
hid_t ladle_h5_fapl_mpio(MPI_Comm comm);

/* Writers for attributes (scalar dataspace). Strings are variable-length UTF-8. */
void ladle_h5_write_string_attr(hid_t obj, const char *name, const char *value);
void ladle_h5_write_scalar_attr(hid_t obj, const char *name, hid_t file_type, hid_t mem_type, const void *value);
/* A 1-D array attribute of n values of mem_type, stored as file_type. */
void ladle_h5_write_array_attr(hid_t obj, const char *name, hid_t file_type, hid_t mem_type, const void *values, int n);
/* Reads a fixed- or variable-length string attribute; malloc'd, or NULL if absent. */
char *ladle_h5_read_string_attr(hid_t obj, const char *name);
void ladle_h5_write_long_attr(hid_t obj, const char *name, long value);

/* An open attribute with its stored type, dataspace and element count. */
typedef struct {
    hid_t attr, type, space;
    hssize_t count;
} ladle_h5_attr;

/* Opens obj's attribute `name`: 1, or 0 (nothing opened) if it does not exist. */
int ladle_h5_attr_open(hid_t obj, const char *name, ladle_h5_attr *a);
void ladle_h5_attr_close(ladle_h5_attr *a);
/* A 1-D array of variable-length UTF-8 strings (h5py: an array of str). */
void ladle_h5_write_strings_attr(hid_t obj, const char *name, const char *const *values, int n);
/* Reads a 1-D string array attribute, variable- or fixed-length; malloc'd array of malloc'd
 * strings, *n its length; NULL (n = 0) if absent or not strings. */
char **ladle_h5_read_strings_attr(hid_t obj, const char *name, int *n);
void ladle_h5_free_strings(char **values, int n);
/* Returns 0 and sets *value, or -1 if the attribute is absent or not an integer. */
int ladle_h5_read_long_attr(hid_t obj, const char *name, long *value);

/* Silence HDF5's automatic error printing (ladle reports errors itself). */
void ladle_h5_quiet(void);

/* Property lists that leave out timestamps, so the same content gives the same bytes. */
hid_t ladle_h5_untimed_dataset_props(void);
hid_t ladle_h5_untimed_group_props(void);

/* Collective over comm: a cheap check (a few KB) that the MPI-IO / parallel HDF5 stack
 * can write shared files in dir. Creates dir/.ladle-selftest-<pid of rank 0>.h5, every
 * rank writes its own hyperslab of a 1-D dataset with a collective transfer, closes,
 * reopens and reads the whole dataset back, checking every element; rank 0 removes the
 * file. Any failure aborts all ranks (ladle_fail) with "MPI-IO self-test in 'dir'
 * failed: <what>: ..." and advice on the MPI-IO component. */
void ladle_h5_selftest(const char *dir, MPI_Comm comm);

#endif
