#include "backend.h"

#include <criterion/criterion.h>
#include <eskit/processor.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain.h"
#include "testutil.h"

#define MAX_STREAMS 256

typedef struct stream {
    char key[ES_MAX_TYPE_LEN + ES_MAX_ID_LEN + 2];
    uint64_t version;
} stream;

struct tb {
    bool kafka;
    char *dir;
    es_config_t *cfg;
    es_store_t *store; /* embedded */
    rd_kafka_t *mock_rk, *producer;
    rd_kafka_mock_cluster_t *mock;
    stream streams[MAX_STREAMS]; /* kafka: versions handed out so far */
    es_engine_t *engine, *owner_engine;
    es_processor_t *processor;
    pthread_t owner;
    es_err owner_rc;
    es_error_t owner_err;
    size_t n_streams, appended;
};

static void quiet(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk, (void)level, (void)fac, (void)buf;
}

static rd_kafka_t *handle(const char *bootstrap) {
    char errstr[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(c, quiet);
    if (bootstrap) {
        rd_kafka_conf_set(c, "bootstrap.servers", bootstrap, errstr, sizeof errstr);
        rd_kafka_conf_set(c, "enable.idempotence", "true", errstr, sizeof errstr);
        rd_kafka_conf_set(c, "partitioner", "murmur2_random", errstr, sizeof errstr);
        rd_kafka_conf_set(c, "linger.ms", "1", errstr, sizeof errstr);
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof errstr);
    cr_assert_not_null(rk, "%s", errstr);
    return rk;
}

static void set(tb_t *b, const char *key, const char *value) {
    es_error_t err = {0};
    cr_assert_eq(es_config_set(b->cfg, key, value, &err), ES_OK, "%s", err.message);
}

tb_t *tb_open(const char *const *types) {
    tb_t *b = calloc(1, sizeof *b);
    cr_assert_not_null(b);
    const char *which = getenv("CONFORMANCE_BACKEND");
    b->kafka = which && !strcmp(which, "kafka");
    b->dir = tu_tempdir();
    b->cfg = tu_config(b->dir, "events.db");
    char *rm = tu_path(b->dir, "read.db");
    set(b, "readmodel.db", rm);
    free(rm);
    set(b, "projector.retry.backoff.ms", "1");
    if (!b->kafka) {
        es_error_t err = {0};
        cr_assert_eq(es_store_new(b->cfg, &b->store, &err), ES_OK, "%s", err.message);
        return b;
    }
    b->mock_rk = handle(NULL);
    b->mock = rd_kafka_mock_cluster_new(b->mock_rk, 1);
    cr_assert_not_null(b->mock);
    /* The schema catalogue's topic (es_engine_register records the domain's types there). */
    cr_assert_eq(rd_kafka_mock_topic_create(b->mock, "eskit.schemas", 1, 1), 0);
    for (size_t i = 0; types && types[i]; i++) {
        char topic[ES_MAX_TYPE_LEN + 16];
        snprintf(topic, sizeof topic, "%s.events", types[i]);
        cr_assert_eq(rd_kafka_mock_topic_create(b->mock, topic, TB_PARTITIONS, 1), 0);
        snprintf(topic, sizeof topic, "%s.events.dlq", types[i]);
        cr_assert_eq(rd_kafka_mock_topic_create(b->mock, topic, 1, 1), 0);
        static const char *const kinds[] = {"commands", "replies", "snapshots"};
        for (size_t k = 0; k < 3; k++) {
            snprintf(topic, sizeof topic, "%s.%s", types[i], kinds[k]);
            cr_assert_eq(rd_kafka_mock_topic_create(b->mock, topic, TB_PARTITIONS, 1), 0);
        }
    }
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(b->mock);
    b->producer = handle(bootstrap);
    set(b, "brokers", bootstrap);
    set(b, "kafka.reconnect.backoff.max.ms", "200");
    /* Short, but longer than the mock's delay of a join (see testutil.h). */
    set(b, "kafka.session.timeout.ms", TU_MOCK_SESSION_TIMEOUT_MS);
    set(b, "kafka.heartbeat.interval.ms", TU_MOCK_HEARTBEAT_INTERVAL_MS);
    set(b, "execute.timeout.ms", "20000");
    char *state = tu_path(b->dir, "state.db");
    set(b, "state.db", state);
    free(state);
    return b;
}

static es_engine_t *engine_of(const es_config_t *cfg, tb_register_cb *reg) {
    es_engine_t *e = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &e, &err), ES_OK, "%s", err.message);
    cr_assert_eq(reg(e, &err), ES_OK, "%s", err.message);
    return e;
}

static void *owner_main(void *arg) {
    tb_t *b = arg;
    b->owner_rc = es_processor_run(b->processor, &b->owner_err);
    return NULL;
}

static void stop_engine(tb_t *b) {
    es_engine_destroy(b->engine);
    b->engine = NULL;
    if (b->processor) {
        es_processor_stop(b->processor);
        pthread_join(b->owner, NULL);
        es_processor_destroy(b->processor);
        b->processor = NULL;
    }
    es_engine_destroy(b->owner_engine);
    b->owner_engine = NULL;
}

static es_engine_t *start_engine(tb_t *b, const es_config_t *cfg, tb_register_cb *reg) {
    if (b->kafka) {
        es_error_t err = {0};
        b->owner_engine = engine_of(cfg, reg);
        cr_assert_eq(es_processor_new(cfg, b->owner_engine, &b->processor, &err), ES_OK, "%s",
                     err.message);
        cr_assert_eq(pthread_create(&b->owner, NULL, owner_main, b), 0);
    }
    b->engine = engine_of(cfg, reg);
    return b->engine;
}

es_engine_t *tb_engine(tb_t *b) {
    return b->engine ? b->engine : start_engine(b, b->cfg, demo_register_all);
}

es_engine_t *tb_engine_as(tb_t *b, const es_config_t *cfg, tb_register_cb *reg) {
    stop_engine(b);
    return start_engine(b, cfg, reg);
}

es_store_t *tb_store(tb_t *b) {
    if (!b->store) {
        es_error_t err = {0};
        cr_assert_eq(es_store_new(b->cfg, &b->store, &err), ES_OK, "%s", err.message);
    }
    return b->store;
}

void tb_close(tb_t *b) {
    if (!b)
        return;
    stop_engine(b);
    es_store_destroy(b->store);
    if (b->producer)
        rd_kafka_destroy(b->producer);
    if (b->mock)
        rd_kafka_mock_cluster_destroy(b->mock);
    if (b->mock_rk)
        rd_kafka_destroy(b->mock_rk);
    es_config_destroy(b->cfg);
    tu_rmtree(b->dir);
    free(b->dir);
    free(b);
}

bool tb_kafka(const tb_t *b) {
    return b->kafka;
}

es_config_t *tb_config(tb_t *b) {
    return b->cfg;
}

const char *tb_dir(const tb_t *b) {
    return b->dir;
}

static int count_event(const es_event_t *ev, void *opaque) {
    (void)ev;
    ++*(size_t *)opaque;
    return 0;
}

size_t tb_events_of(tb_t *b, const char *type, const char *id, size_t want) {
    size_t n = 0;
    int64_t deadline = es_now_us() + 15 * 1000000LL;
    do {
        n = 0;
        es_error_t err = {0};
        cr_assert_eq(es_store_read_stream(tb_store(b), type, id, 1, count_event, &n, &err), ES_OK,
                     "%s", err.message);
    } while (n < want && es_now_us() < deadline);
    return n;
}

size_t tb_appended(const tb_t *b) {
    return b->appended;
}

static uint64_t next_version(tb_t *b, const char *type, const char *id) {
    char key[sizeof b->streams[0].key];
    snprintf(key, sizeof key, "%s/%s", type, id);
    for (size_t i = 0; i < b->n_streams; i++)
        if (!strcmp(b->streams[i].key, key))
            return ++b->streams[i].version;
    cr_assert_lt(b->n_streams, MAX_STREAMS);
    snprintf(b->streams[b->n_streams].key, sizeof key, "%s", key);
    b->streams[b->n_streams].version = 1;
    return b->streams[b->n_streams++].version;
}

static void produce(tb_t *b, const char *type, const char *id, const void *bytes, size_t len) {
    char topic[ES_MAX_TYPE_LEN + 16];
    snprintf(topic, sizeof topic, "%s.events", type);
    cr_assert_eq(rd_kafka_producev(b->producer, RD_KAFKA_V_TOPIC(topic),
                                   RD_KAFKA_V_KEY(id, strlen(id)),
                                   RD_KAFKA_V_VALUE((void *)bytes, len),
                                   RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                 0);
    cr_assert_eq(rd_kafka_flush(b->producer, 15000), 0, "records not delivered");
    b->appended++;
}

void tb_append(tb_t *b, const char *type, const char *id, const char *event_type,
               const void *payload, size_t len) {
    if (!b->kafka) {
        es_new_event_t ev = {event_type, payload, len, NULL, NULL, NULL, 0};
        es_error_t err = {0};
        cr_assert_eq(es_store_append(b->store, type, id, ES_EXPECT_ANY, 0, &ev, 1, NULL, &err),
                     ES_OK, "%s", err.message);
        b->appended++;
        return;
    }
    es_event_t ev = {.aggregate_type = type,
                     .aggregate_id = id,
                     .version = next_version(b, type, id),
                     .event_type = event_type,
                     .payload = payload,
                     .payload_len = len,
                     .occurred_at_us = es_now_us()};
    es_uuid7(ev.event_id);
    uint8_t *bytes = NULL;
    size_t n = 0;
    es_error_t err = {0};
    cr_assert_eq(es_envelope_encode(&ev, &bytes, &n, &err), ES_OK, "%s", err.message);
    produce(b, type, id, bytes, n);
    free(bytes);
}

void tb_append_raw(tb_t *b, const char *type, const char *id, const void *bytes, size_t len) {
    cr_assert(b->kafka, "tb_append_raw is for Kafka; embedded tests corrupt rows in place");
    produce(b, type, id, bytes, len);
}
