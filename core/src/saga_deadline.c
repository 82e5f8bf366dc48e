/* Durable deadlines: a running step whose deadline passed times out and its instance
 * compensates, in a transaction of its own. */
#include "saga_int.h"

#include <stdio.h>
#include <stdlib.h>

es_err es_saga_fire_deadlines(es_saga_t *c, size_t *fired, es_error_t *err) {
    int64_t now = es_saga_now(c);
    char(*ids)[ES_MAX_ID_LEN + 1] = NULL;
    size_t n = 0;
    sqlite3_stmt *s = es_saga_stmt(c, S_DUE);
    sqlite3_bind_int64(s, 2, now);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        void *grown = realloc(ids, (n + 1) * sizeof *ids);
        if (!grown)
            break;
        ids = grown;
        es_saga_copy_str(ids[n++], sizeof ids[0], sqlite3_column_text(s, 0));
    }
    sqlite3_reset(s);
    es_err e = rc == SQLITE_DONE ? ES_OK : es_saga_db_fail(c, "finding deadlines", err);
    if (e == ES_OK && n > 0) {
        e = es_saga_tx_begin(c, err);
        for (size_t i = 0; e == ES_OK && i < n; i++) {
            saga_inst in;
            c->span_set = 0; /* each instance's transitions: a span under its start event */
            if ((e = es_saga_inst_load(c, ids[i], &in, err)) != ES_OK)
                break;
            const es_saga_step_t *st = es_saga_step_at(c, in.step);
            char why[160];
            snprintf(why, sizeof why, "step %s timed out after %lld ms", st->name,
                     (long long)st->timeout_ms);
            e = es_saga_hist(c, &in, "timed_out",
                             HIST(.step1 = in.step + 1, .deadline = in.deadline), now, err);
            if (e == ES_OK)
                e = es_saga_begin_compensation(c, &in, in.step, why, now, err);
            if (e == ES_OK)
                e = es_saga_inst_save(c, &in, now, err);
            es_saga_inst_release(c, &in);
        }
        e = es_saga_tx_end(c, e, err);
        if (e == ES_OK)
            c->stats.timeouts += n;
    }
    free(ids);
    *fired = e == ES_OK ? n : 0;
    return e;
}
