/*
 * Modules the loader must refuse. Built twice: with BAD_ABI it exports a
 * definition of a future ABI; without, it exports no entry point at all.
 */
#include <eskit/projector.h>

#ifdef BAD_ABI
static es_err no_migrate(sqlite3 *db, int from, es_error_t *err) {
    (void)db;
    (void)from;
    (void)err;
    return ES_OK;
}

static es_err no_apply(es_projector_ctx_t *ctx, const es_event_t *ev, es_error_t *err) {
    (void)ctx;
    (void)ev;
    (void)err;
    return ES_OK;
}

static const char *const topics[] = {"test.thing.events", NULL};

static const es_projector_def future_def = {
    .abi_version = ES_PROJECTOR_ABI + 1,
    .name = "future",
    .schema_version = 1,
    .topics = topics,
    .migrate = no_migrate,
    .apply = no_apply,
};

const es_projector_def *es_projector_entry(void);

const es_projector_def *es_projector_entry(void) {
    return &future_def;
}
#else
int not_a_projector(void);

int not_a_projector(void) {
    return 42;
}
#endif
