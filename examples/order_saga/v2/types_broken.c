/*
 * order_saga_broken_types.so: a deliberately broken build of the order events
 * (proto/examples/orders/broken: OrderPlaced's field 3 amount_cents, an int64, made a string),
 * the module `esctl schemas check` must refuse with FIELD_WIRE_COMPATIBLE_TYPE before it is
 * deployed against a log that holds v1 OrderPlaced events. Only the tests load it.
 */
#include <eskit/types.h>
#include "orders/broken/orders.pb-c.h"

static const ProtobufCMessageDescriptor *const messages[] = {
    &orders__v1__order_placed__descriptor,
    NULL,
};

static const es_types_def broken_types = {
    .abi_version = ES_TYPES_ABI,
    .name = "order_saga_broken",
    .messages = messages,
};

ES_TYPES_EXPORT(broken_types)
