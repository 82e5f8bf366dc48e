#include "lru.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct node {
    struct node *next_in_bucket;
    struct node *prev, *next; /* use order: head = most recent */
    uint64_t hash;
    void *value;
    size_t klen;
    char key[];
} node;

struct es_lru {
    node **buckets;
    size_t n_buckets, count, capacity;
    node *head, *tail;
    es_lru_free_fn *free_value;
    es_lru_pinned_fn *pinned;
};

/* Eight bytes a step (a byte at a time was half the cost of a lookup), then murmur3's
 * finalizer so the low bits that pick the bucket depend on every byte. */
static uint64_t hash_key(const char *key, size_t klen) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ klen, w;
    for (; klen >= 8; key += 8, klen -= 8) {
        memcpy(&w, key, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 29;
    }
    w = 0;
    memcpy(&w, key, klen);
    h ^= w;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

es_lru_t *es_lru_new(size_t capacity, es_lru_free_fn *free_value, es_lru_pinned_fn *pinned) {
    es_lru_t *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->n_buckets = 64; /* grown as entries come (see grow), so a large capacity costs nothing */
    while (l->n_buckets < capacity && l->n_buckets < 1024)
        l->n_buckets *= 2;
    l->buckets = calloc(l->n_buckets, sizeof *l->buckets);
    if (!l->buckets) {
        free(l);
        return NULL;
    }
    l->capacity = capacity ? capacity : 1;
    l->free_value = free_value;
    l->pinned = pinned;
    return l;
}

static void unlink_use(es_lru_t *l, node *n) {
    if (n->prev)
        n->prev->next = n->next;
    else
        l->head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        l->tail = n->prev;
    n->prev = n->next = NULL;
}

static void push_front(es_lru_t *l, node *n) {
    n->next = l->head;
    n->prev = NULL;
    if (l->head)
        l->head->prev = n;
    l->head = n;
    if (!l->tail)
        l->tail = n;
}

static node **slot_of(es_lru_t *l, uint64_t hash, const char *key, size_t klen) {
    node **p = &l->buckets[hash & (l->n_buckets - 1)];
    while (*p && ((*p)->hash != hash || (*p)->klen != klen || memcmp((*p)->key, key, klen)))
        p = &(*p)->next_in_bucket;
    return p;
}

static void remove_node(es_lru_t *l, node *n) {
    node **p = slot_of(l, n->hash, n->key, n->klen);
    *p = n->next_in_bucket;
    unlink_use(l, n);
    if (l->free_value)
        l->free_value(n->value);
    free(n);
    l->count--;
}

void *es_lru_get(es_lru_t *l, const char *key, size_t klen) {
    node *n = *slot_of(l, hash_key(key, klen), key, klen);
    if (!n)
        return NULL;
    unlink_use(l, n);
    push_front(l, n);
    return n->value;
}

/* Doubles the bucket array when the entries outnumber its buckets. */
static void grow(es_lru_t *l) {
    size_t nb = l->n_buckets * 2;
    node **b = calloc(nb, sizeof *b);
    if (!b)
        return; /* longer chains, still correct */
    for (node *n = l->head; n; n = n->next) {
        n->next_in_bucket = b[n->hash & (nb - 1)];
        b[n->hash & (nb - 1)] = n;
    }
    free(l->buckets);
    l->buckets = b;
    l->n_buckets = nb;
}

/* Evicts from the least recent end, never touching keep (the entry just stored). */
static void trim_keeping(es_lru_t *l, const node *keep) {
    node *n = l->tail;
    while (l->count > l->capacity && n && n != keep) {
        node *prev = n->prev;
        if (!l->pinned || !l->pinned(n->value))
            remove_node(l, n);
        n = prev;
    }
}

void es_lru_trim(es_lru_t *l) {
    trim_keeping(l, NULL);
}

void es_lru_remove(es_lru_t *l, const char *key, size_t klen) {
    node *n = *slot_of(l, hash_key(key, klen), key, klen);
    if (n)
        remove_node(l, n);
}

int es_lru_put(es_lru_t *l, const char *key, size_t klen, void *value) {
    uint64_t h = hash_key(key, klen);
    node **p = slot_of(l, h, key, klen);
    if (*p) {
        if ((*p)->value != value && l->free_value)
            l->free_value((*p)->value);
        (*p)->value = value;
        unlink_use(l, *p);
        push_front(l, *p);
        return 0;
    }
    node *n = malloc(sizeof *n + klen);
    if (!n) {
        if (l->free_value)
            l->free_value(value);
        return -1;
    }
    n->hash = h;
    n->value = value;
    n->klen = klen;
    memcpy(n->key, key, klen);
    n->next_in_bucket = *p;
    *p = n;
    push_front(l, n);
    l->count++;
    trim_keeping(l, n);
    if (l->count > l->n_buckets)
        grow(l);
    return 0;
}

void es_lru_clear(es_lru_t *l) {
    while (l->head)
        remove_node(l, l->head);
}

size_t es_lru_count(const es_lru_t *l) {
    return l->count;
}

void es_lru_destroy(es_lru_t *l) {
    if (!l)
        return;
    es_lru_clear(l);
    free(l->buckets);
    free(l);
}
