/* Kafka figures: the command path on librdkafka's mock cluster beside raw librdkafka. */
#ifndef ESKIT_BENCH_KAFKA_H
#define ESKIT_BENCH_KAFKA_H

#include <stddef.h>

#include "util.h"

typedef struct kafka_figs {
    size_t events;         /* events appended through es_execute_batch */
    size_t mean_bytes;     /* mean envelope size */
    double es_per_s;       /* es_execute_batch over Kafka, events/s */
    double raw_per_s;      /* raw idempotent acks=all produce of as many same-size records */
    double pipeline_per_s; /* raw librdkafka request/reply over the same hops, events/s */
    double local_per_s;    /* the same commands on an embedded engine set up as the state store */
    bench_lat_t latency;   /* es_execute of one command, command to reply */
    double calls_per_s;    /* those es_execute calls, one after another */
    double threaded_calls_per_s; /* the same calls from 8 threads sharing the engine */
    bench_lat_t raw_latency;     /* one acknowledged produce of the same size */
    bench_lat_t rr_latency;      /* one command's round trip through the raw pipeline */
    size_t lat_calls;            /* single calls measured on each side of those two */
} kafka_figs_t;

/* Runs n PlaceOrder commands through a processor on a 3-broker mock cluster. 0 or -1. */
int bench_kafka(const char *dir, size_t n, kafka_figs_t *out);

/* es_execute_batch of n PlaceOrders over Kafka with metrics on beside the same with
 * metrics.enabled = false on the processor's and the caller's configs. */
typedef struct kafka_metrics {
    size_t events;   /* events appended in one run */
    bench_alt_t alt; /* events/s, metrics on beside off */
} kafka_metrics_t;

/* pairs runs each side, alternating (bench_alternate). Each side has a mock cluster, processor
 * and caller of its own, set up (and warmed up) once before the first run, so a run pays for no
 * group join; the side not measured idles meanwhile. 0 or -1. */
int bench_kafka_metrics(const char *dir, size_t n, size_t pairs, kafka_metrics_t *out);

#endif
