/*
 * A saga coordinator's metrics (docs/observability.md), the same on both backends: after the
 * demo's order saga completes one order and aborts two, es_metrics_write holds the instances
 * by final state, the commands and compensations sent, an empty outbox and nothing overdue; a
 * deadline past while the coordinator is not polled shows as overdue until it fires;
 * metrics.enabled=false registers nothing; coordinators come and go cleanly during scrapes.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <eskit/metrics.h>

#include "backend.h"
#include "domain.h"
#include "fulfilment.h"
#include "metricsutil.h"
#include "testutil.h"

#define SAGA "orders.fulfilment"
#define WAIT_US 15000000LL

static tb_t *b;
static es_saga_t *coord;
static es_saga_step_t steps[8];
static es_saga_def def;

static const es_saga_def *saga_with_timeout(int64_t timeout_ms) {
    const es_saga_def *d = &demo_fulfilment_def;
    cr_assert_leq(d->n_steps, sizeof steps / sizeof steps[0]);
    def = *d;
    for (size_t i = 0; i < d->n_steps; i++) {
        steps[i] = d->steps[i];
        steps[i].timeout_ms = timeout_ms;
    }
    def.steps = steps;
    return &def;
}

static void setup(void) {
    static const char *const types[] = {"orders.order", "payments.payment", "inventory.item",
                                        SAGA ".saga", NULL};
    b = tb_open(types);
    char *path = tu_path(tb_dir(b), "saga.db");
    es_error_t err = {0};
    cr_assert_eq(es_config_set(tb_config(b), "saga.db", path, &err), ES_OK, "%s", err.message);
    free(path);
}

static void teardown(void) {
    es_saga_destroy(coord);
    coord = NULL;
    tb_close(b);
}

TestSuite(saga_metrics, .init = setup, .fini = teardown, .timeout = 180);

static es_saga_t *coordinator(int64_t timeout_ms) {
    es_saga_t *c = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_saga_new(tb_config(b), saga_with_timeout(timeout_ms), tb_engine(b), &c, &err),
                 ES_OK, "%s", err.message);
    return c;
}

static void execute(const char *type, const char *id, const ProtobufCMessage *msg) {
    es_command_t cmd = {.aggregate_type = type, .aggregate_id = id, .message = msg};
    es_result_t res = {0};
    es_error_t err = {0};
    cr_assert_eq(es_execute(tb_engine(b), &cmd, &res, &err), ES_OK, "%s %s/%s: %s",
                 msg->descriptor->name, type, id, res.reason ? res.reason : err.message);
    es_result_clear(&res);
}

static void restock(const char *sku, uint32_t quantity) {
    Inventory__V1__Restock m = INVENTORY__V1__RESTOCK__INIT;
    m.quantity = quantity;
    execute("inventory.item", sku, &m.base);
}

static void place(const char *id, const char *customer, const char *sku, uint32_t quantity,
                  int64_t unit_price_cents) {
    Orders__V1__LineItem item = ORDERS__V1__LINE_ITEM__INIT;
    item.sku = (char *)sku;
    item.quantity = quantity;
    item.unit_price_cents = unit_price_cents;
    Orders__V1__LineItem *items[] = {&item};
    Orders__V1__PlaceOrder m = ORDERS__V1__PLACE_ORDER__INIT;
    m.customer_id = (char *)customer;
    m.n_items = 1;
    m.items = items;
    m.currency = "USD";
    execute("orders.order", id, &m.base);
}

/* Polls until `started` instances exist and none is active. */
static void settle(uint64_t started) {
    es_error_t err = {0};
    uint64_t active = 1;
    es_saga_stats_t st = {0};
    for (int i = 0; i < 3000 && (active || st.started < started); i++) {
        cr_assert_eq(es_saga_poll(coord, 20, NULL, &err), ES_OK, "%s", err.message);
        cr_assert_eq(es_saga_active(coord, &active, &err), ES_OK, "%s", err.message);
        es_saga_stats(coord, &st);
    }
    cr_assert_eq(active, 0, "sagas still active after 3000 polls");
    cr_assert_geq(st.started, started, "instances started");
}

static double saga_value(const char *text, const char *family) {
    char series[256];
    snprintf(series, sizeof series, "%s{saga=\"" SAGA "\"}", family);
    return mx_value(text, series);
}

static double instances(const char *text, const char *state) {
    char series[256];
    snprintf(series, sizeof series, "eskit_saga_instances{saga=\"" SAGA "\",state=\"%s\"}", state);
    return mx_value(text, series);
}

Test(saga_metrics, a_known_workload_gives_instances_by_final_state_and_the_commands_sent) {
    restock("sku-a", 10);
    restock("sku-b", 10);
    restock("sku-c", 1);
    place("o-ok", "alice", "sku-a", 2, 1500);         /* completed: 3 commands */
    place("o-declined", "bob", "sku-b", 1, 50000000); /* aborted: 2, a compensation, the abort */
    place("o-short", "carol", "sku-c", 3, 1000);      /* aborted: 1 and the abort */
    coord = coordinator(30000);
    settle(3);
    char *text = mx_scrape();
    cr_assert_eq(instances(text, "completed"), 1, "%s", text);
    cr_assert_eq(instances(text, "aborted"), 2);
    cr_assert_eq(instances(text, "running"), 0);
    cr_assert_eq(instances(text, "compensating"), 0);
    cr_assert_eq(instances(text, "failed"), 0);
    es_saga_stats_t st;
    es_saga_stats(coord, &st);
    cr_assert_eq(st.commands_sent, 9);
    cr_assert_eq(saga_value(text, "eskit_saga_commands_sent_total"), 9);
    cr_assert_eq(saga_value(text, "eskit_saga_compensations_total"), 1);
    cr_assert_eq(saga_value(text, "eskit_saga_step_timeouts_total"), 0);
    cr_assert_eq(saga_value(text, "eskit_saga_outbox_depth"), 0);
    cr_assert_eq(saga_value(text, "eskit_saga_oldest_overdue_seconds"), 0);
    free(text);
    es_saga_destroy(coord);
    coord = NULL;
    text = mx_scrape();
    cr_assert_eq(mx_count(text, "eskit_saga_"), 0, "a destroyed coordinator left: %s", text);
    free(text);
}

Test(saga_metrics, a_deadline_past_while_unpolled_is_overdue_until_it_fires) {
    restock("sku-d", 5);
    place("o-slow", "3ds-dave", "sku-d", 1, 1000); /* the payment stays pending */
    /* Long enough for the payment's command to be delivered and answered first: on Kafka
     * through the command processor, which takes a few seconds. */
    coord = coordinator(tb_kafka(b) ? 6000 : 1500);
    es_error_t err = {0};
    int64_t deadline = es_now_us() + WAIT_US;
    /* Until the payment step runs: the stock step's command and the payment's were sent. */
    for (es_saga_stats_t st = {0}; st.commands_sent < 2; es_saga_stats(coord, &st)) {
        cr_assert_lt(es_now_us(), deadline, "the payment step never started");
        cr_assert_eq(es_saga_poll(coord, 20, NULL, &err), ES_OK, "%s", err.message);
    }
    /* Not polled: the deadline passes and nothing fires it. */
    double overdue = 0;
    char *text = NULL;
    while (overdue < 0.2) {
        cr_assert_lt(es_now_us(), deadline, "never overdue: %s", text ? text : "");
        free(text);
        nanosleep(&(struct timespec){0, 50000000}, NULL);
        text = mx_scrape();
        overdue = saga_value(text, "eskit_saga_oldest_overdue_seconds");
    }
    cr_assert_eq(saga_value(text, "eskit_saga_step_timeouts_total"), 0, "%s", text);
    cr_assert_eq(instances(text, "running"), 1);
    free(text);
    settle(1);
    text = mx_scrape();
    cr_assert_eq(saga_value(text, "eskit_saga_step_timeouts_total"), 1, "%s", text);
    cr_assert_eq(saga_value(text, "eskit_saga_oldest_overdue_seconds"), 0);
    /* The payment is voided and the stock released. */
    cr_assert_eq(saga_value(text, "eskit_saga_compensations_total"), 2);
    cr_assert_eq(instances(text, "aborted"), 1);
    cr_assert_eq(instances(text, "running"), 0);
    free(text);
}

Test(saga_metrics, metrics_disabled_register_no_saga_series) {
    es_error_t err = {0};
    cr_assert_eq(es_config_set(tb_config(b), "metrics.enabled", "false", &err), ES_OK, "%s",
                 err.message);
    coord = coordinator(30000);
    cr_assert_eq(es_saga_poll(coord, 20, NULL, &err), ES_OK, "%s", err.message);
    char *text = mx_scrape();
    cr_assert_eq(mx_count(text, "eskit_saga_"), 0, "%s", text);
    free(text);
}

static atomic_int scraping;

static void *scrape_loop(void *arg) {
    atomic_size_t *scrapes = arg;
    while (atomic_load(&scraping)) {
        free(mx_scrape());
        atomic_fetch_add(scrapes, 1);
    }
    return NULL;
}

Test(saga_metrics, coordinators_created_and_destroyed_during_scrapes_are_clean) {
    atomic_size_t scrapes = 0;
    atomic_store(&scraping, 1);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, scrape_loop, &scrapes), 0);
    es_error_t err = {0};
    for (int i = 0; i < 5; i++) {
        es_saga_t *c = coordinator(30000);
        cr_assert_eq(es_saga_poll(c, i % 2 ? 20 : 0, NULL, &err), ES_OK, "%s", err.message);
        es_saga_destroy(c);
    }
    atomic_store(&scraping, 0);
    pthread_join(t, NULL);
    cr_assert_gt(atomic_load(&scrapes), 0);
}
