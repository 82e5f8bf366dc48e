/*
 * Side files: the files eskit creates and writes beside its databases (a read
 * model's lock and crash guard, a replay's guard and shadow). They are opened
 * so that another user who can put a name in their directory cannot make
 * eskit truncate or write a file of their choosing: never through a symlink,
 * only a regular file with one link that the effective user owns, and never
 * in a directory every user can write unless it is sticky and owned by the user
 * or root, as /tmp (there no one can replace another's file). A directory its
 * group can write is accepted: a group member can remove the file, not make
 * one that passes these checks.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int es_open_parent(const char *path, const char **base) {
    const char *slash = strrchr(path, '/');
    *base = slash ? slash + 1 : path;
    if (!slash)
        return open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    size_t len = slash == path ? 1 : (size_t)(slash - path);
    char *dir = strndup(path, len);
    if (!dir) {
        errno = ENOMEM;
        return -1;
    }
    int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    int saved = errno;
    free(dir);
    errno = saved;
    return fd;
}

int es_dir_open_to_others(const struct stat *dir) {
    if (!(dir->st_mode & S_IWOTH))
        return 0;
    return !(dir->st_mode & S_ISVTX) || (dir->st_uid != geteuid() && dir->st_uid != 0);
}

const char *es_file_kind(mode_t mode) {
    return S_ISDIR(mode)    ? "a directory"
           : S_ISLNK(mode)  ? "a symbolic link"
           : S_ISFIFO(mode) ? "a named pipe"
           : S_ISSOCK(mode) ? "a socket"
           : S_ISCHR(mode)  ? "a character device"
           : S_ISBLK(mode)  ? "a block device"
           : S_ISREG(mode)  ? "a regular file"
                            : "not a regular file";
}

/* Why the opened file st may not be used, or ES_OK. */
static es_err check_file(const char *path, const char *what, const struct stat *st,
                         es_error_t *err) {
    if (!S_ISREG(st->st_mode))
        return es_fail(err, ES_EINVAL, "refusing the %s %s: it is %s, not a file eskit made", what,
                       path, es_file_kind(st->st_mode));
    if (st->st_uid != geteuid())
        return es_fail(err, ES_EINVAL,
                       "refusing the %s %s: it is owned by uid %u, not by this process's user "
                       "(uid %u); run this as the user who owns the read model",
                       what, path, (unsigned)st->st_uid, (unsigned)geteuid());
    if (st->st_nlink != 1)
        return es_fail(err, ES_EINVAL,
                       "refusing the %s %s: it has %u hard links, so writing it would write "
                       "another file too; remove it",
                       what, path, (unsigned)st->st_nlink);
    return ES_OK;
}

es_err es_side_file_open(const char *path, const char *what, int *fd, es_error_t *err) {
    *fd = -1;
    const char *base = NULL;
    int dfd = es_open_parent(path, &base);
    if (dfd < 0)
        return es_fail(err, ES_EIO, "cannot open the directory of the %s %s: %s", what, path,
                       strerror(errno));
    struct stat dst, st;
    es_err e = ES_OK;
    if (fstat(dfd, &dst) != 0)
        e = es_fail(err, ES_EIO, "cannot inspect the directory of the %s %s: %s", what, path,
                    strerror(errno));
    else if (es_dir_open_to_others(&dst))
        e = es_fail(err, ES_EINVAL,
                    "refusing the %s %s: its directory is writable by every user (mode %04o) "
                    "and not sticky, so another user could swap the file; keep the database in "
                    "a directory only its users can write (chmod o-w)",
                    what, path, (unsigned)(dst.st_mode & 07777));
    int f = -1;
    if (e == ES_OK) {
        f = openat(dfd, base, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC,
                   0644);
        if (f < 0 && errno == ELOOP)
            e = es_fail(err, ES_EINVAL,
                        "refusing the %s %s: it is a symbolic link; eskit never writes through "
                        "one (remove it)",
                        what, path);
        else if (f < 0)
            e = es_fail(err, ES_EIO, "cannot open the %s %s: %s", what, path, strerror(errno));
    }
    if (e == ES_OK && fstat(f, &st) != 0)
        e = es_fail(err, ES_EIO, "cannot inspect the %s %s: %s", what, path, strerror(errno));
    else if (e == ES_OK)
        e = check_file(path, what, &st, err);
    if (e == ES_OK && fcntl(f, F_SETFL, fcntl(f, F_GETFL) & ~O_NONBLOCK) != 0)
        e = es_fail(err, ES_EIO, "cannot open the %s %s: %s", what, path, strerror(errno));
    close(dfd);
    if (e != ES_OK) {
        if (f >= 0)
            close(f);
        return e;
    }
    *fd = f;
    return ES_OK;
}
