/*
 * es_aggregate_def as eskit 0.1.0's <eskit/engine.h> declared it (ABI 1), field for field:
 * what source written for 0.1.0 hands over. The ABI tests (tests/install/abi1.c against the
 * installed library, tests/unit/test_engine.c) register it to hold the library to taking it.
 */
#ifndef ESKIT_TEST_AGGREGATE_DEF_ABI1_H
#define ESKIT_TEST_AGGREGATE_DEF_ABI1_H

#include <stdint.h>
#include <eskit/eskit.h>

typedef struct aggregate_def_abi1 {
    uint32_t abi_version;
    const char *type;
    const ProtobufCMessageDescriptor *state;
    const ProtobufCMessageDescriptor *const *events;
    const ProtobufCMessageDescriptor *const *commands;
    void (*initial_state)(ProtobufCMessage *state, void *opaque);
    es_err (*evolve)(ProtobufCMessage *state, const ProtobufCMessage *event, void *opaque,
                     es_error_t *err);
    es_err (*decide)(const ProtobufCMessage *state, const ProtobufCMessage *command,
                     es_decision_t *d, void *opaque);
} aggregate_def_abi1;

#endif
