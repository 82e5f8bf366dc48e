/* esctl schemas: the log's schema catalogue (<eskit/schema.h>, docs/schemas.md). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "esctl.h"

const char schemas_help[] =
    "usage: esctl schemas list [--json]\n"
    "       esctl schemas show <type> [<version>] [--json]\n"
    "       esctl schemas check <types-module.so> [--json]\n"
    "       esctl schemas diff <type> <version> <version> [--json]\n"
    "\n"
    "The log's schema catalogue: every message type its services registered (events,\n"
    "commands, aggregate states, saga types), each version with its fingerprint.\n"
    "Embedded: the store file (--db). Kafka (brokers set): the topic schema.topic.\n"
    "\n"
    "  list    every type: its latest version, how many there are, when and by whom\n"
    "          the latest was registered\n"
    "  show    one version of a type (default: the latest), every field and the\n"
    "          types it reaches\n"
    "  check   would this build's types break the log? Loads the types module (it\n"
    "          runs code: name only modules you trust) and checks each of its types\n"
    "          against the recorded versions under schema.compatibility, writing\n"
    "          nothing. Exit 0 when every type could be registered, 1 with every\n"
    "          broken rule when not\n"
    "  diff    every change from one version to another, allowed or not\n"
    "\n"
    "Options:\n"
    "  --json           JSON instead of text\n"
    "  -h, --help       show this help\n"
    "\n"
    "Example: esctl --db orders.db schemas check ./build/order_saga_types.so\n";

typedef struct entry_list {
    es_schema_entry_t *items;
    es_schema_t **schemas; /* parsed copies, since entries are borrowed */
    char **strs;           /* name, fingerprint, by of each */
    size_t n, cap;
    bool failed; /* an entry could not be kept: the list is not whole */
} entry_list;

static void list_free(entry_list *l) {
    for (size_t i = 0; i < l->n; i++) {
        es_schema_free(l->schemas[i]);
        free(l->strs[3 * i]);
        free(l->strs[3 * i + 1]);
        free(l->strs[3 * i + 2]);
    }
    free(l->items);
    free(l->schemas);
    free(l->strs);
}

static int keep_entry(const es_schema_entry_t *e, void *opaque) {
    entry_list *l = opaque;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 32;
        es_schema_entry_t *it = realloc(l->items, cap * sizeof *it);
        if (it)
            l->items = it;
        es_schema_t **sc = realloc(l->schemas, cap * sizeof *sc);
        if (sc)
            l->schemas = sc;
        char **st = realloc(l->strs, 3 * cap * sizeof *st);
        if (st)
            l->strs = st;
        if (!it || !sc || !st) {
            l->failed = true;
            return 1;
        }
        l->cap = cap;
    }
    size_t len = 0;
    const uint8_t *bytes = es_schema_bytes(e->schema, &len);
    es_schema_t *copy = NULL;
    if (es_schema_parse(bytes, len, &copy, NULL) != ES_OK) {
        l->failed = true;
        return 1;
    }
    size_t i = l->n++;
    l->schemas[i] = copy;
    l->strs[3 * i] = strdup(e->name);
    l->strs[3 * i + 1] = strdup(e->fingerprint);
    l->strs[3 * i + 2] = strdup(e->registered_by ? e->registered_by : "");
    if (!l->strs[3 * i] || !l->strs[3 * i + 1] || !l->strs[3 * i + 2]) {
        l->failed = true;
        return 1;
    }
    l->items[i] = (es_schema_entry_t){l->strs[3 * i],      e->version,         l->strs[3 * i + 1],
                                      e->registered_at_us, l->strs[3 * i + 2], copy};
    return 0;
}

/* Opens the catalogue read-only; EXIT_FAIL said. */
static int open_catalogue(const es_config_t *cfg, es_schemas_t **out) {
    es_backend_info_t info;
    es_error_t err = {0};
    if (es_backend_info(cfg, &info, &err) != ES_OK) {
        say("%s", err.message);
        return EXIT_FAIL;
    }
    int rc = info.local_file ? check_store_exists(cfg) : EXIT_OK;
    if (rc == EXIT_OK && es_schemas_open(cfg, 1, out, &err) != ES_OK) {
        say("%s", err.message);
        rc = EXIT_FAIL;
    }
    return rc;
}

static int read_entries(es_schemas_t *cat, const char *name, entry_list *l) {
    es_error_t err = {0};
    memset(l, 0, sizeof *l);
    if (es_schemas_list(cat, name, keep_entry, l, &err) != ES_OK) {
        say("%s", err.message);
        return EXIT_FAIL;
    }
    if (l->failed) {
        say("out of memory reading the schema catalogue");
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

static void put_short_fingerprint(pb_buf *b, const char *fp) {
    pb_buf_printf(b, "%.19s", fp); /* "sha256:" and 12 hex digits */
}

/* The members of an entry's JSON object: type, version, fingerprint, when and by whom. */
static void put_entry_members(pb_buf *b, const es_schema_entry_t *e) {
    json_str(b, "type", e->name);
    pb_buf_printf(b, ", \"version\": %" PRIu32 ", ", e->version);
    json_str(b, "fingerprint", e->fingerprint);
    pb_buf_puts(b, ", ");
    json_time(b, "registered_at", e->registered_at_us);
    pb_buf_puts(b, ", ");
    json_str(b, "registered_by", e->registered_by);
}

/* Each finding's message on a line of its own. */
static void put_finding_lines(pb_buf *b, const es_schema_report_t *r) {
    for (size_t i = 0; i < r->n; i++) {
        put_clean_message(b, r->findings[i].message);
        pb_buf_putc(b, '\n');
    }
}

static int run_list(const options *o, es_schemas_t *cat) {
    entry_list l;
    int rc = read_entries(cat, NULL, &l);
    if (rc != EXIT_OK) {
        list_free(&l);
        return rc;
    }
    pb_buf b;
    pb_buf_init(&b);
    if (o->json) {
        pb_buf_puts(&b, "[");
        for (size_t i = 0; i < l.n; i++) {
            const es_schema_entry_t *e = &l.items[i];
            pb_buf_puts(&b, i ? ",\n {" : "\n {");
            put_entry_members(&b, e);
            pb_buf_puts(&b, "}");
        }
        pb_buf_puts(&b, l.n ? "\n]\n" : "]\n");
    } else {
        int width = 4;
        for (size_t i = 0; i < l.n; i++)
            if (clean_width(l.items[i].name) > width)
                width = clean_width(l.items[i].name);
        pb_buf_printf(&b, "%-*s  %7s  %-19s  %-24s  %s\n", width, "TYPE", "VERSION", "FINGERPRINT",
                      "REGISTERED", "BY");
        for (size_t i = 0; i < l.n; i++) {
            const es_schema_entry_t *e = &l.items[i];
            if (i + 1 < l.n && !strcmp(l.items[i + 1].name, e->name))
                continue; /* the latest of each type */
            put_clean(&b, e->name, width);
            pb_buf_printf(&b, "  %7" PRIu32 "  ", e->version);
            put_short_fingerprint(&b, e->fingerprint);
            pb_buf_puts(&b, "  ");
            put_time(&b, e->registered_at_us);
            pb_buf_puts(&b, "  ");
            put_clean(&b, e->registered_by, 0);
            pb_buf_putc(&b, '\n');
        }
        if (!l.n)
            pb_buf_puts(&b, "(no schemas recorded)\n");
    }
    rc = write_out(&b) ? EXIT_OK : EXIT_FAIL;
    pb_buf_free(&b);
    list_free(&l);
    return rc;
}

/* The version of l numbered text (NULL: the latest); NULL (said) when there is none. */
static const es_schema_entry_t *pick(const options *o, const entry_list *l, const char *type,
                                     const char *text, int *rc) {
    uint64_t v = 0;
    *rc = EXIT_FAIL;
    if (text && (parse_u64(text, &v) != 0 || v == 0 || v > UINT32_MAX)) {
        *rc = usage_error(o, "version", text);
        return NULL;
    }
    if (!l->n) {
        say("no schema of %s is recorded in the catalogue; 'esctl schemas list' shows the types",
            type);
        return NULL;
    }
    if (!text)
        return &l->items[l->n - 1];
    for (size_t i = 0; i < l->n; i++)
        if (l->items[i].version == v)
            return &l->items[i];
    say("%s has versions 1 to %" PRIu32 ", not %s", type, l->items[l->n - 1].version, text);
    return NULL;
}

static int run_show(const options *o, es_schemas_t *cat) {
    entry_list l;
    int rc = read_entries(cat, o->pos[1], &l);
    const es_schema_entry_t *e =
        rc == EXIT_OK ? pick(o, &l, o->pos[1], o->n_pos == 3 ? o->pos[2] : NULL, &rc) : NULL;
    char *text = NULL;
    es_error_t err = {0};
    if (e && es_schema_format(e->schema, o->json, &text, &err) != ES_OK) {
        say("%s", err.message);
        e = NULL;
    }
    if (e) {
        pb_buf b;
        pb_buf_init(&b);
        if (o->json) {
            pb_buf_putc(&b, '{');
            put_entry_members(&b, e);
            pb_buf_printf(&b, ", \"schema\": %s}\n", text);
        } else {
            pb_buf_puts(&b, "// ");
            put_clean(&b, e->name, 0);
            pb_buf_printf(&b, " version %" PRIu32 " of %zu, registered ", e->version, l.n);
            put_time(&b, e->registered_at_us);
            pb_buf_puts(&b, " by ");
            put_clean(&b, e->registered_by, 0);
            pb_buf_printf(&b, "\n%s", text);
            if (!*text || text[strlen(text) - 1] != '\n')
                pb_buf_putc(&b, '\n');
        }
        rc = write_out(&b) ? EXIT_OK : EXIT_FAIL;
        pb_buf_free(&b);
    }
    es_free(text);
    list_free(&l);
    return rc;
}

static void put_findings(pb_buf *b, const es_schema_report_t *r) {
    pb_buf_puts(b, "[");
    for (size_t i = 0; i < r->n; i++) {
        const es_schema_finding_t *f = &r->findings[i];
        pb_buf_puts(b, i ? ",\n  {" : "\n  {");
        json_str(b, "rule", f->rule);
        pb_buf_puts(b, ", ");
        json_str(b, "type", f->type);
        pb_buf_puts(b, ", ");
        json_opt(b, "field", f->field ? f->field : "");
        pb_buf_printf(b, ", \"number\": %" PRIu32 ", ", f->number);
        json_str(b, "message", f->message);
        pb_buf_puts(b, "}");
    }
    pb_buf_puts(b, r->n ? "\n ]" : "]");
}

static int run_check(const options *o, const es_config_t *cfg, es_schemas_t *cat) {
    es_error_t err = {0};
    es_types_module_t *mod = NULL;
    if (es_types_load(cfg, o->pos[1], &mod, &err) != ES_OK) {
        say("%s", err.message);
        return EXIT_FAIL;
    }
    const es_types_def *def = es_types_module_def(mod);
    size_t n = 0;
    while (es_types_message_at(def, n))
        n++;
    const ProtobufCMessageDescriptor **types = calloc(n ? n : 1, sizeof *types);
    if (!types) {
        es_types_unload(mod);
        say("out of memory");
        return EXIT_FAIL;
    }
    for (size_t i = 0; i < n; i++)
        types[i] = es_types_message_at(def, i);
    es_schema_report_t report = {0};
    es_err e = es_schemas_check(cat, types, n, &report, &err);
    int rc = EXIT_OK;
    const char *mode = es_config_get(cfg, "schema.compatibility");
    if (e != ES_OK && e != ES_EINCOMPATIBLE) {
        say("%s", err.message);
        rc = EXIT_FAIL;
    } else {
        pb_buf b;
        pb_buf_init(&b);
        if (o->json) {
            pb_buf_printf(&b, "{\"compatible\": %s, ", e == ES_OK ? "true" : "false");
            json_str(&b, "module", es_types_module_path(mod));
            pb_buf_puts(&b, ", ");
            json_str(&b, "compatibility", mode);
            pb_buf_printf(&b, ", \"types\": %zu, \"findings\": ", n);
            put_findings(&b, &report);
            pb_buf_puts(&b, "}\n");
        } else {
            put_finding_lines(&b, &report);
            if (e == ES_OK) {
                pb_buf_puts(&b, "compatible: the ");
                pb_buf_printf(&b, "%zu message types of ", n);
                put_clean(&b, es_types_module_path(mod), 0);
                pb_buf_printf(&b, " can be registered (schema.compatibility = %s)\n", mode);
            }
        }
        if (!write_out(&b))
            rc = EXIT_FAIL;
        pb_buf_free(&b);
        if (e == ES_EINCOMPATIBLE) {
            say("%zu broken rule%s: %s would break the log's schema catalogue "
                "(schema.compatibility = %s); add an upcaster, reserve the number, or use a new "
                "type",
                report.n, report.n == 1 ? "" : "s", es_types_module_path(mod), mode);
            rc = EXIT_FAIL;
        }
    }
    es_schema_report_clear(&report);
    free(types);
    es_types_unload(mod);
    return rc;
}

static int run_diff(const options *o, es_schemas_t *cat) {
    entry_list l;
    int rc = read_entries(cat, o->pos[1], &l);
    const es_schema_entry_t *a = rc == EXIT_OK ? pick(o, &l, o->pos[1], o->pos[2], &rc) : NULL;
    const es_schema_entry_t *b2 = a ? pick(o, &l, o->pos[1], o->pos[3], &rc) : NULL;
    es_schema_report_t report = {0};
    es_error_t err = {0};
    if (b2 && es_schema_diff(a->schema, b2->schema, &report, &err) != ES_OK) {
        say("%s", err.message);
        b2 = NULL;
        rc = EXIT_FAIL;
    }
    if (b2) {
        pb_buf b;
        pb_buf_init(&b);
        if (o->json) {
            pb_buf_putc(&b, '{');
            json_str(&b, "type", a->name);
            pb_buf_printf(&b,
                          ", \"from\": %" PRIu32 ", \"to\": %" PRIu32 ", \"changes\": ", a->version,
                          b2->version);
            put_findings(&b, &report);
            pb_buf_puts(&b, "}\n");
        } else {
            put_finding_lines(&b, &report);
            if (!report.n)
                pb_buf_printf(&b, "no changes from version %" PRIu32 " to %" PRIu32 "\n",
                              a->version, b2->version);
        }
        rc = write_out(&b) ? EXIT_OK : EXIT_FAIL;
        pb_buf_free(&b);
    }
    es_schema_report_clear(&report);
    list_free(&l);
    return rc;
}

int cmd_schemas(const options *o) {
    const char *sub = o->n_pos ? o->pos[0] : NULL;
    if (!sub) {
        say("'schemas' needs a subcommand: list, show, check or diff; run 'esctl schemas "
            "--help'");
        return EXIT_USAGE;
    }
    if (strcmp(sub, "list") && strcmp(sub, "show") && strcmp(sub, "check") && strcmp(sub, "diff")) {
        say("unknown subcommand 'schemas %s'; use list, show, check or diff (run 'esctl "
            "schemas --help')",
            sub);
        return EXIT_USAGE;
    }
    static const struct {
        const char *sub, *takes;
        size_t min, max;
    } arity[] = {{"list", "no arguments", 1, 1},
                 {"show", "a type and optionally a version", 2, 3},
                 {"check", "one types module (a path to a .so)", 2, 2},
                 {"diff", "a type and two versions", 4, 4}};
    for (size_t i = 0; i < sizeof arity / sizeof *arity; i++)
        if (!strcmp(sub, arity[i].sub) && (o->n_pos < arity[i].min || o->n_pos > arity[i].max)) {
            say("'schemas %s' takes %s; run 'esctl schemas --help'", sub, arity[i].takes);
            return EXIT_USAGE;
        }
    es_config_t *cfg = NULL;
    es_schemas_t *cat = NULL;
    int rc = load_config(o, &cfg);
    if (rc == EXIT_OK)
        rc = open_catalogue(cfg, &cat);
    if (rc == EXIT_OK) {
        if (!strcmp(sub, "list"))
            rc = run_list(o, cat);
        else if (!strcmp(sub, "show"))
            rc = run_show(o, cat);
        else if (!strcmp(sub, "check"))
            rc = run_check(o, cfg, cat);
        else
            rc = run_diff(o, cat);
    }
    es_schemas_close(cat);
    es_config_destroy(cfg);
    return rc;
}
