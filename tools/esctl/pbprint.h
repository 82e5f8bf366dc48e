/*
 * pbprint: prints any protobuf-c message from its descriptor alone, as
 * `name=value` text or as proto3 JSON, and finds descriptors by full name.
 *
 * esctl reads payloads written by services it was not compiled with, so
 * nothing here knows a message type: the registry maps the event_type stored
 * in the envelope to a descriptor of a loaded types module (types.modules,
 * --types) and the printers walk the descriptor's fields.
 *
 * Output goes to a pb_buf (growable, always NUL-terminated) so a caller can
 * assemble a whole line before writing it; an allocation failure sets
 * pb_buf.oom and later appends do nothing.
 */
#ifndef ESCTL_PBPRINT_H
#define ESCTL_PBPRINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>
#include <eskit/types.h>

typedef struct pb_buf {
    char *data;
    size_t len;
    size_t cap;
    bool oom;
} pb_buf;

void pb_buf_init(pb_buf *b);
void pb_buf_free(pb_buf *b);
void pb_buf_reset(pb_buf *b);
void pb_buf_putc(pb_buf *b, char c);
void pb_buf_puts(pb_buf *b, const char *s);
void pb_buf_printf(pb_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Length of the valid UTF-8 sequence at s (at most n > 0 bytes), or 0 when invalid. */
size_t pb_utf8_len(const unsigned char *s, size_t n);
/* Appends s as a quoted JSON string; invalid UTF-8 becomes U+FFFD, control characters (C1 too)
 * are escaped. */
void pb_buf_json_string(pb_buf *b, const char *s, size_t len);
/* Appends data base64-encoded (RFC 4648, padded), without quotes. */
void pb_buf_base64(pb_buf *b, const uint8_t *data, size_t len);

/* Space-separated `name=value` pairs of msg's fields (proto3 scalars even when
 * zero): strings quoted, messages in braces, repeated in brackets, enums by name. */
void pb_print_text(pb_buf *b, const ProtobufCMessage *msg);
/* msg's fields one a line, "name: value" (values as pb_print_text writes them), every line
 * ending in a newline. */
void pb_print_lines(pb_buf *b, const ProtobufCMessage *msg);
/* msg as a proto3 JSON object: lowerCamelCase names, defaults omitted, 64-bit
 * integers as strings, bytes as base64, enums by name, maps as objects. */
void pb_print_json(pb_buf *b, const ProtobufCMessage *msg);

/* Message descriptors by full name ("orders.v1.OrderPlaced") and aggregate definitions by type,
 * from the types modules (<eskit/types.h>) loaded into it (kept loaded until destroy). esctl
 * knows no type of its own: what it decodes comes from these modules. */
typedef struct pb_registry pb_registry;

/* An empty registry. Caller frees with pb_registry_destroy. */
pb_registry *pb_registry_new(void);
void pb_registry_destroy(pb_registry *reg);
/* Loads the types module name_or_path (es_types_load) into reg and registers its upcasters on
 * cfg (reg must outlive cfg's readers); errors name the file. */
es_err pb_registry_load(pb_registry *reg, es_config_t *cfg, const char *name_or_path,
                        es_error_t *err);
/* How many modules reg holds. */
size_t pb_registry_modules(const pb_registry *reg);
/* The descriptor named full_name, or NULL. Earlier modules win. */
const ProtobufCMessageDescriptor *pb_registry_find(const pb_registry *reg, const char *full_name);
/* The aggregate definition of type, or NULL. Earlier modules win. */
const es_aggregate_def *pb_registry_aggregate(const pb_registry *reg, const char *type);

#endif
