/*
 * Several processes and threads writing to one embedded store at once. The
 * promise under test (store.h, DESIGN "Write path"): concurrent writers get a
 * conflict or a retry, never a lost or duplicated event. Each test forks two
 * writer processes that report what they were told (accepted, conflicts, busy)
 * through a pipe; the parent then reads the file back and checks that the log
 * holds exactly what the writers were told it holds.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "domain.h"
#include "testutil.h"

#define N_PROCS 2
#define N_THREADS 4
#define N_COMMANDS 10000
#define N_ITEMS 50
#define ITEM_TYPE "inventory.item"

/* A writer's whole run must fit well inside the suite's budget. */
#define RUN_DEADLINE_US (50 * 1000000LL)

/* What one writer (thread, then process) saw. Sent over a pipe as raw bytes,
 * which is fine between a parent and its forked child. */
typedef struct counts {
    uint64_t accepted;   /* commands / appends the writer was told succeeded */
    uint64_t events;     /* events those appended */
    uint64_t conflicts;  /* ES_ECONFLICT answers (each retried) */
    uint64_t busy;       /* ES_EBUSY answers (each retried) */
    uint64_t duplicates; /* retries answered "already done": an error that had committed */
    uint64_t failures;   /* any other error: fails the test */
    char first_error[640];
} counts_t;

static void note_failure(counts_t *c, const char *what, es_err rc, const es_error_t *err) {
    if (c->failures++ == 0)
        snprintf(c->first_error, sizeof c->first_error, "%s: %s: %s", what, es_strerror(rc),
                 err->message);
}

static void counts_add(counts_t *to, const counts_t *from) {
    to->accepted += from->accepted;
    to->events += from->events;
    to->conflicts += from->conflicts;
    to->busy += from->busy;
    to->duplicates += from->duplicates;
    if (from->failures && !to->failures)
        memcpy(to->first_error, from->first_error, sizeof to->first_error);
    to->failures += from->failures;
}

static es_config_t *writer_config(const char *db) {
    es_config_t *cfg = es_config_new();
    if (cfg && es_config_set(cfg, "db", db, NULL) != ES_OK) {
        es_config_destroy(cfg);
        return NULL;
    }
    return cfg;
}

/* Reads len bytes or fails at the absolute deadline (es_now_us clock). */
static int read_full_by(int fd, void *buf, size_t len, int64_t deadline_us) {
    char *p = buf;
    while (len > 0) {
        int64_t left_ms = (deadline_us - es_now_us()) / 1000;
        if (left_ms <= 0)
            return -1;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, (int)left_ms);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            return -1;
        ssize_t r = read(fd, p, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

/* One writer process: runs the work, sends its counts, never returns. */
typedef void child_work_fn(int proc, const char *db, void *arg, counts_t *out);

/* Forks N_PROCS writers and sums what they report. A writer that does not report
 * by the deadline is killed and fails the test. */
/* The file exists before the writers start, as when a service initialises its store
 * before spawning workers: these tests are about appends, and racing first opens of
 * a fresh file have a test of their own. The parent closes it before forking, since
 * an SQLite connection must not cross a fork. */
static void create_store_file(const char *db) {
    es_error_t err = {0};
    es_config_t *cfg = writer_config(db);
    es_store_t *created = NULL;
    es_err rc = es_store_new(cfg, &created, &err);
    es_config_destroy(cfg);
    cr_assert_eq(rc, ES_OK, "creating %s: %s", db, err.message);
    es_store_destroy(created);
}

static void run_writer_processes(child_work_fn *work, const char *db, void *arg, counts_t *total) {
    create_store_file(db);
    pid_t pids[N_PROCS];
    int fds[N_PROCS];
    memset(total, 0, sizeof *total);
    for (int p = 0; p < N_PROCS; p++) {
        int pipefd[2];
        cr_assert_eq(pipe(pipefd), 0);
        pids[p] = fork();
        cr_assert_neq(pids[p], -1, "fork: %s", strerror(errno));
        if (pids[p] == 0) {
            /* The child must not run Criterion's exit path: _exit only. */
            close(pipefd[0]);
            counts_t c;
            memset(&c, 0, sizeof c);
            work(p, db, arg, &c);
            _exit(tu_write_full(pipefd[1], &c, sizeof c) == 0 ? 0 : 3);
        }
        close(pipefd[1]);
        fds[p] = pipefd[0];
    }
    int64_t deadline = es_now_us() + RUN_DEADLINE_US + 5 * 1000000LL;
    bool all_reported = true;
    for (int p = 0; p < N_PROCS; p++) {
        counts_t c;
        if (read_full_by(fds[p], &c, sizeof c, deadline) == 0)
            counts_add(total, &c);
        else
            all_reported = false;
        close(fds[p]);
    }
    for (int p = 0; p < N_PROCS; p++) {
        if (!all_reported)
            kill(pids[p], SIGKILL);
        int status = 0;
        waitpid(pids[p], &status, 0);
        cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "writer process %d ended abnormally (status 0x%x)", p, status);
    }
    cr_assert(all_reported, "a writer process did not report within its deadline");
}

/* ---- engine writers: Restock commands on N_ITEMS items ---- */

typedef struct engine_worker {
    int proc, thread;
    const char *db;
    es_engine_t *shared; /* NULL: the thread opens its own engine */
    counts_t c;
} engine_worker_t;

static void item_id(char *buf, size_t len, unsigned n) {
    snprintf(buf, len, "item-%02u", n % N_ITEMS);
}

/* Restock is always accepted, so every command must end accepted; a conflict or
 * a busy answer is allowed only because it is retried here. */
static void *engine_worker_main(void *arg) {
    engine_worker_t *w = arg;
    es_error_t err = {0};
    es_engine_t *engine = w->shared;
    es_config_t *cfg = NULL;
    es_err rc;
    if (!engine) {
        cfg = writer_config(w->db);
        if ((rc = es_engine_new(cfg, &engine, &err)) != ES_OK) {
            note_failure(&w->c, "es_engine_new", rc, &err);
            goto out;
        }
        if ((rc = demo_register_all(engine, &err)) != ES_OK) {
            note_failure(&w->c, "demo_register_all", rc, &err);
            goto out;
        }
    }
    unsigned seed = (unsigned)(w->proc * 7919 + w->thread * 104729 + 1);
    int per_thread = N_COMMANDS / (N_PROCS * N_THREADS);
    int64_t deadline = es_now_us() + RUN_DEADLINE_US;
    for (int i = 0; i < per_thread && w->c.failures == 0; i++) {
        char id[32], command_id[64];
        item_id(id, sizeof id, (unsigned)rand_r(&seed));
        snprintf(command_id, sizeof command_id, "p%d-t%d-c%d", w->proc, w->thread, i);
        Inventory__V1__Restock restock = INVENTORY__V1__RESTOCK__INIT;
        restock.quantity = 1;
        es_command_t cmd = {
            .aggregate_type = ITEM_TYPE,
            .aggregate_id = id,
            .message = &restock.base,
            .command_id = command_id,
        };
        for (;;) {
            es_result_t res;
            memset(&res, 0, sizeof res);
            rc = es_execute(engine, &cmd, &res, &err);
            if (rc == ES_OK && res.duplicate)
                w->c.duplicates++;
            else if (rc == ES_OK) {
                w->c.accepted++;
                w->c.events += res.n_events;
            } else if (rc == ES_ECONFLICT)
                w->c.conflicts++;
            else if (rc == ES_EBUSY)
                w->c.busy++;
            else
                note_failure(&w->c, command_id, rc, &err);
            es_result_clear(&res);
            if (rc != ES_ECONFLICT && rc != ES_EBUSY)
                break;
            if (es_now_us() > deadline) {
                err.message[0] = '\0';
                note_failure(&w->c, "retrying past the run deadline", rc, &err);
                break;
            }
        }
    }
out:
    if (!w->shared)
        es_engine_destroy(engine);
    es_config_destroy(cfg);
    return NULL;
}

static void engine_writer_process(int proc, const char *db, void *arg, counts_t *out) {
    bool share = *(const bool *)arg;
    es_error_t err = {0};
    es_engine_t *shared = NULL;
    es_config_t *cfg = NULL;
    es_err rc;
    if (share) {
        cfg = writer_config(db);
        if ((rc = es_engine_new(cfg, &shared, &err)) != ES_OK ||
            (rc = demo_register_all(shared, &err)) != ES_OK) {
            note_failure(out, "shared engine", rc, &err);
            goto out;
        }
    }
    engine_worker_t workers[N_THREADS];
    pthread_t tids[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) {
        memset(&workers[t], 0, sizeof workers[t]);
        workers[t] = (engine_worker_t){.proc = proc, .thread = t, .db = db, .shared = shared};
        if (pthread_create(&tids[t], NULL, engine_worker_main, &workers[t]) != 0)
            _exit(4); /* the parent reports a writer that ended without counts */
    }
    for (int t = 0; t < N_THREADS; t++) {
        pthread_join(tids[t], NULL);
        counts_add(out, &workers[t].c);
    }
out:
    es_engine_destroy(shared);
    es_config_destroy(cfg);
}

/* ---- reading the file back ---- */

typedef struct log_scan {
    size_t n, cap;
    char (*event_ids)[ES_UUID_STR_LEN + 1];
    char **command_ids;
} log_scan_t;

static int collect_log_event(const es_event_t *ev, void *opaque) {
    log_scan_t *l = opaque;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 1024;
        l->event_ids = realloc(l->event_ids, l->cap * sizeof *l->event_ids);
        l->command_ids = realloc(l->command_ids, l->cap * sizeof *l->command_ids);
        if (!l->event_ids || !l->command_ids)
            return 1;
    }
    memcpy(l->event_ids[l->n], ev->event_id, sizeof l->event_ids[0]);
    l->command_ids[l->n] = strdup(ev->command_id ? ev->command_id : "");
    l->n++;
    return 0;
}

static void log_scan_free(log_scan_t *l) {
    for (size_t i = 0; i < l->n; i++)
        free(l->command_ids[i]);
    free(l->command_ids);
    free(l->event_ids);
}

static int cmp_event_id(const void *a, const void *b) {
    return strcmp(a, b);
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The whole log: every event id unique, every command id unique (each command
 * appended once). Returns the number of events. */
static size_t assert_log_unique(es_store_t *store) {
    es_error_t err = {0};
    log_scan_t l = {0};
    es_err rc = es_store_read_log(store, NULL, 0, 0, collect_log_event, &l, NULL, &err);
    cr_assert_eq(rc, ES_OK, "reading the log: %s", err.message);
    qsort(l.event_ids, l.n, sizeof l.event_ids[0], cmp_event_id);
    qsort(l.command_ids, l.n, sizeof l.command_ids[0], cmp_str_ptr);
    for (size_t i = 1; i < l.n; i++) {
        cr_assert_str_neq(l.event_ids[i - 1], l.event_ids[i], "event id %s is in the log twice",
                          l.event_ids[i]);
        cr_assert_str_neq(l.command_ids[i - 1], l.command_ids[i], "command %s appended twice",
                          l.command_ids[i]);
    }
    size_t n = l.n;
    log_scan_free(&l);
    return n;
}

static es_store_t *open_store(const char *db) {
    es_error_t err = {0};
    es_config_t *cfg = writer_config(db);
    es_store_t *store = NULL;
    es_err rc = es_store_new(cfg, &store, &err);
    es_config_destroy(cfg);
    cr_assert_eq(rc, ES_OK, "opening %s: %s", db, err.message);
    return store;
}

static void report(const char *name, const counts_t *c, int64_t took_us) {
    cr_log_info("%s: %llu accepted, %llu conflicts, %llu busy retries in %.2f s", name,
                (unsigned long long)c->accepted, (unsigned long long)c->conflicts,
                (unsigned long long)c->busy, (double)took_us / 1e6);
}

/* forked: N_PROCS writer processes; else one writer's threads in the test's own process,
 * which ThreadSanitizer can follow (it cannot follow a fork of a threaded process: make tsan
 * runs only that test of this file). */
static void run_restock_storm(bool share_engine, bool forked) {
    char *dir = tu_tempdir();
    char *db = tu_path(dir, "shared.db");
    counts_t total;
    int64_t t0 = es_now_us();
    uint64_t expected = forked ? N_COMMANDS : N_COMMANDS / N_PROCS;
    if (forked) {
        run_writer_processes(engine_writer_process, db, &share_engine, &total);
    } else {
        create_store_file(db);
        memset(&total, 0, sizeof total);
        engine_writer_process(0, db, &share_engine, &total);
    }
    report(share_engine ? "shared engine" : "engine per thread", &total, es_now_us() - t0);

    cr_assert_eq(total.failures, 0, "%llu commands failed; first: %s",
                 (unsigned long long)total.failures, total.first_error);
    cr_assert_eq(total.duplicates, 0,
                 "%llu retried commands were already committed although the first attempt "
                 "reported an error",
                 (unsigned long long)total.duplicates);
    cr_assert_eq(total.accepted, expected);
    cr_assert_eq(total.events, expected, "each Restock appends one event");

    es_store_t *store = open_store(db);
    uint64_t in_streams = 0;
    for (unsigned i = 0; i < N_ITEMS; i++) {
        char id[32];
        item_id(id, sizeof id, i);
        in_streams += tu_assert_stream_contiguous(store, ITEM_TYPE, id);
    }
    cr_assert_eq(in_streams, total.events, "streams hold %llu events, writers were told %llu",
                 (unsigned long long)in_streams, (unsigned long long)total.events);
    cr_assert_eq(assert_log_unique(store), total.events);
    es_store_destroy(store);
    free(db);
    tu_rmtree(dir);
    free(dir);
}

Test(concurrency, processes_with_an_engine_per_thread_lose_and_duplicate_nothing, .timeout = 120) {
    run_restock_storm(false, true);
}

Test(concurrency, processes_whose_threads_share_one_engine_lose_and_duplicate_nothing,
     .timeout = 120) {
    run_restock_storm(true, true);
}

Test(concurrency, threads_sharing_one_engine_in_one_process_lose_and_duplicate_nothing,
     .timeout = 120) {
    run_restock_storm(true, false);
}

Test(concurrency, threads_with_an_engine_each_in_one_process_lose_and_duplicate_nothing,
     .timeout = 120) {
    run_restock_storm(false, false);
}

/* ---- read-modify-append with ES_EXPECT_EXACT on one hot stream ---- */

#define HOT_TYPE "test.counter"
#define HOT_ID "hot-1"
#define EXACT_THREADS 2
#define EXACT_ROUNDS 150 /* per writer; at most one of a process's two writers wins a round */

typedef struct exact_worker {
    int proc, thread;
    const char *db;
    bool via_engine;
    pthread_barrier_t *both_read; /* shared by the process's EXACT_THREADS writers */
    counts_t c;
} exact_worker_t;

/* Appends one event expecting exactly `version`, through the store or the engine. */
static es_err append_exact(exact_worker_t *w, es_store_t *store, es_engine_t *engine,
                           uint64_t version, const char *command_id, uint64_t *appended_as,
                           es_error_t *err) {
    if (!w->via_engine) {
        es_new_event_t ev = {
            .event_type = "test.v1.Ticked",
            .payload = (const uint8_t *)command_id,
            .payload_len = strlen(command_id),
            .command_id = command_id,
        };
        es_append_result_t res = {0};
        es_err rc =
            es_store_append(store, HOT_TYPE, HOT_ID, ES_EXPECT_EXACT, version, &ev, 1, &res, err);
        *appended_as = res.first_version;
        return rc;
    }
    Inventory__V1__Restock restock = INVENTORY__V1__RESTOCK__INIT;
    restock.quantity = 1;
    es_command_t cmd = {
        .aggregate_type = ITEM_TYPE,
        .aggregate_id = HOT_ID,
        .message = &restock.base,
        .command_id = command_id,
        .expect = ES_EXPECT_EXACT,
        .expected_version = version,
    };
    es_result_t res;
    memset(&res, 0, sizeof res);
    es_err rc = es_execute(engine, &cmd, &res, err);
    *appended_as = res.first_version;
    if (rc == ES_OK && res.duplicate)
        w->c.duplicates++;
    es_result_clear(&res);
    return rc;
}

/* One round: read the version, wait until the other thread of this process has
 * read too, then both append expecting what they read. Both reads precede both
 * appends and versions only grow, so at most one of the two can succeed: every
 * round is a guaranteed conflict, not a hoped-for one. */
static void exact_round(exact_worker_t *w, es_store_t *store, es_engine_t *engine, int *seq) {
    es_error_t err = {0};
    char command_id[64];
    /* A conflicted attempt is retried under the same command id: nothing was appended. */
    snprintf(command_id, sizeof command_id, "w%d.%d#%03d", w->proc, w->thread, *seq);
    uint64_t version = 0, appended_as = 0;
    es_err rc = ES_OK;
    if (w->c.failures == 0)
        rc = es_store_stream_version(store, w->via_engine ? ITEM_TYPE : HOT_TYPE, HOT_ID, &version,
                                     &err);
    pthread_barrier_wait(w->both_read);
    if (w->c.failures != 0)
        return;
    if (rc == ES_OK)
        rc = append_exact(w, store, engine, version, command_id, &appended_as, &err);
    if (rc == ES_OK) {
        if (appended_as != version + 1) {
            snprintf(err.message, sizeof err.message,
                     "expected version %llu held but the event got version %llu",
                     (unsigned long long)version, (unsigned long long)appended_as);
            note_failure(&w->c, command_id, rc, &err);
        }
        w->c.accepted++;
        w->c.events++;
        (*seq)++;
    } else if (rc == ES_ECONFLICT) {
        w->c.conflicts++;
    } else if (rc == ES_EBUSY) {
        w->c.busy++;
    } else {
        note_failure(&w->c, command_id, rc, &err);
    }
}

static void *exact_worker_main(void *arg) {
    exact_worker_t *w = arg;
    es_error_t err = {0};
    es_config_t *cfg = writer_config(w->db);
    es_engine_t *engine = NULL;
    es_store_t *store = NULL;
    es_err rc;
    if (w->via_engine) {
        if ((rc = es_engine_new(cfg, &engine, &err)) != ES_OK ||
            (rc = demo_register_all(engine, &err)) != ES_OK)
            note_failure(&w->c, "engine", rc, &err);
        else
            store = es_engine_store(engine);
    } else if ((rc = es_store_new(cfg, &store, &err)) != ES_OK) {
        note_failure(&w->c, "es_store_new", rc, &err);
    }
    /* Every round, even after a failure: the other thread waits at the barrier. */
    int seq = 0;
    for (int round = 0; round < EXACT_ROUNDS; round++)
        exact_round(w, store, engine, &seq);
    if (engine)
        es_engine_destroy(engine);
    else
        es_store_destroy(store);
    es_config_destroy(cfg);
    return NULL;
}

static void exact_writer_process(int proc, const char *db, void *arg, counts_t *out) {
    exact_worker_t workers[EXACT_THREADS];
    pthread_t tids[EXACT_THREADS];
    pthread_barrier_t both_read;
    pthread_barrier_init(&both_read, NULL, EXACT_THREADS);
    for (int t = 0; t < EXACT_THREADS; t++) {
        memset(&workers[t], 0, sizeof workers[t]);
        workers[t] = (exact_worker_t){.proc = proc,
                                      .thread = t,
                                      .db = db,
                                      .via_engine = *(const bool *)arg,
                                      .both_read = &both_read};
        if (pthread_create(&tids[t], NULL, exact_worker_main, &workers[t]) != 0)
            _exit(4); /* the parent reports a writer that ended without counts */
    }
    for (int t = 0; t < EXACT_THREADS; t++) {
        pthread_join(tids[t], NULL);
        counts_add(out, &workers[t].c);
    }
    pthread_barrier_destroy(&both_read);
}

typedef struct writer_seqs {
    int next[N_PROCS][EXACT_THREADS]; /* the sequence number each writer must show next */
    uint64_t bad;
    char first_bad[160];
} writer_seqs_t;

/* Each writer's events must appear once each, in the order it appended them
 * (its sequence numbers 0, 1, 2... with no gap or repeat). */
static int check_writer_order(const es_event_t *ev, void *opaque) {
    writer_seqs_t *s = opaque;
    int p = -1, t = -1, seq = -1;
    if (!ev->command_id || sscanf(ev->command_id, "w%d.%d#%d", &p, &t, &seq) != 3 || p < 0 ||
        p >= N_PROCS || t < 0 || t >= EXACT_THREADS || seq != s->next[p][t]) {
        if (s->bad++ == 0)
            snprintf(s->first_bad, sizeof s->first_bad, "v%llu has command %s",
                     (unsigned long long)ev->version, ev->command_id ? ev->command_id : "(none)");
        return 0;
    }
    s->next[p][t]++;
    return 0;
}

static void run_exact_contention(bool via_engine) {
    char *dir = tu_tempdir();
    char *db = tu_path(dir, "hot.db");
    counts_t total;
    int64_t t0 = es_now_us();
    run_writer_processes(exact_writer_process, db, &via_engine, &total);
    report(via_engine ? "exact via engine" : "exact via store", &total, es_now_us() - t0);

    cr_assert_eq(total.failures, 0, "%llu appends failed; first: %s",
                 (unsigned long long)total.failures, total.first_error);
    cr_assert_eq(total.duplicates, 0);
    /* Each process makes 2 x EXACT_ROUNDS attempts and wins at most one per round. */
    const uint64_t attempts = (uint64_t)N_PROCS * EXACT_THREADS * EXACT_ROUNDS;
    cr_assert_eq(total.accepted + total.conflicts + total.busy, attempts);
    cr_assert_leq(total.accepted, (uint64_t)N_PROCS * EXACT_ROUNDS,
                  "two appends expecting the same version both succeeded");
    cr_assert_gt(total.accepted, 0);
    cr_assert_geq(total.conflicts + total.busy, (uint64_t)N_PROCS * EXACT_ROUNDS);
    cr_assert_gt(total.conflicts, 0);
    const uint64_t expected = total.accepted;

    const char *type = via_engine ? ITEM_TYPE : HOT_TYPE;
    es_store_t *store = open_store(db);
    cr_assert_eq(tu_assert_stream_contiguous(store, type, HOT_ID), expected);
    writer_seqs_t seqs;
    memset(&seqs, 0, sizeof seqs);
    es_error_t err = {0};
    cr_assert_eq(es_store_read_stream(store, type, HOT_ID, 1, check_writer_order, &seqs, &err),
                 ES_OK, "%s", err.message);
    cr_assert_eq(seqs.bad, 0, "a writer's appends are lost, doubled or reordered: %s",
                 seqs.first_bad);
    cr_assert_eq(assert_log_unique(store), expected);
    es_store_destroy(store);
    free(db);
    tu_rmtree(dir);
    free(dir);
}

Test(concurrency, racing_exact_version_appends_conflict_but_lose_nothing, .timeout = 120) {
    run_exact_contention(false);
}

Test(concurrency, racing_exact_version_commands_conflict_but_lose_nothing, .timeout = 120) {
    run_exact_contention(true);
}

/* ---- several processes opening one fresh file at the same moment ---- */

#define OPEN_ROUNDS 25
#define OPEN_THREADS 2

typedef struct opener {
    int proc, thread;
    const char *db;
    counts_t c;
} opener_t;

/* Opens the store and appends one event to a stream of its own. */
static void *opener_main(void *arg) {
    opener_t *o = arg;
    es_error_t err = {0};
    es_config_t *cfg = writer_config(o->db);
    es_store_t *store = NULL;
    es_err rc = es_store_new(cfg, &store, &err);
    if (rc != ES_OK) {
        note_failure(&o->c, "es_store_new", rc, &err);
    } else {
        char id[32];
        snprintf(id, sizeof id, "opener-%d-%d", o->proc, o->thread);
        es_new_event_t ev = {.event_type = "test.v1.Opened",
                             .payload = (const uint8_t *)id,
                             .payload_len = strlen(id)};
        rc = es_store_append(store, HOT_TYPE, id, ES_EXPECT_NO_STREAM, 0, &ev, 1, NULL, &err);
        if (rc == ES_OK)
            o->c.accepted++;
        else
            note_failure(&o->c, id, rc, &err);
    }
    es_store_destroy(store);
    es_config_destroy(cfg);
    return NULL;
}

/* The gate is a pipe the parent closes: every child's read returns at once. */
static void opener_process(int proc, const char *db, void *arg, counts_t *out) {
    int gate = *(const int *)arg;
    char c;
    if (read(gate, &c, 1) < 0)
        _exit(5);
    opener_t openers[OPEN_THREADS];
    pthread_t tids[OPEN_THREADS];
    for (int t = 0; t < OPEN_THREADS; t++) {
        openers[t] = (opener_t){.proc = proc, .thread = t, .db = db};
        if (pthread_create(&tids[t], NULL, opener_main, &openers[t]) != 0)
            _exit(4);
    }
    for (int t = 0; t < OPEN_THREADS; t++) {
        pthread_join(tids[t], NULL);
        counts_add(out, &openers[t].c);
    }
}

Test(concurrency, processes_opening_one_fresh_file_at_once_all_get_a_working_store,
     .timeout = 120) {
    char *dir = tu_tempdir();
    counts_t all;
    memset(&all, 0, sizeof all);
    for (int round = 0; round < OPEN_ROUNDS; round++) {
        char name[32];
        snprintf(name, sizeof name, "fresh-%d.db", round);
        char *db = tu_path(dir, name);
        int gate[2];
        cr_assert_eq(pipe(gate), 0);
        pid_t pids[N_PROCS];
        int fds[N_PROCS];
        for (int p = 0; p < N_PROCS; p++) {
            int pipefd[2];
            cr_assert_eq(pipe(pipefd), 0);
            pids[p] = fork();
            cr_assert_neq(pids[p], -1);
            if (pids[p] == 0) {
                close(gate[1]);
                close(pipefd[0]);
                counts_t c;
                memset(&c, 0, sizeof c);
                opener_process(p, db, &gate[0], &c);
                _exit(tu_write_full(pipefd[1], &c, sizeof c) == 0 ? 0 : 3);
            }
            close(pipefd[1]);
            fds[p] = pipefd[0];
        }
        close(gate[0]);
        close(gate[1]); /* go */
        int64_t deadline = es_now_us() + RUN_DEADLINE_US;
        for (int p = 0; p < N_PROCS; p++) {
            counts_t c;
            bool got = read_full_by(fds[p], &c, sizeof c, deadline) == 0;
            close(fds[p]);
            if (!got)
                kill(pids[p], SIGKILL);
            waitpid(pids[p], NULL, 0);
            cr_assert(got, "round %d: opener process %d did not report", round, p);
            counts_add(&all, &c);
        }
        free(db);
    }
    cr_assert_eq(all.failures, 0, "%llu of %d simultaneous opens of a fresh file failed; first: %s",
                 (unsigned long long)all.failures, OPEN_ROUNDS * N_PROCS * OPEN_THREADS,
                 all.first_error);
    cr_assert_eq(all.accepted, (uint64_t)OPEN_ROUNDS * N_PROCS * OPEN_THREADS);
    tu_rmtree(dir);
    free(dir);
}
