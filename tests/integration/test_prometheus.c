/*
 * A real Prometheus server (Debian's prometheus, started here on loopback with a config this
 * test writes) scrapes the order saga demo running as a service (order_saga --stay --metrics),
 * embedded and over the dev broker, and its HTTP query API must give back what the test did:
 * the commands it executed (accepted and rejected), the events each projector applied, lag 0
 * after catch-up, DLQ depth 1 after one poison event, and the sagas by their final state.
 * promtool check metrics must pass on every exposition, and a scrape during shutdown must not
 * crash the service.
 */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "domain.h"
#include "kafkautil.h"
#include "metricsutil.h"
#include "testutil.h"

#define PROMETHEUS "/usr/bin/prometheus"
#define PROMTOOL "/usr/bin/promtool"
#define MAX_TARGETS 8
#define ACCEPTED 5 /* Restock commands the test executes */
#define REJECTED 2 /* Restock of 0 units: rejected */

static char *dir;
static pid_t children[16];
static size_t n_children;
static int prom_port;

static void setup(void) {
    tu_unset_eskit_env();
    dir = tu_tempdir();
    n_children = 0;
    cr_assert(access(PROMETHEUS, X_OK) == 0 && access(PROMTOOL, X_OK) == 0,
              "Prometheus is not installed (Debian package prometheus); run tools/install-deps.sh");
}

/* Whatever is still running goes (the test failed part way). */
static void teardown(void) {
    for (size_t i = 0; i < n_children; i++)
        if (children[i] > 0) {
            kill(children[i], SIGKILL);
            waitpid(children[i], NULL, 0);
        }
    tu_rmtree(dir);
    free(dir);
}

TestSuite(prometheus, .init = setup, .fini = teardown, .timeout = 240);

static char *path_in(const char *name) {
    return tu_path(dir, name);
}

/* Starts argv with stdout and stderr to dir/log; returns its index in children. */
static size_t spawn(const char *const *argv, const char *log) {
    char *path = path_in(log);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0)
            _exit(126);
        dup2(fd, 1);
        dup2(fd, 2);
        if (chdir(dir) != 0)
            _exit(126);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    free(path);
    children[n_children] = pid;
    return n_children++;
}

static char *read_log(const char *log) {
    char *path = path_in(log);
    FILE *f = fopen(path, "r");
    free(path);
    if (!f)
        return strdup("");
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return strdup(buf);
}

/* Waits until the child's log holds needle; fails when it exits first or after timeout_s. */
static void await_line(size_t child, const char *log, const char *needle, int timeout_s) {
    for (int i = 0; i < timeout_s * 20; i++) {
        char *text = read_log(log);
        int found = strstr(text, needle) != NULL;
        if (found) {
            free(text);
            return;
        }
        int status;
        if (waitpid(children[child], &status, WNOHANG) == children[child]) {
            children[child] = 0;
            cr_assert_fail("%s exited (status %d) before it wrote '%s':\n%s", log, status, needle,
                           text);
        }
        free(text);
        usleep(50000);
    }
    char *text = read_log(log);
    cr_assert_fail("%s did not write '%s' within %d s:\n%s", log, needle, timeout_s, text);
}

/* SIGTERM, then its exit status (killed: -signal). */
static int stop_child(size_t child) {
    int status = 0;
    kill(children[child], SIGTERM);
    cr_assert_eq(waitpid(children[child], &status, 0), children[child]);
    children[child] = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* Prometheus scraping the targets (127.0.0.1:port) every 500 ms. */
static size_t start_prometheus(const int *ports, size_t n) {
    char *conf = path_in("prometheus.yml");
    FILE *f = fopen(conf, "w");
    cr_assert_not_null(f);
    fprintf(f, "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n"
               "scrape_configs:\n  - job_name: eskit\n    static_configs:\n      - targets: [");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s'127.0.0.1:%d'", i ? ", " : "", ports[i]);
    fprintf(f, "]\n");
    fclose(f);
    prom_port = free_port();
    char listen[64], cfg_arg[4200], data_arg[4200];
    snprintf(listen, sizeof listen, "--web.listen-address=127.0.0.1:%d", prom_port);
    snprintf(cfg_arg, sizeof cfg_arg, "--config.file=%s", conf);
    char *data = path_in("prometheus-data");
    snprintf(data_arg, sizeof data_arg, "--storage.tsdb.path=%s", data);
    free(data);
    free(conf);
    const char *const argv[] = {PROMETHEUS, cfg_arg, data_arg, listen, "--log.level=warn", NULL};
    size_t child = spawn(argv, "prometheus.log");
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/-/ready", prom_port);
    for (int i = 0; i < 600 && mx_http(url, NULL, NULL, NULL, 0) != 200; i++)
        usleep(50000);
    cr_assert_eq(mx_http(url, NULL, NULL, NULL, 0), 200, "Prometheus did not become ready:\n%s",
                 read_log("prometheus.log"));
    return child;
}

/* The value of an instant query that gives one sample; NAN when it gives none. */
static double query(const char *expr) {
    CURL *c = curl_easy_init();
    char *q = curl_easy_escape(c, expr, 0);
    char url[2048];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/api/v1/query?query=%s", prom_port, q);
    curl_free(q);
    curl_easy_cleanup(c);
    char *json = NULL;
    cr_assert_eq(mx_http(url, NULL, &json, NULL, 0), 200, "query %s: %s", expr, json ? json : "");
    double v = NAN;
    const char *r = strstr(json, "\"result\":[");
    const char *val = r ? strstr(r, "\"value\":[") : NULL;
    const char *num = val ? strstr(val, ",\"") : NULL;
    if (num)
        v = strtod(num + 2, NULL);
    free(json);
    return v;
}

/* Waits until query(expr) == want (Prometheus scrapes every 500 ms); the last value. */
static double await_value(const char *expr, double want, int timeout_s) {
    double v = NAN;
    for (int i = 0; i < timeout_s * 10; i++) {
        v = query(expr);
        if (v == want)
            return v;
        usleep(100000);
    }
    return v;
}

#define ASSERT_PROM(expr, want)                                                                    \
    do {                                                                                           \
        double got_ = await_value(expr, want, 30);                                                 \
        cr_assert_eq(got_, (double)(want), "Prometheus: %s is %g, not %g", expr, got_,             \
                     (double)(want));                                                              \
    } while (0)

/* A value that stays put: the same twice a second apart (Prometheus scrapes every 500 ms). */
static double settled(const char *expr) {
    double last = NAN;
    for (int i = 0; i < 60; i++) {
        double v = query(expr);
        if (!isnan(v) && v == last)
            return v;
        last = v;
        usleep(1000000);
    }
    cr_assert_fail("%s never settled (last %g)", expr, last);
    return last;
}

/* promtool check metrics on what a target serves. */
static void promtool_check(int port) {
    char url[64], *text = NULL;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
    cr_assert_eq(mx_http(url, NULL, &text, NULL, 0), 200);
    char *file = path_in("exposition.txt");
    FILE *f = fopen(file, "w");
    fputs(text, f);
    fclose(f);
    char cmd[4300];
    snprintf(cmd, sizeof cmd, PROMTOOL " check metrics < '%s' 2>&1", file);
    FILE *p = popen(cmd, "r");
    char out[4096] = "";
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    cr_assert_eq(status, 0, "promtool check metrics failed on port %d:\n%s", port, out);
    free(file);
    free(text);
}

/* A thread scraping a target as fast as it can, to race the service's shutdown. */
typedef struct hammer {
    int port;
    _Atomic int stop;
    pthread_t thread;
    int ok;
} hammer;

static void *hammer_run(void *opaque) {
    hammer *h = opaque;
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", h->port);
    while (!h->stop)
        h->ok += mx_http(url, NULL, NULL, NULL, 0) == 200;
    return NULL;
}

/* The test's own commands: ACCEPTED restocks of SKUs of its own, REJECTED restocks of 0. */
static void execute_commands(es_engine_t *engine) {
    for (int i = 0; i < ACCEPTED + REJECTED; i++) {
        Inventory__V1__Restock r = INVENTORY__V1__RESTOCK__INIT;
        r.quantity = i < ACCEPTED ? 7 : 0;
        char sku[32];
        snprintf(sku, sizeof sku, "test-sku-%d", i);
        es_command_t cmd = {
            .aggregate_type = "inventory.item", .aggregate_id = sku, .message = &r.base};
        es_error_t err = {0};
        cr_assert_eq(es_execute(engine, &cmd, NULL, &err), i < ACCEPTED ? ES_OK : ES_EREJECTED,
                     "%s", err.message);
    }
}

/* One OrderPlaced event whose payload does not decode: the projectors park it. Embedded it is
 * appended to the store; on Kafka produced to orders.order.events as an independent client. */
static const uint8_t junk[] = {0xff, 0xff, 0xff, 0x01};

static void append_poison(es_store_t *store) {
    es_new_event_t ev = {
        .event_type = "orders.v1.OrderPlaced", .payload = junk, .payload_len = sizeof junk};
    es_error_t err = {0};
    cr_assert_eq(
        es_store_append(store, "orders.order", "poison-1", ES_EXPECT_ANY, 0, &ev, 1, NULL, &err),
        ES_OK, "%s", err.message);
}

static void produce_poison(const char *brokers) {
    es_event_t ev = {.aggregate_type = "orders.order",
                     .aggregate_id = "poison-1",
                     .version = 1,
                     .event_type = "orders.v1.OrderPlaced",
                     .payload = junk,
                     .payload_len = sizeof junk,
                     .occurred_at_us = es_now_us()};
    es_uuid7(ev.event_id);
    uint8_t *value = NULL;
    size_t len = 0;
    es_error_t err = {0};
    cr_assert_eq(es_envelope_encode(&ev, &value, &len, &err), ES_OK, "%s", err.message);
    rd_kafka_t *p = tu_kafka_new(RD_KAFKA_PRODUCER, tu_kafka_producer_conf(brokers));
    cr_assert_eq(rd_kafka_producev(p, RD_KAFKA_V_TOPIC("orders.order.events"),
                                   RD_KAFKA_V_KEY("poison-1", 8), RD_KAFKA_V_VALUE(value, len),
                                   RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                 RD_KAFKA_RESP_ERR_NO_ERROR);
    cr_assert_eq(rd_kafka_flush(p, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(p);
    es_free(value);
}

static int count_event(const es_event_t *ev, void *opaque) {
    (void)ev;
    (*(long *)opaque)++;
    return 0;
}

/* The orders.order events the log holds, as a reader of the log counts them. */
static long order_events(es_store_t *store) {
    static const char *const types[] = {"orders.order", NULL};
    long n = 0;
    es_error_t err = {0};
    cr_assert_eq(es_store_read_log(store, types, 0, 0, count_event, &n, NULL, &err), ES_OK, "%s",
                 err.message);
    return n;
}

/* Sagas in state as esctl sagas list reads them from the saga database. */
static int sagas_in(const char *saga_db, const char *state) {
    tu_result r = TU_ESCTL("--saga-db", saga_db, "sagas", "list", "--state", state, "--json");
    cr_assert_eq(r.status, 0, "%s", r.err);
    int n = 0;
    for (const char *p = r.out; (p = strstr(p, "\"state\":")); p++)
        n++;
    tu_result_free(&r);
    return n;
}

/* What both runs check once the demo stays and the test acted: the projectors and the sagas
 * as Prometheus has them. */
static void check_values(es_store_t *store, const char *saga_db) {
    long events = order_events(store); /* the poison event among them */
    ASSERT_PROM("sum(eskit_projector_events_parked_total{projector=\"order_summary\"})", 1);
    ASSERT_PROM("sum(eskit_projector_events_applied_total{projector=\"order_summary\"})",
                events - 1);
    ASSERT_PROM("sum(eskit_projector_events_applied_total{projector=\"customer_orders\"})",
                events - 1);
    ASSERT_PROM("sum(eskit_projector_dlq_depth{projector=\"order_summary\"})", 1);
    ASSERT_PROM("sum(eskit_projector_dlq_depth{projector=\"customer_orders\"})", 1);
    ASSERT_PROM("max(eskit_projector_lag_records)", 0);
    ASSERT_PROM("sum(eskit_saga_instances{state=\"completed\"})", sagas_in(saga_db, "completed"));
    ASSERT_PROM("sum(eskit_saga_instances{state=\"aborted\"})", sagas_in(saga_db, "aborted"));
    ASSERT_PROM("sum(eskit_saga_instances{state=\"running\"})", 0);
    ASSERT_PROM("sum(eskit_saga_instances{state=\"completed\"})", 3); /* the story's */
    ASSERT_PROM("sum(eskit_saga_instances{state=\"aborted\"})", 3);
    ASSERT_PROM("min(up)", 1);
}

Test(prometheus, scrapes_the_embedded_demo_service_and_gives_back_what_the_test_did) {
    char *db = path_in("events.db"), *read = path_in("read.db"), *saga = path_in("saga.db");
    int demo_port = free_port(), test_port;
    char demo_listen[64];
    snprintf(demo_listen, sizeof demo_listen, "127.0.0.1:%d", demo_port);
    const char *const demo[] = {DEMO_PATH,   "--db",      db,   "--readmodel",
                                read,        "--saga-db", saga, "--metrics",
                                demo_listen, "--stay",    NULL};
    size_t demo_child = spawn(demo, "demo.log");
    await_line(demo_child, "demo.log", "order_saga: staying:", 120);

    /* The test is a second writer on the same log, a service with metrics of its own. */
    es_config_t *cfg = tu_config(dir, "events.db");
    cr_assert_eq(es_config_set(cfg, "metrics.listen", "127.0.0.1:0", NULL), ES_OK);
    es_engine_t *engine = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(engine, &err), ES_OK, "%s", err.message);
    test_port = es_metrics_port();
    int ports[] = {demo_port, test_port};
    size_t prom = start_prometheus(ports, 2);
    execute_commands(engine);
    append_poison(es_engine_store(engine));

    char expr[512];
    snprintf(expr, sizeof expr,
             "sum(eskit_commands_total{aggregate_type=\"inventory.item\",outcome=\"accepted\","
             "instance=\"127.0.0.1:%d\"})",
             test_port);
    ASSERT_PROM(expr, ACCEPTED);
    snprintf(expr, sizeof expr,
             "sum(eskit_commands_total{aggregate_type=\"inventory.item\",outcome=\"rejected\","
             "instance=\"127.0.0.1:%d\"})",
             test_port);
    ASSERT_PROM(expr, REJECTED);
    check_values(es_engine_store(engine), saga);
    promtool_check(demo_port);
    promtool_check(test_port);

    hammer h = {.port = demo_port};
    cr_assert_eq(pthread_create(&h.thread, NULL, hammer_run, &h), 0);
    usleep(200000);
    int status = stop_child(demo_child);
    h.stop = 1;
    pthread_join(h.thread, NULL);
    cr_assert_eq(status, 0, "the demo exited %d while scraped:\n%s", status, read_log("demo.log"));
    cr_assert_gt(h.ok, 0);
    char *out = read_log("demo.log");
    cr_assert(strstr(out, "order_summary parked orders.order.events"), "%s", out);
    free(out);
    cr_assert_eq(stop_child(prom), 0);
    es_engine_destroy(engine);
    es_config_destroy(cfg);
    free(db);
    free(read);
    free(saga);
}

Test(prometheus, scrapes_the_demo_services_over_the_dev_broker_and_gives_back_what_the_test_did) {
    const char *demo_path = DEMO_PATH;
    char *bootstrap = path_in("bootstrap");
    const char *const broker[] = {
        ESCTL_PATH, "dev-broker",     "--bootstrap-file", bootstrap,
        "--plan",   "orders.order",   "--plan",           "payments.payment",
        "--plan",   "inventory.item", "--plan",           "orders.fulfilment.saga",
        NULL};
    size_t broker_child = spawn(broker, "broker.log");
    char brokers[256] = "";
    for (int i = 0; i < 200 && !brokers[0]; i++) {
        FILE *f = fopen(bootstrap, "r");
        if (f) {
            if (!fgets(brokers, sizeof brokers, f))
                brokers[0] = '\0';
            fclose(f);
        }
        brokers[strcspn(brokers, "\n")] = '\0';
        if (!brokers[0])
            usleep(50000);
    }
    cr_assert(brokers[0], "the dev broker wrote no address:\n%s", read_log("broker.log"));

    static const char *const types[] = {"orders.order", "payments.payment", "inventory.item"};
    int ports[MAX_TARGETS];
    size_t n_ports = 0, services[4];
    char listen[4][64], state[3][4200];
    char *saga = path_in("saga.db"), *read = path_in("read.db");
    for (int i = 0; i < 4; i++) {
        ports[n_ports] = free_port();
        snprintf(listen[i], sizeof listen[i], "127.0.0.1:%d", ports[n_ports++]);
        char log[32];
        snprintf(log, sizeof log, "service%d.log", i);
        if (i < 3) {
            snprintf(state[i], sizeof state[i], "%s/%s.state.db", dir, types[i]);
            const char *const argv[] = {demo_path, "--brokers", brokers,     "--serve", types[i],
                                        "--state", state[i],    "--metrics", listen[i], NULL};
            services[i] = spawn(argv, log);
        } else {
            const char *const argv[] = {demo_path, "--brokers", brokers,   "--saga", "--saga-db",
                                        saga,      "--metrics", listen[i], NULL};
            services[i] = spawn(argv, log);
        }
    }
    for (int i = 0; i < 4; i++) {
        char log[32];
        snprintf(log, sizeof log, "service%d.log", i);
        await_line(services[i], log, ": ready", 60);
    }
    int driver_port = ports[n_ports++] = free_port();
    char driver_listen[64];
    snprintf(driver_listen, sizeof driver_listen, "127.0.0.1:%d", driver_port);
    const char *const driver[] = {demo_path,   "--brokers",   brokers,  "--readmodel", read,
                                  "--metrics", driver_listen, "--stay", NULL};
    size_t driver_child = spawn(driver, "driver.log");
    size_t prom = start_prometheus(ports, n_ports);
    await_line(driver_child, "driver.log", "order_saga: staying:", 120);

    /* The inventory processor counted the story's commands too: the test's come on top. */
    char inventory[64];
    snprintf(inventory, sizeof inventory, "127.0.0.1:%d", ports[2]);
    char expr[512];
    snprintf(expr, sizeof expr,
             "sum(eskit_commands_total{aggregate_type=\"inventory.item\",outcome=\"accepted\"})");
    double accepted_before = settled(expr);
    double rejected_before = settled("sum(eskit_commands_total{aggregate_type=\"inventory.item\","
                                     "outcome=\"rejected\"})");

    es_config_t *cfg = tu_config(dir, "unused.db");
    cr_assert_eq(es_config_set(cfg, "brokers", brokers, NULL), ES_OK);
    cr_assert_eq(es_config_set(cfg, "service.name", "prometheus-test", NULL), ES_OK);
    es_engine_t *engine = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(engine, &err), ES_OK, "%s", err.message);
    execute_commands(engine);
    produce_poison(brokers);

    ASSERT_PROM(expr, accepted_before + ACCEPTED);
    ASSERT_PROM("sum(eskit_commands_total{aggregate_type=\"inventory.item\",outcome=\"rejected\"})",
                rejected_before + REJECTED);
    /* what an instance label of the inventory processor says is its own */
    snprintf(expr, sizeof expr,
             "sum(eskit_commands_total{aggregate_type=\"inventory.item\",instance=\"%s\"})",
             inventory);
    ASSERT_PROM(expr, accepted_before + ACCEPTED + rejected_before + REJECTED);
    ASSERT_PROM("min(eskit_processor_ready)", 1);
    check_values(es_engine_store(engine), saga);
    for (size_t i = 0; i < n_ports; i++)
        promtool_check(ports[i]);

    hammer h = {.port = driver_port};
    cr_assert_eq(pthread_create(&h.thread, NULL, hammer_run, &h), 0);
    usleep(200000);
    int status = stop_child(driver_child);
    h.stop = 1;
    pthread_join(h.thread, NULL);
    cr_assert_eq(status, 0, "the driver exited %d while scraped:\n%s", status,
                 read_log("driver.log"));
    es_engine_destroy(engine);
    es_config_destroy(cfg);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(stop_child(services[i]), 0);
    cr_assert_eq(stop_child(prom), 0);
    stop_child(broker_child);
    free(bootstrap);
    free(saga);
    free(read);
}
