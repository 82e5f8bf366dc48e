#include <criterion/criterion.h>
#include <string.h>

#include <eskit/eskit.h>

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
