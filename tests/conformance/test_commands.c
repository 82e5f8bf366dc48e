/*
 * The command side's behaviour, the same on both backends (CTest runs this
 * file with CONFORMANCE_BACKEND=embedded and =kafka; on Kafka a command
 * processor owns the partitions and es_execute waits for its replies):
 * outcomes, versions and events, rejections, expected versions, a command
 * id executed once, and a command id refused when it comes again with
 * another command.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "domain.h"
#include "testutil.h"

static tb_t *b;

static void setup(void) {
    static const char *const types[] = {"orders.order", "payments.payment", "inventory.item", NULL};
    b = tb_open(types);
}

static void teardown(void) {
    tb_close(b);
}

TestSuite(commands, .init = setup, .fini = teardown, .timeout = 120);

static Orders__V1__LineItem item = {PROTOBUF_C_MESSAGE_INIT(&orders__v1__line_item__descriptor),
                                    "sku-1", 2, 1500};
static Orders__V1__LineItem *items[] = {&item};

static es_error_t last_err; /* what the last es_execute said */

static es_err run(const char *id, const ProtobufCMessage *msg, const char *command_id,
                  es_expect expect, uint64_t expected, es_result_t *res) {
    es_command_t cmd = {.aggregate_type = "orders.order",
                        .aggregate_id = id,
                        .message = msg,
                        .command_id = command_id,
                        .expect = expect,
                        .expected_version = expected};
    memset(&last_err, 0, sizeof last_err);
    memset(res, 0, sizeof *res);
    return es_execute(tb_engine(b), &cmd, res, &last_err);
}

static es_err place_for(const char *id, const char *command_id, const char *customer,
                        es_result_t *res) {
    Orders__V1__PlaceOrder m = ORDERS__V1__PLACE_ORDER__INIT;
    m.customer_id = (char *)customer;
    m.n_items = 1;
    m.items = items;
    m.currency = "EUR";
    return run(id, &m.base, command_id, ES_EXPECT_ANY, 0, res);
}

static es_err place(const char *id, const char *command_id, es_result_t *res) {
    return place_for(id, command_id, "alice", res);
}

static es_err confirm(const char *id, es_expect expect, uint64_t expected, es_result_t *res) {
    Orders__V1__ConfirmOrder m = ORDERS__V1__CONFIRM_ORDER__INIT;
    return run(id, &m.base, NULL, expect, expected, res);
}

static es_err cancel_as(const char *id, const char *command_id, const char *reason,
                        es_result_t *res) {
    Orders__V1__CancelOrder m = ORDERS__V1__CANCEL_ORDER__INIT;
    m.reason = (char *)reason;
    return run(id, &m.base, command_id, ES_EXPECT_ANY, 0, res);
}

static es_err cancel(const char *id, es_result_t *res) {
    return cancel_as(id, NULL, "changed my mind", res);
}

/* Events of the order as readers see them (Kafka: once the topic has them all). */
static int events_of(const char *id, int want) {
    return (int)tb_events_of(b, "orders.order", id, (size_t)want);
}

Test(commands, accepted_commands_return_versions_and_their_events) {
    es_result_t res;
    cr_assert_eq(place("o-1", NULL, &res), ES_OK, "%s", res.reason ? res.reason : "");
    cr_assert_eq(res.outcome, ES_OUTCOME_ACCEPTED);
    cr_assert_eq(res.version, 1);
    cr_assert_eq(res.first_version, 1);
    cr_assert_eq(res.n_events, 1);
    cr_assert_str_eq(res.events[0]->event_type, "orders.v1.OrderPlaced");
    cr_assert_str_eq(res.events[0]->aggregate_id, "o-1");
    cr_assert_eq(res.events[0]->version, 1);
    es_result_clear(&res);
    cr_assert_eq(confirm("o-1", ES_EXPECT_EXACT, 1, &res), ES_OK);
    cr_assert_eq(res.version, 2);
    cr_assert_str_eq(res.events[0]->event_type, "orders.v1.OrderConfirmed");
    es_result_clear(&res);
    cr_assert_eq(events_of("o-1", 2), 2);
}

Test(commands, a_rejection_gives_the_reason_and_appends_nothing) {
    es_result_t res;
    cr_assert_eq(place("o-2", NULL, &res), ES_OK);
    es_result_clear(&res);
    cr_assert_eq(cancel("o-2", &res), ES_OK);
    es_result_clear(&res);
    cr_assert_eq(confirm("o-2", ES_EXPECT_ANY, 0, &res), ES_EREJECTED);
    cr_assert_eq(res.outcome, ES_OUTCOME_REJECTED);
    cr_assert_not_null(res.reason);
    cr_assert(strstr(res.reason, "cancelled"), "%s", res.reason);
    cr_assert_eq(res.n_events, 0);
    cr_assert_eq(res.version, 2);
    es_result_clear(&res);
    cr_assert_eq(events_of("o-2", 2), 2);
}

Test(commands, a_wrong_expected_version_is_a_conflict_and_appends_nothing) {
    es_result_t res;
    cr_assert_eq(place("o-3", NULL, &res), ES_OK);
    es_result_clear(&res);
    cr_assert_eq(confirm("o-3", ES_EXPECT_EXACT, 5, &res), ES_ECONFLICT);
    cr_assert_eq(res.outcome, ES_OUTCOME_CONFLICT);
    cr_assert_eq(res.n_events, 0);
    es_result_clear(&res);
    cr_assert_eq(confirm("o-3", ES_EXPECT_NO_STREAM, 0, &res), ES_ECONFLICT);
    es_result_clear(&res);
    cr_assert_eq(events_of("o-3", 1), 1);
}

Test(commands, the_same_command_id_twice_appends_once_and_answers_the_first_result) {
    es_result_t first, again;
    cr_assert_eq(place("o-4", "cmd-o-4", &first), ES_OK);
    cr_assert_eq(place("o-4", "cmd-o-4", &again), ES_OK);
    cr_assert(again.duplicate);
    cr_assert(!first.duplicate);
    cr_assert_eq(again.version, first.version);
    cr_assert_eq(again.first_version, first.first_version);
    cr_assert_eq(again.n_events, first.n_events);
    cr_assert_str_eq(again.events[0]->event_id, first.events[0]->event_id);
    es_result_clear(&first);
    es_result_clear(&again);
    cr_assert_eq(events_of("o-4", 1), 1);
}

/* What a refusal of a reused command id must say: the code, the id, and what differs. */
static void assert_id_reused(es_err rc, const es_result_t *res, const char *command_id,
                             const char *what) {
    cr_assert_eq(rc, ES_EIDREUSED, "got %s: %s", es_strerror(rc), last_err.message);
    cr_assert_eq(res->code, ES_EIDREUSED);
    cr_assert_eq(res->outcome, ES_OUTCOME_ERROR);
    cr_assert_not(res->duplicate);
    cr_assert_eq(res->n_events, 0);
    cr_assert(strstr(last_err.message, command_id), "%s", last_err.message);
    cr_assert(strstr(last_err.message, what), "%s", last_err.message);
    cr_assert(strstr(res->reason, command_id), "%s", res->reason);
}

Test(commands, a_command_id_reused_with_another_payload_is_refused_naming_the_id) {
    es_result_t res;
    cr_assert_eq(place_for("o-5", "cmd-o-5", "alice", &res), ES_OK);
    es_result_clear(&res);
    es_err rc = place_for("o-5", "cmd-o-5", "mallory", &res);
    assert_id_reused(rc, &res, "cmd-o-5", "another payload");
    es_result_clear(&res);
    cr_assert_eq(events_of("o-5", 1), 1);
    cr_assert_eq(place_for("o-5", "cmd-o-5", "alice", &res), ES_OK, "%s", last_err.message);
    cr_assert(res.duplicate, "the first command is still answered");
    es_result_clear(&res);
}

Test(commands, a_command_id_reused_for_another_command_type_is_refused_naming_the_id) {
    es_result_t res;
    cr_assert_eq(place("o-6", "cmd-o-6", &res), ES_OK);
    es_result_clear(&res);
    es_err rc = cancel_as("o-6", "cmd-o-6", "changed my mind", &res);
    assert_id_reused(rc, &res, "cmd-o-6", "another command type");
    es_result_clear(&res);
    cr_assert_eq(events_of("o-6", 1), 1);
}

Test(commands, a_retried_rejection_gets_the_same_rejection_and_another_payload_is_refused) {
    es_result_t first, again;
    cr_assert_eq(cancel_as("o-7", "cancel-o-7", "changed my mind", &first), ES_EREJECTED);
    cr_assert_not(first.duplicate);
    cr_assert_eq(cancel_as("o-7", "cancel-o-7", "changed my mind", &again), ES_EREJECTED);
    cr_assert(again.duplicate);
    cr_assert_eq(again.outcome, ES_OUTCOME_REJECTED);
    cr_assert_str_eq(again.reason, first.reason);
    cr_assert(strstr(last_err.message, first.reason), "%s", last_err.message);
    es_result_clear(&first);
    es_result_clear(&again);
    es_err rc = cancel_as("o-7", "cancel-o-7", "another reason", &again);
    assert_id_reused(rc, &again, "cancel-o-7", "another payload");
    es_result_clear(&again);
    cr_assert_eq(events_of("o-7", 0), 0);
}

/* A command the checks refuse: ES_EINVAL, an error result whose reason names the field and is
 * one line of text, and nothing appended. */
static void refused(es_command_t *cmd, const char *field) {
    es_result_t res;
    es_error_t err = {0};
    memset(&res, 0, sizeof res);
    cr_assert_eq(es_execute(tb_engine(b), cmd, &res, &err), ES_EINVAL, "%s: %s", field,
                 err.message);
    cr_assert_eq(res.outcome, ES_OUTCOME_ERROR);
    cr_assert_not_null(res.reason);
    cr_assert(strstr(res.reason, field), "the reason names the %s: %s", field, res.reason);
    cr_assert(strstr(err.message, field), "%s", err.message);
    for (const char *p = err.message; *p; p++)
        cr_assert((unsigned char)*p >= 0x20 && *p != 0x7f, "control byte 0x%02x in: %s",
                  (unsigned char)*p, err.message);
    cr_assert_eq(res.n_events, 0);
    es_result_clear(&res);
}

static es_command_t place_cmd(const char *id, Orders__V1__PlaceOrder *m) {
    orders__v1__place_order__init(m);
    m->customer_id = "alice";
    m->n_items = 1;
    m->items = items;
    m->currency = "EUR";
    return (es_command_t){
        .aggregate_type = "orders.order", .aggregate_id = id, .message = &m->base};
}

Test(commands, a_command_id_with_a_newline_an_escape_bad_utf8_or_too_long_is_refused) {
    char long_id[300];
    memset(long_id, 'c', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    const char *bad[] = {"cmd-1\nINFO forged line",
                         "cmd-\x1b[31mred",
                         "cmd-\xc3(",
                         "cmd-\xff",
                         "cmd-\xc2\x9b" /* C1 CSI */,
                         long_id};
    Orders__V1__PlaceOrder m;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        es_command_t cmd = place_cmd("o-bad-cid", &m);
        cmd.command_id = bad[i];
        refused(&cmd, "command id");
    }
    cr_assert_eq(events_of("o-bad-cid", 0), 0);
    es_result_t res;
    char ok_id[256];
    memset(ok_id, 'c', sizeof ok_id - 1);
    ok_id[sizeof ok_id - 1] = '\0';
    cr_assert_eq(place("o-bad-cid", ok_id, &res), ES_OK, "255 bytes is within the limit: %s",
                 res.reason ? res.reason : "");
    es_result_clear(&res);
    cr_assert_eq(place("o-utf8", "bestellung-\xc3\xa4-\xe2\x82\xac", &res), ES_OK,
                 "UTF-8 text is an id: %s", res.reason ? res.reason : "");
    cr_assert_str_eq(res.events[0]->command_id, "bestellung-\xc3\xa4-\xe2\x82\xac");
    es_result_clear(&res);
}

Test(commands, a_correlation_id_or_metadata_key_or_value_of_70_kb_is_refused) {
    size_t big = 70 * 1024;
    char *huge = malloc(big + 1);
    cr_assert(huge);
    memset(huge, 'k', big);
    huge[big] = '\0';
    Orders__V1__PlaceOrder m;
    es_command_t cmd = place_cmd("o-big", &m);
    cmd.correlation_id = huge;
    refused(&cmd, "correlation id");
    es_kv_t md[1] = {{huge, "v"}};
    cmd = place_cmd("o-big", &m);
    cmd.metadata = md;
    cmd.n_metadata = 1;
    refused(&cmd, "metadata key");
    md[0] = (es_kv_t){"note", huge};
    refused(&cmd, "metadata value");
    md[0] = (es_kv_t){"note", "line one\nline two"};
    refused(&cmd, "metadata value");
    cmd = place_cmd("o-big", &m);
    cmd.correlation_id = "corr\r\n";
    refused(&cmd, "correlation id");
    free(huge);
    cr_assert_eq(events_of("o-big", 0), 0);
}

Test(commands, more_metadata_entries_than_the_limit_or_a_key_twice_is_refused) {
    enum { N = 65 };
    es_kv_t md[N];
    char keys[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        md[i] = (es_kv_t){keys[i], "v"};
    }
    Orders__V1__PlaceOrder m;
    es_command_t cmd = place_cmd("o-md", &m);
    cmd.metadata = md;
    cmd.n_metadata = N;
    refused(&cmd, "metadata entries");
    md[1].key = "k0";
    cmd.n_metadata = 2;
    refused(&cmd, "metadata key 'k0' appears twice");
    md[1].key = keys[1];
    cmd.n_metadata = N - 1; /* the limit itself is fine */
    es_result_t res;
    es_error_t err = {0};
    memset(&res, 0, sizeof res);
    cr_assert_eq(es_execute(tb_engine(b), &cmd, &res, &err), ES_OK, "%s", err.message);
    /* the caller's 64, then the event's traceparent and eskit.parent_span (<eskit/trace.h>),
     * which do not count against the limit */
    cr_assert_eq(res.events[0]->n_metadata, N - 1 + 2);
    es_result_clear(&res);
}

Test(commands, in_a_batch_a_refused_command_is_its_own_result_and_the_others_run) {
    Orders__V1__PlaceOrder m;
    es_command_t cmds[3] = {place_cmd("o-bt1", &m), place_cmd("o-bt2", &m), place_cmd("o-bt3", &m)};
    cmds[1].command_id = "bad\nid";
    es_result_t res[3];
    es_error_t err = {0};
    memset(res, 0, sizeof res);
    cr_assert_eq(es_execute_batch(tb_engine(b), cmds, 3, res, &err), ES_OK, "%s", err.message);
    cr_assert_eq(res[0].outcome, ES_OUTCOME_ACCEPTED, "%s", res[0].reason ? res[0].reason : "");
    cr_assert_eq(res[1].outcome, ES_OUTCOME_ERROR);
    cr_assert_eq(res[1].code, ES_EINVAL);
    cr_assert(strstr(res[1].reason, "command id"), "%s", res[1].reason);
    cr_assert_eq(res[2].outcome, ES_OUTCOME_ACCEPTED, "%s", res[2].reason ? res[2].reason : "");
    for (int i = 0; i < 3; i++)
        es_result_clear(&res[i]);
    cr_assert_eq(events_of("o-bt1", 1), 1);
    cr_assert_eq(events_of("o-bt3", 1), 1);
}

Test(commands, a_batch_answers_every_command_in_order) {
    es_command_t cmds[6];
    es_result_t res[6];
    char ids[6][16];
    Orders__V1__PlaceOrder m = ORDERS__V1__PLACE_ORDER__INIT;
    m.customer_id = "bob";
    m.n_items = 1;
    m.items = items;
    m.currency = "EUR";
    for (int i = 0; i < 6; i++) {
        snprintf(ids[i], sizeof ids[i], "b-%d", i % 3);
        cmds[i] = (es_command_t){
            .aggregate_type = "orders.order", .aggregate_id = ids[i], .message = &m.base};
    }
    es_error_t err = {0};
    memset(res, 0, sizeof res);
    cr_assert_eq(es_execute_batch(tb_engine(b), cmds, 6, res, &err), ES_OK, "%s", err.message);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(res[i].outcome, i < 3 ? ES_OUTCOME_ACCEPTED : ES_OUTCOME_REJECTED,
                     "command %d: outcome %d (%s)", i, (int)res[i].outcome,
                     res[i].reason ? res[i].reason : "");
        es_result_clear(&res[i]);
    }
}
