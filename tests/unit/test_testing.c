/*
 * The test kit (eskit/testing.h): given events, when a command, then events or a rejection, in
 * memory; its reports; and that it says what the engine says, on the engine's own path.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "domain.h"
#include "fulfilment.h"
#include "eskit/v1/envelope.pb-c.h"
#include "testutil.h"

static es_test_aggregate_t *t;
static char report[4096];

static void setup(void) {
    es_error_t err = {0};
    cr_assert_eq(es_test_aggregate_new(&demo_order_def, NULL, &t, &err), ES_OK, "%s", err.message);
}

static void teardown(void) {
    es_test_aggregate_destroy(t);
}

TestSuite(testing, .init = setup, .fini = teardown);

static Orders__V1__LineItem mug = {PROTOBUF_C_MESSAGE_INIT(&orders__v1__line_item__descriptor),
                                   "sku-mug", 2, 1250};
static Orders__V1__LineItem *items[] = {&mug};

static Orders__V1__OrderPlaced placed(void) {
    Orders__V1__OrderPlaced ev = ORDERS__V1__ORDER_PLACED__INIT;
    ev.customer_id = "alice";
    ev.n_items = 1;
    ev.items = items;
    ev.amount_cents = 2500;
    ev.currency = "USD";
    return ev;
}

static Orders__V1__PlaceOrder place(void) {
    Orders__V1__PlaceOrder c = ORDERS__V1__PLACE_ORDER__INIT;
    c.customer_id = "alice";
    c.n_items = 1;
    c.items = items;
    c.currency = "USD";
    return c;
}

static void given_placed(void) {
    Orders__V1__OrderPlaced ev = placed();
    es_error_t err = {0};
    cr_assert_eq(es_test_given(t, &ev.base, &err), ES_OK, "%s", err.message);
}

Test(testing, an_expected_event_passes_with_an_empty_report) {
    given_placed();
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    cr_assert_eq(es_test_when(t, &confirm.base, NULL), ES_OK);
    Orders__V1__OrderConfirmed confirmed = ORDERS__V1__ORDER_CONFIRMED__INIT;
    const ProtobufCMessage *expected[] = {&confirmed.base};
    strcpy(report, "stale");
    cr_assert(es_test_then_events(t, expected, 1, report, sizeof report), "%s", report);
    cr_assert_str_eq(report, "");
    uint64_t first = 0;
    cr_assert_eq(es_test_emitted(t, &first), 1);
    cr_assert_eq(first, 2);
    cr_assert_eq(es_test_version(t), 2);
    cr_assert_str_eq(es_test_event(t, 2)->event_type, "orders.v1.OrderConfirmed");
    cr_assert_str_eq(es_test_event(t, 2)->aggregate_type, "orders.order");
    cr_assert_null(es_test_event(t, 3));
}

Test(testing, a_failed_expectation_reports_given_when_expected_and_got) {
    given_placed();
    Orders__V1__CancelOrder cancel = ORDERS__V1__CANCEL_ORDER__INIT;
    cancel.reason = "changed my mind";
    cr_assert_eq(es_test_when(t, &cancel.base, NULL), ES_OK);
    Orders__V1__OrderConfirmed confirmed = ORDERS__V1__ORDER_CONFIRMED__INIT;
    const ProtobufCMessage *expected[] = {&confirmed.base};
    cr_assert_not(es_test_then_events(t, expected, 1, report, sizeof report));
    cr_assert_str_eq(report,
                     "event 1 differs from the expected one\n"
                     "given:\n"
                     "  1. orders.v1.OrderPlaced { customer_id: \"alice\" items { sku: \"sku-mug\" "
                     "quantity: 2 unit_price_cents: 1250 } amount_cents: 2500 currency: \"USD\" }\n"
                     "when:\n"
                     "  orders.v1.CancelOrder { reason: \"changed my mind\" }\n"
                     "expected:\n"
                     "  accepted with 1 event(s):\n"
                     "  2. orders.v1.OrderConfirmed {}\n"
                     "got:\n"
                     "  accepted with 1 event(s):\n"
                     "  2. orders.v1.OrderCancelled { reason: \"changed my mind\" }\n");
}

Test(testing, events_that_differ_in_one_field_are_not_the_expected_ones) {
    Orders__V1__PlaceOrder c = place();
    cr_assert_eq(es_test_when(t, &c.base, NULL), ES_OK);
    Orders__V1__OrderPlaced ev = placed();
    const ProtobufCMessage *expected[] = {&ev.base};
    cr_assert(es_test_then_events(t, expected, 1, report, sizeof report), "%s", report);
    ev.amount_cents = 2499;
    cr_assert_not(es_test_then_events(t, expected, 1, report, sizeof report));
    cr_assert(strstr(report, "amount_cents: 2499"), "%s", report);
    cr_assert(strstr(report, "amount_cents: 2500"), "%s", report);
    cr_assert(strstr(report, "given:\n  (no events)\n"), "%s", report);
}

Test(testing, expecting_events_of_a_rejected_command_reports_the_reason) {
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    es_error_t err = {0};
    cr_assert_eq(es_test_when(t, &confirm.base, &err), ES_EREJECTED);
    cr_assert_str_eq(err.message, "the order was never placed; place it before confirming");
    cr_assert_not(es_test_then_events(t, NULL, 0, report, sizeof report));
    cr_assert(strstr(report, "expected 0 event(s), but the command was rejected\n"), "%s", report);
    cr_assert(strstr(report, "got:\n  rejected: the order was never placed; place it before "
                             "confirming\n"),
              "%s", report);
    cr_assert_eq(es_test_version(t), 0);
}

Test(testing, a_rejection_is_checked_by_a_part_of_its_reason) {
    given_placed();
    Orders__V1__CancelOrder cancel = ORDERS__V1__CANCEL_ORDER__INIT;
    cr_assert_eq(es_test_when(t, &cancel.base, NULL), ES_OK);
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    cr_assert_eq(es_test_when(t, &confirm.base, NULL), ES_EREJECTED);
    cr_assert(es_test_then_rejected(t, "was cancelled", report, sizeof report), "%s", report);
    cr_assert(es_test_then_rejected(t, NULL, report, sizeof report), "%s", report);
    cr_assert_not(es_test_then_rejected(t, "out of stock", report, sizeof report));
    cr_assert(strstr(report, "the command was rejected for another reason\ngiven:\n"
                             "  1. orders.v1.OrderPlaced {"),
              "%s", report);
    cr_assert(strstr(report, "  2. orders.v1.OrderCancelled { reason: \"no reason given\" }\n"
                             "when:\n  orders.v1.ConfirmOrder {}\n"),
              "%s", report);
    cr_assert(strstr(report, "expected:\n  rejected with a reason containing \"out of stock\"\n"
                             "got:\n  rejected: the order was cancelled (no reason given)"),
              "%s", report);
}

Test(testing, expecting_a_rejection_of_an_accepted_command_shows_its_events) {
    given_placed();
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    cr_assert_eq(es_test_when(t, &confirm.base, NULL), ES_OK);
    cr_assert_not(es_test_then_rejected(t, "", report, sizeof report));
    cr_assert(strstr(report, "expected a rejection\n"), "%s", report);
    cr_assert(strstr(report, "got:\n  accepted with 1 event(s):\n  2. orders.v1.OrderConfirmed {}"),
              "%s", report);
}

Test(testing, the_state_is_the_given_events_folded) {
    given_placed();
    const Orders__V1__Order *o = (const Orders__V1__Order *)es_test_state(t);
    cr_assert_eq(o->status, ORDERS__V1__ORDER_STATUS__ORDER_STATUS_PLACED);
    cr_assert_str_eq(o->customer_id, "alice");
    cr_assert_eq(o->amount_cents, 2500);
    cr_assert_eq(o->item_count, 1);
    char text[256];
    es_test_format(&o->base, text, sizeof text);
    cr_assert_str_eq(text, "orders.v1.Order { status: ORDER_STATUS_PLACED customer_id: \"alice\" "
                           "amount_cents: 2500 currency: \"USD\" item_count: 1 }");
}

Test(testing, a_then_check_before_any_command_says_so) {
    given_placed();
    cr_assert_not(es_test_then_events(t, NULL, 0, report, sizeof report));
    cr_assert(strstr(report, "no command: call es_test_when before a then check\ngiven:\n  1. "),
              "%s", report);
}

Test(testing, a_command_the_definition_does_not_list_is_refused_as_the_engine_refuses_it) {
    Inventory__V1__Restock r = INVENTORY__V1__RESTOCK__INIT;
    cr_assert_eq(es_test_when(t, &r.base, NULL), ES_EUNKNOWN_TYPE);
    cr_assert(es_test_then_error(t, ES_EUNKNOWN_TYPE,
                                 "command type 'inventory.v1.Restock' is not among the commands "
                                 "of orders.order",
                                 report, sizeof report),
              "%s", report);
    cr_assert_not(es_test_then_events(t, NULL, 0, report, sizeof report));
    cr_assert(strstr(report, "got:\n  error ES_EUNKNOWN_TYPE: command type"), "%s", report);
}

Test(testing, a_given_event_the_definition_does_not_list_fails_every_command) {
    Inventory__V1__StockAdded r = INVENTORY__V1__STOCK_ADDED__INIT;
    es_error_t err = {0};
    cr_assert_eq(es_test_given(t, &r.base, &err), ES_EUNKNOWN_TYPE);
    cr_assert(strstr(err.message, "event type 'inventory.v1.StockAdded' is not registered for "
                                  "orders.order"),
              "%s", err.message);
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    cr_assert_eq(es_test_when(t, &confirm.base, NULL), ES_EUNKNOWN_TYPE);
    cr_assert(es_test_then_error(t, ES_EUNKNOWN_TYPE, "not registered", report, sizeof report),
              "%s", report);
}

Test(testing, a_definition_the_engine_would_refuse_is_refused) {
    es_aggregate_def def = demo_order_def;
    def.abi_version = 99;
    es_test_aggregate_t *bad = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_test_aggregate_new(&def, NULL, &bad, &err), ES_EINVAL);
    cr_assert_null(bad);
    cr_assert(strstr(err.message, "ABI version 99"), "%s", err.message);
}

/* The mistake the engine catches: the state's customer_id is the event's string. */
static es_err borrowing_evolve(ProtobufCMessage *state, const ProtobufCMessage *ev, void *opaque,
                               es_error_t *err) {
    if (ev->descriptor == &orders__v1__order_placed__descriptor) {
        Orders__V1__Order *o = (Orders__V1__Order *)state;
        o->status = ORDERS__V1__ORDER_STATUS__ORDER_STATUS_PLACED;
        o->customer_id = ((const Orders__V1__OrderPlaced *)ev)->customer_id;
        return ES_OK;
    }
    return es_aggregate_evolve(&demo_order_def, state, ev, opaque, err);
}

/* demo_order_def with borrowing_evolve in place of its evolvers. */
static es_aggregate_def borrowing_def(void) {
    static const ProtobufCMessageDescriptor *const events[] = {
        &orders__v1__order_placed__descriptor, &orders__v1__order_confirmed__descriptor,
        &orders__v1__order_cancelled__descriptor, NULL};
    es_aggregate_def def = demo_order_def;
    def.evolvers = NULL;
    def.events = events;
    def.evolve = borrowing_evolve;
    return def;
}

/* What es_execute says of PlaceOrder for orders.order/test with this definition. */
static char *engine_reason(const es_aggregate_def *def) {
    char *dir = tu_tempdir();
    es_config_t *cfg = tu_config(dir, "engine.db");
    es_engine_t *engine = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_engine_register(engine, def, NULL, &err), ES_OK, "%s", err.message);
    Orders__V1__PlaceOrder c = place();
    es_command_t cmd = {
        .aggregate_type = "orders.order", .aggregate_id = "test", .message = &c.base};
    es_result_t res;
    cr_assert_eq(es_execute(engine, &cmd, &res, NULL), ES_ESTATE);
    char *reason = strdup(res.reason);
    es_result_clear(&res);
    es_engine_destroy(engine);
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(dir);
    return reason;
}

Test(testing, an_evolve_that_keeps_a_pointer_into_an_event_fails_as_the_engine_fails_it) {
    es_aggregate_def def = borrowing_def();
    es_test_aggregate_t *b = NULL;
    cr_assert_eq(es_test_aggregate_new(&def, NULL, &b, NULL), ES_OK);
    Orders__V1__PlaceOrder c = place();
    cr_assert_eq(es_test_when(b, &c.base, NULL), ES_ESTATE);
    char *expected = engine_reason(&def);
    cr_assert_str_eq(es_test_reason(b), expected);
    cr_assert(strstr(expected, "evolve left orders.v1.Order.customer_id pointing into the "
                               "orders.v1.OrderPlaced event at version 1"),
              "%s", expected);
    free(expected);
    cr_assert(
        es_test_then_error(b, ES_ESTATE, "orders.v1.Order.customer_id", report, sizeof report),
        "%s", report);
    cr_assert_not(es_test_then_events(b, NULL, 0, report, sizeof report));
    cr_assert(strstr(report, "got:\n  error ES_ESTATE: orders.order/test: evolve left "
                             "orders.v1.Order.customer_id"),
              "%s", report);
    cr_assert_eq(es_test_version(b), 0, "nothing is appended");
    es_test_aggregate_destroy(b);
}

Test(testing, a_given_event_an_evolve_borrows_from_fails_the_given_and_every_command) {
    es_aggregate_def def = borrowing_def();
    es_test_aggregate_t *b = NULL;
    cr_assert_eq(es_test_aggregate_new(&def, NULL, &b, NULL), ES_OK);
    Orders__V1__OrderPlaced ev = placed();
    es_error_t err = {0};
    cr_assert_eq(es_test_given(b, &ev.base, &err), ES_ESTATE);
    cr_assert(strstr(err.message, "customer_id pointing into the orders.v1.OrderPlaced event at "
                                  "version 1"),
              "%s", err.message);
    /* the field is reset, as the engine resets it, so the state stays safe to free */
    cr_assert_str_eq(((const Orders__V1__Order *)es_test_state(b))->customer_id, "");
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    cr_assert_eq(es_test_when(b, &confirm.base, NULL), ES_ESTATE);
    cr_assert(es_test_then_error(b, ES_ESTATE, "customer_id", report, sizeof report), "%s", report);
    es_test_aggregate_destroy(b);
}

/* The same commands through es_execute and the kit: the same outcomes and the same events. */
Test(testing, the_kit_and_the_engine_agree_on_every_outcome_and_event) {
    char *dir = tu_tempdir();
    es_config_t *cfg = tu_config(dir, "agree.db");
    es_engine_t *engine = NULL;
    es_test_aggregate_t *item = NULL;
    cr_assert_eq(es_engine_new(cfg, &engine, NULL), ES_OK);
    cr_assert_eq(es_engine_register(engine, &demo_item_def, NULL, NULL), ES_OK);
    cr_assert_eq(es_test_aggregate_new(&demo_item_def, NULL, &item, NULL), ES_OK);
    Inventory__V1__Restock restock = INVENTORY__V1__RESTOCK__INIT, none = restock;
    restock.quantity = 5;
    Inventory__V1__ReserveStock r1 = INVENTORY__V1__RESERVE_STOCK__INIT, r2 = r1, r3 = r1;
    r1.order_id = "o-1", r1.quantity = 3;
    r2.order_id = "o-2", r2.quantity = 3; /* a shortage */
    r3.order_id = "o-1", r3.quantity = 4; /* o-1 holds 3 already: rejected */
    Inventory__V1__ReleaseStock rel = INVENTORY__V1__RELEASE_STOCK__INIT;
    rel.order_id = "o-1";
    Orders__V1__ConfirmOrder foreign = ORDERS__V1__CONFIRM_ORDER__INIT;
    const ProtobufCMessage *cmds[] = {&restock.base, &none.base, &r1.base,  &r2.base,
                                      &r3.base,      &rel.base,  &rel.base, &foreign.base};
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        es_command_t cmd = {
            .aggregate_type = "inventory.item", .aggregate_id = "test", .message = cmds[i]};
        es_result_t res;
        es_err want = es_execute(engine, &cmd, &res, NULL);
        cr_assert_eq(es_test_when(item, cmds[i], NULL), want, "command %zu: %s", i,
                     es_strerror(want));
        cr_assert_str_eq(es_test_reason(item), res.reason ? res.reason : "", "command %zu", i);
        uint64_t first = 0;
        cr_assert_eq(es_test_emitted(item, &first), res.n_events, "command %zu", i);
        for (size_t k = 0; k < res.n_events; k++) {
            const es_event_t *a = res.events[k], *b = es_test_event(item, first + k);
            cr_assert_eq(a->version, b->version);
            cr_assert_str_eq(a->event_type, b->event_type);
            cr_assert_eq(a->payload_len, b->payload_len);
            cr_assert_eq(memcmp(a->payload, b->payload, a->payload_len), 0, "command %zu", i);
        }
        es_result_clear(&res);
    }
    cr_assert_eq(es_test_version(item), 4);
    es_test_aggregate_destroy(item);
    es_engine_destroy(engine);
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(dir);
}

Test(testing, the_printer_writes_bytes_enums_nested_and_repeated_fields) {
    Eskit__V1__EventEnvelope env = ESKIT__V1__EVENT_ENVELOPE__INIT;
    Eskit__V1__EventEnvelope__MetadataEntry e1 = ESKIT__V1__EVENT_ENVELOPE__METADATA_ENTRY__INIT,
                                            e2 = ESKIT__V1__EVENT_ENVELOPE__METADATA_ENTRY__INIT;
    Eskit__V1__EventEnvelope__MetadataEntry *md[] = {&e1, &e2};
    e1.key = "k1";
    e1.value = "say \"hi\"\n";
    e2.key = "k2";
    e2.value = "";
    uint8_t raw[] = {0x00, 'a', 0xff};
    env.version = 7;
    env.payload = (ProtobufCBinaryData){sizeof raw, raw};
    env.n_metadata = 2;
    env.metadata = md;
    char text[512];
    size_t need = es_test_format(&env.base, text, sizeof text);
    cr_assert_str_eq(text,
                     "eskit.v1.EventEnvelope { version: 7 payload: \"\\x00a\\xff\" metadata "
                     "{ key: \"k1\" value: \"say \\\"hi\\\"\\n\" } metadata { key: \"k2\" } }");
    cr_assert_eq(need, strlen(text));
    char small[16];
    cr_assert_eq(es_test_format(&env.base, small, sizeof small), need);
    cr_assert_str_eq(small, "eskit.v1.Eve...");
}

/* Sagas */

static es_test_saga_t *saga;

static void saga_setup(void) {
    es_error_t err = {0};
    cr_assert_eq(es_test_saga_new(&demo_fulfilment_def, &saga, &err), ES_OK, "%s", err.message);
}

static void saga_teardown(void) {
    es_test_saga_destroy(saga);
}

TestSuite(testing_saga, .init = saga_setup, .fini = saga_teardown);

static void start_saga(void) {
    Orders__V1__OrderPlaced ev = placed();
    es_error_t err = {0};
    cr_assert_eq(es_test_saga_start(saga, "o-1", &ev.base, &err), ES_OK, "%s", err.message);
}

Test(testing_saga, a_failed_expectation_reports_what_happened_the_when_expected_and_sent) {
    start_saga();
    Inventory__V1__StockReserved reserved = INVENTORY__V1__STOCK_RESERVED__INIT;
    reserved.order_id = "o-1";
    reserved.quantity = 2;
    es_error_t err = {0};
    cr_assert_eq(
        es_test_saga_event(saga, es_test_saga_sent(saga, NULL)[0].command_id, &reserved.base, &err),
        ES_OK, "%s", err.message);
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    es_test_send_t want[] = {{"o-1", &confirm.base}};
    cr_assert_not(es_test_saga_then_sent(saga, want, 1, report, sizeof report));
    cr_assert_str_eq(
        report, "command 1 differs from the expected one\n"
                "given:\n"
                "  start: orders.v1.OrderPlaced { customer_id: \"alice\" items { sku: \"sku-mug\" "
                "quantity: 2 unit_price_cents: 1250 } amount_cents: 2500 currency: \"USD\" } on "
                "orders.order/o-1\n"
                "    sent do reserve_stock -> inventory.item/sku-mug: inventory.v1.ReserveStock { "
                "order_id: \"o-1\" quantity: 2 }\n"
                "    state: running at step reserve_stock\n"
                "when:\n"
                "  event: inventory.v1.StockReserved { order_id: \"o-1\" quantity: 2 } caused by "
                "orders.fulfilment/o-1/reserve_stock.0/do\n"
                "expected:\n"
                "  1. o-1: orders.v1.ConfirmOrder {}\n"
                "got:\n"
                "  1. do authorize_payment -> payments.payment/o-1: payments.v1.AuthorizePayment { "
                "order_id: \"o-1\" customer_id: \"alice\" amount_cents: 2500 currency: \"USD\" }\n"
                "  state: running at step authorize_payment\n");
}

Test(testing_saga, a_state_expectation_reports_the_state_step_and_reason) {
    start_saga();
    cr_assert(es_test_saga_then_state(saga, "running", report, sizeof report), "%s", report);
    es_error_t err = {0};
    cr_assert_eq(es_test_saga_advance(saga, 10000, &err), ES_OK, "%s", err.message);
    cr_assert_not(es_test_saga_then_state(saga, "running", report, sizeof report));
    cr_assert(strstr(report, "the instance is in another state\n"), "%s", report);
    cr_assert(strstr(report, "when:\n  clock: +10000 ms (at 10000 ms)\nexpected:\n  state: "
                             "running\ngot:\n  1. undo reserve_stock -> inventory.item/sku-mug: "
                             "inventory.v1.ReleaseStock { order_id: \"o-1\" }\n  state: "
                             "compensating at step reserve_stock; reason: step reserve_stock "
                             "timed out after 10000 ms\n"),
              "%s", report);
}

Test(testing_saga, a_command_the_saga_did_not_send_is_an_error_that_names_it) {
    start_saga();
    es_error_t err = {0};
    cr_assert_eq(es_test_saga_accepted(saga, "orders.fulfilment/o-1/nope.0/do", &err),
                 ES_ENOTFOUND);
    cr_assert(strstr(err.message, "sent no command orders.fulfilment/o-1/nope.0/do"), "%s",
              err.message);
    cr_assert_not(es_test_saga_then_sent(saga, NULL, 0, report, sizeof report));
    cr_assert(strstr(report, "got:\n  error ES_ENOTFOUND: saga 'orders.fulfilment' sent no "
                             "command"),
              "%s", report);
    cr_assert(es_test_saga_then_state(saga, "running", report, sizeof report), "%s", report);
}

Test(testing_saga, a_start_event_of_another_type_and_a_second_start_are_refused) {
    Orders__V1__OrderConfirmed other = ORDERS__V1__ORDER_CONFIRMED__INIT;
    es_error_t err = {0};
    cr_assert_eq(es_test_saga_start(saga, "o-1", &other.base, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "starts on orders.v1.OrderPlaced, not on "
                                  "orders.v1.OrderConfirmed"),
              "%s", err.message);
    cr_assert_str_eq(es_test_saga_state(saga), "");
    start_saga();
    Orders__V1__OrderPlaced ev = placed();
    cr_assert_eq(es_test_saga_start(saga, "o-2", &ev.base, &err), ES_ESTATE);
}

Test(testing_saga, the_virtual_clock_fires_a_deadline_once_it_has_passed_and_not_before) {
    start_saga();
    es_error_t err = {0};
    cr_assert_eq(es_test_saga_advance(saga, 9999, &err), ES_OK, "%s", err.message);
    cr_assert(es_test_saga_then_sent(saga, NULL, 0, report, sizeof report), "%s", report);
    cr_assert_str_eq(es_test_saga_step(saga), "reserve_stock");
    cr_assert_eq(es_test_saga_advance(saga, -1, &err), ES_EINVAL);
    cr_assert_eq(es_test_saga_advance(saga, 1, &err), ES_OK, "%s", err.message);
    cr_assert_str_eq(es_test_saga_state(saga), "compensating");
}
