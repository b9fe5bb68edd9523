/* inspect: describe a ladle file from its metadata, or dump one dataset (inspect.h).
 *
 * The file is opened with HDF5's serial driver on every rank: inspecting reads a few
 * attributes and shapes, and a serial open needs no collective calls, so ranks never
 * wait on each other. Apart from the checks that decide whether the file is a ladle file
 * at all (usage errors), the description is best-effort: whatever a damaged file lacks
 * is shown as missing rather than refused, since inspect is where one looks when another
 * command refuses a file. Tensors are listed in the model's flat-vector order (HDF5 lists
 * links by name, which scatters h.10.* before h.2.*), and a tensor whose shape differs from
 * the one its stored configuration implies is flagged. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "ladle/inspect.h"
#include "ladle/ckpt.h"
#include "ladle/config.h"
#include "ladle/data.h"
#include "ladle/error.h"
#include "ladle/h5io.h"
#include "ladle/model.h"

#include <hdf5.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_DIMS 8

/* A problem with the file: close it (strong close degree closes everything in it) and
 * stop with a usage error; every rank reads the same bytes, so every rank gets here. */
/* A problem with the file: close it (the strong close degree closes everything in it) and
 * stop with a usage error; every rank reads the same bytes, so every rank gets there. */
static void close_file(void *file)
{
    if (*(hid_t *)file >= 0) H5Fclose(*(hid_t *)file);
}
#define reject(file, ...) ladle_usage_error_cleanup(close_file, &(hid_t){(file)}, __VA_ARGS__)

static char *dup_string(const char *s)
{
    size_t n = strlen(s);
    char *d = ladle_malloc(n + 1, "string");
    memcpy(d, s, n + 1);
    return d;
}

static char *join_path(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = ladle_malloc(a + b + 2, "path");
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

/* ---- attributes -------------------------------------------------------------------- */

static int has_attr(hid_t obj, const char *name)
{
    return H5Aexists(obj, name) > 0;
}

/* A scalar unsigned integer attribute (corpus counts and seeds are uint64); -1 if absent. */
static int attr_u64(hid_t obj, const char *name, unsigned long long *value)
{
    if (!has_attr(obj, name)) return -1;
    hid_t attr = H5Aopen(obj, name, H5P_DEFAULT);
    H5_CHECK(attr);
    hid_t type = H5Aget_type(attr);
    H5_CHECK(type);
    int ok = H5Tget_class(type) == H5T_INTEGER;
    if (ok) ok = H5Aread(attr, H5T_NATIVE_ULLONG, value) >= 0;
    H5_CHECK(H5Tclose(type));
    H5_CHECK(H5Aclose(attr));
    return ok ? 0 : -1;
}

/* A numeric attribute of any shape as doubles (malloc'd, *n values), or NULL if absent or
 * not numeric. float32 -> double is exact, so printing with %.9g shows the stored value. */
static double *attr_doubles(hid_t obj, const char *name, int *n)
{
    *n = 0;
    ladle_h5_attr a;
    if (!ladle_h5_attr_open(obj, name, &a)) return NULL;
    H5T_class_t cls = H5Tget_class(a.type);
    double *values = NULL;
    if ((cls == H5T_INTEGER || cls == H5T_FLOAT) && a.count < (1 << 24)) {
        values = ladle_calloc((size_t)(a.count > 0 ? a.count : 1), sizeof(double), "attribute");
        if (H5Aread(a.attr, H5T_NATIVE_DOUBLE, values) < 0) {
            free(values);
            values = NULL;
        } else *n = (int)a.count;
    }
    ladle_h5_attr_close(&a);
    return values;
}

/* ---- datasets and groups --------------------------------------------------------------- */

/* A dataset's rank and extent (*ndim = -1 above MAX_DIMS) and a numpy-style type name. */
static void dataset_shape(hid_t dset, int *ndim, hsize_t *dims, char *dtype, size_t dtype_len)
{
    hid_t space = H5Dget_space(dset);
    H5_CHECK(space);
    int r = H5Sget_simple_extent_ndims(space);
    H5_CHECK(r);
    *ndim = r <= MAX_DIMS ? r : -1;
    if (*ndim >= 0) H5_CHECK(H5Sget_simple_extent_dims(space, dims, NULL));
    H5_CHECK(H5Sclose(space));
    hid_t type = H5Dget_type(dset);
    H5_CHECK(type);
    H5T_class_t cls = H5Tget_class(type);
    size_t bits = 8 * H5Tget_size(type);
    if (cls == H5T_FLOAT) snprintf(dtype, dtype_len, "float%zu", bits);
    else if (cls == H5T_INTEGER)
        snprintf(dtype, dtype_len, "%sint%zu", H5Tget_sign(type) == H5T_SGN_NONE ? "u" : "", bits);
    else if (cls == H5T_STRING) snprintf(dtype, dtype_len, "string");
    else snprintf(dtype, dtype_len, "other");
    H5_CHECK(H5Tclose(type));
}

static unsigned long long n_elements(int ndim, const hsize_t *dims)
{
    unsigned long long n = 1;
    for (int i = 0; i < ndim; i++) n *= (unsigned long long)dims[i];
    return ndim < 0 ? 0 : n;
}

/* Length of a one-dimensional dataset in group g, or -1 if it is missing or not 1-D. */
static long long vector_length(hid_t g, const char *name)
{
    if (H5Lexists(g, name, H5P_DEFAULT) <= 0) return -1;
    hid_t dset = H5Dopen2(g, name, H5P_DEFAULT);
    if (dset < 0) return -1;
    int ndim = 0;
    hsize_t dims[MAX_DIMS];
    char dtype[16];
    dataset_shape(dset, &ndim, dims, dtype, sizeof dtype);
    H5_CHECK(H5Dclose(dset));
    return ndim == 1 ? (long long)dims[0] : -1;
}

/* 1 if path names an existing link, checked one component at a time (an intermediate
 * component that does not exist is an HDF5 error, not "no"). */
static int path_exists(hid_t file, const char *path)
{
    if (!*path) return 0;
    size_t n = strlen(path);
    char *prefix = ladle_malloc(n + 1, "path");
    int ok = 1;
    for (size_t i = 0; ok && i <= n; i++) {
        if (path[i] != '/' && path[i] != '\0') continue;
        if (i == 0 || path[i - 1] == '/') { ok = 0; break; }   /* an empty component */
        memcpy(prefix, path, i);
        prefix[i] = '\0';
        ok = H5Lexists(file, prefix, H5P_DEFAULT) > 0;
    }
    free(prefix);
    return ok;
}

/* What a path names: H5I_DATASET, H5I_GROUP, or H5I_BADID. (H5Oopen and H5Iget_type
 * rather than H5Oget_info, whose signature differs between HDF5 1.10 and 1.12.) */
static H5I_type_t object_type(hid_t loc, const char *path)
{
    hid_t obj = H5Oopen(loc, path, H5P_DEFAULT);
    if (obj < 0) return H5I_BADID;
    H5I_type_t t = H5Iget_type(obj);
    H5_CHECK(H5Oclose(obj));
    return t;
}

/* The links of a group, sorted by key and then name. */
typedef struct {
    char *name;
    int key;
} link_entry;

typedef struct {
    link_entry *items;
    size_t n, cap;
} link_list;

static herr_t collect_link(hid_t group, const char *name, const H5L_info_t *info, void *data)
{
    (void)group;
    (void)info;
    link_list *l = data;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 32;
        link_entry *grown = realloc(l->items, l->cap * sizeof *grown);
        LADLE_CHECK(grown, "out of memory listing a group");
        l->items = grown;
    }
    l->items[l->n].name = dup_string(name);
    l->items[l->n].key = INT_MAX;
    l->n++;
    return 0;
}

static int by_key_then_name(const void *a, const void *b)
{
    const link_entry *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* The links of the group at path (none if it is missing or not a group). */
static link_list list_group(hid_t file, const char *path)
{
    link_list l = {NULL, 0, 0};
    if (!path_exists(file, path) || object_type(file, path) != H5I_GROUP) return l;
    hid_t g = H5Gopen2(file, path, H5P_DEFAULT);
    H5_CHECK(g);
    hsize_t idx = 0;
    H5_CHECK(H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_link, &l));
    H5_CHECK(H5Gclose(g));
    return l;
}

static void free_links(link_list *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->items[i].name);
    free(l->items);
}

/* ---- what a file holds ------------------------------------------------------------- */

typedef struct {
    char *path;                /* from the root: "shared/wte", "experts/h.0.ffn.w1/U" */
    int ndim;
    hsize_t dims[MAX_DIMS];
    char dtype[16];
    int expected_ndim;         /* > 0 and != the shape: what the stored configuration implies */
    hsize_t expected[MAX_DIMS];
} tensor_info;

typedef struct {
    char *name, *source;
    long long train_docs, train_bytes, valid_docs, valid_bytes;   /* -1: missing */
} domain_info;

typedef struct {
    const char *path;
    char *format;
    long version;
    int is_corpus;

    /* a model file */
    char *kind;                /* the stored kind: dense, soup, instantiated */
    int optim;                 /* has /optim: a training checkpoint */
    long optim_step;
    unsigned long long optim_floats;
    long step, world_size, seed;          /* -1: absent */
    char *ladle_version, *config, *source;
    int cfg_ok;
    char cfg_err[256];
    ladle_config cfg;
    ladle_model model;         /* from cfg when cfg_ok */
    char **domains;
    int n_domains;
    double *h, *alpha;
    int n_h, n_alpha;
    tensor_info *tensors;
    int n_tensors, cap_tensors;
    unsigned long long n_shared, n_bank, n_router;

    /* a corpus */
    unsigned long long corpus_seed, max_doc_bytes, max_domain_bytes;
    int has_corpus_seed, has_max_doc, has_max_domain;
    double valid_fraction;
    int has_valid_fraction;
    domain_info *corpus_domains, *sources;
    int n_corpus_domains, n_sources;
    int has_clusters;
    long k, dim, ngram, buckets;   /* -1: absent */
    unsigned long long cluster_seed;
    int has_cluster_seed;
} file_info;

static const char *const ROUTER_TENSORS[4] = {"router.w1", "router.b1", "router.w2", "router.b2"};

/* Where a tensor sorts within /shared, /experts or /router: the model's table order (the
 * flat vector's), or the router's; unknown names last. */
static int order_key(const file_info *fi, const char *top, const char *name)
{
    if (!strcmp(top, "router")) {
        for (int i = 0; i < 4; i++)
            if (!strcmp(name, ROUTER_TENSORS[i])) return i;
        return INT_MAX;
    }
    if (!fi->cfg_ok) return INT_MAX;
    const ladle_tensor *t = ladle_model_tensor(&fi->model, name);
    return t ? (int)(t - fi->model.tensors) : INT_MAX;
}

/* The shape the stored configuration implies for top/tensor[/factor] (ckpt.h's layout),
 * as a count of dimensions, or 0 when it implies none. */
static int expected_shape(const file_info *fi, const char *top, const char *tensor, const char *factor,
                          hsize_t *dims)
{
    if (!fi->cfg_ok) return 0;
    const ladle_config *c = &fi->cfg;
    if (!strcmp(top, "router")) {
        hsize_t H = (hsize_t)c->router_hidden, n = (hsize_t)c->experts, k = (hsize_t)fi->n_domains;
        if (factor) return 0;
        if (!strcmp(tensor, "router.w1")) { dims[0] = H; dims[1] = k; return 2; }
        if (!strcmp(tensor, "router.b1")) { dims[0] = H; return 1; }
        if (!strcmp(tensor, "router.w2")) { dims[0] = n; dims[1] = H; return 2; }
        if (!strcmp(tensor, "router.b2")) { dims[0] = n; return 1; }
        return 0;
    }
    const ladle_tensor *t = ladle_model_tensor(&fi->model, tensor);
    if (!t) return 0;
    if (!strcmp(top, "shared") && !factor) {
        for (int i = 0; i < t->ndim; i++) dims[i] = (hsize_t)t->shape[i];
        return t->ndim;
    }
    if (strcmp(top, "experts") != 0) return 0;
    dims[0] = (hsize_t)c->experts;
    if (!factor) {   /* dense experts: [n, tensor shape] */
        for (int i = 0; i < t->ndim; i++) dims[1 + i] = (hsize_t)t->shape[i];
        return 1 + t->ndim;
    }
    if (t->ndim != 2) return 0;
    if (!strcmp(factor, "U")) dims[1] = (hsize_t)t->shape[0];
    else if (!strcmp(factor, "V")) dims[1] = (hsize_t)t->shape[1];
    else return 0;
    dims[2] = (hsize_t)c->expert_rank;
    return 3;
}

static void add_tensor(file_info *fi, const tensor_info *t)
{
    if (fi->n_tensors == fi->cap_tensors) {
        fi->cap_tensors = fi->cap_tensors ? 2 * fi->cap_tensors : 64;
        tensor_info *grown = realloc(fi->tensors, (size_t)fi->cap_tensors * sizeof *grown);
        LADLE_CHECK(grown, "out of memory listing tensors");
        fi->tensors = grown;
    }
    fi->tensors[fi->n_tensors++] = *t;
}

/* The datasets under dir (recursively, a few levels), returning their element count.
 * record: also list them in fi->tensors, with the shape the configuration implies. top is
 * the parameter group (shared, experts, router) and tensor the tensor being walked, set
 * one level below top. */
static unsigned long long walk(file_info *fi, hid_t file, const char *dir, const char *top, const char *tensor,
                               int depth, int record)
{
    link_list l = list_group(file, dir);
    if (depth == 1)
        for (size_t i = 0; i < l.n; i++) l.items[i].key = order_key(fi, top, l.items[i].name);
    qsort(l.items, l.n, sizeof *l.items, by_key_then_name);
    unsigned long long total = 0;
    for (size_t i = 0; i < l.n; i++) {
        char *path = join_path(dir, l.items[i].name);
        H5I_type_t type = object_type(file, path);
        if (type == H5I_GROUP && depth < 4) {
            total += walk(fi, file, path, top, depth == 1 ? l.items[i].name : tensor, depth + 1, record);
            free(path);
        } else if (type == H5I_DATASET) {
            tensor_info t;
            memset(&t, 0, sizeof t);
            hid_t dset = H5Dopen2(file, path, H5P_DEFAULT);
            H5_CHECK(dset);
            dataset_shape(dset, &t.ndim, t.dims, t.dtype, sizeof t.dtype);
            H5_CHECK(H5Dclose(dset));
            total += n_elements(t.ndim, t.dims);
            if (record) {
                t.path = path;
                const char *name = depth == 1 ? l.items[i].name : tensor;
                const char *factor = depth == 2 ? l.items[i].name : NULL;
                int e = depth <= 2 ? expected_shape(fi, top, name, factor, t.expected) : 0;
                int same = e == t.ndim;
                for (int d = 0; same && d < e; d++) same = t.expected[d] == t.dims[d];
                t.expected_ndim = same ? 0 : e;
                add_tensor(fi, &t);
            } else free(path);
        } else free(path);
    }
    free_links(&l);
    return total;
}

static void gather_model(file_info *fi, hid_t file)
{
    fi->kind = ladle_h5_read_string_attr(file, "kind");
    if (ladle_h5_read_long_attr(file, "step", &fi->step) != 0) fi->step = -1;
    if (ladle_h5_read_long_attr(file, "world_size", &fi->world_size) != 0) fi->world_size = -1;
    if (ladle_h5_read_long_attr(file, "seed", &fi->seed) != 0) fi->seed = -1;
    fi->ladle_version = ladle_h5_read_string_attr(file, "ladle_version");
    fi->config = ladle_h5_read_string_attr(file, "config");
    fi->source = ladle_h5_read_string_attr(file, "source");
    fi->domains = ladle_h5_read_strings_attr(file, "domains", &fi->n_domains);
    fi->h = attr_doubles(file, "h", &fi->n_h);
    fi->alpha = attr_doubles(file, "alpha", &fi->n_alpha);

    /* the typed configuration orders the tensors and implies their shapes */
    if (!fi->config) snprintf(fi->cfg_err, sizeof fi->cfg_err, "no config attribute");
    else if (ladle_config_from_text(&fi->cfg, fi->config, fi->cfg_err, sizeof fi->cfg_err) == 0
             && ladle_config_validate(&fi->cfg, fi->cfg_err, sizeof fi->cfg_err) == 0) {
        fi->cfg_ok = 1;
        ladle_model_create(&fi->model, &fi->cfg);
    }

    fi->n_shared = walk(fi, file, "shared", "shared", NULL, 1, 1);
    fi->n_bank = walk(fi, file, "experts", "experts", NULL, 1, 1);
    fi->n_router = walk(fi, file, "router", "router", NULL, 1, 1);
    fi->optim_step = -1;
    if (path_exists(file, "optim") && object_type(file, "optim") == H5I_GROUP) {
        fi->optim = 1;
        hid_t g = H5Gopen2(file, "optim", H5P_DEFAULT);
        H5_CHECK(g);
        if (ladle_h5_read_long_attr(g, "step", &fi->optim_step) != 0) fi->optim_step = -1;
        H5_CHECK(H5Gclose(g));
        fi->optim_floats = walk(fi, file, "optim", "optim", NULL, 1, 0);
    }
}

/* The domains under a corpus group (/domains or /sources): sizes from the datasets'
 * extents (documents = offsets - 1), source from the group attribute. */
static domain_info *gather_domains(hid_t file, const char *group, int *n)
{
    link_list l = list_group(file, group);
    qsort(l.items, l.n, sizeof *l.items, by_key_then_name);
    domain_info *d = ladle_calloc(l.n ? l.n : 1, sizeof *d, "domains");
    *n = 0;
    for (size_t i = 0; i < l.n; i++) {
        char *path = join_path(group, l.items[i].name);
        if (object_type(file, path) == H5I_GROUP) {
            domain_info *x = &d[(*n)++];
            hid_t g = H5Gopen2(file, path, H5P_DEFAULT);
            H5_CHECK(g);
            x->name = dup_string(l.items[i].name);
            x->source = ladle_h5_read_string_attr(g, "source");
            x->train_bytes = vector_length(g, "train");
            x->valid_bytes = vector_length(g, "valid");
            long long to = vector_length(g, "train_offsets"), vo = vector_length(g, "valid_offsets");
            x->train_docs = to > 0 ? to - 1 : -1;
            x->valid_docs = vo > 0 ? vo - 1 : -1;
            H5_CHECK(H5Gclose(g));
        }
        free(path);
    }
    free_links(&l);
    return d;
}

static void gather_corpus(file_info *fi, hid_t file)
{
    fi->has_corpus_seed = attr_u64(file, "seed", &fi->corpus_seed) == 0;
    fi->has_max_doc = attr_u64(file, "max_doc_bytes", &fi->max_doc_bytes) == 0;
    fi->has_max_domain = attr_u64(file, "max_domain_bytes", &fi->max_domain_bytes) == 0;
    int n = 0;
    double *vf = attr_doubles(file, "valid_fraction", &n);
    fi->has_valid_fraction = vf && n == 1;
    if (fi->has_valid_fraction) fi->valid_fraction = vf[0];
    free(vf);
    fi->corpus_domains = gather_domains(file, "domains", &fi->n_corpus_domains);
    fi->sources = gather_domains(file, "sources", &fi->n_sources);
    fi->k = fi->dim = fi->ngram = fi->buckets = -1;
    if (path_exists(file, "clusters") && object_type(file, "clusters") == H5I_GROUP) {
        fi->has_clusters = 1;
        hid_t g = H5Gopen2(file, "clusters", H5P_DEFAULT);
        H5_CHECK(g);
        if (ladle_h5_read_long_attr(g, "k", &fi->k) != 0) fi->k = -1;
        if (ladle_h5_read_long_attr(g, "dim", &fi->dim) != 0) fi->dim = -1;
        if (ladle_h5_read_long_attr(g, "ngram", &fi->ngram) != 0) fi->ngram = -1;
        if (ladle_h5_read_long_attr(g, "buckets", &fi->buckets) != 0) fi->buckets = -1;
        fi->has_cluster_seed = attr_u64(g, "seed", &fi->cluster_seed) == 0;
        H5_CHECK(H5Gclose(g));
    }
}

static void free_domains(domain_info *d, int n)
{
    for (int i = 0; i < n; i++) {
        free(d[i].name);
        free(d[i].source);
    }
    free(d);
}

static void free_info(file_info *fi)
{
    free(fi->format);
    free(fi->kind);
    free(fi->ladle_version);
    free(fi->config);
    free(fi->source);
    ladle_h5_free_strings(fi->domains, fi->n_domains);
    free(fi->h);
    free(fi->alpha);
    for (int i = 0; i < fi->n_tensors; i++) free(fi->tensors[i].path);
    free(fi->tensors);
    if (fi->cfg_ok) ladle_model_free(&fi->model);
    free_domains(fi->corpus_domains, fi->n_corpus_domains);
    free_domains(fi->sources, fi->n_sources);
}

/* ---- output helpers ------------------------------------------------------------------ */

void ladle_json_string(FILE *out, const char *s)
{
    if (!s) { fputs("null", out); return; }
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(out, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", out);
        else if (*p == '\t') fputs("\\t", out);
        else if (*p < 0x20) fprintf(out, "\\u%04x", *p);
        else fputc(*p, out);
    }
    fputc('"', out);
}

/* JSON has no NaN or infinity: those become null. */
static void json_number(FILE *out, double v, const char *fmt)
{
    if (isfinite(v)) fprintf(out, fmt, v);
    else fputs("null", out);
}

static void json_long(FILE *out, long v)
{
    if (v < 0) fputs("null", out);
    else fprintf(out, "%ld", v);
}

static void print_shape(FILE *out, int ndim, const hsize_t *dims, int json)
{
    if (ndim < 0) { fputs(json ? "null" : "[?]", out); return; }
    fputc('[', out);
    for (int i = 0; i < ndim; i++) fprintf(out, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
    fputc(']', out);
}

static const char *model_kind_text(const char *kind)
{
    if (!kind) return "model (no kind attribute)";
    if (!strcmp(kind, "dense")) return "dense model";
    if (!strcmp(kind, "instantiated")) return "instantiated model";
    return kind;   /* "soup", or whatever a newer ladle wrote */
}

static const char *experts_on_text(int v) { return v ? "blocks" : "all"; }
static const char *alpha_text(int v) { return v ? "softmax" : "raw"; }

/* ---- text -------------------------------------------------------------------------- */

static void print_model_text(const file_info *fi, FILE *out)
{
    int instantiated = fi->kind && !strcmp(fi->kind, "instantiated");
    fprintf(out, "file: %s\n", fi->path);
    if (fi->optim) fprintf(out, "kind: training checkpoint (%s)\n", model_kind_text(fi->kind));
    else fprintf(out, "kind: %s\n", model_kind_text(fi->kind));
    fprintf(out, "format: %s, version %ld\n", fi->format, fi->version);
    if (fi->step >= 0) fprintf(out, "step: %ld\n", fi->step);
    if (fi->world_size >= 0) fprintf(out, "world size at save: %ld\n", fi->world_size);
    fprintf(out, "ladle version: %s\n", fi->ladle_version ? fi->ladle_version : "(not recorded)");
    if (fi->seed >= 0) fprintf(out, "seed: %ld\n", fi->seed);
    if (fi->cfg_ok) {
        const ladle_config *c = &fi->cfg;
        fprintf(out, "model: layers %d, dim %d, heads %d, context %d\n", c->layers, c->dim, c->heads, c->context);
        if (strcmp(c->ffn, "dense") != 0)   /* routed FFN sites */
            fprintf(out, "ffn sites: %s (moe: %d experts, top-%d; smear/tag: %d experts, segment %d)\n", c->ffn,
                    c->moe_experts, c->moe_top_k, c->smear_experts, c->smear_segment);
        if (c->experts > 0) {
            fprintf(out, "soup: experts %d, rank %d (%s), experts_on %s\n", c->experts, c->expert_rank,
                    c->expert_rank > 0 ? "low-rank U V^T" : "dense experts", experts_on_text(c->experts_on));
            fprintf(out, "router: hidden %d, alpha %s", c->router_hidden, alpha_text(c->router_alpha));
            if (c->router_scale != 1.0f) fprintf(out, " x %g", (double)c->router_scale);
            fprintf(out, "\n");
        } else if (instantiated) {
            /* instantiate stores its soup's configuration with soup.experts = 0: the file is dense */
            fprintf(out, "soup: none (merged from a soup of %d experts: see source, h and alpha)\nrouter: none\n",
                    fi->n_alpha);
        } else {
            fprintf(out, "soup: none (soup.experts = 0)\nrouter: none\n");
        }
        fprintf(out, "training: steps %d, batch %d, lr %g, corpus %s\n", c->steps, c->batch, c->lr, c->corpus);
    } else {
        fprintf(out, "config: unreadable (%s)\n", fi->cfg_err);
    }
    fprintf(out, "parameters: shared %llu, bank %llu, router %llu, total %llu", fi->n_shared, fi->n_bank, fi->n_router,
            fi->n_shared + fi->n_bank + fi->n_router);
    if (fi->cfg_ok && fi->n_shared != fi->model.n_params)
        fprintf(out, " (the stored configuration implies shared %zu)", fi->model.n_params);
    fputc('\n', out);
    fprintf(out, "domains:");
    for (int d = 0; d < fi->n_domains; d++) fprintf(out, "%s %s", d ? "," : "", fi->domains[d]);
    fprintf(out, "%s\n", fi->n_domains ? "" : " none");
    if (instantiated || fi->source) fprintf(out, "source: %s\n", fi->source ? fi->source : "(not recorded)");
    if (fi->h) {
        fprintf(out, "h:");
        for (int d = 0; d < fi->n_h; d++)
            fprintf(out, "%s %s %.9g", d ? "," : "", d < fi->n_domains ? fi->domains[d] : "?", fi->h[d]);
        fputc('\n', out);
    }
    if (fi->alpha) {
        fprintf(out, "alpha:");
        for (int j = 0; j < fi->n_alpha; j++) fprintf(out, " %.9g", fi->alpha[j]);
        fputc('\n', out);
    }
    if (fi->optim) {
        fprintf(out, "optim: AdamW moments m and v (%llu floats)", fi->optim_floats);
        if (fi->optim_step >= 0) fprintf(out, " at step %ld", fi->optim_step);
        fputc('\n', out);
    }
    int width = 0;
    for (int i = 0; i < fi->n_tensors; i++) {
        int w = (int)strlen(fi->tensors[i].path);
        if (w > width) width = w;
    }
    fprintf(out, "tensors: %d\n", fi->n_tensors);
    for (int i = 0; i < fi->n_tensors; i++) {
        const tensor_info *t = &fi->tensors[i];
        fprintf(out, "  %-*s  ", width, t->path);
        print_shape(out, t->ndim, t->dims, 0);
        if (strcmp(t->dtype, "float32") != 0) fprintf(out, " %s", t->dtype);
        if (t->expected_ndim > 0) {
            fputs("  (the stored configuration implies ", out);
            print_shape(out, t->expected_ndim, t->expected, 0);
            fputc(')', out);
        }
        fputc('\n', out);
    }
}

static void print_count(FILE *out, long long v, int width)
{
    if (v < 0) fprintf(out, " %*s", width, "?");
    else fprintf(out, " %*lld", width, v);
}

static void print_domain_table(FILE *out, const domain_info *d, int n)
{
    int width = 6;
    for (int i = 0; i < n; i++) {
        int w = (int)strlen(d[i].name);
        if (w > width) width = w;
    }
    fprintf(out, "  %-*s %10s %10s %12s %10s %12s  source\n", width, "domain", "documents", "train docs", "train bytes",
            "valid docs", "valid bytes");
    long long tot[4] = {0, 0, 0, 0};
    for (int i = 0; i < n; i++) {
        const domain_info *x = &d[i];
        long long docs = x->train_docs >= 0 && x->valid_docs >= 0 ? x->train_docs + x->valid_docs : -1;
        long long v[4] = {x->train_docs, x->train_bytes, x->valid_docs, x->valid_bytes};
        fprintf(out, "  %-*s", width, x->name);
        print_count(out, docs, 10);
        print_count(out, v[0], 10);
        print_count(out, v[1], 12);
        print_count(out, v[2], 10);
        print_count(out, v[3], 12);
        fprintf(out, "  %s\n", x->source ? x->source : "?");
        for (int j = 0; j < 4; j++) tot[j] += v[j] > 0 ? v[j] : 0;
    }
    fprintf(out, "  %-*s", width, "total");
    print_count(out, tot[0] + tot[2], 10);
    print_count(out, tot[0], 10);
    print_count(out, tot[1], 12);
    print_count(out, tot[2], 10);
    print_count(out, tot[3], 12);
    fputc('\n', out);
}

static void print_corpus_text(const file_info *fi, FILE *out)
{
    fprintf(out, "file: %s\n", fi->path);
    fprintf(out, "kind: %s\n", fi->has_clusters ? "clustered corpus" : "corpus");
    fprintf(out, "format: %s, version %ld\n", fi->format, fi->version);
    fprintf(out, "prep:");
    if (fi->has_corpus_seed) fprintf(out, " seed %llu,", fi->corpus_seed);
    if (fi->has_valid_fraction) fprintf(out, " valid_fraction %.15g,", fi->valid_fraction);
    if (fi->has_max_doc) fprintf(out, " max_doc_bytes %llu,", fi->max_doc_bytes);
    if (fi->has_max_domain) fprintf(out, " max_domain_bytes %llu", fi->max_domain_bytes);
    fputc('\n', out);
    fprintf(out, "domains: %d\n", fi->n_corpus_domains);
    print_domain_table(out, fi->corpus_domains, fi->n_corpus_domains);
    if (fi->has_clusters) {
        fprintf(out, "clusters: k %ld, dim %ld, ngram %ld, buckets %ld", fi->k, fi->dim, fi->ngram, fi->buckets);
        if (fi->has_cluster_seed) fprintf(out, ", seed %llu", fi->cluster_seed);
        fputc('\n', out);
    } else fprintf(out, "clusters: none\n");
    if (fi->n_sources > 0) {
        fprintf(out, "sources: %d\n", fi->n_sources);
        print_domain_table(out, fi->sources, fi->n_sources);
    }
}

/* ---- JSON -------------------------------------------------------------------------- */

static void json_config(FILE *out, const char *text)
{
    /* the stored "key = value" lines, values kept as strings (exactly as stored) */
    fputc('{', out);
    int first = 1;
    for (const char *line = text; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        const char *eq = memchr(line, '=', len);
        if (eq && line[0] != '#') {
            const char *k0 = line, *k1 = eq, *v0 = eq + 1, *v1 = line + len;
            while (k0 < k1 && (*k0 == ' ' || *k0 == '\t')) k0++;
            while (k1 > k0 && (k1[-1] == ' ' || k1[-1] == '\t')) k1--;
            while (v0 < v1 && (*v0 == ' ' || *v0 == '\t')) v0++;
            while (v1 > v0 && (v1[-1] == ' ' || v1[-1] == '\t' || v1[-1] == '\r')) v1--;
            char *key = ladle_malloc((size_t)(k1 - k0) + 1, "config key");
            char *value = ladle_malloc((size_t)(v1 - v0) + 1, "config value");
            memcpy(key, k0, (size_t)(k1 - k0));
            key[k1 - k0] = '\0';
            memcpy(value, v0, (size_t)(v1 - v0));
            value[v1 - v0] = '\0';
            fputs(first ? "" : ", ", out);
            ladle_json_string(out, key);
            fputs(": ", out);
            ladle_json_string(out, value);
            first = 0;
            free(key);
            free(value);
        }
        line = end ? end + 1 : NULL;
    }
    fputc('}', out);
}

static void json_doubles(FILE *out, const double *v, int n)
{
    fputc('[', out);
    for (int i = 0; i < n; i++) {
        if (i) fputs(", ", out);
        json_number(out, v[i], "%.9g");
    }
    fputc(']', out);
}

static void print_model_json(const file_info *fi, FILE *out)
{
    fputs("{\"file\": ", out);
    ladle_json_string(out, fi->path);
    fputs(", \"kind\": ", out);
    ladle_json_string(out, fi->optim ? "training checkpoint" : model_kind_text(fi->kind));
    fputs(", \"model_kind\": ", out);
    ladle_json_string(out, fi->kind);
    fprintf(out, ", \"training_checkpoint\": %s, \"format\": ", fi->optim ? "true" : "false");
    ladle_json_string(out, fi->format);
    fprintf(out, ", \"format_version\": %ld, \"step\": ", fi->version);
    json_long(out, fi->step);
    fputs(", \"world_size\": ", out);
    json_long(out, fi->world_size);
    fputs(", \"ladle_version\": ", out);
    ladle_json_string(out, fi->ladle_version);
    fputs(", \"seed\": ", out);
    json_long(out, fi->seed);
    fputs(",\n \"config\": ", out);
    if (fi->config) json_config(out, fi->config);
    else fputs("null", out);
    if (fi->cfg_ok) {
        const ladle_config *c = &fi->cfg;
        fprintf(out, ",\n \"model\": {\"layers\": %d, \"dim\": %d, \"heads\": %d, \"context\": %d}", c->layers, c->dim,
                c->heads, c->context);
        if (c->experts > 0)
            fprintf(out, ",\n \"soup\": {\"experts\": %d, \"rank\": %d, \"experts_on\": \"%s\"},"
                         "\n \"router\": {\"hidden\": %d, \"alpha\": \"%s\"}",
                    c->experts, c->expert_rank, experts_on_text(c->experts_on), c->router_hidden,
                    alpha_text(c->router_alpha));
        else fputs(",\n \"soup\": null, \"router\": null", out);
    } else {
        fputs(",\n \"model\": null, \"soup\": null, \"router\": null, \"config_error\": ", out);
        ladle_json_string(out, fi->cfg_err);
    }
    fprintf(out, ",\n \"parameters\": {\"shared\": %llu, \"bank\": %llu, \"router\": %llu, \"total\": %llu}",
            fi->n_shared, fi->n_bank, fi->n_router, fi->n_shared + fi->n_bank + fi->n_router);
    fputs(",\n \"domains\": [", out);
    for (int d = 0; d < fi->n_domains; d++) {
        if (d) fputs(", ", out);
        ladle_json_string(out, fi->domains[d]);
    }
    fputc(']', out);
    if (fi->source) {
        fputs(", \"source\": ", out);
        ladle_json_string(out, fi->source);
    }
    if (fi->h) {
        fputs(", \"h\": ", out);
        json_doubles(out, fi->h, fi->n_h);
    }
    if (fi->alpha) {
        fputs(", \"alpha\": ", out);
        json_doubles(out, fi->alpha, fi->n_alpha);
    }
    if (fi->optim) {
        fputs(",\n \"optim\": {\"step\": ", out);
        json_long(out, fi->optim_step);
        fprintf(out, ", \"floats\": %llu}", fi->optim_floats);
    } else fputs(",\n \"optim\": null", out);
    fputs(",\n \"tensors\": [", out);
    for (int i = 0; i < fi->n_tensors; i++) {
        const tensor_info *t = &fi->tensors[i];
        fputs(i ? ",\n  {\"name\": " : "\n  {\"name\": ", out);
        ladle_json_string(out, t->path);
        fputs(", \"shape\": ", out);
        print_shape(out, t->ndim, t->dims, 1);
        fputs(", \"dtype\": ", out);
        ladle_json_string(out, t->dtype);
        if (t->expected_ndim > 0) {
            fputs(", \"expected_shape\": ", out);
            print_shape(out, t->expected_ndim, t->expected, 1);
        }
        fputc('}', out);
    }
    fputs("]}\n", out);
}

static void json_count(FILE *out, long long v)
{
    if (v < 0) fputs("null", out);
    else fprintf(out, "%lld", v);
}

static void json_domains(FILE *out, const domain_info *d, int n)
{
    fputc('[', out);
    for (int i = 0; i < n; i++) {
        const domain_info *x = &d[i];
        fputs(i ? ",\n  {\"name\": " : "\n  {\"name\": ", out);
        ladle_json_string(out, x->name);
        fputs(", \"source\": ", out);
        ladle_json_string(out, x->source);
        fputs(", \"documents\": ", out);
        json_count(out, x->train_docs >= 0 && x->valid_docs >= 0 ? x->train_docs + x->valid_docs : -1);
        fputs(", \"train_docs\": ", out);
        json_count(out, x->train_docs);
        fputs(", \"train_bytes\": ", out);
        json_count(out, x->train_bytes);
        fputs(", \"valid_docs\": ", out);
        json_count(out, x->valid_docs);
        fputs(", \"valid_bytes\": ", out);
        json_count(out, x->valid_bytes);
        fputc('}', out);
    }
    fputc(']', out);
}

static void print_corpus_json(const file_info *fi, FILE *out)
{
    fputs("{\"file\": ", out);
    ladle_json_string(out, fi->path);
    fputs(", \"kind\": ", out);
    ladle_json_string(out, fi->has_clusters ? "clustered corpus" : "corpus");
    fputs(", \"format\": ", out);
    ladle_json_string(out, fi->format);
    fprintf(out, ", \"format_version\": %ld,\n \"prep\": {", fi->version);
    const char *sep = "";
    if (fi->has_corpus_seed) { fprintf(out, "\"seed\": %llu", fi->corpus_seed); sep = ", "; }
    if (fi->has_valid_fraction) {
        fprintf(out, "%s\"valid_fraction\": ", sep);
        json_number(out, fi->valid_fraction, "%.15g");
        sep = ", ";
    }
    if (fi->has_max_doc) { fprintf(out, "%s\"max_doc_bytes\": %llu", sep, fi->max_doc_bytes); sep = ", "; }
    if (fi->has_max_domain) fprintf(out, "%s\"max_domain_bytes\": %llu", sep, fi->max_domain_bytes);
    fputs("},\n \"domains\": ", out);
    json_domains(out, fi->corpus_domains, fi->n_corpus_domains);
    if (fi->has_clusters) {
        fprintf(out, ",\n \"clusters\": {\"k\": ");
        json_long(out, fi->k);
        fputs(", \"dim\": ", out);
        json_long(out, fi->dim);
        fputs(", \"ngram\": ", out);
        json_long(out, fi->ngram);
        fputs(", \"buckets\": ", out);
        json_long(out, fi->buckets);
        if (fi->has_cluster_seed) fprintf(out, ", \"seed\": %llu", fi->cluster_seed);
        fputc('}', out);
    } else fputs(",\n \"clusters\": null", out);
    fputs(",\n \"sources\": ", out);
    json_domains(out, fi->sources, fi->n_sources);
    fputs("}\n", out);
}

/* ---- --dump -------------------------------------------------------------------------- */

/* Print a numeric dataset's values in row-major order, read a block of rows at a time so
 * that a large tensor never has to fit in memory twice. float32 with %.9g: nine
 * significant digits identify a float32 exactly. */
static void dump_dataset(hid_t file, const char *file_path, const char *name, int json, int rank, FILE *out)
{
    /* every rank makes the same checks, so a bad name is a clean usage error everywhere */
    if (!path_exists(file, name))
        reject(file, "inspect: '%s' has no tensor '%s' (run 'ladle inspect %s' for the list)", file_path, name, file_path);
    H5I_type_t type = object_type(file, name);
    if (type == H5I_GROUP) {
        link_list l = list_group(file, name);
        char members[512] = "";
        for (size_t i = 0; i < l.n && i < 8; i++) {   /* a few names suffice as a hint */
            size_t used = strlen(members);
            snprintf(members + used, sizeof members - used, "%s%.48s%s", i ? ", " : "", l.items[i].name,
                     i == 7 && l.n > 8 ? ", ..." : "");
        }
        free_links(&l);
        reject(file, "inspect: '%s' in '%s' is a group, not a tensor (it holds: %s)", name, file_path,
               members[0] ? members : "nothing");
    }
    if (type != H5I_DATASET) reject(file, "inspect: '%s' in '%s' is not a dataset", name, file_path);
    hid_t dset = H5Dopen2(file, name, H5P_DEFAULT);
    H5_CHECK(dset);
    int ndim = 0;
    hsize_t dims[MAX_DIMS];
    char dtype[16];
    dataset_shape(dset, &ndim, dims, dtype, sizeof dtype);
    hid_t ftype = H5Dget_type(dset);
    H5_CHECK(ftype);
    H5T_class_t cls = H5Tget_class(ftype);
    size_t size = H5Tget_size(ftype);
    int is_signed = H5Tget_sign(ftype) != H5T_SGN_NONE;
    H5_CHECK(H5Tclose(ftype));
    if ((cls != H5T_FLOAT && cls != H5T_INTEGER) || ndim < 0) {
        H5_CHECK(H5Dclose(dset));
        reject(file, "inspect: '%s' in '%s' is not a numeric tensor (%s)", name, file_path, dtype);
    }
    if (rank != 0) {
        H5_CHECK(H5Dclose(dset));
        return;
    }
    /* memory type: float32 stays float (exact %.9g), wider floats double, integers 64-bit */
    enum { F32, F64, I64, U64 } kind = cls == H5T_FLOAT ? (size <= 4 ? F32 : F64) : (is_signed ? I64 : U64);
    hid_t mtype = kind == F32 ? H5T_NATIVE_FLOAT : kind == F64 ? H5T_NATIVE_DOUBLE
                : kind == I64 ? H5T_NATIVE_LLONG : H5T_NATIVE_ULLONG;
    if (json) {
        fputs("{\"file\": ", out);
        ladle_json_string(out, file_path);
        fputs(", \"tensor\": ", out);
        ladle_json_string(out, name);
        fputs(", \"dtype\": ", out);
        ladle_json_string(out, dtype);
        fputs(", \"shape\": ", out);
        print_shape(out, ndim, dims, 1);
        fputs(", \"values\": [", out);
    }
    /* blocks of whole rows of the first dimension (a scalar is one block of one) */
    size_t row = 1;
    for (int i = 1; i < ndim; i++) row *= (size_t)dims[i];
    size_t rows = ndim > 0 ? (size_t)dims[0] : 1;
    size_t per = row >= ((size_t)1 << 20) ? 1 : ((size_t)1 << 20) / (row ? row : 1);
    double *buf = ladle_malloc(per * row * 8, "dump buffer");   /* 8 bytes fit every memory type */
    hid_t fspace = H5Dget_space(dset);
    H5_CHECK(fspace);
    size_t printed = 0;
    for (size_t r0 = 0; r0 < rows && row > 0; r0 += per) {
        size_t nr = rows - r0 < per ? rows - r0 : per, count = nr * row;
        hid_t mspace;
        if (ndim == 0) {
            mspace = H5Screate(H5S_SCALAR);
            H5_CHECK(H5Sselect_all(fspace));
        } else {
            hsize_t start[MAX_DIMS] = {0}, cnt[MAX_DIMS];
            for (int i = 0; i < ndim; i++) cnt[i] = dims[i];
            start[0] = (hsize_t)r0;
            cnt[0] = (hsize_t)nr;
            H5_CHECK(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, cnt, NULL));
            hsize_t mdims[1] = {(hsize_t)count};
            mspace = H5Screate_simple(1, mdims, NULL);
        }
        H5_CHECK(mspace);
        H5_CHECK(H5Dread(dset, mtype, mspace, fspace, H5P_DEFAULT, buf));
        H5_CHECK(H5Sclose(mspace));
        for (size_t i = 0; i < count; i++, printed++) {
            if (json && printed) fputs(printed % 8 ? ", " : ",\n", out);
            switch (kind) {
            case F32: {
                double v = ((const float *)buf)[i];
                if (json) json_number(out, v, "%.9g");
                else fprintf(out, "%.9g\n", v);
                break;
            }
            case F64: {
                double v = buf[i];
                if (json) json_number(out, v, "%.17g");
                else fprintf(out, "%.17g\n", v);
                break;
            }
            case I64: fprintf(out, json ? "%lld" : "%lld\n", ((const long long *)buf)[i]); break;
            case U64: fprintf(out, json ? "%llu" : "%llu\n", ((const unsigned long long *)buf)[i]); break;
            }
        }
    }
    if (json) fputs("]}\n", out);
    free(buf);
    H5_CHECK(H5Sclose(fspace));
    H5_CHECK(H5Dclose(dset));
}

/* ---- opening ------------------------------------------------------------------------- */

/* Open path read-only with the serial driver; anything that is not an HDF5 file is a
 * usage error naming it (the same checks, and messages, as ladle_h5_open_ladle_file). */
static hid_t open_any_ladle_file(const char *path, char **format, long *version, int *is_corpus)
{
    ladle_h5_quiet();
    struct stat st;
    if (stat(path, &st) != 0) ladle_usage_error("inspect: cannot open '%s': %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) ladle_usage_error("inspect: cannot open '%s': it is a directory", path);
    if (access(path, R_OK) != 0) ladle_usage_error("inspect: cannot open '%s': %s", path, strerror(errno));
    if (H5Fis_hdf5(path) <= 0)
        ladle_usage_error("inspect: '%s' is not an HDF5 file (expected a ladle corpus or model file)", path);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5_CHECK(fapl);
    H5_CHECK(H5Pset_file_locking(fapl, 0, 1));
    H5_CHECK(H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG));
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5_CHECK(H5Pclose(fapl));
    if (file < 0) ladle_usage_error("inspect: '%s' is not a readable HDF5 file (damaged or truncated?)", path);
    *format = ladle_h5_read_string_attr(file, "format");
    if (!*format) reject(file, "inspect: '%s' is an HDF5 file but not a ladle file (no format attribute)", path);
    long max_version;
    if (!strcmp(*format, LADLE_CORPUS_FORMAT)) { *is_corpus = 1; max_version = LADLE_CORPUS_VERSION; }
    else if (!strcmp(*format, LADLE_CKPT_FORMAT)) { *is_corpus = 0; max_version = LADLE_CKPT_VERSION; }
    else {
        char found[128];
        snprintf(found, sizeof found, "%.100s", *format);
        free(*format);
        reject(file, "inspect: '%s' is not a ladle file (found format '%s'; expected '%s' or '%s')", path, found,
               LADLE_CORPUS_FORMAT, LADLE_CKPT_FORMAT);
    }
    if (ladle_h5_read_long_attr(file, "format_version", version) != 0 || *version < 1 || *version > max_version) {
        free(*format);
        reject(file, "inspect: '%s': unsupported format_version %ld of %s (this ladle reads 1 to %ld)", path, *version,
               *is_corpus ? LADLE_CORPUS_FORMAT : LADLE_CKPT_FORMAT, max_version);
    }
    return file;
}

int ladle_inspect(const char *path, const ladle_inspect_options *options, int rank, FILE *out)
{
    file_info fi;
    memset(&fi, 0, sizeof fi);
    fi.path = path;
    hid_t file = open_any_ladle_file(path, &fi.format, &fi.version, &fi.is_corpus);
    if (options->dump) {
        const char *name = options->dump;
        while (*name == '/') name++;   /* "/shared/wte" and "shared/wte" are the same */
        dump_dataset(file, path, name, options->json, rank, out);
    } else {
        if (fi.is_corpus) gather_corpus(&fi, file);
        else gather_model(&fi, file);
        if (rank == 0) {
            if (fi.is_corpus) (options->json ? print_corpus_json : print_corpus_text)(&fi, out);
            else (options->json ? print_model_json : print_model_text)(&fi, out);
        }
    }
    free_info(&fi);
    H5_CHECK(H5Fclose(file));
    if (rank == 0) LADLE_CHECK(fflush(out) == 0, "cannot write the output: %s", strerror(errno));
    return 0;
}
