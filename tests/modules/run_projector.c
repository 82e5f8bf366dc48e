/*
 * run_projector: one projector runner as a process, for the tests that kill
 * it. Loads a module by path, opens a runner on the config given with --set
 * (the environment is not read: it carries the tests' own variables) and
 * either drains the log (polls until a poll finds nothing, then exits 0) or,
 * with --follow, runs until SIGTERM or SIGINT (saying "running" on stderr once it
 * does, for the tests that wait for that). Either way the first SIGTERM or
 * SIGINT stops it at the next event (exit 0) and a second one ends it at once,
 * as a service does.
 *
 * Exit status: 0 done, 1 error, 2 usage, 3 halted by policy stop (ES_ESTATE).
 * The counters of the run go to stdout, errors to stderr, and so do the library's
 * warnings (all its log lines with RUN_PROJECTOR_VERBOSE set).
 */
#include <eskit/eskit.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "run_common.h"

/* How long one poll waits for a first record; a poll that finds none ends a drain. */
#define DRAIN_POLL_MS 100

static es_runner_t *volatile running;

static void on_signal(int sig) {
    (void)sig;
    es_runner_t *r = running;
    if (r)
        es_runner_stop(r);
}

static int usage(void) {
    fprintf(stderr, "usage: run_projector [--follow] [--set key=value]... <module.so>\n");
    return 2;
}

static int fail(const char *what, es_err rc, const es_error_t *err) {
    fprintf(stderr, "run_projector: %s: %s: %s\n", what, es_strerror(rc), err->message);
    return rc == ES_ESTATE ? 3 : 1;
}

static es_err drain(es_runner_t *r, es_error_t *err) {
    size_t n = 0;
    es_err rc;
    do
        rc = es_runner_poll(r, DRAIN_POLL_MS, &n, err);
    while (rc == ES_OK && n > 0);
    return rc;
}

/* The first signal stops the runner at the next event; the handler is then reset, so a second
 * one ends the process at once. */
static void catch_signals(es_runner_t *r) {
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = (int)SA_RESETHAND};
    sigemptyset(&sa.sa_mask);
    running = r;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

int main(int argc, char **argv) {
    es_error_t err = {0};
    es_config_t *cfg = es_config_new();
    es_projector_module_t *mod = NULL;
    es_runner_t *r = NULL;
    const char *module = NULL;
    int do_follow = 0, status = 0;
    es_err rc;
    if (!cfg)
        return 1;
    es_config_set_log_cb(cfg, run_log_line, (void *)"run_projector");
    for (int i = 1; i < argc && status == 0; i++) {
        if (!strcmp(argv[i], "--follow"))
            do_follow = 1;
        else if (!strcmp(argv[i], "--set") && i + 1 < argc) {
            if ((rc = run_set_pair(cfg, argv[++i], &err)) != ES_OK)
                status = fail("--set", rc, &err);
        } else if (argv[i][0] != '-' && !module)
            module = argv[i];
        else
            status = usage();
    }
    if (status == 0 && !module)
        status = usage();
    if (status == 0 && (rc = es_projector_load(cfg, module, &mod, &err)) != ES_OK)
        status = fail("loading the module", rc, &err);
    if (status == 0 && (rc = es_runner_new(cfg, es_projector_module_def(mod), &r, &err)) != ES_OK)
        status = fail("opening the runner", rc, &err);
    if (status == 0)
        catch_signals(r);
    if (status == 0 && do_follow)
        fprintf(stderr, "run_projector[%d]: running; SIGTERM stops it\n", (int)getpid());
    if (status == 0 && (rc = do_follow ? es_runner_run(r, &err) : drain(r, &err)) != ES_OK)
        status = fail(do_follow ? "running" : "draining", rc, &err);
    running = NULL;
    if (r) {
        es_runner_stats_t st;
        es_runner_stats(r, &st);
        printf("applied=%llu parked=%llu ignored=%llu retries=%llu batches=%llu\n",
               (unsigned long long)st.applied, (unsigned long long)st.parked,
               (unsigned long long)st.ignored, (unsigned long long)st.retries,
               (unsigned long long)st.batches);
    }
    es_runner_destroy(r);
    es_projector_unload(mod);
    es_config_destroy(cfg);
    return status;
}
