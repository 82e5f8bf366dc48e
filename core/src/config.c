/*
 * es_config_t: explicit settings in a sorted array, defaults in a static key
 * table. Every value is checked when set, so a config that exists is valid;
 * kafka.* values are checked by librdkafka itself on a scratch conf, except the
 * ones that load code (code_keys). A config file is read as named, or, found in
 * the working directory, only when no one but the user could have written it,
 * and never for a key that loads code (docs/security.md).
 */
#include "internal.h"
#include "metrics_int.h"

#include <eskit/schema.h>

#include "backends.h"
#include "upcast_int.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

typedef es_err check_fn(const char *key, const char *value, es_error_t *err);

typedef struct key_spec {
    const char *key;
    const char *def;
    check_fn *check;
} key_spec;

typedef struct entry {
    char *key;
    char *value;
} entry;

struct es_config {
    entry *entries;
    size_t n, cap;
    es_log_cb *log_cb;
    void *log_opaque;
    es_span_cb *span_cb;
    void *span_opaque;
    es_upcast_set *upcasts; /* upcast.c's; NULL: none */
};

const es_upcast_set *es_config_upcasts(const es_config_t *cfg) {
    return cfg ? cfg->upcasts : NULL;
}

es_upcast_set **es_config_upcast_slot(es_config_t *cfg) {
    return &cfg->upcasts;
}

static es_err check_nonempty(const char *key, const char *value, es_error_t *err) {
    if (!*value)
        return es_fail(err, ES_EINVAL, "config key '%s' needs a value", key);
    return ES_OK;
}

static es_err check_backend(const char *key, const char *value, es_error_t *err) {
    if (!es_backend_known(value))
        return es_fail(err, ES_EINVAL,
                       "config key '%s': '%s' is not a backend; use embedded or kafka", key, value);
    return ES_OK;
}

static es_err check_synchronous(const char *key, const char *value, es_error_t *err) {
    static const char *const ok[] = {"full", "normal", "off", "extra"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        if (!strcmp(value, ok[i]))
            return ES_OK;
    return es_fail(err, ES_EINVAL, "config key '%s': '%s' is not one of full, normal, off, extra",
                   key, value);
}

static es_err check_uint(const char *key, const char *value, es_error_t *err) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    if (!*value || *end || errno || v < 0 || v > 1000000000LL)
        return es_fail(err, ES_EINVAL,
                       "config key '%s': '%s' is not a whole number from 0 to 1000000000", key,
                       value);
    return ES_OK;
}

static es_err check_choice(const char *key, const char *value, const char *a, const char *b,
                           es_error_t *err) {
    if (strcmp(value, a) && strcmp(value, b))
        return es_fail(err, ES_EINVAL, "config key '%s': '%s' is not one of %s, %s", key, value, a,
                       b);
    return ES_OK;
}

static es_err check_on_error(const char *key, const char *value, es_error_t *err) {
    return check_choice(key, value, "dlq", "stop", err);
}

static es_err check_on_unknown(const char *key, const char *value, es_error_t *err) {
    return check_choice(key, value, "dlq", "ignore", err);
}

static es_err check_log_order(const char *key, const char *value, es_error_t *err) {
    if (strcmp(value, "auto") && strcmp(value, "on") && strcmp(value, "off"))
        return es_fail(err, ES_EINVAL, "config key '%s': '%s' is not one of auto, on, off", key,
                       value);
    return ES_OK;
}

static es_err check_compatibility(const char *key, const char *value, es_error_t *err) {
    es_compat mode;
    es_error_t why;
    if (es_compat_parse(value, &mode, &why) != ES_OK)
        return es_fail(err, ES_EINVAL, "config key '%s': %s", key, why.message);
    return ES_OK;
}

static es_err check_positive(const char *key, const char *value, es_error_t *err) {
    es_err e = check_uint(key, value, err);
    if (e == ES_OK && atoll(value) == 0)
        return es_fail(err, ES_EINVAL, "config key '%s' must be at least 1", key);
    return e;
}

/* A registry's base URL: http or https with a host, nothing a header or a log line could be cut
 * by. Credentials belong in schema.registry.basic.auth.user.info, never in the URL. */
static es_err check_url(const char *key, const char *value, es_error_t *err) {
    size_t scheme = !strncmp(value, "http://", 7) ? 7 : !strncmp(value, "https://", 8) ? 8 : 0;
    if (!scheme || !value[scheme] || value[scheme] == '/')
        return es_fail(err, ES_EINVAL,
                       "config key '%s': '%.200s' is not an http:// or https:// URL with a host, "
                       "e.g. http://localhost:8081",
                       key, value);
    for (const char *c = value; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f)
            return es_fail(err, ES_EINVAL,
                           "config key '%s': the URL holds a space or a control "
                           "character",
                           key);
    if (strchr(value + scheme, '@'))
        return es_fail(err, ES_EINVAL,
                       "config key '%s': the URL holds user information; put it in "
                       "schema.registry.basic.auth.user.info, which is never printed",
                       key);
    return ES_OK;
}

static es_err check_framing(const char *key, const char *value, es_error_t *err) {
    return check_choice(key, value, "none", "confluent", err);
}

/* user:password. The value is a secret: no message quotes it. */
static es_err check_user_info(const char *key, const char *value, es_error_t *err) {
    const char *colon = strchr(value, ':');
    for (const char *c = value; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            return es_fail(err, ES_EINVAL, "config key '%s': the value holds a control character",
                           key);
    if (!colon || colon == value)
        return es_fail(err, ES_EINVAL,
                       "config key '%s': the value is not user:password (not shown here)", key);
    return ES_OK;
}

static es_err check_bool(const char *key, const char *value, es_error_t *err) {
    return check_choice(key, value, "true", "false", err);
}

static es_err check_listen(const char *key, const char *value, es_error_t *err) {
    char host[256];
    int port;
    (void)key;
    return es_mx_listen_parse(value, host, sizeof host, &port, err);
}

static const key_spec keys[] = {
    {"backend", NULL, check_backend},
    {"brokers", NULL, check_nonempty},
    {"cache.aggregates", "10000", check_uint},
    {"db", "eskit.db", check_nonempty},
    {"execute.timeout.ms", "30000", check_uint},
    {"health.max.lag", "1000", check_uint},
    {"idempotency.window.ids", "0", check_uint},
    {"idempotency.window.ms", "86400000", check_uint},
    {"metrics.enabled", "true", check_bool},
    {"metrics.kafka.interval.ms", "5000", check_uint},
    {"metrics.listen", NULL, check_listen},
    {"projector.apply.timeout.ms", "0", check_uint},
    {"projector.batch.size", "500", check_positive},
    {"projector.crash.restarts", "3", check_positive},
    {"projector.linger.ms", "5", check_uint},
    {"projector.log.order", "auto", check_log_order},
    {"projector.on.error", "dlq", check_on_error},
    {"projector.on.unknown", "dlq", check_on_unknown},
    {"projector.path", NULL, check_nonempty},
    {"projector.retries", "3", check_uint},
    {"projector.retry.backoff.ms", "50", check_uint},
    {"readmodel.db", "eskit-read.db", check_nonempty},
    {"replay.batch.size", "20000", check_positive},
    {"saga.db", "eskit-saga.db", check_nonempty},
    {"saga.retention.ms", "604800000", check_uint},
    {"schema.compatibility", "backward", check_compatibility},
    {"schema.topic", "eskit.schemas", check_nonempty},
    {"schema.registry.basic.auth.user.info", NULL, check_user_info},
    {"schema.registry.framing", "none", check_framing},
    {"schema.registry.retries", "3", check_uint},
    {"schema.registry.timeout.ms", "5000", check_positive},
    {"schema.registry.url", NULL, check_url},
    {"service.name", "eskit", check_nonempty},
    {"snapshot.every", "1", check_uint},
    {"sqlite.busy.timeout.ms", "10000", check_uint},
    {"sqlite.heads.defer.events", "16384", check_uint},
    {"sqlite.synchronous", "full", check_synchronous},
    {"state.db", "eskit-state.db", check_nonempty},
    {"topics.aggregates", NULL, check_nonempty},
    {"topics.consumers", "1", check_uint},
    {"topics.partition.throughput", "5000", check_positive},
    {"topics.throughput", "1000", check_uint},
    {"types.modules", NULL, check_nonempty},
};
#define N_KEYS (sizeof keys / sizeof *keys)

size_t es_config_key(size_t i, const char **key, const char **def) {
    if (i < N_KEYS) {
        if (key)
            *key = keys[i].key;
        if (def)
            *def = keys[i].def;
    }
    return N_KEYS;
}

static const key_spec *find_spec(const char *key) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (!strcmp(keys[i].key, key))
            return &keys[i];
    return NULL;
}

/*
 * Keys whose value makes eskit or librdkafka load code or run a command. They are taken only
 * from the process's own settings (es_config_set, ESKIT_* variables, a file the caller names),
 * never from an eskit.conf found in the working directory, even one the user owns: whoever can
 * leave a file where eskit is run would otherwise run code as whoever runs it. The librdkafka
 * ones are from its 2.0.2 CONFIGURATION.md. None of them is ever set on a scratch librdkafka
 * conf to check it (librdkafka dlopens plugin.library.paths the moment it is set); their
 * syntax is checked here and the build feature they need from builtin.features (what that
 * cannot tell, e.g. ssl.providers wanting OpenSSL 3, librdkafka reports when a handle is made).
 */
static const struct code_key {
    const char *key;
    const char *feature; /* librdkafka builtin.features entry it needs */
} code_keys[] = {
    {"projector.path", NULL},                         /* dirs projector modules are dlopened from */
    {"types.modules", NULL},                          /* types modules, dlopened by esctl */
    {"kafka.plugin.library.paths", "plugins"},        /* libraries dlopened as the key is set */
    {"kafka.ssl.engine.location", "ssl"},             /* an OpenSSL engine library */
    {"kafka.ssl.engine.id", "ssl"},                   /* the engine OpenSSL loads by name */
    {"kafka.ssl.providers", "ssl"},                   /* OpenSSL 3 providers, by name or path */
    {"kafka.sasl.kerberos.kinit.cmd", "sasl_gssapi"}, /* a shell command librdkafka runs */
    {"kafka.sasl.kerberos.keytab", "sasl_gssapi"},    /* substituted into that command */
    {"kafka.sasl.kerberos.principal", "sasl_gssapi"}, /* substituted into it unquoted */
};
#define N_CODE_KEYS (sizeof code_keys / sizeof *code_keys)

static const struct code_key *find_code_key(const char *key) {
    for (size_t i = 0; i < N_CODE_KEYS; i++)
        if (!strcmp(code_keys[i].key, key))
            return &code_keys[i];
    return NULL;
}

/* Whether this librdkafka was built with feature; reading a property loads nothing. */
static int rdkafka_has(const char *feature) {
    char features[512];
    size_t size = sizeof features;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int ok = rd_kafka_conf_get(conf, "builtin.features", features, &size) == RD_KAFKA_CONF_OK;
    rd_kafka_conf_destroy(conf);
    size_t n = strlen(feature);
    for (const char *p = features; ok && *p; p += strcspn(p, ","), p += *p == ',')
        if (!strncmp(p, feature, n) && (p[n] == ',' || !p[n]))
            return 1;
    return 0;
}

static es_err check_code_kafka(const struct code_key *ck, const char *value, es_error_t *err) {
    for (const char *c = value; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            return es_fail(err, ES_EINVAL, "config key '%s': the value holds a control character",
                           ck->key);
    if (ck->feature && !rdkafka_has(ck->feature))
        return es_fail(err, ES_EINVAL,
                       "config key '%s': this librdkafka (%s) was built without %s support",
                       ck->key, rd_kafka_version_str(), ck->feature);
    return ES_OK;
}

static es_err check_kafka(const char *key, const char *value, es_error_t *err) {
    const struct code_key *ck = find_code_key(key);
    if (ck)
        return check_code_kafka(ck, value, err);
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_res_t r = rd_kafka_conf_set(conf, key + 6, value, errstr, sizeof errstr);
    rd_kafka_conf_destroy(conf);
    if (r != RD_KAFKA_CONF_OK)
        return es_fail(err, ES_EINVAL, "config key '%s': %s", key, errstr);
    return ES_OK;
}

/* The first segment of a key ("topics" of "topics.throughput"): its length, or 0 for a key
 * of one segment. */
static size_t group_len(const char *key) {
    const char *dot = strchr(key, '.');
    return dot ? (size_t)(dot - key) : 0;
}

static int in_group(const char *key, const char *group, size_t len) {
    return len && group_len(key) == len && !strncmp(key, group, len);
}

/* An unknown key's message, made from the table so that it never falls behind it: the keys of
 * the same group when there are any ("the topics.* keys are ..."), else every key, a group of
 * several as "<group>.*" (the whole list would not fit in a message). */
static es_err unknown_key(const char *key, es_error_t *err) {
    char list[400] = "";
    size_t used = 0, glen = group_len(key), n_same = 0;
    for (size_t i = 0; i < N_KEYS; i++)
        n_same += in_group(keys[i].key, key, glen);
    for (size_t i = 0; i < N_KEYS && used < sizeof list; i++) {
        const char *k = keys[i].key;
        size_t kl = group_len(k);
        int n;
        if (n_same) {
            if (!in_group(k, key, glen))
                continue;
            n = snprintf(list + used, sizeof list - used, "%s%s", used ? ", " : "", k);
        } else if (kl && ((i > 0 && in_group(keys[i - 1].key, k, kl)) ||
                          (i + 1 < N_KEYS && in_group(keys[i + 1].key, k, kl)))) {
            if (i > 0 && in_group(keys[i - 1].key, k, kl))
                continue; /* the group is named once */
            n = snprintf(list + used, sizeof list - used, "%s%.*s.*", used ? ", " : "", (int)kl, k);
        } else {
            n = snprintf(list + used, sizeof list - used, "%s%s", used ? ", " : "", k);
        }
        used += n > 0 ? (size_t)n : 0;
    }
    if (n_same)
        return es_fail(err, ES_EINVAL,
                       "unknown config key '%.64s'; the %.*s.* keys are %s (and kafka.<librdkafka "
                       "property> for librdkafka; core/include/eskit/config.h says what each does)",
                       key, (int)glen, key, list);
    return es_fail(err, ES_EINVAL,
                   "unknown config key '%.64s'; known keys: %s, kafka.<librdkafka property>", key,
                   list);
}

static es_err check_key(const char *key, const char *value, es_error_t *err) {
    if (!strncmp(key, "kafka.", 6) && key[6])
        return check_kafka(key, value, err);
    const key_spec *spec = find_spec(key);
    if (!spec)
        return unknown_key(key, err);
    return spec->check(key, value, err);
}

es_config_t *es_config_new(void) {
    return calloc(1, sizeof(es_config_t));
}

void es_config_destroy(es_config_t *cfg) {
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->n; i++) {
        free(cfg->entries[i].key);
        free(cfg->entries[i].value);
    }
    free(cfg->entries);
    es_upcast_set_free(cfg->upcasts);
    free(cfg);
}

static entry *find_entry(const es_config_t *cfg, const char *key, size_t *at) {
    size_t lo = 0, hi = cfg->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(cfg->entries[mid].key, key);
        if (c == 0)
            return &cfg->entries[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (at)
        *at = lo;
    return NULL;
}

static es_err put_entry(es_config_t *cfg, const char *key, const char *value) {
    size_t at = 0;
    entry *e = find_entry(cfg, key, &at);
    char *v = strdup(value);
    if (!v)
        return ES_ENOMEM;
    if (e) {
        free(e->value);
        e->value = v;
        return ES_OK;
    }
    char *k = strdup(key);
    if (k && cfg->n == cfg->cap) {
        size_t cap = cfg->cap ? cfg->cap * 2 : 16;
        entry *ne = realloc(cfg->entries, cap * sizeof *ne);
        if (ne) {
            cfg->entries = ne;
            cfg->cap = cap;
        }
    }
    if (!k || cfg->n == cfg->cap) {
        free(k);
        free(v);
        return ES_ENOMEM;
    }
    memmove(&cfg->entries[at + 1], &cfg->entries[at], (cfg->n - at) * sizeof(entry));
    cfg->entries[at].key = k;
    cfg->entries[at].value = v;
    cfg->n++;
    return ES_OK;
}

es_err es_config_set(es_config_t *cfg, const char *key, const char *value, es_error_t *err) {
    if (!cfg || !key || !value)
        return es_fail(err, ES_EINVAL, "es_config_set: config, key and value are required");
    es_err rc = check_key(key, value, err);
    if (rc != ES_OK)
        return rc;
    if (put_entry(cfg, key, value) != ES_OK)
        return es_fail(err, ES_ENOMEM, "out of memory setting config key '%s'", key);
    return ES_OK;
}

const char *es_config_get(const es_config_t *cfg, const char *key) {
    entry *e = cfg ? find_entry(cfg, key, NULL) : NULL;
    if (e)
        return e->value;
    if (key && !strcmp(key, "backend"))
        return es_config_get(cfg, "brokers") ? "kafka" : "embedded";
    const key_spec *spec = key ? find_spec(key) : NULL;
    return spec ? spec->def : NULL;
}

long long es_config_get_int(const es_config_t *cfg, const char *key) {
    const char *v = es_config_get(cfg, key);
    return v ? strtoll(v, NULL, 10) : 0;
}

es_config_t *es_config_dup(const es_config_t *cfg) {
    es_config_t *d = es_config_new();
    if (!d || !cfg)
        return d;
    for (size_t i = 0; i < cfg->n; i++) {
        if (put_entry(d, cfg->entries[i].key, cfg->entries[i].value) != ES_OK) {
            es_config_destroy(d);
            return NULL;
        }
    }
    d->log_cb = cfg->log_cb;
    d->log_opaque = cfg->log_opaque;
    d->span_cb = cfg->span_cb;
    d->span_opaque = cfg->span_opaque;
    if (cfg->upcasts && !(d->upcasts = es_upcast_set_dup(cfg->upcasts))) {
        es_config_destroy(d);
        return NULL;
    }
    return d;
}

void es_config_foreach(const es_config_t *cfg,
                       void (*fn)(const char *key, const char *value, void *opaque), void *opaque) {
    for (size_t i = 0; cfg && i < cfg->n; i++)
        fn(cfg->entries[i].key, cfg->entries[i].value, opaque);
}

void es_config_set_log_cb(es_config_t *cfg, es_log_cb *cb, void *opaque) {
    cfg->log_cb = cb;
    cfg->log_opaque = opaque;
}

void es_config_set_span_cb(es_config_t *cfg, es_span_cb *cb, void *opaque) {
    cfg->span_cb = cb;
    cfg->span_opaque = opaque;
}

es_span_cb *es_config_span_cb(const es_config_t *cfg, void **opaque) {
    if (!cfg)
        return NULL;
    *opaque = cfg->span_opaque;
    return cfg->span_cb;
}

void es_logf(const es_config_t *cfg, int level, const char *fmt, ...) {
    if (!cfg || !cfg->log_cb)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    es_escape_in_place(line, sizeof line); /* one line, whatever data it quotes */
    cfg->log_cb(level, line, cfg->log_opaque);
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* "kafka.ssl.engine.id" -> "ESKIT_KAFKA_SSL_ENGINE_ID", the variable that sets key. */
static void key_to_env(const char *key, char *out, size_t cap) {
    size_t n = (size_t)snprintf(out, cap, "ESKIT_");
    for (; *key && n + 1 < cap; key++)
        out[n++] = *key == '.' ? '_' : (char)toupper((unsigned char)*key);
    out[n < cap ? n : cap - 1] = '\0';
}

/* How a config file came to be read: named by the process (trusted as it is) or found in the
 * working directory (read only when it passes found_file_check, and never for code keys). */
typedef enum file_origin { FILE_NAMED, FILE_FOUND } file_origin;

#define TRUST_HOW                                                                                  \
    "if you trust it, name it with --config FILE or ESKIT_CONFIG=FILE (see docs/security.md)"

/* Why a found config file (st) in directory dst may not be read, as git refuses a repository
 * another user owns (CVE-2022-24765): whoever can write it or replace it could set anything. */
static es_err found_file_check(const char *path, const struct stat *st, const struct stat *dst,
                               es_error_t *err) {
    unsigned me = (unsigned)geteuid();
    char why[160];
    if (!S_ISREG(st->st_mode))
        snprintf(why, sizeof why, "it is %s, not a file", es_file_kind(st->st_mode));
    else if (st->st_uid != me)
        snprintf(why, sizeof why, "it is owned by uid %u, not by you (uid %u)",
                 (unsigned)st->st_uid, me);
    else if (st->st_mode & (S_IWGRP | S_IWOTH))
        snprintf(why, sizeof why, "%s can write to it (mode %04o)",
                 st->st_mode & S_IWOTH ? "every user" : "its group",
                 (unsigned)(st->st_mode & 07777));
    else if (dst->st_uid != me && !(dst->st_uid == 0 && (dst->st_mode & S_ISVTX)))
        snprintf(why, sizeof why, "its directory is owned by uid %u, not by you (uid %u)",
                 (unsigned)dst->st_uid, me);
    else if (es_dir_open_to_others(dst))
        snprintf(why, sizeof why, "every user can write to its directory (mode %04o)",
                 (unsigned)(dst->st_mode & 07777));
    else
        return ES_OK;
    return es_fail(err, ES_EINVAL, "refusing %s, found in the working directory: %s; " TRUST_HOW,
                   path, why);
}

/* Opens a config file to read: a named one as named, a found one without following a symlink
 * and only after found_file_check, both only when they are regular files. */
static es_err open_config(const char *path, file_origin origin, FILE **out, es_error_t *err) {
    const int flags = O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
    const char *base = path;
    int dfd = AT_FDCWD, fd = -1;
    struct stat st, dst;
    es_err e = ES_OK;
    *out = NULL;
    /* A working directory the user may not search holds no config for them: nothing found. */
    if (origin == FILE_FOUND && (dfd = es_open_parent(path, &base)) < 0)
        return es_fail(err, errno == EACCES ? ES_ENOTFOUND : ES_EIO,
                       "cannot open the directory of config file %s: %s", path, strerror(errno));
    fd = openat(dfd, base, flags | (origin == FILE_FOUND ? O_NOFOLLOW : 0));
    if (fd < 0 && origin == FILE_FOUND && errno == EACCES)
        e = es_fail(err, ES_ENOTFOUND, "cannot read config file %s: %s", path, strerror(errno));
    else if (fd < 0 && origin == FILE_FOUND && errno == ELOOP)
        e = es_fail(
            err, ES_EINVAL,
            "refusing %s, found in the working directory: it is a symbolic link; " TRUST_HOW, path);
    else if (fd < 0)
        e = es_fail(err, errno == ENOENT ? ES_ENOTFOUND : ES_EIO, "cannot read config file %s: %s",
                    path, strerror(errno));
    else if (fstat(fd, &st) != 0 || (origin == FILE_FOUND && fstat(dfd, &dst) != 0))
        e = es_fail(err, ES_EIO, "cannot inspect config file %s: %s", path, strerror(errno));
    else if (origin == FILE_FOUND)
        e = found_file_check(path, &st, &dst, err);
    else if (!S_ISREG(st.st_mode))
        e = es_fail(err, ES_EINVAL, "config file %s is %s, not a file; name a config file", path,
                    es_file_kind(st.st_mode));
    if (dfd != AT_FDCWD)
        close(dfd);
    if (e == ES_OK && !(*out = fdopen(fd, "r")))
        e = es_fail(err, ES_ENOMEM, "cannot read config file %s: %s", path, strerror(errno));
    if (e != ES_OK && fd >= 0)
        close(fd);
    return e;
}

/* One "key = value" line (comments and blanks are nothing); errors without the file:line. */
static es_err parse_line(es_config_t *cfg, char *line, file_origin origin, es_error_t *err) {
    char *hash = strchr(line, '#');
    if (hash)
        *hash = '\0';
    char *s = trim(line);
    if (!*s)
        return ES_OK;
    char *eq = strchr(s, '=');
    if (!eq)
        return es_fail(err, ES_EINVAL, "expected 'key = value', got '%.200s'", s);
    *eq = '\0';
    const char *key = trim(s);
    if (origin == FILE_FOUND && find_code_key(key)) {
        char var[128];
        key_to_env(key, var, sizeof var);
        return es_fail(err, ES_EINVAL,
                       "%s loads code, so eskit does not take it from an eskit.conf found in the "
                       "working directory; set it in a file named with --config FILE or "
                       "ESKIT_CONFIG, or as %s (see docs/security.md)",
                       key, var);
    }
    return es_config_set(cfg, key, trim(eq + 1), err);
}

static es_err load_file(es_config_t *cfg, const char *path, file_origin origin, es_error_t *err) {
    FILE *f = NULL;
    es_err rc = open_config(path, origin, &f, err);
    if (rc != ES_OK)
        return rc;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    /* getline, not a fixed buffer: the tail of a long line must never read as a line. */
    while (rc == ES_OK && (n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (memchr(line, '\0', (size_t)n))
            rc = es_fail(err, ES_EINVAL, "the line holds a NUL byte; is it a config file?");
        else
            rc = parse_line(cfg, line, origin, err);
        if (rc != ES_OK)
            es_error_prefix(err, "%s:%ld: ", path, lineno);
    }
    if (rc == ES_OK && ferror(f))
        rc = es_fail(err, ES_EIO, "reading config file %s: %s", path, strerror(errno));
    free(line);
    fclose(f);
    return rc;
}

es_err es_config_load_file(es_config_t *cfg, const char *path, es_error_t *err) {
    if (!cfg || !path)
        return es_fail(err, ES_EINVAL, "es_config_load_file: config and path are required");
    return load_file(cfg, path, FILE_NAMED, err);
}

/* ESKIT_SNAPSHOT_EVERY -> snapshot.every; ESKIT_KAFKA_LINGER_MS -> kafka.linger.ms */
static int env_to_key(const char *name, char *key, size_t cap) {
    if (!strncmp(name, "KAFKA_", 6)) {
        int n = snprintf(key, cap, "kafka.%s", name + 6);
        for (char *p = key + 6; *p; p++)
            *p = *p == '_' ? '.' : (char)tolower((unsigned char)*p);
        return n > 6 && (size_t)n < cap;
    }
    for (size_t i = 0; i < N_KEYS; i++) {
        const char *k = keys[i].key, *n = name;
        for (; *k && *n; k++, n++)
            if ((*k == '.' ? '_' : toupper((unsigned char)*k)) != *n)
                break;
        if (!*k && !*n) {
            snprintf(key, cap, "%s", keys[i].key);
            return 1;
        }
    }
    return 0;
}

es_err es_config_load_env(es_config_t *cfg, es_error_t *err) {
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, "ESKIT_", 6))
            continue;
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        char name[256], key[256];
        snprintf(name, sizeof name, "%.*s", (int)(eq - *e - 6), *e + 6);
        if (!strcmp(name, "CONFIG"))
            continue;
        if (!env_to_key(name, key, sizeof key))
            return es_fail(err, ES_EINVAL,
                           "unknown environment variable ESKIT_%s: no config key matches; "
                           "unset it or see the keys in eskit/config.h",
                           name);
        es_err rc = es_config_set(cfg, key, eq + 1, err);
        if (rc != ES_OK) {
            es_error_prefix(err, "environment variable ESKIT_%s: ", name);
            return rc;
        }
    }
    return ES_OK;
}

es_err es_config_load_sources(es_config_t *cfg, es_error_t *err) {
    const char *path = getenv("ESKIT_CONFIG");
    es_err rc = ES_OK;
    if (path && *path) {
        rc = load_file(cfg, path, FILE_NAMED, err);
        if (rc != ES_OK)
            es_error_prefix(err, "ESKIT_CONFIG: ");
    } else {
        rc = load_file(cfg, "eskit.conf", FILE_FOUND, err);
        if (rc == ES_ENOTFOUND)
            rc = ES_OK;
    }
    return rc == ES_OK ? es_config_load_env(cfg, err) : rc;
}
