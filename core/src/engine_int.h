/* Internal side of es_engine: what the Kafka command processor and caller build on. */
#ifndef ESKIT_ENGINE_INTERNAL_H
#define ESKIT_ENGINE_INTERNAL_H

#include "log/log.h"
#include "runloop.h"

#include <signal.h>

/* Called once per batch after every command ran and its events were appended, before the
 * local commit, inside the transaction (log is the engine's). An error rolls the batch back. */
typedef es_err es_engine_hook(void *opaque, es_log_t *log, const es_command_t *cmds,
                              const es_result_t *results, size_t n, es_error_t *err);

/* es_execute_batch on the engine's own log (embedded), with hook run before the commit. */
es_err es_engine_execute_hooked(es_engine_t *engine, const es_command_t *cmds, size_t n,
                                es_result_t *results, es_engine_hook *hook, void *opaque,
                                es_error_t *err);

/* The engine's registrations: returns how many there are and, when i is below that, fills
 * def and opaque of the i-th. */
size_t es_engine_registration(const es_engine_t *engine, size_t i, const es_aggregate_def **def,
                              void **opaque);

/* es_engine_new for a command processor's local engine on its state store: it records no
 * schemas (the processor's engine registered its types in the log's catalogue) and takes their
 * versions from that engine with es_engine_copy_schema_versions, once its types are
 * registered. */
es_err es_engine_new_local(const es_config_t *cfg, es_engine_t **out, es_error_t *err);
es_err es_engine_copy_schema_versions(es_engine_t *dst, const es_engine_t *src, es_error_t *err);

/* es_execute_batch that gives up its waits on Kafka (delivery, replies, metadata) soon after
 * stop is set (stop may be NULL), failing with ES_ERETRY: what a run loop's stop
 * (es_saga_stop) uses so that a command in flight does not hold it for execute.timeout.ms.
 * The embedded engine does not wait on anything that long and ignores stop. */
es_err es_execute_batch_until(es_engine_t *engine, const es_command_t *cmds, size_t n,
                              es_result_t *results, const es_stop_t *stop, es_error_t *err);

#endif
