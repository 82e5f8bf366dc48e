/*
 * The demo domain: Order ("orders.order"), Payment ("payments.payment") and
 * inventory Item ("inventory.item") aggregates as eskit deciders. Used by the
 * order_saga demo, by its types module order_saga_types.so (types.c: what esctl decodes
 * and folds the demo's log with) and by the tests.
 */
#ifndef ESKIT_DEMO_DOMAIN_H
#define ESKIT_DEMO_DOMAIN_H

#include <eskit/eskit.h>
#include "orders/v1/orders.pb-c.h"
#include "payments/v1/payments.pb-c.h"
#include "inventory/v1/inventory.pb-c.h"

extern const es_aggregate_def demo_order_def;   /* orders.order */
extern const es_aggregate_def demo_payment_def; /* payments.payment */
extern const es_aggregate_def demo_item_def;    /* inventory.item */

/* Registers the three aggregates on engine. */
es_err demo_register_all(es_engine_t *engine, es_error_t *err);

/* Every message descriptor of the demo domain, NULL-terminated. */
const ProtobufCMessageDescriptor *const *demo_descriptors(void);

/* The domain as a types module defines it (<eskit/types.h>): the three aggregates and every
 * message. */
extern const es_types_def demo_types;

#endif
