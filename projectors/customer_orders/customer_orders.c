/*
 * customer_orders: the per-customer counters of customer_orders.h from
 * orders.order.events. Each order counts in exactly one of open, confirmed
 * or cancelled, so a status change moves it between counters. The module's
 * own order table remembers each order's customer, amount, status and last
 * version: an event at or below that version was applied already and changes
 * nothing.
 */
#include "customer_orders.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "orders/v1/orders.pb-c.h"

#define NAME "customer_orders"

static const char schema_v1[] =
    "CREATE TABLE customer_orders ("
    " customer_id TEXT PRIMARY KEY,"
    " orders_placed INTEGER NOT NULL,"
    " orders_confirmed INTEGER NOT NULL,"
    " orders_cancelled INTEGER NOT NULL,"
    " total_placed_cents INTEGER NOT NULL,"
    " total_confirmed_cents INTEGER NOT NULL,"
    " last_order_at_us INTEGER NOT NULL);"
    "CREATE TABLE customer_orders_order ("
    " order_id TEXT PRIMARY KEY,"
    " customer_id TEXT NOT NULL,"
    " amount_cents INTEGER NOT NULL,"
    " status TEXT NOT NULL CHECK (status IN ('placed', 'confirmed', 'cancelled')),"
    " version INTEGER NOT NULL);";

enum status { PLACED, CONFIRMED, CANCELLED };

static const char *const status_names[] = {"placed", "confirmed", "cancelled"};

/* What the module knows of one order. */
struct order {
    bool found;
    enum status status;
    int64_t amount_cents;
    uint64_t version;
};

static es_err migrate(sqlite3 *db, int from_version, es_error_t *err) {
    es_error_t local;
    if (!err)
        err = &local;
    if (from_version >= 1)
        return ES_OK;
    char *msg = NULL;
    int rc = sqlite3_exec(db, schema_v1, NULL, NULL, &msg);
    es_err e = ES_OK;
    if (rc != SQLITE_OK)
        e = es_fail(err, ES_EIO, NAME ": creating the customer_orders tables failed: %s",
                    msg ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return e;
}

static es_err bind_failed(const es_event_t *ev, int rc, es_error_t *err) {
    return es_fail(err, rc == SQLITE_NOMEM ? ES_ENOMEM : ES_EINVAL,
                   NAME ": binding %s of orders.order/%s failed: %s", ev->event_type,
                   ev->aggregate_id, sqlite3_errstr(rc));
}

static int status_of(const unsigned char *text) {
    for (int i = PLACED; i <= CANCELLED; i++)
        if (text && strcmp((const char *)text, status_names[i]) == 0)
            return i;
    return -1;
}

static es_err lookup(es_projector_ctx_t *ctx, const es_event_t *ev, struct order *o,
                     es_error_t *err) {
    *o = (struct order){0};
    sqlite3_stmt *s = es_ctx_stmt(ctx,
                                  "SELECT status, amount_cents, version "
                                  "FROM customer_orders_order WHERE order_id = ?1",
                                  err);
    if (!s)
        return err->code;
    int rc = sqlite3_bind_text(s, 1, ev->aggregate_id, -1, SQLITE_STATIC);
    if (rc != SQLITE_OK)
        return bind_failed(ev, rc, err);
    rc = sqlite3_step(s);
    es_err e = ES_OK;
    o->found = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW) {
        int status = status_of(sqlite3_column_text(s, 0));
        o->status = status < 0 ? PLACED : (enum status)status;
        o->amount_cents = sqlite3_column_int64(s, 1);
        o->version = (uint64_t)sqlite3_column_int64(s, 2);
        if (status < 0)
            e = es_fail(err, ES_EIO,
                        NAME ": orders.order/%s has an unknown status in customer_orders_order; "
                             "rebuild the read model (esctl replay " NAME ")",
                        ev->aggregate_id);
    } else if (rc != SQLITE_DONE) {
        e = es_fail(err, rc == SQLITE_BUSY || rc == SQLITE_LOCKED ? ES_ERETRY : ES_EIO,
                    NAME ": looking up orders.order/%s failed: %s", ev->aggregate_id,
                    sqlite3_errmsg(es_ctx_db(ctx)));
    }
    sqlite3_reset(s);
    return e;
}

static es_err remember_order(es_projector_ctx_t *ctx, const es_event_t *ev,
                             const Orders__V1__OrderPlaced *p, es_error_t *err) {
    sqlite3_stmt *s = es_ctx_stmt(ctx,
                                  "INSERT INTO customer_orders_order "
                                  "(order_id, customer_id, amount_cents, status, version) "
                                  "VALUES (?1, ?2, ?3, 'placed', ?4)",
                                  err);
    if (!s)
        return err->code;
    int rc = sqlite3_bind_text(s, 1, ev->aggregate_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(s, 2, p->customer_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 3, p->amount_cents);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 4, (sqlite3_int64)ev->version);
    return rc == SQLITE_OK ? es_ctx_exec(ctx, s, err) : bind_failed(ev, rc, err);
}

static es_err count_placed(es_projector_ctx_t *ctx, const es_event_t *ev,
                           const Orders__V1__OrderPlaced *p, es_error_t *err) {
    sqlite3_stmt *s = es_ctx_stmt(
        ctx,
        "INSERT INTO customer_orders (customer_id, orders_placed, orders_confirmed, "
        "orders_cancelled, total_placed_cents, total_confirmed_cents, last_order_at_us) "
        "VALUES (?1, 1, 0, 0, ?2, 0, ?3) ON CONFLICT (customer_id) DO UPDATE SET "
        "orders_placed = orders_placed + 1, "
        "total_placed_cents = total_placed_cents + excluded.total_placed_cents, "
        "last_order_at_us = max(last_order_at_us, excluded.last_order_at_us)",
        err);
    if (!s)
        return err->code;
    int rc = sqlite3_bind_text(s, 1, p->customer_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 2, p->amount_cents);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 3, ev->occurred_at_us);
    return rc == SQLITE_OK ? es_ctx_exec(ctx, s, err) : bind_failed(ev, rc, err);
}

static es_err on_placed(es_projector_ctx_t *ctx, const es_event_t *ev, const ProtobufCMessage *msg,
                        es_error_t *err) {
    const Orders__V1__OrderPlaced *p = (const Orders__V1__OrderPlaced *)msg;
    struct order o;
    es_err e = lookup(ctx, ev, &o, err);
    if (e != ES_OK || o.found)
        return e;
    e = remember_order(ctx, ev, p, err);
    if (e == ES_OK)
        e = count_placed(ctx, ev, p, err);
    return e;
}

/* Moves the customer's counters for order o from its old status to to. */
static es_err recount(es_projector_ctx_t *ctx, const es_event_t *ev, const struct order *o,
                      enum status to, es_error_t *err) {
    int confirmed = (to == CONFIRMED) - (o->status == CONFIRMED);
    int cancelled = (to == CANCELLED) - (o->status == CANCELLED);
    sqlite3_stmt *s = es_ctx_stmt(
        ctx,
        "UPDATE customer_orders SET orders_confirmed = orders_confirmed + ?2, "
        "orders_cancelled = orders_cancelled + ?3, "
        "total_confirmed_cents = total_confirmed_cents + ?4 "
        "WHERE customer_id = (SELECT customer_id FROM customer_orders_order WHERE order_id = ?1)",
        err);
    if (!s)
        return err->code;
    int rc = sqlite3_bind_text(s, 1, ev->aggregate_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(s, 2, confirmed);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(s, 3, cancelled);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 4, confirmed * o->amount_cents);
    return rc == SQLITE_OK ? es_ctx_exec(ctx, s, err) : bind_failed(ev, rc, err);
}

static es_err set_status(es_projector_ctx_t *ctx, const es_event_t *ev, enum status to,
                         es_error_t *err) {
    sqlite3_stmt *s = es_ctx_stmt(ctx,
                                  "UPDATE customer_orders_order SET status = ?2, version = ?3 "
                                  "WHERE order_id = ?1",
                                  err);
    if (!s)
        return err->code;
    int rc = sqlite3_bind_text(s, 1, ev->aggregate_id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(s, 2, status_names[to], -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(s, 3, (sqlite3_int64)ev->version);
    return rc == SQLITE_OK ? es_ctx_exec(ctx, s, err) : bind_failed(ev, rc, err);
}

static es_err move(es_projector_ctx_t *ctx, const es_event_t *ev, enum status to, es_error_t *err) {
    struct order o;
    es_err e = lookup(ctx, ev, &o, err);
    if (e != ES_OK)
        return e;
    if (!o.found)
        return es_fail(err, ES_ESTATE,
                       NAME ": %s for orders.order/%s (offset %lld) names an order the read model "
                            "does not hold; redrive its parked OrderPlaced first",
                       ev->event_type, ev->aggregate_id, (long long)ev->offset);
    if (o.version >= ev->version)
        return ES_OK;
    e = recount(ctx, ev, &o, to, err);
    if (e == ES_OK)
        e = set_status(ctx, ev, to, err);
    return e;
}

static es_err on_confirmed(es_projector_ctx_t *ctx, const es_event_t *ev,
                           const ProtobufCMessage *msg, es_error_t *err) {
    (void)msg;
    return move(ctx, ev, CONFIRMED, err);
}

static es_err on_cancelled(es_projector_ctx_t *ctx, const es_event_t *ev,
                           const ProtobufCMessage *msg, es_error_t *err) {
    (void)msg;
    return move(ctx, ev, CANCELLED, err);
}

static const es_event_handler_t handlers[] = {
    {&orders__v1__order_placed__descriptor, on_placed},
    {&orders__v1__order_confirmed__descriptor, on_confirmed},
    {&orders__v1__order_cancelled__descriptor, on_cancelled},
};

static const char *const topics[] = {"orders.order.events", NULL};

const es_projector_def es_customer_orders_projector = {
    .abi_version = ES_PROJECTOR_ABI,
    .name = NAME,
    .schema_version = 1,
    .topics = topics,
    .migrate = migrate,
    .handlers = handlers,
    .n_handlers = sizeof handlers / sizeof *handlers,
};

#ifdef ESKIT_PROJECTOR_MODULE
ES_PROJECTOR_EXPORT(es_customer_orders_projector)
#endif
