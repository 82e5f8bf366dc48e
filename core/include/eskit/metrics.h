/*
 * Metrics and health of the eskit components of this process, in the Prometheus text format
 * 0.0.4 (docs/observability.md names every series).
 *
 * Each engine, processor, runner and saga coordinator created with metrics.enabled = true (the
 * default) counts its work with atomic increments and takes part in the process's registry while
 * it lives. es_metrics_write and es_metrics_health read that registry for a service that serves
 * HTTP itself; config key metrics.listen = HOST:PORT makes the library serve GET /metrics and
 * GET /healthz itself, from a thread of its own, while a component created with that config is
 * alive. All three are safe from any thread, during a component's destroy too.
 */
#ifndef ESKIT_METRICS_H
#define ESKIT_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <eskit/api.h>
#include <eskit/config.h>
#include <eskit/error.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The content type of the exposition, for a Content-Type header. */
#define ES_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Writes the exposition of every live component into buf (cap bytes, NUL-terminated). *len (may
 * be NULL) gets its length without the NUL. When cap is too small nothing is written (buf[0] is
 * NUL when cap > 0), *len gets the length needed, and the call returns ES_EINVAL saying so: call
 * again with a larger buffer (buf NULL with cap 0 only asks the length). */
ES_API es_err es_metrics_write(char *buf, size_t cap, size_t *len, es_error_t *err);

/* Whether every live component is healthy: a processor that has joined its consumer group and
 * restored every partition it owns, runners within health.max.lag records of their log's end.
 * buf (cap bytes, may be NULL with cap 0) gets "ok\n", or one line per reason it is not, cut at
 * cap. What /healthz answers with 200 or 503. */
ES_API bool es_metrics_health(char *buf, size_t cap);

/* The port the first metrics.listen server of the process listens on (what port 0 was given),
 * 0 when none runs. */
ES_API int es_metrics_port(void);

/* The series that can be read from cfg's files and log alone, no component running (what
 * `esctl metrics` prints): projectors' checkpoints, ends, lag and DLQ depth from the read model,
 * saga instances by state from the saga database, each events topic's records, bytes and growth
 * from the log, and eskit_build_info. A file cfg names that does not exist is left out; one that
 * is not what it should be, or a cluster that does not answer, fails the call. *out gets the
 * exposition, NUL-terminated, *len (may be NULL) its length; caller frees *out with es_free. */
ES_API es_err es_metrics_write_offline(const es_config_t *cfg, char **out, size_t *len,
                                       es_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
