/*
 * es_registry: a client of Confluent Schema Registry's REST API (docs/registry.md), through
 * libcurl. It registers .proto schemas under subjects, asks the registry's compatibility verdict
 * first, and fetches schemas by id. Requests time out after schema.registry.timeout.ms and are
 * retried schema.registry.retries times, with a doubling backoff, when they could not connect,
 * timed out or got a 5xx. Every error names the registry's URL and the subject. A registry is
 * used by one thread at a time; ids it registered are cached by subject.
 */
#ifndef ESKIT_REGISTRY_H
#define ESKIT_REGISTRY_H

#include "internal.h"

#include <protobuf-c/protobuf-c.h>
#include <stdint.h>

typedef struct es_registry es_registry_t;

/* *out NULL when schema.registry.url is unset (and framing is none: framing without a registry
 * is ES_EINVAL). Caller frees with es_registry_destroy. Makes no request. */
es_err es_registry_open(const es_config_t *cfg, es_registry_t **out, es_error_t *err);
void es_registry_destroy(es_registry_t *r);
/* 1 when record values are framed (schema.registry.framing = confluent). */
int es_registry_framing(const es_registry_t *r);
/* The base URL (borrowed), for messages. */
const char *es_registry_url(const es_registry_t *r);

/* The registry's compatibility verdict for schema (.proto text) against the subject's latest
 * version: ES_OK when compatible or the subject is new, ES_EINCOMPATIBLE when not. */
es_err es_registry_check(es_registry_t *r, const char *subject, const char *schema,
                         es_error_t *err);
/* Registers schema under subject (idempotent at the registry) and sets *id. */
es_err es_registry_register(es_registry_t *r, const char *subject, const char *schema, uint32_t *id,
                            es_error_t *err);
/* The .proto text of schema id. Caller frees *schema with free. */
es_err es_registry_schema(es_registry_t *r, uint32_t id, char **schema, es_error_t *err);

/* Renders d, checks compatibility under subject, then registers it; *id may be NULL. Cached:
 * a subject registered once is not asked again. */
es_err es_registry_put_type(es_registry_t *r, const char *subject,
                            const ProtobufCMessageDescriptor *d, uint32_t *id, es_error_t *err);
/* The envelope's schema id for an events topic: eskit.v1.EventEnvelope under <topic>-value
 * (TopicNameStrategy), registered on first use. */
es_err es_registry_envelope_id(es_registry_t *r, const char *topic, uint32_t *id, es_error_t *err);
/* Registers what an aggregate type's events need: the envelope under <type>.events-value and
 * each event payload type under its full name (RecordNameStrategy). *envelope_id may be NULL. */
es_err es_registry_put_aggregate(es_registry_t *r, const char *type,
                                 const ProtobufCMessageDescriptor *const *events, size_t n,
                                 uint32_t *envelope_id, es_error_t *err);

#endif
