/*
 * The services of the order_saga demo as processes of their own, for its
 * Kafka variant (tools/demo-kafka.sh): the command processor of one aggregate
 * type, and the coordinator of the orders.fulfilment saga. Each runs until
 * SIGTERM or SIGINT, prints one line on stdout when it is ready for work (the
 * script waits for "ready" before the orders come) and one on what it did
 * when it stops.
 */
#ifndef ESKIT_DEMO_SERVICES_H
#define ESKIT_DEMO_SERVICES_H

#include <eskit/eskit.h>

/* Executes the commands of type (a demo aggregate type) sent to the brokers cfg names, with
 * its state store at state.db; returns the exit status (0 stopped, 1 error, 2 not a type). */
int demo_serve(const es_config_t *cfg, const char *type);
/* Runs the demo's saga (short payment timeout) with its database at saga.db, sending its
 * commands through the brokers; returns the exit status (0 stopped, 1 error). */
int demo_coordinate(const es_config_t *cfg);
/* A log callback (es_config_set_log_cb): errors, and warnings other than librdkafka's
 * (which retries on its own), to stderr. */
void demo_log_line(int level, const char *message, void *opaque);

#endif
