/*
 * orders.order in orders.v2 types. The rules are v1's (examples/order_saga/domain.c):
 * placed -> accepted | cancelled, both final; cancelling a cancelled order is a no-op; lines may
 * be free, the total may not. A cancellation now says why in a code beside its text.
 */
#include "domain_v2.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "domain.h"

#define ORDER_STATUS(s) ORDERS__V2__ORDER_STATUS__ORDER_STATUS_##s

static char default_currency[] = "USD";

static bool blank(const char *s) {
    return !s || !*s;
}

static es_err set_str(ProtobufCMessage *msg, char **field, const char *value, es_error_t *err) {
    if (es_pb_set_string(msg, field, value) == ES_OK)
        return ES_OK;
    return es_fail(err, ES_ENOMEM, "out of memory setting a string of %s", msg->descriptor->name);
}

static es_err check_currency(const char *currency, es_decision_t *d) {
    if (blank(currency))
        return ES_OK;
    bool ok = strlen(currency) == 3;
    for (size_t i = 0; ok && i < 3; i++)
        ok = currency[i] >= 'A' && currency[i] <= 'Z';
    if (!ok)
        return es_reject(d, "currency \"%s\" is not a 3-letter ISO code such as USD", currency);
    return ES_OK;
}

static const char *order_status_name(Orders__V2__OrderStatus s) {
    switch (s) {
    case ORDER_STATUS(PLACED):
        return "placed";
    case ORDER_STATUS(ACCEPTED):
        return "accepted";
    case ORDER_STATUS(CANCELLED):
        return "cancelled";
    default:
        return "not placed";
    }
}

static es_err check_line(const Orders__V2__LineItem *it, size_t i, es_decision_t *d) {
    if (blank(it->sku))
        return es_reject(d, "item %zu has no sku", i + 1);
    if (it->quantity == 0)
        return es_reject(d, "item %zu (%s) has quantity 0; order at least 1", i + 1, it->sku);
    if (it->unit_price_cents < 0)
        return es_reject(d, "item %zu (%s) has a negative unit price (%lld cents)", i + 1, it->sku,
                         (long long)it->unit_price_cents);
    return ES_OK;
}

static es_err order_total(const Orders__V2__PlaceOrder *c, es_decision_t *d, int64_t *total) {
    if (c->n_items == 0)
        return es_reject(d, "an order needs at least one item");
    *total = 0;
    for (size_t i = 0; i < c->n_items; i++) {
        const Orders__V2__LineItem *it = c->items[i];
        es_err rc = check_line(it, i, d);
        if (rc != ES_OK)
            return rc;
        if (it->unit_price_cents > (INT64_MAX - *total) / it->quantity)
            return es_reject(d, "the order total overflows at item %zu (%s)", i + 1, it->sku);
        *total += it->unit_price_cents * it->quantity;
    }
    if (*total == 0)
        return es_reject(d, "the order total is 0; every order must be paid for");
    return ES_OK;
}

ES_DECIDE(decide_place, Orders__V2__Order, Orders__V2__PlaceOrder) {
    if (state->status != ORDER_STATUS(NONE))
        return es_reject(d, "the order is already %s; place a new order under a new id",
                         order_status_name(state->status));
    if (blank(command->customer_id))
        return es_reject(d, "customer_id is missing");
    es_err rc = check_currency(command->currency, d);
    int64_t total = 0;
    if (rc == ES_OK)
        rc = order_total(command, d, &total);
    if (rc != ES_OK)
        return rc;
    Orders__V2__OrderPlaced ev = ORDERS__V2__ORDER_PLACED__INIT;
    ev.customer_id = command->customer_id;
    ev.n_items = command->n_items;
    ev.items = command->items;
    ev.amount_cents = total;
    ev.currency = blank(command->currency) ? default_currency : command->currency;
    return es_emit(d, &ev.base);
}

ES_DECIDE(decide_accept, Orders__V2__Order, Orders__V2__AcceptOrder) {
    Orders__V2__OrderAccepted ev = ORDERS__V2__ORDER_ACCEPTED__INIT;
    switch (state->status) {
    case ORDER_STATUS(PLACED):
        return es_emit(d, &ev.base);
    case ORDER_STATUS(ACCEPTED):
        return es_reject(d, "the order is already accepted");
    case ORDER_STATUS(CANCELLED):
        return es_reject(d, "the order was cancelled (%s); a cancelled order cannot be accepted",
                         state->cancel_reason);
    default:
        return es_reject(d, "the order was never placed; place it before accepting");
    }
}

ES_DECIDE(decide_cancel, Orders__V2__Order, Orders__V2__CancelOrder) {
    static char no_reason[] = "no reason given";
    Orders__V2__CancelReason reason = ORDERS__V2__CANCEL_REASON__INIT;
    Orders__V2__OrderCancelled ev = ORDERS__V2__ORDER_CANCELLED__INIT;
    switch (state->status) {
    case ORDER_STATUS(PLACED):
        if (command->reason)
            reason = *command->reason;
        if (blank(reason.text))
            reason.text = no_reason;
        ev.reason = &reason;
        return es_emit(d, &ev.base);
    case ORDER_STATUS(ACCEPTED):
        return es_reject(d, "the order is already accepted; an accepted order cannot be cancelled");
    case ORDER_STATUS(CANCELLED):
        return ES_OK; /* cancelled already: a redelivered abort changes nothing */
    default:
        return es_reject(d, "the order was never placed; there is nothing to cancel");
    }
}

ES_EVOLVE(apply_placed, Orders__V2__Order, Orders__V2__OrderPlaced) {
    state->status = ORDER_STATUS(PLACED);
    state->amount_cents = event->amount_cents;
    state->item_count = (uint32_t)event->n_items;
    es_err rc = set_str(&state->base, &state->customer_id, event->customer_id, err);
    if (rc == ES_OK)
        rc = set_str(&state->base, &state->currency, event->currency, err);
    return rc;
}

ES_EVOLVE(apply_accepted, Orders__V2__Order, Orders__V2__OrderAccepted) {
    state->status = ORDER_STATUS(ACCEPTED);
    return ES_OK;
}

ES_EVOLVE(apply_cancelled, Orders__V2__Order, Orders__V2__OrderCancelled) {
    state->status = ORDER_STATUS(CANCELLED);
    state->cancel_code =
        event->reason ? event->reason->code : ORDERS__V2__CANCEL_CODE__CANCEL_CODE_UNSPECIFIED;
    return set_str(&state->base, &state->cancel_reason, event->reason ? event->reason->text : "",
                   err);
}

static const es_command_handler_t order_commands[] = {
    {&orders__v2__place_order__descriptor, decide_place},
    {&orders__v2__accept_order__descriptor, decide_accept},
    {&orders__v2__cancel_order__descriptor, decide_cancel},
    {NULL, NULL},
};

static const es_evolver_t order_events[] = {
    {&orders__v2__order_placed__descriptor, apply_placed},
    {&orders__v2__order_accepted__descriptor, apply_accepted},
    {&orders__v2__order_cancelled__descriptor, apply_cancelled},
    {NULL, NULL},
};

const es_aggregate_def demo_v2_order_def = {
    .abi_version = ES_AGGREGATE_ABI,
    .type = "orders.order",
    .state = &orders__v2__order__descriptor,
    .command_handlers = order_commands,
    .evolvers = order_events,
};

es_err demo_v2_register_all(es_engine_t *engine, es_error_t *err) {
    const es_aggregate_def *defs[] = {&demo_v2_order_def, &demo_payment_def, &demo_item_def};
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) {
        es_err rc = es_engine_register(engine, defs[i], NULL, err);
        if (rc != ES_OK)
            return rc;
    }
    return ES_OK;
}

static const es_aggregate_def *const all_aggregates[] = {&demo_v2_order_def, &demo_payment_def,
                                                         &demo_item_def, NULL};

const es_types_def demo_v2_types = {
    .abi_version = ES_TYPES_ABI,
    .name = "order_saga_v2",
    .aggregates = all_aggregates,
    .upcasters = demo_v2_upcasters,
};
