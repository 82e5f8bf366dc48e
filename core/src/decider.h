/*
 * The decider path, without a store: a definition's checks, a state made and folded from
 * packed events, decide run into an es_decision_t, and the check that a state owns its memory.
 * The engine (engine.c) runs it between its store's reads and appends; the test kit
 * (testing.c) runs it on events held in memory. One implementation, so the kit cannot
 * disagree with the engine.
 *
 * State ownership: events are unpacked into the folder's arena and stay there until
 * es_settle, after a load's or a decision's folding; it walks the state for fields that point
 * into the arena (evolve assigned a string of the event instead of copying it) before the
 * arena's memory is reused. Such a field would dangle in a cached state, a snapshot and the
 * final free, so es_settle fails with ES_ESTATE naming the field and resets it, so freeing the
 * state stays safe.
 */
#ifndef ESKIT_DECIDER_H
#define ESKIT_DECIDER_H

#include "internal.h"

/* An event unpacked into the arena since the last es_settle. */
typedef struct es_folded_event {
    size_t start; /* es_pb_arena_used before it was unpacked */
    const char *type;
    uint64_t version;
} es_folded_event;

/* The arena events are unpacked into and where each starts. Zeroed, then es_folder_init. */
typedef struct es_folder {
    es_pb_arena_t *arena;
    es_folded_event *folded;
    size_t n_folded, cap_folded;
    int fault; /* es_settle found a borrowed field; the caller clears it */
} es_folder_t;

/* Whose state is folded: for the callbacks and for messages. */
typedef struct es_subject {
    const es_aggregate_def *def;
    void *opaque;
    const char *id; /* the aggregate id */
} es_subject_t;

typedef struct es_emitted {
    const ProtobufCMessageDescriptor *desc;
    es_buf_t buf; /* the event as packed by es_emit */
} es_emitted;

struct es_decision {
    const es_aggregate_def *def;
    es_emitted *ev;
    size_t n, cap;
    char *reason;
    es_err error; /* set when es_emit itself failed */
};

/* The caller's definition in this ABI's layout (*out, caller frees, with *lists, also on
 * failure): the fields its abi_version has (the rest zero), and for a table side the type
 * list made from the table (in *lists), so that the rest of the library reads one layout and
 * one list of types; then checked as es_engine_register checks it, naming what is wrong. */
es_err es_aggregate_normalise(const es_aggregate_def *given, es_aggregate_def **out,
                              const ProtobufCMessageDescriptor ***lists, es_error_t *err);
/* es_aggregate_normalise's checks alone. */
es_err es_aggregate_check(const es_aggregate_def *def, es_error_t *err);
/* ES_EUNKNOWN_TYPE unless msg is one of def's commands. */
es_err es_command_type_check(const es_aggregate_def *def, const ProtobufCMessage *msg,
                             es_error_t *err);
/* A fresh state: the message defaults, then def's initial_state. NULL when out of memory. */
ProtobufCMessage *es_state_new(const es_subject_t *s);

es_err es_folder_init(es_folder_t *f);
void es_folder_free(es_folder_t *f);
/* Folds one packed event (version for messages) into state with evolve; the event stays in the
 * arena until es_settle (which this calls first when the arena has grown large). */
es_err es_fold(es_folder_t *f, const es_subject_t *s, ProtobufCMessage *state,
               const char *event_type, const uint8_t *payload, size_t len, uint64_t version,
               es_error_t *err);
/* Checks that state (may be NULL) owns its memory and takes back the arena; ES_ESTATE naming
 * the first field that does not (and f->fault set). err may be NULL. */
es_err es_settle(es_folder_t *f, const es_subject_t *s, ProtobufCMessage *state, es_error_t *err);

/* Runs decide into d (zeroed). ES_OK: d holds the events; ES_EREJECTED: d->reason says why;
 * ES_ENOMEM; another code: decide failed and err says how. Free d with es_decision_free. */
es_err es_decide(const es_subject_t *s, const ProtobufCMessage *state,
                 const ProtobufCMessage *command, es_decision_t *d, es_error_t *err);
/* Folds d's events (versions before + 1..) into state, then es_settle. */
es_err es_fold_decision(es_folder_t *f, const es_subject_t *s, ProtobufCMessage *state,
                        const es_decision_t *d, uint64_t before, es_error_t *err);
void es_decision_free(es_decision_t *d);

#endif
