/*
 * The batch applier: one read-model transaction reads the checkpoints, takes records from the
 * log through the read pipeline (readpipe.h), applies each (under a savepoint once one has
 * failed), retries, parks or ignores the ones that fail, and writes the new checkpoints, so
 * what is committed is always "the log up to the checkpoints". The live runner (runner.c) and
 * es_replay's rebuild (replay.c) both run their batches here.
 */
#include "runner_int.h"

#include "readpipe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const runner_sql[R_COUNT] = {
    [R_VER_GET] = "SELECT version FROM es_versions WHERE projector = ?1 AND aggregate_type = ?2 "
                  "AND aggregate_id = ?3",
    [R_VER_PUT] = "INSERT INTO es_versions(projector, aggregate_type, aggregate_id, version) "
                  "VALUES (?1, ?2, ?3, ?4) ON CONFLICT(projector, aggregate_type, aggregate_id) "
                  "DO UPDATE SET version = excluded.version",
    [R_CKPT_GET] = "SELECT next_offset FROM es_checkpoints WHERE projector = ?1 AND topic = ?2 "
                   "AND partition = ?3",
    [R_CKPT_PUT] = "INSERT INTO es_checkpoints(projector, topic, partition, next_offset, "
                   "updated_at) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(projector, topic, "
                   "partition) DO UPDATE SET next_offset = excluded.next_offset, "
                   "updated_at = excluded.updated_at",
    [R_SAVEPOINT] = "SAVEPOINT es_event",
    [R_RELEASE] = "RELEASE es_event",
    [R_ROLLBACK_TO] = "ROLLBACK TO es_event",
    [R_PARK] = ES_DLQ_PARK_SQL,
};

es_err es_apply_prepare(es_runner_t *r, es_error_t *err) {
    return es_sql_prepare_all(r->db, r->rm_path, runner_sql, R_COUNT, r->st, err);
}

/* The read model's last SQLite error, as sql.c words it. */
es_err es_runner_sql_err(es_runner_t *r, const char *what, es_error_t *err) {
    char doing[ES_PROJECTOR_NAME_MAX + 96];
    snprintf(doing, sizeof doing, "projector '%s': %s", r->def->name, what);
    return es_sql_fail_file(r->db, sqlite3_extended_errcode(r->db), r->rm_path, doing, err);
}

static es_err run_stmt(es_runner_t *r, int which, const char *what, es_error_t *err) {
    sqlite3_stmt *s = r->st[which];
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? ES_OK : es_runner_sql_err(r, what, err);
}

static es_err load_positions(es_runner_t *r, es_error_t *err) {
    sqlite3_stmt *s = r->st[R_CKPT_GET];
    for (size_t i = 0; i < r->n_pos; i++) {
        sqlite3_bind_text(s, 1, r->def->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, r->pos[i].topic, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 3, r->pos[i].partition);
        int rc = sqlite3_step(s);
        r->pos[i].offset = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
        sqlite3_reset(s);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            return es_runner_sql_err(r, "reading checkpoints", err);
    }
    return ES_OK;
}

static es_err store_positions(es_runner_t *r, const int64_t *before, es_error_t *err) {
    sqlite3_stmt *s = r->st[R_CKPT_PUT];
    int64_t now = es_now_us();
    for (size_t i = 0; i < r->n_pos; i++) {
        if (r->pos[i].offset == before[i])
            continue;
        sqlite3_bind_text(s, 1, r->def->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, r->pos[i].topic, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 3, r->pos[i].partition);
        sqlite3_bind_int64(s, 4, r->pos[i].offset);
        sqlite3_bind_int64(s, 5, now);
        es_err e = run_stmt(r, R_CKPT_PUT, "writing a checkpoint", err);
        if (e != ES_OK)
            return e;
    }
    return ES_OK;
}

/* Parks a record in es_dlq (inside the batch's transaction) and tells the park callback. */
static es_err park(es_runner_t *r, const es_raw_record_t *rec, const char *event_type, es_err code,
                   const char *why, int attempts, es_error_t *err) {
    es_dlq_entry_t d;
    if (es_dlq_park(r->st[R_PARK], r->def->name, rec, event_type, code, why, attempts, &d) !=
        SQLITE_DONE)
        return es_runner_sql_err(r, "parking an event", err);
    r->batch.parked++;
    r->parked_in_batch++;
    if (r->park_cb)
        r->park_cb(&d, r->park_opaque);
    return ES_OK;
}

/* es_projector_apply inside the span "eskit.apply <projector>", a child of the event's. */
static es_err apply_traced(es_runner_t *r, const es_event_t *ev, es_error_t *aerr) {
    es_trace_t t;
    es_trace_start(ev->metadata, ev->n_metadata, &t);
    char name[ES_PROJECTOR_NAME_MAX + 16];
    snprintf(name, sizeof name, "eskit.apply %s", r->def->name);
    es_kv_t attrs[] = {{"projector", r->def->name},        {"event_type", ev->event_type},
                       {"event_id", ev->event_id},         {"aggregate_type", ev->aggregate_type},
                       {"aggregate_id", ev->aggregate_id}, {"outcome", ""}};
    int64_t start = es_now_us();
    es_span_emit(r->cfg, ES_SPAN_START, name, &t, start, 0, ES_OK, NULL, attrs, 5);
    es_err rc = es_projector_apply(r->def, &r->ctx, ev, aerr);
    attrs[5].value = rc == ES_OK ? "ok" : "failed";
    es_span_emit(r->cfg, ES_SPAN_END, name, &t, start, es_now_us(), rc, attrs[5].value, attrs, 6);
    return rc;
}

/* One apply, under a savepoint when the batch is careful; the guard notes the event while the
 * module runs. A failure of the module fills aerr; one of our storage fills err, *storage. */
static es_err apply_once(es_runner_t *r, const es_raw_record_t *rec, const es_event_t *ev,
                         es_error_t *aerr, int *storage, es_error_t *err) {
    *storage = 1;
    es_err e = r->careful ? run_stmt(r, R_SAVEPOINT, "opening a savepoint", err) : ES_OK;
    if (e != ES_OK)
        return e;
    if (r->guard)
        es_guard_note(r->guard, rec->topic, rec->partition, rec->offset);
    if (r->wd.on)
        es_watch_begin(&r->wd, rec);
    aerr->code = ES_OK;
    aerr->message[0] = '\0';
    es_err rc = es_span_on(r->cfg) ? apply_traced(r, ev, aerr)
                                   : es_projector_apply(r->def, &r->ctx, ev, aerr);
    if (r->wd.on)
        es_watch_end(&r->wd);
    if (r->guard)
        es_guard_clear(r->guard);
    if (rc != ES_OK && !r->careful) {
        r->redo = 1; /* nothing to undo event by event: the whole batch is rolled back */
        r->failed = (failed_apply){1, "", rec->partition, rec->offset, rc, *aerr};
        snprintf(r->failed.topic, sizeof r->failed.topic, "%s", rec->topic);
        if (!r->failed.err.message[0])
            es_fail(&r->failed.err, rc, "apply returned %s", es_strerror(rc));
        r->failed.err.code = rc;
        *storage = 0;
        return rc;
    }
    if (rc != ES_OK) {
        e = run_stmt(r, R_ROLLBACK_TO, "rolling back a failed event", err);
        if (!aerr->message[0])
            es_fail(aerr, rc, "apply returned %s", es_strerror(rc));
        aerr->code = rc;
    }
    if (e == ES_OK && r->careful)
        e = run_stmt(r, R_RELEASE, "releasing a savepoint", err);
    if (e != ES_OK)
        return e;
    *storage = 0;
    if (rc != ES_OK)
        *err = *aerr;
    return rc;
}

static size_t version_key(const es_event_t *ev, char *key, size_t cap) {
    int n = snprintf(key, cap, "%s/%s", ev->aggregate_type, ev->aggregate_id);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* The last version the read model took of ev's aggregate (0: none): the read pipeline's
 * memory for the log-order rule. */
static es_err last_version(void *opaque, const es_event_t *ev, uint64_t *last, es_error_t *err) {
    es_runner_t *r = opaque;
    char key[ES_MAX_TYPE_LEN + ES_MAX_ID_LEN + 2];
    size_t klen = version_key(ev, key, sizeof key);
    uint64_t *hit = klen ? es_lru_get(r->versions, key, klen) : NULL;
    if (hit) {
        *last = *hit;
        return ES_OK;
    }
    sqlite3_stmt *s = r->st[R_VER_GET];
    sqlite3_bind_text(s, 1, r->def->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, ev->aggregate_type, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, ev->aggregate_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    *last = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? ES_OK
                                                 : es_runner_sql_err(r, "reading versions", err);
}

static es_err note_version(es_runner_t *r, const es_event_t *ev, es_error_t *err) {
    sqlite3_stmt *s = r->st[R_VER_PUT];
    sqlite3_bind_text(s, 1, r->def->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, ev->aggregate_type, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, ev->aggregate_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)ev->version);
    es_err e = run_stmt(r, R_VER_PUT, "writing versions", err);
    char key[ES_MAX_TYPE_LEN + ES_MAX_ID_LEN + 2];
    size_t klen = version_key(ev, key, sizeof key);
    uint64_t *v = e == ES_OK && klen ? malloc(sizeof *v) : NULL;
    if (v) {
        *v = ev->version;
        es_lru_put(r->versions, key, klen, v);
    }
    return e;
}

/* The log-order stage of the read pipeline (readpipe.h), in the reader's role: an event not
 * after its aggregate's last one is skipped and counted stale; a gap is applied, warned about
 * and counted. */
static es_err check_order(es_runner_t *r, const es_event_t *ev, const es_position_t *at,
                          int *storage, es_error_t *err) {
    r->stale_now = 0;
    if (!r->log_order || r->order_bypass)
        return ES_OK;
    es_order_counts met = {0};
    es_read_pipe pipe = {ES_ORDER_READER, r->cfg, last_version, r, &met};
    es_err rc = ES_OK;
    es_read_result res = es_read_order(&pipe, ev, at, &rc, err);
    if (res == ES_READ_FAILED) {
        *storage = 1;
        return rc;
    }
    r->stale_now = res == ES_READ_STALE;
    r->batch.gaps += met.gaps;
    return ES_OK;
}

static int first_pass_failed(const es_runner_t *r, const es_raw_record_t *rec) {
    return r->careful && r->failed.valid && r->failed.offset == rec->offset &&
           r->failed.partition == rec->partition && !strcmp(r->failed.topic, rec->topic);
}

static es_err apply_decoded(es_runner_t *r, const es_raw_record_t *rec, int *attempts,
                            char *event_type, size_t type_cap, int *storage, es_error_t *err) {
    es_position_t at = {rec->topic, rec->key, rec->partition, rec->offset};
    es_event_t *ev = NULL;
    es_err rc = ES_OK;
    *attempts = 0;
    *storage = 0;
    event_type[0] = '\0';
    /* Into the runner's arena: the envelope's fields, the event and (es_ctx_dispatch) the
     * payload cost no allocation each; apply_record resets it after the record. */
    if (es_read_decode_in(rec, r->arena, &ev, &rc, err) != ES_READ_EVENT)
        return rc;
    if (!at.key) /* the embedded log leaves it to es_raw_key: the envelope names it too */
        at.key = ev->aggregate_id;
    /* The DLQ records the stored type: it is what an operator finds in the log. */
    snprintf(event_type, type_cap, "%s", ev->event_type);
    if (es_read_upcast(r->cfg, &ev, &at, &rc, err) != ES_READ_EVENT)
        return rc; /* poison, like an envelope that does not decode: parked, the upcaster named */
    rc = check_order(r, ev, &at, storage, err);
    if (rc != ES_OK || r->stale_now) {
        es_event_free(ev);
        return rc;
    }
    for (;;) {
        es_error_t aerr;
        ++*attempts;
        if (*attempts == 1 && first_pass_failed(r, rec)) {
            /* The optimistic pass already made attempt 1: it counts, and a permanent failure
             * is not tried again. */
            rc = r->failed.code;
            *err = r->failed.err;
            r->failed.valid = 0;
        } else {
            rc = apply_once(r, rec, ev, &aerr, storage, err);
        }
        if (rc != ES_ERETRY || *storage || r->redo || *attempts > r->retries)
            break;
        r->batch.retries++;
        int wait = r->backoff_ms << (*attempts - 1 < 10 ? *attempts - 1 : 10);
        if (es_stop_sleep(&r->stop, wait > 10000 ? 10000 : wait)) {
            /* its failures were rolled back: the log gives it again after the stop */
            r->halted = 1;
            break;
        }
    }
    /* Applied or about to be parked or ignored: either way the aggregate moved past it. */
    if (r->log_order && !r->order_bypass && !*storage && !r->redo && !r->halted) {
        es_error_t verr;
        es_err ve = note_version(r, ev, &verr);
        if (ve != ES_OK) {
            *storage = 1;
            *err = verr;
            rc = ve;
        }
    }
    es_event_free(ev);
    return rc;
}

static es_err apply_record(es_runner_t *r, const es_raw_record_t *rec, int *attempts,
                           char *event_type, size_t type_cap, int *storage, es_error_t *err) {
    es_err rc = apply_decoded(r, rec, attempts, event_type, type_cap, storage, err);
    es_pb_arena_reset(r->arena);
    return rc;
}

es_err es_runner_apply_record(es_runner_t *r, const es_raw_record_t *rec, int *attempts,
                              char *event_type, size_t type_cap, int *storage, es_error_t *err) {
    r->careful = 1; /* on its own: the failure is undone by the savepoint */
    r->redo = 0;
    r->halted = 0;
    r->failed.valid = 0;
    r->order_bypass = 1; /* the operator asked for this event, whatever came after it */
    if (r->wd.on) {
        unsigned deaths =
            r->guard ? es_guard_deaths(r->guard, rec->topic, rec->partition, rec->offset) : 0;
        __atomic_store_n(&r->wd.deaths, deaths, __ATOMIC_RELAXED);
    }
    return apply_record(r, rec, attempts, event_type, type_cap, storage, err);
}

/* The event type of a record the module is not given, for the DLQ entry. */
static void record_type(const es_raw_record_t *rec, char *out, size_t cap) {
    es_event_t *ev = NULL;
    if (es_envelope_decode(rec->value, rec->len, NULL, &ev, NULL) == ES_OK)
        snprintf(out, cap, "%s", ev->event_type);
    es_event_free(ev);
}

/* The verdict on one record: applied, ignored, parked, or a fatal stop of the batch. */
static int on_record(const es_raw_record_t *rec, void *opaque) {
    es_runner_t *r = opaque;
    char type[256] = "";
    int attempts = 0, storage = 0;
    es_error_t why = {0};
    es_err rc;
    /* A stop ends the batch before this record, which stays in the log. */
    if (es_stop_requested(&r->stop)) {
        r->halted = 1;
        r->halted_at = *rec;
        return 1;
    }
    r->consumed++;
    unsigned deaths =
        r->guard ? es_guard_deaths(r->guard, rec->topic, rec->partition, rec->offset) : 0;
    if (r->wd.on)
        __atomic_store_n(&r->wd.deaths, deaths, __ATOMIC_RELAXED);
    if (deaths >= (unsigned)r->restarts) {
        unsigned timeouts = es_guard_timeouts(r->guard, rec->topic, rec->partition, rec->offset);
        record_type(rec, type, sizeof type);
        if (timeouts == deaths)
            rc = es_fail(&why, ES_ETIMEOUT,
                         "applying this event ran longer than projector.apply.timeout.ms %u "
                         "times in a row, and the watchdog ended the process each time; parked "
                         "so projector '%s' can go on",
                         deaths, r->def->name);
        else
            rc = es_fail(&why, ES_EIO,
                         "the process died %u times in a row while applying this event (a "
                         "crash in projector '%s'?%s); parked so the projector can go on",
                         deaths, r->def->name, timeouts ? "; some were the apply watchdog's" : "");
        attempts = (int)deaths;
    } else {
        rc = apply_record(r, rec, &attempts, type, sizeof type, &storage, &why);
        if (r->redo)
            return 1;
        if (r->halted) { /* stopped between its retries */
            r->consumed--;
            r->halted_at = *rec;
            return 1;
        }
        if (rc == ES_OK && r->stale_now) {
            r->batch.stale++;
            return 0;
        }
        if (rc == ES_OK) {
            r->batch.applied++;
            return 0;
        }
        if (storage) {
            r->fatal = rc;
            r->fatal_err = why;
            return 1;
        }
        if (rc == ES_EUNKNOWN_TYPE && r->ignore_unknown) {
            r->batch.ignored++;
            return 0;
        }
    }
    if (!r->careful) { /* parking and stopping happen in the careful pass only */
        r->redo = 1;
        return 1;
    }
    if (r->stop_on_error) {
        r->fatal = ES_ESTATE;
        es_fail(&r->fatal_err, ES_ESTATE,
                "projector '%s' stopped (projector.on.error=stop) at %s/%d offset %lld%s%s: %s",
                r->def->name, rec->topic, (int)rec->partition, (long long)rec->offset,
                type[0] ? ", " : "", type, why.message);
        return 1;
    }
    es_err e = park(r, rec, type, rc, why.message, attempts ? attempts : 1, &r->fatal_err);
    if (e != ES_OK) {
        r->fatal = e;
        return 1;
    }
    return 0;
}

static int64_t now_ms(void) {
    return es_now_us() / 1000;
}

/* The log moved past the record the stop came before: it is read again next time. */
static void hand_back(es_runner_t *r) {
    for (size_t i = 0; i < r->n_pos; i++)
        if (r->pos[i].partition == r->halted_at.partition &&
            !strcmp(r->pos[i].topic, r->halted_at.topic) && r->pos[i].offset > r->halted_at.offset)
            r->pos[i].offset = r->halted_at.offset;
    r->halted = 0;
}

/* One pass of a batch inside an open transaction: fetch and apply up to max records. */
static es_err batch_pass(es_runner_t *r, size_t max, int linger, int64_t *before, es_error_t *err) {
    r->consumed = r->parked_in_batch = 0;
    r->fatal = ES_OK;
    r->redo = 0;
    r->halted = 0;
    if (!r->careful)
        r->failed.valid = 0;
    memset(&r->batch, 0, sizeof r->batch);
    es_err e = load_positions(r, err);
    for (size_t i = 0; i < r->n_pos; i++)
        before[i] = r->pos[i].offset;
    int64_t linger_end = now_ms() + (linger ? r->linger_ms : 0);
    while (e == ES_OK && r->consumed < max) {
        size_t had = r->consumed;
        e = r->log->reader->fetch(r->log, r->pos, r->n_pos, max - r->consumed, on_record, r, err);
        if (e == ES_OK && r->fatal != ES_OK) {
            e = es_fail(err, r->fatal, "%s", r->fatal_err.message);
        }
        if (e == ES_OK && r->halted)
            hand_back(r);
        if (e != ES_OK || r->redo || es_stop_requested(&r->stop) || r->consumed == max ||
            now_ms() >= linger_end)
            break;
        if (r->consumed == had)
            es_sleep_ms(1);
    }
    return e;
}

/* Events are applied without savepoints first, the common case being that none fails;
 * when one does, the batch is rolled back and redone with a savepoint per event, so the
 * failing event is retried or parked alone and the others applied. */
es_err es_runner_batch(es_runner_t *r, size_t max, int linger, size_t *consumed, es_error_t *err) {
    int64_t before[r->n_pos ? r->n_pos : 1];
    es_sql_tx tx = es_sql_tx_on(r->db, r->rm_path);
    es_sql_begin_kind begin = r->mode == RM_BULK ? ES_SQL_DEFERRED : ES_SQL_IMMEDIATE;
    *consumed = 0;
    es_err e = ES_OK;
    for (r->careful = 0; e == ES_OK; r->careful = 1) {
        e = es_sql_begin(&tx, begin, "starting a batch", err);
        if (e != ES_OK)
            return e;
        e = batch_pass(r, max, linger, before, err);
        if (e != ES_OK || !r->redo)
            break;
        es_sql_rollback(&tx);
        es_lru_clear(r->versions);
        max = r->consumed; /* the same records, now event by event */
        linger = 0;
    }
    if (e == ES_OK)
        e = store_positions(r, before, err);
    e = es_sql_end(&tx, e, "committing a batch", err);
    if (e != ES_OK) {
        es_lru_clear(r->versions);
        return e;
    }
    if (r->mode == RM_LIVE && r->log->reader->commit_positions) {
        char group[256];
        es_error_t cerr;
        es_rm_group(r->cfg, r->def->name, group, sizeof group);
        if (r->log->reader->commit_positions(r->log, group, r->pos, r->n_pos, &cerr) != ES_OK)
            es_logf(r->cfg, ES_LOG_WARNING, "projector '%s': positions not committed to %s: %s",
                    r->def->name, group, cerr.message);
    }
    r->stats.applied += r->batch.applied;
    r->stats.parked += r->batch.parked;
    r->stats.ignored += r->batch.ignored;
    r->stats.retries += r->batch.retries;
    r->stats.stale += r->batch.stale;
    r->stats.gaps += r->batch.gaps;
    r->stats.batches++;
    r->last_batch_ms = now_ms();
    *consumed = r->consumed;
    for (size_t i = 0; i < r->n_pos; i++)
        r->seen[i] = r->pos[i].offset;
    if (r->guard)
        es_guard_passed(r->guard, r->pos, r->n_pos);
    if (r->parked_in_batch && r->mode == RM_LIVE) {
        es_error_t perr;
        if (es_rm_publish_dlq(r->db, r->log, r->cfg, r->def->name, &perr) != ES_OK)
            es_logf(r->cfg, 4, "projector '%s': dead letters not sent yet: %s", r->def->name,
                    perr.message);
    }
    return ES_OK;
}

es_err es_runner_checkpoints(es_runner_t *r, es_error_t *err) {
    es_sql_tx tx = es_sql_tx_on(r->db, r->rm_path);
    es_err e = es_sql_begin(&tx, ES_SQL_DEFERRED, "reading checkpoints", err);
    if (e == ES_OK)
        e = es_sql_end(&tx, load_positions(r, err), "reading checkpoints", err);
    return e;
}

es_err es_runner_backlog_estimate(es_runner_t *r, uint64_t *n, int *exact, es_error_t *err) {
    es_err e = es_runner_checkpoints(r, err);
    *n = 0;
    *exact = 1;
    for (size_t i = 0; e == ES_OK && i < r->n_pos; i++) {
        int64_t end;
        uint64_t count;
        int counted = 1;
        if (r->log->reader->topic_estimate)
            e = r->log->reader->topic_estimate(r->log, r->pos[i].topic, r->pos[i].partition,
                                               r->pos[i].offset, &end, &count, &counted, err);
        else
            e = r->log->reader->topic_end(r->log, r->pos[i].topic, r->pos[i].partition,
                                          r->pos[i].offset, &end, &count, err);
        *n += count;
        *exact &= counted;
    }
    return e;
}

es_err es_runner_backlog(es_runner_t *r, uint64_t *n, es_error_t *err) {
    es_err e = es_runner_checkpoints(r, err);
    *n = 0;
    for (size_t i = 0; e == ES_OK && i < r->n_pos; i++) {
        int64_t end;
        uint64_t count;
        e = r->log->reader->topic_end(r->log, r->pos[i].topic, r->pos[i].partition,
                                      r->pos[i].offset, &end, &count, err);
        *n += count;
    }
    return e;
}
