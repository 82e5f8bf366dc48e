/*
 * Schema figures (docs/schemas.md): a service's start-up registration of n message types in a
 * fresh store's catalogue (the canonical form, fingerprints, checks, one write transaction),
 * the same registration once everything is recorded (what every later start costs), and the
 * raw baseline: the same canonical bytes inserted into an equal table of a fresh file in one
 * transaction, under the same synchronous setting.
 */
#include "schemas.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <eskit/eskit.h>
#include <sqlite3.h>

#include "domain.h"
#include "util.h"

#define RUNS 5

/* n copies of the demo's message types, each renamed "bench.v1.T<k><Name>". */
static ProtobufCMessageDescriptor *make_types(size_t n) {
    size_t m = 0;
    while (es_types_message_at(&demo_types, m))
        m++;
    ProtobufCMessageDescriptor *d = calloc(n, sizeof *d);
    char *names = calloc(n, 128);
    if (!d || !names || !m) {
        free(d);
        free(names);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        d[i] = *es_types_message_at(&demo_types, i % m);
        snprintf(names + 128 * i, 128, "bench.v1.T%zu%s", i, d[i].short_name);
        d[i].name = names + 128 * i;
    }
    return d;
}

static void free_types(ProtobufCMessageDescriptor *d) {
    if (d)
        free((char *)d[0].name);
    free(d);
}

static int es_round(const char *path, const ProtobufCMessageDescriptor **types, size_t n,
                    double *first_ms, double *again_ms) {
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    int rc = -1;
    if (cfg && es_config_set(cfg, "db", path, &err) == ES_OK) {
        for (int k = 0; k < 2; k++) {
            es_schemas_t *cat = NULL;
            int64_t t0 = bench_now_ns();
            es_err e = es_schemas_open(cfg, 0, &cat, &err);
            if (e == ES_OK)
                e = es_schemas_register(cat, types, n, NULL, NULL, &err);
            es_schemas_close(cat);
            double ms = (double)(bench_now_ns() - t0) / 1e6;
            if (e != ES_OK) {
                fprintf(stderr, "eskit-bench: registering %zu schemas: %s\n", n, err.message);
                rc = -1;
                break;
            }
            *(k ? again_ms : first_ms) = ms;
            rc = 0;
        }
    }
    es_config_destroy(cfg);
    bench_db_remove(path);
    return rc;
}

static int raw_round(const char *path, const ProtobufCMessageDescriptor **types, size_t n,
                     double *ms) {
    es_schema_t **s = calloc(n, sizeof *s);
    int rc = s ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = es_schema_of(types[i], &s[i], NULL) == ES_OK ? 0 : -1;
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t t0 = bench_now_ns();
    if (rc == 0)
        rc = sqlite3_open(path, &db) == SQLITE_OK &&
                     sqlite3_exec(db,
                                  "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                                  "CREATE TABLE s(name TEXT NOT NULL, version INTEGER NOT NULL,"
                                  " fingerprint TEXT NOT NULL, schema BLOB NOT NULL,"
                                  " registered_at INTEGER NOT NULL, registered_by TEXT NOT NULL,"
                                  " PRIMARY KEY(name, version), UNIQUE(name, fingerprint))"
                                  " WITHOUT ROWID; BEGIN IMMEDIATE",
                                  NULL, NULL, NULL) == SQLITE_OK &&
                     sqlite3_prepare_v2(db, "INSERT INTO s VALUES (?, 1, ?, ?, ?, 'bench')", -1,
                                        &st, NULL) == SQLITE_OK
                 ? 0
                 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        size_t len = 0;
        const uint8_t *bytes = es_schema_bytes(s[i], &len);
        sqlite3_bind_text(st, 1, es_schema_name(s[i]), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, es_schema_fingerprint(s[i]), -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 3, bytes, (int)len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, (sqlite3_int64)i);
        rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
        sqlite3_reset(st);
    }
    if (rc == 0)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
    sqlite3_finalize(st);
    sqlite3_close(db);
    *ms = (double)(bench_now_ns() - t0) / 1e6;
    for (size_t i = 0; s && i < n; i++)
        es_schema_free(s[i]);
    free(s);
    bench_db_remove(path);
    return rc;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int bench_registration(const char *dir, size_t n_types, schema_figs_t *out) {
    char path[4096];
    ProtobufCMessageDescriptor *d = make_types(n_types);
    const ProtobufCMessageDescriptor **types = calloc(n_types, sizeof *types);
    double first[RUNS], again[RUNS], raw[RUNS];
    int rc = d && types && bench_db_path(path, sizeof path, dir, "schemas") == 0 ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n_types; i++)
        types[i] = &d[i];
    for (int r = 0; rc == 0 && r < RUNS; r++) {
        rc = es_round(path, types, n_types, &first[r], &again[r]);
        if (rc == 0)
            rc = raw_round(path, types, n_types, &raw[r]);
    }
    if (rc == 0) {
        qsort(first, RUNS, sizeof *first, by_value);
        qsort(again, RUNS, sizeof *again, by_value);
        qsort(raw, RUNS, sizeof *raw, by_value);
        *out = (schema_figs_t){n_types, first[RUNS / 2], again[RUNS / 2], raw[RUNS / 2]};
    }
    free(types);
    free_types(d);
    return rc;
}
