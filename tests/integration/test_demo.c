/*
 * The embedded demo as a new user runs it: where its files go, and the esctl
 * commands it ends with, run as printed.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

static char *dir;

static void setup(void) {
    unsetenv("ESKIT_DB");
    unsetenv("ESKIT_CONFIG");
    unsetenv("ESKIT_BROKERS");
    unsetenv("ESKIT_BACKEND");
    dir = tu_tempdir();
    cr_assert_not_null(dir);
    cr_assert_eq(chdir(dir), 0);
}

static void teardown(void) {
    tu_rmtree(dir);
    free(dir);
}

TestSuite(demo, .init = setup, .fini = teardown);

/* The names in path, sorted, joined by blanks. */
static char *listing(const char *path) {
    struct dirent **names = NULL;
    int n = scandir(path, &names, NULL, alphasort);
    cr_assert_geq(n, 0, "cannot list %s", path);
    char *out = calloc(1, 4096);
    for (int i = 0; i < n; i++) {
        if (strcmp(names[i]->d_name, ".") && strcmp(names[i]->d_name, "..")) {
            strncat(out, *out ? " " : "", 4095 - strlen(out));
            strncat(out, names[i]->d_name, 4095 - strlen(out));
        }
        free(names[i]);
    }
    free(names);
    return out;
}

static tu_result run_demo(const char *const *env) {
    tu_result r = {0};
    r.status = tu_run((const char *const[]){DEMO_PATH, NULL}, env, &r.out, &r.err);
    return r;
}

Test(demo, keeps_a_runs_files_in_one_directory_and_ends_with_esctl_commands_that_work) {
    tu_result r = run_demo(NULL);
    cr_assert_eq(r.status, 0, "stdout: %s\nstderr: %s", r.out, r.err);
    char *top = listing(".");
    cr_assert_str_eq(top, "order_saga_demo", "the demo left in the current directory: %s", top);
    char *files = listing("order_saga_demo");
    cr_assert(strstr(files, "events.db") && strstr(files, "read.db") && strstr(files, "saga.db"),
              "%s", files);
    const char *tail = strstr(r.out, "\ninspect what this run left:\n");
    cr_assert_not_null(tail, "%s", r.out);
    tail = strchr(tail + 1, '\n') + 1;
    int commands = 0;
    for (const char *line = tail; *line; commands++) {
        size_t len = strcspn(line, "\n");
        char *cmd = strndup(line, len);
        cr_assert(!strncmp(cmd, "  ", 2) && strstr(cmd, "esctl"), "not a command: %s", cmd);
        char *out = NULL, *err = NULL;
        int st = tu_run((const char *const[]){"/bin/sh", "-c", cmd, NULL}, NULL, &out, &err);
        cr_expect_eq(st, 0, "%s\nexited %d: %s", cmd, st, err);
        /* The payloads and the state decode through the demo's types module. */
        if (strstr(cmd, " events "))
            cr_expect(strstr(out, "customer_id=") && !strstr(err, "hint"), "%s\n%s%s", cmd, out,
                      err);
        if (strstr(cmd, " state "))
            cr_expect(strstr(out, "status: ORDER_STATUS_") && strstr(out, " version "), "%s\n%s%s",
                      cmd, out, err);
        free(out);
        free(err);
        free(cmd);
        line += len + (line[len] == '\n');
    }
    cr_assert_geq(commands, 5, "%s", tail);
    /* Inspection created nothing either. */
    char *after = listing(".");
    cr_assert_str_eq(after, "order_saga_demo");
    free(after);
    free(files);
    free(top);
    tu_result_free(&r);
}

Test(demo, puts_its_files_beside_the_database_named_by_ESKIT_DB) {
    cr_assert_eq(mkdir("data", 0755), 0);
    tu_result r = run_demo((const char *const[]){"ESKIT_DB=data/shop.db", NULL});
    cr_assert_eq(r.status, 0, "stdout: %s\nstderr: %s", r.out, r.err);
    char *top = listing(".");
    cr_assert_str_eq(top, "data", "the demo left in the current directory: %s", top);
    char *files = listing("data");
    cr_assert(strstr(files, "shop.db ") && strstr(files, "shop.db.read.db") &&
                  strstr(files, "shop.db.saga.db"),
              "%s", files);
    cr_assert(strstr(r.out, "--db data/shop.db events orders.order"), "%s", r.out);
    free(files);
    free(top);
    tu_result_free(&r);
}
