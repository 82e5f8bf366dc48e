/*
 * The Kafka backend's consumer side against librdkafka's mock cluster, started
 * in-process by every test: events produced in the wire format (key =
 * aggregate id, value = EventEnvelope, es-* headers) are projected by a
 * runner, checkpoints resume, poison goes to es_dlq and "<topic>.dlq",
 * retention loss stops the runner, offsets reach the consumer group, a broker
 * outage is survived, and kcat reads what we read.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kafkautil.h"
#include "testutil.h"

#define TOPIC "test.note.events"
#define DLQ_TOPIC "test.note.events.dlq"
#define PARTS 3

static char *dir;
static es_config_t *cfg;
static rd_kafka_t *mock_rk, *producer;
static rd_kafka_mock_cluster_t *mock;
static int delivery_failures;

static void count_failures(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk, (void)opaque;
    if (m->err)
        delivery_failures++;
}

static void set(const char *key, const char *value) {
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, key, value, &err), ES_OK, "%s", err.message);
}

static void setup(void) {
    mock_rk = tu_kafka_new(RD_KAFKA_PRODUCER, tu_kafka_conf());
    mock = rd_kafka_mock_cluster_new(mock_rk, 1);
    cr_assert(mock);
    cr_assert_eq(rd_kafka_mock_topic_create(mock, TOPIC, PARTS, 1), 0);
    cr_assert_eq(rd_kafka_mock_topic_create(mock, DLQ_TOPIC, 1, 1), 0);
    const char *bootstraps = rd_kafka_mock_cluster_bootstraps(mock);

    rd_kafka_conf_t *c = tu_kafka_producer_conf(bootstraps);
    rd_kafka_conf_set_dr_msg_cb(c, count_failures);
    producer = tu_kafka_new(RD_KAFKA_PRODUCER, c);
    delivery_failures = 0;

    dir = tu_tempdir();
    cfg = tu_config(dir, "unused.db");
    char *rm = tu_path(dir, "read.db");
    set("brokers", bootstraps);
    set("readmodel.db", rm);
    set("service.name", "svc");
    set("projector.retry.backoff.ms", "1");
    set("kafka.reconnect.backoff.max.ms", "200");
    free(rm);
}

static void teardown(void) {
    rd_kafka_destroy(producer);
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_rk);
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(dir);
}

TestSuite(kafka_log, .init = setup, .fini = teardown, .timeout = 60);

static int64_t now_ms(void) {
    return es_now_us() / 1000;
}

static void flush_all(void) {
    rd_kafka_flush(producer, 15000);
    cr_assert_eq(rd_kafka_outq_len(producer), 0, "records still unsent");
    cr_assert_eq(delivery_failures, 0, "records failed to deliver");
}

/* Produces one event in the wire format; partition -1 lets murmur2_random pick it. */
static void produce_at(const char *id, uint64_t version, const char *type, const char *text,
                       int32_t partition) {
    es_event_t ev = {.aggregate_type = "test.note",
                     .aggregate_id = id,
                     .version = version,
                     .event_type = type,
                     .payload = (const uint8_t *)text,
                     .payload_len = strlen(text),
                     .occurred_at_us = es_now_us(),
                     .correlation_id = "corr-1"};
    es_uuid7(ev.event_id);
    uint8_t *bytes = NULL;
    size_t len = 0;
    es_error_t err = {0};
    cr_assert_eq(es_envelope_encode(&ev, &bytes, &len, &err), ES_OK, "%s", err.message);
    char ver[24];
    snprintf(ver, sizeof ver, "%llu", (unsigned long long)version);
    rd_kafka_headers_t *h = rd_kafka_headers_new(4);
    rd_kafka_header_add(h, "es-event-type", -1, type, -1);
    rd_kafka_header_add(h, "es-version", -1, ver, -1);
    rd_kafka_header_add(h, "es-event-id", -1, ev.event_id, -1);
    rd_kafka_header_add(h, "es-correlation-id", -1, "corr-1", -1);
    cr_assert_eq(rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(TOPIC),
                                   RD_KAFKA_V_PARTITION(partition), RD_KAFKA_V_KEY(id, strlen(id)),
                                   RD_KAFKA_V_VALUE(bytes, len),
                                   RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h),
                                   RD_KAFKA_V_END),
                 0);
    free(bytes);
}

static void produce(const char *id, uint64_t version, const char *text) {
    produce_at(id, version, "test.v1.Noted", text, RD_KAFKA_PARTITION_UA);
}

/* n aggregates "n<i>" with versions first..last each. */
static void produce_notes(int n, uint64_t first, uint64_t last) {
    for (uint64_t v = first; v <= last; v++)
        for (int i = 0; i < n; i++) {
            char id[16], text[32];
            snprintf(id, sizeof id, "n%d", i);
            snprintf(text, sizeof text, "note %d v%llu", i, (unsigned long long)v);
            produce(id, v, text);
        }
    flush_all();
}

static es_err migrate(sqlite3 *db, int from, es_error_t *err) {
    (void)from;
    if (sqlite3_exec(db,
                     "CREATE TABLE notes(id TEXT, version INT, body TEXT, part INT, "
                     "PRIMARY KEY(id, version))",
                     NULL, NULL, NULL) != SQLITE_OK)
        return es_fail(err, ES_EIO, "create notes: %s", sqlite3_errmsg(db));
    return ES_OK;
}

static es_err apply(es_projector_ctx_t *ctx, const es_event_t *ev, es_error_t *err) {
    sqlite3_stmt *s = es_ctx_stmt(ctx, "INSERT INTO notes VALUES (?1, ?2, ?3, ?4)", err);
    if (!s)
        return err->code;
    sqlite3_bind_text(s, 1, ev->aggregate_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)ev->version);
    sqlite3_bind_text(s, 3, (const char *)ev->payload, (int)ev->payload_len, SQLITE_STATIC);
    sqlite3_bind_int(s, 4, ev->partition);
    return es_ctx_exec(ctx, s, err);
}

static const char *const topics[] = {TOPIC, NULL};
static const es_projector_def notes = {.abi_version = ES_PROJECTOR_ABI,
                                       .name = "notes",
                                       .schema_version = 1,
                                       .topics = topics,
                                       .migrate = migrate,
                                       .apply = apply};

static long long query_int(const char *sql) {
    char *path = tu_path(dir, "read.db");
    long long v = tu_query_int(path, sql);
    free(path);
    return v;
}

static es_runner_t *open_runner(void) {
    es_runner_t *r = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_runner_new(cfg, &notes, &r, &err), ES_OK, "%s", err.message);
    return r;
}

/* Polls until the read model holds rows notes (15 s at most). */
static void drain_to(es_runner_t *r, long long rows) {
    int64_t deadline = now_ms() + 15000;
    es_error_t err = {0};
    while (query_int("SELECT count(*) FROM notes") < rows) {
        cr_assert(now_ms() < deadline, "read model stuck at %lld of %lld rows",
                  query_int("SELECT count(*) FROM notes"), rows);
        cr_assert_eq(es_runner_poll(r, 100, NULL, &err), ES_OK, "%s", err.message);
    }
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), rows);
}

Test(kafka_log, runner_projects_every_event_of_every_partition) {
    produce_notes(10, 1, 3);
    es_runner_t *r = open_runner();
    drain_to(r, 30);
    cr_assert_eq(query_int("SELECT count(DISTINCT id) FROM notes"), 10);
    cr_assert_eq(query_int("SELECT count(*) FROM notes WHERE body = 'note 4 v2'"), 1);
    /* one aggregate, one partition (murmur2 on the key); the ten spread over several */
    cr_assert_eq(query_int("SELECT max(c) FROM (SELECT count(DISTINCT part) c FROM notes GROUP "
                           "BY id)"),
                 1);
    cr_assert_gt(query_int("SELECT count(DISTINCT part) FROM notes"), 1);
    cr_assert_eq(query_int("SELECT count(*) FROM es_checkpoints WHERE projector = 'notes'"), PARTS);
    cr_assert_eq(query_int("SELECT sum(next_offset) FROM es_checkpoints"), 30);
    es_runner_stats_t st;
    es_runner_stats(r, &st);
    cr_assert_eq(st.applied, 30);
    cr_assert_eq(st.parked, 0);
    es_runner_destroy(r);
}

Test(kafka_log, lag_shows_each_partition_checkpoint_and_end) {
    set("projector.batch.size", "4");
    produce_notes(6, 1, 4);
    es_runner_t *r = open_runner();
    size_t n = 0;
    es_error_t err = {0};
    int64_t deadline = now_ms() + 15000;
    while (n == 0 && now_ms() < deadline)
        cr_assert_eq(es_runner_poll(r, 100, &n, &err), ES_OK, "%s", err.message);
    cr_assert(n > 0 && n <= 4, "first batch of %zu", n);
    es_lag_row_t *rows = NULL;
    size_t n_rows = 0;
    cr_assert_eq(es_lag(cfg, &rows, &n_rows, &err), ES_OK, "%s", err.message);
    cr_assert_eq(n_rows, PARTS);
    int64_t ends = 0, ckpts = 0;
    uint64_t lag = 0;
    for (size_t i = 0; i < n_rows; i++) {
        cr_assert_str_eq(rows[i].projector, "notes");
        cr_assert_str_eq(rows[i].topic, TOPIC);
        cr_assert_eq(rows[i].partition, (int32_t)i);
        cr_assert_eq(rows[i].lag, (uint64_t)(rows[i].end - rows[i].checkpoint));
        ends += rows[i].end;
        ckpts += rows[i].checkpoint;
        lag += rows[i].lag;
    }
    free(rows);
    cr_assert_eq(ends, 24);
    cr_assert_eq(ckpts, (int64_t)n);
    cr_assert_eq(lag, 24 - n);

    drain_to(r, 24);
    cr_assert_eq(es_lag(cfg, &rows, &n_rows, &err), ES_OK, "%s", err.message);
    for (size_t i = 0; i < n_rows; i++) {
        cr_assert_eq(rows[i].checkpoint, rows[i].end, "partition %zu", i);
        cr_assert_eq(rows[i].lag, 0);
    }
    free(rows);
    es_runner_destroy(r);
}

Test(kafka_log, restarted_runner_resumes_from_its_checkpoints) {
    produce_notes(4, 1, 3);
    es_runner_t *r = open_runner();
    drain_to(r, 12);
    es_runner_destroy(r);

    produce_notes(4, 4, 5);
    r = open_runner();
    drain_to(r, 20);
    es_runner_stats_t st;
    es_runner_stats(r, &st);
    cr_assert_eq(st.applied, 8, "applied %llu after the restart", (unsigned long long)st.applied);
    cr_assert_eq(query_int("SELECT count(*) FROM (SELECT id FROM notes GROUP BY id HAVING "
                           "max(version) = 5 AND count(*) = 5)"),
                 4);
    es_runner_destroy(r);
}

static const char *header(rd_kafka_headers_t *h, const char *name) {
    const void *v = NULL;
    size_t len = 0;
    static char buf[8][600];
    static int slot;
    if (!h || rd_kafka_header_get_last(h, name, &v, &len))
        return "";
    char *out = buf[slot++ % 8];
    snprintf(out, sizeof buf[0], "%.*s", (int)len, (const char *)v);
    return out;
}

/* Calls check on each record of one partition of topic, from its start; counts them. Records
 * hold the handle: they must be gone before it is destroyed. */
static size_t consume_all(const char *topic, int32_t partition,
                          void (*check)(const rd_kafka_message_t *m, void *opaque), void *opaque) {
    rd_kafka_conf_t *c = tu_kafka_conf();
    tu_kafka_set(c, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(mock));
    tu_kafka_set(c, "group.id", "test-reader");
    tu_kafka_set(c, "enable.auto.commit", "false");
    rd_kafka_t *rk = tu_kafka_new(RD_KAFKA_CONSUMER, c);
    rd_kafka_poll_set_consumer(rk);
    int64_t lo = 0, hi = 0;
    cr_assert_eq(rd_kafka_query_watermark_offsets(rk, topic, partition, &lo, &hi, 10000), 0);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = lo;
    cr_assert_eq(rd_kafka_assign(rk, l), 0);
    rd_kafka_topic_partition_list_destroy(l);
    size_t n = 0;
    int64_t deadline = now_ms() + 10000;
    while (n < (size_t)(hi - lo) && now_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (m && !m->err) {
            check(m, opaque);
            n++;
        }
        if (m)
            rd_kafka_message_destroy(m);
    }
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    return n;
}

static const char garbage[] = "not an envelope \xff\xfe";

static void check_dead_letter(const rd_kafka_message_t *m, void *opaque) {
    const es_dlq_entry_t *d = opaque;
    cr_assert_eq(m->key_len, 3);
    cr_assert_eq(memcmp(m->key, "bad", 3), 0);
    cr_assert_eq(m->len, sizeof garbage - 1);
    cr_assert_eq(memcmp(m->payload, garbage, m->len), 0);
    rd_kafka_headers_t *h = NULL;
    cr_assert_eq(rd_kafka_message_headers(m, &h), 0);
    char part[16], off[24];
    snprintf(part, sizeof part, "%d", (int)d->partition);
    snprintf(off, sizeof off, "%lld", (long long)d->offset);
    cr_assert_str_eq(header(h, "es-dlq-group"), "svc.notes");
    cr_assert_str_eq(header(h, "es-dlq-topic"), TOPIC);
    cr_assert_str_eq(header(h, "es-dlq-partition"), part);
    cr_assert_str_eq(header(h, "es-dlq-offset"), off);
    cr_assert_str_eq(header(h, "es-dlq-code"), "ES_EDECODE");
    cr_assert(strstr(header(h, "es-dlq-error"), "malformed event envelope"));
    cr_assert_neq(header(h, "es-dlq-attempts")[0], '\0');
    cr_assert_neq(header(h, "es-dlq-ref")[0], '\0');
}

Test(kafka_log, undecodable_record_is_parked_and_sent_to_the_dlq_topic) {
    produce("a", 1, "first");
    rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_KEY("bad", 3),
                      RD_KAFKA_V_VALUE((void *)garbage, sizeof garbage - 1),
                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    produce("a", 2, "second");
    produce("b", 1, "third");
    flush_all();
    es_runner_t *r = open_runner();
    drain_to(r, 3);
    es_runner_stats_t st;
    es_error_t err = {0};
    int64_t deadline = now_ms() + 10000;
    for (es_runner_stats(r, &st); st.parked == 0 && now_ms() < deadline; es_runner_stats(r, &st))
        cr_assert_eq(es_runner_poll(r, 100, NULL, &err), ES_OK, "%s", err.message);
    cr_assert_eq(st.parked, 1);
    cr_assert_eq(st.applied, 3);
    es_runner_destroy(r);

    es_dlq_entry_t *d = NULL;
    size_t n = 0;
    cr_assert_eq(es_dlq_list(cfg, "notes", false, &d, &n, &err), ES_OK, "%s", err.message);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(d[0].topic, TOPIC);
    cr_assert_str_eq(d[0].key, "bad");
    cr_assert_eq(d[0].code, ES_EDECODE);
    cr_assert(strstr(d[0].error, "malformed event envelope"), "%s", d[0].error);
    size_t got = consume_all(DLQ_TOPIC, 0, check_dead_letter, &d[0]);
    cr_assert_eq(got, 1, "%zu dead letters on %s", got, DLQ_TOPIC);
    free(d);
}

Test(kafka_log, checkpoint_below_the_log_start_stops_with_both_offsets) {
    produce_notes(1, 1, 3); /* n0 v1..3, all in one partition */
    es_runner_t *r = open_runner();
    drain_to(r, 3);
    es_runner_destroy(r);
    int32_t p = (int32_t)query_int("SELECT part FROM notes LIMIT 1");

    /* The mock keeps 5 MiB per partition and drops the oldest message sets beyond that: the
     * same loss retention causes on a real cluster while a consumer is away. */
    static char filler[900000];
    memset(filler, 'x', sizeof filler);
    for (int i = 0; i < 7; i++)
        cr_assert_eq(rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_PARTITION(p),
                                       RD_KAFKA_V_KEY("filler", 6),
                                       RD_KAFKA_V_VALUE(filler, sizeof filler),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
    flush_all();
    int64_t lo = 0, hi = 0;
    cr_assert_eq(rd_kafka_query_watermark_offsets(producer, TOPIC, p, &lo, &hi, 10000), 0);
    cr_assert_gt(lo, 3, "the mock kept the head of the partition (log start %lld)", (long long)lo);

    r = open_runner();
    es_error_t err = {0};
    es_err rc = ES_OK;
    int64_t deadline = now_ms() + 10000;
    while (rc == ES_OK && now_ms() < deadline)
        rc = es_runner_poll(r, 100, NULL, &err);
    cr_assert_eq(rc, ES_EIO, "%s: %s", es_strerror(rc), err.message);
    char want[96];
    snprintf(want, sizeof want, "%s partition %d", TOPIC, (int)p);
    cr_assert(strstr(err.message, want), "%s", err.message);
    cr_assert(strstr(err.message, "offset 3 "), "%s", err.message);
    snprintf(want, sizeof want, "offset %lld", (long long)lo);
    cr_assert(strstr(err.message, want), "%s", err.message);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 3, "nothing may be skipped or applied");
    es_runner_destroy(r);
}

Test(kafka_log, consumed_offsets_are_committed_to_the_projector_group) {
    produce_notes(5, 1, 2);
    es_runner_t *r = open_runner();
    drain_to(r, 10);
    es_runner_destroy(r);

    rd_kafka_conf_t *c = tu_kafka_conf();
    tu_kafka_set(c, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(mock));
    tu_kafka_set(c, "group.id", "svc.notes");
    rd_kafka_t *rk = tu_kafka_new(RD_KAFKA_CONSUMER, c);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(PARTS);
    for (int32_t p = 0; p < PARTS; p++)
        rd_kafka_topic_partition_list_add(l, TOPIC, p);
    cr_assert_eq(rd_kafka_committed(rk, l, 10000), 0);
    int64_t total = 0;
    for (int32_t p = 0; p < PARTS; p++) {
        char sql[128];
        snprintf(sql, sizeof sql,
                 "SELECT coalesce(max(next_offset), 0) FROM es_checkpoints WHERE partition = %d",
                 (int)p);
        int64_t committed = l->elems[p].offset < 0 ? 0 : l->elems[p].offset;
        cr_assert_eq(committed, query_int(sql), "partition %d", (int)p);
        total += committed;
    }
    cr_assert_eq(total, 10);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
}

Test(kafka_log, broker_outage_is_an_error_or_nothing_and_the_runner_recovers) {
    produce_notes(3, 1, 1);
    es_runner_t *r = open_runner();
    drain_to(r, 3);

    cr_assert_eq(rd_kafka_mock_broker_set_down(mock, 1), 0);
    int errors = 0;
    for (int i = 0; i < 15; i++) {
        es_error_t err = {0};
        size_t n = 0;
        es_err rc = es_runner_poll(r, 100, &n, &err);
        cr_assert(rc == ES_OK || rc == ES_EKAFKA || rc == ES_ETIMEOUT, "%s: %s", es_strerror(rc),
                  err.message);
        if (rc != ES_OK) {
            cr_assert_neq(err.message[0], '\0');
            errors++;
        }
        cr_assert_eq(n, 0);
    }
    cr_assert_gt(errors, 0, "no poll reported the outage");
    cr_assert_eq(rd_kafka_mock_broker_set_up(mock, 1), 0);
    produce_notes(3, 2, 2);
    drain_to(r, 6);
    es_runner_destroy(r);
}

Test(kafka_log, missing_topic_names_the_command_that_creates_it) {
    static const char *const missing[] = {"test.missing.events", NULL};
    static const es_projector_def def = {.abi_version = ES_PROJECTOR_ABI,
                                         .name = "lost",
                                         .schema_version = 1,
                                         .topics = missing,
                                         .migrate = migrate,
                                         .apply = apply};
    es_runner_t *r = NULL;
    es_error_t err = {0};
    es_err rc = es_runner_new(cfg, &def, &r, &err);
    cr_assert_eq(rc, ES_ENOTFOUND, "%s: %s", es_strerror(rc), err.message);
    cr_assert(strstr(err.message, "test.missing.events"), "%s", err.message);
    cr_assert(strstr(err.message, "esctl topics apply"), "%s", err.message);
}

typedef struct seen {
    uint64_t versions[16];
    size_t n;
} seen_t;

static int note_version(const es_event_t *ev, void *opaque) {
    seen_t *s = opaque;
    if (s->n < 16)
        s->versions[s->n++] = ev->version;
    return 0;
}

Test(kafka_log, store_reads_streams_in_version_order_and_refuses_writes) {
    produce("s1", 1, "one");
    produce("s1", 2, "two");
    produce("s1", 2, "a duplicate");
    produce("other", 1, "elsewhere");
    produce("s1", 3, "three");
    produce("s1", 5, "after a lost fourth");
    flush_all();
    es_store_t *store = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    uint64_t version = 0;
    cr_assert_eq(es_store_stream_version(store, "test.note", "s1", &version, &err), ES_OK, "%s",
                 err.message);
    /* The log-order rule for a reader (docs/design.md): the duplicate is dropped, the version
     * after a gap is read (it used to end the stream at 3, unlike every other reader). */
    cr_assert_eq(version, 5);
    seen_t s = {0};
    cr_assert_eq(es_store_read_stream(store, "test.note", "s1", 2, note_version, &s, &err), ES_OK,
                 "%s", err.message);
    cr_assert_eq(s.n, 3);
    cr_assert_eq(s.versions[0], 2);
    cr_assert_eq(s.versions[1], 3);
    cr_assert_eq(s.versions[2], 5);
    seen_t all = {0};
    const char *const types[] = {"test.note", NULL};
    int64_t next = 0;
    cr_assert_eq(es_store_read_log(store, types, 1, 0, note_version, &all, &next, &err), ES_OK,
                 "%s", err.message);
    cr_assert_eq(all.n, 6);
    cr_assert_eq(next, 7);

    es_new_event_t ne = {"test.v1.Noted", (const uint8_t *)"x", 1, NULL, NULL, NULL, 0};
    cr_assert_eq(es_store_append(store, "test.note", "s1", ES_EXPECT_ANY, 0, &ne, 1, NULL, &err),
                 ES_ESTATE);
    cr_assert(strstr(err.message, "command processor"), "%s", err.message);
    es_store_destroy(store);
}

/* Reads a decimal number and the space after it. */
static long take_number(const char **p, const char *end) {
    char *stop = NULL;
    long v = strtol(*p, &stop, 10);
    cr_assert(stop > *p && stop < end && *stop == ' ', "bad kcat output near '%.20s'", *p);
    *p = stop + 1;
    return v;
}

Test(kafka_log, kcat_reads_the_events_topic_and_its_bytes_decode) {
    produce("k1", 1, "alpha");
    produce("k1", 2, "beta");
    produce("k2", 1, "gamma");
    flush_all();
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/kcat -b %s -C -t %s -o beginning -e -q -f '%%p %%o %%K %%k %%S %%s %%h\\n' "
             "2>/dev/null",
             rd_kafka_mock_cluster_bootstraps(mock), TOPIC);
    FILE *f = popen(cmd, "r");
    cr_assert(f);
    static char out[1 << 16];
    size_t len = fread(out, 1, sizeof out, f);
    cr_assert_eq(pclose(f), 0, "kcat failed");
    const char *p = out, *end = out + len;
    int decoded = 0;
    while (p < end) {
        int32_t partition = (int32_t)take_number(&p, end);
        int64_t offset = take_number(&p, end);
        long klen = take_number(&p, end);
        cr_assert(klen > 0 && p + klen < end);
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)klen, p);
        p += klen + 1;
        long vlen = take_number(&p, end);
        cr_assert(vlen > 0 && p + vlen < end);
        es_position_t at = {TOPIC, key, partition, offset};
        es_event_t *ev = NULL;
        es_error_t err = {0};
        cr_assert_eq(es_envelope_decode((const uint8_t *)p, (size_t)vlen, &at, &ev, &err), ES_OK,
                     "%s", err.message);
        p += vlen + 1;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        cr_assert(nl);
        char headers[512], want[128];
        snprintf(headers, sizeof headers, "%.*s", (int)(nl - p), p);
        p = nl + 1;
        cr_assert_str_eq(ev->aggregate_id, key);
        cr_assert_str_eq(ev->aggregate_type, "test.note");
        cr_assert_str_eq(ev->event_type, "test.v1.Noted");
        snprintf(want, sizeof want, "es-event-type=test.v1.Noted,es-version=%llu,es-event-id=%s",
                 (unsigned long long)ev->version, ev->event_id);
        cr_assert(strstr(headers, want), "%s", headers);
        cr_assert(strstr(headers, "es-correlation-id=corr-1"), "%s", headers);
        es_event_free(ev);
        decoded++;
    }
    cr_assert_eq(decoded, 3);
}

/* A zombie writer's records: a version repeated, an old one, and one after a gap. */
Test(kafka_log, the_log_order_rule_skips_stale_versions_and_counts_gaps) {
    produce("z", 1, "first");
    produce("z", 2, "second");
    produce("z", 2, "zombie's second");
    produce("z", 1, "zombie's first");
    produce("z", 3, "third");
    produce("z", 5, "fifth, after a lost fourth");
    flush_all();
    es_runner_t *r = open_runner();
    int64_t deadline = now_ms() + 15000;
    es_runner_stats_t st = {0};
    es_error_t err = {0};
    while (st.applied + st.stale < 6) {
        cr_assert(now_ms() < deadline, "stuck at %llu applied, %llu stale",
                  (unsigned long long)st.applied, (unsigned long long)st.stale);
        cr_assert_eq(es_runner_poll(r, 100, NULL, &err), ES_OK, "%s", err.message);
        es_runner_stats(r, &st);
    }
    cr_assert_eq(st.applied, 4);
    cr_assert_eq(st.stale, 2);
    cr_assert_eq(st.gaps, 1);
    cr_assert_eq(query_int("SELECT count(*) FROM notes WHERE body LIKE 'zombie%'"), 0);
    cr_assert_eq(query_int("SELECT max(version) FROM notes WHERE id = 'z'"), 5);
    cr_assert_eq(query_int("SELECT version FROM es_versions WHERE aggregate_id = 'z'"), 5);
    es_runner_destroy(r);

    /* A restarted runner remembers where the aggregate stands. */
    produce("z", 4, "late fourth");
    produce("z", 6, "sixth");
    flush_all();
    r = open_runner();
    st = (es_runner_stats_t){0};
    deadline = now_ms() + 15000;
    while (st.applied + st.stale < 2) {
        cr_assert(now_ms() < deadline, "stuck after restart");
        cr_assert_eq(es_runner_poll(r, 100, NULL, &err), ES_OK, "%s", err.message);
        es_runner_stats(r, &st);
    }
    cr_assert_eq(st.applied, 1);
    cr_assert_eq(st.stale, 1);
    cr_assert_eq(query_int("SELECT count(*) FROM notes WHERE body = 'late fourth'"), 0);
    es_runner_destroy(r);
}

/* Kafka API keys the mock's error injection takes (from the Kafka protocol). */
enum { API_FETCH = 1, API_LIST_OFFSETS = 2, API_OFFSET_COMMIT = 8, API_FIND_COORDINATOR = 10 };

/* A runner driven by es_runner_run on a thread, while the test disturbs the cluster. */
typedef struct background {
    es_runner_t *r;
    pthread_t thread;
    es_err rc;
    es_error_t err;
} background;

static void *run_runner(void *arg) {
    background *bg = arg;
    bg->rc = es_runner_run(bg->r, &bg->err);
    return NULL;
}

Test(kafka_log, fetch_and_commit_errors_and_an_outage_lose_and_double_nothing) {
    produce_notes(20, 1, 5); /* 100 events */
    background bg = {.r = open_runner()};
    cr_assert_eq(pthread_create(&bg.thread, NULL, run_runner, &bg), 0);

    rd_kafka_mock_push_request_errors(
        mock, API_FETCH, 4, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        RD_KAFKA_RESP_ERR__TRANSPORT);
    rd_kafka_mock_push_request_errors(mock, API_OFFSET_COMMIT, 3, RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
                                      RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
                                      RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT);
    rd_kafka_mock_push_request_errors(mock, API_FIND_COORDINATOR, 2,
                                      RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
                                      RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE);
    produce_notes(20, 6, 8); /* 60 more while the errors play out */

    /* The broker goes away and comes back while the runner runs. */
    cr_assert_eq(rd_kafka_mock_broker_set_down(mock, 1), 0);
    struct timespec pause = {0, 300 * 1000000L};
    nanosleep(&pause, NULL);
    cr_assert_eq(rd_kafka_mock_broker_set_up(mock, 1), 0);
    produce_notes(20, 9, 10); /* and 40 after it */

    int64_t deadline = now_ms() + 30000;
    while (query_int("SELECT count(*) FROM notes") < 200)
        cr_assert(now_ms() < deadline, "read model stuck at %lld of 200 rows",
                  query_int("SELECT count(*) FROM notes"));
    es_runner_stop(bg.r);
    pthread_join(bg.thread, NULL);
    cr_assert_eq(bg.rc, ES_OK, "%s", bg.err.message);
    es_runner_stats_t st;
    es_runner_stats(bg.r, &st);
    es_runner_destroy(bg.r);
    /* notes has PRIMARY KEY(id, version): an event applied twice would have failed and been
     * parked, so nothing parked and 200 rows means each applied exactly once. */
    cr_assert_eq(st.parked, 0);
    cr_assert_eq(query_int("SELECT count(*) FROM es_dlq"), 0);
    cr_assert_eq(query_int("SELECT count(*) FROM notes"), 200);
    cr_assert_eq(query_int("SELECT count(DISTINCT id || '/' || version) FROM notes"), 200);
    cr_assert_eq(query_int("SELECT sum(next_offset) FROM es_checkpoints"), 200);
}
