/*
 * esctl metrics as node_exporter's textfile collector meets it: a known workload on the
 * embedded backend (test.counter events appended, the poison projector caught up part way with
 * one event parked, a saga database with instances in known states), then the exact values of
 * every series, the output checked by promtool, and --output replacing its file whole.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "saga_int.h"
#include "testutil.h"
#include "tp_format.h"

#define POISON_SO TEST_MODULES_DIR "/poison.so"
#define SEC 1000000LL

static char *dir, *db, *rm, *sagadb;

static void setup(void) {
    static const char *const vars[] = {"ESKIT_DB",
                                       "ESKIT_CONFIG",
                                       "ESKIT_BROKERS",
                                       "ESKIT_BACKEND",
                                       "ESKIT_READMODEL_DB",
                                       "ESKIT_SAGA_DB",
                                       "ESKIT_PROJECTOR_PATH",
                                       "ESKIT_TOPICS_AGGREGATES",
                                       "ESKIT_TEST_POISON_FIXED"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        unsetenv(vars[i]);
    dir = tu_tempdir();
    cr_assert_not_null(dir);
    db = tu_path(dir, "events.db");
    rm = tu_path(dir, "read.db");
    sagadb = tu_path(dir, "saga.db");
}

static void teardown(void) {
    tu_rmtree(dir);
    free(dir);
    free(db);
    free(rm);
    free(sagadb);
}

TestSuite(esctl_metrics, .init = setup, .fini = teardown, .timeout = 120);

static es_config_t *config(void) {
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_not_null(cfg);
    cr_assert_eq(es_config_set(cfg, "db", db, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_config_set(cfg, "readmodel.db", rm, &err), ES_OK, "%s", err.message);
    return cfg;
}

/* Appends one Added event to TP_TYPE/id; returns its offset. */
static int64_t append_added(es_store_t *store, const char *id, int64_t amount) {
    char payload[TP_MAX_PAYLOAD];
    size_t len = tp_encode(payload, amount);
    es_new_event_t ev = {
        .event_type = TP_EVENT_ADDED, .payload = (const uint8_t *)payload, .payload_len = len};
    es_append_result_t res = {0};
    es_error_t err = {0};
    cr_assert_eq(es_store_append(store, TP_TYPE, id, ES_EXPECT_ANY, 0, &ev, 1, &res, &err), ES_OK,
                 "appending to %s: %s", id, err.message);
    return res.first_offset;
}

/* Runs the poison projector over the log until it has nothing left to read. */
static void project(es_config_t *cfg) {
    es_projector_module_t *mod = NULL;
    es_runner_t *r = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_projector_load(cfg, POISON_SO, &mod, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_runner_new(cfg, es_projector_module_def(mod), &r, &err), ES_OK, "%s",
                 err.message);
    int64_t deadline = es_now_us() + 60 * SEC;
    size_t n = 0;
    do {
        cr_assert_lt(es_now_us(), deadline, "the runner did not drain the log within 60 s");
        cr_assert_eq(es_runner_poll(r, 50, &n, &err), ES_OK, "%s", err.message);
    } while (n > 0);
    es_runner_destroy(r);
    es_projector_unload(mod);
}

static void exec_sql(sqlite3 *s, const char *sql) {
    char *msg = NULL;
    cr_assert_eq(sqlite3_exec(s, sql, NULL, NULL, &msg), SQLITE_OK, "%s: %s", sql, msg);
}

/* A saga database as a coordinator leaves it: orders.fulfilment with 2 running, 1
 * compensating and 3 completed instances, 2 more completed ones deleted by retention;
 * billing.refunds with 1 aborted and 1 failed. */
static void write_saga_db(void) {
    static const struct {
        const char *saga, *id, *state;
    } rows[] = {
        {"orders.fulfilment", "o-1", "running"},      {"orders.fulfilment", "o-2", "running"},
        {"orders.fulfilment", "o-3", "compensating"}, {"orders.fulfilment", "o-4", "completed"},
        {"orders.fulfilment", "o-5", "completed"},    {"orders.fulfilment", "o-6", "completed"},
        {"billing.refunds", "r-1", "aborted"},        {"billing.refunds", "r-2", "failed"},
    };
    sqlite3 *s = NULL;
    cr_assert_eq(sqlite3_open(sagadb, &s), SQLITE_OK);
    exec_sql(s, "PRAGMA journal_mode=WAL");
    exec_sql(s, ES_SAGA_SCHEMA);
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        char *sql = sqlite3_mprintf(
            "INSERT INTO es_saga_instances (saga, id, state, step, started_at, updated_at, "
            "deadline, reason, seq, start_event) VALUES (%Q, %Q, %Q, 0, 1, 1, 0, '', 1, x'00')",
            rows[i].saga, rows[i].id, rows[i].state);
        exec_sql(s, sql);
        sqlite3_free(sql);
    }
    exec_sql(s, "INSERT INTO es_saga_pruned (saga, state, n) VALUES ('orders.fulfilment', "
                "'completed', 2)");
    sqlite3_close(s);
}

/* The workload: ok-1, bad-1 (parked by poison), ok-2 projected; ok-3 and ok-4 appended after,
 * so the projector lags by 2. *checkpoint and *end get the offsets the test expects. */
static void workload(int64_t *checkpoint, int64_t *end) {
    es_config_t *cfg = config();
    es_store_t *store = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    append_added(store, "ok-1", 1);
    append_added(store, "bad-1", 2);
    *checkpoint = append_added(store, "ok-2", 3) + 1;
    project(cfg);
    append_added(store, "ok-3", 4);
    *end = append_added(store, "ok-4", 5) + 1;
    es_store_destroy(store);
    es_config_destroy(cfg);
    write_saga_db();
}

/* The value of the series line starting with series (name and labels), which must be there
 * exactly once. */
static double value_of(const char *text, const char *series) {
    size_t n = strlen(series);
    const char *found = NULL;
    for (const char *line = text; line && *line;
         line = strchr(line, '\n'), line = line ? line + 1 : 0)
        if (!strncmp(line, series, n) && line[n] == ' ') {
            cr_assert_null(found, "%s twice in:\n%s", series, text);
            found = line + n + 1;
        }
    cr_assert_not_null(found, "no %s in:\n%s", series, text);
    char *rest = NULL;
    double v = strtod(found, &rest);
    cr_assert(rest != found && *rest == '\n', "%s: not a number: %.40s", series, found);
    return v;
}

/* Lines of text that start with prefix. */
static size_t count_prefixed(const char *text, const char *prefix) {
    size_t n = 0;
    for (const char *line = text; line && *line;
         line = strchr(line, '\n'), line = line ? line + 1 : 0)
        n += !strncmp(line, prefix, strlen(prefix));
    return n;
}

typedef struct log_span {
    long long n;
    int64_t first, last;
} log_span;

static int note_span(const es_event_t *ev, void *opaque) {
    log_span *s = opaque;
    if (s->n++ == 0)
        s->first = ev->occurred_at_us;
    s->last = ev->occurred_at_us;
    return 0;
}

static log_span span_of_log(void) {
    es_config_t *cfg = config();
    es_store_t *store = NULL;
    cr_assert_eq(es_store_open(cfg, ES_OPEN_READONLY, &store, NULL), ES_OK);
    const char *types[] = {TP_TYPE, NULL};
    log_span s = {0};
    cr_assert_eq(es_store_read_log(store, types, 0, 0, note_span, &s, NULL, NULL), ES_OK);
    es_store_destroy(store);
    es_config_destroy(cfg);
    return s;
}

static void assert_one_line_error(const tu_result *r) {
    cr_expect_eq(tu_count_lines(r->err), 1, "stderr should be one line, got: %s", r->err);
    cr_expect_eq(strncmp(r->err, "esctl: ", 7), 0, "stderr: %s", r->err);
    cr_expect_eq(strlen(r->out), 0, "stdout: %s", r->out);
}

/* promtool's verdict on the exposition in path: its exit status, its complaints in *out. */
static int promtool_check(const char *path, char **out) {
    cr_assert_eq(access("/usr/bin/promtool", X_OK), 0,
                 "promtool is missing (Debian: apt-get install prometheus; tools/install-deps.sh)");
    char *script = NULL;
    cr_assert_gt(asprintf(&script, "exec /usr/bin/promtool check metrics < '%s' 2>&1", path), 0);
    const char *argv[] = {"/bin/sh", "-c", script, NULL};
    int status = tu_run(argv, NULL, out, NULL);
    free(script);
    return status;
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    char *buf = NULL;
    size_t cap = 0;
    ssize_t n = getdelim(&buf, &cap, '\0', f);
    fclose(f);
    cr_assert_geq(n, 0, "reading %s", path);
    return buf;
}

#define LAG_LABELS "{projector=\"poison\",topic=\"" TP_TOPIC "\",partition=\"0\"}"

Test(esctl_metrics, prints_the_lag_dlq_sagas_and_log_of_a_known_workload_exactly) {
    int64_t checkpoint = 0, end = 0;
    workload(&checkpoint, &end);
    tu_result r = TU_ESCTL("--db", db, "--readmodel", rm, "--saga-db", sagadb, "metrics");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_eq(strlen(r.err), 0, "%s", r.err);

    cr_expect_eq(value_of(r.out, "eskit_projector_checkpoint_offset" LAG_LABELS), checkpoint);
    cr_expect_eq(value_of(r.out, "eskit_projector_end_offset" LAG_LABELS), end);
    cr_expect_eq(value_of(r.out, "eskit_projector_lag_records" LAG_LABELS), 2);
    cr_expect_eq(value_of(r.out, "eskit_projector_dlq_depth{projector=\"poison\"}"), 1);
    cr_expect_eq(count_prefixed(r.out, "eskit_projector_"), 4, "one projector, one partition");

    static const struct {
        const char *saga, *state;
        double n;
    } sagas[] = {
        {"orders.fulfilment", "running", 2},    {"orders.fulfilment", "compensating", 1},
        {"orders.fulfilment", "completed", 5},  {"orders.fulfilment", "aborted", 0},
        {"orders.fulfilment", "failed", 0},     {"billing.refunds", "running", 0},
        {"billing.refunds", "compensating", 0}, {"billing.refunds", "completed", 0},
        {"billing.refunds", "aborted", 1},      {"billing.refunds", "failed", 1},
    };
    for (size_t i = 0; i < sizeof sagas / sizeof *sagas; i++) {
        char series[160];
        snprintf(series, sizeof series, "eskit_saga_instances{saga=\"%s\",state=\"%s\"}",
                 sagas[i].saga, sagas[i].state);
        cr_expect_eq(value_of(r.out, series), sagas[i].n, "%s", series);
    }
    cr_expect_eq(count_prefixed(r.out, "eskit_saga_instances{"), 10);

    /* The log: five records, their envelopes' bytes, and a log younger than a day grows at its
     * rate from the first event to the last. */
    log_span s = span_of_log();
    cr_assert_eq(s.n, 5);
    double bytes = (double)tu_query_int(db, "SELECT sum(length(envelope)) FROM es_events");
    double per_day = s.last > s.first
                         ? (double)(s.n - 1) * (86400.0 * SEC) / (double)(s.last - s.first)
                         : (double)s.n;
    double growth = per_day * (bytes / (double)s.n) / 86400.0;
    const char *topic = "{topic=\"" TP_TOPIC "\"}";
    char series[128];
    snprintf(series, sizeof series, "eskit_log_records%s", topic);
    cr_expect_eq(value_of(r.out, series), 5);
    snprintf(series, sizeof series, "eskit_log_bytes%s", topic);
    cr_expect_eq(value_of(r.out, series), bytes);
    snprintf(series, sizeof series, "eskit_log_growth_bytes_per_second%s", topic);
    double got = value_of(r.out, series);
    cr_expect(fabs(got - growth) <= 1e-9 * growth, "growth %.17g, expected %.17g", got, growth);
    cr_expect_eq(count_prefixed(r.out, "eskit_log_"), 3, "one events topic:\n%s", r.out);

    char version[96];
    snprintf(version, sizeof version, "eskit_build_info{version=\"%s\"}",
             es_version(NULL, NULL, NULL));
    cr_expect_eq(value_of(r.out, version), 1);
    tu_result_free(&r);
}

Test(esctl_metrics, its_output_passes_promtool_check_metrics) {
    int64_t checkpoint = 0, end = 0;
    workload(&checkpoint, &end);
    char *prom = tu_path(dir, "eskit.prom");
    tu_result r =
        TU_ESCTL("--db", db, "--readmodel", rm, "--saga-db", sagadb, "metrics", "--output", prom);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    char *lint = NULL;
    int status = promtool_check(prom, &lint);
    cr_expect_eq(status, 0, "promtool check metrics: %s", lint ? lint : "");
    cr_expect(!lint || !*lint, "promtool has remarks: %s", lint);
    free(lint);
    free(prom);
    tu_result_free(&r);
}

Test(esctl_metrics, output_replaces_the_file_whole_and_leaves_no_temporary_behind) {
    int64_t checkpoint = 0, end = 0;
    workload(&checkpoint, &end);
    char *prom = tu_path(dir, "eskit.prom"), *tmp = tu_path(dir, "eskit.prom.tmp");
    char *old = tu_path(dir, "old.prom");
    FILE *f = fopen(prom, "w");
    cr_assert_not_null(f);
    fputs("eskit_build_info{version=\"old\"} 1\n", f);
    fclose(f);
    /* A reader holding the old file (a link to it here) keeps it whole: the new text goes to a
     * file of its own that is renamed over the name, never written into the old one. */
    cr_assert_eq(link(prom, old), 0);
    struct stat before, after;
    cr_assert_eq(stat(prom, &before), 0);

    tu_result printed = TU_ESCTL("--db", db, "--readmodel", rm, "--saga-db", sagadb, "metrics");
    cr_assert_eq(printed.status, 0, "stderr: %s", printed.err);
    tu_result r =
        TU_ESCTL("--db", db, "--readmodel", rm, "--saga-db", sagadb, "metrics", "--output", prom);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_eq(strlen(r.out), 0, "nothing on stdout with --output: %s", r.out);
    cr_assert_eq(stat(prom, &after), 0);
    cr_expect_neq(before.st_ino, after.st_ino, "the file was rewritten in place");
    char *text = read_file(prom), *kept = read_file(old);
    cr_expect_str_eq(kept, "eskit_build_info{version=\"old\"} 1\n");
    /* The same series as printed (the growth is of the same log at about the same time). */
    cr_expect_eq(count_prefixed(text, "eskit_"), count_prefixed(printed.out, "eskit_"), "%s", text);
    cr_expect_eq(value_of(text, "eskit_projector_lag_records" LAG_LABELS), 2);
    cr_expect_eq(access(tmp, F_OK), -1, "%s left behind", tmp);
    free(text);
    free(kept);
    tu_result_free(&printed);
    tu_result_free(&r);

    /* A directory that is not there: exit 1, one line, and nothing written. */
    char *nowhere = tu_path(dir, "no/such/dir/eskit.prom");
    r = TU_ESCTL("--db", db, "metrics", "--output", nowhere);
    cr_expect_eq(r.status, 1);
    assert_one_line_error(&r);
    cr_expect(strstr(r.err, "eskit.prom.tmp"), "%s", r.err);
    tu_result_free(&r);
    free(nowhere);
    free(prom);
    free(tmp);
    free(old);
}

Test(esctl_metrics, what_does_not_exist_is_left_out) {
    es_config_t *cfg = config();
    es_store_t *store = NULL;
    cr_assert_eq(es_store_new(cfg, &store, NULL), ES_OK);
    append_added(store, "ok-1", 1);
    es_store_destroy(store);
    es_config_destroy(cfg);
    /* No read model and no saga database: the log's series and the build alone. */
    tu_result r = TU_ESCTL("--db", db, "--readmodel", rm, "--saga-db", sagadb, "metrics");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_eq(count_prefixed(r.out, "eskit_projector_"), 0, "%s", r.out);
    cr_expect_eq(count_prefixed(r.out, "eskit_saga_"), 0, "%s", r.out);
    cr_expect_eq(value_of(r.out, "eskit_log_records{topic=\"" TP_TOPIC "\"}"), 1);
    cr_expect_eq(access(rm, F_OK), -1, "a read model was created");
    cr_expect_eq(access(sagadb, F_OK), -1, "a saga database was created");
    tu_result_free(&r);
    /* Nothing at all: only eskit_build_info, and no store is created either. */
    char *none = tu_path(dir, "none.db");
    r = TU_ESCTL("--db", none, "--readmodel", rm, "--saga-db", sagadb, "metrics");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_eq(count_prefixed(r.out, "eskit_"), 1, "%s", r.out);
    cr_expect_eq(access(none, F_OK), -1, "a store was created");
    tu_result_free(&r);
    free(none);
}

Test(esctl_metrics, a_damaged_file_fails_with_one_line) {
    int64_t checkpoint = 0, end = 0;
    workload(&checkpoint, &end);
    char *junk = tu_path(dir, "junk.db");
    FILE *f = fopen(junk, "w");
    cr_assert_not_null(f);
    fputs("this is not a database, not even close to one, at all\n", f);
    fclose(f);
    const char *cases[][2] = {{"--readmodel", junk}, {"--saga-db", junk}, {"--saga-db", db}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        tu_result r = TU_ESCTL("--db", db, "--readmodel", rm, "--saga-db", sagadb, cases[i][0],
                               cases[i][1], "metrics");
        cr_expect_eq(r.status, 1, "%s %s: %s", cases[i][0], cases[i][1], r.err);
        assert_one_line_error(&r);
        tu_result_free(&r);
    }
    free(junk);
}

Test(esctl_metrics, bad_usage_exits_2_and_help_describes_the_verb) {
    tu_result r = TU_ESCTL("metrics", "--bogus");
    cr_expect_eq(r.status, 2);
    assert_one_line_error(&r);
    cr_expect(strstr(r.err, "unknown option '--bogus' for 'metrics'"), "%s", r.err);
    tu_result_free(&r);
    r = TU_ESCTL("metrics", "extra");
    cr_expect_eq(r.status, 2);
    assert_one_line_error(&r);
    tu_result_free(&r);
    r = TU_ESCTL("metrics", "--output");
    cr_expect_eq(r.status, 2);
    assert_one_line_error(&r);
    tu_result_free(&r);
    const char *const forms[][3] = {{"metrics", "--help", NULL}, {"help", "metrics", NULL}};
    for (size_t i = 0; i < 2; i++) {
        r = tu_esctl(NULL, forms[i]);
        cr_expect_eq(r.status, 0, "%s", r.err);
        cr_expect_eq(strncmp(r.out, "usage: esctl metrics", 20), 0, "%s", r.out);
        cr_expect(strstr(r.out, "eskit_log_growth_bytes_per_second"), "%s", r.out);
        tu_result_free(&r);
    }
    r = TU_ESCTL("--help");
    cr_expect(strstr(r.out, "  metrics [--output FILE]"), "%s", r.out);
    tu_result_free(&r);
}
