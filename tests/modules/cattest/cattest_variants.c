/* The catalogue tests' type variants (cattest_variants.h): a copy of a generated descriptor
 * under another name, which is how a later build of a service presents its own type. */
#include "cattest_variants.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cattest/cattest.pb-c.h"

const ProtobufCMessageDescriptor *cattest_variant(const char *which, const char *prefix) {
    const ProtobufCMessageDescriptor *d = NULL;
    if (!strcmp(which, "base"))
        d = &cattest__v1__thing__descriptor;
    else if (!strcmp(which, "note"))
        d = &cattest__v1__thing_with_note__descriptor;
    else if (!strcmp(which, "tag"))
        d = &cattest__v1__thing_with_tag__descriptor;
    else if (!strcmp(which, "broken"))
        d = &cattest__v1__thing_broken__descriptor;
    if (!d)
        return NULL;
    ProtobufCMessageDescriptor *copy = malloc(sizeof *copy);
    char *name = malloc(256), *short_name = malloc(128), *c_name = malloc(160);
    if (!copy || !name || !short_name || !c_name) {
        free(copy);
        free(name);
        free(short_name);
        free(c_name);
        return NULL;
    }
    const char *p = prefix ? prefix : "";
    snprintf(short_name, 128, "%sThing", p);
    snprintf(name, 256, "cattest.v1.%s", short_name);
    snprintf(c_name, 160, "Cattest__V1__%s", short_name);
    *copy = *d;
    copy->name = name;
    copy->short_name = short_name;
    copy->c_name = c_name;
    return copy;
}
