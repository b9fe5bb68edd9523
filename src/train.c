#include "ladle/train.h"
#include "ladle/ckpt.h"
#include "ladle/error.h"
#include "ladle/eval.h"
#include "ladle/h5io.h"
#include "ladle/optim.h"
#include "ladle/router.h"
#include "ladle/soup.h"

#include <blis.h>
#include <errno.h>
#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"   /* PACKAGE_VERSION */

static float *alloc_floats(size_t n, const char *what)
{
    return ladle_calloc(n, sizeof(float), what);
}

void ladle_trainer_create(ladle_trainer *tr, const ladle_config *cfg, MPI_Comm comm)
{
    memset(tr, 0, sizeof *tr);
    tr->cfg = *cfg;
    if (cfg->corpus[0] == '\0') ladle_usage_error("data.corpus is not set: give the corpus file written by 'ladle prep'");
    ladle_corpus_open(&tr->corpus, cfg->corpus, comm);
    ladle_corpus_check_context(&tr->corpus, cfg->corpus, cfg->context);
    if (cfg->meta_support > tr->corpus.n_domains)
        ladle_usage_error("meta.support = %d exceeds the corpus' %d domains", cfg->meta_support, tr->corpus.n_domains);
    ladle_model_create(&tr->model, cfg);
    ladle_shard_create(&tr->shard, tr->model.n_params, comm);
    const ladle_shard *s = &tr->shard;
    const int k = tr->corpus.n_domains, n = cfg->experts;

    /* contiguous share of the global batch; a rank may have none when batch < ranks */
    tr->b_lo = (int)((long)cfg->batch * s->rank / s->size);
    tr->b_hi = (int)((long)cfg->batch * (s->rank + 1) / s->size);
    int local = tr->b_hi - tr->b_lo;

    tr->param_slice = alloc_floats(s->slice, "parameter slice");
    tr->merged_slice = alloc_floats(s->slice, "merged parameter slice");
    tr->grad_slice = alloc_floats(s->slice, "gradient slice");
    tr->adam_m = alloc_floats(s->slice, "AdamW first moment");
    tr->adam_v = alloc_floats(s->slice, "AdamW second moment");
    tr->params = alloc_floats(s->padded, "parameters");
    tr->grads = alloc_floats(s->padded, "gradients");
    ladle_model_init_range(&tr->model, tr->param_slice, s->lo, s->hi, (uint64_t)cfg->seed);

    /* the bank (empty for a dense model) and the replicated router */
    ladle_soup_create(&tr->soup, &tr->model, s, n, cfg->experts_on, cfg->expert_rank);
    ladle_soup_init(&tr->soup, &tr->model, cfg->expert_init_std, (uint64_t)cfg->seed);
    tr->h = alloc_floats((size_t)k, "domain weights");
    tr->alpha = alloc_floats((size_t)(n > 0 ? n : 1), "expert coefficients");
    tr->dalpha = alloc_floats((size_t)(n > 0 ? n : 1), "expert coefficient gradients");
    tr->reduced = ladle_calloc((size_t)(3 + n), sizeof(double), "reduction buffer");
    if (n > 0) {
        ladle_router_create(&tr->router, k, cfg->router_hidden, n, (ladle_alpha_kind)cfg->router_alpha);
        tr->router_params = alloc_floats(tr->router.n_params, "router parameters");
        tr->router_grads = alloc_floats(tr->router.n_params, "router gradients");
        tr->router_m = alloc_floats(tr->router.n_params, "router AdamW first moment");
        tr->router_v = alloc_floats(tr->router.n_params, "router AdamW second moment");
        ladle_router_init(&tr->router, tr->router_params, (uint64_t)cfg->seed);
        ladle_router_cache_create(&tr->router_cache, &tr->router);
    }

    /* activations for this rank's sequences, at least one for evaluation */
    ladle_activations_create(&tr->acts, &tr->model, local > 0 ? local : 1);
    tr->tokens = ladle_malloc((size_t)(local > 0 ? local : 1) * cfg->context, "batch tokens");
    tr->targets = ladle_malloc((size_t)(local > 0 ? local : 1) * cfg->context, "batch targets");
    tr->labels = ladle_calloc((size_t)(local > 0 ? local : 1), sizeof(int), "batch labels");
    tr->log.rank = s->rank;   /* opened by ladle_train_run, after a resume trimmed metrics.jsonl */
}

void ladle_trainer_free(ladle_trainer *tr)
{
    ladle_log_close(&tr->log);
    ladle_activations_free(&tr->acts);
    free(tr->param_slice); free(tr->merged_slice); free(tr->grad_slice); free(tr->adam_m); free(tr->adam_v);
    free(tr->params); free(tr->grads); free(tr->tokens); free(tr->targets); free(tr->labels);
    free(tr->h); free(tr->alpha); free(tr->dalpha); free(tr->reduced);
    if (tr->soup.n > 0) {
        free(tr->router_params); free(tr->router_grads); free(tr->router_m); free(tr->router_v);
        ladle_router_cache_free(&tr->router_cache);
    }
    ladle_soup_free(&tr->soup);
    ladle_corpus_free(&tr->corpus);
    ladle_model_free(&tr->model);
}

void ladle_trainer_report_memory(const ladle_trainer *tr)
{
    const ladle_shard *s = &tr->shard;
    const ladle_model *m = &tr->model;
    /* what this rank holds: its slices of S (params, merged, grads, 2 moments), its
     * bank shard with moments, one full Theta and one full gradient, the router */
    size_t shared = 5 * s->slice * sizeof(float);
    /* dense experts are sharded; low-rank factors (params, grads, 2 moments) replicated */
    size_t bank = 3 * (size_t)tr->soup.n * tr->soup.own_len * sizeof(float) + 4 * tr->soup.lowrank_size * sizeof(float);
    size_t full = 2 * s->padded * sizeof(float);
    size_t router = 4 * tr->router.n_params * sizeof(float);
    size_t L = (size_t)m->layers, C = (size_t)m->dim, T = (size_t)m->context, B = (size_t)tr->acts.B;
    size_t acts = sizeof(float) * B * T * (L * (16 * C + (size_t)m->heads * T + 4) + 2 * C + 2 * LADLE_VOCAB + 3);
    /* the largest bank shard is what limits a run: report it from every rank */
    unsigned long long mine = bank, largest = 0;
    MPI_CHECK(MPI_Reduce(&mine, &largest, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, 0, s->comm));
    if (s->rank != 0) return;
    double mib = 1.0 / (1024.0 * 1024.0);
    printf("model: %zu parameters per expanded model (%d layers, dim %d, %d heads, context %d)", m->n_params,
           m->layers, m->dim, m->heads, m->context);
    if (tr->soup.n > 0)
        printf("; soup of %d experts over [%zu, %zu) (%zu parameters each), router %zu parameters",
               tr->soup.n, tr->soup.bank_lo, tr->soup.bank_hi, tr->soup.bank_hi - tr->soup.bank_lo,
               tr->router.n_params);
    printf("\n%d ranks, slice %zu\n", s->size, s->slice);
    printf("memory per rank: shared slices %zu bytes, bank shard %llu bytes (largest rank), full Theta + gradient "
           "%zu bytes, router %zu bytes, activations ~%.1f MiB\n", shared, largest, full, router, acts * mib);
}

void ladle_trainer_gather_theta(ladle_trainer *tr, const float *h)
{
    if (tr->soup.n > 0) {
        ladle_router_forward(&tr->router, tr->router_params, h, tr->alpha, NULL);
        ladle_soup_merge(&tr->soup, &tr->model, tr->alpha, tr->param_slice, tr->merged_slice, tr->shard.slice);
        ladle_shard_allgather(&tr->shard, tr->merged_slice, tr->params);
    } else {
        ladle_shard_allgather(&tr->shard, tr->param_slice, tr->params);
    }
}

double ladle_trainer_step(ladle_trainer *tr, ladle_step_stats *st)
{
    const ladle_config *cfg = &tr->cfg;
    const ladle_shard *s = &tr->shard;
    const int T = cfg->context, local = tr->b_hi - tr->b_lo;
    const int k = tr->corpus.n_domains, n = tr->soup.n;
    double t0 = ladle_now();

    /* 1. the step's domain weights h ~ pi and coefficients alpha, drawn on rank 0 */
    if (s->rank == 0) {
        ladle_sample_mixture((uint64_t)cfg->seed, (uint64_t)tr->step, k, cfg->meta_support, cfg->meta_concentration,
                             tr->h);
        if (n > 0) ladle_router_forward(&tr->router, tr->router_params, tr->h, tr->alpha, NULL);
    }
    MPI_CHECK(MPI_Bcast(tr->h, k, MPI_FLOAT, 0, s->comm));
    if (n > 0) MPI_CHECK(MPI_Bcast(tr->alpha, n, MPI_FLOAT, 0, s->comm));

    /* 2. this rank's slice of Theta = S + sum_j alpha_j E_j */
    const float *theta_slice = tr->param_slice;
    if (n > 0) {
        ladle_soup_merge(&tr->soup, &tr->model, tr->alpha, tr->param_slice, tr->merged_slice, s->slice);
        theta_slice = tr->merged_slice;
    }
    double t1 = ladle_now();

    /* 3. everyone gets the full Theta */
    ladle_shard_allgather(s, theta_slice, tr->params);
    double t2 = ladle_now();

    /* 4. forward and backward of this rank's share of the global batch from mix(h) */
    memset(tr->grads, 0, s->padded * sizeof(float));
    double loss_sum = 0.0;
    if (local > 0) {
        ladle_batch_train(&tr->corpus, tr->h, (ladle_sampling)cfg->sampling, cfg->batch, (uint64_t)cfg->seed,
                          (uint64_t)tr->step, tr->b_lo, tr->b_hi, T, tr->tokens, tr->targets, tr->labels);
        /* SMEAR's expert dropout is a function of the global sequence; tag routing reads labels */
        tr->acts.ctx = (ladle_forward_context){1, (uint64_t)cfg->seed, (uint64_t)tr->step, tr->b_lo, tr->labels};
        loss_sum = ladle_model_forward(&tr->model, tr->params, &tr->acts, tr->tokens, tr->targets, local);
        /* scale by the GLOBAL token count: the summed gradients are then the mean */
        float scale = 1.0f / ((float)cfg->batch * (float)T);
        ladle_model_backward(&tr->model, tr->params, tr->grads, &tr->acts, tr->tokens, tr->targets, local, scale);
    }
    double t3 = ladle_now();

    /* 5. sum gradients over ranks; each keeps the slice it owns: g = dS */
    ladle_shard_reduce_scatter(s, tr->grads, tr->grad_slice);
    /* 6. one all-reduce for the loss, the squared norms and the partial dalpha */
    double *red = tr->reduced;
    memset(red, 0, (size_t)(3 + n) * sizeof(double));
    red[0] = loss_sum;
    for (size_t i = 0; i < s->hi - s->lo; i++) red[1] += (double)tr->grad_slice[i] * tr->grad_slice[i];
    if (n > 0) {
        red[2] = ladle_soup_grad_sumsq(&tr->soup, tr->alpha, tr->grad_slice);
        memset(tr->dalpha, 0, (size_t)n * sizeof(float));
        ladle_soup_backward(&tr->soup, &tr->model, tr->alpha, tr->grad_slice, s->slice, tr->dalpha,
                            tr->soup.lowrank_grad);
        for (int j = 0; j < n; j++) red[3 + j] = tr->dalpha[j];
    }
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, red, 3 + n, MPI_DOUBLE, MPI_SUM, s->comm));
    ladle_soup_reduce_lowrank(&tr->soup, s->comm);   /* low-rank factors are replicated */
    double t4 = ladle_now();

    /* 7. router backward from dalpha: the same on every rank, so omega stays replicated */
    double sumsq = red[1] + red[2];
    if (n > 0) {
        for (int j = 0; j < n; j++) tr->dalpha[j] = (float)red[3 + j];
        memset(tr->router_grads, 0, tr->router.n_params * sizeof(float));
        ladle_router_forward(&tr->router, tr->router_params, tr->h, tr->router_cache.alpha, &tr->router_cache);
        ladle_router_backward(&tr->router, tr->router_params, tr->h, &tr->router_cache, tr->dalpha, tr->router_grads,
                              NULL);
        sumsq += ladle_soup_lowrank_sumsq(&tr->soup);   /* identical on every rank: added once */
        for (size_t i = 0; i < tr->router.n_params; i++) sumsq += (double)tr->router_grads[i] * tr->router_grads[i];
    }

    /* 8. AdamW on S, the bank shard and the router, clipped by the global norm */
    double norm = sqrt(sumsq);
    float lr = ladle_lr_at(cfg, tr->step), clip = ladle_clip_factor(cfg, norm);
    tr->step++;
    ladle_adamw_update(tr->model.tensors, tr->model.n_tensors, cfg, tr->param_slice, tr->grad_slice, tr->adam_m,
                       tr->adam_v, s->lo, s->hi, tr->step, lr, clip);
    if (n > 0) {
        ladle_soup_adamw(&tr->soup, &tr->model, cfg, tr->alpha, tr->grad_slice, tr->step, lr, clip);
        ladle_adamw_update(tr->router.tensors, 4, cfg, tr->router_params, tr->router_grads, tr->router_m,
                           tr->router_v, 0, tr->router.n_params, tr->step, lr, clip);
    }
    double t5 = ladle_now();

    double loss = red[0] / ((double)cfg->batch * T);
    if (st) {
        double secs = t5 - t0, tokens = (double)cfg->batch * T;
        st->step = tr->step;
        st->steps = cfg->steps;
        st->loss = loss;
        st->lr = lr;
        st->grad_norm = norm;
        st->ms = 1e3 * secs;
        st->tokens_per_s = tokens / secs;
        /* the peak is per thread; a rank runs as many BLIS threads as it was given */
        double threads = (double)bli_thread_get_num_threads();
        st->mfu = ladle_model_flops_per_token(&tr->model) * st->tokens_per_s /
                  (1e9 * cfg->peak_gflops * (threads > 1 ? threads : 1) * s->size);
        st->ms_merge = 1e3 * (t1 - t0);
        st->ms_gather = 1e3 * (t2 - t1);
        st->ms_compute = 1e3 * (t3 - t2);
        st->ms_reduce = 1e3 * (t4 - t3);
        st->ms_optim = 1e3 * (t5 - t4);
        st->eta_s = secs * (double)(cfg->steps - tr->step);
    }
    return loss;
}

void ladle_trainer_eval(ladle_trainer *tr)
{
    const ladle_shard *s = &tr->shard;
    const int k = tr->corpus.n_domains;
    ladle_eval_result *generic = ladle_calloc((size_t)k, sizeof *generic, "eval results");
    ladle_eval_result *special = ladle_calloc((size_t)k, sizeof *special, "eval results");
    /* the generic model: uniform domain weights */
    float *h = alloc_floats((size_t)k, "domain weights");
    for (int d = 0; d < k; d++) h[d] = 1.0f / (float)k;
    ladle_trainer_gather_theta(tr, h);
    ladle_eval_domains(&tr->model, tr->params, &tr->acts, &tr->corpus, tr->cfg.eval_sequences, generic, s->comm);
    /* a soup's specialists: Theta(e_d) on domain d */
    if (tr->soup.n > 0)
        for (int d = 0; d < k; d++) {
            memset(h, 0, (size_t)k * sizeof(float));
            h[d] = 1.0f;
            ladle_trainer_gather_theta(tr, h);
            ladle_eval_domain(&tr->model, tr->params, &tr->acts, &tr->corpus.domains[d], d, tr->cfg.eval_sequences,
                              &special[d], s->comm);
        }
    double sum = 0.0, sum_special = 0.0;
    int counted = 0;
    for (int d = 0; d < k; d++) {
        if (generic[d].windows == 0) continue;   /* a valid split shorter than one window */
        ladle_log_eval(&tr->log, tr->step, generic[d].domain, generic[d].loss, tr->soup.n > 0 ? special[d].loss : -1);
        sum += generic[d].bpb;
        sum_special += special[d].bpb;
        counted++;
    }
    if (s->rank == 0 && counted > 0) {
        printf("eval step %ld | mean valid %.4f bits/byte over %d domains", tr->step, sum / counted, counted);
        if (tr->soup.n > 0) printf(" | specialists %.4f", sum_special / counted);
        printf("\n");
        fflush(stdout);
    }
    free(h);
    free(generic);
    free(special);
}

/* The run's state on this rank, for the checkpoint writer and reader. */
static ladle_ckpt_state trainer_state(ladle_trainer *tr)
{
    ladle_ckpt_state st = {tr->param_slice, tr->adam_m, tr->adam_v, &tr->soup, &tr->router,
                           tr->router_params, tr->router_m, tr->router_v};
    return st;
}

/* A model file (with_optim = 0: model.h5 for inference) or a training checkpoint. */
static void save(ladle_trainer *tr, const char *path, int with_optim)
{
    char (*names)[LADLE_NAME_MAX] = ladle_calloc((size_t)tr->corpus.n_domains, LADLE_NAME_MAX, "domain names");
    for (int d = 0; d < tr->corpus.n_domains; d++) memcpy(names[d], tr->corpus.domains[d].name, LADLE_NAME_MAX);
    ladle_ckpt_contents c = {
        .kind = tr->soup.n > 0 ? "soup" : "dense",
        .step = tr->step,
        .cfg = &tr->cfg,
        .model = &tr->model,
        .shard = &tr->shard,
        .state = trainer_state(tr),
        .with_optim = with_optim,
        .n_domains = tr->corpus.n_domains,
        .domain_names = (const char (*)[LADLE_NAME_MAX])names,
    };
    ladle_ckpt_save(path, &c);
    free(names);
}

static void save_checkpoint(ladle_trainer *tr)
{
    const ladle_config *cfg = &tr->cfg;
    char path[LADLE_PATH_MAX + 32];
    ladle_ckpt_path(path, sizeof path, cfg->run_dir, tr->step);
    double t0 = ladle_now();
    save(tr, path, 1);
    ladle_ckpt_commit(cfg->run_dir, tr->step, cfg->ckpt_keep_last, cfg->ckpt_keep_every, tr->shard.comm);
    if (tr->shard.rank == 0) { printf("checkpoint %s (%.2f s)\n", path, ladle_now() - t0); fflush(stdout); }
}

/* Keys that fix the shape of the state: a checkpoint is refused if any differs. */
static const char *const SHAPE_KEYS[] = {
    "model.layers", "model.dim", "model.heads", "model.context", "model.ffn", "moe.experts", "smear.experts",
    "soup.experts", "soup.experts_on", "soup.rank", "router.hidden", "router.alpha",
};

/* Compare the stored configuration with the new one: shape keys must agree (usage error
 * naming every one that differs); other changes are allowed and printed. */
static void check_resume_config(const ladle_config *stored, const ladle_config *now, const char *path, int rank,
                                const char *verb)
{
    char *a = ladle_config_to_text(stored), *b = ladle_config_to_text(now);
    char refused[1024] = "";
    /* walk both texts line by line: the same keys in the same order */
    char *sa = NULL, *sb = NULL;
    for (char *la = strtok_r(a, "\n", &sa), *lb = strtok_r(b, "\n", &sb); la && lb;
         la = strtok_r(NULL, "\n", &sa), lb = strtok_r(NULL, "\n", &sb)) {
        if (strcmp(la, lb) == 0) continue;
        size_t key_len = strcspn(la, " ");
        int shape = 0;
        for (size_t i = 0; i < sizeof SHAPE_KEYS / sizeof SHAPE_KEYS[0]; i++)
            shape |= strlen(SHAPE_KEYS[i]) == key_len && strncmp(la, SHAPE_KEYS[i], key_len) == 0;
        if (shape) {
            size_t used = strlen(refused);
            snprintf(refused + used, sizeof refused - used, "%s'%s' (checkpoint) vs '%s' (now)", used ? "; " : "", la, lb);
        } else if (rank == 0) {
            printf("%s: changed setting: %s  (was: %s)\n", verb, lb, la);
        }
    }
    free(a);
    free(b);
    if (refused[0])
        ladle_usage_error("cannot %s from '%s': the model's shape differs: %s (use another run.dir, or --fresh --force)",
                          verb, path, refused);
}

/* Drop metrics.jsonl lines of steps after `step`: the interrupted run logged them, the
 * resumed run logs them again. Rank 0 only. */
static void truncate_metrics(const char *run_dir, long step)
{
    char path[LADLE_PATH_MAX + 32], tmp[LADLE_PATH_MAX + 40];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *in = fopen(path, "r");
    if (!in) return;
    FILE *out = fopen(tmp, "w");
    LADLE_CHECK(out, "cannot write '%s': %s", tmp, strerror(errno));
    char line[4096];
    while (fgets(line, sizeof line, in)) {
        long s = -1;
        if (sscanf(line, "{\"step\": %ld", &s) == 1 && s > step) continue;
        LADLE_CHECK(fputs(line, out) >= 0, "cannot write '%s': %s", tmp, strerror(errno));
    }
    fclose(in);
    LADLE_CHECK(fclose(out) == 0, "cannot write '%s': %s", tmp, strerror(errno));
    LADLE_CHECK(rename(tmp, path) == 0, "cannot rename '%s': %s", tmp, strerror(errno));
}

/* train.init: a fresh run starts from a model file's parameters (a pruned or
 * instantiated model, or another run's model.h5) instead of the random initialisation. */
static void init_from_model(ladle_trainer *tr, const char *path)
{
    ladle_ckpt_loaded m;
    ladle_ckpt_load(path, tr->shard.comm, &m);
    check_resume_config(&m.cfg, &tr->cfg, path, tr->shard.rank, "initialise");
    LADLE_CHECK(m.shard.slice == tr->shard.slice, "train.init: slices differ");
    memcpy(tr->param_slice, m.shared_slice, tr->shard.slice * sizeof(float));
    if (tr->soup.n > 0) {
        if (m.soup.n != tr->soup.n) ladle_usage_error("train.init: '%s' is a %s model, not a soup of %d experts", path, m.kind, tr->soup.n);
        memcpy(tr->soup.experts, m.soup.experts, (size_t)tr->soup.n * tr->soup.own_len * sizeof(float));
        memcpy(tr->soup.lowrank, m.soup.lowrank, tr->soup.lowrank_size * sizeof(float));
        memcpy(tr->router_params, m.router_params, tr->router.n_params * sizeof(float));
    }
    if (tr->shard.rank == 0) printf("initialised from %s (%s, step %ld)\n", path, m.kind, m.step);
    ladle_ckpt_loaded_free(&m);
}

/* train.only = router: everything but the routing parameters of the moe/smear sites
 * stays frozen (UNCURL re-trains a pruned model's routers first). */
static void freeze_all_but_routers(ladle_trainer *tr)
{
    for (int i = 0; i < tr->model.n_tensors; i++) {
        const char *n = tr->model.tensors[i].name;
        int router = strstr(n, ".moe.router") || strstr(n, ".smear.ln.") || strstr(n, ".smear.router.") ||
                     strstr(n, ".smear.default");
        tr->model.tensors[i].frozen = !router;
    }
    for (int i = 0; i < 2 * tr->soup.n_sites; i++) tr->soup.lowrank_tensors[i].frozen = 1;
    for (int i = 0; i < 4 && tr->soup.n > 0; i++) tr->router.tensors[i].frozen = 1;
}

/* The one piece of global mutable state besides MPI's: a signal handler can only reach
 * a static flag. It is read at step boundaries and agreed on with an all-reduce. */
static volatile sig_atomic_t preempt_signal = 0;

static void on_preempt(int sig)
{
    preempt_signal = sig;
}

static void install_preemption_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_preempt;
    sigemptyset(&sa.sa_mask);
    LADLE_CHECK(sigaction(SIGUSR1, &sa, NULL) == 0 && sigaction(SIGTERM, &sa, NULL) == 0,
                "cannot install the preemption signal handlers");
}

/* Did any rank receive SIGUSR1 or SIGTERM? (collective) */
static int preemption_requested(MPI_Comm comm)
{
    int mine = preempt_signal != 0, any = 0;
    MPI_CHECK(MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, comm));
    return any;
}

int ladle_train_run(const ladle_config *cfg, MPI_Comm comm)
{
    install_preemption_handlers();
    ladle_trainer tr;
    ladle_trainer_create(&tr, cfg, comm);
    char resume[LADLE_PATH_MAX + 32];
    if (ladle_ckpt_find_latest(cfg->run_dir, resume, sizeof resume, comm)) {
        ladle_config stored;
        long step = 0;
        ladle_ckpt_peek(resume, comm, &stored, &step);
        check_resume_config(&stored, cfg, resume, tr.shard.rank, "resume");
        ladle_ckpt_state st = trainer_state(&tr);
        ladle_ckpt_restore(resume, &tr.model, &tr.shard, &st, &stored, &step);
        tr.step = step;
        if (tr.shard.rank == 0) {
            truncate_metrics(cfg->run_dir, step);
            printf("resuming from %s at step %ld\n", resume, step);
        }
    } else if (cfg->init[0]) {
        init_from_model(&tr, cfg->init);
    }
    if (cfg->only == 1) freeze_all_but_routers(&tr);
    ladle_log_open(&tr.log, cfg->run_dir, tr.shard.rank);   /* rank 0 creates run.dir */
    MPI_CHECK(MPI_Barrier(comm));
    /* a broken MPI-IO stack shows here, with a clear message, not at the first checkpoint */
    ladle_h5_selftest(cfg->run_dir, comm);
    if (tr.shard.rank == 0) {
        char *text = ladle_config_to_text(cfg);
        printf("ladle %s: training on %d rank(s), resolved configuration:\n%s", PACKAGE_VERSION, tr.shard.size, text);
        free(text);
    }
    ladle_trainer_report_memory(&tr);
    double start = ladle_now();
    int rc = LADLE_EXIT_OK;
    const long first_step = tr.step;
    while (tr.step < cfg->steps) {
        ladle_step_stats stats;
        ladle_trainer_step(&tr, &stats);
        int print = tr.step % cfg->log_every == 0 || tr.step == 1 || tr.step == cfg->steps;
        ladle_log_step(&tr.log, &stats, print);
        if (cfg->eval_every > 0 && tr.step % cfg->eval_every == 0 && tr.step < cfg->steps) ladle_trainer_eval(&tr);
        if (cfg->ckpt_every > 0 && tr.step % cfg->ckpt_every == 0 && tr.step < cfg->steps) save_checkpoint(&tr);
        if (preemption_requested(tr.shard.comm)) {
            save_checkpoint(&tr);
            if (tr.shard.rank == 0)
                printf("preempted at step %ld: checkpoint written, exiting with code %d (requeue to resume)\n", tr.step,
                       LADLE_EXIT_PREEMPTED);
            rc = LADLE_EXIT_PREEMPTED;
            break;
        }
        if (cfg->stop_after > 0 && tr.step - first_step >= cfg->stop_after && tr.step < cfg->steps) {
            save_checkpoint(&tr);
            if (tr.shard.rank == 0)
                printf("stopping after %d steps of this invocation at step %ld (run.stop_after): run again to resume\n",
                       cfg->stop_after, tr.step);
            rc = -1;   /* a clean stop: not done, not an error */
            break;
        }
    }
    if (rc == -1) {
        ladle_trainer_free(&tr);
        return LADLE_EXIT_OK;
    }
    if (rc == LADLE_EXIT_OK) {
        ladle_trainer_eval(&tr);
        save_checkpoint(&tr);
        char path[LADLE_PATH_MAX + 16];
        snprintf(path, sizeof path, "%s/model.h5", cfg->run_dir);
        save(&tr, path, 0);
        if (tr.shard.rank == 0) printf("saved %s (step %ld)\ndone: %ld steps in %.1f s\n", path, tr.step, tr.step,
                                       ladle_now() - start);
    }
    ladle_trainer_free(&tr);
    return rc;
}
