#include "internal.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

ProtobufCMessage *es_pb_new(const ProtobufCMessageDescriptor *desc) {
    ProtobufCMessage *m = malloc(desc->sizeof_message);
    if (m)
        protobuf_c_message_init(desc, m);
    return m;
}

const ProtobufCMessageDescriptor *es_pb_find(const ProtobufCMessageDescriptor *const *list,
                                             const char *name) {
    for (; list && *list; list++)
        if (!strcmp((*list)->name, name))
            return *list;
    return NULL;
}

static const ProtobufCFieldDescriptor *field_at(const ProtobufCMessage *msg, const void *field) {
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    size_t off = (size_t)((const char *)field - (const char *)msg);
    for (unsigned i = 0; i < d->n_fields; i++)
        if (d->fields[i].offset == off)
            return &d->fields[i];
    return NULL;
}

/* protobuf_c_message_free_unpacked skips values equal to the field default. */
static int is_default(const ProtobufCFieldDescriptor *f, const void *p) {
    return !p || p == f->default_value || p == (const void *)protobuf_c_empty_string;
}

es_err es_pb_set_string(ProtobufCMessage *msg, char **field, const char *value) {
    const ProtobufCFieldDescriptor *f = field_at(msg, field);
    if (!f || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)
        return ES_EINVAL;
    char *copy = strdup(value ? value : "");
    if (!copy)
        return ES_ENOMEM;
    if (!is_default(f, *field))
        free(*field);
    *field = copy;
    return ES_OK;
}

es_err es_pb_set_bytes(ProtobufCMessage *msg, ProtobufCBinaryData *field, const uint8_t *data,
                       size_t len) {
    const ProtobufCFieldDescriptor *f = field_at(msg, field);
    if (!f || f->type != PROTOBUF_C_TYPE_BYTES || f->label == PROTOBUF_C_LABEL_REPEATED)
        return ES_EINVAL;
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return ES_ENOMEM;
    if (len)
        memcpy(copy, data, len);
    const ProtobufCBinaryData *def = f->default_value;
    if (field->data && (!def || field->data != def->data))
        free(field->data);
    field->data = copy;
    field->len = len;
    return ES_OK;
}

ProtobufCMessage *es_pb_clone(const ProtobufCMessage *msg) {
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return NULL;
    protobuf_c_message_pack(msg, buf);
    ProtobufCMessage *copy = protobuf_c_message_unpack(msg->descriptor, NULL, len, buf);
    free(buf);
    return copy;
}

/* ---- an arena for messages that are read and dropped ------------------------------------- */

typedef struct arena_chunk {
    struct arena_chunk *next; /* the older chunks */
    size_t base;              /* logical offset of data[0]: bytes handed out before this chunk */
    size_t cap, used;
    max_align_t data[]; /* cap bytes */
} arena_chunk;

struct es_pb_arena {
    ProtobufCAllocator allocator;
    arena_chunk *head; /* the newest chunk */
    int failed;        /* an allocation failed since the last reset */
};

#define ARENA_FIRST_CHUNK 4096
#define ARENA_KEEP_MAX (1u << 20) /* a reset keeps one chunk up to this size */

static void *arena_alloc(void *opaque, size_t size) {
    es_pb_arena_t *a = opaque;
    size_t align = _Alignof(max_align_t);
    size = (size + align - 1) & ~(align - 1);
    arena_chunk *c = a->head;
    if (!c || c->cap - c->used < size) {
        size_t cap = c ? 2 * c->cap : ARENA_FIRST_CHUNK;
        while (cap < size)
            cap *= 2;
        arena_chunk *n = malloc(sizeof *n + cap);
        if (!n) {
            a->failed = 1;
            return NULL;
        }
        *n = (arena_chunk){c, c ? c->base + c->used : 0, cap, 0};
        a->head = c = n;
    }
    void *p = (unsigned char *)c->data + c->used;
    c->used += size;
    return p;
}

static void arena_free(void *opaque, void *p) {
    (void)opaque, (void)p; /* all at once, in es_pb_arena_reset */
}

es_pb_arena_t *es_pb_arena_new(void) {
    es_pb_arena_t *a = calloc(1, sizeof *a);
    if (a)
        a->allocator = (ProtobufCAllocator){arena_alloc, arena_free, a};
    return a;
}

static void free_chunks(arena_chunk *c) {
    while (c) {
        arena_chunk *next = c->next;
        free(c);
        c = next;
    }
}

void es_pb_arena_destroy(es_pb_arena_t *a) {
    if (a)
        free_chunks(a->head);
    free(a);
}

ProtobufCAllocator *es_pb_arena_allocator(es_pb_arena_t *a) {
    return &a->allocator;
}

size_t es_pb_arena_used(const es_pb_arena_t *a) {
    return a->head ? a->head->base + a->head->used : 0;
}

int es_pb_arena_failed(const es_pb_arena_t *a) {
    return a->failed;
}

int64_t es_pb_arena_offset(const es_pb_arena_t *a, const void *p) {
    for (const arena_chunk *c = a->head; c && p; c = c->next) {
        const unsigned char *d = (const unsigned char *)c->data;
        if ((const unsigned char *)p >= d && (const unsigned char *)p < d + c->used)
            return (int64_t)(c->base + (size_t)((const unsigned char *)p - d));
    }
    return -1;
}

void es_pb_arena_reset(es_pb_arena_t *a) {
    arena_chunk *keep = a->head;
    if (keep) { /* the newest chunk is the largest: one unpack of the same size fits it next time */
        free_chunks(keep->next);
        keep->next = NULL;
        if (keep->cap > ARENA_KEEP_MAX) {
            free(keep);
            keep = NULL;
        } else {
            keep->base = keep->used = 0;
        }
    }
    a->head = keep;
    a->failed = 0;
}

/* ---- borrowed memory --------------------------------------------------------------------- */

#define WALK_DEPTH 32 /* deeper than any state; a cycle, maybe */

/* Where the walk is: the field at each level, and the element index in a repeated one. The path
 * is only spelled out for what is reported, so a clean walk formats nothing. */
typedef struct borrow_ctx {
    const es_pb_arena_t *arena;
    const ProtobufCMessage *root;
    es_pb_borrowed_t *first;
    const ProtobufCFieldDescriptor *field[WALK_DEPTH + 1];
    long index[WALK_DEPTH + 1]; /* -1: not an element */
    size_t n;
} borrow_ctx;

static int in_arena(const borrow_ctx *b, const void *p) {
    return p && es_pb_arena_offset(b->arena, p) >= 0;
}

/* Notes a field found pointing into the arena (the first one is reported). */
static void borrowed_at(borrow_ctx *b, int depth, const void *p, int array) {
    if (b->n++)
        return;
    es_pb_borrowed_t *r = b->first;
    size_t len = (size_t)snprintf(r->path, sizeof r->path, "%s", b->root->descriptor->name);
    for (int k = 0; k <= depth && len < sizeof r->path; k++) {
        len += (size_t)snprintf(r->path + len, sizeof r->path - len, ".%s", b->field[k]->name);
        if (b->index[k] >= 0 && len < sizeof r->path)
            len += (size_t)snprintf(r->path + len, sizeof r->path - len, "[%ld]", b->index[k]);
    }
    r->type = b->field[depth]->type;
    r->array = array;
    r->offset = es_pb_arena_offset(b->arena, p);
}

static void walk(borrow_ctx *b, ProtobufCMessage *msg, int depth);

/* A repeated field: its array, then each element. */
static void walk_repeated(borrow_ctx *b, ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f,
                          int depth) {
    size_t *n = (size_t *)((char *)msg + f->quantifier_offset);
    void **arr = (void **)((char *)msg + f->offset);
    if (in_arena(b, *arr)) { /* the event's array itself: drop it (its elements are the event's) */
        borrowed_at(b, depth, *arr, 1);
        *arr = NULL;
        *n = 0;
        return;
    }
    if (!*arr || (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_BYTES &&
                  f->type != PROTOBUF_C_TYPE_MESSAGE))
        return;
    for (size_t i = 0; i < *n; i++) {
        b->index[depth] = (long)i;
        if (f->type == PROTOBUF_C_TYPE_STRING) {
            char **s = &((char **)*arr)[i];
            if (in_arena(b, *s)) {
                borrowed_at(b, depth, *s, 0);
                *s = NULL; /* free_unpacked skips NULL elements */
            }
        } else if (f->type == PROTOBUF_C_TYPE_BYTES) {
            ProtobufCBinaryData *d = &((ProtobufCBinaryData *)*arr)[i];
            if (in_arena(b, d->data)) {
                borrowed_at(b, depth, d->data, 0);
                *d = (ProtobufCBinaryData){0, NULL};
            }
        } else {
            ProtobufCMessage **m = &((ProtobufCMessage **)*arr)[i];
            if (in_arena(b, *m)) {
                borrowed_at(b, depth, *m, 0);
                *m = NULL;
            } else if (*m) {
                walk(b, *m, depth + 1);
            }
        }
    }
    b->index[depth] = -1;
}

/* Every field of msg that may hold a pointer, and the messages below it. What is found is
 * cleared to its default, so that msg can still be freed with protobuf_c_message_free_unpacked. */
static void walk(borrow_ctx *b, ProtobufCMessage *msg, int depth) {
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    if (depth > WALK_DEPTH)
        return;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        void *member = (char *)msg + f->offset;
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)((const char *)msg + f->quantifier_offset) != f->id)
            continue; /* the union holds another member of the oneof */
        b->field[depth] = f;
        b->index[depth] = -1;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            walk_repeated(b, msg, f, depth);
        } else if (f->type == PROTOBUF_C_TYPE_STRING) {
            char **s = member;
            if (in_arena(b, *s)) {
                borrowed_at(b, depth, *s, 0);
                *s = (char *)f->default_value;
            }
        } else if (f->type == PROTOBUF_C_TYPE_BYTES) {
            ProtobufCBinaryData *bd = member;
            const ProtobufCBinaryData *def = f->default_value;
            if (in_arena(b, bd->data)) {
                borrowed_at(b, depth, bd->data, 0);
                *bd = def ? *def : (ProtobufCBinaryData){0, NULL};
            }
        } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            ProtobufCMessage **m = member;
            if (in_arena(b, *m)) {
                borrowed_at(b, depth, *m, 0);
                *m = NULL;
            } else if (*m && *m != f->default_value) {
                walk(b, *m, depth + 1);
            }
        }
    }
}

size_t es_pb_borrowed(ProtobufCMessage *msg, const es_pb_arena_t *arena, es_pb_borrowed_t *first) {
    if (!msg || !es_pb_arena_used(arena))
        return 0;
    borrow_ctx b; /* field[] and index[] are written before they are read: no memset */
    b.arena = arena;
    b.root = msg;
    b.first = first;
    b.n = 0;
    walk(&b, msg, 0);
    return b.n;
}
