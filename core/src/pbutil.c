#include "internal.h"

#include <stdlib.h>
#include <string.h>

ProtobufCMessage *es_pb_new(const ProtobufCMessageDescriptor *desc) {
    ProtobufCMessage *m = malloc(desc->sizeof_message);
    if (m)
        protobuf_c_message_init(desc, m);
    return m;
}

const ProtobufCMessageDescriptor *es_pb_find(const ProtobufCMessageDescriptor *const *list,
                                             const char *name) {
    for (; list && *list; list++)
        if (!strcmp((*list)->name, name))
            return *list;
    return NULL;
}

static const ProtobufCFieldDescriptor *field_at(const ProtobufCMessage *msg, const void *field) {
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    size_t off = (size_t)((const char *)field - (const char *)msg);
    for (unsigned i = 0; i < d->n_fields; i++)
        if (d->fields[i].offset == off)
            return &d->fields[i];
    return NULL;
}

/* protobuf_c_message_free_unpacked skips values equal to the field default. */
static int is_default(const ProtobufCFieldDescriptor *f, const void *p) {
    return !p || p == f->default_value || p == (const void *)protobuf_c_empty_string;
}

es_err es_pb_set_string(ProtobufCMessage *msg, char **field, const char *value) {
    const ProtobufCFieldDescriptor *f = field_at(msg, field);
    if (!f || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)
        return ES_EINVAL;
    char *copy = strdup(value ? value : "");
    if (!copy)
        return ES_ENOMEM;
    if (!is_default(f, *field))
        free(*field);
    *field = copy;
    return ES_OK;
}

es_err es_pb_set_bytes(ProtobufCMessage *msg, ProtobufCBinaryData *field, const uint8_t *data,
                       size_t len) {
    const ProtobufCFieldDescriptor *f = field_at(msg, field);
    if (!f || f->type != PROTOBUF_C_TYPE_BYTES || f->label == PROTOBUF_C_LABEL_REPEATED)
        return ES_EINVAL;
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return ES_ENOMEM;
    if (len)
        memcpy(copy, data, len);
    const ProtobufCBinaryData *def = f->default_value;
    if (field->data && (!def || field->data != def->data))
        free(field->data);
    field->data = copy;
    field->len = len;
    return ES_OK;
}

ProtobufCMessage *es_pb_clone(const ProtobufCMessage *msg) {
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return NULL;
    protobuf_c_message_pack(msg, buf);
    ProtobufCMessage *copy = protobuf_c_message_unpack(msg->descriptor, NULL, len, buf);
    free(buf);
    return copy;
}
