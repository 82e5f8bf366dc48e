/*
 * es_saga_history, the same on both backends (CTest runs this file with
 * CONFORMANCE_BACKEND=embedded and =kafka): an instance's transitions read
 * back from "<saga>.saga.events" in order, a missing instance, a bad record.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include <eskit/saga.h>

#include "backend.h"
#include "eskit/v1/saga.pb-c.h"
#include "saga_int.h"
#include "testutil.h"

#define SAGA "orders.fulfilment"
#define TYPE SAGA ".saga"

static tb_t *b;

static void setup(void) {
    static const char *const types[] = {TYPE, NULL};
    b = tb_open(types);
}

static void teardown(void) {
    tb_close(b);
}

TestSuite(saga_history, .init = setup, .fini = teardown, .timeout = 120);

static void transition(const char *id, const char *kind, Eskit__V1__SagaState state,
                       const char *step, unsigned step_index, int64_t at) {
    Eskit__V1__SagaTransition t = ESKIT__V1__SAGA_TRANSITION__INIT;
    t.saga = SAGA;
    t.instance_id = (char *)id;
    t.kind = (char *)kind;
    t.state = state;
    t.step = (char *)step;
    t.step_index = step_index;
    t.at_us = at;
    size_t len = eskit__v1__saga_transition__get_packed_size(&t);
    uint8_t *buf = malloc(len + 1);
    cr_assert_not_null(buf);
    eskit__v1__saga_transition__pack(&t, buf);
    tb_append(b, TYPE, id, ES_SAGA_EVENT_TYPE, buf, len);
    free(buf);
}

Test(saga_history, an_instances_transitions_come_back_in_order) {
    transition("o-1", "started", ESKIT__V1__SAGA_STATE__SAGA_STATE_RUNNING, "", 0, 100);
    transition("o-2", "started", ESKIT__V1__SAGA_STATE__SAGA_STATE_RUNNING, "", 0, 150);
    transition("o-1", "command_sent", ESKIT__V1__SAGA_STATE__SAGA_STATE_RUNNING, "reserve", 0, 200);
    transition("o-1", "timed_out", ESKIT__V1__SAGA_STATE__SAGA_STATE_COMPENSATING, "reserve", 0,
               300);
    es_saga_record_t *rs = NULL;
    size_t n = 0;
    es_error_t err = {0};
    cr_assert_eq(es_saga_history(tb_config(b), SAGA, "o-1", &rs, &n, &err), ES_OK, "%s",
                 err.message);
    cr_assert_eq(n, 3);
    const char *kinds[] = {"started", "command_sent", "timed_out"};
    for (size_t i = 0; i < n; i++) {
        cr_expect_eq(rs[i].seq, i + 1);
        cr_expect_str_eq(rs[i].kind, kinds[i]);
        cr_expect_eq(rs[i].at_us, (int64_t)(i + 1) * 100);
    }
    cr_expect_str_eq(rs[2].state, ES_SAGA_COMPENSATING);
    cr_expect_str_eq(rs[2].step, "reserve");
    free(rs);
}

Test(saga_history, an_instance_without_transitions_is_not_found) {
    transition("o-1", "started", ESKIT__V1__SAGA_STATE__SAGA_STATE_RUNNING, "", 0, 100);
    es_saga_record_t *rs = NULL;
    size_t n = 0;
    es_error_t err = {0};
    cr_expect_eq(es_saga_history(tb_config(b), SAGA, "o-9", &rs, &n, &err), ES_ENOTFOUND);
    cr_expect_not_null(strstr(err.message, TYPE ".events"), "%s", err.message);
    cr_expect_null(rs);
    cr_expect_eq(n, 0);
    cr_expect_eq(es_saga_history(tb_config(b), "Orders", "o-1", &rs, &n, &err), ES_EINVAL);
    cr_expect_not_null(strstr(err.message, "not a saga name"), "%s", err.message);
}

Test(saga_history, a_record_that_is_not_a_transition_is_a_decode_error) {
    transition("o-1", "started", ESKIT__V1__SAGA_STATE__SAGA_STATE_RUNNING, "", 0, 100);
    static const uint8_t garbage[] = {0x0f, 0xff, 0x01};
    tb_append(b, TYPE, "o-1", ES_SAGA_EVENT_TYPE, garbage, sizeof garbage);
    es_saga_record_t *rs = NULL;
    size_t n = 0;
    es_error_t err = {0};
    cr_expect_eq(es_saga_history(tb_config(b), SAGA, "o-1", &rs, &n, &err), ES_EDECODE);
    cr_expect_not_null(strstr(err.message, TYPE "/o-1: saga transition 2"), "%s", err.message);
    cr_expect_null(rs);
}
