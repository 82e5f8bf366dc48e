/* librdkafka handles for tests that talk to the mock cluster as an independent client would:
 * quiet logs, a failed setting or handle fails the test. */
#ifndef ESKIT_TEST_KAFKAUTIL_H
#define ESKIT_TEST_KAFKAUTIL_H

#include <eskit/eskit.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>

/* A log callback that drops librdkafka's lines. */
void tu_kafka_quiet(const rd_kafka_t *rk, int level, const char *fac, const char *buf);
/* A new conf that logs nothing. */
rd_kafka_conf_t *tu_kafka_conf(void);
/* Sets k = v on c, or fails the test naming both. */
void tu_kafka_set(rd_kafka_conf_t *c, const char *k, const char *v);
/* A handle of type made from c (which it takes), or fails the test. */
rd_kafka_t *tu_kafka_new(rd_kafka_type_t type, rd_kafka_conf_t *c);
/* The conf of an idempotent producer to bootstraps, partitioned as eskit's producers are
 * (murmur2_random), sending at once (linger.ms=1). */
rd_kafka_conf_t *tu_kafka_producer_conf(const char *bootstraps);

/* A mock cluster of one broker on mock_rk with the demo's topics (events, snapshots, commands
 * and replies of orders.order, payments.payment and inventory.item), parts partitions each. */
rd_kafka_mock_cluster_t *tu_mock_demo(rd_kafka_t *mock_rk, int parts);

/* A command processor polling on a thread of its own (es_processor_run). */
typedef struct tu_proc {
    es_engine_t *engine;
    es_processor_t *p;
    pthread_t thread;
    es_err rc; /* what es_processor_run returned, once joined */
    es_error_t err;
} tu_proc;
/* A processor on cfg and engine (taken), started. */
tu_proc *tu_proc_start(const es_config_t *cfg, es_engine_t *engine);
/* Waits for the processor's thread to end: by itself, or after es_processor_stop. */
void tu_proc_join(tu_proc *pr);
/* Frees a joined processor and its engine. */
void tu_proc_free(tu_proc *pr);
/* Stops it, joins, checks it ended with ES_OK, frees. */
void tu_proc_stop(tu_proc *pr);

#endif
