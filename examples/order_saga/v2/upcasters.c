/*
 * The upcasters from the v1 order events to orders.v2. Stored bytes are never rewritten: each
 * runs when an old event is read, so the log keeps v1 events forever and every reader of a
 * config carrying these sees v2 types only.
 */
#include <stdlib.h>
#include <string.h>

#include "domain_v2.h"
#include "orders/v1/orders.pb-c.h"

#define CODE(c) ORDERS__V2__CANCEL_CODE__CANCEL_CODE_##c

/* Same shape, another name: the bytes are the v2 event's. */
static es_err copy_payload(const es_event_t *ev, void *opaque, uint8_t **out, size_t *out_len,
                           es_error_t *err) {
    (void)opaque;
    *out = NULL;
    *out_len = ev->payload_len;
    if (!ev->payload_len)
        return ES_OK;
    if (!(*out = malloc(ev->payload_len)))
        return es_fail(err, ES_ENOMEM, "out of memory copying %zu bytes", ev->payload_len);
    memcpy(*out, ev->payload, ev->payload_len);
    return ES_OK;
}

static int mentions(const char *text, const char *word) {
    return text && strstr(text, word) != NULL;
}

/* v1 kept only text; the codes v2 decides with are recovered from the words the demo's
 * services and saga wrote, and anything else stays UNSPECIFIED with its text intact. */
static Orders__V2__CancelCode classify(const char *text) {
    if (mentions(text, "declined"))
        return CODE(PAYMENT_DECLINED);
    if (mentions(text, "stock") || mentions(text, "shortage"))
        return CODE(OUT_OF_STOCK);
    if (mentions(text, "customer"))
        return CODE(CUSTOMER_REQUEST);
    return CODE(UNSPECIFIED);
}

static es_err cancelled_v1_to_v2(const es_event_t *ev, void *opaque, uint8_t **out, size_t *out_len,
                                 es_error_t *err) {
    (void)opaque;
    Orders__V1__OrderCancelled *old =
        orders__v1__order_cancelled__unpack(NULL, ev->payload_len, ev->payload);
    if (!old)
        return es_fail(err, ES_EDECODE, "%zu bytes are not an orders.v1.OrderCancelled",
                       ev->payload_len);
    Orders__V2__CancelReason reason = ORDERS__V2__CANCEL_REASON__INIT;
    reason.code = classify(old->reason);
    reason.text = old->reason;
    Orders__V2__OrderCancelled now = ORDERS__V2__ORDER_CANCELLED__INIT;
    now.reason = &reason;
    es_err rc = ES_OK;
    *out_len = orders__v2__order_cancelled__get_packed_size(&now);
    *out = malloc(*out_len ? *out_len : 1);
    if (*out)
        orders__v2__order_cancelled__pack(&now, *out);
    else
        rc = es_fail(err, ES_ENOMEM, "out of memory packing an orders.v2.OrderCancelled");
    orders__v1__order_cancelled__free_unpacked(old, NULL);
    return rc;
}

static const es_upcaster_t placed = {
    .abi_version = ES_UPCASTER_ABI,
    .name = "order-placed-v1-to-v2",
    .from = "orders.v1.OrderPlaced",
    .to = "orders.v2.OrderPlaced",
    .upcast = copy_payload,
};

/* Two steps, as the log holds both: v1 builds wrote orders.v1.OrderConfirmed, the first v2
 * build orders.v2.OrderConfirmed, before the rename to OrderAccepted. */
static const es_upcaster_t confirmed = {
    .abi_version = ES_UPCASTER_ABI,
    .name = "order-confirmed-v1-to-v2",
    .from = "orders.v1.OrderConfirmed",
    .to = "orders.v2.OrderConfirmed",
    .upcast = copy_payload,
};

static const es_upcaster_t accepted = {
    .abi_version = ES_UPCASTER_ABI,
    .name = "order-confirmed-to-accepted",
    .from = "orders.v2.OrderConfirmed",
    .to = "orders.v2.OrderAccepted",
    .upcast = copy_payload,
};

static const es_upcaster_t cancelled = {
    .abi_version = ES_UPCASTER_ABI,
    .name = "order-cancelled-v1-to-v2",
    .from = "orders.v1.OrderCancelled",
    .to = "orders.v2.OrderCancelled",
    .upcast = cancelled_v1_to_v2,
};

const es_upcaster_t *const demo_v2_upcasters[] = {&placed, &confirmed, &accepted, &cancelled, NULL};

es_err demo_v2_add_upcasters(es_config_t *cfg, es_error_t *err) {
    for (size_t i = 0; demo_v2_upcasters[i]; i++) {
        es_err rc = es_config_add_upcaster(cfg, demo_v2_upcasters[i], err);
        if (rc != ES_OK)
            return rc;
    }
    return ES_OK;
}
