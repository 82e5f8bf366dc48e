/*
 * The backend a conformance test runs on, chosen by CONFORMANCE_BACKEND
 * (embedded or kafka; CTest registers every conformance test for both). A
 * Kafka test gets librdkafka's mock cluster of its own with the topics of
 * the types it names; events are written in the wire format (the command
 * path is not what these tests are about).
 */
#ifndef CONFORMANCE_BACKEND_H
#define CONFORMANCE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <eskit/eskit.h>

#define TB_PARTITIONS 3

typedef struct tb tb_t;

/* Opens a fresh backend with a temp dir, a config (db, readmodel.db = <dir>/read.db) and,
 * on Kafka, the "<type>.events" topics (TB_PARTITIONS each) of the NULL-terminated types. */
tb_t *tb_open(const char *const *types);
void tb_close(tb_t *b);
bool tb_kafka(const tb_t *b);
es_config_t *tb_config(tb_t *b);
/* The temp dir; <dir>/read.db is the read model. */
const char *tb_dir(const tb_t *b);
/* Appends one event to the aggregate's stream (the next version), durably. */
void tb_append(tb_t *b, const char *type, const char *id, const char *event_type,
               const void *payload, size_t len);
/* Writes a record with these exact bytes where the aggregate's events go (poison tests). */
void tb_append_raw(tb_t *b, const char *type, const char *id, const void *bytes, size_t len);
/* An engine with the demo domain registered that executes commands on this backend; on Kafka
 * a command processor (its own engine and state.db) runs on a thread until tb_close. The
 * backend owns it. Kafka needs tb_open to have named the demo types. */
es_engine_t *tb_engine(tb_t *b);
/* Registers a domain's aggregates on an engine (demo_register_all, demo_v2_register_all). */
typedef es_err tb_register_cb(es_engine_t *engine, es_error_t *err);
/* Replaces tb_engine's engine (and on Kafka its command processor, stopped first) with one
 * made from cfg (a copy of tb_config with upcasters, say; on Kafka with a state.db of its own)
 * and the aggregates reg registers: a new build of the service taking over the log. The
 * backend owns it; tb_engine returns it from then on. */
es_engine_t *tb_engine_as(tb_t *b, const es_config_t *cfg, tb_register_cb *reg);
/* A store reading this backend's log (Kafka: the events topics). The backend owns it. */
es_store_t *tb_store(tb_t *b);

/* How many events the stream holds as readers see them; on Kafka reads again for up to 15 s
 * until there are want. */
size_t tb_events_of(tb_t *b, const char *type, const char *id, size_t want);

/* Events the backend holds for the types, in total. */
size_t tb_appended(const tb_t *b);

#endif
