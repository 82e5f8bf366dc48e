/*
 * The log-order rule: what a reader does with an aggregate's event whose version is not the
 * next one (docs/design.md, "The log-order rule"; proto/README.md). One function decides for
 * every reader; what a gap means depends on the reader's role:
 *
 * - a reader (projector runners, es_replay, the saga coordinator, stream reads behind
 *   es_store_read_stream, esctl events and sagas show) skips a stale version (a duplicate or a
 *   zombie writer's fork) and applies a gap with a warning: skipping it would turn one lost
 *   record into the loss of every later event of that aggregate;
 * - a writer restoring its state store from the log (the Kafka command processor) skips a
 *   stale version too, but a gap is data loss that stops the partition with an error: its
 *   store cannot hold a gap, and deciding later commands on a history with a hole in it would
 *   write a second event at the missing version.
 *
 * Both count what they met in one es_order_counts.
 */
#ifndef ESKIT_LOGORDER_H
#define ESKIT_LOGORDER_H

#include <stdint.h>
#include <eskit/eskit.h>

typedef enum es_order_role {
    ES_ORDER_READER = 0,  /* a gap is applied, warned about and counted */
    ES_ORDER_RESTORE = 1, /* a gap stops the partition */
} es_order_role;

typedef enum es_order_action {
    ES_ORDER_APPLY = 0, /* the next version, or (reader) a gap */
    ES_ORDER_SKIP = 1,  /* stale: version <= the last one taken */
    ES_ORDER_STOP = 2,  /* (restore) a gap */
} es_order_action;

/* What the rule met; the same fields in every reader's statistics. */
typedef struct es_order_counts {
    uint64_t stale; /* versions skipped as at or below the last one taken */
    uint64_t gaps;  /* versions more than one past the last one taken */
} es_order_counts;

/* What a reader in role does with version after last (0: none taken yet); counts it in
 * *counts (may be NULL). */
es_order_action es_log_order(es_order_role role, uint64_t last, uint64_t version,
                             es_order_counts *counts);

/* The warning a reader logs for a gap it applies; at may be NULL. */
void es_log_order_warn_gap(const es_config_t *cfg, const es_position_t *at, const char *type,
                           const char *id, uint64_t last, uint64_t version);

/* The error (ES_EIO) that stops a restoring writer at a gap: what is missing, where, and what
 * to do. at may be NULL. */
es_err es_log_order_gap_error(es_error_t *err, const es_position_t *at, const char *type,
                              const char *id, uint64_t last, uint64_t version);

#endif
