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
    }
    return "ES_E?";
}

es_err es_fail(es_error_t *err, es_err code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
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
    size_t cap = sizeof err->message, plen = strlen(prefix);
    /* Shift the message right (its tail may fall off), then write the prefix before it. */
    memmove(err->message + plen, err->message, cap - plen - 1);
    err->message[cap - 1] = '\0';
    memcpy(err->message, prefix, plen);
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
