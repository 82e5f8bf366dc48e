/*
 * The schema catalogue (schema.h, catalogue.h): reading a log's recorded versions, and the
 * registration loop both backends share: read, plan each type's version (its own when its
 * schema is recorded, else the next after a check against every recorded version), record the
 * new ones, and read again when another writer took a version first.
 */
#include "catalogue.h"

#include "backends.h"
#include "schema_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_ROUNDS 50 /* registrations that lost a version to another writer, then give up */

typedef struct entry {
    char *name;
    uint32_t version;
    char *fingerprint;
    int64_t at_us;
    char *by;
    es_schema_t *schema;
} entry;

struct es_schemas {
    es_config_t *cfg;
    es_catalogue_store *store;
    int readonly;
    es_compat mode;
    entry *entries; /* the last read, by name then version */
    size_t n, cap;
};

const char *es_catalogue_topic(const es_config_t *cfg) {
    return es_config_get(cfg, "schema.topic");
}

static void drop_entries(es_schemas_t *c) {
    for (size_t i = 0; i < c->n; i++) {
        free(c->entries[i].name);
        free(c->entries[i].fingerprint);
        free(c->entries[i].by);
        es_schema_free(c->entries[i].schema);
    }
    c->n = 0;
}

es_err es_schemas_open(const es_config_t *cfg, int readonly, es_schemas_t **out, es_error_t *err) {
    if (!cfg || !out)
        return es_fail(err, ES_EINVAL, "es_schemas_open: the config and out are required");
    *out = NULL;
    es_compat mode = ES_COMPAT_BACKWARD;
    es_err e = es_compat_parse(es_config_get(cfg, "schema.compatibility"), &mode, err);
    if (e != ES_OK)
        return e;
    es_schemas_t *c = calloc(1, sizeof *c);
    if (!c || !(c->cfg = es_config_dup(cfg))) {
        free(c);
        return es_fail(err, ES_ENOMEM, "out of memory opening the schema catalogue");
    }
    c->readonly = readonly;
    c->mode = mode;
    e = es_backend_of(cfg)->open_catalogue(c->cfg, readonly, &c->store, err);
    if (e != ES_OK) {
        es_config_destroy(c->cfg);
        free(c);
        return e;
    }
    *out = c;
    return ES_OK;
}

void es_schemas_close(es_schemas_t *cat) {
    if (!cat)
        return;
    drop_entries(cat);
    free(cat->entries);
    if (cat->store)
        cat->store->ops->destroy(cat->store);
    es_config_destroy(cat->cfg);
    free(cat);
}

/* ---- reading ------------------------------------------------------------------------------- */

typedef struct load_ctx {
    es_schemas_t *c;
    es_err e;
    es_error_t *err;
} load_ctx;

static int load_one(const es_catalogue_rec *r, void *opaque) {
    load_ctx *x = opaque;
    es_schemas_t *c = x->c;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        entry *n = realloc(c->entries, cap * sizeof *n);
        if (!n) {
            x->e = es_fail(x->err, ES_ENOMEM, "out of memory reading the schema catalogue");
            return 1;
        }
        c->entries = n;
        c->cap = cap;
    }
    es_schema_t *s = NULL;
    es_error_t perr;
    es_err pe = es_schema_parse(r->schema, r->schema_len, &s, &perr);
    if (pe == ES_OK && strcmp(es_schema_name(s), r->name))
        pe = es_fail(&perr, ES_EDECODE, "it holds the schema of %.255s", es_schema_name(s));
    if (pe == ES_OK && strcmp(es_schema_fingerprint(s), r->fingerprint))
        pe = es_fail(&perr, ES_EDECODE, "its schema's fingerprint is %s, the record says %.80s",
                     es_schema_fingerprint(s), r->fingerprint);
    if (pe != ES_OK) {
        es_schema_free(s);
        x->e = es_fail(x->err, ES_EDECODE,
                       "the schema catalogue (%s) has a corrupt record for %.255s version %u: "
                       "%s; restore the record from a backup, or remove it and register again",
                       c->store->where, r->name, r->version, perr.message);
        return 1;
    }
    entry *en = &c->entries[c->n];
    *en = (entry){strdup(r->name),
                  r->version,
                  strdup(r->fingerprint),
                  r->registered_at_us,
                  strdup(r->registered_by ? r->registered_by : ""),
                  s};
    if (!en->name || !en->fingerprint || !en->by) {
        c->n++;
        x->e = es_fail(x->err, ES_ENOMEM, "out of memory reading the schema catalogue");
        return 1;
    }
    c->n++;
    return 0;
}

static int by_name_version(const void *a, const void *b) {
    const entry *x = a, *y = b;
    int d = strcmp(x->name, y->name);
    return d ? d : (x->version > y->version) - (x->version < y->version);
}

/* Reads every record again; a name's versions must run 1..n (a gap is a lost record). */
static es_err load(es_schemas_t *c, es_error_t *err) {
    drop_entries(c);
    load_ctx x = {c, ES_OK, err};
    es_err e = c->store->ops->list(c->store, load_one, &x, err);
    if (e == ES_OK)
        e = x.e;
    if (e != ES_OK)
        return e;
    if (c->n)
        qsort(c->entries, c->n, sizeof *c->entries, by_name_version);
    for (size_t i = 0; i < c->n; i++) {
        uint32_t want = i && !strcmp(c->entries[i - 1].name, c->entries[i].name)
                            ? c->entries[i - 1].version + 1
                            : 1;
        if (c->entries[i].version != want)
            return es_fail(err, ES_EDECODE,
                           "the schema catalogue (%s) has %s version %u but no version %u: a "
                           "record is missing; restore it from a backup",
                           c->store->where, c->entries[i].name, c->entries[i].version, want);
    }
    return ES_OK;
}

es_err es_schemas_list(es_schemas_t *cat, const char *name, es_schema_entry_cb *cb, void *opaque,
                       es_error_t *err) {
    if (!cat || !cb)
        return es_fail(err, ES_EINVAL, "es_schemas_list: the catalogue and cb are required");
    es_err e = load(cat, err);
    for (size_t i = 0; e == ES_OK && i < cat->n; i++) {
        const entry *en = &cat->entries[i];
        if (name && strcmp(name, en->name))
            continue;
        es_schema_entry_t out = {en->name,  en->version, en->fingerprint,
                                 en->at_us, en->by,      en->schema};
        if (cb(&out, opaque))
            break;
    }
    return e;
}

/* The versions of name in the last read: [*first, *first + *n). */
static void history_of(const es_schemas_t *c, const char *name, size_t *first, size_t *n) {
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(c->entries[mid].name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *first = lo;
    for (hi = lo; hi < c->n && !strcmp(c->entries[hi].name, name);)
        hi++;
    *n = hi - lo;
}

es_err es_schema_report_take(es_schema_report_t *dst, es_schema_report_t *src, es_error_t *err) {
    if (!src->n)
        return ES_OK;
    es_schema_finding_t *f = realloc(dst->findings, (dst->n + src->n) * sizeof *f);
    if (!f)
        return es_fail(err, ES_ENOMEM, "out of memory collecting schema findings");
    memcpy(f + dst->n, src->findings, src->n * sizeof *f);
    dst->findings = f;
    dst->n += src->n;
    free(src->findings);
    src->findings = NULL;
    src->n = 0;
    return ES_OK;
}

/* ---- registering --------------------------------------------------------------------------- */

/* One distinct type of a registration, and what the plan decided for it. */
typedef struct planned {
    es_schema_t *schema;
    uint32_t version; /* recorded, or to record */
    int is_new;
} planned;

typedef struct plan {
    planned *items;
    size_t n;
    size_t *index; /* types[i] -> items[index[i]] */
} plan;

static void plan_free(plan *p) {
    for (size_t i = 0; i < p->n; i++)
        es_schema_free(p->items[i].schema);
    free(p->items);
    free(p->index);
    memset(p, 0, sizeof *p);
}

/* The distinct schemas of types; two different schemas of one name are ES_EINVAL. */
static es_err plan_types(const ProtobufCMessageDescriptor *const *types, size_t n, plan *p,
                         es_error_t *err) {
    memset(p, 0, sizeof *p);
    p->items = calloc(n ? n : 1, sizeof *p->items);
    p->index = calloc(n ? n : 1, sizeof *p->index);
    if (!p->items || !p->index) {
        plan_free(p);
        return es_fail(err, ES_ENOMEM, "out of memory registering %zu schemas", n);
    }
    for (size_t i = 0; i < n; i++) {
        if (!types[i]) {
            plan_free(p);
            return es_fail(err, ES_EINVAL, "registering schemas: type %zu is NULL", i);
        }
        es_schema_t *s = NULL;
        es_err e = es_schema_of(types[i], &s, err);
        if (e != ES_OK) {
            plan_free(p);
            return e;
        }
        size_t k = 0;
        while (k < p->n && strcmp(es_schema_name(p->items[k].schema), es_schema_name(s)))
            k++;
        if (k < p->n &&
            strcmp(es_schema_fingerprint(p->items[k].schema), es_schema_fingerprint(s))) {
            es_err r = es_fail(err, ES_EINVAL,
                               "registering schemas: two different schemas are called %s (%s "
                               "and %s); a service has one schema per type name",
                               es_schema_name(s), es_schema_fingerprint(p->items[k].schema),
                               es_schema_fingerprint(s));
            es_schema_free(s);
            plan_free(p);
            return r;
        }
        if (k < p->n)
            es_schema_free(s);
        else
            p->items[p->n++].schema = s;
        p->index[i] = k;
    }
    return ES_OK;
}

/* Checks next against hist (n versions, oldest first) under c's mode, adding findings to
 * report; *first and *ferr keep the first failure. */
static es_err check_into(es_schemas_t *c, const es_schema_t *const *hist, size_t n,
                         const es_schema_t *next, es_schema_report_t *report, es_err *first,
                         es_error_t *ferr, es_error_t *err) {
    es_schema_report_t one = {0};
    es_error_t cerr;
    es_err e = es_schema_check(hist, n, next, c->mode, &one, &cerr);
    if (e != ES_OK && e != ES_EINCOMPATIBLE && err)
        *err = cerr; /* the check itself failed: its own message */
    if (e == ES_EINCOMPATIBLE) {
        if (*first == ES_OK) {
            *first = e;
            *ferr = cerr;
        }
        e = es_schema_report_take(report, &one, err);
    }
    es_schema_report_clear(&one);
    return e;
}

/* Decides each item's version against the last read; findings of every broken rule go to
 * report. ES_EINCOMPATIBLE when there is one.
 *
 * A writer's schema that is recorded keeps its version; a new one is checked against the
 * recorded versions (es_schema_check: the latest, and the whole history for the reuse rules).
 * A reader (reader = 1) must read what every version wrote, its own recorded one included or
 * not: it is checked against each version recorded after its own (all of them when it has none),
 * newest first, and the findings are those of the newest version it cannot read. */
static es_err decide(es_schemas_t *c, plan *p, int reader, es_schema_report_t *report,
                     es_error_t *err) {
    es_err first = ES_OK, e = ES_OK;
    es_error_t ferr = {0};
    for (size_t i = 0; e == ES_OK && i < p->n; i++) {
        planned *it = &p->items[i];
        size_t lo = 0, n = 0, own = 0;
        history_of(c, es_schema_name(it->schema), &lo, &n);
        it->is_new = 1;
        it->version = n ? c->entries[lo + n - 1].version + 1 : 1;
        for (size_t k = 0; k < n; k++)
            if (!strcmp(c->entries[lo + k].fingerprint, es_schema_fingerprint(it->schema))) {
                it->is_new = 0;
                it->version = c->entries[lo + k].version;
                own = k + 1;
            }
        if (!reader && (!it->is_new || !n))
            continue;
        if (!reader) {
            const es_schema_t **hist = malloc(n * sizeof *hist);
            if (!hist)
                return es_fail(err, ES_ENOMEM, "out of memory checking %s",
                               es_schema_name(it->schema));
            for (size_t k = 0; k < n; k++)
                hist[k] = c->entries[lo + k].schema;
            e = check_into(c, hist, n, it->schema, report, &first, &ferr, err);
            free(hist);
            continue;
        }
        es_err before = first;
        for (size_t k = n; e == ES_OK && first == before && k-- > own;) {
            const es_schema_t *one = c->entries[lo + k].schema;
            e = check_into(c, &one, 1, it->schema, report, &first, &ferr, err);
        }
    }
    if (e != ES_OK)
        return e;
    if (first != ES_OK && err)
        *err = ferr;
    return first;
}

static void registrant(char *out, size_t cap) {
    char host[128] = "?", prog[64] = "?";
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "?");
    host[sizeof host - 1] = '\0';
    FILE *f = fopen("/proc/self/comm", "r");
    if (f) {
        if (fgets(prog, sizeof prog, f))
            prog[strcspn(prog, "\n")] = '\0';
        fclose(f);
    }
    snprintf(out, cap, "%s/%ld %s", host, (long)getpid(), prog);
}

/* A pause of 1..16 ms before reading again, so two writers that raced do not race again in
 * step. */
static void back_off(unsigned round) {
    struct timespec ts = {0, (long)(1 + (es_now_us() + (int64_t)round * 7919) % 16) * 1000000L};
    nanosleep(&ts, NULL);
}

static es_err record_new(es_schemas_t *c, const plan *p, int *lost, es_error_t *err) {
    es_catalogue_rec *recs = calloc(p->n ? p->n : 1, sizeof *recs);
    if (!recs)
        return es_fail(err, ES_ENOMEM, "out of memory registering schemas");
    char by[256];
    registrant(by, sizeof by);
    size_t n = 0;
    int64_t now = es_now_us();
    for (size_t i = 0; i < p->n; i++) {
        const planned *it = &p->items[i];
        if (!it->is_new)
            continue;
        size_t len = 0;
        const uint8_t *bytes = es_schema_bytes(it->schema, &len);
        recs[n++] = (es_catalogue_rec){es_schema_name(it->schema),
                                       it->version,
                                       es_schema_fingerprint(it->schema),
                                       bytes,
                                       len,
                                       now,
                                       by};
    }
    *lost = 0;
    es_err e = n ? c->store->ops->add(c->store, recs, n, lost, err) : ES_OK;
    free(recs);
    return e;
}

/* What run does with the types: register them, check them as es_schemas_register would, or
 * check that a reader of them reads every recorded version. */
enum { RUN_REGISTER, RUN_CHECK, RUN_READS };

static es_err run(es_schemas_t *c, const ProtobufCMessageDescriptor *const *types, size_t n,
                  int how, uint32_t *versions, es_schema_report_t *report, es_error_t *err) {
    int write = how == RUN_REGISTER;
    es_schema_report_t local = {0};
    if (!report)
        report = &local;
    es_schema_report_clear(report);
    if (!c || (n && !types))
        return es_fail(err, ES_EINVAL, "registering schemas: the catalogue and types are required");
    if (write && c->readonly)
        return es_fail(err, ES_ESTATE,
                       "the schema catalogue (%s) was opened read-only; nothing was registered",
                       c->store->where);
    plan p;
    es_err e = plan_types(types, n, &p, err);
    int64_t busy_until = es_now_us() + es_config_get_int(c->cfg, "sqlite.busy.timeout.ms") * 1000;
    for (unsigned round = 0; e == ES_OK; round++) {
        es_schema_report_clear(report);
        int lost = 0;
        if ((e = load(c, err)) != ES_OK ||
            (e = decide(c, &p, how == RUN_READS, report, err)) != ES_OK || !write)
            break;
        e = record_new(c, &p, &lost, err);
        if (e == ES_EBUSY && es_now_us() < busy_until) {
            /* Another writer holds the lock: read again, it may have recorded these. */
            e = ES_OK;
            round--;
            back_off(0);
            continue;
        }
        if (e != ES_OK || !lost)
            break;
        if (round + 1 >= MAX_ROUNDS) {
            e = es_fail(err, ES_EBUSY,
                        "registering schemas in %s: other writers took the versions %u times "
                        "in a row; try again",
                        c->store->where, round + 1);
            break;
        }
        es_logf(c->cfg, ES_LOG_INFO,
                "registering schemas in %s: another writer took a version first; reading again",
                c->store->where);
        back_off(round);
    }
    for (size_t i = 0; e == ES_OK && versions && i < n; i++)
        versions[i] = p.items[p.index[i]].version;
    plan_free(&p);
    es_schema_report_clear(&local);
    return e;
}

es_err es_schemas_register(es_schemas_t *cat, const ProtobufCMessageDescriptor *const *types,
                           size_t n, uint32_t *versions, es_schema_report_t *report,
                           es_error_t *err) {
    return run(cat, types, n, RUN_REGISTER, versions, report, err);
}

es_err es_schemas_check(es_schemas_t *cat, const ProtobufCMessageDescriptor *const *types, size_t n,
                        es_schema_report_t *report, es_error_t *err) {
    return run(cat, types, n, RUN_CHECK, NULL, report, err);
}

/* ---- the Kafka record ---------------------------------------------------------------------- */

#include "eskit/v1/schema.pb-c.h"

es_err es_catalogue_rec_encode(const es_catalogue_rec *r, es_buf_t *out, es_error_t *err) {
    Eskit__V1__Schema *schema = eskit__v1__schema__unpack(NULL, r->schema_len, r->schema);
    if (!schema)
        return es_fail(err, ES_EDECODE, "the schema of %s does not decode", r->name);
    Eskit__V1__SchemaRecord rec = ESKIT__V1__SCHEMA_RECORD__INIT;
    rec.full_name = (char *)r->name;
    rec.version = r->version;
    rec.fingerprint = (char *)r->fingerprint;
    rec.schema = schema;
    rec.registered_at_us = r->registered_at_us;
    rec.registered_by = (char *)(r->registered_by ? r->registered_by : "");
    size_t len = eskit__v1__schema_record__get_packed_size(&rec);
    out->len = 0;
    es_err e = es_buf_reserve(out, len);
    if (e == ES_OK)
        out->len = eskit__v1__schema_record__pack(&rec, out->data);
    eskit__v1__schema__free_unpacked(schema, NULL);
    return e == ES_OK ? ES_OK : es_fail(err, ES_ENOMEM, "out of memory encoding a schema record");
}

/* What a decoded record's strings and bytes point into. */
typedef struct rec_keep {
    Eskit__V1__SchemaRecord *rec;
    uint8_t *schema;
} rec_keep;

es_err es_catalogue_rec_decode(const uint8_t *buf, size_t len, es_catalogue_rec *r, void **keep,
                               es_error_t *err) {
    *keep = NULL;
    rec_keep *k = calloc(1, sizeof *k);
    if (!k)
        return es_fail(err, ES_ENOMEM, "out of memory decoding a schema record");
    k->rec = eskit__v1__schema_record__unpack(NULL, len, buf ? buf : (const uint8_t *)"");
    if (!k->rec || !k->rec->schema || !*k->rec->full_name || !k->rec->version) {
        es_catalogue_rec_free(k);
        return es_fail(err, ES_EDECODE,
                       "%zu bytes that are not an eskit.v1.SchemaRecord with a name, a version "
                       "and a schema",
                       len);
    }
    size_t slen = eskit__v1__schema__get_packed_size(k->rec->schema);
    if (!(k->schema = malloc(slen ? slen : 1))) {
        es_catalogue_rec_free(k);
        return es_fail(err, ES_ENOMEM, "out of memory decoding a schema record");
    }
    eskit__v1__schema__pack(k->rec->schema, k->schema);
    *r = (es_catalogue_rec){
        k->rec->full_name,        k->rec->version,      k->rec->fingerprint, k->schema, slen,
        k->rec->registered_at_us, k->rec->registered_by};
    *keep = k;
    return ES_OK;
}

void es_catalogue_rec_free(void *keep) {
    rec_keep *k = keep;
    if (!k)
        return;
    if (k->rec)
        eskit__v1__schema_record__free_unpacked(k->rec, NULL);
    free(k->schema);
    free(k);
}

/* ---- components at start ------------------------------------------------------------------- */

/* list without its NULL entries, in *out (caller frees). */
static es_err compact_list(const ProtobufCMessageDescriptor *const *list, size_t n,
                           const ProtobufCMessageDescriptor ***out, size_t *m, es_error_t *err) {
    *m = 0;
    *out = malloc((n ? n : 1) * sizeof **out);
    if (!*out)
        return es_fail(err, ES_ENOMEM, "out of memory registering schemas");
    for (size_t i = 0; i < n; i++)
        if (list[i])
            (*out)[(*m)++] = list[i];
    return ES_OK;
}

es_err es_catalogue_enrol(const es_config_t *cfg, const char *who,
                          const ProtobufCMessageDescriptor *const *writes, size_t nw,
                          const ProtobufCMessageDescriptor *const *reads, size_t nr,
                          es_error_t *err) {
    const ProtobufCMessageDescriptor **w = NULL, **r = NULL;
    size_t mw = 0, mr = 0;
    es_schemas_t *cat = NULL;
    es_err e = compact_list(writes, nw, &w, &mw, err);
    if (e == ES_OK)
        e = compact_list(reads, nr, &r, &mr, err);
    if (e == ES_OK && (mw || mr))
        e = es_schemas_open(cfg, 0, &cat, err);
    if (e == ES_OK && mw)
        e = es_schemas_register(cat, w, mw, NULL, NULL, err);
    if (e == ES_OK && mr)
        e = run(cat, r, mr, RUN_READS, NULL, NULL, err);
    if (e != ES_OK)
        es_error_prefix(err, "%s: ", who);
    es_schemas_close(cat);
    free(w);
    free(r);
    return e;
}
