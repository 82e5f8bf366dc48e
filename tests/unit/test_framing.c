/*
 * Confluent framing (framing.c) and the registry's JSON reader (registry_json.c): frames
 * written and stripped, the three index forms a reader meets, and bad frames and bad JSON
 * refused with a message rather than guessed at.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "framing.h"
#include "internal.h"
#include "registry_json.h"

static const es_event_t ev = {.event_id = "01890a5d-ac96-7e4b-bcce-b302099a8057",
                              .aggregate_type = "orders.order",
                              .aggregate_id = "o-1",
                              .version = 1,
                              .event_type = "orders.v1.OrderPlaced"};

static es_buf_t framed(uint32_t id) {
    es_buf_t b = {0};
    cr_assert_eq(es_envelope_pack(&ev, &b, NULL), ES_OK);
    cr_assert_eq(es_frame_wrap(&b, id, NULL), ES_OK);
    return b;
}

Test(framing, a_frame_is_magic_big_endian_id_and_the_index_zero) {
    es_buf_t b = framed(0x01020304);
    const uint8_t want[] = {0, 1, 2, 3, 4, 0, 0x0a};
    cr_assert_eq(memcmp(b.data, want, sizeof want), 0);
    const uint8_t *p = b.data;
    size_t len = b.len;
    uint32_t id = 0;
    cr_assert_eq(es_frame_strip(&p, &len, &id, NULL), ES_OK);
    cr_expect_eq(id, 0x01020304);
    cr_expect_eq(p, b.data + ES_FRAME_LEN);
    es_event_t *out = NULL;
    cr_assert_eq(es_envelope_decode(b.data, b.len, NULL, &out, NULL), ES_OK);
    cr_expect_str_eq(out->aggregate_id, "o-1");
    es_event_free(out);
    es_buf_free(&b);
}

Test(framing, an_explicit_index_array_and_none_at_all_read_alike) {
    es_buf_t bare = {0};
    cr_assert_eq(es_envelope_pack(&ev, &bare, NULL), ES_OK);
    uint8_t buf[512];
    /* [1 index: 0] written in full (zigzag 1 = 0x02), as some serializers do */
    memcpy(buf, "\0\0\0\0\x07\x02\x00", 7);
    memcpy(buf + 7, bare.data, bare.len);
    es_event_t *out = NULL;
    cr_assert_eq(es_envelope_decode(buf, bare.len + 7, NULL, &out, NULL), ES_OK);
    es_event_free(out);
    /* no index array (@kafkajs/confluent-schema-registry) */
    memcpy(buf + 5, bare.data, bare.len);
    cr_assert_eq(es_envelope_decode(buf, bare.len + 5, NULL, &out, NULL), ES_OK);
    cr_expect_str_eq(out->event_type, "orders.v1.OrderPlaced");
    es_event_free(out);
    es_buf_free(&bare);
}

Test(framing, bad_frames_are_decode_errors_naming_what_is_wrong) {
    es_error_t err = {0};
    es_event_t *out = NULL;
    cr_expect_eq(es_envelope_decode((const uint8_t *)"\0\0\0", 3, NULL, &out, &err), ES_EDECODE);
    cr_expect(strstr(err.message, "too short for the 4-byte schema id"), "%s", err.message);
    /* indexes [1]: the file's second message, which is no envelope */
    cr_expect_eq(
        es_envelope_decode((const uint8_t *)"\0\0\0\0\x09\x02\x02\x0a", 8, NULL, &out, &err),
        ES_EDECODE);
    cr_expect(strstr(err.message, "schema id 9: "), "%s", err.message);
    cr_expect(strstr(err.message, "name a message other than the first"), "%s", err.message);
    cr_expect_eq(es_envelope_decode((const uint8_t *)"\0\0\0\0\x09\x02", 6, NULL, &out, &err),
                 ES_EDECODE);
    cr_expect(strstr(err.message, "cut short"), "%s", err.message);
    cr_expect_null(out);
}

static int ok(const char *doc) {
    return es_json_check(doc, strlen(doc), NULL) == 0;
}

Test(registry_json, strict_json_is_told_from_garbage) {
    cr_expect(ok("{\"id\": 12}"));
    cr_expect(ok(" {\"a\": [1, -2.5e3, true, false, null, {\"b\": \"\\u00e9\\n\"}]} "));
    cr_expect(ok("[]"));
    cr_expect_not(ok(""));
    cr_expect_not(ok("<html>"));
    cr_expect_not(ok("{\"id\": 12,}"));
    cr_expect_not(ok("{\"id\": 12} x"));
    cr_expect_not(ok("{\"id\": 012}"));
    cr_expect_not(ok("{'id': 1}"));
    cr_expect_not(ok("{\"a\": \"\\x\"}"));
    cr_expect_not(ok("{\"a\": \"raw\ttab\"}"));
    cr_expect_not(ok("{\"a\": tru}"));
    char deep[200];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    cr_expect_not(es_json_check(deep, sizeof deep, NULL) == 0, "nesting past 64 is refused");
}

Test(registry_json, members_strings_and_integers) {
    const char *doc = "{\"message\": \"a \\\"b\\\" \\ud83d\\ude00\", \"id\": 2147483647, "
                      "\"is_compatible\": false}";
    cr_assert(ok(doc));
    es_json_val_t v;
    cr_assert(es_json_member(doc, strlen(doc), "message", &v));
    char *s = es_json_string(&v);
    cr_expect_str_eq(s, "a \"b\" \xf0\x9f\x98\x80");
    free(s);
    long long n = 0;
    cr_assert(es_json_member(doc, strlen(doc), "id", &v));
    cr_expect(es_json_int(&v, &n));
    cr_expect_eq(n, 2147483647);
    cr_assert(es_json_member(doc, strlen(doc), "is_compatible", &v));
    cr_expect_eq(v.kind, ES_JSON_FALSE);
    cr_expect_not(es_json_member(doc, strlen(doc), "schema", &v));
    es_buf_t b = {0};
    cr_assert_eq(es_json_put_string(&b, "syntax = \"proto3\";\n\x01"), ES_OK);
    cr_expect_eq(b.len, strlen("\"syntax = \\\"proto3\\\";\\n\\u0001\""));
    cr_expect_eq(memcmp(b.data, "\"syntax = \\\"proto3\\\";\\n\\u0001\"", b.len), 0);
    es_buf_free(&b);
}

Test(registry_json, members_of_nested_objects_are_walked_in_order) {
    const char *doc = "{\"brokers\": {\"a:9092/1\": {\"rtt\": {\"avg\": 250}}, \"b\" : [1, 2] ,"
                      "\"c\\\"d\": null}, \"empty\": {}, \"n\": 3}";
    cr_assert(ok(doc));
    es_json_val_t brokers, k, v;
    cr_assert(es_json_member(doc, strlen(doc), "brokers", &brokers));
    cr_assert_eq(brokers.kind, ES_JSON_OBJECT);
    const char *keys[] = {"a:9092/1", "b", "c\"d"};
    const es_json_kind kinds[] = {ES_JSON_OBJECT, ES_JSON_ARRAY, ES_JSON_NULL};
    size_t pos = 0, n = 0;
    while (es_json_next_member(brokers.start, brokers.len, &pos, &k, &v)) {
        cr_assert_lt(n, 3, "a fourth member");
        char *name = es_json_string(&k);
        cr_expect_str_eq(name, keys[n]);
        free(name);
        cr_expect_eq(v.kind, kinds[n]);
        n++;
    }
    cr_expect_eq(n, 3);
    es_json_val_t rtt, avg;
    pos = 0;
    cr_assert(es_json_next_member(brokers.start, brokers.len, &pos, &k, &v));
    cr_assert(es_json_member(v.start, v.len, "rtt", &rtt));
    cr_assert(es_json_member(rtt.start, rtt.len, "avg", &avg));
    long long us = 0;
    cr_expect(es_json_int(&avg, &us));
    cr_expect_eq(us, 250);
    cr_assert(es_json_member(doc, strlen(doc), "empty", &v));
    pos = 0;
    cr_expect_not(es_json_next_member(v.start, v.len, &pos, &k, &v), "{} has no members");
    cr_assert(es_json_member(doc, strlen(doc), "n", &v));
    pos = 0;
    cr_expect_not(es_json_next_member(v.start, v.len, &pos, &k, &v), "3 is no object");
    pos = 0;
    n = 0;
    while (es_json_next_member(doc, strlen(doc), &pos, &k, &v))
        n++;
    cr_expect_eq(n, 3, "the document's own members, not the nested ones");
}
