/* Upcasters (eskit/upcast.h, upcast_int.h): registration rules and the chain one event takes. */
#include "internal.h"
#include "upcast_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Copies of the registered upcasters, their strings owned. Few per service: lookups are scans. */
struct es_upcast_set {
    es_upcaster_t *u;
    size_t n;
};

static void free_strings(es_upcaster_t *u) {
    free((char *)u->name);
    free((char *)u->from);
    free((char *)u->to);
}

void es_upcast_set_free(es_upcast_set *s) {
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        free_strings(&s->u[i]);
    free(s->u);
    free(s);
}

static int copy_upcaster(es_upcaster_t *dst, const es_upcaster_t *src) {
    *dst = *src;
    dst->name = strdup(src->name);
    dst->from = strdup(src->from);
    dst->to = strdup(src->to);
    if (dst->name && dst->from && dst->to)
        return 1;
    free_strings(dst);
    return 0;
}

es_upcast_set *es_upcast_set_dup(const es_upcast_set *s) {
    es_upcast_set *d = calloc(1, sizeof *d);
    if (!d || !(d->u = calloc(s->n ? s->n : 1, sizeof *d->u))) {
        free(d);
        return NULL;
    }
    for (; d->n < s->n; d->n++)
        if (!copy_upcaster(&d->u[d->n], &s->u[d->n])) {
            es_upcast_set_free(d);
            return NULL;
        }
    return d;
}

/* The upcaster an event of type with schema version sv goes to: the version-limited one with
 * the smallest max_schema_version >= sv (none once newest), else the unlimited one. */
static const es_upcaster_t *find(const es_upcast_set *s, const char *type, uint32_t sv,
                                 int newest) {
    const es_upcaster_t *best = NULL, *unlimited = NULL;
    for (size_t i = 0; s && i < s->n; i++) {
        const es_upcaster_t *u = &s->u[i];
        if (strcmp(u->from, type))
            continue;
        if (!u->max_schema_version)
            unlimited = u;
        else if (!newest && sv <= u->max_schema_version &&
                 (!best || u->max_schema_version < best->max_schema_version))
            best = u;
    }
    return best ? best : unlimited;
}

/* ---- registration ---- */

static es_err check_fields(const es_upcaster_t *u, es_error_t *err) {
    if (!u)
        return es_fail(err, ES_EINVAL, "no upcaster (NULL)");
    if (u->abi_version != ES_UPCASTER_ABI)
        return es_fail(err, ES_EINVAL,
                       "upcaster '%s' has ABI version %d, this eskit takes %d; rebuild it against "
                       "this eskit's <eskit/upcast.h>",
                       u->name ? u->name : "?", u->abi_version, ES_UPCASTER_ABI);
    if (!u->name || !*u->name)
        return es_fail(err, ES_EINVAL, "an upcaster of %s has no name; name it for its errors",
                       u->from ? u->from : "?");
    es_err e = es_validate_type_name("its from type", u->from, err);
    if (e == ES_OK)
        e = es_validate_type_name("its to type", u->to, err);
    if (e == ES_OK && !u->upcast)
        e = es_fail(err, ES_EINVAL, "it has no upcast function");
    if (e == ES_OK && !strcmp(u->from, u->to) &&
        (!u->max_schema_version ||
         (u->to_schema_version && u->to_schema_version <= u->max_schema_version)))
        e = es_fail(err, ES_EINVAL,
                    "it turns %s into itself for schema versions up to %u%s, so its output would "
                    "match it again; limit it with max_schema_version and set a higher "
                    "to_schema_version (or 0: the newest)",
                    u->from, u->max_schema_version,
                    u->max_schema_version ? "" : " (0: every version)");
    if (e != ES_OK)
        es_error_prefix(err, "upcaster '%s': ", u->name);
    return e;
}

/* An upcaster already registered for u's from whose versions u's overlap: the same
 * max_schema_version (two unlimited ones too), since each limit takes the versions above the
 * next lower one. */
static const es_upcaster_t *overlapping(const es_upcast_set *s, const es_upcaster_t *u) {
    for (size_t i = 0; s && i < s->n; i++)
        if (!strcmp(s->u[i].from, u->from) && s->u[i].max_schema_version == u->max_schema_version)
            return &s->u[i];
    return NULL;
}

/* The unlimited upcaster that would close a cycle through u (A->B, B->A), or NULL. */
static const es_upcaster_t *cycle_through(const es_upcast_set *s, const es_upcaster_t *u) {
    const char *at = u->to;
    for (size_t steps = 0; s && steps <= s->n; steps++) {
        const es_upcaster_t *next = NULL;
        for (size_t i = 0; i < s->n && !next; i++)
            if (!s->u[i].max_schema_version && !strcmp(s->u[i].from, at))
                next = &s->u[i];
        if (!next)
            return NULL;
        if (!strcmp(next->to, u->from))
            return next;
        at = next->to;
    }
    return NULL;
}

static es_err check_against(const es_upcast_set *s, const es_upcaster_t *u, es_error_t *err) {
    const es_upcaster_t *o = overlapping(s, u);
    if (o) {
        if (u->max_schema_version)
            return es_fail(err, ES_EINVAL,
                           "upcasters '%s' and '%s' are both registered for %s events of schema "
                           "versions up to %u; an event type takes one upcaster per version "
                           "range, so drop or re-limit one",
                           o->name, u->name, u->from, u->max_schema_version);
        return es_fail(err, ES_EINVAL,
                       "upcasters '%s' and '%s' are both registered for every %s event; an event "
                       "type takes one upcaster per version range, so drop one",
                       o->name, u->name, u->from);
    }
    const es_upcaster_t *c = u->max_schema_version ? NULL : cycle_through(s, u);
    if (c)
        return es_fail(err, ES_EINVAL,
                       "upcaster '%s' (%s -> %s) closes a cycle with '%s' (%s -> %s): events would "
                       "be upcast forever; drop one",
                       u->name, u->from, u->to, c->name, c->from, c->to);
    return ES_OK;
}

es_err es_config_add_upcaster(es_config_t *cfg, const es_upcaster_t *u, es_error_t *err) {
    if (!cfg)
        return es_fail(err, ES_EINVAL, "es_config_add_upcaster: no config (NULL)");
    es_upcast_set **slot = es_config_upcast_slot(cfg);
    es_err e = check_fields(u, err);
    if (e == ES_OK)
        e = check_against(*slot, u, err);
    if (e != ES_OK)
        return e;
    if (!*slot && !(*slot = calloc(1, sizeof **slot)))
        return es_fail(err, ES_ENOMEM, "out of memory adding upcaster '%s'", u->name);
    es_upcast_set *s = *slot;
    es_upcaster_t *grown = realloc(s->u, (s->n + 1) * sizeof *grown);
    if (!grown)
        return es_fail(err, ES_ENOMEM, "out of memory adding upcaster '%s'", u->name);
    s->u = grown;
    if (!copy_upcaster(&s->u[s->n], u))
        return es_fail(err, ES_ENOMEM, "out of memory adding upcaster '%s'", u->name);
    s->n++;
    return ES_OK;
}

/* ---- upcasting ---- */

static void where(const es_event_t *ev, const es_position_t *at, char *out, size_t cap) {
    const char *topic = at && at->topic ? at->topic : NULL;
    int32_t part = at ? at->partition : ev->partition;
    int64_t off = at ? at->offset : ev->offset;
    snprintf(out, cap, "%s/%s version %llu (%s%spartition %d offset %lld)", ev->aggregate_type,
             ev->aggregate_id, (unsigned long long)ev->version, topic ? topic : "",
             topic ? " " : "", (int)part, (long long)off);
}

/* One step: u's output for in, as a new event. stored is the event as it was read. */
static es_err run_one(const es_upcaster_t *u, const es_event_t *in, const es_event_t *stored,
                      const es_position_t *at, es_event_t **next, es_error_t *err) {
    uint8_t *buf = NULL;
    size_t len = 0;
    es_error_t uerr = {0};
    es_err rc = u->upcast(in, u->opaque, &buf, &len, &uerr);
    if (rc == ES_OK && !buf && len)
        rc = es_fail(&uerr, ES_EINVAL, "it returned %zu bytes but no buffer", len);
    if (rc == ES_OK) {
        es_event_t view = *in;
        view.event_type = u->to;
        view.payload = buf;
        view.payload_len = len;
        view.schema_version = u->to_schema_version;
        if (!(*next = es_event_dup(&view)))
            rc = es_fail(&uerr, ES_ENOMEM, "out of memory");
    }
    free(buf);
    if (rc == ES_OK)
        return ES_OK;
    char pos[ES_MAX_TYPE_LEN + ES_MAX_ID_LEN + ES_MAX_TYPE_LEN + 96];
    where(stored, at, pos, sizeof pos);
    /* ES_EUNKNOWN_TYPE would let projector.on.unknown=ignore skip it: it is poison. */
    es_err code = rc == ES_EUNKNOWN_TYPE ? ES_EDECODE : rc;
    return es_fail(err, code, "upcaster '%s' (%s -> %s) failed on %s event %s: %s", u->name,
                   u->from, u->to, in->event_type, pos,
                   uerr.message[0] ? uerr.message : es_strerror(rc));
}

es_err es_upcast_event(const es_upcast_set *s, const es_event_t *ev, const es_position_t *at,
                       es_event_t **out, es_error_t *err) {
    es_event_t *cur = NULL;
    uint32_t sv = ev->schema_version;
    int newest = 0;
    es_err e = ES_OK;
    *out = NULL;
    for (int steps = 0; s && s->n; steps++) {
        const es_event_t *in = cur ? cur : ev;
        const es_upcaster_t *u = find(s, in->event_type, sv, newest);
        if (!u)
            break;
        if (steps == ES_UPCAST_CHAIN_MAX) {
            char pos[ES_MAX_TYPE_LEN + ES_MAX_ID_LEN + ES_MAX_TYPE_LEN + 96];
            where(ev, at, pos, sizeof pos);
            e = es_fail(err, ES_EDECODE,
                        "%s event %s went through %d upcasters and '%s' would take it further; "
                        "a chain is at most %d long: shorten it (or break a loop of "
                        "version-limited upcasters)",
                        ev->event_type, pos, steps, u->name, ES_UPCAST_CHAIN_MAX);
            break;
        }
        es_event_t *next = NULL;
        if ((e = run_one(u, in, ev, at, &next, err)) != ES_OK)
            break;
        es_event_free(cur);
        cur = next;
        sv = u->to_schema_version;
        newest = sv == 0;
    }
    if (e != ES_OK) {
        es_event_free(cur);
        return e;
    }
    *out = cur;
    return ES_OK;
}
