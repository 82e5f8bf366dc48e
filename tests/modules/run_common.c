#include "run_common.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

es_err run_set_pair(es_config_t *cfg, const char *pair, es_error_t *err) {
    const char *eq = strchr(pair, '=');
    if (!eq) {
        snprintf(err->message, sizeof err->message, "--set wants key=value, not '%s'", pair);
        return ES_EINVAL;
    }
    char key[128];
    snprintf(key, sizeof key, "%.*s", (int)(eq - pair), pair);
    return es_config_set(cfg, key, eq + 1, err);
}

void run_log_line(int level, const char *msg, void *opaque) {
    const char *name = opaque;
    char env[64];
    size_t i = 0;
    for (; name[i] && i + sizeof "_VERBOSE" < sizeof env; i++)
        env[i] = (char)toupper((unsigned char)name[i]);
    snprintf(env + i, sizeof env - i, "_VERBOSE");
    if (level <= ES_LOG_ERROR || (level == ES_LOG_WARNING && strncmp(msg, "librdkafka", 10)) ||
        getenv(env))
        fprintf(stderr, "%s[%d] <%d> %s\n", name, (int)getpid(), level, msg);
}
