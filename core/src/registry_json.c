/*
 * A strict JSON reader (registry_json.h), recursive descent over the text. The registry's
 * answers are small objects; what matters is that garbage is told from an answer, so anything
 * RFC 8259 does not allow is refused rather than guessed at.
 */
#include "registry_json.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define DEPTH_MAX 64

typedef struct cursor {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int hex4(const char *p, const char *end, unsigned *out) {
    unsigned v = 0;
    if (end - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        char ch = p[i];
        unsigned d = ch >= '0' && ch <= '9'   ? (unsigned)(ch - '0')
                     : ch >= 'a' && ch <= 'f' ? (unsigned)(ch - 'a' + 10)
                     : ch >= 'A' && ch <= 'F' ? (unsigned)(ch - 'A' + 10)
                                              : 16;
        if (d == 16)
            return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

/* A string at c->p (its opening quote); raw bytes must be valid UTF-8, which es_fail-style
 * escaping later relies on, so they are only checked for control characters here and the
 * decoder below writes what it reads. */
static int parse_string(cursor *c) {
    if (c->p >= c->end || *c->p != '"')
        return -1;
    for (c->p++; c->p < c->end; c->p++) {
        unsigned char ch = (unsigned char)*c->p;
        if (ch == '"') {
            c->p++;
            return 0;
        }
        if (ch < 0x20)
            return -1;
        if (ch != '\\')
            continue;
        if (++c->p >= c->end)
            return -1;
        unsigned u;
        if (*c->p == 'u') {
            if (hex4(c->p + 1, c->end, &u))
                return -1;
            c->p += 4;
        } else if (!*c->p || !strchr("\"\\/bfnrt", *c->p)) {
            return -1;
        }
    }
    return -1;
}

static int parse_number(cursor *c) {
    const char *p = c->p;
    if (p < c->end && *p == '-')
        p++;
    if (p >= c->end || *p < '0' || *p > '9')
        return -1;
    if (*p == '0')
        p++;
    else
        while (p < c->end && *p >= '0' && *p <= '9')
            p++;
    if (p < c->end && *p == '.') {
        if (++p >= c->end || *p < '0' || *p > '9')
            return -1;
        while (p < c->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < c->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < c->end && (*p == '+' || *p == '-'))
            p++;
        if (p >= c->end || *p < '0' || *p > '9')
            return -1;
        while (p < c->end && *p >= '0' && *p <= '9')
            p++;
    }
    c->p = p;
    return 0;
}

static int parse_word(cursor *c, const char *w) {
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n))
        return -1;
    c->p += n;
    return 0;
}

static int parse_value(cursor *c, int depth, es_json_val_t *v);

/* An object or array after its opening bracket, to its closing one. */
static int parse_items(cursor *c, int depth, char close, int object) {
    skip_ws(c);
    if (c->p < c->end && *c->p == close) {
        c->p++;
        return 0;
    }
    for (;;) {
        es_json_val_t item;
        skip_ws(c);
        if (object) {
            if (parse_string(c))
                return -1;
            skip_ws(c);
            if (c->p >= c->end || *c->p++ != ':')
                return -1;
        }
        if (parse_value(c, depth + 1, &item))
            return -1;
        skip_ws(c);
        if (c->p >= c->end)
            return -1;
        char ch = *c->p++;
        if (ch == close)
            return 0;
        if (ch != ',')
            return -1;
    }
}

static int parse_value(cursor *c, int depth, es_json_val_t *v) {
    skip_ws(c);
    if (c->p >= c->end || depth > DEPTH_MAX)
        return -1;
    v->start = c->p;
    int rc;
    switch (*c->p) {
    case '"':
        v->kind = ES_JSON_STRING;
        rc = parse_string(c);
        break;
    case '{':
    case '[':
        v->kind = *c->p == '{' ? ES_JSON_OBJECT : ES_JSON_ARRAY;
        c->p++;
        rc =
            parse_items(c, depth, v->kind == ES_JSON_OBJECT ? '}' : ']', v->kind == ES_JSON_OBJECT);
        break;
    case 't':
        v->kind = ES_JSON_TRUE;
        rc = parse_word(c, "true");
        break;
    case 'f':
        v->kind = ES_JSON_FALSE;
        rc = parse_word(c, "false");
        break;
    case 'n':
        v->kind = ES_JSON_NULL;
        rc = parse_word(c, "null");
        break;
    default:
        v->kind = ES_JSON_NUMBER;
        rc = parse_number(c);
    }
    v->len = (size_t)(c->p - v->start);
    return rc;
}

int es_json_check(const char *doc, size_t len, size_t *at) {
    cursor c = {doc, doc + len};
    es_json_val_t v;
    int rc = memchr(doc, '\0', len) ? -1 : parse_value(&c, 0, &v);
    if (rc == 0) {
        skip_ws(&c);
        rc = c.p == c.end ? 0 : -1;
    }
    if (at)
        *at = (size_t)(c.p - doc);
    return rc;
}

int es_json_next_member(const char *obj, size_t len, size_t *pos, es_json_val_t *key,
                        es_json_val_t *val) {
    cursor c = {obj + *pos, obj + len};
    skip_ws(&c);
    if (*pos == 0) {
        if (c.p >= c.end || *c.p++ != '{')
            return 0;
    } else if (c.p < c.end && *c.p == ',') {
        c.p++;
    }
    skip_ws(&c);
    if (c.p >= c.end || *c.p != '"')
        return 0; /* the closing brace (or not an object) */
    *key = (es_json_val_t){ES_JSON_STRING, c.p, 0};
    if (parse_string(&c))
        return 0;
    key->len = (size_t)(c.p - key->start);
    skip_ws(&c);
    if (c.p >= c.end || *c.p++ != ':' || parse_value(&c, 1, val))
        return 0;
    *pos = (size_t)(c.p - obj);
    return 1;
}

int es_json_member(const char *doc, size_t len, const char *key, es_json_val_t *out) {
    es_json_val_t k, v;
    for (size_t pos = 0; es_json_next_member(doc, len, &pos, &k, &v);) {
        char *name = es_json_string(&k);
        int found = name && !strcmp(name, key);
        free(name);
        if (found) {
            *out = v;
            return 1;
        }
    }
    return 0;
}

static char *put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xc0 | cp >> 6);
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xe0 | cp >> 12);
        *o++ = (char)(0x80 | (cp >> 6 & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *o++ = (char)(0xf0 | cp >> 18);
        *o++ = (char)(0x80 | (cp >> 12 & 0x3f));
        *o++ = (char)(0x80 | (cp >> 6 & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    }
    return o;
}

/* One escape after its backslash at *p; returns the code point (a lone surrogate: U+FFFD). */
static unsigned unescape(const char **p, const char *end) {
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    const char *e = strchr(from, **p);
    if (**p != 'u') {
        (*p)++;
        return e ? (unsigned char)to[e - from] : 0xfffd;
    }
    unsigned u = 0xfffd, lo;
    hex4(*p + 1, end, &u);
    *p += 5;
    if (u >= 0xd800 && u < 0xdc00) {
        if (end - *p >= 6 && (*p)[0] == '\\' && (*p)[1] == 'u' && !hex4(*p + 2, end, &lo) &&
            lo >= 0xdc00 && lo < 0xe000) {
            *p += 6;
            return 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
        }
        return 0xfffd;
    }
    return u >= 0xdc00 && u < 0xe000 ? 0xfffd : u;
}

char *es_json_string(const es_json_val_t *v) {
    if (v->kind != ES_JSON_STRING || v->len < 2)
        return NULL;
    char *out = malloc(v->len * 2), *o = out; /* an escape never grows past twice its text */
    if (!out)
        return NULL;
    const char *p = v->start + 1, *end = v->start + v->len - 1;
    while (p < end) {
        if (*p != '\\') {
            *o++ = *p++;
            continue;
        }
        p++;
        o = put_utf8(o, unescape(&p, end));
    }
    *o = '\0';
    return out;
}

int es_json_int(const es_json_val_t *v, long long *out) {
    if (v->kind != ES_JSON_NUMBER || v->len > 20)
        return 0;
    char text[24];
    memcpy(text, v->start, v->len);
    text[v->len] = '\0';
    char *end = NULL;
    errno = 0;
    long long n = strtoll(text, &end, 10);
    if (errno || *end)
        return 0;
    *out = n;
    return 1;
}

es_err es_json_put_string(es_buf_t *b, const char *s) {
    static const char hex[] = "0123456789abcdef";
    es_err e = es_buf_append(b, "\"", 1, NULL);
    for (const unsigned char *p = (const unsigned char *)s; e == ES_OK && *p; p++) {
        char esc[6] = {'\\', (char)*p};
        size_t n = 2;
        if (*p == '\n')
            esc[1] = 'n';
        else if (*p == '\t')
            esc[1] = 't';
        else if (*p == '\r')
            esc[1] = 'r';
        else if (*p < 0x20) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[*p >> 4];
            esc[5] = hex[*p & 15];
            n = 6;
        } else if (*p != '"' && *p != '\\') {
            n = 1;
            esc[0] = (char)*p;
        }
        e = es_buf_append(b, esc, n, NULL);
    }
    if (e == ES_OK)
        e = es_buf_append(b, "\"", 1, NULL);
    return e;
}
