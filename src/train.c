#include "ladle/train.h"
#include "ladle/ckpt.h"
#include "ladle/error.h"
#include "ladle/eval.h"
#include "ladle/optim.h"

#include <blis.h>
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
    ladle_model_create(&tr->model, cfg);
    ladle_shard_create(&tr->shard, tr->model.n_params, comm);
    const ladle_shard *s = &tr->shard;

    /* contiguous share of the global batch; a rank may have none when batch < ranks */
    tr->b_lo = (int)((long)cfg->batch * s->rank / s->size);
    tr->b_hi = (int)((long)cfg->batch * (s->rank + 1) / s->size);
    int local = tr->b_hi - tr->b_lo;

    tr->param_slice = alloc_floats(s->slice, "parameter slice");
    tr->grad_slice = alloc_floats(s->slice, "gradient slice");
    tr->adam_m = alloc_floats(s->slice, "AdamW first moment");
    tr->adam_v = alloc_floats(s->slice, "AdamW second moment");
    tr->params = alloc_floats(s->padded, "parameters");
    tr->grads = alloc_floats(s->padded, "gradients");
    ladle_model_init_range(&tr->model, tr->param_slice, s->lo, s->hi, (uint64_t)cfg->seed);
    /* activations for this rank's sequences, at least one for evaluation */
    ladle_activations_create(&tr->acts, &tr->model, local > 0 ? local : 1);
    tr->tokens = ladle_malloc((size_t)(local > 0 ? local : 1) * cfg->context, "batch tokens");
    tr->targets = ladle_malloc((size_t)(local > 0 ? local : 1) * cfg->context, "batch targets");
    ladle_log_open(&tr->log, cfg->run_dir, s->rank);
}

void ladle_trainer_free(ladle_trainer *tr)
{
    ladle_log_close(&tr->log);
    ladle_activations_free(&tr->acts);
    free(tr->param_slice); free(tr->grad_slice); free(tr->adam_m); free(tr->adam_v);
    free(tr->params); free(tr->grads); free(tr->tokens); free(tr->targets);
    ladle_corpus_free(&tr->corpus);
    ladle_model_free(&tr->model);
}

void ladle_trainer_report_memory(const ladle_trainer *tr)
{
    if (tr->shard.rank != 0) return;
    const ladle_shard *s = &tr->shard;
    const ladle_model *m = &tr->model;
    double mib = 1.0 / (1024.0 * 1024.0);
    size_t slices = 4 * s->slice * sizeof(float), full = 2 * s->padded * sizeof(float);
    size_t L = (size_t)m->layers, C = (size_t)m->dim, T = (size_t)m->context, B = (size_t)tr->acts.B;
    size_t acts = sizeof(float) * B * T * (L * (16 * C + (size_t)m->heads * T + 4) + 2 * C + 2 * LADLE_VOCAB + 3);
    printf("model: %zu parameters (%d layers, dim %d, %d heads, context %d); %d ranks, slice %zu\n",
           m->n_params, m->layers, m->dim, m->heads, m->context, s->size, s->slice);
    printf("memory per rank: owned slices (params, grads, AdamW m, v) %.1f MiB, full params + grads %.1f MiB, "
           "activations ~%.1f MiB\n", slices * mib, full * mib, acts * mib);
}

double ladle_trainer_step(ladle_trainer *tr, ladle_step_stats *st)
{
    const ladle_config *cfg = &tr->cfg;
    const ladle_shard *s = &tr->shard;
    const int T = cfg->context, local = tr->b_hi - tr->b_lo;
    double t0 = ladle_now();

    /* 1. everyone gets the full parameter vector */
    ladle_shard_allgather(s, tr->param_slice, tr->params);
    double t1 = ladle_now();

    /* 2. forward and backward of this rank's share of the global batch */
    memset(tr->grads, 0, s->padded * sizeof(float));
    double loss_sum = 0.0;
    if (local > 0) {
        ladle_batch_train(&tr->corpus, (uint64_t)cfg->seed, (uint64_t)tr->step, tr->b_lo, tr->b_hi, T,
                          tr->tokens, tr->targets, NULL);
        loss_sum = ladle_model_forward(&tr->model, tr->params, &tr->acts, tr->tokens, tr->targets, local);
        /* scale by the GLOBAL token count: the summed gradients are then the mean */
        float scale = 1.0f / ((float)cfg->batch * (float)T);
        ladle_model_backward(&tr->model, tr->params, tr->grads, &tr->acts, tr->tokens, tr->targets, local, scale);
    }
    double t2 = ladle_now();

    /* 3. sum gradients over ranks; each keeps the slice it owns */
    ladle_shard_reduce_scatter(s, tr->grads, tr->grad_slice);
    /* 4. global norm (for clipping) and mean loss */
    double sumsq = ladle_shard_sumsq(s, tr->grad_slice);
    double loss_total = 0.0;
    MPI_CHECK(MPI_Allreduce(&loss_sum, &loss_total, 1, MPI_DOUBLE, MPI_SUM, s->comm));
    double t3 = ladle_now();

    /* 5. AdamW on the owned slice */
    double norm = sqrt(sumsq);
    float lr = ladle_lr_at(cfg, tr->step);
    tr->step++;
    ladle_adamw_update(&tr->model, cfg, tr->param_slice, tr->grad_slice, tr->adam_m, tr->adam_v, s->lo, s->hi,
                       tr->step, lr, ladle_clip_factor(cfg, norm));
    double t4 = ladle_now();

    double loss = loss_total / ((double)cfg->batch * T);
    if (st) {
        double secs = t4 - t0, tokens = (double)cfg->batch * T;
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
        st->ms_gather = 1e3 * (t1 - t0);
        st->ms_compute = 1e3 * (t2 - t1);
        st->ms_reduce = 1e3 * (t3 - t2);
        st->ms_optim = 1e3 * (t4 - t3);
        st->eta_s = secs * (double)(cfg->steps - tr->step);
    }
    return loss;
}

void ladle_trainer_eval(ladle_trainer *tr)
{
    const ladle_shard *s = &tr->shard;
    ladle_shard_allgather(s, tr->param_slice, tr->params);
    ladle_eval_result *results = ladle_calloc((size_t)tr->corpus.n_domains, sizeof *results, "eval results");
    ladle_eval_domains(&tr->model, tr->params, &tr->acts, &tr->corpus, tr->cfg.eval_sequences, results, s->comm);
    double sum = 0.0;
    for (int d = 0; d < tr->corpus.n_domains; d++) {
        ladle_log_eval(&tr->log, tr->step, results[d].domain, results[d].loss);
        sum += results[d].bpb;
    }
    if (s->rank == 0) {
        printf("eval step %ld | mean valid %.4f bits/byte over %d domains\n", tr->step, sum / tr->corpus.n_domains,
               tr->corpus.n_domains);
        fflush(stdout);
    }
    free(results);
}

static void save_model(ladle_trainer *tr)
{
    char path[LADLE_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/model.h5", tr->cfg.run_dir);
    ladle_shard_allgather(&tr->shard, tr->param_slice, tr->params);
    ladle_ckpt_save_model(path, &tr->model, &tr->cfg, tr->params, tr->step, tr->shard.comm);
    if (tr->shard.rank == 0) { printf("saved %s (step %ld)\n", path, tr->step); fflush(stdout); }
}

int ladle_train_run(const ladle_config *cfg, MPI_Comm comm)
{
    ladle_trainer tr;
    ladle_trainer_create(&tr, cfg, comm);
    if (tr.shard.rank == 0) {
        char *text = ladle_config_to_text(cfg);
        printf("ladle %s: training on %d rank(s), resolved configuration:\n%s", PACKAGE_VERSION, tr.shard.size, text);
        free(text);
    }
    ladle_trainer_report_memory(&tr);
    double start = ladle_now();
    while (tr.step < cfg->steps) {
        ladle_step_stats stats;
        ladle_trainer_step(&tr, &stats);
        int print = tr.step % cfg->log_every == 0 || tr.step == 1 || tr.step == cfg->steps;
        ladle_log_step(&tr.log, &stats, print);
        if (cfg->eval_every > 0 && tr.step % cfg->eval_every == 0 && tr.step < cfg->steps) ladle_trainer_eval(&tr);
        if (cfg->save_every > 0 && tr.step % cfg->save_every == 0 && tr.step < cfg->steps) save_model(&tr);
    }
    ladle_trainer_eval(&tr);
    save_model(&tr);
    if (tr.shard.rank == 0) printf("done: %ld steps in %.1f s\n", tr.step, ladle_now() - start);
    ladle_trainer_free(&tr);
    return LADLE_EXIT_OK;
}
