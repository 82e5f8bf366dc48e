/*
 * The read pipeline: how a log record becomes an event a reader acts on. Every path that reads
 * events from a log goes through it, in this order:
 *
 *   decode   the envelope (envelope.c), with the record's position in every error and the
 *            event's offset and partition set from the record;
 *   upcast   an event of an old type or schema version to its current form, through the
 *            config's upcasters (upcast_int.h, docs/upcasters.md): a new event with the same
 *            version and position, the stored bytes untouched; a failing upcaster makes the
 *            record bad (poison for a runner, an error for a writer's load);
 *   order    the log-order rule for the reader's role (logorder.h), against the last version
 *            the reader took of the aggregate, counted in the caller's es_order_counts;
 *   deliver  the caller's business: apply it, import it, print it.
 *
 * Who uses it: engine load and every embedded read (log_sqlite.c, decode and upcast only: its
 * linked streams cannot hold a stale version or a gap, and a broken link is ES_EIO there), Kafka
 * stream and log reads (log_kafka.c: es_store_read_stream, esctl events, es_saga_history), the
 * projector runner (and so es_replay, dlq redrive and the saga coordinator, which run on it),
 * and the command processor's restore (decode and order only: it imports the stored bytes into
 * its state store, whose engine upcasts them when it loads an aggregate).
 */
#ifndef ESKIT_READPIPE_H
#define ESKIT_READPIPE_H

#include "log/log.h"
#include "logorder.h"

/* The last version the reader took of ev's aggregate (0: none yet). */
typedef es_err es_read_last_fn(void *opaque, const es_event_t *ev, uint64_t *last, es_error_t *err);

typedef struct es_read_pipe {
    es_order_role role;
    const es_config_t *cfg;  /* where the gap warning goes (may be NULL) */
    es_read_last_fn *last;   /* NULL: no order check (the rule is off for this reader) */
    void *opaque;            /* last's */
    es_order_counts *counts; /* where the rule counts what it met (may be NULL) */
} es_read_pipe;

typedef enum es_read_result {
    ES_READ_EVENT = 0,  /* deliver *ev (a reader's gap too: warned about and counted) */
    ES_READ_STALE = 1,  /* skipped and counted: not after the aggregate's last version */
    ES_READ_BAD = 2,    /* not an event: *rc and err say why and where; nothing counted */
    ES_READ_GAP = 3,    /* restore: a gap; *rc is ES_EIO and err names the missing versions */
    ES_READ_FAILED = 4, /* the reader's last-version lookup failed: *rc, err */
} es_read_result;

/* Decodes rec into *ev (caller frees; NULL unless ES_READ_EVENT). rec->key, when set, is the
 * aggregate id errors name. */
/* The record's key: rec->key, or what its log tells of it (reader op record_key; valid until
 * the next call on that log, from the thread that fetched it, while the record is); NULL when
 * unknown. */
const char *es_raw_key(const es_raw_record_t *rec);
es_read_result es_read_decode(const es_raw_record_t *rec, es_event_t **ev, es_err *rc,
                              es_error_t *err);
/* es_read_decode into arena (es_envelope_decode_in): *ev lives until the arena's reset. */
es_read_result es_read_decode_in(const es_raw_record_t *rec, es_pb_arena_t *arena, es_event_t **ev,
                                 es_err *rc, es_error_t *err);

/* The upcast stage: *ev becomes its current form under cfg's upcasters (the stored one freed),
 * or stays when it is current; at (may be NULL) is named in errors. ES_READ_EVENT, or
 * ES_READ_BAD with *ev freed and NULL, *rc and err naming the upcaster, type and position. */
es_read_result es_read_upcast(const es_config_t *cfg, es_event_t **ev, const es_position_t *at,
                              es_err *rc, es_error_t *err);

/* Decode, then upcast: what a reader without the order stage calls. */
es_read_result es_read_current(const es_config_t *cfg, const es_raw_record_t *rec, es_event_t **ev,
                               es_err *rc, es_error_t *err);

/* The order stage for ev, read at `at` (may be NULL): ES_READ_EVENT, _STALE, _GAP or
 * _FAILED. */
es_read_result es_read_order(const es_read_pipe *p, const es_event_t *ev, const es_position_t *at,
                             es_err *rc, es_error_t *err);

#endif
