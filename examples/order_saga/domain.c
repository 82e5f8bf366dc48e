/*
 * The demo domain as deciders. decide() only reads the state; evolve() folds
 * an event into a state the engine owns and frees with
 * protobuf_c_message_free_unpacked, so every string, array and submessage it
 * stores is heap memory.
 *
 * Rules the saga and the tests rely on. Outcomes a saga must see in the log
 * (a decline, a shortage, a payment left waiting) are accepted commands whose
 * event says so; rejections are for commands that are wrong in themselves.
 * Undoing something that is not there is accepted and emits nothing, so
 * compensations and redeliveries are always safe.
 * - orders.order: placed -> confirmed | cancelled, both final: no confirm
 *   after cancel, no cancel after confirm. Cancelling a cancelled order is a
 *   no-op. Lines may be free, the total may not: every order is paid for.
 * - payments.payment (id = the order's id): one authorization per payment.
 *   Declined (PaymentDeclined) when the customer id starts with "broke-" or
 *   the amount is above PAYMENT_LIMIT_CENTS; left pending (PaymentPending,
 *   waiting for a 3-D Secure check nothing in the demo performs) when the
 *   customer id starts with "3ds-" or a EUR amount is above
 *   THREE_DS_EUR_CENTS. A refund refunds an authorized payment, voids a
 *   pending one and is a no-op otherwise.
 * - inventory.item: available (on_hand - reserved) never goes below zero; a
 *   reservation that does not fit emits StockShortage and reserves nothing.
 *   Repeating a reservation with the same quantity, and releasing an order
 *   that holds nothing, are no-ops.
 * An empty currency means USD.
 */
#include "domain.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAYMENT_LIMIT_CENTS 100000 /* 1000.00 */
#define THREE_DS_EUR_CENTS 50000   /* 500.00 EUR */
#define DECLINED_PREFIX "broke-"
#define THREE_DS_PREFIX "3ds-"

#define ORDER_STATUS(s) ORDERS__V1__ORDER_STATUS__ORDER_STATUS_##s
#define PAYMENT_STATUS(s) PAYMENTS__V1__PAYMENT_STATUS__PAYMENT_STATUS_##s

static char default_currency[] = "USD";

static bool blank(const char *s) {
    return !s || !*s;
}

static bool starts_with(const char *s, const char *prefix) {
    return s && strncmp(s, prefix, strlen(prefix)) == 0;
}

static es_err set_str(ProtobufCMessage *msg, char **field, const char *value, es_error_t *err) {
    if (es_pb_set_string(msg, field, value) == ES_OK)
        return ES_OK;
    return es_fail(err, ES_ENOMEM, "out of memory setting a string of %s", msg->descriptor->name);
}

/* Currencies are ISO 4217 codes; checking the shape keeps typos out of the log. */
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

static char *currency_or_default(char *currency) {
    return blank(currency) ? default_currency : currency;
}

/* orders.order */

static const char *order_status_name(Orders__V1__OrderStatus s) {
    switch (s) {
    case ORDER_STATUS(PLACED):
        return "placed";
    case ORDER_STATUS(CONFIRMED):
        return "confirmed";
    case ORDER_STATUS(CANCELLED):
        return "cancelled";
    default:
        return "not placed";
    }
}

static es_err check_line(const Orders__V1__LineItem *it, size_t i, es_decision_t *d) {
    if (blank(it->sku))
        return es_reject(d, "item %zu has no sku", i + 1);
    if (it->quantity == 0)
        return es_reject(d, "item %zu (%s) has quantity 0; order at least 1", i + 1, it->sku);
    if (it->unit_price_cents < 0)
        return es_reject(d, "item %zu (%s) has a negative unit price (%lld cents)", i + 1, it->sku,
                         (long long)it->unit_price_cents);
    return ES_OK;
}

/* Validates every line and sums them; rejects an empty, free or overflowing order. */
static es_err order_total(const Orders__V1__PlaceOrder *c, es_decision_t *d, int64_t *total) {
    if (c->n_items == 0)
        return es_reject(d, "an order needs at least one item");
    *total = 0;
    for (size_t i = 0; i < c->n_items; i++) {
        const Orders__V1__LineItem *it = c->items[i];
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

ES_DECIDE(decide_place, Orders__V1__Order, Orders__V1__PlaceOrder) {
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
    Orders__V1__OrderPlaced ev = ORDERS__V1__ORDER_PLACED__INIT;
    ev.customer_id = command->customer_id;
    ev.n_items = command->n_items;
    ev.items = command->items;
    ev.amount_cents = total;
    ev.currency = currency_or_default(command->currency);
    return es_emit(d, &ev.base);
}

ES_DECIDE(decide_confirm, Orders__V1__Order, Orders__V1__ConfirmOrder) {
    Orders__V1__OrderConfirmed ev = ORDERS__V1__ORDER_CONFIRMED__INIT;
    switch (state->status) {
    case ORDER_STATUS(PLACED):
        return es_emit(d, &ev.base);
    case ORDER_STATUS(CONFIRMED):
        return es_reject(d, "the order is already confirmed");
    case ORDER_STATUS(CANCELLED):
        return es_reject(d, "the order was cancelled (%s); a cancelled order cannot be confirmed",
                         state->cancel_reason);
    default:
        return es_reject(d, "the order was never placed; place it before confirming");
    }
}

ES_DECIDE(decide_cancel, Orders__V1__Order, Orders__V1__CancelOrder) {
    static char no_reason[] = "no reason given";
    Orders__V1__OrderCancelled ev = ORDERS__V1__ORDER_CANCELLED__INIT;
    switch (state->status) {
    case ORDER_STATUS(PLACED):
        ev.reason = blank(command->reason) ? no_reason : command->reason;
        return es_emit(d, &ev.base);
    case ORDER_STATUS(CONFIRMED):
        return es_reject(d,
                         "the order is already confirmed; a confirmed order cannot be cancelled");
    case ORDER_STATUS(CANCELLED):
        return ES_OK; /* cancelled already: a redelivered abort changes nothing */
    default:
        return es_reject(d, "the order was never placed; there is nothing to cancel");
    }
}

ES_EVOLVE(apply_placed, Orders__V1__Order, Orders__V1__OrderPlaced) {
    state->status = ORDER_STATUS(PLACED);
    state->amount_cents = event->amount_cents;
    state->item_count = (uint32_t)event->n_items;
    es_err rc = set_str(&state->base, &state->customer_id, event->customer_id, err);
    if (rc == ES_OK)
        rc = set_str(&state->base, &state->currency, event->currency, err);
    return rc;
}

ES_EVOLVE(apply_confirmed, Orders__V1__Order, Orders__V1__OrderConfirmed) {
    state->status = ORDER_STATUS(CONFIRMED);
    return ES_OK;
}

ES_EVOLVE(apply_cancelled, Orders__V1__Order, Orders__V1__OrderCancelled) {
    state->status = ORDER_STATUS(CANCELLED);
    return set_str(&state->base, &state->cancel_reason, event->reason, err);
}

static const es_command_handler_t order_commands[] = {
    {&orders__v1__place_order__descriptor, decide_place},
    {&orders__v1__confirm_order__descriptor, decide_confirm},
    {&orders__v1__cancel_order__descriptor, decide_cancel},
    {NULL, NULL},
};

static const es_evolver_t order_events[] = {
    {&orders__v1__order_placed__descriptor, apply_placed},
    {&orders__v1__order_confirmed__descriptor, apply_confirmed},
    {&orders__v1__order_cancelled__descriptor, apply_cancelled},
    {NULL, NULL},
};

const es_aggregate_def demo_order_def = {
    .abi_version = ES_AGGREGATE_ABI,
    .type = "orders.order",
    .state = &orders__v1__order__descriptor,
    .command_handlers = order_commands,
    .evolvers = order_events,
};

/* payments.payment */

static const char *payment_status_name(Payments__V1__PaymentStatus s) {
    switch (s) {
    case PAYMENT_STATUS(AUTHORIZED):
        return "authorized";
    case PAYMENT_STATUS(DECLINED):
        return "declined";
    case PAYMENT_STATUS(REFUNDED):
        return "refunded";
    case PAYMENT_STATUS(PENDING):
        return "pending";
    case PAYMENT_STATUS(VOIDED):
        return "voided";
    default:
        return "not authorized";
    }
}

static es_err emit_declined(const Payments__V1__AuthorizePayment *c, const char *reason,
                            es_decision_t *d) {
    Payments__V1__PaymentDeclined ev = PAYMENTS__V1__PAYMENT_DECLINED__INIT;
    ev.order_id = c->order_id;
    ev.reason = (char *)reason;
    return es_emit(d, &ev.base);
}

static bool needs_3ds(const Payments__V1__AuthorizePayment *c) {
    return starts_with(c->customer_id, THREE_DS_PREFIX) ||
           (c->currency && strcmp(c->currency, "EUR") == 0 && c->amount_cents > THREE_DS_EUR_CENTS);
}

/* The card network's answer, deterministic so the demo and the tests can count on it. */
static es_err emit_outcome(const Payments__V1__AuthorizePayment *c, es_decision_t *d) {
    static char waiting[] = "waiting for the customer's 3-D Secure check";
    char reason[128];
    if (starts_with(c->customer_id, DECLINED_PREFIX)) {
        snprintf(reason, sizeof reason, "card of customer %s declined: insufficient funds",
                 c->customer_id);
        return emit_declined(c, reason, d);
    }
    if (c->amount_cents > PAYMENT_LIMIT_CENTS) {
        snprintf(reason, sizeof reason, "amount %lld cents exceeds the limit of %d cents",
                 (long long)c->amount_cents, PAYMENT_LIMIT_CENTS);
        return emit_declined(c, reason, d);
    }
    if (needs_3ds(c)) {
        Payments__V1__PaymentPending ev = PAYMENTS__V1__PAYMENT_PENDING__INIT;
        ev.order_id = c->order_id;
        ev.amount_cents = c->amount_cents;
        ev.currency = currency_or_default(c->currency);
        ev.reason = waiting;
        return es_emit(d, &ev.base);
    }
    Payments__V1__PaymentAuthorized ev = PAYMENTS__V1__PAYMENT_AUTHORIZED__INIT;
    ev.order_id = c->order_id;
    ev.amount_cents = c->amount_cents;
    ev.currency = currency_or_default(c->currency);
    return es_emit(d, &ev.base);
}

ES_DECIDE(decide_authorize, Payments__V1__Payment, Payments__V1__AuthorizePayment) {
    if (state->status != PAYMENT_STATUS(NONE))
        return es_reject(d, "the payment is already %s; authorize under a new payment id",
                         payment_status_name(state->status));
    if (blank(command->order_id))
        return es_reject(d, "order_id is missing");
    if (blank(command->customer_id))
        return es_reject(d, "customer_id is missing");
    if (command->amount_cents <= 0)
        return es_reject(d, "the amount must be positive, got %lld cents",
                         (long long)command->amount_cents);
    es_err rc = check_currency(command->currency, d);
    if (rc != ES_OK)
        return rc;
    return emit_outcome(command, d);
}

/* Refunds what was taken, voids what is still pending; anything else has nothing to give back. */
ES_DECIDE(decide_refund, Payments__V1__Payment, Payments__V1__RefundPayment) {
    if (state->status == PAYMENT_STATUS(AUTHORIZED)) {
        Payments__V1__PaymentRefunded ev = PAYMENTS__V1__PAYMENT_REFUNDED__INIT;
        ev.order_id = state->order_id;
        ev.amount_cents = state->amount_cents;
        ev.reason = command->reason;
        return es_emit(d, &ev.base);
    }
    if (state->status == PAYMENT_STATUS(PENDING)) {
        Payments__V1__PaymentVoided ev = PAYMENTS__V1__PAYMENT_VOIDED__INIT;
        ev.order_id = state->order_id;
        ev.amount_cents = state->amount_cents;
        ev.reason = command->reason;
        return es_emit(d, &ev.base);
    }
    return ES_OK; /* never authorized, declined, refunded or voided: nothing to give back */
}

/* Authorized and pending payments hold the same facts; only the status differs. */
static es_err apply_held(Payments__V1__Payment *p, Payments__V1__PaymentStatus status,
                         const char *order_id, int64_t amount_cents, const char *currency,
                         es_error_t *err) {
    p->status = status;
    p->amount_cents = amount_cents;
    es_err rc = set_str(&p->base, &p->order_id, order_id, err);
    if (rc == ES_OK)
        rc = set_str(&p->base, &p->currency, currency, err);
    return rc;
}

ES_EVOLVE(apply_authorized, Payments__V1__Payment, Payments__V1__PaymentAuthorized) {
    return apply_held(state, PAYMENT_STATUS(AUTHORIZED), event->order_id, event->amount_cents,
                      event->currency, err);
}

ES_EVOLVE(apply_pending, Payments__V1__Payment, Payments__V1__PaymentPending) {
    return apply_held(state, PAYMENT_STATUS(PENDING), event->order_id, event->amount_cents,
                      event->currency, err);
}

ES_EVOLVE(apply_declined, Payments__V1__Payment, Payments__V1__PaymentDeclined) {
    state->status = PAYMENT_STATUS(DECLINED);
    return set_str(&state->base, &state->order_id, event->order_id, err);
}

ES_EVOLVE(apply_refunded, Payments__V1__Payment, Payments__V1__PaymentRefunded) {
    state->status = PAYMENT_STATUS(REFUNDED);
    return ES_OK;
}

ES_EVOLVE(apply_voided, Payments__V1__Payment, Payments__V1__PaymentVoided) {
    state->status = PAYMENT_STATUS(VOIDED);
    return ES_OK;
}

static const es_command_handler_t payment_commands[] = {
    {&payments__v1__authorize_payment__descriptor, decide_authorize},
    {&payments__v1__refund_payment__descriptor, decide_refund},
    {NULL, NULL},
};

static const es_evolver_t payment_events[] = {
    {&payments__v1__payment_authorized__descriptor, apply_authorized},
    {&payments__v1__payment_declined__descriptor, apply_declined},
    {&payments__v1__payment_refunded__descriptor, apply_refunded},
    {&payments__v1__payment_pending__descriptor, apply_pending},
    {&payments__v1__payment_voided__descriptor, apply_voided},
    {NULL, NULL},
};

const es_aggregate_def demo_payment_def = {
    .abi_version = ES_AGGREGATE_ABI,
    .type = "payments.payment",
    .state = &payments__v1__payment__descriptor,
    .command_handlers = payment_commands,
    .evolvers = payment_events,
};

/* inventory.item */

static const Inventory__V1__Reservation *find_reservation(const Inventory__V1__Item *item,
                                                          const char *order_id, size_t *index) {
    for (size_t i = 0; i < item->n_reservations; i++) {
        if (strcmp(item->reservations[i]->order_id, order_id) == 0) {
            if (index)
                *index = i;
            return item->reservations[i];
        }
    }
    return NULL;
}

ES_DECIDE(decide_restock, Inventory__V1__Item, Inventory__V1__Restock) {
    if (command->quantity == 0)
        return es_reject(d, "restock quantity must be at least 1");
    if (command->quantity > UINT32_MAX - state->on_hand)
        return es_reject(d, "restocking %u would overflow the %u units on hand", command->quantity,
                         state->on_hand);
    Inventory__V1__StockAdded ev = INVENTORY__V1__STOCK_ADDED__INIT;
    ev.quantity = command->quantity;
    return es_emit(d, &ev.base);
}

ES_DECIDE(decide_reserve, Inventory__V1__Item, Inventory__V1__ReserveStock) {
    if (blank(command->order_id))
        return es_reject(d, "order_id is missing");
    if (command->quantity == 0)
        return es_reject(d, "reservation quantity must be at least 1");
    const Inventory__V1__Reservation *held = find_reservation(state, command->order_id, NULL);
    if (held && held->quantity == command->quantity)
        return ES_OK; /* a retry of a reservation that already holds */
    if (held)
        return es_reject(d, "order %s already holds %u units; release them before reserving %u",
                         command->order_id, held->quantity, command->quantity);
    uint32_t available = state->on_hand - state->reserved;
    if (command->quantity > available) {
        Inventory__V1__StockShortage ev = INVENTORY__V1__STOCK_SHORTAGE__INIT;
        ev.order_id = command->order_id;
        ev.requested = command->quantity;
        ev.available = available;
        return es_emit(d, &ev.base);
    }
    Inventory__V1__StockReserved ev = INVENTORY__V1__STOCK_RESERVED__INIT;
    ev.order_id = command->order_id;
    ev.quantity = command->quantity;
    return es_emit(d, &ev.base);
}

ES_DECIDE(decide_release, Inventory__V1__Item, Inventory__V1__ReleaseStock) {
    if (blank(command->order_id))
        return es_reject(d, "order_id is missing");
    const Inventory__V1__Reservation *held = find_reservation(state, command->order_id, NULL);
    if (!held)
        return ES_OK; /* released already, or never reserved: compensation is done */
    Inventory__V1__StockReleased ev = INVENTORY__V1__STOCK_RELEASED__INIT;
    ev.order_id = command->order_id;
    ev.quantity = held->quantity;
    return es_emit(d, &ev.base);
}

ES_EVOLVE(add_reservation, Inventory__V1__Item, Inventory__V1__StockReserved) {
    size_t n = state->n_reservations;
    Inventory__V1__Reservation **arr = realloc(state->reservations, (n + 1) * sizeof *arr);
    if (!arr)
        return es_fail(err, ES_ENOMEM, "out of memory adding a reservation for %s",
                       event->order_id);
    state->reservations = arr;
    Inventory__V1__Reservation *r = malloc(sizeof *r);
    if (!r)
        return es_fail(err, ES_ENOMEM, "out of memory adding a reservation for %s",
                       event->order_id);
    inventory__v1__reservation__init(r);
    r->quantity = event->quantity;
    es_err rc = set_str(&r->base, &r->order_id, event->order_id, err);
    if (rc != ES_OK) {
        free(r);
        return rc;
    }
    arr[n] = r;
    state->n_reservations = n + 1;
    state->reserved += event->quantity;
    return ES_OK;
}

/* Unknown order ids are ignored: releasing is idempotent by design. */
static void drop_reservation(Inventory__V1__Item *item, const char *order_id) {
    size_t i;
    const Inventory__V1__Reservation *held = find_reservation(item, order_id, &i);
    if (!held)
        return;
    item->reserved = item->reserved > held->quantity ? item->reserved - held->quantity : 0;
    protobuf_c_message_free_unpacked(&item->reservations[i]->base, NULL);
    item->n_reservations--;
    memmove(&item->reservations[i], &item->reservations[i + 1],
            (item->n_reservations - i) * sizeof item->reservations[0]);
    if (item->n_reservations == 0) {
        free(item->reservations);
        item->reservations = NULL;
    }
}

ES_EVOLVE(apply_added, Inventory__V1__Item, Inventory__V1__StockAdded) {
    state->on_hand += event->quantity;
    return ES_OK;
}

ES_EVOLVE(apply_released, Inventory__V1__Item, Inventory__V1__StockReleased) {
    drop_reservation(state, event->order_id);
    return ES_OK;
}

static const es_command_handler_t item_commands[] = {
    {&inventory__v1__restock__descriptor, decide_restock},
    {&inventory__v1__reserve_stock__descriptor, decide_reserve},
    {&inventory__v1__release_stock__descriptor, decide_release},
    {NULL, NULL},
};

/* A shortage is a reservation that did not happen: it changes nothing. */
static const es_evolver_t item_events[] = {
    {&inventory__v1__stock_added__descriptor, apply_added},
    {&inventory__v1__stock_reserved__descriptor, add_reservation},
    {&inventory__v1__stock_released__descriptor, apply_released},
    {&inventory__v1__stock_shortage__descriptor, NULL},
    {NULL, NULL},
};

const es_aggregate_def demo_item_def = {
    .abi_version = ES_AGGREGATE_ABI,
    .type = "inventory.item",
    .state = &inventory__v1__item__descriptor,
    .command_handlers = item_commands,
    .evolvers = item_events,
};

/* the whole domain */

es_err demo_register_all(es_engine_t *engine, es_error_t *err) {
    const es_aggregate_def *defs[] = {&demo_order_def, &demo_payment_def, &demo_item_def};
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) {
        es_err rc = es_engine_register(engine, defs[i], NULL, err);
        if (rc != ES_OK)
            return rc;
    }
    return ES_OK;
}

static const ProtobufCMessageDescriptor *const all_descriptors[] = {
    &orders__v1__line_item__descriptor,
    &orders__v1__place_order__descriptor,
    &orders__v1__confirm_order__descriptor,
    &orders__v1__cancel_order__descriptor,
    &orders__v1__order_placed__descriptor,
    &orders__v1__order_confirmed__descriptor,
    &orders__v1__order_cancelled__descriptor,
    &orders__v1__order__descriptor,
    &payments__v1__authorize_payment__descriptor,
    &payments__v1__refund_payment__descriptor,
    &payments__v1__payment_authorized__descriptor,
    &payments__v1__payment_declined__descriptor,
    &payments__v1__payment_refunded__descriptor,
    &payments__v1__payment_pending__descriptor,
    &payments__v1__payment_voided__descriptor,
    &payments__v1__payment__descriptor,
    &inventory__v1__restock__descriptor,
    &inventory__v1__reserve_stock__descriptor,
    &inventory__v1__release_stock__descriptor,
    &inventory__v1__stock_added__descriptor,
    &inventory__v1__stock_reserved__descriptor,
    &inventory__v1__stock_released__descriptor,
    &inventory__v1__stock_shortage__descriptor,
    &inventory__v1__reservation__descriptor,
    &inventory__v1__item__descriptor,
    NULL,
};

const ProtobufCMessageDescriptor *const *demo_descriptors(void) {
    return all_descriptors;
}

static const es_aggregate_def *const all_aggregates[] = {&demo_order_def, &demo_payment_def,
                                                         &demo_item_def, NULL};

const es_types_def demo_types = {
    .abi_version = ES_TYPES_ABI,
    .name = "order_saga",
    .aggregates = all_aggregates,
    .messages = all_descriptors,
};
