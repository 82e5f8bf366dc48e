/*
 * es_config_t: one key/value configuration object, librdkafka style. Keys are
 * checked when set; an unknown key or a bad value is an error naming the key.
 * Sources, in increasing precedence: defaults, an eskit.conf file
 * (es_config_load_file), ESKIT_* environment variables (es_config_load_env),
 * explicit es_config_set calls made after those.
 *
 * Keys (every one of config.c's table; tests/unit/test_config.c checks this list and the
 * README's against it):
 *   backend              embedded | kafka   (default: kafka when brokers is set)
 *   brokers              Kafka bootstrap servers
 *   db                   path of the embedded log's SQLite file (default: eskit.db)
 *   state.db             Kafka command processor: its local state store, a cache of the
 *                        partitions it owns, rebuilt from Kafka when lost (default: eskit-state.db)
 *   readmodel.db         the projectors' read-model database (default: eskit-read.db)
 *   saga.db              the saga coordinator's database: instances, outbox, checkpoints;
 *                        esctl sagas reads it (default: eskit-saga.db)
 *   schema.compatibility  backward | forward | full | none: how a new schema of a type must
 *                        relate to the versions the log's catalogue recorded (default:
 *                        backward; docs/schemas.md)
 *   schema.topic         Kafka: the schema catalogue's compacted topic (default: eskit.schemas)
 *   service.name         names consumer groups: <service>.<projector> (default: eskit)
 *   sqlite.synchronous   full | normal | off | extra (default: full)
 *   sqlite.busy.timeout.ms  how long a writer waits for the file lock (default: 10000)
 *   sqlite.heads.defer.events  embedded: events whose stream heads a writer keeps in memory
 *                           before writing es_heads; 0: at every commit (default: 16384)
 *   snapshot.every       snapshot after every N events; 0 = never (default: 1)
 *   idempotency.window.ms  how long a caller-chosen command id is remembered: a retry within
 *                        it is answered as a duplicate; 0 = forever (default: 86400000, 24 h;
 *                        docs/idempotency.md)
 *   idempotency.window.ids  at most this many command ids are remembered, the oldest
 *                        forgotten first; 0 = no count bound (default: 0)
 *   cache.aggregates     aggregates whose state a writer keeps in memory, and live instances
 *                        a saga coordinator keeps (default: 10000)
 *   execute.timeout.ms   Kafka backend: how long es_execute waits for its reply (default: 30000)
 *   projector.batch.size  events a runner applies in one read-model transaction (default: 500)
 *   projector.linger.ms  how long a runner waits for more events to fill a batch (default: 5)
 *   projector.retries    retries of an apply that returned ES_ERETRY (default: 3)
 *   projector.retry.backoff.ms  the first retry's wait, doubling (default: 50)
 *   projector.on.error   dlq | stop: what a failed apply does (default: dlq)
 *   projector.on.unknown  dlq | ignore: what an event type the module does not know does
 *                        (default: dlq)
 *   projector.crash.restarts  deaths of the process applying one event after which the
 *                        event is parked (default: 3)
 *   projector.apply.timeout.ms  the apply watchdog: an apply running longer than this ends
 *                        the process (SIGKILL, after a critical log line), since a C function
 *                        cannot be stopped from outside; the crash guard counts it as a death,
 *                        so after projector.crash.restarts restarts (a supervisor's, or the
 *                        operator's for esctl) the event is parked. 0 = off (default: 0)
 *   projector.log.order  on | off | auto: the runner's log-order rule (default: auto, on for
 *                        a partitioned backend: Kafka)
 *   projector.path       directories projector modules are loaded from (loads code: see Trust)
 *   replay.batch.size    events a replay applies in one transaction (default: 20000)
 *   saga.retention.ms    how long ended saga instances are kept; 0 = forever (default: 7 days)
 *   topics.aggregates    aggregate types, for esctl topics plan and esctl verify on Kafka
 *   topics.throughput    events per second the plan sizes topics for (default: 1000)
 *   topics.partition.throughput  events per second one partition takes (default: 5000)
 *   topics.consumers     consumers the plan gives each topic at least (default: 1)
 *   schema.registry.url  Confluent Schema Registry base URL (http:// or https://): the envelope
 *                        and event types are registered there at processor start (off when
 *                        unset; docs/registry.md)
 *   schema.registry.framing  none | confluent: Kafka event record values in Confluent's wire
 *                        format (magic byte, schema id, message indexes) (default: none)
 *   schema.registry.timeout.ms  one registry request's timeout (default: 5000)
 *   schema.registry.retries  retries of a registry request that could not connect, timed out
 *                        or got a 5xx, with a doubling backoff from 100 ms (default: 3)
 *   schema.registry.basic.auth.user.info  user:password for the registry's basic auth; a
 *                        secret: never printed
 *   types.modules        types modules (<eskit/types.h>) esctl decodes payloads and folds
 *                        states with: a comma-separated list of names (searched as projector
 *                        modules are) or paths (loads code: see Trust)
 *   metrics.enabled      true | false: components count their work and join the process's
 *                        metrics registry (<eskit/metrics.h>) (default: true)
 *   metrics.listen       HOST:PORT the library serves GET /metrics and GET /healthz on, from a
 *                        thread of its own, while a component with this config lives (off when
 *                        unset; port 0 picks a free one, es_metrics_port tells it)
 *   metrics.kafka.interval.ms  how often librdkafka's statistics refresh the eskit_kafka_*
 *                        gauges; 0 = never (default: 5000)
 *   health.max.lag       records a runner may be behind its log's end on a partition and still
 *                        be healthy (/healthz, es_metrics_health) (default: 1000)
 *   kafka.<property>     passed to librdkafka as <property>, checked by it
 *
 * Environment: ESKIT_ plus the key upper-cased with '.' as '_' (ESKIT_DB,
 * ESKIT_BROKERS, ESKIT_SNAPSHOT_EVERY); ESKIT_KAFKA_LINGER_MS sets
 * kafka.linger.ms. ESKIT_CONFIG names the config file.
 *
 * Trust (docs/security.md): a file named by the process (es_config_load_file,
 * ESKIT_CONFIG, esctl --config) is read as it is. An eskit.conf found in the
 * working directory is read only when the effective user owns it and its
 * directory and no one else can write either (a sticky directory owned by root,
 * as /tmp, is fine), and never for a key that loads code: projector.path, types.modules,
 * kafka.plugin.library.paths, kafka.ssl.engine.location, kafka.ssl.engine.id,
 * kafka.ssl.providers, kafka.sasl.kerberos.{kinit.cmd, keytab, principal}.
 * Those come only from code, the environment or a named file, and checking
 * them never loads anything.
 */
#ifndef ESKIT_CONFIG_H
#define ESKIT_CONFIG_H

#include <eskit/error.h>

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct es_config es_config_t;

/* Log levels, as syslog's. ES_LOG_CRITICAL: the library is about to end the process (the apply
 * watchdog, projector.apply.timeout.ms); the callback may end it itself, with its own status. */
enum {
    ES_LOG_CRITICAL = 2,
    ES_LOG_ERROR = 3,
    ES_LOG_WARNING = 4,
    ES_LOG_INFO = 6,
    ES_LOG_DEBUG = 7
};

/* Called for every library log line, on the thread that logs it: a caller's, a thread of the
 * library's (the apply watchdog), or one of librdkafka's own (its broker and main threads log
 * through it). So it must be safe to call from several threads at once, and must not call back
 * into eskit other than the stop functions. */
typedef void es_log_cb(int level, const char *message, void *opaque);

/* The key table: the i-th key's name and default (NULL: none) when i is below the count it
 * returns (kafka.<property> is not in it). key and def may be NULL. */
ES_API size_t es_config_key(size_t i, const char **key, const char **def);

/* A config holding the defaults. Caller frees with es_config_destroy. */
ES_API es_config_t *es_config_new(void);
/* Frees the config (NULL is fine). */
ES_API void es_config_destroy(es_config_t *cfg);
/* A copy of cfg, log and span callbacks included. Caller frees with es_config_destroy. */
ES_API es_config_t *es_config_dup(const es_config_t *cfg);

/* Sets key to value after checking both. */
ES_API es_err es_config_set(es_config_t *cfg, const char *key, const char *value, es_error_t *err);
/* The value of key (the default when unset), or NULL for an unknown or unset key. */
ES_API const char *es_config_get(const es_config_t *cfg, const char *key);
/* Integer value of a numeric key. */
ES_API long long es_config_get_int(const es_config_t *cfg, const char *key);

/* Reads "key = value" lines of any length ('#' starts a comment) from the regular file the
 * caller names, trusted as named; errors name file and line. */
ES_API es_err es_config_load_file(es_config_t *cfg, const char *path, es_error_t *err);
/* Applies ESKIT_* environment variables; an unknown ESKIT_ variable is an error. */
ES_API es_err es_config_load_env(es_config_t *cfg, es_error_t *err);
/* The usual sources: $ESKIT_CONFIG, or else ./eskit.conf when present and trusted (see
 * above; an untrusted one is an error saying why), then the environment. */
ES_API es_err es_config_load_sources(es_config_t *cfg, es_error_t *err);

/* Calls (key, value, opaque) for every key set explicitly, in key order. */
ES_API void es_config_foreach(const es_config_t *cfg,
                              void (*fn)(const char *key, const char *value, void *opaque),
                              void *opaque);

/* Sets the log callback and its opaque (NULL: no logging); see es_log_cb for its thread. */
ES_API void es_config_set_log_cb(es_config_t *cfg, es_log_cb *cb, void *opaque);

#ifdef __cplusplus
}
#endif
#endif
