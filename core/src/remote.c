/*
 * The caller side of the Kafka backend. es_execute encodes each command as an
 * eskit.v1.CommandEnvelope, produces it to "<type>.commands" keyed by
 * aggregate id (so it lands on the partition whose owner holds the aggregate)
 * and waits for the owner's eskit.v1.CommandReply on "<type>.replies".
 *
 * Every engine reads one partition of each replies topic, picked from a random
 * instance id, starting at the partition's end when the type is first used;
 * the header es-reply-partition tells the owner where to answer. Instances
 * sharing a partition skip each other's replies by command id. A command whose
 * reply does not come within execute.timeout.ms is ES_ETIMEOUT: it may still
 * run, and sending it again with the same command id is safe (the owner
 * answers a duplicate with the first result).
 *
 * Calls from many threads are in flight together: each registers its
 * commands by id, produces them and waits for their delivery reports; then
 * one waiting thread at a time polls the reply consumer and hands every reply
 * to the call waiting for its command id (FIFO when two wait for one id), and
 * the others sleep until their replies are in or the poller leaves. The mutex
 * guards that bookkeeping only, never a wait on Kafka.
 * Documented differences from the embedded engine: es_execute_batch is atomic
 * per command, not per batch (its commands may land on different partitions
 * and owners), and the returned events carry their partition but offset -1
 * (a reply does not carry Kafka offsets). es_execute_all never reaches this executor: the
 * engine refuses it with the backend descriptor's no_all (backends.c), since the commands of
 * one call may have several owners and none can roll back another's commit.
 */
#include "remote.h"
#include "kafka/wire.h"
#include "eskit/v1/command.pb-c.h"
#include "eskit/v1/reply.pb-c.h"
#include "lru.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REQUEST_TIMEOUT_MS 10000 /* metadata, a replies partition's start, a command's delivery */
#define WAIT_MS 10               /* fetch.wait.max.ms: replies are waited for */
#define FLUSH_SLICE_MS 10        /* a caller checks its delivery reports this often */
#define POLL_SLICE_MS 100        /* the longest turn a caller reads replies for the others */
#define POLL_BATCH 1000          /* replies handed out in one turn at most */
#define METADATA_SLICE_MS 250    /* a metadata request is retried this often */
#define START_SLICE_MS 10        /* a new replies partition is looked at this often */

typedef struct reply_topic {
    char *type;
    int32_t partition;
} reply_topic;

typedef struct call call;

/* One command of a call in flight. */
typedef struct pending {
    const char *command_id; /* NULL: failed the local checks, never sent */
    call *call;
    int32_t partition;  /* of "<type>.commands", from its delivery report */
    int32_t reply_part; /* where the owner answers */
    int sent, answered;
    rd_kafka_resp_err_t err;
    struct pending *next_same_id; /* the next command waiting for the same id, any call */
} pending;

/* One es_remote_execute in flight. */
struct call {
    uint64_t serial; /* in every delivery report's opaque, with the command's index */
    pending *pend;
    size_t n, unsent, left; /* left: sent and not answered */
    es_result_t *results;
    es_err failed; /* a reply that could not be read into its result */
    es_error_t err;
    int64_t deadline_ms;   /* execute.timeout.ms from the call's start */
    const es_stop_t *stop; /* the caller gives up its waits when set; may be NULL */
    call *next;
};

typedef struct es_remote es_remote_t;

struct es_remote {
    es_executor base;       /* first: the executor es_remote_executor_new hands out */
    const es_config_t *cfg; /* the Kafka handles log to it */
    pthread_mutex_t lock;   /* everything below; never held while waiting on Kafka */
    pthread_cond_t changed; /* replies were handed out, or the poller left */
    rd_kafka_t *producer, *consumer;
    uint32_t instance;
    reply_topic *replies;
    size_t n_replies;
    rd_kafka_topic_partition_list_t *assigned; /* offset = next reply to read */
    call *calls;                               /* in flight */
    uint64_t next_serial;
    es_lru_t *waiting; /* command id -> the first pending waiting for its reply */
    int polling;       /* a thread is reading the reply consumer */
};

static pending *find_pending(es_remote_t *r, uint64_t serial, size_t i) {
    for (call *c = r->calls; c; c = c->next)
        if (c->serial == serial)
            return i < c->n ? &c->pend[i] : NULL;
    return NULL; /* the call gave up on it */
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    es_remote_t *r = opaque;
    uint64_t tag = (uint64_t)(uintptr_t)m->_private;
    pthread_mutex_lock(&r->lock);
    pending *p = find_pending(r, tag >> 32, (size_t)(tag & 0xffffffffu));
    if (p && !p->sent) {
        p->sent = 1;
        p->err = m->err;
        p->partition = m->partition;
        p->call->unsent--;
    }
    pthread_mutex_unlock(&r->lock);
}

/* The reply consumer shares what the producer hears of the brokers (es_kafka_outage), so the
 * messages of the calls that fail or time out say what either heard since the last sign of life:
 * a delivery, a reply, metadata. */
static es_err new_handle(es_remote_t *r, es_kafka_role role, rd_kafka_t **out, es_error_t *err) {
    char group[320];
    snprintf(group, sizeof group, "%s.eskit-replies", es_config_get(r->cfg, "service.name"));
    es_kafka_opts_t o = {.role = role,
                         .what = role == ES_KAFKA_CONSUMER ? "reply consumer" : "command producer",
                         .group = group,
                         .offset_reset = "latest",
                         .fetch_wait_ms = WAIT_MS,
                         .share_outage = r->producer,
                         .opaque = r,
                         .dr_cb = dr_cb};
    return es_kafka_new(r->cfg, &o, out, err);
}

static es_err es_remote_new(const es_config_t *cfg, es_remote_t **out, es_error_t *err) {
    es_remote_t *r = calloc(1, sizeof *r);
    char id[ES_UUID_STR_LEN + 1];
    *out = NULL;
    if (!r)
        return es_fail(err, ES_ENOMEM, "out of memory creating a Kafka engine");
    r->cfg = cfg;
    if (!(r->waiting = es_lru_new(ES_LRU_UNBOUNDED, NULL, NULL))) {
        free(r);
        return es_fail(err, ES_ENOMEM, "out of memory creating a Kafka engine");
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->changed, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&r->lock, NULL);
    es_uuid7(id); /* its random tail: the instance id */
    for (const char *p = id + 24; *p; p++)
        r->instance = r->instance * 16 + (uint32_t)(*p <= '9' ? *p - '0' : *p - 'a' + 10);
    *out = r;
    return ES_OK;
}

static void es_remote_destroy(es_remote_t *r) {
    if (!r)
        return;
    if (r->producer) {
        rd_kafka_purge(r->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(r->producer, 0);
        es_kafka_destroy(r->producer, 0);
    }
    es_kafka_destroy(r->consumer, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    if (r->assigned)
        rd_kafka_topic_partition_list_destroy(r->assigned);
    for (size_t i = 0; i < r->n_replies; i++)
        free(r->replies[i].type);
    free(r->replies);
    es_lru_destroy(r->waiting);
    pthread_cond_destroy(&r->changed);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

static int given_up(const call *c) {
    return es_stop_requested(c->stop) || es_now_us() / 1000 >= c->deadline_ms;
}

/* Whether a request that failed with e is worth asking again before the call gives up. */
static int again(const call *c, rd_kafka_resp_err_t e, int64_t until_ms) {
    return (e == RD_KAFKA_RESP_ERR__TIMED_OUT || e == RD_KAFKA_RESP_ERR__TRANSPORT) &&
           !given_up(c) && es_now_us() / 1000 < until_ms;
}

/* Metadata of every topic, asked in short slices until answered, the call gives up (stop or its
 * deadline) or REQUEST_TIMEOUT_MS pass: one long request would hold a stop. */
static rd_kafka_resp_err_t sliced_metadata(es_remote_t *r, const call *c,
                                           const struct rd_kafka_metadata **md) {
    int64_t until = es_now_us() / 1000 + REQUEST_TIMEOUT_MS;
    rd_kafka_resp_err_t e;
    if (es_stop_requested(c->stop)) /* stopped_or says so; no request a stop would wait for */
        return RD_KAFKA_RESP_ERR__TIMED_OUT;
    while (again(c, e = rd_kafka_metadata(r->consumer, 1, NULL, md, METADATA_SLICE_MS), until))
        ;
    return e;
}

/* A failed request, or the call's stop. */
static es_err stopped_or(es_remote_t *r, const call *c, rd_kafka_resp_err_t e, es_error_t *err,
                         const char *what, const char *topic) {
    if (es_stop_requested(c->stop))
        return es_fail(err, ES_ERETRY, "%s %s: stopped before the brokers answered", what, topic);
    return es_kafka_fail(r->consumer, e, NULL, err, "%s %s", what, topic);
}

/* From a listing of every topic: asking for one by name could make the broker create it. */
static es_err topic_partitions(es_remote_t *r, const call *c, const char *topic, int32_t *n,
                               es_error_t *err) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e;
    *n = 0;
    e = sliced_metadata(r, c, &md);
    if (e)
        return stopped_or(r, c, e, err, "reading the partitions of", topic);
    es_kafka_clear_outage(r->consumer); /* answered */
    for (int i = 0; i < md->topic_cnt; i++)
        if (!strcmp(md->topics[i].topic, topic) && !md->topics[i].err)
            *n = md->topics[i].partition_cnt;
    rd_kafka_metadata_destroy(md);
    if (*n > 0)
        return ES_OK;
    return es_fail(err, ES_ENOTFOUND,
                   "topic %s does not exist on the Kafka cluster; create the aggregate type's "
                   "topics with 'esctl topics apply'",
                   topic);
}

/* Waits until a fetch of the replies partition, assigned at its end, reported the partition's
 * end (the consumer's cached watermarks): from then on the consumer reads from an offset no later
 * than any reply to a command sent after. In slices a stop ends, asking the brokers nothing: a
 * watermark request in flight when they go away can hold librdkafka 2.0.2 well past its timeout.
 * *end: the end the fetch saw. */
static es_err await_reply_start(es_remote_t *r, const call *c, const char *topic, int32_t p,
                                int64_t *end, es_error_t *err) {
    int64_t until = es_now_us() / 1000 + REQUEST_TIMEOUT_MS, lo = -1;
    if (until > c->deadline_ms)
        until = c->deadline_ms;
    for (*end = -1;; es_sleep_ms(START_SLICE_MS)) {
        if (!rd_kafka_get_watermark_offsets(r->consumer, topic, p, &lo, end) && *end >= 0)
            return ES_OK;
        if (given_up(c) || es_now_us() / 1000 >= until)
            return stopped_or(r, c, RD_KAFKA_RESP_ERR__TIMED_OUT, err, "reading the end offset of",
                              topic);
    }
}

/* The replies partition of type this engine reads, assigned at its end on first use. */
static es_err reply_partition(es_remote_t *r, const call *c, const char *type, int32_t *out,
                              es_error_t *err) {
    for (size_t i = 0; i < r->n_replies; i++)
        if (!strcmp(r->replies[i].type, type)) {
            *out = r->replies[i].partition;
            return ES_OK;
        }
    char topic[ES_MAX_TYPE_LEN + 16];
    int32_t parts = 0;
    int64_t end = 0;
    snprintf(topic, sizeof topic, "%s.replies", type);
    es_err e = topic_partitions(r, c, topic, &parts, err);
    if (e != ES_OK)
        return e;
    int32_t p = (int32_t)(r->instance % (uint32_t)parts);
    reply_topic *rt = realloc(r->replies, (r->n_replies + 1) * sizeof *rt);
    if (!rt)
        return es_fail(err, ES_ENOMEM, "out of memory");
    r->replies = rt;
    if (!(rt[r->n_replies].type = strdup(type)))
        return es_fail(err, ES_ENOMEM, "out of memory");
    if (!r->assigned)
        r->assigned = rd_kafka_topic_partition_list_new(4);
    rd_kafka_topic_partition_list_add(r->assigned, topic, p)->offset = RD_KAFKA_OFFSET_END;
    /* The list holds every partition's next offset, so assigning all of it again loses none. */
    rd_kafka_resp_err_t ke = rd_kafka_assign(r->consumer, r->assigned);
    e = ke ? es_kafka_fail(r->consumer, ke, NULL, err, "assigning the replies partition of %s",
                           topic)
           : await_reply_start(r, c, topic, p, &end, err);
    if (e != ES_OK) {
        rd_kafka_topic_partition_list_del(r->assigned, topic, p);
        rd_kafka_assign(r->consumer, r->assigned); /* tried again on the next call */
        free(rt[r->n_replies].type);
        return e;
    }
    rd_kafka_topic_partition_list_find(r->assigned, topic, p)->offset = end;
    rt[r->n_replies++].partition = p;
    *out = p;
    return ES_OK;
}

static es_err ensure_handles(es_remote_t *r, es_error_t *err) {
    es_err e = r->producer ? ES_OK : new_handle(r, ES_KAFKA_PRODUCER, &r->producer, err);
    if (e == ES_OK && !r->consumer)
        e = new_handle(r, ES_KAFKA_CONSUMER, &r->consumer, err);
    return e;
}

/* The checks the owner would make first; a failure is the command's result, as embedded. */
static es_err check_command(const es_command_t *cmd, es_error_t *cerr) {
    es_err rc = es_validate_command(cmd, cerr);
    if (rc == ES_OK && !cmd->message)
        rc = es_fail(cerr, ES_EUNKNOWN_TYPE, "command for %s/%s has no message",
                     cmd->aggregate_type, cmd->aggregate_id);
    return rc;
}

static es_err local_failure(es_result_t *res, es_err code, const char *reason) {
    res->outcome = ES_OUTCOME_ERROR;
    res->code = code;
    return (res->reason = strdup(reason)) ? ES_OK : ES_ENOMEM;
}

_Static_assert(sizeof(uintptr_t) >= 8, "delivery report tags pack two 32-bit numbers");

/* What a command's delivery report carries to find its pending again (if its call still waits). */
static void *tag_of(const call *c, size_t i) {
    return (void *)(uintptr_t)(c->serial << 32 | (uint64_t)i);
}

/* "<type><suffix>" into out (ES_MAX_TYPE_LEN + 16 bytes), cut short like snprintf; per command
 * and reply, where snprintf cost ~900 instructions a call (callgrind, the Kafka bench). */
static void topic_of(char *out, const char *type, const char *suffix) {
    size_t cap = ES_MAX_TYPE_LEN + 16, tl = strnlen(type, cap - 1), sl = strlen(suffix);
    memcpy(out, type, tl);
    if (sl > cap - 1 - tl)
        sl = cap - 1 - tl;
    memcpy(out + tl, suffix, sl);
    out[tl + sl] = '\0';
}

/* Encodes and produces command i of the call; its delivery report lands in c->pend[i]. */
static es_err send_command(es_remote_t *r, const call *c, size_t i, const es_command_t *cmd,
                           es_error_t *err) {
    int32_t reply_part = c->pend[i].reply_part;
    Eskit__V1__CommandEnvelope env = ESKIT__V1__COMMAND_ENVELOPE__INIT;
    Eskit__V1__CommandEnvelope__MetadataEntry *md = NULL, **mdp = NULL;
    char topic[ES_MAX_TYPE_LEN + 16], reply_to[ES_MAX_TYPE_LEN + 16];
    size_t plen = protobuf_c_message_get_packed_size(cmd->message);
    uint8_t *payload = malloc(plen ? plen : 1), *buf = NULL;
    /* The envelope carries the execute span, a child of the caller's; the processor runs it. */
    size_t n_md = cmd->n_metadata + 3;
    es_kv_t *kv = calloc(n_md, sizeof *kv);
    es_trace_t trace;
    char tp[ES_TRACEPARENT_LEN + 1];
    md = calloc(n_md, sizeof *md);
    mdp = calloc(n_md, sizeof *mdp);
    es_err e = ES_OK;
    if (!payload || !kv || !md || !mdp) {
        e = es_fail(err, ES_ENOMEM, "out of memory encoding a command");
        goto out;
    }
    protobuf_c_message_pack(cmd->message, payload);
    topic_of(topic, cmd->aggregate_type, ".commands");
    topic_of(reply_to, cmd->aggregate_type, ".replies");
    env.command_id = (char *)c->pend[i].command_id;
    env.aggregate_type = (char *)cmd->aggregate_type;
    env.aggregate_id = (char *)cmd->aggregate_id;
    env.expectation = (Eskit__V1__Expectation)cmd->expect;
    env.expected_version = cmd->expected_version;
    env.command_type = (char *)cmd->message->descriptor->name;
    env.payload = (ProtobufCBinaryData){plen, payload};
    env.correlation_id = (char *)(cmd->correlation_id ? cmd->correlation_id : "");
    env.deadline_us = cmd->deadline_us;
    env.reply_to = reply_to;
    es_trace_start(cmd->metadata, cmd->n_metadata, &trace);
    n_md = es_trace_metadata(cmd->metadata, cmd->n_metadata, &trace, kv, tp);
    for (size_t k = 0; k < n_md; k++) {
        eskit__v1__command_envelope__metadata_entry__init(&md[k]);
        md[k].key = (char *)kv[k].key;
        md[k].value = (char *)kv[k].value;
        mdp[k] = &md[k];
    }
    env.n_metadata = n_md;
    env.metadata = mdp;
    size_t len = eskit__v1__command_envelope__get_packed_size(&env);
    if (!(buf = malloc(len))) {
        e = es_fail(err, ES_ENOMEM, "out of memory encoding a command");
        goto out;
    }
    eskit__v1__command_envelope__pack(&env, buf);
    es_kafka_record_t rec = {.kind = ES_KAFKA_COMMAND,
                             .topic = topic,
                             .partition = RD_KAFKA_PARTITION_UA,
                             .key = cmd->aggregate_id,
                             .value = buf,
                             .len = len,
                             .opaque = tag_of(c, i),
                             .reply_partition = reply_part};
    buf = NULL; /* es_kafka_produce takes it */
    e = es_kafka_produce(r->producer, &rec, err);
out:
    free(buf);
    free(payload);
    free(kv);
    free(md);
    free(mdp);
    return e;
}

/* Waits for the call's delivery reports: a command not written cannot be answered. Flushing
 * sends at once (linger aside) and serves reports, ours and other calls'. */
static es_err await_delivery(es_remote_t *r, call *c, const es_command_t *cmds, es_error_t *err) {
    int64_t start_ms = es_now_us() / 1000, deadline_ms = start_ms + REQUEST_TIMEOUT_MS;
    if (c->deadline_ms < deadline_ms) /* a reply could not come in time anyway */
        deadline_ms = c->deadline_ms;
    for (;;) {
        pthread_mutex_lock(&r->lock);
        size_t unsent = c->unsent;
        pthread_mutex_unlock(&r->lock);
        if (!unsent || es_now_us() / 1000 >= deadline_ms || es_stop_requested(c->stop))
            break;
        rd_kafka_flush(r->producer, FLUSH_SLICE_MS);
    }
    int waited_ms = (int)(es_now_us() / 1000 - start_ms);
    es_err e = ES_OK;
    char down[512];
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; e == ES_OK && i < c->n; i++) {
        const pending *p = &c->pend[i];
        if (!p->command_id || (p->sent && !p->err))
            continue;
        char topic[ES_MAX_TYPE_LEN + 16];
        snprintf(topic, sizeof topic, "%s.commands", cmds[i].aggregate_type);
        if (!p->sent && es_stop_requested(c->stop))
            e = es_fail(err, ES_ERETRY,
                        "command %s to %s: stopped before it was acknowledged; it may still "
                        "execute: retry with the same command id",
                        p->command_id, topic);
        else if (!p->sent && *es_kafka_outage(r->producer, 0, down, sizeof down))
            e = es_fail(err, ES_ETIMEOUT,
                        "command %s to %s was not acknowledged within %d ms: %s; it may still "
                        "execute: retry with the same command id",
                        p->command_id, topic, waited_ms, down);
        else if (!p->sent)
            e = es_fail(err, ES_ETIMEOUT,
                        "command %s to %s was not acknowledged within %d ms (brokers %s); "
                        "it may still execute: retry with the same command id",
                        p->command_id, topic, waited_ms, es_config_get(r->cfg, "brokers"));
        else
            e = es_kafka_fail(r->producer, p->err, "retry with the same command id", err,
                              "command %s to %s failed", p->command_id, topic);
    }
    pthread_mutex_unlock(&r->lock);
    return e;
}

static es_err code_of(const Eskit__V1__CommandReply *rep) {
    if (rep->code)
        return (es_err)rep->code;
    switch (rep->outcome) {
    case ESKIT__V1__OUTCOME__OUTCOME_ACCEPTED:
        return ES_OK;
    case ESKIT__V1__OUTCOME__OUTCOME_REJECTED:
        return ES_EREJECTED;
    case ESKIT__V1__OUTCOME__OUTCOME_CONFLICT:
        return ES_ECONFLICT;
    default:
        return ES_EIO;
    }
}

/* Fills res from a reply as the embedded engine fills it. */
static es_err fill_result(const Eskit__V1__CommandReply *rep, es_result_t *res, es_error_t *err) {
    res->outcome =
        rep->outcome >= 1 && rep->outcome <= 4 ? (es_outcome)rep->outcome : ES_OUTCOME_ERROR;
    res->code = code_of(rep);
    res->version = rep->version;
    res->first_version = rep->first_version;
    res->last_version = rep->last_version;
    res->duplicate = rep->duplicate;
    /* Whoever wrote the reply, its reason reaches the caller as one line of text. */
    if (rep->reason && *rep->reason && !(res->reason = es_escape_dup(rep->reason)))
        return es_fail(err, ES_ENOMEM, "out of memory reading a reply");
    if (!rep->n_events)
        return ES_OK;
    if (!(res->events = calloc(rep->n_events, sizeof *res->events)))
        return es_fail(err, ES_ENOMEM, "out of memory reading a reply");
    char topic[ES_MAX_TYPE_LEN + 16];
    topic_of(topic, rep->aggregate_type, ".replies");
    for (size_t i = 0; i < rep->n_events; i++) {
        es_position_t at = {topic, rep->command_id, -1, -1};
        es_event_t *ev = NULL;
        es_err e = es_envelope_decode(rep->events[i].data, rep->events[i].len, &at, &ev, err);
        if (e != ES_OK)
            return e;
        ev->offset = -1; /* the reply does not carry Kafka offsets; the partition is set last */
        res->events[res->n_events++] = ev;
    }
    return ES_OK;
}

static void note_offset(es_remote_t *r, const rd_kafka_message_t *m) {
    const char *topic = rd_kafka_topic_name(m->rkt);
    for (int i = 0; r->assigned && i < r->assigned->cnt; i++)
        if (r->assigned->elems[i].partition == m->partition &&
            !strcmp(r->assigned->elems[i].topic, topic))
            r->assigned->elems[i].offset = m->offset + 1;
}

/* Under the lock: command p waits for a reply with its id, after any command already waiting
 * for that id (a call may hold an id twice; two calls may retry one). */
static int start_waiting(es_remote_t *r, pending *p) {
    size_t klen = strlen(p->command_id);
    pending *q = es_lru_get(r->waiting, p->command_id, klen);
    if (!q)
        return es_lru_put(r->waiting, p->command_id, klen, p);
    while (q->next_same_id)
        q = q->next_same_id;
    q->next_same_id = p;
    return 0;
}

/* Under the lock: p no longer waits (answered, or its call gave up). */
static void stop_waiting(es_remote_t *r, pending *p) {
    size_t klen = strlen(p->command_id);
    pending *q = es_lru_get(r->waiting, p->command_id, klen);
    if (q == p) {
        if (p->next_same_id)
            es_lru_put(r->waiting, p->command_id, klen, p->next_same_id);
        else
            es_lru_remove(r->waiting, p->command_id, klen);
    } else {
        while (q && q->next_same_id != p)
            q = q->next_same_id;
        if (q)
            q->next_same_id = p->next_same_id;
    }
    p->next_same_id = NULL;
}

/* Under the lock: the reply goes to the first command waiting for its id; a reply nobody waits
 * for (another instance's, on a shared partition, or a call that gave up) is skipped. */
static void hand_out(es_remote_t *r, const Eskit__V1__CommandReply *rep) {
    pending *p = es_lru_get(r->waiting, rep->command_id, strlen(rep->command_id));
    if (!p)
        return;
    stop_waiting(r, p);
    p->answered = 1;
    es_kafka_clear_outage(r->consumer);
    call *c = p->call;
    if (c->failed == ES_OK)
        c->failed = fill_result(rep, &c->results[p - c->pend], &c->err);
    if (--c->left == 0 || c->failed != ES_OK)
        pthread_cond_broadcast(&r->changed);
}

/* The poller's turn: reads what the reply consumer has within wait_ms and hands it out. */
static void read_replies(es_remote_t *r, int wait_ms) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(r->consumer, wait_ms);
    for (int k = 0; m && k < POLL_BATCH; k++) {
        if (m->err) {
            es_logf(r->cfg, ES_LOG_WARNING, "reading replies: %s", rd_kafka_message_errstr(m));
        } else {
            Eskit__V1__CommandReply *rep =
                eskit__v1__command_reply__unpack(NULL, m->len, (const uint8_t *)m->payload);
            if (!rep)
                es_logf(r->cfg, ES_LOG_WARNING,
                        "%s partition %d offset %lld: not a CommandReply; skipped",
                        rd_kafka_topic_name(m->rkt), (int)m->partition, (long long)m->offset);
            pthread_mutex_lock(&r->lock);
            note_offset(r, m);
            if (rep)
                hand_out(r, rep);
            pthread_mutex_unlock(&r->lock);
            eskit__v1__command_reply__free_unpacked(rep, NULL);
        }
        rd_kafka_message_destroy(m);
        m = k + 1 < POLL_BATCH ? rd_kafka_consumer_poll(r->consumer, 0) : NULL;
    }
    if (m)
        rd_kafka_message_destroy(m);
}

/* Under the lock: sleeps until replies were handed out or the poller left, at most wait_ms. */
static void wait_changed(es_remote_t *r, int64_t wait_ms) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(wait_ms / 1000);
    ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&r->changed, &r->lock, &ts);
}

/* Waits for the call's replies: one waiting thread at a time reads the consumer for everyone. */
static es_err await_replies(es_remote_t *r, call *c, const es_command_t *cmds, es_error_t *err) {
    pthread_mutex_lock(&r->lock);
    while (c->left > 0 && c->failed == ES_OK) {
        int64_t wait = c->deadline_ms - es_now_us() / 1000;
        if (wait <= 0 || es_stop_requested(c->stop))
            break;
        if (wait > POLL_SLICE_MS)
            wait = POLL_SLICE_MS;
        if (r->polling) {
            wait_changed(r, wait);
            continue;
        }
        r->polling = 1;
        pthread_mutex_unlock(&r->lock);
        read_replies(r, (int)wait);
        pthread_mutex_lock(&r->lock);
        r->polling = 0;
        pthread_cond_broadcast(&r->changed);
    }
    es_err e = c->failed;
    char down[512];
    if (e != ES_OK)
        es_fail(err, e, "%s", c->err.message);
    es_kafka_outage(r->consumer, 0, down, sizeof down);
    for (size_t i = 0; e == ES_OK && i < c->n; i++) {
        const pending *p = &c->pend[i];
        if (!p->command_id || p->answered)
            continue;
        if (es_stop_requested(c->stop))
            e = es_fail(err, ES_ERETRY,
                        "command %s for %s/%s: stopped before its reply came; the command may "
                        "still execute: retry with the same command id",
                        p->command_id, cmds[i].aggregate_type, cmds[i].aggregate_id);
        else if (down[0]) /* the brokers, not the processor */
            e = es_fail(err, ES_ETIMEOUT,
                        "no reply to command %s for %s/%s within execute.timeout.ms (%lld ms): "
                        "%s; the command may still execute: retry with the same command id "
                        "once they are back (it is then executed at most once)",
                        p->command_id, cmds[i].aggregate_type, cmds[i].aggregate_id,
                        es_config_get_int(r->cfg, "execute.timeout.ms"), down);
        else
            e = es_fail(err, ES_ETIMEOUT,
                        "no reply to command %s for %s/%s within execute.timeout.ms (%lld ms): "
                        "the command may still execute; retry with the same command id (it is "
                        "then executed at most once), and check that a processor "
                        "(es_processor_run) serves %s.commands",
                        p->command_id, cmds[i].aggregate_type, cmds[i].aggregate_id,
                        es_config_get_int(r->cfg, "execute.timeout.ms"), cmds[i].aggregate_type);
    }
    pthread_mutex_unlock(&r->lock);
    return e;
}

/* Under the lock: gives every command its id and reply partition, or its local failure, and
 * makes the ones to send wait for their replies. */
static es_err prepare_call(es_remote_t *r, call *c, const es_command_t *cmds, es_error_t *err) {
    for (size_t i = 0; i < c->n; i++) {
        const es_command_t *cmd = &cmds[i];
        es_result_t *res = &c->results[i];
        es_error_t cerr = {0};
        char generated[ES_UUID_STR_LEN + 1];
        if (!cmd->command_id || !*cmd->command_id)
            es_uuid7(generated);
        const char *cid = cmd->command_id && *cmd->command_id ? cmd->command_id : generated;
        if (!(res->command_id = strdup(cid)))
            return es_fail(err, ES_ENOMEM, "out of memory executing a command");
        es_err rc = check_command(cmd, &cerr);
        if (rc != ES_OK) {
            if (local_failure(res, rc, cerr.message) != ES_OK)
                return es_fail(err, ES_ENOMEM, "out of memory executing a command");
            continue;
        }
        pending *p = &c->pend[i];
        es_err e = reply_partition(r, c, cmd->aggregate_type, &p->reply_part, err);
        if (e != ES_OK)
            return e;
        p->call = c;
        p->command_id = res->command_id;
        if (start_waiting(r, p) != 0) {
            p->command_id = NULL;
            return es_fail(err, ES_ENOMEM, "out of memory sending %zu commands", c->n);
        }
        c->unsent++;
        c->left++;
    }
    return ES_OK;
}

/* Under the lock: the call stops waiting and leaves the calls in flight. */
static void finish_call(es_remote_t *r, call *c) {
    for (size_t i = 0; i < c->n; i++)
        if (c->pend[i].command_id && !c->pend[i].answered)
            stop_waiting(r, &c->pend[i]);
    for (call **q = &r->calls; *q; q = &(*q)->next)
        if (*q == c) {
            *q = c->next;
            break;
        }
}

static es_err es_remote_execute(es_remote_t *r, const es_command_t *cmds, size_t n,
                                es_result_t *results, const es_stop_t *stop, es_error_t *err) {
    int64_t deadline_ms = es_now_us() / 1000 + es_config_get_int(r->cfg, "execute.timeout.ms");
    if (n > UINT32_MAX)
        return es_fail(err, ES_EINVAL, "es_execute_batch: at most %u commands a call",
                       (unsigned)UINT32_MAX);
    memset(results, 0, n * sizeof *results);
    call c = {.n = n,
              .results = results,
              .pend = calloc(n ? n : 1, sizeof *c.pend),
              .deadline_ms = deadline_ms,
              .stop = stop};
    if (!c.pend)
        return es_fail(err, ES_ENOMEM, "out of memory sending %zu commands", n);
    pthread_mutex_lock(&r->lock);
    es_err e = ensure_handles(r, err);
    if (e == ES_OK) {
        c.serial = ++r->next_serial & 0xffffffffu;
        c.next = r->calls;
        /* The call lives on this stack until it is unlinked below, before returning. */
        /* cppcheck-suppress autoVariables */
        r->calls = &c;
        e = prepare_call(r, &c, cmds, err);
    }
    pthread_mutex_unlock(&r->lock);
    for (size_t i = 0; e == ES_OK && i < n; i++)
        if (c.pend[i].command_id)
            e = send_command(r, &c, i, &cmds[i], err);
    if (e == ES_OK && c.left)
        e = await_delivery(r, &c, cmds, err);
    if (e == ES_OK && c.left)
        e = await_replies(r, &c, cmds, err);
    pthread_mutex_lock(&r->lock);
    finish_call(r, &c);
    pthread_mutex_unlock(&r->lock);
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; e == ES_OK && k < results[i].n_events; k++)
            results[i].events[k]->partition = c.pend[i].partition;
        if (e != ES_OK)
            es_result_clear(&results[i]);
    }
    free(c.pend);
    return e;
}

static es_err remote_execute(es_executor *x, const es_command_t *cmds, size_t n,
                             es_result_t *results, const es_stop_t *stop, es_error_t *err) {
    return es_remote_execute((es_remote_t *)x, cmds, n, results, stop, err);
}

static void remote_destroy(es_executor *x) {
    es_remote_destroy((es_remote_t *)x);
}

static const es_executor_ops remote_ops = {remote_execute, remote_destroy};

es_err es_remote_executor_new(const es_config_t *cfg, es_executor **out, es_error_t *err) {
    es_remote_t *r = NULL;
    *out = NULL;
    es_err e = es_remote_new(cfg, &r, err);
    if (e == ES_OK) {
        r->base.ops = &remote_ops;
        *out = &r->base;
    }
    return e;
}
