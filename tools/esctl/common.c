/* Helpers every esctl verb uses: errors, config, store and payload types. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "esctl.h"

/* "esctl: [<what>: ]<line>" on stderr. A newline in an id or a library message would break the
 * one-line promise, and bytes from a damaged file could drive the terminal: control characters
 * become blanks, C1 controls and invalid UTF-8 \xNN (put_clean's escapes). */
static void put_line(const char *what, const char *line) {
    pb_buf b;
    pb_buf_init(&b);
    for (const char *c = line; *c; c++)
        pb_buf_putc(&b, (unsigned char)*c < 0x20 || *c == 0x7f ? ' ' : *c);
    pb_buf out;
    pb_buf_init(&out);
    pb_buf_printf(&out, "esctl: %s%s", what ? what : "", what ? ": " : "");
    put_clean_message(&out, b.data ? b.data : "");
    if (out.oom) /* still one line, unescaped */
        fprintf(stderr, "esctl: %s\n", b.oom || !b.data ? "out of memory" : b.data);
    else
        fprintf(stderr, "%s\n", out.data);
    pb_buf_free(&b);
    pb_buf_free(&out);
}

void say(const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    put_line(NULL, line);
}

int usage_error(const options *o, const char *what, const char *arg) {
    if (o->verb)
        say("%s '%s' for '%s'; run 'esctl %s --help'", what, arg, o->verb, o->verb);
    else
        say("%s '%s'; run 'esctl --help'", what, arg);
    return EXIT_USAGE;
}

int parse_u64(const char *s, uint64_t *out) {
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

/* The library is about to end the process (the apply watchdog, on its thread): its line is
 * esctl's one line, and esctl ends with its own status for a failure. */
static void end_on_critical(const char *message) {
    if (isatty(STDERR_FILENO))
        fputs("\r\033[K", stderr); /* over a progress bar */
    say("%s", message);
    _exit(EXIT_FAIL);
}

static void log_critical(int level, const char *message, void *opaque) {
    (void)opaque;
    if (level <= ES_LOG_CRITICAL)
        end_on_critical(message);
}

static void log_to_stderr(int level, const char *message, void *opaque) {
    (void)opaque;
    if (level <= ES_LOG_CRITICAL)
        end_on_critical(message);
    const char *what = level <= ES_LOG_ERROR     ? "error"
                       : level <= ES_LOG_WARNING ? "warning"
                                                 : "info";
    put_line(what, message ? message : "");
}

/* Sets key from a command-line flag; a bad value is a usage error naming the flag. */
static int set_flag(es_config_t *cfg, const char *flag, const char *key, const char *value) {
    es_error_t err = {0};
    if (value && es_config_set(cfg, key, value, &err) != ES_OK) {
        say("%s: %s", flag, err.message);
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

/* Config sources in increasing precedence: file, environment, flags. */
int load_config(const options *o, es_config_t **out) {
    es_error_t err = {0};
    es_config_t *cfg = es_config_new();
    if (!cfg) {
        say("out of memory");
        return EXIT_FAIL;
    }
    es_config_set_log_cb(cfg, o->verbose ? log_to_stderr : log_critical, NULL);
    es_err rc =
        o->config ? es_config_load_file(cfg, o->config, &err) : es_config_load_sources(cfg, &err);
    if (rc == ES_OK && o->config)
        rc = es_config_load_env(cfg, &err);
    if (rc != ES_OK) {
        es_config_destroy(cfg);
        say("%s", err.message);
        return EXIT_FAIL;
    }
    /* esctl's engines and runners are no service to scrape: a metrics.listen the service's
     * eskit.conf holds must not make esctl take (or fail on) the service's port. esctl metrics
     * reads what the files and the log say instead. */
    int exit = set_flag(cfg, "metrics", "metrics.enabled", "false");
    if (exit == EXIT_OK)
        exit = set_flag(cfg, "--db", "db", o->db);
    if (exit == EXIT_OK)
        exit = set_flag(cfg, "--readmodel", "readmodel.db", o->readmodel);
    if (exit == EXIT_OK)
        exit = set_flag(cfg, "--saga-db", "saga.db", o->saga_db);
    if (exit != EXIT_OK) {
        es_config_destroy(cfg);
        return exit;
    }
    *out = cfg;
    return EXIT_OK;
}

static bool embedded(const es_config_t *cfg) {
    es_backend_info_t b = {0};
    return es_backend_info(cfg, &b, NULL) == ES_OK && b.local_file;
}

int check_store_exists(const es_config_t *cfg) {
    const char *db = es_config_get(cfg, "db");
    struct stat st;
    if (embedded(cfg) && stat(db, &st) != 0) {
        say("cannot open database '%s': %s (set it with --db, ESKIT_DB or db in eskit.conf)", db,
            strerror(errno));
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

int check_readmodel_exists(const es_config_t *cfg) {
    const char *db = es_config_get(cfg, "readmodel.db");
    struct stat st;
    if (stat(db, &st) != 0) {
        say("cannot open read model '%s': %s (set it with --readmodel, ESKIT_READMODEL_DB or "
            "readmodel.db in eskit.conf; 'esctl replay <projector>' builds it)",
            db, strerror(errno));
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

int open_store(const es_config_t *cfg, es_store_t **out) {
    es_error_t err = {0};
    int rc = check_store_exists(cfg);
    if (rc != EXIT_OK)
        return rc;
    if (es_store_open(cfg, ES_OPEN_READONLY, out, &err) != ES_OK) {
        say("%s", err.message);
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

/* Loads one module named in types.modules or by --types; false (said) on failure. */
static bool load_one(pb_registry *reg, es_config_t *cfg, const char *name, size_t len,
                     const char *from) {
    es_error_t err = {0};
    char *copy = strndup(name, len);
    if (!copy) {
        say("out of memory");
        return false;
    }
    es_err e = pb_registry_load(reg, cfg, copy, &err);
    free(copy);
    if (e != ES_OK)
        say("%s (%s)", err.message, from);
    return e == ES_OK;
}

int load_types(const options *o, es_config_t *cfg, pb_registry **out) {
    pb_registry *reg = pb_registry_new();
    if (!reg) {
        say("out of memory");
        return EXIT_FAIL;
    }
    /* --types first: a module named on the command line overrides the configured ones. */
    bool ok = true;
    for (size_t i = 0; ok && i < o->n_types; i++)
        ok = load_one(reg, cfg, o->types[i], strlen(o->types[i]), "--types");
    const char *list = es_config_get(cfg, "types.modules");
    for (const char *p = list; ok && p && *p;) {
        p += strspn(p, " \t,");
        size_t len = strcspn(p, ",");
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len)
            ok = load_one(reg, cfg, p, len, "config key types.modules");
        p += strcspn(p, ",");
    }
    if (!ok) {
        pb_registry_destroy(reg);
        return EXIT_FAIL;
    }
    *out = reg;
    return EXIT_OK;
}

/* The unknown payload types this run met, for the one hint line: the first, and whether
 * there were others. */
static struct {
    bool any, others;
    char first[ES_MAX_TYPE_NAME_LEN + 1];
} unknown;

void note_unknown_type(const char *type) {
    if (!unknown.any)
        snprintf(unknown.first, sizeof unknown.first, "%s", type);
    else if (strcmp(unknown.first, type) != 0)
        unknown.others = true;
    unknown.any = true;
}

void types_hint(const pb_registry *types, const char *what) {
    if (!unknown.any && what == NULL)
        return;
    size_t n = pb_registry_modules(types);
    say("%s '%s'%s %s not known to esctl (%zu types module%s loaded); name the service's types "
        "module with --types NAME|FILE.so or the config key types.modules "
        "(ESKIT_TYPES_MODULES): a .so whose " ES_TYPES_ENTRY "() returns an es_types_def, "
        "see <eskit/types.h>",
        what             ? "aggregate type"
        : unknown.others ? "hint: payload types"
                         : "hint: payload type",
        what ? what : unknown.first, !what && unknown.others ? " and others" : "",
        !what && unknown.others ? "are" : "is", n, n == 1 ? "" : "s");
}

bool write_out(const pb_buf *b) {
    if (b->oom) {
        say("writing the output failed: out of memory");
        return false;
    }
    if (fwrite(b->data, 1, b->len, stdout) != b->len || fflush(stdout) != 0) {
        say("writing the output failed: %s", strerror(errno));
        return false;
    }
    return true;
}

void put_position(pb_buf *b, const es_dlq_entry_t *e) {
    put_clean(b, e->topic, 0);
    pb_buf_printf(b, "[%" PRId32 "]@%" PRId64, e->partition, e->offset);
}

void put_time_or_dash(pb_buf *b, int64_t us, int width) {
    size_t at = b->len;
    if (us)
        put_time(b, us);
    else
        pb_buf_puts(b, "-");
    put_clean(b, "", width - (int)(b->len - at));
}

void json_str(pb_buf *b, const char *key, const char *value) {
    pb_buf_printf(b, "\"%s\": ", key);
    pb_buf_json_string(b, value, strlen(value));
}

void json_opt(pb_buf *b, const char *key, const char *value) {
    if (*value)
        json_str(b, key, value);
    else
        pb_buf_printf(b, "\"%s\": null", key);
}

void json_time(pb_buf *b, const char *key, int64_t us) {
    pb_buf_printf(b, "\"%s\": ", key);
    if (!us) {
        pb_buf_puts(b, "null");
        return;
    }
    pb_buf_putc(b, '"');
    put_time(b, us);
    pb_buf_putc(b, '"');
}

void json_objects(pb_buf *b, const void *items, size_t n, size_t size,
                  void (*item)(pb_buf *b, const void *it)) {
    pb_buf_puts(b, n ? "[\n" : "[");
    for (size_t i = 0; i < n; i++) {
        pb_buf_puts(b, "  {");
        item(b, (const char *)items + i * size);
        pb_buf_puts(b, i + 1 < n ? "},\n" : "}\n");
    }
    pb_buf_puts(b, "]\n");
}

int check_type_id_args(const options *o, const char *verb) {
    es_error_t err = {0};
    if (o->n_pos < 2) {
        say("'%s' needs <aggregate-type> and <id>; run 'esctl %s --help'", verb, verb);
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
