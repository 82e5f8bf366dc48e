/*
 * sql.c, the one SQLite layer: what each SQLite failure says (what happened, which file, what
 * to do), statement tables, and the transaction helper.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sql.h"
#include "testutil.h"

static char *dir, *path;

static void setup(void) {
    dir = tu_tempdir();
    cr_assert_not_null(dir);
    path = tu_path(dir, "some.db");
}

static void teardown(void) {
    tu_rmtree(dir);
    free(dir);
    free(path);
}

TestSuite(sql, .init = setup, .fini = teardown);

static sqlite3 *open_db(const char *p, int flags) {
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(p, &db, flags, NULL), SQLITE_OK, "%s", p);
    sqlite3_extended_result_codes(db, 1);
    return db;
}

static sqlite3 *open_rw(void) {
    return open_db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
}

static void exec_ok(sqlite3 *db, const char *sql) {
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db));
}

static long long count(sqlite3 *db, const char *sql) {
    sqlite3_stmt *s = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
    long long n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return n;
}

static void expect_says(const es_error_t *err, const char *const *words) {
    for (size_t i = 0; words[i]; i++)
        cr_expect(strstr(err->message, words[i]), "no \"%s\" in: %s", words[i], err->message);
}

Test(sql, a_full_database_says_the_disk_is_full_names_the_file_and_to_free_space) {
    sqlite3 *db = open_rw();
    exec_ok(db, "CREATE TABLE t(x); PRAGMA max_page_count = 8");
    es_error_t err = {0};
    es_err e = ES_OK;
    for (int i = 0; i < 1000 && e == ES_OK; i++)
        e = es_sql_exec(db, path, "INSERT INTO t VALUES (randomblob(1000))", "adding a row", &err);
    cr_assert_eq(e, ES_EIO, "%s", err.message);
    expect_says(&err,
                (const char *const[]){"adding a row: ", "disk full", path, "free space", NULL});
    sqlite3_close(db);
}

Test(sql, a_read_only_file_says_it_cannot_be_written_and_what_to_check) {
    sqlite3 *db = open_rw();
    exec_ok(db, "CREATE TABLE t(x)");
    sqlite3_close(db);
    db = open_db(path, SQLITE_OPEN_READONLY);
    es_error_t err = {0};
    cr_assert_eq(es_sql_exec(db, path, "INSERT INTO t VALUES (1)", "adding a row", &err), ES_EIO);
    expect_says(&err,
                (const char *const[]){"cannot write", path, "permissions", "read-only", NULL});
    sqlite3_close(db);
}

Test(sql, a_lock_held_past_the_timeout_is_busy_and_says_to_retry_or_raise_it) {
    sqlite3 *holder = open_rw(), *db = open_rw();
    exec_ok(holder, "CREATE TABLE t(x); BEGIN IMMEDIATE; INSERT INTO t VALUES (1)");
    sqlite3_busy_timeout(db, 10);
    es_sql_tx tx = es_sql_tx_on(db, path);
    es_error_t err = {0};
    cr_assert_eq(es_sql_begin(&tx, ES_SQL_IMMEDIATE, "starting a write", &err), ES_EBUSY);
    expect_says(&err,
                (const char *const[]){path, "locked", "sqlite.busy.timeout.ms", "retry", NULL});
    cr_expect(sqlite3_get_autocommit(db), "no transaction was left open");
    sqlite3_close(db);
    sqlite3_close(holder);
}

/* Overwrites the first byte of table t's root page with 0, which no b-tree page type is. */
static void corrupt_table(const char *p) {
    sqlite3 *db = open_rw();
    long long page = count(db, "SELECT rootpage FROM sqlite_master WHERE name = 't'");
    long long size = count(db, "PRAGMA page_size");
    sqlite3_close(db);
    FILE *f = fopen(p, "r+b");
    cr_assert_not_null(f);
    cr_assert_eq(fseek(f, (long)((page - 1) * size), SEEK_SET), 0);
    cr_assert_eq(fputc(0, f), 0);
    cr_assert_eq(fclose(f), 0);
}

Test(sql, a_corrupt_page_says_the_file_is_corrupt_and_to_restore_it_from_a_backup) {
    sqlite3 *db = open_rw();
    exec_ok(db, "CREATE TABLE t(x); INSERT INTO t VALUES (1)");
    sqlite3_close(db);
    corrupt_table(path);
    db = open_rw();
    es_error_t err = {0};
    cr_assert_eq(es_sql_exec(db, NULL, "SELECT * FROM t", "reading t", &err), ES_EIO);
    /* NULL file: the connection's own name for it */
    expect_says(&err, (const char *const[]){"some.db is corrupt", "restore it from a backup",
                                            "esctl verify", NULL});
    sqlite3_close(db);
}

Test(sql, a_file_that_is_no_database_says_so_and_to_check_the_path) {
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("these are someone's notes, long enough to hold an SQLite header or more\n", f);
    fclose(f);
    sqlite3 *db = open_rw();
    es_error_t err = {0};
    cr_assert_eq(es_sql_exec(db, path, "SELECT * FROM sqlite_master", "reading", &err), ES_EIO);
    expect_says(&err,
                (const char *const[]){path, "is not an SQLite database", "check the path", NULL});
    sqlite3_close(db);
}

Test(sql, a_file_that_cannot_be_opened_says_which_and_what_to_check) {
    char *missing = tu_path(dir, "no-such-dir/some.db");
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(missing, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    cr_assert_eq(rc & 0xff, SQLITE_CANTOPEN);
    es_error_t err = {0};
    cr_assert_eq(es_sql_fail_file(db, rc, missing, "opening it", &err), ES_EIO);
    expect_says(&err, (const char *const[]){"cannot open", missing, "directory exists",
                                            "permissions", NULL});
    sqlite3_close(db);
    free(missing);
}

Test(sql, an_io_error_names_the_failed_call_and_says_to_check_the_disk) {
    es_error_t err = {0};
    cr_assert_eq(es_sql_fail_file(NULL, SQLITE_IOERR_FSYNC, "x.db", "committing", &err), ES_EIO);
    expect_says(&err, (const char *const[]){"committing: I/O error on x.db", "SQLITE_IOERR_FSYNC",
                                            "kernel log", NULL});
    cr_assert_eq(es_sql_fail_file(NULL, SQLITE_IOERR_SHMMAP, "x.db", "reading", &err), ES_EIO);
    expect_says(&err, (const char *const[]){"the -shm file of x.db", NULL});
}

Test(sql, codes_say_busy_is_transient_and_a_storage_fault_is_io) {
    cr_expect_eq(es_sql_code(SQLITE_BUSY), ES_EBUSY);
    cr_expect_eq(es_sql_code(SQLITE_BUSY_SNAPSHOT), ES_EBUSY);
    cr_expect_eq(es_sql_code(SQLITE_LOCKED), ES_EBUSY);
    cr_expect_eq(es_sql_code(SQLITE_NOMEM), ES_ENOMEM);
    cr_expect_eq(es_sql_code(SQLITE_IOERR_NOMEM), ES_ENOMEM);
    const int faults[] = {SQLITE_FULL,   SQLITE_IOERR_WRITE,        SQLITE_CORRUPT,
                          SQLITE_NOTADB, SQLITE_READONLY_DIRECTORY, SQLITE_CANTOPEN};
    for (size_t i = 0; i < sizeof faults / sizeof *faults; i++) {
        cr_expect_eq(es_sql_code(faults[i]), ES_EIO, "%d", faults[i]);
        cr_expect(es_sql_storage_fault(faults[i]), "%d", faults[i]);
    }
    cr_expect_not(es_sql_storage_fault(SQLITE_CONSTRAINT_UNIQUE));
    cr_expect_not(es_sql_storage_fault(SQLITE_BUSY));
}

Test(sql, an_sql_error_keeps_sqlites_words_and_names_the_file) {
    sqlite3 *db = open_rw();
    exec_ok(db, "CREATE TABLE t(x PRIMARY KEY); INSERT INTO t VALUES (1)");
    es_error_t err = {0};
    cr_assert_eq(es_sql_exec(db, path, "INSERT INTO t VALUES (1)", "adding a row", &err), ES_EIO);
    expect_says(&err,
                (const char *const[]){"adding a row: ", path, "UNIQUE constraint failed", NULL});
    sqlite3_close(db);
}

Test(sql, a_statement_table_prepares_each_skips_null_ones_and_names_the_one_that_fails) {
    sqlite3 *db = open_rw();
    exec_ok(db, "CREATE TABLE t(x)");
    const char *const sql[] = {"SELECT x FROM t", NULL, "INSERT INTO t VALUES (?1)",
                               "SELECT y FROM nowhere"};
    sqlite3_stmt *st[4] = {0};
    es_error_t err = {0};
    cr_assert_eq(es_sql_prepare_all(db, path, sql, 3, st, &err), ES_OK, "%s", err.message);
    cr_expect(st[0] && !st[1] && st[2]);
    sqlite3_bind_int(st[2], 1, 7);
    cr_assert_eq(es_sql_step_done(db, path, st[2], "adding a row", &err), ES_OK, "%s", err.message);
    cr_expect_eq(count(db, "SELECT count(*) FROM t"), 1);
    es_sql_finalize_all(st, 3);
    cr_expect(!st[0] && !st[2], "finalized statements are NULL");
    cr_assert_eq(es_sql_prepare_all(db, path, sql, 4, st, &err), ES_EIO);
    expect_says(&err, (const char *const[]){"SELECT y FROM nowhere", "no such table", NULL});
    es_sql_finalize_all(st, 4);
    sqlite3_close(db);
}

Test(sql, a_transaction_commits_its_work_and_one_that_failed_is_rolled_back) {
    sqlite3 *db = open_rw();
    exec_ok(db, "CREATE TABLE t(x)");
    es_sql_tx tx = es_sql_tx_on(db, path);
    es_error_t err = {0};
    cr_assert_eq(es_sql_tx_prepare(&tx, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_sql_begin(&tx, ES_SQL_IMMEDIATE, "adding", &err), ES_OK);
    exec_ok(db, "INSERT INTO t VALUES (1)");
    cr_assert_eq(es_sql_end(&tx, ES_OK, "adding", &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_sql_begin(&tx, ES_SQL_DEFERRED, "adding", &err), ES_OK);
    exec_ok(db, "INSERT INTO t VALUES (2)");
    cr_assert_eq(es_sql_end(&tx, ES_ECONFLICT, "adding", &err), ES_ECONFLICT);
    cr_expect(sqlite3_get_autocommit(db), "rolled back");
    cr_expect_eq(count(db, "SELECT count(*) FROM t"), 1, "the first committed, the second not");
    es_sql_rollback(&tx); /* with none open: nothing happens */
    es_sql_tx_finalize(&tx);
    sqlite3_close(db);
}

Test(sql, a_commit_that_fails_is_reported_and_its_transaction_rolled_back) {
    sqlite3 *db = open_rw(), *reader = open_rw();
    exec_ok(db, "PRAGMA journal_mode = DELETE; CREATE TABLE t(x); INSERT INTO t VALUES (0)");
    /* A reader's shared lock keeps a rollback-journal COMMIT from its exclusive lock. */
    sqlite3_stmt *r = NULL;
    cr_assert_eq(sqlite3_prepare_v2(reader, "SELECT x FROM t", -1, &r, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(r), SQLITE_ROW);
    es_sql_tx tx = es_sql_tx_on(db, path);
    es_error_t err = {0};
    cr_assert_eq(es_sql_begin(&tx, ES_SQL_IMMEDIATE, "adding", &err), ES_OK);
    exec_ok(db, "INSERT INTO t VALUES (1)");
    cr_assert_eq(es_sql_commit(&tx, "committing the row", &err), ES_EBUSY);
    expect_says(&err, (const char *const[]){"committing the row: ", path, "retry", NULL});
    cr_expect(sqlite3_get_autocommit(db), "the failed transaction was rolled back");
    sqlite3_finalize(r);
    cr_expect_eq(count(db, "SELECT count(*) FROM t"), 1, "the row was not committed");
    sqlite3_close(reader);
    sqlite3_close(db);
}
