/*
 * A types module (<eskit/types.h>) of the kitchen-sink test messages, which no service
 * defines: the tests load it with --types to check how esctl prints every field kind. Built
 * with -DBAD_ABI it is a module of a future ABI, which the loader refuses.
 */
#include <eskit/types.h>

#include "esctl/test/v1/kitchen.pb-c.h"
#include "esctl/test/v1/legacy.pb-c.h"

static const ProtobufCMessageDescriptor *const messages[] = {
    &esctl__test__v1__kitchen__descriptor,
    &esctl__test__v1__inner__descriptor,
    &esctl__test__v1__legacy__descriptor,
    NULL,
};

static const es_types_def types = {
#ifdef BAD_ABI
    .abi_version = ES_TYPES_ABI + 1,
#else
    .abi_version = ES_TYPES_ABI,
#endif
    .name = "esctl-test",
    .messages = messages,
};

ES_TYPES_EXPORT(types)
