/*
 * esctl dlq: the dead-letter queue of the read model, where the runner parks
 * events a projector failed on. list and show read it; redrive applies
 * parked events of one projector again (after a fix to the module).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "esctl.h"

const char dlq_help[] =
    "usage: esctl dlq list [--projector P] [--all] [--json]\n"
    "       esctl dlq show <id> [--json]\n"
    "       esctl dlq redrive <projector> [<id>...]\n"
    "\n"
    "Events a projector failed on (after retries), and undecodable records, are\n"
    "parked in the dead-letter queue of the read model while the projector goes on.\n"
    "\n"
    "  list      parked events, oldest first: id, projector, position\n"
    "            (topic[partition]@offset), key, event type, attempts, time, error\n"
    "  show      every field of one entry, and its record decoded as an event\n"
    "            envelope with its payload (a hex dump when it does not decode)\n"
    "  redrive   applies the parked events of <projector> again (all of them, or\n"
    "            the ids given), each in its own transaction; those that fail again\n"
    "            stay parked with the new error. <projector> is a module name or\n"
    "            the path of its .so. Prints how many were applied and failed.\n"
    "\n"
    "Options:\n"
    "  --projector P     list only the entries of projector P\n"
    "  --all             list redriven entries too\n"
    "  --json            list: a JSON array of objects; show: one JSON object\n"
    "  --readmodel FILE  the read model (default: readmodel.db, eskit-read.db)\n"
    "  -h, --help        show this help\n"
    "\n"
    "Example: esctl dlq list --projector order_summary; esctl dlq redrive order_summary\n"
    "Exits 1 when an entry does not exist or a redriven event failed again.\n";

/* What esctl accepts as a projector name: what es_projector_check accepts. */
static bool projector_name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
            return false;
    return true;
}

static int parse_id(const options *o, const char *s, int64_t *id) {
    uint64_t v = 0;
    if (parse_u64(s, &v) != 0 || v == 0 || v > INT64_MAX) {
        say("'%s' is not a DLQ entry id (a whole number from 1, as 'esctl dlq list' shows); run "
            "'esctl %s --help'",
            s, o->verb);
        return EXIT_USAGE;
    }
    *id = (int64_t)v;
    return EXIT_OK;
}

/* Rejects options that belong to another dlq subcommand. */
static int only_for(const options *o, const char *sub, bool list, bool json) {
    const char *bad = !list && o->projector ? "--projector"
                      : !list && o->all     ? "--all"
                      : !json && o->json    ? "--json"
                                            : NULL;
    if (bad) {
        say("option '%s' does not apply to 'dlq %s'; run 'esctl dlq --help'", bad, sub);
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

static int position_len(const es_dlq_entry_t *e) {
    return clean_width(e->topic) +
           snprintf(NULL, 0, "[%" PRId32 "]@%" PRId64, e->partition, e->offset);
}

static const char *event_type_or(const es_dlq_entry_t *e, const char *none) {
    return e->event_type[0] ? e->event_type : none;
}

typedef struct list_widths {
    int id, projector, position, key, type, attempts;
} list_widths;

static int max_int(int a, int b) {
    return a > b ? a : b;
}

static list_widths measure_list(const es_dlq_entry_t *es, size_t n) {
    list_widths w = {2, 9, 8, 3, 10, 8}; /* the headers */
    for (size_t i = 0; i < n; i++) {
        const es_dlq_entry_t *e = &es[i];
        w.id = max_int(w.id, snprintf(NULL, 0, "%" PRId64, e->id));
        w.projector = max_int(w.projector, clean_width(e->projector));
        w.position = max_int(w.position, position_len(e));
        w.key = max_int(w.key, clean_width(e->key));
        w.type = max_int(w.type, clean_width(event_type_or(e, "-")));
        w.attempts = max_int(w.attempts, snprintf(NULL, 0, "%d", e->attempts));
    }
    return w;
}

/* Times are all 24 characters wide (put_time), so only the other columns are measured. */
static void list_text(pb_buf *b, const es_dlq_entry_t *es, size_t n, bool all) {
    list_widths w = measure_list(es, n);
    pb_buf_printf(b, "%*s  %-*s  %-*s  %-*s  %-*s  %*s  %-24s  ", w.id, "ID", w.projector,
                  "PROJECTOR", w.position, "POSITION", w.key, "KEY", w.type, "EVENT TYPE",
                  w.attempts, "ATTEMPTS", "PARKED AT");
    if (all)
        pb_buf_printf(b, "%-24s  ", "REDRIVEN AT");
    pb_buf_puts(b, "ERROR\n");
    for (size_t i = 0; i < n; i++) {
        const es_dlq_entry_t *e = &es[i];
        pb_buf_printf(b, "%*" PRId64 "  ", w.id, e->id);
        put_clean(b, e->projector, w.projector);
        pb_buf_puts(b, "  ");
        size_t at = b->len;
        put_position(b, e);
        put_clean(b, "", w.position - (int)(b->len - at));
        pb_buf_puts(b, "  ");
        put_clean(b, e->key, w.key);
        pb_buf_puts(b, "  ");
        put_clean(b, event_type_or(e, "-"), w.type);
        pb_buf_printf(b, "  %*d  ", w.attempts, e->attempts);
        put_time(b, e->parked_at_us);
        pb_buf_puts(b, "  ");
        if (all) {
            at = b->len;
            put_time_or_dash(b, e->redriven_at_us, 0);
            put_clean(b, "", 24 - (int)(b->len - at));
            pb_buf_puts(b, "  ");
        }
        put_clean(b, e->error, 0);
        pb_buf_putc(b, '\n');
    }
}

/* The entry's fields as JSON members, without braces. */
/* item is a es_dlq_entry_t (json_objects hands items untyped). */
static void entry_json(pb_buf *b, const void *item) {
    const es_dlq_entry_t *e = item;
    pb_buf_printf(b, "\"id\": %" PRId64 ", ", e->id);
    json_str(b, "projector", e->projector);
    pb_buf_puts(b, ", ");
    json_str(b, "topic", e->topic);
    pb_buf_printf(b, ", \"partition\": %" PRId32 ", \"offset\": %" PRId64 ", ", e->partition,
                  e->offset);
    json_str(b, "key", e->key);
    pb_buf_puts(b, ", \"event_type\": ");
    if (e->event_type[0])
        pb_buf_json_string(b, e->event_type, strlen(e->event_type));
    else
        pb_buf_puts(b, "null");
    pb_buf_puts(b, ", ");
    json_str(b, "code", es_strerror((es_err)e->code));
    pb_buf_puts(b, ", ");
    json_str(b, "error", e->error);
    pb_buf_printf(b, ", \"attempts\": %d, ", e->attempts);
    json_time(b, "parked_at", e->parked_at_us);
    pb_buf_puts(b, ", ");
    json_time(b, "redriven_at", e->redriven_at_us);
}

static int run_list(const options *o, const es_config_t *cfg) {
    es_dlq_entry_t *es = NULL;
    size_t n = 0;
    es_error_t err = {0};
    if (es_dlq_list(cfg, o->projector, o->all, &es, &n, &err) != ES_OK) {
        say("%s", err.message);
        return EXIT_FAIL;
    }
    pb_buf b;
    pb_buf_init(&b);
    if (o->json)
        json_objects(&b, es, n, sizeof *es, entry_json);
    else if (n)
        list_text(&b, es, n, o->all);
    else
        pb_buf_printf(&b, "no %sevents%s%s in the DLQ of %s\n", o->all ? "" : "parked ",
                      o->projector ? " of " : "", o->projector ? o->projector : "",
                      es_config_get(cfg, "readmodel.db"));
    int rc = write_out(&b) ? EXIT_OK : EXIT_FAIL;
    pb_buf_free(&b);
    free(es);
    return rc;
}

static int cmd_list(const options *o) {
    es_config_t *cfg = NULL;
    if (o->n_pos > 1)
        return usage_error(o, "unexpected argument", o->pos[1]);
    if (o->projector && !projector_name_ok(o->projector)) {
        say("--projector: '%s' is not a projector name (1 to 64 of a-z, 0-9, '_', '-'); run "
            "'esctl dlq --help'",
            o->projector);
        return EXIT_USAGE;
    }
    int rc = load_config(o, &cfg);
    if (rc == EXIT_OK)
        rc = check_readmodel_exists(cfg);
    if (rc == EXIT_OK)
        rc = run_list(o, cfg);
    es_config_destroy(cfg);
    return rc;
}

/* Classic 16-bytes-a-line dump: offset, hex, printable ASCII. */
static void hex_dump(pb_buf *b, const uint8_t *data, size_t len) {
    for (size_t at = 0; at < len; at += 16) {
        pb_buf_printf(b, "  %08zx ", at);
        for (size_t i = 0; i < 16; i++) {
            if (i == 8)
                pb_buf_putc(b, ' ');
            if (at + i < len)
                pb_buf_printf(b, " %02x", data[at + i]);
            else
                pb_buf_puts(b, "   ");
        }
        pb_buf_puts(b, "  |");
        for (size_t i = 0; i < 16 && at + i < len; i++) {
            uint8_t c = data[at + i];
            pb_buf_putc(b, c >= 0x20 && c < 0x7f ? (char)c : '.');
        }
        pb_buf_puts(b, "|\n");
    }
}

/* "name<blanks>value" with values in one column; nested (indented) fields under "record". */
static void label(pb_buf *b, bool nested, const char *name) {
    pb_buf_printf(b, "%s%-*s", nested ? "  " : "", nested ? 14 : 16, name);
}

static void field(pb_buf *b, bool nested, const char *name, const char *value) {
    label(b, nested, name);
    put_clean(b, value && *value ? value : "-", 0);
    pb_buf_putc(b, '\n');
}

static void event_text(pb_buf *b, const pb_registry *types, const es_event_t *ev) {
    field(b, true, "event id", ev->event_id);
    label(b, true, "aggregate");
    put_clean(b, ev->aggregate_type, 0);
    pb_buf_putc(b, '/');
    put_clean(b, ev->aggregate_id, 0);
    pb_buf_printf(b, " version %" PRIu64 "\n", ev->version);
    field(b, true, "event type", ev->event_type);
    label(b, true, "occurred at");
    put_time(b, ev->occurred_at_us);
    pb_buf_putc(b, '\n');
    field(b, true, "command id", ev->command_id);
    field(b, true, "correlation", ev->correlation_id);
    label(b, true, "metadata");
    for (size_t i = 0; i < ev->n_metadata; i++) {
        pb_buf_puts(b, i ? " " : "");
        put_clean(b, ev->metadata[i].key, 0);
        pb_buf_putc(b, '=');
        pb_buf_json_string(b, ev->metadata[i].value ? ev->metadata[i].value : "",
                           ev->metadata[i].value ? strlen(ev->metadata[i].value) : 0);
    }
    pb_buf_puts(b, ev->n_metadata ? "\n" : "-\n");
    label(b, true, "payload");
    size_t at = b->len;
    put_payload_text(b, types, ev);
    pb_buf_puts(b, b->len == at ? "{}\n" : "\n"); /* a message without fields set */
}

/* The record's bytes as an envelope, NULL (with err filled) when they are not one. */
static es_event_t *decode_record(const es_dlq_entry_t *e, es_error_t *err) {
    es_position_t at = {e->topic, e->key, e->partition, e->offset};
    es_event_t *ev = NULL;
    if (es_envelope_decode(e->value, e->value_len, &at, &ev, err) != ES_OK)
        return NULL;
    return ev;
}

static void show_text(pb_buf *b, const pb_registry *types, const es_dlq_entry_t *e) {
    pb_buf_printf(b, "%-16s%" PRId64 "\n", "id", e->id);
    field(b, false, "projector", e->projector);
    field(b, false, "topic", e->topic);
    pb_buf_printf(b, "%-16s%" PRId32 "\n%-16s%" PRId64 "\n", "partition", e->partition, "offset",
                  e->offset);
    field(b, false, "key", e->key);
    field(b, false, "event type", event_type_or(e, "- (the record could not be decoded)"));
    pb_buf_printf(b, "%-16s%s\n", "status", e->redriven_at_us ? "redriven" : "parked");
    pb_buf_printf(b, "%-16s", "parked at");
    put_time(b, e->parked_at_us);
    pb_buf_printf(b, "\n%-16s", "redriven at");
    put_time_or_dash(b, e->redriven_at_us, 0);
    pb_buf_printf(b, "\n%-16s%d\n%-16s%s: ", "attempts", e->attempts, "error",
                  es_strerror((es_err)e->code));
    put_clean(b, e->error, 0);
    es_error_t err = {0};
    es_event_t *ev = decode_record(e, &err);
    if (ev) {
        pb_buf_printf(b, "\n%-16s%zu bytes, an event envelope:\n", "record", e->value_len);
        event_text(b, types, ev);
        es_event_free(ev);
        return;
    }
    pb_buf_printf(b, "\n%-16s%zu bytes, not an event envelope (", "record", e->value_len);
    put_clean(b, err.message, 0);
    pb_buf_puts(b, "):\n");
    hex_dump(b, e->value, e->value_len);
}

static void show_json(pb_buf *b, const pb_registry *types, const es_dlq_entry_t *e) {
    pb_buf_putc(b, '{');
    entry_json(b, e);
    pb_buf_puts(b, ", \"record_base64\": \"");
    pb_buf_base64(b, e->value, e->value_len);
    pb_buf_putc(b, '"');
    es_error_t err = {0};
    es_event_t *ev = decode_record(e, &err);
    if (ev) {
        pb_buf_puts(b, ", \"event\": ");
        put_event_json(b, types, ev);
        es_event_free(ev);
    } else {
        pb_buf_puts(b, ", ");
        json_str(b, "decode_error", err.message);
    }
    pb_buf_puts(b, "}\n");
}

static int run_show(const options *o, const es_config_t *cfg, const pb_registry *types,
                    int64_t id) {
    es_dlq_entry_t *e = NULL;
    es_error_t err = {0};
    if (es_dlq_get(cfg, id, &e, &err) != ES_OK) {
        say("%s", err.message);
        return EXIT_FAIL;
    }
    pb_buf b;
    pb_buf_init(&b);
    if (o->json)
        show_json(&b, types, e);
    else
        show_text(&b, types, e);
    int rc = write_out(&b) ? EXIT_OK : EXIT_FAIL;
    pb_buf_free(&b);
    es_dlq_entry_free(e);
    return rc;
}

static int cmd_show(const options *o) {
    es_config_t *cfg = NULL;
    pb_registry *types = NULL;
    int64_t id = 0;
    if (o->n_pos < 2) {
        say("'dlq show' needs an entry <id>, as 'esctl dlq list' shows; run 'esctl dlq --help'");
        return EXIT_USAGE;
    }
    if (o->n_pos > 2)
        return usage_error(o, "unexpected argument", o->pos[2]);
    int rc = parse_id(o, o->pos[1], &id);
    if (rc == EXIT_OK)
        rc = load_config(o, &cfg);
    if (rc == EXIT_OK)
        rc = load_types(o, cfg, &types);
    if (rc == EXIT_OK)
        rc = check_readmodel_exists(cfg);
    if (rc == EXIT_OK)
        rc = run_show(o, cfg, types, id);
    if (rc == EXIT_OK)
        types_hint(types, NULL);
    es_config_destroy(cfg);
    pb_registry_destroy(types);
    return rc;
}

static int run_redrive(const es_config_t *cfg, const es_projector_def *def, const int64_t *ids,
                       size_t n_ids) {
    size_t applied = 0, failed = 0;
    es_error_t err = {0};
    if (es_dlq_redrive(cfg, def, ids, n_ids, &applied, &failed, &err) != ES_OK) {
        say("%s", err.message);
        return EXIT_FAIL;
    }
    printf("redrive %s: %zu applied, %zu failed\n", def->name, applied, failed);
    if (fflush(stdout) != 0) {
        say("writing the output failed");
        return EXIT_FAIL;
    }
    if (failed) {
        say("%zu of %zu redriven events of %s failed again and stay parked; see 'esctl dlq list "
            "--projector %s'",
            failed, applied + failed, def->name, def->name);
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

static int cmd_redrive(const options *o) {
    es_config_t *cfg = NULL;
    es_projector_module_t *mod = NULL;
    es_error_t err = {0};
    if (o->n_pos < 2) {
        say("'dlq redrive' needs a <projector>, a module name or a .so path; run 'esctl dlq "
            "--help'");
        return EXIT_USAGE;
    }
    size_t n_ids = o->n_pos - 2;
    int64_t *ids = calloc(n_ids ? n_ids : 1, sizeof(*ids));
    if (!ids) {
        say("out of memory");
        return EXIT_FAIL;
    }
    int rc = EXIT_OK;
    for (size_t i = 0; rc == EXIT_OK && i < n_ids; i++)
        rc = parse_id(o, o->pos[2 + i], &ids[i]);
    if (rc == EXIT_OK)
        rc = load_config(o, &cfg);
    if (rc == EXIT_OK && es_projector_load(cfg, o->pos[1], &mod, &err) != ES_OK) {
        say("%s", err.message);
        rc = EXIT_FAIL;
    }
    if (rc == EXIT_OK)
        rc = check_readmodel_exists(cfg);
    if (rc == EXIT_OK)
        rc = check_store_exists(cfg);
    if (rc == EXIT_OK)
        rc = run_redrive(cfg, es_projector_module_def(mod), ids, n_ids);
    es_projector_unload(mod);
    es_config_destroy(cfg);
    free(ids);
    return rc;
}

typedef struct dlq_sub {
    const char *name;
    bool list_opts, json; /* which of --projector/--all and --json it takes */
    int (*run)(const options *o);
} dlq_sub;

static const dlq_sub subs[] = {
    {"list", true, true, cmd_list},
    {"show", false, true, cmd_show},
    {"redrive", false, false, cmd_redrive},
};

int cmd_dlq(const options *o) {
    const char *sub = o->n_pos ? o->pos[0] : NULL;
    if (!sub) {
        say("'dlq' needs a subcommand: list, show or redrive; run 'esctl dlq --help'");
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        if (strcmp(sub, subs[i].name) != 0)
            continue;
        int rc = only_for(o, sub, subs[i].list_opts, subs[i].json);
        return rc != EXIT_OK ? rc : subs[i].run(o);
    }
    say("unknown subcommand 'dlq %s'; use list, show or redrive (run 'esctl dlq --help')", sub);
    return EXIT_USAGE;
}
