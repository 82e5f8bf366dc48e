/* The catalogue tests' type variants (cattest_variants.h): a copy of a generated descriptor
 * under another name, which is how a later build of a service presents its own type. Copies are
 * kept in a table for the process's life (the same variant and prefix give the same copy), so
 * they stay reachable and the leak checkers count none. */
#include "cattest_variants.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cattest/cattest.pb-c.h"

#define MAX_VARIANTS 256

typedef struct variant {
    char key[96];
    ProtobufCMessageDescriptor d;
    char name[256], short_name[128], c_name[160];
} variant;

static variant *made[MAX_VARIANTS];
static size_t n_made;

static const ProtobufCMessageDescriptor *generated(const char *which) {
    if (!strcmp(which, "base"))
        return &cattest__v1__thing__descriptor;
    if (!strcmp(which, "note"))
        return &cattest__v1__thing_with_note__descriptor;
    if (!strcmp(which, "tag"))
        return &cattest__v1__thing_with_tag__descriptor;
    if (!strcmp(which, "broken"))
        return &cattest__v1__thing_broken__descriptor;
    return NULL;
}

const ProtobufCMessageDescriptor *cattest_variant(const char *which, const char *prefix) {
    const ProtobufCMessageDescriptor *d = generated(which);
    const char *p = prefix ? prefix : "";
    char key[96];
    snprintf(key, sizeof key, "%s/%s", which, p);
    for (size_t i = 0; d && i < n_made; i++)
        if (!strcmp(made[i]->key, key))
            return &made[i]->d;
    variant *v = d && n_made < MAX_VARIANTS ? calloc(1, sizeof *v) : NULL;
    if (!v)
        return NULL;
    snprintf(v->key, sizeof v->key, "%s", key);
    snprintf(v->short_name, sizeof v->short_name, "%sThing", p);
    snprintf(v->name, sizeof v->name, "cattest.v1.%s", v->short_name);
    snprintf(v->c_name, sizeof v->c_name, "Cattest__V1__%s", v->short_name);
    v->d = *d;
    v->d.name = v->name;
    v->d.short_name = v->short_name;
    v->d.c_name = v->c_name;
    made[n_made++] = v;
    return &v->d;
}
