#include "ladle/eval.h"
#include "ladle/error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void ladle_eval_domain(const ladle_model *model, const float *params, ladle_activations *acts,
                       const ladle_domain *domain, int label, int max_windows, ladle_eval_result *r, MPI_Comm comm)
{
    int rank = 0, size = 1;
    MPI_CHECK(MPI_Comm_rank(comm, &rank));
    MPI_CHECK(MPI_Comm_size(comm, &size));
    const int T = model->context, chunk = acts->B;
    uint8_t *tokens = ladle_malloc((size_t)chunk * T, "eval tokens");
    uint8_t *targets = ladle_malloc((size_t)chunk * T, "eval targets");
    int *labels = ladle_malloc((size_t)chunk * sizeof(int), "eval labels");
    for (int i = 0; i < chunk; i++) labels[i] = label;
    /* evaluation: no expert dropout; the windows' label for tag routing */
    memset(&acts->ctx, 0, sizeof acts->ctx);
    acts->ctx.labels = label >= 0 ? labels : NULL;
    int n = ladle_valid_windows(domain, T, max_windows);
    int lo = (int)((long)n * rank / size), hi = (int)((long)n * (rank + 1) / size);
    double sum = 0.0, total = 0.0;
    for (int w = lo; w < hi; w += chunk) {
        int end = w + chunk < hi ? w + chunk : hi;
        ladle_batch_valid(domain, T, n, w, end, tokens, targets);
        sum += ladle_model_forward(model, params, acts, tokens, targets, end - w);
    }
    MPI_CHECK(MPI_Allreduce(&sum, &total, 1, MPI_DOUBLE, MPI_SUM, comm));
    snprintf(r->domain, sizeof r->domain, "%s", domain->name);
    r->windows = n;
    r->loss = n > 0 ? total / ((double)n * T) : NAN;
    r->bpb = r->loss / log(2.0);
    memset(&acts->ctx, 0, sizeof acts->ctx);
    free(labels);
    free(tokens);
    free(targets);
}

void ladle_eval_domains(const ladle_model *model, const float *params, ladle_activations *acts,
                        const ladle_corpus *corpus, int max_windows, ladle_eval_result *results,
                        MPI_Comm comm)
{
    for (int d = 0; d < corpus->n_domains; d++)
        ladle_eval_domain(model, params, acts, &corpus->domains[d], d, max_windows, &results[d], comm);
}

void ladle_eval_print_table(FILE *out, const ladle_eval_result *results, int n)
{
    double sum = 0.0;
    int counted = 0;
    fprintf(out, "%-20s %8s %10s %10s\n", "domain", "windows", "loss", "bits/byte");
    for (int i = 0; i < n; i++) {
        if (results[i].windows == 0) {
            fprintf(out, "%-20s %8d %10s %10s  (valid split shorter than one window)\n", results[i].domain, 0, "-", "-");
            continue;
        }
        fprintf(out, "%-20s %8d %10.4f %10.4f\n", results[i].domain, results[i].windows, results[i].loss,
                results[i].bpb);
        sum += results[i].bpb;
        counted++;
    }
    if (counted) fprintf(out, "%-20s %8s %10s %10.4f\n", "mean", "", "", sum / counted);
}

void ladle_eval_print_json(FILE *out, const ladle_eval_result *results, int n)
{
    fprintf(out, "{\"domains\": [");
    for (int i = 0; i < n; i++) {
        if (results[i].windows == 0)   /* JSON has no NaN */
            fprintf(out, "%s{\"domain\": \"%s\", \"windows\": 0, \"valid_loss\": null, \"valid_bpb\": null}",
                    i ? ", " : "", results[i].domain);
        else
            fprintf(out, "%s{\"domain\": \"%s\", \"windows\": %d, \"valid_loss\": %.7g, \"valid_bpb\": %.7g}",
                    i ? ", " : "", results[i].domain, results[i].windows, results[i].loss, results[i].bpb);
    }
    fprintf(out, "]}\n");
}
