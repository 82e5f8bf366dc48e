/*
 * es_saga_check and es_saga_new refuse a wrong definition with a
 * message naming what is wrong, and es_saga_send refuses a command the step
 * does not declare.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "domain.h"
#include "fulfilment.h"
#include "testutil.h"

static es_saga_step_t steps[8];
static es_saga_def def;

/* A copy of the demo saga that a test may break. */
static void setup(void) {
    def = demo_fulfilment_def;
    for (size_t i = 0; i < def.n_steps; i++)
        steps[i] = def.steps[i];
    def.steps = steps;
}

TestSuite(saga_def, .init = setup);

static void refused(const char *needle) {
    es_error_t err = {0};
    cr_assert_eq(es_saga_check(&def, &err), ES_EINVAL);
    cr_assert_not_null(strstr(err.message, needle), "'%s' lacks '%s'", err.message, needle);
}

Test(saga_def, the_demo_saga_is_accepted) {
    es_error_t err = {0};
    cr_assert_eq(es_saga_check(&def, &err), ES_OK, "%s", err.message);
}

Test(saga_def, a_null_definition_or_a_wrong_abi_is_refused) {
    es_error_t err = {0};
    cr_assert_eq(es_saga_check(NULL, &err), ES_EINVAL);
    def.abi_version = ES_SAGA_ABI + 1;
    refused("abi_version");
}

Test(saga_def, names_must_be_valid) {
    def.name = "Orders";
    refused("Orders");
    setup();
    def.start_aggregate = "orders";
    refused("start_aggregate");
    setup();
    steps[1].name = "Authorize Payment";
    refused("name 'Authorize Payment'");
    setup();
    steps[2].name = steps[0].name;
    refused("used twice");
    setup();
    steps[0].aggregate_type = "inventory";
    refused("step 0");
}

Test(saga_def, steps_need_commands_timeouts_and_whole_compensations) {
    def.n_steps = 0;
    refused("steps needed");
    setup();
    def.start_event = NULL;
    refused("start_event");
    setup();
    steps[0].send = NULL;
    refused("command (descriptor) and send");
    setup();
    steps[1].timeout_ms = 0;
    refused("timeout_ms");
    setup();
    steps[0].compensate = NULL;
    refused("compensation and compensate");
}

Test(saga_def, the_coordinator_refuses_a_wrong_definition_before_opening_anything) {
    char *dir = tu_tempdir();
    es_config_t *cfg = tu_config(dir, "events.db");
    char *saga_db = tu_path(dir, "saga.db");
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "saga.db", saga_db, &err), ES_OK);
    es_engine_t *engine = NULL;
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "%s", err.message);
    es_saga_t *c = NULL;
    steps[1].timeout_ms = -5;
    cr_assert_eq(es_saga_new(cfg, &def, engine, &c, &err), ES_EINVAL);
    cr_assert_null(c);
    cr_assert_not_null(strstr(err.message, "authorize_payment"), "%s", err.message);
    cr_assert_eq(access(saga_db, F_OK), -1, "no saga database was created");
    cr_assert_eq(es_saga_new(cfg, NULL, engine, &c, &err), ES_EINVAL);
    cr_assert_eq(es_saga_new(cfg, &def, NULL, &c, &err), ES_EINVAL);
    es_engine_destroy(engine);
    es_config_destroy(cfg);
    free(saga_db);
    tu_rmtree(dir);
    free(dir);
}

/* A step whose send names a target id that is not text (a byte that is not UTF-8, a C1 control
 * character): es_saga_send refuses it as es_execute would, naming the aggregate id. */
static es_err send_bad_id(const es_saga_view_t *v, es_saga_out_t *out, es_error_t *err) {
    Inventory__V1__ReserveStock c = INVENTORY__V1__RESERVE_STOCK__INIT;
    (void)err;
    c.order_id = (char *)es_saga_view_id(v);
    c.quantity = 1;
    return es_saga_send(out,
                        "sku-\xc2\x9b"
                        "31m\xff",
                        &c.base);
}

Test(saga_def, a_step_sending_to_an_id_that_is_not_text_parks_the_start_event_naming_the_id) {
    char *dir = tu_tempdir();
    es_config_t *cfg = tu_config(dir, "events.db");
    char *saga_db = tu_path(dir, "saga.db");
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "saga.db", saga_db, &err), ES_OK);
    es_engine_t *engine = NULL;
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(engine, &err), ES_OK, "%s", err.message);
    Orders__V1__LineItem item = ORDERS__V1__LINE_ITEM__INIT;
    item.sku = "sku-1";
    item.quantity = 1;
    item.unit_price_cents = 100;
    Orders__V1__LineItem *items[] = {&item};
    Orders__V1__PlaceOrder place = ORDERS__V1__PLACE_ORDER__INIT;
    place.customer_id = "alice";
    place.n_items = 1;
    place.items = items;
    place.currency = "USD";
    es_command_t cmd = {
        .aggregate_type = "orders.order", .aggregate_id = "o-1", .message = &place.base};
    cr_assert_eq(es_execute(engine, &cmd, NULL, &err), ES_OK, "%s", err.message);

    steps[0].send = send_bad_id;
    es_saga_t *c = NULL;
    cr_assert_eq(es_saga_new(cfg, &def, engine, &c, &err), ES_OK, "%s", err.message);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(es_saga_poll(c, 10, NULL, &err), ES_OK, "%s", err.message);
    uint64_t active = 1;
    cr_assert_eq(es_saga_active(c, &active, &err), ES_OK);
    cr_assert_eq(active, 0, "the instance was not started");
    es_saga_destroy(c);

    es_config_t *rm = es_config_dup(cfg);
    cr_assert_eq(es_config_set(rm, "readmodel.db", saga_db, &err), ES_OK);
    es_dlq_entry_t *parked = NULL;
    size_t n = 0;
    cr_assert_eq(es_dlq_list(rm, NULL, false, &parked, &n, &err), ES_OK, "%s", err.message);
    cr_assert_eq(n, 1);
    cr_assert(strstr(parked[0].error, "aggregate id 'sku-\\xc2\\x9b31m\\xff'"), "%s",
              parked[0].error);
    free(parked);
    es_config_destroy(rm);
    es_engine_destroy(engine);
    es_config_destroy(cfg);
    free(saga_db);
    tu_rmtree(dir);
    free(dir);
}

/* A step whose send emits a command of another type than it declares. */
static es_err send_wrong(const es_saga_view_t *v, es_saga_out_t *out, es_error_t *err) {
    Orders__V1__ConfirmOrder c = ORDERS__V1__CONFIRM_ORDER__INIT;
    es_err rc = es_saga_send(out, es_saga_view_id(v), &c.base);
    if (rc != ES_OK)
        snprintf(err->message, sizeof err->message, "caller's own words");
    return rc;
}

Test(saga_def, a_step_sending_an_undeclared_command_parks_the_event_that_started_it) {
    char *dir = tu_tempdir();
    es_config_t *cfg = tu_config(dir, "events.db");
    char *saga_db = tu_path(dir, "saga.db");
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "saga.db", saga_db, &err), ES_OK);
    es_engine_t *engine = NULL;
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(engine, &err), ES_OK, "%s", err.message);
    Orders__V1__LineItem item = ORDERS__V1__LINE_ITEM__INIT;
    item.sku = "sku-1";
    item.quantity = 1;
    item.unit_price_cents = 100;
    Orders__V1__LineItem *items[] = {&item};
    Orders__V1__PlaceOrder place = ORDERS__V1__PLACE_ORDER__INIT;
    place.customer_id = "alice";
    place.n_items = 1;
    place.items = items;
    place.currency = "USD";
    es_command_t cmd = {
        .aggregate_type = "orders.order", .aggregate_id = "o-1", .message = &place.base};
    cr_assert_eq(es_execute(engine, &cmd, NULL, &err), ES_OK, "%s", err.message);

    steps[0].send = send_wrong;
    es_saga_t *c = NULL;
    cr_assert_eq(es_saga_new(cfg, &def, engine, &c, &err), ES_OK, "%s", err.message);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(es_saga_poll(c, 10, NULL, &err), ES_OK, "%s", err.message);
    uint64_t active = 1;
    cr_assert_eq(es_saga_active(c, &active, &err), ES_OK);
    cr_assert_eq(active, 0, "the instance was not started");
    es_saga_destroy(c);

    es_config_t *rm = es_config_dup(cfg);
    cr_assert_eq(es_config_set(rm, "readmodel.db", saga_db, &err), ES_OK);
    es_dlq_entry_t *parked = NULL;
    size_t n = 0;
    cr_assert_eq(es_dlq_list(rm, NULL, false, &parked, &n, &err), ES_OK, "%s", err.message);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(parked[0].event_type, "orders.v1.OrderPlaced");
    cr_assert_not_null(strstr(parked[0].error, "sent a orders.v1.ConfirmOrder; the step declares "
                                               "inventory.v1.ReserveStock"),
                       "%s", parked[0].error);
    free(parked);
    es_config_destroy(rm);
    es_engine_destroy(engine);
    es_config_destroy(cfg);
    free(saga_db);
    tu_rmtree(dir);
    free(dir);
}
