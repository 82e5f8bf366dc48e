/*
 * make demo-kafka: tools/demo-kafka.sh run as a user runs it, against this
 * build. It starts esctl dev-broker, the three command processors and the saga
 * coordinator as processes of their own and runs the driver; the script must
 * exit 0, every saga must end as the story says (the order_summary read model
 * shows each order's outcome), the services must report the work they did,
 * and nothing may be left behind.
 */
#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#define SCRIPT ESKIT_SOURCE_DIR "/tools/demo-kafka.sh"

static char *dir;

static void setup(void) {
    tu_unset_eskit_env();
    dir = tu_tempdir();
    cr_assert_not_null(dir);
}

static void teardown(void) {
    tu_rmtree(dir);
    free(dir);
}

TestSuite(demo_kafka, .init = setup, .fini = teardown, .timeout = 120);

/* The line of out that starts with prefix and holds every one of the NULL-terminated words;
 * NULL when none does. */
static const char *line_with(const char *out, const char *prefix, const char *const *words) {
    size_t plen = strlen(prefix);
    for (const char *line = out; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        bool ok = len >= plen && strncmp(line, prefix, plen) == 0;
        for (const char *const *w = words; ok && *w; w++) {
            const char *hit = strstr(line, *w);
            ok = hit && hit + strlen(*w) <= line + len;
        }
        if (ok)
            return line;
        line = end ? end + 1 : NULL;
    }
    return NULL;
}

#define ASSERT_LINE(out, prefix, ...)                                                              \
    cr_assert_not_null(line_with(out, prefix, (const char *const[]){__VA_ARGS__, NULL}),           \
                       "no line starting '%s' with %s in the output:\n%s", prefix, #__VA_ARGS__,   \
                       out)

Test(demo_kafka, every_saga_ends_as_the_story_says_with_the_services_in_processes_of_their_own) {
    char tmpdir[4096];
    snprintf(tmpdir, sizeof tmpdir, "TMPDIR=%s", dir);
    const char *const argv[] = {"/bin/sh", SCRIPT, ESKIT_BINARY_DIR, NULL};
    const char *const env[] = {tmpdir, NULL};
    char *out = NULL, *err = NULL;
    int status = tu_run(argv, env, &out, &err);
    cr_assert_not_null(out);
    cr_assert_eq(status, 0, "demo-kafka exited %d\nstdout:\n%s\nstderr:\n%s", status, out,
                 err ? err : "");

    /* The driver's verdict and the sagas' ends, as the log shows them. */
    ASSERT_LINE(out, "every saga ended as expected", "");
    ASSERT_LINE(out, "saga orders.fulfilment ran", "3 completed, 3 aborted, 0 failed",
                "1 step(s) timed out");
    /* Each order's outcome in the read model, which only the events make. */
    ASSERT_LINE(out, "  order-1", "confirmed", "alice");
    ASSERT_LINE(out, "  order-2", "confirmed", "bob");
    ASSERT_LINE(out, "  order-3", "cancelled", "dave", "StockShortage");
    ASSERT_LINE(out, "  order-4", "cancelled", "broke-carol", "PaymentDeclined");
    ASSERT_LINE(out, "  order-5", "cancelled", "erin", "timed out");
    ASSERT_LINE(out, "  order-6", "confirmed", "frank");

    /* The work was done by the other processes, which stopped cleanly when asked. */
    ASSERT_LINE(out, "[orders] ", "orders.order: stopped after");
    ASSERT_LINE(out, "[payments] ", "payments.payment: stopped after");
    ASSERT_LINE(out, "[inventory] ", "inventory.item: stopped after");
    ASSERT_LINE(out, "[saga] ", "stopped; 6 saga(s) started, 3 completed, 3 aborted, 0 failed");

    /* The script removed its files (TMPDIR is this test's directory). */
    char *left = NULL;
    const char *const ls[] = {"/bin/ls", "-A", dir, NULL};
    cr_assert_eq(tu_run(ls, NULL, &left, NULL), 0);
    cr_assert_str_empty(left, "demo-kafka left files behind: %s", left);
    free(left);
    free(out);
    free(err);
}
