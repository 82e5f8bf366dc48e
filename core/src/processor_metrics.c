/* The command processor's metrics and health (docs/observability.md). The polling thread keeps
 * copies in atomics (p->mx) as partitions come, go and are restored; the scrape thread reads only
 * those and the stats counters, never the owned array the rebalance callback changes. */
#include "processor_int.h"

static const char *service(const es_processor_t *p) {
    return es_config_get(p->cfg, "service.name");
}

static void collect(void *self, es_mx_sink *k) {
    es_processor_t *p = self;
    char l[128], l2[160];
    es_mx_labels(l, sizeof l, "service", service(p), (const char *)NULL);
    uint64_t n_owned = es_mx_get(&p->mx.owned), restoring = es_mx_get(&p->mx.restoring);
    uint64_t started = es_mx_get(&p->mx.restore_started_ns);
    es_mx_sample(k, "eskit_processor_ready", ES_MX_GAUGE,
                 "1 when the processor is in its group with every partition it owns restored.", l,
                 es_mx_get(&p->mx.joined) && !restoring ? 1 : 0);
    es_mx_sample(k, "eskit_processor_partitions_owned", ES_MX_GAUGE,
                 "Commands partitions assigned to this processor.", l, (double)n_owned);
    es_mx_sample(k, "eskit_processor_partitions_restoring", ES_MX_GAUGE,
                 "Owned commands partitions not restored yet.", l, (double)restoring);
    es_mx_sample(k, "eskit_processor_restores_total", ES_MX_COUNTER, "Partitions restored.", l,
                 (double)atomic_load(&p->stats.restores));
    es_mx_sample_hist(k, "eskit_processor_restore_duration_seconds",
                      "Time to restore one partition.", l, &p->mx.restore);
    es_mx_sample(k, "eskit_processor_restore_running_seconds", ES_MX_GAUGE,
                 "Age of the restore under way; 0 when none.", l,
                 started ? (double)(es_mono_ns() - started) * 1e-9 : 0);
    const char *help = "Records restore imported into the state store.";
    es_mx_sample(
        k, "eskit_processor_records_imported_total", ES_MX_COUNTER, help,
        es_mx_labels(l2, sizeof l2, "service", service(p), "kind", "event", (const char *)NULL),
        (double)atomic_load(&p->stats.events_imported));
    es_mx_sample(
        k, "eskit_processor_records_imported_total", ES_MX_COUNTER, help,
        es_mx_labels(l2, sizeof l2, "service", service(p), "kind", "snapshot", (const char *)NULL),
        (double)atomic_load(&p->stats.snapshots_imported));
    uint64_t skipped = atomic_load(&p->stats.events_skipped), stale = atomic_load(&p->stats.stale);
    const struct {
        const char *reason;
        uint64_t n;
    } skips[] = {{"undecodable", skipped > stale ? skipped - stale : 0},
                 {"stale", stale},
                 {"malformed_snapshot", atomic_load(&p->stats.snapshots_malformed)},
                 {"unused_snapshot", atomic_load(&p->stats.snapshots_unused)},
                 /* not even read: below where the snapshots and the idempotency window let
                  * restore start */
                 {"covered", atomic_load(&p->stats.records_not_read)}};
    for (size_t i = 0; i < sizeof skips / sizeof *skips; i++)
        es_mx_sample(k, "eskit_processor_records_skipped_total", ES_MX_COUNTER,
                     "Records restore skipped, by reason.",
                     es_mx_labels(l2, sizeof l2, "service", service(p), "reason", skips[i].reason,
                                  (const char *)NULL),
                     (double)skips[i].n);
    es_mx_sample(k, "eskit_processor_commands_total", ES_MX_COUNTER, "Command records handled.", l,
                 (double)atomic_load(&p->stats.commands));
    es_mx_sample(k, "eskit_processor_produce_errors_total", ES_MX_COUNTER,
                 "Event, snapshot and reply records that failed to produce.", l,
                 (double)es_mx_get(&p->mx.produce_errors));
    es_mx_sample(k, "eskit_processor_replies_sent_total", ES_MX_COUNTER, "Replies produced.", l,
                 (double)es_mx_get(&p->mx.replies));
}

static void health(void *self, es_mx_health *h) {
    es_processor_t *p = self;
    uint64_t restoring = es_mx_get(&p->mx.restoring);
    if (!es_mx_get(&p->mx.joined))
        es_mx_unhealthy(h, "processor %s: not in consumer group %s.commands yet", service(p),
                        service(p));
    else if (restoring)
        es_mx_unhealthy(h, "processor %s: restoring %llu of its %llu partition(s)", service(p),
                        (unsigned long long)restoring, (unsigned long long)es_mx_get(&p->mx.owned));
}

es_err es_proc_mx_open(es_processor_t *p, es_error_t *err) {
    es_mx_hist_init(&p->mx.restore, &es_mx_long_seconds);
    return es_mx_register(p->cfg, collect, health, p, &p->mx.src, err);
}

void es_proc_mx_close(es_processor_t *p) {
    es_mx_unregister(p->mx.src);
    p->mx.src = NULL;
}

void es_proc_mx_owned(es_processor_t *p) {
    uint64_t restoring = 0;
    for (size_t i = 0; i < p->n_owned; i++)
        restoring += !p->owned[i].restored;
    es_mx_set(&p->mx.owned, p->n_owned);
    es_mx_set(&p->mx.restoring, restoring);
}
