/*
 * `make install` gives a C service what it needs to embed eskit: the library,
 * the headers, esctl, eskit.pc and a CMake package. Each test installs this
 * build tree into its own temp prefix (`cmake --install --prefix`, as a
 * packager would) and builds tests/install/hello.c against that prefix only,
 * once through pkg-config and once through find_package(eskit).
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#define HELLO_DIR ESKIT_SOURCE_DIR "/tests/install"

/* Runs a shell command line; returns its exit status and keeps stdout+stderr
 * in *output (caller frees) so a failing assertion can show them. */
static int sh(char **output, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int sh(char **output, const char *fmt, ...) {
    char *cmd = NULL, *out = NULL, *errout = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&cmd, fmt, ap);
    va_end(ap);
    cr_assert_geq(n, 0);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    int status = tu_run(argv, NULL, &out, &errout);
    if (asprintf(output, "$ %s\n%s%s", cmd, out ? out : "", errout ? errout : "") < 0)
        *output = NULL;
    free(cmd);
    free(out);
    free(errout);
    return status;
}

static bool is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static char *join(const char *a, const char *b) {
    char *p = NULL;
    cr_assert_geq(asprintf(&p, "%s/%s", a, b), 0);
    return p;
}

/* GNUInstallDirs may choose lib, lib64 or lib/<multiarch>: find where libeskit.so went. */
static char *find_libdir(const char *prefix) {
    const char *candidates[] = {"lib", "lib64"};
    for (size_t i = 0; i < sizeof candidates / sizeof *candidates; i++) {
        char *dir = join(prefix, candidates[i]);
        char *so = join(dir, "libeskit.so");
        bool found = is_file(so);
        free(so);
        if (found)
            return dir;
        free(dir);
    }
    char *lib = join(prefix, "lib");
    DIR *d = opendir(lib);
    struct dirent *e;
    char *found = NULL;
    while (d && !found && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char *dir = join(lib, e->d_name);
        char *so = join(dir, "libeskit.so");
        if (is_file(so))
            found = dir;
        else
            free(dir);
        free(so);
    }
    if (d)
        closedir(d);
    free(lib);
    return found;
}

typedef struct installed {
    char *tmp;    /* the test's temp dir */
    char *prefix; /* <tmp>/prefix */
    char *libdir; /* where libeskit.so is */
} installed_t;

static installed_t install_into_temp_prefix(void) {
    installed_t in = {.tmp = tu_tempdir()};
    cr_assert_not_null(in.tmp);
    in.prefix = join(in.tmp, "prefix");
    char *log = NULL;
    int rc = sh(&log, "cmake --install '%s' --prefix '%s' 2>&1", ESKIT_BINARY_DIR, in.prefix);
    cr_assert_eq(rc, 0, "cmake --install failed (%d):\n%s", rc, log);
    free(log);
    in.libdir = find_libdir(in.prefix);
    cr_assert_not_null(in.libdir, "no libeskit.so anywhere under %s/lib*", in.prefix);
    return in;
}

static void installed_free(installed_t *in) {
    tu_rmtree(in->tmp);
    free(in->tmp);
    free(in->prefix);
    free(in->libdir);
}

static void assert_installed(const char *dir, const char *name) {
    char *p = join(dir, name);
    cr_expect(is_file(p), "%s was not installed", p);
    free(p);
}

Test(install, installs_library_headers_esctl_pkgconfig_and_cmake_package, .timeout = 60) {
    installed_t in = install_into_temp_prefix();

    char *bin = join(in.prefix, "bin");
    char *esctl = join(bin, "esctl");
    cr_expect(is_file(esctl) && access(esctl, X_OK) == 0, "%s is missing or not executable", esctl);

    char *include = join(in.prefix, "include/eskit");
    const char *headers[] = {"eskit.h", "error.h",  "config.h", "event.h",
                             "store.h", "engine.h", "types.h"};
    for (size_t i = 0; i < sizeof headers / sizeof *headers; i++)
        assert_installed(include, headers[i]);

    assert_installed(in.libdir, "libeskit.so");
    assert_installed(in.libdir, "pkgconfig/eskit.pc");
    assert_installed(in.libdir, "cmake/eskit/eskitConfig.cmake");
    assert_installed(in.libdir, "cmake/eskit/eskitConfigVersion.cmake");
    assert_installed(in.libdir, "cmake/eskit/eskitTargets.cmake");

    /* The installed tool runs from the prefix (its RPATH no longer points at the build). */
    char *log = NULL;
    int rc = sh(&log, "LD_LIBRARY_PATH='%s' '%s' --help 2>&1", in.libdir, esctl);
    cr_expect_eq(rc, 0, "the installed esctl does not run:\n%s", log);
    free(log);
    /* The demo's types module sits beside the projector modules, where esctl finds it by name:
     * a type it does not know is then "not known", not a failure to load the module. */
    char *mods = join(in.libdir, "eskit/projectors");
    assert_installed(mods, "order_saga_types.so");
    rc = sh(&log, "LD_LIBRARY_PATH='%s' '%s' --types order_saga_types state acme.widget w-1 2>&1",
            in.libdir, esctl);
    cr_expect_eq(rc, 1, "%s", log);
    cr_expect(strstr(log, "aggregate type 'acme.widget' is not known to esctl (1 types module"),
              "the installed esctl did not load order_saga_types:\n%s", log);
    free(log);
    free(mods);

    free(include);
    free(esctl);
    free(bin);
    installed_free(&in);
}

/* The hello program prints "OK eskit <version>" when it could write and read an event. */
static void assert_hello_ran(int rc, const char *log) {
    cr_assert_eq(rc, 0, "hello failed (%d):\n%s", rc, log);
    cr_assert(strstr(log, "OK eskit " ESKIT_VERSION_STRING "\n") != NULL,
              "hello did not print OK:\n%s", log);
}

Test(install, an_outside_program_builds_with_pkg_config_against_the_prefix, .timeout = 60) {
    installed_t in = install_into_temp_prefix();
    char *log = NULL;
    /* Only the prefix's pkgconfig dir, so the system's or the build tree's eskit can't answer. */
    int rc =
        sh(&log, "PKG_CONFIG_PATH='%s/pkgconfig' pkg-config --modversion eskit 2>&1", in.libdir);
    cr_assert_eq(rc, 0, "pkg-config does not know eskit:\n%s", log);
    cr_assert(strstr(log, "\n" ESKIT_VERSION_STRING "\n") != NULL, "wrong version:\n%s", log);
    free(log);

    char *exe = join(in.tmp, "hello");
    rc = sh(&log,
            "cc -std=c11 -Wall -Wextra -Werror -o '%s' '%s/hello.c' "
            "$(PKG_CONFIG_PATH='%s/pkgconfig' pkg-config --cflags --libs eskit) 2>&1",
            exe, HELLO_DIR, in.libdir);
    cr_assert_eq(rc, 0, "hello does not build with pkg-config's flags:\n%s", log);
    free(log);

    rc = sh(&log, "LD_LIBRARY_PATH='%s' '%s' 2>&1", in.libdir, exe);
    assert_hello_ran(rc, log);
    free(log);
    free(exe);
    installed_free(&in);
}

Test(install, an_outside_program_builds_with_find_package_against_the_prefix, .timeout = 60) {
    installed_t in = install_into_temp_prefix();
    char *build = join(in.tmp, "hello-build");
    char *log = NULL;
    int rc = sh(&log, "cmake -S '%s' -B '%s' -DCMAKE_PREFIX_PATH='%s' 2>&1", HELLO_DIR, build,
                in.prefix);
    cr_assert_eq(rc, 0, "find_package(eskit) fails:\n%s", log);
    const char *found = strstr(log, "eskit_DIR=");
    cr_assert(found && strncmp(found + strlen("eskit_DIR="), in.prefix, strlen(in.prefix)) == 0,
              "eskit was not found in the prefix %s:\n%s", in.prefix, log);
    free(log);

    rc = sh(&log, "cmake --build '%s' 2>&1", build);
    cr_assert_eq(rc, 0, "hello does not build against eskit::eskit:\n%s", log);
    free(log);

    /* No LD_LIBRARY_PATH: CMake's build RPATH must lead to the prefix's library. */
    rc = sh(&log, "'%s/hello' 2>&1", build);
    assert_hello_ran(rc, log);
    free(log);
    free(build);
    installed_free(&in);
}
