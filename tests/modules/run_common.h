/* What the test processes (run_projector, run_processor, run_saga) share. */
#ifndef ESKIT_RUN_COMMON_H
#define ESKIT_RUN_COMMON_H

#include <eskit/eskit.h>

/* Applies a --set argument "key=value" to cfg. */
es_err run_set_pair(es_config_t *cfg, const char *pair, es_error_t *err);

/* A config log callback; opaque is the program's name, e.g. "run_saga". It prints the library's
 * errors and its own warnings, each line prefixed with the name and process id; librdkafka's
 * warnings (the mock is an old broker to it, and it retries what fails) and everything else
 * only when <NAME>_VERBOSE (the name in capitals) is set. */
void run_log_line(int level, const char *msg, void *opaque);

#endif
