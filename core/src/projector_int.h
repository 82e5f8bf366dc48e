/* Internals shared by the projector loader, the runner, replay and the DLQ verbs. */
#ifndef ESKIT_PROJECTOR_INT_H
#define ESKIT_PROJECTOR_INT_H

#include "internal.h"

#include <eskit/projector.h>
#include <eskit/runner.h>

#define ES_PROJECTOR_NAME_MAX 64

typedef struct ctx_stmt {
    const char *sql; /* keyed by address: modules pass literals */
    sqlite3_stmt *stmt;
} ctx_stmt;

struct es_projector_ctx {
    sqlite3 *db;
    void *state;
    const char *name;
    ctx_stmt *stmts;
    size_t n_stmts, cap_stmts;
};

/* Finalizes the context's cached statements. */
void es_ctx_clear(es_projector_ctx_t *ctx);

#endif
