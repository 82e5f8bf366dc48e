/*
 * The demo domain's rules. Decider rules run on the test kit (eskit/testing.h), in memory with
 * no file: each aggregate id is an es_test_aggregate_t whose history is what its commands
 * appended. The tests of store behaviour (a reopened engine, loads from events alone, the
 * engine's registrations) run the same helpers on es_execute over a temp database (the store
 * suite).
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "domain.h"
#include "fulfilment.h"
#include "testutil.h"

#define MAX_EVENTS 16
#define MAX_LINES 4
#define MAX_AGGREGATES 8

/* The store suite's engine; NULL in the suites that run on the kit. */
static char *dir;
static es_config_t *cfg;
static es_engine_t *engine;

/* The kit's aggregates, by type and id. */
static struct kit_entry {
    const char *type, *id;
    es_test_aggregate_t *t;
} kits[MAX_AGGREGATES];
static size_t n_kits;
static char report[8192];

static void open_engine(void) {
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "es_engine_new: %s", err.message);
    cr_assert_eq(demo_register_all(engine, &err), ES_OK, "demo_register_all: %s", err.message);
}

static void store_setup(void) {
    dir = tu_tempdir();
    cr_assert_not_null(dir);
    cfg = tu_config(dir, "domain.db");
    cr_assert_not_null(cfg);
    open_engine();
}

static void store_teardown(void) {
    es_engine_destroy(engine);
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(dir);
}

static void kit_teardown(void) {
    for (size_t i = 0; i < n_kits; i++)
        es_test_aggregate_destroy(kits[i].t);
    n_kits = 0;
}

/* A new engine on the same file: everything it knows comes from the store. */
static void reopen(void) {
    es_engine_destroy(engine);
    engine = NULL;
    open_engine();
}

/* Switches to a fresh file that never gets snapshots, so loads fold events. */
static void use_events_only_db(void) {
    es_engine_destroy(engine);
    es_config_destroy(cfg);
    cfg = tu_config(dir, "events-only.db");
    cr_assert_eq(es_config_set(cfg, "snapshot.every", "0", NULL), ES_OK);
    open_engine();
}

TestSuite(order, .fini = kit_teardown);
TestSuite(payment, .fini = kit_teardown);
TestSuite(item, .fini = kit_teardown);
TestSuite(domain, .fini = kit_teardown);
TestSuite(store, .init = store_setup, .fini = store_teardown);

static const es_aggregate_def *def_of(const char *type) {
    const es_aggregate_def *defs[] = {&demo_order_def, &demo_payment_def, &demo_item_def};
    for (size_t i = 0; i < 3; i++)
        if (!strcmp(defs[i]->type, type))
            return defs[i];
    cr_assert_fail("%s is not a demo aggregate", type);
    return NULL;
}

/* The kit's aggregate type/id, made on first use. */
static es_test_aggregate_t *kit(const char *type, const char *id) {
    for (size_t i = 0; i < n_kits; i++)
        if (!strcmp(kits[i].type, type) && !strcmp(kits[i].id, id))
            return kits[i].t;
    cr_assert_lt(n_kits, MAX_AGGREGATES);
    es_error_t err = {0};
    struct kit_entry *k = &kits[n_kits];
    cr_assert_eq(es_test_aggregate_new(def_of(type), NULL, &k->t, &err), ES_OK, "%s", err.message);
    k->type = type;
    k->id = id;
    n_kits++;
    return k->t;
}

/* Executing commands */

/* es_execute on the store suite's engine. */
static es_err exec(const char *type, const char *id, const ProtobufCMessage *msg,
                   es_result_t *res) {
    es_command_t cmd = {.aggregate_type = type, .aggregate_id = id, .message = msg};
    es_error_t err = {0};
    memset(res, 0, sizeof *res);
    return es_execute(engine, &cmd, res, &err);
}

static uint64_t stream_version(const char *type, const char *id) {
    if (!engine)
        return es_test_version(kit(type, id));
    uint64_t v = 0;
    es_error_t err = {0};
    cr_assert_eq(es_store_stream_version(es_engine_store(engine), type, id, &v, &err), ES_OK, "%s",
                 err.message);
    return v;
}

static void must_accept(const char *type, const char *id, const ProtobufCMessage *msg,
                        size_t n_events) {
    if (!engine) {
        es_test_aggregate_t *t = kit(type, id);
        es_err rc = es_test_when(t, msg, NULL);
        cr_assert_eq(rc, ES_OK, "%s %s/%s: %s: %s", msg->descriptor->short_name, type, id,
                     es_strerror(rc), es_test_reason(t));
        cr_assert_eq(es_test_emitted(t, NULL), n_events, "%s emitted %zu events, expected %zu",
                     msg->descriptor->short_name, es_test_emitted(t, NULL), n_events);
        return;
    }
    es_result_t res;
    es_err rc = exec(type, id, msg, &res);
    cr_assert_eq(rc, ES_OK, "%s %s/%s: %s: %s", msg->descriptor->short_name, type, id,
                 es_strerror(rc), res.reason ? res.reason : "(no reason)");
    cr_assert_eq(res.outcome, ES_OUTCOME_ACCEPTED);
    cr_assert_eq(res.n_events, n_events, "%s emitted %zu events, expected %zu",
                 msg->descriptor->short_name, res.n_events, n_events);
    es_result_clear(&res);
}

/* Asserts a rejection whose reason mentions because, and that nothing was appended. */
static void must_reject(const char *type, const char *id, const ProtobufCMessage *msg,
                        const char *because) {
    uint64_t before = stream_version(type, id);
    if (!engine) {
        es_test_aggregate_t *t = kit(type, id);
        es_test_when(t, msg, NULL);
        cr_assert(es_test_then_rejected(t, because, report, sizeof report), "%s", report);
        cr_assert_eq(es_test_version(t), before, "a rejected command appended events");
        return;
    }
    es_result_t res;
    es_err rc = exec(type, id, msg, &res);
    cr_assert_eq(rc, ES_EREJECTED, "%s %s/%s returned %s", msg->descriptor->short_name, type, id,
                 es_strerror(rc));
    cr_assert_eq(res.outcome, ES_OUTCOME_REJECTED);
    cr_assert_not_null(res.reason, "a rejection carries a reason");
    cr_assert_not_null(strstr(res.reason, because), "reason \"%s\" does not mention \"%s\"",
                       res.reason, because);
    cr_assert_eq(res.n_events, 0);
    es_result_clear(&res);
    cr_assert_eq(stream_version(type, id), before, "a rejected command appended events");
}

/* Command builders */

typedef struct place {
    Orders__V1__PlaceOrder cmd;
    Orders__V1__LineItem items[MAX_LINES];
    Orders__V1__LineItem *ptrs[MAX_LINES];
} place_t;

static void place_init(place_t *p, const char *customer) {
    orders__v1__place_order__init(&p->cmd);
    p->cmd.customer_id = (char *)customer;
    p->cmd.currency = "USD";
    p->cmd.items = p->ptrs;
}

static void place_add(place_t *p, const char *sku, uint32_t quantity, int64_t price) {
    size_t n = p->cmd.n_items++;
    orders__v1__line_item__init(&p->items[n]);
    p->items[n].sku = (char *)sku;
    p->items[n].quantity = quantity;
    p->items[n].unit_price_cents = price;
    p->ptrs[n] = &p->items[n];
}

/* A valid two-line order worth 44.99. */
static void place_default(place_t *p) {
    place_init(p, "alice");
    place_add(p, "sku-mug", 2, 1250);
    place_add(p, "sku-tee", 1, 1999);
}

static void place_order(const char *id) {
    place_t p;
    place_default(&p);
    must_accept("orders.order", id, &p.cmd.base, 1);
}

static void confirm_order(const char *id) {
    Orders__V1__ConfirmOrder c = ORDERS__V1__CONFIRM_ORDER__INIT;
    must_accept("orders.order", id, &c.base, 1);
}

static void cancel_order(const char *id, const char *reason) {
    Orders__V1__CancelOrder c = ORDERS__V1__CANCEL_ORDER__INIT;
    c.reason = (char *)reason;
    must_accept("orders.order", id, &c.base, 1);
}

static Payments__V1__AuthorizePayment authorize(const char *order_id, int64_t cents) {
    Payments__V1__AuthorizePayment a = PAYMENTS__V1__AUTHORIZE_PAYMENT__INIT;
    a.order_id = (char *)order_id;
    a.customer_id = "alice";
    a.amount_cents = cents;
    a.currency = "USD";
    return a;
}

static void restock(const char *sku, uint32_t quantity) {
    Inventory__V1__Restock r = INVENTORY__V1__RESTOCK__INIT;
    r.quantity = quantity;
    must_accept("inventory.item", sku, &r.base, 1);
}

static Inventory__V1__ReserveStock reserve(const char *order_id, uint32_t quantity) {
    Inventory__V1__ReserveStock r = INVENTORY__V1__RESERVE_STOCK__INIT;
    r.order_id = (char *)order_id;
    r.quantity = quantity;
    return r;
}

static Inventory__V1__ReleaseStock release(const char *order_id) {
    Inventory__V1__ReleaseStock r = INVENTORY__V1__RELEASE_STOCK__INIT;
    r.order_id = (char *)order_id;
    return r;
}

/* Reading the history and the state */

typedef struct events {
    size_t n;
    uint64_t versions[MAX_EVENTS];
    ProtobufCMessage *msgs[MAX_EVENTS];
} events_t;

static const ProtobufCMessageDescriptor *find_descriptor(const char *full_name) {
    for (const ProtobufCMessageDescriptor *const *d = demo_descriptors(); *d; d++)
        if (strcmp((*d)->name, full_name) == 0)
            return *d;
    return NULL;
}

static int collect(const es_event_t *ev, void *opaque) {
    events_t *out = opaque;
    const ProtobufCMessageDescriptor *d = find_descriptor(ev->event_type);
    cr_assert_not_null(d, "event type %s is not a demo message", ev->event_type);
    cr_assert_lt(out->n, MAX_EVENTS);
    out->versions[out->n] = ev->version;
    out->msgs[out->n] = protobuf_c_message_unpack(d, NULL, ev->payload_len, ev->payload);
    cr_assert_not_null(out->msgs[out->n], "payload of %s does not decode", ev->event_type);
    out->n++;
    return 0;
}

/* The aggregate's events: the kit's history, or the store suite's stream. */
static void read_events(const char *type, const char *id, events_t *out) {
    memset(out, 0, sizeof *out);
    if (!engine) {
        es_test_aggregate_t *t = kit(type, id);
        for (uint64_t v = 1; v <= es_test_version(t); v++)
            collect(es_test_event(t, v), out);
        return;
    }
    es_error_t err = {0};
    cr_assert_eq(es_store_read_stream(es_engine_store(engine), type, id, 1, collect, out, &err),
                 ES_OK, "%s", err.message);
}

static void free_events(events_t *e) {
    for (size_t i = 0; i < e->n; i++)
        protobuf_c_message_free_unpacked(e->msgs[i], NULL);
}

/* The i-th event of e, checked to be of type d and to carry version i + 1. */
static const void *event_at(const events_t *e, size_t i, const ProtobufCMessageDescriptor *d) {
    cr_assert_lt(i, e->n, "the stream has %zu events, wanted #%zu", e->n, i + 1);
    cr_assert_str_eq(e->msgs[i]->descriptor->name, d->name);
    cr_assert_eq(e->versions[i], i + 1);
    return e->msgs[i];
}

static void assert_same_state(const ProtobufCMessage *a, const ProtobufCMessage *b) {
    size_t la = protobuf_c_message_get_packed_size(a), lb = protobuf_c_message_get_packed_size(b);
    cr_assert_eq(la, lb, "states differ in size");
    uint8_t *pa = malloc(la + 1), *pb = malloc(lb + 1);
    protobuf_c_message_pack(a, pa);
    protobuf_c_message_pack(b, pb);
    cr_assert_eq(memcmp(pa, pb, la), 0, "states differ");
    free(pa);
    free(pb);
}

/* The kit's state after the commands, checked against a fresh aggregate given the same history
 * (a state rebuilt from events alone). Caller frees the copy it returns. */
static ProtobufCMessage *state_of(const es_aggregate_def *def, const char *id) {
    es_test_aggregate_t *t = kit(def->type, id), *fresh = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_test_aggregate_new(def, NULL, &fresh, &err), ES_OK, "%s", err.message);
    events_t e;
    read_events(def->type, id, &e);
    for (size_t i = 0; i < e.n; i++)
        cr_assert_eq(es_test_given(fresh, e.msgs[i], &err), ES_OK, "%s", err.message);
    free_events(&e);
    assert_same_state(es_test_state(t), es_test_state(fresh));
    es_test_aggregate_destroy(fresh);
    ProtobufCMessage *copy = es_pb_clone(es_test_state(t));
    cr_assert_not_null(copy);
    return copy;
}

/* orders.order */

/* The OrderPlaced of place_default's order (p must outlive it: the items are p's). */
static Orders__V1__OrderPlaced placed_event(place_t *p) {
    Orders__V1__OrderPlaced ev = ORDERS__V1__ORDER_PLACED__INIT;
    ev.customer_id = p->cmd.customer_id;
    ev.n_items = p->cmd.n_items;
    ev.items = p->cmd.items;
    ev.amount_cents = 4499;
    ev.currency = "USD";
    return ev;
}

Test(order, place_order_emits_order_placed_with_the_amount_computed_from_its_items) {
    es_test_aggregate_t *t = kit("orders.order", "o-1");
    place_t p;
    place_default(&p);
    es_test_when(t, &p.cmd.base, NULL);
    Orders__V1__OrderPlaced placed = placed_event(&p);
    const ProtobufCMessage *expected[] = {&placed.base};
    cr_assert(es_test_then_events(t, expected, 1, report, sizeof report), "%s", report);
    events_t e;
    read_events("orders.order", "o-1", &e);
    cr_assert_eq(e.n, 1);
    const Orders__V1__OrderPlaced *ev = event_at(&e, 0, &orders__v1__order_placed__descriptor);
    cr_assert_eq(ev->amount_cents, 2 * 1250 + 1999);
    cr_assert_str_eq(ev->customer_id, "alice");
    cr_assert_str_eq(ev->currency, "USD");
    cr_assert_eq(ev->n_items, 2);
    cr_assert_str_eq(ev->items[1]->sku, "sku-tee");
    free_events(&e);

    Orders__V1__Order *o = (Orders__V1__Order *)state_of(&demo_order_def, "o-1");
    cr_assert_eq(o->status, ORDERS__V1__ORDER_STATUS__ORDER_STATUS_PLACED);
    cr_assert_eq(o->amount_cents, 4499);
    cr_assert_eq(o->item_count, 2);
    cr_assert_str_eq(o->customer_id, "alice");
    protobuf_c_message_free_unpacked(&o->base, NULL);
}

Test(order, place_order_without_items_is_rejected_and_appends_nothing) {
    place_t p;
    place_init(&p, "alice");
    must_reject("orders.order", "o-1", &p.cmd.base, "at least one item");
    cr_assert_eq(stream_version("orders.order", "o-1"), 0);
}

Test(order, place_order_with_a_zero_quantity_is_rejected_with_a_reason) {
    place_t p;
    place_default(&p);
    place_add(&p, "sku-cap", 0, 1500);
    must_reject("orders.order", "o-1", &p.cmd.base, "item 3 (sku-cap) has quantity 0");
}

Test(order, place_order_with_a_negative_price_is_rejected_with_a_reason) {
    place_t p;
    place_init(&p, "alice");
    place_add(&p, "sku-mug", 1, -5);
    must_reject("orders.order", "o-1", &p.cmd.base, "negative unit price");
}

Test(order, place_order_without_a_customer_is_rejected) {
    place_t p;
    place_default(&p);
    p.cmd.customer_id = "";
    must_reject("orders.order", "o-1", &p.cmd.base, "customer_id is missing");
}

Test(order, placing_the_same_order_twice_is_rejected_as_already_placed) {
    place_order("o-1");
    place_t p;
    place_default(&p);
    must_reject("orders.order", "o-1", &p.cmd.base, "already placed");
}

Test(order, placing_a_cancelled_order_again_is_rejected) {
    place_order("o-1");
    cancel_order("o-1", "changed my mind");
    place_t p;
    place_default(&p);
    must_reject("orders.order", "o-1", &p.cmd.base, "already cancelled");
}

Test(order, an_order_whose_lines_are_all_free_is_rejected) {
    place_t p;
    place_init(&p, "alice");
    place_add(&p, "sku-sticker", 3, 0);
    must_reject("orders.order", "o-1", &p.cmd.base, "total is 0");
}

Test(order, free_lines_are_allowed_next_to_paid_ones) {
    place_t p;
    place_default(&p);
    place_add(&p, "sku-sticker", 1, 0);
    must_accept("orders.order", "o-1", &p.cmd.base, 1);
}

Test(order, a_total_that_overflows_is_rejected) {
    place_t p;
    place_init(&p, "alice");
    place_add(&p, "sku-yacht", 4, INT64_MAX / 2);
    must_reject("orders.order", "o-1", &p.cmd.base, "overflows");
}

Test(order, an_order_without_currency_is_placed_in_usd) {
    place_t p;
    place_default(&p);
    p.cmd.currency = "";
    must_accept("orders.order", "o-1", &p.cmd.base, 1);
    Orders__V1__Order *o = (Orders__V1__Order *)state_of(&demo_order_def, "o-1");
    cr_assert_str_eq(o->currency, "USD");
    protobuf_c_message_free_unpacked(&o->base, NULL);
}

Test(order, an_order_in_a_malformed_currency_is_rejected) {
    place_t p;
    place_default(&p);
    p.cmd.currency = "dollars";
    must_reject("orders.order", "o-1", &p.cmd.base, "3-letter ISO code");
}

/* The OrderPlaced of place_default's order, as history. */
static void given_placed(es_test_aggregate_t *t) {
    place_t p;
    place_default(&p);
    Orders__V1__OrderPlaced ev = placed_event(&p);
    es_error_t err = {0};
    cr_assert_eq(es_test_given(t, &ev.base, &err), ES_OK, "%s", err.message);
}

Test(order, confirming_a_placed_order_emits_order_confirmed) {
    es_test_aggregate_t *t = kit("orders.order", "o-1");
    given_placed(t);
    Orders__V1__ConfirmOrder c = ORDERS__V1__CONFIRM_ORDER__INIT;
    es_test_when(t, &c.base, NULL);
    Orders__V1__OrderConfirmed confirmed = ORDERS__V1__ORDER_CONFIRMED__INIT;
    const ProtobufCMessage *expected[] = {&confirmed.base};
    cr_assert(es_test_then_events(t, expected, 1, report, sizeof report), "%s", report);
    Orders__V1__Order *o = (Orders__V1__Order *)state_of(&demo_order_def, "o-1");
    cr_assert_eq(o->status, ORDERS__V1__ORDER_STATUS__ORDER_STATUS_CONFIRMED);
    protobuf_c_message_free_unpacked(&o->base, NULL);
}

Test(order, confirming_an_order_never_placed_is_rejected) {
    Orders__V1__ConfirmOrder c = ORDERS__V1__CONFIRM_ORDER__INIT;
    must_reject("orders.order", "o-404", &c.base, "never placed");
}

Test(order, confirming_twice_is_rejected) {
    place_order("o-1");
    confirm_order("o-1");
    Orders__V1__ConfirmOrder c = ORDERS__V1__CONFIRM_ORDER__INIT;
    must_reject("orders.order", "o-1", &c.base, "already confirmed");
}

Test(order, confirm_after_cancel_is_rejected_with_a_reason) {
    es_test_aggregate_t *t = kit("orders.order", "o-1");
    given_placed(t);
    Orders__V1__OrderCancelled cancelled = ORDERS__V1__ORDER_CANCELLED__INIT;
    cancelled.reason = "payment declined";
    cr_assert_eq(es_test_given(t, &cancelled.base, NULL), ES_OK);
    Orders__V1__ConfirmOrder c = ORDERS__V1__CONFIRM_ORDER__INIT;
    es_test_when(t, &c.base, NULL);
    cr_assert(es_test_then_rejected(t, "cancelled (payment declined)", report, sizeof report), "%s",
              report);
}

Test(order, cancelling_records_the_reason) {
    place_order("o-1");
    cancel_order("o-1", "out of stock");
    events_t e;
    read_events("orders.order", "o-1", &e);
    const Orders__V1__OrderCancelled *ev =
        event_at(&e, 1, &orders__v1__order_cancelled__descriptor);
    cr_assert_str_eq(ev->reason, "out of stock");
    free_events(&e);
    Orders__V1__Order *o = (Orders__V1__Order *)state_of(&demo_order_def, "o-1");
    cr_assert_eq(o->status, ORDERS__V1__ORDER_STATUS__ORDER_STATUS_CANCELLED);
    cr_assert_str_eq(o->cancel_reason, "out of stock");
    protobuf_c_message_free_unpacked(&o->base, NULL);
}

Test(order, cancelling_without_a_reason_says_so) {
    place_order("o-1");
    cancel_order("o-1", "");
    Orders__V1__Order *o = (Orders__V1__Order *)state_of(&demo_order_def, "o-1");
    cr_assert_str_eq(o->cancel_reason, "no reason given");
    protobuf_c_message_free_unpacked(&o->base, NULL);
}

Test(order, cancelling_an_order_never_placed_is_rejected) {
    Orders__V1__CancelOrder c = ORDERS__V1__CANCEL_ORDER__INIT;
    must_reject("orders.order", "o-404", &c.base, "never placed");
}

Test(order, cancelling_a_cancelled_order_is_accepted_and_changes_nothing) {
    place_order("o-1");
    cancel_order("o-1", "first");
    Orders__V1__CancelOrder c = ORDERS__V1__CANCEL_ORDER__INIT;
    c.reason = "second";
    must_accept("orders.order", "o-1", &c.base, 0);
    cr_assert_eq(stream_version("orders.order", "o-1"), 2);
    Orders__V1__Order *o = (Orders__V1__Order *)state_of(&demo_order_def, "o-1");
    cr_assert_str_eq(o->cancel_reason, "first", "the first reason stands");
    protobuf_c_message_free_unpacked(&o->base, NULL);
}

Test(order, cancelling_a_confirmed_order_is_rejected) {
    place_order("o-1");
    confirm_order("o-1");
    Orders__V1__CancelOrder c = ORDERS__V1__CANCEL_ORDER__INIT;
    c.reason = "customer returned it";
    must_reject("orders.order", "o-1", &c.base, "already confirmed");
    Orders__V1__Order *o = (Orders__V1__Order *)state_of(&demo_order_def, "o-1");
    cr_assert_eq(o->status, ORDERS__V1__ORDER_STATUS__ORDER_STATUS_CONFIRMED);
    protobuf_c_message_free_unpacked(&o->base, NULL);
}

Test(store, a_reopened_engine_still_refuses_to_confirm_a_cancelled_order) {
    place_order("o-1");
    cancel_order("o-1", "payment declined");
    reopen();
    Orders__V1__ConfirmOrder c = ORDERS__V1__CONFIRM_ORDER__INIT;
    must_reject("orders.order", "o-1", &c.base, "cancelled");
}

Test(store, an_order_rebuilt_from_events_alone_keeps_its_rules) {
    use_events_only_db();
    place_order("o-1");
    confirm_order("o-1");
    reopen();
    es_snapshot_t *snap = NULL;
    cr_assert_eq(es_store_get_snapshot(es_engine_store(engine), "orders.order", "o-1", &snap, NULL),
                 ES_ENOTFOUND, "snapshot.every=0 should write no snapshot");
    Orders__V1__ConfirmOrder c = ORDERS__V1__CONFIRM_ORDER__INIT;
    must_reject("orders.order", "o-1", &c.base, "already confirmed");
    Orders__V1__CancelOrder late = ORDERS__V1__CANCEL_ORDER__INIT;
    must_reject("orders.order", "o-1", &late.base, "cannot be cancelled");
    cr_assert_eq(stream_version("orders.order", "o-1"), 2);
}

/* payments.payment */

Test(payment, authorizing_within_the_limit_emits_payment_authorized) {
    Payments__V1__AuthorizePayment a = authorize("o-1", 4499);
    must_accept("payments.payment", "p-1", &a.base, 1);
    events_t e;
    read_events("payments.payment", "p-1", &e);
    const Payments__V1__PaymentAuthorized *ev =
        event_at(&e, 0, &payments__v1__payment_authorized__descriptor);
    cr_assert_eq(ev->amount_cents, 4499);
    cr_assert_str_eq(ev->order_id, "o-1");
    free_events(&e);
    Payments__V1__Payment *p = (Payments__V1__Payment *)state_of(&demo_payment_def, "p-1");
    cr_assert_eq(p->status, PAYMENTS__V1__PAYMENT_STATUS__PAYMENT_STATUS_AUTHORIZED);
    cr_assert_eq(p->amount_cents, 4499);
    cr_assert_str_eq(p->currency, "USD");
    protobuf_c_message_free_unpacked(&p->base, NULL);
}

Test(payment, exactly_the_limit_is_still_authorized) {
    Payments__V1__AuthorizePayment a = authorize("o-1", 100000);
    must_accept("payments.payment", "p-1", &a.base, 1);
    events_t e;
    read_events("payments.payment", "p-1", &e);
    event_at(&e, 0, &payments__v1__payment_authorized__descriptor);
    free_events(&e);
}

Test(payment, an_amount_above_the_limit_is_accepted_as_payment_declined) {
    Payments__V1__AuthorizePayment a = authorize("o-1", 100001);
    must_accept("payments.payment", "p-1", &a.base, 1);
    events_t e;
    read_events("payments.payment", "p-1", &e);
    const Payments__V1__PaymentDeclined *ev =
        event_at(&e, 0, &payments__v1__payment_declined__descriptor);
    cr_assert_str_eq(ev->order_id, "o-1");
    cr_assert_not_null(strstr(ev->reason, "exceeds the limit of 100000 cents"), "%s", ev->reason);
    free_events(&e);
    Payments__V1__Payment *p = (Payments__V1__Payment *)state_of(&demo_payment_def, "p-1");
    cr_assert_eq(p->status, PAYMENTS__V1__PAYMENT_STATUS__PAYMENT_STATUS_DECLINED);
    protobuf_c_message_free_unpacked(&p->base, NULL);
}

Test(payment, a_zero_amount_is_rejected) {
    Payments__V1__AuthorizePayment a = authorize("o-1", 0);
    must_reject("payments.payment", "p-1", &a.base, "must be positive");
}

Test(payment, a_negative_amount_is_rejected) {
    Payments__V1__AuthorizePayment a = authorize("o-1", -100);
    must_reject("payments.payment", "p-1", &a.base, "must be positive");
}

Test(payment, a_payment_without_an_order_is_rejected) {
    Payments__V1__AuthorizePayment a = authorize("", 100);
    must_reject("payments.payment", "p-1", &a.base, "order_id is missing");
}

Test(payment, authorizing_twice_is_rejected) {
    Payments__V1__AuthorizePayment a = authorize("o-1", 4499);
    must_accept("payments.payment", "p-1", &a.base, 1);
    must_reject("payments.payment", "p-1", &a.base, "already authorized");
}

Test(payment, a_declined_payment_cannot_be_authorized_again) {
    Payments__V1__AuthorizePayment big = authorize("o-1", 500000);
    must_accept("payments.payment", "p-1", &big.base, 1);
    Payments__V1__AuthorizePayment small = authorize("o-1", 100);
    must_reject("payments.payment", "p-1", &small.base, "already declined");
}

Test(payment, refunding_an_authorized_payment_returns_the_authorized_amount) {
    Payments__V1__AuthorizePayment a = authorize("o-1", 4499);
    must_accept("payments.payment", "p-1", &a.base, 1);
    Payments__V1__RefundPayment r = PAYMENTS__V1__REFUND_PAYMENT__INIT;
    r.reason = "order cancelled";
    must_accept("payments.payment", "p-1", &r.base, 1);
    events_t e;
    read_events("payments.payment", "p-1", &e);
    const Payments__V1__PaymentRefunded *ev =
        event_at(&e, 1, &payments__v1__payment_refunded__descriptor);
    cr_assert_eq(ev->amount_cents, 4499);
    cr_assert_str_eq(ev->order_id, "o-1");
    cr_assert_str_eq(ev->reason, "order cancelled");
    free_events(&e);
    Payments__V1__Payment *p = (Payments__V1__Payment *)state_of(&demo_payment_def, "p-1");
    cr_assert_eq(p->status, PAYMENTS__V1__PAYMENT_STATUS__PAYMENT_STATUS_REFUNDED);
    protobuf_c_message_free_unpacked(&p->base, NULL);
}

Test(payment, refunding_a_payment_never_authorized_is_accepted_and_appends_nothing) {
    Payments__V1__RefundPayment r = PAYMENTS__V1__REFUND_PAYMENT__INIT;
    must_accept("payments.payment", "p-404", &r.base, 0);
    cr_assert_eq(stream_version("payments.payment", "p-404"), 0);
}

Test(payment, refunding_a_declined_payment_is_accepted_and_appends_nothing) {
    Payments__V1__AuthorizePayment a = authorize("o-1", 200000);
    must_accept("payments.payment", "p-1", &a.base, 1);
    Payments__V1__RefundPayment r = PAYMENTS__V1__REFUND_PAYMENT__INIT;
    must_accept("payments.payment", "p-1", &r.base, 0);
    cr_assert_eq(stream_version("payments.payment", "p-1"), 1);
}

Test(payment, refunding_twice_refunds_once) {
    Payments__V1__AuthorizePayment a = authorize("o-1", 4499);
    must_accept("payments.payment", "p-1", &a.base, 1);
    Payments__V1__RefundPayment r = PAYMENTS__V1__REFUND_PAYMENT__INIT;
    must_accept("payments.payment", "p-1", &r.base, 1);
    must_accept("payments.payment", "p-1", &r.base, 0);
    cr_assert_eq(stream_version("payments.payment", "p-1"), 2);
}

Test(payment, a_payment_without_a_customer_is_rejected) {
    Payments__V1__AuthorizePayment a = authorize("o-1", 100);
    a.customer_id = "";
    must_reject("payments.payment", "p-1", &a.base, "customer_id is missing");
}

Test(payment, a_broke_customer_is_declined_for_any_amount) {
    Payments__V1__AuthorizePayment a = authorize("o-1", 1);
    a.customer_id = "broke-bob";
    must_accept("payments.payment", "p-1", &a.base, 1);
    events_t e;
    read_events("payments.payment", "p-1", &e);
    const Payments__V1__PaymentDeclined *ev =
        event_at(&e, 0, &payments__v1__payment_declined__descriptor);
    cr_assert_not_null(strstr(ev->reason, "broke-bob declined: insufficient funds"), "%s",
                       ev->reason);
    free_events(&e);
}

/* The first event of payment id, checked to be of type d. */
static void assert_first_event(const char *id, const ProtobufCMessageDescriptor *d) {
    events_t e;
    read_events("payments.payment", id, &e);
    cr_assert_eq(e.n, 1);
    event_at(&e, 0, d);
    free_events(&e);
}

Test(payment, a_3ds_customer_is_left_pending_with_the_amount) {
    Payments__V1__AuthorizePayment a = authorize("o-1", 4499);
    a.customer_id = "3ds-carol";
    must_accept("payments.payment", "p-1", &a.base, 1);
    events_t e;
    read_events("payments.payment", "p-1", &e);
    const Payments__V1__PaymentPending *ev =
        event_at(&e, 0, &payments__v1__payment_pending__descriptor);
    cr_assert_str_eq(ev->order_id, "o-1");
    cr_assert_eq(ev->amount_cents, 4499);
    cr_assert_not_null(strstr(ev->reason, "3-D Secure"), "%s", ev->reason);
    free_events(&e);
    Payments__V1__Payment *p = (Payments__V1__Payment *)state_of(&demo_payment_def, "p-1");
    cr_assert_eq(p->status, PAYMENTS__V1__PAYMENT_STATUS__PAYMENT_STATUS_PENDING);
    cr_assert_eq(p->amount_cents, 4499);
    cr_assert_str_eq(p->currency, "USD");
    protobuf_c_message_free_unpacked(&p->base, NULL);
}

Test(payment, euro_amounts_above_500_need_3ds_and_smaller_ones_do_not) {
    Payments__V1__AuthorizePayment big = authorize("o-1", 50001), small = authorize("o-2", 50000),
                                   dollars = authorize("o-3", 50001);
    big.currency = small.currency = "EUR";
    must_accept("payments.payment", "p-1", &big.base, 1);
    must_accept("payments.payment", "p-2", &small.base, 1);
    must_accept("payments.payment", "p-3", &dollars.base, 1);
    assert_first_event("p-1", &payments__v1__payment_pending__descriptor);
    assert_first_event("p-2", &payments__v1__payment_authorized__descriptor);
    assert_first_event("p-3", &payments__v1__payment_authorized__descriptor);
}

Test(payment, an_amount_over_the_limit_is_declined_before_any_3ds_check) {
    Payments__V1__AuthorizePayment a = authorize("o-1", 200000);
    a.currency = "EUR";
    a.customer_id = "3ds-carol";
    must_accept("payments.payment", "p-1", &a.base, 1);
    assert_first_event("p-1", &payments__v1__payment_declined__descriptor);
}

Test(payment, a_pending_payment_cannot_be_authorized_again) {
    Payments__V1__AuthorizePayment a = authorize("o-1", 4499);
    a.customer_id = "3ds-carol";
    must_accept("payments.payment", "p-1", &a.base, 1);
    must_reject("payments.payment", "p-1", &a.base, "already pending");
}

Test(payment, refunding_a_pending_payment_voids_it_once) {
    Payments__V1__AuthorizePayment a = authorize("o-1", 4499);
    a.customer_id = "3ds-carol";
    must_accept("payments.payment", "p-1", &a.base, 1);
    Payments__V1__RefundPayment r = PAYMENTS__V1__REFUND_PAYMENT__INIT;
    r.reason = "timed out";
    must_accept("payments.payment", "p-1", &r.base, 1);
    must_accept("payments.payment", "p-1", &r.base, 0);
    events_t e;
    read_events("payments.payment", "p-1", &e);
    cr_assert_eq(e.n, 2);
    const Payments__V1__PaymentVoided *ev =
        event_at(&e, 1, &payments__v1__payment_voided__descriptor);
    cr_assert_str_eq(ev->order_id, "o-1");
    cr_assert_eq(ev->amount_cents, 4499);
    cr_assert_str_eq(ev->reason, "timed out");
    free_events(&e);
    Payments__V1__Payment *p = (Payments__V1__Payment *)state_of(&demo_payment_def, "p-1");
    cr_assert_eq(p->status, PAYMENTS__V1__PAYMENT_STATUS__PAYMENT_STATUS_VOIDED);
    protobuf_c_message_free_unpacked(&p->base, NULL);
    must_reject("payments.payment", "p-1", &a.base, "already voided");
}

/* inventory.item */

static Inventory__V1__Item *item_state(const char *sku) {
    return (Inventory__V1__Item *)state_of(&demo_item_def, sku);
}

Test(item, restocking_adds_to_the_stock_on_hand) {
    restock("sku-mug", 10);
    restock("sku-mug", 5);
    Inventory__V1__Item *it = item_state("sku-mug");
    cr_assert_eq(it->on_hand, 15);
    cr_assert_eq(it->reserved, 0);
    protobuf_c_message_free_unpacked(&it->base, NULL);
}

Test(item, restocking_nothing_is_rejected) {
    Inventory__V1__Restock r = INVENTORY__V1__RESTOCK__INIT;
    must_reject("inventory.item", "sku-mug", &r.base, "at least 1");
}

Test(item, reserving_within_the_stock_records_the_reservation) {
    restock("sku-mug", 10);
    Inventory__V1__ReserveStock r = reserve("o-1", 4);
    must_accept("inventory.item", "sku-mug", &r.base, 1);
    events_t e;
    read_events("inventory.item", "sku-mug", &e);
    const Inventory__V1__StockReserved *ev =
        event_at(&e, 1, &inventory__v1__stock_reserved__descriptor);
    cr_assert_str_eq(ev->order_id, "o-1");
    cr_assert_eq(ev->quantity, 4);
    free_events(&e);
    Inventory__V1__Item *it = item_state("sku-mug");
    cr_assert_eq(it->on_hand, 10);
    cr_assert_eq(it->reserved, 4);
    cr_assert_eq(it->n_reservations, 1);
    cr_assert_str_eq(it->reservations[0]->order_id, "o-1");
    protobuf_c_message_free_unpacked(&it->base, NULL);
}

/* The shortage event at version v of sku: for order_id, requested, available. */
static void assert_shortage(const char *sku, uint64_t v, const char *order_id, uint32_t requested,
                            uint32_t available) {
    events_t e;
    read_events("inventory.item", sku, &e);
    cr_assert_eq(e.n, v, "%s has %zu events, expected the shortage to be the last (%llu)", sku, e.n,
                 (unsigned long long)v);
    const Inventory__V1__StockShortage *ev =
        event_at(&e, v - 1, &inventory__v1__stock_shortage__descriptor);
    cr_assert_str_eq(ev->order_id, order_id);
    cr_assert_eq(ev->requested, requested);
    cr_assert_eq(ev->available, available);
    free_events(&e);
}

Test(item, reserving_more_than_is_available_emits_a_shortage_and_reserves_nothing) {
    restock("sku-mug", 5);
    Inventory__V1__ReserveStock first = reserve("o-1", 3);
    must_accept("inventory.item", "sku-mug", &first.base, 1);
    Inventory__V1__ReserveStock second = reserve("o-2", 3);
    must_accept("inventory.item", "sku-mug", &second.base, 1);
    assert_shortage("sku-mug", 3, "o-2", 3, 2);
    Inventory__V1__Item *it = item_state("sku-mug");
    cr_assert_eq(it->on_hand, 5);
    cr_assert_eq(it->reserved, 3);
    cr_assert_eq(it->n_reservations, 1);
    protobuf_c_message_free_unpacked(&it->base, NULL);
    /* What is left still goes to an order it fits. */
    Inventory__V1__ReserveStock third = reserve("o-3", 2);
    must_accept("inventory.item", "sku-mug", &third.base, 1);
    cr_assert_eq(stream_version("inventory.item", "sku-mug"), 4);
}

Test(item, reserving_an_item_never_stocked_is_a_shortage_of_everything) {
    Inventory__V1__ReserveStock r = reserve("o-1", 1);
    must_accept("inventory.item", "sku-ghost", &r.base, 1);
    assert_shortage("sku-ghost", 1, "o-1", 1, 0);
}

Test(item, releasing_after_a_shortage_appends_nothing) {
    restock("sku-mug", 1);
    Inventory__V1__ReserveStock r = reserve("o-1", 2);
    must_accept("inventory.item", "sku-mug", &r.base, 1);
    Inventory__V1__ReleaseStock rel = release("o-1");
    must_accept("inventory.item", "sku-mug", &rel.base, 0);
    cr_assert_eq(stream_version("inventory.item", "sku-mug"), 2);
}

Test(item, a_reservation_needs_an_order_and_a_quantity) {
    restock("sku-mug", 10);
    Inventory__V1__ReserveStock none = reserve("o-1", 0), anonymous = reserve("", 1);
    must_reject("inventory.item", "sku-mug", &none.base, "at least 1");
    must_reject("inventory.item", "sku-mug", &anonymous.base, "order_id is missing");
    Inventory__V1__ReleaseStock rel = release("");
    must_reject("inventory.item", "sku-mug", &rel.base, "order_id is missing");
}

Test(item, several_orders_can_take_all_the_stock_but_no_more) {
    restock("sku-mug", 6);
    const char *orders[] = {"o-1", "o-2", "o-3"};
    for (size_t i = 0; i < 3; i++) {
        Inventory__V1__ReserveStock r = reserve(orders[i], 2);
        must_accept("inventory.item", "sku-mug", &r.base, 1);
    }
    Inventory__V1__ReserveStock more = reserve("o-4", 1);
    must_accept("inventory.item", "sku-mug", &more.base, 1);
    assert_shortage("sku-mug", 5, "o-4", 1, 0);
    Inventory__V1__Item *it = item_state("sku-mug");
    cr_assert_eq(it->reserved, 6);
    cr_assert_eq(it->n_reservations, 3);
    protobuf_c_message_free_unpacked(&it->base, NULL);
}

Test(item, repeating_the_same_reservation_appends_nothing) {
    restock("sku-mug", 10);
    Inventory__V1__ReserveStock r = reserve("o-1", 4);
    must_accept("inventory.item", "sku-mug", &r.base, 1);
    must_accept("inventory.item", "sku-mug", &r.base, 0);
    cr_assert_eq(stream_version("inventory.item", "sku-mug"), 2);
}

Test(item, reserving_a_different_quantity_for_the_same_order_is_rejected) {
    restock("sku-mug", 10);
    Inventory__V1__ReserveStock r = reserve("o-1", 4);
    must_accept("inventory.item", "sku-mug", &r.base, 1);
    Inventory__V1__ReserveStock other = reserve("o-1", 5);
    must_reject("inventory.item", "sku-mug", &other.base, "already holds 4 units");
}

Test(item, releasing_returns_the_reserved_stock) {
    restock("sku-mug", 10);
    Inventory__V1__ReserveStock a = reserve("o-1", 4), b = reserve("o-2", 3);
    must_accept("inventory.item", "sku-mug", &a.base, 1);
    must_accept("inventory.item", "sku-mug", &b.base, 1);
    Inventory__V1__ReleaseStock rel = release("o-1");
    must_accept("inventory.item", "sku-mug", &rel.base, 1);
    events_t e;
    read_events("inventory.item", "sku-mug", &e);
    const Inventory__V1__StockReleased *ev =
        event_at(&e, 3, &inventory__v1__stock_released__descriptor);
    cr_assert_str_eq(ev->order_id, "o-1");
    cr_assert_eq(ev->quantity, 4);
    free_events(&e);
    Inventory__V1__Item *it = item_state("sku-mug");
    cr_assert_eq(it->reserved, 3);
    cr_assert_eq(it->n_reservations, 1);
    cr_assert_str_eq(it->reservations[0]->order_id, "o-2");
    protobuf_c_message_free_unpacked(&it->base, NULL);
}

Test(item, released_stock_can_be_reserved_again) {
    restock("sku-mug", 4);
    Inventory__V1__ReserveStock a = reserve("o-1", 4), b = reserve("o-2", 4);
    must_accept("inventory.item", "sku-mug", &a.base, 1);
    must_accept("inventory.item", "sku-mug", &b.base, 1);
    assert_shortage("sku-mug", 3, "o-2", 4, 0);
    Inventory__V1__ReleaseStock rel = release("o-1");
    must_accept("inventory.item", "sku-mug", &rel.base, 1);
    must_accept("inventory.item", "sku-mug", &b.base, 1);
    events_t e;
    read_events("inventory.item", "sku-mug", &e);
    event_at(&e, 4, &inventory__v1__stock_reserved__descriptor);
    free_events(&e);
}

Test(item, releasing_twice_appends_nothing_the_second_time) {
    restock("sku-mug", 10);
    Inventory__V1__ReserveStock r = reserve("o-1", 4);
    must_accept("inventory.item", "sku-mug", &r.base, 1);
    Inventory__V1__ReleaseStock rel = release("o-1");
    must_accept("inventory.item", "sku-mug", &rel.base, 1);
    must_accept("inventory.item", "sku-mug", &rel.base, 0);
    Inventory__V1__Item *it = item_state("sku-mug");
    cr_assert_eq(it->reserved, 0);
    cr_assert_eq(it->n_reservations, 0);
    protobuf_c_message_free_unpacked(&it->base, NULL);
}

Test(item, releasing_an_order_that_reserved_nothing_appends_nothing) {
    restock("sku-mug", 10);
    Inventory__V1__ReleaseStock rel = release("o-never");
    must_accept("inventory.item", "sku-mug", &rel.base, 0);
    cr_assert_eq(stream_version("inventory.item", "sku-mug"), 1);
}

Test(store, reservations_survive_a_reload_from_events_alone) {
    use_events_only_db();
    restock("sku-mug", 10);
    Inventory__V1__ReserveStock a = reserve("o-1", 4), b = reserve("o-2", 5);
    must_accept("inventory.item", "sku-mug", &a.base, 1);
    must_accept("inventory.item", "sku-mug", &b.base, 1);
    Inventory__V1__ReleaseStock rel = release("o-1");
    must_accept("inventory.item", "sku-mug", &rel.base, 1);
    reopen();
    Inventory__V1__ReserveStock c = reserve("o-3", 6);
    must_accept("inventory.item", "sku-mug", &c.base, 1);
    assert_shortage("sku-mug", 5, "o-3", 6, 5);
    must_accept("inventory.item", "sku-mug", &b.base, 0);
}

/* the domain as a whole */

static bool listed(const ProtobufCMessageDescriptor *d) {
    for (const ProtobufCMessageDescriptor *const *p = demo_descriptors(); *p; p++)
        if (*p == d)
            return true;
    return false;
}

static void assert_def_listed(const es_aggregate_def *def) {
    cr_assert(listed(def->state), "%s state not listed", def->type);
    for (const es_evolver_t *p = def->evolvers; p->event; p++)
        cr_assert(listed(p->event), "%s not listed", p->event->name);
    for (const es_command_handler_t *p = def->command_handlers; p->command; p++)
        cr_assert(listed(p->command), "%s not listed", p->command->name);
}

Test(domain, descriptors_list_every_message_of_the_three_protos_once) {
    size_t n = 0;
    const ProtobufCMessageDescriptor *const *all = demo_descriptors();
    for (; all[n]; n++)
        for (size_t j = 0; j < n; j++)
            cr_assert_neq(all[j], all[n], "%s listed twice", all[n]->name);
    cr_assert_eq(n, 8 + 8 + 9);
    assert_def_listed(&demo_order_def);
    assert_def_listed(&demo_payment_def);
    assert_def_listed(&demo_item_def);
    cr_assert(listed(&orders__v1__line_item__descriptor));
    cr_assert(listed(&inventory__v1__reservation__descriptor));
}

Test(domain, aggregate_types_are_valid_names) {
    const es_aggregate_def *defs[] = {&demo_order_def, &demo_payment_def, &demo_item_def};
    for (size_t i = 0; i < 3; i++) {
        es_error_t err = {0};
        cr_assert_eq(defs[i]->abi_version, ES_AGGREGATE_ABI);
        cr_assert_eq(es_validate_aggregate_type(defs[i]->type, &err), ES_OK, "%s", err.message);
    }
}

Test(store, registering_the_domain_twice_is_refused) {
    es_error_t err = {0};
    cr_assert_neq(demo_register_all(engine, &err), ES_OK);
    cr_assert_neq(err.message[0], '\0', "the error says why");
}

Test(domain, a_command_of_another_aggregate_is_not_executed) {
    Inventory__V1__Restock r = INVENTORY__V1__RESTOCK__INIT;
    r.quantity = 1;
    es_test_aggregate_t *t = kit("orders.order", "o-1");
    cr_assert_eq(es_test_when(t, &r.base, NULL), ES_EUNKNOWN_TYPE);
    cr_assert(es_test_then_error(t, ES_EUNKNOWN_TYPE,
                                 "command type 'inventory.v1.Restock' is not among the commands "
                                 "of orders.order",
                                 report, sizeof report),
              "%s", report);
    cr_assert_eq(stream_version("orders.order", "o-1"), 0);
}

/* the orders.fulfilment saga */

Test(domain, both_fulfilment_definitions_pass_the_saga_check) {
    const es_saga_def *defs[] = {DEMO_FULFILMENT_DEF(false), DEMO_FULFILMENT_DEF(true)};
    for (size_t i = 0; i < 2; i++) {
        es_error_t err = {0};
        cr_assert_eq(es_saga_check(defs[i], &err), ES_OK, "%s", err.message);
        cr_assert_str_eq(defs[i]->name, "orders.fulfilment");
        cr_assert_eq(defs[i]->n_steps, 3);
        cr_assert_str_eq(defs[i]->steps[1].name, "authorize_payment");
    }
    cr_assert_eq(defs[0]->steps[1].timeout_ms, DEMO_PAYMENT_TIMEOUT_MS);
    cr_assert_eq(defs[1]->steps[1].timeout_ms, DEMO_SHORT_PAYMENT_TIMEOUT_MS);
}

Test(domain, every_fulfilment_command_and_event_is_one_the_domain_handles) {
    const es_saga_def *def = DEMO_FULFILMENT_DEF(false);
    const es_aggregate_def *aggs[] = {&demo_order_def, &demo_payment_def, &demo_item_def};
    for (size_t i = 0; i <= def->n_steps; i++) {
        const es_saga_step_t *st = i < def->n_steps ? &def->steps[i] : def->on_abort;
        const es_aggregate_def *agg = NULL;
        for (size_t j = 0; j < 3 && !agg; j++)
            if (strcmp(aggs[j]->type, st->aggregate_type) == 0)
                agg = aggs[j];
        cr_assert_not_null(agg, "step %zu goes to %s, not a demo aggregate", i, st->aggregate_type);
        const ProtobufCMessageDescriptor *cmds[] = {st->command, st->compensation};
        for (size_t k = 0; k < 2; k++) {
            bool found = cmds[k] == NULL;
            for (const es_command_handler_t *p = agg->command_handlers; p->command && !found; p++)
                found = p->command == cmds[k];
            cr_assert(found, "%s is not a command of %s", cmds[k]->name, agg->type);
        }
        const ProtobufCMessageDescriptor *const *lists[] = {st->completed_by, st->failed_by};
        for (size_t k = 0; k < 2; k++)
            for (const ProtobufCMessageDescriptor *const *e = lists[k]; e && *e; e++) {
                bool found = false;
                for (const es_evolver_t *p = agg->evolvers; p->event && !found; p++)
                    found = p->event == *e;
                cr_assert(found, "%s is not an event of %s", (*e)->name, agg->type);
            }
    }
}
