/*
 * The orders.fulfilment saga: what each step sends, and the two definitions
 * (see fulfilment.h). The callbacks only build commands from the start event
 * (OrderPlaced) and the instance's id, which is the order's id; everything
 * else (matching events, deadlines, compensating in reverse) is the
 * coordinator's.
 */
#include "fulfilment.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "domain.h"

static const Orders__V1__OrderPlaced *placed(const es_saga_view_t *v) {
    return (const Orders__V1__OrderPlaced *)es_saga_view_start(v);
}

static es_err send_to(es_saga_out_t *out, const char *aggregate_id, const ProtobufCMessage *cmd,
                      const es_saga_view_t *v, es_error_t *err) {
    es_err rc = es_saga_send(out, aggregate_id, cmd);
    if (rc != ES_OK)
        return es_fail(err, rc, "order %s: sending %s to %s failed: %s", es_saga_view_id(v),
                       cmd->descriptor->short_name, aggregate_id, es_strerror(rc));
    return ES_OK;
}

/* How many units of sku the order's lines ask for together; false when it is not the first
 * line with that sku (its units were counted with the first). */
static bool units_of(const Orders__V1__OrderPlaced *o, size_t first, uint64_t *units) {
    const char *sku = o->items[first]->sku;
    for (size_t i = 0; i < first; i++)
        if (strcmp(o->items[i]->sku, sku) == 0)
            return false;
    *units = 0;
    for (size_t i = first; i < o->n_items; i++)
        if (strcmp(o->items[i]->sku, sku) == 0)
            *units += o->items[i]->quantity;
    return true;
}

/* One ReserveStock per SKU (lines of the same SKU are reserved together). */
static es_err send_reserve(const es_saga_view_t *v, es_saga_out_t *out, es_error_t *err) {
    const Orders__V1__OrderPlaced *o = placed(v);
    for (size_t i = 0; i < o->n_items; i++) {
        uint64_t units;
        if (!units_of(o, i, &units))
            continue;
        if (units > UINT32_MAX)
            return es_fail(err, ES_EINVAL, "order %s asks for %llu units of %s; at most %u fit",
                           es_saga_view_id(v), (unsigned long long)units, o->items[i]->sku,
                           UINT32_MAX);
        Inventory__V1__ReserveStock r = INVENTORY__V1__RESERVE_STOCK__INIT;
        r.order_id = (char *)es_saga_view_id(v);
        r.quantity = (uint32_t)units;
        es_err rc = send_to(out, o->items[i]->sku, &r.base, v, err);
        if (rc != ES_OK)
            return rc;
    }
    return ES_OK;
}

static es_err undo_reserve(const es_saga_view_t *v, const char *sku, es_saga_out_t *out,
                           es_error_t *err) {
    Inventory__V1__ReleaseStock r = INVENTORY__V1__RELEASE_STOCK__INIT;
    r.order_id = (char *)es_saga_view_id(v);
    return send_to(out, sku, &r.base, v, err);
}

static es_err send_authorize(const es_saga_view_t *v, es_saga_out_t *out, es_error_t *err) {
    const Orders__V1__OrderPlaced *o = placed(v);
    Payments__V1__AuthorizePayment a = PAYMENTS__V1__AUTHORIZE_PAYMENT__INIT;
    a.order_id = (char *)es_saga_view_id(v);
    a.customer_id = o->customer_id;
    a.amount_cents = o->amount_cents;
    a.currency = o->currency;
    return send_to(out, es_saga_view_id(v), &a.base, v, err);
}

static es_err undo_authorize(const es_saga_view_t *v, const char *payment_id, es_saga_out_t *out,
                             es_error_t *err) {
    Payments__V1__RefundPayment r = PAYMENTS__V1__REFUND_PAYMENT__INIT;
    r.reason = (char *)es_saga_view_reason(v);
    return send_to(out, payment_id, &r.base, v, err);
}

static es_err send_confirm(const es_saga_view_t *v, es_saga_out_t *out, es_error_t *err) {
    Orders__V1__ConfirmOrder c = ORDERS__V1__CONFIRM_ORDER__INIT;
    return send_to(out, es_saga_view_id(v), &c.base, v, err);
}

static es_err send_cancel(const es_saga_view_t *v, es_saga_out_t *out, es_error_t *err) {
    Orders__V1__CancelOrder c = ORDERS__V1__CANCEL_ORDER__INIT;
    c.reason = (char *)es_saga_view_reason(v);
    return send_to(out, es_saga_view_id(v), &c.base, v, err);
}

static const ProtobufCMessageDescriptor *const stock_reserved[] = {
    &inventory__v1__stock_reserved__descriptor, NULL};
static const ProtobufCMessageDescriptor *const stock_shortage[] = {
    &inventory__v1__stock_shortage__descriptor, NULL};
static const ProtobufCMessageDescriptor *const payment_authorized[] = {
    &payments__v1__payment_authorized__descriptor, NULL};
static const ProtobufCMessageDescriptor *const payment_declined[] = {
    &payments__v1__payment_declined__descriptor, NULL};
static const ProtobufCMessageDescriptor *const order_confirmed[] = {
    &orders__v1__order_confirmed__descriptor, NULL};

/* Each step once; the two definitions differ only in the payment timeout. */
#define RESERVE_STOCK                                                                              \
    {                                                                                              \
        .name = "reserve_stock", .aggregate_type = "inventory.item",                               \
        .command = &inventory__v1__reserve_stock__descriptor, .send = send_reserve,                \
        .completed_by = stock_reserved, .failed_by = stock_shortage,                               \
        .timeout_ms = DEMO_RESERVE_TIMEOUT_MS,                                                     \
        .compensation = &inventory__v1__release_stock__descriptor, .compensate = undo_reserve,     \
    }
#define AUTHORIZE_PAYMENT(timeout)                                                                 \
    {                                                                                              \
        .name = "authorize_payment", .aggregate_type = "payments.payment",                         \
        .command = &payments__v1__authorize_payment__descriptor, .send = send_authorize,           \
        .completed_by = payment_authorized, .failed_by = payment_declined,                         \
        .timeout_ms = (timeout), .compensation = &payments__v1__refund_payment__descriptor,        \
        .compensate = undo_authorize,                                                              \
    }
#define CONFIRM_ORDER                                                                              \
    {                                                                                              \
        .name = "confirm_order", .aggregate_type = "orders.order",                                 \
        .command = &orders__v1__confirm_order__descriptor, .send = send_confirm,                   \
        .completed_by = order_confirmed, .timeout_ms = DEMO_CONFIRM_TIMEOUT_MS,                    \
    }

static const es_saga_step_t steps[] = {
    RESERVE_STOCK,
    AUTHORIZE_PAYMENT(DEMO_PAYMENT_TIMEOUT_MS),
    CONFIRM_ORDER,
};
static const es_saga_step_t short_steps[] = {
    RESERVE_STOCK,
    AUTHORIZE_PAYMENT(DEMO_SHORT_PAYMENT_TIMEOUT_MS),
    CONFIRM_ORDER,
};

static const es_saga_step_t cancel_order = {
    .name = "cancel_order",
    .aggregate_type = "orders.order",
    .command = &orders__v1__cancel_order__descriptor,
    .send = send_cancel,
};

const es_saga_def demo_fulfilment_def = {
    .abi_version = ES_SAGA_ABI,
    .name = DEMO_FULFILMENT_SAGA,
    .start_aggregate = "orders.order",
    .start_event = &orders__v1__order_placed__descriptor,
    .steps = steps,
    .n_steps = sizeof steps / sizeof steps[0],
    .on_abort = &cancel_order,
};

const es_saga_def demo_fulfilment_short_def = {
    .abi_version = ES_SAGA_ABI,
    .name = DEMO_FULFILMENT_SAGA,
    .start_aggregate = "orders.order",
    .start_event = &orders__v1__order_placed__descriptor,
    .steps = short_steps,
    .n_steps = sizeof short_steps / sizeof short_steps[0],
    .on_abort = &cancel_order,
};
