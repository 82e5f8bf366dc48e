/* The command processor's metrics and health over librdkafka's mock cluster. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "domain.h"
#include "kafkautil.h"
#include "metricsutil.h"
#include "testutil.h"

#define PARTS 3

static char *dir;
static es_config_t *cfg;
static rd_kafka_t *mock_rk;
static rd_kafka_mock_cluster_t *mock;

static void set(const char *key, const char *value) {
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, key, value, &err), ES_OK, "%s", err.message);
}

static void set_state_db(const char *name) {
    char *path = tu_path(dir, name);
    set("state.db", path);
    free(path);
}

static void setup(void) {
    mock_rk = tu_kafka_new(RD_KAFKA_PRODUCER, tu_kafka_conf());
    mock = tu_mock_demo(mock_rk, PARTS);
    dir = tu_tempdir();
    cfg = tu_config(dir, "unused.db");
    set("brokers", rd_kafka_mock_cluster_bootstraps(mock));
    set("service.name", "svc");
    set("kafka.session.timeout.ms", TU_MOCK_SESSION_TIMEOUT_MS);
    set("kafka.heartbeat.interval.ms", TU_MOCK_HEARTBEAT_INTERVAL_MS);
    set_state_db("state.db");
}

static void teardown(void) {
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_rk);
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(dir);
}

TestSuite(metrics_kafka, .init = setup, .fini = teardown, .timeout = 120);

static es_engine_t *new_engine(void) {
    es_engine_t *e = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &e, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(e, &err), ES_OK, "%s", err.message);
    return e;
}

static Orders__V1__LineItem item = {PROTOBUF_C_MESSAGE_INIT(&orders__v1__line_item__descriptor),
                                    "sku-1", 2, 1500};
static Orders__V1__LineItem *items[] = {&item};

/* n PlaceOrder commands for ids prefix-0.., in batches; currency "euro" is rejected. */
static void place_many(es_engine_t *caller, const char *prefix, size_t n, const char *currency) {
    enum { BATCH = 250 };
    static Orders__V1__PlaceOrder msg[BATCH];
    static es_command_t cmds[BATCH];
    static es_result_t res[BATCH];
    static char ids[BATCH][32];
    for (size_t done = 0; done < n;) {
        size_t k = n - done < BATCH ? n - done : BATCH;
        for (size_t i = 0; i < k; i++) {
            orders__v1__place_order__init(&msg[i]);
            msg[i].customer_id = "c-1";
            msg[i].currency = (char *)currency;
            msg[i].n_items = 1;
            msg[i].items = items;
            snprintf(ids[i], sizeof ids[i], "%s-%zu", prefix, done + i);
            cmds[i] = (es_command_t){
                .aggregate_type = "orders.order", .aggregate_id = ids[i], .message = &msg[i].base};
        }
        es_error_t err = {0};
        cr_assert_eq(es_execute_batch(caller, cmds, k, res, &err), ES_OK, "%s", err.message);
        for (size_t i = 0; i < k; i++) {
            cr_assert_eq(res[i].code, strcmp(currency, "EUR") ? ES_EREJECTED : ES_OK, "%s",
                         res[i].reason ? res[i].reason : "");
            es_result_clear(&res[i]);
        }
        done += k;
    }
}

static char *scrape(void) {
    size_t len = 0;
    cr_assert_eq(es_metrics_write(NULL, 0, &len, NULL), ES_OK);
    char *buf = malloc(len + 65536);
    cr_assert_eq(es_metrics_write(buf, len + 65536, &len, NULL), ES_OK);
    return buf;
}

#define SVC "{service=\"svc\"}"

Test(metrics_kafka, a_processor_counts_commands_replies_restores_and_partitions) {
    tu_proc *pr = tu_proc_start(cfg, new_engine());
    es_engine_t *caller = new_engine();
    place_many(caller, "o", 3, "EUR");
    place_many(caller, "bad", 1, "euro");
    char *text = scrape();
    cr_assert_eq(mx_value(text, "eskit_processor_commands_total" SVC), 4, "%s", text);
    cr_assert_eq(mx_value(text, "eskit_processor_replies_sent_total" SVC), 4);
    cr_assert_eq(mx_value(text, "eskit_processor_produce_errors_total" SVC), 0);
    cr_assert_eq(mx_value(text, "eskit_processor_ready" SVC), 1);
    cr_assert_eq(mx_value(text, "eskit_processor_partitions_owned" SVC), 3 * PARTS);
    cr_assert_eq(mx_value(text, "eskit_processor_partitions_restoring" SVC), 0);
    cr_assert_eq(mx_value(text, "eskit_processor_restores_total" SVC), 3 * PARTS);
    cr_assert_eq(mx_value(text, "eskit_processor_restore_duration_seconds_count" SVC), 3 * PARTS);
    cr_assert_eq(mx_value(text, "eskit_processor_restore_running_seconds" SVC), 0);
    /* the processor's local engine executed them */
    cr_assert_eq(mx_value(text, "eskit_commands_total{aggregate_type=\"orders.order\",outcome="
                                "\"accepted\"}"),
                 3);
    cr_assert_eq(mx_value(text, "eskit_commands_total{aggregate_type=\"orders.order\",outcome="
                                "\"rejected\"}"),
                 1);
    free(text);
    es_engine_destroy(caller);
    tu_proc_stop(pr);
}

typedef struct prober {
    int port;
    _Atomic int stop;
    int saw_not_joined, saw_restoring, saw_ok_after_restoring, saw_error;
    char restoring_body[4096];
} prober;

static void *probe(void *opaque) {
    prober *pb = opaque;
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/healthz", pb->port);
    while (!pb->stop) {
        char *body = NULL;
        long status = mx_http(url, NULL, &body, NULL, 0);
        if (!status)
            pb->saw_error++;
        if (status == 503 && strstr(body, "not in consumer group"))
            pb->saw_not_joined = 1;
        if (status == 503 && strstr(body, "restoring")) {
            pb->saw_restoring = 1;
            snprintf(pb->restoring_body, sizeof pb->restoring_body, "%s", body);
        }
        if (status == 200 && pb->saw_restoring)
            pb->saw_ok_after_restoring = 1;
        free(body);
        usleep(500);
    }
    return NULL;
}

Test(metrics_kafka, healthz_is_503_while_the_processor_restores_and_200_after) {
    /* a log to restore: 4,000 events on the orders partitions */
    tu_proc *first = tu_proc_start(cfg, new_engine());
    es_engine_t *caller = new_engine();
    place_many(caller, "o", 4000, "EUR");
    es_engine_destroy(caller);
    tu_proc_stop(first);

    set_state_db("fresh.db"); /* a new owner: everything is restored from the topics */
    set("metrics.listen", "127.0.0.1:0");
    set("kafka.max.partition.fetch.bytes", "16384"); /* restores in many fetches */
    es_engine_t *engine = new_engine();
    es_processor_t *p = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_processor_new(cfg, engine, &p, &err), ES_OK, "%s", err.message);
    prober pb = {.port = es_metrics_port()};
    cr_assert_gt(pb.port, 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, probe, &pb), 0);
    char health[1024];
    int64_t deadline = es_now_us() + 60 * 1000000LL;
    while (!es_metrics_health(health, sizeof health) && es_now_us() < deadline)
        cr_assert_eq(es_processor_poll(p, 50, NULL, &err), ES_OK, "%s", err.message);
    cr_assert_str_eq(health, "ok\n");
    for (int i = 0; i < 200 && !pb.saw_ok_after_restoring; i++)
        usleep(10000);
    pb.stop = 1;
    pthread_join(t, NULL);
    cr_assert(pb.saw_not_joined, "/healthz never said the processor was not in its group yet");
    cr_assert(pb.saw_restoring, "/healthz never answered 503 during the restore");
    cr_assert(strstr(pb.restoring_body, "processor svc: restoring"), "%s", pb.restoring_body);
    cr_assert(pb.saw_ok_after_restoring, "/healthz did not answer 200 after the restore");
    cr_assert_eq(pb.saw_error, 0);
    char *text = scrape();
    cr_assert_eq(mx_value(text, "eskit_processor_records_imported_total{service=\"svc\",kind="
                                "\"event\"}"),
                 4000, "%s", text);
    free(text);
    es_processor_destroy(p);
    es_engine_destroy(engine);
    cr_assert_eq(es_metrics_port(), 0);
}
