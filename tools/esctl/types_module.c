/*
 * A `--types` module: the kitchen-sink test message, which esctl does not know
 * built in. Also the smallest example of what a service ships so esctl can
 * decode its payloads.
 */
#include "esctl/test/v1/kitchen.pb-c.h"
#include "esctl/test/v1/legacy.pb-c.h"

/* The symbol esctl looks up (PB_TYPES_SYMBOL in pbprint.h). */
const ProtobufCMessageDescriptor *const *es_types(void);

const ProtobufCMessageDescriptor *const *es_types(void) {
    static const ProtobufCMessageDescriptor *const types[] = {
        &esctl__test__v1__kitchen__descriptor,
        &esctl__test__v1__inner__descriptor,
        &esctl__test__v1__legacy__descriptor,
        NULL,
    };
    return types;
}
