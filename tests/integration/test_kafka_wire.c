/*
 * Each of the Kafka wire module's producers (events and saga transitions, commands, replies,
 * snapshots, dead letters) sends a record to librdkafka's mock cluster; a consumer made by the
 * module reads it back, and the module's one header parser finds exactly the headers
 * proto/README.md lists for its kind, with the values the producer was given.
 */
#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka/wire.h"
#include "testutil.h"

static rd_kafka_t *mock_rk, *producer, *consumer;
static rd_kafka_mock_cluster_t *mock;
static es_config_t *cfg;
static int delivered, failed;

static void quiet(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk, (void)level, (void)fac, (void)buf;
}

static void count_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk, (void)opaque;
    if (m->err)
        failed++;
    else
        delivered++;
}

static const char *const TOPICS[] = {"orders.order.events",     "orders.order.commands",
                                     "orders.order.replies",    "orders.order.snapshots",
                                     "orders.order.events.dlq", "orders.fulfilment.saga.events"};

static void setup(void) {
    char errstr[256];
    es_error_t err = {0};
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(c, quiet);
    mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof errstr);
    cr_assert(mock_rk, "%s", errstr);
    mock = rd_kafka_mock_cluster_new(mock_rk, 1);
    cr_assert(mock);
    for (size_t i = 0; i < sizeof TOPICS / sizeof *TOPICS; i++)
        cr_assert_eq(rd_kafka_mock_topic_create(mock, TOPICS[i], 1, 1), 0, "%s", TOPICS[i]);
    cfg = es_config_new();
    cr_assert_eq(es_config_set(cfg, "brokers", rd_kafka_mock_cluster_bootstraps(mock), &err), ES_OK,
                 "%s", err.message);
    es_kafka_opts_t p = {.role = ES_KAFKA_PRODUCER, .quiet = 1, .dr_cb = count_dr};
    cr_assert_eq(es_kafka_new(cfg, &p, &producer, &err), ES_OK, "%s", err.message);
    es_kafka_opts_t k = {.role = ES_KAFKA_CONSUMER,
                         .group = "test.wire",
                         .offset_reset = "earliest",
                         .fetch_wait_ms = 50,
                         .quiet = 1};
    cr_assert_eq(es_kafka_new(cfg, &k, &consumer, &err), ES_OK, "%s", err.message);
}

static void teardown(void) {
    es_kafka_destroy(consumer, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    es_kafka_destroy(producer, 0);
    es_config_destroy(cfg);
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_rk);
}

TestSuite(kafka_wire_records, .init = setup, .fini = teardown, .timeout = 60);

static void flush(void) {
    cr_assert_eq(rd_kafka_flush(producer, 10000), RD_KAFKA_RESP_ERR_NO_ERROR,
                 "the records were not acknowledged within 10 s");
    cr_assert_eq(failed, 0, "%d records were refused", failed);
}

/* The first record of topic's partition 0, read back (the caller destroys it). */
static rd_kafka_message_t *read_back(const char *topic) {
    rd_kafka_topic_partition_list_t *want = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(want, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    cr_assert_eq(rd_kafka_assign(consumer, want), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(want);
    for (int tries = 0; tries < 200; tries++) { /* 200 polls of up to 100 ms: 20 s */
        rd_kafka_message_t *m = rd_kafka_consumer_poll(consumer, 100);
        if (!m)
            continue;
        if (!m->err)
            return m;
        rd_kafka_message_destroy(m);
    }
    cr_assert_fail("nothing came back from %s within 20 s", topic);
    return NULL;
}

/* Reads topic's record back and checks its headers are exactly kind's. */
static es_kafka_headers_t headers_of(const char *topic, es_kafka_kind kind, const char *key) {
    rd_kafka_message_t *m = read_back(topic);
    es_kafka_headers_t h;
    es_error_t err = {0};
    cr_assert_eq(es_kafka_message_headers(m, &h), ES_OK, "%s: a header is malformed", topic);
    cr_expect_eq(es_kafka_check_headers(&h, kind, &err), ES_OK, "%s: %s", topic, err.message);
    rd_kafka_headers_t *raw = NULL;
    size_t n = rd_kafka_message_headers(m, &raw) ? 0 : rd_kafka_header_cnt(raw);
    cr_expect_eq(n, (size_t)__builtin_popcount(es_kafka_kind_headers(kind)),
                 "%s: %zu headers on the wire", topic, n);
    cr_expect_eq(m->key_len, key ? strlen(key) : 0, "%s: key", topic);
    if (key && m->key_len == strlen(key))
        cr_expect(!memcmp(m->key, key, m->key_len), "%s: key", topic);
    rd_kafka_message_destroy(m);
    return h;
}

static uint8_t *bytes(const char *s, size_t *len) {
    *len = strlen(s);
    uint8_t *b = malloc(*len);
    memcpy(b, s, *len);
    return b;
}

Test(kafka_wire_records, an_event_and_a_saga_transition_carry_the_four_event_headers) {
    es_error_t err = {0};
    size_t len = 0;
    es_event_t ev = {.aggregate_type = "orders.order",
                     .aggregate_id = "o-1",
                     .version = 3,
                     .event_type = "orders.v1.OrderPlaced",
                     .correlation_id = "corr-1"};
    snprintf(ev.event_id, sizeof ev.event_id, "%s", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");
    cr_assert_eq(es_kafka_produce_event(producer, TOPICS[0], 0, &ev, bytes("envelope", &len), len,
                                        NULL, &err),
                 ES_OK, "%s", err.message);
    es_event_t tr = {.aggregate_type = "orders.fulfilment.saga",
                     .aggregate_id = "saga-1",
                     .version = 1,
                     .event_type = "eskit.v1.SagaTransition"}; /* no correlation id: empty */
    snprintf(tr.event_id, sizeof tr.event_id, "%s", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c");
    cr_assert_eq(es_kafka_produce_event(producer, TOPICS[5], RD_KAFKA_PARTITION_UA, &tr,
                                        bytes("transition", &len), len, NULL, &err),
                 ES_OK, "%s", err.message);
    flush();
    es_kafka_headers_t h = headers_of(TOPICS[0], ES_KAFKA_EVENT, "o-1");
    cr_expect_str_eq(h.event_type, "orders.v1.OrderPlaced");
    cr_expect_eq(h.version, 3);
    cr_expect_str_eq(h.event_id, ev.event_id);
    cr_expect_str_eq(h.correlation_id, "corr-1");
    h = headers_of(TOPICS[5], ES_KAFKA_EVENT, "saga-1");
    cr_expect_str_eq(h.event_type, "eskit.v1.SagaTransition");
    cr_expect_eq(h.version, 1);
    cr_expect_str_eq(h.correlation_id, "");
}

Test(kafka_wire_records, a_command_carries_its_reply_partition_and_replies_and_snapshots_none) {
    es_error_t err = {0};
    size_t len = 0;
    es_kafka_record_t cmd = {.kind = ES_KAFKA_COMMAND,
                             .topic = TOPICS[1],
                             .partition = RD_KAFKA_PARTITION_UA,
                             .key = "o-1",
                             .value = bytes("command", &len),
                             .len = len,
                             .reply_partition = 0};
    cr_assert_eq(es_kafka_produce(producer, &cmd, &err), ES_OK, "%s", err.message);
    es_kafka_record_t rep = {.kind = ES_KAFKA_REPLY,
                             .topic = TOPICS[2],
                             .partition = 0,
                             .key = "cmd-1",
                             .value = "reply",
                             .len = 5,
                             .copy = 1};
    cr_assert_eq(es_kafka_produce(producer, &rep, &err), ES_OK, "%s", err.message);
    es_kafka_record_t snap = rep;
    snap.kind = ES_KAFKA_SNAPSHOT;
    snap.topic = TOPICS[3];
    snap.key = "o-1";
    cr_assert_eq(es_kafka_produce(producer, &snap, &err), ES_OK, "%s", err.message);
    flush();
    cr_expect_eq(headers_of(TOPICS[1], ES_KAFKA_COMMAND, "o-1").reply_partition, 0);
    cr_expect_eq(headers_of(TOPICS[2], ES_KAFKA_REPLY, "cmd-1").seen, 0);
    cr_expect_eq(headers_of(TOPICS[3], ES_KAFKA_SNAPSHOT, "o-1").seen, 0);
}

Test(kafka_wire_records, a_dead_letter_carries_where_it_was_read_why_and_its_ref) {
    es_error_t err = {0};
    es_kafka_dlq_t d = {"svc.summary", "orders.order.events",  0, 17, 2, ES_EDECODE,
                        "bad bytes",   "orders.v1.OrderPlaced"};
    es_kafka_dlq_headers_t dh;
    es_kafka_dlq_headers(&d, &dh);
    cr_assert_str_eq(dh.topic, TOPICS[4]);
    const uint8_t parked[] = {0xff, 0x00, 0x01};
    cr_assert_eq(es_kafka_produce_dlq(producer, dh.topic, dh.ref, "o-1", parked, sizeof parked,
                                      dh.kv, ES_KAFKA_DLQ_HEADERS, NULL, &err),
                 ES_OK, "%s", err.message);
    flush();
    es_kafka_headers_t h = headers_of(TOPICS[4], ES_KAFKA_DLQ, "o-1");
    cr_expect_str_eq(h.dlq_group, "svc.summary");
    cr_expect_str_eq(h.dlq_topic, "orders.order.events");
    cr_expect_eq(h.dlq_partition, 0);
    cr_expect_eq(h.dlq_offset, 17);
    cr_expect_eq(h.dlq_attempts, 2);
    cr_expect_str_eq(h.dlq_code, "ES_EDECODE");
    cr_expect_str_eq(h.dlq_error, "bad bytes");
    cr_expect_str_eq(h.event_type, "orders.v1.OrderPlaced");
    cr_expect_str_eq(h.dlq_ref, "svc.summary/orders.order.events/0/17");
}
