/*
 * The Kafka wire module (core/src/kafka/wire.h) on its own, without a broker: the one error
 * policy, the handles' settings, and the header writer read back by the header parser.
 */
#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka/wire.h"

TestSuite(kafka_wire);

/* ---- errors -------------------------------------------------------------------------------- */

static const struct {
    rd_kafka_resp_err_t e;
    es_err want;
} policy[] = {
    {RD_KAFKA_RESP_ERR_NO_ERROR, ES_OK},
    {RD_KAFKA_RESP_ERR__TIMED_OUT, ES_ETIMEOUT},
    {RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE, ES_ETIMEOUT},
    {RD_KAFKA_RESP_ERR__MSG_TIMED_OUT, ES_ETIMEOUT},
    {RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, ES_ETIMEOUT},
    {RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, ES_ENOTFOUND},
    {RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC, ES_ENOTFOUND},
    {RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION, ES_ENOTFOUND},
    {RD_KAFKA_RESP_ERR__TRANSPORT, ES_EKAFKA},
    {RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN, ES_EKAFKA},
    {RD_KAFKA_RESP_ERR__RESOLVE, ES_EKAFKA},
    {RD_KAFKA_RESP_ERR__QUEUE_FULL, ES_EKAFKA},
    {RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, ES_EKAFKA},
    {RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, ES_EKAFKA},
    {RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, ES_EKAFKA},
    {RD_KAFKA_RESP_ERR__FATAL, ES_EKAFKA},
};

Test(kafka_wire, every_librdkafka_timeout_is_a_timeout_and_a_missing_topic_is_not_found) {
    for (size_t i = 0; i < sizeof policy / sizeof *policy; i++)
        cr_expect_eq(es_kafka_code(policy[i].e), policy[i].want, "%s: %s, want %s",
                     rd_kafka_err2name(policy[i].e), es_strerror(es_kafka_code(policy[i].e)),
                     es_strerror(policy[i].want));
}

Test(kafka_wire, an_error_object_maps_by_its_code_and_is_never_a_success) {
    for (size_t i = 0; i < sizeof policy / sizeof *policy; i++) {
        rd_kafka_error_t *ke = rd_kafka_error_new(policy[i].e, "%s", "test");
        es_err want = policy[i].want == ES_OK ? ES_EKAFKA : policy[i].want;
        cr_expect_eq(es_kafka_error_code(ke), want, "%s", rd_kafka_err2name(policy[i].e));
        rd_kafka_error_destroy(ke);
    }
}

static es_config_t *config(void) {
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "brokers", "127.0.0.1:1", &err), ES_OK, "%s", err.message);
    return cfg;
}

Test(kafka_wire, a_failure_says_what_failed_in_librdkafkas_words_and_names_the_brokers) {
    es_config_t *cfg = config();
    es_kafka_opts_t o = {.role = ES_KAFKA_ADMIN, .quiet = 1};
    rd_kafka_t *rk = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_kafka_new(cfg, &o, &rk, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_kafka_fail(rk, RD_KAFKA_RESP_ERR__TIMED_OUT, NULL, &err, "reading %s", "x"),
                 ES_ETIMEOUT);
    cr_expect_str_eq(err.message, "reading x: Local: Timed out (brokers 127.0.0.1:1); are the "
                                  "brokers up?");
    rd_kafka_error_t *ke = rd_kafka_error_new(RD_KAFKA_RESP_ERR__TIMED_OUT, "commit timed out");
    cr_assert_eq(es_kafka_fail_error(rk, ke, "retry", &err, "committing"), ES_ETIMEOUT);
    cr_expect_str_eq(err.message, "committing: commit timed out (brokers 127.0.0.1:1); retry");
    cr_assert_eq(es_kafka_fail(rk, RD_KAFKA_RESP_ERR__TRANSPORT, NULL, &err, "sending"), ES_EKAFKA);
    cr_expect(strstr(err.message, "the Kafka brokers 127.0.0.1:1 are unreachable"), "%s",
              err.message);
    cr_expect(strstr(err.message, "retry once they are back"), "%s", err.message);
    es_kafka_destroy(rk, 0);
    es_config_destroy(cfg);
}

/* ---- handles ------------------------------------------------------------------------------- */

static void expect_conf(rd_kafka_conf_t *conf, const char *key, const char *want) {
    char got[256];
    size_t n = sizeof got;
    cr_assert_eq(rd_kafka_conf_get(conf, key, got, &n), RD_KAFKA_CONF_OK, "%s", key);
    cr_expect_str_eq(got, want, "%s", key);
}

Test(kafka_wire, a_producer_is_idempotent_and_waits_for_every_replica_whatever_the_keys_say) {
    es_config_t *cfg = config();
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "kafka.linger.ms", "7", &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_config_set(cfg, "kafka.transactional.id", "t-1", &err), ES_OK, "%s",
                 err.message);
    es_kafka_opts_t o = {.role = ES_KAFKA_PRODUCER};
    rd_kafka_conf_t *conf = NULL;
    cr_assert_eq(es_kafka_conf(cfg, &o, &conf, &err), ES_OK, "%s", err.message);
    expect_conf(conf, "bootstrap.servers", "127.0.0.1:1");
    expect_conf(conf, "enable.idempotence", "true");
    expect_conf(conf, "acks", "-1");
    expect_conf(conf, "partitioner", "murmur2_random");
    expect_conf(conf, "linger.ms", "7");
    char got[64];
    size_t n = sizeof got;
    cr_expect_neq(rd_kafka_conf_get(conf, "transactional.id", got, &n), RD_KAFKA_CONF_OK,
                  "a producer not asked to be transactional is not: %s", got);
    rd_kafka_conf_destroy(conf);
    o.transactional = 1;
    cr_assert_eq(es_kafka_conf(cfg, &o, &conf, &err), ES_OK, "%s", err.message);
    expect_conf(conf, "transactional.id", "t-1");
    rd_kafka_conf_destroy(conf);
    es_config_destroy(cfg);
}

Test(kafka_wire, a_consumer_never_commits_or_resets_by_itself_whatever_the_keys_say) {
    es_config_t *cfg = config();
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "kafka.enable.auto.commit", "true", &err), ES_OK, "%s",
                 err.message);
    cr_assert_eq(es_config_set(cfg, "kafka.auto.offset.reset", "latest", &err), ES_OK, "%s",
                 err.message);
    es_kafka_opts_t o = {
        .role = ES_KAFKA_CONSUMER, .group = "g", .offset_reset = "error", .fetch_wait_ms = 100};
    rd_kafka_conf_t *conf = NULL;
    cr_assert_eq(es_kafka_conf(cfg, &o, &conf, &err), ES_OK, "%s", err.message);
    expect_conf(conf, "group.id", "g");
    expect_conf(conf, "enable.auto.commit", "false");
    expect_conf(conf, "enable.auto.offset.store", "false");
    expect_conf(conf, "allow.auto.create.topics", "false");
    expect_conf(conf, "fetch.wait.max.ms", "100");
    rd_kafka_conf_destroy(conf);
    o.group = NULL;
    cr_expect_eq(es_kafka_conf(cfg, &o, &conf, &err), ES_EINVAL);
    cr_expect_null(conf);
    es_config_destroy(cfg);
}

/* ---- headers ------------------------------------------------------------------------------- */

/* What es_kafka_write_headers writes for r, read back by es_kafka_read_headers, checked to be
 * exactly r's kind's. */
static es_kafka_headers_t round_trip(const es_kafka_record_t *r) {
    rd_kafka_headers_t *h = NULL;
    es_kafka_headers_t got;
    es_error_t err = {0};
    cr_assert_eq(es_kafka_write_headers(r, &h, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_kafka_read_headers(h, &got), ES_OK);
    cr_assert_eq(es_kafka_check_headers(&got, r->kind, &err), ES_OK, "%s", err.message);
    cr_expect_eq(got.seen, es_kafka_kind_headers(r->kind));
    cr_expect_eq(h ? rd_kafka_header_cnt(h) : 0, (size_t)__builtin_popcount(got.seen),
                 "each header once");
    if (h)
        rd_kafka_headers_destroy(h);
    return got;
}

Test(kafka_wire, an_event_records_headers_read_back_as_its_envelope_fields) {
    es_event_t ev = {.aggregate_type = "orders.order",
                     .aggregate_id = "o-1",
                     .version = 42,
                     .event_type = "orders.v1.OrderPlaced",
                     .correlation_id = "corr-7"};
    snprintf(ev.event_id, sizeof ev.event_id, "%s", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");
    es_kafka_record_t r = {.kind = ES_KAFKA_EVENT, .topic = "orders.order.events", .event = &ev};
    es_kafka_headers_t got = round_trip(&r);
    cr_expect_str_eq(got.event_type, "orders.v1.OrderPlaced");
    cr_expect_eq(got.version, 42);
    cr_expect_str_eq(got.event_id, ev.event_id);
    cr_expect_str_eq(got.correlation_id, "corr-7");
    ev.correlation_id = NULL; /* none: the header is there, empty */
    got = round_trip(&r);
    cr_expect_str_eq(got.correlation_id, "");
}

Test(kafka_wire, a_commands_reply_partition_reads_back_and_replies_and_snapshots_carry_none) {
    es_kafka_record_t r = {.kind = ES_KAFKA_COMMAND, .topic = "t.commands", .reply_partition = 5};
    cr_expect_eq(round_trip(&r).reply_partition, 5);
    r.kind = ES_KAFKA_REPLY;
    cr_expect_eq(round_trip(&r).seen, 0);
    r.kind = ES_KAFKA_SNAPSHOT;
    cr_expect_eq(round_trip(&r).seen, 0);
}

Test(kafka_wire, a_dead_letters_headers_read_back_as_what_it_was_parked_for) {
    es_kafka_dlq_t d = {"svc.summary", "orders.order.events",        2,   1234, 3,
                        ES_EDECODE,    "cannot decode the envelope", NULL};
    es_kafka_dlq_headers_t dh;
    es_kafka_dlq_headers(&d, &dh);
    cr_expect_str_eq(dh.topic, "orders.order.events.dlq");
    cr_expect_str_eq(dh.ref, "svc.summary/orders.order.events/2/1234");
    es_kafka_record_t r = {.kind = ES_KAFKA_DLQ,
                           .topic = dh.topic,
                           .dlq_headers = dh.kv,
                           .n_dlq_headers = ES_KAFKA_DLQ_HEADERS,
                           .dlq_ref = dh.ref};
    es_kafka_headers_t got = round_trip(&r);
    cr_expect_str_eq(got.dlq_group, "svc.summary");
    cr_expect_str_eq(got.dlq_topic, "orders.order.events");
    cr_expect_eq(got.dlq_partition, 2);
    cr_expect_eq(got.dlq_offset, 1234);
    cr_expect_eq(got.dlq_attempts, 3);
    cr_expect_str_eq(got.dlq_code, "ES_EDECODE");
    cr_expect_str_eq(got.dlq_error, "cannot decode the envelope");
    cr_expect_str_eq(got.event_type, "", "an undecodable record has no event type");
    cr_expect_str_eq(got.dlq_ref, dh.ref);
}

Test(kafka_wire, a_record_lacking_what_its_headers_need_is_refused) {
    es_error_t err = {0};
    rd_kafka_headers_t *h = NULL;
    es_kafka_record_t ev = {.kind = ES_KAFKA_EVENT, .topic = "t.events"};
    cr_expect_eq(es_kafka_write_headers(&ev, &h, &err), ES_EINVAL);
    cr_expect(strstr(err.message, "t.events"), "%s", err.message);
    es_kafka_record_t cmd = {
        .kind = ES_KAFKA_COMMAND, .topic = "t.commands", .reply_partition = -1};
    cr_expect_eq(es_kafka_write_headers(&cmd, &h, &err), ES_EINVAL);
    es_kv_t few[] = {{"es-dlq-group", "g"}};
    es_kafka_record_t dlq = {.kind = ES_KAFKA_DLQ,
                             .topic = "t.dlq",
                             .dlq_headers = few,
                             .n_dlq_headers = 1,
                             .dlq_ref = "r"};
    cr_expect_eq(es_kafka_write_headers(&dlq, &h, &err), ES_EINVAL);
    cr_expect_null(h);
}

Test(kafka_wire, headers_amiss_are_told_apart_by_the_check) {
    es_error_t err = {0};
    es_kafka_headers_t got;
    rd_kafka_headers_t *h = rd_kafka_headers_new(4);
    rd_kafka_header_add(h, "es-reply-partition", -1, "x1", -1);
    cr_expect_eq(es_kafka_read_headers(h, &got), ES_EINVAL);
    cr_expect_eq(got.reply_partition, -1, "a malformed partition reads as none");
    cr_expect_eq(es_kafka_check_headers(&got, ES_KAFKA_COMMAND, &err), ES_EDECODE);
    cr_expect(strstr(err.message, "es-reply-partition is malformed"), "%s", err.message);
    rd_kafka_header_add(h, "es-reply-partition", -1, "3", -1);
    cr_expect_eq(es_kafka_read_headers(h, &got), ES_OK, "the last one counts");
    cr_expect_eq(got.reply_partition, 3);
    cr_expect_eq(es_kafka_check_headers(&got, ES_KAFKA_COMMAND, &err), ES_EDECODE);
    cr_expect(strstr(err.message, "more than once"), "%s", err.message);
    rd_kafka_headers_destroy(h);
    h = rd_kafka_headers_new(2);
    rd_kafka_header_add(h, "es-reply-partition", -1, "3", -1);
    rd_kafka_header_add(h, "traceparent", -1, "00-abc", -1);
    cr_expect_eq(es_kafka_read_headers(h, &got), ES_OK, "a foreign header is no error to read");
    cr_expect_eq(got.others, 1);
    cr_expect_eq(es_kafka_check_headers(&got, ES_KAFKA_COMMAND, &err), ES_EDECODE);
    cr_expect_eq(es_kafka_check_headers(&got, ES_KAFKA_REPLY, &err), ES_EDECODE);
    cr_expect(strstr(err.message, "es-reply-partition, which is not its kind's"), "%s",
              err.message);
    rd_kafka_headers_destroy(h);
    cr_expect_eq(es_kafka_read_headers(NULL, &got), ES_OK);
    cr_expect_eq(es_kafka_check_headers(&got, ES_KAFKA_EVENT, &err), ES_EDECODE);
    cr_expect(strstr(err.message, "lacks its header es-event-type"), "%s", err.message);
}
