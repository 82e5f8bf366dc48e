/*
 * esctl run where someone else left an eskit.conf: in a directory another user
 * owns (as root, uid 65534), a file others can write, code-loading keys in a
 * file of our own. The config is refused with one line saying why and how to
 * trust it, and evil.so, whose constructor writes a marker file, never runs,
 * whether named as a librdkafka plugin or a types module or found as a projector module.
 * Named by the process (--config FILE, the environment) the same evil.so does run: the control
 * that keeps the refusals from passing vacuously. Without any config the working directory is
 * never searched for a module.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

static char *dir;
static char *marker;

static void setup(void) {
    static const char *const vars[] = {
        "ESKIT_DB",           "ESKIT_CONFIG",         "ESKIT_BROKERS",      "ESKIT_BACKEND",
        "ESKIT_READMODEL_DB", "ESKIT_PROJECTOR_PATH", "ESKIT_TYPES_MODULES"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        unsetenv(vars[i]);
    dir = tu_tempdir();
    cr_assert_not_null(dir);
    marker = tu_path(dir, "evil-ran");
}

static void teardown(void) {
    tu_rmtree(dir);
    free(dir);
    free(marker);
}

TestSuite(esctl_trust, .init = setup, .fini = teardown, .timeout = 60);

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

static void copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    cr_assert(in && out, "copying %s to %s", from, to);
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        cr_assert_eq(fwrite(buf, 1, n, out), n);
    fclose(in);
    fclose(out);
}

/* A directory under dir holding an eskit.conf with text (none when NULL) and, when module is
 * set, evil.so under that name. */
static char *make_dir(const char *name, const char *conf_text, const char *module) {
    char *d = tu_path(dir, name);
    cr_assert_eq(mkdir(d, 0755), 0);
    char *conf = tu_path(d, "eskit.conf");
    if (conf_text)
        write_file(conf, conf_text);
    if (module) {
        char *so = tu_path(d, module);
        copy_file(TEST_MODULES_DIR "/evil.so", so);
        free(so);
    }
    free(conf);
    return d;
}

/* Gives d and everything in it to uid 65534, as the attacker who made them would own
 * them. A user who cannot chown makes d writable by every user instead: refused too. */
static void give_away(const char *d) {
    if (geteuid() != 0) {
        cr_assert_eq(chmod(d, 0777), 0);
        return;
    }
    static const char *const names[] = {"", "/eskit.conf", "/evil.so", "/order_summary.so"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char *p = NULL;
        cr_assert_gt(asprintf(&p, "%s%s", d, names[i]), 0);
        if (access(p, F_OK) == 0)
            cr_assert_eq(chown(p, 65534, 65534), 0, "chown %s", p);
        free(p);
    }
}

/* Runs "esctl <args>" from directory cwd with EVIL_MARKER and the variable extra (NAME=VALUE,
 * none when NULL) set. */
static tu_result run_in_env(const char *cwd, const char *extra, const char *args) {
    char *script = NULL, *env_marker = NULL;
    cr_assert_gt(asprintf(&script, "cd '%s' && exec '%s' %s", cwd, ESCTL_PATH, args), 0);
    cr_assert_gt(asprintf(&env_marker, "EVIL_MARKER=%s", marker), 0);
    const char *argv[] = {"/bin/sh", "-c", script, NULL};
    const char *env[] = {env_marker, extra, NULL};
    tu_result r = {0};
    r.status = tu_run(argv, env, &r.out, &r.err);
    cr_assert(r.out && r.err);
    free(script);
    free(env_marker);
    return r;
}

static tu_result run_in(const char *cwd, const char *args) {
    return run_in_env(cwd, NULL, args);
}

static void assert_refused(const tu_result *r, const char *what) {
    cr_expect_eq(r->status, 1, "exit %d, stderr: %s", r->status, r->err);
    cr_expect_eq(tu_count_lines(r->err), 1, "stderr should be one line: %s", r->err);
    cr_expect_eq(strncmp(r->err, "esctl: ", 7), 0, "%s", r->err);
    cr_expect(strstr(r->err, what) && strstr(r->err, "--config FILE"), "%s", r->err);
    cr_expect_eq(access(marker, F_OK), -1, "evil.so ran: %s exists", marker);
}

/* The controls: the refusals above assert that the marker never appears, which would pass as
 * well if evil.so could not write it. Loaded from the process's own settings, it does. */
Test(esctl_trust,
     the_same_projector_module_named_with_config_file_is_loaded_and_writes_its_marker) {
    char *d = make_dir("ours", "projector.path = .\n", "order_summary.so");
    tu_result r = run_in(d, "--config eskit.conf replay order_summary");
    cr_expect_eq(access(marker, F_OK), 0, "evil.so did not run: exit %d, stderr: %s", r.status,
                 r.err);
    cr_expect(strstr(r.err, "./order_summary.so is not a projector module"), "%s", r.err);
    tu_result_free(&r);
    free(d);
}

Test(esctl_trust,
     the_same_plugin_named_in_the_environment_is_loaded_by_librdkafka_and_writes_its_marker) {
    char *d = make_dir("ours", NULL, "evil.so");
    char *var = NULL;
    cr_assert_gt(asprintf(&var, "ESKIT_KAFKA_PLUGIN_LIBRARY_PATHS=%s/evil.so", d), 0);
    tu_result r = run_in_env(d, var, "--brokers 127.0.0.1:9 topics plan orders.order");
    cr_expect_eq(access(marker, F_OK), 0, "evil.so did not run: exit %d, stderr: %s", r.status,
                 r.err);
    tu_result_free(&r);
    free(var);
    free(d);
}

/* No eskit.conf and no projector.path: a module by name comes from beside esctl, never from
 * the working directory, whoever put it there. */
Test(esctl_trust, without_a_config_the_working_directory_is_never_searched_for_a_projector_module) {
    char *d = make_dir("cwd", NULL, "order_summary.so");
    char *db = tu_path(d, "events.db"), *rm = tu_path(d, "read.db");
    es_config_t *cfg = es_config_new();
    es_store_t *store = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "db", db, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_store_new(cfg, &store, &err), ES_OK, "%s", err.message);
    es_store_destroy(store);
    es_config_destroy(cfg);
    tu_result r = run_in(d, "--db events.db --readmodel read.db replay order_summary");
    cr_expect_eq(r.status, 0, "exit %d, stderr: %s", r.status, r.err);
    cr_expect_eq(access(marker, F_OK), -1, "./order_summary.so was loaded: %s exists", marker);
    cr_expect_eq(
        tu_query_int(rm, "SELECT count(*) FROM sqlite_master WHERE name = 'order_summary'"), 1,
        "the installed order_summary did not build its table");
    tu_result_free(&r);
    free(db);
    free(rm);
    free(d);
}

Test(esctl_trust, a_plugin_named_in_another_users_directory_never_runs) {
    char *d = make_dir("theirs", "kafka.plugin.library.paths = ./evil.so\n", "evil.so");
    give_away(d);
    tu_result r = run_in(d, "events orders.order o-1");
    assert_refused(&r, "refusing eskit.conf");
    tu_result_free(&r);
    free(d);
}

Test(esctl_trust, a_projector_module_in_another_users_directory_is_never_loaded) {
    char *d = make_dir("theirs", "projector.path = .\n", "order_summary.so");
    give_away(d);
    tu_result r = run_in(d, "replay order_summary");
    assert_refused(&r, "refusing eskit.conf");
    tu_result_free(&r);
    free(d);
}

Test(esctl_trust, a_plugin_named_in_our_own_eskit_conf_is_refused_and_never_runs) {
    char *d =
        make_dir("ours", "db = events.db\nkafka.plugin.library.paths = ./evil.so\n", "evil.so");
    tu_result r = run_in(d, "events orders.order o-1");
    assert_refused(&r, "eskit.conf:2: kafka.plugin.library.paths loads code");
    cr_expect(strstr(r.err, "ESKIT_KAFKA_PLUGIN_LIBRARY_PATHS"), "%s", r.err);
    tu_result_free(&r);
    free(d);
}

Test(esctl_trust, projector_path_in_our_own_eskit_conf_is_refused_and_the_module_never_loads) {
    char *d = make_dir("ours", "projector.path = .\n", "order_summary.so");
    tu_result r = run_in(d, "replay order_summary");
    assert_refused(&r, "eskit.conf:1: projector.path loads code");
    cr_expect(strstr(r.err, "ESKIT_PROJECTOR_PATH"), "%s", r.err);
    tu_result_free(&r);
    free(d);
}

Test(esctl_trust, types_modules_in_our_own_eskit_conf_is_refused_and_the_module_never_loads) {
    char *d = make_dir("ours", "types.modules = ./evil.so\n", "evil.so");
    tu_result r = run_in(d, "state orders.order o-1");
    assert_refused(&r, "eskit.conf:1: types.modules loads code");
    cr_expect(strstr(r.err, "ESKIT_TYPES_MODULES"), "%s", r.err);
    tu_result_free(&r);
    free(d);
    d = make_dir("ours2", "db = events.db\ntypes.modules = evil\n", "evil.so");
    r = run_in(d, "events orders.order o-1");
    assert_refused(&r, "eskit.conf:2: types.modules loads code");
    tu_result_free(&r);
    free(d);
}

Test(esctl_trust, a_types_module_in_another_users_directory_is_never_loaded) {
    char *d = make_dir("theirs", "types.modules = ./evil.so\n", "evil.so");
    give_away(d);
    tu_result r = run_in(d, "events orders.order o-1");
    assert_refused(&r, "refusing eskit.conf");
    tu_result_free(&r);
    free(d);
}

Test(esctl_trust, an_eskit_conf_another_user_owns_is_refused_and_read_when_named) {
    char *d = make_dir("theirs", "db = their.db\n", NULL);
    give_away(d);
    tu_result r = run_in(d, "events orders.order o-1");
    assert_refused(&r, geteuid() == 0 ? "owned by uid 65534" : "(mode 0777)");
    tu_result_free(&r);
    /* Named, the same file is read: esctl gets as far as the database it names. */
    r = run_in(d, "--config eskit.conf events orders.order o-1");
    cr_expect_eq(r.status, 1, "stderr: %s", r.err);
    cr_expect(strstr(r.err, "cannot open database 'their.db'"), "%s", r.err);
    tu_result_free(&r);
    free(d);
}

Test(esctl_trust, an_eskit_conf_others_can_write_is_refused) {
    char *d = make_dir("ours", "db = events.db\n", NULL);
    char *conf = tu_path(d, "eskit.conf");
    cr_assert_eq(chmod(conf, 0666), 0);
    tu_result r = run_in(d, "events orders.order o-1");
    assert_refused(&r, "every user can write to it (mode 0666)");
    tu_result_free(&r);
    free(conf);
    free(d);
}

Test(esctl_trust, an_eskit_conf_in_a_directory_anyone_can_write_is_refused) {
    char *d = make_dir("shared", "db = events.db\n", NULL);
    cr_assert_eq(chmod(d, 0777), 0);
    tu_result r = run_in(d, "events orders.order o-1");
    assert_refused(&r, "every user can write to its directory (mode 0777)");
    tu_result_free(&r);
    free(d);
}

Test(esctl_trust, a_directory_named_with_config_is_an_error_naming_it) {
    tu_result r = TU_ESCTL("--config", dir, "events", "orders.order", "o-1");
    cr_expect_eq(r.status, 1, "exit %d, stderr: %s", r.status, r.err);
    cr_expect_eq(tu_count_lines(r.err), 1, "stderr should be one line: %s", r.err);
    cr_expect(strstr(r.err, dir) && strstr(r.err, "is a directory"), "%s", r.err);
    tu_result_free(&r);
}
