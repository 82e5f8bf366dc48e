/*
 * The run loop behind es_processor_run, es_runner_run and es_saga_run, and the stop flag they
 * share. A loop polls until its stop is set, rides out transient failures with capped
 * exponential backoff, and returns the first failure that is not transient. The stop is a
 * lock-free atomic: setting it is a data race with no thread and async-signal-safe (C11
 * 7.14.1.1), so a service may stop a loop from any thread or from its SIGTERM handler.
 */
#ifndef ESKIT_RUNLOOP_H
#define ESKIT_RUNLOOP_H

#include <eskit/eskit.h>

#include <stdatomic.h>

_Static_assert(ATOMIC_INT_LOCK_FREE == 2,
               "a stop flag is set from signal handlers: atomic_int must be lock-free");

/* Set (a release store) by a stop from any thread or signal handler; read with acquire loads
 * by the loop it stops, so what the stopper wrote before the stop is visible to the loop. */
typedef struct es_stop {
    atomic_int set;
} es_stop_t;

static inline void es_stop_init(es_stop_t *s) {
    atomic_init(&s->set, 0);
}

static inline void es_stop_request(es_stop_t *s) {
    atomic_store_explicit(&s->set, 1, memory_order_release);
}

/* Only the loop's owner clears a stop (a run loop as it returns, or a resume). */
static inline void es_stop_clear(es_stop_t *s) {
    atomic_store_explicit(&s->set, 0, memory_order_release);
}

/* Whether a stop was asked for; s may be NULL (never). */
static inline int es_stop_requested(const es_stop_t *s) {
    /* C11's atomic_load takes a non-const pointer; no stop flag is defined const. */
    return s && atomic_load_explicit((atomic_int *)&s->set, memory_order_acquire);
}

/* Sleeps ms milliseconds, waking within ES_STOP_SLICE_MS of a stop (s may be NULL). Returns
 * whether it was stopped. */
#define ES_STOP_SLICE_MS 10
int es_stop_sleep(const es_stop_t *s, int ms);

/* es_err_is_transient (eskit/error.h) decides what the loop retries. */

/* One round of a loop's work, waiting up to timeout_ms for some; fills err (never NULL) on
 * failure. */
typedef es_err es_poll_fn(void *opaque, int timeout_ms, es_error_t *err);

/* A backoff: waits ms milliseconds or until stop is set, whichever comes first (es_stop_sleep
 * is the one every service uses; a test counts the waits instead of sleeping them). */
typedef void es_wait_fn(void *opaque, const es_stop_t *stop, int ms);

/* Calls poll until *stop is set (a stop set before the call returns at once, without a poll).
 * A transient failure is logged once through cfg's log callback, as a warning
 * "<subject><its message>; retrying in <n> ms" (the subject, e.g. "saga 'x': ", is not
 * repeated when the message begins with it), then polled again after a backoff of 100 ms that
 * doubles with each failure in a row up to 5 s and starts over after a success; a stop cuts
 * the backoff short within ES_STOP_SLICE_MS. Returns ES_OK when stopped, or the first failure
 * that is not transient, copied into err (may be NULL). The stop is left set: the caller
 * clears it. */
es_err es_run_loop(es_poll_fn *poll, void *opaque, const es_stop_t *stop, const es_config_t *cfg,
                   const char *subject, es_error_t *err);
/* es_run_loop with its backoffs waited by wait(opaque, stop, ms) instead of es_stop_sleep. */
es_err es_run_loop_waiting(es_poll_fn *poll, es_wait_fn *wait, void *opaque, const es_stop_t *stop,
                           const es_config_t *cfg, const char *subject, es_error_t *err);

#endif
