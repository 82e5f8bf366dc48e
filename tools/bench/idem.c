/*
 * The idempotency group: es_execute_batch of Restocks, 1,000 a batch over 10,000 items, for
 * three kinds of command id (none, sequential, random UUIDv4), measured on an empty log, again
 * once each id kind has 2M ids remembered, and again at 6M events.
 *
 * Growing the log between the points is most of the run, so it takes the fastest means that
 * leaves the file as executing would: the ids by executing Restocks that carry them, 10,000 a
 * batch (each id is a command, recorded the way the measured ones are), seq and random
 * alternating so both kinds see the same log; the remaining events by es_store_append, 10,000
 * a call, on a stream type of their own (no command ids: appends record none). Each point then
 * measures a window of 1,000-command batches per kind, the kinds taking turns, after the
 * first batch after an open, timed on its own (it builds what the store keeps in memory). The
 * "empty" log has the items' streams already: 20,000 Restocks without ids go first, so that point
 * measures an empty id window, not the creation of 10,000 streams.
 */
#include "idem.h"

#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <eskit/eskit.h>

#include "domain.h"
#include "util.h"

#define AGGREGATES 10000
#define BATCH 1000
#define GROW_BATCH 10000

static const char ITEM_TYPE[] = "inventory.item";

typedef struct idem_run {
    const char *path;
    es_engine_t *engine;
    char (*items)[16];
    char (*ids)[ES_UUID_STR_LEN + 1]; /* one batch's command ids */
    es_command_t *cmds;
    es_result_t *res;
    bench_rng_t pick, uuid;
    size_t next_seq, events;
    size_t ids_of[IDEM_KINDS];
    Inventory__V1__Restock restock;
} idem_run_t;

static es_config_t *config(const char *path) {
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    es_err rc = cfg ? es_config_set(cfg, "db", path, &err) : ES_ENOMEM;
    if (rc == ES_OK)
        rc = es_config_set(cfg, "sqlite.synchronous", "full", &err);
    /* The kinds take turns batch by batch, and a writer's deferred heads go to es_heads in one
     * commit every 16,384 events: whichever kind's batch that is pays for all (in the same order
     * every run, the random ids' windows took most: 0.70 of sequential at 2M ids with the
     * default, 0.86 with this). The group measures what ids cost, so every commit writes its
     * heads, as before deferred heads; the execute group measures the default. */
    if (rc == ES_OK)
        rc = es_config_set(cfg, "sqlite.heads.defer.events", "0", &err);
    if (rc != ES_OK) {
        bench_fail("configuring the store", rc, &err);
        es_config_destroy(cfg);
        return NULL;
    }
    return cfg;
}

static int open_engine(idem_run_t *r) {
    es_config_t *cfg = config(r->path);
    es_error_t err = {0};
    if (!cfg)
        return -1;
    es_err rc = es_engine_new(cfg, &r->engine, &err);
    es_config_destroy(cfg);
    if (rc == ES_OK && (rc = demo_register_all(r->engine, &err)) != ES_OK) {
        es_engine_destroy(r->engine);
        r->engine = NULL;
    }
    return rc == ES_OK ? 0 : bench_fail("opening the engine", rc, &err);
}

static uint64_t rand64(bench_rng_t *g) {
    return (uint64_t)bench_rng_below(g, UINT32_MAX) << 32 | bench_rng_below(g, UINT32_MAX);
}

/* A UUIDv4 as clients make them: 122 random bits. */
static void uuid4(bench_rng_t *g, char *out) {
    uint64_t hi = rand64(g), lo = rand64(g);
    snprintf(out, ES_UUID_STR_LEN + 1,
             "%08" PRIx64 "-%04" PRIx64 "-4%03" PRIx64 "-%04" PRIx64 "-%012" PRIx64, hi >> 32,
             (hi >> 16) & 0xffff, hi & 0xfff, (uint64_t)((lo >> 48 & 0x3fff) | 0x8000),
             (uint64_t)(lo & 0xffffffffffffULL));
}

/* The commands of one batch of n Restocks of the given kind of id. Made before the batch is
 * timed: formatting a thousand ids is the client's work, not the store's. */
static void make_batch(idem_run_t *r, int kind, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const char *id = NULL;
        if (kind == IDEM_SEQ)
            snprintf(r->ids[i], sizeof r->ids[i], "cmd-%012zu", r->next_seq++);
        else if (kind == IDEM_RANDOM)
            uuid4(&r->uuid, r->ids[i]);
        if (kind != IDEM_NONE)
            id = r->ids[i];
        r->cmds[i] = (es_command_t){.aggregate_type = ITEM_TYPE,
                                    .aggregate_id = r->items[bench_rng_below(&r->pick, AGGREGATES)],
                                    .message = &r->restock.base,
                                    .command_id = id};
    }
}

/* Executes the batch make_batch made; counts its events. */
static int execute_batch(idem_run_t *r, int kind, size_t n) {
    es_error_t err = {0};
    memset(r->res, 0, n * sizeof *r->res);
    es_err rc = es_execute_batch(r->engine, r->cmds, n, r->res, &err);
    int out = rc == ES_OK ? 0 : bench_fail("es_execute_batch", rc, &err);
    for (size_t i = 0; i < n; i++) {
        if (out == 0 && (r->res[i].outcome != ES_OUTCOME_ACCEPTED || r->res[i].duplicate)) {
            fprintf(stderr, "eskit-bench: Restock %zu was not executed anew: %s\n", i,
                    r->res[i].reason ? r->res[i].reason : "(duplicate)");
            out = -1;
        }
        r->events += r->res[i].n_events;
        es_result_clear(&r->res[i]);
    }
    if (kind != IDEM_NONE)
        r->ids_of[kind] += n;
    return out;
}

static int run_batch(idem_run_t *r, int kind, size_t n) {
    make_batch(r, kind, n);
    return execute_batch(r, kind, n);
}

/* Bytes this process has passed to write calls so far. */
static double written_bytes(void) {
    FILE *f = fopen("/proc/self/io", "r");
    char line[128];
    double v = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "wchar:", 6))
            v = strtod(line + 6, NULL);
    if (f)
        fclose(f);
    return v;
}

/* A window of batches of each kind, the kinds taking turns batch by batch so that all see the
 * same machine (a shared one drifts by more than the differences measured), after one batch
 * of each not timed: events per second and bytes written per batch, per kind. Each round
 * starts at a kind drawn at random: in a fixed order the WAL's checkpoint (every ~3 batches)
 * fell on the same kind every time. */
static int measure(idem_run_t *r, size_t batches, idem_point_t *p) {
    int64_t ns[IDEM_KINDS] = {0};
    size_t events[IDEM_KINDS] = {0};
    double written[IDEM_KINDS] = {0};
    bench_rng_t order = {0x853C49E6748FEA9BULL};
    for (size_t i = 0; i <= batches; i++)
        for (int j = 0, first = (int)bench_rng_below(&order, IDEM_KINDS); j < IDEM_KINDS; j++) {
            int k = (first + j) % IDEM_KINDS;
            size_t before = r->events;
            make_batch(r, k, BATCH);
            double w0 = written_bytes();
            int64_t t0 = bench_now_ns();
            if (execute_batch(r, k, BATCH) != 0)
                return -1;
            if (i == 0)
                continue;
            ns[k] += bench_now_ns() - t0;
            written[k] += written_bytes() - w0;
            events[k] += r->events - before;
        }
    for (int k = 0; k < IDEM_KINDS; k++) {
        p->rate[k] = (double)events[k] * 1e9 / (double)(ns[k] > 0 ? ns[k] : 1);
        p->written_per_batch[k] = written[k] / (double)batches;
    }
    return 0;
}

static double query_double(sqlite3 *db, const char *sql) {
    sqlite3_stmt *s = NULL;
    double v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_double(s, 0);
    sqlite3_finalize(s);
    return v;
}

/* The point's sizes, read beside the open engine. */
static void sizes(const idem_run_t *r, idem_point_t *p) {
    sqlite3 *db = NULL;
    p->events = r->events;
    memcpy(p->ids_of, r->ids_of, sizeof p->ids_of);
    if (sqlite3_open_v2(r->path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        p->ids = (size_t)query_double(db, "SELECT count(*) FROM es_commands");
        p->table_bytes = query_double(db, "SELECT sum(pgsize) FROM dbstat WHERE name = "
                                          "'es_commands'");
    }
    sqlite3_close(db);
}

/* One Restock without an id for every item, in one batch: the engine's write cache
 * (cache.aggregates, 10,000) then holds them all. The empty point's engine created the items and
 * holds them; the last point's was opened again after the appends, and without this its timed
 * batches would load two thirds of the items from their snapshots: a cost of the reopen (timed
 * on its own, first_batch_ms), not of the log's size. */
static int warm_items(idem_run_t *r) {
    es_error_t err = {0};
    for (size_t i = 0; i < AGGREGATES; i++)
        r->cmds[i] = (es_command_t){
            .aggregate_type = ITEM_TYPE, .aggregate_id = r->items[i], .message = &r->restock.base};
    memset(r->res, 0, AGGREGATES * sizeof *r->res);
    es_err rc = es_execute_batch(r->engine, r->cmds, AGGREGATES, r->res, &err);
    for (size_t i = 0; i < AGGREGATES; i++) {
        r->events += r->res[i].n_events;
        es_result_clear(&r->res[i]);
    }
    return rc == ES_OK ? 0 : bench_fail("es_execute_batch", rc, &err);
}

/* The limit beside each point: BATCH rows of an envelope's size a transaction, appended by a
 * connection of its own to a table of the same file (WAL, synchronous=FULL), batches timed
 * after one that is not. Run after the kinds' window, not between its batches: another
 * connection's commit makes the store read its caches again. What a larger file costs the
 * writes themselves (the kernel's page cache, the checkpoints) shows here as well. */
static int raw_window(const idem_run_t *r, size_t batches, idem_point_t *p) {
    sqlite3 *db = NULL;
    sqlite3_stmt *ins = NULL;
    uint8_t row[294];
    bench_rng_t g = {0x2545F4914F6CDD1DULL};
    int64_t ns = 0;
    for (size_t i = 0; i < sizeof row; i++)
        row[i] = (uint8_t)rand64(&g);
    int ok =
        sqlite3_open(r->path, &db) == SQLITE_OK &&
        sqlite3_exec(db,
                     "PRAGMA synchronous=FULL; CREATE TABLE IF NOT EXISTS bench_raw(id "
                     "INTEGER PRIMARY KEY, b BLOB NOT NULL)",
                     NULL, NULL, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "INSERT INTO bench_raw(b) VALUES (?1)", -1, &ins, NULL) == SQLITE_OK;
    for (size_t i = 0; ok && i <= batches; i++) {
        int64_t t0 = bench_now_ns();
        ok = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK;
        for (size_t j = 0; ok && j < BATCH; j++) {
            row[j % sizeof row] ^= 1; /* no two rows the same */
            sqlite3_bind_blob(ins, 1, row, sizeof row, SQLITE_STATIC);
            ok = sqlite3_step(ins) == SQLITE_DONE;
            sqlite3_reset(ins);
        }
        ok = ok && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
        if (i > 0)
            ns += bench_now_ns() - t0;
    }
    if (!ok)
        fprintf(stderr, "eskit-bench: raw insert into %s: %s\n", r->path, sqlite3_errmsg(db));
    p->raw_rate = (double)(batches * BATCH) * 1e9 / (double)(ns > 0 ? ns : 1);
    sqlite3_finalize(ins);
    sqlite3_close(db);
    return ok ? 0 : -1;
}

static int measure_point(idem_run_t *r, size_t window, idem_point_t *p) {
    make_batch(r, IDEM_RANDOM, BATCH);
    int64_t t0 = bench_now_ns();
    if (execute_batch(r, IDEM_RANDOM, BATCH) != 0)
        return -1;
    p->first_batch_ms = (double)(bench_now_ns() - t0) / 1e6;
    if (warm_items(r) != 0 || measure(r, window, p) != 0)
        return -1;
    sizes(r, p);
    return raw_window(r, window, p);
}

/* Executes id'd Restocks, seq and random alternating, until each kind has n ids. */
static int grow_ids(idem_run_t *r, size_t n) {
    while (r->ids_of[IDEM_SEQ] < n || r->ids_of[IDEM_RANDOM] < n)
        for (int k = IDEM_SEQ; k <= IDEM_RANDOM; k++)
            if (r->ids_of[k] < n && run_batch(r, k, GROW_BATCH) != 0)
                return -1;
    return 0;
}

/* Appends events up to n in the log, with the engine closed, and opens it again. */
static int grow_events(idem_run_t *r, size_t n) {
    es_config_t *cfg = config(r->path);
    es_store_t *store = NULL;
    es_error_t err = {0};
    es_new_event_t *evs = calloc(GROW_BATCH, sizeof *evs);
    static const uint8_t payload[64] = {1, 2, 3};
    char stream[32];
    int rc = -1;
    es_engine_destroy(r->engine);
    r->engine = NULL;
    es_err e = cfg && evs ? es_store_new(cfg, &store, &err) : ES_ENOMEM;
    for (size_t i = 0; e == ES_OK && r->events < n; i++) {
        size_t k = n - r->events < GROW_BATCH ? n - r->events : GROW_BATCH;
        for (size_t j = 0; j < k; j++)
            evs[j] = (es_new_event_t){
                .event_type = "bench.v1.Blob", .payload = payload, .payload_len = sizeof payload};
        snprintf(stream, sizeof stream, "filler-%zu", i % AGGREGATES);
        e = es_store_append(store, "bench.stream", stream, ES_EXPECT_ANY, 0, evs, k, NULL, &err);
        if (e == ES_OK)
            r->events += k;
    }
    if (e == ES_OK)
        rc = 0;
    else
        bench_fail("es_store_append", e, &err);
    es_store_destroy(store);
    es_config_destroy(cfg);
    free(evs);
    return rc == 0 ? open_engine(r) : rc;
}

int bench_idem(const char *dir, bool quick, idem_figs_t *out) {
    idem_run_t r = {.pick = {0x9E3779B97F4A7C15ULL}, .uuid = {0xD1B54A32D192ED03ULL}};
    char path[4096];
    size_t div = quick ? 100 : 1;
    int rc = -1;
    memset(out, 0, sizeof *out);
    out->batch = BATCH;
    out->aggregates = AGGREGATES;
    /* 100 batches a kind and point (~0.5 s of each kind's timing): with 30 the empty log's
     * rates moved by 10% from one full run to the next, as much as the figure's distance. */
    out->window = quick ? 3 : 100;
    inventory__v1__restock__init(&r.restock);
    r.restock.quantity = 1;
    r.items = calloc(AGGREGATES, sizeof *r.items);
    r.ids = calloc(GROW_BATCH, sizeof *r.ids);
    r.cmds = calloc(GROW_BATCH, sizeof *r.cmds);
    r.res = calloc(GROW_BATCH, sizeof *r.res);
    if (!r.items || !r.ids || !r.cmds || !r.res || bench_db_path(path, sizeof path, dir, "es"))
        goto out;
    for (size_t i = 0; i < AGGREGATES; i++)
        snprintf(r.items[i], sizeof r.items[i], "item-%05zu", i);
    r.path = path;
    bench_db_remove(path);
    if (open_engine(&r))
        goto out;
    for (size_t i = 0; i < 20 / div + 1; i++) /* the items' streams created: "empty" is of ids */
        if (run_batch(&r, IDEM_NONE, BATCH) != 0)
            goto out;
    if (measure_point(&r, out->window, &out->empty))
        goto out;
    fprintf(stderr, "eskit-bench: growing the log to %zu ids of each kind\n", 2000000 / div);
    if (grow_ids(&r, 2000000 / div) || measure_point(&r, out->window, &out->mid))
        goto out;
    fprintf(stderr, "eskit-bench: growing the log to %zu events\n", 6000000 / div);
    if (grow_events(&r, 6000000 / div) || measure_point(&r, out->window, &out->full))
        goto out;
    rc = 0;
out:
    es_engine_destroy(r.engine);
    bench_db_remove(path);
    free(r.items);
    free(r.ids);
    free(r.cmds);
    free(r.res);
    return rc;
}
