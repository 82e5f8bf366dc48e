/*
 * The test kit (eskit/testing.h): a decider run in memory on the engine's own path (decider.h),
 * and the reports that say what a failed expectation saw. The history is the events as the
 * engine would have appended them: packed bytes, folded back through the folder's arena.
 */
#include "testing_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST_ID "test"
#define MAX_DEPTH 32

struct es_test_aggregate {
    es_subject_t subj; /* subj.def is def, in this ABI's layout (es_aggregate_normalise) */
    es_aggregate_def *def;
    const ProtobufCMessageDescriptor **lists;
    es_folder_t folder;
    ProtobufCMessage *state;
    es_event_t *events; /* the history; events[i] is version i + 1, payload owned */
    size_t n, cap;
    es_err given_rc; /* a given event that failed: every command's outcome then */
    int ran;         /* a command was decided */
    uint64_t before; /* the version before the last command */
    size_t emitted;  /* its events */
    es_err rc;       /* its outcome */
    char *reason;    /* its reason or error message, or the given's */
    char *command;   /* its text */
};

void es_test_put(es_test_out_t *o, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = o->p && o->len < o->cap ? o->cap - o->len : 0;
    int n = vsnprintf(room ? o->p + o->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
}

void es_test_finish(es_test_out_t *o) {
    if (!o->p || !o->cap)
        return;
    if (o->len >= o->cap && o->cap > 4)
        memcpy(o->p + o->cap - 4, "...", 4);
    o->p[o->len < o->cap ? o->len : o->cap - 1] = '\0';
}

static void put_quoted(es_test_out_t *o, const uint8_t *s, size_t len, int bytes) {
    es_test_put(o, "\"");
    for (size_t i = 0; i < len; i++) {
        uint8_t c = s[i];
        if (c == '"' || c == '\\')
            es_test_put(o, "\\%c", c);
        else if (c == '\n')
            es_test_put(o, "\\n");
        else if (c < 0x20 || c == 0x7f || (bytes && c >= 0x80))
            es_test_put(o, "\\x%02x", c);
        else
            es_test_put(o, "%c", c);
    }
    es_test_put(o, "\"");
}

static void put_body(es_test_out_t *o, const ProtobufCMessage *m, int depth);

static void put_value(es_test_out_t *o, const ProtobufCFieldDescriptor *f, const void *p,
                      int depth) {
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        es_test_put(o, "%" PRId32, *(const int32_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        es_test_put(o, "%" PRIu32, *(const uint32_t *)p);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        es_test_put(o, "%" PRId64, *(const int64_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        es_test_put(o, "%" PRIu64, *(const uint64_t *)p);
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        es_test_put(o, "%g", (double)*(const float *)p);
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        es_test_put(o, "%g", *(const double *)p);
        break;
    case PROTOBUF_C_TYPE_BOOL:
        es_test_put(o, "%s", *(const protobuf_c_boolean *)p ? "true" : "false");
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        int v = *(const int *)p;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
        if (ev)
            es_test_put(o, "%s", ev->name);
        else
            es_test_put(o, "%d", v);
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        put_quoted(o, (const uint8_t *)(s ? s : ""), s ? strlen(s) : 0, 0);
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        put_quoted(o, b->data, b->len, 1);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        put_body(o, *(ProtobufCMessage *const *)p, depth + 1);
        break;
    }
}

static size_t elem_size(ProtobufCType t) {
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_ENUM:
        return sizeof(int);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    default:
        return 4;
    }
}

/* Whether a singular field is set: its has_ flag or oneof case when it has one, else a value
 * other than the default (proto3). */
static int present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
    const char *base = (const char *)m;
    const void *p = base + f->offset;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        return *(const uint32_t *)(base + f->quantifier_offset) == f->id;
    if (f->label == PROTOBUF_C_LABEL_REQUIRED)
        return 1;
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return s && (f->label == PROTOBUF_C_LABEL_OPTIONAL || *s);
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(void *const *)p != NULL;
    default:
        break;
    }
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset)
        return *(const protobuf_c_boolean *)(base + f->quantifier_offset) != 0;
    if (f->type == PROTOBUF_C_TYPE_BYTES)
        return ((const ProtobufCBinaryData *)p)->len != 0;
    static const uint8_t zero[8];
    return memcmp(p, zero, elem_size(f->type)) != 0;
}

static void put_body(es_test_out_t *o, const ProtobufCMessage *m, int depth) {
    if (depth > MAX_DEPTH) {
        es_test_put(o, "{ ... }");
        return;
    }
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    int any = 0;
    es_test_put(o, "{");
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *sep = f->type == PROTOBUF_C_TYPE_MESSAGE ? " " : ": ";
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            const char *arr = *(char *const *)(base + f->offset);
            for (size_t k = 0; k < n; k++) {
                es_test_put(o, " %s%s", f->name, sep);
                put_value(o, f, arr + k * elem_size(f->type), depth);
            }
            any |= n > 0;
        } else if (present(m, f)) {
            es_test_put(o, " %s%s", f->name, sep);
            put_value(o, f, base + f->offset, depth);
            any = 1;
        }
    }
    es_test_put(o, any ? " }" : "}");
}

void es_test_put_message(es_test_out_t *o, const ProtobufCMessage *m) {
    if (!m) {
        es_test_put(o, "(none)");
        return;
    }
    es_test_put(o, "%s ", m->descriptor->name);
    put_body(o, m, 0);
}

size_t es_test_format(const ProtobufCMessage *msg, char *buf, size_t cap) {
    es_test_out_t o = {buf, cap, 0};
    es_test_put_message(&o, msg);
    es_test_finish(&o);
    return o.len;
}

/* An event of the history, unpacked and printed. */
static void put_event(es_test_out_t *o, const es_test_aggregate_t *t, const es_event_t *ev) {
    const ProtobufCMessageDescriptor *d = es_pb_find(t->subj.def->events, ev->event_type);
    ProtobufCMessage *m =
        d ? protobuf_c_message_unpack(d, NULL, ev->payload_len, ev->payload) : NULL;
    if (m)
        es_test_put_message(o, m);
    else
        es_test_put(o, "%s (%zu bytes that do not decode as one of %s's events)", ev->event_type,
                    ev->payload_len, t->subj.def->type);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
}

static void put_events(es_test_out_t *o, const es_test_aggregate_t *t, uint64_t from, size_t n) {
    if (!n)
        es_test_put(o, "  (no events)\n");
    for (size_t i = 0; i < n; i++) {
        es_test_put(o, "  %llu. ", (unsigned long long)from + i);
        put_event(o, t, &t->events[from + i - 1]);
        es_test_put(o, "\n");
    }
}

/* The outcome of the last command, for "got". */
static void put_got(es_test_out_t *o, const es_test_aggregate_t *t) {
    es_test_put(o, "got:\n");
    if (t->rc == ES_OK) {
        es_test_put(o, "  accepted with %zu event(s):\n", t->emitted);
        put_events(o, t, t->before + 1, t->emitted);
    } else if (t->rc == ES_EREJECTED) {
        es_test_put(o, "  rejected: %s\n", t->reason ? t->reason : "");
    } else {
        es_test_put(o, "  error %s: %s\n", es_strerror(t->rc), t->reason ? t->reason : "");
    }
}

/* Starts a report: the verdict, then given and when. Returns 0 (there was no command). */
static int put_context(es_test_out_t *o, const es_test_aggregate_t *t, const char *verdict) {
    es_test_put(o, "%s\ngiven:\n",
                t->ran ? verdict : "no command: call es_test_when before a then check");
    uint64_t given = t->ran ? t->before : t->n;
    put_events(o, t, 1, (size_t)given);
    es_test_put(o, "when:\n  %s\n", t->ran && t->command ? t->command : "(no command)");
    return t->ran;
}

static bool report_done(es_test_out_t *o, bool ok) {
    if (ok && o->p && o->cap)
        o->len = 0;
    es_test_finish(o);
    return ok;
}

static bool same_event(const es_event_t *ev, const ProtobufCMessage *m) {
    if (!m || strcmp(ev->event_type, m->descriptor->name))
        return false;
    size_t len = protobuf_c_message_get_packed_size(m);
    if (len != ev->payload_len)
        return false;
    uint8_t *b = malloc(len ? len : 1);
    bool same = b && protobuf_c_message_pack(m, b) == len && !memcmp(b, ev->payload, len);
    free(b);
    return same;
}

bool es_test_then_events(const es_test_aggregate_t *t, const ProtobufCMessage *const *expected,
                         size_t n, char *report, size_t cap) {
    es_test_out_t o = {report, cap, 0};
    bool ok = t->ran && t->rc == ES_OK && t->emitted == n;
    size_t differs = 0;
    for (size_t i = 0; ok && i < n; i++)
        if (!same_event(&t->events[t->before + i], expected[i])) {
            ok = false;
            differs = i + 1;
        }
    if (ok)
        return report_done(&o, true);
    char verdict[160];
    if (t->rc != ES_OK)
        snprintf(verdict, sizeof verdict, "expected %zu event(s), but the command was %s", n,
                 t->rc == ES_EREJECTED ? "rejected" : "an error");
    else if (differs)
        snprintf(verdict, sizeof verdict, "event %zu differs from the expected one", differs);
    else
        snprintf(verdict, sizeof verdict, "expected %zu event(s), got %zu", n, t->emitted);
    if (put_context(&o, t, verdict)) {
        es_test_put(&o, "expected:\n  accepted with %zu event(s):\n", n);
        if (!n)
            es_test_put(&o, "  (no events)\n");
        for (size_t i = 0; i < n; i++) {
            es_test_put(&o, "  %llu. ", (unsigned long long)t->before + i + 1);
            es_test_put_message(&o, expected[i]);
            es_test_put(&o, "\n");
        }
        put_got(&o, t);
    }
    return report_done(&o, false);
}

bool es_test_then_rejected(const es_test_aggregate_t *t, const char *reason_part, char *report,
                           size_t cap) {
    es_test_out_t o = {report, cap, 0};
    const char *part = reason_part ? reason_part : "";
    bool ok = t->ran && t->rc == ES_EREJECTED && strstr(t->reason ? t->reason : "", part);
    if (ok)
        return report_done(&o, true);
    const char *verdict = t->rc == ES_EREJECTED ? "the command was rejected for another reason"
                                                : "expected a rejection";
    if (put_context(&o, t, verdict)) {
        es_test_put(&o, "expected:\n  rejected with a reason containing \"%s\"\n", part);
        put_got(&o, t);
    }
    return report_done(&o, false);
}

bool es_test_then_error(const es_test_aggregate_t *t, es_err code, const char *message_part,
                        char *report, size_t cap) {
    es_test_out_t o = {report, cap, 0};
    const char *part = message_part ? message_part : "";
    bool ok = t->ran && t->rc == code && strstr(t->reason ? t->reason : "", part);
    if (ok)
        return report_done(&o, true);
    if (put_context(&o, t, "expected an error")) {
        es_test_put(&o, "expected:\n  error %s with a message containing \"%s\"\n",
                    es_strerror(code), part);
        put_got(&o, t);
    }
    return report_done(&o, false);
}

static void set_reason(es_test_aggregate_t *t, const char *text) {
    free(t->reason);
    t->reason = text ? strdup(text) : NULL;
}

/* Appends a packed event to the history (payload copied). */
static es_err append(es_test_aggregate_t *t, const ProtobufCMessageDescriptor *desc,
                     const uint8_t *payload, size_t len, es_error_t *err) {
    es_err rc = es_grow((void **)&t->events, &t->cap, t->n, sizeof *t->events, err);
    uint8_t *copy = rc == ES_OK ? malloc(len ? len : 1) : NULL;
    if (rc == ES_OK && !copy)
        rc = es_fail(err, ES_ENOMEM, "out of memory keeping a test event");
    if (rc != ES_OK)
        return rc;
    if (len) /* an empty message packs to no bytes, and its payload may be NULL */
        memcpy(copy, payload, len);
    es_event_t *ev = &t->events[t->n];
    *ev = (es_event_t){.offset = (int64_t)t->n,
                       .aggregate_type = t->subj.def->type,
                       .aggregate_id = TEST_ID,
                       .version = t->n + 1,
                       .event_type = desc->name,
                       .payload = copy,
                       .payload_len = len,
                       .occurred_at_us = es_now_us(),
                       .command_id = "",
                       .correlation_id = ""};
    es_uuid7(ev->event_id);
    t->n++;
    return ES_OK;
}

es_err es_test_aggregate_new(const es_aggregate_def *def, void *opaque, es_test_aggregate_t **out,
                             es_error_t *err) {
    if (!out)
        return es_fail(err, ES_EINVAL, "es_test_aggregate_new: out is required");
    *out = NULL;
    es_test_aggregate_t *t = calloc(1, sizeof *t);
    if (!t)
        return es_fail(err, ES_ENOMEM, "out of memory creating a test aggregate");
    es_err rc = es_aggregate_normalise(def, &t->def, &t->lists, err);
    if (rc != ES_OK) {
        es_test_aggregate_destroy(t);
        return rc;
    }
    t->subj = (es_subject_t){t->def, opaque, TEST_ID};
    if (es_folder_init(&t->folder) != ES_OK || !(t->state = es_state_new(&t->subj))) {
        es_test_aggregate_destroy(t);
        return es_fail(err, ES_ENOMEM, "out of memory creating a test aggregate");
    }
    *out = t;
    return ES_OK;
}

void es_test_aggregate_destroy(es_test_aggregate_t *t) {
    if (!t)
        return;
    if (t->state)
        protobuf_c_message_free_unpacked(t->state, NULL);
    es_folder_free(&t->folder);
    for (size_t i = 0; i < t->n; i++)
        free((void *)t->events[i].payload);
    free(t->events);
    free(t->reason);
    free(t->command);
    free(t->def);
    free(t->lists);
    free(t);
}

/* A given that failed is every later command's outcome, as a load failure is es_execute's. */
static es_err given_failed(es_test_aggregate_t *t, es_err rc, const es_error_t *e) {
    t->given_rc = rc;
    set_reason(t, e->message);
    return rc;
}

es_err es_test_given(es_test_aggregate_t *t, const ProtobufCMessage *event, es_error_t *err) {
    es_error_t e = {0};
    if (!event)
        return es_fail(err, ES_EINVAL, "es_test_given: event is required");
    if (t->given_rc != ES_OK)
        return es_fail(err, t->given_rc, "%s", t->reason ? t->reason : "an earlier given failed");
    size_t len = protobuf_c_message_get_packed_size(event);
    uint8_t *b = malloc(len ? len : 1);
    if (!b)
        return es_fail(err, ES_ENOMEM, "out of memory packing a test event");
    protobuf_c_message_pack(event, b);
    es_err rc = append(t, event->descriptor, b, len, &e);
    free(b);
    if (rc == ES_OK) {
        const es_event_t *ev = &t->events[t->n - 1];
        rc = es_fold(&t->folder, &t->subj, t->state, ev->event_type, ev->payload, len, ev->version,
                     &e);
        es_err owned = es_settle(&t->folder, &t->subj, t->state, rc == ES_OK ? &e : NULL);
        if (rc == ES_OK)
            rc = owned;
    }
    if (rc != ES_OK)
        given_failed(t, rc, &e);
    return rc == ES_OK ? ES_OK : es_fail(err, rc, "%s", e.message);
}

/* The state rebuilt from the history, as the engine rebuilds a state it discarded. */
static es_err rebuild(es_test_aggregate_t *t, es_error_t *e) {
    if (t->state)
        protobuf_c_message_free_unpacked(t->state, NULL);
    if (!(t->state = es_state_new(&t->subj)))
        return es_fail(e, ES_ENOMEM, "out of memory creating a %s state", t->subj.def->type);
    es_err rc = ES_OK;
    for (size_t i = 0; rc == ES_OK && i < t->n; i++)
        rc = es_fold(&t->folder, &t->subj, t->state, t->events[i].event_type, t->events[i].payload,
                     t->events[i].payload_len, t->events[i].version, e);
    es_err owned = es_settle(&t->folder, &t->subj, t->state, rc == ES_OK ? e : NULL);
    return rc != ES_OK ? rc : owned;
}

/* Decides and, when accepted, folds and keeps the events; e gets the reason or message. */
static es_err run(es_test_aggregate_t *t, const ProtobufCMessage *command, es_error_t *e) {
    es_err rc = es_command_type_check(t->subj.def, command, e);
    if (rc != ES_OK)
        return rc;
    es_decision_t d = {0};
    t->folder.fault = 0;
    rc = es_decide(&t->subj, t->state, command, &d, e);
    if (rc == ES_EREJECTED)
        es_fail(e, rc, "%s", d.reason);
    if (rc == ES_OK)
        rc = es_fold_decision(&t->folder, &t->subj, t->state, &d, t->n, e);
    if (rc != ES_OK && rc != ES_EREJECTED) {
        es_error_t ignored = {0}; /* partly folded: start again from the history */
        if (rebuild(t, &ignored) != ES_OK)
            given_failed(t, ignored.code, &ignored);
    }
    for (size_t i = 0; rc == ES_OK && i < d.n; i++)
        if ((rc = append(t, d.ev[i].desc, d.ev[i].buf.data, d.ev[i].buf.len, e)) == ES_OK)
            t->emitted++;
    es_decision_free(&d);
    return rc;
}

es_err es_test_when(es_test_aggregate_t *t, const ProtobufCMessage *command, es_error_t *err) {
    es_error_t e = {0};
    free(t->command);
    t->command = NULL;
    if (command) {
        size_t need = es_test_format(command, NULL, 0) + 1;
        if ((t->command = malloc(need)))
            es_test_format(command, t->command, need);
    }
    t->ran = 1;
    t->before = t->n;
    t->emitted = 0;
    if (t->given_rc != ES_OK) {
        t->rc = t->given_rc; /* t->reason already says why */
        return es_fail(err, t->rc, "%s", t->reason ? t->reason : "");
    }
    t->rc = run(t, command, &e);
    set_reason(t, t->rc == ES_OK ? NULL : e.message);
    return t->rc == ES_OK ? ES_OK : es_fail(err, t->rc, "%s", e.message);
}

const ProtobufCMessage *es_test_state(const es_test_aggregate_t *t) {
    return t->state;
}

uint64_t es_test_version(const es_test_aggregate_t *t) {
    return t->n;
}

const es_event_t *es_test_event(const es_test_aggregate_t *t, uint64_t version) {
    return version >= 1 && version <= t->n ? &t->events[version - 1] : NULL;
}

size_t es_test_emitted(const es_test_aggregate_t *t, uint64_t *first) {
    if (first)
        *first = t->emitted ? t->before + 1 : 0;
    return t->emitted;
}

const char *es_test_reason(const es_test_aggregate_t *t) {
    return t->reason && t->rc != ES_OK ? t->reason : "";
}
