/*
 * eskit-bench as `make bench` runs it: the binary as a separate process over every group of
 * figures. Only that it finishes and prints its whole table is checked, never a ratio: the
 * figures depend on the machine and its load.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static size_t count(const char *s, const char *what) {
    size_t n = 0;
    for (const char *p = s; (p = strstr(p, what)); p += strlen(what))
        n++;
    return n;
}

/* The figures in the table: its rows between the rule and the first blank line, two a figure
 * (the figure, then its indented baseline). */
static size_t table_figures(const char *out) {
    const char *p = strstr(out, "---\n");
    size_t n = 0;
    if (!p)
        return 0;
    for (p = strchr(p, '\n') + 1; *p && *p != '\n'; p = strchr(p, '\n') + 1) {
        n++;
        if (!strchr(p, '\n'))
            break;
    }
    return n / 2;
}

Test(bench, a_quick_run_over_every_group_exits_0_with_every_figure, .timeout = 280) {
    char *dir = tu_tempdir();
    char *out = NULL, *err = NULL;
    const char *argv[] = {ESKIT_BENCH_PATH, "--quick", "--dir", dir, NULL};
    int status = tu_run(argv, NULL, &out, &err);
    cr_assert_eq(status, 0, "eskit-bench --quick exited %d; stderr:\n%s", status, err ? err : "");
    cr_assert_not_null(out);
    /* One figure per group at least, and the table's footer after the last. */
    static const char *const groups[] = {"es_store_append",
                                         "es_execute_batch, 1,000 Restock",
                                         "es_execute latency",
                                         "es_replay",
                                         "es_execute_batch over Kafka",
                                         "saga orders.fulfilment",
                                         "metrics.enabled=false"};
    for (size_t i = 0; i < sizeof groups / sizeof *groups; i++)
        cr_expect(count(out, groups[i]) > 0, "no figure '%s' in:\n%s", groups[i], out);
    /* The metrics group: execute, Kafka and replay, each beside itself with metrics off. */
    cr_expect_eq(count(out, ", metrics on"), 3, "not 3 figures with metrics on in:\n%s", out);
    cr_expect(strstr(out, "ratio = value / baseline"), "no table footer in:\n%s", out);
    /* More figures than the fixed table of 16 that every full run overflowed. */
    cr_expect_gt(table_figures(out), 16, "a table of fewer figures than measured:\n%s", out);
    free(out);
    free(err);
    tu_rmtree(dir);
    free(dir);
}
