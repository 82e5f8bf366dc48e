/*
 * A growable list of byte strings kept in one buffer: the envelope bytes an
 * eskit run wrote, in log order, so a raw baseline can insert exactly them.
 */
#ifndef ESKIT_BENCH_BLOBS_H
#define ESKIT_BENCH_BLOBS_H

#include <stddef.h>
#include <stdint.h>

typedef struct blob_span {
    size_t off; /* start in blobs_t.data */
    size_t len;
} blob_span_t;

typedef struct blobs {
    uint8_t *data;
    size_t data_len, data_cap;
    blob_span_t *spans;
    size_t n, cap;
} blobs_t;

/* Copies len bytes in as the next blob; 0 on success, -1 out of memory. */
int blobs_push(blobs_t *b, const uint8_t *p, size_t len);
const uint8_t *blobs_at(const blobs_t *b, size_t i, size_t *len);
/* Mean blob size in bytes. */
double blobs_mean_len(const blobs_t *b);
/* Empties b, keeping its memory for reuse. */
void blobs_reset(blobs_t *b);
void blobs_free(blobs_t *b);

#endif
