/* Schema figures: registering a service's types in the catalogue at start-up, beside a raw
 * insert of the same canonical bytes. */
#ifndef ESKIT_BENCH_SCHEMAS_H
#define ESKIT_BENCH_SCHEMAS_H

#include <stddef.h>

typedef struct schema_figs {
    size_t types;    /* types registered */
    double es_ms;    /* es_schemas_open + es_schemas_register of all, into a fresh store */
    double again_ms; /* the same registration again: every type recorded already */
    double raw_ms;   /* one transaction inserting the same canonical bytes into a fresh file */
} schema_figs_t;

/* Registers n_types message types in a fresh store in dir, median of five runs. 0 or -1. */
int bench_registration(const char *dir, size_t n_types, schema_figs_t *out);

#endif
