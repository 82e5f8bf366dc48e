/*
 * The test aggregate the projector tests write and the test modules read: one
 * aggregate type, "test.counter", with one event type, "test.v1.Added", whose
 * payload is the text "tp1:<amount>" (a decimal, 1..18 digits, nothing else).
 * Anything else in the payload is not this format: the modules call it
 * undecodable (ES_EDECODE).
 */
#ifndef ESKIT_TP_FORMAT_H
#define ESKIT_TP_FORMAT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define TP_TYPE "test.counter"
#define TP_TOPIC "test.counter.events"
#define TP_EVENT_ADDED "test.v1.Added"
#define TP_PREFIX "tp1:"
#define TP_MAX_PAYLOAD 32

/* Writes the payload of an Added event of amount into buf; returns its length. */
static inline size_t tp_encode(char buf[TP_MAX_PAYLOAD], int64_t amount) {
    int n = snprintf(buf, TP_MAX_PAYLOAD, TP_PREFIX "%lld", (long long)amount);
    return n > 0 ? (size_t)n : 0;
}

/* 0 and *amount when payload is "tp1:<digits>", -1 otherwise. */
static inline int tp_decode(const uint8_t *payload, size_t len, int64_t *amount) {
    size_t plen = sizeof TP_PREFIX - 1;
    if (!payload || len <= plen || len > plen + 18 || memcmp(payload, TP_PREFIX, plen) != 0)
        return -1;
    int64_t v = 0;
    for (size_t i = plen; i < len; i++) {
        if (payload[i] < '0' || payload[i] > '9')
            return -1;
        v = v * 10 + (payload[i] - '0');
    }
    *amount = v;
    return 0;
}

#endif
