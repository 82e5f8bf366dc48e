#include "testutil.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
