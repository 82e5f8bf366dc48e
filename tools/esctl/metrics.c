/*
 * esctl metrics: the series es_metrics_write_offline reads from the files and
 * the log, in the Prometheus text format, on stdout or into a file that
 * appears whole (node_exporter's textfile collector reads whatever is there).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "esctl.h"

const char metrics_help[] =
    "usage: esctl metrics [--output FILE] [--db FILE] [--readmodel FILE] [--saga-db FILE]\n"
    "\n"
    "Prints, in the Prometheus text format 0.0.4, the series that can be read from\n"
    "the files and the log alone, for node_exporter's textfile collector:\n"
    "  eskit_projector_checkpoint_offset, eskit_projector_end_offset and\n"
    "  eskit_projector_lag_records per projector, topic and partition, and\n"
    "  eskit_projector_dlq_depth per projector (from the read model);\n"
    "  eskit_saga_instances per saga and state (from the saga database);\n"
    "  eskit_log_records, eskit_log_bytes and eskit_log_growth_bytes_per_second\n"
    "  per events topic (embedded: every aggregate type of the store; Kafka: those\n"
    "  of topics.aggregates and the topics the projectors read), growth being the\n"
    "  mean over the last day, or over the whole log when it is younger;\n"
    "  and eskit_build_info. A read model or saga database that does not exist is\n"
    "  left out; a damaged one, or a cluster that does not answer, fails (exit 1).\n"
    "\n"
    "Options:\n"
    "  --output FILE     write FILE.tmp, then rename it to FILE, so a reader never\n"
    "                    sees half of it (default: stdout)\n"
    "  --db FILE         the event store (default: db in the config, eskit.db)\n"
    "  --readmodel FILE  the read model (default: readmodel.db, eskit-read.db)\n"
    "  --saga-db FILE    the saga database (default: saga.db, eskit-saga.db)\n"
    "  -h, --help        show this help\n"
    "\n"
    "Example (cron, every minute):\n"
    "  esctl --db /var/lib/orders/orders.db metrics \\\n"
    "      --output /var/lib/node_exporter/textfile/eskit.prom\n";

static bool write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* FILE.tmp written and synced, then renamed over FILE: a reader sees the old file or the new
 * one, never a part. */
static int write_file_atomically(const char *path, const char *text, size_t len) {
    size_t n = strlen(path) + 5;
    char *tmp = malloc(n);
    if (!tmp) {
        say("out of memory");
        return EXIT_FAIL;
    }
    snprintf(tmp, n, "%s.tmp", path);
    int rc = EXIT_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        say("cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return EXIT_FAIL;
    }
    if (!write_all(fd, text, len) || fsync(fd) != 0) {
        say("cannot write %s: %s", tmp, strerror(errno));
        rc = EXIT_FAIL;
    }
    if (close(fd) != 0 && rc == EXIT_OK) {
        say("cannot write %s: %s", tmp, strerror(errno));
        rc = EXIT_FAIL;
    }
    if (rc == EXIT_OK && rename(tmp, path) != 0) {
        say("cannot rename %s to %s: %s", tmp, path, strerror(errno));
        rc = EXIT_FAIL;
    }
    if (rc != EXIT_OK)
        unlink(tmp);
    free(tmp);
    return rc;
}

int cmd_metrics(const options *o) {
    if (o->n_pos > 0)
        return usage_error(o, "unexpected argument", o->pos[0]);
    if (o->output && !*o->output) {
        say("--output needs a file name; run 'esctl metrics --help'");
        return EXIT_USAGE;
    }
    es_config_t *cfg = NULL;
    int rc = load_config(o, &cfg);
    if (rc != EXIT_OK)
        return rc;
    es_error_t err = {0};
    char *text = NULL;
    size_t len = 0;
    if (es_metrics_write_offline(cfg, &text, &len, &err) != ES_OK) {
        say("%s", err.message);
        rc = EXIT_FAIL;
    } else if (o->output) {
        rc = write_file_atomically(o->output, text, len);
    } else if (fwrite(text, 1, len, stdout) != len || fflush(stdout) != 0) {
        say("cannot write to stdout: %s", strerror(errno));
        rc = EXIT_FAIL;
    }
    es_free(text);
    es_config_destroy(cfg);
    return rc;
}
