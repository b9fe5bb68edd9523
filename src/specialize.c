#include "ladle/specialize.h"
#include "ladle/embed.h"
#include "ladle/error.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

void ladle_weights_parse(const ladle_ckpt_loaded *soup, const char *spec, float *h)
{
    const int k = soup->n_domains;
    memset(h, 0, (size_t)k * sizeof(float));
    char *copy = ladle_malloc(strlen(spec) + 1, "weights");
    strcpy(copy, spec);
    double total = 0.0;
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq) ladle_usage_error("--weights: '%s' is not NAME=WEIGHT", item);
        *eq = '\0';
        int d = ladle_ckpt_domain_index(soup, item);
        if (d < 0) {
            /* list a few valid names so the user sees what the soup was trained on */
            char known[512] = "";
            for (int i = 0; i < k && strlen(known) < 400; i++)
                snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "", soup->domain_names[i]);
            ladle_usage_error("--weights: unknown domain '%s' (the soup's domains: %s%s)", item, known,
                              k > 0 && strlen(known) >= 400 ? ", ..." : "");
        }
        char *end = NULL;
        errno = 0;
        double w = strtod(eq + 1, &end);
        if (end == eq + 1 || *end || errno || !(w >= 0) || !isfinite(w))
            ladle_usage_error("--weights: weight of '%s' is '%s', expected a number >= 0", item, eq + 1);
        h[d] += (float)w;
        total += w;
    }
    free(copy);
    if (!(total > 0)) ladle_usage_error("--weights: all weights are zero");
    for (int d = 0; d < k; d++) h[d] = (float)(h[d] / total);
}

/* A whole file (gzip-compressed or not) into memory. */
static uint8_t *read_document(const char *path, size_t *len)
{
    gzFile f = gzopen(path, "rb");
    if (!f) ladle_usage_error("--like: cannot read '%s': %s", path, strerror(errno ? errno : ENOENT));
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = ladle_malloc(cap, "example text");
    for (;;) {
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

void ladle_weights_like(const ladle_ckpt_loaded *soup, const char *corpus_path, char *const *files, int n_files,
                        float *h)
{
    ladle_clusters clusters;
    ladle_clusters_load(&clusters, corpus_path);
    if (clusters.k != soup->n_domains)
        ladle_usage_error("--like: corpus '%s' has %d clusters but the soup was trained on %d domains", corpus_path,
                          clusters.k, soup->n_domains);
    const uint8_t **docs = ladle_calloc((size_t)n_files, sizeof *docs, "examples");
    size_t *lens = ladle_calloc((size_t)n_files, sizeof *lens, "example lengths");
    size_t nonempty = 0;
    for (int i = 0; i < n_files; i++) {
        docs[i] = read_document(files[i], &lens[i]);
        nonempty += lens[i] > 0;
    }
    if (nonempty == 0) ladle_usage_error("--like: every example file is empty");
    ladle_clusters_histogram(&clusters, docs, lens, (size_t)n_files, h);
    for (int i = 0; i < n_files; i++) free((void *)docs[i]);
    free(docs);
    free(lens);
    ladle_clusters_free(&clusters);
}

void ladle_instantiate(const ladle_ckpt_loaded *soup, const char *soup_path, const float *h, const char *out_path,
                       float *alpha_out)
{
    const ladle_shard *s = &soup->shard;
    float *alpha = ladle_calloc((size_t)(soup->soup.n > 0 ? soup->soup.n : 1), sizeof(float), "coefficients");
    float *merged = ladle_calloc(s->slice, sizeof(float), "merged slice");
    /* each rank merges its own slice; nothing is gathered */
    ladle_router_forward(&soup->router, soup->router_params, h, alpha, NULL);
    ladle_soup_merge(&soup->soup, alpha, soup->shared_slice, merged, s->slice);
    /* an instantiated model is dense: the same configuration without the bank */
    ladle_config dense = soup->cfg;
    dense.experts = 0;
    ladle_ckpt_contents c = {
        .kind = "instantiated",
        .step = soup->step,
        .cfg = &dense,
        .model = &soup->model,
        .shard = s,
        .shared_slice = merged,
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

void ladle_weights_print(FILE *out, const ladle_ckpt_loaded *soup, const float *h, int top)
{
    int k = soup->n_domains;
    weight_entry *e = ladle_calloc((size_t)k, sizeof *e, "weights");
    for (int d = 0; d < k; d++) { e[d].w = h[d]; e[d].d = d; }
    qsort(e, (size_t)k, sizeof *e, by_weight_desc);
    for (int i = 0; i < k && i < top && e[i].w > 0; i++)
        fprintf(out, "%s%s %.3f", i ? ", " : "", soup->domain_names[e[i].d], e[i].w);
    free(e);
}
