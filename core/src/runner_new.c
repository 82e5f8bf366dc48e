/*
 * es_runner_new: the live runner of a projector. When the module's schema version is newer
 * than the one its read model was built with, the model is rebuilt first, as an explicit step
 * (es_replay, which opens a runner of its own on a fresh file), then the runner is opened;
 * opening a runner (runner.c) never rebuilds, so runner.c <- replay.c <- this file has no
 * circle.
 */
#include "runner_int.h"

#include <stdlib.h>

es_err es_runner_new_on(const es_config_t *cfg, const es_projector_def *def, const char *key,
                        const char *noun, es_runner_t **out, es_error_t *err) {
    if (!out)
        return es_fail(err, ES_EINVAL, "es_runner_new: out is required");
    const char *rm = es_config_get(cfg, key);
    char *guard = def && def->name ? es_rm_side_path(rm, def->name, ".guard") : NULL;
    if (!guard)
        return def && def->name ? es_fail(err, ES_ENOMEM, "out of memory")
                                : es_projector_check(def, "es_runner_new", err);
    int behind = 0;
    runner_opts o = {rm, RM_LIVE, guard, 1, 0, 0, noun, key, &behind};
    es_err e = es_projector_check(def, "es_runner_new", err);
    if (e == ES_OK)
        e = es_projector_check_reads(cfg, def, err);
    if (e != ES_OK) {
        free(guard);
        return e;
    }
    e = es_runner_open(cfg, def, &o, out, err);
    if (e == ES_ESTATE && behind) {
        es_logf(cfg, ES_LOG_INFO, "projector '%s': its schema version is now %d; rebuilding %s",
                def->name, def->schema_version, rm);
        e = es_replay(cfg, def, NULL, NULL, err);
        if (e == ES_OK)
            e = es_runner_open(cfg, def, &o, out, err);
    }
    free(guard);
    return e;
}

/* Only the public runner takes part in the metrics: the saga coordinator's runner is the
 * coordinator's (its metrics are the saga's), and a redrive's would count the projector twice. */
es_err es_runner_new(const es_config_t *cfg, const es_projector_def *def, es_runner_t **out,
                     es_error_t *err) {
    es_err e = es_runner_new_on(cfg, def, "readmodel.db", "read model", out, err);
    if (e == ES_OK && (e = es_runner_mx_open(*out, err)) != ES_OK) {
        es_runner_destroy(*out);
        *out = NULL;
    }
    return e;
}
