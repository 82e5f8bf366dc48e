/*
 * esctl dev-broker: librdkafka's mock cluster as a process of its own, for
 * development and tests. It speaks the Kafka protocol on 127.0.0.1, so any
 * client (the library, esctl, kcat, a JVM) can use it; it has no CreateTopics,
 * so the topics of a plan are created through the mock's own API at start.
 */
#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "esctl.h"

const char dev_broker_help[] =
    "usage: esctl dev-broker [--brokers N] [--bootstrap-file FILE] [--partitions N]\n"
    "                        [--plan TYPE[:EVENTS_PER_S[:CONSUMERS]]...]\n"
    "\n"
    "Runs librdkafka's mock Kafka cluster on 127.0.0.1 until SIGINT or SIGTERM (then\n"
    "exits 0), and prints its bootstrap address on stdout as one line, e.g.\n"
    "  ESKIT_BROKERS=$(esctl dev-broker --plan orders.order | head -1)\n"
    "With --plan it creates the topics 'esctl topics plan' computes for the types\n"
    "(more types may follow as arguments); other topics are created on first use\n"
    "with the mock's default partition count.\n"
    "\n"
    "The mock is for development: it keeps everything in memory, has no\n"
    "CreateTopics, no compaction, and keeps at most 5 MiB or 100,000 message sets\n"
    "per partition, silently dropping the oldest: spread big tests over more\n"
    "partitions.\n"
    "\n"
    "Options:\n"
    "  --brokers N            brokers in the cluster (default 1; replication\n"
    "                         factor of planned topics is min(3, N))\n"
    "  --bootstrap-file FILE  also write the address to FILE (atomically: a reader\n"
    "                         sees all of it or no file); removed at exit\n"
    "  --plan TYPE            create the topics of TYPE (repeatable)\n"
    "  --partitions N         give planned topics N partitions (dlq topics keep 1)\n"
    "  -h, --help             show this help\n"
    "\n"
    "Example: esctl dev-broker --brokers 3 --plan orders.order --bootstrap-file /tmp/kafka\n";

typedef struct dev_args {
    long long brokers, partitions;
    es_topic_load_t *loads;
    char **owned;
    size_t n;
} dev_args;

static int parse_dev_args(const options *o, dev_args *a) {
    int rc = EXIT_OK;
    a->brokers = 1;
    if (o->brokers)
        rc = parse_count("--brokers", o->brokers, 1, 32, &a->brokers);
    if (rc == EXIT_OK && o->partitions)
        rc = parse_count("--partitions", o->partitions, 1, ES_TOPIC_MAX_PARTITIONS, &a->partitions);
    if (rc != EXIT_OK)
        return rc;
    if (o->n_pos && !o->n_plan)
        return usage_error(o, "unexpected argument (types follow --plan)", o->pos[0]);
    if (o->partitions && !o->n_plan) {
        say("--partitions applies to the topics of --plan; add --plan TYPE");
        return EXIT_USAGE;
    }
    size_t total = o->n_plan + o->n_pos;
    a->loads = calloc(total + 1, sizeof *a->loads);
    a->owned = calloc(total + 1, sizeof *a->owned);
    if (!a->loads || !a->owned) {
        say("out of memory");
        return EXIT_FAIL;
    }
    for (; rc == EXIT_OK && a->n < total; a->n++) {
        const char *arg = a->n < o->n_plan ? o->plan[a->n] : o->pos[a->n - o->n_plan];
        rc = parse_topic_load(arg, &a->loads[a->n], &a->owned[a->n]);
    }
    return rc;
}

static void free_dev_args(dev_args *a) {
    for (size_t i = 0; a->owned && i < a->n; i++)
        free(a->owned[i]);
    free(a->owned);
    free(a->loads);
}

static void mock_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    const bool *verbose = rd_kafka_opaque(rk);
    if (*verbose)
        fprintf(stderr, "esctl: librdkafka %d %s: %s\n", level, fac, buf);
}

static int create_plan(const options *o, const dev_args *a, rd_kafka_mock_cluster_t *mc) {
    es_config_t *cfg = NULL;
    es_topic_spec_t *specs = NULL;
    size_t n = 0;
    es_error_t err = {0};
    int rc = load_config(o, &cfg);
    if (rc != EXIT_OK)
        return rc;
    if (es_topics_plan_for(cfg, (int)a->brokers, a->loads, a->n, &specs, &n, &err) != ES_OK) {
        say("%s", err.message);
        rc = EXIT_FAIL;
    }
    for (size_t i = 0; rc == EXIT_OK && i < n; i++) {
        const es_topic_spec_t *s = &specs[i];
        int partitions =
            a->partitions && !(s->flags & ES_TOPIC_SINGLE) ? (int)a->partitions : s->partitions;
        rd_kafka_resp_err_t e =
            rd_kafka_mock_topic_create(mc, s->name, partitions, s->replication_factor);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
            say("cannot create topic %s on the mock cluster: %s", s->name, rd_kafka_err2str(e));
            rc = EXIT_FAIL;
        }
    }
    es_topics_free(specs);
    es_config_destroy(cfg);
    return rc;
}

/* Writes line to path through a temp file and rename: a reader sees all of it or nothing. */
static int write_bootstrap_file(const char *path, const char *line) {
    size_t len = strlen(path) + 32;
    char *tmp = malloc(len);
    if (!tmp) {
        say("out of memory");
        return EXIT_FAIL;
    }
    snprintf(tmp, len, "%s.tmp.%ld", path, (long)getpid());
    /* A fresh file only: the name is guessable, and in /tmp another user could have left a
     * symlink there to a file of ours. */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    size_t n = strlen(line);
    bool ok = fd >= 0 && write(fd, line, n) == (ssize_t)n && write(fd, "\n", 1) == 1;
    int saved = errno;
    if (fd >= 0 && close(fd) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = false;
        saved = errno;
    }
    if (!ok) {
        unlink(tmp);
        say("cannot write the bootstrap file %s: %s", path, strerror(saved));
    }
    free(tmp);
    return ok ? EXIT_OK : EXIT_FAIL;
}

/* SIGINT and SIGTERM are blocked before librdkafka starts its threads (they inherit the
 * mask), so only sigwait below ever receives them. */
static int wait_for_stop(const sigset_t *stop) {
    int sig = 0;
    while (sigwait(stop, &sig) != 0)
        ;
    return sig;
}

static int serve(const options *o, const dev_args *a, const sigset_t *stop) {
    char errstr[256];
    bool verbose = o->verbose;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_opaque(conf, &verbose);
    rd_kafka_conf_set_log_cb(conf, mock_log);
    /* The mock's broker sockets take this handle's settings. Without TCP_NODELAY (which real
     * brokers set) a second response on a connection waits for the client's delayed ACK:
     * a 40 ms stall whenever two requests of one client are in flight to one broker. */
    rd_kafka_t *rk = NULL;
    if (rd_kafka_conf_set(conf, "socket.nagle.disable", "true", errstr, sizeof errstr) ==
        RD_KAFKA_CONF_OK)
        rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        say("cannot create the librdkafka handle for the mock cluster: %s", errstr);
        return EXIT_FAIL;
    }
    int rc = EXIT_OK;
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, (int)a->brokers);
    if (!mc) {
        say("cannot start librdkafka's mock cluster with %lld brokers (see -v)", a->brokers);
        rc = EXIT_FAIL;
    }
    if (rc == EXIT_OK && a->n)
        rc = create_plan(o, a, mc);
    const char *bootstrap = mc ? rd_kafka_mock_cluster_bootstraps(mc) : NULL;
    if (rc == EXIT_OK && o->bootstrap_file)
        rc = write_bootstrap_file(o->bootstrap_file, bootstrap);
    if (rc == EXIT_OK && (printf("%s\n", bootstrap) < 0 || fflush(stdout) != 0)) {
        say("writing the bootstrap address failed: %s", strerror(errno));
        rc = EXIT_FAIL;
    }
    if (rc == EXIT_OK && o->verbose)
        fprintf(stderr,
                "esctl: dev-broker: %lld broker(s) at %s; in memory, at most 5 MiB or "
                "100,000 message sets per partition (the oldest are dropped)\n",
                a->brokers, bootstrap);
    if (rc == EXIT_OK)
        wait_for_stop(stop);
    if (o->bootstrap_file && rc == EXIT_OK)
        unlink(o->bootstrap_file);
    if (mc)
        rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return rc;
}

int cmd_dev_broker(const options *o) {
    dev_args a = {0};
    int rc = parse_dev_args(o, &a);
    if (rc == EXIT_OK) {
        sigset_t stop;
        sigemptyset(&stop);
        sigaddset(&stop, SIGINT);
        sigaddset(&stop, SIGTERM);
        /* Left blocked: a second signal during teardown must not turn exit 0 into a kill. */
        pthread_sigmask(SIG_BLOCK, &stop, NULL);
        /* A reader of stdout that goes away must not kill the cluster mid-run. */
        signal(SIGPIPE, SIG_IGN);
        rc = serve(o, &a, &stop);
    }
    free_dev_args(&a);
    return rc;
}
