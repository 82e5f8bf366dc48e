/*
 * Errors as values. Every fallible call returns an es_err (ES_OK = 0, failures
 * negative) and, when given a non-NULL es_error_t, fills it with a message a
 * person can act on: what failed, where (aggregate, topic, offset, file) and
 * what to do about it.
 */
#ifndef ESKIT_ERROR_H
#define ESKIT_ERROR_H

#include <eskit/api.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum es_err {
    ES_OK = 0,
    ES_EINVAL = -1,         /* bad argument: name, id, config key or value, CLI input */
    ES_ECONFLICT = -2,      /* the expected version did not hold; nothing was appended */
    ES_EREJECTED = -3,      /* decide() refused the command; nothing was appended */
    ES_ETIMEOUT = -4,       /* a deadline passed */
    ES_EIO = -5,            /* storage failed (SQLite error, disk full, unreadable file) */
    ES_EDECODE = -6,        /* malformed bytes (envelope, payload, snapshot) */
    ES_EKAFKA = -7,         /* librdkafka reported an error */
    ES_ENOMEM = -8,         /* out of memory */
    ES_ENOTFOUND = -9,      /* no such aggregate type, stream, snapshot or file */
    ES_EUNKNOWN_TYPE = -10, /* event or command type not registered for the aggregate */
    ES_EBUSY = -11,         /* the database stayed locked by another writer past the timeout */
    ES_ESTATE = -12,        /* the call does not fit the object's state (e.g. registering twice) */
    ES_ERETRY = -13,        /* a transient failure: the same call may succeed later */
    ES_EIDREUSED = -14,     /* the command id was used before for a different command */
    ES_EABORTED = -15,      /* not executed: another command of its es_execute_all failed */
    ES_EINCOMPATIBLE = -16, /* a schema breaks the rules of the log's catalogue (schema.h) */
} es_err;

/* Filled by failing calls; message is always NUL-terminated. */
typedef struct es_error {
    es_err code;
    char message[512];
} es_error_t;

/* Short name of a code, e.g. "ES_ECONFLICT". Never NULL. */
ES_API const char *es_strerror(es_err code);

/* Fills err (when non-NULL) with code and a formatted message; returns code. For callbacks
 * (projector apply, deciders) that report an error the same way the library does. */
ES_API es_err es_fail(es_error_t *err, es_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Frees memory the library handed over as a plain buffer or an array of flat structs (the
 * headers say which: "caller frees ... with es_free"); NULL is fine. A result with parts of
 * its own has a free or clear function of its own (es_event_free, es_result_clear, ...). */
ES_API void es_free(void *p);

/* Whether a failure may pass by itself, so that a service polls again after a backoff rather
 * than give up: ES_EKAFKA (a broker away, an error librdkafka reported), ES_EBUSY (a database
 * locked past its busy timeout), ES_ETIMEOUT (a deadline passed) and ES_ERETRY (said to be
 * transient). Every other code needs a person or a code change: bad input, a conflict, a full
 * disk or corrupt file (ES_EIO), something missing (ES_ENOTFOUND), a policy stop (ES_ESTATE),
 * out of memory. The library's own run loops (es_processor_run, es_runner_run, es_saga_run)
 * retry exactly these. */
ES_API int es_err_is_transient(es_err code);

#ifdef __cplusplus
}
#endif
#endif
