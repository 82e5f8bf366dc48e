/*
 * The little JSON the Schema Registry client needs: a strict checker (RFC 8259: one value,
 * no trailing commas, no comments, strings of valid escapes and no raw control characters,
 * nesting at most 64 deep), the members of an object (a document's or a nested one's, by its
 * text), and string and integer values.
 * Values point into the document; nothing is built.
 */
#ifndef ESKIT_REGISTRY_JSON_H
#define ESKIT_REGISTRY_JSON_H

#include "internal.h"

#include <stddef.h>

typedef enum es_json_kind {
    ES_JSON_STRING,
    ES_JSON_NUMBER,
    ES_JSON_TRUE,
    ES_JSON_FALSE,
    ES_JSON_NULL,
    ES_JSON_OBJECT,
    ES_JSON_ARRAY,
} es_json_kind;

typedef struct es_json_val {
    es_json_kind kind;
    const char *start; /* the value's text, quotes included for a string */
    size_t len;
} es_json_val_t;

/* 0 when doc is one strict JSON value; else -1 with *at the offset of the first bad byte. */
int es_json_check(const char *doc, size_t len, size_t *at);
/* The members of the object whose text is obj (checked), in order: *pos 0 for the first; 1 with
 * its key (a string value: es_json_string) and value, *pos moved past it; 0 after the last, or
 * when obj is not an object. */
int es_json_next_member(const char *obj, size_t len, size_t *pos, es_json_val_t *key,
                        es_json_val_t *val);
/* 1 and *out when doc (checked) is an object with member key; else 0. */
int es_json_member(const char *doc, size_t len, const char *key, es_json_val_t *out);
/* A string value decoded to UTF-8, NUL-terminated. Caller frees with free; NULL when v is not
 * a string or memory ran out. */
char *es_json_string(const es_json_val_t *v);
/* 1 and *out when v is an integer number within long long. */
int es_json_int(const es_json_val_t *v, long long *out);
/* Appends s as a JSON string literal. */
es_err es_json_put_string(es_buf_t *b, const char *s);

#endif
