/*
 * The saga coordinator: a projector over the topics a saga listens to (the runner gives it
 * batches, checkpoints and the DLQ in one read-model transaction): its instances, their
 * transitions, the events that drive them, and its lifecycle. Beside it: the definition check
 * (saga_def.c), durable deadlines (saga_deadline.c), the relay that delivers the outbox through
 * the engine (saga_relay.c), the publication of transitions to "<saga>.saga.events"
 * (saga_publish.c) and retention (saga_retention.c). See saga.h for the lifecycle and
 * saga_int.h for the tables.
 */
#include "saga_int.h"
#include "backends.h"
#include "catalogue.h"
#include "registry.h"

#include "kafka/wire.h"
#include "projector_int.h"
#include "runloop.h"

#include "eskit/v1/saga.pb-c.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* ---- views and outputs -------------------------------------------------------------------- */

struct es_saga_view {
    const char *id;
    const es_event_t *start_ev;
    const ProtobufCMessage *start;
    const char *reason;
    void *opaque;
};

void *es_saga_view_opaque(const es_saga_view_t *v) {
    return v->opaque;
}

const char *es_saga_view_id(const es_saga_view_t *v) {
    return v->id;
}
const ProtobufCMessage *es_saga_view_start(const es_saga_view_t *v) {
    return v->start;
}
const es_event_t *es_saga_view_start_event(const es_saga_view_t *v) {
    return v->start_ev;
}
const char *es_saga_view_reason(const es_saga_view_t *v) {
    return v->reason ? v->reason : "";
}

typedef struct out_cmd {
    char *aggregate_id;
    uint8_t *buf;
    size_t len;
} out_cmd;

struct es_saga_out {
    const ProtobufCMessageDescriptor *want;
    const char *what; /* for errors: "step reserve_stock" */
    out_cmd cmd[ES_SAGA_MAX_TARGETS];
    size_t n;
    es_err failed;
    char why[400];
};

es_err es_saga_send(es_saga_out_t *out, const char *aggregate_id, const ProtobufCMessage *command) {
    es_error_t e;
    es_err rc = ES_OK;
    if (!out || !command)
        return ES_EINVAL;
    if (command->descriptor != out->want)
        rc = ES_EINVAL, snprintf(out->why, sizeof out->why, "%s sent a %s; the step declares %s",
                                 out->what, command->descriptor->name, out->want->name);
    else if (es_validate_aggregate_id(aggregate_id, &e) != ES_OK)
        rc = ES_EINVAL, snprintf(out->why, sizeof out->why, "%s: %.200s", out->what, e.message);
    else if (out->n == ES_SAGA_MAX_TARGETS)
        rc = ES_EINVAL, snprintf(out->why, sizeof out->why, "%s sent more than %d commands",
                                 out->what, ES_SAGA_MAX_TARGETS);
    if (rc != ES_OK) {
        out->failed = rc;
        return rc;
    }
    size_t len = protobuf_c_message_get_packed_size(command);
    out_cmd *c = &out->cmd[out->n];
    c->buf = malloc(len ? len : 1);
    c->aggregate_id = strdup(aggregate_id);
    if (!c->buf || !c->aggregate_id) {
        free(c->buf);
        free(c->aggregate_id);
        out->failed = ES_ENOMEM;
        snprintf(out->why, sizeof out->why, "out of memory");
        return ES_ENOMEM;
    }
    c->len = protobuf_c_message_pack(command, c->buf);
    out->n++;
    return ES_OK;
}

static void out_clear(es_saga_out_t *o) {
    for (size_t i = 0; i < o->n; i++) {
        free(o->cmd[i].aggregate_id);
        free(o->cmd[i].buf);
    }
    o->n = 0;
}

/* ---- the coordinator ---------------------------------------------------------------------- */

static const char *const SQL[S_COUNT] = {
    [S_INST_GET] = "SELECT state, step, started_at, deadline, reason, seq, start_event"
                   " FROM es_saga_instances WHERE saga = ?1 AND id = ?2",
    [S_INST_PUT] = "INSERT OR REPLACE INTO es_saga_instances (saga, id, state, step, started_at,"
                   " updated_at, deadline, reason, seq, start_event)"
                   " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [S_TARGET_BY_CMD] = "SELECT id, step, target, kind, status, aggregate_type, aggregate_id,"
                        " command_type FROM es_saga_targets WHERE command_id = ?1 AND saga = ?2",
    [S_TARGET_PUT] = "INSERT OR IGNORE INTO es_saga_targets (command_id, saga, id, step, target,"
                     " kind, aggregate_type, aggregate_id, command_type, payload, deadline,"
                     " status, created_at, correlation_id, traceparent, tracestate)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'pending', ?12, ?13,"
                     " ?14, ?15)",
    [S_TARGET_STATUS] = "UPDATE es_saga_targets SET status = ?2, reason = ?3 WHERE command_id = ?1",
    [S_TARGETS_OF_STEP] = "SELECT aggregate_id, status FROM es_saga_targets"
                          " WHERE saga = ?1 AND id = ?2 AND step = ?3 AND kind = 'do'"
                          " ORDER BY target",
    [S_STEP_OPEN] = "SELECT count(*) FROM es_saga_targets WHERE saga = ?1 AND id = ?2"
                    " AND step = ?3 AND kind = ?4 AND status = 'pending'",
    [S_HIST_PUT] = "INSERT INTO es_saga_history (saga, id, seq, record) VALUES (?1, ?2, ?3, ?4)",
    [S_DUE] = "SELECT id FROM es_saga_instances WHERE saga = ?1 AND deadline > 0"
              " AND deadline <= ?2 AND state = 'running' ORDER BY deadline LIMIT 256",
    [S_OUTBOX] =
        "SELECT command_id, id, kind, aggregate_type, aggregate_id, command_type,"
        " payload, deadline, correlation_id, traceparent, tracestate, step FROM es_saga_targets"
        " WHERE saga = ?1 AND sent_at = 0 ORDER BY rowid LIMIT ?2",
    [S_SENT] = "UPDATE es_saga_targets SET sent_at = ?2, outcome = ?3,"
               " reason = CASE WHEN ?4 = '' THEN reason ELSE ?4 END WHERE command_id = ?1",
    [S_UNPUBLISHED] = "SELECT h.id, h.seq, h.record, i.start_event FROM es_saga_history h"
                      " LEFT JOIN es_saga_instances i ON i.saga = h.saga AND i.id = h.id"
                      " WHERE h.saga = ?1 ORDER BY h.id, h.seq LIMIT ?2",
    [S_PUBLISHED] = "DELETE FROM es_saga_history WHERE saga = ?1 AND id = ?2 AND seq <= ?3",
    [S_PUBLISHED_ALL] = "DELETE FROM es_saga_history WHERE saga = ?1",
    [S_UNPUBLISHED_N] = "SELECT count(*) FROM es_saga_history WHERE saga = ?1",
    [S_HISTORY_N] = "SELECT count(*) FROM es_saga_history",
    [S_HISTORY_CLEAR] = "DELETE FROM es_saga_history",
    [S_ENDED_BEFORE] =
        "SELECT i.id, i.state FROM es_saga_instances i WHERE i.saga = ?1"
        " AND " ES_SAGA_ENDED("i.") " AND i.updated_at < ?2"
                                    " AND NOT EXISTS (SELECT 1 FROM es_saga_history h"
                                    " WHERE h.saga = i.saga AND h.id = i.id) LIMIT ?3",
    [S_DROP_TARGETS] = "DELETE FROM es_saga_targets WHERE saga = ?1 AND id = ?2",
    [S_DROP_INSTANCE] = "DELETE FROM es_saga_instances WHERE saga = ?1 AND id = ?2",
    [S_PRUNED_ADD] = "INSERT INTO es_saga_pruned (saga, state, n) VALUES (?1, ?2, ?3)"
                     " ON CONFLICT (saga, state) DO UPDATE SET n = n + excluded.n",
    [S_PRUNED_GET] = "SELECT n FROM es_saga_pruned WHERE saga = ?1 AND state = ?2",
};

void es_saga_inst_free(saga_inst *in) {
    if (!in->borrowed) {
        free(in->start_bytes);
        es_event_free(in->start_ev);
        if (in->start_msg)
            protobuf_c_message_free_unpacked(in->start_msg, NULL);
    }
    memset(in, 0, sizeof *in);
}

void es_saga_inst_release(es_saga_t *c, saga_inst *in) {
    if (in->borrowed)
        es_saga_live_return(c, in);
    es_saga_inst_free(in);
}

void es_saga_rolled_back(es_saga_t *c) {
    es_saga_pub_drop(c);
    es_saga_count_undo(c);
    es_saga_live_forget(c);
}

/* The saga database's last SQLite error, as sql.c words it. */
es_err es_saga_db_fail(es_saga_t *c, const char *what, es_error_t *err) {
    char doing[ES_PROJECTOR_NAME_MAX + 96];
    snprintf(doing, sizeof doing, "saga '%s': %s", c->def->name, what);
    return es_sql_fail_file(c->db, sqlite3_extended_errcode(c->db),
                            es_config_get(c->cfg, "saga.db"), doing, err);
}

/* The cached statement k, reset and bound to the saga name as ?1. */
sqlite3_stmt *es_saga_stmt(es_saga_t *c, int k) {
    sqlite3_stmt *s = c->st[k];
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    sqlite3_bind_text(s, 1, c->def->name, -1, SQLITE_STATIC);
    return s;
}

es_err es_saga_step_done(es_saga_t *c, sqlite3_stmt *s, const char *what, es_error_t *err) {
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? ES_OK : es_saga_db_fail(c, what, err);
}

/* By hand: snprintf's "%s" cost ~600 instructions a call, 16 calls a relayed command. */
void es_saga_copy_str(char *dst, size_t cap, const unsigned char *src) {
    size_t n = src ? strlen((const char *)src) : 0;
    if (n >= cap)
        n = cap - 1;
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

const es_saga_step_t *es_saga_step_at(const es_saga_t *c, int k) {
    if (k >= 0 && (size_t)k < c->def->n_steps)
        return &c->def->steps[k];
    return NULL;
}

/* ---- instances ---------------------------------------------------------------------------- */

static es_err decode_start(es_saga_t *c, saga_inst *in, es_error_t *err) {
    es_err e = es_envelope_decode(in->start_bytes, in->start_len, NULL, &in->start_ev, err);
    if (e != ES_OK)
        return e;
    in->start_msg = protobuf_c_message_unpack(c->def->start_event, NULL, in->start_ev->payload_len,
                                              in->start_ev->payload);
    if (!in->start_msg)
        return es_fail(err, ES_EDECODE, "saga '%s' %s: the start event's payload is not a %s",
                       c->def->name, in->id, c->def->start_event->name);
    return ES_OK;
}

/* Loads instance id; ES_ENOTFOUND when there is none. */
es_err es_saga_inst_load(es_saga_t *c, const char *id, saga_inst *in, es_error_t *err) {
    memset(in, 0, sizeof *in);
    if (es_saga_live_lend(c, id, in))
        return ES_OK;
    sqlite3_stmt *s = es_saga_stmt(c, S_INST_GET);
    sqlite3_bind_text(s, 2, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) {
        sqlite3_reset(s);
        return ES_ENOTFOUND;
    }
    if (rc != SQLITE_ROW) {
        sqlite3_reset(s);
        return es_saga_db_fail(c, "loading an instance", err);
    }
    snprintf(in->id, sizeof in->id, "%s", id);
    es_saga_copy_str(in->state, sizeof in->state, sqlite3_column_text(s, 0));
    memcpy(in->saved, in->state, sizeof in->saved);
    in->step = sqlite3_column_int(s, 1);
    in->started = sqlite3_column_int64(s, 2);
    in->deadline = sqlite3_column_int64(s, 3);
    es_saga_copy_str(in->reason, sizeof in->reason, sqlite3_column_text(s, 4));
    in->seq = (uint64_t)sqlite3_column_int64(s, 5);
    in->start_len = (size_t)sqlite3_column_bytes(s, 6);
    in->start_bytes = malloc(in->start_len ? in->start_len : 1);
    if (!in->start_bytes) {
        sqlite3_reset(s);
        return es_fail(err, ES_ENOMEM, "out of memory");
    }
    if (in->start_len)
        memcpy(in->start_bytes, sqlite3_column_blob(s, 6), in->start_len);
    sqlite3_reset(s);
    es_err e = decode_start(c, in, err);
    if (e != ES_OK)
        es_saga_inst_free(in);
    else
        es_saga_live_keep(c, in);
    return e;
}

es_err es_saga_inst_save(es_saga_t *c, saga_inst *in, int64_t now, es_error_t *err) {
    sqlite3_stmt *s = es_saga_stmt(c, S_INST_PUT);
    sqlite3_bind_text(s, 2, in->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, in->state, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 4, in->step);
    sqlite3_bind_int64(s, 5, in->started);
    sqlite3_bind_int64(s, 6, now);
    sqlite3_bind_int64(s, 7, in->deadline);
    sqlite3_bind_text(s, 8, in->reason, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 9, (sqlite3_int64)in->seq);
    sqlite3_bind_blob(s, 10, in->start_bytes, (int)in->start_len, SQLITE_STATIC);
    es_err e = es_saga_step_done(c, s, "saving an instance", err);
    if (e == ES_OK && strcmp(in->saved, in->state) != 0) {
        es_saga_count_move(c, in->saved, in->state);
        memcpy(in->saved, in->state, sizeof in->saved);
    }
    if (e == ES_OK)
        es_saga_live_keep(c, in);
    return e;
}

static int terminal(const saga_inst *in) {
    return strcmp(in->state, ES_SAGA_RUNNING) && strcmp(in->state, ES_SAGA_COMPENSATING);
}

static Eskit__V1__SagaState state_enum(const char *s) {
    if (!strcmp(s, ES_SAGA_RUNNING))
        return ESKIT__V1__SAGA_STATE__SAGA_STATE_RUNNING;
    if (!strcmp(s, ES_SAGA_COMPENSATING))
        return ESKIT__V1__SAGA_STATE__SAGA_STATE_COMPENSATING;
    if (!strcmp(s, ES_SAGA_COMPLETED))
        return ESKIT__V1__SAGA_STATE__SAGA_STATE_COMPLETED;
    if (!strcmp(s, ES_SAGA_ABORTED))
        return ESKIT__V1__SAGA_STATE__SAGA_STATE_ABORTED;
    return ESKIT__V1__SAGA_STATE__SAGA_STATE_FAILED;
}

const es_trace_t *es_saga_span(es_saga_t *c, const saga_inst *in) {
    if (!c->span_set) {
        const es_event_t *start = in->start_ev;
        es_trace_start(start ? start->metadata : NULL, start ? start->n_metadata : 0, &c->span);
        c->span_set = 1;
    }
    c->span_used = 1;
    return &c->span;
}

es_err es_saga_upgrade(sqlite3 *db, const char *path, es_error_t *err) {
    sqlite3_stmt *s = NULL;
    es_err e = ES_OK;
    if (sqlite3_prepare_v2(db, "SELECT traceparent FROM es_saga_targets LIMIT 0", -1, &s, NULL) !=
        SQLITE_OK)
        e = es_sql_exec(
            db, path,
            "ALTER TABLE es_saga_targets ADD COLUMN traceparent TEXT NOT NULL DEFAULT '';"
            "ALTER TABLE es_saga_targets ADD COLUMN tracestate TEXT NOT NULL DEFAULT '';",
            "adding the trace columns to the saga outbox", err);
    sqlite3_finalize(s);
    s = NULL;
    int old_index = 0;
    if (e == ES_OK && sqlite3_prepare_v2(db,
                                         "SELECT 1 FROM sqlite_master WHERE type = 'index'"
                                         " AND name = 'es_saga_instances_ended'",
                                         -1, &s, NULL) == SQLITE_OK)
        old_index = sqlite3_step(s) == SQLITE_ROW;
    sqlite3_finalize(s);
    if (e == ES_OK && old_index)
        e = es_sql_exec(db, path,
                        "DROP INDEX es_saga_instances_ended;"
                        "CREATE INDEX IF NOT EXISTS es_saga_instances_done ON es_saga_instances"
                        " (saga, updated_at) WHERE " ES_SAGA_ENDED("") ";",
                        "replacing the index of ended saga instances", err);
    return e;
}

/* Appends one transition of in to the history (published to the log after commit). */
es_err es_saga_hist(es_saga_t *c, saga_inst *in, const char *kind, const hist_info *h, int64_t now,
                    es_error_t *err) {
    Eskit__V1__SagaTransition t = ESKIT__V1__SAGA_TRANSITION__INIT;
    int k = h->step1 - 1;
    const es_saga_step_t *st = k >= 0 ? es_saga_step_at(c, k) : NULL;
    t.saga = (char *)c->def->name;
    t.instance_id = in->id;
    t.kind = (char *)kind;
    t.state = state_enum(in->state);
    t.step = (char *)(st ? st->name : "");
    t.step_index = k >= 0 ? (uint32_t)k : 0;
    t.command_id = (char *)(h->command_id ? h->command_id : "");
    t.command_type = (char *)(h->command_type ? h->command_type : "");
    t.aggregate_type = (char *)(h->aggregate_type ? h->aggregate_type : "");
    t.aggregate_id = (char *)(h->aggregate_id ? h->aggregate_id : "");
    t.event_type = (char *)(h->event_type ? h->event_type : "");
    t.event_id = (char *)(h->event_id ? h->event_id : "");
    t.reason = (char *)(h->reason ? h->reason : "");
    t.deadline_us = h->deadline;
    t.at_us = now;
    const es_trace_t *span = es_saga_span(c, in);
    char tp[ES_TRACEPARENT_LEN + 1];
    es_traceparent_format(&span->tp, tp);
    t.traceparent = tp;
    t.parent_span = (char *)span->parent;
    t.tracestate = (char *)(span->tracestate ? span->tracestate : "");
    size_t len = eskit__v1__saga_transition__get_packed_size(&t);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return es_fail(err, ES_ENOMEM, "out of memory");
    eskit__v1__saga_transition__pack(&t, buf);
    sqlite3_stmt *s = es_saga_stmt(c, S_HIST_PUT);
    sqlite3_bind_text(s, 2, in->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)++in->seq);
    sqlite3_bind_blob(s, 4, buf, (int)len, SQLITE_STATIC);
    es_err e = es_saga_step_done(c, s, "recording a transition", err);
    sqlite3_bind_null(s, 4); /* buf moves on below */
    if (e != ES_OK) {
        free(buf);
        es_saga_pub_drop(c);
        return e;
    }
    es_saga_pub_note(c, in, in->seq, buf, len, now, span, tp);
    return ES_OK;
}

/* ---- transitions -------------------------------------------------------------------------- */

static const char *const KIND_DO = ES_SAGA_KIND_DO, *const KIND_UNDO = ES_SAGA_KIND_UNDO,
                         *const KIND_ABORT = ES_SAGA_KIND_ABORT;

static es_err command_id(es_saga_t *c, const saga_inst *in, const char *step, size_t target,
                         const char *kind, char *out, size_t cap, es_error_t *err) {
    int n = snprintf(out, cap, "%s/%s/%s.%zu/%s", c->def->name, in->id, step, target, kind);
    if (n < 0 || (size_t)n >= cap || (size_t)n > ES_MAX_ID_LEN)
        return es_fail(err, ES_EINVAL,
                       "saga '%s': instance id '%.40s...' is too long for the saga's command ids "
                       "(at most %d bytes in all)",
                       c->def->name, in->id, ES_MAX_ID_LEN);
    return ES_OK;
}

/* What ties an instance's commands and transitions together: the start event's correlation
 * id, or the instance id when the start event has none or one that breaks the limits (another
 * client wrote it: every command carrying it would be refused). */
const char *es_saga_correlation_of(const es_event_t *start, const char *id) {
    es_error_t ignored;
    const char *corr = start ? start->correlation_id : NULL;
    if (!corr || !*corr || es_validate_text(ES_TEXT_CORRELATION_ID, corr, &ignored) != ES_OK)
        return id;
    return corr;
}

/* Calls a step's send (or compensate, when undo_of is set) and puts the commands in the outbox.
 * *sent is how many. */
static es_err emit(es_saga_t *c, saga_inst *in, int k, const es_saga_step_t *st, const char *kind,
                   const char *undo_of, size_t undo_target, size_t *sent, int64_t now,
                   es_error_t *err) {
    es_saga_view_t v = {in->id, in->start_ev, in->start_msg, in->reason, c->def->opaque};
    es_saga_out_t *o = calloc(1, sizeof *o);
    if (!o)
        return es_fail(err, ES_ENOMEM, "out of memory");
    char what[128];
    const char *stname = k < (int)c->def->n_steps ? st->name : "on_abort";
    snprintf(what, sizeof what, "saga '%s' %s %s", c->def->name,
             kind == KIND_UNDO ? "compensation of" : "step", stname);
    o->what = what;
    o->want = kind == KIND_UNDO ? st->compensation : st->command;
    es_err e = kind == KIND_UNDO ? st->compensate(&v, undo_of, o, err) : st->send(&v, o, err);
    if (o->failed) /* es_saga_send's own words, whatever the callback made of its code */
        e = es_fail(err, o->failed, "%s", o->why);
    else if (e != ES_OK)
        es_error_prefix(err, "%s: ", what);
    int64_t deadline = kind == KIND_DO ? now + st->timeout_ms * 1000 : 0;
    const char *corr = es_saga_correlation_of(in->start_ev, in->id);
    if (corr == in->id && in->start_ev && in->start_ev->correlation_id &&
        *in->start_ev->correlation_id)
        /* a start event another client wrote: its commands would all be refused */
        es_logf(c->cfg, ES_LOG_WARNING,
                "%s of instance %s: the start event's correlation id is not valid text; its "
                "commands are correlated by the instance id instead",
                what, in->id);
    for (size_t i = 0; e == ES_OK && i < o->n; i++) {
        char cid[ES_MAX_ID_LEN + 64];
        size_t target = kind == KIND_UNDO ? undo_target * ES_SAGA_MAX_TARGETS + i : i;
        e = command_id(c, in, stname, target, kind, cid, sizeof cid, err);
        if (e != ES_OK)
            break;
        sqlite3_stmt *s = es_saga_stmt(c, S_TARGET_PUT);
        sqlite3_bind_text(s, 1, cid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, c->def->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, in->id, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 4, k);
        sqlite3_bind_int64(s, 5, (sqlite3_int64)target);
        sqlite3_bind_text(s, 6, kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 7, st->aggregate_type, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 8, o->cmd[i].aggregate_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 9, o->want->name, -1, SQLITE_STATIC);
        sqlite3_bind_blob(s, 10, o->cmd[i].buf, (int)o->cmd[i].len, SQLITE_STATIC);
        sqlite3_bind_int64(s, 11, deadline);
        sqlite3_bind_int64(s, 12, now);
        sqlite3_bind_text(s, 13, corr, -1, SQLITE_STATIC);
        /* the command's caller is this handling: its execute span is a child of the span */
        const es_trace_t *span = es_saga_span(c, in);
        char tp[ES_TRACEPARENT_LEN + 1];
        es_traceparent_format(&span->tp, tp);
        sqlite3_bind_text(s, 14, tp, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 15, span->tracestate ? span->tracestate : "", -1, SQLITE_TRANSIENT);
        e = es_saga_step_done(c, s, "writing the outbox", err);
        const char *hk = kind == KIND_DO     ? "command_sent"
                         : kind == KIND_UNDO ? "compensation_sent"
                                             : "abort_sent";
        if (e == ES_OK)
            e = es_saga_hist(c, in, hk,
                             HIST(.step1 = k < (int)c->def->n_steps ? k + 1 : 0, .command_id = cid,
                                  .command_type = o->want->name,
                                  .aggregate_type = st->aggregate_type,
                                  .aggregate_id = o->cmd[i].aggregate_id, .deadline = deadline),
                             now, err);
    }
    *sent = e == ES_OK ? o->n : 0;
    out_clear(o);
    free(o);
    return e;
}

static es_err finish(es_saga_t *c, saga_inst *in, const char *state, const char *reason,
                     int64_t now, es_error_t *err) {
    snprintf(in->state, sizeof in->state, "%s", state);
    in->deadline = 0;
    if (reason)
        snprintf(in->reason, sizeof in->reason, "%s", reason);
    return es_saga_hist(c, in, state, HIST(.reason = reason), now, err);
}

static es_err send_step(es_saga_t *c, saga_inst *in, int k, int64_t now, es_error_t *err);

/* Step k is done: the next step, or the end. */
static es_err advance(es_saga_t *c, saga_inst *in, int k, int64_t now, es_error_t *err) {
    es_err e = es_saga_hist(c, in, "step_completed", HIST(.step1 = k + 1), now, err);
    if (e != ES_OK)
        return e;
    if ((size_t)k + 1 == c->def->n_steps)
        return finish(c, in, ES_SAGA_COMPLETED, NULL, now, err);
    return send_step(c, in, k + 1, now, err);
}

static es_err send_step(es_saga_t *c, saga_inst *in, int k, int64_t now, es_error_t *err) {
    const es_saga_step_t *st = es_saga_step_at(c, k);
    size_t sent = 0;
    in->step = k;
    in->deadline = now + st->timeout_ms * 1000;
    es_err e = emit(c, in, k, st, KIND_DO, NULL, 0, &sent, now, err);
    if (e == ES_OK && sent == 0) /* nothing to do in this instance: the step is done */
        e = advance(c, in, k, now, err);
    return e;
}

/* Sends the compensations of step k (its targets that may have taken effect), going down to
 * earlier steps while a step has nothing to undo; after step 0, the abort command. */
static es_err compensate_from(es_saga_t *c, saga_inst *in, int k, int64_t now, es_error_t *err) {
    for (; k >= 0; k--) {
        const es_saga_step_t *st = es_saga_step_at(c, k);
        in->step = k;
        if (!st->compensate)
            continue;
        sqlite3_stmt *s = es_saga_stmt(c, S_TARGETS_OF_STEP);
        sqlite3_bind_text(s, 2, in->id, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 3, k);
        char ids[ES_SAGA_MAX_TARGETS][ES_MAX_ID_LEN + 1];
        size_t n = 0;
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW && n < ES_SAGA_MAX_TARGETS) {
            /* A target that failed had no effect; done and pending ones may have. */
            if (strcmp((const char *)sqlite3_column_text(s, 1), "failed") != 0)
                es_saga_copy_str(ids[n++], sizeof ids[0], sqlite3_column_text(s, 0));
        }
        sqlite3_reset(s);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            return es_saga_db_fail(c, "reading a step's targets", err);
        size_t total = 0;
        for (size_t i = 0; i < n; i++) {
            size_t sent = 0;
            es_err e = emit(c, in, k, st, KIND_UNDO, ids[i], i, &sent, now, err);
            if (e != ES_OK)
                return e;
            total += sent;
        }
        if (total > 0)
            return ES_OK; /* wait for the outcomes */
    }
    in->step = (int)c->def->n_steps;
    if (c->def->on_abort) {
        size_t sent = 0;
        es_err e = emit(c, in, (int)c->def->n_steps, c->def->on_abort, KIND_ABORT, NULL, 0, &sent,
                        now, err);
        if (e != ES_OK || sent > 0)
            return e;
    }
    return finish(c, in, ES_SAGA_ABORTED, NULL, now, err);
}

es_err es_saga_begin_compensation(es_saga_t *c, saga_inst *in, int k, const char *reason,
                                  int64_t now, es_error_t *err) {
    snprintf(in->state, sizeof in->state, "%s", ES_SAGA_COMPENSATING);
    snprintf(in->reason, sizeof in->reason, "%s", reason);
    in->deadline = 0;
    return compensate_from(c, in, k, now, err);
}

static es_err set_target(es_saga_t *c, const char *cid, const char *status, const char *reason,
                         es_error_t *err) {
    sqlite3_stmt *s = c->st[S_TARGET_STATUS];
    sqlite3_reset(s);
    sqlite3_bind_text(s, 1, cid, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, status, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, reason ? reason : "", -1, SQLITE_STATIC);
    return es_saga_step_done(c, s, "updating a target", err);
}

/* Pending commands of kind left in step k of in. */
static es_err open_targets(es_saga_t *c, const saga_inst *in, int k, const char *kind, int *n,
                           es_error_t *err) {
    sqlite3_stmt *s = es_saga_stmt(c, S_STEP_OPEN);
    sqlite3_bind_text(s, 2, in->id, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 3, k);
    sqlite3_bind_text(s, 4, kind, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    *n = rc == SQLITE_ROW ? sqlite3_column_int(s, 0) : 0;
    sqlite3_reset(s);
    return rc == SQLITE_ROW ? ES_OK : es_saga_db_fail(c, "counting a step's open commands", err);
}

es_err es_saga_target_ended(es_saga_t *c, saga_inst *in, const saga_target *t, int ok,
                            const char *reason, const es_event_t *ev, int64_t now,
                            es_error_t *err) {
    es_err e = set_target(c, t->cid, ok ? "done" : "failed", reason, err);
    if (e != ES_OK)
        return e;
    hist_info h = {.step1 = t->step < (int)c->def->n_steps ? t->step + 1 : 0,
                   .command_id = t->cid,
                   .command_type = t->command_type,
                   .aggregate_type = t->aggregate_type,
                   .aggregate_id = t->aggregate_id,
                   .event_type = ev ? ev->event_type : NULL,
                   .event_id = ev ? ev->event_id : NULL,
                   .reason = reason};
    int open = 0;
    if (!strcmp(t->kind, KIND_DO)) {
        /* Only the running step's targets move the instance; a late end of an older
         * step (the instance moved on after a timeout) is recorded and nothing more. */
        int current = !strcmp(in->state, ES_SAGA_RUNNING) && in->step == t->step;
        if (!ok) {
            e = es_saga_hist(c, in, ev ? "event_received" : "command_rejected", &h, now, err);
            if (e == ES_OK && current) {
                char why[400];
                snprintf(why, sizeof why, "step %s failed: %s", es_saga_step_at(c, t->step)->name,
                         reason && *reason ? reason : (ev ? ev->event_type : "rejected"));
                e = es_saga_hist(c, in, "step_failed", HIST(.step1 = t->step + 1, .reason = why),
                                 now, err);
                if (e == ES_OK)
                    e = es_saga_begin_compensation(c, in, t->step, why, now, err);
            }
            return e;
        }
        e = es_saga_hist(c, in, ev ? "event_received" : "command_accepted", &h, now, err);
        if (e == ES_OK && current)
            e = open_targets(c, in, t->step, KIND_DO, &open, err);
        if (e == ES_OK && current && open == 0)
            e = advance(c, in, t->step, now, err);
        return e;
    }
    if (!ok) {
        char why[400];
        snprintf(why, sizeof why, "%s %s was rejected: %s",
                 !strcmp(t->kind, KIND_UNDO) ? "compensation" : "abort command", t->command_type,
                 reason ? reason : "");
        e = es_saga_hist(c, in, "command_rejected", &h, now, err);
        if (e == ES_OK && !terminal(in))
            e = finish(c, in, ES_SAGA_FAILED, why, now, err);
        return e;
    }
    e = es_saga_hist(c, in, "command_accepted", &h, now, err);
    if (e != ES_OK || strcmp(in->state, ES_SAGA_COMPENSATING) != 0 || in->step != t->step)
        return e;
    if (!strcmp(t->kind, KIND_ABORT))
        return finish(c, in, ES_SAGA_ABORTED, NULL, now, err);
    e = open_targets(c, in, t->step, KIND_UNDO, &open, err);
    if (e == ES_OK && open == 0) {
        e = es_saga_hist(c, in, "step_compensated", HIST(.step1 = t->step + 1), now, err);
        if (e == ES_OK)
            e = compensate_from(c, in, t->step - 1, now, err);
    }
    return e;
}

es_err es_saga_target_load(es_saga_t *c, const char *cid, saga_target *t, es_error_t *err) {
    sqlite3_stmt *s = c->st[S_TARGET_BY_CMD];
    sqlite3_reset(s);
    sqlite3_bind_text(s, 1, cid, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, c->def->name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        snprintf(t->cid, sizeof t->cid, "%s", cid);
        es_saga_copy_str(t->id, sizeof t->id, sqlite3_column_text(s, 0));
        t->step = sqlite3_column_int(s, 1);
        es_saga_copy_str(t->kind, sizeof t->kind, sqlite3_column_text(s, 3));
        es_saga_copy_str(t->status, sizeof t->status, sqlite3_column_text(s, 4));
        es_saga_copy_str(t->aggregate_type, sizeof t->aggregate_type, sqlite3_column_text(s, 5));
        es_saga_copy_str(t->aggregate_id, sizeof t->aggregate_id, sqlite3_column_text(s, 6));
        es_saga_copy_str(t->command_type, sizeof t->command_type, sqlite3_column_text(s, 7));
    }
    sqlite3_reset(s);
    if (rc == SQLITE_DONE)
        return ES_ENOTFOUND;
    return rc == SQLITE_ROW ? ES_OK : es_saga_db_fail(c, "looking up a command", err);
}

static const ProtobufCMessageDescriptor *listed(const ProtobufCMessageDescriptor *const *list,
                                                const char *type) {
    for (; list && *list; list++)
        if (!strcmp((*list)->name, type))
            return *list;
    return NULL;
}

/* "<event type>: <its reason field>" when the failing event's message has a string field
 * named reason (e.g. PaymentDeclined), else the event type. */
static void failure_reason(const ProtobufCMessageDescriptor *desc, const es_event_t *ev, char *out,
                           size_t cap) {
    snprintf(out, cap, "%s", ev->event_type);
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(desc, "reason");
    if (!f || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)
        return;
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, ev->payload_len, ev->payload);
    if (!m)
        return;
    const char *why = *(const char *const *)((const char *)m + f->offset);
    if (why && *why)
        snprintf(out, cap, "%s: %s", ev->event_type, why);
    protobuf_c_message_free_unpacked(m, NULL);
}

/* ---- events (inside the runner's transaction) --------------------------------------------- */

static es_err start_instance(es_saga_t *c, const es_event_t *ev, int64_t now, es_error_t *err) {
    const es_saga_def *def = c->def;
    ProtobufCMessage *msg =
        protobuf_c_message_unpack(def->start_event, NULL, ev->payload_len, ev->payload);
    if (!msg)
        return es_fail(err, ES_EDECODE, "saga '%s': %s/%s v%llu: the payload is not a %s",
                       def->name, ev->aggregate_type, ev->aggregate_id,
                       (unsigned long long)ev->version, def->start_event->name);
    saga_inst in;
    memset(&in, 0, sizeof in);
    es_err e = ES_OK;
    if (def->instance_id)
        e = def->instance_id(ev, msg, in.id, sizeof in.id, err);
    else
        snprintf(in.id, sizeof in.id, "%s", ev->aggregate_id);
    protobuf_c_message_free_unpacked(msg, NULL);
    if (e == ES_OK)
        e = es_validate_aggregate_id(in.id, err);
    if (e != ES_OK) {
        es_error_prefix(err, "saga '%s': the instance id of %s/%s v%llu: ", def->name,
                        ev->aggregate_type, ev->aggregate_id, (unsigned long long)ev->version);
        return e;
    }
    saga_inst old;
    e = es_saga_inst_load(c, in.id, &old, err);
    if (e == ES_OK) { /* started already: a redelivered start event */
        es_saga_inst_release(c, &old);
        c->stats.ignored++;
        return ES_OK;
    }
    if (e != ES_ENOTFOUND)
        return e;
    es_buf_t b = {0};
    e = es_envelope_pack(ev, &b, err);
    if (e != ES_OK)
        return e;
    in.start_bytes = b.data;
    in.start_len = b.len;
    e = decode_start(c, &in, err);
    if (e == ES_OK) {
        snprintf(in.state, sizeof in.state, "%s", ES_SAGA_RUNNING);
        in.started = now;
        e = es_saga_hist(c, &in, "started",
                         HIST(.event_type = ev->event_type, .event_id = ev->event_id,
                              .aggregate_type = ev->aggregate_type,
                              .aggregate_id = ev->aggregate_id),
                         now, err);
    }
    if (e == ES_OK)
        e = send_step(c, &in, 0, now, err);
    if (e == ES_OK)
        e = es_saga_inst_save(c, &in, now, err);
    es_saga_inst_release(c, &in);
    return e;
}

static es_err on_event(es_saga_t *c, const es_event_t *ev, es_error_t *err) {
    int64_t now = es_saga_now(c);
    const es_saga_def *def = c->def;
    if (!strcmp(ev->aggregate_type, def->start_aggregate) &&
        !strcmp(ev->event_type, def->start_event->name))
        return start_instance(c, ev, now, err);
    if (!ev->command_id || !*ev->command_id)
        return ES_OK;
    saga_target t;
    es_err e = es_saga_target_load(c, ev->command_id, &t, err);
    if (e == ES_ENOTFOUND)
        return ES_OK; /* not caused by this saga */
    if (e != ES_OK)
        return e;
    if (strcmp(t.kind, ES_SAGA_KIND_DO) != 0 || strcmp(t.status, "pending") != 0 ||
        strcmp(t.aggregate_type, ev->aggregate_type) != 0) {
        c->stats.ignored++; /* a compensation's event (its outcome counts), or a duplicate */
        return ES_OK;
    }
    const es_saga_step_t *st = es_saga_step_at(c, t.step);
    int ok = st->completed_by && listed(st->completed_by, ev->event_type);
    const ProtobufCMessageDescriptor *failed = listed(st->failed_by, ev->event_type);
    char why[300] = "";
    if (failed && !ok)
        failure_reason(failed, ev, why, sizeof why);
    saga_inst in;
    if ((e = es_saga_inst_load(c, t.id, &in, err)) != ES_OK)
        return e == ES_ENOTFOUND
                   ? es_fail(err, ES_EIO, "saga '%s': command %s has no instance", def->name, t.cid)
                   : e;
    if (ok || failed) {
        e = es_saga_target_ended(c, &in, &t, ok, *why ? why : NULL, ev, now, err);
    } else { /* an event on the way (e.g. "pending"): recorded, the step waits on */
        e = es_saga_hist(c, &in, "event_received",
                         HIST(.step1 = t.step + 1, .command_id = t.cid,
                              .aggregate_type = t.aggregate_type, .aggregate_id = t.aggregate_id,
                              .event_type = ev->event_type, .event_id = ev->event_id),
                         now, err);
    }
    if (e == ES_OK)
        e = es_saga_inst_save(c, &in, now, err);
    es_saga_inst_release(c, &in);
    return e;
}

/* The saga's span for the handling of ev, reported once the handling wrote a transition. */
static es_err handle_event(es_saga_t *c, const es_event_t *ev, es_error_t *err) {
    es_trace_start(ev->metadata, ev->n_metadata, &c->span);
    c->span_set = 1;
    c->span_used = 0;
    int64_t start = es_span_on(c->cfg) ? es_now_us() : 0;
    es_err e = on_event(c, ev, err);
    if (start && c->span_used) {
        char name[ES_PROJECTOR_NAME_MAX + 16];
        snprintf(name, sizeof name, "eskit.saga %s", c->def->name);
        es_kv_t attrs[] = {{"saga", c->def->name},
                           {"event_type", ev->event_type},
                           {"event_id", ev->event_id},
                           {"aggregate_type", ev->aggregate_type},
                           {"aggregate_id", ev->aggregate_id},
                           {"outcome", e == ES_OK ? "ok" : "failed"}};
        es_span_emit(c->cfg, ES_SPAN_START, name, &c->span, start, 0, ES_OK, NULL, attrs, 5);
        es_span_emit(c->cfg, ES_SPAN_END, name, &c->span, start, es_now_us(), e, attrs[5].value,
                     attrs, 6);
    }
    c->span_set = c->span_used = 0;
    return e;
}

static es_err saga_apply(es_projector_ctx_t *ctx, const es_event_t *ev, es_error_t *err) {
    es_saga_t *c = es_ctx_state(ctx);
    es_err e = handle_event(c, ev, err);
    if (e != ES_OK) /* the runner rolls back (the event or its batch) and goes on */
        es_saga_rolled_back(c);
    return e;
}

static es_err saga_migrate(sqlite3 *db, int from, es_error_t *err) {
    (void)from;
    return es_sql_exec(db, NULL, ES_SAGA_SCHEMA, "creating the saga tables", err);
}

/* ---- transactions outside the runner ------------------------------------------------------ */

es_err es_saga_tx_begin(es_saga_t *c, es_error_t *err) {
    es_sql_tx tx = es_sql_tx_on(c->db, es_config_get(c->cfg, "saga.db"));
    return es_sql_begin(&tx, ES_SQL_IMMEDIATE, "starting a saga transaction", err);
}

es_err es_saga_tx_end(es_saga_t *c, es_err e, es_error_t *err) {
    es_sql_tx tx = es_sql_tx_on(c->db, es_config_get(c->cfg, "saga.db"));
    e = es_sql_end(&tx, e, "committing a saga transaction", err);
    if (e != ES_OK)
        es_saga_rolled_back(c);
    return e;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

static es_err add_topic(es_saga_t *c, size_t *n, const char *type, es_error_t *err) {
    char t[ES_MAX_TYPE_LEN + 16];
    snprintf(t, sizeof t, "%s.events", type);
    for (size_t i = 0; i < *n; i++)
        if (!strcmp(c->topics[i], t))
            return ES_OK;
    if (!(c->topics[*n] = strdup(t)))
        return es_fail(err, ES_ENOMEM, "out of memory");
    (*n)++;
    return ES_OK;
}

static es_err make_topics(es_saga_t *c, es_error_t *err) {
    const es_saga_def *def = c->def;
    c->topics = calloc(def->n_steps + 3, sizeof *c->topics);
    if (!c->topics)
        return es_fail(err, ES_ENOMEM, "out of memory");
    size_t n = 0;
    es_err e = add_topic(c, &n, def->start_aggregate, err);
    for (size_t i = 0; e == ES_OK && i < def->n_steps; i++)
        e = add_topic(c, &n, def->steps[i].aggregate_type, err);
    return e;
}

int64_t es_saga_now(const es_saga_t *c) {
    return c->clock ? c->clock(c->clock_opaque) : es_now_us();
}

/* A coordinator with its names and configuration, and nothing opened. */
static es_err coordinator_alloc(const es_config_t *cfg, const es_saga_def *def, es_saga_t **out,
                                es_error_t *err) {
    es_err e = es_saga_check(def, err);
    if (e != ES_OK)
        return e;
    es_saga_t *c = calloc(1, sizeof *c);
    if (!c)
        return es_fail(err, ES_ENOMEM, "out of memory");
    /* ABI 1 ends where ABI 2 added opaque: read no further. */
    memcpy(&c->def_copy, def,
           def->abi_version == 1 ? offsetof(es_saga_def, opaque) : sizeof c->def_copy);
    c->def = &c->def_copy;
    es_stop_init(&c->stop);
    c->cfg = es_config_dup(cfg);
    es_saga_history_type(def->name, c->htype, sizeof c->htype, err);
    snprintf(c->subject, sizeof c->subject, "saga '%s': ", def->name);
    snprintf(c->pname, sizeof c->pname, "saga-%s", def->name);
    for (char *p = c->pname; *p; p++)
        if (*p == '.')
            *p = '-';
    e = c->cfg ? es_config_set(c->cfg, "readmodel.db", es_config_get(cfg, "saga.db"), err)
               : es_fail(err, ES_ENOMEM, "out of memory");
    if (e == ES_OK)
        e = make_topics(c, err);
    if (e == ES_OK) {
        c->batch_size = (size_t)strtoull(es_config_get(c->cfg, "projector.batch.size"), NULL, 10);
        c->retention_us = es_config_get_int(c->cfg, "saga.retention.ms") * 1000;
    }
    if (e != ES_OK) {
        es_saga_destroy(c);
        return e;
    }
    *out = c;
    return ES_OK;
}

es_err es_saga_core_new(const es_config_t *cfg, const es_saga_def *def, sqlite3 *db,
                        int64_t (*clock)(void *opaque), void *clock_opaque, es_saga_t **out,
                        es_error_t *err) {
    es_saga_t *c = NULL;
    es_err e = coordinator_alloc(cfg, def, &c, err);
    if (e != ES_OK)
        return e;
    c->db = db;
    c->clock = clock;
    c->clock_opaque = clock_opaque;
    e = saga_migrate(db, 0, err);
    if (e == ES_OK)
        e = es_saga_upgrade(db, es_config_get(c->cfg, "saga.db"), err);
    if (e == ES_OK)
        e = es_sql_prepare_all(db, es_config_get(c->cfg, "saga.db"), SQL, S_COUNT, c->st, err);
    if (e == ES_OK)
        e = es_saga_live_open(c, err);
    if (e != ES_OK) {
        es_saga_destroy(c);
        return e;
    }
    *out = c;
    return ES_OK;
}

/* The coordinator writes its steps' commands and its transitions, and reads the events that
 * start and end steps: the first are recorded in the log's schema catalogue, the others checked
 * against it. */
static es_err enrol_schemas(es_saga_t *c, const es_saga_def *def, es_error_t *err) {
    enum { PER_STEP = 2 };
    size_t nw = 2 + PER_STEP * def->n_steps, nr = 1;
    for (size_t i = 0; i < def->n_steps; i++)
        for (size_t k = 0; k < 2; k++) {
            const ProtobufCMessageDescriptor *const *l =
                k ? def->steps[i].failed_by : def->steps[i].completed_by;
            while (l && *l++)
                nr++;
        }
    const ProtobufCMessageDescriptor **w = calloc(nw, sizeof *w), **r = calloc(nr, sizeof *r);
    es_err e = w && r ? ES_OK : es_fail(err, ES_ENOMEM, "out of memory starting a saga");
    size_t iw = 0, ir = 0;
    if (e == ES_OK) {
        w[iw++] = &eskit__v1__saga_transition__descriptor;
        w[iw++] = def->on_abort ? def->on_abort->command : NULL;
        r[ir++] = def->start_event;
        for (size_t i = 0; i < def->n_steps; i++) {
            w[iw++] = def->steps[i].command;
            w[iw++] = def->steps[i].compensation;
            for (size_t k = 0; k < 2; k++)
                for (const ProtobufCMessageDescriptor *const *l = k ? def->steps[i].failed_by
                                                                    : def->steps[i].completed_by;
                     l && *l; l++)
                    r[ir++] = *l;
        }
        char who[ES_MAX_TYPE_LEN + 16];
        snprintf(who, sizeof who, "saga '%s'", def->name);
        e = es_catalogue_enrol(c->cfg, who, w, iw, r, ir, err);
    }
    free(w);
    free(r);
    return e;
}

/* With schema.registry.url set on Kafka: the transitions' envelope under
 * <name>.saga.events-value and eskit.v1.SagaTransition under its name, compatibility first,
 * before the coordinator starts (docs/registry.md), as the command processor does for its
 * events; a registry that refuses or is down refuses the start. */
static es_err register_with_registry(es_saga_t *c, const es_saga_def *def, es_error_t *err) {
    if (!es_backend_of(c->cfg)->partitioned)
        return ES_OK; /* the embedded log has no records for a registry */
    es_registry_t *r = NULL;
    es_err e = es_registry_open(c->cfg, &r, err);
    if (e == ES_OK && r) {
        char type[ES_MAX_TYPE_LEN + 16];
        snprintf(type, sizeof type, "%s.saga", def->name);
        const ProtobufCMessageDescriptor *const transitions[] = {
            &eskit__v1__saga_transition__descriptor};
        e = es_registry_put_aggregate(r, type, transitions, 1, NULL, err);
        if (e != ES_OK)
            es_error_prefix(err, "saga '%s': ", def->name);
    }
    es_registry_destroy(r);
    return e;
}

es_err es_saga_new(const es_config_t *cfg, const es_saga_def *def, es_engine_t *engine,
                   es_saga_t **out, es_error_t *err) {
    if (!cfg || !engine || !out)
        return es_fail(err, ES_EINVAL, "es_saga_new: cfg, engine and out are required");
    es_saga_t *c = NULL;
    es_err e = coordinator_alloc(cfg, def, &c, err);
    if (e != ES_OK)
        return e;
    c->engine = engine;
    e = enrol_schemas(c, def, err);
    if (e == ES_OK)
        e = register_with_registry(c, def, err);
    if (e != ES_OK) {
        es_saga_destroy(c);
        return e;
    }
    c->pdef = (es_projector_def){.abi_version = ES_PROJECTOR_ABI,
                                 .name = c->pname,
                                 .schema_version = 1,
                                 .topics = (const char *const *)c->topics,
                                 .migrate = saga_migrate,
                                 .apply = saga_apply};
    e = es_runner_new_on(c->cfg, &c->pdef, "saga.db", "saga database", &c->runner, err);
    if (e == ES_OK) {
        es_runner_set_state(c->runner, c);
        c->db = es_runner_db(c->runner);
        e = es_saga_upgrade(c->db, es_config_get(c->cfg, "saga.db"), err);
    }
    if (e == ES_OK)
        e = es_sql_prepare_all(c->db, es_config_get(c->cfg, "saga.db"), SQL, S_COUNT, c->st, err);
    if (e == ES_OK)
        e = es_saga_live_open(c, err);
    if (e == ES_OK)
        e = es_saga_counts_open(c, err);
    if (e == ES_OK)
        e = es_saga_mx_open(c, err);
    if (e != ES_OK) {
        es_saga_destroy(c);
        return e;
    }
    *out = c;
    return ES_OK;
}

void es_saga_destroy(es_saga_t *c) {
    if (!c)
        return;
    es_saga_mx_close(c);
    es_saga_counts_close(c);
    es_saga_live_close(c);
    es_saga_pub_drop(c);
    for (int k = 0; k < S_COUNT; k++)
        sqlite3_finalize(c->st[k]);
    es_runner_destroy(c->runner);
    for (size_t i = 0; c->topics && c->topics[i]; i++)
        free(c->topics[i]);
    free(c->topics);
    es_config_destroy(c->cfg);
    free(c);
}

es_err es_saga_poll(es_saga_t *c, int timeout_ms, size_t *progress, es_error_t *err) {
    size_t applied = 0, delivered = 0, fired = 0, published = 0;
    if (!c)
        return es_fail(err, ES_EINVAL, "es_saga_poll: coordinator is NULL");
    if (progress)
        *progress = 0;
    if (es_stop_requested(&c->stop)) /* until es_saga_run returns (saga.h) */
        return ES_OK;
    /* Work a crash may have left (the outbox) first; wait for new events only when there is
     * nothing else to do. */
    es_err e = es_saga_relay(c, &delivered, err);
    if (e == ES_OK)
        e = es_runner_poll(c->runner, delivered ? 0 : timeout_ms, &applied, err);
    if (e == ES_OK && applied > 0) {
        size_t more = 0;
        e = es_saga_relay(c, &more, err);
        delivered += more;
    }
    /* Deadlines only once the coordinator has caught up with the log (the batch did not fill):
     * after a restart or while behind, the event that ends a step may already be in the log,
     * and a step must not time out because the coordinator was away. A steady stream of
     * events that never fills a batch does not hold deadlines back. */
    if (e == ES_OK && applied < c->batch_size)
        e = es_saga_fire_deadlines(c, &fired, err);
    if (e == ES_OK)
        e = es_saga_publish(c, &published, err);
    size_t pruned = 0;
    if (e == ES_OK)
        e = es_saga_prune(c, &pruned, err);
    if (e != ES_OK) /* whatever failed may have rolled back what memory keeps */
        es_saga_rolled_back(c);
    size_t done = applied + delivered + fired + published + pruned;
    es_saga_mx_round(c, done > 0);
    if (progress)
        *progress = done;
    if (e != ES_OK)
        es_error_subject(err, c->subject);
    return e;
}

es_err es_saga_redeliver(es_saga_t *c, const es_event_t *ev, es_error_t *err) {
    if (!c || !ev)
        return es_fail(err, ES_EINVAL, "es_saga_redeliver: coordinator and event are required");
    /* ev may come from headers without schema_version (docs/abi.md): read it only that far. */
    es_event_t view;
    memcpy(&view, ev, offsetof(es_event_t, schema_version));
    view.schema_version = 0;
    es_err e = es_saga_tx_begin(c, err);
    if (e == ES_OK)
        e = handle_event(c, &view, err);
    e = es_saga_tx_end(c, e, err);
    if (e != ES_OK)
        es_error_subject(err, c->subject);
    return e;
}

static es_err poll_once(void *opaque, int timeout_ms, es_error_t *err) {
    return es_saga_poll(opaque, timeout_ms, NULL, err);
}

es_err es_saga_run(es_saga_t *c, es_error_t *err) {
    if (!c)
        return es_fail(err, ES_EINVAL, "es_saga_run: coordinator is NULL");
    es_err e = es_run_loop(poll_once, c, &c->stop, c->cfg, c->subject, err);
    /* The stop ended this run only: the coordinator may be run or polled again. */
    es_stop_clear(&c->stop);
    es_runner_resume(c->runner);
    return e;
}

/* Async-signal-safe and safe from any thread: stores to lock-free atomics (es_runner_stop). */
void es_saga_stop(es_saga_t *c) {
    es_stop_request(&c->stop);
    es_runner_stop(c->runner);
}

static uint64_t pruned_of(es_saga_t *c, const char *state) {
    sqlite3_stmt *s = es_saga_stmt(c, S_PRUNED_GET);
    sqlite3_bind_text(s, 2, state, -1, SQLITE_STATIC);
    uint64_t n = sqlite3_step(s) == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    return n;
}

static uint64_t nonneg(int64_t n) {
    return n > 0 ? (uint64_t)n : 0;
}

/* The counts by state are kept in memory (saga_metrics.c): a call costs the same whatever
 * saga.db has kept. */
void es_saga_stats(const es_saga_t *cc, es_saga_stats_t *out) {
    es_saga_t *c = (es_saga_t *)cc;
    int64_t n[SAGA_STATES];
    es_error_t err;
    es_saga_counts_take(c, n, &err); /* a failed count: the last one */
    *out = c->stats;
    out->completed = nonneg(n[SAGA_COMPLETED]);
    out->aborted = nonneg(n[SAGA_ABORTED]);
    out->failed = nonneg(n[SAGA_FAILED]);
    out->pruned = pruned_of(c, ES_SAGA_COMPLETED) + pruned_of(c, ES_SAGA_ABORTED) +
                  pruned_of(c, ES_SAGA_FAILED);
    out->started = out->completed + out->aborted + out->failed + nonneg(n[SAGA_RUNNING]) +
                   nonneg(n[SAGA_COMPENSATING]);
}

es_err es_saga_active(es_saga_t *c, uint64_t *n, es_error_t *err) {
    int64_t k[SAGA_STATES];
    es_err e = es_saga_counts_take(c, k, err);
    *n = e == ES_OK ? nonneg(k[SAGA_RUNNING]) + nonneg(k[SAGA_COMPENSATING]) : 0;
    return e;
}
