/*
 * The demo saga orders.fulfilment (examples/order_saga/fulfilment.c), step by step on the test
 * kit (eskit/testing.h): what each step sends, what completes or fails it, timeouts on the
 * virtual clock, and compensation in reverse order, in memory with no file. The whole machine
 * (coordinator, relay, both backends) is tested by tests/conformance/test_sagas.c.
 */
#include <criterion/criterion.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "domain.h"
#include "fulfilment.h"

static es_test_saga_t *s;
static char report[8192];

static void setup(void) {
    es_error_t err = {0};
    cr_assert_eq(es_test_saga_new(&demo_fulfilment_def, &s, &err), ES_OK, "%s", err.message);
}

static void teardown(void) {
    es_test_saga_destroy(s);
}

TestSuite(fulfilment, .init = setup, .fini = teardown);

#define LINE(sku, n, price)                                                                        \
    { PROTOBUF_C_MESSAGE_INIT(&orders__v1__line_item__descriptor), (sku), (n), (price) }
static Orders__V1__LineItem lines[] = {LINE("sku-mug", 2, 1250), LINE("sku-tee", 1, 1999),
                                       LINE("sku-mug", 1, 1250)};
static Orders__V1__LineItem *items[] = {&lines[0], &lines[1], &lines[2]};

/* o-1 is placed: two mugs and a tee, and one more mug on a line of its own. */
static void start(void) {
    Orders__V1__OrderPlaced placed = ORDERS__V1__ORDER_PLACED__INIT;
    placed.customer_id = "alice";
    placed.n_items = 3;
    placed.items = items;
    placed.amount_cents = 5749;
    placed.currency = "USD";
    es_error_t err = {0};
    cr_assert_eq(es_test_saga_start(s, "o-1", &placed.base, &err), ES_OK, "%s", err.message);
}

/* The id of the i-th command the last step sent. */
static const char *sent_id(size_t i) {
    size_t n = 0;
    const es_test_sent_t *sent = es_test_saga_sent(s, &n);
    cr_assert_lt(i, n, "only %zu command(s) were sent", n);
    return sent[i].command_id;
}

static void event(const char *command_id, const ProtobufCMessage *ev) {
    es_error_t err = {0};
    cr_assert_eq(es_test_saga_event(s, command_id, ev, &err), ES_OK, "%s", err.message);
}

static void accepted(const char *command_id) {
    es_error_t err = {0};
    cr_assert_eq(es_test_saga_accepted(s, command_id, &err), ES_OK, "%s", err.message);
}

static void advance(int64_t ms) {
    es_error_t err = {0};
    cr_assert_eq(es_test_saga_advance(s, ms, &err), ES_OK, "%s", err.message);
}

static void then_state(const char *state, const char *step) {
    cr_assert(es_test_saga_then_state(s, state, report, sizeof report), "%s", report);
    cr_assert_str_eq(es_test_saga_step(s), step);
}

static void then_nothing_sent(void) {
    cr_assert(es_test_saga_then_sent(s, NULL, 0, report, sizeof report), "%s", report);
}

static Inventory__V1__ReserveStock reserve(uint32_t quantity) {
    Inventory__V1__ReserveStock r = INVENTORY__V1__RESERVE_STOCK__INIT;
    r.order_id = "o-1";
    r.quantity = quantity;
    return r;
}

static Inventory__V1__StockReserved reserved(uint32_t quantity) {
    Inventory__V1__StockReserved r = INVENTORY__V1__STOCK_RESERVED__INIT;
    r.order_id = "o-1";
    r.quantity = quantity;
    return r;
}

/* The stock step done: both SKUs reserved, so the payment step has sent its command. */
static void stock_reserved(void) {
    start();
    const char *mug = strdup(sent_id(0)), *tee = strdup(sent_id(1));
    Inventory__V1__StockReserved three = reserved(3), one = reserved(1);
    event(mug, &three.base);
    event(tee, &one.base);
    free((void *)mug);
    free((void *)tee);
}

static Payments__V1__AuthorizePayment authorize(void) {
    Payments__V1__AuthorizePayment a = PAYMENTS__V1__AUTHORIZE_PAYMENT__INIT;
    a.order_id = "o-1";
    a.customer_id = "alice";
    a.amount_cents = 5749;
    a.currency = "USD";
    return a;
}

Test(fulfilment, an_order_placed_reserves_each_sku_once_with_all_its_units) {
    start();
    Inventory__V1__ReserveStock mugs = reserve(3), tee = reserve(1);
    es_test_send_t want[] = {{"sku-mug", &mugs.base}, {"sku-tee", &tee.base}};
    cr_assert(es_test_saga_then_sent(s, want, 2, report, sizeof report), "%s", report);
    then_state("running", "reserve_stock");
    cr_assert_str_eq(sent_id(0), "orders.fulfilment/o-1/reserve_stock.0/do");
    cr_assert_str_eq(es_test_saga_sent(s, NULL)[1].aggregate_type, "inventory.item");
}

Test(fulfilment, the_payment_is_authorized_for_the_order_once_every_sku_is_reserved) {
    start();
    Inventory__V1__StockReserved three = reserved(3), one = reserved(1);
    event(sent_id(0), &three.base);
    then_nothing_sent();
    then_state("running", "reserve_stock");
    event("orders.fulfilment/o-1/reserve_stock.1/do", &one.base);
    Payments__V1__AuthorizePayment a = authorize();
    es_test_send_t want[] = {{"o-1", &a.base}};
    cr_assert(es_test_saga_then_sent(s, want, 1, report, sizeof report), "%s", report);
    then_state("running", "authorize_payment");
}

Test(fulfilment, an_authorized_payment_confirms_the_order_and_its_confirmation_completes_it) {
    stock_reserved();
    Payments__V1__PaymentAuthorized ok = PAYMENTS__V1__PAYMENT_AUTHORIZED__INIT;
    ok.order_id = "o-1";
    ok.amount_cents = 5749;
    event(sent_id(0), &ok.base);
    Orders__V1__ConfirmOrder confirm = ORDERS__V1__CONFIRM_ORDER__INIT;
    es_test_send_t want[] = {{"o-1", &confirm.base}};
    cr_assert(es_test_saga_then_sent(s, want, 1, report, sizeof report), "%s", report);
    Orders__V1__OrderConfirmed confirmed = ORDERS__V1__ORDER_CONFIRMED__INIT;
    event(sent_id(0), &confirmed.base);
    then_nothing_sent();
    then_state("completed", "");
}

Test(fulfilment, a_pending_payment_is_waited_for) {
    stock_reserved();
    Payments__V1__PaymentPending pending = PAYMENTS__V1__PAYMENT_PENDING__INIT;
    pending.order_id = "o-1";
    pending.reason = "3-D Secure";
    event(sent_id(0), &pending.base);
    then_nothing_sent();
    then_state("running", "authorize_payment");
}

Test(fulfilment, a_shortage_releases_what_was_reserved_then_cancels_the_order) {
    start();
    const char *tee = "orders.fulfilment/o-1/reserve_stock.1/do";
    Inventory__V1__StockReserved three = reserved(3);
    event(sent_id(0), &three.base);
    Inventory__V1__StockShortage none = INVENTORY__V1__STOCK_SHORTAGE__INIT;
    none.order_id = "o-1";
    none.requested = 1;
    event(tee, &none.base);
    /* the tee was never reserved: only the mugs are released */
    Inventory__V1__ReleaseStock release = INVENTORY__V1__RELEASE_STOCK__INIT;
    release.order_id = "o-1";
    es_test_send_t want[] = {{"sku-mug", &release.base}};
    cr_assert(es_test_saga_then_sent(s, want, 1, report, sizeof report), "%s", report);
    then_state("compensating", "reserve_stock");
    cr_assert_str_eq(es_test_saga_reason(s),
                     "step reserve_stock failed: inventory.v1.StockShortage");
    cr_assert_str_eq(es_test_saga_sent(s, NULL)[0].kind, "undo");

    accepted(sent_id(0));
    Orders__V1__CancelOrder cancel = ORDERS__V1__CANCEL_ORDER__INIT;
    cancel.reason = "step reserve_stock failed: inventory.v1.StockShortage";
    es_test_send_t abort[] = {{"o-1", &cancel.base}};
    cr_assert(es_test_saga_then_sent(s, abort, 1, report, sizeof report), "%s", report);
    cr_assert_str_eq(es_test_saga_sent(s, NULL)[0].kind, "abort");
    then_state("compensating", "on_abort");
    accepted(sent_id(0));
    then_state("aborted", "");
}

Test(fulfilment, a_payment_that_times_out_is_refunded_then_the_stock_released_in_reverse_order) {
    stock_reserved();
    advance(DEMO_PAYMENT_TIMEOUT_MS - 1);
    then_nothing_sent();
    then_state("running", "authorize_payment");
    advance(1);
    Payments__V1__RefundPayment refund = PAYMENTS__V1__REFUND_PAYMENT__INIT;
    refund.reason = "step authorize_payment timed out after 30000 ms";
    es_test_send_t undo_payment[] = {{"o-1", &refund.base}};
    cr_assert(es_test_saga_then_sent(s, undo_payment, 1, report, sizeof report), "%s", report);
    then_state("compensating", "authorize_payment");

    accepted(sent_id(0));
    Inventory__V1__ReleaseStock release = INVENTORY__V1__RELEASE_STOCK__INIT;
    release.order_id = "o-1";
    es_test_send_t undo_stock[] = {{"sku-mug", &release.base}, {"sku-tee", &release.base}};
    cr_assert(es_test_saga_then_sent(s, undo_stock, 2, report, sizeof report), "%s", report);
    then_state("compensating", "reserve_stock");
    const char *tee = strdup(sent_id(1));
    accepted(sent_id(0));
    then_nothing_sent(); /* one release is still open */
    accepted(tee);
    free((void *)tee);
    Orders__V1__CancelOrder cancel = ORDERS__V1__CANCEL_ORDER__INIT;
    cancel.reason = "step authorize_payment timed out after 30000 ms";
    es_test_send_t abort[] = {{"o-1", &cancel.base}};
    cr_assert(es_test_saga_then_sent(s, abort, 1, report, sizeof report), "%s", report);
}

Test(fulfilment, a_declined_payment_is_not_refunded_but_the_stock_is_released) {
    stock_reserved();
    Payments__V1__PaymentDeclined declined = PAYMENTS__V1__PAYMENT_DECLINED__INIT;
    declined.order_id = "o-1";
    declined.reason = "card expired";
    event(sent_id(0), &declined.base);
    Inventory__V1__ReleaseStock release = INVENTORY__V1__RELEASE_STOCK__INIT;
    release.order_id = "o-1";
    es_test_send_t want[] = {{"sku-mug", &release.base}, {"sku-tee", &release.base}};
    cr_assert(es_test_saga_then_sent(s, want, 2, report, sizeof report), "%s", report);
    cr_assert_str_eq(es_test_saga_reason(s),
                     "step authorize_payment failed: payments.v1.PaymentDeclined: card expired");
}

Test(fulfilment, a_rejected_compensation_fails_the_instance_for_an_operator) {
    stock_reserved();
    advance(DEMO_PAYMENT_TIMEOUT_MS);
    es_error_t err = {0};
    cr_assert_eq(es_test_saga_rejected(s, sent_id(0), "the payment service is gone", &err), ES_OK,
                 "%s", err.message);
    then_nothing_sent();
    then_state("failed", "");
    cr_assert_str_eq(es_test_saga_reason(s), "compensation payments.v1.RefundPayment was "
                                             "rejected: the payment service is gone");
}

Test(fulfilment, the_demo_definition_times_the_payment_out_after_a_second) {
    es_test_saga_destroy(s);
    cr_assert_eq(es_test_saga_new(&demo_fulfilment_short_def, &s, NULL), ES_OK);
    stock_reserved();
    advance(DEMO_SHORT_PAYMENT_TIMEOUT_MS);
    then_state("compensating", "authorize_payment");
    cr_assert_str_eq(es_test_saga_sent(s, NULL)[0].command->descriptor->name,
                     "payments.v1.RefundPayment");
}

Test(fulfilment, a_late_event_of_a_timed_out_step_changes_nothing) {
    stock_reserved();
    const char *payment = strdup(sent_id(0));
    advance(DEMO_PAYMENT_TIMEOUT_MS);
    Payments__V1__PaymentAuthorized ok = PAYMENTS__V1__PAYMENT_AUTHORIZED__INIT;
    ok.order_id = "o-1";
    event(payment, &ok.base);
    free((void *)payment);
    then_nothing_sent();
    then_state("compensating", "authorize_payment");
}

/* The definition ABI: an ABI 1 definition (the struct of 0.1.0's headers, one
 * field shorter, on the heap at its exact size so ASan sees an overread) runs the same, and an
 * ABI 2 one's opaque reaches the step callbacks. */
static void restart_with(const es_saga_def *def) {
    es_test_saga_destroy(s);
    s = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_test_saga_new(def, &s, &err), ES_OK, "%s", err.message);
}

Test(fulfilment, a_definition_of_the_older_abi_1_runs_the_same_steps) {
    size_t abi1 = offsetof(es_saga_def, opaque);
    void *old = malloc(abi1);
    es_saga_def v1 = demo_fulfilment_def;
    v1.abi_version = 1;
    memcpy(old, &v1, abi1);
    restart_with(old);
    start();
    size_t n = 0;
    es_test_saga_sent(s, &n);
    cr_assert_eq(n, 2, "one reservation per SKU");
    then_state("running", "reserve_stock");
    es_test_saga_destroy(s);
    s = NULL;
    free(old);
}

static es_saga_step_t counted_steps[3];

static es_err counted_send(const es_saga_view_t *v, es_saga_out_t *out, es_error_t *err) {
    (*(int *)es_saga_view_opaque(v))++;
    return demo_fulfilment_def.steps[0].send(v, out, err);
}

Test(fulfilment, the_definitions_opaque_reaches_the_step_callbacks) {
    int sends = 0;
    es_saga_def def = demo_fulfilment_def;
    cr_assert_eq(def.n_steps, 3);
    memcpy(counted_steps, def.steps, sizeof counted_steps);
    counted_steps[0].send = counted_send;
    def.steps = counted_steps;
    def.opaque = &sends;
    restart_with(&def);
    start();
    cr_assert_eq(sends, 1);
}
