/* log: the progress line on rank 0 and metrics.jsonl (one JSON object per line).
 *
 * Training lines: {"step","loss","lr","grad_norm","ms","tokens_per_s","mfu",
 *                  "ms_merge","ms_gather","ms_compute","ms_reduce","ms_optim"}
 * Eval lines:     {"step","domain","valid_loss","valid_bpb"} (+ "specialist_loss",
 *                  "specialist_bpb" for a soup: Theta(one-hot h of the domain))
 * Only rank 0 writes; other ranks' calls are no-ops. */
#ifndef LADLE_LOG_H
#define LADLE_LOG_H

#include <stdio.h>

typedef struct {
    long step, steps;
    double loss, lr, grad_norm;
    double ms, tokens_per_s, mfu;
    double ms_merge, ms_gather, ms_compute, ms_reduce, ms_optim;
    double eta_s;
} ladle_step_stats;

typedef struct {
    int rank;
    FILE *metrics;
} ladle_log;

/* Opens <run_dir>/metrics.jsonl on rank 0 (creating run_dir). */
void ladle_log_open(ladle_log *log, const char *run_dir, int rank);
void ladle_log_close(ladle_log *log);
void ladle_log_step(ladle_log *log, const ladle_step_stats *s, int print);
/* specialist_loss < 0: none (a dense model) */
void ladle_log_eval(ladle_log *log, long step, const char *domain, double valid_loss, double specialist_loss);

/* Wall-clock seconds (monotonic). */
double ladle_now(void);

/* mkdir -p; returns 0 or -1 with errno set. */
int ladle_mkdirs(const char *path);

#endif
