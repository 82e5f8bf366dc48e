/* Operator view of the read model: lag per projector and partition (es_lag), its checkpoints
 * against the ends of the topics it reads. */
#include "projector_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The lag rows of one projector: every partition of every topic it reads, each lag counted
 * (exact) or estimated from positions where the log can (topic_estimate). */
static es_err lag_of(sqlite3 *db, es_log_t *log, int exact, const char *name, const char *topics,
                     es_lag_estimate_t **rows, size_t *n, size_t *cap, es_error_t *err) {
    char *list = strdup(topics);
    if (!list)
        return es_fail(err, ES_ENOMEM, "out of memory");
    sqlite3_stmt *s = NULL;
    es_err e = es_sql_prepare(db, NULL,
                              "SELECT next_offset FROM es_checkpoints WHERE projector = ?1 AND "
                              "topic = ?2 AND partition = ?3",
                              &s, err);
    for (char *save = NULL, *t = strtok_r(list, " ", &save); e == ES_OK && t;
         t = strtok_r(NULL, " ", &save)) {
        int32_t parts = 0;
        e = log->reader->partitions(log, t, &parts, err);
        for (int32_t p = 0; e == ES_OK && p < parts; p++) {
            e = es_grow((void **)rows, cap, *n, sizeof **rows, err);
            if (e != ES_OK)
                break;
            es_lag_estimate_t *est = &(*rows)[*n];
            es_lag_row_t *row = &est->row;
            memset(est, 0, sizeof *est);
            snprintf(row->projector, sizeof row->projector, "%s", name);
            snprintf(row->topic, sizeof row->topic, "%s", t);
            row->partition = p;
            sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
            sqlite3_bind_text(s, 2, t, -1, SQLITE_STATIC);
            sqlite3_bind_int(s, 3, p);
            int rc = sqlite3_step(s);
            if (rc == SQLITE_ROW)
                row->checkpoint = sqlite3_column_int64(s, 0);
            sqlite3_reset(s);
            if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                e = es_sql_fail(db, rc, "reading checkpoints", err);
            int counted = 1;
            if (e == ES_OK && !exact && log->reader->topic_estimate)
                e = log->reader->topic_estimate(log, t, p, row->checkpoint, &row->end, &row->lag,
                                                &counted, err);
            else if (e == ES_OK)
                e = log->reader->topic_end(log, t, p, row->checkpoint, &row->end, &row->lag, err);
            est->estimated = !counted;
            (*n)++;
        }
    }
    sqlite3_finalize(s);
    free(list);
    return e;
}

static es_err lag_rows(const es_config_t *cfg, int exact, es_lag_estimate_t **rows, size_t *n,
                       es_error_t *err) {
    *rows = NULL;
    *n = 0;
    sqlite3 *db = NULL;
    es_log_t *log = NULL;
    sqlite3_stmt *s = NULL;
    size_t cap = 0;
    int rc = SQLITE_DONE;
    es_err e = es_rm_open_existing(cfg, &db, err);
    if (e == ES_OK)
        e = es_log_open_flags(cfg, ES_LOG_READONLY, &log, err);
    if (e == ES_OK)
        e = es_sql_prepare(db, NULL, "SELECT name, topics FROM es_projectors ORDER BY name", &s,
                           err);
    while (e == ES_OK && (rc = sqlite3_step(s)) == SQLITE_ROW)
        e = lag_of(db, log, exact, (const char *)sqlite3_column_text(s, 0),
                   (const char *)sqlite3_column_text(s, 1), rows, n, &cap, err);
    if (e == ES_OK && rc != SQLITE_DONE)
        e = es_sql_fail(db, rc, "reading the projectors", err);
    sqlite3_finalize(s);
    if (log)
        log->destroy(log);
    sqlite3_close(db);
    if (e != ES_OK) {
        free(*rows);
        *rows = NULL;
        *n = 0;
    }
    return e;
}

es_err es_lag_estimate(const es_config_t *cfg, es_lag_estimate_t **rows, size_t *n,
                       es_error_t *err) {
    return lag_rows(cfg, 0, rows, n, err);
}

es_err es_lag(const es_config_t *cfg, es_lag_row_t **rows, size_t *n, es_error_t *err) {
    es_lag_estimate_t *est = NULL;
    *rows = NULL;
    es_err e = lag_rows(cfg, 1, &est, n, err);
    if (e == ES_OK && *n && !(*rows = malloc(*n * sizeof **rows))) {
        *n = 0;
        e = es_fail(err, ES_ENOMEM, "out of memory");
    }
    for (size_t i = 0; e == ES_OK && i < *n; i++)
        (*rows)[i] = est[i].row;
    free(est);
    return e;
}
