/* The backend factory (backends.h): the backends by name, and the one place that asks. */
#include "backends.h"

#include "catalogue.h"
#include "remote.h"

#include <string.h>

static const es_backend embedded = {
    .version = ES_BACKEND_VERSION,
    .name = "embedded",
    .open = es_log_sqlite_open_flags,
    .new_executor = NULL,
    .accept_end = es_log_sqlite_accept_end,
    .open_catalogue = es_catalogue_sqlite_open,
    .no_store = NULL,
    .no_all = NULL,
    .local_file = 1,
    .partitioned = 0,
};

static const es_backend kafka = {
    .version = ES_BACKEND_VERSION,
    .name = "kafka",
    .open = es_log_kafka_open,
    .new_executor = es_remote_executor_new,
    .accept_end = NULL,
    .open_catalogue = es_catalogue_kafka_open,
    .no_store = "on the Kafka backend, events are written by the command processor "
                "(es_processor_t): use es_execute, which sends the command to it",
    .no_all = "the Kafka backend cannot run commands all-or-nothing: each goes to the processor "
              "owning its aggregate's partition of <type>.commands, different partitions and "
              "aggregate types have different owners, and none can roll back another's commit; "
              "nothing was sent. Run a process over several aggregates as a saga (es_saga_def, "
              "<eskit/saga.h>), or use es_execute_batch, which is per command",
    .local_file = 0,
    .partitioned = 1,
};

static const es_backend *const backends[] = {&embedded, &kafka};

static const es_backend *find(const char *name) {
    for (size_t i = 0; name && i < sizeof backends / sizeof *backends; i++)
        if (!strcmp(backends[i]->name, name))
            return backends[i];
    return NULL;
}

int es_backend_known(const char *name) {
    return find(name) != NULL;
}

/* The backend the config selects; ES_EINVAL naming the known ones when it is none (a config
 * built without es_config_set's check). */
static es_err backend_get(const es_config_t *cfg, const es_backend **out, es_error_t *err) {
    const char *name = es_config_get(cfg, "backend");
    *out = find(name);
    if (!*out)
        return es_fail(err, ES_EINVAL, "backend '%s' is not known; use embedded or kafka", name);
    return ES_OK;
}

const es_backend *es_backend_of(const es_config_t *cfg) {
    const es_backend *b = find(es_config_get(cfg, "backend"));
    return b ? b : &embedded;
}

es_err es_log_open_flags(const es_config_t *cfg, unsigned flags, es_log_t **out, es_error_t *err) {
    const es_backend *b = NULL;
    *out = NULL;
    es_err e = backend_get(cfg, &b, err);
    if (e == ES_OK)
        e = b->open(cfg, flags, out, err);
    if (e == ES_OK)
        (*out)->backend = b;
    return e;
}

es_err es_log_open(const es_config_t *cfg, es_log_t **out, es_error_t *err) {
    return es_log_open_flags(cfg, 0, out, err);
}

es_err es_backend_info(const es_config_t *cfg, es_backend_info_t *out, es_error_t *err) {
    const es_backend *b = NULL;
    if (!out)
        return es_fail(err, ES_EINVAL, "es_backend_info: out is required");
    memset(out, 0, sizeof *out);
    es_err e = backend_get(cfg, &b, err);
    if (e == ES_OK)
        *out = (es_backend_info_t){b->name, b->local_file, b->partitioned};
    return e;
}
