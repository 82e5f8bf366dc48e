/*
 * esctl's read-side verbs as an operator meets them: orders written through
 * the engine, `esctl replay order_summary` run as a separate process (the
 * module found beside esctl), then `lag` and `dlq`, and the read model
 * queried with SQLite.
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <libgen.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "domain.h"
#include "testutil.h"

static char *dir;
static char *db; /* the event store */
static char *rm; /* the read model */

/* The runner's environment must not leak a store, read model or config into the runs. */
static void setup(void) {
    static const char *const vars[] = {
        "ESKIT_DB",           "ESKIT_CONFIG",         "ESKIT_BROKERS",          "ESKIT_BACKEND",
        "ESKIT_READMODEL_DB", "ESKIT_PROJECTOR_PATH", "ESKIT_REPLAY_BATCH_SIZE"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    /* The demo's payloads decode through its types module, found by name beside esctl. */
    setenv("ESKIT_TYPES_MODULES", "order_saga_types", 1);
    dir = tu_tempdir();
    cr_assert_not_null(dir);
    db = tu_path(dir, "events.db");
    rm = tu_path(dir, "read.db");
}

static void teardown(void) {
    tu_rmtree(dir);
    free(dir);
    free(db);
    free(rm);
}

TestSuite(esctl_projectors, .init = setup, .fini = teardown, .timeout = 120);

typedef tu_result run_result;
#define run_free tu_result_free
#define run_env tu_esctl
#define RUN TU_ESCTL
#define RUN_ENV TU_ESCTL_ENV

/* Lines of s starting with prefix. */
static size_t count_prefixed(const char *s, const char *prefix) {
    size_t n = 0;
    for (const char *line = s; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : 0)
        n += strncmp(line, prefix, strlen(prefix)) == 0;
    return n;
}

/* The first line of s starting with prefix, as a fresh string, or NULL. */
static char *line_with_prefix(const char *s, const char *prefix) {
    for (const char *line = s; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : 0)
        if (strncmp(line, prefix, strlen(prefix)) == 0)
            return strndup(line, strcspn(line, "\n"));
    return NULL;
}

static void assert_one_line_error(const run_result *r) {
    cr_expect_eq(tu_count_lines(r->err), 1, "stderr should be one line, got: %s", r->err);
    cr_expect_eq(strncmp(r->err, "esctl: ", 7), 0, "stderr: %s", r->err);
}

/* Places orders o-<first> .. o-<first + n - 1> through the engine; each is one OrderPlaced. */
static void place_orders(int first, int n) {
    es_config_t *cfg = es_config_new();
    es_engine_t *engine = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "db", db, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(engine, &err), ES_OK, "%s", err.message);
    Orders__V1__LineItem item = ORDERS__V1__LINE_ITEM__INIT;
    item.sku = "A";
    item.quantity = 2;
    item.unit_price_cents = 150;
    Orders__V1__LineItem *items[] = {&item};
    Orders__V1__PlaceOrder place = ORDERS__V1__PLACE_ORDER__INIT;
    place.customer_id = "c-1";
    place.n_items = 1;
    place.items = items;
    place.currency = "EUR";
    for (int i = first; i < first + n; i++) {
        char id[32];
        snprintf(id, sizeof(id), "o-%d", i);
        es_command_t cmd = {
            .aggregate_type = "orders.order", .aggregate_id = id, .message = &place.base};
        es_result_t res = {0};
        cr_assert_eq(es_execute(engine, &cmd, &res, &err), ES_OK, "%s: %s", id, err.message);
        cr_assert_eq(res.n_events, 1);
        es_result_clear(&res);
    }
    es_engine_destroy(engine);
    es_config_destroy(cfg);
}

/* Appends one event of the given type and payload bytes to orders.order/<id>, bypassing the
 * aggregate's rules: how a buggy or foreign writer makes an event a projector must park. */
static void append_raw(const char *id, const char *event_type, const uint8_t *payload, size_t len) {
    es_config_t *cfg = es_config_new();
    es_store_t *store = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "db", db, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    es_new_event_t ev = {.event_type = event_type, .payload = payload, .payload_len = len};
    cr_assert_eq(es_store_append(store, "orders.order", id, ES_EXPECT_ANY, 0, &ev, 1, NULL, &err),
                 ES_OK, "%s", err.message);
    es_store_destroy(store);
    es_config_destroy(cfg);
}

/* An OrderConfirmed for an order never placed: order_summary parks it. */
static void append_ghost_confirmation(void) {
    append_raw("o-ghost", "orders.v1.OrderConfirmed", NULL, 0);
}

/* One integer from the read model. */
static long long query_int(const char *sql) {
    return tu_query_int(rm, sql);
}

static void exec_sql(const char *path, const char *sql) {
    sqlite3 *h = NULL;
    cr_assert_eq(sqlite3_open(path, &h), SQLITE_OK, "%s", path);
    sqlite3_busy_timeout(h, 5000);
    char *msg = NULL;
    cr_assert_eq(sqlite3_exec(h, sql, NULL, NULL, &msg), SQLITE_OK, "%s: %s", sql, msg);
    sqlite3_close(h);
}

static void replay_ok(void) {
    run_result r = RUN("--db", db, "--readmodel", rm, "replay", "order_summary");
    cr_assert_eq(r.status, 0, "replay failed: %s%s", r.out, r.err);
    cr_expect_eq(strlen(r.err), 0, "stderr: %s", r.err);
    run_free(&r);
}

/* A minimal JSON checker (RFC 8259 grammar), so "parse-able" is tested, not assumed. */
typedef struct json_in {
    const char *p;
} json_in;

static bool json_value(json_in *in);

static void json_ws(json_in *in) {
    while (*in->p == ' ' || *in->p == '\n' || *in->p == '\r' || *in->p == '\t')
        in->p++;
}

static bool json_string(json_in *in) {
    if (*in->p++ != '"')
        return false;
    for (; *in->p != '"'; in->p++) {
        if ((unsigned char)*in->p < 0x20)
            return false;
        if (*in->p == '\\') {
            in->p++;
            if (*in->p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!isxdigit((unsigned char)in->p[i]))
                        return false;
                in->p += 4;
            } else if (!strchr("\"\\/bfnrt", *in->p) || !*in->p) {
                return false;
            }
        }
    }
    in->p++;
    return true;
}

static bool json_number(json_in *in) {
    const char *start = in->p;
    if (*in->p == '-')
        in->p++;
    if (!isdigit((unsigned char)*in->p))
        return false;
    if (*in->p == '0' && isdigit((unsigned char)in->p[1]))
        return false;
    while (isdigit((unsigned char)*in->p))
        in->p++;
    if (*in->p == '.') {
        in->p++;
        if (!isdigit((unsigned char)*in->p))
            return false;
        while (isdigit((unsigned char)*in->p))
            in->p++;
    }
    return in->p > start;
}

static bool json_members(json_in *in, char close, bool keyed) {
    in->p++;
    json_ws(in);
    if (*in->p == close) {
        in->p++;
        return true;
    }
    for (;;) {
        json_ws(in);
        if (keyed) {
            if (!json_string(in))
                return false;
            json_ws(in);
            if (*in->p++ != ':')
                return false;
        }
        if (!json_value(in))
            return false;
        json_ws(in);
        if (*in->p == close) {
            in->p++;
            return true;
        }
        if (*in->p++ != ',')
            return false;
    }
}

static bool json_value(json_in *in) {
    json_ws(in);
    switch (*in->p) {
    case '{':
        return json_members(in, '}', true);
    case '[':
        return json_members(in, ']', false);
    case '"':
        return json_string(in);
    case 't':
        return strncmp(in->p, "true", 4) == 0 ? (in->p += 4, true) : false;
    case 'f':
        return strncmp(in->p, "false", 5) == 0 ? (in->p += 5, true) : false;
    case 'n':
        return strncmp(in->p, "null", 4) == 0 ? (in->p += 4, true) : false;
    default:
        return json_number(in);
    }
}

/* Asserts s is exactly one JSON value (plus whitespace) starting with first. */
static void assert_json(const char *s, char first) {
    json_in in = {s};
    json_ws(&in);
    cr_assert_eq(*in.p, first, "expected JSON starting with %c: %s", first, s);
    cr_assert(json_value(&in), "not JSON (at \"%.20s\"): %s", in.p, s);
    json_ws(&in);
    cr_assert_eq(*in.p, '\0', "trailing text after the JSON: %s", in.p);
}

/* Number of objects in a JSON array of flat-or-nested objects: the top-level '{'s. */
static size_t json_array_len(const char *s) {
    size_t n = 0;
    int depth = 0;
    bool in_str = false;
    for (const char *p = s; *p; p++) {
        if (in_str) {
            if (*p == '\\')
                p++;
            else if (*p == '"')
                in_str = false;
        } else if (*p == '"') {
            in_str = true;
        } else if (*p == '{' || *p == '[') {
            n += depth == 1 && *p == '{';
            depth++;
        } else if (*p == '}' || *p == ']') {
            depth--;
        }
    }
    return n;
}

Test(esctl_projectors, bad_arguments_exit_2_with_one_line) {
    const char *const forms[][6] = {
        {"replay", NULL},
        {"replay", "order_summary", "extra", NULL},
        {"replay", "order_summary", "--json", NULL},
        {"replay", "order_summary", "--readmodel", NULL},
        {"lag", "extra", NULL},
        {"lag", "--all", NULL},
        {"dlq", NULL},
        {"dlq", "frobnicate", NULL},
        {"dlq", "list", "extra", NULL},
        {"dlq", "list", "--projector", "Not A Name", NULL},
        {"dlq", "show", NULL},
        {"dlq", "show", "abc", NULL},
        {"dlq", "show", "0", NULL},
        {"dlq", "show", "1", "2", NULL},
        {"dlq", "show", "1", "--all", NULL},
        {"dlq", "redrive", NULL},
        {"dlq", "redrive", "order_summary", "x1", NULL},
        {"dlq", "redrive", "order_summary", "--json", NULL},
    };
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        run_result r = run_env(NULL, forms[i]);
        cr_expect_eq(r.status, 2, "esctl %s %s %s: status %d, %s", forms[i][0], forms[i][1],
                     forms[i][2], r.status, r.err);
        assert_one_line_error(&r);
        cr_expect_eq(strlen(r.out), 0, "stdout: %s", r.out);
        run_free(&r);
    }
}

Test(esctl_projectors, help_describes_replay_lag_and_dlq) {
    run_result r = RUN("--help");
    cr_assert_eq(r.status, 0);
    cr_expect_not_null(strstr(r.out, "replay <projector>"), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "lag"), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "dlq redrive"), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "--readmodel"), "%s", r.out);
    run_free(&r);
    const char *const forms[][4] = {{"replay", "--help", NULL},
                                    {"help", "lag", NULL},
                                    {"dlq", "--help", NULL},
                                    {"dlq", "show", "-h", NULL}};
    const char *want[] = {"usage: esctl replay", "usage: esctl lag", "usage: esctl dlq list",
                          "usage: esctl dlq list"};
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        r = run_env(NULL, forms[i]);
        cr_expect_eq(r.status, 0, "%s %s: %s", forms[i][0], forms[i][1], r.err);
        cr_expect_eq(strncmp(r.out, want[i], strlen(want[i])), 0, "%s", r.out);
        cr_expect_eq(strlen(r.err), 0, "%s", r.err);
        run_free(&r);
    }
}

Test(esctl_projectors, replay_builds_the_read_model_from_the_log) {
    place_orders(1, 3);
    replay_ok();
    cr_expect_eq(query_int("SELECT count(*) FROM order_summary"), 3);
    cr_expect_eq(query_int("SELECT amount_cents FROM order_summary WHERE order_id = 'o-2' AND "
                           "status = 'placed' AND customer_id = 'c-1'"),
                 300);
}

Test(esctl_projectors, lag_shows_the_backlog_and_is_zero_after_a_replay) {
    place_orders(1, 3);
    replay_ok();
    run_result r = RUN("--db", db, "--readmodel", rm, "lag");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert_eq(tu_count_lines(r.out), 2, "a header and one partition: %s", r.out);
    cr_expect_eq(strncmp(r.out, "PROJECTOR", 9), 0, "%s", r.out);
    char *row = line_with_prefix(r.out, "order_summary ");
    cr_assert_not_null(row, "%s", r.out);
    long long part = -1, checkpoint = -1, end = -1, lag = -1;
    cr_assert_eq(sscanf(row, "order_summary orders.order.events %lld %lld %lld %lld", &part,
                        &checkpoint, &end, &lag),
                 4, "%s", row);
    cr_expect_eq(part, 0);
    cr_expect_eq(checkpoint, end, "%s", row);
    cr_expect_eq(lag, 0, "%s", row);
    free(row);
    run_free(&r);

    place_orders(4, 2); /* the read model is now two events behind */
    r = RUN("--db", db, "--readmodel", rm, "lag");
    cr_assert_eq(r.status, 0, "%s", r.err);
    row = line_with_prefix(r.out, "order_summary ");
    cr_assert_not_null(row, "%s", r.out);
    long long checkpoint2 = -1, end2 = -1;
    cr_assert_eq(sscanf(row, "order_summary orders.order.events %lld %lld %lld %lld", &part,
                        &checkpoint2, &end2, &lag),
                 4, "%s", row);
    cr_expect_eq(checkpoint2, checkpoint, "nothing ran: %s", row);
    cr_expect_gt(end2, end, "%s", row);
    cr_expect_eq(lag, 2, "%s", row);
    free(row);
    run_free(&r);

    replay_ok();
    r = RUN("--db", db, "--readmodel", rm, "lag");
    cr_assert_eq(r.status, 0, "%s", r.err);
    row = line_with_prefix(r.out, "order_summary ");
    cr_assert_not_null(row, "%s", r.out);
    cr_assert_eq(sscanf(row, "order_summary orders.order.events %lld %lld %lld %lld", &part,
                        &checkpoint, &end, &lag),
                 4, "%s", row);
    cr_expect_eq(lag, 0, "%s", row);
    cr_expect_eq(checkpoint, end2, "%s", row);
    free(row);
    run_free(&r);
    cr_expect_eq(query_int("SELECT count(*) FROM order_summary"), 5);
}

/* Global options after the verb mean what they mean before it. */
Test(esctl_projectors, lag_takes_db_and_readmodel_after_the_verb_too) {
    place_orders(1, 3);
    replay_ok();
    run_result r = RUN("lag", "--readmodel", rm, "--db", db);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect_eq(tu_count_lines(r.out), 2, "a header and one partition: %s", r.out);
    char *row = line_with_prefix(r.out, "order_summary ");
    cr_expect_not_null(row, "%s", r.out);
    free(row);
    run_free(&r);
}

Test(esctl_projectors, lag_json_is_an_array_of_rows) {
    place_orders(1, 2);
    replay_ok();
    place_orders(3, 1);
    run_result r = RUN("--db", db, "--readmodel", rm, "lag", "--json");
    cr_assert_eq(r.status, 0, "%s", r.err);
    assert_json(r.out, '[');
    cr_expect_eq(json_array_len(r.out), 1, "%s", r.out);
    cr_expect_not_null(strstr(r.out, "\"projector\": \"order_summary\""), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "\"topic\": \"orders.order.events\""), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "\"partition\": 0"), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "\"checkpoint\": "), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "\"end\": "), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "\"lag\": 1}"), "%s", r.out);
    run_free(&r);
}

/* n events of type in streams of 500, appended straight to the store (no decide step). */
static void append_bulk(const char *type, const char *prefix, int n) {
    es_config_t *cfg = es_config_new();
    es_store_t *st = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "db", db, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_config_set(cfg, "sqlite.synchronous", "off", &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_store_new(cfg, &st, &err), ES_OK, "%s", err.message);
    es_new_event_t ev[500];
    for (int i = 0; i < 500; i++)
        ev[i] = (es_new_event_t){.event_type = "orders.v1.OrderConfirmed"};
    for (int k = 0; k * 500 < n; k++) {
        char id[32];
        snprintf(id, sizeof id, "%s-%d", prefix, k);
        cr_assert_eq(es_store_append(st, type, id, ES_EXPECT_ANY, 0, ev, 500, NULL, &err), ES_OK,
                     "%s", err.message);
    }
    es_store_destroy(st);
    es_config_destroy(cfg);
}

/* Past 65,536 positions the embedded lag is estimated from positions (~N), sampled when
 * another type shares the log; --exact counts it. */
Test(esctl_projectors, lag_estimates_a_long_backlog_and_exact_counts_it) {
    place_orders(1, 2);
    replay_ok();
    for (int k = 0; k < 8; k++) { /* 40,000 orders events among 80,000 */
        append_bulk("orders.order", k % 2 ? "b" : "a", 5000);
        append_bulk("stock.item", k % 2 ? "d" : "c", 5000);
    }
    run_result r = RUN("--db", db, "--readmodel", rm, "lag");
    cr_assert_eq(r.status, 0, "%s", r.err);
    char *row = line_with_prefix(r.out, "order_summary ");
    cr_assert_not_null(row, "%s", r.out);
    long long part = -1, checkpoint = -1, end = -1, lag = -1;
    cr_assert_eq(sscanf(row, "order_summary orders.order.events %lld %lld %lld ~%lld", &part,
                        &checkpoint, &end, &lag),
                 4, "an estimate is ~N: %s", row);
    cr_expect(lag > 36000 && lag < 44000, "within 10%% of 40,000: %s", row);
    free(row);
    run_free(&r);
    r = RUN("--db", db, "--readmodel", rm, "lag", "--json");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect_not_null(strstr(r.out, "\"estimated\": true, \"lag\": "), "%s", r.out);
    run_free(&r);
    r = RUN("--db", db, "--readmodel", rm, "lag", "--exact");
    cr_assert_eq(r.status, 0, "%s", r.err);
    row = line_with_prefix(r.out, "order_summary ");
    cr_assert_not_null(row, "%s", r.out);
    cr_assert_eq(sscanf(row, "order_summary orders.order.events %lld %lld %lld %lld", &part,
                        &checkpoint, &end, &lag),
                 4, "%s", row);
    cr_expect_eq(lag, 40000, "%s", row);
    free(row);
    run_free(&r);
}

Test(esctl_projectors, lag_without_a_read_model_exits_1_naming_it_and_creates_nothing) {
    place_orders(1, 1);
    run_result r = RUN("--db", db, "--readmodel", rm, "lag");
    cr_expect_eq(r.status, 1);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, rm), "%s", r.err);
    cr_expect_not_null(strstr(r.err, "esctl replay"), "says how to build it: %s", r.err);
    cr_expect_eq(access(rm, F_OK), -1, "esctl created %s", rm);
    run_free(&r);
}

Test(esctl_projectors, replay_without_a_tty_prints_progress_lines_and_a_summary) {
    place_orders(1, 50);
    /* Batches of 10 report progress five times: at 20%, 40% ... 100%. */
    const char *env[] = {"ESKIT_REPLAY_BATCH_SIZE=10", NULL};
    run_result r = RUN_ENV(env, "--db", db, "--readmodel", rm, "replay", "order_summary");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_expect_eq(strlen(r.err), 0, "no bar and no noise on stderr: %s", r.err);
    cr_expect_null(strchr(r.out, '\r'), "no terminal control without a terminal: %s", r.out);
    cr_expect_null(strchr(r.out, '\033'), "%s", r.out);
    cr_expect_geq(count_prefixed(r.out, "replay order_summary: "), 3, "%s", r.out);
    char *first = line_with_prefix(r.out, "replay order_summary: ");
    cr_assert_not_null(first);
    cr_expect_not_null(strstr(first, " of 50 events ("), "%s", first);
    cr_expect_not_null(strstr(first, "events/s"), "%s", first);
    cr_expect_not_null(strstr(first, "ETA"), "%s", first);
    free(first);
    cr_expect_not_null(strstr(r.out, "replay order_summary: 50 of 50 events (100%)"), "%s", r.out);
    char *summary = line_with_prefix(r.out, "replayed order_summary: ");
    cr_assert_not_null(summary, "%s", r.out);
    unsigned long long events = 0, parked = 9, ignored = 9;
    double secs = -1, rate = -1;
    cr_expect_eq(sscanf(summary,
                        "replayed order_summary: %llu events, %llu parked, %llu ignored, %lf s, "
                        "%lf events/s",
                        &events, &parked, &ignored, &secs, &rate),
                 5, "%s", summary);
    cr_expect_eq(events, 50);
    cr_expect_eq(parked, 0);
    cr_expect_geq(secs, 0);
    cr_expect_gt(rate, 0);
    /* The summary is the last line. */
    const char *tail = strstr(r.out, summary);
    cr_expect_eq(strlen(tail), strlen(summary) + 1, "%s", r.out);
    free(summary);
    run_free(&r);
    cr_expect_eq(query_int("SELECT count(*) FROM order_summary"), 50);
}

Test(esctl_projectors, replay_of_an_unknown_projector_exits_1_naming_it) {
    place_orders(1, 1);
    run_result r = RUN("--db", db, "--readmodel", rm, "replay", "no_such_projector");
    cr_expect_eq(r.status, 1);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, "no_such_projector"), "%s", r.err);
    cr_expect_eq(strlen(r.out), 0, "%s", r.out);
    cr_expect_eq(access(rm, F_OK), -1, "esctl created %s", rm);
    run_free(&r);

    r = RUN("--db", db, "--readmodel", rm, "replay", "/nonexistent/summary.so");
    cr_expect_eq(r.status, 1);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, "/nonexistent/summary.so"), "%s", r.err);
    run_free(&r);

    /* A module that is not a projector: named, and the missing symbol too. */
    char *copy = strdup(ESCTL_PATH);
    char *types = tu_path(dirname(copy), "esctl_test_types.so");
    r = RUN("--db", db, "--readmodel", rm, "replay", types);
    cr_expect_eq(r.status, 1);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, types), "%s", r.err);
    cr_expect_not_null(strstr(r.err, "es_projector_entry"), "%s", r.err);
    run_free(&r);
    free(types);
    free(copy);
}

Test(esctl_projectors, replay_finds_a_module_by_path_and_through_projector_path) {
    place_orders(1, 2);
    char *copy = strdup(ESCTL_PATH);
    char *mods = tu_path(dirname(copy), "projectors");
    char *so = tu_path(mods, "order_summary.so");
    run_result r = RUN("--db", db, "--readmodel", rm, "replay", so);
    cr_expect_eq(r.status, 0, "%s", r.err);
    run_free(&r);
    char *env_path = NULL;
    cr_assert_gt(asprintf(&env_path, "ESKIT_PROJECTOR_PATH=/nonexistent:%s", mods), 0);
    const char *env[] = {env_path, NULL};
    r = RUN_ENV(env, "--db", db, "--readmodel", rm, "replay", "order_summary");
    cr_expect_eq(r.status, 0, "%s", r.err);
    run_free(&r);
    cr_expect_eq(query_int("SELECT count(*) FROM order_summary"), 2);
    free(env_path);
    free(so);
    free(mods);
    free(copy);
}

Test(esctl_projectors, a_failed_replay_exits_1_with_one_line_and_keeps_the_live_model) {
    place_orders(1, 2);
    replay_ok();
    char *bad = tu_path(dir, "no-such-dir/read.db");
    run_result r = RUN("--db", db, "--readmodel", bad, "replay", "order_summary");
    cr_expect_eq(r.status, 1, "%s", r.out);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, "order_summary"), "%s", r.err);
    cr_expect_not_null(strstr(r.err, "no-such-dir"), "%s", r.err);
    cr_expect_null(strstr(r.out, "replayed "), "no summary after a failure: %s", r.out);
    run_free(&r);
    free(bad);
    cr_expect_eq(query_int("SELECT count(*) FROM order_summary"), 2);
}

Test(esctl_projectors, replay_with_a_missing_store_exits_1_and_creates_nothing) {
    run_result r = RUN("--db", db, "--readmodel", rm, "replay", "order_summary");
    cr_expect_eq(r.status, 1);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, db), "%s", r.err);
    cr_expect_eq(access(db, F_OK), -1, "esctl created %s", db);
    cr_expect_eq(access(rm, F_OK), -1, "esctl created %s", rm);
    run_free(&r);
}

Test(esctl_projectors, readmodel_comes_from_the_environment_and_config_file) {
    place_orders(1, 1);
    char *env_rm = NULL;
    cr_assert_gt(asprintf(&env_rm, "ESKIT_READMODEL_DB=%s", rm), 0);
    const char *env[] = {env_rm, NULL};
    run_result r = RUN_ENV(env, "--db", db, "replay", "order_summary");
    cr_expect_eq(r.status, 0, "%s", r.err);
    run_free(&r);
    cr_expect_eq(query_int("SELECT count(*) FROM order_summary"), 1);
    free(env_rm);

    char *conf = tu_path(dir, "ops.conf"), *text = NULL;
    cr_assert_gt(asprintf(&text, "db = %s\nreadmodel.db = %s\n", db, rm), 0);
    FILE *f = fopen(conf, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    r = RUN("--config", conf, "lag", "--json");
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect_not_null(strstr(r.out, "\"lag\": 0}"), "%s", r.out);
    run_free(&r);
    free(conf);
    free(text);
}

Test(esctl_projectors, dlq_list_and_show_on_an_empty_dlq) {
    place_orders(1, 2);
    replay_ok();
    run_result r = RUN("--readmodel", rm, "dlq", "list");
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect_not_null(strstr(r.out, "no parked events"), "%s", r.out);
    cr_expect_eq(tu_count_lines(r.out), 1, "%s", r.out);
    run_free(&r);
    r = RUN("--readmodel", rm, "dlq", "list", "--all", "--json");
    cr_expect_eq(r.status, 0, "%s", r.err);
    assert_json(r.out, '[');
    cr_expect_eq(json_array_len(r.out), 0, "%s", r.out);
    run_free(&r);
    r = RUN("--readmodel", rm, "dlq", "show", "1");
    cr_expect_eq(r.status, 1);
    assert_one_line_error(&r);
    cr_expect_eq(strlen(r.out), 0, "%s", r.out);
    run_free(&r);
    r = RUN("--db", db, "--readmodel", rm, "dlq", "redrive", "order_summary");
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect_not_null(strstr(r.out, "redrive order_summary: 0 applied, 0 failed"), "%s", r.out);
    run_free(&r);
}

Test(esctl_projectors, dlq_without_a_read_model_exits_1_naming_it) {
    run_result r = RUN("--readmodel", rm, "dlq", "list");
    cr_expect_eq(r.status, 1);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, rm), "%s", r.err);
    cr_expect_eq(access(rm, F_OK), -1, "esctl created %s", rm);
    run_free(&r);
}

/* The id of the only DLQ entry (as dlq list --json shows it). */
static long long only_dlq_id(void) {
    run_result r = RUN("--readmodel", rm, "dlq", "list", "--json");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert_eq(json_array_len(r.out), 1, "%s", r.out);
    const char *p = strstr(r.out, "\"id\": ");
    cr_assert_not_null(p, "%s", r.out);
    long long id = atoll(p + 6);
    run_free(&r);
    return id;
}

Test(esctl_projectors, replay_prints_parked_events_and_dlq_shows_them) {
    place_orders(1, 2);
    append_ghost_confirmation();
    run_result r = RUN("--db", db, "--readmodel", rm, "replay", "order_summary");
    cr_assert_eq(r.status, 0, "parked events do not fail the rebuild: %s%s", r.out, r.err);
    char *parked = line_with_prefix(r.out, "parked: ");
    cr_assert_not_null(parked, "%s", r.out);
    cr_expect_eq(count_prefixed(r.out, "parked: "), 1, "%s", r.out);
    cr_expect_not_null(strstr(parked, "order_summary orders.order.events[0]@"), "%s", parked);
    cr_expect_not_null(strstr(parked, " orders.v1.OrderConfirmed (dlq #"), "%s", parked);
    cr_expect_not_null(strstr(parked, "o-ghost"), "the error names the order: %s", parked);
    cr_expect_not_null(strstr(r.out, "replayed order_summary: 3 events, 1 parked"), "%s", r.out);
    free(parked);
    run_free(&r);

    r = RUN("--readmodel", rm, "dlq", "list");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect_eq(tu_count_lines(r.out), 2, "a header and one entry: %s", r.out);
    cr_expect_eq(strncmp(r.out, "ID  PROJECTOR", 13), 0, "%s", r.out);
    cr_expect_not_null(strstr(r.out, "o-ghost"), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "orders.v1.OrderConfirmed"), "%s", r.out);
    run_free(&r);
    r = RUN("--readmodel", rm, "dlq", "list", "--projector", "customer_orders");
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect_not_null(strstr(r.out, "no parked events of customer_orders"), "%s", r.out);
    run_free(&r);

    long long id = only_dlq_id();
    char ids[32];
    snprintf(ids, sizeof(ids), "%lld", id);
    r = RUN("--readmodel", rm, "dlq", "show", ids);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect_not_null(strstr(r.out, "projector       order_summary\n"), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "topic           orders.order.events\n"), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "key             o-ghost\n"), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "status          parked\n"), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "error           ES_ESTATE: "), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "an event envelope:"), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "  aggregate     orders.order/o-ghost version 1\n"), "%s",
                       r.out);
    run_free(&r);
    r = RUN("--readmodel", rm, "dlq", "show", ids, "--json");
    cr_assert_eq(r.status, 0, "%s", r.err);
    assert_json(r.out, '{');
    cr_expect_not_null(strstr(r.out, "\"key\": \"o-ghost\""), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "\"code\": \"ES_ESTATE\""), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "\"redriven_at\": null"), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "\"event\": {\"event_id\": "), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "\"payload\": {}"), "%s", r.out);
    run_free(&r);
}

Test(esctl_projectors, dlq_redrive_reports_failures_then_applies_after_a_fix) {
    place_orders(1, 1);
    append_ghost_confirmation();
    replay_ok();
    long long id = only_dlq_id();
    char ids[32];
    snprintf(ids, sizeof(ids), "%lld", id);

    run_result r = RUN("--db", db, "--readmodel", rm, "dlq", "redrive", "order_summary");
    cr_expect_eq(r.status, 1);
    cr_expect_not_null(strstr(r.out, "redrive order_summary: 0 applied, 1 failed"), "%s", r.out);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, "dlq list --projector order_summary"), "%s", r.err);
    run_free(&r);

    /* The operator repairs the read model by hand; the confirmation now applies. */
    exec_sql(rm, "INSERT INTO order_summary (order_id, status, customer_id, amount_cents, "
                 "currency, item_count, placed_at_us, updated_at_us, version) VALUES "
                 "('o-ghost', 'placed', 'c-9', 100, 'EUR', 1, 0, 0, 0)");
    r = RUN("--db", db, "--readmodel", rm, "dlq", "redrive", "order_summary", ids);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect_not_null(strstr(r.out, "redrive order_summary: 1 applied, 0 failed"), "%s", r.out);
    cr_expect_eq(strlen(r.err), 0, "%s", r.err);
    run_free(&r);
    cr_expect_eq(query_int("SELECT count(*) FROM order_summary WHERE order_id = 'o-ghost' AND "
                           "status = 'confirmed'"),
                 1);

    r = RUN("--readmodel", rm, "dlq", "list");
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect_not_null(strstr(r.out, "no parked events"), "%s", r.out);
    run_free(&r);
    r = RUN("--readmodel", rm, "dlq", "list", "--all");
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect_not_null(strstr(r.out, "REDRIVEN AT"), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "o-ghost"), "%s", r.out);
    run_free(&r);
    r = RUN("--readmodel", rm, "dlq", "show", ids);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect_not_null(strstr(r.out, "status          redriven\n"), "%s", r.out);
    run_free(&r);
}

Test(esctl_projectors, dlq_show_dumps_a_record_that_is_not_an_envelope) {
    place_orders(1, 2);
    /* The only way an embedded log holds bytes that are not an envelope: damage on disk.
     * (On Kafka any producer can write them.) The runner parks such a record undecoded. */
    exec_sql(db, "UPDATE es_events SET envelope = x'0a10616263' WHERE pos = (SELECT max(pos) "
                 "FROM es_events)");
    run_result r = RUN("--db", db, "--readmodel", rm, "replay", "order_summary");
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_expect_not_null(strstr(r.out, "(undecodable record)"), "%s", r.out);
    run_free(&r);
    long long id = only_dlq_id();
    char ids[32];
    snprintf(ids, sizeof(ids), "%lld", id);
    r = RUN("--readmodel", rm, "dlq", "show", ids);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect_not_null(strstr(r.out, "record          5 bytes, not an event envelope ("), "%s",
                       r.out);
    cr_expect_not_null(strstr(r.out, "  00000000  0a 10 61 62 63"), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "|..abc|\n"), "%s", r.out);
    run_free(&r);
    r = RUN("--readmodel", rm, "dlq", "show", ids, "--json");
    cr_assert_eq(r.status, 0, "%s", r.err);
    assert_json(r.out, '{');
    cr_expect_not_null(strstr(r.out, "\"record_base64\": \"ChBhYmM=\""), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "\"decode_error\": "), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "\"event_type\": null"), "%s", r.out);
    /* The embedded log reads a record's key only when asked: the park asks. */
    cr_expect_not_null(strstr(r.out, "\"key\": \"o-2\""), "%s", r.out);
    run_free(&r);
}
