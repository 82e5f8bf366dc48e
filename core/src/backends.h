/*
 * The backend factory (backends.c): the one place that knows the backends by name. A backend is
 * a descriptor of what it is and does; each role it plays comes from its log (log/log.h: the
 * event store and log reader method tables) or from its own constructor (the command executor).
 * Everything else asks the descriptor, never the config's backend name.
 *
 *                 embedded                         kafka
 *   event store   log_sqlite.c                     none (NULL): writes go to the executor
 *   log reader    log_sqlite.c                     log_kafka.c
 *   executor      local: the engine on the store   remote.c: commands to the processor
 */
#ifndef ESKIT_BACKENDS_H
#define ESKIT_BACKENDS_H

#include "log/log.h"
#include "runloop.h"

typedef struct es_catalogue_store es_catalogue_store;

/* The command executor role: how es_execute_batch runs commands when not on the engine's own
 * store. */
typedef struct es_executor es_executor;
typedef struct es_executor_ops {
    es_err (*execute)(es_executor *x, const es_command_t *cmds, size_t n, es_result_t *results,
                      const es_stop_t *stop, es_error_t *err);
    void (*destroy)(es_executor *x);
} es_executor_ops;
struct es_executor {
    const es_executor_ops *ops;
};

#define ES_BACKEND_VERSION 1
struct es_backend {
    int version; /* ES_BACKEND_VERSION */
    const char *name;
    /* Opens the backend's log (flags: ES_LOG_*). */
    es_err (*open)(const es_config_t *cfg, unsigned flags, es_log_t **out, es_error_t *err);
    /* The remote command executor; NULL: commands run locally, on the engine over the log's
     * event store. */
    es_err (*new_executor)(const es_config_t *cfg, es_executor **out, es_error_t *err);
    /* Checks the log's integrity for es_store_verify. */
    es_err (*verify)(const es_config_t *cfg, const char *const *types, es_verify_cb *cb,
                     void *opaque, es_verify_summary_t *sum, es_error_t *err);
    /* Rewrites a head file to the log's end (es_store_accept_end); NULL: keeps none. */
    es_err (*accept_end)(const es_config_t *cfg, int64_t *before, int64_t *after, es_error_t *err);
    /* Opens the log's schema catalogue (catalogue.h); readonly: lists only, creates nothing. */
    es_err (*open_catalogue)(const es_config_t *cfg, int readonly, es_catalogue_store **out,
                             es_error_t *err);
    /* Why the event store's writes are refused, when the log has no store. */
    const char *no_store;
    /* Why es_execute_all is refused, when the executor cannot run a batch all-or-nothing. */
    const char *no_all;
    unsigned local_file : 1;  /* the log is the file the config key db names */
    unsigned partitioned : 1; /* topics of partitions, no global order: the runner's log-order
                                 rule is on by default, records can repeat */
};

/* The backend the config selects (es_config_set checked the key backend), never NULL. */
const es_backend *es_backend_of(const es_config_t *cfg);
/* 1 when name is a backend's (config.c's check of the key backend). */
int es_backend_known(const char *name);

#endif
