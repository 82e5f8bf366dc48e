/*
 * A saga coordinator's metrics (docs/observability.md): instances by state, the commands and
 * compensations it sent, the steps that timed out, the outbox's depth and how long the oldest
 * passed deadline has waited; and the counts of instances by state that es_saga_stats and
 * es_saga_active report, which are kept whatever the metrics.
 *
 * The coordinator's thread measures at the end of each round (es_saga_mx_round): its counters
 * from its own stats, and what saga.db holds (instances by state, the outbox, the earliest
 * deadline of a running step) after a round that changed something and otherwise at most once
 * a second. The scrape thread reads only atomics: it never touches the saga database. The
 * overdue gauge is computed at the scrape from the earliest deadline, so it keeps growing
 * while the coordinator is not polled.
 *
 * Instances by state are counted once (at the first take after es_saga_counts_open) and then
 * kept:
 * each instance saved notes its move (es_saga_count_move: the old state -1, the new +1; a new
 * instance +1) and the next take adds the moves, all of whose transactions committed by then,
 * unless a transaction rolled back or may have (es_saga_count_undo) or another connection
 * committed to saga.db (PRAGMA data_version; e.g. a coordinator of another saga, or of this one
 * against saga.h's rule), which count them again (the latter at most once a second). Only this
 * saga's coordinator writes its instances, so its own moves are the whole change. Retention
 * needs nothing: it moves an ended instance from the rows to es_saga_pruned, the same count.
 * So es_saga_stats and es_saga_active cost the same whatever saga.db has kept (they counted
 * every retained instance, 5 scans a call, before). The outbox (a partial index of the unsent
 * rows) and the earliest deadline (the first entry of a partial index of the rows with one)
 * cost what is live, not what saga.db has kept.
 */
#include "saga_int.h"

#include "metrics_int.h"

#include <stdlib.h>
#include <string.h>

#define REFRESH_US 1000000

static const char *const state_names[SAGA_STATES] = {
    ES_SAGA_RUNNING, ES_SAGA_COMPENSATING, ES_SAGA_COMPLETED, ES_SAGA_ABORTED, ES_SAGA_FAILED};

enum { C_STATES, C_PRUNED, C_DATA_VERSION, C_COUNT };
_Static_assert((int)C_COUNT == (int)SAGA_COUNT_QUERIES, "saga_counts.q holds these");

/* Instances by state: the rows, plus the ended ones saga.retention.ms deleted (es_saga_pruned),
 * so that pruning does not make the ended counts fall. */
static const char *const counts_sql[C_COUNT] = {
    [C_STATES] = "SELECT state, count(*) FROM es_saga_instances WHERE saga = ?1 GROUP BY state",
    [C_PRUNED] = "SELECT state, n FROM es_saga_pruned WHERE saga = ?1",
    [C_DATA_VERSION] = "PRAGMA data_version",
};

enum { Q_OUTBOX, Q_DEADLINE, Q_COUNT };

static const char *const mx_sql[Q_COUNT] = {
    [Q_OUTBOX] = "SELECT count(*) FROM es_saga_targets WHERE saga = ?1 AND sent_at = 0",
    [Q_DEADLINE] = ("SELECT min(deadline) FROM es_saga_instances WHERE saga = ?1"
                    " AND deadline > 0 AND state = 'running'"),
};

struct saga_mx {
    es_mx_source *src;
    sqlite3_stmt *q[Q_COUNT];
    /* coordinator's thread only */
    int64_t refreshed_us;
    es_mx_counter instances[SAGA_STATES];
    es_mx_counter sent, compensations, timeouts;
    es_mx_counter outbox;
    es_mx_counter earliest_deadline_us; /* of a running step; 0: none */
};

static int state_index(const unsigned char *state) {
    for (int i = 0; state && i < SAGA_STATES; i++)
        if (!strcmp((const char *)state, state_names[i]))
            return i;
    return -1;
}

/* Steps q, adding column 1 to the count of the state in column 0. */
static int add_states(sqlite3_stmt *q, const char *saga, int64_t *n) {
    sqlite3_bind_text(q, 1, saga, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        int i = state_index(sqlite3_column_text(q, 0));
        if (i >= 0)
            n[i] += sqlite3_column_int64(q, 1);
    }
    sqlite3_reset(q);
    return rc == SQLITE_DONE;
}

static int one_int(sqlite3_stmt *q, const char *saga, int64_t *v) {
    sqlite3_bind_text(q, 1, saga, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    *v = rc == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
    sqlite3_reset(q);
    return rc == SQLITE_ROW;
}

void es_saga_count_move(es_saga_t *c, const char *from, const char *to) {
    saga_counts *k = &c->counts;
    int i = state_index((const unsigned char *)from), j = state_index((const unsigned char *)to);
    if (i >= 0)
        k->moved[i]--;
    if (j >= 0)
        k->moved[j]++;
    k->any_moved = 1;
}

void es_saga_count_undo(es_saga_t *c) {
    c->counts.recount = 1;
}

es_err es_saga_counts_open(es_saga_t *c, es_error_t *err) {
    saga_counts *k = &c->counts;
    memset(k, 0, sizeof *k);
    k->recount = 1;
    k->data_version = -1;
    return es_sql_prepare_all(c->db, es_config_get(c->cfg, "saga.db"), counts_sql, C_COUNT, k->q,
                              err);
}

void es_saga_counts_close(es_saga_t *c) {
    es_sql_finalize_all(c->counts.q, C_COUNT);
}

/* Whether another connection committed to saga.db since the last count (1 when unknown). */
static int foreign_commit(saga_counts *k, int64_t *version) {
    sqlite3_stmt *q = k->q[C_DATA_VERSION];
    int rc = sqlite3_step(q);
    *version = rc == SQLITE_ROW ? sqlite3_column_int64(q, 0) : -1;
    sqlite3_reset(q);
    return rc != SQLITE_ROW || *version != k->data_version;
}

es_err es_saga_counts_take(es_saga_t *c, int64_t n[SAGA_STATES], es_error_t *err) {
    saga_counts *k = &c->counts;
    int64_t version = -1, now = es_now_us();
    es_err e = ES_OK;
    if (foreign_commit(k, &version) && now - k->recounted_us >= REFRESH_US)
        k->recount = 1;
    if (k->recount) {
        int64_t fresh[SAGA_STATES] = {0};
        const char *saga = c->def->name;
        if (add_states(k->q[C_STATES], saga, fresh) && add_states(k->q[C_PRUNED], saga, fresh)) {
            memcpy(k->counted, fresh, sizeof fresh);
            k->recount = 0;
            k->recounted_us = now;
            k->data_version = version;
        } else { /* the last values stay, the next take tries again */
            e = es_saga_db_fail(c, "counting instances by state", err);
        }
    } else {
        for (int i = 0; i < SAGA_STATES; i++)
            k->counted[i] += k->moved[i];
    }
    if (!k->recount) {
        memset(k->moved, 0, sizeof k->moved);
        k->any_moved = 0;
    }
    memcpy(n, k->counted, sizeof k->counted);
    return e;
}

/* What saga.db holds; a failed read keeps the last values (the next refresh tries again). */
static void refresh(es_saga_t *c) {
    struct saga_mx *m = c->mx;
    const char *saga = c->def->name;
    int64_t outbox = 0, deadline = 0, now = es_now_us(), n[SAGA_STATES];
    es_error_t err;
    es_saga_counts_take(c, n, &err); /* a failed count keeps the last values */
    for (int i = 0; i < SAGA_STATES; i++)
        es_mx_set(&m->instances[i], n[i] > 0 ? (uint64_t)n[i] : 0);
    if (one_int(m->q[Q_OUTBOX], saga, &outbox))
        es_mx_set(&m->outbox, (uint64_t)outbox);
    if (one_int(m->q[Q_DEADLINE], saga, &deadline))
        es_mx_set(&m->earliest_deadline_us, deadline > 0 ? (uint64_t)deadline : 0);
    m->refreshed_us = now;
}

void es_saga_mx_round(es_saga_t *c, int changed) {
    struct saga_mx *m = c->mx;
    if (!m)
        return;
    es_mx_set(&m->sent, c->stats.commands_sent);
    es_mx_set(&m->compensations, c->compensations_sent);
    es_mx_set(&m->timeouts, c->stats.timeouts);
    if (changed || c->counts.any_moved || c->counts.recount ||
        es_now_us() - m->refreshed_us >= REFRESH_US)
        refresh(c);
}

static void collect(void *self, es_mx_sink *k) {
    es_saga_t *c = self;
    struct saga_mx *m = c->mx;
    char l[256];
    for (int i = 0; i < SAGA_STATES; i++) {
        es_mx_labels(l, sizeof l, "saga", c->def->name, "state", state_names[i],
                     (const char *)NULL);
        es_mx_sample(k, "eskit_saga_instances", ES_MX_GAUGE, "Instances in the saga database.", l,
                     (double)es_mx_get(&m->instances[i]));
    }
    es_mx_labels(l, sizeof l, "saga", c->def->name, (const char *)NULL);
    es_mx_sample(k, "eskit_saga_commands_sent_total", ES_MX_COUNTER,
                 "Commands delivered from the outbox.", l, (double)es_mx_get(&m->sent));
    es_mx_sample(k, "eskit_saga_compensations_total", ES_MX_COUNTER, "Compensating commands sent.",
                 l, (double)es_mx_get(&m->compensations));
    es_mx_sample(k, "eskit_saga_step_timeouts_total", ES_MX_COUNTER, "Steps whose deadline passed.",
                 l, (double)es_mx_get(&m->timeouts));
    es_mx_sample(k, "eskit_saga_outbox_depth", ES_MX_GAUGE, "Commands waiting in the outbox.", l,
                 (double)es_mx_get(&m->outbox));
    int64_t deadline = (int64_t)es_mx_get(&m->earliest_deadline_us), now = es_now_us();
    es_mx_sample(k, "eskit_saga_oldest_overdue_seconds", ES_MX_GAUGE,
                 "How long the oldest deadline has been past without firing, 0 when none.", l,
                 deadline && now > deadline ? (double)(now - deadline) / 1e6 : 0.0);
}

static void mx_free(struct saga_mx *m) {
    for (int i = 0; i < Q_COUNT; i++)
        sqlite3_finalize(m->q[i]);
    free(m);
}

es_err es_saga_mx_open(es_saga_t *c, es_error_t *err) {
    if (!es_mx_enabled(c->cfg))
        return ES_OK;
    struct saga_mx *m = calloc(1, sizeof *m);
    if (!m)
        return es_fail(err, ES_ENOMEM, "%sout of memory for its metrics", c->subject);
    es_err e =
        es_sql_prepare_all(c->db, es_config_get(c->cfg, "saga.db"), mx_sql, Q_COUNT, m->q, err);
    if (e == ES_OK) {
        c->mx = m;
        es_saga_mx_round(c, 1);
        e = es_mx_register(c->cfg, collect, NULL, c, &m->src, err);
    }
    if (e != ES_OK) {
        c->mx = NULL;
        mx_free(m);
    }
    return e;
}

void es_saga_mx_close(es_saga_t *c) {
    if (!c->mx)
        return;
    es_mx_unregister(c->mx->src); /* after the scrape under way, if any */
    mx_free(c->mx);
    c->mx = NULL;
}
