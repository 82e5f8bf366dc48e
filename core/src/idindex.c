/* The in-memory index of the idempotency window (idindex.h). */
#include "idindex.h"

#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MIN_CAP 1024
#define OFF_MAX 0xffffffffULL

uint32_t es_id_index_hash(const es_id_index *x, const char *id) {
    uint64_t h = es_fnv1a64_seeded(x->seed, id, strlen(id)); /* then a finalizer to mix it */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return (uint32_t)(h >> 32);
}

static void place(uint64_t *slots, size_t cap, uint64_t v) {
    size_t i = (size_t)(v >> 32) & (cap - 1);
    while (slots[i])
        i = (i + 1) & (cap - 1);
    slots[i] = v;
}

static int64_t seq_of(const es_id_index *x, uint64_t v) {
    return x->base + (int64_t)(v & OFF_MAX);
}

/* Moves the entries at or above low into a table sized for them and one more, counted from
 * base; entries that base cannot count are dropped. */
static int regrow(es_id_index *x, int64_t low, int64_t base) {
    size_t live = 0;
    for (size_t i = 0; i < x->cap; i++)
        live += x->slots[i] && seq_of(x, x->slots[i]) >= low;
    size_t cap = MIN_CAP;
    while (cap / 2 < live + 1)
        cap *= 2;
    uint64_t *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    size_t count = 0;
    for (size_t i = 0; i < x->cap; i++) {
        uint64_t v = x->slots[i];
        int64_t seq = v ? seq_of(x, v) : 0;
        if (!v || seq < low || seq <= base || (uint64_t)(seq - base) > OFF_MAX)
            continue;
        place(slots, cap, (v & ~OFF_MAX) | (uint64_t)(seq - base));
        count++;
    }
    free(x->slots);
    x->slots = slots;
    x->cap = cap;
    x->count = count;
    x->base = base;
    return 0;
}

int es_id_index_add(es_id_index *x, uint32_t h, int64_t seq, int64_t low) {
    if (!x->count)
        x->base = seq - 1;
    int64_t base = x->base;
    if (seq <= base || (uint64_t)(seq - base) > OFF_MAX)
        base = (low < seq ? low : seq) - 1;
    if (x->count + 1 > x->cap / 4 * 3 || base != x->base) {
        if (regrow(x, low, base) != 0)
            return -1;
    }
    place(x->slots, x->cap, (uint64_t)h << 32 | (uint64_t)(seq - x->base));
    x->count++;
    return 0;
}

int64_t es_id_index_next(const es_id_index *x, uint32_t h, size_t *pos) {
    if (!x->cap)
        return 0;
    size_t i = *pos == SIZE_MAX ? (size_t)h & (x->cap - 1) : (*pos + 1) & (x->cap - 1);
    for (; x->slots[i]; i = (i + 1) & (x->cap - 1))
        if ((uint32_t)(x->slots[i] >> 32) == h) {
            *pos = i;
            return seq_of(x, x->slots[i]);
        }
    return 0;
}

size_t es_id_index_bytes(const es_id_index *x) {
    return x->cap * sizeof *x->slots;
}

void es_id_index_free(es_id_index *x) {
    free(x->slots);
    x->slots = NULL;
    x->cap = x->count = 0;
}
