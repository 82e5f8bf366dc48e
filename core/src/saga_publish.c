/* Publishing transitions: es_saga_history appended to "<saga>.saga.events", to the embedded
 * log in one transaction or produced to Kafka and waited for, then deleted. */
#include "saga_int.h"

#include "engine_int.h"
#include "kafka/wire.h"
#include "store.h"

#include "eskit/v1/saga.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PUBLISH_BATCH 4096
#define KAFKA_FLUSH_MS 10000
#define FLUSH_SLICE_MS 50
#define STOP_GRACE_MS 1000 /* a stop still waits this long for acknowledgements under way */
#define SENT_INDEX_BITS 12 /* a record's delivery opaque: publish round << bits | index */

typedef struct pending_rec {
    char id[ES_MAX_ID_LEN + 1];
    char correlation[ES_MAX_ID_LEN + 1]; /* the instance's (correlation_of) */
    uint64_t seq;
    uint8_t *buf;
    size_t len;
    int64_t at;
} pending_rec;

static es_err mark_published(es_saga_coordinator_t *c, const char *id, uint64_t upto,
                             es_error_t *err) {
    sqlite3_stmt *s = es_saga_stmt(c, S_PUBLISHED);
    sqlite3_bind_text(s, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)upto);
    return es_saga_step_done(c, s, "marking transitions published", err);
}

/* Embedded: appends recs[0..n) (sorted by instance, then seq) to the instances'
 * "<saga>.saga" streams in one log transaction, skipping what an earlier try already
 * appended. */
static es_err append_embedded(es_saga_coordinator_t *c, const pending_rec *recs, size_t n,
                              es_error_t *err) {
    es_store_t *store = es_engine_store(c->engine);
    es_new_event_t *evs = calloc(n, sizeof *evs);
    es_pending_t p = {0};
    es_log_t *log;
    if (!evs)
        return es_fail(err, ES_ENOMEM, "out of memory");
    es_err e = es_store_lock(store, &log, err);
    if (e != ES_OK) {
        free(evs);
        return e;
    }
    e = log->store->begin(log, err);
    for (size_t i = 0, j; e == ES_OK && i < n; i = j) {
        for (j = i + 1; j < n && !strcmp(recs[j].id, recs[i].id); j++)
            ;
        uint64_t version = 0;
        e = log->reader->stream_version(log, c->htype, recs[i].id, &version, err);
        size_t k = i;
        while (e == ES_OK && k < j && recs[k].seq <= version)
            k++;
        if (e != ES_OK || k == j)
            continue;
        if (recs[k].seq != version + 1) {
            e = es_fail(err, ES_EIO,
                        "saga '%s' %s: the transition log ends at %llu but the next unpublished "
                        "transition is %llu",
                        c->def->name, recs[i].id, (unsigned long long)version,
                        (unsigned long long)recs[k].seq);
            break;
        }
        for (size_t m = k; m < j; m++)
            evs[m - k] = (es_new_event_t){.event_type = ES_SAGA_EVENT_TYPE,
                                          .payload = recs[m].buf,
                                          .payload_len = recs[m].len,
                                          .correlation_id = recs[m].correlation};
        e = es_pending_build(&p, c->htype, recs[i].id, version, evs, j - k, err);
        if (e == ES_OK)
            e = log->store->append(log, c->htype, recs[i].id, version, p.recs, j - k, p.offsets, err);
    }
    if (e == ES_OK)
        e = log->store->commit(log, err);
    else
        log->store->rollback(log);
    es_store_unlock(store);
    es_pending_free(&p);
    free(evs);
    return e;
}

_Static_assert(PUBLISH_BATCH <= 1 << SENT_INDEX_BITS, "a record's index fits its opaque");

/* Runs on the thread that polls or flushes the producer (publish, destroy). */
static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    es_saga_coordinator_t *c = opaque;
    uintptr_t tag = (uintptr_t)m->_private, i = tag & ((1u << SENT_INDEX_BITS) - 1);
    if (tag >> SENT_INDEX_BITS == c->round)
        c->sent[i] = (sent_rec){1, m->err};
}

/* Kafka: produces the records keyed by instance id, in a new round of delivery reports; a
 * retry after a crash may produce a transition twice, and readers keep the first of each
 * version (the log-order rule). */
static es_err append_kafka(es_saga_coordinator_t *c, const pending_rec *recs, size_t n,
                           es_error_t *err) {
    c->round = (c->round + 1) & (UINTPTR_MAX >> SENT_INDEX_BITS);
    if (c->round == 0)
        c->round = 1;
    memset(c->sent, 0, n * sizeof *c->sent);
    for (size_t i = 0; i < n; i++) {
        es_event_t ev = {.aggregate_type = c->htype,
                         .aggregate_id = recs[i].id,
                         .version = recs[i].seq,
                         .event_type = ES_SAGA_EVENT_TYPE,
                         .payload = recs[i].buf,
                         .payload_len = recs[i].len,
                         .occurred_at_us = recs[i].at,
                         .correlation_id = recs[i].correlation};
        es_uuid7_at(recs[i].at, ev.event_id);
        uint8_t *bytes = NULL;
        size_t len = 0;
        es_err e = es_envelope_encode(&ev, &bytes, &len, err);
        if (e == ES_OK)
            e = es_kafka_produce_event(c->producer, c->htopic, RD_KAFKA_PARTITION_UA, &ev, bytes,
                                       len, (void *)(c->round << SENT_INDEX_BITS | i), err);
        if (e != ES_OK) {
            es_error_subject(err, c->subject);
            return e;
        }
    }
    return ES_OK;
}

/* Waits up to KAFKA_FLUSH_MS for the producer's records to be acknowledged, in short slices so
 * that a stop does not wait for an outage to end: after a stop, at most STOP_GRACE_MS more, for
 * acknowledgements already on their way (what is acknowledged is marked published and never
 * sent again). Whether every record was acknowledged. */
static int flushed(es_saga_coordinator_t *c) {
    for (int waited = 0, grace = 0; waited < KAFKA_FLUSH_MS && grace < STOP_GRACE_MS;
         waited += FLUSH_SLICE_MS) {
        if (rd_kafka_flush(c->producer, FLUSH_SLICE_MS) == RD_KAFKA_RESP_ERR_NO_ERROR)
            return 1;
        if (es_stop_requested(&c->stop))
            grace += FLUSH_SLICE_MS;
    }
    return rd_kafka_outq_len(c->producer) == 0;
}

/* Kafka: how many of recs[i..j) (one instance's, in seq order) were delivered before a record
 * that was not; *why is the first failure's, or __TIMED_OUT for a record with no report yet. */
static size_t delivered_run(const es_saga_coordinator_t *c, size_t i, size_t j,
                            rd_kafka_resp_err_t *why) {
    size_t k = i;
    while (k < j && c->sent[k].reported && !c->sent[k].err)
        k++;
    if (k < j && !*why)
        *why = c->sent[k].reported ? c->sent[k].err : RD_KAFKA_RESP_ERR__TIMED_OUT;
    return k - i;
}

static void free_recs(pending_rec *recs, size_t n) {
    for (size_t i = 0; i < n; i++)
        free(recs[i].buf);
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

es_err es_saga_publish(es_saga_coordinator_t *c, size_t *published, es_error_t *err) {
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
    if (e == ES_OK && n > 0 && c->producer) {
        e = append_kafka(c, recs, n, err);
        if (e == ES_OK)
            flushed(c);
    } else if (e == ES_OK && n > 0) {
        e = append_embedded(c, recs, n, err);
    }
    /* Marked published: on Kafka exactly the records delivered, each instance's up to its first
     * record that was not (a record after it, delivered or not, is sent again with it later). */
    rd_kafka_resp_err_t why = RD_KAFKA_RESP_ERR_NO_ERROR;
    size_t done = 0;
    int open = 0;
    for (size_t i = 0, j; e == ES_OK && i < n; i = j) {
        for (j = i + 1; j < n && !strcmp(recs[j].id, recs[i].id); j++)
            ;
        size_t k = c->producer ? delivered_run(c, i, j, &why) : j - i;
        if (k > 0 && !open && (e = es_saga_tx_begin(c, err)) == ES_OK)
            open = 1;
        if (k > 0 && e == ES_OK)
            e = mark_published(c, recs[i].id, recs[i + k - 1].seq, err);
        done += k;
    }
    if (open)
        e = es_saga_tx_end(c, e, err);
    /* What a stop cut short is no failure: it is sent again on the next round or start. */
    if (e == ES_OK && why && !es_stop_requested(&c->stop))
        e = es_kafka_fail(c->producer, why, NULL, err, "saga '%s': publishing transitions to %s",
                          c->def->name, c->htopic);
    if (e == ES_OK)
        *published = done;
    free_recs(recs, n);
    return e;
}

es_err es_saga_open_producer(es_saga_coordinator_t *c, es_error_t *err) {
    es_kafka_opts_t o = {.role = ES_KAFKA_PRODUCER, .opaque = c, .dr_cb = dr_cb};
    if (!(c->sent = calloc(PUBLISH_BATCH, sizeof *c->sent)))
        return es_fail(err, ES_ENOMEM, "out of memory");
    es_err e = es_kafka_new(c->cfg, &o, &c->producer, err);
    if (e != ES_OK)
        es_error_subject(err, c->subject);
    return e;
}
