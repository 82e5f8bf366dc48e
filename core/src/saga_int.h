/* The saga database's tables, shared by the coordinator (saga.c and the files beside it) and the
 * queries (saga_query.c), and the coordinator's internals. */
#ifndef ESKIT_SAGA_INT_H
#define ESKIT_SAGA_INT_H

#include "internal.h"
#include "projector_int.h"
#include "runloop.h"

#include <librdkafka/rdkafka.h>
#include <sqlite3.h>

#include <eskit/saga.h>

/* Names of eskit.v1.SagaState values as stored in es_saga_instances.state. */
#define ES_SAGA_RUNNING "running"
#define ES_SAGA_COMPENSATING "compensating"
#define ES_SAGA_COMPLETED "completed"
#define ES_SAGA_ABORTED "aborted"
#define ES_SAGA_FAILED "failed"

/* The states, as indexes of saga_counts' arrays. */
enum { SAGA_RUNNING, SAGA_COMPENSATING, SAGA_COMPLETED, SAGA_ABORTED, SAGA_FAILED, SAGA_STATES };

/* An ended instance, as the partial index of ended instances and the queries using it say it:
 * two comparisons, where an IN list of three states made SQLite build an ephemeral table each
 * time it checked the index's condition (twice per instance save: 60% of the save's cost). */
#define ES_SAGA_ENDED(t) t "state <> 'running' AND " t "state <> 'compensating'"

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
    " correlation_id TEXT NOT NULL DEFAULT '',"                                                    \
    " traceparent TEXT NOT NULL DEFAULT '', tracestate TEXT NOT NULL DEFAULT '');"                 \
    "CREATE INDEX IF NOT EXISTS es_saga_targets_instance ON es_saga_targets (saga, id, step);"     \
    "CREATE INDEX IF NOT EXISTS es_saga_targets_outbox ON es_saga_targets (saga)"                  \
    " WHERE sent_at = 0;"                                                                          \
    "CREATE INDEX IF NOT EXISTS es_saga_instances_done ON es_saga_instances (saga, updated_at)"    \
    " WHERE " ES_SAGA_ENDED("") ";"                                                                \
                                "CREATE TABLE IF NOT EXISTS es_saga_pruned ("                      \
                                " saga TEXT NOT NULL, state TEXT NOT NULL, n INTEGER NOT NULL,"    \
                                " PRIMARY KEY (saga, state)) WITHOUT ROWID;"                       \
                                "CREATE TABLE IF NOT EXISTS es_saga_history ("                     \
                                " saga TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL,"     \
                                " record BLOB NOT NULL," /* eskit.v1.SagaTransition */             \
                                " PRIMARY KEY (saga, id, seq)) WITHOUT ROWID;"

/* "<saga>.saga": the aggregate type of a saga's transitions (cap >= ES_MAX_TYPE_LEN + 1). */
es_err es_saga_history_type(const char *saga, char *out, size_t cap, es_error_t *err);

/* Fills r from a packed eskit.v1.SagaTransition. */
es_err es_saga_record_decode(const uint8_t *buf, size_t len, uint64_t seq, es_saga_record_t *r,
                             es_error_t *err);

/* Kinds of es_saga_targets rows. */
#define ES_SAGA_KIND_DO "do"
#define ES_SAGA_KIND_UNDO "undo"
#define ES_SAGA_KIND_ABORT "abort"

/*
 * The coordinator's internals, shared by the files it is made of: saga.c (instances,
 * transitions, the events the runner applies, the lifecycle), saga_deadline.c, saga_relay.c,
 * saga_publish.c and saga_retention.c. All of it runs on the thread that polls the coordinator.
 */

/* The coordinator's prepared statements (SQL in saga.c), by index into st. */
enum {
    S_INST_GET,
    S_INST_PUT,
    S_TARGET_BY_CMD,
    S_TARGET_PUT,
    S_TARGET_STATUS,
    S_TARGETS_OF_STEP,
    S_STEP_OPEN,
    S_HIST_PUT,
    S_DUE,
    S_OUTBOX,
    S_SENT,
    S_UNPUBLISHED,
    S_PUBLISHED,
    S_PUBLISHED_ALL,
    S_UNPUBLISHED_N,
    S_HISTORY_N,
    S_HISTORY_CLEAR,
    S_ENDED_BEFORE,
    S_DROP_TARGETS,
    S_DROP_INSTANCE,
    S_PRUNED_ADD,
    S_PRUNED_GET,
    S_COUNT
};

/* Instances by state, kept on the coordinator's thread (saga_metrics.c): counted from saga.db
 * at the first take, then moved by each instance saved, counted again after a rollback or
 * another connection's commit. */
enum { SAGA_COUNT_QUERIES = 3 }; /* by state (rows), by state (pruned), PRAGMA data_version */
typedef struct saga_counts {
    sqlite3_stmt *q[SAGA_COUNT_QUERIES];
    int64_t counted[SAGA_STATES]; /* rows and pruned, at the last take */
    int64_t moved[SAGA_STATES];   /* moves noted since */
    int any_moved;                /* a move was noted since the last take */
    int recount;                  /* count again: first use, or a transaction rolled back */
    int64_t data_version;         /* of the last count; -1: none */
    int64_t recounted_us;
} saga_counts;

/* A transition to publish: read back from es_saga_history, or kept in memory from when it was
 * written (saga_publish.c says when the memory is trusted). */
typedef struct saga_pub {
    char id[ES_MAX_ID_LEN + 1];
    char correlation[ES_MAX_ID_LEN + 1]; /* the instance's (correlation_of) */
    uint64_t seq;
    uint8_t *buf; /* the packed eskit.v1.SagaTransition, owned */
    size_t len;
    int64_t at;
    /* The transition's span, which its envelope's metadata carries as an event's does. */
    char traceparent[ES_TRACEPARENT_LEN + 1], parent[ES_SPAN_ID_LEN + 1];
    char *tracestate; /* owned; NULL: none */
} saga_pub;

struct es_saga {
    es_config_t *cfg;       /* own copy */
    const es_saga_def *def; /* &def_copy */
    es_saga_def def_copy;   /* the caller's definition in this ABI's layout (docs/abi.md) */
    es_engine_t *engine;
    es_projector_def pdef;
    char pname[ES_PROJECTOR_NAME_MAX + 1];
    char subject[96]; /* "saga '<name>': ", which begins every error of a public call */
    char **topics;
    es_runner_t *runner;
    sqlite3 *db;
    sqlite3_stmt *st[S_COUNT];
    char htype[ES_MAX_TYPE_LEN + 1];
    int64_t retry_at_us;  /* the relay backs off after a failed delivery */
    size_t batch_size;    /* projector.batch.size: a full batch means the log has more */
    int64_t retention_us; /* saga.retention.ms; 0: ended instances stay */
    int64_t prune_at_us;  /* when pruning is next due */
    es_stop_t stop;       /* es_saga_stop (saga.h) */
    es_saga_stats_t stats;
    int64_t (*clock)(void *opaque); /* the transitions' time (us); NULL: es_now_us */
    void *clock_opaque;
    /* The span of the handling under way, which its transitions and the commands they send
     * carry: a child of the event handled, or (set 0: made by the first transition) of the
     * instance's start event. used: a transition was written under it. */
    es_trace_t span;
    int span_set, span_used;
    uint64_t compensations_sent; /* of stats.commands_sent, the compensations */
    saga_counts counts;          /* instances by state (saga_metrics.c) */
    struct saga_mx *mx;          /* metrics (saga_metrics.c); NULL: none */
    /* The transitions committed to es_saga_history since the last publication, in the order
     * written, while pub_ok says they are all of it (saga_publish.c). */
    saga_pub *pub;
    size_t n_pub, cap_pub;
    int pub_ok;
    struct saga_live *live; /* live instances in memory (saga_live.c); NULL: none kept */
};

/* An instance as loaded for a transition. */
typedef struct saga_inst {
    char id[ES_MAX_ID_LEN + 1];
    char state[16];
    char saved[16]; /* the state saga.db holds ("": none yet), for the metrics' counts */
    int step;
    int64_t started, deadline;
    char reason[512];
    uint64_t seq;
    uint8_t *start_bytes;
    size_t start_len;
    es_event_t *start_ev;
    ProtobufCMessage *start_msg;
    int borrowed; /* start_* belong to the kept entry this is a copy of (saga_live.c) */
    int lent;     /* of a kept entry: copies of it not yet released */
} saga_inst;

/* What a transition record says beyond kind and state. */
typedef struct hist_info {
    int step1; /* the step's index + 1; 0: none */
    const char *command_id, *command_type, *aggregate_type, *aggregate_id;
    const char *event_type, *event_id;
    const char *reason;
    int64_t deadline;
} hist_info;

#define HIST(...) (&(hist_info){__VA_ARGS__})

/* A target (the command cid of in) reached an end: ok says whether it did what it was for. */
typedef struct saga_target {
    char cid[ES_MAX_ID_LEN + 1];
    char id[ES_MAX_ID_LEN + 1];
    int step;
    char kind[8];
    char status[12];
    char aggregate_type[ES_MAX_TYPE_LEN + 1];
    char aggregate_id[ES_MAX_ID_LEN + 1];
    char command_type[256];
} saga_target;

/* A coordinator's transitions alone, on db (the caller's; the saga tables are created): no
 * runner, engine, relay or publication. Events go in through es_saga_redeliver, command
 * outcomes through es_saga_record_outcome, deadlines fire with es_saga_fire_deadlines, and
 * clock (NULL: es_now_us) tells them the time. What the test kit (testing_saga.c) runs.
 * Free with es_saga_destroy (db stays open). */
es_err es_saga_core_new(const es_config_t *cfg, const es_saga_def *def, sqlite3 *db,
                        int64_t (*clock)(void *opaque), void *clock_opaque, es_saga_t **out,
                        es_error_t *err);

/* Brings the tables of a database from before them up to date: the trace columns of
 * es_saga_targets, the index of ended instances (es_saga_instances_ended had an IN list). */
es_err es_saga_upgrade(sqlite3 *db, const char *path, es_error_t *err);

/* The span the transitions of in now being written carry (saga.c). */
const es_trace_t *es_saga_span(es_saga_t *c, const saga_inst *in);

/* The time of a transition: the coordinator's clock. */
int64_t es_saga_now(const es_saga_t *c);

/* The descriptor of a command some step (or the abort) of the definition sends, by name. */
const ProtobufCMessageDescriptor *es_saga_command_desc(const es_saga_t *c, const char *name);

/* Records the outcome r of the delivered command cid and what it means for its instance
 * (saga_relay.c), inside a transaction. */
es_err es_saga_record_outcome(es_saga_t *c, const char *cid, const es_result_t *r, int64_t now,
                              es_error_t *err);

/* The saga database's last SQLite error, as sql.c words it. */
es_err es_saga_db_fail(es_saga_t *c, const char *what, es_error_t *err);

/* The cached statement k, reset and bound to the saga name as ?1. */
sqlite3_stmt *es_saga_stmt(es_saga_t *c, int k);

/* Steps s to its end and resets it; what names the work in an error. */
es_err es_saga_step_done(es_saga_t *c, sqlite3_stmt *s, const char *what, es_error_t *err);

/* Copies a column's text into dst (cap bytes), "" for NULL, truncating. */
void es_saga_copy_str(char *dst, size_t cap, const unsigned char *src);

/* Step k of the definition; NULL past the last (the abort command's index). */
const es_saga_step_t *es_saga_step_at(const es_saga_t *c, int k);

/* Frees what an instance owns (nothing of a borrowed copy) and zeroes in. */
void es_saga_inst_free(saga_inst *in);

/* Loads instance id, from the live instances when kept there; ES_ENOTFOUND when there is none.
 * Release it with es_saga_inst_release. */
es_err es_saga_inst_load(es_saga_t *c, const char *id, saga_inst *in, es_error_t *err);

/* Writes in back, stamped updated at now, notes its move from in->saved to in->state for the
 * counts by state (es_saga_count_move) and keeps it among the live instances (or drops it
 * there, ended). After a save in may only be released. */
es_err es_saga_inst_save(es_saga_t *c, saga_inst *in, int64_t now, es_error_t *err);

/* Done with in, loaded or made by a handling: returns a borrowed copy, frees an owned one. */
void es_saga_inst_release(es_saga_t *c, saga_inst *in);

/* The live instances in memory (saga_live.c): open after the statements are prepared (nothing
 * kept when cache.aggregates is 0), close before saga.db is. lend copies a kept instance into
 * in (1; 0 when none is kept or the memory cannot be used now); keep takes in as saga.db holds
 * it in the open transaction (loaded or just saved); return ends a lend; forget makes the whole
 * memory stale (a transaction, or a handling's savepoint, may have been undone). */
typedef struct saga_live saga_live;
es_err es_saga_live_open(es_saga_t *c, es_error_t *err);
void es_saga_live_close(es_saga_t *c);
int es_saga_live_lend(es_saga_t *c, const char *id, saga_inst *in);
void es_saga_live_keep(es_saga_t *c, saga_inst *in);
void es_saga_live_return(es_saga_t *c, const saga_inst *in);
void es_saga_live_forget(es_saga_t *c);

/* Whatever the coordinator keeps in memory beside saga.db (transitions to publish, counts by
 * state, live instances) after a transaction or a handling's savepoint failed or may have. */
void es_saga_rolled_back(es_saga_t *c);

/* Appends one transition of in to the history (published to the log after commit). */
es_err es_saga_hist(es_saga_t *c, saga_inst *in, const char *kind, const hist_info *h, int64_t now,
                    es_error_t *err);

/* Moves in to compensating for reason and sends the compensations from step k down. */
es_err es_saga_begin_compensation(es_saga_t *c, saga_inst *in, int k, const char *reason,
                                  int64_t now, es_error_t *err);

/* Loads the target of command cid; ES_ENOTFOUND when this saga did not send it. */
es_err es_saga_target_load(es_saga_t *c, const char *cid, saga_target *t, es_error_t *err);

/* Target t of in reached an end (ok: it did what it was for; ev: the event that ended it, NULL
 * for a command's outcome) and moves in on as that means. */
es_err es_saga_target_ended(es_saga_t *c, saga_inst *in, const saga_target *t, int ok,
                            const char *reason, const es_event_t *ev, int64_t now, es_error_t *err);

/* The correlation id of an instance's commands and transitions (saga.c says how it is chosen). */
const char *es_saga_correlation_of(const es_event_t *start, const char *id);

/* A transaction on the saga database outside the runner's (relay, deadlines, publish, prune). */
es_err es_saga_tx_begin(es_saga_t *c, es_error_t *err);

/* Commits when e is ES_OK, else rolls back; returns e or the commit's error. */
es_err es_saga_tx_end(es_saga_t *c, es_err e, es_error_t *err);

/* Times out the running steps whose deadline passed (saga_deadline.c); *fired: how many. */
es_err es_saga_fire_deadlines(es_saga_t *c, size_t *fired, es_error_t *err);

/* Delivers a batch of the outbox through the engine and records the outcomes (saga_relay.c). */
es_err es_saga_relay(es_saga_t *c, size_t *delivered, es_error_t *err);

/* Keeps the transition just written to es_saga_history for the next publication, taking buf
 * (freed when the memory is not in use). */
void es_saga_pub_note(es_saga_t *c, const saga_inst *in, uint64_t seq, uint8_t *buf, size_t len,
                      int64_t at, const es_trace_t *span, const char *traceparent);

/* Forgets the kept transitions: a write failed or was rolled back, so es_saga_history is read
 * back until it is drained again. */
void es_saga_pub_drop(es_saga_t *c);

/* Appends a batch of es_saga_history to "<saga>.saga.events" and deletes what got there
 * (saga_publish.c). */
es_err es_saga_publish(es_saga_t *c, size_t *published, es_error_t *err);

/* Applies saga.retention.ms when due (saga_retention.c); *pruned: instances deleted. */
es_err es_saga_prune(es_saga_t *c, size_t *pruned, es_error_t *err);

/* The coordinator's metrics (saga_metrics.c), on its thread: open registers them (nothing when
 * metrics.enabled is false), round measures after a round (saga.db when changed, or once a
 * second), close leaves the registry first. */
es_err es_saga_mx_open(es_saga_t *c, es_error_t *err);
void es_saga_mx_round(es_saga_t *c, int changed);
void es_saga_mx_close(es_saga_t *c);
/* The instances by state (es_saga_stats, es_saga_active, the metrics), whatever the metrics:
 * open prepares their queries; take fills n (rows and pruned ones, by SAGA_* index) from the
 * last count and the moves since, counting again first when a transaction rolled back or
 * (at most once a second) another connection committed; a failed count keeps the last one
 * and says so. Call take between transactions, when every move noted is known to commit. */
es_err es_saga_counts_open(es_saga_t *c, es_error_t *err);
es_err es_saga_counts_take(es_saga_t *c, int64_t n[SAGA_STATES], es_error_t *err);
void es_saga_counts_close(es_saga_t *c);
/* An instance written from state from ("": a new one) to state to, in a transaction not yet
 * known to commit: the counts take it at the next take, unless es_saga_count_undo was called
 * before it. */
void es_saga_count_move(es_saga_t *c, const char *from, const char *to);
/* A transaction of the saga database rolled back, or may have: the next take counts the
 * instances by state again rather than trust the moves noted since the last one. */
void es_saga_count_undo(es_saga_t *c);

#endif
