/*
 * The envelope codec. Decoded events keep the unpacked protobuf-c message and
 * point into it, so a decode is one unpack plus one small allocation.
 */
#include "internal.h"
#include "framing.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eskit/v1/envelope.pb-c.h"

typedef struct owned_event {
    es_event_t pub;                /* first: es_event_t * and owned_event * convert both ways */
    Eskit__V1__EventEnvelope *env; /* decoded events; NULL for copies made by es_event_dup */
    es_kv_t *md;
    int in_arena; /* decoded into an arena (es_envelope_decode_in): es_event_free does nothing */
} owned_event;

/* The envelope is encoded by hand: protobuf-c's descriptor-driven packer (a sizing pass,
 * then a packing pass, over every field's descriptor) was a fifth of the cost of building an
 * event. The bytes are exactly what protobuf-c writes (fields in number order, proto3 defaults
 * left out; test_envelope compares the two), so any protobuf library reads them. */
enum { WT_VARINT = 0, WT_LEN = 2 };

static size_t varint_size(uint64_t v) {
    size_t n = 1;
    for (; v >= 0x80; v >>= 7)
        n++;
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v) {
    for (; v >= 0x80; v >>= 7)
        *p++ = (uint8_t)(v | 0x80);
    *p++ = (uint8_t)v;
    return p;
}

/* A length-delimited field (field numbers here are below 16: a one-byte tag). */
static size_t len_field_size(size_t len) {
    return len ? 1 + varint_size(len) + len : 0;
}

static uint8_t *put_len_field(uint8_t *p, unsigned field, const void *data, size_t len) {
    if (!len)
        return p;
    *p++ = (uint8_t)(field << 3 | WT_LEN);
    p = put_varint(p, len);
    memcpy(p, data, len);
    return p + len;
}

static uint8_t *put_varint_field(uint8_t *p, unsigned field, uint64_t v) {
    if (!v)
        return p;
    *p++ = (uint8_t)(field << 3 | WT_VARINT);
    return put_varint(p, v);
}

static size_t slen(const char *s) {
    return s ? strlen(s) : 0;
}

#define MD_LENS_KEPT 8

es_err es_envelope_pack_caused(const es_event_t *ev, const es_fingerprint_t *fp, es_buf_t *b,
                               es_error_t *err) {
    size_t id_len = strlen(ev->event_id), type_len = slen(ev->aggregate_type),
           agg_len = slen(ev->aggregate_id), et_len = slen(ev->event_type),
           cmd_len = slen(ev->command_id), corr_len = slen(ev->correlation_id);
    size_t need = len_field_size(id_len) + len_field_size(type_len) + len_field_size(agg_len) +
                  (ev->version ? 1 + varint_size(ev->version) : 0) + len_field_size(et_len) +
                  len_field_size(ev->payload_len) +
                  (ev->occurred_at_us ? 1 + varint_size((uint64_t)ev->occurred_at_us) : 0) +
                  len_field_size(cmd_len) + len_field_size(corr_len) +
                  (fp ? len_field_size(ES_FINGERPRINT_LEN) : 0) +
                  (ev->schema_version ? 1 + varint_size(ev->schema_version) : 0);
    /* The lengths of the first few entries are kept for the packing pass: each strlen was
     * otherwise taken three times (an event carries its trace context, two or three entries). */
    size_t kl[MD_LENS_KEPT], vl[MD_LENS_KEPT];
    for (size_t i = 0; i < ev->n_metadata; i++) {
        const es_kv_t *kv = &ev->metadata[i];
        size_t k = slen(kv->key), v = slen(kv->value);
        if (i < MD_LENS_KEPT) {
            kl[i] = k;
            vl[i] = v;
        }
        size_t entry = len_field_size(k) + len_field_size(v);
        need += 1 + varint_size(entry) + entry; /* present even when empty */
    }
    b->len = 0;
    if (es_buf_reserve(b, need) != ES_OK)
        return es_fail(err, ES_ENOMEM, "out of memory encoding an envelope of %zu bytes", need);
    uint8_t *p = b->data;
    p = put_len_field(p, 1, ev->event_id, id_len);
    p = put_len_field(p, 2, ev->aggregate_type, type_len);
    p = put_len_field(p, 3, ev->aggregate_id, agg_len);
    p = put_varint_field(p, 4, ev->version);
    p = put_len_field(p, 5, ev->event_type, et_len);
    p = put_len_field(p, 6, ev->payload, ev->payload_len);
    p = put_varint_field(p, 7, (uint64_t)ev->occurred_at_us);
    p = put_len_field(p, 8, ev->command_id, cmd_len);
    p = put_len_field(p, 9, ev->correlation_id, corr_len);
    for (size_t i = 0; i < ev->n_metadata; i++) {
        const es_kv_t *kv = &ev->metadata[i];
        size_t k = i < MD_LENS_KEPT ? kl[i] : slen(kv->key);
        size_t v = i < MD_LENS_KEPT ? vl[i] : slen(kv->value);
        *p++ = (uint8_t)(10 << 3 | WT_LEN);
        p = put_varint(p, len_field_size(k) + len_field_size(v));
        p = put_len_field(p, 1, kv->key, k);
        p = put_len_field(p, 2, kv->value, v);
    }
    if (fp) {
        uint8_t bytes[ES_FINGERPRINT_LEN];
        es_fingerprint_put(fp, bytes);
        p = put_len_field(p, 11, bytes, sizeof bytes);
    }
    p = put_varint_field(p, 12, ev->schema_version);
    b->len = (size_t)(p - b->data);
    return ES_OK;
}

es_err es_envelope_pack(const es_event_t *ev, es_buf_t *b, es_error_t *err) {
    return es_envelope_pack_caused(ev, NULL, b, err);
}

int es_envelope_fingerprint(const es_event_t *ev, es_fingerprint_t *fp) {
    const owned_event *o = (const owned_event *)ev;
    if (!o->env || o->env->command_fingerprint.len != ES_FINGERPRINT_LEN)
        return 0; /* none, or not one eskit wrote: a duplicate then goes unchecked */
    es_fingerprint_get(o->env->command_fingerprint.data, fp);
    return 1;
}

es_err es_envelope_encode_made(const es_event_t *ev, uint8_t **out, size_t *out_len,
                               es_error_t *err) {
    if (!ev || !out || !out_len)
        return es_fail(err, ES_EINVAL, "es_envelope_encode: event and outputs are required");
    es_buf_t b = {0};
    es_err rc = es_envelope_pack(ev, &b, err);
    if (rc != ES_OK)
        return rc;
    *out = b.data;
    *out_len = b.len;
    return ES_OK;
}

/* A caller's event may come from headers older than schema_version (0.2): only the fields
 * before it are read, and the envelope records no schema version (the caller registered
 * none). */
es_err es_envelope_encode(const es_event_t *ev, uint8_t **out, size_t *out_len, es_error_t *err) {
    if (!ev)
        return es_envelope_encode_made(ev, out, out_len, err);
    es_event_t view;
    memcpy(&view, ev, offsetof(es_event_t, schema_version));
    view.schema_version = 0;
    return es_envelope_encode_made(&view, out, out_len, err);
}

static void describe_position(const es_position_t *at, char *buf, size_t cap) {
    if (!at) {
        snprintf(buf, cap, "(position unknown)");
        return;
    }
    int n = snprintf(buf, cap, "at topic %s partition %d offset %lld", at->topic ? at->topic : "?",
                     (int)at->partition, (long long)at->offset);
    if (at->key && n > 0 && (size_t)n < cap)
        snprintf(buf + n, cap - (size_t)n, " (aggregate id '%.64s')", at->key);
}

static es_err check_envelope(const Eskit__V1__EventEnvelope *env, const char *where,
                             es_error_t *err) {
    const char *missing = NULL;
    if (strlen(env->event_id) != ES_UUID_STR_LEN)
        missing = "a 36-character event_id";
    else if (!*env->event_type)
        missing = "an event_type";
    else if (env->version < 1)
        missing = "a version >= 1";
    else if (es_validate_aggregate_type(env->aggregate_type, NULL) != ES_OK)
        missing = "a valid aggregate_type";
    else if (es_validate_aggregate_id(env->aggregate_id, NULL) != ES_OK)
        missing = "a valid aggregate_id";
    if (missing)
        return es_fail(err, ES_EDECODE,
                       "malformed event envelope %s: it lacks %s; park or repair the record", where,
                       missing);
    return ES_OK;
}

/* The decode, its memory from alloc (NULL: the heap). */
static es_err decode_with(const uint8_t *buf, size_t len, const es_position_t *at,
                          ProtobufCAllocator *alloc, es_event_t **out, es_error_t *err) {
    char where[256];
    if (!out)
        return es_fail(err, ES_EINVAL, "es_envelope_decode: out is required");
    *out = NULL;
    uint32_t schema_id = 0; /* a Confluent frame's (docs/registry.md): stripped for every reader */
    if (es_frame_strip(&buf, &len, &schema_id, err) != ES_OK) {
        describe_position(at, where, sizeof where);
        es_error_prefix(err, "malformed event envelope %s: ", where);
        return ES_EDECODE;
    }
    Eskit__V1__EventEnvelope *env =
        eskit__v1__event_envelope__unpack(alloc, len, buf ? buf : (const uint8_t *)"");
    if (!env || check_envelope(env, "", NULL) != ES_OK) {
        describe_position(at, where, sizeof where);
        es_err rc = env ? check_envelope(env, where, err)
                        : es_fail(err, ES_EDECODE,
                                  "malformed event envelope %s: %zu bytes that are not an "
                                  "eskit.v1.EventEnvelope",
                                  where, len);
        if (env)
            eskit__v1__event_envelope__free_unpacked(env, alloc);
        return rc;
    }
    owned_event *o = NULL;
    es_kv_t *md = NULL;
    if (alloc) { /* the arena's memory is not zeroed */
        o = alloc->alloc(alloc->allocator_data, sizeof *o);
        md = env->n_metadata && o
                 ? alloc->alloc(alloc->allocator_data, env->n_metadata * sizeof *md)
                 : NULL;
        if (o)
            memset(o, 0, sizeof *o);
    } else {
        o = calloc(1, sizeof *o);
        md = env->n_metadata ? calloc(env->n_metadata, sizeof *md) : NULL;
    }
    if (!o || (env->n_metadata && !md)) {
        if (!alloc) {
            free(o);
            free(md);
        }
        eskit__v1__event_envelope__free_unpacked(env, alloc);
        return es_fail(err, ES_ENOMEM, "out of memory decoding an envelope");
    }
    o->in_arena = alloc != NULL;
    for (size_t i = 0; i < env->n_metadata; i++)
        md[i] = (es_kv_t){env->metadata[i]->key, env->metadata[i]->value};
    es_event_t *ev = &o->pub;
    o->env = env;
    o->md = md;
    ev->offset = at ? at->offset : -1;
    ev->partition = at ? at->partition : 0;
    memcpy(ev->event_id, env->event_id, ES_UUID_STR_LEN + 1);
    ev->aggregate_type = env->aggregate_type;
    ev->aggregate_id = env->aggregate_id;
    ev->version = env->version;
    ev->event_type = env->event_type;
    ev->payload = env->payload.data;
    ev->payload_len = env->payload.len;
    ev->occurred_at_us = env->occurred_at_us;
    ev->command_id = env->command_id;
    ev->correlation_id = env->correlation_id;
    ev->metadata = md;
    ev->n_metadata = env->n_metadata;
    ev->schema_version = env->schema_version;
    *out = ev;
    return ES_OK;
}

es_err es_envelope_decode(const uint8_t *buf, size_t len, const es_position_t *at, es_event_t **out,
                          es_error_t *err) {
    return decode_with(buf, len, at, NULL, out, err);
}

es_err es_envelope_decode_in(const uint8_t *buf, size_t len, const es_position_t *at,
                             es_pb_arena_t *arena, es_event_t **out, es_error_t *err) {
    es_err e = decode_with(buf, len, at, arena ? es_pb_arena_allocator(arena) : NULL, out, err);
    if (e == ES_EDECODE && arena && es_pb_arena_failed(arena)) {
        e = es_fail(err, ES_ENOMEM, "out of memory decoding an envelope");
    }
    return e;
}

static size_t str_size(const char *s) {
    return s ? strlen(s) + 1 : 0;
}

/* Copies s into the block at *p; NULL stays NULL. One pass (stpcpy): every returned event
 * is copied, and measuring each string twice was a fifth of the copy. */
static const char *put_str(char **p, const char *s) {
    if (!s)
        return NULL;
    char *dst = *p;
    *p = stpcpy(dst, s) + 1;
    return dst;
}

/* One allocation holding the event, its metadata array, strings and payload. */
es_event_t *es_event_dup(const es_event_t *ev) {
    size_t need = sizeof(owned_event) + ev->n_metadata * sizeof(es_kv_t) + ev->payload_len +
                  str_size(ev->aggregate_type) + str_size(ev->aggregate_id) +
                  str_size(ev->event_type) + str_size(ev->command_id) +
                  str_size(ev->correlation_id);
    for (size_t i = 0; i < ev->n_metadata; i++)
        need += str_size(ev->metadata[i].key) + str_size(ev->metadata[i].value);
    owned_event *o = malloc(need);
    if (!o)
        return NULL;
    es_kv_t *md = (es_kv_t *)(o + 1);
    char *p = (char *)(md + ev->n_metadata);
    o->pub = *ev;
    o->env = NULL;
    o->md = NULL;
    o->in_arena = 0;
    if (ev->payload_len) {
        o->pub.payload = memcpy(p, ev->payload, ev->payload_len);
        p += ev->payload_len;
    }
    o->pub.aggregate_type = put_str(&p, ev->aggregate_type);
    o->pub.aggregate_id = put_str(&p, ev->aggregate_id);
    o->pub.event_type = put_str(&p, ev->event_type);
    o->pub.command_id = put_str(&p, ev->command_id);
    o->pub.correlation_id = put_str(&p, ev->correlation_id);
    for (size_t i = 0; i < ev->n_metadata; i++) {
        md[i].key = put_str(&p, ev->metadata[i].key);
        md[i].value = put_str(&p, ev->metadata[i].value);
    }
    o->pub.metadata = ev->n_metadata ? md : NULL;
    return &o->pub;
}

void es_event_free(es_event_t *ev) {
    owned_event *o = (owned_event *)ev;
    if (!o || o->in_arena)
        return;
    if (o->env)
        eskit__v1__event_envelope__free_unpacked(o->env, NULL);
    free(o->md);
    free(o);
}

/* Here beside es_event_free rather than in engine.c: both executors (the engine and the Kafka
 * caller, remote.c) hand results out, and neither depends on the other. */
void es_result_clear(es_result_t *res) {
    if (!res)
        return;
    for (size_t i = 0; i < res->n_events; i++)
        es_event_free(res->events[i]);
    free(res->events);
    free(res->command_id);
    free(res->reason);
    memset(res, 0, sizeof *res);
}
