/*
 * SHA-256 (FIPS 180-4), for schema fingerprints: no crypto library is linked, and a
 * fingerprint must be the digest every other tool computes (sha256sum, a registry).
 */
#ifndef ESKIT_SHA256_H
#define ESKIT_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define ES_SHA256_LEN 32
#define ES_SHA256_HEX_LEN 64

typedef struct es_sha256 {
    uint32_t h[8];
    uint64_t total; /* bytes hashed so far */
    uint8_t block[64];
    size_t used; /* bytes of block filled */
} es_sha256_t;

void es_sha256_init(es_sha256_t *c);
void es_sha256_update(es_sha256_t *c, const void *data, size_t len);
void es_sha256_final(es_sha256_t *c, uint8_t out[ES_SHA256_LEN]);
/* The digest of one buffer. */
void es_sha256(const void *data, size_t len, uint8_t out[ES_SHA256_LEN]);
/* The digest of one buffer as 64 lowercase hex digits and a NUL. */
void es_sha256_hex(const void *data, size_t len, char out[ES_SHA256_HEX_LEN + 1]);

#endif
