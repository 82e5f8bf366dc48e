/*
 * The Kafka gauges read from librdkafka's statistics (kafka/stats.c): a document shaped like
 * librdkafka's (STATISTICS.md) gives exactly the series docs/observability.md lists, garbage
 * leaves the last values, and the kept entries stop at the cap.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka/stats.h"
#include "internal.h"
#include "metricsutil.h"

static es_config_t *cfg;

static void setup(void) {
    cfg = es_config_new();
    cr_assert(cfg);
}

static void teardown(void) {
    es_config_destroy(cfg);
}

TestSuite(kafka_stats, .init = setup, .fini = teardown);

static char *scrape(void) {
    size_t len = 0;
    cr_assert_eq(es_metrics_write(NULL, 0, &len, NULL), ES_OK);
    char *buf = malloc(len + 4096);
    es_error_t err = {0};
    cr_assert_eq(es_metrics_write(buf, len + 4096, &len, &err), ES_OK, "%s", err.message);
    return buf;
}

static es_kafka_stats_t *stats(const char *client, int producer) {
    es_kafka_stats_t *st = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_kafka_stats_new(cfg, client, producer, &st, &err), ES_OK, "%s", err.message);
    cr_assert(st);
    return st;
}

/* A consumer's statistics as librdkafka 2.0.2 writes them, cut to a few fields of each kind:
 * a bootstrap entry, two brokers (one up and asked something, one down), the logical group
 * coordinator, and a topic with the unassigned partition -1 and partitions 0 and 1. */
static const char SAMPLE[] =
    "{ \"name\": \"eskit#consumer-1\", \"client_id\": \"eskit\", \"type\": \"consumer\", "
    "\"ts\":123, \"time\":1700000000, \"replyq\":0, \"msg_cnt\":7, \"msg_size\":700, "
    "\"brokers\":{ "
    "\"localhost:9092/bootstrap\": { \"name\":\"localhost:9092/bootstrap\", \"nodeid\":-1, "
    "\"nodename\":\"localhost:9092\", \"source\":\"configured\", \"state\":\"UP\", "
    "\"rtt\": { \"min\":100, \"max\":900, \"avg\":500, \"sum\":1000, \"cnt\":2 } }, "
    "\"localhost:9092/1\": { \"name\":\"localhost:9092/1\", \"nodeid\":1, "
    "\"nodename\":\"localhost:9092\", \"source\":\"learned\", \"state\":\"UP\", "
    "\"rtt\": { \"min\":1000, \"max\":4000, \"avg\":2500, \"sum\":10000, \"stddev\": 10, "
    "\"p50\": 2000, \"p99\": 4000, \"cnt\":4 }, \"toppars\":{ } }, "
    "\"localhost:9093/2\": { \"name\":\"localhost:9093/2\", \"nodeid\":2, "
    "\"nodename\":\"localhost:9093\", \"source\":\"learned\", \"state\":\"UP\", "
    "\"rtt\": { \"min\":0, \"max\":0, \"avg\":0, \"sum\":0, \"cnt\":0 } }, "
    "\"localhost:9094/3\": { \"name\":\"localhost:9094/3\", \"nodeid\":3, "
    "\"nodename\":\"localhost:9094\", \"source\":\"learned\", \"state\":\"DOWN\", "
    "\"rtt\": { \"min\":0, \"max\":0, \"avg\":0, \"sum\":0, \"cnt\":0 } }, "
    "\"GroupCoordinator\": { \"name\":\"GroupCoordinator\", \"nodeid\":1, "
    "\"nodename\":\"localhost:9092\", \"source\":\"logical\", \"state\":\"UP\", "
    "\"rtt\": { \"min\":1, \"max\":1, \"avg\":1, \"sum\":1, \"cnt\":1 } } }, "
    "\"topics\":{ \"orders.order.commands\": { \"topic\":\"orders.order.commands\", "
    "\"age\":100, \"metadata_age\":50, \"partitions\":{ "
    "\"0\": { \"partition\":0, \"broker\":1, \"leader\":1, \"hi_offset\":10, "
    "\"committed_offset\":4, \"consumer_lag\":6, \"consumer_lag_stored\":6 }, "
    "\"1\": { \"partition\":1, \"broker\":1, \"leader\":1, \"hi_offset\":3, "
    "\"committed_offset\":3, \"consumer_lag\":0, \"consumer_lag_stored\":-1 }, "
    "\"-1\": { \"partition\":-1, \"broker\":-1, \"leader\":-1, \"hi_offset\":-1, "
    "\"committed_offset\":-1001, \"consumer_lag\":-1, \"consumer_lag_stored\":-1 } } } }, "
    "\"cgrp\": { \"state\": \"up\", \"join_state\": \"steady\" }, \"tx\":10, \"rx\":10 }";

#define RTT(b) "eskit_kafka_broker_rtt_seconds{client=\"eskit.test\",broker=\"" b "\"}"
#define LAG(p)                                                                                     \
    "eskit_kafka_consumer_lag_records{client=\"eskit.test\",topic=\"orders.order.commands\","      \
    "partition=\"" p "\"}"
#define QUEUE "eskit_kafka_queue_messages{client=\"eskit.test\"}"

static void parse(es_kafka_stats_t *st, const char *json) {
    cr_assert_eq(es_kafka_stats_parse(st, json, strlen(json)), 0, "%s", json);
}

Test(kafka_stats, a_document_gives_the_brokers_rtt_and_the_partitions_lag) {
    es_kafka_stats_t *st = stats("eskit.test", 0);
    parse(st, SAMPLE);
    char *text = scrape();
    cr_expect_eq(mx_value(text, RTT("localhost:9092/1")), 0.0025, "%s", text);
    cr_expect_eq(mx_value(text, LAG("0")), 6, "%s", text);
    cr_expect_eq(mx_value(text, LAG("1")), 0, "%s", text);
    cr_expect_eq(mx_count(text, "eskit_kafka_broker_rtt_seconds{"), 1,
                 "no series for the bootstrap entry, the logical coordinator, a broker down or "
                 "one not asked anything yet:\n%s",
                 text);
    cr_expect_eq(mx_count(text, "eskit_kafka_consumer_lag_records{"), 2,
                 "no series for partition -1:\n%s", text);
    cr_expect_eq(mx_count(text, "eskit_kafka_queue_messages"), 0,
                 "a consumer has no producer queue:\n%s", text);
    cr_expect(strstr(text, "# TYPE eskit_kafka_broker_rtt_seconds gauge\n"), "%s", text);
    free(text);
    es_kafka_stats_free(st);
}

Test(kafka_stats, a_producer_shows_its_queue) {
    es_kafka_stats_t *st = stats("eskit.test", 1);
    parse(st, SAMPLE);
    char *text = scrape();
    cr_expect_eq(mx_value(text, QUEUE), 7, "%s", text);
    free(text);
    es_kafka_stats_free(st);
}

Test(kafka_stats, a_broker_up_but_idle_keeps_its_last_rtt) {
    es_kafka_stats_t *st = stats("eskit.test", 0);
    char *later = strdup(SAMPLE);
    /* The next interval: broker 1 asked nothing (avg and cnt 0), still up. */
    char *b1 = strstr(later, "\"avg\":2500");
    memcpy(b1, "\"avg\":0   ", 10);
    char *cnt = strstr(b1, "\"cnt\":4");
    memcpy(cnt, "\"cnt\":0", 7);
    parse(st, later);
    char *text = scrape();
    cr_expect_eq(mx_count(text, "eskit_kafka_broker_rtt_seconds{"), 0,
                 "never measured: no series\n%s", text);
    free(text);
    parse(st, SAMPLE);
    parse(st, later);
    text = scrape();
    cr_expect_eq(mx_value(text, RTT("localhost:9092/1")), 0.0025, "%s", text);
    free(text);
    free(later);
    es_kafka_stats_free(st);
}

Test(kafka_stats, garbage_is_ignored_and_the_last_values_stay) {
    es_kafka_stats_t *st = stats("eskit.test", 0);
    parse(st, SAMPLE);
    const char *bad[] = {"",
                         "{",
                         "not json",
                         "{\"brokers\": {\"b\": {\"name\": \"x\", \"nodeid\": 1,}}}",
                         "[1, 2]",
                         "{\"msg_cnt\": \"seven\"}",
                         "{\"brokers\": 3}",
                         "{\"topics\": {\"t\": {\"partitions\": [1]}}}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_expect_eq(es_kafka_stats_parse(st, bad[i], strlen(bad[i])), -1, "%s", bad[i]);
    cr_expect_eq(es_kafka_stats_parse(st, SAMPLE, sizeof SAMPLE - 10), -1, "cut short");
    cr_expect_eq(es_kafka_stats_parse(NULL, SAMPLE, strlen(SAMPLE)), -1);
    char *text = scrape();
    cr_expect_eq(mx_value(text, RTT("localhost:9092/1")), 0.0025, "%s", text);
    cr_expect_eq(mx_value(text, LAG("0")), 6, "%s", text);
    free(text);
    /* Odd but well-formed members are skipped, not trusted. */
    parse(st, "{\"brokers\": {\"b\": {\"name\": 5, \"nodeid\": \"1\"}}, \"topics\": {\"t\": "
              "{\"partitions\": {\"0\": {\"partition\": 0, \"consumer_lag\": 1.5}}}}}");
    text = scrape();
    cr_expect_eq(mx_count(text, "eskit_kafka_"), 0, "%s", text);
    free(text);
    es_kafka_stats_free(st);
}

/* A document with n brokers and n partitions, each with lag its number. */
static char *big(int n) {
    es_buf_t b = {0};
    char part[256];
    const char *head = "{\"msg_cnt\":0,\"brokers\":{";
    cr_assert_eq(es_buf_append(&b, head, strlen(head), NULL), ES_OK);
    for (int i = 0; i < n; i++) {
        int w = snprintf(part, sizeof part,
                         "%s\"h%d:9092/%d\":{\"name\":\"h%d:9092/%d\",\"nodeid\":%d,"
                         "\"state\":\"UP\",\"rtt\":{\"avg\":1000,\"cnt\":1}}",
                         i ? "," : "", i, i, i, i, i);
        cr_assert_eq(es_buf_append(&b, part, (size_t)w, NULL), ES_OK);
    }
    const char *mid = "},\"topics\":{\"t\":{\"topic\":\"t\",\"partitions\":{";
    cr_assert_eq(es_buf_append(&b, mid, strlen(mid), NULL), ES_OK);
    for (int i = 0; i < n; i++) {
        int w = snprintf(part, sizeof part, "%s\"%d\":{\"partition\":%d,\"consumer_lag\":%d}",
                         i ? "," : "", i, i, i);
        cr_assert_eq(es_buf_append(&b, part, (size_t)w, NULL), ES_OK);
    }
    cr_assert_eq(es_buf_append(&b, "}}}}", 5, NULL), ES_OK); /* and the NUL */
    return (char *)b.data;
}

Test(kafka_stats, entries_past_the_cap_are_left_out) {
    es_kafka_stats_t *st = stats("eskit.test", 0);
    char *json = big(ES_KAFKA_STATS_MAX + 44);
    parse(st, json);
    char *text = scrape();
    cr_expect_eq(mx_count(text, "eskit_kafka_broker_rtt_seconds{"), ES_KAFKA_STATS_MAX);
    cr_expect_eq(mx_count(text, "eskit_kafka_consumer_lag_records{"), ES_KAFKA_STATS_MAX);
    cr_expect_eq(mx_value(text, "eskit_kafka_consumer_lag_records{client=\"eskit.test\",topic="
                                "\"t\",partition=\"255\"}"),
                 255, "the first ones are kept");
    cr_expect(isnan(mx_value(text, "eskit_kafka_consumer_lag_records{client=\"eskit.test\","
                                   "topic=\"t\",partition=\"256\"}")));
    free(text);
    free(json);
    es_kafka_stats_free(st);
}

Test(kafka_stats, metrics_off_keeps_no_stats) {
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "metrics.enabled", "false", &err), ES_OK, "%s", err.message);
    es_kafka_stats_t *st = (es_kafka_stats_t *)1;
    cr_assert_eq(es_kafka_stats_new(cfg, "eskit.test", 0, &st, &err), ES_OK);
    cr_expect_null(st);
    cr_expect_eq(es_kafka_stats_parse(st, SAMPLE, strlen(SAMPLE)), -1);
    es_kafka_stats_free(st);
}
