/*
 * The .proto text a Schema Registry is given for a message type, rendered from its protobuf-c
 * descriptor (docs/registry.md): one file holding the type first, then every message and enum
 * it reaches, nested as they were declared and referred to by full name (".pkg.Type"). A type
 * of another package is refused: eskit registers no schema references.
 */
#ifndef ESKIT_REGISTRY_PROTO_H
#define ESKIT_REGISTRY_PROTO_H

#include "internal.h"

#include <protobuf-c/protobuf-c.h>

/* Caller frees *out with free. ES_EINVAL (naming the field) for a reach into another package. */
es_err es_registry_proto(const ProtobufCMessageDescriptor *d, char **out, es_error_t *err);

#endif
