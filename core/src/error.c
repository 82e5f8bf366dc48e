#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *es_strerror(es_err code) {
    switch (code) {
    case ES_OK:
        return "ES_OK";
    case ES_EINVAL:
        return "ES_EINVAL";
    case ES_ECONFLICT:
        return "ES_ECONFLICT";
    case ES_EREJECTED:
        return "ES_EREJECTED";
    case ES_ETIMEOUT:
        return "ES_ETIMEOUT";
    case ES_EIO:
        return "ES_EIO";
    case ES_EDECODE:
        return "ES_EDECODE";
    case ES_EKAFKA:
        return "ES_EKAFKA";
    case ES_ENOMEM:
        return "ES_ENOMEM";
    case ES_ENOTFOUND:
        return "ES_ENOTFOUND";
    case ES_EUNKNOWN_TYPE:
        return "ES_EUNKNOWN_TYPE";
    case ES_EBUSY:
        return "ES_EBUSY";
    case ES_ESTATE:
        return "ES_ESTATE";
    case ES_ERETRY:
        return "ES_ERETRY";
    case ES_EIDREUSED:
        return "ES_EIDREUSED";
    case ES_EABORTED:
        return "ES_EABORTED";
    case ES_EINCOMPATIBLE:
        return "ES_EINCOMPATIBLE";
    }
    return "ES_E?";
}

/* Where escaping has to start in s: its first control character or byte that is not UTF-8. */
static size_t clean_prefix(const char *s) {
    const unsigned char *u = (const unsigned char *)s;
    size_t len = strlen(s);
    for (size_t i = 0; i < len;) {
        uint32_t cp = 0;
        size_t n = u[i] >= 0x20 && u[i] < 0x7f ? 1 : es_utf8_char(u + i, len - i, &cp);
        if (!n || (n > 1 && es_is_control(cp)) || (n == 1 && (u[i] < 0x20 || u[i] == 0x7f)))
            return i;
        i += n;
    }
    return len;
}

/* Writes the escaped in to out[0..cap), NUL-terminated; stops before what does not fit. */
static void escape_into(char *out, size_t cap, const char *in) {
    const unsigned char *u = (const unsigned char *)in;
    size_t o = 0, left = strlen(in);
    for (size_t i = 0; i < left;) {
        char esc[5];
        const char *piece = (const char *)u + i;
        uint32_t cp = 0;
        size_t n = es_utf8_char(u + i, left - i, &cp), plen = n;
        if (!n || es_is_control(cp)) {
            n = 1;
            if (u[i] == '\n' || u[i] == '\r' || u[i] == '\t')
                plen = (size_t)snprintf(esc, sizeof esc, "\\%c",
                                        u[i] == '\n'   ? 'n'
                                        : u[i] == '\r' ? 'r'
                                                       : 't');
            else
                plen = (size_t)snprintf(esc, sizeof esc, "\\x%02x", u[i]);
            piece = esc;
        }
        if (o + plen >= cap)
            break;
        memcpy(out + o, piece, plen);
        o += plen;
        i += n;
    }
    out[o] = '\0';
}

void es_escape_in_place(char *s, size_t cap) {
    size_t at = clean_prefix(s);
    if (!s[at])
        return;
    char local[1024], *tail = strlen(s + at) < sizeof local ? local : strdup(s + at);
    if (!tail) { /* out of memory: blank what would need escaping */
        for (unsigned char *u = (unsigned char *)s + at; *u; u++)
            *u = *u < 0x20 || *u >= 0x7f ? '?' : *u;
        return;
    }
    if (tail == local)
        memcpy(local, s + at, strlen(s + at) + 1);
    escape_into(s + at, cap - at, tail);
    if (tail != local)
        free(tail);
}

int es_needs_escape(const char *s) {
    return s[clean_prefix(s)] != '\0';
}

char *es_escape_dup(const char *s) {
    size_t cap = 4 * strlen(s) + 1; /* every byte may become \xNN */
    char *out = malloc(cap);
    if (out)
        escape_into(out, cap, s);
    return out;
}

/* Messages quote ids, names and reasons that come from callers and from data: they are escaped
 * here, once, so that a message is one line of text wherever it ends up (a log callback, a
 * terminal, a reply). Failures only: a command that succeeds never formats a message. */
es_err es_fail(es_error_t *err, es_err code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        es_escape_in_place(err->message, sizeof err->message);
    }
    return code;
}

void es_error_prefix(es_error_t *err, const char *fmt, ...) {
    if (!err)
        return;
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    es_escape_in_place(prefix, sizeof prefix);
    size_t cap = sizeof err->message, plen = strlen(prefix);
    /* Shift the message right (its tail may fall off), then write the prefix before it. */
    memmove(err->message + plen, err->message, cap - plen - 1);
    err->message[cap - 1] = '\0';
    memcpy(err->message, prefix, plen);
    es_escape_in_place(err->message, sizeof err->message); /* a tail cut inside a character */
}

void es_error_subject(es_error_t *err, const char *subject) {
    if (err && strncmp(err->message, subject, strlen(subject)) != 0)
        es_error_prefix(err, "%s", subject);
}

es_err es_buf_reserve(es_buf_t *b, size_t extra) {
    if (b->cap - b->len >= extra)
        return ES_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra)
        cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d)
        return ES_ENOMEM;
    b->data = d;
    b->cap = cap;
    return ES_OK;
}

es_err es_buf_append(es_buf_t *b, const void *data, size_t len, size_t *off) {
    if (es_buf_reserve(b, len) != ES_OK)
        return ES_ENOMEM;
    if (off)
        *off = b->len;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    return ES_OK;
}

void es_buf_free(es_buf_t *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *es_strdup0(const char *s) {
    return s ? strdup(s) : NULL;
}

es_err es_grow(void **items, size_t *cap, size_t n, size_t size, es_error_t *err) {
    if (n < *cap)
        return ES_OK;
    size_t c = *cap ? *cap * 2 : 16;
    void *p = realloc(*items, c * size);
    if (!p)
        return es_fail(err, ES_ENOMEM, "out of memory");
    *items = p;
    *cap = c;
    return ES_OK;
}

void es_free(void *p) {
    free(p);
}
