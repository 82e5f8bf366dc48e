/* esctl verify: a log checked end to end (es_store_verify), each problem printed with its place. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "esctl.h"

const char verify_help[] =
    "usage: esctl verify [TYPE...] [--json] [--accept-end] [--db FILE]\n"
    "\n"
    "Reads the whole log, writing nothing, and checks it end to end. Embedded\n"
    "backend: SQLite's integrity_check; positions strictly increasing; every\n"
    "envelope decodes and matches its row; per aggregate, versions 1..n with no\n"
    "gap or duplicate, each event linked to the one before (a Kafka processor's\n"
    "state store starts an aggregate restored from a snapshot past version 1: the\n"
    "snapshot must cover the versions before); the heads table agrees\n"
    "with the events; the end the head file (<db>-head) records is not past the\n"
    "log's end (events lost with a damaged -wal). Prints one line with the counts,\n"
    "then one line per problem, \"[check] place: what is wrong\", the place being\n"
    "the position, aggregate and version as far as they are known.\n"
    "\n"
    "Kafka backend (brokers set): reads the \"<TYPE>.events\" topics of the types\n"
    "given (default: topics.aggregates) from their start and checks that every\n"
    "record decodes and each aggregate's versions run 1..n in one partition. It\n"
    "cannot check more there: Kafka keeps no heads table and no head file, and\n"
    "records deleted by retention cannot be told from lost ones.\n"
    "\n"
    "Options:\n"
    "  --json         one JSON object: counts, recorded_end, and problems (an array)\n"
    "  --accept-end   embedded: first make the head file record the log's end as it\n"
    "                 is, accepting that events past it are gone (after restoring a\n"
    "                 backup), then verify\n"
    "  --db FILE      the event store (default: db in the config, eskit.db)\n"
    "  -h, --help     show this help\n"
    "\n"
    "Example: esctl --db orders.db verify; esctl --db orders.db verify --accept-end\n"
    "Exits 0 when the log is clean, 1 when a problem was found or it could not be read.\n";

#define MAX_SHOWN 1000 /* problems printed; the rest are counted */

typedef struct verify_ctx {
    const options *o;
    pb_buf out;
    size_t shown;
} verify_ctx;

/* "[check] <place>: <message>", the place as far as it is known: position (Kafka:
 * topic[partition]@offset), aggregate, version. */
static void problem_text(pb_buf *b, const es_verify_problem_t *p) {
    pb_buf_putc(b, '[');
    put_clean(b, p->check, 0);
    pb_buf_puts(b, "] ");
    size_t place = b->len;
    if (p->topic) {
        put_clean(b, p->topic, 0);
        pb_buf_printf(b, "[%" PRId32 "]@%" PRId64, p->partition, p->position);
    } else if (p->position >= 0) {
        pb_buf_printf(b, "position %" PRId64, p->position);
    }
    if (p->aggregate_type || p->aggregate_id) {
        pb_buf_puts(b, b->len > place ? " " : "");
        put_clean(b, p->aggregate_type ? p->aggregate_type : "?", 0);
        pb_buf_putc(b, '/');
        put_clean(b, p->aggregate_id ? p->aggregate_id : "?", 0);
    }
    if (p->version)
        pb_buf_printf(b, " version %" PRIu64, p->version);
    pb_buf_puts(b, b->len > place ? ": " : "");
    put_clean(b, p->message, 0);
    pb_buf_putc(b, '\n');
}

static void json_opt_str(pb_buf *b, const char *key, const char *value) {
    pb_buf_printf(b, ", \"%s\": ", key);
    if (value)
        pb_buf_json_string(b, value, strlen(value));
    else
        pb_buf_puts(b, "null");
}

static void problem_json(pb_buf *b, const es_verify_problem_t *p, bool first) {
    pb_buf_puts(b, first ? "\n  {" : ",\n  {");
    json_str(b, "check", p->check);
    json_opt_str(b, "topic", p->topic);
    pb_buf_printf(b, ", \"partition\": %" PRId32, p->partition);
    if (p->position >= 0)
        pb_buf_printf(b, ", \"position\": %" PRId64, p->position);
    else
        pb_buf_puts(b, ", \"position\": null");
    json_opt_str(b, "aggregate_type", p->aggregate_type);
    json_opt_str(b, "aggregate_id", p->aggregate_id);
    if (p->version)
        pb_buf_printf(b, ", \"version\": %" PRIu64, p->version);
    else
        pb_buf_puts(b, ", \"version\": null");
    json_opt_str(b, "message", p->message);
    pb_buf_putc(b, '}');
}

static void on_problem(const es_verify_problem_t *p, void *opaque) {
    verify_ctx *c = opaque;
    if (c->shown >= MAX_SHOWN)
        return;
    if (c->o->json)
        problem_json(&c->out, p, c->shown == 0);
    else
        problem_text(&c->out, p);
    c->shown++;
}

static void summary_text(pb_buf *b, const char *where, const es_verify_summary_t *s) {
    put_clean(b, where, 0);
    pb_buf_printf(b, ": %" PRIu64 " event%s", s->events, s->events == 1 ? "" : "s");
    if (s->last)
        pb_buf_printf(b, " at positions %" PRId64 "..%" PRId64, s->first, s->last);
    pb_buf_printf(b, ", %" PRIu64 " aggregate%s", s->streams, s->streams == 1 ? "" : "s");
    if (s->recorded_end >= 0)
        pb_buf_printf(b, ", head file at %" PRId64, s->recorded_end);
    pb_buf_putc(b, '\n');
}

static void summary_json(pb_buf *b, const char *where, const es_verify_summary_t *s) {
    pb_buf_puts(b, "{");
    json_str(b, "log", where);
    pb_buf_printf(b,
                  ", \"ok\": %s, \"events\": %" PRIu64 ", \"aggregates\": %" PRIu64
                  ", \"first\": %" PRId64 ", \"last\": %" PRId64 ", ",
                  s->problems ? "false" : "true", s->events, s->streams, s->first, s->last);
    if (s->recorded_end >= 0)
        pb_buf_printf(b, "\"recorded_end\": %" PRId64, s->recorded_end);
    else
        pb_buf_puts(b, "\"recorded_end\": null");
    pb_buf_printf(b, ", \"disturbed\": %s, \"problem_count\": %" PRIu64 ", \"problems\": [",
                  s->disturbed ? "true" : "false", s->problems);
}

static int accept_end(const es_config_t *cfg) {
    es_error_t err = {0};
    int64_t before = -1, after = 0;
    if (es_store_accept_end(cfg, &before, &after, &err) != ES_OK) {
        say("%s", err.message);
        return EXIT_FAIL;
    }
    pb_buf b;
    pb_buf_init(&b);
    put_clean(&b, es_config_get(cfg, "db"), 0);
    pb_buf_printf(&b, "-head now records position %" PRId64, after);
    if (before > after)
        pb_buf_printf(&b, "; events %" PRId64 "..%" PRId64 " are accepted as lost", after + 1,
                      before);
    pb_buf_putc(&b, '\n');
    int rc = write_out(&b) ? EXIT_OK : EXIT_FAIL;
    pb_buf_free(&b);
    return rc;
}

static int run_verify(const options *o, const es_config_t *cfg, bool kafka) {
    verify_ctx c = {.o = o};
    es_verify_summary_t sum;
    es_error_t err = {0};
    const char *where = kafka ? es_config_get(cfg, "brokers") : es_config_get(cfg, "db");
    pb_buf_init(&c.out);
    es_err rc = es_store_verify(cfg, o->n_pos ? o->pos : NULL, on_problem, &c, &sum, &err);
    if (rc != ES_OK) {
        pb_buf_free(&c.out);
        say("%s", err.message);
        return EXIT_FAIL;
    }
    pb_buf b;
    pb_buf_init(&b);
    if (o->json) {
        summary_json(&b, where, &sum);
        pb_buf_puts(&b, c.out.data ? c.out.data : "");
        pb_buf_puts(&b, c.shown ? "\n]}\n" : "]}\n");
    } else {
        summary_text(&b, where, &sum);
        pb_buf_puts(&b, c.out.data ? c.out.data : "");
        if (sum.problems > c.shown)
            pb_buf_printf(&b, "... and %" PRIu64 " more problems\n", sum.problems - c.shown);
        if (!sum.problems && !sum.disturbed)
            pb_buf_puts(&b, "ok\n");
    }
    pb_buf_free(&c.out);
    int exit = write_out(&b) ? EXIT_OK : EXIT_FAIL;
    pb_buf_free(&b);
    if (exit == EXIT_OK && sum.problems) {
        say("%s: %" PRIu64 " problem%s found%s; restore the log from a backup%s", where,
            sum.problems, sum.problems == 1 ? "" : "s",
            sum.disturbed ? " while a writer opened it (run verify again)" : "",
            kafka ? "" : " (or, for a lost end only, accept it with --accept-end)");
        exit = EXIT_FAIL;
    } else if (exit == EXIT_OK && sum.disturbed) {
        say("%s changed while it was read (a writer opened it meanwhile), so what was read may "
            "be incomplete; run verify again",
            where);
        exit = EXIT_FAIL;
    }
    return exit;
}

int cmd_verify(const options *o) {
    es_config_t *cfg = NULL;
    int rc = load_config(o, &cfg);
    es_backend_info_t backend = {0};
    es_error_t berr = {0};
    if (rc == EXIT_OK && es_backend_info(cfg, &backend, &berr) != ES_OK) {
        say("%s", berr.message);
        rc = EXIT_USAGE;
    }
    bool kafka = rc == EXIT_OK && backend.partitioned;
    if (rc == EXIT_OK && !kafka && o->n_pos)
        rc = usage_error(o, "unexpected argument (types are for the Kafka backend)", o->pos[0]);
    if (rc == EXIT_OK && kafka && o->accept_end) {
        say("--accept-end is for the embedded backend's head file; run 'esctl verify --help'");
        rc = EXIT_USAGE;
    }
    for (size_t i = 0; rc == EXIT_OK && i < o->n_pos; i++) {
        es_error_t err = {0};
        if (es_validate_aggregate_type(o->pos[i], &err) != ES_OK) {
            say("%s; run 'esctl verify --help'", err.message);
            rc = EXIT_USAGE;
        }
    }
    if (rc == EXIT_OK)
        rc = check_store_exists(cfg);
    if (rc == EXIT_OK && o->accept_end)
        rc = accept_end(cfg);
    if (rc == EXIT_OK)
        rc = run_verify(o, cfg, kafka);
    es_config_destroy(cfg);
    return rc;
}
