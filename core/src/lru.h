/*
 * es_lru_t: a string-keyed hash map that forgets its least recently used
 * entries beyond a capacity. Entries the pinned callback reports as pinned
 * (dirty state not yet written) are never evicted; the map grows past its
 * capacity instead and es_lru_trim shrinks it once they are unpinned. With
 * capacity ES_LRU_UNBOUNDED nothing is ever evicted: a plain map.
 */
#ifndef ESKIT_LRU_H
#define ESKIT_LRU_H

#include <stddef.h>

#include <stdint.h>

#define ES_LRU_UNBOUNDED SIZE_MAX

typedef struct es_lru es_lru_t;

typedef void es_lru_free_fn(void *value);
typedef int es_lru_pinned_fn(const void *value);

es_lru_t *es_lru_new(size_t capacity, es_lru_free_fn *free_value, es_lru_pinned_fn *pinned);
void es_lru_destroy(es_lru_t *lru);
/* The value under key (and marks it used), or NULL. */
void *es_lru_get(es_lru_t *lru, const char *key, size_t klen);
/* Stores value under key, replacing (and freeing) an old one; 0 on success, -1 out of memory
 * (value is then freed). */
int es_lru_put(es_lru_t *lru, const char *key, size_t klen, void *value);
/* Drops the entry under key, if any. */
void es_lru_remove(es_lru_t *lru, const char *key, size_t klen);
/* Drops every entry. */
void es_lru_clear(es_lru_t *lru);
/* Evicts unpinned entries until the map is within its capacity. */
void es_lru_trim(es_lru_t *lru);
size_t es_lru_count(const es_lru_t *lru);

#endif
