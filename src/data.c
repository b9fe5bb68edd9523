/* data: read a corpus file (layout in data.h and prep.c) and cut training and
 * validation windows out of it.
 *
 * Every rank opens the file with the MPI-IO driver and reads with independent reads
 * (collective metadata reads are broken in HDF5 1.10.5-1.10.8). Streamed, the default, a
 * rank reads each window it needs as one hyperslab of context + 1 bytes when it needs it:
 * any dataset layout works, nothing is mapped (so neither RSS nor the page cache a rank
 * pins grows with the corpus), and 16 such reads cost well under 1 % of a step
 * (test/bench/bench_data). Every check on the file's structure is a usage error that all
 * ranks reach identically (they all read the same bytes), so they all exit cleanly. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "ladle/data.h"
#include "ladle/error.h"
#include "ladle/h5io.h"
#include "ladle/rng.h"

#include <hdf5.h>

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>


/* The corpus being opened: reject() needs both to close the file before exiting. */
typedef struct {
    const char *path;
    hid_t file;
    ladle_corpus *corpus;
} corpus_reader;

/* The file access list uses H5F_CLOSE_STRONG, so H5Fclose also closes any group or
 * dataset still open at the point of rejection. */
static void close_reader(void *reader)
{
    corpus_reader *r = reader;
    r->corpus->file = -1;   /* closed here, with everything in it */
    for (int i = 0; i < r->corpus->n_domains; i++) r->corpus->domains[i].streamed = 0;
    if (r->file >= 0) H5Fclose(r->file);
    ladle_corpus_free(r->corpus);
}

/* A problem with the file's contents: close everything, then a clean usage error. */
#define reject(r, ...) ladle_usage_error_cleanup(close_reader, (r), __VA_ARGS__)
/* A dataset whose data HDF5 cannot read back: the file lost it. */
#define reject_unreadable(r, domain, name) \
    reject((r), "corpus '%s' is damaged: '%s' of domain '%s' cannot be read (truncated file?)", (r)->path, (name), \
           (domain))

/* Open a one-dimensional dataset of elem_size-byte integers and return its length;
 * anything else is a damaged corpus. */
static hid_t open_vector(corpus_reader *r, hid_t group, const char *domain, const char *name,
                         size_t elem_size, size_t *length)
{
    htri_t exists = H5Lexists(group, name, H5P_DEFAULT);
    if (exists <= 0)
        reject(r, "corpus '%s' is damaged: domain '%s' has no '%s' dataset", r->path, domain, name);
    hid_t dset = H5Dopen2(group, name, H5P_DEFAULT);
    if (dset < 0)
        reject(r, "corpus '%s' is damaged: '%s' of domain '%s' is not a dataset", r->path, name, domain);
    hid_t type = H5Dget_type(dset);
    H5_CHECK(type);
    hid_t space = H5Dget_space(dset);
    H5_CHECK(space);
    int ok = H5Tget_class(type) == H5T_INTEGER && H5Tget_size(type) == elem_size
             && H5Sget_simple_extent_ndims(space) == 1;
    hsize_t dims[1] = {0};
    if (ok) H5_CHECK(H5Sget_simple_extent_dims(space, dims, NULL));
    H5_CHECK(H5Sclose(space));
    H5_CHECK(H5Tclose(type));
    if (!ok)
        reject(r, "corpus '%s' is damaged: '%s' of domain '%s' is not a vector of %zu-byte integers",
               r->path, name, domain, elem_size);
    *length = (size_t)dims[0];
    return dset;
}

/* Elements [at, at + n) of a one-dimensional dataset, independent I/O. Returns the
 * HDF5 status: a read that fails because the file lost its data (truncated) is the
 * caller's to report. */
static herr_t read_range(hid_t dset, hid_t mem_type, size_t at, size_t n, void *buf)
{
    hid_t fspace = H5Dget_space(dset);
    H5_CHECK(fspace);
    hsize_t start[1] = {at}, count[1] = {n};
    hid_t mspace = H5Screate_simple(1, count, NULL);
    H5_CHECK(mspace);
    H5_CHECK(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL));
    herr_t status = H5Dread(dset, mem_type, mspace, fspace, H5P_DEFAULT, buf);
    H5_CHECK(H5Sclose(mspace));
    H5_CHECK(H5Sclose(fspace));
    return status;
}

/* Read a whole uint8 dataset, in pieces, because MPI-IO counts are ints. */
static void read_bytes(corpus_reader *r, hid_t dset, const char *domain, const char *split, uint8_t *buf, size_t n)
{
    const size_t piece = (size_t)1 << 30;
    for (size_t at = 0; at < n; at += piece)
        if (read_range(dset, H5T_NATIVE_UINT8, at, n - at < piece ? n - at : piece, buf + at) < 0)
            reject_unreadable(r, domain, split);
}

/* Offsets must start at 0, never decrease and end at the split's length. Checked in
 * pieces of a bounded buffer, so that a streamed corpus never holds them all; into
 * `keep` ([n] or NULL) when the corpus is read into memory. */
static void check_offsets(corpus_reader *r, hid_t offsets, const char *domain, const char *name, size_t n,
                          size_t bytes, uint64_t *keep)
{
    const size_t piece = (size_t)1 << 16;
    uint64_t *buf = keep ? NULL : ladle_malloc(piece * sizeof(uint64_t), "document offsets");
    uint64_t prev = 0;
    int ok = 1;
    for (size_t at = 0; ok && at < n; at += piece) {
        size_t m = n - at < piece ? n - at : piece;
        uint64_t *v = keep ? keep + at : buf;
        if (read_range(offsets, H5T_NATIVE_UINT64, at, m, v) < 0) {
            free(buf);
            reject_unreadable(r, domain, name);
        }
        if (at == 0) ok = v[0] == 0;
        for (size_t i = 0; ok && i < m; i++) {
            ok = v[i] >= prev && v[i] <= bytes;
            prev = v[i];
        }
    }
    free(buf);
    if (ok && prev < bytes)
        reject(r, "corpus '%s' is damaged: '%s' of domain '%s' ends at byte %llu but its split holds %zu bytes",
               r->path, name, domain, (unsigned long long)prev, bytes);
    if (!ok)
        reject(r, "corpus '%s' is damaged: '%s' of domain '%s' points past the end of its split (%zu bytes) or "
               "does not rise from 0: the split is truncated or the offsets are wrong", r->path, name, domain, bytes);
}

/* One split of one domain: its length and document count, its offsets checked, and its
 * bytes and offsets read (memory) or its datasets kept open (streamed). */
static void open_split(corpus_reader *r, hid_t group, const char *domain, const char *split, ladle_corpus_read read,
                       size_t *bytes, size_t *docs, uint8_t **data, uint64_t **doc_offsets, hid_t *set,
                       hid_t *offsets_set)
{
    char offsets_name[32];
    snprintf(offsets_name, sizeof offsets_name, "%s_offsets", split);
    size_t n_offsets = 0;
    hid_t offsets = open_vector(r, group, domain, offsets_name, sizeof(uint64_t), &n_offsets);
    if (n_offsets == 0)
        reject(r, "corpus '%s' is damaged: '%s' of domain '%s' is empty", r->path, offsets_name, domain);
    *docs = n_offsets - 1;
    hid_t dset = open_vector(r, group, domain, split, 1, bytes);
    if (read == LADLE_CORPUS_MEMORY) *doc_offsets = ladle_malloc(n_offsets * sizeof(uint64_t), "document offsets");
    check_offsets(r, offsets, domain, offsets_name, n_offsets, *bytes, *doc_offsets);
    if (read == LADLE_CORPUS_MEMORY) {
        *data = ladle_malloc(*bytes ? *bytes : 1, "corpus split");
        read_bytes(r, dset, domain, split, *data, *bytes);
        H5_CHECK(H5Dclose(offsets));
        H5_CHECK(H5Dclose(dset));
    } else {
        /* the last byte, read now: a file cut short fails here, naming the dataset,
         * rather than in the middle of training */
        uint8_t last = 0;
        if (*bytes && read_range(dset, H5T_NATIVE_UINT8, *bytes - 1, 1, &last) < 0)
            reject_unreadable(r, domain, split);
        *set = dset;
        *offsets_set = offsets;
    }
}

void ladle_corpus_open_group(ladle_corpus *corpus, const char *path, const char *group, ladle_corpus_read read,
                             MPI_Comm comm)
{
    memset(corpus, 0, sizeof *corpus);
    corpus->file = -1;
    corpus_reader r = {path, -1, corpus};

    r.file = ladle_h5_open_ladle_file(path, "corpus", LADLE_CORPUS_FORMAT, LADLE_CORPUS_VERSION, comm);

    htri_t has_group = H5Lexists(r.file, group, H5P_DEFAULT);
    H5_CHECK(has_group);
    hid_t domains = has_group ? H5Gopen2(r.file, group, H5P_DEFAULT) : -1;
    if (domains < 0) reject(&r, "corpus '%s' has no %s", path, group);
    H5G_info_t info;
    H5_CHECK(H5Gget_info(domains, &info));
    if (info.nlinks == 0) reject(&r, "corpus '%s' has no %s", path, group);
    if (info.nlinks > (hsize_t)1 << 20) reject(&r, "corpus '%s' has too many %s (%llu)", path, group,
                                               (unsigned long long)info.nlinks);

    corpus->domains = ladle_calloc(info.nlinks, sizeof(ladle_domain), "corpus domains");
    for (hsize_t i = 0; i < info.nlinks; i++) {
        ladle_domain *d = &corpus->domains[i];
        /* the name index iterates in byte order of names: domains come out sorted */
        char name[256];
        ssize_t len = H5Lget_name_by_idx(domains, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name,
                                         H5P_DEFAULT);
        H5_CHECK(len);
        if ((size_t)len >= LADLE_NAME_MAX)
            reject(&r, "corpus '%s' has a domain name longer than %d bytes", path, LADLE_NAME_MAX - 1);
        memcpy(d->name, name, (size_t)len + 1);
        corpus->n_domains = (int)i + 1;   /* so that reject() frees what was read */

        hid_t g = H5Gopen2(domains, d->name, H5P_DEFAULT);
        if (g < 0) reject(&r, "corpus '%s' is damaged: %s/%s is not a group", path, group, d->name);
        d->streamed = read == LADLE_CORPUS_STREAM;
        open_split(&r, g, d->name, "train", read, &d->train_bytes, &d->train_docs, &d->train, &d->train_offsets,
                   &d->train_set, &d->train_offsets_set);
        open_split(&r, g, d->name, "valid", read, &d->valid_bytes, &d->valid_docs, &d->valid, &d->valid_offsets,
                   &d->valid_set, &d->valid_offsets_set);
        H5_CHECK(H5Gclose(g));
        if (d->train_bytes == 0)
            reject(&r, "domain '%s' in corpus '%s' has no train bytes", d->name, path);
    }

    H5_CHECK(H5Gclose(domains));
    if (read == LADLE_CORPUS_STREAM) corpus->file = r.file;
    else H5_CHECK(H5Fclose(r.file));
}

void ladle_corpus_open(ladle_corpus *corpus, const char *path, ladle_corpus_read read, MPI_Comm comm)
{
    ladle_corpus_open_group(corpus, path, "domains", read, comm);
}

void ladle_corpus_free(ladle_corpus *corpus)
{
    if (corpus->domains) {
        for (int i = 0; i < corpus->n_domains; i++) {
            ladle_domain *d = &corpus->domains[i];
            free(d->train);
            free(d->valid);
            free(d->train_offsets);
            free(d->valid_offsets);
            if (d->streamed) {
                H5_CHECK(H5Dclose(d->train_set));
                H5_CHECK(H5Dclose(d->valid_set));
                H5_CHECK(H5Dclose(d->train_offsets_set));
                H5_CHECK(H5Dclose(d->valid_offsets_set));
            }
        }
        free(corpus->domains);
    }
    if (corpus->file > 0) H5_CHECK(H5Fclose(corpus->file));   /* ids are positive; a zeroed corpus has none */
    corpus->file = -1;
    corpus->domains = NULL;
    corpus->n_domains = 0;
}

size_t ladle_corpus_memory(const ladle_corpus *c, ladle_corpus_read read)
{
    size_t bytes = (size_t)c->n_domains * sizeof(ladle_domain);
    for (int d = 0; d < c->n_domains && read == LADLE_CORPUS_MEMORY; d++) {
        const ladle_domain *x = &c->domains[d];
        bytes += x->train_bytes + x->valid_bytes + (x->train_docs + 1 + x->valid_docs + 1) * sizeof(uint64_t);
    }
    return bytes;
}

/* Bytes [at, at + n) of one split: copied from memory, or one hyperslab read. A read
 * that fails mid-run (the file changed under the run) is an error naming the domain. */
static void split_read(const ladle_domain *d, int valid, size_t at, size_t n, uint8_t *out)
{
    if (!d->streamed) {
        memcpy(out, (valid ? d->valid : d->train) + at, n);
        return;
    }
    if (read_range(valid ? d->valid_set : d->train_set, H5T_NATIVE_UINT8, at, n, out) < 0)
        LADLE_FAIL("cannot read bytes [%zu, %zu) of '%s' of domain '%s' from the corpus (was the file changed "
                    "during the run?)", at, at + n, valid ? "valid" : "train", d->name);
}

uint8_t *ladle_domain_train_document(const ladle_domain *d, size_t doc, size_t *len)
{
    LADLE_CHECK(doc < d->train_docs, "document %zu of domain '%s' (%zu train documents)", doc, d->name,
                d->train_docs);
    uint64_t range[2];
    if (d->streamed) {
        if (read_range(d->train_offsets_set, H5T_NATIVE_UINT64, doc, 2, range) < 0)
            LADLE_FAIL("cannot read the offsets of document %zu of domain '%s'", doc, d->name);
    } else {
        range[0] = d->train_offsets[doc];
        range[1] = d->train_offsets[doc + 1];
    }
    *len = (size_t)(range[1] - range[0]);
    uint8_t *bytes = ladle_malloc(*len ? *len : 1, "document");
    if (*len) split_read(d, 0, (size_t)range[0], *len, bytes);
    return bytes;
}

void ladle_corpus_check_context(const ladle_corpus *corpus, const char *path, int context)
{
    LADLE_CHECK(context > 0, "context must be positive, got %d", context);
    /* one window is context tokens plus the target after the last one */
    size_t need = (size_t)context + 1;
    for (int i = 0; i < corpus->n_domains; i++) {
        const ladle_domain *d = &corpus->domains[i];
        if (d->train_bytes < need)
            ladle_usage_error("context %d is longer than domain '%s' in corpus '%s' allows "
                              "(train split: %zu bytes, a window needs %zu): use a smaller model.context",
                              context, d->name, path, d->train_bytes, need);
    }
}

void ladle_corpus_check_valid(const ladle_corpus *corpus, const char *path, int context)
{
    for (int i = 0; i < corpus->n_domains; i++) {
        const ladle_domain *d = &corpus->domains[i];
        if (d->valid_bytes < (size_t)context + 1)
            ladle_usage_error("domain '%s' of corpus '%s': its 'valid' dataset holds %zu bytes, shorter than one "
                              "window of model.context + 1 = %d bytes, so evaluation cannot measure it: set "
                              "eval.every = 0, or prepare the corpus with a larger --valid-fraction or fewer "
                              "--clusters", d->name, path, d->valid_bytes, context + 1);
    }
}

/* ---- mixtures ------------------------------------------------------------------ */

/* Counter ranges of LADLE_STREAM_MIXTURE within one step: far apart, so no draw of
 * one kind can reuse a counter of another for any k below 2^32. */
#define MIX_SHUFFLE ((uint64_t)0)           /* + i: swap i of the partial shuffle */
#define MIX_GAMMA ((uint64_t)1 << 40)       /* + 2 (j * MIX_ATTEMPTS + a) (+ 1): attempt a of gamma j */
#define MIX_BOOST ((uint64_t)2 << 40)       /* + j: the U^(1/c) of gamma j when c < 1 */
#define MIX_NATURAL ((uint64_t)3 << 40)     /* the coin of pi's natural part */
/* Marsaglia-Tsang accepts with probability >= 0.95 for shape >= 1: 64 rejections in a
 * row happen with probability < 1e-83, but the bound keeps h a pure function of
 * (seed, step) with no unbounded loop. */
#define MIX_ATTEMPTS 64

/* Uniform in (0, 1) with 53 bits: the logs below never see 0. */
static double open_uniform(uint64_t seed, uint64_t step, uint64_t index)
{
    uint64_t r = ladle_rng_u64(seed, step, LADLE_STREAM_MIXTURE, index);
    return ((double)(r >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* log of a Gamma(shape, 1) draw, shape >= 1 (Marsaglia and Tsang, 2000). In logs so
 * that the c < 1 boost below cannot underflow. */
static double log_gamma_draw(uint64_t seed, uint64_t step, uint64_t j, double shape)
{
    const double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (uint64_t a = 0; a < MIX_ATTEMPTS; a++) {
        uint64_t at = MIX_GAMMA + 2 * (j * MIX_ATTEMPTS + a);
        double x = ladle_rng_normal(seed, step, LADLE_STREAM_MIXTURE, at);
        double v = 1.0 + c * x;
        if (v <= 0.0) continue;
        v = v * v * v;
        double u = open_uniform(seed, step, at + 1);
        /* the cheap squeeze first, then the exact test */
        if (u < 1.0 - 0.0331 * x * x * x * x || log(u) < 0.5 * x * x + d * (1.0 - v + log(v)))
            return log(d * v);
    }
    return log(d);   /* unreachable in practice: d is near the mode */
}

void ladle_sample_mixture(uint64_t seed, uint64_t step, int k, int support, float concentration, float *h)
{
    LADLE_CHECK(k > 0, "mixture over %d domains", k);
    LADLE_CHECK(concentration > 0.0f && isfinite(concentration), "Dirichlet concentration %g must be positive",
                (double)concentration);
    int s = support <= 0 || support >= k ? k : support;

    /* the support: the first s entries of a partial Fisher-Yates shuffle of 0..k-1 */
    int *idx = ladle_malloc((size_t)k * sizeof(int), "mixture support");
    double *lg = ladle_malloc((size_t)s * sizeof(double), "mixture weights");
    for (int i = 0; i < k; i++) idx[i] = i;
    for (int i = 0; i < s; i++) {
        int j = i + (int)ladle_rng_below(seed, step, LADLE_STREAM_MIXTURE, MIX_SHUFFLE + (uint64_t)i,
                                         (uint64_t)(k - i));
        int t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }

    /* Dirichlet(c 1) = normalised independent Gamma(c) draws. For c < 1 the sampler
     * needs shape >= 1: Gamma(c) = Gamma(c + 1) U^(1/c). */
    double c = concentration, max = -INFINITY;
    for (int j = 0; j < s; j++) {
        if (c < 1.0)
            lg[j] = log_gamma_draw(seed, step, (uint64_t)j, c + 1.0)
                    + log(open_uniform(seed, step, MIX_BOOST + (uint64_t)j)) / c;
        else
            lg[j] = log_gamma_draw(seed, step, (uint64_t)j, c);
        max = lg[j] > max ? lg[j] : max;
    }
    /* normalise from the largest: exp never overflows; a weight can underflow to 0 only
     * when it is below ~1e-38 of the largest (tiny c) */
    double sum = 0.0;
    for (int j = 0; j < s; j++) sum += (lg[j] = exp(lg[j] - max));
    for (int i = 0; i < k; i++) h[i] = 0.0f;
    for (int j = 0; j < s; j++) h[idx[j]] = (float)(lg[j] / sum);
    free(lg);
    free(idx);
}

void ladle_mixture_parse(const char *what, const char *domains_label, const char *spec, int k, const char *const *names,
                         float *h)
{
    /* in double, so that a large weight neither overflows the float h nor the sum */
    double *w = ladle_calloc((size_t)(k > 0 ? k : 1), sizeof(double), "weights");
    unsigned char *given = ladle_calloc((size_t)(k > 0 ? k : 1), 1, "weights given");
    char *copy = ladle_malloc(strlen(spec) + 1, "weights");
    strcpy(copy, spec);
    double total = 0.0;
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq) ladle_usage_error("%s: '%s' is not NAME=WEIGHT", what, item);
        *eq = '\0';
        int d = -1;
        for (int i = 0; i < k && d < 0; i++)
            if (strcmp(names[i], item) == 0) d = i;
        if (d < 0) {
            /* list a few valid names */
            char known[512] = "";
            for (int i = 0; i < k && strlen(known) < 400; i++)
                snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "", names[i]);
            ladle_usage_error("%s: unknown domain '%s' (%s: %s%s)", what, item, domains_label, known,
                              k > 0 && strlen(known) >= 400 ? ", ..." : "");
        }
        if (given[d]) ladle_usage_error("%s: domain '%s' is given twice", what, item);
        given[d] = 1;
        char *end = NULL;
        errno = 0;
        double v = strtod(eq + 1, &end);
        if (end == eq + 1 || *end || errno || !(v >= 0 && v <= FLT_MAX))
            ladle_usage_error("%s: weight of '%s' is '%s', expected a number in [0, %g]", what, item, eq + 1,
                              FLT_MAX);
        w[d] = v;
        total += v;
    }
    free(copy);
    if (!isfinite(total)) ladle_usage_error("%s: the weights' sum overflows: give them on a smaller scale", what);
    if (!(total > 0)) ladle_usage_error("%s: all weights are zero", what);
    for (int d = 0; d < k; d++) h[d] = (float)(w[d] / total);
    free(w);
    free(given);
}

void ladle_natural_mixture(const ladle_corpus *corpus, float *h)
{
    double total = 0.0;
    for (int i = 0; i < corpus->n_domains; i++) total += (double)corpus->domains[i].train_bytes;
    LADLE_CHECK(total > 0, "natural mixture of a corpus without train bytes");
    for (int i = 0; i < corpus->n_domains; i++) h[i] = (float)((double)corpus->domains[i].train_bytes / total);
}

void ladle_sample_meta(uint64_t seed, uint64_t step, int k, float natural, const float *fixed_h, int support,
                       float concentration, float *h)
{
    if (natural > 0.0f && open_uniform(seed, step, MIX_NATURAL) < (double)natural) {
        memcpy(h, fixed_h, (size_t)k * sizeof(float));
        return;
    }
    ladle_sample_mixture(seed, step, k, support, concentration, h);
}

/* Cat(h) by inverting the cumulative sum; h need not sum exactly to 1 (u is scaled by
 * the total). A u past the last boundary (rounding) picks the last domain with weight,
 * and a zero weight is never picked. */
static int draw_domain(const float *h, int k, float u)
{
    double total = 0.0;
    int last = -1;
    for (int i = 0; i < k; i++) {
        total += h[i];
        if (h[i] > 0.0f) last = i;
    }
    double target = (double)u * total, cum = 0.0;
    for (int i = 0; i < k; i++) {
        if (!(h[i] > 0.0f)) continue;
        cum += h[i];
        if (target < cum) return i;
    }
    return last;
}

/* floor(batch * h_i) for h normalised by its total, forgiving the float rounding of h:
 * 0.7f is 0.69999999, and a batch of 10 at h = (0.7, 0.3) should allot 7 and 3, not 6
 * and 3. The slack (a relative 5e-7) moves only values that close to an integer. */
static int allot(int batch, float hi, double total)
{
    double x = (double)batch * (double)hi / total;
    return (int)floor(x + x * 4.0 * FLT_EPSILON);
}

int ladle_mixture_domain(const float *h, int k, int batch, int b, ladle_sampling sampling,
                         uint64_t seed, uint64_t step)
{
    LADLE_CHECK(k > 0 && 0 <= b && b < batch, "bad mixture draw: sequence %d of %d, %d domains", b, batch, k);
    double total = 0.0;
    for (int i = 0; i < k; i++) {
        LADLE_CHECK(h[i] >= 0.0f && isfinite(h[i]), "domain weight h[%d] = %g is not a weight", i, (double)h[i]);
        total += h[i];
    }
    LADLE_CHECK(total > 0.0, "domain weights h are all zero");

    if (sampling == LADLE_SAMPLING_STRATIFIED) {
        /* the fixed part: floor(batch h_i) sequences per domain, in domain order; the
         * clamp is a guard: the slack in allot() adds up to a whole sequence only for
         * batches over 2e6 */
        int cum = 0;
        for (int i = 0; i < k; i++) {
            if (!(h[i] > 0.0f)) continue;
            cum += allot(batch, h[i], total);
            if (cum > batch) cum = batch;
            if (b < cum) return i;
        }
    } else {
        LADLE_CHECK(sampling == LADLE_SAMPLING_IID, "bad sampling %d", (int)sampling);
    }
    /* the rest (all of it for iid): domain ~ Cat(h) */
    return draw_domain(h, k, ladle_rng_uniform(seed, step, LADLE_STREAM_DOMAIN, (uint64_t)b));
}

/* One window of context + 1 bytes at `start` (read through `window`): the tokens, and
 * the targets one byte later. */
static void copy_window(const ladle_domain *d, int valid, size_t start, int context, uint8_t *window,
                        uint8_t *tokens, uint8_t *targets)
{
    split_read(d, valid, start, (size_t)context + 1, window);
    memcpy(tokens, window, (size_t)context);
    memcpy(targets, window + 1, (size_t)context);
}

void ladle_batch_train(const ladle_corpus *corpus, const float *h, ladle_sampling sampling, int batch,
                       uint64_t seed, uint64_t step, int b_lo, int b_hi, int context,
                       uint8_t *tokens, uint8_t *targets, int *domains)
{
    LADLE_CHECK(corpus->n_domains > 0, "empty corpus");
    LADLE_CHECK(context > 0 && 0 <= b_lo && b_lo <= b_hi && b_hi <= batch,
                "bad batch range [%d, %d) of %d or context %d", b_lo, b_hi, batch, context);
    uint8_t *window = ladle_malloc((size_t)context + 1, "window");
    for (int b = b_lo; b < b_hi; b++) {
        /* b is the GLOBAL sequence number: the window does not depend on which rank
         * draws it or how the batch was split */
        int d = ladle_mixture_domain(h, corpus->n_domains, batch, b, sampling, seed, step);
        const ladle_domain *dom = &corpus->domains[d];
        LADLE_CHECK(dom->train_bytes > (size_t)context,
                    "domain '%s' has %zu train bytes, too few for context %d (call ladle_corpus_check_context)",
                    dom->name, dom->train_bytes, context);
        size_t start = (size_t)ladle_rng_below(seed, step, LADLE_STREAM_WINDOW, (uint64_t)b,
                                               (uint64_t)(dom->train_bytes - (size_t)context));
        copy_window(dom, 0, start, context, window, tokens + (size_t)(b - b_lo) * (size_t)context,
                    targets + (size_t)(b - b_lo) * (size_t)context);
        if (domains) domains[b - b_lo] = d;
    }
    free(window);
}

int ladle_valid_windows(const ladle_domain *domain, int context, int wanted)
{
    LADLE_CHECK(context > 0 && wanted >= 0, "bad context %d or window count %d", context, wanted);
    if (domain->valid_bytes < (size_t)context + 1) return 0;
    /* as many windows as fit without overlapping, but at least one */
    size_t fit = (domain->valid_bytes - 1) / (size_t)context;
    if (fit < 1) fit = 1;
    return (size_t)wanted < fit ? wanted : (int)fit;
}

/* Window w of n starts at floor(w * span / (n - 1)), span = valid_bytes - context - 1:
 * the first window starts at byte 0, the last one's target ends at the split's last
 * byte, and the rest are evenly spaced between. With n <= (valid_bytes - 1) / context
 * (what ladle_valid_windows returns) the spacing is at least context: no overlap.
 * The product is split as w*q + w*r/(n-1) so it cannot overflow 64 bits. */
static size_t valid_window_start(size_t valid_bytes, int context, int n_windows, int w)
{
    if (n_windows <= 1) return 0;
    uint64_t span = (uint64_t)valid_bytes - (uint64_t)context - 1;
    uint64_t gaps = (uint64_t)n_windows - 1;
    uint64_t q = span / gaps, rem = span % gaps;
    return (size_t)((uint64_t)w * q + (uint64_t)w * rem / gaps);
}

void ladle_batch_valid(const ladle_domain *domain, int context, int n_windows, int w_lo, int w_hi,
                       uint8_t *tokens, uint8_t *targets)
{
    LADLE_CHECK(context > 0 && domain->valid_bytes >= (size_t)context + 1,
                "domain '%s' has %zu valid bytes, too few for context %d", domain->name,
                domain->valid_bytes, context);
    LADLE_CHECK(0 <= w_lo && w_lo <= w_hi && w_hi <= n_windows,
                "bad valid window range [%d, %d) of %d", w_lo, w_hi, n_windows);
    uint8_t *window = ladle_malloc((size_t)context + 1, "window");
    for (int w = w_lo; w < w_hi; w++) {
        size_t start = valid_window_start(domain->valid_bytes, context, n_windows, w);
        copy_window(domain, 1, start, context, window, tokens + (size_t)(w - w_lo) * (size_t)context,
                    targets + (size_t)(w - w_lo) * (size_t)context);
    }
    free(window);
}
