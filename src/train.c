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
#include <hdf5.h>
#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"   /* PACKAGE_VERSION */

static float *alloc_floats(size_t n, const char *what)
{
    return ladle_calloc(n, sizeof(float), what);
}

/* ---- the plan of a run ------------------------------------------------------------- */

/* Checks of a configuration against its corpus, the same for a run and a dry run. (A
 * meta.support of k or more means every domain: the default 2 fits a one-domain corpus.) */
static void check_corpus_fits(const ladle_config *cfg, const ladle_corpus *corpus)
{
    ladle_corpus_check_context(corpus, cfg->corpus, cfg->context);
    if (cfg->eval_every > 0) ladle_corpus_check_valid(corpus, cfg->corpus, cfg->context);
}

static void need_corpus(const ladle_config *cfg)
{
    if (cfg->corpus[0] == '\0') ladle_usage_error("data.corpus is not set: give the corpus file written by 'ladle prep'");
}

/* ladle_activations_create, returning what it allocated (the buffers count themselves). */
static size_t create_activations(ladle_activations *acts, const ladle_model *model, int B)
{
    ladle_activations_create(acts, model, B);
    return acts->bytes;
}

void ladle_train_plan_make(ladle_train_plan *plan, const ladle_config *cfg, int domains, size_t corpus_bytes,
                           int ranks)
{
    LADLE_CHECK(ranks > 0 && domains > 0, "bad plan: %d ranks, %d domains", ranks, domains);
    memset(plan, 0, sizeof *plan);
    plan->ranks = ranks;
    plan->domains = domains;
    plan->corpus_bytes = corpus_bytes;
    plan->corpus_streamed = cfg->data_read == LADLE_CORPUS_STREAM;
    plan->batch = cfg->batch;
    plan->context = cfg->context;
    plan->experts = cfg->experts;
    plan->expert_rank = cfg->experts > 0 ? cfg->expert_rank : 0;
    ladle_model model;
    ladle_model_create(&model, cfg);   /* the tensor table only: no parameters */
    plan->shared = model.n_params;
    /* ladle_shard_create's split; ladle_trainer_create checks that they agree */
    plan->slice = (model.n_params + (size_t)ranks - 1) / (size_t)ranks;
    if (plan->slice == 0) plan->slice = 1;
    plan->padded = plan->slice * (size_t)ranks;
    ladle_soup_bank_range(&model, cfg->experts_on, &plan->bank_lo, &plan->bank_hi);
    const size_t n = (size_t)plan->experts, r = (size_t)plan->expert_rank;
    if (n > 0 && r == 0) plan->bank = n * (plan->bank_hi - plan->bank_lo);
    /* low-rank: U [rows x n r] and V [cols x n r] for every matrix of the bank range */
    for (int i = 0; i < model.n_tensors && n > 0 && r > 0; i++) {
        const ladle_tensor *t = &model.tensors[i];
        if (t->ndim == 2 && t->offset >= plan->bank_lo && t->offset < plan->bank_hi)
            plan->lowrank += ((size_t)t->shape[0] + (size_t)t->shape[1]) * n * r;
    }
    if (n > 0) {
        ladle_router router;   /* a table: nothing allocated */
        ladle_router_configure(&router, domains, plan->experts, cfg);
        plan->router = router.n_params;
    }
    ladle_model_free(&model);
}

ladle_rank_share ladle_train_plan_share(const ladle_train_plan *plan, int rank)
{
    ladle_rank_share s;
    size_t lo = (size_t)rank * plan->slice;
    s.lo = lo < plan->shared ? lo : plan->shared;
    s.hi = lo + plan->slice < plan->shared ? lo + plan->slice : plan->shared;
    size_t a = s.lo > plan->bank_lo ? s.lo : plan->bank_lo, b = s.hi < plan->bank_hi ? s.hi : plan->bank_hi;
    s.bank_own = plan->bank > 0 && a < b ? (size_t)plan->experts * (b - a) : 0;
    /* a contiguous share of the global batch; a rank may have none when batch < ranks */
    s.b_lo = (int)((long)plan->batch * rank / plan->ranks);
    s.b_hi = (int)((long)plan->batch * (rank + 1) / plan->ranks);
    return s;
}

/* Sequences a rank's activations and batch buffers are sized for: one at least (evaluation). */
static int buffer_batch(const ladle_rank_share *s)
{
    return s->b_hi - s->b_lo > 0 ? s->b_hi - s->b_lo : 1;
}

int ladle_train_plan_memory(const ladle_train_plan *plan, int rank, ladle_plan_item items[LADLE_PLAN_ITEMS])
{
    ladle_rank_share s = ladle_train_plan_share(plan, rank);
    int B = buffer_batch(&s);
    size_t acts = 0;
    for (int i = 0; i < 2; i++)
        if (plan->acts_batch[i] == B) acts = plan->acts_bytes[i];
    const size_t f = sizeof(float);
    int n = 0;
    const char *model = "model.dim or model.layers", *sharded = "model.dim or model.layers, or use more ranks";
    const char *bank = "soup.experts, or use more ranks", *acts_keys = "train.batch or model.context, or use more ranks";
    items[n++] = (ladle_plan_item){"S, the owned slice", plan->slice, f, sharded};
    items[n++] = (ladle_plan_item){"AdamW m and v of the S slice", 2 * plan->slice, f, sharded};
    items[n++] = (ladle_plan_item){"merged Theta, the owned slice", plan->slice, f, sharded};
    items[n++] = (ladle_plan_item){"merged Theta, all-gathered", plan->padded, f, model};
    items[n++] = (ladle_plan_item){"gradient, full (before reduce-scatter)", plan->padded, f, model};
    items[n++] = (ladle_plan_item){"gradient, the owned slice", plan->slice, f, sharded};
    items[n++] = (ladle_plan_item){"expert bank shard", s.bank_own, f, bank};
    items[n++] = (ladle_plan_item){"AdamW m and v of the bank shard", 2 * s.bank_own, f, bank};
    items[n++] = (ladle_plan_item){"low-rank factors, gradient, AdamW m and v", 4 * plan->lowrank, f,
                                   "soup.rank or soup.experts"};
    items[n++] = (ladle_plan_item){"router, gradient, AdamW m and v", 4 * plan->router, f, "router.hidden"};
    items[n++] = (ladle_plan_item){"activations and routed-site caches", acts, 1, acts_keys};
    items[n++] = (ladle_plan_item){"batch tokens, targets, domain labels", (size_t)B,
                                   2 * (size_t)plan->context + sizeof(int), acts_keys};
    items[n++] = plan->corpus_streamed
                     ? (ladle_plan_item){"corpus (streamed: the domain table)", plan->corpus_bytes, 1, "the domains"}
                     : (ladle_plan_item){"corpus (data.read = memory: every rank reads all of it)", plan->corpus_bytes,
                                         1, "the corpus, or set data.read = stream"};
    return n;
}

int ladle_train_plan_collectives(const ladle_train_plan *plan, ladle_plan_collective out[LADLE_PLAN_COLLECTIVES])
{
    /* what ladle_trainer_step and the loop of ladle_train_run call, in order */
    const double P = plan->ranks, share = (P - 1) / P;
    const size_t f = sizeof(float), n = (size_t)plan->experts, k = (size_t)plan->domains;
    int c = 0;
    out[c++] = (ladle_plan_collective){"MPI_Bcast", "domain weights h", "float", k, k * f, P > 1 ? (double)(k * f) : 0};
    if (n > 0)
        out[c++] = (ladle_plan_collective){"MPI_Bcast", "expert coefficients alpha", "float", n, n * f,
                                           P > 1 ? (double)(n * f) : 0};
    out[c++] = (ladle_plan_collective){"MPI_Allgather", "merged parameters Theta", "float", plan->padded,
                                       plan->padded * f, share * (double)(plan->padded * f)};
    out[c++] = (ladle_plan_collective){"MPI_Reduce_scatter_block", "gradients", "float", plan->padded,
                                       plan->padded * f, share * (double)(plan->padded * f)};
    out[c++] = (ladle_plan_collective){"MPI_Allreduce", "loss, squared norms, dalpha", "double", 3 + n,
                                       (3 + n) * sizeof(double), 2 * share * (double)((3 + n) * sizeof(double))};
    if (plan->lowrank > 0)
        out[c++] = (ladle_plan_collective){"MPI_Allreduce", "low-rank factor gradients", "float", plan->lowrank,
                                           plan->lowrank * f, 2 * share * (double)(plan->lowrank * f)};
    out[c++] = (ladle_plan_collective){"MPI_Allreduce", "preemption flag", "int", 1, sizeof(int),
                                       2 * share * (double)sizeof(int)};
    return c;
}

static size_t plan_total(const ladle_plan_item *items, int n)
{
    size_t total = 0;
    for (int i = 0; i < n; i++) total += items[i].count * items[i].unit;
    return total;
}

static double mib(size_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0);
}

/* ---- does the plan fit? ---------------------------------------------------------------- */

/* Activation bytes for the plan's (at most two) per-rank batch sizes: measured (allocated
 * and freed) when measure, else sized without allocating and without the routed sites'
 * caches, a lower bound that is safe to take before knowing whether the plan fits. */
static void plan_activations(ladle_train_plan *plan, const ladle_model *model, int measure)
{
    plan->acts_batch[0] = plan->acts_batch[1] = 0;
    for (int r = 0, m = 0; r < plan->ranks && m < 2; r++) {
        ladle_rank_share s = ladle_train_plan_share(plan, r);
        int B = buffer_batch(&s);
        if (m == 1 && plan->acts_batch[0] == B) continue;
        plan->acts_batch[m] = B;
        if (measure) {
            ladle_activations acts;
            plan->acts_bytes[m++] = create_activations(&acts, model, B);
            ladle_activations_free(&acts);
        } else {
            plan->acts_bytes[m++] = ladle_activations_dense_bytes(model, B);
        }
    }
}

/* The memory the ranks of one node may use: physical memory, or the cgroup's limit (a
 * SLURM job's allocation) when that is lower. */
static size_t node_memory(const char **source)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    size_t bytes = pages > 0 && page > 0 ? (size_t)pages * (size_t)page : SIZE_MAX;
    *source = "physical memory";
    FILE *f = fopen("/sys/fs/cgroup/memory.max", "r");
    unsigned long long limit = 0;
    if (f && fscanf(f, "%llu", &limit) == 1 && limit > 0 && limit < bytes) {
        bytes = (size_t)limit;
        *source = "the cgroup's memory.max";
    }
    if (f) fclose(f);
    return bytes;
}

static double gib(size_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0 * 1024.0);
}

/* Collective over comm: a usage error (exit 2) if the ranks that share a node need more
 * memory than it has, naming the largest item and the keys that shrink it. A plan for
 * another rank count than comm's (dry run --ranks N) checks its largest rank alone. */
static void check_plan_fits(const ladle_train_plan *plan, MPI_Comm comm)
{
    int rank = 0, size = 1;
    MPI_CHECK(MPI_Comm_rank(comm, &rank));
    MPI_CHECK(MPI_Comm_size(comm, &size));
    int who = rank;
    size_t mine = 0;
    ladle_plan_item items[LADLE_PLAN_ITEMS];
    if (plan->ranks == size) mine = plan_total(items, ladle_train_plan_memory(plan, rank, items));
    else
        for (int r = 0; r < plan->ranks; r++) {
            size_t b = plan_total(items, ladle_train_plan_memory(plan, r, items));
            if (b > mine) { mine = b; who = r; }
        }
    MPI_Comm node;
    MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    unsigned long long need = mine;
    int local = 1;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &need, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, node));
    MPI_CHECK(MPI_Comm_size(node, &local));
    MPI_CHECK(MPI_Comm_free(&node));
    const char *source = NULL;
    size_t have = node_memory(&source);
    int over = need > have;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &over, 1, MPI_INT, MPI_MAX, comm));
    if (!over) return;
    /* the rank that reports is one whose node is over (rank 0's may not be) */
    int reporter = need > have ? rank : size;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &reporter, 1, MPI_INT, MPI_MIN, comm));
    char msg[1024] = "";
    if (rank == reporter) {
        int n = ladle_train_plan_memory(plan, who, items), big = 0;
        for (int i = 1; i < n; i++)
            if (items[i].count * items[i].unit > items[big].count * items[big].unit) big = i;
        snprintf(msg, sizeof msg, "this run needs %.2f GiB of memory on one node (%d rank%s; rank %d alone %.2f GiB, "
                 "most of it %s: %.2f GiB) but %.2f GiB are available (%s): reduce %s", gib((size_t)need), local,
                 local == 1 ? "" : "s", who, gib(mine), items[big].what, gib(items[big].count * items[big].unit),
                 gib(have), source, items[big].reduce);
    }
    MPI_CHECK(MPI_Bcast(msg, (int)sizeof msg, MPI_CHAR, reporter, comm));
    ladle_usage_error("%s", msg);
}

/* The resolved configuration, one key a line, '*' before each value that is not the default. */
static void print_config_marked(const ladle_config *cfg, FILE *out)
{
    ladle_config defaults;
    ladle_config_defaults(&defaults);
    char *now = ladle_config_to_text(cfg), *def = ladle_config_to_text(&defaults);
    /* both texts list the same keys in the same order */
    char *sn = NULL, *sd = NULL;
    for (char *ln = strtok_r(now, "\n", &sn), *ld = strtok_r(def, "\n", &sd); ln;
         ln = strtok_r(NULL, "\n", &sn), ld = strtok_r(NULL, "\n", &sd))
        fprintf(out, "  %c %s\n", ld && strcmp(ln, ld) == 0 ? ' ' : '*', ln);
    free(now);
    free(def);
}

static void print_plan(const ladle_train_plan *plan, const ladle_config *cfg, FILE *out)
{
    const int P = plan->ranks;
    fprintf(out, "ladle %s: dry run of 'ladle train' on %d rank%s: nothing is trained, no file is written\n",
            PACKAGE_VERSION, P, P == 1 ? "" : "s");
    fprintf(out, "configuration ('*': not the default):\n");
    print_config_marked(cfg, out);
    fprintf(out, "corpus: %s, %d domains, %zu bytes in memory on every rank (%s)\n", cfg->corpus, plan->domains,
            plan->corpus_bytes, plan->corpus_streamed ? "streamed: windows are read when needed; this does not grow "
            "with the corpus' bytes" : "data.read = memory: both splits of every domain");

    fprintf(out, "parameters:\n  %-22s %14zu  (%s)\n", "shared S", plan->shared,
            plan->experts > 0 ? "the instantiated model's size" : "a dense model");
    if (plan->bank > 0)
        fprintf(out, "  %-22s %14zu  (%d dense experts x %zu parameters: %s)\n", "expert bank", plan->bank,
                plan->experts, plan->bank_hi - plan->bank_lo, cfg->experts_on ? "the transformer blocks" : "all tensors");
    if (plan->lowrank > 0)
        fprintf(out, "  %-22s %14zu  (%d experts of rank %d on every matrix of %s; replicated)\n", "low-rank factors",
                plan->lowrank, plan->experts, plan->expert_rank, cfg->experts_on ? "the transformer blocks" : "all tensors");
    if (plan->router > 0)
        fprintf(out, "  %-22s %14zu  (Linear(%d, %d) -> ReLU -> Linear(%d, %d); replicated)\n", "router", plan->router,
                plan->domains, cfg->router_hidden, cfg->router_hidden, plan->experts);
    fprintf(out, "  %-22s %14zu\n", "total", plan->shared + plan->bank + plan->lowrank + plan->router);

    fprintf(out, "per rank: the flat vector of %zu parameters is padded to %d x %zu = %zu\n", plan->shared, P,
            plan->slice, plan->padded);
    fprintf(out, "  %11s %10s %14s %14s %16s\n", "ranks", "sequences", "S owned", "bank owned", "memory bytes");
    /* one row per run of ranks with the same numbers: thousands of ranks stay readable */
    int largest = 0;
    size_t largest_bytes = 0, row[4] = {0, 0, 0, 0};
    for (int r = 0, first = 0; r <= P; r++) {
        size_t now[4] = {0, 0, 0, 0};
        if (r < P) {
            ladle_rank_share s = ladle_train_plan_share(plan, r);
            ladle_plan_item items[LADLE_PLAN_ITEMS];
            size_t bytes = plan_total(items, ladle_train_plan_memory(plan, r, items));
            if (bytes > largest_bytes) { largest = r; largest_bytes = bytes; }
            now[0] = (size_t)(s.b_hi - s.b_lo); now[1] = s.hi - s.lo; now[2] = s.bank_own; now[3] = bytes;
            if (r == 0 || memcmp(now, row, sizeof now) == 0) { memcpy(row, now, sizeof row); continue; }
        }
        char ranks[32];
        if (r - 1 == first) snprintf(ranks, sizeof ranks, "%d", first);
        else snprintf(ranks, sizeof ranks, "%d-%d", first, r - 1);
        fprintf(out, "  %11s %10zu %14zu %14zu %16zu\n", ranks, row[0], row[1], row[2], row[3]);
        memcpy(row, now, sizeof row);
        first = r;
    }

    ladle_plan_item items[LADLE_PLAN_ITEMS];
    int n_items = ladle_train_plan_memory(plan, largest, items);
    ladle_rank_share ls = ladle_train_plan_share(plan, largest);
    fprintf(out, "memory of rank %d, the largest (bytes; activations for %d sequence%s):\n", largest, buffer_batch(&ls),
            buffer_batch(&ls) == 1 ? "" : "s");
    for (int i = 0; i < n_items; i++)
        if (items[i].count > 0)
            fprintf(out, "  %-44s %16zu %10.2f MiB\n", items[i].what, items[i].count * items[i].unit,
                    mib(items[i].count * items[i].unit));
    fprintf(out, "  %-44s %16zu %10.2f MiB\n", "total", largest_bytes, mib(largest_bytes));

    ladle_plan_collective coll[LADLE_PLAN_COLLECTIVES];
    int n_coll = ladle_train_plan_collectives(plan, coll);
    fprintf(out, "collectives of one step (bytes: the call's buffer; wire: what each rank receives with a\n"
                 "bandwidth-optimal algorithm):\n");
    fprintf(out, "  %-25s %-28s %12s %-7s %14s %14s\n", "call", "of", "count", "type", "bytes", "wire");
    size_t total = 0;
    double wire = 0;
    for (int i = 0; i < n_coll; i++) {
        fprintf(out, "  %-25s %-28s %12zu %-7s %14zu %14.0f\n", coll[i].call, coll[i].what, coll[i].count, coll[i].type,
                coll[i].bytes, coll[i].wire);
        total += coll[i].bytes;
        wire += coll[i].wire;
    }
    fprintf(out, "  %-25s %-28s %12s %-7s %14zu %14.0f\n", "total", "", "", "", total, wire);
    /* ladle_trainer_eval: every eval.every steps and once at the end */
    fprintf(out, "and at each evaluation (every eval.every steps and at the end): %d all-gather%s of Theta%s\n",
            plan->experts > 0 ? 1 + plan->domains : 1, plan->experts > 0 ? "s" : "",
            plan->experts > 0 ? " (the generic model, then each domain's specialist)" : "");
}

/* A corpus' domains with their sizes but not their bytes: what a plan needs, read from
 * the file's metadata (group listing, dataset extents). */
static size_t dataset_length(hid_t file, hid_t group, const char *path, const char *domain, const char *name)
{
    if (H5Lexists(group, name, H5P_DEFAULT) <= 0) {
        H5Fclose(file);   /* strong close degree: closes the groups too */
        ladle_usage_error("corpus '%s' is damaged: domain '%s' has no '%s' dataset", path, domain, name);
    }
    hid_t dset = H5Dopen2(group, name, H5P_DEFAULT);
    H5_CHECK(dset);
    hid_t space = H5Dget_space(dset);
    H5_CHECK(space);
    hssize_t n = H5Sget_simple_extent_npoints(space);
    H5_CHECK(n);
    H5_CHECK(H5Sclose(space));
    H5_CHECK(H5Dclose(dset));
    return (size_t)n;
}

static void corpus_metadata(ladle_corpus *corpus, const char *path, MPI_Comm comm)
{
    memset(corpus, 0, sizeof *corpus);
    corpus->file = -1;
    hid_t file = ladle_h5_open_ladle_file(path, "corpus", LADLE_CORPUS_FORMAT, LADLE_CORPUS_VERSION, comm);
    htri_t has = H5Lexists(file, "domains", H5P_DEFAULT);
    H5_CHECK(has);
    if (!has) {
        H5Fclose(file);
        ladle_usage_error("corpus '%s' has no domains", path);
    }
    hid_t domains = H5Gopen2(file, "domains", H5P_DEFAULT);
    H5_CHECK(domains);
    H5G_info_t info;
    H5_CHECK(H5Gget_info(domains, &info));
    if (info.nlinks == 0 || info.nlinks > (hsize_t)1 << 20) {
        H5Fclose(file);
        ladle_usage_error("corpus '%s' has %llu domains", path, (unsigned long long)info.nlinks);
    }
    corpus->domains = ladle_calloc(info.nlinks, sizeof(ladle_domain), "corpus domains");
    corpus->n_domains = (int)info.nlinks;
    for (hsize_t i = 0; i < info.nlinks; i++) {
        ladle_domain *d = &corpus->domains[i];
        char name[256];
        ssize_t len = H5Lget_name_by_idx(domains, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT);
        H5_CHECK(len);
        if ((size_t)len >= sizeof d->name) {
            H5Fclose(file);
            ladle_usage_error("corpus '%s' has a domain name longer than %zu bytes", path, sizeof d->name - 1);
        }
        memcpy(d->name, name, (size_t)len + 1);
        hid_t g = H5Gopen2(domains, name, H5P_DEFAULT);
        H5_CHECK(g);
        d->train_bytes = dataset_length(file, g, path, name, "train");
        d->valid_bytes = dataset_length(file, g, path, name, "valid");
        size_t train_offsets = dataset_length(file, g, path, name, "train_offsets");
        size_t valid_offsets = dataset_length(file, g, path, name, "valid_offsets");
        d->train_docs = train_offsets > 0 ? train_offsets - 1 : 0;
        d->valid_docs = valid_offsets > 0 ? valid_offsets - 1 : 0;
        H5_CHECK(H5Gclose(g));
    }
    H5_CHECK(H5Gclose(domains));
    H5_CHECK(H5Fclose(file));
}

void ladle_train_dry_run(const ladle_config *cfg, int ranks, MPI_Comm comm, FILE *out)
{
    need_corpus(cfg);
    ladle_corpus corpus;
    corpus_metadata(&corpus, cfg->corpus, comm);
    check_corpus_fits(cfg, &corpus);
    ladle_train_plan plan;
    ladle_train_plan_make(&plan, cfg, corpus.n_domains, ladle_corpus_memory(&corpus, (ladle_corpus_read)cfg->data_read), ranks);
    ladle_corpus_free(&corpus);
    ladle_model model;
    ladle_model_create(&model, cfg);   /* the tensor table only */
    plan_activations(&plan, &model, 0);
    check_plan_fits(&plan, comm);   /* before measuring: that allocates the activations */
    int rank = 0;
    MPI_CHECK(MPI_Comm_rank(comm, &rank));
    if (rank == 0) plan_activations(&plan, &model, 1);
    ladle_model_free(&model);
    if (rank != 0) return;
    print_plan(&plan, cfg, out);
}

void ladle_trainer_create(ladle_trainer *tr, const ladle_config *cfg, MPI_Comm comm)
{
    memset(tr, 0, sizeof *tr);
    tr->cfg = *cfg;
    need_corpus(cfg);
    ladle_corpus_open(&tr->corpus, cfg->corpus, (ladle_corpus_read)cfg->data_read, comm);
    check_corpus_fits(cfg, &tr->corpus);
    ladle_model_create(&tr->model, cfg);
    ladle_shard_create(&tr->shard, tr->model.n_params, comm);
    const ladle_shard *s = &tr->shard;
    const int k = tr->corpus.n_domains, n = cfg->experts;
    ladle_train_plan_make(&tr->plan, cfg, k, ladle_corpus_memory(&tr->corpus, (ladle_corpus_read)cfg->data_read), s->size);
    plan_activations(&tr->plan, &tr->model, 0);
    check_plan_fits(&tr->plan, comm);   /* before anything large is allocated */
    const ladle_rank_share share = ladle_train_plan_share(&tr->plan, s->rank);
    tr->b_lo = share.b_lo;
    tr->b_hi = share.b_hi;

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
    tr->fixed_h = alloc_floats((size_t)k, "natural mixture");
    if (cfg->meta_weights[0]) {
        const char **names = ladle_calloc((size_t)k, sizeof *names, "domain names");
        for (int d = 0; d < k; d++) names[d] = tr->corpus.domains[d].name;
        ladle_mixture_parse("meta.weights", "the corpus' domains", cfg->meta_weights, k, names, tr->fixed_h);
        free(names);
    } else {
        ladle_natural_mixture(&tr->corpus, tr->fixed_h);
    }
    tr->alpha = alloc_floats((size_t)(n > 0 ? n : 1), "expert coefficients");
    tr->dalpha = alloc_floats((size_t)(n > 0 ? n : 1), "expert coefficient gradients");
    tr->reduced = ladle_calloc((size_t)(3 + n), sizeof(double), "reduction buffer");
    if (n > 0) {
        ladle_router_configure(&tr->router, k, n, cfg);
        tr->router_params = alloc_floats(tr->router.n_params, "router parameters");
        tr->router_grads = alloc_floats(tr->router.n_params, "router gradients");
        tr->router_m = alloc_floats(tr->router.n_params, "router AdamW first moment");
        tr->router_v = alloc_floats(tr->router.n_params, "router AdamW second moment");
        ladle_router_init(&tr->router, tr->router_params, (uint64_t)cfg->seed);
        ladle_router_cache_create(&tr->router_cache, &tr->router);
    }

    /* activations for this rank's sequences, at least one for evaluation */
    const int B = buffer_batch(&share);
    tr->plan.acts_batch[0] = B;
    tr->plan.acts_batch[1] = 0;
    tr->plan.acts_bytes[0] = create_activations(&tr->acts, &tr->model, B);
    tr->tokens = ladle_malloc((size_t)B * cfg->context, "batch tokens");
    tr->targets = ladle_malloc((size_t)B * cfg->context, "batch targets");
    tr->labels = ladle_calloc((size_t)B, sizeof(int), "batch labels");
    tr->log.rank = s->rank;   /* opened by ladle_train_run, after a resume trimmed metrics.jsonl */

    /* what --dry-run prints is what was allocated */
    LADLE_CHECK(tr->plan.slice == s->slice && tr->plan.padded == s->padded && share.lo == s->lo && share.hi == s->hi &&
                share.bank_own == (size_t)tr->soup.n * tr->soup.own_len && tr->plan.lowrank == tr->soup.lowrank_size &&
                tr->plan.router == (n > 0 ? tr->router.n_params : 0),
                "the plan of this run (ladle train --dry-run) differs from what the trainer allocated");
}

void ladle_trainer_free(ladle_trainer *tr)
{
    ladle_log_close(&tr->log);
    ladle_activations_free(&tr->acts);
    free(tr->param_slice); free(tr->merged_slice); free(tr->grad_slice); free(tr->adam_m); free(tr->adam_v);
    free(tr->params); free(tr->grads); free(tr->tokens); free(tr->targets); free(tr->labels);
    free(tr->h); free(tr->fixed_h); free(tr->alpha); free(tr->dalpha); free(tr->reduced);
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
    const ladle_train_plan *p = &tr->plan;
    const ladle_model *m = &tr->model;
    if (tr->shard.rank != 0) return;
    printf("model: %zu parameters per expanded model (%d layers, dim %d, %d heads, context %d)", m->n_params,
           m->layers, m->dim, m->heads, m->context);
    if (p->experts > 0)
        printf("; soup of %d experts over [%zu, %zu) (%zu parameters each), router %zu parameters", p->experts,
               p->bank_lo, p->bank_hi, p->bank_hi - p->bank_lo, p->router);
    printf("\n%d ranks, slice %zu\n", p->ranks, p->slice);
    /* the largest bank shard is what limits a run (every rank's share is arithmetic) */
    size_t largest = 0;
    for (int r = 0; r < p->ranks; r++) {
        size_t own = ladle_train_plan_share(p, r).bank_own;
        if (own > largest) largest = own;
    }
    ladle_plan_item items[LADLE_PLAN_ITEMS];
    size_t total = plan_total(items, ladle_train_plan_memory(p, 0, items));
    printf("memory per rank: bank shard %zu bytes (largest rank); rank 0 holds %.2f MiB ('ladle train --dry-run' "
           "itemises it)\n", 3 * largest * sizeof(float), mib(total));
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
        ladle_sample_meta((uint64_t)cfg->seed, (uint64_t)tr->step, k, cfg->meta_natural, tr->fixed_h,
                          cfg->meta_support, cfg->meta_concentration, tr->h);
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
        ladle_soup_adamw(&tr->soup, &tr->model, cfg, tr->alpha, tr->grad_slice, tr->step, lr * cfg->bank_lr_scale,
                         clip);
        ladle_adamw_update(tr->router.tensors, 4, cfg, tr->router_params, tr->router_grads, tr->router_m,
                           tr->router_v, 0, tr->router.n_params, tr->step, lr * cfg->router_lr_scale, clip);
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
    /* the generic model: a soup at the natural mixture */
    float *h = alloc_floats((size_t)k, "domain weights"), *natural_h = alloc_floats((size_t)k, "natural mixture");
    ladle_natural_mixture(&tr->corpus, natural_h);
    memcpy(h, natural_h, (size_t)k * sizeof(float));
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
    double sum = 0.0, sum_special = 0.0, natural = 0.0, natural_weight = 0.0;
    int counted = 0;
    for (int d = 0; d < k; d++) {
        if (generic[d].windows == 0) continue;   /* a valid split shorter than one window */
        ladle_log_eval(&tr->log, tr->step, generic[d].domain, generic[d].loss, tr->soup.n > 0 ? special[d].loss : -1);
        sum += generic[d].bpb;
        sum_special += special[d].bpb;
        natural += natural_h[d] * generic[d].bpb;
        natural_weight += natural_h[d];
        counted++;
    }
    if (s->rank == 0 && counted > 0) {
        printf("eval step %ld | mean valid %.4f bits/byte over %d domains | natural mixture %.4f", tr->step,
               sum / counted, counted, natural / natural_weight);
        if (tr->soup.n > 0) printf(" | specialists %.4f", sum_special / counted);
        printf("\n");
        fflush(stdout);
    }
    free(h);
    free(natural_h);
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
    "model.layers", "model.dim", "model.heads", "model.context", "model.ffn", "model.ffn_mult", "moe.experts",
    "smear.experts", "smear.kind", "smear.bottleneck",
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
