/*
 * The projector runner's insides, shared by its files: runner.c (open, poll, run, stop, the
 * read model's schema), apply.c (the batch applier: one read-model transaction of records,
 * applied, retried or parked, with their checkpoints) and watchdog.c (the apply watchdog).
 * runner_new.c composes them with replay.c into the public es_runner_new.
 */
#ifndef ESKIT_RUNNER_INT_H
#define ESKIT_RUNNER_INT_H

#include "projector_int.h"

#include "lru.h"
#include "runloop.h"

#include <pthread.h>

/* The applier's prepared statements (apply.c: runner_sql). */
enum {
    R_CKPT_GET,
    R_CKPT_PUT,
    R_SAVEPOINT,
    R_RELEASE,
    R_ROLLBACK_TO,
    R_PARK,
    R_VER_GET,
    R_VER_PUT,
    R_COUNT
};

/* The apply watchdog (projector.apply.timeout.ms). A C function cannot be stopped from
 * outside, and the thread stuck in one holds the read model's transaction and the
 * projector's lock, so the one way out is ending the process: the watchdog thread marks the
 * guard and kills the process with SIGKILL, the crash guard counts the death at the restart,
 * and after projector.crash.restarts of them the event is parked. The apply thread publishes
 * what it applies in atomics; since_us is 0 between applies. */
typedef struct watchdog {
    int on;
    int64_t timeout_ms; /* 0: off */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int quit;          /* under mu */
    int64_t since_us;  /* monotonic start of the running apply, 0: none (atomic) */
    const char *topic; /* of the running apply (atomic); the runner's own strings */
    int32_t partition; /* (atomic) */
    int64_t offset;    /* (atomic) */
    unsigned deaths;   /* counted on this event before it (atomic) */
} watchdog;

/* The failure that ended an optimistic pass, replayed as attempt 1 of the careful pass. */
typedef struct failed_apply {
    int valid;
    char topic[ES_MAX_TYPE_LEN + 16];
    int32_t partition;
    int64_t offset;
    es_err code;
    es_error_t err;
} failed_apply;

struct es_runner {
    es_config_t *cfg;
    const es_projector_def *def;
    es_log_t *log;
    sqlite3 *db;
    char *rm_path;
    rm_mode mode;
    sqlite3_stmt *st[R_COUNT];
    es_projector_ctx_t ctx;
    int inited; /* def->init ran: fini is due */
    es_topic_pos_t *pos;
    size_t n_pos;
    int64_t *seen; /* positions as of the last commit: cheap "anything new?" checks */
    char log_id[64];
    int64_t last_batch_ms; /* when the last batch committed */
    int lock_fd;
    es_guard_t *guard;
    char *drop_guard; /* the guard's path when it is removed at the end if idle */
    size_t batch_size;
    int linger_ms, retries, backoff_ms, restarts;
    int stop_on_error, ignore_unknown;
    es_stop_t stop; /* es_runner_stop: no event is started after it */
    watchdog wd;
    es_park_cb *park_cb;
    void *park_opaque;
    es_runner_stats_t stats;
    /* per batch */
    es_runner_stats_t batch; /* counted into stats when the batch commits */
    int careful;             /* events under savepoints: a failure was seen in this batch */
    int redo;                /* the optimistic pass hit a failure: roll back, redo carefully */
    failed_apply failed;
    int log_order;        /* skip events not after their aggregate's last one (Kafka) */
    int order_bypass;     /* a redrive applies what the operator asked for */
    int stale_now;        /* the record just handled was stale */
    es_lru_t *versions;   /* last version per aggregate, mirrors es_versions in this batch */
    es_pb_arena_t *arena; /* the record being applied: its event and payload, reset after it */
    es_err fatal;
    es_error_t fatal_err;
    size_t consumed, parked_in_batch;
    /* the record a stop came before: handed back to the log, not consumed */
    int halted;
    es_raw_record_t halted_at;
    const char *noun, *key; /* what messages call the database, and its config key */
    struct runner_mx *mx;   /* metrics of a live runner (runner_metrics.c); NULL: none */
};

/* The read model's last SQLite error, as sql.c words it, naming the projector (apply.c). */
es_err es_runner_sql_err(es_runner_t *r, const char *what, es_error_t *err);
/* Reads the committed checkpoints into r->pos, outside a batch (apply.c). */
es_err es_runner_checkpoints(es_runner_t *r, es_error_t *err);
/* Prepares the applier's statements on r->db (apply.c). */
es_err es_apply_prepare(es_runner_t *r, es_error_t *err);

/* The apply watchdog (watchdog.c): a thread that ends the process when one apply runs longer
 * than projector.apply.timeout.ms. start sets w->on; begin marks an apply's start, end its
 * end (from the applying thread); stop joins the thread (no-op when it never started). */
es_err es_watch_start(es_runner_t *r, es_error_t *err);
void es_watch_begin(watchdog *w, const es_raw_record_t *rec);
void es_watch_end(watchdog *w);
void es_watch_stop(watchdog *w);

/* A live runner's metrics (runner_metrics.c), on the runner's thread: open registers them
 * (nothing when metrics.enabled is false), start reads the clock before a batch (0 when off),
 * batch measures the batch that just committed, close leaves the registry first. */
es_err es_runner_mx_open(es_runner_t *r, es_error_t *err);
int64_t es_runner_mx_start(const es_runner_t *r);
void es_runner_mx_batch(es_runner_t *r, int64_t started_ns, size_t consumed);
void es_runner_mx_close(es_runner_t *r);

#endif
