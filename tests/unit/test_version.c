/* es_version and the version macros: the library a program runs with tells its version, and
 * the headers' macros agree with it (CMakeLists.txt checks them against the project's). */
#include <criterion/criterion.h>
#include <stdio.h>

#include <eskit/eskit.h>

Test(version, the_library_and_its_headers_tell_the_same_version) {
    int major = -1, minor = -1, patch = -1;
    const char *v = es_version(&major, &minor, &patch);
    cr_assert_str_eq(v, ESKIT_VERSION_STRING);
    cr_assert_eq(major, ESKIT_VERSION_MAJOR);
    cr_assert_eq(minor, ESKIT_VERSION_MINOR);
    cr_assert_eq(patch, ESKIT_VERSION_PATCH);
    char again[32];
    snprintf(again, sizeof again, "%d.%d.%d", major, minor, patch);
    cr_assert_str_eq(again, v);
    cr_assert_eq(ESKIT_VERSION_NUMBER, major * 10000 + minor * 100 + patch);
    cr_assert_str_eq(es_version(NULL, NULL, NULL), v, "the parts are optional");
}
