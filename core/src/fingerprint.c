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

uint64_t es_fnv1a64(const void *data, size_t len) {
    const uint8_t *p = data;
    uint64_t h = FNV_OFFSET_BASIS;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * FNV_PRIME;
    return h;
}

es_err es_fingerprint_of(const ProtobufCMessage *msg, es_buf_t *scratch, es_fingerprint_t *fp) {
    const char *name = msg->descriptor->name;
    size_t len = protobuf_c_message_get_packed_size(msg);
    scratch->len = 0;
    if (es_buf_reserve(scratch, len) != ES_OK)
        return ES_ENOMEM;
    scratch->len = protobuf_c_message_pack(msg, scratch->data);
    fp->type = es_fnv1a64(name, strlen(name));
    fp->payload = es_fnv1a64(scratch->data, scratch->len);
    return ES_OK;
}

static void put_be64(uint8_t *out, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8)
        out[i] = (uint8_t)v;
}

static uint64_t get_be64(const uint8_t *in) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | in[i];
    return v;
}

void es_fingerprint_put(const es_fingerprint_t *fp, uint8_t out[ES_FINGERPRINT_LEN]) {
    put_be64(out, fp->type);
    put_be64(out + 8, fp->payload);
}

void es_fingerprint_get(const uint8_t in[ES_FINGERPRINT_LEN], es_fingerprint_t *fp) {
    fp->type = get_be64(in);
    fp->payload = get_be64(in + 8);
}
