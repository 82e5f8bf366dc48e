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

/* The demo's projectors, in the order demo_stay takes their runners. */
#define DEMO_N_PROJECTORS 2
extern const es_projector_def *const demo_projectors[DEMO_N_PROJECTORS];

/* Runs until a stop signal; returns the exit status (0 stopped, 1 error). engine is the
 * story's (embedded: the coordinator sends its commands through it); runners are the story's
 * runners of demo_projectors, which it takes and destroys, so their counters go on. */
int demo_stay(const es_config_t *cfg, es_engine_t *engine, bool kafka,
              es_runner_t *runners[DEMO_N_PROJECTORS]);

#endif
