/*
 * Schemas: the message types of a log as a long-lived contract (docs/schemas.md).
 *
 * Every message type a service registers (its aggregates' events, commands and states, its
 * sagas' payloads) is recorded in the log's schema catalogue: its schema in a canonical form
 * (eskit.v1.Schema, proto/eskit/v1/schema.proto), a fingerprint, and a version number per full
 * name. A new schema of a known type is checked against the versions recorded before it under
 * the config key schema.compatibility (backward by default) with protobuf's wire rules, and
 * refused when it would misread the log (or the log's old readers would misread it).
 *
 * Two layers:
 *   es_schema_*    one type's schema: built from a protobuf-c descriptor or read from its
 *                  canonical bytes, fingerprinted, printed, compared (pure functions);
 *   es_schemas_*   the catalogue of a log (embedded: a table in the store file; Kafka: a
 *                  compacted topic), read and registered into.
 */
#ifndef ESKIT_SCHEMA_H
#define ESKIT_SCHEMA_H

#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>
#include <eskit/api.h>
#include <eskit/config.h>
#include <eskit/error.h>

#ifdef __cplusplus
extern "C" {
#endif

/* How a new schema of a type must relate to the versions recorded before it (docs/schemas.md
 * has every rule and which modes apply it). */
typedef enum es_compat {
    ES_COMPAT_BACKWARD = 0, /* the new schema reads every event the recorded ones wrote */
    ES_COMPAT_FORWARD = 1,  /* readers of the recorded schemas read what the new one writes */
    ES_COMPAT_FULL = 2,     /* both */
    ES_COMPAT_NONE = 3,     /* no check: every schema is recorded as a new version */
} es_compat;

/* "backward", "forward", "full", "none" to an es_compat; anything else is ES_EINVAL naming the
 * text and the choices. */
ES_API es_err es_compat_parse(const char *text, es_compat *out, es_error_t *err);
/* The name of a mode ("backward", ...); never NULL. */
ES_API const char *es_compat_name(es_compat mode);

/* One message type's schema, canonical (opaque). */
typedef struct es_schema es_schema_t;

/* The schema of the message type d describes, with every message and enum type its fields
 * reach. Caller frees with es_schema_free. */
ES_API es_err es_schema_of(const ProtobufCMessageDescriptor *d, es_schema_t **out, es_error_t *err);
/* Reads a schema from its canonical bytes (an eskit.v1.Schema): malformed bytes, or a schema
 * that is not canonical (lists out of order, a field referring to a type it does not carry),
 * are ES_EDECODE. Caller frees with es_schema_free. */
ES_API es_err es_schema_parse(const uint8_t *bytes, size_t len, es_schema_t **out, es_error_t *err);
/* The canonical bytes (borrowed, valid while s lives); *len is set. */
ES_API const uint8_t *es_schema_bytes(const es_schema_t *s, size_t *len);
/* The registered type's full name ("orders.v1.OrderPlaced"). */
ES_API const char *es_schema_name(const es_schema_t *s);
/* "sha256:" and 64 lowercase hex digits of the canonical bytes. */
ES_API const char *es_schema_fingerprint(const es_schema_t *s);
/* Prints s for people (json 0: .proto-like text, every reached type; json 1: one JSON object
 * with the fields of eskit.v1.Schema). Caller frees *out with es_free. */
ES_API es_err es_schema_format(const es_schema_t *s, int json, char **out, es_error_t *err);
/* Frees a schema (NULL is fine). */
ES_API void es_schema_free(es_schema_t *s);

/* One finding of a comparison: a broken rule of es_schema_check, or a change es_schema_diff
 * saw. Strings are owned by the report. */
typedef struct es_schema_finding {
    const char *rule;    /* "FIELD_SAME_TYPE", ...; es_schema_diff: "FIELD_ADDED", ... */
    const char *type;    /* the message or enum type it is in ("orders.v1.OrderPlaced") */
    const char *field;   /* the field or enum value's name; NULL when about the type */
    uint32_t number;     /* the field or enum value's number; 0 when about the type */
    const char *message; /* one line: the type, field, number, rule, and what to do */
} es_schema_finding_t;

typedef struct es_schema_report {
    es_schema_finding_t *findings;
    size_t n;
} es_schema_report_t;

/* Checks next against history, the type's recorded versions oldest first (n may be 0: a new
 * type is always compatible), under mode. ES_OK with an empty report when next may be
 * recorded; ES_EINCOMPATIBLE with every broken rule in *report (and the first in err)
 * otherwise. The report is reset first; clear it with es_schema_report_clear. */
ES_API es_err es_schema_check(const es_schema_t *const *history, size_t n, const es_schema_t *next,
                              es_compat mode, es_schema_report_t *report, es_error_t *err);
/* Every difference from a to b (fields and enum values added, removed, renamed, retyped, moved
 * between oneofs; types added and removed), whether or not a rule forbids it, for esctl schemas
 * diff. The report is reset first. */
ES_API es_err es_schema_diff(const es_schema_t *a, const es_schema_t *b, es_schema_report_t *report,
                             es_error_t *err);
/* Frees a report's findings and zeroes it (NULL is fine). */
ES_API void es_schema_report_clear(es_schema_report_t *report);

/* ---- the catalogue of a log ------------------------------------------------------------------
 *
 * Embedded: the es_schemas table of the store file (config key db). Kafka: the compacted topic
 * schema.topic (default eskit.schemas, planned by esctl topics plan). es_engine_register, the
 * command processor, es_runner_new and es_saga_new register their types themselves; these calls
 * are for tools (esctl schemas) and for services that register other types. */

/* One recorded version of a type (borrowed: valid during the callback). */
typedef struct es_schema_entry {
    const char *name;          /* "orders.v1.OrderPlaced" */
    uint32_t version;          /* 1, 2, ... per name */
    const char *fingerprint;   /* es_schema_fingerprint of schema */
    int64_t registered_at_us;  /* microseconds since the Unix epoch, UTC */
    const char *registered_by; /* "<host>/<pid> <program>" */
    const es_schema_t *schema;
} es_schema_entry_t;

/* Called per entry, by name then version; return non-zero to stop. */
typedef int es_schema_entry_cb(const es_schema_entry_t *entry, void *opaque);

typedef struct es_schemas es_schemas_t;

/* Opens the catalogue of the log cfg names. readonly: lists and checks only, and creates
 * nothing (a log without a catalogue lists none). Caller frees with es_schemas_close. */
ES_API es_err es_schemas_open(const es_config_t *cfg, int readonly, es_schemas_t **out,
                              es_error_t *err);
/* Closes a catalogue (NULL is fine). */
ES_API void es_schemas_close(es_schemas_t *cat);
/* Every recorded version (name NULL) or those of one type, by name then version. A record that
 * does not decode is ES_EDECODE naming where it is; nothing after it is listed. */
ES_API es_err es_schemas_list(es_schemas_t *cat, const char *name, es_schema_entry_cb *cb,
                              void *opaque, es_error_t *err);
/* Records the schemas of types (n descriptors; repeats are fine): a type whose schema is
 * recorded already keeps its version (registration is idempotent), a new schema of a known
 * type is checked against every recorded version under the config key schema.compatibility,
 * and becomes the next version. When one type breaks a rule nothing is recorded and the result
 * is ES_EINCOMPATIBLE with every finding in *report (may be NULL; reset first)
 * and the first in err. versions (may be NULL) gets each type's version. Safe against other
 * processes registering at once: each version is recorded once, none is lost. Embedded, the new
 * versions of one call are recorded all or none; on Kafka a failure part way (a broker away) can
 * leave some recorded, which a call again finds recorded and keeps. */
ES_API es_err es_schemas_register(es_schemas_t *cat, const ProtobufCMessageDescriptor *const *types,
                                  size_t n, uint32_t *versions, es_schema_report_t *report,
                                  es_error_t *err);
/* es_schemas_register's answer without recording anything: ES_OK when every type could be
 * registered, ES_EINCOMPATIBLE with every finding otherwise. */
ES_API es_err es_schemas_check(es_schemas_t *cat, const ProtobufCMessageDescriptor *const *types,
                               size_t n, es_schema_report_t *report, es_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
