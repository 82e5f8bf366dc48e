/* The command processor's restore (processor_int.h). */
#include "processor_int.h"

/*
 * Restore brings the local store from its checkpoint (es_meta) to the end of the events
 * partition. It first reads the same partition of "<type>.snapshots" and keeps, per aggregate,
 * the newest well-formed snapshot whose event lies in the range about to be imported; while
 * importing, a snapshot goes into the store in the same transaction as the very event it names
 * (same version, same offset), so it never runs ahead of the store and never follows a history
 * the log-order rule rejected. Aggregates then load from the snapshot plus later events instead
 * of folding their whole history.
 *
 * Events below a snapshot are still imported, all of them: the store answers a redelivered
 * command with its first execution's events (so it needs them, not only their command ids),
 * stream heads and the log-order rule need every version, and the embedded log keeps each
 * stream as a chain of its events. Skipping them would trade exactly-once answers for restore
 * speed. A snapshot only saves folding.
 */

void es_proc_offset_key(char *key, size_t cap, const char *type, int32_t partition) {
    snprintf(key, cap, "kafka.next:%s.events:%d", type, (int)partition);
}

/* The events of one command, consecutive in the partition: recorded as one command, with the
 * fingerprint its first event carries (events from before fingerprints carry none). */
typedef struct cmd_track {
    char id[ES_MAX_ID_LEN + 1];
    char agg[ES_MAX_ID_LEN + 1];
    uint64_t first, last;
    int has_fingerprint;
    es_fingerprint_t fingerprint;
} cmd_track;

static es_err flush_track(es_log_t *log, const char *type, cmd_track *t, es_error_t *err) {
    es_command_record_t rec;
    if (!t->id[0])
        return ES_OK;
    es_err e = log->store->find_command(log, t->id, &rec, err);
    if (e == ES_ENOTFOUND) {
        es_command_record_t nr = {t->id,   type,    t->agg, ES_OUTCOME_ACCEPTED, t->first,
                                  t->last, t->last, NULL,   t->has_fingerprint,  t->fingerprint};
        e = log->store->put_command(log, &nr, err);
    }
    t->id[0] = '\0';
    return e;
}

/* Snapshots by aggregate id: open addressing with linear probing, at most half full. */
typedef struct snap_map {
    Eskit__V1__Snapshot **slots;
    size_t cap, count; /* cap: 0 or a power of two */
} snap_map;

static size_t id_hash(const char *id) {
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 0x100000001b3ULL;
    return (size_t)(h ^ (h >> 29));
}

/* The slot of id: its snapshot, or the empty slot it would take (in a map without slots, a
 * shared empty one: reserve before storing). */
static Eskit__V1__Snapshot **snap_map_slot(const snap_map *m, const char *id) {
    static Eskit__V1__Snapshot *none;
    if (!m->cap)
        return &none;
    size_t i = id_hash(id) & (m->cap - 1);
    while (m->slots[i] && strcmp(m->slots[i]->aggregate_id, id))
        i = (i + 1) & (m->cap - 1);
    return &m->slots[i];
}

/* Room for one more entry; -1 out of memory. */
static int snap_map_reserve(snap_map *m) {
    if (2 * (m->count + 1) <= m->cap)
        return 0;
    snap_map bigger = {calloc(m->cap ? 2 * m->cap : 1024, sizeof *bigger.slots),
                       m->cap ? 2 * m->cap : 1024, m->count};
    if (!bigger.slots)
        return -1;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i])
            *snap_map_slot(&bigger, m->slots[i]->aggregate_id) = m->slots[i];
    free(m->slots);
    *m = bigger;
    return 0;
}

static void snap_map_free(snap_map *m) {
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i])
            eskit__v1__snapshot__free_unpacked(m->slots[i], NULL);
    free(m->slots);
    *m = (snap_map){NULL, 0, 0};
}

typedef struct import_ctx {
    es_processor_t *p;
    es_log_t *log;
    const es_aggregate_def *def;
    const char *type, *topic; /* topic: "<type>.events" */
    int32_t partition;
    int64_t from, to; /* the events this restore imports */
    int64_t next;     /* the next events offset to import */
    size_t in_tx;     /* events imported in the open transaction */
    cmd_track track;
    snap_map snaps; /* the snapshot to import of each aggregate */
    uint64_t imported, skipped, snaps_imported, snaps_malformed, snaps_unused;
    es_order_counts order; /* what the log-order rule met */
} import_ctx;

typedef es_err record_fn(import_ctx *c, const rd_kafka_message_t *m, es_error_t *err);

/* Imports the aggregate's snapshot when ev, just imported from offset, is the event it was
 * taken at. It is newer than anything the store had: the store did not hold ev. */
static es_err import_snapshot(import_ctx *c, const es_event_t *ev, int64_t offset,
                              es_error_t *err) {
    const char *id = ev->aggregate_id;
    Eskit__V1__Snapshot *s = *snap_map_slot(&c->snaps, id);
    if (!s || s->version != ev->version || s->events_offset != offset)
        return ES_OK;
    es_snapshot_t snap = {s->version, s->state_type, s->state.data, s->state.len, s->taken_at_us};
    es_err e = c->log->store->put_snapshot(c->log, c->type, id, &snap, err);
    if (e == ES_OK) {
        c->snaps_imported++;
        s->version = 0; /* taken: matches no event again */
    }
    return e;
}

/* The version the state store holds of ev's aggregate: restore's memory for the log-order
 * rule. */
static es_err stored_version(void *opaque, const es_event_t *ev, uint64_t *last, es_error_t *err) {
    import_ctx *c = opaque;
    return c->log->reader->stream_version(c->log, c->type, ev->aggregate_id, last, err);
}

/* Imports one record when it continues its aggregate, through the read pipeline (readpipe.h)
 * in the restoring writer's role: a stale version is skipped, a gap stops the partition.
 * There is no upcast stage here: the state store is a copy of the log, so it takes the stored
 * bytes as they are (an upcast copy would be a rewrite, and would change with the next
 * deploy's upcasters). The events are upcast where they are folded into state and decided
 * on: the local engine's loads (log_sqlite.c's reads), under the processor's config and so
 * its upcasters. */
static es_err import_record(import_ctx *c, const rd_kafka_message_t *m, es_error_t *err) {
    es_raw_record_t raw = {c->topic, m->partition, m->offset, NULL, m->payload, m->len};
    es_position_t at = {c->topic, NULL, m->partition, m->offset};
    es_event_t *ev = NULL;
    es_error_t derr = {0};
    es_err e = ES_OK;
    if (es_read_decode(&raw, &ev, &e, &derr) != ES_READ_EVENT) {
        es_logf(c->p->cfg, ES_LOG_WARNING, "restore: %s; skipped", derr.message);
        c->skipped++;
        return ES_OK;
    }
    if (strcmp(ev->aggregate_type, c->type) ||
        es_validate_aggregate_id(ev->aggregate_id, NULL) != ES_OK)
        goto skip;
    es_read_pipe pipe = {ES_ORDER_RESTORE, c->p->cfg, stored_version, c, &c->order};
    es_read_result res = es_read_order(&pipe, ev, &at, &e, err);
    if (res == ES_READ_STALE)
        goto skip;
    if (res != ES_READ_EVENT)
        goto out;
    uint64_t v = ev->version - 1; /* the order stage let only the next version through */
    es_log_record_t rec = {ev, m->payload, m->len};
    int64_t pos = 0;
    e = c->log->store->append(c->log, c->type, ev->aggregate_id, v, &rec, 1, &pos, err);
    if (e == ES_OK && c->snaps.count)
        e = import_snapshot(c, ev, m->offset, err);
    if (e != ES_OK)
        goto out;
    c->imported++;
    cmd_track *t = &c->track;
    const char *cid = ev->command_id ? ev->command_id : "";
    if (t->id[0] && !strcmp(t->id, cid) && !strcmp(t->agg, ev->aggregate_id) &&
        t->last + 1 == ev->version) {
        t->last = ev->version;
        goto out;
    }
    e = flush_track(c->log, c->type, t, err);
    if (e == ES_OK && *cid && strlen(cid) <= ES_MAX_ID_LEN) {
        snprintf(t->id, sizeof t->id, "%s", cid);
        snprintf(t->agg, sizeof t->agg, "%s", ev->aggregate_id);
        t->first = t->last = ev->version;
        t->has_fingerprint = es_envelope_fingerprint(ev, &t->fingerprint);
    }
    goto out;
skip:
    if (e == ES_OK)
        c->skipped++;
out:
    es_event_free(ev);
    return e;
}

es_err es_proc_save_next(es_log_t *log, const char *type, int32_t partition, int64_t next,
                         es_error_t *err) {
    char key[TOPIC_MAX + 32], val[32];
    es_proc_offset_key(key, sizeof key, type, partition);
    snprintf(val, sizeof val, "%lld", (long long)next);
    return log->store->put_meta(log, key, val, err);
}

/* Commits the import so far and opens the next transaction. */
static es_err import_checkpoint(import_ctx *c, int64_t next, int reopen, es_error_t *err) {
    es_err e = flush_track(c->log, c->type, &c->track, err);
    if (e == ES_OK)
        e = es_proc_save_next(c->log, c->type, c->partition, next, err);
    if (e == ES_OK)
        e = c->log->store->commit(c->log, err);
    if (e == ES_OK && reopen)
        e = c->log->store->begin(c->log, err);
    return e;
}

typedef struct range_ctx {
    import_ctx *c;
    const char *topic;
    record_fn *fn;
} range_ctx;

static es_err range_record(void *opaque, const rd_kafka_message_t *m, int *stop, es_error_t *err) {
    range_ctx *x = opaque;
    (void)stop;
    return x->fn(x->c, m, err);
}

/* Consumer errors during restore are logged; librdkafka retries, and a partition that stays
 * silent ends in the scan's timeout. */
static es_err range_error(void *opaque, const rd_kafka_message_t *m, int64_t next,
                          es_error_t *err) {
    range_ctx *x = opaque;
    (void)next, (void)err;
    es_logf(x->c->p->cfg, ES_LOG_WARNING, "restore of %s partition %d: %s", x->topic,
            (int)x->c->partition, rd_kafka_message_errstr(m));
    return ES_OK;
}

/* Hands each record of [from, to) of topic's partition c->partition to fn, in offset order. */
static es_err read_range(import_ctx *c, const char *topic, int64_t from, int64_t to, record_fn *fn,
                         es_error_t *err) {
    range_ctx x = {c, topic, fn};
    return es_kafka_scan(c->p->reader, "restoring from", topic, c->partition, from, to,
                         REQUEST_TIMEOUT_MS, range_record, range_error, &x, err);
}

static es_err import_cb(import_ctx *c, const rd_kafka_message_t *m, es_error_t *err) {
    es_err e = import_record(c, m, err);
    c->next = m->offset + 1;
    if (e == ES_OK && ++c->in_tx == RESTORE_CHUNK) {
        e = import_checkpoint(c, c->next, 1, err);
        c->in_tx = 0;
    }
    return e;
}

/* Reads [c->from, c->to) of the events partition into the local store. */
static es_err import_range(import_ctx *c, es_error_t *err) {
    es_err e = c->log->store->begin(c->log, err);
    if (e == ES_OK)
        e = read_range(c, c->topic, c->from, c->to, import_cb, err);
    if (e == ES_OK)
        e = import_checkpoint(c, c->to, 0, err);
    if (e != ES_OK)
        c->log->store->rollback(c->log);
    return e;
}

static void snapshot_malformed(import_ctx *c, const rd_kafka_message_t *m, const char *why) {
    es_logf(c->p->cfg, ES_LOG_WARNING,
            "restore: %s partition %d offset %lld: %s; skipped (the aggregate loads from its "
            "events)",
            rd_kafka_topic_name(m->rkt), (int)m->partition, (long long)m->offset, why);
    c->snaps_malformed++;
}

/* Why s cannot be a snapshot of this restore's type stored under key; NULL when it can. */
static const char *snapshot_defect(const import_ctx *c, const rd_kafka_message_t *m,
                                   const Eskit__V1__Snapshot *s, char *buf, size_t cap) {
    if (!s)
        return "not an eskit.v1.Snapshot";
    if (strcmp(s->aggregate_type, c->type) ||
        es_validate_aggregate_id(s->aggregate_id, NULL) != ES_OK || !m->key ||
        m->key_len != strlen(s->aggregate_id) || memcmp(m->key, s->aggregate_id, m->key_len)) {
        snprintf(buf, cap, "a snapshot of '%.64s'/'%.64s' does not belong under key '%.*s'",
                 s->aggregate_type, s->aggregate_id,
                 m->key ? (int)(m->key_len < 64 ? m->key_len : 64) : 0,
                 m->key ? (const char *)m->key : "");
        return buf;
    }
    if (!s->version)
        return "a snapshot at version 0";
    if (strcmp(s->state_type, c->def->state->name)) {
        snprintf(buf, cap, "state type '%.64s' is not %s's '%s'", s->state_type, c->type,
                 c->def->state->name);
        return buf;
    }
    return NULL;
}

/* Keeps a snapshot record when it is the newest well-formed one of its aggregate whose event
 * this restore imports. */
static es_err collect_snapshot(import_ctx *c, const rd_kafka_message_t *m, es_error_t *err) {
    char buf[256];
    Eskit__V1__Snapshot *s = eskit__v1__snapshot__unpack(NULL, m->len, m->payload);
    const char *why = snapshot_defect(c, m, s, buf, sizeof buf);
    if (why) {
        snapshot_malformed(c, m, why);
        if (s)
            eskit__v1__snapshot__free_unpacked(s, NULL);
        return ES_OK;
    }
    const char *id = s->aggregate_id;
    if (snap_map_reserve(&c->snaps) != 0) {
        eskit__v1__snapshot__free_unpacked(s, NULL);
        return es_fail(err, ES_ENOMEM, "out of memory keeping snapshots for restore");
    }
    Eskit__V1__Snapshot **at = snap_map_slot(&c->snaps, id), *old = *at;
    if (s->events_offset < c->from || s->events_offset >= c->to ||
        (old && old->version > s->version)) {
        c->snaps_unused++; /* the store has its event already, or it is not imported yet */
        eskit__v1__snapshot__free_unpacked(s, NULL);
        return ES_OK;
    }
    ProtobufCMessage *state =
        protobuf_c_message_unpack(c->def->state, NULL, s->state.len, s->state.data);
    if (!state) {
        snprintf(buf, sizeof buf, "the state of %s/%s at version %llu is not a valid %s", c->type,
                 id, (unsigned long long)s->version, c->def->state->name);
        snapshot_malformed(c, m, buf);
        eskit__v1__snapshot__free_unpacked(s, NULL);
        return ES_OK;
    }
    protobuf_c_message_free_unpacked(state, NULL);
    if (old) {
        c->snaps_unused++;
        eskit__v1__snapshot__free_unpacked(old, NULL);
    }
    c->snaps.count += !old;
    *at = s;
    return ES_OK;
}

/* Reads the same partition of "<type>.snapshots" into c->snaps. Snapshots only save folding:
 * when they cannot be read, restore goes on without them and aggregates load from events. The
 * newest snapshot of every aggregate of the partition is held in memory until restore ends. */
static es_err collect_snapshots(import_ctx *c, es_error_t *err) {
    char topic[TOPIC_MAX];
    int64_t lo = 0, hi = 0;
    es_error_t rerr = {0};
    snprintf(topic, sizeof topic, "%s.snapshots", c->type);
    rd_kafka_resp_err_t ke = rd_kafka_query_watermark_offsets(c->p->reader, topic, c->partition,
                                                              &lo, &hi, REQUEST_TIMEOUT_MS);
    es_err e = ke ? es_kafka_fail(c->p->reader, ke, NULL, &rerr,
                                  "reading the offsets of a snapshots partition")
                  : ES_OK;
    if (e == ES_OK && hi <= lo)
        return ES_OK;
    if (e == ES_OK)
        e = read_range(c, topic, lo, hi, collect_snapshot, &rerr);
    if (e == ES_ENOMEM)
        return es_fail(err, e, "%s", rerr.message);
    if (e != ES_OK) /* the snapshots kept so far still match their events: keep using them */
        es_logf(c->p->cfg, ES_LOG_WARNING,
                "restore of %s partition %d goes on without (some) snapshots: %s", topic,
                (int)c->partition, rerr.message);
    return ES_OK;
}

/* Brings the local store up to the end of the events partition o reads from. */
static es_err restore(es_processor_t *p, owned *o, es_error_t *err);

/* restore, timed for the metrics. */
es_err es_proc_restore(es_processor_t *p, owned *o, es_error_t *err) {
    uint64_t t0 = es_mono_ns();
    es_mx_set(&p->mx.restore_started_ns, t0);
    es_err e = restore(p, o, err);
    es_mx_set(&p->mx.restore_started_ns, 0);
    if (e == ES_OK) {
        es_mx_observe(&p->mx.restore, es_mono_ns() - t0);
        es_proc_mx_owned(p);
    }
    return e;
}

static es_err restore(es_processor_t *p, owned *o, es_error_t *err) {
    const char *type = type_name(p, o->type);
    char topic[TOPIC_MAX], key[TOPIC_MAX + 32], val[32];
    int found = 0;
    int64_t lo = 0, hi = 0;
    es_log_t *log;
    snprintf(topic, sizeof topic, "%s.events", type);
    es_proc_offset_key(key, sizeof key, type, o->partition);
    es_err e = es_store_lock(es_engine_store(p->local), &log, err);
    if (e != ES_OK)
        return e;
    e = log->store->get_meta(log, key, val, sizeof val, &found, err);
    int64_t next = found ? strtoll(val, NULL, 10) : 0;
    rd_kafka_resp_err_t ke = e == ES_OK
                                 ? rd_kafka_query_watermark_offsets(p->reader, topic, o->partition,
                                                                    &lo, &hi, REQUEST_TIMEOUT_MS)
                                 : RD_KAFKA_RESP_ERR_NO_ERROR;
    if (ke)
        e = es_kafka_fail(p->reader, ke, NULL, err,
                          "reading the offsets of an events partition for restore");
    else if (e == ES_OK)
        es_kafka_clear_outage(p->reader); /* answered */
    if (e == ES_OK && next < lo)
        e = es_fail(err, ES_EIO,
                    "restoring %s partition %d: the state store reflects offsets below %lld but "
                    "the partition now starts at %lld: events %lld..%lld were deleted "
                    "(retention) and aggregates cannot be rebuilt without them; keep events "
                    "topics forever (retention.ms=-1) or restore the data",
                    topic, (int)o->partition, (long long)next, (long long)lo, (long long)next,
                    (long long)lo - 1);
    if (e == ES_OK && next > hi)
        e = es_fail(err, ES_EIO,
                    "restoring %s partition %d: the state store %s reflects offsets up to %lld, "
                    "past the partition's end %lld; was the topic deleted and created again? "
                    "delete the state store to rebuild it from the topic",
                    topic, (int)o->partition, es_config_get(p->local_cfg, "db"), (long long)next,
                    (long long)hi);
    import_ctx c = {.p = p,
                    .log = log,
                    .def = p->types[o->type].def,
                    .type = type,
                    .topic = topic,
                    .partition = o->partition,
                    .from = next,
                    .to = hi,
                    .next = next};
    /* With nothing to import the store is current, and so are the snapshots it wrote itself. */
    if (e == ES_OK && next < hi)
        e = collect_snapshots(&c, err);
    if (e == ES_OK && next < hi)
        e = import_range(&c, err);
    for (size_t i = 0; i < c.snaps.cap; i++) /* their event was not imported here */
        c.snaps_unused += c.snaps.slots[i] && c.snaps.slots[i]->version;
    snap_map_free(&c.snaps);
    es_store_unlock(es_engine_store(p->local));
    /* What the read pipeline met counts for every attempt, a failed one too (a partition
     * restored again after a failure counts its records again). */
    bump(&p->stats.stale, c.order.stale);
    bump(&p->stats.gaps, c.order.gaps);
    bump(&p->stats.events_skipped, c.skipped);
    if (e != ES_OK)
        return e;
    o->restored = 1;
    bump(&p->stats.restores, 1);
    bump(&p->stats.events_imported, c.imported);
    bump(&p->stats.snapshots_imported, c.snaps_imported);
    bump(&p->stats.snapshots_malformed, c.snaps_malformed);
    bump(&p->stats.snapshots_unused, c.snaps_unused);
    if (c.skipped)
        es_logf(p->cfg, ES_LOG_WARNING,
                "restore of %s partition %d: %llu event(s) skipped (not the next version of "
                "their aggregate: a duplicate or a zombie writer's)",
                topic, (int)o->partition, (unsigned long long)c.skipped);
    es_logf(p->cfg, ES_LOG_INFO,
            "restored %s partition %d: %llu event(s) imported up to %lld, %llu snapshot(s) "
            "imported (%llu malformed, %llu unused)",
            topic, (int)o->partition, (unsigned long long)c.imported, (long long)hi,
            (unsigned long long)c.snaps_imported, (unsigned long long)c.snaps_malformed,
            (unsigned long long)c.snaps_unused);
    return ES_OK;
}
