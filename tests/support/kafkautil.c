#include "kafkautil.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

void tu_kafka_quiet(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk, (void)level, (void)fac, (void)buf;
}

rd_kafka_conf_t *tu_kafka_conf(void) {
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(c, tu_kafka_quiet);
    return c;
}

void tu_kafka_set(rd_kafka_conf_t *c, const char *k, const char *v) {
    char errstr[256];
    cr_assert_eq(rd_kafka_conf_set(c, k, v, errstr, sizeof errstr), RD_KAFKA_CONF_OK, "%s: %s", k,
                 errstr);
}

rd_kafka_t *tu_kafka_new(rd_kafka_type_t type, rd_kafka_conf_t *c) {
    char errstr[256];
    rd_kafka_t *rk = rd_kafka_new(type, c, errstr, sizeof errstr);
    cr_assert(rk, "%s", errstr);
    return rk;
}

rd_kafka_conf_t *tu_kafka_producer_conf(const char *bootstraps) {
    rd_kafka_conf_t *c = tu_kafka_conf();
    tu_kafka_set(c, "bootstrap.servers", bootstraps);
    tu_kafka_set(c, "enable.idempotence", "true");
    tu_kafka_set(c, "acks", "all");
    tu_kafka_set(c, "partitioner", "murmur2_random");
    tu_kafka_set(c, "linger.ms", "1");
    return c;
}

rd_kafka_mock_cluster_t *tu_mock_demo(rd_kafka_t *mock_rk, int parts) {
    rd_kafka_mock_cluster_t *mock = rd_kafka_mock_cluster_new(mock_rk, 1);
    cr_assert(mock);
    cr_assert_eq(rd_kafka_mock_topic_create(mock, "eskit.schemas", 1, 1), 0);
    static const char *const types[] = {"orders.order", "payments.payment", "inventory.item"};
    static const char *const kinds[] = {"events", "snapshots", "commands", "replies"};
    for (size_t t = 0; t < 3; t++)
        for (size_t k = 0; k < 4; k++) {
            char topic[128];
            snprintf(topic, sizeof topic, "%s.%s", types[t], kinds[k]);
            cr_assert_eq(rd_kafka_mock_topic_create(mock, topic, parts, 1), 0);
        }
    return mock;
}

static void *run_processor(void *opaque) {
    tu_proc *pr = opaque;
    pr->rc = es_processor_run(pr->p, &pr->err);
    return NULL;
}

tu_proc *tu_proc_start(const es_config_t *cfg, es_engine_t *engine) {
    tu_proc *pr = calloc(1, sizeof *pr);
    es_error_t err = {0};
    cr_assert(pr);
    pr->engine = engine;
    cr_assert_eq(es_processor_new(cfg, pr->engine, &pr->p, &err), ES_OK, "%s", err.message);
    cr_assert_eq(pthread_create(&pr->thread, NULL, run_processor, pr), 0);
    return pr;
}

void tu_proc_join(tu_proc *pr) {
    cr_assert_eq(pthread_join(pr->thread, NULL), 0);
}

void tu_proc_free(tu_proc *pr) {
    es_processor_destroy(pr->p);
    es_engine_destroy(pr->engine);
    free(pr);
}

void tu_proc_stop(tu_proc *pr) {
    es_processor_stop(pr->p);
    tu_proc_join(pr);
    cr_assert_eq(pr->rc, ES_OK, "%s", pr->err.message);
    tu_proc_free(pr);
}
