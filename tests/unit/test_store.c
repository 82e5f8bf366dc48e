#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dbfile.h"
#include "log/log.h"
#include "testutil.h"

static char *dir;
static es_store_t *store;

static void setup(void) {
    dir = tu_tempdir();
    es_config_t *cfg = tu_config(dir, "store.db");
    es_error_t err = {0};
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    es_config_destroy(cfg);
}

static void teardown(void) {
    es_store_destroy(store);
    tu_rmtree(dir);
    free(dir);
}

TestSuite(store, .init = setup, .fini = teardown);

static es_err append_n(const char *id, es_expect expect, uint64_t expected, size_t n,
                       es_append_result_t *res, es_error_t *err) {
    es_new_event_t evs[16];
    cr_assert_leq(n, 16);
    for (size_t i = 0; i < n; i++)
        evs[i] =
            (es_new_event_t){"test.v1.Happened", (const uint8_t *)"abc", 3, NULL, NULL, NULL, 0};
    return es_store_append(store, "test.thing", id, expect, expected, evs, n, res, err);
}

typedef struct seen {
    uint64_t versions[64];
    int64_t offsets[64];
    char ids[64][64];
    size_t n;
} seen;

static int record(const es_event_t *ev, void *opaque) {
    seen *s = opaque;
    s->versions[s->n] = ev->version;
    s->offsets[s->n] = ev->offset;
    snprintf(s->ids[s->n], sizeof s->ids[0], "%s", ev->aggregate_id);
    s->n++;
    return 0;
}

Test(store, append_assigns_contiguous_versions_from_one) {
    es_append_result_t res;
    cr_assert_eq(append_n("t-1", ES_EXPECT_NO_STREAM, 0, 3, &res, NULL), ES_OK);
    cr_assert_eq(res.first_version, 1);
    cr_assert_eq(res.last_version, 3);
    cr_assert_eq(append_n("t-1", ES_EXPECT_ANY, 0, 2, &res, NULL), ES_OK);
    cr_assert_eq(res.first_version, 4);
    cr_assert_eq(res.last_version, 5);
    uint64_t v = 0;
    cr_assert_eq(es_store_stream_version(store, "test.thing", "t-1", &v, NULL), ES_OK);
    cr_assert_eq(v, 5);
    cr_assert_eq(es_store_stream_version(store, "test.thing", "nobody", &v, NULL), ES_OK);
    cr_assert_eq(v, 0);
}

Test(store, append_with_stale_version_is_a_conflict_and_appends_nothing) {
    es_error_t err = {0};
    cr_assert_eq(append_n("t-1", ES_EXPECT_NO_STREAM, 0, 2, NULL, NULL), ES_OK);
    cr_assert_eq(append_n("t-1", ES_EXPECT_EXACT, 1, 1, NULL, &err), ES_ECONFLICT);
    cr_assert(strstr(err.message, "test.thing/t-1") && strstr(err.message, "version 2") &&
                  strstr(err.message, "expected version 1"),
              "%s", err.message);
    cr_assert_eq(append_n("t-1", ES_EXPECT_NO_STREAM, 0, 1, NULL, &err), ES_ECONFLICT);
    cr_assert(strstr(err.message, "already exists"), "%s", err.message);
    cr_assert_eq(append_n("t-2", ES_EXPECT_EXISTS, 0, 1, NULL, &err), ES_ECONFLICT);
    cr_assert(strstr(err.message, "test.thing/t-2"), "%s", err.message);
    cr_assert_eq(append_n("t-1", ES_EXPECT_EXACT, 2, 1, NULL, &err), ES_OK);
    uint64_t v = 0;
    es_store_stream_version(store, "test.thing", "t-1", &v, NULL);
    cr_assert_eq(v, 3);
}

Test(store, invalid_type_and_oversized_id_are_rejected_naming_them) {
    es_error_t err = {0};
    es_new_event_t ev = {"test.v1.Happened", NULL, 0, NULL, NULL, NULL, 0};
    cr_assert_eq(es_store_append(store, "Test.Thing", "t-1", ES_EXPECT_ANY, 0, &ev, 1, NULL, &err),
                 ES_EINVAL);
    cr_assert(strstr(err.message, "Test.Thing"), "%s", err.message);
    char id[400];
    memset(id, 'i', sizeof id - 1);
    id[sizeof id - 1] = '\0';
    cr_assert_eq(es_store_append(store, "test.thing", id, ES_EXPECT_ANY, 0, &ev, 1, NULL, &err),
                 ES_EINVAL);
    cr_assert(strstr(err.message, "399 bytes"), "%s", err.message);
}

Test(store, read_stream_from_a_version_returns_the_rest_in_order) {
    cr_assert_eq(append_n("t-1", ES_EXPECT_ANY, 0, 5, NULL, NULL), ES_OK);
    cr_assert_eq(append_n("t-2", ES_EXPECT_ANY, 0, 2, NULL, NULL), ES_OK);
    cr_assert_eq(append_n("t-1", ES_EXPECT_ANY, 0, 2, NULL, NULL), ES_OK);
    seen s = {0};
    cr_assert_eq(es_store_read_stream(store, "test.thing", "t-1", 4, record, &s, NULL), ES_OK);
    cr_assert_eq(s.n, 4);
    for (size_t i = 0; i < s.n; i++)
        cr_assert_eq(s.versions[i], 4 + i);
    cr_assert_lt(s.offsets[1], s.offsets[2]);
    seen none = {0};
    cr_assert_eq(es_store_read_stream(store, "test.thing", "t-9", 1, record, &none, NULL), ES_OK);
    cr_assert_eq(none.n, 0);
}

Test(store, read_log_returns_all_streams_in_commit_order_from_an_offset) {
    append_n("a", ES_EXPECT_ANY, 0, 2, NULL, NULL);
    append_n("b", ES_EXPECT_ANY, 0, 1, NULL, NULL);
    es_new_event_t other = {"other.v1.X", NULL, 0, NULL, NULL, NULL, 0};
    es_store_append(store, "other.kind", "x", ES_EXPECT_ANY, 0, &other, 1, NULL, NULL);
    append_n("a", ES_EXPECT_ANY, 0, 1, NULL, NULL);

    seen all = {0};
    int64_t next = 0;
    cr_assert_eq(es_store_read_log(store, NULL, 1, 0, record, &all, &next, NULL), ES_OK);
    cr_assert_eq(all.n, 5);
    const char *order[] = {"a", "a", "b", "x", "a"};
    for (size_t i = 0; i < 5; i++)
        cr_assert_str_eq(all.ids[i], order[i]);
    cr_assert_eq(next, all.offsets[4] + 1);

    seen page = {0};
    cr_assert_eq(es_store_read_log(store, NULL, all.offsets[1], 2, record, &page, &next, NULL),
                 ES_OK);
    cr_assert_eq(page.n, 2);
    cr_assert_str_eq(page.ids[0], "a");
    cr_assert_str_eq(page.ids[1], "b");
    cr_assert_eq(next, all.offsets[2] + 1);

    const char *types[] = {"test.thing", NULL};
    seen filtered = {0};
    cr_assert_eq(es_store_read_log(store, types, 1, 0, record, &filtered, NULL, NULL), ES_OK);
    cr_assert_eq(filtered.n, 4);
    int64_t end = 0;
    cr_assert_eq(es_store_end_offset(store, &end, NULL), ES_OK);
    cr_assert_eq(end, all.offsets[4] + 1);
}

Test(store, snapshots_replace_the_previous_one) {
    es_snapshot_t snap = {3, "test.v1.State", (const uint8_t *)"s3", 2, 100};
    es_snapshot_t *got = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_store_get_snapshot(store, "test.thing", "t-1", &got, &err), ES_ENOTFOUND);
    cr_assert_eq(es_store_put_snapshot(store, "test.thing", "t-1", &snap, NULL), ES_OK);
    snap.version = 7;
    snap.state = (const uint8_t *)"s7!";
    snap.state_len = 3;
    cr_assert_eq(es_store_put_snapshot(store, "test.thing", "t-1", &snap, NULL), ES_OK);
    cr_assert_eq(es_store_get_snapshot(store, "test.thing", "t-1", &got, NULL), ES_OK);
    cr_assert_eq(got->version, 7);
    cr_assert_str_eq(got->state_type, "test.v1.State");
    cr_assert_eq(got->state_len, 3);
    cr_assert_eq(memcmp(got->state, "s7!", 3), 0);
    es_snapshot_free(got);
}

static void corrupt_row(int64_t pos) {
    char *path = tu_path(dir, "store.db");
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    char sql[128];
    snprintf(sql, sizeof sql, "UPDATE es_events SET envelope = x'0aff01deadbeef' WHERE pos = %lld",
             (long long)pos);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    free(path);
}

Test(store, corrupted_envelope_row_is_a_decode_error_naming_aggregate_and_offset) {
    es_append_result_t res;
    append_n("t-1", ES_EXPECT_ANY, 0, 3, &res, NULL);
    corrupt_row(res.first_offset + 1);
    seen s = {0};
    es_error_t err = {0};
    cr_assert_eq(es_store_read_stream(store, "test.thing", "t-1", 1, record, &s, &err), ES_EDECODE);
    cr_assert_eq(s.n, 1, "events before the bad row are delivered");
    char want[64];
    snprintf(want, sizeof want, "offset %lld", (long long)(res.first_offset + 1));
    cr_assert(strstr(err.message, want), "%s", err.message);
    cr_assert(strstr(err.message, "test.thing.events"), "%s", err.message);
    cr_assert(strstr(err.message, "t-1"), "%s", err.message);

    seen all = {0};
    int64_t next = 0;
    cr_assert_eq(es_store_read_log(store, NULL, 1, 0, record, &all, &next, &err), ES_EDECODE);
    cr_assert_eq(next, res.first_offset + 1, "next points at the bad record");
    cr_assert(strstr(err.message, want), "%s", err.message);
}

static int reenter(const es_event_t *ev, void *opaque) {
    es_err *rc = opaque;
    es_new_event_t ne = {"test.v1.Happened", NULL, 0, NULL, NULL, NULL, 0};
    *rc = es_store_append(store, "test.thing", ev->aggregate_id, ES_EXPECT_ANY, 0, &ne, 1, NULL,
                          NULL);
    return 1;
}

Test(store, calling_back_into_the_store_from_a_read_callback_is_refused_not_deadlocked) {
    append_n("t-1", ES_EXPECT_ANY, 0, 1, NULL, NULL);
    es_err rc = ES_OK;
    cr_assert_eq(es_store_read_stream(store, "test.thing", "t-1", 1, reenter, &rc, NULL), ES_OK);
    cr_assert_eq(rc, ES_ESTATE);
}

Test(store, a_file_that_is_not_a_database_is_an_io_error_naming_it) {
    char *path = tu_path(dir, "junk.db");
    FILE *f = fopen(path, "w");
    fputs("this is not sqlite, just text that is long enough to have a header..........", f);
    fclose(f);
    es_config_t *cfg = es_config_new();
    es_config_set(cfg, "db", path, NULL);
    es_store_t *s = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_store_new(cfg, &s, &err), ES_EIO);
    cr_assert_null(s);
    cr_assert(strstr(err.message, "junk.db"), "%s", err.message);
    es_config_destroy(cfg);
    free(path);
}

Test(store, data_survives_reopening) {
    append_n("t-1", ES_EXPECT_ANY, 0, 4, NULL, NULL);
    es_store_destroy(store);
    es_config_t *cfg = tu_config(dir, "store.db");
    cr_assert_eq(es_store_new(cfg, &store, NULL), ES_OK);
    es_config_destroy(cfg);
    seen s = {0};
    cr_assert_eq(es_store_read_stream(store, "test.thing", "t-1", 1, record, &s, NULL), ES_OK);
    cr_assert_eq(s.n, 4);
}

/* One integer the file answers, read beside the store's own connection (tu_query_int). */
static long long file_int(const char *name, const char *sql) {
    char *path = tu_path(dir, name);
    long long v = tu_query_int(path, sql);
    free(path);
    return v;
}

/* heads_from, -1 when absent (es_heads whole). */
#define HEADS_FROM                                                                                 \
    "SELECT COALESCE((SELECT CAST(value AS INTEGER) FROM es_meta WHERE key = 'heads_from'), -1)"

static void assert_verifies(const char *name) {
    es_config_t *cfg = tu_config(dir, name);
    tu_assert_verifies(cfg, name);
    es_config_destroy(cfg);
}

/* A commit leaves its streams' heads in memory and the log says where es_heads ends
 * (log_sqlite.c, tail_heads): a writer killed before it wrote them leaves es_heads behind the
 * log, and the next open finds the heads in the log's tail, versions and links intact. */
Test(store, heads_a_killed_writer_had_not_written_are_found_in_the_log) {
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        es_config_t *cfg = tu_config(dir, "killed.db");
        es_store_t *s = NULL;
        es_new_event_t ev = {"test.v1.Happened", (const uint8_t *)"abc", 3, NULL, NULL, NULL, 0};
        int bad = es_store_new(cfg, &s, NULL) != ES_OK;
        const char *ids[] = {"t-a", "t-a", "t-b", "t-a", "t-b", "t-c", "t-a", "t-a", "t-b"};
        for (size_t i = 0; !bad && i < sizeof ids / sizeof *ids; i++)
            bad = es_store_append(s, "test.thing", ids[i], ES_EXPECT_ANY, 0, &ev, 1, NULL, NULL) !=
                  ES_OK;
        _exit(bad); /* no es_store_destroy: as if killed */
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the writer failed");
    cr_assert_eq(file_int("killed.db", HEADS_FROM), 1, "the heads were not deferred");
    cr_assert_eq(file_int("killed.db", "SELECT count(*) FROM es_heads"), 0);
    assert_verifies("killed.db");

    es_config_t *cfg = tu_config(dir, "killed.db");
    es_store_t *s = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_store_new(cfg, &s, &err), ES_OK, "%s", err.message);
    uint64_t v = 0;
    const char *ids[] = {"t-a", "t-b", "t-c"};
    const uint64_t want[] = {5, 3, 1};
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(es_store_stream_version(s, "test.thing", ids[i], &v, &err), ES_OK, "%s",
                     err.message);
        cr_assert_eq(v, want[i], "%s is at %llu", ids[i], (unsigned long long)v);
    }
    seen got = {0};
    cr_assert_eq(es_store_read_stream(s, "test.thing", "t-a", 1, record, &got, &err), ES_OK, "%s",
                 err.message);
    cr_assert_eq(got.n, 5);
    for (size_t i = 0; i < got.n; i++)
        cr_assert_eq(got.versions[i], i + 1);
    es_new_event_t ev = {"test.v1.Happened", (const uint8_t *)"abc", 3, NULL, NULL, NULL, 0};
    cr_assert_eq(es_store_append(s, "test.thing", "t-a", ES_EXPECT_EXACT, 4, &ev, 1, NULL, &err),
                 ES_ECONFLICT);
    cr_assert_eq(es_store_append(s, "test.thing", "t-a", ES_EXPECT_EXACT, 5, &ev, 1, NULL, &err),
                 ES_OK, "%s", err.message);
    es_store_destroy(s); /* a clean close writes the heads */
    es_config_destroy(cfg);
    cr_assert_eq(file_int("killed.db", HEADS_FROM), -1);
    cr_assert_eq(file_int("killed.db", "SELECT version FROM es_heads WHERE stream = 1"), 6);
    cr_assert_eq(file_int("killed.db", "SELECT sum(version) FROM es_heads"), 6 + 3 + 1);
    assert_verifies("killed.db");
}

/* Two stores on one file take turns: each finds the other's deferred heads before it writes. */
Test(store, two_stores_on_one_file_check_versions_against_each_others_deferred_heads) {
    es_store_t *other = NULL;
    es_config_t *cfg = tu_config(dir, "store.db");
    es_error_t err = {0};
    cr_assert_eq(es_store_new(cfg, &other, NULL), ES_OK);
    es_new_event_t ev = {"test.v1.Happened", (const uint8_t *)"abc", 3, NULL, NULL, NULL, 0};
    cr_assert_eq(append_n("t-1", ES_EXPECT_NO_STREAM, 0, 3, NULL, NULL), ES_OK);
    cr_assert_eq(
        es_store_append(other, "test.thing", "t-1", ES_EXPECT_EXACT, 2, &ev, 1, NULL, &err),
        ES_ECONFLICT);
    cr_assert_eq(
        es_store_append(other, "test.thing", "t-1", ES_EXPECT_EXACT, 3, &ev, 1, NULL, &err), ES_OK,
        "%s", err.message);
    cr_assert_eq(append_n("t-1", ES_EXPECT_EXACT, 3, 1, NULL, &err), ES_ECONFLICT);
    cr_assert_eq(append_n("t-1", ES_EXPECT_EXACT, 4, 2, NULL, &err), ES_OK, "%s", err.message);
    uint64_t v = 0;
    cr_assert_eq(es_store_stream_version(other, "test.thing", "t-1", &v, NULL), ES_OK);
    cr_assert_eq(v, 6);
    seen got = {0};
    cr_assert_eq(es_store_read_stream(other, "test.thing", "t-1", 1, record, &got, &err), ES_OK,
                 "%s", err.message);
    cr_assert_eq(got.n, 6);
    es_store_destroy(other);
    es_config_destroy(cfg);
    assert_verifies("store.db");
}

static es_store_t *store_deferring(const char *name, const char *events) {
    es_config_t *cfg = tu_config(dir, name);
    es_store_t *s = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "sqlite.heads.defer.events", events, &err), ES_OK, "%s",
                 err.message);
    cr_assert_eq(es_store_new(cfg, &s, &err), ES_OK, "%s", err.message);
    es_config_destroy(cfg);
    return s;
}

/* The tail is bounded: once it holds sqlite.heads.defer.events events a commit writes every
 * head, and the next one starts a new tail past it; 0 writes them at every commit. */
Test(store, the_deferred_heads_are_written_once_the_tail_holds_sqlite_heads_defer_events) {
    es_store_t *s = store_deferring("bounded.db", "256");
    es_new_event_t evs[16];
    for (size_t i = 0; i < 16; i++)
        evs[i] =
            (es_new_event_t){"test.v1.Happened", (const uint8_t *)"abc", 3, NULL, NULL, NULL, 0};
    char id[16];
    for (size_t calls = 0; calls < 256 / 16; calls++) {
        snprintf(id, sizeof id, "t-%zu", calls % 4);
        cr_assert_eq(es_store_append(s, "test.thing", id, ES_EXPECT_ANY, 0, evs, 16, NULL, NULL),
                     ES_OK);
        cr_assert_eq(file_int("bounded.db", HEADS_FROM), calls + 1 < 256 / 16 ? 1 : -1,
                     "after %zu appends", calls + 1);
    }
    cr_assert_eq(file_int("bounded.db", "SELECT sum(version) FROM es_heads"), 256);
    cr_assert_eq(es_store_append(s, "test.thing", "t-0", ES_EXPECT_EXACT, 64, evs, 1, NULL, NULL),
                 ES_OK);
    cr_assert_eq(file_int("bounded.db", HEADS_FROM), 257);
    es_store_destroy(s);
    assert_verifies("bounded.db");

    s = store_deferring("every.db", "0");
    cr_assert_eq(es_store_append(s, "test.thing", "t-0", ES_EXPECT_ANY, 0, evs, 2, NULL, NULL),
                 ES_OK);
    cr_assert_eq(file_int("every.db", HEADS_FROM), -1);
    cr_assert_eq(file_int("every.db", "SELECT version FROM es_heads"), 2);
    es_store_destroy(s);
}

/* A process of an older eskit that had the file open before the upgrade to schema version 6
 * never rereads the version: its head writes would rest on an es_heads that misses the tail.
 * While heads are deferred, es_heads' triggers refuse them. */
Test(store, an_older_writer_cannot_write_es_heads_while_heads_are_deferred) {
    cr_assert_eq(append_n("t-1", ES_EXPECT_NO_STREAM, 0, 2, NULL, NULL), ES_OK);
    cr_assert_eq(file_int("store.db", HEADS_FROM), 1);
    char *path = tu_path(dir, "store.db");
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    cr_assert_eq(sqlite3_exec(db,
                              "INSERT INTO es_heads(stream, version, head) VALUES (1, 1, 1) ON "
                              "CONFLICT(stream) DO UPDATE SET version = excluded.version",
                              NULL, NULL, &msg),
                 SQLITE_CONSTRAINT);
    cr_assert(msg && strstr(msg, "an older eskit has this file open"), "%s", msg ? msg : "");
    sqlite3_free(msg);
    sqlite3_close(db);
    free(path);
    cr_assert_eq(append_n("t-1", ES_EXPECT_EXACT, 2, 1, NULL, NULL), ES_OK);
    es_store_destroy(store);
    store = NULL;
    cr_assert_eq(file_int("store.db", HEADS_FROM), -1);
    cr_assert_eq(file_int("store.db", "SELECT version FROM es_heads WHERE stream = 1"), 3);
    assert_verifies("store.db");
    es_config_t *cfg = tu_config(dir, "store.db");
    cr_assert_eq(es_store_new(cfg, &store, NULL), ES_OK);
    es_config_destroy(cfg);
}

/* The Kafka processor's restore asks its checkpoint commits to write the deferred heads
 * (write_heads): a seeded stream's snapshot stands for events the store does not hold. */
Test(store, write_heads_makes_the_next_commit_write_the_deferred_heads_and_snapshots) {
    es_config_t *cfg = tu_config(dir, "ops.db");
    es_log_t *log = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_log_sqlite_open_flags(cfg, 0, &log, &err), ES_OK, "%s", err.message);
    const es_store_ops *ops = log->store;
    cr_assert_geq(ops->version, 3);
    es_log_record_t rec = {NULL, (const uint8_t *)"x", 1};
    int64_t off = 0;
    es_snapshot_t snap = {1, "test.v1.State", (const uint8_t *)"s1", 2, 100};
    cr_assert_eq(ops->begin(log, &err), ES_OK, "%s", err.message);
    cr_assert_eq(ops->append(log, "test.thing", "t-1", 0, &rec, 1, &off, &err), ES_OK, "%s",
                 err.message);
    cr_assert_eq(ops->put_snapshot(log, "test.thing", "t-1", &snap, &err), ES_OK);
    cr_assert_eq(ops->commit(log, &err), ES_OK, "%s", err.message);
    cr_assert_eq(file_int("ops.db", HEADS_FROM), 1);
    cr_assert_eq(file_int("ops.db", "SELECT count(*) FROM es_heads"), 0);
    snap.version = 2;
    cr_assert_eq(ops->begin(log, &err), ES_OK, "%s", err.message);
    cr_assert_eq(ops->append(log, "test.thing", "t-1", 1, &rec, 1, &off, &err), ES_OK);
    cr_assert_eq(ops->put_snapshot(log, "test.thing", "t-1", &snap, &err), ES_OK);
    ops->write_heads(log);
    cr_assert_eq(ops->commit(log, &err), ES_OK, "%s", err.message);
    cr_assert_eq(file_int("ops.db", HEADS_FROM), -1);
    cr_assert_eq(file_int("ops.db", "SELECT version FROM es_heads WHERE stream = 1"), 2);
    cr_assert_eq(file_int("ops.db", "SELECT snap_version FROM es_heads WHERE stream = 1"), 2);
    log->destroy(log);
    es_config_destroy(cfg);
}

/* Seeds test.thing/<id> at version in the file name, with a snapshot of snap_version (0:
 * none), as a Kafka restore does with an aggregate whose history lies before its horizon. */
static void seed(const char *name, const char *id, uint64_t version, uint64_t snap_version) {
    es_config_t *cfg = tu_config(dir, name);
    es_log_t *log = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_log_sqlite_open_flags(cfg, 0, &log, &err), ES_OK, "%s", err.message);
    const es_store_ops *ops = log->store;
    es_snapshot_t snap = {snap_version, "test.v1.State", (const uint8_t *)"s", 1, 100};
    cr_assert_eq(ops->begin(log, &err), ES_OK, "%s", err.message);
    cr_assert_eq(ops->seed_stream(log, "test.thing", id, version, &err), ES_OK, "%s", err.message);
    if (snap_version)
        cr_assert_eq(ops->put_snapshot(log, "test.thing", id, &snap, &err), ES_OK);
    ops->write_heads(log);
    cr_assert_eq(ops->commit(log, &err), ES_OK, "%s", err.message);
    log->destroy(log);
    es_config_destroy(cfg);
}

typedef struct problems {
    size_t n;
    char text[4][256];
} problems;

static void note_problem(const es_verify_problem_t *p, void *opaque) {
    problems *ps = opaque;
    if (ps->n < 4)
        snprintf(ps->text[ps->n], sizeof ps->text[0], "%s: %s", p->check, p->message);
    ps->n++;
}

static problems verify_problems(const char *name) {
    es_config_t *cfg = tu_config(dir, name);
    es_verify_summary_t sum;
    es_error_t err = {0};
    problems ps = {0};
    cr_assert_eq(es_store_verify(cfg, NULL, note_problem, &ps, &sum, &err), ES_OK, "%s",
                 err.message);
    cr_assert_eq(sum.problems, ps.n);
    es_config_destroy(cfg);
    return ps;
}

/* A stream a restore seeded starts past version 1: its first event links to none and the
 * snapshot stands for the versions before it. Verify accepts that, whether the stream has
 * events yet, they are in es_heads or only in the deferred tail; it reports a seeded stream
 * that no snapshot covers, and still reports versions missing from a stream that was not
 * seeded. */
Test(store, verify_accepts_a_stream_seeded_at_a_snapshot_and_reports_one_without) {
    es_store_destroy(store);
    store = NULL;
    seed("store.db", "s-1", 5, 5);
    seed("store.db", "s-2", 7, 7);
    problems ps = verify_problems("store.db");
    cr_assert_eq(ps.n, 0, "a seeded stream without events: %s", ps.text[0]);
    es_config_t *cfg = tu_config(dir, "store.db");
    cr_assert_eq(es_store_new(cfg, &store, NULL), ES_OK);
    es_config_destroy(cfg);
    cr_assert_eq(append_n("s-1", ES_EXPECT_EXACT, 5, 2, NULL, NULL), ES_OK);
    cr_assert_eq(append_n("t-1", ES_EXPECT_NO_STREAM, 0, 2, NULL, NULL), ES_OK);
    cr_assert_neq(file_int("store.db", HEADS_FROM), -1, "the appends' heads are deferred");
    ps = verify_problems("store.db");
    cr_assert_eq(ps.n, 0, "a seeded stream's events in the deferred tail: %s", ps.text[0]);
    es_store_destroy(store);
    store = NULL;
    cr_assert_eq(file_int("store.db", HEADS_FROM), -1, "the close wrote the heads");
    ps = verify_problems("store.db");
    cr_assert_eq(ps.n, 0, "a seeded stream's events in es_heads: %s", ps.text[0]);

    seed("bare.db", "s-3", 4, 0);
    ps = verify_problems("bare.db");
    cr_assert_eq(ps.n, 1, "%zu problems", ps.n);
    cr_expect(strstr(ps.text[0], "no snapshot"), "%s", ps.text[0]);
    seed("stale.db", "s-4", 4, 3);
    ps = verify_problems("stale.db");
    cr_assert_eq(ps.n, 1, "%zu problems", ps.n);
    cr_expect(strstr(ps.text[0], "no snapshot"), "%s", ps.text[0]);

    sqlite3 *db = NULL;
    char *path = tu_path(dir, "store.db");
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db,
                              "DELETE FROM es_events WHERE pos = (SELECT min(pos) FROM es_events"
                              " WHERE stream = (SELECT id FROM es_streams WHERE agg_id = 't-1'))",
                              NULL, NULL, NULL),
                 SQLITE_OK);
    sqlite3_close(db);
    free(path);
    ps = verify_problems("store.db");
    cr_assert_geq(ps.n, 1);
    cr_expect(strstr(ps.text[0], "versions 1 to 1 are missing"), "%s", ps.text[0]);
    cfg = tu_config(dir, "store.db");
    cr_assert_eq(es_store_new(cfg, &store, NULL), ES_OK);
    es_config_destroy(cfg);
}

/* Schema version 1, as eskit 0.1 wrote it: heads and snapshots inside es_streams. */
static const char v1_schema[] =
    "CREATE TABLE es_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE es_types(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
    "CREATE TABLE es_streams(id INTEGER PRIMARY KEY, type_id INTEGER NOT NULL,"
    " agg_id TEXT NOT NULL, version INTEGER NOT NULL, head INTEGER NOT NULL,"
    " snap_version INTEGER, snap_type TEXT, snap_state BLOB, snap_at INTEGER,"
    " UNIQUE(type_id, agg_id));"
    "CREATE TABLE es_events(pos INTEGER PRIMARY KEY, stream INTEGER NOT NULL,"
    " version INTEGER NOT NULL, prev INTEGER NOT NULL, type_id INTEGER NOT NULL,"
    " envelope BLOB NOT NULL);"
    "CREATE VIEW es_snapshots(stream, version, state_type, state, taken_at) AS"
    " SELECT id, snap_version, snap_type, snap_state, snap_at FROM es_streams"
    " WHERE snap_type IS NOT NULL;"
    "CREATE TABLE es_commands(id TEXT PRIMARY KEY, type_id INTEGER NOT NULL,"
    " agg_id TEXT NOT NULL, outcome INTEGER NOT NULL, first_version INTEGER NOT NULL,"
    " last_version INTEGER NOT NULL, version INTEGER NOT NULL, reason TEXT) WITHOUT ROWID;"
    "INSERT INTO es_meta VALUES ('schema_version', '1');"
    "INSERT INTO es_types VALUES (1, 'test.thing');"
    "INSERT INTO es_streams VALUES (1, 1, 'old-1', 2, 2, 2, 'test.v1.State', x'733221', 5);";

static void insert_v1_event(sqlite3 *db, int64_t pos, uint64_t version) {
    es_event_t ev = {.aggregate_type = "test.thing",
                     .aggregate_id = "old-1",
                     .version = version,
                     .event_type = "test.v1.Happened",
                     .payload = (const uint8_t *)"abc",
                     .payload_len = 3};
    es_uuid7(ev.event_id);
    uint8_t *buf = NULL;
    size_t len = 0;
    cr_assert_eq(es_envelope_encode(&ev, &buf, &len, NULL), ES_OK);
    sqlite3_stmt *s = NULL;
    cr_assert_eq(
        sqlite3_prepare_v2(db, "INSERT INTO es_events VALUES (?1, 1, ?2, ?3, 1, ?4)", -1, &s, NULL),
        SQLITE_OK);
    sqlite3_bind_int64(s, 1, pos);
    sqlite3_bind_int64(s, 2, (int64_t)version);
    sqlite3_bind_int64(s, 3, pos - 1);
    sqlite3_bind_blob(s, 4, buf, (int)len, SQLITE_STATIC);
    cr_assert_eq(sqlite3_step(s), SQLITE_DONE);
    sqlite3_finalize(s);
    free(buf);
}

Test(store, a_version_1_file_is_upgraded_keeping_its_streams_and_snapshots) {
    char *path = tu_path(dir, "v1.db");
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, v1_schema, NULL, NULL, NULL), SQLITE_OK, "%s",
                 sqlite3_errmsg(db));
    insert_v1_event(db, 1, 1);
    insert_v1_event(db, 2, 2);
    sqlite3_close(db);

    es_store_t *old = NULL;
    es_config_t *cfg = tu_config(dir, "v1.db");
    es_error_t err = {0};
    cr_assert_eq(es_store_new(cfg, &old, &err), ES_OK, "%s", err.message);
    es_config_destroy(cfg);
    uint64_t version = 0;
    cr_assert_eq(es_store_stream_version(old, "test.thing", "old-1", &version, NULL), ES_OK);
    cr_assert_eq(version, 2);
    es_snapshot_t *snap = NULL;
    cr_assert_eq(es_store_get_snapshot(old, "test.thing", "old-1", &snap, &err), ES_OK, "%s",
                 err.message);
    cr_assert_eq(snap->version, 2);
    cr_assert_str_eq(snap->state_type, "test.v1.State");
    cr_assert_eq(snap->state_len, 3);
    cr_assert_eq(memcmp(snap->state, "s2!", 3), 0);
    es_snapshot_free(snap);
    es_new_event_t ne = {"test.v1.Happened", (const uint8_t *)"abc", 3, NULL, NULL, NULL, 0};
    cr_assert_eq(
        es_store_append(old, "test.thing", "old-1", ES_EXPECT_EXACT, 2, &ne, 1, NULL, &err), ES_OK,
        "%s", err.message);
    cr_assert_eq(tu_assert_stream_contiguous(old, "test.thing", "old-1"), 3);
    es_store_destroy(old);
    free(path);
}

Test(store, a_store_opened_read_only_reads_refuses_writes_and_creates_nothing) {
    append_n("t-1", ES_EXPECT_ANY, 0, 2, NULL, NULL);
    es_store_destroy(store);
    store = NULL;
    es_config_t *cfg = tu_config(dir, "store.db");
    es_store_t *ro = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_store_open(cfg, ES_OPEN_READONLY, &ro, &err), ES_OK, "%s", err.message);
    seen s = {0};
    cr_assert_eq(es_store_read_stream(ro, "test.thing", "t-1", 1, record, &s, &err), ES_OK, "%s",
                 err.message);
    cr_assert_eq(s.n, 2);
    es_new_event_t ev = {"test.v1.Happened", (const uint8_t *)"abc", 3, NULL, NULL, NULL, 0};
    cr_assert_eq(es_store_append(ro, "test.thing", "t-1", ES_EXPECT_ANY, 0, &ev, 1, NULL, &err),
                 ES_ESTATE);
    cr_assert(strstr(err.message, "read-only"), "%s", err.message);
    char *wal = tu_path(dir, "store.db-wal"), *shm = tu_path(dir, "store.db-shm");
    cr_assert_neq(access(wal, F_OK), 0, "a read-only open made %s", wal);
    cr_assert_neq(access(shm, F_OK), 0, "a read-only open made %s", shm);
    es_store_destroy(ro);
    /* A missing file is not created. */
    char *missing = tu_path(dir, "missing.db");
    es_config_set(cfg, "db", missing, NULL);
    cr_assert_eq(es_store_open(cfg, ES_OPEN_READONLY, &ro, &err), ES_ENOTFOUND);
    cr_assert_neq(access(missing, F_OK), 0);
    es_config_destroy(cfg);
    free(wal);
    free(shm);
    free(missing);
}

Test(store, a_store_whose_log_ends_below_its_head_file_does_not_open) {
    append_n("t-1", ES_EXPECT_ANY, 0, 3, NULL, NULL);
    es_store_destroy(store);
    store = NULL;
    char *path = tu_path(dir, "store.db");
    sqlite3 *h = NULL;
    cr_assert_eq(sqlite3_open(path, &h), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(h, "DELETE FROM es_events WHERE pos = 3", NULL, NULL, NULL),
                 SQLITE_OK);
    sqlite3_close(h);
    es_config_t *cfg = tu_config(dir, "store.db");
    es_error_t err = {0};
    es_store_t *s = NULL;
    cr_assert_eq(es_store_new(cfg, &s, &err), ES_EIO);
    cr_assert(strstr(err.message, "ends at position 2"), "%s", err.message);
    cr_assert(strstr(err.message, "position 3 as committed"), "%s", err.message);
    cr_assert_eq(es_store_open(cfg, ES_OPEN_READONLY, &s, &err), ES_EIO);
    int64_t before = 0, after = 0;
    cr_assert_eq(es_store_accept_end(cfg, &before, &after, &err), ES_OK, "%s", err.message);
    cr_assert_eq(before, 3);
    cr_assert_eq(after, 2);
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    es_config_destroy(cfg);
    free(path);
}

Test(store, commits_of_two_stores_on_one_file_keep_the_head_file_at_the_highest_end) {
    es_store_t *other = NULL;
    es_config_t *cfg = tu_config(dir, "store.db");
    cr_assert_eq(es_store_new(cfg, &other, NULL), ES_OK);
    append_n("t-1", ES_EXPECT_ANY, 0, 2, NULL, NULL);
    es_new_event_t ev = {"test.v1.Happened", (const uint8_t *)"abc", 3, NULL, NULL, NULL, 0};
    cr_assert_eq(es_store_append(other, "test.thing", "t-2", ES_EXPECT_ANY, 0, &ev, 1, NULL, NULL),
                 ES_OK);
    append_n("t-1", ES_EXPECT_ANY, 0, 1, NULL, NULL);
    es_store_destroy(other);
    es_verify_summary_t sum;
    es_error_t err = {0};
    cr_assert_eq(es_store_verify(cfg, NULL, NULL, NULL, &sum, &err), ES_OK, "%s", err.message);
    cr_assert_eq(sum.problems, 0);
    cr_assert_eq(sum.last, 4);
    cr_assert_eq(sum.recorded_end, 4);
    es_config_destroy(cfg);
}

Test(store, a_read_only_open_reads_a_store_of_schema_version_2_and_leaves_it_at_2) {
    append_n("t-1", ES_EXPECT_ANY, 0, 2, NULL, NULL);
    es_store_destroy(store);
    store = NULL;
    char *path = tu_path(dir, "store.db");
    sqlite3 *h = NULL;
    cr_assert_eq(sqlite3_open(path, &h), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(h,
                              "ALTER TABLE es_commands DROP COLUMN fingerprint; UPDATE es_meta SET "
                              "value = '2' WHERE key = 'schema_version'",
                              NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(h));
    sqlite3_close(h);
    es_config_t *cfg = tu_config(dir, "store.db");
    es_store_t *ro = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_store_open(cfg, ES_OPEN_READONLY, &ro, &err), ES_OK, "%s", err.message);
    seen s = {0};
    cr_assert_eq(es_store_read_stream(ro, "test.thing", "t-1", 1, record, &s, &err), ES_OK, "%s",
                 err.message);
    cr_assert_eq(s.n, 2);
    es_store_destroy(ro);
    cr_assert_eq(tu_query_int(path, "SELECT value FROM es_meta WHERE key = 'schema_version'"), 2);
    es_config_destroy(cfg);
    free(path);
}

/* Root's 'esctl verify --accept-end' on a service's store: the head file it makes is the
 * service's, or the service's writers cannot raise it and loss detection stops. */
Test(store, accepting_the_end_as_root_leaves_the_head_file_to_the_stores_owner) {
    append_n("t-1", ES_EXPECT_ANY, 0, 3, NULL, NULL);
    es_store_destroy(store);
    store = NULL;
    uid_t owner = geteuid() == 0 ? 65534 : geteuid();
    gid_t group = geteuid() == 0 ? 65534 : getegid();
    char *path = tu_path(dir, "store.db"), *head = tu_path(dir, "store.db-head");
    cr_assert_eq(unlink(head), 0);
    cr_assert_eq(chown(path, owner, group), 0);
    es_config_t *cfg = tu_config(dir, "store.db");
    es_error_t err = {0};
    int64_t before = 0, after = 0;
    cr_assert_eq(es_store_accept_end(cfg, &before, &after, &err), ES_OK, "%s", err.message);
    cr_assert_eq(before, -1);
    cr_assert_eq(after, 3);
    struct stat st;
    cr_assert_eq(stat(head, &st), 0);
    cr_assert_eq(st.st_uid, owner, "%s is owned by uid %u", head, (unsigned)st.st_uid);
    cr_assert_eq(st.st_gid, group);
    /* and it is the head file the store's writers keep */
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    es_config_destroy(cfg);
    free(path);
    free(head);
}

/* A writer that comes while a read-only open reads the file without locks (there was no -wal,
 * so it was opened immutable), simulated where SQLite lets code in: the auto-extension run at
 * the end of each sqlite3_open, the read-only one's included, before anything is read; or, from
 * there, a trace of that connection's statements, when one of them starts. */
static struct {
    int armed;
    int keep_open;      /* the writer stays (its -wal with it), or closes, checkpointing and
                           removing its -wal */
    size_t payload;     /* of the event it appends: a large one grows the file */
    const char *at_sql; /* comes when a statement with this text starts; NULL: at the open */
    es_store_t *writer;
} arrival;

static void arrive(void) {
    arrival.armed = 0;
    es_config_t *cfg = tu_config(dir, "store.db");
    es_store_t *w = NULL;
    uint8_t *payload = calloc(1, arrival.payload);
    es_new_event_t ev = {"test.v1.Happened", payload, arrival.payload, NULL, NULL, NULL, 0};
    es_error_t err = {0};
    if (es_store_new(cfg, &w, &err) != ES_OK ||
        es_store_append(w, "test.thing", "t-2", ES_EXPECT_ANY, 0, &ev, 1, NULL, &err) != ES_OK)
        fprintf(stderr, "the writer failed: %s\n", err.message);
    free(payload);
    es_config_destroy(cfg);
    if (arrival.keep_open)
        arrival.writer = w;
    else
        es_store_destroy(w);
}

static int on_statement(unsigned mask, void *ctx, void *stmt, void *sql) {
    (void)mask;
    (void)ctx;
    (void)stmt;
    if (arrival.armed && strstr(sql, arrival.at_sql))
        arrive();
    return 0;
}

static int on_open(sqlite3 *db, const char **msg, const void *api) {
    (void)msg;
    (void)api;
    if (!arrival.armed || !es_db_immutable(db))
        return SQLITE_OK;
    if (arrival.at_sql)
        sqlite3_trace_v2(db, SQLITE_TRACE_STMT, on_statement, NULL);
    else
        arrive();
    return SQLITE_OK;
}

/* Two events of t-1 in the store, closed; a writer of one event of t-2 on its way. */
static es_config_t *writer_coming(int keep_open, size_t payload, const char *at_sql) {
    append_n("t-1", ES_EXPECT_ANY, 0, 2, NULL, NULL);
    es_store_destroy(store);
    store = NULL;
    char *wal = tu_path(dir, "store.db-wal");
    cr_assert_neq(access(wal, F_OK), 0, "the store left %s", wal);
    free(wal);
    arrival.armed = 1;
    arrival.keep_open = keep_open;
    arrival.payload = payload;
    arrival.at_sql = at_sql;
    cr_assert_eq(sqlite3_auto_extension((void (*)(void))on_open), SQLITE_OK);
    return tu_config(dir, "store.db");
}

static void assert_read_only_open_reads_all(es_config_t *cfg) {
    es_store_t *ro = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_store_open(cfg, ES_OPEN_READONLY, &ro, &err), ES_OK, "%s", err.message);
    cr_assert_eq(arrival.armed, 0, "the writer came");
    seen s = {0};
    cr_assert_eq(es_store_read_log(ro, NULL, 1, 0, record, &s, NULL, &err), ES_OK, "%s",
                 err.message);
    cr_assert_eq(s.n, 3, "the writer's event is read too");
    es_store_destroy(ro);
    es_store_destroy(arrival.writer);
    sqlite3_reset_auto_extension();
    es_config_destroy(cfg);
}

/* Its commit is in a -wal the open does not read, and raised the head file: no loss. */
Test(store, a_writer_arriving_while_a_read_only_open_checks_the_end_is_not_reported_as_a_loss) {
    assert_read_only_open_reads_all(writer_coming(1, 3, NULL));
}

/* It checkpointed into the file under the open, and removed its -wal: no damage. */
Test(store, a_writer_that_came_and_went_while_a_read_only_open_read_is_not_reported_as_damage) {
    assert_read_only_open_reads_all(writer_coming(0, 64 * 1024, NULL));
}

/* After the open, while verify scans: the writer opens, appends (growing the file) and closes,
 * checkpointing into the file and removing its -wal before verify could look for one. */
Test(store, verify_tells_a_writer_came_and_went_while_it_read) {
    es_config_t *cfg = writer_coming(0, 64 * 1024, "integrity_check");
    es_verify_summary_t sum;
    es_error_t err = {0};
    cr_assert_eq(es_store_verify(cfg, NULL, NULL, NULL, &sum, &err), ES_OK, "%s", err.message);
    cr_assert_eq(arrival.armed, 0, "the writer came");
    cr_assert(sum.disturbed, "verify did not see the writer");
    sqlite3_reset_auto_extension();
    es_config_destroy(cfg);
}

Test(store, a_database_file_whose_size_or_time_changed_is_disturbed) {
    char *path = tu_path(dir, "store.db");
    es_db_stamp a, b;
    es_db_stamp_take(path, &a);
    es_db_stamp_take(path, &b);
    cr_assert(es_db_stamp_same(&a, &b));
    struct timespec times[2] = {{0, UTIME_OMIT}, {12345, 0}};
    cr_assert_eq(utimensat(AT_FDCWD, path, times, 0), 0);
    es_db_stamp_take(path, &b);
    cr_assert(!es_db_stamp_same(&a, &b), "a changed time is not seen");
    es_db_stamp_take(path, &a);
    cr_assert_eq(truncate(path, 1 << 20), 0);
    times[1].tv_sec = 12345;
    cr_assert_eq(utimensat(AT_FDCWD, path, times, 0), 0);
    es_db_stamp_take(path, &b);
    cr_assert(!es_db_stamp_same(&a, &b), "a changed size is not seen");
    es_db_stamp_take(path, &a);
    char *wal = tu_path(dir, "store.db-wal");
    FILE *f = fopen(wal, "w");
    cr_assert_not_null(f);
    fclose(f);
    es_db_stamp_take(path, &b);
    cr_assert(!es_db_stamp_same(&a, &b), "a -wal that came is not seen");
    free(wal);
    free(path);
}

/* A store open on it (its -wal and -shm made with room to spare), its head file removed:
 * the next writer makes one, on a full disk. */
static es_store_t *first_writer;

static int store_with_room(const char *where, void *opaque) {
    (void)opaque;
    es_config_t *cfg = tu_config(where, "store.db");
    es_error_t err = {0};
    es_new_event_t ev = {"test.v1.Happened", (const uint8_t *)"abc", 3, NULL, NULL, NULL, 0};
    int ok = es_store_new(cfg, &first_writer, &err) == ES_OK &&
             es_store_append(first_writer, "test.thing", "t-1", ES_EXPECT_ANY, 0, &ev, 1, NULL,
                             &err) == ES_OK;
    char *head = tu_path(where, "store.db-head");
    ok = ok && unlink(head) == 0;
    if (!ok)
        fprintf(stderr, "setting up: %s\n", err.message);
    free(head);
    es_config_destroy(cfg);
    return ok ? 0 : 1;
}

static int open_store_on_full_disk(const char *where, void *opaque) {
    (void)opaque;
    es_config_t *cfg = tu_config(where, "store.db");
    char *head = tu_path(where, "store.db-head");
    es_store_t *s = NULL;
    es_error_t err = {0};
    es_err e = es_store_new(cfg, &s, &err);
    fprintf(stderr, "es_store_new: %d %s\n", e, err.message);
    int ok = e == ES_EIO && strstr(err.message, head) && strstr(err.message, "disk is full");
    es_store_destroy(s);
    es_config_destroy(cfg);
    free(head);
    return ok ? 0 : 1;
}

Test(store, a_head_file_made_on_a_full_disk_is_an_error_saying_so_not_a_crash) {
    int status = tu_on_full_disk(dir, store_with_room, open_store_on_full_disk, NULL);
    cr_assert_neq(status, -SIGBUS, "the head file's first write killed the process with SIGBUS");
    cr_assert_eq(status, 0, "exit status %d (see stderr)", status);
}

/* The backend factory answers for each backend by what it is, and refuses a name it does not
 * know (a config built without es_config_set's check). */
Test(store, backend_info_tells_each_backend_by_what_it_is) {
    es_error_t err = {0};
    es_backend_info_t info;
    es_config_t *c = es_config_new();
    cr_assert_eq(es_backend_info(c, &info, &err), ES_OK, "%s", err.message);
    cr_assert_str_eq(info.name, "embedded");
    cr_assert(info.local_file && !info.partitioned);
    cr_assert_eq(es_config_set(c, "brokers", "127.0.0.1:1", &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_backend_info(c, &info, &err), ES_OK, "%s", err.message);
    cr_assert_str_eq(info.name, "kafka");
    cr_assert(!info.local_file && info.partitioned);
    cr_assert_eq(es_config_set(c, "backend", "tape", &err), ES_EINVAL);
    cr_assert_not_null(strstr(err.message, "use embedded or kafka"), "%s", err.message);
    cr_assert_eq(es_backend_info(c, NULL, &err), ES_EINVAL);
    es_config_destroy(c);
}
