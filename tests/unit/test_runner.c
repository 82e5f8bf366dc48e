/*
 * The runner with projectors defined in this file: checkpoints, batch size,
 * policies (stop, ignore unknown types, retry), schema-version rebuilds,
 * definition checks and the guards against sharing files or tables.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static char *dir;
static es_config_t *cfg;
static es_store_t *store;
static int transient_left; /* ES_ERETRY answers still to give */

static void setup(void) {
    dir = tu_tempdir();
    cfg = tu_config(dir, "events.db");
    char *rm = tu_path(dir, "read.db");
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "readmodel.db", rm, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_config_set(cfg, "projector.retry.backoff.ms", "1", &err), ES_OK);
    free(rm);
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    transient_left = 0;
}

static void teardown(void) {
    es_store_destroy(store);
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(dir);
}

TestSuite(runner, .init = setup, .fini = teardown);

/* Payload: the event's text; "unknown" events are typed test.v1.Unknown. */
static void append(const char *id, const char *type, const char *text) {
    es_new_event_t ev = {type, (const uint8_t *)text, strlen(text), NULL, NULL, NULL, 0};
    es_error_t err = {0};
    cr_assert_eq(es_store_append(store, "test.note", id, ES_EXPECT_ANY, 0, &ev, 1, NULL, &err),
                 ES_OK, "%s", err.message);
}

static es_err migrate_v1(sqlite3 *db, int from, es_error_t *err) {
    (void)from;
    if (sqlite3_exec(db, "CREATE TABLE notes(id TEXT, version INT, body TEXT)", NULL, NULL, NULL) !=
        SQLITE_OK)
        return es_fail(err, ES_EIO, "create notes: %s", sqlite3_errmsg(db));
    return ES_OK;
}

static es_err migrate_v2(sqlite3 *db, int from, es_error_t *err) {
    (void)from;
    if (sqlite3_exec(db, "CREATE TABLE notes_v2(id TEXT, version INT, body TEXT, len INT)", NULL,
                     NULL, NULL) != SQLITE_OK)
        return es_fail(err, ES_EIO, "create notes_v2: %s", sqlite3_errmsg(db));
    return ES_OK;
}

static es_err apply_common(es_projector_ctx_t *ctx, const es_event_t *ev, const char *sql,
                           es_error_t *err) {
    if (!strcmp(ev->event_type, "test.v1.Unknown"))
        return es_fail(err, ES_EUNKNOWN_TYPE, "no such event type %s", ev->event_type);
    if (!strcmp(ev->event_type, "test.v1.Flaky") && transient_left > 0) {
        transient_left--;
        return es_fail(err, ES_ERETRY, "flaky, try again");
    }
    if (!strcmp(ev->event_type, "test.v1.Broken"))
        return es_fail(err, ES_EINVAL, "cannot apply %s of %s", ev->event_type, ev->aggregate_id);
    sqlite3_stmt *s = es_ctx_stmt(ctx, sql, err);
    if (!s)
        return err->code;
    sqlite3_bind_text(s, 1, ev->aggregate_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)ev->version);
    sqlite3_bind_text(s, 3, (const char *)ev->payload, (int)ev->payload_len, SQLITE_STATIC);
    return es_ctx_exec(ctx, s, err);
}

static es_err apply_v1(es_projector_ctx_t *ctx, const es_event_t *ev, es_error_t *err) {
    return apply_common(ctx, ev, "INSERT INTO notes VALUES (?1, ?2, ?3)", err);
}

static es_err apply_v2(es_projector_ctx_t *ctx, const es_event_t *ev, es_error_t *err) {
    return apply_common(ctx, ev, "INSERT INTO notes_v2 VALUES (?1, ?2, ?3, length(?3))", err);
}

static const char *const topics[] = {"test.note.events", NULL};
static const es_projector_def notes_v1 = {ES_PROJECTOR_ABI, "notes",  1,    topics,
                                          migrate_v1,       apply_v1, NULL, NULL};
static const es_projector_def notes_v2 = {ES_PROJECTOR_ABI, "notes",  2,    topics,
                                          migrate_v2,       apply_v2, NULL, NULL};

static long long query_int(const char *sql) {
    char *path = tu_path(dir, "read.db");
    long long v = tu_query_int(path, sql);
    free(path);
    return v;
}

static size_t drain(es_runner_t *r) {
    size_t total = 0, n;
    es_error_t err = {0};
    do {
        cr_assert_eq(es_runner_poll(r, 0, &n, &err), ES_OK, "%s", err.message);
        total += n;
    } while (n);
    return total;
}

static es_runner_t *runner(const es_projector_def *def) {
    es_runner_t *r = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_runner_new(cfg, def, &r, &err), ES_OK, "%s", err.message);
    return r;
}

Test(runner, applies_each_event_once_and_checkpoints_in_batches) {
    char id[16];
    for (int i = 0; i < 25; i++) {
        snprintf(id, sizeof id, "n-%d", i % 5);
        append(id, "test.v1.Noted", "hello");
    }
    es_config_set(cfg, "projector.batch.size", "10", NULL);
    es_runner_t *r = runner(&notes_v1);
    cr_assert_eq(drain(r), 25);
    es_runner_stats_t st;
    es_runner_stats(r, &st);
    cr_assert_eq(st.applied, 25);
    cr_assert_eq(st.batches, 3, "25 events in batches of 10 take 3 commits, got %llu",
                 (unsigned long long)st.batches);
    cr_assert_eq(drain(r), 0, "a drained runner applies nothing more");
    es_runner_destroy(r);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 25);
    cr_assert_eq(query_int("SELECT count(DISTINCT id || '/' || version) FROM notes"), 25);
    cr_assert_eq(query_int("SELECT next_offset FROM es_checkpoints WHERE projector = 'notes'"), 26);

    append("n-9", "test.v1.Noted", "later");
    r = runner(&notes_v1);
    cr_assert_eq(drain(r), 1, "a new runner starts at the stored checkpoint");
    es_runner_destroy(r);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 26);
}

Test(runner, lag_reports_checkpoint_end_and_backlog) {
    for (int i = 0; i < 4; i++)
        append("n-1", "test.v1.Noted", "x");
    es_runner_t *r = runner(&notes_v1);
    drain(r);
    append("n-1", "test.v1.Noted", "y");
    append("n-2", "test.v1.Noted", "z");
    es_lag_row_t *rows = NULL;
    size_t n = 0;
    es_error_t err = {0};
    cr_assert_eq(es_lag(cfg, &rows, &n, &err), ES_OK, "%s", err.message);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(rows[0].projector, "notes");
    cr_assert_str_eq(rows[0].topic, "test.note.events");
    cr_assert_eq(rows[0].checkpoint, 5);
    cr_assert_eq(rows[0].end, 7);
    cr_assert_eq(rows[0].lag, 2);
    free(rows);
    es_runner_destroy(r);
}

Test(runner, transient_failures_are_retried_then_applied) {
    append("n-1", "test.v1.Flaky", "a");
    append("n-2", "test.v1.Noted", "b");
    transient_left = 3; /* projector.retries is 3 */
    es_runner_t *r = runner(&notes_v1);
    cr_assert_eq(drain(r), 2);
    es_runner_stats_t st;
    es_runner_stats(r, &st);
    cr_assert_eq(transient_left, 0);
    cr_assert_geq(st.retries, 1);
    cr_assert_eq(st.parked, 0);
    es_runner_destroy(r);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 2);
}

Test(runner, a_failure_that_stays_transient_is_parked_after_the_retries) {
    append("n-1", "test.v1.Flaky", "a");
    append("n-2", "test.v1.Noted", "b");
    transient_left = 1000;
    es_config_set(cfg, "projector.retries", "2", NULL);
    es_runner_t *r = runner(&notes_v1);
    cr_assert_eq(drain(r), 2);
    es_runner_destroy(r);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 1);
    cr_assert_eq(query_int("SELECT attempts FROM es_dlq WHERE key = 'n-1'"), 3);
    cr_assert_eq(query_int("SELECT code FROM es_dlq WHERE key = 'n-1'"), ES_ERETRY);
}

Test(runner, a_failing_event_is_parked_alone_and_its_neighbours_applied) {
    append("n-1", "test.v1.Noted", "a");
    append("n-2", "test.v1.Broken", "b");
    append("n-3", "test.v1.Noted", "c");
    es_runner_t *r = runner(&notes_v1);
    cr_assert_eq(drain(r), 3);
    es_runner_destroy(r);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 2);
    es_dlq_entry_t *d = NULL;
    size_t n = 0;
    es_error_t err = {0};
    cr_assert_eq(es_dlq_list(cfg, "notes", false, &d, &n, &err), ES_OK, "%s", err.message);
    cr_assert_eq(n, 1);
    cr_assert_eq(d[0].offset, 2);
    cr_assert_str_eq(d[0].key, "n-2");
    cr_assert_str_eq(d[0].event_type, "test.v1.Broken");
    cr_assert_eq(d[0].code, ES_EINVAL);
    cr_assert(strstr(d[0].error, "cannot apply test.v1.Broken of n-2"), "%s", d[0].error);
    free(d);
}

Test(runner, policy_stop_halts_on_the_failing_event_and_keeps_the_batch_out) {
    append("n-1", "test.v1.Noted", "a");
    append("n-2", "test.v1.Broken", "b");
    es_config_set(cfg, "projector.on.error", "stop", NULL);
    es_runner_t *r = runner(&notes_v1);
    size_t n = 0;
    es_error_t err = {0};
    cr_assert_eq(es_runner_poll(r, 0, &n, &err), ES_ESTATE);
    cr_assert(strstr(err.message, "offset 2"), "%s", err.message);
    cr_assert(strstr(err.message, "test.v1.Broken"), "%s", err.message);
    cr_assert_eq(es_runner_poll(r, 0, &n, &err), ES_ESTATE, "it stays stopped on that event");
    es_runner_destroy(r);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 0);
    cr_assert_eq(query_int("SELECT count(*) FROM es_dlq"), 0);
}

Test(runner, unknown_types_are_parked_or_ignored_by_policy) {
    append("n-1", "test.v1.Unknown", "a");
    append("n-2", "test.v1.Noted", "b");
    es_runner_t *r = runner(&notes_v1);
    drain(r);
    es_runner_destroy(r);
    cr_assert_eq(query_int("SELECT count(*) FROM es_dlq WHERE code = -10"), 1);

    append("n-3", "test.v1.Unknown", "c");
    es_config_set(cfg, "projector.on.unknown", "ignore", NULL);
    r = runner(&notes_v1);
    drain(r);
    es_runner_stats_t st;
    es_runner_stats(r, &st);
    cr_assert_eq(st.ignored, 1);
    es_runner_destroy(r);
    cr_assert_eq(query_int("SELECT count(*) FROM es_dlq"), 1);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 1);
}

Test(runner, a_higher_schema_version_rebuilds_the_read_model) {
    append("n-1", "test.v1.Noted", "abc");
    append("n-2", "test.v1.Noted", "de");
    es_runner_t *r = runner(&notes_v1);
    drain(r);
    es_runner_destroy(r);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 2);

    r = runner(&notes_v2);
    cr_assert_eq(drain(r), 0, "the rebuild already caught up");
    es_runner_destroy(r);
    cr_assert_eq(query_int("SELECT count(*) FROM sqlite_master WHERE name = 'notes'"), 0,
                 "the old schema's table is gone");
    cr_assert_eq(query_int("SELECT sum(len) FROM notes_v2"), 5);
    cr_assert_eq(query_int("SELECT schema_version FROM es_projectors WHERE name = 'notes'"), 2);

    es_error_t err = {0};
    cr_assert_eq(es_runner_new(cfg, &notes_v1, &r, &err), ES_ESTATE,
                 "an older module does not run on a newer read model");
    cr_assert(strstr(err.message, "schema version 2"), "%s", err.message);
}

Test(runner, bad_definitions_are_refused_naming_the_problem) {
    es_runner_t *r = NULL;
    es_error_t err = {0};
    es_projector_def bad = notes_v1;
    bad.abi_version = 99;
    cr_assert_eq(es_runner_new(cfg, &bad, &r, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "ABI version 99"), "%s", err.message);
    bad = notes_v1;
    bad.name = "Bad Name";
    cr_assert_eq(es_runner_new(cfg, &bad, &r, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "'Bad Name'"), "%s", err.message);
    static const char *const bad_topics[] = {"test.note", NULL};
    bad = notes_v1;
    bad.topics = bad_topics;
    cr_assert_eq(es_runner_new(cfg, &bad, &r, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "'test.note'"), "%s", err.message);
    bad = notes_v1;
    bad.apply = NULL;
    cr_assert_eq(es_runner_new(cfg, &bad, &r, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "lacks apply"), "%s", err.message);
}

Test(runner, the_read_model_may_not_be_the_event_store_file) {
    char *db = tu_path(dir, "events.db");
    es_config_set(cfg, "readmodel.db", db, NULL);
    es_runner_t *r = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_runner_new(cfg, &notes_v1, &r, &err), ES_EINVAL);
    cr_assert(strstr(err.message, db), "%s", err.message);
    free(db);
}

Test(runner, replay_refuses_to_replace_a_table_another_projector_owns) {
    static const es_projector_def other = {ES_PROJECTOR_ABI, "other",  1,    topics,
                                           migrate_v2,       apply_v2, NULL, NULL};
    append("n-1", "test.v1.Noted", "abc");
    es_runner_t *r = runner(&notes_v2);
    drain(r);
    es_runner_destroy(r);
    es_error_t err = {0};
    cr_assert_eq(es_replay(cfg, &other, NULL, NULL, &err), ES_ESTATE);
    cr_assert(strstr(err.message, "notes_v2"), "%s", err.message);
    cr_assert(strstr(err.message, "'notes'"), "%s", err.message);
    cr_assert_eq(query_int("SELECT count(*) FROM notes_v2"), 1, "the live model is untouched");
}

Test(runner, config_keys_of_the_runner_are_checked) {
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "projector.on.error", "explode", &err), ES_EINVAL);
    cr_assert(strstr(err.message, "projector.on.error"), "%s", err.message);
    cr_assert_eq(es_config_set(cfg, "projector.batch.size", "0", &err), ES_EINVAL);
    cr_assert(strstr(err.message, "projector.batch.size"), "%s", err.message);
    cr_assert_eq(es_config_set(cfg, "projector.batch.sise", "5", &err), ES_EINVAL);
    cr_assert(strstr(err.message, "projector.batch.sise"), "%s", err.message);
}

Test(runner, a_read_model_of_another_log_is_refused_until_replayed) {
    append("n-1", "test.v1.Noted", "abc");
    es_runner_t *r = runner(&notes_v1);
    drain(r);
    es_runner_destroy(r);

    /* Same read model, a new event log file. */
    char *other = tu_path(dir, "other-events.db");
    es_config_set(cfg, "db", other, NULL);
    es_store_destroy(store);
    es_error_t err = {0};
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    append("n-7", "test.v1.Noted", "x");
    append("n-8", "test.v1.Noted", "y");
    cr_assert_eq(es_runner_new(cfg, &notes_v1, &r, &err), ES_ESTATE);
    cr_assert(strstr(err.message, "another event log"), "%s", err.message);
    cr_assert(strstr(err.message, "esctl replay notes"), "%s", err.message);

    cr_assert_eq(es_replay(cfg, &notes_v1, NULL, NULL, &err), ES_OK, "%s", err.message);
    r = runner(&notes_v1);
    cr_assert_eq(drain(r), 0);
    es_runner_destroy(r);
    cr_assert_eq(query_int("SELECT count(*) FROM notes WHERE id IN ('n-7', 'n-8')"), 2);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 2);
    free(other);
}
