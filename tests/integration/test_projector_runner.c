/*
 * Projector runners as a service runs them: test modules loaded from .so
 * files (tests/modules: counter, poison, crashy), runner processes killed
 * with SIGKILL or dying on their own, poison in the log, and a replay while
 * the log grows and readers query the live read model.
 *
 * The read models are checked by query against the log itself: every event
 * of the test aggregate is one row of tp_applied (keyed by aggregate id and
 * version, so applying an event twice fails loudly), and tp_totals agrees
 * with tp_applied inside every read transaction.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "tp_format.h"

#define COUNTER_SO TEST_MODULES_DIR "/counter.so"
#define POISON_SO TEST_MODULES_DIR "/poison.so"
#define CRASHY_SO TEST_MODULES_DIR "/crashy.so"

#define SEC 1000000LL
#define MAX_SETS 16

/* One test's world: a store file, a live read model beside it, and the config both use. The
 * settings made with fx_set are also handed to every runner process the test starts. */
typedef struct fixture {
    char *dir;
    char *db;
    char *rm;
    char *child_log; /* stdout and stderr of the runner processes */
    es_config_t *cfg;
    es_store_t *store;
    char *sets[MAX_SETS]; /* "key=value" */
    size_t n_sets;
} fixture;

static void fx_set(fixture *fx, const char *key, const char *value) {
    es_error_t err = {0};
    cr_assert_eq(es_config_set(fx->cfg, key, value, &err), ES_OK, "%s", err.message);
    cr_assert_lt(fx->n_sets, MAX_SETS);
    cr_assert_geq(asprintf(&fx->sets[fx->n_sets++], "%s=%s", key, value), 0);
}

static void fx_open(fixture *fx) {
    memset(fx, 0, sizeof *fx);
    fx->dir = tu_tempdir();
    cr_assert_not_null(fx->dir);
    fx->db = tu_path(fx->dir, "events.db");
    fx->rm = tu_path(fx->dir, "read.db");
    fx->child_log = tu_path(fx->dir, "runner.log");
    fx->cfg = es_config_new();
    cr_assert_not_null(fx->cfg);
    fx_set(fx, "db", fx->db);
    fx_set(fx, "readmodel.db", fx->rm);
    es_error_t err = {0};
    cr_assert_eq(es_store_new(fx->cfg, &fx->store, &err), ES_OK, "%s", err.message);
}

static void fx_close(fixture *fx) {
    es_store_destroy(fx->store);
    es_config_destroy(fx->cfg);
    for (size_t i = 0; i < fx->n_sets; i++)
        free(fx->sets[i]);
    tu_rmtree(fx->dir);
    free(fx->dir);
    free(fx->db);
    free(fx->rm);
    free(fx->child_log);
}

/* Appends one event to TP_TYPE/id; returns its log offset. */
static int64_t append_event(es_store_t *store, const char *id, const char *event_type,
                            const void *payload, size_t len) {
    es_error_t err = {0};
    es_new_event_t ev = {.event_type = event_type, .payload = payload, .payload_len = len};
    es_append_result_t res = {0};
    cr_assert_eq(es_store_append(store, TP_TYPE, id, ES_EXPECT_ANY, 0, &ev, 1, &res, &err), ES_OK,
                 "appending to %s: %s", id, err.message);
    return res.first_offset;
}

static int64_t append_added(es_store_t *store, const char *id, int64_t amount) {
    char payload[TP_MAX_PAYLOAD];
    size_t len = tp_encode(payload, amount);
    return append_event(store, id, TP_EVENT_ADDED, payload, len);
}

/* Appends n Added events (amounts 1..n) to id in one append. */
static void append_many(es_store_t *store, const char *id, size_t n) {
    char(*payloads)[TP_MAX_PAYLOAD] = calloc(n, sizeof *payloads);
    es_new_event_t *evs = calloc(n, sizeof *evs);
    cr_assert(payloads && evs);
    for (size_t i = 0; i < n; i++) {
        size_t len = tp_encode(payloads[i], (int64_t)i + 1);
        evs[i] = (es_new_event_t){.event_type = TP_EVENT_ADDED,
                                  .payload = (const uint8_t *)payloads[i],
                                  .payload_len = len};
    }
    es_error_t err = {0};
    cr_assert_eq(es_store_append(store, TP_TYPE, id, ES_EXPECT_ANY, 0, evs, n, NULL, &err), ES_OK,
                 "appending to %s: %s", id, err.message);
    free(evs);
    free(payloads);
}

/* Writes an es_events row whose envelope is bytes right after the event at offset after (the
 * newest of its stream), as the next version of that stream, the way the embedded log stores
 * events but leaving the stream's head alone: the row is in the log for consumers, and the
 * stream stays readable. Returns the row's offset. */
static int64_t insert_corrupt_row(const char *db_path, int64_t after, const void *bytes,
                                  size_t len) {
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    cr_assert_eq(sqlite3_open(db_path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "INSERT INTO es_events(stream, version, prev, type_id, "
                                    "envelope) SELECT stream, version + 1, pos, type_id, ?2 "
                                    "FROM es_events WHERE pos = ?1",
                                    -1, &s, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_bind_int64(s, 1, after);
    sqlite3_bind_blob(s, 2, bytes, (int)len, SQLITE_STATIC);
    cr_assert_eq(sqlite3_step(s), SQLITE_DONE, "%s", sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_changes(db), 1, "no event at offset %lld", (long long)after);
    int64_t pos = sqlite3_last_insert_rowid(db);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return pos;
}

static sqlite3 *open_model(const char *path) {
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK,
                 "opening the read model %s: %s", path, db ? sqlite3_errmsg(db) : "no memory");
    sqlite3_busy_timeout(db, 10000);
    return db;
}

/* The single integer sql yields (with ?1 bound to text1 when not NULL). */
static long long query_int(sqlite3 *db, const char *sql, const char *text1) {
    sqlite3_stmt *s = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db));
    if (text1)
        sqlite3_bind_text(s, 1, text1, -1, SQLITE_STATIC);
    cr_assert_eq(sqlite3_step(s), SQLITE_ROW, "%s: %s", sql, sqlite3_errmsg(db));
    long long v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

static long long rows_of(sqlite3 *db, const char *id) {
    return query_int(db, "SELECT COUNT(*) FROM tp_applied WHERE agg_id = ?1", id);
}

/* What one read transaction sees of a counting model. */
typedef struct model_sums {
    long long rows, events, row_amount, total_amount;
} model_sums;

static const char sums_sql[] =
    "SELECT (SELECT COUNT(*) FROM tp_applied), (SELECT COALESCE(SUM(events), 0) FROM tp_totals),"
    " (SELECT COALESCE(SUM(amount), 0) FROM tp_applied),"
    " (SELECT COALESCE(SUM(amount), 0) FROM tp_totals)";

/* Reads the sums inside one read transaction; an SQLite result code, SQLITE_OK on success. */
static int read_sums(sqlite3 *db, sqlite3_stmt *s, model_sums *out) {
    int rc = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *out = (model_sums){sqlite3_column_int64(s, 0), sqlite3_column_int64(s, 1),
                            sqlite3_column_int64(s, 2), sqlite3_column_int64(s, 3)};
        rc = SQLITE_OK;
    }
    sqlite3_reset(s);
    int rc2 = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    return rc != SQLITE_OK ? rc : rc2;
}

static bool sums_consistent(const model_sums *m) {
    return m->rows == m->events && m->row_amount == m->total_amount;
}

typedef struct log_check {
    sqlite3_stmt *lookup;
    const char *skip_id; /* an aggregate that must be absent from the model */
    long long events, matched;
    int bad;
    char first_bad[300];
} log_check;

static int check_logged_event(const es_event_t *ev, void *opaque) {
    log_check *c = opaque;
    int64_t amount = -1;
    tp_decode(ev->payload, ev->payload_len, &amount);
    c->events++;
    sqlite3_bind_text(c->lookup, 1, ev->aggregate_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(c->lookup, 2, (sqlite3_int64)ev->version);
    int rc = sqlite3_step(c->lookup);
    bool skip = c->skip_id && !strcmp(ev->aggregate_id, c->skip_id);
    bool ok;
    if (skip)
        ok = rc == SQLITE_DONE;
    else
        ok = rc == SQLITE_ROW &&
             !strcmp((const char *)sqlite3_column_text(c->lookup, 0), TP_TOPIC) &&
             sqlite3_column_int(c->lookup, 1) == ev->partition &&
             sqlite3_column_int64(c->lookup, 2) == ev->offset &&
             sqlite3_column_int64(c->lookup, 3) == amount;
    if (ok && !skip)
        c->matched++;
    if (!ok && c->bad++ == 0)
        snprintf(c->first_bad, sizeof c->first_bad,
                 "event %s v%llu at offset %lld (amount %lld) is %s in the read model",
                 ev->aggregate_id, (unsigned long long)ev->version, (long long)ev->offset,
                 (long long)amount,
                 skip               ? "present, but should not be"
                 : rc == SQLITE_ROW ? "different"
                                    : "missing");
    sqlite3_reset(c->lookup);
    return 0;
}

/* The read model at rm holds exactly the log's events of TP_TYPE (but skip_id's), each with its
 * topic, partition, offset and amount, and its totals agree with its rows. Returns the number of
 * events the log holds. */
static long long assert_model_matches_log(es_store_t *store, const char *rm, const char *skip_id) {
    sqlite3 *db = open_model(rm);
    log_check c = {.skip_id = skip_id};
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT topic, part, off, amount FROM tp_applied "
                                    "WHERE agg_id = ?1 AND version = ?2",
                                    -1, &c.lookup, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    const char *const types[] = {TP_TYPE, NULL};
    es_error_t err = {0};
    cr_assert_eq(es_store_read_log(store, types, 0, 0, check_logged_event, &c, NULL, &err), ES_OK,
                 "%s", err.message);
    sqlite3_finalize(c.lookup);
    cr_assert_eq(c.bad, 0, "%d events differ between log and read model %s; first: %s", c.bad, rm,
                 c.first_bad);
    long long rows = query_int(db, "SELECT COUNT(*) FROM tp_applied", NULL);
    cr_assert_eq(rows, c.matched, "the read model holds %lld rows, the log %lld matching events",
                 rows, c.matched);
    long long off_totals = query_int(
        db,
        "SELECT COUNT(*) FROM tp_totals t WHERE t.events != (SELECT COUNT(*) FROM tp_applied a "
        "WHERE a.agg_id = t.agg_id) OR t.amount != (SELECT SUM(amount) FROM tp_applied a WHERE "
        "a.agg_id = t.agg_id)",
        NULL);
    cr_assert_eq(off_totals, 0, "%lld aggregates' totals disagree with their rows", off_totals);
    long long aggs_missing = query_int(db,
                                       "SELECT COUNT(DISTINCT agg_id) FROM tp_applied WHERE agg_id "
                                       "NOT IN (SELECT agg_id FROM tp_totals)",
                                       NULL);
    cr_assert_eq(aggs_missing, 0, "%lld aggregates have rows but no total", aggs_missing);
    sqlite3_close(db);
    return c.events;
}

/* Polls until a poll consumes nothing. */
static void drain(es_runner_t *r) {
    int64_t deadline = es_now_us() + 60 * SEC;
    es_error_t err = {0};
    size_t n = 0;
    do {
        cr_assert_lt(es_now_us(), deadline, "the runner did not drain the log within 60 s");
        es_err rc = es_runner_poll(r, 50, &n, &err);
        cr_assert_eq(rc, ES_OK, "es_runner_poll: %s: %s", es_strerror(rc), err.message);
    } while (n > 0);
}

static es_projector_module_t *load_module(const es_config_t *cfg, const char *path) {
    es_projector_module_t *mod = NULL;
    es_error_t err = {0};
    es_err rc = es_projector_load(cfg, path, &mod, &err);
    cr_assert_eq(rc, ES_OK, "loading %s: %s: %s", path, es_strerror(rc), err.message);
    return mod;
}

static es_runner_t *new_runner(const es_config_t *cfg, const es_projector_def *def) {
    es_runner_t *r = NULL;
    es_error_t err = {0};
    es_err rc = es_runner_new(cfg, def, &r, &err);
    cr_assert_eq(rc, ES_OK, "es_runner_new: %s: %s", es_strerror(rc), err.message);
    return r;
}

/* The tail of the runner processes' output, for failure messages (static buffer). */
static const char *child_output(const fixture *fx) {
    static char buf[1200];
    buf[0] = '\0';
    FILE *f = fopen(fx->child_log, "r");
    if (!f)
        return buf;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Starts run_projector on module with the fixture's settings (and no core dumps). */
static pid_t spawn_runner(const fixture *fx, const char *module, bool follow) {
    const char *argv[4 + 2 * MAX_SETS];
    size_t argc = 0;
    argv[argc++] = RUN_PROJECTOR_PATH;
    if (follow)
        argv[argc++] = "--follow";
    for (size_t i = 0; i < fx->n_sets; i++) {
        argv[argc++] = "--set";
        argv[argc++] = fx->sets[i];
    }
    argv[argc++] = module;
    argv[argc] = NULL;
    pid_t pid = fork();
    cr_assert_neq(pid, -1, "fork: %s", strerror(errno));
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        int fd = open(fx->child_log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* The child's wait status once it ends; past the deadline it is killed and the test fails. */
static int wait_child(const fixture *fx, pid_t pid, int64_t deadline_us) {
    int status = 0;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            return status;
        cr_assert(w == 0 || errno == EINTR, "waitpid: %s", strerror(errno));
        if (es_now_us() > deadline_us) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            cr_assert_fail("run_projector did not finish in time; its output:\n%s",
                           child_output(fx));
        }
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* Runs run_projector to a drained log; it must exit 0. */
static void drain_in_child(const fixture *fx, const char *module) {
    int status = wait_child(fx, spawn_runner(fx, module, false), es_now_us() + 60 * SEC);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "run_projector %s ended with status 0x%x; its output:\n%s", module, status,
              child_output(fx));
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Appends batches of 1..max_batch Added events to n_aggs aggregates until stopped (or cap
 * events), from its own store handle; pause_us between appends keeps it a steady trickle. */
typedef struct writer {
    const char *db;
    unsigned seed;
    int n_aggs, max_batch;
    long pause_us;
    long long cap;
    atomic_bool stop;
    atomic_llong appended;
    es_err rc;
    char message[512];
    pthread_t thread;
} writer_t;

static void *writer_main(void *arg) {
    writer_t *w = arg;
    es_error_t err = {0};
    es_config_t *cfg = es_config_new();
    es_store_t *store = NULL;
    w->rc = es_config_set(cfg, "db", w->db, &err);
    if (w->rc == ES_OK)
        w->rc = es_store_new(cfg, &store, &err);
    char payloads[16][TP_MAX_PAYLOAD];
    es_new_event_t evs[16];
    while (w->rc == ES_OK && !atomic_load(&w->stop) && atomic_load(&w->appended) < w->cap) {
        char id[32];
        snprintf(id, sizeof id, "agg-%03d", (int)(rand_r(&w->seed) % (unsigned)w->n_aggs));
        size_t k = 1 + rand_r(&w->seed) % (unsigned)w->max_batch;
        for (size_t i = 0; i < k; i++) {
            size_t len = tp_encode(payloads[i], 1 + rand_r(&w->seed) % 100);
            evs[i] = (es_new_event_t){.event_type = TP_EVENT_ADDED,
                                      .payload = (const uint8_t *)payloads[i],
                                      .payload_len = len};
        }
        w->rc = es_store_append(store, TP_TYPE, id, ES_EXPECT_ANY, 0, evs, k, NULL, &err);
        if (w->rc == ES_OK)
            atomic_fetch_add(&w->appended, (long long)k);
        if (w->pause_us)
            usleep((useconds_t)w->pause_us);
    }
    if (w->rc != ES_OK)
        snprintf(w->message, sizeof w->message, "%s", err.message);
    es_store_destroy(store);
    es_config_destroy(cfg);
    return NULL;
}

static void writer_start(writer_t *w, const char *db, unsigned seed, int max_batch, long pause_us) {
    memset(w, 0, sizeof *w);
    w->db = db;
    w->seed = seed;
    w->n_aggs = 40;
    w->max_batch = max_batch < 16 ? max_batch : 16;
    w->pause_us = pause_us;
    w->cap = 200000;
    cr_assert_eq(pthread_create(&w->thread, NULL, writer_main, w), 0);
}

static long long writer_stop(writer_t *w) {
    atomic_store(&w->stop, true);
    pthread_join(w->thread, NULL);
    cr_assert_eq(w->rc, ES_OK, "the writer failed: %s: %s", es_strerror(w->rc), w->message);
    return atomic_load(&w->appended);
}

static es_dlq_entry_t *dlq_list(const es_config_t *cfg, const char *projector, bool all,
                                size_t *n) {
    es_dlq_entry_t *entries = NULL;
    es_error_t err = {0};
    es_err rc = es_dlq_list(cfg, projector, all, &entries, n, &err);
    cr_assert_eq(rc, ES_OK, "es_dlq_list: %s: %s", es_strerror(rc), err.message);
    return entries;
}

static unsigned test_seed(void) {
    const char *s = getenv("ESKIT_CRASH_SEED");
    return s ? (unsigned)strtoul(s, NULL, 10) : (unsigned)es_now_us();
}

TestSuite(projector_runner, .timeout = 120);

/* The kills are unrelated to any event, so the crash-loop guard is set out of reach here: this
 * test is about exactly-once application across restarts; the guard has its own test. */
#define KILLS 25

Test(projector_runner, a_runner_killed_at_random_points_applies_every_event_exactly_once) {
    fixture fx;
    fx_open(&fx);
    fx_set(&fx, "projector.batch.size", "50");
    fx_set(&fx, "projector.crash.restarts", "1000000");
    unsigned seed = test_seed();
    for (int i = 0; i < 40; i++) {
        char id[32];
        snprintf(id, sizeof id, "agg-%03d", i);
        append_many(fx.store, id, 200);
    }

    writer_t w;
    writer_start(&w, fx.db, seed, 8, 1000);
    long long rows_at_kill[KILLS];
    sqlite3 *probe = NULL;
    for (int k = 0; k < KILLS; k++) {
        pid_t pid = spawn_runner(&fx, COUNTER_SO, true);
        /* Anywhere from start-up to a few batches in. */
        sleep_ms(rand_r(&seed) % 150);
        kill(pid, SIGKILL);
        int status = wait_child(&fx, pid, es_now_us() + 30 * SEC);
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                  "kill %d: the runner ended on its own (status 0x%x); its output:\n%s", k, status,
                  child_output(&fx));
        if (!probe && access(fx.rm, F_OK) == 0)
            probe = open_model(fx.rm);
        rows_at_kill[k] = -1;
        if (probe &&
            query_int(probe, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'tp_applied'",
                      NULL) == 1) {
            model_sums m = {0};
            sqlite3_stmt *s = NULL;
            cr_assert_eq(sqlite3_prepare_v2(probe, sums_sql, -1, &s, NULL), SQLITE_OK);
            cr_assert_eq(read_sums(probe, s, &m), SQLITE_OK, "%s", sqlite3_errmsg(probe));
            sqlite3_finalize(s);
            cr_assert(sums_consistent(&m),
                      "after kill %d the model is torn: %lld rows, totals count %lld", k, m.rows,
                      m.events);
            rows_at_kill[k] = m.rows;
        }
    }
    long long appended = writer_stop(&w);
    if (probe)
        sqlite3_close(probe);
    cr_log_info("seed %u: %lld events appended during %d kills; rows after kills 1, %d, %d: %lld, "
                "%lld, %lld",
                seed, appended, KILLS, KILLS / 2, KILLS, rows_at_kill[0], rows_at_kill[KILLS / 2],
                rows_at_kill[KILLS - 1]);

    drain_in_child(&fx, COUNTER_SO);
    size_t n_parked = 0;
    es_dlq_entry_t *parked = dlq_list(fx.cfg, "counter", true, &n_parked);
    cr_assert_eq(n_parked, 0, "%zu events parked, the first at offset %lld: %s", n_parked,
                 n_parked ? (long long)parked[0].offset : 0LL, n_parked ? parked[0].error : "");
    free(parked);
    long long events = assert_model_matches_log(fx.store, fx.rm, NULL);
    cr_assert_eq(events, 40 * 200 + appended);

    /* A rebuild from scratch into another file equals the model the killed runners built. */
    char *rebuilt = tu_path(fx.dir, "rebuilt.db");
    es_config_t *cfg2 = es_config_dup(fx.cfg);
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg2, "readmodel.db", rebuilt, &err), ES_OK, "%s", err.message);
    es_projector_module_t *mod = load_module(cfg2, COUNTER_SO);
    es_replay_result_t res = {0};
    es_err rc = es_replay(cfg2, es_projector_module_def(mod), NULL, &res, &err);
    cr_assert_eq(rc, ES_OK, "es_replay: %s: %s", es_strerror(rc), err.message);
    cr_assert_eq(res.events, (uint64_t)events);
    cr_assert_eq(res.parked, 0);

    sqlite3 *db = open_model(fx.rm);
    char *attach = NULL;
    cr_assert_geq(asprintf(&attach, "ATTACH '%s' AS r", rebuilt), 0);
    cr_assert_eq(sqlite3_exec(db, attach, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    static const char *const diffs[] = {
        "SELECT COUNT(*) FROM (SELECT * FROM main.tp_applied EXCEPT SELECT * FROM r.tp_applied)",
        "SELECT COUNT(*) FROM (SELECT * FROM r.tp_applied EXCEPT SELECT * FROM main.tp_applied)",
        "SELECT COUNT(*) FROM (SELECT * FROM main.tp_totals EXCEPT SELECT * FROM r.tp_totals)",
        "SELECT COUNT(*) FROM (SELECT * FROM r.tp_totals EXCEPT SELECT * FROM main.tp_totals)",
    };
    for (size_t i = 0; i < sizeof diffs / sizeof *diffs; i++)
        cr_assert_eq(query_int(db, diffs[i], NULL), 0, "live and rebuilt models differ: %s",
                     diffs[i]);
    cr_assert_eq(query_int(db, "SELECT COUNT(*) FROM r.tp_applied", NULL), events);
    sqlite3_close(db);
    free(attach);
    es_projector_unload(mod);
    es_config_destroy(cfg2);
    free(rebuilt);
    fx_close(&fx);
}

typedef struct park_log {
    int64_t offsets[16];
    size_t n;
} park_log;

static void on_park(const es_dlq_entry_t *e, void *opaque) {
    park_log *p = opaque;
    if (p->n < 16)
        p->offsets[p->n] = e->offset;
    p->n++;
}

static void assert_entry(const es_dlq_entry_t *e, int64_t offset, const char *key,
                         const char *event_type, es_err code, const char *cause, int attempts) {
    cr_assert_not_null(e, "no DLQ entry for offset %lld", (long long)offset);
    cr_assert_str_eq(e->projector, "poison");
    cr_assert_str_eq(e->topic, TP_TOPIC);
    cr_assert_eq(e->partition, 0);
    cr_assert_eq(e->offset, offset, "entry %lld: offset %lld, expected %lld", (long long)e->id,
                 (long long)e->offset, (long long)offset);
    if (key)
        cr_assert_str_eq(e->key, key, "entry at offset %lld", (long long)offset);
    cr_assert_str_eq(e->event_type, event_type, "entry at offset %lld", (long long)offset);
    cr_assert_eq(e->code, code, "entry at offset %lld: code %s, expected %s (%s)",
                 (long long)offset, es_strerror((es_err)e->code), es_strerror(code), e->error);
    cr_assert(strstr(e->error, cause), "entry at offset %lld: error \"%s\" does not say \"%s\"",
              (long long)offset, e->error, cause);
    cr_assert_eq(e->attempts, attempts, "entry at offset %lld: %d attempts, expected %d (%s)",
                 (long long)offset, e->attempts, attempts, e->error);
    cr_assert_gt(e->parked_at_us, 0);
    cr_assert_eq(e->redriven_at_us, 0);
}

static const es_dlq_entry_t *entry_at(const es_dlq_entry_t *entries, size_t n, int64_t offset) {
    for (size_t i = 0; i < n; i++)
        if (entries[i].offset == offset)
            return &entries[i];
    return NULL;
}

static const uint8_t garbage_payload[] = {0x00, 0xff, 'n', 'o', 't', ' ', 't', 'p', '1'};
static const uint8_t garbage_envelope[] = {0xff, 0xff, 0xff, 0x0f, 'j', 'u', 'n', 'k', 0x00, 0x01};

Test(projector_runner, poison_events_are_parked_with_their_metadata_and_the_runner_goes_on) {
    fixture fx;
    fx_open(&fx);
    fx_set(&fx, "projector.retries", "3");
    fx_set(&fx, "projector.retry.backoff.ms", "1");
    unsetenv("ESKIT_TEST_POISON_FIXED");
    int64_t ok1 = append_added(fx.store, "ok-1", 10);
    int64_t bad = append_added(fx.store, "bad-1", 20);
    int64_t garbage = append_event(fx.store, "garbage-1", TP_EVENT_ADDED, garbage_payload,
                                   sizeof garbage_payload);
    int64_t before_corrupt = append_added(fx.store, "corrupt-1", 5);
    int64_t corrupt =
        insert_corrupt_row(fx.db, before_corrupt, garbage_envelope, sizeof garbage_envelope);
    char one[TP_MAX_PAYLOAD];
    size_t one_len = tp_encode(one, 1);
    int64_t unknown = append_event(fx.store, "unknown-1", "test.v1.Mystery", one, one_len);
    int64_t flaky9 = append_added(fx.store, "flaky-9", 40);
    int64_t ok2 = append_added(fx.store, "ok-2", 50);
    cr_assert_eq(corrupt, before_corrupt + 1);

    es_projector_module_t *mod = load_module(fx.cfg, POISON_SO);
    const es_projector_def *def = es_projector_module_def(mod);
    es_runner_t *r = new_runner(fx.cfg, def);
    park_log parks = {0};
    es_runner_set_park_cb(r, on_park, &parks);
    drain(r);
    es_runner_stats_t st;
    es_runner_stats(r, &st);
    es_runner_destroy(r);

    /* Every event after a poison one was applied. */
    sqlite3 *db = open_model(fx.rm);
    cr_assert_eq(rows_of(db, "ok-1"), 1);
    cr_assert_eq(rows_of(db, "corrupt-1"), 1, "corrupt-1 v1 is a good event");
    cr_assert_eq(rows_of(db, "ok-2"), 1, "the runner did not go on past the poison events");
    cr_assert_eq(rows_of(db, "bad-1") + rows_of(db, "garbage-1") + rows_of(db, "unknown-1") +
                     rows_of(db, "flaky-9"),
                 0);
    cr_assert_eq(query_int(db, "SELECT COUNT(*) FROM tp_applied", NULL), 3);
    cr_assert_eq(st.applied, 3);
    cr_assert_eq(st.parked, 5);
    cr_assert_eq(st.retries, 3, "flaky-9 is retried projector.retries = 3 times, not %llu",
                 (unsigned long long)st.retries);
    cr_assert_eq(parks.n, 5, "the park callback ran %zu times", parks.n);
    const int64_t parked_in_order[] = {bad, garbage, corrupt, unknown, flaky9};
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(parks.offsets[i], parked_in_order[i]);

    size_t n = 0;
    es_dlq_entry_t *entries = dlq_list(fx.cfg, "poison", false, &n);
    cr_assert_eq(n, 5);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(entries[i].offset, parked_in_order[i], "the DLQ lists oldest first");
    assert_entry(entry_at(entries, n, bad), bad, "bad-1", TP_EVENT_ADDED, ES_EINVAL,
                 "aggregate bad-1 is marked bad", 1);
    assert_entry(entry_at(entries, n, garbage), garbage, "garbage-1", TP_EVENT_ADDED, ES_EDECODE,
                 "not a tp1 payload", 1);
    /* The envelope itself is unreadable: no event type, and the key only if the log knows it. */
    assert_entry(entry_at(entries, n, corrupt), corrupt, NULL, "", ES_EDECODE, "", 1);
    assert_entry(entry_at(entries, n, unknown), unknown, "unknown-1", "test.v1.Mystery",
                 ES_EUNKNOWN_TYPE, "unknown event type", 1);
    /* The module's own count of its calls ends the message: 4 attempts means 4 calls. */
    assert_entry(entry_at(entries, n, flaky9), flaky9, "flaky-9", TP_EVENT_ADDED, ES_ERETRY,
                 "(attempt 4 of 9 bad)", 4);
    const es_dlq_entry_t *c = entry_at(entries, n, corrupt);
    cr_assert(strstr(c->error, "decod") || strstr(c->error, "envelope") ||
                  strstr(c->error, "malformed"),
              "the corrupt record's error does not say it could not be decoded: %s", c->error);
    int64_t bad_id = entry_at(entries, n, bad)->id, corrupt_id = c->id;
    free(entries);

    /* The DLQ keeps the record's bytes: the envelope, or the garbage as it was. */
    es_error_t err = {0};
    es_dlq_entry_t *full = NULL;
    cr_assert_eq(es_dlq_get(fx.cfg, corrupt_id, &full, &err), ES_OK, "%s", err.message);
    cr_assert_eq(full->value_len, sizeof garbage_envelope);
    cr_assert_eq(memcmp(full->value, garbage_envelope, sizeof garbage_envelope), 0);
    es_dlq_entry_free(full);
    cr_assert_eq(es_dlq_get(fx.cfg, bad_id, &full, &err), ES_OK, "%s", err.message);
    es_event_t *ev = NULL;
    cr_assert_eq(es_envelope_decode(full->value, full->value_len, NULL, &ev, &err), ES_OK,
                 "the parked bytes of bad-1 are not its envelope: %s", err.message);
    cr_assert_str_eq(ev->aggregate_id, "bad-1");
    cr_assert_eq(ev->version, 1);
    es_event_free(ev);
    es_dlq_entry_free(full);

    /* The module is fixed: redrive applies bad-1 once, and a second redrive applies nothing. */
    setenv("ESKIT_TEST_POISON_FIXED", "1", 1);
    size_t applied = 0, failed = 0;
    es_err rc = es_dlq_redrive(fx.cfg, def, &bad_id, 1, &applied, &failed, &err);
    cr_assert_eq(rc, ES_OK, "es_dlq_redrive: %s: %s", es_strerror(rc), err.message);
    cr_assert_eq(applied, 1);
    cr_assert_eq(failed, 0);
    cr_assert_eq(rows_of(db, "bad-1"), 1);
    cr_assert_eq(query_int(db, "SELECT amount FROM tp_totals WHERE agg_id = 'bad-1'", NULL), 20);

    applied = failed = 0;
    rc = es_dlq_redrive(fx.cfg, def, &bad_id, 1, &applied, &failed, &err);
    cr_assert_eq(applied, 0, "redriving bad-1 again applied it again (%s)", es_strerror(rc));
    applied = failed = 0;
    rc = es_dlq_redrive(fx.cfg, def, NULL, 0, &applied, &failed, &err);
    cr_assert_eq(rc, ES_OK, "es_dlq_redrive: %s: %s", es_strerror(rc), err.message);
    cr_assert_eq(applied, 0, "a redrive of everything applied %zu events", applied);
    cr_assert_eq(failed, 4, "garbage-1, the corrupt record, unknown-1 and flaky-9 fail again");
    cr_assert_eq(rows_of(db, "bad-1"), 1);
    cr_assert_eq(query_int(db, "SELECT COUNT(*) FROM tp_applied", NULL), 4);

    entries = dlq_list(fx.cfg, "poison", false, &n);
    cr_assert_eq(n, 4);
    cr_assert_null(entry_at(entries, n, bad), "bad-1 is still listed as parked");
    free(entries);
    entries = dlq_list(fx.cfg, "poison", true, &n);
    cr_assert_eq(n, 5);
    cr_assert_gt(entry_at(entries, n, bad)->redriven_at_us, 0);
    free(entries);
    cr_assert_eq(query_int(db, "SELECT off FROM tp_applied WHERE agg_id = 'ok-1'", NULL), ok1);
    cr_assert_eq(query_int(db, "SELECT off FROM tp_applied WHERE agg_id = 'ok-2'", NULL), ok2);

    model_sums m = {0};
    sqlite3_stmt *s = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, sums_sql, -1, &s, NULL), SQLITE_OK);
    cr_assert_eq(read_sums(db, s, &m), SQLITE_OK);
    sqlite3_finalize(s);
    cr_assert(sums_consistent(&m));
    sqlite3_close(db);
    es_projector_unload(mod);
    fx_close(&fx);
}

Test(projector_runner, policy_stop_halts_on_the_failing_event_and_names_it) {
    fixture fx;
    fx_open(&fx);
    fx_set(&fx, "projector.on.error", "stop");
    unsetenv("ESKIT_TEST_POISON_FIXED");
    append_added(fx.store, "ok-1", 1);
    int64_t bad = append_added(fx.store, "bad-1", 2);
    append_added(fx.store, "ok-2", 3);

    es_projector_module_t *mod = load_module(fx.cfg, POISON_SO);
    const es_projector_def *def = es_projector_module_def(mod);
    es_runner_t *r = new_runner(fx.cfg, def);
    es_error_t err = {0};
    es_err rc = ES_OK;
    int64_t deadline = es_now_us() + 30 * SEC;
    while (rc == ES_OK && es_now_us() < deadline)
        rc = es_runner_poll(r, 50, NULL, &err);
    cr_assert_eq(rc, ES_ESTATE, "policy stop: es_runner_poll returned %s: %s", es_strerror(rc),
                 err.message);
    char offset[32];
    snprintf(offset, sizeof offset, "%lld", (long long)bad);
    cr_assert(strstr(err.message, "bad-1") ||
                  (strstr(err.message, TP_TOPIC) && strstr(err.message, offset)),
              "the error does not name the event (bad-1, offset %s): %s", offset, err.message);
    /* Stopped stays stopped: nothing past the failing event is applied. */
    memset(&err, 0, sizeof err);
    rc = es_runner_poll(r, 50, NULL, &err);
    cr_assert_eq(rc, ES_ESTATE, "polling a stopped runner: %s: %s", es_strerror(rc), err.message);
    es_runner_destroy(r);

    /* ok-1 may be there or not: the runner halts by rolling back the batch it stopped in. */
    sqlite3 *db = open_model(fx.rm);
    cr_assert_eq(rows_of(db, "bad-1") + rows_of(db, "ok-2"), 0,
                 "the runner went past the event it stopped on");
    /* A fresh runner stops there again; once the module is fixed it goes on from there. */
    r = new_runner(fx.cfg, def);
    rc = ES_OK;
    deadline = es_now_us() + 30 * SEC;
    while (rc == ES_OK && es_now_us() < deadline)
        rc = es_runner_poll(r, 50, NULL, &err);
    cr_assert_eq(rc, ES_ESTATE, "a restarted runner: %s: %s", es_strerror(rc), err.message);
    es_runner_destroy(r);
    setenv("ESKIT_TEST_POISON_FIXED", "1", 1);
    r = new_runner(fx.cfg, def);
    drain(r);
    es_runner_destroy(r);
    cr_assert_eq(rows_of(db, "bad-1"), 1);
    cr_assert_eq(rows_of(db, "ok-2"), 1);
    cr_assert_eq(query_int(db, "SELECT COUNT(*) FROM tp_applied", NULL), 3);
    sqlite3_close(db);
    size_t n = 0;
    free(dlq_list(fx.cfg, "poison", true, &n));
    cr_assert_eq(n, 0, "policy stop parked %zu events", n);
    es_projector_unload(mod);
    fx_close(&fx);
}

Test(projector_runner, a_transient_failure_is_retried_until_it_applies) {
    fixture fx;
    fx_open(&fx);
    fx_set(&fx, "projector.retries", "3");
    fx_set(&fx, "projector.retry.backoff.ms", "1");
    append_added(fx.store, "ok-1", 1);
    int64_t flaky = append_added(fx.store, "flaky-2", 7);
    append_added(fx.store, "ok-2", 1);

    es_projector_module_t *mod = load_module(fx.cfg, POISON_SO);
    es_runner_t *r = new_runner(fx.cfg, es_projector_module_def(mod));
    drain(r);
    es_runner_stats_t st;
    es_runner_stats(r, &st);
    es_runner_destroy(r);
    cr_assert_eq(st.retries, 2, "flaky-2 fails twice, then applies; %llu retries",
                 (unsigned long long)st.retries);
    cr_assert_eq(st.applied, 3);
    cr_assert_eq(st.parked, 0);
    size_t n = 0;
    free(dlq_list(fx.cfg, "poison", true, &n));
    cr_assert_eq(n, 0);
    sqlite3 *db = open_model(fx.rm);
    cr_assert_eq(rows_of(db, "flaky-2"), 1);
    cr_assert_eq(query_int(db, "SELECT off FROM tp_applied WHERE agg_id = 'flaky-2'", NULL), flaky);
    cr_assert_eq(query_int(db, "SELECT COUNT(*) FROM tp_applied", NULL), 3);
    sqlite3_close(db);
    es_projector_unload(mod);
    fx_close(&fx);
}

Test(projector_runner, an_event_the_module_crashes_on_is_parked_after_the_set_number_of_deaths) {
    fixture fx;
    fx_open(&fx);
    fx_set(&fx, "projector.crash.restarts", "3");
    fx_set(&fx, "projector.batch.size", "10");
    for (int i = 0; i < 30; i++) {
        char id[32];
        snprintf(id, sizeof id, "agg-%02d", i % 10);
        append_added(fx.store, id, i + 1);
    }
    int64_t crash = append_added(fx.store, "crash-me", 100);
    for (int i = 30; i < 60; i++) {
        char id[32];
        snprintf(id, sizeof id, "agg-%02d", i % 10);
        append_added(fx.store, id, i + 1);
    }

    int deaths = 0, runs = 0, status = 0;
    for (; runs < 8; runs++) {
        status = wait_child(&fx, spawn_runner(&fx, CRASHY_SO, false), es_now_us() + 30 * SEC);
        if (!WIFSIGNALED(status))
            break;
        cr_assert_eq(WTERMSIG(status), SIGSEGV, "run %d died of signal %d; its output:\n%s", runs,
                     WTERMSIG(status), child_output(&fx));
        deaths++;
    }
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "after %d deaths the runner still does not finish (status 0x%x); its output:\n%s",
              deaths, status, child_output(&fx));
    cr_assert_eq(deaths, 3, "the runner died %d times on crash-me; projector.crash.restarts is 3",
                 deaths);

    size_t n = 0;
    es_dlq_entry_t *e = dlq_list(fx.cfg, "crashy", true, &n);
    cr_assert_eq(n, 1, "%zu DLQ entries", n);
    cr_assert_str_eq(e->projector, "crashy");
    cr_assert_str_eq(e->topic, TP_TOPIC);
    cr_assert_eq(e->partition, 0);
    cr_assert_eq(e->offset, crash);
    cr_assert_str_eq(e->key, "crash-me");
    cr_assert_str_eq(e->event_type, TP_EVENT_ADDED,
                     "event type '%s': the parked record decodes, so its type belongs in the entry",
                     e->event_type);
    cr_assert_eq(e->attempts, 3, "%d attempts recorded for 3 deaths", e->attempts);
    cr_assert(strstr(e->error, "died") || strstr(e->error, "crash"),
              "the error does not say the process died on the event: %s", e->error);
    free(e);
    long long events = assert_model_matches_log(fx.store, fx.rm, "crash-me");
    cr_assert_eq(events, 61);

    /* Parked stays parked: another run applies nothing and parks nothing more. */
    drain_in_child(&fx, CRASHY_SO);
    free(dlq_list(fx.cfg, "crashy", true, &n));
    cr_assert_eq(n, 1);
    assert_model_matches_log(fx.store, fx.rm, "crash-me");
    fx_close(&fx);
}

/* Queries the live read model in a loop on one connection, each time inside one read
 * transaction, and records anything a reader must never see. */
typedef struct reader {
    long long before; /* rows the model held when the replay started */
    atomic_bool replaying, replay_done;
    atomic_bool stop;
    atomic_llong queries, during_replay, after_replay;
    long long last_rows;
    int violations;
    char first_violation[400];
    sqlite3 *db;
    pthread_t thread;
} reader_t;

static void violation(reader_t *rd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void violation(reader_t *rd, const char *fmt, ...) {
    if (rd->violations++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(rd->first_violation, sizeof rd->first_violation, fmt, ap);
        va_end(ap);
    }
}

static void *reader_main(void *arg) {
    reader_t *rd = arg;
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(rd->db, sums_sql, -1, &s, NULL) != SQLITE_OK) {
        violation(rd, "preparing the query: %s", sqlite3_errmsg(rd->db));
        return NULL;
    }
    while (!atomic_load(&rd->stop)) {
        bool during = atomic_load(&rd->replaying);
        model_sums m = {0};
        int rc = read_sums(rd->db, s, &m);
        if (rc != SQLITE_OK) {
            violation(rd, "a query failed (%d): %s", rc, sqlite3_errmsg(rd->db));
            continue;
        }
        /* The live runner only adds; a swap brings a model at least as far along (the
         * replay catches up under the lock). A partial model breaks one of the three. */
        if (!sums_consistent(&m))
            violation(rd, "a reader saw %lld rows but totals counting %lld (amounts %lld, %lld)",
                      m.rows, m.events, m.row_amount, m.total_amount);
        else if (m.rows < rd->last_rows)
            violation(rd, "a reader saw %lld rows after %lld", m.rows, rd->last_rows);
        else if (m.rows < rd->before)
            violation(rd, "a reader saw a partial model: %lld rows, fewer than the %lld before",
                      m.rows, rd->before);
        rd->last_rows = m.rows;
        atomic_fetch_add(&rd->queries, 1);
        if (during)
            atomic_fetch_add(&rd->during_replay, 1);
        else if (atomic_load(&rd->replay_done))
            atomic_fetch_add(&rd->after_replay, 1);
    }
    sqlite3_finalize(s);
    return NULL;
}

static void wait_for(atomic_llong *counter, long long at_least, const char *what) {
    int64_t deadline = es_now_us() + 30 * SEC;
    while (atomic_load(counter) < at_least) {
        cr_assert_lt(es_now_us(), deadline, "timed out waiting for %s", what);
        sleep_ms(1);
    }
}

typedef struct live_runner {
    es_runner_t *r;
    pthread_t thread;
    atomic_bool stop;
    es_err rc;
    es_error_t err;
} live_runner_t;

static void *live_main(void *arg) {
    live_runner_t *l = arg;
    while (!atomic_load(&l->stop) && l->rc == ES_OK)
        l->rc = es_runner_poll(l->r, 10, NULL, &l->err);
    return NULL;
}

Test(projector_runner, a_replay_under_load_swaps_in_a_whole_model_while_readers_query) {
    fixture fx;
    fx_open(&fx);
    unsigned seed = test_seed();
    for (int i = 0; i < 200; i++) {
        char id[32];
        snprintf(id, sizeof id, "agg-%03d", i);
        append_many(fx.store, id, 150);
    }
    const long long initial = 200 * 150;
    es_projector_module_t *mod = load_module(fx.cfg, COUNTER_SO);
    const es_projector_def *def = es_projector_module_def(mod);
    es_runner_t *r = new_runner(fx.cfg, def);
    drain(r);

    /* The live runner keeps going while esctl replays: they take turns on the read model. */
    live_runner_t live = {.r = r};
    cr_assert_eq(pthread_create(&live.thread, NULL, live_main, &live), 0);
    reader_t rd = {.before = initial, .last_rows = initial};
    rd.db = open_model(fx.rm);
    cr_assert_eq(pthread_create(&rd.thread, NULL, reader_main, &rd), 0);
    writer_t w;
    writer_start(&w, fx.db, seed, 10, 500);
    wait_for(&rd.queries, 3, "the reader's first queries");
    wait_for(&w.appended, 100, "the writer's first appends");

    atomic_store(&rd.replaying, true);
    const char *argv[] = {ESCTL_PATH, "--db",   fx.db,      "--readmodel",
                          fx.rm,      "replay", COUNTER_SO, NULL};
    char *out = NULL, *errout = NULL;
    int status = tu_run(argv, NULL, &out, &errout);
    atomic_store(&rd.replaying, false);
    atomic_store(&rd.replay_done, true);
    cr_assert_eq(status, 0, "esctl replay exited %d: %s", status, errout);
    cr_assert(strstr(out, "events/s"), "no summary line: %s", out);
    cr_assert_null(strstr(out, "parked:"), "%s", out);
    wait_for(&rd.after_replay, 3, "the reader's queries of the rebuilt model");
    long long appended = writer_stop(&w);
    atomic_store(&rd.stop, true);
    pthread_join(rd.thread, NULL);
    atomic_store(&live.stop, true);
    pthread_join(live.thread, NULL);
    cr_assert_eq(live.rc, ES_OK, "the live runner failed: %s", live.err.message);

    cr_log_info("seed %u: %s; reader: %lld queries, %lld during the replay; writer: %lld events",
                seed, out, (long long)atomic_load(&rd.queries),
                (long long)atomic_load(&rd.during_replay), appended);
    free(out);
    free(errout);
    cr_assert_eq(rd.violations, 0, "%d bad reads; the first: %s", rd.violations,
                 rd.first_violation);
    cr_assert_gt(atomic_load(&rd.during_replay), 0, "no query ran while the replay did");

    /* The runner takes the rebuilt model on to the log's end, and the reader's connection sees
     * the same model as a fresh one. */
    drain(r);
    es_runner_destroy(r);
    long long events = assert_model_matches_log(fx.store, fx.rm, NULL);
    cr_assert_eq(events, initial + appended);
    model_sums m = {0};
    sqlite3_stmt *s = NULL;
    cr_assert_eq(sqlite3_prepare_v2(rd.db, sums_sql, -1, &s, NULL), SQLITE_OK);
    cr_assert_eq(read_sums(rd.db, s, &m), SQLITE_OK, "%s", sqlite3_errmsg(rd.db));
    sqlite3_finalize(s);
    cr_assert_eq(m.rows, events, "the reader's open connection sees %lld rows, the log holds %lld",
                 m.rows, events);
    cr_assert(sums_consistent(&m));
    sqlite3_close(rd.db);
    es_projector_unload(mod);
    fx_close(&fx);
}
