/*
 * The embedded schema catalogue (catalogue.h): the es_schemas table of the store file, made by
 * the store's schema (version 4). It opens the store as es_log_open does (file checks, head
 * file, migrations), on a connection of its own; add checks and inserts in one write
 * transaction, so two processes registering at once are serialised by SQLite's lock.
 */
#include "catalogue.h"

#include "log/log.h"
#include "sql.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sqlite_catalogue {
    es_catalogue_store base;
    es_log_t *log;
    sqlite3 *db;
    char *path;
} sqlite_catalogue;

static es_err has_table(sqlite_catalogue *c, int *yes, es_error_t *err) {
    sqlite3_stmt *s = NULL;
    es_err e = es_sql_prepare(
        c->db, c->path,
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'es_schemas'", &s, err);
    int rc = e == ES_OK ? sqlite3_step(s) : SQLITE_OK;
    if (e == ES_OK && rc != SQLITE_ROW)
        e = es_sql_fail_file(c->db, rc, c->path, "reading the schema catalogue", err);
    *yes = e == ES_OK && sqlite3_column_int(s, 0) > 0;
    sqlite3_finalize(s);
    return e;
}

static es_err cs_list(es_catalogue_store *base, es_catalogue_cb *cb, void *opaque,
                      es_error_t *err) {
    sqlite_catalogue *c = (sqlite_catalogue *)base;
    int yes = 0;
    es_err e = has_table(c, &yes, err);
    if (e != ES_OK || !yes) /* a read-only look at a store of schema version 3 */
        return e;
    sqlite3_stmt *s = NULL;
    e = es_sql_prepare(c->db, c->path,
                       "SELECT name, version, fingerprint, schema, registered_at, registered_by"
                       " FROM es_schemas",
                       &s, err);
    int rc = SQLITE_DONE;
    while (e == ES_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        es_catalogue_rec r = {
            (const char *)sqlite3_column_text(s, 0), (uint32_t)sqlite3_column_int64(s, 1),
            (const char *)sqlite3_column_text(s, 2), sqlite3_column_blob(s, 3),
            (size_t)sqlite3_column_bytes(s, 3),      sqlite3_column_int64(s, 4),
            (const char *)sqlite3_column_text(s, 5)};
        if (!r.name || !r.fingerprint)
            e = es_fail(err, ES_EDECODE,
                        "the schema catalogue of %s has a row without a name or fingerprint; "
                        "restore the file from a backup",
                        c->path);
        else if (cb(&r, opaque))
            break;
    }
    if (e == ES_OK && rc != SQLITE_ROW && rc != SQLITE_DONE)
        e = es_sql_fail_file(c->db, rc, c->path, "reading the schema catalogue", err);
    sqlite3_finalize(s);
    return e;
}

/* 1 when name already holds version or fingerprint. */
static es_err taken(sqlite_catalogue *c, sqlite3_stmt *s, const es_catalogue_rec *r, int *yes,
                    es_error_t *err) {
    sqlite3_reset(s);
    sqlite3_bind_text(s, 1, r->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, r->version);
    sqlite3_bind_text(s, 3, r->fingerprint, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    *yes = rc == SQLITE_ROW;
    return rc == SQLITE_ROW || rc == SQLITE_DONE
               ? ES_OK
               : es_sql_fail_file(c->db, rc, c->path, "reading the schema catalogue", err);
}

static es_err insert(sqlite_catalogue *c, sqlite3_stmt *s, const es_catalogue_rec *r,
                     es_error_t *err) {
    sqlite3_reset(s);
    sqlite3_bind_text(s, 1, r->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, r->version);
    sqlite3_bind_text(s, 3, r->fingerprint, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 4, r->schema, (int)r->schema_len, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, r->registered_at_us);
    sqlite3_bind_text(s, 6, r->registered_by ? r->registered_by : "", -1, SQLITE_STATIC);
    return es_sql_step_done(c->db, c->path, s, "recording a schema", err);
}

static es_err cs_add(es_catalogue_store *base, const es_catalogue_rec *recs, size_t n, int *lost,
                     es_error_t *err) {
    sqlite_catalogue *c = (sqlite_catalogue *)base;
    sqlite3_stmt *find = NULL, *put = NULL;
    es_sql_tx tx = es_sql_tx_on(c->db, c->path);
    *lost = 0;
    es_err e = es_sql_begin(&tx, ES_SQL_IMMEDIATE, "recording schemas", err);
    if (e != ES_OK)
        return e;
    e = es_sql_prepare(c->db, c->path,
                       "SELECT 1 FROM es_schemas WHERE name = ?1 AND (version = ?2 OR "
                       "fingerprint = ?3)",
                       &find, err);
    if (e == ES_OK)
        e = es_sql_prepare(c->db, c->path,
                           "INSERT INTO es_schemas(name, version, fingerprint, schema, "
                           "registered_at, registered_by) VALUES (?, ?, ?, ?, ?, ?)",
                           &put, err);
    for (size_t i = 0; e == ES_OK && !*lost && i < n; i++) {
        int yes = 0;
        if ((e = taken(c, find, &recs[i], &yes, err)) == ES_OK && yes)
            *lost = 1;
        else if (e == ES_OK)
            e = insert(c, put, &recs[i], err);
    }
    sqlite3_finalize(find);
    sqlite3_finalize(put);
    if (e == ES_OK && *lost) {
        es_sql_rollback(&tx);
        return ES_OK;
    }
    return es_sql_end(&tx, e, "recording schemas", err);
}

static void cs_destroy(es_catalogue_store *base) {
    sqlite_catalogue *c = (sqlite_catalogue *)base;
    if (c->log)
        c->log->destroy(c->log);
    free(c->path);
    free(c);
}

static const es_catalogue_ops sqlite_catalogue_ops = {cs_list, cs_add, cs_destroy};

es_err es_catalogue_sqlite_open(const es_config_t *cfg, int readonly, es_catalogue_store **out,
                                es_error_t *err) {
    sqlite_catalogue *c = calloc(1, sizeof *c);
    const char *db = es_config_get(cfg, "db");
    if (!c || !(c->path = strdup(db ? db : ""))) {
        free(c);
        return es_fail(err, ES_ENOMEM, "out of memory opening the schema catalogue");
    }
    es_err e = es_log_sqlite_open_flags(cfg, readonly ? ES_LOG_READONLY : 0, &c->log, err);
    if (e != ES_OK) {
        cs_destroy(&c->base);
        return e;
    }
    c->db = es_log_sqlite_db(c->log);
    c->base = (es_catalogue_store){&sqlite_catalogue_ops, c->path};
    *out = &c->base;
    return ES_OK;
}
