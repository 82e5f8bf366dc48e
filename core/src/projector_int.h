/* Internals shared by the projector loader, the runner, replay and the DLQ verbs. */
#ifndef ESKIT_PROJECTOR_INT_H
#define ESKIT_PROJECTOR_INT_H

#include "crashguard.h"
#include "internal.h"

#include <eskit/projector.h>
#include <eskit/runner.h>

#define ES_PROJECTOR_NAME_MAX 64

typedef struct ctx_stmt {
    const char *sql; /* keyed by address: modules pass literals */
    sqlite3_stmt *stmt;
} ctx_stmt;

struct es_projector_ctx {
    sqlite3 *db;
    void *state;
    const char *name;
    ctx_stmt *stmts;
    size_t n_stmts, cap_stmts;
    ProtobufCAllocator *alloc; /* es_ctx_dispatch's payloads: the runner's arena; NULL: heap */
};

/* Finalizes the context's cached statements. */
void es_ctx_clear(es_projector_ctx_t *ctx);
/* Applies ev with def's apply, or (ABI 2, apply NULL) dispatches it to def's handlers. */
es_err es_projector_apply(const es_projector_def *def, es_projector_ctx_t *ctx,
                          const es_event_t *ev, es_error_t *err);
/* Checks the types of def's handlers (ABI 2) against the log's schema catalogue: a live
 * runner's start. */
es_err es_projector_check_reads(const es_config_t *cfg, const es_projector_def *def,
                                es_error_t *err);

#include "log/log.h"
#include "sql.h"

/* Read-model database: the module's tables plus the runner's es_* tables. */
typedef enum rm_mode {
    RM_LIVE,     /* WAL, synchronous from config: what readers query */
    RM_BULK,     /* a private rebuild target: in-memory journal, no fsync */
    RM_READONLY, /* inspection (lag, dlq list/show): an existing read model, nothing written */
} rm_mode;

/* Opens (creating, except RM_READONLY) a read-model database and its es_* tables; a file that
 * is another eskit file (an event store) is refused, naming what it is. */
es_err es_rm_open(const es_config_t *cfg, const char *path, rm_mode mode, sqlite3 **db,
                  es_error_t *err);
/* es_rm_open for a runner's database that is not a read model: noun names it in messages
 * ("saga database"). */
es_err es_rm_open_as(const es_config_t *cfg, const char *path, rm_mode mode, const char *noun,
                     sqlite3 **db, es_error_t *err);
/* readmodel.db opened RM_READONLY for a look (lag, DLQ verbs); a missing file is ES_ENOTFOUND. */
es_err es_rm_open_existing(const es_config_t *cfg, sqlite3 **db, es_error_t *err);
/* "<readmodel>-<projector><suffix>": the lock and guard files beside a read model. */
char *es_rm_side_path(const char *rm_path, const char *projector, const char *suffix);

/* The per-projector lock runners and replays take turns on (flock on a side file). */
es_err es_rm_lock_open(const char *rm_path, const char *projector, int *fd, es_error_t *err);
/* Takes the lock, waiting up to timeout_ms (-1: forever); 0 when it stayed taken. */
int es_rm_lock(int fd, int timeout_ms);
void es_rm_unlock(int fd);

/* The consumer group name of a projector: "<service.name>.<projector>". */
void es_rm_group(const es_config_t *cfg, const char *projector, char *out, size_t cap);
/* The DLQ (dlq.c). Sends the projector's unpublished es_dlq rows to "<topic>.dlq" and marks them
 * published. */
es_err es_rm_publish_dlq(sqlite3 *db, es_log_t *log, const es_config_t *cfg, const char *projector,
                         es_error_t *err);
/* Fills e from a row of the es_dlq columns list ES_DLQ_COLUMNS (value only when with_value). */
#define ES_DLQ_COLUMNS                                                                             \
    "id, projector, topic, partition, offset, key, event_type, code, error, attempts, "            \
    "parked_at, redriven_at, value"
es_err es_rm_dlq_row(sqlite3_stmt *s, es_dlq_entry_t *e, int with_value);
/* Parking: the statement a runner prepares (its table of statements) to park a record, and
 * what runs it: binds the record, steps, fills *out with the entry as parked. The SQLite result
 * of the step (SQLITE_DONE when parked). */
#define ES_DLQ_PARK_SQL                                                                            \
    "INSERT INTO es_dlq(projector, topic, partition, offset, key, event_type, code, error, "       \
    "attempts, parked_at, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON "        \
    "CONFLICT(projector, topic, partition, offset) DO UPDATE SET event_type = "                    \
    "excluded.event_type, code = excluded.code, error = excluded.error, attempts = "               \
    "es_dlq.attempts + excluded.attempts, parked_at = excluded.parked_at, redriven_at = NULL, "    \
    "published = 0"
int es_dlq_park(sqlite3_stmt *s, const char *projector, const es_raw_record_t *rec,
                const char *event_type, es_err code, const char *why, int attempts,
                es_dlq_entry_t *out);

/* A runner on any read-model file: the live one (lock and guard beside it) or a rebuild
 * target (no lock). Used by es_runner_new, es_replay and es_dlq_redrive. */
typedef struct runner_opts {
    const char *rm_path;
    rm_mode mode;
    const char *guard_path;
    int use_lock;
    size_t batch_size;
    int drop_idle_guard; /* removes the guard file at the end when it counts nothing */
    const char *noun;    /* what messages call the database; NULL: "read model" */
    const char *key;     /* the config key that names it; NULL: "readmodel.db" */
    int *behind;         /* may be NULL; set to 1 when open fails (ES_ESTATE) because the model was
                            built with an older schema version than the module's */
} runner_opts;
es_err es_runner_open(const es_config_t *cfg, const es_projector_def *def, const runner_opts *o,
                      es_runner_t **out, es_error_t *err);
/* es_runner_new on the live database at the path config key names, which messages call noun
 * (the saga coordinator: "saga.db", "saga database"). */
es_err es_runner_new_on(const es_config_t *cfg, const es_projector_def *def, const char *key,
                        const char *noun, es_runner_t **out, es_error_t *err);
/* One transaction: up to max records past the checkpoints (lingering when lingering is set).
 * *consumed counts the records. The caller holds the lock when the runner uses one. */
es_err es_runner_batch(es_runner_t *r, size_t max, int linger, size_t *consumed, es_error_t *err);
/* Records of the projector's topics between its checkpoints and the log's end. */
es_err es_runner_backlog(es_runner_t *r, uint64_t *n, es_error_t *err);
/* es_runner_backlog as the log estimates it from positions when counting would be long
 * (topic_estimate); *exact 0 when some part is an estimate. */
es_err es_runner_backlog_estimate(es_runner_t *r, uint64_t *n, int *exact, es_error_t *err);
sqlite3 *es_runner_db(es_runner_t *r);
/* Sets what es_ctx_state returns, for a def without init (the saga coordinator). */
void es_runner_set_state(es_runner_t *r, void *state);
es_log_t *es_runner_log(es_runner_t *r);
/* Decodes and applies one record under a savepoint with the retry policy. On failure fills
 * err and returns the decoder's or module's code (*storage = 0: park it) or our storage's
 * (*storage = 1: the transaction is in doubt). */
es_err es_runner_apply_record(es_runner_t *r, const es_raw_record_t *rec, int *attempts,
                              char *event_type, size_t type_cap, int *storage, es_error_t *err);
int es_runner_lock_fd(es_runner_t *r);
/* 1 once es_runner_stop was called (until es_runner_run returns or es_runner_resume). */
int es_runner_stopping(const es_runner_t *r);
/* Undoes es_runner_stop: polls apply events again, and the process ending is a crash to the
 * guard again. es_runner_run does it when it returns; so does es_saga_run for its runner. */
void es_runner_resume(es_runner_t *r);

#endif
