/* prep: build a corpus file from text files and directories ('ladle prep').
 *
 * Serial and MPI-free (HDF5's default sec2 driver): run it from one process.
 *
 * What becomes a document, in this order for each domain:
 *  - the paths are taken in the order given; a directory is walked recursively with its
 *    entries sorted by byte value (strcmp, not the locale), so a corpus is reproducible;
 *  - inside directories only regular files are taken: symlinks are skipped (they would
 *    duplicate documents or loop), and so are other special files;
 *  - every file is read through zlib, so gzip-compressed files (.gz, dictzip .dz) are
 *    decompressed whatever their name, and plain files pass through unchanged;
 *  - empty files, and files holding a NUL byte (binary: .pyc, fortune .dat indexes, ...)
 *    are skipped; unreadable files inside a directory are skipped and counted, but a
 *    path named on the command line that cannot be read is a usage error;
 *  - a document is cut at max_doc_bytes, and the document that reaches max_domain_bytes
 *    is cut there and is the domain's last: a domain holds at most max_domain_bytes.
 *
 * Split: document i of a domain goes to valid when
 *     ladle_rng_uniform(seed, fnv1a(domain name), LADLE_STREAM_SPLIT, i) < valid_fraction
 * (keyed by the name, not the position, so adding a domain does not reshuffle the others).
 * Both splits must be non-empty: if one is, the domain's last document moves to it; a
 * domain of one document is cut at (1 - valid_fraction) of its bytes, and that document
 * then counts in both splits' document counts.
 *
 * Each domain is held in memory once (its two splits) while it is read, then written;
 * the next domain reuses the buffers.
 *
 * With --clusters K (see prep.h) every source domain is kept in memory instead, with the
 * embeddings of its documents (dim floats each), until the clusters are written; one
 * cluster's splits are assembled at a time. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "ladle/prep.h"
#include "ladle/data.h"
#include "ladle/embed.h"
#include "ladle/error.h"
#include "ladle/h5io.h"
#include "ladle/rng.h"

#include <hdf5.h>
#include <zlib.h>

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


#define READ_PIECE ((size_t)1 << 20)

/* One split of the domain being read: documents concatenated, and their starts. */
typedef struct {
    uint8_t *data;
    size_t bytes, cap;
    uint64_t *starts;
    size_t docs, starts_cap;
} split_buf;

/* Files that were passed over, for the report. */
typedef struct {
    size_t empty, binary, unreadable, links, special, truncated;
} skip_counts;

typedef struct {
    const ladle_prep_options *opt;
    const char *name;
    uint64_t split_step;     /* the RNG "step" of this domain's split decisions */
    split_buf train, valid;
    split_buf scratch;       /* the file being read, before it is cut into documents */
    size_t docs;             /* documents kept (before any one-document cut) */
    size_t bytes;            /* bytes kept */
    int full;                /* reached max_domain_bytes */
    skip_counts skipped;
    /* the output being written, removed on a usage error */
    hid_t file;
    const char *tmp_path;
} domain_walk;

static void remove_output(void *walk)
{
    domain_walk *w = walk;
    if (w && w->file >= 0) {
        H5Fclose(w->file);
        unlink(w->tmp_path);
    }
}

/* A problem with the input: remove the output being written (w may be NULL: none yet),
 * then a usage error. */
#define input_error(w, ...) ladle_usage_error_cleanup(remove_output, (w), __VA_ARGS__)

static void *grow(void *p, size_t *cap, size_t need, size_t elem, const char *what)
{
    if (need <= *cap) return p;
    size_t n = *cap ? *cap : 4096;
    while (n < need) n *= 2;
    void *q = realloc(p, n * elem);
    if (!q) LADLE_FAIL("out of memory growing %s to %zu bytes", what, n * elem);
    *cap = n;
    return q;
}

static void split_reserve(split_buf *s, size_t bytes)
{
    s->data = grow(s->data, &s->cap, bytes, 1, "corpus split");
}

static void split_push_start(split_buf *s, size_t start)
{
    s->starts = grow(s->starts, &s->starts_cap, s->docs + 1, sizeof(uint64_t), "document offsets");
    s->starts[s->docs++] = start;
}

static void split_append(split_buf *s, const uint8_t *bytes, size_t n)
{
    split_reserve(s, s->bytes + n);
    split_push_start(s, s->bytes);
    memcpy(s->data + s->bytes, bytes, n);
    s->bytes += n;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ULL;
    return h;
}

static char *join_path(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = ladle_malloc(a + b + 2, "path");
    memcpy(p, dir, a);
    size_t at = a;
    if (a == 0 || dir[a - 1] != '/') p[at++] = '/';
    memcpy(p + at, name, b + 1);
    return p;
}

/* Read one file as a document, straight into the tail of the split it belongs to.
 * Returns 1 if kept. */
static int add_document(domain_walk *w, const char *path, int named)
{
    const ladle_prep_options *opt = w->opt;
    size_t limit = SIZE_MAX;
    if (opt->max_doc_bytes) limit = opt->max_doc_bytes;
    if (opt->max_domain_bytes && opt->max_domain_bytes - w->bytes < limit)
        limit = opt->max_domain_bytes - w->bytes;

    split_buf *s = &w->scratch;
    s->bytes = 0;

    gzFile gz = gzopen(path, "rb");
    if (!gz) {
        if (named) input_error(w, "domain '%s': cannot read '%s': %s", w->name, path, strerror(errno));
        w->skipped.unreadable++;
        return 0;
    }
    LADLE_CHECK(gzbuffer(gz, 1 << 17) == 0, "gzbuffer failed for '%s'", path);

    size_t n = 0;
    int failed = 0, binary = 0, at_end = 0;
    while (n < limit) {
        size_t want = limit - n < READ_PIECE ? limit - n : READ_PIECE;
        split_reserve(s, n + want);
        uint8_t *dst = s->data + n;
        int got = gzread(gz, dst, (unsigned)want);
        if (got < 0) { failed = 1; break; }
        if (got == 0) { at_end = 1; break; }
        /* check as we go, so a large binary file is dropped after one piece */
        if (memchr(dst, 0, (size_t)got)) { binary = 1; break; }
        n += (size_t)got;
    }
    int truncated = 0;
    if (!failed && !binary && !at_end) {
        /* stopped at the limit: is there more? */
        uint8_t probe;
        int got = gzread(gz, &probe, 1);
        if (got < 0) failed = 1;
        truncated = got > 0;
    }
    if (at_end) {
        /* zlib reports a truncated or corrupt stream only here */
        int err = Z_OK;
        gzerror(gz, &err);
        if (err != Z_OK) failed = 1;
    }
    if (failed) {
        int err = Z_OK;
        const char *why = gzerror(gz, &err);
        if (err == Z_ERRNO) why = strerror(errno);
        /* zlib's message starts with the path, which ours names already */
        size_t plen = strlen(path);
        if (strncmp(why, path, plen) == 0 && strncmp(why + plen, ": ", 2) == 0) why += plen + 2;
        char msg[256];
        snprintf(msg, sizeof msg, "%s", why);
        gzclose(gz);
        if (named) input_error(w, "domain '%s': cannot read '%s': %s", w->name, path, msg);
        w->skipped.unreadable++;
        return 0;
    }
    gzclose(gz);   /* its result only restates errors checked above */

    if (binary) { w->skipped.binary++; return 0; }
    if (n == 0) { w->skipped.empty++; return 0; }
    /* Long files become several documents of at most split_doc_bytes, cut after a
     * newline where there is one in the second half of the piece: a dictionary or a
     * concatenated log is many documents, for the split and for clustering alike. */
    for (size_t at = 0; at < n;) {
        size_t len = n - at;
        if (opt->split_doc_bytes && len > opt->split_doc_bytes) {
            len = opt->split_doc_bytes;
            for (size_t cut = len; cut > opt->split_doc_bytes / 2; cut--)
                if (s->data[at + cut - 1] == '\n') { len = cut; break; }
        }
        int to_valid = ladle_rng_uniform(opt->seed, w->split_step, LADLE_STREAM_SPLIT, w->docs) < opt->valid_fraction;
        split_append(to_valid ? &w->valid : &w->train, s->data + at, len);
        w->docs++;
        at += len;
    }
    w->bytes += n;
    if (opt->max_domain_bytes && w->bytes >= opt->max_domain_bytes) w->full = 1;
    else if (truncated) w->skipped.truncated++;
    return 1;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int not_dot(const struct dirent *e)
{
    return strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
}

static void walk_dir(domain_walk *w, const char *dir)
{
    struct dirent **entries;
    int n = scandir(dir, &entries, not_dot, by_name);
    if (n < 0) { w->skipped.unreadable++; return; }
    for (int i = 0; i < n; i++) {
        if (!w->full) {
            char *path = join_path(dir, entries[i]->d_name);
            struct stat st;
            if (lstat(path, &st) != 0) w->skipped.unreadable++;
            else if (S_ISLNK(st.st_mode)) w->skipped.links++;
            else if (S_ISDIR(st.st_mode)) walk_dir(w, path);
            else if (S_ISREG(st.st_mode)) add_document(w, path, 0);
            else w->skipped.special++;
            free(path);
        }
        free(entries[i]);
    }
    free(entries);
}

/* A path named on the command line: followed if a symlink, and must be readable. */
static void check_named_path(const char *domain, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        input_error(NULL, "domain '%s': cannot read '%s': %s", domain, path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d) input_error(NULL, "domain '%s': cannot read '%s': %s", domain, path, strerror(errno));
        closedir(d);
    } else if (S_ISREG(st.st_mode)) {
        FILE *f = fopen(path, "rb");
        if (!f) input_error(NULL, "domain '%s': cannot read '%s': %s", domain, path, strerror(errno));
        fclose(f);
    } else {
        input_error(NULL, "domain '%s': '%s' is neither a regular file nor a directory", domain, path);
    }
}

static void check_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0) ladle_usage_error("empty domain name: use --domain NAME=PATH[,PATH...]");
    if (n >= LADLE_NAME_MAX)
        ladle_usage_error("domain name '%s' is too long (%zu bytes, at most %d)", name, n, LADLE_NAME_MAX - 1);
    for (const char *c = name; *c; c++) {
        int ok = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9')
                 || *c == '_' || *c == '.' || *c == '-';
        if (!ok)
            ladle_usage_error("domain name '%s' has the character '%c': names use only A-Z a-z 0-9 _ . -",
                              name, *c);
    }
    /* '.' and '..' would be legal HDF5 link names but confuse every path-based tool */
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        ladle_usage_error("domain name '%s' is not allowed", name);
}

/* Move the last document of one split to the end of the other. */
static void move_last_document(split_buf *from, split_buf *to)
{
    size_t start = from->starts[from->docs - 1];
    split_append(to, from->data + start, from->bytes - start);
    from->bytes = start;
    from->docs--;
}

/* Make both splits non-empty (see the top of the file). */
static void fix_splits(domain_walk *w)
{
    double vf = w->opt->valid_fraction;
    if (w->docs >= 2) {
        if (w->valid.docs == 0) move_last_document(&w->train, &w->valid);
        else if (w->train.docs == 0) move_last_document(&w->valid, &w->train);
        return;
    }
    /* one document: cut it */
    split_buf *s = w->train.docs ? &w->train : &w->valid;
    size_t n = s->bytes;
    if (n < 2)
        input_error(w, "domain '%s' has only %zu byte of text: it needs at least 2 (train and valid)",
                    w->name, n);
    size_t cut = (size_t)((1.0 - vf) * (double)n);
    if (cut < 1) cut = 1;
    if (cut > n - 1) cut = n - 1;
    if (s == &w->train) {
        split_append(&w->valid, w->train.data + cut, n - cut);
        w->train.bytes = cut;
    } else {
        split_append(&w->train, w->valid.data, cut);
        memmove(w->valid.data, w->valid.data + cut, n - cut);
        w->valid.bytes = n - cut;
    }
}

/* ---- writing ---------------------------------------------------------------- */

static void write_vector(hid_t group, const char *name, hid_t file_type, hid_t mem_type,
                         const void *data, size_t n)
{
    hsize_t dims[1] = {n};
    hid_t space = H5Screate_simple(1, dims, NULL);
    H5_CHECK(space);
    /* no timestamps: the same inputs give the same file, byte for byte */
    hid_t dcpl = ladle_h5_untimed_dataset_props();
    hid_t dset = H5Dcreate2(group, name, file_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5_CHECK(dset);
    if (n) H5_CHECK(H5Dwrite(dset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
    H5_CHECK(H5Dclose(dset));
    H5_CHECK(H5Pclose(dcpl));
    H5_CHECK(H5Sclose(space));
}

static void write_u64_attr(hid_t obj, const char *name, uint64_t value)
{
    ladle_h5_write_scalar_attr(obj, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &value);
}

static void write_split(hid_t group, const char *name, split_buf *s)
{
    char offsets_name[32];
    snprintf(offsets_name, sizeof offsets_name, "%s_offsets", name);
    /* offsets: every document's start, then the end */
    split_push_start(s, s->bytes);
    s->docs--;
    write_vector(group, name, H5T_STD_U8LE, H5T_NATIVE_UINT8, s->data, s->bytes);
    write_vector(group, offsets_name, H5T_STD_U64LE, H5T_NATIVE_UINT64, s->starts, s->docs + 1);
}

static void write_domain(hid_t domains_group, domain_walk *w, const ladle_prep_domain *d)
{
    hid_t gcpl = ladle_h5_untimed_group_props();
    hid_t group = H5Gcreate2(domains_group, d->name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    H5_CHECK(group);
    H5_CHECK(H5Pclose(gcpl));
    write_split(group, "train", &w->train);
    write_split(group, "valid", &w->valid);

    size_t len = 1;
    for (int i = 0; i < d->n_paths; i++) len += strlen(d->paths[i]) + 1;
    char *source = ladle_malloc(len, "source attribute");
    source[0] = '\0';
    for (int i = 0, at = 0; i < d->n_paths; i++) {
        size_t n = strlen(d->paths[i]);
        if (i) source[at++] = ',';
        memcpy(source + at, d->paths[i], n + 1);
        at += (int)n;
    }
    ladle_h5_write_string_attr(group, "source", source);
    free(source);
    write_u64_attr(group, "documents", w->docs);
    write_u64_attr(group, "train_docs", w->train.docs);
    write_u64_attr(group, "valid_docs", w->valid.docs);
    H5_CHECK(H5Gclose(group));
}

/* ---- clusters (--clusters K) ------------------------------------------------- */

/* Everything clustering needs: the source domains kept whole, the embeddings of their
 * documents (train rows and valid rows, each in source then document order), and what
 * the report shows. */
typedef struct {
    int k, n_src;
    const char **names;              /* source names, sorted */
    split_buf *train, *valid;        /* per source; starts hold docs + 1 offsets */
    ladle_embedder embedder;
    float *train_x, *valid_x;        /* [rows x dim] */
    size_t n_train, n_valid, train_cap, valid_cap;
    int *train_assign, *valid_assign;
    float *centroids;                /* [k x dim] */
    /* per cluster, after the fix-ups */
    size_t *stats;                   /* [k x 4]: train docs, train bytes, valid docs, valid bytes */
    size_t *docs_by_src;             /* [k x n_src]: documents (both splits) from each source */
} clustering;

/* Embed the documents of one written split (offsets closed) into rows at *rows. */
static void embed_split(clustering *c, const split_buf *s, float **x, size_t *rows, size_t *cap)
{
    int dim = c->embedder.params.dim;
    *x = grow(*x, cap, *rows + s->docs, (size_t)dim * sizeof(float), "document embeddings");
    const uint8_t **docs = ladle_malloc((s->docs ? s->docs : 1) * sizeof *docs, "document list");
    size_t *lens = ladle_malloc((s->docs ? s->docs : 1) * sizeof *lens, "document list");
    for (size_t i = 0; i < s->docs; i++) {
        docs[i] = s->data + s->starts[i];
        lens[i] = (size_t)(s->starts[i + 1] - s->starts[i]);
    }
    ladle_embed_batch(&c->embedder, docs, lens, s->docs, *x + *rows * (size_t)dim);
    *rows += s->docs;
    free(lens);
    free(docs);
}

/* Keep a source domain just written (its buffers move here) and embed its documents. */
static void keep_source(clustering *c, int i, domain_walk *w)
{
    c->train[i] = w->train;
    c->valid[i] = w->valid;
    memset(&w->train, 0, sizeof w->train);
    memset(&w->valid, 0, sizeof w->valid);
    /* growth by doubling left up to twice the text allocated: hand the slack back */
    split_buf *kept[2] = {&c->train[i], &c->valid[i]};
    for (int t = 0; t < 2; t++) {
        uint8_t *q = kept[t]->bytes ? realloc(kept[t]->data, kept[t]->bytes) : NULL;
        if (q) { kept[t]->data = q; kept[t]->cap = kept[t]->bytes; }
    }
    embed_split(c, &c->train[i], &c->train_x, &c->n_train, &c->train_cap);
    embed_split(c, &c->valid[i], &c->valid_x, &c->n_valid, &c->valid_cap);
}

static double dot(const float *a, const float *b, int d)
{
    double s = 0;
    for (int i = 0; i < d; i++) s += (double)a[i] * b[i];
    return s;
}

static void write_labels(hid_t group, const char *name, const uint16_t *labels, size_t n)
{
    write_vector(group, name, H5T_STD_U16LE, H5T_NATIVE_UINT16, labels, n);
}


/* "c" and j zero-padded to the number of digits of k - 1: names sort as numbers. */
static void cluster_name(char name[16], int j, int k)
{
    char digits[12], last[12];
    int n = snprintf(digits, sizeof digits, "%d", j);
    int width = snprintf(last, sizeof last, "%d", k - 1);
    int at = 0;
    name[at++] = 'c';
    for (int i = n; i < width; i++) name[at++] = '0';
    memcpy(name + at, digits, (size_t)n + 1);
}

/* k-means on the train embeddings, valid documents to their nearest centroid, then the
 * K cluster domains under /domains and /clusters. */
static void write_clusters(clustering *c, domain_walk *w, hid_t file, uint64_t seed)
{
    int k = c->k, dim = c->embedder.params.dim;
    if ((size_t)k > c->n_train)
        input_error(w, "--clusters %d is more than the %zu train documents of all domains: use at most %zu clusters",
                    k, c->n_train, c->n_train);
    c->centroids = ladle_malloc((size_t)k * (size_t)dim * sizeof(float), "cluster centroids");
    c->train_assign = ladle_malloc(c->n_train * sizeof(int), "cluster assignments");
    c->valid_assign = ladle_malloc((c->n_valid ? c->n_valid : 1) * sizeof(int), "cluster assignments");
    ladle_cluster_embeddings(c->train_x, c->n_train, dim, k, seed, c->centroids, c->train_assign);
    ladle_nearest_centroids(c->centroids, k, dim, c->valid_x, c->n_valid, c->valid_assign, NULL);

    /* a cluster without valid documents lends it the train document nearest its centroid */
    size_t *valid_count = ladle_calloc((size_t)k, sizeof(size_t), "cluster counts");
    size_t *train_count = ladle_calloc((size_t)k, sizeof(size_t), "cluster counts");
    size_t *lend = ladle_malloc((size_t)k * sizeof(size_t), "cluster loans");
    double *lend_sim = ladle_malloc((size_t)k * sizeof(double), "cluster loans");
    for (size_t i = 0; i < c->n_valid; i++) valid_count[c->valid_assign[i]]++;
    for (size_t i = 0; i < c->n_train; i++) train_count[c->train_assign[i]]++;
    for (int j = 0; j < k; j++) lend[j] = SIZE_MAX;
    for (size_t i = 0; i < c->n_train; i++) {
        int j = c->train_assign[i];
        if (valid_count[j] || train_count[j] < 2) continue;
        double sim = dot(c->train_x + i * (size_t)dim, c->centroids + (size_t)j * dim, dim);
        if (lend[j] == SIZE_MAX || sim > lend_sim[j]) { lend[j] = i; lend_sim[j] = sim; }
    }

    hid_t gcpl = ladle_h5_untimed_group_props();
    hid_t domains = H5Gcreate2(file, "domains", H5P_DEFAULT, gcpl, H5P_DEFAULT);
    H5_CHECK(domains);
    H5_CHECK(H5Pclose(gcpl));
    uint16_t *train_labels = ladle_malloc((c->n_train + 1) * sizeof(uint16_t), "cluster labels");
    uint16_t *valid_labels = ladle_malloc((c->n_valid + 2) * sizeof(uint16_t), "cluster labels");
    c->stats = ladle_calloc((size_t)k * 4, sizeof(size_t), "cluster report");
    c->docs_by_src = ladle_calloc((size_t)k * (size_t)c->n_src, sizeof(size_t), "cluster report");
    split_buf train = {0}, valid = {0};
    for (int j = 0; j < k; j++) {
        train.bytes = train.docs = valid.bytes = valid.docs = 0;
        size_t nt = 0, nv = 0, row_t = 0, row_v = 0;
        for (int s = 0; s < c->n_src; s++) {
            const split_buf *st = &c->train[s], *sv = &c->valid[s];
            for (size_t d = 0; d < st->docs; d++, row_t++) {
                if (c->train_assign[row_t] != j) continue;
                const uint8_t *text = st->data + st->starts[d];
                size_t len = (size_t)(st->starts[d + 1] - st->starts[d]);
                if (row_t == lend[j]) {
                    split_append(&valid, text, len);
                    valid_labels[nv++] = (uint16_t)s;
                } else {
                    split_append(&train, text, len);
                    train_labels[nt++] = (uint16_t)s;
                }
            }
            for (size_t d = 0; d < sv->docs; d++, row_v++) {
                if (c->valid_assign[row_v] != j) continue;
                split_append(&valid, sv->data + sv->starts[d], (size_t)(sv->starts[d + 1] - sv->starts[d]));
                valid_labels[nv++] = (uint16_t)s;
            }
        }
        char name[16];
        cluster_name(name, j, k);
        size_t documents = nt + nv;
        for (size_t i = 0; i < nt; i++) c->docs_by_src[(size_t)j * c->n_src + train_labels[i]]++;
        for (size_t i = 0; i < nv; i++) c->docs_by_src[(size_t)j * c->n_src + valid_labels[i]]++;
        if (nv == 0) {
            /* one train document and nothing else: cut it, as a one-document domain is */
            size_t n = train.bytes;
            if (n < 2)
                input_error(w, "cluster %s holds one document of %zu byte: it cannot be split into train and "
                            "valid; use fewer --clusters", name, n);
            size_t cut = (size_t)((1.0 - w->opt->valid_fraction) * (double)n);
            if (cut < 1) cut = 1;
            if (cut > n - 1) cut = n - 1;
            split_append(&valid, train.data + cut, n - cut);
            train.bytes = cut;
            valid_labels[nv++] = train_labels[0];
        }

        gcpl = ladle_h5_untimed_group_props();
        hid_t group = H5Gcreate2(domains, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
        H5_CHECK(group);
        H5_CHECK(H5Pclose(gcpl));
        size_t *st = c->stats + (size_t)j * 4;
        st[0] = train.docs; st[1] = train.bytes; st[2] = valid.docs; st[3] = valid.bytes;
        write_split(group, "train", &train);
        write_split(group, "valid", &valid);
        write_labels(group, "train_labels", train_labels, nt);
        write_labels(group, "valid_labels", valid_labels, nv);
        char source[64];
        snprintf(source, sizeof source, "cluster %d of %d", j, k);
        ladle_h5_write_string_attr(group, "source", source);
        write_u64_attr(group, "documents", documents);
        write_u64_attr(group, "train_docs", nt);
        write_u64_attr(group, "valid_docs", nv);
        H5_CHECK(H5Gclose(group));
    }
    H5_CHECK(H5Gclose(domains));

    ladle_clusters cl = {k, c->embedder, c->centroids};
    ladle_clusters_write(file, &cl);

    free(train.data);
    free(train.starts);
    free(valid.data);
    free(valid.starts);
    free(train_labels);
    free(valid_labels);
    free(lend_sim);
    free(lend);
    free(train_count);
    free(valid_count);
}

/* The two largest entries of v[n] (v[stride*i]), as indices; -1 when absent or zero. */
static void top_entries(const size_t *v, size_t stride, int n, int *top, int want)
{
    for (int t = 0; t < want; t++) {
        top[t] = -1;
        for (int i = 0; i < n; i++) {
            int taken = 0;
            for (int u = 0; u < t; u++) taken |= top[u] == i;
            if (!taken && v[(size_t)i * stride] && (top[t] < 0 || v[(size_t)i * stride] > v[(size_t)top[t] * stride]))
                top[t] = i;
        }
    }
}

static void report_clusters(const clustering *c, FILE *report)
{
    int k = c->k;
    char name[16];
    const ladle_embed_params *p = &c->embedder.params;
    fprintf(report, "\nclusters: spherical k-means of %zu train documents into %d (embedding: byte 1..%d-grams, "
            "%d buckets, dim %d)\n", c->n_train, k, p->ngram, p->buckets, p->dim);
    fprintf(report, "%-24s %10s %13s %10s %13s  %s\n", "cluster", "train docs", "train bytes", "valid docs",
            "valid bytes", "top sources (share of its documents)");
    for (int j = 0; j < k; j++) {
        const size_t *st = c->stats + (size_t)j * 4;
        const size_t *by = c->docs_by_src + (size_t)j * c->n_src;
        size_t total = 0;
        for (int s = 0; s < c->n_src; s++) total += by[s];
        int top[2];
        top_entries(by, 1, c->n_src, top, 2);
        cluster_name(name, j, k);
        fprintf(report, "%-24s %10zu %13zu %10zu %13zu ", name, st[0], st[1], st[2], st[3]);
        for (int t = 0; t < 2 && top[t] >= 0; t++)
            fprintf(report, "%s %s %.1f%%", t ? "," : "", c->names[top[t]], 100.0 * (double)by[top[t]] / (double)total);
        fputc('\n', report);
    }
    fprintf(report, "%-24s  %s\n", "source", "top clusters (share of its documents)");
    for (int s = 0; s < c->n_src; s++) {
        size_t total = 0;
        for (int j = 0; j < k; j++) total += c->docs_by_src[(size_t)j * c->n_src + s];
        int top[3];
        top_entries(c->docs_by_src + s, (size_t)c->n_src, k, top, 3);
        fprintf(report, "%-24s ", c->names[s]);
        for (int t = 0; t < 3 && top[t] >= 0; t++) {
            cluster_name(name, top[t], k);
            fprintf(report, "%s %s %.1f%%", t ? "," : "", name,
                    100.0 * (double)c->docs_by_src[(size_t)top[t] * c->n_src + s] / (double)total);
        }
        fputc('\n', report);
    }
}

static void clustering_free(clustering *c)
{
    for (int i = 0; i < c->n_src; i++) {
        free(c->train[i].data);
        free(c->train[i].starts);
        free(c->valid[i].data);
        free(c->valid[i].starts);
    }
    free(c->train);
    free(c->valid);
    free(c->names);
    ladle_embedder_free(&c->embedder);
    free(c->train_x);
    free(c->valid_x);
    free(c->train_assign);
    free(c->valid_assign);
    free(c->centroids);
    free(c->stats);
    free(c->docs_by_src);
}

/* ---- the command ------------------------------------------------------------ */

static int by_domain_name(const void *a, const void *b)
{
    return strcmp((*(const ladle_prep_domain *const *)a)->name, (*(const ladle_prep_domain *const *)b)->name);
}

void ladle_prep(const char *out_path, const ladle_prep_domain *domains, int n_domains,
                const ladle_prep_options *options, FILE *report)
{
    if (n_domains < 1) ladle_usage_error("no domains to prepare: use --domain NAME=PATH[,PATH...]");
    if (!(options->valid_fraction > 0.0 && options->valid_fraction < 1.0))
        ladle_usage_error("valid fraction must be between 0 and 1 (exclusive), got %g", options->valid_fraction);
    if (options->clusters < 0) ladle_usage_error("--clusters %d: expected a count >= 1 (or 0 for none)", options->clusters);
    /* the labels of clustered documents are uint16 source indices */
    if (options->clusters > 0 && n_domains > 65536)
        ladle_usage_error("--clusters takes at most 65536 source domains, got %d", n_domains);

    /* Validate every input before writing anything. Domains are processed (and
     * stored) sorted by name, so the order of --domain options does not matter. */
    const ladle_prep_domain **order = ladle_malloc((size_t)n_domains * sizeof *order, "domain order");
    for (int i = 0; i < n_domains; i++) order[i] = &domains[i];
    qsort(order, (size_t)n_domains, sizeof *order, by_domain_name);
    for (int i = 0; i < n_domains; i++) {
        const ladle_prep_domain *d = order[i];
        check_name(d->name);
        if (i > 0 && strcmp(order[i - 1]->name, d->name) == 0)
            ladle_usage_error("domain '%s' is given twice: give all its paths in one --domain NAME=PATH,PATH...",
                              d->name);
        if (d->n_paths < 1) ladle_usage_error("domain '%s' has no paths", d->name);
        for (int j = 0; j < d->n_paths; j++) check_named_path(d->name, d->paths[j]);
    }

    clustering cl;
    memset(&cl, 0, sizeof cl);
    if (options->clusters > 0) {
        ladle_embed_params ep;
        ladle_embed_params_default(&ep);
        if (options->embed_ngram) ep.ngram = options->embed_ngram;
        if (options->embed_buckets) ep.buckets = options->embed_buckets;
        if (options->embed_dim) ep.dim = options->embed_dim;
        ep.seed = (uint64_t)options->seed;
        ladle_embedder_create(&cl.embedder, &ep);   /* checks the parameters before any output */
        cl.k = options->clusters;
        cl.n_src = n_domains;
        cl.train = ladle_calloc((size_t)n_domains, sizeof *cl.train, "source domains");
        cl.valid = ladle_calloc((size_t)n_domains, sizeof *cl.valid, "source domains");
        cl.names = ladle_malloc((size_t)n_domains * sizeof *cl.names, "source names");
        for (int i = 0; i < n_domains; i++) cl.names[i] = order[i]->name;
    }

    size_t tmp_len = strlen(out_path) + 5;
    char *tmp_path = ladle_malloc(tmp_len, "output path");
    snprintf(tmp_path, tmp_len, "%s.tmp", out_path);
    /* a plain open first: HDF5's failure would not say why */
    FILE *probe = fopen(tmp_path, "wb");
    if (!probe) ladle_usage_error("cannot create '%s': %s", tmp_path, strerror(errno));
    fclose(probe);

    hid_t file = H5Fcreate(tmp_path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5_CHECK(file);
    ladle_h5_write_string_attr(file, "format", LADLE_CORPUS_FORMAT);
    int version = LADLE_CORPUS_VERSION;
    ladle_h5_write_scalar_attr(file, "format_version", H5T_STD_I32LE, H5T_NATIVE_INT, &version);
    /* what it takes to rebuild the same file */
    write_u64_attr(file, "seed", (uint64_t)options->seed);
    ladle_h5_write_scalar_attr(file, "valid_fraction", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &options->valid_fraction);
    write_u64_attr(file, "max_doc_bytes", options->max_doc_bytes);
    write_u64_attr(file, "max_domain_bytes", options->max_domain_bytes);
    if (cl.k) write_u64_attr(file, "clusters", (uint64_t)cl.k);
    hid_t gcpl = ladle_h5_untimed_group_props();
    /* clustered: the named domains are the sources, the clusters the domains */
    hid_t domains_group = H5Gcreate2(file, cl.k ? "sources" : "domains", H5P_DEFAULT, gcpl, H5P_DEFAULT);
    H5_CHECK(domains_group);
    H5_CHECK(H5Pclose(gcpl));

    domain_walk w;
    memset(&w, 0, sizeof w);
    w.opt = options;
    w.file = file;
    w.tmp_path = tmp_path;
    skip_counts total_skipped = {0};
    size_t totals[4] = {0};
    int n_full = 0;
    for (int i = 0; i < n_domains; i++) {
        const ladle_prep_domain *d = order[i];
        w.name = d->name;
        w.split_step = fnv1a(d->name);
        w.train.bytes = w.train.docs = w.valid.bytes = w.valid.docs = 0;
        w.docs = w.bytes = 0;
        w.full = 0;
        memset(&w.skipped, 0, sizeof w.skipped);

        for (int j = 0; j < d->n_paths && !w.full; j++) {
            struct stat st;
            if (stat(d->paths[j], &st) != 0)   /* checked above; gone since? */
                input_error(&w, "domain '%s': cannot read '%s': %s", d->name, d->paths[j], strerror(errno));
            if (S_ISDIR(st.st_mode)) walk_dir(&w, d->paths[j]);
            else add_document(&w, d->paths[j], 1);
        }
        if (w.docs == 0)
            input_error(&w, "domain '%s' is empty: no text file with any bytes under its paths "
                        "(skipped %zu empty, %zu binary, %zu unreadable, %zu symlinks)",
                        d->name, w.skipped.empty, w.skipped.binary, w.skipped.unreadable, w.skipped.links);
        fix_splits(&w);
        write_domain(domains_group, &w, d);

        if (report && i == 0)   /* not before: an input error would follow it */
            fprintf(report, "%-24s %10s %13s %10s %13s\n", cl.k ? "source" : "domain", "train docs", "train bytes",
                    "valid docs", "valid bytes");
        if (report)
            fprintf(report, "%-24s %10zu %13zu %10zu %13zu%s\n", d->name, w.train.docs, w.train.bytes,
                    w.valid.docs, w.valid.bytes, w.full ? "  (max domain bytes reached)" : "");
        totals[0] += w.train.docs;
        totals[1] += w.train.bytes;
        totals[2] += w.valid.docs;
        totals[3] += w.valid.bytes;
        n_full += w.full;
        total_skipped.empty += w.skipped.empty;
        total_skipped.binary += w.skipped.binary;
        total_skipped.unreadable += w.skipped.unreadable;
        total_skipped.links += w.skipped.links;
        total_skipped.special += w.skipped.special;
        total_skipped.truncated += w.skipped.truncated;
        if (cl.k) keep_source(&cl, i, &w);   /* after the report: it takes the buffers */
    }
    if (cl.k) {
        ladle_h5_write_strings_attr(domains_group, "names", cl.names, n_domains);
        write_clusters(&cl, &w, file, (uint64_t)options->seed);
    }
    H5_CHECK(H5Gclose(domains_group));
    H5_CHECK(H5Fclose(file));
    if (rename(tmp_path, out_path) != 0)
        LADLE_FAIL("cannot rename '%s' to '%s': %s", tmp_path, out_path, strerror(errno));

    if (report) {
        char label[32];
        snprintf(label, sizeof label, "total (%d %s)", n_domains, cl.k ? "sources" : "domains");
        fprintf(report, "%-24s %10zu %13zu %10zu %13zu\n", label, totals[0], totals[1], totals[2], totals[3]);
        skip_counts *s = &total_skipped;
        if (s->empty || s->binary || s->unreadable || s->links || s->special)
            fprintf(report, "skipped files: %zu empty, %zu binary, %zu unreadable, %zu symlinks, %zu special\n",
                    s->empty, s->binary, s->unreadable, s->links, s->special);
        if (s->truncated)
            fprintf(report, "%zu documents cut at max doc bytes (%zu)\n", s->truncated, options->max_doc_bytes);
        if (n_full)
            fprintf(report, "%d domains cut at max domain bytes (%zu)\n", n_full, options->max_domain_bytes);
        if (cl.k) report_clusters(&cl, report);
        fprintf(report, "wrote %s\n", out_path);
    }

    free(w.train.data);
    free(w.train.starts);
    free(w.scratch.data);
    free(w.scratch.starts);
    free(w.valid.data);
    free(w.valid.starts);
    if (cl.k) clustering_free(&cl);
    free(tmp_path);
    free(order);
}
