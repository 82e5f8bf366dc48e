/*
 * The Kafka write path under ownership changes and broker faults. librdkafka's
 * mock cluster runs in the test process (it listens on 127.0.0.1) and command
 * processors run as child processes (run_processor) sharing the consumer group
 * of "<type>.commands" (PARTS partitions each). Caller threads, each with an
 * engine of its own, send rounds of commands over orders and inventory items
 * with es_execute_batch and explicit command ids, and send a round again with
 * the same ids until every command has an outcome.
 *
 * Meanwhile owners are stopped, killed and started (rebalance) or the cluster
 * misbehaves (faults). The callers know what every command must do: a lost or
 * duplicated event changes later outcomes. Afterwards every aggregate's events,
 * read with the log-order rule, are exactly the accepted commands' events in
 * order, and a projector that ran through it all equals a replay.
 */
#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "domain.h"
#include "order_summary.h"
#include "testutil.h"

#define PARTS 6
#define N_ORDERS 100
#define ORDERS_STR "100"
#define N_ITEMS 100
#define N_AGGS (N_ORDERS + N_ITEMS)
#define CALLERS 2
#define PER_CALLER (N_AGGS / CALLERS)
#define MAX_ROUNDS 100
#define MAX_KIDS 4
#define SEC 1000000LL
#define ROUND_DEADLINE (60 * SEC) /* one round's outcomes, retries included */
#define PRODUCE 0                 /* Kafka API key of Produce */

/* What the callers know of one aggregate: its state and the accepted commands, in order. */
typedef struct model {
    int status; /* orders: 0 none, 1 placed, 2 confirmed, 3 cancelled */
    uint32_t on_hand, reserved;
    uint64_t version;
    char (*accepted)[40]; /* command id of each version */
} model;

typedef struct caller {
    pthread_t thread;
    int index;
    es_engine_t *engine;
    unsigned retries;
    char fail[1024]; /* set when the thread gave up: asserted on the main thread */
    size_t fail_agg; /* the aggregate the failure is about */
} caller;

static struct {
    char *dir, *child_log;
    rd_kafka_t *mock_rk;
    rd_kafka_mock_cluster_t *mock;
    const char *brokers;
    es_config_t *cfg; /* callers, the read side and the projector */
    pid_t kids[MAX_KIDS];
    int n_states;
    int rounds;
    model models[N_AGGS];
    caller callers[CALLERS];
    atomic_long done; /* commands with their outcome */
    atomic_ulong accepted_events;
    atomic_ulong duplicates; /* outcomes that came as the answer to an earlier send */
} w;

static void quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk, (void)level, (void)fac, (void)buf;
}

static void set(es_config_t *cfg, const char *key, const char *value) {
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, key, value, &err), ES_OK, "%s", err.message);
}

static void open_world(int brokers, int rounds) {
    char errstr[256];
    memset(&w, 0, sizeof w);
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(c, quiet_log);
    w.mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof errstr);
    cr_assert(w.mock_rk, "%s", errstr);
    w.mock = rd_kafka_mock_cluster_new(w.mock_rk, brokers);
    cr_assert(w.mock);
    static const char *const types[] = {"orders.order", "payments.payment", "inventory.item"};
    static const char *const kinds[] = {"events", "snapshots", "commands", "replies"};
    for (size_t t = 0; t < 3; t++) {
        char topic[128];
        for (size_t k = 0; k < 4; k++) {
            snprintf(topic, sizeof topic, "%s.%s", types[t], kinds[k]);
            cr_assert_eq(rd_kafka_mock_topic_create(w.mock, topic, PARTS, brokers), 0);
        }
        snprintf(topic, sizeof topic, "%s.events.dlq", types[t]);
        cr_assert_eq(rd_kafka_mock_topic_create(w.mock, topic, 1, brokers), 0);
    }
    w.brokers = rd_kafka_mock_cluster_bootstraps(w.mock);
    w.dir = tu_tempdir();
    w.child_log = tu_path(w.dir, "processors.log");
    w.cfg = tu_config(w.dir, "unused.db");
    char *rm = tu_path(w.dir, "read.db");
    set(w.cfg, "brokers", w.brokers);
    set(w.cfg, "readmodel.db", rm);
    set(w.cfg, "service.name", "svc");
    set(w.cfg, "execute.timeout.ms", "2500");
    set(w.cfg, "kafka.reconnect.backoff.max.ms", "200");
    free(rm);
    w.rounds = rounds;
    for (size_t a = 0; a < N_AGGS; a++) {
        w.models[a].accepted = calloc((size_t)rounds, sizeof *w.models[a].accepted);
        cr_assert(w.models[a].accepted);
    }
    atomic_init(&w.done, 0);
    atomic_init(&w.accepted_events, 0);
    atomic_init(&w.duplicates, 0);
}

static void close_world(void) {
    for (int k = 0; k < MAX_KIDS; k++)
        if (w.kids[k] > 0) {
            kill(w.kids[k], SIGKILL);
            waitpid(w.kids[k], NULL, 0);
        }
    for (size_t a = 0; a < N_AGGS; a++)
        free(w.models[a].accepted);
    es_config_destroy(w.cfg);
    if (w.mock)
        rd_kafka_mock_cluster_destroy(w.mock);
    if (w.mock_rk)
        rd_kafka_destroy(w.mock_rk);
    if (w.dir)
        tu_rmtree(w.dir);
    free(w.dir);
    free(w.child_log);
}

TestSuite(kafka_rebalance, .fini = close_world, .timeout = 150);
TestSuite(kafka_faults, .fini = close_world, .timeout = 150);

/* ---- processors as child processes ------------------------------------------------------- */

static char *child_output(void) {
    static char buf[8192];
    FILE *f = fopen(w.child_log, "r");
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

/* Starts run_processor in slot k, on a new state store unless state names one. */
static void start_kid(int k, const char *state) {
    char fresh[32], *path;
    snprintf(fresh, sizeof fresh, "state-%d.db", w.n_states++);
    path = tu_path(w.dir, state ? state : fresh);
    const char *argv[] = {RUN_PROCESSOR_PATH, "--brokers", w.brokers, "--state", path, "--set",
                          "service.name=svc",
                          /* short sessions keep ownership changes quick (see testutil.h) */
                          "--set", "kafka.session.timeout.ms=" TU_MOCK_SESSION_TIMEOUT_MS, "--set",
                          "kafka.heartbeat.interval.ms=" TU_MOCK_HEARTBEAT_INTERVAL_MS, "--set",
                          "kafka.reconnect.backoff.max.ms=200", NULL};
    pid_t pid = fork();
    cr_assert_neq(pid, -1, "fork: %s", strerror(errno));
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        int fd = open(w.child_log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    free(path);
    w.kids[k] = pid;
}

/* Sends sig to the processor in slot k and waits for it; SIGTERM must end it with status 0. */
static void stop_kid(int k, int sig) {
    int status = 0;
    int64_t deadline = es_now_us() + 30 * SEC;
    cr_assert_eq(kill(w.kids[k], sig), 0);
    for (;;) {
        pid_t got = waitpid(w.kids[k], &status, WNOHANG);
        if (got == w.kids[k])
            break;
        cr_assert(got == 0 || errno == EINTR, "waitpid: %s", strerror(errno));
        if (es_now_us() > deadline) {
            kill(w.kids[k], SIGKILL);
            waitpid(w.kids[k], NULL, 0);
            w.kids[k] = 0;
            cr_assert_fail("run_processor did not stop within 30 s of signal %d:\n%s", sig,
                           child_output());
        }
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    w.kids[k] = 0;
    if (sig == SIGKILL)
        cr_assert(WIFSIGNALED(status), "run_processor ended before SIGKILL:\n%s", child_output());
    else
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "run_processor did not stop cleanly (status 0x%x):\n%s", status, child_output());
}

/* ---- callers ----------------------------------------------------------------------------- */

static Orders__V1__LineItem line = {PROTOBUF_C_MESSAGE_INIT(&orders__v1__line_item__descriptor),
                                    "sku-1", 2, 1500};
static Orders__V1__LineItem *lines[] = {&line};
static Orders__V1__ConfirmOrder confirm_msg = ORDERS__V1__CONFIRM_ORDER__INIT;
static Orders__V1__CancelOrder cancel_msg = {
    PROTOBUF_C_MESSAGE_INIT(&orders__v1__cancel_order__descriptor), "changed my mind"};

static void agg_id(size_t a, char *out, size_t cap) {
    if (a < N_ORDERS)
        snprintf(out, cap, "o-%03d", (int)a);
    else
        snprintf(out, cap, "i-%03d", (int)(a - N_ORDERS));
}

/* One command of a round and what it must do to its aggregate's model. */
typedef struct planned {
    char id[24], command_id[40], order_id[32];
    union {
        Orders__V1__PlaceOrder place;
        Inventory__V1__Restock restock;
        Inventory__V1__ReserveStock reserve;
    } msg;
    enum { PLACE, CONFIRM, CANCEL, RESTOCK, RESERVE } kind;
    int accept;
    int events; /* what an accepted command appends: 0 or 1 */
} planned;

/* Round r of aggregate a: orders are placed, then confirmed or cancelled (some twice: a second
 * confirm, or a cancel after a confirm, is refused; a second cancel is accepted and appends
 * nothing); items are restocked, and every third command reserves 3 units (a StockShortage
 * event when they are not there). */
static es_command_t plan(size_t a, int r, planned *p) {
    model *m = &w.models[a];
    const ProtobufCMessage *msg;
    agg_id(a, p->id, sizeof p->id);
    snprintf(p->command_id, sizeof p->command_id, "%s-r%03d", p->id, r);
    if (a < N_ORDERS && r == 0) {
        orders__v1__place_order__init(&p->msg.place);
        p->msg.place.customer_id = "c-1";
        p->msg.place.currency = "EUR";
        p->msg.place.n_items = 1;
        p->msg.place.items = lines;
        msg = &p->msg.place.base;
        p->kind = PLACE;
        p->accept = m->status == 0;
        p->events = 1;
    } else if (a < N_ORDERS && (a + (size_t)r) % 3 == 0) {
        msg = &cancel_msg.base;
        p->kind = CANCEL;
        p->accept = m->status == 1 || m->status == 3;
        p->events = m->status == 1;
    } else if (a < N_ORDERS) {
        msg = &confirm_msg.base;
        p->kind = CONFIRM;
        p->accept = m->status == 1;
        p->events = 1;
    } else if ((a + (size_t)r) % 3 != 2) {
        inventory__v1__restock__init(&p->msg.restock);
        p->msg.restock.quantity = 1 + (uint32_t)((a + (size_t)r) % 2);
        msg = &p->msg.restock.base;
        p->kind = RESTOCK;
        p->accept = 1;
        p->events = 1;
    } else {
        inventory__v1__reserve_stock__init(&p->msg.reserve);
        snprintf(p->order_id, sizeof p->order_id, "res-%03d", r);
        p->msg.reserve.order_id = p->order_id;
        p->msg.reserve.quantity = 3;
        msg = &p->msg.reserve.base;
        p->kind = RESERVE;
        p->accept = 1;
        p->events = 1;
    }
    return (es_command_t){.aggregate_type = a < N_ORDERS ? "orders.order" : "inventory.item",
                          .aggregate_id = p->id,
                          .message = msg,
                          .command_id = p->command_id};
}

/* The model after the command's outcome. */
static void evolve(size_t a, const planned *p) {
    model *m = &w.models[a];
    if (!p->accept || !p->events)
        return;
    snprintf(m->accepted[m->version++], sizeof *m->accepted, "%s", p->command_id);
    if (p->kind == PLACE)
        m->status = 1;
    else if (p->kind == CONFIRM)
        m->status = 2;
    else if (p->kind == CANCEL)
        m->status = 3;
    else if (p->kind == RESTOCK)
        m->on_hand += p->msg.restock.quantity;
    else if (m->on_hand - m->reserved >= p->msg.reserve.quantity)
        m->reserved += p->msg.reserve.quantity; /* else a shortage: nothing reserved */
}

/* Checks one command's outcome against the model; returns 0 or fills cl->fail. */
static int check(caller *cl, size_t a, const planned *p, const es_result_t *res) {
    const model *m = &w.models[a];
    size_t n = p->accept ? (size_t)p->events : 0;
    uint64_t want_version = m->version + n;
    es_outcome want = p->accept ? ES_OUTCOME_ACCEPTED : ES_OUTCOME_REJECTED;
    if (res->outcome == want && res->version == want_version && res->n_events == n &&
        (n == 0 || (res->first_version == want_version &&
                    !strcmp(res->events[0]->command_id, p->command_id))))
        return 0;
    cl->fail_agg = a;
    snprintf(cl->fail, sizeof cl->fail,
             "command %s: outcome %d (code %s, duplicate %d, reason %s) at version %llu with %zu "
             "event(s); expected outcome %d at version %llu: an event was lost or duplicated",
             p->command_id, (int)res->outcome, es_strerror(res->code), (int)res->duplicate,
             res->reason ? res->reason : "-", (unsigned long long)res->version, res->n_events,
             (int)want, (unsigned long long)want_version);
    return -1;
}

/* Sends round r of the caller's aggregates until every command has its outcome. */
static int run_round(caller *cl, int r, planned *ps, es_command_t *cmds, es_result_t *res) {
    for (size_t i = 0; i < PER_CALLER; i++)
        cmds[i] = plan(i * CALLERS + (size_t)cl->index, r, &ps[i]);
    int64_t deadline = es_now_us() + ROUND_DEADLINE;
    es_error_t err = {0};
    es_err rc;
    while ((rc = es_execute_batch(cl->engine, cmds, PER_CALLER, res, &err)) != ES_OK) {
        /* Timed out or failed to send: the same command ids again, as a caller must. */
        cl->retries++;
        if (getenv("TEST_DEBUG")) /* TEST_DEBUG=1 shows the retries */
            fprintf(stderr, "caller %d, round %d: %s\n", cl->index, r, err.message);
        if (es_now_us() > deadline) {
            snprintf(cl->fail, sizeof cl->fail, "round %d: no outcome within %lld s: %s: %s", r,
                     ROUND_DEADLINE / SEC, es_strerror(rc), err.message);
            return -1;
        }
        if (rc != ES_ETIMEOUT) {
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    int bad = 0;
    for (size_t i = 0; i < PER_CALLER; i++) {
        size_t a = i * CALLERS + (size_t)cl->index;
        if (!bad && check(cl, a, &ps[i], &res[i]))
            bad = -1;
        if (!bad && ps[i].accept)
            atomic_fetch_add(&w.accepted_events, res[i].n_events);
        if (res[i].duplicate)
            atomic_fetch_add(&w.duplicates, 1);
        evolve(a, &ps[i]);
        es_result_clear(&res[i]);
    }
    atomic_fetch_add(&w.done, PER_CALLER);
    return bad;
}

static void *call(void *opaque) {
    caller *cl = opaque;
    planned *ps = calloc(PER_CALLER, sizeof *ps);
    es_command_t *cmds = calloc(PER_CALLER, sizeof *cmds);
    es_result_t *res = calloc(PER_CALLER, sizeof *res);
    if (!ps || !cmds || !res)
        snprintf(cl->fail, sizeof cl->fail, "out of memory");
    for (int r = 0; !cl->fail[0] && r < w.rounds; r++)
        run_round(cl, r, ps, cmds, res);
    free(ps);
    free(cmds);
    free(res);
    return NULL;
}

static void start_callers(void) {
    for (int i = 0; i < CALLERS; i++) {
        caller *cl = &w.callers[i];
        es_error_t err = {0};
        cl->index = i;
        cr_assert_eq(es_engine_new(w.cfg, &cl->engine, &err), ES_OK, "%s", err.message);
        cr_assert_eq(demo_register_all(cl->engine, &err), ES_OK, "%s", err.message);
        cr_assert_eq(pthread_create(&cl->thread, NULL, call, cl), 0);
    }
}

static const char *records_of(size_t a);

static unsigned join_callers(void) {
    unsigned retries = 0;
    for (int i = 0; i < CALLERS; i++) {
        caller *cl = &w.callers[i];
        cr_assert_eq(pthread_join(cl->thread, NULL), 0);
        es_engine_destroy(cl->engine);
        retries += cl->retries;
    }
    for (int i = 0; i < CALLERS; i++)
        if (w.callers[i].fail[0])
            cr_assert_fail("caller %d: %s\nthe aggregate's records in the log:\n%s"
                           "processors said:\n%s",
                           i, w.callers[i].fail, records_of(w.callers[i].fail_agg), child_output());
    cr_assert_eq(atomic_load(&w.done), (long)w.rounds * N_AGGS);
    return retries;
}

/* Waits until fraction/4 of the commands have their outcome (or a caller gave up). */
static void await_progress(int quarters) {
    long want = (long)w.rounds * N_AGGS * quarters / 4;
    int64_t deadline = es_now_us() + 120 * SEC;
    while (atomic_load(&w.done) < want) {
        for (int i = 0; i < CALLERS; i++)
            if (w.callers[i].fail[0])
                return; /* join_callers reports it */
        cr_assert_lt(es_now_us(), deadline, "%ld of %ld commands answered", atomic_load(&w.done),
                     want);
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* ---- the projector ----------------------------------------------------------------------- */

typedef struct projector {
    es_runner_t *r;
    pthread_t thread;
    es_err rc;
    es_error_t err;
} projector;

static void *run_projector(void *opaque) {
    projector *pj = opaque;
    pj->rc = es_runner_run(pj->r, &pj->err);
    return NULL;
}

static void start_projector(projector *pj) {
    es_error_t err = {0};
    memset(pj, 0, sizeof *pj);
    cr_assert_eq(es_runner_new(w.cfg, &es_order_summary_projector, &pj->r, &err), ES_OK, "%s",
                 err.message);
    cr_assert_eq(pthread_create(&pj->thread, NULL, run_projector, pj), 0);
}

/* Stops the runner thread, then polls until the read model holds every order event. */
static void finish_projector(projector *pj, uint64_t order_events) {
    es_runner_stop(pj->r);
    cr_assert_eq(pthread_join(pj->thread, NULL), 0);
    cr_assert_eq(pj->rc, ES_OK, "%s", pj->err.message);
    char *rm = tu_path(w.dir, "read.db");
    int64_t deadline = es_now_us() + 30 * SEC;
    for (;;) {
        es_error_t err = {0};
        size_t n = 0;
        cr_assert_eq(es_runner_poll(pj->r, 200, &n, &err), ES_OK, "%s", err.message);
        if (n == 0 && tu_query_int(rm, "SELECT count(*) FROM order_summary") == N_ORDERS &&
            (uint64_t)tu_query_int(rm, "SELECT coalesce(sum(version), 0) FROM order_summary") ==
                order_events)
            break;
        cr_assert_lt(es_now_us(), deadline, "the projector did not catch up with %llu events",
                     (unsigned long long)order_events);
    }
    es_runner_stats_t st;
    es_runner_stats(pj->r, &st);
    cr_assert_eq(st.parked, 0);
    cr_log_info("projector: %llu applied, %llu skipped by the log-order rule, %llu batches",
                (unsigned long long)st.applied, (unsigned long long)st.stale,
                (unsigned long long)st.batches);
    es_runner_destroy(pj->r);
    free(rm);
}

/* The live read model equals a replay of the log into another file, row for row. */
static void assert_replay_equals_live(void) {
    es_config_t *cfg = es_config_dup(w.cfg);
    char *live = tu_path(w.dir, "read.db"), *rebuilt = tu_path(w.dir, "replayed.db");
    es_error_t err = {0};
    cr_assert(cfg);
    set(cfg, "readmodel.db", rebuilt);
    cr_assert_eq(es_replay(cfg, &es_order_summary_projector, NULL, NULL, &err), ES_OK, "%s",
                 err.message);
    es_config_destroy(cfg);
    sqlite3 *db = NULL;
    char *sql = NULL;
    cr_assert_eq(sqlite3_open(live, &db), SQLITE_OK);
    cr_assert_geq(asprintf(&sql, "ATTACH '%s' AS rebuilt", rebuilt), 0);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    free(sql);
    static const char *const diffs[] = {
        "SELECT count(*) FROM (SELECT * FROM main.order_summary EXCEPT "
        "SELECT * FROM rebuilt.order_summary)",
        "SELECT count(*) FROM (SELECT * FROM rebuilt.order_summary EXCEPT "
        "SELECT * FROM main.order_summary)",
        "SELECT count(*) - " ORDERS_STR " FROM rebuilt.order_summary",
    };
    for (size_t i = 0; i < 3; i++) {
        sqlite3_stmt *s = NULL;
        cr_assert_eq(sqlite3_prepare_v2(db, diffs[i], -1, &s, NULL), SQLITE_OK, "%s",
                     sqlite3_errmsg(db));
        cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
        cr_assert_eq(sqlite3_column_int64(s, 0), 0, "%s", diffs[i]);
        sqlite3_finalize(s);
    }
    sqlite3_close(db);
    free(live);
    free(rebuilt);
}

/* ---- the log ----------------------------------------------------------------------------- */

#define READ_STREAM_EVERY 20 /* es_store_read_stream scans whole topics: every 20th aggregate */

/* What a reader of one aggregate's events checks against the model, event by event. */
typedef struct stream_check {
    const model *m;
    uint64_t n;   /* events kept */
    uint64_t raw; /* records seen (raw reads only) */
    char bad[256];
} stream_check;

static void check_event(stream_check *c, uint64_t version, const char *command_id) {
    uint64_t v = ++c->n;
    if (!c->bad[0] && (version != v || v > c->m->version || !command_id ||
                       strcmp(command_id, c->m->accepted[v - 1])))
        snprintf(c->bad, sizeof c->bad, "event %llu is version %llu of command %s, not of %s",
                 (unsigned long long)v, (unsigned long long)version,
                 command_id ? command_id : "(none)",
                 v <= c->m->version ? c->m->accepted[v - 1] : "(no command: one too many)");
}

static int next_event(const es_event_t *ev, void *opaque) {
    check_event(opaque, ev->version, ev->command_id);
    return 0;
}

/* A failure's evidence: every record of one aggregate, as read_raw meets them. */
static struct {
    const char *id;
    char lines[4096];
} trace;

/* One record of an events topic: the log-order rule keeps it when it is its aggregate's next
 * version (an aggregate lives in one partition, so offset order is its log order). */
static void raw_record(stream_check *checks, size_t first, const rd_kafka_message_t *m) {
    es_event_t *ev = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_envelope_decode(m->payload, m->len, NULL, &ev, &err), ES_OK, "%s", err.message);
    if (trace.id && !strcmp(ev->aggregate_id, trace.id)) {
        size_t len = strlen(trace.lines);
        snprintf(trace.lines + len, sizeof trace.lines - len,
                 "  partition %d offset %lld: version %llu %s command %s\n", (int)m->partition,
                 (long long)m->offset, (unsigned long long)ev->version, ev->event_type,
                 ev->command_id ? ev->command_id : "-");
    }
    size_t a = first + (size_t)strtoul(ev->aggregate_id + 2, NULL, 10);
    cr_assert_lt(a, N_AGGS, "unexpected aggregate %s", ev->aggregate_id);
    stream_check *c = &checks[a];
    c->raw++;
    if (ev->version == c->n + 1)
        check_event(c, ev->version, ev->command_id);
    es_event_free(ev);
}

/* Reads every record of topic with a consumer of the test's own. */
static void read_raw(const char *topic, stream_check *checks, size_t first) {
    char errstr[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(c, quiet_log);
    cr_assert_eq(rd_kafka_conf_set(c, "bootstrap.servers", w.brokers, errstr, sizeof errstr), 0);
    cr_assert_eq(rd_kafka_conf_set(c, "group.id", "test-reader", errstr, sizeof errstr), 0);
    cr_assert_eq(rd_kafka_conf_set(c, "fetch.wait.max.ms", "5", errstr, sizeof errstr), 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, errstr, sizeof errstr);
    cr_assert(rk, "%s", errstr);
    for (int32_t p = 0; p < PARTS; p++) {
        int64_t lo = 0, hi = 0;
        cr_assert_eq(rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000), 0);
        cr_assert_eq(lo, 0, "%s partition %d lost its head", topic, (int)p);
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = lo;
        cr_assert_eq(rd_kafka_assign(rk, l), 0);
        rd_kafka_topic_partition_list_destroy(l);
        int64_t next = lo, deadline = es_now_us() + 20 * SEC;
        while (next < hi) {
            cr_assert_lt(es_now_us(), deadline, "%s partition %d unread", topic, (int)p);
            rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
            if (m && !m->err && m->offset >= next) {
                next = m->offset + 1;
                raw_record(checks, first, m);
            }
            if (m)
                rd_kafka_message_destroy(m);
        }
    }
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
}

/* Every record of aggregate a in its events topic (for a failure message). */
static const char *records_of(size_t a) {
    static stream_check scratch[N_AGGS];
    static char id[24];
    agg_id(a, id, sizeof id);
    memset(scratch, 0, sizeof scratch);
    for (size_t i = 0; i < N_AGGS; i++)
        scratch[i].m = &w.models[i];
    trace.id = id;
    trace.lines[0] = '\0';
    if (a < N_ORDERS)
        read_raw("orders.order.events", scratch, 0);
    else
        read_raw("inventory.item.events", scratch, N_ORDERS);
    trace.id = NULL;
    return trace.lines[0] ? trace.lines : "  (none)\n";
}

static void assert_matches_model(const stream_check *c, size_t a, const char *reader) {
    char id[24];
    agg_id(a, id, sizeof id);
    cr_assert_eq(c->bad[0], '\0', "%s, %s: %s", reader, id, c->bad);
    cr_assert_eq(c->n, w.models[a].version, "%s: %s has %llu events; %llu commands accepted",
                 reader, id, (unsigned long long)c->n, (unsigned long long)w.models[a].version);
}

/* Every aggregate's events, with the log-order rule, are its accepted commands' events in
 * order, each once: read raw by the test for every aggregate, and through a Kafka-backend
 * store (es_store_read_stream) for a sample. Returns the order events. */
static uint64_t assert_log_is_the_model(void) {
    static stream_check checks[N_AGGS];
    uint64_t raw = 0, kept = 0, order_events = 0;
    for (size_t a = 0; a < N_AGGS; a++)
        checks[a] = (stream_check){&w.models[a], 0, 0, ""};
    read_raw("orders.order.events", checks, 0);
    read_raw("inventory.item.events", checks, N_ORDERS);
    for (size_t a = 0; a < N_AGGS; a++) {
        assert_matches_model(&checks[a], a, "raw read with the log-order rule");
        raw += checks[a].raw;
        kept += checks[a].n;
        order_events += a < N_ORDERS ? checks[a].n : 0;
    }
    cr_assert_eq(kept, atomic_load(&w.accepted_events),
                 "readers see %llu events, accepted commands made %llu", (unsigned long long)kept,
                 (unsigned long long)atomic_load(&w.accepted_events));

    es_store_t *store = NULL;
    es_error_t err = {0};
    es_config_t *cfg = es_config_dup(w.cfg);
    cr_assert(cfg);
    /* Each read scans every partition, and a re-assignment waits for the fetch in flight. */
    set(cfg, "kafka.fetch.wait.max.ms", "5");
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    for (size_t a = 0; a < N_AGGS; a += READ_STREAM_EVERY) {
        char id[24];
        stream_check c = {&w.models[a], 0, 0, ""};
        agg_id(a, id, sizeof id);
        cr_assert_eq(es_store_read_stream(store, a < N_ORDERS ? "orders.order" : "inventory.item",
                                          id, 1, next_event, &c, &err),
                     ES_OK, "%s", err.message);
        assert_matches_model(&c, a, "es_store_read_stream");
    }
    es_store_destroy(store);
    es_config_destroy(cfg);
    cr_log_info("log: %llu records, %llu events kept by the log-order rule, %llu duplicate or "
                "out-of-order records skipped",
                (unsigned long long)raw, (unsigned long long)kept,
                (unsigned long long)(raw - kept));
    return order_events;
}

/* ---- the tests --------------------------------------------------------------------------- */

Test(kafka_rebalance, owners_stopped_killed_and_started_lose_and_duplicate_nothing) {
    open_world(1, 100);
    projector pj;
    int64_t t0 = es_now_us();
    start_kid(0, NULL);
    start_kid(1, "state-b.db");
    start_projector(&pj);
    start_callers();

    await_progress(1); /* an owner leaves cleanly, a new one (fresh state store) joins */
    stop_kid(0, SIGTERM);
    start_kid(2, NULL);
    await_progress(2); /* an owner dies mid-batch and comes back on its state store */
    stop_kid(1, SIGKILL);
    start_kid(1, "state-b.db");
    await_progress(3); /* and the fresh one dies too, and comes back */
    stop_kid(2, SIGKILL);
    start_kid(2, NULL);
    unsigned retries = join_callers();
    int64_t t1 = es_now_us();
    stop_kid(1, SIGTERM);
    stop_kid(2, SIGTERM);

    uint64_t order_events = assert_log_is_the_model();
    finish_projector(&pj, order_events);
    assert_replay_equals_live();
    cr_log_info("rebalance: %d commands in %.1f s, %u batch retries, %lu answered as duplicates; "
                "checks %.1f s",
                w.rounds * N_AGGS, (double)(t1 - t0) / SEC, retries, atomic_load(&w.duplicates),
                (double)(es_now_us() - t1) / SEC);
}

/* Holds broker id down for ms, then brings it back. */
static void broker_outage(int32_t id, int ms) {
    cr_assert_eq(rd_kafka_mock_broker_set_down(w.mock, id), 0);
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL); /* the outage itself: nothing to wait for */
    cr_assert_eq(rd_kafka_mock_broker_set_up(w.mock, id), 0);
}

Test(kafka_faults, produce_errors_broker_outages_and_coordinator_moves_lose_nothing) {
    open_world(3, 15);
    projector pj;
    int64_t t0 = es_now_us();
    start_kid(0, NULL);
    start_kid(1, NULL);
    start_projector(&pj);
    start_callers();

    await_progress(1);
    rd_kafka_mock_push_request_errors(
        w.mock, PRODUCE, 6, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT);
    rd_kafka_mock_coordinator_set(w.mock, "group", "svc.commands", 2);
    broker_outage(3, 1500);
    await_progress(2);
    rd_kafka_mock_coordinator_set(w.mock, "group", "svc.commands", 3);
    broker_outage(1, 3000); /* longer than execute.timeout.ms: callers retry */
    rd_kafka_mock_push_request_errors(
        w.mock, PRODUCE, 4, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT);
    await_progress(3);
    rd_kafka_mock_coordinator_set(w.mock, "group", "svc.commands", 1);
    broker_outage(2, 1500);
    unsigned retries = join_callers();
    int64_t t1 = es_now_us();
    stop_kid(0, SIGTERM);
    stop_kid(1, SIGTERM);

    uint64_t order_events = assert_log_is_the_model();
    finish_projector(&pj, order_events);
    assert_replay_equals_live();
    cr_log_info("faults: %d commands in %.1f s, %u batch retries, %lu answered as duplicates; "
                "checks %.1f s",
                w.rounds * N_AGGS, (double)(t1 - t0) / SEC, retries, atomic_load(&w.duplicates),
                (double)(es_now_us() - t1) / SEC);
}
