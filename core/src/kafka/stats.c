/*
 * A Kafka handle's gauges from librdkafka's statistics (see stats.h).
 */
#include "kafka/stats.h"
#include "internal.h"
#include "metrics_int.h"
#include "registry_json.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct kbroker {
    char name[320]; /* librdkafka's "host:port/nodeid" */
    double rtt_s;
} kbroker;

typedef struct klag {
    char topic[256]; /* Kafka's topic names are at most 249 bytes */
    int32_t partition;
    int64_t lag;
} klag;

/* What one statistics document said. */
typedef struct table {
    int have;
    long long msg_cnt;
    kbroker *brokers;
    size_t n_brokers, cap_brokers;
    klag *lags;
    size_t n_lags, cap_lags;
} table;

struct es_kafka_stats {
    pthread_mutex_t lock; /* cur: the stats_cb swaps it, a scrape reads it */
    table cur;
    char client[256];
    int producer;
    es_mx_source *src;
};

static void table_free(table *t) {
    free(t->brokers);
    free(t->lags);
    memset(t, 0, sizeof *t);
}

/* ---- metrics ----------------------------------------------------------------------------- */

static void collect(void *self, es_mx_sink *s) {
    es_kafka_stats_t *st = self;
    char labels[1024], part[16];
    pthread_mutex_lock(&st->lock);
    const table *t = &st->cur;
    for (size_t i = 0; t->have && i < t->n_brokers; i++)
        es_mx_sample(s, "eskit_kafka_broker_rtt_seconds", ES_MX_GAUGE,
                     "librdkafka's mean round-trip time to the broker over its last statistics "
                     "interval.",
                     es_mx_labels(labels, sizeof labels, "client", st->client, "broker",
                                  t->brokers[i].name, (const char *)NULL),
                     t->brokers[i].rtt_s);
    if (t->have && st->producer)
        es_mx_sample(s, "eskit_kafka_queue_messages", ES_MX_GAUGE,
                     "Messages in librdkafka's producer queue.",
                     es_mx_labels(labels, sizeof labels, "client", st->client, (const char *)NULL),
                     (double)t->msg_cnt);
    for (size_t i = 0; t->have && i < t->n_lags; i++) {
        snprintf(part, sizeof part, "%d", (int)t->lags[i].partition);
        es_mx_sample(s, "eskit_kafka_consumer_lag_records", ES_MX_GAUGE,
                     "Consumer lag as librdkafka reports it: the partition's end minus the "
                     "group's committed offset.",
                     es_mx_labels(labels, sizeof labels, "client", st->client, "topic",
                                  t->lags[i].topic, "partition", part, (const char *)NULL),
                     (double)t->lags[i].lag);
    }
    pthread_mutex_unlock(&st->lock);
}

es_err es_kafka_stats_new(const es_config_t *cfg, const char *client, int producer,
                          es_kafka_stats_t **out, es_error_t *err) {
    *out = NULL;
    if (!es_mx_enabled(cfg))
        return ES_OK;
    es_kafka_stats_t *st = calloc(1, sizeof *st);
    if (!st)
        return es_fail(err, ES_ENOMEM, "out of memory making the Kafka metrics of %s", client);
    pthread_mutex_init(&st->lock, NULL);
    snprintf(st->client, sizeof st->client, "%s", client);
    st->producer = producer;
    es_err e = es_mx_register(cfg, collect, NULL, st, &st->src, err);
    if (e != ES_OK) {
        pthread_mutex_destroy(&st->lock);
        free(st);
        return e;
    }
    *out = st;
    return ES_OK;
}

void es_kafka_stats_unregister(es_kafka_stats_t *st) {
    if (!st)
        return;
    es_mx_unregister(st->src);
    st->src = NULL;
}

void es_kafka_stats_free(es_kafka_stats_t *st) {
    if (!st)
        return;
    es_kafka_stats_unregister(st);
    table_free(&st->cur);
    pthread_mutex_destroy(&st->lock);
    free(st);
}

/* metrics.kafka.interval.ms, 0 when metrics are off. */
static long long interval_ms(const es_config_t *cfg) {
    const char *v = es_config_get(cfg, "metrics.kafka.interval.ms");
    if (!es_mx_enabled(cfg))
        return 0;
    return v ? strtoll(v, NULL, 10) : 5000;
}

es_err es_kafka_stats_open(const es_config_t *cfg, const es_kafka_opts_t *o, rd_kafka_conf_t *conf,
                           es_kafka_stats_t **out, es_error_t *err) {
    char client[256], errstr[256], ms[24];
    const char *svc = es_config_get(cfg, "service.name");
    long long every = interval_ms(cfg);
    *out = NULL;
    if (every <= 0 || o->role == ES_KAFKA_ADMIN)
        return ES_OK;
    if (o->stats_name)
        snprintf(client, sizeof client, "%s.%s", svc ? svc : "eskit", o->stats_name);
    else if (o->role == ES_KAFKA_CONSUMER && o->rebalance_cb && o->group)
        snprintf(client, sizeof client, "%s", o->group); /* "<service.name>.commands" */
    else
        return ES_OK;
    if (!es_config_get(cfg, "kafka.statistics.interval.ms")) {
        snprintf(ms, sizeof ms, "%lld", every);
        if (rd_kafka_conf_set(conf, "statistics.interval.ms", ms, errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK)
            return es_fail(err, ES_EINVAL, "metrics.kafka.interval.ms %s: %s", ms, errstr);
    }
    return es_kafka_stats_new(cfg, client, o->role == ES_KAFKA_PRODUCER, out, err);
}

/* ---- the statistics document -------------------------------------------------------------- */

static int key_is(const es_json_val_t *k, const char *name) {
    size_t n = strlen(name); /* librdkafka's keys have no escapes */
    return k->len == n + 2 && !memcmp(k->start + 1, name, n);
}

/* Whether v is the string s (one without escapes). */
static int str_is(const es_json_val_t *v, const char *s) {
    return v->kind == ES_JSON_STRING && key_is(v, s);
}

static int num(const es_json_val_t *v, double *out) {
    char text[40];
    if (v->kind != ES_JSON_NUMBER || v->len >= sizeof text)
        return 0;
    memcpy(text, v->start, v->len);
    text[v->len] = '\0';
    *out = strtod(text, NULL);
    return 1;
}

/* A string value into out (cap bytes): 0 when it is none or too long. */
static int text(const es_json_val_t *v, char *out, size_t cap) {
    char *s = es_json_string(v);
    int ok = s && strlen(s) < cap;
    if (ok)
        memcpy(out, s, strlen(s) + 1);
    free(s);
    return ok;
}

/* The previous table's rtt of broker name, for a broker up but asked nothing this interval. */
static int last_rtt(const table *prev, const char *name, double *rtt) {
    for (size_t i = 0; i < prev->n_brokers; i++)
        if (!strcmp(prev->brokers[i].name, name)) {
            *rtt = prev->brokers[i].rtt_s;
            return 1;
        }
    return 0;
}

/* One member of "brokers": kept when it is a real broker (a node id, neither a bootstrap entry
 * nor librdkafka's internal and logical ones) with a round-trip time. */
static int broker(const es_json_val_t *b, const table *prev, table *t) {
    es_json_val_t k, v;
    kbroker kb = {.rtt_s = -1};
    double nodeid = -1, avg = 0, cnt = 0;
    int up = 0, named = 0, logical = 0;
    for (size_t pos = 0; es_json_next_member(b->start, b->len, &pos, &k, &v);) {
        if (key_is(&k, "name"))
            named = text(&v, kb.name, sizeof kb.name);
        else if (key_is(&k, "nodeid"))
            num(&v, &nodeid);
        else if (key_is(&k, "state"))
            up = str_is(&v, "UP");
        else if (key_is(&k, "source"))
            logical = str_is(&v, "logical") || str_is(&v, "internal");
        else if (key_is(&k, "rtt") && v.kind == ES_JSON_OBJECT) {
            es_json_val_t a;
            if (es_json_member(v.start, v.len, "avg", &a))
                num(&a, &avg);
            if (es_json_member(v.start, v.len, "cnt", &a))
                num(&a, &cnt);
        }
    }
    if (!named || nodeid < 0 || logical)
        return 0;
    if (cnt > 0 || avg > 0)
        kb.rtt_s = avg / 1e6; /* librdkafka's times are microseconds */
    else if (!up || !last_rtt(prev, kb.name, &kb.rtt_s))
        return 0;
    if (t->n_brokers == ES_KAFKA_STATS_MAX)
        return 0;
    if (es_grow((void **)&t->brokers, &t->cap_brokers, t->n_brokers, sizeof kb, NULL) != ES_OK)
        return -1;
    t->brokers[t->n_brokers++] = kb;
    return 0;
}

/* The partitions of one member of "topics" whose lag librdkafka knows. */
static int topic(const es_json_val_t *key, const es_json_val_t *tp, table *t) {
    es_json_val_t k, v, parts, name;
    klag kl = {0};
    if (es_json_member(tp->start, tp->len, "topic", &name) ? !text(&name, kl.topic, sizeof kl.topic)
                                                           : !text(key, kl.topic, sizeof kl.topic))
        return 0;
    if (!es_json_member(tp->start, tp->len, "partitions", &parts))
        return 0;
    if (parts.kind != ES_JSON_OBJECT)
        return -1;
    for (size_t pos = 0; es_json_next_member(parts.start, parts.len, &pos, &k, &v);) {
        es_json_val_t f;
        long long partition = -1, lag = -1;
        if (!es_json_member(v.start, v.len, "partition", &f) || !es_json_int(&f, &partition) ||
            !es_json_member(v.start, v.len, "consumer_lag", &f) || !es_json_int(&f, &lag))
            continue;
        if (partition < 0 || partition > INT32_MAX || lag < 0) /* -1: the unassigned partition */
            continue;
        if (t->n_lags == ES_KAFKA_STATS_MAX)
            return 0;
        if (es_grow((void **)&t->lags, &t->cap_lags, t->n_lags, sizeof kl, NULL) != ES_OK)
            return -1;
        kl.partition = (int32_t)partition;
        kl.lag = lag;
        t->lags[t->n_lags++] = kl;
    }
    return 0;
}

/* Each member of the object v with f. */
static int each(const es_json_val_t *v, const table *prev, table *t,
                int (*f)(const es_json_val_t *key, const es_json_val_t *val, const table *prev,
                         table *t)) {
    es_json_val_t k, m;
    if (v->kind != ES_JSON_OBJECT)
        return -1;
    for (size_t pos = 0; es_json_next_member(v->start, v->len, &pos, &k, &m);)
        if (m.kind == ES_JSON_OBJECT && f(&k, &m, prev, t))
            return -1;
    return 0;
}

static int broker_member(const es_json_val_t *key, const es_json_val_t *val, const table *prev,
                         table *t) {
    (void)key;
    return broker(val, prev, t);
}

static int topic_member(const es_json_val_t *key, const es_json_val_t *val, const table *prev,
                        table *t) {
    (void)prev;
    return topic(key, val, t);
}

int es_kafka_stats_parse(es_kafka_stats_t *st, const char *json, size_t len) {
    es_json_val_t k, v;
    table t = {.have = 1}, old;
    int rc = 0;
    if (!st || !json || es_json_check(json, len, NULL))
        return -1;
    /* prev is read without the lock: only this thread, the stats_cb's, writes cur. */
    for (size_t pos = 0; rc == 0 && es_json_next_member(json, len, &pos, &k, &v);) {
        if (key_is(&k, "msg_cnt"))
            rc = es_json_int(&v, &t.msg_cnt) ? 0 : -1;
        else if (key_is(&k, "brokers"))
            rc = each(&v, &st->cur, &t, broker_member);
        else if (key_is(&k, "topics"))
            rc = each(&v, &st->cur, &t, topic_member);
    }
    if (rc == 0 && json[strspn(json, " \t\r\n")] != '{')
        rc = -1; /* a document, but not librdkafka's */
    if (rc) {
        table_free(&t);
        return -1;
    }
    pthread_mutex_lock(&st->lock);
    old = st->cur;
    st->cur = t;
    pthread_mutex_unlock(&st->lock);
    table_free(&old);
    return 0;
}
