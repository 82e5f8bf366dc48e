/*
 * A saga coordinator on Kafka stopped while its transitions are on their way to
 * "<saga>.saga.events", then restarted: every transition is in the topic once. The demo saga
 * runs against librdkafka's mock cluster with two brokers: the saga topic's partitions are led
 * by broker 2, whose responses come RESPONSE_RTT_MS late (its requests are served at once, so
 * a record is in the log before its acknowledgement leaves); everything else, the consumer
 * groups included, is on broker 1.
 * The stop is made when the coordinator's producer sends its first batch of transitions (its
 * "msg" debug line, through the config's log callback), so it lands while the coordinator
 * waits for that batch's acknowledgements. A plain librdkafka consumer reads the topic back.
 */
#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain.h"
#include "fulfilment.h"
#include "testutil.h"

#define PARTS 3
#define SAGA_TOPIC "orders.fulfilment.saga.events"
#define RESPONSE_RTT_MS 1
#define N_ORDERS 6
#define MAX_RECORDS 512

static const char *const TYPES[] = {"orders.order", "payments.payment", "inventory.item"};

static char *dir;
static es_config_t *cfg;
static rd_kafka_t *mock_rk;
static rd_kafka_mock_cluster_t *mock;

static void quiet(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk, (void)level, (void)fac, (void)buf;
}

static void set(es_config_t *c, const char *key, const char *value) {
    es_error_t err = {0};
    cr_assert_eq(es_config_set(c, key, value, &err), ES_OK, "%s", err.message);
}

static void set_path(es_config_t *c, const char *key, const char *name) {
    char *path = tu_path(dir, name);
    set(c, key, path);
    free(path);
}

/* A topic whose partitions broker leader leads. */
static void topic(const char *name, int partitions, int leader) {
    cr_assert_eq(rd_kafka_mock_topic_create(mock, name, partitions, 1), 0, "%s", name);
    for (int p = 0; p < partitions; p++)
        cr_assert_eq(rd_kafka_mock_partition_set_leader(mock, name, p, leader), 0, "%s", name);
}

static void setup(void) {
    char errstr[256], name[128];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(c, quiet);
    mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof errstr);
    cr_assert(mock_rk, "%s", errstr);
    mock = rd_kafka_mock_cluster_new(mock_rk, 2);
    cr_assert(mock);
    static const char *const kinds[] = {"events", "snapshots", "commands", "replies"};
    for (size_t t = 0; t < 3; t++) {
        for (size_t k = 0; k < 4; k++) {
            snprintf(name, sizeof name, "%s.%s", TYPES[t], kinds[k]);
            topic(name, PARTS, 1);
        }
        snprintf(name, sizeof name, "%s.events.dlq", TYPES[t]);
        topic(name, 1, 1);
    }
    topic(SAGA_TOPIC, PARTS, 2);
    static const char *const groups[] = {"svc.commands", "svc.eskit-restore",
                                         "svc.saga-orders-fulfilment", "independent-reader"};
    for (size_t g = 0; g < sizeof groups / sizeof *groups; g++)
        cr_assert_eq(rd_kafka_mock_coordinator_set(mock, "group", groups[g], 1), 0);
    cr_assert_eq(rd_kafka_mock_broker_set_rtt(mock, 2, RESPONSE_RTT_MS), 0);
    dir = tu_tempdir();
    cfg = tu_config(dir, "unused.db");
    set(cfg, "brokers", rd_kafka_mock_cluster_bootstraps(mock));
    set(cfg, "service.name", "svc");
    set(cfg, "execute.timeout.ms", "20000");
    set(cfg, "kafka.reconnect.backoff.max.ms", "200");
    set(cfg, "kafka.session.timeout.ms", "2500");
    set(cfg, "kafka.heartbeat.interval.ms", "500");
    set(cfg, "projector.retry.backoff.ms", "1");
    set_path(cfg, "state.db", "state.db");
    set_path(cfg, "saga.db", "saga.db");
}

static void teardown(void) {
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_rk);
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(dir);
}

TestSuite(saga_kafka_publish, .init = setup, .fini = teardown, .timeout = 120);

typedef struct proc {
    es_engine_t *engine;
    es_processor_t *p;
    pthread_t thread;
    es_error_t err;
} proc;

static void *serve(void *opaque) {
    proc *pr = opaque;
    es_processor_run(pr->p, &pr->err);
    return NULL;
}

static es_engine_t *new_engine(const es_config_t *c) {
    es_engine_t *e = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(c, &e, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(e, &err), ES_OK, "%s", err.message);
    return e;
}

static void execute(es_engine_t *e, const char *type, const char *id, const ProtobufCMessage *msg) {
    es_command_t cmd = {.aggregate_type = type, .aggregate_id = id, .message = msg};
    es_result_t res = {0};
    es_error_t err = {0};
    cr_assert_eq(es_execute(e, &cmd, &res, &err), ES_OK, "%s %s/%s: %s", msg->descriptor->name,
                 type, id, res.reason ? res.reason : err.message);
    es_result_clear(&res);
}

static void place(es_engine_t *e, const char *id) {
    Orders__V1__LineItem item = ORDERS__V1__LINE_ITEM__INIT;
    item.sku = "sku-1";
    item.quantity = 1;
    item.unit_price_cents = 1500;
    Orders__V1__LineItem *items[] = {&item};
    Orders__V1__PlaceOrder m = ORDERS__V1__PLACE_ORDER__INIT;
    m.customer_id = "alice";
    m.n_items = 1;
    m.items = items;
    m.currency = "USD";
    execute(e, "orders.order", id, &m.base);
}

/* The stopper: the coordinator it stops at the first batch of transitions its producer sends
 * to broker 2 (a debug line "<host:port>/2: <topic> [<partition>]: Produce MessageSet ..."). */
static es_saga_t *_Atomic to_stop;
static atomic_int stopped;

static void stop_at_first_transitions(int level, const char *msg, void *opaque) {
    (void)level, (void)opaque;
    es_saga_t *c = atomic_load(&to_stop);
    if (c && strstr(msg, "Produce MessageSet") && strstr(msg, "/2: " SAGA_TOPIC " [") &&
        !atomic_exchange(&stopped, 1))
        es_saga_stop(c);
}

static void settle(es_saga_t *c, uint64_t started) {
    es_error_t err = {0};
    uint64_t active = 1;
    es_saga_stats_t st = {0};
    for (int i = 0; i < 3000 && (active || st.started < started); i++) {
        cr_assert_eq(es_saga_poll(c, 20, NULL, &err), ES_OK, "%s", err.message);
        cr_assert_eq(es_saga_active(c, &active, &err), ES_OK, "%s", err.message);
        es_saga_stats(c, &st);
    }
    cr_assert_eq(active, 0, "sagas still active after 3000 polls");
    cr_assert_geq(st.started, started);
}

/* One record of the saga topic: its instance (the key) and its version (es-version). */
typedef struct seen {
    char id[64];
    unsigned long long version;
} seen;

static size_t read_transitions(seen *out, size_t cap) {
    char errstr[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(c, quiet);
    cr_assert_eq(rd_kafka_conf_set(c, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(mock),
                                   errstr, sizeof errstr),
                 RD_KAFKA_CONF_OK);
    rd_kafka_conf_set(c, "group.id", "independent-reader", errstr, sizeof errstr);
    rd_kafka_conf_set(c, "enable.partition.eof", "true", errstr, sizeof errstr);
    rd_kafka_conf_set(c, "enable.auto.commit", "false", errstr, sizeof errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, errstr, sizeof errstr);
    cr_assert_not_null(rk, "%s", errstr);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(PARTS);
    for (int p = 0; p < PARTS; p++)
        rd_kafka_topic_partition_list_add(l, SAGA_TOPIC, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    cr_assert_eq(rd_kafka_assign(rk, l), 0);
    rd_kafka_topic_partition_list_destroy(l);
    size_t n = 0;
    int left = PARTS;
    int64_t deadline = es_now_us() + 30000000;
    while (left > 0 && es_now_us() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        rd_kafka_headers_t *h = NULL;
        const void *v = NULL;
        size_t len = 0;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            left--;
        } else if (!m->err) {
            cr_assert_lt(n, cap, "more than %zu transitions", cap);
            cr_assert_eq(rd_kafka_message_headers(m, &h), 0);
            cr_assert_eq(rd_kafka_header_get_last(h, "es-version", &v, &len), 0);
            snprintf(out[n].id, sizeof out[n].id, "%.*s", (int)m->key_len, (const char *)m->key);
            char ver[24];
            snprintf(ver, sizeof ver, "%.*s", (int)len, (const char *)v);
            out[n++].version = strtoull(ver, NULL, 10);
        } else {
            cr_log_warn("reading back: %s", rd_kafka_message_errstr(m));
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    cr_assert_eq(left, 0, "%d partitions not read to their end", left);
    return n;
}

Test(saga_kafka_publish, a_stop_while_transitions_are_acknowledged_publishes_none_of_them_twice) {
    proc pr = {.engine = new_engine(cfg)};
    es_error_t err = {0};
    cr_assert_eq(es_processor_new(cfg, pr.engine, &pr.p, &err), ES_OK, "%s", err.message);
    cr_assert_eq(pthread_create(&pr.thread, NULL, serve, &pr), 0);
    /* Transitions go to the log of the coordinator's engine (es_store_publish), so that is
     * where the producer's debug lines are watched for. */
    es_config_t *watched = es_config_dup(cfg);
    set(watched, "kafka.debug", "msg");
    es_config_set_log_cb(watched, stop_at_first_transitions, NULL);
    es_engine_t *caller = new_engine(watched);
    Inventory__V1__Restock restock = INVENTORY__V1__RESTOCK__INIT;
    restock.quantity = 100;
    execute(caller, "inventory.item", "sku-1", &restock.base);
    char id[32];
    for (int i = 0; i < N_ORDERS; i++) {
        snprintf(id, sizeof id, "o-%d", i);
        place(caller, id);
    }

    /* The first coordinator, stopped while its first transitions wait for their
     * acknowledgements. */
    es_saga_t *coord = NULL;
    cr_assert_eq(es_saga_new(cfg, &demo_fulfilment_def, caller, &coord, &err), ES_OK, "%s",
                 err.message);
    atomic_store(&to_stop, coord);
    for (int i = 0; i < 3000 && !atomic_load(&stopped); i++)
        cr_assert_eq(es_saga_poll(coord, 20, NULL, &err), ES_OK, "%s", err.message);
    cr_assert(atomic_load(&stopped), "the coordinator never sent a transition");
    atomic_store(&to_stop, NULL);
    es_saga_destroy(coord);

    /* Restarted, it ends every saga and publishes what it had not. */
    cr_assert_eq(es_saga_new(cfg, &demo_fulfilment_def, caller, &coord, &err), ES_OK, "%s",
                 err.message);
    settle(coord, N_ORDERS);
    es_saga_destroy(coord);
    es_engine_destroy(caller);
    es_config_destroy(watched);
    es_processor_stop(pr.p);
    pthread_join(pr.thread, NULL);
    es_processor_destroy(pr.p);
    es_engine_destroy(pr.engine);

    static seen recs[MAX_RECORDS];
    size_t n = read_transitions(recs, MAX_RECORDS);
    for (int i = 0; i < N_ORDERS; i++) {
        snprintf(id, sizeof id, "o-%d", i);
        es_saga_record_t *history = NULL;
        size_t n_history = 0;
        cr_assert_eq(es_saga_history(cfg, DEMO_FULFILMENT_SAGA, id, &history, &n_history, &err),
                     ES_OK, "%s", err.message);
        free(history);
        cr_assert_gt(n_history, 0, "%s has no history", id);
        for (unsigned long long v = 1; v <= n_history; v++) {
            size_t times = 0;
            for (size_t k = 0; k < n; k++)
                times += !strcmp(recs[k].id, id) && recs[k].version == v;
            cr_assert_eq(times, 1, "%s's transition %llu is in %s %zu times", id, v, SAGA_TOPIC,
                         times);
        }
    }
}
