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

/* The definition layout of these headers. es_engine_register accepts a definition of this
 * ABI or any older one (it reads only the fields its abi_version has: a program built against
 * older headers keeps working) and refuses a newer one. docs/abi.md has the rules. */
#define ES_AGGREGATE_ABI 2

/* Folds one event into state. An error stops the load with that error. */
typedef es_err es_evolve_cb(ProtobufCMessage *state, const ProtobufCMessage *event, void *opaque,
                            es_error_t *err);
/* Emits events with es_emit, or returns es_reject(d, ...). */
typedef es_err es_decide_cb(const ProtobufCMessage *state, const ProtobufCMessage *command,
                            es_decision_t *d, void *opaque);

/* One command type and its decide; a table of them ends with {NULL}. */
typedef struct es_command_handler {
    const ProtobufCMessageDescriptor *command;
    es_decide_cb *decide;
} es_command_handler_t;

/* One event type and its evolve; NULL when the event changes nothing in the state. A table of
 * them ends with {NULL}. */
typedef struct es_evolver {
    const ProtobufCMessageDescriptor *event;
    es_evolve_cb *evolve;
} es_evolver_t;

/* State, Command and Event are type names, which cannot be parenthesized. */
/* NOLINTBEGIN(bugprone-macro-parentheses) */
/* A decide for one command type, typed: ES_DECIDE(fn, State, Command) { ... } defines the
 * es_decide_cb fn (for a command_handlers table) with a body that sees `const State *state`,
 * `const Command *command`, `es_decision_t *d` and `void *opaque`, so the handler needs no
 * casts. State and Command are protobuf-c message structs (Orders__V1__Order). */
#define ES_DECIDE(fn, State, Command)                                                              \
    static es_err fn##_typed(const State *state, const Command *command, es_decision_t *d,         \
                             void *opaque);                                                        \
    static es_err fn(const ProtobufCMessage *state_, const ProtobufCMessage *command_,             \
                     es_decision_t *d_, void *opaque_) {                                           \
        return fn##_typed((const State *)state_, (const Command *)command_, d_, opaque_);          \
    }                                                                                              \
    static es_err fn##_typed(const State *state __attribute__((unused)),                           \
                             const Command *command __attribute__((unused)),                       \
                             es_decision_t *d __attribute__((unused)),                             \
                             void *opaque __attribute__((unused)))

/* An evolve for one event type, typed: ES_EVOLVE(fn, State, Event) { ... } defines the
 * es_evolve_cb fn (for an evolvers table) with a body that sees `State *state`,
 * `const Event *event`, `void *opaque` and `es_error_t *err`. */
#define ES_EVOLVE(fn, State, Event)                                                                \
    static es_err fn##_typed(State *state, const Event *event, void *opaque, es_error_t *err);     \
    static es_err fn(ProtobufCMessage *state_, const ProtobufCMessage *event_, void *opaque_,      \
                     es_error_t *err_) {                                                           \
        return fn##_typed((State *)state_, (const Event *)event_, opaque_, err_);                  \
    }                                                                                              \
    static es_err fn##_typed(                                                                      \
        State *state __attribute__((unused)), const Event *event __attribute__((unused)),          \
        void *opaque __attribute__((unused)), es_error_t *err __attribute__((unused)))

/* NOLINTEND(bugprone-macro-parentheses) */

/* An aggregate type. Each side is given one of two ways: as tables (command_handlers,
 * evolvers: the engine finds the function of each message type), or as a list of types with
 * one function that takes them all (commands + decide, events + evolve). Callbacks run on the
 * thread calling es_execute, with the opaque given to es_engine_register; on Kafka, in the
 * process owning the aggregate's partition: on the thread running its es_processor_poll or
 * es_processor_run, with the opaque its engine's registration was given. */
typedef struct es_aggregate_def {
    int abi_version;  /* ES_AGGREGATE_ABI */
    const char *type; /* "<domain>.<aggregate>", e.g. "orders.order" */
    const ProtobufCMessageDescriptor *state;
    const ProtobufCMessageDescriptor *const *events;   /* NULL-terminated; NULL with evolvers */
    const ProtobufCMessageDescriptor *const *commands; /* NULL-terminated; NULL with handlers */
    /* Optional: adjusts a state the engine initialised to the message defaults. */
    void (*initial_state)(ProtobufCMessage *state, void *opaque);
    es_evolve_cb *evolve; /* with events */
    es_decide_cb *decide; /* with commands */
    /* ABI 2 */
    const es_command_handler_t *command_handlers; /* instead of commands + decide */
    const es_evolver_t *evolvers;                 /* instead of events + evolve */
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
ES_API es_err es_engine_new(const es_config_t *cfg, es_engine_t **out, es_error_t *err);
/* es_engine_new with a mode. ES_OPEN_READONLY: an engine for reading states (tools such as
 * esctl state) over a read-only store, which creates nothing, sends nothing to Kafka and
 * executes no command (es_execute is ES_ESTATE). */
ES_API es_err es_engine_open(const es_config_t *cfg, es_open_mode mode, es_engine_t **out,
                             es_error_t *err);
/* Frees the engine and closes its store (NULL is fine); registered definitions may go after. */
ES_API void es_engine_destroy(es_engine_t *engine);
/* The engine's store, for reads (borrowed). */
ES_API es_store_t *es_engine_store(es_engine_t *engine);

/* Registers an aggregate type. The struct itself is copied (by its abi_version); what it
 * points to (type name, descriptors, lists, tables) must outlive the engine. Not thread-safe:
 * register everything before executing. */
ES_API es_err es_engine_register(es_engine_t *engine, const es_aggregate_def *def, void *opaque,
                                 es_error_t *err);

/* What the engine calls to fold event into state for def: its evolve, or the evolver of the
 * event's type in its table (an evolver without a function: ES_OK; none for the type:
 * ES_EUNKNOWN_TYPE). For wrapping a definition (a decorator, a test) without knowing which way
 * it was written. */
ES_API es_err es_aggregate_evolve(const es_aggregate_def *def, ProtobufCMessage *state,
                                  const ProtobufCMessage *event, void *opaque, es_error_t *err);
/* The same for decide: its decide, or the handler of the command's type (none: a rejection);
 * ES_EINVAL, d untouched, when an argument is NULL. */
ES_API es_err es_aggregate_decide(const es_aggregate_def *def, const ProtobufCMessage *state,
                                  const ProtobufCMessage *command, es_decision_t *d, void *opaque);

/* Executes one command. Returns ES_OK (accepted), ES_EREJECTED, ES_ECONFLICT, ES_EIDREUSED or
 * an error; res (may be NULL) says the same and more. Caller frees res with es_result_clear.
 * Any number of threads may execute on one engine at once. Embedded, their transactions
 * take turns on the store; on Kafka their commands are in flight together, each call
 * waiting for its own replies. */
ES_API es_err es_execute(es_engine_t *engine, const es_command_t *cmd, es_result_t *res,
                         es_error_t *err);

/* PER COMMAND, NOT ALL-OR-NOTHING: executes n commands in order, each on its own; results[i]
 * holds command i's outcome, and a rejected, conflicting or invalid command does not stop the
 * others: their events are appended. A transfer written as such a batch creates money when
 * the debit is rejected; use es_execute_all for all-or-nothing, a saga (<eskit/saga.h>) across
 * aggregates on Kafka. The call fails only when the batch as a whole did.
 * Embedded: one transaction, so the accepted commands' events are durable together or not at
 * all, and a failed call appended nothing.
 * Kafka: each command goes to the processor owning its aggregate's partition, so the batch is
 * atomic per command only: a failed call may leave some commands executed (their results say
 * which), and the events in results carry their partition but offset -1 (a reply does not
 * carry offsets). */
ES_API es_err es_execute_batch(es_engine_t *engine, const es_command_t *cmds, size_t n,
                               es_result_t *results, es_error_t *err);

/* ALL-OR-NOTHING, unlike es_execute_batch: executes n commands in order in one transaction,
 * and the first command that is not accepted (rejected, conflict, ES_EIDREUSED, invalid,
 * unknown type, any error) aborts the whole batch: nothing is appended, no snapshot and no
 * command id is recorded, and no cached state keeps anything of it, so sending the same batch
 * again runs as a first execution. Returns ES_OK when every command was accepted (results as
 * es_execute_batch gives them); otherwise the culprit k's code (ES_EREJECTED, ES_ECONFLICT,
 * ...), err naming k, its command id and its reason. Then results[k] keeps its outcome, code
 * and reason (its versions as seen inside the rolled-back batch, no events), and every other
 * results[i] is ES_OUTCOME_ERROR with code ES_EABORTED, no versions or events, the caller's
 * command id (NULL when it gave none) and a reason naming k: "not executed: command k ... was
 * rejected; nothing of the batch was appended". A failure of the batch as a whole returns its
 * error with every result cleared. Caller frees results with es_result_clear.
 * Command ids: a command whose id already ran is answered from its record, as by es_execute
 * (an accepted duplicate counts as accepted, a recorded rejection aborts the batch); a command
 * id given twice inside the batch is the same command sent twice: the second is answered as a
 * duplicate of the first (or is ES_EIDREUSED, aborting the batch, when it differs).
 * Kafka: refused with ES_EINVAL before anything is sent, whatever the commands: they go to the
 * processors owning their partitions (different owners for different partitions and aggregate
 * types), and no owner can roll back another's commit without a distributed transaction. A
 * process over several aggregates is a saga (es_saga_def, <eskit/saga.h>): each step its own
 * command, a failed step compensated. */
ES_API es_err es_execute_all(es_engine_t *engine, const es_command_t *cmds, size_t n,
                             es_result_t *results, es_error_t *err);

/* Frees what a result holds (its strings and events) and zeroes it; the struct is the caller's. */
ES_API void es_result_clear(es_result_t *res);

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
ES_API es_err es_validate_command(const es_command_t *cmd, es_error_t *err);

/* Inside decide: appends event (packed now; the caller keeps ownership). */
ES_API es_err es_emit(es_decision_t *d, const ProtobufCMessage *event);
/* Inside decide: refuses the command with a reason; returns ES_EREJECTED. */
ES_API es_err es_reject(es_decision_t *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Replaces a string field of msg (freeing the old value unless it is the default). */
ES_API es_err es_pb_set_string(ProtobufCMessage *msg, char **field, const char *value);
/* Replaces a bytes field of msg the same way. */
ES_API es_err es_pb_set_bytes(ProtobufCMessage *msg, ProtobufCBinaryData *field,
                              const uint8_t *data, size_t len);
/* A heap copy of msg (pack + unpack). Caller frees with protobuf_c_message_free_unpacked. */
ES_API ProtobufCMessage *es_pb_clone(const ProtobufCMessage *msg);

#ifdef __cplusplus
}
#endif
#endif
