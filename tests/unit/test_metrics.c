/* The metrics registry, its exposition, the engine's counters and the metrics.listen server. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "domain.h"
#include "metricsutil.h"
#include "testutil.h"

static char *dir;

static void setup(void) {
    dir = tu_tempdir();
}

static void teardown(void) {
    tu_rmtree(dir);
    free(dir);
}

TestSuite(metrics, .init = setup, .fini = teardown);

/* How many times needle occurs in text. */
static size_t occurrences(const char *text, const char *needle) {
    size_t k = 0, n = strlen(needle);
    for (const char *p = text; (p = strstr(p, needle)); p += n)
        k++;
    return k;
}

static char *scrape(void) {
    size_t len = 0;
    cr_assert_eq(es_metrics_write(NULL, 0, &len, NULL), ES_OK);
    char *buf = malloc(len + 4096); /* room for a scrape that grew in between */
    es_error_t err = {0};
    cr_assert_eq(es_metrics_write(buf, len + 4096, &len, &err), ES_OK, "%s", err.message);
    cr_assert_eq(strlen(buf), len);
    return buf;
}

static es_engine_t *engine_on(const char *name, const char *key, const char *value) {
    es_config_t *cfg = tu_config(dir, name);
    es_error_t err = {0};
    if (key)
        cr_assert_eq(es_config_set(cfg, key, value, &err), ES_OK, "%s", err.message);
    es_engine_t *e = NULL;
    cr_assert_eq(es_engine_new(cfg, &e, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(e, &err), ES_OK, "%s", err.message);
    es_config_destroy(cfg);
    return e;
}

static Orders__V1__LineItem item = {PROTOBUF_C_MESSAGE_INIT(&orders__v1__line_item__descriptor),
                                    "sku-1", 2, 1500};
static Orders__V1__LineItem *items[] = {&item};

static es_err place(es_engine_t *e, const char *id, const char *currency, es_expect expect) {
    Orders__V1__PlaceOrder msg;
    orders__v1__place_order__init(&msg);
    msg.customer_id = "c-1";
    msg.currency = (char *)currency;
    msg.n_items = 1;
    msg.items = items;
    es_command_t c = {.aggregate_type = "orders.order",
                      .aggregate_id = id,
                      .message = &msg.base,
                      .expect = expect};
    return es_execute(e, &c, NULL, NULL);
}

#define ORDER(outcome)                                                                             \
    "eskit_commands_total{aggregate_type=\"orders.order\",outcome=\"" outcome "\"}"

Test(metrics, an_engine_counts_its_commands_by_type_and_outcome_and_its_events) {
    es_engine_t *e = engine_on("m.db", NULL, NULL);
    cr_assert_eq(place(e, "o-1", "EUR", ES_EXPECT_ANY), ES_OK);
    cr_assert_eq(place(e, "o-2", "EUR", ES_EXPECT_ANY), ES_OK);
    cr_assert_eq(place(e, "o-3", "euro", ES_EXPECT_ANY), ES_EREJECTED);
    cr_assert_eq(place(e, "o-1", "EUR", ES_EXPECT_NO_STREAM), ES_ECONFLICT);
    char *text = scrape();
    cr_assert_eq(mx_value(text, ORDER("accepted")), 2, "%s", text);
    cr_assert_eq(mx_value(text, ORDER("rejected")), 1);
    cr_assert_eq(mx_value(text, ORDER("conflict")), 1);
    cr_assert_eq(mx_value(text, ORDER("error")), 0);
    cr_assert_eq(mx_value(text, "eskit_events_appended_total{aggregate_type=\"orders.order\"}"), 2);
    cr_assert_eq(mx_value(text, "eskit_command_duration_seconds_count{aggregate_type=\"orders."
                                "order\"}"),
                 4);
    cr_assert_eq(mx_value(text, "eskit_command_batch_size_count"), 4);
    cr_assert_eq(mx_value(text, "eskit_command_batch_size_bucket{le=\"1\"}"), 4);
    /* snapshot.every = 1: each accepted command wrote one */
    cr_assert_eq(mx_value(text, "eskit_snapshot_writes_total{aggregate_type=\"orders.order\"}"), 2);
    /* the other types are there, at 0: a dashboard sees them before their first command */
    cr_assert_eq(mx_value(text, "eskit_commands_total{aggregate_type=\"payments.payment\","
                                "outcome=\"accepted\"}"),
                 0);
    cr_assert(strstr(text, "eskit_build_info{version=\""));
    free(text);
    es_engine_destroy(e);
    text = scrape();
    cr_assert(isnan(mx_value(text, ORDER("accepted"))), "a destroyed engine left its series");
    free(text);
}

Test(metrics, every_family_has_one_help_and_type_line_and_two_engines_add_up) {
    es_engine_t *a = engine_on("a.db", NULL, NULL), *b = engine_on("b.db", NULL, NULL);
    cr_assert_eq(place(a, "o-1", "EUR", ES_EXPECT_ANY), ES_OK);
    cr_assert_eq(place(b, "o-1", "EUR", ES_EXPECT_ANY), ES_OK);
    cr_assert_eq(place(b, "o-2", "EUR", ES_EXPECT_ANY), ES_OK);
    char *text = scrape();
    cr_assert_eq(mx_value(text, ORDER("accepted")), 3, "%s", text);
    cr_assert_eq(occurrences(text, "# TYPE eskit_commands_total counter\n"), 1);
    cr_assert_eq(occurrences(text, "# HELP eskit_commands_total "), 1);
    cr_assert_eq(mx_count(text, ORDER("accepted") " "), 1);
    /* a histogram's buckets are cumulative and end with +Inf == _count */
    double inf = mx_value(text, "eskit_command_duration_seconds_bucket{aggregate_type=\"orders."
                                "order\",le=\"+Inf\"}");
    cr_assert_eq(inf, 3);
    free(text);
    es_engine_destroy(a);
    es_engine_destroy(b);
}

Test(metrics, metrics_enabled_false_registers_nothing) {
    es_engine_t *e = engine_on("off.db", "metrics.enabled", "false");
    cr_assert_eq(place(e, "o-1", "EUR", ES_EXPECT_ANY), ES_OK);
    char *text = scrape();
    cr_assert(!strstr(text, "eskit_commands_total"), "%s", text);
    free(text);
    es_engine_destroy(e);
}

Test(metrics, a_buffer_too_small_gets_nothing_and_the_length_it_needs) {
    es_engine_t *e = engine_on("s.db", NULL, NULL);
    char small[64];
    size_t len = 0;
    es_error_t err = {0};
    cr_assert_eq(es_metrics_write(small, sizeof small, &len, &err), ES_EINVAL);
    cr_assert_str_eq(small, "");
    cr_assert_gt(len, sizeof small);
    cr_assert(strstr(err.message, "larger"), "%s", err.message);
    es_engine_destroy(e);
}

Test(metrics, metrics_listen_that_is_not_host_port_is_refused_naming_the_key) {
    const char *bad[] = {
        "9464", "localhost", ":9464", "host:", "host:99999", "host:12ab", "::1:9464", "a b:1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        es_config_t *cfg = es_config_new();
        es_error_t err = {0};
        cr_assert_eq(es_config_set(cfg, "metrics.listen", bad[i], &err), ES_EINVAL, "%s", bad[i]);
        cr_assert(strstr(err.message, "metrics.listen"), "%s", err.message);
        es_config_destroy(cfg);
    }
    es_config_t *cfg = es_config_new();
    cr_assert_eq(es_config_set(cfg, "metrics.listen", "[::1]:0", NULL), ES_OK);
    cr_assert_eq(es_config_set(cfg, "metrics.listen", "127.0.0.1:9464", NULL), ES_OK);
    es_config_destroy(cfg);
}

/* A request to this process's server on port; the body in *b (freed and replaced). */
static long get(int port, const char *path, const char *method, char **b, char *ctype) {
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    free(*b);
    *b = NULL;
    return mx_http(url, method, b, ctype, 128);
}

Test(metrics, metrics_listen_serves_metrics_and_healthz_while_a_component_lives) {
    es_engine_t *e = engine_on("h.db", "metrics.listen", "127.0.0.1:0");
    int port = es_metrics_port();
    cr_assert_gt(port, 0);
    cr_assert_eq(place(e, "o-1", "EUR", ES_EXPECT_ANY), ES_OK);
    char *b = NULL;
    char ctype[128];
    cr_assert_eq(get(port, "/metrics", NULL, &b, ctype), 200);
    cr_assert_str_eq(ctype, ES_METRICS_CONTENT_TYPE);
    cr_assert_eq(mx_value(b, ORDER("accepted")), 1, "%s", b);
    cr_assert_eq(get(port, "/healthz", NULL, &b, NULL), 200);
    cr_assert_str_eq(b, "ok\n");
    cr_assert_eq(get(port, "/nothing", NULL, &b, NULL), 404);
    cr_assert_eq(get(port, "/metrics", "POST", &b, NULL), 405);
    /* a second component on the same address shares the server */
    es_engine_t *e2 = engine_on("h2.db", "metrics.listen", "127.0.0.1:0");
    es_engine_destroy(e);
    cr_assert_eq(get(es_metrics_port(), "/metrics", NULL, &b, NULL), 200);
    es_engine_destroy(e2);
    cr_assert_eq(es_metrics_port(), 0, "the server outlived its last component");
    free(b);
}

Test(metrics, a_port_in_use_fails_the_component_naming_the_key_and_the_address) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(fd, 1), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    char listen_at[64];
    snprintf(listen_at, sizeof listen_at, "127.0.0.1:%d", ntohs(sa.sin_port));
    es_config_t *cfg = tu_config(dir, "p.db");
    cr_assert_eq(es_config_set(cfg, "metrics.listen", listen_at, NULL), ES_OK);
    es_engine_t *e = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &e, &err), ES_EINVAL);
    cr_assert_null(e);
    cr_assert(strstr(err.message, "metrics.listen") && strstr(err.message, listen_at) &&
                  strstr(err.message, "in use"),
              "%s", err.message);
    es_config_destroy(cfg);
    close(fd);
}

static void *scrape_loop(void *opaque) {
    _Atomic int *stop = opaque;
    while (!*stop) {
        size_t len = 0;
        char buf[65536];
        (void)es_metrics_write(buf, sizeof buf, &len, NULL);
        (void)es_metrics_health(buf, sizeof buf);
    }
    return NULL;
}

Test(metrics, scrapes_during_creation_and_destruction_are_safe) {
    _Atomic int stop = 0;
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, scrape_loop, &stop), 0);
    for (int i = 0; i < 30; i++) {
        char name[32];
        snprintf(name, sizeof name, "c%d.db", i);
        es_engine_t *e = engine_on(name, NULL, NULL);
        cr_assert_eq(place(e, "o-1", "EUR", ES_EXPECT_ANY), ES_OK);
        es_engine_destroy(e);
    }
    stop = 1;
    pthread_join(t, NULL);
}

/* es_metrics_write_offline reads files, not the registry: a live engine's counters stay out
 * of it, and the log it wrote is in it. */
Test(metrics, the_offline_exposition_reads_the_files_and_not_the_live_components) {
    es_engine_t *e = engine_on("offline.db", NULL, NULL);
    cr_assert_eq(place(e, "o-1", "EUR", ES_EXPECT_ANY), ES_OK);
    es_config_t *cfg = tu_config(dir, "offline.db");
    char *rm = tu_path(dir, "none-read.db"), *saga = tu_path(dir, "none-saga.db");
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "readmodel.db", rm, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_config_set(cfg, "saga.db", saga, &err), ES_OK, "%s", err.message);
    char *text = NULL;
    size_t len = 0;
    cr_assert_eq(es_metrics_write_offline(cfg, &text, &len, &err), ES_OK, "%s", err.message);
    cr_assert_eq(strlen(text), len);
    cr_expect_null(strstr(text, "eskit_commands_total"), "%s", text);
    cr_expect(strstr(text, "\neskit_log_records{topic=\"orders.order.events\"} 1\n"), "%s", text);
    cr_expect(strstr(text, "\n# TYPE eskit_log_bytes gauge\n"), "%s", text);
    es_free(text);
    text = (char *)"untouched";
    cr_expect_eq(es_metrics_write_offline(NULL, &text, &len, &err), ES_EINVAL);
    cr_expect(strstr(err.message, "es_metrics_write_offline"), "%s", err.message);
    es_engine_destroy(e);
    es_config_destroy(cfg);
    free(rm);
    free(saga);
}
