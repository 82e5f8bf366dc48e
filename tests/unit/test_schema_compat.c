/*
 * The compatibility rules (docs/schemas.md): one test per rule, each breaking change refused
 * with its message (type, field, number, rule and what to do), each compatible change accepted,
 * under every mode where the mode matters. The types are variants of compat.base.Order
 * (tests/unit/schemas/compat); the checker compares them by structure, whatever the package.
 */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "schema_int.h"
#include "compat/added.pb-c.h"
#include "compat/base.pb-c.h"
#include "compat/card_string.pb-c.h"
#include "compat/cardinality.pb-c.h"
#include "compat/deleted.pb-c.h"
#include "compat/enum_deleted.pb-c.h"
#include "compat/enum_renumber.pb-c.h"
#include "compat/enum_reuse.pb-c.h"
#include "compat/field_int64.pb-c.h"
#include "compat/field_sint.pb-c.h"
#include "compat/field_type.pb-c.h"
#include "compat/nested_type.pb-c.h"
#include "compat/oneof_into.pb-c.h"
#include "compat/oneof_out.pb-c.h"
#include "compat/oneof_split.pb-c.h"
#include "compat/renamed.pb-c.h"
#include "compat/req_added.pb-c.h"
#include "compat/req_base.pb-c.h"
#include "compat/req_optional.pb-c.h"
#include "compat/reuse.pb-c.h"

static const es_compat MODES[] = {ES_COMPAT_BACKWARD, ES_COMPAT_FORWARD, ES_COMPAT_FULL};

static es_schema_t *of(const ProtobufCMessageDescriptor *d) {
    es_schema_t *s = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_schema_of(d, &s, &err), ES_OK, "%s", err.message);
    return s;
}

/* Checks next against the history (oldest first, NULL-terminated) under mode. */
static es_err check(es_compat mode, es_schema_report_t *rep, es_error_t *err,
                    const ProtobufCMessageDescriptor *next, ...) {
    es_schema_t *hist[8], *n = of(next);
    size_t count = 0;
    va_list ap;
    va_start(ap, next);
    for (const ProtobufCMessageDescriptor *d; (d = va_arg(ap, const ProtobufCMessageDescriptor *));)
        hist[count++] = of(d);
    va_end(ap);
    es_err e = es_schema_check((const es_schema_t *const *)hist, count, n, mode, rep, err);
    for (size_t i = 0; i < count; i++)
        es_schema_free(hist[i]);
    es_schema_free(n);
    return e;
}

/* The finding of rule about type.field = number, its message naming all four and a way out. */
static void assert_finding(const es_schema_report_t *rep, const char *rule, const char *type,
                           const char *field, uint32_t number, const char *todo) {
    char num[32];
    snprintf(num, sizeof num, "= %u:", number);
    for (size_t i = 0; i < rep->n; i++) {
        const es_schema_finding_t *f = &rep->findings[i];
        if (strcmp(f->rule, rule) || strcmp(f->field, field))
            continue;
        cr_log_info("%s", f->message);
        cr_assert_str_eq(f->type, type);
        cr_assert_eq(f->number, number);
        cr_assert(strstr(f->message, type) && strstr(f->message, field) &&
                      strstr(f->message, num) && strstr(f->message, rule),
                  "%s", f->message);
        cr_assert(strstr(f->message, todo), "'%s' does not say '%s'", f->message, todo);
        cr_assert(!strchr(f->message, '\n'));
        return;
    }
    cr_assert_fail("no %s finding for %s.%s (%zu findings, first: %s)", rule, type, field, rep->n,
                   rep->n ? rep->findings[0].message : "none");
}

static void assert_refused(es_compat mode, const ProtobufCMessageDescriptor *next,
                           const ProtobufCMessageDescriptor *recorded, const char *rule,
                           const char *type, const char *field, uint32_t number, const char *todo) {
    es_schema_report_t rep = {0};
    es_error_t err = {0};
    cr_assert_eq(check(mode, &rep, &err, next, recorded, NULL), ES_EINCOMPATIBLE, "%s under %s",
                 rule, es_compat_name(mode));
    assert_finding(&rep, rule, type, field, number, todo);
    cr_assert_eq(strncmp(err.message, rep.findings[0].message, 200), 0,
                 "err has the first finding");
    es_schema_report_clear(&rep);
}

static void assert_accepted(es_compat mode, const ProtobufCMessageDescriptor *next, ...) {
    es_schema_t *hist[8], *n = of(next);
    size_t count = 0;
    va_list ap;
    va_start(ap, next);
    for (const ProtobufCMessageDescriptor *d; (d = va_arg(ap, const ProtobufCMessageDescriptor *));)
        hist[count++] = of(d);
    va_end(ap);
    es_schema_report_t rep = {0};
    es_error_t err = {0};
    es_err e = es_schema_check((const es_schema_t *const *)hist, count, n, mode, &rep, &err);
    cr_assert_eq(e, ES_OK, "%s under %s: %s", es_schema_name(n), es_compat_name(mode), err.message);
    cr_assert_eq(rep.n, 0);
    for (size_t i = 0; i < count; i++)
        es_schema_free(hist[i]);
    es_schema_free(n);
}

#define BASE (&compat__base__order__descriptor)

Test(schema_compat, a_field_type_of_another_wire_type_is_refused_in_every_mode) {
    for (size_t i = 0; i < 3; i++)
        assert_refused(MODES[i], &compat__field_type__order__descriptor, BASE,
                       "FIELD_WIRE_COMPATIBLE_TYPE", "compat.field_type.Order", "quantity", 2,
                       "new number");
}

Test(schema_compat, a_field_type_of_the_same_wire_type_but_not_interchangeable_is_refused) {
    for (size_t i = 0; i < 3; i++)
        assert_refused(MODES[i], &compat__field_sint__order__descriptor, BASE,
                       "FIELD_WIRE_COMPATIBLE_TYPE", "compat.field_sint.Order", "quantity", 2,
                       "not interchangeable");
}

Test(schema_compat, an_interchangeable_field_type_is_accepted) {
    for (size_t i = 0; i < 3; i++)
        assert_accepted(MODES[i], &compat__field_int64__order__descriptor, BASE, NULL);
}

Test(schema_compat, a_field_type_changed_in_a_reached_message_type_is_refused_there) {
    assert_refused(ES_COMPAT_BACKWARD, &compat__nested_type__order__descriptor, BASE,
                   "FIELD_WIRE_COMPATIBLE_TYPE", "compat.nested_type.Line", "qty", 2, "upcaster");
}

Test(schema_compat, a_scalar_made_repeated_breaks_cardinality_in_every_mode) {
    for (size_t i = 0; i < 3; i++)
        assert_refused(MODES[i], &compat__cardinality__order__descriptor, BASE,
                       "FIELD_WIRE_COMPATIBLE_CARDINALITY", "compat.cardinality.Order", "quantity",
                       2, "keep the cardinality");
}

Test(schema_compat, a_string_made_repeated_is_accepted_as_buf_allows) {
    for (size_t i = 0; i < 3; i++)
        assert_accepted(MODES[i], &compat__card_string__order__descriptor, BASE, NULL);
}

Test(schema_compat, a_field_moved_into_a_oneof_is_refused) {
    for (size_t i = 0; i < 3; i++)
        assert_refused(MODES[i], &compat__oneof_into__order__descriptor, BASE, "FIELD_SAME_ONEOF",
                       "compat.oneof_into.Order", "email", 3, "keep the field where it was");
}

Test(schema_compat, a_field_moved_out_of_a_oneof_is_refused) {
    for (size_t i = 0; i < 3; i++)
        assert_refused(MODES[i], &compat__oneof_out__order__descriptor, BASE, "FIELD_SAME_ONEOF",
                       "compat.oneof_out.Order", "card", 6, "moved out of oneof");
}

Test(schema_compat, a_field_moved_to_another_oneof_is_refused) {
    for (size_t i = 0; i < 3; i++)
        assert_refused(MODES[i], &compat__oneof_split__order__descriptor, BASE, "FIELD_SAME_ONEOF",
                       "compat.oneof_split.Order", "iban", 7, "to another oneof");
}

Test(schema_compat, only_the_field_moved_into_a_oneof_is_reported) {
    es_schema_report_t rep = {0};
    cr_assert_eq(
        check(ES_COMPAT_BACKWARD, &rep, NULL, &compat__oneof_into__order__descriptor, BASE, NULL),
        ES_EINCOMPATIBLE, "refused with a NULL err too");
    cr_assert_eq(rep.n, 1, "card and iban stay together: %s",
                 rep.n > 1 ? rep.findings[1].message : "");
    es_schema_report_clear(&rep);
}

Test(schema_compat, a_deleted_field_is_accepted_since_field_no_delete_is_no_wire_rule) {
    for (size_t i = 0; i < 3; i++)
        assert_accepted(MODES[i], &compat__deleted__order__descriptor, BASE, NULL);
}

Test(schema_compat, a_deleted_number_reused_with_another_name_is_refused_from_the_history) {
    for (size_t i = 0; i < 3; i++) {
        es_schema_report_t rep = {0};
        es_error_t err = {0};
        cr_assert_eq(check(MODES[i], &rep, &err, &compat__reuse__order__descriptor, BASE,
                           &compat__deleted__order__descriptor, NULL),
                     ES_EINCOMPATIBLE);
        assert_finding(&rep, "FIELD_NO_REUSE_OF_DELETED_NUMBER", "compat.reuse.Order", "phone", 3,
                       "stays reserved");
        cr_assert(strstr(rep.findings[0].message, "email in version 1"), "%s",
                  rep.findings[0].message);
        es_schema_report_clear(&rep);
    }
}

Test(schema_compat, a_deleted_field_brought_back_as_it_was_is_accepted) {
    assert_accepted(ES_COMPAT_FULL, BASE, BASE, &compat__deleted__order__descriptor, NULL);
}

Test(schema_compat, a_renamed_field_keeping_number_and_type_is_accepted) {
    for (size_t i = 0; i < 3; i++) {
        assert_accepted(MODES[i], &compat__renamed__order__descriptor, BASE, NULL);
        assert_accepted(MODES[i], &compat__reuse__order__descriptor, BASE, NULL);
    }
}

Test(schema_compat, a_new_field_enum_value_and_type_are_accepted) {
    for (size_t i = 0; i < 3; i++)
        assert_accepted(MODES[i], &compat__added__order__descriptor, BASE, NULL);
}

Test(schema_compat, an_enum_value_renumbered_is_refused) {
    for (size_t i = 0; i < 3; i++)
        assert_refused(MODES[i], &compat__enum_renumber__order__descriptor, BASE,
                       "ENUM_VALUE_SAME_NUMBER", "compat.enum_renumber.Status", "STATUS_CLOSED", 3,
                       "keep STATUS_CLOSED = 2");
}

Test(schema_compat, a_deleted_enum_number_reused_with_another_name_is_refused) {
    for (size_t i = 0; i < 3; i++) {
        es_schema_report_t rep = {0};
        es_error_t err = {0};
        cr_assert_eq(check(MODES[i], &rep, &err, &compat__enum_reuse__order__descriptor, BASE,
                           &compat__enum_deleted__order__descriptor, NULL),
                     ES_EINCOMPATIBLE);
        assert_finding(&rep, "ENUM_VALUE_NO_REUSE", "compat.enum_reuse.Status", "STATUS_CANCELLED",
                       2, "new number");
        es_schema_report_clear(&rep);
    }
    assert_accepted(ES_COMPAT_FULL, &compat__enum_deleted__order__descriptor, BASE, NULL);
}

Test(schema_compat, a_required_field_added_breaks_backward_and_full_not_forward) {
    const ProtobufCMessageDescriptor *base = &compat__req_base__order__descriptor;
    assert_refused(ES_COMPAT_BACKWARD, &compat__req_added__order__descriptor, base,
                   "MESSAGE_SAME_REQUIRED_FIELDS", "compat.req_added.Order", "note", 3,
                   "make it optional");
    assert_refused(ES_COMPAT_FULL, &compat__req_added__order__descriptor, base,
                   "MESSAGE_SAME_REQUIRED_FIELDS", "compat.req_added.Order", "note", 3,
                   "make it optional");
    assert_accepted(ES_COMPAT_FORWARD, &compat__req_added__order__descriptor, base, NULL);
}

Test(schema_compat, a_required_field_made_optional_breaks_forward_and_full_not_backward) {
    const ProtobufCMessageDescriptor *base = &compat__req_base__order__descriptor;
    assert_refused(ES_COMPAT_FORWARD, &compat__req_optional__order__descriptor, base,
                   "MESSAGE_SAME_REQUIRED_FIELDS", "compat.req_optional.Order", "id", 1,
                   "keep it required");
    assert_refused(ES_COMPAT_FULL, &compat__req_optional__order__descriptor, base,
                   "MESSAGE_SAME_REQUIRED_FIELDS", "compat.req_optional.Order", "id", 1,
                   "keep it required");
    assert_accepted(ES_COMPAT_BACKWARD, &compat__req_optional__order__descriptor, base, NULL);
}

Test(schema_compat, mode_none_and_a_new_type_accept_anything) {
    assert_accepted(ES_COMPAT_NONE, &compat__field_type__order__descriptor, BASE, NULL);
    assert_accepted(ES_COMPAT_BACKWARD, &compat__field_type__order__descriptor, NULL);
}

Test(schema_compat, every_finding_is_in_the_report_and_the_count_in_err) {
    es_schema_report_t rep = {0};
    es_error_t err = {0};
    cr_assert_eq(check(ES_COMPAT_FULL, &rep, &err, &compat__field_type__order__descriptor,
                       &compat__cardinality__order__descriptor, NULL),
                 ES_EINCOMPATIBLE);
    cr_assert_geq(rep.n, 2, "type and cardinality");
    cr_assert(strstr(err.message, "more)"), "%s", err.message);
    es_schema_report_clear(&rep);
    cr_assert_eq(rep.n, 0);
}

Test(schema_compat, modes_parse_and_print) {
    es_compat m;
    es_error_t err = {0};
    cr_assert_eq(es_compat_parse("full", &m, &err), ES_OK);
    cr_assert_eq(m, ES_COMPAT_FULL);
    cr_assert_str_eq(es_compat_name(ES_COMPAT_FORWARD), "forward");
    cr_assert_eq(es_compat_parse("transitive", &m, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "'transitive'") && strstr(err.message, "backward"), "%s",
              err.message);
}

/* es_schema_diff: every change, breaking or not. */
static int has_change(const es_schema_report_t *r, const char *rule, const char *field) {
    for (size_t i = 0; i < r->n; i++)
        if (!strcmp(r->findings[i].rule, rule) &&
            (!field || (r->findings[i].field && !strcmp(r->findings[i].field, field))))
            return 1;
    return 0;
}

static void diff(const ProtobufCMessageDescriptor *a, const ProtobufCMessageDescriptor *b,
                 es_schema_report_t *rep) {
    es_schema_t *x = of(a), *y = of(b);
    es_error_t err = {0};
    cr_assert_eq(es_schema_diff(x, y, rep, &err), ES_OK, "%s", err.message);
    es_schema_free(x);
    es_schema_free(y);
}

Test(schema_compat, diff_lists_every_change) {
    es_schema_report_t rep = {0};
    diff(BASE, BASE, &rep);
    cr_assert_eq(rep.n, 0, "a schema does not differ from itself: %zu", rep.n);
    diff(BASE, &compat__renamed__order__descriptor, &rep);
    cr_assert(has_change(&rep, "FIELD_RENAMED", "count"));
    cr_assert(!has_change(&rep, "FIELD_ADDED", NULL) && !has_change(&rep, "FIELD_REMOVED", NULL));
    diff(BASE, &compat__added__order__descriptor, &rep);
    cr_assert(has_change(&rep, "FIELD_ADDED", "note") &&
              has_change(&rep, "FIELD_ADDED", "address"));
    cr_assert(has_change(&rep, "ENUM_VALUE_ADDED", "STATUS_SHIPPED"));
    cr_assert(has_change(&rep, "TYPE_ADDED", NULL), "compat.added.Address");
    diff(BASE, &compat__deleted__order__descriptor, &rep);
    cr_assert(has_change(&rep, "FIELD_REMOVED", "email"));
    diff(BASE, &compat__field_type__order__descriptor, &rep);
    cr_assert(has_change(&rep, "FIELD_TYPE_CHANGED", "quantity"));
    diff(BASE, &compat__oneof_into__order__descriptor, &rep);
    cr_assert(has_change(&rep, "FIELD_ONEOF_CHANGED", "email"));
    diff(BASE, &compat__enum_renumber__order__descriptor, &rep);
    cr_assert(has_change(&rep, "ENUM_VALUE_NUMBER_CHANGED", "STATUS_CLOSED"));
    diff(&compat__enum_deleted__order__descriptor, &compat__enum_reuse__order__descriptor, &rep);
    cr_assert(has_change(&rep, "ENUM_VALUE_ADDED", "STATUS_CANCELLED"));
    diff(BASE, &compat__enum_reuse__order__descriptor, &rep);
    cr_assert(has_change(&rep, "ENUM_VALUE_RENAMED", "STATUS_CANCELLED"));
    diff(BASE, &compat__cardinality__order__descriptor, &rep);
    cr_assert(has_change(&rep, "FIELD_LABEL_CHANGED", "quantity"));
    es_schema_report_clear(&rep);
}
