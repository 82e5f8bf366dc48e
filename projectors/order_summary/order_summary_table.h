/* The order_summary table (order_summary.h) as the v1 and v2 order projectors write it: the
 * same rows from different event types, each write guarded by the order's version. */
#ifndef ESKIT_ORDER_SUMMARY_TABLE_H
#define ESKIT_ORDER_SUMMARY_TABLE_H

#include <stddef.h>
#include <stdint.h>
#include <eskit/projector.h>

/* Creates the table and its index (from_version 0). */
es_err es_order_summary_migrate(sqlite3 *db, int from_version, es_error_t *err);
/* The order of ev placed: a row, unless the order has one. */
es_err es_order_summary_placed(es_projector_ctx_t *ctx, const es_event_t *ev,
                               const char *customer_id, int64_t amount_cents, const char *currency,
                               size_t n_items, es_error_t *err);
/* The order of ev confirmed; ES_ESTATE when the table never saw the order. */
es_err es_order_summary_confirmed(es_projector_ctx_t *ctx, const es_event_t *ev, es_error_t *err);
/* The order of ev cancelled with reason; ES_ESTATE when the table never saw the order. */
es_err es_order_summary_cancelled(es_projector_ctx_t *ctx, const es_event_t *ev, const char *reason,
                                  es_error_t *err);

#endif
