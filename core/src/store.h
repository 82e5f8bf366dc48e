/* Internal side of es_store: the engine runs its transactions through these. */
#ifndef ESKIT_STORE_INTERNAL_H
#define ESKIT_STORE_INTERNAL_H

#include "log/log.h"

/* Locks the store for the calling thread and returns its log; ES_ESTATE when
 * called from inside one of the store's own read callbacks. */
es_err es_store_lock(es_store_t *store, es_log_t **log, es_error_t *err);
void es_store_unlock(es_store_t *store);

/* Checks expect against the stream's current version; ES_ECONFLICT names both. */
es_err es_check_expect(const char *type, const char *id, es_expect expect, uint64_t expected,
                       uint64_t current, es_error_t *err);

/* Builds the event views and envelopes of one append (versions base+1..). A zeroed
 * es_pending_t is empty; building again reuses its buffers; es_pending_free releases them. */
typedef struct es_pending {
    es_event_t *evs;
    int64_t *offsets;
    es_log_record_t *recs;
    es_buf_t *bufs;
    size_t n, cap;
} es_pending_t;
es_err es_pending_build(es_pending_t *p, const char *type, const char *id, uint64_t base,
                        const es_new_event_t *events, size_t n, es_error_t *err);
/* es_pending_build, each envelope with fp, the causing command's fingerprint (NULL: none), and
 * events[i]'s schema version schema_versions[i] (NULL: none recorded). */
es_err es_pending_build_caused(es_pending_t *p, const char *type, const char *id, uint64_t base,
                               const es_new_event_t *events, size_t n, const es_fingerprint_t *fp,
                               const uint32_t *schema_versions, es_error_t *err);
void es_pending_free(es_pending_t *p);

/* Writes events that carry their own versions, ids and times to the log, as a producer beside
 * the command path does (the saga coordinator's transitions): evs sorted by aggregate, then
 * version. On a backend with an event store they are appended in one transaction, an event at
 * a version its stream already holds counting as written, and one past the stream's next
 * version failing with ES_EIO (nothing written); on one without (Kafka) the log reader produces
 * them (produce in log/log.h). ok[i] = 1 for each in the log on return, whatever is returned;
 * stop (may be NULL) cuts a wait for acknowledgements short. */
es_err es_store_publish(es_store_t *store, es_event_t *const *evs, size_t n, const es_stop_t *stop,
                        uint8_t *ok, es_error_t *err);

#endif
