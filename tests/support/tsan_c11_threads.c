/*
 * C11 threads as POSIX threads, so that ThreadSanitizer sees librdkafka's (ESKIT_TSAN builds
 * only; make tsan). GCC 12's TSan intercepts pthread_create and the pthread locks, not their
 * C11 forms, and glibc's thrd_create calls its pthread_create internally, past TSan: a thread
 * librdkafka starts has no TSan state, and TSan crashes (SEGV) at its first instrumented access
 * on it, in one of our callbacks. Linked into libeskit, these definitions come before libc's
 * for every process that uses eskit, and each is what glibc does, through the functions TSan
 * intercepts: so TSan also sees the locks that order librdkafka's threads and ours.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>

/* librdkafka must bind to these, so they are exported from libeskit despite its hidden
 * visibility. */
#pragma GCC visibility push(default)

static int code(int rc) {
    return rc == 0           ? thrd_success
           : rc == ENOMEM    ? thrd_nomem
           : rc == EBUSY     ? thrd_busy
           : rc == ETIMEDOUT ? thrd_timedout
                             : thrd_error;
}

typedef struct start {
    thrd_start_t fn;
    void *arg;
} start;

static void *start_main(void *opaque) {
    start s = *(start *)opaque;
    free(opaque);
    return (void *)(intptr_t)s.fn(s.arg);
}

int thrd_create(thrd_t *thr, thrd_start_t fn, void *arg) {
    start *s = malloc(sizeof *s);
    if (!s)
        return thrd_nomem;
    s->fn = fn;
    s->arg = arg;
    pthread_t t;
    int rc = pthread_create(&t, NULL, start_main, s);
    if (rc != 0) {
        free(s);
        return code(rc);
    }
    *thr = (thrd_t)t;
    return thrd_success;
}

int thrd_join(thrd_t thr, int *res) {
    void *ret;
    int rc = pthread_join((pthread_t)thr, &ret);
    if (rc == 0 && res)
        *res = (int)(intptr_t)ret;
    return code(rc);
}

int thrd_detach(thrd_t thr) {
    return code(pthread_detach((pthread_t)thr));
}

_Noreturn void thrd_exit(int res) {
    pthread_exit((void *)(intptr_t)res);
}

/* glibc's mtx_t and cnd_t hold a pthread_mutex_t and a pthread_cond_t. */
_Static_assert(sizeof(mtx_t) == sizeof(pthread_mutex_t), "mtx_t is a pthread_mutex_t");
_Static_assert(sizeof(cnd_t) == sizeof(pthread_cond_t), "cnd_t is a pthread_cond_t");

int mtx_init(mtx_t *m, int type) {
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    if (type & mtx_recursive)
        pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    int rc = pthread_mutex_init((pthread_mutex_t *)m, &a);
    pthread_mutexattr_destroy(&a);
    return code(rc);
}

int mtx_lock(mtx_t *m) {
    return code(pthread_mutex_lock((pthread_mutex_t *)m));
}

int mtx_trylock(mtx_t *m) {
    return code(pthread_mutex_trylock((pthread_mutex_t *)m));
}

int mtx_timedlock(mtx_t *restrict m, const struct timespec *restrict at) {
    return code(pthread_mutex_timedlock((pthread_mutex_t *)m, at));
}

int mtx_unlock(mtx_t *m) {
    return code(pthread_mutex_unlock((pthread_mutex_t *)m));
}

void mtx_destroy(mtx_t *m) {
    pthread_mutex_destroy((pthread_mutex_t *)m);
}

int cnd_init(cnd_t *c) {
    return code(pthread_cond_init((pthread_cond_t *)c, NULL));
}

int cnd_signal(cnd_t *c) {
    return code(pthread_cond_signal((pthread_cond_t *)c));
}

int cnd_broadcast(cnd_t *c) {
    return code(pthread_cond_broadcast((pthread_cond_t *)c));
}

int cnd_wait(cnd_t *c, mtx_t *m) {
    return code(pthread_cond_wait((pthread_cond_t *)c, (pthread_mutex_t *)m));
}

int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m, const struct timespec *restrict at) {
    return code(pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m, at));
}

void cnd_destroy(cnd_t *c) {
    pthread_cond_destroy((pthread_cond_t *)c);
}

_Static_assert(sizeof(once_flag) == sizeof(pthread_once_t), "once_flag is a pthread_once_t");

void call_once(once_flag *flag, void (*fn)(void)) {
    pthread_once((pthread_once_t *)flag, fn);
}
