/*
 * The operator's view of sagas (esctl sagas): instances as the coordinator left them in the
 * saga database, opened read-only so a query never creates or changes one, and an instance's
 * history as the transitions appended to "<saga>.saga.events", read through es_store_t so it
 * works on both backends.
 */
#include "saga_int.h"
#include "backends.h"
#include "dbfile.h"
#include "sql.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eskit/v1/saga.pb-c.h"

static const char *const state_names[] = {
    [ESKIT__V1__SAGA_STATE__SAGA_STATE_RUNNING] = ES_SAGA_RUNNING,
    [ESKIT__V1__SAGA_STATE__SAGA_STATE_COMPENSATING] = ES_SAGA_COMPENSATING,
    [ESKIT__V1__SAGA_STATE__SAGA_STATE_COMPLETED] = ES_SAGA_COMPLETED,
    [ESKIT__V1__SAGA_STATE__SAGA_STATE_ABORTED] = ES_SAGA_ABORTED,
    [ESKIT__V1__SAGA_STATE__SAGA_STATE_FAILED] = ES_SAGA_FAILED,
};
#define N_STATES (sizeof state_names / sizeof *state_names)
#define STATE_LIST "running, compensating, completed, aborted, failed"

es_err es_saga_history_type(const char *saga, char *out, size_t cap, es_error_t *err) {
    if (!out || cap == 0)
        return es_fail(err, ES_EINVAL, "es_saga_history_type: an output buffer is required");
    *out = '\0';
    int n = saga ? snprintf(out, cap, "%s.saga", saga) : -1;
    /* The saga name itself must be "<domain>.<name>", so "orders" alone is refused too. */
    if (n < 0 || (size_t)n >= cap || n > ES_MAX_TYPE_LEN ||
        es_validate_aggregate_type(saga, NULL) != ES_OK) {
        *out = '\0';
        return es_fail(err, ES_EINVAL,
                       "'%.200s' is not a saga name; use lowercase '<domain>.<name>' of "
                       "[a-z0-9-] segments, at most %d bytes, e.g. 'orders.fulfilment'",
                       saga ? saga : "", ES_MAX_TYPE_LEN - 5);
    }
    return ES_OK;
}

static void copy(char *dst, size_t cap, const char *src) {
    snprintf(dst, cap, "%s", src ? src : "");
}

static void state_name(char *dst, size_t cap, int state) {
    if (state > 0 && (size_t)state < N_STATES)
        copy(dst, cap, state_names[state]);
    else if (state == ESKIT__V1__SAGA_STATE__SAGA_STATE_NONE)
        copy(dst, cap, "");
    else
        snprintf(dst, cap, "state-%d", state); /* written by a newer coordinator */
}

es_err es_saga_record_decode(const uint8_t *buf, size_t len, uint64_t seq, es_saga_record_t *r,
                             es_error_t *err) {
    if (!r || (!buf && len))
        return es_fail(err, ES_EINVAL, "es_saga_record_decode: a record and bytes are required");
    memset(r, 0, sizeof *r);
    Eskit__V1__SagaTransition *t = eskit__v1__saga_transition__unpack(NULL, len, buf);
    if (!t)
        return es_fail(err, ES_EDECODE,
                       "saga transition %llu: %zu bytes that are not an eskit.v1.SagaTransition",
                       (unsigned long long)seq, len);
    if (!t->kind || !*t->kind) {
        eskit__v1__saga_transition__free_unpacked(t, NULL);
        return es_fail(err, ES_EDECODE,
                       "saga transition %llu: %zu bytes without a kind; not a transition the "
                       "coordinator wrote",
                       (unsigned long long)seq, len);
    }
    r->seq = seq;
    r->at_us = t->at_us;
    copy(r->kind, sizeof r->kind, t->kind);
    state_name(r->state, sizeof r->state, (int)t->state);
    copy(r->step, sizeof r->step, t->step);
    r->step_index = (int)t->step_index;
    copy(r->command_id, sizeof r->command_id, t->command_id);
    copy(r->command_type, sizeof r->command_type, t->command_type);
    copy(r->aggregate_type, sizeof r->aggregate_type, t->aggregate_type);
    copy(r->aggregate_id, sizeof r->aggregate_id, t->aggregate_id);
    copy(r->event_type, sizeof r->event_type, t->event_type);
    copy(r->event_id, sizeof r->event_id, t->event_id);
    copy(r->reason, sizeof r->reason, t->reason);
    r->deadline_us = t->deadline_us;
    eskit__v1__saga_transition__free_unpacked(t, NULL);
    return ES_OK;
}

/* Read-only, so looking never creates a database or takes the coordinator's write lock; a file
 * that is not a saga database is refused, naming what it is. */
static es_err open_saga_db(const es_config_t *cfg, sqlite3 **db, es_error_t *err) {
    const char *path = es_config_get(cfg, "saga.db");
    *db = NULL;
    if (access(path, F_OK) != 0)
        return es_fail(err, ES_ENOTFOUND,
                       "no saga database at %s; run a saga coordinator first, or set saga.db "
                       "(ESKIT_SAGA_DB) to the one it uses",
                       path);
    es_err e = es_db_open_readonly(path, "saga database",
                                   (int)es_config_get_int(cfg, "sqlite.busy.timeout.ms"), db, err);
    if (e == ES_OK && (e = es_db_expect(*db, path, ES_DB_SAGA_DB, err)) != ES_OK) {
        sqlite3_close(*db);
        *db = NULL;
    }
    return e;
}

static es_err prepare(sqlite3 *db, const es_config_t *cfg, const char *sql, sqlite3_stmt **s,
                      es_error_t *err) {
    int rc = sqlite3_prepare_v2(db, sql, -1, s, NULL);
    if (rc == SQLITE_OK)
        return ES_OK;
    return es_sql_fail_file(db, rc, es_config_get(cfg, "saga.db"), "reading the saga database",
                            err);
}

#define INSTANCE_COLUMNS "saga, id, state, step, started_at, updated_at, deadline, reason"

static void info_row(sqlite3_stmt *s, es_saga_info_t *i) {
    memset(i, 0, sizeof *i);
    copy(i->saga, sizeof i->saga, (const char *)sqlite3_column_text(s, 0));
    copy(i->id, sizeof i->id, (const char *)sqlite3_column_text(s, 1));
    copy(i->state, sizeof i->state, (const char *)sqlite3_column_text(s, 2));
    /* The table keeps the step's index; its name is in the definition, which we lack here. */
    i->step_index = sqlite3_column_int(s, 3);
    i->started_us = sqlite3_column_int64(s, 4);
    i->updated_us = sqlite3_column_int64(s, 5);
    i->deadline_us = sqlite3_column_int64(s, 6);
    copy(i->reason, sizeof i->reason, (const char *)sqlite3_column_text(s, 7));
}

/* Runs s (bound) and collects its rows; finalizes s. */
static es_err collect(sqlite3 *db, const es_config_t *cfg, sqlite3_stmt *s, es_saga_info_t **out,
                      size_t *n, es_error_t *err) {
    es_saga_info_t *rows = NULL;
    size_t cap = 0, count = 0;
    es_err e = ES_OK;
    int rc = SQLITE_DONE;
    while (e == ES_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        e = es_grow((void **)&rows, &cap, count, sizeof *rows, err);
        if (e == ES_OK && rows)
            info_row(s, &rows[count++]);
    }
    if (e == ES_OK && rc != SQLITE_DONE)
        e = es_sql_fail_file(db, rc, es_config_get(cfg, "saga.db"), "reading the saga database",
                             err);
    sqlite3_finalize(s);
    if (e != ES_OK) {
        free(rows);
        return e;
    }
    *out = rows;
    *n = count;
    return ES_OK;
}

static es_err check_state(const char *state, es_error_t *err) {
    for (size_t i = 1; state && i < N_STATES; i++)
        if (!strcmp(state, state_names[i]))
            return ES_OK;
    return es_fail(err, ES_EINVAL, "'%.64s' is not a saga state; use one of " STATE_LIST,
                   state ? state : "");
}

static es_err query(const es_config_t *cfg, const char *sql, const char *a, const char *b,
                    es_saga_info_t **out, size_t *n, es_error_t *err) {
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    es_err e = open_saga_db(cfg, &db, err);
    if (e == ES_OK)
        e = prepare(db, cfg, sql, &s, err);
    if (e == ES_OK) {
        sqlite3_bind_text(s, 1, a, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, b, -1, SQLITE_STATIC);
        e = collect(db, cfg, s, out, n, err);
    }
    sqlite3_close(db);
    return e;
}

es_err es_saga_list(const es_config_t *cfg, const char *saga, const char *state,
                    es_saga_info_t **out, size_t *n, es_error_t *err) {
    char type[ES_MAX_TYPE_LEN + 1];
    if (!out || !n)
        return es_fail(err, ES_EINVAL, "es_saga_list: out and n are required");
    *out = NULL;
    *n = 0;
    es_err e = saga ? es_saga_history_type(saga, type, sizeof type, err) : ES_OK;
    if (e == ES_OK && state)
        e = check_state(state, err);
    if (e == ES_OK)
        e = query(cfg,
                  "SELECT " INSTANCE_COLUMNS " FROM es_saga_instances WHERE (?1 IS NULL OR "
                  "saga = ?1) AND (?2 IS NULL OR state = ?2) ORDER BY updated_at DESC, saga, id",
                  saga, state, out, n, err);
    return e;
}

es_err es_saga_find(const es_config_t *cfg, const char *saga, const char *id, es_saga_info_t **out,
                    size_t *n, es_error_t *err) {
    char type[ES_MAX_TYPE_LEN + 1];
    if (!out || !n)
        return es_fail(err, ES_EINVAL, "es_saga_find: out and n are required");
    *out = NULL;
    *n = 0;
    es_err e = saga ? es_saga_history_type(saga, type, sizeof type, err) : ES_OK;
    if (e == ES_OK)
        e = es_validate_aggregate_id(id, err);
    if (e == ES_OK)
        e = query(cfg,
                  "SELECT " INSTANCE_COLUMNS " FROM es_saga_instances WHERE (?1 IS NULL OR "
                  "saga = ?1) AND id = ?2 ORDER BY saga",
                  saga, id, out, n, err);
    return e;
}

typedef struct history_ctx {
    es_saga_record_t *recs;
    size_t n, cap;
    es_error_t *err;
    es_err e;
} history_ctx;

static int on_transition(const es_event_t *ev, void *opaque) {
    history_ctx *c = opaque;
    if (strcmp(ev->event_type, ES_SAGA_EVENT_TYPE) != 0) {
        c->e = es_fail(
            c->err, ES_EDECODE, "%s/%s version %llu is a '%.200s', not an " ES_SAGA_EVENT_TYPE,
            ev->aggregate_type, ev->aggregate_id, (unsigned long long)ev->version, ev->event_type);
        return 1;
    }
    c->e = es_grow((void **)&c->recs, &c->cap, c->n, sizeof *c->recs, c->err);
    if (c->e == ES_OK)
        c->e = es_saga_record_decode(ev->payload, ev->payload_len, ev->version, &c->recs[c->n],
                                     c->err);
    if (c->e != ES_OK) {
        es_error_prefix(c->err, "%s/%s: ", ev->aggregate_type, ev->aggregate_id);
        return 1;
    }
    if (!c->recs[c->n].at_us)
        c->recs[c->n].at_us = ev->occurred_at_us;
    c->n++;
    return 0;
}

/* A query must not leave an empty event store behind where a path was mistyped. */
static es_err check_store_exists(const es_config_t *cfg, es_error_t *err) {
    const char *db = es_config_get(cfg, "db");
    if (!es_backend_of(cfg)->local_file || access(db, F_OK) == 0)
        return ES_OK;
    return es_fail(err, ES_ENOTFOUND,
                   "no event store at %s; set db (ESKIT_DB) to the store the "
                   "saga coordinator appends to",
                   db);
}

es_err es_saga_history(const es_config_t *cfg, const char *saga, const char *id,
                       es_saga_record_t **out, size_t *n, es_error_t *err) {
    char type[ES_MAX_TYPE_LEN + 1];
    if (!out || !n)
        return es_fail(err, ES_EINVAL, "es_saga_history: out and n are required");
    *out = NULL;
    *n = 0;
    es_err e = es_saga_history_type(saga, type, sizeof type, err);
    if (e == ES_OK)
        e = es_validate_aggregate_id(id, err);
    if (e == ES_OK)
        e = check_store_exists(cfg, err);
    es_store_t *store = NULL;
    if (e == ES_OK)
        e = es_store_open(cfg, ES_OPEN_READONLY, &store, err);
    history_ctx c = {.err = err};
    if (e == ES_OK)
        e = es_store_read_stream(store, type, id, 1, on_transition, &c, err);
    if (e == ES_OK)
        e = c.e;
    if (e == ES_OK && c.n == 0)
        e = es_fail(err, ES_ENOTFOUND,
                    "saga '%s' has no instance '%.200s': no transitions in %s.events; check the "
                    "id and the saga name (esctl sagas list)",
                    saga, id, type);
    es_store_destroy(store);
    if (e != ES_OK) {
        free(c.recs);
        return e;
    }
    *out = c.recs;
    *n = c.n;
    return ES_OK;
}
