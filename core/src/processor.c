/*
 * The command processor: the single writer of the "<type>.events" partitions
 * whose "<type>.commands" partitions the consumer group assigned to it.
 *
 * State lives in a private embedded engine over the local state store
 * (state.db, sqlite.synchronous=normal: it is a cache of the owned partitions,
 * rebuilt from Kafka after a loss, so fsync per batch buys nothing). es_meta
 * holds, per events partition, the next Kafka offset the store reflects.
 *
 * A batch runs as one local transaction; the engine's pre-commit hook
 * produces the accepted commands' events and waits for every delivery report
 * before the local commit, and the consumer offsets are committed last. So
 * after a crash anywhere, Kafka holds at least what the store holds: restore
 * imports the rest (with their command ids), and the redelivered commands are
 * answered as duplicates. A batch that fails is read again: its partitions are
 * marked for restore and the consumer seeks back to the batch's first record.
 * That includes a batch whose events did not land right at the store's
 * checkpoint: another writer (a zombie owner, the next owner after a
 * rebalance) appended in between, and the store must import that before it
 * decides anything more on the partition.
 *
 * Snapshots go to "<type>.snapshots" after the local commit, each naming the
 * events offset of the event it was taken at; restore imports the ones that
 * match the events it imports (see the restore section). Once they are
 * delivered the owner commits each partition's restore horizon (the offset
 * below which snapshots cover every aggregate) in the restore reader's group,
 * so that a new owner reads live state, not history (processor_restore.c).
 */
#include "processor_int.h"

void es_proc_log_error(es_processor_t *p, const es_error_t *e, const char *what) {
    es_logf(p->cfg, ES_LOG_ERROR, "command processor: %s: %s", what, e->message);
}

/* The type whose "<type>.<suffix>" topic this is; n_types when none. */
size_t es_proc_type_of_topic(const es_processor_t *p, const char *topic, const char *suffix) {
    for (size_t i = 0; i < p->n_types; i++) {
        size_t tl = strlen(p->types[i].def->type);
        if (!strncmp(topic, p->types[i].def->type, tl) && topic[tl] == '.' &&
            !strcmp(topic + tl + 1, suffix))
            return i;
    }
    return p->n_types;
}

owned *es_proc_find_owned(es_processor_t *p, size_t type, int32_t partition) {
    for (size_t i = 0; i < p->n_owned; i++)
        if (p->owned[i].type == type && p->owned[i].partition == partition)
            return &p->owned[i];
    return NULL;
}

/* ---- rebalance -------------------------------------------------------------------------- */

void es_proc_add_owned(es_processor_t *p, const char *topic, int32_t partition) {
    size_t t = es_proc_type_of_topic(p, topic, "commands");
    if (t == p->n_types || es_proc_find_owned(p, t, partition))
        return;
    if (p->n_owned == p->cap_owned) {
        size_t cap = p->cap_owned ? p->cap_owned * 2 : 16;
        owned *o = realloc(p->owned, cap * sizeof *o);
        if (!o)
            return; /* restored lazily when a record of it comes (see es_proc_ensure_restored) */
        p->owned = o;
        p->cap_owned = cap;
    }
    p->owned[p->n_owned++] = (owned){t, partition, 0, NULL};
    es_proc_mx_owned(p);
}

static void forget_owned(es_processor_t *p, const char *topic, int32_t partition) {
    size_t t = es_proc_type_of_topic(p, topic, "commands");
    owned *o = es_proc_find_owned(p, t, partition);
    if (o) {
        es_horizon_free(o->hz);
        *o = p->owned[--p->n_owned];
    }
    es_proc_mx_owned(p);
}

/* Runs inside rd_kafka_consumer_poll, on the thread polling the processor. */
void es_proc_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t e,
                          rd_kafka_topic_partition_list_t *parts, void *opaque) {
    es_processor_t *p = opaque;
    es_error_t err = {0};
    int coop = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");
    rd_kafka_error_t *ke = NULL;
    rd_kafka_resp_err_t re = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        /* All noted first, so that the health of a processor part way through its restores
         * counts every partition still to come. */
        for (int i = 0; i < parts->cnt; i++)
            es_proc_add_owned(p, parts->elems[i].topic, parts->elems[i].partition);
        es_mx_set(&p->mx.joined, 1);
        for (int i = 0; i < parts->cnt; i++) {
            owned *o =
                es_proc_find_owned(p, es_proc_type_of_topic(p, parts->elems[i].topic, "commands"),
                                   parts->elems[i].partition);
            if (o && es_proc_restore(p, o, &err) != ES_OK)
                es_proc_log_error(p, &err,
                                  "restore on assignment (retried before the partition's "
                                  "first command)");
        }
        if (coop)
            ke = rd_kafka_incremental_assign(rk, parts);
        else
            re = rd_kafka_assign(rk, parts);
    } else {
        if (p->n_batch && !p->in_batch && es_proc_process_batch(p, NULL, &err) != ES_OK)
            es_proc_log_error(p, &err, "finishing the batch before giving partitions up");
        if (!p->in_batch)
            es_proc_settle(p, SIDE_FLUSH_MS);
        for (int i = 0; i < parts->cnt; i++)
            forget_owned(p, parts->elems[i].topic, parts->elems[i].partition);
        if (coop)
            ke = rd_kafka_incremental_unassign(rk, parts);
        else
            re = rd_kafka_assign(rk, NULL);
    }
    if (ke) {
        es_logf(p->cfg, ES_LOG_ERROR, "command processor: rebalance: %s",
                rd_kafka_error_string(ke));
        rd_kafka_error_destroy(ke);
    }
    if (re)
        es_logf(p->cfg, ES_LOG_ERROR, "command processor: rebalance: %s", rd_kafka_err2str(re));
}

/* ---- lifecycle -------------------------------------------------------------------------- */

/* A consumer in group (rebalance: the commands consumer, with the group's callbacks), or, group
 * NULL, a producer. */
static es_err make_handle(es_processor_t *p, const char *group, int txn, int rebalance,
                          rd_kafka_t **out, es_error_t *err) {
    es_kafka_opts_t o = {.role = group ? ES_KAFKA_CONSUMER : ES_KAFKA_PRODUCER,
                         .group = group,
                         .offset_reset = "earliest",
                         .fetch_wait_ms = WAIT_MS,
                         .transactional = txn,
                         .opaque = p,
                         .dr_cb = group ? NULL : es_proc_dr_cb,
                         .rebalance_cb = rebalance ? es_proc_rebalance_cb : NULL,
                         .commit_cb = rebalance ? es_proc_commit_cb : NULL,
                         /* polled on every es_processor_poll (below): its queue is a gauge */
                         .stats_name = group ? NULL : "processor"};
    return es_kafka_new(p->cfg, &o, out, err);
}

static es_err open_local(es_processor_t *p, es_engine_t *engine, es_error_t *err) {
    es_err e = ES_OK;
    if (!(p->local_cfg = es_config_dup(p->cfg)))
        return es_fail(err, ES_ENOMEM, "out of memory");
    e = es_config_set(p->local_cfg, "backend", "embedded", err);
    if (e == ES_OK)
        e = es_config_set(p->local_cfg, "db", es_config_get(p->cfg, "state.db"), err);
    if (e == ES_OK) /* a cache rebuildable from Kafka: no fsync per batch */
        e = es_config_set(p->local_cfg, "sqlite.synchronous", "normal", err);
    if (e == ES_OK)
        e = es_engine_new_local(p->local_cfg, &p->local, err);
    size_t n =
        es_engine_registration(engine, 0, &(const es_aggregate_def *){NULL}, &(void *){NULL});
    if (e == ES_OK && n == 0)
        e = es_fail(err, ES_EINVAL,
                    "es_processor_new: the engine has no aggregate types; register them first");
    if (e == ES_OK && !(p->types = calloc(n, sizeof *p->types)))
        e = es_fail(err, ES_ENOMEM, "out of memory");
    for (size_t i = 0; e == ES_OK && i < n; i++) {
        agg_type *t = &p->types[i];
        es_engine_registration(engine, i, &t->def, &t->opaque);
        snprintf(t->events_topic, sizeof t->events_topic, "%s.events", t->def->type);
        snprintf(t->snapshots_topic, sizeof t->snapshots_topic, "%s.snapshots", t->def->type);
        e = es_engine_register(p->local, t->def, t->opaque, err);
        p->n_types = i + 1;
    }
    if (e == ES_OK)
        e = es_engine_copy_schema_versions(p->local, engine, err);
    return e;
}

/* The event types of an aggregate definition, in a list the caller frees with free. */
static es_err event_types(const es_aggregate_def *def, const ProtobufCMessageDescriptor ***out,
                          size_t *n, es_error_t *err) {
    *n = 0;
    for (size_t i = 0; def->events && def->events[i]; i++)
        ++*n;
    for (size_t i = 0; def->evolvers && def->evolvers[i].event; i++)
        ++*n;
    *out = calloc(*n + 1, sizeof **out);
    if (!*out)
        return es_fail(err, ES_ENOMEM, "out of memory");
    size_t k = 0;
    for (size_t i = 0; def->events && def->events[i]; i++)
        (*out)[k++] = def->events[i];
    for (size_t i = 0; def->evolvers && def->evolvers[i].event; i++)
        (*out)[k++] = def->evolvers[i].event;
    return ES_OK;
}

/* With schema.registry.url set: registers the envelope under each events topic's subject and
 * every event type under its name, each after the registry's compatibility verdict, before
 * anything connects to Kafka, so that a refusal leaves nothing produced (docs/registry.md). */
static es_err open_registry(es_processor_t *p, es_error_t *err) {
    es_err e = es_registry_open(p->cfg, &p->registry, err);
    if (e != ES_OK || !p->registry)
        return e;
    if (!(p->envelope_ids = calloc(p->n_types, sizeof *p->envelope_ids)))
        return es_fail(err, ES_ENOMEM, "out of memory");
    for (size_t i = 0; e == ES_OK && i < p->n_types; i++) {
        const ProtobufCMessageDescriptor **events = NULL;
        size_t n = 0;
        e = event_types(p->types[i].def, &events, &n, err);
        if (e == ES_OK)
            e = es_registry_put_aggregate(p->registry, type_name(p, i), events, n,
                                          &p->envelope_ids[i], err);
        free(events);
    }
    if (e != ES_OK)
        es_error_prefix(err, "the command processor cannot start: ");
    return e;
}

static es_err open_kafka(es_processor_t *p, es_error_t *err) {
    char group[320];
    const char *svc = es_config_get(p->cfg, "service.name");
    p->transactional = es_config_get(p->cfg, "kafka.transactional.id") != NULL;
    snprintf(group, sizeof group, "%s.commands", svc);
    es_err e = make_handle(p, group, 0, 1, &p->consumer, err);
    snprintf(group, sizeof group, "%s.eskit-restore", svc);
    if (e == ES_OK)
        e = make_handle(p, group, 0, 0, &p->reader, err);
    if (e == ES_OK)
        e = make_handle(p, NULL, p->transactional, 0, &p->producer, err);
    if (e == ES_OK && p->transactional) /* replies and snapshots stay outside transactions */
        e = make_handle(p, NULL, 0, 0, &p->side, err);
    else
        p->side = p->producer;
    if (e == ES_OK && p->transactional) {
        rd_kafka_error_t *ke = rd_kafka_init_transactions(p->producer, REQUEST_TIMEOUT_MS);
        if (ke)
            e = es_kafka_fail_error(p->producer, ke, NULL, err, "initialising Kafka transactions");
    }
    if (e != ES_OK)
        return e;
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new((int)p->n_types);
    for (size_t i = 0; i < p->n_types; i++) {
        char topic[TOPIC_MAX];
        snprintf(topic, sizeof topic, "%s.commands", type_name(p, i));
        rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
    }
    rd_kafka_resp_err_t ke = rd_kafka_subscribe(p->consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    return ke ? es_kafka_fail(p->consumer, ke, NULL, err, "subscribing to the commands topics")
              : ES_OK;
}

es_err es_processor_new(const es_config_t *cfg, es_engine_t *engine, es_processor_t **out,
                        es_error_t *err) {
    if (!out || !engine)
        return es_fail(err, ES_EINVAL, "es_processor_new: engine and out are required");
    *out = NULL;
    if (!cfg || !es_config_get(cfg, "brokers"))
        return es_fail(err, ES_EINVAL,
                       "the command processor needs the config key brokers (ESKIT_BROKERS), e.g. "
                       "brokers=localhost:9092");
    es_processor_t *p = calloc(1, sizeof *p);
    if (!p || !(p->own_cfg = es_config_dup(cfg))) {
        free(p);
        return es_fail(err, ES_ENOMEM, "out of memory creating a command processor");
    }
    p->cfg = p->own_cfg;
    es_stop_init(&p->stop);
    es_err e = open_local(p, engine, err);
    if (e == ES_OK)
        e = open_registry(p, err);
    if (e == ES_OK && !(p->batch = calloc(BATCH_MAX, sizeof *p->batch)))
        e = es_fail(err, ES_ENOMEM, "out of memory creating a command processor");
    if (e == ES_OK)
        e = es_proc_mx_open(p, err);
    if (e == ES_OK)
        e = open_kafka(p, err);
    if (e != ES_OK) {
        es_processor_destroy(p);
        return e;
    }
    *out = p;
    return ES_OK;
}

void es_processor_destroy(es_processor_t *p) {
    if (!p)
        return;
    es_proc_mx_close(p); /* first: a scrape may be reading the processor */
    if (p->consumer) {
        rd_kafka_consumer_close(p->consumer); /* leaves the group: revoke finishes any batch */
        es_kafka_destroy(p->consumer, 0);
    }
    es_proc_drop_batch(p);
    if (p->unsettled) /* the consumer is closed: a later owner answers them as duplicates */
        rd_kafka_topic_partition_list_destroy(p->unsettled);
    if (p->side && p->side != p->producer) {
        rd_kafka_flush(p->side, SIDE_FLUSH_MS);
        es_kafka_destroy(p->side, 0);
    }
    if (p->producer) {
        rd_kafka_flush(p->producer, SIDE_FLUSH_MS);
        es_kafka_destroy(p->producer, 0);
    }
    es_proc_cover_snapshots(p, 0);
    free(p->cover);
    if (p->hz_queue)
        rd_kafka_queue_destroy(p->hz_queue);
    es_kafka_destroy(p->reader, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    es_engine_destroy(p->local);
    es_config_destroy(p->local_cfg);
    es_config_destroy(p->own_cfg);
    es_registry_destroy(p->registry);
    free(p->envelope_ids);
    free(p->types);
    for (size_t i = 0; i < p->n_owned; i++)
        es_horizon_free(p->owned[i].hz);
    free(p->owned);
    free(p->prod);
    free(p->batch);
    free(p);
}

/* A consumer error: fatal ones end the poll, the rest librdkafka retries by itself. */
static es_err consumer_error(es_processor_t *p, const rd_kafka_message_t *m, es_error_t *err) {
    char fatal[256];
    if (rd_kafka_fatal_error(p->consumer, fatal, sizeof fatal))
        return es_fail(err, ES_EKAFKA, "the command consumer failed for good: %s", fatal);
    es_logf(p->cfg, ES_LOG_WARNING, "command processor: %s%s%s",
            m->rkt ? rd_kafka_topic_name(m->rkt) : "", m->rkt ? ": " : "",
            rd_kafka_message_errstr(m));
    return ES_OK;
}

es_err es_processor_poll(es_processor_t *p, int timeout_ms, size_t *handled, es_error_t *err) {
    size_t n = 0;
    es_err e = ES_OK;
    if (handled)
        *handled = 0;
    /* The producers' events between batches: late delivery reports (ignored), their
     * statistics (kafka/stats.h), which would otherwise wait for the next batch's flush. */
    rd_kafka_poll(p->producer, 0);
    if (p->side != p->producer)
        rd_kafka_poll(p->side, 0);
    /* The last batch's replies wait for their acknowledgements only while no command does. */
    rd_kafka_message_t *m = rd_kafka_consumer_poll(p->consumer, p->unsettled ? 0 : timeout_ms);
    if (!m && p->unsettled) {
        es_proc_settle(p, SIDE_FLUSH_MS);
        m = rd_kafka_consumer_poll(p->consumer, timeout_ms);
    }
    while (m && e == ES_OK) {
        if (m->err) {
            e = consumer_error(p, m, err);
            rd_kafka_message_destroy(m);
        } else {
            p->batch[p->n_batch++] = m;
        }
        if (p->n_batch == BATCH_MAX)
            break;
        m = rd_kafka_consumer_poll(p->consumer, 0);
    }
    if (p->n_batch && e == ES_OK)
        e = es_proc_process_batch(p, &n, err);
    else
        es_proc_drop_batch(p); /* a fatal consumer error: nothing more is committed */
    if (!n)
        es_proc_commit_horizons(p); /* the last batch's, once due */
    if (handled)
        *handled = n;
    return e;
}

/* A topic not there (ES_ENOTFOUND) is one more failure the processor rides out: its topics
 * may be created after it starts (processor.h). */
static es_err poll_once(void *opaque, int timeout_ms, es_error_t *err) {
    es_err e = es_processor_poll(opaque, timeout_ms, NULL, err);
    return e == ES_ENOTFOUND ? ES_ERETRY : e;
}

es_err es_processor_run(es_processor_t *p, es_error_t *err) {
    if (!p)
        return es_fail(err, ES_EINVAL, "es_processor_run: processor is NULL");
    es_err e = es_run_loop(poll_once, p, &p->stop, p->cfg, "command processor: ", err);
    es_stop_clear(&p->stop); /* the stop ended this run only (processor.h) */
    return e;
}

void es_processor_stop(es_processor_t *p) {
    es_stop_request(&p->stop);
}

void es_processor_stats(const es_processor_t *p, es_processor_stats_t *out) {
    es_processor_t *q = (es_processor_t *)p; /* atomic loads take non-const pointers in C11 */
    *out = (es_processor_stats_t){atomic_load(&q->stats.commands),
                                  atomic_load(&q->stats.restores),
                                  atomic_load(&q->stats.events_imported),
                                  atomic_load(&q->stats.events_skipped),
                                  atomic_load(&q->stats.snapshots_imported),
                                  atomic_load(&q->stats.snapshots_malformed),
                                  atomic_load(&q->stats.snapshots_unused),
                                  atomic_load(&q->stats.stale),
                                  atomic_load(&q->stats.gaps)};
}
