/*
 * Events as they sit in the log, and the envelope codec.
 *
 * An es_event_t is a read-only view: every pointer in it stays valid until the
 * event is freed (decoded events) or the callback that received it returns
 * (events handed to an es_event_cb). The wire form is eskit.v1.EventEnvelope
 * (proto/eskit/v1/envelope.proto), identical on both backends.
 */
#ifndef ESKIT_EVENT_H
#define ESKIT_EVENT_H

#include <stddef.h>
#include <stdint.h>
#include <eskit/error.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Limits on what enters the log, checked on every way in (es_execute, es_execute_batch,
 * es_execute_all, the Kafka command processor, es_store_append, saga sends); a command that breaks
 * one is refused with ES_EINVAL naming the field. docs/limits.md has the table and the reasons.
 *
 *   aggregate type             1..128 bytes, "<domain>.<aggregate>", lowercase [a-z0-9-] segments
 *   aggregate id, command id,  1..255 bytes of text (a correlation id may be empty: none)
 *     correlation id, saga instance id
 *   event, command, state type 1..255 bytes, a protobuf full name ([A-Za-z_][A-Za-z0-9_]* segments)
 *   metadata                   0..64 entries with distinct keys, besides the trace keys
 *                              (<eskit/trace.h>); key 1..128, value 0..4096 bytes of text
 * Text: valid UTF-8 without control characters (C0 U+0000..U+001F, DEL U+007F, C1
 * U+0080..U+009F).
 */
#define ES_MAX_TYPE_LEN 128            /* aggregate type: "<domain>.<aggregate>" */
#define ES_MAX_ID_LEN 255              /* aggregate, command, correlation, saga instance id */
#define ES_MAX_TYPE_NAME_LEN 255       /* event, command and state type (protobuf full name) */
#define ES_MAX_METADATA 64             /* metadata entries per command or event */
#define ES_MAX_METADATA_KEY_LEN 128    /* bytes */
#define ES_MAX_METADATA_VALUE_LEN 4096 /* bytes */
#define ES_UUID_STR_LEN 36

typedef struct es_kv {
    const char *key;
    const char *value;
} es_kv_t;

typedef struct es_event {
    int64_t offset;    /* position in its log: embedded global position, Kafka offset */
    int32_t partition; /* Kafka partition; 0 on the embedded backend */
    char event_id[ES_UUID_STR_LEN + 1];
    const char *aggregate_type;
    const char *aggregate_id;
    uint64_t version;       /* 1-based, contiguous per aggregate */
    const char *event_type; /* full protobuf name of the payload message */
    const uint8_t *payload;
    size_t payload_len;
    int64_t occurred_at_us; /* microseconds since the Unix epoch, UTC */
    const char *command_id;
    const char *correlation_id;
    const es_kv_t *metadata;
    size_t n_metadata;
    /* The version of event_type's schema in the log's catalogue that the writer registered
     * (docs/schemas.md); 0: unknown (written before the catalogue, or by a writer that
     * registered none). */
    uint32_t schema_version;
} es_event_t;

/* Called once per event, in log order; return non-zero to stop early. */
typedef int es_event_cb(const es_event_t *ev, void *opaque);

/* Where bytes came from, for error messages; any field may be NULL / -1. */
typedef struct es_position {
    const char *topic; /* e.g. "orders.order.events" */
    const char *key;   /* aggregate id when known */
    int32_t partition;
    int64_t offset;
} es_position_t;

/* Serializes ev (offset and partition are not part of it; nor is schema_version, which only the
 * library's writers record, and which this reads not at all, so an es_event_t filled by a
 * program built against headers without it is read only as far as those headers declared it).
 * Caller frees *out with es_free. */
ES_API es_err es_envelope_encode(const es_event_t *ev, uint8_t **out, size_t *out_len,
                                 es_error_t *err);

/* Parses and checks an envelope, bare or in Confluent's wire format (docs/registry.md: the
 * frame is stripped); ES_EDECODE names the position when malformed. at may be NULL. Caller frees
 * *out with es_event_free. */
ES_API es_err es_envelope_decode(const uint8_t *buf, size_t len, const es_position_t *at,
                                 es_event_t **out, es_error_t *err);

/* A deep copy of ev. Caller frees with es_event_free. */
ES_API es_event_t *es_event_dup(const es_event_t *ev);
/* Frees an event of es_envelope_decode or es_event_dup (NULL is fine). */
ES_API void es_event_free(es_event_t *ev);

/* Checks "<domain>.<aggregate>": lowercase [a-z0-9-] segments, two or more. */
ES_API es_err es_validate_aggregate_type(const char *type, es_error_t *err);
/* Checks an aggregate id: 1..ES_MAX_ID_LEN bytes of text (UTF-8, no control characters). */
ES_API es_err es_validate_aggregate_id(const char *id, es_error_t *err);
/* Checks metadata as es_execute and es_store_append do: the limits above, distinct keys. */
ES_API es_err es_validate_metadata(const es_kv_t *metadata, size_t n, es_error_t *err);

/* Writes a fresh UUIDv7 (time-ordered) in text form; out holds 37 bytes. */
ES_API void es_uuid7(char out[ES_UUID_STR_LEN + 1]);
/* Microseconds since the Unix epoch. */
ES_API int64_t es_now_us(void);

#ifdef __cplusplus
}
#endif
#endif
