/*
 * `make install` gives a C service what it needs to embed eskit: the library,
 * the headers, esctl, eskit.pc and a CMake package with eskit_add_protos. Each
 * test installs this build tree into its own temp prefix (`cmake --install
 * --prefix`, as a packager would) and builds examples/hello, the example a new
 * user copies, against that prefix only: once by hand with protoc-c and
 * pkg-config, running the very commands its comment gives, and once as the
 * CMake project it is, through find_package(eskit). Then it runs, twice.
 */
#include <criterion/criterion.h>

#include <ctype.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#define HELLO_DIR ESKIT_SOURCE_DIR "/examples/hello"

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
    assert_installed(in.libdir, "cmake/eskit/eskitProtos.cmake");
    char *proto = join(in.prefix, "share/eskit/proto/eskit/v1");
    assert_installed(proto, "envelope.proto");
    free(proto);

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

/* The names the installed headers declare with ES_API: the identifier before the first '('
 * after each ES_API token. Appends them to *names. */
static void declared_api(const char *header, char ***names, size_t *n) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = fopen(header, "r");
    cr_assert_not_null(f, "cannot read %s", header);
    cr_assert_eq(getdelim(&text, &len, '\0', f) > 0, true);
    fclose(f);
    for (char *p = strstr(text, "ES_API "); p; p = strstr(p + 1, "ES_API ")) {
        if (p > text && p[-1] == '#') /* "#define ES_API ..." */
            continue;
        char *paren = strchr(p, '(');
        cr_assert_not_null(paren, "%s: ES_API without a declaration", header);
        char *end = paren;
        while (end > p && end[-1] == ' ')
            end--;
        char *start = end;
        while (start > p && (isalnum((unsigned char)start[-1]) || start[-1] == '_'))
            start--;
        *names = realloc(*names, (*n + 1) * sizeof **names);
        (*names)[(*n)++] = strndup(start, (size_t)(end - start));
    }
    free(text);
}

static bool listed(char *const *names, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

Test(install, the_library_exports_the_public_api_and_nothing_else, .timeout = 60) {
    installed_t in = install_into_temp_prefix();
    char **api = NULL;
    size_t n_api = 0;
    char *include = join(in.prefix, "include/eskit");
    DIR *d = opendir(include);
    cr_assert_not_null(d);
    for (struct dirent *e; (e = readdir(d));) {
        size_t l = strlen(e->d_name);
        /* api.h defines ES_API and declares nothing. */
        if (l > 2 && strcmp(e->d_name + l - 2, ".h") == 0 && strcmp(e->d_name, "api.h") != 0) {
            char *h = join(include, e->d_name);
            declared_api(h, &api, &n_api);
            free(h);
        }
    }
    closedir(d);
    cr_assert_gt(n_api, 100, "only %zu ES_API declarations found under %s", n_api, include);

    char *log = NULL;
    int rc = sh(&log, "nm -D --defined-only '%s/libeskit.so' | awk '{print $3}'", in.libdir);
    cr_assert_eq(rc, 0, "%s", log);
    size_t n_exported = 0;
    char *extra = NULL;
    size_t extra_len = 0;
    FILE *x = open_memstream(&extra, &extra_len);
    char *save = NULL;
    for (char *sym = strtok_r(strchr(log, '\n'), "\n", &save); sym;
         sym = strtok_r(NULL, "\n", &save)) {
        if (sym[0] == '_') /* _init, _fini and the like */
            continue;
        n_exported++;
        if (!listed(api, n_api, sym))
            fprintf(x, " %s", sym);
    }
    fclose(x);
    cr_expect_str_empty(extra, "exported but not declared ES_API in a public header:%s", extra);
    cr_expect_eq(n_exported, n_api, "%zu symbols exported, %zu declared ES_API", n_exported, n_api);
    free(extra);
    free(log);

    /* The SONAME is the ABI's major (docs/abi.md). */
    rc = sh(&log, "objdump -p '%s/libeskit.so' | grep SONAME", in.libdir);
    cr_expect(rc == 0 && strstr(log, "libeskit.so.1") != NULL, "%s", log);
    free(log);

    for (size_t i = 0; i < n_api; i++)
        free(api[i]);
    free(api);
    free(include);
    installed_free(&in);
}

/* A program written for 0.1.0 (tests/install/abi1.c: the ABI 1 definition struct, declared
 * as 0.1.0's headers had it) built against the installed headers and library runs unchanged. */
Test(install, a_program_with_an_abi_1_definition_runs_on_the_installed_library, .timeout = 60) {
    installed_t in = install_into_temp_prefix();
    char *src = join(in.tmp, "abi1");
    char *log = NULL;
    int rc = sh(&log,
                "mkdir '%s' && cd '%s' && cp '%s/tests/install/abi1.c' "
                "'%s/tests/install/aggregate_def_abi1.h' '%s/hello.proto' . && "
                "protoc-c --c_out=. hello.proto && export PKG_CONFIG_PATH='%s/pkgconfig' && "
                "cc -std=c11 -Wall -Wextra -Werror -o abi1 abi1.c hello.pb-c.c "
                "$(pkg-config --cflags --libs eskit) 2>&1 && LD_LIBRARY_PATH='%s' ./abi1 2>&1",
                src, src, ESKIT_SOURCE_DIR, ESKIT_SOURCE_DIR, HELLO_DIR, in.libdir, in.libdir);
    cr_assert_eq(rc, 0, "the ABI 1 program failed:\n%s", log);
    cr_assert(strstr(log, "accepted\nrejected: the account is already open\n") != NULL, "%s", log);
    free(log);
    free(src);
    installed_free(&in);
}

/* hello's story: two accounts, a command on an account not yet open and an overdraft refused,
 * then the read model. A second run on the same files repeats every command id, so it appends
 * nothing and the balances stay. */
static void assert_hello_ran(int rc, const char *log, bool again) {
    cr_assert_eq(rc, 0, "hello failed (%d):\n%s", rc, log);
    cr_assert(strstr(log, "cmd-4 bob   Deposit     rejected: the account is not open") != NULL,
              "hello did not reject a deposit on an account not open:\n%s", log);
    cr_assert(strstr(log, "cmd-7 bob   Withdraw    rejected: no overdraft") != NULL,
              "hello did not refuse the overdraft:\n%s", log);
    cr_assert(strstr(log, "\nbalances:\n  alice 74.50\n  bob   100.00\n") != NULL,
              "hello did not print the balances 74.50 and 100.00:\n%s", log);
    if (again)
        cr_assert(strstr(log, "nothing appended") != NULL, "the second run appended again:\n%s",
                  log);
    else
        cr_assert(strstr(log, "nothing appended") == NULL, "the first run found repeats:\n%s", log);
}

/* Runs hello twice in dir (where it makes hello.db and hello-read.db). */
static void run_hello_twice(const char *dir, const char *exe, const char *libdir) {
    for (int i = 0; i < 2; i++) {
        char *log = NULL;
        int rc = sh(&log, "cd '%s' && %s%s%s'%s' 2>&1", dir, libdir ? "LD_LIBRARY_PATH='" : "",
                    libdir ? libdir : "", libdir ? "' " : "", exe);
        assert_hello_ran(rc, log, i == 1);
        free(log);
    }
}

Test(install, hello_builds_with_protoc_c_and_pkg_config_as_its_comment_says, .timeout = 60) {
    installed_t in = install_into_temp_prefix();
    char *log = NULL;
    /* Only the prefix's pkgconfig dir, so the system's or the build tree's eskit can't answer. */
    int rc = sh(&log,
                "export PKG_CONFIG_PATH='%s/pkgconfig'; pkg-config --modversion eskit && "
                "ls \"$(pkg-config --variable=protodir eskit)/eskit/v1/envelope.proto\" 2>&1",
                in.libdir);
    cr_assert_eq(rc, 0, "pkg-config does not know eskit or its protodir:\n%s", log);
    cr_assert(strstr(log, "\n" ESKIT_VERSION_STRING "\n") != NULL, "wrong version:\n%s", log);
    free(log);

    /* A copy of the example, as a user makes one, built by the commands of its comment. */
    char *src = join(in.tmp, "hello");
    rc = sh(&log,
            "mkdir '%s' && cp '%s/hello.c' '%s/hello.proto' '%s' && cd '%s' && "
            "sed -n 's/^ \\*   \\(protoc-c .*\\|cc .*\\)$/\\1/p' hello.c > build.sh && "
            "[ $(wc -l < build.sh) -eq 2 ] && cat build.sh && "
            "PKG_CONFIG_PATH='%s/pkgconfig' sh -e build.sh 2>&1",
            src, HELLO_DIR, HELLO_DIR, src, src, in.libdir);
    cr_assert_eq(rc, 0, "hello does not build by the commands in its comment:\n%s", log);
    free(log);
    /* And it is clean under the warnings a service would turn on. */
    rc = sh(&log,
            "cd '%s' && cc -std=c11 -Wall -Wextra -Werror -pedantic -c hello.c "
            "$(PKG_CONFIG_PATH='%s/pkgconfig' pkg-config --cflags eskit) 2>&1",
            src, in.libdir);
    cr_assert_eq(rc, 0, "hello.c warns:\n%s", log);
    free(log);

    char *exe = join(src, "hello");
    run_hello_twice(src, exe, in.libdir);
    free(exe);
    free(src);
    installed_free(&in);
}

Test(install, hello_builds_with_find_package_and_eskit_add_protos, .timeout = 120) {
    installed_t in = install_into_temp_prefix();
    char *build = join(in.tmp, "hello-build");
    char *log = NULL;
    int rc = sh(&log, "cmake -S '%s' -B '%s' -DCMAKE_PREFIX_PATH='%s' 2>&1", HELLO_DIR, build,
                in.prefix);
    cr_assert_eq(rc, 0, "find_package(eskit) fails:\n%s", log);
    free(log);
    /* The package found is the prefix's, not a build tree's or the system's. */
    rc = sh(&log, "grep '^eskit_DIR:' '%s/CMakeCache.txt'", build);
    const char *found = log ? strstr(log, "=") : NULL;
    cr_assert(rc == 0 && found && strncmp(found + 1, in.prefix, strlen(in.prefix)) == 0,
              "eskit was not found in the prefix %s:\n%s", in.prefix, log);
    free(log);

    rc = sh(&log, "cmake --build '%s' 2>&1", build);
    cr_assert_eq(rc, 0, "hello does not build against eskit::eskit:\n%s", log);
    cr_assert(strstr(log, "protoc-c hello.proto") != NULL, "eskit_add_protos did not run:\n%s",
              log);
    free(log);

    /* No LD_LIBRARY_PATH: CMake's build RPATH must lead to the prefix's library. */
    char *exe = join(build, "hello");
    run_hello_twice(build, exe, NULL);
    free(exe);
    free(build);
    installed_free(&in);
}
