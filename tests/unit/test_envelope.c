#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include <eskit/eskit.h>

#include "eskit/v1/envelope.pb-c.h"
#include "internal.h"

static es_event_t sample(es_kv_t *md) {
    es_event_t ev = {0};
    es_uuid7(ev.event_id);
    ev.aggregate_type = "orders.order";
    ev.aggregate_id = "o-1";
    ev.version = 3;
    ev.event_type = "orders.v1.OrderPlaced";
    ev.payload = (const uint8_t *)"\x0a\x03"
                                  "c-1";
    ev.payload_len = 5;
    ev.occurred_at_us = 1700000000123456;
    ev.command_id = "cmd-1";
    ev.correlation_id = "corr-1";
    ev.metadata = md;
    ev.n_metadata = 2;
    return ev;
}

Test(envelope, encode_then_decode_gives_the_same_event) {
    es_kv_t md[] = {{"user", "alice"}, {"trace", "t-9"}};
    es_event_t ev = sample(md);
    uint8_t *buf = NULL;
    size_t len = 0;
    cr_assert_eq(es_envelope_encode(&ev, &buf, &len, NULL), ES_OK);
    es_position_t at = {"orders.order.events", "o-1", 0, 42};
    es_event_t *out = NULL;
    cr_assert_eq(es_envelope_decode(buf, len, &at, &out, NULL), ES_OK);
    cr_assert_str_eq(out->event_id, ev.event_id);
    cr_assert_str_eq(out->aggregate_type, "orders.order");
    cr_assert_str_eq(out->aggregate_id, "o-1");
    cr_assert_eq(out->version, 3);
    cr_assert_str_eq(out->event_type, "orders.v1.OrderPlaced");
    cr_assert_eq(out->payload_len, 5);
    cr_assert_eq(memcmp(out->payload, ev.payload, 5), 0);
    cr_assert_eq(out->occurred_at_us, ev.occurred_at_us);
    cr_assert_str_eq(out->command_id, "cmd-1");
    cr_assert_str_eq(out->correlation_id, "corr-1");
    cr_assert_eq(out->n_metadata, 2);
    cr_assert_str_eq(out->metadata[1].key, "trace");
    cr_assert_str_eq(out->metadata[1].value, "t-9");
    cr_assert_eq(out->offset, 42);
    es_event_t *copy = es_event_dup(out);
    cr_assert_str_eq(copy->event_id, out->event_id);
    cr_assert_eq(copy->offset, 42);
    es_event_free(copy);
    es_event_free(out);
    free(buf);
}

Test(envelope, malformed_bytes_are_a_decode_error_naming_the_position) {
    const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x01};
    es_position_t at = {"orders.order.events", "o-7", 2, 1234};
    es_event_t *out = (es_event_t *)1;
    es_error_t err = {0};
    cr_assert_eq(es_envelope_decode(garbage, sizeof garbage, &at, &out, &err), ES_EDECODE);
    cr_assert_null(out);
    cr_assert(strstr(err.message, "orders.order.events"), "%s", err.message);
    cr_assert(strstr(err.message, "partition 2"), "%s", err.message);
    cr_assert(strstr(err.message, "offset 1234"), "%s", err.message);
    cr_assert(strstr(err.message, "o-7"), "%s", err.message);
}

Test(envelope, a_valid_protobuf_missing_required_fields_is_a_decode_error) {
    es_event_t ev = sample(NULL);
    ev.n_metadata = 0;
    ev.event_type = "";
    uint8_t *buf = NULL;
    size_t len = 0;
    cr_assert_eq(es_envelope_encode(&ev, &buf, &len, NULL), ES_OK);
    es_event_t *out = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_envelope_decode(buf, len, NULL, &out, &err), ES_EDECODE);
    cr_assert(strstr(err.message, "event_type"), "%s", err.message);
    free(buf);
}

/* Every truncation and many bit flips of a real envelope: an error or an event, never a crash. */
Test(envelope, truncated_and_corrupted_bytes_never_crash) {
    es_kv_t md[] = {{"user", "alice"}, {"trace", "t-9"}};
    es_event_t ev = sample(md);
    uint8_t *buf = NULL;
    size_t len = 0;
    cr_assert_eq(es_envelope_encode(&ev, &buf, &len, NULL), ES_OK);
    uint8_t *copy = malloc(len);
    for (size_t cut = 0; cut < len; cut++) {
        es_event_t *out = NULL;
        es_err rc = es_envelope_decode(buf, cut, NULL, &out, NULL);
        cr_assert(rc == ES_EDECODE || rc == ES_OK);
        es_event_free(out);
    }
    srand(7);
    for (int i = 0; i < 20000; i++) {
        memcpy(copy, buf, len);
        for (int k = 0; k < 3; k++)
            copy[(size_t)rand() % len] ^= (uint8_t)(1u << (rand() % 8));
        es_event_t *out = NULL;
        es_err rc = es_envelope_decode(copy, len, NULL, &out, NULL);
        cr_assert(rc == ES_EDECODE || rc == ES_OK);
        es_event_free(out);
    }
    free(copy);
    free(buf);
}

/* What protobuf-c itself writes for ev (with fp as command_fingerprint when not NULL): the
 * encoder must produce the same bytes. */
static size_t reference_pack(const es_event_t *ev, const es_fingerprint_t *fp, uint8_t *out) {
    Eskit__V1__EventEnvelope env = ESKIT__V1__EVENT_ENVELOPE__INIT;
    Eskit__V1__EventEnvelope__MetadataEntry entries[4], *ptrs[4];
    cr_assert_leq(ev->n_metadata, 4);
    for (size_t i = 0; i < ev->n_metadata; i++) {
        eskit__v1__event_envelope__metadata_entry__init(&entries[i]);
        entries[i].key = (char *)(ev->metadata[i].key ? ev->metadata[i].key : "");
        entries[i].value = (char *)(ev->metadata[i].value ? ev->metadata[i].value : "");
        ptrs[i] = &entries[i];
    }
    env.event_id = (char *)ev->event_id;
    env.aggregate_type = (char *)(ev->aggregate_type ? ev->aggregate_type : "");
    env.aggregate_id = (char *)(ev->aggregate_id ? ev->aggregate_id : "");
    env.version = ev->version;
    env.event_type = (char *)(ev->event_type ? ev->event_type : "");
    env.payload.data = (uint8_t *)ev->payload;
    env.payload.len = ev->payload_len;
    env.occurred_at_us = ev->occurred_at_us;
    env.command_id = (char *)(ev->command_id ? ev->command_id : "");
    env.correlation_id = (char *)(ev->correlation_id ? ev->correlation_id : "");
    env.n_metadata = ev->n_metadata;
    env.metadata = ptrs;
    env.schema_version = ev->schema_version;
    uint8_t fp_bytes[ES_FINGERPRINT_LEN];
    if (fp) {
        es_fingerprint_put(fp, fp_bytes);
        env.command_fingerprint = (ProtobufCBinaryData){sizeof fp_bytes, fp_bytes};
    }
    cr_assert_leq(eskit__v1__event_envelope__get_packed_size(&env), 4096);
    return eskit__v1__event_envelope__pack(&env, out);
}

static void expect_same_bytes_as_protobuf_c(const es_event_t *ev) {
    uint8_t want[4096], *got = NULL;
    size_t want_len = reference_pack(ev, NULL, want), got_len = 0;
    cr_assert_eq(es_envelope_encode_made(ev, &got, &got_len, NULL), ES_OK);
    cr_assert_eq(got_len, want_len);
    cr_assert_eq(memcmp(got, want, got_len), 0);
    free(got);
}

Test(envelope, encoding_writes_the_bytes_protobuf_c_writes) {
    es_kv_t md[] = {{"user", "alice"}, {"empty", ""}, {"", "no-key"}, {"null", NULL}};
    es_event_t ev = sample(md);
    ev.n_metadata = 4;
    expect_same_bytes_as_protobuf_c(&ev);

    uint8_t big[300];
    memset(big, 0xab, sizeof big);
    ev.payload = big; /* a length that takes two varint bytes */
    ev.payload_len = sizeof big;
    ev.n_metadata = 0;
    ev.occurred_at_us = -5; /* int64: ten varint bytes */
    ev.version = 1ULL << 40;
    ev.correlation_id = NULL;
    expect_same_bytes_as_protobuf_c(&ev);

    ev.payload_len = 0;
    ev.occurred_at_us = 0;
    ev.version = 0;
    ev.command_id = "";
    expect_same_bytes_as_protobuf_c(&ev);
}

Test(envelope, the_schema_version_is_written_as_protobuf_c_writes_it_and_read_back) {
    es_kv_t md[] = {{"user", "alice"}, {"trace", "t-1"}}; /* sample() takes two */
    es_event_t ev = sample(md);
    for (uint32_t v = 1; v < 1u << 20; v = v * 131 + 1) {
        ev.schema_version = v;
        expect_same_bytes_as_protobuf_c(&ev);
        uint8_t *buf = NULL;
        size_t len = 0;
        es_event_t *out = NULL;
        cr_assert_eq(es_envelope_encode_made(&ev, &buf, &len, NULL), ES_OK);
        cr_assert_eq(es_envelope_decode(buf, len, NULL, &out, NULL), ES_OK);
        cr_assert_eq(out->schema_version, v);
        es_event_t *copy = es_event_dup(out);
        cr_assert_eq(copy->schema_version, v, "a copy keeps it");
        es_event_free(copy);
        es_event_free(out);
        free(buf);
        /* The public encoder reads a caller's event only up to n_metadata (older headers'
         * es_event_t ends there) and records no version. */
        cr_assert_eq(es_envelope_encode(&ev, &buf, &len, NULL), ES_OK);
        cr_assert_eq(es_envelope_decode(buf, len, NULL, &out, NULL), ES_OK);
        cr_assert_eq(out->schema_version, 0);
        es_event_free(out);
        free(buf);
    }
}

Test(envelope, a_command_fingerprint_is_written_as_protobuf_c_writes_it_and_read_back) {
    es_kv_t md[] = {{"user", "alice"}, {"trace", "t-9"}};
    es_event_t ev = sample(md);
    es_fingerprint_t fp = {0x0123456789abcdefULL, 0xfedcba9876543210ULL}, got;
    uint8_t want[4096];
    size_t want_len = reference_pack(&ev, &fp, want);
    es_buf_t b = {0};
    cr_assert_eq(es_envelope_pack_caused(&ev, &fp, &b, NULL), ES_OK);
    cr_assert_eq(b.len, want_len);
    cr_assert_eq(memcmp(b.data, want, b.len), 0);
    /* field 11, 16 bytes: the type hash then the payload hash, big-endian */
    static const uint8_t tail[] = {0x5a, 16,   0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd,
                                   0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10};
    cr_assert_eq(memcmp(b.data + b.len - sizeof tail, tail, sizeof tail), 0);

    es_event_t *out = NULL;
    cr_assert_eq(es_envelope_decode(b.data, b.len, NULL, &out, NULL), ES_OK);
    cr_assert(es_envelope_fingerprint(out, &got));
    cr_assert_eq(got.type, fp.type);
    cr_assert_eq(got.payload, fp.payload);
    es_event_t *copy = es_event_dup(out);
    cr_assert_not(es_envelope_fingerprint(copy, &got), "a copy does not keep it");
    es_event_free(copy);
    es_event_free(out);

    cr_assert_eq(es_envelope_pack(&ev, &b, NULL), ES_OK);
    cr_assert_eq(es_envelope_decode(b.data, b.len, NULL, &out, NULL), ES_OK);
    cr_assert_not(es_envelope_fingerprint(out, &got), "an event without one");
    es_event_free(out);
    es_buf_free(&b);
}
