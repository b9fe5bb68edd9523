#include "ladle/eval.h"
#include "ladle/error.h"
#include "ladle/inspect.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- routing statistics ------------------------------------------------------------ */

static const char *routed_kind_name(int kind)
{
    return kind == LADLE_FFN_MOE ? "moe" : kind == LADLE_FFN_TAG ? "tag" : "smear";
}

static void add_site(ladle_routing *r, int layer, int kind, int adapter, int experts, const char *name)
{
    ladle_routing_site *s = &r->sites[r->n_sites++];
    snprintf(s->name, sizeof s->name, "%s", name);
    s->layer = layer;
    s->kind = kind;
    s->adapter = adapter;
    s->experts = experts;
    const size_t n = (size_t)r->n_domains * (size_t)experts;
    s->prob = ladle_calloc(n, sizeof(double), "routing statistics");
    s->top1 = kind == LADLE_FFN_MOE ? ladle_calloc(n, sizeof(double), "routing statistics") : NULL;
    s->count = ladle_calloc((size_t)r->n_domains, sizeof(double), "routing statistics");
    s->entropy = ladle_calloc((size_t)r->n_domains, sizeof(double), "routing statistics");
}

void ladle_routing_create(ladle_routing *r, const ladle_model *m, int n_domains)
{
    memset(r, 0, sizeof *r);
    r->n_domains = n_domains;
    r->sites = ladle_calloc(3 * (size_t)m->layers, sizeof *r->sites, "routing sites");
    char name[LADLE_TENSOR_NAME_MAX];
    for (int l = 0; l < m->layers; l++) {
        int kind = m->ffn_kind[l];
        if (kind != LADLE_FFN_DENSE) {
            /* the site's tensor prefix: tag experts are stored as h.<l>.smear.* */
            snprintf(name, sizeof name, "h.%d.%s", l, kind == LADLE_FFN_MOE ? "moe" : "smear");
            add_site(r, l, kind, -1, kind == LADLE_FFN_MOE ? m->moe.Z : m->smear.N, name);
        }
        for (int which = 0; which < 2 && m->adapter_kind[l]; which++) {
            snprintf(name, sizeof name, "h.%d.adapter.%s", l, which ? "ffn" : "attn");
            add_site(r, l, m->adapter_kind[l], which, m->smear.N, name);
        }
    }
}

void ladle_routing_free(ladle_routing *r)
{
    for (int i = 0; i < r->n_sites; i++) {
        free(r->sites[i].prob);
        free(r->sites[i].top1);
        free(r->sites[i].count);
        free(r->sites[i].entropy);
    }
    free(r->sites);
    memset(r, 0, sizeof *r);
}

/* Adds the routing of the last forward (B sequences of domain d) to the sums. */
static void routing_accumulate(ladle_routing *r, const ladle_model *m, const ladle_activations *acts, int d, int B)
{
    const int T = m->context;
    for (int i = 0; i < r->n_sites; i++) {
        ladle_routing_site *s = &r->sites[i];
        const int E = s->experts;
        double *prob = s->prob + (size_t)d * E;
        const float *p;
        long rows;
        if (s->kind == LADLE_FFN_MOE) {
            const ladle_moe_cache *c = acts->moe_cache[s->layer];
            const int *top1 = ladle_moe_top1(c);
            p = ladle_moe_probs(c);
            rows = (long)B * T;
            for (long n = 0; n < rows; n++) s->top1[(size_t)d * E + top1[n]] += 1.0;
        } else {
            p = ladle_smear_probs(s->adapter < 0 ? acts->smear_cache[s->layer]
                                                 : acts->adapter_cache[2 * s->layer + s->adapter]);
            rows = (long)B * (T / m->smear.segment);
        }
        for (long n = 0; n < rows; n++)
            for (int e = 0; e < E; e++) {
                double q = p[(size_t)n * E + e];
                prob[e] += q;
                if (q > 0) s->entropy[d] -= q * log2(q);
            }
        s->count[d] += (double)rows;
    }
}

/* Sums over the ranks, then means. */
static void routing_finish(ladle_routing *r, MPI_Comm comm)
{
    for (int i = 0; i < r->n_sites; i++) {
        ladle_routing_site *s = &r->sites[i];
        const int n = r->n_domains * s->experts;
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, s->prob, n, MPI_DOUBLE, MPI_SUM, comm));
        if (s->top1) MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, s->top1, n, MPI_DOUBLE, MPI_SUM, comm));
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, s->count, r->n_domains, MPI_DOUBLE, MPI_SUM, comm));
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, s->entropy, r->n_domains, MPI_DOUBLE, MPI_SUM, comm));
        for (int d = 0; d < r->n_domains; d++) {
            if (s->count[d] > 0) s->entropy[d] /= s->count[d];
            for (int e = 0; e < s->experts && s->count[d] > 0; e++) {
                s->prob[(size_t)d * s->experts + e] /= s->count[d];
                if (s->top1) s->top1[(size_t)d * s->experts + e] /= s->count[d];
            }
        }
    }
}

/* ---- loss -------------------------------------------------------------------------- */

/* routing: NULL, or statistics to add this domain's routing to (as domain d) */
static void eval_domain(const ladle_model *model, const float *params, ladle_activations *acts,
                        const ladle_domain *domain, int label, int max_windows, ladle_eval_result *r,
                        ladle_routing *routing, int d, MPI_Comm comm)
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
        if (routing) routing_accumulate(routing, model, acts, d, end - w);
    }
    MPI_CHECK(MPI_Allreduce(&sum, &total, 1, MPI_DOUBLE, MPI_SUM, comm));
    snprintf(r->domain, sizeof r->domain, "%s", domain->name);
    r->train_bytes = domain->train_bytes;
    r->windows = n;
    r->loss = n > 0 ? total / ((double)n * T) : NAN;
    r->bpb = r->loss / log(2.0);
    memset(&acts->ctx, 0, sizeof acts->ctx);
    free(labels);
    free(tokens);
    free(targets);
}

void ladle_eval_domain(const ladle_model *model, const float *params, ladle_activations *acts,
                       const ladle_domain *domain, int label, int max_windows, ladle_eval_result *r, MPI_Comm comm)
{
    eval_domain(model, params, acts, domain, label, max_windows, r, NULL, 0, comm);
}

void ladle_eval_domains_routing(const ladle_model *model, const float *params, ladle_activations *acts,
                                const ladle_corpus *corpus, int max_windows, ladle_eval_result *results,
                                ladle_routing *routing, MPI_Comm comm)
{
    LADLE_CHECK(!routing || routing->n_domains == corpus->n_domains, "routing statistics sized for %d domains, corpus has %d",
                routing ? routing->n_domains : 0, corpus->n_domains);
    for (int d = 0; d < corpus->n_domains; d++)
        eval_domain(model, params, acts, &corpus->domains[d], d, max_windows, &results[d], routing, d, comm);
    if (routing) routing_finish(routing, comm);
}

void ladle_eval_domains(const ladle_model *model, const float *params, ladle_activations *acts,
                        const ladle_corpus *corpus, int max_windows, ladle_eval_result *results,
                        MPI_Comm comm)
{
    ladle_eval_domains_routing(model, params, acts, corpus, max_windows, results, NULL, comm);
}

/* The generic loss: the domains' bits per byte weighted by their train bytes (the natural
 * mixture), over the domains with windows. NAN if none has any. */
static double natural_bpb(const ladle_eval_result *results, int n)
{
    double sum = 0.0, weight = 0.0;
    for (int i = 0; i < n; i++)
        if (results[i].windows > 0) {
            sum += (double)results[i].train_bytes * results[i].bpb;
            weight += (double)results[i].train_bytes;
        }
    return weight > 0 ? sum / weight : NAN;
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
    if (counted) {
        fprintf(out, "%-20s %8s %10s %10.4f\n", "mean", "", "", sum / counted);
        fprintf(out, "%-20s %8s %10s %10.4f  (weighted by train bytes)\n", "natural mixture", "", "",
                natural_bpb(results, n));
    }
}

/* mean_h: the mean entropy of the individual distributions, or NAN to leave it out */
static void print_expert_row(FILE *out, const char *domain, const double *row, int experts, double count, double mean_h)
{
    fprintf(out, "%-20s", domain);
    if (count <= 0) {
        fprintf(out, "  (no windows)\n");
        return;
    }
    double h = 0.0;
    for (int e = 0; e < experts; e++) {
        fprintf(out, " %6.3f", row[e]);
        if (row[e] > 0) h -= row[e] * log2(row[e]);
    }
    fprintf(out, " %7.3f", h);
    if (!isnan(mean_h)) fprintf(out, " %7.3f", mean_h);
    fprintf(out, "\n");
}

/* with_mean_h: also the column of mean entropies of the individual distributions */
static void print_expert_block(FILE *out, const ladle_routing_site *s, const double *values, int n_domains,
                               const ladle_eval_result *results, const char *what, int with_mean_h)
{
    fprintf(out, "\n%s (%s, %d experts): %s\n%-20s", s->name, routed_kind_name(s->kind), s->experts, what, "domain");
    for (int e = 0; e < s->experts; e++) {
        char label[16];
        snprintf(label, sizeof label, "e%d", e);
        fprintf(out, " %6s", label);
    }
    fprintf(out, " %7s%s\n", "H(bits)", with_mean_h ? "  mean H" : "");
    for (int d = 0; d < n_domains; d++)
        print_expert_row(out, results[d].domain, values + (size_t)d * s->experts, s->experts, s->count[d],
                         with_mean_h ? s->entropy[d] : NAN);
}

void ladle_routing_print_table(FILE *out, const ladle_routing *r, const ladle_eval_result *results)
{
    for (int i = 0; i < r->n_sites; i++) {
        const ladle_routing_site *s = &r->sites[i];
        print_expert_block(out, s, s->prob, r->n_domains, results,
                           s->kind == LADLE_FFN_MOE ? "mean router probability per token"
                                                    : "mean merge weights per segment", 1);
        if (s->top1) print_expert_block(out, s, s->top1, r->n_domains, results, "fraction of tokens routed (top-1)", 0);
    }
}

static void print_json_array(FILE *out, const char *key, const double *v, int n)
{
    fprintf(out, ", \"%s\": [", key);
    for (int i = 0; i < n; i++) fprintf(out, "%s%.7g", i ? ", " : "", v[i]);
    fprintf(out, "]");
}

void ladle_eval_print_json_routing(FILE *out, const ladle_eval_result *results, int n, const ladle_routing *routing)
{
    fprintf(out, "{\"domains\": [");
    for (int i = 0; i < n; i++) {
        fprintf(out, "%s{\"domain\": ", i ? ", " : "");
        ladle_json_string(out, results[i].domain);
        if (results[i].windows == 0)   /* JSON has no NaN */
            fprintf(out, ", \"windows\": 0, \"valid_loss\": null, \"valid_bpb\": null}");
        else
            fprintf(out, ", \"windows\": %d, \"valid_loss\": %.7g, \"valid_bpb\": %.7g}", results[i].windows,
                    results[i].loss, results[i].bpb);
    }
    fprintf(out, "]");
    double natural = natural_bpb(results, n);
    if (!isnan(natural)) fprintf(out, ", \"natural_bpb\": %.7g", natural);
    if (routing) {
        fprintf(out, ", \"routing\": [");
        for (int i = 0; i < routing->n_sites; i++) {
            const ladle_routing_site *s = &routing->sites[i];
            fprintf(out, "%s{\"site\": \"%s\", \"layer\": %d, \"kind\": \"%s\", \"experts\": %d, \"domains\": [",
                    i ? ", " : "", s->name, s->layer, routed_kind_name(s->kind), s->experts);
            for (int d = 0; d < routing->n_domains; d++) {
                /* count: tokens (moe) or segments; a domain without windows has no distribution */
                fprintf(out, "%s{\"domain\": ", d ? ", " : "");
                ladle_json_string(out, results[d].domain);
                fprintf(out, ", \"count\": %.0f", s->count[d]);
                if (s->count[d] > 0) {
                    fprintf(out, ", \"entropy\": %.7g", s->entropy[d]);
                    print_json_array(out, "prob", s->prob + (size_t)d * s->experts, s->experts);
                    if (s->top1) print_json_array(out, "top1", s->top1 + (size_t)d * s->experts, s->experts);
                } else
                    fprintf(out, ", \"entropy\": null, \"prob\": null%s", s->top1 ? ", \"top1\": null" : "");
                fprintf(out, "}");
            }
            fprintf(out, "]}");
        }
        fprintf(out, "]");
    }
    fprintf(out, "}\n");
}

void ladle_eval_print_json(FILE *out, const ladle_eval_result *results, int n)
{
    ladle_eval_print_json_routing(out, results, n, NULL);
}
