/*
 * The saga queries' pure parts: the history's aggregate type, decoding a
 * transition record (garbage included), and argument checks that come before
 * any database is opened.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "eskit/v1/saga.pb-c.h"
#include "saga_int.h"

static uint8_t *pack(const Eskit__V1__SagaTransition *t, size_t *len) {
    *len = eskit__v1__saga_transition__get_packed_size(t);
    uint8_t *buf = malloc(*len + 1);
    cr_assert_not_null(buf);
    eskit__v1__saga_transition__pack(t, buf);
    return buf;
}

Test(saga_query, history_type_is_the_saga_name_with_saga_appended) {
    char type[ES_MAX_TYPE_LEN + 1];
    es_error_t err = {0};
    cr_assert_eq(es_saga_history_type("orders.fulfilment", type, sizeof type, &err), ES_OK, "%s",
                 err.message);
    cr_expect_str_eq(type, "orders.fulfilment.saga");
}

Test(saga_query, an_invalid_saga_name_has_no_history_type) {
    const char *bad[] = {"", "orders", "Orders.fulfilment", "orders..x", "orders.ful_filment"};
    char type[ES_MAX_TYPE_LEN + 1];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        es_error_t err = {0};
        cr_expect_eq(es_saga_history_type(bad[i], type, sizeof type, &err), ES_EINVAL, "%s",
                     bad[i]);
        cr_expect_not_null(strstr(err.message, "not a saga name"), "%s", err.message);
        cr_expect_str_eq(type, "");
    }
    char longname[ES_MAX_TYPE_LEN];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    longname[3] = '.'; /* valid as a type, but too long once ".saga" is added */
    es_error_t err = {0};
    cr_expect_eq(es_saga_history_type(longname, type, sizeof type, &err), ES_EINVAL);
    cr_expect_eq(es_saga_history_type(NULL, type, sizeof type, &err), ES_EINVAL);
}

Test(saga_query, a_record_decodes_with_its_state_named) {
    Eskit__V1__SagaTransition t = ESKIT__V1__SAGA_TRANSITION__INIT;
    t.saga = "orders.fulfilment";
    t.instance_id = "o-1";
    t.kind = "step_failed";
    t.state = ESKIT__V1__SAGA_STATE__SAGA_STATE_COMPENSATING;
    t.step = "authorize-payment";
    t.step_index = 1;
    t.command_id = "orders.fulfilment/o-1/1.0/do";
    t.command_type = "payments.v1.AuthorizePayment";
    t.aggregate_type = "payments.payment";
    t.aggregate_id = "p-1";
    t.event_type = "payments.v1.PaymentDeclined";
    t.event_id = "01890000-0000-7000-8000-000000000001";
    t.reason = "card declined";
    t.deadline_us = 42;
    t.at_us = 7;
    size_t len = 0;
    uint8_t *buf = pack(&t, &len);
    es_saga_record_t r;
    es_error_t err = {0};
    cr_assert_eq(es_saga_record_decode(buf, len, 3, &r, &err), ES_OK, "%s", err.message);
    cr_expect_eq(r.seq, 3);
    cr_expect_eq(r.at_us, 7);
    cr_expect_str_eq(r.kind, "step_failed");
    cr_expect_str_eq(r.state, ES_SAGA_COMPENSATING);
    cr_expect_str_eq(r.step, "authorize-payment");
    cr_expect_eq(r.step_index, 1);
    cr_expect_str_eq(r.command_id, "orders.fulfilment/o-1/1.0/do");
    cr_expect_str_eq(r.command_type, "payments.v1.AuthorizePayment");
    cr_expect_str_eq(r.aggregate_type, "payments.payment");
    cr_expect_str_eq(r.aggregate_id, "p-1");
    cr_expect_str_eq(r.event_type, "payments.v1.PaymentDeclined");
    cr_expect_str_eq(r.event_id, "01890000-0000-7000-8000-000000000001");
    cr_expect_str_eq(r.reason, "card declined");
    cr_expect_eq(r.deadline_us, 42);
    free(buf);

    const Eskit__V1__SagaState states[] = {
        ESKIT__V1__SAGA_STATE__SAGA_STATE_RUNNING, ESKIT__V1__SAGA_STATE__SAGA_STATE_COMPLETED,
        ESKIT__V1__SAGA_STATE__SAGA_STATE_ABORTED, ESKIT__V1__SAGA_STATE__SAGA_STATE_FAILED};
    const char *names[] = {ES_SAGA_RUNNING, ES_SAGA_COMPLETED, ES_SAGA_ABORTED, ES_SAGA_FAILED};
    for (size_t i = 0; i < 4; i++) {
        t.state = states[i];
        buf = pack(&t, &len);
        cr_assert_eq(es_saga_record_decode(buf, len, 1, &r, &err), ES_OK, "%s", err.message);
        cr_expect_str_eq(r.state, names[i]);
        free(buf);
    }
}

Test(saga_query, long_strings_are_truncated_not_overflowed) {
    char reason[2000], id[1000];
    memset(reason, 'r', sizeof reason - 1);
    reason[sizeof reason - 1] = '\0';
    memset(id, 'i', sizeof id - 1);
    id[sizeof id - 1] = '\0';
    Eskit__V1__SagaTransition t = ESKIT__V1__SAGA_TRANSITION__INIT;
    t.kind = "aborted";
    t.reason = reason;
    t.aggregate_id = id;
    t.event_id = id;
    size_t len = 0;
    uint8_t *buf = pack(&t, &len);
    es_saga_record_t r;
    cr_assert_eq(es_saga_record_decode(buf, len, 1, &r, NULL), ES_OK);
    cr_expect_eq(strlen(r.reason), sizeof r.reason - 1);
    cr_expect_eq(strlen(r.aggregate_id), sizeof r.aggregate_id - 1);
    cr_expect_eq(strlen(r.event_id), sizeof r.event_id - 1);
    free(buf);
}

Test(saga_query, garbage_bytes_are_a_decode_error_never_a_crash) {
    Eskit__V1__SagaTransition t = ESKIT__V1__SAGA_TRANSITION__INIT;
    t.saga = "orders.fulfilment";
    t.instance_id = "o-1";
    t.kind = "started";
    t.reason = "a reason long enough to be cut in the middle of its bytes";
    size_t len = 0;
    uint8_t *good = pack(&t, &len);
    es_saga_record_t r;
    es_error_t err = {0};
    /* Every truncation of a valid record either fails to decode or decodes fully. */
    for (size_t cut = 1; cut < len; cut++) {
        es_err e = es_saga_record_decode(good, cut, 9, &r, &err);
        cr_expect(e == ES_OK || e == ES_EDECODE, "cut at %zu: %s", cut, es_strerror(e));
    }
    free(good);

    static const uint8_t invalid_wire_type[] = {0x0f, 0x01};
    static const uint8_t overlong_length[] = {0x1a, 0xff, 0xff, 0xff, 0xff, 0x0f, 'x'};
    static const uint8_t endless_varint[] = {0x20, 0xff, 0xff, 0xff, 0xff, 0xff,
                                             0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    struct {
        const uint8_t *b;
        size_t n;
    } bad[] = {{invalid_wire_type, sizeof invalid_wire_type},
               {overlong_length, sizeof overlong_length},
               {endless_varint, sizeof endless_varint}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(&err, 0, sizeof err);
        cr_expect_eq(es_saga_record_decode(bad[i].b, bad[i].n, 9, &r, &err), ES_EDECODE, "%zu", i);
        cr_expect_not_null(strstr(err.message, "saga transition 9"), "%s", err.message);
        cr_expect_not_null(strstr(err.message, "eskit.v1.SagaTransition"), "%s", err.message);
    }

    srand(7);
    uint8_t noise[64];
    for (int round = 0; round < 2000; round++) {
        size_t n = (size_t)(rand() % (int)sizeof noise);
        for (size_t i = 0; i < n; i++)
            noise[i] = (uint8_t)rand();
        es_err e = es_saga_record_decode(noise, n, 1, &r, &err);
        cr_expect(e == ES_OK || e == ES_EDECODE, "%s", es_strerror(e));
    }
}

Test(saga_query, a_record_without_a_kind_is_not_a_transition) {
    es_saga_record_t r;
    es_error_t err = {0};
    cr_expect_eq(es_saga_record_decode((const uint8_t *)"", 0, 2, &r, &err), ES_EDECODE);
    cr_expect_not_null(strstr(err.message, "without a kind"), "%s", err.message);
    cr_expect_eq(es_saga_record_decode(NULL, 4, 2, &r, &err), ES_EINVAL);
}

Test(saga_query, list_refuses_an_unknown_state_naming_the_valid_ones) {
    es_config_t *cfg = es_config_new();
    es_saga_info_t *out = NULL;
    size_t n = 7;
    es_error_t err = {0};
    cr_expect_eq(es_saga_list(cfg, NULL, "stuck", &out, &n, &err), ES_EINVAL);
    cr_expect_not_null(strstr(err.message, "running, compensating, completed, aborted, failed"),
                       "%s", err.message);
    cr_expect_null(out);
    cr_expect_eq(n, 0);
    cr_expect_eq(es_saga_list(cfg, "nodot", NULL, &out, &n, &err), ES_EINVAL);
    es_config_destroy(cfg);
}

Test(saga_query, saga_keys_are_config_keys_with_defaults) {
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_expect_str_eq(es_config_get(cfg, "saga.db"), "eskit-saga.db");
    cr_expect_eq(es_config_set(cfg, "saga.db", "", &err), ES_EINVAL);
    cr_expect_eq(es_config_set(cfg, "saga.db", "s.db", &err), ES_OK, "%s", err.message);
    cr_expect_str_eq(es_config_get(cfg, "saga.db"), "s.db");
    cr_expect_eq(es_config_set(cfg, "saga.dbx", "s.db", &err), ES_EINVAL);
    cr_expect_not_null(strstr(err.message, "the saga.* keys are saga.db, saga.retention.ms"), "%s",
                       err.message);
    cr_expect_not_null(strstr(err.message, "kafka.<librdkafka property>"), "not cut: %s",
                       err.message);
    cr_expect_str_eq(es_config_get(cfg, "saga.retention.ms"), "604800000", "7 days");
    cr_expect_eq(es_config_set(cfg, "saga.retention.ms", "a week", &err), ES_EINVAL);
    cr_expect_not_null(strstr(err.message, "saga.retention.ms"), "%s", err.message);
    cr_expect_eq(es_config_set(cfg, "saga.retention.ms", "0", &err), ES_OK, "%s", err.message);
    es_config_destroy(cfg);
}
