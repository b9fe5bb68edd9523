/* config: every tunable of a run, from a "key = value" file plus "key=value" overrides.
 *
 * The keys live in one table (config.c) with type, default, bounds and help text; the
 * parser, the printed resolved configuration, the text stored in model files and the
 * README's key list are all generated from it. Unknown keys are errors that suggest the
 * closest valid key. */
#ifndef LADLE_CONFIG_H
#define LADLE_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#define LADLE_PATH_MAX 1024

typedef struct {
    /* model */
    int layers, dim, heads, context;
    float init_std;
    char ffn[LADLE_PATH_MAX]; /* model.ffn: dense|moe|smear|tag, one for all layers or one per layer */
    int ffn_mult;             /* model.ffn_mult: dense FFN hidden width = ffn_mult * dim */
    /* routed FFN sites (SMEAR, tag routing, MoE) */
    int smear_experts, smear_segment;
    int smear_kind;           /* smear.kind: 0 ffn (the site's FFN is soft-merged), 1 adapter */
    int smear_bottleneck;     /* smear.bottleneck: adapter width r (0: model.dim / 32) */
    float smear_dropout;
    int moe_experts, moe_top_k;
    float moe_balance, moe_capacity;
    /* training */
    int batch;          /* global batch, in sequences, independent of the rank count */
    int steps;
    int warmup;
    float lr, min_lr_ratio, weight_decay, beta1, beta2, eps, clip;
    long seed;
    char init[LADLE_PATH_MAX];  /* train.init: start from this model file's parameters */
    int only;                 /* train.only: 0 all, 1 the routers of moe/smear sites only */
    /* data and the meta-distribution of domain weights */
    char corpus[LADLE_PATH_MAX];
    int data_read;            /* data.read: ladle_corpus_read (stream | memory) */
    int sampling;             /* data.sampling: ladle_sampling (iid | stratified) */
    int meta_support;         /* meta.support: domains per mixture (0 = all) */
    float meta_concentration; /* meta.concentration: Dirichlet parameter */
    float meta_natural;       /* meta.natural: probability that h is the natural mixture */
    char meta_weights[LADLE_PATH_MAX]; /* meta.weights: NAME=W,... in place of the natural mixture ("": none) */
    /* Soup-of-Experts */
    int experts;              /* soup.experts: n (0 = a plain dense model) */
    int experts_on;           /* soup.experts_on: 0 all tensors, 1 the transformer blocks only */
    float expert_init_std;    /* soup.expert_init_std */
    int expert_rank;          /* soup.rank: 0 dense experts, r > 0 low-rank U diag(alpha) V^T */
    int router_hidden;        /* router.hidden */
    int router_alpha;         /* router.alpha: ladle_alpha_kind (raw | softmax) */
    float router_scale;       /* router.scale: alpha = scale x the router's output */
    float router_lr_scale;    /* router.lr_scale: the router's lr / train.lr */
    float bank_lr_scale;      /* soup.lr_scale: the experts' lr / train.lr */
    /* evaluation and logging */
    int eval_every, eval_sequences, log_every;
    float peak_gflops;  /* per thread, for MFU */
    char run_dir[LADLE_PATH_MAX];
    int ckpt_every, ckpt_keep_last, ckpt_keep_every;
    int stop_after;           /* run.stop_after: steps in this invocation, then checkpoint and exit */
} ladle_config;

/* The FFN site of a layer, from model.ffn. */
typedef enum { LADLE_FFN_DENSE = 0, LADLE_FFN_MOE, LADLE_FFN_SMEAR, LADLE_FFN_TAG } ladle_ffn_kind;

/* Parse model.ffn into kinds[layers]: returns 0, or -1 with a message (unknown word, a
 * list whose length is not model.layers). */
int ladle_config_ffn_kinds(const ladle_config *cfg, int *kinds, char *err, size_t errlen);

void ladle_config_defaults(ladle_config *cfg);

/* Parse a config file, then "key=value" overrides in order. Any problem is a usage error
 * (every rank parses identically, so every rank stops). path may be NULL. */
void ladle_config_load(ladle_config *cfg, const char *path, int n_overrides, char **overrides);

/* The one integer parser of configuration keys, command-line options and environment
 * variables: text must be all decimal digits after an optional '-' (no spaces, no '+', no
 * trailing characters) with a value in [min, max]. Returns 0 with *out set, or -1 with
 * "WHAT 'TEXT': expected an integer in [MIN, MAX]" in err. */
int ladle_parse_integer(const char *what, const char *text, long long min, long long max, long long *out, char *err,
                        size_t errlen);

/* Set one key from text; returns 0, or -1 with a message in err. */
int ladle_config_set(ladle_config *cfg, const char *key, const char *value, char *err, size_t errlen);

/* Cross-key checks (heads divide dim, ...): returns 0 or -1 with a message. */
int ladle_config_validate(const ladle_config *cfg, char *err, size_t errlen);

/* The resolved configuration as "key = value" lines (malloc'd, caller frees). */
char *ladle_config_to_text(const ladle_config *cfg);

/* Parse text produced by ladle_config_to_text (e.g. from a model file). */
int ladle_config_from_text(ladle_config *cfg, const char *text, char *err, size_t errlen);

/* Print the key table (name, default, help) as Markdown, for the docs. */
void ladle_config_print_keys(FILE *out);

#endif
