/*
 * esctl against Kafka: `esctl dev-broker` (librdkafka's mock cluster in a
 * process of its own) started as a child, used by a plain librdkafka client
 * and by `esctl topics plan/apply`, then stopped with a signal.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "domain.h"
#include "testutil.h"

#define DEADLINE_MS 15000

static char *dir;
/* The running dev-broker, killed by teardown when a failed assertion skipped stop_broker: a
 * leftover child would hold the test runner's pipes open. */
static pid_t broker_pid;

static void setup(void) {
    unsetenv("ESKIT_DB");
    unsetenv("ESKIT_CONFIG");
    unsetenv("ESKIT_BROKERS");
    unsetenv("ESKIT_BACKEND");
    unsetenv("ESKIT_TOPICS_AGGREGATES");
    dir = tu_tempdir();
    cr_assert_not_null(dir);
}

static void teardown(void) {
    if (broker_pid > 0) {
        kill(broker_pid, SIGKILL);
        waitpid(broker_pid, NULL, 0);
        broker_pid = 0;
    }
    tu_rmtree(dir);
    free(dir);
}

TestSuite(esctl_kafka, .init = setup, .fini = teardown, .timeout = 120);

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap(void) {
    struct timespec ts = {0, 20 * 1000000L};
    nanosleep(&ts, NULL);
}

/* The text of path, or NULL when it does not exist. Caller frees. */
static char *read_text(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    char *buf = calloc(1, 4096);
    ssize_t n = buf ? read(fd, buf, 4095) : -1;
    close(fd);
    if (n < 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

typedef struct broker {
    pid_t pid;
    char *file; /* --bootstrap-file */
    char *out;  /* its stdout */
    char *err;  /* its stderr */
    char address[1024];
} broker;

/* Starts `esctl dev-broker --bootstrap-file <dir>/bootstrap <args...>` and waits, with a
 * deadline, for the file: once it exists the address in it is whole and the cluster runs. */
static broker start_broker(const char *const *args) {
    broker b = {0};
    b.file = tu_path(dir, "bootstrap");
    b.out = tu_path(dir, "dev-broker.out");
    b.err = tu_path(dir, "dev-broker.err");
    const char *argv[32] = {ESCTL_PATH, "dev-broker", "--bootstrap-file", b.file};
    size_t n = 4;
    for (; args && *args; args++) {
        cr_assert_lt(n, 31);
        argv[n++] = *args;
    }
    argv[n] = NULL;
    b.pid = fork();
    cr_assert_geq(b.pid, 0);
    broker_pid = b.pid;
    if (b.pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int out = open(b.out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int err = open(b.err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(out, 1);
        dup2(err, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    long long deadline = now_ms() + DEADLINE_MS;
    char *text = NULL;
    while (!(text = read_text(b.file))) {
        int status = 0;
        cr_assert_eq(waitpid(b.pid, &status, WNOHANG), 0, "dev-broker exited early (status %d)",
                     status);
        cr_assert_lt(now_ms(), deadline, "dev-broker wrote no %s within %d ms", b.file,
                     DEADLINE_MS);
        nap();
    }
    char *nl = strchr(text, '\n');
    cr_assert_not_null(nl, "bootstrap file without its newline: '%s'", text);
    *nl = '\0';
    cr_assert(strncmp(text, "127.0.0.1:", 10) == 0, "address '%s'", text);
    snprintf(b.address, sizeof b.address, "%s", text);
    free(text);
    return b;
}

/* Sends sig, expects exit 0 within the deadline, the address as stdout's one line, and the
 * bootstrap file gone. */
static void stop_broker(broker *b, int sig) {
    cr_assert_eq(kill(b->pid, sig), 0);
    long long deadline = now_ms() + DEADLINE_MS;
    int status = 0;
    pid_t r;
    while ((r = waitpid(b->pid, &status, WNOHANG)) == 0) {
        cr_assert_lt(now_ms(), deadline, "dev-broker still runs %d ms after signal %d", DEADLINE_MS,
                     sig);
        nap();
    }
    cr_assert_eq(r, b->pid);
    broker_pid = 0;
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "dev-broker after signal %d: status 0x%x", sig, status);
    char *out = read_text(b->out);
    cr_assert_not_null(out);
    char expect[1100];
    snprintf(expect, sizeof expect, "%s\n", b->address);
    cr_assert_str_eq(out, expect);
    free(out);
    struct stat st;
    cr_assert_neq(stat(b->file, &st), 0, "bootstrap file left behind");
    char *err = read_text(b->err);
    cr_assert_str_eq(err ? err : "", "");
    free(err);
    free(b->file);
    free(b->out);
    free(b->err);
}

static rd_kafka_t *client(const char *address, rd_kafka_type_t type) {
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    cr_assert_eq(rd_kafka_conf_set(conf, "bootstrap.servers", address, errstr, sizeof errstr),
                 RD_KAFKA_CONF_OK);
    if (type == RD_KAFKA_CONSUMER) {
        rd_kafka_conf_set(conf, "group.id", "test", errstr, sizeof errstr);
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof errstr);
    } else {
        rd_kafka_conf_set(conf, "enable.idempotence", "true", errstr, sizeof errstr);
    }
    rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof errstr);
    cr_assert_not_null(rk, "%s", errstr);
    return rk;
}

/* Partition count and replication factor of topic, from the cluster's metadata. */
static void topic_layout(const char *address, const char *topic, int *partitions, int *rf) {
    rd_kafka_t *rk = client(address, RD_KAFKA_PRODUCER);
    const struct rd_kafka_metadata *md = NULL;
    cr_assert_eq(rd_kafka_metadata(rk, 1, NULL, &md, DEADLINE_MS), RD_KAFKA_RESP_ERR_NO_ERROR);
    *partitions = -1;
    *rf = -1;
    for (int i = 0; i < md->topic_cnt; i++) {
        if (strcmp(md->topics[i].topic, topic) || md->topics[i].err)
            continue;
        *partitions = md->topics[i].partition_cnt;
        *rf = md->topics[i].partitions[0].replica_cnt;
    }
    rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    cr_assert_geq(*partitions, 0, "no topic %s on the cluster", topic);
}

typedef tu_result run_result;
#define esctl tu_esctl
#define ESCTL(...) esctl(NULL, (const char *const[]){__VA_ARGS__, NULL})
#define BROKER(...) start_broker((const char *const[]){__VA_ARGS__, NULL})

#define run_free tu_result_free

static int lines(const char *s) {
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

Test(esctl_kafka, a_librdkafka_producer_and_consumer_round_trip_through_dev_broker) {
    broker b = BROKER("--plan", "orders.order", "--partitions", "3");
    rd_kafka_t *p = client(b.address, RD_KAFKA_PRODUCER);
    for (int i = 0; i < 30; i++) {
        char key[16], value[32];
        snprintf(key, sizeof key, "o-%d", i);
        snprintf(value, sizeof value, "event %d", i);
        cr_assert_eq(rd_kafka_producev(p, RD_KAFKA_V_TOPIC("orders.order.events"),
                                       RD_KAFKA_V_KEY(key, strlen(key)),
                                       RD_KAFKA_V_VALUE(value, strlen(value)),
                                       RD_KAFKA_V_HEADER("es-version", "1", 1),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    cr_assert_eq(rd_kafka_flush(p, DEADLINE_MS), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(p);

    rd_kafka_t *c = client(b.address, RD_KAFKA_CONSUMER);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(3);
    for (int i = 0; i < 3; i++)
        rd_kafka_topic_partition_list_add(parts, "orders.order.events", i)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    cr_assert_eq(rd_kafka_assign(c, parts), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(parts);
    int seen[30] = {0}, got = 0, used_partitions = 0;
    long long deadline = now_ms() + DEADLINE_MS;
    while (got < 30 && now_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (!m)
            continue;
        if (!m->err) {
            int i = -1;
            char text[32];
            snprintf(text, sizeof text, "%.*s", (int)m->len, (const char *)m->payload);
            cr_assert_eq(sscanf(text, "event %d", &i), 1);
            cr_assert(i >= 0 && i < 30 && !seen[i], "event %d twice or out of range", i);
            const void *v = NULL;
            size_t vlen = 0;
            rd_kafka_headers_t *h = NULL;
            cr_assert_eq(rd_kafka_message_headers(m, &h), RD_KAFKA_RESP_ERR_NO_ERROR);
            cr_assert_eq(rd_kafka_header_get_last(h, "es-version", &v, &vlen), 0);
            seen[i] = 1;
            used_partitions |= 1 << m->partition;
            got++;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    cr_assert_eq(got, 30);
    cr_assert_eq(used_partitions, 7, "30 keys should land on all 3 partitions");
    stop_broker(&b, SIGTERM);
}

Test(esctl_kafka, planned_topics_exist_with_the_planned_partitions_and_replication) {
    broker b = BROKER("--brokers", "3", "--plan", "orders.order:20000", "payments.payment:10:3");
    int parts = 0, rf = 0;
    topic_layout(b.address, "orders.order.events", &parts, &rf);
    cr_assert_eq(parts, 4);
    cr_assert_eq(rf, 3);
    topic_layout(b.address, "orders.order.commands", &parts, &rf);
    cr_assert_eq(parts, 4);
    topic_layout(b.address, "orders.order.events.dlq", &parts, &rf);
    cr_assert_eq(parts, 1);
    topic_layout(b.address, "payments.payment.replies", &parts, &rf);
    cr_assert_eq(parts, 3);
    topic_layout(b.address, "payments.payment.snapshots", &parts, &rf);
    cr_assert_eq(parts, 3);
    stop_broker(&b, SIGINT);
}

Test(esctl_kafka, topics_plan_counts_the_brokers_of_a_running_cluster) {
    broker b = BROKER("--brokers", "3");
    run_result r = ESCTL("topics", "plan", "--brokers", b.address, "orders.order:20000:2");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_str_eq(r.err, "");
    /* header, five topics, the schema catalogue's, summary */
    cr_assert_eq(lines(r.out), 8, "%s", r.out);
    cr_assert(strstr(r.out, "\neskit.schemas  ") && strstr(r.out, "1 (single)") &&
                  strstr(r.out, "compact"),
              "%s", r.out);
    cr_assert(strstr(r.out, "3 brokers;"), "%s", r.out);
    const char *ev = strstr(r.out, "\norders.order.events ");
    cr_assert_not_null(ev, "%s", r.out);
    cr_assert(strstr(ev, "4 (throughput)") && strstr(ev, "  3   2  ") && strstr(ev, "delete") &&
                  strstr(ev, "forever") && strstr(ev, "ok\n"),
              "%s", r.out);
    cr_assert(strstr(r.out, "orders.order.events.dlq  1 (single)"), "%s", r.out);
    run_free(&r);
    r = ESCTL("topics", "plan", "--json", "--brokers", "1", "orders.order");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert(strstr(r.out, "\"topic\": \"orders.order.snapshots\"") &&
                  strstr(r.out, "\"cleanup_policy\": \"compact\"") &&
                  strstr(r.out, "\"replication_factor\": 1, \"min_insync_replicas\": 1"),
              "%s", r.out);
    run_free(&r);
    stop_broker(&b, SIGTERM);
}

Test(esctl_kafka, apply_finds_planned_topics_ok_and_says_the_mock_cannot_create_others) {
    broker b = BROKER("--plan", "orders.order");
    char env_brokers[1100];
    snprintf(env_brokers, sizeof env_brokers, "ESKIT_BROKERS=%s", b.address);
    run_result r =
        esctl((const char *const[]){env_brokers, NULL},
              (const char *const[]){"topics", "apply", "orders.order", "payments.payment", NULL});
    /* The mock names no controller, so CreateTopics can only fail; should a later librdkafka
     * give it one, the topics are created and the run succeeds. */
    if (r.status == 0) {
        cr_assert(strstr(r.out, "created payments.payment.events"), "%s", r.out);
    } else {
        cr_assert_eq(r.status, 1, "stderr: %s", r.err);
        cr_assert(strstr(r.out, "ok      orders.order.events"), "%s", r.out);
        cr_assert(strstr(r.out, "ok      orders.order.events.dlq"), "%s", r.out);
        cr_assert(strstr(r.out, "failed  payments.payment.commands: missing"), "%s", r.out);
        cr_assert(strstr(r.out, "ok      eskit.schemas"), "the catalogue topic: %s", r.out);
        cr_assert_eq(lines(r.out), 11, "%s", r.out);
        cr_assert_eq(lines(r.err), 1, "%s", r.err);
        cr_assert(strstr(r.err, "CreateTopics") &&
                      strstr(r.err, "esctl dev-broker --plan payments.payment"),
                  "%s", r.err);
    }
    run_free(&r);
    stop_broker(&b, SIGTERM);
}

/* The README writes the verb's options first: "esctl --brokers host:9092 topics apply". */
Test(esctl_kafka, options_of_the_command_work_before_the_command_as_the_readme_writes_them) {
    broker b = BROKER("--plan", "orders.order", "--partitions", "3");
    run_result r = ESCTL("--brokers", b.address, "topics", "apply", "orders.order");
    cr_assert_eq(r.status, 1, "stdout: %s stderr: %s", r.out, r.err);
    cr_assert(strstr(r.out, "drift   orders.order.events: partitions 3, planned 1"), "%s", r.out);
    run_free(&r);
    r = ESCTL("--json", "--brokers", "1", "topics", "plan", "orders.order");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert(strstr(r.out, "\"topic\": \"orders.order.snapshots\""), "%s", r.out);
    run_free(&r);
    /* An option of another verb is still refused, naming the verb. */
    r = ESCTL("--brokers", b.address, "lag");
    cr_assert_eq(r.status, 2);
    cr_assert(strstr(r.err, "unknown option '--brokers' for 'lag'"), "%s", r.err);
    run_free(&r);
    stop_broker(&b, SIGTERM);
}

Test(esctl_kafka, apply_reports_drift_and_changes_nothing) {
    broker b = BROKER("--plan", "orders.order", "--partitions", "3");
    run_result r = ESCTL("topics", "apply", "--brokers", b.address, "orders.order");
    cr_assert_eq(r.status, 1, "stdout: %s stderr: %s", r.out, r.err);
    cr_assert(strstr(r.out, "drift   orders.order.events: partitions 3, planned 1"), "%s", r.out);
    cr_assert(strstr(r.out, "drift   orders.order.commands: partitions 3, planned 1"), "%s", r.out);
    cr_assert(strstr(r.out, "ok      orders.order.events.dlq"), "%s", r.out);
    cr_assert(strstr(r.err, "4 topics differ from the plan"), "%s", r.err);
    run_free(&r);
    int parts = 0, rf = 0;
    topic_layout(b.address, "orders.order.events", &parts, &rf);
    cr_assert_eq(parts, 3);
    r = ESCTL("topics", "apply", "--brokers", b.address, "orders.order:1:3");
    cr_assert_eq(r.status, 0, "stdout: %s stderr: %s", r.out, r.err);
    run_free(&r);
    stop_broker(&b, SIGTERM);
}

Test(esctl_kafka, apply_refuses_a_name_that_collides_with_an_existing_topic) {
    broker b = BROKER("--plan", "orders.order");
    rd_kafka_t *p = client(b.address, RD_KAFKA_PRODUCER);
    /* The mock creates a topic on first produce, as auto.create.topics.enable would. */
    cr_assert_eq(rd_kafka_producev(p, RD_KAFKA_V_TOPIC("payments_payment.events"),
                                   RD_KAFKA_V_VALUE("x", 1), RD_KAFKA_V_END),
                 RD_KAFKA_RESP_ERR_NO_ERROR);
    cr_assert_eq(rd_kafka_flush(p, DEADLINE_MS), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(p);
    run_result r = ESCTL("topics", "apply", "--brokers", b.address, "payments.payment");
    cr_assert_eq(r.status, 1);
    cr_assert(strstr(r.out, "failed  payments.payment.events: collides with existing topic "
                            "payments_payment.events"),
              "%s", r.out);
    run_free(&r);
    stop_broker(&b, SIGTERM);
}

Test(esctl_kafka, bad_arguments_exit_2_with_one_line) {
    const char *const cases[][8] = {
        {"dev-broker", "--brokers", "0", NULL},
        {"dev-broker", "--partitions", "4", NULL},
        {"dev-broker", "--plan", "Orders", NULL},
        {"dev-broker", "orders.order", NULL},
        {"topics", NULL},
        {"topics", "list", NULL},
        {"topics", "plan", NULL},
        {"topics", "plan", "orders.order:0", NULL},
        {"topics", "plan", "--consumers", "x", "orders.order", NULL},
        {"topics", "apply", "orders.order", NULL},
        {"topics", "apply", "--brokers", "3", "orders.order", NULL},
        {"topics", "apply", "--json", "--brokers", "127.0.0.1:1", "orders.order", NULL},
        {"topics", "plan", "--record-bytes", "0", "orders.order", NULL},
        {"topics", "plan", "--record-bytes", "12k", "orders.order", NULL},
        {"topics", "plan", "--records-per-day", "5", "orders.order", NULL},
        {"topics", "plan", "--record-bytes", "5", "--records-per-day", "-1", "orders.order", NULL},
        {"topics", "apply", "--from-log", "--brokers", "127.0.0.1:1", "orders.order", NULL},
        {"topics", "apply", "--record-bytes", "5", "--brokers", "127.0.0.1:1", "orders.order",
         NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        run_result r = esctl(NULL, cases[i]);
        cr_assert_eq(r.status, 2, "case %zu: status %d, stderr %s", i, r.status, r.err);
        cr_assert_eq(lines(r.err), 1, "case %zu: %s", i, r.err);
        cr_assert(strncmp(r.err, "esctl: ", 7) == 0, "case %zu: %s", i, r.err);
        cr_assert_str_eq(r.out, "");
        run_free(&r);
    }
}

Test(esctl_kafka, apply_to_a_cluster_that_is_not_there_fails_fast) {
    run_result r = ESCTL("topics", "apply", "--brokers", "127.0.0.1:1", "orders.order");
    cr_assert_eq(r.status, 1);
    cr_assert_eq(lines(r.err), 1, "%s", r.err);
    cr_assert(strstr(r.err, "cannot reach Kafka at 127.0.0.1:1"), "%s", r.err);
    run_free(&r);
}

/* Demo order events in the wire format, produced to orders.order.events. Order i is placed;
 * every third is then confirmed. Returns how many events were produced. */
static int produce_orders(const char *address, int n) {
    rd_kafka_t *p = client(address, RD_KAFKA_PRODUCER);
    int produced = 0;
    for (int i = 0; i < n; i++) {
        char id[16];
        snprintf(id, sizeof id, "o-%d", i);
        for (uint64_t v = 1; v <= (i % 3 == 0 ? 2u : 1u); v++) {
            Orders__V1__OrderPlaced placed = ORDERS__V1__ORDER_PLACED__INIT;
            Orders__V1__OrderConfirmed confirmed = ORDERS__V1__ORDER_CONFIRMED__INIT;
            placed.customer_id = "carol";
            placed.amount_cents = 100 + i;
            placed.currency = "EUR";
            const ProtobufCMessage *m = v == 1 ? &placed.base : &confirmed.base;
            uint8_t payload[256];
            size_t plen = protobuf_c_message_pack(m, payload);
            es_event_t ev = {.aggregate_type = "orders.order",
                             .aggregate_id = id,
                             .version = v,
                             .event_type = m->descriptor->name,
                             .payload = payload,
                             .payload_len = plen,
                             .occurred_at_us = es_now_us()};
            es_uuid7(ev.event_id);
            uint8_t *bytes = NULL;
            size_t len = 0;
            cr_assert_eq(es_envelope_encode(&ev, &bytes, &len, NULL), ES_OK);
            cr_assert_eq(
                rd_kafka_producev(p, RD_KAFKA_V_TOPIC("orders.order.events"),
                                  RD_KAFKA_V_KEY(id, strlen(id)), RD_KAFKA_V_VALUE(bytes, len),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                0);
            free(bytes);
            produced++;
        }
    }
    cr_assert_eq(rd_kafka_flush(p, DEADLINE_MS), 0);
    rd_kafka_destroy(p);
    return produced;
}

Test(esctl_kafka, replay_lag_and_events_work_against_kafka) {
    broker b = BROKER("--plan", "orders.order", "--partitions", "3");
    int produced = produce_orders(b.address, 30);
    char *rm = tu_path(dir, "read.db");
    char brokers[1100], readmodel[4200];
    snprintf(brokers, sizeof brokers, "ESKIT_BROKERS=%s", b.address);
    snprintf(readmodel, sizeof readmodel, "ESKIT_READMODEL_DB=%s", rm);
    const char *env[] = {brokers, readmodel, "ESKIT_TYPES_MODULES=order_saga_types", NULL};

    run_result r = TU_ESCTL_ENV(env, "replay", "order_summary");
    cr_assert_eq(r.status, 0, "replay: %s%s", r.out, r.err);
    run_free(&r);
    cr_assert_eq(tu_query_int(rm, "SELECT count(*) FROM order_summary"), 30);
    cr_assert_eq(tu_query_int(rm, "SELECT count(*) FROM order_summary WHERE status = "
                                  "'confirmed'"),
                 10);

    r = TU_ESCTL_ENV(env, "lag", "--json");
    cr_assert_eq(r.status, 0, "lag: %s", r.err);
    for (int p = 0; p < 3; p++) {
        char want[64];
        snprintf(want, sizeof want, "\"partition\": %d,", p);
        cr_assert(strstr(r.out, want) || strstr(r.out, want + 0), "no partition %d: %s", p, r.out);
    }
    cr_assert_null(strstr(r.out, "\"lag\": 1"), "%s", r.out);
    cr_assert(strstr(r.out, "\"lag\": 0}"), "%s", r.out);
    run_free(&r);

    r = TU_ESCTL_ENV(env, "events", "orders.order", "o-3");
    cr_assert_eq(r.status, 0, "events: %s", r.err);
    cr_assert(strstr(r.out, "orders.v1.OrderPlaced"), "%s", r.out);
    cr_assert(strstr(r.out, "orders.v1.OrderConfirmed"), "%s", r.out);
    cr_assert(strstr(r.out, "customer_id=\"carol\""), "decoded by the types module: %s", r.out);
    run_free(&r);

    /* The state, folded from the aggregate's events in the topic with the module's evolve. */
    r = TU_ESCTL_ENV(env, "state", "orders.order", "o-3");
    cr_assert_eq(r.status, 0, "state: %s", r.err);
    cr_expect(!strncmp(r.out, "orders.order/o-3 version 2 (orders.v1.Order)\n", 45), "%s", r.out);
    cr_expect(strstr(r.out, "\nstatus: ORDER_STATUS_CONFIRMED\n"), "%s", r.out);
    cr_expect(strstr(r.out, "\namount_cents: 103\n"), "%s", r.out);
    run_free(&r);

    r = TU_ESCTL_ENV(env, "dlq", "list");
    cr_assert_eq(r.status, 0, "dlq list: %s", r.err);
    run_free(&r);
    cr_assert_eq(produced, 40);
    free(rm);
    stop_broker(&b, SIGTERM);
}

/* One record of raw bytes, keyed id, to orders.order.events. */
static void produce_raw(const char *address, const char *id, const void *bytes, size_t len) {
    rd_kafka_t *p = client(address, RD_KAFKA_PRODUCER);
    cr_assert_eq(rd_kafka_producev(p, RD_KAFKA_V_TOPIC("orders.order.events"),
                                   RD_KAFKA_V_KEY(id, strlen(id)),
                                   RD_KAFKA_V_VALUE((void *)bytes, len),
                                   RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                 0);
    cr_assert_eq(rd_kafka_flush(p, DEADLINE_MS), 0);
    rd_kafka_destroy(p);
}

Test(esctl_kafka, verify_reads_the_events_topics_and_names_a_gap_and_an_undecodable_record) {
    broker b = BROKER("--plan", "orders.order", "--partitions", "3");
    produce_orders(b.address, 30);
    char brokers[1100];
    snprintf(brokers, sizeof brokers, "ESKIT_BROKERS=%s", b.address);
    const char *env[] = {brokers, NULL};
    run_result r = TU_ESCTL_ENV(env, "verify", "orders.order");
    cr_assert_eq(r.status, 0, "verify: %s%s", r.out, r.err);
    cr_expect(strstr(r.out, ": 40 events, 30 aggregates"), "%s", r.out);
    cr_expect(strstr(r.out, "\nok\n"), "%s", r.out);
    run_free(&r);

    /* o-1 is at version 1: version 3 skips one; and bytes that are no envelope. */
    es_event_t ev = {.aggregate_type = "orders.order",
                     .aggregate_id = "o-1",
                     .version = 3,
                     .event_type = "orders.v1.OrderConfirmed",
                     .occurred_at_us = es_now_us()};
    es_uuid7(ev.event_id);
    uint8_t *bytes = NULL;
    size_t len = 0;
    cr_assert_eq(es_envelope_encode(&ev, &bytes, &len, NULL), ES_OK);
    produce_raw(b.address, "o-1", bytes, len);
    free(bytes);
    produce_raw(b.address, "o-2", "\xff\xff", 2);
    r = TU_ESCTL_ENV(env, "verify", "orders.order");
    cr_expect_eq(r.status, 1, "verify: %s", r.out);
    cr_expect(strstr(r.out, "orders.order/o-1 version 3: versions 2 to 2 are missing"), "%s",
              r.out);
    cr_expect(strstr(r.out, "[envelope] orders.order.events["), "%s", r.out);
    cr_expect_eq(lines(r.err), 1, "%s", r.err);
    run_free(&r);
    stop_broker(&b, SIGTERM);
}

/* A record of key "o-1" (3 bytes), a value of 100 bytes and header "h" = "vvvvv" (6 bytes) at
 * ts_ms (CreateTime), produced to partition 0 of topic. */
static void produce_sized(rd_kafka_t *p, const char *topic, long long ts_ms) {
    char value[100];
    memset(value, 'x', sizeof value);
    cr_assert_eq(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(0),
                                   RD_KAFKA_V_KEY("o-1", 3), RD_KAFKA_V_VALUE(value, sizeof value),
                                   RD_KAFKA_V_HEADER("h", "vvvvv", 5), RD_KAFKA_V_TIMESTAMP(ts_ms),
                                   RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                 0);
}

/* The "storage" object of topic's line in a plan's JSON, as a fresh string. */
static char *storage_of(const char *json, const char *topic) {
    char pat[128];
    snprintf(pat, sizeof pat, "{\"topic\": \"%s\"", topic);
    const char *line = strstr(json, pat);
    cr_assert_not_null(line, "no %s in %s", topic, json);
    const char *s = strstr(line, "\"storage\": ");
    cr_assert(s && s < line + strcspn(line, "\n"), "no storage for %s in %s", topic, json);
    s += strlen("\"storage\": ");
    size_t len = strcspn(s, "\n");
    len -= s[len - 1] == ',';   /* between the array's objects */
    return strndup(s, len - 1); /* without the topic object's closing } */
}

Test(esctl_kafka, topics_plan_from_log_samples_each_topic_for_its_size_and_rate) {
    broker b = BROKER("--plan", "orders.order", "--partitions", "2");
    rd_kafka_t *p = client(b.address, RD_KAFKA_PRODUCER);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long now = (long long)ts.tv_sec * 1000, hour = 3600 * 1000;
    /* events: older than a day, with 3 records in the last day; commands: 5 records over 2
     * hours, younger than a day. */
    produce_sized(p, "orders.order.events", now - 30 * hour);
    for (int i = 3; i >= 1; i--)
        produce_sized(p, "orders.order.events", now - i * hour);
    for (int i = 0; i < 5; i++)
        produce_sized(p, "orders.order.commands", now - 3 * hour + i * hour / 2);
    cr_assert_eq(rd_kafka_flush(p, DEADLINE_MS), 0);
    rd_kafka_destroy(p);
    run_result r =
        ESCTL("topics", "plan", "--json", "--from-log", "--brokers", b.address, "orders.order");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    char *ev = storage_of(r.out, "orders.order.events");
    cr_assert_str_eq(ev,
                     "{\"kind\": \"forever\", \"rate_source\": \"measured\", \"records_measured\": "
                     "4, \"records_per_day\": 3, \"record_bytes\": 109, \"bytes_per_day\": 327, "
                     "\"bytes_retained\": null, \"bytes_per_year\": 119355}");
    char *cmd = storage_of(r.out, "orders.order.commands");
    cr_assert_str_eq(
        cmd, "{\"kind\": \"retained\", \"rate_source\": \"measured\", \"records_measured\": "
             "5, \"records_per_day\": 48, \"record_bytes\": 109, \"bytes_per_day\": 5232, "
             "\"bytes_retained\": 36624, \"bytes_per_year\": null}");
    char *rep = storage_of(r.out, "orders.order.replies");
    cr_assert(strstr(rep, "\"records_measured\": 0, \"records_per_day\": 0, \"record_bytes\": 0, "
                          "\"bytes_per_day\": 0"),
              "an empty topic has no traffic: %s", rep);
    free(ev);
    free(cmd);
    free(rep);
    run_free(&r);
    stop_broker(&b, SIGTERM);
}

Test(esctl_kafka, topics_plan_from_a_kafka_log_that_is_not_there_fails_with_one_line) {
    run_result r =
        ESCTL("topics", "plan", "--from-log", "--brokers", "127.0.0.1:1", "orders.order");
    cr_assert_eq(r.status, 1, "stderr: %s", r.err);
    cr_assert_eq(lines(r.err), 1, "%s", r.err);
    cr_assert(strstr(r.err, "orders.order.events") && strstr(r.err, "127.0.0.1:1"), "%s", r.err);
    cr_assert_str_eq(r.out, "");
    run_free(&r);
}

/* The value of the series line of text starting with series (name and labels); -1 when none. */
static double series_value(const char *text, const char *series) {
    size_t n = strlen(series);
    for (const char *line = text; line && *line;
         line = strchr(line, '\n'), line = line ? line + 1 : 0)
        if (!strncmp(line, series, n) && line[n] == ' ')
            return strtod(line + n + 1, NULL);
    return -1;
}

Test(esctl_kafka, metrics_reads_the_lag_and_the_log_series_from_the_cluster) {
    broker b = BROKER("--plan", "orders.order", "--partitions", "3");
    int first = produce_orders(b.address, 30);
    char *rm = tu_path(dir, "read.db"), *sagas = tu_path(dir, "saga.db");
    char *prom = tu_path(dir, "eskit.prom");
    char brokers[1100], readmodel[4200], sagadb[4200];
    snprintf(brokers, sizeof brokers, "ESKIT_BROKERS=%s", b.address);
    snprintf(readmodel, sizeof readmodel, "ESKIT_READMODEL_DB=%s", rm);
    snprintf(sagadb, sizeof sagadb, "ESKIT_SAGA_DB=%s", sagas);
    const char *env[] = {brokers, readmodel, sagadb, "ESKIT_TYPES_MODULES=order_saga_types", NULL};
    run_result r = TU_ESCTL_ENV(env, "replay", "order_summary");
    cr_assert_eq(r.status, 0, "replay: %s%s", r.out, r.err);
    run_free(&r);
    int later = produce_orders(b.address, 3); /* o-0 twice, o-1, o-2: the lag */

    r = TU_ESCTL_ENV(env, "metrics", "--output", prom);
    cr_assert_eq(r.status, 0, "metrics: %s", r.err);
    run_free(&r);
    char *text = read_text(prom);
    cr_assert_not_null(text);
    double lag = 0, end = 0;
    for (int p = 0; p < 3; p++) {
        char labels[128], series[192];
        snprintf(labels, sizeof labels,
                 "{projector=\"order_summary\",topic=\"orders.order.events\",partition=\"%d\"}", p);
        snprintf(series, sizeof series, "eskit_projector_checkpoint_offset%s", labels);
        double c = series_value(text, series);
        snprintf(series, sizeof series, "eskit_projector_end_offset%s", labels);
        double e = series_value(text, series);
        snprintf(series, sizeof series, "eskit_projector_lag_records%s", labels);
        double l = series_value(text, series);
        cr_expect(c >= 0 && e >= c && l == e - c, "partition %d: checkpoint %g end %g lag %g\n%s",
                  p, c, e, l, text);
        lag += l;
        end += e;
    }
    cr_expect_eq(lag, later, "%s", text);
    cr_expect_eq(end, first + later, "%s", text);
    cr_expect_eq(series_value(text, "eskit_projector_dlq_depth{projector=\"order_summary\"}"), 0,
                 "%s", text);
    cr_expect_eq(series_value(text, "eskit_log_records{topic=\"orders.order.events\"}"),
                 first + later, "%s", text);
    cr_expect_gt(series_value(text, "eskit_log_bytes{topic=\"orders.order.events\"}"),
                 (first + later) * 20, "%s", text);
    cr_expect_gt(
        series_value(text, "eskit_log_growth_bytes_per_second{topic=\"orders.order.events\"}"), 0,
        "%s", text);
    cr_expect_null(strstr(text, "eskit_saga_"), "no saga database, no saga series: %s", text);

    char *script = NULL;
    cr_assert_gt(asprintf(&script, "exec /usr/bin/promtool check metrics < '%s' 2>&1", prom), 0);
    const char *argv[] = {"/bin/sh", "-c", script, NULL};
    char *lint = NULL;
    cr_expect_eq(tu_run(argv, NULL, &lint, NULL), 0, "promtool check metrics: %s", lint);
    free(lint);
    free(script);
    free(text);
    free(prom);
    free(sagas);
    free(rm);
    stop_broker(&b, SIGTERM);
}

Test(esctl_kafka, metrics_of_a_cluster_that_is_not_there_fails_with_one_line) {
    const char *env[] = {"ESKIT_BROKERS=127.0.0.1:1", "ESKIT_TOPICS_AGGREGATES=orders.order", NULL};
    run_result r = TU_ESCTL_ENV(env, "metrics");
    cr_assert_eq(r.status, 1, "stderr: %s", r.err);
    cr_assert_eq(lines(r.err), 1, "%s", r.err);
    cr_assert(strstr(r.err, "127.0.0.1:1"), "%s", r.err);
    cr_assert_str_eq(r.out, "");
    run_free(&r);
}
