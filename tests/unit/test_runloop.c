/*
 * The run loop behind es_processor_run, es_runner_run and es_saga_run (runloop.h): which
 * failures it retries, how it backs off and logs them, what it returns, and that a stop from
 * another thread or from a signal handler ends it, also in the middle of a long backoff. The
 * backoffs are counted, not timed: each test's loop waits through a function of the test's.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "runloop.h"

#define SUBJECT "job 'x': "
#define MAX_LINES 32
#define MAX_CALLS 32

static es_config_t *cfg;
static pthread_mutex_t lines_mu = PTHREAD_MUTEX_INITIALIZER;
static char lines[MAX_LINES][1024];
static int n_lines;
static const char *stop_at_text; /* a line holding it stops stop_at (on the loop's thread) */
static es_stop_t *stop_at;

/* Called on the loop's thread. */
static void keep_line(int level, const char *msg, void *opaque) {
    (void)opaque;
    pthread_mutex_lock(&lines_mu);
    if (n_lines < MAX_LINES)
        snprintf(lines[n_lines++], sizeof lines[0], "%d %s", level, msg);
    pthread_mutex_unlock(&lines_mu);
    if (stop_at_text && strstr(msg, stop_at_text))
        es_stop_request(stop_at);
}

/* How many logged lines hold text. */
static int logged(const char *text) {
    int n = 0;
    pthread_mutex_lock(&lines_mu);
    for (int i = 0; i < n_lines; i++)
        n += strstr(lines[i], text) != NULL;
    pthread_mutex_unlock(&lines_mu);
    return n;
}

static int lines_logged(void) {
    pthread_mutex_lock(&lines_mu);
    int n = n_lines;
    pthread_mutex_unlock(&lines_mu);
    return n;
}

static void setup(void) {
    cfg = es_config_new();
    es_config_set_log_cb(cfg, keep_line, NULL);
    n_lines = 0;
    stop_at_text = NULL;
}

static void teardown(void) {
    es_config_destroy(cfg);
}

TestSuite(runloop, .init = setup, .fini = teardown, .timeout = 60);

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A poll that answers from a script: call i returns steps[i]; past the script it stops the
 * loop (returning ES_OK) or, when forever is set, fails with forever's code every time. */
typedef struct step {
    es_err code;
    const char *message;
} step;

typedef struct script {
    const step *steps;
    size_t n;
    es_err forever;
    es_stop_t stop;
    atomic_int calls;
    int timeout_ms[MAX_CALLS];
    int n_waits;
    int wait_ms[MAX_CALLS];    /* each backoff asked for, in order */
    int wait_calls[MAX_CALLS]; /* how many polls came before it */
    int long_waits;            /* the waits are es_stop_sleep of ten minutes each */
    atomic_int waiting;        /* a wait is under way */
    int wrong_stop;            /* a wait was given a stop that is not the loop's */
} script;

static es_err scripted_poll(void *opaque, int timeout_ms, es_error_t *err) {
    script *s = opaque;
    int i = atomic_fetch_add(&s->calls, 1);
    if (i < MAX_CALLS)
        s->timeout_ms[i] = timeout_ms;
    if ((size_t)i < s->n)
        return s->steps[i].code == ES_OK
                   ? ES_OK
                   : es_fail(err, s->steps[i].code, "%s", s->steps[i].message);
    if (s->forever)
        return es_fail(err, s->forever, "the brokers at 127.0.0.1:9 are away");
    es_stop_request(&s->stop);
    return ES_OK;
}

/* The loop's backoff: noted, and slept only when the test wants a loop that stays in it. */
static void scripted_wait(void *opaque, const es_stop_t *stop, int ms) {
    script *s = opaque;
    if (stop != &s->stop) /* noted here, asserted on the test's thread */
        s->wrong_stop = 1;
    if (s->n_waits < MAX_CALLS) {
        s->wait_ms[s->n_waits] = ms;
        s->wait_calls[s->n_waits] = atomic_load(&s->calls);
    }
    s->n_waits++;
    if (s->long_waits) {
        atomic_store(&s->waiting, 1);
        es_stop_sleep(stop, 600000);
        atomic_store(&s->waiting, 0);
    }
}

static void script_init(script *s, const step *steps, size_t n) {
    memset(s, 0, sizeof *s);
    s->steps = steps;
    s->n = n;
    es_stop_init(&s->stop);
    atomic_init(&s->calls, 0);
    atomic_init(&s->waiting, 0);
}

static es_err run_script(script *s, es_error_t *err) {
    return es_run_loop_waiting(scripted_poll, scripted_wait, s, &s->stop, cfg, SUBJECT, err);
}

Test(runloop, only_broker_database_timeout_and_retry_failures_are_transient) {
    const es_err transient[] = {ES_EKAFKA, ES_EBUSY, ES_ETIMEOUT, ES_ERETRY};
    for (int code = ES_EIDREUSED; code <= ES_OK; code++) {
        int expected = 0;
        for (size_t i = 0; i < sizeof transient / sizeof *transient; i++)
            expected |= code == (int)transient[i];
        cr_expect_eq(es_err_is_transient((es_err)code), expected, "%s", es_strerror((es_err)code));
    }
}

Test(runloop, transient_failures_are_retried_with_a_doubling_backoff_each_logged_once_by_name) {
    const step steps[] = {
        {ES_EBUSY, "read.db is locked by another writer"},
        {ES_ETIMEOUT, SUBJECT "no reply within 30000 ms"}, /* names the subject itself */
        {ES_EKAFKA, "all brokers down"},
        {ES_ERETRY, "the coordinator moved"},
        {ES_OK, NULL},
        {ES_EBUSY, "read.db is locked again"},
    };
    script s;
    script_init(&s, steps, sizeof steps / sizeof *steps);
    es_error_t err = {0};
    cr_assert_eq(run_script(&s, &err), ES_OK);
    cr_assert_eq(atomic_load(&s.calls), 7, "every step, then the one that stopped it");
    for (int i = 0; i < 7; i++)
        cr_expect_eq(s.timeout_ms[i], 100, "poll %d may wait %d ms, not 100", i, s.timeout_ms[i]);

    /* One backoff after each failure: doubling while the failures last, from the start again
     * after a success. */
    const int backoff[] = {100, 200, 400, 800, 100};
    const int after_poll[] = {1, 2, 3, 4, 6};
    cr_assert_eq(s.n_waits, 5, "one backoff per failure, none after a success");
    for (int i = 0; i < 5; i++) {
        cr_expect_eq(s.wait_ms[i], backoff[i], "backoff %d is %d ms", i, s.wait_ms[i]);
        cr_expect_eq(s.wait_calls[i], after_poll[i], "backoff %d came after poll %d", i,
                     s.wait_calls[i]);
    }
    cr_expect_not(s.wrong_stop);

    /* Each failure once, with its own words, the subject once, and the backoff it got. */
    cr_assert_eq(lines_logged(), 5, "one line per failure");
    const char *want[] = {
        "4 " SUBJECT "read.db is locked by another writer; retrying in 100 ms",
        "4 " SUBJECT "no reply within 30000 ms; retrying in 200 ms",
        "4 " SUBJECT "all brokers down; retrying in 400 ms",
        "4 " SUBJECT "the coordinator moved; retrying in 800 ms",
        "4 " SUBJECT "read.db is locked again; retrying in 100 ms",
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        cr_expect_eq(logged(want[i]), 1, "line %zu is not '%s': '%s'", i, want[i], lines[i]);
    cr_expect_eq(logged(SUBJECT SUBJECT), 0, "a line names the subject twice");
}

Test(runloop, the_backoff_doubles_up_to_five_seconds_and_stays_there) {
    const step steps[] = {
        {ES_EKAFKA, "down 1"}, {ES_EKAFKA, "down 2"}, {ES_EKAFKA, "down 3"},
        {ES_EKAFKA, "down 4"}, {ES_EKAFKA, "down 5"}, {ES_EKAFKA, "down 6"},
        {ES_EKAFKA, "down 7"}, {ES_EKAFKA, "down 8"}, {ES_EKAFKA, "down 9"},
    };
    script s;
    script_init(&s, steps, sizeof steps / sizeof *steps);
    cr_assert_eq(run_script(&s, NULL), ES_OK);
    const int backoff[] = {100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000};
    cr_assert_eq(s.n_waits, 9);
    for (int i = 0; i < 9; i++)
        cr_expect_eq(s.wait_ms[i], backoff[i], "backoff %d is %d ms, not %d", i, s.wait_ms[i],
                     backoff[i]);
    cr_expect_eq(logged("down 6; retrying in 3200 ms"), 1);
    cr_expect_eq(logged("down 7; retrying in 5000 ms"), 1, "not capped: '%s'", lines[6]);
    cr_expect_eq(logged("down 9; retrying in 5000 ms"), 1, "not capped: '%s'", lines[8]);
}

Test(runloop, a_failure_that_is_not_transient_ends_the_loop_with_its_code_and_message) {
    const step steps[] = {
        {ES_EBUSY, "read.db is locked"},
        {ES_EIO, "read.db: disk full; free space on its disk"},
        {ES_OK, NULL},
    };
    script s;
    script_init(&s, steps, sizeof steps / sizeof *steps);
    es_error_t err = {0};
    cr_assert_eq(run_script(&s, &err), ES_EIO);
    cr_assert_eq(err.code, ES_EIO);
    cr_assert_str_eq(err.message, "read.db: disk full; free space on its disk");
    cr_assert_eq(atomic_load(&s.calls), 2, "no poll after the lasting failure");
    cr_assert_eq(s.n_waits, 1, "no backoff after the lasting failure");
    cr_assert_eq(lines_logged(), 1, "only the transient failure is logged");
    cr_assert_eq(logged("disk full"), 0);
}

Test(runloop, err_may_be_null_and_the_retry_line_still_quotes_the_failure) {
    const step steps[] = {
        {ES_EBUSY, "read.db is locked by pid 42"},
        {ES_ENOTFOUND, "no topic orders.order.commands; create it with esctl topics create"},
    };
    script s;
    script_init(&s, steps, sizeof steps / sizeof *steps);
    cr_assert_eq(run_script(&s, NULL), ES_ENOTFOUND);
    cr_assert_eq(logged(SUBJECT "read.db is locked by pid 42; retrying in 100 ms"), 1,
                 "logged: '%s'", lines[0]);
}

Test(runloop, a_stop_before_the_loop_returns_at_once_without_a_poll) {
    script s;
    script_init(&s, NULL, 0);
    es_stop_request(&s.stop);
    cr_assert_eq(run_script(&s, NULL), ES_OK);
    cr_assert_eq(atomic_load(&s.calls), 0);
    cr_assert_eq(s.n_waits, 0);
}

Test(runloop, the_services_loop_sleeps_its_backoff_and_polls_again) {
    const step steps[] = {{ES_EBUSY, "read.db is locked"}};
    script s;
    script_init(&s, steps, 1);
    cr_assert_eq(es_run_loop(scripted_poll, &s, &s.stop, cfg, SUBJECT, NULL), ES_OK);
    cr_assert_eq(atomic_load(&s.calls), 2, "no second poll after the backoff");
    cr_assert_eq(s.n_waits, 0, "es_run_loop waits through es_stop_sleep, not the test's wait");
    cr_assert_eq(logged(SUBJECT "read.db is locked; retrying in 100 ms"), 1);
}

/* A loop that fails transiently forever and sleeps each backoff for ten minutes unless stopped,
 * on a thread of its own. */
typedef struct running {
    script s;
    pthread_t thread;
    atomic_int done;
    es_err rc;
} running;

static void *run_loop(void *opaque) {
    running *r = opaque;
    r->rc = run_script(&r->s, NULL);
    atomic_store(&r->done, 1);
    return NULL;
}

/* Starts the loop and waits until it is in its first backoff. */
static void start_in_long_backoff(running *r) {
    script_init(&r->s, NULL, 0);
    r->s.forever = ES_ETIMEOUT;
    r->s.long_waits = 1;
    atomic_init(&r->done, 0);
    cr_assert_eq(pthread_create(&r->thread, NULL, run_loop, r), 0);
    for (int64_t end = mono_ms() + 30000; !atomic_load(&r->s.waiting) && mono_ms() < end;)
        usleep(1000);
    cr_assert(atomic_load(&r->s.waiting), "the loop never got to its backoff");
}

/* Whether the stopped loop ended (a deadline far beyond the 10 ms a stop takes, far short of
 * the ten minutes of its backoff). It is joined when it did. */
static int ended(running *r) {
    for (int64_t end = mono_ms() + 30000; !atomic_load(&r->done) && mono_ms() < end;)
        usleep(1000);
    if (!atomic_load(&r->done))
        return 0;
    pthread_join(r->thread, NULL);
    return 1;
}

Test(runloop, a_stop_from_another_thread_cuts_a_long_backoff_short) {
    running r;
    start_in_long_backoff(&r);
    es_stop_request(&r.s.stop);
    cr_assert(ended(&r), "the loop slept on through its stop");
    cr_assert_eq(r.rc, ES_OK, "a stopped loop returns ES_OK");
    cr_assert_eq(atomic_load(&r.s.calls), 1, "no poll after the stop");
    cr_assert_not(r.s.wrong_stop);
}

static es_stop_t *signal_stops; /* what the SIGUSR1 and SIGUSR2 handlers stop */

static void stop_on_signal(int sig) {
    (void)sig;
    es_stop_request(signal_stops);
}

static void catch_signal(int sig) {
    struct sigaction sa = {.sa_handler = stop_on_signal};
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(sig, &sa, NULL), 0);
}

Test(runloop, a_stop_from_a_signal_handler_on_another_thread_cuts_a_long_backoff_short) {
    running r;
    start_in_long_backoff(&r);
    signal_stops = &r.s.stop;
    catch_signal(SIGUSR1);
    cr_assert_eq(raise(SIGUSR1), 0); /* its handler runs on this thread, not the loop's */
    cr_assert(ended(&r), "the loop slept on through its stop");
    cr_assert_eq(r.rc, ES_OK);
    cr_assert_eq(atomic_load(&r.s.calls), 1, "no poll after the stop");
    signal(SIGUSR1, SIG_DFL);
}

Test(runloop, a_stop_from_a_signal_that_interrupts_the_loop_cuts_its_backoff_short) {
    running r;
    start_in_long_backoff(&r);
    signal_stops = &r.s.stop;
    catch_signal(SIGUSR2);
    /* Only the loop's thread takes the signal: its handler interrupts the loop's sleep. */
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    cr_assert_eq(pthread_sigmask(SIG_BLOCK, &usr2, NULL), 0);
    cr_assert_eq(pthread_kill(r.thread, SIGUSR2), 0);
    cr_assert(ended(&r), "the loop slept on through its stop");
    cr_assert_eq(r.rc, ES_OK);
    cr_assert_eq(atomic_load(&r.s.calls), 1, "no poll after the stop");
}
