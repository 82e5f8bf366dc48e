/* Retention (saga.retention.ms): ended instances whose transitions are published are deleted
 * with their targets, a chunk per poll, and counted by end state in es_saga_pruned. */
#include "saga_int.h"

#include <stdlib.h>
#include <string.h>

#define PRUNE_CHUNK 1000          /* instances deleted per transaction */
#define PRUNE_EVERY_US 60000000LL /* at most this often, unless the retention is shorter */

typedef struct ended {
    char id[ES_MAX_ID_LEN + 1];
    char state[16];
} ended;

/* Deletes up to PRUNE_CHUNK instances (and their targets) that ended before now - retention
 * and whose transitions are published, counting them by end state; *n: how many. */
static es_err prune_chunk(es_saga_t *c, int64_t now, size_t *n, es_error_t *err) {
    ended *v = malloc(PRUNE_CHUNK * sizeof *v);
    if (!v)
        return es_fail(err, ES_ENOMEM, "out of memory pruning saga instances");
    *n = 0;
    es_err e = es_saga_tx_begin(c, err);
    sqlite3_stmt *s = es_saga_stmt(c, S_ENDED_BEFORE);
    sqlite3_bind_int64(s, 2, now - c->retention_us);
    sqlite3_bind_int(s, 3, PRUNE_CHUNK);
    int rc = SQLITE_DONE;
    while (e == ES_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        es_saga_copy_str(v[*n].id, sizeof v[0].id, sqlite3_column_text(s, 0));
        es_saga_copy_str(v[*n].state, sizeof v[0].state, sqlite3_column_text(s, 1));
        ++*n;
    }
    sqlite3_reset(s);
    if (e == ES_OK && rc != SQLITE_DONE)
        e = es_saga_db_fail(c, "finding ended instances", err);
    static const char *const states[] = {ES_SAGA_COMPLETED, ES_SAGA_ABORTED, ES_SAGA_FAILED};
    uint64_t per_state[3] = {0};
    for (size_t i = 0; e == ES_OK && i < *n; i++) {
        for (int k = 0; k < 3; k++)
            per_state[k] += !strcmp(v[i].state, states[k]);
        s = es_saga_stmt(c, S_DROP_TARGETS);
        sqlite3_bind_text(s, 2, v[i].id, -1, SQLITE_STATIC);
        e = es_saga_step_done(c, s, "deleting an ended instance's commands", err);
        if (e == ES_OK) {
            s = es_saga_stmt(c, S_DROP_INSTANCE);
            sqlite3_bind_text(s, 2, v[i].id, -1, SQLITE_STATIC);
            e = es_saga_step_done(c, s, "deleting an ended instance", err);
        }
    }
    for (int k = 0; e == ES_OK && k < 3; k++) {
        if (!per_state[k])
            continue;
        s = es_saga_stmt(c, S_PRUNED_ADD);
        sqlite3_bind_text(s, 2, states[k], -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, (sqlite3_int64)per_state[k]);
        e = es_saga_step_done(c, s, "counting pruned instances", err);
    }
    free(v);
    e = es_saga_tx_end(c, e, err);
    if (e != ES_OK)
        *n = 0;
    return e;
}

/* Applies saga.retention.ms when due: a chunk per poll while there is more to delete. */
es_err es_saga_prune(es_saga_t *c, size_t *pruned, es_error_t *err) {
    int64_t now = es_now_us();
    *pruned = 0;
    if (c->retention_us <= 0 || now < c->prune_at_us)
        return ES_OK;
    es_err e = prune_chunk(c, now, pruned, err);
    if (e == ES_OK && *pruned < PRUNE_CHUNK)
        c->prune_at_us =
            now + (c->retention_us < PRUNE_EVERY_US ? c->retention_us : PRUNE_EVERY_US);
    return e;
}
