/*
 * order_summary: the order_summary table (see order_summary.h) from orders.v1 events of
 * orders.order.events, written by order_summary_table.c.
 */
#include "order_summary.h"

#include "order_summary_table.h"
#include "orders/v1/orders.pb-c.h"

#define NAME "order_summary"

static es_err on_placed(es_projector_ctx_t *ctx, const es_event_t *ev, const ProtobufCMessage *msg,
                        es_error_t *err) {
    const Orders__V1__OrderPlaced *p = (const Orders__V1__OrderPlaced *)msg;
    return es_order_summary_placed(ctx, ev, p->customer_id, p->amount_cents, p->currency,
                                   p->n_items, err);
}

static es_err on_confirmed(es_projector_ctx_t *ctx, const es_event_t *ev,
                           const ProtobufCMessage *msg, es_error_t *err) {
    (void)msg;
    return es_order_summary_confirmed(ctx, ev, err);
}

static es_err on_cancelled(es_projector_ctx_t *ctx, const es_event_t *ev,
                           const ProtobufCMessage *msg, es_error_t *err) {
    const Orders__V1__OrderCancelled *c = (const Orders__V1__OrderCancelled *)msg;
    return es_order_summary_cancelled(ctx, ev, c->reason, err);
}

static const es_event_handler_t handlers[] = {
    {&orders__v1__order_placed__descriptor, on_placed},
    {&orders__v1__order_confirmed__descriptor, on_confirmed},
    {&orders__v1__order_cancelled__descriptor, on_cancelled},
};

static const char *const topics[] = {"orders.order.events", NULL};

const es_projector_def es_order_summary_projector = {
    .abi_version = ES_PROJECTOR_ABI,
    .name = NAME,
    .schema_version = 1,
    .topics = topics,
    .migrate = es_order_summary_migrate,
    .handlers = handlers,
    .n_handlers = sizeof handlers / sizeof *handlers,
};

#ifdef ESKIT_PROJECTOR_MODULE
ES_PROJECTOR_EXPORT(es_order_summary_projector)
#endif
