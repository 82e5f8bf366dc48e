/*
 * The Kafka wire: the one place the library makes librdkafka handles, turns librdkafka's errors
 * into es_err, and writes and reads the headers of the records it produces.
 *
 * Handles. es_kafka_new makes a producer, a consumer or an admin client from an es_config_t:
 * eskit's defaults, then the config's kafka.* keys, then what correctness needs, which no key
 * overrides. librdkafka's log lines and error events go to the config's log callback
 * ("librdkafka <handle>: ..."), and the error events also tell the handle which brokers it
 * cannot reach (es_kafka_outage) until a sign of life clears that: a delivery report, or the
 * caller's es_kafka_clear_outage after a request that was answered. The handle's librdkafka opaque
 * is this module's: callbacks come in es_kafka_opts_t, each with the caller's opaque.
 * A handle its owner polls all the time can turn librdkafka's statistics into the
 * eskit_kafka_* gauges (es_kafka_opts_t.stats_name; kafka/stats.h).
 *
 * Errors, one policy (es_kafka_code), the one the log reader had and its tests expect (the
 * processor's and the remote caller's mappers agreed with it except on which timeouts count):
 *   ES_ETIMEOUT   librdkafka waited and gave up: __TIMED_OUT, __TIMED_OUT_QUEUE,
 *                 __MSG_TIMED_OUT (a record not delivered in message.timeout.ms) and
 *                 REQUEST_TIMED_OUT (a broker's answer). The request may still take effect;
 *                 asking again with the same ids is safe. An rd_kafka_error_t with one of these
 *                 codes is a timeout too (a transaction commit that timed out).
 *   ES_ENOTFOUND  the topic or partition does not exist (UNKNOWN_TOPIC_OR_PART,
 *                 __UNKNOWN_TOPIC, __UNKNOWN_PARTITION): a person creates it (esctl topics
 *                 apply).
 *   ES_EKAFKA     everything else: the brokers unreachable (__TRANSPORT, __ALL_BROKERS_DOWN,
 *                 __RESOLVE: the message names them), a full local queue, leaders moving,
 *                 refused requests, fatal errors.
 * The run loops retry ES_ETIMEOUT and ES_EKAFKA alike, with backoff; the class tells a caller
 * whether the request may still take effect, the message (es_kafka_fail) what to check.
 * <eskit/topics.h> documents its own contract (unreachable is ES_EKAFKA there, whatever
 * librdkafka said), so topics.c keeps its codes and uses the module for its handle only.
 *
 * Records. Every record eskit produces goes through es_kafka_produce, whose kind decides the
 * headers: exactly the ones proto/README.md lists for the kind, each once
 * (tests/integration/test_kafka_headers.c reads the README and every topic back).
 * es_kafka_read_headers reads them back from a consumed record, es_kafka_check_headers says
 * whether they are exactly a kind's.
 *
 * Includes only the public headers and librdkafka's. (esctl dev-broker's handle is no client: it
 * only hosts the mock cluster, and sets its one setting by hand.)
 */
#ifndef ESKIT_KAFKA_WIRE_H
#define ESKIT_KAFKA_WIRE_H

#include <eskit/eskit.h>
#include "runloop.h"
#include <librdkafka/rdkafka.h>

#include <stddef.h>
#include <stdint.h>

/* ---- handles ------------------------------------------------------------------------------- */

typedef enum es_kafka_role {
    ES_KAFKA_PRODUCER, /* idempotent, acks=all, murmur2_random */
    ES_KAFKA_CONSUMER, /* no automatic commits, offset stores or topic creation */
    ES_KAFKA_ADMIN,    /* metadata and admin requests (a producer handle without defaults) */
} es_kafka_role;

typedef void es_kafka_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);
typedef void es_kafka_parts_cb(rd_kafka_t *rk, rd_kafka_resp_err_t e,
                               rd_kafka_topic_partition_list_t *parts, void *opaque);

typedef struct es_kafka_opts {
    es_kafka_role role;
    const char *what;         /* names the handle in errors ("reply consumer"); NULL: the role */
    const char *stats_name;   /* asks for librdkafka's statistics as metrics, the handle named
                               * client="<service.name>.<stats_name>" (kafka/stats.h): only for a
                               * handle its owner polls every few seconds while it lives */
    const char *group;        /* consumer: group.id (required) */
    const char *offset_reset; /* consumer: auto.offset.reset, over any key; NULL: librdkafka's */
    int fetch_wait_ms;        /* consumer: fetch.wait.max.ms, a default keys may override */
    int transactional;        /* producer: kafka.transactional.id applies (else it is left out) */
    int quiet;                /* librdkafka's log lines and error events at debug level (probes) */
    rd_kafka_t *share_outage; /* hear of the brokers with this handle: one client, two handles */
    void *opaque;             /* what the callbacks below are given */
    es_kafka_dr_cb *dr_cb;    /* producer: every delivery report, on the polling thread */
    es_kafka_parts_cb *rebalance_cb; /* consumer: librdkafka's rebalance_cb */
    es_kafka_parts_cb *commit_cb;    /* consumer: librdkafka's offset_commit_cb */
} es_kafka_opts_t;

/* The librdkafka conf of a handle with options o: our defaults, the kafka.* keys
 * (kafka.transactional.id only when transactional), then what correctness needs. No callbacks
 * or opaque (es_kafka_new sets them). Caller owns *out. */
es_err es_kafka_conf(const es_config_t *cfg, const es_kafka_opts_t *o, rd_kafka_conf_t **out,
                     es_error_t *err);
/* A handle on cfg's brokers, as o says; cfg must outlive it. Consumers get their messages and
 * events on the consumer queue (rd_kafka_poll_set_consumer). Destroy with es_kafka_destroy. */
es_err es_kafka_new(const es_config_t *cfg, const es_kafka_opts_t *o, rd_kafka_t **out,
                    es_error_t *err);
/* rd_kafka_destroy_flags(rk, flags) and what the module kept for it; NULL is a no-op. Flush,
 * purge or close first, as the handle's owner needs. */
void es_kafka_destroy(rd_kafka_t *rk, int flags);
/* The bootstrap brokers rk was made for ("(none)" when cfg had none). */
const char *es_kafka_brokers(const rd_kafka_t *rk);

/* ---- what the handle heard of the brokers -------------------------------------------------- */

/* Forgets what the error events said of the brokers: after a sign of life (a request answered,
 * a reply read), or where older news must not count (a fetch judges by its own). */
void es_kafka_clear_outage(rd_kafka_t *rk);
/* "the Kafka brokers <brokers> are unreachable (librdkafka: ...)" into out when librdkafka said
 * every broker was down since the last sign of life, or when e says so (__TRANSPORT,
 * __ALL_BROKERS_DOWN, __RESOLVE; 0: ask the handle only); else "". Names the broker it last
 * could not reach. Returns out. Any thread. */
const char *es_kafka_outage(rd_kafka_t *rk, rd_kafka_resp_err_t e, char *out, size_t cap);
/* Whether librdkafka said every broker was down since the last sign of life; why gets its
 * words. */
int es_kafka_all_down(rd_kafka_t *rk, char *why, size_t cap);
/* Whether librdkafka said a broker could not be reached (a transport or resolve error, or
 * every broker down) since the last sign of life. Any thread. */
int es_kafka_heard_unreachable(rd_kafka_t *rk);
/* What librdkafka last said of the brokers (its last error event since the last sign of life),
 * else e's words; into out, which it returns. */
const char *es_kafka_why(rd_kafka_t *rk, rd_kafka_resp_err_t e, char *out, size_t cap);

/* ---- errors -------------------------------------------------------------------------------- */

/* The policy above. */
es_err es_kafka_code(rd_kafka_resp_err_t e);
/* The policy above for a librdkafka error object, by its code. */
es_err es_kafka_error_code(const rd_kafka_error_t *ke);
/* Fails with es_kafka_code(e): "<what>: <librdkafka's words> (brokers B)[; <advice>]", or, when
 * the handle knows the brokers unreachable, "<what>: <es_kafka_outage>; <advice>". advice NULL:
 * "are the brokers up?" after __TIMED_OUT, "retry once they are back" in an outage, else none. */
es_err es_kafka_fail(rd_kafka_t *rk, rd_kafka_resp_err_t e, const char *advice, es_error_t *err,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* es_kafka_fail for an rd_kafka_error_t, which it destroys. */
es_err es_kafka_fail_error(rd_kafka_t *rk, rd_kafka_error_t *ke, const char *advice,
                           es_error_t *err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* ---- records ------------------------------------------------------------------------------- */

/* The kinds of record eskit produces (proto/README.md, "Kafka records"), by their headers. */
typedef enum es_kafka_kind {
    ES_KAFKA_EVENT,    /* events, saga transitions: es-event-type, es-version, es-event-id,
                        * es-correlation-id, copied from event */
    ES_KAFKA_COMMAND,  /* es-reply-partition, from reply_partition */
    ES_KAFKA_REPLY,    /* none */
    ES_KAFKA_SNAPSHOT, /* none */
    ES_KAFKA_DLQ,      /* dlq_headers (es_kafka_dlq_headers' list), then es-dlq-ref: dlq_ref */
    ES_KAFKA_SCHEMA,   /* a schema catalogue record: none */
} es_kafka_kind;

typedef struct es_kafka_record {
    es_kafka_kind kind;
    const char *topic;
    int32_t partition; /* RD_KAFKA_PARTITION_UA: the partitioner's, by key */
    const char *key;   /* NULL: none */
    const void *value;
    size_t len;
    int copy;          /* librdkafka copies value; else takes it (malloc'd), even on failure */
    void *opaque;      /* the delivery report's m->_private */
    int queue_wait_ms; /* how long a full local queue is polled for room; -1: until it has */
    const es_event_t *event;    /* ES_KAFKA_EVENT */
    int32_t reply_partition;    /* ES_KAFKA_COMMAND */
    const es_kv_t *dlq_headers; /* ES_KAFKA_DLQ */
    size_t n_dlq_headers;
    const char *dlq_ref;
} es_kafka_record_t;

/* The headers of r's kind, made from r (*out NULL for a kind without headers), for
 * rd_kafka_producev to take: the one writer of eskit's headers. ES_EINVAL when r lacks what they
 * need (an event record without its event, a command without a reply partition, a dead letter
 * without es_kafka_dlq_headers' list and its ref). */
es_err es_kafka_write_headers(const es_kafka_record_t *r, rd_kafka_headers_t **out,
                              es_error_t *err);
/* Produces r with its kind's headers. Fails (the message names kind, topic and partition) when
 * librdkafka refuses it, or with ES_EINVAL when r does not carry what its kind's headers need. */
es_err es_kafka_produce(rd_kafka_t *rk, const es_kafka_record_t *r, es_error_t *err);
/* An event record: key ev->aggregate_id, value the envelope bytes (taken, malloc'd), the event
 * headers; waits for room in a full queue. */
es_err es_kafka_produce_event(rd_kafka_t *rk, const char *topic, int32_t partition,
                              const es_event_t *ev, uint8_t *envelope, size_t len, void *opaque,
                              es_error_t *err);
/* A dead letter: the parked record's key and bytes (copied), headers es_kafka_dlq_headers'
 * list, then es-dlq-ref = ref. */
es_err es_kafka_produce_dlq(rd_kafka_t *rk, const char *topic, const char *ref, const char *key,
                            const uint8_t *value, size_t len, const es_kv_t *headers, size_t n,
                            void *opaque, es_error_t *err);

/* What a dead letter's headers say (proto/README.md). */
typedef struct es_kafka_dlq {
    const char *group; /* the consumer group that parked it */
    const char *topic; /* where it was read */
    int32_t partition;
    int64_t offset;
    int attempts;
    es_err code;
    const char *error;
    const char *event_type; /* "" when the record did not decode */
} es_kafka_dlq_t;

#define ES_KAFKA_DLQ_HEADERS 8 /* a dead letter's headers, es-dlq-ref aside */

/* A dead letter's topic, ref and headers, rendered by es_kafka_dlq_headers. */
typedef struct es_kafka_dlq_headers {
    char topic[ES_MAX_TYPE_LEN + 24]; /* "<topic>.dlq" */
    char ref[512];                    /* "<group>/<topic>/<partition>/<offset>" */
    es_kv_t kv[ES_KAFKA_DLQ_HEADERS];
    char partition[16], offset[24], attempts[16];
} es_kafka_dlq_headers_t;

/* Renders d into out (whose kv point into d's strings and out's buffers): the list a dead
 * letter carries on both backends (Kafka headers; the embedded log keeps them as text). */
void es_kafka_dlq_headers(const es_kafka_dlq_t *d, es_kafka_dlq_headers_t *out);

/* ---- reading headers ----------------------------------------------------------------------- */

/* The headers proto/README.md documents, one bit each (es_kafka_headers_t.seen). */
enum {
    ES_KAFKA_H_EVENT_TYPE = 1u << 0,      /* es-event-type */
    ES_KAFKA_H_VERSION = 1u << 1,         /* es-version */
    ES_KAFKA_H_EVENT_ID = 1u << 2,        /* es-event-id */
    ES_KAFKA_H_CORRELATION_ID = 1u << 3,  /* es-correlation-id */
    ES_KAFKA_H_REPLY_PARTITION = 1u << 4, /* es-reply-partition */
    ES_KAFKA_H_DLQ_GROUP = 1u << 5,       /* es-dlq-group */
    ES_KAFKA_H_DLQ_TOPIC = 1u << 6,       /* es-dlq-topic */
    ES_KAFKA_H_DLQ_PARTITION = 1u << 7,   /* es-dlq-partition */
    ES_KAFKA_H_DLQ_OFFSET = 1u << 8,      /* es-dlq-offset */
    ES_KAFKA_H_DLQ_ATTEMPTS = 1u << 9,    /* es-dlq-attempts */
    ES_KAFKA_H_DLQ_CODE = 1u << 10,       /* es-dlq-code */
    ES_KAFKA_H_DLQ_ERROR = 1u << 11,      /* es-dlq-error */
    ES_KAFKA_H_DLQ_REF = 1u << 12,        /* es-dlq-ref */
};

/* What the documented headers of a consumed record say, as es_kafka_read_headers found them.
 * A header absent or malformed leaves its field "" (strings) or -1 (numbers); the last of a
 * repeated header counts, as librdkafka's get_last. */
typedef struct es_kafka_headers {
    unsigned seen;     /* the documented headers present, at least once each */
    unsigned bad;      /* present but malformed: a NUL byte, too long, not the decimal it must be */
    unsigned repeated; /* present more than once */
    size_t others;     /* headers the README does not document */
    char event_type[ES_MAX_TYPE_NAME_LEN + 1];
    int64_t version;
    char event_id[40];
    char correlation_id[ES_MAX_ID_LEN + 1];
    int32_t reply_partition;
    char dlq_group[ES_MAX_ID_LEN + 1], dlq_topic[ES_MAX_TYPE_LEN + 16];
    int32_t dlq_partition;
    int64_t dlq_offset;
    int32_t dlq_attempts;
    char dlq_code[32], dlq_error[1024], dlq_ref[512];
} es_kafka_headers_t;

/* The bits of the headers a record of kind carries (proto/README.md's table). */
unsigned es_kafka_kind_headers(es_kafka_kind kind);
/* Reads h's documented headers into out (h NULL: none): ES_OK, or ES_EINVAL when one is
 * malformed (out->bad), the others read all the same. The one reader of eskit's headers. */
es_err es_kafka_read_headers(const rd_kafka_headers_t *h, es_kafka_headers_t *out);
/* es_kafka_read_headers of a consumed message's headers. */
es_err es_kafka_message_headers(const rd_kafka_message_t *m, es_kafka_headers_t *out);
/* ES_OK when h is exactly what a record of kind carries: each of its headers once and
 * well-formed, and no other; else ES_EDECODE, the message naming the first header amiss. */
es_err es_kafka_check_headers(const es_kafka_headers_t *h, es_kafka_kind kind, es_error_t *err);

/* A partition's watermarks, asked in slices of ES_KAFKA_SLICE_MS until answered, until_ms (on
 * es_now_us()/1000's clock) passes or stop (may be NULL) is requested: one long request would
 * hold a stop. Only timeouts and transport errors are asked again; librdkafka's last answer is
 * returned; __TIMED_OUT, asking nothing, when stop is requested already. (librdkafka 2.0.2 can
 * still block a slice well past its timeout while a request is in flight to brokers that went
 * away: keep it off the paths a stop must end at once.) */
#define ES_KAFKA_SLICE_MS 100
rd_kafka_resp_err_t es_kafka_watermarks(rd_kafka_t *rk, const char *topic, int32_t partition,
                                        int64_t *lo, int64_t *hi, int64_t until_ms,
                                        const es_stop_t *stop);

/* ---- reading a partition range ---- */

/* A record of es_kafka_scan, in offset order: ES_OK to go on (*stop = 1 ends the scan after
 * it), anything else ends the scan with that error. */
typedef es_err es_kafka_scan_fn(void *opaque, const rd_kafka_message_t *m, int *stop,
                                es_error_t *err);
/* An error event of the consumer during the scan (next: the offset it waits for): ES_OK goes
 * on (librdkafka retries), anything else ends the scan. */
typedef es_err es_kafka_scan_error_fn(void *opaque, const rd_kafka_message_t *m, int64_t next,
                                      es_error_t *err);

/* Reads [from, to) of one partition with consumer rk, which it assigns for the scan and
 * unassigns after; hands each record to fn and each error event to on_error. Transaction
 * markers count as read. timeout_ms without a record is ES_ETIMEOUT, its message starting with
 * doing ("reading", "restoring from") and naming the partition and the brokers. */
es_err es_kafka_scan(rd_kafka_t *rk, const char *doing, const char *topic, int32_t partition,
                     int64_t from, int64_t to, int timeout_ms, es_kafka_scan_fn *fn,
                     es_kafka_scan_error_fn *on_error, void *opaque, es_error_t *err);

#endif
