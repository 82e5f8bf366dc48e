/*
 * Side files: the files eskit creates and writes beside its databases (an event store's head
 * file, a read model's lock and crash guard, a replay's guard and shadow). Every one is opened
 * here, so that another user who can put a name in their directory cannot make eskit truncate
 * or write a file of their choosing: never through a symlink, only a regular file with one link
 * (a hard link to /etc/shadow is refused, wherever fs.protected_hardlinks is off), not writable
 * by every user, owned by the effective user (or by the owner of its database where the caller
 * accepts that), and never in a directory every user can write unless it is sticky and owned by
 * the user or root, as /tmp (there no one can replace another's file). A directory its group
 * can write is accepted: a group member can remove the file, not make one that passes these
 * checks. Reading checks the same, it only creates nothing.
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

/* Why the opened file st may not be used, or ES_OK: owner is the one user besides the effective
 * one whose file it may be. */
static es_err check_file(const char *path, const char *what, const struct stat *st, uid_t owner,
                         es_error_t *err) {
    uid_t me = geteuid();
    if (!S_ISREG(st->st_mode))
        return es_fail(err, ES_EINVAL, "refusing the %s %s: it is %s, not a file eskit made", what,
                       path, es_file_kind(st->st_mode));
    if (st->st_uid != me && st->st_uid != owner && owner == me)
        return es_fail(err, ES_EINVAL,
                       "refusing the %s %s: it is owned by uid %u, not by this process's user "
                       "(uid %u); run this as the user who owns the read model",
                       what, path, (unsigned)st->st_uid, (unsigned)me);
    if (st->st_uid != me && st->st_uid != owner)
        return es_fail(err, ES_EINVAL,
                       "refusing the %s %s: it is owned by uid %u, neither this process's user "
                       "(uid %u) nor the owner of its database (uid %u); remove it",
                       what, path, (unsigned)st->st_uid, (unsigned)me, (unsigned)owner);
    if (st->st_nlink != 1)
        return es_fail(err, ES_EINVAL,
                       "refusing the %s %s: it has %u hard links, so writing it would write "
                       "another file too; remove it",
                       what, path, (unsigned)st->st_nlink);
    if (st->st_mode & S_IWOTH)
        return es_fail(err, ES_EINVAL,
                       "refusing the %s %s: every user may write it (mode %04o); chmod o-w it",
                       what, path, (unsigned)(st->st_mode & 07777));
    return ES_OK;
}

/* Why es_dir_open_to_others(dir): not sticky, or sticky but its owner (who may remove or rename
 * anything in it) is neither the user nor root. */
static es_err refuse_open_dir(const char *path, const char *what, const struct stat *dir,
                              es_error_t *err) {
    unsigned mode = (unsigned)(dir->st_mode & 07777);
    if (!(dir->st_mode & S_ISVTX))
        return es_fail(err, ES_EINVAL,
                       "refusing the %s %s: its directory is writable by every user (mode %04o) "
                       "and not sticky, so another user could swap the file; keep the database "
                       "in a directory only its users can write (chmod o-w)",
                       what, path, mode);
    return es_fail(err, ES_EINVAL,
                   "refusing the %s %s: its directory is writable by every user (mode %04o) and "
                   "sticky but owned by uid %u, not by you (uid %u) or root, so its owner could "
                   "swap the file; keep the database in a directory you or root own, or one only "
                   "its users can write (chmod o-w)",
                   what, path, mode, (unsigned)dir->st_uid, (unsigned)geteuid());
}

/* Opens base in dfd, never through a symbolic link; unless read-only, creates it when missing
 * (*made: this call created it, so no one else's file is given away by a chown). */
static int open_in(int dfd, const char *base, unsigned flags, int *made) {
    const int common = O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
    *made = 0;
    if (flags & ES_SIDE_READ)
        return openat(dfd, base, O_RDONLY | common);
    for (int tries = 0; tries < 3; tries++) { /* removed between the two opens: again */
        int f = openat(dfd, base, O_RDWR | O_CREAT | O_EXCL | common, 0644);
        if (f >= 0) {
            *made = 1;
            return f;
        }
        if (errno != EEXIST)
            return -1;
        f = openat(dfd, base, O_RDWR | common);
        if (f >= 0 || errno != ENOENT)
            return f;
    }
    return -1;
}

static es_err open_failed(const char *path, const char *what, unsigned flags, es_error_t *err) {
    int e = errno;
    if (e == ELOOP)
        return es_fail(err, ES_EINVAL,
                       "refusing the %s %s: it is a symbolic link; eskit never writes through "
                       "one (remove it)",
                       what, path);
    if (e == ENOENT && (flags & ES_SIDE_READ))
        return es_fail(err, ES_ENOTFOUND, "the %s %s does not exist", what, path);
    return es_fail(err, ES_EIO, "cannot open the %s %s: %s", what, path, strerror(e));
}

es_err es_side_file_open_for(const char *path, const char *what, unsigned flags, uid_t owner,
                             gid_t group, int *fd, es_error_t *err) {
    *fd = -1;
    const char *base = NULL;
    int dfd = es_open_parent(path, &base);
    if (dfd < 0)
        return es_fail(err, ES_EIO, "cannot open the directory of the %s %s: %s", what, path,
                       strerror(errno));
    struct stat dst, st;
    int made = 0, f = -1;
    es_err e = ES_OK;
    if (fstat(dfd, &dst) != 0)
        e = es_fail(err, ES_EIO, "cannot inspect the directory of the %s %s: %s", what, path,
                    strerror(errno));
    /* Nothing is created there; a file that is not there is simply not there. */
    else if (es_dir_open_to_others(&dst) && !(flags & ES_SIDE_READ))
        e = refuse_open_dir(path, what, &dst, err);
    if (e == ES_OK && (f = open_in(dfd, base, flags, &made)) < 0)
        e = open_failed(path, what, flags, err);
    if (e == ES_OK && es_dir_open_to_others(&dst))
        e = refuse_open_dir(path, what, &dst, err);
    if (e == ES_OK && fstat(f, &st) != 0)
        e = es_fail(err, ES_EIO, "cannot inspect the %s %s: %s", what, path, strerror(errno));
    else if (e == ES_OK)
        e = check_file(path, what, &st, owner, err);
    /* Root making it for another user's database: theirs, or their processes cannot open it. */
    if (e == ES_OK && made && st.st_uid != owner && geteuid() == 0 && fchown(f, owner, group) != 0)
        e = es_fail(err, ES_EIO, "cannot give the %s %s to uid %u, the owner of its database: %s",
                    what, path, (unsigned)owner, strerror(errno));
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

es_err es_side_file_open(const char *path, const char *what, int *fd, es_error_t *err) {
    return es_side_file_open_for(path, what, 0, geteuid(), getegid(), fd, err);
}

es_err es_side_file_reserve(int fd, const char *path, const char *what, size_t size,
                            es_error_t *err) {
    int rc = posix_fallocate(fd, 0, (off_t)size);
    if (rc == 0)
        return ES_OK;
    if (rc == ENOSPC || rc == EDQUOT || rc == EFBIG)
        return es_fail(err, ES_EIO,
                       "cannot make room for the %s %s (%zu bytes): %s: the disk is full (or the "
                       "user's quota or file size limit is reached); free some space and run it "
                       "again",
                       what, path, size, strerror(rc));
    return es_fail(err, ES_EIO, "cannot allocate the %s %s (%zu bytes): %s", what, path, size,
                   strerror(rc));
}
