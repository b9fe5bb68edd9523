/* Unit tests of prep (text files -> corpus file) and data (corpus file -> batches).
 * A single process: run directly, no mpiexec. Error paths exit the process, so they are
 * tested from the shell (test/bad_input.sh), not here. */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700
#endif

#include "ladle/data.h"
#include "ladle/prep.h"
#include "testutil.h"

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

static char *path_of(const char *rel)
{
    static char buf[8][1024];
    static int next = 0;
    char *p = buf[next++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", root, rel);
    return p;
}

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

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

static int file_equal(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) same = 0;
        if (ca == EOF || cb == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
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
    ladle_prep_options opt = {vf, 1234, max_doc, max_domain};
    size_t len = 0;
    char *text = NULL;
    FILE *report = open_memstream(&text, &len);
    ladle_prep(out, domains, n, &opt, report);
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
    ladle_corpus_open(&c, out, MPI_COMM_WORLD);
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
    ladle_corpus_open(&c2, out3, MPI_COMM_WORLD);
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
    ladle_corpus_open(&c, out, MPI_COMM_WORLD);
    EXPECT(&T, c.domains[0].train_bytes + c.domains[0].valid_bytes == 4 * 1000, "alpha cut docs: %zu",
           c.domains[0].train_bytes + c.domains[0].valid_bytes);
    ladle_corpus_free(&c);

    /* a domain holds at most max_domain_bytes */
    prep_fixture(out, fixture_domains, 4, 0.2, 0, 2500, NULL);
    ladle_corpus_open(&c, out, MPI_COMM_WORLD);
    size_t want[4] = {2500, 2500, 1500, 2500};   /* delta has only 1500 bytes */
    for (int i = 0; i < c.n_domains && i < 4; i++)
        EXPECT(&T, c.domains[i].train_bytes + c.domains[i].valid_bytes == want[i], "%s holds %zu, want %zu",
               c.domains[i].name, c.domains[i].train_bytes + c.domains[i].valid_bytes, want[i]);
    /* alpha: all of one.txt (3000 > 2500, so cut) is the single document, split by bytes */
    EXPECT(&T, memcmp(c.domains[0].train, alpha_docs[0].bytes, c.domains[0].train_bytes) == 0,
           "alpha under the domain limit is not the start of one.txt");
    ladle_corpus_free(&c);
}

static void test_batches(void)
{
    char out[1024];
    snprintf(out, sizeof out, "%s/corpus.h5", root);
    ladle_corpus c;
    ladle_corpus_open(&c, out, MPI_COMM_WORLD);
    enum { B = 8, CTX = 32 };
    uint8_t tok[B * CTX], tgt[B * CTX], tok2[B * CTX], tgt2[B * CTX];
    int dom[B], dom2[B];

    /* the same global batch however it is split into ranges */
    ladle_batch_train(&c, 7, 3, 0, B, CTX, tok, tgt, dom);
    ladle_batch_train(&c, 7, 3, 0, 3, CTX, tok2, tgt2, dom2);
    ladle_batch_train(&c, 7, 3, 3, B, CTX, tok2 + 3 * CTX, tgt2 + 3 * CTX, dom2 + 3);
    EXPECT(&T, memcmp(tok, tok2, sizeof tok) == 0 && memcmp(tgt, tgt2, sizeof tgt) == 0
               && memcmp(dom, dom2, sizeof dom) == 0, "batch [0,8) differs from [0,3)+[3,8)");
    ladle_batch_train(&c, 7, 3, 0, B, CTX, tok2, tgt2, NULL);
    EXPECT(&T, memcmp(tok, tok2, sizeof tok) == 0, "batch not deterministic");
    ladle_batch_train(&c, 7, 4, 0, B, CTX, tok2, tgt2, NULL);
    EXPECT(&T, memcmp(tok, tok2, sizeof tok) != 0, "steps 3 and 4 give the same batch");

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
    ladle_batch_train(&c, 11, 0, 0, N, 4, t1, t2, d);
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

static void test_valid(void)
{
    char out[1024];
    snprintf(out, sizeof out, "%s/corpus.h5", root);
    ladle_corpus c;
    ladle_corpus_open(&c, out, MPI_COMM_WORLD);
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
    ladle_corpus_free(&c);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    build_fixture();
    fixture_domain_list();
    test_prep_and_open();
    test_limits();
    test_batches();
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
