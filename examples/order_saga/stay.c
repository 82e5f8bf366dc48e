/* order_saga --stay (stay.h). */
#include "stay.h"
#include "customer_orders.h"
#include "fulfilment.h"
#include "order_summary.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#define POLL_MS 20
#define N_PROJECTORS DEMO_N_PROJECTORS

const es_projector_def *const demo_projectors[DEMO_N_PROJECTORS] = {&es_order_summary_projector,
                                                                    &es_customer_orders_projector};

static volatile sig_atomic_t stopped;
static es_runner_t *volatile running[N_PROJECTORS];
static es_saga_t *volatile coordinator;

static void on_signal(int sig) {
    (void)sig;
    stopped = 1;
    for (int i = 0; i < N_PROJECTORS; i++)
        if (running[i])
            es_runner_stop(running[i]);
    if (coordinator)
        es_saga_stop(coordinator);
}

static void report_parked(const es_dlq_entry_t *e, void *opaque) {
    (void)opaque;
    fprintf(stderr, "order_saga: %s parked %s partition %d offset %lld (%s/%s): %s\n", e->projector,
            e->topic, (int)e->partition, (long long)e->offset,
            e->event_type[0] ? e->event_type : "undecodable", e->key, e->error);
}

/* What one poll's result means for the loop: a transient failure (a broker away, a busy
 * database) is retried next round, and a poll the stop ended is no failure. */
static es_err keep_going(es_err rc, const char *who, const es_error_t *err) {
    if (rc == ES_OK || es_err_is_transient(rc) || (stopped && rc == ES_ESTATE))
        return ES_OK;
    fprintf(stderr, "order_saga: staying: %s: %s\n", who, err->message);
    return rc;
}

int demo_stay(const es_config_t *cfg, es_engine_t *engine, bool kafka,
              es_runner_t *runners[DEMO_N_PROJECTORS]) {
    const es_projector_def *const *defs = demo_projectors;
    es_error_t err = {0};
    es_err rc = ES_OK;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    for (int i = 0; i < N_PROJECTORS; i++) {
        es_runner_set_park_cb(runners[i], report_parked, NULL);
        running[i] = runners[i];
    }
    es_saga_t *c = NULL;
    if (!kafka && (rc = es_saga_new(cfg, DEMO_FULFILMENT_DEF(true), engine, &c, &err)) != ES_OK)
        fprintf(stderr, "order_saga: staying: saga coordinator: %s\n", err.message);
    coordinator = c;
    if (rc == ES_OK) {
        int port = es_metrics_port();
        printf("\norder_saga: staying: the projectors%s run on the log until SIGTERM or SIGINT",
               kafka ? "" : " and the saga coordinator");
        if (port)
            printf("; metrics on http://%s/metrics (port %d)", es_config_get(cfg, "metrics.listen"),
                   port);
        printf("\n");
        fflush(stdout);
    }
    while (rc == ES_OK && !stopped) {
        for (int i = 0; rc == ES_OK && i < N_PROJECTORS && !stopped; i++)
            rc = keep_going(es_runner_poll(runners[i], POLL_MS, NULL, &err), defs[i]->name, &err);
        if (rc == ES_OK && c && !stopped)
            rc = keep_going(es_saga_poll(c, POLL_MS, NULL, &err), "saga coordinator", &err);
    }
    coordinator = NULL;
    es_saga_destroy(c);
    for (int i = 0; i < N_PROJECTORS; i++) {
        running[i] = NULL;
        es_runner_destroy(runners[i]);
        runners[i] = NULL;
    }
    return rc == ES_OK ? 0 : 1;
}
