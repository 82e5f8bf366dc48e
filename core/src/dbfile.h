/*
 * eskit's SQLite files seen from outside: opening one for inspection without
 * writing or creating anything, and telling which eskit file it is (event
 * store, state store, read model, saga database, or none). The store
 * (log_sqlite.c), the read-model queries (readmodel.c, dlq.c) and the saga
 * queries (saga_query.c) open their files through these when they only look;
 * what an SQLite error on one means is said in sql.c.
 */
#ifndef ESKIT_DBFILE_H
#define ESKIT_DBFILE_H

#include "internal.h"

#include <sqlite3.h>

/* What a file is, as far as its tables tell. */
typedef enum es_db_kind {
    ES_DB_NOT_SQLITE,  /* not an SQLite database, or its header is destroyed */
    ES_DB_EMPTY,       /* an SQLite database without tables */
    ES_DB_FOREIGN,     /* tables, none of them eskit's */
    ES_DB_EVENT_STORE, /* es_meta + es_events: the embedded backend's log */
    ES_DB_STATE_STORE, /* an event store a Kafka command processor keeps (kafka.next:* keys) */
    ES_DB_READ_MODEL,  /* es_projectors + es_checkpoints: projectors' read model */
    ES_DB_SAGA_DB,     /* es_saga_instances: a saga coordinator's database (a read model too) */
} es_db_kind;

/* "an eskit event store", "an SQLite database without eskit tables", ... */
const char *es_db_kind_name(es_db_kind kind);

/* Opens path read-only for inspection: never writes it and never creates a file beside it.
 * With a -wal or -journal file present (a connection has it open, or one crashed) this is
 * SQLite's read-only open, which reads through the existing -wal/-shm; without one, no
 * connection has the database open and it is opened immutable (no locks, no -wal/-shm), as
 * SQLite would otherwise create them (as root: files the owner can then not open) or fail
 * where it cannot; a -wal without its -shm is refused (reading would create the -shm). A missing
 * file is ES_ENOTFOUND; what names the file ("event store"). A reader that must not mistake a
 * writer's arrival for damage stamps the file (es_db_stamp_take) before this and after its
 * reads. */
es_err es_db_open_readonly(const char *path, const char *what, int busy_ms, sqlite3 **db,
                           es_error_t *err);
/* What a database file and its -wal were at one moment (device, inode, size, modification
 * time; whether the -wal exists). A database opened immutable is read without locks, so a
 * writer may come while it is read: its commits go to a -wal the reader does not see, or are
 * checkpointed into the file under it. Either changes the stamp (a writer that opened, committed,
 * checkpointed and removed its -wal in between leaves the file's size or time changed). */
typedef struct es_db_file_stamp {
    int exists;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtim;
} es_db_file_stamp;
typedef struct es_db_stamp {
    es_db_file_stamp file, wal;
} es_db_stamp;
/* Stamps path and path-wal now. */
void es_db_stamp_take(const char *path, es_db_stamp *s);
/* 1 when nothing changed between the two stamps. */
int es_db_stamp_same(const es_db_stamp *a, const es_db_stamp *b);
/* 1 when db was opened immutable (no locks; see es_db_open_readonly). */
int es_db_immutable(sqlite3 *db);
/* Tells what the open database is from its eskit tables. */
es_err es_db_probe(sqlite3 *db, const char *path, es_db_kind *kind, es_error_t *err);
/* ES_OK when the database is of kind want (an event store accepts a state store, a read model a
 * saga database); else ES_EINVAL naming what it is and which setting takes the right file. */
es_err es_db_expect(sqlite3 *db, const char *path, es_db_kind want, es_error_t *err);

#endif
