#include "blobs.h"

#include <stdlib.h>
#include <string.h>

/* Doubles *cap until need fits, reallocating *p of elem-sized items. */
static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 1024;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q)
        return -1;
    *p = q;
    *cap = n;
    return 0;
}

int blobs_push(blobs_t *b, const uint8_t *p, size_t len) {
    if (grow((void **)&b->data, &b->data_cap, b->data_len + len, 1) != 0 ||
        grow((void **)&b->spans, &b->cap, b->n + 1, sizeof *b->spans) != 0)
        return -1;
    memcpy(b->data + b->data_len, p, len);
    b->spans[b->n].off = b->data_len;
    b->spans[b->n].len = len;
    b->data_len += len;
    b->n++;
    return 0;
}

const uint8_t *blobs_at(const blobs_t *b, size_t i, size_t *len) {
    *len = b->spans[i].len;
    return b->data + b->spans[i].off;
}

double blobs_mean_len(const blobs_t *b) {
    return b->n ? (double)b->data_len / (double)b->n : 0.0;
}

void blobs_reset(blobs_t *b) {
    b->n = 0;
    b->data_len = 0;
}

void blobs_free(blobs_t *b) {
    free(b->data);
    free(b->spans);
    memset(b, 0, sizeof *b);
}
