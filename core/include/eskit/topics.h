/*
 * Kafka topics of the aggregate types a service registers: which topics, how
 * many partitions, which replication and retention (es_topics_plan), and
 * making a cluster match (es_topics_apply).
 *
 * Every aggregate type <type> gets five topics:
 *   <type>.events      the event log          delete, kept forever (retention.ms=-1)
 *   <type>.snapshots   latest state per id    compact
 *   <type>.commands    the Kafka write path   delete, 7 days
 *   <type>.replies     answers to es_execute  delete, 1 day
 *   <type>.events.dlq  poison records         delete, 14 days, 1 partition
 * The events topic gets max(ceil(events/s / topics.partition.throughput),
 * consumers, 1) partitions; snapshots, commands and replies get the same count,
 * because the single writer of a partition reads commands and writes events
 * and snapshots under the same key and partition number. The replication
 * factor is min(3, brokers).
 */
#ifndef ESKIT_TOPICS_H
#define ESKIT_TOPICS_H

#include <stddef.h>
#include <stdint.h>
#include <eskit/config.h>
#include <eskit/error.h>
#include <eskit/event.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ES_TOPIC_NAME_MAX 249 /* Kafka's limit on a topic name, in bytes */
#define ES_TOPIC_MAX_PARTITIONS 10000
/* The schema catalogue topic's min.compaction.lag.ms: a week, in which a version lost to a
 * race is repaired before compaction could drop the winner's record (docs/schemas.md). */
#define ES_TOPIC_SCHEMAS_COMPACTION_LAG_MS                                                         \
    604800000LL /* a plan needing more is refused as a likely typo */

/* What one aggregate type expects. 0 in a field means the config default
 * (topics.throughput, topics.consumers). */
typedef struct es_topic_load {
    const char *aggregate_type; /* e.g. "orders.order" */
    long long events_per_s;     /* expected events per second at peak */
    long long consumers;        /* instances of the largest consumer group reading the type */
} es_topic_load_t;

typedef enum es_topic_role {
    ES_TOPIC_EVENTS,
    ES_TOPIC_SNAPSHOTS,
    ES_TOPIC_COMMANDS,
    ES_TOPIC_REPLIES,
    ES_TOPIC_DLQ,
    ES_TOPIC_SCHEMAS, /* the log's schema catalogue (schema.topic), one per plan */
} es_topic_role;

/* Why a topic has its partition count (es_topic_spec_t.flags); a tie sets both rules. */
enum {
    ES_TOPIC_BY_THROUGHPUT = 1 << 0, /* ceil(events/s / per-partition events/s) */
    ES_TOPIC_BY_CONSUMERS = 1 << 1,  /* one partition per consumer */
    ES_TOPIC_BY_MINIMUM = 1 << 2,    /* neither rule asked for more than one */
    ES_TOPIC_SHARED = 1 << 3,        /* the events topic's count (co-partitioned) */
    ES_TOPIC_SINGLE = 1 << 4,        /* one partition is enough (dlq) */
};

/* One planned topic. Plain data, no pointers to free. */
typedef struct es_topic_spec {
    char name[ES_TOPIC_NAME_MAX + 1];
    char aggregate_type[ES_MAX_TYPE_LEN + 1];
    es_topic_role role;
    int partitions;
    unsigned flags;
    int replication_factor;
    int min_insync_replicas;
    const char *cleanup_policy; /* "delete" or "compact" (static string) */
    long long retention_ms;     /* -1: forever */
    long long events_per_s;     /* the load the count was computed from */
    long long consumers;
    /* Index in the plan of an earlier topic whose name equals this one once '.' and '_' are
     * treated alike (Kafka refuses the second, their metric names clash), or -1. */
    int collides_with;
} es_topic_spec_t;

/* ES_OK when name is a legal Kafka topic name: 1..249 bytes of [a-zA-Z0-9._-], not "." or "..". */
ES_API es_err es_topic_name_check(const char *name, es_error_t *err);
/* 1 when a and b are equal once '.' and '_' are treated alike: Kafka refuses to create the
 * second (their metric names would clash), else 0. */
ES_API int es_topic_names_collide(const char *a, const char *b);

/* "events", "snapshots", "commands", "replies", "dlq" or "schemas". */
ES_API const char *es_topic_role_name(es_topic_role role);

/* The topics of n aggregate types (n = 0: those of topics.aggregates) for the number of
 * brokers es_topics_broker_count finds. *out holds *n_out specs, five per type in the order
 * of es_topic_role, then the schema catalogue's topic (ES_TOPIC_SCHEMAS: compacted, one
 * partition, min.compaction.lag.ms ES_TOPIC_SCHEMAS_COMPACTION_LAG_MS); caller frees with
 * es_topics_free. A collision of names is a warning (collides_with, and a log line), not an error.
 */
ES_API es_err es_topics_plan(const es_config_t *cfg, const es_topic_load_t *loads, size_t n,
                             es_topic_spec_t **out, size_t *n_out, es_error_t *err);
/* es_topics_plan for a cluster of `brokers` brokers, without asking the cluster. */
ES_API es_err es_topics_plan_for(const es_config_t *cfg, int brokers, const es_topic_load_t *loads,
                                 size_t n, es_topic_spec_t **out, size_t *n_out, es_error_t *err);
/* Frees the specs es_topics_plan returned (NULL is fine). */
ES_API void es_topics_free(es_topic_spec_t *specs);

/* Storage a topic takes (es_topic_size): what its records are, given or measured from a log
 * (es_topic_measure). */
typedef struct es_topic_traffic {
    double records_per_day; /* mean records written a day */
    double record_bytes;    /* mean bytes of one record in one replica (key, value, headers) */
    long long records;      /* records measured; 0 when given rather than measured */
} es_topic_traffic_t;

typedef enum es_topic_size_kind {
    ES_TOPIC_SIZE_RETAINED,  /* delete, finite retention.ms: bytes_retained is what it holds */
    ES_TOPIC_SIZE_FOREVER,   /* delete, retention.ms -1: grows bytes_per_year every year */
    ES_TOPIC_SIZE_COMPACTED, /* compact: one record per live key, which time does not bound */
} es_topic_size_kind;

/* A topic's storage on the cluster: every figure is times the replication factor. */
typedef struct es_topic_size {
    es_topic_size_kind kind;
    double bytes_per_day;  /* written a day */
    double bytes_retained; /* RETAINED: records_per_day * retention in days * bytes; else -1 */
    double bytes_per_year; /* FOREVER: 365 days written; else -1 */
} es_topic_size_t;

/* The storage of the planned topic spec for traffic t. ES_EINVAL when t is negative or not
 * finite. */
ES_API es_err es_topic_size(const es_topic_spec_t *spec, const es_topic_traffic_t *t,
                            es_topic_size_t *out, es_error_t *err);
/* Records a day of a log whose `records` records span first_us..last_us (occurred_at or record
 * timestamps, microseconds), of which records_last_day are at or after now_us - 1 day: those,
 * when the log is older than a day; else its rate from first to last, (records - 1) / span
 * (records, when they all share one instant). */
ES_API double es_topic_rate_per_day(long long records, long long records_last_day, int64_t first_us,
                                    int64_t last_us, int64_t now_us);
/* The traffic of spec's topic in the log the config names, at now_us: embedded, the events of
 * its aggregate type in the store (their envelopes' sizes, their occurred_at), and ES_ENOTFOUND
 * for the other roles, which the embedded log does not keep; Kafka, the last
 * ES_TOPIC_SAMPLE_RECORDS records of each partition of the topic (key, value and headers
 * sizes, record timestamps). An empty or missing topic is no traffic (records 0), not an error.
 */
ES_API es_err es_topic_measure(const es_config_t *cfg, const es_topic_spec_t *spec, int64_t now_us,
                               es_topic_traffic_t *out, es_error_t *err);
#define ES_TOPIC_SAMPLE_RECORDS 10000

/* Brokers in the cluster `brokers` names, from its metadata when it answers within a few
 * seconds, else the number of entries in `brokers`; 1 when brokers is not set. */
ES_API int es_topics_broker_count(const es_config_t *cfg);

typedef enum es_topic_status {
    ES_TOPIC_OK,      /* exists as planned */
    ES_TOPIC_CREATED, /* did not exist; created */
    ES_TOPIC_DRIFT,   /* exists but differs; detail says how (nothing is changed) */
    ES_TOPIC_FAILED,  /* missing and could not be created, or could not be checked */
} es_topic_status;

/* Called once per spec by es_topics_apply, on the caller's thread; detail is a short
 * human-readable note ("partitions 3, planned 6") or "". */
typedef void es_topic_report_cb(const es_topic_spec_t *spec, es_topic_status status,
                                const char *detail, void *opaque);

/* Makes the cluster `brokers` (kafka.* passed to librdkafka) hold the planned topics:
 * creates missing ones (CreateTopics with their configs), compares existing ones (partitions,
 * replication factor; cleanup.policy, retention.ms and min.insync.replicas when the cluster
 * answers DescribeConfigs). ES_OK when every topic is as planned; ES_ESTATE when some drift;
 * ES_EKAFKA when the cluster is unreachable or cannot create topics (librdkafka's mock
 * cluster, `esctl dev-broker`, has no CreateTopics). Blocks up to ~30 s. */
ES_API es_err es_topics_apply(const es_config_t *cfg, const es_topic_spec_t *specs, size_t n,
                              es_topic_report_cb *report, void *opaque, es_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
