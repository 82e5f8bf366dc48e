/*
 * esctl as an operator meets it: a real store written by the library, the
 * binary run as a separate process, and its exit codes and output checked.
 */
#include <criterion/criterion.h>
#include <libgen.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "domain.h"
#include "testutil.h"

/* Each test gets its own directory and database; the runner's environment
 * must not leak a store or config into the runs. */
static char *dir;
static char *db;

static void setup(void) {
    /* esctl knows no type of its own: the demo's payloads decode through its types module,
     * found by name beside esctl. */
    setenv("ESKIT_TYPES_MODULES", "order_saga_types", 1);
    unsetenv("ESKIT_DB");
    unsetenv("ESKIT_CONFIG");
    unsetenv("ESKIT_BROKERS");
    unsetenv("ESKIT_BACKEND");
    dir = tu_tempdir();
    cr_assert_not_null(dir);
    db = tu_path(dir, "events.db");
}

static void teardown(void) {
    tu_rmtree(dir);
    free(dir);
    free(db);
}

TestSuite(esctl, .init = setup, .fini = teardown);

typedef tu_result run_result;
#define run_free tu_result_free
#define run_env tu_esctl
#define RUN TU_ESCTL
#define RUN_ENV TU_ESCTL_ENV

/* The n-th line (0-based) of s as a fresh string; caller frees. */
static char *nth_line(const char *s, size_t n) {
    for (; n > 0 && s; n--) {
        s = strchr(s, '\n');
        s = s ? s + 1 : NULL;
    }
    cr_assert_not_null(s, "output has too few lines");
    return strndup(s, strcspn(s, "\n"));
}

static void assert_one_line_error(const run_result *r) {
    cr_expect_eq(tu_count_lines(r->err), 1, "stderr should be one line, got: %s", r->err);
    cr_expect_eq(strncmp(r->err, "esctl: ", 7), 0, "stderr: %s", r->err);
}

static es_store_t *open_store(const char *path) {
    es_config_t *cfg = es_config_new();
    es_store_t *store = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "db", path, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    es_config_destroy(cfg);
    return store;
}

static void append_raw(es_store_t *store, const char *type, const char *id, const char *event_type,
                       const uint8_t *payload, size_t len) {
    es_kv_t meta[] = {{"source", "test \"esctl\""}};
    es_new_event_t ev = {.event_type = event_type,
                         .payload = payload,
                         .payload_len = len,
                         .command_id = "cmd-1",
                         .correlation_id = "corr-1",
                         .metadata = meta,
                         .n_metadata = 1};
    es_error_t err = {0};
    cr_assert_eq(es_store_append(store, type, id, ES_EXPECT_ANY, 0, &ev, 1, NULL, &err), ES_OK,
                 "%s", err.message);
}

static void append_msg(es_store_t *store, const char *type, const char *id,
                       const ProtobufCMessage *msg) {
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len + 1);
    protobuf_c_message_pack(msg, buf);
    append_raw(store, type, id, msg->descriptor->name, buf, len);
    free(buf);
}

/* orders.order/o-1: OrderPlaced (c-1, 2 x A at 150, 300 EUR), then OrderConfirmed. */
static void write_order(const char *path) {
    es_store_t *store = open_store(path);
    Orders__V1__LineItem item = ORDERS__V1__LINE_ITEM__INIT;
    item.sku = "A";
    item.quantity = 2;
    item.unit_price_cents = 150;
    Orders__V1__LineItem *items[] = {&item};
    Orders__V1__OrderPlaced placed = ORDERS__V1__ORDER_PLACED__INIT;
    placed.customer_id = "c-1";
    placed.n_items = 1;
    placed.items = items;
    placed.amount_cents = 300;
    placed.currency = "EUR";
    Orders__V1__OrderConfirmed confirmed = ORDERS__V1__ORDER_CONFIRMED__INIT;
    append_msg(store, "orders.order", "o-1", &placed.base);
    append_msg(store, "orders.order", "o-1", &confirmed.base);
    es_store_destroy(store);
}

Test(esctl, events_prints_an_aggregates_stream_in_version_order) {
    write_order(db);
    run_result r = RUN("--db", db, "events", "orders.order", "o-1");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_eq(tu_count_lines(r.out), 2, "stdout: %s", r.out);
    char *first = nth_line(r.out, 0), *second = nth_line(r.out, 1);
    cr_expect_eq(first[0], '1', "%s", first);
    cr_expect_not_null(strstr(first, "orders.v1.OrderPlaced"), "%s", first);
    cr_expect_not_null(strstr(first, "customer_id=\"c-1\""), "%s", first);
    cr_expect_not_null(strstr(first, "items=[{sku=\"A\" quantity=2 unit_price_cents=150}]"), "%s",
                       first);
    cr_expect_not_null(strstr(first, "amount_cents=300"), "%s", first);
    cr_expect_eq(second[0], '2', "%s", second);
    cr_expect_not_null(strstr(second, "orders.v1.OrderConfirmed"), "%s", second);
    cr_expect_eq(strlen(r.err), 0, "stderr: %s", r.err);
    free(first);
    free(second);
    run_free(&r);
}

Test(esctl, events_prints_times_as_iso_8601_utc_with_milliseconds) {
    write_order(db);
    run_result r = RUN("--db", db, "events", "orders.order", "o-1");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    int y, mo, d, h, mi, s, ms;
    char z = 0;
    int n = sscanf(r.out, "1  %4d-%2d-%2dT%2d:%2d:%2d.%3d%c", &y, &mo, &d, &h, &mi, &s, &ms, &z);
    cr_expect_eq(n, 8, "line: %s", r.out);
    cr_expect_eq(z, 'Z');
    cr_expect_geq(y, 2024);
    run_free(&r);
}

Test(esctl, events_aligns_columns_across_lines) {
    es_store_t *store = open_store(db);
    Inventory__V1__StockAdded added = INVENTORY__V1__STOCK_ADDED__INIT;
    Inventory__V1__StockReserved reserved = INVENTORY__V1__STOCK_RESERVED__INIT;
    for (int i = 0; i < 12; i++) {
        added.quantity = (uint32_t)i;
        reserved.quantity = (uint32_t)i;
        append_msg(store, "inventory.item", "sku-1", i % 2 ? &reserved.base : &added.base);
    }
    es_store_destroy(store);
    run_result r = RUN("--db", db, "events", "inventory.item", "sku-1");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_eq(tu_count_lines(r.out), 12, "stdout: %s", r.out);
    char *first = nth_line(r.out, 0), *last = nth_line(r.out, 11);
    cr_expect_eq(strncmp(first, " 1  ", 4), 0, "%s", first);
    cr_expect_eq(strncmp(last, "12  ", 4), 0, "%s", last);
    /* The payload starts in the same column although the type names differ in length. */
    cr_expect_eq(strstr(first, "quantity=") - first, strstr(last, "order_id=") - last, "\n%s\n%s",
                 first, last);
    free(first);
    free(last);
    run_free(&r);
}

/* The text after `"key": ` in a JSON line, or NULL. */
static const char *json_value(const char *line, const char *key) {
    char pat[128];
    snprintf(pat, sizeof(pat), "\"%s\": ", key);
    const char *p = strstr(line, pat);
    return p ? p + strlen(pat) : NULL;
}

static void expect_json_prefix(const char *line, const char *key, const char *want) {
    const char *v = json_value(line, key);
    cr_expect_not_null(v, "no %s in %s", key, line);
    if (v)
        cr_expect_eq(strncmp(v, want, strlen(want)), 0, "%s: want %s in %s", key, want, line);
}

Test(esctl, events_json_prints_one_object_per_event_with_proto3_payload) {
    write_order(db);
    run_result r = RUN("--db", db, "events", "orders.order", "o-1", "--json");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_eq(tu_count_lines(r.out), 2, "stdout: %s", r.out);
    char *first = nth_line(r.out, 0), *second = nth_line(r.out, 1);
    cr_expect_eq(first[0], '{');
    cr_expect_eq(first[strlen(first) - 1], '}');
    expect_json_prefix(first, "version", "1,");
    expect_json_prefix(first, "aggregate_type", "\"orders.order\"");
    expect_json_prefix(first, "aggregate_id", "\"o-1\"");
    expect_json_prefix(first, "event_type", "\"orders.v1.OrderPlaced\"");
    expect_json_prefix(first, "command_id", "\"cmd-1\"");
    expect_json_prefix(first, "correlation_id", "\"corr-1\"");
    expect_json_prefix(first, "metadata", "{\"source\": \"test \\\"esctl\\\"\"}");
    expect_json_prefix(first, "customerId", "\"c-1\"");
    /* int64 travels as a string in proto3 JSON; uint32 stays a number. */
    expect_json_prefix(first, "amountCents", "\"300\"");
    expect_json_prefix(first, "unitPriceCents", "\"150\"");
    expect_json_prefix(first, "quantity", "2");
    expect_json_prefix(first, "occurred_at", "\"20");
    expect_json_prefix(second, "version", "2,");
    expect_json_prefix(second, "event_type", "\"orders.v1.OrderConfirmed\"");
    expect_json_prefix(second, "payload", "{}");
    free(first);
    free(second);
    run_free(&r);
}

Test(esctl, events_from_starts_at_the_given_version) {
    write_order(db);
    run_result r = RUN("--db", db, "events", "--from", "2", "orders.order", "o-1");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_eq(tu_count_lines(r.out), 1, "stdout: %s", r.out);
    cr_expect_not_null(strstr(r.out, "orders.v1.OrderConfirmed"), "%s", r.out);
    run_free(&r);
}

Test(esctl, an_unknown_aggregate_prints_nothing_and_exits_1) {
    write_order(db);
    run_result r = RUN("--db", db, "events", "orders.order", "o-9");
    cr_expect_eq(r.status, 1);
    cr_expect_eq(strlen(r.out), 0, "stdout: %s", r.out);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, "no events for orders.order/o-9"), "%s", r.err);
    run_free(&r);
}

Test(esctl, a_payload_of_an_unknown_type_is_shown_as_bytes) {
    es_store_t *store = open_store(db);
    const uint8_t raw[] = {0x08, 0x01, 0x10, 0x02};
    append_raw(store, "acme.widget", "w-1", "acme.v1.WidgetMade", raw, sizeof(raw));
    es_store_destroy(store);
    run_result r = RUN("--db", db, "events", "acme.widget", "w-1");
    cr_expect_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_not_null(strstr(r.out, "payload=<4 bytes, type not known to esctl>"), "%s", r.out);
    /* And one line on stderr saying how to make it known. */
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, "hint: payload type 'acme.v1.WidgetMade' is not known"), "%s",
                       r.err);
    cr_expect_not_null(strstr(r.err, "--types"), "%s", r.err);
    run_free(&r);
    r = RUN("--db", db, "events", "acme.widget", "w-1", "--json");
    cr_expect_eq(r.status, 0, "stderr: %s", r.err);
    expect_json_prefix(r.out, "payload_base64", "\"CAEQAg==\"");
    run_free(&r);
}

Test(esctl, an_undecodable_payload_is_reported_on_its_line_and_exits_1) {
    write_order(db);
    es_store_t *store = open_store(db);
    /* Field 1 claims 16 bytes and has 1: no parser accepts that. */
    const uint8_t bad[] = {0x0a, 0x10, 0x61};
    append_raw(store, "orders.order", "o-1", "orders.v1.OrderCancelled", bad, sizeof(bad));
    es_store_destroy(store);
    run_result r = RUN("--db", db, "events", "orders.order", "o-1");
    cr_expect_eq(r.status, 1);
    cr_expect_eq(tu_count_lines(r.out), 3, "every event is still printed: %s", r.out);
    char *third = nth_line(r.out, 2);
    cr_expect_not_null(strstr(third, "cannot be decoded as orders.v1.OrderCancelled"), "%s", third);
    assert_one_line_error(&r);
    free(third);
    run_free(&r);
    r = RUN("--db", db, "events", "orders.order", "o-1", "--json");
    cr_expect_eq(r.status, 1);
    third = nth_line(r.out, 2);
    expect_json_prefix(third, "payload_base64", "\"ChBh\"");
    free(third);
    run_free(&r);
}

static char *test_types_module(void) {
    char *copy = strdup(ESCTL_PATH);
    char *path = tu_path(dirname(copy), "esctl_test_types.so");
    free(copy);
    return path;
}

/* An esctl.test.v1.Kitchen, encoded by hand: i64 = -1, text = "hi",
 * mood = MOOD_GRUMPY, counts = {"k1": 5}, choice_inner = {label: "x"}. */
static const uint8_t kitchen[] = {
    0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, /* i64 */
    0x5a, 0x02, 'h',  'i',                                            /* text */
    0x68, 0x02,                                                       /* mood */
    0x92, 0x01, 0x06, 0x0a, 0x02, 'k',  '1',  0x10, 0x05,             /* counts */
    0xa2, 0x01, 0x03, 0x0a, 0x01, 'x',                                /* choice_inner */
};

Test(esctl, types_module_adds_payload_types) {
    es_store_t *store = open_store(db);
    append_raw(store, "kitchen.sink", "k-1", "esctl.test.v1.Kitchen", kitchen, sizeof(kitchen));
    es_store_destroy(store);
    char *module = test_types_module();
    run_result r = RUN("--db", db, "events", "kitchen.sink", "k-1");
    cr_expect_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_not_null(strstr(r.out, "type not known to esctl"), "%s", r.out);
    run_free(&r);
    r = RUN("--db", db, "--types", module, "events", "kitchen.sink", "k-1");
    cr_expect_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_not_null(strstr(r.out, "i64=-1 "), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "text=\"hi\""), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "mood=MOOD_GRUMPY"), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "counts={\"k1\": 5}"), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "choice_inner={label=\"x\" delta=0}"), "%s", r.out);
    run_free(&r);
    r = RUN("--db", db, "events", "kitchen.sink", "k-1", "--json", "--types", module);
    cr_expect_eq(r.status, 0, "stderr: %s", r.err);
    expect_json_prefix(r.out, "payload",
                       "{\"i64\": \"-1\", \"text\": \"hi\", \"mood\": \"MOOD_GRUMPY\", "
                       "\"counts\": {\"k1\": \"5\"}, \"choiceInner\": {\"label\": \"x\"}}}");
    run_free(&r);
    free(module);
}

Test(esctl, types_module_without_the_symbol_is_refused_naming_the_file) {
    write_order(db);
    char *lib = tu_path(ESKIT_BINARY_DIR, "core/libeskit.so");
    struct stat st;
    cr_assert_eq(stat(lib, &st), 0, "expected the library at %s", lib);
    run_result r = RUN("--db", db, "--types", lib, "events", "orders.order", "o-1");
    cr_expect_eq(r.status, 1);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, lib), "%s", r.err);
    cr_expect_not_null(strstr(r.err, "es_types"), "%s", r.err);
    run_free(&r);
    r = RUN("--db", db, "--types", "/nonexistent/types.so", "events", "orders.order", "o-1");
    cr_expect_eq(r.status, 1);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, "/nonexistent/types.so"), "%s", r.err);
    run_free(&r);
    free(lib);
}

Test(esctl, help_exits_0_and_describes_events) {
    const char *forms[][3] = {{"--help", NULL, NULL}, {"-h", NULL, NULL},
                              {"help", NULL, NULL},   {"help", "events", NULL},
                              {"events", "--help"},   {"--version", NULL, NULL}};
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        run_result r = run_env(NULL, forms[i]);
        cr_expect_eq(r.status, 0, "esctl %s %s: %s", forms[i][0], forms[i][1], r.err);
        cr_expect_gt(strlen(r.out), 0);
        cr_expect_eq(strlen(r.err), 0, "%s", r.err);
        if (i < 5)
            cr_expect_not_null(strstr(r.out, "events"), "%s", r.out);
        run_free(&r);
    }
}

Test(esctl, an_unknown_command_exits_2_with_one_line) {
    run_result r = RUN("frobnicate");
    cr_expect_eq(r.status, 2);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, "'frobnicate'"), "%s", r.err);
    cr_expect_eq(strlen(r.out), 0);
    run_free(&r);
}

Test(esctl, no_arguments_exit_2_with_one_line) {
    const char *none[] = {NULL};
    run_result r = run_env(NULL, none);
    cr_expect_eq(r.status, 2);
    assert_one_line_error(&r);
    run_free(&r);
}

Test(esctl, an_unknown_option_exits_2_naming_it_and_the_command) {
    run_result r = RUN("events", "orders.order", "o-1", "--foo");
    cr_expect_eq(r.status, 2);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, "unknown option '--foo' for 'events'"), "%s", r.err);
    cr_expect_not_null(strstr(r.err, "esctl events --help"), "%s", r.err);
    run_free(&r);
}

Test(esctl, missing_arguments_exit_2) {
    const char *const forms[][5] = {{"events", NULL},
                                    {"events", "orders.order", NULL},
                                    {"--db", NULL},
                                    {"events", "orders.order", "o-1", "--from"}};
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        run_result r = run_env(NULL, forms[i]);
        cr_expect_eq(r.status, 2, "case %zu: %s", i, r.err);
        assert_one_line_error(&r);
        run_free(&r);
    }
}

Test(esctl, a_bad_version_number_exits_2) {
    const char *bad[] = {"abc", "-1", "1x", "", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        run_result r = RUN("--db", db, "events", "orders.order", "o-1", "--from", bad[i]);
        cr_expect_eq(r.status, 2, "--from '%s': %s", bad[i], r.err);
        assert_one_line_error(&r);
        run_free(&r);
    }
}

Test(esctl, an_invalid_aggregate_type_exits_2_naming_it) {
    write_order(db);
    run_result r = RUN("--db", db, "events", "Orders_Order", "o-1");
    cr_expect_eq(r.status, 2);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, "Orders_Order"), "%s", r.err);
    run_free(&r);
    r = RUN("--db", db, "events", "orders.order", "o\n1");
    cr_expect_eq(r.status, 2);
    assert_one_line_error(&r);
    run_free(&r);
}

Test(esctl, eskit_db_is_used_without_db_flag) {
    write_order(db);
    char *env_db = NULL;
    cr_assert_gt(asprintf(&env_db, "ESKIT_DB=%s", db), 0);
    const char *env[] = {env_db, NULL};
    run_result r = RUN_ENV(env, "events", "orders.order", "o-1");
    cr_expect_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_eq(tu_count_lines(r.out), 2, "%s", r.out);
    run_free(&r);
    free(env_db);
}

Test(esctl, db_flag_overrides_eskit_db) {
    write_order(db);
    char *other = tu_path(dir, "other.db"), *env_db = NULL;
    cr_assert_gt(asprintf(&env_db, "ESKIT_DB=%s", other), 0);
    const char *env[] = {env_db, NULL};
    run_result r = RUN_ENV(env, "--db", db, "events", "orders.order", "o-1");
    cr_expect_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_eq(tu_count_lines(r.out), 2, "%s", r.out);
    run_free(&r);
    free(env_db);
    free(other);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

/* Runs "esctl <args>" from directory cwd through a shell. */
static run_result run_in(const char *cwd, const char *args) {
    char *script = NULL;
    cr_assert_gt(asprintf(&script, "cd '%s' && exec '%s' %s", cwd, ESCTL_PATH, args), 0);
    const char *argv[] = {"/bin/sh", "-c", script, NULL};
    run_result r = {0};
    r.status = tu_run(argv, NULL, &r.out, &r.err);
    free(script);
    return r;
}

static void expect_the_order(run_result r, const char *form) {
    cr_expect_eq(r.status, 0, "%s: stderr: %s", form, r.err);
    cr_expect_eq(tu_count_lines(r.out), 2, "%s: %s", form, r.out);
    cr_expect_eq(strlen(r.err), 0, "%s: stderr: %s", form, r.err);
    run_free(&r);
}

/* The README puts global options before the verb; after it, and between the verb and its
 * arguments, they mean the same. */
Test(esctl, global_options_work_after_the_verb_too) {
    write_order(db);
    char *conf = tu_path(dir, "ops.conf"), *text = NULL;
    cr_assert_gt(asprintf(&text, "db = %s\n", db), 0);
    write_file(conf, text);
    expect_the_order(RUN("events", "orders.order", "o-1", "--db", db), "--db last");
    expect_the_order(RUN("events", "--db", db, "orders.order", "o-1"), "--db after the verb");
    expect_the_order(RUN("events", "orders.order", "o-1", "--config", conf), "--config last");
    free(text);
    free(conf);
}

Test(esctl, eskit_conf_in_the_working_directory_is_used) {
    write_order(db);
    char *conf = tu_path(dir, "eskit.conf");
    write_file(conf, "# the operator's defaults\ndb = events.db\n");
    run_result r = run_in(dir, "events orders.order o-1");
    cr_expect_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_eq(tu_count_lines(r.out), 2, "%s", r.out);
    run_free(&r);
    free(conf);
}

Test(esctl, config_flag_names_the_config_file) {
    write_order(db);
    char *conf = tu_path(dir, "ops.conf"), *args = NULL;
    char *line = NULL;
    cr_assert_gt(asprintf(&line, "db = %s\n", db), 0);
    write_file(conf, line);
    cr_assert_gt(asprintf(&args, "--config '%s' events orders.order o-1", conf), 0);
    run_result r = run_in("/", args);
    cr_expect_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_eq(tu_count_lines(r.out), 2, "%s", r.out);
    run_free(&r);
    free(conf);
    free(args);
    free(line);
}

Test(esctl, an_unknown_key_in_eskit_conf_fails_naming_the_key) {
    write_order(db);
    char *conf = tu_path(dir, "eskit.conf");
    write_file(conf, "db = events.db\ncolour = blue\n");
    run_result r = run_in(dir, "events orders.order o-1");
    cr_expect_neq(r.status, 0);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, "colour"), "%s", r.err);
    run_free(&r);
    free(conf);
}

Test(esctl, a_missing_database_exits_1_naming_it_and_is_not_created) {
    char *missing = tu_path(dir, "nope.db");
    run_result r = RUN("--db", missing, "events", "orders.order", "o-1");
    cr_expect_eq(r.status, 1);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, missing), "%s", r.err);
    cr_expect_eq(access(missing, F_OK), -1, "esctl created %s", missing);
    run_free(&r);
    free(missing);
}

/* The value of key in the "storage" object of topic's line in a plan's JSON, as a fresh string
 * (up to the next ',' or '}'). */
static char *storage_value(const char *json, const char *topic, const char *key) {
    char pat[128];
    snprintf(pat, sizeof pat, "{\"topic\": \"%s\"", topic);
    const char *line = strstr(json, pat);
    cr_assert_not_null(line, "no %s in %s", topic, json);
    size_t len = strcspn(line, "\n");
    const char *st = strstr(line, "\"storage\": ");
    cr_assert(st && st < line + len, "no storage for %s in %.*s", topic, (int)len, line);
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *v = strstr(st, pat);
    cr_assert(v && v < line + len, "no %s for %s in %.*s", key, topic, (int)len, line);
    v += strlen(pat);
    return strndup(v, strcspn(v, ",}"));
}

static void expect_value(const char *json, const char *topic, const char *key, const char *want) {
    char *got = storage_value(json, topic, key);
    cr_expect_str_eq(got, want, "%s %s", topic, key);
    free(got);
}

/* The number as esctl prints it: %.15g, or whole (%.0f) for byte counts. */
static void expect_number(const char *json, const char *topic, const char *key, bool whole,
                          double want) {
    char text[64];
    if (whole)
        snprintf(text, sizeof text, "%.0f", want);
    else
        snprintf(text, sizeof text, "%.15g", want);
    expect_value(json, topic, key, text);
}

typedef struct log_span {
    long long n;
    int64_t first, last;
} log_span;

static int note_span(const es_event_t *ev, void *opaque) {
    log_span *s = opaque;
    if (s->n++ == 0)
        s->first = ev->occurred_at_us;
    s->last = ev->occurred_at_us;
    return 0;
}

/* How many events of type the log at path holds, and their first and last occurred_at. */
static log_span span_of(const char *path, const char *type) {
    es_store_t *store = open_store(path);
    const char *types[] = {type, NULL};
    log_span s = {0};
    cr_assert_eq(es_store_read_log(store, types, 0, 0, note_span, &s, NULL, NULL), ES_OK);
    es_store_destroy(store);
    return s;
}

/* The bytes the store keeps for the events of type: their envelopes. */
static long long stored_bytes(const char *path, const char *type) {
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT sum(length(e.envelope)) FROM es_events e JOIN es_types t ON t.id = e.type_id "
             "WHERE t.name = '%s'",
             type);
    return tu_query_int(path, sql);
}

Test(esctl, topics_plan_from_log_sizes_each_type_by_the_events_the_test_wrote) {
    es_store_t *store = open_store(db);
    uint8_t small[100], big[300];
    memset(small, 's', sizeof small);
    memset(big, 'b', sizeof big);
    for (int i = 0; i < 6; i++) {
        append_raw(store, "orders.order", i % 2 ? "o-1" : "o-2", "orders.v1.Noted", small,
                   sizeof small);
        if (i % 2 == 0)
            append_raw(store, "payments.payment", "p-1", "payments.v1.Noted", big, sizeof big);
    }
    es_store_destroy(store);

    run_result r = RUN("--db", db, "topics", "plan", "--json", "--brokers", "3", "--from-log",
                       "orders.order", "payments.payment");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    const char *types[] = {"orders.order", "payments.payment"};
    const long long counts[] = {6, 3};
    for (size_t t = 0; t < 2; t++) {
        log_span s = span_of(db, types[t]);
        cr_assert_eq(s.n, counts[t]);
        /* A log younger than a day: its rate from the first event to the last. */
        double rate = s.last > s.first
                          ? (double)(s.n - 1) * (24.0 * 3600 * 1000000) / (double)(s.last - s.first)
                          : (double)s.n;
        double bytes = (double)stored_bytes(db, types[t]) / (double)s.n;
        double per_day = rate * bytes * 3;
        char ev[64], cmd[64], dlq[64];
        snprintf(ev, sizeof ev, "%s.events", types[t]);
        snprintf(cmd, sizeof cmd, "%s.commands", types[t]);
        snprintf(dlq, sizeof dlq, "%s.events.dlq", types[t]);
        expect_value(r.out, ev, "kind", "\"forever\"");
        expect_value(r.out, ev, "rate_source", "\"measured\"");
        expect_number(r.out, ev, "records_measured", true, (double)counts[t]);
        expect_number(r.out, ev, "records_per_day", false, rate);
        expect_number(r.out, ev, "record_bytes", false, bytes);
        expect_number(r.out, ev, "bytes_per_day", true, per_day);
        expect_value(r.out, ev, "bytes_retained", "null");
        expect_number(r.out, ev, "bytes_per_year", true, per_day * 365);
        /* The type's commands are taken to match its events, for their 7 days. */
        expect_number(r.out, cmd, "bytes_per_day", true, per_day);
        expect_number(r.out, cmd, "bytes_retained", true, per_day * 7);
        char pat[96];
        snprintf(pat, sizeof pat, "{\"topic\": \"%s\"", dlq);
        const char *line = strstr(r.out, pat);
        cr_assert(line && strstr(line, "\"storage\": null}"), "the DLQ is not sized: %s", r.out);
    }
    run_free(&r);
}

Test(esctl, topics_plan_sizes_a_given_record_size_and_rate_exactly) {
    run_result r = RUN("topics", "plan", "--json", "--brokers", "3", "--record-bytes", "250",
                       "--records-per-day", "1000", "orders.order");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    expect_value(r.out, "orders.order.events", "rate_source", "\"given\"");
    expect_value(r.out, "orders.order.events", "bytes_per_day", "750000");
    expect_value(r.out, "orders.order.events", "bytes_per_year", "273750000");
    expect_value(r.out, "orders.order.commands", "bytes_retained", "5250000");
    expect_value(r.out, "orders.order.replies", "bytes_retained", "750000");
    expect_value(r.out, "orders.order.snapshots", "kind", "\"compacted\"");
    expect_value(r.out, "orders.order.snapshots", "bytes_retained", "null");
    run_free(&r);

    r = RUN("topics", "plan", "--brokers", "3", "--record-bytes", "250", "--records-per-day",
            "1000", "orders.order");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert(strstr(r.out, "RECORDS/DAY") && strstr(r.out, "AT RETENTION"), "%s", r.out);
    const char *ev = strstr(r.out, "\norders.order.events ");
    cr_assert(ev && strstr(ev, "1000 ") && strstr(ev, "732.4 KiB") &&
                  strstr(ev, "forever: 261.1 MiB/year"),
              "%s", r.out);
    const char *cmd = strstr(r.out, "\norders.order.commands ");
    cr_assert(cmd && strstr(cmd, "5.0 MiB"), "%s", r.out);
    run_free(&r);
}

Test(esctl, topics_plan_without_a_rate_sizes_by_the_peak_events_per_second) {
    run_result r = RUN("topics", "plan", "--json", "--brokers", "1", "--record-bytes", "100",
                       "orders.order:2");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    expect_value(r.out, "orders.order.events", "rate_source", "\"peak\"");
    expect_value(r.out, "orders.order.events", "records_per_day", "172800");
    expect_value(r.out, "orders.order.events", "bytes_per_day", "17280000");
    run_free(&r);
}

Test(esctl, topics_plan_from_log_of_a_missing_store_fails_with_one_line) {
    run_result r =
        RUN("--db", db, "topics", "plan", "--from-log", "--brokers", "1", "orders.order");
    cr_assert_eq(r.status, 1, "stderr: %s", r.err);
    assert_one_line_error(&r);
    cr_expect(strstr(r.err, "orders.order.events"), "%s", r.err);
    cr_expect_str_empty(r.out);
    run_free(&r);
}

/* The service's eskit.conf (here: the environment) may name the service's metrics port: esctl
 * serves no metrics, so it neither takes that port nor fails because the service holds it. */
Test(esctl, a_metrics_listen_of_the_config_is_not_served_by_esctl) {
    write_order(db);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(fd, 1), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    char *listen_env = NULL, *read = tu_path(dir, "read.db");
    cr_assert_gt(asprintf(&listen_env, "ESKIT_METRICS_LISTEN=127.0.0.1:%d", ntohs(sa.sin_port)), 0);
    const char *env[] = {listen_env, NULL};
    run_result r = RUN_ENV(env, "--db", db, "--readmodel", read, "replay", "order_summary");
    cr_expect_eq(r.status, 0, "stderr: %s", r.err);
    run_free(&r);
    close(fd);
    free(listen_env);
    free(read);
}
