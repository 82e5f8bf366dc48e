/*
 * counter: the plain test projector. Every TP_EVENT_ADDED event becomes a row
 * of tp_applied and counts toward its aggregate's total (tp_common.h).
 */
#include "tp_common.h"

static es_err counter_apply(es_projector_ctx_t *ctx, const es_event_t *ev, es_error_t *err) {
    return tp_apply(ctx, "counter", ev, err);
}

static const char *const topics[] = {TP_TOPIC, NULL};

static const es_projector_def counter_def = {
    .abi_version = ES_PROJECTOR_ABI,
    .name = "counter",
    .schema_version = 1,
    .topics = topics,
    .migrate = tp_migrate,
    .apply = counter_apply,
};

ES_PROJECTOR_EXPORT(counter_def)
