/*
 * es_runner_t: keeps one projector's read model up to date with the log.
 *
 * It reads batches of records from the projector's topics, applies them in
 * one transaction of the read-model database (config key readmodel.db) and
 * stores each partition's checkpoint in that same transaction, so a crash at
 * any point replays at most the uncommitted batch: the read model always
 * equals a from-scratch rebuild of the log up to its checkpoints.
 *
 * Each event's writes are all-or-nothing: a batch is first applied without
 * savepoints (they cost more than the apply itself), and when an event fails
 * the batch is rolled back and redone with a savepoint per event. A failing
 * event is retried (ES_ERETRY, with backoff), then parked in the DLQ (the
 * es_dlq table and a <topic>.dlq record) and the runner goes on; with
 * projector.on.error=stop it halts. apply may thus run more than once for an
 * event whose effects were rolled back: keep module state in the database.
 * Undecodable records and unknown event types take the same path
 * (projector.on.unknown=ignore skips unknown types). Before each apply the
 * runner notes the position in a file that survives the process; an event
 * the process died on projector.crash.restarts times in a row is parked
 * without being applied again, so a crashing module cannot crash-loop. A
 * process ended by a signal after es_runner_stop (a second Ctrl-C, a
 * supervisor's SIGKILL after its SIGTERM) did not crash: that is not counted.
 * A signal whose default action ends the process is a crash to the guard, so
 * a service catches SIGTERM and SIGINT and calls es_runner_stop.
 *
 * A module stuck in apply cannot be stopped from outside: the optional watchdog
 * projector.apply.timeout.ms ends the process (a critical log line, then
 * SIGKILL) when one apply runs longer, and the guard counts that death. The
 * kill does not wait for the log callback: one that blocks (a lock the stuck
 * thread holds, a full stderr pipe) holds it back by a second at most.
 *
 * Replays (es_replay) and runners of one projector take turns on a lock, so
 * they never write the same read model at once.
 */
#ifndef ESKIT_RUNNER_H
#define ESKIT_RUNNER_H

#include <stdbool.h>
#include <eskit/config.h>
#include <eskit/projector.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct es_runner es_runner_t;

/* One parked event. */
typedef struct es_dlq_entry {
    int64_t id;
    char projector[65];
    char topic[ES_MAX_TYPE_LEN + 16];
    int32_t partition;
    int64_t offset;
    char key[ES_MAX_ID_LEN + 1];
    char event_type[256]; /* empty when the record could not be decoded */
    int code;             /* es_err of the last failure */
    char error[512];
    int attempts;
    int64_t parked_at_us;
    int64_t redriven_at_us; /* 0 while parked */
    uint8_t *value;         /* the record's bytes (es_dlq_get only; freed by es_dlq_entry_free) */
    size_t value_len;
} es_dlq_entry_t;

/* Called on the runner's thread each time an event is parked (value is NULL). */
typedef void es_park_cb(const es_dlq_entry_t *entry, void *opaque);

typedef struct es_runner_stats {
    uint64_t applied; /* events applied (ES_OK) */
    uint64_t parked;  /* events put in the DLQ */
    uint64_t ignored; /* unknown types skipped (projector.on.unknown=ignore) */
    uint64_t retries; /* transient failures retried */
    uint64_t batches; /* transactions committed */
    uint64_t stale;   /* skipped by the log-order rule: not after the aggregate's last event */
    uint64_t gaps;    /* applied although versions before them never arrived */
} es_runner_stats_t;

/* Opens the read model for def (creating its tables, or rebuilding them when def's schema
 * version is newer than the one stored). def must outlive the runner.
 * Caller frees with es_runner_destroy. */
ES_API es_err es_runner_new(const es_config_t *cfg, const es_projector_def *def, es_runner_t **out,
                            es_error_t *err);
/* Frees the runner: commits nothing more, closes the read model (NULL is fine). */
ES_API void es_runner_destroy(es_runner_t *r);

/* Applies what the log holds past the checkpoints: waits up to timeout_ms for the first
 * record, lingers projector.linger.ms for more, commits one batch of up to
 * projector.batch.size events. *applied (may be NULL) counts the records consumed.
 * ES_ESTATE when stopped by policy stop (the error names the event). */
ES_API es_err es_runner_poll(es_runner_t *r, int timeout_ms, size_t *applied, es_error_t *err);

/* Waits until the read model holds what the log held when the call began: takes the end of
 * every partition the runner reads (embedded: the store's end offset; Kafka: each partition's
 * high watermark), then polls, applying and parking by the runner's policy, until every
 * checkpoint has passed its end (events parked in the DLQ count as passed; events appended
 * after the call began may or may not be applied). An empty poll is no proof of the end (a
 * Kafka fetch may be slow): only the checkpoints are. A runner that has not polled yet is fine.
 * Transient failures (es_err_is_transient) are retried until the deadline. Returns ES_OK when
 * caught up (at once when nothing is due); ES_ETIMEOUT when timeout_ms passed first, the
 * message naming a partition behind, its checkpoint, its end and the records left (and the
 * last transient failure, if one held it back); ES_ESTATE when es_runner_stop ended it first
 * (what was applied is committed; the stop stays set, so for a caller that only polls it is
 * final, and no retry helps); the first lasting failure of a poll otherwise (ES_ESTATE for
 * projector.on.error=stop). timeout_ms 0 only checks, and the call may overrun timeout_ms by
 * one batch; on Kafka the first reading of the ends waits for the brokers (up to 10 s)
 * whatever timeout_ms says. ES_EINVAL for a NULL runner or a negative timeout_ms. */
ES_API es_err es_runner_catch_up(es_runner_t *r, int timeout_ms, es_error_t *err);

/* Polls until es_runner_stop is called or a lasting error stops it; transient failures
 * (ES_EKAFKA, ES_EBUSY, ES_ETIMEOUT, ES_ERETRY: a broker down, a busy database) are each logged
 * once through the config's log callback and retried after a backoff of 100 ms doubling to
 * 5 s. Returns ES_OK once stopped, or the first other failure. When it returns it clears the
 * stop: the runner may be run or polled again. */
ES_API es_err es_runner_run(es_runner_t *r, es_error_t *err);
/* Stops at the next event: the apply running ends, no other starts, and the batch commits
 * what was applied with its checkpoints. es_runner_run then returns and clears the stop. For
 * a caller that only polls, the stop is final: the poll in progress returns, and every later
 * es_runner_poll returns at once applying nothing (destroy the runner). While the stop is
 * set, the process ending is not counted as a crash of the event applied. Safe from any
 * thread and from a signal handler (stores to lock-free atomics). */
ES_API void es_runner_stop(es_runner_t *r);

/* Sets a callback for parked events (NULL to remove). */
ES_API void es_runner_set_park_cb(es_runner_t *r, es_park_cb *cb, void *opaque);

/* Counters since es_runner_new. */
ES_API void es_runner_stats(const es_runner_t *r, es_runner_stats_t *out);

/* Replay progress: done of total records so far (total is the log's end when the replay
 * started; catch-up may exceed it). Called on the replaying thread; return non-zero to
 * cancel the replay (the live read model is left untouched). */
typedef int es_replay_progress_cb(uint64_t done, uint64_t total, void *opaque);

/* Called on the replaying thread with the runner that rebuilds the model once it is open, and
 * with NULL before it is destroyed: es_runner_stop on it (from a signal handler too) cancels
 * the replay at the next event. */
typedef void es_replay_runner_cb(es_runner_t *runner, void *opaque);

typedef struct es_replay_hooks {
    es_replay_progress_cb *progress; /* may be NULL */
    es_park_cb *parked;              /* may be NULL */
    void *opaque;
    es_replay_runner_cb *runner; /* may be NULL */
} es_replay_hooks_t;

typedef struct es_replay_result {
    uint64_t events;  /* records consumed, including catch-up */
    uint64_t parked;  /* events parked in the DLQ during the rebuild */
    uint64_t ignored; /* unknown types skipped */
    double seconds;   /* wall time, including the swap */
} es_replay_result_t;

/* Rebuilds def's read model from the start of the log into a shadow database with bulk
 * settings, catches up to the log's end, then swaps it into the live read model in one
 * transaction while readers keep querying the old one. A crash, error or cancel before the
 * swap leaves the live model untouched; the shadow and its crash guard are removed when the
 * replay returns (the guard stays while it counts deaths of an event not yet passed).
 * res may be NULL. */
ES_API es_err es_replay(const es_config_t *cfg, const es_projector_def *def,
                        const es_replay_hooks_t *hooks, es_replay_result_t *res, es_error_t *err);

/* One line of es_lag: a projector's position in one partition of one topic. */
typedef struct es_lag_row {
    char projector[65];
    char topic[ES_MAX_TYPE_LEN + 16];
    int32_t partition;
    int64_t checkpoint; /* next offset the projector reads; 0 before its first batch */
    int64_t end;        /* the partition's end offset */
    uint64_t lag;       /* records of the topic between checkpoint and end */
} es_lag_row_t;

/* Every projector of the read model, per topic and partition. Caller frees *rows with es_free. */
ES_API es_err es_lag(const es_config_t *cfg, es_lag_row_t **rows, size_t *n, es_error_t *err);

/* A row of es_lag_estimate: the row, and whether its lag is an estimate. */
typedef struct es_lag_estimate {
    es_lag_row_t row;
    int estimated; /* row.lag is an estimate from positions, not a count */
} es_lag_estimate_t;

/* es_lag without counting a long backlog: on the embedded backend, where more than 65,536
 * positions lie past a checkpoint, the lag is estimated from positions (the span itself when
 * the log holds no other aggregate type, else a sample of 1,024 positions: a standard error
 * under 1.6% of the span) in a few milliseconds instead of reading every row (0.2-0.5 s per
 * million). Shorter backlogs and Kafka's offsets are counted exactly. Caller frees *rows with
 * es_free. */
ES_API es_err es_lag_estimate(const es_config_t *cfg, es_lag_estimate_t **rows, size_t *n,
                              es_error_t *err);

/* Parked events of projector (NULL = all), oldest first; with all=false only those still
 * parked. Caller frees *out with es_free (value is NULL in lists). */
ES_API es_err es_dlq_list(const es_config_t *cfg, const char *projector, bool all,
                          es_dlq_entry_t **out, size_t *n, es_error_t *err);
/* One entry with its bytes. Caller frees with es_dlq_entry_free. */
ES_API es_err es_dlq_get(const es_config_t *cfg, int64_t id, es_dlq_entry_t **out, es_error_t *err);
/* Frees an entry es_dlq_get returned (NULL is fine). */
ES_API void es_dlq_entry_free(es_dlq_entry_t *e);
/* Applies parked events of def again (ids, or every parked one when n_ids is 0), each in its
 * own transaction that also marks it redriven, so each is applied at most once. Counts those
 * applied and those that failed again (they stay parked, error updated). */
ES_API es_err es_dlq_redrive(const es_config_t *cfg, const es_projector_def *def,
                             const int64_t *ids, size_t n_ids, size_t *applied, size_t *failed,
                             es_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
