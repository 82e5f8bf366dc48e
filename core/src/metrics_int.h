/*
 * The metrics registry inside the library (metrics.c; docs/observability.md).
 *
 * Hot path: a component keeps es_mx_counter and es_mx_hist fields of its own and bumps them with
 * relaxed atomic adds; nothing locks. Scrape side: a component registers a source (a collect and
 * a health function over its own fields) while it lives; a scrape holds the registry's lock while
 * it calls them, so es_mx_unregister, which takes the same lock, returns only when no scrape is
 * reading the component any more.
 */
#ifndef ESKIT_METRICS_INT_H
#define ESKIT_METRICS_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <eskit/config.h>
#include <eskit/error.h>

typedef _Atomic uint64_t es_mx_counter;

static inline void es_mx_add(es_mx_counter *c, uint64_t n) {
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}
static inline uint64_t es_mx_get(const es_mx_counter *c) {
    return atomic_load_explicit((es_mx_counter *)c, memory_order_relaxed);
}
static inline void es_mx_set(es_mx_counter *c, uint64_t v) {
    atomic_store_explicit(c, v, memory_order_relaxed);
}

/* A monotonic clock in nanoseconds, for durations. */
static inline uint64_t es_mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Bucket upper bounds of a histogram, in the integer unit it observes (nanoseconds, records),
 * and the factor to the base unit it is exposed in (1e-9 for seconds). */
#define ES_MX_MAX_BUCKETS 16
typedef struct es_mx_buckets {
    size_t n;
    uint64_t bound[ES_MX_MAX_BUCKETS];
    double scale;
} es_mx_buckets;

/* Durations, observed in nanoseconds and exposed in seconds: 100 us to 10 s. */
extern const es_mx_buckets es_mx_seconds;
/* Long durations (restores): 10 ms to 10 min. */
extern const es_mx_buckets es_mx_long_seconds;
/* Sizes (commands per batch): 1 to 4096, powers of 4. */
extern const es_mx_buckets es_mx_sizes;

typedef struct es_mx_hist {
    const es_mx_buckets *b;
    es_mx_counter count[ES_MX_MAX_BUCKETS + 1]; /* per bucket, not cumulative; last: +Inf */
    es_mx_counter sum;                          /* in the observed unit */
} es_mx_hist;

void es_mx_hist_init(es_mx_hist *h, const es_mx_buckets *b);
void es_mx_observe(es_mx_hist *h, uint64_t v);
/* n observations of v at once (the commands of one batch share its duration). */
void es_mx_observe_n(es_mx_hist *h, uint64_t v, uint64_t n);

/* ---- scrape side ------------------------------------------------------------------------- */

typedef enum es_mx_type { ES_MX_COUNTER, ES_MX_GAUGE, ES_MX_HISTOGRAM } es_mx_type;

typedef struct es_mx_sink es_mx_sink;
typedef struct es_mx_health es_mx_health;

/* One sample of family (a name of docs/observability.md's table) with labels, formatted by
 * es_mx_labels ("" for none). Samples of one family and labels from several sources add up. */
void es_mx_sample(es_mx_sink *s, const char *family, es_mx_type type, const char *help,
                  const char *labels, double value);
void es_mx_sample_hist(es_mx_sink *s, const char *family, const char *help, const char *labels,
                       const es_mx_hist *h);
/* Formats name/value pairs, ending with NULL, as Prometheus labels (k="v",...; values escaped)
 * into buf; a pair with a NULL value is left out. Returns buf. */
char *es_mx_labels(char *buf, size_t cap, ...) __attribute__((sentinel));
/* A reason the component is not healthy, one line. */
void es_mx_unhealthy(es_mx_health *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

typedef void es_mx_collect_fn(void *self, es_mx_sink *s);
typedef void es_mx_health_fn(void *self, es_mx_health *h);

typedef struct es_mx_source es_mx_source;

/* Whether cfg turns metrics on (metrics.enabled). A component that is off keeps no source and
 * may skip its counting. */
bool es_mx_enabled(const es_config_t *cfg);
/* Registers a source over self (health may be NULL). When cfg has metrics.listen, the server on
 * that address starts with the first source that names it: an address that cannot be listened
 * on fails with ES_EINVAL naming the key. With metrics off: *out NULL and ES_OK. */
es_err es_mx_register(const es_config_t *cfg, es_mx_collect_fn *collect, es_mx_health_fn *health,
                      void *self, es_mx_source **out, es_error_t *err);
/* Leaves the registry (NULL is fine), after the scrape under way; stops the source's server when
 * it was the last one of it. */
void es_mx_unregister(es_mx_source *src);

/* A sink of its own, outside the registry, for series computed from files rather than counted
 * by live components (metrics_offline.c): it holds eskit_build_info from the start. */
es_mx_sink *es_mx_sink_new(void);
/* Writes the sink's samples into out in the text format, families grouped and merged. */
es_err es_mx_sink_render(es_mx_sink *s, es_buf_t *out, es_error_t *err);
void es_mx_sink_destroy(es_mx_sink *s);

/* The whole exposition into out (what es_metrics_write and /metrics give). */
typedef struct es_buf es_buf_t;
es_err es_mx_expose(es_buf_t *out, es_error_t *err);

/* ---- HTTP (metrics_http.c) --------------------------------------------------------------- */

typedef struct es_mx_server es_mx_server;
/* Starts serving on listen (HOST:PORT). */
es_err es_mx_server_start(const char *listen, es_mx_server **out, es_error_t *err);
void es_mx_server_stop(es_mx_server *s);
int es_mx_server_port(const es_mx_server *s);
/* Checks HOST:PORT without resolving it: what config.c's check of metrics.listen runs. */
es_err es_mx_listen_parse(const char *listen, char *host, size_t host_cap, int *port,
                          es_error_t *err);

#endif
