/*
 * es_store_t: the event log of one service, behind one API on both backends.
 * Embedded (default): one SQLite file, WAL, synchronous=FULL. Every aggregate
 * has a stream of events with versions 1..n and no gaps; all streams together
 * form one log in commit order, read by offset (what projectors poll).
 *
 * A store is safe to use from several threads (calls serialize on it) and
 * several processes may open the same file: appends are transactions with
 * an optimistic version check, so concurrent writers see ES_ECONFLICT, never
 * a lost or duplicated event.
 *
 * Kafka: the store reads the "<type>.events" topics (streams gathered from every partition of
 * the aggregate's topic, in version order, through the log-order rule); the log has no single
 * order or end (es_store_read_log walks topic by topic, partition by partition, and
 * es_store_end_offset is ES_ESTATE), and writes (es_store_append, snapshots) are ES_ESTATE:
 * events are written by the command processor, reached through es_execute.
 */
#ifndef ESKIT_STORE_H
#define ESKIT_STORE_H

#include <stdbool.h>
#include <eskit/config.h>
#include <eskit/event.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct es_store es_store_t;

/* What an append requires of the stream's current version (as EventStoreDB). */
typedef enum es_expect {
    ES_EXPECT_ANY = 0,       /* whatever it is */
    ES_EXPECT_NO_STREAM = 1, /* the stream must not exist (version 0) */
    ES_EXPECT_EXISTS = 2,    /* the stream must exist (version >= 1) */
    ES_EXPECT_EXACT = 3,     /* the version must equal expected_version */
} es_expect;

/* An event to append; the store assigns id, version, offset and time. */
typedef struct es_new_event {
    const char *event_type;
    const uint8_t *payload;
    size_t payload_len;
    const char *command_id;     /* NULL: none */
    const char *correlation_id; /* NULL: none */
    const es_kv_t *metadata;
    size_t n_metadata;
} es_new_event_t;

typedef struct es_append_result {
    uint64_t first_version; /* version of the first appended event */
    uint64_t last_version;  /* the stream's version now */
    int64_t first_offset;   /* log offsets of the first and last appended event */
    int64_t last_offset;
} es_append_result_t;

typedef struct es_snapshot {
    uint64_t version; /* last event folded into the state */
    const char *state_type;
    const uint8_t *state;
    size_t state_len;
    int64_t taken_at_us;
} es_snapshot_t;

/* Opens (creating if needed) the store the config names. Caller frees with es_store_destroy. */
ES_API es_err es_store_new(const es_config_t *cfg, es_store_t **out, es_error_t *err);

/* How es_store_open opens a store. */
typedef enum es_open_mode {
    ES_OPEN_WRITE = 0,    /* read-write, creating the file and its schema when missing */
    ES_OPEN_READONLY = 1, /* inspection: writes and creates nothing (no -wal/-shm either); the file
                             must exist (ES_ENOTFOUND) and be an event store (ES_EINVAL) */
} es_open_mode;
/* es_store_new with a mode; appending or writing a snapshot to a read-only store is ES_ESTATE. */
ES_API es_err es_store_open(const es_config_t *cfg, es_open_mode mode, es_store_t **out,
                            es_error_t *err);
/* Closes the store and frees it (NULL is fine). */
ES_API void es_store_destroy(es_store_t *store);

/* Appends n events to one stream atomically, if expect holds. res may be NULL. */
ES_API es_err es_store_append(es_store_t *store, const char *type, const char *id, es_expect expect,
                              uint64_t expected_version, const es_new_event_t *events, size_t n,
                              es_append_result_t *res, es_error_t *err);

/* The stream's current version; 0 when it does not exist. */
ES_API es_err es_store_stream_version(es_store_t *store, const char *type, const char *id,
                                      uint64_t *version, es_error_t *err);

/* Calls cb for the stream's events with version >= from_version, in order. */
ES_API es_err es_store_read_stream(es_store_t *store, const char *type, const char *id,
                                   uint64_t from_version, es_event_cb *cb, void *opaque,
                                   es_error_t *err);

/* Calls cb for up to max events (0 = no limit) of the whole log with offset >=
 * from_offset, in commit order; types (NULL-terminated, NULL = all) filters by
 * aggregate type. *next_offset (may be NULL) is where the next read starts. */
ES_API es_err es_store_read_log(es_store_t *store, const char *const *types, int64_t from_offset,
                                size_t max, es_event_cb *cb, void *opaque, int64_t *next_offset,
                                es_error_t *err);

/* The offset the next appended event will get (the log's end). */
ES_API es_err es_store_end_offset(es_store_t *store, int64_t *end, es_error_t *err);

/* Stores (replacing) the stream's snapshot. */
ES_API es_err es_store_put_snapshot(es_store_t *store, const char *type, const char *id,
                                    const es_snapshot_t *snap, es_error_t *err);
/* The stream's snapshot, or ES_ENOTFOUND. Caller frees with es_snapshot_free. */
ES_API es_err es_store_get_snapshot(es_store_t *store, const char *type, const char *id,
                                    es_snapshot_t **out, es_error_t *err);
/* Frees a snapshot es_store_get_snapshot returned (NULL is fine). */
ES_API void es_snapshot_free(es_snapshot_t *snap);

/* One problem es_store_verify found; the strings are valid during the callback only. */
typedef struct es_verify_problem {
    const char *check;          /* what failed: "integrity" (SQLite's integrity_check or a read),
                                   "position", "envelope", "version", "stream", "heads", "end" */
    const char *topic;          /* Kafka: "<type>.events"; NULL on the embedded backend */
    int32_t partition;          /* Kafka partition; 0 on the embedded backend */
    int64_t position;           /* the event's position (Kafka: offset); -1 when not one event's */
    const char *aggregate_type; /* the stream it is about; NULL when none */
    const char *aggregate_id;
    uint64_t version; /* the event's version; 0 when not one event's */
    const char *message;
} es_verify_problem_t;

/* Called once per problem, in the order found. */
typedef void es_verify_cb(const es_verify_problem_t *problem, void *opaque);

typedef struct es_verify_summary {
    uint64_t events, streams, problems;
    int64_t first, last;  /* positions of the first and last event; 0 when none (Kafka: 0) */
    int64_t recorded_end; /* the end <db>-head records; -1 when there is none (Kafka: -1) */
    int disturbed;        /* a writer opened the file while it was read unlocked: run again */
} es_verify_summary_t;

/* What the backend a config selects is, for tools that shape their checks and help by it. */
typedef struct es_backend_info {
    const char *name; /* "embedded", "kafka" */
    int local_file;   /* the log is the file config key db names (a head file, --accept-end) */
    int partitioned;  /* topics of partitions with no global order (verify checks by type) */
} es_backend_info_t;
ES_API es_err es_backend_info(const es_config_t *cfg, es_backend_info_t *out, es_error_t *err);

/* Reads the whole log the config names, writing nothing, and reports each problem to cb (may
 * be NULL). Embedded: SQLite's integrity_check; positions strictly increasing; every envelope
 * decodes and matches its row; per stream, versions 1..n without gaps or duplicates, linked in
 * order (a stream a Kafka restore seeded at a snapshot starts past 1, and a snapshot in es_heads
 * must cover the versions before it); es_heads agrees with the events; the head file's end is
 * not past the log's. Kafka: per "<type>.events" topic of types (NULL-terminated; NULL:
 * topics.aggregates), every record decodes and each aggregate's versions run 1..n in one
 * partition (no heads, no head file).
 * ES_OK when the check ran, whatever it found (sum->problems); an error when it could not run. */
ES_API es_err es_store_verify(const es_config_t *cfg, const char *const *types, es_verify_cb *cb,
                              void *opaque, es_verify_summary_t *sum, es_error_t *err);
/* Embedded: rewrites <db>-head to the log's end as it is, accepting that the events it recorded
 * past that are gone (after restoring a backup). before (-1: none) and after may be NULL. */
ES_API es_err es_store_accept_end(const es_config_t *cfg, int64_t *before, int64_t *after,
                                  es_error_t *err);

/* The config the store was opened with (borrowed). */
ES_API const es_config_t *es_store_config(const es_store_t *store);

#ifdef __cplusplus
}
#endif
#endif
