/*
 * With the brokers down (librdkafka's mock cluster in this process, its broker set down), the
 * run loops stop promptly when asked, and what fails says the brokers are unreachable.
 *
 * The saga coordinator (run_saga), the command processor (run_processor) and a projector
 * runner (run_projector --follow) run as children on the mock; each gets SIGTERM while the
 * brokers are down and must exit 0 within STOP_DEADLINE_MS (a deadline for the condition, not
 * a measurement: the design says 2 s). The coordinator is caught in the two waits that used to
 * hold it for ~33 s: its retry backoff, and a command whose reply cannot come (es_execute
 * inside the relay, execute.timeout.ms 30 s). es_execute itself, with the brokers down, fails
 * naming the brokers it cannot reach.
 */
#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "domain.h"
#include "testutil.h"
#include "tp_format.h"

#define PARTS 3
#define STOP_DEADLINE_MS 2000
#define SAGA "orders.fulfilment"

static char *dir, *child_log;
static rd_kafka_t *mock_rk;
static rd_kafka_mock_cluster_t *mock;
static const char *brokers;

static void quiet(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk, (void)level, (void)fac, (void)buf;
}

static void setup(void) {
    char errstr[256], name[128];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(c, quiet);
    mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof errstr);
    cr_assert(mock_rk, "%s", errstr);
    mock = rd_kafka_mock_cluster_new(mock_rk, 1);
    cr_assert(mock);
    static const char *const types[] = {"orders.order", "payments.payment", "inventory.item",
                                        TP_TYPE};
    static const char *const kinds[] = {"events", "snapshots", "commands", "replies", "events.dlq"};
    for (size_t t = 0; t < 4; t++)
        for (size_t k = 0; k < 5; k++) {
            snprintf(name, sizeof name, "%s.%s", types[t], kinds[k]);
            cr_assert_eq(rd_kafka_mock_topic_create(mock, name, PARTS, 1), 0);
        }
    cr_assert_eq(rd_kafka_mock_topic_create(mock, SAGA ".saga.events", PARTS, 1), 0);
    brokers = rd_kafka_mock_cluster_bootstraps(mock);
    dir = tu_tempdir();
    child_log = tu_path(dir, "children.log");
}

static void teardown(void) {
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_rk);
    tu_rmtree(dir);
    free(dir);
    free(child_log);
}

TestSuite(kafka_outage, .init = setup, .fini = teardown, .timeout = 120);

/* Settings every child gets with --set. */
static const char *const settings[] = {"service.name=svc", "kafka.reconnect.backoff.max.ms=200",
                                       "kafka.session.timeout.ms=2500",
                                       "kafka.heartbeat.interval.ms=500", NULL};

static size_t add_settings(const char **argv, size_t n) {
    for (size_t i = 0; settings[i]; i++) {
        argv[n++] = "--set";
        argv[n++] = settings[i];
    }
    return n;
}

/* What the children wrote so far (their stdout and stderr); caller frees. */
static char *output(void) {
    FILE *f = fopen(child_log, "r");
    char *buf = calloc(1, 1 << 20);
    if (f) {
        fread(buf, 1, (1 << 20) - 1, f);
        fclose(f);
    }
    return buf;
}

/* Runs argv with its output in child_log; verbose (e.g. "RUN_PROCESSOR_VERBOSE", may be NULL)
 * makes it log librdkafka's warnings too. */
static pid_t spawn(const char *const *argv, const char *verbose) {
    pid_t pid = fork();
    cr_assert_neq(pid, -1, "fork: %s", strerror(errno));
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        int fd = open(child_log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        /* Not the mock's listening sockets: with a child holding one, the mock cannot listen
         * on the port again when a broker goes down (it re-creates the listener then). */
        for (int i = 3; i < 1024; i++)
            close(i);
        if (verbose)
            setenv(verbose, "1", 1);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits until what holds (a condition on the children's output or files), at most ms. */
static int wait_for(int (*what)(void), int ms) {
    int64_t deadline = es_now_us() + ms * 1000LL;
    while (!what()) {
        if (es_now_us() > deadline)
            return 0;
        sleep_ms(20);
    }
    return 1;
}

/* SIGTERM, then the exit status within STOP_DEADLINE_MS; a child still running then is
 * killed and the test fails with the children's output. */
static void stop_within_deadline(pid_t pid, const char *who) {
    int status = 0;
    cr_assert_eq(kill(pid, SIGTERM), 0);
    int64_t deadline = es_now_us() + STOP_DEADLINE_MS * 1000LL;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (es_now_us() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            char *out = output();
            cr_assert_fail("%s did not exit within %d ms of SIGTERM with the brokers down:\n%s",
                           who, STOP_DEADLINE_MS, out);
        }
        sleep_ms(10);
    }
    char *out = output();
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: status 0x%x:\n%s", who, status,
              out);
    cr_log_info("%s exited %lld ms after SIGTERM", who,
                (long long)(es_now_us() - (deadline - STOP_DEADLINE_MS * 1000LL)) / 1000);
    free(out);
}

static const char *wanted_line;

static int logged(void) {
    char *out = output();
    int found = strstr(out, wanted_line) != NULL;
    free(out);
    return found;
}

static char *saga_db;

/* The coordinator's outbox holds a command (the relay is about to send it or sends it). */
static int command_in_outbox(void) {
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int n = 0;
    if (sqlite3_open_v2(saga_db, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "SELECT count(*) FROM es_saga_targets", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        n = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n > 0;
}

/* run_saga; short: every step times out after 1 s and a command's reply is waited for 2 s,
 * so that an outage soon leaves transitions to publish (the timeouts') that cannot be. */
static pid_t start_saga(int short_waits) {
    const char *argv[32] = {RUN_SAGA_PATH, "--brokers", brokers, "--saga-db", saga_db};
    size_t n = add_settings(argv, 5);
    if (short_waits) {
        argv[n++] = "--timeout-ms";
        argv[n++] = "1000";
        argv[n++] = "--set";
        argv[n++] = "execute.timeout.ms=2000";
    }
    argv[n] = NULL;
    return spawn(argv, NULL);
}

/* An OrderPlaced in the log, written as any producer would (no processor runs). */
static void order_placed(const char *id) {
    Orders__V1__LineItem item = ORDERS__V1__LINE_ITEM__INIT;
    item.sku = "sku-1";
    item.quantity = 1;
    item.unit_price_cents = 100;
    Orders__V1__LineItem *items[] = {&item};
    Orders__V1__OrderPlaced m = ORDERS__V1__ORDER_PLACED__INIT;
    m.customer_id = "alice";
    m.n_items = 1;
    m.items = items;
    m.currency = "USD";
    uint8_t payload[256];
    size_t plen = protobuf_c_message_pack(&m.base, payload);
    es_event_t ev = {.aggregate_type = "orders.order",
                     .aggregate_id = id,
                     .version = 1,
                     .event_type = m.base.descriptor->name,
                     .payload = payload,
                     .payload_len = plen,
                     .occurred_at_us = es_now_us()};
    es_uuid7(ev.event_id);
    uint8_t *bytes = NULL;
    size_t len = 0;
    es_error_t err = {0};
    cr_assert_eq(es_envelope_encode(&ev, &bytes, &len, &err), ES_OK, "%s", err.message);
    char errstr[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(c, quiet);
    rd_kafka_conf_set(c, "bootstrap.servers", brokers, errstr, sizeof errstr);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof errstr);
    cr_assert_not_null(p, "%s", errstr);
    cr_assert_eq(rd_kafka_producev(p, RD_KAFKA_V_TOPIC("orders.order.events"),
                                   RD_KAFKA_V_KEY(id, strlen(id)), RD_KAFKA_V_VALUE(bytes, len),
                                   RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                 0);
    cr_assert_eq(rd_kafka_flush(p, 10000), 0, "the event was not delivered");
    rd_kafka_destroy(p);
    free(bytes);
}

/* Waits (with a deadline) for a line of the children's output holding line. The outage tests
 * wait for "Connection refused", which librdkafka logs on every failed connect: it reports
 * _ALL_BROKERS_DOWN only when every broker object (the group coordinator's too) is down at one
 * moment, which with a 200 ms reconnect backoff may not happen within any deadline (CI saw
 * 30 s pass without it). */
static void wait_for_line(const char *line, int ms) {
    wanted_line = line;
    cr_assert(wait_for(logged, ms), "no line '%s' within %d ms:\n%s", line, ms, output());
}

Test(kafka_outage, the_coordinator_stops_at_once_while_a_command_waits_for_its_reply) {
    saga_db = tu_path(dir, "saga.db");
    order_placed("o-1");
    /* No processor: the relay's ReserveStock waits for a reply (execute.timeout.ms, 30 s). */
    pid_t pid = start_saga(0);
    wait_for_line("running; SIGTERM stops it", 30000);
    cr_assert(wait_for(command_in_outbox, 30000), "no command was ever sent:\n%s", output());
    cr_assert_eq(rd_kafka_mock_broker_set_down(mock, 1), 0);
    stop_within_deadline(pid, "run_saga");
    free(saga_db);
}

Test(kafka_outage, the_coordinator_stops_at_once_in_its_retry_backoff_and_names_itself_once) {
    saga_db = tu_path(dir, "saga.db");
    order_placed("o-1");
    pid_t pid = start_saga(1);
    wait_for_line("running; SIGTERM stops it", 30000);
    cr_assert(wait_for(command_in_outbox, 30000), "no command was ever sent:\n%s", output());
    cr_assert_eq(rd_kafka_mock_broker_set_down(mock, 1), 0);
    /* The step times out, and its transitions cannot be published: poll, fail, back off. */
    wait_for_line("retrying in", 60000);
    stop_within_deadline(pid, "run_saga");
    char *out = output();
    cr_assert_null(strstr(out, "saga '" SAGA "': saga '" SAGA "'"),
                   "a message names the saga twice:\n%s", out);
    free(out);
    free(saga_db);
}

Test(kafka_outage, the_command_processor_stops_at_once) {
    char *state = tu_path(dir, "state.db");
    const char *argv[32] = {RUN_PROCESSOR_PATH, "--brokers", brokers, "--state", state};
    size_t n = add_settings(argv, 5);
    argv[n] = NULL;
    pid_t pid = spawn(argv, "RUN_PROCESSOR_VERBOSE");
    wait_for_line("running; SIGTERM stops it", 30000);
    cr_assert_eq(rd_kafka_mock_broker_set_down(mock, 1), 0);
    wait_for_line("Connection refused", 30000); /* it has tried the broker and failed */
    stop_within_deadline(pid, "run_processor");
    free(state);
}

Test(kafka_outage, a_projector_runner_stops_at_once) {
    char *rm = tu_path(dir, "read.db"), *set_rm = NULL, *set_brokers = NULL;
    cr_assert_gt(asprintf(&set_rm, "readmodel.db=%s", rm), 0);
    cr_assert_gt(asprintf(&set_brokers, "brokers=%s", brokers), 0);
    const char *argv[32] = {RUN_PROJECTOR_PATH, "--follow", "--set", set_rm, "--set", set_brokers};
    size_t n = add_settings(argv, 6);
    argv[n++] = TEST_MODULES_DIR "/counter.so";
    argv[n] = NULL;
    pid_t pid = spawn(argv, "RUN_PROJECTOR_VERBOSE");
    wait_for_line("running; SIGTERM stops it", 30000);
    cr_assert_eq(rd_kafka_mock_broker_set_down(mock, 1), 0);
    wait_for_line("Connection refused", 30000); /* it has tried the broker and failed */
    stop_within_deadline(pid, "run_projector");
    free(rm), free(set_rm), free(set_brokers);
}

static es_engine_t *caller(es_config_t **cfg_out) {
    es_config_t *cfg = tu_config(dir, "unused.db");
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "brokers", brokers, &err), ES_OK);
    cr_assert_eq(es_config_set(cfg, "execute.timeout.ms", "3000", &err), ES_OK);
    cr_assert_eq(es_config_set(cfg, "kafka.reconnect.backoff.max.ms", "200", &err), ES_OK);
    es_engine_t *engine = NULL;
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(engine, &err), ES_OK, "%s", err.message);
    *cfg_out = cfg;
    return engine;
}

/* A Restock, which no processor answers here; returns its code, err filled. */
static es_err restock(es_engine_t *engine, es_error_t *err) {
    Inventory__V1__Restock m = INVENTORY__V1__RESTOCK__INIT;
    m.quantity = 1;
    es_command_t cmd = {
        .aggregate_type = "inventory.item", .aggregate_id = "sku-1", .message = &m.base};
    return es_execute(engine, &cmd, NULL, err);
}

static void names_the_unreachable_brokers(es_err rc, const es_error_t *err) {
    cr_assert(rc == ES_ETIMEOUT || rc == ES_EKAFKA, "%s: %s", es_strerror(rc), err->message);
    cr_log_info("%s", err->message);
    cr_assert_not_null(strstr(err->message, "unreachable"), "%s", err->message);
    cr_assert_not_null(strstr(err->message, brokers), "names the broker: %s", err->message);
    cr_assert_null(strstr(err->message, "check that a processor"),
                   "does not blame the processor: %s", err->message);
}

Test(kafka_outage, es_execute_with_the_brokers_down_names_the_brokers_it_cannot_reach) {
    es_config_t *cfg = NULL;
    es_engine_t *engine = caller(&cfg);
    es_error_t err = {0};
    cr_assert_eq(rd_kafka_mock_broker_set_down(mock, 1), 0);
    names_the_unreachable_brokers(restock(engine, &err), &err);
    es_engine_destroy(engine);
    es_config_destroy(cfg);
}

Test(kafka_outage, a_command_sent_after_the_brokers_went_down_names_them_not_the_processor) {
    es_config_t *cfg = NULL;
    es_engine_t *engine = caller(&cfg);
    es_error_t err = {0};
    /* Brokers up, no processor: the timeout says to check the processor. */
    cr_assert_eq(restock(engine, &err), ES_ETIMEOUT, "%s", err.message);
    cr_assert_not_null(strstr(err.message, "check that a processor"), "%s", err.message);
    cr_assert_eq(rd_kafka_mock_broker_set_down(mock, 1), 0);
    names_the_unreachable_brokers(restock(engine, &err), &err);
    es_engine_destroy(engine);
    es_config_destroy(cfg);
}
