/*
 * Kafka figures on librdkafka's mock cluster (3 brokers, in this process):
 * es_execute_batch through the command path (a processor thread owns the
 * partitions) beside raw librdkafka producing the same envelope bytes to the
 * same cluster, and the command-to-reply latency of single es_execute calls.
 * One caller: es_execute_batch waits for the replies of its 2,000 commands
 * before the next call is made.
 */
#include "kafka.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <eskit/eskit.h>
#include <eskit/processor.h>

#include "domain.h"
#include "util.h"

#define PARTITIONS 6
#define BATCH 2000

static void quiet(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk, (void)level, (void)fac, (void)buf;
}

static int fail(const char *what, es_err rc, const es_error_t *err) {
    fprintf(stderr, "eskit-bench: %s: %s: %s\n", what, es_strerror(rc), err->message);
    return -1;
}

typedef struct cluster {
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mock;
    const char *bootstrap;
} cluster;

static int cluster_open(cluster *c) {
    static const char *const kinds[] = {"events", "commands", "replies", "snapshots"};
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, quiet);
    /* The mock's broker sockets take this handle's settings. Without TCP_NODELAY (which real
     * brokers set) a second response on a connection waits for the client's delayed ACK:
     * a 40 ms stall whenever two requests of one client are in flight to one broker. */
    if (rd_kafka_conf_set(conf, "socket.nagle.disable", "true", errstr, sizeof errstr) !=
        RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    c->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    c->mock = c->rk ? rd_kafka_mock_cluster_new(c->rk, 3) : NULL;
    if (!c->mock)
        return -1;
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
        char topic[64];
        snprintf(topic, sizeof topic, "orders.order.%s", kinds[i]);
        if (rd_kafka_mock_topic_create(c->mock, topic, PARTITIONS, 3))
            return -1;
    }
    if (rd_kafka_mock_topic_create(c->mock, "bench.raw", PARTITIONS, 3))
        return -1;
    c->bootstrap = rd_kafka_mock_cluster_bootstraps(c->mock);
    return 0;
}

static void cluster_close(cluster *c) {
    if (c->mock)
        rd_kafka_mock_cluster_destroy(c->mock);
    if (c->rk)
        rd_kafka_destroy(c->rk);
}

static es_config_t *config(const cluster *c, const char *dir, const char *state) {
    es_config_t *cfg = es_config_new();
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, state);
    es_error_t err;
    if (!cfg || es_config_set(cfg, "brokers", c->bootstrap, &err) ||
        es_config_set(cfg, "state.db", path, &err) ||
        es_config_set(cfg, "kafka.linger.ms", "2", &err) ||
        /* The mock holds an empty fetch for all of fetch.wait.max.ms even when records
         * arrive meanwhile (a broker answers at once): keep the wait short here. */
        es_config_set(cfg, "kafka.fetch.wait.max.ms", "1", &err)) {
        es_config_destroy(cfg);
        return NULL;
    }
    return cfg;
}

typedef struct owner {
    es_engine_t *engine;
    es_processor_t *proc;
    pthread_t thread;
    es_err rc;
    es_error_t err;
} owner;

static void *owner_main(void *arg) {
    owner *o = arg;
    o->rc = es_processor_run(o->proc, &o->err);
    return NULL;
}

static int owner_start(owner *o, const es_config_t *cfg) {
    es_error_t err = {0};
    es_err rc = es_engine_new(cfg, &o->engine, &err);
    rc = rc ? rc : demo_register_all(o->engine, &err);
    rc = rc ? rc : es_processor_new(cfg, o->engine, &o->proc, &err);
    if (rc)
        return fail("starting the processor", rc, &err);
    return pthread_create(&o->thread, NULL, owner_main, o) ? -1 : 0;
}

static void owner_stop(owner *o) {
    if (o->proc) {
        es_processor_stop(o->proc);
        pthread_join(o->thread, NULL);
        es_processor_destroy(o->proc);
    }
    es_engine_destroy(o->engine);
}

/* PlaceOrder for orders prefix-0..n-1 in batches; *bytes sums the events' envelope sizes. */
static int place_orders(es_engine_t *engine, const char *prefix, size_t n, double *seconds,
                        size_t *events, size_t *bytes) {
    Orders__V1__LineItem item = ORDERS__V1__LINE_ITEM__INIT, *items[] = {&item};
    Orders__V1__PlaceOrder place = ORDERS__V1__PLACE_ORDER__INIT;
    item.sku = "sku-1";
    item.quantity = 2;
    item.unit_price_cents = 1250;
    place.customer_id = "bench";
    place.n_items = 1;
    place.items = items;
    place.currency = "EUR";
    es_command_t *cmds = calloc(BATCH, sizeof *cmds);
    es_result_t *res = calloc(BATCH, sizeof *res);
    char(*ids)[32] = calloc(BATCH, sizeof *ids);
    int rc = cmds && res && ids ? 0 : -1;
    *events = *bytes = 0;
    int64_t t0 = bench_now_ns();
    for (size_t done = 0; rc == 0 && done < n; done += BATCH) {
        size_t k = n - done < BATCH ? n - done : BATCH;
        for (size_t i = 0; i < k; i++) {
            snprintf(ids[i], sizeof ids[i], "%s-%zu", prefix, done + i);
            cmds[i] = (es_command_t){
                .aggregate_type = "orders.order", .aggregate_id = ids[i], .message = &place.base};
        }
        es_error_t err = {0};
        memset(res, 0, k * sizeof *res);
        es_err e = es_execute_batch(engine, cmds, k, res, &err);
        for (size_t i = 0; i < k; i++) {
            if (e == ES_OK && res[i].outcome != ES_OUTCOME_ACCEPTED && rc == 0)
                rc = fail("a PlaceOrder over Kafka", res[i].code, &err);
            *events += res[i].n_events;
            for (size_t j = 0; j < res[i].n_events; j++) {
                uint8_t *buf = NULL;
                size_t len = 0;
                if (es_envelope_encode(res[i].events[j], &buf, &len, NULL) == ES_OK)
                    *bytes += len;
                free(buf);
            }
            es_result_clear(&res[i]);
        }
        if (e != ES_OK && rc == 0)
            rc = fail("es_execute_batch over Kafka", e, &err);
    }
    *seconds = (double)(bench_now_ns() - t0) / 1e9;
    free(cmds);
    free(res);
    free(ids);
    return rc;
}

static void count_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    if (m->err)
        ++*(size_t *)opaque;
}

/* Raw librdkafka: n records of len bytes, idempotent and acks=all, keyed like events. */
static int raw_produce(const cluster *c, size_t n, size_t len, double *seconds) {
    char errstr[256];
    size_t failed = 0;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, quiet);
    rd_kafka_conf_set(conf, "bootstrap.servers", c->bootstrap, errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "enable.idempotence", "true", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "acks", "all", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "partitioner", "murmur2_random", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "linger.ms", "2", errstr, sizeof errstr);
    rd_kafka_conf_set_dr_msg_cb(conf, count_dr);
    rd_kafka_conf_set_opaque(conf, &failed);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    uint8_t *value = calloc(1, len ? len : 1);
    if (!p || !value) {
        free(value);
        return -1;
    }
    int64_t t0 = bench_now_ns();
    for (size_t i = 0; i < n; i++) {
        char key[32];
        snprintf(key, sizeof key, "raw-%zu", i);
        while (rd_kafka_producev(p, RD_KAFKA_V_TOPIC("bench.raw"), RD_KAFKA_V_KEY(key, strlen(key)),
                                 RD_KAFKA_V_VALUE(value, len),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                 RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(p, 10);
        rd_kafka_poll(p, 0);
    }
    rd_kafka_flush(p, 60000);
    *seconds = (double)(bench_now_ns() - t0) / 1e9;
    int rc = failed || rd_kafka_outq_len(p) ? -1 : 0;
    rd_kafka_destroy(p);
    free(value);
    return rc;
}

/* One acknowledged produce at a time: the floor under a command's round trip. */
static int raw_latency(const cluster *c, size_t n, size_t len, bench_lat_t *out) {
    char errstr[256];
    size_t failed = 0;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, quiet);
    rd_kafka_conf_set(conf, "bootstrap.servers", c->bootstrap, errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "enable.idempotence", "true", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "acks", "all", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "linger.ms", "0", errstr, sizeof errstr);
    rd_kafka_conf_set_dr_msg_cb(conf, count_dr);
    rd_kafka_conf_set_opaque(conf, &failed);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    int64_t *ns = calloc(n, sizeof *ns);
    uint8_t *value = calloc(1, len ? len : 1);
    int rc = p && ns && value ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        int64_t t0 = bench_now_ns();
        if (rd_kafka_producev(p, RD_KAFKA_V_TOPIC("bench.raw"), RD_KAFKA_V_KEY("k", 1),
                              RD_KAFKA_V_VALUE(value, len),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END) ||
            rd_kafka_flush(p, 10000))
            rc = -1;
        ns[i] = bench_now_ns() - t0;
    }
    if (rc == 0 && !failed)
        *out = bench_lat_summary(ns, n);
    if (p)
        rd_kafka_destroy(p);
    free(ns);
    free(value);
    return rc || failed ? -1 : 0;
}

static int latency(es_engine_t *engine, size_t n, bench_lat_t *out) {
    int64_t *ns = calloc(n, sizeof *ns);
    double s;
    size_t events, bytes;
    int rc = ns ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "lat-%zu", i);
        int64_t t0 = bench_now_ns();
        rc = place_orders(engine, prefix, 1, &s, &events, &bytes);
        ns[i] = bench_now_ns() - t0;
    }
    if (rc == 0)
        *out = bench_lat_summary(ns, n);
    free(ns);
    return rc;
}

int bench_kafka(const char *dir, size_t n, kafka_figs_t *out) {
    cluster c = {0};
    owner o = {0};
    es_engine_t *caller = NULL;
    es_config_t *ocfg = NULL, *ccfg = NULL;
    es_error_t err = {0};
    memset(out, 0, sizeof *out);
    int rc = cluster_open(&c);
    if (rc == 0) {
        ocfg = config(&c, dir, "owner-state.db");
        ccfg = config(&c, dir, "caller-state.db");
        rc = ocfg && ccfg ? owner_start(&o, ocfg) : -1;
    }
    if (rc == 0) {
        es_err e = es_engine_new(ccfg, &caller, &err);
        e = e ? e : demo_register_all(caller, &err);
        rc = e ? fail("opening the Kafka caller", e, &err) : 0;
    }
    double s = 0, raw_s = 0;
    size_t events = 0, bytes = 0;
    if (rc == 0) /* warm-up: assignment, restore, metadata */
        rc = place_orders(caller, "warm", BATCH, &s, &events, &bytes);
    if (rc == 0)
        rc = place_orders(caller, "order", n, &s, &events, &bytes);
    if (rc == 0 && events) {
        out->events = events;
        out->es_per_s = (double)events / s;
        rc = raw_produce(&c, events, bytes / events, &raw_s);
        out->raw_per_s = raw_s > 0 ? (double)events / raw_s : 0;
        out->mean_bytes = bytes / events;
    }
    size_t lat_n = n / 50 ? n / 50 : 10;
    if (rc == 0)
        rc = latency(caller, lat_n, &out->latency);
    if (rc == 0)
        rc = raw_latency(&c, lat_n, out->mean_bytes, &out->raw_latency);
    es_engine_destroy(caller);
    owner_stop(&o);
    es_config_destroy(ocfg);
    es_config_destroy(ccfg);
    cluster_close(&c);
    char path[4096];
    const char *const files[] = {"owner-state.db", "caller-state.db"};
    const char *const suffix[] = {"", "-wal", "-shm"};
    for (size_t f = 0; f < 2; f++)
        for (size_t k = 0; k < 3; k++) {
            snprintf(path, sizeof path, "%s/%s%s", dir, files[f], suffix[k]);
            unlink(path);
        }
    return rc;
}
