/*
 * esctl trace: the causal tree of one business transaction, from the log alone. The records of
 * one trace (docs/observability.md, "Traces") are the events whose traceparent names its trace
 * id and the saga transitions ("<saga>.saga.events", eskit.v1.SagaTransition) that do, and on
 * Kafka the command envelopes and replies that do. The tree: a command's events (by command_id),
 * the transitions handling an event or a command's outcome (their parent span is its span; by
 * event_id for records without spans), the commands a transition sent (by command_id), their
 * events, and so on.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "eskit/v1/command.pb-c.h"
#include "eskit/v1/reply.pb-c.h"
#include "eskit/v1/saga.pb-c.h"
#include "esctl.h"

#define KAFKA_TIMEOUT_MS 30000

const char trace_help[] =
    "usage: esctl trace <id> [--json]\n"
    "\n"
    "Prints the causal tree of one business transaction: each command (type when\n"
    "known, aggregate, id), its events (type, version, time), the saga transitions\n"
    "they caused, the commands those sent, and so on, indented as a tree. <id> is a\n"
    "trace id (32 hex digits, the one in a traceparent), a correlation id or a\n"
    "command id; the latter two name the trace of the first record carrying them.\n"
    "Records written without trace context are gathered by correlation id.\n"
    "\n"
    "It reads the log only: the event store (--db) or, with brokers set, every\n"
    "Kafka events topic, saga transitions (\"<saga>.saga.events\") included, and\n"
    "the commands and replies topics (a command's type and its reply's outcome).\n"
    "\n"
    "Options:\n"
    "  --json       one JSON object per line, in tree order, with its depth\n"
    "  --db FILE    the event store (default: db, eskit.db)\n"
    "  -h, --help   show this help\n"
    "\n"
    "Example: esctl --db orders.db trace 4bf92f3577b34da6a3ce929d0e0e4736\n"
    "Exits 1 when no record of the log matches <id>.\n";

#define SAGA_EVENT_TYPE "eskit.v1.SagaTransition"

typedef enum node_kind { N_COMMAND, N_EVENT, N_TRANSITION } node_kind;

/* One line of the tree. A command is made from its events and the transition that sent it. */
typedef struct node {
    node_kind kind;
    es_event_t *ev;                  /* N_EVENT, N_TRANSITION: the record */
    Eskit__V1__SagaTransition *t;    /* N_TRANSITION */
    Eskit__V1__CommandEnvelope *env; /* N_COMMAND read from a commands topic (Kafka) */
    const char *outcome;             /* N_COMMAND: its reply's, when one was read */
    char trace[ES_TRACE_ID_LEN + 1]; /* "" without trace context */
    char span[ES_SPAN_ID_LEN + 1];
    char parent[ES_SPAN_ID_LEN + 1];
    const char *command_id; /* N_COMMAND: its id; N_EVENT: its command's */
    const char *command_type, *aggregate_type, *aggregate_id;
    int64_t at_us;
    long up; /* index of the parent node; -1: a root */
    int shown;
} node;

typedef struct story {
    const char *id;
    char trace[ES_TRACE_ID_LEN + 1]; /* what selects the records */
    char correlation[ES_MAX_ID_LEN + 1];
    int by_correlation; /* the first match had no trace context */
    int found;
    node *nodes;
    size_t n, cap;
    int oom;
    /* Kafka: the outcomes of the replies of the story's commands, by command id */
    char (*replied)[ES_MAX_ID_LEN + 1];
    const char **outcomes;
    size_t n_replies;
} story;

static int is_transition(const es_event_t *ev) {
    return !strcmp(ev->event_type, SAGA_EVENT_TYPE);
}

/* The span a record's metadata names as its own, and its parent. */
static void trace_of_metadata(const es_kv_t *md, size_t n_md, node *n) {
    es_traceparent_t tp;
    if (es_trace_from_metadata(md, n_md, &tp, NULL) != ES_OK)
        return;
    snprintf(n->trace, sizeof n->trace, "%s", tp.trace_id);
    snprintf(n->span, sizeof n->span, "%s", tp.span_id);
    for (size_t i = 0; i < n_md; i++)
        if (!strcmp(md[i].key, ES_PARENT_SPAN_KEY))
            snprintf(n->parent, sizeof n->parent, "%s", md[i].value);
}

/* The record's trace context: an event's metadata, a transition's fields. */
static void trace_of(const es_event_t *ev, const Eskit__V1__SagaTransition *t, node *n) {
    es_traceparent_t tp;
    if (t) {
        if (es_traceparent_parse(t->traceparent, &tp, NULL) == ES_OK) {
            snprintf(n->trace, sizeof n->trace, "%s", tp.trace_id);
            snprintf(n->span, sizeof n->span, "%s", tp.span_id);
            snprintf(n->parent, sizeof n->parent, "%s", t->parent_span ? t->parent_span : "");
        }
        return;
    }
    trace_of_metadata(ev->metadata, ev->n_metadata, n);
}

static Eskit__V1__SagaTransition *decode_transition(const es_event_t *ev) {
    return is_transition(ev)
               ? eskit__v1__saga_transition__unpack(NULL, ev->payload_len, ev->payload)
               : NULL;
}

static int matches_id(const story *s, const es_event_t *ev, const Eskit__V1__SagaTransition *t) {
    if (ev->correlation_id && !strcmp(ev->correlation_id, s->id))
        return 1;
    if (ev->command_id && !strcmp(ev->command_id, s->id))
        return 1;
    return t && t->command_id && !strcmp(t->command_id, s->id);
}

/* First pass: the trace (or, without trace context, the correlation) the id names. */
static int find_cb(const es_event_t *ev, void *opaque) {
    story *s = opaque;
    Eskit__V1__SagaTransition *t = decode_transition(ev);
    if (matches_id(s, ev, t)) {
        node n = {0};
        trace_of(ev, t, &n);
        s->found = 1;
        if (*n.trace) {
            snprintf(s->trace, sizeof s->trace, "%s", n.trace);
        } else {
            s->by_correlation = 1;
            snprintf(s->correlation, sizeof s->correlation, "%s",
                     ev->correlation_id && *ev->correlation_id ? ev->correlation_id : s->id);
        }
    }
    if (t)
        eskit__v1__saga_transition__free_unpacked(t, NULL);
    return s->found;
}

static node *add_node(story *s) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        node *grown = realloc(s->nodes, cap * sizeof *grown);
        if (!grown) {
            s->oom = 1;
            return NULL;
        }
        s->nodes = grown;
        s->cap = cap;
    }
    node *n = &s->nodes[s->n++];
    memset(n, 0, sizeof *n);
    n->up = -1;
    return n;
}

/* Second pass: the records of the story. */
static int collect_cb(const es_event_t *ev, void *opaque) {
    story *s = opaque;
    Eskit__V1__SagaTransition *t = decode_transition(ev);
    node probe = {0};
    trace_of(ev, t, &probe);
    int in = s->by_correlation ? ev->correlation_id && !strcmp(ev->correlation_id, s->correlation)
                               : !strcmp(probe.trace, s->trace);
    node *n = in ? add_node(s) : NULL;
    if (!n) {
        if (t)
            eskit__v1__saga_transition__free_unpacked(t, NULL);
        return s->oom;
    }
    *n = probe;
    n->up = -1;
    n->kind = t ? N_TRANSITION : N_EVENT;
    n->ev = es_event_dup(ev);
    n->t = t;
    if (!n->ev) {
        s->oom = 1;
        return 1;
    }
    n->at_us = t ? t->at_us : ev->occurred_at_us;
    n->command_id = t ? t->command_id : n->ev->command_id;
    n->aggregate_type = t ? t->aggregate_type : n->ev->aggregate_type;
    n->aggregate_id = t ? t->aggregate_id : n->ev->aggregate_id;
    return 0;
}

static int sends(const node *n) {
    return n->kind == N_TRANSITION && n->t->command_id && *n->t->command_id &&
           strstr(n->t->kind, "_sent");
}

static long find_command(const story *s, const char *cid) {
    for (size_t i = 0; i < s->n; i++)
        if (s->nodes[i].kind == N_COMMAND && !strcmp(s->nodes[i].command_id, cid))
            return (long)i;
    return -1;
}

/* The command nodes: one per command id of an event or a transition that sent one. */
static void make_commands(story *s) {
    size_t records = s->n;
    for (size_t i = 0; i < records && !s->oom; i++) {
        node r = s->nodes[i]; /* add_node may move the array */
        int from_event = r.kind == N_EVENT && r.command_id && *r.command_id;
        if (!from_event && !sends(&r))
            continue;
        long k = find_command(s, r.command_id);
        node *c = k >= 0 ? &s->nodes[k] : add_node(s);
        if (!c)
            return;
        if (k < 0) {
            c->kind = N_COMMAND;
            c->command_id = r.command_id;
            c->aggregate_type = r.aggregate_type;
            c->aggregate_id = r.aggregate_id;
            c->at_us = r.at_us;
        }
        if (from_event && !*c->span)
            snprintf(c->span, sizeof c->span, "%s", r.parent); /* its events' parent */
        if (!from_event && !c->command_type)
            c->command_type = r.t->command_type;
        if (r.at_us < c->at_us)
            c->at_us = r.at_us;
    }
}

/* What a transition handled: the record (an event, or a command whose outcome it records) whose
 * span is its parent; by event_id for transitions without spans. */
static long find_handled(const story *s, const node *t) {
    for (size_t i = 0; i < s->n; i++) {
        const node *e = &s->nodes[i];
        if (*t->parent
                ? e->kind != N_TRANSITION && !strcmp(e->span, t->parent)
                : e->kind == N_EVENT && t->t->event_id && !strcmp(e->ev->event_id, t->t->event_id))
            return (long)i;
    }
    return -1;
}

/* The command's sender: the transition that sent it (the latest before its events). */
static long find_sender(const story *s, const node *c) {
    for (size_t i = 0; i < s->n; i++)
        if (sends(&s->nodes[i]) && !strcmp(s->nodes[i].t->command_id, c->command_id))
            return (long)i;
    return -1;
}

static void link(story *s) {
    for (size_t i = 0; i < s->n; i++) {
        node *n = &s->nodes[i];
        if (n->kind == N_EVENT && n->command_id && *n->command_id)
            n->up = find_command(s, n->command_id);
        else if (n->kind == N_TRANSITION)
            n->up = find_handled(s, n);
        else if (n->kind == N_COMMAND && (n->up = find_sender(s, n)) >= 0 && !*n->parent)
            /* embedded: no command record; its caller is the handling that sent it */
            snprintf(n->parent, sizeof n->parent, "%s", s->nodes[n->up].span);
    }
}

static int by_time(const void *a, const void *b) {
    const node *x = *(node *const *)a, *y = *(node *const *)b;
    if (x->at_us != y->at_us)
        return x->at_us < y->at_us ? -1 : 1;
    if (x->kind == N_EVENT && y->kind == N_EVENT && x->ev->version != y->ev->version)
        return x->ev->version < y->ev->version ? -1 : 1;
    if (x->kind == N_TRANSITION && y->kind == N_TRANSITION && x->ev->version != y->ev->version)
        return x->ev->version < y->ev->version ? -1 : 1;
    return x->kind == N_COMMAND ? -1 : y->kind == N_COMMAND ? 1 : 0;
}

static const char *or_dash(const char *s) {
    return s && *s ? s : "-";
}

/* type/id, cleaned for a terminal. */
static void put_aggregate(pb_buf *b, const char *type, const char *id) {
    put_clean(b, type, 0);
    pb_buf_putc(b, '/');
    put_clean(b, id, 0);
}

static void text_line(pb_buf *b, const node *n, int depth) {
    put_time(b, n->at_us);
    pb_buf_printf(b, "  %*s", depth * 2, "");
    switch (n->kind) {
    case N_COMMAND:
        pb_buf_puts(b, "command ");
        put_clean(b, or_dash(n->command_type), 0);
        pb_buf_putc(b, ' ');
        put_aggregate(b, n->aggregate_type, n->aggregate_id);
        pb_buf_puts(b, " id=");
        put_clean(b, n->command_id, 0);
        if (n->outcome)
            pb_buf_printf(b, " %s", n->outcome);
        break;
    case N_EVENT:
        pb_buf_puts(b, "event ");
        put_clean(b, n->ev->event_type, 0);
        pb_buf_puts(b, " ");
        put_aggregate(b, n->ev->aggregate_type, n->ev->aggregate_id);
        pb_buf_printf(b, " v%" PRIu64, n->ev->version);
        break;
    case N_TRANSITION:
        pb_buf_puts(b, "saga ");
        put_clean(b, n->t->saga, 0);
        pb_buf_putc(b, ' ');
        put_clean(b, n->t->instance_id, 0);
        pb_buf_putc(b, ' ');
        put_clean(b, n->t->kind, 0);
        if (n->t->step && *n->t->step) {
            pb_buf_puts(b, " step=");
            put_clean(b, n->t->step, 0);
        }
        if (n->t->reason && *n->t->reason) {
            pb_buf_puts(b, " reason=");
            put_clean(b, n->t->reason, 0);
        }
        break;
    }
    if (*n->span) {
        pb_buf_puts(b, " span=");
        pb_buf_puts(b, n->span);
    }
    pb_buf_putc(b, '\n');
}

static void json_line(pb_buf *b, const node *n, int depth) {
    static const char *const kinds[] = {"command", "event", "transition"};
    pb_buf_printf(b, "{\"depth\": %d, \"kind\": \"%s\", ", depth, kinds[n->kind]);
    json_time(b, "at", n->at_us);
    pb_buf_puts(b, ", ");
    json_opt(b, "span", n->span);
    pb_buf_puts(b, ", ");
    json_opt(b, "parent_span", n->parent);
    pb_buf_puts(b, ", ");
    json_opt(b, "command_id", n->command_id ? n->command_id : "");
    pb_buf_puts(b, ", ");
    json_opt(b, "aggregate_type", n->aggregate_type ? n->aggregate_type : "");
    pb_buf_puts(b, ", ");
    json_opt(b, "aggregate_id", n->aggregate_id ? n->aggregate_id : "");
    if (n->kind == N_COMMAND) {
        pb_buf_puts(b, ", ");
        json_opt(b, "command_type", n->command_type ? n->command_type : "");
        pb_buf_puts(b, ", ");
        json_opt(b, "outcome", n->outcome ? n->outcome : "");
    } else if (n->kind == N_EVENT) {
        pb_buf_puts(b, ", ");
        json_str(b, "event_id", n->ev->event_id);
        pb_buf_puts(b, ", ");
        json_str(b, "event_type", n->ev->event_type);
        pb_buf_printf(b, ", \"version\": %" PRIu64, n->ev->version);
    } else {
        pb_buf_puts(b, ", ");
        json_str(b, "saga", n->t->saga);
        pb_buf_puts(b, ", ");
        json_str(b, "instance_id", n->t->instance_id);
        pb_buf_puts(b, ", ");
        json_str(b, "transition", n->t->kind);
        pb_buf_puts(b, ", ");
        json_opt(b, "step", n->t->step);
        pb_buf_puts(b, ", ");
        json_opt(b, "reason", n->t->reason);
    }
    pb_buf_puts(b, "}\n");
}

/* Prints n's children (up == parent), oldest first, under it. */
static void print_children(story *s, long parent, int depth, bool json, pb_buf *b) {
    node **kids = malloc((s->n ? s->n : 1) * sizeof *kids);
    size_t k = 0;
    if (!kids) {
        s->oom = 1;
        return;
    }
    for (size_t i = 0; i < s->n; i++)
        if (s->nodes[i].up == parent && !s->nodes[i].shown)
            kids[k++] = &s->nodes[i];
    qsort(kids, k, sizeof *kids, by_time);
    for (size_t i = 0; i < k; i++) {
        if (kids[i]->shown) /* a cycle in bad data: each record once */
            continue;
        kids[i]->shown = 1;
        if (json)
            json_line(b, kids[i], depth);
        else
            text_line(b, kids[i], depth);
        print_children(s, (long)(kids[i] - s->nodes), depth + 1, json, b);
    }
    free(kids);
}

/* ---- Kafka: the commands and replies topics, which the event store does not read ---------- */

static void kafka_prop(const char *key, const char *value, void *opaque) {
    char errstr[256];
    if (!strncmp(key, "kafka.", 6))
        rd_kafka_conf_set(opaque, key + 6, value, errstr, sizeof errstr); /* checked when set */
}

static const char *outcome_name(Eskit__V1__Outcome o) {
    switch (o) {
    case ESKIT__V1__OUTCOME__OUTCOME_ACCEPTED:
        return "accepted";
    case ESKIT__V1__OUTCOME__OUTCOME_REJECTED:
        return "rejected";
    case ESKIT__V1__OUTCOME__OUTCOME_CONFLICT:
        return "conflict";
    default:
        return "error";
    }
}

static int in_story(const story *s, const char *trace, const char *correlation) {
    return s->by_correlation ? correlation && !strcmp(correlation, s->correlation)
                             : trace && !strcmp(trace, s->trace);
}

static void add_command(story *s, const rd_kafka_message_t *m) {
    Eskit__V1__CommandEnvelope *env = eskit__v1__command_envelope__unpack(NULL, m->len, m->payload);
    if (!env)
        return;
    es_kv_t md[ES_MAX_METADATA + 3];
    size_t n = 0;
    for (size_t i = 0; i < env->n_metadata && n < sizeof md / sizeof md[0]; i++)
        md[n++] = (es_kv_t){env->metadata[i]->key, env->metadata[i]->value};
    node probe = {0};
    trace_of_metadata(md, n, &probe);
    node *c = in_story(s, probe.trace, env->correlation_id) && find_command(s, env->command_id) < 0
                  ? add_node(s)
                  : NULL;
    if (!c) { /* not of the story, or sent again (a retry): the first one stands */
        eskit__v1__command_envelope__free_unpacked(env, NULL);
        return;
    }
    *c = probe;
    c->up = -1;
    c->kind = N_COMMAND;
    c->env = env;
    c->command_id = env->command_id;
    c->command_type = env->command_type;
    c->aggregate_type = env->aggregate_type;
    c->aggregate_id = env->aggregate_id;
    c->at_us = rd_kafka_message_timestamp(m, NULL) * 1000;
}

static void add_reply(story *s, const rd_kafka_message_t *m) {
    Eskit__V1__CommandReply *r = eskit__v1__command_reply__unpack(NULL, m->len, m->payload);
    es_traceparent_t tp;
    if (!r)
        return;
    int traced = es_traceparent_parse(r->traceparent, &tp, NULL) == ES_OK;
    if ((s->by_correlation || (traced && in_story(s, tp.trace_id, NULL))) && r->command_id) {
        void *ids = realloc(s->replied, (s->n_replies + 1) * sizeof *s->replied);
        void *outs = ids ? realloc(s->outcomes, (s->n_replies + 1) * sizeof *s->outcomes) : NULL;
        if (ids)
            s->replied = ids;
        if (outs)
            s->outcomes = outs;
        if (ids && outs) {
            snprintf(s->replied[s->n_replies], sizeof s->replied[0], "%s", r->command_id);
            s->outcomes[s->n_replies++] = outcome_name(r->outcome);
        } else {
            s->oom = 1;
        }
    }
    eskit__v1__command_reply__free_unpacked(r, NULL);
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && !strcmp(s + n - k, suffix);
}

/* Every partition of every commands and replies topic, from its start to its end. */
static int read_kafka_commands(const es_config_t *cfg, story *s) {
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    es_config_foreach(cfg, kafka_prop, conf);
    if (rd_kafka_conf_set(conf, "bootstrap.servers", es_config_get(cfg, "brokers"), errstr,
                          sizeof errstr) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "group.id", "esctl.trace", errstr, sizeof errstr) ||
        rd_kafka_conf_set(conf, "enable.partition.eof", "true", errstr, sizeof errstr) ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof errstr)) {
        rd_kafka_conf_destroy(conf);
        say("configuring the Kafka client: %s", errstr);
        return EXIT_FAIL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!rk) {
        say("creating a Kafka consumer: %s", errstr);
        return EXIT_FAIL;
    }
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t ke = rd_kafka_metadata(rk, 1, NULL, &md, KAFKA_TIMEOUT_MS);
    if (ke) {
        say("reading the cluster's topics from %s: %s", es_config_get(cfg, "brokers"),
            rd_kafka_err2str(ke));
        rd_kafka_destroy(rk);
        return EXIT_FAIL;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
    for (int i = 0; i < md->topic_cnt; i++)
        if (ends_with(md->topics[i].topic, ".commands") ||
            ends_with(md->topics[i].topic, ".replies"))
            for (int p = 0; p < md->topics[i].partition_cnt; p++)
                rd_kafka_topic_partition_list_add(l, md->topics[i].topic, p)->offset =
                    RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_metadata_destroy(md);
    int left = l->cnt, rc = EXIT_OK;
    if (left > 0 && (ke = rd_kafka_assign(rk, l)) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        say("reading the commands and replies topics: %s", rd_kafka_err2str(ke));
        rc = EXIT_FAIL;
        left = 0;
    }
    rd_kafka_topic_partition_list_destroy(l);
    int64_t deadline = es_now_us() + (int64_t)KAFKA_TIMEOUT_MS * 1000;
    while (left > 0 && es_now_us() < deadline && !s->oom) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
            left--;
        else if (!m->err && ends_with(rd_kafka_topic_name(m->rkt), ".commands"))
            add_command(s, m);
        else if (!m->err)
            add_reply(s, m);
        rd_kafka_message_destroy(m);
    }
    if (rc == EXIT_OK && left > 0) {
        say("the commands and replies topics were not read to their end in %d s",
            KAFKA_TIMEOUT_MS / 1000);
        rc = EXIT_FAIL;
    }
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    return rc;
}

static void apply_replies(story *s) {
    for (size_t i = 0; i < s->n_replies; i++) {
        long k = find_command(s, s->replied[i]);
        if (k >= 0)
            s->nodes[k].outcome = s->outcomes[i];
    }
}

static void story_free(story *s) {
    for (size_t i = 0; i < s->n; i++) {
        es_event_free(s->nodes[i].ev);
        if (s->nodes[i].t)
            eskit__v1__saga_transition__free_unpacked(s->nodes[i].t, NULL);
        if (s->nodes[i].env)
            eskit__v1__command_envelope__free_unpacked(s->nodes[i].env, NULL);
    }
    free(s->nodes);
    free(s->replied);
    free(s->outcomes);
}

static int is_trace_id(const char *id) {
    if (strlen(id) != ES_TRACE_ID_LEN)
        return 0;
    for (const char *p = id; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    return 1;
}

static int read_story(es_store_t *store, story *s) {
    es_error_t err = {0};
    es_err rc = ES_OK;
    if (is_trace_id(s->id)) {
        snprintf(s->trace, sizeof s->trace, "%s", s->id);
    } else {
        rc = es_store_read_log(store, NULL, 0, 0, find_cb, s, NULL, &err);
        if (rc == ES_OK && !s->found) {
            say("no record in the log has trace id, correlation id or command id '%s'", s->id);
            return EXIT_FAIL;
        }
    }
    if (rc == ES_OK)
        rc = es_store_read_log(store, NULL, 0, 0, collect_cb, s, NULL, &err);
    if (rc != ES_OK) {
        say("%s", err.message);
        return EXIT_FAIL;
    }
    if (s->oom) {
        say("out of memory reading the story of '%s'", s->id);
        return EXIT_FAIL;
    }
    if (s->n == 0) {
        say("no record in the log has trace id '%s'", s->id);
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

static int run_trace(const options *o, const es_config_t *cfg, es_store_t *store) {
    story s = {.id = o->pos[0]};
    es_backend_info_t backend = {0};
    int rc = read_story(store, &s);
    if (rc == EXIT_OK && es_backend_info(cfg, &backend, NULL) == ES_OK && !backend.local_file)
        rc = read_kafka_commands(cfg, &s);
    if (rc == EXIT_OK) {
        make_commands(&s);
        apply_replies(&s);
        link(&s);
        pb_buf b;
        pb_buf_init(&b);
        if (!o->json)
            pb_buf_printf(&b, "%s %s\n", s.by_correlation ? "correlation" : "trace",
                          s.by_correlation ? s.correlation : s.trace);
        print_children(&s, -1, 0, o->json, &b);
        if (s.oom || b.oom) {
            say("out of memory printing the story of '%s'", s.id);
            rc = EXIT_FAIL;
        } else if (!write_out(&b)) {
            rc = EXIT_FAIL;
        }
        pb_buf_free(&b);
    }
    story_free(&s);
    return rc;
}

int cmd_trace(const options *o) {
    if (o->n_pos != 1) {
        say("trace takes one <id> (a trace id, correlation id or command id); run 'esctl trace "
            "--help'");
        return EXIT_USAGE;
    }
    es_config_t *cfg = NULL;
    es_store_t *store = NULL;
    int rc = load_config(o, &cfg);
    if (rc == EXIT_OK)
        rc = open_store(cfg, &store);
    if (rc == EXIT_OK)
        rc = run_trace(o, cfg, store);
    if (store)
        es_store_destroy(store);
    es_config_destroy(cfg);
    return rc;
}
