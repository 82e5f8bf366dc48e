#include "runs.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain.h"
#include "util.h"

static const char ITEM_TYPE[] = "inventory.item";
static const char STREAM_TYPE[] = "bench.stream";
static const char BLOB_EVENT[] = "bench.v1.Blob";

static void log_to_stderr(int level, const char *message, void *opaque) {
    (void)opaque;
    if (level <= ES_LOG_WARNING)
        fprintf(stderr, "eskit: %s\n", message);
}

/* The defaults a service gets, spelled out where they matter to the figures; metrics as asked. */
static es_config_t *make_config(const char *path, bool metrics) {
    es_config_t *cfg = es_config_new();
    es_error_t err = {0};
    if (!cfg) {
        fprintf(stderr, "eskit-bench: es_config_new: out of memory\n");
        return NULL;
    }
    es_config_set_log_cb(cfg, log_to_stderr, NULL);
    es_err rc = es_config_set(cfg, "backend", "embedded", &err);
    if (rc == ES_OK)
        rc = es_config_set(cfg, "db", path, &err);
    if (rc == ES_OK)
        rc = es_config_set(cfg, "sqlite.synchronous", "full", &err);
    if (rc == ES_OK)
        rc = es_config_set(cfg, "metrics.enabled", metrics ? "true" : "false", &err);
    if (rc != ES_OK) {
        bench_fail("configuring the store", rc, &err);
        es_config_destroy(cfg);
        return NULL;
    }
    return cfg;
}

static void free_ids(char **ids, size_t n);

/* "<prefix>-000042" for i in 0..n-1; caller frees with free_ids. */
static char **make_ids(const char *prefix, size_t n) {
    char **ids = calloc(n, sizeof *ids);
    bool ok = ids != NULL;
    for (size_t i = 0; ok && i < n; i++) {
        ids[i] = malloc(ES_MAX_ID_LEN + 1);
        ok = ids[i] != NULL;
        if (ok)
            snprintf(ids[i], ES_MAX_ID_LEN + 1, "%s-%06zu", prefix, i);
    }
    if (ok)
        return ids;
    free_ids(ids, n);
    fprintf(stderr, "eskit-bench: out of memory\n");
    return NULL;
}

static void free_ids(char **ids, size_t n) {
    for (size_t i = 0; ids && i < n; i++)
        free(ids[i]);
    free(ids);
}

struct collect {
    blobs_t *out;
    int rc;
    es_error_t err;
};

/* Re-encodes each event: the envelope bytes the log holds for it. */
static int collect_cb(const es_event_t *ev, void *opaque) {
    struct collect *c = opaque;
    uint8_t *buf = NULL;
    size_t len = 0;
    es_err rc = es_envelope_encode(ev, &buf, &len, &c->err);
    if (rc != ES_OK) {
        c->rc = bench_fail("es_envelope_encode", rc, &c->err);
        return 1;
    }
    if (blobs_push(c->out, buf, len) != 0) {
        fprintf(stderr, "eskit-bench: out of memory\n");
        c->rc = -1;
    }
    free(buf);
    return c->rc != 0;
}

/* Reads the whole log back; checks that it holds exactly `expect` events. */
static int read_back(es_store_t *store, size_t expect, blobs_t *out) {
    struct collect c = {.out = out, .rc = 0};
    es_err rc = es_store_read_log(store, NULL, 0, 0, collect_cb, &c, NULL, &c.err);
    if (rc != ES_OK && c.rc == 0)
        return bench_fail("es_store_read_log", rc, &c.err);
    if (c.rc == 0 && out->n != expect) {
        fprintf(stderr, "eskit-bench: the log holds %zu events, %zu were appended\n", out->n,
                expect);
        return -1;
    }
    return c.rc;
}

/* Appends shape->n events; returns the elapsed ns, or -1. */
static int64_t append_all(es_store_t *store, const run_shape_t *shape, char **ids,
                          const uint8_t *payload) {
    es_new_event_t *evs = calloc(shape->per_call, sizeof *evs);
    bench_rng_t rng = {0x9E3779B97F4A7C15ULL};
    char cmd_id[ES_UUID_STR_LEN + 1];
    es_error_t err = {0};
    int64_t t0 = bench_now_ns(), elapsed = -1;
    if (!evs)
        return -1;
    for (size_t done = 0; done < shape->n; done += shape->per_call) {
        size_t k = shape->n - done < shape->per_call ? shape->n - done : shape->per_call;
        es_uuid7(cmd_id); /* one command's worth of events shares its causation */
        for (size_t i = 0; i < k; i++)
            evs[i] = (es_new_event_t){.event_type = BLOB_EVENT,
                                      .payload = payload,
                                      .payload_len = shape->payload_len,
                                      .command_id = cmd_id,
                                      .correlation_id = cmd_id};
        const char *id = ids[bench_rng_below(&rng, (uint32_t)shape->n_streams)];
        es_err rc = es_store_append(store, STREAM_TYPE, id, ES_EXPECT_ANY, 0, evs, k, NULL, &err);
        if (rc != ES_OK) {
            bench_fail("es_store_append", rc, &err);
            goto out;
        }
    }
    elapsed = bench_now_ns() - t0;
out:
    free(evs);
    return elapsed;
}

/* Payload bytes that do not compress or repeat, like a real message. */
static uint8_t *make_payload(size_t len) {
    uint8_t *p = malloc(len ? len : 1);
    bench_rng_t rng = {0x2545F4914F6CDD1DULL};
    for (size_t i = 0; p && i < len; i++)
        p[i] = (uint8_t)bench_rng_below(&rng, 256);
    return p;
}

int run_store_append(const char *path, const run_shape_t *shape, blobs_t *written,
                     double *ev_per_s) {
    es_config_t *cfg = make_config(path, !shape->metrics_off);
    es_store_t *store = NULL;
    es_error_t err = {0};
    char **ids = make_ids("stream", shape->n_streams);
    uint8_t *payload = make_payload(shape->payload_len);
    int rc = -1;
    bench_db_remove(path);
    if (!cfg || !ids || !payload)
        goto out;
    es_err erc = es_store_new(cfg, &store, &err);
    if (erc != ES_OK) {
        bench_fail("es_store_new", erc, &err);
        goto out;
    }
    int64_t ns = append_all(store, shape, ids, payload);
    if (ns > 0 && read_back(store, shape->n, written) == 0) {
        *ev_per_s = (double)shape->n * 1e9 / (double)ns;
        rc = 0;
    }
out:
    if (store)
        es_store_destroy(store);
    if (cfg)
        es_config_destroy(cfg);
    free_ids(ids, shape->n_streams);
    free(payload);
    return rc;
}

/* An engine with the demo aggregates on a fresh file at path, metrics on or off. */
static int open_engine(const char *path, bool metrics, es_engine_t **out) {
    es_config_t *cfg = make_config(path, metrics);
    es_error_t err = {0};
    *out = NULL;
    bench_db_remove(path);
    if (!cfg)
        return -1;
    es_err rc = es_engine_new(cfg, out, &err);
    es_config_destroy(cfg);
    if (rc != ES_OK)
        return bench_fail("es_engine_new", rc, &err);
    rc = demo_register_all(*out, &err);
    if (rc != ES_OK) {
        es_engine_destroy(*out);
        *out = NULL;
        return bench_fail("demo_register_all", rc, &err);
    }
    return 0;
}

/* Frees the results of one batch; counts events, failing on any refused command. */
static int settle_batch(es_result_t *res, size_t k, size_t *n_events) {
    int rc = 0;
    for (size_t i = 0; i < k; i++) {
        if (res[i].outcome != ES_OUTCOME_ACCEPTED && rc == 0) {
            fprintf(stderr, "eskit-bench: a Restock was not accepted (outcome %d): %s\n",
                    (int)res[i].outcome, res[i].reason ? res[i].reason : "(no reason)");
            rc = -1;
        }
        *n_events += res[i].n_events;
        es_result_clear(&res[i]);
    }
    return rc;
}

/* One batch of Restock commands to random items. */
static int execute_one_batch(es_engine_t *engine, es_command_t *cmds, es_result_t *res, size_t k,
                             size_t *n_events) {
    es_error_t err = {0};
    memset(res, 0, k * sizeof *res);
    es_err rc = es_execute_batch(engine, cmds, k, res, &err);
    if (rc != ES_OK) {
        bench_fail("es_execute_batch", rc, &err);
        settle_batch(res, k, n_events);
        return -1;
    }
    return settle_batch(res, k, n_events);
}

/* Executes shape->n commands; returns the elapsed ns, or -1. */
static int64_t execute_all(es_engine_t *engine, const run_shape_t *shape, char **ids,
                           size_t *n_events) {
    Inventory__V1__Restock restock = INVENTORY__V1__RESTOCK__INIT;
    es_command_t *cmds = calloc(shape->per_call, sizeof *cmds);
    es_result_t *res = calloc(shape->per_call, sizeof *res);
    bench_rng_t rng = {0x9E3779B97F4A7C15ULL};
    int64_t t0 = bench_now_ns(), elapsed = -1;
    restock.quantity = 1;
    if (!cmds || !res)
        goto out;
    for (size_t done = 0; done < shape->n; done += shape->per_call) {
        size_t k = shape->n - done < shape->per_call ? shape->n - done : shape->per_call;
        for (size_t i = 0; i < k; i++)
            cmds[i] = (es_command_t){.aggregate_type = ITEM_TYPE,
                                     .aggregate_id =
                                         ids[bench_rng_below(&rng, (uint32_t)shape->n_streams)],
                                     .message = &restock.base};
        if (execute_one_batch(engine, cmds, res, k, n_events) != 0)
            goto out;
    }
    elapsed = bench_now_ns() - t0;
out:
    free(cmds);
    free(res);
    return elapsed;
}

int run_execute_batch(const char *path, const run_shape_t *shape, blobs_t *written,
                      double *ev_per_s) {
    es_engine_t *engine = NULL;
    char **ids = make_ids("item", shape->n_streams);
    size_t n_events = 0;
    int rc = -1;
    if (!ids || open_engine(path, !shape->metrics_off, &engine) != 0)
        goto out;
    int64_t ns = execute_all(engine, shape, ids, &n_events);
    if (ns > 0 && read_back(es_engine_store(engine), n_events, written) == 0) {
        *ev_per_s = (double)n_events * 1e9 / (double)ns;
        rc = 0;
    }
out:
    if (engine)
        es_engine_destroy(engine);
    free_ids(ids, shape->n_streams);
    return rc;
}

int run_lat_open(const char *path, size_t n_aggregates, run_lat_t *out) {
    memset(out, 0, sizeof *out);
    out->rng = 0xD1B54A32D192ED03ULL;
    out->n_ids = n_aggregates;
    out->ids = make_ids("item", n_aggregates);
    if (!out->ids || open_engine(path, true, &out->engine) != 0) {
        run_lat_close(out);
        return -1;
    }
    return 0;
}

/* Keeps the envelopes of the appended events, for the raw commit to write. */
static int keep_events(const es_result_t *res, blobs_t *written) {
    struct collect c = {.out = written, .rc = 0};
    blobs_reset(written);
    for (size_t i = 0; i < res->n_events && c.rc == 0; i++)
        collect_cb(res->events[i], &c);
    return c.rc;
}

int run_lat_one(run_lat_t *l, int64_t *ns, blobs_t *written) {
    Inventory__V1__Restock restock = INVENTORY__V1__RESTOCK__INIT;
    bench_rng_t rng = {l->rng};
    es_result_t res = {0};
    es_error_t err = {0};
    restock.quantity = 1;
    es_command_t cmd = {.aggregate_type = ITEM_TYPE,
                        .aggregate_id = l->ids[bench_rng_below(&rng, (uint32_t)l->n_ids)],
                        .message = &restock.base};
    l->rng = rng.s;
    int64_t t0 = bench_now_ns();
    es_err rc = es_execute(l->engine, &cmd, &res, &err);
    *ns = bench_now_ns() - t0;
    int out = rc == ES_OK ? keep_events(&res, written) : bench_fail("es_execute", rc, &err);
    es_result_clear(&res);
    return out;
}

void run_lat_close(run_lat_t *l) {
    if (l->engine)
        es_engine_destroy(l->engine);
    free_ids(l->ids, l->n_ids);
    memset(l, 0, sizeof *l);
}
