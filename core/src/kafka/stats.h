/*
 * A Kafka handle's gauges from librdkafka's statistics (docs/observability.md, "Kafka"): the
 * mean round-trip time to each broker, the producer's queue, and consumer lag as librdkafka
 * reports it.
 *
 * librdkafka puts a statistics document (its STATISTICS.md) on the handle's queue every
 * statistics.interval.ms; the stats_cb, on the thread that polls the handle, parses the few
 * values into a fresh table and swaps it in under the stats' own mutex, and a scrape copies the
 * table out under the same mutex. Nothing on the produce or consume path takes it. Kept per
 * document: at most ES_KAFKA_STATS_MAX brokers and ES_KAFKA_STATS_MAX partitions (the first in
 * the document; a cluster has fewer); a document that does not parse is ignored and the last
 * values stay.
 *
 * Only handles whose owner polls them every few seconds get statistics: librdkafka 2.0.2 queues
 * one document per interval on the handle's queue, uncoalesced, and only a poll serves it, so an
 * idle handle nobody polls would pile them up (es_kafka_stats_open says which handles qualify).
 */
#ifndef ESKIT_KAFKA_STATS_H
#define ESKIT_KAFKA_STATS_H

#include "kafka/wire.h"

#include <stddef.h>

#define ES_KAFKA_STATS_MAX 256

typedef struct es_kafka_stats es_kafka_stats_t;

/* The stats of a handle about to be made with options o from conf: when cfg has metrics on,
 * metrics.kafka.interval.ms > 0, and o names the handle for metrics (o->stats_name, or a
 * consumer with a rebalance_cb: a subscribed group member, which librdkafka itself requires be
 * polled), sets statistics.interval.ms on conf (unless the config sets
 * kafka.statistics.interval.ms: that one is kept) and registers a metrics source; else *out
 * NULL. The caller sets the stats_cb (es_kafka_stats_parse) when *out is not NULL. */
es_err es_kafka_stats_open(const es_config_t *cfg, const es_kafka_opts_t *o, rd_kafka_conf_t *conf,
                           es_kafka_stats_t **out, es_error_t *err);
/* Stats named client, of a producer or not, registered with cfg's metrics; *out NULL with
 * metrics off. What es_kafka_stats_open makes, for the unit tests. */
es_err es_kafka_stats_new(const es_config_t *cfg, const char *client, int producer,
                          es_kafka_stats_t **out, es_error_t *err);
/* Reads one statistics document into st: 0, or -1 when it is not one (st keeps its values).
 * The stats_cb's work; st NULL is a no-op. */
int es_kafka_stats_parse(es_kafka_stats_t *st, const char *json, size_t len);
/* Leaves the metrics registry, after the scrape under way: first thing when the handle goes,
 * before librdkafka's last callbacks. NULL is fine. */
void es_kafka_stats_unregister(es_kafka_stats_t *st);
/* Frees st (unregistered first if it was not), once no stats_cb can run. NULL is fine. */
void es_kafka_stats_free(es_kafka_stats_t *st);

#endif
