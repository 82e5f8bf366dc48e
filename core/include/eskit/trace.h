/*
 * Trace context (W3C Trace Context level 1) and spans (docs/observability.md, "Traces").
 *
 * A command may carry metadata `traceparent` and `tracestate`. Every record the library writes
 * for it carries its own span as `traceparent` and its parent span as `eskit.parent_span` (16
 * hex digits; absent at the root), `tracestate` passed through: the command envelope and the
 * reply (the execute span, a child of the caller's), each event (a child of its command's), a
 * saga transition (a child of the event it handled), and a command a saga sends (a child of
 * that transition's span). A command without a valid `traceparent` starts a new trace.
 *
 * The three trace keys do not count against ES_MAX_METADATA: the library replaces the
 * caller's values with its own, so a caller at the limit stays within it.
 */
#ifndef ESKIT_TRACE_H
#define ESKIT_TRACE_H

#include <stdint.h>
#include <eskit/config.h>
#include <eskit/event.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Metadata keys of the trace context. */
#define ES_TRACEPARENT_KEY "traceparent"
#define ES_TRACESTATE_KEY "tracestate"
#define ES_PARENT_SPAN_KEY "eskit.parent_span"

#define ES_TRACE_ID_LEN 32    /* hex digits of a trace id */
#define ES_SPAN_ID_LEN 16     /* hex digits of a span id */
#define ES_TRACEPARENT_LEN 55 /* "00-<trace id>-<span id>-<flags>" */

/* A parsed traceparent: lowercase hex, NUL-terminated. span_id is W3C's parent-id, the span of
 * whoever wrote it. */
typedef struct es_traceparent {
    uint8_t version; /* 0; a later version is read as version 0 (W3C) */
    char trace_id[ES_TRACE_ID_LEN + 1];
    char span_id[ES_SPAN_ID_LEN + 1];
    uint8_t flags; /* bit 0: sampled */
} es_traceparent_t;

/* Parses a traceparent header value. ES_EINVAL (err says why) for anything W3C says to ignore:
 * wrong length or separators, a character that is not lowercase hex, version ff, an all-zero
 * trace or span id, a version 00 value with more after it. A later version is parsed by
 * version 00's layout, and may go on after a '-'. */
ES_API es_err es_traceparent_parse(const char *s, es_traceparent_t *out, es_error_t *err);
/* Writes tp as a version 00 traceparent (whatever tp->version says); out holds 56 bytes. */
ES_API void es_traceparent_format(const es_traceparent_t *tp, char out[ES_TRACEPARENT_LEN + 1]);
/* The trace context of metadata: ES_OK and *out when it has a valid traceparent, ES_ENOTFOUND
 * when it has none, ES_EINVAL when it has an invalid one. *tracestate (may be NULL) gets the
 * tracestate entry's value with a valid traceparent, NULL otherwise (W3C drops it then). */
ES_API es_err es_trace_from_metadata(const es_kv_t *metadata, size_t n, es_traceparent_t *out,
                                     const char **tracestate);

typedef enum es_span_phase {
    ES_SPAN_START = 1,
    ES_SPAN_END = 2,
} es_span_phase;

/* A span as the span callback sees it; every pointer is valid until the callback returns.
 * Names: "eskit.execute <aggregate type>" (a command's execution), "eskit.apply <projector>"
 * (a projector applying one event), "eskit.saga <saga>" (a saga handling one event). The end
 * of a span has the ids of its start. */
typedef struct es_span {
    es_span_phase phase;
    const char *name;
    char trace_id[ES_TRACE_ID_LEN + 1];
    char span_id[ES_SPAN_ID_LEN + 1];
    char parent_span_id[ES_SPAN_ID_LEN + 1]; /* "" at the root */
    uint8_t flags;
    int64_t start_us; /* es_now_us() clock */
    int64_t end_us;   /* 0 at the start */
    es_err status;    /* at the end: ES_OK, or what the work failed with */
    /* At the end: "accepted", "rejected", "conflict", "error", "duplicate" (execute), "ok",
     * "failed" (apply, saga); NULL at the start. */
    const char *outcome;
    /* aggregate_type, aggregate_id, command_id, event_type, event_id, projector, saga as they
     * apply; outcome at the end. */
    const es_kv_t *attributes;
    size_t n_attributes;
} es_span_t;

/* Called at the start and the end of each span, on the thread doing the work (the caller of
 * es_execute embedded, the thread polling a processor, runner or saga); it must not call back
 * into eskit. */
typedef void es_span_cb(const es_span_t *span, void *opaque);

/* Sets the span callback and its opaque (NULL: none, and spans cost nothing). Copied with the
 * config, as the log callback is. */
ES_API void es_config_set_span_cb(es_config_t *cfg, es_span_cb *cb, void *opaque);

#ifdef __cplusplus
}
#endif
#endif
