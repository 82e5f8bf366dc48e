/*
 * The Kafka gauges from librdkafka's statistics (kafka/stats.c) on the mock cluster: a consumer
 * made by the wire module shows its lag as librdkafka computes it (the partition's end minus the
 * group's committed offset) and its round-trip time to the broker; metrics.kafka.interval.ms=0
 * asks for none; kafka.statistics.interval.ms, when set, is the interval used; a running command
 * processor's consumer shows its gauges under its group's name.
 */
#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain.h"
#include "internal.h"
#include "kafka/wire.h"
#include "kafkautil.h"
#include "metricsutil.h"
#include "testutil.h"

#define TOPIC "stats.t"
#define PRODUCED 10
#define CONSUMED 4

static rd_kafka_t *mock_rk;
static rd_kafka_mock_cluster_t *mock;
static es_config_t *cfg;

static void setup(void) {
    mock_rk = tu_kafka_new(RD_KAFKA_PRODUCER, tu_kafka_conf());
    mock = rd_kafka_mock_cluster_new(mock_rk, 1);
    cr_assert(mock);
    cr_assert_eq(rd_kafka_mock_topic_create(mock, TOPIC, 2, 1), 0);
    rd_kafka_t *p = tu_kafka_new(RD_KAFKA_PRODUCER,
                                 tu_kafka_producer_conf(rd_kafka_mock_cluster_bootstraps(mock)));
    for (int i = 0; i < PRODUCED; i++)
        cr_assert_eq(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_PARTITION(0),
                                       RD_KAFKA_V_VALUE("x", 1), RD_KAFKA_V_MSGFLAGS(0),
                                       RD_KAFKA_V_END),
                     0);
    cr_assert_eq(rd_kafka_flush(p, 10000), 0, "the records were not acknowledged within 10 s");
    rd_kafka_destroy(p);
    cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "brokers", rd_kafka_mock_cluster_bootstraps(mock), &err), ES_OK,
                 "%s", err.message);
}

static void teardown(void) {
    es_config_destroy(cfg);
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_rk);
}

TestSuite(kafka_stats, .init = setup, .fini = teardown, .timeout = 60);

static void set(const char *key, const char *value) {
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, key, value, &err), ES_OK, "%s", err.message);
}

static char *scrape(void) {
    size_t len = 0;
    cr_assert_eq(es_metrics_write(NULL, 0, &len, NULL), ES_OK);
    char *buf = malloc(len + 4096);
    es_error_t err = {0};
    cr_assert_eq(es_metrics_write(buf, len + 4096, &len, &err), ES_OK, "%s", err.message);
    return buf;
}

/* The value of the first series that starts with prefix; NAN when none does. */
static double first_value(const char *text, const char *prefix) {
    const char *line = strstr(text, prefix);
    const char *sp = line ? strchr(line, ' ') : NULL;
    return sp ? strtod(sp + 1, NULL) : NAN;
}

/* A consumer of the wire module in group stats.g named for metrics "<service.name>.test",
 * assigned partition 0 from the group's committed offset, CONSUMED records read and their
 * offsets committed. */
static rd_kafka_t *consumer(void) {
    es_kafka_opts_t o = {.role = ES_KAFKA_CONSUMER,
                         .group = "stats.g",
                         .stats_name = "test",
                         .offset_reset = "earliest",
                         .fetch_wait_ms = 50,
                         .quiet = 1};
    rd_kafka_t *rk = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_kafka_new(cfg, &o, &rk, &err), ES_OK, "%s", err.message);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, TOPIC, 0)->offset = RD_KAFKA_OFFSET_STORED;
    cr_assert_eq(rd_kafka_assign(rk, parts), 0);
    rd_kafka_topic_partition_list_destroy(parts);
    int64_t next = 0, deadline = es_now_us() + 20 * 1000000LL;
    while (next < CONSUMED) {
        cr_assert_lt(es_now_us(), deadline, "read %lld records of %d in 20 s", (long long)next,
                     CONSUMED);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (m && !m->err && m->offset == next)
            next++;
        if (m)
            rd_kafka_message_destroy(m);
    }
    parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, TOPIC, 0)->offset = CONSUMED;
    cr_assert_eq(rd_kafka_commit(rk, parts, 0), 0);
    rd_kafka_topic_partition_list_destroy(parts);
    return rk;
}

static void done(rd_kafka_t *rk) {
    rd_kafka_consumer_close(rk);
    es_kafka_destroy(rk, 0);
}

#define LAG0                                                                                       \
    "eskit_kafka_consumer_lag_records{client=\"eskit.test\",topic=\"" TOPIC "\",partition=\"0\"}"
#define RTT "eskit_kafka_broker_rtt_seconds{client=\"eskit.test\",broker=\""

/* Polls rk (which serves its statistics) until the consumer's lag and rtt series show, within
 * 20 s; returns the last scrape. */
static char *wait_for_gauges(rd_kafka_t *rk) {
    int64_t deadline = es_now_us() + 20 * 1000000LL;
    for (;;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 50);
        if (m)
            rd_kafka_message_destroy(m);
        char *text = scrape();
        if (mx_value(text, LAG0) == PRODUCED - CONSUMED && first_value(text, RTT) > 0)
            return text;
        if (es_now_us() > deadline)
            cr_assert_fail("no lag of %d and rtt within 20 s:\n%s", PRODUCED - CONSUMED, text);
        free(text);
    }
}

Test(kafka_stats, a_consumer_shows_its_lag_and_broker_rtt) {
    set("metrics.kafka.interval.ms", "100");
    rd_kafka_t *rk = consumer();
    char *text = wait_for_gauges(rk);
    double rtt = first_value(text, RTT);
    cr_expect(rtt > 0 && rtt < 5, "rtt %g s is plausible for a broker in the process", rtt);
    cr_expect_eq(mx_count(text, "eskit_kafka_consumer_lag_records{"), 1,
                 "only the assigned partition, not the unassigned -1 or unread 1:\n%s", text);
    cr_expect_eq(mx_count(text, "eskit_kafka_queue_messages{"), 0, "a consumer has no queue");
    char broker[300];
    snprintf(broker, sizeof broker, RTT "%s/1\"}", rd_kafka_mock_cluster_bootstraps(mock));
    cr_expect(!isnan(mx_value(text, broker)), "the broker named host:port/id (%s):\n%s", broker,
              text);
    free(text);
    done(rk);
    text = scrape();
    cr_expect_eq(mx_count(text, "eskit_kafka_"), 0, "a destroyed handle left the registry:\n%s",
                 text);
    free(text);
}

Test(kafka_stats, the_users_statistics_interval_is_kept) {
    set("kafka.statistics.interval.ms", "100"); /* metrics.kafka.interval.ms stays 5000 */
    rd_kafka_t *rk = consumer();
    free(wait_for_gauges(rk));
    done(rk);
}

Test(kafka_stats, interval_zero_asks_for_no_statistics) {
    set("metrics.kafka.interval.ms", "0");
    set("kafka.statistics.interval.ms", "100");
    rd_kafka_t *rk = consumer();
    /* Nothing to wait for: poll as long as twenty intervals would take. */
    for (int64_t until = es_now_us() + 2000000; es_now_us() < until;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 50);
        if (m)
            rd_kafka_message_destroy(m);
    }
    char *text = scrape();
    cr_expect_eq(mx_count(text, "eskit_kafka_"), 0, "%s", text);
    free(text);
    done(rk);
}

static void rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t e, rd_kafka_topic_partition_list_t *parts,
                      void *opaque) {
    (void)opaque;
    rd_kafka_assign(rk, e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS ? parts : NULL);
}

Test(kafka_stats, a_subscribed_consumer_is_named_after_its_group) {
    set("metrics.kafka.interval.ms", "100");
    es_kafka_opts_t o = {.role = ES_KAFKA_CONSUMER,
                         .group = "eskit.commands", /* the processor's, on the default service */
                         .fetch_wait_ms = 50,
                         .quiet = 1,
                         .rebalance_cb = rebalance};
    rd_kafka_t *rk = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_kafka_new(cfg, &o, &rk, &err), ES_OK, "%s", err.message);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, TOPIC, RD_KAFKA_PARTITION_UA);
    cr_assert_eq(rd_kafka_subscribe(rk, topics), 0);
    rd_kafka_topic_partition_list_destroy(topics);
    int64_t deadline = es_now_us() + 20 * 1000000LL;
    for (;;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 50);
        if (m)
            rd_kafka_message_destroy(m);
        char *text = scrape();
        double rtt =
            first_value(text, "eskit_kafka_broker_rtt_seconds{client=\"eskit.commands\",broker=");
        int late = es_now_us() > deadline;
        if (late)
            cr_expect_fail("no rtt of client eskit.commands within 20 s:\n%s", text);
        free(text);
        if (rtt > 0 || late)
            break;
    }
    done(rk);
}

Test(kafka_stats, a_handle_not_named_for_metrics_asks_for_none) {
    set("metrics.kafka.interval.ms", "100");
    es_kafka_opts_t o = {.role = ES_KAFKA_PRODUCER, .quiet = 1};
    rd_kafka_t *rk = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_kafka_new(cfg, &o, &rk, &err), ES_OK, "%s", err.message);
    char value[16];
    size_t n = sizeof value;
    const rd_kafka_conf_t *conf = rd_kafka_conf(rk);
    cr_assert_eq(rd_kafka_conf_get(conf, "statistics.interval.ms", value, &n), RD_KAFKA_CONF_OK);
    cr_expect_str_eq(value, "0", "an idle producer nobody polls would pile the documents up");
    es_kafka_destroy(rk, 0);
}

/* ---- a command processor ---- */

static char *dir;

static void setup_processor(void) {
    mock_rk = tu_kafka_new(RD_KAFKA_PRODUCER, tu_kafka_conf());
    mock = tu_mock_demo(mock_rk, 2);
    dir = tu_tempdir();
    cfg = tu_config(dir, "unused.db");
    char *state = tu_path(dir, "state.db");
    set("brokers", rd_kafka_mock_cluster_bootstraps(mock));
    set("service.name", "svc");
    set("state.db", state);
    free(state);
    set("execute.timeout.ms", "20000");
    set("kafka.session.timeout.ms", TU_MOCK_SESSION_TIMEOUT_MS);
    set("kafka.heartbeat.interval.ms", TU_MOCK_HEARTBEAT_INTERVAL_MS);
    set("metrics.kafka.interval.ms", "100");
}

static void teardown_processor(void) {
    teardown();
    tu_rmtree(dir);
    free(dir);
}

static es_engine_t *demo_engine(void) {
    es_engine_t *e = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &e, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(e, &err), ES_OK, "%s", err.message);
    return e;
}

static Orders__V1__LineItem item = {PROTOBUF_C_MESSAGE_INIT(&orders__v1__line_item__descriptor),
                                    "sku-1", 2, 1500};
static Orders__V1__LineItem *items[] = {&item};

/* Whether a partition of orders.order.commands has the processor's lag series at want. */
static int has_lag(const char *text, double want) {
    char series[256];
    for (int p = 0; p < 2; p++) {
        snprintf(series, sizeof series,
                 "eskit_kafka_consumer_lag_records{client=\"svc.commands\",topic=\"orders.order."
                 "commands\",partition=\"%d\"}",
                 p);
        if (mx_value(text, series) == want)
            return 1;
    }
    return 0;
}

Test(kafka_stats_processor, the_processors_consumer_shows_its_lag_and_rtt, .init = setup_processor,
     .fini = teardown_processor, .timeout = 60) {
    tu_proc *pr = tu_proc_start(cfg, demo_engine());
    es_engine_t *caller = demo_engine();
    Orders__V1__PlaceOrder msg;
    orders__v1__place_order__init(&msg);
    msg.customer_id = "c-1";
    msg.currency = "EUR";
    msg.n_items = 1;
    msg.items = items;
    es_command_t c = {
        .aggregate_type = "orders.order", .aggregate_id = "o-1", .message = &msg.base};
    es_result_t res;
    es_error_t err = {0};
    cr_assert_eq(es_execute(caller, &c, &res, &err), ES_OK, "%s", err.message);
    es_result_clear(&res);
    /* The processor commits the command's offset after its batch: lag 0 once librdkafka says. */
    int64_t deadline = es_now_us() + 20 * 1000000LL;
    char *text = NULL;
    for (;; es_sleep_ms(50)) {
        free(text);
        text = scrape();
        if (has_lag(text, 0) &&
            first_value(text, "eskit_kafka_broker_rtt_seconds{client=\"svc.commands\",") > 0)
            break;
        cr_assert_lt(es_now_us(), deadline, "no lag 0 and rtt of svc.commands in 20 s:\n%s", text);
    }
    free(text);
    es_engine_destroy(caller);
    tu_proc_stop(pr);
}
