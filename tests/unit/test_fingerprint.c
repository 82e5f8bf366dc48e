/*
 * Command fingerprints: FNV-1a 64 as its authors specify it (the published test vectors), and a
 * command's fingerprint as the type hash and the payload hash of what protobuf-c packs.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "domain.h"
#include "internal.h"

static uint64_t fnv(const char *s) {
    return es_fnv1a64(s, strlen(s));
}

Test(fingerprint, fnv1a64_gives_the_published_test_vectors) {
    cr_assert_eq(fnv(""), 0xcbf29ce484222325ULL);
    cr_assert_eq(fnv("a"), 0xaf63dc4c8601ec8cULL);
    cr_assert_eq(fnv("foobar"), 0x85944171f73967e8ULL);
    cr_assert_eq(es_fnv1a64("\0", 1), 0xaf63bd4c8601b7dfULL, "a NUL byte is hashed like any");
}

Test(fingerprint, is_the_hash_of_the_type_name_and_of_the_packed_payload) {
    Orders__V1__CancelOrder c = ORDERS__V1__CANCEL_ORDER__INIT;
    c.reason = "changed my mind";
    uint8_t packed[64];
    size_t len = orders__v1__cancel_order__pack(&c, packed);
    es_fingerprinter_t f = {0};
    es_fingerprint_t fp;
    cr_assert_eq(es_fingerprint_of(&f, &c.base, &fp), ES_OK);
    cr_assert_eq(fp.type, fnv("orders.v1.CancelOrder"));
    cr_assert_eq(fp.payload, es_fnv1a64(packed, len));

    es_fingerprint_t other;
    c.reason = "changed my mind!";
    cr_assert_eq(es_fingerprint_of(&f, &c.base, &other), ES_OK);
    cr_assert_eq(other.type, fp.type);
    cr_assert_neq(other.payload, fp.payload);

    Orders__V1__ConfirmOrder empty = ORDERS__V1__CONFIRM_ORDER__INIT;
    cr_assert_eq(es_fingerprint_of(&f, &empty.base, &other), ES_OK);
    cr_assert_eq(other.payload, fnv(""), "an all-default message packs to no bytes");
    cr_assert_eq(other.type, fnv("orders.v1.ConfirmOrder"));
    es_fingerprinter_free(&f);
}

Test(fingerprint, is_stored_as_two_big_endian_hashes_and_read_back) {
    es_fingerprint_t fp = {0x0102030405060708ULL, 0xf1f2f3f4f5f6f7f8ULL}, back;
    uint8_t b[ES_FINGERPRINT_LEN];
    es_fingerprint_put(&fp, b);
    static const uint8_t want[ES_FINGERPRINT_LEN] = {
        1, 2, 3, 4, 5, 6, 7, 8, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8};
    cr_assert_eq(memcmp(b, want, sizeof b), 0);
    es_fingerprint_get(b, &back);
    cr_assert_eq(back.type, fp.type);
    cr_assert_eq(back.payload, fp.payload);
}
