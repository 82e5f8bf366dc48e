/*
 * The command processor: the single writer of the "<type>.events" partitions
 * whose "<type>.commands" partitions the consumer group assigned to it.
 *
 * State lives in a private embedded engine over the local state store
 * (state.db, sqlite.synchronous=normal: it is a cache of the owned partitions,
 * rebuilt from Kafka after a loss, so fsync per batch buys nothing). es_meta
 * holds, per events partition, the next Kafka offset the store reflects.
 *
 * A batch runs as one local transaction; the engine's pre-commit hook
 * produces the accepted commands' events and waits for every delivery report
 * before the local commit, and the consumer offsets are committed last. So
 * after a crash anywhere, Kafka holds at least what the store holds: restore
 * imports the rest (with their command ids), and the redelivered commands are
 * answered as duplicates. A batch that fails is read again: its partitions are
 * marked for restore and the consumer seeks back to the batch's first record.
 * That includes a batch whose events did not land right at the store's
 * checkpoint: another writer (a zombie owner, the next owner after a
 * rebalance) appended in between, and the store must import that before it
 * decides anything more on the partition.
 *
 * Snapshots go to "<type>.snapshots" after the local commit, each naming the
 * events offset of the event it was taken at; restore imports the ones that
 * match the events it imports (see the restore section).
 */
#include "engine_int.h"
#include "kafka/wire.h"
#include "runloop.h"
#include "eskit/v1/command.pb-c.h"
#include "eskit/v1/reply.pb-c.h"
#include "eskit/v1/snapshot.pb-c.h"
#include "logorder.h"
#include "readpipe.h"
#include "store.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_MAX 500
#define WAIT_MS 10               /* fetch.wait.max.ms: commands are waited for */
#define REQUEST_TIMEOUT_MS 10000 /* metadata, watermarks, restore reads without progress */
#define FLUSH_TIMEOUT_MS 10000   /* events' delivery before the local commit */
#define SIDE_FLUSH_MS 5000       /* snapshots and replies: best effort */
#define RESTORE_CHUNK 1000       /* imported events per local transaction */
#define TOPIC_MAX (ES_MAX_TYPE_LEN + 16)

typedef struct agg_type {
    const es_aggregate_def *def;
    void *opaque;
} agg_type;

/* A commands partition assigned to this processor. */
typedef struct owned {
    size_t type;
    int32_t partition;
    int restored;
} owned;

/* One produced event awaiting its delivery report. */
typedef struct produced {
    size_t type;
    int32_t partition;
    int64_t offset;
    int done;
    rd_kafka_resp_err_t err;
} produced;

/* Where the batch's events went in one events partition. */
typedef struct span {
    size_t type;
    int32_t partition;
    int64_t first, last, count;
} span;

/* One record of the batch. */
typedef struct slot {
    rd_kafka_message_t *m;
    size_t type;
    Eskit__V1__CommandEnvelope *env;
    ProtobufCMessage *msg;
    es_kv_t *md;
    int32_t reply_partition; /* RD_KAFKA_PARTITION_UA when the header is missing */
    long cmd;                /* index into the batch's commands; -1 when not executable */
    size_t last_prod;        /* p->prod index of the command's last event, when it appended */
    es_snapshot_t *snap;     /* the snapshot the batch wrote at the command's version, or NULL */
    es_err fail;             /* why not executable */
    char reason[512];
} slot;

struct es_processor {
    const es_config_t *cfg; /* own_cfg; the Kafka handles log to it */
    es_config_t *own_cfg, *local_cfg;
    es_engine_t *local;
    agg_type *types;
    size_t n_types;
    rd_kafka_t *consumer, *producer, *side, *reader;
    int transactional;
    owned *owned;
    size_t n_owned, cap_owned;
    rd_kafka_message_t **batch;
    size_t n_batch;
    int in_batch;
    produced *prod;
    size_t n_prod, cap_prod;
    uint32_t prod_gen; /* tags each batch's events: a late report of an older batch is not ours */
    int32_t *cmd_part; /* commands partition of each executable command of the batch */
    es_stop_t stop;    /* es_processor_stop: es_processor_run returns after the poll under way */
    struct {
        atomic_uint_fast64_t commands, restores, events_imported, events_skipped,
            snapshots_imported, snapshots_malformed, snapshots_unused, stale, gaps;
    } stats;
};

static void bump(atomic_uint_fast64_t *counter, uint64_t n) {
    atomic_fetch_add_explicit(counter, n, memory_order_relaxed);
}

static void log_error(es_processor_t *p, const es_error_t *e, const char *what) {
    es_logf(p->cfg, ES_LOG_ERROR, "command processor: %s: %s", what, e->message);
}

static const char *type_name(const es_processor_t *p, size_t t) {
    return p->types[t].def->type;
}

/* The type whose "<type>.<suffix>" topic this is; n_types when none. */
static size_t type_of_topic(const es_processor_t *p, const char *topic, const char *suffix) {
    for (size_t i = 0; i < p->n_types; i++) {
        size_t tl = strlen(p->types[i].def->type);
        if (!strncmp(topic, p->types[i].def->type, tl) && topic[tl] == '.' &&
            !strcmp(topic + tl + 1, suffix))
            return i;
    }
    return p->n_types;
}

static owned *find_owned(es_processor_t *p, size_t type, int32_t partition) {
    for (size_t i = 0; i < p->n_owned; i++)
        if (p->owned[i].type == type && p->owned[i].partition == partition)
            return &p->owned[i];
    return NULL;
}

/* ---- restore ---------------------------------------------------------------------------- */

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

static void offset_key(char *key, size_t cap, const char *type, int32_t partition) {
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
    es_err e = log->ops->find_command(log, t->id, &rec, err);
    if (e == ES_ENOTFOUND) {
        es_command_record_t nr = {t->id,   type,    t->agg, ES_OUTCOME_ACCEPTED, t->first,
                                  t->last, t->last, NULL,   t->has_fingerprint,  t->fingerprint};
        e = log->ops->put_command(log, &nr, err);
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
    es_err e = c->log->ops->put_snapshot(c->log, c->type, id, &snap, err);
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
    return c->log->ops->stream_version(c->log, c->type, ev->aggregate_id, last, err);
}

/* Imports one record when it continues its aggregate, through the read pipeline (readpipe.h)
 * in the restoring writer's role: a stale version is skipped, a gap stops the partition. */
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
    e = c->log->ops->append(c->log, c->type, ev->aggregate_id, v, &rec, 1, &pos, err);
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

static es_err save_next(es_log_t *log, const char *type, int32_t partition, int64_t next,
                        es_error_t *err) {
    char key[TOPIC_MAX + 32], val[32];
    offset_key(key, sizeof key, type, partition);
    snprintf(val, sizeof val, "%lld", (long long)next);
    return es_log_sqlite_put_meta(log, key, val, err);
}

/* Commits the import so far and opens the next transaction. */
static es_err import_checkpoint(import_ctx *c, int64_t next, int reopen, es_error_t *err) {
    es_err e = flush_track(c->log, c->type, &c->track, err);
    if (e == ES_OK)
        e = save_next(c->log, c->type, c->partition, next, err);
    if (e == ES_OK)
        e = c->log->ops->commit(c->log, err);
    if (e == ES_OK && reopen)
        e = c->log->ops->begin(c->log, err);
    return e;
}

/* Hands each record of [from, to) of topic's partition c->partition to fn, in offset order. */
static es_err read_range(import_ctx *c, const char *topic, int64_t from, int64_t to, record_fn *fn,
                         es_error_t *err) {
    rd_kafka_t *rk = c->p->reader;
    rd_kafka_topic_partition_list_t *want = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(want, topic, c->partition)->offset = from;
    rd_kafka_resp_err_t ke = rd_kafka_assign(rk, want);
    es_err e = ke ? es_kafka_fail(rk, ke, NULL, err, "assigning a partition for restore") : ES_OK;
    int64_t next = from, deadline = es_now_us() / 1000 + REQUEST_TIMEOUT_MS;
    while (e == ES_OK && next < to) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (m && m->err) {
            es_logf(c->p->cfg, ES_LOG_WARNING, "restore of %s partition %d: %s", topic,
                    (int)c->partition, rd_kafka_message_errstr(m));
        } else if (m && m->offset >= next && m->partition == c->partition &&
                   !strcmp(rd_kafka_topic_name(m->rkt), topic)) {
            next = m->offset + 1;
            deadline = es_now_us() / 1000 + REQUEST_TIMEOUT_MS;
            e = fn(c, m, err);
        } else if (!m && !rd_kafka_position(rk, want) && want->elems[0].offset >= to) {
            next = to; /* the rest were control records (transaction markers) */
        } else if (!m && es_now_us() / 1000 > deadline) {
            e = es_fail(err, ES_ETIMEOUT,
                        "restoring from %s partition %d: no record past offset %lld within %d "
                        "ms (brokers %s); are they up?",
                        topic, (int)c->partition, (long long)next, REQUEST_TIMEOUT_MS,
                        es_config_get(c->p->cfg, "brokers"));
        }
        if (m)
            rd_kafka_message_destroy(m);
    }
    rd_kafka_assign(rk, NULL);
    rd_kafka_topic_partition_list_destroy(want);
    return e;
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
    es_err e = c->log->ops->begin(c->log, err);
    if (e == ES_OK)
        e = read_range(c, c->topic, c->from, c->to, import_cb, err);
    if (e == ES_OK)
        e = import_checkpoint(c, c->to, 0, err);
    if (e != ES_OK)
        c->log->ops->rollback(c->log);
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
static es_err restore(es_processor_t *p, owned *o, es_error_t *err) {
    const char *type = type_name(p, o->type);
    char topic[TOPIC_MAX], key[TOPIC_MAX + 32], val[32];
    int found = 0;
    int64_t lo = 0, hi = 0;
    es_log_t *log;
    snprintf(topic, sizeof topic, "%s.events", type);
    offset_key(key, sizeof key, type, o->partition);
    es_err e = es_store_lock(es_engine_store(p->local), &log, err);
    if (e != ES_OK)
        return e;
    e = es_log_sqlite_get_meta(log, key, val, sizeof val, &found, err);
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
    bump(&p->stats.stale, c.order.stale);
    bump(&p->stats.gaps, c.order.gaps);
    if (e != ES_OK)
        return e;
    o->restored = 1;
    bump(&p->stats.restores, 1);
    bump(&p->stats.events_imported, c.imported);
    bump(&p->stats.events_skipped, c.skipped);
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

/* ---- rebalance -------------------------------------------------------------------------- */

static es_err process_batch(es_processor_t *p, size_t *handled, es_error_t *err);

static void add_owned(es_processor_t *p, const char *topic, int32_t partition) {
    size_t t = type_of_topic(p, topic, "commands");
    if (t == p->n_types || find_owned(p, t, partition))
        return;
    if (p->n_owned == p->cap_owned) {
        size_t cap = p->cap_owned ? p->cap_owned * 2 : 16;
        owned *o = realloc(p->owned, cap * sizeof *o);
        if (!o)
            return; /* restored lazily when a record of it comes (see ensure_restored) */
        p->owned = o;
        p->cap_owned = cap;
    }
    p->owned[p->n_owned++] = (owned){t, partition, 0};
}

static void forget_owned(es_processor_t *p, const char *topic, int32_t partition) {
    size_t t = type_of_topic(p, topic, "commands");
    owned *o = find_owned(p, t, partition);
    if (o)
        *o = p->owned[--p->n_owned];
}

/* Runs inside rd_kafka_consumer_poll, on the thread polling the processor. */
static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t e,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
    es_processor_t *p = opaque;
    es_error_t err = {0};
    int coop = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");
    rd_kafka_error_t *ke = NULL;
    rd_kafka_resp_err_t re = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        for (int i = 0; i < parts->cnt; i++) {
            add_owned(p, parts->elems[i].topic, parts->elems[i].partition);
            owned *o = find_owned(p, type_of_topic(p, parts->elems[i].topic, "commands"),
                                  parts->elems[i].partition);
            if (o && restore(p, o, &err) != ES_OK)
                log_error(p, &err,
                          "restore on assignment (retried before the partition's "
                          "first command)");
        }
        if (coop)
            ke = rd_kafka_incremental_assign(rk, parts);
        else
            re = rd_kafka_assign(rk, parts);
    } else {
        if (p->n_batch && !p->in_batch && process_batch(p, NULL, &err) != ES_OK)
            log_error(p, &err, "finishing the batch before giving partitions up");
        for (int i = 0; i < parts->cnt; i++)
            forget_owned(p, parts->elems[i].topic, parts->elems[i].partition);
        if (coop)
            ke = rd_kafka_incremental_unassign(rk, parts);
        else
            re = rd_kafka_assign(rk, NULL);
    }
    if (ke) {
        es_logf(p->cfg, ES_LOG_ERROR, "command processor: rebalance: %s",
                rd_kafka_error_string(ke));
        rd_kafka_error_destroy(ke);
    }
    if (re)
        es_logf(p->cfg, ES_LOG_ERROR, "command processor: rebalance: %s", rd_kafka_err2str(re));
}

/* ---- one batch -------------------------------------------------------------------------- */

_Static_assert(sizeof(uintptr_t) >= 8, "delivery report tags pack two 32-bit numbers");

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    es_processor_t *p = opaque;
    uint64_t tag = (uint64_t)(uintptr_t)m->_private; /* batch << 32 | index; side records: all 1s */
    size_t i = (size_t)(tag & 0xffffffffu);
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

/* Decodes one record into a command; a record that does not decode is the command's error. */
static void decode_slot(es_processor_t *p, slot *s) {
    const rd_kafka_message_t *m = s->m;
    s->cmd = -1;
    s->type = type_of_topic(p, rd_kafka_topic_name(m->rkt), "commands");
    s->reply_partition = reply_partition(m);
    s->env = eskit__v1__command_envelope__unpack(NULL, m->len, m->payload);
    if (!s->env)
        return;
    const Eskit__V1__CommandEnvelope *env = s->env;
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
    if (env->n_metadata && !(s->md = calloc(env->n_metadata, sizeof *s->md)))
        return slot_fail(s, ES_ENOMEM, "out of memory decoding command %s", env->command_id);
    for (size_t i = 0; i < env->n_metadata; i++)
        s->md[i] = (es_kv_t){env->metadata[i]->key, env->metadata[i]->value};
    s->cmd = 0; /* executable; numbered by the caller */
}

static void slot_free(slot *s) {
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
    char topic[TOPIC_MAX];
    es_buf_t b = {0};
    es_err e = es_envelope_pack_caused(ev, fp, &b, err);
    if (e != ES_OK) {
        es_buf_free(&b);
        return e;
    }
    snprintf(topic, sizeof topic, "%s.events", type_name(p, type));
    size_t i = p->n_prod++;
    p->prod[i] = (produced){type, partition, -1, 0, RD_KAFKA_RESP_ERR_NO_ERROR};
    uintptr_t tag = (uintptr_t)((uint64_t)p->prod_gen << 32 | i); /* see dr_cb */
    e = es_kafka_produce_event(p->producer, topic, partition, ev, b.data, b.len, (void *)tag, err);
    if (e != ES_OK)
        p->n_prod--;
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
 * fails instead and is read again after a restore, which imports that record and this batch's
 * own events with their command ids. Transactions put control records between batches, so the
 * check does not apply to them.
 */
static es_err check_sole_writer(es_processor_t *p, es_log_t *log, const span *sp, es_error_t *err) {
    char key[TOPIC_MAX + 32], val[32];
    int found = 0;
    if (p->transactional)
        return ES_OK;
    offset_key(key, sizeof key, type_name(p, sp->type), sp->partition);
    es_err e = es_log_sqlite_get_meta(log, key, val, sizeof val, &found, err);
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
            e = save_next(log, type_name(p, spans[k].type), spans[k].partition, spans[k].last + 1,
                          err);
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
    if (log->ops->get_snapshot(log, s->env->aggregate_type, s->env->aggregate_id, &s->snap, NULL) ==
            ES_OK &&
        s->snap->version != r->version) {
        es_snapshot_free(s->snap);
        s->snap = NULL;
    }
}

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
    if (es_kafka_produce(p->side, &r, &err) != ES_OK)
        es_logf(p->cfg, ES_LOG_WARNING, "command processor: %s", err.message);
}

/* The aggregate's snapshot, when the local commit wrote one at the command's version. */
static void send_snapshot(es_processor_t *p, const slot *s) {
    const es_snapshot_t *snap = s->snap;
    const char *type = s->env->aggregate_type, *id = s->env->aggregate_id;
    if (snap) {
        Eskit__V1__Snapshot msg = ESKIT__V1__SNAPSHOT__INIT;
        char topic[TOPIC_MAX];
        msg.aggregate_type = (char *)type;
        msg.aggregate_id = (char *)id;
        msg.version = snap->version;
        msg.state_type = (char *)snap->state_type;
        msg.state = (ProtobufCBinaryData){snap->state_len, (uint8_t *)snap->state};
        msg.taken_at_us = snap->taken_at_us;
        msg.events_offset = p->prod[s->last_prod].offset;
        size_t len = eskit__v1__snapshot__get_packed_size(&msg);
        uint8_t *buf = malloc(len ? len : 1);
        snprintf(topic, sizeof topic, "%s.snapshots", type);
        if (buf) {
            eskit__v1__snapshot__pack(&msg, buf);
            side_produce(p, ES_KAFKA_SNAPSHOT, topic, s->m->partition, id, buf, len);
        }
    }
}

/* Answers one command on its reply_to topic; r NULL: the slot's own failure. */
static void send_reply(es_processor_t *p, const slot *s, const es_result_t *r) {
    Eskit__V1__CommandReply rep = ESKIT__V1__COMMAND_REPLY__INIT;
    const Eskit__V1__CommandEnvelope *env = s->env;
    size_t n = r ? r->n_events : 0;
    char **ids = calloc(n + 1, sizeof *ids);
    ProtobufCBinaryData *evs = calloc(n + 1, sizeof *evs);
    char fallback[TOPIC_MAX];
    const char *reply_to = env->reply_to ? env->reply_to : "";
    if (*reply_to && !is_reply_topic(reply_to)) { /* refused by decode_slot: answer it here */
        snprintf(fallback, sizeof fallback, "%s.replies",
                 s->type < p->n_types ? type_name(p, s->type) : "");
        reply_to = s->type < p->n_types ? fallback : "";
    }
    if (!*reply_to || !ids || !evs)
        goto out;
    rep.command_id = env->command_id;
    rep.aggregate_type = env->aggregate_type;
    rep.aggregate_id = env->aggregate_id;
    rep.outcome = r ? (Eskit__V1__Outcome)r->outcome : ESKIT__V1__OUTCOME__OUTCOME_ERROR;
    rep.code = r ? r->code : s->fail;
    rep.reason = r ? (r->reason ? r->reason : "") : (char *)s->reason;
    if (r) {
        rep.first_version = r->first_version;
        rep.last_version = r->last_version;
        rep.version = r->version;
        rep.duplicate = r->duplicate;
    }
    for (size_t i = 0; i < n; i++) {
        ids[i] = r->events[i]->event_id;
        if (es_envelope_encode(r->events[i], &evs[i].data, &evs[i].len, NULL) != ES_OK)
            goto out;
    }
    rep.n_event_ids = rep.n_events = n;
    rep.event_ids = ids;
    rep.events = evs;
    size_t len = eskit__v1__command_reply__get_packed_size(&rep);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf) {
        eskit__v1__command_reply__pack(&rep, buf);
        side_produce(p, ES_KAFKA_REPLY, reply_to, s->reply_partition, env->command_id, buf, len);
    }
out:
    for (size_t i = 0; evs && i < n; i++)
        free(evs[i].data);
    free(evs);
    free(ids);
}

/* Runs inside rd_kafka_consumer_poll when an offset commit completes. */
static void commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t e, rd_kafka_topic_partition_list_t *offs,
                      void *opaque) {
    es_processor_t *p = opaque;
    (void)rk, (void)offs;
    if (e && e != RD_KAFKA_RESP_ERR__NO_OFFSET)
        es_logf(p->cfg, ES_LOG_WARNING,
                "command processor: committing consumer offsets: %s (harmless: those commands "
                "are answered again, as duplicates)",
                rd_kafka_err2str(e));
}

/* Makes the batch's records come again: its partitions restore, the consumer seeks back. */
static void redo_batch(es_processor_t *p) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(4);
    for (size_t i = 0; i < p->n_batch; i++) {
        const rd_kafka_message_t *m = p->batch[i];
        const char *topic = rd_kafka_topic_name(m->rkt);
        owned *o = find_owned(p, type_of_topic(p, topic, "commands"), m->partition);
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

static es_err ensure_restored(es_processor_t *p, es_error_t *err) {
    for (size_t i = 0; i < p->n_batch; i++) {
        const rd_kafka_message_t *m = p->batch[i];
        const char *topic = rd_kafka_topic_name(m->rkt);
        add_owned(p, topic, m->partition);
        owned *o = find_owned(p, type_of_topic(p, topic, "commands"), m->partition);
        if (!o)
            return es_fail(err, ES_ENOMEM, "out of memory tracking partitions");
        if (!o->restored) {
            es_err e = restore(p, o, err);
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
                                           env->n_metadata};
    }
    hook_ctx h = {p, slots, p->n_batch};
    return es_engine_execute_hooked(p->local, cmds, *n_cmds, results, produce_events, &h, err);
}

static void answer_and_commit(es_processor_t *p, const slot *slots, const es_result_t *results) {
    for (size_t i = 0; i < p->n_batch; i++)
        send_snapshot(p, &slots[i]);
    for (size_t i = 0; i < p->n_batch; i++)
        if (slots[i].env)
            send_reply(p, &slots[i], slots[i].cmd >= 0 ? &results[slots[i].cmd] : NULL);
    if (rd_kafka_flush(p->side, SIDE_FLUSH_MS))
        es_logf(p->cfg, ES_LOG_WARNING,
                "command processor: replies or snapshots unsent after %d ms; callers retry "
                "with the same command id",
                SIDE_FLUSH_MS);
    if (p->transactional)
        return;
    /* Asynchronous: a commit that fails or is lost is harmless (the commands come again and
     * are answered as duplicates), so the next batch need not wait for the coordinator. */
    rd_kafka_topic_partition_list_t *offs = batch_offsets(p);
    rd_kafka_resp_err_t ke = rd_kafka_commit(p->consumer, offs, 1);
    if (ke)
        commit_cb(p->consumer, ke, offs, p);
    rd_kafka_topic_partition_list_destroy(offs);
}

static void drop_batch(es_processor_t *p) {
    for (size_t i = 0; i < p->n_batch; i++)
        rd_kafka_message_destroy(p->batch[i]);
    p->n_batch = 0;
}

static es_err process_batch(es_processor_t *p, size_t *handled, es_error_t *err) {
    size_t n = p->n_batch, n_cmds = 0;
    slot *slots = calloc(n, sizeof *slots);
    es_command_t *cmds = calloc(n, sizeof *cmds);
    es_result_t *results = calloc(n, sizeof *results);
    es_err e = slots && cmds && results ? ES_OK : es_fail(err, ES_ENOMEM, "out of memory");
    p->in_batch = 1;
    if (e == ES_OK)
        e = ensure_restored(p, err);
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
    drop_batch(p);
    p->in_batch = 0;
    return e;
}

/* ---- lifecycle -------------------------------------------------------------------------- */

/* A consumer in group (rebalance: the commands consumer, with the group's callbacks), or, group
 * NULL, a producer. */
static es_err make_handle(es_processor_t *p, const char *group, int txn, int rebalance,
                          rd_kafka_t **out, es_error_t *err) {
    es_kafka_opts_t o = {.role = group ? ES_KAFKA_CONSUMER : ES_KAFKA_PRODUCER,
                         .group = group,
                         .offset_reset = "earliest",
                         .fetch_wait_ms = WAIT_MS,
                         .transactional = txn,
                         .opaque = p,
                         .dr_cb = group ? NULL : dr_cb,
                         .rebalance_cb = rebalance ? rebalance_cb : NULL,
                         .commit_cb = rebalance ? commit_cb : NULL};
    return es_kafka_new(p->cfg, &o, out, err);
}

static es_err open_local(es_processor_t *p, es_engine_t *engine, es_error_t *err) {
    es_err e = ES_OK;
    if (!(p->local_cfg = es_config_dup(p->cfg)))
        return es_fail(err, ES_ENOMEM, "out of memory");
    e = es_config_set(p->local_cfg, "backend", "embedded", err);
    if (e == ES_OK)
        e = es_config_set(p->local_cfg, "db", es_config_get(p->cfg, "state.db"), err);
    if (e == ES_OK) /* a cache rebuildable from Kafka: no fsync per batch */
        e = es_config_set(p->local_cfg, "sqlite.synchronous", "normal", err);
    if (e == ES_OK)
        e = es_engine_new(p->local_cfg, &p->local, err);
    size_t n =
        es_engine_registration(engine, 0, &(const es_aggregate_def *){NULL}, &(void *){NULL});
    if (e == ES_OK && n == 0)
        e = es_fail(err, ES_EINVAL,
                    "es_processor_new: the engine has no aggregate types; register them first");
    if (e == ES_OK && !(p->types = calloc(n, sizeof *p->types)))
        e = es_fail(err, ES_ENOMEM, "out of memory");
    for (size_t i = 0; e == ES_OK && i < n; i++) {
        es_engine_registration(engine, i, &p->types[i].def, &p->types[i].opaque);
        e = es_engine_register(p->local, p->types[i].def, p->types[i].opaque, err);
        p->n_types = i + 1;
    }
    return e;
}

static es_err open_kafka(es_processor_t *p, es_error_t *err) {
    char group[320];
    const char *svc = es_config_get(p->cfg, "service.name");
    p->transactional = es_config_get(p->cfg, "kafka.transactional.id") != NULL;
    snprintf(group, sizeof group, "%s.commands", svc);
    es_err e = make_handle(p, group, 0, 1, &p->consumer, err);
    snprintf(group, sizeof group, "%s.eskit-restore", svc);
    if (e == ES_OK)
        e = make_handle(p, group, 0, 0, &p->reader, err);
    if (e == ES_OK)
        e = make_handle(p, NULL, p->transactional, 0, &p->producer, err);
    if (e == ES_OK && p->transactional) /* replies and snapshots stay outside transactions */
        e = make_handle(p, NULL, 0, 0, &p->side, err);
    else
        p->side = p->producer;
    if (e == ES_OK && p->transactional) {
        rd_kafka_error_t *ke = rd_kafka_init_transactions(p->producer, REQUEST_TIMEOUT_MS);
        if (ke)
            e = es_kafka_fail_error(p->producer, ke, NULL, err, "initialising Kafka transactions");
    }
    if (e != ES_OK)
        return e;
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new((int)p->n_types);
    for (size_t i = 0; i < p->n_types; i++) {
        char topic[TOPIC_MAX];
        snprintf(topic, sizeof topic, "%s.commands", type_name(p, i));
        rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
    }
    rd_kafka_resp_err_t ke = rd_kafka_subscribe(p->consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    return ke ? es_kafka_fail(p->consumer, ke, NULL, err, "subscribing to the commands topics")
              : ES_OK;
}

es_err es_processor_new(const es_config_t *cfg, es_engine_t *engine, es_processor_t **out,
                        es_error_t *err) {
    if (!out || !engine)
        return es_fail(err, ES_EINVAL, "es_processor_new: engine and out are required");
    *out = NULL;
    if (!cfg || !es_config_get(cfg, "brokers"))
        return es_fail(err, ES_EINVAL,
                       "the command processor needs the config key brokers (ESKIT_BROKERS), e.g. "
                       "brokers=localhost:9092");
    es_processor_t *p = calloc(1, sizeof *p);
    if (!p || !(p->own_cfg = es_config_dup(cfg))) {
        free(p);
        return es_fail(err, ES_ENOMEM, "out of memory creating a command processor");
    }
    p->cfg = p->own_cfg;
    es_stop_init(&p->stop);
    es_err e = open_local(p, engine, err);
    if (e == ES_OK && !(p->batch = calloc(BATCH_MAX, sizeof *p->batch)))
        e = es_fail(err, ES_ENOMEM, "out of memory creating a command processor");
    if (e == ES_OK)
        e = open_kafka(p, err);
    if (e != ES_OK) {
        es_processor_destroy(p);
        return e;
    }
    *out = p;
    return ES_OK;
}

void es_processor_destroy(es_processor_t *p) {
    if (!p)
        return;
    if (p->consumer) {
        rd_kafka_consumer_close(p->consumer); /* leaves the group: revoke finishes any batch */
        es_kafka_destroy(p->consumer, 0);
    }
    drop_batch(p);
    if (p->side && p->side != p->producer) {
        rd_kafka_flush(p->side, SIDE_FLUSH_MS);
        es_kafka_destroy(p->side, 0);
    }
    if (p->producer) {
        rd_kafka_flush(p->producer, SIDE_FLUSH_MS);
        es_kafka_destroy(p->producer, 0);
    }
    es_kafka_destroy(p->reader, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    es_engine_destroy(p->local);
    es_config_destroy(p->local_cfg);
    es_config_destroy(p->own_cfg);
    free(p->types);
    free(p->owned);
    free(p->prod);
    free(p->batch);
    free(p);
}

/* A consumer error: fatal ones end the poll, the rest librdkafka retries by itself. */
static es_err consumer_error(es_processor_t *p, const rd_kafka_message_t *m, es_error_t *err) {
    char fatal[256];
    if (rd_kafka_fatal_error(p->consumer, fatal, sizeof fatal))
        return es_fail(err, ES_EKAFKA, "the command consumer failed for good: %s", fatal);
    es_logf(p->cfg, ES_LOG_WARNING, "command processor: %s%s%s",
            m->rkt ? rd_kafka_topic_name(m->rkt) : "", m->rkt ? ": " : "",
            rd_kafka_message_errstr(m));
    return ES_OK;
}

es_err es_processor_poll(es_processor_t *p, int timeout_ms, size_t *handled, es_error_t *err) {
    size_t n = 0;
    es_err e = ES_OK;
    if (handled)
        *handled = 0;
    rd_kafka_message_t *m = rd_kafka_consumer_poll(p->consumer, timeout_ms);
    while (m && e == ES_OK) {
        if (m->err) {
            e = consumer_error(p, m, err);
            rd_kafka_message_destroy(m);
        } else {
            p->batch[p->n_batch++] = m;
        }
        if (p->n_batch == BATCH_MAX)
            break;
        m = rd_kafka_consumer_poll(p->consumer, 0);
    }
    if (p->n_batch && e == ES_OK)
        e = process_batch(p, &n, err);
    else
        drop_batch(p); /* a fatal consumer error: nothing more is committed */
    if (handled)
        *handled = n;
    return e;
}

/* A topic not there (ES_ENOTFOUND) is one more failure the processor rides out: its topics
 * may be created after it starts (processor.h). */
static es_err poll_once(void *opaque, int timeout_ms, es_error_t *err) {
    es_err e = es_processor_poll(opaque, timeout_ms, NULL, err);
    return e == ES_ENOTFOUND ? ES_ERETRY : e;
}

es_err es_processor_run(es_processor_t *p, es_error_t *err) {
    if (!p)
        return es_fail(err, ES_EINVAL, "es_processor_run: processor is NULL");
    es_err e = es_run_loop(poll_once, p, &p->stop, p->cfg, "command processor: ", err);
    es_stop_clear(&p->stop); /* the stop ended this run only (processor.h) */
    return e;
}

void es_processor_stop(es_processor_t *p) {
    es_stop_request(&p->stop);
}

void es_processor_get_stats(const es_processor_t *p, es_processor_stats *out) {
    es_processor_t *q = (es_processor_t *)p; /* atomic loads take non-const pointers in C11 */
    *out = (es_processor_stats){atomic_load(&q->stats.commands),
                                atomic_load(&q->stats.restores),
                                atomic_load(&q->stats.events_imported),
                                atomic_load(&q->stats.events_skipped),
                                atomic_load(&q->stats.snapshots_imported),
                                atomic_load(&q->stats.snapshots_malformed),
                                atomic_load(&q->stats.snapshots_unused),
                                atomic_load(&q->stats.stale),
                                atomic_load(&q->stats.gaps)};
}
