/*
 * run_processor: one command processor as a process, for the tests that stop
 * and kill owners mid-stream. Serves the demo domain (orders, payments,
 * inventory) from the brokers given with --brokers on the state store given
 * with --state, with any further settings from --set key=value (the
 * environment is not read: it carries the tests' own variables), until
 * SIGTERM or SIGINT (saying "running" on stderr once it serves, for the tests that
 * wait for that); then it leaves the consumer group and exits.
 *
 * Exit status: 0 stopped, 1 error, 2 usage. Library warnings and errors go to
 * stderr, each line prefixed with the process id (all log lines with
 * RUN_PROCESSOR_VERBOSE set).
 */
#include <eskit/eskit.h>
#include <eskit/processor.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "domain.h"
#include "run_common.h"

static es_processor_t *volatile running;

static void on_signal(int sig) {
    (void)sig;
    es_processor_t *p = running;
    if (p)
        es_processor_stop(p);
}

static int usage(void) {
    fprintf(stderr, "usage: run_processor --brokers ADDR --state FILE [--set key=value]...\n");
    return 2;
}

static int fail(const char *what, es_err rc, const es_error_t *err) {
    fprintf(stderr, "run_processor[%d]: %s: %s: %s\n", (int)getpid(), what, es_strerror(rc),
            err->message);
    return 1;
}

/* Applies the command line to cfg; returns an exit status, 0 when it is complete. */
static int parse(es_config_t *cfg, int argc, char **argv) {
    es_error_t err = {0};
    int brokers = 0, state = 0;
    for (int i = 1; i < argc; i++) {
        const char *key = NULL;
        if (!strcmp(argv[i], "--brokers") && i + 1 < argc)
            key = "brokers", brokers = 1;
        else if (!strcmp(argv[i], "--state") && i + 1 < argc)
            key = "state.db", state = 1;
        else if (strcmp(argv[i], "--set") || i + 1 >= argc)
            return usage();
        es_err rc =
            key ? es_config_set(cfg, key, argv[++i], &err) : run_set_pair(cfg, argv[++i], &err);
        if (rc != ES_OK)
            return fail(argv[i - 1], rc, &err);
    }
    return brokers && state ? 0 : usage();
}

static es_err serve(es_processor_t *p, es_error_t *err) {
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    running = p;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    fprintf(stderr, "run_processor[%d]: running; SIGTERM stops it\n", (int)getpid());
    es_err rc = es_processor_run(p, err);
    running = NULL;
    return rc;
}

int main(int argc, char **argv) {
    es_error_t err = {0};
    es_config_t *cfg = es_config_new();
    es_engine_t *engine = NULL;
    es_processor_t *p = NULL;
    es_err rc;
    if (!cfg)
        return 1;
    es_config_set_log_cb(cfg, run_log_line, (void *)"run_processor");
    int status = parse(cfg, argc, argv);
    if (status == 0 && (rc = es_engine_new(cfg, &engine, &err)) != ES_OK)
        status = fail("opening the engine", rc, &err);
    if (status == 0 && (rc = demo_register_all(engine, &err)) != ES_OK)
        status = fail("registering the demo domain", rc, &err);
    if (status == 0 && (rc = es_processor_new(cfg, engine, &p, &err)) != ES_OK)
        status = fail("opening the processor", rc, &err);
    if (status == 0 && (rc = serve(p, &err)) != ES_OK)
        status = fail("running", rc, &err);
    es_processor_destroy(p);
    es_engine_destroy(engine);
    es_config_destroy(cfg);
    return status;
}
