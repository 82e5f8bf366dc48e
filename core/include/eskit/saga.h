/*
 * Sagas: multi-step processes across aggregates, with compensations.
 *
 * A saga is declared as data (es_saga_def): the event that starts an instance,
 * the steps in order (the command each sends, the events that complete or fail
 * it, its timeout, the command that undoes it) and the command that ends an
 * aborted instance. The coordinator (es_saga_t) consumes the
 * topics the saga listens to; per batch, one SQLite transaction in the saga
 * database (config key saga.db) updates instances, stores the checkpoints and
 * writes the commands to send to an outbox. A relay then executes the outbox
 * through the engine (embedded: es_execute; Kafka: produced to
 * "<type>.commands" and answered by the partition owner) under deterministic
 * command ids "<saga>/<instance>/<step>.<target>/<do|undo|abort>", so a
 * redelivered command or a restart never doubles an effect.
 *
 * Lifecycle of an instance:
 *   running      step k's commands are sent; the step completes when every
 *                command's target emitted one of completed_by (caused by that
 *                command), or, with completed_by NULL, when every command was
 *                accepted. It fails on one of failed_by or a rejection, and
 *                times out when its deadline (durable: stored) passes.
 *   compensating a failure or timeout at step k undoes steps k, k-1, .., 0
 *                (step k too: a command that timed out may still have taken
 *                effect, so compensations must accept "nothing to undo"),
 *                then sends the abort command, if any.
 *   completed    every step completed.            (terminal)
 *   aborted      compensated, abort accepted.      (terminal)
 *   failed       a compensation or the abort was rejected: an operator has
 *                to look.                          (terminal)
 * Every transition is appended to "<saga>.saga.events" (aggregate type
 * "<saga>.saga", id = instance id, payload eskit.v1.SagaTransition), which is
 * what es_saga_history and `esctl sagas show` read.
 *
 * Retention: an instance that ended more than saga.retention.ms ago (default 7
 * days; 0 keeps them forever) is deleted from saga.db with the commands it sent,
 * once its transitions are in the log; es_saga_history still reads them, and
 * es_saga_stats keeps counting it. A start event seen again after that (a
 * checkpoint moved back by hand) starts the instance again: its commands carry
 * the same ids, so the aggregates answer them with their first results.
 *
 * Events are matched to instances by causation: an event's command_id is the
 * id of the saga command that caused it. Duplicates, events of steps already
 * ended and events no instance waits for are recorded and otherwise ignored,
 * so duplicate or out-of-order delivery never doubles a step.
 */
#ifndef ESKIT_SAGA_H
#define ESKIT_SAGA_H

#include <stdbool.h>
#include <protobuf-c/protobuf-c.h>
#include <eskit/config.h>
#include <eskit/engine.h>
#include <eskit/event.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The definition layout of these headers; a definition of this ABI or an older one is taken
 * (docs/abi.md). */
#define ES_SAGA_ABI 2
#define ES_SAGA_MAX_TARGETS 64 /* commands one step may send */

/* What a step's callbacks see of an instance (valid during the call only). */
typedef struct es_saga_view es_saga_view_t;
/* The instance id. */
ES_API const char *es_saga_view_id(const es_saga_view_t *v);
/* The start event's payload, decoded with the def's start_event descriptor. */
ES_API const ProtobufCMessage *es_saga_view_start(const es_saga_view_t *v);
/* The start event (its ids, correlation id, metadata; payload as bytes). */
ES_API const es_event_t *es_saga_view_start_event(const es_saga_view_t *v);
/* The definition's opaque (ABI 2; NULL for an older definition): the service state a step's
 * callbacks need, without globals. */
ES_API void *es_saga_view_opaque(const es_saga_view_t *v);
/* Why the instance is compensating or aborting ("" while running). */
ES_API const char *es_saga_view_reason(const es_saga_view_t *v);

/* Where a step's callbacks put the commands they send. */
typedef struct es_saga_out es_saga_out_t;
/* Sends command (packed now; the caller keeps ownership) to the aggregate id of the step's
 * aggregate type. Its descriptor must be the one the step declares. */
ES_API es_err es_saga_send(es_saga_out_t *out, const char *aggregate_id,
                           const ProtobufCMessage *command);

typedef es_err es_saga_send_cb(const es_saga_view_t *v, es_saga_out_t *out, es_error_t *err);
/* Undoes the step on one target: aggregate_id is where the step's command went. */
typedef es_err es_saga_undo_cb(const es_saga_view_t *v, const char *aggregate_id,
                               es_saga_out_t *out, es_error_t *err);

typedef struct es_saga_step {
    const char *name;                          /* [a-z0-9_-], 1..64 bytes */
    const char *aggregate_type;                /* where the commands go, e.g. "inventory.item" */
    const ProtobufCMessageDescriptor *command; /* the command's message type */
    /* Sends 1..ES_SAGA_MAX_TARGETS commands with es_saga_send (none: the step completes). */
    es_saga_send_cb *send;
    /* Events (of the target aggregate, caused by the step's command) that complete or fail a
     * target; NULL-terminated. completed_by NULL: an accepted command completes its target. */
    const ProtobufCMessageDescriptor *const *completed_by;
    const ProtobufCMessageDescriptor *const *failed_by; /* may be NULL */
    int64_t timeout_ms;                                 /* > 0 */
    /* The command that undoes the step on one target (same aggregate type); NULL when the
     * step has nothing to undo. An accepted compensation counts as done. */
    const ProtobufCMessageDescriptor *compensation;
    es_saga_undo_cb *compensate;
} es_saga_step_t;

typedef struct es_saga_def {
    int abi_version; /* ES_SAGA_ABI */
    /* "<domain>.<name>" lowercase, e.g. "orders.fulfilment"; transitions go to
     * "<name>.saga.events". */
    const char *name;
    const char *start_aggregate;                   /* e.g. "orders.order" */
    const ProtobufCMessageDescriptor *start_event; /* e.g. orders.v1.OrderPlaced */
    /* Optional: the instance id for a start event (NULL: the event's aggregate id). */
    es_err (*instance_id)(const es_event_t *ev, const ProtobufCMessage *msg, char *out, size_t cap,
                          es_error_t *err);
    const es_saga_step_t *steps; /* in order */
    size_t n_steps;              /* 1..32 */
    /* Optional: the command that ends an aborted instance (e.g. CancelOrder), sent after the
     * compensations. Only aggregate_type, command and send are used. */
    const es_saga_step_t *on_abort;
    /* ABI 2 */
    void *opaque; /* given to the callbacks through es_saga_view_opaque */
} es_saga_def;

/* Checks a definition (ABI, names, steps, descriptors, timeouts); names what is wrong. */
ES_API es_err es_saga_check(const es_saga_def *def, es_error_t *err);

/* ---- coordinator ------------------------------------------------------------------------- */

typedef struct es_saga es_saga_t;

typedef struct es_saga_stats {
    /* Instances in the saga database (all time, every coordinator that used it; pruned ones
     * included): */
    uint64_t started, completed, aborted, failed;
    uint64_t pruned; /* ended instances deleted after saga.retention.ms (all time) */
    /* This coordinator's own work since es_saga_new: */
    uint64_t commands_sent; /* outbox rows delivered (including redeliveries after a restart) */
    uint64_t timeouts;      /* steps whose deadline passed */
    uint64_t ignored;       /* events received that no waiting step needed */
} es_saga_stats_t;

/* A coordinator for def on the backend cfg names; commands are executed through engine (not
 * owned; embedded: the engine of the same store, Kafka: an engine with backend kafka). The saga
 * database is saga.db. One coordinator per saga and database at a time (a lock file). */
ES_API es_err es_saga_new(const es_config_t *cfg, const es_saga_def *def, es_engine_t *engine,
                          es_saga_t **out, es_error_t *err);
/* Stops and frees the coordinator (NULL is fine); the saga database keeps every instance. */
ES_API void es_saga_destroy(es_saga_t *c);

/* One round: delivers the outbox, consumes a batch of events (waiting up to timeout_ms for
 * one), fires the deadlines that passed once it has caught up with the log (a step never
 * times out because the coordinator was away while its event arrived), publishes
 * transitions and, at most once a minute (or once a retention period, when shorter), prunes
 * ended instances past saga.retention.ms.
 * *progress (may be NULL) is how many events, deliveries, timeouts and published transitions
 * it handled: 0 with es_saga_active 0 means idle. */
ES_API es_err es_saga_poll(es_saga_t *c, int timeout_ms, size_t *progress, es_error_t *err);
/* Polls until es_saga_stop or a lasting error; transient failures (ES_EKAFKA, ES_EBUSY,
 * ES_ETIMEOUT, ES_ERETRY) are each logged once through the config's log callback and retried
 * after a backoff of 100 ms doubling to 5 s. Returns ES_OK once stopped, or the first other
 * failure. When it returns it clears the stop: the coordinator may be run or polled again. */
ES_API es_err es_saga_run(es_saga_t *c, es_error_t *err);
/* Stops the coordinator: no event is applied after the one running, the round in progress
 * gives up waiting for command replies and (Kafka) waits at most a second more for the
 * acknowledgements of transitions under way; what was not confirmed is sent again later under
 * the same ids and versions. es_saga_run then returns and clears the stop. For a caller that
 * only polls, the stop is final: the poll in progress returns, and every later es_saga_poll
 * returns at once doing nothing (destroy the coordinator). While the stop is set, the process
 * ending is not counted as a crash of the event applied. Safe from any thread and from a
 * signal handler (stores to lock-free atomics). */
ES_API void es_saga_stop(es_saga_t *c);
/* Fills out with the counters above (instances from saga.db, the rest this coordinator's own).
 * The instances by state are kept in memory as the coordinator moves them, so a call costs the
 * same however many instances saga.db has kept. Like every call here but es_saga_stop, call it
 * from the thread that polls or runs the coordinator (between polls), not beside it. */
ES_API void es_saga_stats(const es_saga_t *c, es_saga_stats_t *out);
/* Applies ev as if consumed again, in a transaction of its own: a redelivery. Events are
 * matched by causation, so a duplicate, a stale or an out-of-order event changes nothing a
 * step already decided (tests and repair tools use this). */
ES_API es_err es_saga_redeliver(es_saga_t *c, const es_event_t *ev, es_error_t *err);
/* Instances not yet in a terminal state (from the same counts, on the same thread as
 * es_saga_stats). 0 also before the first start event is consumed: wait for the started count
 * of es_saga_stats too. */
ES_API es_err es_saga_active(es_saga_t *c, uint64_t *n, es_error_t *err);

/* ---- queries (esctl sagas) ---------------------------------------------------------------- */

typedef struct es_saga_info {
    char saga[ES_MAX_TYPE_LEN + 1];
    char id[ES_MAX_ID_LEN + 1];
    char state[16]; /* running, compensating, completed, aborted, failed */
    char step[65];  /* the current step's name ("" when terminal) */
    int step_index;
    int64_t started_us, updated_us;
    int64_t deadline_us; /* 0 when nothing is awaited */
    char reason[512];
} es_saga_info_t;

/* Instances in saga.db, newest first; saga and state (may be NULL) filter. Caller frees *out with
 * es_free. */
ES_API es_err es_saga_list(const es_config_t *cfg, const char *saga, const char *state,
                           es_saga_info_t **out, size_t *n, es_error_t *err);
/* The instances with this id in saga.db: of saga, or of every saga when saga is NULL (an id
 * may be used by several sagas). None is not an error (*n = 0). Caller frees *out with es_free. */
ES_API es_err es_saga_find(const es_config_t *cfg, const char *saga, const char *id,
                           es_saga_info_t **out, size_t *n, es_error_t *err);

typedef struct es_saga_record {
    uint64_t seq; /* the transition's version in "<saga>.saga.events" */
    int64_t at_us;
    char kind[24];
    char state[16];
    char step[65];
    int step_index;
    char command_id[ES_MAX_ID_LEN + 1];
    char command_type[256];
    char aggregate_type[ES_MAX_TYPE_LEN + 1];
    char aggregate_id[ES_MAX_ID_LEN + 1];
    char event_type[256];
    char event_id[40];
    char reason[512];
    int64_t deadline_us;
} es_saga_record_t;

/* An instance's transitions from "<saga>.saga.events" on the backend cfg names, in order.
 * ES_ENOTFOUND when there are none. Caller frees *out with es_free. */
ES_API es_err es_saga_history(const es_config_t *cfg, const char *saga, const char *id,
                              es_saga_record_t **out, size_t *n, es_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
