/*
 * esctl sagas as an operator meets it: a saga database with the coordinator's
 * tables and instance rows, transitions appended to an embedded store as the
 * coordinator appends them ("<saga>.saga" streams of eskit.v1.SagaTransition),
 * and esctl run as a separate process.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eskit/v1/saga.pb-c.h"
#include "saga_int.h"
#include "testutil.h"

static char *dir;
static char *db;     /* the event store */
static char *sagadb; /* the coordinator's database */

/* The runner's environment must not leak a store, saga database or config into the runs. */
static void setup(void) {
    static const char *const vars[] = {"ESKIT_DB", "ESKIT_CONFIG", "ESKIT_BROKERS", "ESKIT_BACKEND",
                                       "ESKIT_SAGA_DB"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    dir = tu_tempdir();
    cr_assert_not_null(dir);
    db = tu_path(dir, "events.db");
    sagadb = tu_path(dir, "saga.db");
}

static void teardown(void) {
    tu_rmtree(dir);
    free(dir);
    free(db);
    free(sagadb);
}

TestSuite(esctl_sagas, .init = setup, .fini = teardown, .timeout = 60);

#define RUN TU_ESCTL
#define RUN_ENV TU_ESCTL_ENV

/* 2024-05-01T12:00:00.000Z */
#define T0 1714564800000000LL
#define SEC 1000000LL

/* The n-th line (0-based) of s as a fresh string; caller frees. */
static char *nth_line(const char *s, size_t n) {
    for (; n > 0 && s; n--) {
        s = strchr(s, '\n');
        s = s ? s + 1 : NULL;
    }
    cr_assert(s && *s, "output has too few lines");
    return strndup(s, strcspn(s, "\n"));
}

/* The first whitespace-separated word of s, as a fresh string. */
static char *first_word(const char *s) {
    return strndup(s, strcspn(s, " "));
}

static void assert_one_line_error(const tu_result *r) {
    cr_expect_eq(tu_count_lines(r->err), 1, "stderr should be one line, got: %s", r->err);
    cr_expect_eq(strncmp(r->err, "esctl: ", 7), 0, "stderr: %s", r->err);
    cr_expect_eq(strlen(r->out), 0, "stdout: %s", r->out);
}

static void exec_sql(sqlite3 *s, const char *sql) {
    char *msg = NULL;
    cr_assert_eq(sqlite3_exec(s, sql, NULL, NULL, &msg), SQLITE_OK, "%s: %s", sql, msg);
}

typedef struct instance {
    const char *saga, *id, *state;
    int step;
    int64_t started, updated, deadline;
    const char *reason;
} instance;

/* Four instances; the id o-2 is used by two sagas. Newest first: the order of this table. */
static const instance instances[] = {
    {"orders.fulfilment", "o-2", "compensating", 1, T0 + 1 * SEC, T0 + 5 * SEC, T0 + 65 * SEC,
     "payment declined"},
    {"orders.fulfilment", "o-3", "running", 0, T0 + 4 * SEC, T0 + 4 * SEC, T0 + 34 * SEC, ""},
    {"orders.fulfilment", "o-1", "completed", 3, T0, T0 + 3 * SEC, 0, ""},
    {"billing.refunds", "o-2", "running", 0, T0 + 2 * SEC, T0 + 2 * SEC, T0 + 62 * SEC, ""},
};
#define N_INSTANCES (sizeof(instances) / sizeof(instances[0]))

/* The coordinator's database as the coordinator leaves it: its schema, WAL, the rows. */
static void write_saga_db(void) {
    sqlite3 *s = NULL;
    cr_assert_eq(sqlite3_open(sagadb, &s), SQLITE_OK);
    exec_sql(s, "PRAGMA journal_mode=WAL");
    exec_sql(s, ES_SAGA_SCHEMA);
    for (size_t i = 0; i < N_INSTANCES; i++) {
        const instance *in = &instances[i];
        char *sql = sqlite3_mprintf(
            "INSERT INTO es_saga_instances (saga, id, state, step, started_at, updated_at, "
            "deadline, reason, seq, start_event) VALUES (%Q, %Q, %Q, %d, %lld, %lld, %lld, %Q, "
            "1, x'00')",
            in->saga, in->id, in->state, in->step, (long long)in->started, (long long)in->updated,
            (long long)in->deadline, in->reason);
        exec_sql(s, sql);
        sqlite3_free(sql);
    }
    sqlite3_close(s);
}

static es_store_t *open_store(void) {
    es_config_t *cfg = tu_config(dir, "events.db");
    es_store_t *store = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    es_config_destroy(cfg);
    return store;
}

static void append_payload(es_store_t *store, const char *type, const char *id,
                           const uint8_t *payload, size_t len) {
    es_new_event_t ev = {.event_type = ES_SAGA_EVENT_TYPE, .payload = payload, .payload_len = len};
    es_error_t err = {0};
    cr_assert_eq(es_store_append(store, type, id, ES_EXPECT_ANY, 0, &ev, 1, NULL, &err), ES_OK,
                 "%s", err.message);
}

static void append_transition(es_store_t *store, const Eskit__V1__SagaTransition *t) {
    char type[ES_MAX_TYPE_LEN + 1];
    snprintf(type, sizeof type, "%s.saga", t->saga);
    size_t len = eskit__v1__saga_transition__get_packed_size(t);
    uint8_t *buf = malloc(len + 1);
    eskit__v1__saga_transition__pack(t, buf);
    append_payload(store, type, t->instance_id, buf, len);
    free(buf);
}

static Eskit__V1__SagaTransition transition(const char *saga, const char *id, const char *kind,
                                            Eskit__V1__SagaState state, int64_t at) {
    Eskit__V1__SagaTransition t = ESKIT__V1__SAGA_TRANSITION__INIT;
    t.saga = (char *)saga;
    t.instance_id = (char *)id;
    t.kind = (char *)kind;
    t.state = state;
    t.at_us = at;
    return t;
}

static void set_step(Eskit__V1__SagaTransition *t, const char *step, unsigned index) {
    t->step = (char *)step;
    t->step_index = index;
}

static void set_command(Eskit__V1__SagaTransition *t, const char *cid, const char *ctype,
                        const char *atype, const char *aid) {
    t->command_id = (char *)cid;
    t->command_type = (char *)ctype;
    t->aggregate_type = (char *)atype;
    t->aggregate_id = (char *)aid;
}

/* orders.fulfilment/o-1, completed in one step: five transitions over 1.5 s. */
static void write_o1_history(es_store_t *store) {
    const char *saga = "orders.fulfilment";
    Eskit__V1__SagaTransition t =
        transition(saga, "o-1", "started", ESKIT__V1__SAGA_STATE__SAGA_STATE_RUNNING, T0);
    append_transition(store, &t);
    t = transition(saga, "o-1", "command_sent", ESKIT__V1__SAGA_STATE__SAGA_STATE_RUNNING,
                   T0 + 250000);
    set_step(&t, "reserve-stock", 0);
    set_command(&t, "orders.fulfilment/o-1/0.0/do", "inventory.v1.ReserveStock", "inventory.item",
                "sku-1");
    t.deadline_us = T0 + 30 * SEC;
    append_transition(store, &t);
    t = transition(saga, "o-1", "event_received", ESKIT__V1__SAGA_STATE__SAGA_STATE_RUNNING,
                   T0 + 1 * SEC);
    set_step(&t, "reserve-stock", 0);
    t.event_type = "inventory.v1.StockReserved";
    t.event_id = "01890000-0000-7000-8000-000000000001";
    append_transition(store, &t);
    t = transition(saga, "o-1", "step_completed", ESKIT__V1__SAGA_STATE__SAGA_STATE_RUNNING,
                   T0 + 1 * SEC);
    set_step(&t, "reserve-stock", 0);
    append_transition(store, &t);
    t = transition(saga, "o-1", "completed", ESKIT__V1__SAGA_STATE__SAGA_STATE_COMPLETED,
                   T0 + 1500000);
    append_transition(store, &t);
}

/* orders.fulfilment/o-2 and billing.refunds/o-2: a failure being compensated, and a start. */
static void write_o2_histories(es_store_t *store) {
    Eskit__V1__SagaTransition t = transition("orders.fulfilment", "o-2", "started",
                                             ESKIT__V1__SAGA_STATE__SAGA_STATE_RUNNING, T0 + SEC);
    append_transition(store, &t);
    t = transition("orders.fulfilment", "o-2", "step_failed",
                   ESKIT__V1__SAGA_STATE__SAGA_STATE_COMPENSATING, T0 + 125 * SEC);
    set_step(&t, "authorize-payment", 1);
    t.reason = "payment declined";
    append_transition(store, &t);
    t = transition("billing.refunds", "o-2", "started", ESKIT__V1__SAGA_STATE__SAGA_STATE_RUNNING,
                   T0 + 2 * SEC);
    append_transition(store, &t);
}

static void write_all(void) {
    write_saga_db();
    es_store_t *store = open_store();
    write_o1_history(store);
    write_o2_histories(store);
    es_store_destroy(store);
}

Test(esctl_sagas, list_prints_every_instance_most_recently_updated_first) {
    write_all();
    tu_result r = RUN("--saga-db", sagadb, "sagas", "list");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_eq(tu_count_lines(r.out), N_INSTANCES + 1, "stdout: %s", r.out);
    char *header = nth_line(r.out, 0);
    cr_expect_eq(strncmp(header, "ID ", 3), 0, "%s", header);
    const char *columns[] = {"SAGA", "STATE", "STEP", "STARTED", "UPDATED", "DEADLINE", "REASON"};
    for (size_t i = 0; i < sizeof(columns) / sizeof(columns[0]); i++)
        cr_expect_not_null(strstr(header, columns[i]), "%s in %s", columns[i], header);
    for (size_t i = 0; i < N_INSTANCES; i++) {
        char *line = nth_line(r.out, i + 1), *id = first_word(line);
        cr_expect_str_eq(id, instances[i].id, "row %zu: %s", i, line);
        cr_expect_not_null(strstr(line, instances[i].saga), "%s", line);
        cr_expect_not_null(strstr(line, instances[i].state), "%s", line);
        free(id);
        free(line);
    }
    char *o2 = nth_line(r.out, 1);
    cr_expect_not_null(strstr(o2, "2024-05-01T12:00:01.000Z"), "started: %s", o2);
    cr_expect_not_null(strstr(o2, "2024-05-01T12:00:05.000Z"), "updated: %s", o2);
    cr_expect_not_null(strstr(o2, "2024-05-01T12:01:05.000Z"), "deadline: %s", o2);
    cr_expect_not_null(strstr(o2, "payment declined"), "reason: %s", o2);
    cr_expect_not_null(strstr(o2, "  1  "), "step index 1: %s", o2);
    char *o1 = nth_line(r.out, 3);
    cr_expect_not_null(strstr(o1, "  3  "), "step index 3: %s", o1);
    cr_expect_not_null(strstr(o1, "  -  "), "no deadline: %s", o1);
    cr_expect_eq(strlen(r.err), 0, "stderr: %s", r.err);
    free(o1);
    free(o2);
    free(header);
    tu_result_free(&r);
}

Test(esctl_sagas, list_filters_by_saga_and_state) {
    write_all();
    tu_result r = RUN("--saga-db", sagadb, "sagas", "list", "--saga", "orders.fulfilment");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_eq(tu_count_lines(r.out), 4, "stdout: %s", r.out);
    cr_expect_null(strstr(r.out, "billing.refunds"), "%s", r.out);
    tu_result_free(&r);

    r = RUN("--saga-db", sagadb, "sagas", "list", "--state", "running");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_eq(tu_count_lines(r.out), 3, "stdout: %s", r.out);
    cr_expect_null(strstr(r.out, "completed"), "%s", r.out);
    cr_expect_null(strstr(r.out, "compensating"), "%s", r.out);
    tu_result_free(&r);

    r = RUN("--saga-db", sagadb, "sagas", "list", "--saga=orders.fulfilment", "--state=running");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_eq(tu_count_lines(r.out), 2, "stdout: %s", r.out);
    char *row = nth_line(r.out, 1), *id = first_word(row);
    cr_expect_str_eq(id, "o-3", "%s", row);
    free(id);
    free(row);
    tu_result_free(&r);

    r = RUN("--saga-db", sagadb, "sagas", "list", "--state", "failed");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_eq(tu_count_lines(r.out), 1, "stdout: %s", r.out);
    cr_expect_eq(strncmp(r.out, "no saga instances in state failed in ", 37), 0, "%s", r.out);
    tu_result_free(&r);
}

Test(esctl_sagas, list_json_is_an_array_of_instances) {
    write_all();
    const char *env[] = {NULL, NULL};
    char var[4096];
    snprintf(var, sizeof var, "ESKIT_SAGA_DB=%s", sagadb); /* the environment works as well */
    env[0] = var;
    tu_result r = RUN_ENV(env, "sagas", "list", "--json", "--saga", "orders.fulfilment");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_eq(r.out[0], '[', "%s", r.out);
    cr_expect_eq(tu_count_lines(r.out), 5, "one object a line between brackets: %s", r.out);
    char *o2 = nth_line(r.out, 1), *o1 = nth_line(r.out, 3);
    cr_expect_not_null(strstr(o2, "\"id\": \"o-2\", \"saga\": \"orders.fulfilment\", "
                                  "\"state\": \"compensating\", \"step_index\": 1"),
                       "%s", o2);
    cr_expect_not_null(strstr(o2, "\"started_at\": \"2024-05-01T12:00:01.000Z\""), "%s", o2);
    cr_expect_not_null(strstr(o2, "\"deadline\": \"2024-05-01T12:01:05.000Z\""), "%s", o2);
    cr_expect_not_null(strstr(o2, "\"reason\": \"payment declined\""), "%s", o2);
    cr_expect_not_null(strstr(o1, "\"deadline\": null"), "%s", o1);
    cr_expect_not_null(strstr(o1, "\"reason\": null"), "%s", o1);
    free(o1);
    free(o2);
    tu_result_free(&r);

    r = RUN("--saga-db", sagadb, "sagas", "list", "--json", "--state", "failed");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_str_eq(r.out, "[]\n");
    tu_result_free(&r);
}

Test(esctl_sagas, show_prints_the_history_in_order_with_every_field) {
    write_all();
    tu_result r = RUN("--db", db, "--saga-db", sagadb, "sagas", "show", "o-1");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_eq(tu_count_lines(r.out), 7, "a title, a header, five transitions: %s", r.out);
    char *title = nth_line(r.out, 0);
    cr_expect_str_eq(title, "saga orders.fulfilment instance o-1: 5 transitions from "
                            "2024-05-01T12:00:00.000Z, now completed");
    const char *kinds[] = {"started", "command_sent", "event_received", "step_completed",
                           "completed"};
    const char *offsets[] = {"+0.000s", "+0.250s", "+1.000s", "+1.000s", "+1.500s"};
    for (size_t i = 0; i < 5; i++) {
        char *line = nth_line(r.out, i + 2);
        unsigned seq = 0;
        char offset[32], kind[32], state[32];
        cr_assert_eq(sscanf(line, "%u %31s %31s %31s", &seq, offset, kind, state), 4, "%s", line);
        cr_expect_eq(seq, i + 1, "%s", line);
        cr_expect_str_eq(offset, offsets[i], "%s", line);
        cr_expect_str_eq(kind, kinds[i], "%s", line);
        cr_expect_str_eq(state, i == 4 ? "completed" : "running", "%s", line);
        cr_expect_neq(line[strlen(line) - 1], ' ', "no trailing blanks: '%s'", line);
        free(line);
    }
    char *sent = nth_line(r.out, 3), *received = nth_line(r.out, 4);
    cr_expect_not_null(strstr(sent, "0:reserve-stock"), "%s", sent);
    cr_expect_not_null(strstr(sent, "command=orders.fulfilment/o-1/0.0/do"), "%s", sent);
    cr_expect_not_null(strstr(sent, "command_type=inventory.v1.ReserveStock"), "%s", sent);
    cr_expect_not_null(strstr(sent, "target=inventory.item/sku-1"), "%s", sent);
    cr_expect_not_null(strstr(sent, "deadline=2024-05-01T12:00:30.000Z"), "%s", sent);
    cr_expect_not_null(strstr(received, "event=inventory.v1.StockReserved"), "%s", received);
    cr_expect_not_null(strstr(received, "event_id=01890000-0000-7000-8000-000000000001"), "%s",
                       received);
    cr_expect_null(strstr(received, "command="), "%s", received);
    cr_expect_eq(strlen(r.err), 0, "stderr: %s", r.err);
    free(sent);
    free(received);
    free(title);
    tu_result_free(&r);
}

Test(esctl_sagas, show_with_saga_reads_the_log_without_the_saga_database) {
    write_all();
    char *missing = tu_path(dir, "no-such-saga.db");
    tu_result r = RUN("--db", db, "--saga-db", missing, "sagas", "show", "o-2", "--saga",
                      "orders.fulfilment");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_eq(tu_count_lines(r.out), 4, "%s", r.out);
    char *failed = nth_line(r.out, 3);
    cr_expect_not_null(strstr(failed, "+2m04.000s"), "%s", failed);
    cr_expect_not_null(strstr(failed, "step_failed"), "%s", failed);
    cr_expect_not_null(strstr(failed, "compensating"), "%s", failed);
    cr_expect_not_null(strstr(failed, "1:authorize-payment"), "%s", failed);
    cr_expect_not_null(strstr(failed, "reason=\"payment declined\""), "%s", failed);
    free(failed);
    free(missing);
    tu_result_free(&r);
}

Test(esctl_sagas, show_json_is_one_object_with_the_transitions) {
    write_all();
    tu_result r = RUN("--db", db, "--saga-db", sagadb, "sagas", "show", "o-1", "--json");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_eq(tu_count_lines(r.out), 7, "%s", r.out);
    char *first = nth_line(r.out, 0), *sent = nth_line(r.out, 2), *last = nth_line(r.out, 6);
    cr_expect_str_eq(first, "{\"saga\": \"orders.fulfilment\", \"id\": \"o-1\", \"state\": "
                            "\"completed\", \"transitions\": [");
    cr_expect_not_null(strstr(sent, "\"seq\": 2, \"at\": \"2024-05-01T12:00:00.250Z\", "
                                    "\"offset_us\": 250000, \"kind\": \"command_sent\""),
                       "%s", sent);
    cr_expect_not_null(strstr(sent, "\"step\": \"reserve-stock\", \"step_index\": 0"), "%s", sent);
    cr_expect_not_null(strstr(sent, "\"aggregate_id\": \"sku-1\""), "%s", sent);
    cr_expect_not_null(strstr(sent, "\"event_type\": null"), "%s", sent);
    cr_expect_not_null(strstr(sent, "\"deadline\": \"2024-05-01T12:00:30.000Z\""), "%s", sent);
    cr_expect_str_eq(last, "]}");
    free(first);
    free(sent);
    free(last);
    tu_result_free(&r);
}

Test(esctl_sagas, show_asks_for_saga_when_several_sagas_have_the_id) {
    write_all();
    tu_result r = RUN("--db", db, "--saga-db", sagadb, "sagas", "show", "o-2");
    cr_expect_eq(r.status, 2, "stdout: %s", r.out);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, "--saga"), "%s", r.err);
    cr_expect_not_null(strstr(r.err, "billing.refunds"), "%s", r.err);
    tu_result_free(&r);

    r = RUN("--db", db, "--saga-db", sagadb, "sagas", "show", "o-2", "--saga", "billing.refunds");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_eq(tu_count_lines(r.out), 3, "%s", r.out);
    tu_result_free(&r);
}

Test(esctl_sagas, show_of_an_unknown_instance_fails_with_one_line) {
    write_all();
    tu_result r = RUN("--db", db, "--saga-db", sagadb, "sagas", "show", "o-404");
    cr_expect_eq(r.status, 1);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, "no saga instance 'o-404'"), "%s", r.err);
    tu_result_free(&r);

    r = RUN("--db", db, "sagas", "show", "o-404", "--saga", "orders.fulfilment");
    cr_expect_eq(r.status, 1);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, "orders.fulfilment.saga.events"), "%s", r.err);
    tu_result_free(&r);
}

Test(esctl_sagas, a_missing_saga_database_is_named_with_what_to_do) {
    char *missing = tu_path(dir, "no-such-saga.db");
    tu_result r = RUN("--saga-db", missing, "sagas", "list");
    cr_expect_eq(r.status, 1);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, missing), "%s", r.err);
    cr_expect_not_null(strstr(r.err, "saga.db"), "%s", r.err);
    tu_result_free(&r);

    r = RUN("--db", db, "--saga-db", missing, "sagas", "show", "o-1");
    cr_expect_eq(r.status, 1);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, "--saga NAME"), "%s", r.err);
    tu_result_free(&r);
    cr_expect_eq(access(missing, F_OK), -1, "looking must not create %s", missing);
    free(missing);
}

Test(esctl_sagas, show_does_not_create_a_missing_event_store) {
    write_saga_db();
    tu_result r = RUN("--db", db, "--saga-db", sagadb, "sagas", "show", "o-1");
    cr_expect_eq(r.status, 1);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, db), "%s", r.err);
    cr_expect_eq(access(db, F_OK), -1, "looking must not create %s", db);
    tu_result_free(&r);
}

Test(esctl_sagas, bad_arguments_are_usage_errors_saying_what_to_do) {
    write_all();
    struct {
        const char *args[6];
        const char *says;
    } cases[] = {
        {{"sagas", "list", "--state", "stuck"}, "running, compensating, completed, aborted"},
        {{"sagas", "list", "--saga", "Orders"}, "not a saga name"},
        {{"sagas", "list", "--saga", "orders"}, "not a saga name"},
        {{"sagas", "list", "--frobnicate"}, "unknown option '--frobnicate'"},
        {{"sagas", "list", "extra"}, "unexpected argument 'extra'"},
        {{"sagas", "show"}, "needs an instance <id>"},
        {{"sagas", "show", "o-1", "--state", "running"}, "'--state' does not apply"},
        {{"sagas", "show", "o-1", "o-2"}, "unexpected argument 'o-2'"},
        {{"sagas"}, "needs a subcommand"},
        {{"sagas", "purge"}, "unknown subcommand 'sagas purge'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *args[10] = {"--db", db, "--saga-db", sagadb};
        for (size_t j = 0; cases[i].args[j]; j++)
            args[4 + j] = cases[i].args[j];
        tu_result r = tu_esctl(NULL, args);
        cr_expect_eq(r.status, 2, "case %zu: status %d, stderr %s", i, r.status, r.err);
        assert_one_line_error(&r);
        cr_expect_not_null(strstr(r.err, cases[i].says), "case %zu: %s", i, r.err);
        cr_expect_not_null(strstr(r.err, "run 'esctl sagas --help'"),
                           "case %zu tells what to do: %s", i, r.err);
        tu_result_free(&r);
    }
}

Test(esctl_sagas, an_undecodable_transition_fails_naming_its_version) {
    write_all();
    es_store_t *store = open_store();
    static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x12};
    append_payload(store, "orders.fulfilment.saga", "o-1", garbage, sizeof garbage);
    es_store_destroy(store);
    tu_result r = RUN("--db", db, "--saga-db", sagadb, "sagas", "show", "o-1");
    cr_expect_eq(r.status, 1, "stdout: %s", r.out);
    assert_one_line_error(&r);
    cr_expect_not_null(strstr(r.err, "orders.fulfilment.saga/o-1"), "%s", r.err);
    cr_expect_not_null(strstr(r.err, "transition 6"), "%s", r.err);
    tu_result_free(&r);
}

Test(esctl_sagas, help_lists_the_sagas_verb) {
    tu_result r = RUN("--help");
    cr_assert_eq(r.status, 0);
    cr_expect_not_null(strstr(r.out, "sagas list"), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "sagas show <id>"), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "--saga-db FILE"), "%s", r.out);
    tu_result_free(&r);
    r = RUN("sagas", "--help");
    cr_assert_eq(r.status, 0);
    cr_expect_eq(strncmp(r.out, "usage: esctl sagas list", 23), 0, "%s", r.out);
    tu_result_free(&r);
}
