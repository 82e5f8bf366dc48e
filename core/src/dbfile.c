/*
 * Opening eskit's SQLite files for inspection, and telling them apart by their tables.
 */
#include "dbfile.h"
#include "sql.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *es_db_kind_name(es_db_kind kind) {
    switch (kind) {
    case ES_DB_NOT_SQLITE:
        return "not an SQLite database";
    case ES_DB_EMPTY:
        return "an empty SQLite database";
    case ES_DB_FOREIGN:
        return "an SQLite database without eskit's tables";
    case ES_DB_EVENT_STORE:
        return "an eskit event store";
    case ES_DB_STATE_STORE:
        return "an eskit state store (a Kafka command processor's)";
    case ES_DB_READ_MODEL:
        return "an eskit read model";
    case ES_DB_SAGA_DB:
        return "an eskit saga database";
    }
    return "an unknown kind of file";
}

static int side_exists(const char *path, const char *suffix) {
    size_t n = strlen(path) + strlen(suffix) + 1;
    char *p = malloc(n);
    struct stat st;
    int found = 0;
    if (p) {
        snprintf(p, n, "%s%s", path, suffix);
        found = lstat(p, &st) == 0;
        free(p);
    }
    return !p || found; /* out of memory: assume it is there, the open that needs no URI */
}

/* "file:<path, percent-encoded>?immutable=1". Caller frees. */
static char *immutable_uri(const char *path) {
    static const char hex[] = "0123456789abcdef";
    size_t n = strlen(path);
    char *uri = malloc(5 + 3 * n + sizeof "?immutable=1"), *p = uri;
    if (!uri)
        return NULL;
    p += sprintf(p, "file:");
    for (const unsigned char *c = (const unsigned char *)path; *c; c++) {
        if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
            strchr("/._-~", *c)) {
            *p++ = (char)*c;
        } else {
            *p++ = '%';
            *p++ = hex[*c >> 4];
            *p++ = hex[*c & 15];
        }
    }
    strcpy(p, "?immutable=1");
    return uri;
}

es_err es_db_open_readonly(const char *path, const char *what, int busy_ms, sqlite3 **db,
                           es_error_t *err) {
    struct stat st;
    *db = NULL;
    if (stat(path, &st) != 0)
        return es_fail(err, errno == ENOENT ? ES_ENOTFOUND : ES_EIO, "cannot open %s %s: %s", what,
                       path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return es_fail(err, ES_EINVAL, "%s is not a regular file; give the %s's database file",
                       path, what);
    /* No -wal: no connection has it open (the last one to close deletes it), so the file alone
     * is the database. A writer that opens it while we read commits to a -wal we do not see, or
     * checkpoints under us: the store's head check and 'esctl verify' stamp the file before and
     * after their reads (es_db_stamp_take) to tell that from damage. */
    int wal = side_exists(path, "-wal");
    if (wal && !side_exists(path, "-shm"))
        return es_fail(err, ES_EIO,
                       "cannot open %s %s read-only: it has a -wal file but no -shm (copied "
                       "without it, or its writer crashed and the -shm was removed), and reading "
                       "it would create one; open it once with a writer as the file's owner to "
                       "recover it, then inspect it",
                       what, path);
    int immutable = !wal && !side_exists(path, "-journal");
    char *uri = immutable ? immutable_uri(path) : NULL;
    if (immutable && !uri)
        return es_fail(err, ES_ENOMEM, "out of memory opening %s", path);
    int flags = SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | (immutable ? SQLITE_OPEN_URI : 0);
    int rc = sqlite3_open_v2(immutable ? uri : path, db, flags, NULL);
    free(uri);
    if (rc != SQLITE_OK) {
        char doing[96];
        snprintf(doing, sizeof doing, "opening the %s read-only", what);
        es_err e = es_sql_fail_file(*db, rc, path, doing, err);
        sqlite3_close(*db);
        *db = NULL;
        return e;
    }
    sqlite3_extended_result_codes(*db, 1);
    sqlite3_busy_timeout(*db, busy_ms);
    return ES_OK;
}

static void stamp_file(const char *path, const char *suffix, es_db_file_stamp *f) {
    size_t n = strlen(path) + strlen(suffix) + 1;
    char *name = malloc(n);
    struct stat st;
    memset(f, 0, sizeof *f);
    if (name)
        snprintf(name, n, "%s%s", path, suffix);
    int found = name && stat(name, &st) == 0;
    free(name);
    if (!found)
        return;
    f->exists = 1;
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    f->size = st.st_size;
    f->mtim = st.st_mtim;
}

void es_db_stamp_take(const char *path, es_db_stamp *s) {
    stamp_file(path, "", &s->file);
    stamp_file(path, "-wal", &s->wal);
}

static int same_file(const es_db_file_stamp *a, const es_db_file_stamp *b) {
    return a->exists == b->exists && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtim.tv_sec == b->mtim.tv_sec && a->mtim.tv_nsec == b->mtim.tv_nsec;
}

int es_db_stamp_same(const es_db_stamp *a, const es_db_stamp *b) {
    return same_file(&a->file, &b->file) && same_file(&a->wal, &b->wal);
}

int es_db_immutable(sqlite3 *db) {
    const char *name = db ? sqlite3_db_filename(db, "main") : NULL;
    return name && sqlite3_uri_boolean(name, "immutable", 0);
}

/* Which of eskit's tables the file has. */
typedef struct db_tables {
    int meta, events, projectors, checkpoints, saga, other;
} db_tables;

static es_err read_tables(sqlite3 *db, const char *path, db_tables *t, int *not_sqlite,
                          es_error_t *err) {
    sqlite3_stmt *s = NULL;
    memset(t, 0, sizeof *t);
    *not_sqlite = 0;
    int rc =
        sqlite3_prepare_v2(db, "SELECT name FROM sqlite_master WHERE type = 'table'", -1, &s, NULL);
    while (s && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(s, 0);
        name = name ? name : "";
        t->meta |= !strcmp(name, "es_meta");
        t->events |= !strcmp(name, "es_events");
        t->projectors |= !strcmp(name, "es_projectors");
        t->checkpoints |= !strcmp(name, "es_checkpoints");
        t->saga |= !strcmp(name, "es_saga_instances");
        t->other++;
    }
    sqlite3_finalize(s);
    if (rc == SQLITE_DONE)
        return ES_OK;
    if ((rc & 0xff) == SQLITE_NOTADB) {
        *not_sqlite = 1;
        return ES_OK;
    }
    return es_sql_fail_file(db, rc, path, "reading its list of tables", err);
}

static es_err has_kafka_offsets(sqlite3 *db, const char *path, int *found, es_error_t *err) {
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "SELECT 1 FROM es_meta WHERE key >= 'kafka.next:' AND key < "
                                "'kafka.next;' LIMIT 1",
                                -1, &s, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    sqlite3_finalize(s);
    *found = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW || rc == SQLITE_DONE)
        return ES_OK;
    return es_sql_fail_file(db, rc, path, "reading es_meta", err);
}

/* The kind the tables make, most specific first (a saga database is a read model too). */
static es_err probe(sqlite3 *db, const char *path, db_tables *t, es_db_kind *kind,
                    es_error_t *err) {
    int not_sqlite = 0, state = 0;
    es_err e = read_tables(db, path, t, &not_sqlite, err);
    if (e != ES_OK)
        return e;
    if (not_sqlite)
        *kind = ES_DB_NOT_SQLITE;
    else if (t->saga)
        *kind = ES_DB_SAGA_DB;
    else if (t->projectors && t->checkpoints)
        *kind = ES_DB_READ_MODEL;
    else if (t->meta && t->events)
        *kind = ES_DB_EVENT_STORE;
    else
        *kind = t->other ? ES_DB_FOREIGN : ES_DB_EMPTY;
    if (*kind == ES_DB_EVENT_STORE && (e = has_kafka_offsets(db, path, &state, err)) == ES_OK &&
        state)
        *kind = ES_DB_STATE_STORE;
    return e;
}

es_err es_db_probe(sqlite3 *db, const char *path, es_db_kind *kind, es_error_t *err) {
    db_tables t;
    return probe(db, path, &t, kind, err);
}

static const char *wanted_name(es_db_kind want) {
    switch (want) {
    case ES_DB_EVENT_STORE:
        return "an event store; pass the event store (--db, ESKIT_DB or db in eskit.conf)";
    case ES_DB_READ_MODEL:
        return "a read model; pass the read model (--readmodel, ESKIT_READMODEL_DB or "
               "readmodel.db in eskit.conf)";
    case ES_DB_SAGA_DB:
        return "a saga database; pass the saga coordinator's database (--saga-db, ESKIT_SAGA_DB "
               "or saga.db in eskit.conf)";
    default:
        return es_db_kind_name(want);
    }
}

es_err es_db_expect(sqlite3 *db, const char *path, es_db_kind want, es_error_t *err) {
    db_tables t;
    es_db_kind kind;
    es_err e = probe(db, path, &t, &kind, err);
    if (e != ES_OK)
        return e;
    /* By tables rather than by kind: a file that is two things (a store a projector was once
     * pointed at) serves both. */
    int ok = want == ES_DB_EVENT_STORE  ? t.meta && t.events
             : want == ES_DB_READ_MODEL ? t.projectors && t.checkpoints
             : want == ES_DB_SAGA_DB    ? t.saga
                                        : kind == want;
    if (ok && kind != ES_DB_NOT_SQLITE)
        return ES_OK;
    return es_fail(err, ES_EINVAL, "%s is %s, %s %s", path, es_db_kind_name(kind),
                   kind == ES_DB_NOT_SQLITE ? "so not" : "not", wanted_name(want));
}
