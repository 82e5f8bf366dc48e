/* Types modules (<eskit/types.h>): the checks of a definition, its look-ups, and the loader. */
#include <criterion/criterion.h>
#include <libgen.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "domain.h"
#include "testutil.h"

/* A module built beside esctl. Caller frees. */
static char *beside_esctl(const char *name) {
    char *copy = strdup(ESCTL_PATH);
    char *path = tu_path(dirname(copy), name);
    free(copy);
    return path;
}

Test(types, the_demo_definition_passes_and_finds_its_messages_and_aggregates) {
    es_error_t err = {0};
    cr_assert_eq(es_types_check(&demo_types, "demo", &err), ES_OK, "%s", err.message);
    cr_expect_eq(es_types_find_message(&demo_types, "orders.v1.OrderPlaced"),
                 &orders__v1__order_placed__descriptor);
    cr_expect_eq(es_types_find_message(&demo_types, "inventory.v1.Item"),
                 &inventory__v1__item__descriptor, "a state type");
    cr_expect_eq(es_types_find_message(&demo_types, "orders.v1.LineItem"),
                 &orders__v1__line_item__descriptor, "from the messages list");
    cr_expect_null(es_types_find_message(&demo_types, "acme.v1.Nothing"));
    cr_expect_eq(es_types_find_aggregate(&demo_types, "inventory.item"), &demo_item_def);
    cr_expect_null(es_types_find_aggregate(&demo_types, "acme.widget"));
}

Test(types, an_aggregate_of_another_abi_is_refused_naming_it) {
    es_aggregate_def old = demo_order_def;
    old.abi_version = ES_AGGREGATE_ABI + 1;
    const es_aggregate_def *const aggs[] = {&old, NULL};
    es_types_def def = {.abi_version = ES_TYPES_ABI, .name = "old", .aggregates = aggs};
    es_error_t err = {0};
    cr_expect_eq(es_types_check(&def, "old.so", &err), ES_EINVAL);
    cr_expect(strstr(err.message, "old.so: aggregate 0") && strstr(err.message, "orders.order"),
              "%s", err.message);
}

Test(types, a_module_loads_by_path_and_a_future_abi_is_refused_naming_the_file) {
    char *good = beside_esctl("esctl_test_types.so"),
         *bad = beside_esctl("esctl_test_types_bad_abi.so");
    es_config_t *cfg = es_config_new();
    es_types_module_t *m = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_types_load(cfg, good, &m, &err), ES_OK, "%s", err.message);
    cr_expect_str_eq(es_types_module_def(m)->name, "esctl-test");
    cr_expect_str_eq(es_types_module_path(m), good);
    cr_expect_not_null(es_types_find_message(es_types_module_def(m), "esctl.test.v1.Kitchen"));
    es_types_unload(m);
    cr_expect_eq(es_types_load(cfg, bad, &m, &err), ES_EINVAL);
    cr_expect_null(m);
    cr_expect(strstr(err.message, bad) && strstr(err.message, "ABI version 3"), "%s", err.message);
    es_config_destroy(cfg);
    free(good);
    free(bad);
}

Test(types, a_bare_file_name_is_the_working_directorys_file_not_a_library_search) {
    char *dir = tu_tempdir(), *good = beside_esctl("esctl_test_types.so");
    char *copy = tu_path(dir, "mine.so"), cwd[4096];
    char *cmd = NULL;
    cr_assert_gt(asprintf(&cmd, "cp '%s' '%s'", good, copy), 0);
    cr_assert_eq(system(cmd), 0);
    cr_assert_not_null(getcwd(cwd, sizeof cwd));
    cr_assert_eq(chdir(dir), 0);
    es_config_t *cfg = es_config_new();
    es_types_module_t *m = NULL;
    es_error_t err = {0};
    es_err e = es_types_load(cfg, "mine.so", &m, &err);
    cr_assert_eq(chdir(cwd), 0);
    cr_expect_eq(e, ES_OK, "%s", err.message);
    if (m)
        cr_expect_str_eq(es_types_module_path(m), "./mine.so");
    es_types_unload(m);
    es_config_destroy(cfg);
    tu_rmtree(dir);
    free(dir);
    free(good);
    free(copy);
    free(cmd);
}

Test(types, an_abi_1_module_loads_without_upcasters_and_an_abi_2_one_with_them) {
    char *abi1 = beside_esctl("esctl_test_types_abi1.so"),
         *abi2 = beside_esctl("esctl_test_types_upcast.so");
    es_config_t *cfg = es_config_new();
    es_types_module_t *m = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_types_load(cfg, abi1, &m, &err), ES_OK, "%s", err.message);
    cr_expect_eq(es_types_module_def(m)->abi_version, 1);
    cr_expect_null(es_types_module_def(m)->upcasters, "ABI 1 ends before the upcasters");
    cr_expect_not_null(es_types_find_message(es_types_module_def(m), "esctl.test.v1.Kitchen"));
    es_types_unload(m);
    cr_assert_eq(es_types_load(cfg, abi2, &m, &err), ES_OK, "%s", err.message);
    const es_upcaster_t *const *ups = es_types_module_def(m)->upcasters;
    cr_assert_not_null(ups);
    cr_expect_str_eq(ups[0]->name, "esctl-noted-v1-to-v3");
    cr_expect_str_eq(ups[1]->name, "esctl-added-v0-to-v1");
    cr_expect_null(ups[2]);
    es_types_unload(m);
    es_config_destroy(cfg);
    free(abi1);
    free(abi2);
}

Test(types, a_definition_whose_upcasters_overlap_is_refused_naming_both) {
    static const es_upcaster_t a = {ES_UPCASTER_ABI,   "first", "a.v1.X", "a.v2.X", 0, 0,
                                    (es_upcast_cb *)1, NULL};
    static const es_upcaster_t b = {ES_UPCASTER_ABI,   "second", "a.v1.X", "a.v3.X", 0, 0,
                                    (es_upcast_cb *)1, NULL};
    const es_upcaster_t *const ups[] = {&a, &b, NULL};
    es_types_def def = {.abi_version = ES_TYPES_ABI, .name = "dup", .upcasters = ups};
    es_error_t err = {0};
    cr_expect_eq(es_types_check(&def, "dup.so", &err), ES_EINVAL);
    cr_expect(strstr(err.message, "dup.so: ") && strstr(err.message, "'first' and 'second'"), "%s",
              err.message);
}

Test(types, an_abi_1_definition_is_read_only_as_far_as_abi_1_reaches) {
    /* On the heap at ABI 1's exact size: reading the upcasters would overread (ASan, valgrind). */
    size_t size = offsetof(es_types_def, upcasters);
    es_types_def *old = malloc(size);
    es_types_def full = {.abi_version = 1, .name = "old", .aggregates = NULL};
    memcpy(old, &full, size);
    es_error_t err = {0};
    cr_expect_eq(es_types_check(old, "old.so", &err), ES_OK, "%s", err.message);
    cr_expect_null(es_types_find_message(old, "acme.v1.Nothing"));
    free(old);
}
