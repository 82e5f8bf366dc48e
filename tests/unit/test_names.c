#include <criterion/criterion.h>
#include <string.h>

#include <eskit/eskit.h>

#include "testutil.h"

Test(names, well_formed_aggregate_types_are_accepted) {
    const char *ok[] = {"orders.order", "payments.payment", "a.b.c", "shop-1.cart-item"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        cr_assert_eq(es_validate_aggregate_type(ok[i], NULL), ES_OK, "%s", ok[i]);
}

Test(names, invalid_aggregate_type_is_rejected_naming_it) {
    const char *bad[] = {"Orders.Order",  "orders",       "orders.",      ".order",
                         "orders..order", "orders order", "orders/order", ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        es_error_t err = {0};
        cr_assert_eq(es_validate_aggregate_type(bad[i], &err), ES_EINVAL, "%s", bad[i]);
        if (*bad[i])
            cr_assert(strstr(err.message, bad[i]), "message does not name '%s': %s", bad[i],
                      err.message);
    }
}

Test(names, oversized_aggregate_id_is_rejected_with_its_size) {
    char id[300];
    memset(id, 'x', sizeof id - 1);
    id[sizeof id - 1] = '\0';
    es_error_t err = {0};
    cr_assert_eq(es_validate_aggregate_id(id, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "299 bytes") && strstr(err.message, "255"), "%s", err.message);
    id[255] = '\0';
    cr_assert_eq(es_validate_aggregate_id(id, NULL), ES_OK);
}

Test(names, control_characters_in_ids_are_rejected) {
    es_error_t err = {0};
    cr_assert_eq(es_validate_aggregate_id("o-1\n", &err), ES_EINVAL);
    cr_assert(strstr(err.message, "0x0a"), "%s", err.message);
    cr_assert_eq(es_validate_aggregate_id("", NULL), ES_EINVAL);
}

Test(names, ids_must_be_utf8_text_without_c0_del_or_c1_control_characters) {
    const char *bad[] = {"o-\x7f",
                         "o-\xc2\x85" /* NEL */,
                         "o-\xc2\x9b" /* CSI */,
                         "o-\xc0\xaf",
                         /* overlong '/' */ "o-\xed\xa0\x80" /* surrogate */,
                         "o-\xf4\x90\x80\x80" /* past U+10FFFF */,
                         "o-\xe2\x82",
                         "o-\xff"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        es_error_t err = {0};
        cr_assert_eq(es_validate_aggregate_id(bad[i], &err), ES_EINVAL, "case %zu", i);
        cr_assert(strstr(err.message, "aggregate id"), "%s", err.message);
        cr_assert(strstr(err.message, "position 3"), "%s", err.message);
    }
    const char *ok[] = {"o-\xc2\xa0", "bestellung-\xc3\xa4", "\xe2\x82\xac-1", "\xf0\x9f\x93\xa6",
                        "a b/c:d"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        cr_assert_eq(es_validate_aggregate_id(ok[i], NULL), ES_OK, "case %zu", i);
}

Test(names, metadata_beyond_its_limits_or_with_a_key_twice_is_refused_naming_the_key) {
    char key[130], value[4098];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    memset(value, 'v', sizeof value - 1);
    value[sizeof value - 1] = '\0';
    es_kv_t md[2] = {{"tenant", value}, {"tenant", "b"}};
    es_error_t err = {0};
    cr_assert_eq(es_validate_metadata(md, 1, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "metadata 'tenant'") && strstr(err.message, "4097 bytes") &&
                  strstr(err.message, "4096"),
              "%s", err.message);
    value[4096] = '\0';
    cr_assert_eq(es_validate_metadata(md, 1, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_validate_metadata(md, 2, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "'tenant' appears twice"), "%s", err.message);
    md[0].key = key;
    cr_assert_eq(es_validate_metadata(md, 1, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "metadata key") && strstr(err.message, "129 bytes"), "%s",
              err.message);
    md[0] = (es_kv_t){"", "x"};
    cr_assert_eq(es_validate_metadata(md, 1, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "metadata key is empty"), "%s", err.message);
}

Test(names, an_appended_event_type_must_be_a_protobuf_full_name) {
    char *dir = tu_tempdir();
    es_config_t *cfg = tu_config(dir, "names.db");
    es_store_t *store = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    const char *bad[] = {"orders.v1.Order Placed", "orders.v1.", ".orders.v1.X", "orders.1v.X",
                         "orders.v1.X\n"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        es_new_event_t ev = {bad[i], (const uint8_t *)"", 0, NULL, NULL, NULL, 0};
        cr_assert_eq(
            es_store_append(store, "orders.order", "o-1", ES_EXPECT_ANY, 0, &ev, 1, NULL, &err),
            ES_EINVAL, "%s", bad[i]);
        cr_assert(strstr(err.message, "event type") && strstr(err.message, "event 1"), "%s",
                  err.message);
    }
    es_new_event_t ev = {"orders.v1.OrderPlaced", (const uint8_t *)"", 0, "cmd\x1b", NULL, NULL, 0};
    cr_assert_eq(
        es_store_append(store, "orders.order", "o-1", ES_EXPECT_ANY, 0, &ev, 1, NULL, &err),
        ES_EINVAL);
    cr_assert(strstr(err.message, "command id"), "%s", err.message);
    ev.command_id = NULL;
    cr_assert_eq(
        es_store_append(store, "orders.order", "o-1", ES_EXPECT_ANY, 0, &ev, 1, NULL, &err), ES_OK,
        "%s", err.message);
    es_store_destroy(store);
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(dir);
}

Test(names, uuid7_ids_are_unique_well_formed_and_time_ordered) {
    char prev[ES_UUID_STR_LEN + 1] = "", cur[ES_UUID_STR_LEN + 1];
    for (int i = 0; i < 10000; i++) {
        es_uuid7(cur);
        cr_assert_eq(strlen(cur), 36);
        cr_assert_eq(cur[14], '7', "version nibble: %s", cur);
        cr_assert(strchr("89ab", cur[19]), "variant: %s", cur);
        cr_assert_gt(strcmp(cur, prev), 0, "%s after %s", cur, prev);
        memcpy(prev, cur, sizeof cur);
    }
}
