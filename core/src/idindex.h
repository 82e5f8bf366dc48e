/*
 * The command ids of the idempotency window, in memory: which es_commands rows (by seq, their
 * rowid) may hold an id. es_commands is in insertion order with no index on the id, so an
 * insert lands on the right edge of its B-tree whatever the ids look like; this table is what
 * finds an id again. A miss (a new command) touches no page; a candidate is confirmed by reading
 * its row and comparing the id text, so a collision only costs that read.
 *
 * Open addressing, linear probing, at most 3/4 full (regrown to at most half full: 11 to 22
 * bytes an id). A slot is 8 bytes: 32 bits of the id's
 * hash (which also pick the home slot, so the table regrows without the ids) and 32 bits of seq
 * counted from base; 0 is empty. Entries are never deleted: those below the caller's low
 * watermark (rows pruned from the left edge) read as absent and are left out when it regrows.
 */
#ifndef ESKIT_IDINDEX_H
#define ESKIT_IDINDEX_H

#include <stddef.h>
#include <stdint.h>

typedef struct es_id_index {
    uint64_t *slots;
    size_t cap, count; /* cap: 0 or a power of two; count: entries, live or below low */
    int64_t base;      /* an entry's seq is base + its low 32 bits */
    uint64_t seed;     /* set once before the first hash, per table, so crafted ids cannot pile
                          up in one place */
} es_id_index;

/* The id's 32-bit hash for this table. */
uint32_t es_id_index_hash(const es_id_index *x, const char *id);

/* Adds seq under hash h; entries below low may be dropped to make room. -1: out of memory. */
int es_id_index_add(es_id_index *x, uint32_t h, int64_t seq, int64_t low);

/* The next candidate seq for hash h from *pos (start with *pos = SIZE_MAX), 0 when none is
 * left. Candidates come in no particular order; the caller skips those below its low. */
int64_t es_id_index_next(const es_id_index *x, uint32_t h, size_t *pos);

/* Bytes the table holds. */
size_t es_id_index_bytes(const es_id_index *x);

void es_id_index_free(es_id_index *x);

#endif
