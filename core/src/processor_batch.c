/*
 * One batch of the command processor (processor_int.h): read commands, execute them on the
 * local engine, produce their events and wait for delivery before the local commit, answer,
 * commit the consumer offsets.
 */
#include "processor_int.h"

#include "framing.h"

_Static_assert(sizeof(uintptr_t) >= 8, "delivery report tags pack two 32-bit numbers");

void es_proc_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    es_processor_t *p = opaque;
    uint64_t tag = (uint64_t)(uintptr_t)m->_private; /* batch << 32 | index; side records: all 1s */
    size_t i = (size_t)(tag & 0xffffffffu);
    if (m->err)
        es_mx_add(&p->mx.produce_errors, 1);
    if (m->err && tag == UINT64_MAX)
        p->side_failed = 1;
    if (tag != UINT64_MAX && (uint32_t)(tag >> 32) == p->prod_gen && i < p->n_prod) {
        p->prod[i].done = 1;
        p->prod[i].err = m->err;
        p->prod[i].offset = m->offset;
    }
}

static int32_t reply_partition(const rd_kafka_message_t *m) {
    es_kafka_headers_t h;
    es_kafka_message_headers(m, &h); /* another header malformed does not matter here */
    return h.reply_partition >= 0 ? h.reply_partition : RD_KAFKA_PARTITION_UA;
}

static void slot_fail(slot *s, es_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void slot_fail(slot *s, es_err code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    s->fail = code;
    vsnprintf(s->reason, sizeof s->reason, fmt, ap);
    va_end(ap);
    es_escape_in_place(s->reason, sizeof s->reason); /* it quotes the record's fields */
}

/* A topic the processor may answer on: "<name>.replies", a legal Kafka topic name. Whoever
 * writes a command must not make the processor write into a log (an events topic, say). */
static int is_reply_topic(const char *t) {
    size_t len = strlen(t), suffix = strlen(".replies");
    if (len <= suffix || len > 249 || strcmp(t + len - suffix, ".replies"))
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= 'A' && t[i] <= 'Z') ||
              (t[i] >= '0' && t[i] <= '9') || t[i] == '.' || t[i] == '_' || t[i] == '-'))
            return 0;
    return 1;
}

/* The slot's metadata with its execute span: the one the caller's side made (the envelope's
 * traceparent), or the root of a new trace for an envelope without a valid one. */
static es_err trace_slot(slot *s) {
    const Eskit__V1__CommandEnvelope *env = s->env;
    if (!(s->md = calloc(env->n_metadata + 3, sizeof *s->md)))
        return ES_ENOMEM;
    for (size_t i = 0; i < env->n_metadata; i++)
        s->md[i] = (es_kv_t){env->metadata[i]->key, env->metadata[i]->value};
    if (!es_trace_read(s->md, env->n_metadata, &s->trace))
        es_trace_start(NULL, 0, &s->trace);
    /* in place: each entry kept moves down or stays, the trace keys go after them */
    s->n_md = es_trace_metadata(s->md, env->n_metadata, &s->trace, s->md, s->tp);
    return ES_OK;
}

/* Decodes one record into a command; a record that does not decode is the command's error. */
static void decode_slot(es_processor_t *p, slot *s) {
    const rd_kafka_message_t *m = s->m;
    s->cmd = -1;
    s->type = es_proc_type_of_topic(p, rd_kafka_topic_name(m->rkt), "commands");
    s->reply_partition = reply_partition(m);
    s->env = eskit__v1__command_envelope__unpack(NULL, m->len, m->payload);
    if (!s->env)
        return;
    const Eskit__V1__CommandEnvelope *env = s->env;
    if (trace_slot(s) != ES_OK)
        return slot_fail(s, ES_ENOMEM, "out of memory decoding command %s", env->command_id);
    if (env->reply_to && *env->reply_to && !is_reply_topic(env->reply_to) && s->type < p->n_types)
        return slot_fail(s, ES_EINVAL,
                         "command %.64s: reply_to '%.64s' is not a replies topic "
                         "('<name>.replies', [A-Za-z0-9._-]); answered on %s.replies instead",
                         env->command_id, env->reply_to, type_name(p, s->type));
    size_t t = 0;
    for (; t < p->n_types && strcmp(type_name(p, t), env->aggregate_type); t++)
        ;
    if (t == p->n_types || t != s->type)
        return slot_fail(s, ES_EUNKNOWN_TYPE,
                         "aggregate type '%s' is not served by the processor of %s; register it "
                         "on the processor's engine",
                         env->aggregate_type, rd_kafka_topic_name(m->rkt));
    const ProtobufCMessageDescriptor *d = es_pb_find(p->types[t].def->commands, env->command_type);
    if (!d)
        return slot_fail(s, ES_EUNKNOWN_TYPE, "command type '%s' is not among the commands of %s",
                         env->command_type, env->aggregate_type);
    s->msg = protobuf_c_message_unpack(d, NULL, env->payload.len, env->payload.data);
    if (!s->msg)
        return slot_fail(s, ES_EDECODE, "the payload of command %s is not a valid %s",
                         env->command_id, env->command_type);
    s->cmd = 0; /* executable; numbered by the caller */
}

static void slot_free(slot *s) {
    free(s->reply);
    es_snapshot_free(s->snap);
    if (s->msg)
        protobuf_c_message_free_unpacked(s->msg, NULL);
    if (s->env)
        eskit__v1__command_envelope__free_unpacked(s->env, NULL);
    free(s->md);
}

static es_err reserve_prod(es_processor_t *p, size_t n, es_error_t *err) {
    if (n > p->cap_prod) {
        produced *pr = realloc(p->prod, n * sizeof *pr);
        if (!pr)
            return es_fail(err, ES_ENOMEM, "out of memory producing %zu events", n);
        p->prod = pr;
        p->cap_prod = n;
    }
    return ES_OK;
}

/* Produces one event of a command whose fingerprint is fp: the envelope carries it, so that a
 * state store rebuilt from the log still knows what the command asked. */
static es_err produce_event(es_processor_t *p, size_t type, int32_t partition, const es_event_t *ev,
                            const es_fingerprint_t *fp, es_error_t *err) {
    const char *topic = p->types[type].events_topic;
    es_buf_t b = {0};
    es_err e = es_envelope_pack_caused(ev, fp, &b, err);
    if (e == ES_OK && es_registry_framing(p->registry))
        e = es_frame_wrap(&b, p->envelope_ids[type], err);
    if (e != ES_OK) {
        es_buf_free(&b);
        return e;
    }
    size_t i = p->n_prod++;
    p->prod[i] = (produced){type, partition, -1, 0, RD_KAFKA_RESP_ERR_NO_ERROR};
    uintptr_t tag = (uintptr_t)((uint64_t)p->prod_gen << 32 | i); /* see dr_cb */
    e = es_kafka_produce_event(p->producer, topic, partition, ev, b.data, b.len, (void *)tag, err);
    if (e != ES_OK) {
        p->n_prod--;
        es_mx_add(&p->mx.produce_errors, 1);
    }
    return e;
}

/*
 * The batch was decided on the state store, which reflects its events partition up to the
 * checkpoint (es_meta); the decisions hold only if nothing else was appended there since, so the
 * batch's own events must be exactly the records [checkpoint, checkpoint + count). A record of
 * another writer in between (a zombie, the next owner after a rebalance, or a failed batch's
 * events delivered late) was never folded in; moving the checkpoint past it would leave it out
 * of the store for good, and the store would then decide from a history the log does not have (a
 * retried command executed again on an old state, or refused without its command id). The batch
 * fails instead and is read again after a es_proc_restore, which imports that record and this
 * batch's own events with their command ids. Transactions put control records between batches, so
 * the check does not apply to them.
 */
static es_err check_sole_writer(es_processor_t *p, es_log_t *log, const span *sp, es_error_t *err) {
    char key[TOPIC_MAX + 32], val[32];
    int found = 0;
    if (p->transactional)
        return ES_OK;
    es_proc_offset_key(key, sizeof key, type_name(p, sp->type), sp->partition);
    es_err e = log->store->get_meta(log, key, val, sizeof val, &found, err);
    int64_t next = found ? strtoll(val, NULL, 10) : 0;
    if (e == ES_OK && (sp->first != next || sp->last - sp->first + 1 != sp->count))
        e = es_fail(err, ES_ERETRY,
                    "%s.events partition %d: the batch's %lld event(s) went to offsets "
                    "%lld..%lld but the state store reflects the partition up to %lld: another "
                    "writer appended in between; the batch is read again after a restore",
                    type_name(p, sp->type), (int)sp->partition, (long long)sp->count,
                    (long long)sp->first, (long long)sp->last, (long long)next);
    return e;
}

/* Waits for every event's acknowledgement; records where each events partition now ends. */
static es_err await_events(es_processor_t *p, es_log_t *log, es_error_t *err) {
    char fatal[256];
    rd_kafka_flush(p->producer, FLUSH_TIMEOUT_MS);
    es_proc_settle(p, 0); /* the flush took the last batch's replies along */
    if (rd_kafka_fatal_error(p->producer, fatal, sizeof fatal))
        return es_fail(err, ES_ESTATE,
                       "the events producer failed for good (%s); nothing of the batch was "
                       "committed: destroy the processor and create a new one",
                       fatal);
    for (size_t i = 0; i < p->n_prod; i++) {
        const produced *pr = &p->prod[i];
        if (pr->done && !pr->err)
            continue;
        char what[TOPIC_MAX + 96];
        snprintf(what, sizeof what, "producing events to %s.events partition %d",
                 type_name(p, pr->type), (int)pr->partition);
        return es_kafka_fail(p->producer, pr->done ? pr->err : RD_KAFKA_RESP_ERR__TIMED_OUT, NULL,
                             err, "%s", what);
    }
    /* The span of each events partition the batch wrote to: a batch touches only partitions it
     * owns, so the list of distinct ones stays short. */
    span *spans = malloc((p->n_prod ? p->n_prod : 1) * sizeof *spans);
    if (!spans)
        return es_fail(err, ES_ENOMEM, "out of memory recording %zu events' offsets", p->n_prod);
    size_t n_spans = 0;
    for (size_t i = 0; i < p->n_prod; i++) {
        const produced *pr = &p->prod[i];
        size_t k = 0;
        while (k < n_spans && !(spans[k].type == pr->type && spans[k].partition == pr->partition))
            k++;
        if (k == n_spans)
            spans[n_spans++] = (span){pr->type, pr->partition, pr->offset, pr->offset, 0};
        span *sp = &spans[k];
        sp->first = pr->offset < sp->first ? pr->offset : sp->first;
        sp->last = pr->offset > sp->last ? pr->offset : sp->last;
        sp->count++;
    }
    es_err e = ES_OK;
    for (size_t k = 0; e == ES_OK && k < n_spans; k++) {
        e = check_sole_writer(p, log, &spans[k], err);
        if (e == ES_OK)
            e = es_proc_save_next(log, type_name(p, spans[k].type), spans[k].partition,
                                  spans[k].last + 1, err);
    }
    free(spans);
    return e;
}

/* The consumer offsets after the batch: the next record of every partition in it. */
static rd_kafka_topic_partition_list_t *batch_offsets(es_processor_t *p) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(4);
    for (size_t i = 0; i < p->n_batch; i++) {
        const rd_kafka_message_t *m = p->batch[i];
        rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_find(l, rd_kafka_topic_name(m->rkt), m->partition);
        if (!tp)
            tp = rd_kafka_topic_partition_list_add(l, rd_kafka_topic_name(m->rkt), m->partition);
        tp->offset = m->offset + 1;
    }
    return l;
}

static es_err commit_transaction(es_processor_t *p, es_error_t *err) {
    rd_kafka_topic_partition_list_t *offs = batch_offsets(p);
    rd_kafka_consumer_group_metadata_t *md = rd_kafka_consumer_group_metadata(p->consumer);
    rd_kafka_error_t *ke =
        rd_kafka_send_offsets_to_transaction(p->producer, offs, md, REQUEST_TIMEOUT_MS);
    rd_kafka_consumer_group_metadata_destroy(md);
    rd_kafka_topic_partition_list_destroy(offs);
    if (!ke)
        ke = rd_kafka_commit_transaction(p->producer, REQUEST_TIMEOUT_MS);
    if (!ke)
        return ES_OK;
    es_err e = es_kafka_fail_error(p->producer, ke, NULL, err,
                                   "committing the Kafka transaction of a batch");
    rd_kafka_error_t *ae = rd_kafka_abort_transaction(p->producer, REQUEST_TIMEOUT_MS);
    if (ae)
        rd_kafka_error_destroy(ae);
    return e;
}

/* Keeps the snapshot the engine wrote in this transaction at the command's version, for
 * send_snapshot after the commit: read now, it comes from the log's write cache rather than
 * from the database. Best effort: a missing snapshot only makes a later load read more events. */
static void keep_snapshot(es_log_t *log, slot *s, const es_result_t *r) {
    if (log->store->get_snapshot(log, s->env->aggregate_type, s->env->aggregate_id, &s->snap,
                                 NULL) == ES_OK &&
        s->snap->version != r->version) {
        es_snapshot_free(s->snap);
        s->snap = NULL;
    }
}

static void pack_reply(const es_processor_t *p, slot *s, const es_result_t *r);

typedef struct hook_ctx {
    es_processor_t *p;
    slot *slots;
    size_t n_slots;
} hook_ctx;

/* The engine's pre-commit hook: the batch's new events reach Kafka before the local commit. */
static es_err produce_events(void *opaque, es_log_t *log, const es_command_t *cmds,
                             const es_result_t *res, size_t n, es_error_t *err) {
    hook_ctx *h = opaque;
    es_processor_t *p = h->p;
    es_fingerprinter_t fingerprinter = {0};
    size_t total = 0;
    (void)cmds;
    for (size_t i = 0; i < n; i++)
        if (res[i].outcome == ES_OUTCOME_ACCEPTED && !res[i].duplicate)
            total += res[i].n_events;
    p->n_prod = 0;
    p->prod_gen++;
    es_err e = reserve_prod(p, total, err);
    if (e == ES_OK && p->transactional) {
        rd_kafka_error_t *ke = rd_kafka_begin_transaction(p->producer);
        if (ke)
            e = es_kafka_fail_error(p->producer, ke, NULL, err, "beginning a Kafka transaction");
    }
    for (size_t i = 0; e == ES_OK && i < h->n_slots; i++) {
        slot *s = &h->slots[i];
        if (s->cmd < 0)
            continue;
        const es_result_t *r = &res[s->cmd];
        if (r->outcome != ES_OUTCOME_ACCEPTED || r->duplicate)
            continue;
        es_fingerprint_t fp; /* what the engine recorded with the command id */
        if (r->n_events && es_fingerprint_of(&fingerprinter, s->msg, &fp) != ES_OK)
            e = es_fail(err, ES_ENOMEM, "out of memory packing command %s", r->command_id);
        for (size_t k = 0; e == ES_OK && k < r->n_events; k++)
            e = produce_event(p, s->type, s->m->partition, r->events[k], &fp, err);
        s->last_prod = p->n_prod - 1;
        if (e == ES_OK && r->n_events)
            keep_snapshot(log, s, r);
    }
    es_fingerprinter_free(&fingerprinter);
    /* The replies are packed while the events are in flight; they are sent after the local
     * commit (answer_and_commit), and never when the batch fails. */
    for (size_t i = 0; e == ES_OK && i < h->n_slots; i++)
        if (h->slots[i].env)
            pack_reply(p, &h->slots[i], h->slots[i].cmd >= 0 ? &res[h->slots[i].cmd] : NULL);
    if (e == ES_OK)
        e = await_events(p, log, err);
    if (e == ES_OK && p->transactional)
        e = commit_transaction(p, err);
    else if (e != ES_OK && p->transactional) {
        rd_kafka_error_t *ae = rd_kafka_abort_transaction(p->producer, REQUEST_TIMEOUT_MS);
        if (ae)
            rd_kafka_error_destroy(ae);
    }
    return e;
}

/* Best effort: a full queue (brokers away) is waited on for SIDE_FLUSH_MS, then the record is
 * dropped with a warning rather than holding the processor. Takes buf. */
static void side_produce(es_processor_t *p, es_kafka_kind kind, const char *topic,
                         int32_t partition, const char *key, uint8_t *buf, size_t len) {
    es_kafka_record_t r = {.kind = kind,
                           .topic = topic,
                           .partition = partition,
                           .key = key,
                           .value = buf,
                           .len = len,
                           .opaque = (void *)(uintptr_t)UINT64_MAX, /* see dr_cb */
                           .queue_wait_ms = SIDE_FLUSH_MS};
    es_error_t err;
    if (es_kafka_produce(p->side, &r, &err) != ES_OK) {
        p->side_failed = 1;
        es_mx_add(&p->mx.produce_errors, 1);
        es_logf(p->cfg, ES_LOG_WARNING, "command processor: %s", err.message);
    } else if (kind == ES_KAFKA_REPLY) {
        es_mx_add(&p->mx.replies, 1);
    }
}

/* The aggregate's snapshot, when the local commit wrote one at the command's version. */
static void send_snapshot(es_processor_t *p, const slot *s) {
    const es_snapshot_t *snap = s->snap;
    const char *type = s->env->aggregate_type, *id = s->env->aggregate_id;
    if (snap) {
        Eskit__V1__Snapshot msg = ESKIT__V1__SNAPSHOT__INIT;
        msg.aggregate_type = (char *)type;
        msg.aggregate_id = (char *)id;
        msg.version = snap->version;
        msg.state_type = (char *)snap->state_type;
        msg.state = (ProtobufCBinaryData){snap->state_len, (uint8_t *)snap->state};
        msg.taken_at_us = snap->taken_at_us;
        msg.events_offset = p->prod[s->last_prod].offset;
        size_t len = eskit__v1__snapshot__get_packed_size(&msg);
        uint8_t *buf = malloc(len ? len : 1);
        if (buf) {
            eskit__v1__snapshot__pack(&msg, buf);
            side_produce(p, ES_KAFKA_SNAPSHOT, p->types[s->type].snapshots_topic, s->m->partition,
                         id, buf, len);
        } else {
            p->side_failed = 1;
        }
    }
}

/* Packs the answer to one command for its reply_to topic into s->reply; r NULL: the slot's own
 * failure. Left NULL when the command asked for no reply (or out of memory). */
static void pack_reply(const es_processor_t *p, slot *s, const es_result_t *r) {
    Eskit__V1__CommandReply rep = ESKIT__V1__COMMAND_REPLY__INIT;
    const Eskit__V1__CommandEnvelope *env = s->env;
    size_t n = r ? r->n_events : 0;
    char **ids = calloc(n + 1, sizeof *ids);
    ProtobufCBinaryData *evs = calloc(n + 1, sizeof *evs);
    s->reply_to = env->reply_to ? env->reply_to : "";
    if (*s->reply_to && !is_reply_topic(s->reply_to)) { /* refused by decode_slot: answer here */
        snprintf(s->fallback, sizeof s->fallback, "%s.replies",
                 s->type < p->n_types ? type_name(p, s->type) : "");
        s->reply_to = s->type < p->n_types ? s->fallback : "";
    }
    if (!*s->reply_to || !ids || !evs)
        goto out;
    rep.command_id = env->command_id;
    rep.aggregate_type = env->aggregate_type;
    rep.aggregate_id = env->aggregate_id;
    rep.outcome = r ? (Eskit__V1__Outcome)r->outcome : ESKIT__V1__OUTCOME__OUTCOME_ERROR;
    rep.code = r ? r->code : s->fail;
    rep.reason = r ? (r->reason ? r->reason : "") : (char *)s->reason;
    if (s->md) { /* the command's span */
        rep.traceparent = (char *)s->tp;
        rep.tracestate = (char *)(s->trace.tracestate ? s->trace.tracestate : "");
    }
    if (r) {
        rep.first_version = r->first_version;
        rep.last_version = r->last_version;
        rep.version = r->version;
        rep.duplicate = r->duplicate;
    }
    for (size_t i = 0; i < n; i++) {
        ids[i] = r->events[i]->event_id;
        if (es_envelope_encode_made(r->events[i], &evs[i].data, &evs[i].len, NULL) != ES_OK)
            goto out;
    }
    rep.n_event_ids = rep.n_events = n;
    rep.event_ids = ids;
    rep.events = evs;
    size_t len = eskit__v1__command_reply__get_packed_size(&rep);
    if ((s->reply = malloc(len ? len : 1))) {
        eskit__v1__command_reply__pack(&rep, s->reply);
        s->reply_len = len;
    }
out:
    for (size_t i = 0; evs && i < n; i++)
        free(evs[i].data);
    free(evs);
    free(ids);
}

/* Runs inside rd_kafka_consumer_poll when an offset commit completes. */
void es_proc_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t e, rd_kafka_topic_partition_list_t *offs,
                       void *opaque) {
    es_processor_t *p = opaque;
    (void)rk, (void)offs;
    if (e && e != RD_KAFKA_RESP_ERR__NO_OFFSET)
        es_logf(p->cfg, ES_LOG_WARNING,
                "command processor: committing consumer offsets: %s (harmless: those commands "
                "are answered again, as duplicates)",
                rd_kafka_err2str(e));
}

/* Makes the batch's records come again: its partitions es_proc_restore, the consumer seeks back. */
static void redo_batch(es_processor_t *p) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(4);
    for (size_t i = 0; i < p->n_batch; i++) {
        const rd_kafka_message_t *m = p->batch[i];
        const char *topic = rd_kafka_topic_name(m->rkt);
        owned *o = es_proc_find_owned(p, es_proc_type_of_topic(p, topic, "commands"), m->partition);
        if (o)
            o->restored = 0;
        if (!rd_kafka_topic_partition_list_find(l, topic, m->partition))
            rd_kafka_topic_partition_list_add(l, topic, m->partition)->offset = m->offset;
    }
    rd_kafka_error_t *ke = rd_kafka_seek_partitions(p->consumer, l, REQUEST_TIMEOUT_MS);
    if (ke) {
        es_logf(p->cfg, ES_LOG_ERROR, "command processor: seeking back after a failed batch: %s",
                rd_kafka_error_string(ke));
        rd_kafka_error_destroy(ke);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

es_err es_proc_ensure_restored(es_processor_t *p, es_error_t *err) {
    for (size_t i = 0; i < p->n_batch; i++) {
        const rd_kafka_message_t *m = p->batch[i];
        const char *topic = rd_kafka_topic_name(m->rkt);
        es_proc_add_owned(p, topic, m->partition);
        owned *o = es_proc_find_owned(p, es_proc_type_of_topic(p, topic, "commands"), m->partition);
        if (!o)
            return es_fail(err, ES_ENOMEM, "out of memory tracking partitions");
        if (!o->restored) {
            es_err e = es_proc_restore(p, o, err);
            if (e != ES_OK)
                return e;
        }
    }
    return ES_OK;
}

static es_err execute_slots(es_processor_t *p, slot *slots, es_command_t *cmds,
                            es_result_t *results, size_t *n_cmds, es_error_t *err) {
    *n_cmds = 0;
    for (size_t i = 0; i < p->n_batch; i++) {
        slot *s = &slots[i];
        s->m = p->batch[i];
        decode_slot(p, s);
        if (s->cmd < 0) {
            if (!s->env)
                es_logf(p->cfg, ES_LOG_WARNING,
                        "command processor: %s partition %d offset %lld is not a "
                        "CommandEnvelope; skipped",
                        rd_kafka_topic_name(s->m->rkt), (int)s->m->partition,
                        (long long)s->m->offset);
            continue;
        }
        const Eskit__V1__CommandEnvelope *env = s->env;
        s->cmd = (long)*n_cmds;
        cmds[(*n_cmds)++] = (es_command_t){env->aggregate_type,
                                           env->aggregate_id,
                                           s->msg,
                                           env->command_id,
                                           *env->correlation_id ? env->correlation_id : NULL,
                                           (es_expect)env->expectation,
                                           env->expected_version,
                                           env->deadline_us,
                                           s->md,
                                           s->n_md};
    }
    hook_ctx h = {p, slots, p->n_batch};
    return es_engine_execute_hooked(p->local, cmds, *n_cmds, results, produce_events, &h, err);
}

static void warn_unsent(es_processor_t *p) {
    es_logf(p->cfg, ES_LOG_WARNING,
            "command processor: replies or snapshots unsent after %d ms; callers retry with the "
            "same command id",
            SIDE_FLUSH_MS);
}

/* Asynchronous: a commit that fails or is lost is harmless (the commands come again and are
 * answered as duplicates), so the next batch need not wait for the coordinator. */
static void commit_offsets(es_processor_t *p, rd_kafka_topic_partition_list_t *offs) {
    rd_kafka_resp_err_t ke = rd_kafka_commit(p->consumer, offs, 1);
    if (ke)
        es_proc_commit_cb(p->consumer, ke, offs, p);
    rd_kafka_topic_partition_list_destroy(offs);
}

void es_proc_settle(es_processor_t *p, int wait_ms) {
    if (!p->unsettled)
        return;
    int late = 0;
    if (rd_kafka_outq_len(p->side) > 0) {
        late = es_now_us() / 1000 - p->unsettled_ms >= SIDE_FLUSH_MS;
        if (!late &&
            (wait_ms <= 0 || rd_kafka_flush(p->side, wait_ms) != RD_KAFKA_RESP_ERR_NO_ERROR))
            return;
        if (late)
            warn_unsent(p);
    }
    rd_kafka_topic_partition_list_t *offs = p->unsettled;
    p->unsettled = NULL;
    es_proc_cover_snapshots(p, !late && !p->side_failed);
    commit_offsets(p, offs);
}

/* The replies and snapshots go out now; the offsets wait for their acknowledgements, and so does
 * the next batch's local commit (the same producer's flush), not its decisions: the next batch
 * is read and executed meanwhile (es_processor_poll settles first when no command waits). */
static void answer_and_commit(es_processor_t *p, slot *slots, const es_result_t *results) {
    es_proc_settle(p, SIDE_FLUSH_MS); /* a failed batch's predecessor, at most one waits */
    if (p->unsettled)                 /* its snapshots' delivery is unknown: they cover nothing */
        es_proc_cover_snapshots(p, 0);
    p->side_failed = 0;
    for (size_t i = 0; i < p->n_batch; i++)
        send_snapshot(p, &slots[i]);
    for (size_t i = 0; i < p->n_batch; i++) /* side_produce takes the reply */
        if (slots[i].reply) {
            side_produce(p, ES_KAFKA_REPLY, slots[i].reply_to, slots[i].reply_partition,
                         slots[i].env->command_id, slots[i].reply, slots[i].reply_len);
            slots[i].reply = NULL;
        }
    es_proc_note_snapshots(p, slots, p->n_batch, results);
    if (p->transactional) {
        int unsent = rd_kafka_flush(p->side, SIDE_FLUSH_MS) != 0;
        if (unsent)
            warn_unsent(p);
        es_proc_cover_snapshots(p, !unsent && !p->side_failed);
        return;
    }
    if (p->unsettled) /* could not settle: commit rather than lose them */
        commit_offsets(p, p->unsettled);
    p->unsettled = batch_offsets(p);
    p->unsettled_ms = es_now_us() / 1000;
}

void es_proc_drop_batch(es_processor_t *p) {
    for (size_t i = 0; i < p->n_batch; i++)
        rd_kafka_message_destroy(p->batch[i]);
    p->n_batch = 0;
}

es_err es_proc_process_batch(es_processor_t *p, size_t *handled, es_error_t *err) {
    size_t n = p->n_batch, n_cmds = 0;
    slot *slots = calloc(n, sizeof *slots);
    es_command_t *cmds = calloc(n, sizeof *cmds);
    es_result_t *results = calloc(n, sizeof *results);
    es_err e = slots && cmds && results ? ES_OK : es_fail(err, ES_ENOMEM, "out of memory");
    p->in_batch = 1;
    if (e == ES_OK)
        e = es_proc_ensure_restored(p, err);
    if (e == ES_OK)
        e = execute_slots(p, slots, cmds, results, &n_cmds, err);
    if (e == ES_OK) {
        answer_and_commit(p, slots, results);
        bump(&p->stats.commands, n);
        if (handled)
            *handled += n;
    } else {
        redo_batch(p);
    }
    for (size_t i = 0; i < n_cmds; i++)
        es_result_clear(&results[i]);
    for (size_t i = 0; slots && i < n; i++)
        slot_free(&slots[i]);
    free(slots);
    free(cmds);
    free(results);
    es_proc_drop_batch(p);
    p->in_batch = 0;
    return e;
}
