/* The read pipeline (readpipe.h): decode, (upcast), order, for every reader. */
#include "readpipe.h"

#include "internal.h"

es_read_result es_read_decode(const es_raw_record_t *rec, es_event_t **ev, es_err *rc,
                              es_error_t *err) {
    es_position_t at = {rec->topic, rec->key, rec->partition, rec->offset};
    *ev = NULL;
    *rc = es_envelope_decode(rec->value, rec->len, &at, ev, err);
    if (*rc != ES_OK)
        return ES_READ_BAD;
    (*ev)->offset = rec->offset;
    (*ev)->partition = rec->partition;
    return ES_READ_EVENT;
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
