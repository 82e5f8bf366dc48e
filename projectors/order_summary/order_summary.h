/*
 * order_summary: one row per order of orders.order.events, with the order's
 * current status and what it was placed with.
 *
 *   order_summary(order_id TEXT PRIMARY KEY,
 *                 status TEXT         -- 'placed', 'confirmed' or 'cancelled'
 *                 customer_id TEXT, amount_cents INTEGER, currency TEXT,
 *                 item_count INTEGER, -- lines of the order
 *                 cancel_reason TEXT, -- NULL unless cancelled
 *                 placed_at_us INTEGER, updated_at_us INTEGER,
 *                 version INTEGER)    -- the order's last event applied
 *
 * Built as order_summary.so (es_projector_entry) and as the static library
 * eskit_projector_order_summary, which exports the definition below.
 */
#ifndef ESKIT_ORDER_SUMMARY_H
#define ESKIT_ORDER_SUMMARY_H

#include <eskit/projector.h>

extern const es_projector_def es_order_summary_projector;

#endif
