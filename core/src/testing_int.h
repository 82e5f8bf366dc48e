/* What the test kit's files (testing.c, testing_saga.c) share: the report writer and the
 * message printer. */
#ifndef ESKIT_TESTING_INT_H
#define ESKIT_TESTING_INT_H

#include "decider.h"
#include <eskit/testing.h>

/* A bounded text writer: len counts what was wanted, so a cut is known. */
typedef struct es_test_out {
    char *p;
    size_t cap, len;
} es_test_out_t;

void es_test_put(es_test_out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Ends the text, marking a cut with "...". */
void es_test_finish(es_test_out_t *o);
/* msg as es_test_format writes it. */
void es_test_put_message(es_test_out_t *o, const ProtobufCMessage *msg);

#endif
