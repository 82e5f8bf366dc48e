/*
 * One order's story as one trace, the same on both backends (docs/observability.md, "Traces"):
 * an order placed with a caller's traceparent runs through the demo's fulfilment saga (on Kafka,
 * a command processor owns the aggregates and the saga's relay produces commands); every event
 * and saga transition of the order carries the caller's trace id, and the spans form one tree:
 * each record's parent span is the span of another record or of a command's execution (as the
 * span callback reports it), and only the first command's parent is outside, the caller's.
 * `esctl trace` prints the tree.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "domain.h"
#include "eskit/v1/saga.pb-c.h"
#include "fulfilment.h"
#include "testutil.h"

#define SAGA "orders.fulfilment"
#define TRACE "0af7651916cd43dd8448eb211c80319c"
#define CALLER "b7ad6b7169203331"
#define MAX_NODES 256

/* A span of the story: a record's, or an execution the span callback reported. */
typedef struct node {
    char span[ES_SPAN_ID_LEN + 1], parent[ES_SPAN_ID_LEN + 1];
    char what[128];
} node;

/* A span phase the callback saw. */
typedef struct phase {
    es_span_phase phase;
    char name[96], span[ES_SPAN_ID_LEN + 1], parent[ES_SPAN_ID_LEN + 1];
    int64_t start_us;
} phase;

typedef struct spans {
    pthread_mutex_t lock;
    node exec[MAX_NODES];
    size_t n_exec;
    phase all[4 * MAX_NODES];
    size_t n_all;
} spans;

static tb_t *b;
static es_saga_t *coord;
static spans seen = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* On the thread executing: the caller's embedded, the processor's on Kafka. */
static void on_span(const es_span_t *s, void *opaque) {
    spans *l = opaque;
    pthread_mutex_lock(&l->lock);
    if (s->phase == ES_SPAN_END && !strncmp(s->name, "eskit.execute ", 14) &&
        !strcmp(s->trace_id, TRACE) && l->n_exec < MAX_NODES) {
        node *n = &l->exec[l->n_exec++];
        snprintf(n->span, sizeof n->span, "%s", s->span_id);
        snprintf(n->parent, sizeof n->parent, "%s", s->parent_span_id);
        snprintf(n->what, sizeof n->what, "%s", s->name);
    }
    if (!strcmp(s->trace_id, TRACE) && l->n_all < sizeof l->all / sizeof l->all[0]) {
        phase *p = &l->all[l->n_all++];
        p->phase = s->phase;
        p->start_us = s->start_us;
        snprintf(p->name, sizeof p->name, "%s", s->name);
        snprintf(p->span, sizeof p->span, "%s", s->span_id);
        snprintf(p->parent, sizeof p->parent, "%s", s->parent_span_id);
    }
    pthread_mutex_unlock(&l->lock);
}

static void setup(void) {
    static const char *const types[] = {"orders.order", "payments.payment", "inventory.item",
                                        SAGA ".saga", NULL};
    b = tb_open(types);
    char *path = tu_path(tb_dir(b), "saga.db");
    es_error_t err = {0};
    cr_assert_eq(es_config_set(tb_config(b), "saga.db", path, &err), ES_OK, "%s", err.message);
    free(path);
    seen.n_exec = seen.n_all = 0;
    es_config_set_span_cb(tb_config(b), on_span, &seen);
}

static void teardown(void) {
    es_saga_destroy(coord);
    coord = NULL;
    tb_close(b);
}

TestSuite(trace_story, .init = setup, .fini = teardown, .timeout = 180);

static void execute(const char *type, const char *id, const ProtobufCMessage *msg,
                    const es_kv_t *md, size_t n_md) {
    es_command_t cmd = {.aggregate_type = type,
                        .aggregate_id = id,
                        .message = msg,
                        .metadata = md,
                        .n_metadata = n_md};
    es_result_t res = {0};
    es_error_t err = {0};
    cr_assert_eq(es_execute(tb_engine(b), &cmd, &res, &err), ES_OK, "%s %s/%s: %s",
                 msg->descriptor->name, type, id, res.reason ? res.reason : err.message);
    es_result_clear(&res);
}

static void place_traced(const char *id, const char *sku) {
    Inventory__V1__Restock r = INVENTORY__V1__RESTOCK__INIT;
    r.quantity = 10;
    execute("inventory.item", sku, &r.base, NULL, 0); /* a trace of its own */
    Orders__V1__LineItem item = ORDERS__V1__LINE_ITEM__INIT;
    item.sku = (char *)sku;
    item.quantity = 2;
    item.unit_price_cents = 1500;
    Orders__V1__LineItem *items[] = {&item};
    Orders__V1__PlaceOrder m = ORDERS__V1__PLACE_ORDER__INIT;
    m.customer_id = "alice";
    m.n_items = 1;
    m.items = items;
    m.currency = "USD";
    es_kv_t md[] = {{"traceparent", "00-" TRACE "-" CALLER "-01"}, {"tracestate", "shop=1"}};
    execute("orders.order", id, &m.base, md, 2);
}

static void run_saga(void) {
    es_error_t err = {0};
    cr_assert_eq(es_saga_new(tb_config(b), &demo_fulfilment_def, tb_engine(b), &coord, &err), ES_OK,
                 "%s", err.message);
    uint64_t active = 1;
    es_saga_stats_t st = {0};
    for (int i = 0; i < 3000 && (active || st.started < 1); i++) {
        cr_assert_eq(es_saga_poll(coord, 20, NULL, &err), ES_OK, "%s", err.message);
        cr_assert_eq(es_saga_active(coord, &active, &err), ES_OK, "%s", err.message);
        es_saga_stats(coord, &st);
    }
    cr_assert_eq(active, 0, "the saga is still active after 3000 polls");
}

/* The records of the log whose correlation is the order's, and the trace each carries. */
typedef struct story {
    const char *correlation;
    node rec[MAX_NODES];
    size_t n;
    size_t events, transitions;
    char last_kind[32];
} story;

static const char *meta(const es_event_t *ev, const char *key) {
    for (size_t i = 0; i < ev->n_metadata; i++)
        if (!strcmp(ev->metadata[i].key, key))
            return ev->metadata[i].value;
    return "";
}

static int gather(const es_event_t *ev, void *opaque) {
    story *s = opaque;
    if (!ev->correlation_id || strcmp(ev->correlation_id, s->correlation) || s->n == MAX_NODES)
        return 0;
    node *n = &s->rec[s->n++];
    es_traceparent_t tp;
    const char *parent;
    if (!strcmp(ev->event_type, "eskit.v1.SagaTransition")) {
        Eskit__V1__SagaTransition *t =
            eskit__v1__saga_transition__unpack(NULL, ev->payload_len, ev->payload);
        cr_assert_not_null(t);
        cr_assert_eq(es_traceparent_parse(t->traceparent, &tp, NULL), ES_OK,
                     "transition %s of %s has no traceparent: '%s'", t->kind, t->instance_id,
                     t->traceparent);
        snprintf(n->what, sizeof n->what, "transition %s", t->kind);
        snprintf(n->parent, sizeof n->parent, "%s", t->parent_span);
        snprintf(s->last_kind, sizeof s->last_kind, "%s", t->kind);
        cr_assert_str_eq(t->tracestate, "shop=1", "the caller's tracestate is passed on");
        eskit__v1__saga_transition__free_unpacked(t, NULL);
        s->transitions++;
    } else {
        cr_assert_eq(es_traceparent_parse(meta(ev, "traceparent"), &tp, NULL), ES_OK,
                     "%s %s/%s v%llu has no traceparent", ev->event_type, ev->aggregate_type,
                     ev->aggregate_id, (unsigned long long)ev->version);
        parent = meta(ev, ES_PARENT_SPAN_KEY);
        snprintf(n->what, sizeof n->what, "event %s", ev->event_type);
        snprintf(n->parent, sizeof n->parent, "%s", parent);
        cr_assert_str_eq(meta(ev, "tracestate"), "shop=1", "the caller's tracestate is passed on");
        s->events++;
    }
    cr_assert_str_eq(tp.trace_id, TRACE, "%s carries another trace", n->what);
    snprintf(n->span, sizeof n->span, "%s", tp.span_id);
    return 0;
}

static int has_span(const node *nodes, size_t n, const char *span) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(nodes[i].span, span))
            return 1;
    return 0;
}

/* The order's correlation id: its OrderPlaced event's. */
static int first_event(const es_event_t *ev, void *opaque) {
    snprintf(opaque, ES_MAX_ID_LEN + 1, "%s", ev->correlation_id);
    return 1;
}

Test(trace_story, an_orders_story_through_the_saga_is_one_trace_and_one_tree) {
    place_traced("o-traced", "sku-t");
    run_saga();
    char corr[ES_MAX_ID_LEN + 1] = "";
    es_error_t err = {0};
    cr_assert_eq(
        es_store_read_stream(tb_store(b), "orders.order", "o-traced", 1, first_event, corr, &err),
        ES_OK, "%s", err.message);
    static story s;
    memset(&s, 0, sizeof s);
    s.correlation = corr;
    cr_assert_eq(es_store_read_log(tb_store(b), NULL, 0, 0, gather, &s, NULL, &err), ES_OK, "%s",
                 err.message);
    /* OrderPlaced, StockReserved, PaymentAuthorized, OrderConfirmed, and the transitions */
    cr_assert_geq(s.events, 4, "the order's events: %zu", s.events);
    cr_assert_geq(s.transitions, 10, "the saga's transitions: %zu", s.transitions);
    cr_assert_str_eq(s.last_kind, "completed");

    /* One tree: every parent is a span of the story, but for one execution's, the caller's. */
    pthread_mutex_lock(&seen.lock);
    size_t n_exec = seen.n_exec;
    node all[2 * MAX_NODES];
    memcpy(all, s.rec, s.n * sizeof *all);
    memcpy(all + s.n, seen.exec, n_exec * sizeof *all);
    pthread_mutex_unlock(&seen.lock);
    size_t n = s.n + n_exec;
    cr_assert_geq(n_exec, 4, "PlaceOrder and the saga's three commands executed: %zu", n_exec);
    size_t roots = 0;
    for (size_t i = 0; i < n; i++) {
        if (has_span(all, n, all[i].parent))
            continue;
        roots++;
        cr_assert_str_eq(all[i].parent, CALLER, "%s's parent %s is not in the story", all[i].what,
                         all[i].parent);
        cr_assert_str_eq(all[i].what, "eskit.execute orders.order");
    }
    cr_assert_eq(roots, 1, "exactly one root");
    /* No span is its own ancestor: walking up ends at the root within n steps. */
    for (size_t i = 0; i < n; i++) {
        const char *at = all[i].parent;
        size_t steps = 0;
        for (; strcmp(at, CALLER) && steps <= n; steps++)
            for (size_t k = 0; k < n; k++)
                if (!strcmp(all[k].span, at)) {
                    at = all[k].parent;
                    break;
                }
        cr_assert_leq(steps, n, "%s is in a cycle", all[i].what);
    }
}

/* esctl's environment on this backend: the cluster, when there is one. */
static tu_result esctl_trace(const char *id) {
    const char *brokers = es_config_get(tb_config(b), "brokers");
    char env[512];
    snprintf(env, sizeof env, "ESKIT_BROKERS=%s", brokers ? brokers : "");
    const char *const envs[] = {env, NULL};
    return tb_kafka(b) ? TU_ESCTL_ENV(envs, "trace", id)
                       : TU_ESCTL("--db", es_config_get(tb_config(b), "db"), "trace", id);
}

/* The column a line's text starts at after its time: the tree's depth * 2. */
static int indent_of(const char *out, const char *needle) {
    const char *at = strstr(out, needle);
    cr_assert_not_null(at, "no '%s' in:\n%s", needle, out);
    const char *line = at;
    while (line > out && line[-1] != '\n')
        line--;
    const char *text = strstr(line, "Z  ") + 3;
    int n = 0;
    while (text[n] == ' ')
        n++;
    return n;
}

Test(trace_story, esctl_trace_prints_the_story_as_a_tree) {
    place_traced("o-shown", "sku-s");
    run_saga();
    tu_result r = esctl_trace(TRACE);
    cr_assert_eq(r.status, 0, "esctl trace: %s", r.err);
    cr_assert(strstr(r.out, "trace " TRACE "\n") == r.out, "%s", r.out);
    int placed = indent_of(r.out, "event orders.v1.OrderPlaced");
    int started = indent_of(r.out, "saga " SAGA " o-shown started");
    int reserve = indent_of(r.out, "command inventory.v1.ReserveStock");
    int reserved = indent_of(r.out, "event inventory.v1.StockReserved");
    int confirmed = indent_of(r.out, "event orders.v1.OrderConfirmed");
    int completed = indent_of(r.out, "saga " SAGA " o-shown completed");
    /* Kafka's commands topics give the command's type, its reply the outcome; the embedded log
     * has no command record */
    const char *root = tb_kafka(b) ? "command orders.v1.PlaceOrder orders.order/o-shown"
                                   : "command - orders.order/o-shown";
    cr_assert_gt(placed, indent_of(r.out, root));
    cr_assert_eq(indent_of(r.out, root), 0, "%s", r.out);
    if (tb_kafka(b))
        cr_assert(strstr(r.out, "id=orders.fulfilment/o-shown/reserve_stock.0/do accepted"), "%s",
                  r.out);
    cr_assert_gt(started, placed, "%s", r.out);
    cr_assert_gt(reserve, started, "%s", r.out);
    cr_assert_gt(reserved, reserve, "%s", r.out);
    cr_assert_gt(confirmed, reserved, "%s", r.out);
    cr_assert_gt(completed, confirmed, "%s", r.out);
    cr_assert_null(strstr(r.out, "StockAdded"), "the restock is a trace of its own:\n%s", r.out);
    tu_result_free(&r);

    r = esctl_trace("no-such-id");
    cr_assert_eq(r.status, 1);
    cr_assert_eq(tu_count_lines(r.err), 1, "%s", r.err);
    cr_assert(strstr(r.err, "no record in the log has"), "%s", r.err);
    tu_result_free(&r);

    r = TU_ESCTL("trace");
    cr_assert_eq(r.status, 2, "no id is bad usage");
    cr_assert_eq(tu_count_lines(r.err), 1, "%s", r.err);
    tu_result_free(&r);
}

/* The saga's spans are its transitions' and hang under the events they handled; a projector's
 * apply span (the saga's runner applies through one) under the event it applied; and every end
 * the callback saw closes a start it saw before, with the same name, parent and start time. */
Test(trace_story, the_span_callback_sees_each_span_start_and_end_under_the_story) {
    place_traced("o-spans", "sku-p");
    run_saga();
    char corr[ES_MAX_ID_LEN + 1] = "";
    es_error_t err = {0};
    cr_assert_eq(
        es_store_read_stream(tb_store(b), "orders.order", "o-spans", 1, first_event, corr, &err),
        ES_OK, "%s", err.message);
    static story s;
    memset(&s, 0, sizeof s);
    s.correlation = corr;
    cr_assert_eq(es_store_read_log(tb_store(b), NULL, 0, 0, gather, &s, NULL, &err), ES_OK, "%s",
                 err.message);
    pthread_mutex_lock(&seen.lock);
    size_t sagas = 0, applies = 0;
    for (size_t i = 0; i < seen.n_all; i++) {
        const phase *p = &seen.all[i];
        if (p->phase != ES_SPAN_END)
            continue;
        size_t starts = 0;
        for (size_t k = 0; k < i; k++)
            starts += seen.all[k].phase == ES_SPAN_START && !strcmp(seen.all[k].span, p->span) &&
                      !strcmp(seen.all[k].name, p->name) &&
                      !strcmp(seen.all[k].parent, p->parent) && seen.all[k].start_us == p->start_us;
        cr_assert_eq(starts, 1, "the end of %s %s has %zu starts", p->name, p->span, starts);
        if (!strcmp(p->name, "eskit.saga " SAGA)) {
            sagas++;
            cr_assert(has_span(s.rec, s.n, p->span), "saga span %s is no transition's", p->span);
            cr_assert(has_span(s.rec, s.n, p->parent), "saga span %s has no event", p->span);
        } else if (!strncmp(p->name, "eskit.apply ", 12)) {
            applies++;
            cr_assert(has_span(s.rec, s.n, p->parent), "%s %s applies no event of the story",
                      p->name, p->span);
        }
    }
    pthread_mutex_unlock(&seen.lock);
    cr_assert_geq(sagas, 4, "the saga handled the order's events: %zu spans", sagas);
    cr_assert_geq(applies, 4, "the saga's runner applied them: %zu spans", applies);
}

/* The first event's traceparent. */
static int copy_traceparent(const es_event_t *ev, void *opaque) {
    snprintf(opaque, ES_TRACEPARENT_LEN + 1, "%s", meta(ev, "traceparent"));
    return 1;
}

static es_result_t restock_with(const char *sku, const char *cid, const es_kv_t *md, size_t n) {
    Inventory__V1__Restock r = INVENTORY__V1__RESTOCK__INIT;
    r.quantity = 1;
    es_command_t cmd = {.aggregate_type = "inventory.item",
                        .aggregate_id = sku,
                        .message = &r.base,
                        .command_id = cid,
                        .metadata = md,
                        .n_metadata = n};
    es_result_t res = {0};
    es_error_t err = {0};
    cr_assert_eq(es_execute(tb_engine(b), &cmd, &res, &err), ES_OK, "%s", err.message);
    return res;
}

Test(trace_story, a_retry_with_another_traceparent_is_a_duplicate_and_an_untraced_command_a_root) {
    es_kv_t md[] = {{"traceparent", "00-" TRACE "-" CALLER "-01"}};
    es_result_t first = restock_with("sku-r", "retry-1", md, 1);
    md[0].value = "00-" TRACE "-1234567890abcdef-01";
    es_result_t again = restock_with("sku-r", "retry-1", md, 1);
    cr_assert(again.duplicate, "the retry ran again");
    cr_assert_eq(again.version, first.version);
    es_result_clear(&first);
    es_result_clear(&again);
    es_result_t plain = restock_with("sku-r", "plain-1", NULL, 0);
    es_result_clear(&plain);
    cr_assert_eq(tb_events_of(b, "inventory.item", "sku-r", 2), 2, "one event per command");
    char tp[2][ES_TRACEPARENT_LEN + 1];
    es_error_t err = {0};
    cr_assert_eq(es_store_read_stream(tb_store(b), "inventory.item", "sku-r", 1, copy_traceparent,
                                      tp[0], &err),
                 ES_OK, "%s", err.message);
    cr_assert_eq(es_store_read_stream(tb_store(b), "inventory.item", "sku-r", 2, copy_traceparent,
                                      tp[1], &err),
                 ES_OK, "%s", err.message);
    es_traceparent_t a, c;
    cr_assert_eq(es_traceparent_parse(tp[0], &a, NULL), ES_OK, "'%s'", tp[0]);
    cr_assert_eq(es_traceparent_parse(tp[1], &c, NULL), ES_OK, "'%s'", tp[1]);
    cr_assert_str_eq(a.trace_id, TRACE, "the first execution's trace stays");
    cr_assert_str_neq(c.trace_id, TRACE, "a command without traceparent starts a trace");
}
