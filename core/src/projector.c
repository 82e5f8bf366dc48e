/*
 * Projector definitions: the checks every definition passes before a runner
 * uses it, the loader for modules in .so files, and the context an apply
 * callback gets (the read-model connection and a per-runner statement cache).
 */
#include "projector_int.h"
#include "catalogue.h"
#include "module.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct es_projector_module {
    es_module mod;
    const es_projector_def *def;
};

static int name_char_ok(char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

es_err es_projector_check(const es_projector_def *def, const char *origin, es_error_t *err) {
    if (!def)
        return es_fail(err, ES_EINVAL, "%s: no projector definition", origin);
    /* This ABI or an older one (docs/abi.md); there is one so far. */
    if (def->abi_version < 1 || def->abi_version > ES_PROJECTOR_ABI)
        return es_fail(err, ES_EINVAL,
                       "%s: projector ABI version %d, this eskit takes 1 to %d; rebuild the "
                       "module against this eskit's headers",
                       origin, def->abi_version, ES_PROJECTOR_ABI);
    size_t len = def->name ? strlen(def->name) : 0;
    if (len == 0 || len > ES_PROJECTOR_NAME_MAX)
        return es_fail(err, ES_EINVAL, "%s: projector name must be 1..%d characters", origin,
                       ES_PROJECTOR_NAME_MAX);
    for (size_t i = 0; i < len; i++)
        if (!name_char_ok(def->name[i]))
            return es_fail(err, ES_EINVAL,
                           "%s: projector name '%s' may only hold a-z, 0-9, '_' and '-'", origin,
                           def->name);
    if (def->schema_version < 1)
        return es_fail(err, ES_EINVAL, "%s: projector '%s' has schema version %d; start at 1",
                       origin, def->name, def->schema_version);
    const es_event_handler_t *h = def->abi_version >= 2 ? def->handlers : NULL;
    size_t nh = h ? def->n_handlers : 0;
    if (!def->migrate || (!def->apply && !nh))
        return es_fail(err, ES_EINVAL, "%s: projector '%s' lacks %s", origin, def->name,
                       def->migrate ? "apply (or handlers)" : "migrate");
    for (size_t i = 0; i < nh; i++)
        if (!h[i].descriptor || h[i].descriptor->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC ||
            !h[i].fn)
            return es_fail(err, ES_EINVAL,
                           "%s: projector '%s': handler %zu needs a protobuf-c message "
                           "descriptor and a function",
                           origin, def->name, i);
    if (!def->topics || !def->topics[0])
        return es_fail(err, ES_EINVAL, "%s: projector '%s' reads no topics", origin, def->name);
    for (size_t i = 0; def->topics[i]; i++) {
        const char *t = def->topics[i];
        size_t tl = strlen(t);
        char type[ES_MAX_TYPE_LEN + 1];
        if (tl <= 7 || strcmp(t + tl - 7, ".events") || tl - 7 > ES_MAX_TYPE_LEN)
            return es_fail(err, ES_EINVAL,
                           "%s: projector '%s' reads '%s'; topics are '<aggregate type>.events'",
                           origin, def->name, t);
        memcpy(type, t, tl - 7);
        type[tl - 7] = '\0';
        es_err e = es_validate_aggregate_type(type, err);
        if (e != ES_OK) {
            es_error_prefix(err, "%s: projector '%s', topic '%s': ", origin, def->name, t);
            return e;
        }
    }
    return ES_OK;
}

es_err es_projector_load(const es_config_t *cfg, const char *name_or_path,
                         es_projector_module_t **out, es_error_t *err) {
    *out = NULL;
    es_projector_module_t *m = calloc(1, sizeof *m);
    if (!m)
        return es_fail(err, ES_ENOMEM, "out of memory loading %s",
                       name_or_path ? name_or_path : "a projector module");
    es_err e = es_module_open(cfg, "projector", name_or_path, ES_PROJECTOR_ENTRY,
                              "your const es_projector_def *", &m->mod, err);
    if (e == ES_OK) {
        es_projector_entry_cb *entry;
        *(void **)&entry = m->mod.entry;
        e = es_projector_check(m->def = entry(), m->mod.path, err);
    }
    if (e != ES_OK) {
        es_projector_unload(m);
        return e;
    }
    *out = m;
    return ES_OK;
}

const es_projector_def *es_projector_module_def(const es_projector_module_t *mod) {
    return mod->def;
}

const char *es_projector_module_path(const es_projector_module_t *mod) {
    return mod->mod.path;
}

void es_projector_unload(es_projector_module_t *mod) {
    if (!mod)
        return;
    es_module_close(&mod->mod);
    free(mod);
}

sqlite3 *es_ctx_db(es_projector_ctx_t *ctx) {
    return ctx->db;
}

void *es_ctx_state(es_projector_ctx_t *ctx) {
    return ctx->state;
}

/* A module's statement (prepared, or run when preparing is 0) that failed on rc: a busy read
 * model is retried (ES_ERETRY) and a failed file or disk is the read model's (ES_EIO), both
 * worded by sql.c; anything else is the module's SQL failing on this event (ES_EINVAL). */
static es_err statement_failed(es_projector_ctx_t *ctx, int rc, const char *sql, int preparing,
                               es_error_t *err) {
    int busy = (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
    if (!busy && !es_sql_storage_fault(rc) && preparing)
        return es_fail(err, ES_EINVAL, "projector '%s': cannot prepare \"%s\": %s", ctx->name, sql,
                       sqlite3_errmsg(ctx->db));
    if (!busy && !es_sql_storage_fault(rc))
        return es_fail(err, ES_EINVAL, "projector '%s': \"%s\" failed: %s", ctx->name, sql,
                       sqlite3_errmsg(ctx->db));
    char doing[ES_PROJECTOR_NAME_MAX + 96];
    snprintf(doing, sizeof doing, "projector '%s': \"%.48s\"", ctx->name, sql);
    es_sql_fail(ctx->db, rc, doing, err);
    es_err e = busy ? ES_ERETRY : ES_EIO;
    if (err)
        err->code = e;
    return e;
}

sqlite3_stmt *es_ctx_stmt(es_projector_ctx_t *ctx, const char *sql, es_error_t *err) {
    for (size_t i = 0; i < ctx->n_stmts; i++)
        if (ctx->stmts[i].sql == sql) {
            sqlite3_reset(ctx->stmts[i].stmt);
            sqlite3_clear_bindings(ctx->stmts[i].stmt);
            return ctx->stmts[i].stmt;
        }
    if (ctx->n_stmts == ctx->cap_stmts) {
        size_t cap = ctx->cap_stmts ? ctx->cap_stmts * 2 : 8;
        void *p = realloc(ctx->stmts, cap * sizeof *ctx->stmts);
        if (!p) {
            es_fail(err, ES_ENOMEM, "out of memory preparing a statement");
            return NULL;
        }
        ctx->stmts = p;
        ctx->cap_stmts = cap;
    }
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v3(ctx->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, NULL);
    if (rc != SQLITE_OK) {
        statement_failed(ctx, rc, sql, 1, err);
        return NULL;
    }
    ctx->stmts[ctx->n_stmts].sql = sql;
    ctx->stmts[ctx->n_stmts++].stmt = s;
    return s;
}

es_err es_ctx_exec(es_projector_ctx_t *ctx, sqlite3_stmt *stmt, es_error_t *err) {
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
        ;
    es_err e = ES_OK;
    if (rc != SQLITE_DONE)
        e = statement_failed(ctx, rc, sqlite3_sql(stmt), 0, err);
    sqlite3_reset(stmt);
    return e;
}

es_err es_ctx_dispatch(es_projector_ctx_t *ctx, const es_event_t *ev,
                       const es_event_handler_t *handlers, size_t n, es_error_t *err) {
    const es_event_handler_t *h = NULL;
    for (size_t i = 0; i < n && !h; i++)
        if (!strcmp(ev->event_type, handlers[i].descriptor->name))
            h = &handlers[i];
    if (!h)
        return es_fail(err, ES_EUNKNOWN_TYPE,
                       "%s: no handler for event type '%s' (%s/%s, partition %d, offset %lld)",
                       ctx->name, ev->event_type, ev->aggregate_type, ev->aggregate_id,
                       (int)ev->partition, (long long)ev->offset);
    ProtobufCMessage *msg =
        protobuf_c_message_unpack(h->descriptor, ctx->alloc, ev->payload_len, ev->payload);
    if (!msg)
        return es_fail(err, ES_EDECODE,
                       "%s: the %zu-byte payload of %s (%s/%s, partition %d, offset %lld) is not "
                       "a valid %s",
                       ctx->name, ev->payload_len, ev->event_type, ev->aggregate_type,
                       ev->aggregate_id, (int)ev->partition, (long long)ev->offset,
                       h->descriptor->name);
    es_err e = h->fn(ctx, ev, msg, err);
    protobuf_c_message_free_unpacked(msg, ctx->alloc);
    return e;
}

es_err es_projector_apply(const es_projector_def *def, es_projector_ctx_t *ctx,
                          const es_event_t *ev, es_error_t *err) {
    if (def->apply)
        return def->apply(ctx, ev, err);
    return es_ctx_dispatch(ctx, ev, def->handlers, def->n_handlers, err);
}

es_err es_projector_check_reads(const es_config_t *cfg, const es_projector_def *def,
                                es_error_t *err) {
    size_t n = def->abi_version >= 2 && def->handlers ? def->n_handlers : 0;
    if (!n)
        return ES_OK;
    const ProtobufCMessageDescriptor **reads = malloc(n * sizeof *reads);
    if (!reads)
        return es_fail(err, ES_ENOMEM, "out of memory starting projector '%s'", def->name);
    for (size_t i = 0; i < n; i++)
        reads[i] = def->handlers[i].descriptor;
    char who[ES_PROJECTOR_NAME_MAX + 16];
    snprintf(who, sizeof who, "projector '%s'", def->name);
    es_err e = es_catalogue_enrol(cfg, who, NULL, 0, reads, n, err);
    free(reads);
    return e;
}

void es_ctx_clear(es_projector_ctx_t *ctx) {
    for (size_t i = 0; i < ctx->n_stmts; i++)
        sqlite3_finalize(ctx->stmts[i].stmt);
    free(ctx->stmts);
    ctx->stmts = NULL;
    ctx->n_stmts = ctx->cap_stmts = 0;
}
