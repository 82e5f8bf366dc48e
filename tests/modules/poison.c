/*
 * poison: the counter projector with failures on demand, chosen by aggregate id.
 *   bad-*      ES_EINVAL, unless the environment has ESKIT_TEST_POISON_FIXED=1
 *              (the "fixed" release of the module, for redrive);
 *   flaky-<k>  ES_ERETRY for the first k attempts at each of its events in one
 *              runner (counted in the runner's state), then applied;
 * and, as counter, ES_EDECODE for a payload that is not tp1 and ES_EUNKNOWN_TYPE
 * for another event type.
 */
#include "tp_common.h"

#include <stdlib.h>
#include <string.h>

#define MAX_FLAKY 64

typedef struct flaky_count {
    int64_t offset;
    long attempts;
} flaky_count;

typedef struct poison_state {
    flaky_count counts[MAX_FLAKY];
    size_t n;
} poison_state;

static es_err poison_init(sqlite3 *db, void **state, es_error_t *err) {
    (void)db;
    if (!(*state = calloc(1, sizeof(poison_state))))
        return tp_fail(err, ES_ENOMEM, "poison: out of memory");
    return ES_OK;
}

static void poison_fini(void *state) {
    free(state);
}

/* This attempt's number (1-based) at the event at offset. */
static long count_attempt(poison_state *st, int64_t offset) {
    for (size_t i = 0; i < st->n; i++)
        if (st->counts[i].offset == offset)
            return ++st->counts[i].attempts;
    if (st->n == MAX_FLAKY)
        return 1;
    st->counts[st->n] = (flaky_count){offset, 1};
    return st->counts[st->n++].attempts;
}

static int fixed(void) {
    const char *v = getenv("ESKIT_TEST_POISON_FIXED");
    return v && strcmp(v, "1") == 0;
}

static es_err poison_apply(es_projector_ctx_t *ctx, const es_event_t *ev, es_error_t *err) {
    const char *id = ev->aggregate_id;
    if (strncmp(id, "bad-", 4) == 0 && !fixed())
        return tp_fail(err, ES_EINVAL,
                       "poison: aggregate %s is marked bad (v%llu); set "
                       "ESKIT_TEST_POISON_FIXED=1 to accept it",
                       id, (unsigned long long)ev->version);
    if (strncmp(id, "flaky-", 6) == 0) {
        poison_state *st = es_ctx_state(ctx);
        long failures = strtol(id + 6, NULL, 10);
        long attempt = st ? count_attempt(st, ev->offset) : 1;
        if (!st || attempt <= failures)
            return tp_fail(err, ES_ERETRY, "poison: %s v%llu is flaky (attempt %ld of %ld bad)", id,
                           (unsigned long long)ev->version, attempt, failures);
    }
    return tp_apply(ctx, "poison", ev, err);
}

static const char *const topics[] = {TP_TOPIC, NULL};

static const es_projector_def poison_def = {
    .abi_version = ES_PROJECTOR_ABI,
    .name = "poison",
    .schema_version = 1,
    .topics = topics,
    .migrate = tp_migrate,
    .apply = poison_apply,
    .init = poison_init,
    .fini = poison_fini,
};

ES_PROJECTOR_EXPORT(poison_def)
