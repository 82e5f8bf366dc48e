#include "util.h"

#include "domain.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int64_t bench_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t bench_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

uint32_t bench_rng_below(bench_rng_t *rng, uint32_t n) {
    rng->s ^= rng->s >> 12;
    rng->s ^= rng->s << 25;
    rng->s ^= rng->s >> 27;
    return (uint32_t)((rng->s * 2685821657736338717ULL) >> 32) % n;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted samples. */
static double pct_us(const int64_t *sorted, size_t n, double p) {
    size_t rank = (size_t)ceil(p * (double)n);
    if (rank < 1)
        rank = 1;
    return (double)sorted[rank - 1] / 1000.0;
}

bench_lat_t bench_lat_summary(int64_t *ns, size_t n) {
    bench_lat_t s = {0, 0, 0};
    if (n == 0)
        return s;
    qsort(ns, n, sizeof *ns, cmp_i64);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)ns[i];
    s.p50_us = pct_us(ns, n, 0.50);
    s.p99_us = pct_us(ns, n, 0.99);
    s.mean_us = sum / (double)n / 1000.0;
    return s;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts v in place. */
static double median(double *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* One run's events per second of CPU time. */
static int timed_run(bench_metrics_run_fn *run, void *ctx, bool metrics, double *per_cpu_s) {
    double events = 0;
    int64_t c0 = bench_cpu_ns();
    int rc = run(ctx, metrics, &events);
    int64_t ns = bench_cpu_ns() - c0;
    *per_cpu_s = rc == 0 && ns > 0 ? events * 1e9 / (double)ns : 0;
    return rc;
}

int bench_alternate(bench_metrics_run_fn *run, void *ctx, size_t pairs, bench_alt_t *out) {
    double *r_on = calloc(pairs ? pairs : 1, sizeof *r_on);
    double *r_off = calloc(pairs ? pairs : 1, sizeof *r_off);
    double *ratio = calloc(pairs ? pairs : 1, sizeof *ratio);
    int rc = r_on && r_off && ratio && pairs ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < pairs; i++) {
        bool first = i % 2 == 0; /* metrics on first in even pairs, off first in odd ones */
        rc = timed_run(run, ctx, first, first ? &r_on[i] : &r_off[i]);
        rc = rc ? rc : timed_run(run, ctx, !first, first ? &r_off[i] : &r_on[i]);
        ratio[i] = r_off[i] > 0 ? r_on[i] / r_off[i] : 0;
    }
    if (rc == 0) {
        out->ratio_mid = median(ratio, pairs); /* sorts: lowest first */
        out->ratio_lo = ratio[0];
        out->ratio_hi = ratio[pairs - 1];
        out->on = median(r_on, pairs);
        out->off = median(r_off, pairs);
    }
    free(r_on);
    free(r_off);
    free(ratio);
    return rc;
}

int bench_db_path(char *out, size_t cap, const char *dir, const char *name) {
    int w = snprintf(out, cap, "%s/%s.db", dir, name);
    return (w < 0 || (size_t)w >= cap) ? -1 : 0;
}

void bench_db_remove(const char *path) {
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    char p[PATH_MAX];
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        snprintf(p, sizeof p, "%s%s", path, suffixes[i]);
        unlink(p);
    }
}

const char *bench_fmt_count(char *buf, size_t cap, double n) {
    char digits[32];
    snprintf(digits, sizeof digits, "%.0f", n < 0 ? 0 : n);
    size_t len = strlen(digits), j = 0;
    for (size_t i = 0; i < len && j + 2 < cap; i++) {
        if (i > 0 && (len - i) % 3 == 0)
            buf[j++] = ',';
        buf[j++] = digits[i];
    }
    buf[j] = '\0';
    return buf;
}

void bench_quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk, (void)level, (void)fac, (void)buf;
}

int bench_fail(const char *what, es_err rc, const es_error_t *err) {
    fprintf(stderr, "eskit-bench: %s: %s: %s\n", what, es_strerror(rc),
            err && err->message[0] ? err->message : "(no message)");
    return -1;
}

int bench_mock_topic(bench_mock_t *m, const char *topic, int partitions) {
    return rd_kafka_mock_topic_create(m->mock, topic, partitions, m->brokers < 3 ? m->brokers : 3)
               ? -1
               : 0;
}

int bench_mock_open(bench_mock_t *m, int brokers, const char *const *types, size_t n_types,
                    int partitions) {
    static const char *const kinds[] = {"events", "commands", "replies", "snapshots"};
    char errstr[256];
    *m = (bench_mock_t){0};
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, bench_quiet_log);
    if (rd_kafka_conf_set(conf, "socket.nagle.disable", "true", errstr, sizeof errstr) !=
        RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    m->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    m->mock = m->rk ? rd_kafka_mock_cluster_new(m->rk, brokers) : NULL;
    if (!m->mock)
        return -1;
    m->bootstrap = rd_kafka_mock_cluster_bootstraps(m->mock);
    m->brokers = brokers;
    for (size_t t = 0; t < n_types; t++)
        for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
            char topic[160];
            snprintf(topic, sizeof topic, "%s.%s", types[t], kinds[k]);
            if (bench_mock_topic(m, topic, partitions))
                return -1;
        }
    return 0;
}

void bench_mock_close(bench_mock_t *m) {
    if (m->mock)
        rd_kafka_mock_cluster_destroy(m->mock);
    if (m->rk)
        rd_kafka_destroy(m->rk);
    *m = (bench_mock_t){0};
}

static void *owner_main(void *arg) {
    bench_owner_t *o = arg;
    o->rc = es_processor_run(o->proc, &o->err);
    return NULL;
}

int bench_owner_start(bench_owner_t *o, const es_config_t *cfg) {
    es_error_t err = {0};
    es_err rc = es_engine_new(cfg, &o->engine, &err);
    rc = rc ? rc : demo_register_all(o->engine, &err);
    rc = rc ? rc : es_processor_new(cfg, o->engine, &o->proc, &err);
    if (rc)
        return bench_fail("starting a processor", rc, &err);
    if (pthread_create(&o->thread, NULL, owner_main, o))
        return -1;
    o->running = true;
    return 0;
}

void bench_owner_stop(bench_owner_t *o) {
    if (o->proc) {
        es_processor_stop(o->proc);
        if (o->running)
            pthread_join(o->thread, NULL);
        es_processor_destroy(o->proc);
    }
    es_engine_destroy(o->engine);
    memset(o, 0, sizeof *o);
}
