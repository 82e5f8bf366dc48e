/* The demo's read models (order_summary, customer_orders) kept by es_runner over orders the
 * demo domain decided: their rows and counters, exactly-once polls, rebuilds by es_replay,
 * parked events and the .so modules. */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "customer_orders.h"
#include "domain.h"
#include "order_summary.h"
#include "testutil.h"

#define MODULE_DIR ESKIT_BINARY_DIR "/tools/esctl/projectors"

static char *dir;
static es_config_t *cfg;
static es_engine_t *engine;
static size_t n_events; /* events the tests appended to orders.order */

static const es_projector_def *const both[] = {&es_order_summary_projector,
                                               &es_customer_orders_projector};

/* A config on this test's event log and the read model <dir>/<readmodel>. */
static es_config_t *config_for(const char *readmodel) {
    es_config_t *c = tu_config(dir, "events.db");
    char *path = tu_path(dir, readmodel);
    cr_assert_not_null(c);
    cr_assert_not_null(path);
    es_error_t err = {0};
    cr_assert_eq(es_config_set(c, "readmodel.db", path, &err), ES_OK, "%s", err.message);
    free(path);
    return c;
}

static void setup(void) {
    dir = tu_tempdir();
    cr_assert_not_null(dir);
    cfg = config_for("read.db");
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "es_engine_new: %s", err.message);
    cr_assert_eq(demo_register_all(engine, &err), ES_OK, "demo_register_all: %s", err.message);
    n_events = 0;
}

static void teardown(void) {
    es_engine_destroy(engine);
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(dir);
}

TestSuite(demo_projectors, .init = setup, .fini = teardown);

/* Commands */

static void execute(const char *id, const ProtobufCMessage *msg) {
    es_command_t cmd = {.aggregate_type = "orders.order", .aggregate_id = id, .message = msg};
    es_result_t res = {0};
    es_error_t err = {0};
    es_err rc = es_execute(engine, &cmd, &res, &err);
    cr_assert_eq(rc, ES_OK, "%s %s: %s: %s", msg->descriptor->short_name, id, es_strerror(rc),
                 res.reason ? res.reason : err.message);
    n_events += res.n_events;
    es_result_clear(&res);
}

#define MAX_LINES 4

/* Places id for customer: lines lines of quantity units at unit_cents each. */
static void place(const char *id, const char *customer, size_t lines, uint32_t quantity,
                  int64_t unit_cents) {
    static char *const skus[MAX_LINES] = {"sku-mug", "sku-tee", "sku-cap", "sku-hoodie"};
    Orders__V1__LineItem items[MAX_LINES];
    Orders__V1__LineItem *ptrs[MAX_LINES];
    Orders__V1__PlaceOrder cmd = ORDERS__V1__PLACE_ORDER__INIT;
    cr_assert_leq(lines, MAX_LINES);
    for (size_t i = 0; i < lines; i++) {
        orders__v1__line_item__init(&items[i]);
        items[i].sku = skus[i];
        items[i].quantity = quantity;
        items[i].unit_price_cents = unit_cents;
        ptrs[i] = &items[i];
    }
    cmd.customer_id = (char *)customer;
    cmd.currency = "USD";
    cmd.n_items = lines;
    cmd.items = ptrs;
    execute(id, &cmd.base);
}

static void confirm(const char *id) {
    Orders__V1__ConfirmOrder cmd = ORDERS__V1__CONFIRM_ORDER__INIT;
    execute(id, &cmd.base);
}

static void cancel(const char *id, const char *reason) {
    Orders__V1__CancelOrder cmd = ORDERS__V1__CANCEL_ORDER__INIT;
    cmd.reason = (char *)reason;
    execute(id, &cmd.base);
}

/* Appends one raw event, bypassing the domain's rules. */
static void append_raw(const char *id, const char *event_type, const uint8_t *payload, size_t len) {
    es_new_event_t ev = {.event_type = event_type, .payload = payload, .payload_len = len};
    es_error_t err = {0};
    cr_assert_eq(es_store_append(es_engine_store(engine), "orders.order", id, ES_EXPECT_ANY, 0, &ev,
                                 1, NULL, &err),
                 ES_OK, "appending %s to %s: %s", event_type, id, err.message);
    n_events++;
}

/* Cancels a confirmed order the way logs written before the order refused that did: the
 * projectors still have to follow it. */
static void cancel_confirmed(const char *id, const char *reason) {
    Orders__V1__OrderCancelled ev = ORDERS__V1__ORDER_CANCELLED__INIT;
    uint8_t buf[256];
    ev.reason = (char *)reason;
    cr_assert_lt(orders__v1__order_cancelled__get_packed_size(&ev), sizeof buf);
    size_t len = orders__v1__order_cancelled__pack(&ev, buf);
    append_raw(id, "orders.v1.OrderCancelled", buf, len);
}

struct when {
    uint64_t version;
    int64_t at_us;
};

static int note_time(const es_event_t *ev, void *opaque) {
    struct when *w = opaque;
    if (ev->version == w->version)
        w->at_us = ev->occurred_at_us;
    return 0;
}

/* When event version of order id occurred, as the log says. */
static int64_t occurred_at(const char *id, uint64_t version) {
    struct when w = {version, 0};
    es_error_t err = {0};
    cr_assert_eq(es_store_read_stream(es_engine_store(engine), "orders.order", id, version,
                                      note_time, &w, &err),
                 ES_OK, "%s", err.message);
    cr_assert_gt(w.at_us, 0, "orders.order/%s has no version %llu", id,
                 (unsigned long long)version);
    return w.at_us;
}

/* Runners */

/* Polls a new runner of def on c until a poll consumes nothing; returns what it consumed. */
static size_t catch_up_on(const es_config_t *c, const es_projector_def *def,
                          es_runner_stats_t *stats) {
    es_runner_t *r = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_runner_new(c, def, &r, &err), ES_OK, "es_runner_new(%s): %s", def->name,
                 err.message);
    size_t total = 0, n;
    do {
        n = 0;
        cr_assert_eq(es_runner_poll(r, 0, &n, &err), ES_OK, "%s: %s", def->name, err.message);
        total += n;
    } while (n > 0);
    if (stats)
        es_runner_stats(r, stats);
    es_runner_destroy(r);
    return total;
}

/* Like catch_up_on, and asserts every record consumed was applied. */
static size_t catch_up(const es_projector_def *def) {
    es_runner_stats_t st;
    size_t n = catch_up_on(cfg, def, &st);
    cr_assert_eq(st.parked, 0, "%s parked %llu event(s)", def->name, (unsigned long long)st.parked);
    cr_assert_eq(st.applied, n, "%s consumed %zu records but applied %llu", def->name, n,
                 (unsigned long long)st.applied);
    return n;
}

/* Queries */

/* Every row of sql on c's read model, columns joined by '|', rows by '\n', NULL as "NULL";
 * param (may be NULL) is bound to ?1. Caller frees with sqlite3_free. */
static char *query_on(const es_config_t *c, const char *sql, const char *param) {
    const char *path = es_config_get(c, "readmodel.db");
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK,
                 "opening %s: %s", path, sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db));
    if (param)
        cr_assert_eq(sqlite3_bind_text(s, 1, param, -1, SQLITE_STATIC), SQLITE_OK);
    sqlite3_str *out = sqlite3_str_new(db);
    int rc, rows = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (rows++)
            sqlite3_str_appendchar(out, 1, '\n');
        for (int i = 0; i < sqlite3_column_count(s); i++) {
            const unsigned char *v = sqlite3_column_text(s, i);
            sqlite3_str_appendf(out, "%s%s", i ? "|" : "", v ? (const char *)v : "NULL");
        }
    }
    cr_assert_eq(rc, SQLITE_DONE, "%s: %s", sql, sqlite3_errmsg(db));
    char *text = sqlite3_str_finish(out);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return text ? text : sqlite3_mprintf("%s", "");
}

static void assert_rows(const char *sql, const char *param, const char *want) {
    char *got = query_on(cfg, sql, param);
    cr_assert_str_eq(got, want, "%s\n-- got:\n%s\n-- want:\n%s", sql, got, want);
    sqlite3_free(got);
}

static const char *const dumps[] = {
    "SELECT * FROM order_summary ORDER BY order_id",
    "SELECT * FROM customer_orders ORDER BY customer_id",
    "SELECT * FROM customer_orders_order ORDER BY order_id",
};
#define N_DUMPS (sizeof dumps / sizeof dumps[0])

static void dump_all(const es_config_t *c, char *out[N_DUMPS]) {
    for (size_t i = 0; i < N_DUMPS; i++)
        out[i] = query_on(c, dumps[i], NULL);
}

static void assert_same_dumps(char *a[N_DUMPS], char *b[N_DUMPS], const char *what) {
    for (size_t i = 0; i < N_DUMPS; i++) {
        cr_assert_str_eq(a[i], b[i], "%s: %s differs\n-- before:\n%s\n-- after:\n%s", what,
                         dumps[i], a[i], b[i]);
        sqlite3_free(a[i]);
        sqlite3_free(b[i]);
    }
}

/* A few orders in every state, for the tests that compare whole read models. */
static void play_story(void) {
    place("o-1", "alice", 2, 1, 1250);
    place("o-2", "bob", 1, 1, 4500);
    place("o-3", "carol", 1, 3, 199);
    place("o-4", "alice", 1, 1, 1999);
    place("o-5", "bob", 3, 2, 100);
    confirm("o-1");
    confirm("o-3");
    cancel("o-2", "customer changed their mind");
    confirm("o-5");
    cancel_confirmed("o-5", "damaged in transit");
}

#define SUMMARY_ROW                                                                                \
    "SELECT order_id, status, customer_id, amount_cents, currency, item_count, cancel_reason, "    \
    "version FROM order_summary ORDER BY order_id"
#define CUSTOMER_ROW                                                                               \
    "SELECT customer_id, orders_placed, orders_confirmed, orders_cancelled, total_placed_cents, "  \
    "total_confirmed_cents FROM customer_orders ORDER BY customer_id"

Test(demo_projectors, order_summary_follows_each_order_from_placed_to_its_outcome) {
    place("o-1", "alice", 2, 1, 1250);
    place("o-2", "bob", 1, 3, 199);
    cr_assert_eq(catch_up(&es_order_summary_projector), 2);
    assert_rows(SUMMARY_ROW, NULL,
                "o-1|placed|alice|2500|USD|2|NULL|1\n"
                "o-2|placed|bob|597|USD|1|NULL|1");

    confirm("o-1");
    cancel("o-2", "out of stock");
    cr_assert_eq(catch_up(&es_order_summary_projector), 2);
    assert_rows(SUMMARY_ROW, NULL,
                "o-1|confirmed|alice|2500|USD|2|NULL|2\n"
                "o-2|cancelled|bob|597|USD|1|out of stock|2");

    cancel_confirmed("o-1", "returned");
    cr_assert_eq(catch_up(&es_order_summary_projector), 1);
    assert_rows(SUMMARY_ROW, NULL,
                "o-1|cancelled|alice|2500|USD|2|returned|3\n"
                "o-2|cancelled|bob|597|USD|1|out of stock|2");
}

Test(demo_projectors, order_summary_times_come_from_the_events) {
    place("o-1", "alice", 1, 1, 1250);
    confirm("o-1");
    catch_up(&es_order_summary_projector);
    char want[128];
    snprintf(want, sizeof want, "%lld|%lld", (long long)occurred_at("o-1", 1),
             (long long)occurred_at("o-1", 2));
    assert_rows("SELECT placed_at_us, updated_at_us FROM order_summary WHERE order_id = ?1", "o-1",
                want);
}

Test(demo_projectors, customer_orders_counts_every_order_once_and_moves_it_between_counters) {
    place("a-1", "alice", 2, 1, 1250);
    place("a-2", "alice", 1, 1, 4500);
    place("a-3", "alice", 1, 2, 1999);
    place("b-1", "bob", 1, 1, 199);
    cr_assert_eq(catch_up(&es_customer_orders_projector), 4);
    assert_rows(CUSTOMER_ROW, NULL,
                "alice|3|0|0|10998|0\n"
                "bob|1|0|0|199|0");

    confirm("a-1");
    cancel("a-2", "found it cheaper");
    confirm("a-3");
    cr_assert_eq(catch_up(&es_customer_orders_projector), 3);
    assert_rows(CUSTOMER_ROW, NULL,
                "alice|3|2|1|10998|6498\n"
                "bob|1|0|0|199|0");

    /* A confirmed order that is cancelled leaves the confirmed counters. */
    cancel_confirmed("a-3", "returned");
    cr_assert_eq(catch_up(&es_customer_orders_projector), 1);
    assert_rows(CUSTOMER_ROW, NULL,
                "alice|3|1|2|10998|2500\n"
                "bob|1|0|0|199|0");
    assert_rows("SELECT order_id, customer_id, amount_cents, status, version "
                "FROM customer_orders_order ORDER BY order_id",
                NULL,
                "a-1|alice|2500|confirmed|2\n"
                "a-2|alice|4500|cancelled|2\n"
                "a-3|alice|3998|cancelled|3\n"
                "b-1|bob|199|placed|1");

    char want[32];
    snprintf(want, sizeof want, "%lld", (long long)occurred_at("a-3", 1));
    assert_rows("SELECT last_order_at_us FROM customer_orders WHERE customer_id = ?1", "alice",
                want);
}

Test(demo_projectors, both_read_models_agree_on_every_customer) {
    play_story();
    for (size_t i = 0; i < 2; i++)
        catch_up(both[i]);
    assert_rows(CUSTOMER_ROW, NULL,
                "alice|2|1|0|4499|2500\n"
                "bob|2|0|2|5100|0\n"
                "carol|1|1|0|597|597");
    /* The same figures, derived from order_summary alone. */
    assert_rows("SELECT customer_id, count(*), sum(status = 'confirmed'), "
                "sum(status = 'cancelled'), sum(amount_cents), "
                "sum(CASE status WHEN 'confirmed' THEN amount_cents ELSE 0 END) "
                "FROM order_summary GROUP BY customer_id ORDER BY customer_id",
                NULL,
                "alice|2|1|0|4499|2500\n"
                "bob|2|0|2|5100|0\n"
                "carol|1|1|0|597|597");
}

Test(demo_projectors, a_caught_up_runner_applies_nothing_more) {
    play_story();
    for (size_t i = 0; i < 2; i++) {
        es_runner_t *r = NULL;
        es_error_t err = {0};
        size_t n = 0, total = 0;
        cr_assert_eq(es_runner_new(cfg, both[i], &r, &err), ES_OK, "%s", err.message);
        do {
            cr_assert_eq(es_runner_poll(r, 0, &n, &err), ES_OK, "%s", err.message);
            total += n;
        } while (n > 0);
        cr_assert_eq(total, n_events, "%s consumed %zu of %zu events", both[i]->name, total,
                     n_events);
        cr_assert_eq(es_runner_poll(r, 0, &n, &err), ES_OK, "%s", err.message);
        cr_assert_eq(n, 0, "%s applied %zu events twice", both[i]->name, n);
        es_runner_destroy(r);
    }

    char *before[N_DUMPS], *after[N_DUMPS];
    dump_all(cfg, before);
    /* New runners start from the stored checkpoints. */
    for (size_t i = 0; i < 2; i++)
        cr_assert_eq(catch_up(both[i]), 0, "a new %s runner re-applied events", both[i]->name);
    dump_all(cfg, after);
    assert_same_dumps(before, after, "a second runner");

    /* What comes later is applied, and only that. */
    confirm("o-4");
    for (size_t i = 0; i < 2; i++)
        cr_assert_eq(catch_up(both[i]), 1);
    assert_rows("SELECT status, version FROM order_summary WHERE order_id = ?1", "o-4",
                "confirmed|2");
}

Test(demo_projectors, a_rebuild_by_replay_equals_the_live_read_models) {
    play_story();
    for (size_t i = 0; i < 2; i++)
        catch_up(both[i]);
    char *live[N_DUMPS], *rebuilt[N_DUMPS];
    dump_all(cfg, live);

    for (size_t i = 0; i < 2; i++) {
        es_replay_hooks_t hooks = {0};
        es_replay_result_t res = {0};
        es_error_t err = {0};
        cr_assert_eq(es_replay(cfg, both[i], &hooks, &res, &err), ES_OK, "es_replay(%s): %s",
                     both[i]->name, err.message);
        cr_assert_eq(res.events, n_events, "%s replayed %llu of %zu events", both[i]->name,
                     (unsigned long long)res.events, n_events);
        cr_assert_eq(res.parked, 0);
    }
    dump_all(cfg, rebuilt);
    assert_same_dumps(live, rebuilt, "es_replay");

    /* The rebuilt read models carry their checkpoints: nothing is applied twice. */
    for (size_t i = 0; i < 2; i++)
        cr_assert_eq(catch_up(both[i]), 0, "%s re-applied events after the replay", both[i]->name);
}

/* The parked entry of projector for aggregate id, checked to carry code. */
static void assert_parked(const es_dlq_entry_t *list, size_t n, const char *id, es_err code,
                          const char *mentions) {
    const es_dlq_entry_t *e = NULL;
    for (size_t i = 0; i < n && !e; i++)
        if (strcmp(list[i].key, id) == 0)
            e = &list[i];
    cr_assert_not_null(e, "nothing of %s was parked", id);
    cr_assert_eq(e->code, code, "%s was parked with %s: %s", id, es_strerror((es_err)e->code),
                 e->error);
    char offset[48];
    snprintf(offset, sizeof offset, "offset %lld", (long long)e->offset);
    cr_assert_not_null(strstr(e->error, id), "\"%s\" does not name %s", e->error, id);
    cr_assert_not_null(strstr(e->error, offset), "\"%s\" does not name its %s", e->error, offset);
    cr_assert_not_null(strstr(e->error, mentions), "\"%s\" does not mention %s", e->error,
                       mentions);
}

Test(demo_projectors, bad_unknown_and_orphan_events_are_parked_naming_the_event) {
    static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff};
    place("o-1", "alice", 1, 1, 1250);
    append_raw("bad-1", "orders.v1.OrderPlaced", garbage, sizeof garbage);
    append_raw("odd-1", "orders.v1.OrderShipped", NULL, 0);
    append_raw("ghost-1", "orders.v1.OrderConfirmed", NULL, 0);
    place("o-2", "bob", 1, 1, 4500);

    for (size_t i = 0; i < 2; i++) {
        es_runner_stats_t st;
        cr_assert_eq(catch_up_on(cfg, both[i], &st), 5);
        cr_assert_eq(st.applied, 2, "%s applied %llu", both[i]->name,
                     (unsigned long long)st.applied);
        cr_assert_eq(st.parked, 3, "%s parked %llu", both[i]->name, (unsigned long long)st.parked);

        es_dlq_entry_t *list = NULL;
        size_t n = 0;
        es_error_t err = {0};
        cr_assert_eq(es_dlq_list(cfg, both[i]->name, false, &list, &n, &err), ES_OK, "%s",
                     err.message);
        cr_assert_eq(n, 3);
        assert_parked(list, n, "bad-1", ES_EDECODE, "orders.v1.OrderPlaced");
        assert_parked(list, n, "odd-1", ES_EUNKNOWN_TYPE, "orders.v1.OrderShipped");
        assert_parked(list, n, "ghost-1", ES_ESTATE, "orders.v1.OrderConfirmed");
        free(list);
    }
    /* The good events around them were applied. */
    assert_rows("SELECT order_id, status FROM order_summary ORDER BY order_id", NULL,
                "o-1|placed\no-2|placed");
    assert_rows(CUSTOMER_ROW, NULL, "alice|1|0|0|1250|0\nbob|1|0|0|4500|0");
}

Test(demo_projectors, the_modules_load_by_name_and_build_the_same_read_models) {
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "projector.path", MODULE_DIR, &err), ES_OK, "%s", err.message);
    es_config_t *static_cfg = config_for("static.db");
    play_story();
    for (size_t i = 0; i < 2; i++) {
        es_projector_module_t *mod = NULL;
        cr_assert_eq(es_projector_load(cfg, both[i]->name, &mod, &err), ES_OK, "%s", err.message);
        const es_projector_def *def = es_projector_module_def(mod);
        cr_assert_str_eq(def->name, both[i]->name);
        cr_assert_eq(def->schema_version, both[i]->schema_version);
        cr_assert_str_eq(def->topics[0], "orders.order.events");
        cr_assert_null(def->topics[1]);
        cr_assert_neq(def, both[i], "the module is a copy of its own, not the static definition");
        cr_assert_eq(catch_up(def), n_events);
        es_projector_unload(mod);
        catch_up_on(static_cfg, both[i], NULL);
    }
    char *from_modules[N_DUMPS], *from_static[N_DUMPS];
    dump_all(cfg, from_modules);
    dump_all(static_cfg, from_static);
    assert_same_dumps(from_modules, from_static, "modules vs static definitions");
    es_config_destroy(static_cfg);
}
