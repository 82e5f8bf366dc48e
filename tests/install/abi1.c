/*
 * A program written for eskit 0.1.0: its aggregate definition is the ABI 1 struct, declared
 * field for field as 0.1.0's <eskit/engine.h> had it (aggregate_def_abi1.h: uint32_t
 * abi_version, type lists, one evolve and one decide). Built against the installed headers and
 * linked with the installed libeskit.so, it must register and run unchanged (docs/abi.md). Prints
 * one line per command: "accepted" or "rejected: <reason>".
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <eskit/eskit.h>

#include "aggregate_def_abi1.h"
#include "hello.pb-c.h"

static es_err evolve(ProtobufCMessage *state, const ProtobufCMessage *event, void *opaque,
                     es_error_t *err) {
    (void)event, (void)opaque, (void)err;
    ((Hello__V1__Account *)state)->open = 1;
    return ES_OK;
}

static es_err decide(const ProtobufCMessage *state, const ProtobufCMessage *command,
                     es_decision_t *d, void *opaque) {
    (void)command, (void)opaque;
    Hello__V1__AccountOpened opened = HELLO__V1__ACCOUNT_OPENED__INIT;
    if (((const Hello__V1__Account *)state)->open)
        return es_reject(d, "the account is already open");
    return es_emit(d, &opened.base);
}

static const ProtobufCMessageDescriptor *const events[] = {&hello__v1__account_opened__descriptor,
                                                           NULL};
static const ProtobufCMessageDescriptor *const commands[] = {&hello__v1__open_account__descriptor,
                                                             NULL};

int main(void) {
    /* On the heap at its exact size: a library reading past it is caught by ASan or
     * valgrind. */
    aggregate_def_abi1 *def = malloc(sizeof *def);
    if (!def)
        return 1;
    *def = (aggregate_def_abi1){
        1, "abi.account", &hello__v1__account__descriptor, events, commands, NULL, evolve, decide};
    es_error_t err = {0};
    es_config_t *cfg = es_config_new();
    es_engine_t *engine = NULL;
    es_err rc = cfg ? es_config_set(cfg, "db", "abi1.db", &err) : ES_ENOMEM;
    if (rc == ES_OK)
        rc = es_engine_new(cfg, &engine, &err);
    if (rc == ES_OK)
        rc = es_engine_register(engine, (const es_aggregate_def *)(const void *)def, NULL, &err);
    for (int i = 0; rc == ES_OK && i < 2; i++) {
        Hello__V1__OpenAccount open = HELLO__V1__OPEN_ACCOUNT__INIT;
        es_command_t cmd = {
            .aggregate_type = "abi.account", .aggregate_id = "a-1", .message = &open.base};
        es_result_t res = {0};
        rc = es_execute(engine, &cmd, &res, &err);
        if (rc == ES_OK || rc == ES_EREJECTED)
            printf(rc == ES_OK ? "accepted\n" : "rejected: %s\n", res.reason);
        es_result_clear(&res);
        if (rc == ES_EREJECTED)
            rc = ES_OK;
    }
    if (rc != ES_OK)
        fprintf(stderr, "abi1: %s (%s)\n", err.message, es_strerror(rc));
    es_engine_destroy(engine);
    es_config_destroy(cfg);
    free(def);
    return rc == ES_OK ? 0 : 1;
}
