/* esctl state: an aggregate's current state, folded with the definition of a types module. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "esctl.h"

const char state_help[] =
    "usage: esctl state <aggregate-type> <id> [--json]\n"
    "\n"
    "Prints the state of one aggregate as a command would see it now: its snapshot\n"
    "and the later events folded with the aggregate's own evolve, taken from the\n"
    "service's types module (--types, or the config key types.modules; see\n"
    "<eskit/types.h>). The first line is the aggregate, its version and the state\n"
    "type; then one field a line, \"name: value\". Writes nothing.\n"
    "\n"
    "Embedded: the store's stream and snapshot. Kafka (brokers set): the\n"
    "aggregate's events gathered from every partition of <aggregate-type>.events,\n"
    "folded from version 1 (the processors' snapshots are not read).\n"
    "\n"
    "Options:\n"
    "  --json           one JSON object: aggregate, version, state type and the\n"
    "                   state in the proto3 JSON mapping\n"
    "  -h, --help       show this help\n"
    "\n"
    "Example: esctl --db orders.db --types order_saga_types state orders.order o-1\n"
    "Exits 1 when the aggregate type is unknown, the aggregate has no events or an\n"
    "event cannot be folded.\n";

static void print_state(pb_buf *b, const options *o, const ProtobufCMessage *state,
                        uint64_t version) {
    const char *type = o->pos[0], *id = o->pos[1];
    if (o->json) {
        pb_buf_putc(b, '{');
        json_str(b, "aggregate_type", type);
        pb_buf_puts(b, ", ");
        json_str(b, "aggregate_id", id);
        pb_buf_printf(b, ", \"version\": %" PRIu64 ", ", version);
        json_str(b, "state_type", state->descriptor->name);
        pb_buf_puts(b, ", \"state\": ");
        pb_print_json(b, state);
        pb_buf_puts(b, "}\n");
        return;
    }
    put_clean(b, type, 0);
    pb_buf_putc(b, '/');
    put_clean(b, id, 0);
    pb_buf_printf(b, " version %" PRIu64 " (%s)\n", version, state->descriptor->name);
    pb_print_lines(b, state);
}

static int run_state(const options *o, const es_config_t *cfg, const es_aggregate_def *def) {
    const char *type = o->pos[0], *id = o->pos[1];
    es_error_t err = {0};
    es_engine_t *engine = NULL;
    ProtobufCMessage *state = NULL;
    uint64_t version = 0;
    int rc = check_store_exists(cfg);
    if (rc != EXIT_OK)
        return rc;
    es_err e = es_engine_open(cfg, ES_OPEN_READONLY, &engine, &err);
    if (e == ES_OK)
        e = es_engine_register(engine, def, NULL, &err);
    if (e == ES_OK)
        e = es_engine_load_state(engine, type, id, &state, &version, &err);
    if (e != ES_OK) {
        say("%s", err.message);
        rc = EXIT_FAIL;
    } else if (version == 0) {
        say("no events for %s/%s in %s", type, id, es_config_get(cfg, "db"));
        rc = EXIT_FAIL;
    } else {
        pb_buf b;
        pb_buf_init(&b);
        print_state(&b, o, state, version);
        rc = write_out(&b) ? EXIT_OK : EXIT_FAIL;
        pb_buf_free(&b);
    }
    if (state)
        protobuf_c_message_free_unpacked(state, NULL);
    es_engine_destroy(engine);
    return rc;
}

int cmd_state(const options *o) {
    es_config_t *cfg = NULL;
    pb_registry *types = NULL;
    int rc = check_type_id_args(o, "state");
    if (rc == EXIT_OK)
        rc = load_config(o, &cfg);
    if (rc == EXIT_OK)
        rc = load_types(o, cfg, &types);
    if (rc == EXIT_OK) {
        const es_aggregate_def *def = pb_registry_aggregate(types, o->pos[0]);
        if (def) {
            rc = run_state(o, cfg, def);
        } else {
            types_hint(types, o->pos[0]);
            rc = EXIT_FAIL;
        }
    }
    es_config_destroy(cfg);
    pb_registry_destroy(types);
    return rc;
}
