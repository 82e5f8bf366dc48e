/*
 * Topic planning and creation. The plan is pure arithmetic on the config and
 * the loads; only the broker count may come from the cluster. Applying never
 * changes an existing topic: a difference is reported as drift for a person
 * to decide on (fewer partitions cannot be undone, more would move keys).
 */
#include "internal.h"
#include "backends.h"
#include "kafka/wire.h"
#include "log/log.h"
#include "sql.h"

#include <eskit/topics.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DAY_MS (24LL * 3600 * 1000)
#define PROBE_TIMEOUT_MS 3000  /* es_topics_broker_count: a plan must not hang on a dead cluster */
#define APPLY_TIMEOUT_MS 10000 /* metadata, DescribeConfigs, CreateTopics each */

typedef struct role_def {
    es_topic_role role;
    const char *suffix;
    const char *cleanup;
    long long retention_ms;
} role_def;

/* In the order of es_topic_role. */
static const role_def roles[] = {
    {ES_TOPIC_EVENTS, ".events", "delete", -1},
    {ES_TOPIC_SNAPSHOTS, ".snapshots", "compact", -1},
    {ES_TOPIC_COMMANDS, ".commands", "delete", 7 * DAY_MS},
    {ES_TOPIC_REPLIES, ".replies", "delete", DAY_MS},
    {ES_TOPIC_DLQ, ".events.dlq", "delete", 14 * DAY_MS},
};
#define N_ROLES (sizeof roles / sizeof *roles)

const char *es_topic_role_name(es_topic_role role) {
    static const char *const names[] = {"events",  "snapshots", "commands",
                                        "replies", "dlq",       "schemas"};
    return (unsigned)role <= ES_TOPIC_SCHEMAS ? names[role] : "unknown";
}

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Kafka's rule: 1..249 characters of [a-zA-Z0-9._-], and not "." or "..". */
es_err es_topic_name_check(const char *name, es_error_t *err) {
    size_t len = strlen(name);
    if (len == 0 || len > ES_TOPIC_NAME_MAX)
        return es_fail(err, ES_EINVAL, "topic name '%.60s...' is %zu bytes; Kafka allows %d", name,
                       len, ES_TOPIC_NAME_MAX);
    if (!strcmp(name, ".") || !strcmp(name, ".."))
        return es_fail(err, ES_EINVAL, "'%s' is not a legal Kafka topic name", name);
    for (const char *p = name; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return es_fail(err, ES_EINVAL,
                           "topic name '%s' has '%c'; Kafka allows only [a-zA-Z0-9._-]", name, c);
    }
    return ES_OK;
}

/* Kafka maps '.' to '_' in metric names, so it refuses a topic differing from another only
 * there. */
int es_topic_names_collide(const char *a, const char *b) {
    for (; *a && *b; a++, b++) {
        char x = *a == '.' ? '_' : *a, y = *b == '.' ? '_' : *b;
        if (x != y)
            return 0;
    }
    return *a == *b;
}

typedef struct plan_defaults {
    long long per_partition, throughput, consumers;
} plan_defaults;

static es_err plan_type(const plan_defaults *d, int brokers, const es_topic_load_t *load,
                        es_topic_spec_t *out, es_error_t *err) {
    es_err rc = es_validate_aggregate_type(load->aggregate_type, err);
    if (rc != ES_OK)
        return rc;
    if (load->events_per_s < 0 || load->events_per_s > 1000000000LL || load->consumers < 0 ||
        load->consumers > 1000000000LL)
        return es_fail(err, ES_EINVAL,
                       "%s: events/s %lld and consumers %lld must be whole numbers from 0 (the "
                       "default) to 1000000000",
                       load->aggregate_type, load->events_per_s, load->consumers);
    long long eps = load->events_per_s ? load->events_per_s : d->throughput;
    long long consumers = load->consumers ? load->consumers : d->consumers;
    long long by_throughput = (eps + d->per_partition - 1) / d->per_partition;
    long long partitions = by_throughput > consumers ? by_throughput : consumers;
    unsigned flags = 0;
    if (partitions <= 1) {
        partitions = 1;
        flags = ES_TOPIC_BY_MINIMUM;
    } else {
        flags = (by_throughput == partitions ? ES_TOPIC_BY_THROUGHPUT : 0) |
                (consumers == partitions ? ES_TOPIC_BY_CONSUMERS : 0);
    }
    if (partitions > ES_TOPIC_MAX_PARTITIONS)
        return es_fail(err, ES_EINVAL,
                       "%s needs %lld partitions (%lld events/s at %lld per partition, %lld "
                       "consumers); more than %d per topic is refused as a likely typo",
                       load->aggregate_type, partitions, eps, d->per_partition, consumers,
                       ES_TOPIC_MAX_PARTITIONS);
    int rf = brokers < 1 ? 1 : brokers > 3 ? 3 : brokers;
    /* With acks=all, 2 of 3 in sync means every acknowledged write is on two brokers and
     * writes go on while one broker is down. With fewer replicas there is no such middle: 2 of
     * 2 would stop all writes whenever either broker is down, so 1 (the replicas still copy). */
    int min_isr = rf >= 3 ? 2 : 1;
    for (size_t r = 0; r < N_ROLES; r++) {
        es_topic_spec_t *s = &out[r];
        memset(s, 0, sizeof *s);
        snprintf(s->name, sizeof s->name, "%s%s", load->aggregate_type, roles[r].suffix);
        snprintf(s->aggregate_type, sizeof s->aggregate_type, "%s", load->aggregate_type);
        rc = es_topic_name_check(s->name, err);
        if (rc != ES_OK)
            return rc;
        s->role = roles[r].role;
        s->cleanup_policy = roles[r].cleanup;
        s->retention_ms = roles[r].retention_ms;
        s->replication_factor = rf;
        s->min_insync_replicas = min_isr;
        s->events_per_s = eps;
        s->consumers = consumers;
        s->collides_with = -1;
        if (s->role == ES_TOPIC_DLQ) {
            s->partitions = 1;
            s->flags = ES_TOPIC_SINGLE;
        } else {
            s->partitions = (int)partitions;
            s->flags = flags | (s->role == ES_TOPIC_EVENTS ? 0 : ES_TOPIC_SHARED);
        }
    }
    return ES_OK;
}

/* The schema catalogue's topic: small, read whole by every writer at start, kept forever. */
static es_err plan_schemas(const es_config_t *cfg, int brokers, es_topic_spec_t *s,
                           es_error_t *err) {
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", es_config_get(cfg, "schema.topic"));
    es_err rc = es_topic_name_check(s->name, err);
    if (rc != ES_OK) {
        es_error_prefix(err, "schema.topic: ");
        return rc;
    }
    int rf = brokers < 1 ? 1 : brokers > 3 ? 3 : brokers;
    s->role = ES_TOPIC_SCHEMAS;
    s->partitions = 1;
    s->flags = ES_TOPIC_SINGLE;
    s->replication_factor = rf;
    s->min_insync_replicas = rf >= 3 ? 2 : 1;
    s->cleanup_policy = "compact";
    s->retention_ms = -1;
    s->collides_with = -1;
    return ES_OK;
}

/* Aggregate types have no '_' today, so a plan's own names cannot collide; the check keeps it
 * so should the grammar widen, and apply checks the cluster's existing topics the same way. */
static void mark_collisions(const es_config_t *cfg, es_topic_spec_t *specs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < i && specs[i].collides_with < 0; j++) {
            if (!es_topic_names_collide(specs[i].name, specs[j].name))
                continue;
            specs[i].collides_with = (int)j;
            es_logf(cfg, ES_LOG_WARNING,
                    "topics %s and %s collide once '.' and '_' are treated alike; Kafka refuses "
                    "the second one",
                    specs[j].name, specs[i].name);
        }
    }
}

/* topics.aggregates as loads with default numbers; *buf holds the strings, caller frees both. */
static es_err configured_loads(const es_config_t *cfg, es_topic_load_t **loads, size_t *n,
                               char **buf, es_error_t *err) {
    const char *list = es_config_get(cfg, "topics.aggregates");
    *loads = NULL;
    *n = 0;
    *buf = list ? strdup(list) : NULL;
    if (list && !*buf)
        return es_fail(err, ES_ENOMEM, "out of memory reading topics.aggregates");
    size_t cap = 1;
    for (const char *p = list; p && *p; p++)
        cap += *p == ',';
    *loads = calloc(cap, sizeof **loads);
    if (!*loads)
        return es_fail(err, ES_ENOMEM, "out of memory reading topics.aggregates");
    char *save = NULL;
    for (char *t = *buf ? strtok_r(*buf, ", \t", &save) : NULL; t;
         t = strtok_r(NULL, ", \t", &save))
        (*loads)[(*n)++].aggregate_type = t;
    if (*n == 0)
        return es_fail(err, ES_EINVAL,
                       "no aggregate types to plan topics for; name them, or set "
                       "topics.aggregates (ESKIT_TOPICS_AGGREGATES), e.g. "
                       "'orders.order,payments.payment'");
    return ES_OK;
}

static es_err plan_loads(const es_config_t *cfg, int brokers, const es_topic_load_t *loads,
                         size_t n, es_topic_spec_t **out, size_t *n_out, es_error_t *err) {
    plan_defaults d = {es_config_get_int(cfg, "topics.partition.throughput"),
                       es_config_get_int(cfg, "topics.throughput"),
                       es_config_get_int(cfg, "topics.consumers")};
    if (d.per_partition < 1)
        d.per_partition = 1;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (loads[i].aggregate_type && loads[j].aggregate_type &&
                !strcmp(loads[i].aggregate_type, loads[j].aggregate_type))
                return es_fail(err, ES_EINVAL, "aggregate type '%s' is given twice; name it once",
                               loads[i].aggregate_type);
    es_topic_spec_t *specs = calloc(n * N_ROLES + 1, sizeof *specs);
    if (!specs)
        return es_fail(err, ES_ENOMEM, "out of memory planning %zu topics", n * N_ROLES + 1);
    for (size_t i = 0; i < n; i++) {
        es_err rc = plan_type(&d, brokers, &loads[i], &specs[i * N_ROLES], err);
        if (rc != ES_OK) {
            free(specs);
            return rc;
        }
    }
    es_err rc = plan_schemas(cfg, brokers, &specs[n * N_ROLES], err);
    if (rc != ES_OK) {
        free(specs);
        return rc;
    }
    mark_collisions(cfg, specs, n * N_ROLES + 1);
    *out = specs;
    *n_out = n * N_ROLES + 1;
    return ES_OK;
}

es_err es_topics_plan_for(const es_config_t *cfg, int brokers, const es_topic_load_t *loads,
                          size_t n, es_topic_spec_t **out, size_t *n_out, es_error_t *err) {
    if (!out || !n_out || (n && !loads))
        return es_fail(err, ES_EINVAL,
                       "es_topics_plan: out, n_out (and loads when n > 0) are "
                       "required");
    *out = NULL;
    *n_out = 0;
    if (n)
        return plan_loads(cfg, brokers, loads, n, out, n_out, err);
    es_topic_load_t *conf_loads = NULL;
    char *buf = NULL;
    size_t conf_n = 0;
    es_err rc = configured_loads(cfg, &conf_loads, &conf_n, &buf, err);
    if (rc == ES_OK)
        rc = plan_loads(cfg, brokers, conf_loads, conf_n, out, n_out, err);
    if (rc != ES_OK)
        es_error_prefix(err, "topics.aggregates: ");
    free(conf_loads);
    free(buf);
    return rc;
}

es_err es_topics_plan(const es_config_t *cfg, const es_topic_load_t *loads, size_t n,
                      es_topic_spec_t **out, size_t *n_out, es_error_t *err) {
    return es_topics_plan_for(cfg, es_topics_broker_count(cfg), loads, n, out, n_out, err);
}

void es_topics_free(es_topic_spec_t *specs) {
    free(specs);
}

/* A librdkafka handle on the config's brokers, for metadata and admin requests. */
typedef struct kconn {
    const es_config_t *cfg;
    rd_kafka_t *rk;
} kconn;

/* quiet: librdkafka's lines at debug level, for probing, where failing is an answer too. */
static es_err kconn_open(kconn *c, const es_config_t *cfg, int quiet, es_error_t *err) {
    memset(c, 0, sizeof *c);
    c->cfg = cfg;
    if (!es_config_get(cfg, "brokers"))
        return es_fail(err, ES_EINVAL,
                       "no Kafka brokers configured; set brokers (ESKIT_BROKERS, esctl --brokers)");
    es_kafka_opts_t o = {.role = ES_KAFKA_ADMIN, .quiet = quiet};
    return es_kafka_new(cfg, &o, &c->rk, err);
}

static void kconn_close(kconn *c) {
    es_kafka_destroy(c->rk, 0);
    c->rk = NULL;
}

/* Metadata of all topics; gives up early once librdkafka says every broker is down. */
static es_err kconn_metadata(kconn *c, int timeout_ms, const struct rd_kafka_metadata **md,
                             es_error_t *err) {
    int64_t deadline = mono_ms() + timeout_ms;
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR__TIMED_OUT;
    char why[256];
    for (;;) {
        int64_t left = deadline - mono_ms();
        if (left <= 0 || es_kafka_all_down(c->rk, why, sizeof why))
            break;
        e = rd_kafka_metadata(c->rk, 1, NULL, md, left < 250 ? (int)left : 250);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
            return ES_OK;
        rd_kafka_poll(c->rk, 0); /* serves the error events */
    }
    /* Unreachable is ES_EKAFKA here, whatever e is (see <eskit/topics.h>). */
    return es_fail(err, ES_EKAFKA,
                   "cannot reach Kafka at %s within %d ms: %s; check brokers (ESKIT_BROKERS, "
                   "--brokers) and that the cluster runs",
                   es_config_get(c->cfg, "brokers"), timeout_ms,
                   es_kafka_why(c->rk, e, why, sizeof why));
}

static int count_entries(const char *list) {
    int n = 0;
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        size_t blank = strspn(p, " \t");
        n += blank < len;
        p += len + (p[len] == ',');
    }
    return n;
}

int es_topics_broker_count(const es_config_t *cfg) {
    const char *brokers = es_config_get(cfg, "brokers");
    if (!brokers)
        return 1;
    kconn c;
    const struct rd_kafka_metadata *md = NULL;
    int n = 0;
    if (kconn_open(&c, cfg, 1, NULL) == ES_OK &&
        kconn_metadata(&c, PROBE_TIMEOUT_MS, &md, NULL) == ES_OK) {
        n = md->broker_cnt;
        rd_kafka_metadata_destroy(md);
    }
    kconn_close(&c);
    if (n < 1)
        n = count_entries(brokers);
    return n < 1 ? 1 : n;
}

typedef struct topic_result {
    es_topic_status status;
    int exists;
    char detail[384];
} topic_result;

static void add_detail(topic_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_detail(topic_result *r, const char *fmt, ...) {
    size_t len = strlen(r->detail);
    if (len && len + 2 < sizeof r->detail) {
        memcpy(r->detail + len, "; ", 3);
        len += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->detail + len, sizeof r->detail - len, fmt, ap);
    va_end(ap);
}

static const rd_kafka_metadata_topic_t *find_topic(const struct rd_kafka_metadata *md,
                                                   const char *name) {
    for (int i = 0; i < md->topic_cnt; i++)
        if (!strcmp(md->topics[i].topic, name) && md->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR)
            return &md->topics[i];
    return NULL;
}

/* Partition count and replication factor (the smallest of any partition) against the plan. */
static void compare_layout(const es_topic_spec_t *s, const rd_kafka_metadata_topic_t *t,
                           topic_result *r) {
    r->exists = 1;
    r->status = ES_TOPIC_OK;
    if (t->partition_cnt != s->partitions) {
        r->status = ES_TOPIC_DRIFT;
        add_detail(r, "partitions %d, planned %d", t->partition_cnt, s->partitions);
    }
    int rf = t->partition_cnt ? t->partitions[0].replica_cnt : 0;
    for (int p = 1; p < t->partition_cnt; p++)
        if (t->partitions[p].replica_cnt < rf)
            rf = t->partitions[p].replica_cnt;
    if (rf != s->replication_factor) {
        r->status = ES_TOPIC_DRIFT;
        add_detail(r, "replication factor %d, planned %d", rf, s->replication_factor);
    }
}

/* librdkafka sends admin requests to the controller. A cluster whose metadata names none of
 * its brokers as controller (librdkafka's mock cluster does so) can never answer them:
 * CreateTopics and DescribeConfigs would only wait for their timeout. */
static int has_controller(kconn *c, const struct rd_kafka_metadata *md, int32_t *id) {
    *id = rd_kafka_controllerid(c->rk, 2000);
    for (int i = 0; i < md->broker_cnt; i++)
        if (md->brokers[i].id == *id)
            return 1;
    return 0;
}

static rd_kafka_event_t *admin_wait(rd_kafka_queue_t *q) {
    return rd_kafka_queue_poll(q, APPLY_TIMEOUT_MS + 5000);
}

static rd_kafka_AdminOptions_t *admin_options(kconn *c, rd_kafka_admin_op_t op) {
    char errstr[256];
    rd_kafka_AdminOptions_t *ao = rd_kafka_AdminOptions_new(c->rk, op);
    rd_kafka_AdminOptions_set_request_timeout(ao, APPLY_TIMEOUT_MS, errstr, sizeof errstr);
    if (op == RD_KAFKA_ADMIN_OP_CREATETOPICS)
        rd_kafka_AdminOptions_set_operation_timeout(ao, APPLY_TIMEOUT_MS, errstr, sizeof errstr);
    return ao;
}

#define SCHEMAS_LAG_TEXT "604800000"
_Static_assert(ES_TOPIC_SCHEMAS_COMPACTION_LAG_MS == 604800000LL, "SCHEMAS_LAG_TEXT");

static void planned_configs(const es_topic_spec_t *s, char retention[32], char min_isr[16]) {
    snprintf(retention, 32, "%lld", s->retention_ms);
    snprintf(min_isr, 16, "%d", s->min_insync_replicas);
}

static void compare_configs(const es_topic_spec_t *s, const rd_kafka_ConfigResource_t *res,
                            topic_result *r) {
    char retention[32], min_isr[16];
    planned_configs(s, retention, min_isr);
    char lag[32];
    snprintf(lag, sizeof lag, "%lld", ES_TOPIC_SCHEMAS_COMPACTION_LAG_MS);
    const char *want[][2] = {{"cleanup.policy", s->cleanup_policy},
                             {"retention.ms", retention},
                             {"min.insync.replicas", min_isr},
                             {"min.compaction.lag.ms", lag}};
    size_t n_want = sizeof want / sizeof *want - (s->role != ES_TOPIC_SCHEMAS);
    size_t cnt = 0;
    const rd_kafka_ConfigEntry_t **entries = rd_kafka_ConfigResource_configs(res, &cnt);
    for (size_t w = 0; w < n_want; w++) {
        for (size_t i = 0; i < cnt; i++) {
            const char *value = rd_kafka_ConfigEntry_value(entries[i]);
            if (strcmp(rd_kafka_ConfigEntry_name(entries[i]), want[w][0]))
                continue;
            if (!value || strcmp(value, want[w][1])) {
                r->status = ES_TOPIC_DRIFT;
                add_detail(r, "%s %s, planned %s", want[w][0], value ? value : "(unset)",
                           want[w][1]);
            }
        }
    }
}

static void note_all(topic_result *res, size_t n, int existing, const char *note) {
    for (size_t i = 0; i < n; i++)
        if (res[i].exists == existing)
            add_detail(&res[i], "%s", note);
}

/* DescribeConfigs for the topics that exist; a cluster that cannot answer leaves a note. */
static void check_configs(kconn *c, const es_topic_spec_t *specs, topic_result *res, size_t n) {
    rd_kafka_ConfigResource_t **crs = calloc(n ? n : 1, sizeof *crs);
    size_t *idx = calloc(n ? n : 1, sizeof *idx);
    size_t m = 0;
    for (size_t i = 0; crs && idx && i < n; i++) {
        if (!res[i].exists)
            continue;
        idx[m] = i;
        crs[m++] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, specs[i].name);
    }
    if (!crs || !idx || m == 0)
        goto out;
    rd_kafka_queue_t *q = rd_kafka_queue_new(c->rk);
    rd_kafka_AdminOptions_t *ao = admin_options(c, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
    rd_kafka_DescribeConfigs(c->rk, crs, m, ao, q);
    rd_kafka_event_t *ev = admin_wait(q);
    const rd_kafka_DescribeConfigs_result_t *result =
        ev ? rd_kafka_event_DescribeConfigs_result(ev) : NULL;
    if (!result || rd_kafka_event_error(ev)) {
        char note[256];
        snprintf(note, sizeof note, "configs not checked: DescribeConfigs failed: %s",
                 ev ? rd_kafka_event_error_string(ev) : "no answer");
        note_all(res, n, 1, note);
    } else {
        size_t cnt = 0;
        const rd_kafka_ConfigResource_t **rs =
            rd_kafka_DescribeConfigs_result_resources(result, &cnt);
        for (size_t k = 0; k < cnt; k++) {
            for (size_t j = 0; j < m; j++) {
                topic_result *r = &res[idx[j]];
                if (strcmp(rd_kafka_ConfigResource_name(rs[k]), specs[idx[j]].name))
                    continue;
                if (rd_kafka_ConfigResource_error(rs[k]))
                    add_detail(r, "configs not checked: %s",
                               rd_kafka_ConfigResource_error_string(rs[k]));
                else
                    compare_configs(&specs[idx[j]], rs[k], r);
            }
        }
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(ao);
    rd_kafka_queue_destroy(q);
out:
    for (size_t j = 0; crs && j < m; j++)
        rd_kafka_ConfigResource_destroy(crs[j]);
    free(crs);
    free(idx);
}

static rd_kafka_NewTopic_t *new_topic(const es_topic_spec_t *s) {
    char errstr[256], retention[32], min_isr[16];
    planned_configs(s, retention, min_isr);
    rd_kafka_NewTopic_t *t =
        rd_kafka_NewTopic_new(s->name, s->partitions, s->replication_factor, errstr, sizeof errstr);
    if (t && (rd_kafka_NewTopic_set_config(t, "cleanup.policy", s->cleanup_policy) ||
              rd_kafka_NewTopic_set_config(t, "retention.ms", retention) ||
              rd_kafka_NewTopic_set_config(t, "min.insync.replicas", min_isr) ||
              (s->role == ES_TOPIC_SCHEMAS &&
               rd_kafka_NewTopic_set_config(t, "min.compaction.lag.ms", SCHEMAS_LAG_TEXT)))) {
        rd_kafka_NewTopic_destroy(t);
        t = NULL;
    }
    return t;
}

static es_err create_missing(kconn *c, const es_topic_spec_t *specs, topic_result *res, size_t n,
                             es_error_t *err) {
    rd_kafka_NewTopic_t **nts = calloc(n, sizeof *nts);
    size_t m = 0;
    es_err rc = ES_OK;
    for (size_t i = 0; nts && i < n; i++) {
        if (res[i].exists || res[i].status == ES_TOPIC_FAILED)
            continue;
        if (!(nts[m] = new_topic(&specs[i]))) {
            rc = es_fail(err, ES_EINVAL, "cannot describe topic %s to Kafka", specs[i].name);
            goto out;
        }
        m++;
    }
    if (!nts)
        return es_fail(err, ES_ENOMEM, "out of memory creating topics");
    if (m == 0)
        goto out;
    rd_kafka_queue_t *q = rd_kafka_queue_new(c->rk);
    rd_kafka_AdminOptions_t *ao = admin_options(c, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_CreateTopics(c->rk, nts, m, ao, q);
    rd_kafka_event_t *ev = admin_wait(q);
    const rd_kafka_CreateTopics_result_t *result =
        ev ? rd_kafka_event_CreateTopics_result(ev) : NULL;
    if (!result || rd_kafka_event_error(ev)) {
        rd_kafka_resp_err_t e = ev ? rd_kafka_event_error(ev) : RD_KAFKA_RESP_ERR__TIMED_OUT;
        rc = es_fail(err, ES_EKAFKA,
                     "CreateTopics for %zu topics failed: %s (%s)%s; create them with the "
                     "cluster's tools instead",
                     m, ev ? rd_kafka_event_error_string(ev) : "no answer", rd_kafka_err2name(e),
                     e == RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE
                         ? ": the cluster does not support the CreateTopics request"
                         : "");
        for (size_t i = 0; i < n; i++)
            if (!res[i].exists && res[i].status != ES_TOPIC_FAILED) {
                res[i].status = ES_TOPIC_FAILED;
                add_detail(&res[i], "missing; CreateTopics failed");
            }
    } else {
        size_t cnt = 0;
        const rd_kafka_topic_result_t **trs = rd_kafka_CreateTopics_result_topics(result, &cnt);
        for (size_t k = 0; k < cnt; k++) {
            for (size_t i = 0; i < n; i++) {
                if (res[i].exists || strcmp(specs[i].name, rd_kafka_topic_result_name(trs[k])))
                    continue;
                rd_kafka_resp_err_t e = rd_kafka_topic_result_error(trs[k]);
                const char *why = rd_kafka_topic_result_error_string(trs[k]);
                if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
                    res[i].status = ES_TOPIC_CREATED;
                } else if (e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
                    res[i].status = ES_TOPIC_OK;
                    add_detail(&res[i], "created by someone else meanwhile; not compared");
                } else {
                    res[i].status = ES_TOPIC_FAILED;
                    add_detail(&res[i], "CreateTopics: %s", why ? why : rd_kafka_err2str(e));
                    if (rc == ES_OK)
                        rc = es_fail(err, ES_EKAFKA, "cannot create topic %s: %s", specs[i].name,
                                     why ? why : rd_kafka_err2str(e));
                }
            }
        }
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(ao);
    rd_kafka_queue_destroy(q);
out:
    for (size_t j = 0; j < m; j++)
        rd_kafka_NewTopic_destroy(nts[j]);
    free(nts);
    return rc;
}

/* A missing topic whose name collides with an existing one would be refused by Kafka. */
static void check_existing_collisions(const struct rd_kafka_metadata *md,
                                      const es_topic_spec_t *specs, topic_result *res, size_t n) {
    for (size_t i = 0; i < n; i++) {
        for (int t = 0; !res[i].exists && t < md->topic_cnt; t++) {
            if (!es_topic_names_collide(specs[i].name, md->topics[t].topic))
                continue;
            res[i].status = ES_TOPIC_FAILED;
            add_detail(&res[i], "collides with existing topic %s once '.' and '_' are alike",
                       md->topics[t].topic);
            break;
        }
    }
}

static es_err apply_with(kconn *c, const struct rd_kafka_metadata *md, const es_topic_spec_t *specs,
                         topic_result *res, size_t n, es_error_t *err) {
    size_t missing = 0, first_missing = 0;
    for (size_t i = 0; i < n; i++) {
        const rd_kafka_metadata_topic_t *t = find_topic(md, specs[i].name);
        if (t) {
            compare_layout(&specs[i], t, &res[i]);
        } else if (missing++ == 0) {
            first_missing = i;
        }
    }
    check_existing_collisions(md, specs, res, n);
    int32_t controller = -1;
    if (has_controller(c, md, &controller)) {
        check_configs(c, specs, res, n);
        return missing ? create_missing(c, specs, res, n, err) : ES_OK;
    }
    note_all(res, n, 1,
             "configs not checked: the cluster has no controller to answer "
             "DescribeConfigs");
    if (!missing)
        return ES_OK;
    for (size_t i = 0; i < n; i++) {
        if (!res[i].exists && res[i].status != ES_TOPIC_FAILED) {
            res[i].status = ES_TOPIC_FAILED;
            add_detail(&res[i], "missing; the cluster cannot create topics");
        }
    }
    es_logf(c->cfg, ES_LOG_INFO, "the cluster's controller id %d is none of its %d brokers",
            (int)controller, md->broker_cnt);
    return es_fail(err, ES_EKAFKA,
                   "cannot create %zu missing topics (first: %s): the cluster names no "
                   "controller, so it cannot answer CreateTopics, as librdkafka's mock cluster "
                   "(esctl dev-broker) never can; start that with the topics ('esctl dev-broker "
                   "--plan %s') or create them with the cluster's tools (kafka-topics.sh "
                   "--create; 'esctl topics plan' shows partitions and configs)",
                   missing, specs[first_missing].name, specs[first_missing].aggregate_type);
}

es_err es_topics_apply(const es_config_t *cfg, const es_topic_spec_t *specs, size_t n,
                       es_topic_report_cb *report, void *opaque, es_error_t *err) {
    if (n && !specs)
        return es_fail(err, ES_EINVAL, "es_topics_apply: specs are required");
    topic_result *res = calloc(n ? n : 1, sizeof *res);
    if (!res)
        return es_fail(err, ES_ENOMEM, "out of memory applying %zu topics", n);
    kconn c;
    const struct rd_kafka_metadata *md = NULL;
    es_err rc = kconn_open(&c, cfg, 0, err);
    if (rc == ES_OK)
        rc = kconn_metadata(&c, APPLY_TIMEOUT_MS, &md, err);
    if (rc == ES_OK) {
        rc = apply_with(&c, md, specs, res, n, err);
        size_t drift = 0, failed = 0;
        for (size_t i = 0; i < n; i++) {
            drift += res[i].status == ES_TOPIC_DRIFT;
            failed += res[i].status == ES_TOPIC_FAILED;
            if (report)
                report(&specs[i], res[i].status, res[i].detail, opaque);
        }
        if (rc == ES_OK && failed)
            rc =
                es_fail(err, ES_EKAFKA, "%zu topics could not be created; see their lines", failed);
        if (rc == ES_OK && drift)
            rc = es_fail(err, ES_ESTATE,
                         "%zu topics differ from the plan; nothing was changed (fix them with the "
                         "cluster's tools, or change the plan)",
                         drift);
        rd_kafka_metadata_destroy(md);
    }
    kconn_close(&c);
    free(res);
    return rc;
}

es_err es_topic_size(const es_topic_spec_t *spec, const es_topic_traffic_t *t, es_topic_size_t *out,
                     es_error_t *err) {
    if (!spec || !t || !out)
        return es_fail(err, ES_EINVAL, "es_topic_size: spec, traffic and out are required");
    if (!isfinite(t->records_per_day) || !isfinite(t->record_bytes) || t->records_per_day < 0 ||
        t->record_bytes < 0)
        return es_fail(err, ES_EINVAL,
                       "%s: records per day %g and record bytes %g must be numbers from 0 up",
                       spec->name, t->records_per_day, t->record_bytes);
    double per_day = t->records_per_day * t->record_bytes * spec->replication_factor;
    *out = (es_topic_size_t){.bytes_per_day = per_day, .bytes_retained = -1, .bytes_per_year = -1};
    if (!strcmp(spec->cleanup_policy, "compact")) {
        out->kind = ES_TOPIC_SIZE_COMPACTED;
    } else if (spec->retention_ms < 0) {
        out->kind = ES_TOPIC_SIZE_FOREVER;
        out->bytes_per_year = per_day * 365;
    } else {
        out->kind = ES_TOPIC_SIZE_RETAINED;
        out->bytes_retained = per_day * (double)spec->retention_ms / (double)DAY_MS;
    }
    return ES_OK;
}

#define DAY_US (DAY_MS * 1000)

double es_topic_rate_per_day(long long records, long long records_last_day, int64_t first_us,
                             int64_t last_us, int64_t now_us) {
    if (records <= 0)
        return 0;
    if (first_us <= now_us - DAY_US)
        return (double)records_last_day;
    if (records < 2 || last_us <= first_us)
        return (double)records;
    return (double)(records - 1) * (double)DAY_US / (double)(last_us - first_us);
}

/* What a walk over one log (or one partition) saw. */
typedef struct traffic_acc {
    long long n, last_day;
    double bytes;
    int64_t first_us, last_us;
} traffic_acc;

static void acc_add(traffic_acc *a, size_t bytes, int64_t at_us, int64_t now_us) {
    if (a->n == 0 || at_us < a->first_us)
        a->first_us = at_us;
    if (a->n == 0 || at_us > a->last_us)
        a->last_us = at_us;
    a->n++;
    a->bytes += (double)bytes;
    a->last_day += at_us >= now_us - DAY_US;
}

static void acc_sum(es_topic_traffic_t *out, const traffic_acc *a, int64_t now_us) {
    double total = out->record_bytes * (double)out->records + a->bytes;
    out->records += a->n;
    out->records_per_day +=
        es_topic_rate_per_day(a->n, a->last_day, a->first_us, a->last_us, now_us);
    out->record_bytes = out->records ? total / (double)out->records : 0;
}

/* The embedded store keeps the events of each aggregate type and nothing else of its topics. */
static es_err measure_sqlite(const es_config_t *cfg, const es_topic_spec_t *spec, int64_t now_us,
                             es_topic_traffic_t *out, es_error_t *err) {
    if (spec->role != ES_TOPIC_EVENTS)
        return es_fail(err, ES_ENOTFOUND,
                       "%s: the embedded log keeps no %s topic to measure; only events", spec->name,
                       es_topic_role_name(spec->role));
    es_log_t *log = NULL;
    sqlite3_stmt *st = NULL;
    traffic_acc a = {0};
    const char *file = es_config_get(cfg, "db");
    es_err rc = es_log_sqlite_open_flags(cfg, ES_LOG_READONLY, &log, err);
    if (rc != ES_OK)
        return rc;
    sqlite3 *db = es_log_sqlite_db(log);
    rc = es_sql_prepare(db, file,
                        "SELECT e.pos, e.envelope FROM es_events e JOIN es_types t ON t.id = "
                        "e.type_id WHERE t.name = ?1 ORDER BY e.pos",
                        &st, err);
    if (rc != ES_OK)
        goto out;
    int s = sqlite3_bind_text(st, 1, spec->aggregate_type, -1, SQLITE_STATIC);
    if (s != SQLITE_OK) {
        rc = es_sql_fail_file(db, s, file, "measuring the events", err);
        goto out;
    }
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        const uint8_t *blob = sqlite3_column_blob(st, 1);
        size_t len = (size_t)sqlite3_column_bytes(st, 1);
        es_position_t at = {
            .topic = spec->name, .partition = -1, .offset = sqlite3_column_int64(st, 0)};
        es_event_t *ev = NULL;
        rc = es_envelope_decode(blob, len, &at, &ev, err);
        if (rc != ES_OK)
            goto out;
        acc_add(&a, len, ev->occurred_at_us, now_us);
        es_event_free(ev);
    }
    if (s != SQLITE_DONE) {
        rc = es_sql_fail_file(db, s, file, "measuring the events", err);
        goto out;
    }
    *out = (es_topic_traffic_t){0};
    acc_sum(out, &a, now_us);
out:
    sqlite3_finalize(st);
    log->destroy(log);
    return rc;
}

#define MEASURE_TIMEOUT_MS 15000

static size_t record_size(const rd_kafka_message_t *m) {
    size_t n = m->key_len + m->len;
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return n;
    const char *name;
    const void *value;
    size_t size;
    for (size_t i = 0; !rd_kafka_header_get_all(hdrs, i, &name, &value, &size); i++)
        n += strlen(name) + size;
    return n;
}

typedef struct sample_part {
    int64_t end; /* the high watermark when the sample started */
    int done;
    traffic_acc acc;
} sample_part;

/* Reads each partition from its start offset (set in parts) up to its end. */
static es_err sample_records(rd_kafka_t *rk, const es_topic_spec_t *spec,
                             rd_kafka_topic_partition_list_t *parts, sample_part *sp,
                             int64_t now_us, es_error_t *err) {
    int left = 0;
    for (int i = 0; i < parts->cnt; i++)
        left += !sp[i].done;
    rd_kafka_resp_err_t e = rd_kafka_assign(rk, parts);
    if (e)
        return es_fail(err, ES_EKAFKA, "%s: cannot read the topic: %s", spec->name,
                       rd_kafka_err2str(e));
    int64_t deadline = mono_ms() + MEASURE_TIMEOUT_MS;
    es_err rc = ES_OK;
    while (left > 0 && rc == ES_OK) {
        if (mono_ms() > deadline) {
            rc = es_fail(err, ES_ETIMEOUT,
                         "%s: %d partitions not sampled to their end within %d ms; is the "
                         "cluster busy or down?",
                         spec->name, left, MEASURE_TIMEOUT_MS);
            break;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m)
            continue;
        int eof = m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
        if (m->err && !eof) {
            rc = es_fail(err, ES_EKAFKA, "%s[%d]: reading a sample failed: %s", spec->name,
                         (int)m->partition, rd_kafka_message_errstr(m));
        } else {
            for (int i = 0; i < parts->cnt; i++) {
                if (parts->elems[i].partition != m->partition || sp[i].done)
                    continue;
                if (!eof) {
                    rd_kafka_timestamp_type_t tst;
                    int64_t ts = rd_kafka_message_timestamp(m, &tst);
                    acc_add(&sp[i].acc, record_size(m), ts * 1000, now_us);
                }
                /* The end as sampled, or as far as a reader gets: a transaction's commit
                 * marker takes the last offset and is never delivered. */
                if (eof || m->offset + 1 >= sp[i].end) {
                    sp[i].done = 1;
                    left--;
                }
            }
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_assign(rk, NULL);
    return rc;
}

static es_err measure_kafka(const es_config_t *cfg, const es_topic_spec_t *spec, int64_t now_us,
                            es_topic_traffic_t *out, es_error_t *err) {
    kconn c = {.cfg = cfg};
    es_config_t *kcfg = es_config_dup(cfg);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_partition_list_t *parts = NULL;
    sample_part *sp = NULL;
    es_kafka_opts_t o = {
        .role = ES_KAFKA_CONSUMER, .what = "topic sampler", .group = "eskit-topics-plan"};
    *out = (es_topic_traffic_t){0};
    /* A partition's end is where the reader is told so, past any marker it cannot read. */
    es_err rc = kcfg ? es_config_set(kcfg, "kafka.enable.partition.eof", "true", err)
                     : es_fail(err, ES_ENOMEM, "out of memory sampling %s", spec->name);
    if (rc == ES_OK)
        rc = es_kafka_new(kcfg, &o, &c.rk, err);
    if (rc == ES_OK)
        rc = kconn_metadata(&c, APPLY_TIMEOUT_MS, &md, err);
    if (rc != ES_OK)
        goto out;
    const rd_kafka_metadata_topic_t *t = find_topic(md, spec->name);
    if (!t)
        goto out; /* not created yet: no traffic */
    parts = rd_kafka_topic_partition_list_new(t->partition_cnt);
    sp = calloc((size_t)t->partition_cnt + 1, sizeof *sp);
    if (!parts || !sp) {
        rc = es_fail(err, ES_ENOMEM, "out of memory sampling %s", spec->name);
        goto out;
    }
    for (int i = 0; i < t->partition_cnt; i++) {
        int64_t lo = 0, hi = 0;
        int32_t p = t->partitions[i].id;
        rd_kafka_resp_err_t e =
            rd_kafka_query_watermark_offsets(c.rk, spec->name, p, &lo, &hi, APPLY_TIMEOUT_MS);
        if (e) {
            rc = es_fail(err, es_kafka_code(e), "%s[%d]: cannot read its offsets: %s", spec->name,
                         (int)p, rd_kafka_err2str(e));
            goto out;
        }
        int64_t start = hi - lo > ES_TOPIC_SAMPLE_RECORDS ? hi - ES_TOPIC_SAMPLE_RECORDS : lo;
        rd_kafka_topic_partition_list_add(parts, spec->name, p)->offset = start;
        sp[i].end = hi;
        sp[i].done = hi <= lo;
    }
    rc = sample_records(c.rk, spec, parts, sp, now_us, err);
    for (int i = 0; rc == ES_OK && i < t->partition_cnt; i++)
        acc_sum(out, &sp[i].acc, now_us);
out:
    if (parts)
        rd_kafka_topic_partition_list_destroy(parts);
    free(sp);
    if (md)
        rd_kafka_metadata_destroy(md);
    if (c.rk)
        rd_kafka_consumer_close(c.rk);
    kconn_close(&c);
    es_config_destroy(kcfg);
    return rc;
}

es_err es_topic_measure(const es_config_t *cfg, const es_topic_spec_t *spec, int64_t now_us,
                        es_topic_traffic_t *out, es_error_t *err) {
    if (!cfg || !spec || !out)
        return es_fail(err, ES_EINVAL, "es_topic_measure: cfg, spec and out are required");
    *out = (es_topic_traffic_t){0};
    if (es_backend_of(cfg)->local_file)
        return measure_sqlite(cfg, spec, now_us, out, err);
    if (!es_config_get(cfg, "brokers"))
        return es_fail(err, ES_EINVAL,
                       "no Kafka brokers configured; set brokers (ESKIT_BROKERS, esctl --brokers)");
    return measure_kafka(cfg, spec, now_us, out, err);
}
