/*
 * esctl: the operator's command line for an eskit store.
 *
 * Exit codes are part of the interface, scripts rely on them: 0 success,
 * 1 a runtime failure (database, config file, undecodable data), 2 bad usage.
 * Every failure prints exactly one line on stderr, "esctl: <reason>".
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <eskit/eskit.h>
#include "domain.h"
#include "pbprint.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

#define MAX_TYPES_MODULES 16
#define MAX_POSITIONAL 4

typedef struct options {
    const char *db;
    const char *config;
    const char *types[MAX_TYPES_MODULES];
    size_t n_types;
    bool help, version, verbose, json;
    uint64_t from;
    const char *verb;
    const char *pos[MAX_POSITIONAL];
    size_t n_pos;
} options;

static const char main_help[] =
    "usage: esctl [global options] <command> [arguments]\n"
    "\n"
    "Operator tool for an eskit event store.\n"
    "\n"
    "Commands:\n"
    "  events <aggregate-type> <id>   print an aggregate's events, decoded\n"
    "  help [command]                 show help for esctl or a command\n"
    "\n"
    "Global options (accepted before or after the command):\n"
    "  --db FILE        SQLite store to read (overrides ESKIT_DB and eskit.conf)\n"
    "  --config FILE    config file to read instead of $ESKIT_CONFIG or ./eskit.conf\n"
    "  --types FILE.so  load more payload types from a module exporting\n"
    "                   const ProtobufCMessageDescriptor *const *es_types(void)\n"
    "                   (repeatable; the demo domain's types are built in)\n"
    "  -v, --verbose    print the library's log lines on stderr\n"
    "  -h, --help       show this help\n"
    "  --version        print the version\n"
    "\n"
    "Configuration: eskit.conf (or --config), then ESKIT_* environment variables,\n"
    "then command-line flags; later sources win.\n"
    "Exit status: 0 ok, 1 failure, 2 bad usage.\n";

static const char events_help[] =
    "usage: esctl events <aggregate-type> <id> [--from VERSION] [--json]\n"
    "\n"
    "Prints the stream of one aggregate in version order, one event per line:\n"
    "version, time (UTC), event type, then the payload's fields as name=value.\n"
    "\n"
    "Options:\n"
    "  --from VERSION   start at this version (default: 1)\n"
    "  --json           one JSON object per line (NDJSON); the payload follows the\n"
    "                   proto3 JSON mapping\n"
    "  -h, --help       show this help\n"
    "\n"
    "Example: esctl --db orders.db events orders.order o-1 --json\n"
    "Exits 1 when the aggregate has no events or a payload cannot be decoded.\n";

/* Prints "esctl: <message>" as one line: control characters (a newline in an id
 * or in a library message) would otherwise break the one-line promise. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void say(const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    for (char *c = line; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = ' ';
    fprintf(stderr, "esctl: %s\n", line);
}

static int usage_error(const options *o, const char *what, const char *arg) {
    if (o->verb)
        say("%s '%s' for '%s'; run 'esctl %s --help'", what, arg, o->verb, o->verb);
    else
        say("%s '%s'; run 'esctl --help'", what, arg);
    return EXIT_USAGE;
}

typedef enum opt_id {
    OPT_DB,
    OPT_CONFIG,
    OPT_TYPES,
    OPT_HELP,
    OPT_VERSION,
    OPT_VERBOSE,
    OPT_FROM,
    OPT_JSON
} opt_id;

typedef struct opt_spec {
    const char *name; /* long form without "--" */
    char short_name;
    bool takes_value;
    bool events_only; /* meaningful only after the events verb */
    opt_id id;
} opt_spec;

static const opt_spec opt_specs[] = {
    {"db", 0, true, false, OPT_DB},
    {"config", 0, true, false, OPT_CONFIG},
    {"types", 0, true, false, OPT_TYPES},
    {"help", 'h', false, false, OPT_HELP},
    {"version", 0, false, false, OPT_VERSION},
    {"verbose", 'v', false, false, OPT_VERBOSE},
    {"from", 0, true, true, OPT_FROM},
    {"json", 0, false, true, OPT_JSON},
};

/* The spec matching arg ("--name", "--name=value" or "-x"); *value is set for "=". */
static const opt_spec *find_opt(const options *o, const char *arg, const char **value) {
    *value = NULL;
    bool events = o->verb && strcmp(o->verb, "events") == 0;
    for (size_t i = 0; i < sizeof(opt_specs) / sizeof(opt_specs[0]); i++) {
        const opt_spec *s = &opt_specs[i];
        if (s->events_only && !events)
            continue;
        if (arg[1] != '-') {
            if (arg[1] == s->short_name && arg[2] == '\0')
                return s;
            continue;
        }
        size_t n = strlen(s->name);
        if (strncmp(arg + 2, s->name, n) != 0)
            continue;
        if (arg[2 + n] == '\0')
            return s;
        if (arg[2 + n] == '=' && s->takes_value) {
            *value = arg + 3 + n;
            return s;
        }
    }
    return NULL;
}

static int parse_u64(const char *s, uint64_t *out) {
    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static int apply_opt(options *o, const opt_spec *s, const char *value) {
    switch (s->id) {
    case OPT_DB:
        o->db = value;
        break;
    case OPT_CONFIG:
        o->config = value;
        break;
    case OPT_TYPES:
        if (o->n_types == MAX_TYPES_MODULES) {
            say("at most %d --types modules", MAX_TYPES_MODULES);
            return EXIT_USAGE;
        }
        o->types[o->n_types++] = value;
        break;
    case OPT_HELP:
        o->help = true;
        break;
    case OPT_VERSION:
        o->version = true;
        break;
    case OPT_VERBOSE:
        o->verbose = true;
        break;
    case OPT_JSON:
        o->json = true;
        break;
    case OPT_FROM:
        if (parse_u64(value, &o->from) != 0) {
            say("--from needs a version number, not '%s'; run 'esctl events --help'", value);
            return EXIT_USAGE;
        }
        break;
    }
    return EXIT_OK;
}

/* Handles the option at argv[*i]; consumes its value when it takes one. */
static int parse_opt(options *o, int argc, char **argv, int *i) {
    const char *arg = argv[*i], *value;
    const opt_spec *s = find_opt(o, arg, &value);
    if (!s)
        return usage_error(o, "unknown option", arg);
    if (s->takes_value && !value) {
        if (*i + 1 >= argc)
            return usage_error(o, "missing value after option", arg);
        value = argv[++*i];
    }
    if (!s->takes_value && value)
        return usage_error(o, "option takes no value", arg);
    return apply_opt(o, s, value);
}

static int parse_args(options *o, int argc, char **argv) {
    bool only_positional = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!only_positional && strcmp(arg, "--") == 0) {
            only_positional = true;
        } else if (!only_positional && arg[0] == '-' && arg[1] != '\0') {
            int rc = parse_opt(o, argc, argv, &i);
            if (rc != EXIT_OK)
                return rc;
        } else if (!o->verb) {
            /* Checked now: options after an unknown verb would blame the wrong thing. */
            if (strcmp(arg, "events") != 0 && strcmp(arg, "help") != 0) {
                say("unknown command '%s'; run 'esctl --help'", arg);
                return EXIT_USAGE;
            }
            o->verb = arg;
        } else if (o->n_pos < MAX_POSITIONAL) {
            o->pos[o->n_pos++] = arg;
        } else {
            return usage_error(o, "unexpected argument", arg);
        }
    }
    return EXIT_OK;
}

static int help_for(const char *verb) {
    if (!verb) {
        fputs(main_help, stdout);
    } else if (strcmp(verb, "events") == 0) {
        fputs(events_help, stdout);
    } else {
        say("unknown command '%s'; run 'esctl --help'", verb);
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

static void log_to_stderr(int level, const char *message, void *opaque) {
    (void)opaque;
    const char *what = level <= ES_LOG_ERROR     ? "error"
                       : level <= ES_LOG_WARNING ? "warning"
                                                 : "info";
    fprintf(stderr, "esctl: %s: %s\n", what, message);
}

/* Config sources in increasing precedence: file, environment, flags. */
static int load_config(const options *o, es_config_t **out) {
    es_error_t err = {0};
    es_config_t *cfg = es_config_new();
    if (!cfg) {
        say("out of memory");
        return EXIT_FAIL;
    }
    if (o->verbose)
        es_config_set_log_cb(cfg, log_to_stderr, NULL);
    es_err rc =
        o->config ? es_config_load_file(cfg, o->config, &err) : es_config_load_sources(cfg, &err);
    if (rc == ES_OK && o->config)
        rc = es_config_load_env(cfg, &err);
    if (rc == ES_OK && o->db && es_config_set(cfg, "db", o->db, &err) != ES_OK) {
        es_config_destroy(cfg);
        say("--db: %s", err.message);
        return EXIT_USAGE;
    }
    if (rc != ES_OK) {
        es_config_destroy(cfg);
        say("%s", err.message);
        return EXIT_FAIL;
    }
    *out = cfg;
    return EXIT_OK;
}

/* es_store_new creates a missing file; a typo in --db must not leave a fresh
 * empty database behind, so the embedded backend's file has to exist already. */
static int open_store(const es_config_t *cfg, es_store_t **out) {
    es_error_t err = {0};
    const char *db = es_config_get(cfg, "db");
    struct stat st;
    if (strcmp(es_config_get(cfg, "backend"), "embedded") == 0 && stat(db, &st) != 0) {
        say("cannot open database '%s': %s (set it with --db, ESKIT_DB or db in eskit.conf)", db,
            strerror(errno));
        return EXIT_FAIL;
    }
    if (es_store_new(cfg, out, &err) != ES_OK) {
        say("%s", err.message);
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

static int load_types(const options *o, pb_registry **out) {
    es_error_t err = {0};
    pb_registry *reg = pb_registry_new();
    if (!reg) {
        say("out of memory");
        return EXIT_FAIL;
    }
    /* Modules first: a newer build of a demo type overrides the built-in one. */
    for (size_t i = 0; i < o->n_types; i++) {
        if (pb_registry_load(reg, o->types[i], &err) != ES_OK)
            goto fail;
    }
    if (pb_registry_add(reg, demo_descriptors(), "esctl", &err) != ES_OK)
        goto fail;
    *out = reg;
    return EXIT_OK;
fail:
    say("%s", err.message);
    pb_registry_destroy(reg);
    return EXIT_FAIL;
}

/* State shared by the two passes over a stream. */
typedef struct events_ctx {
    const options *o;
    const pb_registry *types;
    pb_buf line;
    int version_width;
    int type_width;
    size_t undecodable;
    bool write_failed;
} events_ctx;

/* ISO-8601 UTC with milliseconds, e.g. 2024-05-01T12:00:00.123Z. */
static void put_time(pb_buf *b, int64_t us) {
    /* Floor division, so times before 1970 still print correctly. */
    int64_t secs = us / 1000000, rem = us % 1000000;
    if (rem < 0) {
        secs -= 1;
        rem += 1000000;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    char date[32];
    if (!gmtime_r(&t, &tm) || strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        pb_buf_printf(b, "@%" PRId64 "us", us);
        return;
    }
    pb_buf_printf(b, "%s.%03dZ", date, (int)(rem / 1000));
}

/* The decoded payload, NULL when the type is unknown (*desc NULL) or the bytes
 * do not parse. Caller frees with protobuf_c_message_free_unpacked. */
static ProtobufCMessage *decode_payload(const events_ctx *c, const es_event_t *ev,
                                        const ProtobufCMessageDescriptor **desc) {
    *desc = pb_registry_find(c->types, ev->event_type);
    if (!*desc)
        return NULL;
    return protobuf_c_message_unpack(*desc, NULL, ev->payload_len, ev->payload);
}

static void text_payload(events_ctx *c, const es_event_t *ev) {
    const ProtobufCMessageDescriptor *desc;
    ProtobufCMessage *msg = decode_payload(c, ev, &desc);
    if (msg) {
        pb_print_text(&c->line, msg);
        protobuf_c_message_free_unpacked(msg, NULL);
    } else if (desc) {
        c->undecodable++;
        pb_buf_printf(&c->line, "payload=<%zu bytes, cannot be decoded as %s>", ev->payload_len,
                      ev->event_type);
    } else {
        pb_buf_printf(&c->line, "payload=<%zu bytes, type not known to esctl>", ev->payload_len);
    }
}

/* An event type comes from the log: keep a hostile one from breaking the line. */
static void put_event_type(pb_buf *b, const char *type, int width) {
    int n = 0;
    for (const char *p = type; *p; p++, n++)
        pb_buf_putc(b, (unsigned char)*p < 0x20 || *p == 0x7f ? '?' : *p);
    for (; n < width; n++)
        pb_buf_putc(b, ' ');
}

static void text_line(events_ctx *c, const es_event_t *ev) {
    pb_buf_printf(&c->line, "%*" PRIu64 "  ", c->version_width, ev->version);
    put_time(&c->line, ev->occurred_at_us);
    pb_buf_puts(&c->line, "  ");
    put_event_type(&c->line, ev->event_type, c->type_width);
    size_t before = c->line.len;
    pb_buf_puts(&c->line, "  ");
    size_t fields = c->line.len;
    text_payload(c, ev);
    /* No trailing blanks when the payload has no fields (OrderConfirmed). */
    if (c->line.len == fields) {
        while (before > 0 && c->line.data[before - 1] == ' ')
            before--;
        c->line.len = before;
    }
}

static void json_str_field(pb_buf *b, const char *name, const char *value) {
    pb_buf_printf(b, ", \"%s\": ", name);
    if (value)
        pb_buf_json_string(b, value, strlen(value));
    else
        pb_buf_puts(b, "null");
}

static void json_payload(events_ctx *c, const es_event_t *ev) {
    const ProtobufCMessageDescriptor *desc;
    ProtobufCMessage *msg = decode_payload(c, ev, &desc);
    if (msg) {
        pb_buf_puts(&c->line, ", \"payload\": ");
        pb_print_json(&c->line, msg);
        protobuf_c_message_free_unpacked(msg, NULL);
        return;
    }
    pb_buf_puts(&c->line, ", \"payload_base64\": \"");
    pb_buf_base64(&c->line, ev->payload, ev->payload_len);
    pb_buf_putc(&c->line, '"');
    if (desc) {
        c->undecodable++;
        pb_buf_printf(&c->line, ", \"payload_error\": \"cannot be decoded as %s\"", desc->name);
    } else {
        pb_buf_puts(&c->line, ", \"payload_error\": \"type not known to esctl\"");
    }
}

static void json_line(events_ctx *c, const es_event_t *ev) {
    pb_buf *b = &c->line;
    pb_buf_puts(b, "{\"event_id\": ");
    pb_buf_json_string(b, ev->event_id, strlen(ev->event_id));
    json_str_field(b, "aggregate_type", ev->aggregate_type);
    json_str_field(b, "aggregate_id", ev->aggregate_id);
    pb_buf_printf(b, ", \"version\": %" PRIu64, ev->version);
    json_str_field(b, "event_type", ev->event_type);
    pb_buf_puts(b, ", \"occurred_at\": \"");
    put_time(b, ev->occurred_at_us);
    pb_buf_putc(b, '"');
    json_str_field(b, "command_id", ev->command_id);
    json_str_field(b, "correlation_id", ev->correlation_id);
    pb_buf_puts(b, ", \"metadata\": {");
    for (size_t i = 0; i < ev->n_metadata; i++) {
        const es_kv_t *kv = &ev->metadata[i];
        pb_buf_puts(b, i ? ", " : "");
        pb_buf_json_string(b, kv->key, strlen(kv->key));
        pb_buf_puts(b, ": ");
        pb_buf_json_string(b, kv->value ? kv->value : "", kv->value ? strlen(kv->value) : 0);
    }
    pb_buf_putc(b, '}');
    json_payload(c, ev);
    pb_buf_putc(b, '}');
}

static int print_event_cb(const es_event_t *ev, void *opaque) {
    events_ctx *c = opaque;
    pb_buf_reset(&c->line);
    if (c->o->json)
        json_line(c, ev);
    else
        text_line(c, ev);
    pb_buf_putc(&c->line, '\n');
    if (c->line.oom || fwrite(c->line.data, 1, c->line.len, stdout) != c->line.len) {
        c->write_failed = true;
        return 1;
    }
    return 0;
}

/* First pass for text output: column widths, so every line aligns. */
static int measure_cb(const es_event_t *ev, void *opaque) {
    events_ctx *c = opaque;
    int vw = snprintf(NULL, 0, "%" PRIu64, ev->version);
    int tw = (int)strlen(ev->event_type);
    c->version_width = vw > c->version_width ? vw : c->version_width;
    c->type_width = tw > c->type_width ? tw : c->type_width;
    return 0;
}

static int check_events_args(const options *o) {
    es_error_t err = {0};
    if (o->n_pos < 2) {
        say("'events' needs <aggregate-type> and <id>; run 'esctl events --help'");
        return EXIT_USAGE;
    }
    if (o->n_pos > 2)
        return usage_error(o, "unexpected argument", o->pos[2]);
    if (es_validate_aggregate_type(o->pos[0], &err) != ES_OK ||
        es_validate_aggregate_id(o->pos[1], &err) != ES_OK) {
        say("%s", err.message);
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

/* Reads the stream (once to measure for text, once to print) and reports the outcome. */
static int print_stream(es_store_t *store, events_ctx *c) {
    const char *type = c->o->pos[0], *id = c->o->pos[1];
    es_error_t err = {0};
    es_err rc = ES_OK;
    if (!c->o->json)
        rc = es_store_read_stream(store, type, id, c->o->from, measure_cb, c, &err);
    if (rc == ES_OK)
        rc = es_store_read_stream(store, type, id, c->o->from, print_event_cb, c, &err);
    if (fflush(stdout) != 0 || c->write_failed) {
        say("writing the output failed: %s", c->line.oom ? "out of memory" : strerror(errno));
        return EXIT_FAIL;
    }
    if (rc != ES_OK) {
        say("%s", err.message);
        return EXIT_FAIL;
    }
    if (c->undecodable) {
        say("%zu event payload%s of %s/%s could not be decoded", c->undecodable,
            c->undecodable == 1 ? "" : "s", type, id);
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

static int run_events(const options *o, es_store_t *store, const pb_registry *types) {
    const char *type = o->pos[0], *id = o->pos[1];
    es_error_t err = {0};
    uint64_t version = 0;
    if (es_store_stream_version(store, type, id, &version, &err) != ES_OK) {
        say("%s", err.message);
        return EXIT_FAIL;
    }
    if (version == 0) {
        say("no events for %s/%s in %s", type, id, es_config_get(es_store_config(store), "db"));
        return EXIT_FAIL;
    }
    events_ctx c = {.o = o, .types = types};
    pb_buf_init(&c.line);
    int rc = print_stream(store, &c);
    pb_buf_free(&c.line);
    return rc;
}

static int cmd_events(const options *o) {
    es_config_t *cfg = NULL;
    es_store_t *store = NULL;
    pb_registry *types = NULL;
    int rc = check_events_args(o);
    if (rc == EXIT_OK)
        rc = load_types(o, &types);
    if (rc == EXIT_OK)
        rc = load_config(o, &cfg);
    if (rc == EXIT_OK)
        rc = open_store(cfg, &store);
    if (rc == EXIT_OK)
        rc = run_events(o, store, types);
    if (store)
        es_store_destroy(store);
    es_config_destroy(cfg);
    pb_registry_destroy(types);
    return rc;
}

int main(int argc, char **argv) {
    options o = {0};
    int rc = parse_args(&o, argc, argv);
    if (rc != EXIT_OK)
        return rc;
    if (o.version) {
        printf("esctl %s\n", ESKIT_VERSION_STRING);
        return EXIT_OK;
    }
    if (o.verb && strcmp(o.verb, "help") == 0) {
        if (o.n_pos > 1)
            return usage_error(&o, "unexpected argument", o.pos[1]);
        return help_for(o.n_pos ? o.pos[0] : NULL);
    }
    if (o.help)
        return help_for(o.verb);
    if (!o.verb) {
        say("missing command; run 'esctl --help'");
        return EXIT_USAGE;
    }
    return cmd_events(&o);
}
