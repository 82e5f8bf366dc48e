/*
 * The command processor's insides, shared by its files: processor.c (handles, the consumer
 * group's rebalances, the run loop, stats), processor_restore.c (the local state store brought
 * up to its events partitions) and processor_batch.c (one batch of commands: execute, produce,
 * commit). See processor.c for how the pieces keep Kafka and the store in step.
 */
#ifndef ESKIT_PROCESSOR_INT_H
#define ESKIT_PROCESSOR_INT_H

#include "engine_int.h"
#include "kafka/wire.h"
#include "runloop.h"
#include "eskit/v1/command.pb-c.h"
#include "eskit/v1/reply.pb-c.h"
#include "eskit/v1/snapshot.pb-c.h"
#include "logorder.h"
#include "metrics_int.h"
#include "readpipe.h"
#include "registry.h"
#include "store.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_MAX 500
#define WAIT_MS 10               /* fetch.wait.max.ms: commands are waited for */
#define REQUEST_TIMEOUT_MS 10000 /* metadata, watermarks, restore reads without progress */
#define FLUSH_TIMEOUT_MS 10000   /* events' delivery before the local commit */
#define SIDE_FLUSH_MS 5000       /* snapshots and replies: best effort */
#define RESTORE_CHUNK 1000       /* imported events per local transaction */
#define HORIZON_TIMEOUT_MS 3000  /* asking the group coordinator for a restore horizon */
#define TOPIC_MAX (ES_MAX_TYPE_LEN + 16)

typedef struct agg_type {
    const es_aggregate_def *def;
    void *opaque;
    /* "<type>.events", "<type>.snapshots": named once, not per record */
    char events_topic[TOPIC_MAX], snapshots_topic[TOPIC_MAX];
} agg_type;

/* The restore horizon of one owned partition (processor_restore.c): a restore may start at
 * it, because every aggregate with an event below it has a snapshot on Kafka covering its last
 * event below it. */
typedef struct es_horizon es_horizon;

/* A commands partition assigned to this processor. */
typedef struct owned {
    size_t type;
    int32_t partition;
    int restored;
    es_horizon *hz; /* NULL until a restore learnt it (then kept across restores of the batch's
                       failures, freed when the partition goes) */
} owned;

/* One produced event awaiting its delivery report. */
typedef struct produced {
    size_t type;
    int32_t partition;
    int64_t offset;
    int done;
    rd_kafka_resp_err_t err;
} produced;

/* Where the batch's events went in one events partition. */
typedef struct span {
    size_t type;
    int32_t partition;
    int64_t first, last, count;
} span;

/* One record of the batch. */
typedef struct slot {
    rd_kafka_message_t *m;
    size_t type;
    Eskit__V1__CommandEnvelope *env;
    ProtobufCMessage *msg;
    es_kv_t *md; /* the envelope's metadata, its traceparent the execute span */
    size_t n_md;
    es_trace_t trace; /* the execute span: the envelope's, or a new trace when it had none */
    char tp[ES_TRACEPARENT_LEN + 1];
    int32_t reply_partition; /* RD_KAFKA_PARTITION_UA when the header is missing */
    long cmd;                /* index into the batch's commands; -1 when not executable */
    size_t last_prod;        /* p->prod index of the command's last event, when it appended */
    es_snapshot_t *snap;     /* the snapshot the batch wrote at the command's version, or NULL */
    es_err fail;             /* why not executable */
    char reason[512];
    uint8_t *reply; /* the packed CommandReply, made while the events are in flight */
    size_t reply_len;
    const char *reply_to;     /* where it goes: the envelope's reply_to, or fallback */
    char fallback[TOPIC_MAX]; /* "<type>.replies", for a reply_to that is not a replies topic */
} slot;

struct es_processor {
    const es_config_t *cfg; /* own_cfg; the Kafka handles log to it */
    es_config_t *own_cfg, *local_cfg;
    es_engine_t *local;
    agg_type *types;
    size_t n_types;
    rd_kafka_t *consumer, *producer, *side, *reader;
    int transactional;
    owned *owned;
    size_t n_owned, cap_owned;
    rd_kafka_message_t **batch;
    size_t n_batch;
    int in_batch;
    int side_failed; /* a reply or snapshot of the batch being settled was not delivered (dr_cb) */
    /* Aggregates whose snapshot the unsettled batch produced: covered once it is settled. */
    struct hz_cover {
        size_t type;
        int32_t partition;
        char *id;
    } * cover;
    size_t n_cover, cap_cover;
    rd_kafka_queue_t *hz_queue; /* results of restore horizon commits (processor_restore.c) */
    produced *prod;
    size_t n_prod, cap_prod;
    uint32_t prod_gen; /* tags each batch's events: a late report of an older batch is not ours */
    int32_t *cmd_part; /* commands partition of each executable command of the batch */
    /* The consumer offsets of the last batch, committed once its replies and snapshots are
     * acknowledged (es_proc_settle); NULL when none wait. */
    rd_kafka_topic_partition_list_t *unsettled;
    int64_t unsettled_ms; /* when they began to wait */
    es_stop_t stop;       /* es_processor_stop: es_processor_run returns after the poll under way */
    es_registry_t *registry; /* NULL without schema.registry.url */
    uint32_t *envelope_ids; /* by type: the envelope's schema id on its events topic, when framed */
    struct {
        atomic_uint_fast64_t commands, restores, events_imported, events_skipped,
            snapshots_imported, snapshots_malformed, snapshots_unused, stale, gaps,
            records_not_read;
    } stats;
    /* What the scrape thread reads (processor_metrics.c): copies the polling thread keeps. */
    struct {
        es_mx_source *src;
        es_mx_counter joined;             /* an assignment came: the processor is in its group */
        es_mx_counter owned;              /* commands partitions owned */
        es_mx_counter restoring;          /* of those, not restored yet */
        es_mx_counter restore_started_ns; /* es_mono_ns of the restore under way; 0: none */
        es_mx_counter produce_errors, replies;
        es_mx_hist restore;
    } mx;
};

static inline void bump(atomic_uint_fast64_t *counter, uint64_t n) {
    atomic_fetch_add_explicit(counter, n, memory_order_relaxed);
}

static inline const char *type_name(const es_processor_t *p, size_t t) {
    return p->types[t].def->type;
}

/* processor.c */
void es_proc_log_error(es_processor_t *p, const es_error_t *e, const char *what);
/* The type whose "<type>.<suffix>" topic this is; n_types when none. */
size_t es_proc_type_of_topic(const es_processor_t *p, const char *topic, const char *suffix);
owned *es_proc_find_owned(es_processor_t *p, size_t type, int32_t partition);
/* Notes a commands partition as owned (not yet restored). */
void es_proc_add_owned(es_processor_t *p, const char *topic, int32_t partition);
void es_proc_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t e,
                          rd_kafka_topic_partition_list_t *parts, void *opaque);

/* processor_metrics.c */
es_err es_proc_mx_open(es_processor_t *p, es_error_t *err);
void es_proc_mx_close(es_processor_t *p);
/* After the owned partitions or their restored flags changed. */
void es_proc_mx_owned(es_processor_t *p);

/* processor_restore.c */
/* The es_meta key holding the next events offset the store reflects for a partition. */
void es_proc_offset_key(char *key, size_t cap, const char *type, int32_t partition);
es_err es_proc_save_next(es_log_t *log, const char *type, int32_t partition, int64_t next,
                         es_error_t *err);
/* Brings the store up to the end of o's events partition. */
es_err es_proc_restore(es_processor_t *p, owned *o, es_error_t *err);
void es_horizon_free(es_horizon *hz);
/* After a batch's local commit, its snapshots produced: notes its aggregates as not covered
 * from their first event of the batch on, and keeps those with a snapshot for
 * es_proc_cover_snapshots. */
void es_proc_note_snapshots(es_processor_t *p, const slot *slots, size_t n_slots,
                            const es_result_t *results);
/* Once the batch's replies and snapshots are settled (delivered: every one was acknowledged):
 * the aggregates its snapshots cover leave the horizons, which are committed when they moved.
 * Not delivered: they stay not covered (a restore reads more, never less). */
void es_proc_cover_snapshots(es_processor_t *p, int delivered);
/* Commits the horizons that moved and are due (between batches too: the last batch's). */
void es_proc_commit_horizons(es_processor_t *p);

/* processor_batch.c */
void es_proc_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);
void es_proc_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t e, rd_kafka_topic_partition_list_t *offs,
                       void *opaque);
/* Restores every owned partition not restored yet. */
es_err es_proc_ensure_restored(es_processor_t *p, es_error_t *err);
void es_proc_drop_batch(es_processor_t *p);
/* The last batch's replies and snapshots acknowledged (waiting up to wait_ms for them), then its
 * consumer offsets committed. wait_ms 0: only if they are acknowledged already. */
void es_proc_settle(es_processor_t *p, int wait_ms);
/* Reads, executes and commits one batch of commands; *handled counts them. */
es_err es_proc_process_batch(es_processor_t *p, size_t *handled, es_error_t *err);

#endif
