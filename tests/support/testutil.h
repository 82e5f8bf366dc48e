/* Helpers shared by the tests: temp dirs, configs, small waits. */
#ifndef ESKIT_TESTUTIL_H
#define ESKIT_TESTUTIL_H

#include <stddef.h>
#include <eskit/eskit.h>

/* A fresh directory under $TMPDIR (or /tmp); returns a static-lifetime path
 * the caller frees with free(). */
char *tu_tempdir(void);
/* tu_tempdir() + "/" + name; caller frees. */
char *tu_path(const char *dir, const char *name);
/* A config with db = <dir>/<name> and no other source applied. Caller destroys. */
es_config_t *tu_config(const char *dir, const char *name);
/* Runs argv (argv[0] a path), captures stdout and stderr (each malloc'd, may be NULL
 * args), returns the exit status or -1 when killed. env may be NULL (inherit) or
 * a NULL-terminated list of "K=V" added to the environment. */
int tu_run(const char *const *argv, const char *const *env, char **out, char **errout);
/* Writes all of buf to fd, retrying on EINTR; 0 or -1. */
int tu_write_full(int fd, const void *buf, size_t len);
/* Asserts (Criterion) the stream's versions are exactly 1..n and its reported version is n;
 * returns n. */
uint64_t tu_assert_stream_contiguous(es_store_t *store, const char *type, const char *id);
/* Asserts (Criterion) that es_store_verify runs on cfg's store and finds nothing, naming the
 * first problem when it does; what says which file or moment it is (for the message). */
void tu_assert_verifies(const es_config_t *cfg, const char *what);
/* What a child process did: exit status (-1 when killed), stdout and stderr. */
typedef struct tu_result {
    int status;
    char *out;
    char *err;
} tu_result;
/* Runs esctl (ESCTL_PATH) with args (NULL-terminated) and extra environment env (may be
 * NULL). Free with tu_result_free. */
tu_result tu_esctl(const char *const *env, const char *const *args);
void tu_result_free(tu_result *r);
/* The number of '\n' in s (NULL: 0): how many lines an esctl message took. */
size_t tu_count_lines(const char *s);
#define TU_ESCTL(...) tu_esctl(NULL, (const char *const[]){__VA_ARGS__, NULL})
#define TU_ESCTL_ENV(env, ...) tu_esctl(env, (const char *const[]){__VA_ARGS__, NULL})

/* The first column of the first row of sql on the database at path (asserts there is one). */
long long tu_query_int(const char *path, const char *sql);

/* Runs fn(dir, opaque) in a child process with dir, a fresh directory under parent, on a full
 * disk, after prepare(dir, opaque) (may be NULL) set it up with room to spare. As root where
 * mounting is allowed the disk is a 1 MiB tmpfs the child mounts in a mount namespace of its
 * own (gone when it exits) and fills up: what a full disk does to a mapped page (SIGBUS) shows.
 * Elsewhere the child's files may not grow past 64 bytes (RLIMIT_FSIZE, SIGXFSZ ignored): the
 * error paths show, not the SIGBUS. prepare and fn return 0 when all went as expected; the
 * result is the child's exit status, or -signal when a signal killed it. */
int tu_on_full_disk(const char *parent, int (*prepare)(const char *dir, void *opaque),
                    int (*fn)(const char *dir, void *opaque), void *opaque);

/* Runs fn(opaque) in a child process that sees path (a file or a directory) read-only. Where
 * mounting is allowed, path is bind-mounted read-only in a mount namespace of the child's own
 * (gone when it exits), so writes fail with EROFS; elsewhere path's write permission bits are
 * cleared and the child obeys them (a root child drops CAP_DAC_OVERRIDE). The bits are restored
 * after. The result is the child's exit status (103: path could not be made read-only), or
 * -signal. */
int tu_on_read_only(const char *path, int (*fn)(void *opaque), void *opaque);

/* kafka.session.timeout.ms and kafka.heartbeat.interval.ms for clients of librdkafka's mock
 * cluster. The mock (2.0.2, rdkafka_mock_cgrp.c) answers the JoinGroup of a member joining an
 * empty group only after its 3 s initial rebalance delay, but its 1 s session check expires a
 * member whose session ran out even while that member waits for that answer (no heartbeats
 * then); the answer is dropped with it and the client waits max.poll.interval.ms (5 min). So
 * the session must outlast 3 s, with room for a late mock timer (measured: at most 2 ms under
 * load); the mock then waits session - 1 s for a departed member's group to rejoin. */
#define TU_MOCK_SESSION_TIMEOUT_MS "4000"
#define TU_MOCK_HEARTBEAT_INTERVAL_MS "500"

/* Unsets every ESKIT_* variable, so that the runner's configuration does not reach the
 * processes a test starts. */
void tu_unset_eskit_env(void);

/* Removes a directory tree (best effort). */
void tu_rmtree(const char *dir);

#endif
