/*
 * The saga coordinator's calls on their failure paths, on the embedded backend: each takes
 * err == NULL (the normal set-up for a service sets a log callback, and the coordinator
 * quotes its failures there), each error names the saga once, a full saga database is called
 * what it is, after a run ended by a stop a crash is counted as a crash again, and the instances
 * gauge stays exact across a rollback and a retention sweep and counts again after another
 * connection wrote. The saga's behaviour on both backends is tests/conformance/test_sagas.c.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "domain.h"
#include "fulfilment.h"
#include "metricsutil.h"
#include "testutil.h"

#define SAGA "orders.fulfilment"

static char *dir;
static es_config_t *cfg;
static es_engine_t *engine;
static es_saga_t *coord;

/* What the log callback saw; it stops the coordinator at the first retry when stop_on_retry. */
static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
static char seen[64][600];
static size_t n_seen;
static int stop_on_retry;

static void on_log(int level, const char *msg, void *opaque) {
    (void)opaque;
    if (level > ES_LOG_WARNING || !strncmp(msg, "librdkafka", 10))
        return;
    pthread_mutex_lock(&seen_lock);
    if (n_seen < sizeof seen / sizeof *seen)
        snprintf(seen[n_seen++], sizeof seen[0], "%s", msg);
    pthread_mutex_unlock(&seen_lock);
    if (stop_on_retry && strstr(msg, "retrying in") && coord)
        es_saga_stop(coord);
}

/* The first line the log callback saw holding needle, or NULL. */
static const char *logged(const char *needle) {
    for (size_t i = 0; i < n_seen; i++)
        if (strstr(seen[i], needle))
            return seen[i];
    return NULL;
}

static size_t occurrences(const char *s, const char *what) {
    size_t n = 0;
    for (const char *p = s; (p = strstr(p, what)); p += strlen(what))
        n++;
    return n;
}

static void set(const char *key, const char *value) {
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, key, value, &err), ES_OK, "%s", err.message);
}

static void setup(void) {
    dir = tu_tempdir();
    cfg = tu_config(dir, "events.db");
    char *saga_db = tu_path(dir, "saga.db");
    set("saga.db", saga_db);
    free(saga_db);
    set("sqlite.busy.timeout.ms", "50");
    es_config_set_log_cb(cfg, on_log, NULL);
    n_seen = 0;
    stop_on_retry = 0;
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(engine, &err), ES_OK, "%s", err.message);
}

static void teardown(void) {
    es_saga_destroy(coord);
    coord = NULL;
    es_engine_destroy(engine);
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(dir);
}

TestSuite(saga_coordinator, .init = setup, .fini = teardown, .timeout = 60);

static void place(const char *id) {
    Orders__V1__LineItem item = ORDERS__V1__LINE_ITEM__INIT;
    item.sku = "sku-1";
    item.quantity = 1;
    item.unit_price_cents = 100;
    Orders__V1__LineItem *items[] = {&item};
    Orders__V1__PlaceOrder m = ORDERS__V1__PLACE_ORDER__INIT;
    m.customer_id = "alice";
    m.n_items = 1;
    m.items = items;
    m.currency = "USD";
    es_command_t cmd = {.aggregate_type = "orders.order", .aggregate_id = id, .message = &m.base};
    es_error_t err = {0};
    cr_assert_eq(es_execute(engine, &cmd, NULL, &err), ES_OK, "%s", err.message);
}

/* Another writer holds the event store's write lock until unlock_store. */
static sqlite3 *holder;

static void lock_store(void) {
    char *path = tu_path(dir, "events.db");
    cr_assert_eq(sqlite3_open(path, &holder), SQLITE_OK);
    free(path);
    cr_assert_eq(sqlite3_exec(holder, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK, "%s",
                 sqlite3_errmsg(holder));
}

static void unlock_store(void) {
    sqlite3_exec(holder, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(holder);
    holder = NULL;
}

Test(saga_coordinator, every_call_returns_its_code_with_a_null_error_and_a_log_callback_set) {
    es_saga_def bad = demo_fulfilment_def;
    bad.name = "Not A Name";
    cr_assert_eq(es_saga_check(NULL, NULL), ES_EINVAL);
    cr_assert_eq(es_saga_check(&bad, NULL), ES_EINVAL);
    cr_assert_eq(es_saga_new(cfg, &bad, engine, &coord, NULL), ES_EINVAL);
    cr_assert_eq(es_saga_new(NULL, &demo_fulfilment_def, engine, &coord, NULL), ES_EINVAL);
    cr_assert_eq(es_saga_poll(NULL, 0, NULL, NULL), ES_EINVAL);
    cr_assert_eq(es_saga_run(NULL, NULL), ES_EINVAL);
    es_saga_info_t *infos = NULL;
    es_saga_record_t *recs = NULL;
    size_t n = 0;
    cr_assert_eq(es_saga_list(cfg, SAGA, "sleeping", &infos, &n, NULL), ES_EINVAL);
    cr_assert_eq(es_saga_list(cfg, "Not A Name", NULL, &infos, &n, NULL), ES_EINVAL);
    cr_assert_eq(es_saga_history(cfg, "Not A Name", "o-1", &recs, &n, NULL), ES_EINVAL);
    es_err found = es_saga_find(cfg, SAGA, "o-1", &infos, &n, NULL); /* no saga.db yet */
    cr_assert(found != ES_OK || n == 0, "%s", es_strerror(found));
    if (found == ES_OK)
        free(infos);

    place("o-1");
    cr_assert_eq(es_saga_new(cfg, &demo_fulfilment_def, engine, &coord, NULL), ES_OK);
    cr_assert_eq(es_saga_redeliver(coord, NULL, NULL), ES_EINVAL);

    /* The relay cannot deliver (the store is locked): a warning, and the poll fails with the
     * code of what it could not do (publishing the transitions to the same store). */
    lock_store();
    es_err rc = es_saga_poll(coord, 0, NULL, NULL);
    cr_assert_eq(rc, ES_EBUSY, "poll: %s", es_strerror(rc));
    const char *line = logged("delivering 1 command(s) failed");
    cr_assert_not_null(line, "no warning about the delivery");
    cr_assert_not_null(strstr(line, "events.db"), "the warning says what failed: %s", line);

    /* The run loop logs the failure it retries, and stops when asked. */
    stop_on_retry = 1;
    cr_assert_eq(es_saga_run(coord, NULL), ES_OK);
    line = logged("retrying in");
    cr_assert_not_null(line, "no retry was logged");
    cr_assert_eq(occurrences(line, "saga '" SAGA "'"), 1, "the saga is named once: %s", line);
    cr_assert_not_null(strstr(line, "events.db"), "the line says what failed: %s", line);
    unlock_store();

    /* Unlocked, the same instance goes on. */
    es_saga_stats_t st = {0};
    for (int i = 0; i < 200 && st.commands_sent == 0; i++) {
        cr_assert_eq(es_saga_poll(coord, 10, NULL, NULL), ES_OK);
        es_saga_stats(coord, &st);
    }
    cr_assert_gt(st.commands_sent, 0, "nothing was delivered after the store came back");
}

Test(saga_coordinator, an_error_of_a_poll_names_the_saga_once) {
    place("o-1");
    cr_assert_eq(es_saga_new(cfg, &demo_fulfilment_def, engine, &coord, NULL), ES_OK);
    lock_store();
    es_error_t err = {0};
    cr_assert_eq(es_saga_poll(coord, 0, NULL, &err), ES_EBUSY);
    unlock_store();
    cr_assert_eq(strncmp(err.message, "saga '" SAGA "': ", strlen("saga '" SAGA "': ")), 0, "%s",
                 err.message);
    cr_assert_eq(occurrences(err.message, "saga '" SAGA "'"), 1, "%s", err.message);
}

/* A full disk under the saga database: a VFS over the default one whose writes to files named
 * *saga.db* fail with SQLITE_FULL once writes_left reaches 0 (-1: never). The library opens
 * its databases through the process's default VFS, so it meets the full disk as it would. */
typedef struct full_file {
    sqlite3_file base;
    int watched;
} full_file;
#define REAL(f) ((sqlite3_file *)((full_file *)(f) + 1))

static sqlite3_vfs full_vfs, *real_vfs;
static sqlite3_io_methods full_io;
static int writes_left = -1;

static int ff_close(sqlite3_file *f) {
    return REAL(f)->pMethods->xClose(REAL(f));
}
static int ff_read(sqlite3_file *f, void *b, int n, sqlite3_int64 o) {
    return REAL(f)->pMethods->xRead(REAL(f), b, n, o);
}
static int ff_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o) {
    if (((full_file *)f)->watched && writes_left >= 0 && writes_left-- == 0) {
        writes_left = 0;
        return SQLITE_FULL;
    }
    return REAL(f)->pMethods->xWrite(REAL(f), b, n, o);
}
static int ff_truncate(sqlite3_file *f, sqlite3_int64 size) {
    return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int ff_sync(sqlite3_file *f, int flags) {
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int ff_size(sqlite3_file *f, sqlite3_int64 *size) {
    return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int ff_lock(sqlite3_file *f, int l) {
    return REAL(f)->pMethods->xLock(REAL(f), l);
}
static int ff_unlock(sqlite3_file *f, int l) {
    return REAL(f)->pMethods->xUnlock(REAL(f), l);
}
static int ff_reserved(sqlite3_file *f, int *out) {
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int ff_control(sqlite3_file *f, int op, void *arg) {
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int ff_sector(sqlite3_file *f) {
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int ff_device(sqlite3_file *f) {
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int ff_shm_map(sqlite3_file *f, int pg, int sz, int extend, void volatile **p) {
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, extend, p);
}
static int ff_shm_lock(sqlite3_file *f, int off, int n, int flags) {
    return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}
static void ff_shm_barrier(sqlite3_file *f) {
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int ff_shm_unmap(sqlite3_file *f, int del) {
    return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}
static int ff_fetch(sqlite3_file *f, sqlite3_int64 o, int n, void **p) {
    return REAL(f)->pMethods->xFetch(REAL(f), o, n, p);
}
static int ff_unfetch(sqlite3_file *f, sqlite3_int64 o, void *p) {
    return REAL(f)->pMethods->xUnfetch(REAL(f), o, p);
}

static int fv_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out) {
    (void)vfs;
    memset(f, 0, sizeof(full_file));
    int rc = real_vfs->xOpen(real_vfs, name, REAL(f), flags, out);
    ((full_file *)f)->watched = name && strstr(name, "saga.db");
    f->pMethods = REAL(f)->pMethods ? &full_io : NULL;
    return rc;
}

static void install_full_vfs(void) {
    if (real_vfs)
        return;
    real_vfs = sqlite3_vfs_find(NULL);
    cr_assert_not_null(real_vfs);
    full_vfs = *real_vfs;
    full_vfs.zName = "eskit-test-full";
    full_vfs.szOsFile = (int)sizeof(full_file) + real_vfs->szOsFile;
    full_vfs.xOpen = fv_open;
    full_io = (sqlite3_io_methods){
        3,           ff_close,       ff_read,      ff_write,   ff_truncate, ff_sync,   ff_size,
        ff_lock,     ff_unlock,      ff_reserved,  ff_control, ff_sector,   ff_device, ff_shm_map,
        ff_shm_lock, ff_shm_barrier, ff_shm_unmap, ff_fetch,   ff_unfetch};
    cr_assert_eq(sqlite3_vfs_register(&full_vfs, 1), SQLITE_OK);
}

Test(saga_coordinator, a_full_saga_database_is_called_the_saga_database) {
    install_full_vfs();
    char *saga_db = tu_path(dir, "saga.db");
    /* The disk fills at each write in turn while the coordinator creates its database. */
    for (int k = 0; k < 64; k++) {
        es_error_t err = {0};
        writes_left = k;
        es_err rc = es_saga_new(cfg, &demo_fulfilment_def, engine, &coord, &err);
        writes_left = -1;
        if (rc == ES_OK) {
            cr_assert_gt(k, 0, "the first write to a new saga database did not fail");
            break;
        }
        cr_assert_eq(rc, ES_EIO, "write %d: %s: %s", k, es_strerror(rc), err.message);
        cr_assert_not_null(strstr(err.message, "database or disk is full"), "%s", err.message);
        cr_assert_not_null(strstr(err.message, saga_db), "the file is named: %s", err.message);
        cr_assert_null(strstr(err.message, "read model"), "write %d: %s", k, err.message);
        cr_assert_not_null(strstr(err.message, "saga database"), "write %d: %s", k, err.message);
    }
    cr_assert_not_null(coord, "the coordinator never opened");
    free(saga_db);
}

/* The demo saga whose first step crashes the process (as an unhandled crash does, whatever
 * handler the process installed) when it starts the instance "crash-me". */
static es_saga_step_t crash_steps[8];
static es_saga_def crash_def;

static es_err send_or_crash(const es_saga_view_t *v, es_saga_out_t *out, es_error_t *err) {
    if (!strcmp(es_saga_view_id(v), "crash-me")) {
        signal(SIGSEGV, SIG_DFL);
        raise(SIGSEGV);
    }
    return demo_fulfilment_def.steps[0].send(v, out, err);
}

static const es_saga_def *crashing_saga(void) {
    crash_def = demo_fulfilment_def;
    cr_assert_leq(crash_def.n_steps, sizeof crash_steps / sizeof crash_steps[0]);
    memcpy(crash_steps, demo_fulfilment_def.steps, crash_def.n_steps * sizeof *crash_steps);
    crash_steps[0].send = send_or_crash;
    crash_def.steps = crash_steps;
    return &crash_def;
}

/* A child process with a coordinator of its own that first runs es_saga_run to a stop (a
 * stop before the run: it returns at once) when stop_first, then polls until a poll finds
 * nothing to do. Exits 0, 1 when something failed, or 3 when no poll ever did anything. */
static int child_coordinator(int stop_first) {
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1, "fork: %s", strerror(errno));
    if (pid == 0) {
        es_engine_t *e = NULL;
        es_saga_t *c = NULL;
        es_error_t err = {0};
        if (es_engine_new(cfg, &e, &err) != ES_OK || demo_register_all(e, &err) != ES_OK ||
            es_saga_new(cfg, crashing_saga(), e, &c, &err) != ES_OK)
            _exit(1);
        if (stop_first) {
            es_saga_stop(c);
            if (es_saga_run(c, &err) != ES_OK)
                _exit(1);
        }
        size_t progress = 0, total = 0;
        for (int i = 0; i < 100; i++) {
            if (es_saga_poll(c, 20, &progress, &err) != ES_OK)
                _exit(1);
            total += progress;
            if (total && !progress)
                break;
        }
        es_saga_destroy(c);
        es_engine_destroy(e);
        _exit(total ? 0 : 3);
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    return status;
}

Test(saga_coordinator, after_a_stopped_run_a_crash_in_a_step_is_counted_by_the_crash_guard) {
    set("projector.crash.restarts", "1");
    place("crash-me");
    /* The run returned on its stop; the polls after it apply the start event again, and the
     * process dies in the step. */
    int status = child_coordinator(1);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV,
              "the coordinator should have died in the step after its stopped run (status 0x%x: "
              "3 means its polls applied nothing)",
              status);
    /* That death was a crash, not a stop: counted once, with restarts 1 the next coordinator
     * parks the event instead of dying on it again. */
    status = child_coordinator(0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the next coordinator did not park the event it died on (status 0x%x): the death "
              "after the stopped run was not counted",
              status);
    es_config_t *rm = es_config_dup(cfg);
    es_error_t err = {0};
    cr_assert_eq(es_config_set(rm, "readmodel.db", es_config_get(cfg, "saga.db"), &err), ES_OK);
    es_dlq_entry_t *parked = NULL;
    size_t n = 0;
    cr_assert_eq(es_dlq_list(rm, NULL, false, &parked, &n, &err), ES_OK, "%s", err.message);
    cr_assert_eq(n, 1, "%zu events parked", n);
    cr_assert_str_eq(parked[0].key, "crash-me");
    cr_assert_not_null(strstr(parked[0].error, "died 1 times"), "%s", parked[0].error);
    free(parked);
    es_config_destroy(rm);
}

/* The demo saga whose first step refuses the instance "bad" (its start event is parked). */
static es_saga_step_t refusing_steps[8];
static es_saga_def refusing_def;

static es_err send_or_refuse(const es_saga_view_t *v, es_saga_out_t *out, es_error_t *err) {
    if (!strcmp(es_saga_view_id(v), "bad"))
        return ES_EINVAL;
    return demo_fulfilment_def.steps[0].send(v, out, err);
}

static double instances(const char *text, const char *state) {
    char series[256];
    snprintf(series, sizeof series, "eskit_saga_instances{saga=\"" SAGA "\",state=\"%s\"}", state);
    return mx_value(text, series);
}

/* Instances of SAGA in state as saga.db holds them, read by a connection of the test's own:
 * the rows and the ones retention deleted. */
static uint64_t in_file(const char *state) {
    char *path = tu_path(dir, "saga.db");
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT (SELECT count(*) FROM es_saga_instances WHERE saga = '" SAGA
             "' AND state = '%s') + COALESCE((SELECT n FROM es_saga_pruned WHERE saga = '" SAGA
             "' AND state = '%s'), 0)",
             state, state);
    long long n = tu_query_int(path, sql);
    free(path);
    cr_assert_geq(n, 0);
    return (uint64_t)n;
}

/* es_saga_stats, es_saga_active and the instances gauge are kept from the moves of committed
 * transactions (saga_metrics.c): after every poll they are what saga.db holds, across a batch
 * rolled back (an event of it failed: the batch is redone event by event and the failing one
 * parked, so the other instances are written twice, once rolled back) and across retention
 * sweeping the ended instances; with metrics off as well (no gauge then). */
static void counts_stay_exact(int gauge) {
    refusing_def = demo_fulfilment_def;
    cr_assert_leq(refusing_def.n_steps, sizeof refusing_steps / sizeof refusing_steps[0]);
    memcpy(refusing_steps, demo_fulfilment_def.steps,
           refusing_def.n_steps * sizeof *refusing_steps);
    refusing_steps[0].send = send_or_refuse;
    refusing_def.steps = refusing_steps;
    set("projector.retries", "0");
    set("saga.retention.ms", "1");
    if (!gauge)
        set("metrics.enabled", "false");
    place("o-1");
    place("bad");
    place("o-2");
    es_error_t err = {0};
    cr_assert_eq(es_saga_new(cfg, &refusing_def, engine, &coord, &err), ES_OK, "%s", err.message);
    es_saga_stats_t st = {0};
    es_saga_stats(coord, &st); /* counted before the first poll: its moves are then taken */
    cr_assert_eq(st.started, 0);
    uint64_t active = 1;
    int polls = 0;
    for (; polls < 500 && (active || st.started < 2 || st.pruned < st.started); polls++) {
        cr_assert_eq(es_saga_poll(coord, 10, NULL, &err), ES_OK, "%s", err.message);
        cr_assert_eq(es_saga_active(coord, &active, &err), ES_OK, "%s", err.message);
        es_saga_stats(coord, &st);
        cr_assert_eq(st.completed, in_file("completed"), "poll %d", polls);
        cr_assert_eq(st.aborted, in_file("aborted"), "poll %d", polls);
        cr_assert_eq(st.failed, in_file("failed"), "poll %d", polls);
        cr_assert_eq(active, in_file("running") + in_file("compensating"), "poll %d", polls);
        cr_assert_eq(st.started, st.completed + st.aborted + st.failed + active, "poll %d", polls);
        if (!gauge)
            continue;
        char *text = mx_scrape();
        cr_assert_eq(instances(text, "completed"), (double)st.completed, "poll %d: %s", polls,
                     text);
        cr_assert_eq(instances(text, "aborted"), (double)st.aborted, "poll %d: %s", polls, text);
        cr_assert_eq(instances(text, "failed"), (double)st.failed, "poll %d: %s", polls, text);
        cr_assert_eq(instances(text, "running") + instances(text, "compensating"), (double)active,
                     "poll %d: %s", polls, text);
        free(text);
    }
    cr_assert_gt(polls, 1);
    cr_assert_eq(st.started, 2, "the refused instance was not parked");
    cr_assert_eq(active, 0);
    cr_assert_eq(st.pruned, 2, "retention did not sweep the ended instances");
}

Test(saga_coordinator, the_counts_by_state_stay_exact_across_a_rollback_and_a_retention_sweep) {
    counts_stay_exact(1);
}

Test(saga_coordinator, the_counts_by_state_stay_exact_with_metrics_off) {
    counts_stay_exact(0);
}

/* Another connection writing this saga's instances (against saga.h's rule, or by hand) shows
 * in the gauge within about a second: its commit changes saga.db's data_version. */
Test(saga_coordinator, the_instances_gauge_counts_again_after_another_connection_wrote) {
    es_error_t err = {0};
    cr_assert_eq(es_saga_new(cfg, &demo_fulfilment_def, engine, &coord, &err), ES_OK, "%s",
                 err.message);
    cr_assert_eq(es_saga_poll(coord, 0, NULL, &err), ES_OK, "%s", err.message);
    char *path = tu_path(dir, "saga.db");
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    free(path);
    cr_assert_eq(sqlite3_exec(db,
                              "INSERT INTO es_saga_instances VALUES ('" SAGA "', 'by-hand',"
                              " 'completed', 3, 1, 9000000000000000, 0, '', 5, x'')",
                              NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);
    double completed = 0;
    for (int i = 0; i < 100 && completed != 1; i++) {
        cr_assert_eq(es_saga_poll(coord, 50, NULL, &err), ES_OK, "%s", err.message);
        char *text = mx_scrape();
        completed = instances(text, "completed");
        free(text);
    }
    cr_assert_eq(completed, 1, "the instance written by another connection is not counted");
}

/* Stock of sku-1 for n orders. */
static void restock(uint32_t n) {
    Inventory__V1__Restock m = INVENTORY__V1__RESTOCK__INIT;
    m.quantity = n;
    es_command_t cmd = {
        .aggregate_type = "inventory.item", .aggregate_id = "sku-1", .message = &m.base};
    es_error_t err = {0};
    cr_assert_eq(es_execute(engine, &cmd, NULL, &err), ES_OK, "%s", err.message);
}

/* Polls until no instance is active and the outbox is empty (at most 500 polls). */
static void settle(void) {
    es_error_t err = {0};
    uint64_t active = 1;
    for (int i = 0; i < 500 && active; i++) {
        cr_assert_eq(es_saga_poll(coord, 10, NULL, &err), ES_OK, "%s", err.message);
        cr_assert_eq(es_saga_active(coord, &active, &err), ES_OK, "%s", err.message);
    }
    cr_assert_eq(active, 0, "instances still active after 500 polls");
}

/* The coordinator keeps live instances in memory (saga_live.c); another connection's commit
 * to saga.db makes it read them again. Here one aborts o-1 after the poll that started it and
 * delivered its stock reservation: the reservation's event, applied by the next poll, must
 * find the instance aborted, not move the copy in memory on to payment and write it back over
 * the other connection's row. */
Test(saga_coordinator, an_instance_another_connection_changed_is_read_again) {
    es_error_t err = {0};
    restock(1);
    place("o-1");
    cr_assert_eq(es_saga_new(cfg, &demo_fulfilment_def, engine, &coord, &err), ES_OK, "%s",
                 err.message);
    cr_assert_eq(es_saga_poll(coord, 10, NULL, &err), ES_OK, "%s", err.message);
    cr_assert_eq(in_file("running"), 1, "o-1 did not start");
    char *path = tu_path(dir, "saga.db");
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    cr_assert_eq(sqlite3_exec(db,
                              "UPDATE es_saga_instances SET state = 'aborted', deadline = 0"
                              " WHERE saga = '" SAGA "' AND id = 'o-1'",
                              NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);
    settle();
    cr_assert_eq(in_file("aborted"), 1, "the other connection's abort was written over");
    long long payments =
        tu_query_int(path, "SELECT count(*) FROM es_saga_targets WHERE saga = '" SAGA
                           "' AND command_type LIKE '%AuthorizePayment'");
    free(path);
    cr_assert_eq(payments, 0, "the aborted instance went on to its payment step");
}

/* With room for one live instance, every save of another evicts it: orders placed together
 * still complete, each with its transitions in order. */
Test(saga_coordinator, instances_complete_when_memory_holds_only_one_of_them) {
    set("cache.aggregates", "1");
    restock(4);
    const char *ids[] = {"o-1", "o-2", "o-3", "o-4"};
    for (size_t i = 0; i < 4; i++)
        place(ids[i]);
    es_error_t err = {0};
    cr_assert_eq(es_saga_new(cfg, &demo_fulfilment_def, engine, &coord, &err), ES_OK, "%s",
                 err.message);
    settle();
    cr_assert_eq(in_file("completed"), 4);
    for (size_t i = 0; i < 4; i++) {
        es_saga_record_t *recs = NULL;
        size_t n = 0;
        cr_assert_eq(es_saga_history(cfg, SAGA, ids[i], &recs, &n, &err), ES_OK, "%s", err.message);
        cr_assert_gt(n, 2, "%s", ids[i]);
        for (size_t k = 0; k < n; k++)
            cr_assert_eq(recs[k].seq, k + 1, "%s: transition %zu", ids[i], k);
        cr_assert_str_eq(recs[n - 1].kind, "completed", "%s", ids[i]);
        es_free(recs);
    }
}
