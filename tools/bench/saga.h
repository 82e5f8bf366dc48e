/* Saga figures: orders.fulfilment sagas completed per second on the embedded backend, beside
 * the same commands executed directly. */
#ifndef ESKIT_BENCH_SAGA_H
#define ESKIT_BENCH_SAGA_H

#include <stddef.h>

typedef struct saga_figs {
    size_t sagas;        /* orders placed, each one saga that completes */
    size_t commands;     /* commands each side executed (reserves, authorizations, confirms) */
    size_t batch;        /* commands per es_execute_batch on the direct side */
    double saga_per_s;   /* sagas completed per second, one coordinator polling until idle */
    double direct_per_s; /* the same commands executed directly, orders per second */
    size_t transitions;  /* saga transitions the coordinator published */
    double saga_wall_s;  /* seconds of each run; the saga's until every transition is published */
    double idle_s;       /* seconds until no saga was active and a poll did nothing */
    long long backlog;   /* transitions not yet published at that point */
    double direct_wall_s;
} saga_figs_t;

/* Places n orders that all succeed on two fresh stores in dir, then runs the saga on one and
 * the same commands directly on the other. 0 or -1. */
int bench_saga(const char *dir, size_t n, saga_figs_t *out);

/* The same on librdkafka's mock cluster: n sagas through a coordinator whose relay executes
 * over Kafka (a processor thread owns the partitions) beside the same commands through
 * es_execute_batch over Kafka, step by step. */
typedef struct saga_kafka_figs {
    size_t sagas;
    double saga_per_s, direct_per_s; /* sagas (orders) per second */
    double saga_wall_s, direct_wall_s;
} saga_kafka_figs_t;

int bench_saga_kafka(const char *dir, size_t n, saga_kafka_figs_t *out);

#endif
