/* Replay figures: es_replay into order_summary beside a raw rebuild, and its peak RSS. */
#ifndef ESKIT_BENCH_REPLAY_H
#define ESKIT_BENCH_REPLAY_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

typedef struct replay_figs {
    size_t events;     /* events in the generated log */
    double es_per_s;   /* es_replay, events/s (with_raw only) */
    double raw_per_s;  /* the raw rebuild, events/s (with_raw only) */
    long peak_rss_kib; /* peak RSS of an es_replay in a child process */
} replay_figs_t;

/* Generates about n_events demo order events in dir, then measures. 0 or -1. */
int bench_replay(const char *dir, size_t n_events, bool with_raw, replay_figs_t *out);

/* Replay of a demo log of which every second event is stored as an old type (orders.v0.*) and
 * reaches the projector through an upcaster that decodes and packs the payload again, beside
 * the replay of the same log before it was aged, with no upcaster. */
typedef struct upcast_figs {
    size_t events;       /* events in the log */
    size_t aged;         /* of them stored as old types */
    double upcast_per_s; /* es_replay of the aged log, upcasters on the config */
    double plain_per_s;  /* es_replay of the log as generated, no upcaster */
} upcast_figs_t;

int bench_replay_upcast(const char *dir, size_t n_events, upcast_figs_t *out);

/* es_replay of one demo log into order_summary with metrics on beside metrics.enabled = false;
 * pairs replays each side, alternating (bench_alternate), each into a fresh read model. */
typedef struct replay_metrics {
    size_t events;   /* events in the log */
    bench_alt_t alt; /* events/s, metrics on beside off */
} replay_metrics_t;

int bench_replay_metrics(const char *dir, size_t n_events, size_t pairs, replay_metrics_t *out);

#endif
