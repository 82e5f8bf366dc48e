#include "internal.h"

#include <string.h>

static int is_segment_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

es_err es_validate_aggregate_type(const char *type, es_error_t *err) {
    if (!type || !*type)
        return es_fail(err, ES_EINVAL,
                       "aggregate type is empty; use lowercase '<domain>.<aggregate>', e.g. "
                       "'orders.order'");
    size_t len = strlen(type);
    if (len > ES_MAX_TYPE_LEN)
        return es_fail(err, ES_EINVAL, "aggregate type '%.40s...' is %zu bytes; the limit is %d",
                       type, len, ES_MAX_TYPE_LEN);
    int segments = 1;
    size_t seg_len = 0;
    for (size_t i = 0; i < len; i++) {
        char c = type[i];
        if (c == '.') {
            if (seg_len == 0)
                break;
            segments++;
            seg_len = 0;
            continue;
        }
        if (!is_segment_char(c))
            return es_fail(err, ES_EINVAL,
                           "invalid aggregate type '%s': character '%c' at position %zu; "
                           "segments are lowercase [a-z0-9-], e.g. 'orders.order'",
                           type, c, i + 1);
        seg_len++;
    }
    if (seg_len == 0 || segments < 2)
        return es_fail(err, ES_EINVAL,
                       "invalid aggregate type '%s': expected '<domain>.<aggregate>' with "
                       "non-empty segments, e.g. 'orders.order'",
                       type);
    return ES_OK;
}

es_err es_validate_aggregate_id(const char *id, es_error_t *err) {
    if (!id || !*id)
        return es_fail(err, ES_EINVAL, "aggregate id is empty");
    size_t len = strlen(id);
    if (len > ES_MAX_ID_LEN)
        return es_fail(err, ES_EINVAL,
                       "aggregate id '%.32s...' is %zu bytes; the limit is %d bytes", id, len,
                       ES_MAX_ID_LEN);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];
        if (c < 0x20 || c == 0x7f)
            return es_fail(err, ES_EINVAL,
                           "aggregate id '%.32s' has control character 0x%02x at position %zu", id,
                           c, i + 1);
    }
    return ES_OK;
}
