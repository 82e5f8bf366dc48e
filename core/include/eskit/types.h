/*
 * Types modules: the message types of a service, for tools that read its log without being
 * built with it (esctl). A types module is a .so exporting one function, es_types_entry,
 * that returns a const es_types_def (like a projector module: the first field is the ABI
 * version and the loader refuses a mismatch): the protobuf-c descriptors of the service's
 * payloads and its aggregate definitions, so a tool can decode events, commands and states
 * and fold an aggregate's state (esctl state) with the service's own evolve. From ABI 2 it
 * lists the service's upcasters too (eskit/upcast.h), which esctl registers on its config so
 * events, state, sagas show and replay show current types.
 *
 * A module is a few lines beside the service's domain code:
 *
 *     static const es_aggregate_def *const aggregates[] = {&order_def, NULL};
 *     static const es_types_def types = {
 *         .abi_version = ES_TYPES_ABI, .name = "orders", .aggregates = aggregates,
 *     };
 *     ES_TYPES_EXPORT(types)
 *
 * Modules load code, so their names come only from the process's own settings: the config key
 * types.modules (never from an eskit.conf found in the working directory, docs/security.md)
 * or a path the caller names (esctl --types FILE.so).
 */
#ifndef ESKIT_TYPES_H
#define ESKIT_TYPES_H

#include <protobuf-c/protobuf-c.h>
#include <eskit/api.h>
#include <eskit/config.h>
#include <eskit/engine.h>
#include <eskit/upcast.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ES_TYPES_ABI 2 /* 2: upcasters; a module built with 1 still loads */
#define ES_TYPES_ENTRY "es_types_entry"

typedef struct es_types_def {
    int abi_version;  /* ES_TYPES_ABI */
    const char *name; /* the service or domain, for messages ("order_saga") */
    /* NULL-terminated; may be NULL. Their events, commands and state types are known without
     * being listed again; the definitions must be complete (es_engine_register accepts them). */
    const es_aggregate_def *const *aggregates;
    /* NULL-terminated; may be NULL. Payload types beyond the aggregates' (another service's
     * events this one reads, saga payloads). Nested message types need no entry. */
    const ProtobufCMessageDescriptor *const *messages;
    /* ABI 2. NULL-terminated; may be NULL. The service's upcasters, checked as
     * es_config_add_upcaster checks them (together: no overlap, no cycle). */
    const es_upcaster_t *const *upcasters;
} es_types_def;

/* What a .so exports under the name ES_TYPES_ENTRY. */
typedef const es_types_def *es_types_entry_cb(void);

/* Defines the exported entry function of a types module returning &def. */
#define ES_TYPES_EXPORT(def)                                                                       \
    ES_EXPORT const es_types_def *es_types_entry(void);                                            \
    ES_EXPORT const es_types_def *es_types_entry(void) {                                           \
        return &(def);                                                                             \
    }

typedef struct es_types_module es_types_module_t;

/* Loads a types module by path (contains '/' or ends in ".so", loaded as given) or by name,
 * searched where projector modules are (projector.path, then beside the program). A wrong ABI,
 * a missing symbol or a bad definition is ES_EINVAL naming the file. Caller frees with
 * es_types_unload (which invalidates the definition). */
ES_API es_err es_types_load(const es_config_t *cfg, const char *name_or_path,
                            es_types_module_t **out, es_error_t *err);
/* The module's definition (borrowed, valid until es_types_unload), in this eskit's layout
 * whatever ABI the module was built with (an ABI 1 module's upcasters are NULL). */
ES_API const es_types_def *es_types_module_def(const es_types_module_t *mod);
/* The file the module was loaded from. */
ES_API const char *es_types_module_path(const es_types_module_t *mod);
/* Unloads the module (NULL is fine): its definition and descriptors are invalid after. */
ES_API void es_types_unload(es_types_module_t *mod);

/* Checks a definition (ABI, name, descriptors, each aggregate as es_engine_register does);
 * origin names it in the message. */
ES_API es_err es_types_check(const es_types_def *def, const char *origin, es_error_t *err);
/* The message type called full_name ("orders.v1.OrderPlaced") among def's aggregates' events,
 * commands and states and its messages, or NULL. */
ES_API const ProtobufCMessageDescriptor *es_types_find_message(const es_types_def *def,
                                                               const char *full_name);
/* The i-th message type def knows (each aggregate's state, events and commands, then the
 * messages), for walking them all (esctl schemas check); NULL past the last. A type may come
 * more than once. */
ES_API const ProtobufCMessageDescriptor *es_types_message_at(const es_types_def *def, size_t i);
/* The aggregate definition of type ("orders.order"), or NULL. */
ES_API const es_aggregate_def *es_types_find_aggregate(const es_types_def *def, const char *type);

#ifdef __cplusplus
}
#endif
#endif
