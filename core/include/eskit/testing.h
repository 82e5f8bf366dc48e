/*
 * The test kit: unit tests of a decider, and of the steps of a saga (further down), in memory,
 * with no database file (docs/testing.md).
 *
 *     es_test_aggregate_t *t;
 *     es_test_aggregate_new(&order_def, NULL, &t, &err);
 *     es_test_given(t, &placed.base, &err);          // history, folded with evolve
 *     es_test_when(t, &confirm.base, &err);          // decide, as es_execute runs it
 *     char report[4096];
 *     bool ok = es_test_then_events(t, expected, 1, report, sizeof report);
 *     cr_assert(ok, "%s", report);                   // any test framework: ok and a text
 *     es_test_aggregate_destroy(t);
 *
 * It runs the engine's own decider path (the same code es_execute runs between its reads and
 * appends): given events are packed and folded as stored events are, the command is checked
 * against the definition's commands, decided, and its events folded into the state; an evolve
 * that keeps a pointer into an event fails with ES_ESTATE and the engine's message. Events are
 * compared by type and packed bytes, which is protobuf equality for the messages protobuf-c
 * packs. A failed check fills the report with the given events, the command, what was expected
 * and what happened, each message printed with its type and fields.
 *
 * An accepted command's events join the history, so es_test_when may follow es_test_when (the
 * engine executing commands one after the other); a then_* check is about the last one.
 * Not thread-safe: one aggregate per test.
 */
#ifndef ESKIT_TESTING_H
#define ESKIT_TESTING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>
#include <eskit/engine.h>
#include <eskit/saga.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct es_test_aggregate es_test_aggregate_t;

/* An aggregate of type def with no history; def is checked as es_engine_register checks it,
 * opaque goes to its callbacks. Caller frees with es_test_aggregate_destroy. */
ES_API es_err es_test_aggregate_new(const es_aggregate_def *def, void *opaque,
                                    es_test_aggregate_t **out, es_error_t *err);
/* Frees t and everything it handed out (NULL: nothing). */
ES_API void es_test_aggregate_destroy(es_test_aggregate_t *t);

/* Appends event (packed now; the caller keeps it) to the history and folds it with evolve.
 * A failure (an unknown type, evolve's error, a state borrowing from the event) is returned
 * and is then also the outcome of every es_test_when, as it would be of every es_execute. */
ES_API es_err es_test_given(es_test_aggregate_t *t, const ProtobufCMessage *event, es_error_t *err);
/* Decides command on the current state, as es_execute would: ES_OK (accepted; its events are
 * folded and join the history), ES_EREJECTED, or the command's error (ES_EUNKNOWN_TYPE,
 * ES_ESTATE, decide's code). err gets the reason or message. */
ES_API es_err es_test_when(es_test_aggregate_t *t, const ProtobufCMessage *command,
                           es_error_t *err);

/* Whether the last command was accepted with exactly these n events, in order (n = 0: accepted
 * with none). On false, report (cap bytes, may be NULL) says given, when, expected and got. */
ES_API bool es_test_then_events(const es_test_aggregate_t *t,
                                const ProtobufCMessage *const *expected, size_t n, char *report,
                                size_t cap);
/* Whether the last command was rejected with a reason containing reason_part (NULL or "":
 * any reason). Fills report on false. */
ES_API bool es_test_then_rejected(const es_test_aggregate_t *t, const char *reason_part,
                                  char *report, size_t cap);
/* Whether the last command failed with code and a message containing message_part (NULL: any);
 * a given event that failed is the failure of every later command. Fills report on false. */
ES_API bool es_test_then_error(const es_test_aggregate_t *t, es_err code, const char *message_part,
                               char *report, size_t cap);

/* The state after the history (given events and accepted commands' events) (borrowed; valid
 * until the next call on t). */
ES_API const ProtobufCMessage *es_test_state(const es_test_aggregate_t *t);
/* The aggregate's version: how many events the history holds. */
ES_API uint64_t es_test_version(const es_test_aggregate_t *t);
/* The event at version (1..es_test_version), as es_execute would have appended it (aggregate
 * id "test"), or NULL (borrowed; valid until t is destroyed). */
ES_API const es_event_t *es_test_event(const es_test_aggregate_t *t, uint64_t version);
/* The last command's events: how many, and *first the version of the first of them. */
ES_API size_t es_test_emitted(const es_test_aggregate_t *t, uint64_t *first);
/* The last command's reason or error message; "" when it was accepted or none ran
 * (borrowed). */
ES_API const char *es_test_reason(const es_test_aggregate_t *t);

/* Writes msg in protobuf's text style, on one line ("orders.v1.LineItem { sku: \"mug\"
 * quantity: 2 }"; enums by name, fields at their default left out) into buf (cap bytes,
 * truncated with "..."). Returns the length it needed, as snprintf does. */
ES_API size_t es_test_format(const ProtobufCMessage *msg, char *buf, size_t cap);

/*
 * Sagas: the steps of an es_saga_def driven by hand, with a virtual clock.
 *
 *     es_test_saga_t *s;
 *     es_test_saga_new(&fulfilment_def, &s, &err);
 *     es_test_saga_start(s, "o-1", &placed.base, &err);     // the start event
 *     es_test_send_t want[] = {{"sku-mug", &reserve.base}};
 *     cr_assert(es_test_saga_then_sent(s, want, 1, report, sizeof report), "%s", report);
 *     es_test_saga_event(s, es_test_saga_sent(s, NULL)[0].command_id, &reserved.base, &err);
 *     es_test_saga_advance(s, 30000, &err);                 // the step's deadline passes
 *     cr_assert(es_test_saga_then_state(s, "compensating", report, sizeof report), "%s", report);
 *
 * It runs the coordinator's own transitions (saga.c: instances, targets, compensation in
 * reverse, the abort command, deadlines) on an SQLite database in memory, without a runner, an
 * engine or a log: the test plays the aggregates, saying for each command sent whether it was
 * accepted or rejected and which events it caused. One instance per kit. Not thread-safe.
 */
typedef struct es_test_saga es_test_saga_t;

/* A command the saga sent (see es_test_saga_sent). */
typedef struct es_test_sent {
    const char *command_id; /* "<saga>/<instance>/<step>.<target>/<do|undo|abort>" */
    const char *kind;       /* "do", "undo" (a compensation) or "abort" */
    const char *step;       /* the step's name; "on_abort" for the abort command */
    const char *aggregate_type, *aggregate_id;
    const ProtobufCMessage *command;
} es_test_sent_t;

/* A command a step is expected to send, and where to (the step's aggregate type). */
typedef struct es_test_send {
    const char *aggregate_id;
    const ProtobufCMessage *command;
} es_test_send_t;

/* A saga of definition def (checked as es_saga_new checks it), no instance yet, the
 * virtual clock at ES_TEST_SAGA_EPOCH_US. Caller frees with es_test_saga_destroy. */
ES_API es_err es_test_saga_new(const es_saga_def *def, es_test_saga_t **out, es_error_t *err);
/* Frees s, its database in memory and what it handed out (NULL: nothing). */
ES_API void es_test_saga_destroy(es_test_saga_t *s);
#define ES_TEST_SAGA_EPOCH_US INT64_C(1700000000000000)

/* The start event (def's start_event, packed now) on def's start aggregate aggregate_id: the
 * instance starts and its first step sends. */
ES_API es_err es_test_saga_start(es_test_saga_t *s, const char *aggregate_id,
                                 const ProtobufCMessage *event, es_error_t *err);
/* The aggregate accepted the command command_id (a step with completed_by NULL completes on
 * it; a compensation or the abort is done). */
ES_API es_err es_test_saga_accepted(es_test_saga_t *s, const char *command_id, es_error_t *err);
/* The aggregate rejected the command command_id for reason: the step fails (compensation
 * starts), or a rejected compensation or abort fails the instance. */
ES_API es_err es_test_saga_rejected(es_test_saga_t *s, const char *command_id, const char *reason,
                                    es_error_t *err);
/* The command command_id caused event (packed now) on its aggregate: one of the step's
 * completed_by or failed_by ends its target, another is recorded and the step waits on. */
ES_API es_err es_test_saga_event(es_test_saga_t *s, const char *command_id,
                                 const ProtobufCMessage *event, es_error_t *err);
/* Moves the virtual clock ms forward and fires the deadlines that passed, as a coordinator that
 * has caught up with its log does. */
ES_API es_err es_test_saga_advance(es_test_saga_t *s, int64_t ms, es_error_t *err);

/* The commands the last start or when sent, in order; *n (may be NULL) gets how many. Returns
 * the first, NULL when none (borrowed; valid until the next call on the kit, which may be given
 * one of their command ids). */
ES_API const es_test_sent_t *es_test_saga_sent(const es_test_saga_t *s, size_t *n);
/* The instance's state: "running", "compensating", "completed", "aborted" or "failed" ("" before
 * the start) (borrowed). */
ES_API const char *es_test_saga_state(const es_test_saga_t *s);
/* The running or compensated step's name ("" before the start or once ended) (borrowed). */
ES_API const char *es_test_saga_step(const es_test_saga_t *s);
/* Why the instance compensates, aborted or failed ("" otherwise) (borrowed). */
ES_API const char *es_test_saga_reason(const es_test_saga_t *s);

/* Whether the last start or when sent exactly these n commands, in order (same type, aggregate
 * id and packed bytes). On false, report (cap bytes, may be NULL) says what happened before,
 * the last when, what was expected and what was sent, with the instance's state. */
ES_API bool es_test_saga_then_sent(const es_test_saga_t *s, const es_test_send_t *expected,
                                   size_t n, char *report, size_t cap);
/* Whether the instance is in state ("running", ...). Fills report on false. */
ES_API bool es_test_saga_then_state(const es_test_saga_t *s, const char *state, char *report,
                                    size_t cap);

#ifdef __cplusplus
}
#endif
#endif
