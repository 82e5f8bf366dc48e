/* Restore figures: a new owner restoring partitions of 1x, 3x and 10x history. */
#ifndef ESKIT_BENCH_RESTORE_H
#define ESKIT_BENCH_RESTORE_H

#include <stddef.h>

#define RESTORE_SIZES 3

typedef struct restore_figs {
    size_t aggregates;            /* per partition, the same at every size */
    int multiple[RESTORE_SIZES];  /* history: 1, 3, 10 times EVENTS_1X events an aggregate */
    size_t events[RESTORE_SIZES]; /* events in each partition */
    double ms[RESTORE_SIZES];     /* restore of each partition by a fresh owner */
    unsigned long long imported;  /* events the fresh owner imported, all partitions */
    unsigned long long snapshots; /* snapshots it imported */
    long long window_ms;          /* idempotency.window.ms of the run */
} restore_figs_t;

/* Writes the history through a processor on a mock cluster, waits past the idempotency window,
 * then times a processor on a fresh state store restoring each partition. 0 or -1. */
int bench_restore(const char *dir, size_t aggregates, restore_figs_t *out);

#endif
