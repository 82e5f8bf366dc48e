/* The process's metrics registry and the Prometheus text exposition (metrics_int.h). */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "metrics_int.h"

const es_mx_buckets es_mx_seconds = {
    14,
    {100000ULL, 250000ULL, 500000ULL, 1000000ULL, 2500000ULL, 5000000ULL, 10000000ULL, 25000000ULL,
     50000000ULL, 100000000ULL, 250000000ULL, 1000000000ULL, 2500000000ULL, 10000000000ULL},
    1e-9};
const es_mx_buckets es_mx_long_seconds = {
    11,
    {10000000ULL, 50000000ULL, 100000000ULL, 500000000ULL, 1000000000ULL, 5000000000ULL,
     10000000000ULL, 30000000000ULL, 60000000000ULL, 300000000000ULL, 600000000000ULL},
    1e-9};
const es_mx_buckets es_mx_sizes = {7, {1, 4, 16, 64, 256, 1024, 4096}, 1.0};

void es_mx_hist_init(es_mx_hist *h, const es_mx_buckets *b) {
    h->b = b;
    for (size_t i = 0; i <= ES_MX_MAX_BUCKETS; i++)
        es_mx_set(&h->count[i], 0);
    es_mx_set(&h->sum, 0);
}

void es_mx_observe_n(es_mx_hist *h, uint64_t v, uint64_t n) {
    size_t i = 0;
    while (i < h->b->n && v > h->b->bound[i])
        i++;
    es_mx_add(&h->count[i], n);
    es_mx_add(&h->sum, v * n);
}

void es_mx_observe(es_mx_hist *h, uint64_t v) {
    es_mx_observe_n(h, v, 1);
}

/* ---- samples ----------------------------------------------------------------------------- */

typedef struct sample {
    const char *family, *help;
    es_mx_type type;
    char *labels;
    double value;
    const es_mx_buckets *b; /* histograms */
    uint64_t count[ES_MX_MAX_BUCKETS + 1];
    uint64_t sum;
    size_t seq; /* order of arrival, to keep the sort stable */
} sample;

struct es_mx_sink {
    sample *s;
    size_t n, cap;
    bool failed; /* out of memory: the scrape fails rather than lie */
};

static sample *sink_push(es_mx_sink *k, const char *family, es_mx_type type, const char *help,
                         const char *labels) {
    if (k->failed)
        return NULL;
    if (es_grow((void **)&k->s, &k->cap, k->n, sizeof *k->s, NULL) != ES_OK) {
        k->failed = true;
        return NULL;
    }
    sample *s = &k->s[k->n];
    memset(s, 0, sizeof *s);
    if (!(s->labels = strdup(labels ? labels : ""))) {
        k->failed = true;
        return NULL;
    }
    s->family = family;
    s->help = help;
    s->type = type;
    s->seq = k->n++;
    return s;
}

void es_mx_sample(es_mx_sink *k, const char *family, es_mx_type type, const char *help,
                  const char *labels, double value) {
    sample *s = sink_push(k, family, type, help, labels);
    if (s)
        s->value = value;
}

void es_mx_sample_hist(es_mx_sink *k, const char *family, const char *help, const char *labels,
                       const es_mx_hist *h) {
    sample *s = sink_push(k, family, ES_MX_HISTOGRAM, help, labels);
    if (!s)
        return;
    s->b = h->b;
    for (size_t i = 0; i <= h->b->n; i++)
        s->count[i] = es_mx_get(&h->count[i]);
    s->sum = es_mx_get(&h->sum);
}

char *es_mx_labels(char *buf, size_t cap, ...) {
    va_list ap;
    size_t at = 0;
    if (!cap)
        return buf;
    buf[0] = '\0';
    va_start(ap, cap);
    for (const char *k; (k = va_arg(ap, const char *));) {
        const char *v = va_arg(ap, const char *);
        if (!v)
            continue;
        int w = snprintf(buf + at, cap - at, "%s%s=\"", at ? "," : "", k);
        if (w < 0 || (size_t)w >= cap - at)
            break;
        at += (size_t)w;
        for (; *v && at + 3 < cap; v++) { /* escaped as the text format says: \\ \" \n */
            if (*v == '\\' || *v == '"' || *v == '\n') {
                buf[at++] = '\\';
                buf[at++] = *v == '\n' ? 'n' : *v;
            } else {
                buf[at++] = *v;
            }
        }
        if (at + 2 > cap)
            break;
        buf[at++] = '"';
        buf[at] = '\0';
    }
    va_end(ap);
    return buf;
}

/* ---- health ------------------------------------------------------------------------------ */

struct es_mx_health {
    es_buf_t text;
    bool bad;
};

void es_mx_unhealthy(es_mx_health *h, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t len = strlen(line);
    line[len++] = '\n';
    h->bad = true;
    (void)es_buf_append(&h->text, line, len, NULL);
}

/* ---- registry ---------------------------------------------------------------------------- */

typedef struct server_ref {
    struct server_ref *next;
    char *listen;
    es_mx_server *server;
    int refs;
} server_ref;

struct es_mx_source {
    es_mx_source *next;
    es_mx_collect_fn *collect;
    es_mx_health_fn *health;
    void *self;
    server_ref *server;
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static es_mx_source *sources;
/* Servers start and stop under a lock of their own: a server's handler takes reg_lock, so
 * stopping one (which waits for its handler) while holding reg_lock would deadlock. */
static pthread_mutex_t server_lock = PTHREAD_MUTEX_INITIALIZER;
static server_ref *servers;

bool es_mx_enabled(const es_config_t *cfg) {
    const char *v = cfg ? es_config_get(cfg, "metrics.enabled") : NULL;
    return !v || strcmp(v, "false") != 0;
}

static es_err server_acquire(const char *listen, server_ref **out, es_error_t *err) {
    pthread_mutex_lock(&server_lock);
    server_ref *r = servers;
    while (r && strcmp(r->listen, listen))
        r = r->next;
    es_err e = ES_OK;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r || !(r->listen = strdup(listen))) {
            free(r);
            pthread_mutex_unlock(&server_lock);
            return es_fail(err, ES_ENOMEM, "out of memory starting the metrics server");
        }
        if ((e = es_mx_server_start(listen, &r->server, err)) != ES_OK) {
            free(r->listen);
            free(r);
            pthread_mutex_unlock(&server_lock);
            return e;
        }
        r->next = servers;
        servers = r;
    }
    r->refs++;
    *out = r;
    pthread_mutex_unlock(&server_lock);
    return ES_OK;
}

static void server_release(server_ref *r) {
    if (!r)
        return;
    pthread_mutex_lock(&server_lock);
    if (--r->refs == 0) {
        for (server_ref **p = &servers; *p; p = &(*p)->next)
            if (*p == r) {
                *p = r->next;
                break;
            }
        es_mx_server_stop(r->server);
        free(r->listen);
        free(r);
    }
    pthread_mutex_unlock(&server_lock);
}

es_err es_mx_register(const es_config_t *cfg, es_mx_collect_fn *collect, es_mx_health_fn *health,
                      void *self, es_mx_source **out, es_error_t *err) {
    *out = NULL;
    if (!es_mx_enabled(cfg))
        return ES_OK;
    es_mx_source *src = calloc(1, sizeof *src);
    if (!src)
        return es_fail(err, ES_ENOMEM, "out of memory registering metrics");
    src->collect = collect;
    src->health = health;
    src->self = self;
    const char *listen = es_config_get(cfg, "metrics.listen");
    if (listen && *listen) {
        es_err e = server_acquire(listen, &src->server, err);
        if (e != ES_OK) {
            free(src);
            return e;
        }
    }
    pthread_mutex_lock(&reg_lock);
    src->next = sources;
    sources = src;
    pthread_mutex_unlock(&reg_lock);
    *out = src;
    return ES_OK;
}

void es_mx_unregister(es_mx_source *src) {
    if (!src)
        return;
    pthread_mutex_lock(&reg_lock);
    for (es_mx_source **p = &sources; *p; p = &(*p)->next)
        if (*p == src) {
            *p = src->next;
            break;
        }
    pthread_mutex_unlock(&reg_lock);
    server_release(src->server);
    free(src);
}

int es_metrics_port(void) {
    pthread_mutex_lock(&server_lock);
    int port = 0;
    for (server_ref *r = servers; r; r = r->next)
        port = es_mx_server_port(r->server); /* the list is newest first: the last is the first */
    pthread_mutex_unlock(&server_lock);
    return port;
}

/* ---- exposition -------------------------------------------------------------------------- */

static int by_series(const void *a, const void *b) {
    const sample *x = a, *y = b;
    int c = strcmp(x->family, y->family);
    if (!c)
        c = strcmp(x->labels, y->labels);
    if (!c)
        c = x->seq < y->seq ? -1 : x->seq > y->seq;
    return c;
}

static void put_value(es_buf_t *b, double v, bool *ok) {
    char num[40];
    if (isnan(v))
        snprintf(num, sizeof num, "NaN");
    else if (isinf(v))
        snprintf(num, sizeof num, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        snprintf(num, sizeof num, "%.0f", v);
    else if (snprintf(num, sizeof num, "%.15g", v) > 0 && strtod(num, NULL) != v)
        snprintf(num, sizeof num, "%.17g", v); /* the shortest that reads back the same */
    if (es_buf_append(b, num, strlen(num), NULL) != ES_OK)
        *ok = false;
}

static void put(es_buf_t *b, bool *ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void put(es_buf_t *b, bool *ok, const char *fmt, ...) {
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || es_buf_reserve(b, (size_t)n + 1) != ES_OK) {
        *ok = false;
    } else {
        vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, again);
        b->len += (size_t)n;
    }
    va_end(again);
}

/* One series line: family+suffix{labels[,extra]} value. */
static void put_series(es_buf_t *b, bool *ok, const char *family, const char *suffix,
                       const char *labels, const char *extra, double v) {
    bool any = *labels || extra;
    put(b, ok, "%s%s%s%s%s%s%s ", family, suffix, any ? "{" : "", labels,
        *labels && extra ? "," : "", extra ? extra : "", any ? "}" : "");
    put_value(b, v, ok);
    put(b, ok, "\n");
}

static void put_hist(es_buf_t *b, bool *ok, const sample *s) {
    uint64_t cum = 0;
    char le[64];
    for (size_t i = 0; i <= s->b->n; i++) {
        cum += s->count[i];
        if (i < s->b->n)
            snprintf(le, sizeof le, "le=\"%.9g\"", (double)s->b->bound[i] * s->b->scale);
        else
            snprintf(le, sizeof le, "le=\"+Inf\"");
        put_series(b, ok, s->family, "_bucket", s->labels, le, (double)cum);
    }
    put_series(b, ok, s->family, "_sum", s->labels, NULL, (double)s->sum * s->b->scale);
    put_series(b, ok, s->family, "_count", s->labels, NULL, (double)cum);
}

static const char *type_name(es_mx_type t) {
    return t == ES_MX_COUNTER ? "counter" : t == ES_MX_GAUGE ? "gauge" : "histogram";
}

/* Adds s into into (same family and labels). */
static void merge(sample *into, const sample *s) {
    into->value += s->value;
    into->sum += s->sum;
    if (into->b && into->b == s->b)
        for (size_t i = 0; i <= s->b->n; i++)
            into->count[i] += s->count[i];
}

static es_err render(es_mx_sink *k, es_buf_t *out, es_error_t *err) {
    bool ok = !k->failed;
    qsort(k->s, k->n, sizeof *k->s, by_series);
    for (size_t i = 0; i < k->n && ok;) {
        const char *family = k->s[i].family;
        put(out, &ok, "# HELP %s %s\n# TYPE %s %s\n", family, k->s[i].help, family,
            type_name(k->s[i].type));
        for (; i < k->n && !strcmp(k->s[i].family, family); i++) {
            sample *s = &k->s[i];
            while (i + 1 < k->n && !strcmp(k->s[i + 1].family, family) &&
                   !strcmp(k->s[i + 1].labels, s->labels))
                merge(s, &k->s[++i]);
            if (s->type == ES_MX_HISTOGRAM)
                put_hist(out, &ok, s);
            else
                put_series(out, &ok, family, "", s->labels, NULL, s->value);
        }
    }
    return ok ? ES_OK : es_fail(err, ES_ENOMEM, "out of memory writing the metrics");
}

static void sink_free(es_mx_sink *k) {
    for (size_t i = 0; i < k->n; i++)
        free(k->s[i].labels);
    free(k->s);
}

static void sample_build_info(es_mx_sink *k) {
    char labels[64];
    es_mx_sample(k, "eskit_build_info", ES_MX_GAUGE, "The eskit library's version.",
                 es_mx_labels(labels, sizeof labels, "version", es_version(NULL, NULL, NULL),
                              (const char *)NULL),
                 1);
}

es_mx_sink *es_mx_sink_new(void) {
    es_mx_sink *k = calloc(1, sizeof *k);
    if (k)
        sample_build_info(k);
    return k;
}

es_err es_mx_sink_render(es_mx_sink *k, es_buf_t *out, es_error_t *err) {
    return render(k, out, err);
}

void es_mx_sink_destroy(es_mx_sink *k) {
    if (!k)
        return;
    sink_free(k);
    free(k);
}

/* The whole exposition, allocated (metrics_http.c serves it). */
es_err es_mx_expose(es_buf_t *out, es_error_t *err) {
    es_mx_sink k = {0};
    sample_build_info(&k);
    pthread_mutex_lock(&reg_lock);
    for (es_mx_source *s = sources; s; s = s->next)
        s->collect(s->self, &k);
    pthread_mutex_unlock(&reg_lock);
    es_err e = render(&k, out, err);
    sink_free(&k);
    return e;
}

es_err es_metrics_write(char *buf, size_t cap, size_t *len, es_error_t *err) {
    if (!buf && cap)
        return es_fail(err, ES_EINVAL, "es_metrics_write: cap %zu with no buffer (NULL)", cap);
    es_buf_t out = {0};
    es_err e = es_mx_expose(&out, err);
    if (e != ES_OK) {
        es_buf_free(&out);
        return e;
    }
    if (len)
        *len = out.len;
    if (out.len + 1 > cap) {
        if (cap)
            buf[0] = '\0';
        e = buf ? es_fail(err, ES_EINVAL,
                          "the metrics take %zu bytes and a NUL; the buffer holds %zu: call again "
                          "with a larger one",
                          out.len, cap)
                : ES_OK;
    } else {
        if (out.len)
            memcpy(buf, out.data, out.len);
        buf[out.len] = '\0';
    }
    es_buf_free(&out);
    return e;
}

bool es_metrics_health(char *buf, size_t cap) {
    es_mx_health h = {0};
    pthread_mutex_lock(&reg_lock);
    for (es_mx_source *s = sources; s; s = s->next)
        if (s->health)
            s->health(s->self, &h);
    pthread_mutex_unlock(&reg_lock);
    if (cap) {
        const char *text = h.bad ? (h.text.data ? (const char *)h.text.data : "") : "ok\n";
        size_t n = h.bad ? h.text.len : 3;
        if (n > cap - 1)
            n = cap - 1;
        memcpy(buf, text, n);
        buf[n] = '\0';
    }
    es_buf_free(&h.text);
    return !h.bad;
}
