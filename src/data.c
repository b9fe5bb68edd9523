/* data: read a corpus file (layout in data.h and prep.c) and cut training and
 * validation windows out of it.
 *
 * Every rank opens the file with the MPI-IO driver and reads all of it with independent
 * reads: a corpus is small next to the model state, and collective metadata reads are
 * broken in HDF5 1.10.5-1.10.8. Every check on the file's structure is a usage error that
 * all ranks reach identically (they all read the same bytes), so they all exit cleanly. */
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
    if (r->file >= 0) H5Fclose(r->file);
    ladle_corpus_free(r->corpus);
}

/* A problem with the file's contents: close everything, then a clean usage error. */
#define reject(r, ...) ladle_usage_error_cleanup(close_reader, (r), __VA_ARGS__)

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

/* Read a whole uint8 dataset. In pieces, because MPI-IO counts are ints. */
static void read_bytes(hid_t dset, uint8_t *buf, size_t n)
{
    const size_t piece = (size_t)1 << 30;
    hid_t fspace = H5Dget_space(dset);
    H5_CHECK(fspace);
    for (size_t at = 0; at < n; at += piece) {
        hsize_t start[1] = {at}, count[1] = {n - at < piece ? n - at : piece};
        hid_t mspace = H5Screate_simple(1, count, NULL);
        H5_CHECK(mspace);
        H5_CHECK(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL));
        H5_CHECK(H5Dread(dset, H5T_NATIVE_UINT8, mspace, fspace, H5P_DEFAULT, buf + at));
        H5_CHECK(H5Sclose(mspace));
    }
    H5_CHECK(H5Sclose(fspace));
}

/* One split of one domain: its bytes, and its documents' offsets. */
static void read_split(corpus_reader *r, hid_t group, const char *domain, const char *split,
                       uint8_t **data, size_t *bytes, size_t *docs, uint64_t **doc_offsets)
{
    char offsets_name[32];
    snprintf(offsets_name, sizeof offsets_name, "%s_offsets", split);
    size_t n_offsets = 0;
    hid_t offsets = open_vector(r, group, domain, offsets_name, sizeof(uint64_t), &n_offsets);
    if (n_offsets == 0)
        reject(r, "corpus '%s' is damaged: '%s' of domain '%s' is empty", r->path, offsets_name, domain);
    *docs = n_offsets - 1;
    *doc_offsets = ladle_malloc(n_offsets * sizeof(uint64_t), "document offsets");
    H5_CHECK(H5Dread(offsets, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, *doc_offsets));
    H5_CHECK(H5Dclose(offsets));

    hid_t dset = open_vector(r, group, domain, split, 1, bytes);
    *data = ladle_malloc(*bytes, "corpus split");
    if (*bytes) read_bytes(dset, *data, *bytes);
    H5_CHECK(H5Dclose(dset));
    /* offsets must be non-decreasing and end at the split's length */
    int ok = (*doc_offsets)[0] == 0 && (*doc_offsets)[*docs] == *bytes;
    for (size_t i = 0; ok && i < *docs; i++) ok = (*doc_offsets)[i] <= (*doc_offsets)[i + 1];
    if (!ok) reject(r, "corpus '%s' is damaged: '%s' of domain '%s' does not index its %zu bytes", r->path,
                    offsets_name, domain, *bytes);
}

void ladle_corpus_open_group(ladle_corpus *corpus, const char *path, const char *group, MPI_Comm comm)
{
    memset(corpus, 0, sizeof *corpus);
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
        read_split(&r, g, d->name, "train", &d->train, &d->train_bytes, &d->train_docs, &d->train_offsets);
        read_split(&r, g, d->name, "valid", &d->valid, &d->valid_bytes, &d->valid_docs, &d->valid_offsets);
        H5_CHECK(H5Gclose(g));
        if (d->train_bytes == 0)
            reject(&r, "domain '%s' in corpus '%s' has no train bytes", d->name, path);
    }

    H5_CHECK(H5Gclose(domains));
    H5_CHECK(H5Fclose(r.file));
}

void ladle_corpus_open(ladle_corpus *corpus, const char *path, MPI_Comm comm)
{
    ladle_corpus_open_group(corpus, path, "domains", comm);
}

void ladle_corpus_free(ladle_corpus *corpus)
{
    if (corpus->domains) {
        for (int i = 0; i < corpus->n_domains; i++) {
            free(corpus->domains[i].train);
            free(corpus->domains[i].valid);
            free(corpus->domains[i].train_offsets);
            free(corpus->domains[i].valid_offsets);
        }
        free(corpus->domains);
    }
    corpus->domains = NULL;
    corpus->n_domains = 0;
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

void ladle_batch_train(const ladle_corpus *corpus, const float *h, ladle_sampling sampling, int batch,
                       uint64_t seed, uint64_t step, int b_lo, int b_hi, int context,
                       uint8_t *tokens, uint8_t *targets, int *domains)
{
    LADLE_CHECK(corpus->n_domains > 0, "empty corpus");
    LADLE_CHECK(context > 0 && 0 <= b_lo && b_lo <= b_hi && b_hi <= batch,
                "bad batch range [%d, %d) of %d or context %d", b_lo, b_hi, batch, context);
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
        size_t at = (size_t)(b - b_lo) * (size_t)context;
        memcpy(tokens + at, dom->train + start, (size_t)context);
        memcpy(targets + at, dom->train + start + 1, (size_t)context);
        if (domains) domains[b - b_lo] = d;
    }
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
    for (int w = w_lo; w < w_hi; w++) {
        size_t start = valid_window_start(domain->valid_bytes, context, n_windows, w);
        size_t at = (size_t)(w - w_lo) * (size_t)context;
        memcpy(tokens + at, domain->valid + start, (size_t)context);
        memcpy(targets + at, domain->valid + start + 1, (size_t)context);
    }
}
