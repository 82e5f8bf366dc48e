/*
 * eskit: event sourcing and CQRS for C services. One include for the whole API.
 *
 * Threads: nothing is safe to use from several threads at once unless its comment says so.
 * What says so: an es_store_t (calls serialize on it); es_execute, es_execute_batch and
 * es_execute_all on one engine (after its registrations); the stop functions (es_processor_stop,
 * es_runner_stop, es_saga_stop), which are also safe from a signal handler;
 * es_processor_stats. Callbacks run on the thread that calls the function that runs them,
 * except the log callback (config.h).
 */
#ifndef ESKIT_H
#define ESKIT_H

#include <eskit/api.h>
#include <eskit/error.h>
#include <eskit/config.h>
#include <eskit/event.h>
#include <eskit/store.h>
#include <eskit/engine.h>
#include <eskit/processor.h>
#include <eskit/projector.h>
#include <eskit/runner.h>
#include <eskit/saga.h>
#include <eskit/schema.h>
#include <eskit/topics.h>
#include <eskit/trace.h>
#include <eskit/testing.h>
#include <eskit/types.h>
#include <eskit/upcast.h>
#include <eskit/metrics.h>

/* The version of these headers; es_version() tells the library's. CMakeLists.txt's project
 * version must equal them (configuring checks). */
#define ESKIT_VERSION_MAJOR 0
#define ESKIT_VERSION_MINOR 4
#define ESKIT_VERSION_PATCH 0
#define ESKIT_VERSION_STRING "0.4.0"
/* MAJOR * 10000 + MINOR * 100 + PATCH, for #if. */
#define ESKIT_VERSION_NUMBER                                                                       \
    (ESKIT_VERSION_MAJOR * 10000 + ESKIT_VERSION_MINOR * 100 + ESKIT_VERSION_PATCH)

#ifdef __cplusplus
extern "C" {
#endif

/* The version of the library the program runs with (which may be newer than the headers it
 * was built with): "MAJOR.MINOR.PATCH", and each part when the pointer is not NULL. */
ES_API const char *es_version(int *major, int *minor, int *patch);

#ifdef __cplusplus
}
#endif

#endif
