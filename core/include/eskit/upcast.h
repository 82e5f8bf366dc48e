/*
 * Upcasters: how an event stored with an old type or schema reaches readers as the current
 * one. An upcaster turns one stored event of its `from` type into exactly one event of its `to`
 * type; version, position, ids and metadata never change, and the stored bytes are never
 * rewritten (docs/upcasters.md). They run in the read pipeline, so every reader of a config
 * sees only current types: engine load, processor restore, the projector runner, replay, DLQ
 * redrive, the saga coordinator, es_store_read_stream/read_log, esctl events and sagas show.
 *
 * Matching: an event of type T with schema version s (0: written before the catalogue, the
 * oldest) goes to the upcaster of T with the smallest max_schema_version >= s, else to T's
 * unlimited one (max_schema_version 0), else it is current. Chains compose, by type name
 * (v1 -> v2 -> v3) and by version (T up to 1 -> T 2, T up to 2 -> T newest), at most
 * ES_UPCAST_CHAIN_MAX steps.
 */
#ifndef ESKIT_UPCAST_H
#define ESKIT_UPCAST_H

#include <stddef.h>
#include <stdint.h>
#include <eskit/config.h>
#include <eskit/event.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ES_UPCASTER_ABI 1
#define ES_UPCAST_CHAIN_MAX 16 /* upcasters one event may go through */

/* ev: the stored event (its event_type is the upcaster's from). Writes the payload of the `to`
 * type to *out (malloc'd; eskit frees it with free) and *out_len. Non-ES_OK (err set) makes the
 * event poison for a reader and an error for a writer. Runs on the reader's thread. */
typedef es_err es_upcast_cb(const es_event_t *ev, void *opaque, uint8_t **out, size_t *out_len,
                            es_error_t *err);

typedef struct es_upcaster {
    int abi_version;             /* ES_UPCASTER_ABI */
    const char *name;            /* named in errors and DLQ records: "order-placed-v1-to-v2" */
    const char *from;            /* the stored type: "orders.v1.OrderPlaced" */
    const char *to;              /* the type it becomes (may equal from, with max_schema_version) */
    uint32_t max_schema_version; /* 0: every stored event of from; else only events whose
                                    schema_version <= this (0, before the catalogue: oldest) */
    uint32_t to_schema_version;  /* the schema version of `to` its output has, so a later
                                    version-limited upcaster of `to` can take it; 0: `to`'s newest
                                    (no version-limited upcaster applies after it) */
    es_upcast_cb *upcast;
    void *opaque;
} es_upcaster_t;

/* Adds a copy of u (its strings too) to cfg; readers made from cfg (and es_config_dup copies)
 * upcast with it. ES_EINVAL naming the upcaster for a bad one, an overlap with one registered
 * for the same from, or a cycle; cfg is unchanged then. */
ES_API es_err es_config_add_upcaster(es_config_t *cfg, const es_upcaster_t *u, es_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
