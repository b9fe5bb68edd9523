#include "ladle/ckpt.h"
#include "ladle/error.h"
#include "ladle/fileio.h"
#include "ladle/h5io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"   /* PACKAGE_VERSION */

/* ---- selections ---------------------------------------------------------------
 * A rank owns a contiguous range of the flat parameter vector; inside one tensor that
 * is a flat element range [x0, x1): at most three blocks of the tensor's row-major
 * shape (ladle_flat_blocks). Expert datasets have a leading expert index: the same
 * blocks in every plane j. */

typedef struct {
    int rank;            /* dataset rank: tensor rank, +1 with a leading expert index */
    hsize_t dims[3];
} tensor_space;

static tensor_space space_of(const ladle_tensor *t, int planes)
{
    tensor_space s;
    memset(&s, 0, sizeof s);
    int r = 0;
    if (planes > 0) s.dims[r++] = (hsize_t)planes;
    s.dims[r++] = (hsize_t)t->shape[0];
    if (t->ndim == 2) s.dims[r++] = (hsize_t)t->shape[1];
    s.rank = r;
    return s;
}

static void or_block(hid_t space, const tensor_space *ts, int plane, hsize_t row, hsize_t col, hsize_t nrows,
                     hsize_t ncols, int *first)
{
    if (nrows == 0 || ncols == 0) return;
    hsize_t start[3], count[3];
    int r = 0;
    if (plane >= 0) { start[r] = (hsize_t)plane; count[r++] = 1; }
    if (ts->rank - r == 2) {
        start[r] = row; count[r++] = nrows;
        start[r] = col; count[r++] = ncols;
    } else {
        start[r] = col; count[r++] = ncols;   /* 1-D tensor: one "row" */
    }
    H5_CHECK(H5Sselect_hyperslab(space, *first ? H5S_SELECT_SET : H5S_SELECT_OR, start, NULL, count, NULL));
    *first = 0;
}

/* Select flat elements [x0, x1) of plane `plane` (-1: no plane dimension). */
static void select_flat(hid_t space, const tensor_space *ts, int plane, hsize_t x0, hsize_t x1, int *first)
{
    ladle_block b[3];
    int n = ladle_flat_blocks((size_t)x0, (size_t)x1, (size_t)ts->dims[ts->rank - 1], b);
    for (int i = 0; i < n; i++) or_block(space, ts, plane, b[i].row, b[i].col, b[i].rows, b[i].cols, first);
}

typedef enum { IO_WRITE, IO_READ } io_dir;

/* Read or write of one dataset by every rank: this rank's flat range [x0, x1) of every
 * plane (planes = 0: a plain tensor), from/to buf laid out [planes x stride] starting
 * at buf. Every rank calls this for every dataset, possibly with nothing selected. */
static void transfer(hid_t dset, const tensor_space *ts, int planes, int have, size_t x0, size_t x1,
                     float *buf, size_t stride, io_dir dir)
{
    hid_t fspace = H5Dget_space(dset);
    H5_CHECK(fspace);
    hsize_t n = have ? (hsize_t)(x1 - x0) : 0;
    int np = planes > 0 ? planes : 1;
    /* memory: np rows of n elements at the given stride */
    hsize_t mdims[2] = {(hsize_t)np, have ? (hsize_t)stride : 1};
    hid_t mspace = H5Screate_simple(2, mdims, NULL);
    H5_CHECK(mspace);
    if (have && n > 0) {
        int first = 1;
        for (int j = 0; j < np; j++) select_flat(fspace, ts, planes > 0 ? j : -1, x0, x1, &first);
        hsize_t start[2] = {0, 0}, count[2] = {(hsize_t)np, n};
        H5_CHECK(H5Sselect_hyperslab(mspace, H5S_SELECT_SET, start, NULL, count, NULL));
    } else {
        H5_CHECK(H5Sselect_none(fspace));
        H5_CHECK(H5Sselect_none(mspace));
    }
    /* Independent transfers: a rank's slice covers few datasets, so with collective ones
     * each call would wait for the rank that owns the data (measured: 2 ranks read 1.8x
     * faster independently). Every rank still calls H5Dwrite/H5Dread on every dataset,
     * and dataset creation stays collective. */
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5_CHECK(dxpl);
    H5_CHECK(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_INDEPENDENT));
    float dummy = 0.0f;
    float *p = have && n > 0 ? buf : &dummy;
    if (dir == IO_WRITE) H5_CHECK(H5Dwrite(dset, H5T_NATIVE_FLOAT, mspace, fspace, dxpl, p));
    else H5_CHECK(H5Dread(dset, H5T_NATIVE_FLOAT, mspace, fspace, dxpl, p));
    H5_CHECK(H5Pclose(dxpl));
    H5_CHECK(H5Sclose(mspace));
    H5_CHECK(H5Sclose(fspace));
}

static hid_t create_dataset(hid_t group, const char *name, const tensor_space *ts)
{
    hid_t space = H5Screate_simple(ts->rank, ts->dims, NULL);
    H5_CHECK(space);
    hid_t dcpl = ladle_h5_untimed_dataset_props();
    hid_t dset = H5Dcreate2(group, name, H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5_CHECK(dset);
    H5_CHECK(H5Pclose(dcpl));
    H5_CHECK(H5Sclose(space));
    return dset;
}

/* Open name in group and check its shape against ts: a mismatch is a usage error. */
static hid_t open_dataset(hid_t group, const char *gname, const char *name, const tensor_space *ts, const char *path)
{
    if (H5Lexists(group, name, H5P_DEFAULT) <= 0)
        ladle_usage_error("model '%s' lacks /%s/%s", path, gname, name);
    hid_t dset = H5Dopen2(group, name, H5P_DEFAULT);
    H5_CHECK(dset);
    hid_t space = H5Dget_space(dset);
    H5_CHECK(space);
    hsize_t dims[3] = {0, 0, 0};
    int rank = H5Sget_simple_extent_ndims(space);
    int ok = rank == ts->rank && H5Sget_simple_extent_dims(space, dims, NULL) == rank;
    for (int i = 0; ok && i < rank; i++) ok = dims[i] == ts->dims[i];
    H5_CHECK(H5Sclose(space));
    if (!ok) ladle_usage_error("model '%s': /%s/%s does not have the shape its configuration implies", path, gname, name);
    return dset;
}

/* ---- root attributes -------------------------------------------------------- */

static void write_names_attr(hid_t obj, const char *name, const char (*names)[LADLE_NAME_MAX], int n)
{
    const char **ptrs = ladle_calloc((size_t)(n > 0 ? n : 1), sizeof(char *), "names");
    for (int i = 0; i < n; i++) ptrs[i] = names[i];
    ladle_h5_write_strings_attr(obj, name, ptrs, n);
    free(ptrs);
}

static int read_names_attr(hid_t obj, const char *name, char (**names)[LADLE_NAME_MAX])
{
    int n = 0;
    char **values = ladle_h5_read_strings_attr(obj, name, &n);
    *names = ladle_calloc((size_t)(n > 0 ? n : 1), LADLE_NAME_MAX, "names");
    for (int i = 0; i < n; i++) snprintf((*names)[i], LADLE_NAME_MAX, "%s", values[i]);
    ladle_h5_free_strings(values, n);
    return n;
}

/* ---- low-rank factors ------------------------------------------------------------
 * In memory a factor is [rows x n r] (column j r + s is expert j's s-th column); in the
 * file it is [n, rows, r], so that U[j] @ V[j].T is expert j's matrix in h5py. */

static void lowrank_to_file(const float *mem, float *file, size_t rows, int n, int r)
{
    for (int j = 0; j < n; j++)
        for (size_t i = 0; i < rows; i++)
            for (int q = 0; q < r; q++)
                file[((size_t)j * rows + i) * r + q] = mem[i * (size_t)n * r + (size_t)j * r + q];
}

static void lowrank_from_file(const float *file, float *mem, size_t rows, int n, int r)
{
    for (int j = 0; j < n; j++)
        for (size_t i = 0; i < rows; i++)
            for (int q = 0; q < r; q++)
                mem[i * (size_t)n * r + (size_t)j * r + q] = file[((size_t)j * rows + i) * r + q];
}

/* Write (rank 0) or read (everyone) /experts/<tensor>/U and V of every low-rank site. */
static void transfer_lowrank(hid_t experts, const ladle_soup *soup, const ladle_model *m, int rank, io_dir dir,
                             float *lowrank, const char *path)
{
    for (int s = 0; s < soup->n_sites; s++) {
        const ladle_tensor *w = &m->tensors[soup->sites[s].tensor];
        hid_t group;
        if (dir == IO_WRITE) {
            hid_t gcpl = ladle_h5_untimed_group_props();
            group = H5Gcreate2(experts, w->name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
            H5_CHECK(H5Pclose(gcpl));
        } else {
            if (H5Lexists(experts, w->name, H5P_DEFAULT) <= 0)
                ladle_usage_error("soup '%s' lacks the low-rank experts /experts/%s", path, w->name);
            group = H5Gopen2(experts, w->name, H5P_DEFAULT);
        }
        H5_CHECK(group);
        for (int f = 0; f < 2; f++) {
            const ladle_tensor *lt = &soup->lowrank_tensors[2 * s + f];
            size_t rows = (size_t)lt->shape[0];
            /* a [n, rows, r] dataset viewed as a tensor of n planes of [rows, r] */
            ladle_tensor plane = *lt;
            plane.shape[1] = soup->rank;
            plane.size = rows * (size_t)soup->rank;
            tensor_space ts = space_of(&plane, soup->n);
            const char *name = f ? "V" : "U";
            float *buf = ladle_malloc(lt->size * sizeof(float), "low-rank factor");
            hid_t dset;
            if (dir == IO_WRITE) {
                dset = create_dataset(group, name, &ts);
                lowrank_to_file(lowrank + lt->offset, buf, rows, soup->n, soup->rank);
                transfer(dset, &ts, soup->n, rank == 0, 0, plane.size, buf, plane.size, IO_WRITE);
            } else {
                char gname[LADLE_TENSOR_NAME_MAX + 16];
                snprintf(gname, sizeof gname, "experts/%s", w->name);
                dset = open_dataset(group, gname, name, &ts, path);
                transfer(dset, &ts, soup->n, 1, 0, plane.size, buf, plane.size, IO_READ);
                lowrank_from_file(buf, lowrank + lt->offset, rows, soup->n, soup->rank);
            }
            free(buf);
            H5_CHECK(H5Dclose(dset));
        }
        H5_CHECK(H5Gclose(group));
    }
}

/* ---- one parameter set: /shared, /experts, /router under a parent group ---------- */

/* The vectors of one set (the parameters, or one AdamW moment) on this rank. */
typedef struct {
    float *shared;    /* shard.slice floats */
    float *experts;   /* [n x own_len] */
    float *lowrank;   /* soup->lowrank_size */
    float *router;    /* router->n_params */
} param_set;

static hid_t child_group(hid_t parent, const char *name, io_dir dir, const char *path)
{
    hid_t g;
    if (dir == IO_WRITE) {
        hid_t gcpl = ladle_h5_untimed_group_props();
        g = H5Gcreate2(parent, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
        H5_CHECK(H5Pclose(gcpl));
    } else {
        if (H5Lexists(parent, name, H5P_DEFAULT) <= 0) ladle_usage_error("model '%s' has no group %s", path, name);
        g = H5Gopen2(parent, name, H5P_DEFAULT);
    }
    H5_CHECK(g);
    return g;
}

/* Collective: write or read one set. Each rank moves the hyperslabs of its own slice of
 * S and of its bank shard; the replicated router and low-rank factors are written by
 * rank 0 and read by everyone. */
static void transfer_set(hid_t parent, io_dir dir, const ladle_model *m, const ladle_shard *s,
                         const ladle_soup *soup, const ladle_router *router, const param_set *p, const char *path)
{
    hid_t shared = child_group(parent, "shared", dir, path);
    for (int i = 0; i < m->n_tensors; i++) {
        const ladle_tensor *t = &m->tensors[i];
        tensor_space ts = space_of(t, 0);
        hid_t dset = dir == IO_WRITE ? create_dataset(shared, t->name, &ts) : open_dataset(shared, "shared", t->name, &ts, path);
        size_t x0 = 0, x1 = 0;
        int have = ladle_range_part(t->offset, t->size, s->lo, s->hi, &x0, &x1);
        float *buf = have ? p->shared + (t->offset + x0 - s->lo) : NULL;
        transfer(dset, &ts, 0, have, x0, x1, buf, x1 - x0, dir);
        H5_CHECK(H5Dclose(dset));
    }
    H5_CHECK(H5Gclose(shared));
    if (!soup || soup->n == 0) return;

    hid_t experts = child_group(parent, "experts", dir, path);
    for (int i = 0; i < m->n_tensors && soup->rank == 0; i++) {
        const ladle_tensor *t = &m->tensors[i];
        if (t->offset < soup->bank_lo || t->offset >= soup->bank_hi) continue;   /* carries no experts */
        tensor_space ts = space_of(t, soup->n);
        hid_t dset = dir == IO_WRITE ? create_dataset(experts, t->name, &ts)
                                     : open_dataset(experts, "experts", t->name, &ts, path);
        size_t x0 = 0, x1 = 0;
        int have = ladle_range_part(t->offset, t->size, soup->own_lo, soup->own_lo + soup->own_len, &x0, &x1);
        float *buf = have ? p->experts + (t->offset + x0 - soup->own_lo) : NULL;
        transfer(dset, &ts, soup->n, have, x0, x1, buf, soup->own_len, dir);
        H5_CHECK(H5Dclose(dset));
    }
    transfer_lowrank(experts, soup, m, s->rank, dir, p->lowrank, path);
    H5_CHECK(H5Gclose(experts));

    hid_t rgroup = child_group(parent, "router", dir, path);
    for (int i = 0; i < 4; i++) {
        const ladle_tensor *t = &router->tensors[i];
        tensor_space ts = space_of(t, 0);
        hid_t dset = dir == IO_WRITE ? create_dataset(rgroup, t->name, &ts) : open_dataset(rgroup, "router", t->name, &ts, path);
        transfer(dset, &ts, 0, dir == IO_READ || s->rank == 0, 0, t->size, p->router + t->offset, t->size, dir);
        H5_CHECK(H5Dclose(dset));
    }
    H5_CHECK(H5Gclose(rgroup));
}

/* ---- finite values ----------------------------------------------------------------
 * A NaN or Inf in a file would only show up as a NaN loss much later: files are checked
 * when read and before they are written. A tensor is named by a code that orders the
 * parts of a set (shared, experts, low-rank factors, router) so that every rank reports
 * the same first tensor after an MPI_MIN. */

enum { PART_SHARED, PART_EXPERTS, PART_LOWRANK, PART_ROUTER, PART_COUNT };
#define PART_STRIDE 1000000
#define NO_BAD_TENSOR (PART_COUNT * PART_STRIDE)

static int all_finite(const float *x, size_t n)
{
    int ok = 1;
    for (size_t i = 0; i < n; i++) ok &= isfinite(x[i]) != 0;
    return ok;
}

/* The code of the first tensor of p, on this rank's part, holding a non-finite value. */
static int first_bad_tensor(const param_set *p, const ladle_model *m, const ladle_shard *s, const ladle_soup *soup,
                            const ladle_router *router)
{
    for (int i = 0; i < m->n_tensors; i++) {
        const ladle_tensor *t = &m->tensors[i];
        size_t x0 = 0, x1 = 0;
        if (ladle_range_part(t->offset, t->size, s->lo, s->hi, &x0, &x1) &&
            !all_finite(p->shared + (t->offset + x0 - s->lo), x1 - x0))
            return PART_SHARED * PART_STRIDE + i;
    }
    if (!soup || soup->n == 0) return NO_BAD_TENSOR;
    for (int i = 0; i < m->n_tensors && soup->own_len > 0; i++) {
        const ladle_tensor *t = &m->tensors[i];
        size_t x0 = 0, x1 = 0;
        if (!ladle_range_part(t->offset, t->size, soup->own_lo, soup->own_lo + soup->own_len, &x0, &x1)) continue;
        for (int j = 0; j < soup->n; j++)
            if (!all_finite(p->experts + (size_t)j * soup->own_len + (t->offset + x0 - soup->own_lo), x1 - x0))
                return PART_EXPERTS * PART_STRIDE + i;
    }
    for (int f = 0; f < 2 * soup->n_sites; f++) {
        const ladle_tensor *lt = &soup->lowrank_tensors[f];
        if (!all_finite(p->lowrank + lt->offset, lt->size)) return PART_LOWRANK * PART_STRIDE + f;
    }
    for (int i = 0; i < 4; i++)
        if (!all_finite(p->router + router->tensors[i].offset, router->tensors[i].size))
            return PART_ROUTER * PART_STRIDE + i;
    return NO_BAD_TENSOR;
}

/* Collective: the dataset path of the first non-finite tensor of p on any rank, in name;
 * 0 if every value is finite. */
static int find_nonfinite(const param_set *p, const ladle_model *m, const ladle_shard *s, const ladle_soup *soup,
                          const ladle_router *router, char *name, size_t len)
{
    int bad = first_bad_tensor(p, m, s, soup, router);
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MIN, s->comm));
    if (bad == NO_BAD_TENSOR) return 0;
    int part = bad / PART_STRIDE, i = bad % PART_STRIDE;
    if (part == PART_SHARED) snprintf(name, len, "/shared/%s", m->tensors[i].name);
    else if (part == PART_EXPERTS) snprintf(name, len, "/experts/%s", m->tensors[i].name);
    else if (part == PART_LOWRANK)
        snprintf(name, len, "/experts/%s/%s", m->tensors[soup->sites[i / 2].tensor].name, i % 2 ? "V" : "U");
    else snprintf(name, len, "/router/%s", router->tensors[i].name);
    return 1;
}

static param_set params_of(const ladle_ckpt_state *st)
{
    param_set p = {st->shared, st->soup ? st->soup->experts : NULL, st->soup ? st->soup->lowrank : NULL,
                   st->router_params};
    return p;
}

/* The AdamW moments: m (which = 0) or v (which = 1). */
static param_set moments_of(const ladle_ckpt_state *st, int which)
{
    param_set p = {which ? st->shared_v : st->shared_m,
                   st->soup ? (which ? st->soup->adam_v : st->soup->adam_m) : NULL,
                   st->soup ? (which ? st->soup->lowrank_v : st->soup->lowrank_m) : NULL,
                   which ? st->router_v : st->router_m};
    return p;
}

/* ---- space and durability ------------------------------------------------------------
 * A full file system must not meet a checkpoint half-way: a failed write inside HDF5 leaves
 * ranks in different states and a file HDF5 cannot close. So rank 0 reserves an upper bound
 * of the file's size (fallocate, keeping the size) right after creating it, and every rank
 * learns the outcome before any data is written; on failure the file is removed and every
 * rank exits 1 with one message, the previous checkpoint and 'latest' untouched. */

/* An upper bound of one dataset of floats in the file. */
static size_t dataset_bound(size_t floats)
{
    return ladle_h5_dataset_bound(floats * sizeof(float));
}

/* The datasets transfer_set writes for one parameter set. */
static size_t set_bound(const ladle_model *m, const ladle_soup *soup, const ladle_router *router)
{
    size_t b = 0;
    for (int i = 0; i < m->n_tensors; i++) b += dataset_bound(m->tensors[i].size);
    if (!soup || soup->n == 0) return b;
    for (int i = 0; i < m->n_tensors && soup->rank == 0; i++)
        if (m->tensors[i].offset >= soup->bank_lo && m->tensors[i].offset < soup->bank_hi)
            b += dataset_bound((size_t)soup->n * m->tensors[i].size);
    for (int f = 0; f < 2 * soup->n_sites; f++) b += dataset_bound(soup->lowrank_tensors[f].size);
    for (int i = 0; i < 4; i++) b += dataset_bound(router->tensors[i].size);
    return b;
}

static size_t file_bound(const ladle_ckpt_contents *c)
{
    const ladle_ckpt_state *st = &c->state;
    size_t b = set_bound(c->model, st->soup, st->router) * (c->with_optim ? 3 : 1);
    /* root attributes (the configuration text, domain names, h, alpha) and superblock */
    return b + 64 * 1024 + (size_t)c->n_domains * (LADLE_NAME_MAX + 16) + (size_t)c->n_alpha * 8;
}

/* ---- save -------------------------------------------------------------------- */

void ladle_ckpt_save(const char *path, const ladle_ckpt_contents *c)
{
    const ladle_shard *s = c->shard;
    const ladle_ckpt_state *st = &c->state;
    param_set p = params_of(st);
    char bad[LADLE_TENSOR_NAME_MAX + 32] = "";
    if (!find_nonfinite(&p, c->model, s, st->soup, st->router, bad, sizeof bad)) {
        if (c->h && !all_finite(c->h, (size_t)c->n_domains)) snprintf(bad, sizeof bad, "the attribute h");
        else if (c->alpha && !all_finite(c->alpha, (size_t)c->n_alpha)) snprintf(bad, sizeof bad, "the attribute alpha");
    }
    if (bad[0])
        ladle_runtime_error("not writing '%s': %s holds NaN or Inf values (diverged training, or bad domain weights?)",
                            path, bad);
    char tmp[LADLE_PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    ladle_h5_quiet();
    hid_t fapl = ladle_h5_fapl_mpio(s->comm);
    hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5_CHECK(H5Pclose(fapl));
    LADLE_CHECK(file >= 0, "cannot create model file '%s'", tmp);
    const size_t bound = file_bound(c);
    char why[256] = "";
    if (ladle_reserve_space(tmp, bound, s->comm, why, sizeof why) != 0) {
        H5_CHECK(H5Fclose(file));
        if (s->rank == 0) unlink(tmp);
        ladle_runtime_error("no room to write '%s': %s; nothing was written (an earlier checkpoint stays as it "
                            "was)", path, why);
    }

    /* attributes: collective metadata, identical on every rank */
    ladle_h5_write_string_attr(file, "format", LADLE_CKPT_FORMAT);
    ladle_h5_write_long_attr(file, "format_version", LADLE_CKPT_VERSION);
    ladle_h5_write_string_attr(file, "kind", c->kind);
    ladle_h5_write_long_attr(file, "step", c->step);
    ladle_h5_write_long_attr(file, "seed", c->cfg->seed);
    ladle_h5_write_long_attr(file, "world_size", s->size);
    char *text = ladle_config_to_text(c->cfg);
    ladle_h5_write_string_attr(file, "config", text);
    free(text);
    ladle_h5_write_string_attr(file, "ladle_version", PACKAGE_VERSION);
    write_names_attr(file, "domains", c->domain_names, c->n_domains);
    if (c->h) ladle_h5_write_array_attr(file, "h", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, c->h, c->n_domains);
    if (c->alpha && c->n_alpha > 0)
        ladle_h5_write_array_attr(file, "alpha", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, c->alpha, c->n_alpha);
    if (c->source) ladle_h5_write_string_attr(file, "source", c->source);

    transfer_set(file, IO_WRITE, c->model, s, st->soup, st->router, &p, path);
    if (c->with_optim) {
        /* everything an exact resume needs beyond the parameters: the AdamW moments (the
         * step count is the root's step; data and h are counter-based on (seed, step)) */
        hid_t optim = child_group(file, "optim", IO_WRITE, path);
        ladle_h5_write_long_attr(optim, "step", c->step);
        for (int which = 0; which < 2; which++) {
            hid_t g = child_group(optim, which ? "v" : "m", IO_WRITE, path);
            param_set mo = moments_of(st, which);
            transfer_set(g, IO_WRITE, c->model, s, st->soup, st->router, &mo, path);
            H5_CHECK(H5Gclose(g));
        }
        H5_CHECK(H5Gclose(optim));
    }
    /* durable before it gets its name: H5Fflush has every rank MPI_File_sync its writes
     * (MPI-IO's way to reach the device from every node); rank 0 then syncs what closing
     * wrote. The run directory is synced after the rename (ladle_ckpt_commit). */
    H5_CHECK(H5Fflush(file, H5F_SCOPE_GLOBAL));
    H5_CHECK(H5Fclose(file));   /* collective: every rank's data is in the file */
    MPI_CHECK(MPI_Barrier(s->comm));
    if (s->rank == 0) {
        ladle_sync_and_trim(tmp, bound);
        LADLE_CHECK(rename(tmp, path) == 0, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
    }
    MPI_CHECK(MPI_Barrier(s->comm));
}

/* ---- load -------------------------------------------------------------------- */

/* Root attributes every loader reads: kind, configuration, step, domain names. */
static void read_header(hid_t file, const char *path, char *kind, size_t kind_len, ladle_config *cfg, long *step,
                        char (**names)[LADLE_NAME_MAX], int *n_names)
{
    char *k = ladle_h5_read_string_attr(file, "kind");
    if (!k) ladle_usage_error("model '%s' has no kind attribute", path);
    snprintf(kind, kind_len, "%s", k);
    free(k);
    if (strcmp(kind, "dense") && strcmp(kind, "soup") && strcmp(kind, "instantiated"))
        ladle_usage_error("model '%s' has kind '%s': expected dense, soup or instantiated", path, kind);
    char *text = ladle_h5_read_string_attr(file, "config");
    if (!text) ladle_usage_error("model '%s' has no config attribute", path);
    char err[512];
    /* validated like a run's: the model is built from it before any tensor is read */
    int rc = ladle_config_from_text(cfg, text, err, sizeof err);
    free(text);
    if (rc == 0) rc = ladle_config_validate(cfg, err, sizeof err);
    if (rc != 0) ladle_usage_error("model '%s': stored configuration rejected: %s", path, err);
    if (ladle_h5_read_long_attr(file, "step", step) != 0) *step = 0;
    *n_names = read_names_attr(file, "domains", names);
}

/* Collective: a usage error naming the file and tensor if p holds NaN or Inf. */
static void check_read_finite(const param_set *p, const ladle_model *m, const ladle_shard *s, const ladle_soup *soup,
                              const ladle_router *router, const char *path, const char *group)
{
    char bad[LADLE_TENSOR_NAME_MAX + 32];
    if (find_nonfinite(p, m, s, soup, router, bad, sizeof bad))
        ladle_usage_error("model '%s': %s%s holds NaN or Inf values: refusing to use it", path, group, bad);
}

void ladle_ckpt_load(const char *path, MPI_Comm comm, ladle_ckpt_loaded *out)
{
    memset(out, 0, sizeof *out);
    hid_t file = ladle_h5_open_ladle_file(path, "model", LADLE_CKPT_FORMAT, LADLE_CKPT_VERSION, comm);
    read_header(file, path, out->kind, sizeof out->kind, &out->cfg, &out->step, &out->domain_names, &out->n_domains);
    ladle_model_create(&out->model, &out->cfg);
    ladle_shard_create(&out->shard, out->model.n_params, comm);
    out->shared_slice = ladle_calloc(out->shard.slice, sizeof(float), "parameter slice");
    int n = strcmp(out->kind, "soup") == 0 ? out->cfg.experts : 0;
    ladle_soup_create(&out->soup, &out->model, &out->shard, n, out->cfg.experts_on, out->cfg.expert_rank);
    if (n > 0) {
        if (out->n_domains < 1) ladle_usage_error("soup '%s' names no domains", path);
        ladle_router_configure(&out->router, out->n_domains, n, &out->cfg);
        out->router_params = ladle_calloc(out->router.n_params, sizeof(float), "router parameters");
    }
    param_set p = {out->shared_slice, out->soup.experts, out->soup.lowrank, out->router_params};
    transfer_set(file, IO_READ, &out->model, &out->shard, &out->soup, &out->router, &p, path);
    H5_CHECK(H5Fclose(file));
    check_read_finite(&p, &out->model, &out->shard, &out->soup, &out->router, path, "");
}

void ladle_ckpt_peek(const char *path, MPI_Comm comm, ladle_config *stored, long *step)
{
    hid_t file = ladle_h5_open_ladle_file(path, "checkpoint", LADLE_CKPT_FORMAT, LADLE_CKPT_VERSION, comm);
    char kind[32];
    char (*names)[LADLE_NAME_MAX] = NULL;
    int n_names = 0;
    read_header(file, path, kind, sizeof kind, stored, step, &names, &n_names);
    free(names);
    H5_CHECK(H5Fclose(file));
}

void ladle_ckpt_restore(const char *path, const ladle_model *model, const ladle_shard *shard,
                        const ladle_ckpt_state *state, ladle_config *stored, long *step)
{
    hid_t file = ladle_h5_open_ladle_file(path, "checkpoint", LADLE_CKPT_FORMAT, LADLE_CKPT_VERSION, shard->comm);
    char kind[32];
    char (*names)[LADLE_NAME_MAX] = NULL;
    int n_names = 0;
    read_header(file, path, kind, sizeof kind, stored, step, &names, &n_names);
    free(names);
    if (H5Lexists(file, "optim", H5P_DEFAULT) <= 0)
        ladle_usage_error("'%s' holds no optimizer state (a %s model file, not a training checkpoint)", path, kind);
    param_set p = params_of(state), mo[2] = {moments_of(state, 0), moments_of(state, 1)};
    transfer_set(file, IO_READ, model, shard, state->soup, state->router, &p, path);
    hid_t optim = H5Gopen2(file, "optim", H5P_DEFAULT);
    H5_CHECK(optim);
    for (int which = 0; which < 2; which++) {
        hid_t g = child_group(optim, which ? "v" : "m", IO_READ, path);
        transfer_set(g, IO_READ, model, shard, state->soup, state->router, &mo[which], path);
        H5_CHECK(H5Gclose(g));
    }
    H5_CHECK(H5Gclose(optim));
    H5_CHECK(H5Fclose(file));
    check_read_finite(&p, model, shard, state->soup, state->router, path, "");
    for (int which = 0; which < 2; which++)
        check_read_finite(&mo[which], model, shard, state->soup, state->router, path, which ? "/optim/v" : "/optim/m");
}

void ladle_ckpt_loaded_free(ladle_ckpt_loaded *l)
{
    free(l->shared_slice);
    free(l->router_params);
    free(l->domain_names);
    ladle_soup_free(&l->soup);
    ladle_model_free(&l->model);
    memset(l, 0, sizeof *l);
}

float *ladle_ckpt_gather_theta(const ladle_ckpt_loaded *l, const float *h, float *alpha_out)
{
    const ladle_shard *s = &l->shard;
    float *theta = ladle_calloc(s->padded, sizeof(float), "parameters");
    if (l->soup.n == 0) {
        ladle_shard_allgather(s, l->shared_slice, theta);
        return theta;
    }
    LADLE_CHECK(h, "a soup needs domain weights to become a model");
    float *alpha = ladle_calloc((size_t)l->soup.n, sizeof(float), "expert coefficients");
    float *merged = ladle_calloc(s->slice, sizeof(float), "merged slice");
    ladle_router_forward(&l->router, l->router_params, h, alpha, NULL);
    ladle_soup_merge(&l->soup, &l->model, alpha, l->shared_slice, merged, s->slice);
    ladle_shard_allgather(s, merged, theta);
    if (alpha_out) memcpy(alpha_out, alpha, (size_t)l->soup.n * sizeof(float));
    free(alpha);
    free(merged);
    return theta;
}

int ladle_ckpt_domain_index(const ladle_ckpt_loaded *l, const char *name)
{
    for (int i = 0; i < l->n_domains; i++)
        if (strcmp(l->domain_names[i], name) == 0) return i;
    return -1;
}

/* ---- run directories ------------------------------------------------------------- */

void ladle_ckpt_path(char *out, size_t len, const char *dir, long step)
{
    snprintf(out, len, "%s/ckpt-%08ld.h5", dir, step);
}

/* The step of a checkpoint file name, or -1. */
static long checkpoint_step(const char *name)
{
    long step = -1;
    char tail[8];
    if (sscanf(name, "ckpt-%ld%7s", &step, tail) == 2 && strcmp(tail, ".h5") == 0 && step >= 0) return step;
    return -1;
}

static int by_step_desc(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x < y) - (x > y);
}

/* Steps of the checkpoints in dir, newest first; *n receives the count. */
static long *list_checkpoints(const char *dir, int *n)
{
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return NULL;
    size_t cap = 16;
    long *steps = ladle_malloc(cap * sizeof(long), "checkpoint list");
    for (struct dirent *e; (e = readdir(d));) {
        long step = checkpoint_step(e->d_name);
        if (step < 0) continue;
        if ((size_t)*n == cap) {
            cap *= 2;
            long *grown = realloc(steps, cap * sizeof(long));
            LADLE_CHECK(grown, "out of memory listing checkpoints");
            steps = grown;
        }
        steps[(*n)++] = step;
    }
    closedir(d);
    qsort(steps, (size_t)*n, sizeof(long), by_step_desc);
    return steps;
}

static void fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    LADLE_CHECK(fd >= 0, "cannot open run directory '%s': %s", dir, strerror(errno));
    LADLE_CHECK(fsync(fd) == 0 || errno == EINVAL, "fsync of '%s' failed: %s", dir, strerror(errno));
    close(fd);
}

void ladle_ckpt_commit(const char *dir, long step, int keep_last, int keep_every, MPI_Comm comm)
{
    int rank = 0;
    MPI_CHECK(MPI_Comm_rank(comm, &rank));
    if (rank == 0) {
        fsync_dir(dir);   /* the checkpoint's rename is durable before latest points at it */
        char latest[LADLE_PATH_MAX + 16], tmp[LADLE_PATH_MAX + 24], name[64];
        snprintf(latest, sizeof latest, "%s/latest", dir);
        snprintf(tmp, sizeof tmp, "%s/latest.tmp", dir);
        snprintf(name, sizeof name, "ckpt-%08ld.h5\n", step);
        FILE *f = fopen(tmp, "w");
        LADLE_CHECK(f, "cannot write '%s': %s", tmp, strerror(errno));
        LADLE_CHECK(fputs(name, f) >= 0 && fflush(f) == 0 && fsync(fileno(f)) == 0, "cannot write '%s': %s", tmp,
                    strerror(errno));
        LADLE_CHECK(fclose(f) == 0, "cannot write '%s': %s", tmp, strerror(errno));
        LADLE_CHECK(rename(tmp, latest) == 0, "cannot rename '%s': %s", tmp, strerror(errno));
        fsync_dir(dir);
        /* retention: the newest keep_last, plus every keep_every-th forever */
        int n = 0;
        long *steps = list_checkpoints(dir, &n);
        for (int i = keep_last; i < n; i++) {
            if (steps[i] == step || (keep_every > 0 && steps[i] % keep_every == 0)) continue;
            char old[LADLE_PATH_MAX + 32];
            ladle_ckpt_path(old, sizeof old, dir, steps[i]);
            LADLE_CHECK(unlink(old) == 0 || errno == ENOENT, "cannot remove '%s': %s", old, strerror(errno));
        }
        free(steps);
    }
    MPI_CHECK(MPI_Barrier(comm));
}

/* Rank 0: does path open as a complete ladle training checkpoint? why gets the reason. */
static int checkpoint_usable(const char *path, char *why, size_t len)
{
    if (access(path, R_OK) != 0) { snprintf(why, len, "%s", strerror(errno)); return 0; }
    if (H5Fis_hdf5(path) <= 0) { snprintf(why, len, "not an HDF5 file (truncated or corrupt)"); return 0; }
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5_CHECK(fapl);
    H5_CHECK(H5Pset_file_locking(fapl, 0, 1));
    /* HDF5 refuses to open a file shorter than its superblock says: truncation shows here */
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5_CHECK(H5Pclose(fapl));
    if (file < 0) { snprintf(why, len, "HDF5 cannot open it (truncated or corrupt)"); return 0; }
    char *format = ladle_h5_read_string_attr(file, "format");
    int ok = format && strcmp(format, LADLE_CKPT_FORMAT) == 0 && H5Lexists(file, "optim", H5P_DEFAULT) > 0 &&
             H5Lexists(file, "shared", H5P_DEFAULT) > 0;
    free(format);
    if (!ok) snprintf(why, len, "not a complete ladle training checkpoint");
    H5Fclose(file);
    return ok;
}

int ladle_ckpt_find_latest(const char *dir, char *out, size_t len, MPI_Comm comm)
{
    int rank = 0, found = 0;
    MPI_CHECK(MPI_Comm_rank(comm, &rank));
    char path[LADLE_PATH_MAX + 32] = "";
    if (rank == 0) {
        ladle_h5_quiet();
        /* candidates: what latest names, then every checkpoint, newest first */
        char latest[LADLE_PATH_MAX + 16], name[128] = "";
        snprintf(latest, sizeof latest, "%s/latest", dir);
        FILE *f = fopen(latest, "r");
        long first = -1;
        if (f) {
            if (fgets(name, sizeof name, f)) {
                name[strcspn(name, "\r\n")] = '\0';
                first = checkpoint_step(name);
            }
            fclose(f);
        }
        int n = 0;
        long *steps = list_checkpoints(dir, &n);
        for (int i = -1; i < n && !found; i++) {
            long step = i < 0 ? first : steps[i];
            if (step < 0 || (i >= 0 && step == first)) continue;
            char why[128];
            ladle_ckpt_path(path, sizeof path, dir, step);
            if (checkpoint_usable(path, why, sizeof why)) found = 1;
            else fprintf(stderr, "ladle: warning: checkpoint '%s' is unusable (%s); trying an older one\n", path, why);
        }
        free(steps);
    }
    MPI_CHECK(MPI_Bcast(&found, 1, MPI_INT, 0, comm));
    MPI_CHECK(MPI_Bcast(path, (int)sizeof path, MPI_CHAR, 0, comm));
    if (found) snprintf(out, len, "%s", path);
    return found;
}
