/* Upcasters (<eskit/upcast.h>): the registration rules, and the chain an event takes. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upcast_int.h"

/* Appends the upcaster's name to the payload: the output shows the path the event took. */
static es_err tag(const es_event_t *ev, void *opaque, uint8_t **out, size_t *out_len,
                  es_error_t *err) {
    const char *name = opaque;
    size_t n = strlen(name);
    (void)err;
    *out = malloc(ev->payload_len + n + 1);
    memcpy(*out, ev->payload, ev->payload_len);
    (*out)[ev->payload_len] = '>';
    memcpy(*out + ev->payload_len + 1, name, n);
    *out_len = ev->payload_len + n + 1;
    return ES_OK;
}

static es_err refuse(const es_event_t *ev, void *opaque, uint8_t **out, size_t *out_len,
                     es_error_t *err) {
    (void)ev, (void)opaque, (void)out, (void)out_len;
    return es_fail(err, ES_EINVAL, "the amount is not a number");
}

static es_upcaster_t up(const char *name, const char *from, const char *to, uint32_t max,
                        uint32_t to_sv) {
    return (es_upcaster_t){ES_UPCASTER_ABI, name, from, to, max, to_sv, tag, (void *)name};
}

static es_err add(es_config_t *cfg, es_upcaster_t u, es_error_t *err) {
    return es_config_add_upcaster(cfg, &u, err);
}

static void refused(es_config_t *cfg, es_upcaster_t u, const char *want1, const char *want2) {
    es_error_t err = {0};
    cr_assert_eq(add(cfg, u, &err), ES_EINVAL, "upcaster '%s' was accepted", u.name);
    cr_expect(strstr(err.message, want1) && (!want2 || strstr(err.message, want2)), "%s",
              err.message);
    cr_expect_null(strchr(err.message, '\n'), "one line: %s", err.message);
}

/* The current form of an event of type with schema version sv and payload "p". Caller frees. */
static es_event_t *upcast(const es_config_t *cfg, const char *type, uint32_t sv, es_err *rc,
                          es_error_t *err) {
    es_event_t ev = {.offset = 41,
                     .partition = 2,
                     .event_id = "0190b7a2-0000-7000-8000-000000000001",
                     .aggregate_type = "orders.order",
                     .aggregate_id = "o-1",
                     .version = 7,
                     .event_type = type,
                     .payload = (const uint8_t *)"p",
                     .payload_len = 1,
                     .command_id = "c-1",
                     .schema_version = sv};
    es_event_t *out = NULL;
    *rc = es_upcast_event(es_config_upcasts(cfg), &ev, NULL, &out, err);
    return out;
}

static void becomes(const es_config_t *cfg, const char *type, uint32_t sv, const char *want_type,
                    const char *want_payload) {
    es_err rc;
    es_error_t err = {0};
    es_event_t *out = upcast(cfg, type, sv, &rc, &err);
    cr_assert_eq(rc, ES_OK, "%s", err.message);
    if (!want_type) {
        cr_assert_null(out, "%s v%u is current", type, sv);
        return;
    }
    cr_assert_not_null(out, "%s v%u has an upcaster", type, sv);
    cr_expect_str_eq(out->event_type, want_type);
    cr_expect_eq(out->payload_len, strlen(want_payload));
    cr_expect_arr_eq(out->payload, want_payload, out->payload_len);
    cr_expect_eq(out->version, 7, "the version never changes");
    cr_expect_eq(out->offset, 41);
    cr_expect_eq(out->partition, 2);
    cr_expect_str_eq(out->aggregate_id, "o-1");
    cr_expect_str_eq(out->command_id, "c-1");
    cr_expect_str_eq(out->event_id, "0190b7a2-0000-7000-8000-000000000001");
    es_event_free(out);
}

Test(upcast, a_chain_of_type_names_composes_and_current_events_are_left_alone) {
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(add(cfg, up("v2-to-v3", "orders.v2.Placed", "orders.v3.Placed", 0, 0), &err),
                 ES_OK, "%s", err.message);
    cr_assert_eq(add(cfg, up("v1-to-v2", "orders.v1.Placed", "orders.v2.Placed", 0, 0), &err),
                 ES_OK, "%s", err.message);
    becomes(cfg, "orders.v1.Placed", 0, "orders.v3.Placed", "p>v1-to-v2>v2-to-v3");
    becomes(cfg, "orders.v2.Placed", 5, "orders.v3.Placed", "p>v2-to-v3");
    becomes(cfg, "orders.v3.Placed", 0, NULL, NULL);
    es_config_destroy(cfg);
}

Test(upcast, version_limited_upcasters_rewrite_one_type_name_version_by_version) {
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(add(cfg, up("placed-to-2", "orders.v1.Placed", "orders.v1.Placed", 1, 2), &err),
                 ES_OK, "%s", err.message);
    cr_assert_eq(add(cfg, up("placed-to-3", "orders.v1.Placed", "orders.v1.Placed", 2, 0), &err),
                 ES_OK, "%s", err.message);
    becomes(cfg, "orders.v1.Placed", 0, "orders.v1.Placed", "p>placed-to-2>placed-to-3");
    becomes(cfg, "orders.v1.Placed", 1, "orders.v1.Placed", "p>placed-to-2>placed-to-3");
    becomes(cfg, "orders.v1.Placed", 2, "orders.v1.Placed", "p>placed-to-3");
    becomes(cfg, "orders.v1.Placed", 3, NULL, NULL);
    /* An unlimited upcaster of the name takes what the limited ones leave, their output too. */
    cr_assert_eq(add(cfg, up("rename", "orders.v1.Placed", "orders.v2.Placed", 0, 0), &err), ES_OK,
                 "%s", err.message);
    becomes(cfg, "orders.v1.Placed", 1, "orders.v2.Placed", "p>placed-to-2>placed-to-3>rename");
    becomes(cfg, "orders.v1.Placed", 3, "orders.v2.Placed", "p>rename");
    es_config_destroy(cfg);
}

Test(upcast, bad_upcasters_are_refused_naming_them_and_nothing_is_added) {
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_expect_eq(es_config_add_upcaster(cfg, NULL, &err), ES_EINVAL);
    cr_expect_eq(es_config_add_upcaster(NULL, NULL, NULL), ES_EINVAL);
    es_upcaster_t u = up("old-abi", "a.v1.X", "a.v2.X", 0, 0);
    u.abi_version = ES_UPCASTER_ABI + 1;
    refused(cfg, u, "upcaster 'old-abi'", "ABI version 2");
    refused(cfg, up("", "a.v1.X", "a.v2.X", 0, 0), "no name", "a.v1.X");
    refused(cfg, up("bad-from", "a.v1.X-", "a.v2.X", 0, 0), "upcaster 'bad-from'",
            "not a protobuf full name");
    refused(cfg, up("bad-to", "a.v1.X", "", 0, 0), "upcaster 'bad-to'", "to type");
    u = up("no-fn", "a.v1.X", "a.v2.X", 0, 0);
    u.upcast = NULL;
    refused(cfg, u, "upcaster 'no-fn'", "no upcast function");
    refused(cfg, up("loop", "a.v1.X", "a.v1.X", 0, 0), "upcaster 'loop'", "itself");
    refused(cfg, up("loop-limited", "a.v1.X", "a.v1.X", 3, 2), "upcaster 'loop-limited'", "itself");
    cr_expect_null(es_config_upcasts(cfg), "nothing registered");
    es_config_destroy(cfg);
}

Test(upcast, an_upcaster_registered_twice_for_a_type_is_refused_and_changes_nothing) {
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(add(cfg, up("first", "a.v1.X", "a.v2.X", 0, 0), &err), ES_OK, "%s", err.message);
    refused(cfg, up("second", "a.v1.X", "a.v3.X", 0, 0), "'first' and 'second'", "every a.v1.X");
    cr_assert_eq(add(cfg, up("lim", "a.v1.Y", "a.v1.Y", 2, 3), &err), ES_OK, "%s", err.message);
    refused(cfg, up("lim-again", "a.v1.Y", "a.v2.Y", 2, 0), "'lim' and 'lim-again'",
            "schema versions up to 2");
    becomes(cfg, "a.v1.X", 0, "a.v2.X", "p>first");
    becomes(cfg, "a.v1.Y", 1, "a.v1.Y", "p>lim");
    es_config_destroy(cfg);
}

Test(upcast, a_cycle_among_unlimited_upcasters_is_refused) {
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(add(cfg, up("a-to-b", "t.v1.A", "t.v1.B", 0, 0), &err), ES_OK, "%s", err.message);
    cr_assert_eq(add(cfg, up("b-to-c", "t.v1.B", "t.v1.C", 0, 0), &err), ES_OK, "%s", err.message);
    refused(cfg, up("c-to-a", "t.v1.C", "t.v1.A", 0, 0), "'c-to-a'", "cycle");
    cr_expect_eq(add(cfg, up("d-to-a", "t.v1.D", "t.v1.A", 0, 0), &err), ES_OK,
                 "joining the chain is no cycle: %s", err.message);
    becomes(cfg, "t.v1.D", 0, "t.v1.C", "p>d-to-a>a-to-b>b-to-c");
    es_config_destroy(cfg);
}

Test(upcast, a_failing_upcaster_is_an_error_naming_it_the_type_and_the_position) {
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(add(cfg, up("v1-to-v2", "o.v1.P", "o.v2.P", 0, 0), &err), ES_OK, "%s",
                 err.message);
    es_upcaster_t u = up("money-fix", "o.v2.P", "o.v3.P", 0, 0);
    u.upcast = refuse;
    cr_assert_eq(add(cfg, u, &err), ES_OK, "%s", err.message);
    es_err rc;
    cr_expect_null(upcast(cfg, "o.v1.P", 0, &rc, &err));
    cr_expect_eq(rc, ES_EINVAL);
    const char *want[] = {"'money-fix'", "o.v2.P",    "orders.order/o-1 version 7",
                          "partition 2", "offset 41", "the amount is not a number"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        cr_expect(strstr(err.message, want[i]), "'%s' lacks '%s'", err.message, want[i]);
    es_config_destroy(cfg);
}

Test(upcast, a_chain_longer_than_the_limit_is_an_error) {
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    char names[ES_UPCAST_CHAIN_MAX + 2][32], types[ES_UPCAST_CHAIN_MAX + 3][32];
    for (int i = 0; i <= ES_UPCAST_CHAIN_MAX + 1; i++)
        snprintf(types[i], sizeof types[i], "t.v%d.E", i + 1);
    for (int i = 0; i <= ES_UPCAST_CHAIN_MAX; i++) {
        snprintf(names[i], sizeof names[i], "step-%d", i + 1);
        cr_assert_eq(add(cfg, up(names[i], types[i], types[i + 1], 0, 0), &err), ES_OK, "%s",
                     err.message);
    }
    es_err rc;
    cr_expect_null(upcast(cfg, "t.v1.E", 0, &rc, &err));
    cr_expect_neq(rc, ES_OK);
    cr_expect(strstr(err.message, "at most 16"), "%s", err.message);
    es_event_t *out = upcast(cfg, "t.v2.E", 0, &rc, &err);
    cr_expect_eq(rc, ES_OK, "16 steps are allowed: %s", err.message);
    cr_expect_str_eq(out->event_type, types[ES_UPCAST_CHAIN_MAX + 1]);
    es_event_free(out);
    es_config_destroy(cfg);
}

Test(upcast, a_copied_config_carries_its_own_copies_of_the_upcasters) {
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    char name[] = "v1-to-v2", from[] = "o.v1.P", to[] = "o.v2.P";
    cr_assert_eq(add(cfg, up(name, from, to, 0, 0), &err), ES_OK, "%s", err.message);
    memset(from, 'x', sizeof from - 1); /* the caller's strings are not kept */
    es_config_t *copy = es_config_dup(cfg);
    es_config_destroy(cfg);
    becomes(copy, "o.v1.P", 0, "o.v2.P", "p>v1-to-v2");
    es_config_destroy(copy);
}
