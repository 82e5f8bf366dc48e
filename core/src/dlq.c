/*
 * The dead-letter queue: es_dlq rows as read back, their delivery to "<topic>.dlq", the
 * operator's list, and redrive, which applies parked events again once the module is fixed
 * (each in a transaction that also marks it redriven, so a parked event is applied at most
 * once however often redrive runs). The runner parks events (runner.c); a replay carries
 * the rows over to the rebuilt model (replay.c).
 */
#include "projector_int.h"
#include "readpipe.h"
#include "kafka/wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

es_err es_dlq_list(const es_config_t *cfg, const char *projector, bool all, es_dlq_entry_t **out,
                   size_t *n, es_error_t *err) {
    *out = NULL;
    *n = 0;
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    size_t cap = 0;
    es_err e = es_rm_open_existing(cfg, &db, err);
    if (e == ES_OK)
        e = es_sql_prepare(db, NULL,
                           "SELECT " ES_DLQ_COLUMNS " FROM es_dlq WHERE (?1 IS NULL OR "
                           "projector = ?1) AND (?2 OR redriven_at IS NULL) ORDER BY id",
                           &s, err);
    if (e == ES_OK) {
        sqlite3_bind_text(s, 1, projector, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 2, all);
    }
    int rc = SQLITE_DONE;
    while (e == ES_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        e = es_grow((void **)out, &cap, *n, sizeof **out, err);
        if (e == ES_OK)
            es_rm_dlq_row(s, &(*out)[(*n)++], 0);
    }
    if (e == ES_OK && rc != SQLITE_DONE)
        e = es_sql_fail(db, rc, "reading the dead letters", err);
    sqlite3_finalize(s);
    sqlite3_close(db);
    if (e != ES_OK) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return e;
}

static es_err get_entry(sqlite3 *db, int64_t id, es_dlq_entry_t **out, es_error_t *err) {
    sqlite3_stmt *s = NULL;
    *out = NULL;
    es_err e =
        es_sql_prepare(db, NULL, "SELECT " ES_DLQ_COLUMNS " FROM es_dlq WHERE id = ?1", &s, err);
    if (e == ES_OK) {
        sqlite3_bind_int64(s, 1, id);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
            e = es_fail(err, ES_ENOTFOUND, "no dead letter with id %lld; see esctl dlq list",
                        (long long)id);
        else if (rc != SQLITE_ROW)
            e = es_sql_fail(db, rc, "reading a dead letter", err);
    }
    es_dlq_entry_t *d = e == ES_OK ? calloc(1, sizeof *d) : NULL;
    if (e == ES_OK && (!d || es_rm_dlq_row(s, d, 1) != ES_OK)) {
        free(d);
        d = NULL;
        e = es_fail(err, ES_ENOMEM, "out of memory");
    }
    sqlite3_finalize(s);
    *out = d;
    return e;
}

es_err es_dlq_get(const es_config_t *cfg, int64_t id, es_dlq_entry_t **out, es_error_t *err) {
    sqlite3 *db = NULL;
    *out = NULL;
    es_err e = es_rm_open_existing(cfg, &db, err);
    if (e == ES_OK)
        e = get_entry(db, id, out, err);
    sqlite3_close(db);
    return e;
}

void es_dlq_entry_free(es_dlq_entry_t *e) {
    if (!e)
        return;
    free(e->value);
    free(e);
}

/* Ids to redrive: the given ones, or every parked entry of the projector. */
static es_err parked_ids(sqlite3 *db, const char *name, int64_t **ids, size_t *n, es_error_t *err) {
    sqlite3_stmt *s = NULL;
    size_t cap = 0;
    *ids = NULL;
    *n = 0;
    es_err e = es_sql_prepare(db, NULL,
                              "SELECT id FROM es_dlq WHERE projector = ?1 AND redriven_at IS "
                              "NULL ORDER BY id",
                              &s, err);
    if (e == ES_OK)
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    int rc = SQLITE_DONE;
    while (e == ES_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        e = es_grow((void **)ids, &cap, *n, sizeof **ids, err);
        if (e == ES_OK)
            (*ids)[(*n)++] = sqlite3_column_int64(s, 0);
    }
    if (e == ES_OK && rc != SQLITE_DONE)
        e = es_sql_fail(db, rc, "reading the dead letters", err);
    sqlite3_finalize(s);
    return e;
}

/* One redrive in one transaction: apply and mark redriven, or record the new failure. */
static es_err redrive_one(es_runner_t *r, int64_t id, const char *name, int *ok, es_error_t *err) {
    es_sql_tx tx = es_sql_tx_on(es_runner_db(r), NULL);
    sqlite3 *db = tx.db;
    es_dlq_entry_t *d = NULL;
    *ok = 0;
    es_err e = es_sql_begin(&tx, ES_SQL_IMMEDIATE, "redriving a dead letter", err);
    if (e != ES_OK)
        return e;
    e = get_entry(db, id, &d, err);
    if (e == ES_OK && strcmp(d->projector, name))
        e = es_fail(err, ES_EINVAL, "dead letter %lld belongs to projector '%s', not '%s'",
                    (long long)id, d->projector, name);
    if (e == ES_OK && d->redriven_at_us) {
        *ok = -1; /* already applied by an earlier redrive */
        es_sql_rollback(&tx);
        es_dlq_entry_free(d);
        return ES_OK;
    }
    char type[256];
    int attempts = 0, storage = 0;
    es_error_t why = {0};
    es_err rc = ES_OK;
    if (e == ES_OK) {
        es_raw_record_t rec = {d->topic, d->partition, d->offset, d->key[0] ? d->key : NULL,
                               d->value, d->value_len, NULL,      0};
        rc = es_runner_apply_record(r, &rec, &attempts, type, sizeof type, &storage, &why);
        if (storage)
            e = es_fail(err, rc, "%s", why.message);
    }
    char *sql = NULL;
    if (e == ES_OK) {
        *ok = rc == ES_OK;
        sql = rc == ES_OK
                  ? sqlite3_mprintf("UPDATE es_dlq SET redriven_at = %lld WHERE id = %lld",
                                    (long long)es_now_us(), (long long)id)
                  : sqlite3_mprintf("UPDATE es_dlq SET code = %d, error = %Q, attempts = "
                                    "attempts + %d, published = 0 WHERE id = %lld",
                                    (int)rc, why.message, attempts ? attempts : 1, (long long)id);
        e = sql ? es_sql_exec(db, NULL, sql, "recording a redrive", err)
                : es_fail(err, ES_ENOMEM, "out of memory");
    }
    sqlite3_free(sql);
    e = es_sql_end(&tx, e, "redriving a dead letter", err);
    es_dlq_entry_free(d);
    return e;
}

es_err es_dlq_redrive(const es_config_t *cfg, const es_projector_def *def, const int64_t *ids,
                      size_t n_ids, size_t *applied, size_t *failed, es_error_t *err) {
    *applied = *failed = 0;
    es_err e = es_projector_check(def, "es_dlq_redrive", err);
    sqlite3 *probe = NULL;
    if (e == ES_OK)
        e = es_rm_open_existing(cfg, &probe, err);
    sqlite3_close(probe);
    es_runner_t *r = NULL;
    if (e == ES_OK)
        e = es_runner_new_on(cfg, def, "readmodel.db", "read model", &r, err); /* no metrics */
    int64_t *all = NULL;
    if (e == ES_OK && n_ids == 0) {
        e = parked_ids(es_runner_db(r), def->name, &all, &n_ids, err);
        ids = all;
    }
    int lock = r ? es_runner_lock_fd(r) : -1;
    if (e == ES_OK && !es_rm_lock(lock, (int)es_config_get_int(cfg, "sqlite.busy.timeout.ms")))
        e = es_fail(err, ES_EBUSY, "the read model of '%s' stayed locked by a replay", def->name);
    else if (e == ES_OK) {
        for (size_t i = 0; e == ES_OK && i < n_ids; i++) {
            int ok = 0;
            e = redrive_one(r, ids[i], def->name, &ok, err);
            if (ok > 0)
                (*applied)++;
            else if (ok == 0 && e == ES_OK)
                (*failed)++;
        }
        es_rm_unlock(lock);
    }
    if (e == ES_OK && *failed) {
        es_error_t perr;
        es_rm_publish_dlq(es_runner_db(r), es_runner_log(r), cfg, def->name, &perr);
    }
    free(all);
    es_runner_destroy(r);
    return e;
}

int es_dlq_park(sqlite3_stmt *s, const char *projector, const es_raw_record_t *rec,
                const char *event_type, es_err code, const char *why, int attempts,
                es_dlq_entry_t *out) {
    int64_t now = es_now_us();
    const char *type = event_type && *event_type ? event_type : NULL;
    const char *key = es_raw_key(rec);
    sqlite3_bind_text(s, 1, projector, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, rec->topic, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 3, rec->partition);
    sqlite3_bind_int64(s, 4, rec->offset);
    sqlite3_bind_text(s, 5, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 6, type, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 7, (int)code);
    sqlite3_bind_text(s, 8, why, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 9, attempts);
    sqlite3_bind_int64(s, 10, now);
    sqlite3_bind_blob(s, 11, rec->value ? (const void *)rec->value : "", (int)rec->len,
                      SQLITE_STATIC);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    *out = (es_dlq_entry_t){.id = sqlite3_last_insert_rowid(sqlite3_db_handle(s)),
                            .partition = rec->partition,
                            .offset = rec->offset,
                            .code = (int)code,
                            .attempts = attempts,
                            .parked_at_us = now};
    snprintf(out->projector, sizeof out->projector, "%s", projector);
    snprintf(out->topic, sizeof out->topic, "%s", rec->topic);
    snprintf(out->key, sizeof out->key, "%s", key ? key : "");
    snprintf(out->event_type, sizeof out->event_type, "%s", type ? type : "");
    snprintf(out->error, sizeof out->error, "%s", why);
    return rc;
}

static void copy_text(char *dst, size_t cap, const unsigned char *src) {
    snprintf(dst, cap, "%s", src ? (const char *)src : "");
}

es_err es_rm_dlq_row(sqlite3_stmt *s, es_dlq_entry_t *e, int with_value) {
    e->id = sqlite3_column_int64(s, 0);
    copy_text(e->projector, sizeof e->projector, sqlite3_column_text(s, 1));
    copy_text(e->topic, sizeof e->topic, sqlite3_column_text(s, 2));
    e->partition = sqlite3_column_int(s, 3);
    e->offset = sqlite3_column_int64(s, 4);
    copy_text(e->key, sizeof e->key, sqlite3_column_text(s, 5));
    copy_text(e->event_type, sizeof e->event_type, sqlite3_column_text(s, 6));
    e->code = sqlite3_column_int(s, 7);
    copy_text(e->error, sizeof e->error, sqlite3_column_text(s, 8));
    e->attempts = sqlite3_column_int(s, 9);
    e->parked_at_us = sqlite3_column_int64(s, 10);
    e->redriven_at_us = sqlite3_column_int64(s, 11);
    e->value = NULL;
    e->value_len = 0;
    if (with_value) {
        int len = sqlite3_column_bytes(s, 12);
        e->value = malloc(len > 0 ? (size_t)len : 1);
        if (!e->value)
            return ES_ENOMEM;
        if (len > 0)
            memcpy(e->value, sqlite3_column_blob(s, 12), (size_t)len);
        e->value_len = (size_t)len;
    }
    return ES_OK;
}

/* A dead letter with the headers proto/README.md lists (kafka/wire.h renders them). */
static es_err publish_one(es_log_t *log, const char *group, const es_dlq_entry_t *d,
                          const uint8_t *value, size_t len, es_error_t *err) {
    es_kafka_dlq_t facts = {group,       d->topic,        d->partition, d->offset,
                            d->attempts, (es_err)d->code, d->error,     d->event_type};
    es_kafka_dlq_headers_t h = {0};
    es_kafka_dlq_headers(&facts, &h);
    return log->reader->put_dlq(log, h.topic, h.ref, d->key[0] ? d->key : NULL, value, len, h.kv,
                                ES_KAFKA_DLQ_HEADERS, err);
}

es_err es_rm_publish_dlq(sqlite3 *db, es_log_t *log, const es_config_t *cfg, const char *projector,
                         es_error_t *err) {
    char group[256];
    es_rm_group(cfg, projector, group, sizeof group);
    sqlite3_stmt *s = NULL, *mark = NULL;
    es_err e = es_sql_prepare(db, NULL,
                              "SELECT " ES_DLQ_COLUMNS " FROM es_dlq WHERE projector = ?1 AND "
                              "published = 0 ORDER BY id",
                              &s, err);
    if (e == ES_OK)
        e = es_sql_prepare(db, NULL, "UPDATE es_dlq SET published = 1 WHERE id = ?1", &mark, err);
    if (e == ES_OK)
        sqlite3_bind_text(s, 1, projector, -1, SQLITE_STATIC);
    int rc = SQLITE_DONE;
    while (e == ES_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        es_dlq_entry_t d;
        es_rm_dlq_row(s, &d, 0);
        e = publish_one(log, group, &d, sqlite3_column_blob(s, 12),
                        (size_t)sqlite3_column_bytes(s, 12), err);
        if (e == ES_OK) {
            sqlite3_bind_int64(mark, 1, d.id);
            e = es_sql_step_done(db, NULL, mark, "marking a dead letter sent", err);
        }
    }
    if (e == ES_OK && rc != SQLITE_DONE)
        e = es_sql_fail(db, rc, "reading dead letters", err);
    sqlite3_finalize(s);
    sqlite3_finalize(mark);
    return e;
}
