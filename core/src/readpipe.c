/* The read pipeline (readpipe.h): decode, upcast, order, for every reader. */
#include "readpipe.h"

#include "internal.h"
#include "upcast_int.h"

const char *es_raw_key(const es_raw_record_t *rec) {
    if (rec->key || !rec->key_log || !rec->key_log->reader->record_key)
        return rec->key;
    return rec->key_log->reader->record_key(rec->key_log, rec->key_ref);
}

es_read_result es_read_decode_in(const es_raw_record_t *rec, es_pb_arena_t *arena, es_event_t **ev,
                                 es_err *rc, es_error_t *err) {
    es_position_t at = {rec->topic, rec->key, rec->partition, rec->offset};
    *ev = NULL;
    *rc = es_envelope_decode_in(rec->value, rec->len, &at, arena, ev, err);
    /* A key the log tells only when asked is asked for now, to name it in the error: the
     * decode fails the same way again. */
    if (*rc != ES_OK && !at.key && (at.key = es_raw_key(rec)))
        *rc = es_envelope_decode_in(rec->value, rec->len, &at, arena, ev, err);
    if (*rc != ES_OK)
        return ES_READ_BAD;
    (*ev)->offset = rec->offset;
    (*ev)->partition = rec->partition;
    return ES_READ_EVENT;
}

es_read_result es_read_decode(const es_raw_record_t *rec, es_event_t **ev, es_err *rc,
                              es_error_t *err) {
    return es_read_decode_in(rec, NULL, ev, rc, err);
}

es_read_result es_read_upcast(const es_config_t *cfg, es_event_t **ev, const es_position_t *at,
                              es_err *rc, es_error_t *err) {
    const es_upcast_set *s = es_config_upcasts(cfg);
    es_event_t *cur = NULL;
    *rc = ES_OK;
    if (!s)
        return ES_READ_EVENT;
    if ((*rc = es_upcast_event(s, *ev, at, &cur, err)) != ES_OK) {
        es_event_free(*ev);
        *ev = NULL;
        return ES_READ_BAD;
    }
    if (cur) {
        es_event_free(*ev);
        *ev = cur;
    }
    return ES_READ_EVENT;
}

es_read_result es_read_current(const es_config_t *cfg, const es_raw_record_t *rec, es_event_t **ev,
                               es_err *rc, es_error_t *err) {
    es_position_t at = {rec->topic, rec->key, rec->partition, rec->offset};
    es_read_result res = es_read_decode(rec, ev, rc, err);
    return res == ES_READ_EVENT ? es_read_upcast(cfg, ev, &at, rc, err) : res;
}

es_read_result es_read_order(const es_read_pipe *p, const es_event_t *ev, const es_position_t *at,
                             es_err *rc, es_error_t *err) {
    uint64_t last = 0;
    *rc = ES_OK;
    if (!p->last)
        return ES_READ_EVENT;
    if ((*rc = p->last(p->opaque, ev, &last, err)) != ES_OK)
        return ES_READ_FAILED;
    es_order_counts met = {0};
    es_order_action act = es_log_order(p->role, last, ev->version, &met);
    if (p->counts) {
        p->counts->stale += met.stale;
        p->counts->gaps += met.gaps;
    }
    if (act == ES_ORDER_SKIP)
        return ES_READ_STALE;
    if (act == ES_ORDER_STOP) {
        es_position_t where = at ? *at : (es_position_t){NULL, NULL, ev->partition, ev->offset};
        where.key = ev->aggregate_id;
        *rc = es_log_order_gap_error(err, &where, ev->aggregate_type, ev->aggregate_id, last,
                                     ev->version);
        return ES_READ_GAP;
    }
    if (met.gaps)
        es_log_order_warn_gap(p->cfg, at, ev->aggregate_type, ev->aggregate_id, last, ev->version);
    return ES_READ_EVENT;
}
