/*
 * The schema catalogue on both backends (docs/schemas.md): what es_engine_register records,
 * idempotent registration, versions, refusals that record nothing, the versions events carry,
 * and two processes registering at once (run_registrar).
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend.h"
#include "cattest/cattest_variants.h"
#include "domain.h"
#include "fulfilment.h"
#include "order_summary.h"
#include "kafkautil.h"
#include "testutil.h"

static const char *const all_types[] = {"orders.order", "payments.payment", "inventory.item", NULL};

typedef struct seen {
    char names[64][128];
    uint32_t versions[64];
    size_t n;
} seen;

static int collect(const es_schema_entry_t *e, void *opaque) {
    seen *s = opaque;
    if (s->n < 64) {
        snprintf(s->names[s->n], sizeof s->names[0], "%s", e->name);
        s->versions[s->n++] = e->version;
    }
    return 0;
}

static seen list_all(tb_t *b, const char *name) {
    es_schemas_t *cat = NULL;
    es_error_t err = {0};
    seen s = {0};
    cr_assert_eq(es_schemas_open(tb_config(b), 1, &cat, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_schemas_list(cat, name, collect, &s, &err), ES_OK, "%s", err.message);
    es_schemas_close(cat);
    return s;
}

static int has(const seen *s, const char *name, uint32_t version) {
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->names[i], name) && s->versions[i] == version)
            return 1;
    return 0;
}

static uint32_t register_one(tb_t *b, const char *variant, es_err want, es_error_t *err) {
    es_schemas_t *cat = NULL;
    const ProtobufCMessageDescriptor *d = cattest_variant(variant, NULL);
    uint32_t v = 0;
    cr_assert_eq(es_schemas_open(tb_config(b), 0, &cat, err), ES_OK, "%s", err->message);
    es_err rc = es_schemas_register(cat, &d, 1, &v, NULL, err);
    cr_assert_eq(rc, want, "%s: %s", variant, err->message);
    es_schemas_close(cat);
    return v;
}

Test(catalogue, registering_an_aggregate_records_its_state_events_and_commands_once) {
    tb_t *b = tb_open(all_types);
    es_engine_t *engine = tb_engine(b);
    seen s = list_all(b, NULL);
    cr_assert(has(&s, "orders.v1.Order", 1), "the state");
    cr_assert(has(&s, "orders.v1.OrderPlaced", 1), "an event");
    cr_assert(has(&s, "orders.v1.PlaceOrder", 1), "a command");
    cr_assert(has(&s, "payments.v1.PaymentCaptured", 1) || has(&s, "payments.v1.Payment", 1),
              "the other aggregates too");
    size_t first = s.n;
    /* A second engine (on Kafka, the test's processor registered too) records nothing new. */
    es_engine_t *again = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_engine_new(tb_config(b), &again, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(again, &err), ES_OK, "%s", err.message);
    es_engine_destroy(again);
    s = list_all(b, NULL);
    cr_assert_eq(s.n, first, "registration is idempotent: %zu entries, then %zu", first, s.n);
    for (size_t i = 0; i < s.n; i++)
        cr_assert_eq(s.versions[i], 1, "%s has version %u", s.names[i], s.versions[i]);
    (void)engine;
    tb_close(b);
}

static int first_schema_version(const es_event_t *ev, void *opaque) {
    *(uint32_t *)opaque = ev->schema_version;
    return 1;
}

static void place(es_engine_t *engine, const char *id) {
    Orders__V1__LineItem item = ORDERS__V1__LINE_ITEM__INIT, *items[] = {&item};
    item.sku = "sku-1";
    item.quantity = 1;
    item.unit_price_cents = 100;
    Orders__V1__PlaceOrder m = ORDERS__V1__PLACE_ORDER__INIT;
    m.customer_id = "c-1";
    m.n_items = 1;
    m.items = items;
    es_command_t cmd = {.aggregate_type = "orders.order", .aggregate_id = id, .message = &m.base};
    es_result_t res = {0};
    es_error_t err = {0};
    cr_assert_eq(es_execute(engine, &cmd, &res, &err), ES_OK, "%s", err.message);
    cr_assert_eq(res.outcome, ES_OUTCOME_ACCEPTED, "%s", res.reason ? res.reason : "");
    es_result_clear(&res);
}

Test(catalogue, events_carry_the_version_of_their_type_that_their_writer_registered) {
    tb_t *b = tb_open(all_types);
    place(tb_engine(b), "o-sv");
    cr_assert_eq(tb_events_of(b, "orders.order", "o-sv", 1), 1);
    uint32_t v = 0;
    es_error_t err = {0};
    cr_assert_eq(es_store_read_stream(tb_store(b), "orders.order", "o-sv", 1, first_schema_version,
                                      &v, &err),
                 ES_OK, "%s", err.message);
    cr_assert_eq(v, 1, "orders.v1.OrderPlaced is version 1 in the catalogue: %u", v);
    tb_close(b);
}

Test(catalogue, a_compatible_change_is_the_next_version_and_a_known_schema_keeps_its_own) {
    tb_t *b = tb_open(NULL);
    es_error_t err = {0};
    cr_assert_eq(register_one(b, "base", ES_OK, &err), 1);
    cr_assert_eq(register_one(b, "note", ES_OK, &err), 2, "a field added");
    cr_assert_eq(register_one(b, "base", ES_OK, &err), 1, "an older build keeps its version");
    cr_assert_eq(register_one(b, "note", ES_OK, &err), 2);
    seen s = list_all(b, "cattest.v1.Thing");
    cr_assert_eq(s.n, 2);
    tb_close(b);
}

Test(catalogue, a_breaking_change_is_refused_naming_the_rule_and_nothing_is_recorded) {
    tb_t *b = tb_open(NULL);
    es_error_t err = {0};
    register_one(b, "base", ES_OK, &err);
    /* In one call with a type that would be new: all or nothing. */
    es_schemas_t *cat = NULL;
    const ProtobufCMessageDescriptor *two[] = {cattest_variant("base", "Fresh"),
                                               cattest_variant("broken", NULL)};
    es_schema_report_t report = {0};
    cr_assert_eq(es_schemas_open(tb_config(b), 0, &cat, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_schemas_register(cat, two, 2, NULL, &report, &err), ES_EINCOMPATIBLE);
    cr_assert(strstr(err.message, "cattest.v1.Thing") && strstr(err.message, "amount") &&
                  strstr(err.message, "2") && strstr(err.message, "FIELD_WIRE_COMPATIBLE_TYPE"),
              "%s", err.message);
    cr_assert_geq(report.n, 1);
    cr_assert_str_eq(report.findings[0].rule, "FIELD_WIRE_COMPATIBLE_TYPE");
    cr_assert_eq(report.findings[0].number, 2);
    es_schema_report_clear(&report);
    /* es_schemas_check answers the same without writing. */
    cr_assert_eq(es_schemas_check(cat, two, 2, &report, &err), ES_EINCOMPATIBLE);
    cr_assert_geq(report.n, 1);
    es_schema_report_clear(&report);
    es_schemas_close(cat);
    seen s = list_all(b, NULL);
    cr_assert_eq(s.n, 1, "only the base version: %zu entries", s.n);
    /* Under none, anything goes. */
    cr_assert_eq(es_config_set(tb_config(b), "schema.compatibility", "none", &err), ES_OK);
    cr_assert_eq(register_one(b, "broken", ES_OK, &err), 2);
    tb_close(b);
}

/* Records an orders.v1.OrderPlaced of another shape (cattest's Thing: id string = 1, amount
 * int64 = 2), which the demo's own OrderPlaced breaks: whatever reads or writes the demo's type
 * must then be refused. */
static void record_impostor(tb_t *b) {
    es_error_t err = {0};
    es_schemas_t *cat = NULL;
    ProtobufCMessageDescriptor *impostor = malloc(sizeof *impostor);
    *impostor = *cattest_variant("base", NULL); /* id string = 1, amount int64 = 2 */
    impostor->name = "orders.v1.OrderPlaced";
    const ProtobufCMessageDescriptor *imp = impostor;
    es_config_t *anything = es_config_dup(tb_config(b)); /* recorded whatever came before */
    cr_assert_eq(es_config_set(anything, "schema.compatibility", "none", &err), ES_OK);
    cr_assert_eq(es_schemas_open(anything, 0, &cat, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_schemas_register(cat, &imp, 1, NULL, NULL, &err), ES_OK, "%s", err.message);
    es_schemas_close(cat);
    es_config_destroy(anything);
    free(impostor);
}

Test(catalogue, an_incompatible_aggregate_type_is_refused_at_es_engine_register) {
    tb_t *b = tb_open(NULL);
    es_error_t err = {0};
    record_impostor(b);
    es_engine_t *engine = NULL;
    cr_assert_eq(es_engine_new(tb_config(b), &engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(engine, &err), ES_EINCOMPATIBLE, "%s", err.message);
    cr_assert(strstr(err.message, "orders.v1.OrderPlaced"), "%s", err.message);
    cr_assert(strstr(err.message, "upcaster") || strstr(err.message, "new type") ||
                  strstr(err.message, "reserve"),
              "says what to do: %s", err.message);
    es_engine_destroy(engine);
    tb_close(b);
}

Test(catalogue, a_projector_that_would_misread_the_log_is_refused_at_runner_start) {
    tb_t *b = tb_open(all_types);
    record_impostor(b);
    es_runner_t *r = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_runner_new(tb_config(b), &es_order_summary_projector, &r, &err),
                 ES_EINCOMPATIBLE, "%s", err.message);
    cr_assert(strstr(err.message, "projector 'order_summary'") &&
                  strstr(err.message, "orders.v1.OrderPlaced"),
              "%s", err.message);
    cr_assert_null(r);
    tb_close(b);
}

/* The saga reads the demo's OrderPlaced, which is recorded (version 1, by the domain's
 * registration); a version 2 it cannot read came after it. */
Test(catalogue, a_saga_that_would_misread_the_log_is_refused_at_coordinator_start) {
    tb_t *b = tb_open(all_types);
    es_engine_t *engine = tb_engine(b); /* the domain, registered before the impostor */
    record_impostor(b);
    es_saga_t *c = NULL;
    es_error_t err = {0};
    cr_assert_eq(es_saga_new(tb_config(b), &demo_fulfilment_def, engine, &c, &err),
                 ES_EINCOMPATIBLE, "%s", err.message);
    cr_assert(strstr(err.message, "saga 'orders.fulfilment'") &&
                  strstr(err.message, "orders.v1.OrderPlaced"),
              "%s", err.message);
    cr_assert_null(c);
    tb_close(b);
}

/* Puts a record that is no eskit.v1.SchemaRecord where the catalogue keeps cattest.v1.Thing
 * version 2 (after a good version 1). */
static void corrupt_catalogue(tb_t *b) {
    static const uint8_t garbage[] = {0xff, 0x01, 0x02, 0x03};
    if (!tb_kafka(b)) {
        sqlite3 *db = NULL;
        cr_assert_eq(sqlite3_open(es_config_get(tb_config(b), "db"), &db), SQLITE_OK);
        sqlite3_stmt *s = NULL;
        cr_assert_eq(sqlite3_prepare_v2(db,
                                        "INSERT INTO es_schemas VALUES ('cattest.v1.Thing', 2, "
                                        "'sha256:00', ?, 0, 'test')",
                                        -1, &s, NULL),
                     SQLITE_OK, "%s", sqlite3_errmsg(db));
        sqlite3_bind_blob(s, 1, garbage, sizeof garbage, SQLITE_STATIC);
        cr_assert_eq(sqlite3_step(s), SQLITE_DONE);
        sqlite3_finalize(s);
        sqlite3_close(db);
        return;
    }
    rd_kafka_t *p = tu_kafka_new(RD_KAFKA_PRODUCER,
                                 tu_kafka_producer_conf(es_config_get(tb_config(b), "brokers")));
    cr_assert_eq(rd_kafka_producev(p, RD_KAFKA_V_TOPIC("eskit.schemas"), RD_KAFKA_V_PARTITION(0),
                                   RD_KAFKA_V_KEY("cattest.v1.Thing/2", 18),
                                   RD_KAFKA_V_VALUE((void *)garbage, sizeof garbage),
                                   RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                 RD_KAFKA_RESP_ERR_NO_ERROR);
    cr_assert_eq(rd_kafka_flush(p, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(p);
}

Test(catalogue, a_corrupt_catalogue_record_is_a_clear_error_and_nothing_is_registered) {
    tb_t *b = tb_open(all_types);
    es_error_t err = {0};
    register_one(b, "base", ES_OK, &err);
    corrupt_catalogue(b);
    es_schemas_t *cat = NULL;
    seen s = {0};
    cr_assert_eq(es_schemas_open(tb_config(b), 1, &cat, &err), ES_OK, "%s", err.message);
    cr_assert_eq(es_schemas_list(cat, NULL, collect, &s, &err), ES_EDECODE);
    /* It names where: the type and version (embedded rows say which), or the offset. */
    cr_assert(strstr(err.message, "corrupt record") &&
                  (strstr(err.message, "cattest.v1.Thing version 2") ||
                   strstr(err.message, "at offset 1")) &&
                  strstr(err.message, "restore"),
              "%s", err.message);
    es_schemas_close(cat);
    /* A writer cannot register while the catalogue cannot be read, and writes no event. */
    es_engine_t *engine = NULL;
    cr_assert_eq(es_engine_new(tb_config(b), &engine, &err), ES_OK, "%s", err.message);
    cr_assert_eq(demo_register_all(engine, &err), ES_EDECODE, "%s", err.message);
    cr_assert(strstr(err.message, "schema catalogue") && strstr(err.message, "corrupt"), "%s",
              err.message);
    es_engine_destroy(engine);
    cr_assert_eq(tb_appended(b), 0);
    tb_close(b);
}

/* The config of b as run_registrar arguments. */
typedef struct args {
    const char *argv[64];
    char *owned[32];
    size_t n, n_owned;
} args;

static void add_pair(const char *key, const char *value, void *opaque) {
    args *a = opaque;
    char *pair = NULL;
    cr_assert_geq(asprintf(&pair, "%s=%s", key, value), 0);
    a->owned[a->n_owned++] = pair;
    a->argv[a->n++] = "--set";
    a->argv[a->n++] = pair;
}

static pid_t start_registrar(tb_t *b, const char *variant, const char *count, const char *go,
                             const char *out_path) {
    args a = {.n = 0};
    a.argv[a.n++] = RUN_REGISTRAR_PATH;
    es_config_foreach(tb_config(b), add_pair, &a);
    a.argv[a.n++] = variant;
    a.argv[a.n++] = count;
    a.argv[a.n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    char env_go[512];
    snprintf(env_go, sizeof env_go, "RUN_REGISTRAR_GO=%s", go);
    const char *verbose = getenv("RUN_REGISTRAR_VERBOSE"); /* its log lines, for a person */
    char *envp[] = {env_go, verbose ? "RUN_REGISTRAR_VERBOSE=1" : NULL, NULL};
    pid_t pid = 0;
    cr_assert_eq(posix_spawn(&pid, RUN_REGISTRAR_PATH, &fa, NULL, (char *const *)a.argv, envp), 0);
    posix_spawn_file_actions_destroy(&fa);
    for (size_t i = 0; i < a.n_owned; i++)
        free(a.owned[i]);
    return pid;
}

static int wait_exit(pid_t pid) {
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#define RACE_TYPES 12

/* Two processes, started together, each register a schema of the same RACE_TYPES types:
 * different schemas (note, tag) or the same (both note). */
static void race(const char *a_variant, const char *b_variant) {
    tb_t *b = tb_open(NULL);
    es_error_t err = {0};
    es_schemas_t *cat = NULL;
    cr_assert_eq(es_schemas_open(tb_config(b), 0, &cat, &err), ES_OK, "%s", err.message);
    for (int k = 0; k < RACE_TYPES; k++) {
        char prefix[16];
        snprintf(prefix, sizeof prefix, "T%d", k);
        const ProtobufCMessageDescriptor *d = cattest_variant("base", prefix);
        cr_assert_eq(es_schemas_register(cat, &d, 1, NULL, NULL, &err), ES_OK, "%s", err.message);
    }
    es_schemas_close(cat);
    char *go = tu_path(tb_dir(b), "go"), *out_a = tu_path(tb_dir(b), "a.out"),
         *out_b = tu_path(tb_dir(b), "b.out"), count[8];
    snprintf(count, sizeof count, "%d", RACE_TYPES);
    pid_t pa = start_registrar(b, a_variant, count, go, out_a);
    pid_t pb = start_registrar(b, b_variant, count, go, out_b);
    usleep(200 * 1000); /* both open the catalogue and wait */
    FILE *f = fopen(go, "w");
    cr_assert_not_null(f);
    fclose(f);
    cr_assert_eq(wait_exit(pa), 0, "registrar a failed");
    cr_assert_eq(wait_exit(pb), 0, "registrar b failed");
    int same = !strcmp(a_variant, b_variant);
    for (int k = 0; k < RACE_TYPES; k++) {
        char name[64];
        snprintf(name, sizeof name, "cattest.v1.T%dThing", k);
        seen s = list_all(b, name);
        cr_assert_eq(s.n, same ? 2 : 3, "%s: %zu versions", name, s.n);
        for (size_t i = 0; i < s.n; i++)
            cr_assert_eq(s.versions[i], i + 1, "%s: versions 1..n, one each", name);
    }
    /* Each registrar was told the version its schema holds, and they agree with the list. */
    char line_a[128], line_b[128];
    FILE *fa = fopen(out_a, "r"), *fb = fopen(out_b, "r");
    cr_assert(fa && fb);
    int lines = 0;
    while (fgets(line_a, sizeof line_a, fa) && fgets(line_b, sizeof line_b, fb)) {
        unsigned va = 0, vb = 0;
        char na[64], nb[64];
        cr_assert_eq(sscanf(line_a, "%63s %u", na, &va), 2);
        cr_assert_eq(sscanf(line_b, "%63s %u", nb, &vb), 2);
        cr_assert_str_eq(na, nb);
        if (same)
            cr_assert_eq(va, vb, "%s: one schema, one version (%u, %u)", na, va, vb);
        else
            cr_assert((va == 2 && vb == 3) || (va == 3 && vb == 2), "%s: %u and %u", na, va, vb);
        lines++;
    }
    cr_assert_eq(lines, RACE_TYPES);
    fclose(fa);
    fclose(fb);
    free(go);
    free(out_a);
    free(out_b);
    tb_close(b);
}

Test(catalogue, two_processes_registering_different_schemas_at_once_lose_nothing, .timeout = 120) {
    race("note", "tag");
}

Test(catalogue, two_processes_registering_one_schema_at_once_record_it_once, .timeout = 120) {
    race("note", "note");
}
