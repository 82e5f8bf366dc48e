/*
 * The Kafka write path against librdkafka's mock cluster, started in-process
 * by every test: a command processor thread owns "orders.order.commands" and a
 * separate caller engine (backend kafka) executes commands through it. Results
 * match the embedded engine's, a command id runs once, events land keyed and
 * co-partitioned with their command, and a processor restarted on the same or
 * on a fresh state store continues the aggregates' versions, loading its
 * aggregates from the snapshots topic, and still tells a retried command from
 * its id reused for another.
 */
#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "domain.h"
#include "eskit/v1/command.pb-c.h"
#include "eskit/v1/reply.pb-c.h"
#include "eskit/v1/snapshot.pb-c.h"
#include "internal.h"
#include "kafkautil.h"
#include "metricsutil.h"
#include "testutil.h"

#define PARTS 3

static char *dir;
static es_config_t *cfg;
static rd_kafka_t *mock_rk;
static rd_kafka_mock_cluster_t *mock;
static es_engine_t *caller;

typedef tu_proc proc;

static void quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk, (void)level, (void)fac, (void)buf;
}

/* The mock's view of the processors' group "svc.commands", from its debug log (traced tests and
 * TEST_DEBUG only): when it was created (its 1 s session check counts from then), when a member
 * last joined it empty, how often it became empty and how many members it expired. */
static int mock_traced;
static struct {
    atomic_llong created_us, joined_us;
    atomic_int emptied, expired;
} group_seen;

static void mock_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk, (void)level;
    long long now = (long long)es_now_us(), zero = 0;
    if (getenv("TEST_DEBUG"))
        fprintf(stderr, "%lld mock %s %s\n", now / 1000 % 1000000, fac, buf);
    const char *g = strstr(buf, " svc.commands");
    if (!g || (g[13] && g[13] != ' ' && g[13] != ':'))
        return;
    if (strstr(buf, "changing state Empty -> Joining")) {
        atomic_compare_exchange_strong(&group_seen.created_us, &zero, now);
        atomic_store(&group_seen.joined_us, now);
    } else if (strstr(buf, "-> Empty")) {
        atomic_fetch_add(&group_seen.emptied, 1);
    } else if (strstr(buf, "session timed out")) {
        atomic_fetch_add(&group_seen.expired, 1);
    }
}

static void set(const char *key, const char *value) {
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, key, value, &err), ES_OK, "%s", err.message);
}

static void set_state_db(const char *name) {
    char *path = tu_path(dir, name);
    set("state.db", path);
    free(path);
}

static void debug_log(int level, const char *msg, void *opaque) {
    (void)opaque;
    fprintf(stderr, "%lld [%d] %s\n", (long long)(es_now_us() / 1000 % 1000000), level, msg);
}

static void setup(void) {
    char errstr[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(c, quiet_log);
    if (mock_traced || getenv("TEST_DEBUG")) {
        rd_kafka_conf_set_log_cb(c, mock_log);
        cr_assert_eq(rd_kafka_conf_set(c, "debug", "mock", errstr, sizeof errstr), RD_KAFKA_CONF_OK,
                     "%s", errstr);
    }
    mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof errstr);
    cr_assert(mock_rk, "%s", errstr);
    mock = tu_mock_demo(mock_rk, PARTS);
    dir = tu_tempdir();
    cfg = tu_config(dir, "unused.db");
    set("brokers", rd_kafka_mock_cluster_bootstraps(mock));
    set("service.name", "svc");
    set("execute.timeout.ms", "20000");
    set_state_db("state.db");
    set("kafka.reconnect.backoff.max.ms", "200");
    /* Short, but longer than the mock's delay of a join (see testutil.h). */
    set("kafka.session.timeout.ms", TU_MOCK_SESSION_TIMEOUT_MS);
    set("kafka.heartbeat.interval.ms", TU_MOCK_HEARTBEAT_INTERVAL_MS);
    caller = NULL;
    if (getenv("TEST_DEBUG")) { /* TEST_DEBUG=cgrp,protocol shows librdkafka's view too */
        es_config_set_log_cb(cfg, debug_log, NULL);
        set("kafka.debug", getenv("TEST_DEBUG"));
    }
}

static void teardown(void) {
    es_engine_destroy(caller);
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_rk);
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(dir);
}

static void setup_traced(void) {
    mock_traced = 1;
    setup();
}

TestSuite(kafka_processor, .init = setup, .fini = teardown, .timeout = 60);

static es_engine_t *new_engine(void) {
    es_engine_t *e = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &e, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(e, &err), ES_OK, "%s", err.message);
    return e;
}

/* orders.order with an evolve that counts its calls: how many events loads and decisions fold. */
static atomic_int order_folds;
static es_aggregate_def counting_order_def;

static es_err counting_evolve(ProtobufCMessage *state, const ProtobufCMessage *ev, void *opaque,
                              es_error_t *err) {
    atomic_fetch_add(&order_folds, 1);
    return es_aggregate_evolve(&demo_order_def, state, ev, opaque, err);
}

/* orders.order's event types, for a definition that wraps its evolve. */
static const ProtobufCMessageDescriptor *const order_event_types[] = {
    &orders__v1__order_placed__descriptor, &orders__v1__order_confirmed__descriptor,
    &orders__v1__order_cancelled__descriptor, NULL};

static es_engine_t *new_counting_engine(void) {
    es_engine_t *e = NULL;
    es_error_t err = {0};
    counting_order_def = demo_order_def;
    counting_order_def.evolvers = NULL;
    counting_order_def.events = order_event_types;
    counting_order_def.evolve = counting_evolve;
    atomic_store(&order_folds, 0);
    cr_assert_eq(es_engine_new(cfg, &e, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_engine_register(e, &counting_order_def, NULL, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_engine_register(e, &demo_payment_def, NULL, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_engine_register(e, &demo_item_def, NULL, &err), ES_OK, "%s", err.message);
    return e;
}

/* A processor on the config's current state.db and engine, polling on a thread of its own. */
static proc *start_processor_on(es_engine_t *engine) {
    return tu_proc_start(cfg, engine);
}

static proc *start_processor(void) {
    return start_processor_on(new_engine());
}

static void stop_processor(proc *pr) {
    tu_proc_stop(pr);
}

static Orders__V1__LineItem item = {PROTOBUF_C_MESSAGE_INIT(&orders__v1__line_item__descriptor),
                                    "sku-1", 2, 1500};
static Orders__V1__LineItem *items[] = {&item};
static Orders__V1__ConfirmOrder confirm_msg = ORDERS__V1__CONFIRM_ORDER__INIT;
static Orders__V1__CancelOrder cancel_msg = {
    PROTOBUF_C_MESSAGE_INIT(&orders__v1__cancel_order__descriptor), "changed my mind"};

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

static es_command_t simple(const char *id, const ProtobufCMessage *msg, const char *command_id) {
    return (es_command_t){.aggregate_type = "orders.order",
                          .aggregate_id = id,
                          .message = msg,
                          .command_id = command_id};
}

static es_err exec(const es_command_t *cmd, es_result_t *res, es_error_t *err) {
    if (!caller)
        caller = new_engine();
    return es_execute(caller, cmd, res, err);
}

static void accepted(const es_command_t *cmd, uint64_t version, const char *event_type) {
    es_result_t res;
    es_error_t err = {0};
    cr_assert_eq(exec(cmd, &res, &err), ES_OK, "%s", err.message);
    cr_assert_eq(res.outcome, ES_OUTCOME_ACCEPTED);
    cr_assert_eq(res.code, ES_OK);
    cr_assert_not(res.duplicate);
    cr_assert_eq(res.version, version);
    cr_assert_eq(res.first_version, version);
    cr_assert_eq(res.last_version, version);
    cr_assert_null(res.reason);
    cr_assert_eq(res.n_events, 1);
    cr_assert_str_eq(res.events[0]->event_type, event_type);
    cr_assert_str_eq(res.events[0]->aggregate_id, cmd->aggregate_id);
    cr_assert_eq(res.events[0]->version, version);
    cr_assert_str_eq(res.events[0]->command_id, res.command_id);
    if (cmd->command_id)
        cr_assert_str_eq(res.command_id, cmd->command_id);
    es_result_clear(&res);
}

/* Every record of a topic, in partition then offset order, by a consumer of the test's own. */
typedef struct record {
    int32_t partition;
    int64_t offset;
    char key[64];
    es_event_t *ev; /* events topics: the decoded envelope */
    char version_header[24];
} record;

typedef struct records {
    record r[64];
    size_t n;
} records;

static void read_topic(const char *topic, int decode, records *out) {
    char errstr[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(c, quiet_log);
    cr_assert_eq(rd_kafka_conf_set(c, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(mock),
                                   errstr, sizeof errstr),
                 RD_KAFKA_CONF_OK);
    cr_assert_eq(rd_kafka_conf_set(c, "group.id", "test-reader", errstr, sizeof errstr),
                 RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, errstr, sizeof errstr);
    cr_assert(rk, "%s", errstr);
    memset(out, 0, sizeof *out);
    for (int32_t p = 0; p < PARTS; p++) {
        int64_t lo = 0, hi = 0;
        cr_assert_eq(rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 5000), 0);
        if (hi <= lo)
            continue;
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = lo;
        cr_assert_eq(rd_kafka_assign(rk, l), 0);
        rd_kafka_topic_partition_list_destroy(l);
        int64_t next = lo, deadline = es_now_us() / 1000 + 10000;
        while (next < hi) {
            cr_assert_lt(es_now_us() / 1000, deadline, "%s partition %d unread", topic, (int)p);
            rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
            if (!m)
                continue;
            if (!m->err && m->offset >= next) {
                next = m->offset + 1;
                cr_assert_lt(out->n, 64);
                record *r = &out->r[out->n++];
                r->partition = m->partition;
                r->offset = m->offset;
                snprintf(r->key, sizeof r->key, "%.*s", (int)m->key_len, (const char *)m->key);
                es_error_t err = {0};
                if (decode)
                    cr_assert_eq(es_envelope_decode(m->payload, m->len, NULL, &r->ev, &err), ES_OK,
                                 "%s", err.message);
                rd_kafka_headers_t *h = NULL;
                const void *v = NULL;
                size_t len = 0;
                if (!rd_kafka_message_headers(m, &h) &&
                    !rd_kafka_header_get_last(h, "es-version", &v, &len))
                    snprintf(r->version_header, sizeof r->version_header, "%.*s", (int)len,
                             (const char *)v);
            }
            rd_kafka_message_destroy(m);
        }
    }
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
}

static void free_records(records *rs) {
    for (size_t i = 0; i < rs->n; i++)
        es_event_free(rs->r[i].ev);
}

Test(kafka_processor, commands_return_the_results_of_the_embedded_engine) {
    proc *pr = start_processor();
    Orders__V1__PlaceOrder m1, m2;
    es_command_t c = place("o-1", NULL, &m1);
    accepted(&c, 1, "orders.v1.OrderPlaced");
    c = simple("o-1", &confirm_msg.base, NULL);
    accepted(&c, 2, "orders.v1.OrderConfirmed");

    es_result_t res;
    es_error_t err = {0};
    cr_assert_eq(exec(&c, &res, &err), ES_EREJECTED);
    cr_assert_eq(res.outcome, ES_OUTCOME_REJECTED);
    cr_assert_eq(res.version, 2);
    cr_assert_eq(res.n_events, 0);
    cr_assert(strstr(res.reason, "already confirmed"), "%s", res.reason);
    cr_assert(strstr(err.message, "already confirmed"), "%s", err.message);
    es_result_clear(&res);

    c = simple("o-2", &cancel_msg.base, NULL);
    cr_assert_eq(exec(&c, &res, &err), ES_EREJECTED);
    cr_assert(strstr(res.reason, "never placed"), "%s", res.reason);
    es_result_clear(&res);

    Orders__V1__PlaceOrder m4;
    c = place("o-4", NULL, &m4);
    accepted(&c, 1, "orders.v1.OrderPlaced");
    c = simple("o-4", &cancel_msg.base, NULL);
    c.expect = ES_EXPECT_EXACT;
    c.expected_version = 2;
    cr_assert_eq(exec(&c, &res, &err), ES_ECONFLICT);
    cr_assert_eq(res.outcome, ES_OUTCOME_CONFLICT);
    cr_assert_eq(res.version, 1);
    cr_assert(strstr(res.reason, "expected version 2"), "%s", res.reason);
    es_result_clear(&res);
    c.expected_version = 1;
    accepted(&c, 2, "orders.v1.OrderCancelled");

    c = place("o-3", NULL, &m2);
    c.deadline_us = es_now_us() - 1;
    cr_assert_eq(exec(&c, &res, &err), ES_ETIMEOUT);
    cr_assert_eq(res.outcome, ES_OUTCOME_ERROR);
    cr_assert(strstr(res.reason, "deadline"), "%s", res.reason);
    es_result_clear(&res);
    stop_processor(pr);
}

Test(kafka_processor, the_same_command_id_twice_appends_once) {
    proc *pr = start_processor();
    Orders__V1__PlaceOrder m;
    es_command_t c = place("o-7", "cmd-place-o-7", &m);
    es_result_t first, again;
    es_error_t err = {0};
    cr_assert_eq(exec(&c, &first, &err), ES_OK, "%s", err.message);
    cr_assert_eq(exec(&c, &again, &err), ES_OK, "%s", err.message);
    cr_assert_not(first.duplicate);
    cr_assert(again.duplicate);
    cr_assert_eq(again.outcome, ES_OUTCOME_ACCEPTED);
    cr_assert_eq(again.version, 1);
    cr_assert_eq(again.first_version, 1);
    cr_assert_eq(again.n_events, 1);
    cr_assert_str_eq(again.events[0]->event_id, first.events[0]->event_id);
    es_result_clear(&first);
    es_result_clear(&again);
    stop_processor(pr);

    records evs;
    read_topic("orders.order.events", 1, &evs);
    cr_assert_eq(evs.n, 1);
    cr_assert_str_eq(evs.r[0].ev->command_id, "cmd-place-o-7");
    free_records(&evs);
}

Test(kafka_processor, events_are_keyed_and_partitioned_like_their_command) {
    proc *pr = start_processor();
    const char *ids[] = {"a-1", "a-2", "a-3", "a-4", "a-5", "a-6"};
    Orders__V1__PlaceOrder m[6];
    for (size_t i = 0; i < 6; i++) {
        es_command_t c = place(ids[i], NULL, &m[i]);
        accepted(&c, 1, "orders.v1.OrderPlaced");
    }
    es_command_t c = simple("a-1", &confirm_msg.base, NULL);
    accepted(&c, 2, "orders.v1.OrderConfirmed");
    stop_processor(pr);

    records cmds, evs, snaps;
    read_topic("orders.order.commands", 0, &cmds);
    read_topic("orders.order.events", 1, &evs);
    read_topic("orders.order.snapshots", 0, &snaps);
    cr_assert_eq(cmds.n, 7);
    cr_assert_eq(evs.n, 7);
    cr_assert_eq(snaps.n, 7);
    int partitions_used = 0;
    for (size_t i = 0; i < evs.n; i++) {
        const record *e = &evs.r[i];
        cr_assert_str_eq(e->key, e->ev->aggregate_id);
        cr_assert_str_eq(e->ev->aggregate_type, "orders.order");
        char v[24];
        snprintf(v, sizeof v, "%llu", (unsigned long long)e->ev->version);
        cr_assert_str_eq(e->version_header, v);
        for (size_t j = 0; j < cmds.n; j++)
            if (!strcmp(cmds.r[j].key, e->key))
                cr_assert_eq(cmds.r[j].partition, e->partition, "%s", e->key);
        partitions_used |= 1 << e->partition;
    }
    cr_assert_gt(__builtin_popcount((unsigned)partitions_used), 1);
    free_records(&evs);
}

Test(kafka_processor, a_restarted_processor_continues_on_its_state_store) {
    proc *pr = start_processor();
    Orders__V1__PlaceOrder m;
    es_command_t c = place("o-1", "place-o-1", &m);
    accepted(&c, 1, "orders.v1.OrderPlaced");
    stop_processor(pr);

    pr = start_processor();
    c = simple("o-1", &confirm_msg.base, NULL);
    accepted(&c, 2, "orders.v1.OrderConfirmed");
    es_result_t res;
    es_error_t err = {0};
    c = place("o-1", "place-o-1", &m);
    cr_assert_eq(exec(&c, &res, &err), ES_OK, "%s", err.message);
    cr_assert(res.duplicate);
    cr_assert_eq(res.version, 1);
    es_result_clear(&res);
    stop_processor(pr);
}

/* Waits until the processor restored all PARTS partitions of the three types: it owns them. */
static int owns_all_partitions(proc *pr, int64_t deadline_us) {
    es_processor_stats_t st;
    for (;;) {
        es_processor_stats(pr->p, &st);
        if (st.restores >= 3 * PARTS)
            return 1;
        if (es_now_us() > deadline_us)
            return 0;
        es_sleep_ms(10);
    }
}

/* A processor restarted once its group is empty waits out the mock's 3 s delay of a join to an
 * empty group; with a session shorter than that, the mock expired it while it waited, dropped
 * its JoinGroup answer, and the processor served nothing for 5 min (commands timed out). The
 * mock checks sessions every second from the group's creation, so the restart is placed to
 * join 250 ms after such a check (a point in time, not a condition to wait on): the third check
 * then falls 2750 ms into the wait, where a 2.5 s session had run out. */
Test(kafka_processor, a_processor_restarted_on_an_empty_group_gets_its_partitions,
     .init = setup_traced) {
    int64_t started = es_now_us();
    proc *pr = start_processor();
    cr_assert(owns_all_partitions(pr, es_now_us() + 15000000), "the first processor's join");
    int64_t created = atomic_load(&group_seen.created_us), latency = created - started;
    stop_processor(pr);
    int64_t deadline = es_now_us() + 15000000;
    while (!atomic_load(&group_seen.emptied)) {
        cr_assert_lt(es_now_us(), deadline, "the mock never emptied the group");
        es_sleep_ms(10);
    }
    int64_t join_at =
        created + ((es_now_us() + latency - created) / 1000000 + 1) * 1000000 + 250000;
    es_sleep_ms((int)((join_at - latency - es_now_us()) / 1000));
    pr = start_processor();
    int owns = owns_all_partitions(pr, es_now_us() + 10000000);
    long long phase = (atomic_load(&group_seen.joined_us) - created) % 1000000 / 1000;
    cr_assert(owns,
              "the restarted processor got no partitions within 10 s (it joined %lld ms after a "
              "session check; the mock expired %d member(s) of the group)",
              phase, atomic_load(&group_seen.expired));
    cr_assert_eq(atomic_load(&group_seen.expired), 0);
    stop_processor(pr);
}

Test(kafka_processor, a_fresh_state_store_is_restored_from_the_topics) {
    proc *pr = start_processor();
    Orders__V1__PlaceOrder m;
    es_command_t c = place("o-1", "place-o-1", &m);
    accepted(&c, 1, "orders.v1.OrderPlaced");
    c = simple("o-1", &confirm_msg.base, "confirm-o-1");
    accepted(&c, 2, "orders.v1.OrderConfirmed");
    Orders__V1__PlaceOrder m2;
    c = place("o-2", NULL, &m2);
    accepted(&c, 1, "orders.v1.OrderPlaced");
    stop_processor(pr);
    long long ran_by_ms = es_now_us() / 1000;
    while (es_now_us() / 1000 <= ran_by_ms)
        ; /* the restore starts in a later millisecond than the commands ran in */

    set_state_db("fresh.db");
    pr = start_processor();
    c = simple("o-2", &confirm_msg.base, NULL);
    accepted(&c, 2, "orders.v1.OrderConfirmed");
    es_result_t res;
    es_error_t err = {0};
    c = place("o-1", "place-o-1", &m);
    cr_assert_eq(exec(&c, &res, &err), ES_OK, "%s", err.message);
    cr_assert(res.duplicate);
    cr_assert_eq(res.first_version, 1);
    cr_assert_eq(res.n_events, 1);
    cr_assert_str_eq(res.events[0]->event_type, "orders.v1.OrderPlaced");
    es_result_clear(&res);
    c = simple("o-1", &confirm_msg.base, "confirm-o-1");
    cr_assert_eq(exec(&c, &res, &err), ES_OK, "%s", err.message);
    cr_assert(res.duplicate);
    cr_assert_eq(res.version, 2);
    es_result_clear(&res);
    stop_processor(pr);
    /* A restored id keeps the time its command ran (its events' record time), so the window
     * counts from then, not from the restore: a rebalance does not lengthen it. */
    char *path = tu_path(dir, "fresh.db");
    cr_assert_leq(tu_query_int(path, "SELECT max(at) FROM es_commands WHERE id IN "
                                     "('place-o-1', 'confirm-o-1')"),
                  ran_by_ms, "the restored ids are dated at the restore");
    cr_assert_leq(tu_query_int(path, "SELECT (SELECT at FROM es_commands WHERE id = 'place-o-1') "
                                     "- (SELECT at FROM es_commands WHERE id = 'confirm-o-1')"),
                  0, "in the order their commands ran");
    free(path);
}

/* Produces one record, acknowledged, to a partition of topic. */
static void produce_raw(const char *topic, int32_t partition, const char *key, const void *value,
                        size_t len) {
    char errstr[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(c, quiet_log);
    cr_assert_eq(rd_kafka_conf_set(c, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(mock),
                                   errstr, sizeof errstr),
                 RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof errstr);
    cr_assert(rk, "%s", errstr);
    cr_assert_eq(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                                   RD_KAFKA_V_KEY(key, strlen(key)),
                                   RD_KAFKA_V_VALUE((void *)value, len),
                                   RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                 0);
    cr_assert_eq(rd_kafka_flush(rk, 10000), 0);
    rd_kafka_destroy(rk);
}

/* Produces an event for orders.order/<id> at version to the events partition, as a writer
 * that crashed before its local commit (or a zombie) would have left it. */
static void produce_event(const char *id, int32_t partition, uint64_t version,
                          const char *command_id) {
    Orders__V1__OrderConfirmed confirmed = ORDERS__V1__ORDER_CONFIRMED__INIT;
    uint8_t payload[8];
    size_t plen = orders__v1__order_confirmed__pack(&confirmed, payload);
    es_event_t ev = {.aggregate_type = "orders.order",
                     .aggregate_id = id,
                     .version = version,
                     .event_type = "orders.v1.OrderConfirmed",
                     .payload = payload,
                     .payload_len = plen,
                     .occurred_at_us = es_now_us(),
                     .command_id = command_id,
                     .correlation_id = command_id};
    es_uuid7(ev.event_id);
    uint8_t *bytes = NULL;
    size_t len = 0;
    es_error_t err = {0};
    cr_assert_eq(es_envelope_encode(&ev, &bytes, &len, &err), ES_OK, "%s", err.message);
    produce_raw("orders.order.events", partition, id, bytes, len);
    free(bytes);
}

/* o-1 placed (version 1) through a processor that is then stopped: the partition it is on. */
static int32_t placed_and_stopped(void) {
    proc *pr = start_processor();
    Orders__V1__PlaceOrder m;
    es_command_t c = place("o-1", "place-o-1", &m);
    accepted(&c, 1, "orders.v1.OrderPlaced");
    stop_processor(pr);
    records cmds;
    read_topic("orders.order.commands", 0, &cmds);
    cr_assert_eq(cmds.n, 1);
    int32_t partition = cmds.r[0].partition;
    free_records(&cmds);
    return partition;
}

Test(kafka_processor, events_in_kafka_but_not_in_the_state_store_are_restored_in_log_order) {
    int32_t p = placed_and_stopped();
    /* A crash after the events reached Kafka, before the local commit; then a zombie's fork. */
    produce_event("o-1", p, 2, "confirm-o-1");
    produce_event("o-1", p, 2, "zombie-confirm");

    proc *pr = start_processor();
    es_result_t res;
    es_error_t err = {0};
    es_command_t c = simple("o-1", &confirm_msg.base, "confirm-o-1");
    cr_assert_eq(exec(&c, &res, &err), ES_OK, "%s", err.message);
    cr_assert(res.duplicate);
    cr_assert_eq(res.version, 2);
    cr_assert_eq(res.n_events, 1);
    cr_assert_str_eq(res.events[0]->command_id, "confirm-o-1");
    es_result_clear(&res);
    c = simple("o-1", &confirm_msg.base, "zombie-confirm");
    cr_assert_eq(exec(&c, &res, &err), ES_EREJECTED);
    cr_assert_not(res.duplicate);
    cr_assert_eq(res.version, 2);
    cr_assert(strstr(res.reason, "already confirmed"), "%s", res.reason);
    es_result_clear(&res);
    c = simple("o-1", &cancel_msg.base, NULL);
    c.expect = ES_EXPECT_EXACT;
    c.expected_version = 3;
    cr_assert_eq(exec(&c, &res, &err), ES_ECONFLICT);
    cr_assert_eq(res.version, 2);
    es_result_clear(&res);
    stop_processor(pr);
}

/* The log-order rule for a restoring writer (logorder.h): a version past a hole is data loss.
 * Restoring past it would let the next command write a second event at the missing version, so
 * the partition stops with an error naming what is missing, and nothing is executed on it. */
Test(kafka_processor, a_gap_in_an_aggregates_events_stops_the_restore_naming_the_missing_versions) {
    produce_event("o-1", placed_and_stopped(), 3, "after-a-lost-second"); /* version 2 is lost */

    es_engine_destroy(caller); /* the next caller waits 3 s for an answer, not 20 */
    caller = NULL;
    set("execute.timeout.ms", "3000");
    set_state_db("fresh.db");
    proc *pr = start_processor();
    es_result_t res;
    es_error_t err = {0};
    es_command_t c = simple("o-1", &confirm_msg.base, "confirm-o-1");
    cr_assert_neq(exec(&c, &res, &err), ES_OK, "a command on the partition is not executed");
    es_result_clear(&res);
    cr_assert_eq(pthread_join(pr->thread, NULL), 0, "the processor stops by itself");
    cr_assert_eq(pr->rc, ES_EIO, "%s", pr->err.message);
    cr_assert(strstr(pr->err.message, "orders.order/o-1: version 3 follows version 1"), "%s",
              pr->err.message);
    cr_assert(strstr(pr->err.message, "versions 2..2 are missing"), "%s", pr->err.message);
    es_processor_stats_t st;
    es_processor_stats(pr->p, &st);
    cr_assert_geq(st.gaps, 1, "each restore that stopped at it");
    cr_assert_eq(st.stale, 0);
    es_processor_destroy(pr->p);
    es_engine_destroy(pr->engine);
    free(pr);
}

/* The state store is lost: the fingerprints come back from the events' envelopes. */
Test(kafka_processor, a_command_id_reused_for_another_command_is_refused_after_a_restore) {
    proc *pr = start_processor();
    Orders__V1__PlaceOrder m;
    es_command_t c = place("o-1", "place-o-1", &m);
    accepted(&c, 1, "orders.v1.OrderPlaced");
    stop_processor(pr);
    records evs;
    read_topic("orders.order.events", 1, &evs);
    cr_assert_eq(evs.n, 1);
    es_fingerprint_t fp;
    cr_assert(es_envelope_fingerprint(evs.r[0].ev, &fp), "the event carries its command's");
    cr_assert_eq(fp.type, es_fnv1a64("orders.v1.PlaceOrder", strlen("orders.v1.PlaceOrder")));
    free_records(&evs);

    set_state_db("fresh.db");
    pr = start_processor();
    es_result_t res;
    es_error_t err = {0};
    m.customer_id = "c-2";
    cr_assert_eq(exec(&c, &res, &err), ES_EIDREUSED, "%s: %s", es_strerror(res.code), err.message);
    cr_assert_eq(res.code, ES_EIDREUSED);
    cr_assert(strstr(err.message, "'place-o-1'") && strstr(err.message, "another payload"), "%s",
              err.message);
    es_result_clear(&res);
    c = simple("o-1", &cancel_msg.base, "place-o-1");
    cr_assert_eq(exec(&c, &res, &err), ES_EIDREUSED, "%s", err.message);
    cr_assert(strstr(err.message, "another command type"), "%s", err.message);
    es_result_clear(&res);
    c = place("o-1", "place-o-1", &m);
    cr_assert_eq(exec(&c, &res, &err), ES_OK, "%s", err.message);
    cr_assert(res.duplicate, "the same command is still a retry");
    cr_assert_eq(res.n_events, 1);
    es_result_clear(&res);
    stop_processor(pr);
}

/* Events written before eskit recorded fingerprints: their command ids are known, not what the
 * commands asked, so a duplicate is answered unchecked, as before. */
Test(kafka_processor, an_event_without_a_fingerprint_answers_its_command_id_unchecked) {
    proc *pr = start_processor();
    Orders__V1__PlaceOrder m;
    es_command_t c = place("o-1", NULL, &m);
    accepted(&c, 1, "orders.v1.OrderPlaced");
    stop_processor(pr);
    records cmds;
    read_topic("orders.order.commands", 0, &cmds);
    produce_event("o-1", cmds.r[0].partition, 2, "old-confirm-o-1");
    free_records(&cmds);

    set_state_db("fresh.db");
    pr = start_processor();
    es_result_t res;
    es_error_t err = {0};
    c = simple("o-1", &cancel_msg.base, "old-confirm-o-1");
    cr_assert_eq(exec(&c, &res, &err), ES_OK, "%s", err.message);
    cr_assert(res.duplicate);
    cr_assert_eq(res.n_events, 1);
    cr_assert_str_eq(res.events[0]->event_type, "orders.v1.OrderConfirmed");
    es_result_clear(&res);
    stop_processor(pr);
}

static es_processor_stats_t stats_of(const proc *pr) {
    es_processor_stats_t st;
    es_processor_stats(pr->p, &st);
    return st;
}

static void rejected(const es_command_t *cmd, uint64_t version, const char *reason) {
    es_result_t res;
    es_error_t err = {0};
    cr_assert_eq(exec(cmd, &res, &err), ES_EREJECTED, "%s", err.message);
    cr_assert_not(res.duplicate);
    cr_assert_eq(res.version, version);
    cr_assert(strstr(res.reason, reason), "%s", res.reason);
    es_result_clear(&res);
}

/* Writes a CommandEnvelope to orders.order.commands as any Kafka client could, PlaceOrder for
 * aggregate id, with these command id, metadata entry (key NULL: none) and reply_to. */
static void produce_command(const char *id, const char *command_id, const char *md_key,
                            const char *reply_to) {
    Orders__V1__PlaceOrder m;
    place(id, NULL, &m);
    uint8_t payload[256];
    size_t plen = orders__v1__place_order__pack(&m, payload);
    Eskit__V1__CommandEnvelope env = ESKIT__V1__COMMAND_ENVELOPE__INIT;
    Eskit__V1__CommandEnvelope__MetadataEntry md =
                                                  ESKIT__V1__COMMAND_ENVELOPE__METADATA_ENTRY__INIT,
                                              *mdp = &md;
    env.command_id = (char *)command_id;
    env.aggregate_type = "orders.order";
    env.aggregate_id = (char *)id;
    env.command_type = "orders.v1.PlaceOrder";
    env.payload = (ProtobufCBinaryData){plen, payload};
    env.reply_to = (char *)reply_to;
    if (md_key) {
        md.key = (char *)md_key;
        md.value = "v";
        env.n_metadata = 1;
        env.metadata = &mdp;
    }
    size_t len = eskit__v1__command_envelope__get_packed_size(&env);
    uint8_t *buf = malloc(len);
    cr_assert(buf);
    eskit__v1__command_envelope__pack(&env, buf);
    produce_raw("orders.order.commands", 0, id, buf, len);
    free(buf);
}

/* The reply to command_id on orders.order.replies, waited for; caller frees it. */
static Eskit__V1__CommandReply *reply_to_command(const char *command_id) {
    char errstr[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(c, quiet_log);
    cr_assert_eq(rd_kafka_conf_set(c, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(mock),
                                   errstr, sizeof errstr),
                 RD_KAFKA_CONF_OK);
    cr_assert_eq(rd_kafka_conf_set(c, "group.id", "test-replies", errstr, sizeof errstr),
                 RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, errstr, sizeof errstr);
    cr_assert(rk, "%s", errstr);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(PARTS);
    for (int32_t p = 0; p < PARTS; p++)
        rd_kafka_topic_partition_list_add(l, "orders.order.replies", p)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    cr_assert_eq(rd_kafka_assign(rk, l), 0);
    rd_kafka_topic_partition_list_destroy(l);
    Eskit__V1__CommandReply *found = NULL;
    int64_t deadline = es_now_us() / 1000 + 20000;
    while (!found && es_now_us() / 1000 < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        Eskit__V1__CommandReply *rep =
            m->err ? NULL : eskit__v1__command_reply__unpack(NULL, m->len, m->payload);
        if (rep && !strcmp(rep->command_id, command_id))
            found = rep;
        else if (rep)
            eskit__v1__command_reply__free_unpacked(rep, NULL);
        rd_kafka_message_destroy(m);
    }
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    cr_assert(found, "no reply to command %s", command_id);
    return found;
}

static void assert_error_reply(const char *command_id, const char *field) {
    Eskit__V1__CommandReply *rep = reply_to_command(command_id);
    cr_assert_eq(rep->outcome, ESKIT__V1__OUTCOME__OUTCOME_ERROR);
    cr_assert_eq(rep->code, ES_EINVAL, "%d: %s", rep->code, rep->reason);
    cr_assert(strstr(rep->reason, field), "the reason names the %s: %s", field, rep->reason);
    for (const char *p = rep->reason; *p; p++)
        cr_assert((unsigned char)*p >= 0x20 && *p != 0x7f, "control byte in: %s", rep->reason);
    eskit__v1__command_reply__free_unpacked(rep, NULL);
}

/* Whoever writes to the commands topic, a record breaking the limits is answered with an error
 * and appends nothing, and the partition goes on; replies never go into a log topic. */
Test(kafka_processor,
     a_command_record_breaking_the_limits_gets_an_error_reply_and_appends_nothing) {
    proc *pr = start_processor();
    char *huge = malloc(70 * 1024 + 1);
    cr_assert(huge);
    memset(huge, 'k', 70 * 1024);
    huge[70 * 1024] = '\0';
    produce_command("o-lim1", "bad\ncid\x1b[2J", NULL, "orders.order.replies");
    produce_command("o-lim2", "cid-huge-key", huge, "orders.order.replies");
    produce_command("o-lim3", "cid-bad-utf8-\xff", NULL, "orders.order.replies");
    produce_command("o-lim4", "cid-reply-to-events", NULL, "orders.order.events");
    free(huge);
    assert_error_reply("bad\ncid\x1b[2J", "command id");
    assert_error_reply("cid-huge-key", "metadata key");
    assert_error_reply("cid-bad-utf8-\xff", "command id");
    assert_error_reply("cid-reply-to-events", "reply_to");

    Orders__V1__PlaceOrder m;
    es_command_t c = place("o-lim-ok", NULL, &m); /* the partition goes on */
    accepted(&c, 1, "orders.v1.OrderPlaced");
    stop_processor(pr);
    records evs;
    read_topic("orders.order.events", 1, &evs);
    cr_assert_eq(evs.n, 1, "only the valid command appended");
    cr_assert_str_eq(evs.r[0].ev->aggregate_id, "o-lim-ok");
    free_records(&evs);
}

Test(kafka_processor, a_fresh_state_store_loads_its_aggregates_from_the_snapshots_topic) {
    proc *pr = start_processor();
    Orders__V1__PlaceOrder m[4];
    const char *ids[] = {"o-1", "o-2", "o-3", "o-4"};
    es_command_t c = place("o-1", "place-o-1", &m[0]);
    accepted(&c, 1, "orders.v1.OrderPlaced");
    for (size_t i = 1; i < 4; i++) {
        c = place(ids[i], NULL, &m[i]);
        accepted(&c, 1, "orders.v1.OrderPlaced");
    }
    c = simple("o-1", &confirm_msg.base, NULL);
    accepted(&c, 2, "orders.v1.OrderConfirmed");
    stop_processor(pr);

    set_state_db("fresh.db");
    pr = start_processor_on(new_counting_engine());
    /* Decided on the restored state: o-1 is confirmed, o-2 and o-3 placed. */
    c = simple("o-1", &confirm_msg.base, NULL);
    rejected(&c, 2, "already confirmed");
    c = place("o-2", NULL, &m[1]);
    rejected(&c, 1, "already placed");
    c = simple("o-2", &confirm_msg.base, NULL);
    accepted(&c, 2, "orders.v1.OrderConfirmed");
    c = simple("o-3", &cancel_msg.base, NULL);
    accepted(&c, 2, "orders.v1.OrderCancelled");
    /* The events under the snapshots are there too: a command id seen before still runs once. */
    es_result_t res;
    es_error_t err = {0};
    c = place("o-1", "place-o-1", &m[0]);
    cr_assert_eq(exec(&c, &res, &err), ES_OK, "%s", err.message);
    cr_assert(res.duplicate);
    cr_assert_eq(res.version, 1);
    cr_assert_eq(res.n_events, 1);
    cr_assert_str_eq(res.events[0]->event_type, "orders.v1.OrderPlaced");
    es_result_clear(&res);

    es_processor_stats_t st = stats_of(pr);
    cr_assert_geq(st.restores, 1);
    cr_assert_eq(st.events_imported, 5);
    cr_assert_eq(st.events_skipped, 0);
    cr_assert_eq(st.snapshots_imported, 4, "one per aggregate, the newest");
    cr_assert_eq(st.snapshots_malformed, 0);
    cr_assert_eq(st.snapshots_unused, 1, "o-1's first snapshot, superseded");
    /* Loads started from the snapshots: the only events folded are the two new ones. */
    cr_assert_eq(atomic_load(&order_folds), 2);
    stop_processor(pr);

    records snaps;
    read_topic("orders.order.snapshots", 0, &snaps);
    cr_assert_eq(snaps.n, 7);
}

/* The partition of the commands (and events, and snapshots) of orders.order/<id>. */
static int32_t partition_of(const records *cmds, const char *id) {
    for (size_t i = 0; i < cmds->n; i++)
        if (!strcmp(cmds->r[i].key, id))
            return cmds->r[i].partition;
    cr_assert_fail("no command for %s", id);
    return -1;
}

/* The events offset of orders.order/<id> at version. */
static int64_t event_offset(const records *evs, const char *id, uint64_t version) {
    for (size_t i = 0; i < evs->n; i++)
        if (!strcmp(evs->r[i].key, id) && evs->r[i].ev->version == version)
            return evs->r[i].offset;
    cr_assert_fail("no event %s v%llu", id, (unsigned long long)version);
    return -1;
}

static void produce_snapshot(const char *key, const char *id, uint64_t version,
                             const char *state_type, const void *state, size_t state_len,
                             int64_t events_offset, int32_t partition) {
    Eskit__V1__Snapshot s = ESKIT__V1__SNAPSHOT__INIT;
    uint8_t buf[512];
    s.aggregate_type = "orders.order";
    s.aggregate_id = (char *)id;
    s.version = version;
    s.state_type = (char *)state_type;
    s.state = (ProtobufCBinaryData){state_len, (uint8_t *)state};
    s.taken_at_us = es_now_us();
    s.events_offset = events_offset;
    cr_assert_leq(eskit__v1__snapshot__get_packed_size(&s), sizeof buf);
    size_t len = eskit__v1__snapshot__pack(&s, buf);
    produce_raw("orders.order.snapshots", partition, key, buf, len);
}

/* Another writer (a zombie, or the next owner after a rebalance) appends to an events partition
 * this processor still serves; the processor's next event on that partition lands after it. The
 * state store must not skip that record: a command it answered is a duplicate here too. */
Test(kafka_processor, another_writers_event_is_restored_before_the_partition_moves_on) {
    proc *pr = start_processor();
    Orders__V1__PlaceOrder m;
    char ids[8][8], cid[96];
    for (int i = 0; i < 8; i++) {
        snprintf(ids[i], sizeof ids[i], "o-%d", i + 1);
        snprintf(cid, sizeof cid, "place-%s", ids[i]);
        es_command_t c = place(ids[i], cid, &m);
        accepted(&c, 1, "orders.v1.OrderPlaced");
    }
    records cmds;
    read_topic("orders.order.commands", 0, &cmds);
    int32_t part = partition_of(&cmds, "o-1");
    const char *other = NULL;
    for (int i = 1; i < 8 && !other; i++)
        if (partition_of(&cmds, ids[i]) == part)
            other = ids[i];
    free_records(&cmds);
    cr_assert(other, "no second order in partition %d", (int)part);

    produce_event("o-1", part, 2, "confirm-o-1"); /* the other writer confirms o-1 */
    es_result_t res;
    es_error_t err = {0};
    es_command_t c = simple(other, &confirm_msg.base, "confirm-other");
    cr_assert_eq(exec(&c, &res, &err), ES_OK, "%s", err.message);
    cr_assert_eq(res.version, 2);
    es_result_clear(&res);

    c = simple("o-1", &confirm_msg.base, "confirm-o-1");
    cr_assert_eq(exec(&c, &res, &err), ES_OK, "%s", err.message);
    cr_assert(res.duplicate, "the other writer's event is missing from the state store");
    cr_assert_eq(res.version, 2);
    es_result_clear(&res);
    c = simple("o-1", &cancel_msg.base, "cancel-o-1");
    rejected(&c, 2, "already confirmed");
    read_topic("orders.order.events", 1, &cmds);
    for (size_t i = 0; i < cmds.n; i++)
        cr_assert(strcmp(cmds.r[i].key, "o-1") || cmds.r[i].ev->version <= 2,
                  "o-1 got version %llu", (unsigned long long)cmds.r[i].ev->version);
    free_records(&cmds);
    stop_processor(pr);
}

Test(kafka_processor, malformed_or_unmatched_snapshots_are_skipped_by_restore) {
    proc *pr = start_processor();
    Orders__V1__PlaceOrder m1, m2;
    es_command_t c = place("o-1", NULL, &m1);
    accepted(&c, 1, "orders.v1.OrderPlaced");
    c = simple("o-1", &confirm_msg.base, NULL);
    accepted(&c, 2, "orders.v1.OrderConfirmed");
    c = place("o-2", NULL, &m2);
    accepted(&c, 1, "orders.v1.OrderPlaced");

    /* Written while the processor runs, so that the next one joins the group soon after this
     * one leaves, before the mock empties it (session.timeout.ms - 1 s): quicker than waiting
     * out its 3 s delay of a join to an empty group. */
    records cmds, evs;
    read_topic("orders.order.commands", 0, &cmds);
    int32_t p1 = partition_of(&cmds, "o-1"), p2 = partition_of(&cmds, "o-2");
    /* A zombie's fork of o-2 at version 1, and its snapshot: well-formed, newest for o-2, but
     * taken at an event restore skips (log-order rule), so it must not be trusted. */
    produce_event("o-2", p2, 1, "zombie-o-2");
    read_topic("orders.order.events", 1, &evs);
    int64_t o1v2 = event_offset(&evs, "o-1", 2), zombie = -1;
    for (size_t i = 0; i < evs.n; i++)
        if (!strcmp(evs.r[i].ev->command_id, "zombie-o-2"))
            zombie = evs.r[i].offset;
    free_records(&evs);
    const char *state_type = orders__v1__order__descriptor.name;
    Orders__V1__Order cancelled = ORDERS__V1__ORDER__INIT;
    uint8_t state[64];
    cancelled.status = ORDERS__V1__ORDER_STATUS__ORDER_STATUS_CANCELLED;
    size_t state_len = orders__v1__order__pack(&cancelled, state);
    produce_snapshot("o-2", "o-2", 1, state_type, state, state_len, zombie, p2);
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x07};
    produce_raw("orders.order.snapshots", p1, "o-1", junk, sizeof junk);
    /* Decode, but: under another key; of another state type; with a state that is junk. */
    produce_snapshot("o-9", "o-1", 2, state_type, "", 0, o1v2, p1);
    produce_snapshot("o-1", "o-1", 2, "orders.v1.Other", "", 0, o1v2, p1);
    produce_snapshot("o-1", "o-1", 2, state_type, junk, sizeof junk, o1v2, p1);
    stop_processor(pr);

    set_state_db("fresh.db");
    pr = start_processor();
    c = simple("o-1", &confirm_msg.base, NULL);
    rejected(&c, 2, "already confirmed");
    c = simple("o-2", &confirm_msg.base, NULL);
    accepted(&c, 2, "orders.v1.OrderConfirmed");

    es_processor_stats_t st = stats_of(pr);
    cr_assert_eq(st.events_imported, 3);
    cr_assert_eq(st.events_skipped, 1, "the zombie's");
    cr_assert_eq(st.stale, 1, "the zombie's, by the log-order rule");
    cr_assert_eq(st.gaps, 0);
    cr_assert_eq(st.snapshots_malformed, 4);
    cr_assert_eq(st.snapshots_imported, 1, "o-1 at version 2");
    cr_assert_eq(st.snapshots_unused, 3, "o-1 v1 and o-2 v1 (superseded), the zombie's");
    stop_processor(pr);
}

Test(kafka_processor, with_kafka_transactions_configured_commands_still_run_once) {
    set("kafka.transactional.id", "svc-orders-0");
    proc *pr = start_processor();
    Orders__V1__PlaceOrder m;
    es_command_t c = place("o-1", "place-o-1", &m);
    accepted(&c, 1, "orders.v1.OrderPlaced");
    es_result_t res;
    es_error_t err = {0};
    cr_assert_eq(exec(&c, &res, &err), ES_OK, "%s", err.message);
    cr_assert(res.duplicate);
    es_result_clear(&res);
    stop_processor(pr);
    records evs;
    read_topic("orders.order.events", 1, &evs);
    cr_assert_eq(evs.n, 1);
    free_records(&evs);
}

Test(kafka_processor, without_a_processor_execute_times_out) {
    set("execute.timeout.ms", "1500");
    Orders__V1__PlaceOrder m;
    es_command_t c = place("o-1", "place-o-1", &m);
    es_result_t res;
    es_error_t err = {0};
    int64_t t0 = es_now_us();
    cr_assert_eq(exec(&c, &res, &err), ES_ETIMEOUT);
    cr_assert_lt(es_now_us() - t0, 10 * 1000000LL);
    cr_assert(strstr(err.message, "place-o-1"), "%s", err.message);
    cr_assert(strstr(err.message, "same command id"), "%s", err.message);
}

/* ---- many callers on one engine ----------------------------------------------------------- */

#define CALLERS 4
#define SINGLES 6
#define BATCHED 6

typedef struct caller_run {
    int n;
    es_err rc;
    char why[600];
    int shared_duplicate; /* the result of the command id every caller sends: a duplicate? */
} caller_run;

/* Fails the run with a message instead of asserting: Criterion asserts on the test's thread. */
static int check_placed(caller_run *cr, const es_result_t *res, const char *id, const char *cid) {
    if (res->outcome != ES_OUTCOME_ACCEPTED || res->n_events != 1 || res->version != 1 ||
        strcmp(res->events[0]->aggregate_id, id) || strcmp(res->command_id, cid) ||
        strcmp(res->events[0]->command_id, cid)) {
        snprintf(cr->why, sizeof cr->why, "%s (%s): outcome %d, %zu events, version %llu", id, cid,
                 (int)res->outcome, res->n_events, (unsigned long long)res->version);
        return -1;
    }
    return 0;
}

static void *place_many(void *opaque) {
    caller_run *cr = opaque;
    char ids[SINGLES + BATCHED][32], cids[SINGLES + BATCHED][40];
    Orders__V1__PlaceOrder msgs[SINGLES + BATCHED + 1];
    es_command_t cmds[SINGLES + BATCHED];
    es_result_t res[BATCHED];
    es_error_t err = {0};
    for (int i = 0; i < SINGLES + BATCHED; i++) {
        snprintf(ids[i], sizeof ids[i], "o-%d-%d", cr->n, i);
        snprintf(cids[i], sizeof cids[i], "place-%d-%d", cr->n, i);
        cmds[i] = place(ids[i], cids[i], &msgs[i]);
    }
    for (int i = 0; i < SINGLES && cr->rc == ES_OK; i++) {
        cr->rc = es_execute(caller, &cmds[i], &res[0], &err);
        if (cr->rc == ES_OK && check_placed(cr, &res[0], ids[i], cids[i]))
            cr->rc = ES_EIO;
        else if (cr->rc != ES_OK)
            snprintf(cr->why, sizeof cr->why, "%s", err.message);
        es_result_clear(&res[0]);
    }
    if (cr->rc == ES_OK)
        cr->rc = es_execute_batch(caller, &cmds[SINGLES], BATCHED, res, &err);
    if (cr->rc != ES_OK && !cr->why[0])
        snprintf(cr->why, sizeof cr->why, "%s", err.message);
    for (int i = 0; cr->rc == ES_OK && i < BATCHED; i++)
        if (check_placed(cr, &res[i], ids[SINGLES + i], cids[SINGLES + i]))
            cr->rc = ES_EIO;
    for (int i = 0; i < BATCHED; i++)
        es_result_clear(&res[i]);
    es_command_t shared = place("o-shared", "place-o-shared", &msgs[SINGLES + BATCHED]);
    if (cr->rc == ES_OK) {
        cr->rc = es_execute(caller, &shared, &res[0], &err);
        if (cr->rc != ES_OK)
            snprintf(cr->why, sizeof cr->why, "%s", err.message);
        else if (check_placed(cr, &res[0], "o-shared", "place-o-shared"))
            cr->rc = ES_EIO;
        cr->shared_duplicate = res[0].duplicate;
        es_result_clear(&res[0]);
    }
    return NULL;
}

Test(kafka_processor, callers_on_many_threads_share_one_engine_and_each_gets_its_own_replies) {
    proc *pr = start_processor();
    caller = new_engine();
    pthread_t threads[CALLERS];
    caller_run runs[CALLERS];
    for (int t = 0; t < CALLERS; t++) {
        runs[t] = (caller_run){.n = t};
        cr_assert_eq(pthread_create(&threads[t], NULL, place_many, &runs[t]), 0);
    }
    int firsts = 0;
    for (int t = 0; t < CALLERS; t++) {
        cr_assert_eq(pthread_join(threads[t], NULL), 0);
        cr_assert_eq(runs[t].rc, ES_OK, "caller %d: %s", t, runs[t].why);
        firsts += !runs[t].shared_duplicate;
    }
    cr_assert_eq(firsts, 1, "the shared command id ran %d times", firsts);
    stop_processor(pr);
    records evs;
    read_topic("orders.order.events", 1, &evs);
    cr_assert_eq(evs.n, CALLERS * (SINGLES + BATCHED) + 1);
    free_records(&evs);
}

/* A processor serving orders.order only: inventory.item's commands wait unanswered. */
static proc *start_orders_processor(void) {
    es_engine_t *e = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &e, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_engine_register(e, &demo_order_def, NULL, &err), ES_OK, "%s", err.message);
    return start_processor_on(e);
}

typedef struct restock_run {
    atomic_int done;
    es_err rc;
    es_error_t err;
} restock_run;

static void *restock(void *opaque) {
    restock_run *rr = opaque;
    Inventory__V1__Restock msg = INVENTORY__V1__RESTOCK__INIT;
    msg.quantity = 5;
    es_command_t c = {.aggregate_type = "inventory.item",
                      .aggregate_id = "sku-1",
                      .message = &msg.base,
                      .command_id = "restock-sku-1"};
    es_result_t res;
    rr->rc = es_execute(caller, &c, &res, &rr->err);
    if (rr->rc == ES_OK)
        es_result_clear(&res);
    atomic_store(&rr->done, 1);
    return NULL;
}

Test(kafka_processor, a_call_waiting_for_its_reply_does_not_hold_up_other_threads) {
    proc *pr = start_orders_processor();
    caller = new_engine();
    restock_run rr = {0};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, restock, &rr), 0);
    records cmds = {0};
    /* the restock is in Kafka: its call now waits for a reply */
    for (int waited = 0; cmds.n == 0; waited += 20) {
        cr_assert_lt(waited, 30000, "the restock never reached inventory.item.commands");
        usleep(20000);
        read_topic("inventory.item.commands", 0, &cmds);
    }
    Orders__V1__PlaceOrder m;
    es_command_t c = place("o-1", "place-o-1", &m);
    accepted(&c, 1, "orders.v1.OrderPlaced");
    cr_assert_not(atomic_load(&rr.done), "the restock's call ended before an owner served it");
    stop_processor(pr);
    pr = start_processor(); /* now inventory.item has an owner, which answers the restock */
    cr_assert_eq(pthread_join(t, NULL), 0);
    cr_assert_eq(rr.rc, ES_OK, "%s", rr.err.message);
    stop_processor(pr);
}

/* A new owner reads the live state, not the history: with snapshot.every=2, o-1's two events
 * are covered by its snapshot and lie outside idempotency.window.ms, so restore seeds o-1 at
 * that snapshot and does not read them; o-2 has no snapshot and is restored whole (its
 * partition's horizon stays at its event); o-4's command, inside the window, is still answered
 * as a duplicate after the move, while o-1's, outside it, runs again as new. */
Test(kafka_processor, a_new_owner_reads_snapshots_and_the_window_not_the_history) {
    set("snapshot.every", "2");
    set("idempotency.window.ms", "5000");
    proc *pr = start_processor();
    Orders__V1__PlaceOrder m[3];
    es_command_t c = place("o-1", "place-o-1", &m[0]);
    accepted(&c, 1, "orders.v1.OrderPlaced");
    c = simple("o-1", &confirm_msg.base, "confirm-o-1");
    accepted(&c, 2, "orders.v1.OrderConfirmed");
    c = place("o-2", "place-o-2", &m[1]);
    accepted(&c, 1, "orders.v1.OrderPlaced");
    usleep(5200 * 1000); /* o-1's and o-2's events leave the window */
    c = place("o-4", "place-o-4", &m[2]);
    accepted(&c, 1, "orders.v1.OrderPlaced");
    stop_processor(pr);

    set_state_db("fresh.db");
    pr = start_processor();
    es_result_t res;
    es_error_t err = {0};
    c = place("o-4", "place-o-4", &m[2]); /* inside the window: the first answer, its events */
    cr_assert_eq(exec(&c, &res, &err), ES_OK, "%s", err.message);
    cr_assert(res.duplicate);
    cr_assert_eq(res.version, 1);
    cr_assert_eq(res.n_events, 1);
    cr_assert_str_eq(res.events[0]->event_type, "orders.v1.OrderPlaced");
    es_result_clear(&res);
    es_processor_stats_t st = stats_of(pr);
    char *text = mx_scrape(); /* the count restore did not even read, only in the metrics */
    cr_assert_eq(mx_value(text, "eskit_processor_records_skipped_total{service=\"svc\","
                                "reason=\"covered\"}"),
                 2, "o-1's two events");
    free(text);
    cr_assert_eq(st.events_imported, 2, "o-2's (no snapshot) and o-4's (inside the window)");
    cr_assert_geq(st.snapshots_imported, 1, "o-1's, which its stream starts at");
    cr_assert_eq(st.gaps, 0);
    /* The same state and versions as a full restore. */
    c = simple("o-1", &confirm_msg.base, NULL);
    rejected(&c, 2, "already confirmed");
    c = simple("o-2", &confirm_msg.base, NULL);
    accepted(&c, 2, "orders.v1.OrderConfirmed");
    c = simple("o-1", &cancel_msg.base, NULL);
    rejected(&c, 2, "already confirmed");
    /* Outside the window o-1's command id is forgotten: the retry is decided again. */
    c = simple("o-1", &confirm_msg.base, "confirm-o-1");
    rejected(&c, 2, "already confirmed");
    stop_processor(pr);
    /* What the operator's check of the state store says: o-1 starts at its snapshot. */
    es_config_t *vc = tu_config(dir, "fresh.db");
    es_verify_summary_t sum;
    cr_assert_eq(es_store_verify(vc, NULL, NULL, NULL, &sum, &err), ES_OK, "%s", err.message);
    cr_assert_eq(sum.problems, 0, "the restored state store: %llu problem(s)",
                 (unsigned long long)sum.problems);
    es_config_destroy(vc);
}
