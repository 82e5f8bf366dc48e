/*
 * order_saga: the demo service. It stocks a few SKUs, places six orders and
 * lets the orders.fulfilment saga (fulfilment.h) take each one through stock,
 * payment and confirmation: three go through, one runs out of stock (two
 * orders want the last hoodies), one is declined by the card and one waits
 * for a 3-D Secure check that never comes and times out. Once every saga has
 * ended, the demo prints what each saga did (its transitions, read from the
 * log), the stock, and the order_summary read model, brought up to date.
 *
 * usage: order_saga [--db FILE] [--readmodel FILE] [--saga-db FILE] [--stay]
 *        order_saga --brokers ADDR [--readmodel FILE] [--stay]
 *        order_saga --brokers ADDR --serve TYPE [--state FILE]
 *        order_saga --brokers ADDR --saga [--saga-db FILE]
 * and each with --metrics HOST:PORT: the config key metrics.listen, so that the process serves
 * /metrics and /healthz (docs/observability.md). --stay keeps the projectors (embedded: and
 * the saga coordinator) running after the story until SIGTERM or SIGINT (stay.h).
 *
 * Embedded (the default): one process, the saga coordinator runs in it until
 * no saga is active. The database comes from --db, else the usual config
 * sources (ESKIT_DB, eskit.conf), else ./order_saga_demo/events.db, which is
 * recreated on every run. The read model and the saga database come from
 * --readmodel and --saga-db, else readmodel.db and saga.db of the config
 * sources, else read.db and saga.db beside the default database, or the
 * given database's path with ".read.db" and ".saga.db" appended. A run's
 * files (and the side files of its read models) stay in one directory, and
 * the demo ends with the esctl commands that inspect them.
 *
 * Kafka (--brokers, or brokers in the config sources): the same story with
 * the services as processes of their own (tools/demo-kafka.sh starts them):
 * --serve TYPE is the command processor of one aggregate type (orders.order,
 * payments.payment or inventory.item) with its state store at --state;
 * --saga is the saga coordinator with its database at --saga-db; both run
 * until SIGTERM or SIGINT (services.h). Without either, the process is the
 * driver: it places the orders through the brokers and waits until the log
 * shows every saga ended. Files not given default to read.db, saga.db and
 * <TYPE>.state.db in ./order_saga_kafka/.
 *
 * The read model (embedded: and the saga database) is recreated when the log
 * is empty when the demo starts (what it holds is left over from another log).
 * When the log already holds events, order ids and SKUs get a suffix of their
 * own. The story is deterministic: a saga that does not end as expected, or an
 * event the projectors park, is a bug and makes the demo exit 1.
 */
#include "domain.h"
#include "fulfilment.h"
#include "services.h"
#include "stay.h"
#include "customer_orders.h"
#include "order_summary.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEMO_DIR "order_saga_demo"   /* the embedded run's files, when no path is given */
#define KAFKA_DIR "order_saga_kafka" /* the Kafka roles' files, when no path is given */
#define MAX_LINES 3
#define N_ORDERS 6
#define N_SKUS 6
#define POLL_MS 50
#define AWAIT_MS 100                      /* Kafka: between looks at the sagas' transitions */
#define SAGA_DEADLINE_US (60 * 1000000LL) /* far beyond the slowest step, even under valgrind */

static const struct sku_spec {
    const char *name;
    uint32_t stock;
} skus[N_SKUS] = {
    {"sku-mug", 10}, {"sku-tee", 5},      {"sku-hoodie", 2},
    {"sku-cap", 3},  {"sku-sticker", 50}, {"sku-jacket", 3},
};
enum { MUG, TEE, HOODIE, CAP, STICKER, JACKET };

struct line {
    int sku; /* index into skus; quantity 0 ends the lines */
    uint32_t quantity;
    int64_t unit_price_cents;
};

struct order_spec {
    const char *customer;
    const char *currency;
    struct line lines[MAX_LINES];
    const char *expect_state;  /* the saga's end state */
    const char *expect_reason; /* a part of its reason ("" when completed) */
    const char *story;
};

static const struct order_spec specs[N_ORDERS] = {
    {"alice", "USD", {{MUG, 2, 1250}, {TEE, 1, 1999}}, "completed", "", "all in stock"},
    {"bob", "USD", {{HOODIE, 2, 4500}}, "completed", "", "takes the last 2 hoodies"},
    {"dave",
     "USD",
     {{HOODIE, 1, 4500}, {STICKER, 3, 199}},
     "aborted",
     "StockShortage",
     "no hoodie left: undone, cancelled"},
    {"broke-carol",
     "USD",
     {{CAP, 1, 1500}},
     "aborted",
     "PaymentDeclined",
     "card declined: undone, cancelled"},
    {"erin",
     "EUR",
     {{JACKET, 1, 64900}},
     "aborted",
     "timed out",
     "3-D Secure never ends: times out"},
    {"frank",
     "USD",
     {{STICKER, 5, 199}, {CAP, 1, 1500}, {MUG, 1, 1250}},
     "completed",
     "",
     "all in stock"},
};

struct demo {
    es_engine_t *engine;
    bool kafka; /* the services and the coordinator are processes of their own */
    /* Appended to order ids and SKUs when the log already holds events, so a second run on
     * the same log neither collides with the first nor finds its stock. */
    char tag[16];
    char ids[N_ORDERS][64];
    char skus[N_SKUS][64];
    /* Each saga's transitions as the log has them, read once it has ended. */
    es_saga_record_t *history[N_ORDERS];
    size_t n_history[N_ORDERS];
};

struct key_probe {
    const char *key;
    bool set;
};

static void note_key(const char *key, const char *value, void *opaque) {
    struct key_probe *p = opaque;
    (void)value;
    if (strcmp(key, p->key) == 0)
        p->set = true;
}

static bool configured(const es_config_t *cfg, const char *key) {
    struct key_probe p = {key, false};
    es_config_foreach(cfg, note_key, &p);
    return p.set;
}

static void remove_db(const char *path) {
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    char name[512];
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        snprintf(name, sizeof name, "%s%s", path, suffixes[i]);
        remove(name);
    }
}

/* Sets key: arg, else the configured value, else "<base><suffix>". */
static es_err choose_path(es_config_t *cfg, const char *key, const char *arg, const char *base,
                          const char *suffix, es_error_t *err) {
    if (arg)
        return es_config_set(cfg, key, arg, err);
    if (configured(cfg, key))
        return ES_OK;
    char path[4096];
    int n = snprintf(path, sizeof path, "%s%s", base, suffix);
    if (n < 0 || (size_t)n >= sizeof path)
        return es_fail(err, ES_EINVAL, "the path %s%s is too long; set %s", base, suffix, key);
    return es_config_set(cfg, key, path, err);
}

/* Sets key to value unless the config sources did. */
static es_err default_to(es_config_t *cfg, const char *key, const char *value, es_error_t *err) {
    return configured(cfg, key) ? ES_OK : es_config_set(cfg, key, value, err);
}

struct args {
    const char *db, *readmodel, *saga_db;
    const char *brokers, *serve, *state; /* Kafka */
    const char *metrics;                 /* metrics.listen */
    bool saga, stay;
};

/* The directory a run's files go to when none is given; made when missing. */
static es_err make_dir(const char *dir, es_error_t *err) {
    struct stat st;
    if (mkdir(dir, 0755) == 0 || (errno == EEXIST && stat(dir, &st) == 0 && S_ISDIR(st.st_mode)))
        return ES_OK;
    return es_fail(err, ES_EIO, "cannot use ./%s for the demo's files: %s; give --db FILE", dir,
                   errno == EEXIST ? "it is not a directory" : strerror(errno));
}

static es_err embedded_config(es_config_t *cfg, const struct args *a, es_error_t *err) {
    bool owned = !a->db && !configured(cfg, "db"); /* then the demo recreates it */
    es_err rc = ES_OK;
    if (a->db)
        rc = es_config_set(cfg, "db", a->db, err);
    if (rc == ES_OK && owned && (rc = make_dir(DEMO_DIR, err)) == ES_OK) {
        remove_db(DEMO_DIR "/events.db");
        rc = es_config_set(cfg, "db", DEMO_DIR "/events.db", err);
    }
    /* Beside the demo's own database in its directory, else named after the given one. */
    const char *base = owned ? DEMO_DIR "/" : es_config_get(cfg, "db");
    const char *dot = owned ? "" : ".";
    char read_suffix[16], saga_suffix[16];
    snprintf(read_suffix, sizeof read_suffix, "%sread.db", dot);
    snprintf(saga_suffix, sizeof saga_suffix, "%ssaga.db", dot);
    if (rc == ES_OK)
        rc = choose_path(cfg, "readmodel.db", a->readmodel, base, read_suffix, err);
    if (rc == ES_OK)
        rc = choose_path(cfg, "saga.db", a->saga_db, base, saga_suffix, err);
    return rc;
}

/* Each role is a service of its own: its own consumer groups ("<service>.commands" of a
 * processor), named after its domain, and its own files. */
static es_err kafka_config(es_config_t *cfg, const struct args *a, es_error_t *err) {
    char service[64] = "storefront", suffix[128];
    if (a->serve)
        snprintf(service, sizeof service, "%.*s", (int)strcspn(a->serve, "."), a->serve);
    else if (a->saga)
        snprintf(service, sizeof service, "fulfilment");
    snprintf(suffix, sizeof suffix, "%.100s.state.db", a->serve ? a->serve : "");
    if (a->db)
        return es_fail(err, ES_EINVAL,
                       "--db names an embedded log, but with brokers the log is on Kafka");
    es_err rc = default_to(cfg, "service.name", service, err);
    /* Short sessions: the dev broker waits a session timeout less 1 s for the members of a
     * rebalance (a service restarted). Longer than the 3 s it makes the first member of an
     * empty group wait, though: it expires a member whose session runs out meanwhile, and that
     * member is stuck for max.poll.interval.ms (see tests/support/testutil.h). */
    if (rc == ES_OK)
        rc = default_to(cfg, "kafka.session.timeout.ms", "4000", err);
    if (rc == ES_OK)
        rc = default_to(cfg, "kafka.heartbeat.interval.ms", "500", err);
    /* Every topic is first used while the story runs, and a librdkafka producer looks up a
     * topic it has not used before only on its next metadata refresh (or its 1 s topic scan):
     * a second or two per topic and hop. Refreshing often makes that a few milliseconds. */
    if (rc == ES_OK)
        rc = default_to(cfg, "kafka.topic.metadata.refresh.interval.ms", "100", err);
    bool defaults = !(a->readmodel || configured(cfg, "readmodel.db")) ||
                    !(a->saga_db || configured(cfg, "saga.db")) ||
                    !(a->state || configured(cfg, "state.db"));
    if (rc == ES_OK && defaults)
        rc = make_dir(KAFKA_DIR, err);
    if (rc == ES_OK)
        rc = choose_path(cfg, "readmodel.db", a->readmodel, KAFKA_DIR "/", "read.db", err);
    if (rc == ES_OK)
        rc = choose_path(cfg, "saga.db", a->saga_db, KAFKA_DIR "/", "saga.db", err);
    if (rc == ES_OK)
        rc = choose_path(cfg, "state.db", a->state, KAFKA_DIR "/", suffix, err);
    return rc;
}

/* Builds the config: the config sources, then the command line, then the demo's defaults. */
static es_err load_config(const struct args *a, es_config_t **out, es_error_t *err) {
    es_config_t *cfg = es_config_new();
    if (!cfg)
        return es_fail(err, ES_ENOMEM, "out of memory");
    es_err rc = es_config_load_sources(cfg, err);
    if (rc == ES_OK && a->brokers)
        rc = es_config_set(cfg, "brokers", a->brokers, err);
    if (rc == ES_OK && a->metrics)
        rc = es_config_set(cfg, "metrics.listen", a->metrics, err);
    bool kafka = rc == ES_OK && strcmp(es_config_get(cfg, "backend"), "kafka") == 0;
    if (rc == ES_OK && !kafka && (a->serve || a->saga))
        rc = es_fail(err, ES_EINVAL,
                     "--serve and --saga run a service of the Kafka variant; give --brokers");
    if (rc == ES_OK)
        rc = kafka ? kafka_config(cfg, a, err) : embedded_config(cfg, a, err);
    if (rc == ES_OK && kafka)
        es_config_set_log_cb(cfg, demo_log_line, NULL);
    if (rc != ES_OK) {
        es_config_destroy(cfg);
        return rc;
    }
    *out = cfg;
    return ES_OK;
}

static int note_event(const es_event_t *ev, void *opaque) {
    (void)ev;
    *(bool *)opaque = true;
    return 0;
}

static es_err log_is_empty(struct demo *dm, bool *empty, es_error_t *err) {
    bool any = false;
    es_err rc =
        es_store_read_log(es_engine_store(dm->engine), NULL, 0, 1, note_event, &any, NULL, err);
    *empty = !any;
    return rc;
}

/* A read model or saga database only describes the log it was built from: when the log is
 * empty (new or recreated), what those paths hold is left over from another log and goes.
 * On Kafka the saga database is the coordinator's, not this process's. */
static void drop_stale_derived(const struct demo *dm, const es_config_t *cfg) {
    remove_db(es_config_get(cfg, "readmodel.db"));
    if (!dm->kafka)
        remove_db(es_config_get(cfg, "saga.db"));
}

static void make_ids(struct demo *dm, bool fresh) {
    char uuid[ES_UUID_STR_LEN + 1];
    dm->tag[0] = '\0';
    if (!fresh) {
        es_uuid7(uuid);
        snprintf(dm->tag, sizeof dm->tag, "-%.8s", uuid + ES_UUID_STR_LEN - 8);
    }
    for (int i = 0; i < N_ORDERS; i++)
        snprintf(dm->ids[i], sizeof dm->ids[i], "order-%d%s", i + 1, dm->tag);
    for (int i = 0; i < N_SKUS; i++)
        snprintf(dm->skus[i], sizeof dm->skus[i], "%s%s", skus[i].name, dm->tag);
}

/* Commands the demo sends itself (the saga sends the rest); any outcome but accepted is a bug. */
static es_err execute(struct demo *dm, const char *type, const char *id,
                      const ProtobufCMessage *msg, es_error_t *err) {
    es_command_t cmd = {.aggregate_type = type, .aggregate_id = id, .message = msg};
    es_result_t res = {0};
    es_err rc = es_execute(dm->engine, &cmd, &res, err);
    if (rc == ES_EREJECTED)
        es_fail(err, rc, "%s %s/%s was rejected: %s", msg->descriptor->short_name, type, id,
                res.reason ? res.reason : "(no reason)");
    es_result_clear(&res);
    return rc;
}

static es_err restock_all(struct demo *dm, es_error_t *err) {
    printf("stock:");
    for (int i = 0; i < N_SKUS; i++) {
        Inventory__V1__Restock r = INVENTORY__V1__RESTOCK__INIT;
        r.quantity = skus[i].stock;
        es_err rc = execute(dm, "inventory.item", dm->skus[i], &r.base, err);
        if (rc != ES_OK)
            return rc;
        printf("%s %s %u", i ? "," : "", dm->skus[i], skus[i].stock);
    }
    printf("\n");
    return ES_OK;
}

static void format_amount(int64_t cents, const char *currency, char *buf, size_t len) {
    snprintf(buf, len, "%lld.%02lld %s", (long long)(cents / 100), (long long)(cents % 100),
             currency);
}

static es_err place(struct demo *dm, int i, es_error_t *err) {
    const struct order_spec *spec = &specs[i];
    Orders__V1__LineItem items[MAX_LINES];
    Orders__V1__LineItem *ptrs[MAX_LINES];
    Orders__V1__PlaceOrder cmd = ORDERS__V1__PLACE_ORDER__INIT;
    char lines[160] = "";
    int64_t total = 0;
    size_t n = 0;
    for (; n < MAX_LINES && spec->lines[n].quantity; n++) {
        const struct line *l = &spec->lines[n];
        orders__v1__line_item__init(&items[n]);
        items[n].sku = dm->skus[l->sku];
        items[n].quantity = l->quantity;
        items[n].unit_price_cents = l->unit_price_cents;
        ptrs[n] = &items[n];
        total += l->unit_price_cents * l->quantity;
        size_t used = strlen(lines);
        snprintf(lines + used, sizeof lines - used, "%s%u %s", n ? ", " : "", l->quantity,
                 skus[l->sku].name + strlen("sku-"));
    }
    cmd.customer_id = (char *)spec->customer;
    cmd.currency = (char *)spec->currency;
    cmd.n_items = n;
    cmd.items = ptrs;
    char amount[32];
    format_amount(total, spec->currency, amount, sizeof amount);
    printf("  %-*s %-11s %11s  %-24s %s\n", (int)strlen(dm->ids[0]) + 1, dm->ids[i], spec->customer,
           amount, lines, spec->story);
    return execute(dm, "orders.order", dm->ids[i], &cmd.base, err);
}

static es_err place_all(struct demo *dm, es_error_t *err) {
    printf("\norders placed (and what the saga should make of them):\n");
    for (int i = 0; i < N_ORDERS; i++) {
        es_err rc = place(dm, i, err);
        if (rc != ES_OK)
            return rc;
    }
    return ES_OK;
}

/* Polls until this run's sagas have all started (the saga database may hold earlier runs':
 * before) and none is active, and a last poll found nothing more to do (so every transition
 * is published). */
static es_err run_sagas(es_saga_t *c, const es_saga_stats_t *before, es_error_t *err) {
    int64_t t0 = es_now_us();
    es_saga_stats_t st = *before;
    uint64_t active = 0;
    size_t progress = 1;
    es_err rc = ES_OK;
    while (rc == ES_OK && (progress > 0 || active > 0 || st.started < before->started + N_ORDERS)) {
        if (es_now_us() - t0 > SAGA_DEADLINE_US)
            return es_fail(err, ES_ETIMEOUT, "after %lld s, %llu of %d sagas started, %llu active",
                           SAGA_DEADLINE_US / 1000000,
                           (unsigned long long)(st.started - before->started), N_ORDERS,
                           (unsigned long long)active);
        rc = es_saga_poll(c, POLL_MS, &progress, err);
        if (rc == ES_OK)
            rc = es_saga_active(c, &active, err);
        es_saga_stats(c, &st);
    }
    return rc;
}

static bool terminal(const char *state) {
    return strcmp(state, "completed") == 0 || strcmp(state, "aborted") == 0 ||
           strcmp(state, "failed") == 0;
}

/* Whether saga i's last transition (the log has none after it) left it in a terminal state. */
static bool has_ended(const struct demo *dm, int i) {
    size_t n = dm->n_history[i];
    return n > 0 && terminal(dm->history[i][n - 1].state);
}

/* Reads the transitions of the sagas not known to have ended; *started and *ended count the
 * sagas the log has transitions of, and those that ended. */
static es_err read_histories(struct demo *dm, const es_config_t *cfg, int *started, int *ended,
                             es_error_t *err) {
    *started = *ended = 0;
    for (int i = 0; i < N_ORDERS; i++) {
        if (!has_ended(dm, i)) {
            free(dm->history[i]);
            dm->history[i] = NULL;
            dm->n_history[i] = 0;
            es_err rc = es_saga_history(cfg, DEMO_FULFILMENT_SAGA, dm->ids[i], &dm->history[i],
                                        &dm->n_history[i], err);
            if (rc == ES_ENOTFOUND)
                continue; /* not started yet */
            if (rc != ES_OK)
                return rc;
        }
        (*started)++;
        *ended += has_ended(dm, i);
    }
    return ES_OK;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Kafka: the coordinator is a process of its own; its transitions in the log say when every
 * saga of this run has ended. */
static es_err await_sagas(struct demo *dm, const es_config_t *cfg, es_error_t *err) {
    int64_t t0 = es_now_us();
    int started = 0, ended = 0;
    es_err rc;
    while ((rc = read_histories(dm, cfg, &started, &ended, err)) == ES_OK && ended < N_ORDERS) {
        if (es_now_us() - t0 > SAGA_DEADLINE_US)
            return es_fail(err, ES_ETIMEOUT,
                           "after %lld s, %d of %d sagas started and %d ended; is the saga "
                           "coordinator running (order_saga --brokers ADDR --saga)?",
                           SAGA_DEADLINE_US / 1000000, started, N_ORDERS, ended);
        sleep_ms(AWAIT_MS);
    }
    return rc;
}

/* What the transitions add up to, on either backend: the span from the first to the last,
 * the sagas' ends, the commands sent and the steps that timed out. */
static void print_summary(const struct demo *dm) {
    unsigned long long completed = 0, aborted = 0, failed = 0, sent = 0, timeouts = 0;
    int64_t first = INT64_MAX, last = 0;
    for (int i = 0; i < N_ORDERS; i++) {
        const es_saga_record_t *h = dm->history[i];
        size_t n = dm->n_history[i];
        for (size_t k = 0; k < n; k++) {
            sent += strstr(h[k].kind, "_sent") != NULL;
            timeouts += strcmp(h[k].kind, "timed_out") == 0;
            first = h[k].at_us < first ? h[k].at_us : first;
            last = h[k].at_us > last ? h[k].at_us : last;
        }
        const char *end = n ? h[n - 1].state : "";
        completed += strcmp(end, "completed") == 0;
        aborted += strcmp(end, "aborted") == 0;
        failed += strcmp(end, "failed") == 0;
    }
    printf("\nsaga %s ran %.1f s: %llu completed, %llu aborted, %llu failed; %llu commands sent, "
           "%llu step(s) timed out\n",
           DEMO_FULFILMENT_SAGA, last > first ? (double)(last - first) / 1e6 : 0.0, completed,
           aborted, failed, sent, timeouts);
}

/* "inventory.v1.StockReserved" -> "StockReserved" */
static const char *short_type(const char *full) {
    const char *dot = strrchr(full, '.');
    return dot ? dot + 1 : full;
}

/* The type a transition names: the command for a send, else the event, else the command. */
static const char *type_of(const es_saga_record_t *r) {
    if (strstr(r->kind, "_sent") || !r->event_type[0])
        return short_type(r->command_type);
    return short_type(r->event_type);
}

/* Whether b says what a says, about another target (printed on a's line). */
static bool same_line(const es_saga_record_t *a, const es_saga_record_t *b) {
    return a->aggregate_id[0] && b->aggregate_id[0] && strcmp(a->kind, b->kind) == 0 &&
           strcmp(a->step, b->step) == 0 && strcmp(type_of(a), type_of(b)) == 0 &&
           strcmp(a->reason, b->reason) == 0;
}

/* The reason without the "step <name> " it starts with when the step column says that. */
static const char *without_step(const es_saga_record_t *r) {
    size_t n = strlen(r->step);
    if (n && strncmp(r->reason, "step ", 5) == 0 && strncmp(r->reason + 5, r->step, n) == 0 &&
        r->reason[5 + n] == ' ')
        return r->reason + 6 + n;
    return r->reason;
}

/* What r[0] is about: the command sent, the event or outcome received, the reason. Targets
 * of the records after it that say the same are listed too; returns how many records it
 * covered. t0 is when the saga started. */
static size_t describe(const es_saga_record_t *r, size_t n, int64_t t0, char *buf, size_t len) {
    size_t k = 1, used;
    if (strcmp(r->kind, "started") == 0)
        used = (size_t)snprintf(buf, len, "%s on %s", type_of(r), r->aggregate_id);
    else if (strcmp(r->kind, "timed_out") == 0)
        used = (size_t)snprintf(buf, len, "no answer by its deadline (%+lld ms)",
                                (long long)((r->deadline_us - t0) / 1000));
    else if (r->event_type[0] || strstr(r->kind, "_sent"))
        used = (size_t)snprintf(buf, len, "%s %s %s", type_of(r),
                                strstr(r->kind, "_sent") ? "->" : "<-", r->aggregate_id);
    else if (r->command_type[0])
        used = (size_t)snprintf(buf, len, "%s %s", type_of(r),
                                strstr(r->kind, "rejected") ? "rejected" : "accepted");
    else
        used = (size_t)snprintf(buf, len, "%.300s", without_step(r));
    for (; k < n && same_line(r, &r[k]) && used < len; k++)
        used += (size_t)snprintf(buf + used, len - used, ", %s", r[k].aggregate_id);
    if (r->reason[0] && r->command_type[0] && used < len)
        snprintf(buf + used, len - used, ": %.300s", r->reason);
    return k;
}

/* The kinds the trace leaves out: they only repeat what the line before said. */
static bool implied(const es_saga_record_t *r) {
    return strcmp(r->kind, "step_completed") == 0 || strcmp(r->kind, "step_compensated") == 0;
}

static void print_trace(const es_saga_record_t *recs, size_t n) {
    if (n == 0)
        printf("  no transitions in the log\n");
    for (size_t i = 0; i < n;) {
        char what[1024];
        if (implied(&recs[i])) {
            i++;
            continue;
        }
        const es_saga_record_t *r = &recs[i];
        i += describe(r, n - i, recs[0].at_us, what, sizeof what);
        if (what[0])
            printf("  %+6lld ms  %-18s %-18s %s\n", (long long)((r->at_us - recs[0].at_us) / 1000),
                   r->kind, r->step, what);
        else
            printf("  %+6lld ms  %s\n", (long long)((r->at_us - recs[0].at_us) / 1000), r->kind);
    }
}

static void print_traces(const struct demo *dm) {
    for (int i = 0; i < N_ORDERS; i++) {
        printf("\n%s (%s, %s):\n", dm->ids[i], specs[i].customer, specs[i].story);
        print_trace(dm->history[i], dm->n_history[i]);
    }
}

/* Why a saga was undone, as its transitions tell: the first failed step's reason, or the step
 * that timed out (the reason the saga database and the cancelled order give). */
static void undone_because(const es_saga_record_t *r, size_t n, char *why, size_t len) {
    why[0] = '\0';
    for (size_t i = 0; i < n && !why[0]; i++) {
        if (strcmp(r[i].kind, "step_failed") == 0)
            snprintf(why, len, "%s", r[i].reason);
        else if (strcmp(r[i].kind, "timed_out") == 0)
            snprintf(why, len, "step %s timed out", r[i].step);
    }
}

/* Saga i's end, as its transitions tell, against the story; false (and a line on stderr)
 * when they differ. */
static bool check_saga(const struct demo *dm, int i) {
    const es_saga_record_t *h = dm->history[i];
    size_t n = dm->n_history[i];
    const char *state = n ? h[n - 1].state : "not started";
    char why[600];
    undone_because(h, n, why, sizeof why);
    if (strcmp(state, specs[i].expect_state) == 0 && strstr(why, specs[i].expect_reason))
        return true;
    fprintf(stderr, "order_saga: %s: expected %s%s%s, got %s%s%s\n", dm->ids[i],
            specs[i].expect_state, specs[i].expect_reason[0] ? " with a reason mentioning " : "",
            specs[i].expect_reason, state, why[0] ? ": " : "", why);
    return false;
}

static bool check_sagas(const struct demo *dm) {
    bool good = true;
    for (int i = 0; i < N_ORDERS; i++)
        good &= check_saga(dm, i);
    return good;
}

static es_err print_stock_of(struct demo *dm, const char *sku, es_error_t *err) {
    ProtobufCMessage *state = NULL;
    es_err rc = es_engine_load_state(dm->engine, "inventory.item", sku, &state, NULL, err);
    if (rc != ES_OK)
        return rc;
    const Inventory__V1__Item *item = (const Inventory__V1__Item *)state;
    printf("  %-20s %7u %8u %9u", sku, item->on_hand, item->reserved,
           item->on_hand - item->reserved);
    for (size_t i = 0; i < item->n_reservations; i++)
        printf("%s%s %u", i ? ", " : "  ", item->reservations[i]->order_id,
               item->reservations[i]->quantity);
    printf("\n");
    protobuf_c_message_free_unpacked(state, NULL);
    return ES_OK;
}

static es_err print_stock(struct demo *dm, es_error_t *err) {
    printf("\nstock afterwards (es_engine_load_state of each inventory.item):\n");
    printf("  %-20s %7s %8s %9s  %s\n", "sku", "on hand", "reserved", "available", "held by");
    es_err rc = ES_OK;
    for (int i = 0; rc == ES_OK && i < N_SKUS; i++)
        rc = print_stock_of(dm, dm->skus[i], err);
    return rc;
}

static void report_parked(const es_dlq_entry_t *e, void *opaque) {
    (void)opaque;
    fprintf(stderr, "order_saga: %s parked %s partition %d offset %lld (%s/%s): %s\n", e->projector,
            e->topic, (int)e->partition, (long long)e->offset,
            e->event_type[0] ? e->event_type : "undecodable", e->key, e->error);
}

/* Runs def's runner until its read model holds what the log holds now; a parked event fails
 * the demo. The runner is kept in *keep (for --stay: its counters go on from the story's), or
 * destroyed when keep is NULL. */
static es_err catch_up(const es_config_t *cfg, const es_projector_def *def, es_runner_t **keep,
                       es_error_t *err) {
    es_runner_t *r = NULL;
    es_err rc = es_runner_new(cfg, def, &r, err);
    if (rc != ES_OK)
        return rc;
    es_runner_set_park_cb(r, report_parked, NULL);
    rc = es_runner_catch_up(r, (int)(SAGA_DEADLINE_US / 1000), err);
    es_runner_stats_t st;
    es_runner_stats(r, &st);
    if (rc == ES_OK && st.parked > 0)
        rc = es_fail(err, ES_ESTATE, "%s parked %llu event(s); see esctl dlq list", def->name,
                     (unsigned long long)st.parked);
    if (rc == ES_OK)
        printf(" %s +%llu", def->name, (unsigned long long)st.applied);
    if (rc == ES_OK && keep)
        *keep = r;
    else
        es_runner_destroy(r);
    return rc;
}

/* The read models brought up to date; keep (may be NULL) gets the runners, in
 * DEMO_PROJECTORS' order. */
static es_err project(const es_config_t *cfg, es_runner_t **keep, es_error_t *err) {
    printf("\nread model %s, events applied:", es_config_get(cfg, "readmodel.db"));
    es_err rc = ES_OK;
    for (size_t i = 0; rc == ES_OK && i < DEMO_N_PROJECTORS; i++)
        rc = catch_up(cfg, demo_projectors[i], keep ? &keep[i] : NULL, err);
    printf("\n");
    return rc;
}

#define MAX_COLS 8

struct table {
    const char *title;
    const char *sql;
    const char *align; /* 'l' or 'r' per column */
};

/* Pads lazily, so a row ends at its last non-empty cell. */
static void print_row(sqlite3_stmt *s, const struct table *t, const int *width, int ncols,
                      bool header) {
    int pad = 2;
    for (int c = 0; c < ncols; c++) {
        const char *cell =
            header ? sqlite3_column_name(s, c) : (const char *)sqlite3_column_text(s, c);
        if (!cell)
            cell = "";
        int fill = width[c] - (int)strlen(cell);
        bool right = t->align[c] == 'r';
        if (right)
            pad += fill;
        if (*cell) {
            printf("%*s%s", pad, "", cell);
            pad = 0;
        }
        pad += (right ? 0 : fill) + 2;
    }
    putchar('\n');
}

/* Steps s once more to the end, printing each row (print) or widening width to fit it. */
static int table_pass(sqlite3_stmt *s, const struct table *t, int *width, int ncols, bool print) {
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (print) {
            print_row(s, t, width, ncols, false);
            continue;
        }
        for (int c = 0; c < ncols; c++) {
            int n = sqlite3_column_bytes(s, c);
            width[c] = n > width[c] ? n : width[c];
        }
    }
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Prints the rows of t->sql (params bound to ?1..) in columns as wide as their widest cell. */
static int print_table(sqlite3 *db, const struct table *t, const char *const *params,
                       int n_params) {
    sqlite3_stmt *s = NULL;
    int width[MAX_COLS] = {0};
    int rc = sqlite3_prepare_v2(db, t->sql, -1, &s, NULL);
    int ncols = rc == SQLITE_OK ? sqlite3_column_count(s) : 0;
    if (rc == SQLITE_OK && (ncols > MAX_COLS || (size_t)ncols != strlen(t->align)))
        rc = SQLITE_MISUSE;
    for (int i = 0; rc == SQLITE_OK && i < n_params; i++)
        rc = sqlite3_bind_text(s, i + 1, params[i], -1, SQLITE_STATIC);
    for (int c = 0; rc == SQLITE_OK && c < ncols; c++)
        width[c] = (int)strlen(sqlite3_column_name(s, c));
    if (rc == SQLITE_OK)
        rc = table_pass(s, t, width, ncols, false);
    if (rc == SQLITE_OK) {
        printf("\n%s:\n", t->title);
        print_row(s, t, width, ncols, true);
        rc = table_pass(s, t, width, ncols, true);
    }
    sqlite3_finalize(s);
    return rc;
}

static const struct table order_table = {
    "order_summary (this run's orders)",
    "SELECT order_id AS \"order\", status, customer_id AS customer, "
    "printf('%d.%02d %s', amount_cents / 100, amount_cents % 100, currency) AS amount, "
    "coalesce(cancel_reason, '') AS \"cancel reason\" "
    "FROM order_summary WHERE order_id IN (?1, ?2, ?3, ?4, ?5, ?6) ORDER BY order_id",
    "lllrl",
};
_Static_assert(N_ORDERS == 6, "order_table binds one parameter per order");

static es_err print_read_model(const struct demo *dm, const es_config_t *cfg, es_error_t *err) {
    const char *path = es_config_get(cfg, "readmodel.db");
    const char *ids[N_ORDERS];
    sqlite3 *db = NULL;
    for (int i = 0; i < N_ORDERS; i++)
        ids[i] = dm->ids[i];
    /* Read-write (never created here) so that closing the last connection tidies the WAL away. */
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK)
        rc = print_table(db, &order_table, ids, N_ORDERS);
    es_err e = ES_OK;
    if (rc != SQLITE_OK)
        e = es_fail(err, ES_EIO, "%s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close(db);
    return e;
}

/* esctl as the operator would type it: the build's copy when this demo runs from the build
 * tree (shown relative to the current directory when it is inside it), else the installed one. */
static void esctl_command(char *out, size_t cap) {
    char exe[PATH_MAX], cwd[PATH_MAX], path[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char *slash = n > 0 ? (exe[n] = '\0', strrchr(exe, '/')) : NULL;
    if (slash)
        *slash = '\0';
    snprintf(out, cap, "esctl");
    if (!slash || snprintf(path, sizeof path, "%s/../../tools/esctl/esctl", exe) <= 0 ||
        !realpath(path, exe) || access(exe, X_OK) != 0)
        return;
    size_t cl = getcwd(cwd, sizeof cwd) ? strlen(cwd) : 0;
    bool inside = cl && !strncmp(exe, cwd, cl) && exe[cl] == '/';
    snprintf(out, cap, "%s", inside ? exe + cl + 1 : exe);
}

/* The commands that inspect what this run left: its log, read model, dead letters, sagas. */
static void print_inspect(const struct demo *dm, const es_config_t *cfg) {
    char esctl[PATH_MAX + 8], log[PATH_MAX + 16];
    esctl_command(esctl, sizeof esctl);
    const char *rm = es_config_get(cfg, "readmodel.db"), *saga = es_config_get(cfg, "saga.db");
    if (dm->kafka)
        snprintf(log, sizeof log, "--brokers %s", es_config_get(cfg, "brokers"));
    else
        snprintf(log, sizeof log, "--db %s", es_config_get(cfg, "db"));
    printf("\ninspect what this run left:\n");
    /* The domain's types are this demo's types module, not esctl's (order_saga_types.so). */
    printf("  %s %s events orders.order %s --types order_saga_types\n", esctl, log, dm->ids[0]);
    printf("  %s %s state orders.order %s --types order_saga_types\n", esctl, log, dm->ids[0]);
    printf("  %s %s --readmodel %s lag\n", esctl, log, rm);
    printf("  %s --readmodel %s dlq list\n", esctl, rm);
    if (!dm->kafka) {
        printf("  %s --saga-db %s sagas list\n", esctl, saga);
        printf("  %s %s --saga-db %s sagas show %s\n", esctl, log, saga, dm->ids[4]);
    }
}

/* The story up to the point where every saga has ended, and their transitions as the log has
 * them. Embedded, the coordinator runs in this process; on Kafka it is a process of its own. */
static es_err play(struct demo *dm, const es_config_t *cfg, es_error_t *err) {
    es_saga_t *c = NULL;
    es_saga_stats_t before = {0};
    es_err rc = ES_OK;
    if (!dm->kafka)
        rc = es_saga_new(cfg, DEMO_FULFILMENT_DEF(true), dm->engine, &c, err);
    if (rc == ES_OK && c)
        es_saga_stats(c, &before);
    if (rc == ES_OK)
        rc = restock_all(dm, err);
    if (rc == ES_OK)
        rc = place_all(dm, err);
    if (rc == ES_OK)
        rc = c ? run_sagas(c, &before, err) : await_sagas(dm, cfg, err);
    es_saga_destroy(c);
    int started = 0, ended = 0;
    if (rc == ES_OK)
        rc = read_histories(dm, cfg, &started, &ended, err);
    return rc;
}

static int usage(void) {
    fprintf(stderr, "usage: order_saga [--db FILE] [--readmodel FILE] [--saga-db FILE] [--stay]\n"
                    "       order_saga --brokers ADDR [--readmodel FILE] [--stay]\n"
                    "       order_saga --brokers ADDR --serve TYPE [--state FILE]\n"
                    "       order_saga --brokers ADDR --saga [--saga-db FILE]\n"
                    "every form also takes --metrics HOST:PORT (serves /metrics and /healthz)\n");
    return 2;
}

static int die(const char *what, const es_error_t *err) {
    fprintf(stderr, "order_saga: %s: %s\n", what, err->message);
    return 1;
}

static int run(struct demo *dm, const es_config_t *cfg, bool stay) {
    es_error_t err = {0};
    bool empty = false;
    if (demo_register_all(dm->engine, &err) != ES_OK)
        return die("registering the demo domain", &err);
    if (log_is_empty(dm, &empty, &err) != ES_OK)
        return die("reading the log", &err);
    if (empty)
        drop_stale_derived(dm, cfg);
    make_ids(dm, empty);
    if (dm->kafka)
        printf("order_saga: log on the Kafka brokers %s; the command processors and the saga "
               "coordinator run in processes of their own\n",
               es_config_get(cfg, "brokers"));
    else
        printf("order_saga: log %s, saga database %s\n", es_config_get(cfg, "db"),
               es_config_get(cfg, "saga.db"));
    if (play(dm, cfg, &err) != ES_OK)
        return die("running the sagas", &err);
    print_summary(dm);
    print_traces(dm);
    if (print_stock(dm, &err) != ES_OK)
        return die("reading the stock", &err);
    es_runner_t *runners[DEMO_N_PROJECTORS] = {0};
    if (project(cfg, stay ? runners : NULL, &err) != ES_OK) {
        for (size_t i = 0; i < DEMO_N_PROJECTORS; i++)
            es_runner_destroy(runners[i]);
        return die("projecting the read models", &err);
    }
    int status = 0;
    if (print_read_model(dm, cfg, &err) != ES_OK)
        status = die("reading the read model", &err);
    else if (!check_sagas(dm)) {
        fprintf(stderr, "order_saga: some sagas did not end as the story says\n");
        status = 1;
    } else {
        printf("\nevery saga ended as expected\n");
        print_inspect(dm, cfg);
        if (stay)
            return demo_stay(cfg, dm->engine, dm->kafka, runners);
    }
    for (size_t i = 0; i < DEMO_N_PROJECTORS; i++)
        es_runner_destroy(runners[i]);
    return status;
}

/* Returns 0 when the command line is complete, else the usage exit status. */
static int parse_args(struct args *a, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char **value = strcmp(argv[i], "--db") == 0          ? &a->db
                             : strcmp(argv[i], "--readmodel") == 0 ? &a->readmodel
                             : strcmp(argv[i], "--saga-db") == 0   ? &a->saga_db
                             : strcmp(argv[i], "--brokers") == 0   ? &a->brokers
                             : strcmp(argv[i], "--serve") == 0     ? &a->serve
                             : strcmp(argv[i], "--state") == 0     ? &a->state
                             : strcmp(argv[i], "--metrics") == 0   ? &a->metrics
                                                                   : NULL;
        if (strcmp(argv[i], "--saga") == 0)
            a->saga = true;
        else if (strcmp(argv[i], "--stay") == 0)
            a->stay = true;
        else if (value && i + 1 < argc)
            *value = argv[++i];
        else
            return usage();
    }
    bool roles_mixed = (a->serve && a->saga) || (a->state && !a->serve) ||
                       ((a->serve || a->saga) && (a->readmodel || a->stay));
    return roles_mixed ? usage() : 0;
}

int main(int argc, char **argv) {
    struct args a = {0};
    int status = parse_args(&a, argc, argv);
    if (status != 0)
        return status;
    es_error_t err = {0};
    es_config_t *cfg = NULL;
    if (load_config(&a, &cfg, &err) != ES_OK)
        return die("configuration", &err);
    if (a.serve || a.saga) {
        status = a.serve ? demo_serve(cfg, a.serve) : demo_coordinate(cfg);
        es_config_destroy(cfg);
        return status;
    }
    struct demo dm = {.kafka = strcmp(es_config_get(cfg, "backend"), "kafka") == 0};
    if (es_engine_new(cfg, &dm.engine, &err) != ES_OK) {
        es_config_destroy(cfg);
        return die("opening the store", &err);
    }
    status = run(&dm, cfg, a.stay);
    for (int i = 0; i < N_ORDERS; i++)
        free(dm.history[i]);
    es_engine_destroy(dm.engine);
    es_config_destroy(cfg);
    return status;
}
