/*
 * The demo domain's second version: the Order aggregate ("orders.order") deciding on
 * orders.v2 commands and evolving orders.v2 events only, beside the unchanged Payment and
 * Item aggregates of v1. A log written by v1 reaches it through the upcasters below, which
 * every reader made from a config with demo_v2_add_upcasters runs (engine load, the projector
 * runner, esctl with order_saga_v2_types.so): it never sees an orders.v1 event.
 *
 * What changed, and why an upcaster is needed for each (proto/examples/orders/v2):
 * - every order type moved to the orders.v2 package; OrderPlaced keeps its shape, so its
 *   upcaster copies the bytes and only the type name changes;
 * - OrderConfirmed became OrderAccepted, by way of orders.v2.OrderConfirmed (what a first v2
 *   build wrote before the rename): a chain of two upcasters;
 * - OrderCancelled's free-text `string reason = 1` became `CancelReason reason = 2`
 *   {code, text}: its upcaster decodes the v1 event, classifies the text and keeps it whole.
 */
#ifndef ESKIT_DEMO_DOMAIN_V2_H
#define ESKIT_DEMO_DOMAIN_V2_H

#include <eskit/eskit.h>
#include <eskit/upcast.h>
#include "orders/v2/orders.pb-c.h"

extern const es_aggregate_def demo_v2_order_def; /* orders.order, orders.v2 types */

/* The upcasters from the orders.v1 events (and the interim orders.v2.OrderConfirmed) to
 * orders.v2, NULL-terminated. */
extern const es_upcaster_t *const demo_v2_upcasters[];

/* Adds demo_v2_upcasters to cfg (es_config_add_upcaster each). */
es_err demo_v2_add_upcasters(es_config_t *cfg, es_error_t *err);

/* Registers v2's order aggregate and v1's payment and item aggregates on engine. */
es_err demo_v2_register_all(es_engine_t *engine, es_error_t *err);

/* The v2 domain as a types module defines it: the three aggregates, every message and the
 * upcasters, so esctl shows a v1 log in v2 types. */
extern const es_types_def demo_v2_types;

#endif
