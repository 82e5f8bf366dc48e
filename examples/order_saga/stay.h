/*
 * order_saga --stay: after the story, the demo keeps its projectors (embedded: and its saga
 * coordinator) running on the log until SIGTERM or SIGINT, so that a monitoring system can
 * watch a live service: with --metrics HOST:PORT (config key metrics.listen) it serves
 * /metrics and /healthz meanwhile. Events appended by others meanwhile are projected; one the
 * projectors cannot apply is parked and reported on stderr.
 */
#ifndef ESKIT_DEMO_STAY_H
#define ESKIT_DEMO_STAY_H

#include <eskit/eskit.h>
#include <stdbool.h>

/* Runs until a stop signal; returns the exit status (0 stopped, 1 error). engine is the
 * story's (embedded: the coordinator sends its commands through it). */
int demo_stay(const es_config_t *cfg, es_engine_t *engine, bool kafka);

#endif
