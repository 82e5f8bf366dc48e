/*
 * es_store_t: name checks, locking and the append protocol over an es_log.
 * One mutex serializes the threads of a process; SQLite's file lock
 * serializes processes.
 */
#include "store.h"

#include "backends.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct es_store {
    es_config_t *cfg;
    es_log_t *log;
    pthread_mutex_t lock;
    int depth;
};

es_err es_store_new(const es_config_t *cfg, es_store_t **out, es_error_t *err) {
    return es_store_open(cfg, ES_OPEN_WRITE, out, err);
}

es_err es_store_open(const es_config_t *cfg, es_open_mode mode, es_store_t **out, es_error_t *err) {
    if (!out)
        return es_fail(err, ES_EINVAL, "es_store_open: out is required");
    if (mode != ES_OPEN_WRITE && mode != ES_OPEN_READONLY)
        return es_fail(err, ES_EINVAL, "es_store_open: unknown mode %d", (int)mode);
    *out = NULL;
    es_store_t *s = calloc(1, sizeof *s);
    if (!s || !(s->cfg = cfg ? es_config_dup(cfg) : es_config_new())) {
        free(s);
        return es_fail(err, ES_ENOMEM, "out of memory opening a store");
    }
    es_err e =
        es_log_open_flags(s->cfg, mode == ES_OPEN_READONLY ? ES_LOG_READONLY : 0, &s->log, err);
    if (e != ES_OK) {
        es_config_destroy(s->cfg);
        free(s);
        return e;
    }
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&s->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    *out = s;
    return ES_OK;
}

void es_store_destroy(es_store_t *store) {
    if (!store)
        return;
    store->log->destroy(store->log);
    pthread_mutex_destroy(&store->lock);
    es_config_destroy(store->cfg);
    free(store);
}

const es_config_t *es_store_config(const es_store_t *store) {
    return store->cfg;
}

es_err es_store_lock(es_store_t *store, es_log_t **log, es_error_t *err) {
    pthread_mutex_lock(&store->lock);
    if (store->depth > 0) {
        /* Only the owning thread can get here (the mutex is recursive): a callback
         * called back into the store while a read is open on it. */
        pthread_mutex_unlock(&store->lock);
        return es_fail(err, ES_ESTATE,
                       "store called from inside one of its own read callbacks; collect the "
                       "events first, then act on them");
    }
    store->depth++;
    *log = store->log;
    return ES_OK;
}

void es_store_unlock(es_store_t *store) {
    store->depth--;
    pthread_mutex_unlock(&store->lock);
}

/* es_store_lock for a use of the event store role; a backend that has none (backends.h) refuses
 * with ES_ESTATE, saying where its writes go. */
static es_err lock_store_role(es_store_t *store, es_log_t **log, const char *what,
                              es_error_t *err) {
    es_err e = es_store_lock(store, log, err);
    if (e == ES_OK && !(*log)->store) {
        es_store_unlock(store);
        return es_fail(err, ES_ESTATE, "%s: %s", what, (*log)->backend->no_store);
    }
    return e;
}

static es_err check_names(const char *type, const char *id, es_error_t *err) {
    es_err e = es_validate_aggregate_type(type, err);
    return e == ES_OK ? es_validate_aggregate_id(id, err) : e;
}

es_err es_check_expect(const char *type, const char *id, es_expect expect, uint64_t expected,
                       uint64_t current, es_error_t *err) {
    switch (expect) {
    case ES_EXPECT_ANY:
        return ES_OK;
    case ES_EXPECT_NO_STREAM:
        if (current == 0)
            return ES_OK;
        return es_fail(err, ES_ECONFLICT, "%s/%s already exists (version %llu), expected no stream",
                       type, id, (unsigned long long)current);
    case ES_EXPECT_EXISTS:
        if (current > 0)
            return ES_OK;
        return es_fail(err, ES_ECONFLICT, "%s/%s does not exist, expected an existing stream", type,
                       id);
    case ES_EXPECT_EXACT:
        if (current == expected)
            return ES_OK;
        return es_fail(err, ES_ECONFLICT, "%s/%s is at version %llu, expected version %llu", type,
                       id, (unsigned long long)current, (unsigned long long)expected);
    }
    return es_fail(err, ES_EINVAL, "unknown expectation %d for %s/%s", (int)expect, type, id);
}

void es_pending_free(es_pending_t *p) {
    for (size_t i = 0; p->bufs && i < p->cap; i++)
        es_buf_free(&p->bufs[i]);
    free(p->bufs);
    free(p->recs);
    free(p->offsets);
    free(p->evs);
    memset(p, 0, sizeof *p);
}

static es_err pending_reserve(es_pending_t *p, size_t n) {
    if (n <= p->cap)
        return ES_OK;
    es_event_t *evs = realloc(p->evs, n * sizeof *evs);
    if (evs)
        p->evs = evs;
    es_log_record_t *recs = realloc(p->recs, n * sizeof *recs);
    if (recs)
        p->recs = recs;
    int64_t *offsets = realloc(p->offsets, n * sizeof *offsets);
    if (offsets)
        p->offsets = offsets;
    es_buf_t *bufs = realloc(p->bufs, n * sizeof *bufs);
    if (bufs) {
        memset(bufs + p->cap, 0, (n - p->cap) * sizeof *bufs);
        p->bufs = bufs;
    }
    if (!evs || !recs || !offsets || !bufs)
        return ES_ENOMEM;
    p->cap = n;
    return ES_OK;
}

es_err es_pending_build_caused(es_pending_t *p, const char *type, const char *id, uint64_t base,
                               const es_new_event_t *events, size_t n, const es_fingerprint_t *fp,
                               const uint32_t *schema_versions, es_error_t *err) {
    p->n = 0;
    if (pending_reserve(p, n) != ES_OK)
        return es_fail(err, ES_ENOMEM, "out of memory preparing %zu events", n);
    int64_t now = es_now_us();
    for (size_t i = 0; i < n; i++) {
        const es_new_event_t *ne = &events[i];
        es_event_t *ev = &p->evs[i];
        if (!ne->event_type || !*ne->event_type)
            return es_fail(err, ES_EINVAL, "event %zu for %s/%s has no event type", i, type, id);
        es_uuid7_at(now, ev->event_id);
        ev->offset = -1;   /* the log assigns it */
        ev->partition = 0; /* one log on the embedded backend */
        ev->aggregate_type = type;
        ev->aggregate_id = id;
        ev->version = base + i + 1;
        ev->event_type = ne->event_type;
        ev->payload = ne->payload;
        ev->payload_len = ne->payload_len;
        ev->occurred_at_us = now;
        ev->command_id = ne->command_id;
        ev->correlation_id = ne->correlation_id;
        ev->metadata = ne->metadata;
        ev->n_metadata = ne->n_metadata;
        ev->schema_version = schema_versions ? schema_versions[i] : 0;
        es_err e = es_envelope_pack_caused(ev, fp, &p->bufs[i], err);
        if (e != ES_OK)
            return e;
        p->recs[i] = (es_log_record_t){ev, p->bufs[i].data, p->bufs[i].len};
    }
    p->n = n;
    return ES_OK;
}

es_err es_pending_build(es_pending_t *p, const char *type, const char *id, uint64_t base,
                        const es_new_event_t *events, size_t n, es_error_t *err) {
    return es_pending_build_caused(p, type, id, base, events, n, NULL, NULL, err);
}

es_err es_store_append(es_store_t *store, const char *type, const char *id, es_expect expect,
                       uint64_t expected_version, const es_new_event_t *events, size_t n,
                       es_append_result_t *res, es_error_t *err) {
    es_log_t *log = NULL;
    es_pending_t p = {0};
    uint64_t current = 0;
    int64_t first = 0, last = 0;
    es_err e = check_names(type, id, err);
    if (e != ES_OK)
        return e;
    if (n == 0 || !events)
        return es_fail(err, ES_EINVAL, "append to %s/%s needs at least one event", type, id);
    for (size_t i = 0; i < n; i++)
        if ((e = es_validate_new_event(&events[i], err)) != ES_OK) {
            es_error_prefix(err, "event %zu of the append to %s/%s: ", i + 1, type, id);
            return e;
        }
    char what[ES_MAX_TYPE_LEN + ES_MAX_ID_LEN + 32];
    snprintf(what, sizeof what, "appending to %s/%s", type, id);
    if ((e = lock_store_role(store, &log, what, err)) != ES_OK)
        return e;
    e = log->store->begin(log, err);
    if (e == ES_OK)
        e = log->reader->stream_version(log, type, id, &current, err);
    if (e == ES_OK)
        e = es_check_expect(type, id, expect, expected_version, current, err);
    if (e == ES_OK && (e = es_pending_build(&p, type, id, current, events, n, err)) == ES_OK) {
        e = log->store->append(log, type, id, current, p.recs, n, p.offsets, err);
        first = p.offsets[0];
        last = p.offsets[n - 1];
    }
    es_pending_free(&p);
    if (e == ES_OK)
        e = log->store->commit(log, err);
    else
        log->store->rollback(log);
    es_store_unlock(store);
    if (e == ES_OK && res)
        *res = (es_append_result_t){current + 1, current + n, first, last};
    return e;
}

/* es_store_publish on an event store: the run evs[i..j) of one aggregate, appended past what
 * its stream already holds. */
static es_err append_run(es_log_t *log, es_event_t *const *evs, size_t i, size_t j,
                         es_error_t *err) {
    const char *type = evs[i]->aggregate_type, *id = evs[i]->aggregate_id;
    uint64_t version = 0;
    es_err e = log->reader->stream_version(log, type, id, &version, err);
    size_t k = i;
    while (e == ES_OK && k < j && evs[k]->version <= version)
        k++;
    if (e != ES_OK || k == j)
        return e;
    if (evs[k]->version != version + 1)
        return es_fail(err, ES_EIO,
                       "%s/%s: the log ends at version %llu but the next event to write is "
                       "version %llu",
                       type, id, (unsigned long long)version, (unsigned long long)evs[k]->version);
    es_log_record_t *recs = calloc(j - k, sizeof *recs);
    es_buf_t *bufs = calloc(j - k, sizeof *bufs);
    int64_t *offsets = calloc(j - k, sizeof *offsets);
    if (!recs || !bufs || !offsets)
        e = es_fail(err, ES_ENOMEM, "out of memory writing %zu events", j - k);
    for (size_t m = k; e == ES_OK && m < j; m++) {
        e = es_envelope_pack_caused(evs[m], NULL, &bufs[m - k], err);
        recs[m - k] = (es_log_record_t){evs[m], bufs[m - k].data, bufs[m - k].len};
    }
    if (e == ES_OK)
        e = log->store->append(log, type, id, version, recs, j - k, offsets, err);
    for (size_t m = 0; bufs && m < j - k; m++)
        es_buf_free(&bufs[m]);
    free(bufs);
    free(recs);
    free(offsets);
    return e;
}

static int same_aggregate(const es_event_t *a, const es_event_t *b) {
    return !strcmp(a->aggregate_id, b->aggregate_id) &&
           !strcmp(a->aggregate_type, b->aggregate_type);
}

es_err es_store_publish(es_store_t *store, es_event_t *const *evs, size_t n, const es_stop_t *stop,
                        uint8_t *ok, es_error_t *err) {
    es_log_t *log = NULL;
    memset(ok, 0, n);
    es_err e = es_store_lock(store, &log, err);
    if (e != ES_OK || n == 0) {
        if (e == ES_OK)
            es_store_unlock(store);
        return e;
    }
    if (!log->store) {
        e = log->reader->produce
                ? log->reader->produce(log, evs, n, stop, ok, err)
                : es_fail(err, ES_ESTATE, "the %s backend cannot write events", log->backend->name);
        es_store_unlock(store);
        return e;
    }
    e = log->store->begin(log, err);
    for (size_t i = 0, j; e == ES_OK && i < n; i = j) {
        for (j = i + 1; j < n && same_aggregate(evs[j], evs[i]); j++)
            ;
        e = append_run(log, evs, i, j, err);
    }
    if (e == ES_OK)
        e = log->store->commit(log, err);
    else
        log->store->rollback(log);
    es_store_unlock(store);
    if (e == ES_OK)
        memset(ok, 1, n);
    return e;
}

es_err es_store_stream_version(es_store_t *store, const char *type, const char *id,
                               uint64_t *version, es_error_t *err) {
    es_log_t *log = NULL;
    es_err e = check_names(type, id, err);
    if (e == ES_OK && (e = es_store_lock(store, &log, err)) == ES_OK) {
        e = log->reader->stream_version(log, type, id, version, err);
        es_store_unlock(store);
    }
    return e;
}

/* Holds the store while its callback runs, so a callback that calls back in gets ES_ESTATE. */
es_err es_store_read_stream(es_store_t *store, const char *type, const char *id,
                            uint64_t from_version, es_event_cb *cb, void *opaque, es_error_t *err) {
    es_log_t *log = NULL;
    es_err e = check_names(type, id, err);
    if (e == ES_OK && !cb)
        e = es_fail(err, ES_EINVAL, "es_store_read_stream: a callback is required");
    if (e == ES_OK && (e = es_store_lock(store, &log, err)) == ES_OK) {
        e = log->reader->read_stream(log, type, id, from_version, 0, cb, opaque, err);
        es_store_unlock(store);
    }
    return e;
}

es_err es_store_read_log(es_store_t *store, const char *const *types, int64_t from_offset,
                         size_t max, es_event_cb *cb, void *opaque, int64_t *next_offset,
                         es_error_t *err) {
    es_log_t *log = NULL;
    if (!cb)
        return es_fail(err, ES_EINVAL, "es_store_read_log: a callback is required");
    for (const char *const *t = types; t && *t; t++) {
        es_err e = es_validate_aggregate_type(*t, err);
        if (e != ES_OK)
            return e;
    }
    es_err e = es_store_lock(store, &log, err);
    if (e == ES_OK) {
        e = log->reader->read_log(log, types, from_offset < 1 ? 1 : from_offset, max, cb, opaque,
                                  next_offset, err);
        es_store_unlock(store);
    }
    return e;
}

es_err es_store_end_offset(es_store_t *store, int64_t *end, es_error_t *err) {
    es_log_t *log = NULL;
    es_err e = es_store_lock(store, &log, err);
    if (e == ES_OK && !log->store) {
        *end = 0;
        es_store_unlock(store);
        return es_fail(err, ES_ESTATE,
                       "a %s log has no single end offset (offsets are per partition); ask per "
                       "partition",
                       log->backend->name);
    }
    if (e == ES_OK) {
        e = log->store->end_offset(log, end, err);
        es_store_unlock(store);
    }
    return e;
}

es_err es_store_put_snapshot(es_store_t *store, const char *type, const char *id,
                             const es_snapshot_t *snap, es_error_t *err) {
    es_log_t *log = NULL;
    es_err e = check_names(type, id, err);
    if (e == ES_OK && (!snap || !snap->state_type || !*snap->state_type))
        e = es_fail(err, ES_EINVAL, "snapshot of %s/%s needs a state type", type, id);
    char what[ES_MAX_TYPE_LEN + ES_MAX_ID_LEN + 32];
    snprintf(what, sizeof what, "writing a snapshot of %s/%s", type, id);
    if (e != ES_OK || (e = lock_store_role(store, &log, what, err)) != ES_OK)
        return e;
    e = log->store->begin(log, err);
    if (e == ES_OK)
        e = log->store->put_snapshot(log, type, id, snap, err);
    if (e == ES_OK)
        e = log->store->commit(log, err);
    else
        log->store->rollback(log);
    es_store_unlock(store);
    return e;
}

es_err es_store_get_snapshot(es_store_t *store, const char *type, const char *id,
                             es_snapshot_t **out, es_error_t *err) {
    es_log_t *log = NULL;
    char what[ES_MAX_TYPE_LEN + ES_MAX_ID_LEN + 32];
    es_err e = check_names(type, id, err);
    if (out)
        *out = NULL;
    snprintf(what, sizeof what, "reading the snapshot of %s/%s", type ? type : "", id ? id : "");
    if (e == ES_OK && (e = lock_store_role(store, &log, what, err)) == ES_OK) {
        e = log->store->get_snapshot(log, type, id, out, err);
        es_store_unlock(store);
    }
    return e;
}

void es_snapshot_free(es_snapshot_t *snap) {
    free(snap);
}
