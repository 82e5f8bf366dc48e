/*
 * esctl schemas (docs/schemas.md): the catalogue of a store the demo wrote, listed, shown,
 * diffed, and checked against a types module before a deploy: exit 0 for the demo's own
 * module, 1 with every broken rule for a module that would break the log, 2 for bad usage;
 * and the same list on Kafka's catalogue topic.
 */
#include <criterion/criterion.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cattest/cattest_variants.h"
#include "domain.h"
#include "kafkautil.h"
#include "testutil.h"

static char *dir;
static char *db;

static void setup(void) {
    static const char *const vars[] = {
        "ESKIT_DB",      "ESKIT_CONFIG",        "ESKIT_BROKERS",
        "ESKIT_BACKEND", "ESKIT_TYPES_MODULES", "ESKIT_SCHEMA_COMPATIBILITY"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        unsetenv(vars[i]);
    dir = tu_tempdir();
    db = tu_path(dir, "events.db");
}

static void teardown(void) {
    tu_rmtree(dir);
    free(dir);
    free(db);
}

TestSuite(esctl_schemas, .init = setup, .fini = teardown, .timeout = 90);

/* A store whose catalogue holds the demo's types (es_engine_register records them), and
 * cattest.v1.Thing in two versions. */
static void write_store(void) {
    es_config_t *cfg = tu_config(dir, "events.db");
    es_engine_t *engine = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(cfg, &engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(engine, &err), ES_OK, "%s", err.message);
    es_engine_destroy(engine);
    es_schemas_t *cat = NULL;
    cr_assert_eq(es_schemas_open(cfg, 0, &cat, &err), ES_OK, "%s", err.message);
    const ProtobufCMessageDescriptor *v1 = cattest_variant("base", NULL),
                                     *v2 = cattest_variant("note", NULL);
    cr_assert_eq(es_schemas_register(cat, &v1, 1, NULL, NULL, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_schemas_register(cat, &v2, 1, NULL, NULL, &err), ES_OK, "%s", err.message);
    es_schemas_close(cat);
    es_config_destroy(cfg);
}

static void assert_one_error_line(const tu_result *r) {
    cr_expect_eq(tu_count_lines(r->err), 1, "stderr should be one line: %s", r->err);
    cr_expect_eq(strncmp(r->err, "esctl: ", 7), 0, "%s", r->err);
}

static char *beside_esctl(const char *name) {
    char *copy = strdup(ESCTL_PATH);
    char *path = tu_path(dirname(copy), name);
    free(copy);
    return path;
}

Test(esctl_schemas, list_shows_each_type_once_with_its_latest_version) {
    write_store();
    tu_result r = TU_ESCTL("--db", db, "schemas", "list");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert_str_eq(r.err, "");
    cr_assert(strncmp(r.out, "TYPE ", 5) == 0, "%s", r.out);
    const char *placed = strstr(r.out, "\norders.v1.OrderPlaced ");
    cr_assert_not_null(placed, "%s", r.out);
    cr_assert(strstr(placed, " 1  sha256:"), "%s", r.out);
    const char *thing = strstr(r.out, "\ncattest.v1.Thing ");
    cr_assert_not_null(thing, "%s", r.out);
    cr_assert(strstr(thing, " 2  sha256:"), "the latest version: %s", r.out);
    cr_assert_null(strstr(thing + 1, "\ncattest.v1.Thing "), "each type once: %s", r.out);
    tu_result_free(&r);

    r = TU_ESCTL("--db", db, "schemas", "list", "--json");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "\"type\": \"cattest.v1.Thing\", \"version\": 1") &&
                  strstr(r.out, "\"type\": \"cattest.v1.Thing\", \"version\": 2") &&
                  strstr(r.out, "\"fingerprint\": \"sha256:"),
              "every version in JSON: %s", r.out);
    tu_result_free(&r);
}

Test(esctl_schemas, show_prints_a_version_with_its_fields) {
    write_store();
    tu_result r = TU_ESCTL("--db", db, "schemas", "show", "orders.v1.OrderPlaced");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "orders.v1.OrderPlaced version 1 of 1") &&
                  strstr(r.out, "customer_id") && strstr(r.out, "orders.v1.LineItem"),
              "%s", r.out);
    tu_result_free(&r);
    r = TU_ESCTL("--db", db, "schemas", "show", "cattest.v1.Thing", "1", "--json");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "\"version\": 1") && strstr(r.out, "\"schema\": {") &&
                  !strstr(r.out, "note"),
              "version 1 has no note: %s", r.out);
    tu_result_free(&r);
    r = TU_ESCTL("--db", db, "schemas", "show", "cattest.v1.Thing", "3");
    cr_assert_eq(r.status, 1);
    assert_one_error_line(&r);
    cr_assert(strstr(r.err, "versions 1 to 2, not 3"), "%s", r.err);
    tu_result_free(&r);
    r = TU_ESCTL("--db", db, "schemas", "show", "no.such.Type");
    cr_assert_eq(r.status, 1);
    assert_one_error_line(&r);
    cr_assert(strstr(r.err, "no schema of no.such.Type"), "%s", r.err);
    tu_result_free(&r);
}

Test(esctl_schemas, diff_lists_every_change_between_two_versions) {
    write_store();
    tu_result r = TU_ESCTL("--db", db, "schemas", "diff", "cattest.v1.Thing", "1", "2");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "note") && strstr(r.out, "10"), "the field added: %s", r.out);
    tu_result_free(&r);
    r = TU_ESCTL("--db", db, "schemas", "diff", "cattest.v1.Thing", "2", "2");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "no changes"), "%s", r.out);
    tu_result_free(&r);
    r = TU_ESCTL("--db", db, "schemas", "diff", "cattest.v1.Thing", "1", "2", "--json");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "\"changes\": [") && strstr(r.out, "\"number\": 10"), "%s", r.out);
    tu_result_free(&r);
}

Test(esctl_schemas, check_accepts_the_services_own_module) {
    write_store();
    char *types = beside_esctl("projectors/order_saga_types.so");
    tu_result r = TU_ESCTL("--db", db, "schemas", "check", types);
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    cr_assert(strstr(r.out, "compatible:") && strstr(r.out, "schema.compatibility = backward"),
              "%s", r.out);
    tu_result_free(&r);
    /* Nothing was written: the catalogue still lists what it did. */
    r = TU_ESCTL("--db", db, "schemas", "list", "--json");
    cr_assert_null(strstr(r.out, "\"version\": 2, \"fingerprint\": \"sha256:") &&
                       strstr(r.out, "orders.v1.OrderPlaced\", \"version\": 2"),
                   "%s", r.out);
    tu_result_free(&r);
    free(types);
}

Test(esctl_schemas, check_refuses_a_module_that_would_break_the_log_with_every_reason) {
    write_store();
    char *impostor = tu_path(TEST_MODULES_DIR, "impostor_types.so");
    tu_result r = TU_ESCTL("--db", db, "schemas", "check", impostor);
    cr_assert_eq(r.status, 1, "%s%s", r.out, r.err);
    assert_one_error_line(&r);
    cr_assert(strstr(r.err, "would break the log") && strstr(r.err, "impostor_types.so"), "%s",
              r.err);
    cr_assert(strstr(r.out, "orders.v1.OrderPlaced") && strstr(r.out, "FIELD_") &&
                  strstr(r.out, "2"),
              "a line per broken rule, naming type, rule and number: %s", r.out);
    tu_result_free(&r);
    r = TU_ESCTL("--db", db, "schemas", "check", impostor, "--json");
    cr_assert_eq(r.status, 1);
    cr_assert(strstr(r.out, "\"compatible\": false") && strstr(r.out, "\"rule\": \"FIELD_"), "%s",
              r.out);
    tu_result_free(&r);
    /* Under none every schema may be recorded. */
    const char *const env[] = {"ESKIT_SCHEMA_COMPATIBILITY=none", NULL};
    r = TU_ESCTL_ENV(env, "--db", db, "schemas", "check", impostor);
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    tu_result_free(&r);
    free(impostor);
}

Test(esctl_schemas, bad_usage_is_one_line_and_exit_2) {
    write_store();
    const char *const *cases[] = {
        (const char *const[]){"--db", db, "schemas", NULL},
        (const char *const[]){"--db", db, "schemas", "drop", NULL},
        (const char *const[]){"--db", db, "schemas", "show", NULL},
        (const char *const[]){"--db", db, "schemas", "show", "cattest.v1.Thing", "x", NULL},
        (const char *const[]){"--db", db, "schemas", "diff", "cattest.v1.Thing", "1", NULL},
        (const char *const[]){"--db", db, "schemas", "check", NULL},
        (const char *const[]){"--db", db, "schemas", "list", "extra", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        tu_result r = tu_esctl(NULL, cases[i]);
        cr_assert_eq(r.status, 2, "case %zu: %s", i, r.err);
        assert_one_error_line(&r);
        tu_result_free(&r);
    }
}

Test(esctl_schemas, a_missing_store_is_an_error_and_creates_nothing) {
    char *missing = tu_path(dir, "missing.db");
    tu_result r = TU_ESCTL("--db", missing, "schemas", "list");
    cr_assert_eq(r.status, 1);
    assert_one_error_line(&r);
    cr_assert_neq(access(missing, F_OK), 0, "no file made");
    tu_result_free(&r);
    free(missing);
}

Test(esctl_schemas, list_reads_the_catalogue_topic_on_kafka) {
    rd_kafka_t *mock_rk = tu_kafka_new(RD_KAFKA_PRODUCER, tu_kafka_conf());
    rd_kafka_mock_cluster_t *mock = tu_mock_demo(mock_rk, 1);
    const char *brokers = rd_kafka_mock_cluster_bootstraps(mock);
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "brokers", brokers, &err), ES_OK);
    es_schemas_t *cat = NULL;
    const ProtobufCMessageDescriptor *v1 = cattest_variant("base", NULL);
    cr_assert_eq(es_schemas_open(cfg, 0, &cat, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_schemas_register(cat, &v1, 1, NULL, NULL, &err), ES_OK, "%s", err.message);
    es_schemas_close(cat);
    char env_brokers[1100];
    snprintf(env_brokers, sizeof env_brokers, "ESKIT_BROKERS=%s", brokers);
    const char *const env[] = {env_brokers, NULL};
    tu_result r = TU_ESCTL_ENV(env, "schemas", "list");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "\ncattest.v1.Thing ") && strstr(r.out, " 1  sha256:"), "%s", r.out);
    tu_result_free(&r);
    char *impostor = tu_path(TEST_MODULES_DIR, "impostor_types.so");
    r = TU_ESCTL_ENV(env, "schemas", "check", impostor);
    cr_assert_eq(r.status, 0, "nothing of the demo is recorded here: %s%s", r.out, r.err);
    tu_result_free(&r);
    free(impostor);
    es_config_destroy(cfg);
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_rk);
}
