/*
 * Restore after a rebalance, on librdkafka's mock cluster (in this process): one events
 * partition per history size over the same number of aggregates (1, 3 and 10 events an
 * aggregate), so that the live state is the same and only the history grows, and a new owner
 * (a processor on a fresh state store) restoring them. Partition 0 stays empty: the owner
 * restores its partitions one after another, and partition 0's restore (a few requests) marks
 * when the timed ones begin; each partition's time is from the end of the previous restore to
 * the end of its own (the "restored" log line).
 *
 * The history is written with snapshot.every=0 by one owner, then each aggregate gets one more
 * command from a second owner with snapshot.every=1, so that the snapshots topic holds one
 * snapshot an aggregate: what compaction leaves on a real cluster (the mock does not compact).
 * idempotency.window.ms is short and the run waits past it before the restore, so that the
 * history lies outside the window.
 */
#include "restore.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <eskit/eskit.h>
#include <eskit/processor.h>

#include "domain.h"
#include "util.h"

#define R_PARTS 4 /* 0: empty, the mark; then 1x, 3x, 10x */
#define EVENTS_1X 1
#define R_BATCH 2000
#define WINDOW_MS 1000
#define RESTORE_WAIT_S 60

static const int multiples[RESTORE_SIZES] = {1, 3, 10};

typedef bench_mock_t mock;

static int mock_open(mock *m) {
    static const char *const types[] = {"inventory.item"};
    /* A cluster of another process (esctl dev-broker --partitions 4): for a run under valgrind,
     * whose pace the in-process mock's brokers do not keep up with. */
    if (getenv("ESKIT_BENCH_BROKERS") && *getenv("ESKIT_BENCH_BROKERS")) {
        *m = (mock){.bootstrap = getenv("ESKIT_BENCH_BROKERS")};
        return 0;
    }
    return bench_mock_open(m, 1, types, 1, R_PARTS);
}

/* When each partition's restore ended, from the processor's log. */
typedef struct restore_log {
    atomic_llong done_ns[R_PARTS];
    atomic_int n_done;
} restore_log;

static void on_log(int level, const char *msg, void *opaque) {
    restore_log *l = opaque;
    static const char head[] = "restored inventory.item.events partition ";
    if (getenv("ESKIT_BENCH_DEBUG"))
        fprintf(stderr, "%lld [%d] %s\n", (long long)(bench_now_ns() / 1000000 % 100000), level,
                msg);
    if (!l || strncmp(msg, head, sizeof head - 1))
        return;
    int part = atoi(msg + sizeof head - 1);
    long long zero = 0;
    if (part >= 0 && part < R_PARTS &&
        atomic_compare_exchange_strong(&l->done_ns[part], &zero, (long long)bench_now_ns()))
        atomic_fetch_add(&l->n_done, 1);
}

static es_config_t *config(const mock *m, const char *dir, const char *state, const char *every,
                           restore_log *log) {
    es_config_t *cfg = es_config_new();
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, state);
    char window[24];
    snprintf(window, sizeof window, "%d", WINDOW_MS);
    es_error_t err;
    if (!cfg || es_config_set(cfg, "brokers", m->bootstrap, &err) ||
        es_config_set(cfg, "state.db", path, &err) ||
        es_config_set(cfg, "kafka.linger.ms", "2", &err) ||
        es_config_set(cfg, "kafka.fetch.wait.max.ms", "1", &err) ||
        /* each owner joins the group its predecessor left: see docs/design.md on the mock */
        es_config_set(cfg, "kafka.session.timeout.ms", "4000", &err) ||
        es_config_set(cfg, "kafka.heartbeat.interval.ms", "500", &err) ||
        es_config_set(cfg, "snapshot.every", every, &err) ||
        es_config_set(cfg, "idempotency.window.ms", window, &err) ||
        es_config_set(cfg, "metrics.enabled", "false", &err)) {
        es_config_destroy(cfg);
        return NULL;
    }
    if (log || getenv("ESKIT_BENCH_DEBUG"))
        es_config_set_log_cb(cfg, on_log, log);
    return cfg;
}

typedef bench_owner_t owner;

/* Ids of n aggregates of each timed partition (the caller's partitioner: murmur2_random). */
static char **make_ids(size_t n) {
    char **ids = calloc(RESTORE_SIZES * n, sizeof *ids);
    size_t have[RESTORE_SIZES] = {0}, full = 0;
    for (unsigned k = 0; ids && full < RESTORE_SIZES; k++) {
        char id[32];
        int len = snprintf(id, sizeof id, "item-%u", k);
        int32_t part =
            rd_kafka_msg_partitioner_murmur2_random(NULL, id, (size_t)len, R_PARTS, NULL, NULL);
        if (part < 1 || part > RESTORE_SIZES || have[part - 1] == n)
            continue;
        if (!(ids[(size_t)(part - 1) * n + have[part - 1]] = strdup(id)))
            return NULL;
        full += ++have[part - 1] == n;
    }
    return ids;
}

/* One Restock to every aggregate of the sizes still short of their history, round by round:
 * rounds in all, the size of multiple m getting m * EVENTS_1X - 1 of them. */
static int restock(es_engine_t *caller, char **ids, size_t n, int rounds, bool last) {
    Inventory__V1__Restock msg = INVENTORY__V1__RESTOCK__INIT;
    msg.quantity = 1;
    es_command_t *cmds = calloc(R_BATCH, sizeof *cmds);
    es_result_t *res = calloc(R_BATCH, sizeof *res);
    int rc = cmds && res ? 0 : -1;
    for (int r = 0; rc == 0 && r < rounds; r++) {
        size_t k = 0;
        for (size_t s = 0; s < RESTORE_SIZES; s++) {
            if (!last && r >= multiples[s] * EVENTS_1X - 1)
                continue;
            for (size_t i = 0; i < n && rc == 0; i++) {
                cmds[k++] = (es_command_t){.aggregate_type = "inventory.item",
                                           .aggregate_id = ids[s * n + i],
                                           .message = &msg.base};
                if (k == R_BATCH || (s == RESTORE_SIZES - 1 && i == n - 1)) {
                    es_error_t err = {0};
                    es_err e = es_execute_batch(caller, cmds, k, res, &err);
                    if (e != ES_OK)
                        rc = bench_fail("es_execute_batch over Kafka", e, &err);
                    for (size_t j = 0; j < k; j++) {
                        if (e == ES_OK && res[j].outcome != ES_OUTCOME_ACCEPTED && rc == 0) {
                            fprintf(stderr, "eskit-bench: a Restock was not accepted: %s\n",
                                    res[j].reason ? res[j].reason : "(no reason)");
                            rc = -1;
                        }
                        if (e == ES_OK)
                            es_result_clear(&res[j]);
                    }
                    k = 0;
                }
            }
        }
        if (rc == 0 && k) { /* the last sizes were skipped this round */
            es_error_t err = {0};
            es_err e = es_execute_batch(caller, cmds, k, res, &err);
            rc = e ? bench_fail("es_execute_batch over Kafka", e, &err) : 0;
            for (size_t j = 0; e == ES_OK && j < k; j++)
                es_result_clear(&res[j]);
        }
    }
    free(cmds);
    free(res);
    return rc;
}

/* A writer owning every partition, and a caller, for rounds of Restocks. */
static int write_history(const mock *m, const char *dir, const char *every, char **ids, size_t n,
                         int rounds, bool last) {
    owner o = {0};
    es_engine_t *caller = NULL;
    es_error_t err = {0};
    es_config_t *ocfg = config(m, dir, "writer-state.db", every, NULL);
    es_config_t *ccfg = config(m, dir, "caller-state.db", every, NULL);
    int rc = ocfg && ccfg ? bench_owner_start(&o, ocfg) : -1;
    if (rc == 0) {
        es_err e = es_engine_new(ccfg, &caller, &err);
        e = e ? e : demo_register_all(caller, &err);
        rc = e ? bench_fail("opening the Kafka caller", e, &err) : 0;
    }
    if (rc == 0)
        rc = restock(caller, ids, n, rounds, last);
    if (rc == 0 && last)
        usleep((WINDOW_MS + 300) * 1000); /* past the window, the horizon committed meanwhile */
    es_engine_destroy(caller);
    bench_owner_stop(&o);
    es_config_destroy(ocfg);
    es_config_destroy(ccfg);
    return rc;
}

static void remove_states(const char *dir) {
    char path[4096];
    const char *const files[] = {"writer-state.db", "caller-state.db", "restore-state.db"};
    const char *const suffix[] = {"", "-wal", "-shm", "-head"};
    for (size_t f = 0; f < 3; f++)
        for (size_t k = 0; k < 4; k++) {
            snprintf(path, sizeof path, "%s/%s%s", dir, files[f], suffix[k]);
            unlink(path);
        }
}

int bench_restore(const char *dir, size_t n, restore_figs_t *out) {
    mock m = {0};
    restore_log log = {0};
    owner o = {0};
    memset(out, 0, sizeof *out);
    out->aggregates = n;
    out->window_ms = WINDOW_MS;
    char **ids = make_ids(n);
    int rc = ids ? mock_open(&m) : -1;
    int rounds = multiples[RESTORE_SIZES - 1] * EVENTS_1X - 1;
    if (rc == 0) /* the history, no snapshots */
        rc = write_history(&m, dir, "0", ids, n, rounds, false);
    if (rc == 0) /* one more event each, snapshotted: one snapshot an aggregate */
        rc = write_history(&m, dir, "1", ids, n, 1, true);
    es_config_t *rcfg = rc == 0 ? config(&m, dir, "restore-state.db", "1", &log) : NULL;
    if (rc == 0)
        rc = rcfg ? bench_owner_start(&o, rcfg) : -1;
    for (int waited = 0; rc == 0 && atomic_load(&log.n_done) < R_PARTS; waited++) {
        if (waited == RESTORE_WAIT_S * 100) {
            fprintf(stderr, "eskit-bench: restore: not every partition restored in %d s\n",
                    RESTORE_WAIT_S);
            rc = -1;
        }
        usleep(10000);
    }
    if (rc == 0) {
        long long mark = atomic_load(&log.done_ns[0]);
        for (size_t s = 0; s < RESTORE_SIZES; s++) {
            long long prev = atomic_load(&log.done_ns[s]), end = atomic_load(&log.done_ns[s + 1]);
            if (prev < mark || end < prev) {
                fprintf(stderr, "eskit-bench: restore: partitions restored out of order\n");
                rc = -1;
                break;
            }
            out->multiple[s] = multiples[s];
            out->events[s] = n * (size_t)(multiples[s] * EVENTS_1X);
            out->ms[s] = (double)(end - prev) / 1e6;
        }
        es_processor_stats_t st;
        es_processor_stats(o.proc, &st);
        out->imported = st.events_imported;
        out->snapshots = st.snapshots_imported;
    }
    bench_owner_stop(&o);
    es_config_destroy(rcfg);
    bench_mock_close(&m);
    remove_states(dir);
    for (size_t i = 0; ids && i < RESTORE_SIZES * n; i++)
        free(ids[i]);
    free(ids);
    return rc;
}
