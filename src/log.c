#include "ladle/log.h"
#include "ladle/inspect.h"  /* ladle_json_string */
#include "ladle/error.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

double ladle_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int ladle_mkdirs(const char *path)
{
    char buf[4096];
    if (strlen(path) >= sizeof buf) { errno = ENAMETOOLONG; return -1; }
    strcpy(buf, path);
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
            *p = saved;
            if (saved == '\0') break;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0) return -1;
    if (!S_ISDIR(st.st_mode)) { errno = ENOTDIR; return -1; }
    return 0;
}

void ladle_log_open(ladle_log *log, const char *run_dir, int rank)
{
    log->rank = rank;
    log->metrics = NULL;
    if (rank != 0) return;
    if (ladle_mkdirs(run_dir) != 0)
        LADLE_FAIL("cannot create run directory '%s': %s", run_dir, strerror(errno));
    char path[4096];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    log->metrics = fopen(path, "a");
    LADLE_CHECK(log->metrics, "cannot open '%s' for writing: %s", path, strerror(errno));
}

void ladle_log_close(ladle_log *log)
{
    if (log->metrics) LADLE_CHECK(fclose(log->metrics) == 0, "closing metrics.jsonl: %s", strerror(errno));
    log->metrics = NULL;
}

static void format_duration(char *out, size_t len, double seconds)
{
    long s = (long)(seconds + 0.5);
    if (s >= 3600) snprintf(out, len, "%ldh%02ldm", s / 3600, (s / 60) % 60);
    else snprintf(out, len, "%ldm%02lds", s / 60, s % 60);
}

void ladle_log_step(ladle_log *log, const ladle_step_stats *s, int print)
{
    if (log->rank != 0) return;
    fprintf(log->metrics,
            "{\"step\": %ld, \"loss\": %.9g, \"lr\": %.6g, \"grad_norm\": %.6g, \"ms\": %.3f, "
            "\"tokens_per_s\": %.1f, \"mfu\": %.4f, \"ms_merge\": %.3f, \"ms_gather\": %.3f, "
            "\"ms_compute\": %.3f, \"ms_reduce\": %.3f, \"ms_optim\": %.3f}\n",
            s->step, s->loss, s->lr, s->grad_norm, s->ms, s->tokens_per_s, s->mfu,
            s->ms_merge, s->ms_gather, s->ms_compute, s->ms_reduce, s->ms_optim);
    fflush(log->metrics);
    if (!print) return;
    char eta[32];
    format_duration(eta, sizeof eta, s->eta_s);
    printf("step %5ld/%ld | loss %.4f | lr %.2e | norm %.3f | %.1f ms | %.0f tok/s | MFU %.1f%% | ETA %s\n",
           s->step, s->steps, s->loss, s->lr, s->grad_norm, s->ms, s->tokens_per_s, 100.0 * s->mfu, eta);
    fflush(stdout);
}

void ladle_log_eval(ladle_log *log, long step, const char *domain, double valid_loss, double specialist_loss)
{
    if (log->rank != 0) return;
    const double ln2 = 0.6931471805599453;
    fprintf(log->metrics, "{\"step\": %ld, \"domain\": ", step);
    ladle_json_string(log->metrics, domain);
    fprintf(log->metrics, ", \"valid_loss\": %.7g, \"valid_bpb\": %.7g", valid_loss, valid_loss / ln2);
    if (specialist_loss >= 0)
        fprintf(log->metrics, ", \"specialist_loss\": %.7g, \"specialist_bpb\": %.7g", specialist_loss,
                specialist_loss / ln2);
    fprintf(log->metrics, "}\n");
    fflush(log->metrics);
}
