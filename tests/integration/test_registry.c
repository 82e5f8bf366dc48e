/*
 * Confluent Schema Registry (docs/registry.md) against the registry test double
 * (tests/support/registry_double.js, run with node on a loopback port by every test): what the
 * command processor registers at start and under which subjects, the compatibility call before
 * each registration, a start refused with the URL and subject named when the registry refuses,
 * is down, slow or answers garbage, with nothing produced; events framed on the mock cluster
 * and read back by every reader beside unframed ones; and the framing checked against an
 * independent implementation, @kafkajs/confluent-schema-registry (tests/interop), both ways.
 */
#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "domain.h"
#include "fulfilment.h"
#include "eskit/v1/envelope.pb-c.h"
#include "order_summary.h"
#include "framing.h"
#include "internal.h"
#include "kafkautil.h"
#include "registry.h"
#include "registry_proto.h"
#include "testutil.h"

#define PARTS 2
#define DOUBLE ESKIT_SOURCE_DIR "/tests/support/registry_double.js"
#define INTEROP ESKIT_SOURCE_DIR "/tests/interop"

static char *dir, *log_path;
static char url[64];
static pid_t double_pid;
static es_config_t *cfg;
static rd_kafka_t *mock_rk;
static rd_kafka_mock_cluster_t *mock;

static const char *const agg_types[] = {"orders.order", "payments.payment", "inventory.item"};

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set(const char *key, const char *value) {
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, key, value, &err), ES_OK, "%s", err.message);
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    fclose(f);
    if (len)
        *len = n;
    return buf;
}

/* Starts the double in mode (slow_ms for "slow") and waits for its port (10 s at most). */
static void start_double(const char *mode, const char *slow_ms) {
    char *port_file = tu_path(dir, "double.port");
    double_pid = fork();
    cr_assert_neq(double_pid, -1);
    if (double_pid == 0) {
        execlp("node", "node", DOUBLE, "--port-file", port_file, "--log", log_path, "--mode", mode,
               "--slow-ms", slow_ms, (char *)NULL);
        _exit(127);
    }
    long long deadline = now_ms() + 10000;
    char *port = NULL;
    while (!(port = slurp(port_file, NULL))) {
        int status;
        cr_assert_eq(waitpid(double_pid, &status, WNOHANG), 0,
                     "the registry double (node %s) ended: is node installed?", DOUBLE);
        cr_assert_lt(now_ms(), deadline, "the registry double did not listen within 10 s");
        usleep(20000);
    }
    snprintf(url, sizeof url, "http://127.0.0.1:%d", atoi(port));
    free(port);
    free(port_file);
}

static void stop_double(void) {
    if (double_pid > 0) {
        kill(double_pid, SIGTERM);
        waitpid(double_pid, NULL, 0);
    }
    double_pid = 0;
}

static void setup(void) {
    char errstr[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(c, tu_kafka_quiet);
    mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof errstr);
    cr_assert(mock_rk, "%s", errstr);
    mock = tu_mock_demo(mock_rk, PARTS);
    dir = tu_tempdir();
    log_path = tu_path(dir, "requests.log");
    cfg = tu_config(dir, "unused.db");
    char *state = tu_path(dir, "state.db");
    set("brokers", rd_kafka_mock_cluster_bootstraps(mock));
    set("service.name", "svc");
    set("state.db", state);
    set("execute.timeout.ms", "20000");
    set("kafka.reconnect.backoff.max.ms", "200");
    set("kafka.session.timeout.ms", TU_MOCK_SESSION_TIMEOUT_MS);
    set("kafka.heartbeat.interval.ms", TU_MOCK_HEARTBEAT_INTERVAL_MS);
    free(state);
}

static void teardown(void) {
    stop_double();
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_rk);
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(dir);
    free(log_path);
}

TestSuite(registry, .init = setup, .fini = teardown, .timeout = 90);

static es_engine_t *new_engine(void) {
    es_engine_t *e = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &e, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(e, &err), ES_OK, "%s", err.message);
    return e;
}

/* es_processor_new on the config: its code, with the message in err. */
static es_err new_processor(es_error_t *err) {
    es_engine_t *engine = new_engine();
    es_processor_t *p = NULL;
    es_err rc = es_processor_new(cfg, engine, &p, err);
    es_processor_destroy(p);
    es_engine_destroy(engine);
    return rc;
}

/* Records in every partition of the demo's events topics, as the mock's high watermarks. */
static long long events_produced(void) {
    rd_kafka_conf_t *c = tu_kafka_conf();
    tu_kafka_set(c, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(mock));
    tu_kafka_set(c, "group.id", "registry-test");
    rd_kafka_t *rk = tu_kafka_new(RD_KAFKA_CONSUMER, c);
    long long sum = 0;
    for (size_t t = 0; t < sizeof agg_types / sizeof *agg_types; t++)
        for (int p = 0; p < PARTS; p++) {
            char topic[128];
            int64_t lo = 0, hi = 0;
            snprintf(topic, sizeof topic, "%s.events", agg_types[t]);
            cr_assert_eq(rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 5000), 0);
            sum += hi;
        }
    rd_kafka_destroy(rk);
    return sum;
}

/* The requests the double logged, one JSON line each. */
static char *requests(void) {
    char *log = slurp(log_path, NULL);
    return log ? log : calloc(1, 1);
}

/* The line of the n-th (from 0) request to path, or NULL. */
static const char *request_to(const char *log, const char *path, int n) {
    char want[512];
    snprintf(want, sizeof want, "\"path\":\"%s\"", path);
    for (const char *p = strstr(log, want); p; p = strstr(p + 1, want))
        if (n-- == 0)
            return p;
    return NULL;
}

/* ---- registration at start ------------------------------------------------------------------ */

Test(registry, processor_start_registers_the_envelope_per_topic_and_each_event_type) {
    start_double("ok", "0");
    set("schema.registry.url", url);
    es_error_t err = {0};
    cr_assert_eq(new_processor(&err), ES_OK, "%s", err.message);
    char *log = requests();
    for (size_t t = 0; t < sizeof agg_types / sizeof *agg_types; t++) {
        char reg[256], compat[256];
        snprintf(reg, sizeof reg, "/subjects/%s.events-value/versions", agg_types[t]);
        snprintf(compat, sizeof compat, "/compatibility/subjects/%s.events-value/versions/latest",
                 agg_types[t]);
        const char *r = request_to(log, reg, 0), *c = request_to(log, compat, 0);
        cr_assert(r, "no registration of %s.events-value: %s", agg_types[t], log);
        cr_assert(c && c < r, "no compatibility call before registering %s.events-value: %s",
                  agg_types[t], log);
        cr_expect(strstr(r, "\\\"schemaType\\\":\\\"PROTOBUF\\\""), "%.300s", r);
        cr_expect(strstr(r, "syntax = \\\\\\\"proto3\\\\\\\";\\\\npackage eskit.v1;"), "%.300s", r);
        cr_expect(strstr(r, "message EventEnvelope {"), "%.300s", r);
    }
    /* Each event type under its full name (RecordNameStrategy), after its compatibility call. */
    const char *const payloads[] = {"orders.v1.OrderPlaced", "orders.v1.OrderConfirmed",
                                    "payments.v1.PaymentAuthorized", "inventory.v1.StockReserved"};
    for (size_t i = 0; i < sizeof payloads / sizeof *payloads; i++) {
        char reg[256], compat[256];
        snprintf(reg, sizeof reg, "/subjects/%s/versions", payloads[i]);
        snprintf(compat, sizeof compat, "/compatibility/subjects/%s/versions/latest", payloads[i]);
        const char *r = request_to(log, reg, 0), *c = request_to(log, compat, 0);
        cr_expect(r, "no registration of %s: %s", payloads[i], log);
        cr_expect(c && r && c < r, "no compatibility call before %s", payloads[i]);
    }
    free(log);
}

Test(registry, coordinator_start_registers_the_transitions_envelope_and_their_type) {
    start_double("ok", "0");
    set("schema.registry.url", url);
    char *saga_db = tu_path(dir, "saga.db");
    set("saga.db", saga_db);
    free(saga_db);
    cr_assert_eq(rd_kafka_mock_topic_create(mock, "orders.fulfilment.saga.events", 1, 1), 0);
    es_engine_t *engine = new_engine();
    es_saga_t *c = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_saga_new(cfg, &demo_fulfilment_def, engine, &c, &err), ES_OK, "%s",
                 err.message);
    char *log = requests();
    const char *reg = request_to(log, "/subjects/orders.fulfilment.saga.events-value/versions", 0),
               *compat = request_to(
                   log,
                   "/compatibility/subjects/orders.fulfilment.saga.events-value/versions/latest",
                   0),
               *type = request_to(log, "/subjects/eskit.v1.SagaTransition/versions", 0);
    cr_assert(reg && compat && compat < reg, "the envelope, compatibility first: %s", log);
    cr_assert(type, "the transition type under its name: %s", log);
    free(log);
    es_saga_destroy(c);
    es_engine_destroy(engine);
}

Test(registry, a_registry_that_refuses_the_transitions_refuses_the_coordinator_start) {
    start_double("incompatible", "0");
    set("schema.registry.url", url);
    char *saga_db = tu_path(dir, "saga.db");
    set("saga.db", saga_db);
    free(saga_db);
    es_engine_t *engine = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(engine, &err), ES_OK, "%s", err.message);
    es_saga_t *c = NULL;
    cr_assert_eq(es_saga_new(cfg, &demo_fulfilment_def, engine, &c, &err), ES_EINCOMPATIBLE, "%s",
                 err.message);
    cr_assert(strstr(err.message, "saga 'orders.fulfilment'") && strstr(err.message, url) &&
                  strstr(err.message, "orders.fulfilment.saga.events-value"),
              "%s", err.message);
    cr_assert_null(c);
    es_engine_destroy(engine);
}

Test(registry, the_envelope_schema_is_the_proto_file_with_its_map_field) {
    char *text = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_registry_proto(&eskit__v1__event_envelope__descriptor, &text, &err), ES_OK,
                 "%s", err.message);
    cr_expect_str_eq(text, "syntax = \"proto3\";\n"
                           "package eskit.v1;\n"
                           "\n"
                           "message EventEnvelope {\n"
                           "  string event_id = 1;\n"
                           "  string aggregate_type = 2;\n"
                           "  string aggregate_id = 3;\n"
                           "  uint64 version = 4;\n"
                           "  string event_type = 5;\n"
                           "  bytes payload = 6;\n"
                           "  int64 occurred_at_us = 7;\n"
                           "  string command_id = 8;\n"
                           "  string correlation_id = 9;\n"
                           "  map<string, string> metadata = 10;\n"
                           "  bytes command_fingerprint = 11;\n"
                           "  uint32 schema_version = 12;\n"
                           "}\n");
    free(text);
    /* A payload type holding a nested message type of its package, referred to by full name. */
    cr_assert_eq(es_registry_proto(&orders__v1__order_placed__descriptor, &text, &err), ES_OK, "%s",
                 err.message);
    cr_expect(strstr(text, "message OrderPlaced {"), "%s", text);
    cr_expect(strstr(text, "repeated .orders.v1.LineItem items = "), "%s", text);
    cr_expect(strstr(text, "\nmessage LineItem {"), "%s", text);
    cr_expect(strstr(text, "message OrderPlaced {") < strstr(text, "message LineItem {"),
              "the registered type comes first: %s", text);
    free(text);
}

/* The start refused: code, message naming the URL and the subject, nothing produced. */
static void refused(es_err want, const char *says) {
    es_error_t err = {0};
    es_err rc = new_processor(&err);
    cr_assert_eq(rc, want, "%s (%s)", es_strerror(rc), err.message);
    cr_expect(strstr(err.message, url), "the URL is named: %s", err.message);
    cr_expect(strstr(err.message, "'orders.order.events-value'"), "the subject is named: %s",
              err.message);
    cr_expect(strstr(err.message, says), "'%s' in: %s", says, err.message);
    cr_expect(strstr(err.message, "the command processor cannot start"), "%s", err.message);
    cr_expect_eq(events_produced(), 0);
}

Test(registry, a_409_refuses_start_naming_the_subject) {
    start_double("409", "0");
    set("schema.registry.url", url);
    refused(ES_EINCOMPATIBLE,
            "incompatible with the registry's latest version of orders.order.events-value");
}

Test(registry, an_incompatible_verdict_refuses_start_before_registering) {
    start_double("incompatible", "0");
    set("schema.registry.url", url);
    refused(ES_EINCOMPATIBLE,
            "incompatible with the registry's latest version of orders.order.events-value");
    char *log = requests();
    cr_expect_null(request_to(log, "/subjects/orders.order.events-value/versions", 0), "%s", log);
    free(log);
}

Test(registry, a_registry_that_is_down_refuses_start_after_its_retries) {
    int s = socket(AF_INET, SOCK_STREAM, 0); /* a port nothing listens on: bound, then closed */
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(getsockname(s, (struct sockaddr *)&a, &alen), 0);
    close(s);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", ntohs(a.sin_port));
    set("schema.registry.url", url);
    set("schema.registry.retries", "2");
    long long t0 = now_ms();
    refused(ES_ERETRY, "Couldn't connect to server (3 attempts)");
    cr_expect_geq(now_ms() - t0, 300, "two retries back off 100 then 200 ms");
}

Test(registry, a_slow_registry_times_out_naming_the_setting) {
    start_double("slow", "3000");
    set("schema.registry.url", url);
    set("schema.registry.timeout.ms", "300");
    set("schema.registry.retries", "1");
    long long t0 = now_ms();
    refused(ES_ETIMEOUT, "schema.registry.timeout.ms=300 in 2 attempts");
    cr_expect_lt(now_ms() - t0, 2500, "gave up after two attempts of 300 ms");
}

Test(registry, garbage_is_a_decode_error) {
    start_double("garbage", "0");
    set("schema.registry.url", url);
    refused(ES_EDECODE, "a body that is not JSON");
}

Test(registry, a_5xx_is_retried_then_an_error_with_the_registry_s_message) {
    start_double("500", "0");
    set("schema.registry.url", url);
    set("schema.registry.retries", "2");
    refused(ES_EIO, "HTTP 500 (error 50001): Error in the backend data store");
    char *log = requests();
    cr_expect(
        request_to(log, "/compatibility/subjects/orders.order.events-value/versions/latest", 2),
        "three attempts: %s", log);
    free(log);
}

Test(registry, an_invalid_schema_is_refused_as_such) {
    start_double("422", "0");
    set("schema.registry.url", url);
    refused(ES_EINVAL, "the registry finds the schema invalid");
}

Test(registry, framing_without_a_registry_is_refused) {
    set("schema.registry.framing", "confluent");
    es_error_t err = {0};
    cr_assert_eq(new_processor(&err), ES_EINVAL);
    cr_expect(strstr(err.message, "schema.registry.url"), "%s", err.message);
}

Test(registry, basic_auth_credentials_are_sent_and_never_printed) {
    start_double("409", "0");
    set("schema.registry.url", url);
    set("schema.registry.basic.auth.user.info", "svc:s3cret-pw");
    es_error_t err = {0};
    cr_assert_eq(new_processor(&err), ES_EINCOMPATIBLE);
    cr_expect_null(strstr(err.message, "s3cret-pw"), "%s", err.message);
    char *log = requests();
    cr_expect(strstr(log, "\"auth\":\"Basic c3ZjOnMzY3JldC1wdw==\""), "sent: %s", log);
    free(log);
    es_error_t bad = {0};
    cr_assert_eq(
        es_config_set(cfg, "schema.registry.basic.auth.user.info", "no-colon-s3cret", &bad),
        ES_EINVAL);
    cr_expect_null(strstr(bad.message, "s3cret"), "%s", bad.message);
    cr_assert_eq(es_config_set(cfg, "schema.registry.url", "http://u:p@host:8081", &bad),
                 ES_EINVAL);
    cr_expect_null(strstr(bad.message, "u:p@"), "%s", bad.message);
}

/* ---- framing on Kafka ----------------------------------------------------------------------- */

static Orders__V1__LineItem item = {PROTOBUF_C_MESSAGE_INIT(&orders__v1__line_item__descriptor),
                                    "sku-1", 2, 1500};
static Orders__V1__LineItem *items[] = {&item};

static void place(es_engine_t *caller, const char *id) {
    Orders__V1__PlaceOrder msg = ORDERS__V1__PLACE_ORDER__INIT;
    msg.customer_id = "c-1";
    msg.currency = "EUR";
    msg.n_items = 1;
    msg.items = items;
    es_command_t cmd = {.aggregate_type = "orders.order", .aggregate_id = id, .message = &msg.base};
    es_result_t res;
    es_error_t err = {0};
    cr_assert_eq(es_execute(caller, &cmd, &res, &err), ES_OK, "%s", err.message);
    cr_assert_eq(res.outcome, ES_OUTCOME_ACCEPTED, "%s", res.reason ? res.reason : "");
    es_result_clear(&res);
}

static void confirm(es_engine_t *caller, const char *id, uint64_t version) {
    Orders__V1__ConfirmOrder msg = ORDERS__V1__CONFIRM_ORDER__INIT;
    es_command_t cmd = {.aggregate_type = "orders.order", .aggregate_id = id, .message = &msg.base};
    es_result_t res;
    es_error_t err = {0};
    cr_assert_eq(es_execute(caller, &cmd, &res, &err), ES_OK, "%s", err.message);
    cr_assert_eq(res.outcome, ES_OUTCOME_ACCEPTED, "%s", res.reason ? res.reason : "");
    cr_assert_eq(res.version, version);
    es_result_clear(&res);
}

typedef struct raw {
    uint8_t *value[16];
    size_t len[16];
    size_t n;
} raw;

/* Every record of orders.order.events, read raw from the beginning with librdkafka. */
static void read_raw(raw *out, size_t want) {
    rd_kafka_conf_t *c = tu_kafka_conf();
    tu_kafka_set(c, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(mock));
    tu_kafka_set(c, "group.id", "registry-raw");
    tu_kafka_set(c, "enable.partition.eof", "false");
    rd_kafka_t *rk = tu_kafka_new(RD_KAFKA_CONSUMER, c);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(PARTS);
    for (int p = 0; p < PARTS; p++)
        rd_kafka_topic_partition_list_add(parts, "orders.order.events", p)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    cr_assert_eq(rd_kafka_assign(rk, parts), 0);
    rd_kafka_topic_partition_list_destroy(parts);
    memset(out, 0, sizeof *out);
    long long deadline = now_ms() + 15000;
    while (out->n < want && now_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (m && !m->err && out->n < 16) {
            out->value[out->n] = malloc(m->len);
            memcpy(out->value[out->n], m->payload, m->len);
            out->len[out->n++] = m->len;
        }
        if (m)
            rd_kafka_message_destroy(m);
    }
    rd_kafka_destroy(rk);
    cr_assert_eq(out->n, want, "read %zu of %zu records", out->n, want);
}

static void raw_free(raw *r) {
    for (size_t i = 0; i < r->n; i++)
        free(r->value[i]);
}

/* The envelope's schema id on orders.order.events, as the double gave it. */
static uint32_t envelope_id(void) {
    es_registry_t *r = NULL;
    es_error_t err = {0};
    uint32_t id = 0;
    cr_assert_eq(es_registry_open(cfg, &r, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_registry_envelope_id(r, "orders.order.events", &id, &err), ES_OK, "%s",
                 err.message);
    es_registry_destroy(r);
    return id;
}

static void set_state_db(const char *name) {
    char *path = tu_path(dir, name);
    set("state.db", path);
    free(path);
}

Test(registry, framed_events_beside_unframed_ones_read_alike_on_every_path) {
    start_double("ok", "0");
    /* Written before framing was turned on: unframed. */
    tu_proc *pr = tu_proc_start(cfg, new_engine());
    es_engine_t *caller = new_engine();
    place(caller, "o-1");
    tu_proc_stop(pr);
    es_engine_destroy(caller);

    set("schema.registry.url", url);
    set("schema.registry.framing", "confluent");
    set_state_db("state2.db"); /* a fresh state store: restored from the mixed log */
    pr = tu_proc_start(cfg, new_engine());
    caller = new_engine();
    confirm(caller, "o-1", 2);
    place(caller, "o-2");
    tu_proc_stop(pr);
    es_engine_destroy(caller);

    uint32_t id = envelope_id();
    cr_assert_gt(id, 0);
    raw r;
    read_raw(&r, 3);
    size_t framed = 0;
    for (size_t i = 0; i < r.n; i++) {
        es_event_t *ev = NULL;
        es_error_t err = {0};
        cr_assert_eq(es_envelope_decode(r.value[i], r.len[i], NULL, &ev, &err), ES_OK, "%s",
                     err.message);
        if (r.value[i][0] == 0) {
            framed++;
            uint8_t want[6] = {
                0, (uint8_t)(id >> 24), (uint8_t)(id >> 16), (uint8_t)(id >> 8), (uint8_t)id, 0};
            cr_expect_eq(memcmp(r.value[i], want, 6), 0, "magic, id %u, indexes [0]", id);
            es_event_t *bare = NULL;
            cr_assert_eq(es_envelope_decode(r.value[i] + 6, r.len[i] - 6, NULL, &bare, &err), ES_OK,
                         "%s", err.message);
            cr_expect_str_eq(bare->event_id, ev->event_id);
            es_event_free(bare);
        } else {
            cr_expect_str_eq(ev->aggregate_id, "o-1", "only o-1's first event is unframed");
            cr_expect_eq(ev->version, 1);
        }
        es_event_free(ev);
    }
    cr_expect_eq(framed, 2, "the events of the framing processor are framed");
    raw_free(&r);

    /* esctl events reads both. */
    char brokers[256];
    snprintf(brokers, sizeof brokers, "ESKIT_BROKERS=%s", rd_kafka_mock_cluster_bootstraps(mock));
    const char *env[] = {brokers, "ESKIT_BACKEND=kafka", NULL};
    tu_result res = TU_ESCTL_ENV(env, "events", "orders.order", "o-1");
    cr_assert_eq(res.status, 0, "esctl events: %s", res.err);
    cr_expect(strstr(res.out, "orders.v1.OrderPlaced"), "%s", res.out);
    cr_expect(strstr(res.out, "orders.v1.OrderConfirmed"), "%s", res.out);
    tu_result_free(&res);
}

Test(registry, the_runner_projects_framed_and_unframed_events) {
    start_double("ok", "0");
    tu_proc *pr = tu_proc_start(cfg, new_engine());
    es_engine_t *caller = new_engine();
    place(caller, "o-1");
    tu_proc_stop(pr);
    set("schema.registry.url", url);
    set("schema.registry.framing", "confluent");
    pr = tu_proc_start(cfg, new_engine());
    place(caller, "o-2");
    confirm(caller, "o-1", 2);
    tu_proc_stop(pr);
    es_engine_destroy(caller);

    char *rm = tu_path(dir, "read.db");
    set("readmodel.db", rm);
    es_runner_t *runner = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_runner_new(cfg, &es_order_summary_projector, &runner, &err), ES_OK, "%s",
                 err.message);
    long long deadline = now_ms() + 15000, rows = 0, confirmed = 0;
    while ((rows < 2 || confirmed < 1) && now_ms() < deadline) {
        cr_assert_eq(es_runner_poll(runner, 100, NULL, &err), ES_OK, "%s", err.message);
        rows = tu_query_int(rm, "SELECT count(*) FROM order_summary");
        confirmed =
            tu_query_int(rm, "SELECT count(*) FROM order_summary WHERE status = 'confirmed'");
    }
    es_runner_destroy(runner);
    cr_expect_eq(rows, 2);
    cr_expect_eq(confirmed, 1, "o-1's framed confirmation over its unframed placement");
    free(rm);
}

/* ---- interop with @kafkajs/confluent-schema-registry ---------------------------------------- */

static void need_interop(void) {
    cr_assert_eq(access(INTEROP "/node_modules/@kafkajs/confluent-schema-registry", F_OK), 0,
                 "the interop package is not installed: run tools/install-deps.sh");
}

static const es_kv_t md[] = {{"origin", "eskit"}, {"trace-id", "t-9"}};

Test(registry, kafkajs_decodes_what_eskit_framed) {
    need_interop();
    start_double("ok", "0");
    set("schema.registry.url", url);
    uint32_t id = envelope_id();
    static const uint8_t payload[] = {0x0a, 0x03, 'c', '-', '1'};
    es_event_t ev = {.event_id = "01890a5d-ac96-7e4b-bcce-b302099a8057",
                     .aggregate_type = "orders.order",
                     .aggregate_id = "o-1",
                     .version = 3,
                     .event_type = "orders.v1.OrderPlaced",
                     .payload = payload,
                     .payload_len = sizeof payload,
                     .occurred_at_us = 1700000000123456,
                     .command_id = "cmd-1",
                     .correlation_id = "corr-1",
                     .metadata = md,
                     .n_metadata = 2,
                     .schema_version = 4};
    es_buf_t b = {0};
    es_error_t err = {0};
    cr_assert_eq(es_envelope_pack(&ev, &b, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_frame_wrap(&b, id, &err), ES_OK, "%s", err.message);
    char *file = tu_path(dir, "framed.bin");
    FILE *f = fopen(file, "wb");
    cr_assert(f);
    cr_assert_eq(fwrite(b.data, 1, b.len, f), b.len);
    fclose(f);
    es_buf_free(&b);
    char *out = NULL, *errout = NULL;
    const char *argv[] = {"/usr/bin/env", "node", INTEROP "/decode.js", url, file, NULL};
    int status = tu_run(argv, NULL, &out, &errout);
    cr_assert_eq(status, 0, "decode.js: %s", errout);
    cr_expect_str_eq(out, "{\"event_id\":\"01890a5d-ac96-7e4b-bcce-b302099a8057\","
                          "\"aggregate_type\":\"orders.order\",\"aggregate_id\":\"o-1\","
                          "\"version\":\"3\",\"event_type\":\"orders.v1.OrderPlaced\","
                          "\"payload\":\"CgNjLTE=\",\"occurred_at_us\":\"1700000000123456\","
                          "\"command_id\":\"cmd-1\",\"correlation_id\":\"corr-1\","
                          "\"metadata\":{\"origin\":\"eskit\",\"trace-id\":\"t-9\"},"
                          "\"schema_version\":4}\n");
    free(out);
    free(errout);
    free(file);
}

Test(registry, eskit_decodes_what_kafkajs_encoded) {
    need_interop();
    start_double("ok", "0");
    set("schema.registry.url", url);
    uint32_t id = envelope_id(); /* eskit registers the envelope; kafkajs encodes under its id */
    char *file = tu_path(dir, "kafkajs.bin");
    char *out = NULL, *errout = NULL;
    const char *argv[] = {
        "/usr/bin/env", "node", INTEROP "/encode.js", url, "orders.order.events-value", file, NULL};
    int status = tu_run(argv, NULL, &out, &errout);
    cr_assert_eq(status, 0, "encode.js: %s", errout);
    cr_expect_eq((uint32_t)atol(out), id);
    size_t len = 0;
    uint8_t *bytes = (uint8_t *)slurp(file, &len);
    cr_assert(bytes && len > 5);
    cr_expect_eq(bytes[0], 0, "magic byte");
    es_event_t *ev = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_envelope_decode(bytes, len, NULL, &ev, &err), ES_OK, "%s", err.message);
    cr_expect_str_eq(ev->event_id, "01890a5d-ac96-774b-bcce-b302099a8057");
    cr_expect_str_eq(ev->aggregate_type, "orders.order");
    cr_expect_str_eq(ev->aggregate_id, "o-node");
    cr_expect_eq(ev->version, 7);
    cr_expect_str_eq(ev->event_type, "orders.v1.OrderConfirmed");
    cr_expect_eq(ev->payload_len, 5);
    cr_expect_eq(memcmp(ev->payload,
                        "\x0a\x03"
                        "abc",
                        5),
                 0);
    cr_expect_eq(ev->occurred_at_us, 1700000000000001);
    cr_expect_str_eq(ev->command_id, "cmd-node");
    cr_expect_str_eq(ev->correlation_id, "corr-node");
    cr_expect_eq(ev->schema_version, 2);
    cr_assert_eq(ev->n_metadata, 2);
    int origin = 0;
    for (size_t i = 0; i < ev->n_metadata; i++)
        origin |=
            !strcmp(ev->metadata[i].key, "origin") && !strcmp(ev->metadata[i].value, "kafkajs");
    cr_expect(origin);
    es_event_free(ev);
    free(bytes);
    free(out);
    free(errout);
    free(file);
}

Test(registry, a_mistyped_schema_key_lists_the_schema_keys) {
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "schema.registry.uri", "http://localhost:8081", &err),
                 ES_EINVAL);
    cr_expect(strstr(err.message, "the schema.* keys are ") &&
                  strstr(err.message, "schema.registry.url") &&
                  strstr(err.message, "schema.registry.basic.auth.user.info") &&
                  strstr(err.message, "schema.compatibility"),
              "%s", err.message);
}
