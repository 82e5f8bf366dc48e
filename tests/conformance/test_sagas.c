/*
 * The saga coordinator's behaviour, the same on both backends (CTest runs
 * this file with CONFORMANCE_BACKEND=embedded and =kafka; on Kafka a command
 * processor owns the aggregates and the coordinator's relay produces to
 * "<type>.commands"): the demo's order fulfilment saga completes, is
 * compensated after a declined payment, a shortage of stock and a timeout,
 * redelivered events never double a step, and a run ended by a stop leaves a
 * coordinator that polls on.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "domain.h"
#include "fulfilment.h"
#include "testutil.h"

#define SAGA "orders.fulfilment"

static tb_t *b;
static es_saga_t *coord;
static es_saga_step_t steps[8];
static es_saga_def def;

/* The demo's saga with every step's timeout set to timeout_ms. */
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

TestSuite(sagas, .init = setup, .fini = teardown, .timeout = 180);

static void start(int64_t timeout_ms) {
    es_error_t err = {0};
    cr_assert_eq(
        es_saga_new(tb_config(b), saga_with_timeout(timeout_ms), tb_engine(b), &coord, &err), ES_OK,
        "%s", err.message);
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

/* Polls until `started` instances exist and none is active (a poll publishes the transitions
 * it made before it returns). */
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

typedef struct collected {
    char types[64][80];
    char commands[64][ES_MAX_ID_LEN + 1];
    size_t n;
} collected;

static int collect(const es_event_t *ev, void *opaque) {
    collected *c = opaque;
    if (c->n < 64) {
        snprintf(c->types[c->n], sizeof c->types[0], "%s", ev->event_type);
        snprintf(c->commands[c->n], sizeof c->commands[0], "%s",
                 ev->command_id ? ev->command_id : "");
        c->n++;
    }
    return 0;
}

/* The event types of a stream, in order, as "A,B,C". */
static void stream_types(const char *type, const char *id, char *out, size_t cap) {
    collected c = {0};
    es_error_t err = {0};
    es_err rc = es_store_read_stream(tb_store(b), type, id, 1, collect, &c, &err);
    cr_assert(rc == ES_OK || rc == ES_ENOTFOUND, "%s", err.message);
    out[0] = 0;
    for (size_t i = 0; i < c.n; i++) {
        const char *dot = strrchr(c.types[i], '.');
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "%s%s", i ? "," : "", dot ? dot + 1 : c.types[i]);
    }
    /* No command's effect twice: the events one command caused are one run of versions. */
    for (size_t i = 0; i < c.n; i++)
        for (size_t j = i + 2; j < c.n; j++)
            if (*c.commands[i] && !strcmp(c.commands[i], c.commands[j]))
                cr_assert_str_eq(c.commands[j - 1], c.commands[i],
                                 "%s/%s: command %s decided twice", type, id, c.commands[i]);
}

static void state_is(const char *id, const char *want) {
    es_saga_info_t *list = NULL;
    size_t n = 0;
    es_error_t err = {0};
    cr_assert_eq(es_saga_list(tb_config(b), SAGA, NULL, &list, &n, &err), ES_OK, "%s", err.message);
    const char *got = NULL;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(list[i].id, id))
            got = list[i].state;
    cr_assert_not_null(got, "no saga instance %s", id);
    cr_assert_str_eq(got, want, "saga %s", id);
    free(list);
}

/* The instance's transition kinds from "<saga>.saga.events", as "a,b,c". */
static void kinds(const char *id, char *out, size_t cap) {
    es_saga_record_t *recs = NULL;
    size_t n = 0;
    es_error_t err = {0};
    cr_assert_eq(es_saga_history(tb_config(b), SAGA, id, &recs, &n, &err), ES_OK, "%s",
                 err.message);
    out[0] = 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(recs[i].seq, i + 1, "transition versions are contiguous");
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "%s%s", i ? "," : "", recs[i].kind);
    }
    free(recs);
}

static void contains(const char *haystack, const char *needle) {
    cr_assert_not_null(strstr(haystack, needle), "'%s' lacks '%s'", haystack, needle);
}

Test(sagas, happy_path_confirms_the_order) {
    char buf[2048];
    restock("sku-a", 10);
    place("o-ok", "alice", "sku-a", 2, 1500);
    start(30000);
    settle(1);
    state_is("o-ok", "completed");
    stream_types("orders.order", "o-ok", buf, sizeof buf);
    cr_assert_str_eq(buf, "OrderPlaced,OrderConfirmed");
    stream_types("payments.payment", "o-ok", buf, sizeof buf);
    cr_assert_str_eq(buf, "PaymentAuthorized");
    stream_types("inventory.item", "sku-a", buf, sizeof buf);
    cr_assert_str_eq(buf, "StockAdded,StockReserved");
    kinds("o-ok", buf, sizeof buf);
    cr_assert_str_eq(buf, "started,command_sent,event_received,step_completed,command_sent,"
                          "event_received,step_completed,command_sent,event_received,"
                          "step_completed,completed");
}

Test(sagas, declined_payment_releases_stock_and_cancels) {
    char buf[2048];
    restock("sku-b", 10);
    /* Over the demo's payment limit: declined. */
    place("o-declined", "bob", "sku-b", 1, 50000000);
    start(30000);
    settle(1);
    state_is("o-declined", "aborted");
    stream_types("payments.payment", "o-declined", buf, sizeof buf);
    cr_assert_str_eq(buf, "PaymentDeclined");
    stream_types("inventory.item", "sku-b", buf, sizeof buf);
    cr_assert_str_eq(buf, "StockAdded,StockReserved,StockReleased");
    stream_types("orders.order", "o-declined", buf, sizeof buf);
    cr_assert_str_eq(buf, "OrderPlaced,OrderCancelled");
    kinds("o-declined", buf, sizeof buf);
    contains(buf, "step_failed,compensation_sent");
    contains(buf, "step_compensated,abort_sent");
    contains(buf, ",aborted");
}

Test(sagas, out_of_stock_cancels_without_payment) {
    char buf[2048];
    restock("sku-c", 1);
    place("o-short", "carol", "sku-c", 3, 1000);
    start(30000);
    settle(1);
    state_is("o-short", "aborted");
    stream_types("inventory.item", "sku-c", buf, sizeof buf);
    cr_assert_str_eq(buf, "StockAdded,StockShortage");
    stream_types("payments.payment", "o-short", buf, sizeof buf);
    cr_assert_str_eq(buf, "", "no payment was asked for");
    stream_types("orders.order", "o-short", buf, sizeof buf);
    cr_assert_str_eq(buf, "OrderPlaced,OrderCancelled");
}

Test(sagas, timeout_compensates_completed_steps) {
    char buf[2048];
    restock("sku-d", 5);
    /* A payment the 3-D Secure check holds: nothing completes it. */
    place("o-slow", "3ds-dave", "sku-d", 1, 1000);
    start(1500);
    settle(1);
    state_is("o-slow", "aborted");
    kinds("o-slow", buf, sizeof buf);
    contains(buf, "timed_out");
    stream_types("inventory.item", "sku-d", buf, sizeof buf);
    cr_assert_str_eq(buf, "StockAdded,StockReserved,StockReleased");
    stream_types("orders.order", "o-slow", buf, sizeof buf);
    cr_assert_str_eq(buf, "OrderPlaced,OrderCancelled");
    stream_types("payments.payment", "o-slow", buf, sizeof buf);
    cr_assert_str_eq(buf, "PaymentPending,PaymentVoided");
}

/* Every event of the saga's streams, copied, for redelivery. */
typedef struct copies {
    es_event_t *ev[64];
    size_t n;
} copies;

static int keep(const es_event_t *ev, void *opaque) {
    copies *c = opaque;
    if (c->n < 64)
        c->ev[c->n++] = es_event_dup(ev);
    return 0;
}

static void read_all(copies *c, const char *type, const char *id) {
    es_error_t err = {0};
    cr_assert_eq(es_store_read_stream(tb_store(b), type, id, 1, keep, c, &err), ES_OK, "%s",
                 err.message);
}

Test(sagas, redelivered_events_do_not_double_a_step) {
    char before[2048], after[2048], buf[2048];
    restock("sku-e", 10);
    place("o-dup", "erin", "sku-e", 2, 1500);
    place("o-dup-declined", "frank", "sku-e", 1, 50000000);
    start(30000);
    settle(2);
    kinds("o-dup", before, sizeof before);
    copies c = {0};
    read_all(&c, "orders.order", "o-dup");
    read_all(&c, "inventory.item", "sku-e");
    read_all(&c, "payments.payment", "o-dup");
    read_all(&c, "payments.payment", "o-dup-declined");
    read_all(&c, "orders.order", "o-dup-declined");
    cr_assert_gt(c.n, 8);
    es_error_t err = {0};
    /* Newest first (out of order), then oldest first (duplicates), twice over. */
    for (int round = 0; round < 2; round++) {
        for (size_t i = c.n; i-- > 0;)
            cr_assert_eq(es_saga_redeliver(coord, c.ev[i], &err), ES_OK, "%s", err.message);
        for (size_t i = 0; i < c.n; i++)
            cr_assert_eq(es_saga_redeliver(coord, c.ev[i], &err), ES_OK, "%s", err.message);
    }
    settle(2);
    kinds("o-dup", after, sizeof after);
    cr_assert_str_eq(after, before, "the history did not change");
    state_is("o-dup", "completed");
    state_is("o-dup-declined", "aborted");
    stream_types("inventory.item", "sku-e", buf, sizeof buf);
    cr_assert_str_eq(buf, "StockAdded,StockReserved,StockReserved,StockReleased");
    stream_types("orders.order", "o-dup", buf, sizeof buf);
    cr_assert_str_eq(buf, "OrderPlaced,OrderConfirmed");
    es_saga_stats_t st;
    es_saga_stats(coord, &st);
    cr_assert_gt(st.ignored, 0);
    for (size_t i = 0; i < c.n; i++)
        es_event_free(c.ev[i]);
}

Test(sagas, a_redelivery_mid_step_completes_it_once) {
    char buf[2048];
    restock("sku-f", 10);
    place("o-mid", "gina", "sku-f", 1, 1500);
    start(30000);
    /* Let the first step's command run and its event arrive, and deliver that event again
     * before and after the consumer sees it. */
    es_error_t err = {0};
    for (int i = 0; i < 200; i++) {
        copies c = {0};
        read_all(&c, "inventory.item", "sku-f");
        size_t n = c.n;
        if (n == 2)
            for (int k = 0; k < 3; k++)
                cr_assert_eq(es_saga_redeliver(coord, c.ev[1], &err), ES_OK, "%s", err.message);
        for (size_t k = 0; k < c.n; k++)
            es_event_free(c.ev[k]);
        if (n == 2)
            break;
        cr_assert_eq(es_saga_poll(coord, 20, NULL, &err), ES_OK, "%s", err.message);
    }
    settle(1);
    state_is("o-mid", "completed");
    kinds("o-mid", buf, sizeof buf);
    cr_assert_str_eq(buf, "started,command_sent,event_received,step_completed,command_sent,"
                          "event_received,step_completed,command_sent,event_received,"
                          "step_completed,completed");
    stream_types("payments.payment", "o-mid", buf, sizeof buf);
    cr_assert_str_eq(buf, "PaymentAuthorized", "one authorization");
}

Test(sagas, ended_instances_are_pruned_after_the_retention_and_still_counted) {
    char buf[2048];
    es_error_t err = {0};
    cr_assert_eq(es_config_set(tb_config(b), "saga.retention.ms", "300", &err), ES_OK, "%s",
                 err.message);
    restock("sku-g", 10);
    place("o-done", "hana", "sku-g", 1, 1500);
    place("o-held", "3ds-ivan", "sku-g", 1, 1500); /* 3-D Secure: its payment step waits */
    start(60000);
    es_saga_stats_t st = {0};
    for (int i = 0; i < 3000 && st.pruned == 0; i++) {
        cr_assert_eq(es_saga_poll(coord, 20, NULL, &err), ES_OK, "%s", err.message);
        es_saga_stats(coord, &st);
    }
    cr_assert_eq(st.pruned, 1, "the completed instance is pruned");
    cr_assert_eq(st.started, 2, "a pruned instance still counts as started");
    cr_assert_eq(st.completed, 1, "and as completed");
    es_saga_info_t *found = NULL;
    size_t n = 1;
    cr_assert_eq(es_saga_find(tb_config(b), SAGA, "o-done", &found, &n, &err), ES_OK, "%s",
                 err.message);
    cr_assert_eq(n, 0, "o-done is no longer in saga.db");
    free(found);
    state_is("o-held", "running"); /* as old, but not ended: kept */
    kinds("o-done", buf, sizeof buf);
    cr_assert_str_eq(buf,
                     "started,command_sent,event_received,step_completed,command_sent,"
                     "event_received,step_completed,command_sent,event_received,"
                     "step_completed,completed",
                     "its history stays in the log");
    /* Retention 0 keeps ended instances: a new coordinator on the same saga.db prunes none. */
    es_saga_destroy(coord);
    coord = NULL;
    cr_assert_eq(es_config_set(tb_config(b), "saga.retention.ms", "0", &err), ES_OK, "%s",
                 err.message);
    place("o-kept", "jo", "sku-g", 1, 1500);
    start(60000);
    for (int i = 0; i < 3000 && st.completed < 2; i++) {
        cr_assert_eq(es_saga_poll(coord, 20, NULL, &err), ES_OK, "%s", err.message);
        es_saga_stats(coord, &st);
    }
    cr_assert_eq(st.completed, 2);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do { /* until well past the 300 ms the first coordinator kept ended instances for */
        cr_assert_eq(es_saga_poll(coord, 20, NULL, &err), ES_OK, "%s", err.message);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < 900);
    es_saga_stats(coord, &st);
    cr_assert_eq(st.pruned, 1);
    state_is("o-kept", "completed");
}

static void *run_coordinator(void *opaque) {
    es_error_t err = {0};
    *(es_err *)opaque = es_saga_run(coord, &err);
    return NULL;
}

Test(sagas, after_a_run_ended_by_a_stop_polls_apply_new_events_again) {
    char buf[2048];
    restock("sku-h", 10);
    start(30000);
    es_err rc = ES_EIO;
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, run_coordinator, &rc), 0);
    es_saga_stop(coord);
    pthread_join(t, NULL);
    cr_assert_eq(rc, ES_OK, "a run ended by a stop returns ES_OK: %s", es_strerror(rc));
    place("o-later", "kim", "sku-h", 1, 1500);
    settle(1);
    state_is("o-later", "completed");
    stream_types("orders.order", "o-later", buf, sizeof buf);
    cr_assert_str_eq(buf, "OrderPlaced,OrderConfirmed");
}
