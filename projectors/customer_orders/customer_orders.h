/*
 * customer_orders: per customer, how many orders they placed and where those
 * orders stand, from orders.order.events.
 *
 *   customer_orders(customer_id TEXT PRIMARY KEY,
 *                   orders_placed INTEGER,         -- every order ever placed
 *                   orders_confirmed INTEGER,      -- orders confirmed and not cancelled since
 *                   orders_cancelled INTEGER,
 *                   total_placed_cents INTEGER,    -- sum over every placed order
 *                   total_confirmed_cents INTEGER, -- sum over the confirmed ones
 *                   last_order_at_us INTEGER)      -- when the newest order was placed
 *
 * Confirm and cancel events carry no customer, so the module also keeps
 * customer_orders_order(order_id PRIMARY KEY, customer_id, amount_cents,
 * status, version), the orders it has seen.
 *
 * Built as customer_orders.so (es_projector_entry) and as the static library
 * eskit_projector_customer_orders, which exports the definition below.
 */
#ifndef ESKIT_CUSTOMER_ORDERS_H
#define ESKIT_CUSTOMER_ORDERS_H

#include <eskit/projector.h>

extern const es_projector_def es_customer_orders_projector;

#endif
