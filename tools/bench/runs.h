/*
 * The eskit side of each figure: the embedded store and engine with their
 * default durability (WAL, synchronous=FULL) on a fresh file. Every run hands
 * back the envelope bytes it wrote, so its raw baseline inserts the same bytes.
 */
#ifndef ESKIT_BENCH_RUNS_H
#define ESKIT_BENCH_RUNS_H

#include <eskit/eskit.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blobs.h"

typedef struct run_shape {
    size_t n;           /* events (append) or commands (execute) in total */
    size_t per_call;    /* events per es_store_append, commands per es_execute_batch */
    size_t n_streams;   /* aggregates the calls are spread over at random */
    size_t payload_len; /* es_store_append only */
    bool metrics_off;   /* metrics.enabled = false on the config (default: on, as a service) */
} run_shape_t;

/* es_store_append of shape.per_call events per call; *ev_per_s is the timed rate. */
int run_store_append(const char *path, const run_shape_t *shape, blobs_t *written,
                     double *ev_per_s);

/* es_execute_batch of inventory.item Restock commands. */
int run_execute_batch(const char *path, const run_shape_t *shape, blobs_t *written,
                      double *ev_per_s);

/* One es_execute per call, for latency. */
typedef struct run_lat {
    es_engine_t *engine;
    char **ids;
    size_t n_ids;
    uint64_t rng;
} run_lat_t;

int run_lat_open(const char *path, size_t n_aggregates, run_lat_t *out);
/* Executes one Restock; *ns is the time es_execute took. The appended events'
 * envelopes replace the contents of *written. */
int run_lat_one(run_lat_t *l, int64_t *ns, blobs_t *written);
void run_lat_close(run_lat_t *l);

#endif
