/*
 * Every record eskit produces on Kafka carries the headers proto/README.md lists for its kind,
 * exactly those, each once. The demo saga runs against librdkafka's mock cluster (a command
 * processor thread owns the aggregates; the coordinator's relay sends the commands), a second
 * saga whose first step sends the wrong command parks its start events as dead letters, and a
 * plain librdkafka consumer, which knows nothing of eskit, reads back every topic eskit wrote.
 * The expected header lists are read from the README itself, so the document and the producers
 * cannot drift apart unnoticed.
 */
#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain.h"
#include "fulfilment.h"
#include "eskit/v1/command.pb-c.h"
#include "eskit/v1/reply.pb-c.h"
#include "testutil.h"

#define PARTS 3
#define MAX_HEADERS 16

static const char *const TYPES[] = {"orders.order", "payments.payment", "inventory.item"};

static char *dir;
static es_config_t *cfg;
static rd_kafka_t *mock_rk;
static rd_kafka_mock_cluster_t *mock;

static void quiet(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk, (void)level, (void)fac, (void)buf;
}

static void set(es_config_t *c, const char *key, const char *value) {
    es_error_t err = {0};
    cr_assert_eq(es_config_set(c, key, value, &err), ES_OK, "%s", err.message);
}

static void set_path(es_config_t *c, const char *key, const char *name) {
    char *path = tu_path(dir, name);
    set(c, key, path);
    free(path);
}

static void topic(const char *name, int partitions) {
    cr_assert_eq(rd_kafka_mock_topic_create(mock, name, partitions, 1), 0, "%s", name);
}

static void setup(void) {
    char errstr[256], name[128];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(c, quiet);
    mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof errstr);
    cr_assert(mock_rk, "%s", errstr);
    mock = rd_kafka_mock_cluster_new(mock_rk, 1);
    cr_assert(mock);
    static const char *const kinds[] = {"events", "snapshots", "commands", "replies"};
    for (size_t t = 0; t < 3; t++) {
        for (size_t k = 0; k < 4; k++) {
            snprintf(name, sizeof name, "%s.%s", TYPES[t], kinds[k]);
            topic(name, PARTS);
        }
        snprintf(name, sizeof name, "%s.events.dlq", TYPES[t]);
        topic(name, 1);
    }
    topic("orders.fulfilment.saga.events", PARTS);
    topic("orders.misrouted.saga.events", PARTS);
    dir = tu_tempdir();
    cfg = tu_config(dir, "unused.db");
    set(cfg, "brokers", rd_kafka_mock_cluster_bootstraps(mock));
    set(cfg, "service.name", "svc");
    set(cfg, "execute.timeout.ms", "20000");
    set(cfg, "kafka.reconnect.backoff.max.ms", "200");
    set(cfg, "kafka.session.timeout.ms", "2500");
    set(cfg, "kafka.heartbeat.interval.ms", "500");
    set(cfg, "projector.retry.backoff.ms", "1");
    set_path(cfg, "state.db", "state.db");
    set_path(cfg, "saga.db", "saga.db");
}

static void teardown(void) {
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_rk);
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(dir);
}

TestSuite(kafka_headers, .init = setup, .fini = teardown, .timeout = 120);

/* ---- what proto/README.md lists ------------------------------------------------------------ */

typedef struct expected {
    const char *kind; /* the first column of the README's table */
    char names[MAX_HEADERS][32];
    size_t n;
    size_t seen; /* records of this kind read back */
} expected;

static expected want[] = {{.kind = "event"}, {.kind = "saga transition"}, {.kind = "command"},
                          {.kind = "reply"}, {.kind = "snapshot"},        {.kind = "dead letter"}};
enum { K_EVENT, K_SAGA, K_COMMAND, K_REPLY, K_SNAPSHOT, K_DLQ, K_COUNT };

/* Fills want[] from the rows "| <kind> | ... | <headers> |" of the README's records table. */
static void read_readme(void) {
    FILE *f = fopen(ESKIT_SOURCE_DIR "/proto/README.md", "r");
    cr_assert_not_null(f, "proto/README.md");
    char line[2048];
    while (fgets(line, sizeof line, f)) {
        for (size_t k = 0; k < K_COUNT; k++) {
            size_t len = strlen(want[k].kind);
            if (strncmp(line, "| ", 2) || strncmp(line + 2, want[k].kind, len) ||
                strncmp(line + 2 + len, " |", 2))
                continue;
            char *cell = strrchr(line, '|');
            *cell = '\0';
            cell = strrchr(line, '|') + 1; /* the last cell: the headers */
            for (char *p = cell; (p = strchr(p, '`'));) {
                char *end = strchr(p + 1, '`');
                cr_assert_not_null(end);
                int n = (int)(end - p - 1);
                if (!strncmp(p + 1, "es-", 3) || !strncmp(p + 1, "traceparent`", 12) ||
                    !strncmp(p + 1, "tracestate`", 11)) {
                    cr_assert_lt(want[k].n, MAX_HEADERS);
                    snprintf(want[k].names[want[k].n++], sizeof want[k].names[0], "%.*s", n, p + 1);
                }
                p = end + 1;
            }
            cr_assert(want[k].n > 0 || strstr(cell, "none"), "README row for %s: %s", want[k].kind,
                      cell);
        }
    }
    fclose(f);
    cr_assert_gt(want[K_EVENT].n, 0, "the README lists no event headers");
}

/* ---- the run --------------------------------------------------------------------------------- */

typedef struct proc {
    es_engine_t *engine;
    es_processor_t *p;
    pthread_t thread;
    es_error_t err;
} proc;

static void *serve(void *opaque) {
    proc *pr = opaque;
    es_processor_run(pr->p, &pr->err);
    return NULL;
}

static es_engine_t *new_engine(const es_config_t *c) {
    es_engine_t *e = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(c, &e, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(e, &err), ES_OK, "%s", err.message);
    return e;
}

/* Every command carries trace context with a tracestate, so that every event and transition
 * has both trace headers (a trace without tracestate has no tracestate header). */
static const es_kv_t trace_md[] = {
    {"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    {"tracestate", "shop=1"}};

static void execute(es_engine_t *e, const char *type, const char *id, const char *correlation,
                    const ProtobufCMessage *msg) {
    es_command_t cmd = {.aggregate_type = type,
                        .aggregate_id = id,
                        .message = msg,
                        .correlation_id = correlation,
                        .metadata = trace_md,
                        .n_metadata = 2};
    es_result_t res = {0};
    es_error_t err = {0};
    cr_assert_eq(es_execute(e, &cmd, &res, &err), ES_OK, "%s %s/%s: %s", msg->descriptor->name,
                 type, id, res.reason ? res.reason : err.message);
    es_result_clear(&res);
}

static void place(es_engine_t *e, const char *id, const char *customer, int64_t cents,
                  const char *correlation) {
    Orders__V1__LineItem item = ORDERS__V1__LINE_ITEM__INIT;
    item.sku = "sku-1";
    item.quantity = 1;
    item.unit_price_cents = cents;
    Orders__V1__LineItem *items[] = {&item};
    Orders__V1__PlaceOrder m = ORDERS__V1__PLACE_ORDER__INIT;
    m.customer_id = (char *)customer;
    m.n_items = 1;
    m.items = items;
    m.currency = "USD";
    execute(e, "orders.order", id, correlation, &m.base);
}

static void settle(es_saga_t *c, uint64_t started) {
    es_error_t err = {0};
    uint64_t active = 1;
    es_saga_stats_t st = {0};
    for (int i = 0; i < 3000 && (active || st.started < started); i++) {
        cr_assert_eq(es_saga_poll(c, 20, NULL, &err), ES_OK, "%s", err.message);
        cr_assert_eq(es_saga_active(c, &active, &err), ES_OK, "%s", err.message);
        es_saga_stats(c, &st);
    }
    cr_assert_eq(active, 0, "sagas still active after 3000 polls");
    cr_assert_geq(st.started, started);
}

/* A step sending a command it does not declare: its start event is parked, a dead letter. */
static es_err send_misrouted(const es_saga_view_t *v, es_saga_out_t *out, es_error_t *err) {
    (void)err;
    Orders__V1__ConfirmOrder c = ORDERS__V1__CONFIRM_ORDER__INIT;
    return es_saga_send(out, es_saga_view_id(v), &c.base);
}

static void park_start_events(es_engine_t *engine, size_t n) {
    static es_saga_step_t steps[8];
    es_saga_def def = demo_fulfilment_def;
    for (size_t i = 0; i < def.n_steps; i++)
        steps[i] = def.steps[i];
    steps[0].send = send_misrouted;
    def.steps = steps;
    def.name = "orders.misrouted";
    es_config_t *c = es_config_dup(cfg);
    set_path(c, "saga.db", "misrouted.db");
    es_saga_t *coord = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_saga_new(c, &def, engine, &coord, &err), ES_OK, "%s", err.message);
    set_path(c, "readmodel.db", "misrouted.db"); /* where es_dlq_list looks */
    size_t parked = 0;
    for (int i = 0; i < 500 && parked < n; i++) {
        cr_assert_eq(es_saga_poll(coord, 20, NULL, &err), ES_OK, "%s", err.message);
        es_dlq_entry_t *list = NULL;
        cr_assert_eq(es_dlq_list(c, NULL, false, &list, &parked, &err), ES_OK, "%s", err.message);
        free(list);
    }
    cr_assert_eq(parked, n, "start events parked");
    es_saga_destroy(coord); /* the dead letters went out with the polls that parked */
    es_config_destroy(c);
}

/* ---- reading back ------------------------------------------------------------------------- */

static int kind_of(const char *t) {
    size_t n = strlen(t);
#define ENDS(s) (n > strlen(s) && !strcmp(t + n - strlen(s), s))
    if (ENDS(".dlq"))
        return K_DLQ;
    if (ENDS(".saga.events"))
        return K_SAGA;
    if (ENDS(".events"))
        return K_EVENT;
    if (ENDS(".commands"))
        return K_COMMAND;
    if (ENDS(".replies"))
        return K_REPLY;
    if (ENDS(".snapshots"))
        return K_SNAPSHOT;
#undef ENDS
    return -1;
}

/* The value of header name in the record (asserting it is there once), as a fresh string. */
static char *header(rd_kafka_headers_t *h, const char *name) {
    const void *v = NULL;
    size_t len = 0;
    cr_assert_eq(rd_kafka_header_get_last(h, name, &v, &len), RD_KAFKA_RESP_ERR_NO_ERROR, "%s",
                 name);
    return strndup(v ? v : "", len);
}

/* The correlation header of each order's OrderPlaced and of each saga transition, by instance
 * (the order id): a transition carries its instance's, which is the start event's. */
typedef struct correlation {
    char id[64], corr[ES_MAX_ID_LEN + 1];
    int saga;
} correlation;
static correlation corrs[256];
static size_t n_corrs;

static void note_correlation(int saga, const char *id, const char *corr) {
    cr_assert_lt(n_corrs, sizeof corrs / sizeof *corrs);
    correlation *c = &corrs[n_corrs++];
    c->saga = saga;
    snprintf(c->id, sizeof c->id, "%s", id);
    snprintf(c->corr, sizeof c->corr, "%s", corr);
}

static void check_correlations(void) {
    size_t checked = 0;
    for (size_t i = 0; i < n_corrs; i++) {
        if (!corrs[i].saga)
            continue;
        const char *placed = NULL;
        for (size_t j = 0; j < n_corrs; j++)
            if (!corrs[j].saga && !strcmp(corrs[j].id, corrs[i].id))
                placed = corrs[j].corr;
        cr_assert_not_null(placed, "no OrderPlaced read for instance %s", corrs[i].id);
        cr_assert(*corrs[i].corr, "a transition of %s has an empty correlation id", corrs[i].id);
        cr_assert_str_eq(corrs[i].corr, placed, "a transition of %s", corrs[i].id);
        if (!strcmp(corrs[i].id, "o-ok"))
            cr_assert_str_eq(corrs[i].corr, "corr-o-ok");
        checked++;
    }
    cr_assert_gt(checked, 0);
}

/* The spans of commands (their envelopes' traceparent and eskit.parent_span), of replies and
 * the parents of events, by command id: a reply and the events of a command name the span its
 * envelope carries. */
typedef struct traced {
    int kind;
    char command_id[ES_MAX_ID_LEN + 1];
    char span[ES_SPAN_ID_LEN + 1], parent[ES_SPAN_ID_LEN + 1];
} traced;
static traced spans[512];
static size_t n_spans;

static void note_span(int kind, const char *command_id, const char *traceparent,
                      const char *parent) {
    es_traceparent_t tp;
    cr_assert_eq(es_traceparent_parse(traceparent, &tp, NULL), ES_OK, "a %s of %s: '%s'",
                 want[kind].kind, command_id, traceparent);
    cr_assert_str_eq(tp.trace_id, "0af7651916cd43dd8448eb211c80319c");
    cr_assert_lt(n_spans, sizeof spans / sizeof *spans);
    traced *t = &spans[n_spans++];
    t->kind = kind;
    snprintf(t->command_id, sizeof t->command_id, "%s", command_id);
    snprintf(t->span, sizeof t->span, "%s", kind == K_EVENT ? parent : tp.span_id);
    snprintf(t->parent, sizeof t->parent, "%s", kind == K_EVENT ? "" : parent);
}

static void note_command_span(const rd_kafka_message_t *m) {
    Eskit__V1__CommandEnvelope *env = eskit__v1__command_envelope__unpack(NULL, m->len, m->payload);
    cr_assert_not_null(env);
    const char *tp = "", *parent = "";
    for (size_t i = 0; i < env->n_metadata; i++) {
        if (!strcmp(env->metadata[i]->key, "traceparent"))
            tp = env->metadata[i]->value;
        if (!strcmp(env->metadata[i]->key, ES_PARENT_SPAN_KEY))
            parent = env->metadata[i]->value;
    }
    cr_assert_eq(strlen(parent), ES_SPAN_ID_LEN, "command %s has no parent span", env->command_id);
    note_span(K_COMMAND, env->command_id, tp, parent);
    eskit__v1__command_envelope__free_unpacked(env, NULL);
}

static void note_reply_span(const rd_kafka_message_t *m) {
    Eskit__V1__CommandReply *rep = eskit__v1__command_reply__unpack(NULL, m->len, m->payload);
    cr_assert_not_null(rep);
    cr_assert_str_eq(rep->tracestate, "shop=1", "reply to %s", rep->command_id);
    note_span(K_REPLY, rep->command_id, rep->traceparent, "");
    eskit__v1__command_reply__free_unpacked(rep, NULL);
}

/* Every reply and every event names the span of an envelope of its command. */
static void check_spans(void) {
    size_t checked = 0;
    for (size_t i = 0; i < n_spans; i++) {
        if (spans[i].kind == K_COMMAND)
            continue;
        int found = 0;
        for (size_t j = 0; j < n_spans && !found; j++)
            found = spans[j].kind == K_COMMAND &&
                    !strcmp(spans[j].command_id, spans[i].command_id) &&
                    !strcmp(spans[j].span, spans[i].span);
        cr_assert(found, "a %s of command %s names span %s, which no envelope of it carries",
                  want[spans[i].kind].kind, spans[i].command_id, spans[i].span);
        checked++;
    }
    cr_assert_gt(checked, 0);
}

static void check_event_headers(const rd_kafka_message_t *m, rd_kafka_headers_t *h, int kind) {
    es_event_t *ev = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_envelope_decode(m->payload, m->len, NULL, &ev, &err), ES_OK, "%s", err.message);
    char version[24];
    snprintf(version, sizeof version, "%llu", (unsigned long long)ev->version);
    char *type = header(h, "es-event-type"), *ver = header(h, "es-version"),
         *id = header(h, "es-event-id"), *corr = header(h, "es-correlation-id");
    const char *where = rd_kafka_topic_name(m->rkt);
    cr_assert_str_eq(type, ev->event_type, "%s", where);
    cr_assert_str_eq(ver, version, "%s", where);
    cr_assert_str_eq(id, ev->event_id, "%s", where);
    cr_assert_str_eq(corr, ev->correlation_id ? ev->correlation_id : "", "%s", where);
    /* the record's own span, as its envelope's metadata has it (W3C's Kafka binding) */
    char *tp = header(h, "traceparent"), *ts = header(h, "tracestate");
    const char *md_tp = NULL, *md_ts = NULL;
    for (size_t i = 0; i < ev->n_metadata; i++) {
        if (!strcmp(ev->metadata[i].key, "traceparent"))
            md_tp = ev->metadata[i].value;
        if (!strcmp(ev->metadata[i].key, "tracestate"))
            md_ts = ev->metadata[i].value;
    }
    cr_assert_str_eq(tp, md_tp ? md_tp : "(none)", "%s", where);
    cr_assert_str_eq(ts, "shop=1", "%s", where);
    cr_assert_str_eq(ts, md_ts ? md_ts : "(none)", "%s", where);
    es_traceparent_t parsed;
    cr_assert_eq(es_traceparent_parse(tp, &parsed, NULL), ES_OK, "%s: '%s'", where, tp);
    cr_assert_str_eq(parsed.trace_id, "0af7651916cd43dd8448eb211c80319c", "%s", where);
    free(ts);
    if (kind == K_SAGA)
        cr_assert_str_eq(type, "eskit.v1.SagaTransition");
    if (kind == K_SAGA || !strcmp(type, "orders.v1.OrderPlaced"))
        note_correlation(kind == K_SAGA, ev->aggregate_id, corr);
    for (size_t i = 0; kind == K_EVENT && ev->command_id && i < ev->n_metadata; i++)
        if (!strcmp(ev->metadata[i].key, ES_PARENT_SPAN_KEY))
            note_span(K_EVENT, ev->command_id, tp, ev->metadata[i].value);
    free(type), free(ver), free(id), free(corr), free(tp);
    es_event_free(ev);
}

/* The record's header names are exactly the kind's, each once. */
static void check_names(const rd_kafka_message_t *m, int kind) {
    rd_kafka_headers_t *h = NULL;
    const char *where = rd_kafka_topic_name(m->rkt);
    expected *w = &want[kind];
    if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR)
        h = NULL;
    size_t n = h ? rd_kafka_header_cnt(h) : 0;
    cr_assert_eq(n, w->n, "a %s record on %s offset %lld has %zu headers, the README lists %zu",
                 w->kind, where, (long long)m->offset, n, w->n);
    for (size_t i = 0; i < n; i++) {
        const char *name = NULL;
        const void *v = NULL;
        size_t len = 0;
        cr_assert_eq(rd_kafka_header_get_all(h, i, &name, &v, &len), 0);
        size_t times = 0, listed = 0;
        for (size_t j = 0; j < n; j++) {
            const char *other = NULL;
            rd_kafka_header_get_all(h, j, &other, &v, &len);
            times += !strcmp(other, name);
        }
        for (size_t k = 0; k < w->n; k++)
            listed += !strcmp(w->names[k], name);
        cr_assert_eq(listed, 1, "%s on %s: header %s is not in the README's list", w->kind, where,
                     name);
        cr_assert_eq(times, 1, "%s on %s: header %s appears %zu times", w->kind, where, name,
                     times);
    }
    if (kind == K_EVENT || kind == K_SAGA)
        check_event_headers(m, h, kind);
    if (kind == K_COMMAND) {
        char *part = header(h, "es-reply-partition"), *end = NULL;
        long p = strtol(part, &end, 10);
        cr_assert(*part && !*end && p >= 0 && p < PARTS, "es-reply-partition '%s'", part);
        free(part);
        note_command_span(m);
    }
    if (kind == K_REPLY)
        note_reply_span(m);
    if (kind == K_DLQ) {
        char *t = header(h, "es-dlq-topic"), *g = header(h, "es-dlq-group");
        cr_assert_str_eq(t, "orders.order.events");
        cr_assert_str_eq(g, "svc.saga-orders-misrouted");
        free(t), free(g);
    }
    w->seen++;
}

/* Reads every partition of every topic eskit may have written from its start to its end. */
static void read_back(void) {
    char errstr[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(c, quiet);
    cr_assert_eq(rd_kafka_conf_set(c, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(mock),
                                   errstr, sizeof errstr),
                 RD_KAFKA_CONF_OK);
    rd_kafka_conf_set(c, "group.id", "independent-reader", errstr, sizeof errstr);
    rd_kafka_conf_set(c, "enable.partition.eof", "true", errstr, sizeof errstr);
    rd_kafka_conf_set(c, "enable.auto.commit", "false", errstr, sizeof errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, errstr, sizeof errstr);
    cr_assert_not_null(rk, "%s", errstr);
    const struct rd_kafka_metadata *md = NULL;
    cr_assert_eq(rd_kafka_metadata(rk, 1, NULL, &md, 10000), 0);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(64);
    for (int i = 0; i < md->topic_cnt; i++)
        if (kind_of(md->topics[i].topic) >= 0)
            for (int p = 0; p < md->topics[i].partition_cnt; p++)
                rd_kafka_topic_partition_list_add(l, md->topics[i].topic, p)->offset =
                    RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_metadata_destroy(md);
    int left = l->cnt;
    cr_assert_eq(rd_kafka_assign(rk, l), 0);
    rd_kafka_topic_partition_list_destroy(l);
    int64_t deadline = es_now_us() + 30000000;
    while (left > 0 && es_now_us() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
            left--;
        else if (!m->err)
            check_names(m, kind_of(rd_kafka_topic_name(m->rkt)));
        else
            cr_log_warn("reading back: %s", rd_kafka_message_errstr(m));
        rd_kafka_message_destroy(m);
    }
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    cr_assert_eq(left, 0, "%d partitions not read to their end", left);
}

Test(kafka_headers, every_record_carries_the_headers_the_readme_lists_for_its_kind) {
    read_readme();
    proc pr = {.engine = new_engine(cfg)};
    es_error_t err = {0};
    cr_assert_eq(es_processor_new(cfg, pr.engine, &pr.p, &err), ES_OK, "%s", err.message);
    cr_assert_eq(pthread_create(&pr.thread, NULL, serve, &pr), 0);
    es_engine_t *caller = new_engine(cfg);

    Inventory__V1__Restock restock = INVENTORY__V1__RESTOCK__INIT;
    restock.quantity = 10;
    execute(caller, "inventory.item", "sku-1", NULL, &restock.base);
    place(caller, "o-ok", "alice", 1500, "corr-o-ok");
    place(caller, "o-declined", "bob", 50000000, NULL); /* over the limit: compensated */
    es_saga_t *coord = NULL;
    cr_assert_eq(es_saga_new(cfg, &demo_fulfilment_def, caller, &coord, &err), ES_OK, "%s",
                 err.message);
    settle(coord, 2);
    es_saga_destroy(coord);
    park_start_events(caller, 2);

    es_engine_destroy(caller);
    es_processor_stop(pr.p);
    pthread_join(pr.thread, NULL);
    es_processor_destroy(pr.p);
    es_engine_destroy(pr.engine);

    read_back();
    check_correlations();
    check_spans();
    for (size_t k = 0; k < K_COUNT; k++)
        cr_expect_gt(want[k].seen, 0, "no %s record was read back", want[k].kind);
    cr_log_info("records read: %zu events, %zu transitions, %zu commands, %zu replies, "
                "%zu snapshots, %zu dead letters",
                want[K_EVENT].seen, want[K_SAGA].seen, want[K_COMMAND].seen, want[K_REPLY].seen,
                want[K_SNAPSHOT].seen, want[K_DLQ].seen);
}
