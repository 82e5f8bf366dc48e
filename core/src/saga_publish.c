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

typedef struct pending_rec {
    char id[ES_MAX_ID_LEN + 1];
    char correlation[ES_MAX_ID_LEN + 1]; /* the instance's (correlation_of) */
    uint64_t seq;
    uint8_t *buf;
    size_t len;
    int64_t at;
    /* The transition's span, which its envelope's metadata carries as an event's does. */
    char traceparent[ES_TRACEPARENT_LEN + 1], parent[ES_SPAN_ID_LEN + 1];
    char *tracestate;
    es_kv_t md[3];
    size_t n_md;
} pending_rec;

static es_err mark_published(es_saga_t *c, const char *id, uint64_t upto, es_error_t *err) {
    sqlite3_stmt *s = es_saga_stmt(c, S_PUBLISHED);
    sqlite3_bind_text(s, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)upto);
    return es_saga_step_done(c, s, "marking transitions published", err);
}

static void free_recs(pending_rec *recs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(recs[i].buf);
        free(recs[i].tracestate);
    }
    free(recs);
}

/* r's correlation from its instance's start event (column 3 of the S_UNPUBLISHED row s). */
static void instance_correlation(sqlite3_stmt *s, pending_rec *r) {
    es_event_t *start = NULL;
    const void *bytes = sqlite3_column_blob(s, 3);
    if (bytes)
        es_envelope_decode(bytes, (size_t)sqlite3_column_bytes(s, 3), NULL, &start, NULL);
    snprintf(r->correlation, sizeof r->correlation, "%s", es_saga_correlation_of(start, r->id));
    es_event_free(start);
}

static void trace_metadata(pending_rec *r, const Eskit__V1__SagaTransition *t) {
    es_traceparent_t tp;
    if (es_traceparent_parse(t->traceparent, &tp, NULL) != ES_OK)
        return; /* written before trace context */
    snprintf(r->traceparent, sizeof r->traceparent, "%s", t->traceparent);
    r->md[r->n_md++] = (es_kv_t){ES_TRACEPARENT_KEY, r->traceparent};
    if (t->parent_span && strlen(t->parent_span) == ES_SPAN_ID_LEN) {
        snprintf(r->parent, sizeof r->parent, "%s", t->parent_span);
        r->md[r->n_md++] = (es_kv_t){ES_PARENT_SPAN_KEY, r->parent};
    }
    if (t->tracestate && *t->tracestate && (r->tracestate = strdup(t->tracestate)))
        r->md[r->n_md++] = (es_kv_t){ES_TRACESTATE_KEY, r->tracestate};
}

es_err es_saga_publish(es_saga_t *c, size_t *published, es_error_t *err) {
    *published = 0;
    pending_rec *recs = calloc(PUBLISH_BATCH, sizeof *recs);
    if (!recs)
        return es_fail(err, ES_ENOMEM, "out of memory");
    size_t n = 0;
    sqlite3_stmt *s = es_saga_stmt(c, S_UNPUBLISHED);
    sqlite3_bind_int(s, 2, PUBLISH_BATCH);
    int rc;
    es_err e = ES_OK;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        pending_rec *r = &recs[n];
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
            trace_metadata(r, t);
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
    es_event_t *evs = e == ES_OK && n ? calloc(n, sizeof *evs) : NULL;
    es_event_t **views = evs ? calloc(n, sizeof *views) : NULL;
    uint8_t *ok = views ? calloc(n, 1) : NULL;
    if (e == ES_OK && n && !ok)
        e = es_fail(err, ES_ENOMEM, "out of memory");
    es_err pe = ES_OK;
    if (e == ES_OK && n) {
        for (size_t i = 0; i < n; i++) {
            evs[i] = (es_event_t){.aggregate_type = c->htype,
                                  .aggregate_id = recs[i].id,
                                  .version = recs[i].seq,
                                  .offset = -1,
                                  .event_type = ES_SAGA_EVENT_TYPE,
                                  .payload = recs[i].buf,
                                  .payload_len = recs[i].len,
                                  .occurred_at_us = recs[i].at,
                                  .correlation_id = recs[i].correlation,
                                  .metadata = recs[i].md,
                                  .n_metadata = recs[i].n_md};
            es_uuid7_at(recs[i].at, evs[i].event_id);
            views[i] = &evs[i];
        }
        pe = es_store_publish(es_engine_store(c->engine), views, n, &c->stop, ok, err);
        if (pe != ES_OK)
            es_error_subject(err, c->subject);
    }
    /* Marked published: exactly the records in the log, each instance's up to its first record
     * that was not (a record after it, in the log or not, is sent again with it later). */
    size_t done = 0;
    int open = 0;
    es_error_t merr;
    es_err me = ES_OK;
    for (size_t i = 0, j; e == ES_OK && me == ES_OK && i < n; i = j) {
        for (j = i + 1; j < n && !strcmp(recs[j].id, recs[i].id); j++)
            ;
        size_t k = i;
        while (k < j && ok[k])
            k++;
        if (k > i && !open && (me = es_saga_tx_begin(c, &merr)) == ES_OK)
            open = 1;
        if (k > i && me == ES_OK)
            me = mark_published(c, recs[i].id, recs[k - 1].seq, &merr);
        done += k - i;
    }
    if (open)
        me = es_saga_tx_end(c, me, &merr);
    if (e == ES_OK && me != ES_OK) {
        if (err)
            *err = merr;
        e = me;
    }
    if (e == ES_OK)
        e = pe;
    free(ok);
    free(views);
    free(evs);
    if (e == ES_OK)
        *published = done;
    free_recs(recs, n);
    return e;
}
