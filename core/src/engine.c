/*
 * es_engine_t: the decider loop over a log. A batch is one transaction; inside
 * it each command is looked up by id (exactly-once), its aggregate loaded
 * (snapshot, then later events), decided, folded, appended, snapshotted when
 * due and recorded. A command's own failure (rejection, conflict, bad input)
 * becomes its result and touches nothing; a storage failure aborts the batch. An
 * all-or-nothing batch (es_execute_all) is the same loop stopped by the first command that is
 * not accepted: it rolls back, and the states of its aggregates leave the cache.
 *
 * Decided states stay in memory (state_entry, an LRU) keyed by aggregate and
 * are reused when their version equals the stream's current version: history
 * is immutable, so a state at version n is the state at version n, whoever
 * appended since. Snapshots that fall due are packed and written once per
 * batch, or, while the store keeps them in memory anyway (deferred heads), once
 * by the commit that writes them (write_due_snapshots). A failed batch forgets
 * every cached state, since they may hold uncommitted events.
 */
#include "engine_int.h"
#include "backends.h"
#include "decider.h"
#include "lru.h"
#include "metrics_int.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The counters of one aggregate type (docs/observability.md), in a list the scrape thread walks
 * without a lock: a node is filled before it is published at the head, and freed only after the
 * engine left the metrics registry. */
typedef struct type_mx {
    struct type_mx *next;
    char type[ES_MAX_TYPE_LEN + 1];
    es_mx_counter outcome[4]; /* by es_outcome - 1 */
    es_mx_counter events, snapshot_writes, snapshot_loads, cache_hits, cache_misses;
    es_mx_hist duration;
} type_mx;

typedef struct registration {
    es_aggregate_def
        *def; /* the caller's definition in this ABI's layout (es_aggregate_normalise) */
    void *opaque;
    const ProtobufCMessageDescriptor **lists; /* events and commands made from tables */
    uint32_t *event_versions; /* def->events[i]'s version in the log's schema catalogue; NULL:
                                 none registered (a read-only engine) */
    type_mx *mx;              /* NULL: metrics off */
} registration;

/* An event's span and its traceparent text, which its metadata points to. */
typedef struct event_trace {
    es_trace_t t;
    char tp[ES_TRACEPARENT_LEN + 1];
} event_trace;

struct es_engine {
    es_store_t *store;
    registration *regs;
    size_t n_regs, cap_regs;
    long long snapshot_every;
    es_lru_t *states;     /* state_entry by "<type>\x1f<id>" */
    es_pending_t pending; /* reused by every command: one allocation pattern per engine */
    es_new_event_t *ne;
    size_t ne_cap;
    es_buf_t due_keys;  /* keys of entries whose snapshot is due, each klen + key; they may wait
                           past their batch (write_due_snapshots) */
    size_t n_due;       /* keys in due_keys */
    size_t due_bytes;   /* their states' packed sizes when each fell due */
    size_t due_max;     /* cache.aggregates: no more states wait, pinned, than the cache holds */
    uint64_t batch_seq; /* batches executed here, counting from 1 */
    es_buf_t src_buf;   /* engine_snapshot's packed state, and its snapshot */
    es_snapshot_t src_snap;
    es_buf_t snap_buf; /* a due snapshot's state, packed (the store keeps its own copy) */
    es_fingerprinter_t fingerprinter;
    int readonly;            /* es_engine_open(ES_OPEN_READONLY): loads states, executes nothing */
    es_executor *remote;     /* the backend's remote executor (Kafka: commands go to the partition
                                owners); NULL: commands run here, on the store */
    es_folder_t folder;      /* the events being folded, until es_settle (decider.h) */
    es_schemas_t *catalogue; /* the log's schema catalogue, opened by the first registration */
    int no_catalogue;        /* a processor's local engine: its processor's engine registered */
    uint32_t *sv;            /* the schema versions of one command's new events */
    size_t sv_cap;
    es_mx_source *mx_src; /* metrics: NULL when off, or for an engine that executes nothing */
    _Atomic(type_mx *) mx_types; /* every registration's counters, newest first */
    es_mx_hist mx_batch;         /* commands per batch */
    /* A processor's local engine: a command's traceparent is already its execute span (the
     * caller's side made it, the processor made sure of it), not its caller's. */
    int trace_given;
    event_trace *evt; /* one command's events' spans */
    size_t evt_cap;
    es_kv_t *md; /* and their metadata, n_metadata + 3 each */
    size_t md_cap;
    /* The aggregate type string the batch's last checked command named, valid and registered
     * as batch_reg: a batch names its type by one pointer, checked once (reset each batch; the
     * caller may reuse the buffer between calls). */
    const char *batch_type;
    const registration *batch_reg;
};

typedef struct state_entry {
    uint64_t version;
    ProtobufCMessage *state;
    const registration *reg;
    int snapshot_due; /* pinned in the LRU until written */
    char *type, *id;
    uint64_t taken_in; /* the batch (es_engine.batch_seq) that last counted a snapshot of it */
} state_entry;

#define STATE_KEY_MAX (ES_MAX_TYPE_LEN + 1 + ES_MAX_ID_LEN)

static void free_state_entry(void *v) {
    state_entry *e = v;
    if (e->state)
        protobuf_c_message_free_unpacked(e->state, NULL);
    free(e->type);
    free(e->id);
    free(e);
}

static int state_pinned(const void *v) {
    return ((const state_entry *)v)->snapshot_due;
}

/* Callers have validated type and id, so the key fits. */
static size_t state_key(const char *type, const char *id, char *key) {
    size_t tl = strlen(type), il = strlen(id);
    memcpy(key, type, tl);
    key[tl] = '\x1f';
    memcpy(key + tl + 1, id, il);
    return tl + 1 + il;
}

static es_mx_collect_fn engine_collect;
static void write_waiting_snapshots(es_engine_t *e);
static void set_snapshot_source(es_engine_t *e, int on);

es_err es_engine_new(const es_config_t *cfg, es_engine_t **out, es_error_t *err) {
    return es_engine_open(cfg, ES_OPEN_WRITE, out, err);
}

es_err es_engine_open(const es_config_t *cfg, es_open_mode mode, es_engine_t **out,
                      es_error_t *err) {
    if (!out)
        return es_fail(err, ES_EINVAL, "es_engine_open: out is required");
    *out = NULL;
    es_engine_t *e = calloc(1, sizeof *e);
    if (!e)
        return es_fail(err, ES_ENOMEM, "out of memory creating an engine");
    e->readonly = mode == ES_OPEN_READONLY;
    es_err rc = es_store_open(cfg, mode, &e->store, err);
    if (rc != ES_OK) {
        free(e);
        return rc;
    }
    const es_config_t *c = es_store_config(e->store);
    e->snapshot_every = es_config_get_int(c, "snapshot.every");
    e->due_max = (size_t)es_config_get_int(c, "cache.aggregates");
    e->states = es_lru_new(e->due_max, free_state_entry, state_pinned);
    if (!e->states || es_folder_init(&e->folder) != ES_OK) {
        es_lru_destroy(e->states);
        es_folder_free(&e->folder);
        es_store_destroy(e->store);
        free(e);
        return es_fail(err, ES_ENOMEM, "out of memory creating an engine");
    }
    const es_backend *b = es_backend_of(c);
    if (!e->readonly && b->new_executor && (rc = b->new_executor(c, &e->remote, err)) != ES_OK) {
        es_engine_destroy(e);
        return rc;
    }
    /* Commands are counted where they execute: here, or in the processor's local engine. */
    es_mx_hist_init(&e->mx_batch, &es_mx_sizes);
    if (!e->readonly && !e->remote &&
        (rc = es_mx_register(c, engine_collect, NULL, e, &e->mx_src, err)) != ES_OK) {
        es_engine_destroy(e);
        return rc;
    }
    set_snapshot_source(e, 1);
    *out = e;
    return ES_OK;
}

void es_engine_destroy(es_engine_t *engine) {
    if (!engine)
        return;
    es_mx_unregister(engine->mx_src); /* first: a scrape may be reading the counters */
    for (type_mx *t = atomic_load(&engine->mx_types), *next; t; t = next) {
        next = t->next;
        free(t);
    }
    if (engine->remote)
        engine->remote->ops->destroy(engine->remote);
    write_waiting_snapshots(engine);
    set_snapshot_source(engine, 0);
    es_store_destroy(engine->store);
    es_lru_destroy(engine->states);
    es_pending_free(&engine->pending);
    free(engine->ne);
    es_buf_free(&engine->due_keys);
    es_buf_free(&engine->snap_buf);
    es_buf_free(&engine->src_buf);
    es_fingerprinter_free(&engine->fingerprinter);
    es_folder_free(&engine->folder);
    es_schemas_close(engine->catalogue);
    free(engine->sv);
    free(engine->evt);
    free(engine->md);
    for (size_t i = 0; i < engine->n_regs; i++) {
        free(engine->regs[i].def);
        free(engine->regs[i].lists);
        free(engine->regs[i].event_versions);
    }
    free(engine->regs);
    free(engine);
}

es_store_t *es_engine_store(es_engine_t *engine) {
    return engine->store;
}

size_t es_engine_registration(const es_engine_t *engine, size_t i, const es_aggregate_def **def,
                              void **opaque) {
    if (i < engine->n_regs) {
        *def = engine->regs[i].def;
        *opaque = engine->regs[i].opaque;
    }
    return engine->n_regs;
}

const char *es_outcome_name(es_outcome o) {
    switch (o) {
    case ES_OUTCOME_ACCEPTED:
        return "accepted";
    case ES_OUTCOME_REJECTED:
        return "rejected";
    case ES_OUTCOME_CONFLICT:
        return "conflict";
    default:
        return "error";
    }
}

static void engine_collect(void *self, es_mx_sink *k) {
    es_engine_t *e = self;
    char l[ES_MAX_TYPE_LEN + 64];
    for (const type_mx *t = atomic_load(&e->mx_types); t; t = t->next) {
        for (int o = 0; o < 4; o++)
            es_mx_sample(k, "eskit_commands_total", ES_MX_COUNTER, "Commands executed, by outcome.",
                         es_mx_labels(l, sizeof l, "aggregate_type", t->type, "outcome",
                                      es_outcome_name((es_outcome)(o + 1)), (const char *)NULL),
                         (double)es_mx_get(&t->outcome[o]));
        es_mx_labels(l, sizeof l, "aggregate_type", t->type, (const char *)NULL);
        es_mx_sample_hist(k, "eskit_command_duration_seconds",
                          "Time from a command's batch start to its commit.", l, &t->duration);
        es_mx_sample(k, "eskit_events_appended_total", ES_MX_COUNTER,
                     "Events appended by accepted commands.", l, (double)es_mx_get(&t->events));
        es_mx_sample(k, "eskit_snapshot_writes_total", ES_MX_COUNTER,
                     "Snapshots taken, one an aggregate a batch that reached snapshot.every.", l,
                     (double)es_mx_get(&t->snapshot_writes));
        es_mx_sample(k, "eskit_snapshot_loads_total", ES_MX_COUNTER,
                     "Aggregates loaded from a snapshot.", l,
                     (double)es_mx_get(&t->snapshot_loads));
        es_mx_sample(k, "eskit_state_cache_hits_total", ES_MX_COUNTER,
                     "Aggregates found in the state cache.", l, (double)es_mx_get(&t->cache_hits));
        es_mx_sample(k, "eskit_state_cache_misses_total", ES_MX_COUNTER,
                     "Aggregates loaded from the store.", l, (double)es_mx_get(&t->cache_misses));
    }
    es_mx_sample_hist(k, "eskit_command_batch_size", "Commands per batch.", "", &e->mx_batch);
}

static const registration *find_reg(const es_engine_t *e, const char *type) {
    for (size_t i = 0; i < e->n_regs; i++)
        if (!strcmp(e->regs[i].def->type, type))
            return &e->regs[i];
    return NULL;
}

static size_t count_types(const ProtobufCMessageDescriptor *const *list) {
    size_t n = 0;
    while (list && list[n])
        n++;
    return n;
}

/* Records the schemas of reg's state, events and commands in the log's catalogue (refusing a
 * type that breaks schema.compatibility) and keeps its events' versions for their envelopes. */
static es_err register_schemas(es_engine_t *e, registration *reg, es_error_t *err) {
    if (e->readonly || e->no_catalogue)
        return ES_OK;
    const es_aggregate_def *def = reg->def;
    size_t ne = count_types(def->events), nc = count_types(def->commands), n = 1 + ne + nc;
    const ProtobufCMessageDescriptor **types = malloc(n * sizeof *types);
    uint32_t *versions = calloc(n, sizeof *versions);
    es_err rc = types && versions
                    ? ES_OK
                    : es_fail(err, ES_ENOMEM, "out of memory registering '%s'", def->type);
    if (rc == ES_OK) {
        types[0] = def->state;
        memcpy(types + 1, def->events, ne * sizeof *types);
        memcpy(types + 1 + ne, def->commands, nc * sizeof *types);
    }
    if (rc == ES_OK && !e->catalogue)
        rc = es_schemas_open(es_store_config(e->store), 0, &e->catalogue, err);
    if (rc == ES_OK)
        rc = es_schemas_register(e->catalogue, types, n, versions, NULL, err);
    if (rc == ES_OK && !(reg->event_versions = malloc((ne ? ne : 1) * sizeof *versions)))
        rc = es_fail(err, ES_ENOMEM, "out of memory registering '%s'", def->type);
    if (rc == ES_OK)
        memcpy(reg->event_versions, versions + 1, ne * sizeof *versions);
    free(types);
    free(versions);
    return rc;
}

/* The schema version of each of d's events, in *out (e->sv); *out NULL when none were
 * registered. ES_ENOMEM rather than events stamped with no version. */
static es_err event_schema_versions(es_engine_t *e, const registration *reg, const es_decision_t *d,
                                    const uint32_t **out, es_error_t *err) {
    *out = NULL;
    if (!reg->event_versions || !d->n)
        return ES_OK;
    if (d->n > e->sv_cap) {
        uint32_t *sv = realloc(e->sv, d->n * sizeof *sv);
        if (!sv)
            return es_fail(err, ES_ENOMEM, "out of memory appending %zu events", d->n);
        e->sv = sv;
        e->sv_cap = d->n;
    }
    for (size_t i = 0; i < d->n; i++) {
        e->sv[i] = 0;
        for (size_t k = 0; reg->def->events[k]; k++)
            if (reg->def->events[k] == d->ev[i].desc) {
                e->sv[i] = reg->event_versions[k];
                break;
            }
    }
    *out = e->sv;
    return ES_OK;
}

es_err es_engine_register(es_engine_t *engine, const es_aggregate_def *def, void *opaque,
                          es_error_t *err) {
    if (!engine || !def)
        return es_fail(err, ES_EINVAL, "es_engine_register: %s is NULL",
                       engine ? "the definition" : "engine");
    registration reg = {.opaque = opaque};
    es_err rc = es_aggregate_normalise(def, &reg.def, &reg.lists, err);
    if (rc == ES_OK && find_reg(engine, def->type))
        rc = es_fail(err, ES_ESTATE, "aggregate type '%s' is already registered", def->type);
    if (rc == ES_OK && engine->n_regs == engine->cap_regs) {
        size_t cap = engine->cap_regs ? engine->cap_regs * 2 : 8;
        registration *r = realloc(engine->regs, cap * sizeof *r);
        if (r) {
            engine->regs = r;
            engine->cap_regs = cap;
        } else {
            rc = es_fail(err, ES_ENOMEM, "out of memory registering '%s'", def->type);
        }
    }
    if (rc == ES_OK)
        rc = register_schemas(engine, &reg, err);
    if (rc == ES_OK && engine->mx_src && !(reg.mx = calloc(1, sizeof *reg.mx)))
        rc = es_fail(err, ES_ENOMEM, "out of memory registering '%s'", def->type);
    if (rc != ES_OK) {
        free(reg.def);
        free(reg.lists);
        free(reg.event_versions);
        return rc;
    }
    if (reg.mx) {
        snprintf(reg.mx->type, sizeof reg.mx->type, "%s", def->type);
        es_mx_hist_init(&reg.mx->duration, &es_mx_seconds);
        reg.mx->next = atomic_load(&engine->mx_types);
        atomic_store(&engine->mx_types, reg.mx); /* published whole */
    }
    engine->regs[engine->n_regs++] = reg;
    return ES_OK;
}

es_err es_engine_new_local(const es_config_t *cfg, es_engine_t **out, es_error_t *err) {
    es_err e = es_engine_open(cfg, ES_OPEN_WRITE, out, err);
    if (e == ES_OK) {
        (*out)->no_catalogue = 1;
        (*out)->trace_given = 1;
    }
    return e;
}

es_err es_engine_copy_schema_versions(es_engine_t *dst, const es_engine_t *src, es_error_t *err) {
    for (size_t i = 0; i < dst->n_regs; i++) {
        registration *d = &dst->regs[i];
        const registration *s = find_reg(src, d->def->type);
        size_t n = count_types(d->def->events);
        if (!s || !s->event_versions || count_types(s->def->events) != n)
            continue;
        uint32_t *v = malloc((n ? n : 1) * sizeof *v);
        if (!v)
            return es_fail(err, ES_ENOMEM, "out of memory");
        memcpy(v, s->event_versions, n * sizeof *v);
        free(d->event_versions);
        d->event_versions = v;
    }
    return ES_OK;
}

/* Everything one command's execution needs, passed between the steps below. */
typedef struct exec_ctx {
    es_engine_t *engine;
    es_log_t *log;
    const es_command_t *cmd;
    const registration *reg;
    es_subject_t subj; /* reg's definition and opaque, and the aggregate id */
    const char *command_id;
    int explicit_id;     /* the caller chose the id, so it may come again */
    es_fingerprint_t fp; /* what the command asks, when explicit_id */
    es_trace_t trace;    /* the execute span */
    es_result_t *res;
    ProtobufCMessage *state; /* entry->state once loaded */
    state_entry *entry;
    uint64_t version;
    es_error_t *err; /* for the command's own failure, copied into res->reason */
} exec_ctx;

/* Folds one stored or new event into the state; the event stays in the engine's arena until
 * es_settle (decider.h says why). */
static es_err fold(exec_ctx *x, const char *event_type, const uint8_t *payload, size_t len,
                   uint64_t version, es_error_t *err) {
    return es_fold(&x->engine->folder, &x->subj, x->state, event_type, payload, len, version, err);
}

typedef struct fold_cb_ctx {
    exec_ctx *x;
    es_error_t *err;
    es_err rc;
} fold_cb_ctx;

static int fold_cb(const es_event_t *ev, void *opaque) {
    fold_cb_ctx *c = opaque;
    c->rc = fold(c->x, ev->event_type, ev->payload, ev->payload_len, ev->version, c->err);
    return c->rc != ES_OK;
}

/* Starts from the snapshot when it is usable; a stale or undecodable one is ignored. */
static uint64_t state_from_snapshot(exec_ctx *x) {
    const es_aggregate_def *def = x->reg->def;
    es_snapshot_t *snap = NULL;
    uint64_t from = 0;
    if (!x->log->store) /* Kafka's reader: no snapshots but the processors' */
        return 0;
    if (x->log->store->get_snapshot(x->log, def->type, x->cmd->aggregate_id, &snap, NULL) != ES_OK)
        return 0;
    if (snap->version <= x->version && !strcmp(snap->state_type, def->state->name)) {
        x->state = protobuf_c_message_unpack(def->state, NULL, snap->state_len, snap->state);
        if (x->state) {
            from = snap->version;
            if (x->reg->mx)
                es_mx_add(&x->reg->mx->snapshot_loads, 1);
        } else
            es_logf(es_store_config(x->engine->store), ES_LOG_WARNING,
                    "snapshot of %s/%s at version %llu does not decode; rebuilding from events",
                    def->type, x->cmd->aggregate_id, (unsigned long long)snap->version);
    }
    es_snapshot_free(snap);
    return from;
}

static es_err rebuild_state(exec_ctx *x, es_error_t *err) {
    const es_aggregate_def *def = x->reg->def;
    uint64_t from = x->version ? state_from_snapshot(x) : 0;
    if (!x->state) {
        if (!(x->state = es_state_new(&x->subj)))
            return es_fail(err, ES_ENOMEM, "out of memory creating a %s state", def->type);
    }
    if (from >= x->version)
        return ES_OK;
    fold_cb_ctx c = {x, err, ES_OK};
    es_err rc = x->log->reader->read_stream(x->log, def->type, x->cmd->aggregate_id, from + 1,
                                            x->version, fold_cb, &c, err);
    if (rc == ES_OK)
        rc = c.rc;
    es_err owned = es_settle(&x->engine->folder, &x->subj, x->state, rc == ES_OK ? err : NULL);
    return rc != ES_OK ? rc : owned;
}

static es_err cache_state(exec_ctx *x, const char *key, size_t klen, es_error_t *err) {
    state_entry *se = calloc(1, sizeof *se);
    if (se) {
        *se = (state_entry){x->version,
                            x->state,
                            x->reg,
                            0,
                            strdup(x->cmd->aggregate_type),
                            strdup(x->cmd->aggregate_id),
                            0};
        x->state = NULL; /* the entry owns it now, and frees it on any failure below */
    }
    if (!se || !se->type || !se->id) {
        if (se)
            free_state_entry(se);
        return es_fail(err, ES_ENOMEM, "out of memory caching a state");
    }
    /* A waiting state replaced (its stream moved on: another writer, an append beside the
     * engine) leaves its place in due_keys to the new one, rebuilt at the stream's version. */
    const state_entry *old = es_lru_get(x->engine->states, key, klen);
    se->snapshot_due = old && old->snapshot_due;
    if (es_lru_put(x->engine->states, key, klen, se) != 0)
        return es_fail(err, ES_ENOMEM, "out of memory caching a state");
    x->entry = se;
    x->state = se->state;
    return ES_OK;
}

/* The aggregate's state at x->version: cached, or rebuilt and cached. */
static es_err load_state(exec_ctx *x, es_error_t *err) {
    char key[STATE_KEY_MAX];
    size_t klen = state_key(x->cmd->aggregate_type, x->cmd->aggregate_id, key);
    state_entry *se = es_lru_get(x->engine->states, key, klen);
    if (se && se->reg == x->reg && se->version == x->version) {
        x->entry = se;
        x->state = se->state;
        if (x->reg->mx)
            es_mx_add(&x->reg->mx->cache_hits, 1);
        return ES_OK;
    }
    if (x->reg->mx)
        es_mx_add(&x->reg->mx->cache_misses, 1);
    es_err rc = rebuild_state(x, err);
    if (rc == ES_OK)
        return cache_state(x, key, klen, err);
    if (x->state)
        protobuf_c_message_free_unpacked(x->state, NULL);
    x->state = NULL;
    return rc;
}

static int is_fatal(const exec_ctx *x, es_err rc) {
    /* evolve kept memory of an event: the command's error, not the batch's */
    return !x->engine->folder.fault &&
           (rc == ES_EIO || rc == ES_EBUSY || rc == ES_ENOMEM || rc == ES_ESTATE);
}

static es_err set_result(es_result_t *res, es_outcome outcome, es_err code, const char *reason) {
    res->outcome = outcome;
    res->code = code;
    free(res->reason);
    res->reason = reason ? strdup(reason) : NULL;
    return ES_OK;
}

typedef struct collect_ctx {
    es_result_t *res;
    es_err rc;
} collect_ctx;

static int collect_cb(const es_event_t *ev, void *opaque) {
    collect_ctx *c = opaque;
    es_event_t *copy = es_event_dup(ev);
    if (!copy) {
        c->rc = ES_ENOMEM;
        return 1;
    }
    c->res->events[c->res->n_events++] = copy;
    return 0;
}

/* Whether rec is this command again, rather than its id reused for another command; when not,
 * x->err says what differs. A record without a fingerprint (written before eskit kept one)
 * can only be checked for its aggregate. */
static int same_command(exec_ctx *x, const es_command_record_t *rec) {
    const es_command_t *cmd = x->cmd;
    if (strcmp(rec->aggregate_type, cmd->aggregate_type) ||
        strcmp(rec->aggregate_id, cmd->aggregate_id))
        es_fail(x->err, ES_EIDREUSED,
                "command id '%s' was already used for %s/%s; a retry must name the same "
                "aggregate, a new command needs a fresh id",
                x->command_id, rec->aggregate_type, rec->aggregate_id);
    else if (rec->has_fingerprint && rec->fingerprint.type != x->fp.type)
        es_fail(x->err, ES_EIDREUSED,
                "command id '%s' was already used on %s/%s for another command type than %s; a "
                "retry must resend the same command, a new command needs a fresh id",
                x->command_id, cmd->aggregate_type, cmd->aggregate_id,
                cmd->message->descriptor->name);
    else if (rec->has_fingerprint && rec->fingerprint.payload != x->fp.payload)
        es_fail(x->err, ES_EIDREUSED,
                "command id '%s' was already used on %s/%s for %s with another payload; a "
                "retry must resend the same payload, a new command needs a fresh id",
                x->command_id, cmd->aggregate_type, cmd->aggregate_id,
                cmd->message->descriptor->name);
    else
        return 1;
    return 0;
}

/* A command id seen before: answer with what happened then, if it is the same command. */
static es_err answer_duplicate(exec_ctx *x, const es_command_record_t *rec, es_error_t *err) {
    es_result_t *res = x->res;
    const es_command_t *cmd = x->cmd;
    if (!same_command(x, rec))
        return set_result(res, ES_OUTCOME_ERROR, ES_EIDREUSED, x->err->message);
    es_err code = rec->outcome == ES_OUTCOME_ACCEPTED ? ES_OK : ES_EREJECTED;
    set_result(res, (es_outcome)rec->outcome, code, rec->reason);
    res->duplicate = true;
    res->version = rec->version;
    res->first_version = rec->first_version;
    res->last_version = rec->last_version;
    if (!rec->first_version)
        return ES_OK;
    size_t n = (size_t)(rec->last_version - rec->first_version + 1);
    if (!(res->events = calloc(n, sizeof *res->events)))
        return es_fail(err, ES_ENOMEM, "out of memory answering a duplicate command");
    collect_ctx c = {res, ES_OK};
    es_err rc =
        x->log->reader->read_stream(x->log, cmd->aggregate_type, cmd->aggregate_id,
                                    rec->first_version, rec->last_version, collect_cb, &c, err);
    return rc != ES_OK ? rc : c.rc;
}

/* Only ids the caller chose can come again; an id the engine generated is new by construction
 * and needs no record. */
static es_err record_command(exec_ctx *x, es_outcome outcome, es_error_t *err) {
    if (!x->explicit_id)
        return ES_OK;
    es_command_record_t rec = {x->command_id,
                               x->cmd->aggregate_type,
                               x->cmd->aggregate_id,
                               outcome,
                               x->res->first_version,
                               x->res->last_version,
                               x->res->version,
                               x->res->reason,
                               1,
                               x->fp,
                               0};
    return x->log->store->put_command(x->log, &rec, err);
}

/* Notes that the state's snapshot is due; write_due_snapshots writes it. The count is of
 * snapshots taken, one an aggregate a batch, whether the store writes each or the newest. */
static es_err snapshot_due(exec_ctx *x, uint64_t before, es_error_t *err) {
    es_engine_t *e = x->engine;
    state_entry *se = x->entry;
    long long every = e->snapshot_every;
    if (every <= 0 || before / (uint64_t)every == x->version / (uint64_t)every)
        return ES_OK;
    if (se->taken_in != e->batch_seq && se->reg->mx)
        es_mx_add(&se->reg->mx->snapshot_writes, 1);
    se->taken_in = e->batch_seq;
    if (se->snapshot_due)
        return ES_OK;
    char key[STATE_KEY_MAX];
    size_t klen = state_key(x->cmd->aggregate_type, x->cmd->aggregate_id, key);
    es_buf_t *b = &e->due_keys;
    if (es_buf_reserve(b, sizeof klen + klen) != ES_OK)
        return es_fail(err, ES_ENOMEM, "out of memory noting a snapshot");
    memcpy(b->data + b->len, &klen, sizeof klen);
    memcpy(b->data + b->len + sizeof klen, key, klen);
    b->len += sizeof klen + klen;
    e->n_due++;
    e->due_bytes += protobuf_c_message_get_packed_size(se->state);
    se->snapshot_due = 1;
    return ES_OK;
}

/* The state packed into b, as a snapshot taken at now. */
static es_err pack_state(const state_entry *se, es_buf_t *b, int64_t now, es_snapshot_t *snap) {
    b->len = 0;
    if (es_buf_reserve(b, protobuf_c_message_get_packed_size(se->state)) != ES_OK)
        return ES_ENOMEM;
    b->len = protobuf_c_message_pack(se->state, b->data);
    /* the state's own descriptor names its type: se->reg is not read after its batch */
    *snap = (es_snapshot_t){se->version, se->state->descriptor->name, b->data, b->len, now};
    return ES_OK;
}

/* The store's snapshot source (snapshot_source): a due state's snapshot, packed on demand, so
 * that one kept back is still the one get_snapshot gives. Under the store's lock, as every
 * use of the states. */
static const es_snapshot_t *engine_snapshot(void *opaque, const char *type, const char *id) {
    es_engine_t *e = opaque;
    char key[STATE_KEY_MAX];
    if (!e->due_keys.len || strlen(type) + 1 + strlen(id) > sizeof key)
        return NULL;
    const state_entry *se = es_lru_get(e->states, key, state_key(type, id, key));
    if (!se || !se->snapshot_due || pack_state(se, &e->src_buf, es_now_us(), &e->src_snap) != ES_OK)
        return NULL;
    return &e->src_snap;
}

static es_err write_snapshot(es_engine_t *e, es_log_t *log, state_entry *se, int64_t now,
                             es_error_t *err) {
    es_snapshot_t snap;
    if (pack_state(se, &e->snap_buf, now, &snap) != ES_OK)
        return es_fail(err, ES_ENOMEM, "out of memory writing a snapshot");
    return log->store->put_snapshot(log, se->type, se->id, &snap, err);
}

/* The entry under the key listed at *off in due_keys (NULL: gone), and *off past it. */
static state_entry *due_entry(es_engine_t *e, size_t *off, size_t *step) {
    size_t klen;
    memcpy(&klen, e->due_keys.data + *off, sizeof klen);
    const char *key = (const char *)e->due_keys.data + *off + sizeof klen;
    *step = sizeof klen + klen;
    *off += *step;
    return es_lru_get(e->states, key, klen);
}

/* What the store keeps of waiting snapshots before it writes them (HEADS_DEFER_BYTES), for
 * the states kept back instead: beyond it they are put at once. */
#define DUE_BYTES_MAX (2u << 20)

/* The due snapshots are packed and put at a commit that writes them. While the store would
 * only keep them in memory for a later commit (its deferred heads), the states wait in the
 * cache, pinned, and each is packed once, when it is written: a batch over 1,000 aggregates
 * packed ~630 snapshots a commit, of which the store wrote those of one commit in 16. A batch
 * with a hook (the Kafka processor sends each command's snapshot on), a full cache (due_max),
 * DUE_BYTES_MAX of them and the close (write_waiting_snapshots) put them at once (at_once), and so
 * does a policy of more than one event a snapshot: its snapshot is of the version that reached the
 * interval, which later commands move past (with 1, the newest state is the snapshot the last
 * batch would have put). One clock reading serves them all. */
static es_err write_due_snapshots(es_engine_t *e, es_log_t *log, int at_once, es_error_t *err) {
    if (!e->due_keys.len)
        return ES_OK;
    int due = log->store->version >= 4 && log->store->heads_due ? log->store->heads_due(log) : 1;
    if (!at_once && !due && e->snapshot_every == 1 && e->n_due < e->due_max &&
        e->due_bytes < DUE_BYTES_MAX)
        return ES_OK;
    es_err rc = ES_OK;
    int64_t now = es_now_us();
    for (size_t off = 0, step; off < e->due_keys.len;) {
        state_entry *se = due_entry(e, &off, &step);
        if (!se || !se->snapshot_due)
            continue;
        se->snapshot_due = 0; /* unpinned whatever happens: none stays pinned unlisted */
        uint64_t v = se->version;
        /* Another connection wrote since: a kept-back state may be behind its stream, whose
         * newer snapshot it must not replace. */
        if (rc == ES_OK && due == 2)
            rc = log->reader->stream_version(log, se->type, se->id, &v, err);
        if (rc == ES_OK && v == se->version)
            rc = write_snapshot(e, log, se, now, err);
    }
    e->due_keys.len = 0;
    e->n_due = 0;
    e->due_bytes = 0;
    return rc;
}

/* After a rollback took some states away: keeps the keys of the states still waiting, once
 * each (a removed state's key may be listed again for the state that replaced it). */
static void prune_due_keys(es_engine_t *e) {
    es_buf_t *b = &e->due_keys;
    size_t out = 0, n = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t off = 0, step, end = pass ? out : b->len; off < end;) {
            state_entry *se = due_entry(e, &off, &step);
            if (pass) {
                se->snapshot_due = 1;
            } else if (se && se->snapshot_due == 1) {
                se->snapshot_due = 2; /* kept: a second listing of it is not */
                memmove(b->data + out, b->data + off - step, step);
                out += step;
                n++;
            }
        }
    }
    b->len = out;
    e->n_due = n;
}

/* A state that may hold events that were not committed must not be reused. */
static void forget_states(es_engine_t *e) {
    e->due_keys.len = 0;
    e->n_due = 0;
    e->due_bytes = 0;
    es_lru_clear(e->states);
}

/* Makes the engine its store's snapshot source, or no longer (on 0). */
static void set_snapshot_source(es_engine_t *e, int on) {
    es_log_t *log;
    if (e->readonly || !e->store || es_store_lock(e->store, &log, NULL) != ES_OK)
        return;
    if (log->store && log->store->version >= 4 && log->store->snapshot_source)
        log->store->snapshot_source(log, on ? engine_snapshot : NULL, on ? e : NULL);
    es_store_unlock(e->store);
}

/* The snapshots still waiting go in before the store closes and writes its heads; best
 * effort, as the store's own write at close. */
static void write_waiting_snapshots(es_engine_t *e) {
    es_log_t *log;
    es_error_t err = {0};
    if (!e->due_keys.len || es_store_lock(e->store, &log, &err) != ES_OK)
        return;
    if (log->store->begin(log, &err) == ES_OK) {
        if (write_due_snapshots(e, log, 1, &err) != ES_OK) {
            log->store->rollback(log);
        } else {
            if (log->store->version >= 3)
                log->store->write_heads(log);
            log->store->commit(log, &err); /* rolls back when it fails */
        }
    }
    es_store_unlock(e->store);
}

static es_err fill_events(es_result_t *res, const es_pending_t *p, es_error_t *err) {
    if (!p->n)
        return ES_OK;
    if (!(res->events = calloc(p->n, sizeof *res->events)))
        return es_fail(err, ES_ENOMEM, "out of memory returning events");
    for (size_t i = 0; i < p->n; i++) {
        es_event_t *ev = es_event_dup(&p->evs[i]);
        if (!ev)
            return es_fail(err, ES_ENOMEM, "out of memory returning events");
        ev->offset = p->offsets[i];
        res->events[res->n_events++] = ev;
    }
    return ES_OK;
}

/* Makes room for n events' spans and metadata, each of n_md entries + the trace keys. */
static es_err reserve_traces(es_engine_t *e, size_t n, size_t n_md, es_error_t *err) {
    if (n > e->evt_cap) {
        event_trace *t = realloc(e->evt, n * sizeof *t);
        if (!t)
            return es_fail(err, ES_ENOMEM, "out of memory appending events");
        e->evt = t;
        e->evt_cap = n;
    }
    size_t need = n * (n_md + 3);
    if (need > e->md_cap) {
        es_kv_t *md = realloc(e->md, need * sizeof *md);
        if (!md)
            return es_fail(err, ES_ENOMEM, "out of memory appending events");
        e->md = md;
        e->md_cap = need;
    }
    return ES_OK;
}

/* Fills e->ne[0..n) but for the events' types and payloads: each event a span of its own under
 * the command's, its metadata the command's with the trace keys replaced. */
static es_err trace_events(exec_ctx *x, size_t n, es_error_t *err) {
    es_engine_t *e = x->engine;
    const es_command_t *cmd = x->cmd;
    es_err rc = reserve_traces(e, n, cmd->n_metadata, err);
    const char *corr =
        cmd->correlation_id && *cmd->correlation_id ? cmd->correlation_id : x->command_id;
    for (size_t i = 0; rc == ES_OK && i < n; i++) {
        event_trace *et = &e->evt[i];
        es_kv_t *md = e->md + i * (cmd->n_metadata + 3);
        es_trace_child(&x->trace.tp, x->trace.tracestate, &et->t);
        size_t k = es_trace_metadata(cmd->metadata, cmd->n_metadata, &et->t, md, et->tp);
        e->ne[i] = (es_new_event_t){NULL, NULL, 0, x->command_id, corr, md, k};
    }
    return rc;
}

/* Appends the decision's events after folding them (a decider whose events its own evolve
 * rejects is a bug; nothing is appended then). */
static es_err apply_decision(exec_ctx *x, const es_decision_t *d, es_error_t *err) {
    const es_command_t *cmd = x->cmd;
    uint64_t before = x->version;
    es_err rc = es_fold_decision(&x->engine->folder, &x->subj, x->state, d, before, x->err);
    if (rc != ES_OK) {
        x->entry->version = UINT64_MAX; /* partly folded: never reuse it */
        x->entry->snapshot_due = 0;
        return is_fatal(x, rc) ? rc : set_result(x->res, ES_OUTCOME_ERROR, rc, x->err->message);
    }

    es_engine_t *e = x->engine;
    if (d->n > e->ne_cap) {
        es_new_event_t *ne = realloc(e->ne, d->n * sizeof *ne);
        if (!ne)
            return es_fail(err, ES_ENOMEM, "out of memory appending events");
        e->ne = ne;
        e->ne_cap = d->n;
    }
    if ((rc = trace_events(x, d->n, err)) != ES_OK)
        return rc;
    for (size_t i = 0; i < d->n; i++) {
        e->ne[i].event_type = d->ev[i].desc->name;
        e->ne[i].payload = d->ev[i].buf.data;
        e->ne[i].payload_len = d->ev[i].buf.len;
    }
    es_pending_t *p = &e->pending;
    const uint32_t *versions = NULL;
    rc = event_schema_versions(e, x->reg, d, &versions, err);
    if (rc == ES_OK)
        rc = es_pending_build_caused(p, cmd->aggregate_type, cmd->aggregate_id, before, e->ne, d->n,
                                     x->explicit_id ? &x->fp : NULL, versions, err);
    if (rc == ES_OK && d->n)
        rc = x->log->store->append(x->log, cmd->aggregate_type, cmd->aggregate_id, before, p->recs,
                                   d->n, p->offsets, err);
    x->version = before + d->n;
    x->entry->version = x->version;
    x->res->version = x->version;
    x->res->first_version = d->n ? before + 1 : 0;
    x->res->last_version = d->n ? x->version : 0;
    set_result(x->res, ES_OUTCOME_ACCEPTED, ES_OK, NULL);
    if (rc == ES_OK)
        rc = snapshot_due(x, before, err);
    if (rc == ES_OK)
        rc = record_command(x, ES_OUTCOME_ACCEPTED, err);
    if (rc == ES_OK)
        rc = fill_events(x->res, p, err);
    return rc;
}

static es_err decide_and_apply(exec_ctx *x, es_error_t *err) {
    es_decision_t d = {0};
    es_err rc = es_decide(&x->subj, x->state, x->cmd->message, &d, x->err);
    x->res->version = x->version;
    if (rc == ES_OK) {
        rc = apply_decision(x, &d, err);
    } else if (rc == ES_EREJECTED) {
        set_result(x->res, ES_OUTCOME_REJECTED, ES_EREJECTED, d.reason);
        rc = record_command(x, ES_OUTCOME_REJECTED, err);
    } else if (rc == ES_ENOMEM) {
        rc = es_fail(err, ES_ENOMEM, "%s", x->err->message);
    } else {
        rc = set_result(x->res, ES_OUTCOME_ERROR, rc, x->err->message);
    }
    es_decision_free(&d);
    return rc;
}

/* The command's own checks; a failure is its result, not the batch's. */
static es_err check_command(exec_ctx *x, es_error_t *cerr) {
    const es_command_t *cmd = x->cmd;
    es_engine_t *e = x->engine;
    es_err rc;
    if (cmd->aggregate_type && cmd->aggregate_type == e->batch_type) {
        if ((rc = es_validate_command_rest(cmd, cerr)) != ES_OK)
            return rc;
        x->reg = e->batch_reg;
    } else {
        if ((rc = es_validate_command(cmd, cerr)) != ES_OK)
            return rc;
        if (!(x->reg = find_reg(e, cmd->aggregate_type)))
            return es_fail(cerr, ES_EUNKNOWN_TYPE,
                           "aggregate type '%s' is not registered with this engine; call "
                           "es_engine_register first",
                           cmd->aggregate_type);
        e->batch_type = cmd->aggregate_type;
        e->batch_reg = x->reg;
    }
    x->subj = (es_subject_t){x->reg->def, x->reg->opaque, cmd->aggregate_id};
    if ((rc = es_command_type_check(x->reg->def, cmd->message, cerr)) != ES_OK)
        return rc;
    if (cmd->deadline_us && es_now_us() > cmd->deadline_us)
        return es_fail(cerr, ES_ETIMEOUT,
                       "command %s for %s/%s reached its deadline before it could run",
                       x->command_id, cmd->aggregate_type, cmd->aggregate_id);
    return ES_OK;
}

static es_err execute_one(exec_ctx *x, es_error_t *err) {
    const es_command_t *cmd = x->cmd;
    es_result_t *res = x->res;
    es_command_record_t rec;
    es_err rc = check_command(x, x->err);
    if (rc != ES_OK)
        return set_result(res, ES_OUTCOME_ERROR, rc, x->err->message);

    if (x->explicit_id) {
        if (es_fingerprint_of(&x->engine->fingerprinter, cmd->message, &x->fp) != ES_OK)
            return es_fail(err, ES_ENOMEM, "out of memory packing command %s", x->command_id);
        rc = x->log->store->find_command(x->log, x->command_id, &rec, err);
        if (rc == ES_OK)
            return answer_duplicate(x, &rec, err);
        if (rc != ES_ENOTFOUND)
            return rc;
    }

    rc = x->log->reader->stream_version(x->log, cmd->aggregate_type, cmd->aggregate_id, &x->version,
                                        err);
    if (rc != ES_OK)
        return rc;
    res->version = x->version;
    rc = es_check_expect(cmd->aggregate_type, cmd->aggregate_id, cmd->expect, cmd->expected_version,
                         x->version, x->err);
    if (rc != ES_OK)
        return set_result(res, ES_OUTCOME_CONFLICT, rc, x->err->message);

    rc = load_state(x, x->err);
    if (rc != ES_OK)
        return is_fatal(x, rc) ? es_fail(err, rc, "%s", x->err->message)
                               : set_result(res, ES_OUTCOME_ERROR, rc, x->err->message);
    return decide_and_apply(x, err);
}

static const char *outcome_word(const es_result_t *r) {
    return r->duplicate ? "duplicate" : es_outcome_name(r->outcome);
}

/* The execute span's start or end (rc: the batch's error; the command's own is its result). */
static void execute_span(const exec_ctx *x, const es_config_t *cfg, es_span_phase phase,
                         int64_t start, es_err rc) {
    const es_command_t *cmd = x->cmd;
    char name[ES_MAX_TYPE_LEN + 16];
    snprintf(name, sizeof name, "eskit.execute %s", cmd->aggregate_type ? cmd->aggregate_type : "");
    const char *outcome = phase == ES_SPAN_END ? (rc ? "error" : outcome_word(x->res)) : NULL;
    es_kv_t attrs[] = {{"aggregate_type", cmd->aggregate_type ? cmd->aggregate_type : ""},
                       {"aggregate_id", cmd->aggregate_id ? cmd->aggregate_id : ""},
                       {"command_id", x->command_id},
                       {"command_type", cmd->message ? cmd->message->descriptor->name : ""},
                       {"outcome", outcome ? outcome : ""}};
    es_err status = rc ? rc : x->res->code;
    es_span_emit(cfg, phase, name, &x->trace, start, phase == ES_SPAN_END ? es_now_us() : 0,
                 phase == ES_SPAN_END ? status : ES_OK, outcome, attrs,
                 phase == ES_SPAN_END ? 5 : 4);
}

static es_err run_command(es_engine_t *engine, es_log_t *log, const es_command_t *cmd,
                          es_result_t *res, es_error_t *err) {
    char generated[ES_UUID_STR_LEN + 1];
    es_error_t cerr = {0};
    memset(res, 0, sizeof *res);
    if (!cmd->command_id || !*cmd->command_id)
        es_uuid7(generated);
    const char *cid = cmd->command_id && *cmd->command_id ? cmd->command_id : generated;
    if (!(res->command_id = strdup(cid)))
        return es_fail(err, ES_ENOMEM, "out of memory executing a command");
    exec_ctx x = {.engine = engine,
                  .log = log,
                  .cmd = cmd,
                  .command_id = cid,
                  .explicit_id = cid != generated,
                  .res = res,
                  .err = &cerr};
    engine->folder.fault = 0;
    if (!engine->trace_given || !es_trace_read(cmd->metadata, cmd->n_metadata, &x.trace))
        es_trace_start(cmd->metadata, cmd->n_metadata, &x.trace);
    const es_config_t *cfg = es_store_config(engine->store);
    if (!es_span_on(cfg))
        return execute_one(&x, err);
    int64_t start = es_now_us();
    execute_span(&x, cfg, ES_SPAN_START, start, ES_OK);
    es_err rc = execute_one(&x, err);
    execute_span(&x, cfg, ES_SPAN_END, start, rc);
    return rc;
}

/* What the first command that is not accepted does to the batch. */
typedef enum batch_mode {
    PER_COMMAND,    /* it is its own result; the others run and commit (es_execute_batch) */
    ALL_OR_NOTHING, /* it aborts the batch: everything rolls back (es_execute_all) */
} batch_mode;

/* After an all-or-nothing batch rolled back: the states it loaded may hold its events, so the
 * entries of its aggregates go (the others are untouched by it). A command that failed its
 * checks may name no valid aggregate: its key is skipped when it cannot fit. */
static void forget_batch_states(es_engine_t *e, const es_command_t *cmds, size_t n) {
    char key[STATE_KEY_MAX];
    for (size_t i = 0; i < n; i++) {
        const es_command_t *c = &cmds[i];
        if (!c->aggregate_type || !c->aggregate_id ||
            strlen(c->aggregate_type) + 1 + strlen(c->aggregate_id) > sizeof key)
            continue;
        es_lru_remove(e->states, key, state_key(c->aggregate_type, c->aggregate_id, key));
    }
    prune_due_keys(e);
}

static const char *what_happened(es_outcome o) {
    switch (o) {
    case ES_OUTCOME_REJECTED:
        return "was rejected";
    case ES_OUTCOME_CONFLICT:
        return "met a version conflict";
    default:
        return "failed";
    }
}

/* The results of a rolled-back all-or-nothing batch: the culprit k keeps its own (without
 * events: none were appended), every other command is ES_EABORTED naming k. Returns k's code. */
static es_err abort_results(const es_command_t *cmds, size_t n, es_result_t *results, size_t k,
                            es_error_t *err) {
    es_result_t *culprit = &results[k];
    const es_command_t *ck = &cmds[k];
    char reason[ES_MAX_ID_LEN + ES_MAX_TYPE_LEN + ES_MAX_ID_LEN + 160];
    for (size_t i = 0; i < culprit->n_events; i++)
        es_event_free(culprit->events[i]);
    free(culprit->events);
    culprit->events = NULL;
    culprit->n_events = 0;
    snprintf(reason, sizeof reason,
             "not executed: command %zu (%.*s for %.*s/%.*s) of this es_execute_all %s; nothing "
             "of the batch was appended",
             k, ES_MAX_ID_LEN, culprit->command_id, ES_MAX_TYPE_LEN,
             ck->aggregate_type ? ck->aggregate_type : "?", ES_MAX_ID_LEN,
             ck->aggregate_id ? ck->aggregate_id : "?", what_happened(culprit->outcome));
    char *escaped = es_needs_escape(reason) ? es_escape_dup(reason) : NULL; /* one line of text */
    for (size_t i = 0; i < n; i++) {
        if (i == k)
            continue;
        es_result_t *r = &results[i];
        if (i < k)
            es_result_clear(r);
        memset(r, 0, sizeof *r);
        r->outcome = ES_OUTCOME_ERROR;
        r->code = ES_EABORTED;
        r->command_id =
            cmds[i].command_id && *cmds[i].command_id ? strdup(cmds[i].command_id) : NULL;
        r->reason = strdup(escaped ? escaped : reason);
    }
    free(escaped);
    return es_fail(err, culprit->code,
                   "es_execute_all: command %zu of %zu (%s for %s/%s) %s, so the whole batch was "
                   "rolled back and nothing was appended: %s",
                   k, n, culprit->command_id, ck->aggregate_type ? ck->aggregate_type : "?",
                   ck->aggregate_id ? ck->aggregate_id : "?", what_happened(culprit->outcome),
                   culprit->reason ? culprit->reason : es_strerror(culprit->code));
}

/* Counts a finished batch: each command by outcome, with the batch's duration (a failed batch:
 * each command an error; an aborted one: the culprit by its outcome, the others errors). A
 * command for an unregistered type is not counted: its type is not a bounded label. */
/* What one run of commands of one type adds up to, added to its counters at once. */
typedef struct type_tally {
    const registration *reg;
    uint64_t outcome[4], events, commands;
} type_tally;

static void add_tally(type_tally *t, uint64_t ns) {
    if (!t->reg || !t->reg->mx || !t->commands)
        return;
    for (int o = 0; o < 4; o++)
        if (t->outcome[o])
            es_mx_add(&t->reg->mx->outcome[o], t->outcome[o]);
    if (t->events)
        es_mx_add(&t->reg->mx->events, t->events);
    es_mx_observe_n(&t->reg->mx->duration, ns, t->commands);
}

static void count_batch(es_engine_t *e, const es_command_t *cmds, const es_result_t *results,
                        size_t n, es_err rc, size_t culprit, uint64_t ns) {
    es_mx_observe(&e->mx_batch, n);
    /* A batch is mostly runs of one type, named by one string: the counters are found once a
     * run and added to once a run, not once a command. */
    type_tally t = {0};
    const char *type = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!i || cmds[i].aggregate_type != type) {
            add_tally(&t, ns);
            type = cmds[i].aggregate_type;
            t = (type_tally){.reg = type ? find_reg(e, type) : NULL};
        }
        if (!t.reg)
            continue;
        es_outcome o = ES_OUTCOME_ERROR;
        if (rc == ES_OK && (culprit == n || culprit == i) && results[i].outcome >= 1 &&
            results[i].outcome <= 4)
            o = results[i].outcome;
        t.outcome[o - 1]++;
        if (o == ES_OUTCOME_ACCEPTED && culprit == n && !results[i].duplicate)
            t.events += results[i].n_events;
        t.commands++;
    }
    add_tally(&t, ns);
}

/* The local executor: the commands in one transaction of the engine's log, hook before the
 * commit. culprit is set to the command that aborted an all-or-nothing batch, or n. */
static es_err execute_local(es_engine_t *engine, const es_command_t *cmds, size_t n,
                            es_result_t *results, batch_mode mode, es_engine_hook *hook,
                            void *opaque, size_t *culprit, es_error_t *err) {
    es_log_t *log;
    *culprit = n;
    uint64_t t0 = engine->mx_src ? es_mono_ns() : 0;
    es_err rc = es_store_lock(engine->store, &log, err);
    if (rc != ES_OK)
        return rc;
    rc = log->store->begin(log, err);
    engine->batch_type = NULL;
    engine->batch_seq++;
    size_t done = 0;
    for (; rc == ES_OK && done < n && *culprit == n; done++) {
        rc = run_command(engine, log, &cmds[done], &results[done], err);
        if (rc == ES_OK && mode == ALL_OR_NOTHING && results[done].code != ES_OK)
            *culprit = done;
    }
    int commit = rc == ES_OK && *culprit == n;
    if (commit)
        rc = write_due_snapshots(engine, log, hook != NULL, err);
    if (commit && rc == ES_OK && hook)
        rc = hook(opaque, log, cmds, results, n, err);
    if (commit && rc == ES_OK)
        rc = log->store->commit(log, err);
    else
        log->store->rollback(log);
    if (rc == ES_OK && commit) {
        es_lru_trim(engine->states);
    } else if (rc == ES_OK) {
        forget_batch_states(engine, cmds, done);
        es_lru_trim(engine->states);
    }
    if (engine->mx_src)
        count_batch(engine, cmds, results, n, rc, *culprit, es_mono_ns() - t0);
    if (rc != ES_OK) {
        forget_states(engine);
        for (size_t i = 0; i < done; i++)
            es_result_clear(&results[i]);
    }
    es_store_unlock(engine->store);
    return rc;
}

es_err es_engine_execute_hooked(es_engine_t *engine, const es_command_t *cmds, size_t n,
                                es_result_t *results, es_engine_hook *hook, void *opaque,
                                es_error_t *err) {
    size_t culprit;
    return execute_local(engine, cmds, n, results, PER_COMMAND, hook, opaque, &culprit, err);
}

es_err es_execute_batch_until(es_engine_t *engine, const es_command_t *cmds, size_t n,
                              es_result_t *results, const es_stop_t *stop, es_error_t *err) {
    if (!engine || (n && (!cmds || !results)))
        return es_fail(err, ES_EINVAL, "es_execute_batch: engine, commands and results needed");
    if (engine->readonly)
        return es_fail(err, ES_ESTATE,
                       "es_execute_batch: this engine was opened read-only (ES_OPEN_READONLY) "
                       "and executes no commands; open one with es_engine_new");
    if (engine->remote)
        return engine->remote->ops->execute(engine->remote, cmds, n, results, stop, err);
    return es_engine_execute_hooked(engine, cmds, n, results, NULL, NULL, err);
}

es_err es_execute_batch(es_engine_t *engine, const es_command_t *cmds, size_t n,
                        es_result_t *results, es_error_t *err) {
    return es_execute_batch_until(engine, cmds, n, results, NULL, err);
}

es_err es_execute_all(es_engine_t *engine, const es_command_t *cmds, size_t n, es_result_t *results,
                      es_error_t *err) {
    if (!engine || (n && (!cmds || !results)))
        return es_fail(err, ES_EINVAL, "es_execute_all: engine, commands and results needed");
    if (n)
        memset(results, 0, n * sizeof *results);
    if (engine->readonly)
        return es_fail(err, ES_ESTATE,
                       "es_execute_all: this engine was opened read-only (ES_OPEN_READONLY) and "
                       "executes no commands; open one with es_engine_new");
    if (engine->remote) {
        const char *why = es_backend_of(es_store_config(engine->store))->no_all;
        return es_fail(err, ES_EINVAL, "es_execute_all of %zu command(s): %s", n,
                       why ? why : "this backend cannot run a batch all-or-nothing");
    }
    size_t culprit;
    es_err rc = execute_local(engine, cmds, n, results, ALL_OR_NOTHING, NULL, NULL, &culprit, err);
    if (rc == ES_OK && culprit < n)
        rc = abort_results(cmds, n, results, culprit, err);
    return rc;
}

es_err es_execute(es_engine_t *engine, const es_command_t *cmd, es_result_t *res, es_error_t *err) {
    es_result_t local = {0};
    es_result_t *r = res ? res : &local;
    if (!cmd)
        return es_fail(err, ES_EINVAL, "es_execute: command is required");
    es_err rc = es_execute_batch(engine, cmd, 1, r, err);
    if (rc == ES_OK && r->code != ES_OK) {
        rc = r->code;
        es_fail(err, rc, "%s", r->reason ? r->reason : es_strerror(rc));
    }
    if (!res)
        es_result_clear(&local);
    return rc;
}

/* The state at x->version: a clone of the cached one, or rebuilt (and not cached: a read must
 * not pin memory the writers' cache budgets for). */
static es_err load_copy(exec_ctx *x, ProtobufCMessage **state, es_error_t *err) {
    char key[STATE_KEY_MAX];
    size_t klen = state_key(x->cmd->aggregate_type, x->cmd->aggregate_id, key);
    state_entry *se = es_lru_get(x->engine->states, key, klen);
    if (se && se->reg == x->reg && se->version == x->version) {
        if (!(*state = es_pb_clone(se->state)))
            return es_fail(err, ES_ENOMEM, "out of memory copying a %s state", x->reg->def->type);
        return ES_OK;
    }
    es_err rc = rebuild_state(x, err);
    if (rc == ES_OK)
        *state = x->state;
    else if (x->state)
        protobuf_c_message_free_unpacked(x->state, NULL);
    x->state = NULL;
    return rc;
}

es_err es_engine_load_state(es_engine_t *engine, const char *aggregate_type,
                            const char *aggregate_id, ProtobufCMessage **state, uint64_t *version,
                            es_error_t *err) {
    if (!engine || !state)
        return es_fail(err, ES_EINVAL, "es_engine_load_state: engine and state are required");
    *state = NULL;
    es_err rc = es_validate_aggregate_type(aggregate_type, err);
    if (rc == ES_OK)
        rc = es_validate_aggregate_id(aggregate_id, err);
    if (rc != ES_OK)
        return rc;
    const registration *reg = find_reg(engine, aggregate_type);
    if (!reg)
        return es_fail(err, ES_EUNKNOWN_TYPE,
                       "aggregate type '%s' is not registered on this engine; register its "
                       "definition with es_engine_register",
                       aggregate_type);
    es_log_t *log;
    if ((rc = es_store_lock(engine->store, &log, err)) != ES_OK)
        return rc;
    es_command_t cmd = {.aggregate_type = aggregate_type, .aggregate_id = aggregate_id};
    es_error_t cerr = {0};
    exec_ctx x = {.engine = engine,
                  .log = log,
                  .cmd = &cmd,
                  .reg = reg,
                  .subj = {reg->def, reg->opaque, aggregate_id},
                  .err = &cerr};
    rc = log->reader->stream_version(log, aggregate_type, aggregate_id, &x.version, err);
    if (rc == ES_OK)
        rc = load_copy(&x, state, err);
    es_store_unlock(engine->store);
    if (rc == ES_OK && version)
        *version = x.version;
    return rc;
}
