/*
 * UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then a 12-bit counter that
 * keeps ids from one process strictly increasing within a millisecond, then
 * 62 random bits. Time order keeps index inserts at the right edge.
 */
#include "internal.h"

#include <errno.h>

#include <pthread.h>
#include <sys/random.h>
#include <time.h>

static pthread_mutex_t uuid_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t last_ms, counter;

int64_t es_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

uint64_t es_random64(void) {
    /* Per-thread xorshift seeded from the kernel: a syscall per id would dominate appends. */
    static _Thread_local uint64_t s;
    while (s == 0 && getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s)
        ;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

void es_uuid7(char out[ES_UUID_STR_LEN + 1]) {
    es_uuid7_at(es_now_us(), out);
}

void es_uuid7_at(int64_t now_us, char out[ES_UUID_STR_LEN + 1]) {
    uint64_t ms = (uint64_t)(now_us / 1000), seq;
    pthread_mutex_lock(&uuid_lock);
    if (ms > last_ms) {
        last_ms = ms;
        counter = es_random64() & 0x3ff; /* leave headroom before the counter overflows */
    } else {
        ms = last_ms;
        if (++counter > 0xfff) {
            last_ms = ++ms; /* borrow the next millisecond rather than repeat */
            counter = 0;
        }
    }
    seq = counter;
    pthread_mutex_unlock(&uuid_lock);

    uint8_t b[16];
    uint64_t r = es_random64();
    for (int i = 0; i < 6; i++)
        b[i] = (uint8_t)(ms >> (40 - 8 * i));
    b[6] = (uint8_t)(0x70 | (seq >> 8));
    b[7] = (uint8_t)seq;
    for (int i = 8; i < 16; i++)
        b[i] = (uint8_t)(r >> (8 * (i - 8)));
    b[8] = (uint8_t)(0x80 | (b[8] & 0x3f));
    /* By hand: snprintf was most of the cost of an id. */
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[b[i] >> 4];
        *o++ = hex[b[i] & 15];
    }
    *o = '\0';
}

void es_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}
