/*
 * esctl topics plan and esctl topics apply: the Kafka topics of aggregate
 * types as es_topics_plan computes them, printed or made to exist on a cluster.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "esctl.h"

const char topics_help[] =
    "usage: esctl topics plan [--json] [--throughput N] [--partition-throughput N]\n"
    "                         [--consumers N] [--brokers N|HOST:PORT,...]\n"
    "                         [--record-bytes N] [--records-per-day N] [--from-log]\n"
    "                         [TYPE[:EVENTS_PER_S[:CONSUMERS]]...]\n"
    "       esctl topics apply [--brokers HOST:PORT,...] [same options and types]\n"
    "\n"
    "Every aggregate type gets five topics: <type>.events (kept forever),\n"
    "<type>.snapshots (compacted), <type>.commands (7 days), <type>.replies (1 day)\n"
    "and <type>.events.dlq (14 days, 1 partition). The events topic gets\n"
    "max(ceil(events/s / per-partition events/s), consumers, 1) partitions;\n"
    "snapshots, commands and replies get the same count, since the single writer of\n"
    "a partition reads commands and writes events under the same key. Replication\n"
    "factor min(3, brokers); min.insync.replicas 2 when it is 3, else 1.\n"
    "\n"
    "  plan    prints each topic: partitions and the rule that decided them,\n"
    "          replication factor, min.insync.replicas, cleanup policy, retention,\n"
    "          and the naming check (Kafka refuses two names that differ only in\n"
    "          '.' versus '_'); with --record-bytes or --from-log also the storage\n"
    "          each topic takes, times its replication factor: records a day, mean\n"
    "          record size, bytes a day, and bytes at its retention (a topic kept\n"
    "          forever: bytes a year; a compacted one: bounded by its live keys)\n"
    "  apply   connects to the cluster, creates missing topics and compares existing\n"
    "          ones; prints one line per topic: created, ok, drift (how it differs;\n"
    "          nothing is changed) or failed. A cluster without CreateTopics, such as\n"
    "          'esctl dev-broker', cannot create them: start it with --plan instead.\n"
    "\n"
    "Types default to topics.aggregates (ESKIT_TOPICS_AGGREGATES); EVENTS_PER_S and\n"
    "CONSUMERS per type default to the options below.\n"
    "\n"
    "Options:\n"
    "  --throughput N            expected events/s per type (topics.throughput, 1000)\n"
    "  --partition-throughput N  events/s one partition handles\n"
    "                            (topics.partition.throughput, 5000)\n"
    "  --consumers N             consumers per group (topics.consumers, 1)\n"
    "  --brokers N               plan: plan for N brokers without asking a cluster\n"
    "  --brokers HOST:PORT,...   the cluster (brokers, ESKIT_BROKERS); plan counts its\n"
    "                            brokers when it answers within 3 s\n"
    "  --record-bytes N          plan: mean bytes of a record (key, value, headers)\n"
    "  --records-per-day N       plan: records written a day per topic (default:\n"
    "                            measured with --from-log, else the type's events/s\n"
    "                            times 86400, a peak rate and so an upper bound)\n"
    "  --from-log                plan: measure both from the log the config names:\n"
    "                            embedded, each type's events in the store (their\n"
    "                            commands, replies and snapshots are taken alike);\n"
    "                            Kafka, the last records of each topic; the flags\n"
    "                            above override what it measures\n"
    "  --json                    plan: a JSON array of objects, one per topic\n"
    "  -h, --help                show this help\n"
    "\n"
    "Example: esctl topics plan orders.order:20000:4 payments.payment --brokers 3\n"
    "Exits 1 when apply found drift or could not create a topic.\n";

int parse_count(const char *flag, const char *value, long long min, long long max, long long *out) {
    uint64_t v = 0;
    if (parse_u64(value, &v) != 0 || v < (uint64_t)min || v > (uint64_t)max) {
        say("%s needs a whole number from %lld to %lld, not '%s'", flag, min, max, value);
        return EXIT_USAGE;
    }
    *out = (long long)v;
    return EXIT_OK;
}

int parse_topic_load(const char *arg, es_topic_load_t *load, char **owned) {
    es_error_t err = {0};
    *owned = strdup(arg);
    if (!*owned) {
        say("out of memory");
        return EXIT_FAIL;
    }
    char *eps = strchr(*owned, ':');
    char *consumers = eps ? strchr(eps + 1, ':') : NULL;
    if (eps)
        *eps++ = '\0';
    if (consumers)
        *consumers++ = '\0';
    *load = (es_topic_load_t){.aggregate_type = *owned};
    if (es_validate_aggregate_type(*owned, &err) != ES_OK) {
        say("%s; types are TYPE[:EVENTS_PER_S[:CONSUMERS]]", err.message);
        return EXIT_USAGE;
    }
    if (eps && parse_count("EVENTS_PER_S", eps, 1, 1000000000LL, &load->events_per_s))
        return EXIT_USAGE;
    if (consumers && parse_count("CONSUMERS", consumers, 1, 1000000000LL, &load->consumers))
        return EXIT_USAGE;
    return EXIT_OK;
}

/* Sets a topics.* key from a flag; a bad value is a usage error. */
static int set_key(es_config_t *cfg, const char *flag, const char *key, const char *value) {
    es_error_t err = {0};
    if (value && es_config_set(cfg, key, value, &err) != ES_OK) {
        say("%s: %s", flag, err.message);
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

static bool all_digits(const char *s) {
    return *s && strspn(s, "0123456789") == strlen(s);
}

typedef struct topics_run {
    es_config_t *cfg;
    es_topic_load_t *loads;
    char **owned;
    size_t n;
    int brokers; /* --brokers N; 0: ask es_topics_broker_count */
} topics_run;

/* How big one planned topic gets, when the plan sizes storage. */
typedef struct topic_sizing {
    bool sized;
    const char *rate_source; /* "given", "measured", "peak" */
    es_topic_traffic_t traffic;
    es_topic_size_t size;
} topic_sizing;

/* Sizing options, checked before anything is planned. */
typedef struct sizing_opts {
    bool on, from_log;
    long long record_bytes, records_per_day; /* -1: not given */
} sizing_opts;

static int parse_sizing(const options *o, bool apply, sizing_opts *z) {
    *z = (sizing_opts){.record_bytes = -1, .records_per_day = -1};
    const char *flag = o->record_bytes      ? "--record-bytes"
                       : o->records_per_day ? "--records-per-day"
                       : o->from_log        ? "--from-log"
                                            : NULL;
    if (!flag)
        return EXIT_OK;
    if (apply) {
        say("option '%s' does not apply to 'topics apply'; run 'esctl topics --help'", flag);
        return EXIT_USAGE;
    }
    if (o->record_bytes &&
        parse_count("--record-bytes", o->record_bytes, 1, 1000000000LL, &z->record_bytes))
        return EXIT_USAGE;
    if (o->records_per_day && parse_count("--records-per-day", o->records_per_day, 0,
                                          1000000000000LL, &z->records_per_day))
        return EXIT_USAGE;
    if (!o->record_bytes && !o->from_log) {
        say("--records-per-day needs a record size too: --record-bytes N, or --from-log to "
            "measure it");
        return EXIT_USAGE;
    }
    z->on = true;
    z->from_log = o->from_log;
    return EXIT_OK;
}

static int prepare(const options *o, bool apply, topics_run *t) {
    int rc = load_config(o, &t->cfg);
    if (rc == EXIT_OK)
        rc = set_key(t->cfg, "--throughput", "topics.throughput", o->throughput);
    if (rc == EXIT_OK)
        rc = set_key(t->cfg, "--partition-throughput", "topics.partition.throughput",
                     o->partition_throughput);
    if (rc == EXIT_OK)
        rc = set_key(t->cfg, "--consumers", "topics.consumers", o->consumers);
    if (rc == EXIT_OK && o->brokers && all_digits(o->brokers)) {
        long long n = 0;
        if (apply) {
            say("topics apply needs the cluster's address in --brokers (HOST:PORT,...), not a "
                "broker count; run 'esctl topics --help'");
            return EXIT_USAGE;
        }
        rc = parse_count("--brokers", o->brokers, 1, 1000, &n);
        t->brokers = (int)n;
    } else if (rc == EXIT_OK) {
        rc = set_key(t->cfg, "--brokers", "brokers", o->brokers);
    }
    if (rc != EXIT_OK)
        return rc;
    if (apply && !es_config_get(t->cfg, "brokers")) {
        say("topics apply needs the cluster: --brokers HOST:PORT,... or ESKIT_BROKERS");
        return EXIT_USAGE;
    }
    t->n = o->n_pos - 1;
    t->loads = calloc(t->n + 1, sizeof *t->loads);
    t->owned = calloc(t->n + 1, sizeof *t->owned);
    if (!t->loads || !t->owned) {
        say("out of memory");
        return EXIT_FAIL;
    }
    for (size_t i = 0; rc == EXIT_OK && i < t->n; i++)
        rc = parse_topic_load(o->pos[i + 1], &t->loads[i], &t->owned[i]);
    if (rc == EXIT_OK && t->n == 0 && !es_config_get(t->cfg, "topics.aggregates")) {
        say("no aggregate types given; name them (esctl topics %s orders.order ...) or set "
            "topics.aggregates in eskit.conf or ESKIT_TOPICS_AGGREGATES",
            apply ? "apply" : "plan");
        return EXIT_USAGE;
    }
    return rc;
}

static void release(topics_run *t) {
    for (size_t i = 0; t->owned && i < t->n; i++)
        free(t->owned[i]);
    free(t->owned);
    free(t->loads);
    es_config_destroy(t->cfg);
}

static int make_plan(topics_run *t, es_topic_spec_t **specs, size_t *n) {
    es_error_t err = {0};
    es_err e = t->brokers ? es_topics_plan_for(t->cfg, t->brokers, t->loads, t->n, specs, n, &err)
                          : es_topics_plan(t->cfg, t->loads, t->n, specs, n, &err);
    if (e != ES_OK) {
        say("%s", err.message);
        /* Types from the command line were checked already: this is the config's fault. */
        return e == ES_EINVAL && t->n ? EXIT_USAGE : EXIT_FAIL;
    }
    return EXIT_OK;
}

static const char *rule(const es_topic_spec_t *s) {
    if (s->flags & ES_TOPIC_SINGLE)
        return "single";
    if (s->flags & ES_TOPIC_SHARED)
        return "= events";
    if ((s->flags & ES_TOPIC_BY_THROUGHPUT) && (s->flags & ES_TOPIC_BY_CONSUMERS))
        return "throughput+consumers";
    if (s->flags & ES_TOPIC_BY_THROUGHPUT)
        return "throughput";
    if (s->flags & ES_TOPIC_BY_CONSUMERS)
        return "consumers";
    return "minimum";
}

static void put_retention(pb_buf *b, long long ms, int width) {
    char text[32];
    if (ms < 0)
        snprintf(text, sizeof text, "forever");
    else if (ms % (24LL * 3600 * 1000) == 0)
        snprintf(text, sizeof text, "%lldd", ms / (24LL * 3600 * 1000));
    else
        snprintf(text, sizeof text, "%lldms", ms);
    pb_buf_printf(b, "%-*s", width, text);
}

/* es_topic_measure of s, or EXIT_FAIL after one line naming the topic. */
static int measure(const es_config_t *cfg, const es_topic_spec_t *s, int64_t now_us,
                   es_topic_traffic_t *out) {
    es_error_t err = {0};
    if (es_topic_measure(cfg, s, now_us, out, &err) != ES_OK) {
        say("measuring %s with --from-log: %s", s->name, err.message);
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

/* The traffic of every topic the plan sizes, then its size. Embedded: a type's events stand
 * for its snapshots, commands and replies; its DLQ and the schema catalogue are written only on
 * failures and new schemas, so they are not sized. Kafka: every topic is measured itself. */
static int size_plan(const topics_run *t, const sizing_opts *z, const es_topic_spec_t *specs,
                     size_t n, topic_sizing *out) {
    es_backend_info_t info = {0};
    es_error_t err = {0};
    bool each_topic = false;
    if (z->from_log && es_backend_info(t->cfg, &info, &err) == ES_OK)
        each_topic = !info.local_file;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    es_topic_traffic_t type_traffic = {0};
    for (size_t i = 0; i < n; i++) {
        const es_topic_spec_t *s = &specs[i];
        topic_sizing *r = &out[i];
        bool stands_in = s->role != ES_TOPIC_DLQ && s->role != ES_TOPIC_SCHEMAS;
        *r = (topic_sizing){.sized = each_topic || stands_in};
        if (!r->sized)
            continue;
        es_topic_traffic_t *tr = &r->traffic;
        r->rate_source = "given";
        if (z->from_log && (each_topic || s->role == ES_TOPIC_EVENTS)) {
            int rc = measure(t->cfg, s, now_us, each_topic ? tr : &type_traffic);
            if (rc != EXIT_OK)
                return rc;
        }
        if (z->from_log) {
            if (!each_topic)
                *tr = type_traffic; /* the events come first among a type's topics */
            r->rate_source = "measured";
        } else {
            tr->records_per_day = (double)s->events_per_s * 86400;
            r->rate_source = "peak";
        }
        if (z->records_per_day >= 0) {
            tr->records_per_day = (double)z->records_per_day;
            r->rate_source = "given";
        }
        if (z->record_bytes >= 0)
            tr->record_bytes = (double)z->record_bytes;
        if (es_topic_size(s, tr, &r->size, &err) != ES_OK) {
            say("%s", err.message);
            return EXIT_FAIL;
        }
    }
    return EXIT_OK;
}

/* bytes in IEC units with one decimal ("1.5 GiB"), whole bytes under 1 KiB. */
static void put_bytes(char *out, size_t cap, double bytes) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    size_t u = 0;
    while (bytes >= 1024 && u + 1 < sizeof units / sizeof *units) {
        bytes /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(out, cap, "%.0f B", bytes);
    else
        snprintf(out, cap, "%.1f %s", bytes, units[u]);
}

static void put_size_cells(pb_buf *b, const topic_sizing *r) {
    char rate[32], rec[32], day[32], kept[48], v[32];
    if (!r->sized) {
        pb_buf_printf(b, "%-12s  %-10s  %-10s  %-24s  ", "-", "-", "-", "-");
        return;
    }
    snprintf(rate, sizeof rate, "%.0f", r->traffic.records_per_day);
    snprintf(rec, sizeof rec, "%.0f", r->traffic.record_bytes);
    put_bytes(day, sizeof day, r->size.bytes_per_day);
    if (r->size.kind == ES_TOPIC_SIZE_RETAINED) {
        put_bytes(kept, sizeof kept, r->size.bytes_retained);
    } else if (r->size.kind == ES_TOPIC_SIZE_FOREVER) {
        put_bytes(v, sizeof v, r->size.bytes_per_year);
        snprintf(kept, sizeof kept, "forever: %s/year", v);
    } else {
        snprintf(kept, sizeof kept, "compacted: live keys");
    }
    pb_buf_printf(b, "%-12s  %-10s  %-10s  %-24s  ", rate, rec, day, kept);
}

static void plan_text(pb_buf *b, const es_topic_spec_t *specs, const topic_sizing *sz, size_t n,
                      int brokers) {
    int w = (int)strlen("TOPIC");
    for (size_t i = 0; i < n; i++)
        if ((int)strlen(specs[i].name) > w)
            w = (int)strlen(specs[i].name);
    pb_buf_printf(b, "%-*s  %-27s  %-2s  %-7s  %-7s  %-9s  ", w, "TOPIC", "PARTITIONS", "RF",
                  "MIN.ISR", "CLEANUP", "RETENTION");
    if (sz)
        pb_buf_printf(b, "%-12s  %-10s  %-10s  %-24s  ", "RECORDS/DAY", "REC.BYTES", "BYTES/DAY",
                      "AT RETENTION");
    pb_buf_puts(b, "NAME\n");
    for (size_t i = 0; i < n; i++) {
        const es_topic_spec_t *s = &specs[i];
        char parts[48];
        snprintf(parts, sizeof parts, "%d (%s)", s->partitions, rule(s));
        pb_buf_printf(b, "%-*s  %-27s  %-2d  %-7d  %-7s  ", w, s->name, parts,
                      s->replication_factor, s->min_insync_replicas, s->cleanup_policy);
        put_retention(b, s->retention_ms, 9);
        pb_buf_puts(b, "  ");
        if (sz)
            put_size_cells(b, &sz[i]);
        if (s->collides_with >= 0)
            pb_buf_printf(b, "warning: collides with %s ('.' and '_' alike)\n",
                          specs[s->collides_with].name);
        else
            pb_buf_puts(b, "ok\n");
    }
    pb_buf_printf(b,
                  "%d broker%s; partitions = max(ceil(events/s / per-partition events/s), "
                  "consumers, 1)\n",
                  brokers, brokers == 1 ? "" : "s");
    if (sz)
        pb_buf_printf(b, "storage: bytes times the replication factor; records/day %s\n",
                      sz[0].rate_source && !strcmp(sz[0].rate_source, "peak")
                          ? "from events/s at peak (an upper bound)"
                          : "as given or measured");
}

static void json_size(pb_buf *b, const char *key, double v) {
    if (v < 0)
        pb_buf_printf(b, ", \"%s\": null", key);
    else
        pb_buf_printf(b, ", \"%s\": %.0f", key, v);
}

static void size_json(pb_buf *b, const topic_sizing *r) {
    static const char *const kinds[] = {"retained", "forever", "compacted"};
    if (!r->sized) {
        pb_buf_puts(b, ", \"storage\": null");
        return;
    }
    pb_buf_printf(b,
                  ", \"storage\": {\"kind\": \"%s\", \"rate_source\": \"%s\", "
                  "\"records_measured\": %lld, \"records_per_day\": %.15g, \"record_bytes\": "
                  "%.15g",
                  kinds[r->size.kind], r->rate_source, r->traffic.records,
                  r->traffic.records_per_day, r->traffic.record_bytes);
    json_size(b, "bytes_per_day", r->size.bytes_per_day);
    json_size(b, "bytes_retained", r->size.bytes_retained);
    json_size(b, "bytes_per_year", r->size.bytes_per_year);
    pb_buf_puts(b, "}");
}

static void plan_json(pb_buf *b, const es_topic_spec_t *specs, const topic_sizing *sz, size_t n) {
    pb_buf_puts(b, n ? "[\n" : "[");
    for (size_t i = 0; i < n; i++) {
        const es_topic_spec_t *s = &specs[i];
        const char *r = rule(s);
        pb_buf_puts(b, "  {\"topic\": ");
        pb_buf_json_string(b, s->name, strlen(s->name));
        pb_buf_puts(b, ", \"aggregate_type\": ");
        pb_buf_json_string(b, s->aggregate_type, strlen(s->aggregate_type));
        pb_buf_printf(b, ", \"role\": \"%s\", \"partitions\": %d, \"rule\": ",
                      es_topic_role_name(s->role), s->partitions);
        pb_buf_json_string(b, r, strlen(r));
        pb_buf_printf(b,
                      ", \"replication_factor\": %d, \"min_insync_replicas\": %d, "
                      "\"cleanup_policy\": \"%s\", \"retention_ms\": %lld, \"events_per_s\": "
                      "%lld, \"consumers\": %lld, \"collides_with\": ",
                      s->replication_factor, s->min_insync_replicas, s->cleanup_policy,
                      s->retention_ms, s->events_per_s, s->consumers);
        if (s->collides_with >= 0)
            pb_buf_json_string(b, specs[s->collides_with].name,
                               strlen(specs[s->collides_with].name));
        else
            pb_buf_puts(b, "null");
        if (sz)
            size_json(b, &sz[i]);
        pb_buf_printf(b, "}%s\n", i + 1 < n ? "," : "");
    }
    pb_buf_puts(b, "]\n");
}

static int run_plan(const options *o, const sizing_opts *z, topics_run *t) {
    es_topic_spec_t *specs = NULL;
    topic_sizing *sz = NULL;
    size_t n = 0;
    int brokers = t->brokers ? t->brokers : es_topics_broker_count(t->cfg);
    t->brokers = brokers;
    int rc = make_plan(t, &specs, &n);
    if (rc != EXIT_OK)
        return rc;
    if (z->on) {
        sz = calloc(n ? n : 1, sizeof *sz);
        rc = sz ? size_plan(t, z, specs, n, sz) : EXIT_FAIL;
        if (!sz)
            say("out of memory");
    }
    if (rc == EXIT_OK) {
        pb_buf b;
        pb_buf_init(&b);
        if (o->json)
            plan_json(&b, specs, sz, n);
        else
            plan_text(&b, specs, sz, n, brokers);
        rc = write_out(&b) ? EXIT_OK : EXIT_FAIL;
        pb_buf_free(&b);
    }
    free(sz);
    es_topics_free(specs);
    return rc;
}

static void report_line(const es_topic_spec_t *spec, es_topic_status status, const char *detail,
                        void *opaque) {
    (void)opaque;
    static const char *const words[] = {"ok", "created", "drift", "failed"};
    printf("%-7s %s", words[status], spec->name);
    if (status == ES_TOPIC_CREATED)
        printf(" (%d partitions, replication factor %d)", spec->partitions,
               spec->replication_factor);
    if (*detail)
        printf(": %s", detail);
    putchar('\n');
}

static int run_apply(topics_run *t) {
    es_topic_spec_t *specs = NULL;
    size_t n = 0;
    es_error_t err = {0};
    int rc = make_plan(t, &specs, &n);
    if (rc != EXIT_OK)
        return rc;
    es_err e = es_topics_apply(t->cfg, specs, n, report_line, NULL, &err);
    if (fflush(stdout) != 0) {
        say("writing the output failed");
        rc = EXIT_FAIL;
    }
    if (e != ES_OK) {
        say("%s", err.message);
        rc = EXIT_FAIL;
    }
    es_topics_free(specs);
    return rc;
}

int cmd_topics(const options *o) {
    if (o->n_pos == 0) {
        say("missing subcommand: plan or apply; run 'esctl topics --help'");
        return EXIT_USAGE;
    }
    bool apply = strcmp(o->pos[0], "apply") == 0;
    if (!apply && strcmp(o->pos[0], "plan") != 0)
        return usage_error(o, "unknown subcommand (plan or apply)", o->pos[0]);
    if (apply && o->json) {
        say("option '--json' does not apply to 'topics apply'; run 'esctl topics --help'");
        return EXIT_USAGE;
    }
    sizing_opts z;
    int rc = parse_sizing(o, apply, &z);
    if (rc != EXIT_OK)
        return rc;
    topics_run t = {0};
    rc = prepare(o, apply, &t);
    if (rc == EXIT_OK)
        rc = apply ? run_apply(&t) : run_plan(o, &z, &t);
    release(&t);
    return rc;
}
