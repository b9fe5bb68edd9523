#include "ladle/ckpt.h"
#include "ladle/error.h"
#include "ladle/h5io.h"

#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"   /* PACKAGE_VERSION */

static void write_tensor(hid_t group, const ladle_tensor *t, const float *data)
{
    hsize_t dims[2] = {(hsize_t)t->shape[0], (hsize_t)t->shape[1]};
    hid_t space = H5Screate_simple(t->ndim, dims, NULL);
    H5_CHECK(space);
    hid_t dset = H5Dcreate2(group, t->name, H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5_CHECK(dset);
    H5_CHECK(H5Dwrite(dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
    H5_CHECK(H5Dclose(dset));
    H5_CHECK(H5Sclose(space));
}

void ladle_ckpt_save_model(const char *path, const ladle_model *model, const ladle_config *cfg,
                           const float *params, long step, MPI_Comm comm)
{
    int rank = 0, size = 1;
    MPI_CHECK(MPI_Comm_rank(comm, &rank));
    MPI_CHECK(MPI_Comm_size(comm, &size));
    if (rank == 0) {
        char tmp[LADLE_PATH_MAX + 8];
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        ladle_h5_quiet();
        hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
        H5_CHECK(fapl);
        H5_CHECK(H5Pset_file_locking(fapl, 0, 1));
        hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
        H5_CHECK(H5Pclose(fapl));
        LADLE_CHECK(file >= 0, "cannot create model file '%s'", tmp);
        ladle_h5_write_string_attr(file, "format", LADLE_CKPT_FORMAT);
        ladle_h5_write_long_attr(file, "format_version", LADLE_CKPT_VERSION);
        ladle_h5_write_string_attr(file, "kind", "dense");
        ladle_h5_write_long_attr(file, "step", step);
        ladle_h5_write_long_attr(file, "seed", cfg->seed);
        ladle_h5_write_long_attr(file, "world_size", size);
        char *text = ladle_config_to_text(cfg);
        ladle_h5_write_string_attr(file, "config", text);
        free(text);
        ladle_h5_write_string_attr(file, "ladle_version", PACKAGE_VERSION);
        hid_t shared = H5Gcreate2(file, "shared", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5_CHECK(shared);
        for (int i = 0; i < model->n_tensors; i++)
            write_tensor(shared, &model->tensors[i], params + model->tensors[i].offset);
        H5_CHECK(H5Gclose(shared));
        H5_CHECK(H5Fflush(file, H5F_SCOPE_GLOBAL));
        H5_CHECK(H5Fclose(file));
        LADLE_CHECK(rename(tmp, path) == 0, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
    }
    MPI_CHECK(MPI_Barrier(comm));
}

void ladle_ckpt_load_model(const char *path, ladle_config *cfg, ladle_model *model, float **params,
                           long *step, MPI_Comm comm)
{
    hid_t file = ladle_h5_open_ladle_file(path, "model", LADLE_CKPT_FORMAT, LADLE_CKPT_VERSION, comm);
    char *text = ladle_h5_read_string_attr(file, "config");
    if (!text) ladle_usage_error("model '%s' has no config attribute", path);
    char err[512];
    if (ladle_config_from_text(cfg, text, err, sizeof err) != 0)
        ladle_usage_error("model '%s': stored configuration rejected: %s", path, err);
    free(text);
    if (ladle_h5_read_long_attr(file, "step", step) != 0) *step = 0;
    ladle_model_create(model, cfg);
    *params = ladle_malloc(model->n_params * sizeof(float), "model parameters");
    for (int i = 0; i < model->n_tensors; i++) {
        const ladle_tensor *t = &model->tensors[i];
        char name[LADLE_TENSOR_NAME_MAX + 16];
        snprintf(name, sizeof name, "shared/%s", t->name);
        if (H5Lexists(file, "shared", H5P_DEFAULT) <= 0 || H5Lexists(file, name, H5P_DEFAULT) <= 0)
            ladle_usage_error("model '%s' lacks tensor /%s", path, name);
        hid_t dset = H5Dopen2(file, name, H5P_DEFAULT);
        H5_CHECK(dset);
        hid_t space = H5Dget_space(dset);
        H5_CHECK(space);
        hssize_t n = H5Sget_simple_extent_npoints(space);
        if (n != (hssize_t)t->size)
            ladle_usage_error("model '%s': /%s has %lld elements, the configuration implies %zu", path, name,
                              (long long)n, t->size);
        H5_CHECK(H5Dread(dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, *params + t->offset));
        H5_CHECK(H5Sclose(space));
        H5_CHECK(H5Dclose(dset));
    }
    H5_CHECK(H5Fclose(file));
}
