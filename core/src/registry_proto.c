/*
 * Renders a descriptor as .proto text (registry_proto.h). What a protobuf-c descriptor does not
 * keep is rendered so that the wire format is the same: a oneof is named choice_<n> (its name
 * is not in the descriptor), proto2 default values and reserved ranges are left out, and a map
 * field is recognised by its entry type (nested <Field>Entry with key 1 and value 2, as protoc
 * makes it) and rendered as map<K, V>. The file is proto2 when any field it holds is required.
 */
#include "registry_proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TYPES_MAX 256

typedef struct type_ref {
    const char *name; /* full name */
    const ProtobufCMessageDescriptor *msg;
    const ProtobufCEnumDescriptor *en; /* one of the two */
} type_ref;

typedef struct render {
    type_ref t[TYPES_MAX];
    size_t n;
    const char *pkg;
    int proto2;
    es_buf_t out;
    int failed;
} render;

static void put(render *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(render *r, const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line || es_buf_append(&r->out, line, (size_t)n, NULL))
        r->failed = 1;
}

static int known(const render *r, const char *name) {
    for (size_t i = 0; i < r->n; i++)
        if (!strcmp(r->t[i].name, name))
            return 1;
    return 0;
}

static es_err add(render *r, const char *name, const char *pkg, const ProtobufCMessageDescriptor *m,
                  const ProtobufCEnumDescriptor *en, const char *via, es_error_t *err) {
    if (known(r, name))
        return ES_OK;
    if (strcmp(pkg ? pkg : "", r->pkg))
        return es_fail(err, ES_EINVAL,
                       "%s refers to %s of package '%s', not '%s': eskit registers one schema "
                       "file per type without references, so a registered type reaches only "
                       "types of its own package (docs/registry.md)",
                       via, name, pkg ? pkg : "", r->pkg);
    if (r->n == TYPES_MAX)
        return es_fail(err, ES_EINVAL, "%s reaches more than %d types", r->t[0].name, TYPES_MAX);
    r->t[r->n++] = (type_ref){name, m, en};
    return ES_OK;
}

/* Every type d reaches, breadth first from d. */
static es_err collect(render *r, const ProtobufCMessageDescriptor *d, es_error_t *err) {
    es_err e = add(r, d->name, d->package_name, d, NULL, "", err);
    for (size_t i = 0; e == ES_OK && i < r->n; i++) {
        const ProtobufCMessageDescriptor *m = r->t[i].msg;
        for (unsigned f = 0; m && e == ES_OK && f < m->n_fields; f++) {
            const ProtobufCFieldDescriptor *fd = &m->fields[f];
            char via[512];
            snprintf(via, sizeof via, "field %s.%s (%u)", m->name, fd->name, fd->id);
            if (fd->label == PROTOBUF_C_LABEL_REQUIRED)
                r->proto2 = 1;
            if (fd->type == PROTOBUF_C_TYPE_MESSAGE) {
                const ProtobufCMessageDescriptor *sub = fd->descriptor;
                e = add(r, sub->name, sub->package_name, sub, NULL, via, err);
            } else if (fd->type == PROTOBUF_C_TYPE_ENUM) {
                const ProtobufCEnumDescriptor *sub = fd->descriptor;
                e = add(r, sub->name, sub->package_name, NULL, sub, via, err);
            }
        }
    }
    return e;
}

/* The name relative to the package: "Outer.Inner". */
static const char *relative(const render *r, const char *full) {
    size_t n = strlen(r->pkg);
    return n && !strncmp(full, r->pkg, n) && full[n] == '.' ? full + n + 1 : full;
}

/* Whether t is declared directly inside the message named parent (relative; "" the file). */
static int child_of(const render *r, const type_ref *t, const char *parent) {
    const char *rel = relative(r, t->name), *dot = strrchr(rel, '.');
    size_t plen = strlen(parent);
    if (!dot)
        return !plen;
    return plen == (size_t)(dot - rel) && !strncmp(rel, parent, plen);
}

static const char *scalar_name(ProtobufCType t) {
    static const char *const names[] = {
        [PROTOBUF_C_TYPE_INT32] = "int32",       [PROTOBUF_C_TYPE_SINT32] = "sint32",
        [PROTOBUF_C_TYPE_SFIXED32] = "sfixed32", [PROTOBUF_C_TYPE_INT64] = "int64",
        [PROTOBUF_C_TYPE_SINT64] = "sint64",     [PROTOBUF_C_TYPE_SFIXED64] = "sfixed64",
        [PROTOBUF_C_TYPE_UINT32] = "uint32",     [PROTOBUF_C_TYPE_FIXED32] = "fixed32",
        [PROTOBUF_C_TYPE_UINT64] = "uint64",     [PROTOBUF_C_TYPE_FIXED64] = "fixed64",
        [PROTOBUF_C_TYPE_FLOAT] = "float",       [PROTOBUF_C_TYPE_DOUBLE] = "double",
        [PROTOBUF_C_TYPE_BOOL] = "bool",         [PROTOBUF_C_TYPE_STRING] = "string",
        [PROTOBUF_C_TYPE_BYTES] = "bytes",
    };
    return (size_t)t < sizeof names / sizeof *names && names[t] ? names[t] : "bytes";
}

/* A field's type as written: a scalar's name or ".full.Name". */
static void type_text(const ProtobufCFieldDescriptor *fd, char *buf, size_t cap) {
    if (fd->type == PROTOBUF_C_TYPE_MESSAGE)
        snprintf(buf, cap, ".%s", ((const ProtobufCMessageDescriptor *)fd->descriptor)->name);
    else if (fd->type == PROTOBUF_C_TYPE_ENUM)
        snprintf(buf, cap, ".%s", ((const ProtobufCEnumDescriptor *)fd->descriptor)->name);
    else
        snprintf(buf, cap, "%s", scalar_name(fd->type));
}

/* protoc's map entry name for a field: foo_bar -> FooBarEntry. */
static void entry_name(const char *field, char *buf, size_t cap) {
    size_t o = 0;
    for (int up = 1; *field && o + 6 < cap; field++) {
        if (*field == '_') {
            up = 1;
            continue;
        }
        buf[o++] = up && *field >= 'a' && *field <= 'z' ? (char)(*field - 'a' + 'A') : *field;
        up = 0;
    }
    memcpy(buf + o, "Entry", 6);
}

/* The entry type when fd is a map field of m, else NULL. */
static const ProtobufCMessageDescriptor *map_entry(const ProtobufCMessageDescriptor *m,
                                                   const ProtobufCFieldDescriptor *fd) {
    if (fd->label != PROTOBUF_C_LABEL_REPEATED || fd->type != PROTOBUF_C_TYPE_MESSAGE)
        return NULL;
    const ProtobufCMessageDescriptor *e = fd->descriptor;
    char want[256], full[600];
    entry_name(fd->name, want, sizeof want);
    snprintf(full, sizeof full, "%s.%s", m->name, want);
    if (strcmp(e->name, full) || e->n_fields != 2)
        return NULL;
    const ProtobufCFieldDescriptor *k = protobuf_c_message_descriptor_get_field(e, 1),
                                   *v = protobuf_c_message_descriptor_get_field(e, 2);
    if (!k || !v || strcmp(k->name, "key") || strcmp(v->name, "value") ||
        k->label == PROTOBUF_C_LABEL_REPEATED || v->label == PROTOBUF_C_LABEL_REPEATED)
        return NULL;
    return e;
}

static int is_map_entry(const render *r, const ProtobufCMessageDescriptor *e) {
    for (size_t i = 0; i < r->n; i++)
        for (unsigned f = 0; r->t[i].msg && f < r->t[i].msg->n_fields; f++)
            if (map_entry(r->t[i].msg, &r->t[i].msg->fields[f]) == e)
                return 1;
    return 0;
}

static const char *label_text(const render *r, const ProtobufCFieldDescriptor *fd) {
    switch (fd->label) {
    case PROTOBUF_C_LABEL_REQUIRED:
        return "required ";
    case PROTOBUF_C_LABEL_REPEATED:
        return "repeated ";
    case PROTOBUF_C_LABEL_OPTIONAL:
        return "optional ";
    default:
        return r->proto2 ? "optional " : "";
    }
}

static int packable(const ProtobufCFieldDescriptor *fd) {
    return fd->label == PROTOBUF_C_LABEL_REPEATED && fd->type != PROTOBUF_C_TYPE_STRING &&
           fd->type != PROTOBUF_C_TYPE_BYTES && fd->type != PROTOBUF_C_TYPE_MESSAGE;
}

static void field(render *r, const ProtobufCMessageDescriptor *m,
                  const ProtobufCFieldDescriptor *fd, int indent, int in_oneof) {
    char type[300];
    const ProtobufCMessageDescriptor *entry = map_entry(m, fd);
    if (entry) {
        char k[300], v[300];
        type_text(protobuf_c_message_descriptor_get_field(entry, 1), k, sizeof k);
        type_text(protobuf_c_message_descriptor_get_field(entry, 2), v, sizeof v);
        put(r, "%*smap<%s, %s> %s = %u;\n", indent, "", k, v, fd->name, fd->id);
        return;
    }
    type_text(fd, type, sizeof type);
    int packed = (fd->flags & PROTOBUF_C_FIELD_FLAG_PACKED) != 0;
    const char *opt = !packable(fd) ? ""
                      : r->proto2   ? (packed ? " [packed = true]" : "")
                                    : (packed ? "" : " [packed = false]");
    put(r, "%*s%s%s %s = %u%s;\n", indent, "", in_oneof ? "" : label_text(r, fd), type, fd->name,
        fd->id, opt);
}

static void enum_type(render *r, const ProtobufCEnumDescriptor *en, int indent) {
    int alias = 0;
    for (unsigned i = 0; i < en->n_values; i++)
        for (unsigned j = 0; j < i; j++)
            alias |= en->values[i].value == en->values[j].value;
    put(r, "%*senum %s {\n", indent, "", en->short_name);
    if (alias)
        put(r, "%*soption allow_alias = true;\n", indent + 2, "");
    for (unsigned i = 0; i < en->n_values; i++)
        put(r, "%*s%s = %d;\n", indent + 2, "", en->values[i].name, en->values[i].value);
    put(r, "%*s}\n", indent, "");
}

static void children(render *r, const char *parent, int indent);

static void message(render *r, const ProtobufCMessageDescriptor *m, int indent) {
    put(r, "%*smessage %s {\n", indent, "", m->short_name);
    unsigned choice = 0;
    for (unsigned f = 0; f < m->n_fields; f++) {
        const ProtobufCFieldDescriptor *fd = &m->fields[f];
        if (!(fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)) {
            field(r, m, fd, indent + 2, 0);
            continue;
        }
        int first = 1; /* a oneof's fields share their case member: render them once, together */
        for (unsigned g = 0; g < f && first; g++)
            first = !((m->fields[g].flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
                      m->fields[g].quantifier_offset == fd->quantifier_offset);
        if (!first)
            continue;
        put(r, "%*soneof choice_%u {\n", indent + 2, "", choice++);
        for (unsigned g = f; g < m->n_fields; g++)
            if ((m->fields[g].flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
                m->fields[g].quantifier_offset == fd->quantifier_offset)
                field(r, m, &m->fields[g], indent + 4, 1);
        put(r, "%*s}\n", indent + 2, "");
    }
    children(r, relative(r, m->name), indent + 2);
    put(r, "%*s}\n", indent, "");
}

/* A message nested in one the file does not otherwise hold: its container, empty but for it. */
static void containers(render *r, const char *parent, int indent);

static void children(render *r, const char *parent, int indent) {
    for (size_t i = 0; i < r->n; i++) {
        if (!child_of(r, &r->t[i], parent))
            continue;
        if (r->t[i].en)
            enum_type(r, r->t[i].en, indent);
        else if (!is_map_entry(r, r->t[i].msg))
            message(r, r->t[i].msg, indent);
    }
    containers(r, parent, indent);
}

static void containers(render *r, const char *parent, int indent) {
    size_t plen = strlen(parent);
    for (size_t i = 0; i < r->n; i++) {
        const char *rel = relative(r, r->t[i].name);
        if (plen && (strncmp(rel, parent, plen) || rel[plen] != '.'))
            continue;
        const char *rest = plen ? rel + plen + 1 : rel, *dot = strchr(rest, '.');
        if (!dot)
            continue;
        char outer[600], full[700];
        snprintf(outer, sizeof outer, "%.*s", (int)(dot - rel), rel);
        snprintf(full, sizeof full, "%s%s%s", r->pkg, *r->pkg ? "." : "", outer);
        int seen = known(r, full);
        for (size_t j = 0; j < i && !seen; j++) { /* one container per name */
            const char *other = relative(r, r->t[j].name);
            seen = !strncmp(other, outer, strlen(outer)) && other[strlen(outer)] == '.';
        }
        if (seen)
            continue;
        put(r, "%*smessage %s {\n", indent, "", outer + (plen ? plen + 1 : 0));
        children(r, outer, indent + 2);
        put(r, "%*s}\n", indent, "");
    }
}

es_err es_registry_proto(const ProtobufCMessageDescriptor *d, char **out, es_error_t *err) {
    render *r = calloc(1, sizeof *r);
    if (!r)
        return es_fail(err, ES_ENOMEM, "out of memory rendering %s", d->name);
    r->pkg = d->package_name ? d->package_name : "";
    es_err e = collect(r, d, err);
    if (e == ES_OK) {
        put(r, "syntax = \"%s\";\n", r->proto2 ? "proto2" : "proto3");
        if (*r->pkg)
            put(r, "package %s;\n", r->pkg);
        put(r, "\n");
        children(r, "", 0);
        if (r->failed || es_buf_append(&r->out, "", 1, NULL))
            e = es_fail(err, ES_ENOMEM, "out of memory rendering the schema of %s", d->name);
    }
    if (e == ES_OK)
        *out = (char *)r->out.data;
    else
        es_buf_free(&r->out);
    if (e != ES_OK)
        es_error_prefix(err, "rendering the .proto text of %s: ", d->name);
    free(r);
    return e;
}
