/*
 * The demo's services as processes (services.h). A stop signal sets a flag
 * and stops the processor or coordinator running; everything before the run
 * (waiting to be ready) checks the flag.
 */
#include "services.h"
#include "domain.h"
#include "fulfilment.h"

#include <eskit/processor.h>
#include <eskit/saga.h>

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define POLL_MS 100
#define RETRY_MS 500

static volatile sig_atomic_t stopped;
static es_processor_t *volatile processor;
static es_saga_t *volatile coordinator;

static void on_signal(int sig) {
    (void)sig;
    stopped = 1;
    es_processor_t *p = processor;
    es_saga_t *c = coordinator;
    if (p)
        es_processor_stop(p);
    if (c)
        es_saga_stop(c);
}

static void catch_stop_signals(void) {
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

void demo_log_line(int level, const char *message, void *opaque) {
    (void)opaque;
    if (level <= ES_LOG_ERROR || (level == ES_LOG_WARNING && strncmp(message, "librdkafka", 10)))
        fprintf(stderr, "order_saga: %s\n", message);
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* One poll of a service before its run; *ready once it can take work. */
typedef es_err first_poll_fn(void *service, bool *ready, es_error_t *err);

/* Polls until the service is ready or a stop signal came, riding out transient failures (a
 * broker not up yet) as the run itself would. */
static es_err await_ready(first_poll_fn *poll, void *service, const char *who, es_error_t *err) {
    bool ready = false;
    while (!stopped && !ready) {
        es_err e = poll(service, &ready, err);
        if (e == ES_OK)
            continue;
        if (!es_err_is_transient(e))
            return e;
        fprintf(stderr, "order_saga: %s: %s; retrying in %d ms\n", who, err->message, RETRY_MS);
        sleep_ms(RETRY_MS);
    }
    return ES_OK;
}

/* Ready once the group gave the processor its partitions and it restored them. */
static es_err poll_processor(void *service, bool *ready, es_error_t *err) {
    es_processor_stats_t st;
    es_err e = es_processor_poll(service, POLL_MS, NULL, err);
    es_processor_stats(service, &st);
    *ready = st.restores > 0;
    return e;
}

/* Ready once a round reached the brokers. */
static es_err poll_coordinator(void *service, bool *ready, es_error_t *err) {
    es_err e = es_saga_poll(service, 0, NULL, err);
    *ready = e == ES_OK;
    return e;
}

static const es_aggregate_def *demo_type(const char *type) {
    static const es_aggregate_def *const defs[] = {&demo_order_def, &demo_payment_def,
                                                   &demo_item_def};
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
        if (strcmp(defs[i]->type, type) == 0)
            return defs[i];
    return NULL;
}

/* The engine has only def registered: the processor owns the types registered on it. */
static es_err open_processor(const es_config_t *cfg, const es_aggregate_def *def,
                             es_engine_t **engine, es_processor_t **p, es_error_t *err) {
    es_err rc = es_engine_new(cfg, engine, err);
    if (rc == ES_OK)
        rc = es_engine_register(*engine, def, NULL, err);
    if (rc == ES_OK)
        rc = es_processor_new(cfg, *engine, p, err);
    return rc;
}

static es_err serve(es_processor_t *p, const char *type, es_error_t *err) {
    es_processor_stats_t st;
    processor = p;
    catch_stop_signals();
    es_err rc = await_ready(poll_processor, p, type, err);
    es_processor_stats(p, &st);
    if (rc == ES_OK && !stopped) {
        printf("order_saga: %s: ready, %llu partition(s) restored\n", type,
               (unsigned long long)st.restores);
        fflush(stdout);
        rc = es_processor_run(p, err);
    }
    processor = NULL;
    return rc;
}

int demo_serve(const es_config_t *cfg, const char *type) {
    const es_aggregate_def *def = demo_type(type);
    if (!def) {
        fprintf(stderr,
                "order_saga: --serve %s: not an aggregate type of the demo; use orders.order, "
                "payments.payment or inventory.item\n",
                type);
        return 2;
    }
    es_error_t err = {0};
    es_engine_t *engine = NULL;
    es_processor_t *p = NULL;
    es_err rc = open_processor(cfg, def, &engine, &p, &err);
    if (rc == ES_OK) {
        printf("order_saga: %s: command processor on %s.commands (consumer group %s.commands), "
               "state store %s\n",
               type, type, es_config_get(cfg, "service.name"), es_config_get(cfg, "state.db"));
        fflush(stdout);
        rc = serve(p, type, &err);
    }
    if (rc == ES_OK) {
        es_processor_stats_t st;
        es_processor_stats(p, &st);
        printf("order_saga: %s: stopped after %llu command(s)\n", type,
               (unsigned long long)st.commands);
    } else {
        fprintf(stderr, "order_saga: %s: %s\n", type, err.message);
    }
    es_processor_destroy(p);
    es_engine_destroy(engine);
    return rc == ES_OK ? 0 : 1;
}

static es_err coordinate(es_saga_t *c, es_error_t *err) {
    coordinator = c;
    catch_stop_signals();
    es_err rc = await_ready(poll_coordinator, c, DEMO_FULFILMENT_SAGA, err);
    if (rc == ES_OK && !stopped) {
        printf("order_saga: %s: ready\n", DEMO_FULFILMENT_SAGA);
        fflush(stdout);
        rc = es_saga_run(c, err);
    }
    coordinator = NULL;
    return rc;
}

int demo_coordinate(const es_config_t *cfg) {
    es_error_t err = {0};
    es_engine_t *engine = NULL;
    es_saga_t *c = NULL;
    es_err rc = es_engine_new(cfg, &engine, &err);
    if (rc == ES_OK)
        rc = demo_register_all(engine, &err);
    if (rc == ES_OK)
        rc = es_saga_new(cfg, DEMO_FULFILMENT_DEF(true), engine, &c, &err);
    if (rc == ES_OK) {
        printf("order_saga: %s: saga coordinator (payment timeout %d ms), saga database %s\n",
               DEMO_FULFILMENT_SAGA, DEMO_SHORT_PAYMENT_TIMEOUT_MS, es_config_get(cfg, "saga.db"));
        fflush(stdout);
        rc = coordinate(c, &err);
    }
    if (rc == ES_OK) {
        es_saga_stats_t st;
        es_saga_stats(c, &st);
        printf("order_saga: %s: stopped; %llu saga(s) started, %llu completed, %llu aborted, "
               "%llu failed; %llu command(s) sent\n",
               DEMO_FULFILMENT_SAGA, (unsigned long long)st.started,
               (unsigned long long)st.completed, (unsigned long long)st.aborted,
               (unsigned long long)st.failed, (unsigned long long)st.commands_sent);
    } else {
        fprintf(stderr, "order_saga: %s: %s\n", DEMO_FULFILMENT_SAGA, err.message);
    }
    es_saga_destroy(c);
    es_engine_destroy(engine);
    return rc == ES_OK ? 0 : 1;
}
