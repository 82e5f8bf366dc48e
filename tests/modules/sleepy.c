/*
 * sleepy: the counter projector with a slow or stuck apply, for the tests that
 * interrupt one. Events of the aggregates whose id starts with "slow-" take,
 * when the environment says so:
 *   TP_SLEEPY_MS    milliseconds each such apply sleeps; "forever" never
 *                   returns (a module looping forever). Unset: no delay.
 *   TP_SLEEPY_MARK  a file that gets one line ("<pid>\n") as each such apply
 *                   starts, so a test can wait until one runs.
 * The sleep goes on through signals: a handler running does not end it.
 */
#include "tp_common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SLOW_PREFIX "slow-"

static void mark_start(void) {
    const char *path = getenv("TP_SLEEPY_MARK");
    if (!path)
        return;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    char line[32];
    int n = snprintf(line, sizeof line, "%d\n", (int)getpid());
    if (n > 0 && write(fd, line, (size_t)n) != n)
        n = -1;
    close(fd);
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void be_slow(void) {
    const char *ms = getenv("TP_SLEEPY_MS");
    if (!ms)
        return;
    mark_start();
    if (strcmp(ms, "forever") == 0)
        for (;;)
            sleep_ms(1000);
    sleep_ms(strtol(ms, NULL, 10));
}

static es_err sleepy_apply(es_projector_ctx_t *ctx, const es_event_t *ev, es_error_t *err) {
    if (strncmp(ev->aggregate_id, SLOW_PREFIX, strlen(SLOW_PREFIX)) == 0)
        be_slow();
    return tp_apply(ctx, "sleepy", ev, err);
}

static const char *const topics[] = {TP_TOPIC, NULL};

static const es_projector_def sleepy_def = {
    .abi_version = ES_PROJECTOR_ABI,
    .name = "sleepy",
    .schema_version = 1,
    .topics = topics,
    .migrate = tp_migrate,
    .apply = sleepy_apply,
};

ES_PROJECTOR_EXPORT(sleepy_def)
