/* Helpers shared by the library's modules; not part of the public API. */
#ifndef ESKIT_INTERNAL_H
#define ESKIT_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <eskit/eskit.h>

/* Prefixes err's message with a formatted context ("loading orders.order/o-1: "). */
void es_error_prefix(es_error_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefixes err's message with subject ("saga 'x': ") unless it starts with it already: what a
 * public call does once so that each of its errors names its subject exactly once. */
void es_error_subject(es_error_t *err, const char *subject);

/* Sends a line to the config's log callback, if any. */
void es_logf(const es_config_t *cfg, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A growable byte buffer. */
typedef struct es_buf {
    uint8_t *data;
    size_t len, cap;
} es_buf_t;
es_err es_buf_reserve(es_buf_t *b, size_t extra);
/* Appends len bytes; *off (may be NULL) gets where they start. */
es_err es_buf_append(es_buf_t *b, const void *data, size_t len, size_t *off);
void es_buf_free(es_buf_t *b);

/* es_uuid7 for a clock reading the caller already has (es_now_us()): reading the clock was
 * a tenth of executing a command. */
void es_uuid7_at(int64_t now_us, char out[ES_UUID_STR_LEN + 1]);

/* Packs an envelope into b (replacing its contents). */
es_err es_envelope_pack(const es_event_t *ev, es_buf_t *b, es_error_t *err);

/* A message of type desc, initialised to its defaults, on the heap. */
ProtobufCMessage *es_pb_new(const ProtobufCMessageDescriptor *desc);
/* The descriptor in a NULL-terminated list with this full name, or NULL. */
const ProtobufCMessageDescriptor *es_pb_find(const ProtobufCMessageDescriptor *const *list,
                                             const char *name);

/* Sleeps ms milliseconds, resuming after signals. */
void es_sleep_ms(int ms);

/* Duplicates a string; NULL stays NULL. */
char *es_strdup0(const char *s);

#endif
