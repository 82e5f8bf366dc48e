/*
 * W3C trace context (<eskit/trace.h>): parsing and formatting a traceparent, and what the
 * embedded engine makes of a command's: the events carry spans of their own under the
 * command's, a command without a valid traceparent starts a trace, the trace keys replace the
 * caller's and do not count against ES_MAX_METADATA, a retry with another traceparent is the
 * same command, and the span callback sees each execute span start and end.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain.h"
#include "fulfilment.h"
#include "testutil.h"

#define TRACE "4bf92f3577b34da6a3ce929d0e0e4736"
#define SPAN "00f067aa0ba902b7"
#define VALID "00-" TRACE "-" SPAN "-01"

static es_err parse(const char *s, es_traceparent_t *tp) {
    return es_traceparent_parse(s, tp, NULL);
}

Test(trace, a_valid_traceparent_parses_into_its_fields) {
    es_traceparent_t tp;
    cr_assert_eq(parse(VALID, &tp), ES_OK);
    cr_assert_eq(tp.version, 0);
    cr_assert_str_eq(tp.trace_id, TRACE);
    cr_assert_str_eq(tp.span_id, SPAN);
    cr_assert_eq(tp.flags, 1);
}

Test(trace, formatting_gives_back_what_was_parsed) {
    es_traceparent_t tp;
    char out[ES_TRACEPARENT_LEN + 1];
    cr_assert_eq(parse("00-" TRACE "-" SPAN "-00", &tp), ES_OK);
    es_traceparent_format(&tp, out);
    cr_assert_str_eq(out, "00-" TRACE "-" SPAN "-00");
    tp.flags = 0xa5; /* both digits, above 9 */
    es_traceparent_format(&tp, out);
    cr_assert_str_eq(out, "00-" TRACE "-" SPAN "-a5");
}

Test(trace, malformed_values_are_refused_with_a_reason) {
    static const char *const bad[] = {
        "",
        "00-" TRACE "-" SPAN,                              /* no flags */
        "00-" TRACE "-" SPAN "-011",                       /* version 00 is exactly 55 */
        "00_" TRACE "-" SPAN "-01",                        /* separator */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-" SPAN "-01", /* uppercase */
        "00-" TRACE "-00F067AA0BA902B7-01",                /* uppercase */
        "00-" TRACE "-" SPAN "-0g",                        /* not hex */
        "00-00000000000000000000000000000000-" SPAN "-01", /* all-zero trace id */
        "00-" TRACE "-0000000000000000-01",                /* all-zero parent id */
        "ff-" TRACE "-" SPAN "-01",                        /* version ff */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        es_traceparent_t tp;
        es_error_t err = {0};
        cr_assert_eq(es_traceparent_parse(bad[i], &tp, &err), ES_EINVAL, "'%s' was accepted",
                     bad[i]);
        cr_assert(strstr(err.message, "traceparent"), "%s", err.message);
    }
}

Test(trace, a_later_version_is_read_by_version_00s_layout_and_may_go_on) {
    es_traceparent_t tp;
    cr_assert_eq(parse("01-" TRACE "-" SPAN "-01", &tp), ES_OK);
    cr_assert_eq(tp.version, 1);
    cr_assert_str_eq(tp.trace_id, TRACE);
    cr_assert_eq(parse("cc-" TRACE "-" SPAN "-01-what-comes-next", &tp), ES_OK);
    cr_assert_str_eq(tp.span_id, SPAN);
    cr_assert_eq(parse("cc-" TRACE "-" SPAN "-01x", &tp), ES_EINVAL);
}

Test(trace, metadata_without_a_valid_traceparent_has_no_trace_context_nor_tracestate) {
    es_kv_t md[] = {{"tracestate", "vendor=1"}, {"traceparent", "00-zz"}};
    const char *state = "left";
    es_traceparent_t tp;
    cr_assert_eq(es_trace_from_metadata(md, 2, &tp, &state), ES_EINVAL);
    cr_assert_null(state);
    cr_assert_eq(es_trace_from_metadata(md, 1, &tp, &state), ES_ENOTFOUND);
    md[1].value = VALID;
    cr_assert_eq(es_trace_from_metadata(md, 2, &tp, &state), ES_OK);
    cr_assert_str_eq(state, "vendor=1");
}

/* ---- the embedded engine ------------------------------------------------------------------ */

typedef struct span_log {
    es_span_t spans[16];
    char names[16][96];
    size_t n;
} span_log;

static void on_span(const es_span_t *s, void *opaque) {
    span_log *l = opaque;
    if (l->n < 16) {
        l->spans[l->n] = *s;
        snprintf(l->names[l->n], sizeof l->names[0], "%s", s->name);
        l->spans[l->n].attributes = NULL; /* valid only during the call */
        l->n++;
    }
}

static char *dir;
static es_config_t *cfg;
static es_engine_t *engine;
static span_log spans;

static void setup(void) {
    dir = tu_tempdir();
    cfg = tu_config(dir, "store.db");
    memset(&spans, 0, sizeof spans);
    es_config_set_span_cb(cfg, on_span, &spans);
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(engine, &err), ES_OK, "%s", err.message);
}

static void teardown(void) {
    es_engine_destroy(engine);
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(dir);
}

TestSuite(trace_engine, .init = setup, .fini = teardown);

static es_err restock(const char *cid, const es_kv_t *md, size_t n, es_result_t *res) {
    Inventory__V1__Restock m = INVENTORY__V1__RESTOCK__INIT;
    m.quantity = 3;
    es_command_t cmd = {.aggregate_type = "inventory.item",
                        .aggregate_id = "sku-a",
                        .message = &m.base,
                        .command_id = cid,
                        .metadata = md,
                        .n_metadata = n};
    es_error_t err = {0};
    es_err rc = es_execute(engine, &cmd, res, &err);
    cr_assert(rc == ES_OK || rc == ES_EIDREUSED || rc == ES_EINVAL, "%s", err.message);
    return rc;
}

static const char *meta(const es_event_t *ev, const char *key) {
    const char *v = NULL;
    for (size_t i = 0; i < ev->n_metadata; i++)
        if (!strcmp(ev->metadata[i].key, key)) {
            cr_assert_null(v, "metadata key %s appears twice", key);
            v = ev->metadata[i].value;
        }
    return v;
}

/* The event's own span, checked to be a valid traceparent. */
static es_traceparent_t span_of(const es_event_t *ev) {
    es_traceparent_t tp;
    const char *v = meta(ev, ES_TRACEPARENT_KEY);
    cr_assert_not_null(v, "the event has no traceparent");
    cr_assert_eq(es_traceparent_parse(v, &tp, NULL), ES_OK, "%s", v);
    return tp;
}

Test(trace_engine, an_event_is_a_span_under_the_execute_span_under_the_callers) {
    es_kv_t md[] = {{"traceparent", VALID}, {"tracestate", "vendor=7"}, {"who", "me"}};
    es_result_t res = {0};
    cr_assert_eq(restock("c-1", md, 3, &res), ES_OK);
    cr_assert_eq(res.n_events, 1);
    es_traceparent_t ev = span_of(res.events[0]);
    cr_assert_str_eq(ev.trace_id, TRACE);
    cr_assert_str_neq(ev.span_id, SPAN, "the event's span is its own");
    cr_assert_str_eq(meta(res.events[0], "tracestate"), "vendor=7");
    cr_assert_str_eq(meta(res.events[0], "who"), "me");
    const char *parent = meta(res.events[0], ES_PARENT_SPAN_KEY);
    cr_assert_not_null(parent);
    /* The parent is the execute span, whose own parent is the caller's span. */
    cr_assert_eq(spans.n, 2);
    cr_assert_eq(spans.spans[0].phase, ES_SPAN_START);
    cr_assert_eq(spans.spans[1].phase, ES_SPAN_END);
    cr_assert_str_eq(spans.names[0], "eskit.execute inventory.item");
    for (size_t i = 0; i < 2; i++) {
        cr_assert_str_eq(spans.spans[i].trace_id, TRACE);
        cr_assert_str_eq(spans.spans[i].span_id, parent);
        cr_assert_str_eq(spans.spans[i].parent_span_id, SPAN);
    }
    cr_assert_str_eq(spans.spans[1].outcome, "accepted");
    cr_assert_geq(spans.spans[1].end_us, spans.spans[1].start_us);
    cr_assert_eq(spans.spans[1].start_us, spans.spans[0].start_us);
    es_result_clear(&res);
}

Test(trace_engine, a_command_without_traceparent_starts_a_trace_of_its_own) {
    es_result_t a = {0}, b = {0};
    cr_assert_eq(restock("c-a", NULL, 0, &a), ES_OK);
    cr_assert_eq(restock("c-b", NULL, 0, &b), ES_OK);
    es_traceparent_t ta = span_of(a.events[0]), tb = span_of(b.events[0]);
    cr_assert_str_neq(ta.trace_id, tb.trace_id, "two commands, two traces");
    /* The execute span is the root: it has no parent. */
    cr_assert_str_eq(spans.spans[0].parent_span_id, "");
    cr_assert_str_eq(meta(a.events[0], ES_PARENT_SPAN_KEY), spans.spans[0].span_id);
    es_result_clear(&a);
    es_result_clear(&b);
}

Test(trace_engine, an_invalid_traceparent_starts_a_new_trace_and_drops_its_tracestate) {
    es_kv_t md[] = {{"traceparent", "00-" TRACE "-0000000000000000-01"},
                    {"tracestate", "vendor=7"},
                    {"eskit.parent_span", "1111111111111111"}};
    es_result_t res = {0};
    cr_assert_eq(restock("c-1", md, 3, &res), ES_OK);
    es_traceparent_t ev = span_of(res.events[0]);
    cr_assert_str_neq(ev.trace_id, TRACE);
    cr_assert_null(meta(res.events[0], "tracestate"));
    cr_assert_str_eq(meta(res.events[0], ES_PARENT_SPAN_KEY), spans.spans[0].span_id,
                     "the caller's eskit.parent_span is replaced");
    cr_assert_str_eq(spans.spans[0].parent_span_id, "");
    es_result_clear(&res);
}

Test(trace_engine, a_retry_with_another_traceparent_is_the_same_command) {
    es_kv_t md[] = {{"traceparent", VALID}};
    es_result_t first = {0}, again = {0};
    cr_assert_eq(restock("c-retry", md, 1, &first), ES_OK);
    md[0].value = "00-" TRACE "-1234567890abcdef-01";
    cr_assert_eq(restock("c-retry", md, 1, &again), ES_OK, "a retry must not be ES_EIDREUSED");
    cr_assert(again.duplicate);
    cr_assert_eq(again.first_version, first.first_version);
    cr_assert_str_eq(again.events[0]->event_id, first.events[0]->event_id);
    cr_assert_str_eq(spans.spans[3].outcome, "duplicate");
    es_result_clear(&first);
    es_result_clear(&again);
}

Test(trace_engine, a_caller_at_the_metadata_limit_stays_within_it) {
    es_kv_t md[ES_MAX_METADATA + 2];
    char keys[ES_MAX_METADATA][16];
    for (int i = 0; i < ES_MAX_METADATA; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        md[i] = (es_kv_t){keys[i], "v"};
    }
    md[ES_MAX_METADATA] = (es_kv_t){"traceparent", VALID};
    md[ES_MAX_METADATA + 1] = (es_kv_t){"tracestate", "vendor=7"};
    es_result_t res = {0};
    cr_assert_eq(restock("c-full", md, ES_MAX_METADATA + 2, &res), ES_OK);
    /* its 64 entries, then traceparent, eskit.parent_span and tracestate */
    cr_assert_eq(res.events[0]->n_metadata, ES_MAX_METADATA + 3);
    es_result_clear(&res);
    md[ES_MAX_METADATA] = (es_kv_t){"one-more", "v"};
    cr_assert_eq(restock("c-over", md, ES_MAX_METADATA + 1, &res), ES_EINVAL);
    es_result_clear(&res);
}

static int first_traceparent(const es_event_t *ev, void *opaque) {
    snprintf(opaque, ES_TRACEPARENT_LEN + 1, "%s", meta(ev, ES_TRACEPARENT_KEY));
    return 1;
}

/* A saga database of eskit 0.3, whose outbox has no trace columns, gets them: its saga runs and
 * its commands carry the order's trace. */
Test(trace_engine, a_saga_database_from_before_trace_context_gets_its_columns) {
    char *path = tu_path(dir, "saga.db");
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db,
                              "CREATE TABLE es_saga_targets ("
                              " command_id TEXT PRIMARY KEY, saga TEXT NOT NULL, id TEXT NOT NULL,"
                              " step INTEGER NOT NULL, target INTEGER NOT NULL, kind TEXT NOT NULL,"
                              " aggregate_type TEXT NOT NULL, aggregate_id TEXT NOT NULL,"
                              " command_type TEXT NOT NULL, payload BLOB NOT NULL,"
                              " deadline INTEGER NOT NULL, status TEXT NOT NULL,"
                              " created_at INTEGER NOT NULL, sent_at INTEGER NOT NULL DEFAULT 0,"
                              " outcome TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '',"
                              " correlation_id TEXT NOT NULL DEFAULT '')",
                              NULL, NULL, NULL),
                 SQLITE_OK);
    sqlite3_close(db);
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "saga.db", path, &err), ES_OK, "%s", err.message);
    es_result_t res = {0};
    Inventory__V1__Restock r = INVENTORY__V1__RESTOCK__INIT;
    r.quantity = 5;
    es_command_t restock_cmd = {
        .aggregate_type = "inventory.item", .aggregate_id = "sku-m", .message = &r.base};
    cr_assert_eq(es_execute(engine, &restock_cmd, &res, &err), ES_OK, "%s", err.message);
    es_result_clear(&res);
    Orders__V1__LineItem item = ORDERS__V1__LINE_ITEM__INIT;
    item.sku = "sku-m";
    item.quantity = 1;
    item.unit_price_cents = 100;
    Orders__V1__LineItem *items[] = {&item};
    Orders__V1__PlaceOrder m = ORDERS__V1__PLACE_ORDER__INIT;
    m.customer_id = "alice";
    m.n_items = 1;
    m.items = items;
    m.currency = "USD";
    es_kv_t md[] = {{"traceparent", VALID}};
    es_command_t place = {.aggregate_type = "orders.order",
                          .aggregate_id = "o-m",
                          .message = &m.base,
                          .metadata = md,
                          .n_metadata = 1};
    cr_assert_eq(es_execute(engine, &place, &res, &err), ES_OK, "%s", err.message);
    es_result_clear(&res);
    es_saga_t *coord = NULL;
    cr_assert_eq(es_saga_new(cfg, &demo_fulfilment_def, engine, &coord, &err), ES_OK, "%s",
                 err.message);
    uint64_t active = 1;
    for (int i = 0; i < 500 && active; i++) {
        cr_assert_eq(es_saga_poll(coord, 10, NULL, &err), ES_OK, "%s", err.message);
        cr_assert_eq(es_saga_active(coord, &active, &err), ES_OK, "%s", err.message);
    }
    cr_assert_eq(active, 0);
    es_saga_destroy(coord);
    char tp[ES_TRACEPARENT_LEN + 1] = "";
    cr_assert_eq(es_store_read_stream(es_engine_store(engine), "payments.payment", "o-m", 1,
                                      first_traceparent, tp, &err),
                 ES_OK, "%s", err.message);
    es_traceparent_t parsed;
    cr_assert_eq(es_traceparent_parse(tp, &parsed, NULL), ES_OK, "'%s'", tp);
    cr_assert_str_eq(parsed.trace_id, TRACE, "the saga's command carries the order's trace");
    free(path);
}
