/*
 * One message type's schema in its canonical form (docs/schemas.md): built from a protobuf-c
 * descriptor, read back from its bytes, fingerprinted and printed. The canonical form is an
 * eskit.v1.Schema (proto/eskit/v1/schema.proto) whose lists are sorted, so that two builds of
 * the same type give the same bytes however their .proto files ordered declarations.
 *
 * What protobuf-c 1.4.1 descriptors do not carry, and what stands in for it:
 *   - oneof names: a field of a oneof has PROTOBUF_C_FIELD_FLAG_ONEOF, and every field of one
 *     oneof has the same quantifier_offset (the offset of the oneof's <name>_case member in the
 *     C struct). Fields are grouped by that offset, the groups ordered by their lowest field
 *     number, and each named "oneof_" and the name of that lowest-numbered field. The offset
 *     itself depends on the C struct layout, so it is never part of the canonical form.
 *   - declaration order of enum values: protobuf-c sorts them by number; the canonical form
 *     lists every name (aliases too, from values_by_name) by number, then name.
 *   - reserved ranges: none; the catalogue's history stands in for them (schema_compat.c).
 */
#include "schema_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "sha256.h"

#define ONEOF_PREFIX "oneof_"
#define MAX_FIELD_NUMBER 536870911u /* 2^29 - 1 */

/* ---- names and lookups ---- */

es_err es_compat_parse(const char *text, es_compat *out, es_error_t *err) {
    static const char *const names[] = {"backward", "forward", "full", "none"};
    for (int i = 0; i < 4; i++)
        if (text && !strcmp(text, names[i])) {
            *out = (es_compat)i;
            return ES_OK;
        }
    return es_fail(err, ES_EINVAL,
                   "schema.compatibility '%s' is not a mode; use backward, forward, full or none",
                   text ? text : "(null)");
}

const char *es_compat_name(es_compat mode) {
    switch (mode) {
    case ES_COMPAT_BACKWARD:
        return "backward";
    case ES_COMPAT_FORWARD:
        return "forward";
    case ES_COMPAT_FULL:
        return "full";
    case ES_COMPAT_NONE:
        return "none";
    }
    return "unknown";
}

const Eskit__V1__Schema *es_schema_model(const es_schema_t *s) {
    return s->pb;
}

/* Where full_name is in pb's messages (n_messages when absent): the root, then a search of the
 * sorted rest. */
static size_t find_message(const Eskit__V1__Schema *pb, const char *full_name) {
    if (pb->n_messages > 0 && !strcmp(pb->messages[0]->full_name, full_name))
        return 0;
    size_t lo = 1, hi = pb->n_messages;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(pb->messages[mid]->full_name, full_name);
        if (c == 0)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return pb->n_messages;
}

static size_t find_enum(const Eskit__V1__Schema *pb, const char *full_name) {
    size_t lo = 0, hi = pb->n_enums;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(pb->enums[mid]->full_name, full_name);
        if (c == 0)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return pb->n_enums;
}

const Eskit__V1__MessageType *es_schema_message(const es_schema_t *s, const char *full_name) {
    size_t i = find_message(s->pb, full_name);
    return i < s->pb->n_messages ? s->pb->messages[i] : NULL;
}

const Eskit__V1__EnumType *es_schema_enum(const es_schema_t *s, const char *full_name) {
    size_t i = find_enum(s->pb, full_name);
    return i < s->pb->n_enums ? s->pb->enums[i] : NULL;
}

const Eskit__V1__Field *es_schema_field(const Eskit__V1__MessageType *m, uint32_t number) {
    size_t lo = 0, hi = m->n_fields;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->fields[mid]->number == number)
            return m->fields[mid];
        if (m->fields[mid]->number < number)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const char *es_schema_type_text(const Eskit__V1__Field *f) {
    static const char *const scalar[] = {"unspecified", "double",   "float",   "int64",  "uint64",
                                         "int32",       "fixed64",  "fixed32", "bool",   "string",
                                         "group",       "message",  "bytes",   "uint32", "enum",
                                         "sfixed32",    "sfixed64", "sint32",  "sint64"};
    if (f->type == ESKIT__V1__FIELD__TYPE__TYPE_MESSAGE ||
        f->type == ESKIT__V1__FIELD__TYPE__TYPE_ENUM)
        return f->type_name;
    if ((unsigned)f->type < sizeof scalar / sizeof *scalar)
        return scalar[f->type];
    return "unknown";
}

void es_schema_fingerprint_of(const uint8_t *bytes, size_t len,
                              char out[ES_SCHEMA_FINGERPRINT_LEN + 1]) {
    memcpy(out, "sha256:", 7);
    es_sha256_hex(bytes, len, out + 7);
}

/* ---- reading canonical bytes ---- */

/* A full name: identifiers joined by dots; a name: one identifier. */
static int is_name(const char *s, int dotted) {
    if (!s || !*s)
        return 0;
    int start = 1;
    for (const char *p = s; *p; p++) {
        char c = *p;
        if (c == '.' && dotted && !start) {
            start = 1;
            continue;
        }
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(c >= '0' && c <= '9' && !start))
            return 0;
        start = 0;
    }
    return !start;
}

/* Marks the messages and enums m reaches (indices into pb's lists). */
static void mark_reached(const Eskit__V1__Schema *pb, size_t m, unsigned char *msg_seen,
                         unsigned char *enum_seen) {
    if (msg_seen[m])
        return;
    msg_seen[m] = 1;
    const Eskit__V1__MessageType *mt = pb->messages[m];
    for (size_t f = 0; f < mt->n_fields; f++) {
        const Eskit__V1__Field *fd = mt->fields[f];
        if (fd->type == ESKIT__V1__FIELD__TYPE__TYPE_MESSAGE)
            mark_reached(pb, find_message(pb, fd->type_name), msg_seen, enum_seen);
        else if (fd->type == ESKIT__V1__FIELD__TYPE__TYPE_ENUM)
            enum_seen[find_enum(pb, fd->type_name)] = 1;
    }
}

static es_err check_field(const Eskit__V1__Schema *pb, const Eskit__V1__MessageType *m,
                          const Eskit__V1__Field *f, es_error_t *err) {
    const char *t = m->full_name;
    if (f->number < 1 || f->number > MAX_FIELD_NUMBER || !is_name(f->name, 0))
        return es_fail(err, ES_EDECODE, "field %u of %s: bad number or name '%s'", f->number, t,
                       f->name);
    if (!protobuf_c_enum_descriptor_get_value(&eskit__v1__field__type__descriptor, (int)f->type) ||
        f->type == ESKIT__V1__FIELD__TYPE__TYPE_UNSPECIFIED)
        return es_fail(err, ES_EDECODE, "field %s = %u of %s: unknown type %d", f->name, f->number,
                       t, (int)f->type);
    if (!protobuf_c_enum_descriptor_get_value(&eskit__v1__field__label__descriptor, (int)f->label))
        return es_fail(err, ES_EDECODE, "field %s = %u of %s: unknown label %d", f->name, f->number,
                       t, (int)f->label);
    int is_msg = f->type == ESKIT__V1__FIELD__TYPE__TYPE_MESSAGE;
    int is_enum = f->type == ESKIT__V1__FIELD__TYPE__TYPE_ENUM;
    if ((is_msg && find_message(pb, f->type_name) == pb->n_messages) ||
        (is_enum && find_enum(pb, f->type_name) == pb->n_enums))
        return es_fail(err, ES_EDECODE,
                       "field %s = %u of %s refers to %s, a type the schema does not carry",
                       f->name, f->number, t, f->type_name);
    if (!is_msg && !is_enum && f->type_name[0])
        return es_fail(err, ES_EDECODE, "field %s = %u of %s: a %s field with a type name '%s'",
                       f->name, f->number, t, es_schema_type_text(f), f->type_name);
    if (f->oneof > m->n_oneofs)
        return es_fail(err, ES_EDECODE, "field %s = %u of %s: oneof %u of %zu", f->name, f->number,
                       t, f->oneof, m->n_oneofs);
    if (f->packed && f->label != ESKIT__V1__FIELD__LABEL__LABEL_REPEATED)
        return es_fail(err, ES_EDECODE, "field %s = %u of %s: packed but not repeated", f->name,
                       f->number, t);
    return ES_OK;
}

static es_err check_message(const Eskit__V1__Schema *pb, const Eskit__V1__MessageType *m,
                            es_error_t *err) {
    uint32_t next_oneof = 1;
    for (size_t i = 0; i < m->n_fields; i++) {
        const Eskit__V1__Field *f = m->fields[i];
        es_err e = check_field(pb, m, f, err);
        if (e != ES_OK)
            return e;
        if (i > 0 && f->number <= m->fields[i - 1]->number)
            return es_fail(err, ES_EDECODE, "%s: field %u after field %u (fields go by number)",
                           m->full_name, f->number, m->fields[i - 1]->number);
        if (f->oneof >= next_oneof) {
            if (f->oneof != next_oneof)
                return es_fail(err, ES_EDECODE,
                               "%s: oneof %u before oneof %u (oneofs go by lowest field number)",
                               m->full_name, f->oneof, next_oneof);
            next_oneof++;
        }
    }
    if (next_oneof != m->n_oneofs + 1)
        return es_fail(err, ES_EDECODE, "%s: oneof %u has no field", m->full_name, next_oneof);
    for (size_t i = 0; i < m->n_oneofs; i++)
        if (!is_name(m->oneofs[i], 0))
            return es_fail(err, ES_EDECODE, "%s: bad oneof name '%s'", m->full_name, m->oneofs[i]);
    return ES_OK;
}

static es_err check_enum(const Eskit__V1__EnumType *en, es_error_t *err) {
    if (en->n_values == 0)
        return es_fail(err, ES_EDECODE, "enum %s has no value", en->full_name);
    for (size_t i = 0; i < en->n_values; i++) {
        const Eskit__V1__EnumValue *v = en->values[i], *p = i ? en->values[i - 1] : NULL;
        if (!is_name(v->name, 0))
            return es_fail(err, ES_EDECODE, "enum %s: bad value name '%s'", en->full_name, v->name);
        if (p &&
            (v->number < p->number || (v->number == p->number && strcmp(p->name, v->name) >= 0)))
            return es_fail(err, ES_EDECODE,
                           "enum %s: value %s = %d after %s = %d (values go by number, then name)",
                           en->full_name, v->name, v->number, p->name, p->number);
    }
    return ES_OK;
}

/* Orders and names of the lists, then closure: every field's type is carried, and every type
 * carried is reached from the registered one. */
/* More types than any service has: a record beyond it is refused rather than walked (the walk
 * of reached types recurses once per message in a chain). */
#define MAX_SCHEMA_TYPES 4096

static es_err check_canonical(const Eskit__V1__Schema *pb, es_error_t *err) {
    if (pb->n_messages > MAX_SCHEMA_TYPES || pb->n_enums > MAX_SCHEMA_TYPES)
        return es_fail(err, ES_EDECODE,
                       "the schema of '%.255s' carries %zu message and %zu enum types; at most %d "
                       "of each",
                       pb->full_name, pb->n_messages, pb->n_enums, MAX_SCHEMA_TYPES);
    if (!is_name(pb->full_name, 1) || pb->n_messages == 0 ||
        strcmp(pb->messages[0]->full_name, pb->full_name))
        return es_fail(err, ES_EDECODE, "the registered type '%s' is not the first message",
                       pb->full_name);
    for (size_t i = 0; i < pb->n_messages; i++) {
        const char *name = pb->messages[i]->full_name;
        if (!is_name(name, 1))
            return es_fail(err, ES_EDECODE, "bad message name '%s'", name);
        if (i > 0 && !strcmp(name, pb->full_name))
            return es_fail(err, ES_EDECODE, "message %s is listed twice", name);
        if (i > 1 && strcmp(pb->messages[i - 1]->full_name, name) >= 0)
            return es_fail(err, ES_EDECODE, "message %s after %s (messages go by full name)", name,
                           pb->messages[i - 1]->full_name);
    }
    for (size_t i = 0; i < pb->n_enums; i++) {
        const char *name = pb->enums[i]->full_name;
        if (!is_name(name, 1))
            return es_fail(err, ES_EDECODE, "bad enum name '%s'", name);
        if (i > 0 && strcmp(pb->enums[i - 1]->full_name, name) >= 0)
            return es_fail(err, ES_EDECODE, "enum %s after %s (enums go by full name)", name,
                           pb->enums[i - 1]->full_name);
        es_err e = check_enum(pb->enums[i], err);
        if (e != ES_OK)
            return e;
    }
    for (size_t i = 0; i < pb->n_messages; i++) {
        es_err e = check_message(pb, pb->messages[i], err);
        if (e != ES_OK)
            return e;
    }
    unsigned char *seen = calloc(pb->n_messages + pb->n_enums + 1, 1);
    if (!seen)
        return es_fail(err, ES_ENOMEM, "out of memory");
    mark_reached(pb, 0, seen, seen + pb->n_messages);
    es_err e = ES_OK;
    for (size_t i = 0; i < pb->n_messages + pb->n_enums && e == ES_OK; i++)
        if (!seen[i])
            e = es_fail(err, ES_EDECODE, "%s is not reached from %s",
                        i < pb->n_messages ? pb->messages[i]->full_name
                                           : pb->enums[i - pb->n_messages]->full_name,
                        pb->full_name);
    free(seen);
    return e;
}

static es_err parse(const uint8_t *bytes, size_t len, es_schema_t **out, es_error_t *err) {
    es_schema_t *s = calloc(1, sizeof *s);
    if (!s || !(s->bytes = malloc(len ? len : 1))) {
        free(s);
        return es_fail(err, ES_ENOMEM, "out of memory");
    }
    if (len)
        memcpy(s->bytes, bytes, len);
    s->len = len;
    es_err e = ES_OK;
    s->pb = eskit__v1__schema__unpack(NULL, len, s->bytes);
    if (!s->pb)
        e = es_fail(err, ES_EDECODE, "not an eskit.v1.Schema (malformed or truncated bytes)");
    if (e == ES_OK)
        e = check_canonical(s->pb, err);
    if (e == ES_OK && eskit__v1__schema__get_packed_size(s->pb) != len)
        e = es_fail(err, ES_EDECODE, "not in canonical encoding (it packs to other bytes)");
    if (e == ES_OK) {
        uint8_t *again = malloc(len ? len : 1);
        if (!again)
            e = es_fail(err, ES_ENOMEM, "out of memory");
        else if (eskit__v1__schema__pack(s->pb, again) != len || memcmp(again, s->bytes, len))
            e = es_fail(err, ES_EDECODE, "not in canonical encoding (it packs to other bytes)");
        free(again);
    }
    if (e != ES_OK) {
        es_error_prefix(err, "reading a schema: ");
        es_schema_free(s);
        return e;
    }
    es_schema_fingerprint_of(s->bytes, s->len, s->fingerprint);
    *out = s;
    return ES_OK;
}

es_err es_schema_parse(const uint8_t *bytes, size_t len, es_schema_t **out, es_error_t *err) {
    if (!out || (!bytes && len))
        return es_fail(err, ES_EINVAL, "es_schema_parse: NULL argument");
    *out = NULL;
    return parse(bytes ? bytes : (const uint8_t *)"", len, out, err);
}

static es_err pack_and_parse(const Eskit__V1__Schema *pb, es_schema_t **out, es_error_t *err) {
    size_t len = eskit__v1__schema__get_packed_size(pb);
    uint8_t *b = malloc(len ? len : 1);
    if (!b)
        return es_fail(err, ES_ENOMEM, "out of memory");
    eskit__v1__schema__pack(pb, b);
    es_err e = parse(b, len, out, err);
    free(b);
    return e;
}

es_err es_schema_from_model(const Eskit__V1__Schema *pb, es_schema_t **out, es_error_t *err) {
    if (!pb || !out)
        return es_fail(err, ES_EINVAL, "es_schema_from_model: NULL argument");
    *out = NULL;
    return pack_and_parse(pb, out, err);
}

const uint8_t *es_schema_bytes(const es_schema_t *s, size_t *len) {
    *len = s->len;
    return s->bytes;
}

const char *es_schema_name(const es_schema_t *s) {
    return s->pb->full_name;
}

const char *es_schema_fingerprint(const es_schema_t *s) {
    return s->fingerprint;
}

void es_schema_free(es_schema_t *s) {
    if (!s)
        return;
    if (s->pb)
        eskit__v1__schema__free_unpacked(s->pb, NULL);
    free(s->bytes);
    free(s);
}

/* ---- from a descriptor ---- */

/* Every message and enum type a descriptor reaches, the registered one first. */
typedef struct walk {
    const ProtobufCMessageDescriptor **msgs;
    size_t n_msgs, cap_msgs;
    const ProtobufCEnumDescriptor **enums;
    size_t n_enums, cap_enums;
} walk_t;

/* protobuf-c names have no leading dot; a descriptor written by hand might. */
static const char *undot(const char *name) {
    return name[0] == '.' ? name + 1 : name;
}

static es_err walk_enum(walk_t *w, const ProtobufCEnumDescriptor *d, es_error_t *err) {
    if (!d || d->magic != PROTOBUF_C__ENUM_DESCRIPTOR_MAGIC)
        return es_fail(err, ES_EINVAL, "a field's enum descriptor is not a protobuf-c one");
    for (size_t i = 0; i < w->n_enums; i++)
        if (w->enums[i] == d || !strcmp(undot(w->enums[i]->name), undot(d->name)))
            return ES_OK;
    es_err e = es_grow((void **)&w->enums, &w->cap_enums, w->n_enums, sizeof *w->enums, err);
    if (e == ES_OK)
        w->enums[w->n_enums++] = d;
    return e;
}

static es_err walk_message(walk_t *w, const ProtobufCMessageDescriptor *d, es_error_t *err) {
    if (!d || d->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC)
        return es_fail(err, ES_EINVAL, "not a protobuf-c message descriptor");
    for (size_t i = 0; i < w->n_msgs; i++)
        if (w->msgs[i] == d || !strcmp(undot(w->msgs[i]->name), undot(d->name)))
            return ES_OK;
    es_err e = es_grow((void **)&w->msgs, &w->cap_msgs, w->n_msgs, sizeof *w->msgs, err);
    if (e != ES_OK)
        return e;
    w->msgs[w->n_msgs++] = d;
    for (unsigned i = 0; i < d->n_fields && e == ES_OK; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type == PROTOBUF_C_TYPE_MESSAGE)
            e = walk_message(w, f->descriptor, err);
        else if (f->type == PROTOBUF_C_TYPE_ENUM)
            e = walk_enum(w, f->descriptor, err);
    }
    return e;
}

static int msg_by_name(const void *a, const void *b) {
    const ProtobufCMessageDescriptor *x = *(const ProtobufCMessageDescriptor *const *)a;
    const ProtobufCMessageDescriptor *y = *(const ProtobufCMessageDescriptor *const *)b;
    return strcmp(undot(x->name), undot(y->name));
}

static int enum_by_name(const void *a, const void *b) {
    const ProtobufCEnumDescriptor *x = *(const ProtobufCEnumDescriptor *const *)a;
    const ProtobufCEnumDescriptor *y = *(const ProtobufCEnumDescriptor *const *)b;
    return strcmp(undot(x->name), undot(y->name));
}

static int field_by_number(const void *a, const void *b) {
    const ProtobufCFieldDescriptor *x = *(const ProtobufCFieldDescriptor *const *)a;
    const ProtobufCFieldDescriptor *y = *(const ProtobufCFieldDescriptor *const *)b;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int value_by_number(const void *a, const void *b) {
    const Eskit__V1__EnumValue *x = *(Eskit__V1__EnumValue *const *)a;
    const Eskit__V1__EnumValue *y = *(Eskit__V1__EnumValue *const *)b;
    if (x->number != y->number)
        return x->number < y->number ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* The model being built: its parts point into the descriptors' strings, except oneof names. */
typedef struct build {
    Eskit__V1__Schema pb;
    Eskit__V1__MessageType *mts, **mtp;
    Eskit__V1__Field *fs, **fsp;
    const ProtobufCFieldDescriptor **order;
    unsigned *offsets; /* per message: the quantifier_offset of each of its oneofs */
    char **oneofs;     /* n_oneofs names, each allocated */
    size_t n_oneofs;
    Eskit__V1__EnumType *ets, **etp;
    Eskit__V1__EnumValue *vs, **vsp;
} build_t;

/* protobuf-c's ProtobufCType to descriptor.proto's numbering. */
static Eskit__V1__Field__Type field_type(ProtobufCType t) {
    static const Eskit__V1__Field__Type map[] = {
        [PROTOBUF_C_TYPE_INT32] = ESKIT__V1__FIELD__TYPE__TYPE_INT32,
        [PROTOBUF_C_TYPE_SINT32] = ESKIT__V1__FIELD__TYPE__TYPE_SINT32,
        [PROTOBUF_C_TYPE_SFIXED32] = ESKIT__V1__FIELD__TYPE__TYPE_SFIXED32,
        [PROTOBUF_C_TYPE_INT64] = ESKIT__V1__FIELD__TYPE__TYPE_INT64,
        [PROTOBUF_C_TYPE_SINT64] = ESKIT__V1__FIELD__TYPE__TYPE_SINT64,
        [PROTOBUF_C_TYPE_SFIXED64] = ESKIT__V1__FIELD__TYPE__TYPE_SFIXED64,
        [PROTOBUF_C_TYPE_UINT32] = ESKIT__V1__FIELD__TYPE__TYPE_UINT32,
        [PROTOBUF_C_TYPE_FIXED32] = ESKIT__V1__FIELD__TYPE__TYPE_FIXED32,
        [PROTOBUF_C_TYPE_UINT64] = ESKIT__V1__FIELD__TYPE__TYPE_UINT64,
        [PROTOBUF_C_TYPE_FIXED64] = ESKIT__V1__FIELD__TYPE__TYPE_FIXED64,
        [PROTOBUF_C_TYPE_FLOAT] = ESKIT__V1__FIELD__TYPE__TYPE_FLOAT,
        [PROTOBUF_C_TYPE_DOUBLE] = ESKIT__V1__FIELD__TYPE__TYPE_DOUBLE,
        [PROTOBUF_C_TYPE_BOOL] = ESKIT__V1__FIELD__TYPE__TYPE_BOOL,
        [PROTOBUF_C_TYPE_ENUM] = ESKIT__V1__FIELD__TYPE__TYPE_ENUM,
        [PROTOBUF_C_TYPE_STRING] = ESKIT__V1__FIELD__TYPE__TYPE_STRING,
        [PROTOBUF_C_TYPE_BYTES] = ESKIT__V1__FIELD__TYPE__TYPE_BYTES,
        [PROTOBUF_C_TYPE_MESSAGE] = ESKIT__V1__FIELD__TYPE__TYPE_MESSAGE};
    return (unsigned)t < sizeof map / sizeof *map ? map[t]
                                                  : ESKIT__V1__FIELD__TYPE__TYPE_UNSPECIFIED;
}

/* protobuf-c's labels to descriptor.proto's; LABEL_NONE (proto3, no label) is unspecified. */
static Eskit__V1__Field__Label field_label(ProtobufCLabel l) {
    switch (l) {
    case PROTOBUF_C_LABEL_REQUIRED:
        return ESKIT__V1__FIELD__LABEL__LABEL_REQUIRED;
    case PROTOBUF_C_LABEL_OPTIONAL:
        return ESKIT__V1__FIELD__LABEL__LABEL_OPTIONAL;
    case PROTOBUF_C_LABEL_REPEATED:
        return ESKIT__V1__FIELD__LABEL__LABEL_REPEATED;
    case PROTOBUF_C_LABEL_NONE:
        break;
    }
    return ESKIT__V1__FIELD__LABEL__LABEL_UNSPECIFIED;
}

static void build_field(Eskit__V1__Field *f, const ProtobufCFieldDescriptor *fd) {
    eskit__v1__field__init(f);
    f->number = fd->id;
    f->name = (char *)fd->name;
    f->type = field_type(fd->type);
    f->label = field_label(fd->label);
    if (fd->type == PROTOBUF_C_TYPE_MESSAGE)
        f->type_name = (char *)undot(((const ProtobufCMessageDescriptor *)fd->descriptor)->name);
    else if (fd->type == PROTOBUF_C_TYPE_ENUM)
        f->type_name = (char *)undot(((const ProtobufCEnumDescriptor *)fd->descriptor)->name);
    f->packed = (fd->flags & PROTOBUF_C_FIELD_FLAG_PACKED) != 0;
}

/* m's fields by number; a oneof's fields share a quantifier_offset (see the top of the file). */
static es_err build_message(build_t *b, Eskit__V1__MessageType *m,
                            const ProtobufCMessageDescriptor *d, size_t first) {
    eskit__v1__message_type__init(m);
    m->full_name = (char *)undot(d->name);
    m->n_fields = d->n_fields;
    m->fields = b->fsp + first;
    m->oneofs = b->oneofs + b->n_oneofs;
    const ProtobufCFieldDescriptor **order = b->order + first;
    unsigned *offsets = b->offsets + first;
    for (unsigned i = 0; i < d->n_fields; i++)
        order[i] = &d->fields[i];
    qsort(order, d->n_fields, sizeof *order, field_by_number);
    for (unsigned i = 0; i < d->n_fields; i++) {
        Eskit__V1__Field *f = &b->fs[first + i];
        build_field(f, order[i]);
        b->fsp[first + i] = f;
        if (!(order[i]->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
            continue;
        size_t k = 0;
        while (k < m->n_oneofs && offsets[k] != order[i]->quantifier_offset)
            k++;
        if (k == m->n_oneofs) {
            size_t n = sizeof ONEOF_PREFIX + strlen(order[i]->name);
            char *name = malloc(n);
            if (!name)
                return ES_ENOMEM;
            snprintf(name, n, ONEOF_PREFIX "%s", order[i]->name);
            offsets[k] = order[i]->quantifier_offset;
            b->oneofs[b->n_oneofs++] = name;
            m->n_oneofs++;
        }
        f->oneof = (uint32_t)k + 1;
    }
    return ES_OK;
}

static void build_enum(build_t *b, Eskit__V1__EnumType *et, const ProtobufCEnumDescriptor *d,
                       size_t first) {
    eskit__v1__enum_type__init(et);
    et->full_name = (char *)undot(d->name);
    size_t n = d->n_value_names ? d->n_value_names : d->n_values;
    for (size_t i = 0; i < n; i++) {
        Eskit__V1__EnumValue *v = &b->vs[first + i];
        const ProtobufCEnumValue *src =
            d->n_value_names ? &d->values[d->values_by_name[i].index] : &d->values[i];
        eskit__v1__enum_value__init(v);
        v->name = (char *)(d->n_value_names ? d->values_by_name[i].name : src->name);
        v->number = src->value;
        b->vsp[first + i] = v;
    }
    et->n_values = n;
    et->values = b->vsp + first;
    qsort(et->values, n, sizeof *et->values, value_by_number);
}

static es_err build_model(build_t *b, const walk_t *w) {
    size_t nf = 0, nv = 0;
    for (size_t i = 0; i < w->n_msgs; i++)
        nf += w->msgs[i]->n_fields;
    for (size_t i = 0; i < w->n_enums; i++)
        nv += w->enums[i]->n_value_names ? w->enums[i]->n_value_names : w->enums[i]->n_values;
    b->mts = calloc(w->n_msgs, sizeof *b->mts);
    b->mtp = calloc(w->n_msgs, sizeof *b->mtp);
    b->fs = calloc(nf + 1, sizeof *b->fs);
    b->fsp = calloc(nf + 1, sizeof *b->fsp);
    b->order = calloc(nf + 1, sizeof *b->order);
    b->oneofs = calloc(nf + 1, sizeof *b->oneofs);
    b->offsets = calloc(nf + 1, sizeof *b->offsets);
    b->ets = calloc(w->n_enums + 1, sizeof *b->ets);
    b->etp = calloc(w->n_enums + 1, sizeof *b->etp);
    b->vs = calloc(nv + 1, sizeof *b->vs);
    b->vsp = calloc(nv + 1, sizeof *b->vsp);
    if (!b->mts || !b->mtp || !b->fs || !b->fsp || !b->order || !b->oneofs || !b->offsets ||
        !b->ets || !b->etp || !b->vs || !b->vsp)
        return ES_ENOMEM;
    eskit__v1__schema__init(&b->pb);
    b->pb.full_name = (char *)undot(w->msgs[0]->name);
    b->pb.n_messages = w->n_msgs;
    b->pb.messages = b->mtp;
    b->pb.n_enums = w->n_enums;
    b->pb.enums = b->etp;
    nf = 0;
    for (size_t i = 0; i < w->n_msgs; i++) {
        if (build_message(b, &b->mts[i], w->msgs[i], nf) != ES_OK)
            return ES_ENOMEM;
        b->mtp[i] = &b->mts[i];
        nf += w->msgs[i]->n_fields;
    }
    nv = 0;
    for (size_t i = 0; i < w->n_enums; i++) {
        build_enum(b, &b->ets[i], w->enums[i], nv);
        b->etp[i] = &b->ets[i];
        nv += b->ets[i].n_values;
    }
    return ES_OK;
}

static void build_free(build_t *b) {
    for (size_t i = 0; i < b->n_oneofs; i++)
        free(b->oneofs[i]);
    free(b->mts);
    free(b->mtp);
    free(b->fs);
    free(b->fsp);
    free(b->order);
    free(b->oneofs);
    free(b->offsets);
    free(b->ets);
    free(b->etp);
    free(b->vs);
    free(b->vsp);
}

es_err es_schema_of(const ProtobufCMessageDescriptor *d, es_schema_t **out, es_error_t *err) {
    if (!d || !out)
        return es_fail(err, ES_EINVAL, "es_schema_of: NULL argument");
    *out = NULL;
    walk_t w = {0};
    build_t b = {0};
    es_err e = walk_message(&w, d, err);
    if (e == ES_OK) {
        /* The registered type stays first; the rest by full name. */
        if (w.n_msgs > 1)
            qsort(w.msgs + 1, w.n_msgs - 1, sizeof *w.msgs, msg_by_name);
        if (w.n_enums) /* NULL then: qsort's pointer must not be, even for no elements */
            qsort(w.enums, w.n_enums, sizeof *w.enums, enum_by_name);
        if (build_model(&b, &w) != ES_OK)
            e = es_fail(err, ES_ENOMEM, "out of memory");
    }
    if (e == ES_OK)
        e = pack_and_parse(&b.pb, out, err);
    build_free(&b);
    free(w.msgs);
    free(w.enums);
    if (e != ES_OK && d->magic == PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC)
        es_error_prefix(err, "the schema of %s: ", d->name);
    return e;
}

/* ---- printing ---- */

static es_err put(es_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static es_err put(es_buf_t *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || es_buf_reserve(b, (size_t)n + 1) != ES_OK)
        return ES_ENOMEM;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return ES_OK;
}

static const char *label_text(const Eskit__V1__Field *f) {
    switch (f->label) {
    case ESKIT__V1__FIELD__LABEL__LABEL_OPTIONAL:
        return "optional ";
    case ESKIT__V1__FIELD__LABEL__LABEL_REQUIRED:
        return "required ";
    case ESKIT__V1__FIELD__LABEL__LABEL_REPEATED:
        return "repeated ";
    default:
        return "";
    }
}

static es_err text_field(es_buf_t *b, const Eskit__V1__Field *f, const char *indent) {
    return put(b, "%s%s%s %s = %u%s;\n", indent, f->oneof ? "" : label_text(f),
               es_schema_type_text(f), f->name, f->number, f->packed ? " [packed = true]" : "");
}

/* A oneof's fields are printed together where its lowest-numbered field is. */
static es_err text_message(es_buf_t *b, const Eskit__V1__MessageType *m) {
    es_err e = put(b, "message %s {\n", m->full_name);
    uint32_t printed = 0;
    for (size_t i = 0; i < m->n_fields && e == ES_OK; i++) {
        const Eskit__V1__Field *f = m->fields[i];
        if (!f->oneof) {
            e = text_field(b, f, "  ");
            continue;
        }
        if (f->oneof <= printed)
            continue;
        printed = f->oneof;
        e = put(b, "  oneof %s {\n", m->oneofs[f->oneof - 1]);
        for (size_t j = i; j < m->n_fields && e == ES_OK; j++)
            if (m->fields[j]->oneof == f->oneof)
                e = text_field(b, m->fields[j], "    ");
        if (e == ES_OK)
            e = put(b, "  }\n");
    }
    return e == ES_OK ? put(b, "}\n") : e;
}

static es_err text(es_buf_t *b, const es_schema_t *s) {
    es_err e = put(b, "// %s %s\n", s->pb->full_name, s->fingerprint);
    for (size_t i = 0; i < s->pb->n_messages && e == ES_OK; i++)
        e = text_message(b, s->pb->messages[i]);
    for (size_t i = 0; i < s->pb->n_enums && e == ES_OK; i++) {
        const Eskit__V1__EnumType *en = s->pb->enums[i];
        e = put(b, "enum %s {\n", en->full_name);
        for (size_t j = 0; j < en->n_values && e == ES_OK; j++)
            e = put(b, "  %s = %d;\n", en->values[j]->name, en->values[j]->number);
        if (e == ES_OK)
            e = put(b, "}\n");
    }
    return e;
}

/* A JSON string: quotes, backslashes and control characters escaped (names are checked to be
 * identifiers, so this is a second line of defence). */
static es_err jstr(es_buf_t *b, const char *s) {
    es_err e = put(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p && e == ES_OK; p++) {
        if (*p == '"' || *p == '\\')
            e = put(b, "\\%c", *p);
        else if (*p < 0x20)
            e = put(b, "\\u%04x", *p);
        else
            e = put(b, "%c", *p);
    }
    return e == ES_OK ? put(b, "\"") : e;
}

static const char *enum_text(const ProtobufCEnumDescriptor *d, int v) {
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(d, v);
    return ev ? ev->name : "UNKNOWN";
}

static es_err json_field(es_buf_t *b, const Eskit__V1__Field *f) {
    es_err e = put(b, "{\"number\":%u,\"name\":", f->number);
    if (e == ES_OK)
        e = jstr(b, f->name);
    if (e == ES_OK)
        e = put(b, ",\"type\":\"%s\",\"label\":\"%s\",\"type_name\":",
                enum_text(&eskit__v1__field__type__descriptor, (int)f->type),
                enum_text(&eskit__v1__field__label__descriptor, (int)f->label));
    if (e == ES_OK)
        e = jstr(b, f->type_name);
    return e == ES_OK
               ? put(b, ",\"oneof\":%u,\"packed\":%s}", f->oneof, f->packed ? "true" : "false")
               : e;
}

static es_err json_message(es_buf_t *b, const Eskit__V1__MessageType *m) {
    es_err e = put(b, "{\"full_name\":");
    if (e == ES_OK)
        e = jstr(b, m->full_name);
    if (e == ES_OK)
        e = put(b, ",\"fields\":[");
    for (size_t i = 0; i < m->n_fields && e == ES_OK; i++) {
        e = i ? put(b, ",") : ES_OK;
        if (e == ES_OK)
            e = json_field(b, m->fields[i]);
    }
    if (e == ES_OK)
        e = put(b, "],\"oneofs\":[");
    for (size_t i = 0; i < m->n_oneofs && e == ES_OK; i++) {
        e = i ? put(b, ",") : ES_OK;
        if (e == ES_OK)
            e = jstr(b, m->oneofs[i]);
    }
    return e == ES_OK ? put(b, "]}") : e;
}

static es_err json_enum(es_buf_t *b, const Eskit__V1__EnumType *en) {
    es_err e = put(b, "{\"full_name\":");
    if (e == ES_OK)
        e = jstr(b, en->full_name);
    if (e == ES_OK)
        e = put(b, ",\"values\":[");
    for (size_t i = 0; i < en->n_values && e == ES_OK; i++) {
        e = put(b, "%s{\"name\":", i ? "," : "");
        if (e == ES_OK)
            e = jstr(b, en->values[i]->name);
        if (e == ES_OK)
            e = put(b, ",\"number\":%d}", en->values[i]->number);
    }
    return e == ES_OK ? put(b, "]}") : e;
}

static es_err json(es_buf_t *b, const es_schema_t *s) {
    es_err e = put(b, "{\"full_name\":");
    if (e == ES_OK)
        e = jstr(b, s->pb->full_name);
    if (e == ES_OK)
        e = put(b, ",\"fingerprint\":\"%s\",\"messages\":[", s->fingerprint);
    for (size_t i = 0; i < s->pb->n_messages && e == ES_OK; i++) {
        e = i ? put(b, ",") : ES_OK;
        if (e == ES_OK)
            e = json_message(b, s->pb->messages[i]);
    }
    if (e == ES_OK)
        e = put(b, "],\"enums\":[");
    for (size_t i = 0; i < s->pb->n_enums && e == ES_OK; i++) {
        e = i ? put(b, ",") : ES_OK;
        if (e == ES_OK)
            e = json_enum(b, s->pb->enums[i]);
    }
    return e == ES_OK ? put(b, "]}") : e;
}

es_err es_schema_format(const es_schema_t *s, int json_out, char **out, es_error_t *err) {
    if (!s || !out)
        return es_fail(err, ES_EINVAL, "es_schema_format: NULL argument");
    *out = NULL;
    es_buf_t b = {0};
    /* put leaves a NUL after what it wrote, and both forms write something. */
    es_err e = json_out ? json(&b, s) : text(&b, s);
    if (e != ES_OK) {
        es_buf_free(&b);
        return es_fail(err, ES_ENOMEM, "printing the schema of %s: out of memory",
                       s->pb->full_name);
    }
    *out = (char *)b.data;
    return ES_OK;
}
