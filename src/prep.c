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
 * the next domain reuses the buffers. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "ladle/prep.h"
#include "ladle/data.h"
#include "ladle/error.h"
#include "ladle/h5io.h"
#include "ladle/rng.h"

#include <hdf5.h>
#include <zlib.h>

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
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
    size_t docs;             /* documents kept (before any one-document cut) */
    size_t bytes;            /* bytes kept */
    int full;                /* reached max_domain_bytes */
    skip_counts skipped;
    /* the output being written, removed on a usage error */
    hid_t file;
    const char *tmp_path;
} domain_walk;

__attribute__((format(printf, 2, 3)))
static _Noreturn void input_error(domain_walk *w, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (w && w->file >= 0) {
        H5Fclose(w->file);
        unlink(w->tmp_path);
    }
    ladle_usage_error("%s", msg);
}

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

    int to_valid = ladle_rng_uniform(opt->seed, w->split_step, LADLE_STREAM_SPLIT, w->docs)
                   < opt->valid_fraction;
    split_buf *s = to_valid ? &w->valid : &w->train;

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
        split_reserve(s, s->bytes + n + want);
        uint8_t *dst = s->data + s->bytes + n;
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
    split_push_start(s, s->bytes);
    s->bytes += n;
    w->docs++;
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
    hid_t gcpl = ladle_h5_untimed_group_props();
    hid_t domains_group = H5Gcreate2(file, "domains", H5P_DEFAULT, gcpl, H5P_DEFAULT);
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
            fprintf(report, "%-24s %10s %13s %10s %13s\n", "domain", "train docs", "train bytes", "valid docs",
                    "valid bytes");
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
    }
    H5_CHECK(H5Gclose(domains_group));
    H5_CHECK(H5Fclose(file));
    if (rename(tmp_path, out_path) != 0)
        LADLE_FAIL("cannot rename '%s' to '%s': %s", tmp_path, out_path, strerror(errno));

    if (report) {
        char label[32];
        snprintf(label, sizeof label, "total (%d domains)", n_domains);
        fprintf(report, "%-24s %10zu %13zu %10zu %13zu\n", label, totals[0], totals[1], totals[2], totals[3]);
        skip_counts *s = &total_skipped;
        if (s->empty || s->binary || s->unreadable || s->links || s->special)
            fprintf(report, "skipped files: %zu empty, %zu binary, %zu unreadable, %zu symlinks, %zu special\n",
                    s->empty, s->binary, s->unreadable, s->links, s->special);
        if (s->truncated)
            fprintf(report, "%zu documents cut at max doc bytes (%zu)\n", s->truncated, options->max_doc_bytes);
        if (n_full)
            fprintf(report, "%d domains cut at max domain bytes (%zu)\n", n_full, options->max_domain_bytes);
        fprintf(report, "wrote %s\n", out_path);
    }

    free(w.train.data);
    free(w.train.starts);
    free(w.valid.data);
    free(w.valid.starts);
    free(tmp_path);
    free(order);
}
