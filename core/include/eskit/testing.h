/*
 * The test kit: unit tests of a decider in memory, with no database file.
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
#include <protobuf-c/protobuf-c.h>
#include <eskit/engine.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct es_test_aggregate es_test_aggregate_t;

/* An aggregate of type def with no history; def is checked as es_engine_register checks it,
 * opaque goes to its callbacks. Caller frees with es_test_aggregate_destroy. */
ES_API es_err es_test_aggregate_new(const es_aggregate_def *def, void *opaque,
                                    es_test_aggregate_t **out, es_error_t *err);
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
/* Whether the last command (or a given event) failed with code and a message containing
 * message_part (NULL: any). Fills report on false. */
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

#ifdef __cplusplus
}
#endif
#endif
