/*
 * impostor_types.so: a types module whose orders.v1.OrderPlaced is not the demo's (field 2 is
 * an int64 where the demo has repeated LineItem), as a broken build of the service would ship:
 * esctl schemas check must refuse it against a log the demo wrote (test_esctl_schemas.c).
 */
#include <eskit/types.h>

#include "cattest/cattest_variants.h"

static const ProtobufCMessageDescriptor *messages[2];

static const es_types_def types = {
    .abi_version = ES_TYPES_ABI, .name = "impostor", .messages = messages};

ES_EXPORT const es_types_def *es_types_entry(void);
ES_EXPORT const es_types_def *es_types_entry(void) {
    if (!messages[0]) {
        const ProtobufCMessageDescriptor *base = cattest_variant("base", NULL);
        static ProtobufCMessageDescriptor impostor;
        impostor = *base;
        impostor.name = "orders.v1.OrderPlaced";
        messages[0] = &impostor;
    }
    return &types;
}
