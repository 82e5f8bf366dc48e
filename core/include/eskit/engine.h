/*
 * es_engine_t: the command side. Aggregates are registered as deciders over
 * protobuf messages (initial state, evolve, decide); es_execute loads an
 * aggregate (newest snapshot + later events), decides, appends the events
 * atomically with an optimistic version check, snapshots when due and
 * returns the outcome. Executing the same command id again appends nothing
 * and returns the first outcome; the id with another aggregate, command type
 * or payload is ES_EIDREUSED (docs/idempotency.md).
 *
 * State messages are owned by the engine and mutated in place by evolve: a
 * string or bytes field must be set with es_pb_set_string / es_pb_set_bytes
 * (or hold memory from malloc), because the engine frees states with
 * protobuf_c_message_free_unpacked. The event evolve receives is the engine's
 * and goes after evolve: a state that keeps a pointer into it (a string, bytes,
 * sub-message or array of the event) fails the command with ES_ESTATE naming
 * the field, the first time it happens, and nothing is appended.
 */
#ifndef ESKIT_ENGINE_H
#define ESKIT_ENGINE_H

#include <stdbool.h>
#include <protobuf-c/protobuf-c.h>
#include <eskit/store.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct es_engine es_engine_t;
typedef struct es_decision es_decision_t;

#define ES_AGGREGATE_ABI 1

/* An aggregate type. Callbacks run on the thread calling es_execute, with the
 * opaque given to es_engine_register. */
typedef struct es_aggregate_def {
    uint32_t abi_version; /* ES_AGGREGATE_ABI */
    const char *type;     /* "<domain>.<aggregate>", e.g. "orders.order" */
    const ProtobufCMessageDescriptor *state;
    const ProtobufCMessageDescriptor *const *events;   /* NULL-terminated */
    const ProtobufCMessageDescriptor *const *commands; /* NULL-terminated */
    /* Optional: adjusts a state the engine initialised to the message defaults. */
    void (*initial_state)(ProtobufCMessage *state, void *opaque);
    /* Folds one event into state. An error stops the load with that error. */
    es_err (*evolve)(ProtobufCMessage *state, const ProtobufCMessage *event, void *opaque,
                     es_error_t *err);
    /* Emits events with es_emit, or returns es_reject(d, ...). */
    es_err (*decide)(const ProtobufCMessage *state, const ProtobufCMessage *command,
                     es_decision_t *d, void *opaque);
} es_aggregate_def;

typedef struct es_command {
    const char *aggregate_type;
    const char *aggregate_id;
    const ProtobufCMessage *message;
    const char *command_id;     /* NULL: a fresh UUIDv7 */
    const char *correlation_id; /* NULL: the command id */
    es_expect expect;           /* zero value: ES_EXPECT_ANY */
    uint64_t expected_version;  /* with ES_EXPECT_EXACT */
    int64_t deadline_us;        /* absolute, es_now_us() clock; 0: none */
    const es_kv_t *metadata;    /* copied into every event's metadata */
    size_t n_metadata;
} es_command_t;

/* Mirrors eskit.v1.Outcome. */
typedef enum es_outcome {
    ES_OUTCOME_ACCEPTED = 1,
    ES_OUTCOME_REJECTED = 2,
    ES_OUTCOME_CONFLICT = 3,
    ES_OUTCOME_ERROR = 4,
} es_outcome;

typedef struct es_result {
    es_outcome outcome;
    es_err code; /* what es_execute returns for this command */
    char *command_id;
    uint64_t version;       /* the aggregate's version after the command */
    uint64_t first_version; /* versions of the appended events; 0 when none */
    uint64_t last_version;
    bool duplicate;      /* answered from an earlier execution of the same id */
    char *reason;        /* why, when not accepted */
    es_event_t **events; /* the appended events (also for a duplicate) */
    size_t n_events;
} es_result_t;

/* An engine on the store the config names. Caller frees with es_engine_destroy. */
es_err es_engine_new(const es_config_t *cfg, es_engine_t **out, es_error_t *err);
/* es_engine_new with a mode. ES_OPEN_READONLY: an engine for reading states (tools such as
 * esctl state) over a read-only store, which creates nothing, sends nothing to Kafka and
 * executes no command (es_execute is ES_ESTATE). */
ES_API es_err es_engine_open(const es_config_t *cfg, es_open_mode mode, es_engine_t **out,
                             es_error_t *err);
void es_engine_destroy(es_engine_t *engine);
/* The engine's store, for reads (borrowed). */
es_store_t *es_engine_store(es_engine_t *engine);

/* Registers an aggregate type; def must outlive the engine. Not thread-safe:
 * register everything before executing. */
es_err es_engine_register(es_engine_t *engine, const es_aggregate_def *def, void *opaque,
                          es_error_t *err);

/* Executes one command. Returns ES_OK (accepted), ES_EREJECTED, ES_ECONFLICT, ES_EIDREUSED or
 * an error; res (may be NULL) says the same and more. Caller frees res with es_result_clear.
 * Any number of threads may execute on one engine at once. Embedded, their transactions
 * take turns on the store; on Kafka their commands are in flight together, each call
 * waiting for its own replies. */
es_err es_execute(es_engine_t *engine, const es_command_t *cmd, es_result_t *res, es_error_t *err);

/* Executes n commands in order; each results[i] holds its command's outcome, and a rejected
 * command does not stop the others: their events are appended (this is a batch per command,
 * not all-or-nothing; a transfer between two accounts wants a saga). The call fails only when
 * the batch as a whole did.
 * Embedded: one transaction, so the accepted commands' events are durable together or not at
 * all, and a failed call appended nothing.
 * Kafka: each command goes to the processor owning its aggregate's partition, so the batch is
 * atomic per command only: a failed call may leave some commands executed (their results say
 * which), and the events in results carry their partition but offset -1 (a reply does not
 * carry offsets). */
es_err es_execute_batch(es_engine_t *engine, const es_command_t *cmds, size_t n,
                        es_result_t *results, es_error_t *err);

void es_result_clear(es_result_t *res);

/* The state of aggregate_type/aggregate_id (a registered type) as a command would see it now:
 * the newest usable snapshot, then the later events folded with the definition's evolve.
 * *version is the last event folded, 0 when the aggregate has no events (*state then holds
 * the initial state). Embedded: the store's stream and snapshot; Kafka: the aggregate's
 * events gathered from every partition of <type>.events (snapshots are not read), as
 * es_store_read_stream does. Writes nothing. Caller frees *state with
 * protobuf_c_message_free_unpacked. */
ES_API es_err es_engine_load_state(es_engine_t *engine, const char *aggregate_type,
                                   const char *aggregate_id, ProtobufCMessage **state,
                                   uint64_t *version, es_error_t *err);

/* Checks a command as es_execute does before running it: names and ids against the limits of
 * <eskit/event.h>, metadata; the message names the field and the command. */
es_err es_validate_command(const es_command_t *cmd, es_error_t *err);

/* Inside decide: appends event (packed now; the caller keeps ownership). */
es_err es_emit(es_decision_t *d, const ProtobufCMessage *event);
/* Inside decide: refuses the command with a reason; returns ES_EREJECTED. */
es_err es_reject(es_decision_t *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Replaces a string field of msg (freeing the old value unless it is the default). */
es_err es_pb_set_string(ProtobufCMessage *msg, char **field, const char *value);
/* Replaces a bytes field of msg the same way. */
es_err es_pb_set_bytes(ProtobufCMessage *msg, ProtobufCBinaryData *field, const uint8_t *data,
                       size_t len);
/* A heap copy of msg (pack + unpack). Caller frees with protobuf_c_message_free_unpacked. */
ProtobufCMessage *es_pb_clone(const ProtobufCMessage *msg);

#ifdef __cplusplus
}
#endif
#endif
