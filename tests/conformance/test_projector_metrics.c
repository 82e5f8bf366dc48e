/*
 * A projector runner's metrics and health (docs/observability.md), the same on both backends:
 * after a known workload es_metrics_write holds exactly its counts, the checkpoints, ends and
 * lag es_lag reads from the files, the DLQ's depth as parks and redrives change it; the health
 * follows health.max.lag; metrics.enabled=false registers nothing; and runners come and go
 * cleanly while another thread scrapes.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <eskit/metrics.h>

#include "backend.h"
#include "metricsutil.h"
#include "notes.h"

#define TYPE "test.note"
#define TOPIC TYPE ".events"
#define WAIT_MS 15000
#define BEHIND_PREFIX "projector notes: partition " TOPIC "["

static tb_t *b;

static void setup(void) {
    static const char *const types[] = {TYPE, NULL};
    b = tb_open(types);
    notes_transient_left = 0;
    notes_fixed = 0;
}

static void teardown(void) {
    tb_close(b);
}

TestSuite(projector_metrics, .init = setup, .fini = teardown, .timeout = 120);

static void note(const char *id, const char *event_type) {
    tb_append(b, TYPE, id, event_type, "x", 1);
}

static void set(const char *key, const char *value) {
    es_error_t err = {0};
    cr_assert_eq(es_config_set(tb_config(b), key, value, &err), ES_OK, "%s", err.message);
}

static es_runner_t *runner(void) {
    es_runner_t *r = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_runner_new(tb_config(b), &notes_v1, &r, &err), ES_OK, "%s", err.message);
    return r;
}

static int partitions(void) {
    return tb_kafka(b) ? TB_PARTITIONS : 1;
}

/* The value of family for the notes projector, with partition p's labels when p >= 0. */
static double notes_value(const char *text, const char *family, int p) {
    char series[256];
    if (p < 0)
        snprintf(series, sizeof series, "%s{projector=\"notes\"}", family);
    else
        snprintf(series, sizeof series,
                 "%s{projector=\"notes\",topic=\"" TOPIC "\",partition=\"%d\"}", family, p);
    return mx_value(text, series);
}

static uint64_t handled(es_runner_t *r) {
    es_runner_stats_t st;
    es_runner_stats(r, &st);
    return st.applied + st.parked + st.ignored + st.stale;
}

/* Polls until the runner handled n records in all and the end of every partition is known
 * (Kafka learns a partition's end from its first fetch response). */
static void drain(es_runner_t *r, uint64_t n) {
    int64_t deadline = es_now_us() + WAIT_MS * 1000LL;
    es_error_t err = {0};
    for (;;) {
        char *text = mx_scrape();
        int known = 0;
        for (int p = 0; p < partitions(); p++)
            known += !isnan(notes_value(text, "eskit_projector_lag_records", p));
        free(text);
        if (handled(r) >= n && known == partitions())
            return;
        cr_assert_lt(es_now_us(), deadline, "handled %llu of %llu records, %d of %d ends known",
                     (unsigned long long)handled(r), (unsigned long long)n, known, partitions());
        cr_assert_eq(es_runner_poll(r, 50, NULL, &err), ES_OK, "%s", err.message);
    }
}

/* The checkpoint, end and lag series of every partition are those es_lag reads from the files;
 * returns the sum of the lags. */
static double positions_match_es_lag(const char *text) {
    es_lag_row_t *rows = NULL;
    size_t n = 0;
    es_error_t err = {0};
    cr_assert_eq(es_lag(tb_config(b), &rows, &n, &err), ES_OK, "%s", err.message);
    cr_assert_eq(n, (size_t)partitions());
    double lag = 0;
    for (size_t i = 0; i < n; i++) {
        int p = rows[i].partition;
        cr_assert_eq(notes_value(text, "eskit_projector_checkpoint_offset", p),
                     (double)rows[i].checkpoint, "partition %d", p);
        cr_assert_eq(notes_value(text, "eskit_projector_end_offset", p), (double)rows[i].end,
                     "partition %d", p);
        cr_assert_eq(notes_value(text, "eskit_projector_lag_records", p), (double)rows[i].lag,
                     "partition %d", p);
        lag += (double)rows[i].lag;
    }
    es_free(rows);
    return lag;
}

Test(projector_metrics, a_known_workload_gives_exactly_its_counts_positions_and_dlq_depth) {
    /* One aggregate, so one partition on Kafka too: the batches and retries are the same on
     * both backends (across partitions, a batch redone event by event may fetch them in
     * another order, and how often a transient event is retried varies). */
    note("n-1", "test.v1.Noted");
    note("n-1", "test.v1.Noted");
    note("n-1", "test.v1.Flaky");
    note("n-1", "test.v1.Broken");
    note("n-1", "test.v1.Unknown");
    note("n-1", "test.v1.Noted");
    notes_transient_left = 1; /* one retry, then applied */
    set("projector.on.unknown", "ignore");
    es_runner_t *r = runner();
    drain(r, 6);
    char *text = mx_scrape();
    cr_assert_eq(notes_value(text, "eskit_projector_events_applied_total", -1), 4, "%s", text);
    cr_assert_eq(notes_value(text, "eskit_projector_events_parked_total", -1), 1);
    es_runner_stats_t st;
    es_runner_stats(r, &st);
    cr_assert_eq(notes_value(text, "eskit_projector_events_retried_total", -1), 1);
    cr_assert_eq(st.retries, 1, "the counters are es_runner_stats' own");
    cr_assert_eq(notes_value(text, "eskit_projector_events_ignored_total", -1), 1);
    cr_assert_eq(notes_value(text, "eskit_projector_dlq_depth", -1), 1);
    /* Batches that took records, each but the last ended by a failure (an unknown type's
     * too): Noted, Noted and Flaky (retried); Broken (parked); Unknown (ignored); Noted. The
     * ones that took none are not observed. */
    double batches = notes_value(text, "eskit_projector_batch_duration_seconds_count", -1);
    cr_assert_eq(batches, 4, "%s", text);
    cr_assert_leq(batches, (double)st.batches);
    cr_assert_eq(mx_value(text, "eskit_projector_batch_duration_seconds_bucket{projector=\"notes\""
                                ",le=\"+Inf\"}"),
                 batches);
    cr_assert_gt(notes_value(text, "eskit_projector_batch_duration_seconds_sum", -1), 0);
    cr_assert_eq(positions_match_es_lag(text), 0, "caught up: %s", text);
    if (tb_kafka(b)) { /* each partition's next offset is its count of records */
        double next = 0;
        for (int p = 0; p < TB_PARTITIONS; p++)
            next += notes_value(text, "eskit_projector_checkpoint_offset", p);
        cr_assert_eq(next, 6);
    }
    free(text);
    char health[512];
    cr_assert(es_metrics_health(health, sizeof health), "%s", health);
    es_runner_destroy(r);
    text = mx_scrape();
    cr_assert_eq(mx_count(text, "eskit_projector_"), 0, "a destroyed runner left: %s", text);
    free(text);
}

Test(projector_metrics, dlq_depth_counts_the_parked_at_open_and_falls_after_a_redrive) {
    note("n-1", "test.v1.Broken");
    es_runner_t *r = runner();
    drain(r, 1);
    char *text = mx_scrape();
    cr_assert_eq(notes_value(text, "eskit_projector_dlq_depth", -1), 1, "%s", text);
    cr_assert_eq(notes_value(text, "eskit_projector_events_parked_total", -1), 1);
    /* One batch took the event, redone event by event after it failed: observed once. */
    cr_assert_eq(notes_value(text, "eskit_projector_batch_duration_seconds_count", -1), 1, "%s",
                 text);
    cr_assert_eq(mx_value(text, "eskit_projector_batch_duration_seconds_bucket{le=\"+Inf\","
                                "projector=\"notes\"}"),
                 1);
    free(text);
    es_runner_destroy(r);

    r = runner(); /* counted from the DLQ at open */
    text = mx_scrape();
    cr_assert_eq(notes_value(text, "eskit_projector_dlq_depth", -1), 1, "%s", text);
    free(text);

    /* Redriven by another runner of the process: the live one counts its DLQ again within a
     * second of polling. */
    notes_fixed = 1;
    size_t applied = 0, failed = 0;
    es_error_t err = {0};
    cr_assert_eq(es_dlq_redrive(tb_config(b), &notes_v1, NULL, 0, &applied, &failed, &err), ES_OK,
                 "%s", err.message);
    cr_assert_eq(applied, 1);
    int64_t deadline = es_now_us() + WAIT_MS * 1000LL;
    double depth = 1;
    while (depth != 0) {
        cr_assert_lt(es_now_us(), deadline, "dlq depth still %g", depth);
        cr_assert_eq(es_runner_poll(r, 50, NULL, &err), ES_OK, "%s", err.message);
        text = mx_scrape();
        depth = notes_value(text, "eskit_projector_dlq_depth", -1);
        free(text);
    }
    es_runner_destroy(r);
}

Test(projector_metrics, a_runner_behind_by_more_than_max_lag_is_unhealthy_until_it_catches_up) {
    char id[16];
    for (int i = 0; i < 12; i++) {
        snprintf(id, sizeof id, "n-%d", i);
        note(id, "test.v1.Noted");
    }
    set("health.max.lag", "2");
    set("projector.batch.size", "1");
    es_runner_t *r = runner();
    char health[1024];
    es_error_t err = {0};
    cr_assert_eq(es_runner_poll(r, 1000, NULL, &err), ES_OK, "%s", err.message);
    cr_assert_not(es_metrics_health(health, sizeof health));
    /* Embedded: the end is known from the open, 11 records past the one batch. Kafka: some
     * partition is behind or not fetched yet; either way its lag is not claimed to be 0. */
    if (!tb_kafka(b))
        cr_assert_str_eq(health, "projector notes: partition " TOPIC
                                 "[0] is 11 records behind (health.max.lag = 2)\n");
    else
        cr_assert(!strncmp(health, BEHIND_PREFIX, strlen(BEHIND_PREFIX)), "%s", health);

    cr_assert_eq(es_runner_catch_up(r, WAIT_MS, &err), ES_OK, "%s", err.message);
    drain(r, 12);
    cr_assert(es_metrics_health(health, sizeof health), "%s", health);
    cr_assert_str_eq(health, "ok\n");
    char *text = mx_scrape();
    cr_assert_eq(positions_match_es_lag(text), 0, "%s", text);
    for (int p = 0; p < partitions(); p++)
        cr_assert_eq(notes_value(text, "eskit_projector_lag_records", p), 0);
    free(text);
    es_runner_destroy(r);
}

Test(projector_metrics, metrics_disabled_register_no_projector_series) {
    note("n-1", "test.v1.Noted");
    set("metrics.enabled", "false");
    set("health.max.lag", "0");
    es_runner_t *r = runner();
    es_error_t err = {0};
    cr_assert_eq(es_runner_poll(r, 1000, NULL, &err), ES_OK, "%s", err.message);
    char *text = mx_scrape();
    cr_assert_eq(mx_count(text, "eskit_projector_"), 0, "%s", text);
    free(text);
    char health[256];
    cr_assert(es_metrics_health(health, sizeof health), "%s", health);
    es_runner_destroy(r);
}

static atomic_int scraping;

static void *scrape_loop(void *arg) {
    atomic_size_t *scrapes = arg;
    char health[1024];
    while (atomic_load(&scraping)) {
        char *text = mx_scrape();
        free(text);
        es_metrics_health(health, sizeof health);
        atomic_fetch_add(scrapes, 1);
    }
    return NULL;
}

Test(projector_metrics, runners_created_and_destroyed_during_scrapes_are_clean) {
    note("n-1", "test.v1.Noted");
    atomic_size_t scrapes = 0;
    atomic_store(&scraping, 1);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, scrape_loop, &scrapes), 0);
    es_error_t err = {0};
    for (int i = 0; i < 20; i++) {
        es_runner_t *r = runner();
        cr_assert_eq(es_runner_poll(r, i % 2 ? 20 : 0, NULL, &err), ES_OK, "%s", err.message);
        es_runner_destroy(r);
    }
    atomic_store(&scraping, 0);
    pthread_join(t, NULL);
    cr_assert_gt(atomic_load(&scrapes), 0);
    char *text = mx_scrape();
    cr_assert_eq(mx_count(text, "eskit_projector_"), 0, "%s", text);
    free(text);
}
