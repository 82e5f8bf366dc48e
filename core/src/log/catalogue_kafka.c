/*
 * The Kafka schema catalogue (catalogue.h): the compacted topic schema.topic (default
 * eskit.schemas), one partition, a record per version keyed "<full name>/<version>" whose value
 * is an eskit.v1.SchemaRecord.
 *
 * Kafka has no conditional write, so a version is decided by the log: the FIRST record of a
 * key is that version, whatever came after it. A writer produces its records, then reads the
 * partition back to its end: when another writer's record of the same key came first, it lost
 * that version and registers again (catalogue.c). Compaction keeps a key's LAST record, so a
 * key whose last record is not its first is repaired: its first record is produced again by
 * every read-write reader that sees it (the loser at once, on its next read; anyone else who
 * opens the catalogue later). The topic's min.compaction.lag.ms (esctl topics plan sets seven
 * days) keeps records from compaction long enough for that repair to have happened.
 */
#include "catalogue.h"

#include "kafka/wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQUEST_TIMEOUT_MS 10000
#define FLUSH_TIMEOUT_MS 10000
#define SCAN_TIMEOUT_MS 10000

typedef struct kafka_catalogue {
    es_catalogue_store base;
    const es_config_t *cfg;
    const char *topic;
    rd_kafka_t *consumer;
    rd_kafka_t *producer;
    int readonly;
    char where[512];
    /* delivery reports of the last add */
    size_t acked, failed;
    rd_kafka_resp_err_t why;
} kafka_catalogue;

/* The first record of a key, and whether a later one differs from it. */
typedef struct first_rec {
    char *key;
    es_catalogue_rec rec;
    void *keep;
    uint8_t *value; /* its bytes, to produce again in a repair */
    size_t len;
    int differs;
} first_rec;

typedef struct scan_state {
    kafka_catalogue *c;
    first_rec *recs;
    size_t n, cap;
    es_err e;
    es_error_t *err;
} scan_state;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    kafka_catalogue *c = opaque;
    if (m->err) {
        c->failed++;
        c->why = m->err;
    } else {
        c->acked++;
    }
}

static es_err missing_topic(kafka_catalogue *c, es_error_t *err) {
    return es_fail(err, ES_ENOTFOUND,
                   "the schema catalogue's topic %s does not exist on the Kafka cluster; create "
                   "it with 'esctl topics apply' (it is in 'esctl topics plan')",
                   c->topic);
}

static first_rec *find_key(scan_state *s, const char *key) {
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->recs[i].key, key))
            return &s->recs[i];
    return NULL;
}

static es_err keep_first(scan_state *s, const rd_kafka_message_t *m, const char *key,
                         es_error_t *err) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        first_rec *n = realloc(s->recs, cap * sizeof *n);
        if (!n)
            return es_fail(err, ES_ENOMEM, "out of memory reading the schema catalogue");
        s->recs = n;
        s->cap = cap;
    }
    first_rec *f = &s->recs[s->n];
    memset(f, 0, sizeof *f);
    char expect[ES_MAX_TYPE_NAME_LEN + 16];
    es_err e = es_catalogue_rec_decode(m->payload, m->len, &f->rec, &f->keep, err);
    if (e == ES_OK) {
        snprintf(expect, sizeof expect, "%s/%u", f->rec.name, f->rec.version);
        if (strcmp(expect, key))
            e = es_fail(err, ES_EDECODE, "its key is '%.300s' but it holds %s", key, expect);
    }
    if (e == ES_OK && (!(f->key = strdup(key)) || !(f->value = malloc(m->len ? m->len : 1))))
        e = es_fail(err, ES_ENOMEM, "out of memory reading the schema catalogue");
    if (e != ES_OK) {
        free(f->key);
        free(f->value);
        es_catalogue_rec_free(f->keep);
        return e;
    }
    memcpy(f->value, m->payload, m->len);
    f->len = m->len;
    s->n++;
    return ES_OK;
}

static es_err on_record(void *opaque, const rd_kafka_message_t *m, int *stop, es_error_t *err) {
    scan_state *s = opaque;
    (void)stop;
    char key[ES_MAX_TYPE_NAME_LEN + 16];
    if (!m->key || m->key_len == 0 || m->key_len >= sizeof key)
        return es_fail(err, ES_EDECODE,
                       "the schema catalogue (%s) has a record without a valid key at offset "
                       "%lld; remove it (the catalogue's keys are \"<type>/<version>\")",
                       s->c->where, (long long)m->offset);
    memcpy(key, m->key, m->key_len);
    key[m->key_len] = '\0';
    first_rec *f = find_key(s, key);
    if (!f) {
        es_error_t derr;
        if (keep_first(s, m, key, &derr) != ES_OK)
            return es_fail(err, ES_EDECODE,
                           "the schema catalogue (%s) has a corrupt record at offset %lld: %s; "
                           "restore it from a backup, or remove it and register again",
                           s->c->where, (long long)m->offset, derr.message);
        return ES_OK;
    }
    /* A later record of a version: the same bytes are a repair or a retry; other bytes lost. */
    f->differs = m->len != f->len || memcmp(m->payload, f->value, f->len);
    return ES_OK;
}

static es_err on_error(void *opaque, const rd_kafka_message_t *m, int64_t next, es_error_t *err) {
    scan_state *s = opaque;
    (void)next;
    if (es_kafka_code(m->err) == ES_ENOTFOUND)
        return missing_topic(s->c, err);
    return ES_OK; /* librdkafka retries; the scan's timeout ends a wait that lasts */
}

static void free_scan(scan_state *s) {
    for (size_t i = 0; i < s->n; i++) {
        free(s->recs[i].key);
        free(s->recs[i].value);
        es_catalogue_rec_free(s->recs[i].keep);
    }
    free(s->recs);
}

static es_err scan(kafka_catalogue *c, scan_state *s, es_error_t *err) {
    int64_t lo = 0, hi = 0;
    memset(s, 0, sizeof *s);
    s->c = c;
    s->err = err;
    rd_kafka_resp_err_t ke = es_kafka_watermarks(c->consumer, c->topic, 0, &lo, &hi,
                                                 es_now_us() / 1000 + REQUEST_TIMEOUT_MS, NULL);
    if (ke != RD_KAFKA_RESP_ERR_NO_ERROR)
        return es_kafka_code(ke) == ES_ENOTFOUND
                   ? missing_topic(c, err)
                   : es_kafka_fail(c->consumer, ke, NULL, err,
                                   "reading the schema catalogue's topic %s", c->topic);
    return es_kafka_scan(c->consumer, "reading the schema catalogue from", c->topic, 0, lo, hi,
                         SCAN_TIMEOUT_MS, on_record, on_error, s, err);
}

static es_err producer(kafka_catalogue *c, es_error_t *err) {
    if (c->producer)
        return ES_OK;
    es_kafka_opts_t o = {.role = ES_KAFKA_PRODUCER,
                         .what = "schema catalogue producer",
                         .opaque = c,
                         .dr_cb = dr_cb};
    return es_kafka_new(c->cfg, &o, &c->producer, err);
}

static es_err produce(kafka_catalogue *c, const char *key, const uint8_t *value, size_t len,
                      es_error_t *err) {
    es_kafka_record_t r = {.kind = ES_KAFKA_SCHEMA,
                           .topic = c->topic,
                           .partition = 0,
                           .key = key,
                           .value = value,
                           .len = len,
                           .copy = 1,
                           .queue_wait_ms = FLUSH_TIMEOUT_MS};
    return es_kafka_produce(c->producer, &r, err);
}

/* Waits for the delivery reports of what was produced since the counts were reset. */
static es_err await(kafka_catalogue *c, size_t n, es_error_t *err) {
    rd_kafka_flush(c->producer, FLUSH_TIMEOUT_MS);
    if (c->failed)
        return es_kafka_code(c->why) == ES_ENOTFOUND
                   ? missing_topic(c, err)
                   : es_kafka_fail(c->producer, c->why, NULL, err, "recording schemas in %s",
                                   c->topic);
    if (c->acked < n)
        return es_fail(err, ES_ETIMEOUT,
                       "recording schemas in %s: not acknowledged within %d ms; register again",
                       c->where, FLUSH_TIMEOUT_MS);
    return ES_OK;
}

/* Produces the first record of every key whose later records differ, so that compaction keeps
 * the version every reader folded to. */
static es_err repair(kafka_catalogue *c, scan_state *s, es_error_t *err) {
    size_t n = 0;
    es_err e = ES_OK;
    for (size_t i = 0; i < s->n; i++)
        if (s->recs[i].differs) {
            if (n == 0) {
                if ((e = producer(c, err)) != ES_OK)
                    return e;
                c->acked = c->failed = 0;
            }
            if ((e = produce(c, s->recs[i].key, s->recs[i].value, s->recs[i].len, err)) != ES_OK)
                return e;
            n++;
        }
    return n ? await(c, n, err) : ES_OK;
}

static es_err kc_list(es_catalogue_store *base, es_catalogue_cb *cb, void *opaque,
                      es_error_t *err) {
    kafka_catalogue *c = (kafka_catalogue *)base;
    scan_state s;
    es_err e = scan(c, &s, err);
    if (e == ES_OK && !c->readonly)
        e = repair(c, &s, err);
    for (size_t i = 0; e == ES_OK && i < s.n; i++)
        if (cb(&s.recs[i].rec, opaque))
            break;
    free_scan(&s);
    return e;
}

static es_err kc_add(es_catalogue_store *base, const es_catalogue_rec *recs, size_t n, int *lost,
                     es_error_t *err) {
    kafka_catalogue *c = (kafka_catalogue *)base;
    es_buf_t b = {0};
    *lost = 0;
    es_err e = producer(c, err);
    c->acked = c->failed = 0;
    for (size_t i = 0; e == ES_OK && i < n; i++) {
        char key[ES_MAX_TYPE_NAME_LEN + 16];
        snprintf(key, sizeof key, "%s/%u", recs[i].name, recs[i].version);
        if ((e = es_catalogue_rec_encode(&recs[i], &b, err)) == ES_OK)
            e = produce(c, key, b.data, b.len, err);
    }
    es_buf_free(&b);
    if (e == ES_OK)
        e = await(c, n, err);
    /* Read back: each version is the one its key's first record holds. */
    scan_state s;
    if (e == ES_OK && (e = scan(c, &s, err)) == ES_OK) {
        for (size_t i = 0; i < n && !*lost; i++) {
            char key[ES_MAX_TYPE_NAME_LEN + 16];
            snprintf(key, sizeof key, "%s/%u", recs[i].name, recs[i].version);
            const first_rec *f = find_key(&s, key);
            *lost = !f || strcmp(f->rec.fingerprint, recs[i].fingerprint);
        }
        e = repair(c, &s, err);
        free_scan(&s);
    }
    return e;
}

static void kc_destroy(es_catalogue_store *base) {
    kafka_catalogue *c = (kafka_catalogue *)base;
    if (c->producer)
        es_kafka_destroy(c->producer, 0);
    if (c->consumer)
        es_kafka_destroy(c->consumer, 0);
    free(c);
}

static const es_catalogue_ops kafka_catalogue_ops = {kc_list, kc_add, kc_destroy};

es_err es_catalogue_kafka_open(const es_config_t *cfg, int readonly, es_catalogue_store **out,
                               es_error_t *err) {
    kafka_catalogue *c = calloc(1, sizeof *c);
    if (!c)
        return es_fail(err, ES_ENOMEM, "out of memory opening the schema catalogue");
    c->cfg = cfg;
    c->topic = es_catalogue_topic(cfg);
    c->readonly = readonly;
    snprintf(c->where, sizeof c->where, "topic %s on brokers %.300s", c->topic,
             es_config_get(cfg, "brokers"));
    c->base = (es_catalogue_store){&kafka_catalogue_ops, c->where};
    es_kafka_opts_t o = {.role = ES_KAFKA_CONSUMER,
                         .what = "schema catalogue reader",
                         .group = "eskit.schemas.reader",
                         .offset_reset = "error"};
    es_err e = es_kafka_new(cfg, &o, &c->consumer, err);
    if (e != ES_OK) {
        kc_destroy(&c->base);
        return e;
    }
    *out = &c->base;
    return ES_OK;
}
