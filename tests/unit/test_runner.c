/*
 * The runner's checks, on the embedded backend: definitions, config keys,
 * the guards against sharing a file, a table or another log's model, a
 * replay's rebuild file, never opened through a symbolic link, and the apply
 * watchdog's kill, which no log callback holds back.
 * Its behaviour on both backends is tests/conformance/test_projection.c.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "notes.h"
#include "projector_int.h"
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

/* es_projector_def as ABI 1 headers declare it: no handlers. */
typedef struct projector_def_abi1 {
    int abi_version;
    const char *name;
    int schema_version;
    const char *const *topics;
    es_err (*migrate)(sqlite3 *db, int from_version, es_error_t *err);
    es_err (*apply)(es_projector_ctx_t *ctx, const es_event_t *ev, es_error_t *err);
    es_err (*init)(sqlite3 *db, void **state, es_error_t *err);
    void (*fini)(void *state);
} projector_def_abi1;
_Static_assert(sizeof(projector_def_abi1) == offsetof(es_projector_def, handlers),
               "ABI 1 ends where handlers begin");

/* A module built against the ABI 1 headers hands over a struct without handlers: on the heap at
 * its exact size, so AddressSanitizer catches a read past it. */
Test(runner, a_definition_of_the_older_abi_1_applies_events) {
    projector_def_abi1 *old = malloc(sizeof *old);
    cr_assert_not_null(old);
    *old = (projector_def_abi1){1,
                                notes_v1.name,
                                notes_v1.schema_version,
                                notes_v1.topics,
                                notes_v1.migrate,
                                notes_v1.apply,
                                notes_v1.init,
                                notes_v1.fini};
    append("n-1", "test.v1.Note", "hello");
    es_runner_t *r = runner((const es_projector_def *)(const void *)old);
    cr_assert_eq(drain(r), 1);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 1);
    es_runner_destroy(r);
    free(old);
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

/* The attacker's move, made from inside SQLite: a VFS over the default one whose xFullPathname
 * (what SQLite calls before it opens a file) replaces the replay's rebuild file with a symbolic
 * link to swap_target, at the swap_at-th time the file is about to be opened (1: the rebuilding
 * runner's open, 2: the swap's ATTACH). */
static sqlite3_vfs swap_vfs, *real_vfs;
static const char *swap_target;
static int swap_at, replay_opens;

static int swap_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out) {
    size_t len = strlen(name);
    if (len > 7 && !strcmp(name + len - 7, ".replay") && ++replay_opens == swap_at) {
        cr_assert_eq(unlink(name), 0, "unlink %s: %s", name, strerror(errno));
        cr_assert_eq(symlink(swap_target, name), 0, "symlink %s: %s", name, strerror(errno));
    }
    return real_vfs->xFullPathname(vfs, name, n, out);
}

static void swap_rebuild_file_at(int at, const char *target) {
    real_vfs = sqlite3_vfs_find(NULL);
    swap_vfs = *real_vfs; /* its methods, its pAppData: only the pathname step is ours */
    swap_vfs.zName = "swap-rebuild-file";
    swap_vfs.xFullPathname = swap_full_pathname;
    swap_target = target;
    swap_at = at;
    replay_opens = 0;
    cr_assert_eq(sqlite3_vfs_register(&swap_vfs, 1), SQLITE_OK);
}

Test(runner, a_replay_never_opens_its_rebuild_file_through_a_symbolic_link) {
    append("n-1", "test.v1.Noted", "abc");
    char *victim = tu_path(dir, "victim");
    FILE *f = fopen(victim, "w");
    cr_assert_not_null(f);
    fclose(f); /* empty: SQLite would take it for an empty database and write it */
    swap_rebuild_file_at(1, victim);
    es_error_t err = {0};
    es_err rc = es_replay(cfg, &notes_v1, NULL, NULL, &err);
    cr_assert_eq(replay_opens >= 1, 1, "the rebuild file was never opened");
    struct stat st;
    cr_assert_eq(stat(victim, &st), 0);
    cr_assert_eq(st.st_size, 0, "the replay wrote %lld bytes through the link",
                 (long long)st.st_size);
    cr_assert_eq(rc, ES_EIO, "%s: %s", es_strerror(rc), err.message);
    cr_assert(strstr(err.message, "symbolic link"), "%s", err.message);
    cr_assert(strstr(err.message, ".replay"), "the file is named: %s", err.message);
    free(victim);
}

Test(runner, a_replay_refuses_a_rebuild_file_swapped_for_a_link_before_the_swap) {
    append("n-1", "test.v1.Noted", "abc");
    /* The attacker's model: a read model of the same log with a forged row. */
    char *forged = tu_path(dir, "forged.db"), *live = tu_path(dir, "read.db");
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "readmodel.db", forged, &err), ES_OK);
    cr_assert_eq(es_replay(cfg, &notes_v1, NULL, NULL, &err), ES_OK, "%s", err.message);
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(forged, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "INSERT INTO notes VALUES ('forged', 1, 'x')", NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);
    cr_assert_eq(es_config_set(cfg, "readmodel.db", live, &err), ES_OK);
    es_runner_t *r = runner(&notes_v1);
    drain(r);
    es_runner_destroy(r);

    swap_rebuild_file_at(2, forged);
    es_err rc = es_replay(cfg, &notes_v1, NULL, NULL, &err);
    cr_assert_eq(replay_opens, 2, "the rebuild file was opened %d times", replay_opens);
    cr_assert_eq(query_int("SELECT count(*) FROM notes WHERE id = 'forged'"), 0,
                 "the swap copied the linked file's rows into the live read model");
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 1, "the live model is untouched");
    cr_assert_eq(rc, ES_EIO, "%s: %s", es_strerror(rc), err.message);
    cr_assert(strstr(err.message, "symbolic link"), "%s", err.message);
    free(forged);
    free(live);
}

Test(runner, a_read_model_reached_through_a_linked_directory_still_replays) {
    append("n-1", "test.v1.Noted", "abc");
    char *real = tu_path(dir, "real"), *link = tu_path(dir, "link"),
         *rm = tu_path(dir, "link/rm.db");
    cr_assert_eq(mkdir(real, 0700), 0);
    cr_assert_eq(symlink(real, link), 0);
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "readmodel.db", rm, &err), ES_OK);
    cr_assert_eq(es_replay(cfg, &notes_v1, NULL, NULL, &err), ES_OK, "%s", err.message);
    cr_assert_eq(tu_query_int(rm, "SELECT count(*) FROM notes"), 1);
    free(real);
    free(link);
    free(rm);
}

/* Opening a runner never rebuilds: on a model built with an older schema version the internal
 * open refuses, saying to run esctl replay, and leaves the model as it was; es_runner_new is
 * what rebuilds, as its own step. */
Test(runner, opening_a_runner_on_an_older_model_refuses_and_rebuilds_nothing) {
    append("n-1", "test.v1.Noted", "abc");
    es_runner_t *r = runner(&notes_v1);
    cr_assert_eq(drain(r), 1);
    es_runner_destroy(r);
    char *rm = tu_path(dir, "read.db");
    int behind = 0;
    runner_opts o = {rm, RM_LIVE, NULL, 1, 0, 0, NULL, NULL, &behind};
    es_error_t err = {0};
    r = NULL;
    cr_assert_eq(es_runner_open(cfg, &notes_v2, &o, &r, &err), ES_ESTATE);
    cr_assert_null(r);
    cr_assert_eq(behind, 1);
    cr_assert_not_null(strstr(err.message, "esctl replay notes"), "%s", err.message);
    cr_assert_not_null(strstr(err.message, rm), "names the file: %s", err.message);
    cr_assert_eq(query_int("SELECT schema_version FROM es_projectors WHERE name = 'notes'"), 1);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 1, "the old model is untouched");
    r = runner(&notes_v2); /* the public constructor rebuilds */
    es_runner_destroy(r);
    cr_assert_eq(query_int("SELECT schema_version FROM es_projectors WHERE name = 'notes'"), 2);
    free(rm);
}
