/*
 * Saga figures: N orders that all succeed run through orders.fulfilment on
 * the embedded backend, one coordinator polling until no saga is active,
 * beside the very same commands (ReserveStock per line, AuthorizePayment,
 * ConfirmOrder, with the saga's command and correlation ids) executed directly
 * with es_execute_batch, step by step, in batches the size of the
 * coordinator's relay batch. Both start from a store with the orders placed
 * (not timed) and run at the defaults (the steps' timeouts aside: see
 * SLOW_RUN_TIMEOUT_MS); the ratio is what the coordinator's bookkeeping costs:
 * consuming the events, its own database (instances, outbox, checkpoints) and
 * publishing every transition to the log. The same again over Kafka at the
 * end of the file.
 */
#include "saga.h"

#include <dirent.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <eskit/eskit.h>
#include <eskit/processor.h>
#include <eskit/saga.h>

#include "domain.h"
#include "fulfilment.h"
#include "util.h"

#define N_SKUS 100
#define LINES 2          /* per order, on distinct SKUs */
#define PLACE_BATCH 1000 /* orders per batch while setting up */
#define DIRECT_BATCH 256 /* the coordinator's relay delivers up to 256 commands per batch */
#define POLL_MS 10
#define PREFIX "saga-" /* every scratch file of this figure */

/* One side: its store, saga database and engine. */
typedef struct side {
    es_config_t *cfg;
    es_engine_t *engine;
} side;

static int side_open(const char *dir, const char *name, side *s) {
    char db[4096], saga_db[4096], rm[4096];
    es_error_t err = {0};
    snprintf(db, sizeof db, "%s/" PREFIX "%s.db", dir, name);
    snprintf(saga_db, sizeof saga_db, "%s/" PREFIX "%s-saga.db", dir, name);
    snprintf(rm, sizeof rm, "%s/" PREFIX "%s-read.db", dir, name);
    memset(s, 0, sizeof *s);
    s->cfg = es_config_new();
    es_err rc = s->cfg ? ES_OK : ES_ENOMEM;
    if (rc == ES_OK)
        rc = es_config_set(s->cfg, "db", db, &err);
    if (rc == ES_OK)
        rc = es_config_set(s->cfg, "saga.db", saga_db, &err);
    if (rc == ES_OK)
        rc = es_config_set(s->cfg, "readmodel.db", rm, &err);
    if (rc == ES_OK)
        rc = es_engine_new(s->cfg, &s->engine, &err);
    if (rc == ES_OK)
        rc = demo_register_all(s->engine, &err);
    return rc == ES_OK ? 0 : bench_fail("opening a store", rc, &err);
}

static void side_close(side *s) {
    es_engine_destroy(s->engine);
    es_config_destroy(s->cfg);
    memset(s, 0, sizeof *s);
}

/* Executes cmds[0..n) in batches of up to per_batch; every command must be accepted with one
 * event. */
static int run_batches(es_engine_t *engine, const es_command_t *cmds, size_t n, size_t per_batch,
                       es_result_t *res) {
    for (size_t at = 0; at < n; at += per_batch) {
        size_t k = n - at < per_batch ? n - at : per_batch;
        es_error_t err = {0};
        memset(res, 0, k * sizeof *res);
        es_err rc = es_execute_batch(engine, cmds + at, k, res, &err);
        int bad = -1;
        for (size_t i = 0; i < k; i++) {
            if (bad < 0 && (res[i].outcome != ES_OUTCOME_ACCEPTED || res[i].n_events != 1))
                bad = (int)i;
            if (bad == (int)i)
                fprintf(stderr, "eskit-bench: %s on %s/%s: outcome %d with %zu events (%s)\n",
                        cmds[at + i].message->descriptor->name, cmds[at + i].aggregate_type,
                        cmds[at + i].aggregate_id, (int)res[i].outcome, res[i].n_events,
                        res[i].reason ? res[i].reason : "");
            es_result_clear(&res[i]);
        }
        if (rc != ES_OK)
            return bench_fail("es_execute_batch", rc, &err);
        if (bad >= 0)
            return -1;
    }
    return 0;
}

/* The workload, with the strings every command points to. */
typedef struct workload {
    size_t n;
    char (*order)[32];    /* "order-<i>" */
    char (*customer)[32]; /* "customer-<i % 64>" */
    char (*place_id)[32]; /* the PlaceOrder's command id, hence every saga command's correlation */
    char (*cid)[96];      /* command ids: LINES reserves, one authorize, one confirm per order */
    char sku[N_SKUS][24];
    Orders__V1__LineItem *lines; /* LINES per order */
    Orders__V1__LineItem **line_ptrs;
    Orders__V1__PlaceOrder *place;
    Inventory__V1__ReserveStock *reserve;
    Payments__V1__AuthorizePayment *authorize;
    es_command_t *cmds; /* LINES + 2 per order, step by step */
    es_result_t *res;
} workload;

#define PER_ORDER (LINES + 2)

static void workload_free(workload *w) {
    free(w->order);
    free(w->customer);
    free(w->place_id);
    free(w->cid);
    free(w->lines);
    free(w->line_ptrs);
    free(w->place);
    free(w->reserve);
    free(w->authorize);
    free(w->cmds);
    free(w->res);
    memset(w, 0, sizeof *w);
}

static size_t sku_of(size_t order, size_t line) {
    return (order * 7 + line * (N_SKUS / LINES)) % N_SKUS;
}

static int64_t price_of(size_t order, size_t line) {
    return 500 + (int64_t)((order + line) % 50) * 10;
}

static void make_orders(workload *w, const char *prefix) {
    for (size_t i = 0; i < w->n; i++) {
        snprintf(w->order[i], sizeof w->order[i], "%sorder-%zu", prefix, i);
        snprintf(w->customer[i], sizeof w->customer[i], "customer-%zu", i % 64);
        snprintf(w->place_id[i], sizeof w->place_id[i], "%splace-%zu", prefix, i);
        for (size_t l = 0; l < LINES; l++) {
            Orders__V1__LineItem *li = &w->lines[i * LINES + l];
            orders__v1__line_item__init(li);
            li->sku = w->sku[sku_of(i, l)];
            li->quantity = 1;
            li->unit_price_cents = price_of(i, l);
            w->line_ptrs[i * LINES + l] = li;
        }
        Orders__V1__PlaceOrder *p = &w->place[i];
        orders__v1__place_order__init(p);
        p->customer_id = w->customer[i];
        p->currency = "USD";
        p->n_items = LINES;
        p->items = &w->line_ptrs[i * LINES];
    }
}

/* The commands the saga sends, in the order its steps send them, under its command ids. */
static void make_commands(workload *w) {
    static Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    size_t n = w->n, k = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t l = 0; l < LINES; l++, k++) {
            Inventory__V1__ReserveStock *r = &w->reserve[i * LINES + l];
            inventory__v1__reserve_stock__init(r);
            r->order_id = w->order[i];
            r->quantity = 1;
            snprintf(w->cid[k], sizeof w->cid[k], "%s/%s/reserve_stock.%zu/do",
                     DEMO_FULFILMENT_SAGA, w->order[i], l);
            w->cmds[k] = (es_command_t){.aggregate_type = "inventory.item",
                                        .aggregate_id = w->sku[sku_of(i, l)],
                                        .message = &r->base,
                                        .command_id = w->cid[k],
                                        .correlation_id = w->place_id[i]};
        }
    for (size_t i = 0; i < n; i++, k++) {
        Payments__V1__AuthorizePayment *a = &w->authorize[i];
        payments__v1__authorize_payment__init(a);
        a->order_id = w->order[i];
        a->customer_id = w->customer[i];
        a->currency = "USD";
        for (size_t l = 0; l < LINES; l++)
            a->amount_cents += price_of(i, l);
        snprintf(w->cid[k], sizeof w->cid[k], "%s/%s/authorize_payment.0/do", DEMO_FULFILMENT_SAGA,
                 w->order[i]);
        w->cmds[k] = (es_command_t){.aggregate_type = "payments.payment",
                                    .aggregate_id = w->order[i],
                                    .message = &a->base,
                                    .command_id = w->cid[k],
                                    .correlation_id = w->place_id[i]};
    }
    for (size_t i = 0; i < n; i++, k++) {
        snprintf(w->cid[k], sizeof w->cid[k], "%s/%s/confirm_order.0/do", DEMO_FULFILMENT_SAGA,
                 w->order[i]);
        w->cmds[k] = (es_command_t){.aggregate_type = "orders.order",
                                    .aggregate_id = w->order[i],
                                    .message = &confirm.base,
                                    .command_id = w->cid[k],
                                    .correlation_id = w->place_id[i]};
    }
}

/* prefix begins every order, SKU and command id: sides sharing a Kafka cluster keep apart. */
static int workload_new(size_t n, const char *prefix, workload *w) {
    memset(w, 0, sizeof *w);
    w->n = n;
    w->order = calloc(n, sizeof *w->order);
    w->customer = calloc(n, sizeof *w->customer);
    w->place_id = calloc(n, sizeof *w->place_id);
    w->cid = calloc(n * PER_ORDER, sizeof *w->cid);
    w->lines = calloc(n * LINES, sizeof *w->lines);
    w->line_ptrs = calloc(n * LINES, sizeof *w->line_ptrs);
    w->place = calloc(n, sizeof *w->place);
    w->reserve = calloc(n * LINES, sizeof *w->reserve);
    w->authorize = calloc(n, sizeof *w->authorize);
    w->cmds = calloc(n * PER_ORDER, sizeof *w->cmds);
    w->res = calloc(n > PLACE_BATCH ? n : PLACE_BATCH, sizeof *w->res);
    if (!w->order || !w->customer || !w->place_id || !w->cid || !w->lines || !w->line_ptrs ||
        !w->place || !w->reserve || !w->authorize || !w->cmds || !w->res) {
        workload_free(w);
        fprintf(stderr, "eskit-bench: out of memory for %zu orders\n", n);
        return -1;
    }
    for (size_t k = 0; k < N_SKUS; k++)
        snprintf(w->sku[k], sizeof w->sku[k], "%ssku-%03zu", prefix, k);
    make_orders(w, prefix);
    make_commands(w);
    return 0;
}

/* Stocks every SKU for all orders and places them (not timed). */
static int setup(side *s, workload *w) {
    Inventory__V1__Restock restock = INVENTORY__V1__RESTOCK__INIT;
    restock.quantity = (uint32_t)(w->n * LINES);
    es_command_t *cmds = calloc(w->n > N_SKUS ? w->n : N_SKUS, sizeof *cmds);
    if (!cmds)
        return -1;
    for (size_t k = 0; k < N_SKUS; k++)
        cmds[k] = (es_command_t){.aggregate_type = "inventory.item",
                                 .aggregate_id = w->sku[k],
                                 .message = &restock.base};
    int rc = run_batches(s->engine, cmds, N_SKUS, N_SKUS, w->res);
    for (size_t i = 0; i < w->n; i++)
        cmds[i] = (es_command_t){.aggregate_type = "orders.order",
                                 .aggregate_id = w->order[i],
                                 .message = &w->place[i].base,
                                 .command_id = w->place_id[i]};
    if (rc == 0)
        rc = run_batches(s->engine, cmds, w->n, PLACE_BATCH, w->res);
    free(cmds);
    return rc;
}

static int count_event(const es_event_t *ev, void *opaque) {
    (void)ev;
    (*(size_t *)opaque)++;
    return 0;
}

/* Events of the given types (NULL-terminated) in the store. */
static int count_events(side *s, const char *const *types, size_t *n) {
    es_error_t err = {0};
    *n = 0;
    es_err rc =
        es_store_read_log(es_engine_store(s->engine), types, 0, 0, count_event, n, NULL, &err);
    return rc == ES_OK ? 0 : bench_fail("reading the log", rc, &err);
}

/* Transitions recorded in the saga database and not yet appended to the log (its outbox of
 * transitions); -1 when it cannot be read. Idle should mean none are left: the bench checks. */
static long long unpublished(const side *s) {
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long long n = -1;
    if (sqlite3_open_v2(es_config_get(s->cfg, "saga.db"), &db, SQLITE_OPEN_READONLY, NULL) ==
            SQLITE_OK &&
        sqlite3_prepare_v2(db, "SELECT count(*) FROM es_saga_history", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* orders.fulfilment with its steps' timeouts at 10 minutes: a run slowed down (callgrind, a busy
 * machine) must not time steps out and measure compensations instead. */
#define SLOW_RUN_TIMEOUT_MS 600000

/* The coordinator keeps the definition's steps by pointer: they live as long as the program. */
static es_saga_step_t slow_steps[8];
static es_saga_def slow_def;

static int open_coordinator(side *s, es_saga_t **c) {
    es_error_t err = {0};
    slow_def = demo_fulfilment_def;
    if (slow_def.n_steps > sizeof slow_steps / sizeof *slow_steps)
        return bench_fail("copying orders.fulfilment", ES_EINVAL,
                          &(es_error_t){0, "too many steps"});
    for (size_t k = 0; k < slow_def.n_steps; k++) {
        slow_steps[k] = demo_fulfilment_def.steps[k];
        slow_steps[k].timeout_ms = SLOW_RUN_TIMEOUT_MS;
    }
    slow_def.steps = slow_steps;
    es_err rc = es_saga_new(s->cfg, &slow_def, s->engine, c, &err);
    return rc == ES_OK ? 0 : bench_fail("opening the coordinator", rc, &err);
}

#define DRIVE_MAX_S 300 /* past it the coordinator is stuck: the figure fails */

/* Polls c until `completed` sagas have completed, none is active, a poll did nothing and every
 * transition is published (a poll that finds nothing does not mean the log has nothing more on
 * Kafka, where events arrive by fetch: so the completed count decides). */
static int drive(side *s, es_saga_t *c, uint64_t completed, double *seconds, double *idle_seconds,
                 long long *backlog) {
    es_error_t err = {0};
    es_err rc = ES_OK;
    int64_t t0 = bench_now_ns();
    *backlog = -1;
    for (;;) {
        size_t progress = 0;
        uint64_t active = 1;
        rc = es_saga_poll(c, POLL_MS, &progress, &err);
        if (rc == ES_OK && progress == 0)
            rc = es_saga_active(c, &active, &err);
        if (rc != ES_OK)
            break;
        if (bench_now_ns() - t0 > (int64_t)DRIVE_MAX_S * 1000000000) {
            fprintf(stderr, "eskit-bench: the sagas did not end within %d s\n", DRIVE_MAX_S);
            return -1;
        }
        if (progress > 0 || active > 0)
            continue;
        es_saga_stats_t st;
        es_saga_stats(c, &st);
        if (st.completed + st.aborted + st.failed < completed)
            continue;
        long long left = unpublished(s);
        if (left < 0) {
            fprintf(stderr,
                    "eskit-bench: cannot count the saga database's unpublished transitions\n");
            rc = ES_EIO;
            break;
        }
        if (*backlog < 0) {
            *idle_seconds = (double)(bench_now_ns() - t0) / 1e9;
            *backlog = left;
        }
        if (left == 0)
            break;
    }
    *seconds = (double)(bench_now_ns() - t0) / 1e9;
    if (rc != ES_OK)
        return bench_fail("es_saga_poll", rc, &err);
    es_saga_stats_t st;
    es_saga_stats(c, &st);
    if (st.completed != completed || st.aborted || st.failed) {
        fprintf(stderr, "eskit-bench: %llu sagas: %llu completed, %llu aborted, %llu failed\n",
                (unsigned long long)completed, (unsigned long long)st.completed,
                (unsigned long long)st.aborted, (unsigned long long)st.failed);
        return -1;
    }
    return 0;
}

static int run_saga(side *s, size_t n, double *seconds, double *idle_seconds, long long *backlog) {
    es_saga_t *c = NULL;
    int rc = open_coordinator(s, &c);
    rc = rc ? rc : drive(s, c, n, seconds, idle_seconds, backlog);
    es_saga_destroy(c);
    return rc;
}

/* Deletes every scratch file of this figure (stores, saga databases, the coordinator's lock). */
static void remove_scratch(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[4096];
    while (d && (e = readdir(d)))
        if (!strncmp(e->d_name, PREFIX, strlen(PREFIX))) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    if (d)
        closedir(d);
}

static const char *const domain_types[] = {"inventory.item", "payments.payment", "orders.order",
                                           NULL};
static const char *const saga_types[] = {DEMO_FULFILMENT_SAGA ".saga", NULL};

int bench_saga(const char *dir, size_t n, saga_figs_t *out) {
    workload w;
    side saga = {0}, direct = {0};
    size_t before = 0, after = 0, direct_events = 0;
    memset(out, 0, sizeof *out);
    if (workload_new(n, "", &w) != 0)
        return -1;
    int rc = side_open(dir, "coordinator", &saga);
    rc = rc ? rc : setup(&saga, &w);
    rc = rc ? rc : count_events(&saga, domain_types, &before);
    rc = rc ? rc : run_saga(&saga, n, &out->saga_wall_s, &out->idle_s, &out->backlog);
    rc = rc ? rc : count_events(&saga, domain_types, &after);
    rc = rc ? rc : count_events(&saga, saga_types, &out->transitions);
    side_close(&saga);

    rc = rc ? rc : side_open(dir, "direct", &direct);
    rc = rc ? rc : setup(&direct, &w);
    int64_t t0 = bench_now_ns();
    rc = rc ? rc : run_batches(direct.engine, w.cmds, n * PER_ORDER, DIRECT_BATCH, w.res);
    out->direct_wall_s = (double)(bench_now_ns() - t0) / 1e9;
    rc = rc ? rc : count_events(&direct, domain_types, &direct_events);
    side_close(&direct);

    /* The same commands: as many domain events on both sides, one per command. */
    if (rc == 0 && (after - before != n * PER_ORDER || direct_events != after)) {
        fprintf(stderr,
                "eskit-bench: the saga appended %zu domain events and the direct run %zu in "
                "all; both should have appended %zu\n",
                after - before, direct_events - before, n * PER_ORDER);
        rc = -1;
    }
    if (rc == 0) {
        out->sagas = n;
        out->commands = n * PER_ORDER;
        out->batch = DIRECT_BATCH;
        out->saga_per_s = (double)n / out->saga_wall_s;
        out->direct_per_s = (double)n / out->direct_wall_s;
    }
    workload_free(&w);
    remove_scratch(dir);
    return rc;
}

/*
 * The Kafka figure: the same sagas and the same commands on librdkafka's mock cluster (3
 * brokers, replication 3, 6 partitions a topic, client settings as the kafka group's), one
 * processor thread owning the partitions, a caller engine whose es_execute_batch the
 * coordinator's relay uses. One cluster for both sides, their orders and SKUs named apart; the
 * coordinator joins its consumer group on a warm-up order before the timed sagas are placed,
 * and is gone before the direct side places its own.
 */
#define K_PARTITIONS 6

typedef bench_mock_t k_cluster;

static int k_cluster_open(k_cluster *c) {
    static const char *const types[] = {"orders.order", "inventory.item", "payments.payment"};
    char topic[128];
    if (bench_mock_open(c, 3, types, 3, K_PARTITIONS) || bench_mock_topic(c, "eskit.schemas", 1))
        return -1;
    for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
        snprintf(topic, sizeof topic, "%s.events.dlq", types[t]);
        if (bench_mock_topic(c, topic, 1))
            return -1;
    }
    return bench_mock_topic(c, DEMO_FULFILMENT_SAGA ".saga.events", K_PARTITIONS);
}

/* A config on the cluster with its scratch files named for who (the kafka group's settings). */
static es_config_t *k_config(const k_cluster *c, const char *dir, const char *who) {
    char state[4096], saga_db[4096], rm[4096];
    snprintf(state, sizeof state, "%s/" PREFIX "k-%s-state.db", dir, who);
    snprintf(saga_db, sizeof saga_db, "%s/" PREFIX "k-%s-saga.db", dir, who);
    snprintf(rm, sizeof rm, "%s/" PREFIX "k-%s-read.db", dir, who);
    es_config_t *cfg = es_config_new();
    es_error_t err;
    if (!cfg || es_config_set(cfg, "brokers", c->bootstrap, &err) ||
        es_config_set(cfg, "state.db", state, &err) ||
        es_config_set(cfg, "saga.db", saga_db, &err) ||
        es_config_set(cfg, "readmodel.db", rm, &err) ||
        es_config_set(cfg, "kafka.linger.ms", "2", &err) ||
        es_config_set(cfg, "kafka.fetch.wait.max.ms", "1", &err) ||
        /* The mock answers a first JoinGroup after 3 s; a session just past it (as the tests
         * set it) makes the joins cost that and no more. */
        es_config_set(cfg, "kafka.session.timeout.ms", "4000", &err) ||
        es_config_set(cfg, "kafka.heartbeat.interval.ms", "500", &err) ||
        es_config_set(cfg, "metrics.enabled", "false", &err)) {
        if (cfg)
            fprintf(stderr, "eskit-bench: a Kafka saga setting: %s\n", err.message);
        es_config_destroy(cfg);
        return NULL;
    }
    return cfg;
}

static int k_side_open(side *s, es_config_t *cfg) {
    es_error_t err = {0};
    s->cfg = cfg;
    es_err rc = es_engine_new(cfg, &s->engine, &err);
    rc = rc ? rc : demo_register_all(s->engine, &err);
    return rc == ES_OK ? 0 : bench_fail("opening the Kafka caller", rc, &err);
}

int bench_saga_kafka(const char *dir, size_t n, saga_kafka_figs_t *out) {
    k_cluster cl = {0};
    bench_owner_t o = {0};
    es_config_t *ocfg = NULL;
    side caller = {0};
    es_saga_t *coord = NULL;
    workload warm = {0}, w = {0}, d = {0};
    double idle = 0;
    long long backlog = 0;
    memset(out, 0, sizeof *out);
    int rc = k_cluster_open(&cl) ? bench_fail("starting the mock cluster", ES_EKAFKA,
                                              &(es_error_t){ES_EKAFKA, "rd_kafka_mock"})
                                 : 0;
    es_config_t *ccfg = rc == 0 ? k_config(&cl, dir, "caller") : NULL;
    rc = rc ? rc : ccfg ? k_side_open(&caller, ccfg) : -1;
    /* The coordinator first, polled once: its group join (3 s on the mock) then overlaps the
     * processor's and the warm-up's. */
    size_t ignored = 0;
    es_error_t perr = {0};
    rc = rc ? rc : open_coordinator(&caller, &coord);
    rc = rc                                        ? rc
         : es_saga_poll(coord, 0, &ignored, &perr) ? bench_fail("es_saga_poll", ES_EKAFKA, &perr)
                                                   : 0;
    if (rc == 0)
        ocfg = k_config(&cl, dir, "owner");
    rc = rc ? rc : ocfg ? bench_owner_start(&o, ocfg) : -1;
    rc = rc ? rc : workload_new(1, "w", &warm);
    rc = rc ? rc : workload_new(n, "", &w);
    rc = rc ? rc : workload_new(n, "d", &d);
    /* Warm-up: the processor's and the coordinator's groups joined, one saga through. */
    double warm_s = 0;
    rc = rc ? rc : setup(&caller, &warm);
    rc = rc ? rc : drive(&caller, coord, 1, &warm_s, &idle, &backlog);
    rc = rc ? rc : setup(&caller, &w);
    rc = rc ? rc : drive(&caller, coord, n + 1, &out->saga_wall_s, &idle, &backlog);
    es_saga_destroy(coord);
    rc = rc ? rc : setup(&caller, &d);
    int64_t t0 = bench_now_ns();
    rc = rc ? rc : run_batches(caller.engine, d.cmds, n * PER_ORDER, DIRECT_BATCH, d.res);
    out->direct_wall_s = (double)(bench_now_ns() - t0) / 1e9;
    if (rc == 0) {
        out->sagas = n;
        out->saga_per_s = (double)n / out->saga_wall_s;
        out->direct_per_s = (double)n / out->direct_wall_s;
    }
    es_engine_destroy(caller.engine);
    es_config_destroy(caller.cfg);
    bench_owner_stop(&o);
    es_config_destroy(ocfg);
    bench_mock_close(&cl);
    workload_free(&warm);
    workload_free(&w);
    workload_free(&d);
    remove_scratch(dir);
    return rc;
}
