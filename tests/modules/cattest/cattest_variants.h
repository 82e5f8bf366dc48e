/* The catalogue tests' type variants, each under the name cattest.v1.Thing (cattest.proto). */
#ifndef CATTEST_VARIANTS_H
#define CATTEST_VARIANTS_H

#include <protobuf-c/protobuf-c.h>

/* "base", "note", "tag", "broken"; NULL for another name. prefix (may be NULL or "") renames
 * the type "<prefix>Thing" in package cattest.v1, for tests that need many types. The
 * descriptor lives until the process ends; the same arguments give the same one (up to 256
 * variants a process, NULL after). */
const ProtobufCMessageDescriptor *cattest_variant(const char *which, const char *prefix);

#endif
