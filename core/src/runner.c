/*
 * es_runner_t: one projector kept up to date with the log. This file opens it (the read
 * model, its lock, the crash guard, the module's schema), polls and runs it, and stops it;
 * the batches themselves are apply.c's, the watchdog watchdog.c's, and es_runner_new, which
 * rebuilds a model whose schema the module has raised, runner_new.c's.
 */
#include "runner_int.h"

#include "backends.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int64_t now_ms(void) {
    return es_now_us() / 1000;
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
    return !r->log->reader->has_records || r->log->reader->has_records(r->log, at, r->n_pos);
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
            int64_t started = es_runner_mx_start(r);
            e = es_runner_batch(r, r->batch_size, 1, &n, err);
            if (e == ES_OK)
                es_runner_mx_batch(r, started, n);
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

/* ---- catch-up ---- */

/* Where es_runner_catch_up stands: the ends to reach, and the first partition short of its. */
typedef struct catch_up {
    int64_t *target; /* each position's end when the call began */
    int have_target;
    size_t behind, first; /* partitions still short; the first of them (n_pos: none) */
    uint64_t left;        /* records of its topic between its checkpoint and its end */
} catch_up;

static es_err read_ends(es_runner_t *r, catch_up *c, es_error_t *err) {
    for (size_t i = 0; i < r->n_pos; i++) {
        uint64_t count = 0;
        es_err e = r->log->reader->topic_end(r->log, r->pos[i].topic, r->pos[i].partition, 0,
                                             &c->target[i], &count, err);
        if (e != ES_OK)
            return e;
    }
    c->have_target = 1;
    return ES_OK;
}

/* A partition is caught up when its checkpoint reached its end, or when no record of its topic
 * lies past the checkpoint (the embedded log's end counts every topic's records). */
static es_err measure(es_runner_t *r, catch_up *c, es_error_t *err) {
    es_err e = c->have_target ? ES_OK : read_ends(r, c, err);
    if (e == ES_OK)
        e = es_runner_checkpoints(r, err);
    c->behind = 0;
    c->first = r->n_pos;
    for (size_t i = 0; e == ES_OK && i < r->n_pos; i++) {
        const es_topic_pos_t *p = &r->pos[i];
        int64_t end = 0;
        uint64_t count = 0;
        if (p->offset >= c->target[i])
            continue;
        e = r->log->reader->topic_end(r->log, p->topic, p->partition, p->offset, &end, &count, err);
        if (e != ES_OK || count == 0)
            continue;
        uint64_t short_of = (uint64_t)(c->target[i] - p->offset);
        if (c->behind++ == 0) {
            c->first = i;
            c->left = count < short_of ? count : short_of;
        }
    }
    return e;
}

static es_err not_caught_up(es_runner_t *r, const catch_up *c, int timeout_ms,
                            const es_error_t *last, es_error_t *err) {
    const char *name = r->def->name;
    if (c->first >= r->n_pos)
        return es_fail(
            err, ES_ETIMEOUT, "projector '%s': not caught up within %d ms: %s the log's ends: %s",
            name, timeout_ms,
            c->have_target ? "cannot compare the checkpoints with" : "cannot read", last->message);
    const es_topic_pos_t *p = &r->pos[c->first];
    return es_fail(err, ES_ETIMEOUT,
                   "projector '%s': not caught up within %d ms: %s partition %d has its "
                   "checkpoint at offset %lld, %llu records short of offset %lld where it ended "
                   "when the catch-up began (%zu of %zu partitions behind; call again or allow "
                   "longer)%s%s",
                   name, timeout_ms, p->topic, (int)p->partition, (long long)p->offset,
                   (unsigned long long)c->left, (long long)c->target[c->first], c->behind, r->n_pos,
                   last->code != ES_OK ? "; the last poll failed: " : "",
                   last->code != ES_OK ? last->message : "");
}

/* A lasting failure of a poll or a measure, named for the projector once. */
static es_err lasting(es_runner_t *r, es_err e, es_error_t *failed, es_error_t *err) {
    char subject[ES_PROJECTOR_NAME_MAX + 16];
    snprintf(subject, sizeof subject, "projector '%s': ", r->def->name);
    es_error_subject(failed, subject);
    if (err)
        *err = *failed;
    return e;
}

/* Measures, then polls, until the checkpoints reach the ends of the call's start. A transient
 * failure is kept in last and retried after a backoff until the deadline. */
es_err es_runner_catch_up(es_runner_t *r, int timeout_ms, es_error_t *err) {
    if (!r || timeout_ms < 0)
        return es_fail(err, ES_EINVAL, "es_runner_catch_up: %s",
                       r ? "timeout_ms must be 0 or more" : "the runner is required");
    int64_t deadline = now_ms() + timeout_ms;
    int64_t target[r->n_pos ? r->n_pos : 1];
    catch_up c = {target, 0, 0, r->n_pos, 0};
    es_error_t last = {ES_OK, ""}, now = {ES_OK, ""};
    for (int wait = 1;; wait = wait < 100 ? wait * 2 : 100) {
        es_err e = measure(r, &c, &now);
        if (e == ES_OK && c.behind == 0)
            return ES_OK;
        if (e != ES_OK && !es_err_is_transient(e))
            return lasting(r, e, &now, err);
        if (e != ES_OK)
            last = now;
        if (es_stop_requested(&r->stop))
            return es_fail(err, ES_ESTATE,
                           "projector '%s': stopped (es_runner_stop) before it caught up; the "
                           "read model holds what was applied",
                           r->def->name);
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return not_caught_up(r, &c, timeout_ms, &last, err);
        if (e == ES_OK) {
            e = es_runner_poll(r, left < 100 ? (int)left : 100, NULL, &now);
            if (e != ES_OK && !es_err_is_transient(e))
                return lasting(r, e, &now, err);
            last = e == ES_OK ? (es_error_t){ES_OK, ""} : now;
        }
        if (e != ES_OK)
            es_stop_sleep(&r->stop, wait < left ? wait : (int)left);
    }
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

void es_runner_destroy(es_runner_t *r) {
    if (!r)
        return;
    es_runner_mx_close(r);
    es_watch_stop(&r->wd);
    if (r->inited && r->def->fini)
        r->def->fini(r->ctx.state);
    es_ctx_clear(&r->ctx);
    es_lru_destroy(r->versions);
    es_pb_arena_destroy(r->arena);
    for (int i = 0; i < R_COUNT; i++)
        sqlite3_finalize(r->st[i]);
    sqlite3_close(r->db);
    if (r->log)
        r->log->destroy(r->log);
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
        es_err e = r->log->reader->partitions(r->log, r->def->topics[t], &parts, err);
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
            e = es_runner_sql_err(r, "registering the projector", err);
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
            e = es_runner_sql_err(r, "reading the projector registry", err);
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
    r->log_order =
        !strcmp(order, "on") || (!strcmp(order, "auto") && es_backend_of(c)->partitioned);
    return ES_OK;
}

/* Opens the read model, takes the lock, counts a crash, creates or checks the schema: a model
 * built with an older schema version is ES_ESTATE (*o->behind set), never rebuilt here. */
static es_err open_model(es_runner_t *r, const runner_opts *o, es_error_t *err) {
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
    if (e == ES_OK && version && version < r->def->schema_version) {
        if (o->behind)
            *o->behind = 1;
        e = es_fail(err, ES_ESTATE,
                    "projector '%s': the %s %s has schema version %d, older than the module's "
                    "%d; rebuild it with esctl replay %s (es_runner_new does it by itself)",
                    r->def->name, r->noun, o->rm_path, version, r->def->schema_version,
                    r->def->name);
    }
    if (r->lock_fd >= 0)
        es_rm_unlock(r->lock_fd);
    return e;
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
    e = es_log_open(r->cfg, &r->log, err);
    if (e == ES_OK)
        r->log->stop = &r->stop; /* a stop ends the log's waits on the brokers too */
    if (e == ES_OK)
        e = r->log->reader->identity(r->log, r->log_id, sizeof r->log_id, err);
    if (e == ES_OK)
        e = make_positions(r, err);
    if (e == ES_OK)
        e = open_model(r, o, err);
    if (e == ES_OK && r->wd.timeout_ms > 0)
        e = es_watch_start(r, err);
    if (e == ES_OK)
        e = es_apply_prepare(r, err);
    if (e == ES_OK && !(r->arena = es_pb_arena_new()))
        e = es_fail(err, ES_ENOMEM, "out of memory opening projector '%s'", def->name);
    r->ctx.db = r->db;
    r->ctx.name = def->name;
    r->ctx.alloc = r->arena ? es_pb_arena_allocator(r->arena) : NULL;
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
