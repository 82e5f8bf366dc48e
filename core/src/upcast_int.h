/*
 * The upcasters a config carries (eskit/upcast.h): registration keeps them in a set owned by
 * the config, copied with it; the read pipeline (readpipe.h) asks es_upcast_event for the
 * current form of each event it decodes.
 */
#ifndef ESKIT_UPCAST_INT_H
#define ESKIT_UPCAST_INT_H

#include <eskit/eskit.h>

typedef struct es_upcast_set es_upcast_set;

/* The config's set (NULL: none registered), and its slot for registration (config.c). */
const es_upcast_set *es_config_upcasts(const es_config_t *cfg);
es_upcast_set **es_config_upcast_slot(es_config_t *cfg);

/* A deep copy (NULL only when out of memory: s is never NULL here). */
es_upcast_set *es_upcast_set_dup(const es_upcast_set *s);
void es_upcast_set_free(es_upcast_set *s);

/* The current form of ev: *out is NULL when no upcaster matches it (ev is current), else a new
 * event (caller frees with es_event_free) of the chain's last type, with ev's version, position,
 * ids and metadata. A failing upcaster or a chain past ES_UPCAST_CHAIN_MAX is an error naming
 * the upcaster, the event type and at (may be NULL: ev's own partition and offset). */
es_err es_upcast_event(const es_upcast_set *s, const es_event_t *ev, const es_position_t *at,
                       es_event_t **out, es_error_t *err);

#endif
