#include "tp_common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

es_err tp_fail(es_error_t *err, es_err code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

static const char schema_v1[] =
    "CREATE TABLE tp_applied(topic TEXT NOT NULL, part INTEGER NOT NULL, off INTEGER NOT NULL,"
    " agg_id TEXT NOT NULL, version INTEGER NOT NULL, amount INTEGER NOT NULL,"
    " PRIMARY KEY(agg_id, version)) WITHOUT ROWID;"
    "CREATE TABLE tp_totals(agg_id TEXT PRIMARY KEY, events INTEGER NOT NULL,"
    " amount INTEGER NOT NULL) WITHOUT ROWID;";

es_err tp_migrate(sqlite3 *db, int from_version, es_error_t *err) {
    if (from_version != 0)
        return tp_fail(err, ES_EINVAL, "tp: no migration from schema version %d", from_version);
    if (sqlite3_exec(db, schema_v1, NULL, NULL, NULL) != SQLITE_OK)
        return tp_fail(err, ES_EIO, "tp: creating tables: %s", sqlite3_errmsg(db));
    return ES_OK;
}

static const char insert_applied[] =
    "INSERT INTO tp_applied(topic, part, off, agg_id, version, amount) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
static const char add_total[] =
    "INSERT INTO tp_totals(agg_id, events, amount) VALUES (?1, 1, ?2) "
    "ON CONFLICT(agg_id) DO UPDATE SET events = events + 1, amount = amount + excluded.amount";

es_err tp_apply(es_projector_ctx_t *ctx, const char *name, const es_event_t *ev, es_error_t *err) {
    if (strcmp(ev->event_type, TP_EVENT_ADDED) != 0)
        return tp_fail(err, ES_EUNKNOWN_TYPE, "%s: unknown event type %s (%s v%llu)", name,
                       ev->event_type, ev->aggregate_id, (unsigned long long)ev->version);
    int64_t amount = 0;
    if (tp_decode(ev->payload, ev->payload_len, &amount) != 0)
        return tp_fail(err, ES_EDECODE, "%s: payload of %s v%llu is not a tp1 payload (%zu bytes)",
                       name, ev->aggregate_id, (unsigned long long)ev->version, ev->payload_len);
    char topic[ES_MAX_TYPE_LEN + 16];
    snprintf(topic, sizeof topic, "%s.events", ev->aggregate_type);
    sqlite3_stmt *s = es_ctx_stmt(ctx, insert_applied, err);
    if (!s)
        return err ? err->code : ES_EINVAL;
    sqlite3_bind_text(s, 1, topic, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(s, 2, ev->partition);
    sqlite3_bind_int64(s, 3, ev->offset);
    sqlite3_bind_text(s, 4, ev->aggregate_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, (sqlite3_int64)ev->version);
    sqlite3_bind_int64(s, 6, amount);
    es_err e = es_ctx_exec(ctx, s, err);
    if (e != ES_OK)
        return e;
    if (!(s = es_ctx_stmt(ctx, add_total, err)))
        return err ? err->code : ES_EINVAL;
    sqlite3_bind_text(s, 1, ev->aggregate_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, amount);
    return es_ctx_exec(ctx, s, err);
}
