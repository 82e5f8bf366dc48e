/*
 * Kafka figures on librdkafka's mock cluster (3 brokers, in this process):
 * es_execute_batch through the command path (a processor thread owns the
 * partitions) beside raw librdkafka producing the same envelope bytes to the
 * same cluster, beside a hand-written librdkafka request/reply pipeline that
 * makes the same hops with the same bytes and nothing else (no SQLite, no
 * decide, no decoding), and the command-to-reply latency of single es_execute
 * calls. One caller: es_execute_batch waits for the replies of its 2,000
 * commands before the next call is made; so does the pipeline's caller.
 */
#include "kafka.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <eskit/eskit.h>
#include <eskit/processor.h>

#include "domain.h"
#include "eskit/v1/command.pb-c.h"
#include "eskit/v1/reply.pb-c.h"
#include "util.h"

#define PARTITIONS 6
#define BATCH 2000
#define RAW_RUNS 5       /* raw produce runs; the median is the baseline */
#define CALLER_THREADS 8 /* callers sharing one engine, one command a call */
/* The pipeline's topics: a prefix as long as "orders.order", so reply_to has the same length. */
#define RR "bench.rrpipe"
#define RR_POLL_MAX 500   /* records per worker batch, as the processor takes them */
#define RR_WAIT_MS 30000  /* one batch's replies; past it the pipeline has failed */
#define RR_FLUSH_MS 10000 /* events' delivery, then replies' */
#define RR_UUID "01900000-0000-7000-8000-000000000000" /* an id's length, for ids not decoded */

typedef bench_mock_t cluster;

static int cluster_open(cluster *c) {
    static const char *const types[] = {"orders.order"};
    if (bench_mock_open(c, 3, types, 1, PARTITIONS) ||
        bench_mock_topic(c, "bench.raw", PARTITIONS) ||
        bench_mock_topic(c, RR ".commands", PARTITIONS) ||
        bench_mock_topic(c, RR ".events", PARTITIONS) ||
        bench_mock_topic(c, RR ".replies", PARTITIONS))
        return -1;
    return 0;
}

static es_config_t *config(const cluster *c, const char *dir, const char *state, bool metrics) {
    es_config_t *cfg = es_config_new();
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, state);
    es_error_t err;
    if (!cfg || es_config_set(cfg, "brokers", c->bootstrap, &err) ||
        es_config_set(cfg, "state.db", path, &err) ||
        es_config_set(cfg, "kafka.linger.ms", "2", &err) ||
        /* The mock holds an empty fetch for all of fetch.wait.max.ms even when records
         * arrive meanwhile (a broker answers at once): keep the wait short here. */
        es_config_set(cfg, "kafka.fetch.wait.max.ms", "1", &err) ||
        es_config_set(cfg, "metrics.enabled", metrics ? "true" : "false", &err)) {
        es_config_destroy(cfg);
        return NULL;
    }
    return cfg;
}

typedef bench_owner_t owner;

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
                rc = bench_fail("a PlaceOrder over Kafka", res[i].code, &err);
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
            rc = bench_fail("es_execute_batch over Kafka", e, &err);
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

/* A producer as eskit's events producer is set up (idempotent, acks=all, murmur2_random), with
 * the given linger; *failed counts delivery reports with an error. */
static rd_kafka_t *raw_producer(const cluster *c, const char *linger, size_t *failed) {
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, bench_quiet_log);
    rd_kafka_conf_set(conf, "bootstrap.servers", c->bootstrap, errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "enable.idempotence", "true", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "acks", "all", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "partitioner", "murmur2_random", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "linger.ms", linger, errstr, sizeof errstr);
    rd_kafka_conf_set_dr_msg_cb(conf, count_dr);
    rd_kafka_conf_set_opaque(conf, failed);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!p)
        rd_kafka_conf_destroy(conf);
    return p;
}

/* Raw librdkafka: n records of len bytes, idempotent and acks=all, keyed like events. */
static int raw_produce(const cluster *c, size_t n, size_t len, double *seconds) {
    size_t failed = 0;
    rd_kafka_t *p = raw_producer(c, "2", &failed);
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

static int by_seconds(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* raw_produce RAW_RUNS times, the median time: one run takes tens of milliseconds, so a single
 * stall of the machine would otherwise decide the baseline. */
static int raw_median(const cluster *c, size_t n, size_t len, double *seconds) {
    double s[RAW_RUNS];
    int rc = 0;
    for (int i = 0; rc == 0 && i < RAW_RUNS; i++)
        rc = raw_produce(c, n, len, &s[i]);
    if (rc == 0) {
        qsort(s, RAW_RUNS, sizeof *s, by_seconds);
        *seconds = s[RAW_RUNS / 2];
    }
    return rc;
}

/* One acknowledged produce at a time: the floor under a command's round trip. */
static int raw_latency(const cluster *c, size_t n, size_t len, bench_lat_t *out) {
    size_t failed = 0;
    rd_kafka_t *p = raw_producer(c, "0", &failed);
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

/* ---- the raw request/reply pipeline: the command path's hops, nothing of eskit ----------- */

static int rr_set(rd_kafka_conf_t *conf, const char *key, const char *value) {
    char errstr[256];
    if (rd_kafka_conf_set(conf, key, value, errstr, sizeof errstr) == RD_KAFKA_CONF_OK)
        return 0;
    fprintf(stderr, "eskit-bench: raw request/reply pipeline: %s: %s\n", key, errstr);
    return -1;
}

/* A client configured as eskit configures its own here: producers idempotent with acks=all,
 * consumers with manual offsets; linger and fetch wait as config() sets them. */
static rd_kafka_t *rr_client(const cluster *c, const char *group, size_t *failed) {
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, bench_quiet_log);
    int rc = rr_set(conf, "bootstrap.servers", c->bootstrap) || rr_set(conf, "linger.ms", "2") ||
             rr_set(conf, "fetch.wait.max.ms", "1");
    if (group)
        rc = rc || rr_set(conf, "group.id", group) || rr_set(conf, "enable.auto.commit", "false") ||
             rr_set(conf, "enable.auto.offset.store", "false") ||
             rr_set(conf, "enable.partition.eof", "false") ||
             rr_set(conf, "auto.offset.reset", "earliest");
    else
        rc = rc || rr_set(conf, "enable.idempotence", "true") || rr_set(conf, "acks", "all") ||
             rr_set(conf, "partitioner", "murmur2_random");
    if (!group) {
        rd_kafka_conf_set_dr_msg_cb(conf, count_dr);
        rd_kafka_conf_set_opaque(conf, failed);
    }
    rd_kafka_t *rk = rc ? NULL
                        : rd_kafka_new(group ? RD_KAFKA_CONSUMER : RD_KAFKA_PRODUCER, conf, errstr,
                                       sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        if (!rc)
            fprintf(stderr, "eskit-bench: raw request/reply pipeline: %s\n", errstr);
        return NULL;
    }
    if (group)
        rd_kafka_poll_set_consumer(rk);
    return rk;
}

/* The worker: what the processor does to a batch, with fixed bytes in place of its work. */
typedef struct rr_worker {
    rd_kafka_t *consumer, *producer;
    size_t failed; /* delivery reports with an error; the worker thread's own */
    const uint8_t *event, *reply;
    size_t event_len, reply_len;
    pthread_t thread;
    atomic_int stop, dead;
    char why[256]; /* why the worker stopped, once dead is set */
} rr_worker;

static int32_t rr_reply_partition(const rd_kafka_message_t *m) {
    rd_kafka_headers_t *h = NULL;
    const void *v = NULL;
    size_t len = 0;
    char buf[16];
    if (rd_kafka_message_headers(m, &h) ||
        rd_kafka_header_get_last(h, "es-reply-partition", &v, &len) || !v || len == 0 ||
        len >= sizeof buf)
        return RD_KAFKA_PARTITION_UA;
    memcpy(buf, v, len);
    buf[len] = '\0';
    return (int32_t)strtol(buf, NULL, 10);
}

static int rr_send(rr_worker *w, const char *topic, int32_t partition,
                   const rd_kafka_message_t *cmd, const uint8_t *value, size_t len, int event) {
    rd_kafka_headers_t *h = NULL;
    if (event) { /* the copies eskit puts on an event record, as long as its own */
        h = rd_kafka_headers_new(4);
        rd_kafka_header_add(h, "es-event-type", -1, "orders.v1.OrderPlaced", -1);
        rd_kafka_header_add(h, "es-version", -1, "1", -1);
        rd_kafka_header_add(h, "es-event-id", -1, RR_UUID, -1);
        rd_kafka_header_add(h, "es-correlation-id", -1, RR_UUID, -1);
    }
    rd_kafka_resp_err_t ke;
    while ((ke = rd_kafka_producev(
                w->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(cmd->key, cmd->key_len),
                RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END)) ==
           RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(w->producer, 10);
    if (ke) {
        if (h)
            rd_kafka_headers_destroy(h);
        snprintf(w->why, sizeof w->why, "producing to %s: %s", topic, rd_kafka_err2str(ke));
        return -1;
    }
    return 0;
}

/* Waits for every delivery report; any error or record left over fails the worker. */
static int rr_flush(rr_worker *w, const char *what) {
    rd_kafka_flush(w->producer, RR_FLUSH_MS);
    if (!w->failed && rd_kafka_outq_len(w->producer) == 0)
        return 0;
    snprintf(w->why, sizeof w->why, "%s: %zu failed, %d unacknowledged after %d ms", what,
             w->failed, rd_kafka_outq_len(w->producer), RR_FLUSH_MS);
    return -1;
}

/* Events to the command's partition number, acknowledged; then replies; then offsets. */
static int rr_answer(rr_worker *w, rd_kafka_message_t **batch, size_t n) {
    int64_t next[PARTITIONS];
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = rr_send(w, RR ".events", batch[i]->partition, batch[i], w->event, w->event_len, 1);
    rc = rc ? rc : rr_flush(w, "events");
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = rr_send(w, RR ".replies", rr_reply_partition(batch[i]), batch[i], w->reply,
                     w->reply_len, 0);
    rc = rc ? rc : rr_flush(w, "replies");
    for (int p = 0; p < PARTITIONS; p++)
        next[p] = -1;
    for (size_t i = 0; i < n; i++)
        if (batch[i]->partition >= 0 && batch[i]->partition < PARTITIONS)
            next[batch[i]->partition] = batch[i]->offset + 1;
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(PARTITIONS);
    for (int p = 0; p < PARTITIONS; p++)
        if (next[p] >= 0)
            rd_kafka_topic_partition_list_add(offs, RR ".commands", p)->offset = next[p];
    if (rc == 0) /* asynchronous, as the processor commits */
        rd_kafka_commit(w->consumer, offs, 1);
    rd_kafka_topic_partition_list_destroy(offs);
    for (size_t i = 0; i < n; i++)
        rd_kafka_message_destroy(batch[i]);
    return rc;
}

static void *rr_worker_main(void *arg) {
    rr_worker *w = arg;
    rd_kafka_message_t *batch[RR_POLL_MAX];
    while (!atomic_load(&w->stop)) {
        size_t n = 0;
        for (rd_kafka_message_t *m = rd_kafka_consumer_poll(w->consumer, 100); m;
             m = n < RR_POLL_MAX ? rd_kafka_consumer_poll(w->consumer, 0) : NULL) {
            if (m->err) /* librdkafka retries by itself; the caller's deadline catches a stall */
                rd_kafka_message_destroy(m);
            else
                batch[n++] = m;
        }
        if (n && rr_answer(w, batch, n) != 0) {
            atomic_store(&w->dead, 1);
            break;
        }
    }
    return NULL;
}

/* The caller: what es_execute_batch does on the wire, from bytes packed once per command. */
typedef struct rr_caller {
    rd_kafka_t *producer, *consumer;
    size_t failed;
    uint8_t *payload; /* a packed PlaceOrder */
    size_t payload_len;
    char *done; /* per command of the batch: its reply came */
} rr_caller;

static int rr_command(rr_caller *c, const char *id, const char *key) {
    Eskit__V1__CommandEnvelope env = ESKIT__V1__COMMAND_ENVELOPE__INIT;
    uint8_t buf[512];
    env.command_id = (char *)id;
    env.aggregate_type = "orders.order";
    env.aggregate_id = (char *)key;
    env.command_type = "orders.v1.PlaceOrder";
    env.payload = (ProtobufCBinaryData){c->payload_len, c->payload};
    env.correlation_id = "";
    env.reply_to = RR ".replies";
    size_t len = eskit__v1__command_envelope__get_packed_size(&env);
    if (len > sizeof buf)
        return -1;
    eskit__v1__command_envelope__pack(&env, buf);
    rd_kafka_headers_t *h = rd_kafka_headers_new(1);
    rd_kafka_header_add(h, "es-reply-partition", -1, "0", -1);
    rd_kafka_resp_err_t ke;
    while ((ke = rd_kafka_producev(c->producer, RD_KAFKA_V_TOPIC(RR ".commands"),
                                   RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                   RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE(buf, len),
                                   RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END)) ==
           RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(c->producer, 10);
    if (ke) {
        rd_kafka_headers_destroy(h);
        fprintf(stderr, "eskit-bench: raw request/reply pipeline: sending a command: %s\n",
                rd_kafka_err2str(ke));
        return -1;
    }
    return 0;
}

/* Marks the command whose key ("<prefix>-<index>") the reply carries; returns 1 if new. */
static int rr_take(rr_caller *c, const rd_kafka_message_t *m, size_t from, size_t k) {
    char key[64];
    if (!m->key || m->key_len == 0 || m->key_len >= sizeof key)
        return 0;
    memcpy(key, m->key, m->key_len);
    key[m->key_len] = '\0';
    const char *dash = strrchr(key, '-');
    size_t i = dash ? strtoull(dash + 1, NULL, 10) : SIZE_MAX;
    if (i < from || i - from >= k || c->done[i - from])
        return 0;
    c->done[i - from] = 1;
    return 1;
}

/* k commands from index from, then their k replies; -1 past RR_WAIT_MS or when the worker died. */
static int rr_batch(rr_caller *c, const rr_worker *w, const char *prefix, size_t from, size_t k) {
    char id[40], key[32];
    for (size_t i = 0; i < k; i++) {
        snprintf(id, sizeof id, "01900000-0000-7000-8000-%012zx", from + i);
        snprintf(key, sizeof key, "%s-%zu", prefix, from + i);
        if (rr_command(c, id, key) != 0)
            return -1;
        rd_kafka_poll(c->producer, 0);
    }
    rd_kafka_flush(c->producer, RR_FLUSH_MS);
    if (c->failed || rd_kafka_outq_len(c->producer)) {
        fprintf(stderr, "eskit-bench: raw request/reply pipeline: commands not acknowledged\n");
        return -1;
    }
    memset(c->done, 0, k);
    size_t left = k;
    int64_t deadline = bench_now_ns() + (int64_t)RR_WAIT_MS * 1000000;
    while (left && !atomic_load(&w->dead) && bench_now_ns() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->consumer, 100);
        if (m && !m->err)
            left -= (size_t)rr_take(c, m, from, k);
        if (m)
            rd_kafka_message_destroy(m);
    }
    if (left == 0)
        return 0;
    fprintf(stderr,
            "eskit-bench: raw request/reply pipeline: %zu of %zu replies to %s-%zu.. did not "
            "come within %d ms%s%s\n",
            left, k, prefix, from, RR_WAIT_MS, atomic_load(&w->dead) ? "; the worker failed: " : "",
            atomic_load(&w->dead) ? w->why : "");
    return -1;
}

/* The reply eskit sends for a PlaceOrder: its ids and the event envelope, len bytes. */
static uint8_t *rr_reply_bytes(const uint8_t *event, size_t len, size_t *out_len) {
    Eskit__V1__CommandReply rep = ESKIT__V1__COMMAND_REPLY__INIT;
    char *ids[] = {RR_UUID};
    ProtobufCBinaryData evs[] = {{len, (uint8_t *)event}};
    rep.command_id = RR_UUID;
    rep.aggregate_type = "orders.order";
    rep.aggregate_id = "order-10000";
    rep.outcome = ESKIT__V1__OUTCOME__OUTCOME_ACCEPTED;
    rep.first_version = rep.last_version = rep.version = 1;
    rep.reason = "";
    rep.n_event_ids = rep.n_events = 1;
    rep.event_ids = ids;
    rep.events = evs;
    *out_len = eskit__v1__command_reply__get_packed_size(&rep);
    uint8_t *buf = malloc(*out_len);
    if (buf)
        eskit__v1__command_reply__pack(&rep, buf);
    return buf;
}

static uint8_t *rr_place_order(size_t *len) {
    Orders__V1__LineItem item = ORDERS__V1__LINE_ITEM__INIT, *items[] = {&item};
    Orders__V1__PlaceOrder place = ORDERS__V1__PLACE_ORDER__INIT;
    item.sku = "sku-1";
    item.quantity = 2;
    item.unit_price_cents = 1250;
    place.customer_id = "bench";
    place.n_items = 1;
    place.items = items;
    place.currency = "EUR";
    *len = orders__v1__place_order__get_packed_size(&place);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf)
        orders__v1__place_order__pack(&place, buf);
    return buf;
}

/* The caller reads replies partition 0 from its end, as es_execute reads its own. */
static int rr_assign_replies(rd_kafka_t *consumer) {
    int64_t lo = 0, hi = 0;
    rd_kafka_resp_err_t ke =
        rd_kafka_query_watermark_offsets(consumer, RR ".replies", 0, &lo, &hi, RR_FLUSH_MS);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, RR ".replies", 0)->offset = hi;
    ke = ke ? ke : rd_kafka_assign(consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (ke)
        fprintf(stderr, "eskit-bench: raw request/reply pipeline: reading %s: %s\n", RR ".replies",
                rd_kafka_err2str(ke));
    return ke ? -1 : 0;
}

static int rr_subscribe(rd_kafka_t *consumer) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, RR ".commands", RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t ke = rd_kafka_subscribe(consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
    return ke ? -1 : 0;
}

/* lat_n round trips of one command each, after the batches: the caller sends one command,
 * waits for its delivery and then for its reply, as es_execute does; the worker makes the same
 * hops for a batch of one. The floor under es_execute's command-to-reply latency. */
static int rr_one_by_one(rr_caller *c, const rr_worker *w, size_t lat_n, bench_lat_t *out) {
    int64_t *ns = calloc(lat_n ? lat_n : 1, sizeof *ns);
    int rc = ns ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < lat_n; i++) {
        int64_t t0 = bench_now_ns();
        rc = rr_batch(c, w, "one", i, 1);
        ns[i] = bench_now_ns() - t0;
    }
    if (rc == 0 && lat_n)
        *out = bench_lat_summary(ns, lat_n);
    free(ns);
    return rc;
}

/* n commands through the pipeline after a warm-up batch, then lat_n one at a time (*lat);
 * event_len: the envelope's size. */
static int rr_pipeline(const cluster *cl, size_t n, size_t event_len, size_t lat_n, double *seconds,
                       bench_lat_t *lat) {
    rr_worker w = {.event_len = event_len};
    rr_caller c = {0};
    uint8_t *event = calloc(1, event_len ? event_len : 1);
    uint8_t *reply = event ? rr_reply_bytes(event, event_len, &w.reply_len) : NULL;
    int started = 0, rc = -1;
    w.event = event;
    w.reply = reply;
    atomic_init(&w.stop, 0);
    atomic_init(&w.dead, 0);
    c.payload = rr_place_order(&c.payload_len);
    c.done = calloc(BATCH, 1);
    if (!reply || !c.payload || !c.done)
        goto out;
    w.consumer = rr_client(cl, RR ".worker", NULL);
    w.producer = rr_client(cl, NULL, &w.failed);
    c.consumer = rr_client(cl, RR ".caller", NULL);
    c.producer = rr_client(cl, NULL, &c.failed);
    if (!w.consumer || !w.producer || !c.consumer || !c.producer || rr_subscribe(w.consumer) ||
        rr_assign_replies(c.consumer))
        goto out;
    if (pthread_create(&w.thread, NULL, rr_worker_main, &w))
        goto out;
    started = 1;
    rc = rr_batch(&c, &w, "warm", 0, BATCH); /* group join, metadata, producer ids */
    int64_t t0 = bench_now_ns();
    for (size_t done = 0; rc == 0 && done < n; done += BATCH)
        rc = rr_batch(&c, &w, "order", done, n - done < BATCH ? n - done : BATCH);
    *seconds = (double)(bench_now_ns() - t0) / 1e9;
    if (rc == 0)
        rc = rr_one_by_one(&c, &w, lat_n, lat);
out:
    if (started) {
        atomic_store(&w.stop, 1);
        pthread_join(w.thread, NULL);
    }
    if (w.consumer) {
        rd_kafka_consumer_close(w.consumer);
        rd_kafka_destroy(w.consumer);
    }
    if (c.consumer)
        rd_kafka_destroy_flags(c.consumer, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    if (w.producer)
        rd_kafka_destroy(w.producer);
    if (c.producer)
        rd_kafka_destroy(c.producer);
    free(c.done);
    free(c.payload);
    free(reply);
    free(event);
    return rc;
}

/* n es_execute calls one after another; *per_s: calls a second. */
static int latency(es_engine_t *engine, size_t n, bench_lat_t *out, double *per_s) {
    int64_t *ns = calloc(n, sizeof *ns), total = 0;
    double s;
    size_t events, bytes;
    int rc = ns ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "lat-%zu", i);
        int64_t t0 = bench_now_ns();
        rc = place_orders(engine, prefix, 1, &s, &events, &bytes);
        ns[i] = bench_now_ns() - t0;
        total += ns[i];
    }
    if (rc == 0)
        *out = bench_lat_summary(ns, n);
    *per_s = rc == 0 && total > 0 ? (double)n / ((double)total / 1e9) : 0;
    free(ns);
    return rc;
}

typedef struct caller_thread {
    es_engine_t *engine;
    size_t first, n;
    int rc;
    pthread_t thread;
} caller_thread;

static void *caller_main(void *arg) {
    caller_thread *c = arg;
    for (size_t i = 0; c->rc == 0 && i < c->n; i++) {
        char prefix[32];
        double s;
        size_t events, bytes;
        snprintf(prefix, sizeof prefix, "mt-%zu", c->first + i);
        c->rc = place_orders(c->engine, prefix, 1, &s, &events, &bytes);
    }
    return NULL;
}

/* The same single-command calls from CALLER_THREADS threads sharing the engine: calls a second. */
static int threaded_calls(es_engine_t *engine, size_t n, double *per_s) {
    caller_thread t[CALLER_THREADS];
    size_t started = 0;
    int rc = 0;
    int64_t t0 = bench_now_ns();
    for (; started < CALLER_THREADS; started++) {
        t[started] = (caller_thread){
            .engine = engine, .first = started * (n / CALLER_THREADS), .n = n / CALLER_THREADS};
        if (pthread_create(&t[started].thread, NULL, caller_main, &t[started]))
            break;
    }
    for (size_t i = 0; i < started; i++) {
        pthread_join(t[i].thread, NULL);
        rc |= t[i].rc;
    }
    double s = (double)(bench_now_ns() - t0) / 1e9;
    size_t sent = CALLER_THREADS * (n / CALLER_THREADS); /* each thread sends an equal share */
    *per_s = rc == 0 && started == CALLER_THREADS && s > 0 ? (double)sent / s : 0;
    return started == CALLER_THREADS ? rc : -1;
}

/* The processor's own work without Kafka: the same commands, batches and snapshot policy on an
 * embedded engine whose store is set up as the processor sets up its state store. */
static int local_orders(const char *dir, size_t n, double *per_s) {
    char path[4096];
    es_error_t err = {0};
    es_engine_t *engine = NULL;
    es_config_t *cfg = es_config_new();
    snprintf(path, sizeof path, "%s/local-state.db", dir);
    es_err e = cfg ? ES_OK : ES_ENOMEM;
    e = e ? e : es_config_set(cfg, "db", path, &err);
    e = e ? e : es_config_set(cfg, "sqlite.synchronous", "normal", &err);
    e = e ? e : es_engine_new(cfg, &engine, &err);
    e = e ? e : demo_register_all(engine, &err);
    int rc = e ? bench_fail("opening the embedded engine", e, &err) : 0;
    double s = 0;
    size_t events = 0, bytes = 0;
    if (rc == 0)
        rc = place_orders(engine, "local", n, &s, &events, &bytes);
    *per_s = rc == 0 && s > 0 ? (double)events / s : 0;
    es_engine_destroy(engine);
    es_config_destroy(cfg);
    return rc;
}

static void remove_states(const char *dir) {
    char path[4096];
    const char *const files[] = {"owner-state.db", "caller-state.db", "local-state.db"};
    const char *const suffix[] = {"", "-wal", "-shm"};
    for (size_t f = 0; f < 3; f++)
        for (size_t k = 0; k < 3; k++) {
            snprintf(path, sizeof path, "%s/%s%s", dir, files[f], suffix[k]);
            unlink(path);
        }
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
        ocfg = config(&c, dir, "owner-state.db", true);
        ccfg = config(&c, dir, "caller-state.db", true);
        rc = ocfg && ccfg ? bench_owner_start(&o, ocfg) : -1;
    }
    if (rc == 0) {
        es_err e = es_engine_new(ccfg, &caller, &err);
        e = e ? e : demo_register_all(caller, &err);
        rc = e ? bench_fail("opening the Kafka caller", e, &err) : 0;
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
        rc = raw_median(&c, events, bytes / events, &raw_s);
        out->raw_per_s = raw_s > 0 ? (double)events / raw_s : 0;
        out->mean_bytes = bytes / events;
    }
    size_t lat_n = n / 50 ? n / 50 : 10;
    out->lat_calls = lat_n;
    if (rc == 0)
        rc = latency(caller, lat_n, &out->latency, &out->calls_per_s);
    if (rc == 0)
        rc = threaded_calls(caller, lat_n, &out->threaded_calls_per_s);
    if (rc == 0)
        rc = raw_latency(&c, lat_n, out->mean_bytes, &out->raw_latency);
    es_engine_destroy(caller);
    bench_owner_stop(&o);
    double rr_s = 0;
    if (rc == 0) /* alone on the cluster, as the command path was */
        rc = rr_pipeline(&c, n, out->mean_bytes, lat_n, &rr_s, &out->rr_latency);
    out->pipeline_per_s = rc == 0 && rr_s > 0 ? (double)n / rr_s : 0;
    if (rc == 0)
        rc = local_orders(dir, n, &out->local_per_s);
    es_config_destroy(ocfg);
    es_config_destroy(ccfg);
    bench_mock_close(&c);
    remove_states(dir);
    return rc;
}

/* One side of the metrics figure: a cluster, processor and caller of its own, all with metrics
 * on or all off; each side's state files are named for it. */
typedef struct mx_side {
    cluster c;
    owner o;
    es_engine_t *caller;
    es_config_t *ocfg, *ccfg;
} mx_side;

/* The side's cluster and processor; its group join goes on while the other side starts. */
static int mx_start(mx_side *m, const char *dir, bool metrics) {
    int rc = cluster_open(&m->c);
    if (rc == 0) {
        m->ocfg = config(&m->c, dir, metrics ? "mx-on-owner.db" : "mx-off-owner.db", metrics);
        m->ccfg = config(&m->c, dir, metrics ? "mx-on-caller.db" : "mx-off-caller.db", metrics);
        rc = m->ocfg && m->ccfg ? bench_owner_start(&m->o, m->ocfg) : -1;
    }
    return rc;
}

static int mx_open_caller(mx_side *m) {
    es_error_t err = {0};
    es_err e = es_engine_new(m->ccfg, &m->caller, &err);
    e = e ? e : demo_register_all(m->caller, &err);
    return e ? bench_fail("opening the Kafka caller", e, &err) : 0;
}

typedef struct mx_warm {
    es_engine_t *caller;
    int rc;
} mx_warm;

static void *mx_warm_main(void *arg) {
    mx_warm *w = arg;
    double s;
    size_t events, bytes;
    w->rc = place_orders(w->caller, "warm", BATCH, &s, &events, &bytes);
    return NULL;
}

/* The warm-ups of both sides at once (assignment, restore, metadata): seconds each, mostly
 * waiting on the mock. */
static int mx_warm_up(mx_side *a, mx_side *b) {
    mx_warm wa = {a->caller, -1}, wb = {b->caller, -1};
    pthread_t t;
    if (pthread_create(&t, NULL, mx_warm_main, &wb))
        return -1;
    mx_warm_main(&wa);
    pthread_join(t, NULL);
    return wa.rc || wb.rc ? -1 : 0;
}

static void mx_close(mx_side *m) {
    es_engine_destroy(m->caller);
    bench_owner_stop(&m->o);
    es_config_destroy(m->ocfg);
    es_config_destroy(m->ccfg);
    bench_mock_close(&m->c);
}

typedef struct mx_ctx {
    mx_side on, off;
    size_t n, runs, events;
} mx_ctx;

/* One timed run on the side asked for, orders of a prefix of its own. */
static int mx_run(void *opaque, bool metrics, double *events) {
    mx_ctx *x = opaque;
    char prefix[32];
    double s = 0;
    size_t bytes = 0;
    snprintf(prefix, sizeof prefix, "order-%zu", x->runs++);
    int rc =
        place_orders(metrics ? x->on.caller : x->off.caller, prefix, x->n, &s, &x->events, &bytes);
    *events = (double)x->events;
    return rc;
}

static void mx_remove(const char *dir) {
    static const char *const files[] = {"mx-on-owner.db", "mx-on-caller.db", "mx-off-owner.db",
                                        "mx-off-caller.db"};
    char path[4096];
    for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[f]);
        bench_db_remove(path);
    }
}

int bench_kafka_metrics(const char *dir, size_t n, size_t pairs, kafka_metrics_t *out) {
    mx_ctx *x = calloc(1, sizeof *x);
    memset(out, 0, sizeof *out);
    if (!x)
        return -1;
    x->n = n;
    /* Both processors join their groups at once, and both callers warm up at once. */
    int rc = mx_start(&x->on, dir, true);
    rc = rc ? rc : mx_start(&x->off, dir, false);
    rc = rc ? rc : mx_open_caller(&x->on);
    rc = rc ? rc : mx_open_caller(&x->off);
    rc = rc ? rc : mx_warm_up(&x->on, &x->off);
    rc = rc ? rc : bench_alternate(mx_run, x, pairs, &out->alt);
    out->events = x->events;
    mx_close(&x->on);
    mx_close(&x->off);
    mx_remove(dir);
    free(x);
    return rc;
}
