/* Idempotency figures: es_execute_batch as the command ids it remembers grow, for commands
 * without a caller id, with sequential ids and with random UUIDv4 ids. */
#ifndef ESKIT_BENCH_IDEM_H
#define ESKIT_BENCH_IDEM_H

#include <stdbool.h>
#include <stddef.h>

enum { IDEM_NONE, IDEM_SEQ, IDEM_RANDOM, IDEM_KINDS };

/* One measuring point: the log's size there and each kind's rate. */
typedef struct idem_point {
    size_t events;                        /* events in the log */
    size_t ids;                           /* rows of es_commands (ids remembered, every kind) */
    size_t ids_of[IDEM_KINDS];            /* ids executed of each kind so far */
    double table_bytes;                   /* es_commands' pages (dbstat) */
    double rate[IDEM_KINDS];              /* events per second over the point's window of batches */
    double written_per_batch[IDEM_KINDS]; /* bytes the process wrote per batch (/proc/self/io) */
    double first_batch_ms; /* the first batch after the store was opened (index built) */
    double raw_rate;       /* rows per second of a raw insert of as many envelope-sized rows a
                              transaction into the same file, after the kinds' window */
} idem_point_t;

typedef struct idem_figs {
    size_t batch;                  /* commands per measured batch */
    size_t aggregates;             /* aggregates the commands go to, at random */
    size_t window;                 /* measured batches per kind and point */
    idem_point_t empty, mid, full; /* empty log; ids grown; events grown further */
} idem_figs_t;

/* Runs the group on a fresh store in dir (quick: a hundredth of the counts). 0 or -1. */
int bench_idem(const char *dir, bool quick, idem_figs_t *out);

#endif
