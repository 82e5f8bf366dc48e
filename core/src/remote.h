/*
 * The Kafka backend's command executor (backends.h): commands produced to "<type>.commands",
 * results read from "<type>.replies" (remote.c). Handles are made on first use.
 */
#ifndef ESKIT_REMOTE_H
#define ESKIT_REMOTE_H

#include "backends.h"

es_err es_remote_executor_new(const es_config_t *cfg, es_executor **out, es_error_t *err);

#endif
