#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kafka/wire.h"
#include "testutil.h"

Test(config, defaults_are_safe_and_embedded) {
    es_config_t *cfg = es_config_new();
    cr_assert_str_eq(es_config_get(cfg, "backend"), "embedded");
    cr_assert_str_eq(es_config_get(cfg, "sqlite.synchronous"), "full");
    cr_assert_eq(es_config_get_int(cfg, "snapshot.every"), 1);
    cr_assert_str_eq(es_config_get(cfg, "db"), "eskit.db");
    es_config_destroy(cfg);
}

Test(config, an_unknown_key_is_named_with_the_keys_of_its_group_or_all_groups) {
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(es_config_set(cfg, "topics.partitions", "3", &err), ES_EINVAL);
    cr_assert(strstr(err.message, "'topics.partitions'") &&
                  strstr(err.message, "the topics.* keys are topics.aggregates, topics.consumers, "
                                      "topics.partition.throughput, topics.throughput"),
              "%s", err.message);
    cr_assert_eq(es_config_set(cfg, "sync", "full", &err), ES_EINVAL);
    cr_assert(strstr(err.message, "known keys: backend, brokers,") &&
                  strstr(err.message, "projector.*") && strstr(err.message, "sqlite.*") &&
                  strstr(err.message, "types.modules") &&
                  strstr(err.message, "kafka.<librdkafka property>"),
              "every group, the message whole: %s", err.message);
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

/* The file or directory at path as another user's: as root, uid 65534 owns it. A user who
 * cannot chown makes it writable by every user instead, which is refused as well. */
static void give_away(const char *path) {
    if (geteuid() == 0)
        cr_assert_eq(chown(path, 65534, 65534), 0, "chown %s", path);
    else
        cr_assert_eq(chmod(path, 0777), 0, "chmod %s", path);
}

/* What the refusal of a file given away names: its owner, or the mode that let others in. */
static const char *given_away_why(void) {
    return geteuid() == 0 ? "uid 65534" : "(mode 0777)";
}

/* es_config_load_sources from dir (the working directory), without $ESKIT_CONFIG. */
static es_err load_found(const char *dir, es_config_t *cfg, es_error_t *err) {
    unsetenv("ESKIT_CONFIG");
    cr_assert_eq(chdir(dir), 0, "chdir %s", dir);
    return es_config_load_sources(cfg, err);
}

static void assert_refused_saying_how_to_trust(es_err rc, const es_error_t *err, const char *why) {
    cr_assert_eq(rc, ES_EINVAL, "the found eskit.conf was read");
    cr_assert(strstr(err->message, "eskit.conf") && strstr(err->message, why) &&
                  strstr(err->message, "--config FILE") && strstr(err->message, "ESKIT_CONFIG"),
              "%s", err->message);
}

Test(config, a_found_eskit_conf_owned_by_another_user_is_refused) {
    char *dir = tu_tempdir();
    char *conf = write_file(dir, "eskit.conf", "db = theirs.db\n");
    give_away(conf);
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    assert_refused_saying_how_to_trust(load_found(dir, cfg, &err), &err, given_away_why());
    cr_assert_str_eq(es_config_get(cfg, "db"), "eskit.db");
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(conf);
    free(dir);
}

Test(config, a_found_eskit_conf_its_group_or_every_user_can_write_is_refused) {
    char *dir = tu_tempdir();
    char *conf = write_file(dir, "eskit.conf", "db = theirs.db\n");
    es_error_t err = {0};
    static const mode_t modes[] = {0664, 0646};
    static const char *const why[] = {"its group can write to it (mode 0664)",
                                      "every user can write to it (mode 0646)"};
    for (size_t i = 0; i < 2; i++) {
        cr_assert_eq(chmod(conf, modes[i]), 0);
        es_config_t *cfg = es_config_new();
        assert_refused_saying_how_to_trust(load_found(dir, cfg, &err), &err, why[i]);
        es_config_destroy(cfg);
    }
    tu_rmtree(dir);
    free(conf);
    free(dir);
}

Test(config, a_found_eskit_conf_in_a_directory_every_user_can_write_is_refused) {
    char *dir = tu_tempdir();
    char *conf = write_file(dir, "eskit.conf", "db = theirs.db\n");
    cr_assert_eq(chmod(dir, 0777), 0);
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    assert_refused_saying_how_to_trust(load_found(dir, cfg, &err), &err,
                                       "every user can write to its directory (mode 0777)");
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(conf);
    free(dir);
}

Test(config, a_found_eskit_conf_in_another_users_directory_is_refused) {
    char *dir = tu_tempdir();
    char *conf = write_file(dir, "eskit.conf", "db = theirs.db\n");
    give_away(dir);
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    assert_refused_saying_how_to_trust(load_found(dir, cfg, &err), &err,
                                       geteuid() == 0 ? "its directory is owned by uid 65534"
                                                      : "its directory (mode 0777)");
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(conf);
    free(dir);
}

Test(config, a_found_eskit_conf_that_is_a_symlink_or_a_directory_is_refused) {
    char *dir = tu_tempdir();
    char *real = write_file(dir, "real.conf", "db = mine.db\n");
    char *conf = tu_path(dir, "eskit.conf");
    cr_assert_eq(symlink(real, conf), 0);
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    assert_refused_saying_how_to_trust(load_found(dir, cfg, &err), &err, "symbolic link");
    cr_assert_eq(unlink(conf), 0);
    cr_assert_eq(mkdir(conf, 0700), 0);
    assert_refused_saying_how_to_trust(load_found(dir, cfg, &err), &err, "a directory");
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(real);
    free(conf);
    free(dir);
}

Test(config, a_found_eskit_conf_of_our_own_in_a_sticky_directory_is_read) {
    char *dir = tu_tempdir();
    char *conf = write_file(dir, "eskit.conf", "db = mine.db\n");
    cr_assert_eq(chmod(dir, 01777), 0);
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(load_found(dir, cfg, &err), ES_OK, "%s", err.message);
    cr_assert_str_eq(es_config_get(cfg, "db"), "mine.db");
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(conf);
    free(dir);
}

/* The sticky bit keeps other users from replacing the file, not the directory's owner: a
 * world-writable sticky directory is trusted only when root or the user owns it. A user who
 * cannot chown makes the directory not sticky instead, which is refused as well. */
Test(config, a_found_eskit_conf_in_a_sticky_directory_another_user_owns_is_refused) {
    char *dir = tu_tempdir();
    char *conf = write_file(dir, "eskit.conf", "db = theirs.db\n");
    cr_assert_eq(chmod(dir, 01777), 0);
    if (geteuid() == 0)
        cr_assert_eq(chown(dir, 65534, 65534), 0);
    else
        cr_assert_eq(chmod(dir, 0777), 0);
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    assert_refused_saying_how_to_trust(load_found(dir, cfg, &err), &err,
                                       geteuid() == 0 ? "its directory is owned by uid 65534"
                                                      : "its directory (mode 0777)");
    cr_assert_str_eq(es_config_get(cfg, "db"), "eskit.db");
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(conf);
    free(dir);
}

Test(config, a_file_another_user_owns_is_read_when_named_by_eskit_config) {
    char *dir = tu_tempdir();
    char *conf = write_file(dir, "eskit.conf", "db = theirs.db\nprojector.path = /opt/p\n");
    give_away(conf);
    give_away(dir);
    cr_assert_eq(chdir(dir), 0);
    setenv("ESKIT_CONFIG", conf, 1);
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(es_config_load_sources(cfg, &err), ES_OK, "%s", err.message);
    cr_assert_str_eq(es_config_get(cfg, "db"), "theirs.db");
    cr_assert_str_eq(es_config_get(cfg, "projector.path"), "/opt/p");
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(conf);
    free(dir);
}

Test(config, keys_that_load_code_are_refused_from_a_found_eskit_conf_naming_key_file_and_line) {
    static const char *const lines[][2] = {
        {"projector.path = .", "ESKIT_PROJECTOR_PATH"},
        {"kafka.plugin.library.paths = ./evil.so", "ESKIT_KAFKA_PLUGIN_LIBRARY_PATHS"},
        {"kafka.ssl.engine.location = ./engine.so", "ESKIT_KAFKA_SSL_ENGINE_LOCATION"},
        {"kafka.ssl.engine.id = evil", "ESKIT_KAFKA_SSL_ENGINE_ID"},
        {"kafka.ssl.providers = ./provider.so", "ESKIT_KAFKA_SSL_PROVIDERS"},
        {"kafka.sasl.kerberos.kinit.cmd = touch /tmp/owned", "ESKIT_KAFKA_SASL_KERBEROS_KINIT_CMD"},
        {"kafka.sasl.kerberos.keytab = /tmp/k; touch /tmp/owned",
         "ESKIT_KAFKA_SASL_KERBEROS_KEYTAB"},
        {"kafka.sasl.kerberos.principal = x; touch /tmp/owned",
         "ESKIT_KAFKA_SASL_KERBEROS_PRINCIPAL"},
        {"types.modules = ./evil.so", "ESKIT_TYPES_MODULES"},
    };
    char *dir = tu_tempdir();
    for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
        char *text = NULL;
        cr_assert_gt(asprintf(&text, "# ours, mode 0644\ndb = mine.db\n%s\n", lines[i][0]), 0);
        char *conf = write_file(dir, "eskit.conf", text);
        es_config_t *cfg = es_config_new();
        es_error_t err = {0};
        cr_assert_eq(load_found(dir, cfg, &err), ES_EINVAL, "%s was taken", lines[i][0]);
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)strcspn(lines[i][0], " "), lines[i][0]);
        cr_assert(strstr(err.message, "eskit.conf:3:") && strstr(err.message, key) &&
                      strstr(err.message, "--config FILE") && strstr(err.message, lines[i][1]),
                  "%s", err.message);
        cr_assert_null(es_config_get(cfg, key));
        es_config_destroy(cfg);
        free(conf);
        free(text);
    }
    tu_rmtree(dir);
    free(dir);
}

Test(config, keys_that_load_code_are_taken_from_a_named_file_and_the_environment) {
    char *dir = tu_tempdir();
    char *conf = write_file(dir, "ops.conf", "projector.path = /opt/eskit/projectors\n");
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(es_config_load_file(cfg, conf, &err), ES_OK, "%s", err.message);
    cr_assert_str_eq(es_config_get(cfg, "projector.path"), "/opt/eskit/projectors");
    setenv("ESKIT_KAFKA_SASL_KERBEROS_KINIT_CMD", "kinit -k", 1);
    cr_assert_eq(es_config_load_env(cfg, &err), ES_OK, "%s", err.message);
    cr_assert_str_eq(es_config_get(cfg, "kafka.sasl.kerberos.kinit.cmd"), "kinit -k");
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(conf);
    free(dir);
}

Test(config, checking_a_plugin_key_never_loads_the_plugin) {
    char *dir = tu_tempdir();
    char *marker = tu_path(dir, "marker");
    setenv("EVIL_MARKER", marker, 1);
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(
        es_config_set(cfg, "kafka.plugin.library.paths", TEST_MODULES_DIR "/evil.so", &err), ES_OK,
        "%s", err.message);
    cr_assert_eq(access(marker, F_OK), -1, "the plugin's constructor ran while checking the key");
    cr_assert_eq(es_config_set(cfg, "kafka.plugin.library.paths", "a.so\nb.so", &err), ES_EINVAL);
    cr_assert(strstr(err.message, "kafka.plugin.library.paths"), "%s", err.message);
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(marker);
    free(dir);
}

/* The control of the test above: the same evil.so, taken from the environment, is loaded when
 * eskit makes a Kafka client's librdkafka conf, and its marker appears. Without it the test
 * above would pass if the module could not write the marker at all. */
Test(config, a_plugin_from_the_environment_is_loaded_when_a_kafka_client_is_made) {
    char *dir = tu_tempdir();
    char *marker = tu_path(dir, "marker");
    setenv("EVIL_MARKER", marker, 1);
    setenv("ESKIT_KAFKA_PLUGIN_LIBRARY_PATHS", TEST_MODULES_DIR "/evil.so", 1);
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(es_config_load_env(cfg, &err), ES_OK, "%s", err.message);
    cr_assert_eq(access(marker, F_OK), -1, "the plugin ran while reading the environment");
    cr_assert_str_eq(es_config_get(cfg, "kafka.plugin.library.paths"), TEST_MODULES_DIR "/evil.so");
    const es_kafka_opts_t opts = {.role = ES_KAFKA_ADMIN};
    rd_kafka_conf_t *conf = NULL;
    /* evil.so has no conf_init, so librdkafka refuses it, but only after loading it. */
    es_err rc = es_kafka_conf(cfg, &opts, &conf, &err);
    if (conf)
        rd_kafka_conf_destroy(conf);
    cr_assert_eq(access(marker, F_OK), 0, "librdkafka never loaded the plugin (%s: %s)",
                 es_strerror(rc), err.message);
    unsetenv("ESKIT_KAFKA_PLUGIN_LIBRARY_PATHS");
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(marker);
    free(dir);
}

/* fgets into 4096 bytes cut this line in three; the last piece read as a setting. */
Test(config, a_line_longer_than_4095_bytes_is_one_line_and_later_errors_name_their_line) {
    char *dir = tu_tempdir();
    size_t len = 10000;
    char *text = malloc(len + 64);
    memset(text, '#', 8190);
    memset(text + 8190, ' ', len - 8190);
    memcpy(text + len - 17, "projector.path=/x", 17);
    strcpy(text + len, "\nbogus.key = 1\n");
    char *conf = write_file(dir, "long.conf", text);
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(es_config_load_file(cfg, conf, &err), ES_EINVAL);
    cr_assert_null(es_config_get(cfg, "projector.path"), "the comment's tail was read as a key");
    cr_assert(strstr(err.message, "long.conf:2:") && strstr(err.message, "bogus.key"), "%s",
              err.message);
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(text);
    free(conf);
    free(dir);
}

/* Not only a comment: a value longer than any line buffer takes effect whole, and the next
 * line keeps its number. */
Test(config, a_value_longer_than_4095_bytes_takes_effect_whole) {
    char *dir = tu_tempdir();
    /* A search path of 500 directories, "/opt/p/0000:/opt/p/0001:...", 5999 bytes. */
    char value[6100];
    size_t n = 0;
    for (size_t i = 0; i < 500; i++)
        n += (size_t)snprintf(value + n, sizeof value - n, "%s/opt/p/%04zu", i ? ":" : "", i);
    cr_assert_eq(n, 5999);
    char *text = NULL;
    cr_assert_gt(asprintf(&text, "projector.path = %s\nbogus.key = 1\n", value), 0);
    char *conf = write_file(dir, "long.conf", text);
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(es_config_load_file(cfg, conf, &err), ES_EINVAL);
    cr_assert(strstr(err.message, "long.conf:2:") && strstr(err.message, "bogus.key"), "%s",
              err.message);
    const char *got = es_config_get(cfg, "projector.path");
    cr_assert_not_null(got, "the long value was not taken");
    cr_assert_eq(strlen(got), n, "the value is %zu bytes of %zu", strlen(got), n);
    cr_assert_str_eq(got, value);
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(text);
    free(conf);
    free(dir);
}

Test(config, loading_a_directory_is_an_error_naming_it) {
    char *dir = tu_tempdir();
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    cr_assert_eq(es_config_load_file(cfg, dir, &err), ES_EINVAL);
    cr_assert(strstr(err.message, dir) && strstr(err.message, "is a directory"), "%s", err.message);
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(dir);
}

/* Run from a directory the user may not search (a private checkout, another user's home),
 * there is no ./eskit.conf for them to find: the usual sources load, they do not fail. */
Test(config, a_working_directory_the_user_cannot_search_has_no_config_to_find) {
    char *dir = tu_tempdir();
    cr_assert_eq(chdir(dir), 0);
    cr_assert_eq(chmod(dir, 0), 0);
    pid_t pid = fork();
    if (pid == 0) {
        if (geteuid() == 0 && setuid(65534) != 0)
            _exit(3);
        unsetenv("ESKIT_CONFIG");
        es_config_t *cfg = es_config_new();
        es_error_t err = {0};
        es_err rc = es_config_load_sources(cfg, &err);
        if (rc != ES_OK)
            fprintf(stderr, "%s\n", err.message);
        es_config_destroy(cfg);
        _exit(rc == ES_OK ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    chmod(dir, 0700);
    tu_rmtree(dir);
    free(dir);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
}

static char *slurp(const char *rel) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", ESKIT_SOURCE_DIR, rel);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    char *buf = calloc(1, 1 << 18);
    cr_assert_not_null(buf);
    size_t n = fread(buf, 1, (1 << 18) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/* Every key of the library's table is documented in config.h's list (as " *   key ") and the
 * README's table (as "| `key` |"), and neither documents a key the table does not have. */
Test(config, every_key_is_documented_in_config_h_and_the_readme) {
    char *header = slurp("core/include/eskit/config.h"), *readme = slurp("README.md");
    const char *key = NULL, *def = NULL;
    size_t n = es_config_key(0, NULL, NULL);
    cr_assert_gt(n, 20);
    for (size_t i = 0; i < n; i++) {
        es_config_key(i, &key, &def);
        char in_header[128], in_readme[128];
        snprintf(in_header, sizeof in_header, "\n *   %s ", key);
        snprintf(in_readme, sizeof in_readme, "\n| `%s` |", key);
        cr_expect_not_null(strstr(header, in_header), "config.h does not list %s", key);
        cr_expect_not_null(strstr(readme, in_readme), "the README does not list %s", key);
        es_config_t *c = es_config_new();
        cr_expect_eq(def == NULL, es_config_get(c, key) == NULL || !strcmp(key, "backend"),
                     "%s: the table's default is what es_config_get says", key);
        es_config_destroy(c);
    }
    /* The other way: each row of the README's key table names a key of the library's. */
    const char *table = strstr(readme, "| key | default | what |");
    cr_assert_not_null(table, "the README has no key table");
    const char *end = strstr(table, "\n\n");
    for (const char *p = strstr(table, "\n| `"); p && (!end || p < end);
         p = strstr(p + 1, "\n| `")) {
        char name[128] = "";
        if (sscanf(p, "\n| `%127[^`]`", name) != 1 || !strcmp(name, "kafka.<property>"))
            continue;
        int known = 0;
        for (size_t i = 0; i < n && !known; i++) {
            es_config_key(i, &key, NULL);
            known = !strcmp(key, name);
        }
        cr_expect(known, "the README lists %s, which is no config key", name);
    }
    free(header);
    free(readme);
}
