/*
 * Loading projector modules from .so files: by path, by name through
 * projector.path, and refusing what is not a module of this ABI with a
 * message that names the file.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static es_config_t *cfg;

static void setup(void) {
    cfg = es_config_new();
}

static void teardown(void) {
    es_config_destroy(cfg);
}

TestSuite(loader, .init = setup, .fini = teardown);

static es_err load(const char *what, es_projector_module_t **m, es_error_t *err) {
    *m = NULL;
    return es_projector_load(cfg, what, m, err);
}

Test(loader, a_module_loads_by_path_and_by_name) {
    es_projector_module_t *m = NULL;
    es_error_t err = {0};
    cr_assert_eq(load(TEST_MODULES_DIR "/counter.so", &m, &err), ES_OK, "%s", err.message);
    cr_assert_str_eq(es_projector_module_def(m)->name, "counter");
    cr_assert_str_eq(es_projector_module_path(m), TEST_MODULES_DIR "/counter.so");
    es_projector_unload(m);

    cr_assert_eq(es_config_set(cfg, "projector.path", "/nonexistent:" TEST_MODULES_DIR, &err),
                 ES_OK);
    cr_assert_eq(load("counter", &m, &err), ES_OK, "%s", err.message);
    cr_assert_str_eq(es_projector_module_def(m)->name, "counter");
    es_projector_unload(m);
}

Test(loader, a_module_of_another_abi_is_refused_naming_the_file) {
    es_projector_module_t *m = NULL;
    es_error_t err = {0};
    cr_assert_eq(load(TEST_MODULES_DIR "/bad_abi.so", &m, &err), ES_EINVAL);
    cr_assert_null(m);
    cr_assert(strstr(err.message, TEST_MODULES_DIR "/bad_abi.so"), "%s", err.message);
    cr_assert(strstr(err.message, "ABI version"), "%s", err.message);
}

Test(loader, a_library_without_the_entry_point_is_refused_naming_the_file_and_symbol) {
    es_projector_module_t *m = NULL;
    es_error_t err = {0};
    cr_assert_eq(load(TEST_MODULES_DIR "/no_entry.so", &m, &err), ES_EINVAL);
    cr_assert(strstr(err.message, TEST_MODULES_DIR "/no_entry.so"), "%s", err.message);
    cr_assert(strstr(err.message, ES_PROJECTOR_ENTRY), "%s", err.message);
}

Test(loader, a_missing_module_is_not_found_naming_where_it_looked) {
    es_projector_module_t *m = NULL;
    es_error_t err = {0};
    cr_assert_eq(load(TEST_MODULES_DIR "/nothing-here.so", &m, &err), ES_ENOTFOUND);
    cr_assert(strstr(err.message, "nothing-here.so"), "%s", err.message);
    cr_assert_eq(load("no_such_projector", &m, &err), ES_ENOTFOUND);
    cr_assert(strstr(err.message, "no_such_projector.so"), "%s", err.message);
    cr_assert(strstr(err.message, "projector.path"), "%s", err.message);
}

Test(loader, a_file_that_is_not_a_shared_library_is_refused) {
    char *dir = tu_tempdir();
    char *path = tu_path(dir, "junk.so");
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("not an ELF file\n", f);
    fclose(f);
    es_projector_module_t *m = NULL;
    es_error_t err = {0};
    cr_assert_eq(load(path, &m, &err), ES_EINVAL);
    cr_assert(strstr(err.message, path), "%s", err.message);
    tu_rmtree(dir);
    free(path);
    free(dir);
}
