/*
 * Types modules (<eskit/types.h>): the loader, on the module search of module.c, and the
 * checks and look-ups of a definition.
 */
#include "decider.h"
#include "engine_int.h"
#include "module.h"

#include <eskit/types.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct es_types_module {
    es_module mod;
    const es_types_def *def; /* &copy once loaded */
    es_types_def copy;       /* the module's, by its ABI's size: an ABI 1 one ends earlier */
};

/* What an ABI 1 definition holds: everything before upcasters. */
#define TYPES_ABI1_SIZE offsetof(es_types_def, upcasters)

/* Checks the upcasters together, on a scratch config, as es_config_add_upcaster would. */
static es_err check_upcasters(const es_types_def *def, const char *origin, es_error_t *err) {
    if (def->abi_version < 2 || !def->upcasters)
        return ES_OK;
    es_config_t *cfg = es_config_new();
    if (!cfg)
        return es_fail(err, ES_ENOMEM, "%s: out of memory checking its upcasters", origin);
    es_err e = ES_OK;
    for (size_t i = 0; e == ES_OK && def->upcasters[i]; i++)
        e = es_config_add_upcaster(cfg, def->upcasters[i], err);
    es_config_destroy(cfg);
    if (e != ES_OK)
        es_error_prefix(err, "%s: ", origin);
    return e;
}

static es_err check_descriptors(const ProtobufCMessageDescriptor *const *list, const char *what,
                                const char *origin, es_error_t *err) {
    for (size_t i = 0; list && list[i]; i++)
        /* A module built against another protobuf-c, or returning garbage, stops here. */
        if (list[i]->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC)
            return es_fail(err, ES_EINVAL,
                           "%s: entry %zu of %s is not a protobuf-c message descriptor; rebuild "
                           "the module against this protobuf-c",
                           origin, i, what);
    return ES_OK;
}

/* The i-th message type an aggregate definition names (events, then commands), whichever way
 * it gives them: type lists, or the handler tables of ABI 2; NULL past the last. */
static const ProtobufCMessageDescriptor *type_at(const es_aggregate_def *a, size_t i) {
    for (size_t k = 0; a->events && a->events[k]; k++, i--)
        if (i == 0)
            return a->events[k];
    for (size_t k = 0; a->commands && a->commands[k]; k++, i--)
        if (i == 0)
            return a->commands[k];
    if (a->abi_version < 2)
        return NULL;
    for (size_t k = 0; a->evolvers && a->evolvers[k].event; k++, i--)
        if (i == 0)
            return a->evolvers[k].event;
    for (size_t k = 0; a->command_handlers && a->command_handlers[k].command; k++, i--)
        if (i == 0)
            return a->command_handlers[k].command;
    return NULL;
}

static es_err check_aggregate(const es_aggregate_def *a, size_t i, const char *origin,
                              es_error_t *err) {
    /* Descriptors before es_aggregate_check reads their names; an ABI it does not take has
     * fields of unknown layout, so that is its error. */
    bool known_abi = a->abi_version >= 1 && a->abi_version <= ES_AGGREGATE_ABI;
    es_err e = ES_OK;
    if (known_abi && a->state && a->state->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC)
        e = es_fail(err, ES_EINVAL, "the state is not a protobuf-c message descriptor");
    for (size_t k = 0; known_abi && e == ES_OK && type_at(a, k); k++)
        if (type_at(a, k)->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC)
            e = es_fail(err, ES_EINVAL,
                        "message type %zu is not a protobuf-c message descriptor; rebuild the "
                        "module against this protobuf-c",
                        k);
    if (e == ES_OK)
        e = es_aggregate_check(a, err);
    if (e != ES_OK)
        es_error_prefix(err, "%s: aggregate %zu: ", origin, i);
    return e;
}

es_err es_types_check(const es_types_def *def, const char *origin, es_error_t *err) {
    if (!def)
        return es_fail(err, ES_EINVAL, "%s: no types definition", origin);
    if (def->abi_version < 1 || def->abi_version > ES_TYPES_ABI)
        return es_fail(err, ES_EINVAL,
                       "%s: types module ABI version %d, this eskit speaks 1 to %d; rebuild the "
                       "module against this eskit's headers (<eskit/types.h>)",
                       origin, def->abi_version, ES_TYPES_ABI);
    if (!def->name || !*def->name)
        return es_fail(err, ES_EINVAL, "%s: the types definition has no name", origin);
    es_err e = check_descriptors(def->messages, "the messages", origin, err);
    for (size_t i = 0; e == ES_OK && def->aggregates && def->aggregates[i]; i++)
        e = check_aggregate(def->aggregates[i], i, origin, err);
    if (e == ES_OK)
        e = check_upcasters(def, origin, err);
    return e;
}

es_err es_types_load(const es_config_t *cfg, const char *name_or_path, es_types_module_t **out,
                     es_error_t *err) {
    if (!out)
        return es_fail(err, ES_EINVAL, "es_types_load: out is required");
    *out = NULL;
    es_types_module_t *m = calloc(1, sizeof *m);
    if (!m)
        return es_fail(err, ES_ENOMEM, "out of memory loading %s",
                       name_or_path ? name_or_path : "a types module");
    es_err e = es_module_open(cfg, "types", name_or_path, ES_TYPES_ENTRY,
                              "your const es_types_def *: ES_TYPES_EXPORT(def) of <eskit/types.h>",
                              &m->mod, err);
    if (e == ES_OK) {
        es_types_entry_cb *entry;
        *(void **)&entry = m->mod.entry;
        const es_types_def *given = entry();
        e = es_types_check(given, m->mod.path, err);
        if (e == ES_OK) {
            memcpy(&m->copy, given, given->abi_version == 1 ? TYPES_ABI1_SIZE : sizeof m->copy);
            m->def = &m->copy;
        }
    }
    if (e != ES_OK) {
        es_types_unload(m);
        return e;
    }
    *out = m;
    return ES_OK;
}

const es_types_def *es_types_module_def(const es_types_module_t *mod) {
    return mod ? mod->def : NULL;
}

const char *es_types_module_path(const es_types_module_t *mod) {
    return mod ? mod->mod.path : NULL;
}

void es_types_unload(es_types_module_t *mod) {
    if (!mod)
        return;
    es_module_close(&mod->mod);
    free(mod);
}

static const ProtobufCMessageDescriptor *find_in(const ProtobufCMessageDescriptor *const *list,
                                                 const char *full_name) {
    for (size_t i = 0; list && list[i]; i++)
        if (!strcmp(list[i]->name, full_name))
            return list[i];
    return NULL;
}

const ProtobufCMessageDescriptor *es_types_find_message(const es_types_def *def,
                                                        const char *full_name) {
    if (!def || !full_name)
        return NULL;
    for (size_t i = 0; def->aggregates && def->aggregates[i]; i++) {
        const es_aggregate_def *a = def->aggregates[i];
        const ProtobufCMessageDescriptor *d = NULL;
        for (size_t k = 0; !d && type_at(a, k); k++)
            if (!strcmp(type_at(a, k)->name, full_name))
                d = type_at(a, k);
        if (!d && a->state && !strcmp(a->state->name, full_name))
            d = a->state;
        if (d)
            return d;
    }
    return find_in(def->messages, full_name);
}

const es_aggregate_def *es_types_find_aggregate(const es_types_def *def, const char *type) {
    for (size_t i = 0; def && type && def->aggregates && def->aggregates[i]; i++)
        if (!strcmp(def->aggregates[i]->type, type))
            return def->aggregates[i];
    return NULL;
}

const ProtobufCMessageDescriptor *es_types_message_at(const es_types_def *def, size_t i) {
    for (size_t a = 0; def && def->aggregates && def->aggregates[a]; a++) {
        const es_aggregate_def *agg = def->aggregates[a];
        if (agg->state && i-- == 0)
            return agg->state;
        for (size_t k = 0; type_at(agg, k); k++)
            if (i-- == 0)
                return type_at(agg, k);
    }
    for (size_t k = 0; def && def->messages && def->messages[k]; k++)
        if (i-- == 0)
            return def->messages[k];
    return NULL;
}
