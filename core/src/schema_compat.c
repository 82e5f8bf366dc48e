/*
 * Comparing schemas (docs/schemas.md, "Compatibility rules"): es_schema_check applies the wire
 * rules, modelled on Buf's WIRE breaking-change category, to a new schema of a type and its
 * recorded versions; es_schema_diff lists every change between two schemas.
 *
 * Types are paired by structure, not by name: the registered types are a pair, and so are the
 * types of two message (or enum) fields of one number in a pair. So a field's message type may
 * be renamed or moved to another package; what its fields mean on the wire is what is checked.
 *
 * Every rule is checked against the latest recorded version. protobuf-c descriptors carry no
 * reserved numbers, so the full history stands in for them: a field or enum value number that
 * an older version had, that the latest no longer has, may not come back with another name or
 * an incompatible type (FIELD_NO_REUSE_OF_DELETED_NUMBER, ENUM_VALUE_NO_REUSE). The newest
 * version that had a number is the one it is compared with.
 */
#include "schema_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define T(x) ESKIT__V1__FIELD__TYPE__TYPE_##x

/* ---- reports ---- */

typedef struct report {
    es_schema_report_t *r;
    size_t cap;
    es_err e; /* ES_ENOMEM once an add failed */
} report_t;

/* Adds a finding: "<type> <kind> <name> = <number>: <rule>: <detail>". rule is a literal (not
 * freed); type, field and message are the report's own. */
static void add(report_t *rp, const char *rule, const char *type, const char *kind,
                const char *field, long long number, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static void add(report_t *rp, const char *rule, const char *type, const char *kind,
                const char *field, long long number, const char *fmt, ...) {
    char detail[600], head[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (field)
        snprintf(head, sizeof head, "%s %s %s = %lld: %s: ", type, kind, field, number, rule);
    else
        snprintf(head, sizeof head, "%s: %s: ", type, rule);
    size_t n = strlen(head) + strlen(detail) + 1;
    char *msg = malloc(n);
    char *t = es_strdup0(type), *f = es_strdup0(field);
    if (rp->e != ES_OK || !msg || !t || (field && !f) ||
        es_grow((void **)&rp->r->findings, &rp->cap, rp->r->n, sizeof *rp->r->findings, NULL) !=
            ES_OK) {
        free(msg);
        free(t);
        free(f);
        rp->e = ES_ENOMEM;
        return;
    }
    snprintf(msg, n, "%s%s", head, detail);
    es_schema_finding_t *x = &rp->r->findings[rp->r->n++];
    x->rule = rule;
    x->type = t;
    x->field = f;
    x->number = (uint32_t)number;
    x->message = msg;
}

void es_schema_report_clear(es_schema_report_t *report) {
    if (!report)
        return;
    for (size_t i = 0; i < report->n; i++) {
        free((char *)report->findings[i].type);
        free((char *)report->findings[i].field);
        free((char *)report->findings[i].message);
    }
    free(report->findings);
    report->findings = NULL;
    report->n = 0;
}

/* ---- wire types ---- */

static int is_len_delimited(Eskit__V1__Field__Type t) {
    return t == T(STRING) || t == T(BYTES) || t == T(MESSAGE);
}

static const char *wire_name(Eskit__V1__Field__Type t) {
    switch (t) {
    case T(FIXED64):
    case T(SFIXED64):
    case T(DOUBLE):
        return "64-bit";
    case T(FIXED32):
    case T(SFIXED32):
    case T(FLOAT):
        return "32-bit";
    case T(STRING):
    case T(BYTES):
    case T(MESSAGE):
        return "length-delimited";
    default:
        return "varint";
    }
}

/* Buf's groups of interchangeable types; 0: a group of its own. */
static int group(Eskit__V1__Field__Type t) {
    switch (t) {
    case T(INT32):
    case T(UINT32):
    case T(INT64):
    case T(UINT64):
    case T(BOOL):
        return 1;
    case T(SINT32):
    case T(SINT64):
        return 2;
    case T(FIXED32):
    case T(SFIXED32):
        return 3;
    case T(FIXED64):
    case T(SFIXED64):
        return 4;
    case T(STRING):
    case T(BYTES):
        return 5;
    default:
        return 0;
    }
}

/* Whether a value written as a is read as b, message and enum types aside (their own rules
 * compare them): protobuf's "Updating a message type" lets an enum be read as any of int32,
 * uint32, int64 and uint64, and those as it. */
static int wire_compatible(Eskit__V1__Field__Type a, Eskit__V1__Field__Type b) {
    if (a == b || (group(a) && group(a) == group(b)))
        return 1;
    int a_int = group(a) == 1 && a != T(BOOL), b_int = group(b) == 1 && b != T(BOOL);
    return (a == T(ENUM) && b_int) || (b == T(ENUM) && a_int);
}

static int is_repeated(const Eskit__V1__Field *f) {
    return f->label == ESKIT__V1__FIELD__LABEL__LABEL_REPEATED;
}

static int is_required(const Eskit__V1__Field *f) {
    return f->label == ESKIT__V1__FIELD__LABEL__LABEL_REQUIRED;
}

/* Buf's FIELD_WIRE_COMPATIBLE_CARDINALITY: singular and repeated are interchangeable for
 * length-delimited types only (a singular reader keeps the last element, or merges messages);
 * a repeated scalar may be packed, which a singular reader cannot read. */
static int cardinality_compatible(const Eskit__V1__Field *a, const Eskit__V1__Field *b) {
    return is_repeated(a) == is_repeated(b) ||
           (is_len_delimited(a->type) && is_len_delimited(b->type));
}

/* ---- es_schema_check ---- */

/* A field or enum value number of a type of the new schema that a version has decided: the
 * newest version that has it is the one it is compared with. */
typedef struct key {
    const char *type; /* a full name of the new schema */
    long long number;
} decided_t;

typedef struct cmp {
    const es_schema_t *a, *b; /* a recorded version, the new schema */
    es_compat mode;
    size_t version;     /* a's version number (1-based) */
    int latest;         /* a is the latest version: every rule; else the reuse rules only */
    const void **pairs; /* pairs of types compared in this pass, two pointers each */
    size_t n_pairs, cap_pairs;
    decided_t *keys;
    size_t n_keys, cap_keys;
    report_t rep;
} cmp_t;

static int seen_pair(cmp_t *c, const void *x, const void *y) {
    for (size_t i = 0; i < c->n_pairs; i += 2)
        if (c->pairs[i] == x && c->pairs[i + 1] == y)
            return 1;
    if (es_grow((void **)&c->pairs, &c->cap_pairs, c->n_pairs + 1, sizeof *c->pairs, NULL) !=
        ES_OK) {
        c->rep.e = ES_ENOMEM;
        return 1;
    }
    c->pairs[c->n_pairs++] = x;
    c->pairs[c->n_pairs++] = y;
    return 0;
}

static int has_key(const cmp_t *c, const char *type, long long number) {
    for (size_t i = 0; i < c->n_keys; i++)
        if (c->keys[i].number == number && !strcmp(c->keys[i].type, type))
            return 1;
    return 0;
}

static void put_key(cmp_t *c, const char *type, long long number) {
    if (has_key(c, type, number))
        return;
    if (es_grow((void **)&c->keys, &c->cap_keys, c->n_keys, sizeof *c->keys, NULL) != ES_OK) {
        c->rep.e = ES_ENOMEM;
        return;
    }
    c->keys[c->n_keys].type = type;
    c->keys[c->n_keys++].number = number;
}

static int applies_backward(es_compat m) {
    return m == ES_COMPAT_BACKWARD || m == ES_COMPAT_FULL;
}

static int applies_forward(es_compat m) {
    return m == ES_COMPAT_FORWARD || m == ES_COMPAT_FULL;
}

static void cmp_message(cmp_t *c, const Eskit__V1__MessageType *ma,
                        const Eskit__V1__MessageType *mb);

static void cmp_enum_latest(cmp_t *c, const Eskit__V1__EnumType *ea,
                            const Eskit__V1__EnumType *eb) {
    for (size_t i = 0; i < eb->n_values; i++) {
        const Eskit__V1__EnumValue *vb = eb->values[i];
        for (size_t j = 0; j < ea->n_values; j++) {
            const Eskit__V1__EnumValue *va = ea->values[j];
            if (strcmp(va->name, vb->name) || va->number == vb->number)
                continue;
            add(&c->rep, "ENUM_VALUE_SAME_NUMBER", eb->full_name, "value", vb->name, vb->number,
                "%s was %d in version %zu, and recorded events carry %d for it; keep %s = %d "
                "and add a new value with a new number, or add an upcaster and use a new type",
                vb->name, va->number, c->version, va->number, vb->name, va->number);
        }
    }
}

static void cmp_enum_history(cmp_t *c, const Eskit__V1__EnumType *ea,
                             const Eskit__V1__EnumType *eb) {
    for (size_t i = 0; i < eb->n_values; i++) {
        const Eskit__V1__EnumValue *vb = eb->values[i];
        if (has_key(c, eb->full_name, vb->number))
            continue;
        const char *old = NULL;
        int same = 0;
        for (size_t j = 0; j < ea->n_values; j++)
            if (ea->values[j]->number == vb->number) {
                old = ea->values[j]->name;
                same |= !strcmp(old, vb->name);
            }
        if (old && !same)
            add(&c->rep, "ENUM_VALUE_NO_REUSE", eb->full_name, "value", vb->name, vb->number,
                "%d was %s in version %zu and was deleted since; events recorded then mean %s "
                "by it; give %s a new number (%d stays reserved by the catalogue's history)",
                vb->number, old, c->version, old, vb->name, vb->number);
    }
}

static void cmp_enum(cmp_t *c, const Eskit__V1__EnumType *ea, const Eskit__V1__EnumType *eb) {
    if (!ea || !eb || seen_pair(c, ea, eb))
        return;
    if (c->latest)
        cmp_enum_latest(c, ea, eb);
    else
        cmp_enum_history(c, ea, eb);
    for (size_t j = 0; j < ea->n_values; j++)
        put_key(c, eb->full_name, ea->values[j]->number);
}

static const char *oneof_name(const Eskit__V1__MessageType *m, const Eskit__V1__Field *f) {
    return f->oneof ? m->oneofs[f->oneof - 1] : "";
}

/* Whether the fields sharing fa's oneof in ma that are in a oneof in mb too share fb's (one
 * moved out of its oneof is reported on its own). */
static int same_oneof_members(const Eskit__V1__MessageType *ma, const Eskit__V1__Field *fa,
                              const Eskit__V1__MessageType *mb, const Eskit__V1__Field *fb) {
    for (size_t i = 0; i < ma->n_fields; i++) {
        const Eskit__V1__Field *g = ma->fields[i];
        const Eskit__V1__Field *h = es_schema_field(mb, g->number);
        if (g->oneof == fa->oneof && h && h->oneof && h->oneof != fb->oneof)
            return 0;
    }
    return 1;
}

static void check_oneof(cmp_t *c, const Eskit__V1__MessageType *ma, const Eskit__V1__Field *fa,
                        const Eskit__V1__MessageType *mb, const Eskit__V1__Field *fb) {
    char what[300];
    if (!fa->oneof && fb->oneof)
        snprintf(what, sizeof what, "moved into oneof %s (in none in version %zu)",
                 oneof_name(mb, fb), c->version);
    else if (fa->oneof && !fb->oneof)
        snprintf(what, sizeof what, "moved out of oneof %s of version %zu", oneof_name(ma, fa),
                 c->version);
    else if (fa->oneof &&
             (!same_oneof_members(ma, fa, mb, fb) || !same_oneof_members(mb, fb, ma, fa)))
        snprintf(what, sizeof what, "moved from oneof %s of version %zu to another oneof, %s",
                 oneof_name(ma, fa), c->version, oneof_name(mb, fb));
    else
        return;
    add(&c->rep, "FIELD_SAME_ONEOF", mb->full_name, "field", fb->name, fb->number,
        "%s; setting one field of a oneof clears the others, so recorded events read "
        "differently; keep the field where it was, or add a new field with a new number, or add "
        "an upcaster and use a new type",
        what);
}

static void check_required(cmp_t *c, const Eskit__V1__MessageType *mb, const Eskit__V1__Field *fa,
                           const Eskit__V1__Field *fb) {
    if (fb && is_required(fb) && !(fa && is_required(fa)) && applies_backward(c->mode))
        add(&c->rep, "MESSAGE_SAME_REQUIRED_FIELDS", mb->full_name, "field", fb->name, fb->number,
            "%s required (backward): events recorded before it lack it, and a reader of this "
            "schema refuses them; make it optional, or add an upcaster and use a new type",
            fa ? "made" : "added as");
    if (fa && is_required(fa) && !(fb && is_required(fb)) && applies_forward(c->mode))
        add(&c->rep, "MESSAGE_SAME_REQUIRED_FIELDS", mb->full_name, "field", fa->name, fa->number,
            "required in version %zu and %s (forward): readers of the recorded schema refuse "
            "events without it; keep it required, or use a new type",
            c->version, fb ? "optional now" : "removed");
}

static void check_pair_latest(cmp_t *c, const Eskit__V1__MessageType *ma,
                              const Eskit__V1__Field *fa, const Eskit__V1__MessageType *mb,
                              const Eskit__V1__Field *fb) {
    if (!wire_compatible(fa->type, fb->type))
        add(&c->rep, "FIELD_WIRE_COMPATIBLE_TYPE", mb->full_name, "field", fb->name, fb->number,
            "%s in version %zu, %s now (%s%s%s), so recorded events misread; keep %s, or give "
            "the new field a new number, or add an upcaster and use a new type",
            es_schema_type_text(fa), c->version, es_schema_type_text(fb), wire_name(fa->type),
            strcmp(wire_name(fa->type), wire_name(fb->type)) ? " and " : ", same wire type but ",
            strcmp(wire_name(fa->type), wire_name(fb->type)) ? wire_name(fb->type)
                                                             : "not interchangeable",
            es_schema_type_text(fa));
    if (!cardinality_compatible(fa, fb))
        add(&c->rep, "FIELD_WIRE_COMPATIBLE_CARDINALITY", mb->full_name, "field", fb->name,
            fb->number,
            "%s in version %zu, %s now; a repeated %s may be packed, which a singular reader "
            "cannot read; keep the cardinality, or add a new field with a new number, or add an "
            "upcaster and use a new type",
            is_repeated(fa) ? "repeated" : "singular", c->version,
            is_repeated(fb) ? "repeated" : "singular", es_schema_type_text(fb));
    check_oneof(c, ma, fa, mb, fb);
    check_required(c, mb, fa, fb);
}

static void check_pair_history(cmp_t *c, const Eskit__V1__Field *fa,
                               const Eskit__V1__MessageType *mb, const Eskit__V1__Field *fb) {
    int same_kind = fa->type == fb->type || (fa->type != T(MESSAGE) && fb->type != T(MESSAGE) &&
                                             fa->type != T(ENUM) && fb->type != T(ENUM));
    if (strcmp(fa->name, fb->name) || !same_kind || !wire_compatible(fa->type, fb->type) ||
        !cardinality_compatible(fa, fb))
        add(&c->rep, "FIELD_NO_REUSE_OF_DELETED_NUMBER", mb->full_name, "field", fb->name,
            fb->number,
            "%u was %s %s in version %zu and was deleted since; events recorded then carry it "
            "there; give %s a new number (%u stays reserved by the catalogue's history), or add "
            "an upcaster and use a new type",
            fb->number, es_schema_type_text(fa), fa->name, c->version, fb->name, fb->number);
}

/* The message and enum types of a pair of fields, compared by their own rules. */
static void cmp_types(cmp_t *c, const Eskit__V1__Field *fa, const Eskit__V1__Field *fb) {
    if (fa->type == T(MESSAGE) && fb->type == T(MESSAGE))
        cmp_message(c, es_schema_message(c->a, fa->type_name),
                    es_schema_message(c->b, fb->type_name));
    else if (fa->type == T(ENUM) && fb->type == T(ENUM))
        cmp_enum(c, es_schema_enum(c->a, fa->type_name), es_schema_enum(c->b, fb->type_name));
}

static void cmp_message(cmp_t *c, const Eskit__V1__MessageType *ma,
                        const Eskit__V1__MessageType *mb) {
    if (!ma || !mb || seen_pair(c, ma, mb))
        return;
    for (size_t i = 0; i < mb->n_fields; i++) {
        const Eskit__V1__Field *fb = mb->fields[i];
        const Eskit__V1__Field *fa = es_schema_field(ma, fb->number);
        if (c->latest && !fa)
            check_required(c, mb, NULL, fb);
        if (!fa)
            continue;
        if (c->latest)
            check_pair_latest(c, ma, fa, mb, fb);
        else if (!has_key(c, mb->full_name, fb->number))
            check_pair_history(c, fa, mb, fb);
        cmp_types(c, fa, fb);
    }
    for (size_t i = 0; i < ma->n_fields; i++) {
        if (c->latest && !es_schema_field(mb, ma->fields[i]->number))
            check_required(c, mb, ma->fields[i], NULL);
        put_key(c, mb->full_name, ma->fields[i]->number);
    }
}

static void cmp_pass(cmp_t *c, const es_schema_t *a, size_t version, int latest) {
    c->a = a;
    c->version = version;
    c->latest = latest;
    c->n_pairs = 0;
    cmp_message(c, a->pb->messages[0], c->b->pb->messages[0]);
}

es_err es_schema_check(const es_schema_t *const *history, size_t n, const es_schema_t *next,
                       es_compat mode, es_schema_report_t *report, es_error_t *err) {
    if (!report || !next || (n && !history))
        return es_fail(err, ES_EINVAL, "es_schema_check: NULL argument");
    es_schema_report_clear(report);
    if (mode == ES_COMPAT_NONE || n == 0)
        return ES_OK;
    cmp_t c = {.b = next, .mode = mode, .rep = {.r = report}};
    cmp_pass(&c, history[n - 1], n, 1);
    for (size_t i = n - 1; i-- > 0;)
        cmp_pass(&c, history[i], i + 1, 0);
    free(c.pairs);
    free(c.keys);
    if (c.rep.e != ES_OK) {
        es_schema_report_clear(report);
        return es_fail(err, ES_ENOMEM, "checking the schema of %s: out of memory",
                       es_schema_name(next));
    }
    if (report->n == 0)
        return ES_OK;
    if (report->n == 1)
        return es_fail(err, ES_EINCOMPATIBLE, "%s", report->findings[0].message);
    return es_fail(err, ES_EINCOMPATIBLE, "%s (and %zu more)", report->findings[0].message,
                   report->n - 1);
}

/* ---- es_schema_diff ---- */

static void diff_field(report_t *rp, const Eskit__V1__MessageType *ma, const Eskit__V1__Field *fa,
                       const Eskit__V1__MessageType *mb, const Eskit__V1__Field *fb) {
    const char *t = mb->full_name;
    if (strcmp(fa->name, fb->name))
        add(rp, "FIELD_RENAMED", t, "field", fb->name, fb->number, "was %s", fa->name);
    if (fa->type != fb->type || strcmp(fa->type_name, fb->type_name))
        add(rp, "FIELD_TYPE_CHANGED", t, "field", fb->name, fb->number, "%s became %s",
            es_schema_type_text(fa), es_schema_type_text(fb));
    if (fa->label != fb->label)
        add(rp, "FIELD_LABEL_CHANGED", t, "field", fb->name, fb->number, "'%s' became '%s'",
            protobuf_c_enum_descriptor_get_value(&eskit__v1__field__label__descriptor,
                                                 (int)fa->label)
                ->name,
            protobuf_c_enum_descriptor_get_value(&eskit__v1__field__label__descriptor,
                                                 (int)fb->label)
                ->name);
    if (strcmp(oneof_name(ma, fa), oneof_name(mb, fb)))
        add(rp, "FIELD_ONEOF_CHANGED", t, "field", fb->name, fb->number, "oneof '%s' became '%s'",
            oneof_name(ma, fa), oneof_name(mb, fb));
    if (fa->packed != fb->packed)
        add(rp, "FIELD_PACKED_CHANGED", t, "field", fb->name, fb->number, "packed %s",
            fb->packed ? "now" : "no more");
}

/* A diff pairs types as es_schema_check does, by structure from the registered types; what
 * no pair reaches was added or removed. */
typedef struct diff {
    report_t rp;
    const es_schema_t *a, *b;
    unsigned char *paired_a, *paired_b; /* messages, then enums */
} diff_t;

static size_t index_of(const void *const *list, size_t n, const void *item) {
    size_t i = 0;
    while (i < n && list[i] != item)
        i++;
    return i;
}

static void diff_enum(report_t *rp, const Eskit__V1__EnumType *ea, const Eskit__V1__EnumType *eb);

static void diff_message(diff_t *d, const Eskit__V1__MessageType *ma,
                         const Eskit__V1__MessageType *mb);

/* Marks a pair of types; 0 when either was paired already. */
static int pair(diff_t *d, size_t ia, size_t ib) {
    if (d->paired_a[ia] || d->paired_b[ib])
        return 0;
    d->paired_a[ia] = d->paired_b[ib] = 1;
    return 1;
}

static void diff_types_of(diff_t *d, const Eskit__V1__Field *fa, const Eskit__V1__Field *fb) {
    const Eskit__V1__Schema *pa = d->a->pb, *pb = d->b->pb;
    if (fa->type == T(MESSAGE) && fb->type == T(MESSAGE)) {
        const Eskit__V1__MessageType *ma = es_schema_message(d->a, fa->type_name);
        const Eskit__V1__MessageType *mb = es_schema_message(d->b, fb->type_name);
        if (pair(d, index_of((const void *const *)pa->messages, pa->n_messages, ma),
                 index_of((const void *const *)pb->messages, pb->n_messages, mb)))
            diff_message(d, ma, mb);
    } else if (fa->type == T(ENUM) && fb->type == T(ENUM)) {
        const Eskit__V1__EnumType *ea = es_schema_enum(d->a, fa->type_name);
        const Eskit__V1__EnumType *eb = es_schema_enum(d->b, fb->type_name);
        if (pair(d, pa->n_messages + index_of((const void *const *)pa->enums, pa->n_enums, ea),
                 pb->n_messages + index_of((const void *const *)pb->enums, pb->n_enums, eb)))
            diff_enum(&d->rp, ea, eb);
    }
}

static void diff_message(diff_t *d, const Eskit__V1__MessageType *ma,
                         const Eskit__V1__MessageType *mb) {
    report_t *rp = &d->rp;
    for (size_t i = 0; i < ma->n_fields; i++) {
        const Eskit__V1__Field *fa = ma->fields[i], *fb = es_schema_field(mb, fa->number);
        if (!fb)
            add(rp, "FIELD_REMOVED", mb->full_name, "field", fa->name, fa->number, "was %s%s",
                es_schema_type_text(fa), is_repeated(fa) ? ", repeated" : "");
        else
            diff_field(rp, ma, fa, mb, fb);
        if (fb)
            diff_types_of(d, fa, fb);
    }
    for (size_t i = 0; i < mb->n_fields; i++) {
        const Eskit__V1__Field *fb = mb->fields[i];
        if (!es_schema_field(ma, fb->number))
            add(rp, "FIELD_ADDED", mb->full_name, "field", fb->name, fb->number, "%s%s",
                es_schema_type_text(fb), is_repeated(fb) ? ", repeated" : "");
    }
}

static const Eskit__V1__EnumValue *value_named(const Eskit__V1__EnumType *e, const char *name) {
    for (size_t i = 0; i < e->n_values; i++)
        if (!strcmp(e->values[i]->name, name))
            return e->values[i];
    return NULL;
}

/* A value of x at number whose name y does not have: the other side of a rename. */
static const Eskit__V1__EnumValue *renamed(const Eskit__V1__EnumType *x, int32_t number,
                                           const Eskit__V1__EnumType *y) {
    for (size_t i = 0; i < x->n_values; i++)
        if (x->values[i]->number == number && !value_named(y, x->values[i]->name))
            return x->values[i];
    return NULL;
}

static void diff_enum(report_t *rp, const Eskit__V1__EnumType *ea, const Eskit__V1__EnumType *eb) {
    const char *t = eb->full_name;
    for (size_t i = 0; i < ea->n_values; i++) {
        const Eskit__V1__EnumValue *va = ea->values[i], *vb = value_named(eb, va->name);
        const Eskit__V1__EnumValue *r = vb ? NULL : renamed(eb, va->number, ea);
        if (vb && vb->number != va->number)
            add(rp, "ENUM_VALUE_NUMBER_CHANGED", t, "value", vb->name, vb->number, "was %d",
                va->number);
        else if (r)
            add(rp, "ENUM_VALUE_RENAMED", t, "value", r->name, r->number, "was %s", va->name);
        else if (!vb)
            add(rp, "ENUM_VALUE_REMOVED", t, "value", va->name, va->number, "removed");
    }
    for (size_t i = 0; i < eb->n_values; i++) {
        const Eskit__V1__EnumValue *vb = eb->values[i];
        if (!value_named(ea, vb->name) && !renamed(ea, vb->number, eb))
            add(rp, "ENUM_VALUE_ADDED", t, "value", vb->name, vb->number, "added");
    }
}

/* Types no pair reached: removed from a, added in b. */
static void diff_unpaired(diff_t *d) {
    const Eskit__V1__Schema *pa = d->a->pb, *pb = d->b->pb;
    for (size_t i = 0; i < pa->n_messages + pa->n_enums; i++)
        if (!d->paired_a[i])
            add(&d->rp, "TYPE_REMOVED",
                i < pa->n_messages ? pa->messages[i]->full_name
                                   : pa->enums[i - pa->n_messages]->full_name,
                NULL, NULL, 0, "%s removed", i < pa->n_messages ? "message" : "enum");
    for (size_t i = 0; i < pb->n_messages + pb->n_enums; i++)
        if (!d->paired_b[i])
            add(&d->rp, "TYPE_ADDED",
                i < pb->n_messages ? pb->messages[i]->full_name
                                   : pb->enums[i - pb->n_messages]->full_name,
                NULL, NULL, 0, "%s added", i < pb->n_messages ? "message" : "enum");
}

es_err es_schema_diff(const es_schema_t *a, const es_schema_t *b, es_schema_report_t *report,
                      es_error_t *err) {
    if (!a || !b || !report)
        return es_fail(err, ES_EINVAL, "es_schema_diff: NULL argument");
    es_schema_report_clear(report);
    diff_t d = {.rp = {.r = report}, .a = a, .b = b};
    d.paired_a = calloc(a->pb->n_messages + a->pb->n_enums, 1);
    d.paired_b = calloc(b->pb->n_messages + b->pb->n_enums, 1);
    if (!d.paired_a || !d.paired_b)
        d.rp.e = ES_ENOMEM;
    if (d.rp.e == ES_OK) {
        d.paired_a[0] = d.paired_b[0] = 1;
        diff_message(&d, a->pb->messages[0], b->pb->messages[0]);
        diff_unpaired(&d);
    }
    free(d.paired_a);
    free(d.paired_b);
    if (d.rp.e != ES_OK) {
        es_schema_report_clear(report);
        return es_fail(err, ES_ENOMEM, "comparing schemas of %s: out of memory", es_schema_name(b));
    }
    return ES_OK;
}
