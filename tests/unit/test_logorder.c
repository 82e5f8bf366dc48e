/*
 * The log-order rule as one function: the next version is applied, a stale one skipped, and a
 * gap applied by a reader but stopping a restoring writer; both count the same way, and the
 * warning and the error say what is missing and where.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "logorder.h"
#include "testutil.h"

static const es_order_role roles[] = {ES_ORDER_READER, ES_ORDER_RESTORE};

Test(logorder, the_next_version_is_applied_by_every_role_and_counts_nothing) {
    for (size_t i = 0; i < 2; i++) {
        es_order_counts c = {0};
        cr_assert_eq(es_log_order(roles[i], 0, 1, &c), ES_ORDER_APPLY);
        cr_assert_eq(es_log_order(roles[i], 41, 42, &c), ES_ORDER_APPLY);
        cr_assert_eq(c.stale + c.gaps, 0);
    }
}

Test(logorder, a_repeated_or_older_version_is_skipped_and_counted_stale_by_every_role) {
    for (size_t i = 0; i < 2; i++) {
        es_order_counts c = {0};
        cr_assert_eq(es_log_order(roles[i], 2, 2, &c), ES_ORDER_SKIP);
        cr_assert_eq(es_log_order(roles[i], 2, 1, &c), ES_ORDER_SKIP);
        cr_assert_eq(c.stale, 2);
        cr_assert_eq(c.gaps, 0);
    }
}

Test(logorder, a_gap_is_applied_by_a_reader_and_stops_a_restore_both_counting_it) {
    es_order_counts r = {0}, w = {0};
    cr_assert_eq(es_log_order(ES_ORDER_READER, 3, 5, &r), ES_ORDER_APPLY);
    cr_assert_eq(es_log_order(ES_ORDER_RESTORE, 3, 5, &w), ES_ORDER_STOP);
    cr_assert_eq(es_log_order(ES_ORDER_READER, 0, 2, &r), ES_ORDER_APPLY, "version 1 missing");
    cr_assert_eq(r.gaps, 2);
    cr_assert_eq(w.gaps, 1);
    cr_assert_eq(r.stale + w.stale, 0);
    cr_assert_eq(es_log_order(ES_ORDER_READER, 3, 5, NULL), ES_ORDER_APPLY, "counts may be NULL");
}

Test(logorder, the_restore_error_names_the_aggregate_the_missing_versions_and_the_record) {
    es_position_t at = {"orders.order.events", "o-1", 2, 17};
    es_error_t err = {0};
    cr_assert_eq(es_log_order_gap_error(&err, &at, "orders.order", "o-1", 3, 6), ES_EIO);
    cr_assert(strstr(err.message, "orders.order/o-1"), "%s", err.message);
    cr_assert(strstr(err.message, "versions 4..5 are missing"), "%s", err.message);
    cr_assert(strstr(err.message, "orders.order.events partition 2 offset 17"), "%s", err.message);
    cr_assert(strstr(err.message, "esctl verify"), "%s", err.message);
    cr_assert_eq(es_log_order_gap_error(NULL, NULL, "orders.order", "o-1", 3, 6), ES_EIO);
}

static char logged[1024];
static int n_logged;

static void capture(int level, const char *line, void *opaque) {
    (void)opaque;
    cr_assert_eq(level, ES_LOG_WARNING);
    snprintf(logged, sizeof logged, "%s", line);
    n_logged++;
}

Test(logorder, the_reader_warning_names_the_aggregate_and_the_missing_versions) {
    es_config_t *cfg = es_config_new();
    cr_assert(cfg);
    es_config_set_log_cb(cfg, capture, NULL);
    es_position_t at = {"orders.order.events", "o-1", 0, 9};
    es_log_order_warn_gap(cfg, &at, "orders.order", "o-1", 0, 2);
    cr_assert_eq(n_logged, 1);
    cr_assert(strstr(logged, "orders.order/o-1: version 2 follows version 0"), "%s", logged);
    cr_assert(strstr(logged, "versions 1..1 are missing"), "%s", logged);
    cr_assert(strstr(logged, "partition 0 offset 9"), "%s", logged);
    es_log_order_warn_gap(cfg, NULL, "orders.order", "o-1", 4, 7);
    cr_assert(strstr(logged, "versions 5..6 are missing from the log; applied"), "%s", logged);
    es_config_destroy(cfg);
}
