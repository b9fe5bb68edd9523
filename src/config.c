#include "ladle/config.h"
#include "ladle/error.h"
#include "ladle/fileio.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum { KEY_INT, KEY_LONG, KEY_FLOAT, KEY_PATH, KEY_CHOICE, KEY_TEXT } key_type;

typedef struct {
    const char *name;
    key_type type;
    size_t offset;
    const char *fallback;   /* default, as text */
    double min, max;        /* inclusive bounds for numbers */
    const char *help;
    const char *choices;    /* KEY_CHOICE: "a|b|c", stored as the index of the choice */
} key_spec;

#define KEY(name, type, field, fallback, min, max, help) \
    { name, type, offsetof(ladle_config, field), fallback, min, max, help, NULL }
#define CHOICE(name, field, fallback, choices, help) \
    { name, KEY_CHOICE, offsetof(ladle_config, field), fallback, 0, 0, help, choices }

static const key_spec KEYS[] = {
    KEY("model.layers", KEY_INT, layers, "4", 1, 1024, "transformer blocks"),
    KEY("model.dim", KEY_INT, dim, "128", 1, 65536, "embedding width C"),
    KEY("model.heads", KEY_INT, heads, "4", 1, 4096, "attention heads (must divide model.dim)"),
    KEY("model.context", KEY_INT, context, "128", 1, 65536, "context length T in bytes"),
    KEY("model.init_std", KEY_FLOAT, init_std, "0.02", 0, 10, "std of the normal initial weights"),
    KEY("model.ffn", KEY_TEXT, ffn, "dense", 0, 0, "FFN site of each layer: dense, moe (top-k tokens), smear (soft-merged experts per segment), tag (expert = domain label); one word for all layers or a comma list, one per layer"),
    KEY("model.ffn_mult", KEY_INT, ffn_mult, "4", 1, 4096, "hidden width of the dense FFN sites, in multiples of model.dim (the experts of moe/smear/tag sites keep 4 x model.dim): a dense model with as many parameters as a routed one"),
    KEY("smear.experts", KEY_INT, smear_experts, "4", 1, 4096, "experts at each smear/tag site"),
    KEY("smear.segment", KEY_INT, smear_segment, "32", 1, 65536, "tokens per SMEAR routing segment (must divide model.context); segment s is routed on the mean of segment s-1"),
    CHOICE("smear.kind", smear_kind, "ffn", "ffn|adapter", "smear/tag experts: full FFNs replacing the layer's FFN, or bottleneck adapters (C -> r -> C, swish) after its attention and FFN sub-layers (the paper's placement)"),
    KEY("smear.bottleneck", KEY_INT, smear_bottleneck, "0", 0, 65536, "adapter width r (0: model.dim / 32, at least 1)"),
    KEY("smear.dropout", KEY_FLOAT, smear_dropout, "0.1", 0, 0.99, "SMEAR expert dropout in training"),
    KEY("moe.experts", KEY_INT, moe_experts, "8", 1, 4096, "experts Z at each moe site"),
    KEY("moe.top_k", KEY_INT, moe_top_k, "1", 1, 4096, "experts per token (1 = Switch)"),
    KEY("moe.balance", KEY_FLOAT, moe_balance, "0.01", 0, 100, "weight of the Switch load-balancing loss"),
    KEY("moe.capacity", KEY_FLOAT, moe_capacity, "0", 0, 1000, "capacity factor: an expert takes at most ceil(cf T k / Z) tokens per sequence, the rest are dropped (0 = no dropping)"),
    KEY("train.batch", KEY_INT, batch, "16", 1, 1 << 24, "global batch in sequences (independent of the rank count)"),
    KEY("train.steps", KEY_INT, steps, "100", 0, 1 << 30, "optimizer steps"),
    KEY("train.warmup", KEY_INT, warmup, "10", 0, 1 << 30, "linear warmup steps"),
    KEY("train.lr", KEY_FLOAT, lr, "1e-3", 0, 10, "peak learning rate"),
    KEY("train.min_lr_ratio", KEY_FLOAT, min_lr_ratio, "0.1", 0, 1, "final lr of the cosine decay, as a fraction of train.lr"),
    KEY("train.weight_decay", KEY_FLOAT, weight_decay, "0.1", 0, 10, "AdamW decoupled weight decay (matrices only)"),
    KEY("train.beta1", KEY_FLOAT, beta1, "0.9", 0, 0.999999, "AdamW beta1"),
    KEY("train.beta2", KEY_FLOAT, beta2, "0.95", 0, 0.999999, "AdamW beta2"),
    KEY("train.eps", KEY_FLOAT, eps, "1e-8", 0, 1, "AdamW epsilon"),
    KEY("train.clip", KEY_FLOAT, clip, "1.0", 0, 1e30, "global gradient-norm clip (0 = off)"),
    KEY("train.seed", KEY_LONG, seed, "1", 0, 9.0e18, "seed of the counter RNG (init, data)"),
    KEY("train.init", KEY_PATH, init, "", 0, 0, "start a fresh run from this model file's parameters (same shape), e.g. a pruned model"),
    CHOICE("train.only", only, "all", "all|router", "train everything, or only the routers of the moe/smear sites (UNCURL's router re-training)"),
    KEY("data.corpus", KEY_PATH, corpus, "", 0, 0, "corpus file written by 'ladle prep'"),
    CHOICE("data.read", data_read, "stream", "stream|memory", "read each window from the corpus file when it is needed (memory does not grow with the corpus), or every domain into memory at start"),
    CHOICE("data.sampling", sampling, "iid", "iid|stratified", "Algorithm 1: each sequence's domain ~ Cat(h), or floor(B h_i) per domain first"),
    KEY("meta.support", KEY_INT, meta_support, "2", 0, 1 << 20, "domains with non-zero weight in each sampled mixture h (0, or at least the corpus' domains: all)"),
    KEY("meta.concentration", KEY_FLOAT, meta_concentration, "1.0", 1e-3, 1e6, "Dirichlet concentration c of the mixture weights"),
    KEY("meta.natural", KEY_FLOAT, meta_natural, "0.9", 0, 1, "probability that a step's h is the natural mixture (domains in proportion to their train bytes) instead of a support/concentration draw"),
    KEY("meta.weights", KEY_TEXT, meta_weights, "", 0, 0, "NAME=W,... : the mixture that meta.natural draws instead of the natural one (e.g. a dense model trained on one specialist's h)"),
    KEY("soup.experts", KEY_INT, experts, "0", 0, 1 << 16, "experts n in the bank (0 = a plain dense model)"),
    CHOICE("soup.experts_on", experts_on, "all", "all|blocks", "which tensors carry experts: all, or the transformer blocks only"),
    KEY("soup.expert_init_std", KEY_FLOAT, expert_init_std, "0.02", 0, 10, "std of the experts' initial noise (0: experts start at zero; the noise breaks their symmetry)"),
    KEY("soup.rank", KEY_INT, expert_rank, "0", 0, 1 << 16, "0: dense experts; r > 0: rank-r experts U_j V_j^T for every matrix"),
    KEY("soup.lr_scale", KEY_FLOAT, bank_lr_scale, "1", 0, 1000, "the experts' learning rate as a multiple of train.lr"),
    KEY("router.hidden", KEY_INT, router_hidden, "256", 1, 1 << 20, "hidden width H of the router MLP"),
    CHOICE("router.alpha", router_alpha, "softmax", "raw|softmax", "expert coefficients: the router's raw outputs, or their softmax"),
    KEY("router.scale", KEY_FLOAT, router_scale, "1", 1e-6, 1e6, "alpha = scale x the router's output (after the softmax, if any)"),
    KEY("router.lr_scale", KEY_FLOAT, router_lr_scale, "1", 0, 1000, "the router's learning rate as a multiple of train.lr"),
    KEY("eval.every", KEY_INT, eval_every, "50", 0, 1 << 30, "evaluate on every domain's valid split every N steps (0 = only at the end)"),
    KEY("eval.sequences", KEY_INT, eval_sequences, "32", 1, 1 << 24, "valid windows per domain per evaluation"),
    KEY("log.every", KEY_INT, log_every, "1", 1, 1 << 30, "progress line every N steps"),
    KEY("log.peak_gflops", KEY_FLOAT, peak_gflops, "108", 0.001, 1e9, "peak GFLOP/s of one thread (BLIS sgemm; about 108 on this project's 2-core machine): MFU = model FLOP/s / (peak x threads x ranks)"),
    KEY("run.dir", KEY_PATH, run_dir, "run", 0, 0, "output directory: metrics.jsonl, checkpoints ckpt-<step>.h5 and latest, model.h5 at the end"),
    KEY("run.stop_after", KEY_INT, stop_after, "0", 0, 1 << 30, "run at most N steps in this invocation, then write a checkpoint and exit (0 = no limit): split a run over short allocations"),
    KEY("ckpt.every", KEY_INT, ckpt_every, "0", 0, 1 << 30, "write a checkpoint every N steps (0 = only at the end); ladle train resumes from the newest"),
    KEY("ckpt.keep_last", KEY_INT, ckpt_keep_last, "3", 1, 1 << 30, "checkpoints kept (the newest N)"),
    KEY("ckpt.keep_every", KEY_INT, ckpt_keep_every, "0", 0, 1 << 30, "also keep forever every checkpoint whose step is a multiple of N (0 = none)"),
};
#define N_KEYS (sizeof KEYS / sizeof KEYS[0])

static const key_spec *find_key(const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(KEYS[i].name, name) == 0) return &KEYS[i];
    return NULL;
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t row[128];
    if (lb >= 128) return (size_t)-1;
    for (size_t j = 0; j <= lb; j++) row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            if (up + 1 < best) best = up + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static const char *closest_key(const char *name)
{
    const char *best = KEYS[0].name;
    size_t best_d = (size_t)-1;
    for (size_t i = 0; i < N_KEYS; i++) {
        /* compare against the full key and against its part after the dot, so that
         * "layers" suggests "model.layers" */
        const char *dot = strchr(KEYS[i].name, '.');
        size_t d = edit_distance(name, KEYS[i].name);
        if (dot) {
            size_t d2 = edit_distance(name, dot + 1);
            if (d2 < d) d = d2;
        }
        if (d < best_d) { best_d = d; best = KEYS[i].name; }
    }
    return best;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1])) *--end = '\0';
    return s;
}

int ladle_parse_integer(const char *what, const char *text, long long min, long long max, long long *out, char *err,
                        size_t errlen)
{
    /* strtoll alone would take leading spaces and '+', and say nothing of an empty string */
    const char *digits = text + (text[0] == '-');
    char *end = NULL;
    errno = 0;
    long long v = isdigit((unsigned char)digits[0]) ? strtoll(text, &end, 10) : 0;
    if (!end || *end != '\0' || errno == ERANGE || v < min || v > max) {
        snprintf(err, errlen, "%s '%s': expected an integer in [%lld, %lld]", what, text, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

int ladle_config_set(ladle_config *cfg, const char *key, const char *value, char *err, size_t errlen)
{
    const key_spec *k = find_key(key);
    if (!k) {
        snprintf(err, errlen, "unknown configuration key '%s' (did you mean '%s'?)", key, closest_key(key));
        return -1;
    }
    char *field = (char *)cfg + k->offset;
    char *end = NULL;
    errno = 0;
    switch (k->type) {
    case KEY_INT:
    case KEY_LONG: {
        long long v;
        if (ladle_parse_integer(key, value, (long long)k->min, (long long)k->max, &v, err, errlen) != 0) return -1;
        if (k->type == KEY_INT) *(int *)field = (int)v;
        else *(long *)field = (long)v;
        return 0;
    }
    case KEY_FLOAT: {
        double v = strtod(value, &end);
        if (end == value || *end != '\0' || errno || !isfinite(v)) {
            snprintf(err, errlen, "%s = '%s': expected a number", key, value);
            return -1;
        }
        if (v < k->min || v > k->max) {
            snprintf(err, errlen, "%s = %g: expected a number in [%g, %g]", key, v, k->min, k->max);
            return -1;
        }
        *(float *)field = (float)v;
        return 0;
    }
    case KEY_CHOICE: {
        /* find value among the '|'-separated choices */
        int index = 0;
        for (const char *c = k->choices; ; index++) {
            const char *bar = strchr(c, '|');
            size_t len = bar ? (size_t)(bar - c) : strlen(c);
            if (strlen(value) == len && strncmp(value, c, len) == 0) {
                *(int *)field = index;
                return 0;
            }
            if (!bar) break;
            c = bar + 1;
        }
        snprintf(err, errlen, "%s = '%s': expected one of %s", key, value, k->choices);
        return -1;
    }
    case KEY_PATH:
    case KEY_TEXT:
        if (strlen(value) >= LADLE_PATH_MAX) {
            snprintf(err, errlen, "%s: path longer than %d bytes", key, LADLE_PATH_MAX - 1);
            return -1;
        }
        strcpy(field, value);
        return 0;
    }
    snprintf(err, errlen, "%s: internal error (key type)", key);
    return -1;
}

void ladle_config_defaults(ladle_config *cfg)
{
    char err[256];
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < N_KEYS; i++)
        if (ladle_config_set(cfg, KEYS[i].name, KEYS[i].fallback, err, sizeof err) != 0)
            LADLE_FAIL("bad default: %s", err);
}

/* Parse "key = value" lines; '#' starts a comment. origin names the source in errors. */
/* skip_unknown: a configuration stored by another ladle version may name keys this one
 * does not have; they are skipped (the file's format_version guards real changes). */
static int parse_lines(ladle_config *cfg, const char *text, const char *origin, int skip_unknown, char *err,
                       size_t errlen)
{
    char *copy = ladle_malloc(strlen(text) + 1, "configuration text");
    strcpy(copy, text);
    int lineno = 0, rc = 0;
    for (char *line = copy; line && rc == 0;) {
        char *next = strchr(line, '\n');
        if (next) *next++ = '\0';
        lineno++;
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *s = trim(line);
        if (*s) {
            char *eq = strchr(s, '=');
            char msg[512];
            if (!eq) {
                snprintf(err, errlen, "%s:%d: expected 'key = value', got '%s'", origin, lineno, s);
                rc = -1;
            } else {
                *eq = '\0';
                int skip = skip_unknown && !find_key(trim(s));
                if (!skip && ladle_config_set(cfg, trim(s), trim(eq + 1), msg, sizeof msg) != 0) {
                    snprintf(err, errlen, "%s:%d: %s", origin, lineno, msg);
                    rc = -1;
                }
            }
        }
        line = next;
    }
    free(copy);
    return rc;
}

int ladle_config_from_text(ladle_config *cfg, const char *text, char *err, size_t errlen)
{
    ladle_config_defaults(cfg);
    return parse_lines(cfg, text, "stored configuration", 1, err, errlen);
}

/* A config is a few KiB of text: more than this is not one (e.g. /dev/zero, a data file). */
#define CONFIG_MAX_BYTES (1 << 20)

static char *read_text_file(const char *path, char *err, size_t errlen)
{
    int fd = ladle_open_regular(path, "config file", err, errlen);
    if (fd < 0) return NULL;
    /* read one byte past the bound to tell "exactly the bound" from "larger" */
    char *buf = ladle_malloc(CONFIG_MAX_BYTES + 2, "config file");
    size_t len = 0;
    ssize_t got = 1;
    while (got != 0 && len <= CONFIG_MAX_BYTES) {
        got = read(fd, buf + len, CONFIG_MAX_BYTES + 1 - len);
        if (got > 0) len += (size_t)got;
        else if (got < 0 && errno != EINTR) break;
    }
    if (got < 0 || len > CONFIG_MAX_BYTES) {
        if (got < 0) snprintf(err, errlen, "cannot read config file '%s': %s", path, strerror(errno));
        else snprintf(err, errlen, "config file '%s' is larger than %d MiB: not a config", path, CONFIG_MAX_BYTES >> 20);
        close(fd);
        free(buf);
        return NULL;
    }
    close(fd);
    buf[len] = '\0';
    if (memchr(buf, '\0', len)) {
        free(buf);
        snprintf(err, errlen, "config file '%s' is not text (contains NUL bytes)", path);
        return NULL;
    }
    /* a UTF-8 byte-order mark (some Windows editors write one) is not part of the first key */
    if (len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0) memmove(buf, buf + 3, len - 2);
    return buf;
}

void ladle_config_load(ladle_config *cfg, const char *path, int n_overrides, char **overrides)
{
    char err[1024];
    ladle_config_defaults(cfg);
    if (path) {
        char *text = read_text_file(path, err, sizeof err);
        if (!text) ladle_usage_error("%s", err);
        int rc = parse_lines(cfg, text, path, 0, err, sizeof err);
        free(text);
        if (rc != 0) ladle_usage_error("%s", err);
    }
    for (int i = 0; i < n_overrides; i++) {
        char key[256];
        const char *eq = strchr(overrides[i], '=');
        if (!eq || eq == overrides[i] || (size_t)(eq - overrides[i]) >= sizeof key)
            ladle_usage_error("command line: expected key=value, got '%s'", overrides[i]);
        memcpy(key, overrides[i], (size_t)(eq - overrides[i]));
        key[eq - overrides[i]] = '\0';
        char msg[512];
        if (ladle_config_set(cfg, trim(key), eq + 1, msg, sizeof msg) != 0)
            ladle_usage_error("command line: %s", msg);
    }
    if (ladle_config_validate(cfg, err, sizeof err) != 0) ladle_usage_error("%s", err);
}

int ladle_config_ffn_kinds(const ladle_config *cfg, int *kinds, char *err, size_t errlen)
{
    static const char *const names[] = {"dense", "moe", "smear", "tag"};
    int n = 0;
    const char *p = cfg->ffn;
    for (;;) {
        size_t len = strcspn(p, ",");
        char word[32];
        snprintf(word, sizeof word, "%.*s", (int)(len < sizeof word - 1 ? len : sizeof word - 1), p);
        char *w = trim(word);
        int kind = -1;
        for (int i = 0; i < 4; i++)
            if (strcmp(w, names[i]) == 0) kind = i;
        if (kind < 0) {
            snprintf(err, errlen, "model.ffn: '%s' is not a site kind (expected dense, moe, smear or tag)", w);
            return -1;
        }
        if (n < cfg->layers) kinds[n] = kind;
        n++;
        if (!p[len]) break;
        p += len + 1;
    }
    if (n == 1)   /* one word: every layer */
        for (int l = 1; l < cfg->layers; l++) kinds[l] = kinds[0];
    else if (n != cfg->layers) {
        snprintf(err, errlen, "model.ffn lists %d sites but model.layers = %d (give one kind, or one per layer)", n,
                 cfg->layers);
        return -1;
    }
    return 0;
}

int ladle_config_validate(const ladle_config *cfg, char *err, size_t errlen)
{
    int *kinds = ladle_calloc((size_t)cfg->layers, sizeof(int), "FFN kinds");
    int rc = ladle_config_ffn_kinds(cfg, kinds, err, errlen);
    int routed_segments = 0, moe = 0;
    for (int l = 0; rc == 0 && l < cfg->layers; l++) {
        routed_segments |= kinds[l] == LADLE_FFN_SMEAR || kinds[l] == LADLE_FFN_TAG;
        moe |= kinds[l] == LADLE_FFN_MOE;
    }
    free(kinds);
    if (rc != 0) return rc;
    if (routed_segments && cfg->context % cfg->smear_segment != 0) {
        snprintf(err, errlen, "smear.segment = %d does not divide model.context = %d", cfg->smear_segment, cfg->context);
        return -1;
    }
    if (moe && cfg->moe_top_k > cfg->moe_experts) {
        snprintf(err, errlen, "moe.top_k = %d exceeds moe.experts = %d", cfg->moe_top_k, cfg->moe_experts);
        return -1;
    }
    if (cfg->dim % cfg->heads != 0) {
        snprintf(err, errlen, "model.heads = %d does not divide model.dim = %d", cfg->heads, cfg->dim);
        return -1;
    }
    if (cfg->warmup > 0 && cfg->warmup > cfg->steps && cfg->steps > 0) {
        snprintf(err, errlen, "train.warmup = %d exceeds train.steps = %d", cfg->warmup, cfg->steps);
        return -1;
    }
    return 0;
}

static int format_value(const ladle_config *cfg, const key_spec *k, char *out, size_t len)
{
    const char *field = (const char *)cfg + k->offset;
    switch (k->type) {
    case KEY_INT: return snprintf(out, len, "%d", *(const int *)field);
    case KEY_LONG: return snprintf(out, len, "%ld", *(const long *)field);
    case KEY_FLOAT: return snprintf(out, len, "%.9g", (double)*(const float *)field);
    case KEY_PATH:
    case KEY_TEXT: return snprintf(out, len, "%s", field);
    case KEY_CHOICE: {
        const char *c = k->choices;
        for (int i = 0; i < *(const int *)field && strchr(c, '|'); i++) c = strchr(c, '|') + 1;
        const char *bar = strchr(c, '|');
        return snprintf(out, len, "%.*s", bar ? (int)(bar - c) : (int)strlen(c), c);
    }
    }
    return 0;
}

char *ladle_config_to_text(const ladle_config *cfg)
{
    size_t cap = N_KEYS * (LADLE_PATH_MAX + 64), len = 0;
    char *text = ladle_malloc(cap, "configuration text");
    text[0] = '\0';
    for (size_t i = 0; i < N_KEYS; i++) {
        char value[LADLE_PATH_MAX + 32];
        format_value(cfg, &KEYS[i], value, sizeof value);
        len += (size_t)snprintf(text + len, cap - len, "%s = %s\n", KEYS[i].name, value);
    }
    return text;
}

/* Markdown table cell text: '|' would end the cell, so it is escaped. */
static void print_cell(FILE *out, const char *text)
{
    for (const char *c = text; *c; c++) {
        if (*c == '|') fputc('\\', out);
        fputc(*c, out);
    }
}

void ladle_config_print_keys(FILE *out)
{
    fprintf(out, "| key | default | meaning |\n|---|---|---|\n");
    for (size_t i = 0; i < N_KEYS; i++) {
        fprintf(out, "| `%s` | ", KEYS[i].name);
        if (KEYS[i].fallback[0]) fprintf(out, "`%s`", KEYS[i].fallback);
        else fputs("(none)", out);
        fputs(" | ", out);
        print_cell(out, KEYS[i].help);
        if (KEYS[i].choices) {
            fputs(": ", out);
            print_cell(out, KEYS[i].choices);
        }
        fputs(" |\n", out);
    }
}
