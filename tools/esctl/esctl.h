/*
 * What the esctl verbs share: parsed options, the one-line error reporter,
 * config and store loading, and the event printing of the `events` verb
 * (reused by `dlq show`). main.c parses and dispatches; each verb lives in
 * its own file (events.c, state.c, projectors.c for replay and lag, dlq.c,
 * topics.c, devbroker.c, sagas.c, verify.c, schemas.c, metrics.c,
 * trace.c).
 *
 * Exit codes are part of the interface, scripts rely on them: 0 success,
 * 1 a runtime failure, 2 bad usage. Every failure prints exactly one line on
 * stderr, "esctl: <reason>".
 */
#ifndef ESCTL_H
#define ESCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <eskit/eskit.h>
#include <eskit/topics.h>
#include "pbprint.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

#define MAX_TYPES_MODULES 16
#define MAX_PLAN_TYPES 64

typedef enum verb_id {
    VERB_NONE,
    VERB_EVENTS,
    VERB_REPLAY,
    VERB_LAG,
    VERB_DLQ,
    VERB_TOPICS,
    VERB_DEV_BROKER,
    VERB_SAGAS,
    VERB_VERIFY,
    VERB_STATE,
    VERB_SCHEMAS,
    VERB_METRICS,
    VERB_TRACE,
    VERB_HELP
} verb_id;

typedef struct options {
    const char *db;
    const char *readmodel;
    const char *saga_db;
    const char *config;
    const char *types[MAX_TYPES_MODULES];
    size_t n_types;
    bool help, version, verbose, json, all;
    bool accept_end; /* verify --accept-end */
    bool exact;      /* lag --exact */
    uint64_t from;
    const char *projector;    /* dlq list --projector */
    const char *saga, *state; /* sagas --saga, sagas list --state */
    /* topics, dev-broker: raw values, checked by the verb */
    const char *throughput, *partition_throughput, *consumers, *brokers, *partitions;
    const char *record_bytes, *records_per_day; /* topics plan: sizing */
    bool from_log;                              /* topics plan --from-log */
    const char *bootstrap_file;
    const char *output;               /* metrics --output */
    const char *plan[MAX_PLAN_TYPES]; /* dev-broker --plan (repeatable) */
    size_t n_plan;
    const char *verb;
    verb_id verb_id;
    const char **pos; /* positional arguments after the verb */
    size_t n_pos;
} options;

/* Prints "esctl: <message>" on stderr as one line: control characters become blanks, C1 controls
 * and invalid UTF-8 \xNN. */
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "<what> '<arg>' for '<verb>'; run 'esctl <verb> --help'"; returns EXIT_USAGE. */
int usage_error(const options *o, const char *what, const char *arg);
/* The <aggregate-type> <id> arguments of verb (events, state): EXIT_OK, or EXIT_USAGE after
 * one line saying what is wrong. */
int check_type_id_args(const options *o, const char *verb);
/* Parses a decimal number without sign or trailing characters; 0 or -1. */
int parse_u64(const char *s, uint64_t *out);

/* The config from file, environment and flags (--db, --readmodel, --saga-db). Caller destroys. */
int load_config(const options *o, es_config_t **out);
/* EXIT_FAIL (with the line printed) unless the embedded store's file exists: a typo in --db
 * must not leave a fresh empty database behind. */
int check_store_exists(const es_config_t *cfg);
/* The same for the read-model database; hint says how it comes to exist. */
int check_readmodel_exists(const es_config_t *cfg);
/* Opens the store the config names read-only, for inspection (checking the file first). */
int open_store(const es_config_t *cfg, es_store_t **out);
/* The types modules of --types, then of the config key types.modules: esctl's only source of
 * payload types and aggregate definitions. EXIT_FAIL (said) when one does not load. Caller
 * destroys. */
int load_types(const options *o, es_config_t *cfg, pb_registry **out);
/* Notes a payload whose type no loaded module knows (printed as bytes). */
void note_unknown_type(const char *type);
/* The one hint line on stderr saying how to make types known: about the unknown payload types
 * noted (nothing when none), or, with what, about that aggregate type. */
void types_hint(const pb_registry *types, const char *what);

/* ISO-8601 UTC with milliseconds, e.g. 2024-05-01T12:00:00.123Z. */
void put_time(pb_buf *b, int64_t us);
/* s as text for a terminal, padded with blanks to width columns: control characters (C1 too) and
 * invalid UTF-8 as \xNN, a backslash as \\, so data from a file stays on its line and cannot
 * drive the terminal. Every string from a file goes out through this or pb_buf_json_string. */
void put_clean(pb_buf *b, const char *s, int width);
/* The columns put_clean(b, s, 0) takes. */
int clean_width(const char *s);
/* put_clean for a message (no padding), keeping backslashes: the library's messages are
 * escaped already, and their \xNN must not turn into \\xNN. */
void put_clean_message(pb_buf *b, const char *s);
/* put_time, or "-" for 0; padded to width (0: no padding). */
void put_time_or_dash(pb_buf *b, int64_t us, int width);
/* JSON members: "key": "value"; json_opt: null when value is empty; json_time: an ISO time or
 * null for 0. */
void json_str(pb_buf *b, const char *key, const char *value);
void json_opt(pb_buf *b, const char *key, const char *value);
void json_time(pb_buf *b, const char *key, int64_t us);
/* A JSON array of n objects, one per line; item writes the members of items[i] (size bytes
 * each). */
void json_objects(pb_buf *b, const void *items, size_t n, size_t size,
                  void (*item)(pb_buf *b, const void *it));
/* A parked event's place in the log: "<topic>[<partition>]@<offset>". */
void put_position(pb_buf *b, const es_dlq_entry_t *e);
/* The payload's fields as name=value (or a note saying why not); false when the payload is of
 * a known type but its bytes do not decode. */
bool put_payload_text(pb_buf *b, const pb_registry *types, const es_event_t *ev);
/* The event as the JSON object `esctl events --json` prints; false as above. */
bool put_event_json(pb_buf *b, const pb_registry *types, const es_event_t *ev);
/* Writes the whole buffer to stdout; false (after saying why) when that failed. */
bool write_out(const pb_buf *b);

/* "TYPE[:EVENTS_PER_S[:CONSUMERS]]" as a load (topics, dev-broker); *owned holds the type
 * string, caller frees. EXIT_USAGE (said) when malformed. */
int parse_topic_load(const char *arg, es_topic_load_t *load, char **owned);
/* value of flag as a whole number from min to max; EXIT_USAGE (said) otherwise. */
int parse_count(const char *flag, const char *value, long long min, long long max, long long *out);

extern const char events_help[];
extern const char replay_help[];
extern const char lag_help[];
extern const char dlq_help[];
extern const char topics_help[];
extern const char dev_broker_help[];
extern const char sagas_help[];
extern const char verify_help[];
extern const char state_help[];
extern const char schemas_help[];
extern const char metrics_help[];
extern const char trace_help[];

int cmd_events(const options *o);
int cmd_replay(const options *o);
int cmd_lag(const options *o);
int cmd_dlq(const options *o);
int cmd_topics(const options *o);
int cmd_dev_broker(const options *o);
int cmd_sagas(const options *o);
int cmd_verify(const options *o);
int cmd_state(const options *o);
int cmd_schemas(const options *o);
int cmd_metrics(const options *o);
int cmd_trace(const options *o);

#endif
