/*
 * The read-model database as the runner sees it: its es_* tables and the lock a
 * runner and a replay of one projector take turns on. The crash guard beside it is
 * crashguard.c; the dead-letter rows and their delivery to "<topic>.dlq" are dlq.c.
 */
#include "projector_int.h"
#include "dbfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

static const char rm_schema[] =
    "CREATE TABLE IF NOT EXISTS es_projectors(name TEXT PRIMARY KEY, schema_version INTEGER NOT "
    "NULL, tables TEXT NOT NULL, topics TEXT NOT NULL, log_id TEXT NOT NULL,"
    " built_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS es_checkpoints(projector TEXT NOT NULL, topic TEXT NOT NULL,"
    " partition INTEGER NOT NULL, next_offset INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
    " PRIMARY KEY(projector, topic, partition)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS es_dlq(id INTEGER PRIMARY KEY, projector TEXT NOT NULL,"
    " topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL, key TEXT,"
    " event_type TEXT, code INTEGER NOT NULL, error TEXT NOT NULL, attempts INTEGER NOT NULL,"
    " parked_at INTEGER NOT NULL, redriven_at INTEGER, value BLOB,"
    " published INTEGER NOT NULL DEFAULT 0, UNIQUE(projector, topic, partition, offset));"
    /* The log-order rule's memory: the last version taken of each aggregate. */
    "CREATE TABLE IF NOT EXISTS es_versions(projector TEXT NOT NULL, aggregate_type TEXT NOT NULL,"
    " aggregate_id TEXT NOT NULL, version INTEGER NOT NULL,"
    " PRIMARY KEY(projector, aggregate_type, aggregate_id)) WITHOUT ROWID;";

/* A writer creates the runner's tables in a new or empty file, or one that has them, but never
 * makes an event store a read model too. */
static es_err check_not_a_store(sqlite3 *db, const char *path, es_error_t *err) {
    es_db_kind kind = ES_DB_EMPTY;
    es_err e = es_db_probe(db, path, &kind, err);
    if (e == ES_OK && (kind == ES_DB_EVENT_STORE || kind == ES_DB_STATE_STORE))
        e = es_db_expect(db, path, ES_DB_READ_MODEL, err);
    return e;
}

es_err es_rm_open(const es_config_t *cfg, const char *path, rm_mode mode, sqlite3 **db,
                  es_error_t *err) {
    return es_rm_open_as(cfg, path, mode, "read model", db, err);
}

es_err es_rm_open_as(const es_config_t *cfg, const char *path, rm_mode mode, const char *noun,
                     sqlite3 **db, es_error_t *err) {
    char what[64];
    *db = NULL;
    int busy_ms = (int)es_config_get_int(cfg, "sqlite.busy.timeout.ms");
    if (mode == RM_READONLY) {
        es_err e = es_db_open_readonly(path, noun, busy_ms, db, err);
        if (e == ES_OK && (e = es_db_expect(*db, path, ES_DB_READ_MODEL, err)) != ES_OK) {
            sqlite3_close(*db);
            *db = NULL;
        }
        return e;
    }
    /* A rebuild target is a file eskit made just before (replay.c): a link there is not ours. */
    int nofollow = mode == RM_BULK ? SQLITE_OPEN_NOFOLLOW : 0;
    int rc = sqlite3_open_v2(
        path, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | nofollow,
        NULL);
    if (rc != SQLITE_OK) {
        snprintf(what, sizeof what, "opening the %s", noun);
        es_err e = es_sql_fail_file(*db, rc, path, what, err);
        sqlite3_close(*db);
        *db = NULL;
        return e;
    }
    sqlite3_busy_timeout(*db, busy_ms);
    es_err e = check_not_a_store(*db, path, err);
    if (e != ES_OK) {
        sqlite3_close(*db);
        *db = NULL;
        return e;
    }
    char pragmas[160];
    if (mode == RM_BULK)
        snprintf(pragmas, sizeof pragmas,
                 "PRAGMA journal_mode=MEMORY; PRAGMA synchronous=OFF; PRAGMA cache_size=-16384;");
    else
        snprintf(pragmas, sizeof pragmas, "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s;",
                 es_config_get(cfg, "sqlite.synchronous"));
    snprintf(what, sizeof what, "setting up the %s", noun);
    e = es_sql_exec(*db, path, pragmas, what, err);
    if (e == ES_OK) {
        snprintf(what, sizeof what, "creating the es_* tables of the %s", noun);
        e = es_sql_exec(*db, path, rm_schema, what, err);
    }
    if (e != ES_OK) {
        sqlite3_close(*db);
        *db = NULL;
    }
    return e;
}

char *es_rm_side_path(const char *rm_path, const char *projector, const char *suffix) {
    size_t n = strlen(rm_path) + strlen(projector) + strlen(suffix) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s-%s%s", rm_path, projector, suffix);
    return p;
}

es_err es_rm_lock_open(const char *rm_path, const char *projector, int *fd, es_error_t *err) {
    char *path = es_rm_side_path(rm_path, projector, ".lock");
    if (!path)
        return es_fail(err, ES_ENOMEM, "out of memory");
    es_err e = es_side_file_open(path, "lock file", fd, err);
    free(path);
    return e;
}

int es_rm_lock(int fd, int timeout_ms) {
    int64_t deadline = es_now_us() + (int64_t)timeout_ms * 1000;
    for (int wait = 1;; wait = wait < 20 ? wait * 2 : 20) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            return 1;
        if (errno != EWOULDBLOCK && errno != EINTR)
            return 0;
        if (timeout_ms >= 0 && es_now_us() >= deadline)
            return 0;
        es_sleep_ms(wait);
    }
}

void es_rm_unlock(int fd) {
    flock(fd, LOCK_UN);
}

void es_rm_group(const es_config_t *cfg, const char *projector, char *out, size_t cap) {
    snprintf(out, cap, "%s.%s", es_config_get(cfg, "service.name"), projector);
}

/* Opens an existing read model to look at it: a missing file is ES_ENOTFOUND, not a new empty
 * model, and another kind of file is refused, naming what it is. */
es_err es_rm_open_existing(const es_config_t *cfg, sqlite3 **db, es_error_t *err) {
    const char *path = es_config_get(cfg, "readmodel.db");
    if (access(path, F_OK) != 0)
        return es_fail(err, ES_ENOTFOUND,
                       "no read model at %s; run a projector first or set readmodel.db", path);
    return es_rm_open(cfg, path, RM_READONLY, db, err);
}
