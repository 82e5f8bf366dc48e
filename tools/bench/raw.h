/*
 * Raw SQLite baselines: what the disk and SQLite do without eskit, on fresh
 * files in the same directory, with the durability eskit uses (WAL,
 * synchronous=FULL), prepared statements reused, and the very bytes an eskit
 * run wrote. These are the denominators of every ratio the benchmark prints.
 */
#ifndef ESKIT_BENCH_RAW_H
#define ESKIT_BENCH_RAW_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "blobs.h"

/* Opens path (created if missing) in WAL mode with synchronous=FULL. */
int raw_open(const char *path, sqlite3 **out);

/* Inserts every blob into "log(pos INTEGER PRIMARY KEY, envelope BLOB)",
 * rows_per_txn per transaction; *rows_per_s is the timed rate. */
int raw_append_only(const char *path, const blobs_t *b, size_t rows_per_txn, double *rows_per_s);

/* One table's rows, copied out of a store file. */
typedef struct raw_table {
    char name[128];
    size_t n_cols, n_rows;
    size_t n_indexes;       /* explicit and automatic (UNIQUE, TEXT PRIMARY KEY) */
    sqlite3_value **values; /* n_rows * n_cols */
} raw_table_t;

/* The rows a store wrote once per event: its event log table (the largest,
 * preferring one named *event*) and every table with as many rows (e.g. the
 * command ids of an engine). Tables written once per aggregate are left out:
 * eskit updates them in place, which a copy of their final rows can't replay. */
typedef struct raw_rows {
    char **schema; /* every CREATE statement of the source file, tables first */
    size_t n_schema;
    raw_table_t *tables; /* tables[0] is the event log */
    size_t n_tables;
    size_t n_rows; /* rows per table */
} raw_rows_t;

int raw_rows_load(const char *src, raw_rows_t *out);
/* "es_events+es_commands, 1 index", for the report. */
void raw_rows_describe(const raw_rows_t *r, char *out, size_t cap);
void raw_rows_free(raw_rows_t *r);

/* Creates src's whole schema in a fresh file and inserts the loaded rows, row
 * i of every table together, rows_per_txn per transaction: what eskit's own
 * tables and indexes cost before any of its logic runs. */
int raw_same_schema(const char *path, const raw_rows_t *r, size_t rows_per_txn, double *rows_per_s);

/* One durable commit per row, for latency. */
typedef struct raw_lat {
    sqlite3 *db;
    sqlite3_stmt *begin, *insert, *commit;
} raw_lat_t;

int raw_lat_open(const char *path, raw_lat_t *out);
/* BEGIN IMMEDIATE; INSERT one blob; COMMIT. *ns is the time it took. */
int raw_lat_one(raw_lat_t *l, const uint8_t *p, size_t len, int64_t *ns);
void raw_lat_close(raw_lat_t *l);

#endif
