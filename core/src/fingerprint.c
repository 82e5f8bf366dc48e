/*
 * Command fingerprints: what a command asked, small enough to keep with every command id and
 * to carry in every event envelope it caused. Two FNV-1a 64 hashes (Fowler, Noll, Vo; offset
 * basis 14695981039346656037, prime 1099511628211, each byte XORed in before the multiply):
 * one of the command's full protobuf type name, one of its payload as protobuf-c packs it. Kept
 * apart, they say which of the two differs when an id comes again with another command.
 */
#include "internal.h"

#include <protobuf-c/protobuf-c.h>
#include <string.h>

#define FNV_OFFSET_BASIS 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

uint64_t es_fnv1a64_seeded(uint64_t seed, const void *data, size_t len) {
    const uint8_t *p = data;
    uint64_t h = FNV_OFFSET_BASIS ^ seed;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * FNV_PRIME;
    return h;
}

uint64_t es_fnv1a64(const void *data, size_t len) {
    return es_fnv1a64_seeded(0, data, len);
}

es_err es_fingerprint_of(es_fingerprinter_t *f, const ProtobufCMessage *msg, es_fingerprint_t *fp) {
    es_buf_t *b = &f->packed;
    size_t len = protobuf_c_message_get_packed_size(msg);
    b->len = 0;
    if (es_buf_reserve(b, len) != ES_OK)
        return ES_ENOMEM;
    b->len = protobuf_c_message_pack(msg, b->data);
    if (f->desc != msg->descriptor) {
        f->type = es_fnv1a64(msg->descriptor->name, strlen(msg->descriptor->name));
        f->desc = msg->descriptor;
    }
    fp->type = f->type;
    fp->payload = es_fnv1a64(b->data, b->len);
    return ES_OK;
}

void es_fingerprinter_free(es_fingerprinter_t *f) {
    es_buf_free(&f->packed);
    f->desc = NULL;
}

/* Spelled out, so that the compiler merges the stores (and the loads) into one byte swap. */
static void put_be64(uint8_t *out, uint64_t v) {
    out[0] = (uint8_t)(v >> 56);
    out[1] = (uint8_t)(v >> 48);
    out[2] = (uint8_t)(v >> 40);
    out[3] = (uint8_t)(v >> 32);
    out[4] = (uint8_t)(v >> 24);
    out[5] = (uint8_t)(v >> 16);
    out[6] = (uint8_t)(v >> 8);
    out[7] = (uint8_t)v;
}

static uint64_t get_be64(const uint8_t *in) {
    return (uint64_t)in[0] << 56 | (uint64_t)in[1] << 48 | (uint64_t)in[2] << 40 |
           (uint64_t)in[3] << 32 | (uint64_t)in[4] << 24 | (uint64_t)in[5] << 16 |
           (uint64_t)in[6] << 8 | (uint64_t)in[7];
}

void es_fingerprint_put(const es_fingerprint_t *fp, uint8_t out[ES_FINGERPRINT_LEN]) {
    put_be64(out, fp->type);
    put_be64(out + 8, fp->payload);
}

void es_fingerprint_get(const uint8_t in[ES_FINGERPRINT_LEN], es_fingerprint_t *fp) {
    fp->type = get_be64(in);
    fp->payload = get_be64(in + 8);
}
