#include "notes.h"

#include <string.h>

int notes_transient_left, notes_fixed;

static es_err migrate_v1(sqlite3 *db, int from, es_error_t *err) {
    (void)from;
    if (sqlite3_exec(db,
                     "CREATE TABLE notes(id TEXT, version INT, body TEXT, PRIMARY KEY(id, "
                     "version))",
                     NULL, NULL, NULL) != SQLITE_OK)
        return es_fail(err, ES_EIO, "create notes: %s", sqlite3_errmsg(db));
    return ES_OK;
}

static es_err migrate_v2(sqlite3 *db, int from, es_error_t *err) {
    (void)from;
    if (sqlite3_exec(db, "CREATE TABLE notes_v2(id TEXT, version INT, body TEXT, len INT)", NULL,
                     NULL, NULL) != SQLITE_OK)
        return es_fail(err, ES_EIO, "create notes_v2: %s", sqlite3_errmsg(db));
    return ES_OK;
}

static es_err apply_common(es_projector_ctx_t *ctx, const es_event_t *ev, const char *sql,
                           es_error_t *err) {
    if (!strcmp(ev->event_type, "test.v1.Unknown"))
        return es_fail(err, ES_EUNKNOWN_TYPE, "no such event type %s", ev->event_type);
    if (!strcmp(ev->event_type, "test.v1.Flaky") && notes_transient_left > 0) {
        notes_transient_left--;
        return es_fail(err, ES_ERETRY, "flaky, try again");
    }
    if (!strcmp(ev->event_type, "test.v1.Broken") && !notes_fixed)
        return es_fail(err, ES_EINVAL, "cannot apply %s of %s", ev->event_type, ev->aggregate_id);
    sqlite3_stmt *s = es_ctx_stmt(ctx, sql, err);
    if (!s)
        return err->code;
    sqlite3_bind_text(s, 1, ev->aggregate_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)ev->version);
    sqlite3_bind_text(s, 3, (const char *)ev->payload, (int)ev->payload_len, SQLITE_STATIC);
    return es_ctx_exec(ctx, s, err);
}

static es_err apply_v1(es_projector_ctx_t *ctx, const es_event_t *ev, es_error_t *err) {
    return apply_common(ctx, ev, "INSERT INTO notes VALUES (?1, ?2, ?3)", err);
}

static es_err apply_v2(es_projector_ctx_t *ctx, const es_event_t *ev, es_error_t *err) {
    return apply_common(ctx, ev, "INSERT INTO notes_v2 VALUES (?1, ?2, ?3, length(?3))", err);
}

static const char *const topics[] = {"test.note.events", NULL};
const es_projector_def notes_v1 = {.abi_version = ES_PROJECTOR_ABI,
                                   .name = "notes",
                                   .schema_version = 1,
                                   .topics = topics,
                                   .migrate = migrate_v1,
                                   .apply = apply_v1};
const es_projector_def notes_v2 = {.abi_version = ES_PROJECTOR_ABI,
                                   .name = "notes",
                                   .schema_version = 2,
                                   .topics = topics,
                                   .migrate = migrate_v2,
                                   .apply = apply_v2};
