/* The relay: delivers the outbox (es_saga_targets not yet sent) through the engine, retries
 * what may succeed later and records each outcome on its instance. */
#include "saga_int.h"

#include "engine_int.h"

#include <stdlib.h>
#include <string.h>

#define RELAY_BATCH 256
#define RETRY_BACKOFF_US 200000
/* W3C asks to pass on at least 512 characters of tracestate; a longer one is dropped whole
 * rather than cut (a cut entry would be wrong), which W3C allows. */
#define TRACESTATE_MAX 512

typedef struct delivery {
    char cid[ES_MAX_ID_LEN + 1];
    char id[ES_MAX_ID_LEN + 1];
    char kind[8];
    int step; /* of the definition, as the outbox row says */
    char aggregate_type[ES_MAX_TYPE_LEN + 1];
    char aggregate_id[ES_MAX_ID_LEN + 1];
    char correlation[ES_MAX_ID_LEN + 1];
    char traceparent[ES_TRACEPARENT_LEN + 1]; /* the span that sent it: its caller's */
    char tracestate[TRACESTATE_MAX + 1];
    es_kv_t md[2];
    size_t n_md;
    const ProtobufCMessageDescriptor *desc;
    ProtobufCMessage *msg;
    int64_t deadline;
} delivery;

const ProtobufCMessageDescriptor *es_saga_command_desc(const es_saga_t *c, const char *name) {
    for (size_t i = 0; i < c->def->n_steps; i++) {
        const es_saga_step_t *st = &c->def->steps[i];
        if (!strcmp(st->command->name, name))
            return st->command;
        if (st->compensation && !strcmp(st->compensation->name, name))
            return st->compensation;
    }
    if (c->def->on_abort && !strcmp(c->def->on_abort->command->name, name))
        return c->def->on_abort->command;
    return NULL;
}

static es_err load_outbox(es_saga_t *c, delivery *d, size_t *n, es_error_t *err) {
    sqlite3_stmt *s = es_saga_stmt(c, S_OUTBOX);
    sqlite3_bind_int(s, 2, RELAY_BATCH);
    int rc;
    es_err e = ES_OK;
    *n = 0;
    while (e == ES_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        delivery *x = &d[*n];
        memset(x, 0, sizeof *x);
        es_saga_copy_str(x->cid, sizeof x->cid, sqlite3_column_text(s, 0));
        es_saga_copy_str(x->id, sizeof x->id, sqlite3_column_text(s, 1));
        es_saga_copy_str(x->kind, sizeof x->kind, sqlite3_column_text(s, 2));
        es_saga_copy_str(x->aggregate_type, sizeof x->aggregate_type, sqlite3_column_text(s, 3));
        es_saga_copy_str(x->aggregate_id, sizeof x->aggregate_id, sqlite3_column_text(s, 4));
        const char *type = (const char *)sqlite3_column_text(s, 5);
        x->desc = es_saga_command_desc(c, type ? type : "");
        x->deadline = sqlite3_column_int64(s, 7);
        es_saga_copy_str(x->correlation, sizeof x->correlation, sqlite3_column_text(s, 8));
        es_saga_copy_str(x->traceparent, sizeof x->traceparent, sqlite3_column_text(s, 9));
        x->step = sqlite3_column_int(s, 11);
        if (sqlite3_column_bytes(s, 10) <= TRACESTATE_MAX)
            es_saga_copy_str(x->tracestate, sizeof x->tracestate, sqlite3_column_text(s, 10));
        if (*x->traceparent)
            x->md[x->n_md++] = (es_kv_t){ES_TRACEPARENT_KEY, x->traceparent};
        if (*x->traceparent && *x->tracestate)
            x->md[x->n_md++] = (es_kv_t){ES_TRACESTATE_KEY, x->tracestate};
        if (!x->desc) {
            e = es_fail(err, ES_EUNKNOWN_TYPE,
                        "saga '%s': the outbox holds a %s (command %s), which no step of this "
                        "definition sends; was the saga changed while instances ran?",
                        c->def->name, type ? type : "?", x->cid);
            break;
        }
        x->msg = protobuf_c_message_unpack(x->desc, NULL, (size_t)sqlite3_column_bytes(s, 6),
                                           sqlite3_column_blob(s, 6));
        if (!x->msg) {
            e = es_fail(err, ES_EDECODE, "saga '%s': outbox command %s is not a valid %s",
                        c->def->name, x->cid, x->desc->name);
            break;
        }
        (*n)++;
    }
    sqlite3_reset(s);
    return e;
}

static const char *outcome_name(const es_result_t *r) {
    if (r->outcome != ES_OUTCOME_ACCEPTED && r->outcome != ES_OUTCOME_REJECTED &&
        r->outcome != ES_OUTCOME_CONFLICT && r->code == ES_ETIMEOUT)
        return "expired";
    return es_outcome_name(r->outcome);
}

/* The span of handling a command's outcome: a child of the command's execute span, which its
 * events name as their parent; for a command without events (rejected), of the instance's
 * start event (set 0: es_saga_span makes it). */
static void outcome_span(es_saga_t *c, const es_result_t *r) {
    es_trace_t ev;
    c->span_set = 0;
    if (!r->n_events || !es_trace_read(r->events[0]->metadata, r->events[0]->n_metadata, &ev) ||
        !*ev.parent)
        return;
    es_traceparent_t command = ev.tp;
    memcpy(command.span_id, ev.parent, sizeof command.span_id);
    es_trace_child(&command, ev.tracestate, &c->span);
    c->span_set = 1;
}

static es_err mark_sent(es_saga_t *c, const char *cid, const es_result_t *r, int64_t now,
                        es_error_t *err) {
    sqlite3_stmt *s = c->st[S_SENT];
    sqlite3_reset(s);
    sqlite3_bind_text(s, 1, cid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, now);
    sqlite3_bind_text(s, 3, outcome_name(r), -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, r->reason ? r->reason : "", -1, SQLITE_STATIC);
    return es_saga_step_done(c, s, "marking a command sent", err);
}

/* Whether outcome r of a command of kind at step k can move its instance (when its target is
 * still pending): else recording it sent is all there is to do. */
static int outcome_matters(const es_saga_t *c, const char *kind, int k, const es_result_t *r) {
    int accepted = r->outcome == ES_OUTCOME_ACCEPTED;
    int rejected = r->outcome == ES_OUTCOME_REJECTED;
    if (!strcmp(kind, ES_SAGA_KIND_DO)) {
        const es_saga_step_t *st = es_saga_step_at(c, k);
        /* With completed_by, events end the target (the consumer sees them); an expired
         * command is left to the step's deadline. */
        return rejected || (accepted && !st->completed_by);
    }
    return accepted || rejected; /* expired cannot happen (no deadline); errors were retried */
}

es_err es_saga_record_outcome(es_saga_t *c, const char *cid, const es_result_t *r, int64_t now,
                              es_error_t *err) {
    outcome_span(c, r);
    es_err e = mark_sent(c, cid, r, now, err);
    if (e != ES_OK)
        return e;
    saga_target t;
    if ((e = es_saga_target_load(c, cid, &t, err)) != ES_OK)
        return e;
    if (strcmp(t.status, "pending") != 0)
        return ES_OK; /* its events ended it already */
    if (!outcome_matters(c, t.kind, t.step, r))
        return ES_OK;
    int accepted = r->outcome == ES_OUTCOME_ACCEPTED;
    saga_inst in;
    if ((e = es_saga_inst_load(c, t.id, &in, err)) != ES_OK)
        return e == ES_ENOTFOUND ? es_fail(err, ES_EIO, "saga '%s': command %s has no instance",
                                           c->def->name, t.cid)
                                 : e;
    e = es_saga_target_ended(c, &in, &t, accepted, r->reason, NULL, now, err);
    if (e == ES_OK)
        e = es_saga_inst_save(c, &in, now, err);
    es_saga_inst_release(c, &in);
    return e;
}

/* A failure the same command may not meet again: a broker away, a timeout, a busy store. */
static int retryable(const es_result_t *r) {
    if (r->outcome == ES_OUTCOME_CONFLICT)
        return 1;
    return r->outcome == ES_OUTCOME_ERROR && r->code != ES_ETIMEOUT;
}

es_err es_saga_relay(es_saga_t *c, size_t *delivered, es_error_t *err) {
    *delivered = 0;
    /* A stop sends nothing new: the outbox keeps the commands for the next run. */
    if (es_now_us() < c->retry_at_us || es_stop_requested(&c->stop))
        return ES_OK;
    delivery *d = calloc(RELAY_BATCH, sizeof *d);
    es_command_t *cmds = calloc(RELAY_BATCH, sizeof *cmds);
    es_result_t *res = calloc(RELAY_BATCH, sizeof *res);
    size_t n = 0;
    es_err e =
        d && cmds && res ? load_outbox(c, d, &n, err) : es_fail(err, ES_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        cmds[i] = (es_command_t){.aggregate_type = d[i].aggregate_type,
                                 .aggregate_id = d[i].aggregate_id,
                                 .message = d[i].msg,
                                 .command_id = d[i].cid,
                                 .correlation_id = d[i].correlation,
                                 .deadline_us = d[i].deadline,
                                 .metadata = d[i].md,
                                 .n_metadata = d[i].n_md};
    if (e == ES_OK && n > 0) {
        /* A failed delivery is retried, not the poll's error: its words go to the log only. */
        es_error_t xerr = {0};
        if (es_execute_batch_until(c->engine, cmds, n, res, &c->stop, &xerr) != ES_OK) {
            /* A stop gives up the wait for the replies: they are sent again next time. */
            if (!es_stop_requested(&c->stop))
                es_logf(c->cfg, ES_LOG_WARNING, "saga '%s': delivering %zu command(s) failed: %s",
                        c->def->name, n, xerr.message);
            c->retry_at_us = es_now_us() + RETRY_BACKOFF_US;
            n = 0;
        }
    }
    size_t ok = 0, undone = 0;
    if (e == ES_OK && n > 0) {
        int64_t now = es_saga_now(c);
        e = es_saga_tx_begin(c, err);
        for (size_t i = 0; e == ES_OK && i < n; i++) {
            if (retryable(&res[i])) {
                es_logf(c->cfg, ES_LOG_WARNING, "saga '%s': command %s: %s; sending it again",
                        c->def->name, d[i].cid, res[i].reason ? res[i].reason : "failed");
                c->retry_at_us = now + RETRY_BACKOFF_US;
                continue;
            }
            /* An outcome that cannot move the instance (the common one: accepted, with events
             * to end the step) is only recorded: its target need not be read. */
            if (es_saga_step_at(c, d[i].step) && !outcome_matters(c, d[i].kind, d[i].step, &res[i]))
                e = mark_sent(c, d[i].cid, &res[i], now, err);
            else
                e = es_saga_record_outcome(c, d[i].cid, &res[i], now, err);
            ok++;
            undone += !strcmp(d[i].kind, ES_SAGA_KIND_UNDO);
        }
        e = es_saga_tx_end(c, e, err);
        for (size_t i = 0; i < n; i++)
            es_result_clear(&res[i]);
    }
    if (d)
        for (size_t i = 0; i < RELAY_BATCH; i++)
            if (d[i].msg)
                protobuf_c_message_free_unpacked(d[i].msg, NULL);
    free(d);
    free(cmds);
    free(res);
    if (e == ES_OK) {
        *delivered = ok;
        c->stats.commands_sent += ok;
        c->compensations_sent += undone;
    }
    return e;
}
