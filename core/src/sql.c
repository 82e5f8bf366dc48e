/*
 * SQLite results as eskit errors, statement tables and transactions (see sql.h).
 */
#include "sql.h"

#include <stdio.h>
#include <string.h>

es_err es_sql_code(int rc) {
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return ES_EBUSY;
    case SQLITE_NOMEM:
        return ES_ENOMEM;
    default:
        return rc == SQLITE_IOERR_NOMEM ? ES_ENOMEM : ES_EIO;
    }
}

int es_sql_storage_fault(int rc) {
    switch (rc & 0xff) {
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
        return 1;
    default:
        return 0;
    }
}

#define NAME(c)                                                                                    \
    { c, #c }
static const struct {
    int code;
    const char *name;
} code_names[] = {
    NAME(SQLITE_IOERR),
    NAME(SQLITE_IOERR_READ),
    NAME(SQLITE_IOERR_SHORT_READ),
    NAME(SQLITE_IOERR_WRITE),
    NAME(SQLITE_IOERR_FSYNC),
    NAME(SQLITE_IOERR_DIR_FSYNC),
    NAME(SQLITE_IOERR_TRUNCATE),
    NAME(SQLITE_IOERR_FSTAT),
    NAME(SQLITE_IOERR_UNLOCK),
    NAME(SQLITE_IOERR_RDLOCK),
    NAME(SQLITE_IOERR_DELETE),
    NAME(SQLITE_IOERR_BLOCKED),
    NAME(SQLITE_IOERR_ACCESS),
    NAME(SQLITE_IOERR_CHECKRESERVEDLOCK),
    NAME(SQLITE_IOERR_LOCK),
    NAME(SQLITE_IOERR_CLOSE),
    NAME(SQLITE_IOERR_DIR_CLOSE),
    NAME(SQLITE_IOERR_SHMOPEN),
    NAME(SQLITE_IOERR_SHMSIZE),
    NAME(SQLITE_IOERR_SHMLOCK),
    NAME(SQLITE_IOERR_SHMMAP),
    NAME(SQLITE_IOERR_SEEK),
    NAME(SQLITE_IOERR_DELETE_NOENT),
    NAME(SQLITE_IOERR_MMAP),
    NAME(SQLITE_IOERR_GETTEMPPATH),
    NAME(SQLITE_IOERR_CONVPATH),
    NAME(SQLITE_IOERR_VNODE),
    NAME(SQLITE_IOERR_AUTH),
    NAME(SQLITE_IOERR_BEGIN_ATOMIC),
    NAME(SQLITE_IOERR_COMMIT_ATOMIC),
    NAME(SQLITE_IOERR_ROLLBACK_ATOMIC),
    NAME(SQLITE_IOERR_DATA),
    NAME(SQLITE_IOERR_CORRUPTFS),
    NAME(SQLITE_CANTOPEN),
    NAME(SQLITE_CANTOPEN_NOTEMPDIR),
    NAME(SQLITE_CANTOPEN_ISDIR),
    NAME(SQLITE_CANTOPEN_FULLPATH),
    NAME(SQLITE_CANTOPEN_CONVPATH),
    NAME(SQLITE_CANTOPEN_SYMLINK),
};

/* "SQLITE_IOERR_WRITE"; the primary code's name when the extended one is not listed. */
static const char *code_name(int rc) {
    for (size_t i = 0; i < sizeof code_names / sizeof *code_names; i++)
        if (code_names[i].code == rc)
            return code_names[i].name;
    return rc > 0xff ? code_name(rc & 0xff) : "SQLITE_ERROR";
}

/* One failure as es_sql_fail_file was told of it. */
typedef struct failure {
    sqlite3 *db;
    int rc;             /* as given */
    int ext;            /* the extended code, when db knows it */
    const char *file;   /* named in the message */
    const char *what;   /* what eskit was doing */
    const char *detail; /* SQLite's own words */
    es_error_t *err;
} failure;

/* The extended code of rc: rc itself when it is one, else db's when it is of the same kind. */
static int extended(sqlite3 *db, int rc) {
    if (rc > 0xff || !db)
        return rc;
    int ext = sqlite3_extended_errcode(db);
    return (ext & 0xff) == rc ? ext : rc;
}

/* sqlite3_errmsg when db's last error is this one (it may say more: a constraint's columns),
 * else the code's text. */
static const char *detail_of(sqlite3 *db, int rc) {
    if (db && (sqlite3_extended_errcode(db) & 0xff) == (rc & 0xff))
        return sqlite3_errmsg(db);
    return sqlite3_errstr(rc);
}

/* ": <strerror>" of the system call that failed, or "" (SQLite keeps it for I/O and open
 * errors only). */
static void system_error(const failure *f, char *out, size_t cap) {
    int sys = f->db ? sqlite3_system_errno(f->db) : 0;
    if (sys > 0)
        snprintf(out, cap, ": %s", strerror(sys));
    else
        out[0] = '\0';
}

static es_err fail_busy(const failure *f) {
    if (f->ext == SQLITE_BUSY_SNAPSHOT)
        return es_fail(f->err, ES_EBUSY,
                       "%s: another connection wrote %s since this transaction began reading (%s); "
                       "retry",
                       f->what, f->file, f->detail);
    if (f->ext == SQLITE_BUSY_RECOVERY)
        return es_fail(f->err, ES_EBUSY,
                       "%s: another connection is recovering %s after a crash (%s); retry", f->what,
                       f->file, f->detail);
    return es_fail(f->err, ES_EBUSY,
                   "%s: %s stayed locked by another writer past sqlite.busy.timeout.ms (%s); "
                   "retry, or raise the timeout",
                   f->what, f->file, f->detail);
}

static es_err fail_full(const failure *f) {
    return es_fail(f->err, ES_EIO,
                   "%s: disk full writing %s (%s); nothing was written, free space and retry",
                   f->what, f->file, f->detail);
}

static es_err fail_corrupt(const failure *f) {
    return es_fail(f->err, ES_EIO,
                   "%s: %s is corrupt (%s); restore it from a backup; for an event store, run "
                   "'esctl verify' on it to see what is damaged",
                   f->what, f->file, f->detail);
}

static es_err fail_notadb(const failure *f) {
    return es_fail(f->err, ES_EIO,
                   "%s: %s is not an SQLite database, or its header is destroyed (%s); check "
                   "the path, or restore the file from a backup",
                   f->what, f->file, f->detail);
}

static const char *readonly_why(int ext) {
    switch (ext) {
    case SQLITE_READONLY_RECOVERY:
        return "its -wal needs recovery, and its -shm file cannot be written";
    case SQLITE_READONLY_CANTLOCK:
    case SQLITE_READONLY_CANTINIT:
        return "its -shm file cannot be written";
    case SQLITE_READONLY_ROLLBACK:
        return "its hot journal cannot be rolled back";
    case SQLITE_READONLY_DIRECTORY:
        return "its directory cannot be written, so its -wal or journal cannot be created";
    default:
        return "it or its file system is read-only";
    }
}

static es_err fail_readonly(const failure *f) {
    if (f->ext == SQLITE_READONLY_DBMOVED)
        return es_fail(f->err, ES_EIO,
                       "%s: %s was moved or removed while it was open (%s); put it back, or "
                       "open it again where it is now",
                       f->what, f->file, f->detail);
    return es_fail(f->err, ES_EIO,
                   "%s: cannot write %s: %s (%s); check the permissions and owner of it, its -wal "
                   "and -shm files and its directory, and that its file system is not mounted "
                   "read-only",
                   f->what, f->file, readonly_why(f->ext), f->detail);
}

static es_err fail_cantopen(const failure *f) {
    char sys[128];
    if (f->ext == SQLITE_CANTOPEN_SYMLINK)
        return es_fail(f->err, ES_EIO,
                       "%s: %s is a symbolic link, which eskit never follows to a file it made "
                       "itself; remove it and try again",
                       f->what, f->file);
    system_error(f, sys, sizeof sys);
    return es_fail(f->err, ES_EIO,
                   "%s: cannot open %s, or the -wal or -shm file beside it (%s%s%s); check the "
                   "path, that its directory exists, and the permissions and owner of it, its "
                   "-wal and -shm files and its directory",
                   f->what, f->file, f->ext == SQLITE_CANTOPEN_ISDIR ? "it is a directory: " : "",
                   f->detail, sys);
}

static es_err fail_ioerr(const failure *f) {
    char sys[128];
    if (f->ext == SQLITE_IOERR_NOMEM)
        return es_fail(f->err, ES_ENOMEM, "%s: out of memory reading or writing %s", f->what,
                       f->file);
    system_error(f, sys, sizeof sys);
    int shm = f->ext == SQLITE_IOERR_SHMOPEN || f->ext == SQLITE_IOERR_SHMSIZE ||
              f->ext == SQLITE_IOERR_SHMLOCK || f->ext == SQLITE_IOERR_SHMMAP;
    return es_fail(f->err, ES_EIO,
                   "%s: I/O error on %s%s (%s%s); the disk or its file system failed: check it "
                   "(the kernel log tells more) and that it has free space, then retry",
                   f->what, shm ? "the -shm file of " : "", f->file, code_name(f->ext), sys);
}

static es_err fail_other(const failure *f) {
    if ((f->rc & 0xff) == SQLITE_NOMEM)
        return es_fail(f->err, ES_ENOMEM, "%s: out of memory working on %s", f->what, f->file);
    return es_fail(f->err, es_sql_code(f->rc), "%s: SQLite error on %s: %s", f->what, f->file,
                   f->detail);
}

es_err es_sql_fail_file(sqlite3 *db, int rc, const char *file, const char *what, es_error_t *err) {
    const char *name = file && *file ? file : db ? sqlite3_db_filename(db, "main") : NULL;
    failure f = {db,
                 rc,
                 extended(db, rc),
                 name && *name ? name : "an in-memory database",
                 what ? what : "SQLite",
                 detail_of(db, rc),
                 err};
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return fail_busy(&f);
    case SQLITE_FULL:
        return fail_full(&f);
    case SQLITE_CORRUPT:
        return fail_corrupt(&f);
    case SQLITE_NOTADB:
        return fail_notadb(&f);
    case SQLITE_READONLY:
        return fail_readonly(&f);
    case SQLITE_CANTOPEN:
        return fail_cantopen(&f);
    case SQLITE_IOERR:
        return fail_ioerr(&f);
    default:
        return fail_other(&f);
    }
}

es_err es_sql_fail(sqlite3 *db, int rc, const char *what, es_error_t *err) {
    return es_sql_fail_file(db, rc, NULL, what, err);
}

es_err es_sql_exec(sqlite3 *db, const char *file, const char *sql, const char *what,
                   es_error_t *err) {
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? ES_OK : es_sql_fail_file(db, rc, file, what, err);
}

es_err es_sql_prepare(sqlite3 *db, const char *file, const char *sql, sqlite3_stmt **out,
                      es_error_t *err) {
    int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL);
    if (rc == SQLITE_OK)
        return ES_OK;
    char what[112];
    snprintf(what, sizeof what, "preparing \"%.80s\"", sql);
    return es_sql_fail_file(db, rc, file, what, err);
}

es_err es_sql_step_done(sqlite3 *db, const char *file, sqlite3_stmt *s, const char *what,
                        es_error_t *err) {
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? ES_OK : es_sql_fail_file(db, rc, file, what, err);
}

es_err es_sql_prepare_all(sqlite3 *db, const char *file, const char *const *sql, size_t n,
                          sqlite3_stmt **st, es_error_t *err) {
    for (size_t i = 0; i < n; i++) {
        es_err e = sql[i] ? es_sql_prepare(db, file, sql[i], &st[i], err) : ES_OK;
        if (e != ES_OK)
            return e;
    }
    return ES_OK;
}

void es_sql_reset_all(sqlite3_stmt **st, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (st[i])
            sqlite3_reset(st[i]);
}

void es_sql_finalize_all(sqlite3_stmt **st, size_t n) {
    for (size_t i = 0; i < n; i++) {
        sqlite3_finalize(st[i]);
        st[i] = NULL;
    }
}

static const char *const tx_sql[ES_SQL_TX_N] = {
    [ES_SQL_TX_BEGIN] = "BEGIN",
    [ES_SQL_TX_BEGIN_IMMEDIATE] = "BEGIN IMMEDIATE",
    [ES_SQL_TX_COMMIT] = "COMMIT",
    [ES_SQL_TX_ROLLBACK] = "ROLLBACK",
};

es_sql_tx es_sql_tx_on(sqlite3 *db, const char *file) {
    return (es_sql_tx){.db = db, .file = file};
}

es_err es_sql_tx_prepare(es_sql_tx *t, es_error_t *err) {
    return es_sql_prepare_all(t->db, t->file, tx_sql, ES_SQL_TX_N, t->st, err);
}

void es_sql_tx_finalize(es_sql_tx *t) {
    es_sql_finalize_all(t->st, ES_SQL_TX_N);
}

static es_err tx_run(es_sql_tx *t, int k, const char *what, es_error_t *err) {
    if (t->st[k])
        return es_sql_step_done(t->db, t->file, t->st[k], what, err);
    return es_sql_exec(t->db, t->file, tx_sql[k], what, err);
}

es_err es_sql_begin(es_sql_tx *t, es_sql_begin_kind kind, const char *what, es_error_t *err) {
    int k = kind == ES_SQL_IMMEDIATE ? ES_SQL_TX_BEGIN_IMMEDIATE : ES_SQL_TX_BEGIN;
    return tx_run(t, k, what, err);
}

void es_sql_rollback(es_sql_tx *t) {
    if (t->db && !sqlite3_get_autocommit(t->db))
        tx_run(t, ES_SQL_TX_ROLLBACK, "rolling back", NULL);
}

es_err es_sql_commit(es_sql_tx *t, const char *what, es_error_t *err) {
    es_err e = tx_run(t, ES_SQL_TX_COMMIT, what, err);
    if (e != ES_OK)
        es_sql_rollback(t);
    return e;
}

es_err es_sql_end(es_sql_tx *t, es_err e, const char *what, es_error_t *err) {
    if (e == ES_OK)
        return es_sql_commit(t, what, err);
    es_sql_rollback(t);
    return e;
}
