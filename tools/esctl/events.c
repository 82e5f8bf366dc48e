/* esctl events: an aggregate's stream, decoded, as aligned text or NDJSON. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "esctl.h"

const char events_help[] =
    "usage: esctl events <aggregate-type> <id> [--from VERSION] [--json]\n"
    "\n"
    "Prints the stream of one aggregate in version order, one event per line:\n"
    "version, time (UTC), event type, then the payload's fields as name=value.\n"
    "\n"
    "Options:\n"
    "  --from VERSION   start at this version (default: 1)\n"
    "  --json           one JSON object per line (NDJSON); the payload follows the\n"
    "                   proto3 JSON mapping\n"
    "  -h, --help       show this help\n"
    "\n"
    "Example: esctl --db orders.db events orders.order o-1 --json\n"
    "Exits 1 when the aggregate has no events or a payload cannot be decoded.\n";

/* State shared by the two passes over a stream. */
typedef struct events_ctx {
    const options *o;
    const pb_registry *types;
    pb_buf line;
    int version_width;
    int type_width;
    size_t undecodable;
    bool write_failed;
} events_ctx;

void put_time(pb_buf *b, int64_t us) {
    /* Floor division, so times before 1970 still print correctly. */
    int64_t secs = us / 1000000, rem = us % 1000000;
    if (rem < 0) {
        secs -= 1;
        rem += 1000000;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    char date[32];
    if (!gmtime_r(&t, &tm) || strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        pb_buf_printf(b, "@%" PRId64 "us", us);
        return;
    }
    pb_buf_printf(b, "%s.%03dZ", date, (int)(rem / 1000));
}

/* Escapes s into b (NULL: only counts) and returns the columns it takes: control characters
 * (C0, DEL, and C1 encoded in UTF-8) and bytes that are not UTF-8 become \xNN, a backslash \\. */
static int clean_as(pb_buf *b, const char *s, bool backslash) {
    const unsigned char *p = (const unsigned char *)s;
    size_t left = strlen(s);
    int cols = 0;
    while (left) {
        size_t n = *p >= 0x80 ? pb_utf8_len(p, left) : 1;
        bool control = n == 0 || (n == 1 && (*p < 0x20 || *p == 0x7f)) ||
                       (n == 2 && p[0] == 0xc2 && p[1] < 0xa0);
        n = n ? n : 1;
        if (control) {
            for (size_t i = 0; i < n; i++)
                if (b)
                    pb_buf_printf(b, "\\x%02x", p[i]);
            cols += 4 * (int)n;
        } else if (*p == '\\' && backslash) {
            if (b)
                pb_buf_puts(b, "\\\\");
            cols += 2;
        } else {
            for (size_t i = 0; b && i < n; i++)
                pb_buf_putc(b, (char)p[i]);
            cols++;
        }
        p += n;
        left -= n;
    }
    return cols;
}

int clean_width(const char *s) {
    return clean_as(NULL, s, true);
}

void put_clean(pb_buf *b, const char *s, int width) {
    for (int n = clean_as(b, s, true); n < width; n++)
        pb_buf_putc(b, ' ');
}

void put_clean_message(pb_buf *b, const char *s) {
    clean_as(b, s, false);
}

/* The decoded payload, NULL when the type is unknown (*desc NULL) or the bytes
 * do not parse. Caller frees with protobuf_c_message_free_unpacked. */
static ProtobufCMessage *decode_payload(const pb_registry *types, const es_event_t *ev,
                                        const ProtobufCMessageDescriptor **desc) {
    *desc = pb_registry_find(types, ev->event_type);
    if (!*desc) {
        note_unknown_type(ev->event_type);
        return NULL;
    }
    return protobuf_c_message_unpack(*desc, NULL, ev->payload_len, ev->payload);
}

bool put_payload_text(pb_buf *b, const pb_registry *types, const es_event_t *ev) {
    const ProtobufCMessageDescriptor *desc;
    ProtobufCMessage *msg = decode_payload(types, ev, &desc);
    if (msg) {
        pb_print_text(b, msg);
        protobuf_c_message_free_unpacked(msg, NULL);
        return true;
    }
    if (desc) {
        pb_buf_printf(b, "payload=<%zu bytes, cannot be decoded as %s>", ev->payload_len,
                      desc->name);
        return false;
    }
    pb_buf_printf(b, "payload=<%zu bytes, type not known to esctl>", ev->payload_len);
    return true;
}

static void text_line(events_ctx *c, const es_event_t *ev) {
    pb_buf_printf(&c->line, "%*" PRIu64 "  ", c->version_width, ev->version);
    put_time(&c->line, ev->occurred_at_us);
    pb_buf_puts(&c->line, "  ");
    put_clean(&c->line, ev->event_type, c->type_width);
    size_t before = c->line.len;
    pb_buf_puts(&c->line, "  ");
    size_t fields = c->line.len;
    if (!put_payload_text(&c->line, c->types, ev))
        c->undecodable++;
    /* No trailing blanks when the payload has no fields (OrderConfirmed). */
    if (c->line.len == fields) {
        while (before > 0 && c->line.data[before - 1] == ' ')
            before--;
        c->line.len = before;
    }
}

static void json_str_field(pb_buf *b, const char *name, const char *value) {
    pb_buf_printf(b, ", \"%s\": ", name);
    if (value)
        pb_buf_json_string(b, value, strlen(value));
    else
        pb_buf_puts(b, "null");
}

static bool json_payload(pb_buf *b, const pb_registry *types, const es_event_t *ev) {
    const ProtobufCMessageDescriptor *desc;
    ProtobufCMessage *msg = decode_payload(types, ev, &desc);
    if (msg) {
        pb_buf_puts(b, ", \"payload\": ");
        pb_print_json(b, msg);
        protobuf_c_message_free_unpacked(msg, NULL);
        return true;
    }
    pb_buf_puts(b, ", \"payload_base64\": \"");
    pb_buf_base64(b, ev->payload, ev->payload_len);
    pb_buf_putc(b, '"');
    if (desc) {
        pb_buf_printf(b, ", \"payload_error\": \"cannot be decoded as %s\"", desc->name);
        return false;
    }
    pb_buf_puts(b, ", \"payload_error\": \"type not known to esctl\"");
    return true;
}

bool put_event_json(pb_buf *b, const pb_registry *types, const es_event_t *ev) {
    pb_buf_puts(b, "{\"event_id\": ");
    pb_buf_json_string(b, ev->event_id, strlen(ev->event_id));
    json_str_field(b, "aggregate_type", ev->aggregate_type);
    json_str_field(b, "aggregate_id", ev->aggregate_id);
    pb_buf_printf(b, ", \"version\": %" PRIu64, ev->version);
    json_str_field(b, "event_type", ev->event_type);
    pb_buf_puts(b, ", \"occurred_at\": \"");
    put_time(b, ev->occurred_at_us);
    pb_buf_putc(b, '"');
    json_str_field(b, "command_id", ev->command_id);
    json_str_field(b, "correlation_id", ev->correlation_id);
    pb_buf_puts(b, ", \"metadata\": {");
    for (size_t i = 0; i < ev->n_metadata; i++) {
        const es_kv_t *kv = &ev->metadata[i];
        pb_buf_puts(b, i ? ", " : "");
        pb_buf_json_string(b, kv->key, strlen(kv->key));
        pb_buf_puts(b, ": ");
        pb_buf_json_string(b, kv->value ? kv->value : "", kv->value ? strlen(kv->value) : 0);
    }
    pb_buf_putc(b, '}');
    bool ok = json_payload(b, types, ev);
    pb_buf_putc(b, '}');
    return ok;
}

static int print_event_cb(const es_event_t *ev, void *opaque) {
    events_ctx *c = opaque;
    pb_buf_reset(&c->line);
    if (c->o->json) {
        if (!put_event_json(&c->line, c->types, ev))
            c->undecodable++;
    } else {
        text_line(c, ev);
    }
    pb_buf_putc(&c->line, '\n');
    if (c->line.oom || fwrite(c->line.data, 1, c->line.len, stdout) != c->line.len) {
        c->write_failed = true;
        return 1;
    }
    return 0;
}

/* First pass for text output: column widths, so every line aligns. */
static int measure_cb(const es_event_t *ev, void *opaque) {
    events_ctx *c = opaque;
    int vw = snprintf(NULL, 0, "%" PRIu64, ev->version);
    int tw = clean_width(ev->event_type);
    c->version_width = vw > c->version_width ? vw : c->version_width;
    c->type_width = tw > c->type_width ? tw : c->type_width;
    return 0;
}

/* Reads the stream (once to measure for text, once to print) and reports the outcome. */
static int print_stream(es_store_t *store, events_ctx *c) {
    const char *type = c->o->pos[0], *id = c->o->pos[1];
    es_error_t err = {0};
    es_err rc = ES_OK;
    if (!c->o->json)
        rc = es_store_read_stream(store, type, id, c->o->from, measure_cb, c, &err);
    if (rc == ES_OK)
        rc = es_store_read_stream(store, type, id, c->o->from, print_event_cb, c, &err);
    if (fflush(stdout) != 0 || c->write_failed) {
        say("writing the output failed: %s", c->line.oom ? "out of memory" : strerror(errno));
        return EXIT_FAIL;
    }
    if (rc != ES_OK) {
        say("%s", err.message);
        return EXIT_FAIL;
    }
    if (c->undecodable) {
        say("%zu event payload%s of %s/%s could not be decoded", c->undecodable,
            c->undecodable == 1 ? "" : "s", type, id);
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

static int run_events(const options *o, es_store_t *store, const pb_registry *types) {
    const char *type = o->pos[0], *id = o->pos[1];
    es_error_t err = {0};
    uint64_t version = 0;
    if (es_store_stream_version(store, type, id, &version, &err) != ES_OK) {
        say("%s", err.message);
        return EXIT_FAIL;
    }
    if (version == 0) {
        say("no events for %s/%s in %s", type, id, es_config_get(es_store_config(store), "db"));
        return EXIT_FAIL;
    }
    events_ctx c = {.o = o, .types = types};
    pb_buf_init(&c.line);
    int rc = print_stream(store, &c);
    pb_buf_free(&c.line);
    return rc;
}

int cmd_events(const options *o) {
    es_config_t *cfg = NULL;
    es_store_t *store = NULL;
    pb_registry *types = NULL;
    int rc = check_type_id_args(o, "events");
    if (rc == EXIT_OK)
        rc = load_config(o, &cfg);
    if (rc == EXIT_OK)
        rc = load_types(o, cfg, &types);
    if (rc == EXIT_OK)
        rc = open_store(cfg, &store);
    if (rc == EXIT_OK)
        rc = run_events(o, store, types);
    if (rc == EXIT_OK)
        types_hint(types, NULL);
    if (store)
        es_store_destroy(store);
    es_config_destroy(cfg);
    pb_registry_destroy(types);
    return rc;
}
