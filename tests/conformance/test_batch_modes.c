/*
 * The two batch modes (CTest runs this file with CONFORMANCE_BACKEND=embedded
 * and =kafka): es_execute_batch is per command (a rejected command is its own
 * result, the others are appended), es_execute_all is all-or-nothing (one
 * command that is not accepted rolls the whole batch back: no events, no
 * command ids, no cached state). On Kafka es_execute_all is refused before
 * anything is sent, with a message pointing to a saga: there, every test of
 * the all-or-nothing mode asserts that refusal and that nothing was appended.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "domain.h"
#include "testutil.h"

#define ORDER "orders.order"

static tb_t *b;

static void setup(void) {
    static const char *const types[] = {ORDER, "payments.payment", "inventory.item", NULL};
    b = tb_open(types);
}

static void teardown(void) {
    tb_close(b);
}

TestSuite(batch_modes, .init = setup, .fini = teardown, .timeout = 120);

static Orders__V1__LineItem item = {PROTOBUF_C_MESSAGE_INIT(&orders__v1__line_item__descriptor),
                                    "sku-1", 2, 1500};
static Orders__V1__LineItem *items[] = {&item};

/* The messages outlive the commands that point to them: one of each kind per test. */
static Orders__V1__PlaceOrder place_msg;
static Orders__V1__PlaceOrder place_bob_msg;
static Orders__V1__ConfirmOrder confirm_msg;
static Orders__V1__CancelOrder cancel_msg;

static es_command_t place(const char *id, const char *command_id) {
    orders__v1__place_order__init(&place_msg);
    place_msg.customer_id = "alice";
    place_msg.n_items = 1;
    place_msg.items = items;
    place_msg.currency = "EUR";
    return (es_command_t){.aggregate_type = ORDER,
                          .aggregate_id = id,
                          .message = &place_msg.base,
                          .command_id = command_id};
}

/* The same command as place, for the same aggregate, with another payload. */
static es_command_t place_for_bob(const char *id, const char *command_id) {
    es_command_t c = place(id, command_id);
    place_bob_msg = place_msg;
    place_bob_msg.customer_id = "bob";
    c.message = &place_bob_msg.base;
    return c;
}

/* Rejected unless the order was placed. */
static es_command_t confirm(const char *id, const char *command_id) {
    orders__v1__confirm_order__init(&confirm_msg);
    return (es_command_t){.aggregate_type = ORDER,
                          .aggregate_id = id,
                          .message = &confirm_msg.base,
                          .command_id = command_id};
}

static es_command_t cancel(const char *id, const char *command_id) {
    orders__v1__cancel_order__init(&cancel_msg);
    cancel_msg.reason = "changed my mind";
    return (es_command_t){.aggregate_type = ORDER,
                          .aggregate_id = id,
                          .message = &cancel_msg.base,
                          .command_id = command_id};
}

/* Events of the order as readers see them; on Kafka waits up to 15 s for want of them. */
static size_t events_of(const char *id, size_t want) {
    return tb_events_of(b, ORDER, id, want);
}

static uint64_t version_of(const char *id) {
    uint64_t v = 99;
    es_error_t err = {0};
    cr_assert_eq(es_store_stream_version(tb_store(b), ORDER, id, &v, &err), ES_OK, "%s",
                 err.message);
    return v;
}

static void clear_all(es_result_t *res, size_t n) {
    for (size_t i = 0; i < n; i++)
        es_result_clear(&res[i]);
}

/* On Kafka: es_execute_all refused with ES_EINVAL, a message saying why and pointing to a saga,
 * every result empty; returns whether it was (the caller then checks nothing was appended). */
static bool refused_on_kafka(es_err rc, const es_error_t *err, const es_result_t *res, size_t n) {
    if (!tb_kafka(b))
        return false;
    cr_assert_eq(rc, ES_EINVAL, "got %s: %s", es_strerror(rc), err->message);
    cr_assert(strstr(err->message, "saga"), "the refusal points to a saga: %s", err->message);
    cr_assert(strstr(err->message, "partition"), "and says why: %s", err->message);
    cr_assert(strstr(err->message, "es_execute_batch"), "%s", err->message);
    for (size_t i = 0; i < n; i++) {
        cr_assert_null(res[i].command_id);
        cr_assert_null(res[i].reason);
        cr_assert_eq(res[i].n_events, 0);
    }
    return true;
}

/* The aborted results of an all-or-nothing batch: every command but the culprit k. */
static void assert_aborted(const es_result_t *res, size_t n, size_t k) {
    char culprit[32];
    snprintf(culprit, sizeof culprit, "command %zu ", k);
    for (size_t i = 0; i < n; i++) {
        if (i == k)
            continue;
        cr_assert_eq(res[i].outcome, ES_OUTCOME_ERROR, "command %zu", i);
        cr_assert_eq(res[i].code, ES_EABORTED, "command %zu: %s", i, es_strerror(res[i].code));
        cr_assert_eq(res[i].n_events, 0, "command %zu", i);
        cr_assert_eq(res[i].first_version, 0, "command %zu", i);
        cr_assert_not_null(res[i].reason);
        cr_assert(strstr(res[i].reason, culprit), "command %zu names the culprit: %s", i,
                  res[i].reason);
        cr_assert(strstr(res[i].reason, "not executed"), "%s", res[i].reason);
    }
}

Test(batch_modes, an_all_or_nothing_batch_with_one_rejection_appends_nothing) {
    es_command_t cmds[4] = {place("o-a1", NULL), place("o-a2", "all-a2"), confirm("o-never", NULL),
                            place("o-a3", NULL)};
    es_result_t res[4];
    es_error_t err = {0};
    es_err rc = es_execute_all(tb_engine(b), cmds, 4, res, &err);
    if (!refused_on_kafka(rc, &err, res, 4)) {
        cr_assert_eq(rc, ES_EREJECTED, "got %s: %s", es_strerror(rc), err.message);
        cr_assert(strstr(err.message, "command 2 of 4"), "%s", err.message);
        cr_assert(strstr(err.message, "o-never"), "%s", err.message);
        cr_assert(strstr(err.message, "nothing was appended"), "%s", err.message);
        cr_assert(strstr(err.message, "never placed"), "the culprit's reason: %s", err.message);
        cr_assert_eq(res[2].outcome, ES_OUTCOME_REJECTED);
        cr_assert_eq(res[2].code, ES_EREJECTED);
        cr_assert(strstr(res[2].reason, "never placed"), "%s", res[2].reason);
        assert_aborted(res, 4, 2);
        cr_assert_null(res[0].command_id, "no id was given");
        cr_assert_str_eq(res[1].command_id, "all-a2");
    }
    clear_all(res, 4);
    const char *ids[] = {"o-a1", "o-a2", "o-a3", "o-never"};
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(version_of(ids[i]), 0, "%s", ids[i]);
        cr_assert_eq(events_of(ids[i], 0), 0, "%s", ids[i]);
    }
}

Test(batch_modes, an_all_or_nothing_batch_with_a_version_conflict_appends_nothing) {
    es_result_t one;
    es_error_t err = {0};
    es_command_t first = place("o-v1", NULL);
    cr_assert_eq(es_execute(tb_engine(b), &first, &one, &err), ES_OK, "%s", err.message);
    es_result_clear(&one);
    es_command_t cmds[3] = {place("o-v2", NULL), confirm("o-v1", NULL), place("o-v3", NULL)};
    cmds[1].expect = ES_EXPECT_EXACT;
    cmds[1].expected_version = 5;
    es_result_t res[3];
    es_err rc = es_execute_all(tb_engine(b), cmds, 3, res, &err);
    if (!refused_on_kafka(rc, &err, res, 3)) {
        cr_assert_eq(rc, ES_ECONFLICT, "got %s: %s", es_strerror(rc), err.message);
        cr_assert(strstr(err.message, "command 1 of 3"), "%s", err.message);
        cr_assert_eq(res[1].outcome, ES_OUTCOME_CONFLICT);
        cr_assert_eq(res[1].code, ES_ECONFLICT);
        assert_aborted(res, 3, 1);
    }
    clear_all(res, 3);
    cr_assert_eq(events_of("o-v1", 1), 1);
    cr_assert_eq(version_of("o-v1"), 1);
    cr_assert_eq(version_of("o-v2"), 0);
    cr_assert_eq(version_of("o-v3"), 0);
    cr_assert_eq(events_of("o-v2", 0), 0);
}

Test(batch_modes, a_fully_accepted_all_or_nothing_batch_appends_everything) {
    es_command_t cmds[3] = {place("o-f1", "all-f1"), place("o-f2", NULL), confirm("o-f1", NULL)};
    es_result_t res[3];
    es_error_t err = {0};
    es_err rc = es_execute_all(tb_engine(b), cmds, 3, res, &err);
    if (refused_on_kafka(rc, &err, res, 3)) {
        cr_assert_eq(version_of("o-f1"), 0);
        cr_assert_eq(version_of("o-f2"), 0);
        return;
    }
    cr_assert_eq(rc, ES_OK, "%s", err.message);
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(res[i].outcome, ES_OUTCOME_ACCEPTED, "command %zu: %s", i,
                     res[i].reason ? res[i].reason : "");
        cr_assert_eq(res[i].n_events, 1, "command %zu", i);
    }
    cr_assert_eq(res[2].version, 2);
    cr_assert_str_eq(res[0].command_id, "all-f1");
    clear_all(res, 3);
    cr_assert_eq(events_of("o-f1", 2), 2);
    cr_assert_eq(events_of("o-f2", 1), 1);
    /* Its command ids were recorded: the same batch again is answered, appending nothing. */
    rc = es_execute_all(tb_engine(b), cmds, 1, res, &err);
    cr_assert_eq(rc, ES_OK, "%s", err.message);
    cr_assert(res[0].duplicate);
    es_result_clear(&res[0]);
    cr_assert_eq(events_of("o-f1", 2), 2);
}

Test(batch_modes, a_per_command_batch_with_one_rejection_still_appends_the_others) {
    es_command_t cmds[3] = {place("o-p1", NULL), confirm("o-pnever", NULL), place("o-p2", NULL)};
    es_result_t res[3];
    es_error_t err = {0};
    memset(res, 0, sizeof res);
    cr_assert_eq(es_execute_batch(tb_engine(b), cmds, 3, res, &err), ES_OK, "%s", err.message);
    cr_assert_eq(res[0].outcome, ES_OUTCOME_ACCEPTED);
    cr_assert_eq(res[1].outcome, ES_OUTCOME_REJECTED);
    cr_assert_eq(res[1].code, ES_EREJECTED);
    cr_assert_eq(res[2].outcome, ES_OUTCOME_ACCEPTED);
    clear_all(res, 3);
    cr_assert_eq(events_of("o-p1", 1), 1);
    cr_assert_eq(events_of("o-p2", 1), 1);
    cr_assert_eq(events_of("o-pnever", 0), 0);
}

/* A rolled-back batch records no command id and no rejection: once its cause is gone, the same
 * batch (the same ids) runs as a first execution, not as duplicates of the failed one. */
Test(batch_modes, the_same_batch_sent_again_after_a_rollback_runs_as_a_first_execution) {
    es_command_t cmds[2] = {place("o-r1", "retry-r1"), confirm("o-r2", "retry-r2")};
    es_result_t res[2];
    es_error_t err = {0};
    es_err rc = es_execute_all(tb_engine(b), cmds, 2, res, &err);
    if (refused_on_kafka(rc, &err, res, 2)) {
        cr_assert_eq(version_of("o-r1"), 0);
        return;
    }
    cr_assert_eq(rc, ES_EREJECTED, "%s", err.message);
    clear_all(res, 2);
    es_command_t fix = place("o-r2", NULL);
    es_result_t one;
    cr_assert_eq(es_execute(tb_engine(b), &fix, &one, &err), ES_OK, "%s", err.message);
    es_result_clear(&one);
    rc = es_execute_all(tb_engine(b), cmds, 2, res, &err);
    cr_assert_eq(rc, ES_OK, "%s", err.message);
    for (size_t i = 0; i < 2; i++) {
        cr_assert_eq(res[i].outcome, ES_OUTCOME_ACCEPTED, "command %zu: %s", i,
                     res[i].reason ? res[i].reason : "");
        cr_assert_not(res[i].duplicate, "command %zu", i);
        cr_assert_eq(res[i].n_events, 1, "command %zu", i);
    }
    cr_assert_eq(res[0].version, 1);
    cr_assert_eq(res[1].version, 2);
    clear_all(res, 2);
    cr_assert_eq(events_of("o-r1", 1), 1);
    cr_assert_eq(events_of("o-r2", 2), 2);
}

/* The engine caches decided states by version; a rolled-back batch's state of o-c at version 1
 * (placed) must not answer for the version 1 the log gets afterwards (cancelled). */
Test(batch_modes, a_rolled_back_batch_leaves_no_state_behind_in_the_engine) {
    es_command_t cmds[2] = {place("o-c", NULL), confirm("o-cnever", NULL)};
    es_result_t res[2];
    es_error_t err = {0};
    es_err rc = es_execute_all(tb_engine(b), cmds, 2, res, &err);
    if (refused_on_kafka(rc, &err, res, 2)) {
        cr_assert_eq(version_of("o-c"), 0);
        return;
    }
    cr_assert_eq(rc, ES_EREJECTED, "%s", err.message);
    clear_all(res, 2);
    Orders__V1__OrderCancelled ev = ORDERS__V1__ORDER_CANCELLED__INIT;
    ev.reason = "written beside the engine";
    uint8_t buf[128];
    size_t len = orders__v1__order_cancelled__pack(&ev, buf);
    tb_append(b, ORDER, "o-c", "orders.v1.OrderCancelled", buf, len);
    es_command_t c = confirm("o-c", NULL);
    es_result_t one;
    rc = es_execute(tb_engine(b), &c, &one, &err);
    cr_assert_eq(rc, ES_EREJECTED, "decided on the log's version 1, not the rolled-back one: %s",
                 es_strerror(rc));
    cr_assert(strstr(one.reason, "cancelled"), "%s", one.reason);
    es_result_clear(&one);
}

/* A command id given twice in one es_execute_all is one command sent twice: the second is
 * answered as a duplicate; the id with another payload is ES_EIDREUSED and aborts the batch. */
Test(batch_modes, a_command_id_twice_in_an_all_or_nothing_batch_runs_once_or_aborts_when_reused) {
    es_command_t twice[2] = {place("o-d1", "dup-1"), place("o-d1", "dup-1")};
    es_result_t res[3];
    es_error_t err = {0};
    es_err rc = es_execute_all(tb_engine(b), twice, 2, res, &err);
    if (refused_on_kafka(rc, &err, res, 2)) {
        cr_assert_eq(version_of("o-d1"), 0);
        return;
    }
    cr_assert_eq(rc, ES_OK, "%s", err.message);
    cr_assert_not(res[0].duplicate);
    cr_assert(res[1].duplicate);
    cr_assert_eq(res[1].n_events, 1);
    cr_assert_str_eq(res[1].events[0]->event_id, res[0].events[0]->event_id);
    clear_all(res, 2);
    cr_assert_eq(events_of("o-d1", 1), 1);

    es_command_t reused[3] = {place("o-d2", NULL), place("o-d3", "dup-3"),
                              place_for_bob("o-d3", "dup-3")};
    rc = es_execute_all(tb_engine(b), reused, 3, res, &err);
    cr_assert_eq(rc, ES_EIDREUSED, "got %s: %s", es_strerror(rc), err.message);
    cr_assert(strstr(err.message, "dup-3"), "%s", err.message);
    cr_assert_eq(res[2].code, ES_EIDREUSED);
    assert_aborted(res, 3, 2);
    clear_all(res, 3);
    cr_assert_eq(version_of("o-d2"), 0);
    cr_assert_eq(version_of("o-d3"), 0);
    /* and the rolled-back dup-3 is not remembered: bob's order now runs as the first. */
    es_command_t bob = place_for_bob("o-d3", "dup-3");
    rc = es_execute(tb_engine(b), &bob, &res[0], &err);
    cr_assert_eq(rc, ES_OK, "%s", err.message);
    cr_assert_not(res[0].duplicate);
    es_result_clear(&res[0]);
}

Test(batch_modes, an_all_or_nothing_batch_of_an_invalid_command_names_it_in_one_line) {
    es_command_t cmds[2] = {place("o-i1", NULL), cancel("o-i2", "bad\nid")};
    es_result_t res[2];
    es_error_t err = {0};
    es_err rc = es_execute_all(tb_engine(b), cmds, 2, res, &err);
    if (!refused_on_kafka(rc, &err, res, 2)) {
        cr_assert_eq(rc, ES_EINVAL, "got %s: %s", es_strerror(rc), err.message);
        cr_assert_eq(res[1].outcome, ES_OUTCOME_ERROR);
        cr_assert(strstr(res[1].reason, "command id"), "%s", res[1].reason);
        assert_aborted(res, 2, 1);
        for (const char *p = res[0].reason; *p; p++)
            cr_assert((unsigned char)*p >= 0x20, "control byte in: %s", res[0].reason);
        for (const char *p = err.message; *p; p++)
            cr_assert((unsigned char)*p >= 0x20, "control byte in: %s", err.message);
    }
    clear_all(res, 2);
    cr_assert_eq(version_of("o-i1"), 0);
}
