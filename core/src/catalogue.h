/*
 * The schema catalogue's storage, by backend (catalogue.c holds what both share: versions,
 * checks, the registration loop; docs/schemas.md, "Catalogue").
 *
 *   embedded   the es_schemas table of the store file (log/catalogue_sqlite.c)
 *   kafka      the compacted topic schema.topic (default eskit.schemas), one partition, each
 *              record keyed "<full name>/<version>" (log/catalogue_kafka.c)
 *
 * Both record a version only once: registration reads the catalogue, plans the versions it
 * needs (the next free number per name) and asks add to record them; add records none of them
 * when one of those versions was taken meanwhile (*lost), and the caller reads again and
 * replans. The embedded add checks and inserts in one write transaction. Kafka has no
 * conditional write: add produces, then reads the partition back to its end, and the first
 * record of a key is the version's (the one every reader folds to); a writer whose record came
 * second lost, and writes the winner's record again so that compaction, which keeps a key's
 * last record, keeps the winner's.
 */
#ifndef ESKIT_CATALOGUE_H
#define ESKIT_CATALOGUE_H

#include "internal.h"

#include <eskit/schema.h>

/* One recorded version, as a backend stores it (strings and bytes borrowed). */
typedef struct es_catalogue_rec {
    const char *name;
    uint32_t version;
    const char *fingerprint;
    const uint8_t *schema; /* canonical eskit.v1.Schema bytes */
    size_t schema_len;
    int64_t registered_at_us;
    const char *registered_by;
} es_catalogue_rec;

/* Called per record; return non-zero to stop. */
typedef int es_catalogue_cb(const es_catalogue_rec *rec, void *opaque);

typedef struct es_catalogue_store es_catalogue_store;
typedef struct es_catalogue_ops {
    /* Every record (each version once: the one that holds it), in no particular order. A
     * catalogue that does not exist yet (no table, no topic records) is empty. */
    es_err (*list)(es_catalogue_store *s, es_catalogue_cb *cb, void *opaque, es_error_t *err);
    /* Records recs, whose versions were free when the caller read: all of them, or none and
     * *lost = 1 when a version was taken meanwhile (Kafka: some may be recorded; the caller
     * reads again either way). */
    es_err (*add)(es_catalogue_store *s, const es_catalogue_rec *recs, size_t n, int *lost,
                  es_error_t *err);
    void (*destroy)(es_catalogue_store *s);
} es_catalogue_ops;

struct es_catalogue_store {
    const es_catalogue_ops *ops;
    const char *where; /* for messages: the file, or "topic eskit.schemas on brokers ..." */
};

/* The backends' openers (backends.c's factory calls them). readonly: list only, create
 * nothing. */
es_err es_catalogue_sqlite_open(const es_config_t *cfg, int readonly, es_catalogue_store **out,
                                es_error_t *err);
es_err es_catalogue_kafka_open(const es_config_t *cfg, int readonly, es_catalogue_store **out,
                               es_error_t *err);

/* What a service's component does at start (the saga coordinator, a projector runner): records
 * the schemas of the types it writes and checks those it reads against the log's catalogue,
 * refusing to start (ES_EINCOMPATIBLE, the message prefixed with who) when one breaks
 * schema.compatibility. Either list may be empty; NULL entries are skipped. */
es_err es_catalogue_enrol(const es_config_t *cfg, const char *who,
                          const ProtobufCMessageDescriptor *const *writes, size_t nw,
                          const ProtobufCMessageDescriptor *const *reads, size_t nr,
                          es_error_t *err);

/* Moves src's findings to the end of dst (src is left empty). */
es_err es_schema_report_take(es_schema_report_t *dst, es_schema_report_t *src, es_error_t *err);

/* The catalogue topic's name (config key schema.topic). */
const char *es_catalogue_topic(const es_config_t *cfg);

/* Encodes and decodes a record as the Kafka catalogue writes it (eskit.v1.SchemaRecord).
 * decode's strings point into *keep, which the caller frees with es_catalogue_rec_free. */
es_err es_catalogue_rec_encode(const es_catalogue_rec *r, es_buf_t *out, es_error_t *err);
es_err es_catalogue_rec_decode(const uint8_t *buf, size_t len, es_catalogue_rec *r, void **keep,
                               es_error_t *err);
void es_catalogue_rec_free(void *keep);

#endif
