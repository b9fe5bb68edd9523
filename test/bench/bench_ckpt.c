/* bench_ckpt: speed of ladle's collective checkpoint writer and reader (ladle_ckpt_save /
 * ladle_ckpt_restore), run under MPI on any rank count.
 *
 *   bench_ckpt DIR [layers=4] [dim=384] [heads=6] [context=256] [experts=4] [reps=3] [raw=1] [dry=0]
 *
 * Builds a model and a dense-expert soup (soup.experts = experts on all tensors) with its
 * router, fills the parameters and both AdamW moments with deterministic values (a pure
 * function of the global element, so the file is the same on any rank count: the
 * defaults give 7.3M parameters, 438 MB of floats with /optim), then
 *
 *   - runs the MPI-IO self-test (ladle_h5_selftest) in DIR;
 *   - times ladle_ckpt_save of a training checkpoint (parameters + /optim) to DIR, best of
 *     `reps`, with a barrier before and after each, the previous file removed untimed
 *     first. ladle_ckpt_save is durable (every rank's MPI_File_sync, rank 0's fsync after
 *     closing, then the rename), so write_s is what a checkpoint costs on the device;
 *   - times ladle_ckpt_restore, best of `reps`, from the page cache (the file was just
 *     written: read_s), then each time after rank 0 dropped the file's clean pages
 *     (fsync + posix_fadvise DONTNEED: read_cold_s; a VM's host may still cache the disk);
 *   - with raw=1, the same bytes per rank through plain MPI-IO (MPI_File_write_at_all /
 *     read_at_all of each rank's contiguous block, one call per set, MPI_File_sync after
 *     writing): what the MPI-IO
 *     layer alone does into the same buffers, to tell HDF5/layout overhead from MPI-IO's;
 *   - checks after every read that every element equals what was written (position-aware
 *     64-bit checksum of each rank's buffers, which are poisoned with NaNs before each
 *     read, compared per rank) and exits non-zero otherwise.
 *
 * Output, rank 0: progress lines, then one "key value" per line. MB = 1e6 bytes; every
 * rate is over payload_bytes, the floats actually moved: ckpt_bytes, the file's size, is
 * ~10 % more because HDF5 starts each dataset >= 1 MiB on a 1 MiB boundary
 * (ladle_h5_fapl_mpio), and those gaps are reserved (fallocate) but never written.
 *   ranks ckpt_bytes payload_bytes write_s write_MBps read_s read_MBps read_cold_s read_cold_MBps [raw_bytes raw_write_s raw_write_MBps
 *   raw_read_s raw_read_MBps] checksum (sum over ranks: equal on any rank count) verify
 * dry=1 prints payload_bytes only. Files are created in DIR and removed at the end (DIR
 * itself is left). Exit 0, 1 on a failure or a read-back mismatch, 2 on bad arguments. */
#include "ladle/ckpt.h"
#include "ladle/config.h"
#include "ladle/error.h"
#include "ladle/h5io.h"
#include "ladle/log.h"
#include "ladle/model.h"
#include "ladle/router.h"
#include "ladle/shard.h"
#include "ladle/soup.h"

#include <errno.h>
#include <fcntl.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int parse_int(const char *arg, const char *key, int *out)
{
    size_t n = strlen(key);
    if (strncmp(arg, key, n) != 0 || arg[n] != '=') return 0;
    char *end = NULL;
    long v = strtol(arg + n + 1, &end, 10);
    if (!end || *end || end == arg + n + 1 || v < 0 || v > 1 << 20) {
        fprintf(stderr, "bench_ckpt: bad value in '%s'\n", arg);
        exit(2);
    }
    *out = (int)v;
    return 1;
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* Element g of vector `vec` (set s: 0 parameters, 1 m, 2 v; part: 0 S, 1 + j expert j,
 * 99 router), in [-0.5, 0.5) (v in [0, 1): AdamW's second moment is non-negative). */
static float value_of(int set, int part, uint64_t g)
{
    uint64_t h = mix(g * 0x9e3779b97f4a7c15ull + (uint64_t)(set * 1000 + part) * 0x632be59bd9b4e019ull + 1);
    float u = (float)(h >> 40) / 16777216.0f;
    return set == 2 ? u : u - 0.5f;
}

static void fill(float *p, size_t n, int set, int part, uint64_t g0)
{
    for (size_t i = 0; i < n; i++) p[i] = value_of(set, part, g0 + i);
}

/* Position-aware checksum of n floats, element i being global element g0 + i of (set, part). */
static uint64_t checksum(const float *p, size_t n, int set, int part, uint64_t g0)
{
    uint64_t sum = 0, tag = (uint64_t)(set * 1000 + part) << 48;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &p[i], sizeof bits);
        sum += mix(((g0 + i) ^ tag) * 0x100000001b3ull + bits);
    }
    return sum;
}

typedef struct {
    ladle_shard shard;
    ladle_soup soup;
    ladle_router router;
    float *shared[3];   /* parameters, m, v: shard.slice floats */
    float *router_p[3];
} bench_state;

/* This rank's checksum of everything it writes and reads (the router counted on rank 0
 * only, so the sum over ranks does not depend on the rank count). */
static uint64_t state_checksum(const bench_state *b)
{
    const ladle_shard *s = &b->shard;
    uint64_t sum = 0;
    for (int set = 0; set < 3; set++) {
        sum += checksum(b->shared[set], s->hi - s->lo, set, 0, s->lo);
        const float *e = set == 0 ? b->soup.experts : set == 1 ? b->soup.adam_m : b->soup.adam_v;
        for (int j = 0; j < b->soup.n; j++)
            sum += checksum(e + (size_t)j * b->soup.own_len, b->soup.own_len, set, 1 + j, b->soup.own_lo);
        if (s->rank == 0 && b->soup.n > 0) sum += checksum(b->router_p[set], b->router.n_params, set, 99, 0);
    }
    return sum;
}

static void fill_state(bench_state *b)
{
    const ladle_shard *s = &b->shard;
    for (int set = 0; set < 3; set++) {
        memset(b->shared[set], 0, s->slice * sizeof(float));
        fill(b->shared[set], s->hi - s->lo, set, 0, s->lo);
        float *e = set == 0 ? b->soup.experts : set == 1 ? b->soup.adam_m : b->soup.adam_v;
        for (int j = 0; j < b->soup.n; j++) fill(e + (size_t)j * b->soup.own_len, b->soup.own_len, set, 1 + j, b->soup.own_lo);
        if (b->soup.n > 0) fill(b->router_p[set], b->router.n_params, set, 99, 0);
    }
}

/* Overwrite every buffer restore should fill with a NaN pattern. */
static void poison_state(bench_state *b)
{
    const ladle_shard *s = &b->shard;
    for (int set = 0; set < 3; set++) {
        memset(b->shared[set], 0xff, (s->hi - s->lo) * sizeof(float));
        float *e = set == 0 ? b->soup.experts : set == 1 ? b->soup.adam_m : b->soup.adam_v;
        memset(e, 0xff, (size_t)b->soup.n * b->soup.own_len * sizeof(float));
        if (b->soup.n > 0) memset(b->router_p[set], 0xff, b->router.n_params * sizeof(float));
    }
}

static int verify(const bench_state *b, uint64_t expected, const char *what)
{
    int bad = state_checksum(b) != expected, any = 0;
    MPI_CHECK(MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, b->shard.comm));
    if (bad) fprintf(stderr, "bench_ckpt: rank %d: %s: data read back differs from what was written\n", b->shard.rank, what);
    return any;
}

/* The plain MPI-IO reference: each rank's bytes of one set as one contiguous block of a
 * shared file (offsets by exclusive prefix sum), one collective call per set. */
static double raw_io(const char *path, const bench_state *b, int write, MPI_Comm comm)
{
    const ladle_shard *s = &b->shard;
    size_t n_shared = s->hi - s->lo, n_exp = (size_t)b->soup.n * b->soup.own_len;
    size_t n_router = s->rank == 0 && b->soup.n > 0 ? b->router.n_params : 0;
    long long mine = (long long)((n_shared + n_exp + n_router) * sizeof(float)), before = 0, total = 0;
    MPI_CHECK(MPI_Exscan(&mine, &before, 1, MPI_LONG_LONG, MPI_SUM, comm));
    if (s->rank == 0) before = 0;
    MPI_CHECK(MPI_Allreduce(&mine, &total, 1, MPI_LONG_LONG, MPI_SUM, comm));
    MPI_File fh;
    MPI_CHECK(MPI_Barrier(comm));
    double t0 = ladle_now();
    MPI_CHECK(MPI_File_open(comm, path, write ? MPI_MODE_CREATE | MPI_MODE_WRONLY : MPI_MODE_RDONLY, MPI_INFO_NULL, &fh));
    for (int set = 0; set < 3; set++) {
        const float *e = set == 0 ? b->soup.experts : set == 1 ? b->soup.adam_m : b->soup.adam_v;
        const float *parts[3] = {b->shared[set], e, b->router_p[set]};
        size_t lens[3] = {n_shared, n_exp, n_router};
        MPI_Offset off = (MPI_Offset)(set * total + before);
        for (int k = 0; k < 3; k++) {
            /* counts are ints: move at most 1 GiB per call (everyone calls equally often) */
            size_t done = 0, chunk = (size_t)1 << 28;
            long long calls = (long long)((lens[k] + chunk - 1) / chunk), most = 0;
            MPI_CHECK(MPI_Allreduce(&calls, &most, 1, MPI_LONG_LONG, MPI_MAX, comm));
            for (long long c = 0; c < (most > 0 ? most : 1); c++) {
                size_t n = lens[k] - done < chunk ? lens[k] - done : chunk;
                float *p = (float *)(parts[k] ? parts[k] + done : b->shared[set]);
                if (write) MPI_CHECK(MPI_File_write_at_all(fh, off, p, (int)n, MPI_FLOAT, MPI_STATUS_IGNORE));
                else MPI_CHECK(MPI_File_read_at_all(fh, off, p, (int)n, MPI_FLOAT, MPI_STATUS_IGNORE));
                done += n;
                off += (MPI_Offset)(n * sizeof(float));
            }
        }
    }
    if (write) MPI_CHECK(MPI_File_sync(fh));   /* durable, like ladle_ckpt_save */
    MPI_CHECK(MPI_File_close(&fh));
    MPI_CHECK(MPI_Barrier(comm));
    return ladle_now() - t0;
}

/* Rank 0: fsync the file (returns the seconds it took) and, if drop, ask the kernel to
 * forget its (now clean) pages so the next read comes from the device. */
static double sync_and_drop(const char *path, int drop)
{
    int fd = open(path, O_RDONLY);
    LADLE_CHECK(fd >= 0, "cannot open '%s': %s", path, strerror(errno));
    double t0 = ladle_now();
    LADLE_CHECK(fsync(fd) == 0, "fsync of '%s' failed: %s", path, strerror(errno));
    double secs = ladle_now() - t0;
    if (drop) (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    return secs;
}

static void remove_file(const char *path)
{
    LADLE_CHECK(unlink(path) == 0 || errno == ENOENT, "cannot remove '%s': %s", path, strerror(errno));
}

int main(int argc, char **argv)
{
    setenv("HDF5_USE_FILE_LOCKING", "FALSE", 0);
    if (MPI_Init(&argc, &argv) != MPI_SUCCESS) {
        fprintf(stderr, "bench_ckpt: MPI_Init failed\n");
        return 1;
    }
    MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MPI_Comm comm = MPI_COMM_WORLD;
    int rank = 0, size = 1;
    MPI_CHECK(MPI_Comm_rank(comm, &rank));
    MPI_CHECK(MPI_Comm_size(comm, &size));
    int layers = 4, dim = 384, heads = 6, context = 256, experts = 4, reps = 3, raw = 1, dry = 0;
    const char *dir = argc > 1 && strchr(argv[1], '=') == NULL ? argv[1] : NULL;
    for (int i = 2; dir && i < argc; i++) {
        if (parse_int(argv[i], "layers", &layers) || parse_int(argv[i], "dim", &dim) ||
            parse_int(argv[i], "heads", &heads) || parse_int(argv[i], "context", &context) ||
            parse_int(argv[i], "experts", &experts) || parse_int(argv[i], "reps", &reps) ||
            parse_int(argv[i], "raw", &raw) || parse_int(argv[i], "dry", &dry))
            continue;
        dir = NULL;
    }
    if (!dir || reps < 1 || layers < 1 || dim < 1 || heads < 1 || context < 1) {
        if (rank == 0)
            fprintf(stderr, "usage: bench_ckpt DIR [layers=4] [dim=384] [heads=6] [context=256] [experts=4] [reps=3] "
                            "[raw=1] [dry=0]\n");
        MPI_Finalize();
        return 2;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        if (rank == 0) fprintf(stderr, "bench_ckpt: '%s' is not a directory\n", dir);
        MPI_Finalize();
        return 2;
    }


    ladle_config cfg;
    ladle_config_defaults(&cfg);
    cfg.layers = layers; cfg.dim = dim; cfg.heads = heads; cfg.context = context; cfg.experts = experts;
    cfg.expert_rank = 0;
    cfg.experts_on = 0;
    char err[256];
    if (ladle_config_validate(&cfg, err, sizeof err) != 0) {
        if (rank == 0) fprintf(stderr, "bench_ckpt: %s\n", err);
        MPI_Finalize();
        return 2;
    }
    ladle_model model;
    ladle_model_create(&model, &cfg);
    bench_state b;
    memset(&b, 0, sizeof b);
    ladle_shard_create(&b.shard, model.n_params, comm);
    ladle_soup_create(&b.soup, &model, &b.shard, experts, cfg.experts_on, 0);
    enum { K = 4 };
    const char names[K][LADLE_NAME_MAX] = {"d0", "d1", "d2", "d3"};
    if (experts > 0) ladle_router_configure(&b.router, K, experts, &cfg);
    /* floats moved: per set S + n experts (+ router) */
    double payload = 3.0 * 4.0 * ((double)model.n_params * (1 + experts) + (double)b.router.n_params);

    if (dry) {   /* only the size, for the caller to size its dd runs */
        if (rank == 0) printf("payload_bytes %.0f\n", payload);
        ladle_soup_free(&b.soup);
        ladle_model_free(&model);
        MPI_Finalize();
        return 0;
    }
    for (int set = 0; set < 3; set++) {
        b.shared[set] = ladle_calloc(b.shard.slice, sizeof(float), "parameter slice");
        b.router_p[set] = ladle_calloc(b.router.n_params ? b.router.n_params : 1, sizeof(float), "router");
    }
    fill_state(&b);
    uint64_t expected = state_checksum(&b), global = 0;
    MPI_CHECK(MPI_Allreduce(&expected, &global, 1, MPI_UINT64_T, MPI_SUM, comm));

    /* 0. the stack can write shared files here at all (aborts with a clear message if not) */
    double t_self = ladle_now();
    ladle_h5_selftest(dir, comm);
    if (rank == 0) printf("selftest ok %.3f s\n", ladle_now() - t_self);

    ladle_ckpt_state state = {b.shared[0], b.shared[1], b.shared[2], experts > 0 ? &b.soup : NULL,
                              experts > 0 ? &b.router : NULL, b.router_p[0], b.router_p[1], b.router_p[2]};
    ladle_ckpt_contents c = {
        .kind = experts > 0 ? "soup" : "dense",
        .step = 1234,
        .cfg = &cfg,
        .model = &model,
        .shard = &b.shard,
        .state = state,
        .with_optim = 1,
        .n_domains = K,
        .domain_names = names,
    };
    char path[LADLE_PATH_MAX + 64], tmp[LADLE_PATH_MAX + 80], rawpath[LADLE_PATH_MAX + 80];
    long pid = rank == 0 ? (long)getpid() : 0;
    MPI_CHECK(MPI_Bcast(&pid, 1, MPI_LONG, 0, comm));
    snprintf(path, sizeof path, "%s/bench-ckpt-%ld.h5", dir, pid);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    snprintf(rawpath, sizeof rawpath, "%s/bench-ckpt-%ld.raw", dir, pid);
    if (rank == 0)
        printf("bench_ckpt: %d rank(s); layers %d dim %d context %d experts %d: %zu parameters, %.0f MB of "
               "floats with /optim; best of %d; dir %s\n",
               size, layers, dim, context, experts, model.n_params, payload / 1e6, reps, dir);

    /* 1. durable writes; the previous file is removed, untimed, before each */
    double best_w = 1e30;
    for (int r = 0; r < reps; r++) {
        if (rank == 0) remove_file(path);
        MPI_CHECK(MPI_Barrier(comm));
        double t0 = ladle_now();
        ladle_ckpt_save(path, &c);
        MPI_CHECK(MPI_Barrier(comm));
        double t = ladle_now() - t0;
        if (t < best_w) best_w = t;
        if (rank == 0) printf("rep %d write %.3f s\n", r, t);
    }
    long long bytes = 0;
    if (rank == 0) {
        LADLE_CHECK(stat(path, &st) == 0, "checkpoint '%s' missing after save: %s", path, strerror(errno));
        bytes = (long long)st.st_size;
    }
    MPI_CHECK(MPI_Bcast(&bytes, 1, MPI_LONG_LONG, 0, comm));

    /* 2. reads from the page cache (the file was just written), then after rank 0 dropped
     * the file's (clean) pages before each */
    int failed = 0;
    double best_r = 1e30, best_cold = 1e30;
    ladle_config stored;
    long step = 0;
    for (int cold = 0; cold < 2; cold++)
        for (int r = 0; r < reps; r++) {
            if (cold && rank == 0) sync_and_drop(path, 1);
            poison_state(&b);
            MPI_CHECK(MPI_Barrier(comm));
            double t0 = ladle_now();
            ladle_ckpt_restore(path, &model, &b.shard, &state, &stored, &step);
            MPI_CHECK(MPI_Barrier(comm));
            double t = ladle_now() - t0;
            if (cold && t < best_cold) best_cold = t;
            if (!cold && t < best_r) best_r = t;
            if (rank == 0) printf("rep %d read%s %.3f s\n", r, cold ? " (cold)" : "", t);
            failed |= verify(&b, expected, cold ? "restore (cold)" : "restore");
            if (step != 1234 || stored.layers != layers || stored.dim != dim || stored.experts != experts) {
                if (rank == 0)
                    fprintf(stderr, "bench_ckpt: restore returned step %ld and a different configuration\n", step);
                failed = 1;
            }
        }

    /* 3. the plain MPI-IO reference over the same bytes */
    double raw_w = 1e30, raw_r = 1e30;
    long long raw_bytes = 0;
    if (raw) {
        for (int r = 0; r < reps; r++) {
            if (rank == 0) remove_file(rawpath);
            MPI_CHECK(MPI_Barrier(comm));
            double t = raw_io(rawpath, &b, 1, comm);
            if (t < raw_w) raw_w = t;
        }
        if (rank == 0) {
            LADLE_CHECK(stat(rawpath, &st) == 0, "'%s' missing: %s", rawpath, strerror(errno));
            raw_bytes = (long long)st.st_size;
        }
        for (int r = 0; r < reps; r++) {
            poison_state(&b);
            double t = raw_io(rawpath, &b, 0, comm);
            if (t < raw_r) raw_r = t;
            failed |= verify(&b, expected, "plain MPI-IO read");
        }
    }

    if (rank == 0) {
        remove_file(path);
        remove_file(tmp);
        if (raw) remove_file(rawpath);
        printf("ranks %d\n", size);
        printf("ckpt_bytes %lld\n", bytes);
        printf("payload_bytes %.0f\n", payload);
        printf("write_s %.4f\n", best_w);
        printf("write_MBps %.1f\n", payload / best_w / 1e6);
        printf("read_s %.4f\n", best_r);
        printf("read_MBps %.1f\n", payload / best_r / 1e6);
        printf("read_cold_s %.4f\n", best_cold);
        printf("read_cold_MBps %.1f\n", payload / best_cold / 1e6);
        if (raw) {
            printf("raw_bytes %lld\n", raw_bytes);
            printf("raw_write_s %.4f\n", raw_w);
            printf("raw_write_MBps %.1f\n", payload / raw_w / 1e6);
            printf("raw_read_s %.4f\n", raw_r);
            printf("raw_read_MBps %.1f\n", payload / raw_r / 1e6);
        }
        printf("checksum %016llx\n", (unsigned long long)global);
        printf("verify %s\n", failed ? "FAILED" : "ok");
        fflush(stdout);
    }
    for (int set = 0; set < 3; set++) {
        free(b.shared[set]);
        free(b.router_p[set]);
    }
    ladle_soup_free(&b.soup);
    ladle_model_free(&model);
    MPI_CHECK(MPI_Finalize());
    return failed ? 1 : 0;
}
