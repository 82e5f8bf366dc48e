/* The log-order rule (logorder.h): one decision, one set of counters, one wording. */
#include "logorder.h"

#include <stdio.h>

#include "internal.h"

es_order_action es_log_order(es_order_role role, uint64_t last, uint64_t version,
                             es_order_counts *counts) {
    es_order_counts ignored = {0};
    counts = counts ? counts : &ignored;
    if (version <= last) {
        counts->stale++;
        return ES_ORDER_SKIP;
    }
    if (version == last + 1)
        return ES_ORDER_APPLY;
    counts->gaps++;
    return role == ES_ORDER_RESTORE ? ES_ORDER_STOP : ES_ORDER_APPLY;
}

/* " (<topic> partition P offset O)", or "" when the position is not known. */
static void where(char *out, size_t cap, const es_position_t *at) {
    out[0] = '\0';
    if (at && at->topic && at->offset >= 0)
        snprintf(out, cap, " (%s partition %d offset %lld)", at->topic, (int)at->partition,
                 (long long)at->offset);
}

void es_log_order_warn_gap(const es_config_t *cfg, const es_position_t *at, const char *type,
                           const char *id, uint64_t last, uint64_t version) {
    char place[300];
    where(place, sizeof place, at);
    es_logf(cfg, ES_LOG_WARNING,
            "%s/%s: version %llu follows version %llu%s: versions %llu..%llu are missing from "
            "the log; applied anyway (log-order rule), counted as a gap",
            type, id, (unsigned long long)version, (unsigned long long)last, place,
            (unsigned long long)last + 1, (unsigned long long)version - 1);
}

es_err es_log_order_gap_error(es_error_t *err, const es_position_t *at, const char *type,
                              const char *id, uint64_t last, uint64_t version) {
    char place[300];
    where(place, sizeof place, at);
    return es_fail(err, ES_EIO,
                   "%s/%s: version %llu follows version %llu%s: versions %llu..%llu are missing "
                   "from the log, so the state store cannot be restored past it; find what "
                   "happened to those records (esctl verify names every gap), restore them, "
                   "and start again",
                   type, id, (unsigned long long)version, (unsigned long long)last, place,
                   (unsigned long long)last + 1, (unsigned long long)version - 1);
}
