/*
 * The runner's checks, on the embedded backend: definitions, config keys,
 * the guards against sharing a file, a table or another log's model, and
 * the apply watchdog's kill, which no log callback holds back.
 * Its behaviour on both backends is tests/conformance/test_projection.c.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "notes.h"
#include "testutil.h"

static char *dir;
static es_config_t *cfg;
static es_store_t *store;

static void setup(void) {
    dir = tu_tempdir();
    cfg = tu_config(dir, "events.db");
    char *rm = tu_path(dir, "read.db");
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "readmodel.db", rm, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_config_set(cfg, "projector.retry.backoff.ms", "1", &err), ES_OK);
    free(rm);
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    notes_transient_left = 0;
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
    es_projector_def other = notes_v2; /* a second module with notes_v2's table */
    other.name = "other";
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

static es_runner_t *stopping; /* the log callback stops it at the first retry */
static char retry_line[600];

static void stop_at_retry(int level, const char *msg, void *opaque) {
    (void)level, (void)opaque;
    if (strstr(msg, "retrying in") && !retry_line[0]) {
        snprintf(retry_line, sizeof retry_line, "%s", msg);
        es_runner_stop(stopping);
    }
}

Test(runner, poll_and_run_return_their_code_with_a_null_error_and_a_log_callback_set) {
    es_config_set_log_cb(cfg, stop_at_retry, NULL);
    cr_assert_eq(es_config_set(cfg, "projector.on.error", "stop", NULL), ES_OK);
    cr_assert_eq(es_config_set(cfg, "sqlite.busy.timeout.ms", "50", NULL), ES_OK);
    append("n-1", "test.v1.Broken", "abc");
    es_runner_t *r = runner(&notes_v1);
    stopping = r;
    cr_assert_eq(es_runner_poll(r, 0, NULL, NULL), ES_ESTATE, "policy stop halts the poll");
    cr_assert_eq(es_runner_run(r, NULL), ES_ESTATE, "and the run loop");

    /* A transient failure (the read model locked) is logged and retried until a stop. */
    notes_fixed = 1;
    char *path = tu_path(dir, "read.db");
    sqlite3 *holder = NULL;
    cr_assert_eq(sqlite3_open(path, &holder), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(holder, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    cr_assert_eq(es_runner_run(r, NULL), ES_OK);
    sqlite3_exec(holder, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(holder);
    cr_assert_not_null(strstr(retry_line, path), "the retry names what failed: %s", retry_line);
    const char *first = strstr(retry_line, "projector 'notes'");
    cr_assert_not_null(first, "the retry names the projector: %s", retry_line);
    cr_assert_null(strstr(first + 1, "projector 'notes'"), "named once: %s", retry_line);
    free(path);
    es_runner_destroy(r);
}

/* notes, except that a test.v1.Stuck event's apply never returns. */
static es_projector_def stuck_notes;

static es_err apply_or_hang(es_projector_ctx_t *ctx, const es_event_t *ev, es_error_t *err) {
    if (!strcmp(ev->event_type, "test.v1.Stuck"))
        for (;;)
            pause();
    return notes_v1.apply(ctx, ev, err);
}

/* A log callback that never returns from the watchdog's critical line. */
static void block_on_critical(int level, const char *msg, void *opaque) {
    (void)msg, (void)opaque;
    if (level <= ES_LOG_CRITICAL)
        for (;;)
            pause();
}

Test(runner, a_log_callback_that_blocks_does_not_keep_the_watchdog_from_ending_a_stuck_apply) {
    stuck_notes = notes_v1;
    stuck_notes.apply = apply_or_hang;
    append("n-1", "test.v1.Stuck", "forever");
    cr_assert_eq(es_config_set(cfg, "projector.apply.timeout.ms", "100", NULL), ES_OK);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1, "fork: %s", strerror(errno));
    if (pid == 0) {
        es_runner_t *r = NULL;
        es_config_set_log_cb(cfg, block_on_critical, NULL);
        if (es_runner_new(cfg, &stuck_notes, &r, NULL) != ES_OK)
            _exit(1);
        es_runner_poll(r, 1000, NULL, NULL);
        _exit(2); /* the apply returned */
    }
    int status = 0;
    int64_t deadline = es_now_us() + 30000000;
    pid_t w;
    while ((w = waitpid(pid, &status, WNOHANG)) == 0 && es_now_us() < deadline)
        usleep(10000);
    if (w == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        cr_assert_fail("the watchdog did not end the process within 30 s: the log callback "
                       "it called first blocked it");
    }
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
              "the process should have been killed by the watchdog (status 0x%x)", status);
    /* The guard knew of the timeout before the log callback was called: with restarts 1 the
     * event is parked as the watchdog's. */
    cr_assert_eq(es_config_set(cfg, "projector.crash.restarts", "1", NULL), ES_OK);
    es_runner_t *r = runner(&stuck_notes);
    drain(r);
    es_runner_destroy(r);
    es_dlq_entry_t *parked = NULL;
    size_t n = 0;
    es_error_t err = {0};
    cr_assert_eq(es_dlq_list(cfg, "notes", false, &parked, &n, &err), ES_OK, "%s", err.message);
    cr_assert_eq(n, 1, "%zu events parked", n);
    cr_assert_not_null(strstr(parked[0].error, "projector.apply.timeout.ms"), "%s",
                       parked[0].error);
    free(parked);
}
