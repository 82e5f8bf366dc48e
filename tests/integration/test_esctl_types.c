/*
 * Types modules as esctl meets them (<eskit/types.h>): esctl knows no message type of its own,
 * so payloads decode and states fold only through the modules named by types.modules or
 * --types. Without one a payload is bytes and one hint line says how to name a module; a bad
 * module is one error line; esctl state folds an aggregate with the module's definition.
 */
#include <criterion/criterion.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "domain.h"
#include "testutil.h"

static char *dir;
static char *db;

static void setup(void) {
    static const char *const vars[] = {
        "ESKIT_DB",      "ESKIT_CONFIG",        "ESKIT_BROKERS",
        "ESKIT_BACKEND", "ESKIT_TYPES_MODULES", "ESKIT_PROJECTOR_PATH"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        unsetenv(vars[i]);
    dir = tu_tempdir();
    cr_assert_not_null(dir);
    db = tu_path(dir, "events.db");
}

static void teardown(void) {
    tu_rmtree(dir);
    free(dir);
    free(db);
}

TestSuite(esctl_types, .init = setup, .fini = teardown, .timeout = 60);

static void assert_one_line(const tu_result *r) {
    cr_expect_eq(tu_count_lines(r->err), 1, "stderr should be one line: %s", r->err);
    cr_expect_eq(strncmp(r->err, "esctl: ", 7), 0, "%s", r->err);
}

/* A file beside esctl (the test types modules are built there). */
static char *beside_esctl(const char *name) {
    char *copy = strdup(ESCTL_PATH);
    char *path = tu_path(dirname(copy), name);
    free(copy);
    return path;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

/* A config file in dir naming the store and the types modules; caller frees. */
static char *write_conf(const char *modules) {
    char *conf = tu_path(dir, "ops.conf"), *text = NULL;
    cr_assert_gt(asprintf(&text, "db = %s\ntypes.modules = %s\n", db, modules), 0);
    write_file(conf, text);
    free(text);
    return conf;
}

/* orders.order/o-1 placed (c-1, 2 x A at 150, 300 EUR) and confirmed, through the engine, so
 * the store also holds its snapshot. */
static void write_order(void) {
    es_config_t *cfg = tu_config(dir, "events.db");
    es_engine_t *engine = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(engine, &err), ES_OK, "%s", err.message);
    Orders__V1__LineItem item = ORDERS__V1__LINE_ITEM__INIT;
    item.sku = "A";
    item.quantity = 2;
    item.unit_price_cents = 150;
    Orders__V1__LineItem *items[] = {&item};
    Orders__V1__PlaceOrder place = ORDERS__V1__PLACE_ORDER__INIT;
    place.customer_id = "c-1";
    place.currency = "EUR";
    place.n_items = 1;
    place.items = items;
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    es_command_t cmds[] = {
        {.aggregate_type = "orders.order", .aggregate_id = "o-1", .message = &place.base},
        {.aggregate_type = "orders.order", .aggregate_id = "o-1", .message = &confirm.base},
    };
    for (size_t i = 0; i < 2; i++)
        cr_assert_eq(es_execute(engine, &cmds[i], NULL, &err), ES_OK, "%s", err.message);
    es_engine_destroy(engine);
    es_config_destroy(cfg);
}

Test(esctl_types, a_module_named_in_types_modules_decodes_payloads) {
    write_order();
    char *conf = write_conf("order_saga_types");
    tu_result r = TU_ESCTL("--config", conf, "events", "orders.order", "o-1");
    cr_expect_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect(strstr(r.out, "customer_id=\"c-1\""), "%s", r.out);
    cr_expect_str_eq(r.err, "");
    tu_result_free(&r);
    /* The environment and a list of several (a path among them) work the same way. */
    char *kitchen = beside_esctl("esctl_test_types.so"), *env = NULL;
    cr_assert_gt(asprintf(&env, "ESKIT_TYPES_MODULES=%s, order_saga_types", kitchen), 0);
    r = TU_ESCTL_ENV(((const char *const[]){env, NULL}), "--db", db, "events", "orders.order",
                     "o-1", "--json");
    cr_expect_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect(strstr(r.out, "\"customerId\": \"c-1\""), "%s", r.out);
    cr_expect_str_eq(r.err, "");
    tu_result_free(&r);
    free(env);
    free(kitchen);
    free(conf);
}

Test(esctl_types, without_a_module_payloads_are_bytes_and_one_hint_line_says_how) {
    write_order();
    tu_result r = TU_ESCTL("--db", db, "events", "orders.order", "o-1");
    cr_expect_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect(strstr(r.out, "payload=<"), "%s", r.out);
    cr_expect(strstr(r.out, "bytes, type not known to esctl>"), "%s", r.out);
    assert_one_line(&r);
    cr_expect(strstr(r.err, "hint: payload types 'orders.v1.OrderPlaced' and others"), "%s", r.err);
    cr_expect(strstr(r.err, "--types") && strstr(r.err, "types.modules") &&
                  strstr(r.err, "<eskit/types.h>"),
              "%s", r.err);
    tu_result_free(&r);
    /* --json keeps stdout clean: the hint is on stderr. */
    r = TU_ESCTL("--db", db, "events", "orders.order", "o-1", "--json");
    cr_expect_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_eq(tu_count_lines(r.out), 2, "%s", r.out);
    cr_expect(strstr(r.out, "\"payload_error\": \"type not known to esctl\""), "%s", r.out);
    assert_one_line(&r);
    tu_result_free(&r);
}

Test(esctl_types, a_module_of_another_abi_is_one_error_line_and_exit_1) {
    write_order();
    char *bad = beside_esctl("esctl_test_types_bad_abi.so");
    tu_result r = TU_ESCTL("--db", db, "--types", bad, "events", "orders.order", "o-1");
    cr_expect_eq(r.status, 1, "stderr: %s", r.err);
    cr_expect_str_eq(r.out, "");
    assert_one_line(&r);
    cr_expect(strstr(r.err, bad) && strstr(r.err, "ABI version 3") && strstr(r.err, "rebuild"),
              "%s", r.err);
    tu_result_free(&r);
    free(bad);
}

Test(esctl_types, a_configured_module_without_the_entry_point_is_one_error_line_naming_the_key) {
    write_order();
    char *lib = tu_path(ESKIT_BINARY_DIR, "core/libeskit.so");
    char *conf = write_conf(lib);
    tu_result r = TU_ESCTL("--config", conf, "state", "orders.order", "o-1");
    cr_expect_eq(r.status, 1, "stderr: %s", r.err);
    cr_expect_str_eq(r.out, "");
    assert_one_line(&r);
    cr_expect(strstr(r.err, lib) && strstr(r.err, "es_types_entry") &&
                  strstr(r.err, "types.modules"),
              "%s", r.err);
    tu_result_free(&r);
    free(conf);
    free(lib);
}

Test(esctl_types, a_module_name_that_is_nowhere_says_where_it_looked) {
    write_order();
    tu_result r = TU_ESCTL("--db", db, "--types", "no_such_types", "events", "orders.order", "o-1");
    cr_expect_eq(r.status, 1, "stderr: %s", r.err);
    assert_one_line(&r);
    cr_expect(strstr(r.err, "no types module 'no_such_types'") && strstr(r.err, "projector.path"),
              "%s", r.err);
    tu_result_free(&r);
}

Test(esctl_types, state_prints_the_folded_state_one_field_a_line_with_its_version) {
    write_order();
    tu_result r =
        TU_ESCTL("--db", db, "--types", "order_saga_types", "state", "orders.order", "o-1");
    cr_expect_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_str_eq(r.err, "");
    cr_expect(!strncmp(r.out, "orders.order/o-1 version 2 (orders.v1.Order)\n", 45), "%s", r.out);
    cr_expect(strstr(r.out, "\nstatus: ORDER_STATUS_CONFIRMED\n"), "%s", r.out);
    cr_expect(strstr(r.out, "\ncustomer_id: \"c-1\"\n"), "%s", r.out);
    cr_expect(strstr(r.out, "\namount_cents: 300\n"), "%s", r.out);
    tu_result_free(&r);
    r = TU_ESCTL("--db", db, "state", "orders.order", "o-1", "--json", "--types",
                 "order_saga_types");
    cr_expect_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_eq(tu_count_lines(r.out), 1, "%s", r.out);
    cr_expect(strstr(r.out, "\"version\": 2") &&
                  strstr(r.out, "\"state_type\": \"orders.v1.Order\"") &&
                  strstr(r.out, "\"status\": \"ORDER_STATUS_CONFIRMED\"") &&
                  strstr(r.out, "\"amountCents\": \"300\""),
              "%s", r.out);
    tu_result_free(&r);
}

Test(esctl_types, state_of_an_aggregate_type_no_module_defines_names_it_and_how_to_add_one) {
    write_order();
    tu_result r =
        TU_ESCTL("--db", db, "--types", "order_saga_types", "state", "acme.widget", "w-1");
    cr_expect_eq(r.status, 1, "stderr: %s", r.err);
    cr_expect_str_eq(r.out, "");
    assert_one_line(&r);
    cr_expect(strstr(r.err, "aggregate type 'acme.widget' is not known to esctl (1 types module "
                            "loaded)") &&
                  strstr(r.err, "--types") && strstr(r.err, "types.modules"),
              "%s", r.err);
    tu_result_free(&r);
}

Test(esctl_types, state_of_an_aggregate_without_events_exits_1_and_creates_nothing) {
    write_order();
    tu_result r =
        TU_ESCTL("--db", db, "--types", "order_saga_types", "state", "orders.order", "o-9");
    cr_expect_eq(r.status, 1, "stderr: %s", r.err);
    assert_one_line(&r);
    cr_expect(strstr(r.err, "no events for orders.order/o-9"), "%s", r.err);
    tu_result_free(&r);
    char *missing = tu_path(dir, "nope.db");
    r = TU_ESCTL("--db", missing, "--types", "order_saga_types", "state", "orders.order", "o-1");
    cr_expect_eq(r.status, 1, "stderr: %s", r.err);
    assert_one_line(&r);
    cr_expect_eq(access(missing, F_OK), -1, "esctl state created %s", missing);
    tu_result_free(&r);
    free(missing);
}
