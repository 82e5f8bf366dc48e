/*
 * A types module (<eskit/types.h>) of the kitchen-sink test messages, which no service
 * defines: the tests load it with --types to check how esctl prints every field kind. Built
 * with -DBAD_ABI it is a module of a future ABI, which the loader refuses. Built with
 * -DUPCASTERS it lists upcasters of the conformance suite's events: notes (test.v1.Noted "hello"
 * to test.v3.Noted "[v3]HELLO") and the counter module's (test.v0.Added "old:5" to
 * test.v1.Added "tp1:5"); with -DABI1 too, it claims ABI 1, whose definitions end before
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

static es_err added_v0_to_v1(const es_event_t *ev, void *opaque, uint8_t **out, size_t *out_len,
                             es_error_t *err) {
    (void)opaque;
    if (ev->payload_len < 4 || memcmp(ev->payload, "old:", 4))
        return es_fail(err, ES_EDECODE, "not an old:<amount> payload");
    *out_len = ev->payload_len;
    if (!(*out = malloc(*out_len)))
        return ES_ENOMEM;
    memcpy(*out, "tp1:", 4);
    memcpy(*out + 4, ev->payload + 4, ev->payload_len - 4);
    return ES_OK;
}

static const es_upcaster_t added = {ES_UPCASTER_ABI,
                                    "esctl-added-v0-to-v1",
                                    "test.v0.Added",
                                    "test.v1.Added",
                                    0,
                                    0,
                                    added_v0_to_v1,
                                    NULL};
static const es_upcaster_t *const upcasters[] = {&noted, &added, NULL};
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
