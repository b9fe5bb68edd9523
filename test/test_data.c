/* Unit tests of prep (text files -> corpus file) and data (corpus file -> batches).
 * A single process: run directly, no mpiexec. Error paths exit the process, so they are
 * tested from the shell (test/bad_input.sh), not here. */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700
#endif

#include "ladle/data.h"
#include "ladle/prep.h"
#include "ladle/rng.h"
#include "testfs.h"
#include "testutil.h"

#include <hdf5.h>
#include <mpi.h>
#include <zlib.h>

#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static test_counts T;
static char root[512];

/* ---- fixture ------------------------------------------------------------------ */

typedef struct {
    char *bytes;
    size_t n;
} doc;

/* Deterministic printable text, different for every seed. */
static doc make_text(size_t n, unsigned seed)
{
    doc d = {malloc(n + 1), n};
    uint64_t x = 0x9e3779b97f4a7c15ULL * (seed + 1);
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        unsigned r = (unsigned)(x % 32);
        d.bytes[i] = r < 26 ? (char)('a' + r) : r < 30 ? ' ' : '\n';
    }
    d.bytes[n] = '\0';
    return d;
}

#define path_of(rel) test_path(root, (rel))

static void write_file(const char *rel, const void *data, size_t n)
{
    FILE *f = fopen(path_of(rel), "wb");
    if (!f) { perror(rel); exit(1); }
    if (n && fwrite(data, 1, n, f) != n) { perror(rel); exit(1); }
    fclose(f);
}

static void make_dir(const char *rel)
{
    if (mkdir(path_of(rel), 0755) != 0) { perror(rel); exit(1); }
}


/* The documents each domain should hold, in walk order. */
enum { N_GAMMA = 40 };
static doc alpha_docs[4];   /* one.txt, sub/four.gz, sub/three.txt, two.txt */
static doc beta_doc;
static doc gamma_docs[N_GAMMA + 1];
static doc delta_docs[2];

static void build_fixture(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/ladle-test-data-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(root)) { perror("mkdtemp"); exit(1); }

    /* alpha: a directory tree with things prep must skip */
    make_dir("a");
    make_dir("a/sub");
    doc one = make_text(3000, 1), two = make_text(1500, 2), three = make_text(2200, 3), four = make_text(4000, 4);
    write_file("a/one.txt", one.bytes, one.n);
    write_file("a/two.txt", two.bytes, two.n);
    write_file("a/sub/three.txt", three.bytes, three.n);
    gzFile gz = gzopen(path_of("a/sub/four.gz"), "wb");
    if (!gz || gzwrite(gz, four.bytes, (unsigned)four.n) != (int)four.n || gzclose(gz) != Z_OK) {
        fprintf(stderr, "cannot write four.gz\n");
        exit(1);
    }
    write_file("a/empty.txt", "", 0);
    doc blob = make_text(500, 5);
    blob.bytes[250] = '\0';
    write_file("a/blob.bin", blob.bytes, blob.n);
    free(blob.bytes);
    if (symlink(path_of("a"), path_of("a/sub/loop")) != 0) { perror("symlink"); exit(1); }
    if (symlink("one.txt", path_of("a/link.txt")) != 0) { perror("symlink"); exit(1); }
    /* sorted by strcmp: one.txt < sub/ < two.txt; in sub: four.gz < three.txt */
    alpha_docs[0] = one;
    alpha_docs[1] = four;
    alpha_docs[2] = three;
    alpha_docs[3] = two;

    /* beta: one file, named directly: cut in two */
    beta_doc = make_text(5000, 6);
    write_file("b.txt", beta_doc.bytes, beta_doc.n);

    /* gamma: many small documents, plus a second path */
    make_dir("c");
    for (int i = 0; i < N_GAMMA; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, "c/doc%02d.txt", i);
        gamma_docs[i] = make_text(100 + (size_t)(i * 37) % 200, 100 + (unsigned)i);
        write_file(rel, gamma_docs[i].bytes, gamma_docs[i].n);
    }
    gamma_docs[N_GAMMA] = make_text(1500, 2);   /* a/two.txt again */

    /* delta: two documents and a tiny valid fraction: the fix-up must make a valid split */
    make_dir("d");
    delta_docs[0] = make_text(700, 7);
    delta_docs[1] = make_text(800, 8);
    write_file("d/x.txt", delta_docs[0].bytes, delta_docs[0].n);
    write_file("d/y.txt", delta_docs[1].bytes, delta_docs[1].n);
}

static const char *alpha_paths[1], *beta_paths[1], *gamma_paths[2], *delta_paths[1];
static ladle_prep_domain fixture_domains[4];

static void fixture_domain_list(void)
{
    alpha_paths[0] = strdup(path_of("a"));
    beta_paths[0] = strdup(path_of("b.txt"));
    gamma_paths[0] = strdup(path_of("c"));
    gamma_paths[1] = strdup(path_of("a/two.txt"));
    delta_paths[0] = strdup(path_of("d"));
    /* deliberately not sorted: prep sorts by name */
    fixture_domains[0] = (ladle_prep_domain){"gamma", 2, gamma_paths};
    fixture_domains[1] = (ladle_prep_domain){"alpha", 1, alpha_paths};
    fixture_domains[2] = (ladle_prep_domain){"delta", 1, delta_paths};
    fixture_domains[3] = (ladle_prep_domain){"beta", 1, beta_paths};
}

static size_t total_bytes(const doc *docs, int n)
{
    size_t s = 0;
    for (int i = 0; i < n; i++) s += docs[i].n;
    return s;
}

/* Train and valid must be the documents, in order, each in exactly one of them. */
static int is_partition(const ladle_domain *d, const doc *docs, int n)
{
    size_t t = 0, v = 0;
    for (int i = 0; i < n; i++) {
        if (t + docs[i].n <= d->train_bytes && memcmp(d->train + t, docs[i].bytes, docs[i].n) == 0)
            t += docs[i].n;
        else if (v + docs[i].n <= d->valid_bytes && memcmp(d->valid + v, docs[i].bytes, docs[i].n) == 0)
            v += docs[i].n;
        else
            return 0;
    }
    return t == d->train_bytes && v == d->valid_bytes;
}

static int contains(const uint8_t *hay, size_t n, const uint8_t *needle, size_t m)
{
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0) return 1;
    return 0;
}

/* ---- tests -------------------------------------------------------------------- */

static void prep_fixture(const char *out, const ladle_prep_domain *domains, int n, double vf,
                         size_t max_doc, size_t max_domain, char **report_text)
{
    ladle_prep_options opt = {.valid_fraction = vf, .seed = 1234, .max_doc_bytes = max_doc,
                              .max_domain_bytes = max_domain};
    size_t len = 0;
    char *text = NULL;
    FILE *report = open_memstream(&text, &len);
    ladle_prep(out, domains, n, &opt, MPI_COMM_WORLD, report);
    fclose(report);
    if (report_text) *report_text = text;
    else free(text);
}

static void test_prep_and_open(void)
{
    char out[1024], out2[1024], out3[1024];
    snprintf(out, sizeof out, "%s/corpus.h5", root);
    snprintf(out2, sizeof out2, "%s/corpus2.h5", root);
    snprintf(out3, sizeof out3, "%s/corpus3.h5", root);

    /* delta's valid_fraction is global; 0.1 with two docs often gives no valid doc */
    char *report = NULL;
    prep_fixture(out, fixture_domains, 4, 0.1, 0, 0, &report);
    EXPECT(&T, strstr(report, "alpha") && strstr(report, "total"), "report lacks rows:\n%s", report);
    EXPECT(&T, strstr(report, "1 empty, 1 binary") != NULL, "report does not count skipped files:\n%s", report);
    free(report);
    EXPECT(&T, access(path_of("corpus.h5.tmp"), F_OK) != 0, "temporary file left behind");

    ladle_corpus c;
    ladle_corpus_open(&c, out, LADLE_CORPUS_MEMORY, MPI_COMM_WORLD);
    EXPECT(&T, c.n_domains == 4, "n_domains %d", c.n_domains);
    const char *names[4] = {"alpha", "beta", "delta", "gamma"};
    for (int i = 0; i < c.n_domains && i < 4; i++)
        EXPECT(&T, strcmp(c.domains[i].name, names[i]) == 0, "domain %d is '%s', want '%s'", i,
               c.domains[i].name, names[i]);
    if (c.n_domains != 4) return;
    ladle_domain *alpha = &c.domains[0], *beta = &c.domains[1], *delta = &c.domains[2], *gamma = &c.domains[3];

    /* every byte of every text file, nothing else */
    EXPECT(&T, alpha->train_bytes + alpha->valid_bytes == total_bytes(alpha_docs, 4), "alpha bytes %zu + %zu",
           alpha->train_bytes, alpha->valid_bytes);
    EXPECT(&T, alpha->train_docs + alpha->valid_docs == 4, "alpha docs %zu + %zu", alpha->train_docs,
           alpha->valid_docs);
    EXPECT(&T, is_partition(alpha, alpha_docs, 4), "alpha is not its documents in walk order");
    EXPECT(&T, gamma->train_bytes + gamma->valid_bytes == total_bytes(gamma_docs, N_GAMMA + 1),
           "gamma bytes %zu + %zu", gamma->train_bytes, gamma->valid_bytes);
    EXPECT(&T, gamma->train_docs + gamma->valid_docs == N_GAMMA + 1, "gamma docs");
    EXPECT(&T, is_partition(gamma, gamma_docs, N_GAMMA + 1), "gamma is not its documents in order");
    EXPECT(&T, is_partition(delta, delta_docs, 2), "delta is not its documents in order");

    /* one document: cut at (1 - valid_fraction), counted in both splits */
    EXPECT(&T, beta->train_docs == 1 && beta->valid_docs == 1, "beta docs %zu/%zu", beta->train_docs,
           beta->valid_docs);
    EXPECT(&T, beta->train_bytes >= 4499 && beta->train_bytes <= 4500, "beta train bytes %zu", beta->train_bytes);
    EXPECT(&T, beta->train_bytes + beta->valid_bytes == beta_doc.n
               && memcmp(beta->train, beta_doc.bytes, beta->train_bytes) == 0
               && memcmp(beta->valid, beta_doc.bytes + beta->train_bytes, beta->valid_bytes) == 0,
           "beta is not its file cut in two");

    /* both splits non-empty everywhere */
    for (int i = 0; i < c.n_domains; i++)
        EXPECT(&T, c.domains[i].train_docs >= 1 && c.domains[i].valid_docs >= 1 && c.domains[i].valid_bytes > 0,
               "domain '%s' has an empty split", c.domains[i].name);
    ladle_corpus_check_context(&c, out, 64);   /* returns: every split holds 65 bytes */
    EXPECT(&T, 1, "check_context");

    /* determinism: the same inputs give the same file, whatever the --domain order */
    ladle_prep_domain sorted[4] = {fixture_domains[1], fixture_domains[3], fixture_domains[2], fixture_domains[0]};
    prep_fixture(out2, fixture_domains, 4, 0.1, 0, 0, NULL);
    prep_fixture(out3, sorted, 4, 0.1, 0, 0, NULL);
    EXPECT(&T, file_equal(out, out2), "prep twice gives different files");
    EXPECT(&T, file_equal(out, out3), "prep with domains reordered gives a different file");
    ladle_corpus c2;
    ladle_corpus_open(&c2, out3, LADLE_CORPUS_MEMORY, MPI_COMM_WORLD);
    int same = c2.n_domains == c.n_domains;
    for (int i = 0; same && i < c.n_domains; i++)
        same = c.domains[i].train_bytes == c2.domains[i].train_bytes
               && c.domains[i].valid_bytes == c2.domains[i].valid_bytes
               && memcmp(c.domains[i].train, c2.domains[i].train, c.domains[i].train_bytes) == 0
               && memcmp(c.domains[i].valid, c2.domains[i].valid, c.domains[i].valid_bytes) == 0;
    EXPECT(&T, same, "reopened corpora differ");
    ladle_corpus_free(&c2);
    ladle_corpus_free(&c);
}

static void test_limits(void)
{
    char out[1024];
    snprintf(out, sizeof out, "%s/limits.h5", root);
    /* every alpha document is longer than 1000: each is cut */
    prep_fixture(out, fixture_domains, 4, 0.2, 1000, 0, NULL);
    ladle_corpus c;
    ladle_corpus_open(&c, out, LADLE_CORPUS_MEMORY, MPI_COMM_WORLD);
    EXPECT(&T, c.domains[0].train_bytes + c.domains[0].valid_bytes == 4 * 1000, "alpha cut docs: %zu",
           c.domains[0].train_bytes + c.domains[0].valid_bytes);
    ladle_corpus_free(&c);

    /* a domain holds at most max_domain_bytes */
    prep_fixture(out, fixture_domains, 4, 0.2, 0, 2500, NULL);
    ladle_corpus_open(&c, out, LADLE_CORPUS_MEMORY, MPI_COMM_WORLD);
    size_t want[4] = {2500, 2500, 1500, 2500};   /* delta has only 1500 bytes */
    for (int i = 0; i < c.n_domains && i < 4; i++)
        EXPECT(&T, c.domains[i].train_bytes + c.domains[i].valid_bytes == want[i], "%s holds %zu, want %zu",
               c.domains[i].name, c.domains[i].train_bytes + c.domains[i].valid_bytes, want[i]);
    /* alpha: all of one.txt (3000 > 2500, so cut) is the single document, split by bytes */
    EXPECT(&T, memcmp(c.domains[0].train, alpha_docs[0].bytes, c.domains[0].train_bytes) == 0,
           "alpha under the domain limit is not the start of one.txt");
    ladle_corpus_free(&c);
}

/* ---- documents cut as files stream ---------------------------------------------------- */

/* The serial rules, written out: the documents of one file's first n bytes, cut at
 * split_doc_bytes after a newline in the second half of the piece. starts/lens get them. */
static size_t reference_cut(const char *text, size_t n, size_t split, size_t *starts, size_t *lens)
{
    size_t docs = 0;
    for (size_t at = 0; at < n;) {
        size_t len = n - at;
        if (split && len > split) {
            len = split;
            for (size_t cut = len; cut > split / 2; cut--)
                if (text[at + cut - 1] == '\n') { len = cut; break; }
        }
        starts[docs] = at;
        lens[docs++] = len;
        at += len;
    }
    return docs;
}

static uint64_t name_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ULL;
    return h;
}

/* Every document of the domain in walk order, each in the split its index draws, at its
 * offsets: ref is the domain's text (its kept files' bytes in walk order) and the
 * documents' starts / lens in it. */
static int same_documents(const ladle_domain *d, const char *ref, const size_t *starts, const size_t *lens,
                          size_t docs, double vf, unsigned long seed)
{
    size_t at[2] = {0, 0};
    const uint8_t *text[2] = {d->train, d->valid};
    const uint64_t *offsets[2] = {d->train_offsets, d->valid_offsets};
    for (size_t i = 0; i < docs; i++) {
        int t = ladle_rng_uniform(seed, name_hash(d->name), LADLE_STREAM_SPLIT, i) < vf;
        uint64_t o = offsets[t][at[t]], e = offsets[t][at[t] + 1];
        if (e - o != lens[i] || memcmp(text[t] + o, ref + starts[i], lens[i]) != 0) return 0;
        at[t]++;
    }
    return at[0] == d->train_docs && at[1] == d->valid_docs;
}

/* Files longer than a read piece (1 MiB) cut into documents as they stream, the cut
 * crossing piece boundaries; a domain whose limit falls inside the document of a file
 * in the middle of a round (that file is read again up to the limit): the documents are
 * exactly the serial rules', each in the split its index draws. */
static void test_streamed_cuts(void)
{
    enum { SPLIT = 3001, FILES = 5 };
    const size_t sizes[FILES] = {2600000, 700, 1048576, 333333, 50000};
    make_dir("s");
    size_t total = 0;
    for (int i = 0; i < FILES; i++) total += sizes[i];
    char *ref = malloc(total);
    for (int i = 0, at = 0; i < FILES; i++) {
        char rel[32];
        snprintf(rel, sizeof rel, "s/f%d.txt", i);
        doc t = make_text(sizes[i], 900 + (unsigned)i);
        write_file(rel, t.bytes, t.n);
        memcpy(ref + at, t.bytes, t.n);
        at += (int)t.n;
        free(t.bytes);
    }
    const char *paths[1] = {strdup(path_of("s"))};
    ladle_prep_domain dom[1] = {{"streamed", 1, paths}};
    size_t *starts = malloc(sizeof(size_t) * (total / 1000 + 10)), *lens = malloc(sizeof(size_t) * (total / 1000 + 10));
    /* limits: none; inside the third file (in the middle of a document of it) */
    const size_t limits[2] = {0, 2600000 + 700 + 654321};
    for (int l = 0; l < 2; l++) {
        ladle_prep_options opt = {.valid_fraction = 0.1, .seed = 77, .split_doc_bytes = SPLIT,
                                  .max_domain_bytes = limits[l]};
        char out[1024];
        snprintf(out, sizeof out, "%s/streamed%d.h5", root, l);
        ladle_prep(out, dom, 1, &opt, MPI_COMM_WORLD, NULL);
        size_t docs = 0, at = 0;
        for (int i = 0; i < FILES && (!limits[l] || at < limits[l]); i++) {
            size_t n = limits[l] && limits[l] - at < sizes[i] ? limits[l] - at : sizes[i];
            size_t d = reference_cut(ref + at, n, SPLIT, starts + docs, lens + docs);
            for (size_t q = docs; q < docs + d; q++) starts[q] += at;
            docs += d;
            at += n;
        }
        ladle_corpus c;
        ladle_corpus_open(&c, out, LADLE_CORPUS_MEMORY, MPI_COMM_WORLD);
        EXPECT(&T, c.domains[0].train_bytes + c.domains[0].valid_bytes == at, "limit %zu: %zu bytes, expected %zu",
               limits[l], c.domains[0].train_bytes + c.domains[0].valid_bytes, at);
        EXPECT(&T, same_documents(&c.domains[0], ref, starts, lens, docs, 0.1, 77),
               "limit %zu: the documents are not the serial rules' %zu", limits[l], docs);
        ladle_corpus_free(&c);
    }
    free(starts);
    free(lens);
    free(ref);
    free((void *)paths[0]);
}

static void test_batches(void)
{
    char out[1024];
    snprintf(out, sizeof out, "%s/corpus.h5", root);
    ladle_corpus c;
    ladle_corpus_open(&c, out, LADLE_CORPUS_MEMORY, MPI_COMM_WORLD);
    enum { B = 8, CTX = 32 };
    uint8_t tok[B * CTX], tgt[B * CTX], tok2[B * CTX], tgt2[B * CTX];
    int dom[B], dom2[B];

    const float uniform[4] = {0.25f, 0.25f, 0.25f, 0.25f};

    /* the same global batch however it is split into ranges */
    ladle_batch_train(&c, uniform, LADLE_SAMPLING_IID, B, 7, 3, 0, B, CTX, tok, tgt, dom);
    ladle_batch_train(&c, uniform, LADLE_SAMPLING_IID, B, 7, 3, 0, 3, CTX, tok2, tgt2, dom2);
    ladle_batch_train(&c, uniform, LADLE_SAMPLING_IID, B, 7, 3, 3, B, CTX, tok2 + 3 * CTX, tgt2 + 3 * CTX,
                      dom2 + 3);
    EXPECT(&T, memcmp(tok, tok2, sizeof tok) == 0 && memcmp(tgt, tgt2, sizeof tgt) == 0
               && memcmp(dom, dom2, sizeof dom) == 0, "batch [0,8) differs from [0,3)+[3,8)");
    ladle_batch_train(&c, uniform, LADLE_SAMPLING_IID, B, 7, 3, 0, B, CTX, tok2, tgt2, NULL);
    EXPECT(&T, memcmp(tok, tok2, sizeof tok) == 0, "batch not deterministic");
    ladle_batch_train(&c, uniform, LADLE_SAMPLING_IID, B, 7, 4, 0, B, CTX, tok2, tgt2, NULL);
    EXPECT(&T, memcmp(tok, tok2, sizeof tok) != 0, "steps 3 and 4 give the same batch");

    /* split invariance holds for a skewed h, with a zero, under both samplings */
    const float skewed[4] = {0.5f, 0.0f, 0.3f, 0.2f};
    for (int sm = 0; sm < 2; sm++) {
        ladle_sampling sampling = sm ? LADLE_SAMPLING_STRATIFIED : LADLE_SAMPLING_IID;
        ladle_batch_train(&c, skewed, sampling, B, 7, 5, 0, B, CTX, tok, tgt, dom);
        ladle_batch_train(&c, skewed, sampling, B, 7, 5, 0, 3, CTX, tok2, tgt2, dom2);
        ladle_batch_train(&c, skewed, sampling, B, 7, 5, 3, B, CTX, tok2 + 3 * CTX, tgt2 + 3 * CTX, dom2 + 3);
        int ok = memcmp(tok, tok2, sizeof tok) == 0 && memcmp(tgt, tgt2, sizeof tgt) == 0
                 && memcmp(dom, dom2, sizeof dom) == 0;
        for (int b = 0; b < B; b++) ok &= dom[b] != 1;
        EXPECT(&T, ok, "%s: skewed batch [0,8) differs from [0,3)+[3,8) or draws a zero-weight domain",
               sm ? "stratified" : "iid");
    }
    ladle_batch_train(&c, uniform, LADLE_SAMPLING_IID, B, 7, 3, 0, B, CTX, tok, tgt, dom);

    for (int b = 0; b < B; b++) {
        const uint8_t *x = tok + b * CTX, *y = tgt + b * CTX;
        EXPECT(&T, memcmp(x + 1, y, CTX - 1) == 0, "sequence %d: targets are not tokens shifted", b);
        EXPECT(&T, dom[b] >= 0 && dom[b] < c.n_domains, "sequence %d: domain %d", b, dom[b]);
        uint8_t window[CTX + 1];
        memcpy(window, x, CTX);
        window[CTX] = y[CTX - 1];
        const ladle_domain *d = &c.domains[dom[b]];
        EXPECT(&T, contains(d->train, d->train_bytes, window, CTX + 1),
               "sequence %d is not a window of domain '%s' train", b, d->name);
    }

    /* domains uniform: 4 domains, 40000 sequences, 10000 +- 5 sigma (~87) each */
    enum { N = 40000 };
    uint8_t *t1 = malloc((size_t)N * 4), *t2 = malloc((size_t)N * 4);
    int *d = malloc(N * sizeof(int));
    ladle_batch_train(&c, uniform, LADLE_SAMPLING_IID, N, 11, 0, 0, N, 4, t1, t2, d);
    /* streamed: the same windows, byte for byte, read from the file one by one */
    ladle_corpus cs;
    ladle_corpus_open(&cs, out, LADLE_CORPUS_STREAM, MPI_COMM_WORLD);
    EXPECT(&T, cs.file > 0 && cs.n_domains == c.n_domains && cs.domains[0].train == NULL && cs.domains[0].streamed,
           "a streamed corpus holds its bytes in memory or has no open file");
    uint8_t *s1 = malloc((size_t)N * 4), *s2 = malloc((size_t)N * 4);
    int *sd = malloc(N * sizeof(int));
    ladle_batch_train(&cs, uniform, LADLE_SAMPLING_IID, N, 11, 0, 0, N, 4, s1, s2, sd);
    EXPECT(&T, memcmp(t1, s1, (size_t)N * 4) == 0 && memcmp(t2, s2, (size_t)N * 4) == 0
               && memcmp(d, sd, N * sizeof(int)) == 0, "streamed batches differ from the in-memory ones");
    for (int i = 0; i < c.n_domains; i++) {
        const ladle_domain *m = &c.domains[i], *x = &cs.domains[i];
        EXPECT(&T, x->train_bytes == m->train_bytes && x->valid_bytes == m->valid_bytes
                   && x->train_docs == m->train_docs && x->valid_docs == m->valid_docs,
               "streamed '%s' has other sizes", m->name);
        for (size_t di = 0; di < m->train_docs; di++) {
            size_t len = 0, mlen = 0;
            uint8_t *a = ladle_domain_train_document(x, di, &len), *b = ladle_domain_train_document(m, di, &mlen);
            EXPECT(&T, len == mlen && len == m->train_offsets[di + 1] - m->train_offsets[di]
                       && memcmp(a, b, len) == 0 && memcmp(a, m->train + m->train_offsets[di], len) == 0,
                   "'%s' train document %zu read streamed differs", m->name, di);
            free(a);
            free(b);
        }
    }
    /* what it holds does not grow with the corpus' bytes: the domain table alone */
    EXPECT(&T, ladle_corpus_memory(&cs, LADLE_CORPUS_STREAM) == (size_t)cs.n_domains * sizeof(ladle_domain)
               && ladle_corpus_memory(&c, LADLE_CORPUS_MEMORY) > ladle_corpus_memory(&cs, LADLE_CORPUS_STREAM)
                                                                     + c.domains[0].train_bytes,
           "corpus memory: streamed %zu, in memory %zu", ladle_corpus_memory(&cs, LADLE_CORPUS_STREAM),
           ladle_corpus_memory(&c, LADLE_CORPUS_MEMORY));
    ladle_corpus_free(&cs);
    EXPECT(&T, cs.file == -1 && cs.domains == NULL, "ladle_corpus_free leaves the file open");
    free(s1);
    free(s2);
    free(sd);
    int count[4] = {0};
    for (int i = 0; i < N; i++) count[d[i]]++;
    for (int i = 0; i < 4; i++)
        EXPECT(&T, count[i] > 10000 - 450 && count[i] < 10000 + 450, "domain %d drawn %d of %d times", i,
               count[i], N);
    /* the window start reaches the domain's first and last window */
    const ladle_domain *delta = &c.domains[2];
    int first = 0, last = 0;
    for (int i = 0; i < N; i++) {
        if (d[i] != 2) continue;
        if (memcmp(t1 + 4 * i, delta->train, 4) == 0) first = 1;
        if (memcmp(t2 + 4 * i, delta->train + delta->train_bytes - 4, 4) == 0) last = 1;
    }
    EXPECT(&T, first && last, "window starts do not cover delta's train split (first %d, last %d)", first, last);
    free(t1);
    free(t2);
    free(d);
    ladle_corpus_free(&c);
}

/* ---- mixtures ------------------------------------------------------------------ */

static int count_nonzero(const float *h, int k)
{
    int n = 0;
    for (int i = 0; i < k; i++) n += h[i] != 0.0f;
    return n;
}

/* h is on the simplex with exactly `support` non-zeros, and a pure function of (seed, step). */
static void test_mixture_simplex(void)
{
    enum { K = 10 };
    const int ks[3] = {1, 4, K};
    const float cs[4] = {0.3f, 1.0f, 5.0f, 200.0f};
    int bad_sum = 0, bad_support = 0, bad_value = 0, cases = 0;
    for (int ki = 0; ki < 3; ki++)
        for (int support = -1; support <= ks[ki] + 1; support++)
            for (int ci = 0; ci < 4; ci++)
                for (uint64_t step = 0; step < 200; step++) {
                    int k = ks[ki];
                    float h[K];
                    ladle_sample_mixture(3, step, k, support, cs[ci], h);
                    int want = support <= 0 || support >= k ? k : support;
                    double sum = 0;
                    for (int i = 0; i < k; i++) {
                        if (!(h[i] >= 0.0f && h[i] <= 1.0f)) bad_value++;
                        sum += h[i];
                    }
                    if (fabs(sum - 1.0) > 1e-5) bad_sum++;
                    if (count_nonzero(h, k) != want) bad_support++;
                    cases++;
                }
    EXPECT(&T, bad_sum == 0, "%d of %d mixtures do not sum to 1", bad_sum, cases);
    EXPECT(&T, bad_support == 0, "%d of %d mixtures have the wrong number of non-zeros", bad_support, cases);
    EXPECT(&T, bad_value == 0, "%d weights outside [0, 1]", bad_value);

    /* determinism, and dependence on seed and step */
    float a[K], b[K];
    ladle_sample_mixture(9, 41, K, 3, 0.3f, a);
    ladle_sample_mixture(9, 41, K, 3, 0.3f, b);
    EXPECT(&T, memcmp(a, b, sizeof a) == 0, "the same (seed, step) gives different h");
    ladle_sample_mixture(9, 42, K, 3, 0.3f, b);
    EXPECT(&T, memcmp(a, b, sizeof a) != 0, "steps 41 and 42 give the same h");
    ladle_sample_mixture(10, 41, K, 3, 0.3f, b);
    EXPECT(&T, memcmp(a, b, sizeof a) != 0, "seeds 9 and 10 give the same h");

    /* a tiny concentration: weights pile onto one domain, but stay finite and sum to 1 */
    int finite = 1;
    for (uint64_t step = 0; step < 500; step++) {
        ladle_sample_mixture(1, step, K, 0, 0.01f, a);
        double sum = 0;
        for (int i = 0; i < K; i++) {
            finite &= isfinite(a[i]) && a[i] >= 0.0f;
            sum += a[i];
        }
        finite &= fabs(sum - 1.0) < 1e-5;
    }
    EXPECT(&T, finite, "concentration 0.01 gives a weight that is not finite or a sum that is not 1");
}

/* The support is a uniform s-subset: chi-square over all C(10,3) = 120 subsets. */
static void test_mixture_support(void)
{
    enum { K = 10, S = 3, N = 30000 };
    static int subset_count[1 << K];
    memset(subset_count, 0, sizeof subset_count);
    int domain_count[K] = {0};
    for (uint64_t step = 0; step < N; step++) {
        float h[K];
        ladle_sample_mixture(5, step, K, S, 1.0f, h);
        int mask = 0;
        for (int i = 0; i < K; i++)
            if (h[i] != 0.0f) {
                mask |= 1 << i;
                domain_count[i]++;
            }
        subset_count[mask]++;
    }
    /* each domain is in the support with probability S/K: 9000 +- 5 sigma (~397) */
    double p = (double)S / K, sd = sqrt(N * p * (1 - p));
    for (int i = 0; i < K; i++)
        EXPECT(&T, fabs(domain_count[i] - N * p) < 5 * sd, "domain %d in the support %d times, want %g +- %g", i,
               domain_count[i], N * p, 5 * sd);
    int subsets = 0, stray = 0;
    double chi2 = 0, expect = (double)N / 120.0;
    for (int m = 0; m < (1 << K); m++) {
        if (__builtin_popcount((unsigned)m) != S) {
            stray += subset_count[m];
            continue;
        }
        subsets++;
        chi2 += (subset_count[m] - expect) * (subset_count[m] - expect) / expect;
    }
    /* 119 degrees of freedom: mean 119, sd sqrt(238) = 15.4; 5 sigma above is ~196 */
    EXPECT(&T, subsets == 120 && stray == 0, "%d subsets of size 3, %d supports of another size", subsets, stray);
    EXPECT(&T, chi2 < 119 + 5 * sqrt(238.0), "support subsets not uniform: chi-square %g on 119 dof", chi2);
}

/* On its support, h_i has the moments of a symmetric Dirichlet(c) over s components:
 * E = 1/s, Var = (1/s)(1 - 1/s)/(s c + 1). Tolerances are 5 standard errors, from
 * the sample's own fourth moment for the variance. */
static void test_mixture_moments(void)
{
    enum { K = 6, N = 24000 };
    const struct { int s; float c; } cases[4] = {{4, 0.3f}, {4, 1.0f}, {4, 5.0f}, {K, 1.0f}};
    double *x = malloc((size_t)N * sizeof(double));
    for (int ci = 0; ci < 4; ci++) {
        int s = cases[ci].s;
        double c = cases[ci].c;
        double mean_want = 1.0 / s, var_want = (1.0 / s) * (1.0 - 1.0 / s) / (s * c + 1.0);
        for (int d = 0; d < K; d++) {
            int n = 0;
            for (uint64_t step = 0; step < N; step++) {
                float h[K];
                ladle_sample_mixture(77, step, K, s, cases[ci].c, h);
                if (h[d] != 0.0f) x[n++] = h[d];
            }
            double m = 0, v = 0, m4 = 0;
            for (int i = 0; i < n; i++) m += x[i];
            m /= n;
            for (int i = 0; i < n; i++) {
                double e = (x[i] - m) * (x[i] - m);
                v += e;
                m4 += e * e;
            }
            v /= n - 1;
            m4 /= n;
            double se_mean = sqrt(var_want / n), se_var = sqrt((m4 - v * v) / n);
            EXPECT(&T, fabs(m - mean_want) < 5 * se_mean, "s %d c %g domain %d: mean %g, want %g +- %g", s, c, d, m,
                   mean_want, 5 * se_mean);
            EXPECT(&T, fabs(v - var_want) < 5 * se_var, "s %d c %g domain %d: variance %g, want %g +- %g", s, c, d,
                   v, var_want, 5 * se_var);
        }
    }
    free(x);
}

/* iid: the domain frequencies over many sequences are h; zero weights are never drawn. */
static void test_domain_iid(void)
{
    enum { K = 5, N = 100000 };
    const float h[K] = {0.5f, 0.25f, 0.0f, 0.15f, 0.1f};
    int count[K] = {0};
    for (int b = 0; b < N; b++) count[ladle_mixture_domain(h, K, N, b, LADLE_SAMPLING_IID, 3, 8)]++;
    double chi2 = 0;
    for (int i = 0; i < K; i++)
        if (h[i] > 0) chi2 += (count[i] - N * h[i]) * (count[i] - N * h[i]) / (N * h[i]);
    /* 3 degrees of freedom: P(chi2 > 30) < 1e-5 */
    EXPECT(&T, chi2 < 30, "iid domain counts %d %d %d %d %d are not h: chi-square %g", count[0], count[1],
           count[2], count[3], count[4], chi2);
    EXPECT(&T, count[2] == 0, "a zero-weight domain was drawn %d times", count[2]);

    /* h is taken over its total: twice h draws the same domains */
    float h2[K];
    int same = 1;
    for (int i = 0; i < K; i++) h2[i] = 2.0f * h[i];
    for (int b = 0; b < 1000; b++)
        same &= ladle_mixture_domain(h, K, 1000, b, LADLE_SAMPLING_IID, 3, 8)
                == ladle_mixture_domain(h2, K, 1000, b, LADLE_SAMPLING_IID, 3, 8);
    EXPECT(&T, same, "an unnormalised h draws other domains");

    /* zeros at both ends and a single weight: never anything else */
    const float ends[K] = {0.0f, 0.4f, 0.0f, 0.6f, 0.0f}, one[K] = {0.0f, 0.0f, 1.0f, 0.0f, 0.0f};
    int ok_ends = 1, ok_one = 1;
    for (int b = 0; b < N; b++) {
        int d = ladle_mixture_domain(ends, K, N, b, LADLE_SAMPLING_IID, 4, 1);
        ok_ends &= d == 1 || d == 3;
        ok_one &= ladle_mixture_domain(one, K, N, b, LADLE_SAMPLING_IID, 4, 1) == 2;
    }
    EXPECT(&T, ok_ends && ok_one, "a zero-weight domain was drawn (ends %d, one %d)", ok_ends, ok_one);
}

/* stratified: at least floor(B h_i) per domain, the allotted part in domain order, the
 * rest Cat(h). */
static void test_domain_stratified(void)
{
    enum { K = 8, B = 37 };
    int bad_floor = 0, bad_order = 0, bad_zero = 0;
    for (uint64_t step = 0; step < 300; step++) {
        float h[K];
        ladle_sample_mixture(12, step, K, 5, 0.7f, h);
        int count[K] = {0}, floors = 0, d[B];
        for (int i = 0; i < K; i++) floors += (int)floor((double)B * h[i]);
        for (int b = 0; b < B; b++) {
            d[b] = ladle_mixture_domain(h, K, B, b, LADLE_SAMPLING_STRATIFIED, 12, step);
            count[d[b]]++;
            if (h[d[b]] == 0.0f) bad_zero++;
            if (b > 0 && b < floors && d[b] < d[b - 1]) bad_order++;
        }
        for (int i = 0; i < K; i++)
            if (count[i] < (int)floor((double)B * h[i])) bad_floor++;
    }
    EXPECT(&T, bad_floor == 0, "%d domains got fewer than floor(B h_i) sequences", bad_floor);
    EXPECT(&T, bad_order == 0, "%d allotted sequences out of domain order", bad_order);
    EXPECT(&T, bad_zero == 0, "%d sequences from zero-weight domains", bad_zero);

    /* exact cases: nothing left to draw; 0.7f is below 0.7 but allots 7 of 10 */
    const float h1[2] = {0.7f, 0.3f}, h2[3] = {0.5f, 0.25f, 0.25f};
    int want1[10] = {0, 0, 0, 0, 0, 0, 0, 1, 1, 1}, want2[8] = {0, 0, 0, 0, 1, 1, 2, 2};
    int ok = 1;
    for (uint64_t step = 0; step < 50; step++) {
        for (int b = 0; b < 10; b++) ok &= ladle_mixture_domain(h1, 2, 10, b, LADLE_SAMPLING_STRATIFIED, 1, step) == want1[b];
        for (int b = 0; b < 8; b++) ok &= ladle_mixture_domain(h2, 3, 8, b, LADLE_SAMPLING_STRATIFIED, 1, step) == want2[b];
    }
    EXPECT(&T, ok, "stratified allotment of (0.7, 0.3) x 10 or (0.5, 0.25, 0.25) x 8 is not exact");

    /* (0.45, 0.55) x 10 allots 4 and 5; the last sequence is Cat(h): 0.45 N +- 5 sigma */
    enum { N = 20000 };
    const float h3[2] = {0.45f, 0.55f};
    int first = 0, prefix_ok = 1;
    for (uint64_t step = 0; step < N; step++) {
        for (int b = 0; b < 9; b++)
            prefix_ok &= ladle_mixture_domain(h3, 2, 10, b, LADLE_SAMPLING_STRATIFIED, 2, step) == (b < 4 ? 0 : 1);
        first += ladle_mixture_domain(h3, 2, 10, 9, LADLE_SAMPLING_STRATIFIED, 2, step) == 0;
    }
    double sd = sqrt(N * 0.45 * 0.55);
    EXPECT(&T, prefix_ok, "(0.45, 0.55) x 10 does not allot 4 then 5");
    EXPECT(&T, fabs(first - 0.45 * N) < 5 * sd, "the remainder drew domain 0 %d of %d times, want %g +- %g", first,
           N, 0.45 * N, 5 * sd);
}

/* pi's fixed part: with probability `natural` h is fixed_h exactly, otherwise the
 * support/concentration draw of the same (seed, step); 0 and 1 are the pure cases. */
static void test_meta_natural(void)
{
    enum { K = 6, N = 20000 };
    const float fixed[K] = {0.4f, 0.1f, 0.2f, 0.05f, 0.05f, 0.2f};
    float h[K], draw[K];
    int fixed_count = 0, mismatch = 0;
    for (uint64_t step = 0; step < N; step++) {
        ladle_sample_meta(21, step, K, 0.3f, fixed, 2, 1.0f, h);
        if (memcmp(h, fixed, sizeof h) == 0) {
            fixed_count++;
        } else {
            ladle_sample_mixture(21, step, K, 2, 1.0f, draw);
            mismatch += memcmp(h, draw, sizeof h) != 0;
        }
    }
    double sd = sqrt(N * 0.3 * 0.7);
    EXPECT(&T, fabs(fixed_count - 0.3 * N) < 5 * sd, "meta.natural 0.3 drew the fixed h %d of %d times, want %g +- %g",
           fixed_count, N, 0.3 * N, 5 * sd);
    EXPECT(&T, mismatch == 0, "%d non-fixed draws differ from ladle_sample_mixture at the same step", mismatch);
    int never = 1, always = 1;
    for (uint64_t step = 0; step < 500; step++) {
        ladle_sample_meta(3, step, K, 0.0f, fixed, 2, 1.0f, h);
        never &= memcmp(h, fixed, sizeof h) != 0;
        ladle_sample_meta(3, step, K, 1.0f, fixed, 2, 1.0f, h);
        always &= memcmp(h, fixed, sizeof h) == 0;
    }
    EXPECT(&T, never && always, "meta.natural 0 drew the fixed h (%d) or 1 did not always (%d)", !never, !always);

    /* the natural mixture: train bytes, normalised */
    ladle_domain d[3];
    memset(d, 0, sizeof d);
    d[0].train_bytes = 100;
    d[1].train_bytes = 300;
    d[2].train_bytes = 600;
    ladle_corpus c = {3, d, -1};
    float nat[3];
    ladle_natural_mixture(&c, nat);
    EXPECT(&T, fabsf(nat[0] - 0.1f) < 1e-7f && fabsf(nat[1] - 0.3f) < 1e-7f && fabsf(nat[2] - 0.6f) < 1e-7f,
           "natural mixture of 100/300/600 bytes is %g %g %g", (double)nat[0], (double)nat[1], (double)nat[2]);
}

/* ladle_corpus_open_group reads another top-level group of the same layout. */
static void test_open_group(void)
{
    char out[1024];
    snprintf(out, sizeof out, "%s/corpus.h5", root);
    ladle_corpus c, s, d;
    ladle_corpus_open(&c, out, LADLE_CORPUS_MEMORY, MPI_COMM_WORLD);

    /* a copy with a "sources" group: the domains minus beta */
    char copy[1024];
    snprintf(copy, sizeof copy, "%s/sources.h5", root);
    FILE *in = fopen(out, "rb"), *o = fopen(copy, "wb");
    int ch;
    while ((ch = fgetc(in)) != EOF) fputc(ch, o);
    fclose(in);
    fclose(o);
    hid_t f = H5Fopen(copy, H5F_ACC_RDWR, H5P_DEFAULT);
    int made = f >= 0 && H5Ocopy(f, "domains", f, "sources", H5P_DEFAULT, H5P_DEFAULT) >= 0
               && H5Ldelete(f, "sources/beta", H5P_DEFAULT) >= 0;
    if (f >= 0) H5Fclose(f);
    EXPECT(&T, made, "cannot write a sources group into %s", copy);
    if (!made) {
        ladle_corpus_free(&c);
        return;
    }

    ladle_corpus_open_group(&d, copy, "domains", LADLE_CORPUS_MEMORY, MPI_COMM_WORLD);
    ladle_corpus_open_group(&s, copy, "sources", LADLE_CORPUS_MEMORY, MPI_COMM_WORLD);
    EXPECT(&T, d.n_domains == c.n_domains, "open_group(domains) reads %d domains, open %d", d.n_domains,
           c.n_domains);
    EXPECT(&T, s.n_domains == 3, "sources has %d groups, want 3", s.n_domains);
    const int from[3] = {0, 2, 3};   /* alpha, delta, gamma */
    for (int i = 0; i < s.n_domains && i < 3; i++) {
        const ladle_domain *a = &s.domains[i], *b = &c.domains[from[i]];
        EXPECT(&T, strcmp(a->name, b->name) == 0 && a->train_bytes == b->train_bytes
                   && a->valid_bytes == b->valid_bytes && a->train_docs == b->train_docs
                   && a->valid_docs == b->valid_docs && memcmp(a->train, b->train, a->train_bytes) == 0
                   && memcmp(a->valid, b->valid, a->valid_bytes) == 0,
               "sources/%s differs from domains/%s", a->name, b->name);
    }
    ladle_corpus_free(&s);
    ladle_corpus_free(&d);
    ladle_corpus_free(&c);
}

static void test_valid(void)
{
    char out[1024];
    snprintf(out, sizeof out, "%s/corpus.h5", root);
    ladle_corpus c, cs;
    ladle_corpus_open(&c, out, LADLE_CORPUS_MEMORY, MPI_COMM_WORLD);
    ladle_corpus_open(&cs, out, LADLE_CORPUS_STREAM, MPI_COMM_WORLD);
    int contexts[3] = {1, 16, 100};
    for (int ci = 0; ci < 3; ci++) {
        int ctx = contexts[ci];
        for (int i = 0; i < c.n_domains; i++) {
            const ladle_domain *d = &c.domains[i];
            size_t V = d->valid_bytes;
            int wanted = 50;
            int n = ladle_valid_windows(d, ctx, wanted);
            size_t fit = V >= (size_t)ctx + 1 ? ((V - 1) / ctx > 0 ? (V - 1) / ctx : 1) : 0;
            int expect = V < (size_t)ctx + 1 ? 0 : fit < (size_t)wanted ? (int)fit : wanted;
            EXPECT(&T, n == expect, "%s context %d: %d windows, want %d", d->name, ctx, n, expect);
            if (n == 0) continue;
            uint8_t *tok = malloc((size_t)n * ctx), *tgt = malloc((size_t)n * ctx);
            uint8_t *tok2 = malloc((size_t)n * ctx), *tgt2 = malloc((size_t)n * ctx);
            ladle_batch_valid(d, ctx, n, 0, n, tok, tgt);
            int k = n / 2;
            ladle_batch_valid(d, ctx, n, 0, k, tok2, tgt2);
            ladle_batch_valid(d, ctx, n, k, n, tok2 + (size_t)k * ctx, tgt2 + (size_t)k * ctx);
            EXPECT(&T, memcmp(tok, tok2, (size_t)n * ctx) == 0 && memcmp(tgt, tgt2, (size_t)n * ctx) == 0,
                   "%s: valid windows depend on the range split", d->name);
            ladle_batch_valid(&cs.domains[i], ctx, n, 0, n, tok2, tgt2);
            EXPECT(&T, memcmp(tok, tok2, (size_t)n * ctx) == 0 && memcmp(tgt, tgt2, (size_t)n * ctx) == 0,
                   "%s: streamed valid windows differ from the in-memory ones", d->name);
            /* evenly spaced from the first byte to the last, not overlapping */
            size_t span = V - ctx - 1, prev = 0;
            int ok = 1;
            for (int w = 0; w < n; w++) {
                size_t start = n == 1 ? 0 : (size_t)((double)w * span / (n - 1) + 1e-9);
                if (memcmp(tok + (size_t)w * ctx, d->valid + start, ctx) != 0
                    || memcmp(tgt + (size_t)w * ctx, d->valid + start + 1, ctx) != 0)
                    ok = 0;
                if (w > 0 && start - prev < (size_t)ctx) ok = 0;
                prev = start;
            }
            EXPECT(&T, ok, "%s context %d: valid windows not where documented", d->name, ctx);
            if (n > 1)
                EXPECT(&T, tgt[(size_t)n * ctx - 1] == d->valid[V - 1], "%s: last window does not end the split",
                       d->name);
            free(tok); free(tgt); free(tok2); free(tgt2);
        }
    }
    /* too long a context: no windows */
    EXPECT(&T, ladle_valid_windows(&c.domains[0], (int)c.domains[0].valid_bytes, 10) == 0,
           "context = valid bytes should give no window");
    ladle_corpus_free(&cs);
    ladle_corpus_free(&c);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    build_fixture();
    fixture_domain_list();
    test_prep_and_open();
    test_limits();
    test_streamed_cuts();
    test_batches();
    test_open_group();
    test_mixture_simplex();
    test_mixture_support();
    test_mixture_moments();
    test_domain_iid();
    test_domain_stratified();
    test_meta_natural();
    test_valid();

    nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    for (int i = 0; i < 4; i++) free(alpha_docs[i].bytes);
    free(beta_doc.bytes);
    for (int i = 0; i <= N_GAMMA; i++) free(gamma_docs[i].bytes);
    for (int i = 0; i < 2; i++) free(delta_docs[i].bytes);
    free((void *)alpha_paths[0]);
    free((void *)beta_paths[0]);
    free((void *)gamma_paths[0]);
    free((void *)gamma_paths[1]);
    free((void *)delta_paths[0]);
    int rc = test_summary(&T, "test_data");
    MPI_Finalize();
    return rc;
}
