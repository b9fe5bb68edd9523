/* ladle: the command line. Parses arguments and calls the library; nothing else. */
#include "ladle/ckpt.h"
#include "ladle/config.h"
#include "ladle/error.h"
#include "ladle/eval.h"
#include "ladle/generate.h"
#include "ladle/inspect.h"
#include "ladle/prep.h"
#include "ladle/prune.h"
#include "ladle/specialize.h"
#include "ladle/train.h"

#include <blis.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "config.h"   /* PACKAGE_VERSION */

static const char *USAGE =
    "usage: ladle COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  prep         build a corpus file from text   ladle prep -o CORPUS.h5 --domain NAME=PATH[,PATH...] ...\n"
    "  train        train a model (under mpiexec)   ladle train [CONFIG] [key=value ...] [--fresh [--force]] [--dry-run]\n"
    "  eval         bits per byte on every domain   ladle eval MODEL.h5 --corpus CORPUS.h5 [--specialize|--routing] [--json]\n"
    "  generate     sample text from a model        ladle generate MODEL.h5 [--prompt TEXT] [--bytes N]\n"
    "  instantiate  a soup's specialist             ladle instantiate SOUP.h5 -o MODEL.h5 --weights NAME=W,... | --like FILE...\n"
    "  fit-weights  fit h to examples, instantiate  ladle fit-weights SOUP.h5 --like FILE... -o MODEL.h5\n"
    "  prune        UNCURL pruning for a task       ladle prune MODEL.h5 --task FILE... --experts D -o OUT.h5\n"
    "  inspect      describe any ladle file         ladle inspect FILE [--dump TENSOR] [--json]\n"
    "  keys         the configuration keys          ladle keys   (a Markdown table: key, default, meaning)\n"
    "\n"
    "options: -h, --help, --version. 'ladle COMMAND --help' describes a command; 'man ladle' once installed.\n"
    "Threads per rank: BLIS_NUM_THREADS (or OMP_NUM_THREADS), default 1.\n"
    "exit codes: 0 success, 1 runtime failure (I/O, MPI, HDF5, memory), 2 bad usage or input,\n"
    "            3 training preempted by SIGUSR1/SIGTERM after writing a checkpoint (run it again to resume).\n";

static int world_rank(void)
{
    int rank = 0;
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    return rank;
}

static int world_size(void)
{
    int size = 1;
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    return size;
}

/* An integer option or variable in [min, max] (config.c's parser); anything else is a usage error. */
static long long parse_integer(const char *what, const char *text, long long min, long long max)
{
    char err[512];
    long long v;
    if (ladle_parse_integer(what, text, min, max, &v, err, sizeof err) != 0) ladle_usage_error("%s", err);
    return v;
}

/* One BLIS/OpenMP thread per rank unless the user asked otherwise: ranks x threads
 * must not exceed the cores, and MPI already gives one process per core. */
static void set_threads(void)
{
    const char *blis = getenv("BLIS_NUM_THREADS"), *omp = getenv("OMP_NUM_THREADS");
    int n = 1;
    /* an empty variable counts as unset, as in the shell idiom VAR= command */
    if (blis && *blis) n = (int)parse_integer("BLIS_NUM_THREADS", blis, 1, 1024);
    else if (omp && *omp) n = (int)parse_integer("OMP_NUM_THREADS", omp, 1, 1024);
    bli_thread_set_num_threads(n);
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

/* srun without an MPI plugin that Open MPI understands (Debian's speaks PMIx only) starts
 * SLURM_STEP_NUM_TASKS separate processes that Open MPI would abort in MPI_Init with a
 * generic message (or, with another build, run as one-rank jobs training into the same run
 * directory). Such a task has the step's variables but neither PMIx's (srun --mpi=pmix)
 * nor Open MPI's own launcher's (mpiexec, also inside an allocation). Checked before
 * MPI_Init, so every task prints the reason and exits 2. */
static void check_slurm_launch(void)
{
    const char *step = getenv("SLURM_STEP_NUM_TASKS");
    if (!step || getenv("PMIX_RANK") || getenv("OMPI_COMM_WORLD_SIZE")) return;
    fprintf(stderr, "ladle: error: srun started this process as one of %s tasks (SLURM_STEP_NUM_TASKS) "
            "without an MPI plugin Open MPI understands, so the tasks cannot form one MPI world. Use "
            "'srun --mpi=pmix' (see 'srun --mpi=list') or mpiexec inside the allocation\n", step);
    exit(LADLE_EXIT_USAGE);
}

/* Upper bounds of options without a natural one (byte counts of documents and domains,
 * windows of the model's context): larger is a typo, and must not wrap in an int/size_t. */
#define MAX_BYTES (1LL << 62)
#define MAX_WINDOWS (1 << 24)

static double parse_double(const char *flag, const char *text, double min, double max)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end || errno || !(v >= min && v <= max))
        ladle_usage_error("%s '%s': expected a number in [%g, %g]", flag, text, min, max);
    return v;
}

static const char *need_value(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) ladle_usage_error("%s needs a value", argv[*i]);
    return argv[++*i];
}

/* The value of the integer option argv[*i], in [min, max]. */
static long long int_value(int argc, char **argv, int *i, long long min, long long max)
{
    const char *flag = argv[*i];
    return parse_integer(flag, need_value(argc, argv, i), min, max);
}

/* ---- prep ------------------------------------------------------------------------ */

static int cmd_prep(int argc, char **argv)
{
    const char *out = NULL;
    ladle_prep_options opt = {.valid_fraction = 0.05, .seed = 1};
    ladle_prep_domain *domains = ladle_calloc((size_t)argc, sizeof *domains, "domain list");
    int n = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help")) {
            if (world_rank() == 0)
                printf("usage: ladle prep -o CORPUS.h5 --domain NAME=PATH[,PATH...] [--domain ...]\n"
                       "                  [--valid-fraction F] [--seed S] [--max-doc-bytes N] [--max-domain-bytes N]\n"
                       "                  [--split-doc-bytes N] [--clusters K [--embed-ngram N] [--embed-buckets N] [--embed-dim D]]\n"
                       "Each file under a PATH (directories recursively, .gz/.dz decompressed) is one document, or\n"
                       "several of at most N bytes with --split-doc-bytes N (cut after a newline where possible);\n"
                       "documents go to the valid split with probability F (default 0.05, seed S default 1).\n"
                       "--max-doc-bytes N truncates longer documents; --max-domain-bytes N stops adding documents to a\n"
                       "domain past N bytes (0, the default: no limit). Under mpiexec -n P the ranks share the reading,\n"
                       "embedding, clustering and writing; the corpus is the same for any P.\n"
                       "--clusters K: the training domains become K k-means clusters of all the documents\n"
                       "(embedded as hashed byte 1..N-grams, default N 3, in 4096 buckets, projected to D = 64\n"
                       "dimensions); the named domains are kept under /sources for evaluation.\n");
            return 0;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) out = need_value(argc, argv, &i);
        else if (!strcmp(a, "--domain")) {
            char *spec = (char *)need_value(argc, argv, &i);
            char *eq = strchr(spec, '=');
            if (!eq || eq == spec || !eq[1]) ladle_usage_error("--domain '%s': expected NAME=PATH[,PATH...]", spec);
            *eq = '\0';
            domains[n].name = spec;
            int paths = 1;
            for (char *p = eq + 1; *p; p++) paths += *p == ',';
            domains[n].paths = ladle_calloc((size_t)paths, sizeof(char *), "domain paths");
            for (char *p = strtok(eq + 1, ","); p; p = strtok(NULL, ","))
                domains[n].paths[domains[n].n_paths++] = p;
            n++;
        } else if (!strcmp(a, "--valid-fraction")) opt.valid_fraction = parse_double(a, need_value(argc, argv, &i), 0, 0.9);
        else if (!strcmp(a, "--seed")) opt.seed = (unsigned long)int_value(argc, argv, &i, 0, LONG_MAX);
        else if (!strcmp(a, "--max-doc-bytes")) opt.max_doc_bytes = (size_t)int_value(argc, argv, &i, 0, MAX_BYTES);
        else if (!strcmp(a, "--max-domain-bytes")) opt.max_domain_bytes = (size_t)int_value(argc, argv, &i, 0, MAX_BYTES);
        else if (!strcmp(a, "--split-doc-bytes")) opt.split_doc_bytes = (size_t)int_value(argc, argv, &i, 0, MAX_BYTES);
        else if (!strcmp(a, "--clusters") || !strcmp(a, "--embed-ngram") || !strcmp(a, "--embed-buckets")
                 || !strcmp(a, "--embed-dim")) {
            /* anything larger is a typo (prep checks the real ranges) */
            int v = (int)int_value(argc, argv, &i, 1, 1 << 24);
            *(!strcmp(a, "--clusters") ? &opt.clusters : !strcmp(a, "--embed-ngram") ? &opt.embed_ngram
              : !strcmp(a, "--embed-buckets") ? &opt.embed_buckets : &opt.embed_dim) = v;
        }
        else ladle_usage_error("prep: unknown argument '%s' (see 'ladle prep --help')", a);
    }
    if (!out) ladle_usage_error("prep: no output file (-o CORPUS.h5)");
    if (n == 0) ladle_usage_error("prep: no domains (--domain NAME=PATH[,PATH...])");
    if (!opt.clusters && (opt.embed_ngram || opt.embed_buckets || opt.embed_dim))
        ladle_usage_error("prep: --embed-ngram, --embed-buckets and --embed-dim only apply with --clusters K");
    ladle_prep(out, domains, n, &opt, MPI_COMM_WORLD, stdout);
    for (int i = 0; i < n; i++) free(domains[i].paths);
    free(domains);
    return 0;
}

/* ---- train ----------------------------------------------------------------------- */

/* Start a run over: remove an old run's checkpoints, latest pointer, metrics and model. */
static void clear_run_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        const char *n = e->d_name;
        int ours = !strcmp(n, "latest") || !strcmp(n, "metrics.jsonl") || !strcmp(n, "model.h5") ||
                   (!strncmp(n, "ckpt-", 5) && strstr(n, ".h5"));
        if (!ours) continue;
        char path[LADLE_PATH_MAX + 300];
        snprintf(path, sizeof path, "%s/%s", dir, n);
        LADLE_CHECK(unlink(path) == 0 || errno == ENOENT, "cannot remove '%s': %s", path, strerror(errno));
    }
    closedir(d);
}

static int cmd_train(int argc, char **argv)
{
    const char *config_path = NULL;
    int force = 0, fresh = 0, dry_run = 0, n_over = 0;
    long plan_ranks = 0;
    char **over = ladle_calloc((size_t)argc + 1, sizeof(char *), "overrides");
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            if (world_rank() == 0)
                printf("usage: ladle train [CONFIG] [key=value ...] [--fresh [--force]]\n"
                       "       ladle train [CONFIG] [key=value ...] --dry-run [--ranks N]\n"
                       "Run under mpiexec for several ranks. CONFIG is a 'key = value' file; overrides follow.\n"
                       "An existing run.dir is resumed from its newest checkpoint, on any rank count. --fresh\n"
                       "starts over instead; over a run.dir that already holds a run it also needs --force, and\n"
                       "then deletes that run's checkpoints and metrics. 'ladle keys' lists the keys.\n"
                       "--dry-run prints the resolved configuration (non-defaults marked), the parameter counts,\n"
                       "each rank's share and memory, and the bytes of every collective of a step, then exits\n"
                       "without training or writing anything (it reads only the corpus' metadata). It plans for\n"
                       "the ranks it runs on (mpiexec -n N), or for --ranks N from a single process.\n"
                       "Exit codes: 0 done, 2 bad usage or input, 3 preempted (SIGUSR1/SIGTERM; a checkpoint was\n"
                       "written: run the same command again to resume).\n");
            free(over);
            return 0;
        } else if (!strcmp(argv[i], "--force")) force = 1;
        else if (!strcmp(argv[i], "--fresh")) fresh = 1;
        else if (!strcmp(argv[i], "--dry-run")) dry_run = 1;
        else if (!strcmp(argv[i], "--ranks")) plan_ranks = (long)int_value(argc, argv, &i, 1, 1 << 20);
        else if (strchr(argv[i], '=')) over[n_over++] = argv[i];
        else if (argv[i][0] == '-') ladle_usage_error("train: unknown option '%s' (see 'ladle train --help')", argv[i]);
        else if (!config_path) config_path = argv[i];
        else ladle_usage_error("train: two config files given ('%s' and '%s')", config_path, argv[i]);
    }
    if (force && !fresh) ladle_usage_error("train: --force only goes with --fresh (without --fresh a run resumes)");
    if (plan_ranks && !dry_run) ladle_usage_error("train: --ranks %ld only goes with --dry-run (a run uses the ranks "
                                                  "mpiexec starts)", plan_ranks);
    if (plan_ranks && world_size() > 1 && plan_ranks != world_size())
        ladle_usage_error("train: --ranks %ld but launched on %d ranks: drop --ranks, or run one process",
                          plan_ranks, world_size());
    ladle_config cfg;
    ladle_config_load(&cfg, config_path, n_over, over);
    free(over);

    /* what run.dir holds decides between resume, refuse and start over (rank 0 looks) */
    char path[LADLE_PATH_MAX + 32];
    struct stat st;
    int state[2] = {0, 0};   /* has checkpoints (latest), has metrics */
    if (world_rank() == 0) {
        snprintf(path, sizeof path, "%s/latest", cfg.run_dir);
        state[0] = stat(path, &st) == 0;
        snprintf(path, sizeof path, "%s/metrics.jsonl", cfg.run_dir);
        state[1] = stat(path, &st) == 0;
    }
    MPI_CHECK(MPI_Bcast(state, 2, MPI_INT, 0, MPI_COMM_WORLD));
    int has_run = state[0] || state[1];
    if (fresh && has_run && !force)
        ladle_usage_error("run.dir '%s' already holds a run: --fresh would overwrite it; add --force to delete it and "
                          "start over, or drop --fresh to resume it", cfg.run_dir);
    if (!fresh && !state[0] && state[1])
        ladle_usage_error("run.dir '%s' holds a run without checkpoints (metrics.jsonl, no 'latest'): nothing to resume; "
                          "use --fresh --force to start over, or another run.dir", cfg.run_dir);
    if (dry_run) {
        ladle_train_dry_run(&cfg, plan_ranks ? (int)plan_ranks : world_size(), MPI_COMM_WORLD, stdout);
        if (world_rank() == 0)
            printf("run.dir '%s': %s\n", cfg.run_dir,
                   fresh && has_run ? "holds a run, which --fresh --force would delete before starting over"
                   : state[0]       ? "holds a run, which would be resumed from its newest checkpoint"
                                    : "a new run would start there");
        return 0;
    }
    if (fresh && has_run && world_rank() == 0) clear_run_dir(cfg.run_dir);
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    return ladle_train_run(&cfg, MPI_COMM_WORLD);
}

/* ---- eval / generate / instantiate ------------------------------------------------- */

/* Domain weights for a soup: --weights NAME=W,... or the uniform (generic) mixture. */
static float *soup_weights(const ladle_ckpt_loaded *m, const char *spec)
{
    float *h = ladle_calloc((size_t)(m->n_domains > 0 ? m->n_domains : 1), sizeof(float), "domain weights");
    if (spec) ladle_weights_parse(m, spec, h);
    else for (int d = 0; d < m->n_domains; d++) h[d] = 1.0f / (float)m->n_domains;
    return h;
}

/* The full parameters of any model file: a soup is merged at --weights (default uniform),
 * which rank 0 notes on `note` (stderr when stdout must hold only JSON). */
static float *load_theta(const char *path, const char *weights, ladle_ckpt_loaded *m, FILE *note)
{
    ladle_ckpt_load(path, MPI_COMM_WORLD, m);
    if (m->soup.n == 0) {
        if (weights) ladle_usage_error("--weights: '%s' is not a soup (its kind is '%s')", path, m->kind);
        return ladle_ckpt_gather_theta(m, NULL, NULL);
    }
    float *h = soup_weights(m, weights);
    float *theta = ladle_ckpt_gather_theta(m, h, NULL);
    if (world_rank() == 0) {
        fprintf(note, "soup %s at h = ", path);
        ladle_weights_print(note, m, h, 8);
        fprintf(note, "%s\n", weights ? "" : " (uniform: the generic model)");
    }
    free(h);
    return theta;
}

/* 'ladle eval SOUP --specialize': specialists vs the generic model, per domain */
static int eval_specialize(const char *soup_path, const char *corpus_path, const char *baseline_path,
                           const ladle_specialize_options *opt, int json, const char *json_out)
{
    ladle_ckpt_loaded soup, baseline;
    ladle_ckpt_load(soup_path, MPI_COMM_WORLD, &soup);
    if (soup.soup.n == 0) ladle_usage_error("--specialize: '%s' is not a soup (its kind is '%s')", soup_path, soup.kind);
    if (baseline_path) ladle_ckpt_load(baseline_path, MPI_COMM_WORLD, &baseline);
    if (baseline_path && baseline.soup.n > 0)
        ladle_usage_error("--baseline: '%s' is a soup; give a dense model", baseline_path);
    int max_rows = 4096;
    ladle_specialize_row *rows = ladle_calloc((size_t)max_rows, sizeof *rows, "specialist table");
    int n = ladle_specialize_eval(&soup, corpus_path, baseline_path ? &baseline : NULL, opt, rows, max_rows);
    if (world_rank() == 0) {
        if (json) ladle_specialize_print_json(stdout, rows, n);
        else {
            if (opt->one_hot)
                printf("one-hot specialists of %s on its domains in %s", soup_path, corpus_path);
            else
                printf("specialists of %s on %s (%d example documents each, h from the clusters of %s)", soup_path,
                       opt->specialists ? opt->specialists : corpus_path, opt->examples, corpus_path);
            printf("%s%s\n", baseline_path ? ", baseline " : "", baseline_path ? baseline_path : "");
            ladle_specialize_print_table(stdout, rows, n);
        }
        if (json_out) {
            FILE *f = fopen(json_out, "w");
            LADLE_CHECK(f, "cannot write '%s': %s", json_out, strerror(errno));
            ladle_specialize_print_json(f, rows, n);
            LADLE_CHECK(fclose(f) == 0, "cannot write '%s': %s", json_out, strerror(errno));
        }
    }
    free(rows);
    if (baseline_path) ladle_ckpt_loaded_free(&baseline);
    ladle_ckpt_loaded_free(&soup);
    return 0;
}

/* '--weights natural': the corpus' domains at their train bytes, as a NAME=W,... spec, so
 * that the soup's domains are matched by name like any other --weights */
static char *natural_weights(const ladle_corpus *corpus)
{
    size_t cap = 1, at = 0;
    for (int d = 0; d < corpus->n_domains; d++) cap += strlen(corpus->domains[d].name) + 24;
    char *spec = ladle_malloc(cap, "natural weights");
    spec[0] = '\0';
    for (int d = 0; d < corpus->n_domains; d++)
        at += (size_t)snprintf(spec + at, cap - at, "%s%s=%zu", d ? "," : "", corpus->domains[d].name,
                               corpus->domains[d].train_bytes);
    return spec;
}

static int cmd_eval(int argc, char **argv)
{
    const char *model_path = NULL, *corpus_path = NULL, *weights = NULL, *baseline = NULL, *json_out = NULL;
    int json = 0, windows = 64, batch = 8, specialize = 0, examples = 8, routing = 0, one_hot = 0;
    const char *specialists = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help")) {
            if (world_rank() == 0)
                printf("usage: ladle eval MODEL.h5 --corpus CORPUS.h5 [--weights NAME=W,...] [--routing] [--json] [--windows N]\n"
                       "                  [--batch N]\n"
                       "       ladle eval SOUP.h5 --corpus CORPUS.h5 --specialize [--examples M] [--baseline MODEL.h5]\n"
                       "                  [--specialists TEXT.h5 | --one-hot] [--json-out TABLE.json]\n"
                       "Loss on every domain's valid split (N windows of the model's context per domain), in bits\n"
                       "per byte, and their mean weighted by train bytes (the natural mixture's loss). A soup is\n"
                       "evaluated at --weights (default: uniform; 'natural': the corpus' domains in proportion to\n"
                       "their train bytes). --specialize instantiates a\n"
                       "specialist per domain (from M of its train documents on a clustered corpus, one-hot h\n"
                       "otherwise) and compares it with the soup at uniform h and with --baseline.\n"
                       "--specialists TEXT.h5 evaluates the domains of another corpus (text held out of training),\n"
                       "h from the clusters of CORPUS.h5; --one-hot evaluates the soup's own domains at one-hot h.\n"
                       "Runs under mpiexec too: windows are split across ranks.\n"
                       "--routing adds, for every routed site (moe, smear, tag, adapters), each domain's average\n"
                       "routing distribution over the evaluated windows: moe the mean router probability per token\n"
                       "and the top-1 fractions, smear/tag the mean merge weights per segment (tag: one-hot by\n"
                       "construction); a model without routed sites is refused.\n");
            return 0;
        } else if (!strcmp(a, "--corpus")) corpus_path = need_value(argc, argv, &i);
        else if (!strcmp(a, "--weights")) weights = need_value(argc, argv, &i);
        else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--routing")) routing = 1;
        else if (!strcmp(a, "--specialize")) specialize = 1;
        else if (!strcmp(a, "--examples")) examples = (int)int_value(argc, argv, &i, 1, 1 << 20);
        else if (!strcmp(a, "--baseline")) baseline = need_value(argc, argv, &i);
        else if (!strcmp(a, "--specialists")) specialists = need_value(argc, argv, &i);
        else if (!strcmp(a, "--one-hot")) one_hot = 1;
        else if (!strcmp(a, "--json-out")) json_out = need_value(argc, argv, &i);
        else if (!strcmp(a, "--windows")) windows = (int)int_value(argc, argv, &i, 1, MAX_WINDOWS);
        else if (!strcmp(a, "--batch")) batch = (int)int_value(argc, argv, &i, 1, 1 << 16);
        else if (a[0] == '-') ladle_usage_error("eval: unknown option '%s'", a);
        else if (!model_path) model_path = a;
        else ladle_usage_error("eval: unexpected argument '%s'", a);
    }
    if (!model_path || !corpus_path) ladle_usage_error("eval: usage: ladle eval MODEL.h5 --corpus CORPUS.h5");
    if (specialize) {
        if (weights) ladle_usage_error("eval: --specialize chooses the weights itself; drop --weights");
        if (routing) ladle_usage_error("eval: --routing does not go with --specialize");
        if (specialists && one_hot) ladle_usage_error("eval: --specialists and --one-hot exclude each other");
        ladle_specialize_options opt = {specialists, one_hot, examples, windows, batch};
        return eval_specialize(model_path, corpus_path, baseline, &opt, json, json_out);
    }
    if (baseline || json_out || specialists || one_hot)
        ladle_usage_error("eval: --baseline, --json-out, --specialists and --one-hot go with --specialize");
    ladle_corpus corpus;
    ladle_corpus_open(&corpus, corpus_path, LADLE_CORPUS_STREAM, MPI_COMM_WORLD);
    char *natural = weights && !strcmp(weights, "natural") ? natural_weights(&corpus) : NULL;
    ladle_ckpt_loaded m;
    float *params = load_theta(model_path, natural ? natural : weights, &m, json ? stderr : stdout);
    free(natural);
    ladle_corpus_check_context(&corpus, corpus_path, m.model.context);
    ladle_routing stats;
    ladle_routing_create(&stats, &m.model, corpus.n_domains);
    if (routing && stats.n_sites == 0)
        ladle_usage_error("eval: --routing: '%s' has no routed sites (model.ffn = %s): nothing to report", model_path,
                          m.cfg.ffn);
    ladle_activations acts;
    ladle_activations_create(&acts, &m.model, batch);
    ladle_eval_result *results = ladle_calloc((size_t)corpus.n_domains, sizeof *results, "eval results");
    ladle_eval_domains_routing(&m.model, params, &acts, &corpus, windows, results, routing ? &stats : NULL,
                               MPI_COMM_WORLD);
    if (world_rank() == 0) {
        if (json) ladle_eval_print_json_routing(stdout, results, corpus.n_domains, routing ? &stats : NULL);
        else {
            printf("model %s (%s, step %ld) on %s\n", model_path, m.kind, m.step, corpus_path);
            ladle_eval_print_table(stdout, results, corpus.n_domains);
            if (routing) ladle_routing_print_table(stdout, &stats, results);
        }
    }
    ladle_routing_free(&stats);
    free(results);
    ladle_activations_free(&acts);
    ladle_corpus_free(&corpus);
    ladle_ckpt_loaded_free(&m);
    free(params);
    return 0;
}

static int cmd_generate(int argc, char **argv)
{
    const char *model_path = NULL, *prompt = "", *weights = NULL;
    int n_bytes = 256;
    double temperature = 0.8;
    long seed = 1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help")) {
            if (world_rank() == 0)
                printf("usage: ladle generate MODEL.h5 [--prompt TEXT] [--bytes N] [--temperature T] [--seed S]\n"
                       "                      [--weights NAME=W,...]\n"
                       "Prints TEXT (default empty) followed by N sampled bytes (default 256) at temperature T\n"
                       "(default 0.8; 0 = greedy) from seed S (default 1). A soup is merged at --weights over its\n"
                       "domains (default uniform: the generic model).\n");
            return 0;
        } else if (!strcmp(a, "--prompt")) prompt = need_value(argc, argv, &i);
        else if (!strcmp(a, "--weights")) weights = need_value(argc, argv, &i);
        else if (!strcmp(a, "--bytes")) n_bytes = (int)int_value(argc, argv, &i, 0, 1 << 30);
        else if (!strcmp(a, "--temperature")) temperature = parse_double(a, need_value(argc, argv, &i), 0, 100);
        else if (!strcmp(a, "--seed")) seed = (long)int_value(argc, argv, &i, 0, LONG_MAX);
        else if (a[0] == '-') ladle_usage_error("generate: unknown option '%s'", a);
        else if (!model_path) model_path = a;
        else ladle_usage_error("generate: unexpected argument '%s'", a);
    }
    if (!model_path) ladle_usage_error("generate: usage: ladle generate MODEL.h5 --prompt TEXT");
    ladle_ckpt_loaded m;
    float *params = load_theta(model_path, weights, &m, stdout);
    if (world_rank() == 0) ladle_generate(&m.model, params, prompt, n_bytes, (float)temperature, (uint64_t)seed, stdout);
    ladle_ckpt_loaded_free(&m);
    free(params);
    return 0;
}

static int cmd_instantiate(int argc, char **argv)
{
    const char *soup_path = NULL, *out = NULL, *weights = NULL, *corpus = NULL;
    char **like = ladle_calloc((size_t)argc + 1, sizeof(char *), "example files");
    int n_like = 0, in_like = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help")) {
            if (world_rank() == 0)
                printf("usage: ladle instantiate SOUP.h5 -o MODEL.h5 --weights NAME=W,...\n"
                       "       ladle instantiate SOUP.h5 -o MODEL.h5 --like FILE... [--corpus CORPUS.h5]\n"
                       "Writes the dense model Theta(h) = S + sum_j alpha_j(h) E_j. --weights names domains of the\n"
                       "soup (normalised); --like embeds the example files and uses the histogram of their nearest\n"
                       "clusters (the clusters of --corpus, default the soup's training corpus). Under mpiexec each\n"
                       "rank merges its slice and the file is written collectively.\n");
            free(like);
            return 0;
        }
        if (!strcmp(a, "-o") || !strcmp(a, "--output")) { out = need_value(argc, argv, &i); in_like = 0; }
        else if (!strcmp(a, "--weights")) { weights = need_value(argc, argv, &i); in_like = 0; }
        else if (!strcmp(a, "--corpus")) { corpus = need_value(argc, argv, &i); in_like = 0; }
        else if (!strcmp(a, "--like")) in_like = 1;
        else if (a[0] == '-') ladle_usage_error("instantiate: unknown option '%s'", a);
        else if (in_like) like[n_like++] = argv[i];
        else if (!soup_path) soup_path = a;
        else ladle_usage_error("instantiate: unexpected argument '%s'", a);
    }
    if (!soup_path || !out) ladle_usage_error("instantiate: usage: ladle instantiate SOUP.h5 -o MODEL.h5 --weights ...");
    if (!weights == !n_like) ladle_usage_error("instantiate: give exactly one of --weights NAME=W,... and --like FILE...");
    double start = MPI_Wtime();
    ladle_ckpt_loaded m;
    ladle_ckpt_load(soup_path, MPI_COMM_WORLD, &m);
    if (m.soup.n == 0) ladle_usage_error("instantiate: '%s' is not a soup (its kind is '%s')", soup_path, m.kind);
    double loaded = MPI_Wtime();
    float *h = ladle_calloc((size_t)m.n_domains, sizeof(float), "domain weights");
    if (weights) ladle_weights_parse(&m, weights, h);
    else {
        uint8_t **docs = NULL;
        size_t *lens = NULL;
        ladle_read_examples(like, n_like, &docs, &lens);
        ladle_weights_like(&m, corpus ? corpus : m.cfg.corpus, (const uint8_t *const *)docs, lens, n_like, h);
        for (int i = 0; i < n_like; i++) free(docs[i]);
        free(docs);
        free(lens);
    }
    float *alpha = ladle_calloc((size_t)m.soup.n, sizeof(float), "coefficients");
    double t0 = MPI_Wtime();
    ladle_instantiate(&m, soup_path, h, out, alpha);
    double t1 = MPI_Wtime();
    if (world_rank() == 0) {
        printf("h: ");
        ladle_weights_print(stdout, &m, h, 8);
        printf("\nalpha:");
        for (int j = 0; j < m.soup.n && j < 16; j++) printf(" %.4f", alpha[j]);
        printf("%s\nwrote %s: instantiated in %.1f ms (merge and write; loading the soup took %.1f ms)\n",
               m.soup.n > 16 ? " ..." : "", out, 1e3 * (t1 - t0), 1e3 * (loaded - start));
    }
    free(h);
    free(alpha);
    free(like);
    ladle_ckpt_loaded_free(&m);
    return 0;
}

static int cmd_fit_weights(int argc, char **argv)
{
    const char *soup_path = NULL, *out = NULL, *corpus = NULL;
    char **like = ladle_calloc((size_t)argc + 1, sizeof(char *), "example files");
    int n_like = 0, in_like = 0, steps = 30, windows = 64;
    double lr = 0.1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help")) {
            if (world_rank() == 0)
                printf("usage: ladle fit-weights SOUP.h5 --like FILE... -o MODEL.h5 [--corpus CORPUS.h5] [--steps N]\n"
                       "                         [--lr LR] [--windows N]\n"
                       "Fits the domain weights h = softmax(z) to the example files by gradient descent (Adam, N\n"
                       "steps) through the frozen soup, starting from the histogram of their nearest clusters (the\n"
                       "clusters of --corpus, default the soup's corpus; uniform if it has none), and writes Theta(h)\n"
                       "as a dense model. Prints the loss on the examples' windows before and after. Defaults:\n"
                       "--steps 30, --lr 0.1, --windows 64 (windows of the model's context from the examples).\n");
            free(like);
            return 0;
        }
        if (!strcmp(a, "-o") || !strcmp(a, "--output")) { out = need_value(argc, argv, &i); in_like = 0; }
        else if (!strcmp(a, "--corpus")) { corpus = need_value(argc, argv, &i); in_like = 0; }
        else if (!strcmp(a, "--steps")) { steps = (int)int_value(argc, argv, &i, 0, 1 << 24); in_like = 0; }
        else if (!strcmp(a, "--windows")) { windows = (int)int_value(argc, argv, &i, 1, MAX_WINDOWS); in_like = 0; }
        else if (!strcmp(a, "--lr")) { lr = parse_double(a, need_value(argc, argv, &i), 0, 100); in_like = 0; }
        else if (!strcmp(a, "--like")) in_like = 1;
        else if (a[0] == '-') ladle_usage_error("fit-weights: unknown option '%s'", a);
        else if (in_like) like[n_like++] = argv[i];
        else if (!soup_path) soup_path = a;
        else ladle_usage_error("fit-weights: unexpected argument '%s'", a);
    }
    if (!soup_path || !out || n_like == 0)
        ladle_usage_error("fit-weights: usage: ladle fit-weights SOUP.h5 --like FILE... -o MODEL.h5");
    ladle_ckpt_loaded m;
    ladle_ckpt_load(soup_path, MPI_COMM_WORLD, &m);
    if (m.soup.n == 0) ladle_usage_error("fit-weights: '%s' is not a soup (its kind is '%s')", soup_path, m.kind);
    uint8_t **docs = NULL;
    size_t *lens = NULL;
    ladle_read_examples(like, n_like, &docs, &lens);
    float *h = ladle_calloc((size_t)m.n_domains, sizeof(float), "domain weights");
    const char *cpath = corpus ? corpus : m.cfg.corpus;
    if (ladle_corpus_has_clusters(cpath)) ladle_weights_like(&m, cpath, (const uint8_t *const *)docs, lens, n_like, h);
    else for (int d = 0; d < m.n_domains; d++) h[d] = 1.0f / (float)m.n_domains;
    if (world_rank() == 0) {
        printf("start h: ");
        ladle_weights_print(stdout, &m, h, 6);
        printf("\n");
    }
    ladle_fit_result fit;
    ladle_fit_weights(&m, (const uint8_t *const *)docs, lens, (size_t)n_like, h, steps, (float)lr, windows, &fit);
    ladle_instantiate(&m, soup_path, h, out, NULL);
    if (world_rank() == 0) {
        printf("fitted h: ");
        ladle_weights_print(stdout, &m, h, 6);
        printf("\nloss on %d example windows: %.4f -> %.4f bits/byte after %d steps\nwrote %s\n", fit.windows,
               fit.loss_before / log(2.0), fit.loss_after / log(2.0), steps, out);
    }
    for (int i = 0; i < n_like; i++) free(docs[i]);
    free(docs);
    free(lens);
    free(h);
    free(like);
    ladle_ckpt_loaded_free(&m);
    return 0;
}

/* ---- inspect ---------------------------------------------------------------------- */

static int cmd_inspect(int argc, char **argv)
{
    const char *path = NULL;
    ladle_inspect_options opt = {.dump = NULL, .json = 0};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help")) {
            if (world_rank() == 0)
                printf("usage: ladle inspect FILE [--dump TENSOR] [--json]\n"
                       "Describes any ladle file from its metadata: a corpus (domains, documents and bytes per\n"
                       "split, clusters, sources) or a model file (kind: dense model, soup, instantiated model or\n"
                       "training checkpoint; step, world size at save, configuration summary, parameter counts,\n"
                       "domains, every tensor with its shape). --dump TENSOR prints one dataset's values, one per\n"
                       "line (%%.9g for float32) in row-major order, e.g. --dump shared/h.0.ffn.w1,\n"
                       "--dump experts/h.0.ffn.w1, --dump router/router.w1. --json prints the same as JSON.\n");
            return 0;
        } else if (!strcmp(a, "--dump")) opt.dump = need_value(argc, argv, &i);
        else if (!strcmp(a, "--json")) opt.json = 1;
        else if (a[0] == '-') ladle_usage_error("inspect: unknown option '%s' (see 'ladle inspect --help')", a);
        else if (!path) path = a;
        else ladle_usage_error("inspect: unexpected argument '%s'", a);
    }
    if (!path) ladle_usage_error("inspect: usage: ladle inspect FILE [--dump TENSOR] [--json]");
    return ladle_inspect(path, &opt, world_rank(), stdout);
}

static int cmd_prune(int argc, char **argv)
{
    const char *in = NULL, *out = NULL;
    char **task = ladle_calloc((size_t)argc + 1, sizeof(char *), "task files");
    int n_task = 0, in_task = 0, experts = 0, windows = 64;
    ladle_prune_method method = LADLE_PRUNE_UNCURL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help")) {
            if (world_rank() == 0)
                printf("usage: ladle prune MODEL.h5 --task FILE... --experts D -o OUT.h5 [--method uncurl|frequency]\n"
                       "                   [--windows N]\n"
                       "UNCURL: reduces every moe and smear (FFN) site to D experts, 1 <= D < Z, for the task\n"
                       "(router logits and top-1 counts over N windows of the task text, default 64; a smear site's\n"
                       "per-segment routing probabilities stand in for the logits; affinity (1 + cos)/2, spectral\n"
                       "clustering, hidden units aligned by the Hungarian algorithm, frequency-weighted merge,\n"
                       "router re-initialised). --method frequency keeps the D most used experts. The output's\n"
                       "configuration has moe.experts (smear.experts) = D. Then re-train the router and fine-tune:\n"
                       "  ladle train ... model.ffn=... moe.experts=D train.init=OUT.h5 train.only=router\n");
            free(task);
            return 0;
        }
        if (!strcmp(a, "-o") || !strcmp(a, "--output")) { out = need_value(argc, argv, &i); in_task = 0; }
        /* D >= 1 here, D < Z in ladle_prune_model; at most the largest moe.experts/smear.experts */
        else if (!strcmp(a, "--experts")) { experts = (int)int_value(argc, argv, &i, 1, 4096); in_task = 0; }
        else if (!strcmp(a, "--windows")) { windows = (int)int_value(argc, argv, &i, 1, MAX_WINDOWS); in_task = 0; }
        else if (!strcmp(a, "--method")) {
            const char *v = need_value(argc, argv, &i);
            in_task = 0;
            if (!strcmp(v, "uncurl")) method = LADLE_PRUNE_UNCURL;
            else if (!strcmp(v, "frequency")) method = LADLE_PRUNE_FREQUENCY;
            else ladle_usage_error("prune: --method '%s': expected uncurl or frequency", v);
        } else if (!strcmp(a, "--task")) in_task = 1;
        else if (a[0] == '-') ladle_usage_error("prune: unknown option '%s'", a);
        else if (in_task) task[n_task++] = argv[i];
        else if (!in) in = a;
        else ladle_usage_error("prune: unexpected argument '%s'", a);
    }
    if (!in || !out || n_task == 0 || experts == 0)
        ladle_usage_error("prune: usage: ladle prune MODEL.h5 --task FILE... --experts D -o OUT.h5");
    uint8_t **docs = NULL;
    size_t *lens = NULL;
    ladle_read_examples(task, n_task, &docs, &lens);
    ladle_prune_model(in, out, (const uint8_t *const *)docs, lens, (size_t)n_task, experts, method, windows,
                      MPI_COMM_WORLD);
    for (int i = 0; i < n_task; i++) free(docs[i]);
    free(docs);
    free(lens);
    free(task);
    return 0;
}

static int cmd_keys(int argc, char **argv)
{
    if (argc > 0 && !strcmp(argv[0], "--help")) {
        if (world_rank() == 0)
            printf("usage: ladle keys\n"
                   "Prints every configuration key of 'ladle train' with its default and meaning, as a Markdown\n"
                   "table (the README's table is this output). A config file holds 'key = value' lines ('#'\n"
                   "starts a comment); 'key=value' arguments of 'ladle train' override it.\n");
        return 0;
    }
    if (argc > 0) ladle_usage_error("keys: unexpected argument '%s' (see 'ladle keys --help')", argv[0]);
    if (world_rank() == 0) ladle_config_print_keys(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    setenv("HDF5_USE_FILE_LOCKING", "FALSE", 0);
    check_slurm_launch();
    if (MPI_Init(&argc, &argv) != MPI_SUCCESS) {
        fprintf(stderr, "ladle: error: MPI_Init failed\n");
        return LADLE_EXIT_FAILURE;
    }
    /* errors come back to us, so they are reported with file:line (error.h) */
    MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    set_threads();
    int rc = LADLE_EXIT_OK;
    const char *cmd = argc > 1 ? argv[1] : NULL;
    if (!cmd || !strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        if (world_rank() == 0) fputs(USAGE, stdout);
        if (!cmd) rc = LADLE_EXIT_USAGE;
    } else if (!strcmp(cmd, "--version")) {
        if (world_rank() == 0) printf("ladle %s\n", PACKAGE_VERSION);
    } else if (!strcmp(cmd, "prep")) rc = cmd_prep(argc - 2, argv + 2);
    else if (!strcmp(cmd, "train")) rc = cmd_train(argc - 2, argv + 2);
    else if (!strcmp(cmd, "eval")) rc = cmd_eval(argc - 2, argv + 2);
    else if (!strcmp(cmd, "generate")) rc = cmd_generate(argc - 2, argv + 2);
    else if (!strcmp(cmd, "instantiate")) rc = cmd_instantiate(argc - 2, argv + 2);
    else if (!strcmp(cmd, "fit-weights")) rc = cmd_fit_weights(argc - 2, argv + 2);
    else if (!strcmp(cmd, "prune")) rc = cmd_prune(argc - 2, argv + 2);
    else if (!strcmp(cmd, "inspect")) rc = cmd_inspect(argc - 2, argv + 2);
    else if (!strcmp(cmd, "keys")) rc = cmd_keys(argc - 2, argv + 2);
    else ladle_usage_error("unknown command '%s' (see 'ladle --help')", cmd);
    MPI_CHECK(MPI_Finalize());
    return rc;
}
