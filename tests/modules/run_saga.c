/*
 * run_saga: the saga coordinator of the demo saga (orders.fulfilment) as a
 * process, for the tests that kill it at random points and restart it.
 * Embedded: --db FILE, commands executed by an engine on that store with the
 * demo domain registered. Kafka: --brokers ADDR, commands sent through an
 * engine with backend kafka to the command processors. The saga database is
 * --saga-db FILE; further settings come from --set key=value (the environment
 * is not read: it carries the tests' own variables). --short-timeouts runs the
 * demo's variant with a short payment timeout; --timeout-ms N runs a copy of the
 * demo's definition with every step's timeout set to N (callbacks and all else
 * the same), for tests that must not see a timeout.
 *
 * It runs until SIGTERM or SIGINT, or with --until-idle until no instance is
 * active and a poll found nothing to do; it says "running" on stderr once it
 * does, for the tests that wait for that.
 *
 * Exit status: 0 stopped or idle, 1 error, 2 usage. Library warnings and
 * errors go to stderr, each line prefixed with the process id (all log lines
 * with RUN_SAGA_VERBOSE set).
 */
#include <eskit/eskit.h>
#include <eskit/saga.h>

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "domain.h"
#include "run_common.h"
#include "fulfilment.h"

#define POLL_MS 100
#define MAX_BACKOFF_MS 2000
#define MAX_STEPS 32 /* the most es_saga_check accepts */

static es_saga_t *volatile running;
static volatile sig_atomic_t stopped;

static void on_signal(int sig) {
    (void)sig;
    stopped = 1;
    es_saga_t *c = running;
    if (c)
        es_saga_stop(c);
}

static int usage(void) {
    fprintf(stderr, "usage: run_saga (--db FILE | --brokers ADDR) --saga-db FILE [--until-idle]\n"
                    "                [--short-timeouts | --timeout-ms N] [--set key=value]...\n");
    return 2;
}

static int fail(const char *what, es_err rc, const es_error_t *err) {
    fprintf(stderr, "run_saga[%d]: %s: %s: %s\n", (int)getpid(), what, es_strerror(rc),
            err->message);
    return 1;
}

typedef struct opts {
    bool until_idle;
    bool short_timeouts;
    long long timeout_ms; /* 0: the definition's own */
} opts;

/* The demo's definition, or a copy of it with every step's timeout replaced. */
static const es_saga_def *definition(const opts *o) {
    static es_saga_step_t steps[MAX_STEPS];
    static es_saga_def def;
    const es_saga_def *demo = DEMO_FULFILMENT_DEF(o->short_timeouts);
    if (o->timeout_ms <= 0 || demo->n_steps > MAX_STEPS)
        return demo;
    def = *demo;
    for (size_t i = 0; i < demo->n_steps; i++) {
        steps[i] = demo->steps[i];
        steps[i].timeout_ms = o->timeout_ms;
    }
    def.steps = steps;
    return &def;
}

/* Applies the command line to cfg; returns an exit status, 0 when it is complete. */
static int parse(es_config_t *cfg, opts *o, int argc, char **argv) {
    es_error_t err = {0};
    int log = 0, saga_db = 0;
    for (int i = 1; i < argc; i++) {
        const char *key = NULL;
        if (!strcmp(argv[i], "--until-idle")) {
            o->until_idle = true;
            continue;
        }
        if (!strcmp(argv[i], "--short-timeouts")) {
            o->short_timeouts = true;
            continue;
        }
        if (!strcmp(argv[i], "--timeout-ms") && i + 1 < argc) {
            char *end = NULL;
            o->timeout_ms = strtoll(argv[++i], &end, 10);
            if (!end || *end || o->timeout_ms <= 0)
                return usage();
            continue;
        }
        if (!strcmp(argv[i], "--db") && i + 1 < argc)
            key = "db", log++;
        else if (!strcmp(argv[i], "--brokers") && i + 1 < argc)
            key = "brokers", log++;
        else if (!strcmp(argv[i], "--saga-db") && i + 1 < argc)
            key = "saga.db", saga_db = 1;
        else if (strcmp(argv[i], "--set") || i + 1 >= argc)
            return usage();
        es_err rc =
            key ? es_config_set(cfg, key, argv[++i], &err) : run_set_pair(cfg, argv[++i], &err);
        if (rc != ES_OK)
            return fail(argv[i - 1], rc, &err);
    }
    return log == 1 && saga_db ? 0 : usage();
}

static int transient(es_err e) {
    return e == ES_EKAFKA || e == ES_EBUSY || e == ES_ETIMEOUT || e == ES_ERETRY;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Polls until no instance is active and a poll did nothing (or a signal came); transient
 * failures are logged and retried, as es_saga_run does. */
static es_err run_until_idle(es_saga_t *c, es_error_t *err) {
    int backoff = POLL_MS;
    while (!stopped) {
        size_t progress = 0;
        uint64_t active = 0;
        es_err e = es_saga_poll(c, POLL_MS, &progress, err);
        if (e == ES_OK && progress == 0)
            e = es_saga_active(c, &active, err);
        if (e == ES_OK && progress == 0 && active == 0)
            return ES_OK;
        if (e == ES_OK) {
            backoff = POLL_MS;
            continue;
        }
        if (!transient(e))
            return e;
        fprintf(stderr, "run_saga[%d]: %s; retrying in %d ms\n", (int)getpid(), err->message,
                backoff);
        sleep_ms(backoff);
        backoff = backoff < MAX_BACKOFF_MS ? backoff * 2 : MAX_BACKOFF_MS;
    }
    return ES_OK;
}

static es_err serve(es_saga_t *c, const opts *o, es_error_t *err) {
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    running = c;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    fprintf(stderr, "run_saga[%d]: running; SIGTERM stops it\n", (int)getpid());
    es_err rc = stopped ? ES_OK : o->until_idle ? run_until_idle(c, err) : es_saga_run(c, err);
    running = NULL;
    return rc;
}

int main(int argc, char **argv) {
    es_error_t err = {0};
    es_config_t *cfg = es_config_new();
    es_engine_t *engine = NULL;
    es_saga_t *c = NULL;
    opts o = {0};
    es_err rc;
    if (!cfg)
        return 1;
    es_config_set_log_cb(cfg, run_log_line, (void *)"run_saga");
    int status = parse(cfg, &o, argc, argv);
    const es_saga_def *def = definition(&o);
    if (status == 0 && (rc = es_engine_new(cfg, &engine, &err)) != ES_OK)
        status = fail("opening the engine", rc, &err);
    if (status == 0 && (rc = demo_register_all(engine, &err)) != ES_OK)
        status = fail("registering the demo domain", rc, &err);
    if (status == 0 && (rc = es_saga_new(cfg, def, engine, &c, &err)) != ES_OK)
        status = fail("opening the coordinator", rc, &err);
    if (status == 0 && (rc = serve(c, &o, &err)) != ES_OK)
        status = fail("running", rc, &err);
    es_saga_destroy(c);
    es_engine_destroy(engine);
    es_config_destroy(cfg);
    return status;
}
