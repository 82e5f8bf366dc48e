/* Helpers shared by the library's modules; not part of the public API. */
#ifndef ESKIT_INTERNAL_H
#define ESKIT_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <eskit/eskit.h>

/* Prefixes err's message with a formatted context ("loading orders.order/o-1: "). */
void es_error_prefix(es_error_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefixes err's message with subject ("saga 'x': ") unless it starts with it already: what a
 * public call does once so that each of its errors names its subject exactly once. */
void es_error_subject(es_error_t *err, const char *subject);

/* Sends a line to the config's log callback, if any. */
void es_logf(const es_config_t *cfg, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* One hop of a trace (trace.c): its span (tp: trace id, span id, flags), its parent span ("" at
 * the root) and the tracestate it passes on (borrowed; NULL: none). */
typedef struct es_trace {
    es_traceparent_t tp;
    char parent[ES_SPAN_ID_LEN + 1];
    const char *tracestate;
} es_trace_t;
/* Whether key is one of the trace keys the library writes (traceparent, tracestate,
 * eskit.parent_span). */
int es_trace_key(const char *key);
/* A new span under parent (NULL: the root of a new trace). */
void es_trace_child(const es_traceparent_t *parent, const char *tracestate, es_trace_t *out);
/* A new span under the caller's span in metadata: a new trace when it has no valid one. */
void es_trace_start(const es_kv_t *md, size_t n, es_trace_t *out);
/* The span a record's metadata names as its own (its traceparent and eskit.parent_span); 0 when
 * it has no valid traceparent. */
int es_trace_read(const es_kv_t *md, size_t n, es_trace_t *out);
/* Fills out (room for n + 3) with md less its trace keys, then t's: its traceparent (formatted
 * into tp), eskit.parent_span unless at the root, tracestate when it has one. Returns how many. */
size_t es_trace_metadata(const es_kv_t *md, size_t n, const es_trace_t *t, es_kv_t *out,
                         char tp[ES_TRACEPARENT_LEN + 1]);
/* The config's span callback (NULL: none) and its opaque. */
es_span_cb *es_config_span_cb(const es_config_t *cfg, void **opaque);
/* Whether the config has a span callback. */
int es_span_on(const es_config_t *cfg);
/* One span phase to the config's span callback; does nothing without one. attrs: n of them. */
void es_span_emit(const es_config_t *cfg, es_span_phase phase, const char *name,
                  const es_trace_t *t, int64_t start_us, int64_t end_us, es_err status,
                  const char *outcome, const es_kv_t *attrs, size_t n);

/* A growable byte buffer. */
typedef struct es_buf {
    uint8_t *data;
    size_t len, cap;
} es_buf_t;
es_err es_buf_reserve(es_buf_t *b, size_t extra);
/* Appends len bytes; *off (may be NULL) gets where they start. */
es_err es_buf_append(es_buf_t *b, const void *data, size_t len, size_t *off);
void es_buf_free(es_buf_t *b);
/* Makes room for entry n in *items, an array of *cap entries of size bytes (doubling, from 16). */
es_err es_grow(void **items, size_t *cap, size_t n, size_t size, es_error_t *err);

/* 64 random bits: a per-thread xorshift seeded from the kernel (a syscall per id would dominate
 * appends); not for secrets. */
uint64_t es_random64(void);
/* v as 16 lowercase hex digits, most significant first, and no NUL: a byte at a time from a
 * table of digit pairs (a digit at a time was most of the cost of an id or a span). */
void es_hex64(uint64_t v, char out[16]);
/* The word for an outcome in metrics, spans and the saga outbox: accepted, rejected, conflict,
 * error. */
const char *es_outcome_name(es_outcome o);

/* es_uuid7 for a clock reading the caller already has (es_now_us()): reading the clock was
 * a tenth of executing a command. */
void es_uuid7_at(int64_t now_us, char out[ES_UUID_STR_LEN + 1]);

/* What a command asked, kept with its id so that a retry can be told from the id reused for
 * another command: FNV-1a 64 of the command's full type name, and of its payload as packed.
 * Not a cryptographic digest: it catches mistakes, not a forger (see docs/idempotency.md). */
typedef struct es_fingerprint {
    uint64_t type, payload;
} es_fingerprint_t;
/* Its stored and wire form: the type hash, then the payload hash, each big-endian. */
#define ES_FINGERPRINT_LEN 16
/* FNV-1a, 64 bits, over len bytes. */
uint64_t es_fnv1a64(const void *data, size_t len);
/* The same from an offset basis XORed with seed (a table's own, for tables a caller fills). */
uint64_t es_fnv1a64_seeded(uint64_t seed, const void *data, size_t len);
/* What es_fingerprint_of reuses from one call to the next: the buffer a payload is packed into,
 * and the type hash of the last descriptor (a batch is mostly one command type). Zeroed: empty;
 * es_fingerprinter_free releases it. */
typedef struct es_fingerprinter {
    es_buf_t packed;
    const ProtobufCMessageDescriptor *desc;
    uint64_t type;
} es_fingerprinter_t;
/* The fingerprint of msg. */
es_err es_fingerprint_of(es_fingerprinter_t *f, const ProtobufCMessage *msg, es_fingerprint_t *fp);
void es_fingerprinter_free(es_fingerprinter_t *f);
void es_fingerprint_put(const es_fingerprint_t *fp, uint8_t out[ES_FINGERPRINT_LEN]);
void es_fingerprint_get(const uint8_t in[ES_FINGERPRINT_LEN], es_fingerprint_t *fp);

/* Packs an envelope into b (replacing its contents). */
es_err es_envelope_pack(const es_event_t *ev, es_buf_t *b, es_error_t *err);
/* es_envelope_encode for an event the library made (every field of this es_event_t, its
 * schema_version too); the public es_envelope_encode reads a caller's event only up to
 * n_metadata, since it may come from headers without schema_version (docs/abi.md). */
es_err es_envelope_encode_made(const es_event_t *ev, uint8_t **out, size_t *out_len,
                               es_error_t *err);
/* es_envelope_pack, with the fingerprint of the command that caused the event (NULL: none). */
es_err es_envelope_pack_caused(const es_event_t *ev, const es_fingerprint_t *fp, es_buf_t *b,
                               es_error_t *err);
/* es_envelope_decode into arena (es_pb_arena_t, below; NULL: the heap): no allocation of its
 * own per event. The event lives until the arena's next reset; es_event_free on it does
 * nothing. What a runner reads with (apply.c): one reset per record. */
typedef struct es_pb_arena es_pb_arena_t;
es_err es_envelope_decode_in(const uint8_t *buf, size_t len, const es_position_t *at,
                             es_pb_arena_t *arena, es_event_t **out, es_error_t *err);
/* The causing command's fingerprint in an event es_envelope_decode made: 1 and *fp filled when
 * the envelope carries one, 0 when not (older events, generated command ids, copies). */
int es_envelope_fingerprint(const es_event_t *ev, es_fingerprint_t *fp);

/* A message of type desc, initialised to its defaults, on the heap. */
ProtobufCMessage *es_pb_new(const ProtobufCMessageDescriptor *desc);
/* The descriptor in a NULL-terminated list with this full name, or NULL. */
const ProtobufCMessageDescriptor *es_pb_find(const ProtobufCMessageDescriptor *const *list,
                                             const char *name);

/*
 * es_pb_arena_t: a protobuf-c allocator that hands out memory from chunks it owns and frees it
 * all at once. A message unpacked with it lies entirely in memory the arena can name, so a
 * state that kept a pointer into it (a string borrowed from an event in evolve) is found by
 * es_pb_borrowed before the memory goes. Not thread-safe.
 */
es_pb_arena_t *es_pb_arena_new(void);
void es_pb_arena_destroy(es_pb_arena_t *a);
/* For protobuf_c_message_unpack; freeing through it does nothing (es_pb_arena_reset does). */
ProtobufCAllocator *es_pb_arena_allocator(es_pb_arena_t *a);
/* Bytes handed out since the last reset; also the logical offset of the next allocation. */
size_t es_pb_arena_used(const es_pb_arena_t *a);
/* Whether an allocation failed (out of memory) since the last reset. */
int es_pb_arena_failed(const es_pb_arena_t *a);
/* The logical offset of p in what was handed out since the last reset; -1 when outside. */
int64_t es_pb_arena_offset(const es_pb_arena_t *a, const void *p);
/* Takes back everything (keeping one chunk of moderate size for next time). */
void es_pb_arena_reset(es_pb_arena_t *a);

/* The first field es_pb_borrowed found. */
typedef struct es_pb_borrowed {
    char path[256];     /* "orders.v1.Order.customer_id", "inventory.v1.Item.reservations[2]" */
    ProtobufCType type; /* of the field */
    int array;          /* the repeated field's array itself, not one element */
    int64_t offset;     /* es_pb_arena_offset of the borrowed memory */
} es_pb_borrowed_t;
/* Finds the string, bytes, message and repeated fields of msg and its sub-messages that point
 * into arena; resets each to its default (so msg stays safe to free) and describes the first
 * in *first. Returns how many. */
size_t es_pb_borrowed(ProtobufCMessage *msg, const es_pb_arena_t *arena, es_pb_borrowed_t *first);

/* Sleeps ms milliseconds, resuming after signals. */
void es_sleep_ms(int ms);

/* Duplicates a string; NULL stays NULL. */
char *es_strdup0(const char *s);

/* Opens (creating, 0644) a side file eskit writes beside a database; what names it in errors
 * ("crash guard"). Refuses a symlink, anything but a regular file with one link owned by the
 * effective user and not writable by every user, and a directory every user can write unless
 * it is sticky and owned by the user or root. *fd is O_RDWR | O_CLOEXEC; the caller closes it.
 * (sidefile.c) */
es_err es_side_file_open(const char *path, const char *what, int *fd, es_error_t *err);
/* es_side_file_open's flags. */
enum {
    ES_SIDE_READ = 1, /* O_RDONLY, never created: a missing file is ES_ENOTFOUND */
};
/* es_side_file_open, with the same checks, for a file that may also be owner's (the owner of
 * its database, when another user such as root opens the database); one root creates is given
 * to owner:group. */
es_err es_side_file_open_for(const char *path, const char *what, unsigned flags, uid_t owner,
                             gid_t group, int *fd, es_error_t *err);
/* Gives the first size bytes of the side file fd disk blocks (growing it when shorter), so that
 * writing them through a mapping cannot die of SIGBUS on a full disk: that is ES_EIO here,
 * naming the file and saying the disk is full. */
es_err es_side_file_reserve(int fd, const char *path, const char *what, size_t size,
                            es_error_t *err);
/* An O_PATH descriptor of the directory holding path ("." when it has no '/'), *base the name
 * in it; -1 with errno on failure. Open path with openat(fd, *base, ...) to use that dir. */
int es_open_parent(const char *path, const char **base);
/* 1 when every user may write dir and it is not sticky and owned by the user or root. */
int es_dir_open_to_others(const struct stat *dir);
/* "a directory", "a symbolic link", ... for a st_mode, for messages. */
const char *es_file_kind(mode_t mode);

/* The text fields of the limits table (names.c). */
typedef enum es_text_field {
    ES_TEXT_AGGREGATE_ID,
    ES_TEXT_COMMAND_ID,
    ES_TEXT_CORRELATION_ID,
    ES_TEXT_METADATA_KEY,
    ES_TEXT_METADATA_VALUE,
} es_text_field;
/* Checks s against its field's limit and the text rule (UTF-8, no control characters); the
 * message names the field. */
es_err es_validate_text(es_text_field f, const char *s, es_error_t *err);
/* Checks a protobuf full name (event, command or state type); field names it in messages. */
es_err es_validate_type_name(const char *field, const char *name, es_error_t *err);
/* es_validate_command for a command whose aggregate type is known to be valid: the engine
 * checks a batch's type string once (the same pointer is the same text within one call). */
es_err es_validate_command_rest(const es_command_t *cmd, es_error_t *err);
/* Checks an event to append: its type, ids and metadata. */
es_err es_validate_new_event(const es_new_event_t *ev, es_error_t *err);
/* The length of the valid UTF-8 sequence at s (left bytes available), its code point in *cp;
 * 0 when the bytes are not UTF-8 (overlong, surrogate, truncated, past U+10FFFF). */
size_t es_utf8_char(const unsigned char *s, size_t left, uint32_t *cp);
/* C0, DEL or C1. */
int es_is_control(uint32_t cp);

/* Rewrites the NUL-terminated s (a buffer of cap bytes) so it holds no control characters and
 * no bytes that are not UTF-8: \n, \r, \t, or \xNN for each such byte, cutting the tail
 * (never an escape) when it no longer fits. Backslashes stay as they are, so escaping twice
 * changes nothing. */
void es_escape_in_place(char *s, size_t cap);
/* Whether s holds anything es_escape_in_place would rewrite. */
int es_needs_escape(const char *s);
/* A malloc'd escaped copy of s (NULL when out of memory). */
char *es_escape_dup(const char *s);

#endif
