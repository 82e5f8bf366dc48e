/*
 * The Kafka backend, consumer side. Projector runners, es_lag and esctl read
 * the "<type>.events" topics through one librdkafka consumer per log, with a
 * manual assignment and never a subscription: the runner owns its positions
 * (checkpoints in the read model), so the handle is assigned exactly the
 * partitions and offsets fetch is asked for, and re-assigned when they change
 * (a rolled-back batch, a restart). The consumer commits nothing by itself;
 * commit_positions copies the read model's positions into the projector's
 * consumer group, for lag tools, with the Admin API (commit_wait says why).
 *
 * A position below a partition's first retained offset means retention
 * deleted records the read model never saw: fetch fails naming both offsets,
 * it never skips. The fetch itself finds it (auto.offset.reset=error makes
 * the broker's refusal an error event), so a stoppable reader never waits on
 * a watermark request, which librdkafka 2.0.2 can hold past its timeout when
 * the brokers go away while it is in flight.
 *
 * It plays the log reader role only (log/log.h): writing events is the command processor's
 * job, reached through the Kafka command executor (remote.c). The handles, their errors and the
 * dead letters' records come from the Kafka wire module (kafka/wire.h), as everywhere.
 */
#include "log/log.h"
#include "kafka/wire.h"
#include "logorder.h"
#include "readpipe.h"
#include "framing.h"
#include "registry.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQUEST_TIMEOUT_MS 10000 /* metadata, watermarks, cluster id, scans without progress */
#define FLUSH_TIMEOUT_MS 5000    /* a dead letter's delivery */
#define COMMIT_TIMEOUT_MS 2000   /* best effort: the read model holds the truth */
#define FIRST_WAIT_MS 3000       /* fetch: wait for records known to be there, after assigning */
#define IDLE_WAIT_MS 5           /* fetch: quiet time after the last record that ends a fetch */
#define WAIT_SLICE_MS 10         /* fetch: how often a first wait checks the stop and watermarks */

/* A produced event's delivery report. */
typedef struct sent_rec {
    int reported;
    rd_kafka_resp_err_t err;
} sent_rec;

/* A produced event's delivery opaque: EVENT_TAG | round << SENT_INDEX_BITS | index; a dead
 * letter's is its dlq_seq (below EVENT_TAG). */
#define SENT_INDEX_BITS 20
#define EVENT_TAG ((uintptr_t)1 << (sizeof(uintptr_t) * 8 - 1))
#define ROUND_MAX ((EVENT_TAG - 1) >> SENT_INDEX_BITS)
#define PRODUCE_FLUSH_MS 10000
#define PRODUCE_SLICE_MS 50
#define STOP_GRACE_MS 500 /* a stop still waits this long for acknowledgements under way */

typedef struct kafka_log {
    es_log_t base;
    char *brokers;
    rd_kafka_t *consumer;
    rd_kafka_t *producer;                       /* made for the first dead letter */
    rd_kafka_t *committer;                      /* admin client, made for the first commit */
    char *committed_group;                      /* whose positions committed holds */
    rd_kafka_topic_partition_list_t *assigned;  /* fetch's assignment; offset = next to deliver */
    rd_kafka_topic_partition_list_t *committed; /* positions last committed */
    int reseek;       /* a fetch failed: seek back to the positions before reading on */
    uint64_t dlq_seq; /* the dead letter whose delivery report is awaited */
    int dlq_done;
    rd_kafka_resp_err_t dlq_err;
    /* What the delivery reports of this produce round said, by record (dr_cb); reports of an
     * earlier round (records a stop or a timeout left behind) are ignored. */
    uintptr_t round;
    sent_rec *sent;
    size_t n_sent, cap_sent;
    es_registry_t *registry; /* opened by the first produce, when schema.registry.url is set */
    int registry_opened;
} kafka_log;

static es_err missing_topic(es_error_t *err, const char *topic) {
    return es_fail(err, ES_ENOTFOUND,
                   "topic %s does not exist on the Kafka cluster; create it with 'esctl topics "
                   "apply' (or see 'esctl dev-broker --plan' for a development broker)",
                   topic);
}

/* Runs on the thread that polls or flushes the producer (put_dlq, produce, destroy). */
static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    kafka_log *l = opaque;
    uintptr_t tag = (uintptr_t)m->_private;
    if (tag & EVENT_TAG) {
        uintptr_t i = tag & (((uintptr_t)1 << SENT_INDEX_BITS) - 1);
        if (((tag & ~EVENT_TAG) >> SENT_INDEX_BITS) == l->round && i < l->n_sent)
            l->sent[i] = (sent_rec){1, m->err};
        return;
    }
    if ((uint64_t)tag == l->dlq_seq) {
        l->dlq_done = 1;
        l->dlq_err = m->err;
    }
}

/* A consumer in group (no automatic offset resets: a position out of range is an error), or,
 * group NULL, the dead letters' producer. */
static es_err make_handle(kafka_log *l, const char *group, rd_kafka_t **out, es_error_t *err) {
    es_kafka_opts_t o = {.role = group ? ES_KAFKA_CONSUMER : ES_KAFKA_PRODUCER,
                         .group = group,
                         .offset_reset = "error",
                         .fetch_wait_ms = 100, /* re-assignments wait for the fetch in flight */
                         .opaque = l,
                         .dr_cb = dr_cb};
    return es_kafka_new(l->base.cfg, &o, out, err);
}

static void kl_destroy(es_log_t *base) {
    kafka_log *l = (kafka_log *)base;
    if (l->producer) {
        rd_kafka_flush(l->producer, 0); /* put_dlq flushed already; drop what failed */
        rd_kafka_purge(l->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        es_kafka_destroy(l->producer, 0);
    }
    es_kafka_destroy(l->committer, 0);
    /* No consumer close: nothing joined a group and commits are explicit. */
    es_kafka_destroy(l->consumer, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    if (l->assigned)
        rd_kafka_topic_partition_list_destroy(l->assigned);
    if (l->committed)
        rd_kafka_topic_partition_list_destroy(l->committed);
    es_registry_destroy(l->registry);
    free(l->committed_group);
    free(l->brokers);
    free(l->sent);
    free(l);
}

static es_err kl_identity(es_log_t *base, char *out, size_t cap, es_error_t *err) {
    kafka_log *l = (kafka_log *)base;
    char *id = rd_kafka_clusterid(l->consumer, REQUEST_TIMEOUT_MS);
    if (!id)
        return es_fail(err, ES_ETIMEOUT,
                       "no cluster id from the Kafka brokers %s within %d ms; are they up?",
                       l->brokers, REQUEST_TIMEOUT_MS);
    snprintf(out, cap, "kafka:%s", id);
    rd_kafka_mem_free(l->consumer, id);
    return ES_OK;
}

/* From a listing of every topic: asking for one topic by name makes brokers that auto-create
 * topics (the mock does, for older Metadata versions) create it. */
static es_err kl_partitions(es_log_t *base, const char *topic, int32_t *n, es_error_t *err) {
    kafka_log *l = (kafka_log *)base;
    const struct rd_kafka_metadata *md = NULL;
    char what[ES_MAX_TYPE_LEN + 64];
    *n = 0;
    snprintf(what, sizeof what, "reading the partitions of %s", topic);
    rd_kafka_resp_err_t e = rd_kafka_metadata(l->consumer, 1, NULL, &md, REQUEST_TIMEOUT_MS);
    if (e)
        return es_kafka_fail(l->consumer, e, NULL, err, "%s", what);
    es_kafka_clear_outage(l->consumer); /* answered */
    es_err rc = ES_ENOTFOUND;
    for (int i = 0; rc == ES_ENOTFOUND && i < md->topic_cnt; i++) {
        const struct rd_kafka_metadata_topic *t = &md->topics[i];
        if (strcmp(t->topic, topic))
            continue;
        rc = t->err ? es_kafka_fail(l->consumer, t->err, NULL, err, "%s", what) : ES_OK;
        *n = t->err ? 0 : t->partition_cnt;
    }
    rd_kafka_metadata_destroy(md);
    return rc == ES_ENOTFOUND ? missing_topic(err, topic) : rc;
}

/* Asked in slices (es_kafka_watermarks), so that the log's stop (a runner's es_runner_stop,
 * from a signal handler too) ends the wait at once rather than after a request to brokers that
 * went away. */
static es_err watermarks(kafka_log *l, const char *topic, int32_t partition, int64_t *lo,
                         int64_t *hi, es_error_t *err) {
    rd_kafka_resp_err_t e =
        es_kafka_watermarks(l->consumer, topic, partition, lo, hi,
                            es_now_us() / 1000 + REQUEST_TIMEOUT_MS, l->base.stop);
    if (e && l->base.stop && es_stop_requested(l->base.stop))
        return es_fail(err, ES_ERETRY,
                       "stopped while asking for the offsets of %s partition %d (brokers %s)",
                       topic, (int)partition, l->brokers);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
        return ES_OK;
    if (es_kafka_code(e) == ES_ENOTFOUND)
        return missing_topic(err, topic);
    return es_kafka_fail(l->consumer, e, NULL, err, "reading the offsets of %s partition %d", topic,
                         (int)partition);
}

static es_err kl_topic_end(es_log_t *base, const char *topic, int32_t partition, int64_t from,
                           int64_t *end, uint64_t *count, es_error_t *err) {
    kafka_log *l = (kafka_log *)base;
    int64_t lo = 0, hi = 0;
    *end = 0;
    *count = 0;
    es_err e = watermarks(l, topic, partition, &lo, &hi, err);
    if (e != ES_OK)
        return e;
    int64_t start = from > lo ? from : lo;
    *end = hi;
    *count = hi > start ? (uint64_t)(hi - start) : 0;
    return ES_OK;
}

/* The watermarks the consumer's fetch responses cached: no request, unknown before the first
 * fetch of the partition answered. */
static int kl_cached_end(es_log_t *base, const char *topic, int32_t partition, int64_t from,
                         int64_t *end, uint64_t *count) {
    kafka_log *l = (kafka_log *)base;
    int64_t lo = -1, hi = -1;
    if (!l->consumer || rd_kafka_get_watermark_offsets(l->consumer, topic, partition, &lo, &hi) ||
        hi < 0)
        return 0;
    int64_t start = from > lo ? from : lo;
    *end = hi;
    *count = hi > start ? (uint64_t)(hi - start) : 0;
    return 1;
}

/* Whether records lie past the position, from the watermarks the consumer's fetches keep (no
 * request to a broker: one in flight to brokers that went away holds the caller past any
 * timeout). Unknown (not fetched yet) counts as pending. */
static int cached_pending(kafka_log *l, const es_topic_pos_t *p) {
    int64_t lo = -1, hi = -1;
    return rd_kafka_get_watermark_offsets(l->consumer, p->topic, p->partition, &lo, &hi) ||
           hi < 0 || hi > p->offset;
}

/* The retention check, on a fetch the broker refused as out of range (auto.offset.reset=error
 * makes that an error event, never a silent skip): data below the log start was deleted
 * before this reader saw it. The offsets come from the refused fetch's response, which the
 * consumer cached; asked of the brokers (which just answered) only when it did not. */
static es_err out_of_range(kafka_log *l, const es_topic_pos_t *p, const char *why,
                           es_error_t *err) {
    int64_t lo = -1, hi = -1;
    if (rd_kafka_get_watermark_offsets(l->consumer, p->topic, p->partition, &lo, &hi) || lo < 0 ||
        hi < 0) {
        es_err e = watermarks(l, p->topic, p->partition, &lo, &hi, err);
        if (e != ES_OK)
            return e;
    }
    if (p->offset < lo)
        return es_fail(err, ES_EIO,
                       "%s partition %d: the checkpoint is at offset %lld but the partition now "
                       "starts at offset %lld: records %lld..%lld were deleted (retention) "
                       "before they were read; rebuild the read model from what is left (esctl "
                       "replay) or restore the data",
                       p->topic, (int)p->partition, (long long)p->offset, (long long)lo,
                       (long long)p->offset, (long long)lo - 1);
    if (p->offset > hi)
        return es_fail(err, ES_EIO,
                       "%s partition %d: the checkpoint is at offset %lld, past the partition's "
                       "end %lld; was the topic deleted and created again? rebuild the read "
                       "model (esctl replay)",
                       p->topic, (int)p->partition, (long long)p->offset, (long long)hi);
    return es_fail(err, ES_EIO, "%s partition %d: offset %lld is out of range: %s", p->topic,
                   (int)p->partition, (long long)p->offset, why);
}

static int same_assignment(const kafka_log *l, const es_topic_pos_t *pos, size_t n) {
    if (!l->assigned || (size_t)l->assigned->cnt != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        const rd_kafka_topic_partition_t *a = &l->assigned->elems[i];
        if (a->partition != pos[i].partition || a->offset != pos[i].offset ||
            strcmp(a->topic, pos[i].topic))
            return 0;
    }
    return 1;
}

static void forget_assignment(kafka_log *l) {
    if (l->assigned)
        rd_kafka_topic_partition_list_destroy(l->assigned);
    l->assigned = NULL;
}

/* Assigns the consumer exactly pos (offset 0: the beginning). *first_wait is how long fetch
 * waits for a first record: after a new assignment with records to read (or not known yet),
 * until they come (a rolled-back batch is redone from the broker, and must see its records
 * again). Positions are checked against retention by the fetch itself (out_of_range). */
static es_err assign(kafka_log *l, const es_topic_pos_t *pos, size_t n, int *first_wait,
                     es_error_t *err) {
    int pending = 0;
    *first_wait = IDLE_WAIT_MS;
    if (same_assignment(l, pos, n) && !l->reseek)
        return ES_OK;
    forget_assignment(l);
    l->reseek = 0;
    for (size_t i = 0; i < n; i++)
        pending |= cached_pending(l, &pos[i]);
    rd_kafka_topic_partition_list_t *want = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(want, pos[i].topic, pos[i].partition)->offset =
            pos[i].offset > 0 ? pos[i].offset : RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_resp_err_t e = rd_kafka_assign(l->consumer, want);
    if (e) {
        rd_kafka_topic_partition_list_destroy(want);
        return es_kafka_fail(l->consumer, e, NULL, err, "assigning partitions to the consumer");
    }
    for (size_t i = 0; i < n; i++)
        want->elems[i].offset = pos[i].offset;
    l->assigned = want;
    *first_wait = pending ? FIRST_WAIT_MS : IDLE_WAIT_MS;
    return ES_OK;
}

static int find_pos(const es_topic_pos_t *pos, size_t n, const char *topic, int32_t partition) {
    for (size_t i = 0; i < n; i++)
        if (pos[i].partition == partition && !strcmp(pos[i].topic, topic))
            return (int)i;
    return -1;
}

/* An error event of the consumer: fatal for this fetch, or logged and left to librdkafka. */
static es_err message_error(kafka_log *l, const rd_kafka_message_t *m, const es_topic_pos_t *pos,
                            size_t n, es_error_t *err) {
    const char *topic = m->rkt ? rd_kafka_topic_name(m->rkt) : NULL;
    int i = topic ? find_pos(pos, n, topic, m->partition) : -1;
    if ((m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET ||
         m->err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE) &&
        i >= 0) {
        forget_assignment(l);
        return out_of_range(l, &pos[i], rd_kafka_message_errstr(m), err);
    }
    if (es_kafka_code(m->err) == ES_ENOTFOUND && topic) {
        forget_assignment(l);
        return missing_topic(err, topic);
    }
    char fatal[256];
    if (rd_kafka_fatal_error(l->consumer, fatal, sizeof fatal))
        return es_fail(err, ES_EKAFKA, "the Kafka consumer failed for good: %s", fatal);
    es_logf(l->base.cfg, ES_LOG_WARNING, "Kafka consumer%s%s: %s", topic ? " on " : "",
            topic ? topic : "", rd_kafka_message_errstr(m));
    return ES_OK;
}

static void deliver(const rd_kafka_message_t *m, es_topic_pos_t *p, es_raw_cb *cb, void *opaque,
                    int *stop) {
    char key[ES_MAX_ID_LEN + 1];
    int has_key = m->key && m->key_len <= ES_MAX_ID_LEN;
    if (has_key) {
        memcpy(key, m->key, m->key_len);
        key[m->key_len] = '\0';
    }
    es_raw_record_t rec = {
        p->topic, p->partition, m->offset, has_key ? key : NULL, (const uint8_t *)m->payload,
        m->len,   NULL,         0};
    p->offset = m->offset + 1;
    *stop = cb(&rec, opaque);
}

static void note_position(kafka_log *l, const es_topic_pos_t *p) {
    for (int i = 0; l->assigned && i < l->assigned->cnt; i++)
        if (l->assigned->elems[i].partition == p->partition &&
            !strcmp(l->assigned->elems[i].topic, p->topic))
            l->assigned->elems[i].offset = p->offset;
}

/* From the watermarks the consumer's background fetches keep: no request to a broker. */
static int kl_has_records(es_log_t *base, const es_topic_pos_t *pos, size_t n) {
    kafka_log *l = (kafka_log *)base;
    if (!l->consumer || !l->assigned || l->reseek)
        return 1;
    for (size_t i = 0; i < n; i++)
        if (cached_pending(l, &pos[i]))
            return 1;
    return 0;
}

static es_err kl_fetch(es_log_t *base, es_topic_pos_t *pos, size_t n_pos, size_t max, es_raw_cb *cb,
                       void *opaque, es_error_t *err) {
    kafka_log *l = (kafka_log *)base;
    int first_wait = 0, stop = 0;
    size_t delivered = 0;
    if (n_pos == 0 || max == 0)
        return ES_OK;
    char why[128];
    es_err e = assign(l, pos, n_pos, &first_wait, err);
    int64_t quiet_until = es_now_us() / 1000 + first_wait;
    es_kafka_clear_outage(l->consumer); /* this fetch judges by what it hears itself */
    while (e == ES_OK && !stop && delivered < max) {
        int64_t left = quiet_until - es_now_us() / 1000;
        if (left <= 0 || (l->base.stop && es_stop_requested(l->base.stop)))
            break;
        /* Before the first record, in slices: a stop ends the wait, and so does the first
         * fetch response saying nothing lies past the positions. */
        if (delivered == 0 && left > WAIT_SLICE_MS) {
            if (!kl_has_records(base, pos, n_pos))
                break;
            left = WAIT_SLICE_MS;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(l->consumer, (int)left);
        if (delivered == 0 && es_kafka_all_down(l->consumer, why, sizeof why))
            e = es_fail(err, ES_EKAFKA,
                        "no Kafka broker of %s is reachable (%s); librdkafka keeps trying, "
                        "poll again later",
                        l->brokers, why);
        if (!m)
            continue;
        int i = m->rkt ? find_pos(pos, n_pos, rd_kafka_topic_name(m->rkt), m->partition) : -1;
        if (e == ES_OK && m->err)
            e = message_error(l, m, pos, n_pos, err);
        else if (e == ES_OK && i >= 0 && m->offset >= pos[i].offset) {
            deliver(m, &pos[i], cb, opaque, &stop);
            note_position(l, &pos[i]);
            delivered++;
            quiet_until = es_now_us() / 1000 + IDLE_WAIT_MS;
        }
        rd_kafka_message_destroy(m);
    }
    /* A failed fetch may have taken records off the consumer's queue without delivering
     * them: the next fetch must seek back to the positions instead of going on. */
    if (e != ES_OK)
        l->reseek = 1;
    return e;
}

/* Reads [from, to) of one partition with the consumer (the fetch assignment is dropped);
 * cb returns non-zero to stop. Waiting REQUEST_TIMEOUT_MS without progress is a timeout. */
typedef int scan_cb(const rd_kafka_message_t *m, void *opaque);

typedef struct scan_ctx {
    kafka_log *l;
    const char *topic;
    int32_t partition;
    scan_cb *cb;
    void *opaque;
} scan_ctx;

static es_err scan_record(void *opaque, const rd_kafka_message_t *m, int *stop, es_error_t *err) {
    scan_ctx *x = opaque;
    (void)err;
    *stop = x->cb(m, x->opaque);
    return ES_OK;
}

static es_err scan_error(void *opaque, const rd_kafka_message_t *m, int64_t next, es_error_t *err) {
    scan_ctx *x = opaque;
    es_topic_pos_t p = {x->topic, x->partition, next};
    return message_error(x->l, m, &p, 1, err);
}

static es_err scan_partition(kafka_log *l, const char *topic, int32_t partition, int64_t from,
                             int64_t to, scan_cb *cb, void *opaque, es_error_t *err) {
    if (from >= to)
        return ES_OK;
    forget_assignment(l);
    scan_ctx x = {l, topic, partition, cb, opaque};
    return es_kafka_scan(l->consumer, "reading", topic, partition, from, to, REQUEST_TIMEOUT_MS,
                         scan_record, scan_error, &x, err);
}

/* The events of one aggregate, gathered from every partition of its topic. */
typedef struct stream_scan {
    const char *type, *id, *topic;
    size_t id_len;
    const es_config_t *cfg; /* whose upcasters the events go through */
    es_event_t **evs;
    size_t n, cap;
    size_t kept; /* gather_stream: the events kept so far, evs[0..kept) */
    es_err e;
    es_error_t *err;
} stream_scan;

/* The last version gather_stream kept: a stream read's memory for the log-order rule. */
static es_err kept_version(void *opaque, const es_event_t *ev, uint64_t *last, es_error_t *err) {
    const stream_scan *s = opaque;
    (void)ev, (void)err;
    *last = s->kept ? s->evs[s->kept - 1]->version : 0;
    return ES_OK;
}

static int collect_stream(const rd_kafka_message_t *m, void *opaque) {
    stream_scan *s = opaque;
    if (!m->key || m->key_len != s->id_len || memcmp(m->key, s->id, s->id_len))
        return 0;
    es_raw_record_t raw = {s->topic, m->partition, m->offset, s->id, m->payload, m->len, NULL, 0};
    es_event_t *ev = NULL;
    if (es_read_decode(&raw, &ev, &s->e, s->err) != ES_READ_EVENT)
        return 1;
    if (strcmp(ev->aggregate_id, s->id) || strcmp(ev->aggregate_type, s->type)) {
        es_event_free(ev); /* keyed as this aggregate but another's envelope: not its event */
        return 0;
    }
    es_position_t at = {s->topic, s->id, m->partition, m->offset};
    if (es_read_upcast(s->cfg, &ev, &at, &s->e, s->err) != ES_READ_EVENT)
        return 1;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        es_event_t **evs = realloc(s->evs, cap * sizeof *evs);
        if (!evs) {
            es_event_free(ev);
            s->e = es_fail(s->err, ES_ENOMEM, "out of memory reading %s/%s", s->type, s->id);
            return 1;
        }
        s->evs = evs;
        s->cap = cap;
    }
    ev->partition = m->partition;
    ev->offset = m->offset;
    s->evs[s->n++] = ev;
    return 0;
}

static int by_version(const void *a, const void *b) {
    const es_event_t *x = *(es_event_t *const *)a, *y = *(es_event_t *const *)b;
    if (x->version != y->version)
        return x->version < y->version ? -1 : 1;
    if (x->partition != y->partition)
        return x->partition < y->partition ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Gathers the aggregate's events in version order (it may span partitions, so there is no
 * arrival order to follow), after the log-order rule for a reader (logorder.h): a version
 * already taken is dropped (the copy in the lowest partition and offset wins), a gap is kept
 * with a warning. */
static es_err gather_stream(kafka_log *l, const char *type, const char *id, stream_scan *s,
                            es_error_t *err) {
    char topic[ES_MAX_TYPE_LEN + 8];
    int32_t parts = 0;
    snprintf(topic, sizeof topic, "%s.events", type);
    *s = (stream_scan){type, id, topic, strlen(id), l->base.cfg, NULL, 0, 0, 0, ES_OK, err};
    es_err e = kl_partitions(&l->base, topic, &parts, err);
    for (int32_t p = 0; e == ES_OK && p < parts; p++) {
        int64_t lo = 0, hi = 0;
        e = watermarks(l, topic, p, &lo, &hi, err);
        if (e == ES_OK)
            e = scan_partition(l, topic, p, lo, hi, collect_stream, s, err);
        if (e == ES_OK)
            e = s->e;
    }
    s->topic = NULL;
    if (e != ES_OK)
        return e;
    if (s->n) /* evs is NULL for a stream with no events, and qsort's base must not be */
        qsort(s->evs, s->n, sizeof *s->evs, by_version);
    es_order_counts met = {0};
    es_read_pipe pipe = {ES_ORDER_READER, l->base.cfg, kept_version, s, &met};
    s->kept = 0;
    for (size_t i = 0; i < s->n; i++) {
        es_event_t *ev = s->evs[i];
        es_position_t at = {topic, id, ev->partition, ev->offset};
        es_err rc = ES_OK;
        if (es_read_order(&pipe, ev, &at, &rc, err) == ES_READ_STALE) {
            es_event_free(ev);
            continue;
        }
        s->evs[s->kept++] = ev;
    }
    if (met.stale)
        es_logf(l->base.cfg, ES_LOG_WARNING,
                "%s/%s: %llu event(s) at a version already read skipped (log-order rule)", type, id,
                (unsigned long long)met.stale);
    s->n = s->kept;
    return ES_OK;
}

static void free_stream(stream_scan *s) {
    for (size_t i = 0; i < s->n; i++)
        es_event_free(s->evs[i]);
    free(s->evs);
}

static es_err kl_read_stream(es_log_t *base, const char *type, const char *id, uint64_t from,
                             uint64_t to, es_event_cb *cb, void *opaque, es_error_t *err) {
    stream_scan s;
    es_err e = gather_stream((kafka_log *)base, type, id, &s, err);
    for (size_t i = 0; e == ES_OK && i < s.n; i++) {
        const es_event_t *ev = s.evs[i];
        if (ev->version < from || (to && ev->version > to))
            continue;
        if (cb(ev, opaque))
            break;
    }
    free_stream(&s);
    return e;
}

/* Read-only, so esctl events works; the command processor will keep versions itself. */
static es_err kl_stream_version(es_log_t *base, const char *type, const char *id, uint64_t *version,
                                es_error_t *err) {
    stream_scan s;
    *version = 0;
    es_err e = gather_stream((kafka_log *)base, type, id, &s, err);
    if (e == ES_OK && s.n)
        *version = s.evs[s.n - 1]->version;
    free_stream(&s);
    return e;
}

/* read_log walks topics in order, each partition by partition; from and *next count records of
 * that walk from 1 (Kafka has no global order across partitions). */
typedef struct log_scan {
    const char *topic;
    int64_t *ord;
    size_t max, delivered;
    es_event_cb *cb;
    void *opaque;
    int stopped;
    es_err e;
    es_error_t *err;
    const es_config_t *cfg; /* whose upcasters the events go through */
} log_scan;

static int deliver_log(const rd_kafka_message_t *m, void *opaque) {
    log_scan *s = opaque;
    char key[ES_MAX_ID_LEN + 1] = "";
    if (m->key && m->key_len <= ES_MAX_ID_LEN) {
        memcpy(key, m->key, m->key_len);
        key[m->key_len] = '\0';
    }
    es_raw_record_t raw = {s->topic,   m->partition, m->offset, key[0] ? key : NULL,
                           m->payload, m->len,       NULL,      0};
    es_event_t *ev = NULL;
    if (es_read_current(s->cfg, &raw, &ev, &s->e, s->err) != ES_READ_EVENT)
        return 1;
    (*s->ord)++;
    s->delivered++;
    s->stopped = s->cb(ev, s->opaque);
    es_event_free(ev);
    return s->stopped || (s->max && s->delivered >= s->max);
}

static es_err read_topic(kafka_log *l, const char *topic, int64_t *skip, log_scan *s,
                         es_error_t *err) {
    int32_t parts = 0;
    es_err e = kl_partitions(&l->base, topic, &parts, err);
    for (int32_t p = 0; e == ES_OK && p < parts && !s->stopped; p++) {
        int64_t lo = 0, hi = 0;
        if (s->max && s->delivered >= s->max)
            break;
        e = watermarks(l, topic, p, &lo, &hi, err);
        if (e != ES_OK)
            break;
        int64_t jump = *skip < hi - lo ? *skip : hi - lo;
        *skip -= jump;
        *s->ord += jump;
        s->topic = topic;
        e = scan_partition(l, topic, p, lo + jump, hi, deliver_log, s, err);
        if (e == ES_OK)
            e = s->e;
    }
    return e;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every "<type>.events" topic of the cluster, sorted. Caller frees the array and strings. */
static es_err event_topics(kafka_log *l, char ***out, size_t *n, es_error_t *err) {
    const struct rd_kafka_metadata *md = NULL;
    *out = NULL;
    *n = 0;
    rd_kafka_resp_err_t ke = rd_kafka_metadata(l->consumer, 1, NULL, &md, REQUEST_TIMEOUT_MS);
    if (ke)
        return es_kafka_fail(l->consumer, ke, NULL, err, "listing the cluster's topics");
    char **names = calloc((size_t)md->topic_cnt + 1, sizeof *names);
    es_err e = names ? ES_OK : es_fail(err, ES_ENOMEM, "out of memory");
    for (int i = 0; e == ES_OK && i < md->topic_cnt; i++) {
        const char *t = md->topics[i].topic;
        size_t len = strlen(t);
        if (len <= 7 || strcmp(t + len - 7, ".events"))
            continue;
        if (!(names[*n] = strdup(t)))
            e = es_fail(err, ES_ENOMEM, "out of memory");
        else
            ++*n;
    }
    rd_kafka_metadata_destroy(md);
    if (e == ES_OK) {
        qsort(names, *n, sizeof *names, by_name);
        *out = names;
        return ES_OK;
    }
    for (size_t i = 0; names && i < *n; i++)
        free(names[i]);
    free(names);
    *n = 0;
    return e;
}

static es_err kl_read_log(es_log_t *base, const char *const *types, int64_t from, size_t max,
                          es_event_cb *cb, void *opaque, int64_t *next, es_error_t *err) {
    kafka_log *l = (kafka_log *)base;
    int64_t ord = 1, skip = from > 1 ? from - 1 : 0;
    log_scan s = {NULL, &ord, max, 0, cb, opaque, 0, ES_OK, err, l->base.cfg};
    char **all = NULL;
    size_t n_all = 0;
    es_err e = types ? ES_OK : event_topics(l, &all, &n_all, err);
    for (size_t i = 0; e == ES_OK && !s.stopped && (types ? types[i] != NULL : i < n_all); i++) {
        char topic[ES_MAX_TYPE_LEN + 8];
        if (types)
            snprintf(topic, sizeof topic, "%s.events", types[i]);
        else
            snprintf(topic, sizeof topic, "%s", all[i]);
        if (max && s.delivered >= max)
            break;
        e = read_topic(l, topic, &skip, &s, err);
    }
    for (size_t i = 0; i < n_all; i++)
        free(all[i]);
    free(all);
    if (next)
        *next = ord + skip;
    return e;
}

static es_err kl_put_dlq(es_log_t *base, const char *dlq_topic, const char *ref, const char *key,
                         const uint8_t *value, size_t len, const es_kv_t *headers, size_t n_headers,
                         es_error_t *err) {
    kafka_log *l = (kafka_log *)base;
    es_err e = l->producer ? ES_OK : make_handle(l, NULL, &l->producer, err);
    if (e != ES_OK)
        return e;
    l->dlq_seq++;
    l->dlq_done = 0;
    e = es_kafka_produce_dlq(l->producer, dlq_topic, ref, key, value, len, headers, n_headers,
                             (void *)(uintptr_t)l->dlq_seq, err);
    if (e != ES_OK)
        return e;
    char what[ES_MAX_TYPE_LEN + 64];
    snprintf(what, sizeof what, "sending a dead letter to %s", dlq_topic);
    rd_kafka_flush(l->producer, FLUSH_TIMEOUT_MS);
    if (!l->dlq_done)
        return es_fail(err, ES_ETIMEOUT,
                       "%s: not acknowledged within %d ms (brokers %s); it is sent again later",
                       what, FLUSH_TIMEOUT_MS, l->brokers);
    if (es_kafka_code(l->dlq_err) == ES_ENOTFOUND)
        return missing_topic(err, dlq_topic);
    return l->dlq_err ? es_kafka_fail(l->producer, l->dlq_err, NULL, err, "%s", what) : ES_OK;
}

/* ---- producing events ---------------------------------------------------------------------- */

/* Waits up to PRODUCE_FLUSH_MS for the producer's records to be acknowledged, in short slices so
 * that a stop does not wait for an outage to end: after a stop, at most STOP_GRACE_MS more (wall
 * clock) for acknowledgements already on their way, and none once the producer heard a broker
 * was unreachable, when they are not. What is left is sent again later. */
static void await_acks(kafka_log *l, const es_stop_t *stop) {
    int64_t until = es_now_us() / 1000 + PRODUCE_FLUSH_MS;
    while (rd_kafka_flush(l->producer, PRODUCE_SLICE_MS) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        int64_t now = es_now_us() / 1000;
        if (stop && es_stop_requested(stop)) {
            if (es_kafka_heard_unreachable(l->producer))
                return;
            if (until > now + STOP_GRACE_MS)
                until = now + STOP_GRACE_MS;
        }
        if (now >= until)
            return;
    }
}

static es_err produce_round(kafka_log *l, size_t n, es_error_t *err) {
    if (n > (size_t)1 << SENT_INDEX_BITS)
        return es_fail(err, ES_EINVAL, "producing %zu events at once; at most %zu", n,
                       (size_t)1 << SENT_INDEX_BITS);
    if (n > l->cap_sent) {
        sent_rec *s = realloc(l->sent, n * sizeof *s);
        if (!s)
            return es_fail(err, ES_ENOMEM, "out of memory producing %zu events", n);
        l->sent = s;
        l->cap_sent = n;
    }
    l->round = l->round >= ROUND_MAX ? 1 : l->round + 1;
    l->n_sent = n;
    memset(l->sent, 0, n * sizeof *l->sent);
    return ES_OK;
}

/* With schema.registry.framing = confluent: the envelope registered under the subject of each
 * events topic evs go to, before any is produced, so that a registry that refuses leaves none
 * produced. The first produce to a topic registers it (the saga coordinator's events are not
 * known before it runs); later ones find its id cached. */
static es_err prepare_frames(kafka_log *l, es_event_t *const *evs, size_t n, es_error_t *err) {
    es_err e = ES_OK;
    if (!l->registry_opened) {
        e = es_registry_open(l->base.cfg, &l->registry, err);
        l->registry_opened = e == ES_OK;
    }
    char topic[ES_MAX_TYPE_LEN + 8];
    for (size_t i = 0; e == ES_OK && es_registry_framing(l->registry) && i < n; i++) {
        snprintf(topic, sizeof topic, "%s.events", evs[i]->aggregate_type);
        e = es_registry_envelope_id(l->registry, topic, NULL, err);
    }
    return e;
}

/* An event's record value: its envelope, framed when the registry frames. Caller frees *out. */
static es_err record_value(kafka_log *l, const char *topic, const es_event_t *ev, uint8_t **out,
                           size_t *len, es_error_t *err) {
    uint32_t id = 0;
    es_err e = ES_OK;
    if (es_registry_framing(l->registry))
        e = es_registry_envelope_id(l->registry, topic, &id, err);
    if (e == ES_OK)
        e = es_envelope_encode_made(ev, out, len, err);
    if (e != ES_OK || !es_registry_framing(l->registry))
        return e;
    es_buf_t b = {*out, *len, *len};
    e = es_frame_wrap(&b, id, err);
    if (e != ES_OK)
        es_buf_free(&b);
    *out = e == ES_OK ? b.data : NULL;
    *len = b.len;
    return e;
}

static es_err kl_produce(es_log_t *base, es_event_t *const *evs, size_t n, const es_stop_t *stop,
                         uint8_t *ok, es_error_t *err) {
    kafka_log *l = (kafka_log *)base;
    memset(ok, 0, n);
    es_err e = l->producer ? ES_OK : make_handle(l, NULL, &l->producer, err);
    if (e == ES_OK)
        e = prepare_frames(l, evs, n, err);
    if (e == ES_OK)
        e = produce_round(l, n, err);
    char topic[ES_MAX_TYPE_LEN + 8] = "";
    for (size_t i = 0; e == ES_OK && i < n; i++) {
        uint8_t *bytes = NULL;
        size_t len = 0;
        snprintf(topic, sizeof topic, "%s.events", evs[i]->aggregate_type);
        e = record_value(l, topic, evs[i], &bytes, &len, err);
        if (e == ES_OK)
            e = es_kafka_produce_event(l->producer, topic, RD_KAFKA_PARTITION_UA, evs[i], bytes,
                                       len, (void *)(EVENT_TAG | l->round << SENT_INDEX_BITS | i),
                                       err);
    }
    if (l->producer && n)
        await_acks(l, stop);
    rd_kafka_resp_err_t why = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (size_t i = 0; i < l->n_sent && i < n; i++) {
        ok[i] = l->sent[i].reported && !l->sent[i].err;
        if (!ok[i] && !why)
            why = l->sent[i].reported ? l->sent[i].err : RD_KAFKA_RESP_ERR__TIMED_OUT;
    }
    l->n_sent = 0; /* later reports of this round find no record */
    /* What a stop cut short is no failure: the caller sends it again. */
    if (e == ES_OK && why && !(stop && es_stop_requested(stop)))
        e = es_kafka_code(why) == ES_ENOTFOUND
                ? missing_topic(err, topic)
                : es_kafka_fail(l->producer, why, NULL, err, "producing events to %s", topic);
    return e;
}

static int same_positions(const rd_kafka_topic_partition_list_t *a,
                          const rd_kafka_topic_partition_list_t *b) {
    if (!a || a->cnt != b->cnt)
        return 0;
    for (int i = 0; i < a->cnt; i++)
        if (a->elems[i].partition != b->elems[i].partition ||
            a->elems[i].offset != b->elems[i].offset ||
            strcmp(a->elems[i].topic, b->elems[i].topic))
            return 0;
    return 1;
}

/* The admin client commits go through, made once; forgets the positions last committed when
 * they were another group's. */
static es_err committer_for(kafka_log *l, const char *group, es_error_t *err) {
    if (!l->committer) {
        es_kafka_opts_t o = {.role = ES_KAFKA_ADMIN, .what = "offset committer", .opaque = l};
        es_err e = es_kafka_new(l->base.cfg, &o, &l->committer, err);
        if (e != ES_OK)
            return e;
    }
    if (l->committed_group && !strcmp(l->committed_group, group))
        return ES_OK;
    free(l->committed_group);
    if (l->committed)
        rd_kafka_topic_partition_list_destroy(l->committed);
    l->committed = NULL;
    if (!(l->committed_group = strdup(group)))
        return es_fail(err, ES_ENOMEM, "out of memory");
    return ES_OK;
}

/* The commit's failure, if its result says one: the request's, the group's or a partition's. */
static es_err commit_result(kafka_log *l, rd_kafka_event_t *ev, const char *what, es_error_t *err) {
    rd_kafka_resp_err_t ke = rd_kafka_event_error(ev);
    if (ke)
        return es_kafka_fail(l->committer, ke, NULL, err, "%s", what);
    const rd_kafka_AlterConsumerGroupOffsets_result_t *res =
        rd_kafka_event_AlterConsumerGroupOffsets_result(ev);
    size_t n = 0;
    const rd_kafka_group_result_t **groups =
        res ? rd_kafka_AlterConsumerGroupOffsets_result_groups(res, &n) : NULL;
    for (size_t g = 0; g < n; g++) {
        const rd_kafka_error_t *ge = rd_kafka_group_result_error(groups[g]);
        if (ge)
            return es_kafka_fail(l->committer, rd_kafka_error_code(ge), NULL, err, "%s", what);
        const rd_kafka_topic_partition_list_t *parts = rd_kafka_group_result_partitions(groups[g]);
        for (int i = 0; parts && i < parts->cnt; i++)
            if (parts->elems[i].err)
                return es_kafka_fail(l->committer, parts->elems[i].err, NULL, err, "%s", what);
    }
    return ES_OK;
}

/* Sent with the Admin API from an admin client, not by a consumer of the group: a group
 * consumer's destroy waits for a commit a stop left in flight until librdkafka gives up on the
 * coordinator (seconds with the brokers gone), an admin request does not hold it. A client of its
 * own: on the fetch consumer's connection the request would wait behind a long-poll fetch. The
 * result comes on a queue of its own, waited for in slices, so that an outage costs a bounded
 * wait and the log's stop ends it at once (see watermarks). */
static es_err commit_wait(kafka_log *l, rd_kafka_topic_partition_list_t *offs, const char *group,
                          es_error_t *err) {
    char what[320], errstr[256];
    snprintf(what, sizeof what, "committing offsets of consumer group %s", group);
    rd_kafka_queue_t *q = rd_kafka_queue_new(l->committer);
    rd_kafka_AdminOptions_t *opts =
        rd_kafka_AdminOptions_new(l->committer, RD_KAFKA_ADMIN_OP_ALTERCONSUMERGROUPOFFSETS);
    rd_kafka_AdminOptions_set_request_timeout(opts, COMMIT_TIMEOUT_MS, errstr, sizeof errstr);
    rd_kafka_AlterConsumerGroupOffsets_t *alter =
        rd_kafka_AlterConsumerGroupOffsets_new(group, offs);
    rd_kafka_AlterConsumerGroupOffsets(l->committer, &alter, 1, opts, q);
    rd_kafka_AlterConsumerGroupOffsets_destroy(alter);
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_event_t *ev = NULL;
    es_err e = ES_OK;
    for (int waited = 0; !ev && waited < COMMIT_TIMEOUT_MS; waited += ES_KAFKA_SLICE_MS) {
        ev = rd_kafka_queue_poll(q, ES_KAFKA_SLICE_MS);
        if (!ev && l->base.stop && es_stop_requested(l->base.stop)) {
            e = es_fail(err, ES_ERETRY, "%s: stopped before an answer (brokers %s)", what,
                        l->brokers);
            break;
        }
    }
    if (e == ES_OK && ev)
        e = commit_result(l, ev, what, err);
    else if (e == ES_OK)
        e = es_fail(err, ES_ETIMEOUT, "%s: no answer within %d ms (brokers %s)", what,
                    COMMIT_TIMEOUT_MS, l->brokers);
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    return e;
}

static es_err kl_commit_positions(es_log_t *base, const char *group, const es_topic_pos_t *pos,
                                  size_t n, es_error_t *err) {
    kafka_log *l = (kafka_log *)base;
    if (n == 0)
        return ES_OK;
    es_err e = committer_for(l, group, err);
    if (e != ES_OK)
        return e;
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(offs, pos[i].topic, pos[i].partition)->offset =
            pos[i].offset;
    if (same_positions(l->committed, offs)) {
        rd_kafka_topic_partition_list_destroy(offs);
        return ES_OK;
    }
    e = commit_wait(l, offs, group, err);
    if (e == ES_OK) {
        if (l->committed)
            rd_kafka_topic_partition_list_destroy(l->committed);
        l->committed = offs;
    } else {
        rd_kafka_topic_partition_list_destroy(offs);
    }
    return e;
}

static const es_reader_ops kafka_reader = {
    .version = ES_READER_OPS_VERSION,
    .stream_version = kl_stream_version,
    .read_stream = kl_read_stream,
    .read_log = kl_read_log,
    .identity = kl_identity,
    .partitions = kl_partitions,
    .fetch = kl_fetch,
    .has_records = kl_has_records,
    .topic_end = kl_topic_end,
    .cached_end = kl_cached_end,
    .put_dlq = kl_put_dlq,
    .commit_positions = kl_commit_positions,
    .produce = kl_produce,
};

es_err es_log_kafka_open(const es_config_t *cfg, unsigned flags, es_log_t **out, es_error_t *err) {
    (void)flags;
    const char *brokers = es_config_get(cfg, "brokers");
    char group[320];
    *out = NULL;
    if (!brokers)
        return es_fail(err, ES_EINVAL,
                       "the kafka backend needs the config key brokers (ESKIT_BROKERS), e.g. "
                       "brokers=localhost:9092");
    kafka_log *l = calloc(1, sizeof *l);
    if (!l || !(l->brokers = strdup(brokers))) {
        free(l);
        return es_fail(err, ES_ENOMEM, "out of memory opening the Kafka log");
    }
    l->base.reader = &kafka_reader; /* no event store: writes go through remote.c */
    l->base.destroy = kl_destroy;
    l->base.cfg = cfg;
    /* assign needs a group.id; this one never joins and never commits. */
    snprintf(group, sizeof group, "%s.eskit-reader", es_config_get(cfg, "service.name"));
    es_err e = make_handle(l, group, &l->consumer, err);
    if (e != ES_OK) {
        kl_destroy(&l->base);
        return e;
    }
    *out = &l->base;
    return ES_OK;
}
