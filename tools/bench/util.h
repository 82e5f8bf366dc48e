/*
 * Small helpers shared by the benchmark: a monotonic clock, a seeded random
 * generator (so every run touches aggregates in the same order), latency
 * statistics and scratch database files.
 */
#ifndef ESKIT_BENCH_UTIL_H
#define ESKIT_BENCH_UTIL_H

#include <eskit/eskit.h>
#include <pthread.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Nanoseconds on CLOCK_MONOTONIC. */
int64_t bench_now_ns(void);
/* The CPU time the process has used, in ns (every thread's). */
int64_t bench_cpu_ns(void);

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

/* One run of a figure with metrics on (metrics.enabled = true) or off; *events is how many
 * events it did. bench_alternate times it in the process's CPU time, not the wall's: what
 * metrics cost is CPU, and on a shared 2-core machine the wall clock also measures the
 * neighbours (a 3% goal is well inside its run-to-run spread). */
typedef int bench_metrics_run_fn(void *ctx, bool metrics, double *events);

/* What bench_alternate measured: the figure and its baseline, and how far the pairs spread. */
typedef struct bench_alt {
    double on, off;                       /* the median rate of each side */
    double ratio_lo, ratio_mid, ratio_hi; /* on/off within each pair: lowest, median, highest */
} bench_alt_t;

/* pairs runs with metrics on and pairs with them off, interleaved so both sides see the same
 * machine: on/off, then off/on, and so on (the order swaps each pair, so a drift of the machine
 * over the runs weighs on both sides alike). The spread of the pairs' ratios tells how much of
 * a difference between the medians the machine's noise could make. */
int bench_alternate(bench_metrics_run_fn *run, void *ctx, size_t pairs, bench_alt_t *out);

/* librdkafka's mock cluster in this process, for the Kafka groups. */
typedef struct bench_mock {
    rd_kafka_t *rk; /* the handle the mock lives in */
    rd_kafka_mock_cluster_t *mock;
    const char *bootstrap;
    int brokers;
} bench_mock_t;

/* A cluster of brokers brokers (their sockets with TCP_NODELAY, as real brokers set it: without
 * it a second response on a connection waits for the client's delayed ACK, a 40 ms stall), with
 * the events, commands, replies and snapshots topics of each of types (n_types) at partitions
 * partitions, replicated on every broker up to 3. 0, or -1 (close it all the same). */
int bench_mock_open(bench_mock_t *m, int brokers, const char *const *types, size_t n_types,
                    int partitions);
/* One more topic on m, replicated as bench_mock_open's. 0 or -1. */
int bench_mock_topic(bench_mock_t *m, const char *topic, int partitions);
void bench_mock_close(bench_mock_t *m);
/* A librdkafka log callback that prints nothing (the mock's own warnings). */
void bench_quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf);
/* Prints "eskit-bench: what: error: message" to stderr (err may be NULL); returns -1. */
int bench_fail(const char *what, es_err rc, const es_error_t *err);

/* A command processor on a thread of its own, as a service runs one: es_processor_run until
 * bench_owner_stop. */
typedef struct bench_owner {
    es_engine_t *engine; /* the demo's aggregates registered */
    es_processor_t *proc;
    pthread_t thread;
    bool running;
    es_err rc; /* what es_processor_run returned, once stopped */
    es_error_t err;
} bench_owner_t;

/* Starts o on cfg (o zeroed); 0 or -1 (bench_owner_stop it all the same). */
int bench_owner_start(bench_owner_t *o, const es_config_t *cfg);
/* Stops and frees o; zeroes it. */
void bench_owner_stop(bench_owner_t *o);

/* Formats n with thousands separators ("1,234,567"), independent of locale. */
const char *bench_fmt_count(char *buf, size_t cap, double n);

#endif
