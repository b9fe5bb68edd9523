/* prep: build a corpus file from text files and directories ('ladle prep').
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
 * How, on P ranks (P = 1 included: one code path). Domains are read one after the other,
 * each in rounds: rank 0 walks the domain and broadcasts the next files (at most
 * ROUND_FILES of them, about ROUND_BYTES_PER_RANK x P bytes by size), and every rank
 * reads a contiguous share of them (balanced by size). A file is read up to its round's
 * limit (max_doc_bytes, and what the domain can still take when the round starts),
 * stopping before a NUL byte, cut into documents as it streams and each document
 * embedded (--clusters); its text is then dropped. What each file gave (bytes, first NUL,
 * more after, failure) is gathered on every rank, which then decides for every file of
 * the round, in walk order, what the serial rules above make of it: so the decisions are
 * the same for any P. With max_domain_bytes the round's limit, its bytes (ROUND_BYTES at
 * most) and so everything read do not depend on P either; the one file that crosses the
 * limit is read again up to it. Prefix sums over the ranks give each document its index
 * in the domain (the split) and its offset in its split.
 *
 * Then, with --clusters, the embeddings are clustered (kmeans.h, distributed), and a
 * sweep over the rounds gives each document its offset in its cluster's split. Last, the
 * file is created collectively through MPI-IO with every dataset at its final size, and
 * each rank reads its files a second time (checked against a CRC of the first reading)
 * and writes its documents' bytes, offsets and labels with independent I/O at their
 * offsets, as checkpoints are written (ckpt.c; collective metadata writes are broken in
 * HDF5 1.10.5-1.10.8). Writes are buffered, sorted and coalesced into contiguous runs. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "ladle/prep.h"
#include "ladle/data.h"
#include "ladle/embed.h"
#include "ladle/error.h"
#include "ladle/fileio.h"
#include "ladle/h5io.h"
#include "ladle/rng.h"

#include <hdf5.h>
#include <zlib.h>

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define READ_PIECE ((size_t)1 << 20)
/* A round: at most this many files ... */
#define ROUND_FILES 4096
/* ... and about this many bytes (by file size) per rank; with max_domain_bytes, at most
 * ROUND_BYTES whatever the rank count, at least MIN_ROUND_BYTES or what the domain can
 * still take, so that little is read past the limit. */
#define ROUND_BYTES_PER_RANK ((uint64_t)256 << 20)
#define ROUND_BYTES ((uint64_t)256 << 20)
#define MIN_ROUND_BYTES ((uint64_t)1 << 20)
/* Writes pending at once: their bytes, and how many pieces. */
#define WRITE_BYTES ((size_t)16 << 20)
#define WRITE_PIECES ((size_t)1 << 18)

#define NO_NUL UINT64_MAX
/* of the output's reserved size: the superblock, root group and its attributes */
#define OUTPUT_FIXED_BOUND ((size_t)64 << 10)

enum { TRAIN = 0, VALID = 1, CUT = 2 };   /* a document's split; CUT: a cluster's only document */

/* Files that were passed over, for the report. */
typedef struct {
    size_t empty, binary, unreadable, links, special, truncated;
} skip_counts;

/* A domain as every rank knows it. */
typedef struct {
    const ladle_prep_domain *src;
    uint64_t step;                   /* fnv1a(name): the RNG step of its split decisions */
    uint64_t docs, bytes;            /* documents (before a one-document cut) and bytes kept */
    uint64_t split_docs[2], split_bytes[2];
    int full;                        /* reached max_domain_bytes */
    skip_counts skipped;             /* rank 0's also count what its walk passed over */
} domain_state;

/* One of this rank's documents: where its bytes come from and where they go. */
typedef struct {
    uint64_t start, len;             /* bytes [start, start + len) of its file's text */
    uint64_t dindex;                 /* its position in its domain's walk order */
    uint64_t index, offset;          /* in its domain's split: document number, byte offset */
    uint64_t row;                    /* clusters: its row among all train (or valid) documents */
    uint64_t cindex, coffset, ccut;  /* in its cluster's split (CUT: the head of ccut bytes is
                                      * its train split's, the rest is document 0 of valid) */
    size_t xrow;                     /* its row in this rank's embeddings of its split */
    uint32_t file, domain;
    int32_t cluster;
    uint8_t split, csplit;
} local_doc;

/* One of this rank's files that gave documents. */
typedef struct {
    size_t path;                     /* offset in the path arena */
    uint64_t bytes;                  /* its text kept */
    uint64_t produced;               /* bytes its documents were cut from (0: none) */
    uint32_t crc;                    /* of those bytes, to check the second reading */
    size_t first_doc, docs;
} local_file;

/* What reading a file found; gathered on every rank. */
typedef struct {
    uint64_t n;                      /* text bytes read (up to the limit, before any NUL) */
    uint64_t nul;                    /* position of the first NUL byte, or NO_NUL */
    uint8_t more;                    /* the file goes on after those n bytes */
    uint8_t failed;
    uint8_t pad[6];
} file_result;

/* The files of a round, the same on every rank. */
typedef struct {
    int n;
    const char **path;
    uint64_t *size;
    uint8_t *named;                  /* given on the command line */
    char *buf;                       /* what rank 0 broadcast */
    char error[512];                 /* a problem rank 0 met walking: a usage error */
    skip_counts *before;             /* rank 0: what its walk passed over before each file */
    int lo, hi;                      /* this rank's share */
    int *counts, *displs;            /* every rank's share, in bytes of file_result */
} round_list;

/* Rank 0's walk of one domain: the command-line paths, then a stack of sorted listings. */
typedef struct {
    struct dirent **entries;
    int n, next;
    char *dir;
} walk_frame;

typedef struct {
    const ladle_prep_domain *d;
    int next_path;
    walk_frame *stack;
    int depth;
    size_t cap;
    skip_counts skipped;             /* passed over since the last file */
} walker;

/* A file being cut into documents as it streams. */
typedef struct {
    uint64_t split;                  /* split_doc_bytes; 0: the file is one document */
    uint8_t *buf;                    /* split > 0: text not yet cut off, buf[head, len) */
    size_t head, len, cap;
    uint64_t at;                     /* file position of the current document */
    uint64_t fed;                    /* split = 0: bytes of the document so far */
    uint32_t crc;                    /* of the file's text so far */
    uint32_t domain;
} cutter;

/* The output being written: removed on a usage error. */
typedef struct {
    const char *final_path, *tmp_path;
    hid_t file;                      /* -1 until created */
    int probed;                      /* rank 0 created tmp_path */
    int rank;
} prep_output;

typedef struct {
    const ladle_prep_options *opt;
    MPI_Comm comm;
    int rank, size;
    domain_state *domains;
    int n_domains;
    prep_output *out;
    /* this rank's files and documents, in walk order */
    local_file *files;
    size_t n_files, files_cap;
    char *paths;
    size_t paths_len, paths_cap;
    local_doc *docs;
    size_t n_docs, docs_cap;
    /* the first document of this rank's share of each round */
    size_t *piece;
    size_t n_rounds, pieces_cap;
    /* --clusters: embeddings of this round's documents, then of each split's */
    ladle_embedder *embedder;
    ladle_embed_stream stream;
    int dim;
    float *pending, *x[2];
    size_t pending_cap, n_x[2], x_cap[2];
    float *scratch_row;
    /* reading */
    uint8_t *piece_buf;
    cutter cut;
    uint64_t *gathered;              /* [size x 4] rank_sums */
    char why[256];                   /* this round: why my first failing named file failed */
    int why_file;
} prep_state;

/* ---- small helpers ------------------------------------------------------------ */

static void *grow(void *p, size_t *cap, size_t need, size_t elem, const char *what)
{
    if (need <= *cap) return p;
    size_t n = *cap ? *cap : 64;
    while (n < need) n *= 2;
    void *q = realloc(p, n * elem);
    if (!q) LADLE_FAIL("out of memory growing %s to %zu bytes", what, n * elem);
    *cap = n;
    return q;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ULL;
    return h;
}

static char *copy_string(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = ladle_malloc(n, "path");
    memcpy(p, s, n);
    return p;
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

static void add_skips(skip_counts *to, const skip_counts *from)
{
    to->empty += from->empty;
    to->binary += from->binary;
    to->unreadable += from->unreadable;
    to->links += from->links;
    to->special += from->special;
    to->truncated += from->truncated;
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

/* ---- errors every rank agrees on -------------------------------------------------- */

static void remove_output(void *ctx)
{
    prep_output *o = ctx;
    if (!o) return;
    if (o->file >= 0) H5Fclose(o->file);   /* collective: every rank is here */
    if (o->rank == 0 && o->probed) unlink(o->tmp_path);
}

/* A problem with the input, found alike by every rank: remove the output (o may be NULL:
 * none yet), then a usage error. */
#define input_error(o, ...) ladle_usage_error_cleanup(remove_output, (o), __VA_ARGS__)

/* A write that failed on this rank (an I/O error): the ranks cannot agree, so this one
 * removes the half-written file (its name: any rank can) before aborting them all, and no
 * tens of GB of it stay behind. */
static _Noreturn void output_failed(const prep_output *o, const char *file, int line, const char *call)
{
    unlink(o->tmp_path);
    ladle_fail_at(file, line, "writing '%s' failed (removed it): HDF5 call failed: %s", o->final_path, call);
}
#define OUTPUT_CHECK(o, call) \
    do { if ((long long)(call) < 0) output_failed((o), __FILE__, __LINE__, #call); } while (0)

/* Every rank: the usage error whose message rank `from` holds. */
static _Noreturn void error_from(const prep_state *s, int from, const char *msg)
{
    char text[1024] = "";
    if (s->rank == from) snprintf(text, sizeof text, "%s", msg);
    MPI_CHECK(MPI_Bcast(text, (int)sizeof text, MPI_CHAR, from, s->comm));
    input_error(s->out, "%s", text);
}

/* Collective: if any rank's msg is not empty, the first such rank's is a usage error. */
static void agree(const prep_state *s, const char *msg)
{
    int from = msg[0] ? s->rank : s->size;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &from, 1, MPI_INT, MPI_MIN, s->comm));
    if (from < s->size) error_from(s, from, msg);
}

/* values[m] of every rank (m <= 4): prefix[m] summed over the ranks before this one,
 * total[m] over all of them. */
static void rank_sums(prep_state *s, const uint64_t *values, int m, uint64_t *prefix, uint64_t *total)
{
    MPI_CHECK(MPI_Allgather(values, m, MPI_UINT64_T, s->gathered, m, MPI_UINT64_T, s->comm));
    for (int t = 0; t < m; t++) {
        prefix[t] = total[t] = 0;
        for (int r = 0; r < s->size; r++) {
            uint64_t v = s->gathered[(size_t)r * (size_t)m + (size_t)t];
            if (r < s->rank) prefix[t] += v;
            total[t] += v;
        }
    }
}

static uint64_t max_over_ranks(const prep_state *s, uint64_t v)
{
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_UINT64_T, MPI_MAX, s->comm));
    return v;
}

/* ---- reading a file ---------------------------------------------------------------- */

typedef void (*text_sink)(void *ctx, const uint8_t *bytes, size_t n);

/* Reads path through zlib up to limit bytes, stopping before its first NUL byte, and
 * hands the text to sink piece by piece. why: the reason of a failure. */
static file_result read_text(const char *path, uint64_t limit, uint8_t *piece, text_sink sink, void *ctx,
                             char *why, size_t why_len)
{
    file_result r = {0, NO_NUL, 0, 0, {0}};
    gzFile gz = gzopen(path, "rb");
    if (!gz) {
        snprintf(why, why_len, "%s", strerror(errno));
        r.failed = 1;
        return r;
    }
    LADLE_CHECK(gzbuffer(gz, 1 << 17) == 0, "gzbuffer failed for '%s'", path);
    int at_end = 0;
    while (r.n < limit) {
        size_t want = limit - r.n < READ_PIECE ? (size_t)(limit - r.n) : READ_PIECE;
        int got = gzread(gz, piece, (unsigned)want);
        if (got < 0) { r.failed = 1; break; }
        if (got == 0) { at_end = 1; break; }
        /* checked as we go, so a large binary file is dropped after one piece */
        const uint8_t *nul = memchr(piece, 0, (size_t)got);
        size_t text = nul ? (size_t)(nul - piece) : (size_t)got;
        if (text) sink(ctx, piece, text);
        r.n += text;
        if (nul) { r.nul = r.n; r.more = 1; break; }
    }
    if (!r.failed && r.nul == NO_NUL && !at_end) {
        /* stopped at the limit: is there more? */
        uint8_t probe;
        int got = gzread(gz, &probe, 1);
        if (got < 0) r.failed = 1;
        r.more = got > 0;
    }
    int err = Z_OK;
    if (at_end) gzerror(gz, &err);   /* zlib reports a truncated or corrupt stream only here */
    if (err != Z_OK) r.failed = 1;
    if (r.failed) {
        const char *msg = gzerror(gz, &err);
        if (err == Z_ERRNO) msg = strerror(errno);
        /* zlib's message starts with the path, which ours names already */
        size_t plen = strlen(path);
        if (strncmp(msg, path, plen) == 0 && strncmp(msg + plen, ": ", 2) == 0) msg += plen + 2;
        snprintf(why, why_len, "%s", msg);
    }
    gzclose(gz);   /* its result only restates errors checked above */
    return r;
}

/* ---- documents of a file, as it streams (pass 1) ----------------------------------------- */

/* A document of the file being read, appended with its embedding (--clusters). text is
 * its bytes, or NULL when they were fed to the embedder as they came. */
static void emit_document(prep_state *s, const uint8_t *text, uint64_t len)
{
    s->docs = grow(s->docs, &s->docs_cap, s->n_docs + 1, sizeof *s->docs, "document list");
    local_doc *d = &s->docs[s->n_docs];
    memset(d, 0, sizeof *d);
    d->start = s->cut.at;
    d->len = len;
    d->file = (uint32_t)(s->n_files - 1);
    d->domain = s->cut.domain;
    if (s->embedder) {
        size_t row = s->n_docs - s->piece[s->n_rounds], dim = (size_t)s->dim;
        s->pending = grow(s->pending, &s->pending_cap, (row + 1) * dim, sizeof(float), "document embeddings");
        if (text) ladle_embed_feed(&s->stream, text, len);
        ladle_embed_finish(&s->stream, s->pending + row * dim);
    }
    s->n_docs++;
    s->cut.at += len;
}

static void cut_begin(cutter *c, uint32_t domain)
{
    c->head = c->len = 0;
    c->at = c->fed = 0;
    c->crc = (uint32_t)crc32(0, NULL, 0);
    c->domain = domain;
}

/* Pass 1's sink: long files become several documents of at most split_doc_bytes, cut
 * after a newline where there is one in the second half of the piece: a dictionary or a
 * concatenated log is many documents, for the split and for clustering alike. Only the
 * text not yet cut off is held (split_doc_bytes + a piece at most). */
static void cut_piece(void *ctx, const uint8_t *bytes, size_t n)
{
    prep_state *s = ctx;
    cutter *c = &s->cut;
    c->crc = (uint32_t)crc32(c->crc, bytes, (uInt)n);
    if (!c->split) {
        if (s->embedder) ladle_embed_feed(&s->stream, bytes, n);
        c->fed += n;
        return;
    }
    if (c->head) {
        memmove(c->buf, c->buf + c->head, c->len - c->head);
        c->len -= c->head;
        c->head = 0;
    }
    c->buf = grow(c->buf, &c->cap, c->len + n, 1, "document being cut");
    memcpy(c->buf + c->len, bytes, n);
    c->len += n;
    while (c->len - c->head > c->split) {
        const uint8_t *d = c->buf + c->head;
        size_t len = (size_t)c->split;
        for (size_t cut = len; cut > c->split / 2; cut--)
            if (d[cut - 1] == '\n') { len = cut; break; }
        emit_document(s, d, len);
        c->head += len;
    }
}

/* At the end of the file: what is left is its last document. */
static void cut_end(prep_state *s)
{
    cutter *c = &s->cut;
    if (!c->split && c->fed) emit_document(s, NULL, c->fed);
    else if (c->split && c->len > c->head) emit_document(s, c->buf + c->head, c->len - c->head);
}

static local_file *add_file(prep_state *s, const char *path)
{
    size_t n = strlen(path) + 1;
    s->paths = grow(s->paths, &s->paths_cap, s->paths_len + n, 1, "file paths");
    memcpy(s->paths + s->paths_len, path, n);
    s->files = grow(s->files, &s->files_cap, s->n_files + 1, sizeof *s->files, "file list");
    local_file *f = &s->files[s->n_files++];
    memset(f, 0, sizeof *f);
    f->path = s->paths_len;
    f->first_doc = s->n_docs;
    s->paths_len += n;
    return f;
}

/* Reads file i of the round (this rank's) into documents, up to limit bytes. A binary or
 * unreadable file gives none (nor one to read again up to a limit below its NUL). */
static void read_new_file(prep_state *s, uint32_t domain, const char *path, int named, uint64_t limit, int i,
                          file_result *res)
{
    add_file(s, path);
    cut_begin(&s->cut, domain);
    char why[256];
    *res = read_text(path, limit, s->piece_buf, cut_piece, s, why, sizeof why);
    local_file *f = &s->files[s->n_files - 1];
    if (res->failed || res->nul != NO_NUL) {
        s->n_docs = f->first_doc;
        if (s->embedder) ladle_embed_finish(&s->stream, s->scratch_row);   /* forget a half-fed document */
        if (res->failed && named && s->why_file < 0) {
            s->why_file = i;
            snprintf(s->why, sizeof s->why, "%s", why);
        }
    } else {
        cut_end(s);
        f->produced = res->n;
        f->crc = s->cut.crc;
    }
    f->docs = s->n_docs - f->first_doc;
}

/* A file read again: it must give the same text (a CRC of the first reading). */
static void check_unchanged(const char *path, const file_result *r, uint64_t bytes, uint32_t crc, uint32_t got)
{
    if (r->failed || r->n != bytes || got != crc)
        LADLE_FAIL("'%s' changed while ladle prep was reading it (read again: %llu bytes%s, %llu the first time)",
                   path, (unsigned long long)r->n, r->failed ? ", then an error" : got != crc ? " of other text" : "",
                   (unsigned long long)bytes);
}

/* The file that crosses max_domain_bytes: its documents again, from its first bytes. It
 * is this rank's last file (the domain ends with it). */
static void reread_file(prep_state *s, uint32_t domain, size_t fi)
{
    local_file *f = &s->files[fi];
    LADLE_CHECK(fi + 1 == s->n_files && f->first_doc == s->n_docs, "prep: the cut file is not the last one");
    cut_begin(&s->cut, domain);
    char why[256];
    file_result r = read_text(s->paths + f->path, f->bytes, s->piece_buf, cut_piece, s, why, sizeof why);
    check_unchanged(s->paths + f->path, &r, f->bytes, s->cut.crc, s->cut.crc);   /* no CRC yet of just these */
    cut_end(s);
    f->produced = f->bytes;
    f->crc = s->cut.crc;
    f->docs = s->n_docs - f->first_doc;
}

/* ---- rank 0's walk ----------------------------------------------------------------- */

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int not_dot(const struct dirent *e)
{
    return strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
}

/* Enters dir (taken over), its entries sorted. */
static void walk_push(walker *w, char *dir)
{
    struct dirent **entries;
    int n = scandir(dir, &entries, not_dot, by_name);
    if (n < 0) {
        w->skipped.unreadable++;
        free(dir);
        return;
    }
    w->stack = grow(w->stack, &w->cap, (size_t)w->depth + 1, sizeof *w->stack, "directory stack");
    w->stack[w->depth++] = (walk_frame){entries, n, 0, dir};
}

static void walk_pop(walker *w)
{
    walk_frame *f = &w->stack[--w->depth];
    for (int i = f->next; i < f->n; i++) free(f->entries[i]);
    free(f->entries);
    free(f->dir);
}

/* An entry of the directory on top of the stack: 1 and *path if a regular file. */
static int walk_entry(walker *w, char **path, uint64_t *size)
{
    walk_frame *f = &w->stack[w->depth - 1];
    struct dirent *e = f->entries[f->next++];
    char *p = join_path(f->dir, e->d_name);
    free(e);
    struct stat st;
    if (lstat(p, &st) != 0) w->skipped.unreadable++;
    else if (S_ISLNK(st.st_mode)) w->skipped.links++;
    else if (S_ISDIR(st.st_mode)) { walk_push(w, p); return 0; }
    else if (S_ISREG(st.st_mode)) { *path = p; *size = (uint64_t)st.st_size; return 1; }
    else w->skipped.special++;
    free(p);
    return 0;
}

/* The domain's next file in walk order: 1 with its path (malloc'd), size and whether it
 * was named; 0 at the end; -1 with why if a named path has gone since it was checked. */
static int walk_next(walker *w, char **path, uint64_t *size, int *named, char *why, size_t why_len)
{
    for (;;) {
        if (w->depth > 0) {
            if (w->stack[w->depth - 1].next == w->stack[w->depth - 1].n) walk_pop(w);
            else if (walk_entry(w, path, size)) { *named = 0; return 1; }
            continue;
        }
        if (w->next_path == w->d->n_paths) return 0;
        const char *p = w->d->paths[w->next_path++];
        struct stat st;   /* a named path is followed if a symlink */
        if (stat(p, &st) != 0) {
            snprintf(why, why_len, "domain '%s': cannot read '%s': %s", w->d->name, p, strerror(errno));
            return -1;
        }
        if (S_ISDIR(st.st_mode)) walk_push(w, copy_string(p));
        else { *path = copy_string(p); *size = (uint64_t)st.st_size; *named = 1; return 1; }
    }
}

static void walker_free(walker *w)
{
    while (w->depth > 0) walk_pop(w);
    free(w->stack);
}

/* ---- rounds ---------------------------------------------------------------------------- */

static void put_bytes(char **buf, size_t *len, size_t *cap, const void *data, size_t n)
{
    *buf = grow(*buf, cap, *len + n, 1, "file list");
    memcpy(*buf + *len, data, n);
    *len += n;
}

/* Rank 0: the next files of domain d, serialised (count, error, then size, named, path of
 * each); r->before gets what the walk passed over before each. */
static char *build_round(prep_state *s, walker *wk, const domain_state *d, round_list *r, size_t *len)
{
    const uint64_t room = s->opt->max_domain_bytes - d->bytes;
    uint64_t target = ROUND_BYTES_PER_RANK * (uint64_t)s->size;
    if (s->opt->max_domain_bytes) target = room < MIN_ROUND_BYTES ? MIN_ROUND_BYTES : room > ROUND_BYTES ? ROUND_BYTES : room;
    r->before = ladle_calloc(ROUND_FILES, sizeof *r->before, "walk counts");
    char *buf = NULL;
    size_t cap = 0;
    uint32_t header[2] = {0, 0};
    *len = 0;
    put_bytes(&buf, len, &cap, header, sizeof header);
    uint64_t bytes = 0;
    while (header[0] < ROUND_FILES && bytes < target) {
        char *path;
        uint64_t size;
        int named, got = walk_next(wk, &path, &size, &named, r->error, sizeof r->error);
        if (got <= 0) break;
        r->before[header[0]++] = wk->skipped;
        memset(&wk->skipped, 0, sizeof wk->skipped);
        uint8_t flag = (uint8_t)named;
        uint32_t n = (uint32_t)strlen(path) + 1;
        put_bytes(&buf, len, &cap, &size, sizeof size);
        put_bytes(&buf, len, &cap, &flag, 1);
        put_bytes(&buf, len, &cap, &n, sizeof n);
        put_bytes(&buf, len, &cap, path, n);
        bytes += size;
        free(path);
    }
    header[1] = (uint32_t)strlen(r->error);
    put_bytes(&buf, len, &cap, r->error, header[1]);
    memcpy(buf, header, sizeof header);
    return buf;
}

static void parse_round(round_list *r, char *buf, size_t len)
{
    uint32_t header[2];
    memcpy(header, buf, sizeof header);
    r->buf = buf;
    r->n = (int)header[0];
    size_t n = (size_t)(r->n ? r->n : 1);
    r->path = ladle_malloc(n * sizeof *r->path, "file list");
    r->size = ladle_malloc(n * sizeof *r->size, "file list");
    r->named = ladle_malloc(n, "file list");
    size_t at = sizeof header;
    for (int i = 0; i < r->n; i++) {
        uint32_t plen;
        memcpy(&r->size[i], buf + at, sizeof r->size[i]);
        r->named[i] = (uint8_t)buf[at + 8];
        memcpy(&plen, buf + at + 9, sizeof plen);
        r->path[i] = buf + at + 13;
        at += 13 + plen;
    }
    LADLE_CHECK(at + header[1] == len && header[1] < sizeof r->error, "prep: a damaged file list");
    memcpy(r->error, buf + at, header[1]);
    r->error[header[1]] = '\0';
}

/* Every rank's share: contiguous files, balanced by size (an empty file weighs 1). */
static void share_round(round_list *r, int rank, int size)
{
    r->counts = ladle_calloc((size_t)size, sizeof(int), "file shares");
    r->displs = ladle_calloc((size_t)size, sizeof(int), "file shares");
    double total = 0.0, cum = 0.0;
    for (int i = 0; i < r->n; i++) total += r->size[i] ? (double)r->size[i] : 1.0;
    for (int i = 0; i < r->n; i++) {
        int owner = (int)(cum * size / total);
        r->counts[owner < size ? owner : size - 1] += (int)sizeof(file_result);
        cum += r->size[i] ? (double)r->size[i] : 1.0;
    }
    for (int p = 1; p < size; p++) r->displs[p] = r->displs[p - 1] + r->counts[p - 1];
    r->lo = r->displs[rank] / (int)sizeof(file_result);
    r->hi = r->lo + r->counts[rank] / (int)sizeof(file_result);
}

static int owner_of(const round_list *r, int i, int size)
{
    int p = 0;
    while (p + 1 < size && r->displs[p + 1] <= i * (int)sizeof(file_result)) p++;
    return p;
}

/* Collective: the next round of domain d (n = 0: the domain has no more files). */
static void next_round(prep_state *s, walker *wk, const domain_state *d, round_list *r)
{
    memset(r, 0, sizeof *r);
    size_t len = 0;
    char *buf = s->rank == 0 ? build_round(s, wk, d, r, &len) : NULL;
    uint64_t n = len;
    MPI_CHECK(MPI_Bcast(&n, 1, MPI_UINT64_T, 0, s->comm));
    LADLE_CHECK(n <= INT_MAX, "prep: a file list of %llu bytes", (unsigned long long)n);
    if (s->rank != 0) buf = ladle_malloc((size_t)n, "file list");
    MPI_CHECK(MPI_Bcast(buf, (int)n, MPI_BYTE, 0, s->comm));
    parse_round(r, buf, (size_t)n);
    share_round(r, s->rank, s->size);
}

static void round_free(round_list *r)
{
    free(r->path); free(r->size); free(r->named); free(r->buf);
    free(r->before); free(r->counts); free(r->displs);
}

/* The serial rules (top of the file) over the round's files in walk order, from what
 * reading them found: kept[i] bytes of file i (0: passed over), and the domain's bytes
 * and counts. Returns the first named file that could not be read, or -1. */
static int scan_round(const prep_state *s, domain_state *d, const round_list *r, const file_result *res,
                      uint64_t *kept)
{
    const uint64_t limit = s->opt->max_domain_bytes;
    for (int i = 0; i < r->n; i++) {
        kept[i] = 0;
        if (d->full) continue;
        if (r->before) add_skips(&d->skipped, &r->before[i]);
        const file_result *f = &res[i];
        uint64_t room = s->opt->max_doc_bytes ? s->opt->max_doc_bytes : UINT64_MAX;
        if (limit && limit - d->bytes < room) room = limit - d->bytes;
        if (f->failed) {
            if (r->named[i]) return i;
            d->skipped.unreadable++;
            continue;
        }
        if (f->nul < room) { d->skipped.binary++; continue; }
        if (f->n == 0) { d->skipped.empty++; continue; }
        kept[i] = f->n < room ? f->n : room;
        d->bytes += kept[i];
        if (limit && d->bytes >= limit) d->full = 1;
        else if (f->n > room || (f->n == room && f->more)) d->skipped.truncated++;
    }
    return -1;
}

/* After the scan: this rank's files of the round that gave text, compacted, each with
 * the documents of exactly its kept bytes. */
static void settle_round(prep_state *s, uint32_t domain, const round_list *r, const uint64_t *kept, size_t first)
{
    size_t w = first, at = first < s->n_files ? s->files[first].path : s->paths_len, reread = SIZE_MAX;
    for (int i = r->lo; i < r->hi; i++) {
        local_file f = s->files[first + (size_t)(i - r->lo)];
        /* past the domain's end: documents to drop (the tail: later files are past it too) */
        if (!kept[i] && f.docs && f.first_doc < s->n_docs) s->n_docs = f.first_doc;
        if (!kept[i]) continue;
        if (kept[i] != f.produced) {   /* cut by max_domain_bytes: read again up to it */
            s->n_docs = f.first_doc;
            f.docs = 0;
            reread = w;
        }
        size_t n = strlen(s->paths + f.path) + 1;
        memmove(s->paths + at, s->paths + f.path, n);
        f.path = at;
        at += n;
        f.bytes = kept[i];
        for (size_t q = f.first_doc; q < f.first_doc + f.docs; q++) s->docs[q].file = (uint32_t)w;
        s->files[w++] = f;
    }
    s->n_files = w;
    s->paths_len = at;
    if (reread != SIZE_MAX) reread_file(s, domain, reread);
}

/* This round's documents of this rank: their index in the domain (hence their split)
 * and their place in it, from the prefix sums over the ranks. */
static void assign_splits(prep_state *s, domain_state *d)
{
    const size_t first = s->piece[s->n_rounds], dim = (size_t)s->dim;
    uint64_t mine = s->n_docs - first, base, total;
    rank_sums(s, &mine, 1, &base, &total);
    uint64_t counts[4] = {0, 0, 0, 0}, pre[4], tot[4];
    for (size_t q = first; q < s->n_docs; q++) {
        local_doc *doc = &s->docs[q];
        doc->dindex = d->docs + base + (q - first);
        doc->split = ladle_rng_uniform(s->opt->seed, d->step, LADLE_STREAM_SPLIT, doc->dindex) < s->opt->valid_fraction
                         ? VALID : TRAIN;
        counts[2 * doc->split]++;
        counts[2 * doc->split + 1] += doc->len;
    }
    rank_sums(s, counts, 4, pre, tot);
    uint64_t index[2] = {d->split_docs[0] + pre[0], d->split_docs[1] + pre[2]};
    uint64_t offset[2] = {d->split_bytes[0] + pre[1], d->split_bytes[1] + pre[3]};
    for (size_t q = first; q < s->n_docs; q++) {
        local_doc *doc = &s->docs[q];
        doc->index = index[doc->split]++;
        doc->offset = offset[doc->split];
        offset[doc->split] += doc->len;
        if (!s->embedder) continue;
        int t = doc->split;
        s->x[t] = grow(s->x[t], &s->x_cap[t], (s->n_x[t] + 1) * dim, sizeof(float), "document embeddings");
        memcpy(s->x[t] + s->n_x[t] * dim, s->pending + (q - first) * dim, dim * sizeof(float));
        doc->xrow = s->n_x[t]++;
    }
    d->docs += total;
    for (int t = 0; t < 2; t++) {
        d->split_docs[t] += tot[2 * t];
        d->split_bytes[t] += tot[2 * t + 1];
    }
}

/* Collective: one round of domain di. */
static void process_round(prep_state *s, int di, round_list *r)
{
    domain_state *d = &s->domains[di];
    uint64_t limit = s->opt->max_doc_bytes ? s->opt->max_doc_bytes : UINT64_MAX;
    if (s->opt->max_domain_bytes && s->opt->max_domain_bytes - d->bytes < limit)
        limit = s->opt->max_domain_bytes - d->bytes;
    s->piece = grow(s->piece, &s->pieces_cap, s->n_rounds + 1, sizeof *s->piece, "rounds");
    s->piece[s->n_rounds] = s->n_docs;
    s->why_file = -1;
    const size_t first_file = s->n_files;
    file_result *res = ladle_calloc((size_t)(r->n ? r->n : 1), sizeof *res, "file results");
    for (int i = r->lo; i < r->hi; i++) read_new_file(s, (uint32_t)di, r->path[i], r->named[i], limit, i, &res[i]);
    MPI_CHECK(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, res, r->counts, r->displs, MPI_BYTE, s->comm));
    uint64_t *kept = ladle_malloc((size_t)(r->n ? r->n : 1) * sizeof *kept, "file results");
    int failed = scan_round(s, d, r, res, kept);
    free(res);
    if (failed >= 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "domain '%s': cannot read '%s': %s", d->src->name, r->path[failed], s->why);
        free(kept);
        error_from(s, owner_of(r, failed, s->size), msg);
    }
    settle_round(s, (uint32_t)di, r, kept, first_file);
    free(kept);
    assign_splits(s, d);
    s->n_rounds++;
    if (r->error[0] && !d->full) error_from(s, 0, r->error);
}

/* ---- domains ------------------------------------------------------------------------ */

/* Moves the embedding of doc (this rank's last in its split) to the end of split to. */
static void move_row(prep_state *s, local_doc *doc, int to)
{
    if (!s->embedder) return;
    const size_t dim = (size_t)s->dim;
    int from = doc->split;
    LADLE_CHECK(doc->xrow + 1 == s->n_x[from], "prep: the moved document is not the last");
    s->x[to] = grow(s->x[to], &s->x_cap[to], (s->n_x[to] + 1) * dim, sizeof(float), "document embeddings");
    memcpy(s->x[to] + s->n_x[to] * dim, s->x[from] + doc->xrow * dim, dim * sizeof(float));
    s->n_x[from]--;
    doc->xrow = s->n_x[to]++;
}

/* Feeds a document's bytes to the embedder in two parts: [0, cut) and the rest. */
typedef struct {
    prep_state *s;
    uint64_t pos, cut;
    float *head;
} halves;

static void halves_piece(void *ctx, const uint8_t *bytes, size_t n)
{
    halves *h = ctx;
    h->s->cut.crc = (uint32_t)crc32(h->s->cut.crc, bytes, (uInt)n);
    if (h->pos < h->cut) {
        size_t a = h->cut - h->pos < n ? (size_t)(h->cut - h->pos) : n;
        ladle_embed_feed(&h->s->stream, bytes, a);
        h->pos += a;
        bytes += a;
        n -= a;
        if (h->pos == h->cut) ladle_embed_finish(&h->s->stream, h->head);
    }
    ladle_embed_feed(&h->s->stream, bytes, n);
    h->pos += n;
}

/* The embeddings of the two parts of document q (this rank's last), [0, cut) and the
 * rest, in place of its own: rows *head of train and *tail of valid. */
static void embed_halves(prep_state *s, size_t q, uint64_t cut, size_t *head, size_t *tail)
{
    const local_doc *doc = &s->docs[q];
    const local_file *f = &s->files[doc->file];
    const size_t dim = (size_t)s->dim;
    LADLE_CHECK(doc->xrow + 1 == s->n_x[doc->split], "prep: the cut document is not the last");
    s->n_x[doc->split]--;
    for (int t = 0; t < 2; t++)
        s->x[t] = grow(s->x[t], &s->x_cap[t], (s->n_x[t] + 1) * dim, sizeof(float), "document embeddings");
    halves h = {s, 0, cut, s->x[TRAIN] + s->n_x[TRAIN] * dim};
    char why[256];
    s->cut.crc = (uint32_t)crc32(0, NULL, 0);
    file_result r = read_text(s->paths + f->path, f->bytes, s->piece_buf, halves_piece, &h, why, sizeof why);
    check_unchanged(s->paths + f->path, &r, f->bytes, f->crc, s->cut.crc);
    ladle_embed_finish(&s->stream, s->x[VALID] + s->n_x[VALID] * dim);
    *head = s->n_x[TRAIN]++;
    *tail = s->n_x[VALID]++;
}

/* The domain's only document, this rank's last, becomes two: its first cut bytes train,
 * the rest valid (with --clusters each embedded on its own, as a document of its split). */
static void cut_only_document(prep_state *s, size_t q, uint64_t cut)
{
    size_t head = 0, tail_row = 0;
    if (s->embedder) embed_halves(s, q, cut, &head, &tail_row);
    local_doc *doc = &s->docs[q];
    local_file *f = &s->files[doc->file];
    LADLE_CHECK(q + 1 == s->n_docs && doc->start == 0 && f->bytes == doc->len, "prep: a domain's only document");
    local_doc tail = *doc;
    tail.start = cut;
    tail.len = doc->len - cut;
    tail.split = VALID;
    tail.index = tail.offset = 0;
    tail.xrow = tail_row;
    doc->len = cut;
    doc->split = TRAIN;
    doc->index = doc->offset = 0;
    doc->xrow = head;
    s->docs = grow(s->docs, &s->docs_cap, s->n_docs + 1, sizeof *s->docs, "document list");
    s->docs[s->n_docs++] = tail;
    f->docs++;
    /* later rounds of this rank (empty: the document was its last) start after it */
    for (size_t r = s->n_rounds; r-- > 0 && s->piece[r] == q + 1;) s->piece[r] = q + 2;
}

/* Collective, once the domain is read: make both splits non-empty (top of the file). */
static void fix_splits(prep_state *s, int di)
{
    domain_state *d = &s->domains[di];
    size_t q = s->n_docs - 1;
    int mine = s->n_docs > 0 && s->docs[q].domain == (uint32_t)di && s->docs[q].dindex == d->docs - 1;
    uint64_t len = max_over_ranks(s, mine ? s->docs[q].len : 0);
    if (d->docs >= 2) {
        int from = d->split_docs[VALID] == 0 ? TRAIN : d->split_docs[TRAIN] == 0 ? VALID : -1;
        if (from < 0) return;
        if (mine) {
            move_row(s, &s->docs[q], 1 - from);
            s->docs[q].split = (uint8_t)(1 - from);
            s->docs[q].index = s->docs[q].offset = 0;
        }
        d->split_docs[from]--;
        d->split_bytes[from] -= len;
        d->split_docs[1 - from] = 1;
        d->split_bytes[1 - from] = len;
        return;
    }
    if (len < 2)
        input_error(s->out, "domain '%s' has only %llu byte of text: it needs at least 2 (train and valid)",
                    d->src->name, (unsigned long long)len);
    uint64_t cut = (uint64_t)((1.0 - s->opt->valid_fraction) * (double)len);
    if (cut < 1) cut = 1;
    if (cut > len - 1) cut = len - 1;
    if (mine) cut_only_document(s, q, cut);
    d->split_docs[TRAIN] = d->split_docs[VALID] = 1;
    d->split_bytes[TRAIN] = cut;
    d->split_bytes[VALID] = len - cut;
}

/* Collective: reads domain di, round after round, and fixes its splits. */
static void read_domain(prep_state *s, int di)
{
    domain_state *d = &s->domains[di];
    walker wk;
    memset(&wk, 0, sizeof wk);
    wk.d = d->src;
    for (;;) {
        round_list r;
        next_round(s, &wk, d, &r);
        int empty = r.n == 0 && !r.error[0];
        if (!empty) process_round(s, di, &r);
        round_free(&r);
        if (empty || d->full) break;
    }
    if (s->rank == 0 && !d->full) add_skips(&d->skipped, &wk.skipped);
    walker_free(&wk);
    if (d->docs == 0)   /* rank 0, which prints it, has all the counts */
        input_error(s->out, "domain '%s' is empty: no text file with any bytes under its paths "
                    "(skipped %zu empty, %zu binary, %zu unreadable, %zu symlinks)",
                    d->src->name, d->skipped.empty, d->skipped.binary, d->skipped.unreadable, d->skipped.links);
    fix_splits(s, di);
}

/* ---- clusters (--clusters K) -------------------------------------------------------- */

typedef struct {
    int k;
    uint64_t n_train;
    float *centroids;               /* [k x dim], the same on every rank */
    uint64_t *stats;                /* [k x 4]: train docs, train bytes, valid docs, valid bytes */
    uint64_t *documents;            /* [k] documents (a cut one counts once) */
    uint64_t *by_source;            /* [k x D] documents from each source */
} clustering;

static size_t piece_end(const prep_state *s, size_t r)
{
    return r + 1 < s->n_rounds ? s->piece[r + 1] : s->n_docs;
}

/* Each document's row among all the train (or valid) documents in walk order, from a
 * sweep of the rounds; rows[xrow] the train ones' (increasing, as kmeans.h wants). */
static void assign_rows(prep_state *s, uint64_t *rows)
{
    uint64_t running[2] = {0, 0};
    for (size_t r = 0; r < s->n_rounds; r++) {
        uint64_t mine[2] = {0, 0}, pre[2], tot[2];
        for (size_t q = s->piece[r]; q < piece_end(s, r); q++) mine[s->docs[q].split]++;
        rank_sums(s, mine, 2, pre, tot);
        uint64_t next[2] = {running[0] + pre[0], running[1] + pre[1]};
        for (size_t q = s->piece[r]; q < piece_end(s, r); q++) {
            local_doc *doc = &s->docs[q];
            doc->row = next[doc->split]++;
            if (doc->split == TRAIN) rows[doc->xrow] = doc->row;
        }
        running[0] += tot[0];
        running[1] += tot[1];
    }
}

static double dot(const float *a, const float *b, int d)
{
    double s = 0;
    for (int i = 0; i < d; i++) s += (double)a[i] * b[i];
    return s;
}

/* A cluster without valid documents gets the train document nearest its centroid (ties:
 * the first), a cluster of one train document keeps it cut in two (as a one-document
 * domain is): over all ranks. */
static void lend_documents(prep_state *s, clustering *c)
{
    const int k = c->k;
    int64_t *count = ladle_calloc(2 * (size_t)k, sizeof *count, "cluster counts");
    for (size_t q = 0; q < s->n_docs; q++) count[(size_t)s->docs[q].split * (size_t)k + (size_t)s->docs[q].cluster]++;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, count, 2 * k, MPI_INT64_T, MPI_SUM, s->comm));
    const int64_t *train = count, *valid = count + k;
    double *best = ladle_malloc((size_t)k * sizeof *best, "cluster loans");
    uint64_t *row = ladle_malloc((size_t)k * sizeof *row, "cluster loans"), *len = ladle_calloc((size_t)k, sizeof *len, "cluster loans");
    for (int j = 0; j < k; j++) { best[j] = -INFINITY; row[j] = UINT64_MAX; }
    for (int pass = 0; pass < 2; pass++) {   /* the best similarity, then the first row with it */
        for (size_t q = 0; q < s->n_docs; q++) {
            const local_doc *doc = &s->docs[q];
            int j = doc->cluster;
            if (doc->split != TRAIN || valid[j] || train[j] < 2) continue;
            double sim = dot(s->x[TRAIN] + doc->xrow * (size_t)s->dim, c->centroids + (size_t)j * (size_t)s->dim, s->dim);
            if (pass == 0 && sim > best[j]) best[j] = sim;
            if (pass == 1 && sim == best[j] && doc->row < row[j]) row[j] = doc->row;
        }
        if (pass == 0) MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, best, k, MPI_DOUBLE, MPI_MAX, s->comm));
        else MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, row, k, MPI_UINT64_T, MPI_MIN, s->comm));
    }
    for (size_t q = 0; q < s->n_docs; q++) {
        local_doc *doc = &s->docs[q];
        if (doc->split != TRAIN) continue;
        if (doc->row == row[doc->cluster]) doc->csplit = VALID;
        if (!valid[doc->cluster] && train[doc->cluster] == 1) len[doc->cluster] = doc->len;
    }
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, len, k, MPI_UINT64_T, MPI_MAX, s->comm));
    for (int j = 0; j < k; j++) {
        if (valid[j] || train[j] != 1) continue;
        char name[16];
        cluster_name(name, j, k);
        if (len[j] < 2)
            input_error(s->out, "cluster %s holds one document of %llu byte: it cannot be split into train and valid; "
                        "use fewer --clusters", name, (unsigned long long)len[j]);
    }
    for (size_t q = 0; q < s->n_docs; q++) {
        local_doc *doc = &s->docs[q];
        int j = doc->cluster;
        if (doc->split != TRAIN || valid[j] || train[j] != 1) continue;
        uint64_t cut = (uint64_t)((1.0 - s->opt->valid_fraction) * (double)doc->len);
        doc->csplit = CUT;
        doc->ccut = cut < 1 ? 1 : cut > doc->len - 1 ? doc->len - 1 : cut;
    }
    free(count); free(best); free(row); free(len);
}

/* What a document adds to its cluster's [train docs, train bytes, valid docs, valid
 * bytes]. */
static void cluster_share(const local_doc *doc, uint64_t v[4])
{
    v[0] = doc->csplit != VALID;
    v[1] = doc->csplit == TRAIN ? doc->len : doc->csplit == CUT ? doc->ccut : 0;
    v[2] = doc->csplit != TRAIN;
    v[3] = doc->csplit == VALID ? doc->len : doc->csplit == CUT ? doc->len - doc->ccut : 0;
}

/* Each document's place in its cluster's split: a sweep of the rounds, each an
 * exclusive scan over the ranks of every cluster's counts. c->stats gets the totals. */
static void cluster_offsets(prep_state *s, clustering *c)
{
    const size_t n = 4 * (size_t)c->k;
    uint64_t *mine = ladle_malloc(n * sizeof *mine, "cluster offsets"), *pre = ladle_malloc(n * sizeof *pre, "cluster offsets");
    uint64_t *tot = ladle_malloc(n * sizeof *tot, "cluster offsets");
    memset(c->stats, 0, n * sizeof *c->stats);
    for (size_t r = 0; r < s->n_rounds; r++) {
        memset(mine, 0, n * sizeof *mine);
        for (size_t q = s->piece[r]; q < piece_end(s, r); q++) {
            uint64_t v[4];
            cluster_share(&s->docs[q], v);
            for (int t = 0; t < 4; t++) mine[4 * (size_t)s->docs[q].cluster + (size_t)t] += v[t];
        }
        MPI_CHECK(MPI_Exscan(mine, pre, (int)n, MPI_UINT64_T, MPI_SUM, s->comm));
        if (s->rank == 0) memset(pre, 0, n * sizeof *pre);   /* Exscan leaves rank 0's undefined */
        MPI_CHECK(MPI_Allreduce(mine, tot, (int)n, MPI_UINT64_T, MPI_SUM, s->comm));
        for (size_t q = s->piece[r]; q < piece_end(s, r); q++) {
            local_doc *doc = &s->docs[q];
            uint64_t *at = pre + 4 * (size_t)doc->cluster, *base = c->stats + 4 * (size_t)doc->cluster, v[4];
            cluster_share(doc, v);
            int t = doc->csplit == VALID ? 2 : 0;   /* a CUT document's train head, or its split */
            doc->cindex = base[t] + at[t];
            doc->coffset = base[t + 1] + at[t + 1];
            for (int u = 0; u < 4; u++) at[u] += v[u];
        }
        for (size_t i = 0; i < n; i++) c->stats[i] += tot[i];
    }
    free(mine); free(pre); free(tot);
}

/* Collective: k-means of the train embeddings, valid documents to their nearest
 * centroid, the loans and cuts, each document's place in its cluster, and the report's
 * counts. */
static void cluster_documents(prep_state *s, clustering *c)
{
    const int k = c->k, dim = s->dim, D = s->n_domains;
    c->n_train = 0;
    for (int i = 0; i < D; i++) c->n_train += s->domains[i].split_docs[TRAIN];
    if ((uint64_t)k > c->n_train)
        input_error(s->out, "--clusters %d is more than the %llu train documents of all domains: use at most %llu "
                    "clusters", k, (unsigned long long)c->n_train, (unsigned long long)c->n_train);
    uint64_t *rows = ladle_malloc((s->n_x[TRAIN] ? s->n_x[TRAIN] : 1) * sizeof *rows, "k-means rows");
    assign_rows(s, rows);
    int *label[2];
    for (int t = 0; t < 2; t++) label[t] = ladle_malloc((s->n_x[t] ? s->n_x[t] : 1) * sizeof(int), "cluster labels");
    c->centroids = ladle_malloc((size_t)k * (size_t)dim * sizeof(float), "cluster centroids");
    ladle_cluster_embeddings(s->x[TRAIN], s->n_x[TRAIN], rows, c->n_train, dim, k, (uint64_t)s->opt->seed, s->comm,
                             c->centroids, label[TRAIN]);
    ladle_nearest_centroids(c->centroids, k, dim, s->x[VALID], s->n_x[VALID], label[VALID], NULL);
    for (size_t q = 0; q < s->n_docs; q++) {
        local_doc *doc = &s->docs[q];
        doc->cluster = label[doc->split][doc->xrow];
        doc->csplit = doc->split;
    }
    free(label[0]); free(label[1]); free(rows);
    lend_documents(s, c);
    c->stats = ladle_malloc(4 * (size_t)k * sizeof *c->stats, "cluster report");
    cluster_offsets(s, c);
    c->documents = ladle_calloc((size_t)k, sizeof *c->documents, "cluster report");
    c->by_source = ladle_calloc((size_t)k * (size_t)D, sizeof *c->by_source, "cluster report");
    for (size_t q = 0; q < s->n_docs; q++) {
        c->documents[s->docs[q].cluster]++;
        c->by_source[(size_t)s->docs[q].cluster * (size_t)D + s->docs[q].domain]++;
    }
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, c->documents, k, MPI_UINT64_T, MPI_SUM, s->comm));
    LADLE_CHECK((size_t)k * (size_t)D <= INT_MAX, "prep: %d clusters of %d sources", k, D);
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, c->by_source, k * D, MPI_UINT64_T, MPI_SUM, s->comm));
}

static void clustering_free(clustering *c)
{
    free(c->centroids);
    free(c->stats);
    free(c->documents);
    free(c->by_source);
}

/* ---- the output file: every dataset at its final size, created collectively ---------- */

static void write_u64_attr(hid_t obj, const char *name, uint64_t value)
{
    ladle_h5_write_scalar_attr(obj, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &value);
}

/* bound: the file's reserved size, grown by what each object may take (reserve_output) */
static hid_t new_group(hid_t parent, const char *name, size_t *bound)
{
    *bound += LADLE_H5_GROUP_BOUND;
    hid_t gcpl = ladle_h5_untimed_group_props();
    hid_t group = H5Gcreate2(parent, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    H5_CHECK(group);
    H5_CHECK(H5Pclose(gcpl));
    return group;
}

/* A contiguous 1-D dataset of n values, written later (independent I/O). */
static void new_dataset(hid_t group, const char *name, hid_t type, uint64_t n, size_t *bound)
{
    *bound += ladle_h5_dataset_bound((size_t)n * H5Tget_size(type));
    hsize_t dims[1] = {n};
    hid_t space = H5Screate_simple(1, dims, NULL);
    H5_CHECK(space);
    /* no timestamps: the same inputs give the same file, byte for byte; no fill: every
     * value is written */
    hid_t dcpl = ladle_h5_untimed_dataset_props();
    H5_CHECK(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER));
    hid_t dset = H5Dcreate2(group, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5_CHECK(dset);
    H5_CHECK(H5Dclose(dset));
    H5_CHECK(H5Pclose(dcpl));
    H5_CHECK(H5Sclose(space));
}

/* The datasets of a domain's two splits: train, train_offsets, valid, valid_offsets, and
 * with labels train_labels, valid_labels. */
static void new_splits(hid_t group, const uint64_t docs[2], const uint64_t bytes[2], int labels, size_t *bound)
{
    new_dataset(group, "train", H5T_STD_U8LE, bytes[TRAIN], bound);
    new_dataset(group, "train_offsets", H5T_STD_U64LE, docs[TRAIN] + 1, bound);
    new_dataset(group, "valid", H5T_STD_U8LE, bytes[VALID], bound);
    new_dataset(group, "valid_offsets", H5T_STD_U64LE, docs[VALID] + 1, bound);
    if (!labels) return;
    new_dataset(group, "train_labels", H5T_STD_U16LE, docs[TRAIN], bound);
    new_dataset(group, "valid_labels", H5T_STD_U16LE, docs[VALID], bound);
}

static void new_domain(hid_t parent, const domain_state *d, size_t *bound)
{
    hid_t group = new_group(parent, d->src->name, bound);
    new_splits(group, d->split_docs, d->split_bytes, 0, bound);
    size_t len = 1;
    for (int i = 0; i < d->src->n_paths; i++) len += strlen(d->src->paths[i]) + 1;
    char *source = ladle_malloc(len, "source attribute");
    source[0] = '\0';
    for (int i = 0, at = 0; i < d->src->n_paths; i++) {
        size_t n = strlen(d->src->paths[i]);
        if (i) source[at++] = ',';
        memcpy(source + at, d->src->paths[i], n + 1);
        at += (int)n;
    }
    ladle_h5_write_string_attr(group, "source", source);
    *bound += LADLE_H5_ATTR_BOUND(len) + 3 * LADLE_H5_ATTR_BOUND(8);
    free(source);
    write_u64_attr(group, "documents", d->docs);
    write_u64_attr(group, "train_docs", d->split_docs[TRAIN]);
    write_u64_attr(group, "valid_docs", d->split_docs[VALID]);
    H5_CHECK(H5Gclose(group));
}

static void new_clusters(const prep_state *s, hid_t file, const clustering *c, size_t *bound)
{
    hid_t domains = new_group(file, "domains", bound);
    for (int j = 0; j < c->k; j++) {
        char name[16], source[64];
        cluster_name(name, j, c->k);
        hid_t group = new_group(domains, name, bound);
        const uint64_t *st = c->stats + 4 * (size_t)j, docs[2] = {st[0], st[2]}, bytes[2] = {st[1], st[3]};
        new_splits(group, docs, bytes, 1, bound);
        snprintf(source, sizeof source, "cluster %d of %d", j, c->k);
        ladle_h5_write_string_attr(group, "source", source);
        *bound += LADLE_H5_ATTR_BOUND(sizeof source) + 3 * LADLE_H5_ATTR_BOUND(8);
        write_u64_attr(group, "documents", c->documents[j]);
        write_u64_attr(group, "train_docs", st[0]);
        write_u64_attr(group, "valid_docs", st[2]);
        H5_CHECK(H5Gclose(group));
    }
    H5_CHECK(H5Gclose(domains));
    /* /clusters: the centroids and a few small attributes */
    *bound += LADLE_H5_GROUP_BOUND + ladle_h5_dataset_bound((size_t)c->k * (size_t)s->dim * sizeof(float)) +
              16 * LADLE_H5_ATTR_BOUND(256);
    ladle_clusters cl = {c->k, *s->embedder, c->centroids};
    ladle_clusters_write(file, &cl, s->rank == 0);
}

/* Collective: the file with its attributes, groups and datasets, no data yet; *bound: an
 * upper bound of its size once written. */
static hid_t create_output(const prep_state *s, const clustering *c, size_t *bound)
{
    *bound = OUTPUT_FIXED_BOUND;   /* superblock, root group and its attributes */
    const ladle_prep_options *o = s->opt;
    hid_t fapl = ladle_h5_fapl_mpio(s->comm);
    hid_t file = H5Fcreate(s->out->tmp_path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5_CHECK(H5Pclose(fapl));
    LADLE_CHECK(file >= 0, "cannot create '%s' (HDF5 through MPI-IO)", s->out->tmp_path);
    ladle_h5_write_string_attr(file, "format", LADLE_CORPUS_FORMAT);
    int version = LADLE_CORPUS_VERSION;
    ladle_h5_write_scalar_attr(file, "format_version", H5T_STD_I32LE, H5T_NATIVE_INT, &version);
    /* what it takes to rebuild the same file */
    write_u64_attr(file, "seed", (uint64_t)o->seed);
    ladle_h5_write_scalar_attr(file, "valid_fraction", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &o->valid_fraction);
    write_u64_attr(file, "max_doc_bytes", o->max_doc_bytes);
    write_u64_attr(file, "max_domain_bytes", o->max_domain_bytes);
    if (c) write_u64_attr(file, "clusters", (uint64_t)c->k);
    /* clustered: the named domains are the sources, the clusters the domains */
    hid_t group = new_group(file, c ? "sources" : "domains", bound);
    for (int i = 0; i < s->n_domains; i++) new_domain(group, &s->domains[i], bound);
    if (c) {
        const char **names = ladle_malloc((size_t)s->n_domains * sizeof *names, "source names");
        for (int i = 0; i < s->n_domains; i++) names[i] = s->domains[i].src->name;
        ladle_h5_write_strings_attr(group, "names", names, s->n_domains);
        *bound += LADLE_H5_ATTR_BOUND((size_t)s->n_domains * (LADLE_NAME_MAX + 16));
        free(names);
    }
    H5_CHECK(H5Gclose(group));
    if (c) new_clusters(s, file, c, bound);
    return file;
}

/* ---- writes: buffered, sorted and coalesced ------------------------------------------------
 * A slot names a dataset: 4 per source domain (train, valid, train_offsets, valid_offsets),
 * then 6 per cluster (the same, train_labels, valid_labels). */

enum { BYTES = 0, OFFSETS = 2, LABELS = 4 };   /* + TRAIN or VALID */

static const char *const slot_names[6] = {"train", "valid", "train_offsets", "valid_offsets", "train_labels",
                                          "valid_labels"};

typedef struct {
    uint32_t slot;
    uint64_t at, count;          /* elements */
    size_t pos;                  /* bytes into the buffer */
} pending_write;

typedef struct {
    prep_state *s;
    int k;                       /* clusters (0: none) */
    hid_t file, dxpl;
    uint8_t *buf, *staging;
    size_t used;
    pending_write *w;
    size_t n;
} writer;

static uint32_t source_slot(int domain, int kind)
{
    return (uint32_t)(4 * domain + kind);
}

static uint32_t cluster_slot(const writer *w, int cluster, int kind)
{
    return (uint32_t)(4 * w->s->n_domains + 6 * cluster + kind);
}

static int slot_kind(const writer *w, uint32_t slot)
{
    uint32_t base = 4 * (uint32_t)w->s->n_domains;
    return slot < base ? (int)(slot % 4) : (int)((slot - base) % 6);
}

static size_t slot_elem(const writer *w, uint32_t slot)
{
    int kind = slot_kind(w, slot);
    return kind < OFFSETS ? 1 : kind < LABELS ? 8 : 2;
}

static void slot_path(const writer *w, uint32_t slot, char *path, size_t len)
{
    uint32_t base = 4 * (uint32_t)w->s->n_domains;
    const char *name = slot_names[slot_kind(w, slot)];
    if (slot < base) {
        snprintf(path, len, "%s/%s/%s", w->k ? "sources" : "domains", w->s->domains[slot / 4].src->name, name);
    } else {
        char cluster[16];
        cluster_name(cluster, (int)((slot - base) / 6), w->k);
        snprintf(path, len, "domains/%s/%s", cluster, name);
    }
}

static int by_place(const void *a, const void *b)
{
    const pending_write *x = a, *y = b;
    if (x->slot != y->slot) return x->slot < y->slot ? -1 : 1;
    return (x->at > y->at) - (x->at < y->at);
}

/* One contiguous run: elements [at, at + count) of dset. */
static void write_run(const prep_output *out, hid_t dset, hid_t mem_type, hid_t dxpl, uint64_t at, uint64_t count,
                      const void *data)
{
    hid_t fspace = H5Dget_space(dset);
    H5_CHECK(fspace);
    hsize_t start[1] = {at}, cnt[1] = {count};
    H5_CHECK(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, cnt, NULL));
    hid_t mspace = H5Screate_simple(1, cnt, NULL);
    H5_CHECK(mspace);
    OUTPUT_CHECK(out, H5Dwrite(dset, mem_type, mspace, fspace, dxpl, data));
    H5_CHECK(H5Sclose(mspace));
    H5_CHECK(H5Sclose(fspace));
}

/* Writes what is pending: sorted by dataset and place, each dataset opened once (an open
 * handle costs HDF5 some 9 KiB: not one for each of 6 K datasets), each run of pieces
 * that continue one another written as one. */
static void writer_flush(writer *w)
{
    qsort(w->w, w->n, sizeof *w->w, by_place);
    for (size_t i = 0; i < w->n;) {
        const uint32_t slot = w->w[i].slot;
        const size_t elem = slot_elem(w, slot);
        const hid_t mem_type = elem == 1 ? H5T_NATIVE_UINT8 : elem == 8 ? H5T_NATIVE_UINT64 : H5T_NATIVE_UINT16;
        char path[LADLE_NAME_MAX + 64];
        slot_path(w, slot, path, sizeof path);
        hid_t dset = H5Dopen2(w->file, path, H5P_DEFAULT);
        H5_CHECK(dset);
        while (i < w->n && w->w[i].slot == slot) {
            uint64_t at = w->w[i].at, count = 0;
            size_t staged = 0;
            do {
                memcpy(w->staging + staged, w->buf + w->w[i].pos, w->w[i].count * elem);
                staged += w->w[i].count * elem;
                count += w->w[i].count;
                i++;
            } while (i < w->n && w->w[i].slot == slot && w->w[i].at == at + count);
            write_run(w->s->out, dset, mem_type, w->dxpl, at, count, w->staging);
        }
        OUTPUT_CHECK(w->s->out, H5Dclose(dset));
    }
    w->n = 0;
    w->used = 0;
}

/* count elements of slot from element `at` on. */
static void writer_put(writer *w, uint32_t slot, uint64_t at, const void *data, uint64_t count)
{
    const size_t elem = slot_elem(w, slot);
    const uint8_t *bytes = data;
    while (count > 0) {
        if (w->used + elem > WRITE_BYTES || w->n == WRITE_PIECES) writer_flush(w);
        uint64_t take = (WRITE_BYTES - w->used) / elem;
        if (take > count) take = count;
        memcpy(w->buf + w->used, bytes, take * elem);
        w->w[w->n++] = (pending_write){slot, at, take, w->used};
        w->used += take * elem;
        bytes += take * elem;
        at += take;
        count -= take;
    }
}

static void writer_create(writer *w, prep_state *s, const clustering *c, hid_t file)
{
    memset(w, 0, sizeof *w);
    w->s = s;
    w->k = c ? c->k : 0;
    w->file = file;
    w->dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5_CHECK(w->dxpl);
    /* independent: a rank's documents are its own (ckpt.c measured collective transfers
     * slower when each rank's data is its own) */
    H5_CHECK(H5Pset_dxpl_mpio(w->dxpl, H5FD_MPIO_INDEPENDENT));
    w->buf = ladle_malloc(WRITE_BYTES, "pending writes");
    w->staging = ladle_malloc(WRITE_BYTES, "pending writes");
    w->w = ladle_malloc(WRITE_PIECES * sizeof *w->w, "pending writes");
}

static void writer_free(writer *w)
{
    writer_flush(w);
    H5_CHECK(H5Pclose(w->dxpl));
    free(w->buf);
    free(w->staging);
    free(w->w);
}

/* ---- pass 2: every value into its place ------------------------------------------------ */

static void put_u64(writer *w, uint32_t slot, uint64_t at, uint64_t value)
{
    writer_put(w, slot, at, &value, 1);
}

/* Offsets and labels of this rank's documents; rank 0 also each offsets dataset's end. */
static void write_offsets(writer *w, const clustering *c)
{
    const prep_state *s = w->s;
    for (size_t q = 0; q < s->n_docs; q++) {
        const local_doc *doc = &s->docs[q];
        put_u64(w, source_slot((int)doc->domain, OFFSETS + doc->split), doc->index, doc->offset);
        if (!c) continue;
        uint16_t label = (uint16_t)doc->domain;
        int t = doc->csplit == VALID ? VALID : TRAIN;
        put_u64(w, cluster_slot(w, doc->cluster, OFFSETS + t), doc->cindex, doc->coffset);
        writer_put(w, cluster_slot(w, doc->cluster, LABELS + t), doc->cindex, &label, 1);
        if (doc->csplit != CUT) continue;
        put_u64(w, cluster_slot(w, doc->cluster, OFFSETS + VALID), 0, 0);
        writer_put(w, cluster_slot(w, doc->cluster, LABELS + VALID), 0, &label, 1);
    }
    if (s->rank != 0) return;
    for (int i = 0; i < s->n_domains; i++)
        for (int t = 0; t < 2; t++)
            put_u64(w, source_slot(i, OFFSETS + t), s->domains[i].split_docs[t], s->domains[i].split_bytes[t]);
    for (int j = 0; c && j < c->k; j++)
        for (int t = 0; t < 2; t++)
            put_u64(w, cluster_slot(w, j, OFFSETS + t), c->stats[4 * (size_t)j + 2 * (size_t)t],
                    c->stats[4 * (size_t)j + 2 * (size_t)t + 1]);
}

/* Pass 2's sink: the text of a file goes to its documents' places, in its domain's split
 * and in its cluster's. */
typedef struct {
    writer *w;
    const clustering *c;
    size_t q;                    /* the document the next byte belongs to */
    uint64_t pos;                /* file position of the next byte */
    uint32_t crc;
} dispatch;

static void cluster_put(dispatch *p, const local_doc *doc, uint64_t rel, const uint8_t *bytes, uint64_t n)
{
    if (doc->csplit != CUT) {
        writer_put(p->w, cluster_slot(p->w, doc->cluster, BYTES + doc->csplit), doc->coffset + rel, bytes, n);
        return;
    }
    uint64_t head = rel < doc->ccut ? (doc->ccut - rel < n ? doc->ccut - rel : n) : 0;
    if (head) writer_put(p->w, cluster_slot(p->w, doc->cluster, BYTES + TRAIN), doc->coffset + rel, bytes, head);
    if (n > head) writer_put(p->w, cluster_slot(p->w, doc->cluster, BYTES + VALID), rel + head - doc->ccut, bytes + head,
                             n - head);
}

static void dispatch_piece(void *ctx, const uint8_t *bytes, size_t n)
{
    dispatch *p = ctx;
    const prep_state *s = p->w->s;
    p->crc = (uint32_t)crc32(p->crc, bytes, (uInt)n);
    while (n > 0) {
        const local_doc *doc = &s->docs[p->q];
        uint64_t rel = p->pos - doc->start, take = doc->len - rel < n ? doc->len - rel : n;
        writer_put(p->w, source_slot((int)doc->domain, BYTES + doc->split), doc->offset + rel, bytes, take);
        if (p->c) cluster_put(p, doc, rel, bytes, take);
        p->pos += take;
        bytes += take;
        n -= (size_t)take;
        if (p->pos == doc->start + doc->len) p->q++;
    }
}

/* Every byte of this rank's documents, its files read a second time. */
static void write_texts(writer *w, const clustering *c)
{
    prep_state *s = w->s;
    for (size_t f = 0; f < s->n_files; f++) {
        const local_file *file = &s->files[f];
        dispatch p = {w, c, file->first_doc, 0, (uint32_t)crc32(0, NULL, 0)};
        char why[256];
        const char *path = s->paths + file->path;
        file_result r = read_text(path, file->bytes, s->piece_buf, dispatch_piece, &p, why, sizeof why);
        check_unchanged(path, &r, file->bytes, file->crc, p.crc);
    }
}

/* ---- the report (rank 0) ------------------------------------------------------------------ */

/* The two largest entries of v[n] (v[stride*i]), as indices; -1 when absent or zero. */
static void top_entries(const uint64_t *v, size_t stride, int n, int *top, int want)
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

static void report_clusters(const prep_state *s, const clustering *c, FILE *report)
{
    const int k = c->k, n_src = s->n_domains;
    char name[16];
    const ladle_embed_params *p = &s->embedder->params;
    fprintf(report, "\nclusters: spherical k-means of %llu train documents into %d (embedding: byte 1..%d-grams, "
            "%d buckets, dim %d)\n", (unsigned long long)c->n_train, k, p->ngram, p->buckets, p->dim);
    fprintf(report, "%-24s %10s %13s %10s %13s  %s\n", "cluster", "train docs", "train bytes", "valid docs",
            "valid bytes", "top sources (share of its documents)");
    for (int j = 0; j < k; j++) {
        const uint64_t *st = c->stats + (size_t)j * 4, *by = c->by_source + (size_t)j * (size_t)n_src;
        int top[2];
        top_entries(by, 1, n_src, top, 2);
        cluster_name(name, j, k);
        fprintf(report, "%-24s %10llu %13llu %10llu %13llu ", name, (unsigned long long)st[0], (unsigned long long)st[1],
                (unsigned long long)st[2], (unsigned long long)st[3]);
        for (int t = 0; t < 2 && top[t] >= 0; t++)
            fprintf(report, "%s %s %.1f%%", t ? "," : "", s->domains[top[t]].src->name,
                    100.0 * (double)by[top[t]] / (double)c->documents[j]);
        fputc('\n', report);
    }
    fprintf(report, "%-24s  %s\n", "source", "top clusters (share of its documents)");
    for (int i = 0; i < n_src; i++) {
        uint64_t total = 0;
        for (int j = 0; j < k; j++) total += c->by_source[(size_t)j * (size_t)n_src + (size_t)i];
        int top[3];
        top_entries(c->by_source + i, (size_t)n_src, k, top, 3);
        fprintf(report, "%-24s ", s->domains[i].src->name);
        for (int t = 0; t < 3 && top[t] >= 0; t++) {
            cluster_name(name, top[t], k);
            fprintf(report, "%s %s %.1f%%", t ? "," : "", name,
                    100.0 * (double)c->by_source[(size_t)top[t] * (size_t)n_src + (size_t)i] / (double)total);
        }
        fputc('\n', report);
    }
}

static void report_domain(const prep_state *s, int i, FILE *report)
{
    const domain_state *d = &s->domains[i];
    if (i == 0)   /* not before: an input error would follow it */
        fprintf(report, "%-24s %10s %13s %10s %13s\n", s->opt->clusters ? "source" : "domain", "train docs",
                "train bytes", "valid docs", "valid bytes");
    fprintf(report, "%-24s %10llu %13llu %10llu %13llu%s\n", d->src->name, (unsigned long long)d->split_docs[TRAIN],
            (unsigned long long)d->split_bytes[TRAIN], (unsigned long long)d->split_docs[VALID],
            (unsigned long long)d->split_bytes[VALID], d->full ? "  (max domain bytes reached)" : "");
}

static void report_totals(const prep_state *s, FILE *report)
{
    uint64_t totals[4] = {0, 0, 0, 0};
    skip_counts skipped = {0};
    int n_full = 0;
    for (int i = 0; i < s->n_domains; i++) {
        const domain_state *d = &s->domains[i];
        for (int t = 0; t < 2; t++) {
            totals[2 * t] += d->split_docs[t];
            totals[2 * t + 1] += d->split_bytes[t];
        }
        add_skips(&skipped, &d->skipped);
        n_full += d->full;
    }
    char label[32];
    snprintf(label, sizeof label, "total (%d %s)", s->n_domains, s->opt->clusters ? "sources" : "domains");
    fprintf(report, "%-24s %10llu %13llu %10llu %13llu\n", label, (unsigned long long)totals[0],
            (unsigned long long)totals[1], (unsigned long long)totals[2], (unsigned long long)totals[3]);
    const skip_counts *k = &skipped;
    if (k->empty || k->binary || k->unreadable || k->links || k->special)
        fprintf(report, "skipped files: %zu empty, %zu binary, %zu unreadable, %zu symlinks, %zu special\n", k->empty,
                k->binary, k->unreadable, k->links, k->special);
    if (k->truncated)
        fprintf(report, "%zu documents cut at max doc bytes (%zu)\n", k->truncated, s->opt->max_doc_bytes);
    if (n_full) fprintf(report, "%d domains cut at max domain bytes (%zu)\n", n_full, s->opt->max_domain_bytes);
}

/* ---- the command ----------------------------------------------------------------------- */

/* A path named on the command line: followed if a symlink, and must be readable. Returns
 * 0, or -1 with the problem in why. */
static int check_named_path(const char *domain, const char *path, char *why, size_t len)
{
    struct stat st;
    int ok = stat(path, &st) == 0;
    if (ok && S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        ok = d != NULL;
        if (d) closedir(d);
    } else if (ok && S_ISREG(st.st_mode)) {
        FILE *f = fopen(path, "rb");
        ok = f != NULL;
        if (f) fclose(f);
    } else if (ok) {
        snprintf(why, len, "domain '%s': '%s' is neither a regular file nor a directory", domain, path);
        return -1;
    }
    if (!ok) snprintf(why, len, "domain '%s': cannot read '%s': %s", domain, path, strerror(errno));
    return ok ? 0 : -1;
}

/* A problem with domain i's name or paths list (sorted by name): 1 with it in why. */
static int name_problem(const ladle_prep_domain *const *order, int i, char *why, size_t len)
{
    const char *name = order[i]->name;
    size_t n = strlen(name);
    int bad = 1;
    if (n == 0) snprintf(why, len, "empty domain name: use --domain NAME=PATH[,PATH...]");
    else if (n >= LADLE_NAME_MAX)
        snprintf(why, len, "domain name '%s' is too long (%zu bytes, at most %d)", name, n, LADLE_NAME_MAX - 1);
    else if (strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") < n)
        snprintf(why, len, "domain name '%s' has the character '%c': names use only A-Z a-z 0-9 _ . -", name,
                 name[strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")]);
    /* '.' and '..' would be legal HDF5 link names but confuse every path-based tool */
    else if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        snprintf(why, len, "domain name '%s' is not allowed", name);
    else if (i > 0 && strcmp(order[i - 1]->name, name) == 0)
        snprintf(why, len, "domain '%s' is given twice: give all its paths in one --domain NAME=PATH,PATH...", name);
    else if (order[i]->n_paths < 1) snprintf(why, len, "domain '%s' has no paths", name);
    else bad = 0;
    return bad;
}

static int by_domain_name(const void *a, const void *b)
{
    return strcmp((*(const ladle_prep_domain *const *)a)->name, (*(const ladle_prep_domain *const *)b)->name);
}

/* Every input checked before anything is read or written (the same on every rank but
 * for the paths, which rank 0 checks). Domains are processed (and stored) sorted by name,
 * so the order of --domain options does not matter. */
static void check_inputs(prep_state *s, const ladle_prep_domain *domains, int n)
{
    const ladle_prep_options *o = s->opt;
    if (n < 1) ladle_usage_error("no domains to prepare: use --domain NAME=PATH[,PATH...]");
    if (!(o->valid_fraction > 0.0 && o->valid_fraction < 1.0))
        ladle_usage_error("valid fraction must be between 0 and 1 (exclusive), got %g", o->valid_fraction);
    if (o->clusters < 0) ladle_usage_error("--clusters %d: expected a count >= 1 (or 0 for none)", o->clusters);
    /* the labels of clustered documents are uint16 source indices */
    if (o->clusters > 0 && n > 65536) ladle_usage_error("--clusters takes at most 65536 source domains, got %d", n);
    const ladle_prep_domain **order = ladle_malloc((size_t)n * sizeof *order, "domain order");
    for (int i = 0; i < n; i++) order[i] = &domains[i];
    qsort(order, (size_t)n, sizeof *order, by_domain_name);
    /* in the serial order: the first domain (by name) with a problem, its name first */
    char why[1024] = "", bad[1024] = "";
    int first_bad = n;
    for (int i = 0; i < n && first_bad == n; i++)
        if (name_problem(order, i, bad, sizeof bad)) first_bad = i;
    for (int i = 0; s->rank == 0 && i < first_bad && !why[0]; i++)
        for (int j = 0; j < order[i]->n_paths && !why[0]; j++) check_named_path(order[i]->name, order[i]->paths[j], why, sizeof why);
    agree(s, why);
    if (first_bad < n) ladle_usage_error("%s", bad);
    s->domains = ladle_calloc((size_t)n, sizeof *s->domains, "domains");
    s->n_domains = n;
    for (int i = 0; i < n; i++) {
        s->domains[i].src = order[i];
        s->domains[i].step = fnv1a(order[i]->name);
    }
    free(order);
}

/* Rank 0: the output can be created (a plain open first: HDF5's failure would not say
 * why). It stays, and is truncated when the file is created. */
static void probe_output(prep_state *s)
{
    char why[1024] = "";
    if (s->rank == 0) {
        FILE *probe = fopen(s->out->tmp_path, "wb");
        if (!probe) snprintf(why, sizeof why, "cannot create '%s': %s", s->out->tmp_path, strerror(errno));
        else { fclose(probe); s->out->probed = 1; }
    }
    agree(s, why);
}

/* The embedder of --clusters (its parameters checked before any output). */
static void start_embedding(prep_state *s, ladle_embedder *e)
{
    const ladle_prep_options *o = s->opt;
    if (o->clusters <= 0) return;
    ladle_embed_params ep;
    ladle_embed_params_default(&ep);
    if (o->embed_ngram) ep.ngram = o->embed_ngram;
    if (o->embed_buckets) ep.buckets = o->embed_buckets;
    if (o->embed_dim) ep.dim = o->embed_dim;
    ep.seed = (uint64_t)o->seed;
    ladle_embedder_create(e, &ep);
    s->embedder = e;
    s->dim = ep.dim;
    ladle_embed_stream_create(&s->stream, e);
    s->scratch_row = ladle_malloc((size_t)ep.dim * sizeof(float), "document embedding");
}

static void state_free(prep_state *s)
{
    free(s->domains); free(s->files); free(s->paths); free(s->docs); free(s->piece);
    free(s->pending); free(s->x[0]); free(s->x[1]); free(s->scratch_row);
    free(s->piece_buf); free(s->cut.buf); free(s->gathered);
    if (s->embedder) {
        ladle_embed_stream_free(&s->stream);
        ladle_embedder_free(s->embedder);
    }
}

/* Collective, right after creating the file: rank 0 reserves its bound; if the file system
 * has no room, every rank learns it before any data is written, and the file is removed. */
static void reserve_output(prep_state *s, size_t bound)
{
    char why[256] = "";
    if (ladle_reserve_space(s->out->tmp_path, bound, s->comm, why, sizeof why) != 0)
        ladle_runtime_error_cleanup(remove_output, s->out, "no room to write '%s': %s; nothing was written",
                                    s->out->final_path, why);
}

/* Collective: the datasets, then every value, independently; renamed once all are in. */
static void write_output(prep_state *s, const clustering *c)
{
    size_t reserved;
    hid_t file = create_output(s, c, &reserved);
    s->out->file = file;
    reserve_output(s, reserved);
    writer w;
    writer_create(&w, s, c, file);
    write_offsets(&w, c);
    write_texts(&w, c);
    writer_free(&w);
    s->out->file = -1;
    OUTPUT_CHECK(s->out, H5Fclose(file));   /* collective: every rank's data is in the file */
    MPI_CHECK(MPI_Barrier(s->comm));
    if (s->rank == 0) {
        ladle_sync_and_trim(s->out->tmp_path, reserved);
        if (rename(s->out->tmp_path, s->out->final_path) != 0)
            LADLE_FAIL("cannot rename '%s' to '%s': %s", s->out->tmp_path, s->out->final_path, strerror(errno));
    }
    MPI_CHECK(MPI_Barrier(s->comm));
}

void ladle_prep(const char *out_path, const ladle_prep_domain *domains, int n_domains,
                const ladle_prep_options *options, MPI_Comm comm, FILE *report)
{
    prep_state s;
    memset(&s, 0, sizeof s);
    s.opt = options;
    s.comm = comm;
    MPI_CHECK(MPI_Comm_rank(comm, &s.rank));
    MPI_CHECK(MPI_Comm_size(comm, &s.size));
    ladle_h5_quiet();
    size_t tmp_len = strlen(out_path) + 5;
    char *tmp_path = ladle_malloc(tmp_len, "output path");
    snprintf(tmp_path, tmp_len, "%s.tmp", out_path);
    prep_output out = {out_path, tmp_path, -1, 0, s.rank};
    s.out = &out;
    if (s.rank != 0) report = NULL;

    check_inputs(&s, domains, n_domains);
    ladle_embedder embedder;
    start_embedding(&s, &embedder);
    probe_output(&s);
    s.piece_buf = ladle_malloc(READ_PIECE, "read buffer");
    s.gathered = ladle_malloc((size_t)s.size * 4 * sizeof *s.gathered, "rank sums");
    s.cut.split = options->split_doc_bytes;
    for (int i = 0; i < s.n_domains; i++) {
        read_domain(&s, i);
        if (report) report_domain(&s, i, report);
    }
    clustering cl;
    memset(&cl, 0, sizeof cl);
    cl.k = options->clusters;
    if (cl.k) cluster_documents(&s, &cl);
    write_output(&s, cl.k ? &cl : NULL);

    if (report) {
        report_totals(&s, report);
        if (cl.k) report_clusters(&s, &cl, report);
        fprintf(report, "wrote %s\n", out_path);
    }
    clustering_free(&cl);
    state_free(&s);
    free(tmp_path);
}
