#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

Test(config, defaults_are_safe_and_embedded) {
    es_config_t *cfg = es_config_new();
    cr_assert_str_eq(es_config_get(cfg, "backend"), "embedded");
    cr_assert_str_eq(es_config_get(cfg, "sqlite.synchronous"), "full");
    cr_assert_eq(es_config_get_int(cfg, "snapshot.every"), 1);
    cr_assert_str_eq(es_config_get(cfg, "db"), "eskit.db");
    es_config_destroy(cfg);
}

Test(config, unknown_key_is_an_error_naming_the_key) {
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "sqlite.synchronus", "full", &err), ES_EINVAL);
    cr_assert_eq(err.code, ES_EINVAL);
    cr_assert(strstr(err.message, "'sqlite.synchronus'"), "message: %s", err.message);
    cr_assert_null(es_config_get(cfg, "sqlite.synchronus"));
    es_config_destroy(cfg);
}

Test(config, bad_value_is_an_error_naming_key_and_value) {
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "snapshot.every", "often", &err), ES_EINVAL);
    cr_assert(strstr(err.message, "snapshot.every") && strstr(err.message, "often"), "%s",
              err.message);
    cr_assert_eq(es_config_set(cfg, "backend", "postgres", &err), ES_EINVAL);
    cr_assert(strstr(err.message, "postgres"), "%s", err.message);
    es_config_destroy(cfg);
}

Test(config, kafka_keys_are_checked_by_librdkafka) {
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "kafka.linger.ms", "5", &err), ES_OK);
    cr_assert_str_eq(es_config_get(cfg, "kafka.linger.ms"), "5");
    cr_assert_eq(es_config_set(cfg, "kafka.no.such.property", "1", &err), ES_EINVAL);
    cr_assert(strstr(err.message, "kafka.no.such.property"), "%s", err.message);
    es_config_destroy(cfg);
}

Test(config, brokers_switch_the_default_backend_to_kafka) {
    es_config_t *cfg = es_config_new();
    cr_assert_eq(es_config_set(cfg, "brokers", "127.0.0.1:9092", NULL), ES_OK);
    cr_assert_str_eq(es_config_get(cfg, "backend"), "kafka");
    es_config_destroy(cfg);
}

static char *write_file(const char *dir, const char *name, const char *text) {
    char *path = tu_path(dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

Test(config, file_sets_keys_and_errors_name_file_and_line) {
    char *dir = tu_tempdir();
    char *good = write_file(dir, "good.conf", "# comment\n db = /tmp/x.db \nsnapshot.every=10\n");
    char *bad = write_file(dir, "bad.conf", "db = a.db\n\nbogus.key = 1\n");
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(es_config_load_file(cfg, good, &err), ES_OK, "%s", err.message);
    cr_assert_str_eq(es_config_get(cfg, "db"), "/tmp/x.db");
    cr_assert_eq(es_config_get_int(cfg, "snapshot.every"), 10);
    cr_assert_eq(es_config_load_file(cfg, bad, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "bad.conf:3") && strstr(err.message, "bogus.key"), "%s",
              err.message);
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(good);
    free(bad);
    free(dir);
}

Test(config, environment_overrides_and_unknown_variables_are_named) {
    setenv("ESKIT_DB", "/tmp/env.db", 1);
    setenv("ESKIT_SNAPSHOT_EVERY", "5", 1);
    setenv("ESKIT_KAFKA_LINGER_MS", "7", 1);
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(es_config_load_env(cfg, &err), ES_OK, "%s", err.message);
    cr_assert_str_eq(es_config_get(cfg, "db"), "/tmp/env.db");
    cr_assert_eq(es_config_get_int(cfg, "snapshot.every"), 5);
    cr_assert_str_eq(es_config_get(cfg, "kafka.linger.ms"), "7");
    setenv("ESKIT_DATABSE", "x", 1);
    cr_assert_eq(es_config_load_env(cfg, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "ESKIT_DATABSE"), "%s", err.message);
    es_config_destroy(cfg);
}

Test(config, dup_copies_every_key) {
    es_config_t *cfg = es_config_new();
    es_config_set(cfg, "db", "a.db", NULL);
    es_config_set(cfg, "service.name", "orders", NULL);
    es_config_t *copy = es_config_dup(cfg);
    es_config_destroy(cfg);
    cr_assert_str_eq(es_config_get(copy, "db"), "a.db");
    cr_assert_str_eq(es_config_get(copy, "service.name"), "orders");
    es_config_destroy(copy);
}
