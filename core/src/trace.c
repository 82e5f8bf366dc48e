/*
 * W3C trace context and spans (<eskit/trace.h>). A span id is 64 random bits, never zero; a
 * trace id 128. The generator is the per-thread xorshift seeded from the kernel (as uuid.c's):
 * ids must not collide, not resist a guesser.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

static int lower_hex(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static int all_zero(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != '0')
            return 0;
    return 1;
}

static int hex_value(char c) {
    return c <= '9' ? c - '0' : c - 'a' + 10;
}

es_err es_traceparent_parse(const char *s, es_traceparent_t *out, es_error_t *err) {
    if (!s || !out)
        return es_fail(err, ES_EINVAL, "es_traceparent_parse: value and out are required");
    size_t len = strlen(s);
    if (len < ES_TRACEPARENT_LEN)
        return es_fail(err, ES_EINVAL, "traceparent '%.64s' is shorter than %d characters", s,
                       ES_TRACEPARENT_LEN);
    if (s[2] != '-' || s[35] != '-' || s[52] != '-')
        return es_fail(err, ES_EINVAL,
                       "traceparent '%.64s' is not version-traceid-parentid-flags separated by '-'",
                       s);
    if (!lower_hex(s, 2) || !lower_hex(s + 3, ES_TRACE_ID_LEN) ||
        !lower_hex(s + 36, ES_SPAN_ID_LEN) || !lower_hex(s + 53, 2))
        return es_fail(err, ES_EINVAL,
                       "traceparent '%.64s' has a character that is not lowercase hex", s);
    int version = hex_value(s[0]) << 4 | hex_value(s[1]);
    if (version == 0xff)
        return es_fail(err, ES_EINVAL, "traceparent '%.64s': version ff is invalid", s);
    if (version == 0 && len != ES_TRACEPARENT_LEN)
        return es_fail(err, ES_EINVAL, "traceparent '%.64s': version 00 is exactly %d characters",
                       s, ES_TRACEPARENT_LEN);
    if (version > 0 && len > ES_TRACEPARENT_LEN && s[ES_TRACEPARENT_LEN] != '-')
        return es_fail(err, ES_EINVAL,
                       "traceparent '%.64s': what follows a later version's fields must start "
                       "with '-'",
                       s);
    if (all_zero(s + 3, ES_TRACE_ID_LEN))
        return es_fail(err, ES_EINVAL, "traceparent '%.64s': the trace id is all zeros", s);
    if (all_zero(s + 36, ES_SPAN_ID_LEN))
        return es_fail(err, ES_EINVAL, "traceparent '%.64s': the parent id is all zeros", s);
    out->version = (uint8_t)version;
    memcpy(out->trace_id, s + 3, ES_TRACE_ID_LEN);
    out->trace_id[ES_TRACE_ID_LEN] = '\0';
    memcpy(out->span_id, s + 36, ES_SPAN_ID_LEN);
    out->span_id[ES_SPAN_ID_LEN] = '\0';
    out->flags = (uint8_t)(hex_value(s[53]) << 4 | hex_value(s[54]));
    return ES_OK;
}

/* By hand: every event of every command formats one, and snprintf took 1,570 instructions a
 * call (7% of executing a batch of commands). */
void es_traceparent_format(const es_traceparent_t *tp, char out[ES_TRACEPARENT_LEN + 1]) {
    static const char digits[] = "0123456789abcdef";
    size_t t = strnlen(tp->trace_id, ES_TRACE_ID_LEN), s = strnlen(tp->span_id, ES_SPAN_ID_LEN);
    char *o = out;
    memcpy(o, "00-", 3);
    o += 3;
    memcpy(o, tp->trace_id, t);
    o += t;
    *o++ = '-';
    memcpy(o, tp->span_id, s);
    o += s;
    *o++ = '-';
    *o++ = digits[tp->flags >> 4];
    *o++ = digits[tp->flags & 0xf];
    *o = '\0';
}

static const char *find(const es_kv_t *md, size_t n, const char *key) {
    for (size_t i = 0; md && i < n; i++)
        if (md[i].key && !strcmp(md[i].key, key))
            return md[i].value;
    return NULL;
}

es_err es_trace_from_metadata(const es_kv_t *metadata, size_t n, es_traceparent_t *out,
                              const char **tracestate) {
    if (tracestate)
        *tracestate = NULL;
    const char *v = find(metadata, n, ES_TRACEPARENT_KEY);
    if (!v)
        return ES_ENOTFOUND;
    es_traceparent_t tp;
    if (es_traceparent_parse(v, &tp, NULL) != ES_OK)
        return ES_EINVAL;
    if (out)
        *out = tp;
    if (tracestate)
        *tracestate = find(metadata, n, ES_TRACESTATE_KEY);
    return ES_OK;
}

int es_trace_key(const char *key) {
    return key && (!strcmp(key, ES_TRACEPARENT_KEY) || !strcmp(key, ES_TRACESTATE_KEY) ||
                   !strcmp(key, ES_PARENT_SPAN_KEY));
}

static void new_span_id(char out[ES_SPAN_ID_LEN + 1]) {
    uint64_t v;
    while ((v = es_random64()) == 0)
        ;
    es_hex64(v, out);
    out[16] = '\0';
}

void es_trace_child(const es_traceparent_t *parent, const char *tracestate, es_trace_t *out) {
    memset(out, 0, sizeof *out);
    if (parent) {
        memcpy(out->tp.trace_id, parent->trace_id, sizeof out->tp.trace_id);
        memcpy(out->parent, parent->span_id, sizeof out->parent);
        out->tp.flags = parent->flags;
        out->tracestate = tracestate;
    } else {
        new_span_id(out->tp.trace_id);
        new_span_id(out->tp.trace_id + ES_SPAN_ID_LEN);
        out->tp.flags = 1; /* a trace the library starts is recorded */
    }
    new_span_id(out->tp.span_id);
}

void es_trace_start(const es_kv_t *md, size_t n, es_trace_t *out) {
    es_traceparent_t caller;
    const char *state = NULL;
    int ok = es_trace_from_metadata(md, n, &caller, &state) == ES_OK;
    es_trace_child(ok ? &caller : NULL, state, out);
}

int es_trace_read(const es_kv_t *md, size_t n, es_trace_t *out) {
    memset(out, 0, sizeof *out);
    if (es_trace_from_metadata(md, n, &out->tp, &out->tracestate) != ES_OK)
        return 0;
    const char *parent = find(md, n, ES_PARENT_SPAN_KEY);
    if (parent && strlen(parent) == ES_SPAN_ID_LEN && lower_hex(parent, ES_SPAN_ID_LEN) &&
        !all_zero(parent, ES_SPAN_ID_LEN))
        memcpy(out->parent, parent, sizeof out->parent);
    return 1;
}

size_t es_trace_metadata(const es_kv_t *md, size_t n, const es_trace_t *t, es_kv_t *out,
                         char tp[ES_TRACEPARENT_LEN + 1]) {
    size_t k = 0;
    for (size_t i = 0; md && i < n; i++)
        if (!es_trace_key(md[i].key))
            out[k++] = md[i];
    es_traceparent_format(&t->tp, tp);
    out[k++] = (es_kv_t){ES_TRACEPARENT_KEY, tp};
    if (*t->parent)
        out[k++] = (es_kv_t){ES_PARENT_SPAN_KEY, t->parent};
    if (t->tracestate)
        out[k++] = (es_kv_t){ES_TRACESTATE_KEY, t->tracestate};
    return k;
}

int es_span_on(const es_config_t *cfg) {
    void *opaque;
    return es_config_span_cb(cfg, &opaque) != NULL;
}

void es_span_emit(const es_config_t *cfg, es_span_phase phase, const char *name,
                  const es_trace_t *t, int64_t start_us, int64_t end_us, es_err status,
                  const char *outcome, const es_kv_t *attrs, size_t n) {
    void *opaque = NULL;
    es_span_cb *cb = es_config_span_cb(cfg, &opaque);
    if (!cb)
        return;
    es_span_t s = {.phase = phase,
                   .name = name,
                   .flags = t->tp.flags,
                   .start_us = start_us,
                   .end_us = end_us,
                   .status = status,
                   .outcome = outcome,
                   .attributes = attrs,
                   .n_attributes = n};
    memcpy(s.trace_id, t->tp.trace_id, sizeof s.trace_id);
    memcpy(s.span_id, t->tp.span_id, sizeof s.span_id);
    memcpy(s.parent_span_id, t->parent, sizeof s.parent_span_id);
    cb(&s, opaque);
}
