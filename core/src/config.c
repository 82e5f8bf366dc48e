/*
 * es_config_t: explicit settings in a sorted array, defaults in a static key
 * table. Every value is checked when set, so a config that exists is valid;
 * kafka.* values are checked by librdkafka itself on a scratch conf.
 */
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
};

static es_err check_nonempty(const char *key, const char *value, es_error_t *err) {
    if (!*value)
        return es_fail(err, ES_EINVAL, "config key '%s' needs a value", key);
    return ES_OK;
}

static es_err check_backend(const char *key, const char *value, es_error_t *err) {
    if (strcmp(value, "embedded") && strcmp(value, "kafka"))
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

static es_err check_positive(const char *key, const char *value, es_error_t *err) {
    es_err e = check_uint(key, value, err);
    if (e == ES_OK && atoll(value) == 0)
        return es_fail(err, ES_EINVAL, "config key '%s' must be at least 1", key);
    return e;
}

static const key_spec keys[] = {
    {"backend", NULL, check_backend},
    {"brokers", NULL, check_nonempty},
    {"cache.aggregates", "10000", check_uint},
    {"db", "eskit.db", check_nonempty},
    {"execute.timeout.ms", "30000", check_uint},
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
    {"service.name", "eskit", check_nonempty},
    {"snapshot.every", "1", check_uint},
    {"sqlite.busy.timeout.ms", "10000", check_uint},
    {"sqlite.synchronous", "full", check_synchronous},
    {"state.db", "eskit-state.db", check_nonempty},
    {"topics.aggregates", NULL, check_nonempty},
    {"topics.consumers", "1", check_uint},
    {"topics.partition.throughput", "5000", check_positive},
    {"topics.throughput", "1000", check_uint},
};
#define N_KEYS (sizeof keys / sizeof *keys)

static const key_spec *find_spec(const char *key) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (!strcmp(keys[i].key, key))
            return &keys[i];
    return NULL;
}

static es_err check_kafka(const char *key, const char *value, es_error_t *err) {
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_res_t r = rd_kafka_conf_set(conf, key + 6, value, errstr, sizeof errstr);
    rd_kafka_conf_destroy(conf);
    if (r != RD_KAFKA_CONF_OK)
        return es_fail(err, ES_EINVAL, "config key '%s': %s", key, errstr);
    return ES_OK;
}

static es_err check_key(const char *key, const char *value, es_error_t *err) {
    if (!strncmp(key, "kafka.", 6) && key[6])
        return check_kafka(key, value, err);
    const key_spec *spec = find_spec(key);
    if (!spec)
        return es_fail(
            err, ES_EINVAL,
            /* Grouped by prefix: the full list must fit in es_error_t's 512 bytes. */
            "unknown config key '%.64s'; known keys: backend, brokers, cache.aggregates, db, "
            "execute.timeout.ms, projector.{apply.timeout.ms, batch.size, crash.restarts, "
            "linger.ms, log.order, "
            "on.error, on.unknown, path, retries, retry.backoff.ms}, readmodel.db, "
            "replay.batch.size, saga.{db, retention.ms}, service.name, snapshot.every, "
            "sqlite.{busy.timeout.ms, synchronous}, state.db, topics.aggregates, "
            "topics.consumers, topics.partition.throughput, topics.throughput, "
            "kafka.<librdkafka property>",
            key);
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
    cfg->entries[at] = (entry){k, v};
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

void es_logf(const es_config_t *cfg, int level, const char *fmt, ...) {
    if (!cfg || !cfg->log_cb)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
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

es_err es_config_load_file(es_config_t *cfg, const char *path, es_error_t *err) {
    FILE *f = fopen(path, "r");
    if (!f)
        return es_fail(err, errno == ENOENT ? ES_ENOTFOUND : ES_EIO,
                       "cannot read config file %s: %s", path, strerror(errno));
    char line[4096];
    es_err rc = ES_OK;
    for (int lineno = 1; rc == ES_OK && fgets(line, sizeof line, f); lineno++) {
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = trim(line);
        if (!*s)
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc =
                es_fail(err, ES_EINVAL, "%s:%d: expected 'key = value', got '%s'", path, lineno, s);
            break;
        }
        *eq = '\0';
        rc = es_config_set(cfg, trim(s), trim(eq + 1), err);
        if (rc != ES_OK)
            es_error_prefix(err, "%s:%d: ", path, lineno);
    }
    fclose(f);
    return rc;
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
        rc = es_config_load_file(cfg, path, err);
        if (rc != ES_OK)
            es_error_prefix(err, "ESKIT_CONFIG: ");
    } else {
        rc = es_config_load_file(cfg, "eskit.conf", err);
        if (rc == ES_ENOTFOUND)
            rc = ES_OK;
    }
    return rc == ES_OK ? es_config_load_env(cfg, err) : rc;
}
