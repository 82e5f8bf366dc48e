/*
 * The log-order rule on every read path (docs/design.md, "The log-order rule"): one zombie
 * writer's records for inventory.item/sku-1, in one partition in this offset order: v1, v2, v2
 * again (the same envelope twice), v1 with another event id (a stale fork), v4 (v3 is lost: a
 * gap), v5. The readers (a projector runner, es_replay, esctl events) skip the two stale
 * records and apply v4 with a warning naming version 3; the restoring writer (the command
 * processor) skips them too but stops at the gap. On the embedded backend the stream's links
 * cannot hold either, and a broken link is ES_EIO naming the file.
 */
#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain.h"
#include "kafkautil.h"
#include "testutil.h"

#define TYPE "inventory.item"
#define TOPIC "inventory.item.events"
#define ID "sku-1"
#define PARTS 3

static char *dir;
static es_config_t *cfg;
static rd_kafka_t *mock_rk, *producer;
static rd_kafka_mock_cluster_t *mock;

/* Every library log line, for the warnings the tests look for (the processor logs on its own
 * thread). */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char logged[1 << 15];
static size_t logged_len;

static void capture_log(int level, const char *message, void *opaque) {
    (void)level, (void)opaque;
    pthread_mutex_lock(&log_lock);
    int n = snprintf(logged + logged_len, sizeof logged - logged_len, "%s\n", message);
    if (n > 0)
        logged_len += (size_t)n < sizeof logged - logged_len ? (size_t)n : 0;
    pthread_mutex_unlock(&log_lock);
}

static int was_logged(const char *text) {
    pthread_mutex_lock(&log_lock);
    int found = strstr(logged, text) != NULL;
    pthread_mutex_unlock(&log_lock);
    return found;
}

/* Delivery reports of the record set: where each record went. */
static int delivery_failures, n_delivered;
static int32_t delivered_to[8];

static void note_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk, (void)opaque;
    if (m->err)
        delivery_failures++;
    else if (n_delivered < 8)
        delivered_to[n_delivered++] = m->partition;
}

static void set(const char *key, const char *value) {
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, key, value, &err), ES_OK, "%s", err.message);
}

static void set_path(const char *key, const char *name) {
    char *path = tu_path(dir, name);
    set(key, path);
    free(path);
}

static void reset_log(void) {
    pthread_mutex_lock(&log_lock);
    logged[0] = '\0';
    logged_len = 0;
    pthread_mutex_unlock(&log_lock);
}

static void setup_kafka(void) {
    unsetenv("ESKIT_DB");
    unsetenv("ESKIT_CONFIG");
    unsetenv("ESKIT_BROKERS");
    unsetenv("ESKIT_BACKEND");
    rd_kafka_conf_t *c = tu_kafka_conf();
    mock_rk = tu_kafka_new(RD_KAFKA_PRODUCER, c);
    mock = tu_mock_demo(mock_rk, PARTS); /* the processor registers all three types */
    const char *bootstraps = rd_kafka_mock_cluster_bootstraps(mock);

    /* The zombie writer: partitioned like the library's producers, so its records land on the
     * partition the aggregate's commands go to. */
    c = tu_kafka_producer_conf(bootstraps);
    rd_kafka_conf_set_dr_msg_cb(c, note_delivery);
    producer = tu_kafka_new(RD_KAFKA_PRODUCER, c);
    delivery_failures = n_delivered = 0;

    reset_log();
    dir = tu_tempdir();
    cfg = tu_config(dir, "unused.db");
    es_config_set_log_cb(cfg, capture_log, NULL);
    set("brokers", bootstraps);
    set("service.name", "svc");
    set_path("readmodel.db", "read.db");
    set_path("state.db", "state.db");
    set("execute.timeout.ms", "20000");
    set("kafka.reconnect.backoff.max.ms", "200");
    /* Longer than the mock's delay of a join (see testutil.h). */
    set("kafka.session.timeout.ms", TU_MOCK_SESSION_TIMEOUT_MS);
    set("kafka.heartbeat.interval.ms", TU_MOCK_HEARTBEAT_INTERVAL_MS);
}

static void teardown_kafka(void) {
    rd_kafka_destroy(producer);
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_rk);
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(dir);
}

TestSuite(read_paths_kafka, .init = setup_kafka, .fini = teardown_kafka, .timeout = 60);

static int64_t now_ms(void) {
    return es_now_us() / 1000;
}

/* One StockAdded of sku-1 in the wire format: its envelope, and the event id it carries. */
typedef struct envelope {
    uint8_t *bytes;
    size_t len;
    char event_id[ES_UUID_STR_LEN + 1];
    uint64_t version;
} envelope;

static envelope stock_added(uint64_t version, uint32_t quantity) {
    Inventory__V1__StockAdded added = INVENTORY__V1__STOCK_ADDED__INIT;
    added.quantity = quantity;
    uint8_t payload[16];
    size_t plen = inventory__v1__stock_added__pack(&added, payload);
    es_event_t ev = {.aggregate_type = TYPE,
                     .aggregate_id = ID,
                     .version = version,
                     .event_type = "inventory.v1.StockAdded",
                     .payload = payload,
                     .payload_len = plen,
                     .occurred_at_us = es_now_us(),
                     .correlation_id = "zombie"};
    es_uuid7(ev.event_id);
    envelope e = {.version = version};
    es_error_t err = {0};
    cr_assert_eq(es_envelope_encode(&ev, &e.bytes, &e.len, &err), ES_OK, "%s", err.message);
    snprintf(e.event_id, sizeof e.event_id, "%s", ev.event_id);
    return e;
}

static void produce(const envelope *e) {
    char ver[24];
    snprintf(ver, sizeof ver, "%llu", (unsigned long long)e->version);
    rd_kafka_headers_t *h = rd_kafka_headers_new(3);
    rd_kafka_header_add(h, "es-event-type", -1, "inventory.v1.StockAdded", -1);
    rd_kafka_header_add(h, "es-version", -1, ver, -1);
    rd_kafka_header_add(h, "es-event-id", -1, e->event_id, -1);
    cr_assert_eq(rd_kafka_producev(
                     producer, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_KEY(ID, strlen(ID)),
                     RD_KAFKA_V_VALUE(e->bytes, e->len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                     RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END),
                 0);
}

/* The record set, produced as a zombie writer would, into the test's fresh topic; without_gap
 * stops before v4 (the duplicate and the fork only). StockAdded quantities: v1 1, v2 2, the
 * fork 100, v4 4, v5 5. Returns the partition, and the first v1's event id in first_v1. */
static int32_t produce_record_set(int without_gap, char *first_v1) {
    envelope v1 = stock_added(1, 1), v2 = stock_added(2, 2), fork = stock_added(1, 100);
    envelope v4 = stock_added(4, 4), v5 = stock_added(5, 5);
    const envelope *order[] = {&v1, &v2, &v2, &fork, &v4, &v5};
    size_t n = without_gap ? 4 : 6;
    for (size_t i = 0; i < n; i++) {
        produce(order[i]);
        /* One at a time: the offsets keep this order whatever the producer batches. */
        cr_assert_eq(rd_kafka_flush(producer, 10000), 0);
    }
    cr_assert_eq(delivery_failures, 0);
    cr_assert_eq(n_delivered, (int)n);
    for (size_t i = 1; i < n; i++)
        cr_assert_eq(delivered_to[i], delivered_to[0], "one aggregate, one partition");
    if (first_v1)
        snprintf(first_v1, ES_UUID_STR_LEN + 1, "%s", v1.event_id);
    free(v1.bytes), free(v2.bytes), free(fork.bytes), free(v4.bytes), free(v5.bytes);
    return delivered_to[0];
}

/* "stock": a projector of inventory.item events, one row per event applied. */
static es_err stock_migrate(sqlite3 *db, int from, es_error_t *err) {
    (void)from;
    if (sqlite3_exec(db,
                     "CREATE TABLE stock(id TEXT, version INT, quantity INT, event_id TEXT, "
                     "PRIMARY KEY(id, version))",
                     NULL, NULL, NULL) != SQLITE_OK)
        return es_fail(err, ES_EIO, "create stock: %s", sqlite3_errmsg(db));
    return ES_OK;
}

static es_err stock_apply(es_projector_ctx_t *ctx, const es_event_t *ev, es_error_t *err) {
    Inventory__V1__StockAdded *added =
        inventory__v1__stock_added__unpack(NULL, ev->payload_len, ev->payload);
    if (!added)
        return es_fail(err, ES_EDECODE, "%s/%s version %llu: not a StockAdded", ev->aggregate_type,
                       ev->aggregate_id, (unsigned long long)ev->version);
    uint32_t quantity = added->quantity;
    inventory__v1__stock_added__free_unpacked(added, NULL);
    sqlite3_stmt *s = es_ctx_stmt(ctx, "INSERT INTO stock VALUES (?1, ?2, ?3, ?4)", err);
    if (!s)
        return err->code;
    sqlite3_bind_text(s, 1, ev->aggregate_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)ev->version);
    sqlite3_bind_int64(s, 3, quantity);
    sqlite3_bind_text(s, 4, ev->event_id, -1, SQLITE_STATIC);
    return es_ctx_exec(ctx, s, err);
}

static const char *const stock_topics[] = {TOPIC, NULL};
static const es_projector_def stock = {.abi_version = ES_PROJECTOR_ABI,
                                       .name = "stock",
                                       .schema_version = 1,
                                       .topics = stock_topics,
                                       .migrate = stock_migrate,
                                       .apply = stock_apply};

static long long query_int(const char *sql) {
    char *path = tu_path(dir, "read.db");
    long long v = tu_query_int(path, sql);
    free(path);
    return v;
}

/* The read model holds v1, v2, v4, v5 of the first copies: quantities 1, 2, 4, 5, no fork. */
static void assert_read_model_took_1_2_4_5(const char *first_v1) {
    cr_assert_eq(query_int("SELECT count(*) FROM stock"), 4);
    cr_assert_eq(query_int("SELECT count(*) FROM stock WHERE id = 'sku-1' AND version = quantity "
                           "AND version IN (1, 2, 4, 5)"),
                 4, "one row each for versions 1, 2, 4 and 5, with their own quantities");
    cr_assert_eq(query_int("SELECT sum(quantity) FROM stock"), 12, "the fork (100) is skipped");
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM stock WHERE version = 1 AND event_id = '%s'",
             first_v1);
    cr_assert_eq(query_int(sql), 1, "the first copy of version 1 in the partition wins");
}

/* The warning a reader logs for the gap (logorder.c), at the v4 record: offset 4. */
static void assert_gap_warned(int32_t partition) {
    char want[200];
    snprintf(want, sizeof want,
             TYPE "/" ID ": version 4 follows version 2 (" TOPIC
                  " partition %d offset 4): versions 3..3 are missing",
             (int)partition);
    cr_assert(was_logged(want), "no '%s' in the log:\n%s", want, logged);
    cr_assert(was_logged("applied anyway"), "%s", logged);
}

Test(read_paths_kafka, the_runner_applies_1_2_4_5_counts_two_stale_one_gap_and_warns) {
    char first_v1[ES_UUID_STR_LEN + 1];
    int32_t p = produce_record_set(0, first_v1);
    es_runner_t *r = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_runner_new(cfg, &stock, &r, &err), ES_OK, "%s", err.message);
    es_runner_stats_t st = {0};
    int64_t deadline = now_ms() + 15000;
    while (st.applied + st.stale < 6) {
        cr_assert(now_ms() < deadline, "stuck at %llu applied, %llu stale",
                  (unsigned long long)st.applied, (unsigned long long)st.stale);
        cr_assert_eq(es_runner_poll(r, 100, NULL, &err), ES_OK, "%s", err.message);
        es_runner_stats(r, &st);
    }
    cr_assert_eq(st.applied, 4);
    cr_assert_eq(st.stale, 2);
    cr_assert_eq(st.gaps, 1);
    cr_assert_eq(st.parked, 0);
    es_runner_destroy(r);
    assert_read_model_took_1_2_4_5(first_v1);
    cr_assert_eq(query_int("SELECT version FROM es_versions WHERE aggregate_id = 'sku-1'"), 5);
    assert_gap_warned(p);
}

/* es_replay hands out the runner that rebuilds the model: its counters are the replay's. */
static es_runner_t *replaying;
static es_runner_stats_t replay_stats;

static void keep_replay_runner(es_runner_t *runner, void *opaque) {
    (void)opaque;
    if (!runner && replaying)
        es_runner_stats(replaying, &replay_stats);
    replaying = runner;
}

Test(read_paths_kafka, a_replay_rebuilds_1_2_4_5_with_the_same_counts_and_warning) {
    char first_v1[ES_UUID_STR_LEN + 1];
    int32_t p = produce_record_set(0, first_v1);
    es_replay_hooks_t hooks = {.runner = keep_replay_runner};
    es_replay_result_t res = {0};
    es_error_t err = {0};
    replaying = NULL;
    replay_stats = (es_runner_stats_t){0};
    cr_assert_eq(es_replay(cfg, &stock, &hooks, &res, &err), ES_OK, "%s", err.message);
    cr_assert_eq(res.events, 6, "records consumed: %llu", (unsigned long long)res.events);
    cr_assert_eq(res.parked, 0);
    cr_assert_eq(replay_stats.applied, 4);
    cr_assert_eq(replay_stats.stale, 2);
    cr_assert_eq(replay_stats.gaps, 1);
    assert_read_model_took_1_2_4_5(first_v1);
    assert_gap_warned(p);
}

Test(read_paths_kafka, esctl_events_prints_1_2_4_5_warns_of_the_gap_and_exits_0) {
    char first_v1[ES_UUID_STR_LEN + 1];
    produce_record_set(0, first_v1);
    char brokers[1100];
    snprintf(brokers, sizeof brokers, "ESKIT_BROKERS=%s", rd_kafka_mock_cluster_bootstraps(mock));
    /* The payloads decode through the demo's types module, so the fork's would show. */
    const char *env[] = {brokers, "ESKIT_TYPES_MODULES=order_saga_types", NULL};
    tu_result r = TU_ESCTL_ENV(env, "-v", "events", TYPE, ID, "--json");
    cr_assert_eq(r.status, 0, "events: %s", r.err);
    cr_assert_eq(tu_count_lines(r.out), 4, "%s", r.out);
    /* Stream reads sort by version, then partition and offset: the first v1 is the one. */
    char want[200];
    snprintf(want, sizeof want,
             "{\"event_id\": \"%s\", \"aggregate_type\": \"" TYPE "\", \"aggregate_id\": \"" ID
             "\", \"version\": 1,",
             first_v1);
    const char *at = strstr(r.out, want);
    cr_assert_eq(at, r.out, "the first line is the first v1: %s", r.out);
    static const char *const versions[] = {"\"version\": 2,", "\"version\": 4,", "\"version\": 5,"};
    for (size_t i = 0; i < 3; i++) {
        const char *next = strstr(at, versions[i]);
        cr_assert(next, "no %s after the one before: %s", versions[i], r.out);
        at = next;
    }
    cr_assert(strstr(r.out, "\"payload\": {\"quantity\": "), "payloads decoded: %s", r.out);
    cr_assert_null(strstr(r.out, "\"quantity\": 100"), "the fork is skipped: %s", r.out);
    cr_assert(strstr(r.err, TYPE "/" ID ": version 4 follows version 2"), "%s", r.err);
    cr_assert(strstr(r.err, "versions 3..3 are missing from the log"), "%s", r.err);
    tu_result_free(&r);
}

static es_engine_t *new_engine(void) {
    es_engine_t *e = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &e, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(e, &err), ES_OK, "%s", err.message);
    return e;
}

static es_command_t restock(Inventory__V1__Restock *msg, uint32_t quantity) {
    inventory__v1__restock__init(msg);
    msg->quantity = quantity;
    return (es_command_t){.aggregate_type = TYPE, .aggregate_id = ID, .message = &msg->base};
}

static int64_t records_in(int32_t partition) {
    int64_t lo = 0, hi = 0;
    cr_assert_eq(rd_kafka_query_watermark_offsets(producer, TOPIC, partition, &lo, &hi, 10000), 0);
    return hi - lo;
}

/* The restoring writer's role: the stale records are skipped, the gap stops the partition. */
Test(read_paths_kafka, restore_skips_the_stale_records_and_stops_at_the_gap_executing_nothing) {
    int32_t p = produce_record_set(0, NULL);
    set("execute.timeout.ms", "3000"); /* the command below waits for an answer that never comes */
    tu_proc *pr = tu_proc_start(cfg, new_engine());
    es_engine_t *caller = new_engine();
    Inventory__V1__Restock msg;
    es_command_t c = restock(&msg, 10);
    es_result_t res;
    es_error_t err = {0};
    cr_assert_neq(es_execute(caller, &c, &res, &err), ES_OK, "a command on the partition runs");
    es_result_clear(&res);
    es_engine_destroy(caller);
    tu_proc_join(pr); /* it stops by itself */
    cr_assert_eq(pr->rc, ES_EIO, "%s: %s", es_strerror(pr->rc), pr->err.message);
    char want[200];
    snprintf(want, sizeof want,
             TYPE "/" ID ": version 4 follows version 2 (" TOPIC
                  " partition %d offset 4): versions 3..3 are missing",
             (int)p);
    cr_assert(strstr(pr->err.message, want), "%s", pr->err.message);
    es_processor_stats_t st;
    es_processor_stats(pr->p, &st);
    /* Counted by each restore that stopped at the gap: the one on assignment, and the retry
     * before the partition's first command, which stops the processor. */
    cr_assert_geq(st.gaps, 1);
    cr_assert_eq(st.stale, 2 * st.gaps, "%llu stale, %llu gaps", (unsigned long long)st.stale,
                 (unsigned long long)st.gaps);
    cr_assert_eq(st.events_skipped, st.stale, "stale records are skipped records too");
    cr_assert_eq(st.commands, 0);
    tu_proc_free(pr);
    cr_assert_eq(records_in(p), 6, "no event was appended to the partition");
}

/* Without the gap restore imports v1 and v2 (quantities 1 and 2), and the engine decides on
 * that history: on hand is 3, and the next event is version 3. */
Test(read_paths_kafka, restore_without_the_gap_imports_1_2_and_the_next_command_gets_version_3) {
    int32_t p = produce_record_set(1, NULL);
    tu_proc *pr = tu_proc_start(cfg, new_engine());
    es_engine_t *caller = new_engine();
    Inventory__V1__Restock msg;
    es_command_t c = restock(&msg, UINT32_MAX);
    es_result_t res;
    es_error_t err = {0};
    cr_assert_eq(es_execute(caller, &c, &res, &err), ES_EREJECTED, "%s", err.message);
    cr_assert(strstr(res.reason, "would overflow the 3 units on hand"), "%s", res.reason);
    cr_assert_eq(res.version, 2);
    es_result_clear(&res);
    c = restock(&msg, 10);
    cr_assert_eq(es_execute(caller, &c, &res, &err), ES_OK, "%s", err.message);
    cr_assert_eq(res.outcome, ES_OUTCOME_ACCEPTED);
    cr_assert_eq(res.first_version, 3);
    cr_assert_eq(res.version, 3);
    cr_assert_eq(res.n_events, 1);
    cr_assert_eq(res.events[0]->version, 3);
    cr_assert_eq(res.events[0]->partition, p);
    es_result_clear(&res);
    es_engine_destroy(caller);
    es_processor_stop(pr->p);
    tu_proc_join(pr);
    cr_assert_eq(pr->rc, ES_OK, "%s", pr->err.message);
    es_processor_stats_t st;
    es_processor_stats(pr->p, &st);
    cr_assert_eq(st.stale, 2);
    cr_assert_eq(st.gaps, 0);
    cr_assert_eq(st.events_imported, 2);
    cr_assert_eq(st.events_skipped, 2);
    tu_proc_free(pr);
    cr_assert_eq(records_in(p), 5, "the four records and version 3");
}

/* The embedded backend: the stream is a chain of rows (es_events.prev) from its head
 * (es_heads), and engine load and esctl events follow it (log_sqlite.c:stream_positions). */
static void setup_embedded(void) {
    unsetenv("ESKIT_DB");
    unsetenv("ESKIT_CONFIG");
    unsetenv("ESKIT_BROKERS");
    unsetenv("ESKIT_BACKEND");
    dir = tu_tempdir();
    cfg = tu_config(dir, "events.db");
    /* No snapshots: a load folds the stream's events, so it follows every link. */
    set("snapshot.every", "0");
}

static void teardown_embedded(void) {
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(dir);
}

TestSuite(read_paths_embedded, .init = setup_embedded, .fini = teardown_embedded, .timeout = 60);

/* Restocks sku-1 with quantity through a fresh engine (nothing cached): es_execute's code. */
static es_err restock_once(uint32_t quantity, es_result_t *res, es_error_t *err) {
    es_engine_t *e = new_engine();
    Inventory__V1__Restock msg;
    es_command_t c = restock(&msg, quantity);
    es_err rc = es_execute(e, &c, res, err);
    es_engine_destroy(e);
    return rc;
}

static void restocked(uint32_t quantity, uint64_t version) {
    es_result_t res;
    es_error_t err = {0};
    cr_assert_eq(restock_once(quantity, &res, &err), ES_OK, "%s", err.message);
    cr_assert_eq(res.version, version);
    es_result_clear(&res);
}

static void exec_sql(const char *sql, int expect) {
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(es_config_get(cfg, "db"), &db), SQLITE_OK);
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    cr_assert_eq(rc, expect, "%s: %s", sql, sqlite3_errmsg(db));
    sqlite3_close(db);
}

static int versions_printed(const char *out, const char *want) {
    char got[64] = "";
    size_t len = 0;
    for (const char *v = strstr(out, "\"version\": "); v; v = strstr(v + 1, "\"version\": "))
        len += (size_t)snprintf(got + len, sizeof got - len, "%s%lld", len ? "," : "",
                                strtoll(v + 11, NULL, 10));
    return strcmp(got, want) == 0;
}

Test(read_paths_embedded, a_duplicate_row_outside_the_chain_is_not_read_as_a_version) {
    restocked(1, 1);
    restocked(2, 2);
    /* The copy of version 2 goes in (es_events has no UNIQUE(stream, version)) but nothing
     * links to it: the chain still runs 2 -> 1. */
    exec_sql("INSERT INTO es_events(stream, version, prev, type_id, envelope) SELECT stream, "
             "version, prev, type_id, envelope FROM es_events WHERE version = 2",
             SQLITE_OK);
    tu_result r = TU_ESCTL("--db", es_config_get(cfg, "db"), "events", TYPE, ID, "--json");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(versions_printed(r.out, "1,2"), "%s", r.out);
    tu_result_free(&r);
    es_result_t res;
    es_error_t err = {0};
    cr_assert_eq(restock_once(UINT32_MAX, &res, &err), ES_EREJECTED, "%s", err.message);
    cr_assert(strstr(res.reason, "would overflow the 3 units on hand"), "loaded 1 + 2: %s",
              res.reason);
    es_result_clear(&res);
    restocked(10, 3);
}

Test(read_paths_embedded, a_deleted_event_row_breaks_the_chain_for_engine_load_and_esctl) {
    restocked(1, 1);
    restocked(2, 2);
    restocked(3, 3);
    exec_sql("DELETE FROM es_events WHERE version = 2", SQLITE_OK);
    const char *db = es_config_get(cfg, "db");
    es_result_t res;
    es_error_t err = {0};
    es_err rc = restock_once(10, &res, &err);
    cr_assert_eq(rc, ES_EIO, "%s: %s", es_strerror(rc), err.message);
    es_result_clear(&res);
    cr_assert(strstr(err.message, "stream link broken at position "), "%s", err.message);
    cr_assert(strstr(err.message, "(expected version 2)"), "%s", err.message);
    char want[4200];
    snprintf(want, sizeof want, "the file %s was modified outside eskit", db);
    cr_assert(strstr(err.message, want), "%s", err.message);

    tu_result r = TU_ESCTL("--db", db, "events", TYPE, ID);
    cr_assert_eq(r.status, 1, "%s%s", r.out, r.err);
    cr_assert_eq(tu_count_lines(r.err), 1, "%s", r.err);
    cr_assert(strstr(r.err, want), "%s", r.err);
    tu_result_free(&r);
}
