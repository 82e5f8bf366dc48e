/* Publishing transitions: es_saga_history written to "<saga>.saga.events" one way on every
 * backend (es_store_publish: appended to the embedded event store in one transaction, or
 * produced to Kafka and waited for), then marked published. */
#include "saga_int.h"

#include "engine_int.h"
#include "store.h"

#include "eskit/v1/saga.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PUBLISH_BATCH 4096
#define PUB_KEEP_MAX 65536 /* transitions kept in memory at most; past it, read back */

/*
 * Where a publication's records come from. Reading es_saga_history back costs per transition
 * a row read, a decode of the record (its time and span) and, per instance, a decode of the
 * start event (its correlation): callgrind put it at a third of the publication. So the
 * transitions committed since the last publication are kept in memory as they are written
 * (es_saga_pub_note) and published from there, while the memory is known to be all of the
 * table: from the moment a publication drained it (pub_ok) until anything fails. Before use
 * the memory is also counted against the table: every row written while pub_ok was noted, so
 * the same count means the same rows (a rolled-back transition left in memory, or one noted
 * twice, makes the memory the larger). The table stays the truth: what memory does not
 * cover is read back, as after a restart.
 */
void es_saga_pub_drop(es_saga_t *c) {
    for (size_t i = 0; i < c->n_pub; i++) {
        free(c->pub[i].buf);
        free(c->pub[i].tracestate);
    }
    free(c->pub);
    c->pub = NULL;
    c->n_pub = c->cap_pub = 0;
    c->pub_ok = 0;
}

/* r's span from the transition's fields, when it has one. */
static void trace_fields(saga_pub *r, const char *traceparent, const char *parent,
                         const char *tracestate) {
    es_traceparent_t tp;
    if (!traceparent || es_traceparent_parse(traceparent, &tp, NULL) != ES_OK)
        return; /* written before trace context */
    snprintf(r->traceparent, sizeof r->traceparent, "%s", traceparent);
    if (parent && strlen(parent) == ES_SPAN_ID_LEN)
        snprintf(r->parent, sizeof r->parent, "%s", parent);
    if (tracestate && *tracestate)
        r->tracestate = strdup(tracestate);
}

/* src into dst (cap bytes), cut to fit. */
static void copy_text(char *dst, size_t cap, const char *src) {
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

void es_saga_pub_note(es_saga_t *c, const saga_inst *in, uint64_t seq, uint8_t *buf, size_t len,
                      int64_t at, const es_trace_t *span, const char *traceparent) {
    if (!c->pub_ok || c->n_pub == PUB_KEEP_MAX) {
        free(buf);
        if (c->pub_ok)
            es_saga_pub_drop(c);
        return;
    }
    if (c->n_pub == c->cap_pub) {
        size_t cap = c->cap_pub ? 2 * c->cap_pub : 256;
        saga_pub *grown = realloc(c->pub, cap * sizeof *grown);
        if (!grown) {
            free(buf);
            es_saga_pub_drop(c);
            return;
        }
        c->pub = grown;
        c->cap_pub = cap;
    }
    saga_pub *r = &c->pub[c->n_pub++];
    copy_text(r->id, sizeof r->id, in->id);
    copy_text(r->correlation, sizeof r->correlation, es_saga_correlation_of(in->start_ev, in->id));
    r->seq = seq;
    r->buf = buf;
    r->len = len;
    r->at = at;
    /* The span as es_saga_hist wrote it (traceparent formatted there, so valid), the way
     * trace_fields reads it back. */
    copy_text(r->traceparent, sizeof r->traceparent, traceparent);
    r->parent[0] = '\0';
    if (strlen(span->parent) == ES_SPAN_ID_LEN)
        memcpy(r->parent, span->parent, sizeof r->parent);
    r->tracestate = span->tracestate && *span->tracestate ? strdup(span->tracestate) : NULL;
}

static es_err mark_published(es_saga_t *c, const char *id, uint64_t upto, es_error_t *err) {
    sqlite3_stmt *s = es_saga_stmt(c, S_PUBLISHED);
    sqlite3_bind_text(s, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)upto);
    return es_saga_step_done(c, s, "marking transitions published", err);
}

static void free_recs(saga_pub *recs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(recs[i].buf);
        free(recs[i].tracestate);
    }
    free(recs);
}

/* r's correlation from its instance's start event (column 3 of the S_UNPUBLISHED row s). */
static void instance_correlation(sqlite3_stmt *s, saga_pub *r) {
    es_event_t *start = NULL;
    const void *bytes = sqlite3_column_blob(s, 3);
    if (bytes)
        es_envelope_decode(bytes, (size_t)sqlite3_column_bytes(s, 3), NULL, &start, NULL);
    snprintf(r->correlation, sizeof r->correlation, "%s", es_saga_correlation_of(start, r->id));
    es_event_free(start);
}

/* Up to PUBLISH_BATCH rows of es_saga_history, in the order they are published. */
static es_err read_back(es_saga_t *c, saga_pub **out, size_t *count, es_error_t *err) {
    saga_pub *recs = NULL;
    size_t n = 0, cap = 0;
    sqlite3_stmt *s = es_saga_stmt(c, S_UNPUBLISHED);
    sqlite3_bind_int(s, 2, PUBLISH_BATCH);
    int rc;
    es_err e = ES_OK;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (n == cap) {
            size_t grow = cap ? 2 * cap : 64;
            saga_pub *g = realloc(recs, grow * sizeof *g);
            if (!g) {
                e = es_fail(err, ES_ENOMEM, "out of memory");
                break;
            }
            recs = g;
            cap = grow;
        }
        saga_pub *r = &recs[n];
        memset(r, 0, sizeof *r);
        es_saga_copy_str(r->id, sizeof r->id, sqlite3_column_text(s, 0));
        r->seq = (uint64_t)sqlite3_column_int64(s, 1);
        r->len = (size_t)sqlite3_column_bytes(s, 2);
        r->buf = malloc(r->len ? r->len : 1);
        if (!r->buf) {
            e = es_fail(err, ES_ENOMEM, "out of memory");
            break;
        }
        if (r->len)
            memcpy(r->buf, sqlite3_column_blob(s, 2), r->len);
        Eskit__V1__SagaTransition *t = eskit__v1__saga_transition__unpack(NULL, r->len, r->buf);
        r->at = t ? t->at_us : es_now_us();
        if (t)
            trace_fields(r, t->traceparent, t->parent_span, t->tracestate);
        if (t)
            eskit__v1__saga_transition__free_unpacked(t, NULL);
        if (n > 0 && !strcmp(recs[n - 1].id, r->id))
            memcpy(r->correlation, recs[n - 1].correlation, sizeof r->correlation);
        else
            instance_correlation(s, r);
        n++;
    }
    sqlite3_reset(s);
    if (e == ES_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
        e = es_saga_db_fail(c, "reading unpublished transitions", err);
    *out = recs;
    *count = n;
    return e;
}

/* The memory's transitions when they are all of es_saga_history (see es_saga_pub_drop), taken
 * from the coordinator; else none, and the memory forgotten. */
static es_err take_memory(es_saga_t *c, saga_pub **out, size_t *count, int *taken,
                          es_error_t *err) {
    *taken = 0;
    if (!c->pub_ok)
        return ES_OK;
    sqlite3_stmt *s = es_saga_stmt(c, S_UNPUBLISHED_N);
    int rc = sqlite3_step(s);
    uint64_t rows = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    if (rc != SQLITE_ROW) {
        es_saga_pub_drop(c);
        return es_saga_db_fail(c, "counting unpublished transitions", err);
    }
    if (rows != c->n_pub) {
        es_saga_pub_drop(c);
        return ES_OK;
    }
    *out = c->pub;
    *count = c->n_pub;
    *taken = 1;
    c->pub = NULL;
    c->n_pub = c->cap_pub = 0;
    c->pub_ok = 0; /* until this publication drains the table */
    return ES_OK;
}

/* By instance, then in its order: the order es_saga_history is read back in, which keeps an
 * instance's records together (one run of appends per instance). */
static int by_instance(const void *a, const void *b) {
    const saga_pub *x = a, *y = b;
    int k = strcmp(x->id, y->id);
    return k ? k : (x->seq > y->seq) - (x->seq < y->seq);
}

/* Marks published exactly the records in the log, each instance's up to its first record that
 * was not (a record after it, in the log or not, is sent again with it later). all: every
 * record of the table is in recs and was published, so the table is emptied in one statement
 * (and the marks by instance made instead, *all cleared, when it held other rows after all). */
static es_err mark_all(es_saga_t *c, const saga_pub *recs, size_t n, const uint8_t *ok, int *all,
                       size_t *done, es_error_t *err) {
    *done = 0;
    if (*all) {
        es_err e = es_saga_tx_begin(c, err);
        /* The table holding this saga's rows alone (one saga a database, the common case):
         * a DELETE without WHERE, which SQLite does by clearing the b-tree, not row by row
         * (4,300 instructions a row). */
        sqlite3_stmt *count = c->st[S_HISTORY_N];
        sqlite3_reset(count);
        int alone = e == ES_OK && sqlite3_step(count) == SQLITE_ROW &&
                    (size_t)sqlite3_column_int64(count, 0) == n;
        sqlite3_reset(count);
        if (e == ES_OK)
            e = es_saga_step_done(c,
                                  alone ? c->st[S_HISTORY_CLEAR] : es_saga_stmt(c, S_PUBLISHED_ALL),
                                  "marking transitions published", err);
        *all = e == ES_OK && (size_t)sqlite3_changes(c->db) == n;
        if (e == ES_OK && !*all)
            es_saga_tx_end(c, ES_ESTATE, NULL); /* not what memory said: undone */
        else if ((e = es_saga_tx_end(c, e, err)) == ES_OK) {
            *done = n;
            return ES_OK;
        }
        if (e != ES_OK)
            return e;
    }
    int open = 0;
    es_err e = ES_OK;
    for (size_t i = 0, j; e == ES_OK && i < n; i = j) {
        for (j = i + 1; j < n && !strcmp(recs[j].id, recs[i].id); j++)
            ;
        size_t k = i;
        while (k < j && ok[k])
            k++;
        if (k > i && !open && (e = es_saga_tx_begin(c, err)) == ES_OK)
            open = 1;
        if (k > i && e == ES_OK)
            e = mark_published(c, recs[i].id, recs[k - 1].seq, err);
        *done += k - i;
    }
    if (open)
        e = es_saga_tx_end(c, e, err);
    if (e != ES_OK)
        *done = 0;
    return e;
}

es_err es_saga_publish(es_saga_t *c, size_t *published, es_error_t *err) {
    *published = 0;
    saga_pub *recs = NULL;
    size_t n = 0;
    int from_memory = 0;
    es_err e = take_memory(c, &recs, &n, &from_memory, err);
    if (e == ES_OK && !from_memory)
        e = read_back(c, &recs, &n, err);
    else if (e == ES_OK && n > 1)
        qsort(recs, n, sizeof *recs, by_instance);
    int drained = from_memory || n < PUBLISH_BATCH;
    es_event_t *evs = e == ES_OK && n ? calloc(n, sizeof *evs) : NULL;
    es_event_t **views = evs ? calloc(n, sizeof *views) : NULL;
    es_kv_t(*md)[3] = views ? calloc(n, sizeof *md) : NULL;
    uint8_t *ok = md ? calloc(n, 1) : NULL;
    if (e == ES_OK && n && !ok)
        e = es_fail(err, ES_ENOMEM, "out of memory");
    es_err pe = ES_OK;
    if (e == ES_OK && n) {
        for (size_t i = 0; i < n; i++) {
            saga_pub *r = &recs[i];
            size_t k = 0;
            if (*r->traceparent)
                md[i][k++] = (es_kv_t){ES_TRACEPARENT_KEY, r->traceparent};
            if (*r->traceparent && *r->parent)
                md[i][k++] = (es_kv_t){ES_PARENT_SPAN_KEY, r->parent};
            if (*r->traceparent && r->tracestate)
                md[i][k++] = (es_kv_t){ES_TRACESTATE_KEY, r->tracestate};
            evs[i] = (es_event_t){.aggregate_type = c->htype,
                                  .aggregate_id = r->id,
                                  .version = r->seq,
                                  .offset = -1,
                                  .event_type = ES_SAGA_EVENT_TYPE,
                                  .payload = r->buf,
                                  .payload_len = r->len,
                                  .occurred_at_us = r->at,
                                  .correlation_id = r->correlation,
                                  .metadata = md[i],
                                  .n_metadata = k};
            es_uuid7_at(r->at, evs[i].event_id);
            views[i] = &evs[i];
        }
        pe = es_store_publish(es_engine_store(c->engine), views, n, &c->stop, ok, err);
        if (pe != ES_OK)
            es_error_subject(err, c->subject);
    }
    size_t done = 0, sent = 0;
    for (size_t i = 0; ok && i < n; i++)
        sent += ok[i];
    if (e == ES_OK && n) {
        es_error_t merr;
        int all = from_memory && sent == n;
        es_err me = mark_all(c, recs, n, ok, &all, &done, &merr);
        drained = drained && (all || !from_memory);
        if (me != ES_OK) {
            if (err)
                *err = merr;
            e = me;
        }
    }
    if (e == ES_OK)
        e = pe;
    /* Nothing left behind: from here on the memory is all of the table again. */
    if (e == ES_OK && drained && sent == n)
        c->pub_ok = 1;
    free(ok);
    free(md);
    free(views);
    free(evs);
    if (e == ES_OK)
        *published = done;
    free_recs(recs, n);
    return e;
}
