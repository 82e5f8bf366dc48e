/*
 * es_log: a backend's log, seen by role, as SQLite's VFS separates its factory (sqlite3_vfs)
 * from the method tables of the files it opens (sqlite3_io_methods). backends.c is the factory:
 * it alone knows the backends by name and opens a log; the log carries one method table per
 * role it plays, and a role a backend does not play is a NULL table, never methods that fail at
 * run time:
 *
 *   store   the event store, transactional: streams, append, snapshots, command ids, meta.
 *           The embedded backend's (log_sqlite.c). Kafka has none: its writes go through its
 *           command executor (remote.c) to the command processor, whose state store is an
 *           embedded log.
 *   reader  the log read as records: identity, partitions, fetch, ends, positions, the DLQ,
 *           and stream and log reads (log_sqlite.c, log_kafka.c).
 *
 * Writes happen between begin and commit; everything in between is atomic. Reads called outside
 * begin/commit run in their own consistent snapshot. A log is used by one thread at a time
 * (es_store serializes calls). Kafka has no global order: read_log walks each topic partition
 * by partition, and its from/next count records of that walk from 1.
 */
#ifndef ESKIT_LOG_H
#define ESKIT_LOG_H

#include "internal.h"
#include "runloop.h"

#include <sqlite3.h>

typedef struct es_log es_log_t;

/* One event to append: its view (versions assigned) and its envelope bytes. */
typedef struct es_log_record {
    const es_event_t *ev;
    const uint8_t *bytes;
    size_t len;
} es_log_record_t;

/* What the log remembers of an executed command, for exactly-once execution, and what the
 * command asked, to tell a retry from the id reused for another command. */
typedef struct es_command_record {
    const char *command_id;
    const char *aggregate_type;
    const char *aggregate_id;
    int outcome; /* es_outcome */
    uint64_t first_version, last_version, version;
    const char *reason;
    int has_fingerprint; /* 0: recorded without one (before schema 3, or restored from old events)
                          */
    es_fingerprint_t fingerprint;
    int64_t at_ms; /* when the command first ran, ms since the epoch (the idempotency window counts
                      from it); 0: now. A restore passes its events' record time. */
} es_command_record_t;

/* One record as a consumer sees it: raw bytes and where they sit. */
typedef struct es_raw_record {
    const char *topic; /* "<type>.events" */
    int32_t partition;
    int64_t offset;
    const char *key; /* aggregate id; NULL when unknown or not read yet: see es_raw_key */
    const uint8_t *value;
    size_t len;
    /* With key NULL: the log that can still tell it (reader op record_key), and its handle of
     * the record. The embedded log reads a key only for the records that need one (a
     * dead letter, an envelope that does not decode, verify): a lookup an event otherwise, 2%
     * of a replay's instructions. */
    es_log_t *key_log;
    int64_t key_ref;
} es_raw_record_t;

/* Called per record in log order; return non-zero to stop. */
typedef int es_raw_cb(const es_raw_record_t *rec, void *opaque);

/* A consumer position: the next offset to read in one partition of one topic. */
typedef struct es_topic_pos {
    const char *topic;
    int32_t partition;
    int64_t offset;
} es_topic_pos_t;

/* A writer's snapshot of type/id not yet put (es_store_ops.snapshot_source). */
typedef const es_snapshot_t *es_snapshot_src(void *opaque, const char *type, const char *id);

/* The event store role (embedded only). */
#define ES_STORE_OPS_VERSION 4
typedef struct es_store_ops {
    int version; /* ES_STORE_OPS_VERSION: methods past a version are absent below it */
    es_err (*begin)(es_log_t *log, es_error_t *err);
    es_err (*commit)(es_log_t *log, es_error_t *err);
    void (*rollback)(es_log_t *log);
    /* Appends recs (versions base+1..base+n) if the stream is at base; writes each
     * record's log offset to offsets[i]. Must be inside begin/commit. */
    es_err (*append)(es_log_t *log, const char *type, const char *id, uint64_t base,
                     const es_log_record_t *recs, size_t n, int64_t *offsets, es_error_t *err);
    /* The offset the next append gets. */
    es_err (*end_offset)(es_log_t *log, int64_t *end, es_error_t *err);
    es_err (*get_snapshot)(es_log_t *log, const char *type, const char *id, es_snapshot_t **out,
                           es_error_t *err);
    es_err (*put_snapshot)(es_log_t *log, const char *type, const char *id,
                           const es_snapshot_t *snap, es_error_t *err);
    /* ES_ENOTFOUND when unknown; strings in *rec stay valid until the next call. */
    es_err (*find_command)(es_log_t *log, const char *command_id, es_command_record_t *rec,
                           es_error_t *err);
    es_err (*put_command)(es_log_t *log, const es_command_record_t *rec, es_error_t *err);
    /* A key of the store's meta table (*found 0 when absent); put replaces, and belongs inside
     * begin/commit when it must be atomic with an append. */
    es_err (*get_meta)(es_log_t *log, const char *key, char *out, size_t cap, int *found,
                       es_error_t *err);
    es_err (*put_meta)(es_log_t *log, const char *key, const char *value, es_error_t *err);
    /* Version 2. Creates a stream that begins past version: its events 1..version are not in
     * this store (a snapshot stands for them; the Kafka processor's restore, which reads only
     * the events after it). The stream is at version with no events, the next append continues
     * at version + 1, and a read of a version below its first stored event is ES_EIO. Inside
     * begin/commit; ES_ECONFLICT when the stream exists. */
    es_err (*seed_stream)(es_log_t *log, const char *type, const char *id, uint64_t version,
                          es_error_t *err);
    /* Version 3. The next commit writes whatever the store keeps in memory for later (the
     * embedded store's deferred heads and snapshots): what it commits must not need a replay
     * of the log to be found again, as a restore's snapshots of seeded streams. */
    void (*write_heads)(es_log_t *log);
    /* Version 4. 0 when a snapshot put in this transaction would wait in the store's memory
     * past its commit (the embedded store's deferred heads), where a later put of the same
     * stream replaces it: a writer may then keep its states and put their snapshots at a
     * later transaction for which this is not 0. 1 when the commit writes what waits; 2 when
     * it does and another connection may have written since, so a state kept back may be
     * behind its stream (check its version before putting it). */
    int (*heads_due)(es_log_t *log);
    /* Version 4. The snapshots such a writer keeps back are still the newest get_snapshot
     * gives: it asks src first, which returns the snapshot the writer would put now (valid
     * until its next call) or NULL when none waits. src NULL: none. */
    void (*snapshot_source)(es_log_t *log, es_snapshot_src *src, void *opaque);
} es_store_ops;

/* The log reader role (every backend). */
#define ES_READER_OPS_VERSION 2
typedef struct es_reader_ops {
    int version; /* ES_READER_OPS_VERSION */
    es_err (*stream_version)(es_log_t *log, const char *type, const char *id, uint64_t *version,
                             es_error_t *err);
    es_err (*read_stream)(es_log_t *log, const char *type, const char *id, uint64_t from,
                          uint64_t to, es_event_cb *cb, void *opaque, es_error_t *err);
    es_err (*read_log)(es_log_t *log, const char *const *types, int64_t from, size_t max,
                       es_event_cb *cb, void *opaque, int64_t *next, es_error_t *err);
    /* A stable id of this log (embedded: made with the file), written into read models. */
    es_err (*identity)(es_log_t *log, char *out, size_t cap, es_error_t *err);
    /* Consumer side. Partitions of a topic (1 on the embedded backend). */
    es_err (*partitions)(es_log_t *log, const char *topic, int32_t *n, es_error_t *err);
    /* Delivers up to max records of the positions' partitions, each from its offset, and
     * moves every position past what was read (past skipped records too). Offset 0 is the
     * partition's beginning; a position below the partition's first retained offset is
     * ES_EIO (data lost to retention), never skipped. Kafka returns after a few ms without a
     * new record: callers poll again. */
    es_err (*fetch)(es_log_t *log, es_topic_pos_t *pos, size_t n_pos, size_t max, es_raw_cb *cb,
                    void *opaque, es_error_t *err);
    /* Cheap and local: 0 when nothing lies past any position, as far as the log knows without
     * asking a server; 1 when something may (or it cannot tell). */
    int (*has_records)(es_log_t *log, const es_topic_pos_t *pos, size_t n);
    /* A partition's end offset and how many records of the topic lie in [from, end). */
    es_err (*topic_end)(es_log_t *log, const char *topic, int32_t partition, int64_t from,
                        int64_t *end, uint64_t *count, es_error_t *err);
    /* topic_end as the log knows it without waiting on a server (Kafka: the high watermark
     * the consumer's fetch responses cached): 1 with *end and *count set, 0 when it does not
     * know yet. What a runner's metrics read after each batch (runner_metrics.c). */
    int (*cached_end)(es_log_t *log, const char *topic, int32_t partition, int64_t from,
                      int64_t *end, uint64_t *count);
    /* Appends a poison record to a dead-letter topic ("<topic>.dlq"); ref makes it idempotent:
     * a second record with the same ref is dropped. On Kafka the record is produced (and
     * flushed) with ref in an es-dlq-ref header, and dropping duplicates is the consumer's
     * job: a retry after a timeout can produce it twice. */
    es_err (*put_dlq)(es_log_t *log, const char *dlq_topic, const char *ref, const char *key,
                      const uint8_t *value, size_t len, const es_kv_t *headers, size_t n_headers,
                      es_error_t *err);
    /* topic_end where counting would read many records: *count may be an estimate from the
     * positions (*exact 0). NULL: topic_end is cheap (Kafka's offsets count records). */
    es_err (*topic_estimate)(es_log_t *log, const char *topic, int32_t partition, int64_t from,
                             int64_t *end, uint64_t *count, int *exact, es_error_t *err);
    /* Publishes consumed positions under consumer group group, for lag tools (Kafka: an
     * offset commit). NULL when there is nothing to publish (embedded). The read model's
     * checkpoints stay the truth; this is a copy for other tools. */
    es_err (*commit_positions)(es_log_t *log, const char *group, const es_topic_pos_t *pos,
                               size_t n, es_error_t *err);
    /* Produces events (versions, ids and times set) to their "<type>.events" topics, keyed by
     * aggregate id with the event headers, as a producer beside the command path does (the saga
     * coordinator's transitions), and waits for their acknowledgements (a stop set in *stop
     * cuts the wait short; stop may be NULL). ok[i] = 1 for each acknowledged. ES_OK when all
     * were or the stop came first, else the first failure. NULL on a backend with an event
     * store: es_store_publish appends there. */
    es_err (*produce)(es_log_t *log, es_event_t *const *evs, size_t n, const es_stop_t *stop,
                      uint8_t *ok, es_error_t *err);
    /* Version 2. The key of a record fetch delivered with key NULL and this log as its
     * key_log (es_raw_key); NULL when unknown. NULL: every record carries its key. */
    const char *(*record_key)(es_log_t *log, int64_t ref);
} es_reader_ops;

typedef struct es_backend es_backend;

struct es_log {
    const es_backend *backend; /* what opened it (backends.h): its name and what it can do */
    const es_store_ops *store; /* NULL: the backend keeps no event store of its own */
    const es_reader_ops *reader;
    void (*destroy)(es_log_t *log);
    const es_config_t *cfg;
    /* May be NULL. Set by the log's user (a runner: its es_runner_stop): the log's waits on a
     * server check it in short slices and give up with ES_ERETRY once it is requested. */
    const es_stop_t *stop;
};

/* Opens the log of the backend the config selects (backends.c, the factory). */
es_err es_log_open(const es_config_t *cfg, es_log_t **out, es_error_t *err);

/* How es_log_open_flags opens a log (0: read-write, creating the file and schema). */
enum {
    ES_LOG_READONLY = 1,     /* inspection: writes and creates nothing; the file must be an event
                                store; begin and the other writes are ES_ESTATE */
    ES_LOG_NO_END_CHECK = 2, /* with READONLY: a log ending below its head file opens anyway
                                (es_log_sqlite_end tells), for es_store_verify */
};
es_err es_log_open_flags(const es_config_t *cfg, unsigned flags, es_log_t **out, es_error_t *err);
/* The backends' own openers, for the factory (and verify.c, which opens the embedded file with
 * flags of its own). */
es_err es_log_sqlite_open_flags(const es_config_t *cfg, unsigned flags, es_log_t **out,
                                es_error_t *err);
/* Embedded logs only: the database handle, for es_store_verify's queries. */
sqlite3 *es_log_sqlite_db(es_log_t *log);
/* Embedded logs only: the end the head file <db>-head records (-1: no usable head file for this
 * log; *why says why when there is one that does not fit) and the log's end as it opened
 * (positions of last events). */
void es_log_sqlite_end(es_log_t *log, int64_t *recorded, int64_t *found, const char **why);
/* Embedded logs only: 1 when a read-only log was opened immutable and a writer has come since
 * (its reads may have missed that writer's commits, or seen a checkpoint half done). */
int es_log_sqlite_disturbed(es_log_t *log);
/* Rewrites <db>-head to the log's current end, accepting that events past it are gone; refuses
 * when the end cannot be read or a writer came while it was. */
es_err es_log_sqlite_accept_end(const es_config_t *cfg, int64_t *before, int64_t *after,
                                es_error_t *err);
/* The Kafka backend: bootstrap from the config key brokers, kafka.* passed to librdkafka; flags
 * are ignored (it only reads, and creates nothing). */
es_err es_log_kafka_open(const es_config_t *cfg, unsigned flags, es_log_t **out, es_error_t *err);

#endif
