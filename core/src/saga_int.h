/* The saga database's tables, shared by the coordinator (saga.c) and the queries (saga_query.c). */
#ifndef ESKIT_SAGA_INT_H
#define ESKIT_SAGA_INT_H

#include "internal.h"

#include <eskit/saga.h>

/* Names of eskit.v1.SagaState values as stored in es_saga_instances.state. */
#define ES_SAGA_RUNNING "running"
#define ES_SAGA_COMPENSATING "compensating"
#define ES_SAGA_COMPLETED "completed"
#define ES_SAGA_ABORTED "aborted"
#define ES_SAGA_FAILED "failed"

/* The payload type of "<saga>.saga.events" records. */
#define ES_SAGA_EVENT_TYPE "eskit.v1.SagaTransition"

/*
 * es_saga_instances: one row per instance.
 *   step       the step running or being compensated; n_steps while the abort command runs
 *   deadline   the running step's deadline (us); 0 when nothing times out
 *   seq        transitions so far (the version of the last one in "<saga>.saga.events")
 * es_saga_targets: every command an instance sends, which is also the outbox (sent_at 0).
 *   kind       'do' (a step's command), 'undo' (its compensation), 'abort'
 *   status     'pending', 'done', 'failed'
 * es_saga_history: transitions not yet in "<saga>.saga.events" (an outbox: deleted once
 *            published; the log is the history).
 * es_saga_pruned: per end state, how many instances saga.retention.ms deleted (with their
 *            targets) once they had ended that long ago and their history was published.
 */
#define ES_SAGA_SCHEMA                                                                             \
    "CREATE TABLE IF NOT EXISTS es_saga_instances ("                                               \
    " saga TEXT NOT NULL, id TEXT NOT NULL, state TEXT NOT NULL, step INTEGER NOT NULL,"           \
    " started_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, deadline INTEGER NOT NULL,"        \
    " reason TEXT NOT NULL DEFAULT '', seq INTEGER NOT NULL,"                                      \
    " start_event BLOB NOT NULL," /* the start event's envelope bytes */                           \
    " PRIMARY KEY (saga, id)) WITHOUT ROWID;"                                                      \
    "CREATE INDEX IF NOT EXISTS es_saga_instances_deadline ON es_saga_instances (saga, deadline)"  \
    " WHERE deadline > 0;"                                                                         \
    "CREATE TABLE IF NOT EXISTS es_saga_targets ("                                                 \
    " command_id TEXT PRIMARY KEY, saga TEXT NOT NULL, id TEXT NOT NULL,"                          \
    " step INTEGER NOT NULL, target INTEGER NOT NULL, kind TEXT NOT NULL,"                         \
    " aggregate_type TEXT NOT NULL, aggregate_id TEXT NOT NULL, command_type TEXT NOT NULL,"       \
    " payload BLOB NOT NULL, deadline INTEGER NOT NULL, status TEXT NOT NULL,"                     \
    " created_at INTEGER NOT NULL, sent_at INTEGER NOT NULL DEFAULT 0,"                            \
    " outcome TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '',"                          \
    " correlation_id TEXT NOT NULL DEFAULT '');"                                                   \
    "CREATE INDEX IF NOT EXISTS es_saga_targets_instance ON es_saga_targets (saga, id, step);"     \
    "CREATE INDEX IF NOT EXISTS es_saga_targets_outbox ON es_saga_targets (saga)"                  \
    " WHERE sent_at = 0;"                                                                          \
    "CREATE INDEX IF NOT EXISTS es_saga_instances_ended ON es_saga_instances (saga, updated_at)"   \
    " WHERE state IN ('completed', 'aborted', 'failed');"                                          \
    "CREATE TABLE IF NOT EXISTS es_saga_pruned ("                                                  \
    " saga TEXT NOT NULL, state TEXT NOT NULL, n INTEGER NOT NULL,"                                \
    " PRIMARY KEY (saga, state)) WITHOUT ROWID;"                                                   \
    "CREATE TABLE IF NOT EXISTS es_saga_history ("                                                 \
    " saga TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL,"                                 \
    " record BLOB NOT NULL," /* eskit.v1.SagaTransition */                                         \
    " PRIMARY KEY (saga, id, seq)) WITHOUT ROWID;"

/* "<saga>.saga": the aggregate type of a saga's transitions (cap >= ES_MAX_TYPE_LEN + 1). */
es_err es_saga_history_type(const char *saga, char *out, size_t cap, es_error_t *err);

/* Fills r from a packed eskit.v1.SagaTransition. */
es_err es_saga_record_decode(const uint8_t *buf, size_t len, uint64_t seq, es_saga_record_t *r,
                             es_error_t *err);

#endif
