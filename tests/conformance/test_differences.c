/*
 * The differences between the backends that docs/design.md documents ("Known
 * limits" and the log-order rule), each asserted as the documented outcome on
 * the backend this run is on (CTest runs this file with
 * CONFORMANCE_BACKEND=embedded and =kafka). A difference that is not here is
 * a bug, not a limit.
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

TestSuite(differences, .init = setup, .fini = teardown, .timeout = 120);

static Orders__V1__LineItem item = {PROTOBUF_C_MESSAGE_INIT(&orders__v1__line_item__descriptor),
                                    "sku-1", 2, 1500};
static Orders__V1__LineItem *items[] = {&item};

static void place(const char *id, es_result_t *res) {
    Orders__V1__PlaceOrder m = ORDERS__V1__PLACE_ORDER__INIT;
    m.customer_id = "alice";
    m.n_items = 1;
    m.items = items;
    m.currency = "EUR";
    es_command_t cmd = {.aggregate_type = ORDER, .aggregate_id = id, .message = &m.base};
    es_error_t err = {0};
    memset(res, 0, sizeof *res);
    cr_assert_eq(es_execute(tb_engine(b), &cmd, res, &err), ES_OK, "%s", err.message);
    cr_assert_eq(res->n_events, 1);
}

typedef struct seen {
    es_event_t ev[8];
    size_t n;
} seen;

static int keep(const es_event_t *ev, void *opaque) {
    seen *s = opaque;
    if (s->n < sizeof s->ev / sizeof s->ev[0])
        s->ev[s->n++] = *ev; /* only offset, partition and version are looked at */
    return 0;
}

/* The stream as readers see it, waiting (Kafka) until it holds want events. */
static seen stream_of(const char *id, size_t want) {
    seen s;
    int64_t deadline = es_now_us() + 15 * 1000000LL;
    do {
        memset(&s, 0, sizeof s);
        es_error_t err = {0};
        cr_assert_eq(es_store_read_stream(tb_store(b), ORDER, id, 1, keep, &s, &err), ES_OK, "%s",
                     err.message);
    } while (s.n < want && es_now_us() < deadline);
    cr_assert_eq(s.n, want);
    return s;
}

/* design.md, Known limits: "Events returned by es_execute carry their partition but offset =
 * -1 [on Kafka]: a reply does not carry Kafka offsets." Embedded: the log position. */
Test(differences, executed_events_carry_the_log_position_embedded_and_only_the_partition_on_kafka) {
    es_result_t res;
    place("o-1", &res);
    seen s = stream_of("o-1", 1);
    const es_event_t *got = res.events[0];
    cr_assert_eq(got->partition, s.ev[0].partition);
    if (tb_kafka(b)) {
        cr_assert_eq(got->offset, -1);
        cr_assert(s.ev[0].offset >= 0);
    } else {
        cr_assert_eq(got->partition, 0);
        cr_assert_eq(got->offset, s.ev[0].offset);
        cr_assert(got->offset >= 1);
    }
    es_result_clear(&res);
}

/* design.md, Known limits: "The store's write calls (es_store_append, es_store_put_snapshot)
 * and es_store_end_offset are ES_ESTATE [on Kafka]: every write goes through the command path,
 * and Kafka has no single end." */
Test(differences, the_store_writes_directly_embedded_and_refuses_on_kafka_naming_the_command_path) {
    es_store_t *st = tb_store(b);
    es_new_event_t ev = {.event_type = "orders.v1.OrderCancelled"};
    es_append_result_t ar = {0};
    es_error_t err = {0};
    es_err rc = es_store_append(st, ORDER, "o-2", ES_EXPECT_NO_STREAM, 0, &ev, 1, &ar, &err);
    es_snapshot_t snap = {.version = 1, .state_type = "orders.v1.OrderState"};
    es_error_t serr = {0};
    es_err src = es_store_put_snapshot(st, ORDER, "o-2", &snap, &serr);
    int64_t end = 0;
    es_error_t eerr = {0};
    es_err erc = es_store_end_offset(st, &end, &eerr);
    if (tb_kafka(b)) {
        cr_assert_eq(rc, ES_ESTATE);
        cr_assert(strstr(err.message, "es_execute"), "%s", err.message);
        cr_assert_eq(src, ES_ESTATE);
        cr_assert(strstr(serr.message, "es_execute"), "%s", serr.message);
        cr_assert_eq(erc, ES_ESTATE);
        cr_assert(strstr(eerr.message, "per partition"), "%s", eerr.message);
    } else {
        cr_assert_eq(rc, ES_OK, "%s", err.message);
        cr_assert_eq(ar.first_version, 1);
        cr_assert_eq(src, ES_OK, "%s", serr.message);
        cr_assert_eq(erc, ES_OK, "%s", eerr.message);
        cr_assert_eq(end, ar.last_offset + 1);
    }
}

/* design.md, Known limits: "es_store_read_log walks topics and partitions in order and counts
 * records of that walk from 1 [on Kafka]". Embedded: offsets are the log's commit-order
 * positions and the next read starts after the last one delivered. */
Test(differences, read_log_positions_are_commit_order_embedded_and_a_walk_count_on_kafka) {
    es_result_t res;
    const char *ids[] = {"o-3", "o-4", "o-5", "o-6"};
    for (size_t i = 0; i < 4; i++) {
        place(ids[i], &res);
        es_result_clear(&res);
        stream_of(ids[i], 1);
    }
    const char *const types[] = {ORDER, NULL};
    seen first = {0}, rest = {0};
    int64_t next = 0, after = 0;
    es_error_t err = {0};
    cr_assert_eq(es_store_read_log(tb_store(b), types, 1, 2, keep, &first, &next, &err), ES_OK,
                 "%s", err.message);
    cr_assert_eq(first.n, 2);
    cr_assert_eq(es_store_read_log(tb_store(b), types, next, 0, keep, &rest, &after, &err), ES_OK,
                 "%s", err.message);
    cr_assert_eq(rest.n, 2, "the second read goes on where the first stopped");
    if (tb_kafka(b)) {
        cr_assert_eq(next, 3, "two records walked, counted from 1");
        cr_assert_eq(after, 5);
    } else {
        cr_assert_eq(next, first.ev[1].offset + 1);
        cr_assert(first.ev[0].offset < first.ev[1].offset);
        cr_assert(first.ev[1].offset < rest.ev[0].offset);
        cr_assert_eq(after, rest.ev[1].offset + 1);
    }
}

/* design.md, Known limits: "es_execute_all is refused [on Kafka] with ES_EINVAL before anything
 * is sent ... a process over several aggregates is a saga." Embedded: one transaction, all or
 * nothing. A single command of a single partition is refused too: the refusal does not depend
 * on where the commands would go. */
Test(differences, an_all_or_nothing_batch_runs_embedded_and_is_refused_on_kafka_naming_a_saga) {
    Orders__V1__PlaceOrder m = ORDERS__V1__PLACE_ORDER__INIT;
    m.customer_id = "alice";
    m.n_items = 1;
    m.items = items;
    m.currency = "EUR";
    es_command_t cmds[3] = {{.aggregate_type = ORDER, .aggregate_id = "o-7", .message = &m.base},
                            {.aggregate_type = ORDER, .aggregate_id = "o-8", .message = &m.base},
                            {.aggregate_type = ORDER, .aggregate_id = "o-9", .message = &m.base}};
    es_result_t res[2], res9;
    es_error_t err = {0};
    es_err rc = es_execute_all(tb_engine(b), cmds, 2, res, &err);
    es_error_t one_err = {0};
    es_err one = es_execute_all(tb_engine(b), &cmds[2], 1, &res9, &one_err);
    if (tb_kafka(b)) {
        cr_assert_eq(rc, ES_EINVAL, "got %s: %s", es_strerror(rc), err.message);
        cr_assert(strstr(err.message, "saga"), "%s", err.message);
        cr_assert(strstr(err.message, "nothing was sent"), "%s", err.message);
        cr_assert_eq(one, ES_EINVAL, "got %s: %s", es_strerror(one), one_err.message);
        uint64_t v = 99;
        cr_assert_eq(es_store_stream_version(tb_store(b), ORDER, "o-7", &v, &err), ES_OK, "%s",
                     err.message);
        cr_assert_eq(v, 0);
    } else {
        cr_assert_eq(rc, ES_OK, "%s", err.message);
        cr_assert_eq(one, ES_OK, "%s", one_err.message);
        cr_assert_eq(res[1].outcome, ES_OUTCOME_ACCEPTED);
        cr_assert_eq(res9.outcome, ES_OUTCOME_ACCEPTED);
        es_result_clear(&res[0]);
        es_result_clear(&res[1]);
        es_result_clear(&res9);
        stream_of("o-7", 1);
        stream_of("o-8", 1);
        stream_of("o-9", 1);
    }
}
