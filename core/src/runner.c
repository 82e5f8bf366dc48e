/*
 * es_runner_t: one projector kept up to date with the log. A batch is one
 * read-model transaction: checkpoints are read inside it, records are applied
 * (each under a savepoint) or parked, and the new checkpoints are written in
 * it, so what is committed is always "the log up to the checkpoints".
 */
#include "projector_int.h"

#include "logorder.h"
#include "lru.h"
#include "readpipe.h"
#include "runloop.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

static const char *const runner_sql[R_COUNT] = {
    [R_VER_GET] = "SELECT version FROM es_versions WHERE projector = ?1 AND aggregate_type = ?2 "
                  "AND aggregate_id = ?3",
    [R_VER_PUT] = "INSERT INTO es_versions(projector, aggregate_type, aggregate_id, version) "
                  "VALUES (?1, ?2, ?3, ?4) ON CONFLICT(projector, aggregate_type, aggregate_id) "
                  "DO UPDATE SET version = excluded.version",
    [R_CKPT_GET] = "SELECT next_offset FROM es_checkpoints WHERE projector = ?1 AND topic = ?2 "
                   "AND partition = ?3",
    [R_CKPT_PUT] = "INSERT INTO es_checkpoints(projector, topic, partition, next_offset, "
                   "updated_at) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(projector, topic, "
                   "partition) DO UPDATE SET next_offset = excluded.next_offset, "
                   "updated_at = excluded.updated_at",
    [R_SAVEPOINT] = "SAVEPOINT es_event",
    [R_RELEASE] = "RELEASE es_event",
    [R_ROLLBACK_TO] = "ROLLBACK TO es_event",
    [R_PARK] = "INSERT INTO es_dlq(projector, topic, partition, offset, key, event_type, code, "
               "error, attempts, parked_at, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
               "?10, ?11) ON CONFLICT(projector, topic, partition, offset) DO UPDATE SET "
               "event_type = excluded.event_type, code = excluded.code, error = excluded.error, "
               "attempts = es_dlq.attempts + excluded.attempts, parked_at = excluded.parked_at, "
               "redriven_at = NULL, published = 0",
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
    int log_order;      /* skip events not after their aggregate's last one (Kafka) */
    int order_bypass;   /* a redrive applies what the operator asked for */
    int stale_now;      /* the record just handled was stale */
    es_lru_t *versions; /* last version per aggregate, mirrors es_versions in this batch */
    es_err fatal;
    es_error_t fatal_err;
    size_t consumed, parked_in_batch;
    /* the record a stop came before: handed back to the log, not consumed */
    int halted;
    es_raw_record_t halted_at;
    const char *noun, *key; /* what messages call the database, and its config key */
};

/* The read model's last SQLite error, as sql.c words it. */
static es_err sql_err(es_runner_t *r, const char *what, es_error_t *err) {
    char doing[ES_PROJECTOR_NAME_MAX + 96];
    snprintf(doing, sizeof doing, "projector '%s': %s", r->def->name, what);
    return es_sql_fail_file(r->db, sqlite3_extended_errcode(r->db), r->rm_path, doing, err);
}

static es_err run_stmt(es_runner_t *r, int which, const char *what, es_error_t *err) {
    sqlite3_stmt *s = r->st[which];
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? ES_OK : sql_err(r, what, err);
}

static es_err load_positions(es_runner_t *r, es_error_t *err) {
    sqlite3_stmt *s = r->st[R_CKPT_GET];
    for (size_t i = 0; i < r->n_pos; i++) {
        sqlite3_bind_text(s, 1, r->def->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, r->pos[i].topic, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 3, r->pos[i].partition);
        int rc = sqlite3_step(s);
        r->pos[i].offset = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
        sqlite3_reset(s);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            return sql_err(r, "reading checkpoints", err);
    }
    return ES_OK;
}

static es_err store_positions(es_runner_t *r, const int64_t *before, es_error_t *err) {
    sqlite3_stmt *s = r->st[R_CKPT_PUT];
    int64_t now = es_now_us();
    for (size_t i = 0; i < r->n_pos; i++) {
        if (r->pos[i].offset == before[i])
            continue;
        sqlite3_bind_text(s, 1, r->def->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, r->pos[i].topic, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 3, r->pos[i].partition);
        sqlite3_bind_int64(s, 4, r->pos[i].offset);
        sqlite3_bind_int64(s, 5, now);
        es_err e = run_stmt(r, R_CKPT_PUT, "writing a checkpoint", err);
        if (e != ES_OK)
            return e;
    }
    return ES_OK;
}

/* Parks a record in es_dlq (inside the batch's transaction) and tells the park callback. */
static es_err park(es_runner_t *r, const es_raw_record_t *rec, const char *event_type, es_err code,
                   const char *why, int attempts, es_error_t *err) {
    sqlite3_stmt *s = r->st[R_PARK];
    int64_t now = es_now_us();
    sqlite3_bind_text(s, 1, r->def->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, rec->topic, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 3, rec->partition);
    sqlite3_bind_int64(s, 4, rec->offset);
    sqlite3_bind_text(s, 5, rec->key, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 6, event_type && *event_type ? event_type : NULL, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 7, (int)code);
    sqlite3_bind_text(s, 8, why, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 9, attempts);
    sqlite3_bind_int64(s, 10, now);
    sqlite3_bind_blob(s, 11, rec->value ? (const void *)rec->value : "", (int)rec->len,
                      SQLITE_STATIC);
    es_err e = run_stmt(r, R_PARK, "parking an event", err);
    if (e != ES_OK)
        return e;
    r->batch.parked++;
    r->parked_in_batch++;
    if (r->park_cb) {
        es_dlq_entry_t d = {.id = sqlite3_last_insert_rowid(r->db),
                            .partition = rec->partition,
                            .offset = rec->offset,
                            .code = (int)code,
                            .attempts = attempts,
                            .parked_at_us = now};
        snprintf(d.projector, sizeof d.projector, "%s", r->def->name);
        snprintf(d.topic, sizeof d.topic, "%s", rec->topic);
        snprintf(d.key, sizeof d.key, "%s", rec->key ? rec->key : "");
        snprintf(d.event_type, sizeof d.event_type, "%s", event_type ? event_type : "");
        snprintf(d.error, sizeof d.error, "%s", why);
        r->park_cb(&d, r->park_opaque);
    }
    return ES_OK;
}

static int64_t mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void watch_begin(watchdog *w, const es_raw_record_t *rec) {
    __atomic_store_n(&w->topic, rec->topic, __ATOMIC_RELAXED);
    __atomic_store_n(&w->partition, rec->partition, __ATOMIC_RELAXED);
    __atomic_store_n(&w->offset, rec->offset, __ATOMIC_RELAXED);
    __atomic_store_n(&w->since_us, mono_us(), __ATOMIC_RELEASE);
}

/* How long the log callback has to tell of the watchdog's kill before the kill comes anyway. */
#define WATCH_LOG_GRACE_S 1

/* Arms a kill that needs nothing of the process: a kernel timer sends SIGKILL in
 * WATCH_LOG_GRACE_S, so a log callback that blocks (on a lock the stuck thread holds, on a full
 * stderr pipe) cannot keep a stuck process alive. 1 when armed. */
static int arm_kill(void) {
    struct sigevent ev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGKILL};
    struct itimerspec at = {.it_value = {.tv_sec = WATCH_LOG_GRACE_S}};
    timer_t t;
    return timer_create(CLOCK_MONOTONIC, &ev, &t) == 0 && timer_settime(t, 0, &at, NULL) == 0;
}

/* The apply has run too long: the guard counts it as a death, a kill is armed, the config's
 * log callback is told (a critical line, on this thread; not when no kill could be armed: then
 * nothing may stand between the watchdog and its kill), and the process ends. */
static void watch_expired(es_runner_t *r, int64_t since) {
    watchdog *w = &r->wd;
    const char *topic = __atomic_load_n(&w->topic, __ATOMIC_RELAXED);
    int32_t partition = __atomic_load_n(&w->partition, __ATOMIC_RELAXED);
    int64_t offset = __atomic_load_n(&w->offset, __ATOMIC_RELAXED);
    unsigned deaths = __atomic_load_n(&w->deaths, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&w->since_us, __ATOMIC_RELAXED) != since)
        return; /* it ended meanwhile: what was read may be the next apply's */
    if (r->guard)
        es_guard_timed_out(r->guard);
    if (arm_kill())
        es_logf(r->cfg, ES_LOG_CRITICAL,
                "projector '%s': applying %s/%d offset %lld ran longer than "
                "projector.apply.timeout.ms (%lld ms); the process is ended so that the crash "
                "guard counts it: death %u of the %d (projector.crash.restarts) after which a "
                "restart parks the event",
                r->def->name, topic, (int)partition, (long long)offset, (long long)w->timeout_ms,
                deaths + 1, r->restarts);
    kill(getpid(), SIGKILL);
    for (;;)
        pause();
}

static void *watch_main(void *arg) {
    es_runner_t *r = arg;
    watchdog *w = &r->wd;
    /* Checked four times per timeout, between 1 ms and 100 ms apart. */
    int64_t period = w->timeout_ms >= 400 ? 100000 : w->timeout_ms < 4 ? 1000 : w->timeout_ms * 250;
    pthread_mutex_lock(&w->mu);
    while (!w->quit) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = ts.tv_nsec + period * 1000;
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
        int64_t since = __atomic_load_n(&w->since_us, __ATOMIC_ACQUIRE);
        if (!w->quit && since && (mono_us() - since) / 1000 >= w->timeout_ms)
            watch_expired(r, since);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Starts the watchdog thread with every signal blocked, so that signals meant for the
 * process (an operator's Ctrl-C) reach the threads whose handlers expect them. */
static es_err watch_start(es_runner_t *r, es_error_t *err) {
    watchdog *w = &r->wd;
    pthread_condattr_t ca;
    int rc = pthread_condattr_init(&ca);
    if (rc == 0) {
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        rc = pthread_cond_init(&w->cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    if (rc == 0 && (rc = pthread_mutex_init(&w->mu, NULL)) != 0)
        pthread_cond_destroy(&w->cv);
    if (rc == 0) {
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        rc = pthread_create(&w->thread, NULL, watch_main, r);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rc != 0) {
            pthread_mutex_destroy(&w->mu);
            pthread_cond_destroy(&w->cv);
        }
    }
    if (rc != 0)
        return es_fail(err, ES_EIO,
                       "projector '%s': cannot start the apply watchdog "
                       "(projector.apply.timeout.ms): %s",
                       r->def->name, strerror(rc));
    w->on = 1;
    return ES_OK;
}

static void watch_stop(watchdog *w) {
    if (!w->on)
        return;
    pthread_mutex_lock(&w->mu);
    w->quit = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    w->on = 0;
}

/* One apply, under a savepoint when the batch is careful; the guard notes the event while the
 * module runs. A failure of the module fills aerr; one of our storage fills err, *storage. */
static es_err apply_once(es_runner_t *r, const es_raw_record_t *rec, const es_event_t *ev,
                         es_error_t *aerr, int *storage, es_error_t *err) {
    *storage = 1;
    es_err e = r->careful ? run_stmt(r, R_SAVEPOINT, "opening a savepoint", err) : ES_OK;
    if (e != ES_OK)
        return e;
    if (r->guard)
        es_guard_note(r->guard, rec->topic, rec->partition, rec->offset);
    if (r->wd.on)
        watch_begin(&r->wd, rec);
    aerr->code = ES_OK;
    aerr->message[0] = '\0';
    es_err rc = r->def->apply(&r->ctx, ev, aerr);
    if (r->wd.on)
        __atomic_store_n(&r->wd.since_us, 0, __ATOMIC_RELEASE);
    if (r->guard)
        es_guard_clear(r->guard);
    if (rc != ES_OK && !r->careful) {
        r->redo = 1; /* nothing to undo event by event: the whole batch is rolled back */
        r->failed = (failed_apply){1, "", rec->partition, rec->offset, rc, *aerr};
        snprintf(r->failed.topic, sizeof r->failed.topic, "%s", rec->topic);
        if (!r->failed.err.message[0])
            es_fail(&r->failed.err, rc, "apply returned %s", es_strerror(rc));
        r->failed.err.code = rc;
        *storage = 0;
        return rc;
    }
    if (rc != ES_OK) {
        e = run_stmt(r, R_ROLLBACK_TO, "rolling back a failed event", err);
        if (!aerr->message[0])
            es_fail(aerr, rc, "apply returned %s", es_strerror(rc));
        aerr->code = rc;
    }
    if (e == ES_OK && r->careful)
        e = run_stmt(r, R_RELEASE, "releasing a savepoint", err);
    if (e != ES_OK)
        return e;
    *storage = 0;
    if (rc != ES_OK)
        *err = *aerr;
    return rc;
}

static size_t version_key(const es_event_t *ev, char *key, size_t cap) {
    int n = snprintf(key, cap, "%s/%s", ev->aggregate_type, ev->aggregate_id);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* The last version the read model took of ev's aggregate (0: none): the read pipeline's
 * memory for the log-order rule. */
static es_err last_version(void *opaque, const es_event_t *ev, uint64_t *last, es_error_t *err) {
    es_runner_t *r = opaque;
    char key[ES_MAX_TYPE_LEN + ES_MAX_ID_LEN + 2];
    size_t klen = version_key(ev, key, sizeof key);
    uint64_t *hit = klen ? es_lru_get(r->versions, key, klen) : NULL;
    if (hit) {
        *last = *hit;
        return ES_OK;
    }
    sqlite3_stmt *s = r->st[R_VER_GET];
    sqlite3_bind_text(s, 1, r->def->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, ev->aggregate_type, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, ev->aggregate_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    *last = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? ES_OK : sql_err(r, "reading versions", err);
}

static es_err note_version(es_runner_t *r, const es_event_t *ev, es_error_t *err) {
    sqlite3_stmt *s = r->st[R_VER_PUT];
    sqlite3_bind_text(s, 1, r->def->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, ev->aggregate_type, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, ev->aggregate_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)ev->version);
    es_err e = run_stmt(r, R_VER_PUT, "writing versions", err);
    char key[ES_MAX_TYPE_LEN + ES_MAX_ID_LEN + 2];
    size_t klen = version_key(ev, key, sizeof key);
    uint64_t *v = e == ES_OK && klen ? malloc(sizeof *v) : NULL;
    if (v) {
        *v = ev->version;
        es_lru_put(r->versions, key, klen, v);
    }
    return e;
}

/* The log-order stage of the read pipeline (readpipe.h), in the reader's role: an event not
 * after its aggregate's last one is skipped and counted stale; a gap is applied, warned about
 * and counted. */
static es_err check_order(es_runner_t *r, const es_event_t *ev, const es_position_t *at,
                          int *storage, es_error_t *err) {
    r->stale_now = 0;
    if (!r->log_order || r->order_bypass)
        return ES_OK;
    es_order_counts met = {0};
    es_read_pipe pipe = {ES_ORDER_READER, r->cfg, last_version, r, &met};
    es_err rc = ES_OK;
    es_read_result res = es_read_order(&pipe, ev, at, &rc, err);
    if (res == ES_READ_FAILED) {
        *storage = 1;
        return rc;
    }
    r->stale_now = res == ES_READ_STALE;
    r->batch.gaps += met.gaps;
    return ES_OK;
}

static int first_pass_failed(const es_runner_t *r, const es_raw_record_t *rec) {
    return r->careful && r->failed.valid && r->failed.offset == rec->offset &&
           r->failed.partition == rec->partition && !strcmp(r->failed.topic, rec->topic);
}

static es_err apply_record(es_runner_t *r, const es_raw_record_t *rec, int *attempts,
                           char *event_type, size_t type_cap, int *storage, es_error_t *err) {
    es_position_t at = {rec->topic, rec->key, rec->partition, rec->offset};
    es_event_t *ev = NULL;
    es_err rc = ES_OK;
    *attempts = 0;
    *storage = 0;
    event_type[0] = '\0';
    if (es_read_decode(rec, &ev, &rc, err) != ES_READ_EVENT)
        return rc;
    snprintf(event_type, type_cap, "%s", ev->event_type);
    rc = check_order(r, ev, &at, storage, err);
    if (rc != ES_OK || r->stale_now) {
        es_event_free(ev);
        return rc;
    }
    for (;;) {
        es_error_t aerr;
        ++*attempts;
        if (*attempts == 1 && first_pass_failed(r, rec)) {
            /* The optimistic pass already made attempt 1: it counts, and a permanent failure
             * is not tried again. */
            rc = r->failed.code;
            *err = r->failed.err;
            r->failed.valid = 0;
        } else {
            rc = apply_once(r, rec, ev, &aerr, storage, err);
        }
        if (rc != ES_ERETRY || *storage || r->redo || *attempts > r->retries)
            break;
        r->batch.retries++;
        int wait = r->backoff_ms << (*attempts - 1 < 10 ? *attempts - 1 : 10);
        if (es_stop_sleep(&r->stop, wait > 10000 ? 10000 : wait)) {
            /* its failures were rolled back: the log gives it again after the stop */
            r->halted = 1;
            break;
        }
    }
    /* Applied or about to be parked or ignored: either way the aggregate moved past it. */
    if (r->log_order && !r->order_bypass && !*storage && !r->redo && !r->halted) {
        es_error_t verr;
        es_err ve = note_version(r, ev, &verr);
        if (ve != ES_OK) {
            *storage = 1;
            *err = verr;
            rc = ve;
        }
    }
    es_event_free(ev);
    return rc;
}

es_err es_runner_apply_record(es_runner_t *r, const es_raw_record_t *rec, int *attempts,
                              char *event_type, size_t type_cap, int *storage, es_error_t *err) {
    r->careful = 1; /* on its own: the failure is undone by the savepoint */
    r->redo = 0;
    r->halted = 0;
    r->failed.valid = 0;
    r->order_bypass = 1; /* the operator asked for this event, whatever came after it */
    if (r->wd.on) {
        unsigned deaths =
            r->guard ? es_guard_deaths(r->guard, rec->topic, rec->partition, rec->offset) : 0;
        __atomic_store_n(&r->wd.deaths, deaths, __ATOMIC_RELAXED);
    }
    return apply_record(r, rec, attempts, event_type, type_cap, storage, err);
}

/* The event type of a record the module is not given, for the DLQ entry. */
static void record_type(const es_raw_record_t *rec, char *out, size_t cap) {
    es_event_t *ev = NULL;
    if (es_envelope_decode(rec->value, rec->len, NULL, &ev, NULL) == ES_OK)
        snprintf(out, cap, "%s", ev->event_type);
    es_event_free(ev);
}

/* The verdict on one record: applied, ignored, parked, or a fatal stop of the batch. */
static int on_record(const es_raw_record_t *rec, void *opaque) {
    es_runner_t *r = opaque;
    char type[256] = "";
    int attempts = 0, storage = 0;
    es_error_t why = {0};
    es_err rc;
    /* A stop ends the batch before this record, which stays in the log. */
    if (es_stop_requested(&r->stop)) {
        r->halted = 1;
        r->halted_at = *rec;
        return 1;
    }
    r->consumed++;
    unsigned deaths =
        r->guard ? es_guard_deaths(r->guard, rec->topic, rec->partition, rec->offset) : 0;
    if (r->wd.on)
        __atomic_store_n(&r->wd.deaths, deaths, __ATOMIC_RELAXED);
    if (deaths >= (unsigned)r->restarts) {
        unsigned timeouts = es_guard_timeouts(r->guard, rec->topic, rec->partition, rec->offset);
        record_type(rec, type, sizeof type);
        if (timeouts == deaths)
            rc = es_fail(&why, ES_ETIMEOUT,
                         "applying this event ran longer than projector.apply.timeout.ms %u "
                         "times in a row, and the watchdog ended the process each time; parked "
                         "so projector '%s' can go on",
                         deaths, r->def->name);
        else
            rc = es_fail(&why, ES_EIO,
                         "the process died %u times in a row while applying this event (a "
                         "crash in projector '%s'?%s); parked so the projector can go on",
                         deaths, r->def->name, timeouts ? "; some were the apply watchdog's" : "");
        attempts = (int)deaths;
    } else {
        rc = apply_record(r, rec, &attempts, type, sizeof type, &storage, &why);
        if (r->redo)
            return 1;
        if (r->halted) { /* stopped between its retries */
            r->consumed--;
            r->halted_at = *rec;
            return 1;
        }
        if (rc == ES_OK && r->stale_now) {
            r->batch.stale++;
            return 0;
        }
        if (rc == ES_OK) {
            r->batch.applied++;
            return 0;
        }
        if (storage) {
            r->fatal = rc;
            r->fatal_err = why;
            return 1;
        }
        if (rc == ES_EUNKNOWN_TYPE && r->ignore_unknown) {
            r->batch.ignored++;
            return 0;
        }
    }
    if (!r->careful) { /* parking and stopping happen in the careful pass only */
        r->redo = 1;
        return 1;
    }
    if (r->stop_on_error) {
        r->fatal = ES_ESTATE;
        es_fail(&r->fatal_err, ES_ESTATE,
                "projector '%s' stopped (projector.on.error=stop) at %s/%d offset %lld%s%s: %s",
                r->def->name, rec->topic, (int)rec->partition, (long long)rec->offset,
                type[0] ? ", " : "", type, why.message);
        return 1;
    }
    es_err e = park(r, rec, type, rc, why.message, attempts ? attempts : 1, &r->fatal_err);
    if (e != ES_OK) {
        r->fatal = e;
        return 1;
    }
    return 0;
}

static int64_t now_ms(void) {
    return es_now_us() / 1000;
}

/* The log moved past the record the stop came before: it is read again next time. */
static void hand_back(es_runner_t *r) {
    for (size_t i = 0; i < r->n_pos; i++)
        if (r->pos[i].partition == r->halted_at.partition &&
            !strcmp(r->pos[i].topic, r->halted_at.topic) && r->pos[i].offset > r->halted_at.offset)
            r->pos[i].offset = r->halted_at.offset;
    r->halted = 0;
}

/* One pass of a batch inside an open transaction: fetch and apply up to max records. */
static es_err batch_pass(es_runner_t *r, size_t max, int linger, int64_t *before, es_error_t *err) {
    r->consumed = r->parked_in_batch = 0;
    r->fatal = ES_OK;
    r->redo = 0;
    r->halted = 0;
    if (!r->careful)
        r->failed.valid = 0;
    memset(&r->batch, 0, sizeof r->batch);
    es_err e = load_positions(r, err);
    for (size_t i = 0; i < r->n_pos; i++)
        before[i] = r->pos[i].offset;
    int64_t linger_end = now_ms() + (linger ? r->linger_ms : 0);
    while (e == ES_OK && r->consumed < max) {
        size_t had = r->consumed;
        e = r->log->ops->fetch(r->log, r->pos, r->n_pos, max - r->consumed, on_record, r, err);
        if (e == ES_OK && r->fatal != ES_OK) {
            e = es_fail(err, r->fatal, "%s", r->fatal_err.message);
        }
        if (e == ES_OK && r->halted)
            hand_back(r);
        if (e != ES_OK || r->redo || es_stop_requested(&r->stop) || r->consumed == max ||
            now_ms() >= linger_end)
            break;
        if (r->consumed == had)
            es_sleep_ms(1);
    }
    return e;
}

/* Events are applied without savepoints first, the common case being that none fails;
 * when one does, the batch is rolled back and redone with a savepoint per event, so the
 * failing event is retried or parked alone and the others applied. */
es_err es_runner_batch(es_runner_t *r, size_t max, int linger, size_t *consumed, es_error_t *err) {
    int64_t before[r->n_pos ? r->n_pos : 1];
    es_sql_tx tx = es_sql_tx_on(r->db, r->rm_path);
    es_sql_begin_kind begin = r->mode == RM_BULK ? ES_SQL_DEFERRED : ES_SQL_IMMEDIATE;
    *consumed = 0;
    es_err e = ES_OK;
    for (r->careful = 0; e == ES_OK; r->careful = 1) {
        e = es_sql_begin(&tx, begin, "starting a batch", err);
        if (e != ES_OK)
            return e;
        e = batch_pass(r, max, linger, before, err);
        if (e != ES_OK || !r->redo)
            break;
        es_sql_rollback(&tx);
        es_lru_clear(r->versions);
        max = r->consumed; /* the same records, now event by event */
        linger = 0;
    }
    if (e == ES_OK)
        e = store_positions(r, before, err);
    e = es_sql_end(&tx, e, "committing a batch", err);
    if (e != ES_OK) {
        es_lru_clear(r->versions);
        return e;
    }
    if (r->mode == RM_LIVE && r->log->ops->commit_positions) {
        char group[256];
        es_error_t cerr;
        es_rm_group(r->cfg, r->def->name, group, sizeof group);
        if (r->log->ops->commit_positions(r->log, group, r->pos, r->n_pos, &cerr) != ES_OK)
            es_logf(r->cfg, ES_LOG_WARNING, "projector '%s': positions not committed to %s: %s",
                    r->def->name, group, cerr.message);
    }
    r->stats.applied += r->batch.applied;
    r->stats.parked += r->batch.parked;
    r->stats.ignored += r->batch.ignored;
    r->stats.retries += r->batch.retries;
    r->stats.stale += r->batch.stale;
    r->stats.gaps += r->batch.gaps;
    r->stats.batches++;
    r->last_batch_ms = now_ms();
    *consumed = r->consumed;
    for (size_t i = 0; i < r->n_pos; i++)
        r->seen[i] = r->pos[i].offset;
    if (r->guard)
        es_guard_passed(r->guard, r->pos, r->n_pos);
    if (r->parked_in_batch && r->mode == RM_LIVE) {
        es_error_t perr;
        if (es_rm_publish_dlq(r->db, r->log, r->cfg, r->def->name, &perr) != ES_OK)
            es_logf(r->cfg, 4, "projector '%s': dead letters not sent yet: %s", r->def->name,
                    perr.message);
    }
    return ES_OK;
}

/* Is there anything past the positions of the last commit? Cheap: no read-model write. */
/* Whether a batch is worth a read-model transaction. At least once a second it is anyway, so
 * a log that answers from a local cache (Kafka) still reports a broker gone away. */
static int log_has_more(es_runner_t *r) {
    if (now_ms() - r->last_batch_ms >= 1000)
        return 1;
    es_topic_pos_t at[r->n_pos ? r->n_pos : 1];
    for (size_t i = 0; i < r->n_pos; i++)
        at[i] = (es_topic_pos_t){r->pos[i].topic, r->pos[i].partition, r->seen[i]};
    return !r->log->ops->has_records || r->log->ops->has_records(r->log, at, r->n_pos);
}

es_err es_runner_poll(es_runner_t *r, int timeout_ms, size_t *applied, es_error_t *err) {
    int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    size_t n = 0;
    es_err e = ES_OK;
    for (int wait = 1; !es_stop_requested(&r->stop); wait = wait < 50 ? wait * 2 : 50) {
        if (log_has_more(r)) {
            int remaining = (int)(deadline - now_ms());
            if (r->lock_fd >= 0 && !es_rm_lock(r->lock_fd, remaining > 0 ? remaining : 0))
                break; /* a replay holds the read model; try again later */
            e = es_runner_batch(r, r->batch_size, 1, &n, err);
            if (r->lock_fd >= 0)
                es_rm_unlock(r->lock_fd);
            if (e != ES_OK || n > 0)
                break;
        }
        int64_t left = deadline - now_ms();
        if (left <= 0 || es_stop_requested(&r->stop))
            break;
        es_sleep_ms(wait < left ? wait : (int)left);
    }
    if (applied)
        *applied = n;
    if (e != ES_OK) {
        char subject[ES_PROJECTOR_NAME_MAX + 16];
        snprintf(subject, sizeof subject, "projector '%s': ", r->def->name);
        es_error_subject(err, subject);
    }
    return e;
}

static es_err poll_once(void *opaque, int timeout_ms, es_error_t *err) {
    return es_runner_poll(opaque, timeout_ms, NULL, err);
}

es_err es_runner_run(es_runner_t *r, es_error_t *err) {
    char subject[ES_PROJECTOR_NAME_MAX + 16];
    snprintf(subject, sizeof subject, "projector '%s': ", r->def->name);
    es_err e = es_run_loop(poll_once, r, &r->stop, r->cfg, subject, err);
    es_runner_resume(r);
    return e;
}

void es_runner_resume(es_runner_t *r) {
    es_stop_clear(&r->stop);
    if (r->guard)
        es_guard_stopping(r->guard, 0);
}

/* Async-signal-safe and safe from any thread: stores to two lock-free atomics (the stop, and
 * the flag on the guard's mapped page). */
void es_runner_stop(es_runner_t *r) {
    es_stop_request(&r->stop);
    if (r->guard)
        es_guard_stopping(r->guard, 1);
}

int es_runner_stopping(const es_runner_t *r) {
    return es_stop_requested(&r->stop);
}

void es_runner_stats(const es_runner_t *r, es_runner_stats_t *out) {
    *out = r->stats;
}

void es_runner_set_park_cb(es_runner_t *r, es_park_cb *cb, void *opaque) {
    r->park_cb = cb;
    r->park_opaque = opaque;
}

void es_runner_set_state(es_runner_t *r, void *state) {
    r->ctx.state = state;
}

sqlite3 *es_runner_db(es_runner_t *r) {
    return r->db;
}

es_log_t *es_runner_log(es_runner_t *r) {
    return r->log;
}

int es_runner_lock_fd(es_runner_t *r) {
    return r->lock_fd;
}

es_err es_runner_backlog(es_runner_t *r, uint64_t *n, es_error_t *err) {
    es_sql_tx tx = es_sql_tx_on(r->db, r->rm_path);
    es_err e = es_sql_begin(&tx, ES_SQL_DEFERRED, "reading checkpoints", err);
    if (e == ES_OK)
        e = es_sql_end(&tx, load_positions(r, err), "reading checkpoints", err);
    *n = 0;
    for (size_t i = 0; e == ES_OK && i < r->n_pos; i++) {
        int64_t end;
        uint64_t count;
        e = r->log->ops->topic_end(r->log, r->pos[i].topic, r->pos[i].partition, r->pos[i].offset,
                                   &end, &count, err);
        *n += count;
    }
    return e;
}

void es_runner_destroy(es_runner_t *r) {
    if (!r)
        return;
    watch_stop(&r->wd);
    if (r->inited && r->def->fini)
        r->def->fini(r->ctx.state);
    es_ctx_clear(&r->ctx);
    es_lru_destroy(r->versions);
    for (int i = 0; i < R_COUNT; i++)
        sqlite3_finalize(r->st[i]);
    sqlite3_close(r->db);
    if (r->log)
        r->log->ops->destroy(r->log);
    if (r->lock_fd >= 0)
        close(r->lock_fd);
    if (r->guard && r->drop_guard && es_guard_idle(r->guard))
        unlink(r->drop_guard);
    es_guard_close(r->guard);
    free(r->drop_guard);
    free(r->pos);
    free(r->seen);
    free(r->rm_path);
    es_config_destroy(r->cfg);
    free(r);
}

static es_err make_positions(es_runner_t *r, es_error_t *err) {
    size_t n = 0;
    for (size_t t = 0; r->def->topics[t]; t++) {
        int32_t parts = 0;
        es_err e = r->log->ops->partitions(r->log, r->def->topics[t], &parts, err);
        if (e != ES_OK)
            return e;
        void *p = realloc(r->pos, (n + (size_t)parts) * sizeof *r->pos);
        if (!p)
            return es_fail(err, ES_ENOMEM, "out of memory");
        r->pos = p;
        for (int32_t i = 0; i < parts; i++)
            r->pos[n++] = (es_topic_pos_t){r->def->topics[t], i, 0};
    }
    r->n_pos = n;
    r->seen = calloc(n ? n : 1, sizeof *r->seen);
    return r->seen ? ES_OK : es_fail(err, ES_ENOMEM, "out of memory");
}

/* Names of the module's own tables: what exists now minus what existed before migrate. */
static es_err table_names(sqlite3 *db, char **out, es_error_t *err) {
    sqlite3_stmt *s = NULL;
    es_buf_t b = {0};
    es_err e = es_sql_prepare(db, NULL,
                              "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT "
                              "LIKE 'es\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE "
                              "'\\' ORDER BY name",
                              &s, err);
    while (e == ES_OK && sqlite3_step(s) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(s, 0);
        size_t len = strlen(name);
        if (es_buf_reserve(&b, len + 2) != ES_OK) {
            e = es_fail(err, ES_ENOMEM, "out of memory");
            break;
        }
        memcpy(b.data + b.len, name, len);
        b.len += len;
        b.data[b.len++] = ' ';
    }
    sqlite3_finalize(s);
    if (e == ES_OK && es_buf_reserve(&b, 1) != ES_OK)
        e = es_fail(err, ES_ENOMEM, "out of memory");
    if (e != ES_OK) {
        es_buf_free(&b);
        return e;
    }
    b.data[b.len] = '\0';
    *out = (char *)b.data;
    return ES_OK;
}

/* Words of after that are not in before, space-separated. */
static char *new_words(const char *before, const char *after) {
    char *out = calloc(1, strlen(after) + 1), *w = out;
    for (const char *p = after; out && *p;) {
        size_t len = strcspn(p, " ");
        int found = 0;
        for (const char *q = before; *q && !found;) {
            size_t ql = strcspn(q, " ");
            found = ql == len && !strncmp(p, q, len);
            q += ql + (q[ql] == ' ');
        }
        if (!found && len) {
            memcpy(w, p, len);
            w += len;
            *w++ = ' ';
        }
        p += len + (p[len] == ' ');
    }
    return out;
}

static es_err create_model(es_runner_t *r, es_error_t *err) {
    char *before = NULL, *after = NULL, *owned = NULL, topics[1024] = "";
    char what[64];
    snprintf(what, sizeof what, "creating the %s", r->noun);
    es_sql_tx tx = es_sql_tx_on(r->db, r->rm_path);
    es_err e = es_sql_begin(&tx, ES_SQL_IMMEDIATE, what, err);
    if (e != ES_OK)
        return e;
    e = table_names(r->db, &before, err);
    if (e == ES_OK) {
        e = r->def->migrate(r->db, 0, err);
        if (e != ES_OK)
            es_error_prefix(err, "projector '%s': migrate from 0 to %d: ", r->def->name,
                            r->def->schema_version);
    }
    if (e == ES_OK)
        e = table_names(r->db, &after, err);
    if (e == ES_OK && !(owned = new_words(before, after)))
        e = es_fail(err, ES_ENOMEM, "out of memory");
    for (size_t i = 0; r->def->topics[i]; i++)
        snprintf(topics + strlen(topics), sizeof topics - strlen(topics), "%s%s", i ? " " : "",
                 r->def->topics[i]);
    sqlite3_stmt *s = NULL;
    if (e == ES_OK)
        e = es_sql_prepare(r->db, r->rm_path,
                           "INSERT OR REPLACE INTO es_projectors(name, schema_version, tables, "
                           "topics, log_id, built_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                           &s, err);
    if (e == ES_OK) {
        sqlite3_bind_text(s, 1, r->def->name, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 2, r->def->schema_version);
        sqlite3_bind_text(s, 3, owned, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 4, topics, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 5, r->log_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 6, es_now_us());
        if (sqlite3_step(s) != SQLITE_DONE)
            e = sql_err(r, "registering the projector", err);
    }
    sqlite3_finalize(s);
    e = es_sql_end(&tx, e, what, err);
    free(before);
    free(after);
    free(owned);
    return e;
}

/* The schema version the read model holds for def (0: none yet), checking it was built from
 * this log: a model of another log would silently skip or misapply events. */
static es_err stored_version(es_runner_t *r, int *version, es_error_t *err) {
    sqlite3_stmt *s = NULL;
    *version = 0;
    es_err e =
        es_sql_prepare(r->db, r->rm_path,
                       "SELECT schema_version, log_id FROM es_projectors WHERE name = ?1", &s, err);
    if (e == ES_OK) {
        sqlite3_bind_text(s, 1, r->def->name, -1, SQLITE_STATIC);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW)
            *version = sqlite3_column_int(s, 0);
        else if (rc != SQLITE_DONE)
            e = sql_err(r, "reading the projector registry", err);
        const char *log_id = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(s, 1) : NULL;
        if (log_id && strcmp(log_id, r->log_id))
            e = es_fail(err, ES_ESTATE,
                        "projector '%s': the %s %s was built from another event log "
                        "(log id %s; %s has %s); rebuild it with esctl replay %s or point "
                        "%s at this log's %s",
                        r->def->name, r->noun, r->rm_path, log_id, es_config_get(r->cfg, "db"),
                        r->log_id, r->def->name, r->key, r->noun);
    }
    sqlite3_finalize(s);
    return e;
}

static es_err read_policy(es_runner_t *r, const runner_opts *o) {
    const es_config_t *c = r->cfg;
    r->batch_size =
        o->batch_size ? o->batch_size : (size_t)es_config_get_int(c, "projector.batch.size");
    r->linger_ms = (int)es_config_get_int(c, "projector.linger.ms");
    r->retries = (int)es_config_get_int(c, "projector.retries");
    r->backoff_ms = (int)es_config_get_int(c, "projector.retry.backoff.ms");
    r->restarts = (int)es_config_get_int(c, "projector.crash.restarts");
    r->wd.timeout_ms = es_config_get_int(c, "projector.apply.timeout.ms");
    r->stop_on_error = !strcmp(es_config_get(c, "projector.on.error"), "stop");
    r->ignore_unknown = !strcmp(es_config_get(c, "projector.on.unknown"), "ignore");
    const char *order = es_config_get(c, "projector.log.order");
    r->log_order = !strcmp(order, "on") ||
                   (!strcmp(order, "auto") && !strcmp(es_config_get(c, "backend"), "kafka"));
    return ES_OK;
}

/* Opens the read model, takes the lock, counts a crash, creates or checks the schema. */
static es_err open_model(es_runner_t *r, const runner_opts *o, int *rebuild, es_error_t *err) {
    es_err e = es_rm_open_as(r->cfg, o->rm_path, o->mode, r->noun, &r->db, err);
    if (e == ES_OK && o->use_lock)
        e = es_rm_lock_open(o->rm_path, r->def->name, &r->lock_fd, err);
    if (e != ES_OK)
        return e;
    int locked = r->lock_fd < 0 ||
                 es_rm_lock(r->lock_fd, (int)es_config_get_int(r->cfg, "sqlite.busy.timeout.ms"));
    if (!locked)
        return es_fail(err, ES_EBUSY,
                       "projector '%s': its %s %s stayed locked by a replay or another "
                       "runner; try again when it is done",
                       r->def->name, r->noun, o->rm_path);
    if (o->guard_path && o->drop_idle_guard && !(r->drop_guard = strdup(o->guard_path)))
        e = es_fail(err, ES_ENOMEM, "out of memory");
    if (e == ES_OK && o->guard_path)
        e = es_guard_open(o->guard_path, &r->guard, err);
    if (e == ES_OK && r->guard)
        es_guard_recover(r->guard);
    int version = 0;
    if (e == ES_OK)
        e = stored_version(r, &version, err);
    if (e == ES_OK && version == 0)
        e = create_model(r, err);
    else if (e == ES_OK && version > r->def->schema_version)
        e = es_fail(err, ES_ESTATE,
                    "projector '%s': the %s %s has schema version %d, newer than the "
                    "module's %d; run the newer module or rebuild with esctl replay",
                    r->def->name, r->noun, o->rm_path, version, r->def->schema_version);
    *rebuild = e == ES_OK && version && version < r->def->schema_version;
    if (r->lock_fd >= 0)
        es_rm_unlock(r->lock_fd);
    return e;
}

static es_err prepare_all(es_runner_t *r, es_error_t *err) {
    return es_sql_prepare_all(r->db, r->rm_path, runner_sql, R_COUNT, r->st, err);
}

static es_err same_file_check(const es_config_t *cfg, const runner_opts *o, es_error_t *err) {
    if (!strcmp(es_config_get(cfg, "db"), o->rm_path))
        return es_fail(err, ES_EINVAL, "%s and db are both %s; give the %s a file of its own",
                       o->key ? o->key : "readmodel.db", o->rm_path,
                       o->noun ? o->noun : "read model");
    return ES_OK;
}

es_err es_runner_open(const es_config_t *cfg, const es_projector_def *def, const runner_opts *o,
                      es_runner_t **out, es_error_t *err) {
    *out = NULL;
    es_err e = es_projector_check(def, "es_runner", err);
    if (e == ES_OK)
        e = same_file_check(cfg, o, err);
    if (e != ES_OK)
        return e;
    es_runner_t *r = calloc(1, sizeof *r);
    if (!r || !(r->cfg = es_config_dup(cfg)) || !(r->rm_path = strdup(o->rm_path))) {
        if (r)
            es_config_destroy(r->cfg);
        free(r);
        return es_fail(err, ES_ENOMEM, "out of memory");
    }
    r->def = def;
    es_stop_init(&r->stop);
    r->noun = o->noun ? o->noun : "read model";
    r->key = o->key ? o->key : "readmodel.db";
    r->mode = o->mode;
    r->lock_fd = -1;
    read_policy(r, o);
    r->versions = es_lru_new(16384, free, NULL);
    if (!r->versions) {
        es_runner_destroy(r);
        return es_fail(err, ES_ENOMEM, "out of memory");
    }
    int rebuild = 0;
    e = es_log_open(r->cfg, &r->log, err);
    if (e == ES_OK)
        e = r->log->ops->identity(r->log, r->log_id, sizeof r->log_id, err);
    if (e == ES_OK)
        e = make_positions(r, err);
    if (e == ES_OK)
        e = open_model(r, o, &rebuild, err);
    if (e == ES_OK && r->wd.timeout_ms > 0)
        e = watch_start(r, err);
    if (e == ES_OK && rebuild)
        e = es_replay(r->cfg, def, NULL, NULL, err);
    if (e == ES_OK)
        e = prepare_all(r, err);
    r->ctx.db = r->db;
    r->ctx.name = def->name;
    if (e == ES_OK && def->init) {
        e = def->init(r->db, &r->ctx.state, err);
        if (e != ES_OK)
            es_error_prefix(err, "projector '%s': init: ", def->name);
        r->inited = e == ES_OK;
    }
    if (e == ES_OK && r->mode == RM_LIVE) {
        es_error_t perr; /* dead letters a crash kept from being sent */
        if (es_rm_publish_dlq(r->db, r->log, r->cfg, def->name, &perr) != ES_OK)
            es_logf(r->cfg, 4, "projector '%s': dead letters not sent yet: %s", def->name,
                    perr.message);
    }
    if (e != ES_OK) {
        es_runner_destroy(r);
        return e;
    }
    *out = r;
    return ES_OK;
}

es_err es_runner_new_on(const es_config_t *cfg, const es_projector_def *def, const char *key,
                        const char *noun, es_runner_t **out, es_error_t *err) {
    if (!out)
        return es_fail(err, ES_EINVAL, "es_runner_new: out is required");
    const char *rm = es_config_get(cfg, key);
    char *guard = def && def->name ? es_rm_side_path(rm, def->name, ".guard") : NULL;
    if (!guard)
        return def && def->name ? es_fail(err, ES_ENOMEM, "out of memory")
                                : es_projector_check(def, "es_runner_new", err);
    runner_opts o = {rm, RM_LIVE, guard, 1, 0, 0, noun, key};
    es_err e = es_runner_open(cfg, def, &o, out, err);
    free(guard);
    return e;
}

es_err es_runner_new(const es_config_t *cfg, const es_projector_def *def, es_runner_t **out,
                     es_error_t *err) {
    return es_runner_new_on(cfg, def, "readmodel.db", "read model", out, err);
}
