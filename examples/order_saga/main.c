/*
 * order_saga: the demo service. For now it drives the Order aggregate by hand
 * (place, confirm, cancel, a few rejected commands), prints every order's
 * stream, then brings the order_summary and customer_orders read models up to
 * date and prints them; the saga coordinator will take over the
 * confirm/cancel decisions.
 *
 * usage: order_saga [--db FILE] [--readmodel FILE]
 * The database comes from --db, else the usual config sources (ESKIT_DB,
 * eskit.conf), else ./order_saga_demo.db, which is recreated on every run.
 * The read model comes from --readmodel, else readmodel.db of the config
 * sources, else the database's path with ".read.db" appended. A read model
 * left over from a log that no longer exists (the log is empty when the demo
 * starts) is recreated. The story is deterministic: an outcome other than the
 * expected one, or an event the projectors park, is a bug and makes the demo
 * exit 1.
 */
#include "domain.h"
#include "customer_orders.h"
#include "order_summary.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define DEFAULT_DB "order_saga_demo.db"
#define MAX_LINES 3
#define N_ORDERS 6

struct line {
    const char *sku;
    uint32_t quantity;
    int64_t unit_price_cents;
};

struct order_spec {
    const char *customer;
    struct line lines[MAX_LINES];
};

struct demo {
    es_engine_t *engine;
    /* Appended to order ids when the database was not created by this run,
     * so a second run on the same file does not collide with the first. */
    char tag[16];
    char ids[N_ORDERS][64];
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

/* Sets readmodel.db: readmodel_arg, else the configured one, else "<db>.read.db". */
static es_err choose_readmodel(es_config_t *cfg, const char *readmodel_arg, es_error_t *err) {
    if (readmodel_arg)
        return es_config_set(cfg, "readmodel.db", readmodel_arg, err);
    if (configured(cfg, "readmodel.db"))
        return ES_OK;
    char path[4096];
    int n = snprintf(path, sizeof path, "%s.read.db", es_config_get(cfg, "db"));
    if (n < 0 || (size_t)n >= sizeof path) {
        snprintf(err->message, sizeof err->message,
                 "the database path is too long to derive the read model's; give --readmodel");
        return ES_EINVAL;
    }
    return es_config_set(cfg, "readmodel.db", path, err);
}

/* Builds the config; *fresh says whether the demo owns (and recreated) the db. */
static es_err load_config(const char *db_arg, const char *readmodel_arg, es_config_t **out,
                          bool *fresh, es_error_t *err) {
    es_config_t *cfg = es_config_new();
    if (!cfg) {
        snprintf(err->message, sizeof err->message, "out of memory");
        return ES_ENOMEM;
    }
    es_err rc = es_config_load_sources(cfg, err);
    *fresh = rc == ES_OK && !db_arg && !configured(cfg, "db");
    if (rc == ES_OK && db_arg)
        rc = es_config_set(cfg, "db", db_arg, err);
    if (rc == ES_OK && *fresh) {
        remove_db(DEFAULT_DB);
        rc = es_config_set(cfg, "db", DEFAULT_DB, err);
    }
    if (rc == ES_OK)
        rc = choose_readmodel(cfg, readmodel_arg, err);
    if (rc != ES_OK) {
        es_config_destroy(cfg);
        return rc;
    }
    *out = cfg;
    return ES_OK;
}

static const char *outcome_name(es_outcome o) {
    switch (o) {
    case ES_OUTCOME_ACCEPTED:
        return "accepted";
    case ES_OUTCOME_REJECTED:
        return "rejected";
    case ES_OUTCOME_CONFLICT:
        return "conflict";
    default:
        return "error";
    }
}

/* Executes one command on an order and prints the outcome; false when it was
 * not the outcome the story expects. */
static bool run(struct demo *dm, const char *verb, const char *id, const ProtobufCMessage *msg,
                es_outcome want) {
    es_command_t cmd = {.aggregate_type = "orders.order", .aggregate_id = id, .message = msg};
    es_result_t res = {0};
    es_error_t err = {0};
    es_err rc = es_execute(dm->engine, &cmd, &res, &err);
    es_outcome got = rc == ES_OK          ? ES_OUTCOME_ACCEPTED
                     : rc == ES_EREJECTED ? ES_OUTCOME_REJECTED
                     : rc == ES_ECONFLICT ? ES_OUTCOME_CONFLICT
                                          : ES_OUTCOME_ERROR;
    if (got == ES_OUTCOME_ACCEPTED)
        printf("%-8s %-20s accepted, version %llu\n", verb, id, (unsigned long long)res.version);
    else if (got == ES_OUTCOME_REJECTED)
        printf("%-8s %-20s rejected: %s\n", verb, id, res.reason ? res.reason : err.message);
    if (got != want)
        fprintf(stderr, "order_saga: %s %s: expected %s, got %s (%s): %s\n", verb, id,
                outcome_name(want), outcome_name(got), es_strerror(rc),
                res.reason ? res.reason : err.message);
    es_result_clear(&res);
    return got == want;
}

static bool place(struct demo *dm, const char *id, const struct order_spec *spec, es_outcome want) {
    Orders__V1__LineItem items[MAX_LINES];
    Orders__V1__LineItem *ptrs[MAX_LINES];
    Orders__V1__PlaceOrder cmd = ORDERS__V1__PLACE_ORDER__INIT;
    size_t n = 0;
    for (; n < MAX_LINES && spec->lines[n].sku; n++) {
        orders__v1__line_item__init(&items[n]);
        items[n].sku = (char *)spec->lines[n].sku;
        items[n].quantity = spec->lines[n].quantity;
        items[n].unit_price_cents = spec->lines[n].unit_price_cents;
        ptrs[n] = &items[n];
    }
    cmd.customer_id = (char *)spec->customer;
    cmd.currency = "USD";
    cmd.n_items = n;
    cmd.items = ptrs;
    return run(dm, "place", id, &cmd.base, want);
}

static bool confirm(struct demo *dm, const char *id, es_outcome want) {
    Orders__V1__ConfirmOrder cmd = ORDERS__V1__CONFIRM_ORDER__INIT;
    return run(dm, "confirm", id, &cmd.base, want);
}

static bool cancel(struct demo *dm, const char *id, const char *reason, es_outcome want) {
    Orders__V1__CancelOrder cmd = ORDERS__V1__CANCEL_ORDER__INIT;
    cmd.reason = (char *)reason;
    return run(dm, "cancel", id, &cmd.base, want);
}

static const struct order_spec specs[N_ORDERS] = {
    {"alice", {{"sku-mug", 2, 1250}, {"sku-tee", 1, 1999}}},
    {"bob", {{"sku-hoodie", 1, 4500}}},
    {"carol", {{"sku-sticker", 3, 199}}},
    {"dave", {{"sku-mug", 1, 1250}}},
    {"erin", {{"sku-tee", 2, 1999}, {"sku-cap", 1, 1500}}},
    {"frank", {{0}}}, /* no items: rejected */
};

static bool play_story(struct demo *dm) {
    const es_outcome ok = ES_OUTCOME_ACCEPTED, no = ES_OUTCOME_REJECTED;
    bool good = true;
    for (int i = 0; i < N_ORDERS; i++)
        good &= place(dm, dm->ids[i], &specs[i], i == 5 ? no : ok);
    good &= confirm(dm, dm->ids[0], ok);
    good &= confirm(dm, dm->ids[2], ok);
    good &= cancel(dm, dm->ids[1], "customer changed their mind", ok);
    good &= cancel(dm, dm->ids[3], "out of stock", ok);
    good &= confirm(dm, dm->ids[3], no);
    good &= cancel(dm, dm->ids[1], "asked twice", no);
    good &= confirm(dm, dm->ids[5], no);
    return good;
}

static void format_time(int64_t us, char *buf, size_t len) {
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    char day[32];
    gmtime_r(&secs, &tm);
    strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%s.%03dZ", day, (int)(us % 1000000 / 1000));
}

static const ProtobufCMessageDescriptor *find_descriptor(const char *full_name) {
    for (const ProtobufCMessageDescriptor *const *d = demo_descriptors(); *d; d++)
        if (strcmp((*d)->name, full_name) == 0)
            return *d;
    return NULL;
}

static void summarize_message(const ProtobufCMessage *m, char *buf, size_t len) {
    if (m->descriptor == &orders__v1__order_placed__descriptor) {
        const Orders__V1__OrderPlaced *p = (const Orders__V1__OrderPlaced *)m;
        snprintf(buf, len, "customer %s, %zu line(s), %lld.%02lld %s", p->customer_id, p->n_items,
                 (long long)(p->amount_cents / 100), (long long)(p->amount_cents % 100),
                 p->currency);
    } else if (m->descriptor == &orders__v1__order_cancelled__descriptor) {
        snprintf(buf, len, "reason: %s", ((const Orders__V1__OrderCancelled *)m)->reason);
    } else {
        buf[0] = '\0';
    }
}

/* One line about an event's payload; undecodable bytes are reported, not fatal. */
static void summarize(const es_event_t *ev, char *buf, size_t len) {
    const ProtobufCMessageDescriptor *d = find_descriptor(ev->event_type);
    ProtobufCMessage *m =
        d ? protobuf_c_message_unpack(d, NULL, ev->payload_len, ev->payload) : NULL;
    if (!m) {
        snprintf(buf, len, "(%zu bytes, not decodable)", ev->payload_len);
        return;
    }
    summarize_message(m, buf, len);
    protobuf_c_message_free_unpacked(m, NULL);
}

static int print_event(const es_event_t *ev, void *opaque) {
    char when[48], summary[256];
    format_time(ev->occurred_at_us, when, sizeof when);
    summarize(ev, summary, sizeof summary);
    printf("  v%llu  %-24s %s%s%s\n", (unsigned long long)ev->version, ev->event_type, when,
           summary[0] ? "  " : "", summary);
    ++*(int *)opaque;
    return 0;
}

static es_err print_streams(struct demo *dm, es_error_t *err) {
    es_store_t *store = es_engine_store(dm->engine);
    printf("\nstreams:\n");
    for (int i = 0; i < N_ORDERS; i++) {
        int n = 0;
        printf("orders.order/%s\n", dm->ids[i]);
        es_err rc =
            es_store_read_stream(store, "orders.order", dm->ids[i], 1, print_event, &n, err);
        if (rc != ES_OK)
            return rc;
        if (n == 0)
            printf("  (no events: every command was rejected)\n");
    }
    return ES_OK;
}

static int note_event(const es_event_t *ev, void *opaque) {
    (void)ev;
    *(bool *)opaque = true;
    return 0;
}

/* A read model only describes the log it was built from: when the log is empty (new or
 * recreated), what the read-model path holds is left over from another log and goes. */
static es_err drop_stale_read_model(struct demo *dm, const es_config_t *cfg, es_error_t *err) {
    bool any = false;
    es_err rc =
        es_store_read_log(es_engine_store(dm->engine), NULL, 0, 1, note_event, &any, NULL, err);
    if (rc == ES_OK && !any)
        remove_db(es_config_get(cfg, "readmodel.db"));
    return rc;
}

static void report_parked(const es_dlq_entry_t *e, void *opaque) {
    (void)opaque;
    fprintf(stderr, "order_saga: %s parked %s partition %d offset %lld (%s/%s): %s\n", e->projector,
            e->topic, (int)e->partition, (long long)e->offset,
            e->event_type[0] ? e->event_type : "undecodable", e->key, e->error);
}

/* Runs def's runner until a poll applies nothing; a parked event fails the demo. */
static es_err catch_up(const es_config_t *cfg, const es_projector_def *def, es_error_t *err) {
    es_runner_t *r = NULL;
    es_err rc = es_runner_new(cfg, def, &r, err);
    if (rc != ES_OK)
        return rc;
    es_runner_set_park_cb(r, report_parked, NULL);
    size_t applied = 0;
    do
        rc = es_runner_poll(r, 0, &applied, err);
    while (rc == ES_OK && applied > 0);
    es_runner_stats_t st;
    es_runner_stats(r, &st);
    if (rc == ES_OK && st.parked > 0) {
        snprintf(err->message, sizeof err->message, "%s parked %llu event(s); see esctl dlq list",
                 def->name, (unsigned long long)st.parked);
        rc = ES_ESTATE;
    }
    if (rc == ES_OK)
        printf("%-16s caught up: %llu event(s) applied in %llu batch(es)\n", def->name,
               (unsigned long long)st.applied, (unsigned long long)st.batches);
    es_runner_destroy(r);
    return rc;
}

static es_err project(const es_config_t *cfg, es_error_t *err) {
    static const es_projector_def *const defs[] = {&es_order_summary_projector,
                                                   &es_customer_orders_projector};
    printf("\nprojectors (read model %s):\n", es_config_get(cfg, "readmodel.db"));
    es_err rc = ES_OK;
    for (size_t i = 0; rc == ES_OK && i < sizeof defs / sizeof defs[0]; i++)
        rc = catch_up(cfg, defs[i], err);
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
    int pad = 0;
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
    "SELECT order_id AS \"order\", status, customer_id AS customer, item_count AS items, "
    "printf('%d.%02d %s', amount_cents / 100, amount_cents % 100, currency) AS amount, "
    "version, coalesce(cancel_reason, '') AS \"cancel reason\" "
    "FROM order_summary WHERE order_id IN (?1, ?2, ?3, ?4, ?5, ?6) ORDER BY order_id",
    "lllrrrl",
};
_Static_assert(N_ORDERS == 6, "order_table binds one parameter per order");

static const struct table customer_table = {
    "customer_orders",
    "SELECT customer_id AS customer, orders_placed AS placed, orders_confirmed AS confirmed, "
    "orders_cancelled AS cancelled, "
    "printf('%d.%02d', total_placed_cents / 100, total_placed_cents % 100) AS \"placed total\", "
    "printf('%d.%02d', total_confirmed_cents / 100, total_confirmed_cents % 100) "
    "AS \"confirmed total\" FROM customer_orders ORDER BY customer_id",
    "lrrrrr",
};

/* Prints both read models from one read transaction, so the tables agree. */
static es_err print_read_models(const struct demo *dm, const es_config_t *cfg, es_error_t *err) {
    const char *path = es_config_get(cfg, "readmodel.db");
    const char *ids[N_ORDERS];
    sqlite3 *db = NULL;
    for (int i = 0; i < N_ORDERS; i++)
        ids[i] = dm->ids[i];
    /* Read-write (never created here) so that closing the last connection tidies the WAL away. */
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = print_table(db, &order_table, ids, N_ORDERS);
    if (rc == SQLITE_OK)
        rc = print_table(db, &customer_table, NULL, 0);
    es_err e = ES_OK;
    if (rc != SQLITE_OK) {
        snprintf(err->message, sizeof err->message, "%s: %s", path,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        e = ES_EIO;
    }
    sqlite3_close(db);
    return e;
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
}

static int usage(void) {
    fprintf(stderr, "usage: order_saga [--db FILE] [--readmodel FILE]\n");
    return 2;
}

static int die(const char *what, const es_error_t *err) {
    fprintf(stderr, "order_saga: %s: %s\n", what, err->message);
    return 1;
}

int main(int argc, char **argv) {
    const char *db_arg = NULL, *readmodel_arg = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--db") == 0 && i + 1 < argc)
            db_arg = argv[++i];
        else if (strcmp(argv[i], "--readmodel") == 0 && i + 1 < argc)
            readmodel_arg = argv[++i];
        else
            return usage();
    }
    es_error_t err = {0};
    es_config_t *cfg = NULL;
    bool fresh = false;
    if (load_config(db_arg, readmodel_arg, &cfg, &fresh, &err) != ES_OK)
        return die("configuration", &err);
    struct demo dm = {0};
    if (es_engine_new(cfg, &dm.engine, &err) != ES_OK) {
        es_config_destroy(cfg);
        return die("opening the store", &err);
    }
    int status = 0;
    make_ids(&dm, fresh);
    if (demo_register_all(dm.engine, &err) != ES_OK)
        status = die("registering the demo domain", &err);
    else if (drop_stale_read_model(&dm, cfg, &err) != ES_OK)
        status = die("reading the log", &err);
    else if (!play_story(&dm))
        status = 1;
    else if (print_streams(&dm, &err) != ES_OK)
        status = die("reading the streams", &err);
    else if (project(cfg, &err) != ES_OK)
        status = die("projecting the read models", &err);
    else if (print_read_models(&dm, cfg, &err) != ES_OK)
        status = die("reading the read models", &err);
    es_engine_destroy(dm.engine);
    es_config_destroy(cfg);
    return status;
}
