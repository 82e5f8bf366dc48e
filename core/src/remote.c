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
 * Calls serialize on one mutex: one thread at a time produces and waits.
 * Documented differences from the embedded engine: es_execute_batch is atomic
 * per command, not per batch (its commands may land on different partitions
 * and owners), and the returned events carry their partition but offset -1
 * (a reply does not carry Kafka offsets).
 */
#include "engine_int.h"
#include "eskit/v1/command.pb-c.h"
#include "eskit/v1/reply.pb-c.h"
#include "lru.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQUEST_TIMEOUT_MS 10000 /* metadata, watermarks, a command's delivery */
#define WAIT_MS 10               /* fetch.wait.max.ms: replies are waited for */

typedef struct reply_topic {
    char *type;
    int32_t partition;
} reply_topic;

/* One command of the call in flight. */
typedef struct pending {
    const char *command_id;
    int32_t partition; /* of "<type>.commands", from its delivery report */
    int sent, answered;
    rd_kafka_resp_err_t err;
} pending;

struct es_remote {
    const es_config_t *cfg; /* first: es_kafka_conf's log callbacks find it here */
    pthread_mutex_t lock;
    rd_kafka_t *producer, *consumer;
    uint32_t instance;
    reply_topic *replies;
    size_t n_replies;
    rd_kafka_topic_partition_list_t *assigned; /* offset = next reply to read */
    pending *pend;
    size_t n_pend, cap_pend;
    es_lru_t *by_id; /* index + 1 into pend by command id, for the call in flight */
    size_t by_id_cap;
};

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    es_remote_t *r = opaque;
    size_t i = (size_t)(uintptr_t)m->_private;
    if (i < r->n_pend) {
        r->pend[i].sent = 1;
        r->pend[i].err = m->err;
        r->pend[i].partition = m->partition;
    }
}

static es_err new_handle(es_remote_t *r, rd_kafka_type_t type, rd_kafka_t **out, es_error_t *err) {
    char group[320], errstr[256];
    rd_kafka_conf_t *conf = NULL;
    snprintf(group, sizeof group, "%s.eskit-replies", es_config_get(r->cfg, "service.name"));
    es_err e =
        es_kafka_conf(r->cfg, type == RD_KAFKA_CONSUMER ? group : NULL, 0, WAIT_MS, r, &conf, err);
    if (e != ES_OK)
        return e;
    if (type == RD_KAFKA_PRODUCER) {
        rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    } else if (rd_kafka_conf_set(conf, "auto.offset.reset", "latest", errstr, sizeof errstr) !=
               RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return es_fail(err, ES_EINVAL, "Kafka setting auto.offset.reset: %s", errstr);
    }
    if (!(*out = rd_kafka_new(type, conf, errstr, sizeof errstr))) {
        rd_kafka_conf_destroy(conf);
        return es_fail(err, ES_EKAFKA, "cannot make a Kafka %s for %s: %s",
                       type == RD_KAFKA_CONSUMER ? "reply consumer" : "command producer",
                       es_config_get(r->cfg, "brokers"), errstr);
    }
    if (type == RD_KAFKA_CONSUMER)
        rd_kafka_poll_set_consumer(*out);
    return ES_OK;
}

es_err es_remote_new(const es_config_t *cfg, es_remote_t **out, es_error_t *err) {
    es_remote_t *r = calloc(1, sizeof *r);
    char id[ES_UUID_STR_LEN + 1];
    *out = NULL;
    if (!r)
        return es_fail(err, ES_ENOMEM, "out of memory creating a Kafka engine");
    r->cfg = cfg;
    pthread_mutex_init(&r->lock, NULL);
    es_uuid7(id); /* its random tail: the instance id */
    for (const char *p = id + 24; *p; p++)
        r->instance = r->instance * 16 + (uint32_t)(*p <= '9' ? *p - '0' : *p - 'a' + 10);
    *out = r;
    return ES_OK;
}

void es_remote_destroy(es_remote_t *r) {
    if (!r)
        return;
    if (r->producer) {
        rd_kafka_purge(r->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(r->producer, 0);
        rd_kafka_destroy(r->producer);
    }
    if (r->consumer)
        rd_kafka_destroy_flags(r->consumer, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    if (r->assigned)
        rd_kafka_topic_partition_list_destroy(r->assigned);
    for (size_t i = 0; i < r->n_replies; i++)
        free(r->replies[i].type);
    free(r->replies);
    free(r->pend);
    es_lru_destroy(r->by_id);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

static es_err kafka_fail(es_remote_t *r, rd_kafka_resp_err_t e, es_error_t *err, const char *what,
                         const char *topic) {
    return es_fail(err, e == RD_KAFKA_RESP_ERR__TIMED_OUT ? ES_ETIMEOUT : ES_EKAFKA,
                   "%s %s: %s (brokers %s)%s", what, topic, rd_kafka_err2str(e),
                   es_config_get(r->cfg, "brokers"),
                   e == RD_KAFKA_RESP_ERR__TIMED_OUT ? "; are the brokers up?" : "");
}

/* From a listing of every topic: asking for one by name could make the broker create it. */
static es_err topic_partitions(es_remote_t *r, const char *topic, int32_t *n, es_error_t *err) {
    const struct rd_kafka_metadata *md = NULL;
    *n = 0;
    rd_kafka_resp_err_t e = rd_kafka_metadata(r->consumer, 1, NULL, &md, REQUEST_TIMEOUT_MS);
    if (e)
        return kafka_fail(r, e, err, "reading the partitions of", topic);
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

/* The replies partition of type this engine reads, assigned at its end on first use. */
static es_err reply_partition(es_remote_t *r, const char *type, int32_t *out, es_error_t *err) {
    for (size_t i = 0; i < r->n_replies; i++)
        if (!strcmp(r->replies[i].type, type)) {
            *out = r->replies[i].partition;
            return ES_OK;
        }
    char topic[ES_MAX_TYPE_LEN + 16];
    int32_t parts = 0;
    int64_t lo = 0, hi = 0;
    snprintf(topic, sizeof topic, "%s.replies", type);
    es_err e = topic_partitions(r, topic, &parts, err);
    if (e != ES_OK)
        return e;
    int32_t p = (int32_t)(r->instance % (uint32_t)parts);
    rd_kafka_resp_err_t ke =
        rd_kafka_query_watermark_offsets(r->consumer, topic, p, &lo, &hi, REQUEST_TIMEOUT_MS);
    if (ke)
        return kafka_fail(r, ke, err, "reading the end offset of", topic);
    reply_topic *rt = realloc(r->replies, (r->n_replies + 1) * sizeof *rt);
    if (!rt)
        return es_fail(err, ES_ENOMEM, "out of memory");
    r->replies = rt;
    if (!(rt[r->n_replies].type = strdup(type)))
        return es_fail(err, ES_ENOMEM, "out of memory");
    if (!r->assigned)
        r->assigned = rd_kafka_topic_partition_list_new(4);
    rd_kafka_topic_partition_list_add(r->assigned, topic, p)->offset = hi;
    /* The list holds every partition's next offset, so assigning all of it again loses none. */
    if ((ke = rd_kafka_assign(r->consumer, r->assigned))) {
        rd_kafka_topic_partition_list_del(r->assigned, topic, p);
        free(rt[r->n_replies].type);
        return kafka_fail(r, ke, err, "assigning the replies partition of", topic);
    }
    rt[r->n_replies++].partition = p;
    *out = p;
    return ES_OK;
}

static es_err ensure_handles(es_remote_t *r, es_error_t *err) {
    es_err e = r->producer ? ES_OK : new_handle(r, RD_KAFKA_PRODUCER, &r->producer, err);
    if (e == ES_OK && !r->consumer)
        e = new_handle(r, RD_KAFKA_CONSUMER, &r->consumer, err);
    return e;
}

static es_err reserve_pending(es_remote_t *r, size_t n, es_error_t *err) {
    if (n > r->by_id_cap) { /* sized for the call, so that nothing is ever evicted */
        es_lru_destroy(r->by_id);
        r->by_id_cap = n < 64 ? 64 : n;
        if (!(r->by_id = es_lru_new(r->by_id_cap, NULL, NULL))) {
            r->by_id_cap = 0;
            return es_fail(err, ES_ENOMEM, "out of memory sending %zu commands", n);
        }
    }
    if (n > r->cap_pend) {
        pending *p = realloc(r->pend, n * sizeof *p);
        if (!p)
            return es_fail(err, ES_ENOMEM, "out of memory sending %zu commands", n);
        r->pend = p;
        r->cap_pend = n;
    }
    memset(r->pend, 0, n * sizeof *r->pend);
    r->n_pend = n;
    return ES_OK;
}

/* The checks the owner would make first; a failure is the command's result, as embedded. */
static es_err check_command(const es_command_t *cmd, es_error_t *cerr) {
    es_err rc = es_validate_aggregate_type(cmd->aggregate_type, cerr);
    if (rc == ES_OK)
        rc = es_validate_aggregate_id(cmd->aggregate_id, cerr);
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

/* Encodes and produces one command; the delivery report lands in r->pend[i]. */
static es_err send_command(es_remote_t *r, size_t i, const es_command_t *cmd, int32_t reply_part,
                           es_error_t *err) {
    Eskit__V1__CommandEnvelope env = ESKIT__V1__COMMAND_ENVELOPE__INIT;
    Eskit__V1__CommandEnvelope__MetadataEntry *md = NULL, **mdp = NULL;
    char topic[ES_MAX_TYPE_LEN + 16], reply_to[ES_MAX_TYPE_LEN + 16], part[16];
    size_t plen = protobuf_c_message_get_packed_size(cmd->message);
    uint8_t *payload = malloc(plen ? plen : 1), *buf = NULL;
    if (cmd->n_metadata) {
        md = calloc(cmd->n_metadata, sizeof *md);
        mdp = calloc(cmd->n_metadata, sizeof *mdp);
    }
    es_err e = ES_OK;
    if (!payload || (cmd->n_metadata && (!md || !mdp))) {
        e = es_fail(err, ES_ENOMEM, "out of memory encoding a command");
        goto out;
    }
    protobuf_c_message_pack(cmd->message, payload);
    snprintf(topic, sizeof topic, "%s.commands", cmd->aggregate_type);
    snprintf(reply_to, sizeof reply_to, "%s.replies", cmd->aggregate_type);
    snprintf(part, sizeof part, "%d", (int)reply_part);
    env.command_id = (char *)r->pend[i].command_id;
    env.aggregate_type = (char *)cmd->aggregate_type;
    env.aggregate_id = (char *)cmd->aggregate_id;
    env.expectation = (Eskit__V1__Expectation)cmd->expect;
    env.expected_version = cmd->expected_version;
    env.command_type = (char *)cmd->message->descriptor->name;
    env.payload = (ProtobufCBinaryData){plen, payload};
    env.correlation_id = (char *)(cmd->correlation_id ? cmd->correlation_id : "");
    env.deadline_us = cmd->deadline_us;
    env.reply_to = reply_to;
    for (size_t k = 0; k < cmd->n_metadata; k++) {
        eskit__v1__command_envelope__metadata_entry__init(&md[k]);
        md[k].key = (char *)cmd->metadata[k].key;
        md[k].value = (char *)cmd->metadata[k].value;
        mdp[k] = &md[k];
    }
    env.n_metadata = cmd->n_metadata;
    env.metadata = mdp;
    size_t len = eskit__v1__command_envelope__get_packed_size(&env);
    if (!(buf = malloc(len))) {
        e = es_fail(err, ES_ENOMEM, "out of memory encoding a command");
        goto out;
    }
    eskit__v1__command_envelope__pack(&env, buf);
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(1);
    rd_kafka_header_add(hdrs, "es-reply-partition", -1, part, -1);
    rd_kafka_resp_err_t ke = rd_kafka_producev(
        r->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE),
        RD_KAFKA_V_KEY(cmd->aggregate_id, strlen(cmd->aggregate_id)), RD_KAFKA_V_VALUE(buf, len),
        RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE((void *)(uintptr_t)i), RD_KAFKA_V_END);
    if (ke) {
        rd_kafka_headers_destroy(hdrs);
        e = kafka_fail(r, ke, err, "sending a command to", topic);
        goto out;
    }
    buf = NULL; /* librdkafka frees it */
out:
    free(buf);
    free(payload);
    free(md);
    free(mdp);
    return e;
}

/* Waits for every command's delivery report: a command not written cannot be answered. */
static es_err await_delivery(es_remote_t *r, const es_command_t *cmds, es_error_t *err) {
    rd_kafka_flush(r->producer, REQUEST_TIMEOUT_MS);
    for (size_t i = 0; i < r->n_pend; i++) {
        const pending *p = &r->pend[i];
        if (!p->command_id || (p->sent && !p->err))
            continue;
        char topic[ES_MAX_TYPE_LEN + 16];
        snprintf(topic, sizeof topic, "%s.commands", cmds[i].aggregate_type);
        if (!p->sent)
            return es_fail(err, ES_ETIMEOUT,
                           "command %s to %s was not acknowledged within %d ms (brokers %s); "
                           "it may still execute: retry with the same command id",
                           p->command_id, topic, REQUEST_TIMEOUT_MS,
                           es_config_get(r->cfg, "brokers"));
        return es_fail(err, p->err == RD_KAFKA_RESP_ERR__MSG_TIMED_OUT ? ES_ETIMEOUT : ES_EKAFKA,
                       "command %s to %s failed: %s (brokers %s); retry with the same command id",
                       p->command_id, topic, rd_kafka_err2str(p->err),
                       es_config_get(r->cfg, "brokers"));
    }
    return ES_OK;
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
static es_err fill_result(const Eskit__V1__CommandReply *rep, int32_t partition, es_result_t *res,
                          es_error_t *err) {
    res->outcome =
        rep->outcome >= 1 && rep->outcome <= 4 ? (es_outcome)rep->outcome : ES_OUTCOME_ERROR;
    res->code = code_of(rep);
    res->version = rep->version;
    res->first_version = rep->first_version;
    res->last_version = rep->last_version;
    res->duplicate = rep->duplicate;
    if (rep->reason && *rep->reason && !(res->reason = strdup(rep->reason)))
        return es_fail(err, ES_ENOMEM, "out of memory reading a reply");
    if (!rep->n_events)
        return ES_OK;
    if (!(res->events = calloc(rep->n_events, sizeof *res->events)))
        return es_fail(err, ES_ENOMEM, "out of memory reading a reply");
    for (size_t i = 0; i < rep->n_events; i++) {
        char topic[ES_MAX_TYPE_LEN + 16];
        snprintf(topic, sizeof topic, "%s.replies", rep->aggregate_type);
        es_position_t at = {topic, rep->command_id, -1, -1};
        es_event_t *ev = NULL;
        es_err e = es_envelope_decode(rep->events[i].data, rep->events[i].len, &at, &ev, err);
        if (e != ES_OK)
            return e;
        ev->partition = partition;
        ev->offset = -1; /* the reply does not carry Kafka offsets */
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

/* A reply for one of ours fills its result; others' replies (a shared partition) are skipped. */
static es_err take_reply(es_remote_t *r, const rd_kafka_message_t *m, es_result_t *results,
                         size_t *left, es_error_t *err) {
    Eskit__V1__CommandReply *rep =
        eskit__v1__command_reply__unpack(NULL, m->len, (const uint8_t *)m->payload);
    if (!rep) {
        es_logf(r->cfg, ES_LOG_WARNING, "%s partition %d offset %lld: not a CommandReply; skipped",
                rd_kafka_topic_name(m->rkt), (int)m->partition, (long long)m->offset);
        return ES_OK;
    }
    es_err e = ES_OK;
    size_t at = (size_t)(uintptr_t)es_lru_get(r->by_id, rep->command_id, strlen(rep->command_id));
    size_t i = at && !r->pend[at - 1].answered ? at - 1 : 0;
    for (; i < r->n_pend; i++) { /* scanned only for an id the call holds twice */
        pending *p = &r->pend[i];
        if (!p->command_id || p->answered || strcmp(p->command_id, rep->command_id))
            continue;
        p->answered = 1;
        (*left)--;
        e = fill_result(rep, p->partition, &results[i], err);
        break;
    }
    eskit__v1__command_reply__free_unpacked(rep, NULL);
    return e;
}

static es_err await_replies(es_remote_t *r, const es_command_t *cmds, es_result_t *results,
                            size_t left, int64_t deadline_ms, es_error_t *err) {
    es_err e = ES_OK;
    while (e == ES_OK && left > 0) {
        int64_t wait = deadline_ms - es_now_us() / 1000;
        if (wait <= 0)
            break;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(r->consumer, (int)wait);
        if (!m)
            continue;
        if (m->err) {
            es_logf(r->cfg, ES_LOG_WARNING, "reading replies: %s", rd_kafka_message_errstr(m));
        } else {
            note_offset(r, m);
            e = take_reply(r, m, results, &left, err);
        }
        rd_kafka_message_destroy(m);
    }
    for (size_t i = 0; e == ES_OK && i < r->n_pend; i++)
        if (r->pend[i].command_id && !r->pend[i].answered)
            e = es_fail(err, ES_ETIMEOUT,
                        "no reply to command %s for %s/%s within execute.timeout.ms (%lld ms): "
                        "the command may still execute; retry with the same command id (it is "
                        "then executed at most once), and check that a processor "
                        "(es_processor_run) serves %s.commands",
                        r->pend[i].command_id, cmds[i].aggregate_type, cmds[i].aggregate_id,
                        es_config_get_int(r->cfg, "execute.timeout.ms"), cmds[i].aggregate_type);
    return e;
}

/* Sends every command that passes the local checks; returns how many were sent. */
static es_err send_all(es_remote_t *r, const es_command_t *cmds, size_t n, es_result_t *results,
                       size_t *sent, es_error_t *err) {
    es_err e = ES_OK;
    *sent = 0;
    for (size_t i = 0; e == ES_OK && i < n; i++) {
        const es_command_t *cmd = &cmds[i];
        es_error_t cerr = {0};
        char generated[ES_UUID_STR_LEN + 1];
        int32_t reply_part = 0;
        if (!cmd->command_id || !*cmd->command_id)
            es_uuid7(generated);
        const char *cid = cmd->command_id && *cmd->command_id ? cmd->command_id : generated;
        if (!(results[i].command_id = strdup(cid)))
            return es_fail(err, ES_ENOMEM, "out of memory executing a command");
        es_err c = check_command(cmd, &cerr);
        if (c != ES_OK) {
            if (local_failure(&results[i], c, cerr.message) != ES_OK)
                e = es_fail(err, ES_ENOMEM, "out of memory executing a command");
            continue;
        }
        e = reply_partition(r, cmd->aggregate_type, &reply_part, err);
        r->pend[i].command_id = results[i].command_id;
        const char *id = results[i].command_id;
        if (e == ES_OK && !es_lru_get(r->by_id, id, strlen(id)) &&
            es_lru_put(r->by_id, id, strlen(id), (void *)(uintptr_t)(i + 1)) != 0)
            e = es_fail(err, ES_ENOMEM, "out of memory sending %zu commands", n);
        if (e == ES_OK)
            e = send_command(r, i, cmd, reply_part, err);
        if (e == ES_OK)
            ++*sent;
    }
    return e;
}

es_err es_remote_execute(es_remote_t *r, const es_command_t *cmds, size_t n, es_result_t *results,
                         es_error_t *err) {
    int64_t deadline_ms = es_now_us() / 1000 + es_config_get_int(r->cfg, "execute.timeout.ms");
    size_t sent = 0;
    pthread_mutex_lock(&r->lock);
    memset(results, 0, n * sizeof *results);
    es_err e = ensure_handles(r, err);
    if (e == ES_OK)
        e = reserve_pending(r, n, err);
    if (e == ES_OK)
        e = send_all(r, cmds, n, results, &sent, err);
    if (e == ES_OK && sent)
        e = await_delivery(r, cmds, err);
    if (e == ES_OK && sent)
        e = await_replies(r, cmds, results, sent, deadline_ms, err);
    if (e != ES_OK)
        for (size_t i = 0; i < n; i++)
            es_result_clear(&results[i]);
    r->n_pend = 0;
    if (r->by_id)
        es_lru_clear(r->by_id);
    pthread_mutex_unlock(&r->lock);
    return e;
}
