/*
 * Stopping projectors as operators and supervisors do: Ctrl-C and SIGTERM
 * while a module's apply runs slowly or never returns, in `esctl replay` and
 * in a runner process (run_projector), and the apply watchdog
 * (projector.apply.timeout.ms) ending a stuck apply so that the crash guard
 * parks the event. The module is tests/modules/sleepy: events of aggregates
 * named "slow-*" sleep TP_SLEEPY_MS ("forever": never return) and add a line
 * to TP_SLEEPY_MARK as each such apply starts.
 *
 * "The guard counted no death" is checked by what a user sees: a later run
 * with projector.crash.restarts=1 (or the default 3, after 3 stops) applies
 * the event rather than parking it.
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
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

#define SLEEPY_SO TEST_MODULES_DIR "/sleepy.so"
#define COUNTER_SO TEST_MODULES_DIR "/counter.so"

#define SEC 1000000LL
#define MAX_ARGS 32
/* The watchdog's timeout in its tests: far beyond what a normal apply takes on a loaded 2-core
 * sanitizer run (at 200 ms one descheduled apply was ended and counted as a 4th death); the
 * stuck apply never returns, so a long timeout costs only the wait. */
#define WATCHDOG_MS "2000"

static char *dir, *db, *rm, *mark, *out_path, *err_path;
static es_store_t *store;

static void setup(void) {
    static const char *const vars[] = {
        "ESKIT_DB",           "ESKIT_CONFIG",         "ESKIT_BROKERS",           "ESKIT_BACKEND",
        "ESKIT_READMODEL_DB", "ESKIT_PROJECTOR_PATH", "ESKIT_REPLAY_BATCH_SIZE", "TP_SLEEPY_MS",
        "TP_SLEEPY_MARK"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        unsetenv(vars[i]);
    dir = tu_tempdir();
    cr_assert_not_null(dir);
    db = tu_path(dir, "events.db");
    rm = tu_path(dir, "read.db");
    mark = tu_path(dir, "applies.mark");
    out_path = tu_path(dir, "child.out");
    err_path = tu_path(dir, "child.err");
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "db", db, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    es_config_destroy(cfg);
}

static void teardown(void) {
    es_store_destroy(store);
    tu_rmtree(dir);
    free(dir);
    free(db);
    free(rm);
    free(mark);
    free(out_path);
    free(err_path);
}

TestSuite(projector_interrupts, .init = setup, .fini = teardown, .timeout = 180);

/* Appends n Added events (amount 1 each) to TP_TYPE/id; returns the offset of the last. */
static int64_t append_added(const char *id, int n) {
    int64_t last = -1;
    for (int i = 0; i < n; i++) {
        char payload[TP_MAX_PAYLOAD];
        size_t len = tp_encode(payload, 1);
        es_new_event_t ev = {
            .event_type = TP_EVENT_ADDED, .payload = (const uint8_t *)payload, .payload_len = len};
        es_append_result_t res = {0};
        es_error_t err = {0};
        cr_assert_eq(es_store_append(store, TP_TYPE, id, ES_EXPECT_ANY, 0, &ev, 1, &res, &err),
                     ES_OK, "appending to %s: %s", id, err.message);
        last = res.first_offset;
    }
    return last;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t len = 0;
    if (f) {
        FILE *m = open_memstream(&buf, &len);
        char chunk[4096];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
            fwrite(chunk, 1, n, m);
        fclose(m);
        fclose(f);
    }
    return buf ? buf : strdup("");
}

static size_t marks(void) {
    char *s = slurp(mark);
    size_t n = tu_count_lines(s);
    free(s);
    return n;
}

/* Starts argv[0] with the extra environment env ("K=V", NULL-terminated, may be NULL), in the
 * test's directory, stdout and stderr to out_path and err_path (truncated), no core dumps, and
 * the signals a test sends neither blocked nor ignored. */
static pid_t spawn(const char *const *argv, const char *const *env) {
    pid_t pid = fork();
    cr_assert_neq(pid, -1, "fork: %s", strerror(errno));
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        int in = open("/dev/null", O_RDONLY);
        int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (in < 0 || out < 0 || err < 0 || chdir(dir) != 0)
            _exit(126);
        dup2(in, 0);
        dup2(out, 1);
        dup2(err, 2);
        for (const char *const *e = env; e && *e; e++)
            putenv((char *)*e);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static const char *child_output(void) {
    static char buf[1500];
    char *o = slurp(out_path), *e = slurp(err_path);
    snprintf(buf, sizeof buf, "stdout: %.600s\nstderr: %.600s", o, e);
    free(o);
    free(e);
    return buf;
}

static void pause_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* The child's wait status; past the deadline it is killed and the test fails naming what. */
static int wait_exit(pid_t pid, int64_t deadline_us, const char *what) {
    int status = 0;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            return status;
        cr_assert(w == 0 || errno == EINTR, "waitpid: %s", strerror(errno));
        if (es_now_us() > deadline_us) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            cr_assert_fail("%s did not happen in time; the child's output:\n%s", what,
                           child_output());
        }
        pause_ms(2);
    }
}

/* Waits until at least n slow applies have started; the child must still be running. */
static void wait_marks(pid_t pid, size_t n) {
    int64_t deadline = es_now_us() + 60 * SEC;
    while (marks() < n) {
        int status = 0;
        cr_assert_eq(waitpid(pid, &status, WNOHANG), 0,
                     "the child ended (status 0x%x) before %zu slow applies started; its "
                     "output:\n%s",
                     status, n, child_output());
        if (es_now_us() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            cr_assert_fail("no slow apply started within 60 s; the child's output:\n%s",
                           child_output());
        }
        pause_ms(2);
    }
}

/* Whether pid (alive, not a zombie) has a handler for sig, from /proc/<pid>/status. */
static bool catches(pid_t pid, int sig) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    unsigned long long caught = 0;
    bool zombie = false;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "State:", 6) && strchr(line, 'Z'))
            zombie = true;
        sscanf(line, "SigCgt: %llx", &caught);
    }
    fclose(f);
    return !zombie && ((caught >> (sig - 1)) & 1);
}

/* Sends sig and waits until the child took it: its handler ran to its end (esctl's handler
 * resets itself as its last step, once the stop is noted), or the signal ended the child. */
static void signal_taken(pid_t pid, int sig) {
    cr_assert_eq(kill(pid, sig), 0, "kill: %s", strerror(errno));
    int64_t deadline = es_now_us() + 30 * SEC;
    while (catches(pid, sig)) {
        cr_assert_lt(es_now_us(), deadline, "signal %d was not taken within 30 s", sig);
        pause_ms(1);
    }
}

static pid_t spawn_replay(const char *module, const char *const *env) {
    const char *argv[] = {ESCTL_PATH, "--db", db, "--readmodel", rm, "replay", module, NULL};
    return spawn(argv, env);
}

/* What an esctl replay run to its end did. */
typedef struct replay_run {
    int status; /* wait status */
    char *out, *err;
} replay_run;

static replay_run replay(const char *module, const char *const *env) {
    pid_t pid = spawn_replay(module, env);
    replay_run r = {wait_exit(pid, es_now_us() + 120 * SEC, "the replay's end"), NULL, NULL};
    r.out = slurp(out_path);
    r.err = slurp(err_path);
    return r;
}

static void replay_free(replay_run *r) {
    free(r->out);
    free(r->err);
}

static bool exited(int status, int code) {
    return WIFEXITED(status) && WEXITSTATUS(status) == code;
}

static void replay_ok(const char *module, const char *const *env) {
    replay_run r = replay(module, env);
    cr_assert(exited(r.status, 0), "replay: status 0x%x\n%s%s", r.status, r.out, r.err);
    cr_assert_null(strstr(r.out, "parked:"), "the replay parked events: %s", r.out);
    replay_free(&r);
}

static long long rows(const char *sql) {
    return tu_query_int(rm, sql);
}

static long long model_rows(void) {
    return rows("SELECT count(*) FROM tp_applied");
}

static size_t dlq_count(const char *projector) {
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "db", db, &err), ES_OK);
    cr_assert_eq(es_config_set(cfg, "readmodel.db", rm, &err), ES_OK);
    es_dlq_entry_t *e = NULL;
    size_t n = 0;
    cr_assert_eq(es_dlq_list(cfg, projector, true, &e, &n, &err), ES_OK, "%s", err.message);
    free(e);
    es_config_destroy(cfg);
    return n;
}

/* Asserts no file of a replay of projector is left beside the read model. */
static void assert_no_replay_files(const char *projector) {
    char prefix[128];
    snprintf(prefix, sizeof prefix, "read.db-%s.replay", projector);
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    for (struct dirent *e; (e = readdir(d));)
        cr_expect_neq(strncmp(e->d_name, prefix, strlen(prefix)), 0, "the replay left %s/%s", dir,
                      e->d_name);
    closedir(d);
}

static void assert_one_line_error(const char *err, const char *needle) {
    cr_expect_eq(tu_count_lines(err), 1, "stderr should be one line, got: %s", err);
    cr_expect_eq(strncmp(err, "esctl: ", 7), 0, "stderr: %s", err);
    cr_expect_not_null(strstr(err, needle), "stderr does not say '%s': %s", needle, err);
}

Test(projector_interrupts, replay_stops_at_the_next_event_on_ctrl_c) {
    append_added("a", 3);
    replay_ok(SLEEPY_SO, NULL);
    append_added("slow-1", 100); /* 25 s of applies: the old replay looked only between batches */
    char *env_mark = NULL;
    cr_assert_geq(asprintf(&env_mark, "TP_SLEEPY_MARK=%s", mark), 0);
    const char *env[] = {"TP_SLEEPY_MS=250", env_mark, NULL};
    pid_t pid = spawn_replay(SLEEPY_SO, env);
    wait_marks(pid, 1);
    size_t started = marks();
    cr_assert_eq(kill(pid, SIGINT), 0);
    int status = wait_exit(pid, es_now_us() + 10 * SEC, "the replay's stop after Ctrl-C");
    cr_assert(exited(status, 1), "status 0x%x; %s", status, child_output());
    char *err = slurp(err_path), *out = slurp(out_path);
    assert_one_line_error(err, "cancelled");
    cr_expect_null(strstr(out, "replayed "), "a summary after Ctrl-C: %s", out);
    cr_expect_leq(marks(), started + 1, "%zu slow applies began after Ctrl-C during the %zu-th",
                  marks() - started, started);
    free(err);
    free(out);
    cr_expect_eq(model_rows(), 3, "the live read model changed");
    assert_no_replay_files("sleepy");

    const char *strict[] = {"ESKIT_PROJECTOR_CRASH_RESTARTS=1", NULL};
    replay_ok(SLEEPY_SO, strict);
    cr_expect_eq(model_rows(), 103);
    assert_no_replay_files("sleepy");
    free(env_mark);
}

Test(projector_interrupts, a_second_ctrl_c_exits_at_once) {
    append_added("a", 2);
    replay_ok(SLEEPY_SO, NULL);
    append_added("slow-1", 1);
    append_added("b", 2);
    char *env_mark = NULL;
    cr_assert_geq(asprintf(&env_mark, "TP_SLEEPY_MARK=%s", mark), 0);
    const char *env[] = {"TP_SLEEPY_MS=forever", env_mark, NULL};
    pid_t pid = spawn_replay(SLEEPY_SO, env);
    wait_marks(pid, 1);
    signal_taken(pid, SIGINT); /* the module is stuck: the first Ctrl-C cannot end the replay */
    cr_assert_eq(kill(pid, SIGINT), 0);
    int status = wait_exit(pid, es_now_us() + 10 * SEC, "the exit on a second Ctrl-C");
    cr_assert(!exited(status, 0), "the replay succeeded: %s", child_output());
    cr_expect_eq(model_rows(), 2, "the live read model changed");

    /* No death was counted: with crash.restarts=1 a single one would park slow-1. */
    const char *strict[] = {"ESKIT_PROJECTOR_CRASH_RESTARTS=1", NULL};
    replay_ok(SLEEPY_SO, strict);
    cr_expect_eq(model_rows(), 5);
    cr_expect_eq(rows("SELECT count(*) FROM tp_applied WHERE agg_id = 'slow-1'"), 1);
    assert_no_replay_files("sleepy");
    free(env_mark);
}

/* run_projector on sleepy with the given settings ("key=value", NULL-terminated). */
static pid_t spawn_runner(bool follow, const char *const *sets, const char *const *env) {
    const char *argv[MAX_ARGS];
    size_t n = 0;
    argv[n++] = RUN_PROJECTOR_PATH;
    if (follow)
        argv[n++] = "--follow";
    char *db_set = NULL, *rm_set = NULL;
    cr_assert_geq(asprintf(&db_set, "db=%s", db), 0);
    cr_assert_geq(asprintf(&rm_set, "readmodel.db=%s", rm), 0);
    argv[n++] = "--set";
    argv[n++] = db_set;
    argv[n++] = "--set";
    argv[n++] = rm_set;
    for (const char *const *s = sets; s && *s && n + 3 < MAX_ARGS; s++) {
        argv[n++] = "--set";
        argv[n++] = *s;
    }
    argv[n++] = SLEEPY_SO;
    argv[n] = NULL;
    pid_t pid = spawn(argv, env);
    free(db_set);
    free(rm_set);
    return pid;
}

static void drain_with_runner(const char *const *sets) {
    int status =
        wait_exit(spawn_runner(false, sets, NULL), es_now_us() + 60 * SEC, "the runner's drain");
    cr_assert(exited(status, 0), "run_projector: status 0x%x; %s", status, child_output());
}

Test(projector_interrupts, sigterm_during_a_slow_apply_is_not_a_crash_of_the_runner) {
    append_added("a", 5);
    append_added("slow-1", 1);
    append_added("b", 5);
    char *env_mark = NULL;
    cr_assert_geq(asprintf(&env_mark, "TP_SLEEPY_MARK=%s", mark), 0);
    const char *env[] = {"TP_SLEEPY_MS=forever", env_mark, NULL};
    /* As a supervisor stops a service: SIGTERM, then SIGKILL when it does not end. Three
     * times, the default projector.crash.restarts: were they crashes, slow-1 would be
     * parked now. */
    for (size_t i = 1; i <= 3; i++) {
        pid_t pid = spawn_runner(false, NULL, env);
        wait_marks(pid, i);
        signal_taken(pid, SIGTERM);
        kill(pid, SIGKILL);
        wait_exit(pid, es_now_us() + 10 * SEC, "the runner's end on SIGKILL");
    }
    drain_with_runner(NULL);
    cr_expect_eq(dlq_count("sleepy"), 0, "slow-1 was parked as a crash");
    cr_expect_eq(model_rows(), 11);
    cr_expect_eq(rows("SELECT count(*) FROM tp_applied WHERE agg_id = 'slow-1'"), 1);
    free(env_mark);
}

Test(projector_interrupts, sigterm_stops_a_runner_at_the_next_event_and_keeps_what_it_applied) {
    append_added("slow-1", 60); /* 30 s of applies in one batch of 500 */
    char *env_mark = NULL;
    cr_assert_geq(asprintf(&env_mark, "TP_SLEEPY_MARK=%s", mark), 0);
    const char *env[] = {"TP_SLEEPY_MS=500", env_mark, NULL};
    pid_t pid = spawn_runner(true, NULL, env);
    wait_marks(pid, 2);
    cr_assert_eq(kill(pid, SIGTERM), 0);
    int status = wait_exit(pid, es_now_us() + 10 * SEC, "the runner's stop on SIGTERM");
    cr_assert(exited(status, 0), "status 0x%x; %s", status, child_output());
    size_t started = marks();
    cr_expect_lt(started, 60, "the runner applied the whole batch before it stopped");
    cr_expect_eq(model_rows(), (long long)started, "%zu applies started, %lld committed", started,
                 model_rows());
    drain_with_runner(NULL); /* the rest, each once: tp_applied's key refuses a second */
    cr_expect_eq(model_rows(), 60);
    cr_expect_eq(dlq_count("sleepy"), 0);
    free(env_mark);
}

Test(projector_interrupts, sigterm_during_a_slow_apply_is_not_a_crash_of_a_replay) {
    append_added("a", 2);
    append_added("slow-1", 1);
    append_added("b", 2);
    char *env_mark = NULL;
    cr_assert_geq(asprintf(&env_mark, "TP_SLEEPY_MARK=%s", mark), 0);
    const char *env[] = {"TP_SLEEPY_MS=forever", env_mark, "ESKIT_PROJECTOR_CRASH_RESTARTS=1",
                         NULL};
    pid_t pid = spawn_replay(SLEEPY_SO, env);
    wait_marks(pid, 1);
    signal_taken(pid, SIGTERM);
    kill(pid, SIGKILL);
    wait_exit(pid, es_now_us() + 10 * SEC, "the replay's end on SIGKILL");
    const char *strict[] = {"ESKIT_PROJECTOR_CRASH_RESTARTS=1", NULL};
    replay_ok(SLEEPY_SO, strict);
    cr_expect_eq(model_rows(), 5);
    cr_expect_eq(dlq_count("sleepy"), 0, "slow-1 was parked as a crash");
    free(env_mark);
}

Test(projector_interrupts,
     a_stuck_apply_is_ended_by_the_watchdog_and_parked_after_the_restart_limit) {
    append_added("a", 30);
    int64_t stuck = append_added("slow-1", 1);
    append_added("b", 30);
    const char *sets[] = {"projector.apply.timeout.ms=" WATCHDOG_MS, "projector.crash.restarts=3",
                          "projector.batch.size=10", NULL};
    const char *env[] = {"TP_SLEEPY_MS=forever", NULL};
    int deaths = 0, status = 0;
    for (int runs = 0; runs < 8; runs++) {
        status = wait_exit(spawn_runner(false, sets, env), es_now_us() + 30 * SEC,
                           "the watchdog's end of a stuck apply");
        if (!WIFSIGNALED(status))
            break;
        cr_assert_eq(WTERMSIG(status), SIGKILL, "run %d died of signal %d; %s", runs,
                     WTERMSIG(status), child_output());
        char *err = slurp(err_path);
        cr_expect_not_null(strstr(err, "projector.apply.timeout.ms"), "%s", err);
        free(err);
        deaths++;
    }
    cr_assert(exited(status, 0), "after %d watchdog ends the runner does not finish: 0x%x; %s",
              deaths, status, child_output());
    cr_assert_eq(deaths, 3, "the watchdog ended %d runs; projector.crash.restarts is 3", deaths);
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "db", db, &err), ES_OK);
    cr_assert_eq(es_config_set(cfg, "readmodel.db", rm, &err), ES_OK);
    es_dlq_entry_t *e = NULL;
    size_t n = 0;
    cr_assert_eq(es_dlq_list(cfg, "sleepy", true, &e, &n, &err), ES_OK, "%s", err.message);
    cr_assert_eq(n, 1, "%zu dead letters", n);
    cr_expect_eq(e->offset, stuck);
    cr_expect_str_eq(e->key, "slow-1");
    cr_expect_not_null(strstr(e->error, "projector.apply.timeout.ms"), "%s", e->error);
    free(e);
    es_config_destroy(cfg);
    cr_expect_eq(model_rows(), 60, "the events after the stuck one were not all applied");
    cr_expect_eq(rows("SELECT count(*) FROM tp_applied WHERE agg_id = 'slow-1'"), 0);
}

Test(projector_interrupts, a_replay_the_watchdog_ends_fails_with_one_line_then_parks_the_event) {
    append_added("a", 3);
    replay_ok(SLEEPY_SO, NULL);
    append_added("slow-1", 1);
    append_added("b", 3);
    const char *env[] = {"TP_SLEEPY_MS=forever", "ESKIT_PROJECTOR_APPLY_TIMEOUT_MS=" WATCHDOG_MS,
                         "ESKIT_PROJECTOR_CRASH_RESTARTS=2", NULL};
    for (int i = 0; i < 2; i++) {
        replay_run r = replay(SLEEPY_SO, env);
        cr_assert(exited(r.status, 1), "replay %d: status 0x%x\n%s%s", i, r.status, r.out, r.err);
        assert_one_line_error(r.err, "projector.apply.timeout.ms");
        cr_expect_not_null(strstr(r.err, "sleepy"), "%s", r.err);
        replay_free(&r);
        cr_expect_eq(model_rows(), 3, "the live read model changed");
    }
    replay_run r = replay(SLEEPY_SO, env);
    cr_assert(exited(r.status, 0), "status 0x%x\n%s%s", r.status, r.out, r.err);
    cr_expect_not_null(strstr(r.out, "parked: sleepy"), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "projector.apply.timeout.ms"), "%s", r.out);
    replay_free(&r);
    cr_expect_eq(model_rows(), 6);
    cr_expect_eq(dlq_count("sleepy"), 1);
    assert_no_replay_files("sleepy");
}

Test(projector_interrupts, a_failed_replay_leaves_no_guard_files) {
    append_added("a", 3);
    replay_ok(COUNTER_SO, NULL);
    assert_no_replay_files("counter");
    /* sleepy's table tp_applied belongs to counter in the live model: the swap fails. */
    replay_run r = replay(SLEEPY_SO, NULL);
    cr_assert(exited(r.status, 1), "status 0x%x\n%s%s", r.status, r.out, r.err);
    assert_one_line_error(r.err, "belongs to projector 'counter'");
    replay_free(&r);
    assert_no_replay_files("sleepy");
}
