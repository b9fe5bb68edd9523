/* dump_model: write one forward/backward pass and a short AdamW run of the C model to a
 * directory, for the independent PyTorch reference (test/torch_ref.py) to check.
 *
 *   dump_model OUTDIR [key=value ...]
 *
 * Files written to OUTDIR (raw little-endian float32 unless noted):
 *   params.bin            the flat parameter vector, as used for the pass
 *   grads.bin             d(mean loss)/d(params), grad_scale 1/(B*T)
 *   logits.bin            [B, T, 256]
 *   tokens.bin targets.bin  [B, T] uint8
 *   manifest.txt          resolved configuration ("key = value"), then "B n", "n_params n",
 *                         "loss x", and one "tensor NAME OFFSET ROWS COLS" line per tensor
 *   losses.txt            the mean loss before each of cfg.steps AdamW steps on the same batch
 *   steps.txt             per step: "t lr grad_norm clip_factor" (diagnostics)
 *
 * Not an MPI program (run it without mpiexec); MPI is initialised only because the
 * library's error paths use it. */
#include "ladle/config.h"
#include "ladle/error.h"
#include "ladle/model.h"
#include "ladle/optim.h"
#include "ladle/rng.h"

#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

/* Defaults of this tool, applied before the command-line overrides: a small model and
 * an optimizer setting that exercises warmup, cosine decay, weight decay and clipping. */
static const char *const TOOL_DEFAULTS[] = {
    "model.layers=2", "model.dim=32", "model.heads=4", "model.context=16",
    "model.init_std=0.1", "train.batch=3", "train.steps=10", "train.warmup=3",
    "train.clip=0.5", "train.weight_decay=0.1", "train.lr=1e-2", "train.seed=7",
};

static int apply_override(ladle_config *cfg, const char *arg)
{
    char key[256], err[512];
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg || (size_t)(eq - arg) >= sizeof key) {
        fprintf(stderr, "dump_model: expected key=value, got '%s'\n", arg);
        return -1;
    }
    memcpy(key, arg, (size_t)(eq - arg));
    key[eq - arg] = '\0';
    if (ladle_config_set(cfg, key, eq + 1, err, sizeof err) != 0) {
        fprintf(stderr, "dump_model: %s\n", err);
        return -1;
    }
    return 0;
}

static FILE *open_out(const char *dir, const char *name, const char *mode)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, mode);
    if (!f) LADLE_FAIL("cannot create %s: %s", path, strerror(errno));
    return f;
}

static void close_out(FILE *f, const char *dir, const char *name)
{
    if (ferror(f) | fclose(f)) LADLE_FAIL("error writing %s/%s", dir, name);
}

static void write_raw(const char *dir, const char *name, const void *data, size_t bytes)
{
    FILE *f = open_out(dir, name, "wb");
    if (bytes && fwrite(data, 1, bytes, f) != bytes) LADLE_FAIL("short write to %s/%s", dir, name);
    close_out(f, dir, name);
}

static double sum_squares(const float *x, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
    return s;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: dump_model OUTDIR [key=value ...]\n");
        MPI_Finalize();
        return 2;
    }
    {   /* the files are written as the host's float32: make sure that is little-endian */
        const uint32_t one = 1;
        unsigned char first;
        memcpy(&first, &one, 1);
        if (first != 1) {
            fprintf(stderr, "dump_model: big-endian host, the raw dumps would be misread\n");
            MPI_Finalize();
            return 1;
        }
    }
    const char *dir = argv[1];

    ladle_config cfg;
    ladle_config_defaults(&cfg);
    for (size_t i = 0; i < sizeof TOOL_DEFAULTS / sizeof TOOL_DEFAULTS[0]; i++)
        if (apply_override(&cfg, TOOL_DEFAULTS[i]) != 0) { MPI_Finalize(); return 2; }
    for (int i = 2; i < argc; i++)
        if (apply_override(&cfg, argv[i]) != 0) { MPI_Finalize(); return 2; }
    char err[512];
    if (ladle_config_validate(&cfg, err, sizeof err) != 0) {
        fprintf(stderr, "dump_model: %s\n", err);
        MPI_Finalize();
        return 2;
    }
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) LADLE_FAIL("cannot create %s: %s", dir, strerror(errno));

    const int B = cfg.batch, T = cfg.context;
    const size_t BT = (size_t)B * (size_t)T;
    const uint64_t seed = (uint64_t)cfg.seed;

    ladle_model model;
    ladle_model_create(&model, &cfg);
    const size_t n = model.n_params;
    float *params = ladle_malloc(n * sizeof(float), "params");
    float *grads = ladle_calloc(n, sizeof(float), "grads");
    float *m = ladle_calloc(n, sizeof(float), "adam m");
    float *v = ladle_calloc(n, sizeof(float), "adam v");
    ladle_model_init_range(&model, params, 0, n, seed);
    /* The constant-initialised tensors (layernorm gains 1, biases 0) get a deterministic
     * perturbation, so that their gradients are generic and a forward pass that ignored
     * a gain or a bias would change the logits. */
    for (int ti = 0; ti < model.n_tensors; ti++) {
        const ladle_tensor *t = &model.tensors[ti];
        if (t->init_std > 0) continue;
        for (size_t j = 0; j < t->size; j++)
            params[t->offset + j] += 0.1f * ladle_rng_normal(seed + 1000, (uint64_t)ti, 99, j);
    }

    uint8_t *tokens = ladle_malloc(BT, "tokens"), *targets = ladle_malloc(BT, "targets");
    for (size_t i = 0; i < BT; i++) {
        tokens[i] = (uint8_t)ladle_rng_below(seed + 2000, 0, 1, i, 256);
        targets[i] = (uint8_t)ladle_rng_below(seed + 2000, 0, 2, i, 256);
    }

    ladle_activations acts;
    ladle_activations_create(&acts, &model, B);
    const float grad_scale = 1.0f / (float)BT;

    /* ---- one forward + backward at the initial parameters ---- */
    double loss = ladle_model_forward(&model, params, &acts, tokens, targets, B) / (double)BT;
    ladle_model_backward(&model, params, grads, &acts, tokens, targets, B, grad_scale);

    write_raw(dir, "params.bin", params, n * sizeof(float));
    write_raw(dir, "grads.bin", grads, n * sizeof(float));
    write_raw(dir, "logits.bin", acts.logits, BT * LADLE_VOCAB * sizeof(float));
    write_raw(dir, "tokens.bin", tokens, BT);
    write_raw(dir, "targets.bin", targets, BT);

    FILE *f = open_out(dir, "manifest.txt", "w");
    char *text = ladle_config_to_text(&cfg);
    fputs(text, f);
    free(text);
    fprintf(f, "B %d\n", B);
    fprintf(f, "n_params %zu\n", n);
    fprintf(f, "loss %.9g\n", loss);
    for (int ti = 0; ti < model.n_tensors; ti++) {
        const ladle_tensor *t = &model.tensors[ti];
        fprintf(f, "tensor %s %zu %d %d\n", t->name, t->offset, t->shape[0], t->ndim == 2 ? t->shape[1] : 1);
    }
    close_out(f, dir, "manifest.txt");

    /* ---- cfg.steps AdamW steps on the same batch ---- */
    FILE *fl = open_out(dir, "losses.txt", "w");
    FILE *fs = open_out(dir, "steps.txt", "w");
    for (long t = 1; t <= cfg.steps; t++) {
        memset(grads, 0, n * sizeof(float));
        double step_loss = ladle_model_forward(&model, params, &acts, tokens, targets, B) / (double)BT;
        ladle_model_backward(&model, params, grads, &acts, tokens, targets, B, grad_scale);
        double norm = sqrt(sum_squares(grads, n));
        float factor = ladle_clip_factor(&cfg, norm);
        float lr = ladle_lr_at(&cfg, t - 1);
        ladle_adamw_update(model.tensors, model.n_tensors, &cfg, params, grads, m, v, 0, n, t, lr, factor);
        fprintf(fl, "%.9g\n", step_loss);
        fprintf(fs, "%ld %.9g %.9g %.9g\n", t, (double)lr, norm, (double)factor);
    }
    close_out(fl, dir, "losses.txt");
    close_out(fs, dir, "steps.txt");

    printf("dump_model: %s: %zu parameters, B=%d T=%d, loss %.6f\n", dir, n, B, T, loss);

    ladle_activations_free(&acts);
    free(params); free(grads); free(m); free(v);
    free(tokens); free(targets);
    ladle_model_free(&model);
    MPI_Finalize();
    return 0;
}
