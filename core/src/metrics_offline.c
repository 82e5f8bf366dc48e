/*
 * The series that can be read from a service's files and its log alone, with no component
 * running (es_metrics_write_offline, what esctl metrics prints for node_exporter's textfile
 * collector): the projectors' positions (es_lag) and dead letters from the read model, the saga
 * instances by state from the saga database, and each events topic's size and growth from the
 * log (es_topic_measure). Written with the registry's own sink, so names, types and formatting
 * are those of /metrics (docs/observability.md).
 *
 * A file the config names that does not exist is a part left out (no projector has run yet);
 * a file that exists but is not what it should be, or a cluster that does not answer, fails the
 * whole call: a half exposition would read as series that vanished.
 */
#include "backends.h"
#include "dbfile.h"
#include "metrics_int.h"
#include "projector_int.h"
#include "saga_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <eskit/metrics.h>
#include <eskit/topics.h>

#define LABELS_CAP 512
#define DAY_S 86400.0

static bool file_exists(const char *path) {
    return path && access(path, F_OK) == 0;
}

/* ---- projectors -------------------------------------------------------------------------- */

static es_err sample_lag(const es_config_t *cfg, es_mx_sink *k, es_error_t *err) {
    es_lag_row_t *rows = NULL;
    size_t n = 0;
    es_err e = es_lag(cfg, &rows, &n, err);
    for (size_t i = 0; e == ES_OK && i < n; i++) {
        char part[16], labels[LABELS_CAP];
        snprintf(part, sizeof part, "%d", (int)rows[i].partition);
        es_mx_labels(labels, sizeof labels, "projector", rows[i].projector, "topic", rows[i].topic,
                     "partition", part, (const char *)NULL);
        es_mx_sample(k, "eskit_projector_checkpoint_offset", ES_MX_GAUGE,
                     "Next offset the runner reads.", labels, (double)rows[i].checkpoint);
        es_mx_sample(k, "eskit_projector_end_offset", ES_MX_GAUGE, "The log's end as last seen.",
                     labels, (double)rows[i].end);
        es_mx_sample(k, "eskit_projector_lag_records", ES_MX_GAUGE, "End minus checkpoint.", labels,
                     (double)rows[i].lag);
    }
    free(rows);
    return e;
}

/* Every projector of the model (0 when none parked), and any other the DLQ names. */
static es_err sample_dlq(const es_config_t *cfg, es_mx_sink *k, es_error_t *err) {
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    const char *path = es_config_get(cfg, "readmodel.db");
    es_err e = es_rm_open_existing(cfg, &db, err);
    if (e == ES_OK)
        e = es_sql_prepare(db, path,
                           "SELECT name, (SELECT count(*) FROM es_dlq d WHERE d.projector = "
                           "p.name AND d.redriven_at IS NULL) FROM es_projectors p UNION ALL "
                           "SELECT projector, count(*) FROM es_dlq WHERE redriven_at IS NULL AND "
                           "projector NOT IN (SELECT name FROM es_projectors) GROUP BY projector",
                           &s, err);
    int rc = SQLITE_DONE;
    while (e == ES_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        char labels[LABELS_CAP];
        es_mx_labels(labels, sizeof labels, "projector", (const char *)sqlite3_column_text(s, 0),
                     (const char *)NULL);
        es_mx_sample(k, "eskit_projector_dlq_depth", ES_MX_GAUGE, "Events parked and not redriven.",
                     labels, (double)sqlite3_column_int64(s, 1));
    }
    if (e == ES_OK && rc != SQLITE_DONE)
        e = es_sql_fail_file(db, rc, path, "reading the dead letters", err);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return e;
}

/* ---- sagas ------------------------------------------------------------------------------- */

static const char *const saga_states[] = {ES_SAGA_RUNNING, ES_SAGA_COMPENSATING, ES_SAGA_COMPLETED,
                                          ES_SAGA_ABORTED, ES_SAGA_FAILED};

static void sample_saga(es_mx_sink *k, const char *saga, const char *state, double n) {
    char labels[LABELS_CAP];
    es_mx_sample(
        k, "eskit_saga_instances", ES_MX_GAUGE,
        "Instances in the saga database, by state (those retention deleted included).",
        es_mx_labels(labels, sizeof labels, "saga", saga, "state", state, (const char *)NULL), n);
}

/* Whether the saga database has es_saga_pruned (a coordinator older than retention made none). */
static es_err has_pruned(sqlite3 *db, const char *path, bool *yes, es_error_t *err) {
    sqlite3_stmt *s = NULL;
    es_err e = es_sql_prepare(db, path,
                              "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = "
                              "'es_saga_pruned'",
                              &s, err);
    int rc = e == ES_OK ? sqlite3_step(s) : SQLITE_DONE;
    *yes = rc == SQLITE_ROW;
    if (e == ES_OK && rc != SQLITE_ROW && rc != SQLITE_DONE)
        e = es_sql_fail_file(db, rc, path, "reading the saga database", err);
    sqlite3_finalize(s);
    return e;
}

/* Every state of every saga with instances, counted as es_saga_stats counts them (the ended
 * ones saga.retention.ms deleted included, so an end state's count never drops). The sink adds
 * up samples of one series: a zero for each state beside each row's count leaves a state
 * without instances at 0. */
static es_err sample_sagas(const es_config_t *cfg, es_mx_sink *k, es_error_t *err) {
    const char *path = es_config_get(cfg, "saga.db");
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    bool pruned = false;
    es_err e = es_db_open_readonly(path, "saga database",
                                   (int)es_config_get_int(cfg, "sqlite.busy.timeout.ms"), &db, err);
    if (e == ES_OK)
        e = es_db_expect(db, path, ES_DB_SAGA_DB, err);
    if (e == ES_OK)
        e = has_pruned(db, path, &pruned, err);
    if (e == ES_OK)
        e = es_sql_prepare(db, path,
                           pruned ? "SELECT saga, state, count(*) FROM es_saga_instances GROUP BY "
                                    "saga, state UNION ALL SELECT saga, state, n FROM "
                                    "es_saga_pruned"
                                  : "SELECT saga, state, count(*) FROM es_saga_instances GROUP BY "
                                    "saga, state",
                           &s, err);
    int rc = SQLITE_DONE;
    while (e == ES_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *saga = (const char *)sqlite3_column_text(s, 0);
        for (size_t i = 0; i < sizeof saga_states / sizeof *saga_states; i++)
            sample_saga(k, saga, saga_states[i], 0);
        sample_saga(k, saga, (const char *)sqlite3_column_text(s, 1),
                    (double)sqlite3_column_int64(s, 2));
    }
    if (e == ES_OK && rc != SQLITE_DONE)
        e = es_sql_fail_file(db, rc, path, "reading the saga database", err);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return e;
}

/* ---- the log ----------------------------------------------------------------------------- */

/* Aggregate types whose events topics are measured, without repeats. */
typedef struct type_set {
    char **names;
    size_t n, cap;
} type_set;

static es_err types_add(type_set *t, const char *name, size_t len, es_error_t *err) {
    for (size_t i = 0; i < t->n; i++)
        if (strlen(t->names[i]) == len && !strncmp(t->names[i], name, len))
            return ES_OK;
    es_err e = es_grow((void **)&t->names, &t->cap, t->n, sizeof *t->names, err);
    if (e == ES_OK && !(t->names[t->n] = strndup(name, len)))
        e = es_fail(err, ES_ENOMEM, "out of memory");
    if (e == ES_OK)
        t->n++;
    return e;
}

static void types_free(type_set *t) {
    for (size_t i = 0; i < t->n; i++)
        free(t->names[i]);
    free(t->names);
}

/* The words of list (separated by blanks or commas), each with suffix cut off when it has it
 * (a projector's topics, "<type>.events"); words without it are not events topics. */
static es_err types_add_list(type_set *t, const char *list, const char *suffix, es_error_t *err) {
    es_err e = ES_OK;
    size_t cut = suffix ? strlen(suffix) : 0;
    for (const char *w = list; e == ES_OK && w && *w;) {
        w += strspn(w, ", \t");
        size_t len = strcspn(w, ", \t");
        if (len > cut && (!suffix || !strncmp(w + len - cut, suffix, cut)))
            e = types_add(t, w, len - cut, err);
        w += len;
    }
    return e;
}

/* Embedded: every aggregate type with streams in the store (es_types also names the state
 * types of snapshots). */
static es_err store_types(es_log_t *log, const es_config_t *cfg, type_set *t, es_error_t *err) {
    sqlite3 *db = es_log_sqlite_db(log);
    const char *path = es_config_get(cfg, "db");
    sqlite3_stmt *s = NULL;
    es_err e =
        es_sql_prepare(db, path,
                       "SELECT name FROM es_types t WHERE EXISTS (SELECT 1 FROM es_streams s WHERE "
                       "s.type_id = t.id) ORDER BY name",
                       &s, err);
    int rc = SQLITE_DONE;
    while (e == ES_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(s, 0);
        e = types_add(t, name, strlen(name), err);
    }
    if (e == ES_OK && rc != SQLITE_DONE)
        e = es_sql_fail_file(db, rc, path, "reading the aggregate types", err);
    sqlite3_finalize(s);
    return e;
}

/* The topics the read model's projectors read. */
static es_err projector_types(const es_config_t *cfg, type_set *t, es_error_t *err) {
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    const char *path = es_config_get(cfg, "readmodel.db");
    es_err e = es_rm_open_existing(cfg, &db, err);
    if (e == ES_OK)
        e = es_sql_prepare(db, path, "SELECT topics FROM es_projectors ORDER BY name", &s, err);
    int rc = SQLITE_DONE;
    while (e == ES_OK && (rc = sqlite3_step(s)) == SQLITE_ROW)
        e = types_add_list(t, (const char *)sqlite3_column_text(s, 0), ".events", err);
    if (e == ES_OK && rc != SQLITE_DONE)
        e = es_sql_fail_file(db, rc, path, "reading the projectors", err);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return e;
}

/* Records of topic: the sum over its partitions of end minus start, as es_lag counts them. */
static es_err topic_records(es_log_t *log, const char *topic, uint64_t *records, es_error_t *err) {
    int32_t parts = 0;
    *records = 0;
    es_err e = log->reader->partitions(log, topic, &parts, err);
    for (int32_t p = 0; e == ES_OK && p < parts; p++) {
        int64_t end = 0;
        uint64_t count = 0;
        e = log->reader->topic_end(log, topic, p, 0, &end, &count, err);
        *records += count;
    }
    return e;
}

static es_err sample_topic(const es_config_t *cfg, es_log_t *log, const char *type, int64_t now_us,
                           es_mx_sink *k, es_error_t *err) {
    es_topic_spec_t spec = {.role = ES_TOPIC_EVENTS, .collides_with = -1};
    snprintf(spec.name, sizeof spec.name, "%s.events", type);
    snprintf(spec.aggregate_type, sizeof spec.aggregate_type, "%s", type);
    uint64_t records = 0;
    es_topic_traffic_t t = {0};
    es_err e = topic_records(log, spec.name, &records, err);
    if (e == ES_OK)
        e = es_topic_measure(cfg, &spec, now_us, &t, err);
    if (e != ES_OK)
        return e;
    char labels[LABELS_CAP];
    es_mx_labels(labels, sizeof labels, "topic", spec.name, (const char *)NULL);
    es_mx_sample(k, "eskit_log_records", ES_MX_GAUGE, "Records in the events topic.", labels,
                 (double)records);
    /* Embedded the mean is of every record, so this is their sum; on Kafka the mean is of the
     * last records of each partition (es_topic_measure's sample). */
    es_mx_sample(k, "eskit_log_bytes", ES_MX_GAUGE,
                 "Bytes of the events topic's records (key, value, headers), one replica.", labels,
                 round(t.record_bytes * (double)records));
    es_mx_sample(k, "eskit_log_growth_bytes_per_second", ES_MX_GAUGE,
                 "Mean growth of the events topic over the last day, or its whole life when "
                 "younger.",
                 labels, t.records_per_day * t.record_bytes / DAY_S);
    return ES_OK;
}

static es_err sample_log(const es_config_t *cfg, bool with_model, es_mx_sink *k, es_error_t *err) {
    const es_backend *b = es_backend_of(cfg);
    type_set types = {0};
    es_log_t *log = NULL;
    int64_t now_us = es_now_us();
    es_err e = es_log_open_flags(cfg, ES_LOG_READONLY, &log, err);
    if (e == ES_OK && b->local_file)
        e = store_types(log, cfg, &types, err);
    if (e == ES_OK && !b->local_file)
        e = types_add_list(&types, es_config_get(cfg, "topics.aggregates"), NULL, err);
    if (e == ES_OK && with_model)
        e = projector_types(cfg, &types, err);
    for (size_t i = 0; e == ES_OK && i < types.n; i++)
        e = sample_topic(cfg, log, types.names[i], now_us, k, err);
    if (log)
        log->destroy(log);
    types_free(&types);
    return e;
}

/* ---- the exposition ---------------------------------------------------------------------- */

static es_err collect(const es_config_t *cfg, es_mx_sink *k, es_error_t *err) {
    bool log = !es_backend_of(cfg)->local_file || file_exists(es_config_get(cfg, "db"));
    bool model = file_exists(es_config_get(cfg, "readmodel.db"));
    es_err e = ES_OK;
    if (model && log) /* lag needs the log's ends */
        e = sample_lag(cfg, k, err);
    if (e == ES_OK && model)
        e = sample_dlq(cfg, k, err);
    if (e == ES_OK && file_exists(es_config_get(cfg, "saga.db")))
        e = sample_sagas(cfg, k, err);
    if (e == ES_OK && log)
        e = sample_log(cfg, model, k, err);
    return e;
}

es_err es_metrics_write_offline(const es_config_t *cfg, char **out, size_t *len, es_error_t *err) {
    if (!cfg || !out)
        return es_fail(err, ES_EINVAL, "es_metrics_write_offline: cfg and out are required");
    *out = NULL;
    if (len)
        *len = 0;
    es_buf_t b = {0};
    es_mx_sink *k = es_mx_sink_new();
    es_err e = k ? collect(cfg, k, err) : es_fail(err, ES_ENOMEM, "out of memory");
    if (e == ES_OK)
        e = es_mx_sink_render(k, &b, err);
    if (e == ES_OK && es_buf_append(&b, "", 1, NULL) != ES_OK)
        e = es_fail(err, ES_ENOMEM, "out of memory writing the metrics");
    es_mx_sink_destroy(k);
    if (e != ES_OK) {
        es_buf_free(&b);
        return e;
    }
    *out = (char *)b.data;
    if (len)
        *len = b.len - 1;
    return ES_OK;
}
