/*
 * The saga coordinator killed with SIGKILL at random points and restarted:
 * every saga ends in the state it ends in without the kills, and every
 * command's effect is applied once.
 *
 * A workload of orders that succeed, are declined (a "broke-" customer, an
 * amount over the limit), run out of stock (a line on a SKU that never has
 * enough) or wait for 3-D Secure until the payment step times out is placed
 * with es_execute (in batches on Kafka): some before the first coordinator
 * starts, the rest in waves while the coordinators run. run_saga children are
 * killed after a random 20-300 ms (each with a random batch size, so kills
 * land between different transactions), again and again; then one runs with
 * --until-idle.
 * The reference is the same workload on a fresh embedded store through an
 * in-process coordinator that is never interrupted. Outcomes are chosen so
 * that they do not depend on timing (the scarce SKU never fits a reservation,
 * the others never run out), so the two runs must agree exactly: the sagas'
 * end states and reasons, and every aggregate's events by command.
 *
 * Embedded: one SQLite store; the timeout path uses the demo's short-timeout
 * definition (payment timeout 1 s). Kafka: librdkafka's mock cluster in this
 * process, one command processor as a child (run_processor, never killed),
 * the coordinator a run_saga child on the brokers, killed after 2.5-5 s (a
 * restarted Kafka coordinator takes a second or more to connect and a couple
 * more before its first poll returns, so shorter lives would never get work
 * done). No 3-D Secure orders there, and every step's timeout is 120 s: under
 * repeated kills the demo's 10 s steps time out (deadlines fire before the
 * events already in the log are consumed), a different outcome rather than a
 * lost or doubled effect.
 *
 * SAGA_CRASH_SEED=<n> replays one sequence of kill delays and batch sizes; SAGA_CRASH_KEEP=1
 * leaves the test's directory (the stores, the children's log) for a look after a failure.
 */
#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <eskit/saga.h>

#include "domain.h"
#include "fulfilment.h"
#include "testutil.h"

#define SAGA DEMO_FULFILMENT_SAGA
#define SAGA_TYPE SAGA ".saga"
#define N_ORDERS 200
#define N_SKUS 10
#define SKU_STOCK 10000
#define SCARCE_SKU "sku-scarce"
#define SCARCE_STOCK 3
#define FIRST_WAVE 50 /* orders placed before the first run; the rest come in waves */
#define WAVE_MAX 64
/* Kills, and how long each killed coordinator runs: a Kafka coordinator needs about a second to
 * connect and its first fetch may wait for records for a while, so it gets longer. */
#define KILLS 20
#define KILL_MIN_MS 20
#define KILL_MAX_MS 300
#define KAFKA_KILLS 6
#define KAFKA_KILL_MIN_MS 2500
#define KAFKA_KILL_MAX_MS 5000
#define KAFKA_TIMEOUT_MS 120000
#define KAFKA_TIMEOUT_ARG "120000"
#define PARTS 3
#define SEC 1000000LL
#define IDLE_DEADLINE (40 * SEC) /* the final run and the reference each */
#define HISTORY_EVERY_KAFKA 10   /* es_saga_history scans the whole topic on Kafka: a sample */

static const char *const domain_types[] = {"orders.order", "payments.payment", "inventory.item",
                                           NULL};

/* One test's world: its directory, and on Kafka the mock cluster and the processor child. */
static struct {
    int kafka;
    char *dir, *db, *saga_db, *log;
    rd_kafka_t *mock_rk;
    rd_kafka_mock_cluster_t *mock;
    const char *brokers;
    pid_t processor;
} w;

/* What order i is meant to do. */
typedef enum kind { SUCCEED, BROKE, OVER_LIMIT, NO_STOCK, THREE_DS, N_KINDS } kind;

static kind kind_of(int i) {
    static const kind mix[8] = {SUCCEED,  SUCCEED, BROKE,    SUCCEED,
                                NO_STOCK, SUCCEED, THREE_DS, OVER_LIMIT};
    kind k = mix[i % 8];
    return k == THREE_DS && w.kafka ? SUCCEED : k;
}

static const char *const kind_name[N_KINDS] = {"succeed", "broke", "over-limit", "no-stock", "3ds"};
static const char *const want_state[N_KINDS] = {"completed", "aborted", "aborted", "aborted",
                                                "aborted"};

/* Embedded: the demo's short-timeout definition. Kafka: a copy of the regular one with every
 * step's timeout KAFKA_TIMEOUT_MS (what run_saga --timeout-ms makes). */
static const es_saga_def *saga_def(void) {
    static es_saga_step_t steps[8];
    static es_saga_def def;
    if (!w.kafka)
        return &demo_fulfilment_short_def;
    def = demo_fulfilment_def;
    cr_assert_leq(def.n_steps, 8);
    for (size_t i = 0; i < def.n_steps; i++) {
        steps[i] = def.steps[i];
        steps[i].timeout_ms = KAFKA_TIMEOUT_MS;
    }
    def.steps = steps;
    return &def;
}

/* ---- configs ----------------------------------------------------------------------------- */

static void set(es_config_t *cfg, const char *key, const char *value) {
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, key, value, &err), ES_OK, "%s=%s: %s", key, value, err.message);
}

/* Settings every Kafka client of the test uses (children get them with --set). */
static const char *const kafka_settings[] = {
    "service.name=svc", "execute.timeout.ms=10000", "kafka.reconnect.backoff.max.ms=200",
    /* short sessions keep ownership changes quick (see testutil.h) */
    "kafka.session.timeout.ms=" TU_MOCK_SESSION_TIMEOUT_MS,
    "kafka.heartbeat.interval.ms=" TU_MOCK_HEARTBEAT_INTERVAL_MS, NULL};

/* The embedded store db (with saga database saga_db, may be NULL), or on Kafka the cluster. */
static es_config_t *config(const char *db, const char *saga_db, int kafka) {
    es_config_t *cfg = tu_config(w.dir, db);
    if (saga_db) {
        char *p = tu_path(w.dir, saga_db);
        set(cfg, "saga.db", p);
        free(p);
    }
    if (kafka) {
        set(cfg, "brokers", w.brokers);
        for (size_t i = 0; kafka_settings[i]; i++) {
            char key[64];
            const char *eq = strchr(kafka_settings[i], '=');
            snprintf(key, sizeof key, "%.*s", (int)(eq - kafka_settings[i]), kafka_settings[i]);
            set(cfg, key, eq + 1);
        }
    }
    return cfg;
}

/* ---- the workload ------------------------------------------------------------------------ */

/* Executes cmds[0..n) (one batch on Kafka: a round trip each would take a while); each must be
 * accepted with one event. */
static void execute(es_engine_t *engine, const es_command_t *cmds, size_t n) {
    es_result_t res[WAVE_MAX];
    es_error_t err = {0};
    cr_assert_leq(n, WAVE_MAX);
    for (size_t at = 0; at < n; at += w.kafka ? n : 1) {
        size_t k = w.kafka ? n : 1;
        memset(res, 0, k * sizeof *res);
        es_err rc = es_execute_batch(engine, cmds + at, k, res, &err);
        cr_assert_eq(rc, ES_OK, "%s: %s", cmds[at].command_id, err.message);
        for (size_t i = 0; i < k; i++) {
            const es_command_t *c = &cmds[at + i];
            cr_assert(res[i].outcome == ES_OUTCOME_ACCEPTED && res[i].n_events == 1,
                      "%s %s/%s: outcome %d with %zu events (%s)", c->message->descriptor->name,
                      c->aggregate_type, c->aggregate_id, (int)res[i].outcome, res[i].n_events,
                      res[i].reason ? res[i].reason : "");
            es_result_clear(&res[i]);
        }
    }
}

static void sku_name(char *out, size_t cap, int k) {
    snprintf(out, cap, "sku-%02d", k);
}

/* A PlaceOrder and the memory it points to. */
typedef struct order_cmd {
    char id[32], customer[32], cid[32], skus[3][16];
    Orders__V1__LineItem lines[3], *items[3];
    Orders__V1__PlaceOrder place;
} order_cmd;

/* Order i: 1..3 lines on distinct plentiful SKUs; the kind picks customer, prices and a scarce
 * line. */
static es_command_t order(int i, order_cmd *o) {
    kind k = kind_of(i);
    size_t n = 1 + (size_t)(i % 3);
    orders__v1__place_order__init(&o->place);
    snprintf(o->id, sizeof o->id, "o-%03d", i);
    snprintf(o->customer, sizeof o->customer, "%scustomer-%d",
             k == BROKE      ? "broke-"
             : k == THREE_DS ? "3ds-"
                             : "",
             i % 17);
    snprintf(o->cid, sizeof o->cid, "place-%03d", i);
    for (size_t l = 0; l < n; l++) {
        Orders__V1__LineItem *li = &o->lines[l];
        orders__v1__line_item__init(li);
        sku_name(o->skus[l], sizeof o->skus[l], (i + (int)l * 3) % N_SKUS);
        li->sku = o->skus[l];
        li->quantity = 1 + (uint32_t)((i + (int)l) % 4);
        li->unit_price_cents = k == OVER_LIMIT ? 60000 : 500 + 100 * ((i + (int)l) % 20);
        o->items[l] = li;
    }
    if (k == NO_STOCK) { /* more than the scarce SKU ever has, first or last */
        size_t at = i % 16 < 8 ? n - 1 : 0;
        o->lines[at].sku = SCARCE_SKU;
        o->lines[at].quantity = SCARCE_STOCK + 2;
    }
    o->place.customer_id = o->customer;
    o->place.currency = "USD";
    o->place.n_items = n;
    o->place.items = o->items;
    return (es_command_t){.aggregate_type = "orders.order",
                          .aggregate_id = o->id,
                          .message = &o->place.base,
                          .command_id = o->cid};
}

/* The test's side of a store: the engine it places orders with, and how many it placed. */
typedef struct shop {
    es_config_t *cfg;
    es_engine_t *engine;
    int placed;
} shop;

/* A fresh store (embedded db, or the cluster) with the SKUs stocked. */
static shop open_shop(const char *db, int kafka) {
    shop s = {config(db, NULL, kafka), NULL, 0};
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(s.cfg, &s.engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(s.engine, &err), ES_OK, "%s", err.message);
    Inventory__V1__Restock restock[N_SKUS + 1];
    char sku[N_SKUS + 1][16], cid[N_SKUS + 1][32];
    es_command_t cmds[N_SKUS + 1];
    for (int k = 0; k <= N_SKUS; k++) {
        if (k < N_SKUS)
            sku_name(sku[k], sizeof sku[k], k);
        else
            snprintf(sku[k], sizeof sku[k], "%s", SCARCE_SKU);
        inventory__v1__restock__init(&restock[k]);
        restock[k].quantity = k < N_SKUS ? SKU_STOCK : SCARCE_STOCK;
        snprintf(cid[k], sizeof cid[k], "restock-%.15s", sku[k]);
        cmds[k] = (es_command_t){.aggregate_type = "inventory.item",
                                 .aggregate_id = sku[k],
                                 .message = &restock[k].base,
                                 .command_id = cid[k]};
    }
    execute(s.engine, cmds, N_SKUS + 1);
    return s;
}

/* Places the next n orders (fewer when the workload ends). */
static void place_more(shop *s, int n) {
    static order_cmd o[WAVE_MAX];
    es_command_t cmds[WAVE_MAX];
    size_t k = 0;
    for (; n > 0 && s->placed < N_ORDERS; n--) {
        if (k == WAVE_MAX) {
            execute(s->engine, cmds, k);
            k = 0;
        }
        cmds[k] = order(s->placed++, &o[k]);
        k++;
    }
    execute(s->engine, cmds, k);
}

static void close_shop(shop *s) {
    es_engine_destroy(s->engine);
    es_config_destroy(s->cfg);
    memset(s, 0, sizeof *s);
}

/* ---- the reference: one coordinator in this process, never interrupted -------------------- */

static void run_reference(void) {
    shop ref = open_shop("ref.db", 0);
    place_more(&ref, N_ORDERS);
    close_shop(&ref);
    es_config_t *cfg = config("ref.db", "ref-saga.db", 0);
    set(cfg, "projector.batch.size", "64");
    es_engine_t *engine = NULL;
    es_saga_t *c = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_saga_new(cfg, saga_def(), engine, &c, &err), ES_OK, "%s", err.message);
    int64_t deadline = es_now_us() + IDLE_DEADLINE;
    for (;;) {
        size_t progress = 0;
        uint64_t active = 0;
        cr_assert_eq(es_saga_poll(c, 100, &progress, &err), ES_OK, "%s", err.message);
        cr_assert_eq(es_saga_active(c, &active, &err), ES_OK, "%s", err.message);
        if (progress == 0 && active == 0)
            break;
        cr_assert_lt(es_now_us(), deadline, "the reference run still has %llu active sagas",
                     (unsigned long long)active);
    }
    es_saga_destroy(c);
    es_engine_destroy(engine);
    es_config_destroy(cfg);
}

/* ---- children: run_saga, and on Kafka run_processor --------------------------------------- */

static char *child_output(void) {
    static char buf[8192];
    FILE *f = fopen(w.log, "r");
    buf[0] = '\0';
    if (!f)
        return buf;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Runs argv with stdout and stderr appended to the children's log. */
static pid_t spawn(const char *const *argv) {
    pid_t pid = fork();
    cr_assert_neq(pid, -1, "fork: %s", strerror(errno));
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        int fd = open(w.log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Appends "--set" pairs of the Kafka settings to argv at *n. */
static void add_kafka_settings(const char **argv, size_t *n) {
    for (size_t i = 0; kafka_settings[i]; i++) {
        argv[(*n)++] = "--set";
        argv[(*n)++] = kafka_settings[i];
    }
}

/* A coordinator with batches of batch_size events: small ones mean many transactions, so a kill
 * lands between more of them. */
static pid_t start_saga(int batch_size, int until_idle) {
    char batch[48];
    const char *argv[32];
    size_t n = 0;
    snprintf(batch, sizeof batch, "projector.batch.size=%d", batch_size);
    argv[n++] = RUN_SAGA_PATH;
    argv[n++] = w.kafka ? "--brokers" : "--db";
    argv[n++] = w.kafka ? w.brokers : w.db;
    argv[n++] = "--saga-db";
    argv[n++] = w.saga_db;
    if (!w.kafka) {
        argv[n++] = "--short-timeouts";
    } else {
        argv[n++] = "--timeout-ms";
        argv[n++] = KAFKA_TIMEOUT_ARG;
        add_kafka_settings(argv, &n);
    }
    argv[n++] = "--set";
    argv[n++] = batch;
    if (until_idle)
        argv[n++] = "--until-idle";
    argv[n] = NULL;
    return spawn(argv);
}

static void start_processor(void) {
    char *state = tu_path(w.dir, "state.db");
    const char *argv[32] = {RUN_PROCESSOR_PATH, "--brokers", w.brokers, "--state", state};
    size_t n = 5;
    add_kafka_settings(argv, &n);
    argv[n] = NULL;
    w.processor = spawn(argv);
    free(state);
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Instances that reached a terminal state, per the saga db (0 before it exists). */
static long long sagas_done(void) {
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    long long n = 0;
    if (sqlite3_open_v2(w.saga_db, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db,
                           "SELECT count(*) FROM es_saga_instances WHERE state NOT IN "
                           "('running', 'compensating')",
                           -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

/* Starts run_saga, places a wave of orders while it runs, and kills it delay_ms after its
 * start. */
static void kill_one(shop *s, int round, int wave, int batch_size, int delay_ms) {
    int64_t kill_at = es_now_us() + delay_ms * 1000LL;
    pid_t pid = start_saga(batch_size, 0);
    place_more(s, wave);
    int64_t left_us = kill_at - es_now_us();
    if (left_us > 0)
        sleep_ms((int)(left_us / 1000));
    int status = 0;
    pid_t got = waitpid(pid, &status, WNOHANG);
    cr_assert_eq(got, 0, "run_saga ended by itself before kill %d (status 0x%x):\n%s", round,
                 status, child_output());
    cr_assert_eq(kill(pid, SIGKILL), 0);
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
              "run_saga ended before SIGKILL %d (status 0x%x):\n%s", round, status, child_output());
}

/* The last run: --until-idle must end with status 0 once every saga is done. */
static void run_to_idle(void) {
    pid_t pid = start_saga(500, 1);
    int status = 0;
    int64_t deadline = es_now_us() + IDLE_DEADLINE;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (es_now_us() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            cr_assert_fail("run_saga --until-idle did not finish within %lld s:\n%s",
                           IDLE_DEADLINE / SEC, child_output());
        }
        sleep_ms(10);
    }
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "run_saga --until-idle failed (status 0x%x):\n%s", status, child_output());
}

/* ---- what a run left ----------------------------------------------------------------------- */

typedef struct row {
    char type[32], id[64], event_type[64], command_id[256];
    uint64_t version;
    uint32_t quantity; /* inventory events */
    size_t seen;       /* position in the read, for the log-order rule */
} row;

typedef struct log_rows {
    row *rows;
    size_t n, cap, skipped;
} log_rows;

static uint32_t quantity_of(const es_event_t *ev) {
    uint32_t q = 0;
    if (!strcmp(ev->event_type, "inventory.v1.StockReserved")) {
        Inventory__V1__StockReserved *m =
            inventory__v1__stock_reserved__unpack(NULL, ev->payload_len, ev->payload);
        cr_assert_not_null(m);
        q = m->quantity;
        inventory__v1__stock_reserved__free_unpacked(m, NULL);
    } else if (!strcmp(ev->event_type, "inventory.v1.StockReleased")) {
        Inventory__V1__StockReleased *m =
            inventory__v1__stock_released__unpack(NULL, ev->payload_len, ev->payload);
        cr_assert_not_null(m);
        q = m->quantity;
        inventory__v1__stock_released__free_unpacked(m, NULL);
    } else if (!strcmp(ev->event_type, "inventory.v1.StockAdded")) {
        Inventory__V1__StockAdded *m =
            inventory__v1__stock_added__unpack(NULL, ev->payload_len, ev->payload);
        cr_assert_not_null(m);
        q = m->quantity;
        inventory__v1__stock_added__free_unpacked(m, NULL);
    }
    return q;
}

static int take_event(const es_event_t *ev, void *opaque) {
    log_rows *l = opaque;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 1024;
        l->rows = realloc(l->rows, l->cap * sizeof *l->rows);
        cr_assert_not_null(l->rows);
    }
    row *r = &l->rows[l->n];
    memset(r, 0, sizeof *r);
    snprintf(r->type, sizeof r->type, "%s", ev->aggregate_type);
    snprintf(r->id, sizeof r->id, "%s", ev->aggregate_id);
    snprintf(r->event_type, sizeof r->event_type, "%s", ev->event_type);
    snprintf(r->command_id, sizeof r->command_id, "%s", ev->command_id ? ev->command_id : "");
    r->version = ev->version;
    r->quantity = quantity_of(ev);
    r->seen = l->n++;
    return 0;
}

static int by_aggregate_then_read(const void *a, const void *b) {
    const row *x = a, *y = b;
    int c = strcmp(x->type, y->type);
    c = c ? c : strcmp(x->id, y->id);
    return c ? c : (x->seen > y->seen) - (x->seen < y->seen);
}

static int row_cmp(const void *a, const void *b) {
    const row *x = a, *y = b;
    int c = strcmp(x->type, y->type);
    c = c ? c : strcmp(x->id, y->id);
    c = c ? c : strcmp(x->command_id, y->command_id);
    c = c ? c : strcmp(x->event_type, y->event_type);
    return c ? c : (x->quantity > y->quantity) - (x->quantity < y->quantity);
}

/* The log-order rule (what every reader of a Kafka log applies): an aggregate's record counts
 * when its version is the aggregate's next one; a re-produced record is skipped. */
static void keep_log_order(log_rows *l) {
    qsort(l->rows, l->n, sizeof *l->rows, by_aggregate_then_read);
    size_t kept = 0;
    uint64_t version = 0;
    for (size_t i = 0; i < l->n; i++) {
        row *r = &l->rows[i];
        if (kept == 0 || strcmp(r->type, l->rows[kept - 1].type) ||
            strcmp(r->id, l->rows[kept - 1].id))
            version = 0;
        if (r->version != version + 1) {
            l->skipped++;
            continue;
        }
        version = r->version;
        l->rows[kept++] = *r;
    }
    l->n = kept;
}

/* Every domain event of the store (embedded db, or the cluster), sorted by aggregate, command id
 * and type. */
static log_rows read_rows(const char *db, int kafka) {
    es_config_t *cfg = config(db, NULL, kafka);
    es_store_t *store = NULL;
    es_error_t err = {0};
    log_rows l = {0};
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_store_read_log(store, domain_types, 0, 0, take_event, &l, NULL, &err), ES_OK,
                 "%s", err.message);
    es_store_destroy(store);
    es_config_destroy(cfg);
    keep_log_order(&l);
    qsort(l.rows, l.n, sizeof *l.rows, row_cmp);
    return l;
}

static int count(const log_rows *l, const char *type, const char *id, const char *event_type) {
    int n = 0;
    for (size_t i = 0; i < l->n; i++)
        n += !strcmp(l->rows[i].type, type) && !strcmp(l->rows[i].id, id) &&
             !strcmp(l->rows[i].event_type, event_type);
    return n;
}

/* No aggregate holds two events of one command (each demo command emits at most one). */
static void assert_no_double_effect(const log_rows *l) {
    for (size_t i = 1; i < l->n; i++) {
        const row *a = &l->rows[i - 1], *b = &l->rows[i];
        cr_assert(!(*b->command_id && !strcmp(a->type, b->type) && !strcmp(a->id, b->id) &&
                    !strcmp(a->command_id, b->command_id)),
                  "%s/%s holds two events of command %s (%s, %s): an effect applied twice", b->type,
                  b->id, b->command_id, a->event_type, b->event_type);
    }
}

/* Per order one OrderPlaced and one OrderConfirmed or OrderCancelled, as its kind says. */
static void assert_orders(const log_rows *l) {
    for (int i = 0; i < N_ORDERS; i++) {
        char id[32];
        snprintf(id, sizeof id, "o-%03d", i);
        int placed = count(l, "orders.order", id, "orders.v1.OrderPlaced");
        int confirmed = count(l, "orders.order", id, "orders.v1.OrderConfirmed");
        int cancelled = count(l, "orders.order", id, "orders.v1.OrderCancelled");
        cr_assert_eq(placed, 1, "order %s: %d OrderPlaced", id, placed);
        cr_assert_eq(confirmed + cancelled, 1, "order %s (%s): %d OrderConfirmed, %d cancelled", id,
                     kind_name[kind_of(i)], confirmed, cancelled);
        cr_assert_eq(confirmed, kind_of(i) == SUCCEED, "order %s (%s) %s", id,
                     kind_name[kind_of(i)], confirmed ? "was confirmed" : "was cancelled");
    }
}

/* Per payment at most one authorization; refunds only of authorized, voids only of pending. */
static void assert_payments(const log_rows *l) {
    for (int i = 0; i < N_ORDERS; i++) {
        char id[32];
        snprintf(id, sizeof id, "o-%03d", i);
        int authorized = count(l, "payments.payment", id, "payments.v1.PaymentAuthorized");
        int pending = count(l, "payments.payment", id, "payments.v1.PaymentPending");
        int refunded = count(l, "payments.payment", id, "payments.v1.PaymentRefunded");
        int voided = count(l, "payments.payment", id, "payments.v1.PaymentVoided");
        cr_assert_leq(authorized, 1, "payment %s authorized %d times", id, authorized);
        cr_assert_leq(refunded, authorized, "payment %s: %d refunds, %d authorizations", id,
                      refunded, authorized);
        cr_assert_leq(voided, pending, "payment %s: %d voids, %d pending", id, voided, pending);
        cr_assert_eq(authorized, kind_of(i) == SUCCEED, "payment %s (%s): %d authorizations", id,
                     kind_name[kind_of(i)], authorized);
    }
}

typedef struct stock {
    char sku[16];
    long on_hand, reserved;
} stock;

static void fold_stock(const log_rows *l, stock *out) {
    for (int k = 0; k <= N_SKUS; k++) {
        stock *s = &out[k];
        memset(s, 0, sizeof *s);
        if (k < N_SKUS)
            sku_name(s->sku, sizeof s->sku, k);
        else
            snprintf(s->sku, sizeof s->sku, "%s", SCARCE_SKU);
        for (size_t i = 0; i < l->n; i++) {
            const row *r = &l->rows[i];
            if (strcmp(r->type, "inventory.item") || strcmp(r->id, s->sku))
                continue;
            if (!strcmp(r->event_type, "inventory.v1.StockAdded"))
                s->on_hand += r->quantity;
            else if (!strcmp(r->event_type, "inventory.v1.StockReserved"))
                s->reserved += r->quantity;
            else if (!strcmp(r->event_type, "inventory.v1.StockReleased"))
                s->reserved -= r->quantity;
        }
    }
}

static es_saga_info_t *saga_states(const char *saga_db, size_t *n) {
    es_config_t *cfg = config("unused.db", saga_db, 0);
    es_saga_info_t *infos = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_saga_list(cfg, SAGA, NULL, &infos, n, &err), ES_OK, "%s", err.message);
    es_config_destroy(cfg);
    return infos;
}

static int info_cmp(const void *a, const void *b) {
    return strcmp(((const es_saga_info_t *)a)->id, ((const es_saga_info_t *)b)->id);
}

/* Every instance's transitions are in "<saga>.saga.events" once each, ending in its state
 * (on Kafka for a sample: every read scans the topic). */
static void assert_history(const es_saga_info_t *infos, size_t n) {
    es_config_t *cfg = config("kill.db", "kill-saga.db", w.kafka);
    for (size_t i = 0; i < n; i += w.kafka ? HISTORY_EVERY_KAFKA : 1) {
        es_saga_record_t *rs = NULL;
        size_t k = 0;
        es_error_t err = {0};
        cr_assert_eq(es_saga_history(cfg, SAGA, infos[i].id, &rs, &k, &err), ES_OK, "%s: %s",
                     infos[i].id, err.message);
        cr_assert_gt(k, 0);
        for (size_t j = 0; j < k; j++)
            cr_assert_eq(rs[j].seq, j + 1, "saga %s: transition %zu has seq %llu", infos[i].id,
                         j + 1, (unsigned long long)rs[j].seq);
        cr_assert_str_eq(rs[k - 1].state, infos[i].state,
                         "saga %s: its history (%zu transitions) ends %s, its state is %s",
                         infos[i].id, k, rs[k - 1].state, infos[i].state);
        free(rs);
    }
    es_config_destroy(cfg);
}

/* Events the coordinator's runner parked in its DLQ (none expected). */
static long long parked(void) {
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    long long n = 0;
    cr_assert_eq(sqlite3_open_v2(w.saga_db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM es_dlq", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

static void assert_same_outcome(void) {
    log_rows got = read_rows("kill.db", w.kafka), want = read_rows("ref.db", 0);
    assert_no_double_effect(&got);
    assert_no_double_effect(&want);
    size_t ng = 0, nw = 0;
    es_saga_info_t *ig = saga_states("kill-saga.db", &ng);
    es_saga_info_t *iw = saga_states("ref-saga.db", &nw);
    cr_assert_eq(ng, N_ORDERS, "%zu sagas after the kills", ng);
    cr_assert_eq(nw, N_ORDERS, "%zu sagas without kills", nw);
    qsort(ig, ng, sizeof *ig, info_cmp);
    qsort(iw, nw, sizeof *iw, info_cmp);
    int per_kind[N_KINDS] = {0};
    for (size_t i = 0; i < ng; i++) {
        int o = atoi(ig[i].id + 2);
        cr_assert_str_eq(ig[i].id, iw[i].id);
        cr_assert_str_eq(iw[i].state, want_state[kind_of(o)], "saga %s (%s) %s without kills: %s",
                         iw[i].id, kind_name[kind_of(o)], iw[i].state, iw[i].reason);
        cr_assert_str_eq(ig[i].state, iw[i].state,
                         "saga %s (%s): %s after the kills (%s), %s without", ig[i].id,
                         kind_name[kind_of(o)], ig[i].state, ig[i].reason, iw[i].state);
        cr_assert_str_eq(ig[i].reason, iw[i].reason, "saga %s: reason '%s', without kills '%s'",
                         ig[i].id, ig[i].reason, iw[i].reason);
        per_kind[kind_of(o)]++;
    }
    assert_orders(&got);
    assert_payments(&got);
    assert_orders(&want);

    stock sg[N_SKUS + 1], sw[N_SKUS + 1];
    fold_stock(&got, sg);
    fold_stock(&want, sw);
    for (int k = 0; k <= N_SKUS; k++) {
        cr_assert(sg[k].on_hand == sw[k].on_hand && sg[k].reserved == sw[k].reserved,
                  "%s: on hand %ld, reserved %ld; without kills %ld and %ld", sg[k].sku,
                  sg[k].on_hand, sg[k].reserved, sw[k].on_hand, sw[k].reserved);
        cr_assert_geq(sg[k].reserved, 0);
        cr_assert_leq(sg[k].reserved, sg[k].on_hand);
    }

    assert_history(ig, ng);
    free(ig);
    free(iw);

    /* The same effects, each once: every aggregate's events, by command, as without kills. */
    cr_assert_eq(got.n, want.n, "%zu domain events after the kills, %zu without", got.n, want.n);
    for (size_t i = 0; i < got.n; i++)
        cr_assert_eq(row_cmp(&got.rows[i], &want.rows[i]), 0,
                     "after the kills %s/%s has %s of %s; without kills %s/%s has %s of %s",
                     got.rows[i].type, got.rows[i].id, got.rows[i].event_type,
                     got.rows[i].command_id, want.rows[i].type, want.rows[i].id,
                     want.rows[i].event_type, want.rows[i].command_id);
    cr_log_info("sagas: %d succeed, %d broke, %d over limit, %d out of stock, %d 3-D Secure; "
                "%zu domain events (%zu re-produced records skipped)",
                per_kind[SUCCEED], per_kind[BROKE], per_kind[OVER_LIMIT], per_kind[NO_STOCK],
                per_kind[THREE_DS], got.n, got.skipped);
    free(got.rows);
    free(want.rows);
}

/* The embedded store the coordinators and the test wrote side by side verifies: es_heads
 * agrees with the events (a head lost between two writers reads as a stream never written). */
static void assert_log_verifies(void) {
    if (w.kafka)
        return;
    es_config_t *cfg = config("kill.db", NULL, 0);
    tu_assert_verifies(cfg, "kill.db");
    es_config_destroy(cfg);
}

/* ---- the tests --------------------------------------------------------------------------- */

static void quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk, (void)level, (void)fac, (void)buf;
}

static void open_cluster(void) {
    char errstr[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(c, quiet_log);
    w.mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof errstr);
    cr_assert(w.mock_rk, "%s", errstr);
    w.mock = rd_kafka_mock_cluster_new(w.mock_rk, 1);
    cr_assert(w.mock);
    static const char *const kinds[] = {"events", "snapshots", "commands", "replies"};
    char topic[128];
    for (size_t t = 0; domain_types[t]; t++) {
        for (size_t k = 0; k < 4; k++) {
            snprintf(topic, sizeof topic, "%s.%s", domain_types[t], kinds[k]);
            cr_assert_eq(rd_kafka_mock_topic_create(w.mock, topic, PARTS, 1), 0);
        }
        snprintf(topic, sizeof topic, "%s.events.dlq", domain_types[t]);
        cr_assert_eq(rd_kafka_mock_topic_create(w.mock, topic, 1, 1), 0);
    }
    cr_assert_eq(rd_kafka_mock_topic_create(w.mock, SAGA_TYPE ".events", PARTS, 1), 0);
    w.brokers = rd_kafka_mock_cluster_bootstraps(w.mock);
}

static void open_world(int kafka) {
    memset(&w, 0, sizeof w);
    w.kafka = kafka;
    w.dir = tu_tempdir();
    w.db = tu_path(w.dir, "kill.db");
    w.saga_db = tu_path(w.dir, "kill-saga.db");
    w.log = tu_path(w.dir, "children.log");
    if (kafka) {
        open_cluster();
        start_processor();
    }
}

static void close_world(void) {
    if (w.processor > 0) {
        kill(w.processor, SIGKILL);
        waitpid(w.processor, NULL, 0);
    }
    if (w.mock)
        rd_kafka_mock_cluster_destroy(w.mock);
    if (w.mock_rk)
        rd_kafka_destroy(w.mock_rk);
    if (w.dir && !getenv("SAGA_CRASH_KEEP"))
        tu_rmtree(w.dir);
    else if (w.dir)
        fprintf(stderr, "kept %s\n", w.dir);
    free(w.dir);
    free(w.db);
    free(w.saga_db);
    free(w.log);
    memset(&w, 0, sizeof w);
}

/* The reference, then KILLS killed coordinators with waves of orders, then one until idle. */
static void kill_and_compare(void) {
    const char *env = getenv("SAGA_CRASH_SEED");
    unsigned seed =
        env ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL) ^ (unsigned)getpid();
    cr_log_info("SAGA_CRASH_SEED=%u", seed);

    int64_t t0 = es_now_us();
    run_reference();
    int64_t t1 = es_now_us();
    shop live = open_shop("kill.db", w.kafka);
    place_more(&live, FIRST_WAVE);
    int kills = w.kafka ? KAFKA_KILLS : KILLS;
    int lo = w.kafka ? KAFKA_KILL_MIN_MS : KILL_MIN_MS,
        hi = w.kafka ? KAFKA_KILL_MAX_MS : KILL_MAX_MS;
    char progress[KILLS * 8 + 1] = "", *p = progress;
    for (int k = 0; k < kills; k++) {
        static const int batch[] = {1, 2, 4, 16};
        kill_one(&live, k, (N_ORDERS - FIRST_WAVE) / kills + 1, batch[rand_r(&seed) % 4],
                 lo + (int)(rand_r(&seed) % (unsigned)(hi - lo + 1)));
        p += snprintf(p, sizeof progress - (size_t)(p - progress), " %lld", sagas_done());
    }
    cr_assert_eq(live.placed, N_ORDERS);
    close_shop(&live);
    int64_t t2 = es_now_us();
    run_to_idle();
    int64_t t3 = es_now_us();
    cr_assert_eq(parked(), 0, "the coordinator parked events:\n%s", child_output());
    assert_log_verifies();
    assert_same_outcome();
    cr_log_info("sagas ended after each of %d kills:%s", kills, progress);
    cr_log_info("reference %.1f s, kills %.1f s, final run %.1f s, checks %.1f s",
                (double)(t1 - t0) / SEC, (double)(t2 - t1) / SEC, (double)(t3 - t2) / SEC,
                (double)(es_now_us() - t3) / SEC);
}

TestSuite(saga_crash, .fini = close_world, .timeout = 120);

Test(saga_crash, coordinator_killed_at_random_points_ends_every_saga_as_without_kills) {
    open_world(0);
    kill_and_compare();
}

Test(saga_crash, kafka_coordinator_killed_at_random_points_ends_every_saga_as_without_kills) {
    open_world(1);
    kill_and_compare();
}
