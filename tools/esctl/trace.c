/*
 * esctl trace: the causal tree of one business transaction, from the log alone. The records of
 * one trace (docs/observability.md, "Traces") are the events whose traceparent names its trace
 * id and the saga transitions ("<saga>.saga.events", eskit.v1.SagaTransition) that do. The
 * tree: a command's events (by command_id), the transitions handling an event (their parent
 * span is its span; by event_id for records without spans), the commands a transition sent (by
 * command_id), their events, and so on.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eskit/v1/saga.pb-c.h"
#include "esctl.h"

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
    "Kafka events topic, saga transitions (\"<saga>.saga.events\") included.\n"
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
} story;

static int is_transition(const es_event_t *ev) {
    return !strcmp(ev->event_type, SAGA_EVENT_TYPE);
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
    if (es_trace_from_metadata(ev->metadata, ev->n_metadata, &tp, NULL) != ES_OK)
        return;
    snprintf(n->trace, sizeof n->trace, "%s", tp.trace_id);
    snprintf(n->span, sizeof n->span, "%s", tp.span_id);
    for (size_t i = 0; i < ev->n_metadata; i++)
        if (!strcmp(ev->metadata[i].key, ES_PARENT_SPAN_KEY))
            snprintf(n->parent, sizeof n->parent, "%s", ev->metadata[i].value);
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

static long find_event(const story *s, const node *t) {
    for (size_t i = 0; i < s->n; i++) {
        const node *e = &s->nodes[i];
        if (e->kind != N_EVENT)
            continue;
        if (*t->parent ? !strcmp(e->span, t->parent)
                       : t->t->event_id && !strcmp(e->ev->event_id, t->t->event_id))
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
            n->up = find_event(s, n);
        else if (n->kind == N_COMMAND)
            n->up = find_sender(s, n);
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

static void text_line(pb_buf *b, const node *n, int depth) {
    put_time(b, n->at_us);
    pb_buf_printf(b, "  %*s", depth * 2, "");
    switch (n->kind) {
    case N_COMMAND:
        pb_buf_puts(b, "command ");
        put_clean(b, or_dash(n->command_type), 0);
        pb_buf_putc(b, ' ');
        put_clean(b, n->aggregate_type, 0);
        pb_buf_putc(b, '/');
        put_clean(b, n->aggregate_id, 0);
        pb_buf_puts(b, " id=");
        put_clean(b, n->command_id, 0);
        break;
    case N_EVENT:
        pb_buf_puts(b, "event ");
        put_clean(b, n->ev->event_type, 0);
        pb_buf_puts(b, " ");
        put_clean(b, n->ev->aggregate_type, 0);
        pb_buf_putc(b, '/');
        put_clean(b, n->ev->aggregate_id, 0);
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

static void story_free(story *s) {
    for (size_t i = 0; i < s->n; i++) {
        es_event_free(s->nodes[i].ev);
        if (s->nodes[i].t)
            eskit__v1__saga_transition__free_unpacked(s->nodes[i].t, NULL);
    }
    free(s->nodes);
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

static int run_trace(const options *o, es_store_t *store) {
    story s = {.id = o->pos[0]};
    int rc = read_story(store, &s);
    if (rc == EXIT_OK) {
        make_commands(&s);
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
        rc = run_trace(o, store);
    if (store)
        es_store_destroy(store);
    es_config_destroy(cfg);
    return rc;
}
