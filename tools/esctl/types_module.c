/*
 * A types module (<eskit/types.h>) of the kitchen-sink test messages, which no service
 * defines: the tests load it with --types to check how esctl prints every field kind. Built
 * with -DBAD_ABI it is a module of a future ABI, which the loader refuses. Built with
 * -DUPCASTERS it lists an upcaster of the conformance suite's notes (test.v1.Noted "hello" to
 * test.v3.Noted "[v3]HELLO"); with -DABI1 too, it claims ABI 1, whose definitions end before
 * the upcasters, so the loader must not see them.
 */
#include <eskit/types.h>

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "esctl/test/v1/kitchen.pb-c.h"
#include "esctl/test/v1/legacy.pb-c.h"

static const ProtobufCMessageDescriptor *const messages[] = {
    &esctl__test__v1__kitchen__descriptor,
    &esctl__test__v1__inner__descriptor,
    &esctl__test__v1__legacy__descriptor,
    NULL,
};

#ifdef UPCASTERS
static es_err noted_v1_to_v3(const es_event_t *ev, void *opaque, uint8_t **out, size_t *out_len,
                             es_error_t *err) {
    (void)opaque, (void)err;
    *out_len = ev->payload_len + 4;
    if (!(*out = malloc(*out_len)))
        return ES_ENOMEM;
    memcpy(*out, "[v3]", 4);
    for (size_t i = 0; i < ev->payload_len; i++)
        (*out)[4 + i] = (uint8_t)toupper(ev->payload[i]);
    return ES_OK;
}

static const es_upcaster_t noted = {ES_UPCASTER_ABI,
                                    "esctl-noted-v1-to-v3",
                                    "test.v1.Noted",
                                    "test.v3.Noted",
                                    0,
                                    0,
                                    noted_v1_to_v3,
                                    NULL};
static const es_upcaster_t *const upcasters[] = {&noted, NULL};
#endif

static const es_types_def types = {
#if defined(BAD_ABI)
    .abi_version = ES_TYPES_ABI + 1,
#elif defined(ABI1)
    .abi_version = 1,
#else
    .abi_version = ES_TYPES_ABI,
#endif
    .name = "esctl-test",
    .messages = messages,
#ifdef UPCASTERS
    .upcasters = upcasters,
#endif
};

ES_TYPES_EXPORT(types)
