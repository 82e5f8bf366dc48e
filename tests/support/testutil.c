#include "testutil.h"

#include <criterion/criterion.h>
#include <errno.h>

#include <fcntl.h>
#include <linux/capability.h>
#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

char *tu_tempdir(void) {
    const char *base = getenv("TMPDIR");
    char *tmpl = NULL;
    if (asprintf(&tmpl, "%s/eskit-test-XXXXXX", base && *base ? base : "/tmp") < 0)
        return NULL;
    if (!mkdtemp(tmpl)) {
        free(tmpl);
        return NULL;
    }
    return tmpl;
}

char *tu_path(const char *dir, const char *name) {
    char *p = NULL;
    if (asprintf(&p, "%s/%s", dir, name) < 0)
        return NULL;
    return p;
}

es_config_t *tu_config(const char *dir, const char *name) {
    es_config_t *cfg = es_config_new();
    char *db = tu_path(dir, name);
    if (!cfg || !db || es_config_set(cfg, "db", db, NULL) != ES_OK) {
        es_config_destroy(cfg);
        cfg = NULL;
    }
    free(db);
    return cfg;
}

static char *slurp_fd(int fd) {
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while (buf && (r = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)r;
        if (cap - len < 2) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
    }
    if (buf)
        buf[len] = '\0';
    return buf;
}

int tu_run(const char *const *argv, const char *const *env, char **out, char **errout) {
    char outpath[] = "/tmp/eskit-tu-out-XXXXXX", errpath[] = "/tmp/eskit-tu-err-XXXXXX";
    int ofd = mkstemp(outpath), efd = mkstemp(errpath);
    if (ofd < 0 || efd < 0)
        return -2;
    unlink(outpath);
    unlink(errpath);
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        dup2(ofd, 1);
        dup2(efd, 2);
        for (const char *const *e = env; e && *e; e++)
            putenv((char *)*e);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    lseek(ofd, 0, SEEK_SET);
    lseek(efd, 0, SEEK_SET);
    if (out)
        *out = slurp_fd(ofd);
    if (errout)
        *errout = slurp_fd(efd);
    close(ofd);
    close(efd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void tu_rmtree(const char *dir) {
    if (dir)
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes a file in dir until the disk refuses more. */
static int fill_up(const char *dir) {
    char *path = tu_path(dir, "filler");
    int fd = path ? open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600) : -1;
    free(path);
    if (fd < 0)
        return -1;
    static const char block[4096];
    while (write(fd, block, sizeof block) > 0)
        ;
    while (write(fd, block, 1) > 0) /* the last bytes of a partial block */
        ;
    int full = errno == ENOSPC;
    close(fd);
    return full ? 0 : -1;
}

/* The child's side of tu_on_full_disk: 1 when it could mount a tmpfs on dir. */
static int mount_small_disk(const char *dir) {
    return unshare(CLONE_NEWNS) == 0 && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 &&
           mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0700") == 0;
}

int tu_on_full_disk(const char *parent, int (*prepare)(const char *dir, void *opaque),
                    int (*fn)(const char *dir, void *opaque), void *opaque) {
    char *dir = tu_path(parent, "full-disk");
    if (!dir || mkdir(dir, 0700) != 0) {
        free(dir);
        return -1000;
    }
    pid_t pid = fork();
    if (pid == 0) {
        int mounted = mount_small_disk(dir);
        if (prepare && prepare(dir, opaque) != 0)
            _exit(100);
        if (mounted && fill_up(dir) != 0)
            _exit(101);
        if (!mounted) {
            struct rlimit lim = {64, 64};
            signal(SIGXFSZ, SIG_IGN);
            if (setrlimit(RLIMIT_FSIZE, &lim) != 0)
                _exit(102);
        }
        _exit(fn(dir, opaque));
    }
    int status = 0;
    while (pid > 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    tu_rmtree(dir);
    free(dir);
    if (pid < 0)
        return -1000;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

/* The child's side of tu_on_read_only: 1 when path is now a read-only bind mount of itself. */
static int mount_read_only(const char *path) {
    return unshare(CLONE_NEWNS) == 0 && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 &&
           mount(path, path, NULL, MS_BIND, NULL) == 0 &&
           mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) == 0;
}

/* The child's side when it cannot mount: 1 when the permission bits now bind it and what it
 * runs (esctl), as they bind a user that is not root: a root without CAP_DAC_OVERRIDE, in its
 * bounding set too, is refused a file it may not write. */
static int obey_permission_bits(void) {
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];
    if (geteuid() != 0)
        return 1;
    if (prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0) != 0 || syscall(SYS_capget, &h, d) != 0)
        return 0;
    d[0].effective &= ~(1u << CAP_DAC_OVERRIDE);
    d[0].permitted &= ~(1u << CAP_DAC_OVERRIDE);
    d[0].inheritable &= ~(1u << CAP_DAC_OVERRIDE);
    return syscall(SYS_capset, &h, d) == 0;
}

int tu_on_read_only(const char *path, int (*fn)(void *opaque), void *opaque) {
    struct stat st;
    /* The write bits cleared for a child that cannot mount; restored after. */
    if (stat(path, &st) != 0 || chmod(path, st.st_mode & 0555) != 0)
        return -1000;
    pid_t pid = fork();
    if (pid == 0) {
        if (!mount_read_only(path) && !obey_permission_bits())
            _exit(103);
        _exit(fn(opaque));
    }
    int status = 0;
    while (pid > 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    chmod(path, st.st_mode & 07777);
    if (pid < 0)
        return -1000;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

int tu_write_full(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

typedef struct stream_check {
    const char *id;
    uint64_t next;
    int bad;
    char first_bad[160];
} stream_check_t;

static int check_stream_event(const es_event_t *ev, void *opaque) {
    stream_check_t *s = opaque;
    if (ev->version != s->next || strcmp(ev->aggregate_id, s->id) != 0) {
        if (s->bad++ == 0)
            snprintf(s->first_bad, sizeof s->first_bad, "expected %s v%llu, read %s v%llu", s->id,
                     (unsigned long long)s->next, ev->aggregate_id,
                     (unsigned long long)ev->version);
    }
    s->next = ev->version + 1;
    return 0;
}

uint64_t tu_assert_stream_contiguous(es_store_t *store, const char *type, const char *id) {
    es_error_t err = {0};
    stream_check_t s = {.id = id, .next = 1};
    es_err rc = es_store_read_stream(store, type, id, 1, check_stream_event, &s, &err);
    cr_assert_eq(rc, ES_OK, "reading %s/%s: %s", type, id, err.message);
    cr_assert_eq(s.bad, 0, "stream %s/%s is not 1..n: %s", type, id, s.first_bad);
    uint64_t version = 0;
    cr_assert_eq(es_store_stream_version(store, type, id, &version, &err), ES_OK, "%s",
                 err.message);
    cr_assert_eq(version, s.next - 1, "stream %s/%s reports version %llu but holds %llu events",
                 type, id, (unsigned long long)version, (unsigned long long)(s.next - 1));
    return version;
}

tu_result tu_esctl(const char *const *env, const char *const *args) {
    const char *argv[32] = {ESCTL_PATH};
    size_t n = 1;
    for (; args[n - 1]; n++) {
        cr_assert_lt(n, 31);
        argv[n] = args[n - 1];
    }
    argv[n] = NULL;
    tu_result r = {0};
    r.status = tu_run(argv, env, &r.out, &r.err);
    cr_assert_not_null(r.out);
    cr_assert_not_null(r.err);
    return r;
}

void tu_result_free(tu_result *r) {
    free(r->out);
    free(r->err);
}

long long tu_query_int(const char *path, const char *sql) {
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK, "%s", path);
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(s), SQLITE_ROW, "%s returned no row", sql);
    long long v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

size_t tu_count_lines(const char *s) {
    size_t n = 0;
    for (; s && *s; s++)
        n += *s == '\n';
    return n;
}

extern char **environ;

void tu_unset_eskit_env(void) {
    char name[256];
    for (;;) {
        char **e = environ;
        while (*e && strncmp(*e, "ESKIT_", 6) != 0)
            e++;
        if (!*e)
            return;
        snprintf(name, sizeof name, "%.*s", (int)strcspn(*e, "="), *e);
        unsetenv(name);
    }
}

static void keep_first_problem(const es_verify_problem_t *p, void *opaque) {
    char *first = opaque;
    if (!first[0])
        snprintf(first, 512, "%s: %s/%s: %s", p->check, p->aggregate_type ? p->aggregate_type : "",
                 p->aggregate_id ? p->aggregate_id : "", p->message);
}

void tu_assert_verifies(const es_config_t *cfg, const char *what) {
    es_verify_summary_t sum;
    es_error_t err = {0};
    char first[512] = "";
    cr_assert_eq(es_store_verify(cfg, NULL, keep_first_problem, first, &sum, &err), ES_OK, "%s: %s",
                 what, err.message);
    cr_assert_eq(sum.problems, 0, "%s: %llu problem(s), the first: %s", what,
                 (unsigned long long)sum.problems, first);
}
