/*
 * The model behind es_schema_t (schema.h), for the comparison rules (schema_compat.c) and the
 * catalogue (catalogue.c). A schema is its canonical bytes (an eskit.v1.Schema as protobuf-c
 * packs it), the same bytes unpacked, and their fingerprint. Every es_schema_t has passed
 * es_schema_parse's checks, so the model's invariants hold: messages[0] is the registered type
 * and the others are sorted by full name, enums by full name, fields by number, enum values by
 * number then name, oneofs by their lowest field number, and every field's type_name names a
 * type of the schema.
 */
#ifndef ESKIT_SCHEMA_INT_H
#define ESKIT_SCHEMA_INT_H

#include <eskit/schema.h>

#include "eskit/v1/schema.pb-c.h"

/* "sha256:" and 64 hex digits. */
#define ES_SCHEMA_FINGERPRINT_LEN (7 + 64)

struct es_schema {
    uint8_t *bytes; /* canonical bytes */
    size_t len;
    Eskit__V1__Schema *pb; /* bytes unpacked by protobuf-c */
    char fingerprint[ES_SCHEMA_FINGERPRINT_LEN + 1];
};

/* The unpacked model (borrowed, valid while s lives). */
const Eskit__V1__Schema *es_schema_model(const es_schema_t *s);
/* The message type of s named full_name, or NULL (borrowed). */
const Eskit__V1__MessageType *es_schema_message(const es_schema_t *s, const char *full_name);
/* The enum type of s named full_name, or NULL (borrowed). */
const Eskit__V1__EnumType *es_schema_enum(const es_schema_t *s, const char *full_name);
/* The field of m numbered number, or NULL (borrowed). */
const Eskit__V1__Field *es_schema_field(const Eskit__V1__MessageType *m, uint32_t number);
/* A schema from an unpacked eskit.v1.Schema (a catalogue record's schema field): packed, then
 * read and checked as es_schema_parse does. Caller frees with es_schema_free. */
es_err es_schema_from_model(const Eskit__V1__Schema *pb, es_schema_t **out, es_error_t *err);
/* The fingerprint of canonical bytes, "sha256:<64 hex>", as es_schema_fingerprint gives it. */
void es_schema_fingerprint_of(const uint8_t *bytes, size_t len,
                              char out[ES_SCHEMA_FINGERPRINT_LEN + 1]);
/* "int32", "string", ... for a field type of the model; the type_name for messages and enums. */
const char *es_schema_type_text(const Eskit__V1__Field *f);

#endif
