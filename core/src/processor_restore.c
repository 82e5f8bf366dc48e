/* The command processor's restore (processor_int.h). */
#include "processor_int.h"

#include <stdint.h>

/*
 * Restore brings the local store from its checkpoint (es_meta) to the end of the events
 * partition, and costs the partition's live state, not its history: a state store that holds
 * nothing of the partition (a new owner after a rebalance, a lost state.db) reads the newest
 * snapshot of every aggregate and only the events from the restore's start S on:
 *
 *   S = min(the horizon H, the first event within idempotency.window.ms of now)
 *
 * The horizon H of a partition is an offset below which every aggregate that has an event
 * there has a snapshot on "<type>.snapshots" covering its last event below H. The owner keeps
 * it: it knows which aggregates' newest snapshot on Kafka does not cover their last event (a
 * snapshot not delivered, snapshot.every > 1, an aggregate with no snapshot yet), each with the
 * offset of its first event past that snapshot (es_horizon, one per owned partition, rebuilt
 * by every restore from what it reads); H is the lowest of those offsets, or the partition's end
 * when there is none. After each batch, once its snapshots are delivered, the owner commits H as
 * the offset of the events partition in the consumer group "<service>.eskit-restore" (the
 * restore reader's own group, assign-only, so nothing else reads it; no record is added to any
 * topic). A lower H is always safe, so a commit that fails or comes late only makes the next
 * restore read more. Why not without it: the snapshots topic names only the aggregates that
 * have a snapshot, and nothing short of reading every event can prove that no other aggregate
 * has events below a point. The window bound: a command inside the window must still be
 * answered as a duplicate, with its first execution's events, so those events and their command
 * ids are imported; below S a command runs again as new (the window's documented meaning). The
 * window's start is the first offset whose record time is within the window
 * (rd_kafka_offsets_for_times; librdkafka's mock cluster does not look offsets up by time, so
 * when the answer is "none" and the last record says otherwise, a binary search over record
 * times finds it). idempotency.window.ms=0 keeps every command: S is the partition's start.
 *
 * What the store holds of an aggregate whose history starts below S: the stream is seeded
 * (store op seed_stream) at the version before its first imported event, its chain of events
 * starting there; the next version must follow (the log-order rule, as for any stream), and a
 * read below the chain's first event is ES_EIO, never a silent shorter history. An aggregate
 * whose newest snapshot's event lies below S is seeded at the snapshot's version with the
 * snapshot, before the import; one whose snapshot's event lies at or after S is seeded when its
 * first event comes and gets its snapshot in the same transaction as the very event the snapshot
 * names (version and events_offset), as before: a snapshot never runs ahead of the store and
 * never follows a history the log-order rule rejected. Loads start from the snapshot.
 *
 * When the start cannot be proven, restore reads the whole partition, as before: no horizon was
 * committed (a partition whose owner predates this, or whose commits all failed), or a snapshot
 * record is malformed (its aggregate's coverage is unknown). A store that holds part of the
 * partition (a restart on its state.db, a batch read again) imports from its checkpoint; an
 * owner that does not know its horizon set yet reads from min(H, checkpoint) for it, without
 * importing what the store has. records_not_read counts the offsets below S. A command of which
 * S cuts the first events off is outside the window: its id is not recorded.
 */

void es_proc_offset_key(char *key, size_t cap, const char *type, int32_t partition) {
    snprintf(key, cap, "kafka.next:%s.events:%d", type, (int)partition);
}

static size_t id_hash(const char *id) {
    uint64_t h = es_fnv1a64(id, strlen(id));
    return (size_t)(h ^ (h >> 29));
}

/* ---- the horizon ------------------------------------------------------------------------ */

/* An aggregate whose newest snapshot on Kafka does not cover its last event, and the offset of
 * its first event past that snapshot. */
typedef struct hz_slot {
    char *id;
    int64_t at;
} hz_slot;

struct es_horizon {
    hz_slot *slots; /* open addressing, linear probing, at most half full */
    size_t cap, count;
    int64_t min;       /* the lowest at; INT64_MAX when count is 0 */
    int min_stale;     /* the entry holding min was removed: recompute */
    int64_t end;       /* the partition's end as its owner last saw it */
    int64_t committed; /* the horizon last committed; -1: none */
    uint64_t committed_ns;
};

#define HZ_COMMIT_NS 100000000ULL /* 100 ms between horizon commits of one partition */

static es_horizon *hz_new(int64_t end) {
    es_horizon *h = calloc(1, sizeof *h);
    if (h) {
        h->min = INT64_MAX;
        h->end = end;
        h->committed = -1;
    }
    return h;
}

void es_horizon_free(es_horizon *h) {
    if (!h)
        return;
    for (size_t i = 0; i < h->cap; i++)
        free(h->slots[i].id);
    free(h->slots);
    free(h);
}

static size_t hz_find(const es_horizon *h, const char *id) {
    size_t i = id_hash(id) & (h->cap - 1);
    while (h->slots[i].id && strcmp(h->slots[i].id, id))
        i = (i + 1) & (h->cap - 1);
    return i;
}

/* Notes id as not covered from offset at on, unless it is already; -1 out of memory. */
static int hz_add(es_horizon *h, const char *id, int64_t at) {
    if (h->cap && h->slots[hz_find(h, id)].id)
        return 0;
    if (2 * (h->count + 1) > h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 64;
        hz_slot *slots = calloc(cap, sizeof *slots), *old = h->slots;
        if (!slots)
            return -1;
        size_t old_cap = h->cap;
        h->slots = slots;
        h->cap = cap;
        for (size_t i = 0; i < old_cap; i++)
            if (old[i].id)
                h->slots[hz_find(h, old[i].id)] = old[i];
        free(old);
    }
    hz_slot *e = &h->slots[hz_find(h, id)];
    if (!(e->id = strdup(id)))
        return -1;
    e->at = at;
    h->count++;
    if (at < h->min)
        h->min = at;
    return 0;
}

/* Notes id as covered by its newest snapshot. */
static void hz_remove(es_horizon *h, const char *id) {
    if (!h->count)
        return;
    size_t i = hz_find(h, id), j = i;
    if (!h->slots[i].id)
        return;
    if (h->slots[i].at == h->min)
        h->min_stale = 1;
    free(h->slots[i].id);
    h->slots[i].id = NULL;
    h->count--;
    for (;;) { /* backward shift: keep every later entry of the probe run reachable */
        j = (j + 1) & (h->cap - 1);
        if (!h->slots[j].id)
            break;
        size_t k = id_hash(h->slots[j].id) & (h->cap - 1);
        int stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            h->slots[i] = h->slots[j];
            h->slots[j].id = NULL;
            i = j;
        }
    }
}

/* The horizon: the lowest offset an aggregate needs, or the end when every one is covered. */
static int64_t hz_value(es_horizon *h) {
    if (h->min_stale) {
        h->min = INT64_MAX;
        for (size_t i = 0; i < h->cap; i++)
            if (h->slots[i].id && h->slots[i].at < h->min)
                h->min = h->slots[i].at;
        h->min_stale = 0;
    }
    return h->count && h->min < h->end ? h->min : h->end;
}

/* Results of horizon commits: nothing waits for them (a failed one only makes a restore read
 * more), they are drained so that they do not pile up on the queue. */
static void hz_drain(es_processor_t *p) {
    rd_kafka_event_t *ev;
    while (p->hz_queue && (ev = rd_kafka_queue_poll(p->hz_queue, 0))) {
        if (rd_kafka_event_error(ev))
            es_logf(p->cfg, ES_LOG_DEBUG, "command processor: committing a restore horizon: %s",
                    rd_kafka_event_error_string(ev));
        rd_kafka_event_destroy(ev);
    }
}

/* Commits o's horizon when it moved (at most every HZ_COMMIT_NS unless force). */
static void hz_commit(es_processor_t *p, owned *o, int force) {
    es_horizon *h = o->hz;
    if (!h)
        return;
    int64_t at = hz_value(h);
    uint64_t now = es_mono_ns();
    if (at <= h->committed || (!force && now - h->committed_ns < HZ_COMMIT_NS))
        return;
    if (!p->hz_queue && !(p->hz_queue = rd_kafka_queue_new(p->reader)))
        return;
    const char *topic = p->types[o->type].events_topic;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, o->partition)->offset = at;
    rd_kafka_resp_err_t ke = rd_kafka_commit_queue(p->reader, l, p->hz_queue, NULL, NULL);
    rd_kafka_topic_partition_list_destroy(l);
    if (!ke) {
        h->committed = at;
        h->committed_ns = now;
    }
}

void es_proc_commit_horizons(es_processor_t *p) {
    hz_drain(p);
    for (size_t i = 0; i < p->n_owned; i++)
        if (p->owned[i].hz && p->owned[i].restored)
            hz_commit(p, &p->owned[i], 0);
}

void es_proc_note_snapshots(es_processor_t *p, const slot *slots, size_t n_slots,
                            const es_result_t *results) {
    for (size_t i = 0; i < n_slots; i++) {
        const slot *s = &slots[i];
        if (s->cmd < 0)
            continue;
        const es_result_t *r = &results[s->cmd];
        if (r->outcome != ES_OUTCOME_ACCEPTED || r->duplicate || !r->n_events)
            continue;
        owned *o = es_proc_find_owned(p, s->type, s->m->partition);
        if (!o || !o->hz)
            continue;
        const produced *last = &p->prod[s->last_prod];
        if (last->offset + 1 > o->hz->end)
            o->hz->end = last->offset + 1;
        /* Not covered until its snapshot is acknowledged (es_proc_cover_snapshots). */
        int lost = hz_add(o->hz, s->env->aggregate_id,
                          p->prod[s->last_prod + 1 - r->n_events].offset) != 0;
        if (!lost && s->snap) {
            if (p->n_cover == p->cap_cover) {
                size_t cap = p->cap_cover ? 2 * p->cap_cover : 64;
                struct hz_cover *c = realloc(p->cover, cap * sizeof *c);
                if (c) {
                    p->cover = c;
                    p->cap_cover = cap;
                }
            }
            struct hz_cover *c = p->n_cover < p->cap_cover ? &p->cover[p->n_cover] : NULL;
            if (c && (c->id = strdup(s->env->aggregate_id))) {
                c->type = s->type;
                c->partition = s->m->partition;
                p->n_cover++;
            } /* else: it stays not covered, which only makes a restore read more */
        }
        if (lost) {
            es_horizon_free(o->hz); /* out of memory: no horizon is committed for it any more */
            o->hz = NULL;
        }
    }
    if (p->transactional)
        return; /* covered right after the synchronous flush */
    es_proc_commit_horizons(p);
}

void es_proc_cover_snapshots(es_processor_t *p, int delivered) {
    for (size_t i = 0; i < p->n_cover; i++) {
        owned *o =
            delivered ? es_proc_find_owned(p, p->cover[i].type, p->cover[i].partition) : NULL;
        if (o && o->hz)
            hz_remove(o->hz, p->cover[i].id);
        free(p->cover[i].id);
    }
    p->n_cover = 0;
    if (delivered)
        es_proc_commit_horizons(p);
}

/* ---- restore ---------------------------------------------------------------------------- */

/* The events of one command, consecutive in the partition: recorded as one command, with the
 * fingerprint its first event carries (events from before fingerprints carry none). */
typedef struct cmd_track {
    char id[ES_MAX_ID_LEN + 1];
    char agg[ES_MAX_ID_LEN + 1];
    uint64_t first, last;
    int has_fingerprint;
    es_fingerprint_t fingerprint;
    int64_t at_ms; /* the first event's record time: when the command ran */
} cmd_track;

/* When the record's command ran: its Kafka timestamp (what the restore's window start is found
 * by), else the envelope's occurred_at; never later than now (another machine's clock ahead
 * of ours would otherwise keep the id past the window). */
static int64_t record_time_ms(const rd_kafka_message_t *m, const es_event_t *ev) {
    rd_kafka_timestamp_type_t tt;
    int64_t ms = rd_kafka_message_timestamp(m, &tt), now = es_now_us() / 1000;
    if (tt == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE || ms <= 0)
        ms = ev->occurred_at_us / 1000;
    return ms > 0 && ms < now ? ms : now;
}

static es_err flush_track(es_log_t *log, const char *type, cmd_track *t, es_error_t *err) {
    es_command_record_t rec;
    if (!t->id[0])
        return ES_OK;
    es_err e = log->store->find_command(log, t->id, &rec, err);
    if (e == ES_ENOTFOUND) {
        es_command_record_t nr = {t->id,   type,    t->agg, ES_OUTCOME_ACCEPTED, t->first,
                                  t->last, t->last, NULL,   t->has_fingerprint,  t->fingerprint,
                                  t->at_ms};
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
    int64_t from, to; /* the events this restore imports; those read below from only count for
                         the horizon */
    int64_t next;     /* the next events offset to import */
    size_t in_tx;     /* events imported in the open transaction */
    cmd_track track;
    snap_map snaps; /* the newest well-formed snapshot of each aggregate (version 0: imported) */
    int seed;       /* from is past history this store lacks: streams start at snapshots */
    int unproven;   /* a snapshot record was malformed: its aggregate's coverage is unknown */
    es_horizon *hz; /* the horizon set this restore brings up to date; NULL: none */
    int hz_lost;    /* a record could not be placed in it (no key, out of memory) */
    struct {        /* the record just before from, when from cuts history off */
        char id[ES_MAX_ID_LEN + 1], agg[ES_MAX_ID_LEN + 1];
        uint64_t version;
        int64_t time_ms;
        int found;
    } peek;
    uint64_t imported, skipped, snaps_imported, snaps_malformed, snaps_unused, seeded;
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

/* With history cut off at from: an aggregate not in the store whose first event here is not
 * its first is seeded at the version before it, when its newest snapshot lies at or after this
 * event (and so comes into the store with its event, below). Without such a snapshot it stays
 * unseeded, and the log-order rule stops at the gap: the horizon did not hold for it. */
static es_err seed_before(import_ctx *c, const es_event_t *ev, int64_t offset, es_error_t *err) {
    const Eskit__V1__Snapshot *s = *snap_map_slot(&c->snaps, ev->aggregate_id);
    uint64_t have = 0;
    if (!s || s->version < ev->version || s->events_offset < offset)
        return ES_OK;
    es_err e = c->log->reader->stream_version(c->log, c->type, ev->aggregate_id, &have, err);
    if (e == ES_OK && !have) {
        e = c->log->store->seed_stream(c->log, c->type, ev->aggregate_id, ev->version - 1, err);
        c->seeded += e == ES_OK;
    }
    return e;
}

/* Imports one record when it continues its aggregate, through the read pipeline (readpipe.h)
 * in the restoring writer's role: a stale version is skipped, a gap stops the partition.
 * There is no upcast stage here: the state store is a copy of the log, so it takes the stored
 * bytes as they are (an upcast copy would be a rewrite, and would change with the next
 * deploy's upcasters). The events are upcast where they are folded into state and decided
 * on: the local engine's loads (log_sqlite.c's reads), under the processor's config and so
 * its upcasters. */
static es_err import_record(import_ctx *c, const rd_kafka_message_t *m, es_error_t *err) {
    es_raw_record_t raw = {c->topic, m->partition, m->offset, NULL, m->payload, m->len, NULL, 0};
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
    if (c->seed && ev->version > 1 && c->snaps.count &&
        (e = seed_before(c, ev, m->offset, err)) != ES_OK)
        goto out;
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
    int cut = c->peek.found && !strcmp(c->peek.id, cid) && !strcmp(c->peek.agg, ev->aggregate_id) &&
              c->peek.version + 1 == ev->version; /* its first events lie below from */
    c->peek.found = 0;
    if (e == ES_OK && *cid && strlen(cid) <= ES_MAX_ID_LEN && !cut) {
        snprintf(t->id, sizeof t->id, "%s", cid);
        snprintf(t->agg, sizeof t->agg, "%s", ev->aggregate_id);
        t->first = t->last = ev->version;
        t->has_fingerprint = es_envelope_fingerprint(ev, &t->fingerprint);
        t->at_ms = record_time_ms(m, ev);
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
    /* A seeded stream's snapshot stands for events this store does not hold: it must be in the
     * file when the checkpoint says it was imported, not wait in memory for a later commit. */
    if (e == ES_OK && c->log->store->version >= 3)
        c->log->store->write_heads(c->log);
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

/* The horizon set after the record m: its aggregate (the record's key) is covered while its
 * newest snapshot lies at or after the record, and not covered from its first record past it. */
static void note_record(import_ctx *c, const rd_kafka_message_t *m) {
    char id[ES_MAX_ID_LEN + 1];
    if (!m->key || !m->key_len || m->key_len > ES_MAX_ID_LEN) {
        c->hz_lost = 1;
        return;
    }
    memcpy(id, m->key, m->key_len);
    id[m->key_len] = '\0';
    const Eskit__V1__Snapshot *s = *snap_map_slot(&c->snaps, id);
    if (s && s->events_offset >= m->offset)
        hz_remove(c->hz, id);
    else if (hz_add(c->hz, id, m->offset) != 0)
        c->hz_lost = 1;
}

static es_err import_cb(import_ctx *c, const rd_kafka_message_t *m, es_error_t *err) {
    if (c->hz && !c->hz_lost)
        note_record(c, m);
    if (m->offset < c->from)
        return ES_OK; /* the store has it: read for the horizon only */
    es_err e = import_record(c, m, err);
    c->next = m->offset + 1;
    if (e == ES_OK && ++c->in_tx == RESTORE_CHUNK) {
        e = import_checkpoint(c, c->next, 1, err);
        c->in_tx = 0;
    }
    return e;
}

/* Seeds every aggregate whose newest snapshot's event lies below from at that snapshot. */
static es_err seed_at_snapshots(import_ctx *c, es_error_t *err) {
    es_err e = ES_OK;
    for (size_t i = 0; e == ES_OK && i < c->snaps.cap; i++) {
        Eskit__V1__Snapshot *s = c->snaps.slots[i];
        if (!s || !s->version || s->events_offset >= c->from)
            continue;
        es_snapshot_t snap = {s->version, s->state_type, s->state.data, s->state.len,
                              s->taken_at_us};
        e = c->log->store->seed_stream(c->log, c->type, s->aggregate_id, s->version, err);
        if (e == ES_OK)
            e = c->log->store->put_snapshot(c->log, c->type, s->aggregate_id, &snap, err);
        if (e == ES_OK) {
            c->snaps_imported++;
            c->seeded++;
            s->version = 0;
        }
    }
    return e;
}

/* Reads [scan, c->to) of the events partition, importing [c->from, c->to) into the store. */
static es_err import_range(import_ctx *c, int64_t scan, es_error_t *err) {
    es_err e = c->log->store->begin(c->log, err);
    if (e == ES_OK && c->seed)
        e = seed_at_snapshots(c, err);
    if (e == ES_OK && scan < c->to)
        e = read_range(c, c->topic, scan, c->to, import_cb, err);
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

/* Keeps a snapshot record when it is the newest well-formed one of its aggregate. */
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
    if (s->events_offset >= c->to || (old && old->version > s->version)) {
        c->snaps_unused++; /* not imported yet, or superseded */
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
        c->snaps_unused += old->version != 0; /* 0: counted when it came */
        eskit__v1__snapshot__free_unpacked(old, NULL);
    }
    if (s->events_offset < c->from && !c->seed) {
        c->snaps_unused++; /* the store has its event already: kept for the horizon only */
        s->version = 0;
    }
    c->snaps.count += !old;
    *at = s;
    return ES_OK;
}

/* Reads the same partition of "<type>.snapshots" into c->snaps. Snapshots only save folding
 * and reading: when they cannot be read, restore goes on without them, from the checkpoint (so
 * aggregates load from events). The newest snapshot of every aggregate of the partition is held
 * in memory until restore ends. */
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
    if (e != ES_OK) { /* the snapshots kept so far still match their events: keep using them */
        es_logf(c->p->cfg, ES_LOG_WARNING,
                "restore of %s partition %d goes on without (some) snapshots: %s", topic,
                (int)c->partition, rerr.message);
        c->unproven = 1;
    }
    return ES_OK;
}

/* ---- where a restore starts ------------------------------------------------------------- */

static es_err peek_cb(import_ctx *c, const rd_kafka_message_t *m, es_error_t *err) {
    es_raw_record_t raw = {c->topic, m->partition, m->offset, NULL, m->payload, m->len, NULL, 0};
    es_event_t *ev = NULL;
    es_err e = ES_OK;
    es_error_t derr = {0};
    rd_kafka_timestamp_type_t tt;
    (void)err;
    c->peek.time_ms = rd_kafka_message_timestamp(m, &tt);
    c->peek.found = 1;
    c->peek.id[0] = c->peek.agg[0] = '\0';
    if (es_read_decode(&raw, &ev, &e, &derr) == ES_READ_EVENT) {
        snprintf(c->peek.id, sizeof c->peek.id, "%s", ev->command_id ? ev->command_id : "");
        snprintf(c->peek.agg, sizeof c->peek.agg, "%s", ev->aggregate_id);
        c->peek.version = ev->version;
    }
    es_event_free(ev);
    return ES_OK;
}

/* Reads the record at offset into c->peek; 0 when there is none to read (a transaction marker,
 * or an error). */
static int peek(import_ctx *c, int64_t offset) {
    es_error_t err = {0};
    c->peek.found = 0;
    return read_range(c, c->topic, offset, offset + 1, peek_cb, &err) == ES_OK && c->peek.found;
}

/* The first offset of [lo, hi) whose record time is at or after t_ms; lo when unsure (every
 * command then counts as inside the window). */
static int64_t window_start(import_ctx *c, int64_t lo, int64_t hi, int64_t t_ms) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, c->topic, c->partition)->offset = t_ms;
    rd_kafka_resp_err_t ke = rd_kafka_offsets_for_times(c->p->reader, l, REQUEST_TIMEOUT_MS);
    int64_t found = !ke && !l->elems[0].err ? l->elems[0].offset : -1;
    rd_kafka_topic_partition_list_destroy(l);
    if (found >= lo && found <= hi)
        return found;
    /* "none at or after t", or no answer by time (the mock cluster): ask the records */
    if (!peek(c, lo))
        return lo;
    if (c->peek.time_ms >= t_ms)
        return lo;
    if (!peek(c, hi - 1))
        return lo;
    if (c->peek.time_ms < t_ms)
        return hi;
    int64_t a = lo, b = hi - 1; /* time(a) < t <= time(b) */
    while (b - a > 1) {
        int64_t mid = a + (b - a) / 2;
        if (!peek(c, mid))
            return a;
        if (c->peek.time_ms >= t_ms)
            b = mid;
        else
            a = mid;
    }
    return b;
}

/* The horizon the partition's owners committed (see the header); -1 when none or unknown. */
static int64_t committed_horizon(import_ctx *c) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, c->topic, c->partition)->offset = RD_KAFKA_OFFSET_INVALID;
    rd_kafka_resp_err_t ke = rd_kafka_committed(c->p->reader, l, HORIZON_TIMEOUT_MS);
    int64_t h = !ke && !l->elems[0].err ? l->elems[0].offset : -1;
    rd_kafka_topic_partition_list_destroy(l);
    if (ke)
        es_logf(c->p->cfg, ES_LOG_INFO,
                "restore of %s partition %d: the restore horizon is unknown (%s); reading from "
                "the checkpoint",
                c->topic, (int)c->partition, rd_kafka_err2str(ke));
    return h >= 0 ? h : -1;
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
        hz_commit(p, o, 1);
    }
    return e;
}

/* Where the import starts (c->from), and from where the horizon set is rebuilt (*scan), before
 * the import. A store without the partition (found 0) starts at min(horizon, window start) when
 * both are known; one with it starts at its checkpoint, and reads from min(horizon, checkpoint)
 * when its owner does not know the horizon set yet. */
static void plan_start(import_ctx *c, owned *o, int found, int64_t lo, int64_t hi, int64_t *scan,
                       es_horizon **hz) {
    long long window = es_config_get_int(c->p->cfg, "idempotency.window.ms");
    *scan = c->from;
    *hz = o->hz;
    if (found && o->hz)
        return;
    if (found) { /* the set is rebuilt from the horizon on, or from the start */
        int64_t h = committed_horizon(c);
        *scan = h >= c->from ? c->from : h >= lo ? h : 0;
        *hz = *scan >= lo ? hz_new(hi) : NULL;
        if (!*hz)
            *scan = c->from;
        return;
    }
    int64_t start = 0;
    if (window > 0 && !c->unproven && c->from < hi) {
        int64_t w = window_start(c, lo, hi, es_now_us() / 1000 - window);
        int64_t h = w > lo ? committed_horizon(c) : -1;
        if (h >= 0)
            start = w < h ? w : h;
    }
    if (start > hi)
        start = hi;
    c->from = c->next = *scan = start;
    c->seed = start > 0;
    *hz = hz_new(hi);
    c->peek.found = 0;
    if (c->seed && start > lo && start < hi && !peek(c, start - 1))
        c->peek.found = 0;
}

static es_err restore(es_processor_t *p, owned *o, es_error_t *err) {
    const char *type = type_name(p, o->type);
    const char *topic = p->types[o->type].events_topic;
    char key[TOPIC_MAX + 32], val[32];
    int found = 0;
    int64_t lo = 0, hi = 0, scan = 0;
    es_log_t *log;
    es_horizon *hz = NULL;
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
    /* With nothing to import the store is current, and so are the snapshots it wrote itself;
     * they are read when the owner must learn its horizon set. */
    if (e == ES_OK && (next < hi || !o->hz)) {
        e = collect_snapshots(&c, err);
        if (e == ES_OK)
            plan_start(&c, o, found, lo, hi, &scan, &hz);
        c.hz = hz;
    }
    if (e == ES_OK && (found ? next : c.from) < lo)
        e = es_fail(err, ES_EIO,
                    "restoring %s partition %d: the state store reflects offsets below %lld but "
                    "the partition now starts at %lld: events %lld..%lld were deleted "
                    "(retention) and aggregates cannot be rebuilt without them; keep events "
                    "topics forever (retention.ms=-1) or restore the data",
                    topic, (int)o->partition, (long long)(found ? next : c.from), (long long)lo,
                    (long long)(found ? next : c.from), (long long)lo - 1);
    if (e == ES_OK && (scan < hi || c.seed || next < hi))
        e = import_range(&c, scan, err);
    for (size_t i = 0; i < c.snaps.cap; i++) /* their event was not imported here */
        c.snaps_unused += c.snaps.slots[i] && c.snaps.slots[i]->version;
    snap_map_free(&c.snaps);
    es_store_unlock(es_engine_store(p->local));
    /* What the read pipeline met counts for every attempt, a failed one too (a partition
     * restored again after a failure counts its records again). */
    bump(&p->stats.stale, c.order.stale);
    bump(&p->stats.gaps, c.order.gaps);
    bump(&p->stats.events_skipped, c.skipped);
    if (e == ES_OK && hz && !c.hz_lost) {
        if (hz->end < hi)
            hz->end = hi;
        if (hz != o->hz) {
            es_horizon_free(o->hz);
            o->hz = hz;
        }
    } else if (hz != o->hz || c.hz_lost) {
        if (hz == o->hz)
            o->hz = NULL;
        es_horizon_free(hz);
    }
    if (e != ES_OK)
        return e;
    uint64_t not_read = !found && c.from > lo ? (uint64_t)(c.from - lo) : 0;
    o->restored = 1;
    bump(&p->stats.restores, 1);
    bump(&p->stats.events_imported, c.imported);
    bump(&p->stats.snapshots_imported, c.snaps_imported);
    bump(&p->stats.snapshots_malformed, c.snaps_malformed);
    bump(&p->stats.snapshots_unused, c.snaps_unused);
    bump(&p->stats.records_not_read, not_read);
    if (c.skipped)
        es_logf(p->cfg, ES_LOG_WARNING,
                "restore of %s partition %d: %llu event(s) skipped (not the next version of "
                "their aggregate: a duplicate or a zombie writer's)",
                topic, (int)o->partition, (unsigned long long)c.skipped);
    es_logf(p->cfg, ES_LOG_INFO,
            "restored %s partition %d: %llu event(s) imported up to %lld, %llu not read (below "
            "offset %lld, covered by snapshots and outside idempotency.window.ms), %llu "
            "stream(s) started at a snapshot, %llu snapshot(s) imported (%llu malformed, %llu "
            "unused)",
            topic, (int)o->partition, (unsigned long long)c.imported, (long long)hi,
            (unsigned long long)not_read, (long long)c.from, (unsigned long long)c.seeded,
            (unsigned long long)c.snaps_imported, (unsigned long long)c.snaps_malformed,
            (unsigned long long)c.snaps_unused);
    return ES_OK;
}
