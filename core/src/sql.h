/*
 * The one SQLite layer under eskit's files (event store, read models, saga databases): what an
 * SQLite result means for eskit, statement tables prepared once per connection, and
 * transactions. es_sql_fail is the only place where an SQLite result becomes an es_err and a
 * message; the message says what happened, to which file, and what to do (a full disk, a
 * corrupt file, a read-only file or directory, a lock held too long, a file that cannot be
 * opened, an I/O error), so no other file formats an SQLite error.
 *
 * Codes: BUSY and LOCKED are ES_EBUSY (transient: retry), NOMEM is ES_ENOMEM, everything else
 * (FULL, IOERR, READONLY, CANTOPEN, CORRUPT, NOTADB, and SQL errors) is ES_EIO.
 */
#ifndef ESKIT_SQL_H
#define ESKIT_SQL_H

#include "internal.h"

#include <sqlite3.h>

/* The es_err for SQLite result rc (primary or extended). */
es_err es_sql_code(int rc);
/* 1 when rc says the file or its disk failed (FULL, IOERR, CORRUPT, NOTADB, READONLY,
 * CANTOPEN, PERM): no statement can succeed until an operator acts, whatever its SQL. */
int es_sql_storage_fault(int rc);
/* Fills err for SQLite result rc on db (may be NULL) while doing what, naming db's main file;
 * returns es_sql_code(rc). */
es_err es_sql_fail(sqlite3 *db, int rc, const char *what, es_error_t *err);
/* es_sql_fail naming file as the caller knows it (its configured path); file NULL: db's. */
es_err es_sql_fail_file(sqlite3 *db, int rc, const char *file, const char *what, es_error_t *err);

/* sqlite3_exec of sql (one or more statements without results). */
es_err es_sql_exec(sqlite3 *db, const char *file, const char *sql, const char *what,
                   es_error_t *err);
/* Prepares sql for the connection's life (SQLITE_PREPARE_PERSISTENT). */
es_err es_sql_prepare(sqlite3 *db, const char *file, const char *sql, sqlite3_stmt **out,
                      es_error_t *err);
/* Steps s, which returns no rows, and resets it. */
es_err es_sql_step_done(sqlite3 *db, const char *file, sqlite3_stmt *s, const char *what,
                        es_error_t *err);

/* A statement table: sql[i] prepared into st[i] for the connection's life; a NULL sql[i] leaves
 * st[i] NULL. On failure what was prepared stays in st, for es_sql_finalize_all. */
es_err es_sql_prepare_all(sqlite3 *db, const char *file, const char *const *sql, size_t n,
                          sqlite3_stmt **st, es_error_t *err);
/* Resets every statement of a table (NULL ones skipped). */
void es_sql_reset_all(sqlite3_stmt **st, size_t n);
/* Finalizes every statement of a table and sets them NULL. */
void es_sql_finalize_all(sqlite3_stmt **st, size_t n);

/*
 * Transactions on one connection. es_sql_tx_on makes one that runs BEGIN/COMMIT/ROLLBACK as
 * text; es_sql_tx_prepare prepares them once, for connections that commit often. A failed
 * COMMIT is reported (the message formatted before anything else touches the connection) and
 * the transaction rolled back; a rollback runs only while a transaction is open (SQLite ends
 * one itself on some errors).
 */
typedef enum es_sql_begin_kind { ES_SQL_DEFERRED, ES_SQL_IMMEDIATE } es_sql_begin_kind;
enum {
    ES_SQL_TX_BEGIN,
    ES_SQL_TX_BEGIN_IMMEDIATE,
    ES_SQL_TX_COMMIT,
    ES_SQL_TX_ROLLBACK,
    ES_SQL_TX_N
};
typedef struct es_sql_tx {
    sqlite3 *db;
    const char *file; /* named in messages (outlives the tx); NULL: db's main file */
    sqlite3_stmt *st[ES_SQL_TX_N];
} es_sql_tx;

/* A transaction helper on db, naming file (may be NULL) in its messages. */
es_sql_tx es_sql_tx_on(sqlite3 *db, const char *file);
/* Prepares BEGIN, COMMIT and ROLLBACK once; es_sql_tx_finalize frees them. */
es_err es_sql_tx_prepare(es_sql_tx *t, es_error_t *err);
void es_sql_tx_finalize(es_sql_tx *t);
/* BEGIN (ES_SQL_DEFERRED: locks as it reads and writes) or BEGIN IMMEDIATE (the write lock
 * now, waiting up to sqlite.busy.timeout.ms for it). */
es_err es_sql_begin(es_sql_tx *t, es_sql_begin_kind kind, const char *what, es_error_t *err);
/* COMMIT; when it fails the transaction is rolled back and the failure returned. */
es_err es_sql_commit(es_sql_tx *t, const char *what, es_error_t *err);
/* Rolls back the open transaction, if any. */
void es_sql_rollback(es_sql_tx *t);
/* The end of a transaction whose work returned e: commits when e is ES_OK (returning the
 * commit's result), else rolls back and returns e. */
es_err es_sql_end(es_sql_tx *t, es_err e, const char *what, es_error_t *err);

#endif
