#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "../install/aggregate_def_abi1.h"
#include "domain.h"
#include "engine_int.h"
#include "testutil.h"

static char *dir;
static es_engine_t *engine;

static void open_engine(const char *snapshot_every) {
    es_config_t *cfg = tu_config(dir, "engine.db");
    es_error_t err = {0};
    if (snapshot_every)
        cr_assert_eq(es_config_set(cfg, "snapshot.every", snapshot_every, NULL), ES_OK);
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(engine, &err), ES_OK, "%s", err.message);
    es_config_destroy(cfg);
}

static void setup(void) {
    dir = tu_tempdir();
    open_engine(NULL);
}

static void teardown(void) {
    es_engine_destroy(engine);
    tu_rmtree(dir);
    free(dir);
}

TestSuite(engine, .init = setup, .fini = teardown);

static Orders__V1__LineItem item = {PROTOBUF_C_MESSAGE_INIT(&orders__v1__line_item__descriptor),
                                    "sku-1", 2, 1500};
static Orders__V1__LineItem *items[] = {&item};

static es_command_t place(const char *id, const char *command_id, Orders__V1__PlaceOrder *msg) {
    orders__v1__place_order__init(msg);
    msg->customer_id = "c-1";
    msg->currency = "EUR";
    msg->n_items = 1;
    msg->items = items;
    return (es_command_t){.aggregate_type = "orders.order",
                          .aggregate_id = id,
                          .message = &msg->base,
                          .command_id = command_id};
}

static es_command_t simple(const char *id, const ProtobufCMessage *msg) {
    return (es_command_t){.aggregate_type = "orders.order", .aggregate_id = id, .message = msg};
}

typedef struct seen {
    char types[32][64];
    uint64_t versions[32];
    size_t n;
} seen;

static int record(const es_event_t *ev, void *opaque) {
    seen *s = opaque;
    snprintf(s->types[s->n], sizeof s->types[0], "%s", ev->event_type);
    s->versions[s->n++] = ev->version;
    return 0;
}

static seen stream_of(const char *id) {
    seen s = {0};
    cr_assert_eq(
        es_store_read_stream(es_engine_store(engine), "orders.order", id, 1, record, &s, NULL),
        ES_OK);
    return s;
}

Test(engine, accepted_command_appends_events_and_returns_them) {
    Orders__V1__PlaceOrder msg;
    es_command_t cmd = place("o-1", NULL, &msg);
    es_result_t res;
    es_error_t err = {0};
    cr_assert_eq(es_execute(engine, &cmd, &res, &err), ES_OK, "%s", err.message);
    cr_assert_eq(res.outcome, ES_OUTCOME_ACCEPTED);
    cr_assert_eq(res.version, 1);
    cr_assert_eq(res.first_version, 1);
    cr_assert_eq(res.n_events, 1);
    cr_assert_str_eq(res.events[0]->event_type, "orders.v1.OrderPlaced");
    cr_assert_str_eq(res.events[0]->command_id, res.command_id);
    cr_assert_str_eq(res.events[0]->correlation_id, res.command_id);
    cr_assert_gt(res.events[0]->offset, 0);
    Orders__V1__OrderPlaced *placed =
        orders__v1__order_placed__unpack(NULL, res.events[0]->payload_len, res.events[0]->payload);
    cr_assert_eq(placed->amount_cents, 3000);
    orders__v1__order_placed__free_unpacked(placed, NULL);
    es_result_clear(&res);
    seen s = stream_of("o-1");
    cr_assert_eq(s.n, 1);
}

Test(engine, rejected_command_returns_the_reason_and_appends_nothing) {
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    es_command_t cmd = simple("o-2", &confirm.base);
    es_result_t res;
    es_error_t err = {0};
    cr_assert_eq(es_execute(engine, &cmd, &res, &err), ES_EREJECTED);
    cr_assert_eq(res.outcome, ES_OUTCOME_REJECTED);
    cr_assert(strstr(res.reason, "never placed"), "%s", res.reason);
    cr_assert(strstr(err.message, "never placed"), "%s", err.message);
    cr_assert_eq(res.n_events, 0);
    es_result_clear(&res);
    cr_assert_eq(stream_of("o-2").n, 0);
}

Test(engine, confirm_after_cancel_is_rejected_and_state_survives_reload) {
    Orders__V1__PlaceOrder msg;
    Orders__V1__CancelOrder cancel = ORDERS__V1__CANCEL_ORDER__INIT;
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    cancel.reason = "customer changed mind";
    es_command_t c1 = place("o-3", NULL, &msg), c2 = simple("o-3", &cancel.base),
                 c3 = simple("o-3", &confirm.base);
    cr_assert_eq(es_execute(engine, &c1, NULL, NULL), ES_OK);
    cr_assert_eq(es_execute(engine, &c2, NULL, NULL), ES_OK);
    es_engine_destroy(engine);
    open_engine(NULL);
    es_result_t res;
    cr_assert_eq(es_execute(engine, &c3, &res, NULL), ES_EREJECTED);
    cr_assert(strstr(res.reason, "customer changed mind"), "%s", res.reason);
    es_result_clear(&res);
}

Test(engine, wrong_expected_version_is_a_conflict_naming_both_versions) {
    Orders__V1__PlaceOrder msg;
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    es_command_t c1 = place("o-4", NULL, &msg), c2 = simple("o-4", &confirm.base);
    cr_assert_eq(es_execute(engine, &c1, NULL, NULL), ES_OK);
    c2.expect = ES_EXPECT_EXACT;
    c2.expected_version = 0;
    es_result_t res;
    es_error_t err = {0};
    cr_assert_eq(es_execute(engine, &c2, &res, &err), ES_ECONFLICT);
    cr_assert_eq(res.outcome, ES_OUTCOME_CONFLICT);
    cr_assert(strstr(err.message, "orders.order/o-4") && strstr(err.message, "version 1") &&
                  strstr(err.message, "expected version 0"),
              "%s", err.message);
    es_result_clear(&res);
    c2.expected_version = 1;
    cr_assert_eq(es_execute(engine, &c2, NULL, NULL), ES_OK);
    cr_assert_eq(stream_of("o-4").n, 2);
}

Test(engine, same_command_id_twice_appends_once_and_returns_the_first_result) {
    Orders__V1__PlaceOrder msg;
    es_command_t cmd = place("o-5", "cmd-place-o-5", &msg);
    es_result_t first, again;
    cr_assert_eq(es_execute(engine, &cmd, &first, NULL), ES_OK);
    cr_assert_eq(es_execute(engine, &cmd, &again, NULL), ES_OK);
    cr_assert(again.duplicate);
    cr_assert(!first.duplicate);
    cr_assert_eq(again.version, first.version);
    cr_assert_eq(again.first_version, first.first_version);
    cr_assert_eq(again.n_events, 1);
    cr_assert_str_eq(again.events[0]->event_id, first.events[0]->event_id);
    cr_assert_eq(stream_of("o-5").n, 1);
    es_result_clear(&first);
    es_result_clear(&again);
}

/* A caller that timed out sends its command again; on Kafka both copies can land in one batch. */
Test(engine, the_same_command_id_twice_in_one_batch_executes_once) {
    Orders__V1__PlaceOrder m1, m2;
    es_command_t cmds[2] = {place("o-dup", "cmd-dup", &m1), place("o-dup", "cmd-dup", &m2)};
    es_result_t res[2];
    es_error_t err = {0};
    cr_assert_eq(es_execute_batch(engine, cmds, 2, res, &err), ES_OK, "%s", err.message);
    cr_assert_eq(res[0].outcome, ES_OUTCOME_ACCEPTED);
    cr_assert(!res[0].duplicate);
    cr_assert_eq(res[1].outcome, ES_OUTCOME_ACCEPTED, "%s", res[1].reason ? res[1].reason : "");
    cr_assert(res[1].duplicate);
    cr_assert_eq(res[1].n_events, 1);
    cr_assert_str_eq(res[1].events[0]->event_id, res[0].events[0]->event_id);
    es_result_t later;
    cr_assert_eq(es_execute(engine, &cmds[0], &later, &err), ES_OK, "the remembered outcome");
    cr_assert(later.duplicate);
    es_result_clear(&later);
    for (int i = 0; i < 2; i++)
        es_result_clear(&res[i]);
    cr_assert_eq(stream_of("o-dup").n, 1);
}

Test(engine, a_repeated_rejected_command_gets_the_same_rejection) {
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    es_command_t cmd = simple("o-6", &confirm.base);
    cmd.command_id = "cmd-confirm-o-6";
    es_result_t r1, r2;
    cr_assert_eq(es_execute(engine, &cmd, &r1, NULL), ES_EREJECTED);
    cr_assert_eq(es_execute(engine, &cmd, &r2, NULL), ES_EREJECTED);
    cr_assert(r2.duplicate);
    cr_assert_str_eq(r1.reason, r2.reason);
    es_result_clear(&r1);
    es_result_clear(&r2);
}

Test(engine, a_command_id_reused_for_another_aggregate_is_an_error_naming_the_first) {
    Orders__V1__PlaceOrder m1, m2;
    es_command_t c1 = place("o-7", "shared-id", &m1), c2 = place("o-8", "shared-id", &m2);
    cr_assert_eq(es_execute(engine, &c1, NULL, NULL), ES_OK);
    es_error_t err = {0};
    cr_assert_eq(es_execute(engine, &c2, NULL, &err), ES_EIDREUSED);
    cr_assert(strstr(err.message, "orders.order/o-7"), "%s", err.message);
    cr_assert(strstr(err.message, "'shared-id'"), "%s", err.message);
    cr_assert_eq(stream_of("o-8").n, 0);
}

/* The second copy is found among the records the batch has not written yet. */
Test(engine, a_command_id_reused_with_another_payload_in_the_same_batch_is_refused) {
    Orders__V1__PlaceOrder m1, m2;
    es_command_t cmds[2] = {place("o-dup2", "cmd-dup2", &m1), place("o-dup2", "cmd-dup2", &m2)};
    m2.customer_id = "c-2";
    es_result_t res[2];
    es_error_t err = {0};
    cr_assert_eq(es_execute_batch(engine, cmds, 2, res, &err), ES_OK, "%s", err.message);
    cr_assert_eq(res[0].outcome, ES_OUTCOME_ACCEPTED);
    cr_assert_eq(res[1].outcome, ES_OUTCOME_ERROR);
    cr_assert_eq(res[1].code, ES_EIDREUSED);
    cr_assert(strstr(res[1].reason, "'cmd-dup2'") && strstr(res[1].reason, "another payload"), "%s",
              res[1].reason);
    for (int i = 0; i < 2; i++)
        es_result_clear(&res[i]);
    cr_assert_eq(es_execute(engine, &cmds[1], NULL, &err), ES_EIDREUSED, "and once committed");
    cr_assert_eq(stream_of("o-dup2").n, 1);
}

Test(engine, batch_executes_in_order_with_per_command_outcomes) {
    Orders__V1__PlaceOrder m1, m2;
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    es_command_t cmds[4] = {place("b-1", NULL, &m1), simple("b-1", &confirm.base),
                            simple("b-2", &confirm.base), place("b-2", NULL, &m2)};
    es_result_t res[4];
    es_error_t err = {0};
    cr_assert_eq(es_execute_batch(engine, cmds, 4, res, &err), ES_OK, "%s", err.message);
    cr_assert_eq(res[0].outcome, ES_OUTCOME_ACCEPTED);
    cr_assert_eq(res[1].outcome, ES_OUTCOME_ACCEPTED, "sees the first command's event");
    cr_assert_eq(res[1].version, 2);
    cr_assert_eq(res[2].outcome, ES_OUTCOME_REJECTED);
    cr_assert_eq(res[3].outcome, ES_OUTCOME_ACCEPTED);
    for (int i = 0; i < 4; i++)
        es_result_clear(&res[i]);
    cr_assert_eq(stream_of("b-1").n, 2);
    cr_assert_eq(stream_of("b-2").n, 1);
}

Test(engine, unknown_aggregate_type_and_command_type_are_errors_naming_them) {
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    es_command_t cmd = simple("x-1", &confirm.base);
    cmd.aggregate_type = "shipping.parcel";
    es_error_t err = {0};
    cr_assert_eq(es_execute(engine, &cmd, NULL, &err), ES_EUNKNOWN_TYPE);
    cr_assert(strstr(err.message, "shipping.parcel"), "%s", err.message);
    Inventory__V1__Restock restock = INVENTORY__V1__RESTOCK__INIT;
    cmd = simple("x-1", &restock.base);
    cr_assert_eq(es_execute(engine, &cmd, NULL, &err), ES_EUNKNOWN_TYPE);
    cr_assert(strstr(err.message, "inventory.v1.Restock"), "%s", err.message);
}

Test(engine, a_passed_deadline_executes_nothing) {
    Orders__V1__PlaceOrder msg;
    es_command_t cmd = place("o-9", NULL, &msg);
    cmd.deadline_us = es_now_us() - 1000;
    es_error_t err = {0};
    cr_assert_eq(es_execute(engine, &cmd, NULL, &err), ES_ETIMEOUT);
    cr_assert_eq(stream_of("o-9").n, 0);
}

typedef struct snap_check {
    uint64_t version;
    int found;
} snap_check;

static snap_check snapshot_of(const char *type, const char *id) {
    es_snapshot_t *snap = NULL;
    snap_check c = {0, 0};
    if (es_store_get_snapshot(es_engine_store(engine), type, id, &snap, NULL) == ES_OK) {
        c.version = snap->version;
        c.found = 1;
        es_snapshot_free(snap);
    }
    return c;
}

static es_command_t restock(const char *id, Inventory__V1__Restock *msg, uint32_t qty) {
    inventory__v1__restock__init(msg);
    msg->quantity = qty;
    return (es_command_t){
        .aggregate_type = "inventory.item", .aggregate_id = id, .message = &msg->base};
}

Test(engine, snapshots_every_n_events_and_loads_snapshot_plus_later_events) {
    es_engine_destroy(engine);
    open_engine("3");
    Inventory__V1__Restock msg;
    for (int i = 0; i < 7; i++) {
        es_command_t cmd = restock("sku-1", &msg, 10);
        cr_assert_eq(es_execute(engine, &cmd, NULL, NULL), ES_OK);
    }
    snap_check c = snapshot_of("inventory.item", "sku-1");
    cr_assert(c.found);
    cr_assert_eq(c.version, 6);
    /* Reserving 70 needs all 7 restocks folded: snapshot (60) + event 7 (10). */
    Inventory__V1__ReserveStock reserve = INVENTORY__V1__RESERVE_STOCK__INIT;
    reserve.order_id = "o-1";
    reserve.quantity = 70;
    es_command_t cmd = {
        .aggregate_type = "inventory.item", .aggregate_id = "sku-1", .message = &reserve.base};
    es_error_t err = {0};
    cr_assert_eq(es_execute(engine, &cmd, NULL, &err), ES_OK, "%s", err.message);
    /* Nothing is left: the item says so with a StockShortage event. */
    reserve.order_id = "o-2";
    reserve.quantity = 1;
    es_result_t res;
    cr_assert_eq(es_execute(engine, &cmd, &res, &err), ES_OK, "%s", err.message);
    cr_assert_eq(res.n_events, 1);
    cr_assert_str_eq(res.events[0]->event_type, "inventory.v1.StockShortage");
    es_result_clear(&res);
}

Test(engine, default_snapshot_policy_snapshots_every_change) {
    Inventory__V1__Restock msg;
    es_command_t cmd = restock("sku-2", &msg, 1);
    cr_assert_eq(es_execute(engine, &cmd, NULL, NULL), ES_OK);
    cr_assert_eq(es_execute(engine, &cmd, NULL, NULL), ES_OK);
    cr_assert_eq(snapshot_of("inventory.item", "sku-2").version, 2);
}

/* A test-only aggregate whose decider misbehaves in the ways a real one might. */
static const ProtobufCMessageDescriptor *const bad_events[] = {
    &inventory__v1__stock_added__descriptor, NULL};
static const ProtobufCMessageDescriptor *const bad_commands[] = {
    &inventory__v1__restock__descriptor, NULL};

static es_err bad_evolve(ProtobufCMessage *state, const ProtobufCMessage *ev, void *opaque,
                         es_error_t *err) {
    (void)state;
    (void)opaque;
    (void)err;
    const Inventory__V1__StockAdded *a = (const Inventory__V1__StockAdded *)ev;
    return a->quantity == 13 ? ES_EINVAL : ES_OK;
}

static es_err bad_decide(const ProtobufCMessage *state, const ProtobufCMessage *cmd,
                         es_decision_t *d, void *opaque) {
    (void)state;
    (void)opaque;
    const Inventory__V1__Restock *r = (const Inventory__V1__Restock *)cmd;
    if (r->quantity == 99) {
        Orders__V1__OrderConfirmed unlisted = ORDERS__V1__ORDER_CONFIRMED__INIT;
        return es_emit(d, &unlisted.base);
    }
    Inventory__V1__StockAdded added = INVENTORY__V1__STOCK_ADDED__INIT;
    added.quantity = r->quantity;
    return es_emit(d, &added.base);
}

static const es_aggregate_def bad_def = {.abi_version = ES_AGGREGATE_ABI,
                                         .type = "test.bad",
                                         .state = &inventory__v1__item__descriptor,
                                         .events = bad_events,
                                         .commands = bad_commands,
                                         .evolve = bad_evolve,
                                         .decide = bad_decide};

Test(engine, an_emitted_event_the_aggregate_does_not_list_is_an_error_and_appends_nothing) {
    cr_assert_eq(es_engine_register(engine, &bad_def, NULL, NULL), ES_OK);
    Inventory__V1__Restock msg;
    es_command_t cmd = restock("b-1", &msg, 99);
    cmd.aggregate_type = "test.bad";
    es_error_t err = {0};
    cr_assert_eq(es_execute(engine, &cmd, NULL, &err), ES_EUNKNOWN_TYPE);
    cr_assert(strstr(err.message, "orders.v1.OrderConfirmed"), "%s", err.message);
    uint64_t v = 9;
    es_store_stream_version(es_engine_store(engine), "test.bad", "b-1", &v, NULL);
    cr_assert_eq(v, 0);
}

Test(engine, an_event_its_own_evolve_refuses_is_not_appended) {
    cr_assert_eq(es_engine_register(engine, &bad_def, NULL, NULL), ES_OK);
    Inventory__V1__Restock msg;
    es_command_t cmd = restock("b-2", &msg, 13);
    cmd.aggregate_type = "test.bad";
    es_result_t res;
    cr_assert_eq(es_execute(engine, &cmd, &res, NULL), ES_EINVAL);
    cr_assert_eq(res.outcome, ES_OUTCOME_ERROR);
    es_result_clear(&res);
    uint64_t v = 9;
    es_store_stream_version(es_engine_store(engine), "test.bad", "b-2", &v, NULL);
    cr_assert_eq(v, 0);
}

Test(engine, an_unregistered_event_type_in_the_log_is_an_error_naming_it) {
    es_engine_destroy(engine);
    open_engine("0");
    es_new_event_t stray = {"inventory.v1.Mystery", (const uint8_t *)"", 0, NULL, NULL, NULL, 0};
    cr_assert_eq(es_store_append(es_engine_store(engine), "inventory.item", "sku-9", ES_EXPECT_ANY,
                                 0, &stray, 1, NULL, NULL),
                 ES_OK);
    Inventory__V1__Restock msg;
    es_command_t cmd = restock("sku-9", &msg, 1);
    es_error_t err = {0};
    cr_assert_eq(es_execute(engine, &cmd, NULL, &err), ES_EUNKNOWN_TYPE);
    cr_assert(strstr(err.message, "inventory.v1.Mystery") && strstr(err.message, "sku-9"), "%s",
              err.message);
}

Test(engine, registering_a_wrong_abi_or_twice_is_refused) {
    es_aggregate_def def = bad_def;
    def.abi_version = 99;
    es_error_t err = {0};
    cr_assert_eq(es_engine_register(engine, &def, NULL, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "test.bad") && strstr(err.message, "99"), "%s", err.message);
    cr_assert_eq(es_engine_register(engine, &demo_order_def, NULL, &err), ES_ESTATE);
}

/* A stock counter for the ABI tests: restocks add up, and a restock of 0 is refused. */
static es_err count_evolve(ProtobufCMessage *state, const ProtobufCMessage *event, void *opaque,
                           es_error_t *err) {
    (void)opaque, (void)err;
    ((Inventory__V1__Item *)state)->on_hand += ((const Inventory__V1__StockAdded *)event)->quantity;
    return ES_OK;
}

static es_err count_decide(const ProtobufCMessage *state, const ProtobufCMessage *command,
                           es_decision_t *d, void *opaque) {
    (void)opaque;
    const Inventory__V1__Restock *r = (const Inventory__V1__Restock *)command;
    if (r->quantity == 0)
        return es_reject(d, "nothing to add to the %u on hand",
                         ((const Inventory__V1__Item *)state)->on_hand);
    Inventory__V1__StockAdded added = INVENTORY__V1__STOCK_ADDED__INIT;
    added.quantity = r->quantity;
    return es_emit(d, &added.base);
}

static const ProtobufCMessageDescriptor *const count_events[] = {
    &inventory__v1__stock_added__descriptor, NULL};
static const ProtobufCMessageDescriptor *const count_commands[] = {
    &inventory__v1__restock__descriptor, NULL};

/* Restocks id by 5 twice, then by 0, and returns the rejection's reason (caller frees). */
static char *restock_5_5_0(const char *id) {
    Inventory__V1__Restock msg;
    es_result_t res;
    for (uint32_t q = 5;; q = 0) {
        es_command_t cmd = restock(id, &msg, q);
        cmd.aggregate_type = "test.stock";
        es_error_t err = {0};
        es_err rc = es_execute(engine, &cmd, &res, &err);
        if (q == 0) {
            cr_assert_eq(rc, ES_EREJECTED, "%s", err.message);
            char *reason = strdup(res.reason);
            es_result_clear(&res);
            return reason;
        }
        cr_assert_eq(rc, ES_OK, "%s", err.message);
        es_result_clear(&res);
        cmd.command_id = NULL;
        cr_assert_eq(es_execute(engine, &cmd, NULL, &err), ES_OK, "%s", err.message);
    }
}

/* A program built against the ABI 1 headers hands the library a shorter struct: the library
 * must take it and read nothing past its end (on the heap at its exact size, so ASan sees an
 * overread). */
Test(engine, a_definition_of_the_older_abi_1_registers_and_runs) {
    es_engine_destroy(engine);
    open_engine("0");
    aggregate_def_abi1 *old = malloc(sizeof *old);
    *old = (aggregate_def_abi1){1,
                                "test.stock",
                                &inventory__v1__item__descriptor,
                                count_events,
                                count_commands,
                                NULL,
                                count_evolve,
                                count_decide};
    es_error_t err = {0};
    cr_assert_eq(es_engine_register(engine, (const es_aggregate_def *)old, NULL, &err), ES_OK, "%s",
                 err.message);
    free(old); /* the engine keeps what it needs */
    char *reason = restock_5_5_0("old-1");
    cr_assert_str_eq(reason, "nothing to add to the 10 on hand");
    free(reason);
}

static const es_command_handler_t count_handlers[] = {
    {&inventory__v1__restock__descriptor, count_decide}, {NULL, NULL}};
static const es_evolver_t count_evolvers[] = {
    {&inventory__v1__stock_added__descriptor, count_evolve},
    {&inventory__v1__stock_shortage__descriptor, NULL},
    {NULL, NULL}};

Test(engine, a_definition_by_handler_tables_decides_and_folds_by_message_type) {
    es_engine_destroy(engine);
    open_engine("0");
    es_aggregate_def def = {.abi_version = ES_AGGREGATE_ABI,
                            .type = "test.stock",
                            .state = &inventory__v1__item__descriptor,
                            .command_handlers = count_handlers,
                            .evolvers = count_evolvers};
    es_error_t err = {0};
    cr_assert_eq(es_engine_register(engine, &def, NULL, &err), ES_OK, "%s", err.message);
    /* An event whose evolver is NULL folds as nothing. */
    Inventory__V1__StockShortage shortage = INVENTORY__V1__STOCK_SHORTAGE__INIT;
    uint8_t buf[64];
    size_t len = protobuf_c_message_pack(&shortage.base, buf);
    es_new_event_t ne = {
        .event_type = "inventory.v1.StockShortage", .payload = buf, .payload_len = len};
    cr_assert_eq(es_store_append(es_engine_store(engine), "test.stock", "tab-1", ES_EXPECT_ANY, 0,
                                 &ne, 1, NULL, &err),
                 ES_OK, "%s", err.message);
    char *reason = restock_5_5_0("tab-1");
    cr_assert_str_eq(reason, "nothing to add to the 10 on hand");
    free(reason);
}

Test(engine, a_definition_of_a_newer_abi_or_with_both_forms_or_a_repeated_type_is_refused) {
    es_aggregate_def def = {.abi_version = ES_AGGREGATE_ABI + 1,
                            .type = "inventory.item",
                            .state = &inventory__v1__item__descriptor,
                            .command_handlers = count_handlers,
                            .evolvers = count_evolvers};
    es_error_t err = {0};
    cr_assert_eq(es_engine_register(engine, &def, NULL, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "ABI version 3") && strstr(err.message, "takes 1 to 2"), "%s",
              err.message);
    def.abi_version = ES_AGGREGATE_ABI;
    def.type = "test.both";
    def.decide = count_decide;
    cr_assert_eq(es_engine_register(engine, &def, NULL, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "both ways"), "%s", err.message);
    def.decide = NULL;
    const es_command_handler_t twice[] = {{&inventory__v1__restock__descriptor, count_decide},
                                          {&inventory__v1__restock__descriptor, count_decide},
                                          {NULL, NULL}};
    def.command_handlers = twice;
    cr_assert_eq(es_engine_register(engine, &def, NULL, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "inventory.v1.Restock twice"), "%s", err.message);
}

/* Two engines (two connections, as two processes would have) take turns on one aggregate; each
 * decision depends on what the other appended, so a stale cached state or head would show. */
Test(engine, two_engines_on_one_file_always_decide_on_the_latest_state) {
    es_config_t *cfg = tu_config(dir, "engine.db");
    es_engine_t *other = NULL;
    cr_assert_eq(es_engine_new(cfg, &other, NULL), ES_OK);
    cr_assert_eq(demo_register_all(other, NULL), ES_OK);
    es_config_destroy(cfg);
    Inventory__V1__Restock msg;
    Inventory__V1__ReserveStock reserve = INVENTORY__V1__RESERVE_STOCK__INIT;
    char order[32];
    reserve.order_id = order;
    reserve.quantity = 1;
    es_command_t res_cmd = {
        .aggregate_type = "inventory.item", .aggregate_id = "sku-x", .message = &reserve.base};
    for (int i = 0; i < 20; i++) {
        es_engine_t *a = i % 2 ? other : engine, *b = i % 2 ? engine : other;
        es_command_t cmd = restock("sku-x", &msg, 1);
        es_result_t r;
        cr_assert_eq(es_execute(a, &cmd, &r, NULL), ES_OK);
        cr_assert_eq(r.version, (uint64_t)(3 * i + 1));
        es_result_clear(&r);
        snprintf(order, sizeof order, "o-%d", i);
        es_error_t err = {0};
        cr_assert_eq(es_execute(b, &res_cmd, &r, &err), ES_OK, "round %d: %s", i, err.message);
        cr_assert_eq(r.version, (uint64_t)(3 * i + 2));
        cr_assert_str_eq(r.events[0]->event_type, "inventory.v1.StockReserved");
        es_result_clear(&r);
        snprintf(order, sizeof order, "o-%d-extra", i);
        cr_assert_eq(es_execute(a, &res_cmd, &r, &err), ES_OK, "round %d: %s", i, err.message);
        cr_assert_eq(r.version, (uint64_t)(3 * i + 3));
        cr_assert_str_eq(r.events[0]->event_type, "inventory.v1.StockShortage",
                         "round %d: the stock was already taken by the other engine", i);
        es_result_clear(&r);
    }
    es_engine_destroy(other);
}

static es_err failing_hook(void *opaque, es_log_t *log, const es_command_t *cmds,
                           const es_result_t *res, size_t n, es_error_t *err) {
    (void)opaque, (void)log, (void)cmds, (void)res, (void)n;
    return es_fail(err, ES_EIO, "the hook failed");
}

/* Streams and command records a failed batch created are written with the batch, so they go
 * with its rollback; the next batch creates them again, under ids that hold after reopening.
 * (The command processor's batches fail this way when Kafka does not take their events.) */
Test(engine, a_failed_batch_leaves_no_stream_or_command_id_and_a_retry_creates_them) {
    Orders__V1__PlaceOrder m1, m2, m3;
    es_command_t cmds[2] = {place("o-r1", "place-r1", &m1), place("o-r2", "place-r2", &m2)};
    es_result_t res[2];
    es_error_t err = {0};
    cr_assert_eq(es_engine_execute_hooked(engine, cmds, 2, res, failing_hook, NULL, &err), ES_EIO);
    for (int i = 0; i < 2; i++) {
        uint64_t v = 9;
        cr_assert_eq(es_store_stream_version(es_engine_store(engine), "orders.order",
                                             cmds[i].aggregate_id, &v, NULL),
                     ES_OK);
        cr_assert_eq(v, 0, "%s was rolled back", cmds[i].aggregate_id);
    }
    cr_assert_eq(es_execute_batch(engine, cmds, 2, res, &err), ES_OK, "%s", err.message);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(res[i].outcome, ES_OUTCOME_ACCEPTED);
        cr_assert_not(res[i].duplicate, "no record of %s survived the rollback",
                      cmds[i].command_id);
        es_result_clear(&res[i]);
    }
    es_command_t more = place("o-r3", "place-r3", &m3);
    cr_assert_eq(es_execute(engine, &more, NULL, &err), ES_OK, "%s", err.message);
    es_engine_destroy(engine);
    open_engine(NULL);
    const char *ids[] = {"o-r1", "o-r2", "o-r3"};
    for (int i = 0; i < 3; i++) {
        seen s = stream_of(ids[i]);
        cr_assert_eq(s.n, 1, "%s has its one event after reopening", ids[i]);
        cr_assert_str_eq(s.types[0], "orders.v1.OrderPlaced");
    }
    cmds[0] = place("o-r1", "place-r1", &m1);
    cr_assert_eq(es_execute(engine, &cmds[0], &res[0], &err), ES_OK, "%s", err.message);
    cr_assert(res[0].duplicate, "the command id was recorded");
    es_result_clear(&res[0]);
}

/* Schema version 2, as eskit wrote it before command fingerprints: es_commands without them. */
static const char v2_schema[] =
    "CREATE TABLE es_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE es_types(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
    "CREATE TABLE es_streams(id INTEGER PRIMARY KEY, type_id INTEGER NOT NULL,"
    " agg_id TEXT NOT NULL, UNIQUE(type_id, agg_id));"
    "CREATE TABLE es_heads(stream INTEGER PRIMARY KEY, version INTEGER NOT NULL,"
    " head INTEGER NOT NULL, snap_version INTEGER, snap_type INTEGER, snap_state BLOB,"
    " snap_at INTEGER);"
    "CREATE TABLE es_events(pos INTEGER PRIMARY KEY, stream INTEGER NOT NULL,"
    " version INTEGER NOT NULL, prev INTEGER NOT NULL, type_id INTEGER NOT NULL,"
    " envelope BLOB NOT NULL);"
    "CREATE VIEW es_snapshots(stream, version, state_type, state, taken_at) AS"
    " SELECT h.stream, h.snap_version, t.name, h.snap_state, h.snap_at FROM es_heads h"
    " JOIN es_types t ON t.id = h.snap_type;"
    "CREATE TABLE es_commands(id TEXT PRIMARY KEY, type_id INTEGER NOT NULL,"
    " agg_id TEXT NOT NULL, outcome INTEGER NOT NULL, first_version INTEGER NOT NULL,"
    " last_version INTEGER NOT NULL, version INTEGER NOT NULL, reason TEXT) WITHOUT ROWID;"
    "CREATE TABLE es_dlq_records(seq INTEGER PRIMARY KEY, topic TEXT NOT NULL,"
    " ref TEXT NOT NULL UNIQUE, key TEXT, value BLOB, headers TEXT NOT NULL, at INTEGER NOT NULL);"
    "INSERT INTO es_meta VALUES ('schema_version', '2');"
    "INSERT INTO es_types VALUES (1, 'orders.order');"
    "INSERT INTO es_streams VALUES (1, 1, 'o-old');"
    "INSERT INTO es_heads(stream, version, head) VALUES (1, 1, 1);"
    "INSERT INTO es_commands VALUES ('place-o-old', 1, 'o-old', 1, 1, 1, 1, NULL);";

/* o-old's OrderPlaced at position 1, caused by place-o-old, in a version 2 envelope. */
static void insert_v2_event(sqlite3 *db, char *event_id) {
    Orders__V1__OrderPlaced placed = ORDERS__V1__ORDER_PLACED__INIT;
    uint8_t payload[128];
    placed.customer_id = "c-1";
    placed.currency = "EUR";
    placed.amount_cents = 3000;
    cr_assert_leq(orders__v1__order_placed__get_packed_size(&placed), sizeof payload);
    es_event_t ev = {.aggregate_type = "orders.order",
                     .aggregate_id = "o-old",
                     .version = 1,
                     .event_type = "orders.v1.OrderPlaced",
                     .payload = payload,
                     .payload_len = orders__v1__order_placed__pack(&placed, payload),
                     .command_id = "place-o-old",
                     .correlation_id = "place-o-old"};
    es_uuid7(ev.event_id);
    strcpy(event_id, ev.event_id);
    uint8_t *buf = NULL;
    size_t len = 0;
    cr_assert_eq(es_envelope_encode(&ev, &buf, &len, NULL), ES_OK);
    sqlite3_stmt *s = NULL;
    cr_assert_eq(
        sqlite3_prepare_v2(db, "INSERT INTO es_events VALUES (1, 1, 1, 0, 1, ?1)", -1, &s, NULL),
        SQLITE_OK);
    sqlite3_bind_blob(s, 1, buf, (int)len, SQLITE_STATIC);
    cr_assert_eq(sqlite3_step(s), SQLITE_DONE);
    sqlite3_finalize(s);
    free(buf);
}

static int query_int(const char *path, const char *sql) {
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(s), SQLITE_ROW, "%s", sql);
    int v = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

/* Its ids were recorded without a fingerprint: a retry is answered as before, unchecked. */
Test(engine, a_version_2_file_is_upgraded_and_its_command_ids_still_answer_as_duplicates) {
    char *path = tu_path(dir, "v2.db"), event_id[ES_UUID_STR_LEN + 1];
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, v2_schema, NULL, NULL, NULL), SQLITE_OK, "%s",
                 sqlite3_errmsg(db));
    insert_v2_event(db, event_id);
    sqlite3_close(db);

    es_engine_destroy(engine);
    es_config_t *cfg = tu_config(dir, "v2.db");
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(engine, &err), ES_OK, "%s", err.message);
    es_config_destroy(cfg);
    cr_assert_eq(query_int(path, "SELECT value FROM es_meta WHERE key = 'schema_version'"), 6);

    Orders__V1__PlaceOrder m1, m2;
    es_command_t old = place("o-old", "place-o-old", &m1);
    m1.customer_id = "someone else"; /* not checked: the record does not say what was asked */
    es_result_t res;
    cr_assert_eq(es_execute(engine, &old, &res, &err), ES_OK, "%s", err.message);
    cr_assert(res.duplicate);
    cr_assert_eq(res.n_events, 1);
    cr_assert_str_eq(res.events[0]->event_id, event_id);
    es_result_clear(&res);

    es_command_t fresh = place("o-new", "place-o-new", &m2);
    cr_assert_eq(es_execute(engine, &fresh, NULL, &err), ES_OK, "%s", err.message);
    m2.customer_id = "someone else";
    cr_assert_eq(es_execute(engine, &fresh, NULL, &err), ES_EIDREUSED, "new ids are checked");
    cr_assert_eq(stream_of("o-old").n, 1);
    free(path);
}

/* es_engine_load_state: the state a command would see, from a snapshot and the events after
 * it, on a writer and on a read-only engine of the same file. */
static Inventory__V1__Item *item_state(es_engine_t *e, const char *id, uint64_t *version) {
    ProtobufCMessage *state = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_engine_load_state(e, "inventory.item", id, &state, version, &err), ES_OK, "%s",
                 err.message);
    cr_assert_not_null(state);
    cr_assert_eq(state->descriptor, &inventory__v1__item__descriptor);
    return (Inventory__V1__Item *)state;
}

Test(engine, load_state_folds_the_snapshot_and_later_events_and_a_read_only_engine_agrees) {
    es_engine_destroy(engine);
    open_engine("3");
    Inventory__V1__Restock msg;
    for (int i = 0; i < 7; i++) {
        es_command_t cmd = restock("sku-1", &msg, 10);
        cr_assert_eq(es_execute(engine, &cmd, NULL, NULL), ES_OK);
    }
    uint64_t version = 0;
    Inventory__V1__Item *st = item_state(engine, "sku-1", &version);
    cr_expect_eq(version, 7);
    cr_expect_eq(st->on_hand, 70);
    protobuf_c_message_free_unpacked(&st->base, NULL);

    es_config_t *cfg = tu_config(dir, "engine.db");
    es_engine_t *ro = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_engine_open(cfg, ES_OPEN_READONLY, &ro, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(ro, &err), ES_OK, "%s", err.message);
    st = item_state(ro, "sku-1", &version);
    cr_expect_eq(version, 7);
    cr_expect_eq(st->on_hand, 70);
    protobuf_c_message_free_unpacked(&st->base, NULL);
    /* An aggregate without events: the initial state at version 0. */
    st = item_state(ro, "sku-none", &version);
    cr_expect_eq(version, 0);
    cr_expect_eq(st->on_hand, 0);
    protobuf_c_message_free_unpacked(&st->base, NULL);
    es_engine_destroy(ro);
    es_config_destroy(cfg);
}

Test(engine, a_read_only_engine_executes_nothing_and_says_so) {
    es_config_t *cfg = tu_config(dir, "engine.db");
    es_engine_t *ro = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_engine_open(cfg, ES_OPEN_READONLY, &ro, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(ro, &err), ES_OK, "%s", err.message);
    Inventory__V1__Restock msg;
    es_command_t cmd = restock("sku-1", &msg, 10);
    cr_expect_eq(es_execute(ro, &cmd, NULL, &err), ES_ESTATE);
    cr_expect(strstr(err.message, "read-only"), "%s", err.message);
    uint64_t version = 1;
    cr_assert_eq(
        es_store_stream_version(es_engine_store(engine), "inventory.item", "sku-1", &version, NULL),
        ES_OK);
    cr_expect_eq(version, 0, "a read-only engine appended");
    es_engine_destroy(ro);
    es_config_destroy(cfg);
}

Test(engine, load_state_of_an_unregistered_type_names_it) {
    ProtobufCMessage *state = NULL;
    es_error_t err = {0};
    cr_expect_eq(es_engine_load_state(engine, "acme.widget", "w-1", &state, NULL, &err),
                 ES_EUNKNOWN_TYPE);
    cr_expect(strstr(err.message, "acme.widget"), "%s", err.message);
    cr_expect_null(state);
}

/* The idempotency window (docs/idempotency.md, "How long ids are remembered"). */
static void open_windowed(const char *ms, const char *ids) {
    es_config_t *cfg = tu_config(dir, "engine.db");
    es_error_t err = {0};
    es_engine_destroy(engine);
    cr_assert_eq(es_config_set(cfg, "idempotency.window.ms", ms, NULL), ES_OK);
    cr_assert_eq(es_config_set(cfg, "idempotency.window.ids", ids, NULL), ES_OK);
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(engine, &err), ES_OK, "%s", err.message);
    es_config_destroy(cfg);
}

/* Restocks sku-w once with command id cid; true when it was answered as a duplicate. */
static bool restock_with_id(es_engine_t *e, const char *cid) {
    Inventory__V1__Restock msg;
    es_command_t cmd = restock("sku-w", &msg, 1);
    es_result_t r;
    es_error_t err = {0};
    cmd.command_id = cid;
    cr_assert_eq(es_execute(e, &cmd, &r, &err), ES_OK, "%s: %s", cid, err.message);
    cr_assert_eq(r.outcome, ES_OUTCOME_ACCEPTED, "%s", cid);
    bool dup = r.duplicate;
    es_result_clear(&r);
    return dup;
}

Test(engine, a_retry_within_the_time_window_is_a_duplicate_and_after_it_runs_anew) {
    open_windowed("300", "0");
    int64_t before = es_now_us();
    cr_assert_not(restock_with_id(engine, "w-1"));
    int64_t ran = es_now_us(); /* its first execution is recorded as of no later */
    bool dup = restock_with_id(engine, "w-1");
    if (es_now_us() < before + 300000) /* a disk so slow that it was not is no failure */
        cr_assert(dup, "within 300 ms: remembered");
    while (es_now_us() < ran + 350000)
        restock_with_id(engine, NULL); /* other commands meanwhile; their commits prune */
    cr_assert_not(restock_with_id(engine, "w-1"), "after 300 ms: forgotten, runs anew");
    cr_assert(restock_with_id(engine, "w-1"), "and is remembered from its new execution");
}

Test(engine, only_the_last_window_ids_command_ids_are_remembered) {
    open_windowed("0", "3");
    char cid[16];
    for (int i = 1; i <= 5; i++) {
        snprintf(cid, sizeof cid, "n-%d", i);
        cr_assert_not(restock_with_id(engine, cid));
    }
    cr_assert(restock_with_id(engine, "n-3"));
    cr_assert(restock_with_id(engine, "n-4"));
    cr_assert(restock_with_id(engine, "n-5"));
    cr_assert_not(restock_with_id(engine, "n-1"), "the oldest two are forgotten");
}

/* Past the window, rows leave es_commands a bounded chunk per commit, not all at once. */
Test(engine, forgotten_ids_are_deleted_a_bounded_chunk_per_commit) {
    enum { N = 3000 };
    open_windowed("0", "10");
    static es_command_t cmds[N];
    static es_result_t res[N];
    static char cids[N][16];
    Inventory__V1__Restock msg;
    for (int i = 0; i < N; i++) {
        snprintf(cids[i], sizeof cids[i], "b-%d", i);
        cmds[i] = restock("sku-w", &msg, 1);
        cmds[i].command_id = cids[i];
    }
    es_error_t err = {0};
    cr_assert_eq(es_execute_batch(engine, cmds, N, res, &err), ES_OK, "%s", err.message);
    for (int i = 0; i < N; i++)
        es_result_clear(&res[i]);
    char *path = tu_path(dir, "engine.db");
    int rows = query_int(path, "SELECT count(*) FROM es_commands");
    for (int round = 0; rows > 11 && round < 10; round++) {
        restock_with_id(engine, NULL);
        int now = query_int(path, "SELECT count(*) FROM es_commands");
        cr_assert_geq(now, rows - 1002, "round %d: %d rows to %d in one commit", round, rows, now);
        cr_assert_lt(now, rows, "round %d: the commit pruned", round);
        rows = now;
    }
    cr_assert_leq(rows, 11, "down to the window (and the newest row)");
    cr_assert(restock_with_id(engine, "b-2999"));
    free(path);
}

Test(engine, an_id_another_engine_on_the_file_recorded_is_recognised) {
    es_config_t *cfg = tu_config(dir, "engine.db");
    es_engine_t *other = NULL;
    cr_assert_eq(es_engine_new(cfg, &other, NULL), ES_OK);
    cr_assert_eq(demo_register_all(other, NULL), ES_OK);
    es_config_destroy(cfg);
    cr_assert_not(restock_with_id(engine, "t-1")); /* both have looked ids up */
    cr_assert(restock_with_id(other, "t-1"));
    for (int i = 0; i < 3; i++) {
        char cid[16];
        snprintf(cid, sizeof cid, "t-%d", i + 2);
        cr_assert_not(restock_with_id(i % 2 ? engine : other, cid));
        cr_assert(restock_with_id(i % 2 ? other : engine, cid), "%s from the other engine", cid);
    }
    es_engine_destroy(other);
}

Test(engine, a_rolled_back_batch_leaves_its_ids_forgotten_and_a_reopened_engine_remembers) {
    Orders__V1__PlaceOrder m1;
    cr_assert_not(restock_with_id(engine, "rb-0"));
    es_command_t cmd = place("o-rb", "rb-1", &m1);
    es_result_t res;
    cr_assert_eq(es_engine_execute_hooked(engine, &cmd, 1, &res, failing_hook, NULL, NULL), ES_EIO);
    cr_assert_not(restock_with_id(engine, "rb-1"), "the rolled-back id is not remembered");
    es_engine_destroy(engine);
    open_engine(NULL);
    cr_assert(restock_with_id(engine, "rb-1"));
    cr_assert(restock_with_id(engine, "rb-0"));
}

/* Schema version 4 kept es_commands keyed by the id: made from a new file by hand. */
Test(engine, a_version_4_file_is_upgraded_and_its_ids_are_remembered_for_a_window) {
    cr_assert_not(restock_with_id(engine, "v4-1"));
    cr_assert_not(restock_with_id(engine, "v4-2"));
    es_engine_destroy(engine);
    engine = NULL;
    char *path = tu_path(dir, "engine.db");
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(
        sqlite3_exec(db,
                     "CREATE TABLE c4(id TEXT PRIMARY KEY, type_id INTEGER NOT NULL,"
                     " agg_id TEXT NOT NULL, outcome INTEGER NOT NULL, first_version INTEGER NOT "
                     "NULL, last_version INTEGER NOT NULL, version INTEGER NOT NULL, reason TEXT,"
                     " fingerprint BLOB) WITHOUT ROWID;"
                     "INSERT INTO c4 SELECT id, type_id, agg_id, outcome, first_version,"
                     " last_version, version, reason, fingerprint FROM es_commands;"
                     "DROP TABLE es_commands; ALTER TABLE c4 RENAME TO es_commands;"
                     "UPDATE es_meta SET value = '4' WHERE key = 'schema_version';",
                     NULL, NULL, NULL),
        SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);
    int64_t before = es_now_us() / 1000;
    open_engine(NULL);
    cr_assert_eq(query_int(path, "SELECT value FROM es_meta WHERE key = 'schema_version'"), 6);
    cr_assert_geq(query_int(path, "SELECT min(at) >= "
                                  "0 FROM es_commands"),
                  1);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM es_commands"), 2);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM es_commands WHERE at >= %lld",
             (long long)before - 1000);
    cr_assert_eq(query_int(path, sql), 2, "the upgrade counts as their first run");
    cr_assert(restock_with_id(engine, "v4-1"));
    cr_assert(restock_with_id(engine, "v4-2"));
    cr_assert_not(restock_with_id(engine, "v4-3"));
    free(path);
}

/* The snapshot es_heads holds of an item, read by a connection of its own: -1 when its row
 * holds none, -2 when it has no row. */
static int heads_snapshot(const char *id) {
    char *path = tu_path(dir, "engine.db"), sql[256];
    snprintf(sql, sizeof sql,
             "SELECT COALESCE((SELECT COALESCE(h.snap_version, -1) FROM es_heads h JOIN "
             "es_streams s ON s.id = h.stream WHERE s.agg_id = '%s'), -2)",
             id);
    int v = query_int(path, sql);
    free(path);
    return v;
}

static void restock_one(const char *id) {
    Inventory__V1__Restock msg;
    es_command_t cmd = restock(id, &msg, 1);
    es_error_t err = {0};
    cr_assert_eq(es_execute(engine, &cmd, NULL, &err), ES_OK, "%s", err.message);
}

/* With heads deferred, a batch's snapshots wait as the engine's states and are packed when the
 * store writes them: a rolled-back batch leaves the earlier ones waiting, the close writes
 * them. */
Test(engine, snapshots_kept_back_for_deferred_heads_are_written_at_close) {
    restock_one("sku-a");
    restock_one("sku-a");
    restock_one("sku-b");
    cr_assert_eq(snapshot_of("inventory.item", "sku-a").version, 2, "kept back, still read");
    Inventory__V1__Restock msg;
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    es_command_t cmds[] = {restock("sku-c", &msg, 1), simple("o-never-placed", &confirm.base)};
    es_result_t res[2];
    es_error_t err = {0};
    cr_assert_eq(es_execute_all(engine, cmds, 2, res, &err), ES_EREJECTED, "%s", err.message);
    es_result_clear(&res[0]);
    es_result_clear(&res[1]);
    restock_one("sku-b");
    cr_assert_eq(heads_snapshot("sku-a"), -2, "the heads wait for the close");
    es_engine_destroy(engine);
    engine = NULL;
    cr_assert_eq(heads_snapshot("sku-a"), 2);
    cr_assert_eq(heads_snapshot("sku-b"), 2);
    cr_assert_eq(heads_snapshot("sku-c"), -2);
    open_engine(NULL);
}

/* A commit that writes the deferred heads writes every waiting snapshot with them. */
Test(engine, the_commit_that_writes_deferred_heads_writes_the_snapshots_kept_back) {
    es_engine_destroy(engine);
    es_config_t *cfg = tu_config(dir, "engine.db");
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "sqlite.heads.defer.events", "3", &err), ES_OK, "%s",
                 err.message);
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(engine, &err), ES_OK, "%s", err.message);
    es_config_destroy(cfg);
    restock_one("sku-a");
    restock_one("sku-b");
    cr_assert_eq(heads_snapshot("sku-a"), -2, "not yet three events in the tail");
    restock_one("sku-b");
    cr_assert_eq(heads_snapshot("sku-a"), 1);
    cr_assert_eq(heads_snapshot("sku-b"), 2);
}

/* A state kept back by one writer while another moves its stream on is older than the other's
 * snapshot: neither get_snapshot nor the first writer's next write of the heads prefers it. */
Test(engine, a_snapshot_kept_back_does_not_replace_a_newer_one_of_another_writer) {
    restock_one("sku-a"); /* version 1, kept back by this engine */
    es_engine_t *first = engine, *other = NULL;
    es_config_t *cfg = tu_config(dir, "engine.db");
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &other, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(other, &err), ES_OK, "%s", err.message);
    es_config_destroy(cfg);
    engine = other;
    restock_one("sku-a");
    restock_one("sku-a");
    es_engine_destroy(other); /* writes its snapshot at version 3 */
    engine = first;
    cr_assert_eq(heads_snapshot("sku-a"), 3);
    cr_assert_eq(snapshot_of("inventory.item", "sku-a").version, 3);
    restock_one("sku-b"); /* the first commit after the other's: the heads are written */
    es_engine_destroy(engine);
    engine = NULL;
    cr_assert_eq(heads_snapshot("sku-a"), 3);
    cr_assert_eq(heads_snapshot("sku-b"), 1);
    open_engine(NULL);
}

/* The version of orders.order/<id> a store of its own reads from engine.db. */
static uint64_t order_version(const char *id) {
    es_config_t *cfg = tu_config(dir, "engine.db");
    es_store_t *s = NULL;
    es_error_t err = {0};
    uint64_t v = 0;
    cr_assert_eq(es_store_new(cfg, &s, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_store_stream_version(s, "orders.order", id, &v, &err), ES_OK, "%s",
                 err.message);
    es_store_destroy(s);
    es_config_destroy(cfg);
    return v;
}

/* One engine defers the heads of its commits; another engine's commit that wrote no event (a
 * rejected command, its id recorded) read them, and its next commit appends: that one must
 * leave the first engine's heads in the deferred tail, not start a tail of its own past them
 * (the saga coordinator, killed and restarted beside an engine placing orders, then found an
 * order placed by the other engine "never placed" and cancelled nothing). */
Test(engine, a_commit_that_only_read_another_engines_deferred_heads_keeps_them) {
    Orders__V1__PlaceOrder m;
    es_command_t cmd = place("o-1", NULL, &m);
    es_error_t err = {0};
    cr_assert_eq(es_execute(engine, &cmd, NULL, &err), ES_OK, "%s", err.message);

    es_config_t *cfg = tu_config(dir, "engine.db");
    es_engine_t *first = engine, *other = NULL;
    cr_assert_eq(es_engine_new(cfg, &other, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(other, &err), ES_OK, "%s", err.message);
    es_config_destroy(cfg);
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    es_command_t rejected = simple("o-never-placed", &confirm.base);
    rejected.command_id = "confirm-1";
    cr_assert_eq(es_execute(other, &rejected, NULL, &err), ES_EREJECTED);
    engine = other;
    restock_one("sku-a");
    engine = first;

    cr_assert_eq(order_version("o-1"), 1, "the first engine's order is where it placed it");
    es_engine_destroy(other);
    cr_assert_eq(order_version("o-1"), 1, "after the other engine's close");
    es_engine_destroy(engine);
    engine = NULL;
    cr_assert_eq(order_version("o-1"), 1, "after both closed");
    char *path = tu_path(dir, "engine.db");
    cr_assert_eq(query_int(path, "SELECT count(*) FROM es_streams s WHERE NOT EXISTS (SELECT 1 "
                                 "FROM es_heads h WHERE h.stream = s.id)"),
                 0, "every stream has its head once both closed");
    free(path);
    open_engine(NULL);
}
