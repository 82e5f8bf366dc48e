/*
 * es_processor_t: the owner side of the Kafka write path. A processor joins
 * consumer group "<service.name>.commands" on "<type>.commands" of every
 * aggregate type registered on its engine; the group gives each partition one
 * owner. Before it executes a partition's commands the owner restores that
 * partition into its local state store (config key state.db, an embedded log
 * that is only a cache: it is rebuilt from "<type>.events" when lost), then
 * per batch: decides on the local store, produces the events to the same
 * partition number of "<type>.events" and waits for their acknowledgement,
 * commits locally, writes snapshots to "<type>.snapshots", answers on each
 * command's reply_to topic and commits the consumer offsets.
 *
 * Events carry their command id, and restore remembers those ids, so a command
 * redelivered after a crash at any step is answered with its first result and
 * appends nothing. Restore applies the log-order rule: an event whose version
 * is not exactly the aggregate's version + 1 is skipped and counted. Restore
 * also imports the latest snapshot of each aggregate from the same partition
 * of "<type>.snapshots" when it matches an event it imports, so aggregates
 * load from their snapshot rather than fold their whole history.
 */
#ifndef ESKIT_PROCESSOR_H
#define ESKIT_PROCESSOR_H

#include <stddef.h>
#include <stdint.h>
#include <eskit/engine.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct es_processor es_processor_t;

/* Counters since es_processor_new, for monitoring and tests. events_skipped, stale and gaps
 * count every restore attempt, a failed one too: a partition restored again after a failure
 * counts its records again. */
typedef struct es_processor_stats {
    uint64_t commands;            /* command records handled (answered, or skipped as poison) */
    uint64_t restores;            /* partitions restored from Kafka */
    uint64_t events_imported;     /* events restore copied into the state store */
    uint64_t events_skipped;      /* events restore skipped: undecodable, or stale */
    uint64_t snapshots_imported;  /* snapshots restore copied into the state store */
    uint64_t snapshots_malformed; /* snapshot records restore skipped with a warning */
    uint64_t snapshots_unused;    /* well-formed, but superseded or matching no imported event */
    uint64_t stale; /* events restore skipped as not after their aggregate's last (log-order
                       rule; also in events_skipped) */
    uint64_t gaps;  /* gaps restore stopped at: a version more than one past the aggregate's
                       last; the partition is not restored (ES_EIO naming the missing versions) */
    uint64_t records_not_read; /* events partition offsets restore did not read: below the point
                                  where the newest snapshots and the idempotency window let it
                                  start (processor_restore.c) */
} es_processor_stats_t;

/* A processor for the aggregate types registered on engine (which must outlive it and keep
 * its registrations); cfg names the brokers and state.db. Caller frees with
 * es_processor_destroy. */
ES_API es_err es_processor_new(const es_config_t *cfg, es_engine_t *engine, es_processor_t **out,
                               es_error_t *err);
/* Closes the consumer (its partitions go to the other members), then frees everything. */
ES_API void es_processor_destroy(es_processor_t *p);

/* Waits up to timeout_ms for commands and executes what came; *handled (may be NULL) counts
 * them. A failed batch is not lost: it is read again by the next poll. */
ES_API es_err es_processor_poll(es_processor_t *p, int timeout_ms, size_t *handled,
                                es_error_t *err);
/* Polls until es_processor_stop, riding out transient failures (ES_EKAFKA, ES_EBUSY,
 * ES_ETIMEOUT, ES_ERETRY: a broker or the state store briefly away; and ES_ENOTFOUND: a topic
 * not created yet): each is logged once
 * through the config's log callback and retried after a backoff of 100 ms doubling to 5 s.
 * Returns ES_OK once stopped, or the first other failure. When it returns it clears the stop:
 * the processor may be run again. */
ES_API es_err es_processor_run(es_processor_t *p, es_error_t *err);
/* Makes es_processor_run return: at once when called before it; during it, after the poll
 * under way (at most 100 ms of waiting, and its batch executed, acknowledged and answered), or
 * within about 10 ms of its backoff. es_processor_poll does not look at the stop. Safe from
 * any thread and from a signal handler (a store to a lock-free atomic). */
ES_API void es_processor_stop(es_processor_t *p);
/* Copies the counters into *out; safe from any thread. */
ES_API void es_processor_stats(const es_processor_t *p, es_processor_stats_t *out);

#ifdef __cplusplus
}
#endif
#endif
