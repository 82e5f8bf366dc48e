/*
 * Replay figures: es_replay of demo order events into order_summary, beside a
 * raw rebuild that reads the same rows from the log file, decodes them with
 * protobuf-c and upserts the same columns with prepared statements in big
 * transactions under the same bulk settings; and the replay's peak RSS,
 * measured in a child process so the generator's memory does not count.
 */
#include "replay.h"

#include <malloc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include <eskit/eskit.h>

#include "domain.h"
#include "eskit/v1/envelope.pb-c.h"
#include "order_summary.h"
#include "orders/v1/orders.pb-c.h"
#include "util.h"

#define ORDERS_PER_BATCH 1000
#define RAW_TXN 20000

static es_config_t *config_for(const char *store, const char *readmodel, const char *sync,
                               bool metrics) {
    es_config_t *cfg = es_config_new();
    es_error_t err;
    if (!cfg || es_config_set(cfg, "db", store, &err) != ES_OK ||
        es_config_set(cfg, "readmodel.db", readmodel, &err) != ES_OK ||
        es_config_set(cfg, "sqlite.synchronous", sync, &err) != ES_OK ||
        es_config_set(cfg, "metrics.enabled", metrics ? "true" : "false", &err) != ES_OK) {
        es_config_destroy(cfg);
        return NULL;
    }
    return cfg;
}

/* The follow-up of order i: most are confirmed, some cancelled, a tenth stay placed. */
static int follow_up(size_t i) {
    return i % 10 < 7 ? 1 : i % 10 < 9 ? 2 : 0;
}

static int run_batch(es_engine_t *engine, es_command_t *cmds, es_result_t *res, size_t k,
                     size_t *events) {
    es_error_t err = {0};
    memset(res, 0, k * sizeof *res);
    es_err rc = es_execute_batch(engine, cmds, k, res, &err);
    for (size_t i = 0; i < k; i++) {
        *events += res[i].n_events;
        es_result_clear(&res[i]);
    }
    return rc == ES_OK ? 0 : bench_fail("es_execute_batch", rc, &err);
}

/* Writes about n demo order events (placed, then confirmed or cancelled) into store. */
static int generate(const char *store, size_t n, size_t *written) {
    es_config_t *cfg = config_for(store, "unused", "off", true);
    es_engine_t *engine = NULL;
    es_error_t err = {0};
    es_err rc = cfg ? es_engine_new(cfg, &engine, &err) : ES_ENOMEM;
    if (rc == ES_OK)
        rc = demo_register_all(engine, &err);
    es_command_t *cmds = calloc(ORDERS_PER_BATCH, sizeof *cmds);
    es_result_t *res = calloc(ORDERS_PER_BATCH, sizeof *res);
    char(*ids)[24] = calloc(ORDERS_PER_BATCH, sizeof *ids);
    char customers[64][16];
    Orders__V1__LineItem item = ORDERS__V1__LINE_ITEM__INIT, *items[] = {&item};
    Orders__V1__PlaceOrder place = ORDERS__V1__PLACE_ORDER__INIT;
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    Orders__V1__CancelOrder cancel = ORDERS__V1__CANCEL_ORDER__INIT;
    item.sku = "sku-1";
    item.quantity = 2;
    item.unit_price_cents = 1250;
    place.n_items = 1;
    place.items = items;
    place.currency = "EUR";
    cancel.reason = "customer changed their mind";
    int out = rc == ES_OK && cmds && res && ids ? 0 : -1;
    if (rc != ES_OK)
        bench_fail("setting up the generator", rc, &err);
    for (int c = 0; c < 64; c++)
        snprintf(customers[c], sizeof customers[c], "customer-%02d", c);
    *written = 0;
    for (size_t base = 0; out == 0 && *written < n; base += ORDERS_PER_BATCH) {
        for (size_t i = 0; i < ORDERS_PER_BATCH; i++) {
            snprintf(ids[i], sizeof ids[i], "order-%zu", base + i);
            cmds[i] = (es_command_t){
                .aggregate_type = "orders.order", .aggregate_id = ids[i], .message = &place.base};
        }
        place.customer_id = customers[base / ORDERS_PER_BATCH % 64];
        out = run_batch(engine, cmds, res, ORDERS_PER_BATCH, written);
        size_t k = 0;
        for (size_t i = 0; out == 0 && i < ORDERS_PER_BATCH && *written + k < n; i++) {
            int f = follow_up(base + i);
            if (f)
                cmds[k++] = (es_command_t){.aggregate_type = "orders.order",
                                           .aggregate_id = ids[i],
                                           .message = f == 1 ? &confirm.base : &cancel.base};
        }
        if (out == 0 && k)
            out = run_batch(engine, cmds, res, k, written);
    }
    es_engine_destroy(engine);
    es_config_destroy(cfg);
    free(cmds);
    free(res);
    free(ids);
    return out;
}

static int timed_replay(const char *store, const char *readmodel, bool metrics, double *seconds,
                        uint64_t *events) {
    es_config_t *cfg = config_for(store, readmodel, "full", metrics);
    es_error_t err = {0};
    es_replay_result_t res = {0};
    int64_t t0 = bench_now_ns();
    es_err rc = cfg ? es_replay(cfg, &es_order_summary_projector, NULL, &res, &err) : ES_ENOMEM;
    *seconds = (double)(bench_now_ns() - t0) / 1e9;
    *events = res.events;
    es_config_destroy(cfg);
    return rc == ES_OK ? 0 : bench_fail("es_replay", rc, &err);
}

/* Peak RSS of a replay in a forked child, in KiB, from the child's start: the heap the parent
 * freed but kept (the bench holds ~230 MiB of envelopes for its raw baselines; how much of it
 * glibc gives back depends on what else was allocated since) is given back first and the
 * high-water mark reset (/proc/self/clear_refs, "5"), so what is measured is the replay's. */
static void start_fresh(void) {
    malloc_trim(0);
    FILE *f = fopen("/proc/self/clear_refs", "w");
    int ok = f && fputs("5", f) >= 0;
    if (f && fclose(f) != 0)
        ok = 0;
    if (!ok)
        fprintf(stderr, "eskit-bench: /proc/self/clear_refs could not be written: the replay's "
                        "peak RSS includes what the bench process had resident\n");
}

static int replay_rss(const char *store, const char *readmodel, long *kib) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        double s;
        uint64_t n;
        start_fresh();
        _exit(timed_replay(store, readmodel, true, &s, &n) == 0 ? 0 : 1);
    }
    int status = 0;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
        return -1;
    *kib = ru.ru_maxrss;
    return 0;
}

/* The raw rebuild's statements over one output connection. */
typedef struct raw_out {
    sqlite3 *db;
    sqlite3_stmt *place, *confirm, *cancel;
} raw_out;

static int raw_out_open(const char *path, raw_out *o) {
    static const char schema[] =
        "PRAGMA journal_mode=MEMORY; PRAGMA synchronous=OFF; PRAGMA cache_size=-16384;"
        "CREATE TABLE order_summary(order_id TEXT PRIMARY KEY, status TEXT NOT NULL,"
        " customer_id TEXT NOT NULL, amount_cents INTEGER NOT NULL, currency TEXT NOT NULL,"
        " item_count INTEGER NOT NULL, cancel_reason TEXT, placed_at_us INTEGER NOT NULL,"
        " updated_at_us INTEGER NOT NULL, version INTEGER NOT NULL);"
        "CREATE INDEX order_summary_by_customer ON order_summary(customer_id);";
    memset(o, 0, sizeof *o);
    if (sqlite3_open(path, &o->db) != SQLITE_OK ||
        sqlite3_exec(o->db, schema, NULL, NULL, NULL) != SQLITE_OK)
        return -1;
    int rc = sqlite3_prepare_v2(
        o->db,
        "INSERT INTO order_summary VALUES (?1, 'placed', ?2, ?3, ?4, ?5, NULL, ?6, ?6, ?7) "
        "ON CONFLICT(order_id) DO UPDATE SET status = 'placed', customer_id = ?2, "
        "amount_cents = ?3, currency = ?4, item_count = ?5, placed_at_us = ?6, "
        "updated_at_us = ?6, version = ?7",
        -1, &o->place, NULL);
    rc = rc ? rc
            : sqlite3_prepare_v2(o->db,
                                 "UPDATE order_summary SET status = 'confirmed', updated_at_us "
                                 "= ?2, version = ?3 WHERE order_id = ?1",
                                 -1, &o->confirm, NULL);
    rc = rc ? rc
            : sqlite3_prepare_v2(o->db,
                                 "UPDATE order_summary SET status = 'cancelled', cancel_reason "
                                 "= ?2, updated_at_us = ?3, version = ?4 WHERE order_id = ?1",
                                 -1, &o->cancel, NULL);
    return rc == SQLITE_OK ? 0 : -1;
}

static void raw_out_close(raw_out *o) {
    sqlite3_finalize(o->place);
    sqlite3_finalize(o->confirm);
    sqlite3_finalize(o->cancel);
    sqlite3_close(o->db);
}

static int step(sqlite3_stmt *s) {
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* One event into the output, as order_summary does. */
static int raw_apply(raw_out *o, const Eskit__V1__EventEnvelope *env) {
    const char *t = env->event_type;
    const uint8_t *p = env->payload.data;
    size_t len = env->payload.len;
    int rc = -1;
    if (!strcmp(t, "orders.v1.OrderPlaced")) {
        Orders__V1__OrderPlaced *m = orders__v1__order_placed__unpack(NULL, len, p);
        if (!m)
            return -1;
        sqlite3_bind_text(o->place, 1, env->aggregate_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(o->place, 2, m->customer_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(o->place, 3, m->amount_cents);
        sqlite3_bind_text(o->place, 4, m->currency, -1, SQLITE_STATIC);
        sqlite3_bind_int64(o->place, 5, (sqlite3_int64)m->n_items);
        sqlite3_bind_int64(o->place, 6, env->occurred_at_us);
        sqlite3_bind_int64(o->place, 7, (sqlite3_int64)env->version);
        rc = step(o->place);
        orders__v1__order_placed__free_unpacked(m, NULL);
    } else if (!strcmp(t, "orders.v1.OrderConfirmed")) {
        sqlite3_bind_text(o->confirm, 1, env->aggregate_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(o->confirm, 2, env->occurred_at_us);
        sqlite3_bind_int64(o->confirm, 3, (sqlite3_int64)env->version);
        rc = step(o->confirm);
    } else if (!strcmp(t, "orders.v1.OrderCancelled")) {
        Orders__V1__OrderCancelled *m = orders__v1__order_cancelled__unpack(NULL, len, p);
        if (!m)
            return -1;
        sqlite3_bind_text(o->cancel, 1, env->aggregate_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(o->cancel, 2, m->reason, -1, SQLITE_STATIC);
        sqlite3_bind_int64(o->cancel, 3, env->occurred_at_us);
        sqlite3_bind_int64(o->cancel, 4, (sqlite3_int64)env->version);
        rc = step(o->cancel);
        orders__v1__order_cancelled__free_unpacked(m, NULL);
    }
    return rc;
}

static int timed_raw(const char *store, const char *out_path, double *seconds) {
    sqlite3 *in = NULL;
    sqlite3_stmt *rows = NULL;
    raw_out o;
    int64_t t0 = bench_now_ns();
    int rc = raw_out_open(out_path, &o);
    if (rc == 0 && (sqlite3_open_v2(store, &in, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
                    sqlite3_prepare_v2(in, "SELECT envelope FROM es_events ORDER BY pos", -1, &rows,
                                       NULL) != SQLITE_OK))
        rc = -1;
    size_t in_txn = 0;
    if (rc == 0)
        rc = sqlite3_exec(o.db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
    while (rc == 0 && sqlite3_step(rows) == SQLITE_ROW) {
        Eskit__V1__EventEnvelope *env = eskit__v1__event_envelope__unpack(
            NULL, (size_t)sqlite3_column_bytes(rows, 0), sqlite3_column_blob(rows, 0));
        if (!env)
            rc = -1;
        else if (!strcmp(env->aggregate_type, "orders.order"))
            rc = raw_apply(&o, env);
        eskit__v1__event_envelope__free_unpacked(env, NULL);
        if (rc == 0 && ++in_txn == RAW_TXN) {
            in_txn = 0;
            rc = sqlite3_exec(o.db, "COMMIT; BEGIN", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
        }
    }
    if (rc == 0)
        rc = sqlite3_exec(o.db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
    *seconds = (double)(bench_now_ns() - t0) / 1e9;
    if (rc != 0)
        fprintf(stderr, "eskit-bench: raw rebuild failed: %s\n", sqlite3_errmsg(o.db));
    sqlite3_finalize(rows);
    sqlite3_close(in);
    raw_out_close(&o);
    return rc;
}

static void remove_all(const char *path) {
    static const char *const suffix[] = {"",
                                         "-wal",
                                         "-shm",
                                         "-journal",
                                         "-order_summary.lock",
                                         "-order_summary.guard",
                                         "-order_summary.replay-guard"};
    char buf[4096];
    for (size_t i = 0; i < sizeof suffix / sizeof *suffix; i++) {
        snprintf(buf, sizeof buf, "%s%s", path, suffix[i]);
        unlink(buf);
    }
}

/* ---- replay with upcasters ----------------------------------------------------------------- */

/* The bench's upcasters: orders.v0.<T> (the stored name of half the events) to orders.v1.<T>,
 * each decoding the old payload and packing it again, as a real field rewrite costs. */
static es_err reencode(const es_event_t *ev, void *opaque, uint8_t **out, size_t *out_len,
                       es_error_t *err) {
    const ProtobufCMessageDescriptor *d = opaque;
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, ev->payload_len, ev->payload);
    if (!m) {
        snprintf(err->message, sizeof err->message, "payload is no %s", d->name);
        return ES_EDECODE;
    }
    size_t len = protobuf_c_message_get_packed_size(m);
    *out = malloc(len ? len : 1);
    if (*out)
        *out_len = protobuf_c_message_pack(m, *out);
    protobuf_c_message_free_unpacked(m, NULL);
    return *out ? ES_OK : ES_ENOMEM;
}

static const ProtobufCMessageDescriptor *const upcast_types[] = {
    &orders__v1__order_placed__descriptor, &orders__v1__order_confirmed__descriptor,
    &orders__v1__order_cancelled__descriptor};
#define N_UPCAST_TYPES (sizeof upcast_types / sizeof *upcast_types)

static int add_upcasters(es_config_t *cfg) {
    for (size_t i = 0; i < N_UPCAST_TYPES; i++) {
        char from[128], name[160];
        snprintf(from, sizeof from, "orders.v0.%s", upcast_types[i]->short_name);
        snprintf(name, sizeof name, "%s-v0-to-v1", upcast_types[i]->short_name);
        es_upcaster_t u = {.abi_version = ES_UPCASTER_ABI,
                           .name = name,
                           .from = from,
                           .to = upcast_types[i]->name,
                           .upcast = reencode,
                           .opaque = (void *)upcast_types[i]};
        es_error_t err = {0};
        es_err rc = es_config_add_upcaster(cfg, &u, &err);
        if (rc != ES_OK)
            return bench_fail("es_config_add_upcaster", rc, &err);
    }
    return 0;
}

/* Renames the type of every second event of the log to its orders.v0 name (the envelope
 * rewritten in place: this is the bench making an old log, not eskit). */
static int age_half(const char *store, size_t *aged) {
    sqlite3 *db = NULL;
    sqlite3_stmt *rows = NULL, *put = NULL;
    *aged = 0;
    int rc = sqlite3_open(store, &db) == SQLITE_OK &&
                     sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK &&
                     sqlite3_prepare_v2(db, "SELECT pos, envelope FROM es_events WHERE pos % 2 = 0",
                                        -1, &rows, NULL) == SQLITE_OK &&
                     sqlite3_prepare_v2(db, "UPDATE es_events SET envelope = ? WHERE pos = ?", -1,
                                        &put, NULL) == SQLITE_OK
                 ? 0
                 : -1;
    while (rc == 0 && sqlite3_step(rows) == SQLITE_ROW) {
        es_event_t *ev = NULL;
        es_error_t err = {0};
        if (es_envelope_decode(sqlite3_column_blob(rows, 1), (size_t)sqlite3_column_bytes(rows, 1),
                               NULL, &ev, &err) != ES_OK) {
            rc = -1;
            break;
        }
        char old[128];
        const char *dot = strrchr(ev->event_type, '.');
        snprintf(old, sizeof old, "orders.v0%s", dot ? dot : "");
        es_event_t copy = *ev;
        copy.event_type = old;
        uint8_t *bytes = NULL;
        size_t len = 0;
        rc = es_envelope_encode(&copy, &bytes, &len, &err) == ES_OK ? 0 : -1;
        if (rc == 0) {
            sqlite3_bind_blob(put, 1, bytes, (int)len, SQLITE_STATIC);
            sqlite3_bind_int64(put, 2, sqlite3_column_int64(rows, 0));
            rc = sqlite3_step(put) == SQLITE_DONE ? 0 : -1;
            sqlite3_reset(put);
            ++*aged;
        }
        free(bytes);
        es_event_free(ev);
    }
    sqlite3_finalize(rows);
    sqlite3_finalize(put);
    if (rc == 0)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
    if (rc != 0)
        fprintf(stderr, "eskit-bench: ageing the log: %s\n", sqlite3_errmsg(db));
    sqlite3_close(db);
    return rc;
}

static int timed_replay_upcast(const char *store, const char *readmodel, double *seconds,
                               uint64_t *events) {
    es_config_t *cfg = config_for(store, readmodel, "full", true);
    es_error_t err = {0};
    es_replay_result_t res = {0};
    int rc = cfg ? add_upcasters(cfg) : -1;
    int64_t t0 = bench_now_ns();
    es_err e = rc == 0 ? es_replay(cfg, &es_order_summary_projector, NULL, &res, &err) : ES_ENOMEM;
    *seconds = (double)(bench_now_ns() - t0) / 1e9;
    *events = res.events;
    es_config_destroy(cfg);
    if (rc == 0 && e != ES_OK)
        rc = bench_fail("es_replay with upcasters", e, &err);
    if (rc == 0 && (res.parked || res.ignored)) {
        fprintf(stderr,
                "eskit-bench: the replay with upcasters parked %llu and ignored %llu "
                "events; every one should have been applied\n",
                (unsigned long long)res.parked, (unsigned long long)res.ignored);
        rc = -1;
    }
    return rc;
}

int bench_replay_upcast(const char *dir, size_t n_events, upcast_figs_t *out) {
    char store[4096], rm[4096];
    snprintf(store, sizeof store, "%s/upcast-log.db", dir);
    snprintf(rm, sizeof rm, "%s/upcast-read.db", dir);
    memset(out, 0, sizeof *out);
    int rc = generate(store, n_events, &out->events);
    double plain_s = 0, up_s = 0;
    uint64_t plain_n = 0, up_n = 0;
    if (rc == 0)
        rc = timed_replay(store, rm, true, &plain_s, &plain_n);
    remove_all(rm);
    if (rc == 0)
        rc = age_half(store, &out->aged);
    if (rc == 0)
        rc = timed_replay_upcast(store, rm, &up_s, &up_n);
    remove_all(rm);
    remove_all(store);
    out->plain_per_s = plain_s > 0 ? (double)plain_n / plain_s : 0;
    out->upcast_per_s = up_s > 0 ? (double)up_n / up_s : 0;
    return rc;
}

int bench_replay(const char *dir, size_t n_events, bool with_raw, replay_figs_t *out) {
    char store[4096], rm[4096], raw[4096];
    snprintf(store, sizeof store, "%s/replay-log.db", dir);
    snprintf(rm, sizeof rm, "%s/replay-read.db", dir);
    snprintf(raw, sizeof raw, "%s/replay-raw.db", dir);
    memset(out, 0, sizeof *out);
    int rc = generate(store, n_events, &out->events);
    double es_s = 0, raw_s = 0;
    uint64_t applied = 0;
    if (rc == 0 && with_raw) {
        rc = timed_raw(store, raw, &raw_s);
        remove_all(raw);
        if (rc == 0)
            rc = timed_replay(store, rm, true, &es_s, &applied);
        remove_all(rm);
        out->es_per_s = es_s > 0 ? (double)applied / es_s : 0;
        out->raw_per_s = raw_s > 0 ? (double)out->events / raw_s : 0;
    }
    if (rc == 0)
        rc = replay_rss(store, rm, &out->peak_rss_kib);
    remove_all(rm);
    remove_all(store);
    return rc;
}

typedef struct mx_ctx {
    const char *store, *rm;
} mx_ctx;

/* The live runner rebuilding a read model that does not exist yet from the whole log, metrics
 * on or off. Not es_replay: its runner takes no part in the metrics (a live runner of the same
 * projector is the one counted), so a replay would measure no cost of them. */
static int mx_replay(void *opaque, bool metrics, double *events) {
    const mx_ctx *x = opaque;
    es_config_t *cfg = config_for(x->store, x->rm, "full", metrics);
    es_runner_t *r = NULL;
    es_error_t err = {0};
    es_err rc = cfg ? es_runner_new(cfg, &es_order_summary_projector, &r, &err) : ES_ENOMEM;
    if (rc == ES_OK)
        rc = es_runner_catch_up(r, 600000, &err);
    es_runner_stats_t st = {0};
    if (r)
        es_runner_stats(r, &st);
    es_runner_destroy(r);
    es_config_destroy(cfg);
    remove_all(x->rm);
    *events = (double)st.applied;
    return rc == ES_OK ? 0 : bench_fail("es_runner_catch_up", rc, &err);
}

int bench_replay_metrics(const char *dir, size_t n_events, size_t pairs, replay_metrics_t *out) {
    char store[4096], rm[4096];
    snprintf(store, sizeof store, "%s/mx-replay-log.db", dir);
    snprintf(rm, sizeof rm, "%s/mx-replay-read.db", dir);
    memset(out, 0, sizeof *out);
    mx_ctx x = {store, rm};
    int rc = generate(store, n_events, &out->events);
    if (rc == 0)
        rc = bench_alternate(mx_replay, &x, pairs, &out->alt);
    remove_all(rm);
    remove_all(store);
    return rc;
}
