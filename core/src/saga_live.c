/*
 * Live instances kept in memory: the coordinator's instances that are running or compensating,
 * as saga.db holds them, with their start event decoded. A handling read its instance's row
 * and decoded the start event again at every event (5 times an order in the bench, 16k
 * instructions each, half of it the decode); now it reads them here once.
 *
 * Write-through: an entry is made or changed only after its row was written in the open
 * transaction (es_saga_live_keep), so the memory is never ahead of saga.db except for that
 * transaction. Whatever may undo a transaction makes the whole memory stale, and the next lend
 * empties it before use:
 *  - a rollback of the connection's transaction (SQLite's rollback hook: a failed batch, a
 *    failed commit, a failed relay, deadline or publication transaction, whoever ran it);
 *  - a handling that failed inside the runner's batch, whose savepoint is rolled back, which
 *    the hook does not see (es_saga_rolled_back);
 *  - another connection's commit to saga.db (PRAGMA data_version, read at every lend), e.g. a
 *    second coordinator of the same saga against saga.h's rule.
 * The memory is emptied only while no copy is lent out (a handling's copy shares its entry's
 * start event). Ended instances leave at the save that ends them and are not kept when loaded,
 * so retention (which deletes only ended ones) and a later start of the same id see saga.db
 * alone. At most cache.aggregates entries; the least recently used go first, never a lent one.
 */
#include "saga_int.h"

#include "lru.h"

#include <stdlib.h>
#include <string.h>

struct saga_live {
    es_lru_t *map; /* instance id -> saga_inst (owning its start_*) */
    sqlite3 *db;
    sqlite3_stmt *data_version;
    int64_t seen_version; /* -1: not read yet */
    int stale;
    size_t n_lent; /* copies handed out and not yet returned: the memory is not emptied */
};

static void entry_free(void *v) {
    saga_inst *in = v;
    in->borrowed = 0;
    es_saga_inst_free(in);
    free(in);
}

static int entry_lent(const void *v) {
    return ((const saga_inst *)v)->lent > 0;
}

static void on_rollback(void *opaque) {
    ((saga_live *)opaque)->stale = 1;
}

es_err es_saga_live_open(es_saga_t *c, es_error_t *err) {
    long long cap = es_config_get_int(c->cfg, "cache.aggregates");
    if (cap <= 0)
        return ES_OK; /* nothing kept: every handling reads saga.db */
    saga_live *l = calloc(1, sizeof *l);
    if (l)
        l->map = es_lru_new((size_t)cap, entry_free, entry_lent);
    if (!l || !l->map) {
        free(l);
        return es_fail(err, ES_ENOMEM, "out of memory");
    }
    l->db = c->db;
    l->seen_version = -1;
    if (sqlite3_prepare_v2(c->db, "PRAGMA data_version", -1, &l->data_version, NULL) != SQLITE_OK) {
        es_lru_destroy(l->map);
        free(l);
        return es_saga_db_fail(c, "preparing the live instances' check", err);
    }
    sqlite3_rollback_hook(c->db, on_rollback, l);
    c->live = l;
    return ES_OK;
}

void es_saga_live_close(es_saga_t *c) {
    saga_live *l = c->live;
    if (!l)
        return;
    sqlite3_rollback_hook(l->db, NULL, NULL);
    sqlite3_finalize(l->data_version);
    es_lru_destroy(l->map);
    free(l);
    c->live = NULL;
}

void es_saga_live_forget(es_saga_t *c) {
    if (c->live)
        c->live->stale = 1;
}

/* Empties the memory when it may no longer be saga.db's; 0 when it cannot be used now. */
static int live_fresh(saga_live *l) {
    int rc = sqlite3_step(l->data_version);
    int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(l->data_version, 0) : -1;
    sqlite3_reset(l->data_version);
    if (v < 0 || v != l->seen_version)
        l->stale = 1;
    l->seen_version = v;
    if (l->stale && l->n_lent == 0) {
        es_lru_clear(l->map);
        l->stale = v < 0;
    }
    return !l->stale;
}

int es_saga_live_lend(es_saga_t *c, const char *id, saga_inst *in) {
    saga_live *l = c->live;
    if (!l || !live_fresh(l))
        return 0;
    saga_inst *kept = es_lru_get(l->map, id, strlen(id));
    if (!kept)
        return 0;
    kept->lent++;
    l->n_lent++;
    memcpy(in, kept, sizeof *in);
    in->borrowed = 1;
    return 1;
}

void es_saga_live_return(es_saga_t *c, const saga_inst *in) {
    saga_live *l = c->live;
    saga_inst *kept = l ? es_lru_get(l->map, in->id, strlen(in->id)) : NULL;
    if (kept && kept->lent > 0) {
        kept->lent--;
        l->n_lent--;
    }
}

/* Whether in has ended (completed, aborted or failed). */
static int ended(const saga_inst *in) {
    return strcmp(in->state, ES_SAGA_RUNNING) && strcmp(in->state, ES_SAGA_COMPENSATING);
}

void es_saga_live_keep(es_saga_t *c, saga_inst *in) {
    saga_live *l = c->live;
    if (!l || l->stale)
        return; /* emptied before the next lend anyway */
    size_t klen = strlen(in->id);
    saga_inst *kept = es_lru_get(l->map, in->id, klen);
    if (in->borrowed) {
        if (!kept)
            return;
        if (ended(in)) { /* in's start_* go with the entry: in may only be released now */
            l->n_lent -= (size_t)kept->lent;
            kept->lent = 0;
            es_lru_remove(l->map, in->id, klen);
            return;
        }
        int lent = kept->lent; /* the row as just written; the start event is the entry's own */
        memcpy(kept, in, sizeof *kept);
        kept->borrowed = 0;
        kept->lent = lent;
        return;
    }
    if (kept || ended(in))
        return; /* loaded beside a kept copy (not done here), or nothing to keep */
    saga_inst *entry = malloc(sizeof *entry);
    if (!entry)
        return;
    memcpy(entry, in, sizeof *entry);
    entry->lent = 1; /* in is its copy until released */
    l->n_lent++;
    in->borrowed = 1; /* the entry owns the start event from here */
    if (es_lru_put(l->map, in->id, klen, entry) != 0) {
        l->n_lent--;
        memset(in, 0, sizeof *in); /* freed with the entry: nothing is left to use */
    }
}
