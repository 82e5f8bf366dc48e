/* The shared run loop and stop flag (runloop.h). */
#include "runloop.h"

#include "internal.h"

#include <string.h>
#include <time.h>

#define POLL_MS 100        /* each poll waits this long for work */
#define BACKOFF_MIN_MS 100 /* after the first failure in a row */
#define BACKOFF_MAX_MS 5000

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int es_stop_sleep(const es_stop_t *s, int ms) {
    int64_t end = mono_ms() + (ms > 0 ? ms : 0);
    for (int64_t left; !es_stop_requested(s) && (left = end - mono_ms()) > 0;)
        es_sleep_ms(left < ES_STOP_SLICE_MS ? (int)left : ES_STOP_SLICE_MS);
    return es_stop_requested(s);
}

int es_err_is_transient(es_err e) {
    return e == ES_EKAFKA || e == ES_EBUSY || e == ES_ETIMEOUT || e == ES_ERETRY;
}

static void stop_sleep(void *opaque, const es_stop_t *stop, int ms) {
    (void)opaque;
    es_stop_sleep(stop, ms);
}

es_err es_run_loop(es_poll_fn *poll, void *opaque, const es_stop_t *stop, const es_config_t *cfg,
                   const char *subject, es_error_t *err) {
    return es_run_loop_waiting(poll, stop_sleep, opaque, stop, cfg, subject, err);
}

es_err es_run_loop_waiting(es_poll_fn *poll, es_wait_fn *wait, void *opaque, const es_stop_t *stop,
                           const es_config_t *cfg, const char *subject, es_error_t *err) {
    es_error_t failure; /* the log line quotes it: err may be NULL */
    int backoff = BACKOFF_MIN_MS;
    while (!es_stop_requested(stop)) {
        failure.message[0] = '\0';
        es_err e = poll(opaque, POLL_MS, &failure);
        if (e == ES_OK) {
            backoff = BACKOFF_MIN_MS;
            continue;
        }
        if (!failure.message[0]) /* a poll that did not say why */
            es_fail(&failure, e, "%s", es_strerror(e));
        if (!es_err_is_transient(e)) {
            if (err)
                *err = failure;
            return e;
        }
        if (subject)
            es_error_subject(&failure, subject);
        es_logf(cfg, ES_LOG_WARNING, "%s; retrying in %d ms", failure.message, backoff);
        wait(opaque, stop, backoff);
        backoff = backoff * 2 < BACKOFF_MAX_MS ? backoff * 2 : BACKOFF_MAX_MS;
    }
    return ES_OK;
}
