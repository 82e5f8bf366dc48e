/*
 * The order_summary table (order_summary.h) as both order projectors write it: v1's
 * (order_summary.c) and v2's (order_summary_v2), which decode different types into the same
 * rows. Every write is guarded by the order's version, so an event applied twice changes
 * nothing; an event for an order the table does not hold (its OrderPlaced was parked) is
 * parked too, rather than lost.
 */
#include "order_summary_table.h"

#include <stdio.h>
#include <string.h>

#define NAME "order_summary"

static const char schema_v1[] =
    "CREATE TABLE order_summary ("
    " order_id TEXT PRIMARY KEY,"
    " status TEXT NOT NULL"
    " CHECK (status = 'placed' OR status = 'confirmed' OR status = 'cancelled'),"
    " customer_id TEXT NOT NULL,"
    " amount_cents INTEGER NOT NULL,"
    " currency TEXT NOT NULL,"
    " item_count INTEGER NOT NULL,"
    " cancel_reason TEXT,"
    " placed_at_us INTEGER NOT NULL,"
    " updated_at_us INTEGER NOT NULL,"
    " version INTEGER NOT NULL);"
    "CREATE INDEX order_summary_by_customer ON order_summary (customer_id);";

es_err es_order_summary_migrate(sqlite3 *db, int from_version, es_error_t *err) {
    es_error_t local;
    if (!err)
        err = &local;
    if (from_version >= 1)
        return ES_OK;
    char *msg = NULL;
    int rc = sqlite3_exec(db, schema_v1, NULL, NULL, &msg);
    es_err e = ES_OK;
    if (rc != SQLITE_OK)
        e = es_fail(err, ES_EIO, NAME ": creating the order_summary table failed: %s",
                    msg ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return e;
}

static es_err bind_failed(const es_event_t *ev, int rc, es_error_t *err) {
    return es_fail(err, rc == SQLITE_NOMEM ? ES_ENOMEM : ES_EINVAL,
                   NAME ": binding %s of orders.order/%s failed: %s", ev->event_type,
                   ev->aggregate_id, sqlite3_errstr(rc));
}

/* After an update that changed nothing: fine when the order is there (the event was applied
 * before), ES_ESTATE when the table never saw the order. */
static es_err check_known(es_projector_ctx_t *ctx, const es_event_t *ev, es_error_t *err) {
    sqlite3_stmt *s = es_ctx_stmt(ctx, "SELECT 1 FROM order_summary WHERE order_id = ?1", err);
    if (!s)
        return err->code;
    int rc = sqlite3_bind_text(s, 1, ev->aggregate_id, -1, SQLITE_STATIC);
    if (rc != SQLITE_OK)
        return bind_failed(ev, rc, err);
    rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc == SQLITE_ROW)
        return ES_OK;
    if (rc == SQLITE_DONE)
        return es_fail(err, ES_ESTATE,
                       NAME ": %s for orders.order/%s (offset %lld) names an order the read model "
                            "does not hold; redrive its parked OrderPlaced first",
                       ev->event_type, ev->aggregate_id, (long long)ev->offset);
    return es_fail(err, rc == SQLITE_BUSY || rc == SQLITE_LOCKED ? ES_ERETRY : ES_EIO,
                   NAME ": looking up orders.order/%s failed: %s", ev->aggregate_id,
                   sqlite3_errmsg(es_ctx_db(ctx)));
}

es_err es_order_summary_placed(es_projector_ctx_t *ctx, const es_event_t *ev,
                               const char *customer_id, int64_t amount_cents, const char *currency,
                               size_t n_items, es_error_t *err) {
    sqlite3_stmt *s = es_ctx_stmt(
        ctx,
        "INSERT INTO order_summary (order_id, status, customer_id, amount_cents, currency, "
        "item_count, placed_at_us, updated_at_us, version) "
        "VALUES (?1, 'placed', ?2, ?3, ?4, ?5, ?6, ?6, ?7) ON CONFLICT (order_id) DO NOTHING",
        err);
    if (!s)
        return err->code;
    int rc = sqlite3_bind_text(s, 1, ev->aggregate_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(s, 2, customer_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 3, amount_cents);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(s, 4, currency, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 5, (sqlite3_int64)n_items);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 6, ev->occurred_at_us);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 7, (sqlite3_int64)ev->version);
    return rc == SQLITE_OK ? es_ctx_exec(ctx, s, err) : bind_failed(ev, rc, err);
}

es_err es_order_summary_confirmed(es_projector_ctx_t *ctx, const es_event_t *ev, es_error_t *err) {
    sqlite3_stmt *s = es_ctx_stmt(ctx,
                                  "UPDATE order_summary SET status = 'confirmed', "
                                  "updated_at_us = ?2, version = ?3 "
                                  "WHERE order_id = ?1 AND version < ?3",
                                  err);
    if (!s)
        return err->code;
    int rc = sqlite3_bind_text(s, 1, ev->aggregate_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 2, ev->occurred_at_us);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 3, (sqlite3_int64)ev->version);
    if (rc != SQLITE_OK)
        return bind_failed(ev, rc, err);
    es_err e = es_ctx_exec(ctx, s, err);
    if (e == ES_OK && sqlite3_changes(es_ctx_db(ctx)) == 0)
        e = check_known(ctx, ev, err);
    return e;
}

es_err es_order_summary_cancelled(es_projector_ctx_t *ctx, const es_event_t *ev, const char *reason,
                                  es_error_t *err) {
    sqlite3_stmt *s = es_ctx_stmt(ctx,
                                  "UPDATE order_summary SET status = 'cancelled', "
                                  "cancel_reason = ?2, updated_at_us = ?3, version = ?4 "
                                  "WHERE order_id = ?1 AND version < ?4",
                                  err);
    if (!s)
        return err->code;
    int rc = sqlite3_bind_text(s, 1, ev->aggregate_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(s, 2, reason, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 3, ev->occurred_at_us);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 4, (sqlite3_int64)ev->version);
    if (rc != SQLITE_OK)
        return bind_failed(ev, rc, err);
    es_err e = es_ctx_exec(ctx, s, err);
    if (e == ES_OK && sqlite3_changes(es_ctx_db(ctx)) == 0)
        e = check_known(ctx, ev, err);
    return e;
}
