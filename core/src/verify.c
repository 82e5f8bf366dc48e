/*
 * es_store_verify: a log checked end to end, read-only, every problem reported with its place.
 *
 * Embedded: the file is opened read-only (nothing written, nothing created), and the checks
 * are eskit's own on top of SQLite's integrity_check, which knows B-trees but not events: a
 * scan of es_events in position order decodes every envelope and follows each stream (version
 * last + 1, linked to its previous event), then es_heads is compared with what the scan saw,
 * and the head file's end with the log's. Kafka: the "<type>.events" partitions are read from
 * their start; each record must decode and continue its aggregate's versions in one partition.
 */
#include "log/log.h"
#include "readpipe.h"
#include "backends.h"
#include "sql.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lru.h"

#define VERIFY_STALL_US 10000000 /* Kafka: a partition read without progress for this long */

typedef struct stream_info {
    int64_t id, type_id;
    char *agg;
    uint64_t last_version;
    int64_t last_pos;
    uint64_t below_version; /* the newest event below heads_from: what es_heads must hold */
    int64_t below_pos;
    uint64_t seeded; /* seeded at this version (a Kafka restore's seed_stream); 0: from 1 */
    int has_head;
} stream_info;

typedef struct type_info {
    int64_t id;
    char *name;
} type_info;

typedef struct vctx {
    es_verify_cb *cb;
    void *opaque;
    es_verify_summary_t *sum;
    sqlite3 *db;
    const char *path;
    type_info *types;
    size_t n_types;
    stream_info *streams;
    size_t n_streams;
    int64_t heads_from; /* es_heads holds the events below it (deferred heads); 0: all */
} vctx;

typedef struct place {
    const char *topic;
    int32_t partition;
    int64_t position;
    const char *type, *id;
    uint64_t version;
} place;

static void problem(vctx *v, const char *check, const place *at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void problem(vctx *v, const char *check, const place *at, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    v->sum->problems++;
    if (!v->cb)
        return;
    place none = {NULL, 0, -1, NULL, NULL, 0};
    at = at ? at : &none;
    es_verify_problem_t p = {check,    at->topic, at->partition, at->position,
                             at->type, at->id,    at->version,   msg};
    v->cb(&p, v->opaque);
}

static const char *type_name(const vctx *v, int64_t id) {
    for (size_t i = 0; i < v->n_types; i++)
        if (v->types[i].id == id)
            return v->types[i].name;
    return NULL;
}

static stream_info *find_stream(const vctx *v, int64_t id) {
    size_t lo = 0, hi = v->n_streams;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v->streams[mid].id == id)
            return &v->streams[mid];
        if (v->streams[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* A statement that failed part way: what was read so far stands, the rest is damage. */
static void read_failed(vctx *v, int rc, const char *what) {
    problem(v, "integrity", NULL, "%s: %s (SQLite error %d)", what, sqlite3_errmsg(v->db), rc);
}

static void integrity(vctx *v) {
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(v->db, "PRAGMA integrity_check(100)", -1, &s, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *line = (const char *)sqlite3_column_text(s, 0);
        if (line && strcmp(line, "ok"))
            problem(v, "integrity", NULL, "SQLite: %s", line);
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_DONE && rc != SQLITE_OK)
        read_failed(v, rc, "running integrity_check");
    sqlite3_finalize(s);
}

static es_err grow(void **items, size_t *cap, size_t n, size_t size) {
    if (n < *cap)
        return ES_OK;
    size_t c = *cap ? *cap * 2 : 64;
    void *p = realloc(*items, c * size);
    if (!p)
        return ES_ENOMEM;
    *items = p;
    *cap = c;
    return ES_OK;
}

/* es_types and es_streams, which the event scan names its rows by. */
static es_err load_names(vctx *v, es_error_t *err) {
    sqlite3_stmt *s = NULL;
    size_t cap = 0;
    int rc = sqlite3_prepare_v2(v->db, "SELECT id, name FROM es_types ORDER BY id", -1, &s, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (grow((void **)&v->types, &cap, v->n_types, sizeof *v->types) != ES_OK)
            break;
        const char *name = (const char *)sqlite3_column_text(s, 1);
        type_info *t = &v->types[v->n_types];
        t->id = sqlite3_column_int64(s, 0);
        if (!(t->name = strdup(name ? name : "")))
            break;
        v->n_types++;
        rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    if (rc == SQLITE_ROW)
        return es_fail(err, ES_ENOMEM, "out of memory verifying %s", v->path);
    if (rc != SQLITE_DONE)
        read_failed(v, rc, "reading es_types");
    cap = 0;
    rc = sqlite3_prepare_v2(v->db, "SELECT id, type_id, agg_id FROM es_streams ORDER BY id", -1, &s,
                            NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (grow((void **)&v->streams, &cap, v->n_streams, sizeof *v->streams) != ES_OK)
            break;
        const char *agg = (const char *)sqlite3_column_text(s, 2);
        stream_info *st = &v->streams[v->n_streams];
        memset(st, 0, sizeof *st);
        st->id = sqlite3_column_int64(s, 0);
        st->type_id = sqlite3_column_int64(s, 1);
        if (!(st->agg = strdup(agg ? agg : "")))
            break;
        v->n_streams++;
        rc = SQLITE_OK;
        if (!type_name(v, st->type_id))
            problem(v, "stream", &(place){.position = -1, .id = st->agg},
                    "stream %lld has aggregate type id %lld, which es_types does not hold",
                    (long long)st->id, (long long)st->type_id);
    }
    sqlite3_finalize(s);
    if (rc == SQLITE_ROW)
        return es_fail(err, ES_ENOMEM, "out of memory verifying %s", v->path);
    if (rc != SQLITE_DONE)
        read_failed(v, rc, "reading es_streams");
    v->sum->streams = v->n_streams;
    return ES_OK;
}

/* The envelope of one row: it decodes, and says what the row says. */
static void check_envelope(vctx *v, sqlite3_stmt *s, const place *at) {
    char topic[ES_MAX_TYPE_LEN + 16];
    snprintf(topic, sizeof topic, "%s.events", at->type ? at->type : "?");
    es_position_t pos = {topic, at->id, 0, at->position};
    es_event_t *ev = NULL;
    es_error_t derr = {0};
    if (es_envelope_decode(sqlite3_column_blob(s, 5), (size_t)sqlite3_column_bytes(s, 5), &pos, &ev,
                           &derr) != ES_OK) {
        problem(v, "envelope", at, "the envelope does not decode: %s", derr.message);
        return;
    }
    if (at->type && strcmp(ev->aggregate_type, at->type))
        problem(v, "envelope", at, "the envelope names aggregate type '%.128s', the row '%s'",
                ev->aggregate_type, at->type);
    if (at->id && strcmp(ev->aggregate_id, at->id))
        problem(v, "envelope", at, "the envelope names aggregate id '%.255s'", ev->aggregate_id);
    if (ev->version != at->version)
        problem(v, "envelope", at, "the envelope holds version %llu, the row %llu",
                (unsigned long long)ev->version, (unsigned long long)at->version);
    es_event_free(ev);
}

/* One row of es_events, in position order: its stream must continue exactly. */
static void check_event(vctx *v, sqlite3_stmt *s, int64_t *last_pos) {
    int64_t pos = sqlite3_column_int64(s, 0), stream = sqlite3_column_int64(s, 1);
    uint64_t version = (uint64_t)sqlite3_column_int64(s, 2);
    int64_t prev = sqlite3_column_int64(s, 3), tid = sqlite3_column_int64(s, 4);
    stream_info *st = find_stream(v, stream);
    place at = {NULL, 0, pos, type_name(v, st ? st->type_id : tid), st ? st->agg : NULL, version};
    v->sum->events++;
    if (!v->sum->first)
        v->sum->first = pos;
    v->sum->last = pos;
    if (pos <= *last_pos || pos < 1)
        problem(v, "position", &at, "position %lld follows position %lld", (long long)pos,
                (long long)*last_pos);
    *last_pos = pos;
    if (!st) {
        problem(v, "stream", &at,
                "the event belongs to stream %lld, which es_streams does not hold",
                (long long)stream);
        check_envelope(v, s, &at);
        return;
    }
    if (tid != st->type_id)
        problem(v, "stream", &at, "the event has aggregate type id %lld, its stream %lld",
                (long long)tid, (long long)st->type_id);
    /* A chain that starts past version 1 links to no earlier event: the stream was seeded at
     * the version before (seed_stream), its history the snapshot's (check_heads). A lost first
     * event leaves a link to it instead. */
    if (!st->last_version && !st->last_pos && !prev && version > 1) {
        st->seeded = st->last_version = st->below_version = version - 1;
        st->below_pos = 0;
    }
    if (version <= st->last_version)
        problem(v, "version", &at, "version %llu again: the stream was at version %llu already",
                (unsigned long long)version, (unsigned long long)st->last_version);
    else if (version != st->last_version + 1)
        problem(v, "version", &at, "versions %llu to %llu are missing",
                (unsigned long long)st->last_version + 1, (unsigned long long)version - 1);
    if (prev != st->last_pos)
        problem(v, "version", &at,
                "the event links to position %lld as its stream's previous event, not %lld",
                (long long)prev, (long long)st->last_pos);
    if (version > st->last_version && (!v->heads_from || pos < v->heads_from)) {
        st->below_version = version;
        st->below_pos = pos;
    }
    if (version > st->last_version) {
        st->last_version = version;
        st->last_pos = pos;
    }
    check_envelope(v, s, &at);
}

static void scan_events(vctx *v) {
    sqlite3_stmt *s = NULL;
    int64_t last_pos = 0;
    int rc = sqlite3_prepare_v2(
        v->db, "SELECT pos, stream, version, prev, type_id, envelope FROM es_events ORDER BY pos",
        -1, &s, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        check_event(v, s, &last_pos);
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_DONE && rc != SQLITE_OK) {
        char what[96];
        snprintf(what, sizeof what, "reading es_events after position %lld", (long long)last_pos);
        read_failed(v, rc, what);
    }
    sqlite3_finalize(s);
}

/* Where es_heads ends: a writer defers the heads of the log's tail (log_sqlite.c, tail_heads)
 * and records here the first position they are deferred from. */
static void read_heads_from(vctx *v, es_log_t *log) {
    char value[32];
    int found = 0;
    es_error_t err = {0};
    if (log->store->get_meta(log, "heads_from", value, sizeof value, &found, &err) != ES_OK)
        problem(v, "integrity", NULL, "%s", err.message);
    else if (found)
        v->heads_from = strtoll(value, NULL, 10);
}

/* es_heads against the scan: each stream's version and newest event below heads_from (the
 * newer ones are the tail's, which the scan checked link by link). */
static void check_heads(vctx *v) {
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(v->db,
                                "SELECT stream, version, head, snap_version FROM es_heads "
                                "ORDER BY stream",
                                -1, &s, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        rc = SQLITE_OK;
        int64_t id = sqlite3_column_int64(s, 0), head = sqlite3_column_int64(s, 2);
        uint64_t version = (uint64_t)sqlite3_column_int64(s, 1);
        stream_info *st = find_stream(v, id);
        if (!st) {
            problem(v, "heads", NULL,
                    "es_heads has a row for stream %lld, which es_streams does "
                    "not hold",
                    (long long)id);
            continue;
        }
        place at = {NULL, 0, head ? head : -1, type_name(v, st->type_id), st->agg, version};
        st->has_head = 1;
        if (!head && version && !st->last_version) /* seeded, no event appended yet */
            st->seeded = st->below_version = version;
        uint64_t snap =
            sqlite3_column_type(s, 3) != SQLITE_NULL ? (uint64_t)sqlite3_column_int64(s, 3) : 0;
        if (st->seeded && snap < st->seeded)
            problem(v, "heads", &at,
                    "the stream starts at version %llu (seeded: its earlier events are not in "
                    "this file), but no snapshot here covers version %llu%s; a Kafka restore "
                    "leaves this until its import is done",
                    (unsigned long long)st->seeded + 1, (unsigned long long)st->seeded,
                    snap ? " (the snapshot is older)" : "");
        if (version != st->below_version || head != st->below_pos)
            problem(v, "heads", &at,
                    "es_heads has the stream at version %llu (position %lld); its events end at "
                    "version %llu (position %lld)%s",
                    (unsigned long long)version, (long long)head,
                    (unsigned long long)st->below_version, (long long)st->below_pos,
                    v->heads_from ? " below the deferred heads" : "");
        if (snap > version)
            problem(v, "heads", &at, "the snapshot is of version %llu, past the stream's %llu",
                    (unsigned long long)snap, (unsigned long long)version);
    }
    if (rc != SQLITE_DONE && rc != SQLITE_OK)
        read_failed(v, rc, "reading es_heads");
    sqlite3_finalize(s);
    for (size_t i = 0; i < v->n_streams; i++) {
        stream_info *st = &v->streams[i];
        if (!st->has_head && st->below_version)
            problem(v, "heads",
                    &(place){NULL, 0, st->below_pos, type_name(v, st->type_id), st->agg, 0},
                    "es_heads has no row for the stream, whose events end at version %llu",
                    (unsigned long long)st->below_version);
    }
}

static void check_end(vctx *v, es_log_t *log) {
    int64_t recorded, found;
    const char *why;
    es_log_sqlite_end(log, &recorded, &found, &why);
    v->sum->recorded_end = recorded;
    if (found < 0) {
        problem(v, "end", NULL, "%s", why ? why : "the log's end cannot be read");
        return;
    }
    if (why)
        problem(v, "end", NULL, "%s-head is not used: %s", v->path, why);
    /* A writer that came while the file was read unlocked committed what the head file
     * records and the scan did not see: no loss, but a reason to run it again. */
    if (recorded > found && !(v->sum->disturbed = es_log_sqlite_disturbed(log)))
        problem(v, "end", NULL,
                "the log ends at position %lld, but %s-head records position %lld as committed: "
                "%lld acknowledged event(s) are gone (a damaged or cut -wal file, or an older copy "
                "of the database)",
                (long long)found, v->path, (long long)recorded, (long long)(recorded - found));
    if (found != v->sum->last)
        problem(v, "end", NULL,
                "the log's end is position %lld, but its last event read is at %lld",
                (long long)found, (long long)v->sum->last);
}

static es_err verify_file(const es_config_t *cfg, vctx *v, es_error_t *err) {
    es_log_t *log = NULL;
    es_err e = es_log_sqlite_open_flags(cfg, ES_LOG_READONLY | ES_LOG_NO_END_CHECK, &log, err);
    if (e != ES_OK)
        return e;
    v->db = es_log_sqlite_db(log);
    integrity(v);
    es_sql_tx tx = es_sql_tx_on(v->db, v->path);
    es_sql_begin(&tx, ES_SQL_DEFERRED, "starting a read", NULL); /* one snapshot for the scans */
    e = load_names(v, err);
    if (e == ES_OK) {
        read_heads_from(v, log);
        scan_events(v);
        check_heads(v);
        check_end(v, log);
    }
    es_sql_rollback(&tx); /* it only read */
    v->sum->disturbed |= es_log_sqlite_disturbed(log);
    for (size_t i = 0; i < v->n_types; i++)
        free(v->types[i].name);
    for (size_t i = 0; i < v->n_streams; i++)
        free(v->streams[i].agg);
    free(v->types);
    free(v->streams);
    log->destroy(log);
    return e;
}

/* Kafka: what each aggregate reached so far, keyed by its id. */
typedef struct key_state {
    int32_t partition;
    uint64_t version;
} key_state;

typedef struct topic_ctx {
    vctx *v;
    const char *type;
    es_lru_t *keys;
    es_err e;
} topic_ctx;

static int on_record(const es_raw_record_t *rec, void *opaque) {
    topic_ctx *t = opaque;
    const char *key = es_raw_key(rec); /* the embedded log's, from es_streams */
    es_position_t pos = {rec->topic, key, rec->partition, rec->offset};
    place at = {rec->topic, rec->partition, rec->offset, t->type, key, 0};
    es_event_t *ev = NULL;
    es_error_t derr = {0};
    t->v->sum->events++;
    if (es_envelope_decode(rec->value, rec->len, &pos, &ev, &derr) != ES_OK) {
        problem(t->v, "envelope", &at, "the record does not decode: %s", derr.message);
        return 0;
    }
    at.id = ev->aggregate_id;
    at.version = ev->version;
    if (key && strcmp(key, ev->aggregate_id))
        problem(t->v, "envelope", &at, "the record's key is '%.255s'", key);
    size_t klen = strlen(ev->aggregate_id);
    key_state *k = es_lru_get(t->keys, ev->aggregate_id, klen);
    if (!k) {
        if (!(k = calloc(1, sizeof *k)) || es_lru_put(t->keys, ev->aggregate_id, klen, k) != 0) {
            t->e = ES_ENOMEM;
            es_event_free(ev);
            return 1;
        }
        k->partition = rec->partition;
        t->v->sum->streams++;
    }
    if (k->partition != rec->partition)
        problem(t->v, "version", &at, "the aggregate's events are in partitions %d and %d",
                (int)k->partition, (int)rec->partition);
    else if (ev->version <= k->version)
        problem(t->v, "version", &at, "version %llu again: the aggregate was at version %llu",
                (unsigned long long)ev->version, (unsigned long long)k->version);
    else if (ev->version != k->version + 1)
        problem(t->v, "version", &at, "versions %llu to %llu are missing",
                (unsigned long long)k->version + 1, (unsigned long long)ev->version - 1);
    if (ev->version > k->version)
        k->version = ev->version;
    es_event_free(ev);
    return 0;
}

static es_err verify_partition(es_log_t *log, topic_ctx *t, const char *topic, int32_t p,
                               es_error_t *err) {
    int64_t end = 0;
    uint64_t count = 0;
    es_err e = log->reader->topic_end(log, topic, p, 0, &end, &count, err);
    es_topic_pos_t pos = {topic, p, 0};
    int64_t idle_since = 0;
    while (e == ES_OK && t->e == ES_OK && pos.offset < end) {
        int64_t before = pos.offset;
        es_error_t ferr = {0};
        if (log->reader->fetch(log, &pos, 1, 1000, on_record, t, &ferr) != ES_OK) {
            problem(
                t->v, "integrity",
                &(place){.topic = topic, .partition = p, .position = pos.offset, .type = t->type},
                "%s", ferr.message);
            break;
        }
        if (pos.offset > before)
            idle_since = 0;
        else if (!idle_since)
            idle_since = es_now_us();
        else if (es_now_us() - idle_since > VERIFY_STALL_US)
            return es_fail(err, ES_ETIMEOUT,
                           "%s[%d]: no record arrived for %d s at offset %lld of %lld; is the "
                           "broker reachable?",
                           topic, (int)p, VERIFY_STALL_US / 1000000, (long long)pos.offset,
                           (long long)end);
    }
    return e != ES_OK ? e : t->e == ES_OK ? ES_OK : es_fail(err, t->e, "out of memory");
}

static es_err verify_topic(es_log_t *log, vctx *v, const char *type, es_error_t *err) {
    char topic[ES_MAX_TYPE_LEN + 16];
    int32_t parts = 0;
    es_err e = es_validate_aggregate_type(type, err);
    snprintf(topic, sizeof topic, "%s.events", type);
    topic_ctx t = {v, type, es_lru_new(ES_LRU_UNBOUNDED, free, NULL), ES_OK};
    if (e == ES_OK && !t.keys)
        e = es_fail(err, ES_ENOMEM, "out of memory");
    if (e == ES_OK)
        e = log->reader->partitions(log, topic, &parts, err);
    for (int32_t p = 0; e == ES_OK && p < parts; p++)
        e = verify_partition(log, &t, topic, p, err);
    es_lru_destroy(t.keys);
    return e;
}

static es_err verify_kafka(const es_config_t *cfg, const char *const *types, vctx *v,
                           es_error_t *err) {
    const char *list = es_config_get(cfg, "topics.aggregates");
    char *buf = !types && list ? strdup(list) : NULL, *save = NULL;
    if (!types && !buf)
        return es_fail(err, ES_EINVAL,
                       "name the aggregate types whose events topics to verify, or set "
                       "topics.aggregates (ESKIT_TOPICS_AGGREGATES)");
    es_log_t *log = NULL;
    es_err e = es_log_open(cfg, &log, err);
    if (types)
        for (const char *const *t = types; e == ES_OK && *t; t++)
            e = verify_topic(log, v, *t, err);
    else
        for (char *t = strtok_r(buf, ", \t", &save); e == ES_OK && t;
             t = strtok_r(NULL, ", \t", &save))
            e = verify_topic(log, v, t, err);
    if (log)
        log->destroy(log);
    free(buf);
    return e;
}

es_err es_store_verify(const es_config_t *cfg, const char *const *types, es_verify_cb *cb,
                       void *opaque, es_verify_summary_t *sum, es_error_t *err) {
    es_verify_summary_t local = {0};
    if (!cfg)
        return es_fail(err, ES_EINVAL, "es_store_verify: a config is required");
    sum = sum ? sum : &local;
    memset(sum, 0, sizeof *sum);
    sum->recorded_end = -1;
    vctx v = {cb, opaque, sum, NULL, es_config_get(cfg, "db"), NULL, 0, NULL, 0, 0};
    if (es_backend_of(cfg)->partitioned)
        return verify_kafka(cfg, types, &v, err);
    return verify_file(cfg, &v, err);
}

es_err es_store_accept_end(const es_config_t *cfg, int64_t *before, int64_t *after,
                           es_error_t *err) {
    if (!cfg)
        return es_fail(err, ES_EINVAL, "es_store_accept_end: a config is required");
    const es_backend *b = es_backend_of(cfg);
    if (!b->accept_end)
        return es_fail(err, ES_EINVAL,
                       "es_store_accept_end: only the embedded backend keeps a head file");
    return b->accept_end(cfg, before, after, err);
}
