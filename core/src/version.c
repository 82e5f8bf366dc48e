/* es_version: the library's version, compiled in from the headers it was built with. */
#include <eskit/eskit.h>

#include <stddef.h>

const char *es_version(int *major, int *minor, int *patch) {
    if (major)
        *major = ESKIT_VERSION_MAJOR;
    if (minor)
        *minor = ESKIT_VERSION_MINOR;
    if (patch)
        *patch = ESKIT_VERSION_PATCH;
    return ESKIT_VERSION_STRING;
}
