/*
 * What the test projector modules share: their two tables and the apply that
 * fills them. tp_applied holds one row per applied event, keyed by aggregate
 * id and version, so an event applied twice fails loudly (a constraint error)
 * instead of counting twice; tp_totals holds per aggregate the number of
 * events and the sum of their amounts. Invariant of a consistent model:
 * SUM(tp_totals.events) = COUNT(tp_applied) and the amounts agree likewise.
 */
#ifndef ESKIT_TP_COMMON_H
#define ESKIT_TP_COMMON_H

#include <eskit/projector.h>

#include "tp_format.h"

/* Fills err (may be NULL) and returns code. */
es_err tp_fail(es_error_t *err, es_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Creates tp_applied and tp_totals (schema version 1). */
es_err tp_migrate(sqlite3 *db, int from_version, es_error_t *err);

/* Records ev in tp_applied and adds it to its aggregate's total. An event type other than
 * TP_EVENT_ADDED is ES_EUNKNOWN_TYPE, a payload not in the tp format ES_EDECODE; name (the
 * module's) starts every error message. */
es_err tp_apply(es_projector_ctx_t *ctx, const char *name, const es_event_t *ev, es_error_t *err);

#endif
