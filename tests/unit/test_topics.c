/* The topic plan: partition arithmetic and its reasons, replication for small and large
 * clusters, retention per topic, the naming check and the topics.* config keys. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <eskit/topics.h>

#include "testutil.h"

typedef struct plan {
    es_topic_spec_t *specs;
    size_t n;
} plan;

/* The plan of one type for `brokers` brokers; asserts it succeeded. */
static plan plan_one(es_config_t *cfg, int brokers, const char *type, long long eps,
                     long long consumers) {
    es_topic_load_t load = {type, eps, consumers};
    es_error_t err = {0};
    plan p = {0};
    es_err rc = es_topics_plan_for(cfg, brokers, &load, 1, &p.specs, &p.n, &err);
    cr_assert_eq(rc, ES_OK, "%s", err.message);
    cr_assert_eq(p.n, 6, "five topics of the type, then the schema catalogue's");
    return p;
}

static const es_topic_spec_t *find(const plan *p, const char *name) {
    for (size_t i = 0; i < p->n; i++)
        if (!strcmp(p->specs[i].name, name))
            return &p->specs[i];
    cr_assert_fail("no topic %s in the plan", name);
    return NULL;
}

static es_config_t *config(void) {
    es_config_t *cfg = es_config_new();
    cr_assert_not_null(cfg);
    return cfg;
}

Test(topics, every_type_gets_its_five_topics_with_their_retention) {
    es_config_t *cfg = config();
    plan p = plan_one(cfg, 1, "orders.order", 0, 0);
    const es_topic_spec_t *ev = find(&p, "orders.order.events");
    const es_topic_spec_t *snap = find(&p, "orders.order.snapshots");
    const es_topic_spec_t *cmd = find(&p, "orders.order.commands");
    const es_topic_spec_t *rep = find(&p, "orders.order.replies");
    const es_topic_spec_t *dlq = find(&p, "orders.order.events.dlq");
    cr_assert_eq(ev->role, ES_TOPIC_EVENTS);
    cr_assert_str_eq(ev->cleanup_policy, "delete");
    cr_assert_eq(ev->retention_ms, -1);
    cr_assert_str_eq(snap->cleanup_policy, "compact");
    cr_assert_str_eq(cmd->cleanup_policy, "delete");
    cr_assert_eq(cmd->retention_ms, 7LL * 24 * 3600 * 1000);
    cr_assert_eq(rep->retention_ms, 24LL * 3600 * 1000);
    cr_assert_eq(dlq->retention_ms, 14LL * 24 * 3600 * 1000);
    cr_assert_str_eq(es_topic_role_name(dlq->role), "dlq");
    for (size_t i = 0; i < p.n; i++) {
        cr_assert_str_eq(p.specs[i].aggregate_type,
                         p.specs[i].role == ES_TOPIC_SCHEMAS ? "" : "orders.order",
                         "the catalogue belongs to no aggregate type");
        cr_assert_eq(p.specs[i].collides_with, -1);
    }
    es_topics_free(p.specs);
    es_config_destroy(cfg);
}

Test(topics, throughput_decides_partitions_rounded_up) {
    es_config_t *cfg = config();
    plan p = plan_one(cfg, 1, "orders.order", 20001, 2);
    const es_topic_spec_t *ev = find(&p, "orders.order.events");
    cr_assert_eq(ev->partitions, 5); /* ceil(20001 / 5000) */
    cr_assert_eq(ev->flags, ES_TOPIC_BY_THROUGHPUT);
    cr_assert_eq(ev->events_per_s, 20001);
    es_topics_free(p.specs);
    es_config_destroy(cfg);
}

Test(topics, consumers_decide_when_they_ask_for_more) {
    es_config_t *cfg = config();
    plan p = plan_one(cfg, 1, "orders.order", 1000, 6);
    cr_assert_eq(find(&p, "orders.order.events")->partitions, 6);
    cr_assert_eq(find(&p, "orders.order.events")->flags, ES_TOPIC_BY_CONSUMERS);
    es_topics_free(p.specs);
    es_config_destroy(cfg);
}

Test(topics, a_tie_names_both_rules_and_one_partition_is_the_minimum) {
    es_config_t *cfg = config();
    plan p = plan_one(cfg, 1, "orders.order", 20000, 4);
    cr_assert_eq(find(&p, "orders.order.events")->partitions, 4);
    cr_assert_eq(find(&p, "orders.order.events")->flags,
                 ES_TOPIC_BY_THROUGHPUT | ES_TOPIC_BY_CONSUMERS);
    es_topics_free(p.specs);
    p = plan_one(cfg, 1, "orders.order", 0, 0); /* defaults: 1000 events/s, 1 consumer */
    cr_assert_eq(find(&p, "orders.order.events")->partitions, 1);
    cr_assert_eq(find(&p, "orders.order.events")->flags, ES_TOPIC_BY_MINIMUM);
    es_topics_free(p.specs);
    es_config_destroy(cfg);
}

Test(topics, commands_snapshots_and_replies_share_the_events_count_and_dlq_has_one) {
    es_config_t *cfg = config();
    plan p = plan_one(cfg, 1, "orders.order", 40000, 3);
    const char *shared[] = {"orders.order.snapshots", "orders.order.commands",
                            "orders.order.replies"};
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(find(&p, shared[i])->partitions, 8, "%s", shared[i]);
        cr_assert(find(&p, shared[i])->flags & ES_TOPIC_SHARED, "%s", shared[i]);
    }
    cr_assert_eq(find(&p, "orders.order.events.dlq")->partitions, 1);
    cr_assert_eq(find(&p, "orders.order.events.dlq")->flags, ES_TOPIC_SINGLE);
    es_topics_free(p.specs);
    es_config_destroy(cfg);
}

Test(topics, replication_is_three_with_two_in_sync_on_big_clusters_and_one_on_one_broker) {
    es_config_t *cfg = config();
    static const int brokers[] = {1, 2, 3, 5}, rf[] = {1, 2, 3, 3}, isr[] = {1, 1, 2, 2};
    for (size_t b = 0; b < 4; b++) {
        plan p = plan_one(cfg, brokers[b], "orders.order", 0, 0);
        for (size_t i = 0; i < p.n; i++) {
            cr_assert_eq(p.specs[i].replication_factor, rf[b], "%d brokers", brokers[b]);
            cr_assert_eq(p.specs[i].min_insync_replicas, isr[b], "%d brokers", brokers[b]);
        }
        es_topics_free(p.specs);
    }
    es_config_destroy(cfg);
}

Test(topics, config_keys_set_the_defaults) {
    es_config_t *cfg = config();
    cr_assert_eq(es_config_get_int(cfg, "topics.partition.throughput"), 5000);
    cr_assert_eq(es_config_get_int(cfg, "topics.throughput"), 1000);
    cr_assert_eq(es_config_get_int(cfg, "topics.consumers"), 1);
    cr_assert_null(es_config_get(cfg, "topics.aggregates"));
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "topics.partition.throughput", "100", &err), ES_OK);
    cr_assert_eq(es_config_set(cfg, "topics.throughput", "950", &err), ES_OK);
    cr_assert_eq(es_config_set(cfg, "topics.consumers", "2", &err), ES_OK);
    plan p = plan_one(cfg, 1, "orders.order", 0, 0);
    cr_assert_eq(find(&p, "orders.order.events")->partitions, 10);
    cr_assert_eq(find(&p, "orders.order.events")->consumers, 2);
    es_topics_free(p.specs);
    es_config_destroy(cfg);
}

Test(topics, config_keys_reject_bad_values_and_are_listed) {
    es_config_t *cfg = config();
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "topics.partition.throughput", "0", &err), ES_EINVAL);
    cr_assert(strstr(err.message, "topics.partition.throughput"), "%s", err.message);
    cr_assert_eq(es_config_set(cfg, "topics.consumers", "-1", &err), ES_EINVAL);
    cr_assert_eq(es_config_set(cfg, "topics.aggregates", "", &err), ES_EINVAL);
    cr_assert_eq(es_config_set(cfg, "topics.partitions", "3", &err), ES_EINVAL);
    cr_assert(strstr(err.message, "topics.partition.throughput") &&
                  strstr(err.message, "topics.aggregates"),
              "%s", err.message);
    es_config_destroy(cfg);
}

Test(topics, topics_aggregates_names_the_types_when_none_are_given) {
    es_config_t *cfg = config();
    es_error_t err = {0};
    es_topic_spec_t *specs = NULL;
    size_t n = 0;
    cr_assert_eq(es_topics_plan_for(cfg, 1, NULL, 0, &specs, &n, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "topics.aggregates"), "%s", err.message);
    cr_assert_eq(es_config_set(cfg, "topics.aggregates", "orders.order, payments.payment", &err),
                 ES_OK);
    cr_assert_eq(es_topics_plan_for(cfg, 1, NULL, 0, &specs, &n, &err), ES_OK, "%s", err.message);
    cr_assert_eq(n, 11);
    cr_assert_str_eq(specs[5].name, "payments.payment.events");
    cr_assert_str_eq(specs[10].name, "eskit.schemas", "one catalogue topic for the whole plan");
    es_topics_free(specs);
    cr_assert_eq(es_config_set(cfg, "topics.aggregates", "orders.order,Bad", &err), ES_OK);
    cr_assert_eq(es_topics_plan_for(cfg, 1, NULL, 0, &specs, &n, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "topics.aggregates") && strstr(err.message, "'Bad'"), "%s",
              err.message);
    es_config_destroy(cfg);
}

Test(topics, the_schema_catalogue_topic_is_compacted_kept_forever_and_has_one_partition) {
    es_config_t *cfg = config();
    plan p = plan_one(cfg, 3, "orders.order", 100000, 8);
    const es_topic_spec_t *s = find(&p, "eskit.schemas");
    cr_assert_not_null(s);
    cr_assert_eq(s->role, ES_TOPIC_SCHEMAS);
    cr_assert_str_eq(es_topic_role_name(s->role), "schemas");
    cr_assert_eq(s->partitions, 1, "read whole, in order, by every writer at start");
    cr_assert_str_eq(s->cleanup_policy, "compact");
    cr_assert_eq(s->retention_ms, -1);
    cr_assert_eq(s->replication_factor, 3);
    cr_assert_eq(s->min_insync_replicas, 2);
    es_topics_free(p.specs);
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "schema.topic", "acme.schemas", &err), ES_OK);
    p = plan_one(cfg, 1, "orders.order", 10, 1);
    cr_assert_not_null(find(&p, "acme.schemas"), "schema.topic names it");
    es_topics_free(p.specs);
    es_config_destroy(cfg);
}

Test(topics, bad_loads_are_refused_with_the_reason) {
    es_config_t *cfg = config();
    es_error_t err = {0};
    es_topic_spec_t *specs = NULL;
    size_t n = 0;
    es_topic_load_t bad_type = {"orders_order", 0, 0};
    cr_assert_eq(es_topics_plan_for(cfg, 1, &bad_type, 1, &specs, &n, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "orders_order"), "%s", err.message);
    es_topic_load_t twice[] = {{"orders.order", 0, 0}, {"orders.order", 5, 0}};
    cr_assert_eq(es_topics_plan_for(cfg, 1, twice, 2, &specs, &n, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "twice"), "%s", err.message);
    es_topic_load_t huge = {"orders.order", 1000000000LL, 0};
    cr_assert_eq(es_topics_plan_for(cfg, 1, &huge, 1, &specs, &n, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "200000 partitions"), "%s", err.message);
    es_topic_load_t negative = {"orders.order", -5, 0};
    cr_assert_eq(es_topics_plan_for(cfg, 1, &negative, 1, &specs, &n, &err), ES_EINVAL);
    cr_assert_null(specs);
    es_config_destroy(cfg);
}

Test(topics, names_are_checked_against_kafkas_rules) {
    es_error_t err = {0};
    char longest[ES_TOPIC_NAME_MAX + 2];
    memset(longest, 'a', sizeof longest);
    longest[ES_TOPIC_NAME_MAX] = '\0';
    cr_assert_eq(es_topic_name_check(longest, &err), ES_OK);
    longest[ES_TOPIC_NAME_MAX] = 'a';
    longest[ES_TOPIC_NAME_MAX + 1] = '\0';
    cr_assert_eq(es_topic_name_check(longest, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "249"), "%s", err.message);
    cr_assert_eq(es_topic_name_check("Orders_v2.events-x", &err), ES_OK);
    cr_assert_eq(es_topic_name_check("orders order", &err), ES_EINVAL);
    cr_assert_eq(es_topic_name_check("..", &err), ES_EINVAL);
    cr_assert_eq(es_topic_name_check("", &err), ES_EINVAL);
}

Test(topics, names_differing_only_in_dot_and_underscore_collide) {
    cr_assert(es_topic_names_collide("orders.order.events", "orders_order.events"));
    cr_assert(es_topic_names_collide("a_b", "a.b"));
    cr_assert_not(es_topic_names_collide("orders.order.events", "orders.order.event"));
    cr_assert_not(es_topic_names_collide("a-b", "a_b"));
}

Test(topics, the_longest_aggregate_type_still_gives_legal_names) {
    char type[ES_MAX_TYPE_LEN + 1];
    memset(type, 'x', sizeof type - 1);
    type[ES_MAX_TYPE_LEN] = '\0';
    type[3] = '.';
    es_config_t *cfg = config();
    plan p = plan_one(cfg, 3, type, 0, 0);
    for (size_t i = 0; i < p.n; i++)
        cr_assert_eq(es_topic_name_check(p.specs[i].name, NULL), ES_OK, "%s", p.specs[i].name);
    es_topics_free(p.specs);
    es_config_destroy(cfg);
}

Test(topics, broker_count_falls_back_to_the_brokers_list_when_nothing_answers) {
    es_config_t *cfg = config();
    cr_assert_eq(es_topics_broker_count(cfg), 1);
    es_error_t err = {0};
    /* Port 1 on loopback refuses at once: the count must not wait out a timeout. */
    cr_assert_eq(es_config_set(cfg, "brokers", "127.0.0.1:1,127.0.0.1:2, 127.0.0.1:3", &err),
                 ES_OK);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(es_topics_broker_count(cfg), 3);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    cr_assert_lt(t1.tv_sec - t0.tv_sec, 4);
    es_topic_load_t load = {"orders.order", 0, 0};
    es_topic_spec_t *specs = NULL;
    size_t n = 0;
    cr_assert_eq(es_topics_plan(cfg, &load, 1, &specs, &n, &err), ES_OK, "%s", err.message);
    cr_assert_eq(specs[0].replication_factor, 3);
    cr_assert_eq(specs[0].min_insync_replicas, 2);
    es_topics_free(specs);
    es_config_destroy(cfg);
}

/* The spec of role in the plan of orders.order for `brokers` brokers; p frees it. */
static const es_topic_spec_t *planned(plan *p, es_config_t *cfg, int brokers, const char *name) {
    *p = plan_one(cfg, brokers, "orders.order", 0, 0);
    return find(p, name);
}

Test(topics, a_topic_kept_forever_is_sized_by_the_day_and_the_year_times_its_replication) {
    es_config_t *cfg = config();
    plan p;
    const es_topic_spec_t *ev = planned(&p, cfg, 3, "orders.order.events");
    es_topic_traffic_t t = {.records_per_day = 1000, .record_bytes = 250};
    es_topic_size_t size;
    es_error_t err = {0};
    cr_assert_eq(es_topic_size(ev, &t, &size, &err), ES_OK, "%s", err.message);
    cr_assert_eq(size.kind, ES_TOPIC_SIZE_FOREVER);
    cr_assert_eq(size.bytes_per_day, 750000.0, "1000 records of 250 bytes on 3 replicas");
    cr_assert_eq(size.bytes_per_year, 273750000.0, "365 days of them");
    cr_assert_eq(size.bytes_retained, -1.0, "nothing bounds a topic kept forever");
    es_topics_free(p.specs);
    es_config_destroy(cfg);
}

Test(topics, a_topic_with_retention_holds_its_retention_in_days_of_records) {
    es_config_t *cfg = config();
    plan p;
    const es_topic_spec_t *cmd = planned(&p, cfg, 2, "orders.order.commands");
    const es_topic_spec_t *rep = find(&p, "orders.order.replies");
    const es_topic_spec_t *dlq = find(&p, "orders.order.events.dlq");
    es_topic_traffic_t t = {.records_per_day = 1000, .record_bytes = 100.5};
    es_topic_size_t size;
    cr_assert_eq(es_topic_size(cmd, &t, &size, NULL), ES_OK);
    cr_assert_eq(size.kind, ES_TOPIC_SIZE_RETAINED);
    cr_assert_eq(size.bytes_per_day, 201000.0, "1000 records of 100.5 bytes on 2 replicas");
    cr_assert_eq(size.bytes_retained, 1407000.0, "7 days of them");
    cr_assert_eq(size.bytes_per_year, -1.0);
    cr_assert_eq(es_topic_size(rep, &t, &size, NULL), ES_OK);
    cr_assert_eq(size.bytes_retained, 201000.0, "one day");
    t = (es_topic_traffic_t){.records_per_day = 3, .record_bytes = 2000};
    cr_assert_eq(es_topic_size(dlq, &t, &size, NULL), ES_OK);
    cr_assert_eq(size.bytes_retained, 168000.0, "14 days of 3 records of 2000 bytes, twice");
    es_topics_free(p.specs);
    es_config_destroy(cfg);
}

Test(topics, a_compacted_topic_has_bytes_written_a_day_and_no_time_bound) {
    es_config_t *cfg = config();
    plan p;
    const es_topic_spec_t *snap = planned(&p, cfg, 1, "orders.order.snapshots");
    es_topic_traffic_t t = {.records_per_day = 48, .record_bytes = 1024};
    es_topic_size_t size;
    cr_assert_eq(es_topic_size(snap, &t, &size, NULL), ES_OK);
    cr_assert_eq(size.kind, ES_TOPIC_SIZE_COMPACTED);
    cr_assert_eq(size.bytes_per_day, 49152.0);
    cr_assert_eq(size.bytes_retained, -1.0);
    cr_assert_eq(size.bytes_per_year, -1.0);
    es_topics_free(p.specs);
    es_config_destroy(cfg);
}

Test(topics, negative_or_not_finite_traffic_is_refused_naming_the_topic) {
    es_config_t *cfg = config();
    plan p;
    const es_topic_spec_t *ev = planned(&p, cfg, 1, "orders.order.events");
    const es_topic_traffic_t bad[] = {{.records_per_day = -1, .record_bytes = 10},
                                      {.records_per_day = 10, .record_bytes = -0.5},
                                      {.records_per_day = NAN, .record_bytes = 10},
                                      {.records_per_day = 10, .record_bytes = INFINITY}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        es_topic_size_t size;
        es_error_t err = {0};
        cr_assert_eq(es_topic_size(ev, &bad[i], &size, &err), ES_EINVAL, "case %zu", i);
        cr_assert(strstr(err.message, "orders.order.events"), "%s", err.message);
    }
    es_topics_free(p.specs);
    es_config_destroy(cfg);
}

#define HOUR_US (3600LL * 1000000)

Test(topics, rate_of_a_log_older_than_a_day_is_its_records_of_the_last_day) {
    int64_t now = 1000 * 24 * HOUR_US;
    cr_assert_eq(es_topic_rate_per_day(500, 120, now - 48 * HOUR_US, now - HOUR_US, now), 120.0);
    cr_assert_eq(es_topic_rate_per_day(500, 0, now - 24 * HOUR_US, now - 24 * HOUR_US, now), 0.0,
                 "exactly a day old counts as a day");
}

Test(topics, rate_of_a_younger_log_is_its_rate_from_first_to_last_record) {
    int64_t now = 1000 * 24 * HOUR_US;
    cr_assert_eq(es_topic_rate_per_day(5, 5, now - 3 * HOUR_US, now - HOUR_US, now), 48.0,
                 "4 intervals in 2 hours");
    cr_assert_eq(es_topic_rate_per_day(1, 1, now - HOUR_US, now - HOUR_US, now), 1.0);
    cr_assert_eq(es_topic_rate_per_day(3, 3, now - HOUR_US, now - HOUR_US, now), 3.0,
                 "records of one instant count as that day's");
    cr_assert_eq(es_topic_rate_per_day(0, 0, 0, 0, now), 0.0);
}

/* Appends n events of payload_len bytes to type/id, one append each. */
static void append_events(es_store_t *store, const char *type, const char *id, int n,
                          size_t payload_len) {
    uint8_t payload[512];
    cr_assert(payload_len <= sizeof payload);
    memset(payload, 'x', payload_len);
    for (int i = 0; i < n; i++) {
        es_new_event_t ev = {
            .event_type = "test.v1.Happened", .payload = payload, .payload_len = payload_len};
        es_error_t err = {0};
        cr_assert_eq(es_store_append(store, type, id, ES_EXPECT_ANY, 0, &ev, 1, NULL, &err), ES_OK,
                     "%s", err.message);
    }
}

typedef struct span {
    long long n;
    int64_t first, last;
} span;

static int note_time(const es_event_t *ev, void *opaque) {
    span *s = opaque;
    if (s->n == 0 || ev->occurred_at_us < s->first)
        s->first = ev->occurred_at_us;
    if (s->n == 0 || ev->occurred_at_us > s->last)
        s->last = ev->occurred_at_us;
    s->n++;
    return 0;
}

Test(topics, measuring_an_embedded_log_gives_each_types_event_sizes_and_rate) {
    char *dir = tu_tempdir();
    es_config_t *cfg = tu_config(dir, "events.db");
    es_store_t *store = NULL;
    cr_assert_eq(es_store_new(cfg, &store, NULL), ES_OK);
    append_events(store, "orders.order", "o-1", 6, 100);
    append_events(store, "payments.payment", "p-1", 4, 300);
    append_events(store, "orders.order", "o-2", 2, 100);
    const char *types[] = {"orders.order", NULL};
    span s = {0};
    cr_assert_eq(es_store_read_log(store, types, 0, 0, note_time, &s, NULL, NULL), ES_OK);
    es_store_destroy(store);
    char *db = tu_path(dir, "events.db");
    long long bytes = tu_query_int(db, "SELECT sum(length(e.envelope)) FROM es_events e JOIN "
                                       "es_types t ON t.id = e.type_id WHERE t.name = "
                                       "'orders.order'");
    plan p;
    const es_topic_spec_t *ev = planned(&p, cfg, 1, "orders.order.events");
    es_topic_traffic_t t;
    es_error_t err = {0};
    cr_assert_eq(es_topic_measure(cfg, ev, s.last + HOUR_US, &t, &err), ES_OK, "%s", err.message);
    cr_assert_eq(t.records, 8);
    cr_assert_eq(t.record_bytes, (double)bytes / 8, "%g, stored %lld bytes", t.record_bytes, bytes);
    cr_assert_eq(t.records_per_day, es_topic_rate_per_day(8, 8, s.first, s.last, s.last + HOUR_US));
    cr_assert_eq(es_topic_measure(cfg, ev, s.first + 48 * HOUR_US, &t, &err), ES_OK);
    cr_assert_eq(t.records_per_day, 0.0, "none in the last day of a log two days old");
    cr_assert_eq(es_topic_measure(cfg, find(&p, "orders.order.commands"), s.last, &t, &err),
                 ES_ENOTFOUND);
    cr_assert(strstr(err.message, "orders.order.commands"), "%s", err.message);
    es_topics_free(p.specs);
    free(db);
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(dir);
}
