#include "ladle/specialize.h"
#include "ladle/embed.h"
#include "ladle/error.h"
#include "ladle/eval.h"
#include "ladle/fileio.h"
#include "ladle/h5io.h"
#include "ladle/inspect.h"  /* ladle_json_string */

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

void ladle_weights_parse(const ladle_ckpt_loaded *soup, const char *spec, float *h)
{
    const int k = soup->n_domains;
    const char **names = ladle_calloc((size_t)(k > 0 ? k : 1), sizeof *names, "domain names");
    for (int d = 0; d < k; d++) names[d] = soup->domain_names[d];
    ladle_mixture_parse("--weights", "the soup's domains", spec, k, names, h);
    free(names);
}

/* An example text is a document: more than this (decompressed) is a corpus or a device. */
#define EXAMPLE_MAX_BYTES ((size_t)64 << 20)

/* A whole file (gzip-compressed or not) into memory. */
static uint8_t *read_document(const char *path, size_t *len)
{
    char err[LADLE_PATH_MAX + 128];
    int fd = ladle_open_regular(path, "--like/--task file", err, sizeof err);
    if (fd < 0) ladle_usage_error("%s", err);
    gzFile f = gzdopen(fd, "rb");
    if (!f) ladle_usage_error("--like: cannot read '%s': %s", path, strerror(errno ? errno : ENOMEM));
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = ladle_malloc(cap, "example text");
    for (;;) {
        if (n > EXAMPLE_MAX_BYTES)
            ladle_usage_error("--like/--task file '%s' holds more than %zu MiB: give example documents, not a corpus",
                              path, EXAMPLE_MAX_BYTES >> 20);
        if (n == cap) {
            cap *= 2;
            uint8_t *grown = realloc(buf, cap);
            if (!grown) LADLE_FAIL("out of memory reading '%s'", path);
            buf = grown;
        }
        int got = gzread(f, buf + n, (unsigned)(cap - n > (1u << 30) ? (1u << 30) : cap - n));
        if (got < 0) ladle_usage_error("--like: cannot read '%s' (corrupt compressed data?)", path);
        if (got == 0) break;
        n += (size_t)got;
    }
    gzclose(f);
    *len = n;
    return buf;
}

void ladle_read_examples(char *const *files, int n_files, uint8_t ***docs, size_t **lens)
{
    *docs = ladle_calloc((size_t)(n_files > 0 ? n_files : 1), sizeof **docs, "examples");
    *lens = ladle_calloc((size_t)(n_files > 0 ? n_files : 1), sizeof **lens, "example lengths");
    size_t nonempty = 0;
    for (int i = 0; i < n_files; i++) {
        (*docs)[i] = read_document(files[i], &(*lens)[i]);
        nonempty += (*lens)[i] > 0;
    }
    if (nonempty == 0) ladle_usage_error("--like: every example file is empty");
}

void ladle_weights_like(const ladle_ckpt_loaded *soup, const char *corpus_path, const uint8_t *const *docs,
                        const size_t *lens, int n_docs, float *h)
{
    ladle_clusters clusters;
    ladle_clusters_load(&clusters, corpus_path);
    if (clusters.k != soup->n_domains)
        ladle_usage_error("--like: corpus '%s' has %d clusters but the soup was trained on %d domains", corpus_path,
                          clusters.k, soup->n_domains);
    ladle_clusters_histogram(&clusters, docs, lens, (size_t)n_docs, h);
    ladle_clusters_free(&clusters);
}

void ladle_fit_weights(const ladle_ckpt_loaded *soup, const uint8_t *const *docs, const size_t *lens, size_t n_docs,
                       float *h, int steps, float lr, int windows, ladle_fit_result *result)
{
    const ladle_shard *s = &soup->shard;
    const int k = soup->n_domains, n = soup->soup.n, T = soup->model.context;
    /* the examples as one byte stream, read in fixed, evenly spaced windows */
    size_t total = 0;
    for (size_t i = 0; i < n_docs; i++) total += lens[i];
    ladle_domain ex;
    memset(&ex, 0, sizeof ex);
    snprintf(ex.name, sizeof ex.name, "examples");
    ex.valid = ladle_malloc(total ? total : 1, "example bytes");
    for (size_t i = 0, at = 0; i < n_docs; at += lens[i], i++) memcpy(ex.valid + at, docs[i], lens[i]);
    ex.valid_bytes = total;
    int nw = ladle_valid_windows(&ex, T, windows);
    if (nw == 0) ladle_usage_error("fit-weights: the examples hold %zu bytes, fewer than one window of %d", total, T + 1);
    int lo = (int)((long)nw * s->rank / s->size), hi = (int)((long)nw * (s->rank + 1) / s->size), local = hi - lo;
    uint8_t *tokens = ladle_malloc((size_t)(local > 0 ? local : 1) * T, "tokens");
    uint8_t *targets = ladle_malloc((size_t)(local > 0 ? local : 1) * T, "targets");
    if (local > 0) ladle_batch_valid(&ex, T, nw, lo, hi, tokens, targets);
    ladle_activations acts;
    ladle_activations_create(&acts, &soup->model, local > 0 ? local : 1);

    float *z = ladle_calloc((size_t)k, sizeof(float), "logits of h");
    float *m = ladle_calloc((size_t)k, sizeof(float), "Adam m"), *v = ladle_calloc((size_t)k, sizeof(float), "Adam v");
    float *alpha = ladle_calloc((size_t)n, sizeof(float), "alpha"), *dz = ladle_calloc((size_t)k, sizeof(float), "dz");
    float *dh = ladle_calloc((size_t)k, sizeof(float), "dh"), *dalpha = ladle_calloc((size_t)n, sizeof(float), "dalpha");
    float *merged = ladle_calloc(s->slice, sizeof(float), "merged slice");
    float *theta = ladle_calloc(s->padded, sizeof(float), "parameters");
    float *grads = ladle_calloc(s->padded, sizeof(float), "gradients");
    float *gslice = ladle_calloc(s->slice, sizeof(float), "gradient slice");
    double *red = ladle_calloc((size_t)(1 + n), sizeof(double), "reduction");
    float *router_grads = ladle_calloc(soup->router.n_params, sizeof(float), "router gradients (unused)");
    ladle_router_cache cache;
    ladle_router_cache_create(&cache, &soup->router);
    for (int d = 0; d < k; d++) z[d] = logf(h[d] + 1e-4f);

    double loss = 0.0;
    for (int step = 0; step <= steps; step++) {
        /* h = softmax(z) */
        float mx = z[0];
        for (int d = 1; d < k; d++) mx = z[d] > mx ? z[d] : mx;
        double sum = 0.0;
        for (int d = 0; d < k; d++) { h[d] = expf(z[d] - mx); sum += h[d]; }
        for (int d = 0; d < k; d++) h[d] = (float)(h[d] / sum);
        /* forward and backward through the frozen soup, as a training step does */
        ladle_router_forward(&soup->router, soup->router_params, h, alpha, &cache);
        ladle_soup_merge(&soup->soup, &soup->model, alpha, soup->shared_slice, merged, s->slice);
        ladle_shard_allgather(s, merged, theta);
        memset(grads, 0, s->padded * sizeof(float));
        double local_loss = 0.0;
        if (local > 0) {
            local_loss = ladle_model_forward(&soup->model, theta, &acts, tokens, targets, local);
            ladle_model_backward(&soup->model, theta, grads, &acts, tokens, targets, local, 1.0f / ((float)nw * T));
        }
        ladle_shard_reduce_scatter(s, grads, gslice);
        memset(red, 0, (size_t)(1 + n) * sizeof(double));
        red[0] = local_loss;
        memset(dalpha, 0, (size_t)n * sizeof(float));
        ladle_soup_backward(&soup->soup, &soup->model, alpha, gslice, s->slice, dalpha, NULL);
        for (int j = 0; j < n; j++) red[1 + j] = dalpha[j];
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, red, 1 + n, MPI_DOUBLE, MPI_SUM, s->comm));
        loss = red[0] / ((double)nw * T);
        if (step == 0) result->loss_before = loss;
        if (step == steps) break;
        for (int j = 0; j < n; j++) dalpha[j] = (float)red[1 + j];
        memset(dh, 0, (size_t)k * sizeof(float));
        ladle_router_backward(&soup->router, soup->router_params, h, &cache, dalpha, router_grads, dh);
        /* through the softmax: dz_d = h_d (dh_d - sum_e h_e dh_e); then Adam */
        double dot = 0.0;
        for (int d = 0; d < k; d++) dot += (double)h[d] * dh[d];
        for (int d = 0; d < k; d++) {
            dz[d] = h[d] * (dh[d] - (float)dot);
            m[d] = 0.9f * m[d] + 0.1f * dz[d];
            v[d] = 0.999f * v[d] + 0.001f * dz[d] * dz[d];
            float mhat = m[d] / (1.0f - powf(0.9f, (float)(step + 1)));
            float vhat = v[d] / (1.0f - powf(0.999f, (float)(step + 1)));
            z[d] -= lr * mhat / (sqrtf(vhat) + 1e-8f);
        }
    }
    result->loss_after = loss;
    result->windows = nw;
    ladle_router_cache_free(&cache);
    ladle_activations_free(&acts);
    free(ex.valid); free(tokens); free(targets); free(z); free(m); free(v); free(alpha); free(dz); free(dh);
    free(dalpha); free(merged); free(theta); free(grads); free(gslice); free(red); free(router_grads);
}

void ladle_instantiate(const ladle_ckpt_loaded *soup, const char *soup_path, const float *h, const char *out_path,
                       float *alpha_out)
{
    const ladle_shard *s = &soup->shard;
    float *alpha = ladle_calloc((size_t)(soup->soup.n > 0 ? soup->soup.n : 1), sizeof(float), "coefficients");
    float *merged = ladle_calloc(s->slice, sizeof(float), "merged slice");
    /* each rank merges its own slice; nothing is gathered */
    ladle_router_forward(&soup->router, soup->router_params, h, alpha, NULL);
    ladle_soup_merge(&soup->soup, &soup->model, alpha, soup->shared_slice, merged, s->slice);
    /* an instantiated model is dense: the same configuration without the bank */
    ladle_config dense = soup->cfg;
    dense.experts = 0;
    ladle_ckpt_contents c = {
        .kind = "instantiated",
        .step = soup->step,
        .cfg = &dense,
        .model = &soup->model,
        .shard = s,
        .state = {.shared = merged},
        .n_domains = soup->n_domains,
        .domain_names = (const char (*)[LADLE_NAME_MAX])soup->domain_names,
        .h = h,
        .alpha = alpha,
        .n_alpha = soup->soup.n,
        .source = soup_path,
    };
    ladle_ckpt_save(out_path, &c);
    if (alpha_out) memcpy(alpha_out, alpha, (size_t)soup->soup.n * sizeof(float));
    free(alpha);
    free(merged);
}

typedef struct { float w; int d; } weight_entry;

static int by_weight_desc(const void *a, const void *b)
{
    const weight_entry *x = a, *y = b;
    return (x->w < y->w) - (x->w > y->w);
}

/* "name w, name w, ..." for the largest `top` entries of h */
static void weights_format(char *buf, size_t len, const ladle_ckpt_loaded *soup, const float *h, int top)
{
    int k = soup->n_domains;
    weight_entry *e = ladle_calloc((size_t)k, sizeof *e, "weights");
    for (int d = 0; d < k; d++) { e[d].w = h[d]; e[d].d = d; }
    qsort(e, (size_t)k, sizeof *e, by_weight_desc);
    buf[0] = '\0';
    for (int i = 0; i < k && i < top && e[i].w > 0; i++) {
        size_t used = strlen(buf);
        snprintf(buf + used, len - used, "%s%s %.3f", i ? ", " : "", soup->domain_names[e[i].d], e[i].w);
    }
    free(e);
}

/* h's non-zero entries as NAME=W,... in domain order; "" if they do not all fit */
static void weights_spec(char *buf, size_t len, const ladle_ckpt_loaded *soup, const float *h)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int d = 0; d < soup->n_domains; d++) {
        if (h[d] <= 0.0f) continue;
        int w = snprintf(buf + used, len - used, "%s%s=%.7g", used ? "," : "", soup->domain_names[d], (double)h[d]);
        if (w < 0 || (size_t)w >= len - used) {
            buf[0] = '\0';
            return;
        }
        used += (size_t)w;
    }
}

void ladle_weights_print(FILE *out, const ladle_ckpt_loaded *soup, const float *h, int top)
{
    char buf[1024];
    weights_format(buf, sizeof buf, soup, h, top);
    fputs(buf, out);
}

/* Does the corpus file have a top-level group? (every rank opens it alike) */
static int corpus_has_group(const char *path, const char *group)
{
    hid_t file = ladle_h5_open_ladle_file(path, "corpus", LADLE_CORPUS_FORMAT, LADLE_CORPUS_VERSION, MPI_COMM_SELF);
    htri_t has = H5Lexists(file, group, H5P_DEFAULT);
    H5_CHECK(has);
    H5_CHECK(H5Fclose(file));
    return has > 0;
}

int ladle_corpus_has_clusters(const char *corpus_path)
{
    return corpus_has_group(corpus_path, "clusters");
}

/* Evaluate full parameters on one domain's valid windows, in bits per byte. */
static double domain_bpb(const ladle_model *model, const float *theta, ladle_activations *acts,
                         const ladle_domain *domain, int windows, MPI_Comm comm, int *n_windows)
{
    ladle_eval_result r;
    ladle_eval_domain(model, theta, acts, domain, -1, windows, &r, comm);
    *n_windows = r.windows;
    return r.bpb;
}

int ladle_specialize_eval(const ladle_ckpt_loaded *soup, const char *corpus_path, const ladle_ckpt_loaded *baseline,
                          const ladle_specialize_options *opt, ladle_specialize_row *rows, int max_rows)
{
    MPI_Comm comm = soup->shard.comm;
    const int k = soup->n_domains, examples = opt->examples, windows = opt->windows, batch = opt->batch;
    if (baseline && baseline->model.context != soup->model.context)
        ladle_usage_error("--baseline: context %d differs from the soup's %d", baseline->model.context,
                          soup->model.context);
    /* the evaluated text: a specialist corpus, the named sources of a clustered corpus, or
     * the training domains themselves (one-hot h) */
    const char *text_path = opt->specialists ? opt->specialists : corpus_path;
    int clustered = !opt->one_hot && (opt->specialists || corpus_has_group(corpus_path, "sources"));
    if (clustered && !ladle_corpus_has_clusters(corpus_path))
        ladle_usage_error("--specialists: corpus '%s' has no clusters to build h from (prepare it with --clusters)",
                          corpus_path);
    ladle_corpus corpus;
    ladle_corpus_open_group(&corpus, text_path, clustered && corpus_has_group(text_path, "sources") ? "sources" : "domains",
                            LADLE_CORPUS_STREAM, comm);
    ladle_corpus_check_context(&corpus, text_path, soup->model.context);
    ladle_clusters clusters;
    if (clustered) {
        ladle_clusters_load(&clusters, corpus_path);
        if (clusters.k != k)
            ladle_usage_error("corpus '%s' has %d clusters but the soup was trained on %d domains", corpus_path,
                              clusters.k, k);
    }
    LADLE_CHECK(corpus.n_domains <= max_rows, "too many domains for the table");

    ladle_activations acts;
    ladle_activations_create(&acts, &soup->model, batch);
    float *h = ladle_calloc((size_t)k, sizeof(float), "domain weights");
    for (int d = 0; d < k; d++) h[d] = 1.0f / (float)k;
    float *generic = ladle_ckpt_gather_theta(soup, h, NULL);
    float *base = baseline ? ladle_ckpt_gather_theta(baseline, NULL, NULL) : NULL;
    const uint8_t **docs = ladle_calloc((size_t)(examples > 0 ? examples : 1), sizeof *docs, "examples");
    size_t *lens = ladle_calloc((size_t)(examples > 0 ? examples : 1), sizeof *lens, "example lengths");

    for (int d = 0; d < corpus.n_domains; d++) {
        const ladle_domain *dom = &corpus.domains[d];
        ladle_specialize_row *row = &rows[d];
        memset(row, 0, sizeof *row);
        snprintf(row->domain, sizeof row->domain, "%s", dom->name);
        if (clustered) {
            /* m train documents, evenly spaced: the "handful of example texts" */
            size_t m = (size_t)examples < dom->train_docs ? (size_t)examples : dom->train_docs;
            uint8_t **text = ladle_calloc(m ? m : 1, sizeof *text, "examples");
            for (size_t i = 0; i < m; i++) docs[i] = text[i] = ladle_domain_train_document(dom, i * dom->train_docs / m,
                                                                                           &lens[i]);
            ladle_clusters_histogram(&clusters, docs, lens, m, h);
            for (size_t i = 0; i < m; i++) free(text[i]);
            free(text);
        } else {
            int index = ladle_ckpt_domain_index(soup, dom->name);
            if (index < 0) ladle_usage_error("domain '%s' of corpus '%s' is not one of the soup's", dom->name, corpus_path);
            memset(h, 0, (size_t)k * sizeof(float));
            h[index] = 1.0f;
        }
        weights_format(row->h_top, sizeof row->h_top, soup, h, 3);
        weights_spec(row->h_weights, sizeof row->h_weights, soup, h);
        float *special = ladle_ckpt_gather_theta(soup, h, NULL);
        row->generic_bpb = domain_bpb(&soup->model, generic, &acts, dom, windows, comm, &row->windows);
        row->specialist_bpb = domain_bpb(&soup->model, special, &acts, dom, windows, comm, &row->windows);
        row->baseline_bpb = NAN;
        if (base) {
            ladle_activations bacts;
            ladle_activations_create(&bacts, &baseline->model, batch);
            row->baseline_bpb = domain_bpb(&baseline->model, base, &bacts, dom, windows, comm, &row->windows);
            ladle_activations_free(&bacts);
        }
        free(special);
    }
    int n = corpus.n_domains;
    free(docs);
    free(lens);
    free(generic);
    free(base);
    free(h);
    ladle_activations_free(&acts);
    if (clustered) ladle_clusters_free(&clusters);
    ladle_corpus_free(&corpus);
    return n;
}

void ladle_specialize_print_table(FILE *out, const ladle_specialize_row *rows, int n)
{
    int base = n > 0 && !isnan(rows[0].baseline_bpb);
    fprintf(out, "%-16s %7s %9s %9s %9s %8s  %s\n", "domain", "windows", base ? "baseline" : "", "soup h=1/k",
            "special", base ? "delta" : "delta*", "h (top)");
    double sb = 0, sg = 0, ss = 0;
    int counted = 0;
    for (int i = 0; i < n; i++) {
        const ladle_specialize_row *r = &rows[i];
        if (r->windows == 0) {
            fprintf(out, "%-16s %7d  (valid split shorter than one window)\n", r->domain, 0);
            continue;
        }
        counted++;
        double ref = base ? r->baseline_bpb : r->generic_bpb;
        char bcol[16] = "";
        if (base) snprintf(bcol, sizeof bcol, "%9.4f", r->baseline_bpb);
        fprintf(out, "%-16s %7d %9s %9.4f %9.4f %+8.4f  %s\n", r->domain, r->windows, bcol, r->generic_bpb,
                r->specialist_bpb, r->specialist_bpb - ref, r->h_top);
        sb += r->baseline_bpb; sg += r->generic_bpb; ss += r->specialist_bpb;
    }
    if (counted > 0) {
        char bcol[16] = "";
        if (base) snprintf(bcol, sizeof bcol, "%9.4f", sb / counted);
        fprintf(out, "%-16s %7s %9s %9.4f %9.4f %+8.4f\n", "mean", "", bcol, sg / counted, ss / counted,
                (ss - (base ? sb : sg)) / counted);
    }
    fprintf(out, "bits per byte on each domain's valid split; delta = specialist - %s\n",
            base ? "baseline (generic model)" : "soup at uniform h (*: no --baseline given)");
}

void ladle_specialize_print_json(FILE *out, const ladle_specialize_row *rows, int n)
{
    fprintf(out, "{\"rows\": [");
    for (int i = 0; i < n; i++) {
        const ladle_specialize_row *r = &rows[i];
        fprintf(out, "%s{\"domain\": ", i ? ", " : "");
        ladle_json_string(out, r->domain);
        if (r->windows == 0) {
            fprintf(out, ", \"windows\": 0}");
            continue;
        }
        fprintf(out, ", \"windows\": %d, \"soup_uniform_bpb\": %.7g, \"specialist_bpb\": %.7g", r->windows,
                r->generic_bpb, r->specialist_bpb);
        if (!isnan(r->baseline_bpb)) fprintf(out, ", \"baseline_bpb\": %.7g", r->baseline_bpb);
        fprintf(out, ", \"h_top\": ");
        ladle_json_string(out, r->h_top);
        if (r->h_weights[0]) {
            fprintf(out, ", \"h\": ");
            ladle_json_string(out, r->h_weights);
        }
        fprintf(out, "}");
    }
    fprintf(out, "]}\n");
}
