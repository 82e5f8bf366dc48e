/* Replay figures: es_replay into order_summary beside a raw rebuild, and its peak RSS. */
#ifndef ESKIT_BENCH_REPLAY_H
#define ESKIT_BENCH_REPLAY_H

#include <stdbool.h>
#include <stddef.h>

typedef struct replay_figs {
    size_t events;     /* events in the generated log */
    double es_per_s;   /* es_replay, events/s (with_raw only) */
    double raw_per_s;  /* the raw rebuild, events/s (with_raw only) */
    long peak_rss_kib; /* peak RSS of an es_replay in a child process */
} replay_figs_t;

/* Generates about n_events demo order events in dir, then measures. 0 or -1. */
int bench_replay(const char *dir, size_t n_events, bool with_raw, replay_figs_t *out);

#endif
