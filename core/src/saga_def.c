/* Checking a saga definition (es_saga_check): what es_saga_new refuses. */
#include "saga_int.h"

#include <stdio.h>
#include <string.h>

#define MAX_STEPS 32

static int name_ok(const char *s) {
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' ||
              s[i] == '-'))
            return 0;
    return 1;
}

static es_err check_step(const es_saga_def *def, const es_saga_step_t *s, size_t i, int abort,
                         es_error_t *err) {
    char what[96];
    if (abort)
        snprintf(what, sizeof what, "saga '%s': on_abort", def->name);
    else
        snprintf(what, sizeof what, "saga '%s': step %zu", def->name, i);
    if (!abort && !name_ok(s->name))
        return es_fail(err, ES_EINVAL, "%s: name '%s' must be 1..64 bytes of [a-z0-9_-]", what,
                       s->name ? s->name : "(null)");
    es_err e = es_validate_aggregate_type(s->aggregate_type, err);
    if (e != ES_OK) {
        es_error_prefix(err, "%s: ", what);
        return e;
    }
    if (!s->command || !s->send)
        return es_fail(err, ES_EINVAL, "%s: command (descriptor) and send are required", what);
    if (abort)
        return ES_OK;
    if (s->timeout_ms <= 0)
        return es_fail(err, ES_EINVAL, "%s (%s): timeout_ms must be > 0", what, s->name);
    if (!s->compensation != !s->compensate)
        return es_fail(err, ES_EINVAL,
                       "%s (%s): compensation and compensate go together (both or neither)", what,
                       s->name);
    for (size_t j = 0; j < i; j++)
        if (!strcmp(def->steps[j].name, s->name))
            return es_fail(err, ES_EINVAL, "%s: the name '%s' is used twice", what, s->name);
    return ES_OK;
}

es_err es_saga_check(const es_saga_def *def, es_error_t *err) {
    if (!def)
        return es_fail(err, ES_EINVAL, "saga definition is NULL");
    if (def->abi_version < 1 || def->abi_version > ES_SAGA_ABI)
        return es_fail(err, ES_EINVAL,
                       "saga '%s': abi_version %d; this eskit takes 1 to %d: build it against "
                       "the headers of the eskit it runs with",
                       def->name ? def->name : "(null)", def->abi_version, ES_SAGA_ABI);
    char htype[ES_MAX_TYPE_LEN + 1];
    es_err e = es_saga_history_type(def->name, htype, sizeof htype, err);
    if (e != ES_OK)
        return e;
    e = es_validate_aggregate_type(def->start_aggregate, err);
    if (e != ES_OK) {
        es_error_prefix(err, "saga '%s': start_aggregate: ", def->name);
        return e;
    }
    if (!def->start_event)
        return es_fail(err, ES_EINVAL, "saga '%s': start_event (descriptor) is required",
                       def->name);
    if (!def->steps || def->n_steps == 0 || def->n_steps > MAX_STEPS)
        return es_fail(err, ES_EINVAL, "saga '%s': 1..%d steps needed, %zu given", def->name,
                       MAX_STEPS, def->steps ? def->n_steps : 0);
    for (size_t i = 0; i < def->n_steps; i++)
        if ((e = check_step(def, &def->steps[i], i, 0, err)) != ES_OK)
            return e;
    return def->on_abort ? check_step(def, def->on_abort, 0, 1, err) : ES_OK;
}
