/*
 * The apply watchdog (projector.apply.timeout.ms). A C function cannot be stopped from
 * outside, and the thread stuck in one holds the read model's transaction and the projector's
 * lock, so the one way out is ending the process: the watchdog thread marks the guard and
 * kills the process with SIGKILL, the crash guard counts the death at the restart, and after
 * projector.crash.restarts of them the event is parked (apply.c).
 */
#include "runner_int.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int64_t mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void es_watch_begin(watchdog *w, const es_raw_record_t *rec) {
    __atomic_store_n(&w->topic, rec->topic, __ATOMIC_RELAXED);
    __atomic_store_n(&w->partition, rec->partition, __ATOMIC_RELAXED);
    __atomic_store_n(&w->offset, rec->offset, __ATOMIC_RELAXED);
    __atomic_store_n(&w->since_us, mono_us(), __ATOMIC_RELEASE);
}

/* How long the log callback has to tell of the watchdog's kill before the kill comes anyway. */
#define WATCH_LOG_GRACE_S 1

/* Arms a kill that needs nothing of the process: a kernel timer sends SIGKILL in
 * WATCH_LOG_GRACE_S, so a log callback that blocks (on a lock the stuck thread holds, on a full
 * stderr pipe) cannot keep a stuck process alive. 1 when armed. */
static int arm_kill(void) {
    struct sigevent ev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGKILL};
    struct itimerspec at = {.it_value = {.tv_sec = WATCH_LOG_GRACE_S}};
    timer_t t;
    return timer_create(CLOCK_MONOTONIC, &ev, &t) == 0 && timer_settime(t, 0, &at, NULL) == 0;
}

/* The apply has run too long: the guard counts it as a death, a kill is armed, the config's
 * log callback is told (a critical line, on this thread; not when no kill could be armed: then
 * nothing may stand between the watchdog and its kill), and the process ends. */
static void watch_expired(es_runner_t *r, int64_t since) {
    watchdog *w = &r->wd;
    const char *topic = __atomic_load_n(&w->topic, __ATOMIC_RELAXED);
    int32_t partition = __atomic_load_n(&w->partition, __ATOMIC_RELAXED);
    int64_t offset = __atomic_load_n(&w->offset, __ATOMIC_RELAXED);
    unsigned deaths = __atomic_load_n(&w->deaths, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&w->since_us, __ATOMIC_RELAXED) != since)
        return; /* it ended meanwhile: what was read may be the next apply's */
    if (r->guard)
        es_guard_timed_out(r->guard);
    if (arm_kill())
        es_logf(r->cfg, ES_LOG_CRITICAL,
                "projector '%s': applying %s/%d offset %lld ran longer than "
                "projector.apply.timeout.ms (%lld ms); the process is ended so that the crash "
                "guard counts it: death %u of the %d (projector.crash.restarts) after which a "
                "restart parks the event",
                r->def->name, topic, (int)partition, (long long)offset, (long long)w->timeout_ms,
                deaths + 1, r->restarts);
    kill(getpid(), SIGKILL);
    for (;;)
        pause();
}

static void *watch_main(void *arg) {
    es_runner_t *r = arg;
    watchdog *w = &r->wd;
    /* Checked four times per timeout, between 1 ms and 100 ms apart. */
    int64_t period = w->timeout_ms >= 400 ? 100000 : w->timeout_ms < 4 ? 1000 : w->timeout_ms * 250;
    pthread_mutex_lock(&w->mu);
    while (!w->quit) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = ts.tv_nsec + period * 1000;
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
        int64_t since = __atomic_load_n(&w->since_us, __ATOMIC_ACQUIRE);
        if (!w->quit && since && (mono_us() - since) / 1000 >= w->timeout_ms)
            watch_expired(r, since);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Starts the watchdog thread with every signal blocked, so that signals meant for the
 * process (an operator's Ctrl-C) reach the threads whose handlers expect them. */
es_err es_watch_start(es_runner_t *r, es_error_t *err) {
    watchdog *w = &r->wd;
    pthread_condattr_t ca;
    int rc = pthread_condattr_init(&ca);
    if (rc == 0) {
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        rc = pthread_cond_init(&w->cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    if (rc == 0 && (rc = pthread_mutex_init(&w->mu, NULL)) != 0)
        pthread_cond_destroy(&w->cv);
    if (rc == 0) {
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        rc = pthread_create(&w->thread, NULL, watch_main, r);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rc != 0) {
            pthread_mutex_destroy(&w->mu);
            pthread_cond_destroy(&w->cv);
        }
    }
    if (rc != 0)
        return es_fail(err, ES_EIO,
                       "projector '%s': cannot start the apply watchdog "
                       "(projector.apply.timeout.ms): %s",
                       r->def->name, strerror(rc));
    w->on = 1;
    return ES_OK;
}

void es_watch_stop(watchdog *w) {
    if (!w->on)
        return;
    pthread_mutex_lock(&w->mu);
    w->quit = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    w->on = 0;
}

void es_watch_end(watchdog *w) {
    __atomic_store_n(&w->since_us, 0, __ATOMIC_RELEASE);
}
