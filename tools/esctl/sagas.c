/*
 * esctl sagas: the saga instances the coordinator keeps in its database
 * (saga.db), and the history of one instance, read from the transitions the
 * coordinator appends to "<saga>.saga.events" (on either backend).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <eskit/saga.h>

#include "esctl.h"

const char sagas_help[] =
    "usage: esctl sagas list [--saga NAME] [--state STATE] [--json]\n"
    "       esctl sagas show <id> [--saga NAME] [--json]\n"
    "\n"
    "  list   saga instances in the saga database, most recently updated first:\n"
    "         id, saga, state, step index, started, updated, deadline, reason\n"
    "  show   one instance's history, one transition per line: sequence number,\n"
    "         time since the first transition (whose UTC time heads the output),\n"
    "         kind, state after it, step (index:name), then as name=value the\n"
    "         command (id, type, target), the event (type, id), reason, deadline.\n"
    "         Without --saga, the instance's saga is looked up in the saga database.\n"
    "\n"
    "Options:\n"
    "  --saga NAME       only instances of saga NAME ('<domain>.<name>')\n"
    "  --state STATE     list: only instances in STATE: running, compensating,\n"
    "                    completed, aborted or failed\n"
    "  --json            list: a JSON array of objects; show: one JSON object with\n"
    "                    the transitions in order\n"
    "  --saga-db FILE    the saga database (default: saga.db, eskit-saga.db)\n"
    "  --db FILE         the event store the history is read from (default: db,\n"
    "                    eskit.db; with brokers set, the Kafka topics)\n"
    "  -h, --help        show this help\n"
    "\n"
    "Example: esctl --saga-db saga.db sagas list --state compensating;\n"
    "         esctl --db orders.db --saga-db saga.db sagas show o-17\n"
    "Exits 1 when the saga database, the instance or its history does not exist.\n";

static const char *const states[] = {"running", "compensating", "completed", "aborted", "failed"};

static int check_filters(const options *o) {
    if (o->saga) {
        es_error_t err = {0};
        if (strlen(o->saga) + strlen(".saga") > ES_MAX_TYPE_LEN ||
            es_validate_aggregate_type(o->saga, &err) != ES_OK) {
            say("--saga: '%s' is not a saga name (lowercase '<domain>.<name>' of [a-z0-9-], e.g. "
                "orders.fulfilment); run 'esctl sagas --help'",
                o->saga);
            return EXIT_USAGE;
        }
    }
    if (!o->state)
        return EXIT_OK;
    for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
        if (strcmp(o->state, states[i]) == 0)
            return EXIT_OK;
    say("--state: '%s' is not a saga state; use running, compensating, completed, aborted or "
        "failed; run 'esctl sagas --help'",
        o->state);
    return EXIT_USAGE;
}

/* A library failure. The arguments were checked before (check_filters, cmd_show), so what is
 * left, a wrong file included, is a runtime failure as for every verb. */
static int failed(const es_error_t *err) {
    say("%s", err->message);
    return EXIT_FAIL;
}

static int max_int(int a, int b) {
    return a > b ? a : b;
}

typedef struct list_widths {
    int id, saga, state, step;
} list_widths;

static list_widths measure_list(const es_saga_info_t *is, size_t n) {
    list_widths w = {2, 4, 5, 4}; /* the headers */
    for (size_t i = 0; i < n; i++) {
        w.id = max_int(w.id, clean_width(is[i].id));
        w.saga = max_int(w.saga, clean_width(is[i].saga));
        w.state = max_int(w.state, clean_width(is[i].state));
        w.step = max_int(w.step, snprintf(NULL, 0, "%d", is[i].step_index));
    }
    return w;
}

/* Times are all 24 characters wide (put_time), so only the other columns are measured. */
static void list_text(pb_buf *b, const es_saga_info_t *is, size_t n) {
    list_widths w = measure_list(is, n);
    pb_buf_printf(b, "%-*s  %-*s  %-*s  %*s  %-24s  %-24s  %-24s  REASON\n", w.id, "ID", w.saga,
                  "SAGA", w.state, "STATE", w.step, "STEP", "STARTED", "UPDATED", "DEADLINE");
    for (size_t i = 0; i < n; i++) {
        const es_saga_info_t *s = &is[i];
        put_clean(b, s->id, w.id);
        pb_buf_puts(b, "  ");
        put_clean(b, s->saga, w.saga);
        pb_buf_puts(b, "  ");
        put_clean(b, s->state, w.state);
        pb_buf_printf(b, "  %*d  ", w.step, s->step_index);
        put_time_or_dash(b, s->started_us, 24);
        pb_buf_puts(b, "  ");
        put_time_or_dash(b, s->updated_us, 24);
        pb_buf_puts(b, "  ");
        put_time_or_dash(b, s->deadline_us, 24);
        pb_buf_puts(b, "  ");
        put_clean(b, s->reason[0] ? s->reason : "-", 0);
        pb_buf_putc(b, '\n');
    }
}

/* item is a es_saga_info_t (json_objects hands items untyped). */
static void info_json(pb_buf *b, const void *item) {
    const es_saga_info_t *s = item;
    json_str(b, "id", s->id);
    pb_buf_puts(b, ", ");
    json_str(b, "saga", s->saga);
    pb_buf_puts(b, ", ");
    json_str(b, "state", s->state);
    pb_buf_printf(b, ", \"step_index\": %d, ", s->step_index);
    json_time(b, "started_at", s->started_us);
    pb_buf_puts(b, ", ");
    json_time(b, "updated_at", s->updated_us);
    pb_buf_puts(b, ", ");
    json_time(b, "deadline", s->deadline_us);
    pb_buf_puts(b, ", ");
    json_opt(b, "reason", s->reason);
}

static int run_list(const options *o, const es_config_t *cfg) {
    es_saga_info_t *is = NULL;
    size_t n = 0;
    es_error_t err = {0};
    if (es_saga_list(cfg, o->saga, o->state, &is, &n, &err) != ES_OK)
        return failed(&err);
    pb_buf b;
    pb_buf_init(&b);
    if (o->json)
        json_objects(&b, is, n, sizeof *is, info_json);
    else if (n)
        list_text(&b, is, n);
    else
        pb_buf_printf(&b, "no saga instances%s%s%s%s in %s\n", o->saga ? " of " : "",
                      o->saga ? o->saga : "", o->state ? " in state " : "",
                      o->state ? o->state : "", es_config_get(cfg, "saga.db"));
    int rc = write_out(&b) ? EXIT_OK : EXIT_FAIL;
    pb_buf_free(&b);
    free(is);
    return rc;
}

static int cmd_list(const options *o) {
    es_config_t *cfg = NULL;
    if (o->n_pos > 1)
        return usage_error(o, "unexpected argument", o->pos[1]);
    int rc = check_filters(o);
    if (rc == EXIT_OK)
        rc = load_config(o, &cfg);
    if (rc == EXIT_OK)
        rc = run_list(o, cfg);
    es_config_destroy(cfg);
    return rc;
}

/* "+1.250s", "+2m03.000s", "+26h00m00.000s": time since the first transition. */
static void put_offset(pb_buf *b, int64_t us) {
    if (us < 0) {
        pb_buf_puts(b, "-"); /* the clock went back between two transitions */
        return;
    }
    int64_t ms = us / 1000, s = ms / 1000, m = s / 60, h = m / 60;
    if (h)
        pb_buf_printf(b, "+%" PRId64 "h%02" PRId64 "m%02" PRId64 ".%03" PRId64 "s", h, m % 60,
                      s % 60, ms % 1000);
    else if (m)
        pb_buf_printf(b, "+%" PRId64 "m%02" PRId64 ".%03" PRId64 "s", m, s % 60, ms % 1000);
    else
        pb_buf_printf(b, "+%" PRId64 ".%03" PRId64 "s", s, ms % 1000);
}

static void put_step(pb_buf *b, const es_saga_record_t *r) {
    if (r->step[0]) {
        pb_buf_printf(b, "%d:", r->step_index);
        put_clean(b, r->step, 0);
    } else {
        pb_buf_puts(b, "-");
    }
}

typedef struct show_widths {
    int seq, offset, kind, state, step;
} show_widths;

static show_widths measure_show(const es_saga_record_t *rs, size_t n) {
    show_widths w = {3, 4, 4, 5, 4}; /* the headers */
    pb_buf scratch;
    pb_buf_init(&scratch);
    for (size_t i = 0; i < n; i++) {
        w.seq = max_int(w.seq, snprintf(NULL, 0, "%" PRIu64, rs[i].seq));
        pb_buf_reset(&scratch);
        put_offset(&scratch, rs[i].at_us - rs[0].at_us);
        w.offset = max_int(w.offset, (int)scratch.len);
        w.kind = max_int(w.kind, clean_width(rs[i].kind));
        w.state = max_int(w.state, clean_width(rs[i].state[0] ? rs[i].state : "-"));
        pb_buf_reset(&scratch);
        put_step(&scratch, &rs[i]);
        w.step = max_int(w.step, (int)scratch.len);
    }
    pb_buf_free(&scratch);
    return w;
}

static bool has_details(const es_saga_record_t *r) {
    return r->command_id[0] || r->command_type[0] || r->aggregate_type[0] || r->aggregate_id[0] ||
           r->event_type[0] || r->event_id[0] || r->reason[0] || r->deadline_us;
}

/* " name=value" when value is set. */
static void detail(pb_buf *b, const char *name, const char *value) {
    if (!*value)
        return;
    pb_buf_printf(b, "  %s=", name);
    put_clean(b, value, 0);
}

static void details(pb_buf *b, const es_saga_record_t *r) {
    detail(b, "command", r->command_id);
    detail(b, "command_type", r->command_type);
    if (r->aggregate_type[0] || r->aggregate_id[0]) {
        pb_buf_puts(b, "  target=");
        put_clean(b, r->aggregate_type, 0);
        pb_buf_putc(b, '/');
        put_clean(b, r->aggregate_id, 0);
    }
    detail(b, "event", r->event_type);
    detail(b, "event_id", r->event_id);
    if (r->reason[0]) {
        /* Quoted: a reason is a sentence, and its end must be visible. */
        pb_buf_puts(b, "  reason=");
        pb_buf_json_string(b, r->reason, strlen(r->reason));
    }
    if (r->deadline_us) {
        pb_buf_puts(b, "  deadline=");
        put_time(b, r->deadline_us);
    }
}

static void show_text(pb_buf *b, const char *saga, const char *id, const es_saga_record_t *rs,
                      size_t n) {
    int64_t first_at = rs[0].at_us;
    show_widths w = measure_show(rs, n);
    pb_buf_puts(b, "saga ");
    put_clean(b, saga, 0);
    pb_buf_puts(b, " instance ");
    put_clean(b, id, 0);
    pb_buf_printf(b, ": %zu transition%s from ", n, n == 1 ? "" : "s");
    put_time(b, first_at);
    pb_buf_puts(b, ", now ");
    put_clean(b, rs[n - 1].state[0] ? rs[n - 1].state : "-", 0);
    pb_buf_putc(b, '\n');
    pb_buf_printf(b, "%*s  %-*s  %-*s  %-*s  %-*s  DETAILS\n", w.seq, "SEQ", w.offset, "TIME",
                  w.kind, "KIND", w.state, "STATE", w.step, "STEP");
    for (size_t i = 0; i < n; i++) {
        const es_saga_record_t *r = &rs[i];
        pb_buf_printf(b, "%*" PRIu64 "  ", w.seq, r->seq);
        size_t at = b->len;
        put_offset(b, r->at_us - rs[0].at_us);
        put_clean(b, "", w.offset - (int)(b->len - at));
        pb_buf_puts(b, "  ");
        put_clean(b, r->kind, w.kind);
        pb_buf_puts(b, "  ");
        put_clean(b, r->state[0] ? r->state : "-", w.state);
        pb_buf_puts(b, "  ");
        at = b->len;
        put_step(b, r);
        if (has_details(r)) { /* else no trailing blanks */
            put_clean(b, "", w.step - (int)(b->len - at));
            details(b, r);
        }
        pb_buf_putc(b, '\n');
    }
}

static void record_json(pb_buf *b, const es_saga_record_t *r, int64_t first) {
    pb_buf_printf(b, "\"seq\": %" PRIu64 ", ", r->seq);
    json_time(b, "at", r->at_us);
    pb_buf_printf(b, ", \"offset_us\": %" PRId64 ", ", r->at_us - first);
    json_str(b, "kind", r->kind);
    pb_buf_puts(b, ", ");
    json_opt(b, "state", r->state);
    pb_buf_puts(b, ", ");
    json_opt(b, "step", r->step);
    pb_buf_printf(b, ", \"step_index\": %d, ", r->step_index);
    json_opt(b, "command_id", r->command_id);
    pb_buf_puts(b, ", ");
    json_opt(b, "command_type", r->command_type);
    pb_buf_puts(b, ", ");
    json_opt(b, "aggregate_type", r->aggregate_type);
    pb_buf_puts(b, ", ");
    json_opt(b, "aggregate_id", r->aggregate_id);
    pb_buf_puts(b, ", ");
    json_opt(b, "event_type", r->event_type);
    pb_buf_puts(b, ", ");
    json_opt(b, "event_id", r->event_id);
    pb_buf_puts(b, ", ");
    json_opt(b, "reason", r->reason);
    pb_buf_puts(b, ", ");
    json_time(b, "deadline", r->deadline_us);
}

static void show_json(pb_buf *b, const char *saga, const char *id, const es_saga_record_t *rs,
                      size_t n) {
    pb_buf_putc(b, '{');
    json_str(b, "saga", saga);
    pb_buf_puts(b, ", ");
    json_str(b, "id", id);
    pb_buf_puts(b, ", ");
    json_str(b, "state", rs[n - 1].state);
    pb_buf_puts(b, ", \"transitions\": [\n");
    for (size_t i = 0; i < n; i++) {
        pb_buf_puts(b, "  {");
        record_json(b, &rs[i], rs[0].at_us);
        pb_buf_puts(b, i + 1 < n ? "},\n" : "}\n");
    }
    pb_buf_puts(b, "]}\n");
}

/* The saga of instance id, from the saga database; *saga is a copy the caller frees. */
static int find_saga(const es_config_t *cfg, const char *id, char **saga) {
    es_saga_info_t *is = NULL;
    size_t n = 0;
    es_error_t err = {0};
    const char *path = es_config_get(cfg, "saga.db");
    es_err e = es_saga_find(cfg, NULL, id, &is, &n, &err);
    int rc = EXIT_OK;
    if (e == ES_ENOTFOUND) {
        say("cannot tell which saga instance '%s' belongs to: no saga database at %s; give "
            "--saga NAME (or --saga-db FILE)",
            id, path);
        rc = EXIT_FAIL;
    } else if (e != ES_OK) {
        rc = failed(&err);
    } else if (n == 0) {
        say("no saga instance '%s' in %s; see 'esctl sagas list', or give --saga NAME to read "
            "its history from the log",
            id, path);
        rc = EXIT_FAIL;
    } else if (n > 1) {
        say("instance '%s' exists in %zu sagas (%s, %s%s); choose one with --saga NAME", id, n,
            is[0].saga, is[1].saga, n > 2 ? ", ..." : "");
        rc = EXIT_USAGE;
    } else if (!(*saga = strdup(is[0].saga))) {
        say("out of memory");
        rc = EXIT_FAIL;
    }
    free(is);
    return rc;
}

static int run_show(const options *o, const es_config_t *cfg, const char *saga, const char *id) {
    es_saga_record_t *rs = NULL;
    size_t n = 0;
    es_error_t err = {0};
    if (es_saga_history(cfg, saga, id, &rs, &n, &err) != ES_OK)
        return failed(&err);
    pb_buf b;
    pb_buf_init(&b);
    if (o->json)
        show_json(&b, saga, id, rs, n);
    else
        show_text(&b, saga, id, rs, n);
    int rc = write_out(&b) ? EXIT_OK : EXIT_FAIL;
    pb_buf_free(&b);
    free(rs);
    return rc;
}

static int cmd_show(const options *o) {
    es_config_t *cfg = NULL;
    pb_registry *types = NULL;
    es_error_t err = {0};
    char *found = NULL;
    if (o->n_pos < 2) {
        say("'sagas show' needs an instance <id>, as 'esctl sagas list' shows; run 'esctl sagas "
            "--help'");
        return EXIT_USAGE;
    }
    if (o->n_pos > 2)
        return usage_error(o, "unexpected argument", o->pos[2]);
    const char *id = o->pos[1];
    if (es_validate_aggregate_id(id, &err) != ES_OK) {
        say("'%s' is not a saga instance id: %s; run 'esctl sagas --help'", id, err.message);
        return EXIT_USAGE;
    }
    int rc = check_filters(o);
    if (rc == EXIT_OK)
        rc = load_config(o, &cfg);
    if (rc == EXIT_OK) /* for their upcasters: the history shows current types */
        rc = load_types(o, cfg, &types);
    if (rc == EXIT_OK && !o->saga)
        rc = find_saga(cfg, id, &found);
    if (rc == EXIT_OK)
        rc = check_store_exists(cfg);
    if (rc == EXIT_OK)
        rc = run_show(o, cfg, o->saga ? o->saga : found, id);
    free(found);
    es_config_destroy(cfg);
    pb_registry_destroy(types);
    return rc;
}

int cmd_sagas(const options *o) {
    const char *sub = o->n_pos ? o->pos[0] : NULL;
    if (!sub) {
        say("'sagas' needs a subcommand: list or show; run 'esctl sagas --help'");
        return EXIT_USAGE;
    }
    if (strcmp(sub, "list") == 0)
        return cmd_list(o);
    if (strcmp(sub, "show") == 0) {
        if (o->state) {
            say("option '--state' does not apply to 'sagas show'; run 'esctl sagas --help'");
            return EXIT_USAGE;
        }
        return cmd_show(o);
    }
    say("unknown subcommand 'sagas %s'; use list or show (run 'esctl sagas --help')", sub);
    return EXIT_USAGE;
}
