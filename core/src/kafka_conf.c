/*
 * The librdkafka configuration every Kafka handle of the library starts
 * from: our safe defaults, then the kafka.* keys of the config, then the
 * settings correctness needs, which no key overrides. And the headers every
 * event record carries, whoever produces it.
 */
#include "engine_int.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <string.h>

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    const es_config_t *const *cfg = rd_kafka_opaque(rk);
    es_logf(*cfg, level, "librdkafka %s: %s: %s", rd_kafka_name(rk), fac, buf);
}

static void error_cb(rd_kafka_t *rk, int e, const char *reason, void *opaque) {
    const es_config_t *const *cfg = opaque;
    es_logf(*cfg, ES_LOG_WARNING, "librdkafka %s: %s: %s", rd_kafka_name(rk),
            rd_kafka_err2name((rd_kafka_resp_err_t)e), reason);
}

typedef struct conf_ctx {
    rd_kafka_conf_t *conf;
    const char *bad_key;
    int transactional;
    char errstr[256];
} conf_ctx;

static void conf_set(conf_ctx *c, const char *key, const char *value) {
    if (!c->bad_key &&
        rd_kafka_conf_set(c->conf, key, value, c->errstr, sizeof c->errstr) != RD_KAFKA_CONF_OK)
        c->bad_key = key;
}

static void pass_through(const char *key, const char *value, void *opaque) {
    conf_ctx *c = opaque;
    if (strncmp(key, "kafka.", 6) || (!c->transactional && !strcmp(key, "kafka.transactional.id")))
        return;
    conf_set(c, key + 6, value);
    if (c->bad_key == key + 6)
        c->bad_key = key;
}

es_err es_kafka_conf(const es_config_t *cfg, const char *group, int transactional,
                     int fetch_wait_ms, void *opaque, rd_kafka_conf_t **out, es_error_t *err) {
    conf_ctx c = {rd_kafka_conf_new(), NULL, transactional, ""};
    *out = NULL;
    if (!c.conf)
        return es_fail(err, ES_ENOMEM, "out of memory making a Kafka configuration");
    conf_set(&c, "bootstrap.servers", es_config_get(cfg, "brokers"));
    conf_set(&c, "client.id", "eskit");
    if (group) {
        conf_set(&c, "enable.partition.eof", "false");
        conf_set(&c, "allow.auto.create.topics", "false");
        char wait[16];
        snprintf(wait, sizeof wait, "%d", fetch_wait_ms);
        conf_set(&c, "fetch.wait.max.ms", wait);
    } else {
        conf_set(&c, "enable.idempotence", "true");
        conf_set(&c, "acks", "all");
        conf_set(&c, "partitioner", "murmur2_random");
    }
    es_config_foreach(cfg, pass_through, &c);
    if (group) {
        conf_set(&c, "group.id", group);
        conf_set(&c, "enable.auto.commit", "false");
        conf_set(&c, "enable.auto.offset.store", "false");
    }
    if (c.bad_key) {
        rd_kafka_conf_destroy(c.conf);
        return es_fail(err, ES_EINVAL, "Kafka setting %s: %s", c.bad_key, c.errstr);
    }
    rd_kafka_conf_set_opaque(c.conf, opaque);
    rd_kafka_conf_set_log_cb(c.conf, log_cb);
    rd_kafka_conf_set_error_cb(c.conf, error_cb);
    *out = c.conf;
    return ES_OK;
}

rd_kafka_headers_t *es_kafka_event_headers(const es_event_t *ev) {
    char version[24];
    snprintf(version, sizeof version, "%llu", (unsigned long long)ev->version);
    rd_kafka_headers_t *h = rd_kafka_headers_new(4);
    rd_kafka_header_add(h, "es-event-type", -1, ev->event_type, -1);
    rd_kafka_header_add(h, "es-version", -1, version, -1);
    rd_kafka_header_add(h, "es-event-id", -1, ev->event_id, -1);
    rd_kafka_header_add(h, "es-correlation-id", -1, ev->correlation_id ? ev->correlation_id : "",
                        -1);
    return h;
}
