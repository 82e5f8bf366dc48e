/*
 * esctl: the operator's command line for an eskit store.
 *
 * This file parses the command line and dispatches to the verbs; esctl.h
 * describes what they share (exit codes, the one-line error rule).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "esctl.h"

static const char main_help[] =
    "usage: esctl [global options] <command> [arguments]\n"
    "\n"
    "Operator tool for an eskit event store and its read models.\n"
    "\n"
    "Commands:\n"
    "  events <aggregate-type> <id>   print an aggregate's events, decoded\n"
    "  state <aggregate-type> <id>    print an aggregate's current state, folded\n"
    "  replay <projector>             rebuild a projector's read model from the log\n"
    "  lag                            show how far each projector is behind the log\n"
    "  dlq list                       list events parked in the dead-letter queue\n"
    "  dlq show <id>                  print one parked event, decoded\n"
    "  dlq redrive <projector> [id..] apply parked events of a projector again\n"
    "  topics plan [TYPE...]          the Kafka topics of aggregate types: partitions,\n"
    "                                 replication, retention\n"
    "  topics apply [TYPE...]         create missing topics on the cluster, report drift\n"
    "  sagas list                     list saga instances: state, step, deadline\n"
    "  sagas show <id>                print a saga instance's history, one transition a line\n"
    "  verify [TYPE...]               check a log end to end: integrity, envelopes, versions\n"
    "  schemas list                   the log's schema catalogue: every type, its versions\n"
    "  schemas show <type> [version]  one recorded schema, every field\n"
    "  schemas check <module.so>      would this build's types break the log? (exit 1)\n"
    "  schemas diff <type> <v1> <v2>  every change between two versions of a type\n"
    "  metrics [--output FILE]        lag, DLQ depth, saga states and log size in the\n"
    "                                 Prometheus text format, for node_exporter\n"
    "  trace <id>                     the causal tree of one business transaction: its\n"
    "                                 commands, events, saga transitions (by trace id,\n"
    "                                 correlation id or command id)\n"
    "  dev-broker                     run librdkafka's mock Kafka cluster for development\n"
    "  help [command]                 show help for esctl or a command\n"
    "\n"
    "Global options (accepted before or after the command; so are a command's own):\n"
    "  --db FILE         SQLite store to read (overrides ESKIT_DB and eskit.conf)\n"
    "  --readmodel FILE  read-model database of the projectors (overrides\n"
    "                    ESKIT_READMODEL_DB and readmodel.db in eskit.conf;\n"
    "                    default eskit-read.db)\n"
    "  --saga-db FILE    the saga coordinator's database (overrides ESKIT_SAGA_DB and\n"
    "                    saga.db in eskit.conf; default eskit-saga.db)\n"
    "  --config FILE     config file to read instead of $ESKIT_CONFIG or ./eskit.conf\n"
    "  --types NAME|FILE.so  load a types module: a service's payload types and\n"
    "                    aggregate definitions, which esctl decodes and folds with\n"
    "                    (repeatable; also the config key types.modules, a comma\n"
    "                    list; a .so whose es_types_entry() returns an es_types_def,\n"
    "                    see <eskit/types.h>). esctl knows no type of its own.\n"
    "  -v, --verbose     print the library's log lines on stderr\n"
    "  -h, --help        show this help\n"
    "  --version         print the version\n"
    "\n"
    "Projector and types modules are found by name in projector.path\n"
    "(ESKIT_PROJECTOR_PATH), then in projectors/ beside esctl and in\n"
    "../lib/eskit/projectors; a path to a .so works too.\n"
    "\n"
    "Configuration: eskit.conf (or --config), then ESKIT_* environment variables,\n"
    "then command-line flags; later sources win. ./eskit.conf is read only when\n"
    "you own it and its directory and no one else can write them, and never for\n"
    "keys that load code (projector.path, types.modules,\n"
    "kafka.plugin.library.paths, ...): name such a file with --config. See\n"
    "docs/security.md.\n"
    "Exit status: 0 ok, 1 failure, 2 bad usage.\n";

typedef struct verb_spec {
    const char *name;
    verb_id id;
    const char *help;
    int (*run)(const options *o);
} verb_spec;

static const verb_spec verbs[] = {
    {"events", VERB_EVENTS, events_help, cmd_events},
    {"state", VERB_STATE, state_help, cmd_state},
    {"replay", VERB_REPLAY, replay_help, cmd_replay},
    {"lag", VERB_LAG, lag_help, cmd_lag},
    {"dlq", VERB_DLQ, dlq_help, cmd_dlq},
    {"topics", VERB_TOPICS, topics_help, cmd_topics},
    {"sagas", VERB_SAGAS, sagas_help, cmd_sagas},
    {"verify", VERB_VERIFY, verify_help, cmd_verify},
    {"schemas", VERB_SCHEMAS, schemas_help, cmd_schemas},
    {"metrics", VERB_METRICS, metrics_help, cmd_metrics},
    {"trace", VERB_TRACE, trace_help, cmd_trace},
    {"dev-broker", VERB_DEV_BROKER, dev_broker_help, cmd_dev_broker},
    {"help", VERB_HELP, NULL, NULL},
};

static const verb_spec *find_verb(const char *name) {
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        if (strcmp(verbs[i].name, name) == 0)
            return &verbs[i];
    return NULL;
}

typedef enum opt_id {
    OPT_DB,
    OPT_READMODEL,
    OPT_SAGA_DB,
    OPT_CONFIG,
    OPT_TYPES,
    OPT_HELP,
    OPT_VERSION,
    OPT_VERBOSE,
    OPT_FROM,
    OPT_JSON,
    OPT_PROJECTOR,
    OPT_ALL,
    OPT_THROUGHPUT,
    OPT_PARTITION_THROUGHPUT,
    OPT_CONSUMERS,
    OPT_BROKERS,
    OPT_BOOTSTRAP_FILE,
    OPT_PLAN,
    OPT_PARTITIONS,
    OPT_SAGA,
    OPT_STATE,
    OPT_ACCEPT_END,
    OPT_RECORD_BYTES,
    OPT_RECORDS_PER_DAY,
    OPT_FROM_LOG,
    OPT_OUTPUT,
    OPT_EXACT
} opt_id;

#define FOR(v) (1u << (v))

typedef struct opt_spec {
    const char *name; /* long form without "--" */
    char short_name;
    bool takes_value;
    unsigned verbs; /* FOR(verb)s the option belongs to; 0 = global */
    opt_id id;
} opt_spec;

static const opt_spec opt_specs[] = {
    {"db", 0, true, 0, OPT_DB},
    {"readmodel", 0, true, 0, OPT_READMODEL},
    {"saga-db", 0, true, 0, OPT_SAGA_DB},
    {"config", 0, true, 0, OPT_CONFIG},
    {"types", 0, true, 0, OPT_TYPES},
    {"help", 'h', false, 0, OPT_HELP},
    {"version", 0, false, 0, OPT_VERSION},
    {"verbose", 'v', false, 0, OPT_VERBOSE},
    {"from", 0, true, FOR(VERB_EVENTS), OPT_FROM},
    {"json", 0, false,
     FOR(VERB_EVENTS) | FOR(VERB_LAG) | FOR(VERB_DLQ) | FOR(VERB_TOPICS) | FOR(VERB_SAGAS) |
         FOR(VERB_VERIFY) | FOR(VERB_STATE) | FOR(VERB_SCHEMAS) | FOR(VERB_TRACE),
     OPT_JSON},
    {"projector", 0, true, FOR(VERB_DLQ), OPT_PROJECTOR},
    {"all", 0, false, FOR(VERB_DLQ), OPT_ALL},
    {"throughput", 0, true, FOR(VERB_TOPICS), OPT_THROUGHPUT},
    {"partition-throughput", 0, true, FOR(VERB_TOPICS), OPT_PARTITION_THROUGHPUT},
    {"consumers", 0, true, FOR(VERB_TOPICS), OPT_CONSUMERS},
    {"brokers", 0, true, FOR(VERB_TOPICS) | FOR(VERB_DEV_BROKER), OPT_BROKERS},
    {"bootstrap-file", 0, true, FOR(VERB_DEV_BROKER), OPT_BOOTSTRAP_FILE},
    {"plan", 0, true, FOR(VERB_DEV_BROKER), OPT_PLAN},
    {"partitions", 0, true, FOR(VERB_DEV_BROKER), OPT_PARTITIONS},
    {"saga", 0, true, FOR(VERB_SAGAS), OPT_SAGA},
    {"state", 0, true, FOR(VERB_SAGAS), OPT_STATE},
    {"accept-end", 0, false, FOR(VERB_VERIFY), OPT_ACCEPT_END},
    {"record-bytes", 0, true, FOR(VERB_TOPICS), OPT_RECORD_BYTES},
    {"records-per-day", 0, true, FOR(VERB_TOPICS), OPT_RECORDS_PER_DAY},
    {"from-log", 0, false, FOR(VERB_TOPICS), OPT_FROM_LOG},
    {"output", 0, true, FOR(VERB_METRICS), OPT_OUTPUT},
    {"exact", 0, false, FOR(VERB_LAG), OPT_EXACT},
};

/* The spec matching arg ("--name", "--name=value" or "-x"); *value is set for "=". */
static const opt_spec *find_opt(const options *o, const char *arg, const char **value) {
    *value = NULL;
    for (size_t i = 0; i < sizeof(opt_specs) / sizeof(opt_specs[0]); i++) {
        const opt_spec *s = &opt_specs[i];
        if (s->verbs && !(s->verbs & FOR(o->verb_id)))
            continue;
        if (arg[1] != '-') {
            if (arg[1] == s->short_name && arg[2] == '\0')
                return s;
            continue;
        }
        size_t n = strlen(s->name);
        if (strncmp(arg + 2, s->name, n) != 0)
            continue;
        if (arg[2 + n] == '\0')
            return s;
        if (arg[2 + n] == '=' && s->takes_value) {
            *value = arg + 3 + n;
            return s;
        }
    }
    return NULL;
}

static int apply_opt(options *o, const opt_spec *s, const char *value) {
    switch (s->id) {
    case OPT_DB:
        o->db = value;
        break;
    case OPT_READMODEL:
        o->readmodel = value;
        break;
    case OPT_SAGA_DB:
        o->saga_db = value;
        break;
    case OPT_SAGA:
        o->saga = value;
        break;
    case OPT_STATE:
        o->state = value;
        break;
    case OPT_CONFIG:
        o->config = value;
        break;
    case OPT_TYPES:
        if (o->n_types == MAX_TYPES_MODULES) {
            say("at most %d --types modules", MAX_TYPES_MODULES);
            return EXIT_USAGE;
        }
        o->types[o->n_types++] = value;
        break;
    case OPT_HELP:
        o->help = true;
        break;
    case OPT_VERSION:
        o->version = true;
        break;
    case OPT_VERBOSE:
        o->verbose = true;
        break;
    case OPT_JSON:
        o->json = true;
        break;
    case OPT_ALL:
        o->all = true;
        break;
    case OPT_ACCEPT_END:
        o->accept_end = true;
        break;
    case OPT_EXACT:
        o->exact = true;
        break;
    case OPT_PROJECTOR:
        o->projector = value;
        break;
    case OPT_THROUGHPUT:
        o->throughput = value;
        break;
    case OPT_PARTITION_THROUGHPUT:
        o->partition_throughput = value;
        break;
    case OPT_CONSUMERS:
        o->consumers = value;
        break;
    case OPT_RECORD_BYTES:
        o->record_bytes = value;
        break;
    case OPT_RECORDS_PER_DAY:
        o->records_per_day = value;
        break;
    case OPT_FROM_LOG:
        o->from_log = true;
        break;
    case OPT_BROKERS:
        o->brokers = value;
        break;
    case OPT_OUTPUT:
        o->output = value;
        break;
    case OPT_BOOTSTRAP_FILE:
        o->bootstrap_file = value;
        break;
    case OPT_PARTITIONS:
        o->partitions = value;
        break;
    case OPT_PLAN:
        if (o->n_plan == MAX_PLAN_TYPES) {
            say("at most %d --plan types", MAX_PLAN_TYPES);
            return EXIT_USAGE;
        }
        o->plan[o->n_plan++] = value;
        break;
    case OPT_FROM:
        if (parse_u64(value, &o->from) != 0) {
            say("--from needs a version number, not '%s'; run 'esctl events --help'", value);
            return EXIT_USAGE;
        }
        break;
    }
    return EXIT_OK;
}

/* Handles the option at argv[*i]; consumes its value when it takes one. */
static int parse_opt(options *o, int argc, char **argv, int *i) {
    const char *arg = argv[*i], *value;
    const opt_spec *s = find_opt(o, arg, &value);
    if (!s)
        return usage_error(o, "unknown option", arg);
    if (s->takes_value && !value) {
        if (*i + 1 >= argc)
            return usage_error(o, "missing value after option", arg);
        value = argv[++*i];
    }
    if (!s->takes_value && value)
        return usage_error(o, "option takes no value", arg);
    return apply_opt(o, s, value);
}

/* Whether arg names an option that takes a value, for whatever verb it belongs to. */
static bool takes_value(const char *arg) {
    if (arg[1] != '-' || strchr(arg, '='))
        return false;
    for (size_t i = 0; i < sizeof(opt_specs) / sizeof(opt_specs[0]); i++)
        if (!strcmp(arg + 2, opt_specs[i].name))
            return opt_specs[i].takes_value;
    return false;
}

/* Finds the verb first, so that a verb's options also work before it
 * ("esctl --brokers host:9092 topics apply"); returns its index, 0 when there is none. Unknown
 * verbs are left for parse_args to report. */
static int find_verb_first(options *o, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            i++;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            i += takes_value(argv[i]);
            continue;
        }
        const verb_spec *v = i < argc ? find_verb(argv[i]) : NULL;
        if (!v)
            return 0;
        o->verb = argv[i];
        o->verb_id = v->id;
        return i;
    }
    return 0;
}

/* o->pos must have room for argc entries. */
static int parse_args(options *o, int argc, char **argv) {
    bool only_positional = false;
    int verb_at = find_verb_first(o, argc, argv);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (i == verb_at) {
            continue;
        } else if (!only_positional && strcmp(arg, "--") == 0) {
            only_positional = true;
        } else if (!only_positional && arg[0] == '-' && arg[1] != '\0') {
            int rc = parse_opt(o, argc, argv, &i);
            if (rc != EXIT_OK)
                return rc;
        } else if (!o->verb) {
            say("unknown command '%s'; run 'esctl --help'", arg);
            return EXIT_USAGE;
        } else {
            o->pos[o->n_pos++] = arg;
        }
    }
    return EXIT_OK;
}

static int help_for(const char *verb) {
    const verb_spec *v = verb ? find_verb(verb) : NULL;
    if (!verb || (v && !v->help)) {
        fputs(main_help, stdout);
    } else if (v) {
        fputs(v->help, stdout);
    } else {
        say("unknown command '%s'; run 'esctl --help'", verb);
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

static int dispatch(const options *o) {
    if (o->version) {
        printf("esctl %s\n", ESKIT_VERSION_STRING);
        return EXIT_OK;
    }
    if (o->verb_id == VERB_HELP) {
        if (o->n_pos > 1)
            return usage_error(o, "unexpected argument", o->pos[1]);
        return help_for(o->n_pos ? o->pos[0] : NULL);
    }
    if (o->help)
        return help_for(o->verb);
    if (!o->verb) {
        say("missing command; run 'esctl --help'");
        return EXIT_USAGE;
    }
    return find_verb(o->verb)->run(o);
}

int main(int argc, char **argv) {
    options o = {0};
    o.pos = calloc((size_t)argc, sizeof(*o.pos));
    if (!o.pos) {
        say("out of memory");
        return EXIT_FAIL;
    }
    int rc = parse_args(&o, argc, argv);
    if (rc == EXIT_OK)
        rc = dispatch(&o);
    free(o.pos);
    return rc;
}
