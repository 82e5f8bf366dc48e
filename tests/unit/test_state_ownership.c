/*
 * The engine owns every state and frees it with protobuf_c_message_free_unpacked, so evolve
 * must copy what it keeps of an event (es_pb_set_string, es_pb_set_bytes, malloc). A state
 * that keeps a pointer into the event fails its first command with ES_ESTATE naming the field,
 * appends nothing, and leaves nothing dangling (run under ASan too: no use-after-free when a
 * snapshot is written, no double free when the state goes).
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "domain.h"
#include "testutil.h"

static char *dir;
static es_engine_t *engine;

static void setup(void) {
    dir = tu_tempdir();
}

static void teardown(void) {
    es_engine_destroy(engine);
    tu_rmtree(dir);
    free(dir);
}

TestSuite(state_ownership, .init = setup, .fini = teardown);

/* The mistake: the state's customer_id is the event's string. */
static es_err borrowing_evolve(ProtobufCMessage *state, const ProtobufCMessage *ev, void *opaque,
                               es_error_t *err) {
    if (ev->descriptor == &orders__v1__order_placed__descriptor) {
        Orders__V1__Order *o = (Orders__V1__Order *)state;
        const Orders__V1__OrderPlaced *p = (const Orders__V1__OrderPlaced *)ev;
        o->status = ORDERS__V1__ORDER_STATUS__ORDER_STATUS_PLACED;
        o->amount_cents = p->amount_cents;
        o->customer_id = p->customer_id;
        return ES_OK;
    }
    return es_aggregate_evolve(&demo_order_def, state, ev, opaque, err);
}

/* orders.order's event types, for a definition that wraps its evolve. */
static const ProtobufCMessageDescriptor *const order_event_types[] = {
    &orders__v1__order_placed__descriptor, &orders__v1__order_confirmed__descriptor,
    &orders__v1__order_cancelled__descriptor, NULL};

/* demo_order_def with evolve in place of its evolvers. */
static es_aggregate_def order_def_with(es_evolve_cb *evolve) {
    es_aggregate_def def = demo_order_def;
    def.evolvers = NULL;
    def.events = order_event_types;
    def.evolve = evolve;
    return def;
}

static void open_with(const es_aggregate_def *order_def) {
    es_config_t *cfg = tu_config(dir, "own.db");
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_engine_register(engine, order_def, NULL, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_engine_register(engine, &demo_item_def, NULL, &err), ES_OK, "%s", err.message);
    es_config_destroy(cfg);
}

static Orders__V1__LineItem item = {PROTOBUF_C_MESSAGE_INIT(&orders__v1__line_item__descriptor),
                                    "sku-1", 2, 1500};
static Orders__V1__LineItem *items[] = {&item};

static es_command_t place(const char *id, Orders__V1__PlaceOrder *m) {
    orders__v1__place_order__init(m);
    m->customer_id = "alice";
    m->currency = "EUR";
    m->n_items = 1;
    m->items = items;
    return (es_command_t){
        .aggregate_type = "orders.order", .aggregate_id = id, .message = &m->base};
}

static uint64_t version_of(const char *type, const char *id) {
    uint64_t v = 99;
    cr_assert_eq(es_store_stream_version(es_engine_store(engine), type, id, &v, NULL), ES_OK);
    return v;
}

Test(state_ownership,
     an_evolve_that_keeps_a_string_of_the_event_fails_the_first_command_naming_it) {
    es_aggregate_def def = order_def_with(borrowing_evolve);
    open_with(&def);
    Orders__V1__PlaceOrder m;
    es_command_t cmd = place("o-1", &m);
    es_result_t res;
    es_error_t err = {0};
    cr_assert_eq(es_execute(engine, &cmd, &res, &err), ES_ESTATE, "%s", err.message);
    cr_assert_eq(res.outcome, ES_OUTCOME_ERROR);
    cr_assert(strstr(err.message, "orders.v1.Order.customer_id") &&
                  strstr(err.message, "orders.v1.OrderPlaced") &&
                  strstr(err.message, "es_pb_set_string"),
              "%s", err.message);
    cr_assert_str_eq(res.reason, err.message);
    es_result_clear(&res);
    cr_assert_eq(version_of("orders.order", "o-1"), 0, "nothing appended");
    cr_assert_eq(es_execute(engine, &cmd, NULL, &err), ES_ESTATE, "every time, not once");
    es_snapshot_t *snap = NULL;
    cr_assert_eq(es_store_get_snapshot(es_engine_store(engine), "orders.order", "o-1", &snap, NULL),
                 ES_ENOTFOUND, "no snapshot of a state that does not own its memory");
}

Test(state_ownership, in_a_batch_only_the_commands_on_that_aggregate_type_fail) {
    es_aggregate_def def = order_def_with(borrowing_evolve);
    open_with(&def);
    Orders__V1__PlaceOrder m;
    Inventory__V1__Restock r = INVENTORY__V1__RESTOCK__INIT;
    r.quantity = 3;
    es_command_t cmds[2] = {
        place("o-2", &m),
        {.aggregate_type = "inventory.item", .aggregate_id = "sku-1", .message = &r.base}};
    es_result_t res[2];
    es_error_t err = {0};
    cr_assert_eq(es_execute_batch(engine, cmds, 2, res, &err), ES_OK, "%s", err.message);
    cr_assert_eq(res[0].code, ES_ESTATE);
    cr_assert_eq(res[1].code, ES_OK, "%s", res[1].reason ? res[1].reason : "");
    es_result_clear(&res[0]);
    es_result_clear(&res[1]);
    cr_assert_eq(version_of("inventory.item", "sku-1"), 1);
    cr_assert_eq(version_of("orders.order", "o-2"), 0);
}

Test(state_ownership, a_borrowed_string_in_the_stored_history_fails_the_load) {
    es_config_t *cfg = tu_config(dir, "own.db");
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "snapshot.every", "0", NULL), ES_OK);
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "%s", err.message);
    es_config_destroy(cfg);
    es_aggregate_def def = order_def_with(borrowing_evolve);
    cr_assert_eq(es_engine_register(engine, &def, NULL, &err), ES_OK, "%s", err.message);
    Orders__V1__OrderPlaced placed = ORDERS__V1__ORDER_PLACED__INIT;
    placed.customer_id = "bob";
    placed.amount_cents = 100;
    uint8_t buf[64];
    es_new_event_t ev = {"orders.v1.OrderPlaced",
                         buf,
                         orders__v1__order_placed__pack(&placed, buf),
                         NULL,
                         NULL,
                         NULL,
                         0};
    cr_assert_eq(es_store_append(es_engine_store(engine), "orders.order", "o-4", ES_EXPECT_ANY, 0,
                                 &ev, 1, NULL, &err),
                 ES_OK, "%s", err.message);
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    es_command_t cmd = {
        .aggregate_type = "orders.order", .aggregate_id = "o-4", .message = &confirm.base};
    cr_assert_eq(es_execute(engine, &cmd, NULL, &err), ES_ESTATE);
    cr_assert(strstr(err.message, "orders.v1.Order.customer_id") &&
                  strstr(err.message, "orders.v1.OrderPlaced event at version 1"),
              "%s", err.message);
    cr_assert_eq(version_of("orders.order", "o-4"), 1, "nothing appended");
}

/* orders.v1.PlaceOrder as a state: a string, and a repeated sub-message to borrow. */
static es_err array_evolve(ProtobufCMessage *state, const ProtobufCMessage *ev, void *opaque,
                           es_error_t *err) {
    Orders__V1__PlaceOrder *s = (Orders__V1__PlaceOrder *)state;
    const Orders__V1__OrderPlaced *p = (const Orders__V1__OrderPlaced *)ev;
    (void)opaque;
    if (ev->descriptor != &orders__v1__order_placed__descriptor)
        return ES_OK;
    if (p->amount_cents == 1) { /* the event's array itself */
        s->items = p->items;
        s->n_items = p->n_items;
        return ES_OK;
    }
    /* an array of its own, holding the event's elements */
    if (!(s->items = calloc(p->n_items, sizeof *s->items)))
        return es_fail(err, ES_ENOMEM, "out of memory");
    for (size_t i = 0; i < p->n_items; i++)
        s->items[i] = p->items[i];
    s->n_items = p->n_items;
    return es_pb_set_string(state, &s->customer_id, p->customer_id);
}

static es_err array_decide(const ProtobufCMessage *state, const ProtobufCMessage *cmd,
                           es_decision_t *d, void *opaque) {
    const Orders__V1__PlaceOrder *c = (const Orders__V1__PlaceOrder *)cmd;
    (void)state, (void)opaque;
    Orders__V1__OrderPlaced ev = ORDERS__V1__ORDER_PLACED__INIT;
    ev.customer_id = c->customer_id;
    ev.n_items = c->n_items;
    ev.items = c->items;
    ev.amount_cents = !strcmp(c->currency, "ARR") ? 1 : 2;
    return es_emit(d, &ev.base);
}

static const ProtobufCMessageDescriptor *const array_events[] = {
    &orders__v1__order_placed__descriptor, NULL};
static const ProtobufCMessageDescriptor *const array_commands[] = {
    &orders__v1__place_order__descriptor, NULL};

Test(state_ownership, a_borrowed_array_or_sub_message_is_named_with_its_place) {
    static const es_aggregate_def def = {.abi_version = ES_AGGREGATE_ABI,
                                         .type = "test.basket",
                                         .state = &orders__v1__place_order__descriptor,
                                         .events = array_events,
                                         .commands = array_commands,
                                         .evolve = array_evolve,
                                         .decide = array_decide};
    open_with(&demo_order_def);
    es_error_t err = {0};
    cr_assert_eq(es_engine_register(engine, &def, NULL, &err), ES_OK, "%s", err.message);
    Orders__V1__PlaceOrder m;
    es_command_t cmd = place("b-1", &m);
    cmd.aggregate_type = "test.basket";
    m.currency = "ARR";
    cr_assert_eq(es_execute(engine, &cmd, NULL, &err), ES_ESTATE);
    cr_assert(strstr(err.message, "orders.v1.PlaceOrder.items pointing") &&
                  strstr(err.message, "array of its own"),
              "%s", err.message);
    m.currency = "EUR";
    cr_assert_eq(es_execute(engine, &cmd, NULL, &err), ES_ESTATE);
    cr_assert(strstr(err.message, "orders.v1.PlaceOrder.items[0] pointing") &&
                  strstr(err.message, "es_pb_clone"),
              "%s", err.message);
}

Test(state_ownership, the_demo_deciders_own_their_states_through_loads_and_snapshots) {
    open_with(&demo_order_def);
    es_error_t err = {0};
    Orders__V1__PlaceOrder m;
    es_command_t cmd = place("o-5", &m);
    cr_assert_eq(es_execute(engine, &cmd, NULL, &err), ES_OK, "%s", err.message);
    Orders__V1__CancelOrder cancel = ORDERS__V1__CANCEL_ORDER__INIT;
    cancel.reason = "changed my mind";
    es_command_t c2 = {
        .aggregate_type = "orders.order", .aggregate_id = "o-5", .message = &cancel.base};
    cr_assert_eq(es_execute(engine, &c2, NULL, &err), ES_OK, "%s", err.message);
    es_engine_destroy(engine);
    open_with(&demo_order_def);
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    c2.message = &confirm.base;
    cr_assert_eq(es_execute(engine, &c2, NULL, &err), ES_EREJECTED);
    cr_assert(strstr(err.message, "changed my mind"), "%s", err.message);
}
