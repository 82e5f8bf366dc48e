/*
 * What may enter the log: the checks behind every way in (engine, Kafka caller and processor,
 * es_store_append, saga sends), so a rule is written once. The limits are the table below and
 * the defines of <eskit/event.h>; docs/limits.md explains them.
 *
 * Text is valid UTF-8 without control characters: ids and metadata are shown in terminals,
 * logs and other languages' protobuf libraries (which refuse a string field that is not
 * UTF-8), and a byte that starts an escape sequence or a line must never get there.
 */
#include "internal.h"

#include <string.h>

typedef struct text_limit {
    const char *field; /* as messages name it */
    size_t max;        /* bytes */
    int may_be_empty;
} text_limit;

static const text_limit TEXT_LIMITS[] = {
    [ES_TEXT_AGGREGATE_ID] = {"aggregate id", ES_MAX_ID_LEN, 0},
    [ES_TEXT_COMMAND_ID] = {"command id", ES_MAX_ID_LEN, 0},
    [ES_TEXT_CORRELATION_ID] = {"correlation id", ES_MAX_ID_LEN, 1},
    [ES_TEXT_METADATA_KEY] = {"metadata key", ES_MAX_METADATA_KEY_LEN, 0},
    [ES_TEXT_METADATA_VALUE] = {"metadata value", ES_MAX_METADATA_VALUE_LEN, 1},
};

size_t es_utf8_char(const unsigned char *s, size_t left, uint32_t *cp) {
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t n;
    uint32_t v, min;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, v = c & 0x1f, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, v = c & 0x0f, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, v = c & 0x07, min = 0x10000;
    else
        return 0;
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = v << 6 | (s[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0; /* overlong, past Unicode, or a surrogate */
    *cp = v;
    return n;
}

int es_is_control(uint32_t cp) {
    return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f);
}

static es_err check_text(const char *field, const char *s, size_t max, int may_be_empty,
                         es_error_t *err) {
    if (!s || !*s)
        return may_be_empty && s ? ES_OK : es_fail(err, ES_EINVAL, "%s is empty", field);
    size_t len = strlen(s);
    if (len > max)
        return es_fail(err, ES_EINVAL, "%s '%.32s...' is %zu bytes; the limit is %zu bytes", field,
                       s, len, max);
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        if (u[i] >= 0x20 && u[i] < 0x7f) { /* the common case, ASCII text */
            i++;
            continue;
        }
        size_t n = es_utf8_char(u + i, len - i, &cp);
        if (!n)
            return es_fail(err, ES_EINVAL,
                           "%s '%.32s' is not valid UTF-8 (byte 0x%02x at position %zu); ids and "
                           "metadata are UTF-8 text",
                           field, s, u[i], i + 1);
        if (es_is_control(cp))
            return es_fail(err, ES_EINVAL,
                           cp < 0x80 ? "%s '%.32s' has control character 0x%02x at position %zu"
                                     : "%s '%.32s' has control character U+%04X at position %zu",
                           field, s, (unsigned)cp, i + 1);
        i += n;
    }
    return ES_OK;
}

es_err es_validate_text(es_text_field f, const char *s, es_error_t *err) {
    const text_limit *l = &TEXT_LIMITS[f];
    return check_text(l->field, s, l->max, l->may_be_empty, err);
}

static int is_segment_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

es_err es_validate_aggregate_type(const char *type, es_error_t *err) {
    if (!type || !*type)
        return es_fail(err, ES_EINVAL,
                       "aggregate type is empty; use lowercase '<domain>.<aggregate>', e.g. "
                       "'orders.order'");
    size_t len = strlen(type);
    if (len > ES_MAX_TYPE_LEN)
        return es_fail(err, ES_EINVAL, "aggregate type '%.40s...' is %zu bytes; the limit is %d",
                       type, len, ES_MAX_TYPE_LEN);
    int segments = 1;
    size_t seg_len = 0;
    for (size_t i = 0; i < len; i++) {
        char c = type[i];
        if (c == '.') {
            if (seg_len == 0)
                break;
            segments++;
            seg_len = 0;
            continue;
        }
        if (!is_segment_char(c))
            return es_fail(err, ES_EINVAL,
                           (unsigned char)c > 0x20 && (unsigned char)c < 0x7f
                               ? "invalid aggregate type '%s': character '%c' at position %zu; "
                                 "segments are lowercase [a-z0-9-], e.g. 'orders.order'"
                               : "invalid aggregate type '%s': byte 0x%02x at position %zu; "
                                 "segments are lowercase [a-z0-9-], e.g. 'orders.order'",
                           type, (unsigned char)c, i + 1);
        seg_len++;
    }
    if (seg_len == 0 || segments < 2)
        return es_fail(err, ES_EINVAL,
                       "invalid aggregate type '%s': expected '<domain>.<aggregate>' with "
                       "non-empty segments, e.g. 'orders.order'",
                       type);
    return ES_OK;
}

es_err es_validate_aggregate_id(const char *id, es_error_t *err) {
    return es_validate_text(ES_TEXT_AGGREGATE_ID, id, err);
}

static int is_name_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

es_err es_validate_type_name(const char *field, const char *name, es_error_t *err) {
    if (!name || !*name)
        return es_fail(err, ES_EINVAL, "%s is empty", field);
    size_t len = strlen(name);
    if (len > ES_MAX_TYPE_NAME_LEN)
        return es_fail(err, ES_EINVAL, "%s '%.40s...' is %zu bytes; the limit is %d", field, name,
                       len, ES_MAX_TYPE_NAME_LEN);
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        int start = i == 0 || name[i - 1] == '.';
        if (start ? is_name_start(c) : (is_name_start(c) || (c >= '0' && c <= '9') || c == '.'))
            continue;
        return es_fail(err, ES_EINVAL,
                       "%s '%s' is not a protobuf full name (byte 0x%02x at position %zu); use "
                       "the message's full name, e.g. 'orders.v1.OrderPlaced'",
                       field, name, (unsigned char)c, i + 1);
    }
    if (name[len - 1] == '.')
        return es_fail(err, ES_EINVAL,
                       "%s '%s' is not a protobuf full name (it ends in '.'); use the message's "
                       "full name, e.g. 'orders.v1.OrderPlaced'",
                       field, name);
    return ES_OK;
}

/* The trace keys (<eskit/trace.h>) are the library's to replace, so they do not count against
 * ES_MAX_METADATA: a caller at the limit is not pushed over it by the spans the library adds. */
#define TRACE_KEYS 3

es_err es_validate_metadata(const es_kv_t *md, size_t n, es_error_t *err) {
    if (n > ES_MAX_METADATA + TRACE_KEYS)
        return es_fail(err, ES_EINVAL, "%zu metadata entries; the limit is %d", n, ES_MAX_METADATA);
    if (n && !md)
        return es_fail(err, ES_EINVAL, "%zu metadata entries announced but none given", n);
    size_t counted = 0;
    for (size_t i = 0; i < n; i++) {
        es_err e = es_validate_text(ES_TEXT_METADATA_KEY, md[i].key, err);
        if (e != ES_OK)
            return e;
        if (!es_trace_key(md[i].key) && ++counted > ES_MAX_METADATA)
            return es_fail(err, ES_EINVAL,
                           "more than %d metadata entries besides the trace keys; the limit is %d",
                           ES_MAX_METADATA, ES_MAX_METADATA);
        if (!md[i].value)
            return es_fail(err, ES_EINVAL, "metadata '%s' has no value (NULL)", md[i].key);
        if ((e = es_validate_text(ES_TEXT_METADATA_VALUE, md[i].value, err)) != ES_OK) {
            es_error_prefix(err, "metadata '%s': ", md[i].key);
            return e;
        }
        for (size_t k = 0; k < i; k++) /* at most 64 entries: pairs are cheap */
            if (!strcmp(md[k].key, md[i].key))
                return es_fail(err, ES_EINVAL,
                               "metadata key '%s' appears twice (entries %zu and %zu); keys are "
                               "distinct",
                               md[i].key, k + 1, i + 1);
    }
    return ES_OK;
}

es_err es_validate_command(const es_command_t *cmd, es_error_t *err) {
    if (!cmd)
        return es_fail(err, ES_EINVAL, "no command (NULL)");
    es_err e = es_validate_aggregate_type(cmd->aggregate_type, err);
    return e == ES_OK ? es_validate_command_rest(cmd, err) : e;
}

es_err es_validate_command_rest(const es_command_t *cmd, es_error_t *err) {
    es_err e = es_validate_aggregate_id(cmd->aggregate_id, err);
    if (e != ES_OK)
        return e;
    const char *type = cmd->aggregate_type, *id = cmd->aggregate_id;
    int has_id = cmd->command_id && *cmd->command_id; /* else the engine makes one */
    if (has_id && (e = es_validate_text(ES_TEXT_COMMAND_ID, cmd->command_id, err)) != ES_OK) {
        es_error_prefix(err, "command for %s/%.64s: ", type, id);
        return e;
    }
    if (cmd->correlation_id)
        e = es_validate_text(ES_TEXT_CORRELATION_ID, cmd->correlation_id, err);
    if (e == ES_OK)
        e = es_validate_metadata(cmd->metadata, cmd->n_metadata, err);
    if (e != ES_OK && has_id)
        es_error_prefix(err, "command %.64s for %s/%.64s: ", cmd->command_id, type, id);
    else if (e != ES_OK)
        es_error_prefix(err, "command for %s/%.64s: ", type, id);
    return e;
}

es_err es_validate_new_event(const es_new_event_t *ev, es_error_t *err) {
    es_err e = es_validate_type_name("event type", ev->event_type, err);
    if (e == ES_OK && ev->command_id)
        e = es_validate_text(ES_TEXT_COMMAND_ID, ev->command_id, err);
    if (e == ES_OK && ev->correlation_id)
        e = es_validate_text(ES_TEXT_CORRELATION_ID, ev->correlation_id, err);
    if (e == ES_OK)
        e = es_validate_metadata(ev->metadata, ev->n_metadata, err);
    return e;
}
