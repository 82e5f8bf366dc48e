/* The decider path without a store (decider.h): what the engine and the test kit share. */
#include "decider.h"
#include <eskit/eskit.h>

#include <stddef.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Settled early past this size, so a long history does not pile up in the arena. */
#define SETTLE_BYTES ((size_t)256 * 1024)

/* The ABI 1 layout ends where ABI 2 added the handler tables. */
#define AGGREGATE_ABI1_SIZE offsetof(es_aggregate_def, command_handlers)

static size_t table_len(const void *table, size_t stride) {
    size_t n = 0;
    for (const char *p = table; p && *(const void *const *)p; p += stride)
        n++;
    return n;
}

/* One side of a definition: a table, or a type list with its function, not both. */
static es_err check_side(const es_aggregate_def *def, const char *what, const void *table,
                         size_t stride, const ProtobufCMessageDescriptor *const *list, bool fn_set,
                         const char *names, es_error_t *err) {
    if (table && fn_set)
        return es_fail(err, ES_EINVAL, "aggregate definition '%s' gives its %s both ways; give %s",
                       def->type, what, names);
    size_t n = table ? table_len(table, stride) : 0;
    /* Beside a table, a type list may only repeat it (as a registered definition's does). */
    for (size_t i = 0; table && list && i <= n; i++)
        if (list[i] !=
            (i < n ? *(const ProtobufCMessageDescriptor *const *)((const char *)table + i * stride)
                   : NULL))
            return es_fail(err, ES_EINVAL,
                           "aggregate definition '%s': its %s list differs from its table; give "
                           "%s",
                           def->type, what, names);
    if (table ? n == 0 : !list || !list[0] || !fn_set)
        return es_fail(err, ES_EINVAL, "aggregate definition '%s' needs its %s: %s", def->type,
                       what, names);
    for (size_t i = 0; i < n; i++) {
        const char *ei = (const char *)table + i * stride;
        for (size_t j = 0; j < i; j++)
            if (*(const void *const *)(ei) ==
                *(const void *const *)((const char *)table + j * stride))
                return es_fail(err, ES_EINVAL, "aggregate definition '%s' lists %s twice in its %s",
                               def->type, (*(const ProtobufCMessageDescriptor *const *)ei)->name,
                               what);
    }
    return ES_OK;
}

static es_err check_def(const es_aggregate_def *def, es_error_t *err) {
    es_err rc = es_validate_aggregate_type(def->type, err);
    if (rc != ES_OK)
        return rc;
    if (!def->state)
        return es_fail(err, ES_EINVAL, "aggregate definition '%s' needs its state descriptor",
                       def->type);
    rc = check_side(def, "commands", def->command_handlers, sizeof *def->command_handlers,
                    def->commands, def->decide != NULL, "command_handlers, or commands and decide",
                    err);
    if (rc == ES_OK)
        rc = check_side(def, "events", def->evolvers, sizeof *def->evolvers, def->events,
                        def->evolve != NULL, "evolvers, or events and evolve", err);
    for (size_t i = 0; rc == ES_OK && def->command_handlers && def->command_handlers[i].command;
         i++)
        if (!def->command_handlers[i].decide)
            rc = es_fail(err, ES_EINVAL, "aggregate definition '%s': command %s has no decide",
                         def->type, def->command_handlers[i].command->name);
    return rc;
}

/* A table side's type list, NULL-terminated, into out (n + 1 entries). */
static void list_of(const void *table, size_t stride, const ProtobufCMessageDescriptor **out) {
    size_t n = table_len(table, stride);
    for (size_t i = 0; i < n; i++)
        out[i] = *(const ProtobufCMessageDescriptor *const *)((const char *)table + i * stride);
    out[n] = NULL;
}

/* Their names go into the log and its snapshots: the same limits as any type name. */
static es_err check_names(const es_aggregate_def *def, es_error_t *err) {
    es_err rc = es_validate_type_name("state type", def->state->name, err);
    for (size_t i = 0; rc == ES_OK && def->events[i]; i++)
        rc = es_validate_type_name("event type", def->events[i]->name, err);
    for (size_t i = 0; rc == ES_OK && def->commands[i]; i++)
        rc = es_validate_type_name("command type", def->commands[i]->name, err);
    if (rc != ES_OK)
        es_error_prefix(err, "aggregate definition '%s': ", def->type);
    return rc;
}

es_err es_aggregate_normalise(const es_aggregate_def *given, es_aggregate_def **out,
                              const ProtobufCMessageDescriptor ***lists, es_error_t *err) {
    *out = NULL;
    *lists = NULL;
    if (!given)
        return es_fail(err, ES_EINVAL, "es_engine_register: definition is NULL");
    if (given->abi_version < 1 || given->abi_version > ES_AGGREGATE_ABI)
        return es_fail(err, ES_EINVAL,
                       "aggregate definition '%s' has ABI version %d; this eskit (%s) takes 1 to "
                       "%d: build it against the headers of the eskit it runs with",
                       given->type ? given->type : "?", given->abi_version,
                       es_version(NULL, NULL, NULL), ES_AGGREGATE_ABI);
    es_aggregate_def *def = calloc(1, sizeof *def);
    if (!def)
        return es_fail(err, ES_ENOMEM, "out of memory registering an aggregate");
    memcpy(def, given, given->abi_version == 1 ? AGGREGATE_ABI1_SIZE : sizeof *def);
    *out = def;
    es_err rc = check_def(def, err);
    if (rc != ES_OK)
        return rc;
    size_t nc = table_len(def->command_handlers, sizeof *def->command_handlers);
    size_t ne = table_len(def->evolvers, sizeof *def->evolvers);
    if (nc + ne > 0) {
        if (!(*lists = calloc(nc + ne + 2, sizeof **lists)))
            return es_fail(err, ES_ENOMEM, "out of memory registering '%s'", def->type);
        if (nc) {
            list_of(def->command_handlers, sizeof *def->command_handlers, *lists);
            def->commands = *lists;
        }
        if (ne) {
            list_of(def->evolvers, sizeof *def->evolvers, *lists + nc + 1);
            def->events = *lists + nc + 1;
        }
    }
    return check_names(def, err);
}

es_err es_aggregate_check(const es_aggregate_def *def, es_error_t *err) {
    es_aggregate_def *copy = NULL;
    const ProtobufCMessageDescriptor **lists = NULL;
    es_err rc = es_aggregate_normalise(def, &copy, &lists, err);
    free(copy);
    free(lists);
    return rc;
}

es_err es_aggregate_evolve(const es_aggregate_def *def, ProtobufCMessage *state,
                           const ProtobufCMessage *event, void *opaque, es_error_t *err) {
    if (!def || !state || !event)
        return es_fail(err, ES_EINVAL, "es_aggregate_evolve: definition, state and event needed");
    if (def->evolve)
        return def->evolve(state, event, opaque, err);
    for (const es_evolver_t *e = def->abi_version >= 2 ? def->evolvers : NULL; e && e->event; e++)
        if (e->event == event->descriptor)
            return e->evolve ? e->evolve(state, event, opaque, err) : ES_OK;
    if (!def->evolvers)
        return es_fail(err, ES_EINVAL, "%s has neither evolve nor evolvers", def->type);
    return es_fail(err, ES_EUNKNOWN_TYPE, "%s has no evolver for %s", def->type,
                   event->descriptor->name);
}

es_err es_aggregate_decide(const es_aggregate_def *def, const ProtobufCMessage *state,
                           const ProtobufCMessage *command, es_decision_t *d, void *opaque) {
    if (!def || !state || !command || !d)
        return ES_EINVAL;
    if (def->decide)
        return def->decide(state, command, d, opaque);
    for (const es_command_handler_t *h = def->abi_version >= 2 ? def->command_handlers : NULL;
         h && h->command; h++)
        if (h->command == command->descriptor)
            return h->decide ? h->decide(state, command, d, opaque)
                             : es_reject(d, "%s has no decide for %s", def->type,
                                         command->descriptor->name);
    return es_reject(d, "%s has no handler for %s", def->type, command->descriptor->name);
}

es_err es_command_type_check(const es_aggregate_def *def, const ProtobufCMessage *msg,
                             es_error_t *err) {
    if (!msg || !es_pb_find(def->commands, msg->descriptor->name))
        return es_fail(err, ES_EUNKNOWN_TYPE, "command type '%s' is not among the commands of %s",
                       msg ? msg->descriptor->name : "(none)", def->type);
    return ES_OK;
}

ProtobufCMessage *es_state_new(const es_subject_t *s) {
    ProtobufCMessage *state = es_pb_new(s->def->state);
    if (state && s->def->initial_state)
        s->def->initial_state(state, s->opaque);
    return state;
}

es_err es_folder_init(es_folder_t *f) {
    *f = (es_folder_t){0};
    f->arena = es_pb_arena_new();
    return f->arena ? ES_OK : ES_ENOMEM;
}

void es_folder_free(es_folder_t *f) {
    es_pb_arena_destroy(f->arena);
    free(f->folded);
    *f = (es_folder_t){0};
}

static const char *copy_hint(const es_pb_borrowed_t *b) {
    if (b->array)
        return "give the state an array of its own (malloc) and copy each element";
    switch (b->type) {
    case PROTOBUF_C_TYPE_STRING:
        return "copy it with es_pb_set_string";
    case PROTOBUF_C_TYPE_BYTES:
        return "copy it with es_pb_set_bytes";
    default:
        return "give the state a copy of its own (es_pb_clone)";
    }
}

es_err es_settle(es_folder_t *f, const es_subject_t *s, ProtobufCMessage *state, es_error_t *err) {
    es_pb_borrowed_t b;
    size_t n = state ? es_pb_borrowed(state, f->arena, &b) : 0;
    const es_folded_event *ev = NULL;
    for (size_t i = 0; n && i < f->n_folded && f->folded[i].start <= (size_t)b.offset; i++)
        ev = &f->folded[i];
    es_err rc = ES_OK;
    if (n) {
        f->fault = 1;
        rc = es_fail(err, ES_ESTATE,
                     "%s/%s: evolve left %s pointing into the %s event at version %llu, which "
                     "is freed after evolve (%zu field(s) in all); %s",
                     s->def->type, s->id, b.path, ev ? ev->type : "?",
                     ev ? (unsigned long long)ev->version : 0ULL, n, copy_hint(&b));
    }
    es_pb_arena_reset(f->arena);
    f->n_folded = 0;
    return rc;
}

/* Notes where the next event starts in the arena; settles first when the arena has grown. */
static es_err note_folded(es_folder_t *f, const es_subject_t *s, ProtobufCMessage *state,
                          const char *type, uint64_t version, es_error_t *err) {
    if (es_pb_arena_used(f->arena) > SETTLE_BYTES) {
        es_err rc = es_settle(f, s, state, err);
        if (rc != ES_OK)
            return rc;
    }
    if (f->n_folded == f->cap_folded) {
        size_t cap = f->cap_folded ? 2 * f->cap_folded : 16;
        es_folded_event *grown = realloc(f->folded, cap * sizeof *grown);
        if (!grown)
            return es_fail(err, ES_ENOMEM, "out of memory folding events");
        f->folded = grown;
        f->cap_folded = cap;
    }
    f->folded[f->n_folded++] = (es_folded_event){es_pb_arena_used(f->arena), type, version};
    return ES_OK;
}

es_err es_fold(es_folder_t *f, const es_subject_t *s, ProtobufCMessage *state,
               const char *event_type, const uint8_t *payload, size_t len, uint64_t version,
               es_error_t *err) {
    const es_aggregate_def *def = s->def;
    const ProtobufCMessageDescriptor *desc = es_pb_find(def->events, event_type);
    if (!desc)
        return es_fail(err, ES_EUNKNOWN_TYPE,
                       "%s/%s version %llu: event type '%s' is not registered for %s; add its "
                       "descriptor to the aggregate definition's events",
                       def->type, s->id, (unsigned long long)version, event_type, def->type);
    es_err rc = note_folded(f, s, state, desc->name, version, err);
    if (rc != ES_OK)
        return rc;
    ProtobufCMessage *msg =
        protobuf_c_message_unpack(desc, es_pb_arena_allocator(f->arena), len, payload);
    if (!msg && es_pb_arena_failed(f->arena))
        return es_fail(err, ES_ENOMEM, "out of memory decoding %s/%s version %llu", def->type,
                       s->id, (unsigned long long)version);
    if (!msg)
        return es_fail(err, ES_EDECODE, "%s/%s version %llu: payload (%zu bytes) is not a valid %s",
                       def->type, s->id, (unsigned long long)version, len, event_type);
    rc = es_aggregate_evolve(def, state, msg, s->opaque, err);
    if (rc != ES_OK && err && !err->message[0])
        es_fail(err, rc, "%s/%s version %llu: evolve failed on %s", def->type, s->id,
                (unsigned long long)version, event_type);
    return rc;
}

es_err es_emit(es_decision_t *d, const ProtobufCMessage *event) {
    if (!event || !es_pb_find(d->def->events, event->descriptor->name)) {
        d->error = ES_EUNKNOWN_TYPE;
        free(d->reason);
        d->reason = NULL;
        if (asprintf(&d->reason, "decide emitted %s, which %s does not list among its events",
                     event ? event->descriptor->name : "NULL", d->def->type) < 0)
            d->reason = NULL;
        return ES_EUNKNOWN_TYPE;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        es_emitted *ev = realloc(d->ev, cap * sizeof *ev);
        if (!ev)
            return d->error = ES_ENOMEM;
        d->ev = ev;
        d->cap = cap;
    }
    es_emitted *em = &d->ev[d->n];
    *em = (es_emitted){event->descriptor, {0}};
    if (es_buf_reserve(&em->buf, protobuf_c_message_get_packed_size(event)) != ES_OK)
        return d->error = ES_ENOMEM;
    em->buf.len = protobuf_c_message_pack(event, em->buf.data);
    d->n++;
    return ES_OK;
}

es_err es_reject(es_decision_t *d, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    free(d->reason);
    if (vasprintf(&d->reason, fmt, ap) < 0)
        d->reason = NULL;
    va_end(ap);
    char *escaped = d->reason && es_needs_escape(d->reason) ? es_escape_dup(d->reason) : NULL;
    if (escaped) { /* a reason is one line of text, as messages are */
        free(d->reason);
        d->reason = escaped;
    }
    return ES_EREJECTED;
}

void es_decision_free(es_decision_t *d) {
    for (size_t i = 0; i < d->n; i++)
        es_buf_free(&d->ev[i].buf);
    free(d->ev);
    free(d->reason);
}

es_err es_decide(const es_subject_t *s, const ProtobufCMessage *state,
                 const ProtobufCMessage *command, es_decision_t *d, es_error_t *err) {
    d->def = s->def;
    es_err rc = es_aggregate_decide(s->def, state, command, d, s->opaque);
    if (rc == ES_OK && d->error != ES_OK)
        rc = d->error;
    if (rc == ES_EREJECTED && !d->reason)
        d->reason = strdup("rejected by decide (no reason given)");
    if (rc == ES_EREJECTED && !d->reason)
        rc = ES_ENOMEM;
    if (rc == ES_ENOMEM)
        return es_fail(err, ES_ENOMEM, "out of memory in decide");
    if (rc != ES_OK && rc != ES_EREJECTED)
        es_fail(err, rc, "%s/%s: decide failed with %s%s%s", s->def->type, s->id, es_strerror(rc),
                d->reason ? ": " : "", d->reason ? d->reason : "");
    return rc;
}

es_err es_fold_decision(es_folder_t *f, const es_subject_t *s, ProtobufCMessage *state,
                        const es_decision_t *d, uint64_t before, es_error_t *err) {
    es_err rc = ES_OK;
    for (size_t i = 0; i < d->n && rc == ES_OK; i++)
        rc = es_fold(f, s, state, d->ev[i].desc->name, d->ev[i].buf.data, d->ev[i].buf.len,
                     before + i + 1, err);
    es_err owned = es_settle(f, s, state, rc == ES_OK ? err : NULL);
    return rc != ES_OK ? rc : owned;
}
