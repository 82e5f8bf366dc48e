/*
 * Storage faults under every path that writes SQLite: a full disk, a read-only file and a
 * corrupted page, each met by es_store_append, es_execute, the projector runner
 * (es_runner_poll) and esctl (events, lag, replay). Each that has to write fails with an error
 * naming the file and saying what to do (inspection that only reads goes on working), and
 * nothing acknowledged is lost: once the fault is cleared every event acknowledged before it is
 * read back, and writing works again.
 *
 * The full disk and the read-only file exist only in a child's own mount namespace (a small
 * tmpfs, a read-only bind mount), so those checks run in the child, which reports what went
 * wrong on stderr and in its exit status.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "domain.h"
#include "order_summary.h"
#include "testutil.h"

#define ORDERS 20 /* placed before each fault */

static char *dir;

static void setup(void) {
    static const char *const vars[] = {
        "ESKIT_DB",      "ESKIT_CONFIG",       "ESKIT_BROKERS",       "ESKIT_BACKEND",
        "ESKIT_SAGA_DB", "ESKIT_READMODEL_DB", "ESKIT_PROJECTOR_PATH"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        unsetenv(vars[i]);
    dir = tu_tempdir();
    cr_assert_not_null(dir);
}

static void teardown(void) {
    tu_rmtree(dir);
    free(dir);
}

TestSuite(storage_faults, .init = setup, .fini = teardown, .timeout = 240);

/* In a child: a line on stderr saying what went wrong, and status 1. */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

typedef struct files {
    char db[512], rm[512];
} files;

static files files_in(const char *where) {
    files f;
    snprintf(f.db, sizeof f.db, "%s/store.db", where);
    snprintf(f.rm, sizeof f.rm, "%s/read.db", where);
    return f;
}

static es_config_t *config_in(const char *where) {
    files f = files_in(where);
    es_config_t *cfg = es_config_new();
    if (cfg && (es_config_set(cfg, "db", f.db, NULL) != ES_OK ||
                es_config_set(cfg, "readmodel.db", f.rm, NULL) != ES_OK)) {
        es_config_destroy(cfg);
        cfg = NULL;
    }
    return cfg;
}

/* Places order o-<n>. */
static es_err place(es_engine_t *engine, int n, es_error_t *err) {
    char id[16];
    snprintf(id, sizeof id, "o-%d", n);
    Orders__V1__LineItem item = ORDERS__V1__LINE_ITEM__INIT;
    item.sku = "A";
    item.quantity = 2;
    item.unit_price_cents = 150;
    Orders__V1__LineItem *items[] = {&item};
    Orders__V1__PlaceOrder msg = ORDERS__V1__PLACE_ORDER__INIT;
    msg.customer_id = "c-1";
    msg.currency = "EUR";
    msg.n_items = 1;
    msg.items = items;
    es_command_t cmd = {.aggregate_type = "orders.order", .aggregate_id = id, .message = &msg.base};
    es_result_t res = {0};
    es_err e = es_execute(engine, &cmd, &res, err);
    es_result_clear(&res);
    return e;
}

/* Appends the one event of thing t-<n>. */
static es_err append(es_store_t *store, int n, es_error_t *err) {
    char id[16];
    snprintf(id, sizeof id, "t-%d", n);
    es_new_event_t ev = {"test.v1.Happened", (const uint8_t *)"abc", 3, NULL, NULL, NULL, 0};
    return es_store_append(store, "test.thing", id, ES_EXPECT_NO_STREAM, 0, &ev, 1, NULL, err);
}

static es_err open_engine(const es_config_t *cfg, es_engine_t **engine, es_error_t *err) {
    es_err e = es_engine_new(cfg, engine, err);
    if (e == ES_OK && (e = demo_register_all(*engine, err)) != ES_OK) {
        es_engine_destroy(*engine);
        *engine = NULL;
    }
    return e;
}

/* 0 when a fresh read-only look at the store finds orders o-1..o-<orders> and things
 * t-1..t-<things>, each with its one event. */
static int all_there(const char *where, int orders, int things) {
    es_config_t *cfg = config_in(where);
    es_store_t *store = NULL;
    es_error_t err = {0};
    CHECK(es_store_open(cfg, ES_OPEN_READONLY, &store, &err) == ES_OK, "%s", err.message);
    int bad = 0;
    for (int k = 0; k < 2 && !bad; k++) {
        for (int i = 1; i <= (k ? things : orders) && !bad; i++) {
            char id[16];
            uint64_t v = 0;
            snprintf(id, sizeof id, k ? "t-%d" : "o-%d", i);
            es_err e =
                es_store_stream_version(store, k ? "test.thing" : "orders.order", id, &v, &err);
            if (e != ES_OK || v != 1) {
                fprintf(stderr, "%s after the fault: version %llu (%s)\n", id,
                        (unsigned long long)v, e ? err.message : "");
                bad = 1;
            }
        }
    }
    es_store_destroy(store);
    es_config_destroy(cfg);
    return bad;
}

static long long count_rows(const char *path, const char *sql) {
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    long long n = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

/* Polls until the runner has nothing left; the events applied, or -1 on an error. */
static long drain(es_runner_t *r, es_error_t *err) {
    long total = 0;
    for (int rounds = 0; rounds < 1000; rounds++) {
        size_t n = 0;
        if (es_runner_poll(r, 0, &n, err) != ES_OK)
            return -1;
        if (n == 0)
            return total;
        total += (long)n;
    }
    return total;
}

static int one_line(const char *s) {
    const char *nl = strchr(s, '\n');
    return nl && nl[1] == '\0';
}

/* What esctl printed and its status, run with --db and --readmodel of where. */
typedef struct ran {
    int status;
    char *out, *err;
} ran;

static ran esctl(const char *where, const char *verb, const char *a1, const char *a2) {
    files f = files_in(where);
    const char *argv[] = {ESCTL_PATH, "--db", f.db, "--readmodel", f.rm, verb, a1, a2, NULL};
    ran r = {0};
    r.status = tu_run(argv, NULL, &r.out, &r.err);
    if (!r.out)
        r.out = strdup("");
    if (!r.err)
        r.err = strdup("");
    return r;
}

static void ran_free(ran *r) {
    free(r->out);
    free(r->err);
}

/* ---- a full disk -------------------------------------------------------------------------- */

/* What the child has open when the disk fills up. */
static struct {
    es_engine_t *engine;
    es_store_t *store;
    es_runner_t *runner;
} full;

static int tells_to_free_space(const char *msg) {
    return strstr(msg, "free space") || strstr(msg, "free some space");
}

/* ORDERS orders placed and the store reopened (its -wal checkpointed away, so the disk fills
 * around the files at their smallest), the engine, a store and a runner open on it. */
static int before_full(const char *where, void *opaque) {
    (void)opaque;
    es_config_t *cfg = config_in(where);
    es_engine_t *first = NULL;
    es_error_t err = {0};
    CHECK(open_engine(cfg, &first, &err) == ES_OK, "%s", err.message);
    for (int i = 1; i <= ORDERS; i++)
        CHECK(place(first, i, &err) == ES_OK, "placing o-%d: %s", i, err.message);
    es_engine_destroy(first);
    CHECK(open_engine(cfg, &full.engine, &err) == ES_OK, "%s", err.message);
    CHECK(es_store_new(cfg, &full.store, &err) == ES_OK, "%s", err.message);
    CHECK(es_runner_new(cfg, &es_order_summary_projector, &full.runner, &err) == ES_OK, "%s",
          err.message);
    es_config_destroy(cfg);
    return 0;
}

static int free_space(const char *where) {
    char *filler = tu_path(where, "filler");
    int rc = unlink(filler);
    free(filler);
    return rc;
}

static int execute_on_full_disk(const char *where, void *opaque) {
    (void)opaque;
    files f = files_in(where);
    es_error_t err = {0};
    int n = ORDERS;
    es_err e = ES_OK;
    while (n < ORDERS + 2000 && (e = place(full.engine, n + 1, &err)) == ES_OK)
        n++;
    CHECK(e == ES_EIO, "o-%d on a full disk: %s: %s", n + 1, es_strerror(e), err.message);
    CHECK(strstr(err.message, f.db) && tells_to_free_space(err.message),
          "does not name %s and say what to do: %s", f.db, err.message);
    CHECK(free_space(where) == 0, "removing the filler");
    CHECK(place(full.engine, n + 1, &err) == ES_OK, "o-%d with room again: %s", n + 1, err.message);
    es_engine_destroy(full.engine);
    return all_there(where, n + 1, 0);
}

Test(storage_faults, a_full_disk_fails_es_execute_naming_the_store_and_loses_nothing) {
    int status = tu_on_full_disk(dir, before_full, execute_on_full_disk, NULL);
    cr_assert_eq(status, 0, "exit status %d (see stderr)", status);
}

static int append_on_full_disk(const char *where, void *opaque) {
    (void)opaque;
    files f = files_in(where);
    es_error_t err = {0};
    int n = 0;
    es_err e = ES_OK;
    while (n < 2000 && (e = append(full.store, n + 1, &err)) == ES_OK)
        n++;
    CHECK(e == ES_EIO, "t-%d on a full disk: %s: %s", n + 1, es_strerror(e), err.message);
    CHECK(strstr(err.message, f.db) && tells_to_free_space(err.message),
          "does not name %s and say what to do: %s", f.db, err.message);
    CHECK(free_space(where) == 0, "removing the filler");
    CHECK(append(full.store, n + 1, &err) == ES_OK, "t-%d with room again: %s", n + 1, err.message);
    es_store_destroy(full.store);
    return all_there(where, ORDERS, n + 1);
}

Test(storage_faults, a_full_disk_fails_es_store_append_naming_the_store_and_loses_nothing) {
    int status = tu_on_full_disk(dir, before_full, append_on_full_disk, NULL);
    cr_assert_eq(status, 0, "exit status %d (see stderr)", status);
}

static int runner_on_full_disk(const char *where, void *opaque) {
    (void)opaque;
    files f = files_in(where);
    es_error_t err = {0};
    size_t n = 0;
    es_err e = es_runner_poll(full.runner, 0, &n, &err);
    CHECK(e == ES_EIO, "a batch on a full disk: %s: %s", es_strerror(e), err.message);
    CHECK(strstr(err.message, f.rm) && tells_to_free_space(err.message),
          "does not name %s and say what to do: %s", f.rm, err.message);
    CHECK(free_space(where) == 0, "removing the filler");
    long applied = drain(full.runner, &err);
    CHECK(applied == ORDERS, "applied %ld of %d with room again: %s", applied, ORDERS,
          applied < 0 ? err.message : "");
    es_runner_destroy(full.runner);
    long long rows = count_rows(f.rm, "SELECT count(*) FROM order_summary");
    CHECK(rows == ORDERS, "the read model has %lld orders", rows);
    return all_there(where, ORDERS, 0);
}

Test(storage_faults, a_full_disk_fails_a_runner_batch_naming_the_read_model_and_loses_nothing) {
    int status = tu_on_full_disk(dir, before_full, runner_on_full_disk, NULL);
    cr_assert_eq(status, 0, "exit status %d (see stderr)", status);
}

static int esctl_on_full_disk(const char *where, void *opaque) {
    (void)opaque;
    es_runner_destroy(full.runner); /* esctl replay takes the projector's lock */
    ran r = esctl(where, "events", "orders.order", "o-1");
    CHECK(r.status == 0 && strstr(r.out, "orders.v1.OrderPlaced"), "events: %d %s%s", r.status,
          r.out, r.err);
    ran_free(&r);
    r = esctl(where, "lag", NULL, NULL);
    CHECK(r.status == 0 && strstr(r.out, "order_summary"), "lag: %d %s%s", r.status, r.out, r.err);
    ran_free(&r);
    r = esctl(where, "replay", "order_summary", NULL);
    CHECK(r.status == 1 && one_line(r.err), "replay on a full disk: %d %s%s", r.status, r.out,
          r.err);
    CHECK(strstr(r.err, where) && tells_to_free_space(r.err), "replay: %s", r.err);
    ran_free(&r);
    CHECK(free_space(where) == 0, "removing the filler");
    r = esctl(where, "replay", "order_summary", NULL);
    CHECK(r.status == 0, "replay with room again: %d %s%s", r.status, r.out, r.err);
    ran_free(&r);
    long long rows = count_rows(files_in(where).rm, "SELECT count(*) FROM order_summary");
    CHECK(rows == ORDERS, "the replayed read model has %lld orders", rows);
    return all_there(where, ORDERS, 0);
}

Test(storage_faults, on_a_full_disk_esctl_still_reads_and_a_replay_says_to_free_space) {
    int status = tu_on_full_disk(dir, before_full, esctl_on_full_disk, NULL);
    cr_assert_eq(status, 0, "exit status %d (see stderr)", status);
}

/* ---- a read-only file --------------------------------------------------------------------- */

/* ORDERS orders placed, applied by a runner, and everything closed. */
static void make_files(void) {
    es_config_t *cfg = config_in(dir);
    es_engine_t *engine = NULL;
    es_runner_t *r = NULL;
    es_error_t err = {0};
    cr_assert_eq(open_engine(cfg, &engine, &err), ES_OK, "%s", err.message);
    for (int i = 1; i <= ORDERS; i++)
        cr_assert_eq(place(engine, i, &err), ES_OK, "o-%d: %s", i, err.message);
    es_engine_destroy(engine);
    cr_assert_eq(es_runner_new(cfg, &es_order_summary_projector, &r, &err), ES_OK, "%s",
                 err.message);
    cr_assert_eq(drain(r, &err), ORDERS, "%s", err.message);
    es_runner_destroy(r);
    es_config_destroy(cfg);
}

/* Says what to do with a file that cannot be written. */
static int tells_to_check_permissions(const char *msg) {
    return strstr(msg, "permissions") && strstr(msg, "read-only");
}

static int writers_on_read_only_store(void *opaque) {
    (void)opaque;
    files f = files_in(dir);
    es_config_t *cfg = config_in(dir);
    es_engine_t *engine = NULL;
    es_store_t *store = NULL;
    es_error_t err = {0};
    es_err e = open_engine(cfg, &engine, &err);
    if (e == ES_OK)
        e = place(engine, ORDERS + 1, &err);
    CHECK(e == ES_EIO, "es_execute on a read-only store: %s: %s", es_strerror(e), err.message);
    CHECK(strstr(err.message, f.db) && tells_to_check_permissions(err.message),
          "does not name %s and say what to do: %s", f.db, err.message);
    es_engine_destroy(engine);
    e = es_store_new(cfg, &store, &err);
    if (e == ES_OK)
        e = append(store, 1, &err);
    CHECK(e == ES_EIO, "es_store_append on a read-only store: %s: %s", es_strerror(e), err.message);
    CHECK(strstr(err.message, f.db) && tells_to_check_permissions(err.message),
          "does not name %s and say what to do: %s", f.db, err.message);
    es_store_destroy(store);
    ran r = esctl(dir, "events", "orders.order", "o-1");
    CHECK(r.status == 0 && strstr(r.out, "orders.v1.OrderPlaced"), "events: %d %s%s", r.status,
          r.out, r.err);
    ran_free(&r);
    es_config_destroy(cfg);
    return 0;
}

/* After the fault: writing works again and everything acknowledged is there. */
static void assert_writable_again(int orders, int things) {
    es_config_t *cfg = config_in(dir);
    es_engine_t *engine = NULL;
    es_runner_t *r = NULL;
    es_error_t err = {0};
    cr_assert_eq(open_engine(cfg, &engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(place(engine, orders + 1, &err), ES_OK, "%s", err.message);
    cr_assert_eq(append(es_engine_store(engine), things + 1, &err), ES_OK, "%s", err.message);
    es_engine_destroy(engine);
    cr_assert_eq(all_there(dir, orders + 1, things + 1), 0, "see stderr");
    cr_assert_eq(es_runner_new(cfg, &es_order_summary_projector, &r, &err), ES_OK, "%s",
                 err.message);
    cr_assert_geq(drain(r, &err), 0, "%s", err.message);
    es_runner_destroy(r);
    files f = files_in(dir);
    cr_assert_eq(count_rows(f.rm, "SELECT count(*) FROM order_summary"), orders + 1);
    es_config_destroy(cfg);
}

Test(storage_faults, a_read_only_store_fails_append_and_execute_saying_what_to_check) {
    make_files();
    files f = files_in(dir);
    int status = tu_on_read_only(f.db, writers_on_read_only_store, NULL);
    cr_assert_eq(status, 0, "exit status %d (see stderr)", status);
    assert_writable_again(ORDERS, 0);
}

static int readers_on_read_only_model(void *opaque) {
    (void)opaque;
    files f = files_in(dir);
    es_config_t *cfg = config_in(dir);
    es_runner_t *r = NULL;
    es_error_t err = {0};
    /* something for the runner to apply */
    es_engine_t *engine = NULL;
    CHECK(open_engine(cfg, &engine, &err) == ES_OK, "%s", err.message);
    CHECK(place(engine, ORDERS + 1, &err) == ES_OK, "%s", err.message);
    es_engine_destroy(engine);
    es_err e = es_runner_new(cfg, &es_order_summary_projector, &r, &err);
    size_t n = 0;
    if (e == ES_OK)
        e = es_runner_poll(r, 0, &n, &err);
    CHECK(e == ES_EIO, "a runner on a read-only read model: %s: %s", es_strerror(e), err.message);
    CHECK(strstr(err.message, f.rm) && tells_to_check_permissions(err.message),
          "does not name %s and say what to do: %s", f.rm, err.message);
    es_runner_destroy(r);
    ran x = esctl(dir, "lag", NULL, NULL);
    CHECK(x.status == 0 && strstr(x.out, "order_summary"), "lag: %d %s%s", x.status, x.out, x.err);
    ran_free(&x);
    x = esctl(dir, "replay", "order_summary", NULL);
    CHECK(x.status == 1 && one_line(x.err), "replay: %d %s%s", x.status, x.out, x.err);
    CHECK(strstr(x.err, f.rm) && tells_to_check_permissions(x.err), "replay: %s", x.err);
    ran_free(&x);
    es_config_destroy(cfg);
    return 0;
}

Test(storage_faults, a_read_only_read_model_fails_the_runner_and_replay_saying_what_to_check) {
    make_files();
    files f = files_in(dir);
    int status = tu_on_read_only(f.rm, readers_on_read_only_model, NULL);
    cr_assert_eq(status, 0, "exit status %d (see stderr)", status);
    assert_writable_again(ORDERS + 1, 0);
}

/* A directory that cannot be written: the store's -wal and -shm cannot be made there. */
static int store_in_read_only_directory(void *opaque) {
    (void)opaque;
    files f = files_in(dir);
    es_config_t *cfg = config_in(dir);
    es_engine_t *engine = NULL;
    es_error_t err = {0};
    es_err e = open_engine(cfg, &engine, &err);
    if (e == ES_OK)
        e = place(engine, ORDERS + 1, &err);
    CHECK(e == ES_EIO, "es_execute in a read-only directory: %s: %s", es_strerror(e), err.message);
    CHECK(strstr(err.message, f.db) && strstr(err.message, "-wal") &&
              strstr(err.message, "directory") && strstr(err.message, "permissions"),
          "does not name %s, its -wal and directory, and say what to do: %s", f.db, err.message);
    es_engine_destroy(engine);
    es_config_destroy(cfg);
    return 0;
}

Test(storage_faults, a_store_in_a_read_only_directory_says_its_wal_cannot_be_made_there) {
    make_files();
    int status = tu_on_read_only(dir, store_in_read_only_directory, NULL);
    cr_assert_eq(status, 0, "exit status %d (see stderr)", status);
    assert_writable_again(ORDERS, 0);
}

/* ---- a corrupted page --------------------------------------------------------------------- */

/* The file offset of the root page of table or index name (the file must be closed). */
static long root_offset(const char *path, const char *name) {
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    cr_assert_eq(
        sqlite3_prepare_v2(db, "SELECT rootpage FROM sqlite_master WHERE name = ?1", -1, &s, NULL),
        SQLITE_OK);
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    cr_assert_eq(sqlite3_step(s), SQLITE_ROW, "no %s in %s", name, path);
    long page = (long)sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    cr_assert_eq(sqlite3_prepare_v2(db, "PRAGMA page_size", -1, &s, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
    long size = (long)sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    cr_assert_gt(page, 1);
    return (page - 1) * size;
}

/* Writes byte at off of path and returns the byte that was there. */
static unsigned char poke(const char *path, long off, unsigned char byte) {
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fseek(f, off, SEEK_SET), 0);
    int was = fgetc(f);
    cr_assert_neq(was, EOF);
    cr_assert_eq(fseek(f, off, SEEK_SET), 0);
    cr_assert_eq(fputc(byte, f), byte);
    cr_assert_eq(fclose(f), 0);
    return (unsigned char)was;
}

/* Says what to do with a corrupt file. */
static int tells_to_restore(const char *msg) {
    return strstr(msg, "is corrupt") && strstr(msg, "restore it from a backup");
}

Test(storage_faults, a_corrupted_store_page_fails_append_execute_and_events_saying_to_restore) {
    make_files();
    files f = files_in(dir);
    /* Page type 0 is no b-tree page: every stream lookup meets it. */
    long off = root_offset(f.db, "sqlite_autoindex_es_streams_1");
    unsigned char was = poke(f.db, off, 0);
    es_config_t *cfg = config_in(dir);
    es_engine_t *engine = NULL;
    es_error_t err = {0};
    es_err e = open_engine(cfg, &engine, &err);
    if (e == ES_OK)
        e = place(engine, ORDERS + 1, &err);
    cr_expect_eq(e, ES_EIO, "es_execute: %s: %s", es_strerror(e), err.message);
    cr_expect(strstr(err.message, f.db) && tells_to_restore(err.message) &&
                  strstr(err.message, "esctl verify"),
              "%s", err.message);
    es_store_t *store = engine ? es_engine_store(engine) : NULL;
    e = store ? append(store, 1, &err) : e;
    cr_expect_eq(e, ES_EIO, "es_store_append: %s: %s", es_strerror(e), err.message);
    cr_expect(strstr(err.message, f.db) && tells_to_restore(err.message), "%s", err.message);
    es_engine_destroy(engine);
    ran r = esctl(dir, "events", "orders.order", "o-1");
    cr_expect_eq(r.status, 1, "events: %d %s%s", r.status, r.out, r.err);
    cr_expect(one_line(r.err) && strstr(r.err, f.db) && tells_to_restore(r.err), "%s", r.err);
    ran_free(&r);
    es_config_destroy(cfg);
    poke(f.db, off, was); /* restored */
    assert_writable_again(ORDERS, 0);
}

Test(storage_faults,
     a_corrupted_read_model_page_fails_the_runner_lag_and_replay_saying_to_restore) {
    make_files();
    files f = files_in(dir);
    long off = root_offset(f.rm, "es_checkpoints");
    unsigned char was = poke(f.rm, off, 0);
    es_config_t *cfg = config_in(dir);
    es_runner_t *r = NULL;
    es_error_t err = {0};
    es_err e = es_runner_new(cfg, &es_order_summary_projector, &r, &err);
    size_t n = 0;
    if (e == ES_OK)
        e = es_runner_poll(r, 0, &n, &err);
    cr_expect_eq(e, ES_EIO, "a runner: %s: %s", es_strerror(e), err.message);
    cr_expect(strstr(err.message, f.rm) && tells_to_restore(err.message), "%s", err.message);
    es_runner_destroy(r);
    const char *verbs[][2] = {{"lag", NULL}, {"replay", "order_summary"}};
    for (size_t i = 0; i < 2; i++) {
        ran x = esctl(dir, verbs[i][0], verbs[i][1], NULL);
        cr_expect_eq(x.status, 1, "%s: %d %s%s", verbs[i][0], x.status, x.out, x.err);
        cr_expect(one_line(x.err) && strstr(x.err, f.rm) && tells_to_restore(x.err), "%s: %s",
                  verbs[i][0], x.err);
        ran_free(&x);
    }
    es_config_destroy(cfg);
    poke(f.rm, off, was);
    assert_writable_again(ORDERS, 0);
}
