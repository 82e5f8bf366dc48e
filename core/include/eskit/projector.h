/*
 * Projector modules: the read side. A projector turns events of one or more
 * topics ("orders.order.events") into rows of an SQLite read model. It is a
 * const es_projector_def, linked statically or exported from a .so through
 * one function, es_projector_entry, returning it (like sqlite3_module: the
 * first field is the ABI version and the loader refuses a mismatch).
 *
 * A module only touches its own tables; the runner owns every es_* table of
 * the read-model database (checkpoints, DLQ, projector registry) and the
 * transaction each apply runs in.
 */
#ifndef ESKIT_PROJECTOR_H
#define ESKIT_PROJECTOR_H

#include <sqlite3.h>
#include <protobuf-c/protobuf-c.h>
#include <eskit/config.h>
#include <eskit/event.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ES_PROJECTOR_ABI 2
#define ES_PROJECTOR_ENTRY "es_projector_entry"

typedef struct es_projector_ctx es_projector_ctx_t;

/* One event type a module handles: the payload's message descriptor and its handler, which
 * gets the decoded message (freed after it returns). */
typedef es_err es_event_handler_cb(es_projector_ctx_t *ctx, const es_event_t *ev,
                                   const ProtobufCMessage *msg, es_error_t *err);
typedef struct es_event_handler {
    const ProtobufCMessageDescriptor *descriptor;
    es_event_handler_cb *fn;
} es_event_handler_t;

typedef struct es_projector_def {
    int abi_version;           /* ES_PROJECTOR_ABI */
    const char *name;          /* [a-z0-9_-], 1..64 bytes; names the read model */
    int schema_version;        /* >= 1; raising it rebuilds the read model from the log */
    const char *const *topics; /* NULL-terminated, e.g. {"orders.order.events", NULL} */
    /* Creates the module's tables (from_version 0) or upgrades them, inside a transaction.
     * Called on the live database on first start and on a fresh one for rebuilds. */
    es_err (*migrate)(sqlite3 *db, int from_version, es_error_t *err);
    /* Applies one event inside the runner's transaction (under a savepoint); NULL with
     * handlers (ABI 2), which the runner then dispatches to. Return ES_OK;
     * ES_ERETRY for a transient failure (retried with backoff, then parked); ES_EUNKNOWN_TYPE
     * for an event type the module does not know; any other code parks the event. */
    es_err (*apply)(es_projector_ctx_t *ctx, const es_event_t *ev, es_error_t *err);
    /* Optional: per-runner state, made once the tables exist and freed by fini. */
    es_err (*init)(sqlite3 *db, void **state, es_error_t *err);
    void (*fini)(void *state);
    /* ABI 2 */
    /* The event types the module handles, and their handlers: with apply NULL, the
     * runner applies each event with es_ctx_dispatch over them. Either way the runner checks
     * their types against the log's schema catalogue at start (docs/schemas.md): a module that
     * would misread the log is refused, naming the type and the rule. */
    const es_event_handler_t *handlers;
    size_t n_handlers;
} es_projector_def;

/* What a .so exports under the name ES_PROJECTOR_ENTRY. */
typedef const es_projector_def *es_projector_entry_cb(void);

/* Defines a module's entry point returning &def, exported with ES_EXPORT. Build the module
 * with hidden visibility (-fvisibility=hidden; CMake C_VISIBILITY_PRESET hidden) so that the
 * entry is all it exports: its definition and helpers then cannot bind to a program's symbols
 * of the same names. */
#define ES_PROJECTOR_EXPORT(def)                                                                   \
    ES_EXPORT const es_projector_def *es_projector_entry(void);                                    \
    ES_EXPORT const es_projector_def *es_projector_entry(void) {                                   \
        return &(def);                                                                             \
    }

/* The read-model connection the event is applied on (inside the runner's transaction). */
ES_API sqlite3 *es_ctx_db(es_projector_ctx_t *ctx);
/* The state init made, or NULL. */
ES_API void *es_ctx_state(es_projector_ctx_t *ctx);
/* A prepared statement for sql, prepared once per runner and reset for reuse; sql must be a
 * string that lives as long as the runner (a literal). NULL on error, with err filled. */
ES_API sqlite3_stmt *es_ctx_stmt(es_projector_ctx_t *ctx, const char *sql, es_error_t *err);
/* Steps stmt to completion (SQLITE_DONE), then resets it; fills err naming the statement. */
ES_API es_err es_ctx_exec(es_projector_ctx_t *ctx, sqlite3_stmt *stmt, es_error_t *err);

/* An apply in one call: finds ev's type among the n handlers, decodes the payload and calls
 * the handler. ES_EUNKNOWN_TYPE for a type none takes and ES_EDECODE for a malformed payload,
 * both naming the event. */
ES_API es_err es_ctx_dispatch(es_projector_ctx_t *ctx, const es_event_t *ev,
                              const es_event_handler_t *handlers, size_t n, es_error_t *err);

typedef struct es_projector_module es_projector_module_t;

/* Loads a projector module by path (contains '/' or ends in ".so") or by name, searching the
 * directories of the config key projector.path, then the directories installed beside esctl.
 * A wrong ABI, a missing symbol or a bad definition is ES_EINVAL naming the file.
 * Caller frees with es_projector_unload (which invalidates the definition). */
ES_API es_err es_projector_load(const es_config_t *cfg, const char *name_or_path,
                                es_projector_module_t **out, es_error_t *err);
/* The module's definition (borrowed; valid until es_projector_unload). */
ES_API const es_projector_def *es_projector_module_def(const es_projector_module_t *mod);
/* The file the module was loaded from. */
ES_API const char *es_projector_module_path(const es_projector_module_t *mod);
/* Unloads the module (NULL is fine): its definition is invalid after. */
ES_API void es_projector_unload(es_projector_module_t *mod);

/* Checks a definition (ABI, name, schema version, topics, callbacks); origin names it. */
ES_API es_err es_projector_check(const es_projector_def *def, const char *origin, es_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
