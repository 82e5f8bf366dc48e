#include "pbprint.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pb_buf_init(pb_buf *b) {
    memset(b, 0, sizeof(*b));
}

void pb_buf_free(pb_buf *b) {
    free(b->data);
    pb_buf_init(b);
}

void pb_buf_reset(pb_buf *b) {
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

static bool pb_buf_reserve(pb_buf *b, size_t extra) {
    if (b->oom)
        return false;
    if (b->len + extra + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data) {
        b->oom = true;
        return false;
    }
    b->data = data;
    b->cap = cap;
    return true;
}

static void pb_buf_putn(pb_buf *b, const char *s, size_t n) {
    if (!pb_buf_reserve(b, n))
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void pb_buf_putc(pb_buf *b, char c) {
    pb_buf_putn(b, &c, 1);
}

void pb_buf_puts(pb_buf *b, const char *s) {
    pb_buf_putn(b, s, strlen(s));
}

void pb_buf_printf(pb_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !pb_buf_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

size_t pb_utf8_len(const unsigned char *s, size_t n) {
    size_t len;
    uint32_t cp;
    if (s[0] < 0x80)
        return 1;
    if ((s[0] & 0xe0) == 0xc0)
        len = 2, cp = s[0] & 0x1f;
    else if ((s[0] & 0xf0) == 0xe0)
        len = 3, cp = s[0] & 0x0f;
    else if ((s[0] & 0xf8) == 0xf0)
        len = 4, cp = s[0] & 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    /* Overlong forms, surrogates and out-of-range code points are invalid too. */
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

static void json_escape_byte(pb_buf *b, unsigned char c) {
    switch (c) {
    case '"':
        pb_buf_puts(b, "\\\"");
        break;
    case '\\':
        pb_buf_puts(b, "\\\\");
        break;
    case '\n':
        pb_buf_puts(b, "\\n");
        break;
    case '\r':
        pb_buf_puts(b, "\\r");
        break;
    case '\t':
        pb_buf_puts(b, "\\t");
        break;
    case '\b':
        pb_buf_puts(b, "\\b");
        break;
    case '\f':
        pb_buf_puts(b, "\\f");
        break;
    default:
        if (c < 0x20 || c == 0x7f)
            pb_buf_printf(b, "\\u%04x", c);
        else
            pb_buf_putc(b, (char)c);
    }
}

void pb_buf_json_string(pb_buf *b, const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    pb_buf_putc(b, '"');
    for (size_t i = 0; i < len;) {
        size_t n = pb_utf8_len(p + i, len - i);
        if (n == 0) {
            pb_buf_puts(b, "\\ufffd");
            i++;
        } else if (n == 1) {
            json_escape_byte(b, p[i++]);
        } else if (n == 2 && p[i] == 0xc2 && p[i + 1] < 0xa0) {
            pb_buf_printf(b, "\\u%04x", p[i + 1]); /* C1 controls: a terminal acts on them */
            i += 2;
        } else {
            pb_buf_putn(b, s + i, n);
            i += n;
        }
    }
    pb_buf_putc(b, '"');
}

void pb_buf_base64(pb_buf *b, const uint8_t *data, size_t len) {
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16;
        size_t left = len - i;
        if (left > 1)
            v |= (uint32_t)data[i + 1] << 8;
        if (left > 2)
            v |= data[i + 2];
        char q[4] = {abc[(v >> 18) & 63], abc[(v >> 12) & 63], left > 1 ? abc[(v >> 6) & 63] : '=',
                     left > 2 ? abc[v & 63] : '='};
        pb_buf_putn(b, q, 4);
    }
}

/* Printing style: text is for people (all fields, proto names), JSON follows
 * the proto3 mapping (defaults omitted, lowerCamelCase names). */
typedef struct style {
    bool json;
} style;

static void print_message(pb_buf *b, const ProtobufCMessage *msg, const style *st);

static void print_double(pb_buf *b, double v, int min_digits, const style *st) {
    if (isnan(v) || isinf(v)) {
        const char *s = isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity";
        pb_buf_printf(b, st->json ? "\"%s\"" : "%s", s);
        return;
    }
    /* Shortest form that reads back as the same value. */
    char tmp[40];
    for (int digits = min_digits; digits <= 17; digits++) {
        snprintf(tmp, sizeof(tmp), "%.*g", digits, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    pb_buf_puts(b, tmp);
}

static void print_float(pb_buf *b, float v, const style *st) {
    if (isnan(v) || isinf(v)) {
        print_double(b, v, 6, st);
        return;
    }
    char tmp[40];
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(tmp, sizeof(tmp), "%.*g", digits, (double)v);
        if (strtof(tmp, NULL) == v)
            break;
    }
    pb_buf_puts(b, tmp);
}

static void print_enum(pb_buf *b, const ProtobufCEnumDescriptor *ed, int v, const style *st) {
    const ProtobufCEnumValue *ev = ed ? protobuf_c_enum_descriptor_get_value(ed, v) : NULL;
    if (!ev)
        pb_buf_printf(b, "%d", v); /* a value newer than the descriptor */
    else if (st->json)
        pb_buf_json_string(b, ev->name, strlen(ev->name));
    else
        pb_buf_puts(b, ev->name);
}

/* Prints one value of field f stored at p (an element, not the quantifier). */
static void print_value(pb_buf *b, const ProtobufCFieldDescriptor *f, const void *p,
                        const style *st) {
    /* JSON carries 64-bit integers as strings: JavaScript numbers lose precision. */
    const char *q = st->json ? "\"" : "";
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        pb_buf_printf(b, "%" PRId32, *(const int32_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        pb_buf_printf(b, "%" PRIu32, *(const uint32_t *)p);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        pb_buf_printf(b, "%s%" PRId64 "%s", q, *(const int64_t *)p, q);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        pb_buf_printf(b, "%s%" PRIu64 "%s", q, *(const uint64_t *)p, q);
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        print_float(b, *(const float *)p, st);
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        print_double(b, *(const double *)p, 15, st);
        break;
    case PROTOBUF_C_TYPE_BOOL:
        pb_buf_puts(b, *(const protobuf_c_boolean *)p ? "true" : "false");
        break;
    case PROTOBUF_C_TYPE_ENUM:
        print_enum(b, f->descriptor, *(const int *)p, st);
        break;
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(const char *const *)p;
        pb_buf_json_string(b, s ? s : "", s ? strlen(s) : 0);
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *bd = p;
        pb_buf_putc(b, '"');
        pb_buf_base64(b, bd->data, bd->len);
        pb_buf_putc(b, '"');
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(const ProtobufCMessage *const *)p;
        if (m)
            print_message(b, m, st);
        else
            pb_buf_puts(b, st->json ? "null" : "{}");
        break;
    }
    }
}

static size_t element_size(ProtobufCType type) {
    switch (type) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return sizeof(uint64_t);
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    default: /* 32-bit integers, float, enum */
        return sizeof(uint32_t);
    }
}

/* protobuf-c has no map flag: a map field is a repeated message field whose
 * message is the generated "<Name>Entry" with exactly key = 1 and value = 2. */
static bool is_map_field(const ProtobufCFieldDescriptor *f) {
    if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return false;
    const ProtobufCMessageDescriptor *d = f->descriptor;
    size_t n = strlen(d->short_name);
    return d->n_fields == 2 && n > 5 && strcmp(d->short_name + n - 5, "Entry") == 0 &&
           d->fields[0].id == 1 && strcmp(d->fields[0].name, "key") == 0 && d->fields[1].id == 2 &&
           strcmp(d->fields[1].name, "value") == 0;
}

static void print_map(pb_buf *b, const ProtobufCFieldDescriptor *f, size_t n,
                      ProtobufCMessage *const *entries, const style *st) {
    const ProtobufCMessageDescriptor *d = f->descriptor;
    const ProtobufCFieldDescriptor *kf = &d->fields[0], *vf = &d->fields[1];
    pb_buf_putc(b, '{');
    for (size_t i = 0; i < n; i++) {
        const char *e = (const char *)entries[i];
        pb_buf_puts(b, i ? ", " : "");
        /* JSON object keys are strings whatever the key type. */
        bool quote = st->json && kf->type != PROTOBUF_C_TYPE_STRING;
        pb_buf_puts(b, quote ? "\"" : "");
        style plain = {false};
        print_value(b, kf, e + kf->offset, quote ? &plain : st);
        pb_buf_puts(b, quote ? "\": " : ": ");
        print_value(b, vf, e + vf->offset, st);
    }
    pb_buf_putc(b, '}');
}

static void print_repeated(pb_buf *b, const ProtobufCFieldDescriptor *f, const char *base,
                           const style *st) {
    size_t n = *(const size_t *)(base + f->quantifier_offset);
    const char *arr = *(const char *const *)(base + f->offset);
    if (is_map_field(f)) {
        print_map(b, f, n, (ProtobufCMessage *const *)arr, st);
        return;
    }
    size_t size = element_size(f->type);
    pb_buf_putc(b, '[');
    for (size_t i = 0; i < n; i++) {
        pb_buf_puts(b, i ? ", " : "");
        print_value(b, f, arr + i * size, st);
    }
    pb_buf_putc(b, ']');
}

/* A proto3 field without presence holding its zero value. */
static bool is_zero(const ProtobufCFieldDescriptor *f, const void *p) {
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(const char *const *)p;
        return !s || !*s;
    }
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)p)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(const void *const *)p == NULL;
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)p == 0;
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)p == 0;
    default: {
        static const char zeros[8];
        return memcmp(p, zeros, element_size(f->type)) == 0;
    }
    }
}

/* Whether the field is set, by the same rules protobuf-c packs with. */
static bool is_present(const ProtobufCFieldDescriptor *f, const char *base, const style *st) {
    const void *member = base + f->offset;
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return !st->json || *(const size_t *)(base + f->quantifier_offset) > 0;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        return *(const uint32_t *)(base + f->quantifier_offset) == f->id;
    if (f->label == PROTOBUF_C_LABEL_REQUIRED)
        return true;
    if (f->type == PROTOBUF_C_TYPE_MESSAGE)
        return *(const void *const *)member != NULL;
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL) {
        if (f->type == PROTOBUF_C_TYPE_STRING) {
            const void *s = *(const void *const *)member;
            return s != NULL && s != f->default_value;
        }
        return *(const protobuf_c_boolean *)(base + f->quantifier_offset);
    }
    return !st->json || !is_zero(f, member);
}

/* proto3 JSON name: "unit_price_cents" -> "unitPriceCents" (protoc's ToJsonName).
 * protobuf-c 1.4 descriptors carry no json_name, so it is derived here. */
static void put_json_name(pb_buf *b, const char *name) {
    pb_buf_putc(b, '"');
    bool upper = false;
    for (const char *c = name; *c; c++) {
        if (*c == '_') {
            upper = true;
            continue;
        }
        pb_buf_putc(b, upper ? (char)toupper((unsigned char)*c) : *c);
        upper = false;
    }
    pb_buf_puts(b, "\": ");
}

static void print_message(pb_buf *b, const ProtobufCMessage *msg, const style *st) {
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    const char *base = (const char *)msg;
    bool first = true;
    pb_buf_putc(b, '{');
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (!is_present(f, base, st))
            continue;
        pb_buf_puts(b, first ? "" : st->json ? ", " : " ");
        first = false;
        if (st->json)
            put_json_name(b, f->name);
        else
            pb_buf_printf(b, "%s=", f->name);
        if (f->label == PROTOBUF_C_LABEL_REPEATED)
            print_repeated(b, f, base, st);
        else
            print_value(b, f, base + f->offset, st);
    }
    /* Fields the descriptor does not know: say they exist rather than hide them. */
    if (!st->json && msg->n_unknown_fields)
        pb_buf_printf(b, "%s(+%u unknown fields)", first ? "" : " ", msg->n_unknown_fields);
    pb_buf_putc(b, '}');
}

void pb_print_text(pb_buf *b, const ProtobufCMessage *msg) {
    /* Top level without braces: the fields are the rest of the line. */
    pb_buf tmp;
    pb_buf_init(&tmp);
    style st = {false};
    print_message(&tmp, msg, &st);
    if (tmp.oom)
        b->oom = true;
    else
        pb_buf_putn(b, tmp.data + 1, tmp.len - 2);
    pb_buf_free(&tmp);
}

void pb_print_lines(pb_buf *b, const ProtobufCMessage *msg) {
    style st = {false};
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    const char *base = (const char *)msg;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (!is_present(f, base, &st))
            continue;
        pb_buf_printf(b, "%s: ", f->name);
        if (f->label == PROTOBUF_C_LABEL_REPEATED)
            print_repeated(b, f, base, &st);
        else
            print_value(b, f, base + f->offset, &st);
        pb_buf_putc(b, '\n');
    }
    if (msg->n_unknown_fields)
        pb_buf_printf(b, "(+%u unknown fields)\n", msg->n_unknown_fields);
}

void pb_print_json(pb_buf *b, const ProtobufCMessage *msg) {
    style st = {true};
    print_message(b, msg, &st);
}

struct pb_registry {
    es_types_module_t **mods;
    size_t n;
};

pb_registry *pb_registry_new(void) {
    return calloc(1, sizeof(pb_registry));
}

void pb_registry_destroy(pb_registry *reg) {
    if (!reg)
        return;
    for (size_t i = 0; i < reg->n; i++)
        es_types_unload(reg->mods[i]);
    free(reg->mods);
    free(reg);
}

es_err pb_registry_load(pb_registry *reg, es_config_t *cfg, const char *name_or_path,
                        es_error_t *err) {
    es_types_module_t **mods = realloc(reg->mods, (reg->n + 1) * sizeof(*mods));
    if (!mods) {
        if (err) {
            err->code = ES_ENOMEM;
            snprintf(err->message, sizeof(err->message), "out of memory loading %s", name_or_path);
        }
        return ES_ENOMEM;
    }
    reg->mods = mods;
    es_err e = es_types_load(cfg, name_or_path, &reg->mods[reg->n], err);
    if (e != ES_OK)
        return e;
    /* The registry outlives every reader of cfg, so the upcast functions stay loaded. */
    const es_types_module_t *mod = reg->mods[reg->n++];
    const es_upcaster_t *const *ups = es_types_module_def(mod)->upcasters;
    es_error_t uerr = {0};
    for (size_t i = 0; e == ES_OK && ups && ups[i]; i++)
        e = es_config_add_upcaster(cfg, ups[i], &uerr);
    if (e != ES_OK)
        es_fail(err, e, "%s: %s", es_types_module_path(mod), uerr.message);
    return e;
}

size_t pb_registry_modules(const pb_registry *reg) {
    return reg->n;
}

const ProtobufCMessageDescriptor *pb_registry_find(const pb_registry *reg, const char *full_name) {
    for (size_t i = 0; i < reg->n; i++) {
        const ProtobufCMessageDescriptor *d =
            es_types_find_message(es_types_module_def(reg->mods[i]), full_name);
        if (d)
            return d;
    }
    return NULL;
}

const es_aggregate_def *pb_registry_aggregate(const pb_registry *reg, const char *type) {
    for (size_t i = 0; i < reg->n; i++) {
        const es_aggregate_def *a =
            es_types_find_aggregate(es_types_module_def(reg->mods[i]), type);
        if (a)
            return a;
    }
    return NULL;
}
