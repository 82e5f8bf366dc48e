/*
 * order_summary from orders.v2 events: v1's projector (projectors/order_summary) written
 * against the v2 types, with the same name, table, columns and schema version, so that it
 * takes over v1's read model and checkpoints where it stands and the two can be compared row by
 * row. Run from a config with the v2 upcasters (demo_v2_add_upcasters), it reads a log written
 * by v1 as v2 events. The table keeps v1's words: an accepted order is 'confirmed', and
 * cancel_reason is the reason's text (its code is not a column).
 */
#include "order_summary_v2.h"

#include "order_summary_table.h"
#include "orders/v2/orders.pb-c.h"

#define NAME "order_summary"

static es_err on_placed(es_projector_ctx_t *ctx, const es_event_t *ev, const ProtobufCMessage *msg,
                        es_error_t *err) {
    const Orders__V2__OrderPlaced *p = (const Orders__V2__OrderPlaced *)msg;
    return es_order_summary_placed(ctx, ev, p->customer_id, p->amount_cents, p->currency,
                                   p->n_items, err);
}

static es_err on_accepted(es_projector_ctx_t *ctx, const es_event_t *ev,
                          const ProtobufCMessage *msg, es_error_t *err) {
    (void)msg;
    return es_order_summary_confirmed(ctx, ev, err);
}

static es_err on_cancelled(es_projector_ctx_t *ctx, const es_event_t *ev,
                           const ProtobufCMessage *msg, es_error_t *err) {
    const Orders__V2__OrderCancelled *c = (const Orders__V2__OrderCancelled *)msg;
    return es_order_summary_cancelled(ctx, ev, c->reason ? c->reason->text : "", err);
}

static const es_event_handler_t handlers[] = {
    {&orders__v2__order_placed__descriptor, on_placed},
    {&orders__v2__order_accepted__descriptor, on_accepted},
    {&orders__v2__order_cancelled__descriptor, on_cancelled},
};

static es_err apply(es_projector_ctx_t *ctx, const es_event_t *ev, es_error_t *err) {
    return es_ctx_dispatch(ctx, ev, handlers, sizeof handlers / sizeof *handlers, err);
}

static const char *const topics[] = {"orders.order.events", NULL};

const es_projector_def es_order_summary_v2_projector = {
    .abi_version = ES_PROJECTOR_ABI,
    .name = NAME,
    .schema_version = 1,
    .topics = topics,
    .migrate = es_order_summary_migrate,
    .apply = apply,
};

#ifdef ESKIT_PROJECTOR_MODULE
ES_PROJECTOR_EXPORT(es_order_summary_v2_projector)
#endif
