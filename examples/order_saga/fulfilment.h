/*
 * orders.fulfilment, the demo saga, as data: an OrderPlaced on "orders.order"
 * starts an instance (id = the order's id) that
 *   1. reserve_stock      ReserveStock on each SKU of the order
 *                         (StockReserved completes, StockShortage fails;
 *                         undone by ReleaseStock),
 *   2. authorize_payment  AuthorizePayment of the order's amount on the
 *                         payment of the same id (PaymentAuthorized completes,
 *                         PaymentDeclined fails, PaymentPending waits; undone
 *                         by RefundPayment),
 *   3. confirm_order      ConfirmOrder (OrderConfirmed completes).
 * An instance that fails or times out undoes what it did and then cancels the
 * order with the reason (CancelOrder).
 *
 * Two definitions differ only in the payment step's timeout: the regular one,
 * and the demo's, short enough that a payment stuck in 3-D Secure times out
 * while you watch.
 */
#ifndef ESKIT_DEMO_FULFILMENT_H
#define ESKIT_DEMO_FULFILMENT_H

#include <eskit/saga.h>

#define DEMO_FULFILMENT_SAGA "orders.fulfilment"
#define DEMO_RESERVE_TIMEOUT_MS 10000
#define DEMO_PAYMENT_TIMEOUT_MS 30000
#define DEMO_SHORT_PAYMENT_TIMEOUT_MS 1000
#define DEMO_CONFIRM_TIMEOUT_MS 10000

extern const es_saga_def demo_fulfilment_def;       /* payment timeout DEMO_PAYMENT_TIMEOUT_MS */
extern const es_saga_def demo_fulfilment_short_def; /* DEMO_SHORT_PAYMENT_TIMEOUT_MS */

/* The definition with the short payment timeout (true) or the regular one. */
#define DEMO_FULFILMENT_DEF(short_timeouts)                                                        \
    ((short_timeouts) ? &demo_fulfilment_short_def : &demo_fulfilment_def)

#endif
