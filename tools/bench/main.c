/*
 * eskit-bench: the embedded backend's append throughput and command latency,
 * each printed beside a raw SQLite baseline measured in the same run on the
 * same disk, with the same durability (WAL, synchronous=FULL) and the same
 * envelope bytes, and the ratio of the two against the goals of the design
 * handbook. It exits 0 whether goals are met or missed; non-zero on errors.
 */
#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <eskit/eskit.h>

#include "blobs.h"
#include "idem.h"
#include "raw.h"
#include "kafka.h"
#include "replay.h"
#include "restore.h"
#include "schemas.h"
#include "report.h"
#include "runs.h"
#include "saga.h"
#include "util.h"

#define GOAL_APPEND 0.50     /* batched append vs raw INTEGER PRIMARY KEY insert */
#define GOAL_EXECUTE 0.60    /* es_execute_batch vs the same raw insert (issue 16) */
#define GOAL_LATENCY 1.50    /* es_execute p50 vs one raw fsync'd commit */
#define GOAL_REPLAY 0.80     /* es_replay vs a raw read-decode-upsert rebuild */
#define GOAL_UPCAST 0.80     /* es_replay, half the events upcast, vs the same without */
#define GOAL_RESTORE 1.50    /* a restore of 10x history vs 1x, the same live state */
#define GOAL_KAFKA 0.50      /* es_execute_batch over Kafka vs raw librdkafka, same bytes */
#define GOAL_KAFKA_PIPE 0.60 /* the same vs a raw request/reply pipeline making the same hops */
#define GOAL_KAFKA_ONE 2.00  /* es_execute p50 over Kafka vs that pipeline's one-command trip */
#define GOAL_SAGA 0.35       /* sagas completed vs the same commands executed directly */
#define GOAL_METRICS 0.97    /* a figure with metrics on vs the same with metrics.enabled=false */
#define GOAL_IDEM_KIND 0.80  /* random caller ids vs sequential ones, at 2M remembered ids */
#define GOAL_IDEM_FLAT 0.90  /* each kind of id: the rate at 6M events vs on an empty log */
#define GOAL_RSS_MIB 64.0    /* peak RSS of a replay, flat in the log's size */
#define SAGA_ORDERS 5000     /* sagas in the saga figure (--quick: 500) */
#define MX_PAIRS 9           /* metrics group: runs each side of the execute and catch-up figures */
#define MX_KAFKA_PAIRS                                                                             \
    7 /* and of the Kafka figure, whose runs vary the most (--quick: 1 each: a smoke run) */
#define MAX_NOTES 32
#define TMPFS_MAGIC_NUMBER 0x01021994

typedef struct fig_slot {
    report_fig_t f;
    char name[96];
    char base[96];
} fig_slot_t;

typedef struct bench {
    bool quick;
    const char *only; /* one group of figures, or NULL for all */
    const char *parent;
    char dir[PATH_MAX];
    fig_slot_t *figs; /* grows; a figure's name pointers are set when it is printed */
    size_t n_figs, cap_figs;
    fig_slot_t spare; /* where a figure goes when figs cannot grow; out_of_memory is then set */
    bool out_of_memory;
    char notes[MAX_NOTES][512];
    size_t n_notes;
} bench_t;

static void usage(FILE *out) {
    fprintf(out, "usage: eskit-bench [--quick] [--only GROUP] [--dir DIR]\n"
                 "  --quick    smaller counts, for a smoke test\n"
                 "  --only G   one group: append, execute, latency, replay, kafka, saga,\n"
                 "             schemas, metrics, restore or idempotency\n"
                 "  --dir DIR  where the scratch databases go (default: $TMPDIR or /var/tmp);\n"
                 "             put it on the disk you want measured, not on tmpfs\n");
}

/* Returns 0 to run, 1 when help was printed, -1 on a bad argument. */
static int parse_args(bench_t *b, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            b->quick = true;
        } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            b->only = argv[++i];
            if (strcmp(b->only, "append") && strcmp(b->only, "execute") &&
                strcmp(b->only, "latency") && strcmp(b->only, "replay") &&
                strcmp(b->only, "kafka") && strcmp(b->only, "saga") && strcmp(b->only, "schemas") &&
                strcmp(b->only, "metrics") && strcmp(b->only, "restore") &&
                strcmp(b->only, "idempotency")) {
                fprintf(stderr, "eskit-bench: --only takes append, execute, latency, replay, "
                                "kafka, saga, schemas, metrics, restore or idempotency\n");
                return -1;
            }
        } else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            b->parent = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 1;
        } else {
            fprintf(stderr, "eskit-bench: unknown or incomplete argument '%s'\n", argv[i]);
            usage(stderr);
            return -1;
        }
    }
    if (!b->parent)
        b->parent = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
    return 0;
}

/* A fresh figure at the end of the table. The table grows as figures come, so a group may add
 * as many as it measures; when it cannot grow, the figure is dropped with a message and the run
 * fails at the end rather than printing a table with a hole in it. */
static fig_slot_t *new_fig(bench_t *b) {
    if (b->n_figs == b->cap_figs) {
        size_t cap = b->cap_figs ? b->cap_figs * 2 : 16;
        fig_slot_t *grown = realloc(b->figs, cap * sizeof *grown);
        if (!grown) {
            if (!b->out_of_memory)
                fprintf(stderr, "eskit-bench: out of memory for figure %zu; its value is lost\n",
                        b->n_figs + 1);
            b->out_of_memory = true;
            memset(&b->spare, 0, sizeof b->spare);
            return &b->spare;
        }
        b->figs = grown;
        b->cap_figs = cap;
    }
    fig_slot_t *s = &b->figs[b->n_figs++];
    memset(s, 0, sizeof *s);
    return s;
}

/* A figure beside its baseline, both in unit, with no goal unless the caller sets one. */
static fig_slot_t *add_fig(bench_t *b, const char *name, const char *base, double value,
                           double base_value, report_unit unit) {
    fig_slot_t *s = new_fig(b);
    snprintf(s->name, sizeof s->name, "%s", name);
    snprintf(s->base, sizeof s->base, "%s", base);
    s->f.value = value;
    s->f.unit = unit;
    s->f.base = base_value;
    s->f.base_unit = unit;
    s->f.goal_kind = GOAL_NONE;
    return s;
}

static void add_note(bench_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void add_note(bench_t *b, const char *fmt, ...) {
    va_list ap;
    if (b->n_notes >= MAX_NOTES)
        return;
    va_start(ap, fmt);
    vsnprintf(b->notes[b->n_notes++], sizeof b->notes[0], fmt, ap);
    va_end(ap);
}

static void progress(const char *what) {
    fprintf(stderr, "eskit-bench: measuring %s\n", what);
}

static const char *fs_name(long magic) {
    switch (magic) {
    case 0xEF53:
        return "ext2/3/4";
    case 0x58465342:
        return "xfs";
    case 0x9123683E:
        return "btrfs";
    case 0x794C7630:
        return "overlayfs";
    case TMPFS_MAGIC_NUMBER:
        return "tmpfs: fsync costs nothing here, the figures mean little";
    default:
        return "other";
    }
}

static void cpu_model(char *out, size_t cap) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[256];
    snprintf(out, cap, "unknown CPU");
    while (f && fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && colon) {
            snprintf(out, cap, "%s", colon + 2);
            out[strcspn(out, "\n")] = '\0';
            break;
        }
    }
    if (f)
        fclose(f);
}

static void print_machine(const bench_t *b) {
    struct statfs fs;
    char cpu[128];
    es_config_t *cfg = es_config_new();
    cpu_model(cpu, sizeof cpu);
    long magic = statfs(b->dir, &fs) == 0 ? (long)fs.f_type : 0;
    printf("eskit-bench %s, %s run\n", ESKIT_VERSION_STRING, b->quick ? "quick" : "full");
    printf("machine: %ld cpus (%s), SQLite %s\n", sysconf(_SC_NPROCESSORS_ONLN), cpu,
           sqlite3_libversion());
    printf("scratch: %s (%s), a fresh file per measurement\n", b->dir, fs_name(magic));
    printf("both sides: WAL, synchronous=FULL, same envelope bytes; eskit at its defaults"
           " (snapshot.every=%s)\n\n",
           cfg && es_config_get(cfg, "snapshot.every") ? es_config_get(cfg, "snapshot.every")
                                                       : "?");
    if (cfg)
        es_config_destroy(cfg);
    fflush(stdout);
}

static void add_throughput_figs(bench_t *b, const char *label, double es_rate, double raw,
                                size_t per_txn, double goal) {
    fig_slot_t *s = new_fig(b);
    snprintf(s->name, sizeof s->name, "%s", label);
    char n[32];
    snprintf(s->base, sizeof s->base, "raw INTEGER PRIMARY KEY insert, same bytes, %s rows/txn",
             bench_fmt_count(n, sizeof n, (double)per_txn));
    s->f.value = es_rate;
    s->f.unit = UNIT_EVENTS_S;
    s->f.base = raw;
    s->f.base_unit = UNIT_ROWS_S;
    s->f.goal_kind = goal > 0 ? GOAL_AT_LEAST : GOAL_NONE;
    s->f.goal = goal;
}

static void add_schema_fig(bench_t *b, const raw_rows_t *rows, double same, double raw,
                           size_t per_txn) {
    fig_slot_t *s = new_fig(b);
    char what[64];
    raw_rows_describe(rows, what, sizeof what);
    snprintf(s->name, sizeof s->name, "  raw insert, store's schema (%s)", what);
    char n[32];
    snprintf(s->base, sizeof s->base, "raw INTEGER PRIMARY KEY insert, same bytes, %s rows/txn",
             bench_fmt_count(n, sizeof n, (double)per_txn));
    s->f.value = same;
    s->f.unit = UNIT_ROWS_S;
    s->f.base = raw;
    s->f.base_unit = UNIT_ROWS_S;
}

typedef int raw_run_fn(const char *path, const void *rows, size_t per_txn, double *rate);

static int raw_append_only_run(const char *path, const void *rows, size_t per_txn, double *rate) {
    return raw_append_only(path, rows, per_txn, rate);
}

static int raw_same_schema_run(const char *path, const void *rows, size_t per_txn, double *rate) {
    return raw_same_schema(path, rows, per_txn, rate);
}

/* A raw run takes a fraction of a second, short enough for one stray flush to
 * move it by a third: the median of three runs, each on a fresh file. */
static int median_of_runs(raw_run_fn *run, const char *path, const void *rows, size_t per_txn,
                          double *rate) {
    double r[3];
    for (int i = 0; i < 3; i++)
        if (run(path, rows, per_txn, &r[i]) != 0)
            return -1;
    double lo = r[0] < r[1] ? r[0] : r[1], hi = r[0] < r[1] ? r[1] : r[0];
    *rate = r[2] < lo ? lo : r[2] > hi ? hi : r[2];
    return 0;
}

/* The baselines of a throughput figure, from the bytes and rows its eskit run
 * wrote; the eskit file is deleted before they run. A batch of 1,000 or more is
 * graded against goal. */
static int finish_throughput(bench_t *b, const char *label, const char *es_path,
                             const blobs_t *bytes, double es_rate, size_t per_txn, bool schema,
                             double goal) {
    raw_rows_t rows = {0};
    double raw = 0, same = 0;
    char path[PATH_MAX];
    int rc = schema ? raw_rows_load(es_path, &rows) : 0;
    bench_db_remove(es_path);
    bench_db_path(path, sizeof path, b->dir, "raw");
    progress("the raw baselines of the same bytes (median of 3 runs each)");
    if (rc == 0)
        rc = median_of_runs(raw_append_only_run, path, bytes, per_txn, &raw);
    if (rc == 0 && schema)
        rc = median_of_runs(raw_same_schema_run, path, &rows, per_txn, &same);
    if (rc == 0) {
        add_throughput_figs(b, label, es_rate, raw, per_txn, per_txn >= 1000 ? goal : 0);
        if (schema) {
            add_schema_fig(b, &rows, same, raw, per_txn);
            add_note(b, "%s: %.2f of the raw insert into its own schema", label, es_rate / same);
        }
        char n[32];
        add_note(b, "%s: %s events, mean envelope %.0f bytes", label,
                 bench_fmt_count(n, sizeof n, (double)bytes->n), blobs_mean_len(bytes));
    }
    raw_rows_free(&rows);
    return rc;
}

static int fig_store_append(bench_t *b, size_t n, size_t per_call) {
    run_shape_t shape = {.n = n, .per_call = per_call, .n_streams = 1000, .payload_len = 100};
    blobs_t bytes = {0};
    double rate = 0;
    char path[PATH_MAX], label[96], c1[32], c2[32];
    snprintf(label, sizeof label, "es_store_append, %s ev/call, %s streams",
             bench_fmt_count(c1, sizeof c1, (double)per_call),
             bench_fmt_count(c2, sizeof c2, (double)shape.n_streams));
    progress(label);
    bench_db_path(path, sizeof path, b->dir, "es");
    int rc = run_store_append(path, &shape, &bytes, &rate);
    if (rc == 0)
        rc = finish_throughput(b, label, path, &bytes, rate, per_call, per_call >= 1000,
                               GOAL_APPEND);
    bench_db_remove(path);
    blobs_free(&bytes);
    return rc;
}

static int fig_execute_batch(bench_t *b, size_t n, size_t n_aggregates) {
    run_shape_t shape = {.n = n, .per_call = 1000, .n_streams = n_aggregates};
    blobs_t bytes = {0};
    double rate = 0;
    char path[PATH_MAX], label[96], c1[32];
    snprintf(label, sizeof label, "es_execute_batch, 1,000 Restock/batch, N=%s items",
             bench_fmt_count(c1, sizeof c1, (double)n_aggregates));
    progress(label);
    bench_db_path(path, sizeof path, b->dir, "es");
    int rc = run_execute_batch(path, &shape, &bytes, &rate);
    if (rc == 0)
        rc = finish_throughput(b, label, path, &bytes, rate, shape.per_call, true, GOAL_EXECUTE);
    bench_db_remove(path);
    blobs_free(&bytes);
    return rc;
}

/* One raw commit of the envelope the last es_execute wrote. */
static int raw_commit_same(raw_lat_t *rl, const blobs_t *last, int64_t *ns) {
    size_t len = 0;
    if (last->n == 0) {
        fprintf(stderr, "eskit-bench: es_execute appended no event\n");
        return -1;
    }
    const uint8_t *p = blobs_at(last, 0, &len);
    return raw_lat_one(rl, p, len, ns);
}

/* es_execute and the raw commit alternate (and swap who goes first), so both
 * see the same disk, cache and background state. */
static int measure_latency(run_lat_t *el, raw_lat_t *rl, size_t warm, size_t n, int64_t *es_ns,
                           int64_t *raw_ns) {
    blobs_t last = {0};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < warm + n; i++) {
        int64_t e = 0, r = 0;
        if (i % 2 == 0) {
            rc = run_lat_one(el, &e, &last);
            rc = rc ? rc : raw_commit_same(rl, &last, &r);
        } else {
            rc = raw_commit_same(rl, &last, &r);
            rc = rc ? rc : run_lat_one(el, &e, &last);
        }
        if (i >= warm) {
            es_ns[i - warm] = e;
            raw_ns[i - warm] = r;
        }
    }
    blobs_free(&last);
    return rc;
}

static void add_latency_fig(bench_t *b, const char *what, double es, double raw, bool goal) {
    char name[96], base[96];
    snprintf(name, sizeof name, "es_execute latency %s, one Restock per call", what);
    snprintf(base, sizeof base, "raw BEGIN; INSERT same bytes; COMMIT (fsync'd), %s", what);
    fig_slot_t *s = add_fig(b, name, base, es, raw, UNIT_USEC);
    s->f.goal_kind = goal ? GOAL_AT_MOST : GOAL_NONE;
    s->f.goal = GOAL_LATENCY;
}

static int fig_latency(bench_t *b, size_t warm, size_t n, size_t n_aggregates) {
    run_lat_t el = {0};
    raw_lat_t rl = {0};
    int64_t *es_ns = calloc(n, sizeof *es_ns), *raw_ns = calloc(n, sizeof *raw_ns);
    char es_path[PATH_MAX], raw_path[PATH_MAX];
    int rc = -1;
    progress("es_execute latency beside a raw durable commit");
    bench_db_path(es_path, sizeof es_path, b->dir, "lat-es");
    bench_db_path(raw_path, sizeof raw_path, b->dir, "lat-raw");
    if (es_ns && raw_ns && run_lat_open(es_path, n_aggregates, &el) == 0 &&
        raw_lat_open(raw_path, &rl) == 0)
        rc = measure_latency(&el, &rl, warm, n, es_ns, raw_ns);
    run_lat_close(&el);
    raw_lat_close(&rl);
    if (rc == 0) {
        bench_lat_t e = bench_lat_summary(es_ns, n), r = bench_lat_summary(raw_ns, n);
        add_latency_fig(b, "p50", e.p50_us, r.p50_us, true);
        add_latency_fig(b, "p99", e.p99_us, r.p99_us, false);
        add_latency_fig(b, "mean", e.mean_us, r.mean_us, false);
        add_note(b,
                 "latency: %zu calls each after %zu warm-up calls, over %zu items,"
                 " alternating with the raw commit",
                 n, warm, n_aggregates);
    }
    bench_db_remove(es_path);
    bench_db_remove(raw_path);
    free(es_ns);
    free(raw_ns);
    return rc;
}

static int fig_replay(bench_t *b, size_t small, size_t large) {
    replay_figs_t r1, r4;
    char n1[32], n4[32];
    progress("es_replay into order_summary beside a raw rebuild");
    if (bench_replay(b->dir, small, true, &r1) != 0)
        return -1;
    progress("es_replay peak RSS on a log four times larger");
    if (bench_replay(b->dir, large, false, &r4) != 0)
        return -1;
    bench_fmt_count(n1, sizeof n1, (double)r1.events);
    bench_fmt_count(n4, sizeof n4, (double)r4.events);
    fig_slot_t *s = new_fig(b);
    snprintf(s->name, sizeof s->name, "es_replay order_summary, %s demo events", n1);
    snprintf(s->base, sizeof s->base, "raw: read log rows, decode, upsert same columns");
    s->f.value = r1.es_per_s;
    s->f.unit = UNIT_EVENTS_S;
    s->f.base = r1.raw_per_s;
    s->f.base_unit = UNIT_EVENTS_S;
    s->f.goal_kind = GOAL_AT_LEAST;
    s->f.goal = GOAL_REPLAY;
    s = new_fig(b);
    snprintf(s->name, sizeof s->name, "es_replay peak RSS (MiB), %s events", n4);
    snprintf(s->base, sizeof s->base, "peak RSS (MiB), %s events", n1);
    s->f.value = (double)r4.peak_rss_kib / 1024.0;
    s->f.unit = UNIT_MIB;
    s->f.base = (double)r1.peak_rss_kib / 1024.0;
    s->f.base_unit = UNIT_MIB;
    s->f.goal_kind = GOAL_AT_MOST;
    s->f.goal = 1.10;
    add_note(b,
             "replay: includes the swap into the live read model; peak RSS goal: flat "
             "(ratio <= 1.10) and under %.0f MiB (%s)",
             GOAL_RSS_MIB, (double)r4.peak_rss_kib / 1024.0 < GOAL_RSS_MIB ? "PASS" : "MISS");
    return 0;
}

static int fig_kafka(bench_t *b, size_t n) {
    kafka_figs_t k;
    progress("es_execute over Kafka (mock cluster, 3 brokers) beside raw librdkafka");
    if (bench_kafka(b->dir, n, &k) != 0)
        return -1;
    static const char batched[] = "es_execute_batch over Kafka, 2,000/batch, mock 3 brokers";
    fig_slot_t *s = add_fig(b, batched, "raw librdkafka produce, same bytes, idempotent acks=all",
                            k.es_per_s, k.raw_per_s, UNIT_EVENTS_S);
    s->f.goal_kind = GOAL_AT_LEAST;
    s->f.goal = GOAL_KAFKA;
    /* The same figure beside a baseline making the same hops, and beside the processor's own
     * work with Kafka left out. */
    s = add_fig(b, batched, "raw librdkafka request/reply pipeline, same hops, bytes", k.es_per_s,
                k.pipeline_per_s, UNIT_EVENTS_S);
    s->f.goal_kind = GOAL_AT_LEAST;
    s->f.goal = GOAL_KAFKA_PIPE;
    add_fig(b, batched, "the same commands embedded, as the state store runs them", k.es_per_s,
            k.local_per_s, UNIT_EVENTS_S);
    /* Command to reply beside its limit, the same hops by hand for one command, and beside the
     * one hop of an acknowledged produce. */
    const char *what[2] = {"p50", "p99"};
    double es[2] = {k.latency.p50_us, k.latency.p99_us};
    double one[2] = {k.rr_latency.p50_us, k.rr_latency.p99_us};
    double raw[2] = {k.raw_latency.p50_us, k.raw_latency.p99_us};
    for (int i = 0; i < 2; i++) {
        char name[96], base[96];
        snprintf(name, sizeof name, "es_execute over Kafka, command to reply, %s", what[i]);
        snprintf(base, sizeof base, "raw request/reply of one command, same hops, %s", what[i]);
        s = add_fig(b, name, base, es[i], one[i], UNIT_USEC);
        if (i == 0) {
            s->f.goal_kind = GOAL_AT_MOST;
            s->f.goal = GOAL_KAFKA_ONE;
        }
    }
    for (int i = 0; i < 2; i++) {
        char name[96], base[96];
        snprintf(name, sizeof name, "es_execute over Kafka, command to reply, %s", what[i]);
        snprintf(base, sizeof base, "one acknowledged raw produce, %s", what[i]);
        add_fig(b, name, base, es[i], raw[i], UNIT_USEC);
    }
    add_fig(b, "es_execute over Kafka, 8 threads, 1 command a call",
            "the same calls from one thread", k.threaded_calls_per_s, k.calls_per_s, UNIT_EVENTS_S);
    add_note(b,
             "kafka: %zu events of %zu bytes (mean envelope) through a processor thread; the raw "
             "produce baseline is the median of 5 runs",
             k.events, k.mean_bytes);
    add_note(b,
             "kafka: the pipeline: a caller produces the same CommandEnvelopes, 2,000 at a time, "
             "and waits for their replies; a worker thread produces an event per command "
             "(idempotent, acks=all, acknowledged), then a reply, then commits offsets; no "
             "SQLite, no decide; its one-command line sends one, waits for its delivery, then "
             "its reply, %zu times, with the same client settings as eskit's",
             k.lat_calls);
    add_note(b,
             "kafka: the embedded line runs the same PlaceOrders, 2,000 per call, on an engine "
             "set up as the state store (synchronous=normal, same snapshot policy), no Kafka: a "
             "processor does that work and more, so it caps the first ratio at %.2f here",
             k.raw_per_s > 0 ? k.local_per_s / k.raw_per_s : 0.0);
    return 0;
}

static int fig_saga(bench_t *b, size_t n) {
    saga_figs_t r;
    char c1[32], c2[32];
    progress("orders.fulfilment sagas beside the same commands executed directly");
    if (bench_saga(b->dir, n, &r) != 0)
        return -1;
    char name[96], base[96];
    snprintf(name, sizeof name, "saga orders.fulfilment, %s orders, 1 coordinator",
             bench_fmt_count(c1, sizeof c1, (double)r.sagas));
    snprintf(base, sizeof base, "same commands, es_execute_batch, %zu/batch, step by step",
             r.batch);
    fig_slot_t *f = add_fig(b, name, base, r.saga_per_s, r.direct_per_s, UNIT_SAGAS_S);
    f->f.goal_kind = GOAL_AT_LEAST;
    f->f.goal = GOAL_SAGA;
    add_note(b,
             "saga: idle (no saga active, a poll did nothing) after %.2f s with %lld transitions "
             "not yet published; the figure includes publishing them",
             r.idle_s, r.backlog);
    add_note(b,
             "saga: %s commands each side (2 ReserveStock, AuthorizePayment, ConfirmOrder per "
             "order), %s transitions published; %.2f s with the coordinator, %.2f s direct",
             bench_fmt_count(c1, sizeof c1, (double)r.commands),
             bench_fmt_count(c2, sizeof c2, (double)r.transitions), r.saga_wall_s, r.direct_wall_s);
    saga_kafka_figs_t k;
    size_t nk = n / 5 ? n / 5 : 1;
    progress("the same sagas and commands over Kafka (mock cluster)");
    if (bench_saga_kafka(b->dir, nk, &k) != 0)
        return -1;
    snprintf(name, sizeof name, "saga orders.fulfilment over Kafka, %s orders",
             bench_fmt_count(c1, sizeof c1, (double)k.sagas));
    snprintf(base, sizeof base, "same commands, Kafka es_execute_batch, %zu/batch, step by step",
             r.batch);
    add_fig(b, name, base, k.saga_per_s, k.direct_per_s, UNIT_SAGAS_S);
    add_note(b,
             "saga over Kafka: 3-broker mock cluster, one processor thread, the coordinator's "
             "relay executing through a Kafka caller engine; %.2f s with the coordinator, %.2f s "
             "direct (group joins before either is timed)",
             k.saga_wall_s, k.direct_wall_s);
    return 0;
}

static int fig_upcast(bench_t *b, size_t n) {
    upcast_figs_t u;
    progress("es_replay with upcasters for half the events beside the same replay without");
    if (bench_replay_upcast(b->dir, n, &u) != 0)
        return -1;
    char name[96], count[32], aged[32];
    bench_fmt_count(count, sizeof count, (double)u.events);
    bench_fmt_count(aged, sizeof aged, (double)u.aged);
    snprintf(name, sizeof name, "es_replay, %s events, %s upcast", count, aged);
    fig_slot_t *s = add_fig(b, name, "es_replay of the same log before ageing, no upcaster",
                            u.upcast_per_s, u.plain_per_s, UNIT_EVENTS_S);
    s->f.goal_kind = GOAL_AT_LEAST;
    s->f.goal = GOAL_UPCAST;
    add_note(b, "upcast: each upcaster decodes the stored payload and packs it again (a field "
                "rewrite's cost); one run each");
    return 0;
}

static int fig_schemas(bench_t *b, size_t n_types) {
    schema_figs_t f;
    progress("registering a service's types in the schema catalogue beside a raw insert");
    if (bench_registration(b->dir, n_types, &f) != 0)
        return -1;
    char name[96], base[96];
    snprintf(name, sizeof name, "start-up registration of %zu types (fresh catalogue)", f.types);
    add_fig(b, name, "raw: insert the same canonical bytes, one transaction", f.es_ms, f.raw_ms,
            UNIT_MSEC);
    snprintf(name, sizeof name, "start-up registration of %zu types, all recorded", f.types);
    snprintf(base, sizeof base, "the first registration of them");
    add_fig(b, name, base, f.again_ms, f.es_ms, UNIT_MSEC);
    add_note(b, "schemas: registration includes opening the catalogue and the store; medians of "
                "five runs; no goal (the issue asks for the time)");
    return 0;
}

/* A figure with metrics on beside the same with metrics.enabled=false, medians of both, and a
 * note of how far the pairs spread: a miss inside that spread is the machine's noise. */
static void add_metrics_fig(bench_t *b, const char *what, const bench_alt_t *a) {
    char name[96], base[96];
    snprintf(name, sizeof name, "%s, metrics on (CPU)", what);
    snprintf(base, sizeof base, "the same, metrics.enabled=false (CPU)");
    fig_slot_t *s = add_fig(b, name, base, a->on, a->off, UNIT_EVENTS_S);
    s->f.goal_kind = GOAL_AT_LEAST;
    s->f.goal = GOAL_METRICS;
    add_note(b, "metrics: %s: on/off within each pair %.2f to %.2f, median %.2f", what, a->ratio_lo,
             a->ratio_hi, a->ratio_mid);
}

typedef struct mx_execute {
    const bench_t *b;
    run_shape_t shape;
} mx_execute;

static int mx_execute_run(void *opaque, bool metrics, double *events) {
    mx_execute *x = opaque;
    blobs_t bytes = {0};
    char path[PATH_MAX];
    double per_s = 0;
    x->shape.metrics_off = !metrics;
    bench_db_path(path, sizeof path, x->b->dir, "es");
    int rc = run_execute_batch(path, &x->shape, &bytes, &per_s);
    *events = (double)x->shape.n;
    bench_db_remove(path);
    blobs_free(&bytes);
    return rc;
}

/* What metrics cost the figures they count in: execute embedded and over Kafka, and replay. */
static int fig_metrics(bench_t *b, size_t n_execute, size_t n_kafka, size_t n_replay) {
    mx_execute x = {b, {.n = n_execute, .per_call = 1000, .n_streams = 1000}};
    size_t pairs = b->quick ? 1 : MX_PAIRS, kafka_pairs = b->quick ? 1 : MX_KAFKA_PAIRS;
    kafka_metrics_t k;
    replay_metrics_t r;
    bench_alt_t e;
    char c1[32], c2[32], what[96];
    add_note(b,
             "metrics: each side is the median of %zu runs (Kafka: %zu), on and off alternating "
             "and the order swapped every pair (on/off, off/on, ...); execute: %s Restocks a "
             "run; Kafka: %s PlaceOrders a run, processor and caller both switched, each side on "
             "a mock cluster of its own set up before the first run (the other side idles "
             "meanwhile); catch-up: the live runner (es_runner_new, es_runner_catch_up; "
             "es_replay's runner counts nothing) over the same log each run into a fresh read "
             "model; rates are events per second of the process's CPU time",
             pairs, kafka_pairs, bench_fmt_count(c1, sizeof c1, (double)n_execute),
             bench_fmt_count(c2, sizeof c2, (double)n_kafka));
    progress("es_execute_batch with metrics on beside metrics off, alternating");
    if (bench_alternate(mx_execute_run, &x, pairs, &e) != 0)
        return -1;
    add_metrics_fig(b, "es_execute_batch, 1,000 Restock/batch, N=1,000 items", &e);
    progress("es_execute_batch over Kafka with metrics on beside metrics off, alternating");
    if (bench_kafka_metrics(b->dir, n_kafka, kafka_pairs, &k) != 0)
        return -1;
    add_metrics_fig(b, "es_execute_batch over Kafka, 2,000/batch", &k.alt);
    progress("a runner catching up with metrics on beside metrics off, alternating");
    if (bench_replay_metrics(b->dir, n_replay, pairs, &r) != 0)
        return -1;
    snprintf(what, sizeof what, "runner catch-up, order_summary, %s events",
             bench_fmt_count(c1, sizeof c1, (double)r.events));
    add_metrics_fig(b, what, &r.alt);
    return 0;
}

static int fig_restore(bench_t *b, size_t aggregates) {
    restore_figs_t r;
    progress("processor restore of 1x, 3x and 10x history over the same aggregates (mock)");
    if (bench_restore(b->dir, aggregates, &r) != 0)
        return -1;
    for (size_t s = 1; s < RESTORE_SIZES; s++) {
        char name[96], base[96], c1[32], c2[32];
        snprintf(name, sizeof name, "restore of a partition, %dx history (%s events)",
                 r.multiple[s], bench_fmt_count(c1, sizeof c1, (double)r.events[s]));
        snprintf(base, sizeof base, "the same aggregates at 1x (%s events)",
                 bench_fmt_count(c2, sizeof c2, (double)r.events[0]));
        fig_slot_t *f = add_fig(b, name, base, r.ms[s], r.ms[0], UNIT_MSEC);
        if (r.multiple[s] == 10) {
            f->f.goal_kind = GOAL_AT_MOST;
            f->f.goal = GOAL_RESTORE;
        }
    }
    add_note(b,
             "restore: %zu aggregates a partition, history written without snapshots and one "
             "snapshotted event an aggregate after it (one snapshot each: what compaction keeps; "
             "the mock does not compact); idempotency.window.ms=%lld and a wait past it before "
             "the restore, so the history lies outside the window; times from the processor's "
             "\"restored\" log lines, partition by partition",
             r.aggregates, r.window_ms);
    size_t history = 0;
    for (size_t s = 0; s < RESTORE_SIZES; s++)
        history += r.events[s];
    add_note(b,
             "restore: the fresh owner imported %llu events and %llu snapshots, of partitions "
             "whose history held %zu events",
             r.imported, r.snapshots, history);
    return 0;
}

static const char *const idem_kind[IDEM_KINDS] = {"no caller id", "sequential ids",
                                                  "random UUIDv4 ids"};

/* The in-memory index's bytes after n ids added from empty, by core/src/idindex.c's rule
 * (8-byte slots; an add that would pass 3/4 full regrows to a power of two at most half full,
 * from 1,024): the library does not publish it. */
static double idem_index_bytes(size_t n) {
    size_t cap = 0, count = 0;
    while (count < n) {
        if (count + 1 > cap / 4 * 3)
            for (cap = 1024; cap / 2 < count + 1;)
                cap *= 2;
        size_t room = cap / 4 * 3 - count;
        count += room < n - count ? room : n - count;
    }
    return (double)cap * 8.0;
}

static void add_idem_note(bench_t *b, const char *where, const idem_point_t *p) {
    char ev[32], ids[32], seq[32];
    add_note(b,
             "idempotency: %s: %s events, %s ids remembered (%s sequential, the rest random), "
             "es_commands %.1f MiB (%.0f bytes an id), index %.1f MiB, first batch after "
             "opening %.0f ms; bytes "
             "written per batch: none %.0f KiB, sequential %.0f KiB, random %.0f KiB",
             where, bench_fmt_count(ev, sizeof ev, (double)p->events),
             bench_fmt_count(ids, sizeof ids, (double)p->ids),
             bench_fmt_count(seq, sizeof seq, (double)p->ids_of[IDEM_SEQ]),
             p->table_bytes / 1048576.0, p->ids ? p->table_bytes / (double)p->ids : 0.0,
             idem_index_bytes(p->ids) / 1048576.0, p->first_batch_ms,
             p->written_per_batch[IDEM_NONE] / 1024.0, p->written_per_batch[IDEM_SEQ] / 1024.0,
             p->written_per_batch[IDEM_RANDOM] / 1024.0);
}

/* Issue 16 item 5: random ids beside sequential ones at 2M remembered, and each kind at 6M
 * events beside the same kind on an empty log. */
static int fig_idempotency(bench_t *b) {
    idem_figs_t f;
    char name[96], base[96], c1[32], c2[32];
    progress("es_execute_batch with no, sequential and random command ids as the log grows");
    if (bench_idem(b->dir, b->quick, &f) != 0)
        return -1;
    bench_fmt_count(c1, sizeof c1, (double)f.mid.ids_of[IDEM_RANDOM]);
    snprintf(name, sizeof name, "es_execute_batch, random UUIDv4 ids, %s of them remembered", c1);
    snprintf(base, sizeof base, "the same with sequential ids, %s of them",
             bench_fmt_count(c2, sizeof c2, (double)f.mid.ids_of[IDEM_SEQ]));
    fig_slot_t *s =
        add_fig(b, name, base, f.mid.rate[IDEM_RANDOM], f.mid.rate[IDEM_SEQ], UNIT_EVENTS_S);
    s->f.goal_kind = GOAL_AT_LEAST;
    s->f.goal = GOAL_IDEM_KIND;
    bench_fmt_count(c1, sizeof c1, (double)f.full.events);
    for (int k = 0; k < IDEM_KINDS; k++) {
        snprintf(name, sizeof name, "es_execute_batch, %s, %s events in the log", idem_kind[k], c1);
        snprintf(base, sizeof base, "the same on an empty log");
        s = add_fig(b, name, base, f.full.rate[k], f.empty.rate[k], UNIT_EVENTS_S);
        s->f.goal_kind = GOAL_AT_LEAST;
        s->f.goal = GOAL_IDEM_FLAT;
    }
    /* The same growth without eskit: what the file's size costs a raw writer. */
    snprintf(name, sizeof name, "raw insert, same bytes, 1,000 rows/txn, %s events in the file",
             c1);
    s = add_fig(b, name, "the same into the file on an empty log", f.full.raw_rate,
                f.empty.raw_rate, UNIT_ROWS_S);
    add_note(b,
             "idempotency: %zu Restocks a batch over %s items, %zu timed batches per kind and "
             "point, the kinds taking turns batch by batch; ids grown by executing Restocks that "
             "carry them, 10,000 a batch; events "
             "past them by es_store_append; sqlite.heads.defer.events=0, so the periodic write "
             "of deferred heads does not land on one kind's batches; after each point's "
             "window a raw insert of the same number of 294-byte rows into a table of the same "
             "file, on a connection of its own (tools/bench/idem.c)",
             f.batch, bench_fmt_count(c2, sizeof c2, (double)f.aggregates), f.window);
    add_idem_note(b, "empty log", &f.empty);
    add_idem_note(b, "ids grown", &f.mid);
    add_idem_note(b, "events grown", &f.full);
    return 0;
}

static bool wanted(const bench_t *b, const char *group) {
    return !b->only || !strcmp(b->only, group);
}

static int run_all(bench_t *b) {
    size_t k = b->quick ? 10 : 1; /* --quick divides the counts by 10 */
    int rc = 0;
    if (wanted(b, "append")) {
        rc = fig_store_append(b, 20000 / k, 10);
        rc = rc ? rc : fig_store_append(b, 200000 / k, 1000);
    }
    if (wanted(b, "execute")) {
        rc = rc ? rc : fig_execute_batch(b, 200000 / k, 1000);
        rc = rc ? rc : fig_execute_batch(b, 200000 / k, 10000);
    }
    if (wanted(b, "latency"))
        rc = rc ? rc : fig_latency(b, 50 / k, 2000 / k, 100);
    if (wanted(b, "replay"))
        rc = rc ? rc : fig_replay(b, 1000000 / k, 4000000 / k);
    if (wanted(b, "kafka"))
        rc = rc ? rc : fig_kafka(b, 20000 / k);
    if (wanted(b, "saga"))
        rc = rc ? rc : fig_saga(b, SAGA_ORDERS / k);
    if (wanted(b, "schemas")) {
        rc = rc ? rc : fig_schemas(b, 200);
        rc = rc ? rc : fig_upcast(b, 1000000 / k);
    }
    if (wanted(b, "metrics"))
        rc = rc ? rc : fig_metrics(b, 200000 / k, 20000 / k, 50000 / k);
    if (wanted(b, "restore"))
        rc = rc ? rc : fig_restore(b, 600 / k); /* 10x: 6,000 events, under the mock's 5 MiB */
    if (wanted(b, "idempotency"))
        rc = rc ? rc : fig_idempotency(b);
    return rc;
}

static void print_table(const bench_t *b) {
    report_header(stdout);
    for (size_t i = 0; i < b->n_figs; i++) {
        report_fig_t f = b->figs[i].f;
        f.name = b->figs[i].name;
        f.base_name = b->figs[i].base;
        report_figure(stdout, &f);
    }
    printf("\nratio = value / baseline; goals from docs/design.md \"Performance goals\"."
           " PASS/MISS never changes the exit status.\n");
    for (size_t i = 0; i < b->n_notes; i++)
        report_note(stdout, b->notes[i]);
}

static void remove_scratch(const bench_t *b) {
    static const char *const names[] = {"es", "raw", "lat-es", "lat-raw"};
    char path[PATH_MAX];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (bench_db_path(path, sizeof path, b->dir, names[i]) == 0)
            bench_db_remove(path);
    rmdir(b->dir);
}

int main(int argc, char **argv) {
    bench_t b = {0};
    int a = parse_args(&b, argc, argv);
    if (a != 0)
        return a > 0 ? 0 : 2;
    snprintf(b.dir, sizeof b.dir, "%s/eskit-bench.XXXXXX", b.parent);
    if (!mkdtemp(b.dir)) {
        fprintf(stderr, "eskit-bench: cannot create a scratch directory in %s: %s\n", b.parent,
                strerror(errno));
        return 1;
    }
    print_machine(&b);
    int rc = run_all(&b);
    if (rc == 0 && b.out_of_memory)
        rc = -1;
    if (rc == 0)
        print_table(&b);
    remove_scratch(&b);
    free(b.figs);
    return rc == 0 ? 0 : 1;
}
