/*
 * UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then a 12-bit counter that
 * keeps ids from one process strictly increasing within a millisecond, then
 * 62 random bits. Time order keeps index inserts at the right edge.
 */
#include "internal.h"

#include <errno.h>

#include <pthread.h>
#include <string.h>
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

/* "000102...ff": the two digits of byte i at 2 * i. */
static const char hex_pairs[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

void es_hex64(uint64_t v, char out[16]) {
    for (size_t i = 8; i-- > 0; v >>= 8)
        memcpy(out + 2 * i, hex_pairs + 2 * (v & 0xff), 2);
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

    /* The 128 bits as two words: ms, version and counter; variant and 62 random bits. */
    uint64_t hi = ms << 16 | 0x7000 | (seq & 0xfff);
    uint64_t lo = (es_random64() & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
    char h[16], l[16];
    es_hex64(hi, h);
    es_hex64(lo, l);
    memcpy(out, h, 8);
    out[8] = '-';
    memcpy(out + 9, h + 8, 4);
    out[13] = '-';
    memcpy(out + 14, h + 12, 4);
    out[18] = '-';
    memcpy(out + 19, l, 4);
    out[23] = '-';
    memcpy(out + 24, l + 4, 12);
    out[36] = '\0';
}

void es_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}
