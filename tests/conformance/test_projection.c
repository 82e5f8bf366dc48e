/*
 * The projector runner's behaviour, the same on both backends (CTest runs
 * this file with CONFORMANCE_BACKEND=embedded and =kafka): exactly-once
 * application with checkpoints, lag, retries, the DLQ and redrive, policies,
 * schema-version rebuilds and replay.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "notes.h"
#include "testutil.h"

#define TYPE "test.note"
#define WAIT_MS 15000

static tb_t *b;

static void setup(void) {
    static const char *const types[] = {TYPE, NULL};
    b = tb_open(types);
    notes_transient_left = 0;
    notes_fixed = 0;
}

static void teardown(void) {
    tb_close(b);
}

TestSuite(projection, .init = setup, .fini = teardown, .timeout = 120);

static void note(const char *id, const char *event_type, const char *text) {
    tb_append(b, TYPE, id, event_type, text, strlen(text));
}

static long long query_int(const char *sql) {
    char *path = tu_path(tb_dir(b), "read.db");
    long long v = tu_query_int(path, sql);
    free(path);
    return v;
}

static es_runner_t *runner(const es_projector_def *def) {
    es_runner_t *r = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_runner_new(tb_config(b), def, &r, &err), ES_OK, "%s", err.message);
    return r;
}

static uint64_t handled(const es_runner_stats_t *st) {
    return st->applied + st->parked + st->ignored + st->stale;
}

/* Polls until the runner has handled n more records (a Kafka fetch can come back empty
 * before records arrive, so an empty poll is no proof of the end), then checks one more
 * poll finds nothing. */
static es_runner_stats_t drain(es_runner_t *r, uint64_t n) {
    es_runner_stats_t st;
    es_runner_stats(r, &st);
    uint64_t want = handled(&st) + n;
    int64_t deadline = es_now_us() + WAIT_MS * 1000LL;
    es_error_t err = {0};
    while (handled(&st) < want) {
        cr_assert_lt(es_now_us(), deadline, "handled %llu of %llu records",
                     (unsigned long long)handled(&st), (unsigned long long)want);
        cr_assert_eq(es_runner_poll(r, 50, NULL, &err), ES_OK, "%s", err.message);
        es_runner_stats(r, &st);
    }
    size_t more = 0;
    cr_assert_eq(es_runner_poll(r, 20, &more, &err), ES_OK, "%s", err.message);
    cr_assert_eq(more, 0, "%zu records past the expected end", more);
    es_runner_stats(r, &st);
    return st;
}

Test(projection, every_event_is_applied_once_and_a_new_runner_resumes_at_the_checkpoints) {
    char id[16];
    for (int i = 0; i < 25; i++) {
        snprintf(id, sizeof id, "n-%d", i % 5);
        note(id, "test.v1.Noted", "hello");
    }
    es_config_set(tb_config(b), "projector.batch.size", "10", NULL);
    es_runner_t *r = runner(&notes_v1);
    es_runner_stats_t st = drain(r, 25);
    cr_assert_eq(st.applied, 25);
    cr_assert_geq(st.batches, 3, "batches of at most 10 events: %llu",
                  (unsigned long long)st.batches);
    es_runner_destroy(r);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 25);

    note("n-9", "test.v1.Noted", "later");
    r = runner(&notes_v1);
    st = drain(r, 1);
    cr_assert_eq(st.applied, 1, "a new runner starts at the stored checkpoints");
    es_runner_destroy(r);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 26);
}

Test(projection, lag_counts_what_lies_between_checkpoints_and_ends) {
    for (int i = 0; i < 4; i++)
        note("n-1", "test.v1.Noted", "x");
    es_runner_t *r = runner(&notes_v1);
    drain(r, 4);
    note("n-1", "test.v1.Noted", "y");
    note("n-2", "test.v1.Noted", "z");
    es_lag_row_t *rows = NULL;
    size_t n = 0;
    es_error_t err = {0};
    cr_assert_eq(es_lag(tb_config(b), &rows, &n, &err), ES_OK, "%s", err.message);
    cr_assert_eq(n, tb_kafka(b) ? TB_PARTITIONS : 1);
    uint64_t lag = 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(rows[i].projector, "notes");
        cr_assert_str_eq(rows[i].topic, TYPE ".events");
        cr_assert_geq(rows[i].end, rows[i].checkpoint);
        lag += rows[i].lag;
    }
    cr_assert_eq(lag, 2);
    free(rows);
    drain(r, 2);
    cr_assert_eq(es_lag(tb_config(b), &rows, &n, &err), ES_OK, "%s", err.message);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(rows[i].lag, 0);
    free(rows);
    es_runner_destroy(r);
}

Test(projection, transient_failures_are_retried_then_applied) {
    note("n-1", "test.v1.Flaky", "a");
    note("n-2", "test.v1.Noted", "b");
    notes_transient_left = 3; /* projector.retries is 3 */
    es_runner_t *r = runner(&notes_v1);
    es_runner_stats_t st = drain(r, 2);
    cr_assert_eq(notes_transient_left, 0);
    cr_assert_geq(st.retries, 1);
    cr_assert_eq(st.parked, 0);
    es_runner_destroy(r);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 2);
}

Test(projection, a_failure_that_stays_transient_is_parked_after_the_retries) {
    note("n-1", "test.v1.Flaky", "a");
    note("n-2", "test.v1.Noted", "b");
    notes_transient_left = 1000;
    es_config_set(tb_config(b), "projector.retries", "2", NULL);
    es_runner_t *r = runner(&notes_v1);
    drain(r, 2);
    es_runner_destroy(r);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 1);
    cr_assert_eq(query_int("SELECT attempts FROM es_dlq WHERE key = 'n-1'"), 3);
    cr_assert_eq(query_int("SELECT code FROM es_dlq WHERE key = 'n-1'"), ES_ERETRY);
}

Test(projection, a_failing_event_is_parked_alone_and_redriven_once_after_a_fix) {
    note("n-1", "test.v1.Noted", "a");
    note("n-2", "test.v1.Broken", "b");
    note("n-3", "test.v1.Noted", "c");
    es_runner_t *r = runner(&notes_v1);
    drain(r, 3);
    es_runner_destroy(r);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 2);
    es_dlq_entry_t *d = NULL;
    size_t n = 0;
    es_error_t err = {0};
    cr_assert_eq(es_dlq_list(tb_config(b), "notes", false, &d, &n, &err), ES_OK, "%s", err.message);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(d[0].topic, TYPE ".events");
    cr_assert_str_eq(d[0].key, "n-2");
    cr_assert_str_eq(d[0].event_type, "test.v1.Broken");
    cr_assert_eq(d[0].code, ES_EINVAL);
    cr_assert(strstr(d[0].error, "cannot apply test.v1.Broken of n-2"), "%s", d[0].error);
    int64_t id = d[0].id;
    free(d);

    size_t applied = 0, failed = 0;
    cr_assert_eq(es_dlq_redrive(tb_config(b), &notes_v1, &id, 1, &applied, &failed, &err), ES_OK,
                 "%s", err.message);
    cr_assert_eq(applied, 0, "still broken");
    cr_assert_eq(failed, 1);
    notes_fixed = 1;
    cr_assert_eq(es_dlq_redrive(tb_config(b), &notes_v1, NULL, 0, &applied, &failed, &err), ES_OK,
                 "%s", err.message);
    cr_assert_eq(applied, 1);
    cr_assert_eq(es_dlq_redrive(tb_config(b), &notes_v1, NULL, 0, &applied, &failed, &err), ES_OK,
                 "%s", err.message);
    cr_assert_eq(applied + failed, 0, "a redriven event is not applied again");
    cr_assert_eq(query_int("SELECT count(*) FROM notes WHERE id = 'n-2'"), 1);
}

Test(projection, policy_stop_halts_on_the_failing_event_and_keeps_the_batch_out) {
    note("n-1", "test.v1.Noted", "a");
    note("n-2", "test.v1.Broken", "b");
    es_config_set(tb_config(b), "projector.on.error", "stop", NULL);
    es_runner_t *r = runner(&notes_v1);
    int64_t deadline = es_now_us() + WAIT_MS * 1000LL;
    es_error_t err = {0};
    es_err rc;
    while ((rc = es_runner_poll(r, 50, NULL, &err)) == ES_OK)
        cr_assert_lt(es_now_us(), deadline, "the runner never stopped");
    cr_assert_eq(rc, ES_ESTATE, "%s", err.message);
    cr_assert(strstr(err.message, "test.v1.Broken"), "%s", err.message);
    cr_assert(strstr(err.message, "offset"), "%s", err.message);
    while ((rc = es_runner_poll(r, 50, NULL, &err)) == ES_OK) /* a fetch may come back empty */
        cr_assert_lt(es_now_us(), deadline, "the runner went on past the event");
    cr_assert_eq(rc, ES_ESTATE, "it stays stopped on that event: %s", err.message);
    es_runner_destroy(r);
    cr_assert_eq(query_int("SELECT count(*) FROM es_dlq"), 0);
    cr_assert_eq(query_int("SELECT count(*) FROM notes WHERE id = 'n-2'"), 0);
}

Test(projection, unknown_types_are_parked_or_ignored_by_policy) {
    note("n-1", "test.v1.Unknown", "a");
    note("n-2", "test.v1.Noted", "b");
    es_runner_t *r = runner(&notes_v1);
    drain(r, 2);
    es_runner_destroy(r);
    cr_assert_eq(query_int("SELECT count(*) FROM es_dlq WHERE code = -10"), 1);

    note("n-3", "test.v1.Unknown", "c");
    es_config_set(tb_config(b), "projector.on.unknown", "ignore", NULL);
    r = runner(&notes_v1);
    es_runner_stats_t st = drain(r, 1);
    cr_assert_eq(st.ignored, 1);
    es_runner_destroy(r);
    cr_assert_eq(query_int("SELECT count(*) FROM es_dlq"), 1);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 1);
}

Test(projection, a_higher_schema_version_rebuilds_the_read_model) {
    note("n-1", "test.v1.Noted", "abc");
    note("n-2", "test.v1.Noted", "de");
    es_runner_t *r = runner(&notes_v1);
    drain(r, 2);
    es_runner_destroy(r);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 2);

    r = runner(&notes_v2);
    es_runner_destroy(r);
    cr_assert_eq(query_int("SELECT count(*) FROM sqlite_master WHERE name = 'notes'"), 0,
                 "the old schema's table is gone");
    cr_assert_eq(query_int("SELECT sum(len) FROM notes_v2"), 5);
    cr_assert_eq(query_int("SELECT schema_version FROM es_projectors WHERE name = 'notes'"), 2);
}

Test(projection, a_replay_equals_the_live_model) {
    char id[16], text[32];
    for (int i = 0; i < 60; i++) {
        snprintf(id, sizeof id, "n-%d", i % 7);
        snprintf(text, sizeof text, "text %d", i);
        note(id, "test.v1.Noted", text);
    }
    es_runner_t *r = runner(&notes_v1);
    drain(r, 60);
    es_runner_destroy(r);
    long long live = query_int("SELECT sum(length(body) * version) FROM notes");
    es_error_t err = {0};
    es_replay_result_t res = {0};
    cr_assert_eq(es_replay(tb_config(b), &notes_v1, NULL, &res, &err), ES_OK, "%s", err.message);
    cr_assert_eq(res.events, 60);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 60);
    cr_assert_eq(query_int("SELECT sum(length(body) * version) FROM notes"), live);
}

/* notes_v1 that asks its runner to stop once it has applied stop_after events. */
static es_runner_t *stopping_runner;
static int stop_after, applied_so_far;

static es_err apply_then_stop(es_projector_ctx_t *ctx, const es_event_t *ev, es_error_t *err) {
    es_err rc = notes_v1.apply(ctx, ev, err);
    if (rc == ES_OK && ++applied_so_far == stop_after)
        es_runner_stop(stopping_runner);
    return rc;
}

static uint64_t total_lag(void) {
    es_lag_row_t *rows = NULL;
    size_t n = 0;
    es_error_t err = {0};
    cr_assert_eq(es_lag(tb_config(b), &rows, &n, &err), ES_OK, "%s", err.message);
    uint64_t lag = 0;
    for (size_t i = 0; i < n; i++)
        lag += rows[i].lag;
    free(rows);
    return lag;
}

Test(projection, a_stop_ends_the_batch_at_the_next_event_and_the_runner_goes_on_from_there) {
    char id[16];
    for (int i = 0; i < 25; i++) {
        snprintf(id, sizeof id, "n-%d", i % 5);
        note(id, "test.v1.Noted", "hello");
    }
    es_config_set(tb_config(b), "projector.batch.size", "100", NULL);
    es_projector_def def = notes_v1;
    def.apply = apply_then_stop;
    es_runner_t *r = runner(&def);
    stopping_runner = r;
    stop_after = 10;
    es_error_t err = {0};
    cr_assert_eq(es_runner_run(r, &err), ES_OK, "%s", err.message);
    es_runner_stats_t st;
    es_runner_stats(r, &st);
    cr_assert_eq(st.applied, 10, "the batch went on past the stop: %llu applied",
                 (unsigned long long)st.applied);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 10, "what was applied is committed");
    cr_assert_eq(total_lag(), 15, "the checkpoints are those of the 10 events applied");
    /* The record the stop came before was handed back: the rest arrive, each once. */
    stop_after = 0;
    st = drain(r, 15);
    cr_assert_eq(st.applied, 25);
    cr_assert_eq(st.parked, 0);
    es_runner_destroy(r);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 25);
    cr_assert_eq(total_lag(), 0);
}

Test(projection, catch_up_applies_everything_appended_before_the_call) {
    char id[16];
    for (int i = 0; i < 25; i++) {
        snprintf(id, sizeof id, "n-%d", i % 5);
        note(id, "test.v1.Noted", "hello");
    }
    es_config_set(tb_config(b), "projector.batch.size", "10", NULL);
    es_runner_t *r = runner(&notes_v1); /* it has not polled yet */
    es_error_t err = {0};
    cr_assert_eq(es_runner_catch_up(r, WAIT_MS, &err), ES_OK, "%s", err.message);
    es_runner_stats_t st;
    es_runner_stats(r, &st);
    cr_assert_eq(st.applied, 25);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 25);
    cr_assert_eq(total_lag(), 0);
    es_runner_destroy(r);
}

Test(projection, catch_up_with_nothing_to_do_returns_at_once) {
    es_runner_t *r = runner(&notes_v1);
    es_error_t err = {0};
    int64_t t0 = es_now_us();
    cr_assert_eq(es_runner_catch_up(r, WAIT_MS, &err), ES_OK, "empty log: %s", err.message);
    note("n-1", "test.v1.Noted", "a");
    cr_assert_eq(es_runner_catch_up(r, WAIT_MS, &err), ES_OK, "%s", err.message);
    int64_t t1 = es_now_us();
    cr_assert_eq(es_runner_catch_up(r, WAIT_MS, &err), ES_OK, "caught up: %s", err.message);
    cr_assert_eq(es_runner_catch_up(r, 0, &err), ES_OK, "timeout 0 only checks: %s", err.message);
    int64_t t2 = es_now_us();
    cr_assert_lt(t1 - t0, WAIT_MS * 1000LL / 3, "took %lld ms", (long long)(t1 - t0) / 1000);
    cr_assert_lt(t2 - t1, 2000 * 1000LL, "nothing due took %lld ms", (long long)(t2 - t1) / 1000);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 1);
    es_runner_destroy(r);
}

Test(projection, catch_up_past_its_timeout_is_a_timeout_naming_the_partition_behind) {
    char id[16];
    for (int i = 0; i < 60; i++) {
        snprintf(id, sizeof id, "n-%d", i % 6);
        note(id, "test.v1.Noted", "hello");
    }
    es_config_set(tb_config(b), "projector.batch.size", "1", NULL);
    es_runner_t *r = runner(&notes_v1);
    es_error_t err = {0};
    cr_assert_eq(es_runner_catch_up(r, 0, &err), ES_ETIMEOUT);
    cr_assert(strstr(err.message,
                     "projector 'notes': not caught up within 0 ms: " TYPE ".events partition "),
              "%s", err.message);
    cr_assert(strstr(err.message, "records short of offset"), "%s", err.message);
    cr_assert_eq(es_runner_catch_up(r, 1, &err), ES_ETIMEOUT, "60 batches in 1 ms");
    cr_assert(strstr(err.message, "partitions behind"), "%s", err.message);
    cr_assert_lt(query_int("SELECT count(*) FROM notes"), 60);
    cr_assert_eq(es_runner_catch_up(r, WAIT_MS, &err), ES_OK, "%s", err.message);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 60);
    es_runner_destroy(r);
}

Test(projection, catch_up_counts_a_parked_event_as_passed) {
    note("n-1", "test.v1.Noted", "a");
    note("n-2", "test.v1.Broken", "b");
    es_runner_t *r = runner(&notes_v1);
    es_error_t err = {0};
    cr_assert_eq(es_runner_catch_up(r, WAIT_MS, &err), ES_OK, "%s", err.message);
    es_runner_stats_t st;
    es_runner_stats(r, &st);
    cr_assert_eq(st.parked, 1);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 1);
    cr_assert_eq(query_int("SELECT count(*) FROM es_dlq WHERE key = 'n-2'"), 1);
    cr_assert_eq(total_lag(), 0);
    es_runner_destroy(r);
}

Test(projection, catch_up_ended_by_a_stop_is_a_retry_with_what_was_applied_committed) {
    for (int i = 0; i < 20; i++)
        note("n-1", "test.v1.Noted", "x");
    es_projector_def def = notes_v1;
    def.apply = apply_then_stop;
    es_runner_t *r = runner(&def);
    stopping_runner = r;
    stop_after = 5;
    es_error_t err = {0};
    cr_assert_eq(es_runner_catch_up(r, WAIT_MS, &err), ES_ESTATE, "%s", err.message);
    cr_assert(strstr(err.message, "stopped (es_runner_stop) before it caught up"), "%s",
              err.message);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 5, "the 5 applied are committed");
    cr_assert_eq(total_lag(), 15);
    es_runner_destroy(r);
}
