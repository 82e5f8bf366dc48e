/*
 * crashy: the counter projector with a fatal bug. Applying any event of the
 * aggregate "crash-me" kills the process with SIGSEGV, every time, so only
 * the runner's crash-loop guard can get past it.
 */
#include "tp_common.h"

#include <signal.h>
#include <string.h>

#define CRASH_ID "crash-me"

static es_err crashy_apply(es_projector_ctx_t *ctx, const es_event_t *ev, es_error_t *err) {
    if (strcmp(ev->aggregate_id, CRASH_ID) == 0) {
        /* Die as an unhandled crash does, whatever handler the process installed (ASan's). */
        signal(SIGSEGV, SIG_DFL);
        raise(SIGSEGV);
    }
    return tp_apply(ctx, "crashy", ev, err);
}

static const char *const topics[] = {TP_TOPIC, NULL};

static const es_projector_def crashy_def = {
    .abi_version = ES_PROJECTOR_ABI,
    .name = "crashy",
    .schema_version = 1,
    .topics = topics,
    .migrate = tp_migrate,
    .apply = crashy_apply,
};

ES_PROJECTOR_EXPORT(crashy_def)
