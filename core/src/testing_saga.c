/*
 * The saga side of the test kit (eskit/testing.h): the coordinator's own transitions
 * (es_saga_core_new) on an SQLite database in memory, with a virtual clock. Events go in as the
 * runner would apply them (es_saga_redeliver), command outcomes as the relay records them
 * (es_saga_record_outcome), deadlines fire as a caught-up poll fires them
 * (es_saga_fire_deadlines). The kit only reads what they wrote: the commands in the outbox and
 * the instance's row.
 */
#include "saga_int.h"
#include "testing_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every command an instance sent, in the order they were written. */
#define SENT_SQL                                                                                   \
    "SELECT rowid, command_id, kind, step, aggregate_type, aggregate_id, command_type, payload"    \
    " FROM es_saga_targets WHERE saga = ?1 AND rowid > ?2 ORDER BY rowid"
#define INSTANCE_SQL "SELECT id FROM es_saga_instances WHERE saga = ?1 LIMIT 1"

typedef struct sent_row {
    char *command_id, *kind, *step, *aggregate_type, *aggregate_id;
    uint8_t *payload;
    size_t len;
    ProtobufCMessage *msg;
} sent_row;

struct es_test_saga {
    const es_saga_def *def;
    es_config_t *cfg;
    sqlite3 *db;
    es_saga_t *c;
    sqlite3_stmt *sent_st, *instance_st;
    int64_t now; /* the virtual clock (us) */
    uint64_t version;
    char id[ES_MAX_ID_LEN + 1]; /* the instance, once started */
    sqlite3_int64 seen;         /* the last es_saga_targets row reported */
    sent_row *rows;
    es_test_sent_t *sent;
    size_t n_sent, cap_rows, cap_sent;
    char state[16], step[65], reason[512];
    es_buf_t log;     /* what happened, a line each: the report's "given" */
    size_t given_len; /* the log before the last when */
    char *when;       /* the last when, as text */
    int ran;
    es_err rc; /* the last when's outcome */
    char error[512];
};

static int64_t virtual_clock(void *opaque) {
    return ((const es_test_saga_t *)opaque)->now;
}

static void clear_sent(es_test_saga_t *s) {
    for (size_t i = 0; i < s->n_sent; i++) {
        sent_row *r = &s->rows[i];
        free(r->command_id);
        free(r->kind);
        free(r->step);
        free(r->aggregate_type);
        free(r->aggregate_id);
        free(r->payload);
        if (r->msg)
            protobuf_c_message_free_unpacked(r->msg, NULL);
    }
    s->n_sent = 0;
}

void es_test_saga_destroy(es_test_saga_t *s) {
    if (!s)
        return;
    clear_sent(s);
    free(s->rows);
    free(s->sent);
    es_saga_destroy(s->c);
    sqlite3_finalize(s->sent_st);
    sqlite3_finalize(s->instance_st);
    sqlite3_close(s->db);
    es_config_destroy(s->cfg);
    es_buf_free(&s->log);
    free(s->when);
    free(s);
}

es_err es_test_saga_new(const es_saga_def *def, es_test_saga_t **out, es_error_t *err) {
    if (!out)
        return es_fail(err, ES_EINVAL, "es_test_saga_new: out is required");
    *out = NULL;
    es_test_saga_t *s = calloc(1, sizeof *s);
    if (!s || !(s->cfg = es_config_new())) {
        free(s);
        return es_fail(err, ES_ENOMEM, "out of memory creating a test saga");
    }
    s->def = def;
    s->now = ES_TEST_SAGA_EPOCH_US;
    es_err e = es_config_set(s->cfg, "saga.db", ":memory:", err);
    if (e == ES_OK && sqlite3_open_v2(":memory:", &s->db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK)
        e = es_fail(err, ES_ENOMEM, "opening an SQLite database in memory for a test saga failed");
    if (e == ES_OK)
        e = es_saga_core_new(s->cfg, def, s->db, virtual_clock, s, &s->c, err);
    if (e == ES_OK &&
        (sqlite3_prepare_v2(s->db, SENT_SQL, -1, &s->sent_st, NULL) != SQLITE_OK ||
         sqlite3_prepare_v2(s->db, INSTANCE_SQL, -1, &s->instance_st, NULL) != SQLITE_OK))
        e = es_fail(err, ES_EIO, "preparing the test saga's queries failed: %s",
                    sqlite3_errmsg(s->db));
    if (e != ES_OK) {
        es_test_saga_destroy(s);
        return e;
    }
    *out = s;
    return ES_OK;
}

static void log_line(es_test_saga_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_line(es_test_saga_t *s, const char *fmt, ...) {
    char *line = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&line, fmt, ap);
    va_end(ap);
    if (n > 0)
        es_buf_append(&s->log, line, (size_t)n, NULL);
    if (n >= 0)
        free(line);
}

/* msg as es_test_format writes it, in a malloc'd string ("" when out of memory). */
static char *format_msg(const ProtobufCMessage *msg) {
    size_t need = es_test_format(msg, NULL, 0) + 1;
    char *text = malloc(need);
    if (text)
        es_test_format(msg, text, need);
    return text;
}

/* Starts a when described by fmt: the log so far becomes what was given. */
static void begin_when(es_test_saga_t *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void begin_when(es_test_saga_t *s, const char *fmt, ...) {
    s->given_len = s->log.len;
    free(s->when);
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&s->when, fmt, ap) < 0)
        s->when = NULL;
    va_end(ap);
    s->ran = 1;
    clear_sent(s);
}

/* Reads the commands written since the last when. */
static es_err collect_sent(es_test_saga_t *s, es_error_t *err) {
    sqlite3_stmt *q = s->sent_st;
    sqlite3_reset(q);
    sqlite3_bind_text(q, 1, s->def->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, s->seen);
    int rc;
    es_err e = ES_OK;
    while (e == ES_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        if ((e = es_grow((void **)&s->rows, &s->cap_rows, s->n_sent, sizeof *s->rows, err)) !=
                ES_OK ||
            (e = es_grow((void **)&s->sent, &s->cap_sent, s->n_sent, sizeof *s->sent, err)) !=
                ES_OK)
            break;
        s->seen = sqlite3_column_int64(q, 0);
        sent_row *r = &s->rows[s->n_sent];
        *r = (sent_row){0};
        int step = sqlite3_column_int(q, 3);
        r->command_id = es_strdup0((const char *)sqlite3_column_text(q, 1));
        r->kind = es_strdup0((const char *)sqlite3_column_text(q, 2));
        r->step = strdup((size_t)step < s->def->n_steps ? s->def->steps[step].name : "on_abort");
        r->aggregate_type = es_strdup0((const char *)sqlite3_column_text(q, 4));
        r->aggregate_id = es_strdup0((const char *)sqlite3_column_text(q, 5));
        const ProtobufCMessageDescriptor *d =
            es_saga_command_desc(s->c, (const char *)sqlite3_column_text(q, 6));
        r->len = (size_t)sqlite3_column_bytes(q, 7);
        r->payload = malloc(r->len ? r->len : 1);
        if (r->payload && r->len)
            memcpy(r->payload, sqlite3_column_blob(q, 7), r->len);
        r->msg = d && r->payload ? protobuf_c_message_unpack(d, NULL, r->len, r->payload) : NULL;
        s->n_sent++;
        if (!r->command_id || !r->kind || !r->step || !r->aggregate_type || !r->aggregate_id ||
            !r->msg)
            e = es_fail(err, ES_ENOMEM, "out of memory reading the commands a test saga sent");
        s->sent[s->n_sent - 1] = (es_test_sent_t){r->command_id,     r->kind,         r->step,
                                                  r->aggregate_type, r->aggregate_id, r->msg};
    }
    sqlite3_reset(q);
    return e;
}

/* The instance's state as its row says. */
static void load_state(es_test_saga_t *s) {
    if (!s->id[0]) {
        sqlite3_stmt *q = s->instance_st;
        sqlite3_reset(q);
        sqlite3_bind_text(q, 1, s->def->name, -1, SQLITE_STATIC);
        if (sqlite3_step(q) == SQLITE_ROW)
            snprintf(s->id, sizeof s->id, "%s", (const char *)sqlite3_column_text(q, 0));
        sqlite3_reset(q);
    }
    saga_inst in;
    s->state[0] = s->step[0] = s->reason[0] = '\0';
    if (!s->id[0] || es_saga_inst_load(s->c, s->id, &in, NULL) != ES_OK)
        return;
    snprintf(s->state, sizeof s->state, "%s", in.state);
    snprintf(s->reason, sizeof s->reason, "%s", in.reason);
    int ended = strcmp(in.state, ES_SAGA_RUNNING) && strcmp(in.state, ES_SAGA_COMPENSATING);
    if (!ended)
        snprintf(s->step, sizeof s->step, "%s",
                 (size_t)in.step < s->def->n_steps ? s->def->steps[in.step].name : "on_abort");
    es_saga_inst_release(s->c, &in);
}

static void put_sent(es_test_out_t *o, const es_test_sent_t *c) {
    es_test_put(o, "%s %s -> %s/%s: ", c->kind, c->step, c->aggregate_type, c->aggregate_id);
    es_test_put_message(o, c->command);
}

/* Ends a when that returned e (own says why): what it sent and the state, into the log; err
 * gets own's message. */
static es_err end_when(es_test_saga_t *s, es_err e, es_error_t *own, es_error_t *err) {
    if (e == ES_OK)
        e = collect_sent(s, own);
    s->rc = e;
    snprintf(s->error, sizeof s->error, "%s", e == ES_OK ? "" : own->message);
    if (e != ES_OK)
        es_fail(err, e, "%s", own->message);
    load_state(s);
    log_line(s, "  %s\n", s->when ? s->when : "");
    if (s->rc != ES_OK)
        log_line(s, "    error %s: %s\n", es_strerror(s->rc), s->error);
    for (size_t i = 0; i < s->n_sent; i++) {
        char line[1024];
        es_test_out_t o = {line, sizeof line, 0};
        put_sent(&o, &s->sent[i]);
        es_test_finish(&o);
        log_line(s, "    sent %s\n", line);
    }
    log_line(s, "    state: %s%s%s\n", s->state[0] ? s->state : "(no instance)",
             s->step[0] ? " at step " : "", s->step);
    return e;
}

es_err es_test_saga_start(es_test_saga_t *s, const char *aggregate_id,
                          const ProtobufCMessage *event, es_error_t *err) {
    if (!event || !aggregate_id)
        return es_fail(err, ES_EINVAL, "es_test_saga_start: aggregate_id and event are required");
    if (s->id[0])
        return es_fail(err, ES_ESTATE,
                       "saga '%s': the test kit runs one instance, and %s started already; use "
                       "another es_test_saga_t",
                       s->def->name, s->id);
    es_error_t own = {0};
    char *text = format_msg(event);
    begin_when(s, "start: %s on %s/%s", text ? text : "", s->def->start_aggregate, aggregate_id);
    free(text);
    if (event->descriptor != s->def->start_event)
        return end_when(s,
                        es_fail(&own, ES_EINVAL, "saga '%s' starts on %s, not on %s", s->def->name,
                                s->def->start_event->name, event->descriptor->name),
                        &own, err);
    size_t len = protobuf_c_message_get_packed_size(event);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return end_when(s, es_fail(&own, ES_ENOMEM, "out of memory packing a start event"), &own,
                        err);
    protobuf_c_message_pack(event, buf);
    es_event_t ev = {.offset = -1,
                     .aggregate_type = s->def->start_aggregate,
                     .aggregate_id = aggregate_id,
                     .version = ++s->version,
                     .event_type = event->descriptor->name,
                     .payload = buf,
                     .payload_len = len,
                     .occurred_at_us = s->now,
                     .command_id = "",
                     .correlation_id = ""};
    es_uuid7(ev.event_id);
    es_err e = es_saga_redeliver(s->c, &ev, &own);
    free(buf);
    return end_when(s, e, &own, err);
}

/* A copy of id in buf (NULL stays NULL): it may be one of the last when's commands, which the
 * next when frees. */
static const char *keep_id(char buf[ES_MAX_ID_LEN + 1], const char *id) {
    if (!id)
        return NULL;
    snprintf(buf, ES_MAX_ID_LEN + 1, "%s", id);
    return buf;
}

/* The target of command_id, which this instance must have sent. */
static es_err target_of(es_test_saga_t *s, const char *command_id, saga_target *t,
                        es_error_t *err) {
    es_err e = command_id ? es_saga_target_load(s->c, command_id, t, err) : ES_ENOTFOUND;
    if (e == ES_ENOTFOUND)
        return es_fail(err, ES_ENOTFOUND,
                       "saga '%s' sent no command %s; es_test_saga_sent lists what the last step "
                       "sent",
                       s->def->name, command_id ? command_id : "(NULL)");
    return e;
}

static es_err outcome(es_test_saga_t *s, const char *command_id, es_outcome oc, const char *reason,
                      es_error_t *err) {
    char cid[ES_MAX_ID_LEN + 1];
    command_id = keep_id(cid, command_id);
    saga_target t;
    es_error_t own = {0};
    if (oc == ES_OUTCOME_ACCEPTED)
        begin_when(s, "accepted: %s", command_id ? command_id : "(NULL)");
    else
        begin_when(s, "rejected: %s: %s", command_id ? command_id : "(NULL)", reason ? reason : "");
    es_err e = target_of(s, command_id, &t, &own);
    if (e != ES_OK)
        return end_when(s, e, &own, err);
    es_result_t r = {.outcome = oc,
                     .code = oc == ES_OUTCOME_ACCEPTED ? ES_OK : ES_EREJECTED,
                     .reason = (char *)(oc == ES_OUTCOME_ACCEPTED ? NULL
                                        : reason                  ? reason
                                                                  : "")};
    e = es_saga_tx_begin(s->c, &own);
    if (e == ES_OK)
        e = es_saga_record_outcome(s->c, command_id, &r, s->now, &own);
    e = es_saga_tx_end(s->c, e, &own);
    return end_when(s, e, &own, err);
}

es_err es_test_saga_accepted(es_test_saga_t *s, const char *command_id, es_error_t *err) {
    return outcome(s, command_id, ES_OUTCOME_ACCEPTED, NULL, err);
}

es_err es_test_saga_rejected(es_test_saga_t *s, const char *command_id, const char *reason,
                             es_error_t *err) {
    return outcome(s, command_id, ES_OUTCOME_REJECTED, reason, err);
}

es_err es_test_saga_event(es_test_saga_t *s, const char *command_id, const ProtobufCMessage *event,
                          es_error_t *err) {
    char cid[ES_MAX_ID_LEN + 1];
    command_id = keep_id(cid, command_id);
    if (!event)
        return es_fail(err, ES_EINVAL, "es_test_saga_event: event is required");
    es_error_t own = {0};
    char *text = format_msg(event);
    begin_when(s, "event: %s caused by %s", text ? text : "", command_id ? command_id : "(NULL)");
    free(text);
    saga_target t;
    es_err e = target_of(s, command_id, &t, &own);
    if (e != ES_OK)
        return end_when(s, e, &own, err);
    size_t len = protobuf_c_message_get_packed_size(event);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return end_when(s, es_fail(&own, ES_ENOMEM, "out of memory packing an event"), &own, err);
    protobuf_c_message_pack(event, buf);
    es_event_t ev = {.offset = -1,
                     .aggregate_type = t.aggregate_type,
                     .aggregate_id = t.aggregate_id,
                     .version = ++s->version,
                     .event_type = event->descriptor->name,
                     .payload = buf,
                     .payload_len = len,
                     .occurred_at_us = s->now,
                     .command_id = command_id,
                     .correlation_id = ""};
    es_uuid7(ev.event_id);
    e = es_saga_redeliver(s->c, &ev, &own);
    free(buf);
    return end_when(s, e, &own, err);
}

es_err es_test_saga_advance(es_test_saga_t *s, int64_t ms, es_error_t *err) {
    es_error_t own = {0};
    begin_when(s, "clock: +%lld ms (at %lld ms)", (long long)ms,
               (long long)((s->now - ES_TEST_SAGA_EPOCH_US) / 1000) + (long long)ms);
    if (ms < 0)
        return end_when(s, es_fail(&own, ES_EINVAL, "the virtual clock does not go back"), &own,
                        err);
    s->now += ms * 1000;
    size_t fired = 0;
    return end_when(s, es_saga_fire_deadlines(s->c, &fired, &own), &own, err);
}

const es_test_sent_t *es_test_saga_sent(const es_test_saga_t *s, size_t *n) {
    if (n)
        *n = s->n_sent;
    return s->n_sent ? s->sent : NULL;
}

const char *es_test_saga_state(const es_test_saga_t *s) {
    return s->state;
}

const char *es_test_saga_step(const es_test_saga_t *s) {
    return s->step;
}

const char *es_test_saga_reason(const es_test_saga_t *s) {
    return s->reason;
}

/* The verdict, given, when; 0 when no when ran. */
static int put_context(es_test_out_t *o, const es_test_saga_t *s, const char *verdict) {
    es_test_put(o, "%s\ngiven:\n",
                s->ran ? verdict : "nothing happened yet: start the saga before a then check");
    if (!s->given_len)
        es_test_put(o, "  (nothing)\n");
    else
        es_test_put(o, "%.*s", (int)s->given_len, (const char *)s->log.data);
    es_test_put(o, "when:\n  %s\n", s->when ? s->when : "(nothing)");
    return s->ran;
}

static void put_got(es_test_out_t *o, const es_test_saga_t *s) {
    es_test_put(o, "got:\n");
    if (s->rc != ES_OK)
        es_test_put(o, "  error %s: %s\n", es_strerror(s->rc), s->error);
    if (!s->n_sent)
        es_test_put(o, "  (no commands)\n");
    for (size_t i = 0; i < s->n_sent; i++) {
        es_test_put(o, "  %zu. ", i + 1);
        put_sent(o, &s->sent[i]);
        es_test_put(o, "\n");
    }
    es_test_put(o, "  state: %s%s%s%s%s\n", s->state[0] ? s->state : "(no instance)",
                s->step[0] ? " at step " : "", s->step, s->reason[0] ? "; reason: " : "",
                s->reason);
}

static bool same_command(const es_test_sent_t *c, const sent_row *r, const es_test_send_t *x) {
    if (!x->command || !x->aggregate_id || strcmp(c->aggregate_id, x->aggregate_id) ||
        strcmp(c->command->descriptor->name, x->command->descriptor->name))
        return false;
    size_t len = protobuf_c_message_get_packed_size(x->command);
    if (len != r->len)
        return false;
    uint8_t *b = malloc(len ? len : 1);
    bool same = b && protobuf_c_message_pack(x->command, b) == len && !memcmp(b, r->payload, len);
    free(b);
    return same;
}

static bool done(es_test_out_t *o, bool ok) {
    if (ok)
        o->len = 0;
    es_test_finish(o);
    return ok;
}

bool es_test_saga_then_sent(const es_test_saga_t *s, const es_test_send_t *expected, size_t n,
                            char *report, size_t cap) {
    es_test_out_t o = {report, cap, 0};
    bool ok = s->ran && s->rc == ES_OK && s->n_sent == n;
    size_t differs = 0;
    for (size_t i = 0; ok && i < n; i++)
        if (!same_command(&s->sent[i], &s->rows[i], &expected[i])) {
            ok = false;
            differs = i + 1;
        }
    if (ok)
        return done(&o, true);
    char verdict[160];
    if (s->rc != ES_OK)
        snprintf(verdict, sizeof verdict, "expected %zu command(s), but the last when failed", n);
    else if (differs)
        snprintf(verdict, sizeof verdict, "command %zu differs from the expected one", differs);
    else
        snprintf(verdict, sizeof verdict, "expected %zu command(s), %zu were sent", n, s->n_sent);
    if (put_context(&o, s, verdict)) {
        es_test_put(&o, "expected:\n");
        if (!n)
            es_test_put(&o, "  (no commands)\n");
        for (size_t i = 0; i < n; i++) {
            es_test_put(&o, "  %zu. %s: ", i + 1,
                        expected[i].aggregate_id ? expected[i].aggregate_id : "(NULL)");
            es_test_put_message(&o, expected[i].command);
            es_test_put(&o, "\n");
        }
        put_got(&o, s);
    }
    return done(&o, false);
}

bool es_test_saga_then_state(const es_test_saga_t *s, const char *state, char *report, size_t cap) {
    es_test_out_t o = {report, cap, 0};
    if (s->ran && state && !strcmp(s->state, state))
        return done(&o, true);
    if (put_context(&o, s, "the instance is in another state")) {
        es_test_put(&o, "expected:\n  state: %s\n", state ? state : "(NULL)");
        put_got(&o, s);
    }
    return done(&o, false);
}
