/*
 * Confluent's record framing (framing.h). The reader is lenient in one documented way:
 * @kafkajs/confluent-schema-registry, and other clients of its age, write protobuf values with
 * no message-index array at all (magic, id, message). The byte after the id tells: 0x00 is
 * Confluent's [0], 0x02 starts an explicit index array (zigzag count 1), and an envelope's
 * first byte is a field tag, never 0x00 nor 0x02 (field number 0).
 */
#include "framing.h"

#include <string.h>

es_err es_frame_wrap(es_buf_t *b, uint32_t schema_id, es_error_t *err) {
    if (es_buf_reserve(b, ES_FRAME_LEN) != ES_OK)
        return es_fail(err, ES_ENOMEM, "out of memory framing a record of %zu bytes", b->len);
    memmove(b->data + ES_FRAME_LEN, b->data, b->len);
    uint8_t *p = b->data;
    p[0] = ES_FRAME_MAGIC;
    p[1] = (uint8_t)(schema_id >> 24);
    p[2] = (uint8_t)(schema_id >> 16);
    p[3] = (uint8_t)(schema_id >> 8);
    p[4] = (uint8_t)schema_id;
    p[5] = 0; /* the message indexes [0]: the file's first message */
    b->len += ES_FRAME_LEN;
    return ES_OK;
}

/* A zigzag varint of the index array; -1 when cut short or past 32 bits. */
static long long get_zigzag(const uint8_t **p, const uint8_t *end) {
    uint64_t v = 0;
    for (unsigned shift = 0; *p < end && shift < 35; shift += 7) {
        uint8_t byte = *(*p)++;
        v |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80))
            return (long long)((v >> 1) ^ (~(v & 1) + 1));
    }
    return -1;
}

static es_err indexes(const uint8_t **p, const uint8_t *end, es_error_t *err) {
    long long count = get_zigzag(p, end);
    if (count < 0 || count > 64)
        return es_fail(err, ES_EDECODE,
                       "a Confluent-framed record with a malformed message-index array");
    long long first = count ? get_zigzag(p, end) : 0;
    for (long long i = 1; i < count && first >= 0; i++)
        if (get_zigzag(p, end) < 0)
            first = -1;
    if (first < 0)
        return es_fail(err, ES_EDECODE,
                       "a Confluent-framed record with a message-index array cut short");
    if (count > 1 || first != 0)
        return es_fail(err, ES_EDECODE,
                       "a Confluent-framed record whose message indexes (%lld of them, the first "
                       "%lld) name a message other than the first of its schema: not an "
                       "eskit.v1.EventEnvelope as eskit registers it",
                       count, first);
    return ES_OK;
}

es_err es_frame_strip(const uint8_t **buf, size_t *len, uint32_t *schema_id, es_error_t *err) {
    *schema_id = 0;
    if (!*buf || !*len || (*buf)[0] != ES_FRAME_MAGIC)
        return ES_OK;
    const uint8_t *p = *buf, *end = *buf + *len;
    if (*len < 5)
        return es_fail(err, ES_EDECODE,
                       "a record of %zu bytes starting with Confluent's magic byte 0 but too "
                       "short for the 4-byte schema id",
                       *len);
    uint32_t id = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
    p += 5;
    es_err e = ES_OK;
    if (p < end && (*p == 0x00 || *p == 0x02))
        e = indexes(&p, end, err);
    if (e != ES_OK) {
        es_error_prefix(err, "schema id %u: ", id);
        return e;
    }
    *schema_id = id;
    *len = (size_t)(end - p);
    *buf = p;
    return ES_OK;
}
