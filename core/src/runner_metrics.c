/*
 * A live runner's metrics (docs/observability.md): its counters, the batch histogram, each
 * partition's checkpoint, end and lag, and the DLQ depth, with the health rule on the lag.
 *
 * Everything is measured on the runner's thread, after a batch commits (es_runner_mx_batch):
 * the checkpoints from the positions just committed, the ends from the log's cached_end (the
 * embedded file's end, Kafka's cached high watermark: never a request; read less often while
 * it is costly, see measure_due), and the DLQ depth from es_dlq at open and at most once a
 * second, counting the batch's parked events between.
 * The scrape thread reads atomics and a copy of the positions taken under the small lock pos_mu,
 * which the runner holds only to copy n_pos numbers. A partition whose end is not known yet
 * (Kafka before its first fetch answered) has no end or lag series, and is not healthy.
 */
#include "runner_int.h"

#include "metrics_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DLQ_REFRESH_NS 1000000000LL
#define MEASURE_SHARE 100 /* a runner behind spends at most 1% of its time reading ends */

typedef struct mx_pos {
    int64_t checkpoint, end;
    uint64_t lag;
    int known; /* end and lag measured */
} mx_pos;

struct runner_mx {
    es_mx_source *src;
    es_mx_counter applied, parked, retried, ignored;
    es_mx_hist batch;
    es_mx_counter dlq_depth;
    int64_t max_lag;        /* health.max.lag, read at open */
    int64_t dlq_counted_ns; /* when es_dlq was last counted (runner's thread only) */
    int64_t measured_ns;    /* when the ends were last read, and what that took (same) */
    int64_t measure_cost_ns;
    sqlite3_stmt *dlq_count;
    pthread_mutex_t pos_mu; /* guards pos for the scrape */
    mx_pos *pos;            /* n_pos, in r->pos's order */
};

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t es_runner_mx_start(const es_runner_t *r) {
    return r->mx ? mono_ns() : 0;
}

static void count_dlq(es_runner_t *r) {
    sqlite3_stmt *s = r->mx->dlq_count;
    sqlite3_bind_text(s, 1, r->def->name, -1, SQLITE_STATIC);
    if (sqlite3_step(s) == SQLITE_ROW)
        es_mx_set(&r->mx->dlq_depth, (uint64_t)sqlite3_column_int64(s, 0));
    sqlite3_reset(s); /* a failed count keeps the last value: the next one tries again */
    r->mx->dlq_counted_ns = mono_ns();
}

/* The checkpoints as committed and the ends as the log knows them, copied for the scrape. */
static void measure(es_runner_t *r) {
    int64_t t0 = mono_ns();
    mx_pos now[r->n_pos ? r->n_pos : 1];
    memset(now, 0, sizeof now);
    for (size_t i = 0; i < r->n_pos; i++) {
        const es_topic_pos_t *p = &r->pos[i];
        now[i] = (mx_pos){p->offset, 0, 0, 0};
        if (r->log->reader->cached_end)
            now[i].known = r->log->reader->cached_end(r->log, p->topic, p->partition, p->offset,
                                                      &now[i].end, &now[i].lag);
    }
    pthread_mutex_lock(&r->mx->pos_mu);
    for (size_t i = 0; i < r->n_pos; i++)
        if (now[i].known || !r->mx->pos[i].known)
            r->mx->pos[i] = now[i];
        else /* an end once seen stays the last seen: it does not go back to unknown */
            r->mx->pos[i].checkpoint = now[i].checkpoint;
    pthread_mutex_unlock(&r->mx->pos_mu);
    r->mx->measured_ns = mono_ns();
    r->mx->measure_cost_ns = r->mx->measured_ns - t0;
}

/* The checkpoints alone, between two reads of the ends: the embedded log counts a topic's
 * records past the checkpoint, which is long while far behind. Its one partition's lag drops
 * by the records the batch consumed; Kafka's ends cost nothing and are read every batch. */
static void advance(es_runner_t *r, size_t consumed) {
    pthread_mutex_lock(&r->mx->pos_mu);
    for (size_t i = 0; i < r->n_pos; i++) {
        mx_pos *p = &r->mx->pos[i];
        p->checkpoint = r->pos[i].offset;
        if (r->n_pos == 1)
            p->lag = p->lag > consumed ? p->lag - consumed : 0;
    }
    pthread_mutex_unlock(&r->mx->pos_mu);
}

/* While the runner is behind (its batch filled), reading the ends takes no more than a hundredth
 * of its time; a batch that did not fill found the end, and the count past it is short. */
static int measure_due(const es_runner_t *r, int64_t now, size_t consumed) {
    return consumed < r->batch_size ||
           now - r->mx->measured_ns >= r->mx->measure_cost_ns * MEASURE_SHARE;
}

void es_runner_mx_batch(es_runner_t *r, int64_t started_ns, size_t consumed) {
    struct runner_mx *m = r->mx;
    if (!m)
        return;
    int64_t now = mono_ns();
    if (consumed)
        es_mx_observe(&m->batch, (uint64_t)(now - started_ns));
    es_mx_add(&m->applied, r->batch.applied);
    es_mx_add(&m->parked, r->batch.parked);
    es_mx_add(&m->retried, r->batch.retries);
    es_mx_add(&m->ignored, r->batch.ignored);
    if (r->batch.parked)
        es_mx_add(&m->dlq_depth, r->batch.parked);
    if (now - m->dlq_counted_ns >= DLQ_REFRESH_NS)
        count_dlq(r); /* a redrive by another process or es_dlq_redrive */
    if (measure_due(r, now, consumed))
        measure(r);
    else
        advance(r, consumed);
}

static const char *name_of(void *self) {
    return ((es_runner_t *)self)->def->name;
}

static void collect(void *self, es_mx_sink *k) {
    es_runner_t *r = self;
    struct runner_mx *m = r->mx;
    char l[256];
    es_mx_labels(l, sizeof l, "projector", name_of(self), (const char *)NULL);
    es_mx_sample(k, "eskit_projector_events_applied_total", ES_MX_COUNTER, "Events applied.", l,
                 (double)es_mx_get(&m->applied));
    es_mx_sample(k, "eskit_projector_events_parked_total", ES_MX_COUNTER, "Events put in the DLQ.",
                 l, (double)es_mx_get(&m->parked));
    es_mx_sample(k, "eskit_projector_events_retried_total", ES_MX_COUNTER,
                 "Transient failures retried.", l, (double)es_mx_get(&m->retried));
    es_mx_sample(k, "eskit_projector_events_ignored_total", ES_MX_COUNTER, "Unknown types skipped.",
                 l, (double)es_mx_get(&m->ignored));
    es_mx_sample_hist(k, "eskit_projector_batch_duration_seconds",
                      "Time to apply and commit one batch.", l, &m->batch);
    es_mx_sample(k, "eskit_projector_dlq_depth", ES_MX_GAUGE, "Events parked and not redriven.", l,
                 (double)es_mx_get(&m->dlq_depth));
    mx_pos pos[r->n_pos ? r->n_pos : 1];
    pthread_mutex_lock(&m->pos_mu);
    memcpy(pos, m->pos, r->n_pos * sizeof *pos);
    pthread_mutex_unlock(&m->pos_mu);
    for (size_t i = 0; i < r->n_pos; i++) {
        char part[16];
        snprintf(part, sizeof part, "%d", (int)r->pos[i].partition);
        es_mx_labels(l, sizeof l, "projector", name_of(self), "topic", r->pos[i].topic, "partition",
                     part, (const char *)NULL);
        es_mx_sample(k, "eskit_projector_checkpoint_offset", ES_MX_GAUGE,
                     "Next offset the runner reads.", l, (double)pos[i].checkpoint);
        if (!pos[i].known)
            continue;
        es_mx_sample(k, "eskit_projector_end_offset", ES_MX_GAUGE, "The log's end as last seen.", l,
                     (double)pos[i].end);
        es_mx_sample(k, "eskit_projector_lag_records", ES_MX_GAUGE, "End minus checkpoint.", l,
                     (double)pos[i].lag);
    }
}

static void health(void *self, es_mx_health *h) {
    es_runner_t *r = self;
    struct runner_mx *m = r->mx;
    mx_pos pos[r->n_pos ? r->n_pos : 1];
    pthread_mutex_lock(&m->pos_mu);
    memcpy(pos, m->pos, r->n_pos * sizeof *pos);
    pthread_mutex_unlock(&m->pos_mu);
    for (size_t i = 0; i < r->n_pos; i++) {
        const es_topic_pos_t *p = &r->pos[i];
        if (!pos[i].known)
            es_mx_unhealthy(h,
                            "projector %s: partition %s[%d] has no known end yet (no fetch of it "
                            "has answered), so its lag is unknown",
                            name_of(self), p->topic, (int)p->partition);
        else if (pos[i].lag > (uint64_t)m->max_lag)
            es_mx_unhealthy(h,
                            "projector %s: partition %s[%d] is %llu records behind "
                            "(health.max.lag = %lld)",
                            name_of(self), p->topic, (int)p->partition,
                            (unsigned long long)pos[i].lag, (long long)m->max_lag);
    }
}

static void mx_free(struct runner_mx *m) {
    if (!m)
        return;
    sqlite3_finalize(m->dlq_count);
    pthread_mutex_destroy(&m->pos_mu);
    free(m->pos);
    free(m);
}

es_err es_runner_mx_open(es_runner_t *r, es_error_t *err) {
    if (!es_mx_enabled(r->cfg))
        return ES_OK;
    struct runner_mx *m = calloc(1, sizeof *m);
    if (!m || !(m->pos = calloc(r->n_pos ? r->n_pos : 1, sizeof *m->pos))) {
        free(m);
        return es_fail(err, ES_ENOMEM, "projector '%s': out of memory for its metrics",
                       r->def->name);
    }
    pthread_mutex_init(&m->pos_mu, NULL);
    es_mx_hist_init(&m->batch, &es_mx_seconds);
    m->max_lag = es_config_get_int(r->cfg, "health.max.lag");
    r->mx = m;
    es_err e = es_sql_prepare(r->db, r->rm_path,
                              "SELECT count(*) FROM es_dlq WHERE projector = ?1 AND redriven_at "
                              "IS NULL",
                              &m->dlq_count, err);
    if (e == ES_OK) {
        count_dlq(r);
        e = es_runner_checkpoints(r, err);
    }
    if (e == ES_OK) {
        measure(r);
        e = es_mx_register(r->cfg, collect, health, r, &m->src, err);
    }
    if (e != ES_OK) {
        r->mx = NULL;
        mx_free(m);
    }
    return e;
}

void es_runner_mx_close(es_runner_t *r) {
    if (!r->mx)
        return;
    es_mx_unregister(r->mx->src); /* after the scrape under way, if any */
    mx_free(r->mx);
    r->mx = NULL;
}
