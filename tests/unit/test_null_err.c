/*
 * err may be NULL in every public call: each call below takes a failure path
 * with err == NULL (and a log callback set, as a service has it) and must
 * return the failure's code without touching err.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <eskit/topics.h>

#include "domain.h"
#include "fulfilment.h"
#include "notes.h"
#include "testutil.h"

static char *dir;
static es_config_t *cfg;
static atomic_int log_lines;

static void count_line(int level, const char *message, void *opaque) {
    (void)level, (void)message, (void)opaque;
    atomic_fetch_add(&log_lines, 1);
}

static void set(const char *key, const char *name) {
    char *path = tu_path(dir, name);
    cr_assert_eq(es_config_set(cfg, key, path, NULL), ES_OK);
    free(path);
}

static void setup(void) {
    dir = tu_tempdir();
    cfg = tu_config(dir, "events.db");
    set("readmodel.db", "read.db");
    set("saga.db", "saga.db");
    cr_assert_eq(es_config_set(cfg, "sqlite.busy.timeout.ms", "20", NULL), ES_OK);
    es_config_set_log_cb(cfg, count_line, NULL);
    atomic_store(&log_lines, 0);
}

static void teardown(void) {
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(dir);
}

TestSuite(null_err, .init = setup, .fini = teardown, .timeout = 60);

Test(null_err, config_calls_fail_without_an_error_struct) {
    cr_expect_eq(es_config_set(cfg, "no.such.key", "1", NULL), ES_EINVAL);
    cr_expect_eq(es_config_set(cfg, "snapshot.every", "many", NULL), ES_EINVAL);
    cr_expect_eq(es_config_set(NULL, "db", "x", NULL), ES_EINVAL);
    cr_expect_eq(es_config_load_file(cfg, "/nonexistent/eskit.conf", NULL), ES_ENOTFOUND);
    char *bad = tu_path(dir, "bad.conf");
    FILE *f = fopen(bad, "w");
    fputs("not a setting\n", f);
    fclose(f);
    cr_expect_eq(es_config_load_file(cfg, bad, NULL), ES_EINVAL);
    free(bad);
    setenv("ESKIT_NO_SUCH_KEY", "1", 1);
    cr_expect_eq(es_config_load_env(cfg, NULL), ES_EINVAL);
    cr_expect_eq(es_config_load_sources(cfg, NULL), ES_EINVAL);
    unsetenv("ESKIT_NO_SUCH_KEY");
    cr_expect_eq(es_config_add_upcaster(cfg, NULL, NULL), ES_EINVAL);
    es_upcaster_t loop = {ES_UPCASTER_ABI, "loop", "a.v1.X", "a.v1.X", 0, 0, NULL, NULL};
    cr_expect_eq(es_config_add_upcaster(cfg, &loop, NULL), ES_EINVAL);
}

Test(null_err, names_envelopes_and_topics_fail_without_an_error_struct) {
    cr_expect_eq(es_validate_aggregate_type("No Such Type", NULL), ES_EINVAL);
    cr_expect_eq(es_validate_aggregate_id("", NULL), ES_EINVAL);
    es_event_t *ev = NULL;
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff};
    cr_expect_eq(es_envelope_decode(junk, sizeof junk, NULL, &ev, NULL), ES_EDECODE);
    uint8_t *out = NULL;
    size_t len = 0;
    cr_expect_eq(es_envelope_encode(NULL, &out, &len, NULL), ES_EINVAL);
    cr_expect_eq(es_topic_name_check("bad topic", NULL), ES_EINVAL);
    es_topic_spec_t *specs = NULL;
    size_t n = 0;
    es_topic_load_t load = {.aggregate_type = "Bad"};
    cr_expect_lt(es_topics_plan_for(cfg, 1, &load, 1, &specs, &n, NULL), 0);
    cr_expect_lt(es_topics_apply(cfg, NULL, 0, NULL, NULL, NULL), 0, "no brokers configured");
}

Test(null_err, store_and_engine_fail_without_an_error_struct) {
    es_config_t *bad = tu_config("/nonexistent/dir", "events.db");
    es_store_t *store = NULL;
    es_engine_t *engine = NULL;
    cr_expect_lt(es_store_new(bad, &store, NULL), 0);
    cr_expect_lt(es_engine_new(bad, &engine, NULL), 0);
    es_config_destroy(bad);

    cr_assert_eq(es_store_new(cfg, &store, NULL), ES_OK);
    es_new_event_t ev = {"test.v1.Note", (const uint8_t *)"x", 1, NULL, NULL, NULL, 0};
    cr_expect_eq(es_store_append(store, "Bad", "id", ES_EXPECT_ANY, 0, &ev, 1, NULL, NULL),
                 ES_EINVAL);
    cr_expect_eq(es_store_append(store, "test.note", "n", ES_EXPECT_EXACT, 7, &ev, 1, NULL, NULL),
                 ES_ECONFLICT);
    uint64_t version = 0;
    cr_expect_eq(es_store_stream_version(store, "Bad", "id", &version, NULL), ES_EINVAL);
    cr_expect_eq(es_store_read_stream(store, "Bad", "id", 1, NULL, NULL, NULL), ES_EINVAL);
    es_snapshot_t *snap = NULL;
    cr_expect_eq(es_store_get_snapshot(store, "test.note", "none", &snap, NULL), ES_ENOTFOUND);
    cr_expect_eq(es_store_put_snapshot(store, "Bad", "id", NULL, NULL), ES_EINVAL);
    es_store_destroy(store);

    cr_assert_eq(es_engine_new(cfg, &engine, NULL), ES_OK);
    cr_expect_eq(es_engine_register(engine, NULL, NULL, NULL), ES_EINVAL);
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    es_command_t cmd = {
        .aggregate_type = "orders.order", .aggregate_id = "o-1", .message = &confirm.base};
    cr_expect_eq(es_execute(engine, &cmd, NULL, NULL), ES_EUNKNOWN_TYPE);
    cr_expect_eq(es_execute(engine, NULL, NULL, NULL), ES_EINVAL);
    cr_expect_eq(es_execute_batch(NULL, &cmd, 1, NULL, NULL), ES_EINVAL);
    cr_expect_eq(es_execute_all(NULL, &cmd, 1, NULL, NULL), ES_EINVAL);
    cr_assert_eq(demo_register_all(engine, NULL), ES_OK);
    cr_expect_eq(es_execute(engine, &cmd, NULL, NULL), ES_EREJECTED, "never placed");
    es_result_t res[2];
    es_command_t two[2] = {cmd, cmd};
    cr_expect_eq(es_execute_all(engine, two, 2, res, NULL), ES_EREJECTED, "aborted");
    cr_expect_eq(res[1].code, ES_EABORTED);
    es_result_clear(&res[0]);
    es_result_clear(&res[1]);
    ProtobufCMessage *state = NULL;
    cr_expect_eq(es_engine_load_state(engine, "acme.widget", "w-1", &state, NULL, NULL),
                 ES_EUNKNOWN_TYPE);
    cr_expect_eq(es_engine_load_state(engine, "Bad", "w-1", &state, NULL, NULL), ES_EINVAL);
    es_engine_destroy(engine);
    cr_assert_eq(es_engine_open(cfg, ES_OPEN_READONLY, &engine, NULL), ES_OK);
    cr_assert_eq(demo_register_all(engine, NULL), ES_OK);
    cr_expect_eq(es_execute(engine, &cmd, NULL, NULL), ES_ESTATE, "read-only");
    es_result_t ro[1];
    cr_expect_eq(es_execute_all(engine, &cmd, 1, ro, NULL), ES_ESTATE, "read-only");
    es_engine_destroy(engine);
}

Test(null_err, types_calls_fail_without_an_error_struct) {
    es_types_module_t *mod = NULL;
    cr_expect_eq(es_types_load(cfg, "no_such_types", &mod, NULL), ES_ENOTFOUND);
    cr_expect_eq(es_types_load(cfg, "", &mod, NULL), ES_EINVAL);
    cr_expect_eq(es_types_check(NULL, "test", NULL), ES_EINVAL);
    es_types_def future = {.abi_version = ES_TYPES_ABI + 1, .name = "future"};
    cr_expect_eq(es_types_check(&future, "test", NULL), ES_EINVAL);
}

Test(null_err, schema_calls_fail_without_an_error_struct) {
    es_compat mode;
    es_schema_t *s = NULL;
    es_schema_report_t rep = {0};
    char *out = NULL;
    cr_expect_eq(es_compat_parse("sideways", &mode, NULL), ES_EINVAL);
    cr_expect_eq(es_schema_of(NULL, &s, NULL), ES_EINVAL);
    cr_expect_eq(es_schema_parse((const uint8_t *)"\xff", 1, &s, NULL), ES_EDECODE);
    cr_expect_eq(es_schema_format(NULL, 0, &out, NULL), ES_EINVAL);
    cr_expect_eq(es_schema_check(NULL, 1, NULL, ES_COMPAT_FULL, &rep, NULL), ES_EINVAL);
    cr_expect_eq(es_schema_diff(NULL, NULL, &rep, NULL), ES_EINVAL);
}

Test(null_err, projector_calls_fail_without_an_error_struct) {
    es_projector_module_t *mod = NULL;
    cr_expect_eq(es_projector_load(cfg, "no_such_projector", &mod, NULL), ES_ENOTFOUND);
    cr_expect_eq(es_projector_check(NULL, "test", NULL), ES_EINVAL);
    es_runner_t *r = NULL;
    cr_expect_eq(es_runner_new(cfg, NULL, &r, NULL), ES_EINVAL);
    es_lag_row_t *rows = NULL;
    size_t n = 0;
    cr_expect_lt(es_lag(cfg, &rows, &n, NULL), 0, "no read model yet");
    es_dlq_entry_t *entries = NULL;
    cr_expect_lt(es_dlq_list(cfg, NULL, true, &entries, &n, NULL), 0);
    es_dlq_entry_t *one = NULL;
    cr_expect_lt(es_dlq_get(cfg, 1, &one, NULL), 0);
    size_t applied = 0, failed = 0;
    cr_expect_lt(es_dlq_redrive(cfg, &notes_v1, NULL, 0, &applied, &failed, NULL), 0);
    es_replay_result_t res = {0};
    cr_expect_eq(es_replay(cfg, NULL, NULL, &res, NULL), ES_EINVAL);
}

Test(null_err, saga_queries_and_checks_fail_without_an_error_struct) {
    es_saga_def def = {0};
    cr_expect_eq(es_saga_check(&def, NULL), ES_EINVAL);
    es_saga_t *c = NULL;
    cr_expect_eq(es_saga_new(cfg, &def, NULL, &c, NULL), ES_EINVAL);
    cr_expect_eq(es_saga_poll(NULL, 0, NULL, NULL), ES_EINVAL);
    cr_expect_eq(es_saga_redeliver(NULL, NULL, NULL), ES_EINVAL);
    es_saga_info_t *infos = NULL;
    size_t n = 0;
    cr_expect_lt(es_saga_list(cfg, NULL, NULL, &infos, &n, NULL), 0, "no saga database");
    cr_expect_lt(es_saga_find(cfg, "orders.fulfilment", "x", &infos, &n, NULL), 0);
    es_saga_record_t *recs = NULL;
    cr_expect_lt(es_saga_history(cfg, "Bad Saga", "x", &recs, &n, NULL), 0);
}

Test(null_err, test_kit_calls_fail_without_an_error_struct) {
    es_test_aggregate_t *t = NULL;
    es_aggregate_def bad = demo_order_def;
    bad.abi_version = 0;
    cr_expect_eq(es_test_aggregate_new(&bad, NULL, &t, NULL), ES_EINVAL);
    cr_assert_eq(es_test_aggregate_new(&demo_order_def, NULL, &t, NULL), ES_OK);
    Inventory__V1__StockAdded other = INVENTORY__V1__STOCK_ADDED__INIT;
    cr_expect_eq(es_test_given(t, &other.base, NULL), ES_EUNKNOWN_TYPE);
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    cr_expect_eq(es_test_when(t, &confirm.base, NULL), ES_EUNKNOWN_TYPE);
    es_test_aggregate_destroy(t);
    es_test_saga_t *s = NULL;
    es_saga_def def = {0};
    cr_expect_eq(es_test_saga_new(&def, &s, NULL), ES_EINVAL);
    cr_assert_eq(es_test_saga_new(&demo_fulfilment_def, &s, NULL), ES_OK);
    cr_expect_eq(es_test_saga_accepted(s, "nope", NULL), ES_ENOTFOUND);
    cr_expect_eq(es_test_saga_start(s, "o-1", &confirm.base, NULL), ES_EINVAL);
    es_test_saga_destroy(s);
}

/* Another connection holds the event store's write lock, so every delivery of the saga's
 * commands fails as busy: the coordinator's run loop logs and retries with err == NULL. */
typedef struct saga_run {
    es_saga_t *c;
    es_err rc;
} saga_run;

static void *run_saga(void *opaque) {
    saga_run *s = opaque;
    s->rc = es_saga_run(s->c, NULL);
    return NULL;
}

Test(null_err, the_saga_run_loop_logs_and_retries_failures_without_an_error_struct) {
    es_engine_t *engine = NULL;
    cr_assert_eq(es_engine_new(cfg, &engine, NULL), ES_OK);
    cr_assert_eq(demo_register_all(engine, NULL), ES_OK);
    es_saga_t *c = NULL;
    cr_assert_eq(es_saga_new(cfg, DEMO_FULFILMENT_DEF(true), engine, &c, NULL), ES_OK);
    Orders__V1__LineItem item = ORDERS__V1__LINE_ITEM__INIT;
    item.sku = "sku-mug";
    item.quantity = 1;
    item.unit_price_cents = 100;
    Orders__V1__LineItem *items[] = {&item};
    Orders__V1__PlaceOrder place = ORDERS__V1__PLACE_ORDER__INIT;
    place.customer_id = "alice";
    place.n_items = 1;
    place.items = items;
    place.currency = "USD";
    es_command_t cmd = {
        .aggregate_type = "orders.order", .aggregate_id = "o-1", .message = &place.base};
    cr_assert_eq(es_execute(engine, &cmd, NULL, NULL), ES_OK);

    sqlite3 *lock = NULL;
    char *db = tu_path(dir, "events.db");
    cr_assert_eq(sqlite3_open(db, &lock), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(lock, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    saga_run s = {c, ES_OK};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, run_saga, &s), 0);
    for (int i = 0; i < 1000 && atomic_load(&log_lines) < 2; i++)
        usleep(10000);
    es_saga_stop(c);
    pthread_join(t, NULL);
    sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(lock);
    free(db);
    cr_expect_geq(atomic_load(&log_lines), 2, "the busy store should have been logged");
    cr_expect_eq(s.rc, ES_OK, "a stopped run loop returns ES_OK");
    es_saga_destroy(c);
    es_engine_destroy(engine);
}

Test(null_err, catch_up_fails_without_an_error_struct) {
    cr_expect_eq(es_runner_catch_up(NULL, 10, NULL), ES_EINVAL);
    es_store_t *store = NULL;
    cr_assert_eq(es_store_new(cfg, &store, NULL), ES_OK);
    es_new_event_t ev = {"test.v1.Note", (const uint8_t *)"x", 1, NULL, NULL, NULL, 0};
    cr_assert_eq(es_store_append(store, "test.note", "n", ES_EXPECT_ANY, 0, &ev, 1, NULL, NULL),
                 ES_OK);
    es_runner_t *r = NULL;
    cr_assert_eq(es_runner_new(cfg, &notes_v1, &r, NULL), ES_OK);
    cr_expect_eq(es_runner_catch_up(r, -1, NULL), ES_EINVAL);
    cr_expect_eq(es_runner_catch_up(r, 0, NULL), ES_ETIMEOUT, "behind, and no time to poll");
    sqlite3 *lock = NULL; /* every batch finds the read model busy: retried, then a timeout */
    char *rm = tu_path(dir, "read.db");
    cr_assert_eq(sqlite3_open(rm, &lock), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(lock, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    cr_expect_eq(es_runner_catch_up(r, 200, NULL), ES_ETIMEOUT);
    sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(lock);
    free(rm);
    es_runner_stop(r);
    cr_expect_eq(es_runner_catch_up(r, 1000, NULL), ES_ESTATE, "stopped");
    es_runner_destroy(r);
    es_store_destroy(store);
}

/* The runner's run loop with a transient failure on every event. */
typedef struct runner_run {
    es_runner_t *r;
    es_err rc;
} runner_run;

static void *run_runner(void *opaque) {
    runner_run *s = opaque;
    s->rc = es_runner_run(s->r, NULL);
    return NULL;
}

Test(null_err, the_runner_run_loop_logs_and_retries_failures_without_an_error_struct) {
    es_store_t *store = NULL;
    cr_assert_eq(es_store_new(cfg, &store, NULL), ES_OK);
    es_new_event_t ev = {"test.v1.Note", (const uint8_t *)"x", 1, NULL, NULL, NULL, 0};
    cr_assert_eq(es_store_append(store, "test.note", "n", ES_EXPECT_ANY, 0, &ev, 1, NULL, NULL),
                 ES_OK);
    es_runner_t *r = NULL;
    cr_assert_eq(es_runner_new(cfg, &notes_v1, &r, NULL), ES_OK);
    sqlite3 *lock = NULL;
    char *rm = tu_path(dir, "read.db");
    cr_assert_eq(sqlite3_open(rm, &lock), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(lock, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    runner_run s = {r, ES_OK};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, run_runner, &s), 0);
    for (int i = 0; i < 1000 && atomic_load(&log_lines) < 2; i++)
        usleep(10000);
    es_runner_stop(r);
    pthread_join(t, NULL);
    sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(lock);
    free(rm);
    cr_expect_geq(atomic_load(&log_lines), 2, "the busy read model should have been logged");
    es_runner_destroy(r);
    es_store_destroy(store);
}
