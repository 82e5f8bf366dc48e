#include "util.h"

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
