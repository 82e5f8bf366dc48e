/*
 * The Kafka wire (see wire.h): handles, the error policy, the records' headers.
 */
#include "kafka/wire.h"
#include "internal.h"
#include "kafka/stats.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- handles ------------------------------------------------------------------------------- */

/* What the error events said of the brokers since the last sign of life; shared by the handles
 * of one client (es_kafka_opts_t.share_outage), freed with the last of them. */
typedef struct outage_view {
    pthread_mutex_t lock;
    atomic_int refs;
    atomic_int heard; /* anything below is set: readers and clearers take the lock only then */
    int all_down;
    char down_why[128], unreachable[256], last[256];
} outage_view;

/* A handle's librdkafka opaque. */
typedef struct wire_handle {
    const es_config_t *cfg;
    int quiet;
    outage_view *view;
    void *opaque;
    es_kafka_dr_cb *dr_cb;
    es_kafka_parts_cb *rebalance_cb, *commit_cb;
    es_kafka_stats_t *stats; /* NULL: no statistics asked for */
} wire_handle;

static wire_handle *handle_of(const rd_kafka_t *rk) {
    return rd_kafka_opaque(rk);
}

static void view_release(outage_view *v) {
    if (v && atomic_fetch_sub(&v->refs, 1) == 1) {
        pthread_mutex_destroy(&v->lock);
        free(v);
    }
}

/* Runs on librdkafka's threads (no log queue is set). */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    const wire_handle *w = handle_of(rk);
    es_logf(w->cfg, w->quiet ? ES_LOG_DEBUG : level, "librdkafka %s: %s: %s", rd_kafka_name(rk),
            fac, buf);
}

/* Runs on the thread that polls the handle. */
static void error_cb(rd_kafka_t *rk, int e, const char *reason, void *opaque) {
    wire_handle *w = opaque;
    outage_view *v = w->view;
    es_logf(w->cfg, w->quiet ? ES_LOG_DEBUG : ES_LOG_WARNING, "librdkafka %s: %s: %s",
            rd_kafka_name(rk), rd_kafka_err2name((rd_kafka_resp_err_t)e), reason);
    pthread_mutex_lock(&v->lock);
    if (e == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        v->all_down = 1;
        snprintf(v->down_why, sizeof v->down_why, "%s", reason);
    } else if (e == RD_KAFKA_RESP_ERR__TRANSPORT || e == RD_KAFKA_RESP_ERR__RESOLVE) {
        snprintf(v->unreachable, sizeof v->unreachable, "%s", reason);
    }
    snprintf(v->last, sizeof v->last, "%s", reason);
    atomic_store(&v->heard, 1);
    pthread_mutex_unlock(&v->lock);
}

/* A delivered record is a sign of life. */
static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    wire_handle *w = opaque;
    if (!m->err)
        es_kafka_clear_outage(rk);
    if (w->dr_cb)
        w->dr_cb(rk, m, w->opaque);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t e,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
    wire_handle *w = opaque;
    w->rebalance_cb(rk, e, parts, w->opaque);
}

static void commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t e, rd_kafka_topic_partition_list_t *offs,
                      void *opaque) {
    wire_handle *w = opaque;
    w->commit_cb(rk, e, offs, w->opaque);
}

/* Runs on the thread that polls the handle; 0: librdkafka frees the document. */
static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
    (void)rk;
    es_kafka_stats_parse(((wire_handle *)opaque)->stats, json, len);
    return 0;
}

typedef struct conf_ctx {
    rd_kafka_conf_t *conf;
    const char *bad_key;
    int transactional;
    char errstr[256];
} conf_ctx;

static void conf_set(conf_ctx *c, const char *key, const char *value) {
    if (!c->bad_key &&
        rd_kafka_conf_set(c->conf, key, value, c->errstr, sizeof c->errstr) != RD_KAFKA_CONF_OK)
        c->bad_key = key;
}

static void pass_through(const char *key, const char *value, void *opaque) {
    conf_ctx *c = opaque;
    if (strncmp(key, "kafka.", 6) || (!c->transactional && !strcmp(key, "kafka.transactional.id")))
        return;
    conf_set(c, key + 6, value);
    if (c->bad_key == key + 6)
        c->bad_key = key;
}

es_err es_kafka_conf(const es_config_t *cfg, const es_kafka_opts_t *o, rd_kafka_conf_t **out,
                     es_error_t *err) {
    int consumer = o->role == ES_KAFKA_CONSUMER;
    const char *brokers = es_config_get(cfg, "brokers");
    *out = NULL;
    if (consumer && !o->group)
        return es_fail(err, ES_EINVAL, "a Kafka consumer needs a consumer group");
    conf_ctx c = {rd_kafka_conf_new(), NULL, o->role == ES_KAFKA_PRODUCER && o->transactional, ""};
    if (!c.conf)
        return es_fail(err, ES_ENOMEM, "out of memory making a Kafka configuration");
    if (brokers)
        conf_set(&c, "bootstrap.servers", brokers);
    conf_set(&c, "client.id", "eskit");
    if (consumer) {
        char wait[16];
        snprintf(wait, sizeof wait, "%d", o->fetch_wait_ms);
        conf_set(&c, "enable.partition.eof", "false");
        conf_set(&c, "allow.auto.create.topics", "false");
        conf_set(&c, "fetch.wait.max.ms", wait);
    } else if (o->role == ES_KAFKA_PRODUCER) {
        conf_set(&c, "enable.idempotence", "true");
        conf_set(&c, "acks", "all");
        conf_set(&c, "partitioner", "murmur2_random");
    }
    es_config_foreach(cfg, pass_through, &c);
    if (consumer) {
        conf_set(&c, "group.id", o->group);
        conf_set(&c, "enable.auto.commit", "false");
        conf_set(&c, "enable.auto.offset.store", "false");
        if (o->offset_reset)
            conf_set(&c, "auto.offset.reset", o->offset_reset);
    }
    if (c.bad_key) {
        rd_kafka_conf_destroy(c.conf);
        return es_fail(err, ES_EINVAL, "Kafka setting %s: %s", c.bad_key, c.errstr);
    }
    *out = c.conf;
    return ES_OK;
}

static const char *role_name(es_kafka_role role) {
    return role == ES_KAFKA_CONSUMER   ? "consumer"
           : role == ES_KAFKA_PRODUCER ? "producer"
                                       : "client";
}

static es_err new_view(const es_kafka_opts_t *o, outage_view **out, es_error_t *err) {
    if (o->share_outage) {
        *out = handle_of(o->share_outage)->view;
        atomic_fetch_add(&(*out)->refs, 1);
        return ES_OK;
    }
    if (!(*out = calloc(1, sizeof **out)))
        return es_fail(err, ES_ENOMEM, "out of memory making a Kafka %s", role_name(o->role));
    pthread_mutex_init(&(*out)->lock, NULL);
    atomic_init(&(*out)->refs, 1);
    atomic_init(&(*out)->heard, 0);
    return ES_OK;
}

es_err es_kafka_new(const es_config_t *cfg, const es_kafka_opts_t *o, rd_kafka_t **out,
                    es_error_t *err) {
    rd_kafka_conf_t *conf = NULL;
    char errstr[256];
    wire_handle *w = calloc(1, sizeof *w);
    *out = NULL;
    if (!w)
        return es_fail(err, ES_ENOMEM, "out of memory making a Kafka %s", role_name(o->role));
    *w = (wire_handle){.cfg = cfg,
                       .quiet = o->quiet,
                       .opaque = o->opaque,
                       .dr_cb = o->dr_cb,
                       .rebalance_cb = o->rebalance_cb,
                       .commit_cb = o->commit_cb};
    es_err e = new_view(o, &w->view, err);
    if (e == ES_OK)
        e = es_kafka_conf(cfg, o, &conf, err);
    if (e == ES_OK)
        e = es_kafka_stats_open(cfg, o, conf, &w->stats, err);
    if (e != ES_OK) {
        if (conf)
            rd_kafka_conf_destroy(conf);
        view_release(w->view);
        free(w);
        return e;
    }
    rd_kafka_conf_set_opaque(conf, w);
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    if (o->role == ES_KAFKA_PRODUCER)
        rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    if (o->rebalance_cb)
        rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    if (o->commit_cb)
        rd_kafka_conf_set_offset_commit_cb(conf, commit_cb);
    if (w->stats)
        rd_kafka_conf_set_stats_cb(conf, stats_cb);
    int consumer = o->role == ES_KAFKA_CONSUMER;
    *out =
        rd_kafka_new(consumer ? RD_KAFKA_CONSUMER : RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!*out) {
        rd_kafka_conf_destroy(conf);
        es_kafka_stats_free(w->stats);
        view_release(w->view);
        free(w);
        const char *brokers = es_config_get(cfg, "brokers");
        return es_fail(err, ES_EKAFKA, "cannot make a Kafka %s for %s: %s",
                       o->what ? o->what : role_name(o->role), brokers ? brokers : "(none)",
                       errstr);
    }
    if (consumer)
        rd_kafka_poll_set_consumer(*out);
    return ES_OK;
}

void es_kafka_destroy(rd_kafka_t *rk, int flags) {
    if (!rk)
        return;
    wire_handle *w = handle_of(rk);
    es_kafka_stats_unregister(w->stats); /* no scrape reads it past here */
    rd_kafka_destroy_flags(rk, flags);   /* its last callbacks run here */
    es_kafka_stats_free(w->stats);
    view_release(w->view);
    free(w);
}

const char *es_kafka_brokers(const rd_kafka_t *rk) {
    const char *brokers = es_config_get(handle_of(rk)->cfg, "brokers");
    return brokers ? brokers : "(none)";
}

/* ---- what the handle heard of the brokers -------------------------------------------------- */

void es_kafka_clear_outage(rd_kafka_t *rk) {
    outage_view *v = rk ? handle_of(rk)->view : NULL;
    if (!v || !atomic_load_explicit(&v->heard, memory_order_relaxed))
        return;
    pthread_mutex_lock(&v->lock);
    v->all_down = 0;
    v->down_why[0] = v->unreachable[0] = v->last[0] = '\0';
    atomic_store(&v->heard, 0);
    pthread_mutex_unlock(&v->lock);
}

static int transport(rd_kafka_resp_err_t e) {
    return e == RD_KAFKA_RESP_ERR__TRANSPORT || e == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN ||
           e == RD_KAFKA_RESP_ERR__RESOLVE;
}

const char *es_kafka_outage(rd_kafka_t *rk, rd_kafka_resp_err_t e, char *out, size_t cap) {
    outage_view *v = handle_of(rk)->view;
    out[0] = '\0';
    pthread_mutex_lock(&v->lock);
    if (v->all_down || transport(e))
        snprintf(out, cap, "the Kafka brokers %s are unreachable (librdkafka: %s%s%s)",
                 es_kafka_brokers(rk), v->all_down ? v->down_why : rd_kafka_err2str(e),
                 v->unreachable[0] ? "; " : "", v->unreachable);
    pthread_mutex_unlock(&v->lock);
    return out;
}

int es_kafka_all_down(rd_kafka_t *rk, char *why, size_t cap) {
    outage_view *v = handle_of(rk)->view;
    if (!atomic_load_explicit(&v->heard, memory_order_relaxed)) { /* fetch asks once a record */
        snprintf(why, cap, "%s", "");
        return 0;
    }
    pthread_mutex_lock(&v->lock);
    int down = v->all_down;
    snprintf(why, cap, "%s", down ? v->down_why : "");
    pthread_mutex_unlock(&v->lock);
    return down;
}

int es_kafka_heard_unreachable(rd_kafka_t *rk) {
    outage_view *v = handle_of(rk)->view;
    if (!atomic_load_explicit(&v->heard, memory_order_relaxed))
        return 0;
    pthread_mutex_lock(&v->lock);
    int down = v->all_down || v->unreachable[0];
    pthread_mutex_unlock(&v->lock);
    return down;
}

const char *es_kafka_why(rd_kafka_t *rk, rd_kafka_resp_err_t e, char *out, size_t cap) {
    outage_view *v = handle_of(rk)->view;
    pthread_mutex_lock(&v->lock);
    snprintf(out, cap, "%s", v->last[0] ? v->last : rd_kafka_err2str(e));
    pthread_mutex_unlock(&v->lock);
    return out;
}

/* ---- errors -------------------------------------------------------------------------------- */

es_err es_kafka_code(rd_kafka_resp_err_t e) {
    switch (e) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
        return ES_OK;
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE:
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
        return ES_ETIMEOUT;
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
        return ES_ENOTFOUND;
    default:
        return ES_EKAFKA;
    }
}

es_err es_kafka_error_code(const rd_kafka_error_t *ke) {
    es_err code = es_kafka_code(rd_kafka_error_code(ke));
    return code == ES_OK ? ES_EKAFKA : code; /* an error object is never a success */
}

__attribute__((format(printf, 7, 0))) static es_err
fail_with(rd_kafka_t *rk, es_err code, rd_kafka_resp_err_t e, const char *words, const char *advice,
          es_error_t *err, const char *fmt, va_list ap) {
    char what[512], down[512];
    vsnprintf(what, sizeof what, fmt, ap);
    if (*es_kafka_outage(rk, e, down, sizeof down))
        return es_fail(err, code, "%s: %s; %s", what, down,
                       advice ? advice : "retry once they are back");
    if (!advice && e == RD_KAFKA_RESP_ERR__TIMED_OUT)
        advice = "are the brokers up?";
    return es_fail(err, code, "%s: %s (brokers %s)%s%s", what, words, es_kafka_brokers(rk),
                   advice ? "; " : "", advice ? advice : "");
}

es_err es_kafka_fail(rd_kafka_t *rk, rd_kafka_resp_err_t e, const char *advice, es_error_t *err,
                     const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    es_err code = es_kafka_code(e);
    code = fail_with(rk, code == ES_OK ? ES_EKAFKA : code, e, rd_kafka_err2str(e), advice, err, fmt,
                     ap);
    va_end(ap);
    return code;
}

es_err es_kafka_fail_error(rd_kafka_t *rk, rd_kafka_error_t *ke, const char *advice,
                           es_error_t *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    es_err code = fail_with(rk, es_kafka_error_code(ke), rd_kafka_error_code(ke),
                            rd_kafka_error_string(ke), advice, err, fmt, ap);
    va_end(ap);
    rd_kafka_error_destroy(ke);
    return code;
}

/* ---- records ------------------------------------------------------------------------------- */

static const char *const dlq_names[ES_KAFKA_DLQ_HEADERS] = {
    "es-dlq-group",    "es-dlq-topic", "es-dlq-partition", "es-dlq-offset",
    "es-dlq-attempts", "es-dlq-code",  "es-dlq-error",     "es-event-type"};

void es_kafka_dlq_headers(const es_kafka_dlq_t *d, es_kafka_dlq_headers_t *out) {
    snprintf(out->topic, sizeof out->topic, "%s.dlq", d->topic);
    snprintf(out->ref, sizeof out->ref, "%s/%s/%d/%lld", d->group, d->topic, (int)d->partition,
             (long long)d->offset);
    snprintf(out->partition, sizeof out->partition, "%d", (int)d->partition);
    snprintf(out->offset, sizeof out->offset, "%lld", (long long)d->offset);
    snprintf(out->attempts, sizeof out->attempts, "%d", d->attempts);
    const char *values[ES_KAFKA_DLQ_HEADERS] = {d->group,       d->topic,
                                                out->partition, out->offset,
                                                out->attempts,  es_strerror(d->code),
                                                d->error,       d->event_type ? d->event_type : ""};
    for (size_t i = 0; i < ES_KAFKA_DLQ_HEADERS; i++)
        out->kv[i] = (es_kv_t){dlq_names[i], values[i]};
}

static int dlq_list_ok(const es_kafka_record_t *r) {
    if (r->n_dlq_headers != ES_KAFKA_DLQ_HEADERS || !r->dlq_headers || !r->dlq_ref)
        return 0;
    for (size_t i = 0; i < ES_KAFKA_DLQ_HEADERS; i++)
        if (strcmp(r->dlq_headers[i].key, dlq_names[i]) || !r->dlq_headers[i].value)
            return 0;
    return 1;
}

static const char *const kind_names[] = {"an event",   "a command",     "a reply",
                                         "a snapshot", "a dead letter", "a schema record"};

static void add(rd_kafka_headers_t *h, const char *name, const char *value) {
    rd_kafka_header_add(h, name, -1, value, -1);
}

/* W3C's Kafka binding: the event's own span as headers traceparent and tracestate. */
static void add_trace(rd_kafka_headers_t *h, const es_event_t *ev) {
    for (size_t i = 0; ev->metadata && i < ev->n_metadata; i++) {
        const char *k = ev->metadata[i].key;
        if (!strcmp(k, ES_TRACEPARENT_KEY) || !strcmp(k, ES_TRACESTATE_KEY))
            add(h, k, ev->metadata[i].value);
    }
}

static int event_ok(const es_event_t *ev) {
    return ev && ev->event_type; /* event_id is an array */
}

/* v in decimal, as "%llu" writes it (a header of every event: snprintf was 0.7% of a batch). */
static void put_u64(char out[24], uint64_t v) {
    char tmp[24];
    size_t n = 0;
    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
}

es_err es_kafka_write_headers(const es_kafka_record_t *r, rd_kafka_headers_t **out,
                              es_error_t *err) {
    char num[24];
    const es_event_t *ev = r->event;
    *out = NULL;
    switch (r->kind) {
    case ES_KAFKA_EVENT:
        if (!event_ok(ev))
            break;
        put_u64(num, ev->version);
        *out = rd_kafka_headers_new(6);
        add(*out, "es-event-type", ev->event_type);
        add(*out, "es-version", num);
        add(*out, "es-event-id", ev->event_id);
        add(*out, "es-correlation-id", ev->correlation_id ? ev->correlation_id : "");
        add_trace(*out, ev);
        return ES_OK;
    case ES_KAFKA_COMMAND:
        if (r->reply_partition < 0)
            break;
        snprintf(num, sizeof num, "%d", (int)r->reply_partition);
        *out = rd_kafka_headers_new(1);
        add(*out, "es-reply-partition", num);
        return ES_OK;
    case ES_KAFKA_DLQ:
        if (!dlq_list_ok(r))
            break;
        *out = rd_kafka_headers_new(ES_KAFKA_DLQ_HEADERS + 1);
        for (size_t i = 0; i < ES_KAFKA_DLQ_HEADERS; i++)
            add(*out, r->dlq_headers[i].key, r->dlq_headers[i].value);
        add(*out, "es-dlq-ref", r->dlq_ref);
        return ES_OK;
    case ES_KAFKA_REPLY:
    case ES_KAFKA_SNAPSHOT:
    case ES_KAFKA_SCHEMA:
        return ES_OK;
    }
    return es_fail(err, ES_EINVAL, "%s record for %s lacks what its headers need",
                   (unsigned)r->kind <= ES_KAFKA_SCHEMA ? kind_names[r->kind]
                                                        : "an unknown kind of",
                   r->topic ? r->topic : "(no topic)");
}

static void describe(const es_kafka_record_t *r, char *out, size_t cap) {
    const char *kind = (unsigned)r->kind <= ES_KAFKA_SCHEMA ? kind_names[r->kind] : "a record";
    if (r->partition == RD_KAFKA_PARTITION_UA)
        snprintf(out, cap, "producing %s to %s", kind, r->topic);
    else
        snprintf(out, cap, "producing %s to %s partition %d", kind, r->topic, (int)r->partition);
}

es_err es_kafka_produce(rd_kafka_t *rk, const es_kafka_record_t *r, es_error_t *err) {
    char what[ES_MAX_TYPE_LEN + 320];
    rd_kafka_headers_t *h = NULL;
    es_err bad = es_kafka_write_headers(r, &h, err);
    rd_kafka_resp_err_t ke = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (bad == ES_OK) {
        for (int waited = 0;; waited += 10) {
            ke = rd_kafka_producev(
                rk, RD_KAFKA_V_TOPIC(r->topic), RD_KAFKA_V_PARTITION(r->partition),
                RD_KAFKA_V_MSGFLAGS(r->copy ? RD_KAFKA_MSG_F_COPY : RD_KAFKA_MSG_F_FREE),
                RD_KAFKA_V_KEY(r->key, r->key ? strlen(r->key) : 0),
                RD_KAFKA_V_VALUE((void *)r->value, r->len), RD_KAFKA_V_HEADERS(h),
                RD_KAFKA_V_OPAQUE(r->opaque), RD_KAFKA_V_END);
            if (ke != RD_KAFKA_RESP_ERR__QUEUE_FULL ||
                (r->queue_wait_ms >= 0 && waited >= r->queue_wait_ms))
                break;
            rd_kafka_poll(rk, 10); /* serves delivery reports, which makes room */
        }
        if (!ke)
            return ES_OK;
    }
    if (h)
        rd_kafka_headers_destroy(h); /* librdkafka took neither */
    if (!r->copy)
        free((void *)r->value);
    if (bad != ES_OK)
        return bad;
    describe(r, what, sizeof what);
    return es_kafka_fail(rk, ke, NULL, err, "%s", what);
}

es_err es_kafka_produce_event(rd_kafka_t *rk, const char *topic, int32_t partition,
                              const es_event_t *ev, uint8_t *envelope, size_t len, void *opaque,
                              es_error_t *err) {
    es_kafka_record_t r = {.kind = ES_KAFKA_EVENT,
                           .topic = topic,
                           .partition = partition,
                           .key = ev->aggregate_id,
                           .value = envelope,
                           .len = len,
                           .opaque = opaque,
                           .queue_wait_ms = -1,
                           .event = ev};
    return es_kafka_produce(rk, &r, err);
}

es_err es_kafka_produce_dlq(rd_kafka_t *rk, const char *topic, const char *ref, const char *key,
                            const uint8_t *value, size_t len, const es_kv_t *headers, size_t n,
                            void *opaque, es_error_t *err) {
    es_kafka_record_t r = {.kind = ES_KAFKA_DLQ,
                           .topic = topic,
                           .partition = RD_KAFKA_PARTITION_UA,
                           .key = key,
                           .value = value,
                           .len = len,
                           .copy = 1,
                           .opaque = opaque,
                           .dlq_headers = headers,
                           .n_dlq_headers = n,
                           .dlq_ref = ref};
    return es_kafka_produce(rk, &r, err);
}

/* ---- reading headers ----------------------------------------------------------------------- */

typedef enum field_kind { F_TEXT, F_INT64, F_INT32 } field_kind;

/* proto/README.md's headers: name, bit, and where and how es_kafka_headers_t keeps the value. */
static const struct field {
    const char *name;
    unsigned bit;
    field_kind kind;
    size_t at, cap; /* cap: a text field's buffer */
} fields[] = {
#define TEXT(n, b, m)                                                                              \
    { n, b, F_TEXT, offsetof(es_kafka_headers_t, m), sizeof((es_kafka_headers_t *)0)->m }
#define NUM(n, b, k, m)                                                                            \
    { n, b, k, offsetof(es_kafka_headers_t, m), 0 }
    TEXT("es-event-type", ES_KAFKA_H_EVENT_TYPE, event_type),
    NUM("es-version", ES_KAFKA_H_VERSION, F_INT64, version),
    TEXT("es-event-id", ES_KAFKA_H_EVENT_ID, event_id),
    TEXT("es-correlation-id", ES_KAFKA_H_CORRELATION_ID, correlation_id),
    NUM("es-reply-partition", ES_KAFKA_H_REPLY_PARTITION, F_INT32, reply_partition),
    TEXT("es-dlq-group", ES_KAFKA_H_DLQ_GROUP, dlq_group),
    TEXT("es-dlq-topic", ES_KAFKA_H_DLQ_TOPIC, dlq_topic),
    NUM("es-dlq-partition", ES_KAFKA_H_DLQ_PARTITION, F_INT32, dlq_partition),
    NUM("es-dlq-offset", ES_KAFKA_H_DLQ_OFFSET, F_INT64, dlq_offset),
    NUM("es-dlq-attempts", ES_KAFKA_H_DLQ_ATTEMPTS, F_INT32, dlq_attempts),
    TEXT("es-dlq-code", ES_KAFKA_H_DLQ_CODE, dlq_code),
    TEXT("es-dlq-error", ES_KAFKA_H_DLQ_ERROR, dlq_error),
    TEXT("es-dlq-ref", ES_KAFKA_H_DLQ_REF, dlq_ref),
#undef TEXT
#undef NUM
};

#define N_FIELDS (sizeof fields / sizeof *fields)

unsigned es_kafka_kind_headers(es_kafka_kind kind) {
    switch (kind) {
    case ES_KAFKA_EVENT:
        return ES_KAFKA_H_EVENT_TYPE | ES_KAFKA_H_VERSION | ES_KAFKA_H_EVENT_ID |
               ES_KAFKA_H_CORRELATION_ID;
    case ES_KAFKA_COMMAND:
        return ES_KAFKA_H_REPLY_PARTITION;
    case ES_KAFKA_DLQ:
        return ES_KAFKA_H_DLQ_GROUP | ES_KAFKA_H_DLQ_TOPIC | ES_KAFKA_H_DLQ_PARTITION |
               ES_KAFKA_H_DLQ_OFFSET | ES_KAFKA_H_DLQ_ATTEMPTS | ES_KAFKA_H_DLQ_CODE |
               ES_KAFKA_H_DLQ_ERROR | ES_KAFKA_H_EVENT_TYPE | ES_KAFKA_H_DLQ_REF;
    default:
        return 0;
    }
}

/* A decimal in [0, max], no sign, no spaces. */
static int decimal(const char *s, size_t len, int64_t max, int64_t *out) {
    int64_t n = 0;
    if (len == 0 || len > 19)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9' || n > (max - (s[i] - '0')) / 10)
            return 0;
        n = n * 10 + (s[i] - '0');
    }
    *out = n;
    return 1;
}

/* Stores one header's value into its field; 0 when it is malformed (the field stays unset). */
static int store(const struct field *f, const char *v, size_t len, es_kafka_headers_t *out) {
    char *at = (char *)out + f->at;
    int64_t n = 0;
    if (v && memchr(v, '\0', len))
        return 0;
    switch (f->kind) {
    case F_TEXT:
        if (len >= f->cap)
            return 0;
        if (len)
            memcpy(at, v, len);
        at[len] = '\0';
        return 1;
    case F_INT64:
        if (!decimal(v, len, INT64_MAX, &n))
            return 0;
        memcpy(at, &n, sizeof n);
        return 1;
    case F_INT32:
        if (!decimal(v, len, INT32_MAX, &n))
            return 0;
        memcpy(at, &(int32_t){(int32_t)n}, sizeof(int32_t));
        return 1;
    }
    return 0;
}

static void unset(const struct field *f, es_kafka_headers_t *out) {
    char *at = (char *)out + f->at;
    if (f->kind == F_TEXT)
        at[0] = '\0';
    else if (f->kind == F_INT64)
        memcpy(at, &(int64_t){-1}, sizeof(int64_t));
    else
        memcpy(at, &(int32_t){-1}, sizeof(int32_t));
}

es_err es_kafka_read_headers(const rd_kafka_headers_t *h, es_kafka_headers_t *out) {
    const char *name = NULL;
    const void *v = NULL;
    size_t len = 0;
    out->seen = out->bad = out->repeated = 0;
    out->others = 0;
    for (size_t k = 0; k < N_FIELDS; k++)
        unset(&fields[k], out);
    for (size_t i = 0; h && !rd_kafka_header_get_all(h, i, &name, &v, &len); i++) {
        size_t k = 0;
        while (k < N_FIELDS && strcmp(fields[k].name, name))
            k++;
        if (k == N_FIELDS) {
            out->others++;
            continue;
        }
        unsigned bit = fields[k].bit;
        out->repeated |= out->seen & bit;
        out->seen |= bit;
        out->bad &= ~bit; /* the last one counts */
        if (!store(&fields[k], v, len, out)) {
            unset(&fields[k], out);
            out->bad |= bit;
        }
    }
    return out->bad ? ES_EINVAL : ES_OK;
}

es_err es_kafka_message_headers(const rd_kafka_message_t *m, es_kafka_headers_t *out) {
    rd_kafka_headers_t *h = NULL;
    if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR)
        h = NULL;
    return es_kafka_read_headers(h, out);
}

static const char *field_name(unsigned bits) {
    for (size_t k = 0; k < N_FIELDS; k++)
        if (bits & fields[k].bit)
            return fields[k].name;
    return "?";
}

es_err es_kafka_check_headers(const es_kafka_headers_t *h, es_kafka_kind kind, es_error_t *err) {
    unsigned want = es_kafka_kind_headers(kind);
    const char *what = (unsigned)kind <= ES_KAFKA_SCHEMA ? kind_names[kind] : "a record";
    if (want & ~h->seen)
        return es_fail(err, ES_EDECODE, "%s lacks its header %s", what,
                       field_name(want & ~h->seen));
    if (h->seen & ~want)
        return es_fail(err, ES_EDECODE, "%s carries the header %s, which is not its kind's", what,
                       field_name(h->seen & ~want));
    if (h->repeated)
        return es_fail(err, ES_EDECODE, "%s carries its header %s more than once", what,
                       field_name(h->repeated));
    if (h->bad)
        return es_fail(err, ES_EDECODE, "%s: its header %s is malformed", what, field_name(h->bad));
    if (h->others)
        return es_fail(err, ES_EDECODE, "%s carries %zu header(s) proto/README.md does not list",
                       what, h->others);
    return ES_OK;
}

rd_kafka_resp_err_t es_kafka_watermarks(rd_kafka_t *rk, const char *topic, int32_t partition,
                                        int64_t *lo, int64_t *hi, int64_t until_ms,
                                        const es_stop_t *stop) {
    if (stop && es_stop_requested(stop))
        return RD_KAFKA_RESP_ERR__TIMED_OUT; /* asked nothing */
    for (;;) {
        rd_kafka_resp_err_t e =
            rd_kafka_query_watermark_offsets(rk, topic, partition, lo, hi, ES_KAFKA_SLICE_MS);
        if ((e != RD_KAFKA_RESP_ERR__TIMED_OUT && e != RD_KAFKA_RESP_ERR__TRANSPORT) ||
            es_now_us() / 1000 >= until_ms || (stop && es_stop_requested(stop)))
            return e;
        if (e == RD_KAFKA_RESP_ERR__TRANSPORT)
            es_sleep_ms(10); /* it came back at once: no busy loop while brokers are away */
    }
}

/* ---- reading a partition range ---- */

es_err es_kafka_scan(rd_kafka_t *rk, const char *doing, const char *topic, int32_t partition,
                     int64_t from, int64_t to, int timeout_ms, es_kafka_scan_fn *fn,
                     es_kafka_scan_error_fn *on_error, void *opaque, es_error_t *err) {
    if (from >= to)
        return ES_OK;
    rd_kafka_topic_partition_list_t *want = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(want, topic, partition)->offset = from;
    rd_kafka_resp_err_t ke = rd_kafka_assign(rk, want);
    es_err e = ke ? es_kafka_fail(rk, ke, NULL, err, "assigning %s partition %d to a consumer",
                                  topic, (int)partition)
                  : ES_OK;
    int64_t next = from, deadline = es_now_us() / 1000 + timeout_ms;
    while (e == ES_OK && next < to) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (m && m->err) {
            e = on_error(opaque, m, next, err);
        } else if (m && m->offset >= next && m->partition == partition &&
                   !strcmp(rd_kafka_topic_name(m->rkt), topic)) {
            int stop = 0;
            next = m->offset + 1;
            deadline = es_now_us() / 1000 + timeout_ms;
            e = fn(opaque, m, &stop, err);
            if (stop)
                to = next;
        } else if (!m && !rd_kafka_position(rk, want) && want->elems[0].offset >= to) {
            next = to; /* the rest were control records (transaction markers) */
        } else if (!m && es_now_us() / 1000 > deadline) {
            e = es_fail(err, ES_ETIMEOUT,
                        "%s %s partition %d: no record past offset %lld within %d ms (brokers "
                        "%s); are they up?",
                        doing, topic, (int)partition, (long long)next, timeout_ms,
                        es_kafka_brokers(rk));
        }
        if (m)
            rd_kafka_message_destroy(m);
    }
    rd_kafka_assign(rk, NULL);
    rd_kafka_topic_partition_list_destroy(want);
    return e;
}
