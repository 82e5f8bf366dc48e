/*
 * Small helpers shared by the benchmark: a monotonic clock, a seeded random
 * generator (so every run touches aggregates in the same order), latency
 * statistics and scratch database files.
 */
#ifndef ESKIT_BENCH_UTIL_H
#define ESKIT_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Nanoseconds on CLOCK_MONOTONIC. */
int64_t bench_now_ns(void);

/* xorshift64*: deterministic, so runs are comparable. */
typedef struct bench_rng {
    uint64_t s;
} bench_rng_t;
uint32_t bench_rng_below(bench_rng_t *rng, uint32_t n);

typedef struct bench_lat {
    double p50_us;
    double p99_us;
    double mean_us;
} bench_lat_t;

/* Summarizes n samples in nanoseconds; sorts them in place. */
bench_lat_t bench_lat_summary(int64_t *ns, size_t n);

/* Writes "<dir>/<name>.db" into out (PATH_MAX bytes); 0 on success. */
int bench_db_path(char *out, size_t cap, const char *dir, const char *name);
/* Deletes a database and its -wal and -shm files, so the next figure starts fresh. */
void bench_db_remove(const char *path);

/* Formats n with thousands separators ("1,234,567"), independent of locale. */
const char *bench_fmt_count(char *buf, size_t cap, double n);

#endif
