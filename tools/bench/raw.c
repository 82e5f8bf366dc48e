#include "raw.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static const char LOG_SCHEMA[] =
    "CREATE TABLE log(pos INTEGER PRIMARY KEY, envelope BLOB NOT NULL)";

static int fail(sqlite3 *db, const char *what) {
    fprintf(stderr, "eskit-bench: %s: %s\n", what, db ? sqlite3_errmsg(db) : "out of memory");
    return -1;
}

int raw_open(const char *path, sqlite3 **out) {
    sqlite3 *db = NULL;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK) {
        fail(db, path);
        sqlite3_close(db);
        return -1;
    }
    /* The durability eskit defaults to; everything else stays SQLite's default. */
    if (sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL, NULL, NULL) !=
        SQLITE_OK) {
        fail(db, "setting WAL and synchronous=FULL");
        sqlite3_close(db);
        return -1;
    }
    *out = db;
    return 0;
}

static int step_done(sqlite3 *db, sqlite3_stmt *st, const char *what) {
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : fail(db, what);
}

/* The statements a batched writer prepares once and reuses. */
typedef struct txn_stmts {
    sqlite3_stmt *begin, *commit;
} txn_stmts_t;

static int txn_prepare(sqlite3 *db, txn_stmts_t *t) {
    if (sqlite3_prepare_v2(db, "BEGIN IMMEDIATE", -1, &t->begin, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "COMMIT", -1, &t->commit, NULL) != SQLITE_OK)
        return fail(db, "preparing BEGIN/COMMIT");
    return 0;
}

static void txn_finalize(txn_stmts_t *t) {
    sqlite3_finalize(t->begin);
    sqlite3_finalize(t->commit);
}

/* Writes row i of ctx; 0 on success. */
typedef int row_fn(size_t i, const void *ctx);

/* Writes n rows in transactions of per_txn; returns elapsed ns, or -1. */
static int64_t insert_rows(sqlite3 *db, size_t n, size_t per_txn, row_fn *row, const void *ctx) {
    txn_stmts_t t = {NULL, NULL};
    int64_t t0 = 0, elapsed = -1;
    if (txn_prepare(db, &t) != 0)
        goto out;
    t0 = bench_now_ns();
    for (size_t i = 0; i < n; i += per_txn) {
        if (step_done(db, t.begin, "BEGIN") != 0)
            goto out;
        for (size_t j = i; j < n && j < i + per_txn; j++)
            if (row(j, ctx) != 0)
                goto out;
        if (step_done(db, t.commit, "COMMIT") != 0)
            goto out;
    }
    elapsed = bench_now_ns() - t0;
out:
    txn_finalize(&t);
    return elapsed;
}

struct blob_ins {
    sqlite3 *db;
    sqlite3_stmt *ins;
    const blobs_t *b;
};

static int insert_blob(size_t i, const void *ctx) {
    const struct blob_ins *c = ctx;
    size_t len;
    const uint8_t *p = blobs_at(c->b, i, &len);
    if (sqlite3_bind_blob(c->ins, 1, p, (int)len, SQLITE_STATIC) != SQLITE_OK)
        return fail(c->db, "binding a row");
    return step_done(c->db, c->ins, "raw INSERT");
}

int raw_append_only(const char *path, const blobs_t *b, size_t rows_per_txn, double *rows_per_s) {
    sqlite3 *db = NULL;
    sqlite3_stmt *ins = NULL;
    int rc = -1;
    bench_db_remove(path);
    if (raw_open(path, &db) != 0)
        return -1;
    if (sqlite3_exec(db, LOG_SCHEMA, NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO log(envelope) VALUES(?)", -1, &ins, NULL) !=
            SQLITE_OK) {
        fail(db, "creating the append-only table");
        goto out;
    }
    struct blob_ins ctx = {db, ins, b};
    int64_t ns = insert_rows(db, b->n, rows_per_txn, insert_blob, &ctx);
    if (ns > 0) {
        *rows_per_s = (double)b->n * 1e9 / (double)ns;
        rc = 0;
    }
out:
    sqlite3_finalize(ins);
    sqlite3_close(db);
    bench_db_remove(path);
    return rc;
}

static int load_schema(sqlite3 *src, raw_rows_t *r) {
    /* Tables first, so indexes and triggers find what they refer to. */
    static const char q[] = "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"
                            " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
                            " ORDER BY type <> 'table', rowid";
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(src, q, -1, &st, NULL) != SQLITE_OK)
        return fail(src, "reading the store's schema");
    int rc = 0;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        char **grown = realloc(r->schema, (r->n_schema + 1) * sizeof *grown);
        char *sql = strdup((const char *)sqlite3_column_text(st, 0));
        if (!grown || !sql) {
            free(sql);
            rc = fail(NULL, "copying the schema");
            break;
        }
        r->schema = grown;
        r->schema[r->n_schema++] = sql;
    }
    sqlite3_finalize(st);
    return rc;
}

static long long count_rows(sqlite3 *db, const char *table) {
    char *q = sqlite3_mprintf("SELECT count(*) FROM \"%w\"", table);
    sqlite3_stmt *st = NULL;
    long long n = -1;
    if (q && sqlite3_prepare_v2(db, q, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_free(q);
    return n;
}

static int add_table(raw_rows_t *r, const char *name, bool first) {
    raw_table_t *grown = realloc(r->tables, (r->n_tables + 1) * sizeof *grown);
    if (!grown)
        return fail(NULL, "listing tables");
    r->tables = grown;
    if (first) {
        memmove(&r->tables[1], &r->tables[0], r->n_tables * sizeof *grown);
    }
    raw_table_t *t = &r->tables[first ? 0 : r->n_tables];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    r->n_tables++;
    return 0;
}

/* Keeps the tables holding the most rows: one row per event. */
static int consider_table(raw_rows_t *r, const char *name, long long n, long long *best) {
    if (n < *best || n <= 0)
        return 0;
    if (n > *best) {
        r->n_tables = 0;
        *best = n;
    }
    return add_table(r, name, strstr(name, "event") != NULL);
}

static int pick_tables(sqlite3 *src, raw_rows_t *r) {
    static const char q[] = "SELECT name FROM sqlite_master WHERE type = 'table'"
                            " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid";
    sqlite3_stmt *st = NULL;
    long long best = 0;
    int rc = 0;
    if (sqlite3_prepare_v2(src, q, -1, &st, NULL) != SQLITE_OK)
        return fail(src, "listing the store's tables");
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        rc = consider_table(r, name, count_rows(src, name), &best);
    }
    sqlite3_finalize(st);
    if (rc == 0 && r->n_tables == 0)
        return fail(src, "finding the store's event table");
    r->n_rows = (size_t)best;
    return rc;
}

static void count_indexes(sqlite3 *src, raw_table_t *t) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(src, "SELECT count(*) FROM pragma_index_list(?)", -1, &st, NULL) !=
        SQLITE_OK)
        return;
    if (sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        t->n_indexes = (size_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
}

/* Copies one result row into t->values. */
static int push_row(sqlite3_stmt *st, raw_table_t *t, size_t *cap) {
    if ((t->n_rows + 1) * t->n_cols > *cap) {
        size_t n = *cap ? *cap * 2 : 4096 * t->n_cols;
        sqlite3_value **grown = realloc(t->values, n * sizeof *grown);
        if (!grown)
            return fail(NULL, "copying rows");
        t->values = grown;
        *cap = n;
    }
    for (size_t c = 0; c < t->n_cols; c++) {
        sqlite3_value *v = sqlite3_value_dup(sqlite3_column_value(st, (int)c));
        if (!v)
            return fail(NULL, "copying rows");
        t->values[t->n_rows * t->n_cols + c] = v;
    }
    t->n_rows++;
    return 0;
}

/* Rows in insertion order: by rowid, or by key for WITHOUT ROWID tables (whose
 * keys eskit makes time-ordered). */
static sqlite3_stmt *select_all(sqlite3 *src, const char *table) {
    sqlite3_stmt *st = NULL;
    char *q = sqlite3_mprintf("SELECT * FROM \"%w\" ORDER BY rowid", table);
    if (!q || sqlite3_prepare_v2(src, q, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_free(q);
        q = sqlite3_mprintf("SELECT * FROM \"%w\"", table);
        if (!q || sqlite3_prepare_v2(src, q, -1, &st, NULL) != SQLITE_OK)
            fail(src, "reading the store's tables");
    }
    sqlite3_free(q);
    return st;
}

static int load_values(sqlite3 *src, raw_table_t *t) {
    sqlite3_stmt *st = select_all(src, t->name);
    size_t cap = 0;
    int rc = st ? 0 : -1;
    if (st)
        t->n_cols = (size_t)sqlite3_column_count(st);
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW)
        rc = push_row(st, t, &cap);
    sqlite3_finalize(st);
    return rc;
}

int raw_rows_load(const char *src_path, raw_rows_t *out) {
    sqlite3 *src = NULL;
    memset(out, 0, sizeof *out);
    if (sqlite3_open_v2(src_path, &src, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        fail(src, src_path);
        sqlite3_close(src);
        return -1;
    }
    int rc = load_schema(src, out);
    if (rc == 0)
        rc = pick_tables(src, out);
    for (size_t i = 0; rc == 0 && i < out->n_tables; i++) {
        count_indexes(src, &out->tables[i]);
        rc = load_values(src, &out->tables[i]);
    }
    sqlite3_close(src);
    if (rc != 0)
        raw_rows_free(out);
    return rc;
}

void raw_rows_describe(const raw_rows_t *r, char *out, size_t cap) {
    size_t used = 0, idx = 0;
    out[0] = '\0';
    for (size_t i = 0; i < r->n_tables && used < cap; i++) {
        used += (size_t)snprintf(out + used, cap - used, "%s%s", i ? "+" : "", r->tables[i].name);
        idx += r->tables[i].n_indexes;
    }
    if (used < cap)
        snprintf(out + used, cap - used, ", %zu index%s", idx, idx == 1 ? "" : "es");
}

void raw_rows_free(raw_rows_t *r) {
    for (size_t i = 0; i < r->n_schema; i++)
        free(r->schema[i]);
    free(r->schema);
    for (size_t i = 0; i < r->n_tables; i++) {
        raw_table_t *t = &r->tables[i];
        for (size_t v = 0; v < t->n_rows * t->n_cols; v++)
            sqlite3_value_free(t->values[v]);
        free(t->values);
    }
    free(r->tables);
    memset(r, 0, sizeof *r);
}

/* "INSERT INTO "t" VALUES(?,?,...)" for t; caller frees with sqlite3_free. */
static char *insert_sql(const raw_table_t *t) {
    char *sql = sqlite3_mprintf("INSERT INTO \"%w\" VALUES(?", t->name);
    for (size_t c = 1; sql && c < t->n_cols; c++) {
        char *longer = sqlite3_mprintf("%s,?", sql);
        sqlite3_free(sql);
        sql = longer;
    }
    char *done = sql ? sqlite3_mprintf("%s)", sql) : NULL;
    sqlite3_free(sql);
    return done;
}

struct schema_ins {
    sqlite3 *db;
    sqlite3_stmt **ins; /* one per table */
    const raw_rows_t *r;
};

static int insert_schema_row(size_t i, const void *ctx) {
    const struct schema_ins *c = ctx;
    for (size_t k = 0; k < c->r->n_tables; k++) {
        const raw_table_t *t = &c->r->tables[k];
        for (size_t col = 0; col < t->n_cols; col++)
            if (sqlite3_bind_value(c->ins[k], (int)col + 1, t->values[i * t->n_cols + col]) !=
                SQLITE_OK)
                return fail(c->db, "binding a row");
        if (step_done(c->db, c->ins[k], "raw same-schema INSERT") != 0)
            return -1;
    }
    return 0;
}

static int prepare_schema(sqlite3 *db, const raw_rows_t *r, sqlite3_stmt **ins) {
    for (size_t i = 0; i < r->n_schema; i++)
        if (sqlite3_exec(db, r->schema[i], NULL, NULL, NULL) != SQLITE_OK)
            return fail(db, "copying the store's schema");
    for (size_t k = 0; k < r->n_tables; k++) {
        char *sql = insert_sql(&r->tables[k]);
        int rc = sql ? sqlite3_prepare_v2(db, sql, -1, &ins[k], NULL) : SQLITE_NOMEM;
        sqlite3_free(sql);
        if (rc != SQLITE_OK)
            return fail(db, "preparing the same-schema inserts");
    }
    return 0;
}

int raw_same_schema(const char *path, const raw_rows_t *r, size_t rows_per_txn,
                    double *rows_per_s) {
    sqlite3 *db = NULL;
    sqlite3_stmt **ins = calloc(r->n_tables, sizeof *ins);
    int rc = -1;
    bench_db_remove(path);
    if (!ins || raw_open(path, &db) != 0 || prepare_schema(db, r, ins) != 0)
        goto out;
    struct schema_ins ctx = {db, ins, r};
    int64_t ns = insert_rows(db, r->n_rows, rows_per_txn, insert_schema_row, &ctx);
    if (ns > 0) {
        *rows_per_s = (double)r->n_rows * 1e9 / (double)ns;
        rc = 0;
    }
out:
    for (size_t k = 0; ins && k < r->n_tables; k++)
        sqlite3_finalize(ins[k]);
    free(ins);
    sqlite3_close(db);
    bench_db_remove(path);
    return rc;
}

int raw_lat_open(const char *path, raw_lat_t *out) {
    memset(out, 0, sizeof *out);
    bench_db_remove(path);
    if (raw_open(path, &out->db) != 0)
        return -1;
    if (sqlite3_exec(out->db, LOG_SCHEMA, NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(out->db, "BEGIN IMMEDIATE", -1, &out->begin, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(out->db, "INSERT INTO log(envelope) VALUES(?)", -1, &out->insert,
                           NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(out->db, "COMMIT", -1, &out->commit, NULL) != SQLITE_OK) {
        fail(out->db, "preparing the latency baseline");
        raw_lat_close(out);
        return -1;
    }
    return 0;
}

int raw_lat_one(raw_lat_t *l, const uint8_t *p, size_t len, int64_t *ns) {
    int64_t t0 = bench_now_ns();
    if (step_done(l->db, l->begin, "BEGIN") != 0)
        return -1;
    if (sqlite3_bind_blob(l->insert, 1, p, (int)len, SQLITE_STATIC) != SQLITE_OK)
        return fail(l->db, "binding a row");
    if (step_done(l->db, l->insert, "raw INSERT") != 0 ||
        step_done(l->db, l->commit, "COMMIT") != 0)
        return -1;
    *ns = bench_now_ns() - t0;
    return 0;
}

void raw_lat_close(raw_lat_t *l) {
    sqlite3_finalize(l->begin);
    sqlite3_finalize(l->insert);
    sqlite3_finalize(l->commit);
    sqlite3_close(l->db);
    memset(l, 0, sizeof *l);
}
