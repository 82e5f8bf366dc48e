/*
 * Upcasters on every read path, the same on both backends (CTest runs this file with
 * CONFORMANCE_BACKEND=embedded and =kafka): a log written with old event types is read as
 * current types by the projector runner, replay, DLQ redrive, stream and log reads, engine load
 * and execute (on Kafka: the command processor's restore and its engine), and the saga
 * coordinator; versions stay contiguous, a failing upcaster parks the event naming itself, and
 * the stored bytes are never rewritten.
 *
 * "notes": test.note events carry text. test.v1.Noted "hello" -> test.v2.Noted "[v2]hello" ->
 * test.v3.Noted "[v3]HELLO" (a field rewritten: the body upper-cased), the current type, which
 * the projector here is the only one it takes. test.v1.Cursed fails to upcast until fixed.
 * "orders": the demo domain with an orders.v0.OrderPlaced of before protobuf, text
 * "customer;sku;quantity;unit price;currency", upcast to orders.v1.OrderPlaced.
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "log/log.h"
#include "domain.h"
#include "fulfilment.h"
#include "testutil.h"

#define TYPE "test.note"
#define CURRENT "test.v3.Noted"
#define SAGA "orders.fulfilment"
#define WAIT_MS 15000

static tb_t *b;
static es_saga_t *coord;
static int cursed_fixed;

/* ---- upcasters ---- */

static es_err prefix_v2(const es_event_t *ev, void *opaque, uint8_t **out, size_t *out_len,
                        es_error_t *err) {
    (void)opaque, (void)err;
    *out_len = ev->payload_len + 4;
    *out = malloc(*out_len);
    memcpy(*out, "[v2]", 4);
    memcpy(*out + 4, ev->payload, ev->payload_len);
    return ES_OK;
}

/* "[v2]body" -> "[v3]BODY"; anything else is refused. */
static es_err shout_v3(const es_event_t *ev, void *opaque, uint8_t **out, size_t *out_len,
                       es_error_t *err) {
    (void)opaque;
    if (ev->payload_len < 4 || memcmp(ev->payload, "[v2]", 4))
        return es_fail(err, ES_EINVAL, "not a v2 note");
    *out_len = ev->payload_len;
    *out = malloc(*out_len);
    memcpy(*out, "[v3]", 4);
    for (size_t i = 4; i < ev->payload_len; i++)
        (*out)[i] = (uint8_t)toupper(ev->payload[i]);
    return ES_OK;
}

static es_err cursed(const es_event_t *ev, void *opaque, uint8_t **out, size_t *out_len,
                     es_error_t *err) {
    if (!cursed_fixed)
        return es_fail(err, ES_EINVAL, "the curse holds");
    return prefix_v2(ev, opaque, out, out_len, err);
}

static const es_upcaster_t notes_v1_v2 = {
    ES_UPCASTER_ABI, "notes-v1-to-v2", "test.v1.Noted", "test.v2.Noted", 0, 0, prefix_v2, NULL};
static const es_upcaster_t notes_v2_v3 = {
    ES_UPCASTER_ABI, "notes-v2-to-v3", "test.v2.Noted", CURRENT, 0, 0, shout_v3, NULL};
static const es_upcaster_t notes_cursed = {
    ES_UPCASTER_ABI, "cursed-upcaster", "test.v1.Cursed", "test.v2.Noted", 0, 0, cursed, NULL};

/* "alice;sku-a;2;1500;USD" -> orders.v1.OrderPlaced, the amount computed. */
static es_err placed_v0_v1(const es_event_t *ev, void *opaque, uint8_t **out, size_t *out_len,
                           es_error_t *err) {
    char text[256], customer[64], sku[64], currency[8];
    unsigned quantity = 0;
    long long price = 0;
    (void)opaque;
    snprintf(text, sizeof text, "%.*s", (int)ev->payload_len, (const char *)ev->payload);
    if (sscanf(text, "%63[^;];%63[^;];%u;%lld;%7s", customer, sku, &quantity, &price, currency) !=
        5)
        return es_fail(err, ES_EINVAL, "'%s' is not customer;sku;quantity;price;currency", text);
    Orders__V1__LineItem item = ORDERS__V1__LINE_ITEM__INIT;
    item.sku = sku;
    item.quantity = quantity;
    item.unit_price_cents = price;
    Orders__V1__LineItem *items[] = {&item};
    Orders__V1__OrderPlaced m = ORDERS__V1__ORDER_PLACED__INIT;
    m.customer_id = customer;
    m.n_items = 1;
    m.items = items;
    m.amount_cents = price * quantity;
    m.currency = currency;
    *out_len = orders__v1__order_placed__get_packed_size(&m);
    *out = malloc(*out_len ? *out_len : 1);
    orders__v1__order_placed__pack(&m, *out);
    return ES_OK;
}

static const es_upcaster_t orders_v0_v1 = {ES_UPCASTER_ABI,
                                           "order-placed-v0-to-v1",
                                           "orders.v0.OrderPlaced",
                                           "orders.v1.OrderPlaced",
                                           0,
                                           0,
                                           placed_v0_v1,
                                           NULL};

static void add(const es_upcaster_t *u) {
    es_error_t err = {0};
    cr_assert_eq(es_config_add_upcaster(tb_config(b), u, &err), ES_OK, "%s", err.message);
}

/* ---- the notes projector: current types only ---- */

static es_err migrate(sqlite3 *db, int from, es_error_t *err) {
    (void)from;
    if (sqlite3_exec(db, "CREATE TABLE notes(id TEXT, version INT, body TEXT)", NULL, NULL, NULL) !=
        SQLITE_OK)
        return es_fail(err, ES_EIO, "create notes: %s", sqlite3_errmsg(db));
    return ES_OK;
}

static es_err apply(es_projector_ctx_t *ctx, const es_event_t *ev, es_error_t *err) {
    if (strcmp(ev->event_type, CURRENT))
        return es_fail(err, ES_EINVAL, "given %s, which is not current", ev->event_type);
    sqlite3_stmt *s = es_ctx_stmt(ctx, "INSERT INTO notes VALUES (?1, ?2, ?3)", err);
    if (!s)
        return err->code;
    sqlite3_bind_text(s, 1, ev->aggregate_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)ev->version);
    sqlite3_bind_text(s, 3, (const char *)ev->payload, (int)ev->payload_len, SQLITE_STATIC);
    return es_ctx_exec(ctx, s, err);
}

static const char *const topics[] = {TYPE ".events", NULL};
static const es_projector_def current_notes = {.abi_version = ES_PROJECTOR_ABI,
                                               .name = "current_notes",
                                               .schema_version = 1,
                                               .topics = topics,
                                               .migrate = migrate,
                                               .apply = apply};

static void note(const char *id, const char *event_type, const char *text) {
    tb_append(b, TYPE, id, event_type, text, strlen(text));
}

/* One text of a query on the read model ("" for NULL). Caller frees. */
static char *query_text(const char *sql) {
    char *path = tu_path(tb_dir(b), "read.db");
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
    const unsigned char *t = sqlite3_column_text(s, 0);
    char *out = strdup(t ? (const char *)t : "");
    sqlite3_finalize(s);
    sqlite3_close(db);
    free(path);
    return out;
}

/* The read model's rows of id as "version:body,...", in version order. */
static char *rows_of(const char *id) {
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT group_concat(version || ':' || body, ',') FROM (SELECT * FROM notes WHERE "
             "id = '%s' ORDER BY version)",
             id);
    return query_text(sql);
}

static void rows_are(const char *id, const char *want) {
    char *got = rows_of(id);
    cr_assert_str_eq(got, want, "rows of %s", id);
    free(got);
}

static uint64_t handled(const es_runner_stats_t *st) {
    return st->applied + st->parked + st->ignored + st->stale;
}

/* Polls until the runner has handled n more records. */
static es_runner_stats_t drain(es_runner_t *r, uint64_t n) {
    es_runner_stats_t st;
    es_runner_stats(r, &st);
    uint64_t want = handled(&st) + n;
    int64_t deadline = es_now_us() + WAIT_MS * 1000LL;
    es_error_t err = {0};
    while (handled(&st) < want) {
        cr_assert_lt(es_now_us(), deadline, "handled %llu of %llu records",
                     (unsigned long long)handled(&st), (unsigned long long)want);
        cr_assert_eq(es_runner_poll(r, 50, NULL, &err), ES_OK, "%s", err.message);
        es_runner_stats(r, &st);
    }
    es_runner_stats(r, &st);
    return st;
}

static es_runner_stats_t run_notes(uint64_t n) {
    es_runner_t *r = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_runner_new(tb_config(b), &current_notes, &r, &err), ES_OK, "%s", err.message);
    es_runner_stats_t st = drain(r, n);
    es_runner_destroy(r);
    return st;
}

typedef struct seen {
    char text[1024];
    uint64_t next_version;
    int contiguous;
} seen;

/* Collects "type=payload,..." and checks the versions of one stream run 1, 2, 3 ... */
static int see(const es_event_t *ev, void *opaque) {
    seen *s = opaque;
    size_t len = strlen(s->text);
    snprintf(s->text + len, sizeof s->text - len, "%s%s=%.*s", len ? "," : "", ev->event_type,
             (int)ev->payload_len, (const char *)ev->payload);
    if (ev->version != s->next_version++)
        s->contiguous = 0;
    return 0;
}

static void stream_is(es_store_t *store, const char *type, const char *id, const char *want) {
    seen s = {"", 1, 1};
    es_error_t err = {0};
    tb_events_of(b, type, id, 1);
    cr_assert_eq(es_store_read_stream(store, type, id, 1, see, &s, &err), ES_OK, "%s", err.message);
    cr_assert_str_eq(s.text, want, "%s/%s as read", type, id);
    cr_assert(s.contiguous, "versions of %s/%s are contiguous", type, id);
}

static void notes_setup(void) {
    static const char *const types[] = {TYPE, NULL};
    b = tb_open(types);
    cursed_fixed = 0;
}

static void teardown(void) {
    es_saga_destroy(coord);
    coord = NULL;
    tb_close(b);
}

TestSuite(upcasting, .init = notes_setup, .fini = teardown, .timeout = 120);

Test(upcasting, the_runner_and_replay_see_only_current_types_and_build_the_current_read_model) {
    note("n-1", "test.v1.Noted", "hello");
    note("n-1", "test.v2.Noted", "[v2]world");
    note("n-1", CURRENT, "[v3]DIRECT");
    note("n-2", "test.v1.Noted", "a");
    note("n-2", "test.v1.Noted", "b");
    note("n-3", CURRENT, "[v3]A"); /* what n-2 would be had it been written today */
    note("n-3", CURRENT, "[v3]B");
    add(&notes_v2_v3); /* a chain is found whatever order its links came in */
    add(&notes_v1_v2);
    es_runner_stats_t st = run_notes(7);
    cr_assert_eq(st.applied, 7, "parked %llu", (unsigned long long)st.parked);
    cr_assert_eq(st.parked, 0);
    rows_are("n-1", "1:[v3]HELLO,2:[v3]WORLD,3:[v3]DIRECT");
    rows_are("n-2", "1:[v3]A,2:[v3]B");
    rows_are("n-3", "1:[v3]A,2:[v3]B");

    es_replay_result_t res = {0};
    es_error_t err = {0};
    cr_assert_eq(es_replay(tb_config(b), &current_notes, NULL, &res, &err), ES_OK, "%s",
                 err.message);
    rows_are("n-1", "1:[v3]HELLO,2:[v3]WORLD,3:[v3]DIRECT");
    rows_are("n-2", "1:[v3]A,2:[v3]B");
    char *count = query_text("SELECT count(*) FROM notes");
    cr_assert_str_eq(count, "7", "replay rebuilt every row once");
    free(count);
}

Test(upcasting, stream_and_log_reads_see_current_types_and_the_stored_bytes_stay_old) {
    es_config_t *plain = es_config_dup(tb_config(b)); /* no upcasters */
    note("n-1", "test.v1.Noted", "hello");
    note("n-1", "test.v2.Noted", "[v2]x");
    add(&notes_v1_v2);
    add(&notes_v2_v3);
    es_store_t *store = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_store_new(tb_config(b), &store, &err), ES_OK, "%s", err.message);
    stream_is(store, TYPE, "n-1", CURRENT "=[v3]HELLO," CURRENT "=[v3]X");
    seen s = {"", 1, 1};
    int64_t next = 0;
    cr_assert_eq(es_store_read_log(store, NULL, 1, 0, see, &s, &next, &err), ES_OK, "%s",
                 err.message);
    cr_assert_str_eq(s.text, CURRENT "=[v3]HELLO," CURRENT "=[v3]X");
    es_store_destroy(store);

    cr_assert_eq(es_store_new(plain, &store, &err), ES_OK, "%s", err.message);
    stream_is(store, TYPE, "n-1", "test.v1.Noted=hello,test.v2.Noted=[v2]x");
    es_store_destroy(store);
    es_config_destroy(plain);
}

Test(upcasting, a_failing_upcaster_parks_the_event_naming_itself_and_redrive_applies_it_fixed) {
    note("n-1", "test.v1.Noted", "x");
    note("n-1", "test.v1.Cursed", "y");
    note("n-1", "test.v1.Noted", "z");
    add(&notes_v1_v2);
    add(&notes_v2_v3);
    add(&notes_cursed);
    es_runner_stats_t st = run_notes(3);
    cr_assert_eq(st.applied, 2);
    cr_assert_eq(st.parked, 1);
    rows_are("n-1", "1:[v3]X,3:[v3]Z");

    es_dlq_entry_t *d = NULL;
    size_t n = 0;
    es_error_t err = {0};
    cr_assert_eq(es_dlq_list(tb_config(b), "current_notes", false, &d, &n, &err), ES_OK, "%s",
                 err.message);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(d[0].key, "n-1");
    cr_assert_str_eq(d[0].event_type, "test.v1.Cursed", "the DLQ records the stored type");
    char where[64];
    snprintf(where, sizeof where, "offset %lld", (long long)d[0].offset);
    const char *want[] = {"upcaster 'cursed-upcaster'", "test.v1.Cursed", "test.note/n-1 version 2",
                          where, "the curse holds"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        cr_assert(strstr(d[0].error, want[i]), "'%s' lacks '%s'", d[0].error, want[i]);
    free(d);

    size_t applied = 0, failed = 0;
    cr_assert_eq(es_dlq_redrive(tb_config(b), &current_notes, NULL, 0, &applied, &failed, &err),
                 ES_OK, "%s", err.message);
    cr_assert_eq(failed, 1, "still cursed");
    cursed_fixed = 1;
    cr_assert_eq(es_dlq_redrive(tb_config(b), &current_notes, NULL, 0, &applied, &failed, &err),
                 ES_OK, "%s", err.message);
    cr_assert_eq(applied, 1);
    rows_are("n-1", "1:[v3]X,2:[v3]Y,3:[v3]Z");
}

/* "x" -> "x!": the rewrite of schema version 1 to 2 of test.v1.Noted. */
static es_err bang(const es_event_t *ev, void *opaque, uint8_t **out, size_t *out_len,
                   es_error_t *err) {
    (void)opaque, (void)err;
    *out_len = ev->payload_len + 1;
    *out = malloc(*out_len);
    memcpy(*out, ev->payload, ev->payload_len);
    (*out)[ev->payload_len] = '!';
    return ES_OK;
}

/* "x" -> "[v3]X": schema version 2 of test.v1.Noted becomes the current type. */
static es_err to_current(const es_event_t *ev, void *opaque, uint8_t **out, size_t *out_len,
                         es_error_t *err) {
    (void)opaque, (void)err;
    *out_len = ev->payload_len + 4;
    *out = malloc(*out_len);
    memcpy(*out, "[v3]", 4);
    for (size_t i = 0; i < ev->payload_len; i++)
        (*out)[4 + i] = (uint8_t)toupper(ev->payload[i]);
    return ES_OK;
}

/* Appends version `version` of TYPE/id at schema version sv, as a writer that registered it
 * would (es_store_append writes no schema version: the catalogue's writer side does). */
static void append_at_schema(const char *id, uint64_t version, const char *event_type, uint32_t sv,
                             const char *text) {
    es_event_t ev = {.aggregate_type = TYPE,
                     .aggregate_id = id,
                     .version = version,
                     .event_type = event_type,
                     .payload = (const uint8_t *)text,
                     .payload_len = strlen(text),
                     .occurred_at_us = es_now_us(),
                     .schema_version = sv};
    es_uuid7(ev.event_id);
    uint8_t *bytes = NULL;
    size_t n = 0;
    es_error_t err = {0};
    /* As a writer that registered sv writes it (the public encoder records no version). */
    cr_assert_eq(es_envelope_encode_made(&ev, &bytes, &n, &err), ES_OK, "%s", err.message);
    if (tb_kafka(b)) {
        tb_append_raw(b, TYPE, id, bytes, n);
    } else {
        es_log_t *log = NULL;
        int64_t pos = 0;
        es_log_record_t rec = {&ev, bytes, n};
        cr_assert_eq(es_log_open(tb_config(b), &log, &err), ES_OK, "%s", err.message);
        cr_assert_eq(log->store->begin(log, &err), ES_OK, "%s", err.message);
        cr_assert_eq(log->store->append(log, TYPE, id, version - 1, &rec, 1, &pos, &err), ES_OK,
                     "%s", err.message);
        cr_assert_eq(log->store->commit(log, &err), ES_OK, "%s", err.message);
        log->destroy(log);
    }
    es_free(bytes);
}

Test(upcasting, version_limited_upcasters_take_the_schema_versions_they_were_written_for) {
    append_at_schema("n-1", 1, "test.v1.Noted", 0, "a"); /* before the catalogue: the oldest */
    append_at_schema("n-1", 2, "test.v1.Noted", 1, "b");
    append_at_schema("n-1", 3, "test.v1.Noted", 2, "c");
    append_at_schema("n-1", 4, CURRENT, 1, "[v3]D");
    static const es_upcaster_t s1 = {
        ES_UPCASTER_ABI, "noted-s1-to-s2", "test.v1.Noted", "test.v1.Noted", 1, 2, bang, NULL};
    static const es_upcaster_t s2 = {
        ES_UPCASTER_ABI, "noted-s2-to-v3", "test.v1.Noted", CURRENT, 2, 0, to_current, NULL};
    add(&s2);
    add(&s1);
    es_runner_stats_t st = run_notes(4);
    cr_assert_eq(st.applied, 4, "parked %llu", (unsigned long long)st.parked);
    rows_are("n-1", "1:[v3]A!,2:[v3]B!,3:[v3]C,4:[v3]D");
}

/* "ESKIT_<KEY>=value" for the keys esctl needs to find this backend's log. */
static void env_of(char out[3][1024]) {
    static const char *const keys[] = {"backend", "db", "brokers"};
    size_t n = 0;
    for (size_t i = 0; i < 3; i++) {
        const char *v = es_config_get(tb_config(b), keys[i]);
        out[i][0] = '\0';
        if (!v)
            continue;
        char name[32];
        snprintf(name, sizeof name, "%s", keys[i]);
        for (char *p = name; *p; p++)
            *p = (char)toupper((unsigned char)*p);
        snprintf(out[n++], sizeof out[0], "ESKIT_%s=%s", name, v);
    }
}

Test(upcasting, esctl_events_shows_the_current_types_of_a_types_module_with_upcasters) {
    note("n-1", "test.v1.Noted", "hello");
    note("n-1", CURRENT, "[v3]NOW");
    tb_events_of(b, TYPE, "n-1", 2);
    char env_s[3][1024];
    env_of(env_s);
    const char *env[4] = {NULL, NULL, NULL, NULL};
    for (size_t i = 0, k = 0; i < 3; i++)
        if (env_s[i][0])
            env[k++] = env_s[i];
    char *copy = strdup(ESCTL_PATH);
    char *dir = strrchr(copy, '/');
    *dir = '\0';
    char *mod = tu_path(copy, "esctl_test_types_upcast.so");
    tu_result r = TU_ESCTL_ENV(env, "--types", mod, "events", "--json", TYPE, "n-1");
    cr_assert_eq(r.status, 0, "esctl events: %s%s", r.out, r.err);
    cr_expect(strstr(r.out, CURRENT), "%s", r.out);
    cr_expect_null(strstr(r.out, "test.v1.Noted"), "the stored type is not shown: %s", r.out);
    tu_result_free(&r);
    r = TU_ESCTL_ENV(env, "events", "--json", TYPE, "n-1"); /* no module: no upcasters */
    cr_assert_eq(r.status, 0, "esctl events: %s%s", r.out, r.err);
    cr_expect(strstr(r.out, "test.v1.Noted"), "%s", r.out);
    tu_result_free(&r);
    free(mod);
    free(copy);
}

Test(upcasting, esctl_replay_gives_the_projector_module_current_types) {
    static const char *const types[] = {"test.counter", NULL};
    tb_close(b); /* a backend with the counter module's topic */
    b = tb_open(types);
    for (int i = 1; i <= 3; i++) {
        char text[16];
        snprintf(text, sizeof text, "old:%d", i);
        tb_append(b, "test.counter", "c-1", "test.v0.Added", text, strlen(text));
    }
    tb_append(b, "test.counter", "c-1", "test.v1.Added", "tp1:10", 6);
    tb_events_of(b, "test.counter", "c-1", 4);
    char env_s[3][1024];
    env_of(env_s);
    const char *env[4] = {NULL, NULL, NULL, NULL};
    for (size_t i = 0, k = 0; i < 3; i++)
        if (env_s[i][0])
            env[k++] = env_s[i];
    char *copy = strdup(ESCTL_PATH);
    *strrchr(copy, '/') = '\0';
    char *mod = tu_path(copy, "esctl_test_types_upcast.so");
    char *counter = tu_path(TEST_MODULES_DIR, "counter.so");
    char *rm = tu_path(tb_dir(b), "read.db");
    tu_result r = TU_ESCTL_ENV(env, "--types", mod, "--readmodel", rm, "replay", counter);
    cr_assert_eq(r.status, 0, "esctl replay: %s%s", r.out, r.err);
    tu_result_free(&r);
    cr_assert_eq(tu_query_int(rm, "SELECT count(*) FROM tp_applied"), 4, "every event applied");
    cr_assert_eq(tu_query_int(rm, "SELECT sum(amount) FROM tp_totals"), 16);
    free(rm);
    free(counter);
    free(mod);
    free(copy);
}

/* ---- the demo domain: engine load, execute, restore, the saga coordinator ---- */

static void orders_setup(void) {
    static const char *const types[] = {"orders.order", "payments.payment", "inventory.item",
                                        SAGA ".saga", NULL};
    b = tb_open(types);
    char *path = tu_path(tb_dir(b), "saga.db");
    es_error_t err = {0};
    cr_assert_eq(es_config_set(tb_config(b), "saga.db", path, &err), ES_OK, "%s", err.message);
    free(path);
}

TestSuite(upcasting_orders, .init = orders_setup, .fini = teardown, .timeout = 180);

static void old_order(const char *id, const char *text) {
    tb_append(b, "orders.order", id, "orders.v0.OrderPlaced", text, strlen(text));
}

static es_err execute(const char *type, const char *id, const ProtobufCMessage *msg,
                      es_result_t *res, es_error_t *err) {
    es_command_t cmd = {.aggregate_type = type, .aggregate_id = id, .message = msg};
    return es_execute(tb_engine(b), &cmd, res, err);
}

/* The stream's event types, short: "OrderPlaced,OrderConfirmed". */
static void types_of(const char *type, const char *id, size_t want, char *out, size_t cap) {
    seen s = {"", 1, 1};
    es_error_t err = {0};
    tb_events_of(b, type, id, want);
    cr_assert_eq(es_store_read_stream(tb_store(b), type, id, 1, see, &s, &err), ES_OK, "%s",
                 err.message);
    cr_assert(s.contiguous, "versions of %s/%s are contiguous", type, id);
    out[0] = '\0';
    for (char *p = strtok(s.text, ","); p; p = strtok(NULL, ",")) {
        char *eq = strchr(p, '=');
        if (eq)
            *eq = '\0';
        const char *dot = strrchr(p, '.');
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "%s%s", len ? "," : "", dot ? dot + 1 : p);
    }
}

Test(upcasting_orders, decide_sees_the_state_folded_from_upcast_events) {
    old_order("o-1", "alice;sku-a;2;1500;USD");
    add(&orders_v0_v1); /* before tb_engine: on Kafka its processor restores under them */
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    es_result_t res = {0};
    es_error_t err = {0};
    cr_assert_eq(execute("orders.order", "o-1", &confirm.base, &res, &err), ES_OK, "%s %s",
                 err.message, res.reason ? res.reason : "");
    cr_assert_eq(res.outcome, ES_OUTCOME_ACCEPTED, "%s", res.reason ? res.reason : "");
    cr_assert_eq(res.version, 2, "the old event is version 1");
    es_result_clear(&res);
    cr_assert_eq(execute("orders.order", "o-1", &confirm.base, &res, &err), ES_EREJECTED, "%s",
                 err.message);
    cr_assert(res.reason && strstr(res.reason, "already confirmed"), "the state knows: %s",
              res.reason ? res.reason : err.message);
    es_result_clear(&res);
    char buf[256];
    types_of("orders.order", "o-1", 2, buf, sizeof buf);
    cr_assert_str_eq(buf, "OrderPlaced,OrderConfirmed");
}

Test(upcasting_orders, a_failing_upcaster_fails_the_command_naming_it_and_appends_nothing) {
    old_order("o-1", "not an order");
    tb_events_of(b, "orders.order", "o-1", 1); /* its store, made before the upcasters: plain */
    add(&orders_v0_v1);
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    es_result_t res = {0};
    es_error_t err = {0};
    es_err rc = execute("orders.order", "o-1", &confirm.base, &res, &err);
    const char *why = rc != ES_OK ? err.message : res.reason ? res.reason : "";
    cr_assert(rc != ES_OK || res.outcome == ES_OUTCOME_ERROR, "executed: %s", why);
    cr_assert(strstr(why, "order-placed-v0-to-v1") && strstr(why, "orders.v0.OrderPlaced"), "%s",
              why);
    es_result_clear(&res);
    cr_assert_eq(tb_events_of(b, "orders.order", "o-1", 1), 1, "nothing appended");
}

static void settle(uint64_t started) {
    es_error_t err = {0};
    uint64_t active = 1;
    es_saga_stats_t st = {0};
    for (int i = 0; i < 3000 && (active || st.started < started); i++) {
        cr_assert_eq(es_saga_poll(coord, 20, NULL, &err), ES_OK, "%s", err.message);
        cr_assert_eq(es_saga_active(coord, &active, &err), ES_OK, "%s", err.message);
        es_saga_stats(coord, &st);
    }
    cr_assert_eq(active, 0, "sagas still active after 3000 polls");
    cr_assert_geq(st.started, started, "instances started");
}

Test(upcasting_orders, an_old_stored_start_event_starts_the_saga_of_its_current_type) {
    /* Before the first command: on Kafka the processor restores it when it starts. */
    old_order("o-old", "alice;sku-a;2;1500;USD");
    add(&orders_v0_v1);
    Inventory__V1__Restock restock = INVENTORY__V1__RESTOCK__INIT;
    restock.quantity = 10;
    es_result_t res = {0};
    es_error_t err = {0};
    cr_assert_eq(execute("inventory.item", "sku-a", &restock.base, &res, &err), ES_OK, "%s",
                 err.message);
    es_result_clear(&res);
    cr_assert_eq(es_saga_new(tb_config(b), &demo_fulfilment_def, tb_engine(b), &coord, &err), ES_OK,
                 "%s", err.message);
    settle(1);
    es_saga_info_t *list = NULL;
    size_t n = 0;
    cr_assert_eq(es_saga_list(tb_config(b), SAGA, NULL, &list, &n, &err), ES_OK, "%s", err.message);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(list[0].id, "o-old");
    cr_assert_str_eq(list[0].state, "completed");
    free(list);
    char buf[256];
    types_of("orders.order", "o-old", 2, buf, sizeof buf);
    cr_assert_str_eq(buf, "OrderPlaced,OrderConfirmed");
    types_of("inventory.item", "sku-a", 2, buf, sizeof buf);
    cr_assert_str_eq(buf, "StockAdded,StockReserved", "the reservation read the upcast amount");
}
