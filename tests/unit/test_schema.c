/*
 * Schemas in canonical form (docs/schemas.md): SHA-256 as FIPS 180-4 and sha256sum give it,
 * equal bytes and fingerprints for types of one shape whatever their declaration order, the
 * round trip through the bytes, bytes that are not canonical refused, and the printed forms.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema_int.h"
#include "sha256.h"
#include "compat/base.pb-c.h"

static void assert_sha(const void *data, size_t len, const char *want) {
    char hex[65];
    es_sha256_hex(data, len, hex);
    cr_assert_str_eq(hex, want);
}

Test(schema, sha256_gives_the_fips_180_4_examples) {
    assert_sha("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_sha("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    assert_sha(two, strlen(two),
               "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    char *million = malloc(1000000);
    memset(million, 'a', 1000000);
    assert_sha(million, 1000000,
               "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(million);
}

Test(schema, sha256_agrees_with_sha256sum_around_the_block_edges) {
    static const size_t lens[] = {1, 55, 56, 63, 64, 65, 119, 120, 1000};
    uint8_t buf[1000];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(i * 7 + 3);
    for (size_t k = 0; k < sizeof lens / sizeof *lens; k++) {
        char path[] = "/tmp/eskit-sha-XXXXXX";
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        FILE *f = fdopen(fd, "wb");
        fwrite(buf, 1, lens[k], f);
        fclose(f);
        char cmd[64], want[65] = {0};
        snprintf(cmd, sizeof cmd, "sha256sum %s", path);
        FILE *p = popen(cmd, "r");
        cr_assert(p && fread(want, 1, 64, p) == 64);
        pclose(p);
        remove(path);
        assert_sha(buf, lens[k], want);
    }
}

static es_schema_t *of(const ProtobufCMessageDescriptor *d) {
    es_schema_t *s = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_schema_of(d, &s, &err), ES_OK, "%s", err.message);
    return s;
}

Test(schema, a_type_of_the_same_shape_declared_in_another_order_gives_the_same_bytes) {
    /* compat.base.Order with its fields and Status's values listed backwards: what another
     * declaration order would give a generator that kept it. */
    const ProtobufCMessageDescriptor *d = &compat__base__order__descriptor;
    ProtobufCFieldDescriptor fields[16];
    for (unsigned i = 0; i < d->n_fields; i++)
        fields[i] = d->fields[d->n_fields - 1 - i];
    const ProtobufCEnumDescriptor *ed = &compat__base__status__descriptor;
    ProtobufCEnumValueIndex names[8];
    for (unsigned i = 0; i < ed->n_value_names; i++)
        names[i] = ed->values_by_name[ed->n_value_names - 1 - i];
    ProtobufCEnumDescriptor status = *ed;
    status.values_by_name = names;
    for (unsigned i = 0; i < d->n_fields; i++)
        if (fields[i].type == PROTOBUF_C_TYPE_ENUM)
            fields[i].descriptor = &status;
    ProtobufCMessageDescriptor other = *d;
    other.fields = fields;

    es_schema_t *a = of(d), *b = of(&other);
    size_t la, lb;
    const uint8_t *ba = es_schema_bytes(a, &la), *bb = es_schema_bytes(b, &lb);
    cr_assert_eq(la, lb);
    cr_assert_eq(memcmp(ba, bb, la), 0);
    cr_assert_str_eq(es_schema_fingerprint(a), es_schema_fingerprint(b));
    char hex[65];
    es_sha256_hex(ba, la, hex);
    cr_assert_eq(strncmp(es_schema_fingerprint(a), "sha256:", 7), 0);
    cr_assert_str_eq(es_schema_fingerprint(a) + 7, hex);
    es_schema_free(a);
    es_schema_free(b);
}

Test(schema, the_model_lists_the_type_first_then_what_it_reaches_sorted) {
    es_schema_t *s = of(&compat__base__order__descriptor);
    const Eskit__V1__Schema *m = es_schema_model(s);
    cr_assert_str_eq(es_schema_name(s), "compat.base.Order");
    cr_assert_eq(m->n_messages, 3);
    cr_assert_str_eq(m->messages[0]->full_name, "compat.base.Order");
    cr_assert_str_eq(m->messages[1]->full_name, "compat.base.Customer");
    cr_assert_str_eq(m->messages[2]->full_name, "compat.base.Line");
    cr_assert_eq(m->n_enums, 1);
    const Eskit__V1__MessageType *o = m->messages[0];
    cr_assert_eq(o->n_oneofs, 1);
    cr_assert_str_eq(o->oneofs[0], "oneof_card");
    const Eskit__V1__Field *card = es_schema_field(o, 6), *lines = es_schema_field(o, 4);
    cr_assert_eq(card->oneof, 1);
    cr_assert_eq(es_schema_field(o, 7)->oneof, 1);
    cr_assert_eq(es_schema_field(o, 1)->label, ESKIT__V1__FIELD__LABEL__LABEL_UNSPECIFIED);
    cr_assert_eq(lines->label, ESKIT__V1__FIELD__LABEL__LABEL_REPEATED);
    cr_assert_str_eq(lines->type_name, "compat.base.Line");
    cr_assert_eq(es_schema_field(o, 8)->packed, 1, "proto3 packs repeated scalars");
    cr_assert_eq(es_schema_field(o, 5)->type, ESKIT__V1__FIELD__TYPE__TYPE_ENUM);
    es_schema_free(s);
}

Test(schema, parse_gives_back_the_same_schema) {
    es_schema_t *s = of(&compat__base__order__descriptor), *back = NULL;
    size_t len;
    const uint8_t *bytes = es_schema_bytes(s, &len);
    es_error_t err = {0};
    cr_assert_eq(es_schema_parse(bytes, len, &back, &err), ES_OK, "%s", err.message);
    cr_assert_str_eq(es_schema_fingerprint(back), es_schema_fingerprint(s));
    cr_assert_str_eq(es_schema_name(back), "compat.base.Order");
    es_schema_free(back);
    es_schema_free(s);
}

Test(schema, truncated_or_malformed_bytes_are_a_decode_error) {
    es_schema_t *s = of(&compat__base__order__descriptor), *back = NULL;
    size_t len;
    const uint8_t *bytes = es_schema_bytes(s, &len);
    es_error_t err = {0};
    cr_assert_eq(es_schema_parse(bytes, len - 1, &back, &err), ES_EDECODE);
    cr_assert_null(back);
    cr_assert_eq(es_schema_parse((const uint8_t *)"\xff\xff", 2, &back, &err), ES_EDECODE);
    cr_assert_eq(es_schema_parse(NULL, 0, &back, &err), ES_EDECODE, "no registered type");
    es_schema_free(s);
}

/* A schema packed from a model the test broke: es_schema_parse must refuse it. */
static void assert_refused(Eskit__V1__Schema *pb, const char *words) {
    size_t len = eskit__v1__schema__get_packed_size(pb);
    uint8_t *b = malloc(len);
    eskit__v1__schema__pack(pb, b);
    es_schema_t *s = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_schema_parse(b, len, &s, &err), ES_EDECODE);
    cr_assert(strstr(err.message, words), "'%s' does not say '%s'", err.message, words);
    free(b);
}

Test(schema, bytes_out_of_canonical_order_or_not_closed_are_a_decode_error) {
    es_schema_t *s = of(&compat__base__order__descriptor);
    Eskit__V1__Schema *pb = (Eskit__V1__Schema *)es_schema_model(s);
    Eskit__V1__MessageType *t = pb->messages[1];
    pb->messages[1] = pb->messages[2];
    pb->messages[2] = t;
    assert_refused(pb, "messages go by full name");
    pb->messages[2] = pb->messages[1];
    pb->messages[1] = t;

    Eskit__V1__EnumValue *v = pb->enums[0]->values[0];
    pb->enums[0]->values[0] = pb->enums[0]->values[1];
    pb->enums[0]->values[1] = v;
    assert_refused(pb, "values go by number");
    pb->enums[0]->values[1] = pb->enums[0]->values[0];
    pb->enums[0]->values[0] = v;

    Eskit__V1__Field *f = pb->messages[0]->fields[0];
    pb->messages[0]->fields[0] = pb->messages[0]->fields[1];
    pb->messages[0]->fields[1] = f;
    assert_refused(pb, "fields go by number");
    pb->messages[0]->fields[1] = pb->messages[0]->fields[0];
    pb->messages[0]->fields[0] = f;

    pb->n_messages = 2; /* compat.base.Line left out */
    assert_refused(pb, "does not carry");
    pb->n_messages = 3;
    pb->n_enums = 0;
    assert_refused(pb, "does not carry");
    pb->n_enums = 1;
    es_schema_free(s);
}

Test(schema, format_prints_proto_like_text) {
    es_schema_t *s = of(&compat__base__order__descriptor);
    char *out = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_schema_format(s, 0, &out, &err), ES_OK);
    static const char *const want[] = {
        "message compat.base.Order {\n  string id = 1;\n  int32 quantity = 2;\n",
        "  repeated compat.base.Line lines = 4;\n  compat.base.Status status = 5;\n",
        "  oneof oneof_card {\n    string card = 6;\n    string iban = 7;\n  }\n",
        "  repeated int64 tags = 8 [packed = true];\n",
        "message compat.base.Line {\n",
        "enum compat.base.Status {\n  STATUS_UNSPECIFIED = 0;\n  STATUS_OPEN = 1;\n"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        cr_assert(strstr(out, want[i]), "no '%s' in:\n%s", want[i], out);
    cr_assert(strstr(out, es_schema_fingerprint(s)));
    es_free(out);
    es_schema_free(s);
}

Test(schema, format_prints_one_json_object) {
    es_schema_t *s = of(&compat__base__order__descriptor);
    char *out = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_schema_format(s, 1, &out, &err), ES_OK);
    cr_assert_eq(strncmp(out, "{\"full_name\":\"compat.base.Order\",\"fingerprint\":\"sha256:", 54),
                 0, "%s", out);
    cr_assert(strstr(out, "{\"number\":6,\"name\":\"card\",\"type\":\"TYPE_STRING\","
                          "\"label\":\"LABEL_UNSPECIFIED\",\"type_name\":\"\",\"oneof\":1,"
                          "\"packed\":false}"),
              "%s", out);
    cr_assert(strstr(out, "{\"name\":\"STATUS_CLOSED\",\"number\":2}"), "%s", out);
    /* Valid JSON, as a JSON parser other than ours reads it. */
    char path[] = "/tmp/eskit-json-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    fputs(out, f);
    fclose(f);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "python3 -c 'import json,sys; json.load(open(sys.argv[1]))' %s",
             path);
    cr_assert_eq(system(cmd), 0, "not JSON: %s", out);
    remove(path);
    es_free(out);
    es_schema_free(s);
}
