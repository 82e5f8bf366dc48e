/*
 * Messages quote ids, reasons and data; whatever those hold, an error message, a rejection
 * reason and a logged line stay one line of text: control characters and bytes that are not
 * UTF-8 arrive escaped (\n, \r, \t, \xNN), UTF-8 text and backslashes as they were.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain.h"
#include "internal.h"
#include "testutil.h"

static char *dir;

static void setup(void) {
    dir = tu_tempdir();
}

static void teardown(void) {
    tu_rmtree(dir);
    free(dir);
}

TestSuite(messages, .init = setup, .fini = teardown);

static void assert_one_line(const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        cr_assert(*p >= 0x20 && *p != 0x7f, "control byte 0x%02x in: %s", *p, s);
}

typedef struct lines {
    int n;
    char last[1100];
} lines;

static void collect(int level, const char *message, void *opaque) {
    lines *l = opaque;
    (void)level;
    l->n++;
    snprintf(l->last, sizeof l->last, "%s", message);
}

Test(messages, a_logged_line_quoting_a_newline_or_an_escape_reaches_the_log_callback_as_one_line) {
    es_config_t *cfg = es_config_new();
    lines l = {0};
    es_config_set_log_cb(cfg, collect, &l);
    es_logf(cfg, ES_LOG_WARNING, "command %s: %s", "c\n1",
            "no\r\n2026-01-01 INFO forged line \x1b[2J\xc2\x9b\xff");
    cr_assert_eq(l.n, 1);
    assert_one_line(l.last);
    cr_assert_str_eq(l.last, "command c\\n1: no\\r\\n2026-01-01 INFO forged line \\x1b[2J"
                             "\\xc2\\x9b\\xff");
    es_config_destroy(cfg);
}

Test(messages, escaping_keeps_utf8_text_and_backslashes_and_changes_nothing_the_second_time) {
    es_error_t err = {0};
    es_fail(&err, ES_EINVAL, "id '%s' in %s", "b\xc3\xa4r-\xe2\x82\xac\t", "C:\\dir");
    cr_assert_str_eq(err.message, "id 'b\xc3\xa4r-\xe2\x82\xac\\t' in C:\\dir");
    char again[sizeof err.message];
    memcpy(again, err.message, sizeof again);
    es_fail(&err, ES_EINVAL, "%s", again);
    cr_assert_str_eq(err.message, again);
    es_error_prefix(&err, "loading %s: ", "o\n1");
    cr_assert_str_eq(err.message, "loading o\\n1: id 'b\xc3\xa4r-\xe2\x82\xac\\t' in C:\\dir");
}

Test(messages, a_message_too_long_for_its_buffer_is_cut_between_escapes_never_inside_one) {
    char data[600];
    memset(data, '\n', sizeof data - 1);
    data[sizeof data - 1] = '\0';
    es_error_t err = {0};
    es_fail(&err, ES_EINVAL, "x%s", data);
    size_t len = strlen(err.message);
    cr_assert_lt(len, sizeof err.message);
    cr_assert_eq((len - 1) % 2, 0, "whole escapes only: %zu bytes", len);
    cr_assert_eq(err.message[len - 1], 'n', "%s", err.message + len - 4);
    assert_one_line(err.message);
}

/* orders.order with a decider that quotes its input into reasons and errors. */
static es_err talky_decide(const ProtobufCMessage *state, const ProtobufCMessage *cmd,
                           es_decision_t *d, void *opaque) {
    (void)state, (void)opaque;
    const Orders__V1__CancelOrder *c = (const Orders__V1__CancelOrder *)cmd;
    return es_reject(d, "cannot cancel: %s", c->reason);
}

static es_err ok_evolve(ProtobufCMessage *state, const ProtobufCMessage *ev, void *opaque,
                        es_error_t *err) {
    (void)state, (void)ev, (void)opaque, (void)err;
    return ES_OK;
}

static es_err talky_evolve(ProtobufCMessage *state, const ProtobufCMessage *ev, void *opaque,
                           es_error_t *err) {
    (void)state, (void)ev, (void)opaque;
    return es_fail(err, ES_EINVAL, "evolve says:\nINFO all good");
}

Test(messages, a_deciders_reason_or_error_with_a_newline_is_one_line_in_results_and_logs) {
    es_config_t *cfg = tu_config(dir, "m.db");
    es_engine_t *engine = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "%s", err.message);
    static const ProtobufCMessageDescriptor *const commands[] = {
        &orders__v1__cancel_order__descriptor, NULL};
    static const ProtobufCMessageDescriptor *const events[] = {
        &orders__v1__order_confirmed__descriptor, NULL};
    es_aggregate_def def = {.abi_version = ES_AGGREGATE_ABI,
                            .type = "orders.order",
                            .state = &orders__v1__order__descriptor,
                            .commands = commands,
                            .decide = talky_decide,
                            .events = events,
                            .evolve = ok_evolve};
    cr_assert_eq(es_engine_register(engine, &def, NULL, &err), ES_OK, "%s", err.message);
    Orders__V1__CancelOrder cancel = ORDERS__V1__CANCEL_ORDER__INIT;
    cancel.reason = "because\nERROR forged \x1b[31m";
    es_command_t cmd = {
        .aggregate_type = "orders.order", .aggregate_id = "o-1", .message = &cancel.base};
    es_result_t res;
    cr_assert_eq(es_execute(engine, &cmd, &res, &err), ES_EREJECTED);
    cr_assert_str_eq(res.reason, "cannot cancel: because\\nERROR forged \\x1b[31m");
    cr_assert_str_eq(err.message, res.reason);
    es_result_clear(&res);
    es_engine_destroy(engine);

    es_new_event_t ev = {"orders.v1.OrderConfirmed", (const uint8_t *)"", 0, NULL, NULL, NULL, 0};
    es_store_t *store = NULL;
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    cr_assert_eq(
        es_store_append(store, "orders.order", "o-2", ES_EXPECT_ANY, 0, &ev, 1, NULL, &err), ES_OK,
        "%s", err.message);
    es_store_destroy(store);
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "%s", err.message);
    def.evolve = talky_evolve;
    cr_assert_eq(es_engine_register(engine, &def, NULL, &err), ES_OK, "%s", err.message);
    cmd.aggregate_id = "o-2";
    cr_assert_eq(es_execute(engine, &cmd, &res, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "evolve says:\\nINFO all good"), "%s", err.message);
    assert_one_line(err.message);
    assert_one_line(res.reason);
    es_result_clear(&res);
    es_engine_destroy(engine);

    lines l = {0};
    es_config_set_log_cb(cfg, collect, &l);
    es_logf(cfg, ES_LOG_WARNING, "rejected: %s", cancel.reason);
    cr_assert_eq(l.n, 1);
    assert_one_line(l.last);
    es_config_destroy(cfg);
}
